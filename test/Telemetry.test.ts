import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Tracer from "effect/Tracer"
import * as Spec from "../src/domain/Spec.js"
import { NotFound } from "../src/errors/ContainerdError.js"
import * as Telemetry from "../src/internal/telemetry.js"
import * as ContainerdMemory from "../src/layers/ContainerdMemory.js"
import * as LibcontainerdLive from "../src/layers/LibcontainerdLive.js"
import * as Backend from "../src/services/Backend.js"
import { Libcontainerd } from "../src/services/Libcontainerd.js"
import { tempStateDir } from "./support/client.js"

interface Recorded {
  readonly name: string
  readonly parent: string | undefined
  readonly attributes: Map<string, unknown>
  ended: boolean
  failed: boolean
}

/** A tracer that keeps every span it is given. */
const recordingTracer = () => {
  const spans: Array<Recorded> = []
  let next = 0
  const tracer = Tracer.make({
    span: (name, parent, context, links, startTime, kind) => {
      const recorded: Recorded = {
        name,
        parent: parent._tag === "Some" && parent.value._tag === "Span" ? parent.value.name : undefined,
        attributes: new Map(),
        ended: false,
        failed: false,
      }
      spans.push(recorded)
      const id = String(++next)
      const span: Tracer.Span = {
        _tag: "Span",
        name,
        spanId: id,
        traceId: "trace",
        parent,
        context,
        status: { _tag: "Started", startTime },
        attributes: recorded.attributes,
        links: [...links],
        sampled: true,
        kind,
        end: (_endTime, exit) => {
          recorded.ended = true
          recorded.failed = exit._tag === "Failure"
        },
        attribute: (key, value) => {
          recorded.attributes.set(key, value)
        },
        event: () => {},
        addLinks: () => {},
      }
      return span
    },
    context: (f) => f(),
  })
  return { spans, tracer }
}

const counter = (metric: Metric.Metric.Counter<number>, tags: Record<string, string>) =>
  Effect.map(
    Metric.value(Object.entries(tags).reduce((m, [k, v]) => Metric.tagged(m, k, v), metric)),
    (state) => state.count,
  )

const client = LibcontainerdLive.layer({
  stateDir: tempStateDir("telemetry-"),
  namespace: "telemetry",
}).pipe(
  Layer.provideMerge(Backend.layerRecorder),
  Layer.provideMerge(ContainerdMemory.layerWithProcessIO()),
  Layer.orDie,
)

describe("telemetry", () => {
  it.live("operations run in spans with ids and namespace; counters and histograms move", () =>
    Effect.gen(function* () {
      const { spans, tracer } = recordingTracer()
      const createdBefore = yield* counter(Telemetry.operations, { operation: "create" })
      const conflictsBefore = yield* counter(Telemetry.failures, { operation: "create", error: "Conflict" })
      const lagBefore = (yield* Metric.value(Telemetry.eventLag)).count
      const reconnectsBefore = (yield* Metric.value(Telemetry.reconnects)).count

      yield* Effect.gen(function* () {
        const lib = yield* Libcontainerd
        const memory = yield* ContainerdMemory.ContainerdMemory
        for (let i = 0; i < 200 && (yield* memory.subscribers) === 0; i++) yield* Effect.sleep("5 millis")
        const spec = Spec.defaultLinux({
          id: "t",
          namespace: "telemetry",
          rootPath: "/rootfs",
          args: ["sleep", "10"],
        })
        yield* lib.create("t", spec)
        yield* Effect.flip(lib.create("t", spec))
        yield* lib.start("t")
        yield* lib.exec("t", "e1", Spec.processFrom(spec, { args: ["true"] }))
        yield* lib.signalProcess("t", "init", "SIGKILL")
        const recorder = yield* Backend.Recorder
        for (let i = 0; i < 400; i++) {
          if ((yield* recorder.events).some((e) => e.type === "exit" && e.info.processId === "t")) break
          yield* Effect.sleep("5 millis")
        }
        yield* lib.deleteTask("t")
        yield* lib.delete("t")
        // a dropped subscription is resubscribed and counted
        yield* memory.disconnectSubscribers
        for (
          let i = 0;
          i < 400 && (yield* Metric.value(Telemetry.reconnects)).count === reconnectsBefore;
          i++
        ) {
          yield* Effect.sleep("10 millis")
        }
      }).pipe(Effect.provide(client), Effect.withTracer(tracer))

      const names = spans.map((s) => s.name)
      for (const op of ["create", "start", "exec", "signalProcess", "deleteTask", "delete"]) {
        assert.include(names, `Libcontainerd.${op}`)
      }
      const exec = spans.find((s) => s.name === "Libcontainerd.exec")
      assert.strictEqual(exec?.attributes.get("container.id"), "t")
      assert.strictEqual(exec?.attributes.get("process.id"), "e1")
      assert.strictEqual(exec?.attributes.get("containerd.namespace"), "telemetry")
      assert.isTrue(exec?.ended)
      const failedCreate = spans.filter((s) => s.name === "Libcontainerd.create").find((s) => s.failed)
      assert.isDefined(failedCreate, "the conflicting create's span ended as a failure")

      assert.strictEqual((yield* counter(Telemetry.operations, { operation: "create" })) - createdBefore, 2)
      assert.strictEqual(
        (yield* counter(Telemetry.failures, { operation: "create", error: "Conflict" })) - conflictsBefore,
        1,
      )
      const duration = yield* Metric.value(Metric.tagged(Telemetry.duration, "operation", "start"))
      assert.isAtLeast(duration.count, 1)
      assert.isAbove((yield* Metric.value(Telemetry.eventLag)).count, lagBefore, "event lag recorded")
      assert.isTrue(Option.isSome(Option.fromNullable(duration.max)))
      assert.strictEqual((yield* Metric.value(Telemetry.reconnects)).count - reconnectsBefore, 1)
    }),
  )

  it.effect(
    "an operation counts however it ends, a typed failure under its tag, with the fiber's metric labels",
    () =>
      Effect.gen(function* () {
        const probe = Telemetry.measured("telemetry-ends")
        yield* Effect.exit(probe(Effect.fail(new NotFound({ message: "gone" }))))
        yield* Effect.exit(probe(Effect.fail("not a ContainerdError")))
        yield* Effect.exit(probe(Effect.die("a defect")))
        yield* Effect.exit(probe(Effect.interrupt))
        yield* probe(Effect.void)
        const labelled = { operation: "telemetry-ends", tenant: "a" }
        assert.strictEqual(yield* counter(Telemetry.operations, labelled), 5)
        assert.strictEqual(
          yield* counter(Telemetry.failures, { operation: "telemetry-ends", error: "NotFound", tenant: "a" }),
          1,
        )
        assert.strictEqual(
          yield* counter(Telemetry.failures, { operation: "telemetry-ends", error: "other", tenant: "a" }),
          1,
        )
      }).pipe(Effect.tagMetrics("tenant", "a")),
  )

  it.live("an operation's duration is measured from its start to its end", () =>
    Effect.gen(function* () {
      yield* Telemetry.measured("telemetry-probe")(Effect.sleep("30 millis"))
      const duration = yield* Metric.value(Metric.tagged(Telemetry.duration, "operation", "telemetry-probe"))
      assert.strictEqual(duration.count, 1)
      assert.isAtLeast(duration.max, 25, "the 30 ms operation is recorded as at least 25 ms")
    }),
  )

  it.effect(
    "traced: the span is the effect's parent span while it runs and ends with its exit; the caller's span is back afterwards",
    () =>
      Effect.gen(function* () {
        const { spans, tracer } = recordingTracer()
        const op = Telemetry.traced("telemetry-traced", "Probe.op", { "container.id": "c" })
        yield* Effect.gen(function* () {
          const inside = yield* op(Effect.withSpan(Effect.currentSpan, "Probe.child"))
          assert.strictEqual(inside.name, "Probe.child")
          assert.strictEqual((yield* Effect.currentSpan).name, "caller")
          const failed = yield* Effect.exit(op(Effect.fail(new NotFound({ message: "gone" }))))
          assert.isTrue(failed._tag === "Failure")
          assert.strictEqual((yield* Effect.currentSpan).name, "caller")
          yield* Effect.exit(op(Effect.interrupt))
          assert.strictEqual((yield* Effect.currentSpan).name, "caller")
        }).pipe(Effect.withSpan("caller"), Effect.withTracer(tracer))
        const ops = spans.filter((s) => s.name === "Probe.op")
        assert.strictEqual(ops.length, 3)
        for (const span of ops) {
          assert.strictEqual(span.parent, "caller")
          assert.strictEqual(span.attributes.get("container.id"), "c")
          assert.isTrue(span.ended)
        }
        assert.deepStrictEqual(
          ops.map((s) => s.failed),
          [false, true, true],
        )
        assert.strictEqual(spans.find((s) => s.name === "Probe.child")?.parent, "Probe.op")
        assert.strictEqual(yield* counter(Telemetry.operations, { operation: "telemetry-traced" }), 3)
        assert.strictEqual(
          yield* counter(Telemetry.failures, { operation: "telemetry-traced", error: "NotFound" }),
          1,
        )
      }),
  )

  it.effect(
    "traced under Effect's built-in tracer, or with tracing disabled: no span of its own (the caller's span stays current), the metrics still move",
    () =>
      Effect.gen(function* () {
        const op = Telemetry.traced("telemetry-untraced", "Probe.untraced", { "container.id": "c" })
        // the built-in tracer: nothing exports its spans, so the operation makes none
        const builtIn = yield* op(Effect.currentSpan).pipe(Effect.withSpan("caller"))
        assert.strictEqual(builtIn.name, "caller")
        // an installed tracer with tracing turned off: no span either
        const { spans, tracer } = recordingTracer()
        const disabled = yield* op(Effect.option(Effect.currentSpan)).pipe(
          Effect.withTracerEnabled(false),
          Effect.withTracer(tracer),
        )
        assert.isTrue(Option.isNone(disabled))
        assert.isFalse(spans.some((s) => s.name === "Probe.untraced"))
        // the same operation under that tracer, enabled: its span
        const traced = yield* op(Effect.currentSpan).pipe(
          Effect.withSpan("caller"),
          Effect.withTracer(tracer),
        )
        assert.strictEqual(traced.name, "Probe.untraced")
        assert.strictEqual(spans.filter((s) => s.name === "Probe.untraced").length, 1)
        // counted all three times, failures under their tag
        yield* Effect.exit(op(Effect.fail(new NotFound({ message: "gone" }))))
        assert.strictEqual(yield* counter(Telemetry.operations, { operation: "telemetry-untraced" }), 4)
        assert.strictEqual(
          yield* counter(Telemetry.failures, { operation: "telemetry-untraced", error: "NotFound" }),
          1,
        )
      }),
  )
})
