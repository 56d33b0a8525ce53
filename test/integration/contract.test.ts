/**
 * The `Libcontainerd` contract against the suite's real containerd: the
 * client over `ContainerdLive` and `ProcessIONode` in a namespace of its own,
 * busybox containers. The commands' args do what the contract says; nothing
 * is scripted.
 */
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import { afterAll } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { contract } from "../contract/contract.js"
import { clientLayer, tempStateDir } from "../support/client.js"
import { busyboxSpec, freshNamespace } from "../support/daemon.js"

const namespace = freshNamespace("contract")
const stateDir = tempStateDir()
afterAll(() => Fs.rmSync(stateDir, { recursive: true, force: true }))

/** Whether CRIU can run on this kernel (`criu check`). */
const criuWorks = (() => {
  try {
    return ChildProcess.spawnSync("criu", ["check"], { stdio: "ignore", timeout: 30_000 }).status === 0
  } catch {
    return false
  }
})()

contract("real containerd", {
  layer: clientLayer(namespace, stateDir),
  stateDir,
  spec: (id, args) => busyboxSpec(id, namespace, args),
  prepare: () => Effect.void,
  capabilities: { criu: criuWorks, cgroupFiles: true },
  // a DeleteProcess round trip, the FIFOs' close and unlink: a few milliseconds, bounded with a wide margin
  releaseWithin: "50 millis",
})
