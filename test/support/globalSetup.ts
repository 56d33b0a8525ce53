/**
 * Starts one private containerd for the integration tests (the product's own
 * `PrivateContainerd` layer) and a busybox rootfs, and stops both afterwards.
 * A daemon that cannot start fails the run; it is never skipped.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import type { TestProject } from "vitest/node"
import * as PrivateContainerd from "../../src/layers/PrivateContainerd.js"
import * as Busybox from "../../src/testing/Busybox.js"

declare module "vitest" {
  export interface ProvidedContext {
    containerdAddress: string
    containerdState: string
    containerdDir: string
    rootfsPath: string
  }
}

export default async function setup(project: TestProject) {
  const scope = Effect.runSync(Scope.make())
  const info = await Effect.runPromise(
    Effect.gen(function* () {
      const context = yield* Layer.buildWithScope(PrivateContainerd.layer({ namespace: "default" }), scope)
      const rootfs = yield* Busybox.rootfs().pipe(Scope.extend(scope))
      return { ...Context.get(context, PrivateContainerd.PrivateContainerd), rootfs }
    }),
  ).catch(async (error) => {
    await Effect.runPromise(Scope.close(scope, Exit.void))
    throw error
  })
  project.provide("containerdAddress", info.address)
  project.provide("containerdState", info.state)
  project.provide("containerdDir", info.dir)
  project.provide("rootfsPath", info.rootfs)
  return async () => {
    await Effect.runPromise(Scope.close(scope, Exit.void))
  }
}
