/**
 * Shared state and helpers of the in-memory containerd: per-namespace maps,
 * the calling fiber's namespace/lease/clock, error constructors in
 * containerd's shapes, timestamps from Effect's Clock.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import type * as ProcessIOMemory from "../../layers/ProcessIOMemory.js"
import type * as T from "../../domain/Types.js"
import { Conflict, GrpcCode, InvalidParameter, NotFound, System } from "../../errors/ContainerdError.js"
import { currentLease, currentNamespace } from "../../services/Containerd.js"
import type { Signal } from "../signal.js"

/** A process of a task: its init (`execId` "") or an exec. */
export interface Proc {
  readonly execId: string
  readonly args: ReadonlyArray<string>
  readonly terminal: boolean
  readonly paths: { readonly stdin: string; readonly stdout: string; readonly stderr: string }
  side: ProcessIOMemory.ProcessSide | undefined
  state: "CREATED" | "RUNNING" | "STOPPED"
  pid: number
  exitStatus: number
  exitedAt: T.Timestamp | undefined
  /** Completed with the exit once the process has stopped. */
  readonly exited: Signal<T.ExitStatus>
  /** The fiber playing the running process's script; interrupted to end it from outside. */
  fiber: Fiber.RuntimeFiber<void> | undefined
  /** The exit status it was ended with from outside (signal, OOM, the handle): the first one wins. */
  killedWith: number | undefined
  /** The signals ignored by the running script. */
  ignored: ReadonlySet<number>
  /** Signals sent while the task was paused, delivered at resume. */
  pending: Array<number>
  readonly signals: Array<number>
  /** Set at each resize of its terminal. */
  ptySize: { readonly width: number; readonly height: number } | undefined
  /** Completed at the first resize of its terminal, made when a script waits for one. */
  resized: Signal | undefined
  stdinClosed: boolean
  startedAtNanos: bigint
  /** The task's paused time when the process started: what was paused before does not count against it. */
  pausedBaselineMillis: number
}

/** A task: the init process, its execs and the container-wide pause state. */
export interface Task {
  readonly containerId: string
  readonly namespace: string
  readonly bundle: string
  readonly init: Proc
  readonly execs: Map<string, Proc>
  paused: boolean
  /** Open while the task runs; closed while it is paused. */
  readonly gate: Effect.Latch
  /** Time spent paused so far, and since when the task is paused now. */
  pausedTotalMillis: number
  pausedAtMillis: number | undefined
  /** The spec's `linux.resources`, merged with every `Tasks.Update`. */
  resources: unknown
  annotations: Readonly<Record<string, string>>
}

/** A committed blob. */
export interface Blob {
  readonly digest: string
  readonly data: Uint8Array
  readonly createdAt: T.Timestamp
  updatedAt: T.Timestamp
  labels: Readonly<Record<string, string>>
}

/** An unfinished upload, kept by its ref until committed or aborted. */
export interface Ingest {
  readonly ref: string
  readonly chunks: Array<Uint8Array>
  size: number
}

/** A lease and what it protects. */
export interface LeaseRecord {
  readonly lease: T.Lease
  readonly content: Set<string>
  readonly ingests: Set<string>
}

/** Everything containerd keeps for one namespace. */
export interface NamespaceState {
  readonly name: string
  readonly containers: Map<string, T.Container>
  readonly tasks: Map<string, Task>
  /** Container ids whose task create is in progress (waiting for the readers). */
  readonly creating: Set<string>
  readonly blobs: Map<string, Blob>
  readonly ingests: Map<string, Ingest>
  /** Refs held by a writer. */
  readonly locks: Set<string>
  readonly images: Map<string, T.Image>
  readonly leases: Map<string, LeaseRecord>
}

/** All namespaces, made on first use. */
export class Namespaces {
  private readonly byName = new Map<string, NamespaceState>()

  constructor(readonly defaultNamespace: string) {}

  get(name: string): NamespaceState {
    let state = this.byName.get(name)
    if (state === undefined) {
      state = {
        name,
        containers: new Map(),
        tasks: new Map(),
        creating: new Set(),
        blobs: new Map(),
        ingests: new Map(),
        locks: new Set(),
        images: new Map(),
        leases: new Map(),
      }
      this.byName.set(name, state)
    }
    return state
  }
}

/** What one call runs with: its namespace's state, its lease, and the caller's clock. */
export interface Ctx {
  readonly ns: NamespaceState
  readonly lease: Option.Option<string>
  readonly clock: Clock.Clock
}

/** A fiber's namespace, lease and clock. */
const ctxOf = (namespaces: Namespaces, fiber: Fiber.RuntimeFiber<unknown, unknown>): Ctx => {
  const namespace = fiber.getFiberRef(currentNamespace)
  return {
    ns: namespaces.get(Option.isSome(namespace) ? namespace.value : namespaces.defaultNamespace),
    lease: fiber.getFiberRef(currentLease),
    clock: Context.get(fiber.currentDefaultServices, Clock.Clock),
  }
}

/** Runs `f` with the calling fiber's namespace, lease and clock, read in the same step (every call does it). */
export const withContext = <A, E, R>(
  namespaces: Namespaces,
  f: (ctx: Ctx) => Effect.Effect<A, E, R>,
): Effect.Effect<A, E, R> => Effect.withFiberRuntime((fiber) => f(ctxOf(namespaces, fiber)))

/** The clock's time as a protobuf timestamp. */
export const now = (clock: Clock.Clock): T.Timestamp => {
  const nanos = clock.unsafeCurrentTimeNanos()
  const seconds = nanos / 1_000_000_000n
  return { seconds, nanos: Number(nanos - seconds * 1_000_000_000n) }
}

/** containerd NOT_FOUND. */
export const notFound = (message: string): NotFound => new NotFound({ message, code: GrpcCode.NOT_FOUND })

/** containerd ALREADY_EXISTS. */
export const alreadyExists = (message: string): Conflict =>
  new Conflict({ message, code: GrpcCode.ALREADY_EXISTS })

/** containerd FAILED_PRECONDITION. */
export const failedPrecondition = (message: string): Conflict =>
  new Conflict({ message, code: GrpcCode.FAILED_PRECONDITION })

/** containerd INVALID_ARGUMENT. */
export const invalidArgument = (message: string): InvalidParameter =>
  new InvalidParameter({ message, code: GrpcCode.INVALID_ARGUMENT })

/** containerd OUT_OF_RANGE. */
export const outOfRange = (message: string): InvalidParameter =>
  new InvalidParameter({ message, code: GrpcCode.OUT_OF_RANGE })

/** A runtime failure: containerd sends these as UNKNOWN with text only. */
export const unknown = (message: string): System => new System({ message, code: GrpcCode.UNKNOWN })

/** containerd UNAVAILABLE: what a client sees while the daemon restarts. */
export const unavailable = (message: string): System => new System({ message, code: GrpcCode.UNAVAILABLE })

/** containerd's message for a missing container. */
export const containerNotFound = (ns: NamespaceState, id: string): NotFound =>
  notFound(`container "${id}" in namespace "${ns.name}": not found`)

/** Reads a nested field of a loosely typed value (a spec as the caller gave it). */
export const path = (value: unknown, ...keys: ReadonlyArray<string>): unknown => {
  let current = value
  for (const key of keys) {
    if (typeof current !== "object" || current === null) return undefined
    current = (current as Record<string, unknown>)[key]
  }
  return current
}

/** A byte count from a spec field (number, bigint or numeric string); `undefined` when absent or not positive. */
export const positiveBigint = (value: unknown): bigint | undefined => {
  try {
    if (typeof value === "bigint") return value > 0n ? value : undefined
    if (typeof value === "number" && Number.isFinite(value))
      return value > 0 ? BigInt(Math.trunc(value)) : undefined
    if (typeof value === "string" && value.trim() !== "") {
      const n = BigInt(value)
      return n > 0n ? n : undefined
    }
  } catch {
    return undefined
  }
  return undefined
}

/** The args of a process spec, as strings. */
export const argsOf = (process: unknown): ReadonlyArray<string> => {
  const args = path(process, "args")
  return Array.isArray(args) ? args.map((a) => String(a)) : []
}
