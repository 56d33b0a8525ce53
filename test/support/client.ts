/**
 * A `Libcontainerd` client on the suite's private daemon, with the live
 * ProcessIO, a recording Backend and a temp state dir, plus stdio helpers.
 */
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import { afterAll } from "vitest"
import * as Backend from "../../src/services/Backend.js"
import * as LibcontainerdLive from "../../src/layers/LibcontainerdLive.js"
import * as ProcessIONode from "../../src/layers/ProcessIONode.js"
import { Containerd } from "../../src/services/Containerd.js"
import type { AttachStdio } from "../../src/services/Libcontainerd.js"
import type { DirectIO } from "../../src/services/ProcessIO.js"
import * as ContainerdLive from "../../src/layers/ContainerdLive.js"
import { address, containerdLayer } from "./daemon.js"

const made: Array<string> = []
// registered when a test file imports this module: removes the file's state dirs after its tests
afterAll(() => {
  for (const dir of made.splice(0)) Fs.rmSync(dir, { recursive: true, force: true })
})

/** A temp state dir for one client, removed after the test file's tests. */
export const tempStateDir = (prefix = "libcontainerd-state-"): string => {
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), prefix))
  made.push(dir)
  return dir
}

type Tasks = Containerd["Type"]["tasks"]

/**
 * A `Containerd` over the one it is given, with some of its task calls replaced by `edit`'s (which sees the
 * whole underlying service); the other calls stay as they are.
 */
export const editTasks = (
  edit: (containerd: Containerd["Type"]) => Partial<Tasks>,
): Layer.Layer<Containerd, never, Containerd> =>
  Layer.effect(
    Containerd,
    Effect.map(Containerd, (c) => ({ ...c, tasks: { ...c.tasks, ...edit(c) } })),
  )

/** Everything a client test needs, in one layer. */
export const clientLayer = (
  namespace: string,
  stateDir: string,
  options: Partial<LibcontainerdLive.Options> & { readonly cleanNamespace?: boolean } = {},
) => {
  const { cleanNamespace = true, ...clientOptions } = options
  return LibcontainerdLive.layer({ stateDir, ...clientOptions }).pipe(
    Layer.provideMerge(
      Layer.mergeAll(ProcessIONode.layer({ drainTimeout: "500 millis" }), Backend.layerRecorder),
    ),
    Layer.provideMerge(
      cleanNamespace ? containerdLayer(namespace) : ContainerdLive.layer({ address: address(), namespace }),
    ),
    Layer.orDie,
  )
}

/** What a process wrote, complete once its stream ended. */
export interface Captured {
  readonly stdout: Deferred.Deferred<string>
  readonly stderr: Deferred.Deferred<string>
  readonly io: Deferred.Deferred<DirectIO>
}

const decoder = () => {
  const d = new TextDecoder()
  return (acc: string, chunk: Uint8Array) => acc + d.decode(chunk, { stream: true })
}

/** An attachStdio that collects stdout and stderr as text and hands out the DirectIO. */
export const capture = Effect.gen(function* () {
  const captured: Captured = {
    stdout: yield* Deferred.make<string>(),
    stderr: yield* Deferred.make<string>(),
    io: yield* Deferred.make<DirectIO>(),
  }
  const attach: AttachStdio = (io) =>
    Effect.gen(function* () {
      yield* Deferred.succeed(captured.io, io)
      yield* Effect.forkScoped(
        Stream.runFold(io.stdout, "", decoder()).pipe(
          Effect.orElseSucceed(() => "<stdout failed>"),
          Effect.flatMap((text) => Deferred.succeed(captured.stdout, text)),
        ),
      )
      if (io.stderr !== undefined) {
        yield* Effect.forkScoped(
          Stream.runFold(io.stderr, "", decoder()).pipe(
            Effect.orElseSucceed(() => "<stderr failed>"),
            Effect.flatMap((text) => Deferred.succeed(captured.stderr, text)),
          ),
        )
      } else {
        yield* Deferred.succeed(captured.stderr, "")
      }
    })
  return { captured, attach }
})

/** Open fds of this process. */
export const openFds = (): number => Fs.readdirSync("/proc/self/fd").length

/** Waits (polling the recording Backend) for the exit of a process; the init's process id is the container id. */
export const exitOf = (containerId: string, processId: string = containerId) =>
  Effect.gen(function* () {
    const recorder = yield* Backend.Recorder
    for (;;) {
      const events = yield* recorder.events
      const exit = events.find(
        (e) => e.type === "exit" && e.containerId === containerId && e.info.processId === processId,
      )
      if (exit !== undefined) return { exitStatus: exit.info.exitCode, ...exit.info }
      yield* Effect.sleep("10 millis")
    }
  }).pipe(
    Effect.timeoutFail({
      duration: "30 seconds",
      onTimeout: () => new Error(`no exit event for ${containerId}/${processId} within 30 s`),
    }),
    Effect.orDie,
  )
