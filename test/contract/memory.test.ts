/**
 * The `Libcontainerd` contract against the in-memory layers: the client
 * (`LibcontainerdLive`) over `ContainerdMemory` and `ProcessIOMemory`, on the
 * live clock. Commands the in-memory containerd has no built-in for are
 * scripted from their `Behaviour`.
 */
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { afterAll } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Spec from "../../src/domain/Spec.js"
import * as ContainerdMemory from "../../src/layers/ContainerdMemory.js"
import * as LibcontainerdLive from "../../src/layers/LibcontainerdLive.js"
import * as Backend from "../../src/services/Backend.js"
import { type Behaviour, contract } from "./contract.js"

// bundle dirs are plain dirs here (no FIFOs): on tmpfs their mkdir/rm take microseconds, not a disk's milliseconds;
// the cases' scratch dirs (a checkpoint image of one small file) go there too
const scratchDir = Fs.existsSync("/dev/shm") ? "/dev/shm" : Os.tmpdir()
const stateDir = Fs.mkdtempSync(Path.join(scratchDir, "contract-memory-"))
afterAll(() => Fs.rmSync(stateDir, { recursive: true, force: true }))

/**
 * The script playing a behaviour. A delay is at most 20 ms: a real one also
 * covers the process's own start-up (fork, exec, a shell), an in-memory one
 * only has to order the output after the test's next call. A process that
 * prints its terminal's size is woken by the resize instead: its output
 * follows the test's `resizeTerminal` by construction, and the delay only
 * bounds the wait when no resize comes (it then prints "0 0").
 */
const scriptOf = (behaviour: Behaviour): ContainerdMemory.Script => ({
  ...(behaviour.stdout === undefined ? {} : { stdout: behaviour.stdout }),
  ...(behaviour.stderr === undefined ? {} : { stderr: behaviour.stderr }),
  ...(behaviour.exitCode === undefined ? {} : { exitCode: behaviour.exitCode }),
  ...(behaviour.delayMillis === undefined
    ? {}
    : { delay: Duration.millis(Math.min(behaviour.delayMillis, 20)) }),
  ...(behaviour.printsTtySize === true
    ? {
        stdout: (p: ContainerdMemory.ProcessView) => `${p.ptySize?.height ?? 0} ${p.ptySize?.width ?? 0}\n`,
        wakesOnResize: true,
      }
    : {}),
  ...(behaviour.oom === true ? { oom: true } : {}),
  ...(behaviour.cannotStart === true
    ? { startError: "OCI runtime start failed: exec: no such file or directory: unknown" }
    : {}),
})

contract("in-memory layers", {
  layer: LibcontainerdLive.layer({ stateDir }).pipe(
    Layer.provideMerge(
      Layer.mergeAll(
        ContainerdMemory.layerWithProcessIO({ processIO: { drainTimeout: "500 millis" } }),
        Backend.layerRecorder,
      ),
    ),
    Layer.orDie,
  ),
  stateDir,
  scratchDir,
  spec: (id, args) => Spec.defaultLinux({ id, namespace: "default", rootPath: "/contract/rootfs", args }),
  prepare: (containerId, processId, { args, behaves }) =>
    behaves === undefined
      ? Effect.void
      : Effect.flatMap(ContainerdMemory.ContainerdMemory, (memory) =>
          memory.script(
            { containerId, execId: processId === "init" ? "" : processId, args },
            scriptOf(behaves),
          ),
        ),
  // the in-memory containerd models neither CRIU nor a container's view of its cgroup
  capabilities: { criu: false, cgroupFiles: false },
  // the release after an exit is in-memory calls, run as microtasks: it is over before any timer can fire
  releaseWithin: "1 millis",
})
