import { assert, describe, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FastCheck from "effect/FastCheck"
import * as FiberId from "effect/FiberId"
import * as HashMap from "effect/HashMap"
import type * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Scope from "effect/Scope"
import * as EventQueue from "../src/internal/eventQueue.js"

interface LogEntry {
  readonly level: string
  readonly text: string
  readonly key: unknown
  readonly cause: string
}

const captureLogs = (): { readonly logs: Array<LogEntry>; readonly layer: Layer.Layer<never> } => {
  const logs: Array<LogEntry> = []
  const logger = Logger.make(({ annotations, cause, logLevel, message }) => {
    const parts = Array.isArray(message) ? message : [message]
    logs.push({
      level: logLevel.label,
      text: parts.map(String).join(" "),
      key: HashMap.unsafeGet(annotations, "key"),
      cause: String(cause),
    })
  })
  return { logs, layer: Logger.add(logger) }
}

/** One step of a generated workload: an event for `key`, whose task yields `yields` times before recording. */
const step = FastCheck.record({
  key: FastCheck.integer({ min: 0, max: 19 }),
  yields: FastCheck.integer({ min: 0, max: 3 }),
  pauseAfter: FastCheck.boolean(),
})

describe("EventQueue", () => {
  it.effect.prop(
    "runs each key's tasks once each, in append order, whatever the interleaving",
    [FastCheck.array(step, { maxLength: 400 })],
    ([steps]) =>
      Effect.scoped(
        Effect.gen(function* () {
          const queue = yield* EventQueue.make
          const seen = new Map<string, Array<number>>()
          const running = new Set<string>()
          let overlaps = 0
          const next = new Map<string, number>()
          for (const { key: k, pauseAfter, yields } of steps) {
            const key = `c${k}`
            const seq = next.get(key) ?? 0
            next.set(key, seq + 1)
            yield* queue.append(
              key,
              Effect.gen(function* () {
                if (running.has(key)) overlaps++
                running.add(key)
                for (let i = 0; i < yields; i++) yield* Effect.yieldNow()
                seen.set(key, [...(seen.get(key) ?? []), seq])
                running.delete(key)
              }),
            )
            // Let workers run between some appends, so that queues drain and restart.
            if (pauseAfter) yield* Effect.yieldNow()
          }
          yield* queue.drained
          assert.strictEqual(overlaps, 0, "two tasks of one key ran at once")
          for (const [key, count] of next) {
            assert.deepStrictEqual(
              seen.get(key),
              Array.from({ length: count }, (_, i) => i),
              key,
            )
          }
          assert.strictEqual(seen.size, next.size)
          assert.strictEqual(yield* queue.activeKeys, 0, "no state is kept for idle keys")
        }),
      ),
    { fastCheck: { numRuns: 200 } },
  )

  it.live("a task that never finishes holds back its own key only", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const queue = yield* EventQueue.make
        const stuck = yield* Deferred.make<void>()
        const others = yield* Deferred.make<void>()
        let done = 0
        let slowSecondRan = false
        yield* queue.append("slow", Deferred.await(stuck))
        yield* queue.append(
          "slow",
          Effect.sync(() => {
            slowSecondRan = true
          }),
        )
        for (let i = 0; i < 100; i++) {
          yield* queue.append(
            `fast-${i % 10}`,
            Effect.flatMap(Effect.yieldNow(), () =>
              Effect.suspend(() => (++done === 100 ? Deferred.succeed(others, undefined) : Effect.void)),
            ),
          )
        }
        yield* Deferred.await(others).pipe(Effect.timeout("2 seconds"))
        assert.strictEqual(done, 100)
        assert.isFalse(slowSecondRan)
        assert.strictEqual(yield* queue.activeKeys, 1)
        yield* Deferred.succeed(stuck, undefined)
        yield* queue.drained
        assert.isTrue(slowSecondRan)
      }),
    ),
  )

  it.effect("logs a failing or defecting task with its key and runs the key's next task", () => {
    const { layer, logs } = captureLogs()
    return Effect.scoped(
      Effect.gen(function* () {
        const queue = yield* EventQueue.make
        const ran: Array<string> = []
        yield* queue.append("web", Effect.fail("boom"))
        yield* queue.append("web", Effect.die(new Error("bug")))
        yield* queue.append(
          "web",
          Effect.sync(() => ran.push("web after failures")),
        )
        yield* queue.append(
          "db",
          Effect.sync(() => ran.push("db")),
        )
        yield* queue.drained
        assert.deepStrictEqual(ran.sort(), ["db", "web after failures"])
        const errors = logs.filter((l) => l.level === "ERROR")
        assert.strictEqual(errors.length, 2)
        for (const error of errors) {
          assert.strictEqual(error.key, "web")
          assert.include(error.text, "web")
        }
        assert.include(errors[0]?.cause, "boom")
        assert.include(errors[1]?.cause, "bug")
      }),
    ).pipe(Effect.provide(layer))
  })

  it.effect("closing the scope interrupts running tasks quietly and drops the rest", () => {
    const { layer, logs } = captureLogs()
    return Effect.gen(function* () {
      const scope = yield* Scope.make()
      const queue = yield* Scope.extend(EventQueue.make, scope)
      const started = yield* Deferred.make<void>()
      let interrupted = false
      let laterRan = false
      yield* queue.append(
        "web",
        Effect.zipRight(Deferred.succeed(started, undefined), Effect.never).pipe(
          Effect.onInterrupt(() =>
            Effect.sync(() => {
              interrupted = true
            }),
          ),
        ),
      )
      yield* queue.append(
        "web",
        Effect.sync(() => {
          laterRan = true
        }),
      )
      yield* Deferred.await(started)
      yield* Scope.close(scope, Exit.void)
      assert.isTrue(interrupted)
      yield* queue.append(
        "db",
        Effect.sync(() => {
          laterRan = true
        }),
      )
      yield* queue.drained
      for (let i = 0; i < 20; i++) yield* Effect.yieldNow()
      assert.isFalse(laterRan)
      assert.deepStrictEqual(logs, [])
    }).pipe(Effect.provide(layer))
  })

  it.effect("forgets a key once its queue drains, and serves it again afterwards", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const queue = yield* EventQueue.make
        const ran: Array<number> = []
        for (let round = 0; round < 3; round++) {
          for (let k = 0; k < 50; k++)
            yield* queue.append(
              `c${k}`,
              Effect.sync(() => ran.push(round)),
            )
          assert.strictEqual(yield* queue.activeKeys, 50)
          yield* queue.drained
          assert.strictEqual(yield* queue.activeKeys, 0)
        }
        assert.strictEqual(ran.length, 150)
      }),
    ),
  )

  it.live("a worker waits for its key's next task, up to idleLinger, and then ends and forgets the key", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const queue = yield* EventQueue.make
        const fibers: Array<string> = []
        const ran = (label: string) =>
          Effect.flatMap(Effect.fiberId, (id) =>
            Effect.sync(() => {
              fibers.push(`${label} ${FiberId.threadName(id)}`)
            }),
          )
        yield* queue.append("web", ran("a"))
        yield* queue.drained
        assert.strictEqual(yield* queue.activeKeys, 0, "a waiting worker is not an active key")
        yield* Effect.sleep("50 millis")
        yield* queue.append("web", ran("b"))
        yield* queue.drained
        yield* Effect.sleep(`${EventQueue.idleLinger + 200} millis`)
        yield* queue.append("web", ran("c"))
        yield* queue.drained
        const [a, b, c] = fibers.map((f) => f.split(" ")[1])
        assert.strictEqual(fibers.length, 3)
        assert.strictEqual(b, a, "the task that came 50 ms later ran in the waiting worker")
        assert.notStrictEqual(c, a, "after idleLinger the worker had ended: a new one ran the next task")
      }),
    ),
  )
})
