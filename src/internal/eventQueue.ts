/**
 * Per-key ordered dispatch (the seed's `queue.Queue`): tasks appended under
 * one key run one at a time in append order; different keys run concurrently.
 *
 * A key that has tasks gets one worker fiber, which runs them back to back.
 * Once its queue is empty the worker waits for the key's next task, up to
 * `idleLinger`, and then ends — forgetting the key — in the same synchronous
 * step that finds the queue still empty: an append either finds the key (and
 * wakes or feeds its worker) or starts a new worker. Events of one container
 * come in runs (a task's create and start, a pause and its resume, an exec's
 * events), so a waiting worker saves a fiber per event. Appending is
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
  /** How many keys have queued or running tasks (a worker waiting for its key's next task does not count). */
  readonly activeKeys: Effect.Effect<number>
  /** Waits until no key has queued or running tasks. */
  readonly drained: Effect.Effect<void>
}

/** How long a worker whose queue ran empty waits for its key's next task before it ends. */
export const idleLinger = 1000

/** A FIFO of tasks that reuses its array once drained, and the state of the key's worker. */
class Tasks {
  items: Array<Effect.Effect<void, unknown> | undefined> = []
  head = 0
  /** Whether the queue is empty and no task runs (the worker waits, or is about to). */
  idle = false
  /** Set while the worker waits: hands it the next task at once. */
  wake: (() => void) | undefined = undefined
  /** Set when the worker waited `idleLinger` without a task: it ends unless a task came meanwhile. */
  expired = false
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

/** Waits for the key's next task, up to `idleLinger` (then marks the queue expired). */
const awaitTask = (tasks: Tasks): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    // a task may have come while the worker went from finding its queue empty to here
    if (!tasks.idle) return resume(Effect.void)
    const timer = setTimeout(() => {
      tasks.wake = undefined
      tasks.expired = true
      resume(Effect.void)
    }, idleLinger)
    // a waiting worker does not keep the process alive
    timer.unref()
    tasks.wake = () => {
      tasks.wake = undefined
      clearTimeout(timer)
      resume(Effect.void)
    }
    // no canceler (which would cost an interruption handler per wait): a worker is interrupted only when the
    // queue's scope closes; its timer then fires within idleLinger and resumes nothing (an async resumes once)
  })

/** A queue whose workers live in the current scope. */
export const make: Effect.Effect<EventQueue, never, Scope.Scope> = Effect.gen(function* () {
  const run = yield* FiberSet.makeRuntime<never, void, never>()
  const queues = new Map<string, Tasks>()
  // keys with queued or running tasks
  let busy = 0
  let idleWaiters: Array<() => void> = []
  let closed = false

  const wakeIdle = (): void => {
    if (idleWaiters.length === 0) return
    const waiters = idleWaiters
    idleWaiters = []
    for (const wake of waiters) wake()
  }

  // Runs before the fiber set interrupts the workers: later appends are dropped, waiters released.
  yield* Effect.addFinalizer(() =>
    Effect.sync(() => {
      closed = true
      queues.clear()
      busy = 0
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
    return Effect.whileLoop({
      // Deciding to stop and forgetting the key happen in one synchronous step,
      // so an append either sees the key (and its worker takes the task) or starts a new worker.
      while: () => {
        current = tasks.shift()
        if (current !== undefined) {
          tasks.expired = false
          return true
        }
        if (!tasks.idle) {
          tasks.idle = true
          if (--busy === 0) wakeIdle()
        }
        if (!tasks.expired) return true
        queues.delete(key)
        return false
      },
      body: () => (current === undefined ? awaitTask(tasks) : Effect.catchAllCause(current, onFailure)),
      step: () => {},
    })
  }

  const unsafeAppend = (key: string, task: Effect.Effect<void, unknown>): void => {
    if (closed) return
    const tasks = queues.get(key)
    if (tasks !== undefined) {
      tasks.push(task)
      if (tasks.idle) {
        tasks.idle = false
        busy++
        tasks.wake?.()
      }
      return
    }
    const fresh = new Tasks()
    fresh.push(task)
    queues.set(key, fresh)
    busy++
    run(worker(key, fresh), { immediate: false })
  }

  return {
    append: (key, task) => Effect.sync(() => unsafeAppend(key, task)),
    unsafeAppend,
    activeKeys: Effect.sync(() => busy),
    drained: Effect.async<void>((resume) => {
      if (busy === 0) return resume(Effect.void)
      const wake = () => resume(Effect.void)
      idleWaiters.push(wake)
      return Effect.sync(() => {
        idleWaiters = idleWaiters.filter((w) => w !== wake)
      })
    }),
  }
})
