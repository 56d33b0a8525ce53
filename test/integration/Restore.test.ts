/**
 * Live restore: a client closes, its containers run on, and a new client with
 * the same state dir and namespace loads them back (`restore`), stdio and
 * execs included. Also `start` from a checkpoint dir: the upload, the
 * descriptor handed to task create and the clean-up afterwards.
 */
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Grpc from "@grpc/grpc-js"
import { assert, describe, it } from "@effect/vitest"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import * as Tar from "tar"
import { ImagesService } from "../../generated/containerd/services/images/v1/images.js"
import { LeasesService } from "../../generated/containerd/services/leases/v1/leases.js"
import * as Spec from "../../src/domain/Spec.js"
import type { CreateTaskInput } from "../../src/domain/Types.js"
import { checkpointMediaType } from "../../src/internal/checkpoint.js"
import * as Grpcs from "../../src/internal/grpc.js"
import * as LibcontainerdLive from "../../src/layers/LibcontainerdLive.js"
import * as ProcessIONode from "../../src/layers/ProcessIONode.js"
import * as Backend from "../../src/services/Backend.js"
import { Containerd, currentLease } from "../../src/services/Containerd.js"
import { type AttachStdio, Libcontainerd } from "../../src/services/Libcontainerd.js"
import type { DirectIO } from "../../src/services/ProcessIO.js"
import { address, busyboxSpec, containerdLayer, freshNamespace } from "../support/daemon.js"
import { clientLayer, editTasks, exitOf, tempStateDir } from "../support/client.js"

/**
 * Runs `body` with a fresh namespace and state dir; afterwards every task and
 * container left in the namespace is killed and deleted, and the dir removed.
 */
const scenario = <A, E, R>(
  prefix: string,
  body: (namespace: string, stateDir: string) => Effect.Effect<A, E, R>,
) =>
  Effect.suspend(() => {
    const namespace = freshNamespace(prefix)
    const stateDir = tempStateDir()
    return body(namespace, stateDir).pipe(
      Effect.ensuring(Effect.provide(Effect.void, containerdLayer(namespace))),
      Effect.ensuring(Effect.sync(() => Fs.rmSync(stateDir, { recursive: true, force: true }))),
    )
  })

/** The first client: its scope ends with the block, the namespace is left as it is. */
const clientA = (namespace: string, stateDir: string) =>
  clientLayer(namespace, stateDir, { cleanNamespace: false })

/** An attachStdio that keeps each process's DirectIO and the text of its stdout so far. */
const recordStdio = Effect.sync(() => {
  const ios = new Map<string, DirectIO>()
  const stdout = new Map<string, string>()
  const attached: Array<string> = []
  const attach: AttachStdio = (io, processId) =>
    Effect.gen(function* () {
      attached.push(processId)
      ios.set(processId, io)
      stdout.set(processId, "")
      const decoder = new TextDecoder()
      yield* Effect.forkScoped(
        Stream.runForEach(io.stdout, (chunk) =>
          Effect.sync(() =>
            stdout.set(processId, stdout.get(processId) + decoder.decode(chunk, { stream: true })),
          ),
        ).pipe(Effect.ignore),
      )
      if (io.stderr !== undefined) yield* Effect.forkScoped(Stream.runDrain(io.stderr).pipe(Effect.ignore))
    })
  /** Waits until the process's stdout contains `text`. */
  const waitFor = (processId: string, text: string) =>
    Effect.gen(function* () {
      while (!(stdout.get(processId) ?? "").includes(text)) yield* Effect.sleep("20 millis")
      return stdout.get(processId) ?? ""
    }).pipe(
      Effect.timeoutFail({
        duration: "10 seconds",
        onTimeout: () =>
          new Error(
            `${processId} did not print ${JSON.stringify(text)}: ${JSON.stringify(stdout.get(processId))}`,
          ),
      }),
      Effect.orDie,
    )
  const io = (processId: string) => {
    const found = ios.get(processId)
    if (found === undefined) throw new Error(`no stdio attached for ${processId}`)
    return found
  }
  return { attach, attached, io, stdout, waitFor }
})

const encode = (text: string) => new TextEncoder().encode(text)

/** The task record containerd holds, read in the namespace. */
const taskRecord = (namespace: string, containerId: string, execId?: string) =>
  Effect.flatMap(Containerd, (c) =>
    Containerd.withNamespace(namespace)(
      c.tasks.get(execId === undefined ? { containerId } : { containerId, execId }),
    ),
  )

/** Whether `criu check` passes here; CRIU 3.17 fails on this machine's kernel (vDSO). */
const criuWorks = (() => {
  try {
    return ChildProcess.spawnSync("criu", ["check"], { stdio: "ignore", timeout: 30_000 }).status === 0
  } catch {
    return false
  }
})()

/** A client on a `Containerd` whose `tasks.listPids` answers only after `delay` (the middle of `restore`). */
const slowListPidsClient = (namespace: string, stateDir: string, delay: Duration.DurationInput) =>
  LibcontainerdLive.layer({ stateDir }).pipe(
    Layer.provideMerge(
      Layer.mergeAll(ProcessIONode.layer({ drainTimeout: "300 millis" }), Backend.layerRecorder),
    ),
    Layer.provide(
      editTasks((c) => ({
        listPids: (id: string) => Effect.zipRight(Effect.sleep(delay), c.tasks.listPids(id)),
      })),
    ),
    Layer.provideMerge(containerdLayer(namespace)),
    Layer.orDie,
  )

describe("restore (real daemon)", () => {
  it.live(
    "a running container outlives its client and is restored: same pid, stdin and stdout, signals, exit",
    () =>
      scenario("restore", (namespace, stateDir) =>
        Effect.gen(function* () {
          const loop = `trap 'exit 143' TERM; while read l; do echo "got $l"; done`
          const before = yield* Effect.gen(function* () {
            const client = yield* Libcontainerd
            const stdio = yield* recordStdio
            yield* client.create("echo", busyboxSpec("echo", namespace, ["sh", "-c", loop]))
            const echoPid = yield* client.start("echo", { withStdin: true, attachStdio: stdio.attach })
            yield* stdio.io("init").stdin!.write(encode("one\n"))
            yield* stdio.waitFor("init", "got one\n")
            yield* client.create("cat", busyboxSpec("cat", namespace, ["cat"]))
            const catPid = yield* client.start("cat", { withStdin: true })
            return { echoPid, catPid }
          }).pipe(Effect.provide(clientA(namespace, stateDir)))

          yield* Effect.gen(function* () {
            // client A is gone; its containers are not
            assert.strictEqual((yield* taskRecord(namespace, "echo")).status, "RUNNING")
            assert.strictEqual((yield* taskRecord(namespace, "cat")).status, "RUNNING")
            const client = yield* Libcontainerd
            const stdio = yield* recordStdio
            const restored = yield* client.restore("echo", stdio.attach)
            assert.deepStrictEqual(restored, { alive: true, pid: before.echoPid })
            assert.deepStrictEqual(stdio.attached, ["init"])
            assert.strictEqual(yield* client.status("echo"), "running")
            assert.deepStrictEqual(yield* client.listPids("echo"), [before.echoPid])

            const io = stdio.io("init")
            assert.isDefined(io.stdin, "the restored process has its stdin")
            yield* io.stdin!.write(encode("two\n"))
            assert.strictEqual(yield* stdio.waitFor("init", "got two\n"), "got two\n")

            yield* client.signalProcess("echo", "init", "SIGTERM")
            const exit = yield* exitOf("echo")
            assert.strictEqual(exit.exitCode, 143)
            assert.strictEqual(exit.pid, before.echoPid)
            const deleted = yield* client.deleteTask("echo")
            assert.strictEqual(deleted.exitCode, 143)
            assert.deepStrictEqual(
              Fs.readdirSync(Path.join(stateDir, "echo")).filter((f) => f.startsWith("init-")),
              [],
              "the restored process's FIFOs are removed with it",
            )
            yield* client.delete("echo")
            assert.isFalse(Fs.existsSync(Path.join(stateDir, "echo")), "bundle dir removed")

            const catStdio = yield* recordStdio
            const cat = yield* client.restore("cat", catStdio.attach)
            assert.deepStrictEqual(cat, { alive: true, pid: before.catPid })
            yield* catStdio.io("init").stdin!.write(encode("meow\n"))
            yield* catStdio.waitFor("init", "meow\n")
            yield* client.closeStdin("cat", "init")
            assert.strictEqual((yield* exitOf("cat")).exitCode, 0)
            assert.strictEqual((yield* client.deleteTask("cat")).exitCode, 0)
            assert.strictEqual(catStdio.stdout.get("init"), "meow\n")
            yield* client.delete("cat")
          }).pipe(Effect.provide(clientLayer(namespace, stateDir)))
        }),
      ),
    60_000,
  )

  it.live(
    "a running exec is restored with its container: signal and exit reach the new client",
    () =>
      scenario("restore-exec", (namespace, stateDir) =>
        Effect.gen(function* () {
          const pids = yield* Effect.gen(function* () {
            const client = yield* Libcontainerd
            const base = busyboxSpec("box", namespace, ["sleep", "60"])
            yield* client.create("box", base)
            const init = yield* client.start("box")
            const worker = yield* client.exec(
              "box",
              "worker",
              Spec.processFrom(base, { args: ["sleep", "60"] }),
              {
                withStdin: true,
              },
            )
            return { init, worker }
          }).pipe(Effect.provide(clientA(namespace, stateDir)))

          yield* Effect.gen(function* () {
            assert.strictEqual((yield* taskRecord(namespace, "box", "worker")).status, "RUNNING")
            const client = yield* Libcontainerd
            const stdio = yield* recordStdio
            const restored = yield* client.restore("box", stdio.attach)
            assert.deepStrictEqual(restored, { alive: true, pid: pids.init })
            assert.deepStrictEqual([...stdio.attached].sort(), ["init", "worker"])
            assert.isDefined(stdio.io("worker").stdin, "the exec's stdin is re-attached")
            assert.deepInclude(yield* client.summary("box"), { pid: pids.worker, execId: "worker" })

            // the exec is known again: its id is taken, and it can be signalled
            const taken = yield* Effect.flip(
              client.exec(
                "box",
                "worker",
                Spec.processFrom(busyboxSpec("box", namespace, ["true"]), { args: ["true"] }),
              ),
            )
            assert.deepInclude(taken, { _tag: "Conflict", message: "id already in use" })
            yield* client.signalProcess("box", "worker", "SIGKILL")
            const exit = yield* exitOf("box", "worker")
            assert.strictEqual(exit.exitCode, 137)
            assert.strictEqual(exit.pid, pids.worker)
            // the exec is deleted after its exit, as one started by this client would be
            let gone = false
            for (let i = 0; i < 100 && !gone; i++) {
              gone = (yield* Effect.either(taskRecord(namespace, "box", "worker")))._tag === "Left"
              if (!gone) yield* Effect.sleep("20 millis")
            }
            assert.isTrue(gone, "the exec was deleted in containerd")
            // the client forgets the exec once its IO is released, just after the delete: until then a signal reaches
            // containerd, which answers NotFound too (in its own words)
            const signalled = Effect.flip(client.signalProcess("box", "worker", "SIGKILL"))
            let unknown = yield* signalled
            let tries = 1
            while (unknown._tag === "NotFound" && unknown.message !== "no such exec" && tries++ < 100) {
              yield* Effect.sleep("20 millis")
              unknown = yield* signalled
            }
            assert.deepInclude(unknown, { _tag: "NotFound", message: "no such exec" })

            yield* client.signalProcess("box", "init", "SIGKILL")
            assert.strictEqual((yield* exitOf("box")).exitCode, 137)
            yield* client.deleteTask("box")
            yield* client.delete("box")
          }).pipe(Effect.provide(clientLayer(namespace, stateDir)))
        }),
      ),
    60_000,
  )

  it.live(
    "a container that exited while no client ran is restored as not alive; deleteTask gives its exit code",
    () =>
      scenario("restore-dead", (namespace, stateDir) =>
        Effect.gen(function* () {
          yield* Effect.gen(function* () {
            const client = yield* Libcontainerd
            yield* client.create("brief", busyboxSpec("brief", namespace, ["sh", "-c", "sleep 1; exit 9"]))
            yield* client.start("brief")
          }).pipe(Effect.provide(clientA(namespace, stateDir)))
          yield* Effect.sleep("2 seconds")

          yield* Effect.gen(function* () {
            assert.strictEqual((yield* taskRecord(namespace, "brief")).status, "STOPPED")
            const client = yield* Libcontainerd
            const restored = yield* client.restore("brief")
            assert.isFalse(restored.alive)
            assert.strictEqual(yield* client.status("brief"), "stopped")
            const deleted = yield* client.deleteTask("brief")
            assert.strictEqual(deleted.exitCode, 9)
            // the exit happened before the restore: it is the caller's to handle, not an event
            const recorder = yield* Backend.Recorder
            const exits = (yield* recorder.events).filter((e) => e.type === "exit")
            assert.deepStrictEqual(exits, [])
            // the restored container is the client's like any other: it starts again
            yield* client.start("brief")
            assert.strictEqual((yield* exitOf("brief")).exitCode, 9)
            yield* client.deleteTask("brief")
            yield* client.delete("brief")
          }).pipe(Effect.provide(clientLayer(namespace, stateDir)))
        }),
      ),
    60_000,
  )

  it.live(
    "an exit while restore runs reaches the Backend",
    () =>
      scenario("restore-race", (namespace, stateDir) =>
        Effect.gen(function* () {
          const pid = yield* Effect.gen(function* () {
            const client = yield* Libcontainerd
            yield* client.create("racer", busyboxSpec("racer", namespace, ["sh", "-c", "sleep 1; exit 4"]))
            return yield* client.start("racer")
          }).pipe(Effect.provide(clientA(namespace, stateDir)))

          yield* Effect.gen(function* () {
            const client = yield* Libcontainerd
            // Tasks.Get says RUNNING; the exit comes while restore waits for ListPids
            const restored = yield* client.restore("racer")
            assert.deepStrictEqual(restored, { alive: true, pid })
            const exit = yield* exitOf("racer")
            assert.strictEqual(exit.exitCode, 4)
            assert.strictEqual(exit.pid, pid)
            yield* Effect.sleep("500 millis")
            const recorder = yield* Backend.Recorder
            const exits = (yield* recorder.events).filter((e) => e.type === "exit")
            assert.strictEqual(exits.length, 1, "exactly one exit")
            assert.strictEqual((yield* client.deleteTask("racer")).exitCode, 4)
            yield* client.delete("racer")
          }).pipe(Effect.provide(slowListPidsClient(namespace, stateDir, "2500 millis")))
        }),
      ),
    60_000,
  )

  it.live(
    "restore of an id in use is a Conflict; of a missing container NotFound, and nothing is registered",
    () =>
      scenario("restore-errors", (namespace, stateDir) =>
        Effect.gen(function* () {
          yield* Effect.gen(function* () {
            const client = yield* Libcontainerd
            yield* client.create("idle", busyboxSpec("idle", namespace, ["sleep", "60"]))
            yield* client.start("idle")
          }).pipe(Effect.provide(clientA(namespace, stateDir)))

          yield* Effect.gen(function* () {
            const client = yield* Libcontainerd
            const restored = yield* client.restore("idle")
            assert.isTrue(restored.alive)
            const twice = yield* Effect.flip(client.restore("idle"))
            assert.deepInclude(twice, { _tag: "Conflict", message: "id already in use" })
            assert.strictEqual(yield* client.status("idle"), "running", "the first restore is intact")

            yield* client.create("mine", busyboxSpec("mine", namespace, ["true"]))
            const created = yield* Effect.flip(client.restore("mine"))
            assert.deepInclude(created, { _tag: "Conflict", message: "id already in use" })

            const missing = yield* Effect.flip(client.restore("ghost"))
            assert.strictEqual(missing._tag, "NotFound")
            const unknown = yield* Effect.flip(client.status("ghost"))
            assert.deepInclude(unknown, { _tag: "NotFound", message: "no such container" })
            const again = yield* Effect.flip(client.restore("ghost"))
            assert.strictEqual(again._tag, "NotFound", "a failed restore leaves no reservation")
            yield* client.create("ghost", busyboxSpec("ghost", namespace, ["sh", "-c", "exit 3"]))
            yield* client.start("ghost")
            assert.strictEqual((yield* exitOf("ghost")).exitCode, 3)
            yield* client.deleteTask("ghost")
            yield* client.delete("ghost")
            yield* client.delete("mine")

            const invalid = yield* Effect.flip(client.restore("../idle"))
            assert.strictEqual(invalid._tag, "InvalidParameter")
          }).pipe(Effect.provide(clientLayer(namespace, stateDir)))
        }),
      ),
    60_000,
  )
})

/** A raw call on the suite's daemon in `namespace`, for what the service does not offer (listing leases, images). */
const rawCall = <Req, Res>(namespace: string, method: Grpcs.Method<Req, Res>, request: Req) =>
  Effect.acquireUseRelease(
    Effect.sync(() => new Grpc.Client(`unix://${address()}`, Grpc.credentials.createInsecure())),
    (client) => {
      const metadata = new Grpc.Metadata()
      metadata.set("containerd-namespace", namespace)
      return Grpcs.unary(client, method, request, metadata)
    },
    (client) => Effect.sync(() => client.close()),
  )

/** The ids of the leases containerd holds in a namespace. */
const listLeases = (namespace: string) =>
  Effect.map(rawCall(namespace, LeasesService.list, { filters: [] }), (r) => r.leases.map((l) => l.id))

/** The names of the images in a namespace. */
const listImages = (namespace: string) =>
  Effect.map(rawCall(namespace, ImagesService.list, { filters: [] }), (r) => r.images.map((i) => i.name))

/** The entry paths of a tar held in memory. */
const tarEntries = (bytes: Buffer) =>
  Effect.promise(async () => {
    const paths: Array<string> = []
    const parser = new Tar.Parser({
      onReadEntry: (entry) => {
        paths.push(entry.path)
        entry.resume()
      },
    })
    await new Promise<void>((resolve, reject) => {
      parser.on("end", resolve)
      parser.on("error", reject)
      parser.end(bytes)
    })
    return paths.sort()
  })

describe("checkpoints (real daemon)", () => {
  it.live(
    "the dir is uploaded and handed to task create; the failed restore is typed; blob and lease are gone",
    () =>
      Effect.gen(function* () {
        const namespace = freshNamespace("cpstart")
        const stateDir = tempStateDir()
        const checkpointDir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "checkpoint-dir-"))
        Fs.writeFileSync(Path.join(checkpointDir, "inventory.img"), "not really a CRIU image")
        Fs.mkdirSync(Path.join(checkpointDir, "sub"))
        Fs.writeFileSync(Path.join(checkpointDir, "sub", "pages-1.img"), Buffer.alloc(100_000, 7))

        interface Seen {
          readonly input: CreateTaskInput
          readonly stored: bigint
          readonly entries: ReadonlyArray<string>
        }
        const seen: Array<Seen> = []
        const observing = editTasks((c) => ({
          // while the task is created: what was uploaded, as the daemon stores it
          create: (input: CreateTaskInput) =>
            Effect.gen(function* () {
              if (input.checkpoint !== undefined) {
                const info = yield* c.content.info(input.checkpoint.digest)
                const bytes = yield* Stream.runFold(
                  c.content.read(input.checkpoint.digest),
                  Buffer.alloc(0),
                  (a, b) => Buffer.concat([a, b]),
                )
                seen.push({ input, stored: info.size, entries: yield* tarEntries(bytes) })
              } else {
                seen.push({ input, stored: -1n, entries: [] })
              }
              return yield* c.tasks.create(input)
            }),
        }))
        const client = LibcontainerdLive.layer({ stateDir }).pipe(
          Layer.provideMerge(
            Layer.mergeAll(ProcessIONode.layer({ drainTimeout: "300 millis" }), Backend.layerRecorder),
          ),
          Layer.provide(observing),
          Layer.provideMerge(containerdLayer(namespace)),
          Layer.orDie,
        )

        yield* Effect.gen(function* () {
          const lib = yield* Libcontainerd
          const c = yield* Containerd
          const inNs = Containerd.withNamespace(namespace)
          yield* lib.create("cp", busyboxSpec("cp", namespace, ["sleep", "60"]))
          const error = yield* Effect.flip(lib.start("cp", { checkpointDir }))
          // CRIU cannot restore a tar of made-up files: the runtime's failure, typed
          assert.strictEqual(error._tag, "System")
          assert.include(error.message, "restore")

          assert.strictEqual(seen.length, 1, "one task create")
          const { input, stored, entries } = seen[0]!
          const checkpoint = input.checkpoint!
          assert.isDefined(checkpoint, "the descriptor reached task create")
          assert.strictEqual(checkpoint.mediaType, checkpointMediaType)
          assert.match(checkpoint.digest, /^sha256:[0-9a-f]{64}$/)
          assert.strictEqual(stored, checkpoint.size, "the blob was in the store, of the descriptor's size")
          assert.includeMembers([...entries], ["./inventory.img", "./sub/", "./sub/pages-1.img"])

          const info = yield* Effect.flip(inNs(c.content.info(checkpoint.digest)))
          assert.strictEqual(info._tag, "NotFound", "the blob is deleted afterwards")
          assert.deepStrictEqual(yield* listLeases(namespace), [], "no lease left")
          assert.deepStrictEqual(yield* inNs(c.tasks.list()), [], "no task left")
          assert.deepStrictEqual(Fs.readdirSync(Path.join(stateDir, "cp")), [], "no FIFO left")

          // the container is unharmed: a plain start works
          const pid = yield* lib.start("cp")
          assert.isAbove(pid, 0)
          yield* lib.signalProcess("cp", "init", "SIGKILL")
          yield* exitOf("cp")
          yield* lib.deleteTask("cp")

          const missingDir = yield* Effect.flip(
            lib.start("cp", { checkpointDir: Path.join(checkpointDir, "nope") }),
          )
          assert.strictEqual(missingDir._tag, "System")
          const relative = yield* Effect.flip(lib.start("cp", { checkpointDir: "relative/dir" }))
          assert.strictEqual(relative._tag, "InvalidParameter")
          assert.strictEqual(seen.length, 2, "neither reached task create")
          assert.deepStrictEqual(yield* listLeases(namespace), [], "no lease left after the failed uploads")
          yield* lib.delete("cp")
        }).pipe(
          Effect.provide(client),
          Effect.ensuring(
            Effect.sync(() => {
              Fs.rmSync(stateDir, { recursive: true, force: true })
              Fs.rmSync(checkpointDir, { recursive: true, force: true })
            }),
          ),
        )
      }),
    60_000,
  )

  it.live.runIf(!criuWorks)(
    "createCheckpoint where CRIU cannot run: a typed error, the task runs on, no image, lease or file is left",
    () =>
      Effect.gen(function* () {
        const namespace = freshNamespace("cpfail")
        const stateDir = tempStateDir()
        const checkpointDir = Path.join(Fs.mkdtempSync(Path.join(Os.tmpdir(), "checkpoint-fail-")), "cp")
        const leases: Array<string | undefined> = []
        const observing = editTasks((c) => ({
          checkpoint: (input: Parameters<typeof c.tasks.checkpoint>[0]) =>
            Effect.zipRight(
              Effect.flatMap(FiberRef.get(currentLease), (lease) =>
                Effect.sync(() => leases.push(lease._tag === "Some" ? lease.value : undefined)),
              ),
              c.tasks.checkpoint(input),
            ),
        }))
        const client = LibcontainerdLive.layer({ stateDir }).pipe(
          Layer.provideMerge(
            Layer.mergeAll(ProcessIONode.layer({ drainTimeout: "300 millis" }), Backend.layerRecorder),
          ),
          Layer.provide(observing),
          Layer.provideMerge(containerdLayer(namespace)),
          Layer.orDie,
        )
        yield* Effect.gen(function* () {
          const lib = yield* Libcontainerd
          yield* lib.create("cpf", busyboxSpec("cpf", namespace, ["sleep", "60"]))
          const pid = yield* lib.start("cpf")
          const error = yield* Effect.flip(lib.createCheckpoint("cpf", checkpointDir, true))
          assert.strictEqual(error._tag, "System")
          assert.strictEqual(leases.length, 1, "the daemon was asked to checkpoint")
          assert.isDefined(leases[0], "under a lease, so its blobs are safe until the image refers to them")
          assert.strictEqual(yield* lib.status("cpf"), "running", "the task runs on")
          assert.deepStrictEqual(yield* lib.listPids("cpf"), [pid])
          assert.deepStrictEqual(yield* listImages(namespace), [], "no checkpoint image left")
          assert.deepStrictEqual(yield* listLeases(namespace), [], "no lease left")
          assert.isFalse(Fs.existsSync(checkpointDir), "nothing extracted")
          const relative = yield* Effect.flip(lib.createCheckpoint("cpf", "relative", false))
          assert.strictEqual(relative._tag, "InvalidParameter")
          const unknown = yield* Effect.flip(lib.createCheckpoint("nope", checkpointDir, false))
          assert.deepInclude(unknown, { _tag: "NotFound", message: "no such container" })
          assert.strictEqual(leases.length, 1, "neither reached the daemon")
          yield* lib.signalProcess("cpf", "init", "SIGKILL")
          yield* exitOf("cpf")
          yield* lib.deleteTask("cpf")
          yield* lib.delete("cpf")
        }).pipe(
          Effect.provide(client),
          Effect.ensuring(
            Effect.sync(() => {
              Fs.rmSync(stateDir, { recursive: true, force: true })
              Fs.rmSync(Path.dirname(checkpointDir), { recursive: true, force: true })
            }),
          ),
        )
      }),
    60_000,
  )

  it.live.runIf(criuWorks)(
    criuWorks
      ? "checkpoint → start from the checkpoint dir resumes the process"
      : "checkpoint → start from the checkpoint dir resumes the process — skipped: CRIU cannot run on this kernel (criu check failed)",
    () =>
      scenario("cpround", (namespace, stateDir) =>
        Effect.gen(function* () {
          const checkpointDir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "checkpoint-round-"))
          const client = yield* Libcontainerd
          const stdio = yield* recordStdio
          yield* client.create(
            "counter",
            busyboxSpec("counter", namespace, [
              "sh",
              "-c",
              "i=0; while true; do i=$((i+1)); echo c$i; sleep 0.1; done",
            ]),
          )
          yield* client.start("counter", { attachStdio: stdio.attach })
          yield* stdio.waitFor("init", "c5\n")
          yield* client.createCheckpoint("counter", checkpointDir, true)
          assert.isAbove(Fs.readdirSync(checkpointDir).length, 0, "the checkpoint is in the dir")
          yield* exitOf("counter")
          yield* client.deleteTask("counter")
          const last = Math.max(
            ...(stdio.stdout.get("init") ?? "").match(/c(\d+)/g)!.map((s) => Number(s.slice(1))),
          )

          const resumed = yield* recordStdio
          yield* client.start("counter", { checkpointDir, attachStdio: resumed.attach })
          yield* resumed.waitFor("init", `c${last + 3}\n`)
          assert.notInclude(
            resumed.stdout.get("init") ?? "",
            "c1\n",
            "the count went on, it did not start over",
          )
          yield* client.signalProcess("counter", "init", "SIGKILL")
          while ((yield* client.status("counter")) !== "stopped") yield* Effect.sleep("50 millis")
          yield* client.deleteTask("counter")
          Fs.rmSync(checkpointDir, { recursive: true, force: true })
        }).pipe(Effect.provide(clientLayer(namespace, stateDir))),
      ),
    60_000,
  )
})
