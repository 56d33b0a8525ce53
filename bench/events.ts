/**
 * Group "events": task events through the per-container dispatch queue to a
 * no-op Backend — 1,000 containers × 100 events appended round-robin.
 * Throughput over 10 runs (median, p90 of the runs), and the latency a queued
 * event adds (append → task start): in that burst, in rounds of one event per
 * container, and for a single event on an idle queue.
 */
import { performance } from "node:perf_hooks"
import * as Effect from "effect/Effect"
import type { EventInfo } from "../src/domain/Event.js"
import * as EventQueue from "../src/internal/eventQueue.js"
import * as Backend from "../src/services/Backend.js"
import { type Group, summarize } from "./harness.js"

const containers = 1_000
const perContainer = 100
const total = containers * perContainer
const runs = 10

const keys = Array.from({ length: containers }, (_, i) => `container-${i}`)
const infos: ReadonlyArray<EventInfo> = keys.map((containerId) => ({
  containerId,
  processId: containerId,
  pid: 1,
  exitCode: 0,
  exitedAt: undefined,
  oomKilled: false,
}))
const backend = Backend.make(() => Effect.void)

/** One burst: every event appended, then wait for the queue to drain; events/s. */
const throughput = Effect.scoped(
  Effect.gen(function* () {
    const queue = yield* EventQueue.make
    const start = performance.now()
    for (let i = 0; i < perContainer; i++) {
      for (let k = 0; k < containers; k++) {
        yield* queue.append(
          keys[k] as string,
          backend.processEvent(keys[k] as string, "exit", infos[k] as EventInfo),
        )
      }
    }
    yield* queue.drained
    return total / ((performance.now() - start) / 1000)
  }),
)

/**
 * Appends `rounds` rounds of `width` events, one per container (waiting for
 * each round to drain when `paced`); µs from append to task start per event.
 */
const latency = (rounds: number, width: number, paced: boolean) =>
  Effect.scoped(
    Effect.gen(function* () {
      const queue = yield* EventQueue.make
      const samples: number[] = []
      for (let i = 0; i < rounds; i++) {
        for (let j = 0; j < width; j++) {
          const k = (i * width + j) % containers
          const appended = performance.now()
          yield* queue.append(
            keys[k] as string,
            Effect.suspend(() => {
              samples.push((performance.now() - appended) * 1000)
              return backend.processEvent(keys[k] as string, "exit", infos[k] as EventInfo)
            }),
          )
        }
        if (paced) yield* queue.drained
      }
      yield* queue.drained
      return samples
    }),
  )

/** The "events" group: dispatch-queue throughput and added latency. */
export const events: Group = {
  name: "events",
  description: "1,000 containers × 100 task events through the per-container queue to a no-op Backend",
  run: async () => {
    await Effect.runPromise(throughput) // warm-up
    const rates: number[] = []
    for (let i = 0; i < runs; i++) rates.push(await Effect.runPromise(throughput))
    const burst: number[] = []
    for (let i = 0; i < 3; i++)
      burst.push(...(await Effect.runPromise(latency(perContainer, containers, false))))
    const rounds = await Effect.runPromise(latency(perContainer, containers, true))
    await Effect.runPromise(latency(1_000, 1, true)) // warm-up
    const single = await Effect.runPromise(latency(10_000, 1, true))
    return [
      summarize("events", "queue throughput (1,000 × 100, no-op backend)", "events/s", rates),
      summarize("events", "added latency, burst of 1,000 × 100 (append → start)", "µs", burst),
      summarize("events", "added latency, rounds of 1,000 (one per container)", "µs", rounds),
      summarize("events", "added latency, one event on an idle queue", "µs", single),
    ]
  },
}
