/**
 * Group "stdio": a container's stdout through `ProcessIO` (Node, non-blocking
 * FIFO read ends as sockets) vs the same container's stdout FIFO read by
 * `cat <fifo> >/dev/null`, 1 GiB from busybox `dd bs=64k` and `head -c`,
 * timed from `Tasks.Start` to EOF, runs interleaved, each ratio with its 95%
 * bootstrap interval. `pipeStdout` runs twice: with the layer's default read
 * pacing (reading rests 1 ms between small reads in a row) and with
 * `readRest: 0` (every piece read as it lands). And the cost of making
 * and removing a stdin+stdout+stderr FIFO set vs spawning `mkfifo` three times.
 */
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Net from "node:net"
import * as Path from "node:path"
import * as NodeStream from "node:stream"
import { performance } from "node:perf_hooks"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Stream from "effect/Stream"
import * as Spec from "../src/domain/Spec.js"
import * as ContainerdLive from "../src/layers/ContainerdLive.js"
import * as ProcessIONode from "../src/layers/ProcessIONode.js"
import { Containerd } from "../src/services/Containerd.js"
import { ProcessIO } from "../src/services/ProcessIO.js"
import * as Busybox from "../src/testing/Busybox.js"
import { withDaemon } from "./daemon.js"
import { against, type Group, type Result, summarize, timePair } from "./harness.js"

const total = 1024 * 1024 * 1024
// 1 GiB rates on two shared CPUs swing by ±15% from one transfer to the next: the median of 11 per side keeps
// the ratio's bootstrap interval (printed with it) to a few percent
const runs = 11
const fifoSets = 300

const workloads = [
  { key: "dd", label: "dd bs=64k count=16384", args: ["dd", "if=/dev/zero", "bs=64k", "count=16384"] },
  { key: "head", label: "head -c 1073741824 /dev/zero", args: ["head", "-c", String(total), "/dev/zero"] },
] as const

/** Resolves when the child exits with 0, rejects otherwise. */
const exited = (child: ChildProcess.ChildProcess, what: string): Promise<void> =>
  new Promise((resolve, reject) => {
    child.once("error", reject)
    child.once("exit", (code, signal) =>
      code === 0 ? resolve() : reject(new Error(`${what} exited with ${code ?? signal}`)),
    )
  })

const mkfifo = (path: string) => exited(ChildProcess.spawn("mkfifo", [path], { stdio: "ignore" }), "mkfifo")

/** The "stdio" group. */
export const stdio: Group = {
  name: "stdio",
  description:
    "1 GiB of container stdout: ProcessIO vs cat on the FIFO (MB/s); FIFO-set creation vs spawning mkfifo",
  run: () =>
    withDaemon(async (address) => {
      const namespace = `bench-stdio-${process.pid}`
      const work = Fs.mkdtempSync(Path.join(Os.tmpdir(), "bench-stdio-"))
      const rootfs = Path.join(work, "rootfs")
      const bundleDir = Path.join(work, "fifos")
      Fs.mkdirSync(bundleDir)
      const runtime = ManagedRuntime.make(
        Layer.mergeAll(ContainerdLive.layer({ address, namespace }), ProcessIONode.layer()),
      )
      const run = <A, E>(effect: Effect.Effect<A, E, Containerd | ProcessIO>) => runtime.runPromise(effect)
      // the same layer reading every piece of output as it lands (no rests)
      const eagerIO = ProcessIONode.make({ readRest: 0 })
      try {
        await Effect.runPromise(Busybox.writeRootfs(rootfs))
        await run(
          Effect.flatMap(Containerd, (c) =>
            Effect.forEach(
              workloads,
              (w) =>
                c.containers.create({
                  id: `stdio-${w.key}`,
                  spec: Spec.defaultLinux({
                    id: `stdio-${w.key}`,
                    namespace,
                    rootPath: rootfs,
                    args: w.args,
                  }),
                  runtime: { name: "io.containerd.runc.v2" },
                }),
              { discard: true },
            ),
          ),
        )
        let seq = 0

        /**
         * One task whose stdout is read by ProcessIO; seconds from Tasks.Start to EOF. `stream`: the `stdout`
         * stream (a fresh buffer per read, owned by the consumer); `copy`: `copyStdout`, reads lent from reused
         * buffers to an Effect per read; `pipe`: `pipeStdout` into a Node `Writable` that counts.
         */
        const viaLibrary = (containerId: string, how: "stream" | "copy" | "pipe" | "eager") =>
          run(
            Effect.scoped(
              Effect.gen(function* () {
                const c = yield* Containerd
                const processIO = how === "eager" ? eagerIO : yield* ProcessIO
                const set = yield* processIO.create({
                  bundleDir,
                  processId: `lib-${seq++}`,
                  stdin: false,
                  terminal: false,
                })
                const io = yield* processIO.open(set)
                let bytes = 0
                const counted = yield* Effect.fork(
                  how === "stream"
                    ? Stream.runForEachChunk(io.stdout, (chunks) =>
                        Effect.sync(() => {
                          for (const chunk of chunks) bytes += chunk.length
                        }),
                      )
                    : how === "copy"
                      ? io.copyStdout((chunk) =>
                          Effect.sync(() => {
                            bytes += chunk.length
                          }),
                        )
                      : io.pipeStdout(
                          new NodeStream.Writable({
                            write(chunk: Buffer, _encoding, callback) {
                              bytes += chunk.length
                              callback()
                            },
                          }),
                        ),
                )
                if (io.stderr !== undefined) yield* Effect.fork(Stream.runDrain(io.stderr))
                yield* c.tasks.create({
                  containerId,
                  stdout: set.stdout,
                  stderr: set.stderr ?? "",
                  terminal: false,
                })
                yield* io.processCreated
                const started = performance.now()
                yield* c.tasks.start({ containerId })
                yield* Fiber.join(counted)
                const seconds = (performance.now() - started) / 1000
                const status = yield* c.tasks.wait({ containerId })
                yield* io.markExited
                yield* io.awaitDrained
                yield* c.tasks.delete({ containerId })
                yield* io.processDeleted
                if (bytes !== total || status.exitStatus !== 0) {
                  return yield* Effect.dieMessage(
                    `${containerId}: ${bytes} bytes, exit ${status.exitStatus} (expected ${total}, 0)`,
                  )
                }
                return seconds
              }),
            ),
          )

        /**
         * Creates and starts the task on these FIFOs; seconds from Tasks.Start until `finished`. Then waits for the
         * exit and for `drained`, and deletes the task.
         */
        const timeTask = (
          containerId: string,
          stdout: string,
          stderr: string,
          finished: Promise<unknown>,
          drained: Promise<unknown> = Promise.resolve(),
        ) =>
          run(
            Effect.gen(function* () {
              const c = yield* Containerd
              yield* c.tasks.create({ containerId, stdout, stderr, terminal: false })
              const started = performance.now()
              yield* c.tasks.start({ containerId })
              yield* Effect.promise(() => finished)
              const seconds = (performance.now() - started) / 1000
              const status = yield* c.tasks.wait({ containerId })
              yield* Effect.promise(() => drained)
              yield* c.tasks.delete({ containerId })
              if (status.exitStatus !== 0)
                return yield* Effect.dieMessage(`${containerId}: exit ${status.exitStatus}`)
              return seconds
            }),
          )

        /** The same task with its stdout (and stderr) FIFOs read by spawned `cat`s. */
        const viaCat = async (containerId: string) => {
          const n = seq++
          const stdout = Path.join(bundleDir, `cat-${n}-stdout`)
          const stderr = Path.join(bundleDir, `cat-${n}-stderr`)
          await mkfifo(stdout)
          await mkfifo(stderr)
          try {
            const catOut = exited(
              ChildProcess.spawn("cat", [stdout], { stdio: ["ignore", "ignore", "inherit"] }),
              "cat stdout",
            )
            const catErr = exited(ChildProcess.spawn("cat", [stderr], { stdio: "ignore" }), "cat stderr")
            return await timeTask(containerId, stdout, stderr, catOut, catErr)
          } finally {
            Fs.rmSync(stdout, { force: true })
            Fs.rmSync(stderr, { force: true })
          }
        }

        /**
         * The same task with its stdout FIFO read by a bare `net.Socket` in this process, counting bytes and
         * nothing else: Node's own ceiling. `reuse`: libuv reads into one reused 1 MiB buffer (the socket's
         * `onread` option) instead of a fresh buffer per read.
         */
        const viaSocket = async (containerId: string, reuse: boolean) => {
          const n = seq++
          const stdout = Path.join(bundleDir, `raw-${n}-stdout`)
          const stderr = Path.join(bundleDir, `raw-${n}-stderr`)
          await mkfifo(stdout)
          await mkfifo(stderr)
          const open = (path: string) => Fs.openSync(path, Fs.constants.O_RDONLY | Fs.constants.O_NONBLOCK)
          const errSocket = new Net.Socket({ fd: open(stderr), readable: true, writable: false })
          errSocket.resume()
          let bytes = 0
          const socket = reuse
            ? new Net.Socket({
                fd: open(stdout),
                readable: true,
                writable: false,
                onread: {
                  buffer: Buffer.allocUnsafe(1024 * 1024),
                  callback: (nread: number) => {
                    bytes += nread
                  },
                },
              } as Net.SocketConstructorOpts)
            : new Net.Socket({ fd: open(stdout), readable: true, writable: false }).on(
                "data",
                (chunk: Buffer) => {
                  bytes += chunk.length
                },
              )
          const done = new Promise<void>((resolve, reject) => {
            socket.once("end", () => resolve())
            socket.once("error", reject)
          })
          try {
            const seconds = await timeTask(containerId, stdout, stderr, done)
            if (bytes !== total) throw new Error(`${containerId}: ${bytes} bytes, expected ${total}`)
            return seconds
          } finally {
            socket.destroy()
            errSocket.destroy()
            Fs.rmSync(stdout, { force: true })
            Fs.rmSync(stderr, { force: true })
          }
        }

        const rows: Result[] = []
        type Side = "stream" | "copy" | "pipe" | "eager" | "cat" | "socket" | "reused"
        const sides: ReadonlyArray<Side> = ["stream", "copy", "pipe", "eager", "cat", "socket", "reused"]
        const once = (side: Side, id: string): Promise<number> =>
          side === "stream" || side === "copy" || side === "pipe" || side === "eager"
            ? viaLibrary(id, side)
            : side === "cat"
              ? viaCat(id)
              : viaSocket(id, side === "reused")
        const rates = new Map(
          workloads.map((w) => [w.key, new Map(sides.map((side) => [side, [] as number[]]))]),
        )
        const mbps = (seconds: number) => total / 1e6 / seconds
        for (const w of workloads) {
          // warm-up: page cache, shim binary, busybox
          for (const side of sides) await once(side, `stdio-${w.key}`)
        }
        for (let i = 0; i < runs; i++) {
          for (const w of workloads) {
            // the order rotates each run so that drift affects every side alike
            for (let k = 0; k < sides.length; k++) {
              const side = sides[(i + k) % sides.length]!
              rates
                .get(w.key)!
                .get(side)!
                .push(mbps(await once(side, `stdio-${w.key}`)))
            }
          }
        }
        for (const w of workloads) {
          const seen = rates.get(w.key)!
          const row = (side: Side, what: string) =>
            summarize("stdio", `stdout 1 GiB, ${w.label}: ${what}`, "MB/s", seen.get(side)!)
          const cat = row("cat", "cat <fifo> >/dev/null")
          rows.push(
            against(row("pipe", "ProcessIO pipeStdout into a Node Writable (no Effect per read)"), cat),
            against(row("eager", "ProcessIO pipeStdout, readRest 0 (every piece read as it lands)"), cat),
            against(row("copy", "ProcessIO copyStdout (reads lent from reused buffers)"), cat),
            against(row("stream", "ProcessIO stdout stream (a buffer per read)"), cat),
            cat,
            against(row("socket", "bare net.Socket, 'data' events (reference)"), cat),
            against(row("reused", "bare net.Socket, onread into one reused buffer (reference)"), cat),
          )
        }

        // FIFO sets: ProcessIO.create (libc mkfifo) + scope close vs three spawned mkfifo + unlink
        const processIO = ProcessIONode.make()
        const createSet = () =>
          Effect.runPromise(
            Effect.scoped(processIO.create({ bundleDir, processId: "set", stdin: true, terminal: false })),
          )
        const spawnSet = async () => {
          const paths = ["stdin", "stdout", "stderr"].map((s) => Path.join(bundleDir, `spawned-${s}`))
          for (const path of paths) await mkfifo(path)
          for (const path of paths) Fs.unlinkSync(path)
        }
        const [ours, theirs] = await timePair(createSet, spawnSet, fifoSets, 20)
        const micro = (ms: ReadonlyArray<number>) => ms.map((v) => v * 1000)
        const spawned = summarize(
          "stdio",
          "FIFO set (stdin+stdout+stderr): spawn mkfifo ×3 + unlink",
          "µs",
          micro(theirs),
        )
        const created = summarize(
          "stdio",
          "FIFO set (stdin+stdout+stderr): ProcessIO.create + close",
          "µs",
          micro(ours),
        )
        rows.push(against(created, spawned), spawned)
        return rows
      } finally {
        await run(
          Effect.gen(function* () {
            const c = yield* Containerd
            for (const w of workloads) {
              const containerId = `stdio-${w.key}`
              yield* c.tasks.kill({ containerId, signal: 9, all: true }).pipe(Effect.ignore)
              yield* c.tasks.wait({ containerId }).pipe(Effect.timeout("10 seconds"), Effect.ignore)
              yield* c.tasks.delete({ containerId }).pipe(Effect.ignore)
              yield* c.containers.delete(containerId).pipe(Effect.ignore)
            }
          }),
        ).catch(() => undefined)
        await runtime.dispose()
        Fs.rmSync(work, { recursive: true, force: true })
      }
    }),
}
