/**
 * The wire service: one method per containerd call the library uses, taking
 * and returning domain values. Transport details (gRPC, `Any` packing, the
 * namespace header) stay inside the layers.
 *
 * Layers: `ContainerdLive.layer` / `layerConfig` (gRPC over the unix socket),
 * `PrivateContainerd.layer` (a daemon of its own), `ContainerdMemory.layer`
 * (in memory, for tests).
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as Option from "effect/Option"
import type * as Stream from "effect/Stream"
import { type ContainerdError, InvalidParameter } from "../errors/ContainerdError.js"
import type { LinuxResources } from "../domain/Spec.js"
import type {
  CheckpointOptions,
  Container,
  ContainerInput,
  ContentInfo,
  CreateTaskInput,
  DeletedProcess,
  Descriptor,
  Envelope,
  ExecInput,
  ExitStatus,
  Image,
  Lease,
  PidInfo,
  ProcessRecord,
  ProcessRef,
  TaskMetric,
} from "../domain/Types.js"

/** containerd's identifier rule for ids and namespaces. */
export const identifierPattern: RegExp = /^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/

/** The longest identifier containerd accepts. */
export const identifierMaxLength = 76

/** Checks an id or namespace against containerd's identifier rule. */
export const validateIdentifier = (field: string, value: string): Effect.Effect<string, InvalidParameter> => {
  if (value.length === 0) return Effect.fail(new InvalidParameter({ message: `${field}: must not be empty` }))
  if (value.length > identifierMaxLength) {
    return Effect.fail(
      new InvalidParameter({
        message: `${field}: ${JSON.stringify(value.slice(0, 20))}… is ${value.length} characters, at most ${identifierMaxLength} are allowed`,
      }),
    )
  }
  if (!identifierPattern.test(value)) {
    return Effect.fail(
      new InvalidParameter({
        message: `${field}: ${JSON.stringify(value)} is not a valid identifier (letters and digits in segments joined by ".", "_" or "-")`,
      }),
    )
  }
  return Effect.succeed(value)
}

/** The reply of `tasks.create` and `tasks.start`. */
export interface Started {
  readonly pid: number
}

/** What `content.write` takes besides the data. */
export interface WriteContentOptions {
  /** The writer's ref: a second upload with the same ref resumes or restarts it. */
  readonly ref: string
  /** The size the blob must have (0n when unknown). */
  readonly size?: bigint
  /** The digest the blob must have; without it the daemon's digest of what was written is taken. */
  readonly digest?: string
  /** Media type of the returned descriptor (default `application/octet-stream`). */
  readonly mediaType?: string
  readonly labels?: Readonly<Record<string, string>>
}

/** The service's interface. */
export declare namespace Containerd {
  /** Every method of the wire service. */
  export interface Service {
    /** The namespace calls use unless `withNamespace` overrides it. */
    readonly namespace: string
    /** The daemon's version (`Version.Version`). */
    readonly version: Effect.Effect<{ readonly version: string; readonly revision: string }, ContainerdError>
    /** Whether the daemon serves (`grpc.health.v1.Health/Check`). */
    readonly health: Effect.Effect<"UNKNOWN" | "SERVING" | "NOT_SERVING" | "SERVICE_UNKNOWN", ContainerdError>
    readonly containers: {
      readonly create: (container: ContainerInput) => Effect.Effect<Container, ContainerdError>
      readonly get: (id: string) => Effect.Effect<Container, ContainerdError>
      readonly list: (
        filters?: ReadonlyArray<string>,
      ) => Effect.Effect<ReadonlyArray<Container>, ContainerdError>
      /** Replaces the fields named in `fieldPaths` (all when empty), e.g. `["labels", "spec"]`. */
      readonly update: (
        container: ContainerInput,
        fieldPaths?: ReadonlyArray<string>,
      ) => Effect.Effect<Container, ContainerdError>
      readonly delete: (id: string) => Effect.Effect<void, ContainerdError>
    }
    readonly tasks: {
      readonly create: (input: CreateTaskInput) => Effect.Effect<Started, ContainerdError>
      readonly start: (ref: ProcessRef) => Effect.Effect<Started, ContainerdError>
      readonly get: (ref: ProcessRef) => Effect.Effect<ProcessRecord, ContainerdError>
      readonly list: (filter?: string) => Effect.Effect<ReadonlyArray<ProcessRecord>, ContainerdError>
      readonly delete: (ref: {
        readonly containerId: string
      }) => Effect.Effect<DeletedProcess, ContainerdError>
      readonly deleteProcess: (ref: {
        readonly containerId: string
        readonly execId: string
      }) => Effect.Effect<DeletedProcess, ContainerdError>
      readonly kill: (
        input: ProcessRef & { readonly signal: number; readonly all?: boolean },
      ) => Effect.Effect<void, ContainerdError>
      readonly exec: (input: ExecInput) => Effect.Effect<void, ContainerdError>
      readonly resizePty: (
        input: ProcessRef & { readonly width: number; readonly height: number },
      ) => Effect.Effect<void, ContainerdError>
      readonly closeIO: (
        input: ProcessRef & { readonly stdin: boolean },
      ) => Effect.Effect<void, ContainerdError>
      readonly pause: (containerId: string) => Effect.Effect<void, ContainerdError>
      readonly resume: (containerId: string) => Effect.Effect<void, ContainerdError>
      readonly listPids: (containerId: string) => Effect.Effect<ReadonlyArray<PidInfo>, ContainerdError>
      readonly checkpoint: (input: {
        readonly containerId: string
        readonly parentCheckpoint?: string
        readonly options?: CheckpointOptions
      }) => Effect.Effect<ReadonlyArray<Descriptor>, ContainerdError>
      readonly update: (input: {
        readonly containerId: string
        readonly resources: LinuxResources
        readonly annotations?: Readonly<Record<string, string>>
      }) => Effect.Effect<void, ContainerdError>
      /** Blocks until the process exits; interrupting the fiber cancels the call. */
      readonly wait: (ref: ProcessRef) => Effect.Effect<ExitStatus, ContainerdError>
      /** Metrics of the tasks matching the filters, e.g. `["id==web"]`; cgroups v1/v2 payloads decoded. */
      readonly metrics: (
        filters: ReadonlyArray<string>,
      ) => Effect.Effect<ReadonlyArray<TaskMetric>, ContainerdError>
    }
    readonly content: {
      readonly info: (digest: string) => Effect.Effect<ContentInfo, ContainerdError>
      /** The blob's bytes as they arrive, pulled on demand. */
      readonly read: (
        digest: string,
        range?: { readonly offset?: bigint; readonly size?: bigint },
      ) => Stream.Stream<Uint8Array, ContainerdError>
      /**
       * Writes a blob (STAT → WRITE… → COMMIT on one `Content.Write` stream).
       * A blob that already exists counts as written. Runs under the current
       * lease (`withLease`) when there is one.
       */
      readonly write: <E, R>(
        options: WriteContentOptions,
        data: Stream.Stream<Uint8Array, E, R>,
      ) => Effect.Effect<Descriptor, ContainerdError | E, R>
      readonly delete: (digest: string) => Effect.Effect<void, ContainerdError>
      /** Abandons an unfinished upload. */
      readonly abort: (ref: string) => Effect.Effect<void, ContainerdError>
    }
    readonly images: {
      readonly get: (name: string) => Effect.Effect<Image, ContainerdError>
      readonly create: (image: Image) => Effect.Effect<Image, ContainerdError>
      readonly delete: (
        name: string,
        options?: { readonly sync?: boolean },
      ) => Effect.Effect<void, ContainerdError>
    }
    readonly leases: {
      readonly create: (options?: {
        readonly id?: string
        readonly labels?: Readonly<Record<string, string>>
      }) => Effect.Effect<Lease, ContainerdError>
      readonly delete: (
        id: string,
        options?: { readonly sync?: boolean },
      ) => Effect.Effect<void, ContainerdError>
    }
    readonly events: {
      /** Envelopes matching any of the filters; the finalizer cancels the subscription. */
      readonly subscribe: (filters: ReadonlyArray<string>) => Stream.Stream<Envelope, ContainerdError>
      /**
       * `subscribe` run to its end, each envelope handed to `onEnvelope` in order (the call waits while it runs);
       * the end, a failure or interruption cancels the call. Optional: a layer may offer it for consumers that need
       * no Stream (`TaskEventsLive` takes it when present), since a Stream costs its machinery on every envelope.
       */
      readonly forEach?: (
        filters: ReadonlyArray<string>,
        onEnvelope: (envelope: Envelope) => Effect.Effect<unknown>,
      ) => Effect.Effect<void, ContainerdError>
    }
  }
}

/** The wire service's tag. */
export class Containerd extends Context.Tag("effect-containerd/Containerd")<
  Containerd,
  Containerd.Service
>() {
  /** Runs an effect (or stream) with another containerd namespace than the layer's default. */
  static readonly withNamespace = (namespace: string) => withNamespace(namespace)
  /** Runs an effect with calls carrying the `containerd-lease` header. */
  static readonly withLease = (lease: string) => withLease(lease)
}

/** The per-fiber namespace override; `None` means the layer's default. */
export const currentNamespace: FiberRef.FiberRef<Option.Option<string>> = FiberRef.unsafeMake<
  Option.Option<string>
>(Option.none())

/** The per-fiber lease the calls carry, if any. */
export const currentLease: FiberRef.FiberRef<Option.Option<string>> = FiberRef.unsafeMake<
  Option.Option<string>
>(Option.none())

/**
 * Runs an effect with calls in another namespace. An invalid namespace fails
 * with `InvalidParameter` before any call.
 */
export const withNamespace =
  (namespace: string) =>
  <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E | InvalidParameter, R> =>
    Effect.flatMap(validateIdentifier("namespace", namespace), () =>
      Effect.locally(self, currentNamespace, Option.some(namespace)),
    )

/** Runs an effect with calls carrying the lease `lease`. */
export const withLease =
  (lease: string) =>
  <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.locally(self, currentLease, Option.some(lease))

/**
 * Creates a lease, runs `use` under it, and deletes the lease afterwards
 * whatever happens: what `use` uploads is protected from garbage collection
 * only while it runs, so a crash leaves nothing pinned.
 */
export const leased = <A, E, R>(
  use: (lease: Lease) => Effect.Effect<A, E, R>,
  options?: { readonly labels?: Readonly<Record<string, string>> },
): Effect.Effect<A, E | ContainerdError, R | Containerd> =>
  Effect.flatMap(Containerd, (containerd) =>
    Effect.acquireUseRelease(
      containerd.leases.create(options?.labels === undefined ? {} : { labels: options.labels }),
      (lease) => withLease(lease.id)(use(lease)),
      (lease) => Effect.ignore(containerd.leases.delete(lease.id, { sync: true })),
    ),
  )
