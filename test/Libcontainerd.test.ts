import { assert, describe, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as Spec from "../src/domain/Spec.js"
import { System } from "../src/errors/ContainerdError.js"
import * as ContainerdMemory from "../src/layers/ContainerdMemory.js"
import * as LibcontainerdLive from "../src/layers/LibcontainerdLive.js"
import * as ProcessIOMemory from "../src/layers/ProcessIOMemory.js"
import type { ProcessIO } from "../src/services/ProcessIO.js"
import * as Backend from "../src/services/Backend.js"
import type { CreateTaskInput, ProcessRef } from "../src/domain/Types.js"
import { Containerd } from "../src/services/Containerd.js"
import { type AttachStdio, Libcontainerd } from "../src/services/Libcontainerd.js"
import { editTasks, tempStateDir } from "./support/client.js"

const client = LibcontainerdLive.layer({ stateDir: tempStateDir("client-") }).pipe(
  Layer.provideMerge(Backend.layerNoop),
  Layer.provideMerge(ContainerdMemory.layerWithProcessIO()),
  Layer.orDie,
)

const spec = (id: string) =>
  Spec.defaultLinux({ id, namespace: "default", rootPath: "/rootfs", args: ["sleep", "60"] })

/** attachStdio that fails, or that blocks until the caller is interrupted (`started` completes when it runs). */
const failing: AttachStdio = () => Effect.fail(new System({ message: "attach failed" }))
const blocking =
  (started: Deferred.Deferred<void>): AttachStdio =>
  () =>
    Effect.zipRight(Deferred.succeed(started, undefined), Effect.never)

/** Every in-memory FIFO whose path contains `part`. */
const filesWith = (part: string) =>
  Effect.flatMap(ProcessIOMemory.ProcessIOMemory, (memory) =>
    Effect.map(memory.files, (files) => files.filter((f) => f.path.includes(part)).map((f) => f.path)),
  )

describe("Libcontainerd (in-memory daemon)", () => {
  it.live("an attachStdio that fails or is interrupted leaves no task, exec, FIFO or registry change", () =>
    Effect.gen(function* () {
      const lib = yield* Libcontainerd
      const containerd = yield* Containerd
      yield* lib.create("att", spec("att"))

      // start: attach fails, then is interrupted; the container stays startable each time
      const failedStart = yield* Effect.flip(lib.start("att", { attachStdio: failing }))
      assert.strictEqual(failedStart.message, "attach failed")
      const started = yield* Deferred.make<void>()
      const starting = yield* Effect.fork(
        lib.start("att", { withStdin: true, attachStdio: blocking(started) }),
      )
      yield* Deferred.await(started)
      assert.isTrue(Exit.isInterrupted(yield* Fiber.interrupt(starting)))
      assert.deepStrictEqual(yield* filesWith("/att/"), [], "no FIFO of the init left")
      assert.strictEqual((yield* Effect.flip(containerd.tasks.get({ containerId: "att" })))._tag, "NotFound")
      yield* lib.start("att")

      // exec: the same, and the exec id is free again each time
      const process = Spec.processFrom(spec("att"), { args: ["sleep", "60"] })
      const failedExec = yield* Effect.flip(lib.exec("att", "e", process, { attachStdio: failing }))
      assert.strictEqual(failedExec.message, "attach failed")
      const attached = yield* Deferred.make<void>()
      const execing = yield* Effect.fork(
        lib.exec("att", "e", process, { withStdin: true, attachStdio: blocking(attached) }),
      )
      yield* Deferred.await(attached)
      assert.isTrue(Exit.isInterrupted(yield* Fiber.interrupt(execing)))
      assert.deepStrictEqual(yield* filesWith("/att/e-"), [], "no FIFO of the exec left")
      const exec = yield* Effect.flip(containerd.tasks.get({ containerId: "att", execId: "e" }))
      assert.strictEqual(exec._tag, "NotFound")
      yield* lib.exec("att", "e", process)

      yield* lib.signalProcess("att", "init", "SIGKILL")
      yield* containerd.tasks.wait({ containerId: "att" })
      yield* lib.deleteTask("att")
      yield* lib.delete("att")
      assert.deepStrictEqual(yield* filesWith("/att/"), [])
    }).pipe(Effect.provide(client)),
  )

  it.live(
    "an exec's release waits for a reader attachStdio forked at most readersGrace, then interrupts it",
    () =>
      Effect.gen(function* () {
        const lib = yield* Libcontainerd
        yield* lib.create("grace", spec("grace"))
        yield* lib.start("grace")
        const interrupted = yield* Deferred.make<number>()
        const attach: AttachStdio = () =>
          Effect.asVoid(
            Effect.forkScoped(
              Effect.onInterrupt(Effect.never, () => Deferred.succeed(interrupted, Date.now())),
            ),
          )
        const started = Date.now()
        yield* lib.exec("grace", "e", Spec.processFrom(spec("grace"), { args: ["true"] }), {
          attachStdio: attach,
        })
        const at = yield* Deferred.await(interrupted).pipe(Effect.timeout("10 seconds"), Effect.orDie)
        assert.isAtLeast(at - started, 1900, "the reader had readersGrace (2 s) before it was interrupted")
        // the release ran to its end: the exec id is free again
        yield* lib.exec("grace", "e", Spec.processFrom(spec("grace"), { args: ["sleep", "60"] })).pipe(
          Effect.retry({
            while: (e) => e._tag === "Conflict",
            times: 100,
            schedule: Schedule.spaced("10 millis"),
          }),
        )
        yield* lib.signalProcess("grace", "init", "SIGKILL")
        yield* Effect.flatMap(Containerd, (containerd) => containerd.tasks.wait({ containerId: "grace" }))
        yield* lib.deleteTask("grace")
        yield* lib.delete("grace")
      }).pipe(Effect.provide(client)),
  )

  describe("the task's runc options", () => {
    /** The in-memory daemon with every Tasks.Create request recorded, under a client made by `clientLayer`. */
    const recording = <E>(
      clientLayer: Layer.Layer<
        Libcontainerd,
        E,
        Containerd | ProcessIOMemory.ProcessIOMemory | Backend.Backend | ProcessIO
      >,
    ) => {
      const requests: Array<CreateTaskInput> = []
      const recorder = editTasks((c) => ({
        create: (input: CreateTaskInput) =>
          Effect.zipRight(
            Effect.sync(() => requests.push(input)),
            c.tasks.create(input),
          ),
      }))
      const layer = clientLayer.pipe(
        Layer.provideMerge(Backend.layerNoop),
        Layer.provideMerge(recorder.pipe(Layer.provideMerge(ContainerdMemory.layerWithProcessIO()))),
        Layer.orDie,
      )
      return { requests, layer }
    }

    /** `spec(id)` in a new user namespace whose uid 0 and gid 0 map to these host ids. */
    const userNsSpec = (id: string, hostUid: number, hostGid: number): Spec.Spec => {
      const base = spec(id)
      return {
        ...base,
        linux: {
          ...base.linux,
          namespaces: [...(base.linux?.namespaces ?? []), { type: "user" }],
          uidMappings: [{ containerID: 0, hostID: hostUid, size: 65536 }],
          gidMappings: [{ containerID: 0, hostID: hostGid, size: 65536 }],
        },
      }
    }

    /** Creates and starts `id`, then stops and deletes it; the options its Tasks.Create carried. */
    const optionsOf = (requests: ReadonlyArray<CreateTaskInput>, id: string, s: Spec.Spec) =>
      Effect.gen(function* () {
        const lib = yield* Libcontainerd
        const containerd = yield* Containerd
        yield* lib.create(id, s)
        yield* lib.start(id)
        yield* lib.signalProcess(id, "init", "SIGKILL")
        yield* containerd.tasks.wait({ containerId: id })
        yield* lib.deleteTask(id)
        yield* lib.delete(id)
        const request = requests.find((r) => r.containerId === id)
        assert.isDefined(request, `a Tasks.Create for ${id}`)
        return request?.options
      })

    it.live(
      "noPivotRoot is sent as NoPivotRoot; IoUid/IoGid are the host ids of the user namespace's 0",
      () => {
        const { requests, layer } = recording(
          LibcontainerdLive.layer({ stateDir: tempStateDir("opts-"), noPivotRoot: true }),
        )
        return Effect.gen(function* () {
          assert.deepStrictEqual(yield* optionsOf(requests, "userns", userNsSpec("userns", 100000, 200000)), {
            ioUid: 100000,
            ioGid: 200000,
            noPivotRoot: true,
          })
          assert.deepStrictEqual(yield* optionsOf(requests, "plain", spec("plain")), { noPivotRoot: true })
        }).pipe(Effect.provide(layer))
      },
    )

    it.live("without noPivotRoot and without a user namespace no options are sent", () => {
      const { requests, layer } = recording(LibcontainerdLive.layer({ stateDir: tempStateDir("opts-") }))
      return Effect.gen(function* () {
        assert.isUndefined(yield* optionsOf(requests, "plain", spec("plain")))
      }).pipe(Effect.provide(layer))
    })

    it.live(
      "layerConfig: DOCKER_RAMDISK (any value) turns NoPivotRoot on, as in the seed; unset leaves it off",
      () =>
        Effect.gen(function* () {
          for (const [env, expected] of [
            [{ DOCKER_RAMDISK: "1" }, { noPivotRoot: true }],
            [{}, undefined],
          ] as const) {
            const withEnv = Layer.setConfigProvider(
              ConfigProvider.fromMap(
                new Map(Object.entries({ LIBCONTAINERD_STATE_DIR: tempStateDir("ramdisk-"), ...env })),
              ),
            )
            const { requests, layer } = recording(LibcontainerdLive.layerConfig.pipe(Layer.provide(withEnv)))
            const options = yield* optionsOf(requests, "ramdisk", spec("ramdisk")).pipe(Effect.provide(layer))
            assert.deepStrictEqual(options, expected, JSON.stringify(env))
          }
        }),
    )
  })

  it.live(
    "exec starts are serialized per container: one Tasks.Start of an exec in flight per container, containers in parallel",
    () => {
      // every exec start takes 20 ms in flight; the wrapper counts how many overlap, per container and in all
      const inFlight = new Map<string, number>()
      let most = 0
      let mostPerContainer = 0
      let total = 0
      const slowStarts = editTasks((c) => ({
        start: (ref: ProcessRef) =>
          ref.execId === undefined || ref.execId === ""
            ? c.tasks.start(ref)
            : Effect.acquireUseRelease(
                Effect.sync(() => {
                  const now = (inFlight.get(ref.containerId) ?? 0) + 1
                  inFlight.set(ref.containerId, now)
                  total += 1
                  mostPerContainer = Math.max(mostPerContainer, now)
                  most = Math.max(most, total)
                }),
                () => Effect.zipRight(Effect.sleep("20 millis"), c.tasks.start(ref)),
                () =>
                  Effect.sync(() => {
                    inFlight.set(ref.containerId, (inFlight.get(ref.containerId) ?? 1) - 1)
                    total -= 1
                  }),
              ),
      }))
      const layer = LibcontainerdLive.layer({ stateDir: tempStateDir("serial-") }).pipe(
        Layer.provideMerge(Backend.layerNoop),
        Layer.provideMerge(slowStarts.pipe(Layer.provideMerge(ContainerdMemory.layerWithProcessIO()))),
        Layer.orDie,
      )
      return Effect.gen(function* () {
        const lib = yield* Libcontainerd
        const containerd = yield* Containerd
        const ids = ["ser-a", "ser-b"]
        for (const id of ids) {
          yield* lib.create(id, spec(id))
          yield* lib.start(id)
        }
        const process = Spec.processFrom(spec("ser-a"), { args: ["sleep", "60"] })
        const pids = yield* Effect.forEach(
          ids.flatMap((id) => [1, 2, 3, 4].map((n) => [id, `e${n}`] as const)),
          ([id, execId]) => lib.exec(id, execId, process),
          { concurrency: "unbounded" },
        )
        assert.strictEqual(new Set(pids).size, 8, "every exec started")
        assert.strictEqual(mostPerContainer, 1, "one exec start in flight per container")
        assert.strictEqual(most, 2, "the two containers' exec starts ran side by side")
        for (const id of ids) {
          yield* lib.signalProcess(id, "init", "SIGKILL")
          yield* containerd.tasks.wait({ containerId: id })
          yield* lib.deleteTask(id)
          yield* lib.delete(id)
        }
      }).pipe(Effect.provide(layer))
    },
  )
})
