import { assert, describe, it } from "@effect/vitest"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import * as Spec from "../src/domain/Spec.js"
import { decodeEnvelope, type TaskEvent } from "../src/domain/TaskEvent.js"
import type { Envelope } from "../src/domain/Types.js"
import type { ContainerdError } from "../src/errors/ContainerdError.js"
import * as ContainerdMemory from "../src/layers/ContainerdMemory.js"
import * as LibcontainerdLive from "../src/layers/LibcontainerdLive.js"
import * as Backend from "../src/services/Backend.js"
import { Containerd, leased, withLease, withNamespace } from "../src/services/Containerd.js"
import { Libcontainerd } from "../src/services/Libcontainerd.js"
import { ProcessIO } from "../src/services/ProcessIO.js"

const TestLayer = ContainerdMemory.layerWithProcessIO()

const specOf = (id: string, args: ReadonlyArray<string>, terminal = false): Spec.Spec => {
  const spec = Spec.defaultLinux({ id, namespace: "default", rootPath: "/rootfs", args })
  return terminal ? Spec.withTerminal(spec) : spec
}

const text = <E>(stream: Stream.Stream<Uint8Array, E>) =>
  Stream.runFold(stream, "", (all, chunk) => all + Buffer.from(chunk).toString("utf8"))

const sha256 = (data: Uint8Array | string) =>
  `sha256:${Crypto.createHash("sha256").update(data).digest("hex")}`

/** Asserts an error's tag, gRPC code and message (exactly, or a part of it). */
const assertError = (
  error: ContainerdError,
  tag: ContainerdError["_tag"],
  code: number | undefined,
  message: string | RegExp,
) => {
  assert.strictEqual(error._tag, tag, error.message)
  assert.strictEqual(error.code, code, error.message)
  if (typeof message === "string") assert.strictEqual(error.message, message)
  else assert.match(error.message, message)
}

/** Creates a container and its task with stdio through ProcessIO, as the client does, and starts it. */
const runTask = (
  id: string,
  args: ReadonlyArray<string>,
  options: { readonly stdin?: boolean; readonly terminal?: boolean; readonly start?: boolean } = {},
) =>
  Effect.gen(function* () {
    const containerd = yield* Containerd
    const io = yield* ProcessIO
    const terminal = options.terminal ?? false
    yield* containerd.containers.create({ id, spec: specOf(id, args, terminal) })
    const set = yield* io.create({
      bundleDir: `/run/test/${id}`,
      processId: "init",
      stdin: options.stdin ?? false,
      terminal,
    })
    const dio = yield* io.open(set, {
      onStdinClose: containerd.tasks.closeIO({ containerId: id, stdin: true }),
    })
    const stdout = yield* Effect.fork(text(dio.stdout))
    const stderr = dio.stderr === undefined ? undefined : yield* Effect.fork(text(dio.stderr))
    const created = yield* containerd.tasks.create({
      containerId: id,
      stdin: set.stdin ?? "",
      stdout: set.stdout,
      stderr: set.stderr ?? "",
      terminal,
    })
    yield* dio.processCreated
    if (options.start !== false) yield* containerd.tasks.start({ containerId: id })
    return { dio, stdout, stderr, pid: created.pid }
  })

/** Subscribes in the background; resolves once the subscription is registered. */
const subscribe = (filters: ReadonlyArray<string> = []) =>
  Effect.gen(function* () {
    const containerd = yield* Containerd
    const memory = yield* ContainerdMemory.ContainerdMemory
    const before = yield* memory.subscribers
    const seen = yield* Ref.make<ReadonlyArray<Envelope>>([])
    const fiber = yield* Effect.forkScoped(
      Stream.runForEach(containerd.events.subscribe(filters), (e) => Ref.update(seen, (all) => [...all, e])),
    )
    yield* Effect.repeat(Effect.zipRight(Effect.yieldNow(), memory.subscribers), { until: (n) => n > before })
    /** The envelopes seen once at least `n` have arrived. */
    const atLeast = (n: number) =>
      Effect.repeat(Effect.zipRight(Effect.yieldNow(), Ref.get(seen)), { until: (all) => all.length >= n })
    return { seen: Ref.get(seen), atLeast, fiber }
  })

const topics = (envelopes: ReadonlyArray<Envelope>) => envelopes.map((e) => e.topic)

const decoded = (envelope: Envelope): TaskEvent => {
  const result = decodeEnvelope(envelope)
  if (Either.isLeft(result)) throw new Error(`malformed ${envelope.topic}: ${result.left.message}`)
  if (Option.isNone(result.right)) throw new Error(`unknown event on ${envelope.topic}`)
  return result.right.value.event
}

describe("ContainerdMemory", () => {
  it.effect("answers version and health like a serving daemon", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      assert.deepStrictEqual(yield* containerd.version, { version: "memory", revision: "effect-containerd" })
      assert.strictEqual(yield* containerd.health, "SERVING")
      assert.strictEqual(containerd.namespace, "default")
    }).pipe(Effect.provide(TestLayer)),
  )

  it.effect("containers: create, get, list with filters, update, delete, with containerd's errors", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      const created = yield* containerd.containers.create({
        id: "web",
        spec: specOf("web", ["true"]),
        labels: { app: "web" },
      })
      assert.strictEqual(created.runtime.name, "io.containerd.runc.v2")
      yield* containerd.containers.create({ id: "db", spec: specOf("db", ["true"]), labels: { app: "db" } })

      const duplicate = yield* Effect.flip(
        containerd.containers.create({ id: "web", spec: specOf("web", ["true"]) }),
      )
      assertError(duplicate, "Conflict", 6, `container "web": already exists`)
      const invalid = yield* Effect.flip(
        containerd.containers.create({ id: "../x", spec: specOf("x", ["true"]) }),
      )
      assertError(invalid, "InvalidParameter", undefined, /^id: "\.\.\/x" is not a valid identifier/)
      const missing = yield* Effect.flip(containerd.containers.get("nope"))
      assertError(missing, "NotFound", 5, `container "nope" in namespace "default": not found`)
      const missingDelete = yield* Effect.flip(containerd.containers.delete("nope"))
      assertError(missingDelete, "NotFound", 5, `container "nope" in namespace "default": not found`)

      assert.deepStrictEqual(
        (yield* containerd.containers.list()).map((c) => c.id),
        ["db", "web"],
      )
      assert.deepStrictEqual(
        (yield* containerd.containers.list(["labels.app==web"])).map((c) => c.id),
        ["web"],
      )
      assert.deepStrictEqual(
        (yield* containerd.containers.list(["id~=|^d|", "labels.app==web"])).map((c) => c.id),
        ["db", "web"],
      )

      const updated = yield* containerd.containers.update(
        { id: "web", spec: specOf("web", ["true"]), labels: { app: "web", tier: "front" } },
        ["labels"],
      )
      assert.deepStrictEqual(updated.labels, { app: "web", tier: "front" })
      assert.deepStrictEqual((yield* containerd.containers.get("web")).labels, { app: "web", tier: "front" })
      const badField = yield* Effect.flip(
        containerd.containers.update({ id: "web", spec: specOf("web", ["true"]) }, ["runtime"]),
      )
      assertError(badField, "InvalidParameter", 3, `cannot update "runtime" field on "web": invalid argument`)

      yield* containerd.containers.delete("web")
      assertError(yield* Effect.flip(containerd.containers.get("web")), "NotFound", 5, /not found/)
    }).pipe(Effect.provide(TestLayer)),
  )

  it.effect("keeps state per namespace", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      yield* containerd.containers
        .create({ id: "web", spec: specOf("web", ["true"]) })
        .pipe(withNamespace("jobs"))
      const elsewhere = yield* Effect.flip(containerd.containers.get("web"))
      assertError(elsewhere, "NotFound", 5, `container "web" in namespace "default": not found`)
      const there = yield* containerd.containers.get("web").pipe(withNamespace("jobs"))
      assert.strictEqual(there.id, "web")
    }).pipe(Effect.provide(TestLayer)),
  )

  it.scoped("task errors carry containerd's codes and messages", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      const memory = yield* ContainerdMemory.ContainerdMemory
      yield* containerd.containers.create({ id: "idle", spec: specOf("idle", ["true"]) })
      assertError(
        yield* Effect.flip(containerd.tasks.get({ containerId: "idle" })),
        "NotFound",
        5,
        "task idle not found",
      )
      assertError(
        yield* Effect.flip(containerd.tasks.get({ containerId: "ghost" })),
        "NotFound",
        5,
        `container "ghost" in namespace "default": not found`,
      )
      assertError(
        yield* Effect.flip(
          containerd.tasks.exec({
            containerId: "idle",
            execId: "e1",
            spec: Spec.makeProcess({ args: ["true"] }),
          }),
        ),
        "NotFound",
        5,
        "task idle not found",
      )

      yield* runTask("web", ["sleep", "60"])
      assertError(
        yield* Effect.flip(containerd.tasks.create({ containerId: "web" })),
        "Conflict",
        6,
        "task web: already exists",
      )
      assertError(
        yield* Effect.flip(containerd.tasks.start({ containerId: "web" })),
        "System",
        2,
        "cannot start a running process",
      )
      assertError(
        yield* Effect.flip(containerd.tasks.delete({ containerId: "web" })),
        "System",
        2,
        "cannot delete a running process",
      )
      yield* containerd.tasks.pause("web")
      assertError(
        yield* Effect.flip(containerd.tasks.pause("web")),
        "System",
        2,
        "cannot pause a paused container",
      )
      yield* containerd.tasks.resume("web")
      assertError(
        yield* Effect.flip(containerd.tasks.resume("web")),
        "System",
        2,
        "cannot resume a running process",
      )

      const process = Spec.makeProcess({ args: ["sleep", "60"] })
      yield* containerd.tasks.exec({ containerId: "web", execId: "e1", spec: process })
      assertError(
        yield* Effect.flip(containerd.tasks.exec({ containerId: "web", execId: "e1", spec: process })),
        "Conflict",
        6,
        "id e1: already exists",
      )
      assertError(
        yield* Effect.flip(containerd.tasks.kill({ containerId: "web", execId: "e1", signal: 15 })),
        "Conflict",
        9,
        "process not created: failed precondition",
      )
      assertError(
        yield* Effect.flip(containerd.tasks.get({ containerId: "web", execId: "e2" })),
        "NotFound",
        5,
        "process does not exist e2: not found",
      )
      assertError(
        yield* Effect.flip(containerd.tasks.checkpoint({ containerId: "web" })),
        "System",
        2,
        "checkpoint needs CRIU; the in-memory containerd does not model it",
      )

      yield* containerd.tasks.kill({ containerId: "web", signal: 9 })
      const exit = yield* containerd.tasks.wait({ containerId: "web" })
      assert.strictEqual(exit.exitStatus, 137)
      assertError(
        yield* Effect.flip(containerd.tasks.kill({ containerId: "web", signal: 9 })),
        "NotFound",
        5,
        "process already finished: not found",
      )
      yield* containerd.tasks.kill({ containerId: "web", signal: 9, all: true })
      assertError(
        yield* Effect.flip(containerd.tasks.start({ containerId: "web" })),
        "System",
        2,
        "cannot start a stopped process",
      )
      assertError(
        yield* Effect.flip(memory.exit({ containerId: "web" }, 1)),
        "NotFound",
        5,
        "process already finished: not found",
      )
    }).pipe(Effect.provide(TestLayer)),
  )

  it.scoped("a lifecycle publishes containerd's events in containerd's order", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      const memory = yield* ContainerdMemory.ContainerdMemory
      yield* memory.script({ containerId: "web" }, { exitCode: 3 })
      const events = yield* subscribe()
      const { pid } = yield* runTask("web", ["job"])
      const exit = yield* containerd.tasks.wait({ containerId: "web" })
      assert.strictEqual(exit.exitStatus, 3)
      const deleted = yield* containerd.tasks.delete({ containerId: "web" })
      assert.deepStrictEqual(deleted, { id: "web", pid, exitStatus: 3, exitedAt: exit.exitedAt })
      yield* containerd.containers.delete("web")

      const expected = [
        "/containers/create",
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
        "/containers/delete",
      ]
      const seen = yield* events.atLeast(expected.length)
      assert.deepStrictEqual(topics(seen), expected)
      assert.deepStrictEqual(topics(yield* memory.published), expected)
      assert.deepStrictEqual(
        seen.map((e) => e.event?.typeUrl),
        [
          "containerd.events.ContainerCreate",
          "containerd.events.TaskCreate",
          "containerd.events.TaskStart",
          "containerd.events.TaskExit",
          "containerd.events.TaskDelete",
          "containerd.events.ContainerDelete",
        ],
      )
      assert.isTrue(seen.every((e) => e.namespace === "default" && e.timestamp !== undefined))
      const taskEvents = seen.slice(1, 5).map(decoded)
      assert.deepInclude(taskEvents[0]!, { _tag: "TaskCreate", containerId: "web", pid })
      assert.deepStrictEqual(taskEvents[1], { _tag: "TaskStart", containerId: "web", pid })
      assert.deepStrictEqual(taskEvents[2], {
        _tag: "TaskExit",
        containerId: "web",
        id: "web",
        pid,
        exitStatus: 3,
        exitedAt: exit.exitedAt,
      })
      assert.deepInclude(taskEvents[3]!, { _tag: "TaskDelete", containerId: "web", pid, exitStatus: 3 })
      assert.deepStrictEqual(yield* containerd.tasks.list(), [])
    }).pipe(Effect.provide(TestLayer)),
  )

  it.scoped("a scripted sleep 5 runs until the clock has passed 5 seconds, then wait returns", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      yield* runTask("web", ["sleep", "5"])
      const waiting = yield* Effect.fork(containerd.tasks.wait({ containerId: "web" }))
      yield* TestClock.adjust("4 seconds")
      assert.strictEqual((yield* containerd.tasks.get({ containerId: "web" })).status, "RUNNING")
      assert.isTrue(Option.isNone(yield* Fiber.poll(waiting)))
      yield* TestClock.adjust("1 second")
      const exit = yield* Fiber.join(waiting)
      assert.strictEqual(exit.exitStatus, 0)
      assert.strictEqual(exit.exitedAt.seconds, 5n)
      const record = yield* containerd.tasks.get({ containerId: "web" })
      assert.strictEqual(record.status, "STOPPED")
      assert.strictEqual(record.exitStatus, 0)
      // an exited process's wait answers at once
      assert.deepStrictEqual(yield* containerd.tasks.wait({ containerId: "web" }), exit)
    }).pipe(Effect.provide(TestLayer)),
  )

  it.scoped("a waiting call is interruptible and leaves the process running", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      yield* runTask("web", ["sleep", "5"])
      const waiting = yield* Effect.fork(containerd.tasks.wait({ containerId: "web" }))
      yield* Fiber.interrupt(waiting)
      assert.strictEqual((yield* containerd.tasks.get({ containerId: "web" })).status, "RUNNING")
    }).pipe(Effect.provide(TestLayer)),
  )

  it.scoped("a kill that comes before the process ran ends it with the kill's status", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      // `true` exits 0 as soon as it runs; the SIGKILL comes first, in the same step as the start
      yield* runTask("quick", ["true"])
      yield* containerd.tasks.kill({ containerId: "quick", signal: 9 })
      assert.strictEqual((yield* containerd.tasks.wait({ containerId: "quick" })).exitStatus, 137)
    }).pipe(Effect.provide(TestLayer)),
  )

  it.scoped("closing the layer's scope ends its processes without an exit event", () =>
    Effect.gen(function* () {
      const memory = yield* Effect.gen(function* () {
        yield* runTask("web", ["sleep", "60"])
        // the process's fiber runs, and waits for its 60 seconds
        yield* Effect.repeatN(Effect.yieldNow(), 10)
        return yield* ContainerdMemory.ContainerdMemory
      }).pipe(Effect.provide(TestLayer))
      const published = topics(yield* memory.published)
      assert.include(published, "/tasks/start")
      assert.notInclude(published, "/tasks/exit")
    }),
  )

  it.scoped("scripted output reaches the client's stdout and stderr streams", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      const memory = yield* ContainerdMemory.ContainerdMemory
      yield* memory.script({ args: ["build"] }, { stdout: "compiled\n", stderr: "warning\n", exitCode: 2 })
      const { stdout, stderr } = yield* runTask("web", ["build"])
      assert.strictEqual(yield* Fiber.join(stdout), "compiled\n")
      assert.strictEqual(yield* Fiber.join(stderr!), "warning\n")
      assert.strictEqual((yield* containerd.tasks.wait({ containerId: "web" })).exitStatus, 2)
    }).pipe(Effect.provide(TestLayer)),
  )

  it.scoped("built-in commands: echo, false, sh -c exit N", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      const echo = yield* runTask("echo", ["/bin/echo", "hello", "world"])
      assert.strictEqual(yield* Fiber.join(echo.stdout), "hello world\n")
      yield* runTask("false", ["false"])
      assert.strictEqual((yield* containerd.tasks.wait({ containerId: "false" })).exitStatus, 1)
      yield* runTask("sh", ["/bin/sh", "-c", "exit 42"])
      assert.strictEqual((yield* containerd.tasks.wait({ containerId: "sh" })).exitStatus, 42)
      yield* runTask("other", ["/usr/bin/anything"])
      assert.strictEqual((yield* containerd.tasks.wait({ containerId: "other" })).exitStatus, 0)
    }).pipe(Effect.provide(TestLayer)),
  )

  it.scoped("cat echoes stdin to stdout and exits once stdin is closed (closeIO)", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      const memory = yield* ContainerdMemory.ContainerdMemory
      const { dio, stdout } = yield* runTask("cat", ["cat"], { stdin: true })
      yield* dio.stdin!.write(Buffer.from("ping "))
      yield* dio.stdin!.write(Buffer.from("pong"))
      const waiting = yield* Effect.fork(containerd.tasks.wait({ containerId: "cat" }))
      yield* Effect.repeatN(Effect.yieldNow(), 10)
      assert.isTrue(Option.isNone(yield* Fiber.poll(waiting)), "cat exited before stdin was closed")
      yield* dio.closeStdin
      assert.strictEqual(yield* Fiber.join(stdout), "ping pong")
      assert.strictEqual((yield* Fiber.join(waiting)).exitStatus, 0)
      assert.isTrue((yield* memory.inspect({ containerId: "cat" })).stdinClosed)
    }).pipe(Effect.provide(TestLayer)),
  )

  it.scoped("exec: added, started, exit with the exec id; listPids; deleteProcess", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      const io = yield* ProcessIO
      const memory = yield* ContainerdMemory.ContainerdMemory
      yield* memory.script(
        { containerId: "web", execId: "e1" },
        { stdout: "from exec\n", duration: "2 seconds" },
      )
      const events = yield* subscribe(["topic~=|^/tasks/exec|", `topic=="/tasks/exit"`])
      const { pid: initPid } = yield* runTask("web", ["sleep", "60"])
      const set = yield* io.create({
        bundleDir: "/run/test/web",
        processId: "e1",
        stdin: false,
        terminal: false,
      })
      const dio = yield* io.open(set)
      const out = yield* Effect.fork(text(dio.stdout))
      yield* containerd.tasks.exec({
        containerId: "web",
        execId: "e1",
        stdout: set.stdout,
        stderr: set.stderr ?? "",
        spec: Spec.makeProcess({ args: ["ls"] }),
      })
      assert.strictEqual(
        (yield* containerd.tasks.get({ containerId: "web", execId: "e1" })).status,
        "CREATED",
      )
      const { pid } = yield* containerd.tasks.start({ containerId: "web", execId: "e1" })
      assert.isAbove(pid, initPid)
      assert.deepStrictEqual(yield* containerd.tasks.listPids("web"), [
        { pid: initPid },
        { pid, execId: "e1" },
      ])
      assertError(
        yield* Effect.flip(containerd.tasks.deleteProcess({ containerId: "web", execId: "e1" })),
        "System",
        2,
        "cannot delete a running process",
      )
      yield* TestClock.adjust("2 seconds")
      const exit = yield* containerd.tasks.wait({ containerId: "web", execId: "e1" })
      assert.strictEqual(exit.exitStatus, 0)
      assert.strictEqual(yield* Fiber.join(out), "from exec\n")
      const seen = yield* events.atLeast(3)
      assert.deepStrictEqual(topics(seen), ["/tasks/exec-added", "/tasks/exec-started", "/tasks/exit"])
      assert.deepStrictEqual(seen.map(decoded), [
        { _tag: "TaskExecAdded", containerId: "web", execId: "e1" },
        { _tag: "TaskExecStarted", containerId: "web", execId: "e1", pid },
        { _tag: "TaskExit", containerId: "web", id: "e1", pid, exitStatus: 0, exitedAt: exit.exitedAt },
      ])
      assert.deepStrictEqual(yield* containerd.tasks.listPids("web"), [{ pid: initPid }])
      const deleted = yield* containerd.tasks.deleteProcess({ containerId: "web", execId: "e1" })
      assert.deepStrictEqual(deleted, { id: "e1", pid, exitStatus: 0, exitedAt: exit.exitedAt })
      assertError(
        yield* Effect.flip(containerd.tasks.get({ containerId: "web", execId: "e1" })),
        "NotFound",
        5,
        "process does not exist e1: not found",
      )
    }).pipe(Effect.provide(TestLayer)),
  )

  it.scoped("the init's exit kills the execs (137), after its own exit event", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      const memory = yield* ContainerdMemory.ContainerdMemory
      yield* runTask("web", ["sleep", "10"])
      yield* containerd.tasks.exec({
        containerId: "web",
        execId: "e1",
        spec: Spec.makeProcess({ args: ["sleep", "60"] }),
      })
      yield* containerd.tasks.start({ containerId: "web", execId: "e1" })
      yield* TestClock.adjust("10 seconds")
      assert.strictEqual((yield* containerd.tasks.wait({ containerId: "web", execId: "e1" })).exitStatus, 137)
      const exits = (yield* memory.published).filter((e) => e.topic === "/tasks/exit").map(decoded)
      assert.deepStrictEqual(
        exits.map((e) => (e._tag === "TaskExit" ? [e.id, e.exitStatus] : [])),
        [
          ["web", 0],
          ["e1", 137],
        ],
      )
      yield* containerd.tasks.delete({ containerId: "web" })
    }).pipe(Effect.provide(TestLayer)),
  )

  it.scoped("pause and resume: PAUSED status, events, paused time does not count", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      const memory = yield* ContainerdMemory.ContainerdMemory
      // an init without handlers ignores SIGUSR1: this one has a handler that exits
      yield* memory.script({ containerId: "web" }, { duration: "5 seconds", diesOfSignals: true })
      yield* runTask("web", ["sleep", "5"])
      yield* TestClock.adjust("2 seconds")
      yield* containerd.tasks.pause("web")
      assert.strictEqual((yield* containerd.tasks.get({ containerId: "web" })).status, "PAUSED")
      const waiting = yield* Effect.fork(containerd.tasks.wait({ containerId: "web" }))
      yield* TestClock.adjust("10 seconds")
      assert.isTrue(Option.isNone(yield* Fiber.poll(waiting)))
      // a signal other than SIGKILL waits for the thaw
      yield* containerd.tasks.kill({ containerId: "web", signal: 10 })
      assert.strictEqual((yield* containerd.tasks.get({ containerId: "web" })).status, "PAUSED")
      yield* containerd.tasks.resume("web")
      assert.strictEqual((yield* Fiber.join(waiting)).exitStatus, 138)
      assert.deepStrictEqual(
        topics(yield* memory.published).filter((t) => t.startsWith("/tasks/")),
        ["/tasks/create", "/tasks/start", "/tasks/paused", "/tasks/resumed", "/tasks/exit"],
      )

      yield* runTask("job", ["sleep", "5"])
      yield* TestClock.adjust("2 seconds")
      yield* containerd.tasks.pause("job")
      yield* TestClock.adjust("10 seconds")
      yield* containerd.tasks.resume("job")
      const job = yield* Effect.fork(containerd.tasks.wait({ containerId: "job" }))
      yield* TestClock.adjust("2 seconds")
      assert.isTrue(Option.isNone(yield* Fiber.poll(job)), "paused time counted as running time")
      yield* TestClock.adjust("1 second")
      assert.strictEqual((yield* Fiber.join(job)).exitStatus, 0)
    }).pipe(Effect.provide(TestLayer)),
  )

  it.scoped(
    "SIGTERM ends an exec with 143; an init (PID 1) ignores it and ends only with SIGKILL (137)",
    () =>
      Effect.gen(function* () {
        const containerd = yield* Containerd
        const memory = yield* ContainerdMemory.ContainerdMemory
        yield* runTask("web", ["sleep", "60"])
        yield* containerd.tasks.exec({
          containerId: "web",
          execId: "e1",
          spec: Spec.makeProcess({ args: ["sleep", "60"] }),
        })
        yield* containerd.tasks.start({ containerId: "web", execId: "e1" })
        yield* containerd.tasks.kill({ containerId: "web", execId: "e1", signal: 15 })
        assert.strictEqual(
          (yield* containerd.tasks.wait({ containerId: "web", execId: "e1" })).exitStatus,
          143,
        )

        // the built-in `sleep 60` as the init is PID 1 without handlers: SIGTERM, SIGINT and SIGHUP do nothing
        const initWaiting = yield* Effect.fork(containerd.tasks.wait({ containerId: "web" }))
        for (const signal of [15, 2, 1]) yield* containerd.tasks.kill({ containerId: "web", signal })
        yield* Effect.repeatN(Effect.yieldNow(), 10)
        assert.isTrue(Option.isNone(yield* Fiber.poll(initWaiting)))
        assert.strictEqual((yield* containerd.tasks.get({ containerId: "web" })).status, "RUNNING")
        yield* containerd.tasks.kill({ containerId: "web", signal: 9 })
        assert.strictEqual((yield* Fiber.join(initWaiting)).exitStatus, 137)
        assert.deepStrictEqual((yield* memory.inspect({ containerId: "web" })).signals, [15, 2, 1, 9])

        // an init whose script opts into dying of signals (a handler that exits) ends with 143
        yield* memory.script({ containerId: "trap" }, { duration: "60 seconds", diesOfSignals: true })
        yield* runTask("trap", ["server"])
        yield* containerd.tasks.kill({ containerId: "trap", signal: 15 })
        assert.strictEqual((yield* containerd.tasks.wait({ containerId: "trap" })).exitStatus, 143)

        yield* memory.script(
          { containerId: "stubborn" },
          { duration: "60 seconds", diesOfSignals: true, ignoreSigterm: true },
        )
        yield* runTask("stubborn", ["server"])
        yield* containerd.tasks.kill({ containerId: "stubborn", signal: 15 })
        const waiting = yield* Effect.fork(containerd.tasks.wait({ containerId: "stubborn" }))
        yield* Effect.repeatN(Effect.yieldNow(), 10)
        assert.isTrue(Option.isNone(yield* Fiber.poll(waiting)))
        yield* containerd.tasks.kill({ containerId: "stubborn", signal: 9 })
        assert.strictEqual((yield* Fiber.join(waiting)).exitStatus, 137)
        assert.deepStrictEqual((yield* memory.inspect({ containerId: "stubborn" })).signals, [15, 9])
      }).pipe(Effect.provide(TestLayer)),
  )

  it.scoped("OOM: /tasks/oom comes before the exit, which is 137", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      const memory = yield* ContainerdMemory.ContainerdMemory
      yield* memory.script({ args: ["hog"] }, { oom: true, duration: "1 second" })
      const events = yield* subscribe(["namespace==default,topic~=|^/tasks/|"])
      yield* runTask("web", ["hog"])
      yield* TestClock.adjust("1 second")
      assert.strictEqual((yield* containerd.tasks.wait({ containerId: "web" })).exitStatus, 137)
      const seen = yield* events.atLeast(4)
      assert.deepStrictEqual(topics(seen), ["/tasks/create", "/tasks/start", "/tasks/oom", "/tasks/exit"])
      assert.deepStrictEqual(decoded(seen[2]!), { _tag: "TaskOOM", containerId: "web" })

      yield* runTask("other", ["sleep", "60"])
      yield* memory.oom("other")
      assert.strictEqual((yield* containerd.tasks.wait({ containerId: "other" })).exitStatus, 137)
    }).pipe(Effect.provide(TestLayer)),
  )

  it.scoped("deleting a container with a live task succeeds and orphans the task", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      const memory = yield* ContainerdMemory.ContainerdMemory
      yield* runTask("web", ["sleep", "60"])
      yield* containerd.containers.delete("web")
      const listed = yield* containerd.tasks.list()
      assert.deepStrictEqual(
        listed.map((t) => [t.id, t.status]),
        [["web", "RUNNING"]],
      )
      assertError(
        yield* Effect.flip(containerd.tasks.get({ containerId: "web" })),
        "NotFound",
        5,
        `container "web" in namespace "default": not found`,
      )
      assertError(
        yield* Effect.flip(containerd.tasks.delete({ containerId: "web" })),
        "NotFound",
        5,
        `container "web" in namespace "default": not found`,
      )
      assert.isTrue((yield* memory.inspect({ containerId: "web" })).orphaned)
      // re-creating the container re-adopts the task
      yield* containerd.containers.create({ id: "web", spec: specOf("web", ["sleep", "60"]) })
      assert.strictEqual((yield* containerd.tasks.get({ containerId: "web" })).status, "RUNNING")
    }).pipe(Effect.provide(TestLayer)),
  )

  it.scoped("a created task: kill SIGKILL (all) ends it, wait returns, delete succeeds", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      yield* runTask("web", ["sleep", "60"], { start: false })
      assert.strictEqual((yield* containerd.tasks.get({ containerId: "web" })).status, "CREATED")
      assertError(
        yield* Effect.flip(containerd.tasks.pause("web")),
        "System",
        2,
        "cannot pause task in created state",
      )
      yield* containerd.tasks.kill({ containerId: "web", signal: 9, all: true })
      assert.strictEqual((yield* containerd.tasks.wait({ containerId: "web" })).exitStatus, 137)
      assert.strictEqual((yield* containerd.tasks.delete({ containerId: "web" })).exitStatus, 137)
      assertError(
        yield* Effect.flip(containerd.tasks.get({ containerId: "web" })),
        "NotFound",
        5,
        "task web not found",
      )
    }).pipe(Effect.provide(TestLayer)),
  )

  it.scoped("a script's startError fails the start and leaves the task CREATED", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      const memory = yield* ContainerdMemory.ContainerdMemory
      const message = `OCI runtime start failed: exec: "nope": executable file not found in $PATH: unknown`
      yield* memory.script({ args: ["nope"] }, { startError: message })
      const failed = yield* Effect.flip(runTask("web", ["nope"]))
      assertError(failed, "System", 2, message)
      assert.strictEqual((yield* containerd.tasks.get({ containerId: "web" })).status, "CREATED")
    }).pipe(Effect.provide(TestLayer)),
  )

  it.scoped("task create waits for the client's readers; without the FIFO set it fails", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      const io = yield* ProcessIO
      yield* containerd.containers.create({ id: "web", spec: specOf("web", ["true"]) })
      const set = yield* io.create({
        bundleDir: "/run/test/web",
        processId: "init",
        stdin: false,
        terminal: false,
      })
      const create = yield* Effect.fork(
        containerd.tasks.create({ containerId: "web", stdout: set.stdout, stderr: set.stderr ?? "" }),
      )
      yield* Effect.repeatN(Effect.yieldNow(), 10)
      assert.isTrue(Option.isNone(yield* Fiber.poll(create)), "create returned before the readers were open")
      yield* Fiber.interrupt(create)
      assertError(
        yield* Effect.flip(containerd.tasks.get({ containerId: "web" })),
        "NotFound",
        5,
        "task web not found",
      )
      yield* io.open(set)
      yield* containerd.tasks.create({ containerId: "web", stdout: set.stdout, stderr: set.stderr ?? "" })

      yield* containerd.containers.create({ id: "lost", spec: specOf("lost", ["true"]) })
      const missing = yield* Effect.flip(
        containerd.tasks.create({ containerId: "lost", stdout: "/run/none/stdout" }),
      )
      assertError(missing, "System", 2, /open \/run\/none\/stdout: no such file or directory/)
    }).pipe(Effect.provide(TestLayer)),
  )

  it.scoped(
    "terminal: a script that wakesOnResize ends its delay at the resize; one that does not waits it out",
    () =>
      Effect.gen(function* () {
        const containerd = yield* Containerd
        const memory = yield* ContainerdMemory.ContainerdMemory
        const size = (p: ContainerdMemory.ProcessView) =>
          `${p.ptySize?.height ?? 0} ${p.ptySize?.width ?? 0}\n`
        yield* memory.script(
          { containerId: "woken" },
          { delay: "60 seconds", wakesOnResize: true, stdout: size },
        )
        yield* memory.script({ containerId: "sleepy" }, { delay: "60 seconds", stdout: size })
        const woken = yield* runTask("woken", ["stty", "size"], { terminal: true })
        const sleepy = yield* runTask("sleepy", ["stty", "size"], { terminal: true })
        yield* containerd.tasks.resizePty({ containerId: "woken", width: 120, height: 40 })
        yield* containerd.tasks.resizePty({ containerId: "sleepy", width: 100, height: 30 })
        // the TestClock has not moved: only the resize can have ended the first one's delay
        assert.strictEqual(yield* Fiber.join(woken.stdout), "40 120\r\n")
        assert.strictEqual((yield* containerd.tasks.wait({ containerId: "woken" })).exitStatus, 0)
        assert.isTrue(Option.isNone(yield* Fiber.poll(sleepy.stdout)), "still in its delay")
        yield* TestClock.adjust("60 seconds")
        assert.strictEqual(yield* Fiber.join(sleepy.stdout), "30 100\r\n")
      }).pipe(Effect.provide(TestLayer)),
  )

  it.scoped("terminal: resizePty is recorded; closing stdin hangs the process up (129)", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      const memory = yield* ContainerdMemory.ContainerdMemory
      // an init without handlers ignores SIGHUP: this one dies of it, as a shell does
      yield* memory.script({ containerId: "tty" }, { duration: "60 seconds", diesOfSignals: true })
      const { dio } = yield* runTask("tty", ["sleep", "60"], { stdin: true, terminal: true })
      yield* containerd.tasks.resizePty({ containerId: "tty", width: 120, height: 40 })
      assert.deepStrictEqual((yield* memory.inspect({ containerId: "tty" })).ptySize, {
        width: 120,
        height: 40,
      })
      yield* dio.closeStdin
      assert.strictEqual((yield* containerd.tasks.wait({ containerId: "tty" })).exitStatus, 129)
      assertError(
        yield* Effect.flip(containerd.tasks.resizePty({ containerId: "tty", width: 1, height: 1 })),
        "System",
        2,
        "cannot resize a stopped container",
      )
    }).pipe(Effect.provide(TestLayer)),
  )

  it.scoped("metrics: cgroups v1 with memory in use and the spec's limit; update changes the limit", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      const io = yield* ProcessIO
      const spec = Spec.withMemoryLimit(specOf("web", ["sleep", "60"]), 64 * 1024 * 1024)
      yield* containerd.containers.create({ id: "web", spec })
      const set = yield* io.create({
        bundleDir: "/run/test/web",
        processId: "init",
        stdin: false,
        terminal: false,
      })
      yield* io.open(set)
      yield* containerd.tasks.create({ containerId: "web", stdout: set.stdout, stderr: set.stderr ?? "" })
      yield* containerd.tasks.start({ containerId: "web" })
      const [metric] = yield* containerd.tasks.metrics(["id==web"])
      assert.strictEqual(metric?.id, "web")
      assert.strictEqual(metric?.data._tag, "v1")
      if (metric?.data._tag !== "v1") return
      assert.isAbove(Number(metric.data.metrics.memory?.usage?.usage ?? 0n), 0)
      assert.strictEqual(metric.data.metrics.memory?.usage?.limit, 64n * 1024n * 1024n)
      assert.strictEqual(metric.data.metrics.pids?.current, 1n)
      yield* containerd.tasks.update({
        containerId: "web",
        resources: { memory: { limit: 128 * 1024 * 1024 } },
      })
      const [after] = yield* containerd.tasks.metrics(["id==web"])
      assert.strictEqual(
        after?.data._tag === "v1" ? after.data.metrics.memory?.usage?.limit : undefined,
        128n * 1024n * 1024n,
      )
      assert.deepStrictEqual(yield* containerd.tasks.metrics(["id==other"]), [])
    }).pipe(Effect.provide(TestLayer)),
  )

  it.effect("content: write, read with a range, info, delete; digests are sha256", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      const data = "hello, content store"
      const digest = sha256(data)
      const descriptor = yield* containerd.content.write(
        { ref: "upload-1", digest, size: BigInt(data.length), labels: { "containerd.io/gc.root": "now" } },
        Stream.make(Buffer.from("hello, "), Buffer.from("content store")),
      )
      assert.deepStrictEqual(descriptor, {
        mediaType: "application/octet-stream",
        digest,
        size: BigInt(data.length),
      })
      assert.strictEqual(yield* text(containerd.content.read(digest)), data)
      assert.strictEqual(yield* text(containerd.content.read(digest, { offset: 7n, size: 7n })), "content")
      const info = yield* containerd.content.info(digest)
      assert.strictEqual(info.size, BigInt(data.length))
      assert.deepStrictEqual(info.labels, { "containerd.io/gc.root": "now" })
      const past = yield* Effect.flip(Stream.runDrain(containerd.content.read(digest, { offset: 100n })))
      assert.strictEqual(past._tag, "InvalidParameter")
      yield* containerd.content.delete(digest)
      assertError(
        yield* Effect.flip(containerd.content.info(digest)),
        "NotFound",
        5,
        `content digest ${digest}: not found`,
      )
      assertError(yield* Effect.flip(containerd.content.delete(digest)), "NotFound", 5, /not found/)
    }).pipe(Effect.provide(TestLayer)),
  )

  it.effect("content: an existing digest counts as written, without reading the data", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      const digest = sha256("blob")
      yield* containerd.content.write({ ref: "a", digest }, Stream.make(Buffer.from("blob")))
      const again = yield* containerd.content.write(
        { ref: "b", digest },
        Stream.fail("the data was read").pipe(Stream.as(new Uint8Array())),
      )
      assert.deepStrictEqual(again, { mediaType: "application/octet-stream", digest, size: 4n })
    }).pipe(Effect.provide(TestLayer)),
  )

  it.effect("content: a wrong digest fails the commit with FAILED_PRECONDITION", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      const expected = sha256("something else")
      const failed = yield* Effect.flip(
        containerd.content.write({ ref: "bad", digest: expected }, Stream.make(Buffer.from("blob"))),
      )
      assertError(
        failed,
        "Conflict",
        9,
        `unexpected commit digest ${sha256("blob")}, expected ${expected}: failed precondition`,
      )
      assertError(yield* Effect.flip(containerd.content.info(expected)), "NotFound", 5, /not found/)
      yield* containerd.content.abort("bad")
      assertError(
        yield* Effect.flip(containerd.content.abort("bad")),
        "NotFound",
        5,
        `ingest ref "bad": not found`,
      )
    }).pipe(Effect.provide(TestLayer)),
  )

  it.effect("content: an interrupted upload commits nothing and the same ref succeeds afterwards", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      const data = Buffer.from("first half|second half")
      const digest = sha256(data)
      const upload = yield* Effect.fork(
        containerd.content.write(
          { ref: "checkpoint", digest },
          Stream.concat(Stream.make(data.subarray(0, 11)), Stream.never),
        ),
      )
      yield* Effect.repeatN(Effect.yieldNow(), 10)
      yield* Fiber.interrupt(upload)
      assertError(yield* Effect.flip(containerd.content.info(digest)), "NotFound", 5, /not found/)
      const descriptor = yield* containerd.content.write({ ref: "checkpoint", digest }, Stream.make(data))
      assert.strictEqual(descriptor.size, BigInt(data.length))
      assert.strictEqual(yield* text(containerd.content.read(digest)), data.toString())
    }).pipe(Effect.provide(TestLayer)),
  )

  it.effect("leases: a blob written under a lease goes with the lease, unless rooted", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      const kept = sha256("kept")
      const dropped = sha256("dropped")
      yield* leased(() =>
        Effect.gen(function* () {
          yield* containerd.content.write(
            { ref: "dropped", digest: dropped },
            Stream.make(Buffer.from("dropped")),
          )
          yield* containerd.content.write(
            { ref: "kept", digest: kept, labels: { "containerd.io/gc.root": "yes" } },
            Stream.make(Buffer.from("kept")),
          )
          assert.strictEqual((yield* containerd.content.info(dropped)).size, 7n)
        }),
      )
      assertError(yield* Effect.flip(containerd.content.info(dropped)), "NotFound", 5, /not found/)
      assert.strictEqual((yield* containerd.content.info(kept)).size, 4n)

      const lease = yield* containerd.leases.create({ id: "mine" })
      assertError(
        yield* Effect.flip(containerd.leases.create({ id: "mine" })),
        "Conflict",
        6,
        `lease "mine": already exists`,
      )
      yield* containerd.leases.delete(lease.id)
      assertError(
        yield* Effect.flip(containerd.leases.delete("mine")),
        "NotFound",
        5,
        `lease "mine": not found`,
      )
      const noLease = yield* Effect.flip(
        containerd.content
          .write({ ref: "x", digest: sha256("x") }, Stream.make(Buffer.from("x")))
          .pipe(withLease("gone")),
      )
      assert.strictEqual(noLease._tag, "NotFound")
    }).pipe(Effect.provide(TestLayer)),
  )

  it.effect("images: create, get, delete with NotFound and Conflict; an image keeps its target", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      const digest = sha256("index")
      yield* containerd.leases.create({ id: "upload" })
      yield* containerd.content
        .write({ ref: "index", digest }, Stream.make(Buffer.from("index")))
        .pipe(withLease("upload"))
      const target = { mediaType: "application/vnd.oci.image.index.v1+json", digest, size: 5n }
      const image = yield* containerd.images.create({ name: "checkpoint/web:1", labels: {}, target })
      assert.deepStrictEqual(image.target, target)
      assertError(
        yield* Effect.flip(containerd.images.create({ name: "checkpoint/web:1", labels: {}, target })),
        "Conflict",
        6,
        `image "checkpoint/web:1": already exists`,
      )
      yield* containerd.leases.delete("upload")
      assert.strictEqual((yield* containerd.content.info(digest)).size, 5n)
      assert.deepStrictEqual((yield* containerd.images.get("checkpoint/web:1")).target, target)
      yield* containerd.images.delete("checkpoint/web:1")
      assertError(
        yield* Effect.flip(containerd.images.get("checkpoint/web:1")),
        "NotFound",
        5,
        `image "checkpoint/web:1": not found`,
      )
      assertError(
        yield* Effect.flip(containerd.images.delete("checkpoint/web:1")),
        "NotFound",
        5,
        /not found/,
      )
      assertError(yield* Effect.flip(containerd.content.info(digest)), "NotFound", 5, /not found/)
    }).pipe(Effect.provide(TestLayer)),
  )

  it.scoped(
    "event filters: namespace and topic selectors ORed across filters; an unquoted / is a parse error",
    () =>
      Effect.gen(function* () {
        const containerd = yield* Containerd
        const tasksOnly = yield* subscribe(["namespace==default,topic~=|^/tasks/|"])
        const creates = yield* subscribe([`topic=="/containers/create"`, `topic=="/tasks/create"`])
        const otherNamespace = yield* subscribe(["namespace==jobs"])
        yield* runTask("web", ["true"])
        yield* containerd.tasks.wait({ containerId: "web" })
        assert.deepStrictEqual(topics(yield* tasksOnly.atLeast(3)), [
          "/tasks/create",
          "/tasks/start",
          "/tasks/exit",
        ])
        assert.deepStrictEqual(topics(yield* creates.atLeast(2)), ["/containers/create", "/tasks/create"])
        assert.deepStrictEqual(yield* otherNamespace.seen, [])
        yield* containerd.containers
          .create({ id: "web", spec: specOf("web", ["true"]) })
          .pipe(withNamespace("jobs"))
        assert.deepStrictEqual(topics(yield* otherNamespace.atLeast(1)), ["/containers/create"])

        const unquoted = yield* Effect.flip(
          Stream.runDrain(containerd.events.subscribe(["topic==/tasks/exit"])),
        )
        assertError(unquoted, "InvalidParameter", 3, /invalid quote encountered/)
      }).pipe(Effect.provide(TestLayer)),
  )

  it.scoped("disconnectSubscribers fails subscriptions with code 14; events are live only, no backlog", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      const memory = yield* ContainerdMemory.ContainerdMemory
      const first = yield* subscribe()
      yield* containerd.containers.create({ id: "a", spec: specOf("a", ["true"]) })
      yield* first.atLeast(1)
      yield* memory.disconnectSubscribers
      const failure = yield* Effect.flip(Fiber.join(first.fiber))
      assertError(failure, "System", 14, "transport is closing")
      assert.strictEqual(yield* memory.subscribers, 0)
      yield* containerd.containers.create({ id: "b", spec: specOf("b", ["true"]) })
      const second = yield* subscribe()
      yield* containerd.containers.create({ id: "c", spec: specOf("c", ["true"]) })
      const seen = yield* second.atLeast(1)
      assert.deepStrictEqual(
        seen.map((e) => e.topic),
        ["/containers/create"],
      )
      assert.strictEqual((yield* memory.published).length, 3)
    }).pipe(Effect.provide(TestLayer)),
  )

  it.scoped("published keeps the newest envelopes: between 5,000 and 10,000, the latest last", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      const memory = yield* ContainerdMemory.ContainerdMemory
      // 12,000 container creates and deletes: a long run's log
      for (let i = 0; i < 6000; i++) {
        yield* containerd.containers.create({ id: `c${i}`, spec: specOf(`c${i}`, ["true"]) })
        yield* containerd.containers.delete(`c${i}`)
      }
      const log = yield* memory.published
      assert.isAtLeast(log.length, 5000)
      assert.isAtMost(log.length, 10000)
      assert.strictEqual(log[log.length - 1]?.topic, "/containers/delete")
      // oldest first, and the newest kept: the last delete is the last envelope, its create just before it
      assert.strictEqual(log[log.length - 2]?.topic, "/containers/create")
    }).pipe(Effect.provide(TestLayer)),
  )

  it.scoped("disconnect also fails pending waits with code 14; the task lives on", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      const memory = yield* ContainerdMemory.ContainerdMemory
      yield* runTask("web", ["sleep", "5"])
      const waiting = yield* Effect.fork(containerd.tasks.wait({ containerId: "web" }))
      yield* Effect.yieldNow()
      yield* memory.disconnect
      assertError(yield* Effect.flip(Fiber.join(waiting)), "System", 14, "transport is closing")
      yield* TestClock.adjust("5 seconds")
      assert.strictEqual((yield* containerd.tasks.wait({ containerId: "web" })).exitStatus, 0)
    }).pipe(Effect.provide(TestLayer)),
  )

  it.scoped("dropEvents loses an exit; tasks.get still reports it (what reconciliation relies on)", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      const memory = yield* ContainerdMemory.ContainerdMemory
      const events = yield* subscribe(["topic~=|^/tasks/|"])
      yield* runTask("web", ["sleep", "1"])
      yield* Effect.gen(function* () {
        yield* memory.dropEvents((e) => e.topic === "/tasks/exit")
        yield* TestClock.adjust("1 second")
        yield* containerd.tasks.wait({ containerId: "web" })
      }).pipe(Effect.scoped)
      const record = yield* containerd.tasks.get({ containerId: "web" })
      assert.strictEqual(record.status, "STOPPED")
      yield* containerd.tasks.delete({ containerId: "web" })
      assert.deepStrictEqual(topics(yield* events.atLeast(3)), [
        "/tasks/create",
        "/tasks/start",
        "/tasks/delete",
      ])
    }).pipe(Effect.provide(TestLayer)),
  )

  it.scoped("pauseEvents holds envelopes and delivers them when released", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      const memory = yield* ContainerdMemory.ContainerdMemory
      const events = yield* subscribe()
      yield* Effect.gen(function* () {
        yield* memory.pauseEvents
        yield* containerd.containers.create({ id: "a", spec: specOf("a", ["true"]) })
        yield* Effect.repeatN(Effect.yieldNow(), 10)
        assert.deepStrictEqual(yield* events.seen, [])
      }).pipe(Effect.scoped)
      assert.deepStrictEqual(topics(yield* events.atLeast(1)), ["/containers/create"])
    }).pipe(Effect.provide(TestLayer)),
  )

  it.scopedLive("the Libcontainerd client runs on it: start, output, exec, events, delete", () =>
    Effect.gen(function* () {
      const stateDir = yield* Effect.acquireRelease(
        Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "containerd-memory-"))),
        (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true })),
      )
      const client = LibcontainerdLive.layer({ stateDir }).pipe(
        Layer.provideMerge(ContainerdMemory.layerWithProcessIO()),
        Layer.provideMerge(Backend.layerRecorder),
      )
      yield* Effect.gen(function* () {
        const libcontainerd = yield* Libcontainerd
        const memory = yield* ContainerdMemory.ContainerdMemory
        const recorder = yield* Backend.Recorder
        yield* memory.script({ args: ["job"] }, { stdout: "working\n", exitCode: 7, duration: "20 millis" })
        const recorded = (type: string, processId: string) =>
          Effect.repeat(Effect.zipRight(Effect.sleep("5 millis"), recorder.events), {
            until: (all) => all.some((e) => e.type === type && e.info.processId === processId),
          }).pipe(Effect.timeout("5 seconds"))

        // containerd keeps no backlog: start once the client's subscription is open
        yield* Effect.repeat(Effect.zipRight(Effect.sleep("1 millis"), memory.subscribers), {
          until: (n) => n > 0,
        })
        yield* libcontainerd.create("web", specOf("web", ["job"]))
        const output = yield* Deferred.make<string, ContainerdError>()
        yield* libcontainerd.start("web", {
          attachStdio: (io) => Effect.forkScoped(Deferred.complete(output, text(io.stdout))),
        })
        assert.strictEqual(yield* Deferred.await(output), "working\n")
        const events = yield* recorded("exit", "web")
        assert.deepStrictEqual(
          events.map((e) => e.type),
          ["create", "start", "exit"],
        )
        assert.strictEqual(events[2]?.info.exitCode, 7)
        assert.strictEqual((yield* libcontainerd.deleteTask("web")).exitCode, 7)
        yield* libcontainerd.delete("web")

        yield* libcontainerd.create("svc", specOf("svc", ["sleep", "60"]))
        yield* libcontainerd.start("svc")
        assert.strictEqual(yield* libcontainerd.status("svc"), "running")
        yield* libcontainerd.exec("svc", "e1", Spec.makeProcess({ args: ["echo", "hi"] }))
        yield* recorded("exit", "e1")
        const refused = yield* Effect.flip(libcontainerd.delete("svc"))
        assert.strictEqual(refused._tag, "Conflict")
        yield* libcontainerd.signalProcess("svc", "init", "SIGKILL")
        yield* recorded("exit", "svc")
        assert.strictEqual((yield* libcontainerd.deleteTask("svc")).exitCode, 137)
        yield* libcontainerd.delete("svc")
      }).pipe(Effect.provide(client))
    }),
  )
})
