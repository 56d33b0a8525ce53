/**
 * No exit is lost (invariant 4): containerd is stopped while a container
 * exits and started again with the same root; the Backend receives that exit
 * exactly once with its real code — after an outage longer than the shim's
 * retry window (the exit event is gone for good, reconciliation finds it) and
 * after a short one (the shim's retry may deliver it too).
 */
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import * as ContainerdLive from "../../src/layers/ContainerdLive.js"
import * as LibcontainerdLive from "../../src/layers/LibcontainerdLive.js"
import * as PrivateContainerd from "../../src/layers/PrivateContainerd.js"
import * as ProcessIONode from "../../src/layers/ProcessIONode.js"
import * as Backend from "../../src/services/Backend.js"
import { Libcontainerd } from "../../src/services/Libcontainerd.js"
import { busyboxSpec, cleanNamespace, freshNamespace } from "../support/daemon.js"
import { exitOf, tempStateDir } from "../support/client.js"

const outage = (downFor: Duration.DurationInput) =>
  Effect.gen(function* () {
    const namespace = freshNamespace("restart")
    const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "restart-daemon-"))
    const stateDir = tempStateDir()
    const first = yield* Scope.make()
    const info = yield* PrivateContainerd.start({ dir, removeDir: false }).pipe(Scope.extend(first))

    const clientScope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(
      LibcontainerdLive.layer({ stateDir }).pipe(
        Layer.provideMerge(
          Layer.mergeAll(ProcessIONode.layer({ drainTimeout: "300 millis" }), Backend.layerRecorder),
        ),
        Layer.provideMerge(ContainerdLive.layer({ address: info.address, namespace })),
      ),
      clientScope,
    )
    const second = yield* Scope.make()
    yield* Effect.gen(function* () {
      const client = yield* Libcontainerd
      yield* client.create("exits", busyboxSpec("exits", namespace, ["sh", "-c", "sleep 2; exit 7"]))
      yield* client.start("exits")
      // containerd goes away; the shim and the container do not
      yield* Scope.close(first, Exit.void)
      yield* Effect.sleep(downFor)
      yield* PrivateContainerd.start({ dir, removeDir: true }).pipe(Scope.extend(second))
      const exit = yield* exitOf("exits")
      assert.strictEqual(exit.exitCode, 7)
      // anything the shim may still publish has had time to arrive
      yield* Effect.sleep("4 seconds")
      const recorder = yield* Backend.Recorder
      const exits = (yield* recorder.events).filter((e) => e.type === "exit" && e.containerId === "exits")
      assert.strictEqual(exits.length, 1, "exactly one exit")
      const deleted = yield* client.deleteTask("exits")
      assert.strictEqual(deleted.exitCode, 7)
      yield* client.delete("exits")
    }).pipe(
      Effect.ensuring(Effect.ignore(cleanNamespace)),
      Effect.provide(context),
      Effect.ensuring(Scope.close(clientScope, Exit.void)),
      Effect.ensuring(Scope.close(second, Exit.void)),
      Effect.ensuring(Scope.close(first, Exit.void)),
      Effect.ensuring(Effect.sync(() => Fs.rmSync(stateDir, { recursive: true, force: true }))),
    )
  })

describe("containerd restarts (real daemon of its own)", () => {
  it.live(
    "an exit during a 25 s outage (beyond the shim's retries) reaches the Backend exactly once",
    () => outage("25 seconds"),
    120_000,
  )

  it.live("an exit during a 3 s outage reaches the Backend exactly once", () => outage("3 seconds"), 120_000)
})
