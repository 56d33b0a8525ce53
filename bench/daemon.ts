/**
 * The daemon a benchmark talks to: `CONTAINERD_ADDRESS` when set, else a
 * private containerd the benchmark starts (and stops) itself.
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import * as PrivateContainerd from "../src/layers/PrivateContainerd.js"

/** Runs `use` with a daemon address; a private daemon is stopped afterwards. */
export const withDaemon = async <A>(use: (address: string) => Promise<A>): Promise<A> => {
  const fromEnv = process.env.CONTAINERD_ADDRESS
  if (fromEnv !== undefined && fromEnv !== "") return use(fromEnv)
  const scope = Effect.runSync(Scope.make())
  try {
    const info = await Effect.runPromise(PrivateContainerd.start().pipe(Scope.extend(scope)))
    return await use(info.address)
  } finally {
    await Effect.runPromise(Scope.close(scope, Exit.void))
  }
}
