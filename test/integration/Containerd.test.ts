import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Grpc from "@grpc/grpc-js"
import { assert, describe, it, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import { ContainersService } from "../../generated/containerd/services/containers/v1/containers.js"
import { TasksService } from "../../generated/containerd/services/tasks/v1/tasks.js"
import type * as Spec from "../../src/domain/Spec.js"
import { wrapError } from "../../src/errors/ContainerdError.js"
import * as Call from "../../src/internal/grpc.js"
import * as ContainerdLive from "../../src/layers/ContainerdLive.js"
import { Containerd } from "../../src/services/Containerd.js"
import { address, busyboxSpec, containerdLayer, freshNamespace } from "../support/daemon.js"

/** Counts calls in flight and remembers how each ended, as seen by grpc-js. */
const callAccounting = () => {
  const state = { started: 0, active: 0, statuses: [] as Array<{ path: string; code: number }> }
  const interceptor: Grpc.Interceptor = (options, nextCall) =>
    new Grpc.InterceptingCall(nextCall(options), {
      start: (metadata, _listener, next) => {
        state.started++
        state.active++
        next(
          metadata,
          new Grpc.ListenerBuilder()
            .withOnReceiveStatus((status, nextStatus) => {
              state.active--
              state.statuses.push({ path: options.method_definition.path, code: status.code })
              nextStatus(status)
            })
            .build(),
        )
      },
    })
  return { state, interceptor }
}

const namespace = freshNamespace("wire")

describe("Containerd (live, real daemon)", () => {
  layer(containerdLayer(namespace), { excludeTestServices: true })((it) => {
    it.effect("version answers", () =>
      Effect.gen(function* () {
        const containerd = yield* Containerd
        const version = yield* containerd.version
        assert.match(version.version, /^\d+\.\d+/)
        assert.strictEqual(yield* containerd.health, "SERVING")
      }),
    )

    it.effect("container create → get → list → delete round trip keeps the spec", () =>
      Effect.gen(function* () {
        const containerd = yield* Containerd
        const spec = busyboxSpec("roundtrip", namespace, ["/bin/true"])
        const created = yield* containerd.containers.create({
          id: "roundtrip",
          spec,
          labels: { purpose: "test" },
          runtime: { name: "io.containerd.runc.v2", options: { noPivotRoot: true } },
        })
        assert.strictEqual(created.id, "roundtrip")
        const got = yield* containerd.containers.get("roundtrip")
        assert.deepStrictEqual(got.spec, spec)
        assert.deepStrictEqual(got.labels, { purpose: "test" })
        assert.strictEqual(got.runtime.name, "io.containerd.runc.v2")
        assert.deepStrictEqual(got.runtime.options, { noPivotRoot: true })
        const listed = yield* containerd.containers.list()
        assert.deepStrictEqual(
          listed.map((c) => c.id),
          ["roundtrip"],
        )
        yield* containerd.containers.delete("roundtrip")
        assert.deepStrictEqual(yield* containerd.containers.list(), [])
      }),
    )

    it.effect("get of a missing container is NotFound with containerd's message and code", () =>
      Effect.gen(function* () {
        const containerd = yield* Containerd
        const error = yield* Effect.flip(containerd.containers.get("missing"))
        assert.strictEqual(error._tag, "NotFound")
        assert.strictEqual(error.code, 5)
        assert.include(error.message, `container "missing" in namespace "${namespace}": not found`)
      }),
    )

    it.effect("creating a duplicate container is Conflict with code ALREADY_EXISTS", () =>
      Effect.gen(function* () {
        const containerd = yield* Containerd
        const spec = busyboxSpec("dup", namespace, ["/bin/true"])
        yield* containerd.containers.create({ id: "dup", spec })
        const error = yield* Effect.flip(containerd.containers.create({ id: "dup", spec }))
        assert.strictEqual(error._tag, "Conflict")
        assert.strictEqual(error.code, 6)
        assert.include(error.message, "already exists")
        yield* containerd.containers.delete("dup")
      }),
    )

    it.effect("task of a container without one is NotFound", () =>
      Effect.gen(function* () {
        const containerd = yield* Containerd
        yield* containerd.containers.create({
          id: "notask",
          spec: busyboxSpec("notask", namespace, ["/bin/true"]),
        })
        const error = yield* Effect.flip(containerd.tasks.get({ containerId: "notask" }))
        assert.strictEqual(error._tag, "NotFound")
        assert.strictEqual(error.code, 5)
        yield* containerd.containers.delete("notask")
      }),
    )

    it.effect("a task runs the default spec to exit 0 and is deleted with its status", () =>
      Effect.gen(function* () {
        const containerd = yield* Containerd
        yield* containerd.containers.create({
          id: "runs",
          spec: busyboxSpec("runs", namespace, ["/bin/true"]),
        })
        yield* containerd.tasks.create({ containerId: "runs" })
        const waiting = yield* Effect.fork(containerd.tasks.wait({ containerId: "runs" }))
        const started = yield* containerd.tasks.start({ containerId: "runs" })
        assert.isAbove(started.pid, 0)
        const exit = yield* Fiber.join(waiting)
        assert.strictEqual(exit.exitStatus, 0)
        const deleted = yield* containerd.tasks.delete({ containerId: "runs" })
        assert.strictEqual(deleted.exitStatus, 0)
        yield* containerd.containers.delete("runs")
      }),
    )
  })

  it.live(
    "the daemon's own InvalidArgument for a bad id maps to InvalidParameter, code and message kept",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const client = yield* Effect.acquireRelease(
            Effect.sync(() => new Grpc.Client(`unix://${address()}`, Grpc.credentials.createInsecure())),
            (c) => Effect.sync(() => c.close()),
          )
          const md = new Grpc.Metadata()
          md.set("containerd-namespace", namespace)
          const spec = busyboxSpec("x", namespace, ["/bin/true"])
          for (const id of ["a/b", "x".repeat(80)]) {
            const error = yield* Effect.flip(
              Call.unary(
                client,
                ContainersService.create,
                {
                  container: {
                    id,
                    labels: {},
                    image: "",
                    runtime: { name: "io.containerd.runc.v2" },
                    spec: {
                      typeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Spec",
                      value: Buffer.from(JSON.stringify(spec)),
                    },
                    snapshotter: "",
                    snapshotKey: "",
                    extensions: {},
                  },
                },
                md,
              ),
            )
            assert.strictEqual(error._tag, "InvalidParameter")
            assert.strictEqual(error.code, 3)
            assert.include(error.message, "identifier")
            assert.strictEqual(wrapError(error), error)
          }
        }),
      ),
  )

  it.live("ids our client rejects never reach the daemon", () =>
    Effect.gen(function* () {
      const { state, interceptor } = callAccounting()
      const layer = ContainerdLive.layer({ address: address(), namespace, interceptors: [interceptor] })
      yield* Effect.gen(function* () {
        const containerd = yield* Containerd
        const before = state.started
        const spec = busyboxSpec("x", namespace, ["/bin/true"])
        for (const id of ["a/b", "x".repeat(80), "-lead", "has space", ""]) {
          const error = yield* Effect.flip(containerd.containers.create({ id, spec }))
          assert.strictEqual(error._tag, "InvalidParameter")
          assert.match(error.message, /^id: /)
        }
        const badSpec = { ...spec, process: { ...spec.process, args: 42 } } as unknown as Spec.Spec
        const specError = yield* Effect.flip(containerd.containers.create({ id: "okid", spec: badSpec }))
        assert.strictEqual(specError._tag, "InvalidParameter")
        assert.include(specError.message, "process.args")
        const nsError = yield* Effect.flip(Containerd.withNamespace("bad/ns")(containerd.version))
        assert.strictEqual(nsError._tag, "InvalidParameter")
        assert.include(nsError.message, "namespace")
        assert.strictEqual(state.started, before, "no call was made")
      }).pipe(Effect.provide(layer))
    }),
  )

  it.live("interrupting a pending tasks.wait cancels the call", () =>
    Effect.gen(function* () {
      const { state, interceptor } = callAccounting()
      const layer = ContainerdLive.layer({ address: address(), namespace, interceptors: [interceptor] })
      yield* Effect.gen(function* () {
        const containerd = yield* Containerd
        yield* containerd.containers.create({
          id: "sleeper",
          spec: busyboxSpec("sleeper", namespace, ["sleep", "600"]),
        })
        yield* containerd.tasks.create({ containerId: "sleeper" })
        yield* containerd.tasks.start({ containerId: "sleeper" })
        const waiting = yield* Effect.fork(containerd.tasks.wait({ containerId: "sleeper" }))
        yield* Effect.sleep("200 millis")
        assert.strictEqual(state.active, 1, "the wait is in flight")
        const exit = yield* Fiber.interrupt(waiting)
        assert.isTrue(Exit.isInterrupted(exit))
        // the call ends with CANCELLED as soon as grpc-js has processed the cancellation
        for (let i = 0; i < 50 && state.active > 0; i++) yield* Effect.sleep("10 millis")
        assert.strictEqual(state.active, 0)
        const wait = state.statuses.find((s) => s.path === TasksService.wait.path)
        assert.deepStrictEqual(wait, { path: TasksService.wait.path, code: Grpc.status.CANCELLED })
        yield* containerd.tasks.kill({ containerId: "sleeper", signal: 9 })
        yield* containerd.tasks.wait({ containerId: "sleeper" })
        yield* containerd.tasks.delete({ containerId: "sleeper" })
        yield* containerd.containers.delete("sleeper")
      }).pipe(Effect.provide(layer))
    }),
  )

  it.live(
    "events.forEach hands envelopes over in order and cancels the call on interruption or a defect",
    () =>
      Effect.gen(function* () {
        const { state, interceptor } = callAccounting()
        const layer = ContainerdLive.layer({ address: address(), namespace, interceptors: [interceptor] })
        yield* Effect.gen(function* () {
          const containerd = yield* Containerd
          const forEach = containerd.events.forEach
          assert.isDefined(forEach)
          if (forEach === undefined) return
          const filters = [`namespace==${namespace},topic~=|^/containers/|`]
          const topics: Array<string> = []
          const following = yield* Effect.fork(
            forEach(filters, (envelope) =>
              // a slow handler: the call waits for it, nothing is lost or reordered
              Effect.zipRight(
                Effect.sleep("20 millis"),
                Effect.sync(() => {
                  topics.push(`${envelope.namespace} ${envelope.topic}`)
                }),
              ),
            ),
          )
          yield* Effect.sleep("200 millis")
          for (const id of ["ev-a", "ev-b"]) {
            yield* containerd.containers.create({ id, spec: busyboxSpec(id, namespace, ["/bin/true"]) })
            yield* containerd.containers.delete(id)
          }
          for (let i = 0; i < 100 && topics.length < 4; i++) yield* Effect.sleep("10 millis")
          assert.deepStrictEqual(topics, [
            `${namespace} /containers/create`,
            `${namespace} /containers/delete`,
            `${namespace} /containers/create`,
            `${namespace} /containers/delete`,
          ])
          assert.isTrue(Exit.isInterrupted(yield* Fiber.interrupt(following)))
          const dying = yield* Effect.fork(forEach(filters, () => Effect.die("handler bug")))
          yield* Effect.sleep("200 millis")
          yield* containerd.containers.create({
            id: "ev-c",
            spec: busyboxSpec("ev-c", namespace, ["/bin/true"]),
          })
          yield* containerd.containers.delete("ev-c")
          assert.deepStrictEqual(yield* Fiber.await(dying), Exit.die("handler bug"))
          for (let i = 0; i < 50 && state.active > 0; i++) yield* Effect.sleep("10 millis")
          assert.strictEqual(state.active, 0, "both calls were cancelled")
          const subscribes = state.statuses.filter((s) => s.path.endsWith("/Subscribe"))
          assert.deepStrictEqual(
            subscribes.map((s) => s.code),
            [Grpc.status.CANCELLED, Grpc.status.CANCELLED],
          )
        }).pipe(Effect.provide(layer))
      }),
  )

  describe("unreachable or invalid addresses", () => {
    it.live("a missing socket fails fast with a System error naming the address", () =>
      Effect.gen(function* () {
        const missing = Path.join(Os.tmpdir(), `no-such-${process.pid}.sock`)
        const error = yield* Effect.flip(Effect.scoped(ContainerdLive.make({ address: missing }))).pipe(
          Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => new Error("not fast") }),
        )
        assert.strictEqual(error._tag, "System")
        assert.include(error.message, missing)
      }),
    )

    it.live("a refused connection fails fast with a System error naming the address", () =>
      Effect.gen(function* () {
        const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "refused-"))
        const socket = Path.join(dir, "dead.sock")
        // a socket file nobody listens on: a hard link to a listening socket outlives the listener
        const live = Path.join(dir, "live.sock")
        const server = Net.createServer()
        yield* Effect.async<void>((resume) => {
          server.listen(live, () => resume(Effect.void))
        })
        Fs.linkSync(live, socket)
        yield* Effect.async<void>((resume) => {
          server.close(() => resume(Effect.void))
        })
        assert.isTrue(Fs.existsSync(socket), "the dead socket file exists")
        const error = yield* Effect.flip(Effect.scoped(ContainerdLive.make({ address: socket }))).pipe(
          Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => new Error("not fast") }),
        )
        assert.strictEqual(error._tag, "System")
        assert.include(error.message, socket)
        Fs.rmSync(dir, { recursive: true, force: true })
      }),
    )

    it.live("empty and relative addresses and bad namespaces are InvalidParameter", () =>
      Effect.gen(function* () {
        for (const bad of ["", "relative.sock", "unix://"]) {
          const error = yield* Effect.flip(Effect.scoped(ContainerdLive.make({ address: bad })))
          assert.strictEqual(error._tag, "InvalidParameter")
          assert.match(error.message, /^address: /)
        }
        const nsError = yield* Effect.flip(
          Effect.scoped(ContainerdLive.make({ address: address(), namespace: "no/slash" })),
        )
        assert.strictEqual(nsError._tag, "InvalidParameter")
        assert.match(nsError.message, /^namespace: /)
      }),
    )
  })
})
