/**
 * The content store, images and leases of the in-memory containerd, per
 * namespace. Digests are real sha256 checksums. An upload is an ingest kept
 * by its ref: a second upload with the same ref resumes at the ingest's
 * offset, commit checks size and digest (FAILED_PRECONDITION), a digest that
 * exists already is ALREADY_EXISTS (which `write` counts as written).
 * Garbage collection runs when a lease or an image is deleted: a blob survives
 * it while a lease, an image target, a `containerd.io/gc.root` label or a
 * `containerd.io/gc.ref.content*` label of a surviving blob refers to it.
 *
 * @internal
 */
import * as Crypto from "node:crypto"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import type * as T from "../../domain/Types.js"
import type { ContainerdError } from "../../errors/ContainerdError.js"
import { type Containerd, identifierPattern } from "../../services/Containerd.js"
import * as Events from "./events.js"
import {
  alreadyExists,
  type Blob,
  type Ctx,
  failedPrecondition,
  type Ingest,
  invalidArgument,
  type NamespaceState,
  type Namespaces,
  notFound,
  now,
  outOfRange,
  unavailable,
  withContext,
} from "./state.js"

const gcRoot = "containerd.io/gc.root"
const gcRefContent = "containerd.io/gc.ref.content"
const readChunk = 1024 * 1024
const digestPattern = /^sha256:[a-f0-9]{64}$/

/** Builds the content, images and leases services. */
export const make = (namespaces: Namespaces, bus: Events.Bus) => {
  let nextLease = 1

  const withCtx = <A, E, R>(f: (ctx: Ctx) => Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    withContext(namespaces, f)

  const contentNotFound = (digest: string) => notFound(`content digest ${digest}: not found`)

  const getBlob = (ns: NamespaceState, digest: string): Effect.Effect<Blob, ContainerdError> => {
    const blob = ns.blobs.get(digest)
    return blob === undefined ? Effect.fail(contentNotFound(digest)) : Effect.succeed(blob)
  }

  /** The lease a call runs under, which must exist. */
  const leaseOf = (ctx: Ctx): Effect.Effect<Option.Option<string>, ContainerdError> => {
    if (Option.isNone(ctx.lease)) return Effect.succeed(Option.none())
    return ctx.ns.leases.has(ctx.lease.value)
      ? Effect.succeed(ctx.lease)
      : Effect.fail(notFound("lease does not exist: not found"))
  }

  const collectGarbage = (ns: NamespaceState): void => {
    const reachable = new Set<string>()
    const queue: Array<string> = []
    const mark = (digest: string) => {
      if (reachable.has(digest) || !ns.blobs.has(digest)) return
      reachable.add(digest)
      queue.push(digest)
    }
    for (const lease of ns.leases.values()) for (const digest of lease.content) mark(digest)
    for (const image of ns.images.values()) mark(image.target.digest)
    for (const blob of ns.blobs.values()) if (blob.labels[gcRoot] !== undefined) mark(blob.digest)
    for (let digest = queue.pop(); digest !== undefined; digest = queue.pop()) {
      const blob = ns.blobs.get(digest)
      if (blob === undefined) continue
      for (const [key, value] of Object.entries(blob.labels)) if (key.startsWith(gcRefContent)) mark(value)
    }
    for (const digest of [...ns.blobs.keys()]) if (!reachable.has(digest)) ns.blobs.delete(digest)
  }

  const write: Containerd.Service["content"]["write"] = (options, data) =>
    withCtx((ctx) =>
      Effect.gen(function* () {
        const { ns } = ctx
        const expected = options.digest ?? ""
        const descriptor = (digest: string, size: number): T.Descriptor => ({
          mediaType: options.mediaType ?? "application/octet-stream",
          digest,
          size: BigInt(size),
        })
        if (options.ref === "") return yield* invalidArgument("first message must have a reference")
        const lease = yield* leaseOf(ctx)
        const existing = expected === "" ? undefined : ns.blobs.get(expected)
        // containerd answers ALREADY_EXISTS at the first message: the data is never read
        if (existing !== undefined) return descriptor(existing.digest, existing.data.byteLength)
        if (ns.locks.has(options.ref)) return yield* unavailable(`ref ${options.ref} locked: unavailable`)
        yield* Effect.acquireRelease(
          Effect.sync(() => ns.locks.add(options.ref)),
          () => Effect.sync(() => ns.locks.delete(options.ref)),
        )
        let ingest = ns.ingests.get(options.ref)
        if (ingest === undefined) {
          ingest = { ref: options.ref, chunks: [], size: 0 }
          ns.ingests.set(options.ref, ingest)
        }
        if (Option.isSome(lease)) ns.leases.get(lease.value)?.ingests.add(options.ref)
        const target: Ingest = ingest
        let skip = target.size
        yield* Stream.runForEach(data, (chunk) =>
          Effect.sync(() => {
            let bytes = chunk
            if (skip > 0) {
              if (bytes.byteLength <= skip) {
                skip -= bytes.byteLength
                return
              }
              bytes = bytes.subarray(skip)
              skip = 0
            }
            if (bytes.byteLength === 0) return
            target.chunks.push(Uint8Array.from(bytes))
            target.size += bytes.byteLength
          }),
        )
        const expectedSize = options.size ?? 0n
        if (expectedSize > 0n && BigInt(target.size) !== expectedSize) {
          return yield* failedPrecondition(
            `unexpected commit size ${target.size}, expected ${expectedSize}: failed precondition`,
          )
        }
        const hash = Crypto.createHash("sha256")
        for (const chunk of target.chunks) hash.update(chunk)
        const actual = `sha256:${hash.digest("hex")}`
        if (expected !== "" && actual !== expected) {
          return yield* failedPrecondition(
            `unexpected commit digest ${actual}, expected ${expected}: failed precondition`,
          )
        }
        return yield* Effect.sync(() => {
          ns.ingests.delete(options.ref)
          for (const record of ns.leases.values()) record.ingests.delete(options.ref)
          if (Option.isSome(lease)) ns.leases.get(lease.value)?.content.add(actual)
          if (!ns.blobs.has(actual)) {
            const at = now(ctx.clock)
            ns.blobs.set(actual, {
              digest: actual,
              data: new Uint8Array(Buffer.concat(target.chunks)),
              createdAt: at,
              updatedAt: at,
              labels: { ...options.labels },
            })
          }
          return descriptor(actual, target.size)
        })
      }).pipe(Effect.scoped),
    )

  const content: Containerd.Service["content"] = {
    info: (digest) =>
      withCtx((ctx) =>
        Effect.map(getBlob(ctx.ns, digest), (blob) => ({
          digest: blob.digest,
          size: BigInt(blob.data.byteLength),
          createdAt: blob.createdAt,
          updatedAt: blob.updatedAt,
          labels: { ...blob.labels },
        })),
      ),
    read: (digest, range) =>
      Stream.unwrap(
        withCtx((ctx) =>
          Effect.flatMap(getBlob(ctx.ns, digest), (blob) => {
            const size = BigInt(blob.data.byteLength)
            const offset = range?.offset ?? 0n
            const length = range?.size ?? 0n
            if (offset < 0n || offset > size || length < 0n || offset + length > size) {
              return Effect.fail(outOfRange(`read past object length ${size} bytes`))
            }
            const end = length === 0n ? size : offset + length
            const chunks: Array<Uint8Array> = []
            for (let at = Number(offset); at < Number(end); at += readChunk) {
              chunks.push(blob.data.slice(at, Math.min(Number(end), at + readChunk)))
            }
            return Effect.succeed(Stream.fromIterable(chunks))
          }),
        ),
      ),
    write,
    delete: (digest) =>
      withCtx((ctx) =>
        Effect.flatMap(getBlob(ctx.ns, digest), () =>
          Effect.sync(() => {
            ctx.ns.blobs.delete(digest)
            for (const lease of ctx.ns.leases.values()) lease.content.delete(digest)
            bus.publish(ctx.ns, ctx.clock, "/content/delete", "ContentDelete", Events.single(digest), {
              digest,
            })
          }),
        ),
      ),
    abort: (ref) =>
      withCtx((ctx) =>
        Effect.suspend(() => {
          if (!ctx.ns.ingests.delete(ref))
            return Effect.fail(notFound(`ingest ref ${JSON.stringify(ref)}: not found`))
          for (const lease of ctx.ns.leases.values()) lease.ingests.delete(ref)
          return Effect.void
        }),
      ),
  }

  const imageNotFound = (name: string) => notFound(`image ${JSON.stringify(name)}: not found`)

  const images: Containerd.Service["images"] = {
    get: (name) =>
      withCtx((ctx) => {
        const image = ctx.ns.images.get(name)
        return image === undefined ? Effect.fail(imageNotFound(name)) : Effect.succeed(image)
      }),
    create: (image) =>
      withCtx((ctx) =>
        Effect.suspend((): Effect.Effect<T.Image, ContainerdError> => {
          if (image.name === "")
            return Effect.fail(invalidArgument("image name must not be empty: invalid argument"))
          if (image.target.mediaType === "") {
            return Effect.fail(invalidArgument("Target.MediaType must be set: invalid argument"))
          }
          if (!digestPattern.test(image.target.digest)) {
            return Effect.fail(
              invalidArgument(
                `Target.Digest ${JSON.stringify(image.target.digest)} invalid: invalid argument`,
              ),
            )
          }
          if (ctx.ns.images.has(image.name)) {
            return Effect.fail(alreadyExists(`image ${JSON.stringify(image.name)}: already exists`))
          }
          const at = now(ctx.clock)
          const created: T.Image = {
            name: image.name,
            labels: { ...image.labels },
            target: { ...image.target },
            createdAt: at,
            updatedAt: at,
          }
          ctx.ns.images.set(image.name, created)
          bus.publish(
            ctx.ns,
            ctx.clock,
            "/images/create",
            "ImageCreate",
            Events.imageCreate(image.name, created.labels),
            {
              name: image.name,
            },
          )
          return Effect.succeed(created)
        }),
      ),
    delete: (name) =>
      withCtx((ctx) =>
        Effect.suspend(() => {
          if (!ctx.ns.images.delete(name)) return Effect.fail(imageNotFound(name))
          bus.publish(ctx.ns, ctx.clock, "/images/delete", "ImageDelete", Events.single(name), { name })
          collectGarbage(ctx.ns)
          return Effect.void
        }),
      ),
  }

  const leases: Containerd.Service["leases"] = {
    create: (options = {}) =>
      withCtx((ctx) =>
        Effect.suspend((): Effect.Effect<T.Lease, ContainerdError> => {
          const id = options.id ?? ""
          if (id !== "" && !identifierPattern.test(id)) {
            return Effect.fail(
              invalidArgument(
                `lease id ${JSON.stringify(id)} must match ${identifierPattern.source}: invalid argument`,
              ),
            )
          }
          const leaseId = id === "" ? `memory-lease-${nextLease++}` : id
          if (ctx.ns.leases.has(leaseId)) {
            return Effect.fail(alreadyExists(`lease ${JSON.stringify(leaseId)}: already exists`))
          }
          const lease: T.Lease = { id: leaseId, labels: { ...options.labels }, createdAt: now(ctx.clock) }
          ctx.ns.leases.set(leaseId, { lease, content: new Set(), ingests: new Set() })
          return Effect.succeed(lease)
        }),
      ),
    delete: (id) =>
      withCtx((ctx) =>
        Effect.suspend(() => {
          const record = ctx.ns.leases.get(id)
          if (record === undefined) return Effect.fail(notFound(`lease ${JSON.stringify(id)}: not found`))
          ctx.ns.leases.delete(id)
          for (const ref of record.ingests) if (!ctx.ns.locks.has(ref)) ctx.ns.ingests.delete(ref)
          collectGarbage(ctx.ns)
          return Effect.void
        }),
      ),
  }

  return { content, images, leases }
}
