/**
 * Invariant 1: interrupting (or failing) `create`, `start` or `exec` at any
 * RPC leaves nothing behind — no container, task or process in containerd,
 * no FIFO, no open fd, no registry change.
 *
 * A wrapper around the real `Containerd` counts the calls the client makes
 * and, at the chosen call, fails it, interrupts before it, or lets it reach
 * the daemon and interrupts right after.
 */
import * as Fs from "node:fs"
import * as Path from "node:path"
import { assert, describe, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Spec from "../../src/domain/Spec.js"
import { System } from "../../src/errors/ContainerdError.js"
import * as LibcontainerdLive from "../../src/layers/LibcontainerdLive.js"
import * as ProcessIONode from "../../src/layers/ProcessIONode.js"
import * as Backend from "../../src/services/Backend.js"
import { Containerd } from "../../src/services/Containerd.js"
import { Libcontainerd } from "../../src/services/Libcontainerd.js"
import { busyboxSpec, containerdLayer, freshNamespace } from "../support/daemon.js"
import { openFds, tempStateDir } from "../support/client.js"

type Mode = "fail" | "interrupt-before" | "interrupt-after"

interface Injector {
  target: number
  mode: Mode
  count: number
  calls: Array<string>
}

const injector: Injector = { target: -1, mode: "fail", count: 0, calls: [] }

const counted = new Set(["containers.create", "tasks.create", "tasks.start", "tasks.exec"])

const wrapGroup = <G extends object>(group: string, methods: G): G => {
  const out: Record<string, unknown> = {}
  for (const [name, method] of Object.entries(methods)) {
    if (typeof method !== "function") {
      out[name] = method
      continue
    }
    out[name] = (...args: Array<unknown>) => {
      const real = () => (method as (...a: Array<unknown>) => Effect.Effect<unknown, unknown>)(...args)
      return Effect.suspend(() => {
        // only the calls that create something are counted: the client's own background calls
        // (reconciliation's Tasks.Get) and compensations must not shift the injection point
        if (!counted.has(`${group}.${name}`)) return real()
        const n = injector.count++
        injector.calls.push(`${group}.${name}`)
        if (n !== injector.target) return real()
        switch (injector.mode) {
          case "fail":
            return Effect.fail(new System({ message: `injected failure at ${group}.${name}` }))
          case "interrupt-before":
            return Effect.interrupt
          case "interrupt-after":
            return Effect.zipRight(real(), Effect.interrupt)
        }
      })
    }
  }
  return out as G
}

const wrapped = Layer.effect(
  Containerd,
  Effect.map(Containerd, (c) => ({
    ...c,
    containers: wrapGroup("containers", c.containers),
    tasks: wrapGroup("tasks", c.tasks),
  })),
)

const namespace = freshNamespace("interrupt")
const stateDir = tempStateDir()

const clientUnderTest = LibcontainerdLive.layer({ stateDir }).pipe(
  Layer.provide(Layer.mergeAll(ProcessIONode.layer({ drainTimeout: "300 millis" }), Backend.layerNoop)),
  Layer.provide(wrapped),
  Layer.provideMerge(containerdLayer(namespace)),
  Layer.orDie,
)

/** The client's create → start → exec, all with stdin so every FIFO kind is made. */
const scenario = (id: string) =>
  Effect.gen(function* () {
    const client = yield* Libcontainerd
    const spec = busyboxSpec(id, namespace, ["sleep", "60"])
    yield* client.create(id, spec)
    yield* client.start(id, { withStdin: true })
    yield* client.exec(id, "e", Spec.processFrom(spec, { args: ["sleep", "60"] }), { withStdin: true })
  })

const inspect = (id: string) =>
  Effect.gen(function* () {
    const c = yield* Containerd
    const ns = Containerd.withNamespace(namespace)
    const container = yield* ns(c.containers.get(id)).pipe(Effect.option)
    const task = yield* ns(c.tasks.get({ containerId: id })).pipe(Effect.option)
    const exec = yield* ns(c.tasks.get({ containerId: id, execId: "e" })).pipe(Effect.option)
    const bundle = Path.join(stateDir, id)
    const files = Fs.existsSync(bundle) ? Fs.readdirSync(bundle).sort() : undefined
    return { container: container._tag, task: task._tag, exec: exec._tag, files }
  })

const cleanup = (id: string) =>
  Effect.gen(function* () {
    const client = yield* Libcontainerd
    const c = yield* Containerd
    yield* client.signalProcess(id, "init", "SIGKILL").pipe(Effect.ignore)
    yield* Containerd.withNamespace(namespace)(c.tasks.wait({ containerId: id })).pipe(Effect.ignore)
    yield* client.deleteTask(id).pipe(Effect.ignore)
    yield* client.delete(id).pipe(Effect.ignore)
  })

/** Open fds settle once sockets finish closing. */
const settledFds = (expected: number) =>
  Effect.gen(function* () {
    let now = openFds()
    for (let i = 0; i < 50 && now !== expected; i++) {
      yield* Effect.sleep("20 millis")
      now = openFds()
    }
    return now
  })

describe("interruption safety (real daemon)", () => {
  layer(clientUnderTest, { timeout: 60_000, excludeTestServices: true })((it) => {
    it.effect(
      "create, start and exec interrupted or failed at each RPC leave nothing behind",
      () =>
        Effect.gen(function* () {
          // a clean run tells which calls the scenario makes
          injector.target = -1
          injector.count = 0
          injector.calls = []
          yield* scenario("probe")
          const sequence = [...injector.calls]
          assert.deepStrictEqual(sequence, [
            "containers.create",
            "tasks.create",
            "tasks.start",
            "tasks.exec",
            "tasks.start",
          ])
          yield* cleanup("probe")
          const client = yield* Libcontainerd

          for (let i = 0; i < sequence.length; i++) {
            for (const mode of ["fail", "interrupt-before", "interrupt-after"] as const) {
              const id = `inj-${i}-${mode}`
              const label = `${mode} at #${i} ${sequence[i]}`
              const fdsBefore = openFds()
              injector.target = i
              injector.mode = mode
              injector.count = 0
              injector.calls = []
              const exit = yield* Effect.exit(scenario(id))
              injector.target = -1
              assert.isTrue(Exit.isFailure(exit), `${label}: the scenario failed`)
              if (mode === "fail") {
                assert.isFalse(Exit.isInterrupted(exit), label)
              } else {
                assert.isTrue(Exit.isInterrupted(exit), `${label}: interrupted`)
              }
              const seen = yield* inspect(id)
              if (i === 0) {
                assert.deepStrictEqual(
                  seen,
                  { container: "None", task: "None", exec: "None", files: undefined },
                  label,
                )
                // no registry entry: the same id can be created
                yield* client.create(id, busyboxSpec(id, namespace, ["sleep", "60"]))
              } else if (i <= 2) {
                assert.deepStrictEqual(
                  seen,
                  { container: "Some", task: "None", exec: "None", files: [] },
                  label,
                )
                // registry unchanged: the container can be started
                yield* client.start(id)
              } else {
                assert.strictEqual(seen.container, "Some", label)
                assert.strictEqual(seen.task, "Some", label)
                assert.strictEqual(seen.exec, "None", label)
                assert.isFalse(
                  seen.files?.some((f) => f.startsWith("e-")),
                  `${label}: no FIFO of the exec left (${seen.files?.join(", ")})`,
                )
                // registry unchanged: the exec id is free again
                yield* client.exec(
                  id,
                  "e",
                  Spec.processFrom(busyboxSpec(id, namespace, ["true"]), { args: ["true"] }),
                )
              }
              yield* cleanup(id)
              assert.strictEqual(yield* settledFds(fdsBefore), fdsBefore, `${label}: open fds back to start`)
            }
          }
        }),
      60_000,
    )
  })
})
