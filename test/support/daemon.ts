/**
 * What integration tests need: a `Containerd` bound to the suite's private
 * daemon in a namespace of their own, the shared busybox rootfs, and a
 * clean-up that kills and deletes whatever a test left in its namespace.
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { inject } from "vitest"
import * as Spec from "../../src/domain/Spec.js"
import * as ContainerdLive from "../../src/layers/ContainerdLive.js"
import * as PrivateContainerd from "../../src/layers/PrivateContainerd.js"
import type { Containerd } from "../../src/services/Containerd.js"

/** The private daemon's socket. */
export const address = (): string => inject("containerdAddress")

/** The shared busybox rootfs. */
export const rootfsPath = (): string => inject("rootfsPath")

/** A fresh namespace name for one test file or test. */
export const freshNamespace = (prefix: string): string =>
  `${prefix}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`

/** Kills and deletes every task and container in the current namespace. */
export const cleanNamespace = PrivateContainerd.emptyNamespace

/** `Containerd` on the suite's daemon in `namespace`; the namespace is emptied when the layer is released. */
export const containerdLayer = (namespace: string): Layer.Layer<Containerd, never> =>
  Layer.scopedDiscard(Effect.addFinalizer(() => Effect.ignore(cleanNamespace))).pipe(
    Layer.provideMerge(ContainerdLive.layer({ address: address(), namespace })),
    Layer.orDie,
  )

/** The default Linux spec over the shared rootfs. */
export const busyboxSpec = (id: string, namespace: string, args: ReadonlyArray<string>): Spec.Spec =>
  Spec.defaultLinux({ id, namespace, rootPath: rootfsPath(), args })
