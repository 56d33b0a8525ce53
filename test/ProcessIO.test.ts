import * as ChildProcess from "node:child_process"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as NodeStream from "node:stream"
import * as V8 from "node:v8"
import * as Vm from "node:vm"
import { assert, describe, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import { System } from "../src/errors/ContainerdError.js"
import * as ProcessIOMemory from "../src/layers/ProcessIOMemory.js"
import { pipeCapacity } from "../src/internal/fifo.js"
import * as ProcessIONode from "../src/layers/ProcessIONode.js"
import { type FifoSet, ProcessIO } from "../src/services/ProcessIO.js"

// ---------------------------------------------------------------------------
// helpers

/** A fresh temp dir, removed with the test's scope. */
const tempDir = Effect.acquireRelease(
  Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "processio-"))),
  (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true })),
)

const live = ProcessIONode.layer({ drainTimeout: "200 millis" })

interface Spawned {
  readonly child: ChildProcess.ChildProcess
  /** Completes with the exit code (or the signal name). */
  readonly exit: Effect.Effect<number | string>
  /** Everything the child wrote to its own stdout, once it exited. */
  readonly output: Effect.Effect<string>
}

/** Spawns `sh -c script` in the scope; the release kills it by pid. */
const sh = (script: string) =>
  Effect.acquireRelease(
    Effect.sync((): Spawned => {
      const child = ChildProcess.spawn("sh", ["-c", script], { stdio: ["ignore", "pipe", "inherit"] })
      const exited = Deferred.unsafeMake<number | string>(FiberId.none)
      let out = ""
      child.stdout!.on("data", (d: Buffer) => {
        out += d.toString()
      })
      // "close" comes after the child exited and its stdout pipe was read to the end
      child.once("close", (code, sig) => Deferred.unsafeDone(exited, Exit.succeed(code ?? sig ?? -1)))
      return { child, exit: Deferred.await(exited), output: Effect.map(Deferred.await(exited), () => out) }
    }),
    ({ child }) =>
      Effect.sync(() => {
        if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
          process.kill(child.pid, "SIGKILL")
        }
      }),
  )

const text = (stream: Stream.Stream<Uint8Array, unknown>) =>
  Stream.runCollect(stream).pipe(Effect.map((chunks) => Buffer.concat([...chunks]).toString()))

const fdCount = () => Fs.readdirSync("/proc/self/fd").length

/** A copy's write collecting the lent bytes as text (copied out, as a copy's writer must). */
const textWriter = () => {
  const parts: Array<string> = []
  return {
    write: (bytes: Uint8Array) =>
      Effect.sync(() => {
        parts.push(Buffer.from(bytes).toString())
      }),
    text: () => parts.join(""),
  }
}

/** This process as the FIFO's writer (a reader must be open): `write` text, `close` once; the scope closes it too. */
const fifoWriter = (path: string) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      let fd: number | undefined = Fs.openSync(path, Fs.constants.O_WRONLY | Fs.constants.O_NONBLOCK)
      return {
        write: (text: string) => Fs.writeSync(fd!, text),
        close: () => {
          if (fd !== undefined) Fs.closeSync(fd)
          fd = undefined
        },
      }
    }),
    (writer) => Effect.sync(writer.close),
  )

const statOf = (path: string) => Fs.lstatSync(path)

/** Runs `n` stat + readFile calls, 32 at a time, and returns the elapsed ms. */
const fsLoop = (file: string, n: number) =>
  Effect.promise(async () => {
    const start = performance.now()
    for (let i = 0; i < n; i += 32) {
      await Promise.all(
        Array.from({ length: 32 }, (_, j) =>
          j % 2 === 0 ? Fs.promises.stat(file) : Fs.promises.readFile(file),
        ),
      )
    }
    return performance.now() - start
  })

/** V8's collector, exposed at run time so memory samples measure what is retained, not garbage. */
const gc: () => void = (() => {
  V8.setFlagsFromString("--expose-gc")
  return Vm.runInNewContext("gc") as () => void
})()

const elapsed = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const start = performance.now()
    const a = yield* self
    return [a, performance.now() - start] as const
  })

// ---------------------------------------------------------------------------
// live layer: real FIFOs

describe("ProcessIONode", () => {
  describe("create", () => {
    it.scopedLive("lays out stdout, stdin only when asked, stderr only without a terminal", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const io = yield* ProcessIO
        const full = yield* io.create({ bundleDir: dir, processId: "init", stdin: true, terminal: false })
        assert.deepStrictEqual(full, {
          stdin: `${dir}/init-stdin`,
          stdout: `${dir}/init-stdout`,
          stderr: `${dir}/init-stderr`,
          terminal: false,
        })
        const tty = yield* io.create({ bundleDir: dir, processId: "exec-1", stdin: false, terminal: true })
        assert.deepStrictEqual(tty, { stdout: `${dir}/exec-1-stdout`, terminal: true })
        const ttyIn = yield* io.create({ bundleDir: dir, processId: "exec-2", stdin: true, terminal: true })
        assert.deepStrictEqual(ttyIn, {
          stdin: `${dir}/exec-2-stdin`,
          stdout: `${dir}/exec-2-stdout`,
          terminal: true,
        })
        const plain = yield* io.create({ bundleDir: dir, processId: "exec-3", stdin: false, terminal: false })
        assert.deepStrictEqual(plain, {
          stdout: `${dir}/exec-3-stdout`,
          stderr: `${dir}/exec-3-stderr`,
          terminal: false,
        })
        assert.deepStrictEqual(Fs.readdirSync(dir).sort(), [
          "exec-1-stdout",
          "exec-2-stdin",
          "exec-2-stdout",
          "exec-3-stderr",
          "exec-3-stdout",
          "init-stderr",
          "init-stdin",
          "init-stdout",
        ])
        for (const name of Fs.readdirSync(dir)) {
          const stat = statOf(Path.join(dir, name))
          assert.isTrue(stat.isFIFO(), name)
          assert.strictEqual(stat.mode & 0o7777, 0o700, name)
        }
      }).pipe(Effect.provide(live)),
    )

    it.scopedLive("gives the FIFOs the requested owner (user namespaces)", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const io = yield* ProcessIO
        const set = yield* io.create({
          bundleDir: dir,
          processId: "init",
          stdin: true,
          terminal: false,
          uid: 1000,
          gid: 1001,
        })
        for (const path of [set.stdin!, set.stdout, set.stderr!]) {
          const stat = statOf(path)
          assert.strictEqual(stat.uid, 1000)
          assert.strictEqual(stat.gid, 1001)
          assert.strictEqual(stat.mode & 0o7777, 0o700)
        }
        const groupOnly = yield* io.create({
          bundleDir: dir,
          processId: "g",
          stdin: false,
          terminal: true,
          gid: 5,
        })
        assert.strictEqual(statOf(groupOnly.stdout).uid, process.getuid!())
        assert.strictEqual(statOf(groupOnly.stdout).gid, 5)
      }).pipe(Effect.provide(live)),
    )

    it.scopedLive("rejects bad ids and relative bundle dirs before making any file", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const io = yield* ProcessIO
        const bad = ["", "../x", "a/b", "-a", "a-", "a..b", "x".repeat(77), "a b", "a\0"]
        for (const processId of bad) {
          const error = yield* Effect.flip(
            io.create({ bundleDir: dir, processId, stdin: true, terminal: false }),
          )
          assert.strictEqual(error._tag, "InvalidParameter", processId)
        }
        const ok = yield* io.create({
          bundleDir: dir,
          processId: "x".repeat(76),
          stdin: false,
          terminal: true,
        })
        assert.isTrue(statOf(ok.stdout).isFIFO())
        const relative = yield* Effect.flip(
          io.create({ bundleDir: "bundles/x", processId: "init", stdin: false, terminal: false }),
        )
        assert.strictEqual(relative._tag, "InvalidParameter")
        assert.include(relative.message, "bundleDir")
        const badUid = yield* Effect.flip(
          io.create({ bundleDir: dir, processId: "u", stdin: false, terminal: false, uid: -1 }),
        )
        assert.strictEqual(badUid._tag, "InvalidParameter")
        assert.deepStrictEqual(Fs.readdirSync(dir), [`${"x".repeat(76)}-stdout`])
      }).pipe(Effect.provide(live)),
    )

    it.scopedLive("fails with System naming the path when the bundle dir is missing, leaving nothing", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const io = yield* ProcessIO
        const missing = Path.join(dir, "nope")
        const error = yield* Effect.flip(
          io.create({ bundleDir: missing, processId: "init", stdin: true, terminal: false }),
        )
        assert.strictEqual(error._tag, "System")
        assert.include(error.message, `${missing}/init-stdin`)
        assert.include(error.message, "ENOENT")
        // a regular file where the stdout FIFO goes: the stdin FIFO made first is removed again
        Fs.writeFileSync(Path.join(dir, "init-stdout"), "")
        const clash = yield* Effect.flip(
          io.create({ bundleDir: dir, processId: "init", stdin: true, terminal: false }),
        )
        assert.include(clash.message, `${dir}/init-stdout`)
        assert.deepStrictEqual(Fs.readdirSync(dir), ["init-stdout"])
      }).pipe(Effect.provide(live)),
    )

    it.scopedLive("interruption after create, before open, leaves no file", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const made = yield* Deferred.make<FifoSet>()
        const fiber = yield* Effect.gen(function* () {
          const io = yield* ProcessIO
          const set = yield* io.create({ bundleDir: dir, processId: "init", stdin: true, terminal: false })
          yield* Deferred.succeed(made, set)
          yield* Effect.never
        }).pipe(Effect.scoped, Effect.provide(live), Effect.fork)
        const set = yield* Deferred.await(made)
        assert.isTrue(statOf(set.stdout).isFIFO())
        yield* Fiber.interrupt(fiber)
        assert.deepStrictEqual(Fs.readdirSync(dir), [])
      }),
    )
  })

  describe("open", () => {
    it.scopedLive("returns at once with no writer and parks no threadpool thread", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const io = yield* ProcessIO
        const file = Path.join(dir, "data")
        Fs.writeFileSync(file, Buffer.alloc(4096, 1))
        yield* fsLoop(file, 256) // warm up
        const baseline = yield* fsLoop(file, 2048)
        const [, openMs] = yield* elapsed(
          Effect.forEach(
            Array.from({ length: 16 }, (_, i) => `p${i}`),
            (processId) =>
              Effect.flatMap(io.create({ bundleDir: dir, processId, stdin: true, terminal: false }), (set) =>
                io.open(set),
              ),
          ),
        )
        const loaded = yield* fsLoop(file, 2048).pipe(
          Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => new Error("fs loop stalled") }),
        )
        assert.isBelow(openMs, 1000, `opening 16 sets took ${openMs} ms`)
        assert.isBelow(loaded, baseline * 10 + 250, `fs loop ${loaded} ms vs baseline ${baseline} ms`)
      }).pipe(Effect.provide(live)),
    )

    it.scopedLive("stdout and stderr yield a writer's bytes and end on EOF", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const io = yield* ProcessIO
        const set = yield* io.create({ bundleDir: dir, processId: "init", stdin: false, terminal: false })
        const dio = yield* io.open(set)
        const out = yield* Effect.fork(text(dio.stdout))
        const err = yield* Effect.fork(text(dio.stderr!))
        const writer = yield* sh(`printf hello > ${set.stdout}; printf oops > ${set.stderr}`)
        assert.strictEqual(yield* writer.exit, 0)
        assert.strictEqual(yield* Fiber.join(out), "hello")
        assert.strictEqual(yield* Fiber.join(err), "oops")
        yield* dio.awaitDrained.pipe(
          Effect.timeoutFail({ duration: "1 second", onTimeout: () => "not drained" }),
        )
      }).pipe(Effect.provide(live)),
    )

    it.scopedLive(
      "discardOutput: 32 MiB with no consumer never block the writer; the streams end empty at EOF",
      () =>
        Effect.gen(function* () {
          const dir = yield* tempDir
          const io = yield* ProcessIO
          const set = yield* io.create({ bundleDir: dir, processId: "init", stdin: false, terminal: false })
          const dio = yield* io.open(set)
          yield* dio.discardOutput
          // far more than a pipe and the buffer bound hold: the writer only finishes when every byte was read
          const writer = yield* sh(
            `head -c 33554432 /dev/zero > ${set.stdout} & head -c 1048576 /dev/zero > ${set.stderr}; wait`,
          )
          assert.strictEqual(
            yield* writer.exit.pipe(
              Effect.timeoutFail({ duration: "20 seconds", onTimeout: () => "writer blocked" }),
            ),
            0,
          )
          yield* dio.awaitDrained.pipe(
            Effect.timeoutFail({ duration: "2 seconds", onTimeout: () => "not drained" }),
          )
          assert.strictEqual(yield* text(dio.stdout), "")
          assert.strictEqual(yield* text(dio.stderr!), "")
        }).pipe(Effect.provide(live)),
    )

    it.scopedLive(
      "copyStdout: 16 MiB arrive whole and in order through reused buffers; a read's buffer waits for its write",
      () =>
        Effect.gen(function* () {
          const dir = yield* tempDir
          const io = yield* ProcessIO
          const set = yield* io.create({ bundleDir: dir, processId: "init", stdin: false, terminal: true })
          const dio = yield* io.open(set)
          const hash = Crypto.createHash("sha256")
          const buffers = new Set<ArrayBufferLike>()
          let writes = 0
          let overwritten = 0
          const copied = yield* Effect.fork(
            dio.copyStdout((bytes) =>
              Effect.gen(function* () {
                buffers.add(bytes.buffer)
                const before = Buffer.from(bytes)
                // every 16th write takes a while: were the reader not waiting, the next read would land meanwhile
                if (++writes % 16 === 0) yield* Effect.sleep("1 millis")
                if (!before.equals(bytes)) overwritten++
                hash.update(bytes)
              }),
            ),
          )
          // numbered lines: a lost, repeated or reordered read changes the hash
          const writer = yield* sh(`seq 1 2000000 > ${set.stdout}`)
          assert.strictEqual(yield* writer.exit, 0)
          yield* Fiber.join(copied)
          const expected = Crypto.createHash("sha256")
          expected.update(`${Array.from({ length: 2000000 }, (_, i) => i + 1).join("\n")}\n`)
          assert.strictEqual(hash.digest("hex"), expected.digest("hex"))
          assert.strictEqual(overwritten, 0, "a lent read changed before its write completed")
          assert.isAbove(writes, 100)
          // three buffers go round (two lent, one read into); a fourth may hold what came before the copy
          assert.isAtMost(buffers.size, 4, `${buffers.size} buffers for ${writes} reads`)
        }).pipe(Effect.provide(live)),
    )

    it.scopedLive(
      "copyStdout: what was read before the copy comes first; a second copy at once is InvalidParameter",
      () =>
        Effect.gen(function* () {
          const dir = yield* tempDir
          const io = yield* ProcessIO
          const set = yield* io.create({ bundleDir: dir, processId: "init", stdin: false, terminal: false })
          const dio = yield* io.open(set)
          const fifo = yield* fifoWriter(set.stdout)
          fifo.write("first ")
          // let the reader queue it
          yield* Effect.sleep("50 millis")
          const out = textWriter()
          const copied = yield* Effect.fork(dio.copyStdout(out.write))
          yield* Effect.yieldNow()
          const second = yield* Effect.flip(dio.copyStdout(() => Effect.void))
          assert.strictEqual(second._tag, "InvalidParameter")
          assert.include(second.message, "one reader per output")
          fifo.write("second")
          fifo.close()
          yield* Fiber.join(copied)
          assert.strictEqual(out.text(), "first second")
          // stderr copies the same way; it ends at EOF without bytes
          const writer = yield* sh(`: > ${set.stderr}`)
          yield* writer.exit
          const err = textWriter()
          yield* dio.copyStderr!(err.write)
          assert.strictEqual(err.text(), "")
        }).pipe(Effect.provide(live)),
    )

    it.scopedLive(
      "copyStdout: a failed write ends the copy with its error; an interrupted one too; the stream gets the rest",
      () =>
        Effect.gen(function* () {
          const dir = yield* tempDir
          const io = yield* ProcessIO
          const set = yield* io.create({ bundleDir: dir, processId: "init", stdin: false, terminal: true })
          const dio = yield* io.open(set)
          const fifo = yield* fifoWriter(set.stdout)
          fifo.write("abc")
          const failed = yield* Effect.flip(dio.copyStdout(() => Effect.fail("disk full" as const)))
          assert.strictEqual(failed, "disk full")
          // the next copy gets the read the failed one did not write; interrupted mid-write, it leaves it again
          const inWrite = yield* Deferred.make<string>()
          const stuck = yield* Effect.fork(
            dio.copyStdout((bytes) =>
              Effect.zipRight(Deferred.succeed(inWrite, Buffer.from(bytes).toString()), Effect.never),
            ),
          )
          assert.strictEqual(yield* Deferred.await(inWrite).pipe(Effect.timeout("5 seconds")), "abc")
          yield* Fiber.interrupt(stuck)
          fifo.write("def")
          fifo.close()
          assert.strictEqual(yield* text(dio.stdout), "abcdef")
        }).pipe(Effect.provide(live)),
    )

    it.scopedLive(
      "pipeStdout: 16 MiB arrive whole and in order in a Writable; a read's buffer is untouched until its write calls back",
      () =>
        Effect.gen(function* () {
          const dir = yield* tempDir
          const io = yield* ProcessIO
          const set = yield* io.create({ bundleDir: dir, processId: "init", stdin: false, terminal: true })
          const dio = yield* io.open(set)
          const hash = Crypto.createHash("sha256")
          let writes = 0
          let pending = 0
          let overwritten = 0
          const target = new NodeStream.Writable({
            highWaterMark: 1,
            write(chunk: Buffer, _encoding, callback) {
              pending++
              const before = Buffer.from(chunk)
              const done = () => {
                if (!before.equals(chunk)) overwritten++
                hash.update(chunk)
                pending--
                callback()
              }
              // every 8th write calls back a while later: were the reader not waiting, reads would land meanwhile
              if (++writes % 8 === 0) setTimeout(done, 1)
              else done()
            },
          })
          const piped = yield* Effect.fork(dio.pipeStdout(target))
          // numbered lines: a lost, repeated or reordered read changes the hash
          const writer = yield* sh(`seq 1 2000000 > ${set.stdout}`)
          assert.strictEqual(yield* writer.exit, 0)
          yield* Fiber.join(piped)
          const expected = Crypto.createHash("sha256")
          expected.update(`${Array.from({ length: 2000000 }, (_, i) => i + 1).join("\n")}\n`)
          assert.strictEqual(hash.digest("hex"), expected.digest("hex"))
          assert.strictEqual(overwritten, 0, "a lent read changed before its write called back")
          assert.isAbove(writes, 100)
          assert.strictEqual(pending, 0, "the pipe completed before every write called back")
        }).pipe(Effect.provide(live)),
    )

    it.scopedLive(
      "pipeStdout: a target that does not call back holds the reader at three writes (back-pressure); what was read before comes first",
      () =>
        Effect.gen(function* () {
          const dir = yield* tempDir
          const io = yield* ProcessIO
          const set = yield* io.create({ bundleDir: dir, processId: "init", stdin: false, terminal: true })
          const dio = yield* io.open(set)
          const fifo = yield* fifoWriter(set.stdout)
          fifo.write("before ")
          yield* Effect.sleep("50 millis")
          const received: Array<string> = []
          const held: Array<() => void> = []
          const target = {
            write: (chunk: Uint8Array, callback: (error?: Error | null) => void) => {
              received.push(Buffer.from(chunk).toString())
              held.push(() => callback())
              return true
            },
          }
          const piped = yield* Effect.fork(dio.pipeStdout(target))
          // each write lands in its own read: the reader is waiting for data between them
          for (const word of ["a", "b", "c", "d", "e"]) {
            yield* Effect.sleep("30 millis")
            fifo.write(word)
          }
          yield* Effect.sleep("100 millis")
          assert.deepStrictEqual(
            received,
            ["before ", "a", "b"],
            "the reader went on past three pending writes",
          )
          // one callback frees one place: the next read comes
          held.shift()!()
          yield* Effect.sleep("100 millis")
          assert.strictEqual(received.join(""), "before abcde".slice(0, received.join("").length))
          assert.strictEqual(received.length, 4)
          fifo.close()
          while (held.length > 0) {
            held.shift()!()
            yield* Effect.sleep("20 millis")
          }
          yield* Fiber.join(piped).pipe(Effect.timeout("5 seconds"))
          assert.strictEqual(received.join(""), "before abcde")
        }).pipe(Effect.provide(live)),
    )

    it.scopedLive(
      "pipeStdout: a second reader at once is InvalidParameter; a failed write ends the pipe with a System error, and the stream gets what came after",
      () =>
        Effect.gen(function* () {
          const dir = yield* tempDir
          const io = yield* ProcessIO
          const set = yield* io.create({ bundleDir: dir, processId: "init", stdin: false, terminal: true })
          const dio = yield* io.open(set)
          const fifo = yield* fifoWriter(set.stdout)
          const failing = {
            write: (_chunk: Uint8Array, callback: (error?: Error | null) => void) => {
              setImmediate(() => callback(new Error("disk full")))
              return true
            },
          }
          const piped = yield* Effect.fork(dio.pipeStdout(failing))
          yield* Effect.yieldNow()
          const second = yield* Effect.flip(dio.copyStdout(() => Effect.void))
          assert.strictEqual(second._tag, "InvalidParameter")
          fifo.write("lost")
          const failed = yield* Effect.flip(Fiber.join(piped)).pipe(Effect.timeout("5 seconds"))
          assert.strictEqual(failed._tag, "System")
          assert.include(failed.message, "disk full")
          // interrupted, a pipe leaves later reads for the next reader too
          const quiet = { write: () => true }
          const interrupted = yield* Effect.fork(dio.pipeStdout(quiet))
          yield* Effect.yieldNow()
          yield* Fiber.interrupt(interrupted)
          fifo.write("kept")
          fifo.close()
          assert.strictEqual(yield* text(dio.stdout), "kept")
        }).pipe(Effect.provide(live)),
    )

    it.scopedLive("keeps whole chunks: many writes arrive complete and in order", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const io = yield* ProcessIO
        const set = yield* io.create({ bundleDir: dir, processId: "init", stdin: false, terminal: true })
        const dio = yield* io.open(set)
        const collected = yield* Effect.fork(Stream.runCollect(dio.stdout))
        const writer = yield* sh(`seq 1 20000 > ${set.stdout}`)
        assert.strictEqual(yield* writer.exit, 0)
        const chunks = yield* Fiber.join(collected)
        const expected = `${Array.from({ length: 20000 }, (_, i) => i + 1).join("\n")}\n`
        assert.strictEqual(Buffer.concat([...chunks]).toString(), expected)
        assert.isTrue(Chunk.every(chunks, (c) => Buffer.isBuffer(c) && c.length > 0))
      }).pipe(Effect.provide(live)),
    )

    it.scopedLive("a slow consumer slows the writer: 64 MiB pass with bounded memory", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const io = yield* ProcessIO
        const set = yield* io.create({ bundleDir: dir, processId: "init", stdin: false, terminal: true })
        const dio = yield* io.open(set)
        const pull = yield* Stream.toPull(dio.stdout)
        gc()
        const start = process.memoryUsage()
        let peakRss = 0
        let peakBuffers = 0
        // consumed chunks are garbage, not buffering: collect before each sample
        const sample = () => {
          gc()
          const now = process.memoryUsage()
          peakRss = Math.max(peakRss, now.rss - start.rss)
          peakBuffers = Math.max(peakBuffers, now.arrayBuffers - start.arrayBuffers)
        }
        const total = 64 * 1024 * 1024
        const writer = yield* sh(`dd if=/dev/zero bs=65536 count=1024 of=${set.stdout} 2>/dev/null`)
        let read = 0
        const first = yield* pull
        read += Chunk.reduce(first, 0, (n, c) => n + c.length)
        // the consumer stops pulling: the writer must block instead of Node buffering its output
        for (let i = 0; i < 10; i++) {
          yield* Effect.sleep("100 millis")
          sample()
        }
        assert.isNull(writer.child.exitCode, "the writer finished although nobody read")
        const paused = { peakBuffers, peakRss }
        // then reads slowly to the end
        let pulls = 0
        while (true) {
          const next = yield* Effect.option(pull)
          if (Option.isNone(next)) break
          read += Chunk.reduce(next.value, 0, (n, c) => n + c.length)
          if (++pulls % 16 === 0) {
            sample()
            yield* Effect.sleep("2 millis")
          }
        }
        sample()
        assert.strictEqual(read, total)
        assert.strictEqual(yield* writer.exit, 0)
        const bound = 32 * 1024 * 1024
        assert.isBelow(
          paused.peakBuffers,
          8 * 1024 * 1024,
          `buffers grew by ${paused.peakBuffers} bytes while paused`,
        )
        assert.isBelow(peakBuffers, bound, `buffers grew by ${peakBuffers} bytes`)
        assert.isBelow(peakRss, bound, `rss grew by ${peakRss} bytes`)
      }).pipe(Effect.provide(live)),
    )

    it.scopedLive("stdin: a reader process gets the bytes, and EOF when stdin is closed", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const io = yield* ProcessIO
        const set = yield* io.create({ bundleDir: dir, processId: "init", stdin: true, terminal: false })
        const dio = yield* io.open(set)
        const reader = yield* sh(`cat < ${set.stdin}`)
        yield* dio.stdin!.write(Buffer.from("hello "))
        yield* Stream.make(Buffer.from("from "), Buffer.from("node\n")).pipe(Stream.run(dio.stdin!.sink))
        yield* Effect.sleep("100 millis")
        assert.isNull(reader.child.exitCode, "cat ended before stdin was closed")
        yield* dio.closeStdin
        assert.strictEqual(yield* reader.output, "hello from node\n")
        const after = yield* Effect.flip(dio.stdin!.write(Buffer.from("late")))
        assert.strictEqual(after._tag, "System")
        assert.include(after.message, set.stdin!)
      }).pipe(Effect.provide(live)),
    )

    it.scopedLive("closeStdin runs the hook once, deferred until processCreated", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const io = yield* ProcessIO
        const calls = yield* Ref.make(0)
        const set = yield* io.create({ bundleDir: dir, processId: "init", stdin: true, terminal: false })
        const dio = yield* io.open(set, { onStdinClose: Ref.update(calls, (n) => n + 1) })
        const [, closeMs] = yield* elapsed(dio.closeStdin)
        assert.isBelow(closeMs, 500)
        yield* Effect.sleep("50 millis")
        assert.strictEqual(yield* Ref.get(calls), 0)
        yield* dio.processCreated
        yield* dio.stdinClosed
        assert.strictEqual(yield* Ref.get(calls), 1)
        yield* dio.closeStdin
        yield* dio.processCreated
        yield* Effect.sleep("20 millis")
        assert.strictEqual(yield* Ref.get(calls), 1)
      }).pipe(Effect.provide(live)),
    )

    it.scopedLive("closeStdin after processCreated waits for the hook and reports its failure", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const io = yield* ProcessIO
        const set = yield* io.create({ bundleDir: dir, processId: "init", stdin: true, terminal: false })
        const dio = yield* io.open(set)
        yield* dio.processCreated
        const hookRan = yield* Deferred.make<void>()
        const closing = yield* Effect.fork(dio.closeStdin)
        yield* Effect.sleep("50 millis")
        // no hook yet: the close waits for it
        assert.isNull(yield* Fiber.poll(closing).pipe(Effect.map(Option.getOrNull)))
        yield* dio.onStdinClose(
          Effect.zipRight(
            Deferred.succeed(hookRan, undefined),
            Effect.fail(new System({ message: "CloseIO failed" })),
          ),
        )
        const error = yield* Effect.flip(Fiber.join(closing))
        assert.strictEqual(error.message, "CloseIO failed")
        assert.strictEqual((yield* Effect.flip(dio.stdinClosed)).message, "CloseIO failed")
        assert.isTrue(yield* Deferred.isDone(hookRan))
      }).pipe(Effect.provide(live)),
    )

    it.scopedLive("many closeStdin/processCreated races run the hook exactly once", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        for (let round = 0; round < 20; round++) {
          yield* Effect.gen(function* () {
            const io = yield* ProcessIO
            const calls = yield* Ref.make(0)
            const set = yield* io.create({
              bundleDir: dir,
              processId: `p${round}`,
              stdin: true,
              terminal: false,
            })
            const dio = yield* io.open(set, { onStdinClose: Ref.update(calls, (n) => n + 1) })
            yield* Effect.all([dio.closeStdin, dio.processCreated, dio.closeStdin, dio.processCreated], {
              concurrency: "unbounded",
            })
            yield* dio.stdinClosed
            assert.strictEqual(yield* Ref.get(calls), 1)
            yield* dio.processDeleted
          }).pipe(Effect.scoped, Effect.provide(live))
        }
        assert.deepStrictEqual(Fs.readdirSync(dir), [])
      }),
    )

    it.scopedLive("closing the scope closes every fd and removes the files, 200 times over", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        // one warm-up cycle loads koffi and libc
        const cycle = (processId: string) =>
          Effect.gen(function* () {
            const io = yield* ProcessIO
            const set = yield* io.create({ bundleDir: dir, processId, stdin: true, terminal: false })
            const dio = yield* io.open(set)
            yield* Effect.fork(Stream.runDrain(dio.stdout))
          }).pipe(Effect.scoped, Effect.provide(live))
        yield* cycle("warmup")
        const before = fdCount()
        for (let i = 0; i < 200; i++) yield* cycle(`p${i}`)
        assert.strictEqual(fdCount(), before)
        assert.deepStrictEqual(Fs.readdirSync(dir), [])
      }),
    )

    it.scopedLive("readers that never saw a writer are destroyed promptly, ending their streams", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const scope = yield* Scope.make()
        const io = yield* Effect.provide(ProcessIO, live)
        const set = yield* Scope.extend(
          io.create({ bundleDir: dir, processId: "init", stdin: false, terminal: false }),
          scope,
        )
        const before = fdCount()
        const dio = yield* Scope.extend(io.open(set), scope)
        assert.strictEqual(fdCount(), before + 2)
        const out = yield* Effect.fork(text(dio.stdout))
        yield* Effect.sleep("100 millis")
        assert.isTrue(Option.isNone(yield* Fiber.poll(out)), "stdout ended with no writer")
        const [, closeMs] = yield* elapsed(Scope.close(scope, Exit.void))
        assert.isBelow(closeMs, 500)
        assert.strictEqual(yield* Fiber.join(out).pipe(Effect.timeout("1 second")), "")
        assert.strictEqual(fdCount(), before)
        assert.deepStrictEqual(Fs.readdirSync(dir), [])
      }),
    )

    it.scopedLive("drain bound: a writer holding stdout after markExited is cut after the bound", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const io = yield* ProcessIO
        const set = yield* io.create({ bundleDir: dir, processId: "init", stdin: false, terminal: true })
        const dio = yield* io.open(set)
        const got = yield* Deferred.make<void>()
        const out = yield* Stream.tap(dio.stdout, () => Deferred.succeed(got, undefined)).pipe(
          Stream.runCollect,
          Effect.map((chunks) => Buffer.concat([...chunks]).toString()),
          Effect.fork,
        )
        // a background child keeps the FIFO open
        const holder = yield* sh(`exec > ${set.stdout}; printf early; exec sleep 30`)
        yield* Deferred.await(got)
        yield* Effect.sleep("300 millis")
        assert.isTrue(Option.isNone(yield* Fiber.poll(out)), "ended before markExited")
        yield* dio.markExited
        const [result, ms] = yield* elapsed(Fiber.join(out))
        assert.strictEqual(result, "early")
        assert.isAtLeast(ms, 150)
        assert.isBelow(ms, 1500)
        yield* dio.awaitDrained.pipe(
          Effect.timeoutFail({ duration: "100 millis", onTimeout: () => "not drained" }),
        )
        assert.isNull(
          holder.child.exitCode,
          "the holder is still alive: the stream was cut, not ended by EOF",
        )
      }).pipe(Effect.provide(live)),
    )

    it.scopedLive("markExited with outputs already at EOF drains at once", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const io = yield* ProcessIO
        const set = yield* io.create({ bundleDir: dir, processId: "init", stdin: true, terminal: false })
        const dio = yield* io.open(set)
        const out = yield* Effect.fork(text(dio.stdout))
        const writer = yield* sh(`printf x > ${set.stdout}; printf y > ${set.stderr}`)
        yield* writer.exit
        yield* dio.markExited
        const [, ms] = yield* elapsed(dio.awaitDrained)
        assert.isBelow(ms, 150)
        assert.strictEqual(yield* Fiber.join(out), "x")
        const late = yield* Effect.flip(dio.stdin!.write(Buffer.from("z")))
        assert.include(late.message, "exited")
      }).pipe(Effect.provide(live)),
    )
  })

  describe("read pacing", () => {
    /** Opens a set's stdout in `layer`, writes `pieces` of 1 KiB one event-loop turn apart; the chunks read. */
    const smallPieces = (layer: ReturnType<typeof ProcessIONode.layer>, pieces: number) =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const io = yield* ProcessIO
        const set = yield* io.create({ bundleDir: dir, processId: "init", stdin: false, terminal: true })
        const dio = yield* io.open(set)
        const collected = yield* Effect.fork(Stream.runCollect(dio.stdout))
        const writer = yield* fifoWriter(set.stdout)
        const expected: Array<string> = []
        for (let i = 0; i < pieces; i++) {
          const piece = `${String(i).padStart(5, "0")}:`.padEnd(1024, String.fromCharCode(97 + (i % 26)))
          expected.push(piece)
          writer.write(piece)
          // one turn of the event loop: the reader, polled in between, sees each piece on its own
          yield* Effect.promise(() => new Promise((resolve) => setImmediate(resolve)))
        }
        writer.close()
        const chunks = yield* Fiber.join(collected)
        assert.strictEqual(Buffer.concat([...chunks]).toString(), expected.join(""), "every byte, in order")
        return chunks.length
      }).pipe(Effect.provide(layer))

    it.scopedLive(
      "an output's pipe is grown to pipeSize once its output streams (1 MiB by default), not before",
      () =>
        Effect.gen(function* () {
          const capacities = (layer: ReturnType<typeof ProcessIONode.layer>) =>
            Effect.gen(function* () {
              const dir = yield* tempDir
              const io = yield* ProcessIO
              const set = yield* io.create({
                bundleDir: dir,
                processId: "init",
                stdin: false,
                terminal: true,
              })
              const dio = yield* io.open(set)
              const fd = Fs.openSync(set.stdout, Fs.constants.O_WRONLY | Fs.constants.O_NONBLOCK)
              yield* Effect.addFinalizer(() => Effect.sync(() => Fs.closeSync(fd)))
              const before = pipeCapacity(fd)
              const read = yield* Effect.fork(Stream.runDrain(dio.stdout))
              for (let i = 0; i < 8; i++) {
                Fs.writeSync(fd, "x".repeat(1024))
                yield* Effect.promise(() => new Promise((resolve) => setImmediate(resolve)))
              }
              const after = pipeCapacity(fd)
              yield* Fiber.interrupt(read)
              return [before, after]
            }).pipe(Effect.provide(layer), Effect.scoped)
          assert.deepStrictEqual(yield* capacities(live), [65536, 1024 * 1024])
          assert.deepStrictEqual(yield* capacities(ProcessIONode.layer({ pipeSize: 512 * 1024 })), [
            65536,
            512 * 1024,
          ])
          assert.deepStrictEqual(yield* capacities(ProcessIONode.layer({ readRest: 0 })), [65536, 65536])
        }),
    )

    it.scopedLive(
      "a stream of small pieces is read in a few full reads after a rest, every byte in order",
      () =>
        Effect.gen(function* () {
          // a long rest, so that every piece is written while the reader rests
          const resting = yield* smallPieces(ProcessIONode.layer({ readRest: "100 millis" }), 200)
          const eager = yield* smallPieces(ProcessIONode.layer({ readRest: 0 }), 200)
          // the first piece alone, the second then rest; what gathered (199 KiB) in 64 KiB reads
          assert.isAtMost(resting, 8, `chunks with a rest: ${resting}`)
          assert.isAtLeast(eager, 100, `chunks without a rest: ${eager}`)
        }),
    )

    it.scopedLive("without room in the pipe (pipeSize 0) reading never rests", () =>
      Effect.gen(function* () {
        const chunks = yield* smallPieces(ProcessIONode.layer({ pipeSize: 0, readRest: "100 millis" }), 200)
        assert.isAtLeast(chunks, 100, `chunks: ${chunks}`)
      }),
    )

    it.scopedLive("a lone write is read at once, not held for a rest", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const io = yield* ProcessIO
        const set = yield* io.create({ bundleDir: dir, processId: "init", stdin: false, terminal: true })
        const dio = yield* io.open(set)
        const writer = yield* fifoWriter(set.stdout)
        writer.write("hello")
        // a rest would hold it for the whole second
        const [first, ms] = yield* elapsed(
          Stream.runHead(dio.stdout).pipe(
            Effect.timeoutFail({ duration: "900 millis", onTimeout: () => "held back" }),
          ),
        )
        assert.strictEqual(
          Option.map(first, (c) => Buffer.from(c).toString()).pipe(Option.getOrNull),
          "hello",
        )
        assert.isBelow(ms, 900)
      }).pipe(Effect.provide(ProcessIONode.layer({ readRest: "1 second" }))),
    )
  })

  describe("ownership and reattach", () => {
    it.scopedLive(
      "a created process keeps its FIFOs past the scope; reattach reopens them; processDeleted removes them",
      () =>
        Effect.gen(function* () {
          const dir = yield* tempDir
          const set = yield* Effect.gen(function* () {
            const io = yield* ProcessIO
            const set = yield* io.create({ bundleDir: dir, processId: "init", stdin: true, terminal: false })
            const dio = yield* io.open(set)
            yield* dio.processCreated
            return set
          }).pipe(Effect.scoped, Effect.provide(live))
          assert.deepStrictEqual(Fs.readdirSync(dir).sort(), ["init-stderr", "init-stdin", "init-stdout"])

          yield* Effect.gen(function* () {
            const io = yield* ProcessIO
            const calls = yield* Ref.make(0)
            const dio = yield* io.reattach(
              { stdin: set.stdin!, stdout: set.stdout, stderr: set.stderr!, terminal: false },
              { onStdinClose: Ref.update(calls, (n) => n + 1) },
            )
            const out = yield* Effect.fork(text(dio.stdout))
            const err = yield* Effect.fork(text(dio.stderr!))
            const writer = yield* sh(`printf again > ${set.stdout}; printf err > ${set.stderr}`)
            yield* writer.exit
            assert.strictEqual(yield* Fiber.join(out), "again")
            assert.strictEqual(yield* Fiber.join(err), "err")
            // the process exists: the close is sent at once
            yield* dio.closeStdin
            assert.strictEqual(yield* Ref.get(calls), 1)
            yield* dio.processDeleted
            assert.deepStrictEqual(Fs.readdirSync(dir), [])
          }).pipe(Effect.scoped, Effect.provide(live))
        }),
    )

    it.scopedLive("an open that fails part-way (stderr, then stdin gone) closes the ends it opened", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const io = yield* ProcessIO
        const stdout = Path.join(dir, "p-stdout")
        const stderr = Path.join(dir, "p-stderr")
        const stdin = Path.join(dir, "p-stdin")
        yield* Effect.scoped(io.open({ stdout, stderr, stdin, terminal: false })).pipe(Effect.ignore) // warm-up
        const cycle = (missing: string) =>
          Effect.gen(function* () {
            const set = yield* io.create({ bundleDir: dir, processId: "p", stdin: true, terminal: false })
            Fs.rmSync(missing)
            const before = fdCount()
            const failure = yield* Effect.flip(io.open(set))
            assert.strictEqual(failure._tag, "System")
            assert.include(failure.message, missing)
            assert.strictEqual(fdCount(), before, `the ends opened before ${missing} are closed`)
          }).pipe(Effect.scoped)
        yield* cycle(stderr)
        yield* cycle(stdin)
        assert.deepStrictEqual(Fs.readdirSync(dir), [])
      }).pipe(Effect.provide(live)),
    )

    it.scopedLive("reattach without stdout or to a missing FIFO fails with a typed error", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const io = yield* ProcessIO
        const none = yield* Effect.flip(io.reattach({ stdin: "", stdout: "", stderr: "", terminal: false }))
        assert.strictEqual(none._tag, "InvalidParameter")
        const missing = Path.join(dir, "gone-stdout")
        const gone = yield* Effect.flip(io.reattach({ stdout: missing, terminal: true }))
        assert.strictEqual(gone._tag, "System")
        assert.include(gone.message, missing)
        Fs.writeFileSync(Path.join(dir, "file"), "")
        const notFifo = yield* Effect.flip(io.reattach({ stdout: Path.join(dir, "file"), terminal: true }))
        assert.include(notFifo.message, "not a FIFO")
        const relative = yield* Effect.flip(io.reattach({ stdout: "x/init-stdout", terminal: true }))
        assert.strictEqual(relative._tag, "InvalidParameter")
      }).pipe(Effect.provide(live)),
    )
  })
})

// ---------------------------------------------------------------------------
// in-memory layer

const memory = ProcessIOMemory.layer({ drainTimeout: "200 millis", highWaterMark: 64 * 1024 })
const bundle = "/run/bundles/c1"

describe("ProcessIOMemory", () => {
  it.scopedLive("lays out sets like the live layer and records owners; the scope removes them", () =>
    Effect.gen(function* () {
      const io = yield* ProcessIO
      const shim = yield* ProcessIOMemory.ProcessIOMemory
      yield* Effect.gen(function* () {
        const set = yield* io.create({
          bundleDir: bundle,
          processId: "init",
          stdin: true,
          terminal: false,
          uid: 7,
          gid: 8,
        })
        assert.deepStrictEqual(set, {
          stdin: `${bundle}/init-stdin`,
          stdout: `${bundle}/init-stdout`,
          stderr: `${bundle}/init-stderr`,
          terminal: false,
        })
        const tty = yield* io.create({ bundleDir: bundle, processId: "e1", stdin: false, terminal: true })
        assert.deepStrictEqual(tty, { stdout: `${bundle}/e1-stdout`, terminal: true })
        const files = yield* shim.files
        assert.deepStrictEqual(files.map((f) => f.path).sort(), [
          `${bundle}/e1-stdout`,
          `${bundle}/init-stderr`,
          `${bundle}/init-stdin`,
          `${bundle}/init-stdout`,
        ])
        assert.deepStrictEqual(
          files.find((f) => f.path === set.stdout),
          { path: set.stdout, uid: 7, gid: 8 },
        )
        const bad = yield* Effect.flip(
          io.create({ bundleDir: "rel", processId: "init", stdin: false, terminal: false }),
        )
        assert.strictEqual(bad._tag, "InvalidParameter")
      }).pipe(Effect.scoped)
      assert.deepStrictEqual(yield* shim.files, [])
      const unknown = yield* Effect.flip(shim.processSide({ stdout: `${bundle}/init-stdout` }))
      assert.strictEqual(unknown._tag, "NotFound")
    }).pipe(Effect.provide(memory)),
  )

  it.scopedLive("the process side writes stdout/stderr; streams end when it exits", () =>
    Effect.gen(function* () {
      const io = yield* ProcessIO
      const shim = yield* ProcessIOMemory.ProcessIOMemory
      const set = yield* io.create({ bundleDir: bundle, processId: "init", stdin: false, terminal: false })
      const side = yield* shim.processSide({ stdout: set.stdout, stderr: set.stderr! })
      assert.isTrue(Option.isNone(yield* Effect.option(Effect.timeout(side.opened, "20 millis"))))
      const dio = yield* io.open(set)
      yield* side.opened
      const out = yield* Effect.fork(text(dio.stdout))
      const err = yield* Effect.fork(text(dio.stderr!))
      yield* side.stdout.write(Buffer.from("hel"))
      yield* side.stdout.write(Buffer.from("lo"))
      yield* side.stderr!.write(Buffer.from("oops"))
      yield* side.exit
      assert.strictEqual(yield* Fiber.join(out), "hello")
      assert.strictEqual(yield* Fiber.join(err), "oops")
      yield* dio.awaitDrained
    }).pipe(Effect.provide(memory)),
  )

  it.scopedLive("stdin reaches the process, which sees EOF only after closeStdin and closeIO", () =>
    Effect.gen(function* () {
      const io = yield* ProcessIO
      const shim = yield* ProcessIOMemory.ProcessIOMemory
      const set = yield* io.create({ bundleDir: bundle, processId: "init", stdin: true, terminal: true })
      const side = yield* shim.processSide({ stdin: set.stdin!, stdout: set.stdout })
      const calls = yield* Ref.make(0)
      const dio = yield* io.open(set, {
        onStdinClose: Effect.zipRight(
          Ref.update(calls, (n) => n + 1),
          side.stdin!.closeIO,
        ),
      })
      const read = yield* Effect.fork(text(side.stdin!.read))
      yield* dio.stdin!.write(Buffer.from("hello "))
      yield* Stream.make(Buffer.from("world")).pipe(Stream.run(dio.stdin!.sink))
      yield* dio.closeStdin
      yield* Effect.sleep("50 millis")
      assert.isTrue(Option.isNone(yield* Fiber.poll(read)), "EOF before CloseIO")
      assert.strictEqual(yield* Ref.get(calls), 0)
      yield* dio.processCreated
      yield* dio.stdinClosed
      assert.strictEqual(yield* Fiber.join(read), "hello world")
      assert.strictEqual(yield* Ref.get(calls), 1)
      yield* dio.closeStdin
      assert.strictEqual(yield* Ref.get(calls), 1)
    }).pipe(Effect.provide(memory)),
  )

  it.scopedLive("a process writer waits while nobody reads (back-pressure)", () =>
    Effect.gen(function* () {
      const io = yield* ProcessIO
      const shim = yield* ProcessIOMemory.ProcessIOMemory
      const set = yield* io.create({ bundleDir: bundle, processId: "init", stdin: false, terminal: true })
      const side = yield* shim.processSide({ stdout: set.stdout })
      const dio = yield* io.open(set)
      const written = yield* Ref.make(0)
      const chunk = Buffer.alloc(16 * 1024)
      const writer = yield* Effect.fork(
        Effect.repeatN(
          Effect.zipRight(
            side.stdout.write(chunk),
            Ref.update(written, (n) => n + 1),
          ),
          99,
        ),
      )
      yield* Effect.sleep("100 millis")
      const stalled = yield* Ref.get(written)
      assert.isBelow(stalled, 8, `${stalled} chunks written with nobody reading`)
      const total = yield* Effect.fork(Stream.runFold(dio.stdout, 0, (n, c) => n + c.length))
      yield* Fiber.join(writer)
      yield* side.exit
      assert.strictEqual(yield* Fiber.join(total), 100 * chunk.length)
    }).pipe(Effect.provide(memory)),
  )

  it.scopedLive("discardOutput: a process writer never waits, and the streams end empty when it exits", () =>
    Effect.gen(function* () {
      const io = yield* ProcessIO
      const shim = yield* ProcessIOMemory.ProcessIOMemory
      const set = yield* io.create({ bundleDir: bundle, processId: "init", stdin: false, terminal: false })
      const side = yield* shim.processSide({ stdout: set.stdout, stderr: set.stderr! })
      const dio = yield* io.open(set)
      yield* dio.discardOutput
      const chunk = Buffer.alloc(16 * 1024)
      // 100 × 16 KiB, far past the 64 KiB bound, with nobody reading
      yield* Effect.repeatN(side.stdout.write(chunk), 99).pipe(
        Effect.timeoutFail({ duration: "1 second", onTimeout: () => "writer blocked" }),
      )
      yield* side.stderr!.write(chunk)
      yield* side.exit
      yield* dio.awaitDrained
      assert.strictEqual(yield* text(dio.stdout), "")
      assert.strictEqual(yield* text(dio.stderr!), "")
    }).pipe(Effect.provide(memory)),
  )

  it.scopedLive(
    "copyStdout: queued chunks first, then each write as it comes; one copy at a time; a stopped copy leaves the rest",
    () =>
      Effect.gen(function* () {
        const io = yield* ProcessIO
        const shim = yield* ProcessIOMemory.ProcessIOMemory
        const set = yield* io.create({ bundleDir: bundle, processId: "init", stdin: false, terminal: false })
        const side = yield* shim.processSide({ stdout: set.stdout, stderr: set.stderr! })
        const dio = yield* io.open(set)
        yield* side.stdout.write(Buffer.from("queued "))
        // the first copy writes what was queued, then gets stuck on the next chunk, taken from the queue later
        const first = textWriter()
        const wroteQueued = yield* Deferred.make<void>()
        const inWrite = yield* Deferred.make<string>()
        const stuck = yield* Effect.fork(
          dio.copyStdout((bytes) =>
            first.text() === ""
              ? Effect.zipRight(first.write(bytes), Deferred.succeed(wroteQueued, undefined))
              : Effect.zipRight(Deferred.succeed(inWrite, Buffer.from(bytes).toString()), Effect.never),
          ),
        )
        yield* Deferred.await(wroteQueued).pipe(Effect.timeout("5 seconds"))
        yield* side.stdout.write(Buffer.from("held "))
        assert.strictEqual(yield* Deferred.await(inWrite).pipe(Effect.timeout("5 seconds")), "held ")
        assert.strictEqual(first.text(), "queued ")
        const second = yield* Effect.flip(dio.copyStdout(() => Effect.void))
        assert.strictEqual(second._tag, "InvalidParameter")
        yield* Fiber.interrupt(stuck)
        const failed = yield* Effect.flip(dio.copyStdout(() => Effect.fail("disk full" as const)))
        assert.strictEqual(failed, "disk full")
        const out = textWriter()
        const copied = yield* Effect.fork(dio.copyStdout(out.write))
        yield* side.stdout.write(Buffer.from("then "))
        yield* side.stdout.write(Buffer.from("more"))
        yield* side.stderr!.write(Buffer.from("oops"))
        yield* side.exit
        yield* Fiber.join(copied)
        assert.strictEqual(out.text(), "held then more")
        const err = textWriter()
        yield* dio.copyStderr!(err.write)
        assert.strictEqual(err.text(), "oops")
      }).pipe(Effect.provide(memory)),
  )

  it.scopedLive(
    "pipeStdout: queued chunks first, then each chunk into the target in order; stderr alike",
    () =>
      Effect.gen(function* () {
        const io = yield* ProcessIO
        const shim = yield* ProcessIOMemory.ProcessIOMemory
        const set = yield* io.create({ bundleDir: bundle, processId: "init", stdin: false, terminal: false })
        const side = yield* shim.processSide({ stdout: set.stdout, stderr: set.stderr! })
        const dio = yield* io.open(set)
        yield* side.stdout.write(Buffer.from("queued "))
        const parts: Array<string> = []
        const target = new NodeStream.Writable({
          write(chunk: Buffer, _encoding, callback) {
            parts.push(chunk.toString())
            setImmediate(callback)
          },
        })
        const piped = yield* Effect.fork(dio.pipeStdout(target))
        yield* side.stdout.write(Buffer.from("then "))
        yield* side.stdout.write(Buffer.from("more"))
        yield* side.stderr!.write(Buffer.from("oops"))
        yield* side.exit
        yield* Fiber.join(piped)
        assert.strictEqual(parts.join(""), "queued then more")
        const err: Array<string> = []
        yield* dio.pipeStderr!({
          write: (chunk, callback) => {
            err.push(Buffer.from(chunk).toString())
            callback()
            return true
          },
        })
        assert.strictEqual(err.join(""), "oops")
      }).pipe(Effect.provide(memory)),
  )

  it.scopedLive("drain bound: stdout held open after markExited ends after the bound", () =>
    Effect.gen(function* () {
      const io = yield* ProcessIO
      const shim = yield* ProcessIOMemory.ProcessIOMemory
      const set = yield* io.create({ bundleDir: bundle, processId: "init", stdin: false, terminal: false })
      const side = yield* shim.processSide({ stdout: set.stdout })
      const dio = yield* io.open(set)
      const out = yield* Effect.fork(text(dio.stdout))
      yield* side.stdout.write(Buffer.from("early"))
      yield* side.stderr!.close
      yield* Effect.sleep("300 millis")
      assert.isTrue(Option.isNone(yield* Fiber.poll(out)))
      yield* dio.markExited
      const [result, ms] = yield* elapsed(Fiber.join(out))
      assert.strictEqual(result, "early")
      assert.isAtLeast(ms, 150)
      assert.isBelow(ms, 1500)
      yield* dio.awaitDrained.pipe(
        Effect.timeoutFail({ duration: "100 millis", onTimeout: () => "not drained" }),
      )
    }).pipe(Effect.provide(memory)),
  )

  it.scoped(
    "drain bound under the TestClock: output held open after markExited is cut when the bound has passed on it",
    () =>
      Effect.gen(function* () {
        const io = yield* ProcessIO
        const shim = yield* ProcessIOMemory.ProcessIOMemory
        const set = yield* io.create({ bundleDir: bundle, processId: "init", stdin: false, terminal: false })
        const side = yield* shim.processSide({ stdout: set.stdout })
        const dio = yield* io.open(set)
        const out = yield* Effect.fork(text(dio.stdout))
        yield* side.stdout.write(Buffer.from("held"))
        yield* side.stderr!.close
        yield* dio.markExited
        // the bound runs on the test's clock: no real time ends the output, the clock's 200 ms do
        yield* TestClock.adjust("199 millis")
        yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 300)))
        assert.isTrue(Option.isNone(yield* Fiber.poll(out)), "cut before the bound passed on the TestClock")
        yield* TestClock.adjust("1 millis")
        assert.strictEqual(yield* Fiber.join(out), "held")
        yield* dio.awaitDrained
      }).pipe(Effect.provide(memory)),
  )

  it.scopedLive("ownership: created processes keep their set for reattach; processDeleted removes it", () =>
    Effect.gen(function* () {
      const io = yield* ProcessIO
      const shim = yield* ProcessIOMemory.ProcessIOMemory
      const set = yield* Effect.gen(function* () {
        const set = yield* io.create({ bundleDir: bundle, processId: "init", stdin: false, terminal: true })
        const dio = yield* io.open(set)
        yield* dio.processCreated
        return set
      }).pipe(Effect.scoped)
      assert.deepStrictEqual(
        (yield* shim.files).map((f) => f.path),
        [set.stdout],
      )
      const side = yield* shim.processSide({ stdout: set.stdout })
      // written while no client is attached: waits for the re-attach
      const pending = yield* Effect.fork(side.stdout.write(Buffer.from("while away")))
      yield* Effect.gen(function* () {
        const dio = yield* io.reattach({ stdout: set.stdout, stdin: "", stderr: "", terminal: true })
        yield* Fiber.join(pending)
        const out = yield* Effect.fork(text(dio.stdout))
        yield* side.exit
        assert.strictEqual(yield* Fiber.join(out), "while away")
        yield* dio.processDeleted
        assert.deepStrictEqual(yield* shim.files, [])
      }).pipe(Effect.scoped)
      const gone = yield* Effect.flip(io.reattach({ stdout: set.stdout, terminal: true }).pipe(Effect.scoped))
      assert.strictEqual(gone._tag, "System")
      assert.include(gone.message, set.stdout)
    }).pipe(Effect.provide(memory)),
  )

  it.live("interruption after create, before open, leaves no set", () =>
    Effect.gen(function* () {
      const made = yield* Deferred.make<void>()
      const { processIO, memory: shim } = ProcessIOMemory.make()
      const fiber = yield* Effect.gen(function* () {
        yield* processIO.create({ bundleDir: bundle, processId: "init", stdin: true, terminal: false })
        yield* Deferred.succeed(made, undefined)
        yield* Effect.never
      }).pipe(Effect.scoped, Effect.fork)
      yield* Deferred.await(made)
      assert.strictEqual((yield* shim.files).length, 3)
      yield* Fiber.interrupt(fiber)
      assert.deepStrictEqual(yield* shim.files, [])
    }),
  )
})
