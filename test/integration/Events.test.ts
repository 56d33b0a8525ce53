import * as Fs from "node:fs"
import * as Path from "node:path"
import { assert, describe, layer } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import * as Spec from "../../src/domain/Spec.js"
import * as LibcontainerdLive from "../../src/layers/LibcontainerdLive.js"
import * as TaskEventsLive from "../../src/layers/TaskEventsLive.js"
import * as Backend from "../../src/services/Backend.js"
import { Containerd } from "../../src/services/Containerd.js"
import { Libcontainerd } from "../../src/services/Libcontainerd.js"
import { busyboxSpec, freshNamespace } from "../support/daemon.js"
import { capture, clientLayer, exitOf, tempStateDir } from "../support/client.js"

const namespace = freshNamespace("events")
const stateDir = tempStateDir()
const spec = (id: string, args: ReadonlyArray<string>) => busyboxSpec(id, namespace, args)

/** The recorded events of one container, as `type:processId`. */
const eventsOf = (containerId: string) =>
  Effect.map(
    Effect.flatMap(Backend.Recorder, (r) => r.events),
    (all) => all.filter((e) => e.containerId === containerId),
  )

describe("task events (real daemon)", () => {
  layer(clientLayer(namespace, stateDir), { excludeTestServices: true })((it) => {
    it.effect("a lifecycle delivers create, start, exit in order, with pid and exit code", () =>
      Effect.gen(function* () {
        const client = yield* Libcontainerd
        yield* client.create("life", spec("life", ["sh", "-c", "exit 5"]))
        const pid = yield* client.start("life")
        const exit = yield* exitOf("life")
        const seen = yield* eventsOf("life")
        assert.deepStrictEqual(
          seen.map((e) => e.type),
          ["create", "start", "exit"],
        )
        assert.strictEqual(seen[0]?.info.pid, pid)
        assert.strictEqual(seen[1]?.info.pid, pid)
        assert.strictEqual(exit.exitCode, 5)
        assert.strictEqual(exit.processId, "life")
        assert.strictEqual(exit.pid, pid)
        assert.isAbove(Number(exit.exitedAt?.seconds ?? 0n), 0)
        assert.isFalse(exit.oomKilled)
        const deleted = yield* client.deleteTask("life")
        assert.strictEqual(deleted.exitCode, 5)
        yield* client.delete("life")
      }),
    )

    it.effect(
      "an exec delivers exec-added, exec-started, exit; then the process and its FIFOs are gone",
      () =>
        Effect.gen(function* () {
          const client = yield* Libcontainerd
          const base = spec("withexec", ["sleep", "60"])
          yield* client.create("withexec", base)
          yield* client.start("withexec")
          const execPid = yield* client.exec(
            "withexec",
            "job",
            Spec.processFrom(base, { args: ["sh", "-c", "exit 4"] }),
            {
              withStdin: true,
            },
          )
          const exit = yield* exitOf("withexec", "job")
          assert.strictEqual(exit.exitCode, 4)
          assert.strictEqual(exit.pid, execPid)
          const execEvents = (yield* eventsOf("withexec")).filter((e) => e.info.processId === "job")
          assert.deepStrictEqual(
            execEvents.map((e) => e.type),
            ["exec-added", "exec-started", "exit"],
          )
          // the exit's clean-up runs right after the Backend call, in the container's queue
          const c = yield* Containerd
          let gone = false
          for (let i = 0; i < 200 && !gone; i++) {
            const found = yield* Containerd.withNamespace(namespace)(
              c.tasks.get({ containerId: "withexec", execId: "job" }),
            ).pipe(Effect.option)
            gone =
              found._tag === "None" &&
              !Fs.readdirSync(Path.join(stateDir, "withexec")).some((f) => f.startsWith("job-"))
            if (!gone) yield* Effect.sleep("10 millis")
          }
          assert.isTrue(gone, "exec deleted in containerd and its FIFOs removed")
          const again = yield* Effect.flip(client.signalProcess("withexec", "job", "SIGTERM"))
          assert.deepInclude(again, { _tag: "NotFound", message: "no such exec" })
          yield* client.signalProcess("withexec", "init", "SIGKILL")
          yield* exitOf("withexec")
          yield* client.deleteTask("withexec")
          yield* client.delete("withexec")
        }),
    )

    it.scoped(
      "an exited exec's id stays taken until its IO is released; then a new exec of that id runs on its own FIFOs",
      () =>
        Effect.gen(function* () {
          const client = yield* Libcontainerd
          const c = yield* Containerd
          const base = spec("reuse", ["sleep", "60"])
          yield* client.create("reuse", base)
          yield* client.start("reuse")
          yield* client.exec("reuse", "job", Spec.processFrom(base, { args: ["sleep", "0.3"] }))
          // a second writer on the exec's stdout: its output cannot reach EOF, so its release waits for the drain
          // bound (500 ms here) after containerd deleted the process
          let writer: number | undefined = Fs.openSync(
            Path.join(stateDir, "reuse", "job-stdout"),
            Fs.constants.O_WRONLY | Fs.constants.O_NONBLOCK,
          )
          const closeWriter = Effect.sync(() => {
            if (writer !== undefined) Fs.closeSync(writer)
            writer = undefined
          })
          yield* Effect.addFinalizer(() => closeWriter)
          yield* exitOf("reuse", "job")
          const inContainerd = Containerd.withNamespace(namespace)(
            c.tasks.get({ containerId: "reuse", execId: "job" }),
          ).pipe(Effect.option)
          for (let i = 0; i < 40 && Option.isSome(yield* inContainerd); i++) yield* Effect.sleep("5 millis")
          assert.isTrue(Option.isNone(yield* inContainerd), "the exec is deleted in containerd")
          const early = yield* Effect.flip(
            client.exec("reuse", "job", Spec.processFrom(base, { args: ["true"] })),
          )
          assert.deepInclude(early, { _tag: "Conflict", message: "id already in use" })
          yield* closeWriter
          const { attach, captured } = yield* capture
          yield* client
            .exec("reuse", "job", Spec.processFrom(base, { args: ["echo", "again"] }), {
              attachStdio: attach,
            })
            .pipe(
              Effect.retry({
                while: (e) => e._tag === "Conflict",
                schedule: Schedule.spaced("20 millis"),
                times: 250,
              }),
            )
          assert.strictEqual(yield* Deferred.await(captured.stdout), "again\n")
          yield* client.signalProcess("reuse", "init", "SIGKILL")
          yield* exitOf("reuse")
          yield* client.deleteTask("reuse")
          yield* client.delete("reuse")
        }),
    )

    it.effect("pause and resume deliver paused and resumed", () =>
      Effect.gen(function* () {
        const client = yield* Libcontainerd
        yield* client.create("pr", spec("pr", ["sleep", "60"]))
        yield* client.start("pr")
        yield* client.pause("pr")
        yield* client.resume("pr")
        yield* client.signalProcess("pr", "init", "SIGKILL")
        yield* exitOf("pr")
        assert.deepStrictEqual(
          (yield* eventsOf("pr")).map((e) => e.type),
          ["create", "start", "paused", "resumed", "exit"],
        )
        yield* client.deleteTask("pr")
        yield* client.delete("pr")
      }),
    )

    it.effect("OOM: a 16 MiB limit exceeded gives oom, then exit 137 with oomKilled", () =>
      Effect.gen(function* () {
        const client = yield* Libcontainerd
        const hog = Spec.withMemoryLimit(
          spec("hog", [
            "sh",
            "-c",
            "x=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; while true; do x=$x$x; done",
          ]),
          16 * 1024 * 1024,
        )
        yield* client.create("hog", hog)
        yield* client.start("hog")
        const exit = yield* exitOf("hog")
        const seen = yield* eventsOf("hog")
        const types = seen.map((e) => e.type)
        assert.include(types, "oom")
        assert.isBelow(types.indexOf("oom"), types.indexOf("exit"), "oom before exit")
        assert.strictEqual(exit.exitCode, 137)
        assert.isTrue(exit.oomKilled)
        yield* client.deleteTask("hog")
        yield* client.delete("hog")
      }),
    )

    it.effect(
      "a subscription with ignoredTopics is not sent them; the other topics come in order (the client ignores delete and checkpointed)",
      () =>
        Effect.gen(function* () {
          assert.deepStrictEqual(LibcontainerdLive.unhandledTopics, ["/tasks/delete", "/tasks/checkpointed"])
          const client = yield* Libcontainerd
          const containerd = yield* Containerd
          // the topics of container "topics" one subscription receives, up to the create of container "sentinel"
          const follow = (ignoredTopics: ReadonlyArray<string>) =>
            Effect.gen(function* () {
              const live = yield* Deferred.make<void>()
              const events = yield* TaskEventsLive.make(containerd, { namespace, ignoredTopics })
              const topics = yield* events.subscribe.pipe(
                Stream.tap((item) =>
                  item._tag === "Subscribed" ? Deferred.succeed(live, undefined) : Effect.void,
                ),
                Stream.filterMap((item) =>
                  item._tag === "TaskEventEnvelope" ? Option.some(item) : Option.none(),
                ),
                Stream.takeUntil((e) => e.event._tag === "TaskCreate" && e.event.containerId === "sentinel"),
                Stream.filter((e) => e.event.containerId === "topics"),
                Stream.map((e) => e.topic),
                Stream.runCollect,
                Effect.fork,
              )
              yield* Deferred.await(live)
              return topics
            })
          const everything = yield* follow([])
          const some = yield* follow(["/tasks/delete"])
          yield* client.create("topics", spec("topics", ["true"]))
          yield* client.start("topics")
          yield* exitOf("topics")
          yield* client.deleteTask("topics")
          yield* client.delete("topics")
          yield* client.create("sentinel", spec("sentinel", ["true"]))
          yield* client.start("sentinel")
          const all = Chunk.toReadonlyArray(yield* Fiber.join(everything))
          assert.deepStrictEqual(all, ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"])
          assert.deepStrictEqual(Chunk.toReadonlyArray(yield* Fiber.join(some)), [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
          ])
          yield* exitOf("sentinel")
          yield* client.deleteTask("sentinel")
          yield* client.delete("sentinel")
        }),
    )

    it.effect("the Libcontainerd.events stream carries what the Backend receives, in the same order", () =>
      Effect.gen(function* () {
        const client = yield* Libcontainerd
        const streamed = yield* client.events.pipe(
          Stream.filter((e) => e.containerId === "streamed"),
          Stream.takeUntil((e) => e.type === "exit"),
          Stream.runCollect,
          Effect.fork,
        )
        yield* Effect.sleep("50 millis")
        yield* client.create("streamed", spec("streamed", ["true"]))
        yield* client.start("streamed")
        const fromStream = Chunk.toReadonlyArray(yield* Fiber.join(streamed))
        const fromBackend = yield* eventsOf("streamed")
        assert.deepStrictEqual(
          fromStream.map((e) => [e.type, e.info.processId, e.info.exitCode]),
          fromBackend.map((e) => [e.type, e.info.processId, e.info.exitCode]),
        )
        assert.deepStrictEqual(
          fromStream.map((e) => e.type),
          ["create", "start", "exit"],
        )
        yield* client.deleteTask("streamed")
        yield* client.delete("streamed")
      }),
    )
  })
})
