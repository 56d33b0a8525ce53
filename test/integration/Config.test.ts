/**
 * The layers configured from the environment, and the private daemon's
 * refusal to start without its binaries.
 */
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as ContainerdLive from "../../src/layers/ContainerdLive.js"
import * as LibcontainerdLive from "../../src/layers/LibcontainerdLive.js"
import * as PrivateContainerd from "../../src/layers/PrivateContainerd.js"
import * as ProcessIONode from "../../src/layers/ProcessIONode.js"
import * as Backend from "../../src/services/Backend.js"
import { Containerd } from "../../src/services/Containerd.js"
import { Libcontainerd } from "../../src/services/Libcontainerd.js"
import { address, busyboxSpec, freshNamespace } from "../support/daemon.js"

const withEnv = (env: Record<string, string>) =>
  Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))

describe("configuration from the environment", () => {
  it.live("ContainerdLive.layerConfig reads CONTAINERD_ADDRESS and CONTAINERD_NAMESPACE", () =>
    Effect.gen(function* () {
      const namespace = freshNamespace("config")
      const containerd = yield* Containerd.pipe(
        Effect.provide(
          ContainerdLive.layerConfig.pipe(
            Layer.provide(withEnv({ CONTAINERD_ADDRESS: address(), CONTAINERD_NAMESPACE: namespace })),
          ),
        ),
      )
      assert.strictEqual(containerd.namespace, namespace)
    }),
  )

  it.live("ContainerdLive.layerConfig defaults to the system socket and the default namespace", () =>
    Effect.gen(function* () {
      const result = yield* Effect.either(
        Effect.map(Containerd, (c) => c.namespace).pipe(
          Effect.provide(ContainerdLive.layerConfig.pipe(Layer.provide(withEnv({})))),
        ),
      )
      if (Fs.existsSync(ContainerdLive.defaultAddress)) {
        // a system containerd is there: the layer uses it, in "default"
        assert.deepStrictEqual(result, Either.right("default"))
      } else {
        assert.isTrue(Either.isLeft(result))
        if (Either.isLeft(result)) {
          assert.strictEqual(result.left._tag, "System")
          assert.include(result.left.message, ContainerdLive.defaultAddress)
        }
      }
    }),
  )

  it.live(
    "LibcontainerdLive.layerConfig reads LIBCONTAINERD_STATE_DIR, LIBCONTAINERD_NOCLEAN and the namespace",
    () =>
      Effect.gen(function* () {
        const namespace = freshNamespace("libconfig")
        const stateDir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "libconfig-"))
        const layer = LibcontainerdLive.layerConfig.pipe(
          Layer.provide(
            withEnv({
              LIBCONTAINERD_STATE_DIR: stateDir,
              LIBCONTAINERD_NOCLEAN: "1",
              CONTAINERD_NAMESPACE: namespace,
            }),
          ),
          Layer.provide(Layer.mergeAll(ProcessIONode.layer(), Backend.layerNoop)),
          Layer.provideMerge(ContainerdLive.layer({ address: address(), namespace: "default" })),
        )
        yield* Effect.gen(function* () {
          const client = yield* Libcontainerd
          yield* client.create("configured", busyboxSpec("configured", namespace, ["true"]))
          const c = yield* Containerd
          const inNamespace = yield* Containerd.withNamespace(namespace)(c.containers.get("configured"))
          assert.strictEqual(inNamespace.id, "configured", "created in CONTAINERD_NAMESPACE")
          yield* client.delete("configured")
          assert.isTrue(Fs.existsSync(Path.join(stateDir, "configured")), "noClean kept the bundle dir")
        }).pipe(Effect.provide(layer))
        Fs.rmSync(stateDir, { recursive: true, force: true })
      }),
  )

  it.live("LibcontainerdLive.layerConfig without a state dir is InvalidParameter naming the variable", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(
        Effect.asVoid(Libcontainerd).pipe(
          Effect.provide(
            LibcontainerdLive.layerConfig.pipe(
              Layer.provide(withEnv({})),
              Layer.provide(Layer.mergeAll(ProcessIONode.layer(), Backend.layerNoop)),
              Layer.provide(ContainerdLive.layer({ address: address() })),
            ),
          ),
        ),
      )
      assert.strictEqual(error._tag, "InvalidParameter")
      assert.include(error.message, "LIBCONTAINERD_STATE_DIR")
    }),
  )

  it.live("a private containerd without containerd or runc on PATH fails with what to install", () =>
    Effect.gen(function* () {
      const saved = process.env.PATH
      const empty = Fs.mkdtempSync(Path.join(Os.tmpdir(), "empty-path-"))
      process.env.PATH = empty
      const error = yield* Effect.flip(Effect.scoped(PrivateContainerd.start())).pipe(
        Effect.ensuring(
          Effect.sync(() => {
            process.env.PATH = saved
            Fs.rmSync(empty, { recursive: true, force: true })
          }),
        ),
      )
      assert.strictEqual(error._tag, "System")
      assert.include(error.message, "containerd and runc not found")
      assert.include(error.message, "apt-get install -y containerd runc")
    }),
  )

  it.live(
    "a private containerd's release removes runc's empty state dir of each namespace it ran tasks in",
    () =>
      Effect.gen(function* () {
        const namespace = freshNamespace("runcdir")
        const runcDir = Path.join("/run/containerd/runc", namespace)
        const stateDir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "runcdir-"))
        yield* Effect.scoped(
          Effect.gen(function* () {
            const info = yield* PrivateContainerd.start()
            yield* Effect.gen(function* () {
              const client = yield* Libcontainerd
              yield* client.create("ran", busyboxSpec("ran", namespace, ["true"]))
              yield* client.start("ran")
              const c = yield* Containerd
              yield* Containerd.withNamespace(namespace)(c.tasks.wait({ containerId: "ran" }))
              yield* client.deleteTask("ran")
              yield* client.delete("ran")
            }).pipe(
              Effect.provide(
                LibcontainerdLive.layer({ stateDir, namespace }).pipe(
                  Layer.provideMerge(Layer.mergeAll(ProcessIONode.layer(), Backend.layerNoop)),
                  Layer.provideMerge(ContainerdLive.layer({ address: info.address, namespace })),
                ),
              ),
            )
            assert.isTrue(Fs.existsSync(runcDir), "runc made a state dir for the namespace")
          }),
        ).pipe(Effect.ensuring(Effect.sync(() => Fs.rmSync(stateDir, { recursive: true, force: true }))))
        assert.isFalse(Fs.existsSync(runcDir), "the empty dir went with the daemon")
      }),
  )
})
