/**
 * Checkpoint archives: a directory as a tar stream for the content store, and
 * the safe extraction of a checkpoint tar into a directory.
 *
 * Extraction reads the archive twice: first every entry is checked (no
 * absolute path, no `..`, no link pointing out, nothing written through a
 * symlink), and only an archive with no hostile entry is extracted. A hostile
 * archive fails with `InvalidParameter` and writes nothing at all.
 */
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import * as Tar from "tar"
import type { Descriptor } from "../domain/Types.js"
import { InvalidParameter, System } from "../errors/ContainerdError.js"
import { Containerd, leased } from "../services/Containerd.js"

/** containerd's media type of a CRIU checkpoint tar; task create refuses any other. */
export const checkpointMediaType = "application/vnd.containerd.container.criu.checkpoint.criu.tar"

/** The media type of the OCI index a checkpoint image points at. */
export const indexMediaType = "application/vnd.oci.image.index.v1+json"

/** The contents of `dir` as an uncompressed tar stream. */
export const tarDirectory = (dir: string): Stream.Stream<Uint8Array, System> =>
  Stream.unwrapScoped(
    Effect.gen(function* () {
      const stat = yield* Effect.try({
        try: () => Fs.statSync(dir),
        catch: (cause) => new System({ message: `checkpoint dir ${dir}: ${String(cause)}`, cause }),
      })
      if (!stat.isDirectory())
        return yield* new System({ message: `checkpoint dir ${dir} is not a directory` })
      const pack = yield* Effect.acquireRelease(
        Effect.sync(() => Tar.create({ cwd: dir, portable: true, noMtime: true }, ["."])),
        (pack) => Effect.sync(() => pack.destroy()),
      )
      return Stream.fromAsyncIterable(
        pack as AsyncIterable<Buffer>,
        (cause) => new System({ message: `cannot archive ${dir}: ${String(cause)}`, cause }),
      )
    }),
  )

/** What `entryProblem` needs to know about symlinks: whether a path (relative, normalized) is one. */
export interface Symlinks {
  readonly has: (path: string) => boolean
}

/** Why an entry may not be extracted into `dir`, or undefined when it may. */
export const entryProblem = (
  entry: { readonly path: string; readonly type: string; readonly linkpath?: string | undefined },
  symlinks: Symlinks,
): string | undefined => {
  const raw = entry.path
  if (raw.includes("\0")) return "contains NUL"
  if (Path.posix.isAbsolute(raw) || /^[A-Za-z]:/.test(raw)) return "is an absolute path"
  const parts = raw.split("/").filter((p) => p !== "" && p !== ".")
  if (parts.includes("..")) return "contains '..'"
  // a file written through a symlink made by an earlier entry
  for (let i = 1; i < parts.length; i++) {
    if (symlinks.has(parts.slice(0, i).join("/")))
      return `goes through the symlink ${parts.slice(0, i).join("/")}`
  }
  if (entry.type === "SymbolicLink" || entry.type === "Link") {
    const target = entry.linkpath ?? ""
    if (target === "") return "is a link without a target"
    if (target.includes("\0")) return "links to a path containing NUL"
    if (Path.posix.isAbsolute(target)) return `links to the absolute path ${target}`
    // resolved one step at a time: `..` must not climb out, and no step may pass through a
    // symlink (`d/s -> ..` then `d/u -> s/../..` is lexically inside but really two levels out)
    const resolved = entry.type === "SymbolicLink" ? parts.slice(0, -1) : []
    const steps = target.split("/").filter((p) => p !== "" && p !== ".")
    for (let i = 0; i < steps.length; i++) {
      const step = steps[i]!
      if (step === "..") {
        if (resolved.length === 0) return `links outside the directory (${target})`
        resolved.pop()
        continue
      }
      resolved.push(step)
      if (i < steps.length - 1 && symlinks.has(resolved.join("/"))) {
        return `links through the symlink ${resolved.join("/")} (${target})`
      }
    }
  }
  if (!["File", "OldFile", "ContiguousFile", "Directory", "SymbolicLink", "Link"].includes(entry.type)) {
    return `has the unsupported type ${entry.type}`
  }
  return undefined
}

const isSymlinkOnDisk = (dir: string, relative: string): boolean => {
  try {
    return Fs.lstatSync(Path.join(dir, relative)).isSymbolicLink()
  } catch {
    return false
  }
}

/**
 * Checks every entry of the tar file against `dir`; fails with
 * `InvalidParameter` naming the first hostile one. Symlinks already in `dir`
 * count as much as the archive's own.
 */
export const checkArchive = (file: string, dir: string): Effect.Effect<void, InvalidParameter | System> =>
  Effect.async<void, InvalidParameter | System>((resume) => {
    const archived = new Set<string>()
    const symlinks: Symlinks = { has: (path) => archived.has(path) || isSymlinkOnDisk(dir, path) }
    let problem: InvalidParameter | undefined
    Tar.list({
      file,
      onReadEntry: (entry) => {
        if (problem !== undefined) return
        const reason = entryProblem(
          { path: entry.path, type: entry.type, linkpath: entry.linkpath },
          symlinks,
        )
        if (reason !== undefined) {
          problem = new InvalidParameter({
            message: `checkpoint archive entry ${JSON.stringify(entry.path)} ${reason}: refusing to extract it`,
          })
          return
        }
        if (entry.type === "SymbolicLink") {
          archived.add(
            entry.path
              .split("/")
              .filter((p) => p !== "" && p !== ".")
              .join("/"),
          )
        }
      },
    }).then(
      () => resume(problem === undefined ? Effect.void : Effect.fail(problem)),
      (cause) =>
        resume(
          Effect.fail(new System({ message: `cannot read checkpoint archive: ${String(cause)}`, cause })),
        ),
    )
  })

/** Extracts a checked tar file into `dir` (created if missing). */
export const extractArchive = (file: string, dir: string): Effect.Effect<void, InvalidParameter | System> =>
  Effect.gen(function* () {
    yield* checkArchive(file, dir)
    yield* Effect.try({
      try: () => Fs.mkdirSync(dir, { recursive: true }),
      catch: (cause) => new System({ message: `cannot create ${dir}: ${String(cause)}`, cause }),
    })
    yield* Effect.tryPromise({
      try: () => Tar.extract({ file, cwd: dir, preservePaths: false, strict: true, preserveOwner: false }),
      catch: (cause) =>
        new System({ message: `cannot extract the checkpoint into ${dir}: ${String(cause)}`, cause }),
    })
  })

/** One entry of an OCI index as the checkpoint image stores it. */
interface IndexEntry {
  readonly mediaType: string
  readonly digest: string
  readonly size: number
  readonly annotations?: Record<string, string>
}

/** Reads a whole blob into memory (indexes are small). */
const readBlob = (digest: string) =>
  Effect.flatMap(Containerd, (containerd) =>
    Stream.runFold(containerd.content.read(digest), Buffer.alloc(0), (acc, chunk) =>
      Buffer.concat([acc, chunk]),
    ),
  )

/**
 * Writes the task's checkpoint descriptors as an OCI index and an image
 * `containerd.io/checkpoint/<id>:<time>` pointing at it, as containerd's Go
 * client does; returns the image name. Runs under a lease of its own.
 */
export const checkpointImage = (containerId: string, descriptors: ReadonlyArray<Descriptor>) =>
  leased(() =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      const index = {
        schemaVersion: 2,
        mediaType: indexMediaType,
        manifests: descriptors.map(
          (d): IndexEntry => ({
            mediaType: d.mediaType,
            digest: d.digest,
            size: Number(d.size),
            ...(d.annotations === undefined ? {} : { annotations: { ...d.annotations } }),
          }),
        ),
      }
      const bytes = Buffer.from(JSON.stringify(index))
      const labels: Record<string, string> = {}
      descriptors.forEach((d, i) => {
        labels[`containerd.io/gc.ref.content.m.${i}`] = d.digest
      })
      const target = yield* containerd.content.write(
        {
          ref: `checkpoint-index-${containerId}-${Date.now()}`,
          size: BigInt(bytes.byteLength),
          labels,
          mediaType: indexMediaType,
        },
        Stream.make(new Uint8Array(bytes)),
      )
      const name = `containerd.io/checkpoint/${containerId}:${new Date().toISOString().replace(/[:.]/g, "-")}`
      yield* containerd.images.create({ name, labels: { "containerd.io/checkpoint": "true" }, target })
      return name
    }),
  )

/**
 * Reads a checkpoint image's index, finds the CRIU tar and extracts it into
 * `dir` safely (see `extractArchive`).
 */
export const extractCheckpointImage = (imageName: string, dir: string) =>
  Effect.scoped(
    Effect.gen(function* () {
      const containerd = yield* Containerd
      const image = yield* containerd.images.get(imageName)
      const raw = yield* readBlob(image.target.digest)
      const index = yield* Effect.try({
        try: () => JSON.parse(raw.toString("utf8")) as { manifests?: ReadonlyArray<IndexEntry> },
        catch: (cause) => new System({ message: `failed to decode checkpoint data of ${imageName}`, cause }),
      })
      const tarDesc = (index.manifests ?? []).find((m) => m.mediaType === checkpointMediaType)
      if (tarDesc === undefined) {
        return yield* new System({
          message: `invalid checkpoint: ${imageName} has no ${checkpointMediaType}`,
        })
      }
      const tmp = yield* Effect.acquireRelease(
        Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "checkpoint-"))),
        (tmp) => Effect.sync(() => Fs.rmSync(tmp, { recursive: true, force: true })),
      )
      const file = Path.join(tmp, "checkpoint.tar")
      const fd = yield* Effect.acquireRelease(
        Effect.sync(() => Fs.openSync(file, "w", 0o600)),
        (fd) => Effect.sync(() => Fs.closeSync(fd)),
      )
      yield* Stream.runForEach(containerd.content.read(tarDesc.digest), (chunk) =>
        Effect.tryPromise({
          try: () =>
            new Promise<void>((resolve, reject) =>
              Fs.write(fd, chunk, (error) => (error ? reject(error) : resolve())),
            ),
          catch: (cause) =>
            new System({ message: `failed to retrieve checkpoint data: ${String(cause)}`, cause }),
        }),
      )
      yield* extractArchive(file, dir)
    }),
  )

/** Uploads `dir` as a checkpoint tar under the current lease; the caller deletes the blob. */
export const uploadCheckpoint = (containerId: string, dir: string) =>
  Effect.flatMap(Containerd, (containerd) =>
    containerd.content.write(
      { ref: `checkpoint-${containerId}-${Date.now()}`, mediaType: checkpointMediaType },
      tarDirectory(dir),
    ),
  )
