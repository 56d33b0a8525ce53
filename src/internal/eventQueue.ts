/**
 * Per-key ordered dispatch (the seed's `queue.Queue`): tasks appended under
 * one key run one at a time in append order; different keys run concurrently.
 *
 * A key that has tasks gets one worker fiber, which runs them back to back
 * and ends — forgetting the key — when its queue stays empty across one
 * yield to the scheduler. Appending is
 * synchronous bookkeeping (no fiber, no Effect per task beyond the task
 * itself). A failing or defecting task is logged with its key and the worker
 * goes on with the next one. Closing the scope interrupts the workers; tasks
 * not yet started, and tasks appended afterwards, are dropped.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import type * as Scope from "effect/Scope"

/** Ordered per-key dispatch of effects. */
export interface EventQueue {
  /** Queues `task` behind the other tasks of `key`; returns at once. */
  readonly append: (key: string, task: Effect.Effect<void, unknown>) => Effect.Effect<void>
  /** `append` without the Effect wrapper, for callers already in synchronous code. */
  readonly unsafeAppend: (key: string, task: Effect.Effect<void, unknown>) => void
  /** How many keys have queued or running tasks. */
  readonly activeKeys: Effect.Effect<number>
  /** Waits until no key has queued or running tasks. */
  readonly drained: Effect.Effect<void>
}

/** A FIFO of tasks that reuses its array once drained. */
class Tasks {
  items: Array<Effect.Effect<void, unknown> | undefined> = []
  head = 0
  push(task: Effect.Effect<void, unknown>): void {
    this.items.push(task)
  }
  shift(): Effect.Effect<void, unknown> | undefined {
    const task = this.items[this.head]
    if (task === undefined) return undefined
    this.items[this.head] = undefined
    this.head++
    if (this.head === this.items.length) {
      this.items.length = 0
      this.head = 0
    } else if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head)
      this.head = 0
    }
    return task
  }
}

const linger: Effect.Effect<void> = Effect.yieldNow()

/** A queue whose workers live in the current scope. */
export const make: Effect.Effect<EventQueue, never, Scope.Scope> = Effect.gen(function* () {
  const run = yield* FiberSet.makeRuntime<never, void, never>()
  const queues = new Map<string, Tasks>()
  let idleWaiters: Array<() => void> = []
  let closed = false

  const wakeIdle = (): void => {
    if (idleWaiters.length === 0) return
    const waiters = idleWaiters
    idleWaiters = []
    for (const wake of waiters) wake()
  }

  const forget = (key: string): void => {
    queues.delete(key)
    if (queues.size === 0) wakeIdle()
  }

  // Runs before the fiber set interrupts the workers: later appends are dropped, waiters released.
  yield* Effect.addFinalizer(() =>
    Effect.sync(() => {
      closed = true
      queues.clear()
      wakeIdle()
    }),
  )

  const report = (key: string) => (cause: Cause.Cause<unknown>) =>
    Cause.isInterruptedOnly(cause)
      ? Effect.void
      : Effect.annotateLogs(Effect.logError(`an event task of ${key} failed`, cause), { key })

  const worker = (key: string, tasks: Tasks): Effect.Effect<void> => {
    const onFailure = report(key)
    let current: Effect.Effect<void, unknown> | undefined
    let lingered = false
    return Effect.whileLoop({
      // Deciding to stop and forgetting the key happen in one synchronous step,
      // so an append either sees the key (and its worker takes the task) or starts a new worker.
      // An emptied queue first yields once, so that an appender producing a burst refills it
      // instead of paying for a new worker per event.
      while: () => {
        current = tasks.shift()
        if (current !== undefined) {
          lingered = false
          return true
        }
        if (!lingered) {
          lingered = true
          return true
        }
        forget(key)
        return false
      },
      body: () => (current === undefined ? linger : Effect.catchAllCause(current, onFailure)),
      step: () => {},
    })
  }

  const unsafeAppend = (key: string, task: Effect.Effect<void, unknown>): void => {
    if (closed) return
    const tasks = queues.get(key)
    if (tasks !== undefined) {
      tasks.push(task)
      return
    }
    const fresh = new Tasks()
    fresh.push(task)
    queues.set(key, fresh)
    run(worker(key, fresh), { immediate: false })
  }

  return {
    append: (key, task) => Effect.sync(() => unsafeAppend(key, task)),
    unsafeAppend,
    activeKeys: Effect.sync(() => queues.size),
    drained: Effect.async<void>((resume) => {
      if (queues.size === 0) return resume(Effect.void)
      const wake = () => resume(Effect.void)
      idleWaiters.push(wake)
      return Effect.sync(() => {
        idleWaiters = idleWaiters.filter((w) => w !== wake)
      })
    }),
  }
})
