/**
 * A result set once and awaited by plain callbacks: what the ProcessIO layers,
 * the in-memory containerd and the client use instead of a `Deferred` where
 * they need several per process. A `Deferred` is a large object (each one
 * copies Effect's commit prototype): making one costs about 3 µs and
 * garbage.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"

/** A result set once; awaiting it costs no fiber. */
export class Signal<A = void, E = never> {
  private result: Exit.Exit<A, E> | undefined
  private callbacks: Array<(result: Exit.Exit<A, E>) => void> = []

  /** Whether the result is set. */
  get isDone(): boolean {
    return this.result !== undefined
  }

  /** Sets the result and calls every waiting callback; later calls do nothing. */
  complete(result: Exit.Exit<A, E>): void {
    if (this.result !== undefined) return
    this.result = result
    const callbacks = this.callbacks
    this.callbacks = []
    for (const f of callbacks) f(result)
  }

  /** Completes with success. */
  succeed(value: A): void {
    this.complete(Exit.succeed(value))
  }

  /** Calls `f` with the result once it is set (now, when it is); returns what removes the callback. */
  on(f: (result: Exit.Exit<A, E>) => void): () => void {
    if (this.result !== undefined) {
      f(this.result)
      return () => {}
    }
    this.callbacks.push(f)
    return () => {
      this.callbacks = this.callbacks.filter((g) => g !== f)
    }
  }

  /** Waits for the result; interrupting the wait removes its callback. */
  readonly await: Effect.Effect<A, E> = Effect.suspend(() =>
    this.result !== undefined
      ? this.result
      : Effect.async<A, E>((resume) => {
          const off = this.on(resume)
          return Effect.sync(off)
        }),
  )
}
