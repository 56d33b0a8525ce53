/**
 * The content store through `Containerd.content`: large uploads, resumption
 * after an interrupted upload, and checkpoint images extracted safely.
 */
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { assert, describe, layer } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Stream from "effect/Stream"
import * as Tar from "tar"
import { checkpointMediaType, extractCheckpointImage, indexMediaType } from "../../src/internal/checkpoint.js"
import { Containerd, leased } from "../../src/services/Containerd.js"
import { containerdLayer, freshNamespace } from "../support/daemon.js"

const namespace = freshNamespace("content")
const MiB = 1024 * 1024

/** 64 chunks of 1 MiB of random bytes, with their digest. */
const bigBlob = () => {
  const chunks = Array.from({ length: 64 }, () => new Uint8Array(Crypto.randomBytes(MiB)))
  const hash = Crypto.createHash("sha256")
  for (const chunk of chunks) hash.update(chunk)
  return { chunks, size: BigInt(64 * MiB), digest: `sha256:${hash.digest("hex")}` }
}

/** The digest and length of what `content.read` streams. */
const readBack = (digest: string) =>
  Effect.flatMap(Containerd, (c) =>
    Stream.runFold(c.content.read(digest), { hash: Crypto.createHash("sha256"), length: 0 }, (acc, chunk) => {
      acc.hash.update(chunk)
      acc.length += chunk.byteLength
      return acc
    }),
  ).pipe(Effect.map(({ hash, length }) => ({ digest: `sha256:${hash.digest("hex")}`, length })))

const unique = () => `${process.pid}-${Math.random().toString(36).slice(2, 8)}`

/** One entry of a hand-made tar, written exactly as given (hostile paths included). */
interface Entry {
  readonly path: string
  readonly type: "File" | "Directory" | "SymbolicLink"
  readonly body?: string
  readonly linkpath?: string
}

const tarOf = (entries: ReadonlyArray<Entry>): Buffer => {
  const blocks: Array<Buffer> = []
  for (const entry of entries) {
    const body = Buffer.from(entry.body ?? "")
    const block = Buffer.alloc(512)
    new Tar.Header({
      path: entry.path,
      type: entry.type,
      mode: entry.type === "Directory" ? 0o755 : 0o644,
      size: entry.type === "File" ? body.byteLength : 0,
      mtime: new Date(0),
      ...(entry.linkpath === undefined ? {} : { linkpath: entry.linkpath }),
    }).encode(block, 0)
    blocks.push(block)
    if (entry.type === "File" && body.byteLength > 0) {
      blocks.push(body, Buffer.alloc((512 - (body.byteLength % 512)) % 512))
    }
  }
  blocks.push(Buffer.alloc(1024))
  return Buffer.concat(blocks)
}

/**
 * Stages a checkpoint image as containerd's Go client writes one: the CRIU
 * tar and an OCI index pointing at it in the content store (under a lease
 * while they are written), and an image whose target is the index.
 */
const stageCheckpoint = (name: string, archive: Buffer) =>
  leased(() =>
    Effect.gen(function* () {
      const c = yield* Containerd
      const tar = yield* c.content.write(
        { ref: `stage-tar-${name}`, mediaType: checkpointMediaType },
        Stream.make(new Uint8Array(archive)),
      )
      const index = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: indexMediaType,
          manifests: [{ mediaType: checkpointMediaType, digest: tar.digest, size: Number(tar.size) }],
        }),
      )
      const target = yield* c.content.write(
        {
          ref: `stage-index-${name}`,
          mediaType: indexMediaType,
          labels: { "containerd.io/gc.ref.content.m.0": tar.digest },
        },
        Stream.make(new Uint8Array(index)),
      )
      yield* c.images.create({ name, labels: {}, target })
      return tar
    }),
  )

/** Temp dirs named like the ones `extractCheckpointImage` makes for its download. */
const downloadDirs = () => Fs.readdirSync(Os.tmpdir()).filter((f) => /^checkpoint-[A-Za-z0-9]{6}$/.test(f))

describe("content store (real daemon)", () => {
  layer(containerdLayer(namespace), { excludeTestServices: true, timeout: 120_000 })((it) => {
    it.effect(
      "64 MiB in chunks reads back byte-identical; info has the size; writing it again succeeds; delete removes it",
      () =>
        Effect.gen(function* () {
          const c = yield* Containerd
          const blob = bigBlob()
          yield* leased(() =>
            Effect.gen(function* () {
              const written = yield* c.content.write(
                { ref: `big-${unique()}`, size: blob.size, digest: blob.digest },
                Stream.fromIterable(blob.chunks),
              )
              assert.deepStrictEqual(written, {
                mediaType: "application/octet-stream",
                digest: blob.digest,
                size: blob.size,
              })
              assert.strictEqual((yield* c.content.info(blob.digest)).size, blob.size)
              assert.deepStrictEqual(yield* readBack(blob.digest), { digest: blob.digest, length: 64 * MiB })

              // the same bytes again: AlreadyExists counts as written, with or without the digest given
              const again = yield* c.content.write(
                { ref: `big-again-${unique()}`, size: blob.size, digest: blob.digest },
                Stream.fromIterable(blob.chunks),
              )
              assert.deepStrictEqual(again, written)
              const unnamed = yield* c.content.write(
                { ref: `big-unnamed-${unique()}` },
                Stream.fromIterable(blob.chunks),
              )
              assert.deepStrictEqual(unnamed, written)

              yield* c.content.delete(blob.digest)
              const gone = yield* Effect.flip(c.content.info(blob.digest))
              assert.strictEqual(gone._tag, "NotFound")
              const unreadable = yield* Effect.flip(readBack(blob.digest))
              assert.strictEqual(unreadable._tag, "NotFound")
            }),
          )
        }),
    )

    it.effect("an upload interrupted half-way commits nothing; the same ref then uploads in full", () =>
      Effect.gen(function* () {
        const c = yield* Containerd
        const blob = bigBlob()
        const ref = `interrupted-${unique()}`
        yield* leased(() =>
          Effect.gen(function* () {
            const halfway = yield* Deferred.make<void>()
            let pulled = 0
            const data = Stream.fromIterable(blob.chunks).pipe(
              Stream.rechunk(1),
              Stream.tap(() => (++pulled === 32 ? Deferred.succeed(halfway, undefined) : Effect.void)),
            )
            const upload = yield* Effect.fork(
              c.content.write({ ref, size: blob.size, digest: blob.digest }, data),
            )
            yield* Deferred.await(halfway)
            yield* Fiber.interrupt(upload)
            assert.isBelow(pulled, 64, "interrupted before the end")
            const none = yield* Effect.flip(c.content.info(blob.digest))
            assert.strictEqual(none._tag, "NotFound", "no committed blob")

            const written = yield* c.content.write(
              { ref, size: blob.size, digest: blob.digest },
              Stream.fromIterable(blob.chunks),
            )
            assert.strictEqual(written.digest, blob.digest)
            assert.strictEqual((yield* c.content.info(blob.digest)).size, blob.size)
            assert.deepStrictEqual(yield* readBack(blob.digest), { digest: blob.digest, length: 64 * MiB })
            yield* c.content.delete(blob.digest)
            assert.strictEqual((yield* Effect.flip(c.content.info(blob.digest)))._tag, "NotFound")
          }),
        )
      }),
    )

    it.effect("a staged checkpoint image is extracted into the dir", () =>
      Effect.gen(function* () {
        const c = yield* Containerd
        const src = Fs.mkdtempSync(Path.join(Os.tmpdir(), "staged-src-"))
        const dir = Path.join(Fs.mkdtempSync(Path.join(Os.tmpdir(), "staged-out-")), "checkpoint")
        try {
          Fs.writeFileSync(Path.join(src, "inventory.img"), "inventory")
          Fs.mkdirSync(Path.join(src, "sub"))
          Fs.writeFileSync(Path.join(src, "sub", "pages-1.img"), Buffer.alloc(70_000, 3))
          const archive = Buffer.from(
            yield* Effect.promise(() => Tar.create({ cwd: src, portable: true }, ["."]).concat()),
          )
          const name = `checkpoint/staged-${unique()}:latest`
          yield* stageCheckpoint(name, archive)
          const before = downloadDirs()
          yield* Containerd.withNamespace(namespace)(extractCheckpointImage(name, dir))
          assert.deepStrictEqual((Fs.readdirSync(dir, { recursive: true }) as Array<string>).sort(), [
            "inventory.img",
            "sub",
            "sub/pages-1.img",
          ])
          assert.strictEqual(Fs.readFileSync(Path.join(dir, "inventory.img"), "utf8"), "inventory")
          assert.deepStrictEqual(
            Fs.readFileSync(Path.join(dir, "sub", "pages-1.img")),
            Buffer.alloc(70_000, 3),
          )
          assert.deepStrictEqual(downloadDirs(), before, "the downloaded tar is removed")
          yield* c.images.delete(name, { sync: true })
          const missing = yield* Effect.flip(
            Containerd.withNamespace(namespace)(extractCheckpointImage(name, dir)),
          )
          assert.strictEqual(missing._tag, "NotFound")
        } finally {
          Fs.rmSync(src, { recursive: true, force: true })
          Fs.rmSync(Path.dirname(dir), { recursive: true, force: true })
        }
      }),
    )

    it.effect("hostile checkpoint tars are refused with InvalidParameter and write nothing", () =>
      Effect.gen(function* () {
        const c = yield* Containerd
        const tag = unique()
        const cases: ReadonlyArray<
          [string, ReadonlyArray<Entry>, (outer: string, dir: string) => Array<string>]
        > = [
          [
            "../x",
            [
              { path: "ok.img", type: "File", body: "fine" },
              { path: "../x", type: "File", body: "escaped" },
            ],
            (outer) => [Path.join(outer, "x")],
          ],
          [
            "/etc/x",
            [
              { path: "ok.img", type: "File", body: "fine" },
              { path: `/etc/x-${tag}`, type: "File", body: "escaped" },
            ],
            (_, dir) => [`/etc/x-${tag}`, Path.join(dir, "etc", `x-${tag}`)],
          ],
          [
            "link -> / then link/etc/pwned",
            [
              { path: "ok.img", type: "File", body: "fine" },
              { path: "link", type: "SymbolicLink", linkpath: "/" },
              { path: `link/etc/pwned-${tag}`, type: "File", body: "escaped" },
            ],
            () => [`/etc/pwned-${tag}`],
          ],
        ]
        for (const [label, entries, wouldWrite] of cases) {
          const outer = Fs.mkdtempSync(Path.join(Os.tmpdir(), "hostile-"))
          const dir = Path.join(outer, "checkpoint")
          try {
            const name = `checkpoint/hostile-${unique()}:latest`
            yield* stageCheckpoint(name, tarOf(entries))
            const targets = wouldWrite(outer, dir)
            for (const target of targets)
              assert.isFalse(Fs.existsSync(target), `${label}: ${target} absent before`)
            const error = yield* Effect.flip(
              Containerd.withNamespace(namespace)(extractCheckpointImage(name, dir)),
            )
            assert.strictEqual(error._tag, "InvalidParameter", label)
            assert.include(error.message, "refusing to extract", label)
            for (const target of targets)
              assert.isFalse(Fs.existsSync(target), `${label}: ${target} not written`)
            const inside = Fs.existsSync(dir) ? Fs.readdirSync(dir) : []
            assert.deepStrictEqual(inside, [], `${label}: nothing inside`)
            assert.deepStrictEqual(Fs.readdirSync(outer), [], `${label}: nothing beside it`)
            yield* c.images.delete(name, { sync: true })
          } finally {
            Fs.rmSync(outer, { recursive: true, force: true })
          }
        }
      }),
    )
  })
})
