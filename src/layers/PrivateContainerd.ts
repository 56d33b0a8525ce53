/**
 * A private containerd: the embedded default for the demo, for tests, and for
 * users who want containers without a system daemon.
 *
 * `PrivateContainerd.layer()` writes a config under a fresh temp dir (its own
 * root, state, gRPC and ttrpc sockets), spawns `containerd` as a child, waits
 * until it answers, and provides `Containerd` bound to it. On release it kills
 * and deletes every task the daemon still has (its shims would outlive it),
 * stops the daemon by pid (SIGTERM, SIGKILL after a bound), unmounts whatever
 * is still mounted under its dir and removes the dir.
 *
 * @since 0.1.0
 */
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import { System, wrapError, type ContainerdError } from "../errors/ContainerdError.js"
import { Containerd } from "../services/Containerd.js"
import * as ContainerdLive from "./ContainerdLive.js"

/** Where the private daemon lives. */
export interface Info {
  /** The gRPC socket path. */
  readonly address: string
  /** The temp dir holding config, root, state and sockets. */
  readonly dir: string
  readonly root: string
  readonly state: string
  /** The daemon's pid. */
  readonly pid: number
}

/** Options of the private daemon. */
export interface Options {
  /** Parent of the daemon's temp dir (default: the OS temp dir). */
  readonly parentDir?: string
  /** Reuse an existing dir (keeps root and state across restarts) instead of a fresh one. */
  readonly dir?: string
  /** How long to wait for the daemon to answer (default 20 s). */
  readonly startTimeout?: Duration.DurationInput
  /** How long SIGTERM gets before SIGKILL on release (default 5 s). */
  readonly stopTimeout?: Duration.DurationInput
  /** containerd log level (default "warn"). */
  readonly logLevel?: string
  /** Default namespace of the `Containerd` the layer provides (default "default"). */
  readonly namespace?: string
  /** Whether to remove the dir on release (default true unless `dir` was given). */
  readonly removeDir?: boolean
}

/** The running private daemon, provided beside `Containerd` by `layer`. */
export class PrivateContainerd extends Context.Tag("effect-containerd/PrivateContainerd")<
  PrivateContainerd,
  Info
>() {}

const which = (name: string): string | undefined => {
  for (const dir of (
    process.env.PATH ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  ).split(":")) {
    const candidate = Path.join(dir, name)
    try {
      Fs.accessSync(candidate, Fs.constants.X_OK)
      return candidate
    } catch {
      // not here
    }
  }
  return undefined
}

const checkPrerequisites = Effect.suspend(() => {
  const missing = ["containerd", "runc"].filter((name) => which(name) === undefined)
  if (missing.length > 0) {
    return Effect.fail(
      new System({
        message: `cannot start a private containerd: ${missing.join(" and ")} not found on PATH (install the Debian packages: apt-get install -y ${missing.join(" ")}, or run scripts/prerequisites.sh)`,
      }),
    )
  }
  if (typeof process.getuid === "function" && process.getuid() !== 0) {
    return Effect.fail(
      new System({
        message:
          "cannot start a private containerd: it must run as root (uid 0); run as root or set CONTAINERD_ADDRESS to a daemon you can reach",
      }),
    )
  }
  return Effect.void
})

const configToml = (dir: string, logLevel: string) =>
  [
    "version = 2",
    `root = ${JSON.stringify(Path.join(dir, "root"))}`,
    `state = ${JSON.stringify(Path.join(dir, "state"))}`,
    `disabled_plugins = ["io.containerd.grpc.v1.cri"]`,
    "",
    "[grpc]",
    `  address = ${JSON.stringify(Path.join(dir, "containerd.sock"))}`,
    "",
    "[ttrpc]",
    `  address = ${JSON.stringify(Path.join(dir, "containerd.sock.ttrpc"))}`,
    "",
    "[debug]",
    `  level = ${JSON.stringify(logLevel)}`,
    "",
  ].join("\n")

const canConnect = (socket: string) =>
  Effect.async<boolean>((resume) => {
    const conn = Net.connect(socket)
    conn.once("connect", () => {
      conn.destroy()
      resume(Effect.succeed(true))
    })
    conn.once("error", () => {
      conn.destroy()
      resume(Effect.succeed(false))
    })
    return Effect.sync(() => conn.destroy())
  })

const tail = (file: string) => {
  try {
    return Fs.readFileSync(file, "utf8").split("\n").slice(-15).join("\n")
  } catch {
    return ""
  }
}

/** Mount points under `dir`, deepest first. */
const mountsUnder = (dir: string): ReadonlyArray<string> => {
  try {
    return Fs.readFileSync("/proc/self/mountinfo", "utf8")
      .split("\n")
      .map((line) => line.split(" ")[4] ?? "")
      .map((escaped) =>
        escaped.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(Number.parseInt(oct, 8))),
      )
      .filter((mountPoint) => mountPoint === dir || mountPoint.startsWith(dir + "/"))
      .sort((a, b) => b.length - a.length)
  } catch {
    return []
  }
}

const unmountAndRemove = (dir: string) =>
  Effect.sync(() => {
    for (const mountPoint of mountsUnder(dir)) {
      ChildProcess.spawnSync("umount", ["-l", mountPoint], { stdio: "ignore" })
    }
    Fs.rmSync(dir, { recursive: true, force: true })
  })

const processAlive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/**
 * Kills (SIGKILL, all processes) and deletes every task, then deletes every
 * container, in the current namespace (`Containerd.withNamespace`).
 */
export const emptyNamespace: Effect.Effect<void, ContainerdError, Containerd> = Effect.gen(function* () {
  const containerd = yield* Containerd
  const tasks = yield* containerd.tasks.list()
  yield* Effect.forEach(
    tasks,
    (task) =>
      containerd.tasks
        .kill({ containerId: task.containerId, signal: 9, all: true })
        .pipe(
          Effect.ignore,
          Effect.zipRight(
            containerd.tasks
              .wait({ containerId: task.containerId })
              .pipe(Effect.timeout("10 seconds"), Effect.ignore),
          ),
          Effect.zipRight(containerd.tasks.delete({ containerId: task.containerId }).pipe(Effect.ignore)),
        ),
    { concurrency: 8, discard: true },
  )
  const containers = yield* containerd.containers.list()
  yield* Effect.forEach(containers, (c) => containerd.containers.delete(c.id).pipe(Effect.ignore), {
    concurrency: 8,
    discard: true,
  })
})

/** Empties every namespace the daemon has tasks in (its shims would outlive it). */
const killAllTasks = (state: string) => {
  const taskRoot = Path.join(state, "io.containerd.runtime.v2.task")
  const namespaces = Fs.existsSync(taskRoot) ? Fs.readdirSync(taskRoot) : []
  return Effect.forEach(
    namespaces,
    (namespace) => emptyNamespace.pipe(Containerd.withNamespace(namespace), Effect.ignore),
    { discard: true },
  )
}

/**
 * runc keeps a state dir per namespace under its default root, and it outlives the daemon: the empty ones of the
 * namespaces this daemon ran tasks in (its task root names them) are ours to remove.
 */
const removeEmptyRuncDirs = (state: string): void => {
  const taskRoot = Path.join(state, "io.containerd.runtime.v2.task")
  const namespaces = Fs.existsSync(taskRoot) ? Fs.readdirSync(taskRoot) : []
  for (const namespace of namespaces) {
    try {
      Fs.rmdirSync(Path.join(runcDefaultRoot, namespace))
    } catch {
      // not empty (another daemon's containers), or not there: leave it
    }
  }
}

/** Where runc keeps container state unless the runtime options say otherwise. */
const runcDefaultRoot = "/run/containerd/runc"

/**
 * Starts a private containerd in a Scope. The release stops it by pid and removes its dir;
 * tasks are not touched here (see `layer`, which kills them first through `Containerd`).
 */
export const start = (options: Options = {}): Effect.Effect<Info, ContainerdError, Scope.Scope> =>
  Effect.gen(function* () {
    yield* checkPrerequisites
    const startTimeout = options.startTimeout ?? "20 seconds"
    const stopTimeout = Duration.toMillis(options.stopTimeout ?? "5 seconds")
    const removeDir = options.removeDir ?? options.dir === undefined

    const dir = yield* Effect.acquireRelease(
      Effect.try({
        try: () => {
          if (options.dir !== undefined) {
            Fs.mkdirSync(options.dir, { recursive: true, mode: 0o711 })
            return options.dir
          }
          return Fs.mkdtempSync(Path.join(options.parentDir ?? Os.tmpdir(), "effect-containerd-"))
        },
        catch: (cause) =>
          new System({ message: `cannot create the private containerd dir: ${String(cause)}`, cause }),
      }),
      (dir) => (removeDir ? unmountAndRemove(dir) : Effect.void),
    )
    // runs after the daemon stopped (finalizers run last-added first), before the dir goes
    yield* Effect.addFinalizer(() => Effect.sync(() => removeEmptyRuncDirs(Path.join(dir, "state"))))
    const configPath = Path.join(dir, "config.toml")
    const logPath = Path.join(dir, "containerd.log")
    const address = Path.join(dir, "containerd.sock")
    yield* Effect.try({
      try: () => {
        Fs.mkdirSync(Path.join(dir, "root"), { recursive: true, mode: 0o711 })
        Fs.mkdirSync(Path.join(dir, "state"), { recursive: true, mode: 0o711 })
        Fs.writeFileSync(configPath, configToml(dir, options.logLevel ?? "warn"))
        Fs.rmSync(address, { force: true })
      },
      catch: (cause) =>
        new System({ message: `cannot write the private containerd config in ${dir}`, cause }),
    })

    const child = yield* Effect.acquireRelease(
      Effect.try({
        try: () => {
          const log = Fs.openSync(logPath, "a")
          try {
            return ChildProcess.spawn(which("containerd") ?? "containerd", ["--config", configPath], {
              stdio: ["ignore", log, log],
              detached: false,
            })
          } finally {
            Fs.closeSync(log)
          }
        },
        catch: (cause) => new System({ message: "cannot spawn containerd", cause }),
      }),
      (child) =>
        Effect.async<void>((resume) => {
          const pid = child.pid
          if (pid === undefined || child.exitCode !== null || child.signalCode !== null) {
            resume(Effect.void)
            return
          }
          const timer = setTimeout(() => {
            if (processAlive(pid)) process.kill(pid, "SIGKILL")
          }, stopTimeout)
          child.once("exit", () => {
            clearTimeout(timer)
            resume(Effect.void)
          })
          process.kill(pid, "SIGTERM")
        }),
    )
    const pid = child.pid
    if (pid === undefined) {
      return yield* new System({ message: `containerd did not start: ${tail(logPath)}` })
    }

    const exited = Effect.async<never, System>((resume) => {
      const onExit = (code: number | null, signal: string | null) =>
        resume(
          Effect.fail(
            new System({
              message: `containerd exited during start-up (code ${code}, signal ${signal}); its log says:\n${tail(logPath)}`,
            }),
          ),
        )
      child.once("exit", onExit)
      return Effect.sync(() => child.off("exit", onExit))
    })

    const ready = Effect.gen(function* () {
      while (true) {
        if (Fs.existsSync(address) && (yield* canConnect(address))) return
        yield* Effect.sleep("25 millis")
      }
    })

    yield* Effect.raceFirst(ready, exited).pipe(
      Effect.timeoutFail({
        duration: startTimeout,
        onTimeout: () =>
          new System({
            message: `containerd did not answer on ${address} within ${Duration.format(startTimeout)}; its log says:\n${tail(logPath)}`,
          }),
      }),
    )

    return {
      address,
      dir,
      root: Path.join(dir, "root"),
      state: Path.join(dir, "state"),
      pid,
    } satisfies Info
  })

/**
 * A private containerd and a `Containerd` bound to it. On release every task
 * it still has is killed and deleted before the daemon stops.
 */
export const layer = (options: Options = {}): Layer.Layer<Containerd | PrivateContainerd, ContainerdError> =>
  Layer.scopedContext(
    Effect.gen(function* () {
      const info = yield* start(options)
      const context = yield* Layer.build(
        ContainerdLive.layer({ address: info.address, namespace: options.namespace ?? "default" }),
      )
      yield* Effect.addFinalizer(() =>
        killAllTasks(info.state).pipe(
          Effect.provide(context),
          Effect.timeout("30 seconds"),
          Effect.catchAllCause((cause) =>
            Effect.logWarning("private containerd: task clean-up incomplete", cause),
          ),
        ),
      )
      return Context.add(context, PrivateContainerd, info)
    }),
  ).pipe(Layer.mapError(wrapError))
