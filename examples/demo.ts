/**
 * `npm run demo`: the library's main job, end to end.
 *
 * Without `CONTAINERD_ADDRESS` it starts a private containerd of its own (and
 * stops it afterwards); with it, it uses that daemon. It runs a busybox
 * container through `Libcontainerd` and streams its output live, runs an exec
 * and prints its output and exit code, pauses and resumes the container,
 * prints its stats and the events the Backend received, cleans up, and checks
 * that nothing is left behind.
 */
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import { pipe } from "effect/Function"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as Spec from "../src/domain/Spec.js"
import * as ContainerdLive from "../src/layers/ContainerdLive.js"
import * as LibcontainerdLive from "../src/layers/LibcontainerdLive.js"
import * as PrivateContainerd from "../src/layers/PrivateContainerd.js"
import * as ProcessIONode from "../src/layers/ProcessIONode.js"
import * as Backend from "../src/services/Backend.js"
import { Containerd } from "../src/services/Containerd.js"
import { Libcontainerd } from "../src/services/Libcontainerd.js"
import * as Busybox from "../src/testing/Busybox.js"

const namespace = "effect-containerd-demo"
const id = "demo"

const say = (line: string) => Effect.sync(() => process.stdout.write(`${line}\n`))

/** Prints a process's output as it arrives, prefixed; completes `done` at EOF. */
const live = (prefix: string, stream: Stream.Stream<Uint8Array, unknown>, done: Deferred.Deferred<string>) =>
  Effect.gen(function* () {
    const decoder = new TextDecoder()
    let text = ""
    yield* Stream.runForEach(stream, (chunk) => {
      const part = decoder.decode(chunk, { stream: true })
      text += part
      return Effect.forEach(
        part.split("\n").filter((l) => l.length > 0),
        (l) => say(`  ${prefix} | ${l}`),
        { discard: true },
      )
    }).pipe(Effect.ignore)
    yield* Deferred.succeed(done, text)
  })

const program = (stateDir: string, rootfs: string) =>
  Effect.gen(function* () {
    const client = yield* Libcontainerd
    const recorder = yield* Backend.Recorder
    const version = yield* client.version
    yield* say(`containerd ${version.version}`)

    const spec = pipe(
      Spec.defaultLinux({
        id,
        namespace,
        rootPath: rootfs,
        args: ["sh", "-c", 'for i in 1 2 3 4 5 6; do echo "tick $i"; sleep 0.4; done; echo bye'],
      }),
      Spec.withHostname("demo-box"),
      Spec.withEnv({ GREETING: "hello" }),
      Spec.withMemoryLimit(64 * 1024 * 1024),
    )

    yield* client.create(id, spec)
    yield* say(`created ${id} (bundle ${Path.join(stateDir, id)})`)
    const initDone = yield* Deferred.make<string>()
    const pid = yield* client.start(id, {
      attachStdio: (io) => Effect.asVoid(Effect.forkScoped(live("init", io.stdout, initDone))),
    })
    yield* say(`started ${id}, pid ${pid}`)

    const execDone = yield* Deferred.make<string>()
    const execPid = yield* client.exec(
      id,
      "hello",
      Spec.processFrom(spec, { args: ["sh", "-c", 'echo "$GREETING from $(hostname)"; exit 3'] }),
      { attachStdio: (io) => Effect.asVoid(Effect.forkScoped(live("exec", io.stdout, execDone))) },
    )
    yield* Deferred.await(execDone)
    const execExit = yield* waitForExit(recorder, id, "hello")
    yield* say(`exec hello (pid ${execPid}) exited with code ${execExit}`)

    yield* client.pause(id)
    yield* say(`paused: status ${yield* client.status(id)}`)
    yield* Effect.sleep("500 millis")
    yield* client.resume(id)
    yield* say(`resumed: status ${yield* client.status(id)}`)

    const stats = yield* client.stats(id)
    yield* say(
      `stats (cgroup ${stats.cgroup}): memory ${stats.memory.usage} bytes of ${stats.memory.limit}, cpu ${stats.cpu.usageNanos} ns, pids ${stats.pids.current}`,
    )

    yield* Deferred.await(initDone)
    const code = yield* waitForExit(recorder, id, id)
    const deleted = yield* client.deleteTask(id)
    yield* say(`init exited with code ${code}; deleteTask says ${deleted.exitCode}`)
    yield* client.delete(id)

    const events = yield* recorder.events
    yield* say("events received by the Backend, in order:")
    for (const e of events) {
      yield* say(
        `  ${e.type.padEnd(12)} ${e.info.processId}${e.type === "exit" ? ` code=${e.info.exitCode}` : ""}${e.info.pid ? ` pid=${e.info.pid}` : ""}`,
      )
    }
  })

const waitForExit = (recorder: Backend.Recorder["Type"], containerId: string, processId: string) =>
  Effect.gen(function* () {
    for (;;) {
      const exit = (yield* recorder.events).find(
        (e) => e.type === "exit" && e.containerId === containerId && e.info.processId === processId,
      )
      if (exit !== undefined) return exit.info.exitCode
      yield* Effect.sleep("20 millis")
    }
  })

/** What is left of the demo in the daemon and on disk. */
const leftovers = (stateDir: string) =>
  Effect.gen(function* () {
    const containerd = yield* Containerd
    const inNs = Containerd.withNamespace(namespace)
    const containers = yield* inNs(containerd.containers.list())
    const tasks = yield* inNs(containerd.tasks.list())
    const files = Fs.existsSync(stateDir) ? Fs.readdirSync(stateDir) : []
    return [
      ...containers.map((c) => `container ${c.id}`),
      ...tasks.map((t) => `task ${t.containerId}`),
      ...files.map((f) => `file ${Path.join(stateDir, f)}`),
    ]
  })

const main = Effect.gen(function* () {
  const address = process.env.CONTAINERD_ADDRESS
  const work = yield* Effect.acquireRelease(
    Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-containerd-demo-"))),
    (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true })),
  )
  const stateDir = Path.join(work, "state")
  const rootfs = yield* Busybox.writeRootfs(Path.join(work, "rootfs"))

  const containerdLayer =
    address === undefined || address === ""
      ? PrivateContainerd.layer({ namespace })
      : ContainerdLive.layer({ address, namespace })
  yield* say(
    address === undefined || address === ""
      ? "CONTAINERD_ADDRESS is not set: starting a private containerd"
      : `using containerd at ${address}`,
  )

  const daemon = yield* Effect.gen(function* () {
    const context = yield* Layer.build(
      LibcontainerdLive.layer({ stateDir, namespace }).pipe(
        Layer.provideMerge(Layer.mergeAll(ProcessIONode.layer(), Backend.layerRecorder)),
        Layer.provideMerge(containerdLayer),
      ),
    )
    yield* program(stateDir, rootfs).pipe(Effect.provide(context))
    const left = yield* leftovers(stateDir).pipe(Effect.provide(context))
    return {
      left,
      info: Option.getOrUndefined(
        yield* Effect.serviceOption(PrivateContainerd.PrivateContainerd).pipe(Effect.provide(context)),
      ),
    }
  }).pipe(Effect.scoped)

  const problems = [...daemon.left]
  if (daemon.info !== undefined) {
    let alive = true
    try {
      process.kill(daemon.info.pid, 0)
    } catch {
      alive = false
    }
    if (alive) problems.push(`containerd pid ${daemon.info.pid} still running`)
    if (Fs.existsSync(daemon.info.dir)) problems.push(`daemon dir ${daemon.info.dir}`)
  }
  if (problems.length > 0) {
    yield* say(`left behind: ${problems.join(", ")}`)
    return yield* Effect.fail(new Error("the demo left things behind"))
  }
  yield* say(
    `clean: no container, task, FIFO or bundle dir left${daemon.info === undefined ? "" : ", private containerd stopped"}`,
  )
}).pipe(Effect.scoped)

Effect.runPromiseExit(main).then((exit) => {
  if (exit._tag === "Failure") {
    console.error(exit.cause)
    process.exitCode = 1
  }
})
