import { assert, describe, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as FastCheck from "effect/FastCheck"
import * as Fiber from "effect/Fiber"
import * as HashMap from "effect/HashMap"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import * as Proto from "../generated/containerd/events/task.js"
import {
  decodeEnvelope,
  encodeEvent,
  TaskEvent,
  type TaskEventEnvelope,
  type TaskEventsItem,
  topicOf,
} from "../src/domain/TaskEvent.js"
import { type Envelope, type Timestamp, zeroTimestamp } from "../src/domain/Types.js"
import { type ContainerdError, GrpcCode, System } from "../src/errors/ContainerdError.js"
import * as TaskEventsLive from "../src/layers/TaskEventsLive.js"
import * as TaskEventsMemory from "../src/layers/TaskEventsMemory.js"
import { Containerd } from "../src/services/Containerd.js"
import { TaskEvents } from "../src/services/TaskEvents.js"

const namespace = "testns"
const filter = "namespace==testns,topic~=|^/tasks/|"
const at: Timestamp = { seconds: 1_700_000_000n, nanos: 123_456_789 }

const envelopeOf = (typeUrl: string, value: Uint8Array, topic = "/tasks/exit"): Envelope => ({
  timestamp: at,
  namespace,
  topic,
  event: { typeUrl, value },
})

const packed = (event: TaskEvent): Envelope => {
  const { typeUrl, value } = encodeEvent(event)
  return envelopeOf(typeUrl, value, topicOf(event))
}

const decodedEvent = (envelope: Envelope): TaskEvent => {
  const result = decodeEnvelope(envelope)
  assert(Either.isRight(result), Either.isLeft(result) ? `malformed: ${result.left.message}` : "")
  assert(Option.isSome(result.right), "expected a task event, got an unknown type")
  assert.strictEqual(result.right.value.topic, envelope.topic)
  assert.strictEqual(result.right.value.namespace, envelope.namespace)
  assert.deepStrictEqual(result.right.value.timestamp, envelope.timestamp ?? zeroTimestamp)
  return result.right.value.event
}

const exit = (containerId: string, status = 0): TaskEvent => ({
  _tag: "TaskExit",
  containerId,
  id: containerId,
  pid: 42,
  exitStatus: status,
  exitedAt: at,
})

describe("decodeEnvelope", () => {
  // Each row: the message encoded with the generated protobuf code, and the event it must decode to.
  const rows: ReadonlyArray<readonly [string, Uint8Array, TaskEvent]> = [
    [
      "TaskCreate",
      Proto.TaskCreate.encode({
        containerId: "web",
        bundle: "/run/bundles/web",
        rootfs: [{ type: "overlay", source: "overlay", target: "", options: ["lowerdir=/a", "upperdir=/b"] }],
        io: { stdin: "/fifo/in", stdout: "/fifo/out", stderr: "", terminal: true },
        checkpoint: "sha256:abc",
        pid: 4321,
      }).finish(),
      {
        _tag: "TaskCreate",
        containerId: "web",
        bundle: "/run/bundles/web",
        rootfs: [{ type: "overlay", source: "overlay", options: ["lowerdir=/a", "upperdir=/b"] }],
        io: { stdin: "/fifo/in", stdout: "/fifo/out", stderr: "", terminal: true },
        checkpoint: "sha256:abc",
        pid: 4321,
      },
    ],
    [
      "TaskCreate",
      Proto.TaskCreate.encode({
        containerId: "bare",
        bundle: "/b",
        rootfs: [],
        checkpoint: "",
        pid: 1,
      }).finish(),
      { _tag: "TaskCreate", containerId: "bare", bundle: "/b", checkpoint: "", pid: 1 },
    ],
    [
      "TaskStart",
      Proto.TaskStart.encode({ containerId: "web", pid: 4321 }).finish(),
      { _tag: "TaskStart", containerId: "web", pid: 4321 },
    ],
    [
      "TaskExit",
      Proto.TaskExit.encode({
        containerId: "web",
        id: "exec-1",
        pid: 77,
        exitStatus: 137,
        exitedAt: { seconds: 9_007_199_254_740_993n, nanos: 999_999_999 },
      }).finish(),
      {
        _tag: "TaskExit",
        containerId: "web",
        id: "exec-1",
        pid: 77,
        exitStatus: 137,
        exitedAt: { seconds: 9_007_199_254_740_993n, nanos: 999_999_999 },
      },
    ],
    [
      "TaskExit",
      Proto.TaskExit.encode({ containerId: "web", id: "web", pid: 1, exitStatus: 0 }).finish(),
      { _tag: "TaskExit", containerId: "web", id: "web", pid: 1, exitStatus: 0, exitedAt: zeroTimestamp },
    ],
    [
      "TaskOOM",
      Proto.TaskOOM.encode({ containerId: "web" }).finish(),
      { _tag: "TaskOOM", containerId: "web" },
    ],
    [
      "TaskExecAdded",
      Proto.TaskExecAdded.encode({ containerId: "web", execId: "sh" }).finish(),
      { _tag: "TaskExecAdded", containerId: "web", execId: "sh" },
    ],
    [
      "TaskExecStarted",
      Proto.TaskExecStarted.encode({ containerId: "web", execId: "sh", pid: 99 }).finish(),
      { _tag: "TaskExecStarted", containerId: "web", execId: "sh", pid: 99 },
    ],
    [
      "TaskPaused",
      Proto.TaskPaused.encode({ containerId: "web" }).finish(),
      { _tag: "TaskPaused", containerId: "web" },
    ],
    [
      "TaskResumed",
      Proto.TaskResumed.encode({ containerId: "web" }).finish(),
      { _tag: "TaskResumed", containerId: "web" },
    ],
    [
      "TaskDelete",
      Proto.TaskDelete.encode({
        containerId: "web",
        pid: 4321,
        exitStatus: 1,
        exitedAt: { seconds: -62_135_596_800n, nanos: 1 },
        id: "web",
      }).finish(),
      {
        _tag: "TaskDelete",
        containerId: "web",
        pid: 4321,
        exitStatus: 1,
        exitedAt: { seconds: -62_135_596_800n, nanos: 1 },
        id: "web",
      },
    ],
    [
      "TaskCheckpointed",
      Proto.TaskCheckpointed.encode({ containerId: "web", checkpoint: "sha256:def" }).finish(),
      { _tag: "TaskCheckpointed", containerId: "web", checkpoint: "sha256:def" },
    ],
  ]

  const cases = rows.map(([name, bytes, expected]) => ({ name, bytes, expected }))

  it.each(cases)("decodes $name from its protobuf bytes", ({ bytes, expected, name }) => {
    const event = decodedEvent(envelopeOf(`containerd.events.${name}`, bytes))
    assert.deepStrictEqual(event, expected)
    // and our own encoder produces bytes that decode to the same event
    assert.deepStrictEqual(decodedEvent(packed(expected)), expected)
  })

  it("covers every task event type", () => {
    assert.deepStrictEqual(
      new Set(cases.map(({ name }) => name)),
      new Set([
        "TaskCreate",
        "TaskStart",
        "TaskExit",
        "TaskOOM",
        "TaskExecAdded",
        "TaskExecStarted",
        "TaskPaused",
        "TaskResumed",
        "TaskDelete",
        "TaskCheckpointed",
      ]),
    )
  })

  const timestamp = FastCheck.record({
    seconds: FastCheck.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
    nanos: FastCheck.integer({ min: 0, max: 999_999_999 }),
  })
  const uint32 = FastCheck.integer({ min: 0, max: 2 ** 32 - 1 })
  const id = FastCheck.string({ minLength: 1, maxLength: 40 })

  it.prop(
    "keeps exits and deletes lossless (int64 seconds, nanos, uint32 status)",
    {
      containerId: id,
      processId: id,
      pid: uint32,
      exitStatus: uint32,
      exitedAt: timestamp,
      envelopeAt: timestamp,
    },
    ({ containerId, envelopeAt, exitStatus, exitedAt, pid, processId }) => {
      const bytes = Proto.TaskExit.encode({ containerId, id: processId, pid, exitStatus, exitedAt }).finish()
      const exitEvent = decodedEvent({
        ...envelopeOf("containerd.events.TaskExit", bytes),
        timestamp: envelopeAt,
      })
      assert.deepStrictEqual(exitEvent, {
        _tag: "TaskExit",
        containerId,
        id: processId,
        pid,
        exitStatus,
        exitedAt,
      })
      const deleted = Proto.TaskDelete.encode({
        containerId,
        pid,
        exitStatus,
        exitedAt,
        id: processId,
      }).finish()
      assert.deepStrictEqual(
        decodedEvent(envelopeOf("containerd.events.TaskDelete", deleted, "/tasks/delete")),
        {
          _tag: "TaskDelete",
          containerId,
          pid,
          exitStatus,
          exitedAt,
          id: processId,
        },
      )
    },
  )

  /** The generated message functions of every task event, by tag. */
  const messages: Record<TaskEvent["_tag"], Proto.MessageFns<any> & { fromPartial: (o: object) => any }> = {
    TaskCreate: Proto.TaskCreate,
    TaskStart: Proto.TaskStart,
    TaskExit: Proto.TaskExit,
    TaskOOM: Proto.TaskOOM,
    TaskExecAdded: Proto.TaskExecAdded,
    TaskExecStarted: Proto.TaskExecStarted,
    TaskPaused: Proto.TaskPaused,
    TaskResumed: Proto.TaskResumed,
    TaskDelete: Proto.TaskDelete,
    TaskCheckpointed: Proto.TaskCheckpointed,
  }
  const tags = Object.keys(messages) as Array<TaskEvent["_tag"]>

  it.prop(
    "decoding checks by hand what the event schemas check: a decoded event validates, and an empty container id is refused",
    { tag: FastCheck.constantFrom(...tags), containerId: id, pid: uint32 },
    ({ containerId, pid, tag }) => {
      const fns = messages[tag]
      const encode = (c: string) => fns.encode(fns.fromPartial({ containerId: c, pid })).finish()
      const event = decodedEvent(envelopeOf(`containerd.events.${tag}`, encode(containerId)))
      assert.isTrue(Either.isRight(Schema.validateEither(TaskEvent)(event)), `${tag} validates`)
      assert.isTrue(Either.isLeft(Schema.validateEither(TaskEvent)({ ...event, containerId: "" })))
      const refused = decodeEnvelope(envelopeOf(`containerd.events.${tag}`, encode("")))
      assert(Either.isLeft(refused), `${tag} with an empty container id is refused`)
      assert.match(refused.left.message, /containerId/)
    },
  )

  it("keeps the envelope's topic, namespace and timestamp, and reads a missing timestamp as the zero time", () => {
    const result = decodeEnvelope({ ...packed(exit("web")), timestamp: undefined })
    assert.deepStrictEqual(
      result,
      Either.right(
        Option.some<TaskEventEnvelope>({
          _tag: "TaskEventEnvelope",
          topic: "/tasks/exit",
          namespace,
          timestamp: zeroTimestamp,
          event: exit("web"),
        }),
      ),
    )
  })

  it("skips a type that is not a task event", () => {
    const bytes = Proto.TaskStart.encode({ containerId: "web", pid: 1 }).finish()
    for (const typeUrl of [
      "containerd.events.ContainerCreate",
      "containerd.events.toString",
      "type.googleapis.com/containerd.events.TaskStart",
      "",
    ]) {
      assert.deepStrictEqual(decodeEnvelope(envelopeOf(typeUrl, bytes)), Either.right(Option.none()), typeUrl)
    }
  })

  it("reports bytes that do not decode, payloads that do not validate and missing payloads as malformed", () => {
    const truncated = decodeEnvelope(
      envelopeOf("containerd.events.TaskExit", new Uint8Array([0x0a, 0x05, 0x61])),
    )
    assert(Either.isLeft(truncated))
    assert.strictEqual(truncated.left.topic, "/tasks/exit")
    assert.strictEqual(truncated.left.typeUrl, "containerd.events.TaskExit")
    const noContainer = decodeEnvelope(envelopeOf("containerd.events.TaskOOM", new Uint8Array()))
    assert(Either.isLeft(noContainer))
    assert.match(noContainer.left.message, /containerId/)
    const empty = decodeEnvelope({ timestamp: at, namespace, topic: "/tasks/start", event: undefined })
    assert(Either.isLeft(empty))
    assert.strictEqual(empty.left.topic, "/tasks/start")
  })
})

// ---------------------------------------------------------------------------
// The live layer over a fake Containerd

interface LogEntry {
  readonly level: string
  readonly text: string
  readonly annotations: Readonly<Record<string, unknown>>
}

/** A logger that records every entry, with the minimum level lowered to debug. */
const captureLogs = (): { readonly logs: Array<LogEntry>; readonly layer: Layer.Layer<never> } => {
  const logs: Array<LogEntry> = []
  const logger = Logger.make(({ annotations, logLevel, message }) => {
    const parts = Array.isArray(message) ? message : [message]
    logs.push({
      level: logLevel.label,
      text: parts.map((p) => (p instanceof Error ? `${p.name}: ${p.message}` : String(p))).join(" "),
      annotations: Object.fromEntries(HashMap.toEntries(annotations)),
    })
  })
  return { logs, layer: Layer.merge(Logger.add(logger), Logger.minimumLogLevel(LogLevel.Debug)) }
}

interface Fake {
  readonly service: Containerd.Service
  readonly filters: Array<ReadonlyArray<string>>
  readonly cancelled: () => number
  /** Calls made through `events.forEach`. */
  readonly viaForEach: () => number
}

/**
 * A Containerd with only `namespace` and `events.subscribe` (and `events.forEach` over it when `withForEach`); call
 * n gets `script[n]` (then a silent open stream).
 */
const fakeContainerd = (
  script: ReadonlyArray<Stream.Stream<Envelope, ContainerdError>>,
  withForEach = false,
): Fake => {
  const filters: Array<ReadonlyArray<string>> = []
  let cancelled = 0
  const subscribe = (f: ReadonlyArray<string>): Stream.Stream<Envelope, ContainerdError> =>
    Stream.suspend(() => {
      const attempt = filters.length
      filters.push(f)
      return (script[attempt] ?? Stream.never).pipe(
        Stream.ensuring(
          Effect.sync(() => {
            cancelled++
          }),
        ),
      )
    })
  const unused: ProxyHandler<object> = { get: () => Effect.die("unused") }
  const forEach = (f: ReadonlyArray<string>, onEnvelope: (envelope: Envelope) => Effect.Effect<unknown>) =>
    Effect.suspend(() => {
      viaForEach++
      return Stream.runForEach(subscribe(f), onEnvelope)
    })
  let viaForEach = 0
  const service = new Proxy(
    { namespace, events: withForEach ? { subscribe, forEach } : { subscribe } },
    {
      get: (target, property) =>
        property in target ? target[property as keyof typeof target] : new Proxy({}, unused),
    },
  ) as unknown as Containerd.Service
  return { service, filters, cancelled: () => cancelled, viaForEach: () => viaForEach }
}

const unavailable = (): ContainerdError =>
  new System({ message: "transport is closing", code: GrpcCode.UNAVAILABLE })

/** Lets forked fibers run until `check` holds (at most `rounds` scheduler turns). */
const eventually = (check: () => boolean, rounds = 500): Effect.Effect<void> =>
  Effect.suspend(function loop(n = 0): Effect.Effect<void> {
    if (check() || n >= rounds) return Effect.void
    return Effect.flatMap(Effect.yieldNow(), () => loop(n + 1))
  })

/** Runs the service's stream in a fiber, collecting what it emits. */
const collect = (taskEvents: TaskEvents.Service) =>
  Effect.gen(function* () {
    const items: Array<TaskEventsItem> = []
    const fiber = yield* Effect.fork(
      Stream.runForEach(taskEvents.subscribe, (item) =>
        Effect.sync(() => {
          items.push(item)
        }),
      ),
    )
    return { items, fiber }
  })

const liveService = (fake: Fake, options?: TaskEventsLive.Options) =>
  Effect.provide(
    TaskEvents,
    TaskEventsLive.layer(options).pipe(Layer.provide(Layer.succeed(Containerd, fake.service))),
  )

const eventsOf = (items: ReadonlyArray<TaskEventsItem>): ReadonlyArray<TaskEvent> =>
  items.flatMap((item) => (item._tag === "TaskEventEnvelope" ? [item.event] : []))

const markersOf = (items: ReadonlyArray<TaskEventsItem>) =>
  items.flatMap((item) => (item._tag === "Subscribed" ? [item] : []))

describe("TaskEventsLive", () => {
  it.effect("resubscribes after failures, with a Subscribed marker before each subscription's events", () => {
    const { layer, logs } = captureLogs()
    const fake = fakeContainerd([
      Stream.concat(Stream.make(packed(exit("a"))), Stream.fail(unavailable())),
      Stream.concat(Stream.make(packed(exit("b"))), Stream.fail(unavailable())),
      Stream.concat(Stream.make(packed(exit("c")), packed(exit("d"))), Stream.never),
    ])
    return Effect.gen(function* () {
      const { fiber, items } = yield* collect(yield* liveService(fake))
      yield* eventually(() => items.length === 2)
      assert.strictEqual(fake.filters.length, 1)
      // Less than the shortest first delay (100 ms − 20 % jitter): no new attempt, however long we let fibers run.
      yield* TestClock.adjust("79 millis")
      yield* eventually(() => false, 200)
      assert.strictEqual(fake.filters.length, 1)
      assert.strictEqual(fake.cancelled(), 1, "the failed call is finished before the next one starts")
      yield* TestClock.adjust("42 millis")
      yield* eventually(() => items.length === 4)
      assert.strictEqual(fake.filters.length, 2)
      // The second call failed at the first wait's end (80..120 ms); the first subscription was live,
      // so the backoff starts over: the next call comes 80..120 ms after that, within 160..240 ms.
      yield* TestClock.adjust("38 millis") // 159 ms
      yield* eventually(() => false, 200)
      assert.strictEqual(fake.filters.length, 2)
      yield* TestClock.adjust("81 millis") // 240 ms
      yield* eventually(() => items.length === 7)
      assert.strictEqual(fake.filters.length, 3)

      assert.deepStrictEqual(items, [
        { _tag: "Subscribed", attempt: 1, confirmed: true },
        { _tag: "TaskEventEnvelope", topic: "/tasks/exit", namespace, timestamp: at, event: exit("a") },
        { _tag: "Subscribed", attempt: 2, confirmed: true },
        { _tag: "TaskEventEnvelope", topic: "/tasks/exit", namespace, timestamp: at, event: exit("b") },
        { _tag: "Subscribed", attempt: 3, confirmed: true },
        { _tag: "TaskEventEnvelope", topic: "/tasks/exit", namespace, timestamp: at, event: exit("c") },
        { _tag: "TaskEventEnvelope", topic: "/tasks/exit", namespace, timestamp: at, event: exit("d") },
      ])
      assert.deepStrictEqual(fake.filters, [[filter], [filter], [filter]])
      const warnings = logs.filter((l) => l.level === "WARN")
      assert.strictEqual(warnings.length, 2, "each reconnect is logged once")
      for (const warning of warnings) assert.match(warning.text, /transport is closing/)

      yield* Fiber.interrupt(fiber)
      assert.strictEqual(fake.cancelled(), 3)
    }).pipe(Effect.provide(layer))
  })

  it.effect("subscribes through the layer's events.forEach when it has one, with the same items", () => {
    const fake = fakeContainerd(
      [
        Stream.concat(Stream.make(packed(exit("a"))), Stream.fail(unavailable())),
        Stream.concat(Stream.make(packed(exit("b")), packed(exit("c"))), Stream.never),
      ],
      true,
    )
    return Effect.gen(function* () {
      const { fiber, items } = yield* collect(yield* liveService(fake))
      yield* eventually(() => items.length === 2)
      yield* TestClock.adjust("121 millis")
      yield* eventually(() => items.length === 5)
      assert.deepStrictEqual(items, [
        { _tag: "Subscribed", attempt: 1, confirmed: true },
        { _tag: "TaskEventEnvelope", topic: "/tasks/exit", namespace, timestamp: at, event: exit("a") },
        { _tag: "Subscribed", attempt: 2, confirmed: true },
        { _tag: "TaskEventEnvelope", topic: "/tasks/exit", namespace, timestamp: at, event: exit("b") },
        { _tag: "TaskEventEnvelope", topic: "/tasks/exit", namespace, timestamp: at, event: exit("c") },
      ])
      assert.strictEqual(fake.viaForEach(), 2, "every call went through forEach")
      yield* Fiber.interrupt(fiber)
      assert.strictEqual(fake.cancelled(), 2)
    }).pipe(Effect.provide(captureLogs().layer))
  })

  it.effect(
    "marks a subscription that brings no event live after the settle time, backing off between failures",
    () => {
      const fake = fakeContainerd([Stream.fail(unavailable()), Stream.fail(unavailable())])
      return Effect.gen(function* () {
        const { items } = yield* collect(yield* liveService(fake))
        yield* eventually(() => fake.filters.length === 1)
        // Call 2 comes after the first wait (80..120 ms), call 3 after the second (160..240 ms more): 240..360 ms.
        yield* TestClock.adjust("121 millis")
        yield* eventually(() => fake.filters.length === 2)
        yield* TestClock.adjust("118 millis") // 239 ms
        yield* eventually(() => false, 200)
        assert.strictEqual(fake.filters.length, 2, "the second wait is longer than the first")
        yield* TestClock.adjust("121 millis") // 360 ms
        yield* eventually(() => fake.filters.length === 3)
        // Call 3 stays open without an envelope: live after the settle time (200 ms), at 440..560 ms.
        yield* TestClock.adjust("79 millis") // 439 ms
        yield* eventually(() => false, 200)
        assert.deepStrictEqual(items, [], "no marker before the settle time")
        yield* TestClock.adjust("121 millis") // 560 ms
        yield* eventually(() => items.length === 1)
        assert.deepStrictEqual(items, [{ _tag: "Subscribed", attempt: 3, confirmed: false }])
      }).pipe(Effect.provide(captureLogs().layer))
    },
  )

  it.effect(
    "subscribes with exactly namespace==<ns>,topic~=|^/tasks/| for the given or the service's namespace",
    () =>
      Effect.gen(function* () {
        const fake = fakeContainerd([])
        yield* collect(yield* liveService(fake))
        yield* eventually(() => fake.filters.length === 1)
        assert.deepStrictEqual(fake.filters, [["namespace==testns,topic~=|^/tasks/|"]])
        const other = fakeContainerd([])
        yield* collect(yield* liveService(other, { namespace: "moby" }))
        yield* eventually(() => other.filters.length === 1)
        assert.deepStrictEqual(other.filters, [["namespace==moby,topic~=|^/tasks/|"]])
        const invalid = yield* Effect.exit(liveService(other, { namespace: "a/b" }))
        assert(Exit.isFailure(invalid))
      }),
  )

  it.effect('ignoredTopics add topic!="<topic>" each; anything but a task topic is InvalidParameter', () =>
    Effect.gen(function* () {
      const fake = fakeContainerd([])
      yield* collect(yield* liveService(fake, { ignoredTopics: ["/tasks/delete", "/tasks/checkpointed"] }))
      yield* eventually(() => fake.filters.length === 1)
      assert.deepStrictEqual(fake.filters, [
        ['namespace==testns,topic~=|^/tasks/|,topic!="/tasks/delete",topic!="/tasks/checkpointed"'],
      ])
      for (const topic of ["/containers/create", "/tasks/delete|x", "tasks/delete", "/tasks/", ""]) {
        const error = yield* Effect.flip(TaskEventsLive.make(fake.service, { ignoredTopics: [topic] }))
        assert.strictEqual(error._tag, "InvalidParameter")
        assert.include(error.message, "ignoredTopics")
      }
    }),
  )

  it.effect(
    "skips unknown (debug) and malformed (warning with the topic) envelopes without ending the stream",
    () => {
      const { layer, logs } = captureLogs()
      const fake = fakeContainerd([
        Stream.concat(
          Stream.make(
            envelopeOf("containerd.events.ContainerCreate", new Uint8Array(), "/containers/create"),
            envelopeOf("containerd.events.TaskExit", new Uint8Array([0xff, 0xff, 0xff]), "/tasks/exit"),
            { timestamp: at, namespace, topic: "/tasks/oom", event: undefined },
            packed(exit("web", 3)),
          ),
          Stream.never,
        ),
      ])
      return Effect.gen(function* () {
        const { items } = yield* collect(yield* liveService(fake))
        yield* eventually(() => items.length === 2)
        assert.deepStrictEqual(markersOf(items), [{ _tag: "Subscribed", attempt: 1, confirmed: true }])
        assert.deepStrictEqual(eventsOf(items), [exit("web", 3)])
        const debug = logs.filter((l) => l.level === "DEBUG")
        assert(debug.some((l) => l.text.includes("containerd.events.ContainerCreate")))
        const warnings = logs.filter((l) => l.level === "WARN")
        assert.deepStrictEqual(
          warnings.map((w) => w.annotations.topic),
          ["/tasks/exit", "/tasks/oom"],
        )
        assert.strictEqual(fake.filters.length, 1, "a bad envelope does not cost a resubscription")
      }).pipe(Effect.provide(layer))
    },
  )

  it.effect("ends quietly on interruption, cancelling the call", () => {
    const { layer, logs } = captureLogs()
    const fake = fakeContainerd([Stream.concat(Stream.make(packed(exit("a"))), Stream.never)])
    return Effect.gen(function* () {
      const { fiber, items } = yield* collect(yield* liveService(fake))
      yield* eventually(() => items.length === 2)
      yield* Fiber.interrupt(fiber)
      assert.strictEqual(fake.cancelled(), 1)
      yield* TestClock.adjust("10 seconds")
      yield* eventually(() => false, 100)
      assert.strictEqual(fake.filters.length, 1, "no resubscription after interruption")
      assert.deepStrictEqual(
        logs.filter((l) => l.level === "WARN" || l.level === "ERROR"),
        [],
      )
    }).pipe(Effect.provide(layer))
  })

  it.effect("resubscribes when the stream ends, and resets nothing else", () => {
    const fake = fakeContainerd([Stream.make(packed(exit("a"))), Stream.make(packed(exit("b")))])
    return Effect.gen(function* () {
      const { items } = yield* collect(yield* liveService(fake))
      yield* eventually(() => items.length === 2)
      yield* TestClock.adjust("121 millis")
      yield* eventually(() => items.length === 4)
      assert.deepStrictEqual(eventsOf(items), [exit("a"), exit("b")])
      assert.deepStrictEqual(
        markersOf(items).map((m) => m.attempt),
        [1, 2],
      )
    }).pipe(Effect.provide(captureLogs().layer))
  })

  it.effect("fails with the last failure when the retry schedule gives up", () => {
    const fake = fakeContainerd([Stream.fail(unavailable()), Stream.fail(new System({ message: "second" }))])
    return Effect.gen(function* () {
      const service = yield* liveService(fake, { retry: Schedule.recurs(1) })
      const fiber = yield* Effect.fork(Stream.runCollect(service.subscribe))
      yield* eventually(() => fake.filters.length === 1)
      yield* TestClock.adjust("10 millis") // the floor every schedule gets
      const exit = yield* Fiber.await(fiber)
      assert.strictEqual(fake.filters.length, 2)
      assert.deepStrictEqual(exit, Exit.fail(new System({ message: "second" })))
    }).pipe(Effect.provide(captureLogs().layer))
  })
})

describe("TaskEventsLive.follow", () => {
  it.effect(
    "hands its handler what the stream emits, in order, across resubscriptions, and fails as it does",
    () => {
      const fake = fakeContainerd([
        Stream.concat(Stream.make(packed(exit("a")), packed(exit("b"))), Stream.fail(unavailable())),
        Stream.fail(new System({ message: "second" })),
      ])
      return Effect.gen(function* () {
        const follow = yield* TaskEventsLive.follow(fake.service, { retry: Schedule.recurs(2) })
        const items: Array<TaskEventsItem> = []
        const fiber = yield* Effect.fork(
          follow((item) =>
            Effect.sync(() => {
              items.push(item)
            }),
          ),
        )
        yield* eventually(() => items.length === 3)
        // recurs(2): two more calls, each after the 10 ms floor; the second fails at once (not live, no
        // marker), the third stays open and settles
        yield* TestClock.adjust("10 millis")
        yield* eventually(() => fake.filters.length === 2)
        yield* TestClock.adjust("10 millis")
        yield* eventually(() => fake.filters.length === 3)
        yield* TestClock.adjust("199 millis")
        yield* eventually(() => false, 100)
        assert.strictEqual(items.length, 3, "no marker before the settle time")
        yield* TestClock.adjust("1 millis")
        yield* eventually(() => items.length === 4)
        assert.deepStrictEqual(items, [
          { _tag: "Subscribed", attempt: 1, confirmed: true },
          { _tag: "TaskEventEnvelope", topic: "/tasks/exit", namespace, timestamp: at, event: exit("a") },
          { _tag: "TaskEventEnvelope", topic: "/tasks/exit", namespace, timestamp: at, event: exit("b") },
          { _tag: "Subscribed", attempt: 3, confirmed: false },
        ])
        yield* Fiber.interrupt(fiber)
        assert.strictEqual(fake.cancelled(), 3, "interruption cancels the open call")
        const invalid = yield* Effect.flip(TaskEventsLive.follow(fake.service, { namespace: "a/b" }))
        assert.strictEqual(invalid._tag, "InvalidParameter")
        const failing = fakeContainerd([
          Stream.fail(unavailable()),
          Stream.fail(new System({ message: "last" })),
        ])
        const ended = yield* Effect.fork(
          (yield* TaskEventsLive.follow(failing.service, { retry: Schedule.recurs(1) }))(() => Effect.void),
        )
        yield* eventually(() => failing.filters.length === 1)
        yield* TestClock.adjust("10 millis")
        assert.deepStrictEqual(yield* Fiber.await(ended), Exit.fail(new System({ message: "last" })))
      }).pipe(Effect.provide(captureLogs().layer))
    },
  )

  it.effect("a handler that dies on the settle marker ends it with that defect and cancels the call", () => {
    const fake = fakeContainerd([])
    return Effect.gen(function* () {
      const follow = yield* TaskEventsLive.follow(fake.service)
      const fiber = yield* Effect.fork(follow(() => Effect.die("handler bug")))
      yield* eventually(() => fake.filters.length === 1)
      yield* TestClock.adjust("200 millis")
      const exit = yield* Fiber.await(fiber)
      assert.deepStrictEqual(exit, Exit.die("handler bug"))
      assert.strictEqual(fake.cancelled(), 1)
      assert.strictEqual(fake.filters.length, 1, "a defect is not retried")
    }).pipe(Effect.provide(captureLogs().layer))
  })
})

describe("TaskEventsMemory", () => {
  it.effect(
    "delivers published events after a Subscribed marker, and drops what is published while disconnected",
    () =>
      Effect.gen(function* () {
        const taskEvents = yield* TaskEvents
        const memory = yield* TaskEventsMemory.TaskEventsMemory
        const { fiber, items } = yield* collect(taskEvents)
        yield* eventually(() => items.length === 1)
        assert.strictEqual(yield* memory.subscribers, 1)
        yield* memory.publish(exit("a"), { timestamp: at })
        yield* eventually(() => items.length === 2)
        const during = yield* memory.disconnect(
          Effect.gen(function* () {
            yield* eventually(() => false, 50)
            assert.strictEqual(yield* memory.subscribers, 0)
            yield* memory.publish(exit("lost"))
            return "done"
          }),
        )
        assert.strictEqual(during, "done")
        yield* eventually(() => items.length === 3)
        yield* memory.publish(exit("b"), { timestamp: at })
        yield* eventually(() => items.length === 4)
        assert.deepStrictEqual(
          items.map((i) => (i._tag === "Subscribed" ? `subscribed ${i.attempt}` : i.event.containerId)),
          ["subscribed 1", "a", "subscribed 2", "b"],
        )
        assert.deepStrictEqual(items[1], {
          _tag: "TaskEventEnvelope",
          topic: "/tasks/exit",
          namespace: "default",
          timestamp: at,
          event: exit("a"),
        })
        yield* Fiber.interrupt(fiber)
        assert.strictEqual(yield* memory.subscribers, 0)
        // stays a Chunk-free sanity check that the stream is restartable
        const again = yield* Effect.fork(Stream.runCollect(Stream.take(taskEvents.subscribe, 1)))
        assert.deepStrictEqual(Chunk.toReadonlyArray(yield* Fiber.join(again)), [
          { _tag: "Subscribed", attempt: 1, confirmed: true },
        ])
      }).pipe(Effect.provide(TaskEventsMemory.layer())),
  )
})
