/**
 * Runs one job on a real containerd and prints its result:
 *
 * ```sh
 * node --import tsx examples/job-runner/main.ts                 # the default job
 * node --import tsx examples/job-runner/main.ts sh -c 'sleep 60' # any command; killed after 5 s
 * ```
 *
 * As root. Uses the daemon at `CONTAINERD_ADDRESS` when that is set, and
 * otherwise starts a private containerd for the run. The job runs in a busybox
 * root filesystem made from the host's `/bin/busybox` (package busybox-static).
 */
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Effect, Layer } from "effect"
import {
  Backend,
  Busybox,
  ContainerdLive,
  LibcontainerdLive,
  PrivateContainerd,
  ProcessIONode,
} from "effect-containerd"
import * as JobRunner from "./JobRunner.js"

const namespace = "job-runner"

const defaultArgs = [
  "sh",
  "-c",
  'echo "hello from $(hostname), GREETING=$GREETING"; echo "to stderr" >&2; exit 3',
]

const main = Effect.gen(function* () {
  const work = yield* Effect.acquireRelease(
    Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "job-runner-"))),
    (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true })),
  )
  const rootfsPath = yield* Busybox.writeRootfs(Path.join(work, "rootfs"))
  const address = process.env.CONTAINERD_ADDRESS
  const containerd =
    address === undefined || address === ""
      ? PrivateContainerd.layer({ namespace })
      : ContainerdLive.layer({ address, namespace })

  const RunnerLive = JobRunner.layer({ rootfsPath, namespace }).pipe(
    Layer.provide(LibcontainerdLive.layer({ stateDir: Path.join(work, "state"), namespace })),
    Layer.provide(Layer.mergeAll(ProcessIONode.layer(), Backend.layerNoop)),
    Layer.provide(containerd),
  )

  const args = process.argv.length > 2 ? process.argv.slice(2) : defaultArgs
  const result = yield* Effect.flatMap(JobRunner.JobRunner, (runner) =>
    runner.run({ id: `job-${process.pid}`, args, env: { GREETING: "hi" }, timeout: "5 seconds" }),
  ).pipe(Effect.provide(RunnerLive))
  yield* Effect.sync(() => console.log(result))
}).pipe(Effect.scoped)

Effect.runPromiseExit(main).then((exit) => {
  if (exit._tag === "Failure") {
    console.error(exit.cause)
    process.exitCode = 1
  }
})
