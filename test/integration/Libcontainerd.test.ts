import * as Fs from "node:fs"
import * as Path from "node:path"
import { assert, describe, it, layer } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Spec from "../../src/domain/Spec.js"
import { Containerd } from "../../src/services/Containerd.js"
import { Libcontainerd } from "../../src/services/Libcontainerd.js"
import { busyboxSpec, freshNamespace } from "../support/daemon.js"
import { capture, clientLayer, exitOf, tempStateDir } from "../support/client.js"

const namespace = freshNamespace("client")
const stateDir = tempStateDir()

/** A process's exit as the Backend received it. */
const waitExit = (containerId: string, execId?: string) => exitOf(containerId, execId ?? containerId)

const spec = (id: string, args: ReadonlyArray<string>) => busyboxSpec(id, namespace, args)

describe("Libcontainerd (real daemon)", () => {
  layer(clientLayer(namespace, stateDir), { excludeTestServices: true })((it) => {
    it.effect("version answers through the client", () =>
      Effect.gen(function* () {
        const client = yield* Libcontainerd
        assert.match((yield* client.version).version, /^\d+\.\d+/)
      }),
    )

    it.effect("full lifecycle: create, start with stdout, exit, deleteTask, delete", () =>
      Effect.gen(function* () {
        const client = yield* Libcontainerd
        const { captured, attach } = yield* capture
        yield* client.create("life", spec("life", ["sh", "-c", "echo hello; echo oops >&2; exit 3"]))
        assert.isTrue(Fs.existsSync(Path.join(stateDir, "life")), "bundle dir made")
        const pid = yield* client.start("life", { attachStdio: attach })
        assert.isAbove(pid, 0)
        const exit = yield* waitExit("life")
        assert.strictEqual(exit.exitStatus, 3)
        assert.strictEqual(yield* Deferred.await(captured.stdout), "hello\n")
        assert.strictEqual(yield* Deferred.await(captured.stderr), "oops\n")
        assert.strictEqual(yield* client.status("life"), "stopped")
        const deleted = yield* client.deleteTask("life")
        assert.strictEqual(deleted.exitCode, 3)
        assert.isAbove(Number(deleted.exitedAt.seconds), 0)
        assert.deepStrictEqual(
          Fs.readdirSync(Path.join(stateDir, "life")).filter((f) => f.startsWith("init-")),
          [],
          "no FIFO left",
        )
        yield* client.delete("life")
        assert.isFalse(Fs.existsSync(Path.join(stateDir, "life")), "bundle dir removed")
        const c = yield* Containerd
        const gone = yield* Effect.flip(Containerd.withNamespace(namespace)(c.containers.get("life")))
        assert.strictEqual(gone._tag, "NotFound")
      }),
    )

    it.effect("error rows of the seed", () =>
      Effect.gen(function* () {
        const client = yield* Libcontainerd
        yield* client.create("errs", spec("errs", ["sleep", "60"]))
        const dup = yield* Effect.flip(client.create("errs", spec("errs", ["true"])))
        assert.deepInclude(dup, { _tag: "Conflict", message: "id already in use" })
        const unknown = yield* Effect.flip(client.start("nope"))
        assert.deepInclude(unknown, { _tag: "NotFound", message: "no such container" })
        const notRunning = yield* Effect.flip(
          client.exec("errs", "e1", Spec.processFrom(spec("errs", ["true"]), { args: ["true"] })),
        )
        assert.deepInclude(notRunning, { _tag: "InvalidParameter", message: "container is not running" })
        const noTask = yield* Effect.flip(client.signalProcess("errs", "init", "SIGTERM"))
        assert.deepInclude(noTask, { _tag: "NotFound", message: "container is not running" })
        const noTaskDelete = yield* Effect.flip(client.deleteTask("errs"))
        assert.deepInclude(noTaskDelete, { _tag: "NotFound", message: "container is not running" })
        yield* client.start("errs")
        const twice = yield* Effect.flip(client.start("errs"))
        assert.deepInclude(twice, { _tag: "Conflict", message: "container already started" })
        const noExec = yield* Effect.flip(client.signalProcess("errs", "ghost", 15))
        assert.deepInclude(noExec, { _tag: "NotFound", message: "no such exec" })
        const unknownSignal = yield* Effect.flip(
          client.signalProcess("errs", "init", "SIGNOPE" as NodeJS.Signals),
        )
        assert.strictEqual(unknownSignal._tag, "InvalidParameter")
        const deleteLive = yield* Effect.flip(client.delete("errs"))
        assert.strictEqual(deleteLive._tag, "Conflict")
        assert.include(deleteLive.message, "delete the task first")
        const deleteRunningTask = yield* Effect.flip(client.deleteTask("errs"))
        assert.strictEqual(deleteRunningTask._tag, "System")
        assert.strictEqual(yield* client.status("errs"), "running", "a failed deleteTask changed nothing")
        yield* client.exec(
          "errs",
          "e1",
          Spec.processFrom(spec("errs", ["sleep", "30"]), { args: ["sleep", "30"] }),
        )
        const dupExec = yield* Effect.flip(
          client.exec("errs", "e1", Spec.processFrom(spec("errs", ["true"]), { args: ["true"] })),
        )
        assert.deepInclude(dupExec, { _tag: "Conflict", message: "id already in use" })
        yield* client.signalProcess("errs", "init", "SIGKILL")
        yield* waitExit("errs")
        yield* client.deleteTask("errs")
        yield* client.delete("errs")
      }),
    )

    it.effect("invalid ids and specs are InvalidParameter and change nothing", () =>
      Effect.gen(function* () {
        const client = yield* Libcontainerd
        const before = Fs.readdirSync(stateDir).sort()
        for (const id of ["../escape", "a/b", "x".repeat(77), "", "-x", "."]) {
          const error = yield* Effect.flip(client.create(id, spec("x", ["true"])))
          assert.strictEqual(error._tag, "InvalidParameter", id)
        }
        const badSpec = Spec.withArgs(spec("bad", ["true"]), [])
        const error = yield* Effect.flip(client.create("bad", badSpec))
        assert.strictEqual(error._tag, "InvalidParameter")
        assert.include(error.message, "process.args")
        assert.deepStrictEqual(Fs.readdirSync(stateDir).sort(), before, "no bundle dir made")
        const c = yield* Containerd
        const listed = yield* Containerd.withNamespace(namespace)(c.containers.list())
        assert.isFalse(listed.some((x) => x.id === "bad"))
        const retry = yield* client.create("bad", spec("bad", ["true"]))
        assert.isUndefined(retry)
        yield* client.delete("bad")
      }),
    )

    it.effect("exec: output and exit code; listPids and summary name it; SIGTERM ends sleep", () =>
      Effect.gen(function* () {
        const client = yield* Libcontainerd
        const base = spec("ex", ["sleep", "60"])
        yield* client.create("ex", base)
        yield* client.start("ex")
        const { captured, attach } = yield* capture
        const execPid = yield* client.exec(
          "ex",
          "hello",
          Spec.processFrom(base, { args: ["sh", "-c", "echo from-exec; exit 7"] }),
          {
            attachStdio: attach,
          },
        )
        assert.isAbove(execPid, 0)
        const execExit = yield* waitExit("ex", "hello")
        assert.strictEqual(execExit.exitStatus, 7)
        assert.strictEqual(yield* Deferred.await(captured.stdout), "from-exec\n")

        const sleeper = yield* client.exec("ex", "sleeper", Spec.processFrom(base, { args: ["sleep", "60"] }))
        const pids = yield* client.listPids("ex")
        assert.include(pids, sleeper)
        const summary = yield* client.summary("ex")
        assert.deepInclude(summary, { pid: sleeper, execId: "sleeper" })
        yield* client.signalProcess("ex", "sleeper", "SIGTERM")
        const termExit = yield* waitExit("ex", "sleeper")
        assert.strictEqual(termExit.exitStatus, 143)

        yield* client.signalProcess("ex", "init", "SIGKILL")
        assert.strictEqual((yield* waitExit("ex")).exitStatus, 137)
        yield* client.deleteTask("ex")
        yield* client.delete("ex")
      }),
    )

    it.effect("closeStdin ends cat with exit 0 after echoing stdin", () =>
      Effect.gen(function* () {
        const client = yield* Libcontainerd
        const { captured, attach } = yield* capture
        yield* client.create("cat", spec("cat", ["cat"]))
        yield* client.start("cat", { withStdin: true, attachStdio: attach })
        const io = yield* Deferred.await(captured.io)
        assert.isDefined(io.stdin)
        yield* io.stdin!.write(new TextEncoder().encode("line one\nline two\n"))
        yield* client.closeStdin("cat", "init")
        assert.strictEqual((yield* waitExit("cat")).exitStatus, 0)
        assert.strictEqual(yield* Deferred.await(captured.stdout), "line one\nline two\n")
        yield* client.deleteTask("cat")
        yield* client.delete("cat")
      }),
    )

    it.effect("pause freezes the container, resume thaws it", () =>
      Effect.gen(function* () {
        const client = yield* Libcontainerd
        const base = spec("frozen", [
          "sh",
          "-c",
          "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done",
        ])
        yield* client.create("frozen", base)
        yield* client.start("frozen")
        const read = Effect.gen(function* () {
          const { captured, attach } = yield* capture
          const id = `read-${Math.random().toString(36).slice(2, 8)}`
          yield* client.exec("frozen", id, Spec.processFrom(base, { args: ["cat", "/tmp/count"] }), {
            attachStdio: attach,
          })
          yield* waitExit("frozen", id)
          return Number((yield* Deferred.await(captured.stdout)).trim())
        })
        yield* Effect.sleep("300 millis")
        yield* client.pause("frozen")
        assert.strictEqual(yield* client.status("frozen"), "paused")
        const rootCgroup = Path.join("/sys/fs/cgroup/freezer", namespace, "frozen", "freezer.state")
        if (Fs.existsSync(rootCgroup))
          assert.strictEqual(Fs.readFileSync(rootCgroup, "utf8").trim(), "FROZEN")
        const stats = yield* client.stats("frozen")
        assert.isTrue(stats.memory.usage > 0n, "memory usage reported")
        yield* Effect.sleep("300 millis")
        yield* client.resume("frozen")
        assert.strictEqual(yield* client.status("frozen"), "running")
        const first = yield* read
        yield* Effect.sleep("300 millis")
        const second = yield* read
        assert.isAbove(second, first, "progress after resume")
        yield* client.signalProcess("frozen", "init", "SIGKILL")
        yield* waitExit("frozen")
        yield* client.deleteTask("frozen")
        yield* client.delete("frozen")
      }),
    )

    it.effect("updateResources changes the memory limit seen in the cgroup", () =>
      Effect.gen(function* () {
        const client = yield* Libcontainerd
        const base = Spec.withMemoryLimit(spec("limits", ["sleep", "60"]), 64 * 1024 * 1024)
        yield* client.create("limits", base)
        yield* client.start("limits")
        const limitNow = Effect.gen(function* () {
          const { captured, attach } = yield* capture
          const id = `m-${Math.random().toString(36).slice(2, 8)}`
          yield* client.exec(
            "limits",
            id,
            Spec.processFrom(base, { args: ["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"] }),
            {
              attachStdio: attach,
            },
          )
          yield* waitExit("limits", id)
          return Number((yield* Deferred.await(captured.stdout)).trim())
        })
        assert.strictEqual(yield* limitNow, 64 * 1024 * 1024)
        yield* client.updateResources("limits", { memory: { limit: 96 * 1024 * 1024 } })
        assert.strictEqual(yield* limitNow, 96 * 1024 * 1024)
        const stats = yield* client.stats("limits")
        assert.strictEqual(stats.memory.limit, BigInt(96 * 1024 * 1024))
        const bad = yield* Effect.flip(client.updateResources("limits", { memory: { limit: -5 } }))
        assert.strictEqual(bad._tag, "InvalidParameter")
        yield* client.signalProcess("limits", "init", 9)
        yield* waitExit("limits")
        yield* client.deleteTask("limits")
        yield* client.delete("limits")
      }),
    )

    it.effect("resizeTerminal on a tty exec shows in stty size", () =>
      Effect.gen(function* () {
        const client = yield* Libcontainerd
        const base = spec("tty", ["sleep", "60"])
        yield* client.create("tty", base)
        yield* client.start("tty")
        const { captured, attach } = yield* capture
        yield* client.exec(
          "tty",
          "shell",
          Spec.withProcessTerminal(Spec.processFrom(base, { args: ["sh", "-c", "sleep 0.5; stty size"] })),
          { attachStdio: attach },
        )
        yield* client.resizeTerminal("tty", "shell", 120, 40)
        yield* waitExit("tty", "shell")
        assert.strictEqual((yield* Deferred.await(captured.stdout)).trim(), "40 120")
        assert.strictEqual(yield* Deferred.await(captured.stderr), "", "no stderr with a terminal")
        yield* client.signalProcess("tty", "init", 9)
        yield* waitExit("tty")
        yield* client.deleteTask("tty")
        yield* client.delete("tty")
      }),
    )
  })

  it.live("noClean keeps the bundle dir on delete", () =>
    Effect.gen(function* () {
      const dir = tempStateDir()
      const ns = freshNamespace("noclean")
      yield* Effect.gen(function* () {
        const client = yield* Libcontainerd
        yield* client.create("kept", busyboxSpec("kept", ns, ["true"]))
        yield* client.delete("kept")
        assert.isTrue(Fs.existsSync(Path.join(dir, "kept")))
      }).pipe(Effect.provide(clientLayer(ns, dir, { noClean: true })))
      Fs.rmSync(dir, { recursive: true, force: true })
    }),
  )

  it.live("a failed start (missing binary) leaves no task and no FIFO, and can be retried", () =>
    Effect.gen(function* () {
      const ns = freshNamespace("failstart")
      const dir = tempStateDir()
      yield* Effect.gen(function* () {
        const client = yield* Libcontainerd
        yield* client.create("broken", busyboxSpec("broken", ns, ["/no/such/binary"]))
        const error = yield* Effect.flip(client.start("broken"))
        assert.strictEqual(error._tag, "System")
        const c = yield* Containerd
        const tasks = yield* Containerd.withNamespace(ns)(c.tasks.list())
        assert.deepStrictEqual(tasks, [], "the failed task was deleted")
        assert.deepStrictEqual(Fs.readdirSync(Path.join(dir, "broken")), [], "no FIFO left")
        const notRunning = yield* Effect.flip(client.status("broken"))
        assert.strictEqual(notRunning._tag, "NotFound")
        yield* client.delete("broken")
      }).pipe(Effect.provide(clientLayer(ns, dir)))
      Fs.rmSync(dir, { recursive: true, force: true })
    }),
  )

  it.live("closing the client never kills containers", () =>
    Effect.gen(function* () {
      const ns = freshNamespace("live")
      const dir = tempStateDir()
      const pid = yield* Effect.gen(function* () {
        const client = yield* Libcontainerd
        yield* client.create("survivor", busyboxSpec("survivor", ns, ["sleep", "60"]))
        return yield* client.start("survivor")
      }).pipe(Effect.provide(clientLayer(ns, dir, { cleanNamespace: false })))
      const running = Effect.gen(function* () {
        const c = yield* Containerd
        return yield* Containerd.withNamespace(ns)(c.tasks.get({ containerId: "survivor" }))
      })
      const record = yield* running.pipe(Effect.provide(clientLayer(ns, dir)))
      assert.strictEqual(record.status, "RUNNING")
      assert.strictEqual(record.pid, pid)
      Fs.rmSync(dir, { recursive: true, force: true })
    }),
  )
})
