import { assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as FastCheck from "effect/FastCheck"
import * as Layer from "effect/Layer"
import * as Ref from "effect/Ref"
import * as Spec from "../src/domain/Spec.js"
import * as ContainerdMemory from "../src/layers/ContainerdMemory.js"
import * as LibcontainerdLive from "../src/layers/LibcontainerdLive.js"
import * as TaskEventsMemory from "../src/layers/TaskEventsMemory.js"
import * as Backend from "../src/services/Backend.js"
import { Containerd } from "../src/services/Containerd.js"
import { Libcontainerd } from "../src/services/Libcontainerd.js"
import { tempStateDir } from "./support/client.js"

interface Seen {
  readonly containerId: string
  readonly processId: string
}

/** A Backend that records, and holds every call for `slow` until `release` completes. */
const slowBackend = (slow: string, release: Deferred.Deferred<void>, seen: Ref.Ref<ReadonlyArray<Seen>>) =>
  Layer.succeed(
    Backend.Backend,
    Backend.make((containerId, _type, info) =>
      Effect.zipRight(
        containerId === slow ? Deferred.await(release) : Effect.void,
        Ref.update(seen, (all) => [...all, { containerId, processId: info.processId }]),
      ),
    ),
  )

const clientOn = (backend: Layer.Layer<Backend.Backend>) => {
  const stateDir = tempStateDir("dispatch-")
  return LibcontainerdLive.layer({ stateDir }).pipe(
    Layer.provideMerge(Layer.mergeAll(backend, TaskEventsMemory.layer())),
    Layer.provideMerge(ContainerdMemory.layerWithProcessIO()),
    Layer.orDie,
  )
}

const waitUntil = (condition: Effect.Effect<boolean>) =>
  Effect.gen(function* () {
    for (let i = 0; i < 2000; i++) {
      if (yield* condition) return
      yield* Effect.sleep("1 millis")
    }
    assert.fail("condition not met in time")
  })

const spec = (id: string) =>
  Spec.defaultLinux({ id, namespace: "default", rootPath: "/rootfs", args: ["true"] })

/** A random interleaving of `counts[i]` events of container i, each container's in order. */
const interleavings = FastCheck.array(FastCheck.integer({ min: 1, max: 12 }), {
  minLength: 2,
  maxLength: 8,
}).chain((counts) =>
  FastCheck.shuffledSubarray(
    counts.flatMap((n, c) => Array.from({ length: n }, () => c)),
    { minLength: counts.reduce((a, b) => a + b, 0) },
  ).map((order) => ({ counts, order })),
)

describe("event dispatch (in-memory source)", () => {
  it.live.prop(
    "per-container order, once each, and a slow container does not hold back the others",
    [interleavings],
    ([{ counts, order }]) =>
      Effect.gen(function* () {
        const seen = yield* Ref.make<ReadonlyArray<Seen>>([])
        const release = yield* Deferred.make<void>()
        yield* Effect.gen(function* () {
          const client = yield* Libcontainerd
          const events = yield* TaskEventsMemory.TaskEventsMemory
          const ids = counts.map((_, i) => `c${i}`)
          for (const id of ids) yield* client.create(id, spec(id))
          yield* waitUntil(Effect.map(events.subscribers, (n) => n > 0))
          const next = counts.map(() => 0)
          for (const c of order) {
            const seq = next[c]!
            next[c] = seq + 1
            yield* events.publish({ _tag: "TaskExecAdded", containerId: `c${c}`, execId: `s${seq}` })
          }
          const total = order.length
          const slowCount = counts[0]!
          // everything but the slow container's events arrives while c0's first call is held
          yield* waitUntil(Effect.map(Ref.get(seen), (all) => all.length === total - slowCount))
          assert.isFalse((yield* Ref.get(seen)).some((s) => s.containerId === "c0"))
          yield* Deferred.succeed(release, undefined)
          yield* waitUntil(Effect.map(Ref.get(seen), (all) => all.length === total))
          const all = yield* Ref.get(seen)
          for (const [i, n] of counts.entries()) {
            assert.deepStrictEqual(
              all.filter((s) => s.containerId === `c${i}`).map((s) => s.processId),
              Array.from({ length: n }, (_, seq) => `s${seq}`),
            )
          }
        }).pipe(Effect.provide(clientOn(slowBackend("c0", release, seen))))
      }),
    { fastCheck: { numRuns: 25 } },
  )

  it.live("a duplicate exit is dropped; an exit missed while disconnected is reconciled once", () =>
    Effect.gen(function* () {
      const client = yield* Libcontainerd
      const events = yield* TaskEventsMemory.TaskEventsMemory
      const memory = yield* ContainerdMemory.ContainerdMemory
      const recorder = yield* Backend.Recorder
      yield* waitUntil(Effect.map(events.subscribers, (n) => n > 0))
      yield* memory.script({ containerId: "dup" }, { exitCode: 3, duration: "10 millis" })
      yield* client.create("dup", spec("dup"))
      const pid = yield* client.start("dup")
      const exit = {
        _tag: "TaskExit" as const,
        containerId: "dup",
        id: "dup",
        pid,
        exitStatus: 3,
        exitedAt: { seconds: 1n, nanos: 0 },
      }
      yield* events.publish(exit)
      yield* events.publish(exit)
      yield* Effect.sleep("50 millis")
      const exits = (yield* recorder.events).filter((e) => e.type === "exit" && e.containerId === "dup")
      assert.strictEqual(exits.length, 1)

      // the next container exits while no subscription is live: reconciliation finds it
      yield* memory.script({ containerId: "missed" }, { exitCode: 9, duration: "20 millis" })
      yield* client.create("missed", spec("missed"))
      yield* events.disconnect(
        Effect.gen(function* () {
          yield* client.start("missed")
          yield* Effect.sleep("100 millis")
        }),
      )
      yield* waitUntil(
        Effect.map(recorder.events, (all) =>
          all.some((e) => e.type === "exit" && e.containerId === "missed"),
        ),
      )
      const missed = (yield* recorder.events).filter((e) => e.type === "exit" && e.containerId === "missed")
      assert.strictEqual(missed.length, 1)
      assert.strictEqual(missed[0]?.info.exitCode, 9)
    }).pipe(
      Effect.provide(
        LibcontainerdLive.layer({ stateDir: tempStateDir("dispatch-") }).pipe(
          Layer.provideMerge(Layer.mergeAll(Backend.layerRecorder, TaskEventsMemory.layer())),
          Layer.provideMerge(ContainerdMemory.layerWithProcessIO()),
          Layer.orDie,
        ),
      ),
    ),
  )

  it.live("an OOM marks the container: later events carry oomKilled, and the next start clears it", () =>
    Effect.gen(function* () {
      const client = yield* Libcontainerd
      const events = yield* TaskEventsMemory.TaskEventsMemory
      const recorder = yield* Backend.Recorder
      yield* waitUntil(Effect.map(events.subscribers, (n) => n > 0))
      yield* client.create("oomy", spec("oomy"))
      const pid = yield* client.start("oomy")
      yield* events.publish({ _tag: "TaskOOM", containerId: "oomy" })
      yield* events.publish({
        _tag: "TaskExit",
        containerId: "oomy",
        id: "oomy",
        pid,
        exitStatus: 137,
        exitedAt: { seconds: 1n, nanos: 0 },
      })
      yield* waitUntil(Effect.map(recorder.events, (all) => all.some((e) => e.type === "exit")))
      const all = yield* recorder.events
      assert.deepStrictEqual(
        all.filter((e) => e.type === "oom" || e.type === "exit").map((e) => [e.type, e.info.oomKilled]),
        [
          ["oom", true],
          ["exit", true],
        ],
      )
      yield* client.signalProcess("oomy", "init", "SIGKILL").pipe(Effect.ignore)
      yield* Effect.sleep("20 millis")
      yield* client.deleteTask("oomy")
      yield* recorder.clear
      yield* client.start("oomy")
      yield* events.publish({ _tag: "TaskPaused", containerId: "oomy" })
      yield* waitUntil(Effect.map(recorder.events, (all) => all.some((e) => e.type === "paused")))
      const paused = (yield* recorder.events).find((e) => e.type === "paused")
      assert.isFalse(paused?.info.oomKilled)
    }).pipe(
      Effect.provide(
        LibcontainerdLive.layer({ stateDir: tempStateDir("dispatch-") }).pipe(
          Layer.provideMerge(Layer.mergeAll(Backend.layerRecorder, TaskEventsMemory.layer())),
          Layer.provideMerge(ContainerdMemory.layerWithProcessIO()),
          Layer.orDie,
        ),
      ),
    ),
  )
})

describe("the client's namespace", () => {
  it.live("every call runs in the client's namespace, whatever namespace the caller's fiber overrides", () =>
    Effect.gen(function* () {
      const containerd = yield* Containerd
      const inOther = Containerd.withNamespace("other")
      for (const [label, client] of [
        ["the layer's namespace", yield* clientIn(undefined)],
        ["a namespace of its own", yield* clientIn("own")],
      ] as const) {
        const ns = label === "the layer's namespace" ? "default" : "own"
        const id = `n-${ns}`
        yield* inOther(client.create(id, spec(id)))
        yield* client.start(id).pipe(inOther)
        yield* client.pause(id).pipe(Containerd.withNamespace(ns))
        yield* client.resume(id)
        const found = yield* Containerd.withNamespace(ns)(containerd.containers.get(id))
        assert.strictEqual(found.id, id, label)
        const elsewhere = yield* Effect.flip(inOther(containerd.containers.get(id)))
        assert.strictEqual(elsewhere._tag, "NotFound", label)
        yield* client.signalProcess(id, "init", "SIGKILL").pipe(inOther)
        yield* Containerd.withNamespace(ns)(containerd.tasks.wait({ containerId: id }))
        yield* inOther(client.deleteTask(id))
        yield* inOther(client.delete(id))
        assert.strictEqual(
          (yield* Containerd.withNamespace(ns)(containerd.containers.list())).length,
          0,
          label,
        )
      }
    }).pipe(
      Effect.scoped,
      Effect.provide(ContainerdMemory.layerWithProcessIO()),
      Effect.provide(Backend.layerNoop),
    ),
  )
})

/** A client over the Containerd in context, in `namespace` (default: the layer's). */
const clientIn = (namespace: string | undefined) =>
  Effect.flatMap(
    Layer.build(
      LibcontainerdLive.layer({
        stateDir: tempStateDir("namespace-"),
        ...(namespace === undefined ? {} : { namespace }),
      }),
    ),
    (context) => Effect.succeed(Context.get(context, Libcontainerd)),
  )
