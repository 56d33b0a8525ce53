/**
 * The live `Containerd`: one grpc-js channel to containerd's unix socket,
 * acquired in a Scope and closed on release.
 *
 * ```ts
 * const ContainerdLayer = ContainerdLive.layer({ address: "/run/containerd/containerd.sock", namespace: "jobs" })
 * ```
 *
 * @since 0.1.0
 */
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Path from "node:path"
import * as Grpc from "@grpc/grpc-js"
import * as Config from "effect/Config"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { ContentService, WriteAction } from "../../generated/containerd/services/content/v1/content.js"
import {
  type Container as PbContainer,
  ContainersService,
} from "../../generated/containerd/services/containers/v1/containers.js"
import {
  type Envelope as PbEnvelope,
  EventsService,
} from "../../generated/containerd/services/events/v1/events.js"
import { type Image as PbImage, ImagesService } from "../../generated/containerd/services/images/v1/images.js"
import { LeasesService } from "../../generated/containerd/services/leases/v1/leases.js"
import { TasksService } from "../../generated/containerd/services/tasks/v1/tasks.js"
import { VersionService } from "../../generated/containerd/services/version/v1/version.js"
import type { Descriptor as PbDescriptor } from "../../generated/containerd/types/descriptor.js"
import { type Process as PbProcess, Status } from "../../generated/containerd/types/task/task.js"
import { HealthCheckResponse_ServingStatus, HealthService } from "../../generated/grpc/health/v1/health.js"
import * as Spec from "../domain/Spec.js"
import type * as T from "../domain/Types.js"
import { type ContainerdError, GrpcCode, InvalidParameter, System } from "../errors/ContainerdError.js"
import * as Any from "../internal/any.js"
import * as Call from "../internal/grpc.js"
import {
  Containerd,
  currentLease,
  currentNamespace,
  validateIdentifier,
  type WriteContentOptions,
} from "../services/Containerd.js"

/** Options of the live layer. */
export interface Options {
  /** Path of containerd's gRPC socket (a `unix://` prefix is accepted). */
  readonly address: string
  /** Namespace of every call unless overridden with `Containerd.withNamespace` (default "default"). */
  readonly namespace?: string
  /** How long the connection check at start-up may take (default 5 s). */
  readonly connectTimeout?: Duration.DurationInput
  /** Largest message sent or received (default 16 MiB, containerd's own limit). */
  readonly maxMessageBytes?: number
  /** grpc-js client interceptors (tracing, call accounting). */
  readonly interceptors?: ReadonlyArray<Grpc.Interceptor>
}

/** The default socket of a system containerd. */
export const defaultAddress = "/run/containerd/containerd.sock"

const socketPath = (address: string): Effect.Effect<string, InvalidParameter> => {
  const path = address.startsWith("unix://") ? address.slice("unix://".length) : address
  if (path.length === 0) {
    return Effect.fail(
      new InvalidParameter({ message: "address: must not be empty (the path of containerd's socket)" }),
    )
  }
  if (!Path.isAbsolute(path)) {
    return Effect.fail(
      new InvalidParameter({
        message: `address: ${JSON.stringify(address)} must be an absolute path to a unix socket`,
      }),
    )
  }
  return Effect.succeed(path)
}

const chunkLimit = 1024 * 1024

const statusName: Record<number, T.TaskStatus> = {
  [Status.UNKNOWN]: "UNKNOWN",
  [Status.CREATED]: "CREATED",
  [Status.RUNNING]: "RUNNING",
  [Status.STOPPED]: "STOPPED",
  [Status.PAUSED]: "PAUSED",
  [Status.PAUSING]: "PAUSING",
}

const toProcess = (p: PbProcess | undefined, containerId: string): T.ProcessRecord => ({
  containerId: p?.containerId || containerId,
  id: p?.id ?? "",
  pid: p?.pid ?? 0,
  status: statusName[p?.status ?? 0] ?? "UNKNOWN",
  stdin: p?.stdin ?? "",
  stdout: p?.stdout ?? "",
  stderr: p?.stderr ?? "",
  terminal: p?.terminal ?? false,
  exitStatus: p?.exitStatus ?? 0,
  exitedAt: p?.exitedAt === undefined || p.exitedAt.seconds <= 0n ? undefined : p.exitedAt,
})

const toDescriptor = (d: PbDescriptor): T.Descriptor => ({
  mediaType: d.mediaType,
  digest: d.digest,
  size: d.size,
  ...(Object.keys(d.annotations).length > 0 ? { annotations: d.annotations } : {}),
})

const fromDescriptor = (d: T.Descriptor): PbDescriptor => ({
  mediaType: d.mediaType,
  digest: d.digest,
  size: d.size,
  annotations: { ...d.annotations },
})

/** A container record from the daemon; `sent` is the spec just sent, so the echoed copy need not be decoded. */
const toContainer = (
  c: PbContainer | undefined,
  sent?: Spec.Spec,
): Effect.Effect<T.Container, ContainerdError> =>
  Effect.gen(function* () {
    if (c === undefined) return yield* new System({ message: "containerd answered without a container" })
    const spec = sent !== undefined ? sent : c.spec === undefined ? undefined : yield* Any.unpackSpec(c.spec)
    const options = c.runtime?.options === undefined ? undefined : Any.unpackRuncOptions(c.runtime.options)
    return {
      id: c.id,
      labels: c.labels,
      image: c.image,
      runtime: { name: c.runtime?.name ?? "", ...(options === undefined ? {} : { options }) },
      spec,
      snapshotter: c.snapshotter,
      snapshotKey: c.snapshotKey,
      createdAt: c.createdAt,
      updatedAt: c.updatedAt,
    }
  })

const defaultRuntime = "io.containerd.runc.v2"

const fromContainerInput = (
  input: T.ContainerInput,
): Effect.Effect<{ readonly container: PbContainer; readonly spec: Spec.Spec }, ContainerdError> =>
  Effect.gen(function* () {
    yield* validateIdentifier("id", input.id)
    const spec = yield* Spec.decode(input.spec)
    const container: PbContainer = {
      id: input.id,
      labels: { ...input.labels },
      image: input.image ?? "",
      runtime: {
        name: input.runtime?.name ?? defaultRuntime,
        ...(input.runtime?.options === undefined
          ? {}
          : { options: Any.packRuncOptions(input.runtime.options) }),
      },
      spec: Any.packSpec(spec),
      snapshotter: "",
      snapshotKey: "",
      extensions: {},
    }
    return { container, spec }
  })

const toEnvelope = (e: PbEnvelope): T.Envelope => ({
  timestamp: e.timestamp,
  namespace: e.namespace,
  topic: e.topic,
  event: e.event === undefined ? undefined : { typeUrl: e.event.typeUrl, value: e.event.value },
})

const toImage = (image: PbImage | undefined): Effect.Effect<T.Image, ContainerdError> =>
  image?.target === undefined
    ? Effect.fail(new System({ message: "containerd answered without an image target" }))
    : Effect.succeed({
        name: image.name,
        labels: image.labels,
        target: toDescriptor(image.target),
        createdAt: image.createdAt,
        updatedAt: image.updatedAt,
      })

/**
 * Builds the service over an open grpc-js client. Exposed for benchmarks and
 * for wrapping; most users want `layer`.
 */
export const makeWithClient = (client: Grpc.Client, defaultNamespace: string): Containerd.Service => {
  const metadataCache = new Map<string, Grpc.Metadata>()
  const metadataFor = (namespace: string, lease: Option.Option<string>): Grpc.Metadata => {
    const key = Option.isSome(lease) ? `${namespace}\u0000${lease.value}` : namespace
    let metadata = metadataCache.get(key)
    if (metadata === undefined) {
      metadata = new Grpc.Metadata()
      metadata.set("containerd-namespace", namespace)
      if (Option.isSome(lease)) metadata.set("containerd-lease", lease.value)
      if (metadataCache.size > 256) metadataCache.clear()
      metadataCache.set(key, metadata)
    }
    return metadata.clone()
  }
  /** The calling fiber's metadata: its namespace (else the default) and lease. */
  const metadataOf = (fiber: Fiber.RuntimeFiber<unknown, unknown>): Grpc.Metadata => {
    const namespace = fiber.getFiberRef(currentNamespace)
    return metadataFor(
      Option.isSome(namespace) ? namespace.value : defaultNamespace,
      fiber.getFiberRef(currentLease),
    )
  }
  const metadata: Effect.Effect<Grpc.Metadata> = Effect.withFiberRuntime((fiber) =>
    Effect.succeed(metadataOf(fiber)),
  )

  const unary = <Req, Res>(
    method: Call.Method<Req, Res>,
    request: Req,
  ): Effect.Effect<Res, ContainerdError> =>
    Effect.withFiberRuntime((fiber) => Call.unary(client, method, request, metadataOf(fiber)))

  const serverStream = <Req, Res>(
    method: Call.Method<Req, Res>,
    request: Req,
  ): Stream.Stream<Res, ContainerdError> =>
    Stream.unwrap(Effect.map(metadata, (md) => Call.serverStream(client, method, request, md)))

  const Tasks = TasksService
  const version: Containerd.Service["version"] = Effect.map(unary(VersionService.version, {}), (r) => ({
    version: r.version,
    revision: r.revision,
  }))

  const health: Containerd.Service["health"] = Effect.map(
    unary(HealthService.check, { service: "" }),
    (r) => {
      switch (r.status) {
        case HealthCheckResponse_ServingStatus.SERVING:
          return "SERVING" as const
        case HealthCheckResponse_ServingStatus.NOT_SERVING:
          return "NOT_SERVING" as const
        case HealthCheckResponse_ServingStatus.SERVICE_UNKNOWN:
          return "SERVICE_UNKNOWN" as const
        default:
          return "UNKNOWN" as const
      }
    },
  )

  const writeContent = <E, R>(
    options: WriteContentOptions,
    data: Stream.Stream<Uint8Array, E, R>,
  ): Effect.Effect<T.Descriptor, ContainerdError | E, R> => {
    let hash = Crypto.createHash("sha256")
    let written = 0n
    const descriptor = (digest: string, size: bigint): T.Descriptor => ({
      mediaType: options.mediaType ?? "application/octet-stream",
      digest,
      size,
    })
    const alreadyExists = (e: ContainerdError | E) =>
      typeof e === "object" &&
      e !== null &&
      (e as ContainerdError)._tag === "Conflict" &&
      (e as ContainerdError).code === GrpcCode.ALREADY_EXISTS
    const total = options.size ?? 0n
    const upload = Effect.gen(function* () {
      hash = Crypto.createHash("sha256")
      written = 0n
      const md = yield* metadata
      const call = yield* Call.duplex(client, ContentService.write, md)
      const base = {
        ref: options.ref,
        total,
        expected: options.digest ?? "",
        labels: {},
        data: Buffer.alloc(0),
      }
      const status = yield* call.roundTrip({ ...base, action: WriteAction.STAT, offset: 0n })
      let offset = status.offset
      let skip = status.offset
      yield* Stream.runForEach(data, (chunk) =>
        Effect.gen(function* () {
          hash.update(chunk)
          written += BigInt(chunk.byteLength)
          let bytes = chunk
          if (skip > 0n) {
            if (BigInt(bytes.byteLength) <= skip) {
              skip -= BigInt(bytes.byteLength)
              return
            }
            bytes = bytes.subarray(Number(skip))
            skip = 0n
          }
          for (let start = 0; start < bytes.byteLength; start += chunkLimit) {
            const piece = bytes.subarray(start, Math.min(bytes.byteLength, start + chunkLimit))
            const response = yield* call.roundTrip({
              ...base,
              action: WriteAction.WRITE,
              offset,
              data: Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength),
            })
            offset = response.offset
          }
        }),
      )
      const committed = yield* call.roundTrip({
        ...base,
        action: WriteAction.COMMIT,
        total: total === 0n ? offset : total,
        offset,
        labels: { ...options.labels },
      })
      return descriptor(committed.digest || options.digest || `sha256:${hash.digest("hex")}`, offset)
    })
    // another writer holds the ref (an upload being cancelled, say): wait for it, briefly
    const locked = (e: ContainerdError | E) =>
      typeof e === "object" &&
      e !== null &&
      (e as ContainerdError)._tag === "System" &&
      (e as ContainerdError).code === GrpcCode.UNAVAILABLE &&
      (e as ContainerdError).message.includes("locked")
    return Effect.scoped(upload).pipe(
      Effect.retry({
        while: locked,
        schedule: Schedule.spaced("50 millis").pipe(Schedule.intersect(Schedule.recurs(40))),
      }),
      Effect.catchIf(alreadyExists, () =>
        Effect.sync(() =>
          descriptor(options.digest ?? `sha256:${hash.copy().digest("hex")}`, total === 0n ? written : total),
        ),
      ),
    )
  }

  return {
    namespace: defaultNamespace,
    version,
    health,
    containers: {
      create: (input) =>
        Effect.flatMap(fromContainerInput(input), ({ container, spec }) =>
          Effect.flatMap(unary(ContainersService.create, { container }), (r) =>
            toContainer(r.container, spec),
          ),
        ),
      get: (id) =>
        Effect.flatMap(validateIdentifier("id", id), () =>
          Effect.flatMap(unary(ContainersService.get, { id }), (r) => toContainer(r.container)),
        ),
      list: (filters = []) =>
        Effect.flatMap(unary(ContainersService.list, { filters: [...filters] }), (r) =>
          Effect.forEach(r.containers, (c) => toContainer(c)),
        ),
      update: (input, fieldPaths = []) =>
        Effect.flatMap(fromContainerInput(input), ({ container }) =>
          Effect.flatMap(
            unary(ContainersService.update, {
              container,
              ...(fieldPaths.length > 0 ? { updateMask: [...fieldPaths] } : {}),
            }),
            (r) => toContainer(r.container),
          ),
        ),
      delete: (id) =>
        Effect.flatMap(validateIdentifier("id", id), () =>
          Effect.asVoid(unary(ContainersService.delete, { id })),
        ),
    },
    tasks: {
      create: (input) =>
        Effect.map(
          unary(Tasks.create, {
            containerId: input.containerId,
            rootfs: (input.rootfs ?? []).map((m) => ({
              type: m.type,
              source: m.source,
              target: m.target ?? "",
              options: [...m.options],
            })),
            stdin: input.stdin ?? "",
            stdout: input.stdout ?? "",
            stderr: input.stderr ?? "",
            terminal: input.terminal ?? false,
            ...(input.checkpoint === undefined ? {} : { checkpoint: fromDescriptor(input.checkpoint) }),
            ...(input.options === undefined ? {} : { options: Any.packRuncOptions(input.options) }),
            runtimePath: "",
          }),
          (r) => ({ pid: r.pid }),
        ),
      start: (ref) =>
        Effect.map(unary(Tasks.start, { containerId: ref.containerId, execId: ref.execId ?? "" }), (r) => ({
          pid: r.pid,
        })),
      get: (ref) =>
        Effect.map(unary(Tasks.get, { containerId: ref.containerId, execId: ref.execId ?? "" }), (r) =>
          toProcess(r.process, ref.containerId),
        ),
      list: (filter = "") =>
        Effect.map(unary(Tasks.list, { filter }), (r) =>
          r.tasks.map((p) => toProcess(p, p.containerId || p.id)),
        ),
      delete: (ref) =>
        Effect.map(unary(Tasks.delete, { containerId: ref.containerId }), (r) => ({
          id: r.id,
          pid: r.pid,
          exitStatus: r.exitStatus,
          exitedAt: r.exitedAt ?? { seconds: 0n, nanos: 0 },
        })),
      deleteProcess: (ref) =>
        Effect.map(unary(Tasks.deleteProcess, { containerId: ref.containerId, execId: ref.execId }), (r) => ({
          id: r.id,
          pid: r.pid,
          exitStatus: r.exitStatus,
          exitedAt: r.exitedAt ?? { seconds: 0n, nanos: 0 },
        })),
      kill: (input) =>
        Effect.asVoid(
          unary(Tasks.kill, {
            containerId: input.containerId,
            execId: input.execId ?? "",
            signal: input.signal,
            all: input.all ?? false,
          }),
        ),
      exec: (input) =>
        Effect.flatMap(Spec.decodeProcess(input.spec), (spec) =>
          Effect.asVoid(
            unary(Tasks.exec, {
              containerId: input.containerId,
              execId: input.execId,
              stdin: input.stdin ?? "",
              stdout: input.stdout ?? "",
              stderr: input.stderr ?? "",
              terminal: input.terminal ?? false,
              spec: Any.packProcess(spec),
            }),
          ),
        ),
      resizePty: (input) =>
        Effect.asVoid(
          unary(Tasks.resizePty, {
            containerId: input.containerId,
            execId: input.execId ?? "",
            width: input.width,
            height: input.height,
          }),
        ),
      closeIO: (input) =>
        Effect.asVoid(
          unary(Tasks.closeIo, {
            containerId: input.containerId,
            execId: input.execId ?? "",
            stdin: input.stdin,
          }),
        ),
      pause: (containerId) => Effect.asVoid(unary(Tasks.pause, { containerId })),
      resume: (containerId) => Effect.asVoid(unary(Tasks.resume, { containerId })),
      listPids: (containerId) =>
        Effect.map(unary(Tasks.listPids, { containerId }), (r) =>
          r.processes.map((p) => {
            const execId = p.info === undefined ? undefined : Any.unpackProcessDetails(p.info)
            return execId === undefined || execId === "" ? { pid: p.pid } : { pid: p.pid, execId }
          }),
        ),
      checkpoint: (input) =>
        Effect.map(
          unary(Tasks.checkpoint, {
            containerId: input.containerId,
            parentCheckpoint: input.parentCheckpoint ?? "",
            ...(input.options === undefined ? {} : { options: Any.packCheckpointOptions(input.options) }),
          }),
          (r) => r.descriptors.map(toDescriptor),
        ),
      update: (input) =>
        Effect.asVoid(
          unary(Tasks.update, {
            containerId: input.containerId,
            resources: Any.packResources(input.resources),
            annotations: { ...input.annotations },
          }),
        ),
      wait: (ref) =>
        Effect.map(unary(Tasks.wait, { containerId: ref.containerId, execId: ref.execId ?? "" }), (r) => ({
          exitStatus: r.exitStatus,
          exitedAt: r.exitedAt ?? { seconds: 0n, nanos: 0 },
        })),
      metrics: (filters) =>
        Effect.map(unary(Tasks.metrics, { filters: [...filters] }), (r) =>
          r.metrics.map((m) => ({
            id: m.id,
            timestamp: m.timestamp,
            data:
              m.data === undefined
                ? { _tag: "unknown" as const, data: { typeUrl: "", value: new Uint8Array() } }
                : Any.unpackMetrics(m.data),
          })),
        ),
    },
    content: {
      info: (digest) =>
        Effect.flatMap(unary(ContentService.info, { digest }), (r) =>
          r.info === undefined
            ? Effect.fail(new System({ message: `containerd answered without info for ${digest}` }))
            : Effect.succeed({
                digest: r.info.digest,
                size: r.info.size,
                createdAt: r.info.createdAt,
                updatedAt: r.info.updatedAt,
                labels: r.info.labels,
              }),
        ),
      read: (digest, range) =>
        Stream.map(
          serverStream(ContentService.read, { digest, offset: range?.offset ?? 0n, size: range?.size ?? 0n }),
          (r): Uint8Array => r.data,
        ),
      write: writeContent,
      delete: (digest) => Effect.asVoid(unary(ContentService.delete, { digest })),
      abort: (ref) => Effect.asVoid(unary(ContentService.abort, { ref })),
    },
    images: {
      get: (name) => Effect.flatMap(unary(ImagesService.get, { name }), (r) => toImage(r.image)),
      create: (image) =>
        Effect.flatMap(
          unary(ImagesService.create, {
            image: { name: image.name, labels: { ...image.labels }, target: fromDescriptor(image.target) },
          }),
          (r) => toImage(r.image),
        ),
      delete: (name, options) =>
        Effect.asVoid(unary(ImagesService.delete, { name, sync: options?.sync ?? false })),
    },
    leases: {
      create: (options = {}) =>
        Effect.flatMap(
          unary(LeasesService.create, { id: options.id ?? "", labels: { ...options.labels } }),
          (r) =>
            r.lease === undefined
              ? Effect.fail(new System({ message: "containerd answered without a lease" }))
              : Effect.succeed({ id: r.lease.id, labels: r.lease.labels, createdAt: r.lease.createdAt }),
        ),
      delete: (id, options) =>
        Effect.asVoid(unary(LeasesService.delete, { id, sync: options?.sync ?? false })),
    },
    events: {
      subscribe: (filters) =>
        Stream.map(serverStream(EventsService.subscribe, { filters: [...filters] }), toEnvelope),
      forEach: (filters, onEnvelope) =>
        Effect.withFiberRuntime((fiber) =>
          Call.serverStreamForEach(
            client,
            EventsService.subscribe,
            { filters: [...filters] },
            metadataOf(fiber),
            (e) => onEnvelope(toEnvelope(e)),
          ),
        ),
    },
  }
}

/**
 * Opens the channel in a Scope (closed on release) and checks that containerd
 * answers. A missing socket or refused connection fails fast with a `System`
 * error naming the address.
 */
export const make = (options: Options): Effect.Effect<Containerd.Service, ContainerdError, Scope.Scope> =>
  Effect.gen(function* () {
    const path = yield* socketPath(options.address)
    const namespace = yield* validateIdentifier("namespace", options.namespace ?? "default")
    if (!Fs.existsSync(path)) {
      return yield* new System({
        message: `cannot reach containerd at ${path}: the socket does not exist (is containerd running? set CONTAINERD_ADDRESS)`,
      })
    }
    const maxBytes = options.maxMessageBytes ?? 16 * 1024 * 1024
    const client = yield* Effect.acquireRelease(
      Effect.sync(
        () =>
          new Grpc.Client(`unix://${path}`, Grpc.credentials.createInsecure(), {
            "grpc.max_receive_message_length": maxBytes,
            "grpc.max_send_message_length": maxBytes,
            // a local daemon that restarts should be found again within seconds, not grpc-js's default 2 minutes
            "grpc.initial_reconnect_backoff_ms": 100,
            "grpc.max_reconnect_backoff_ms": 2000,
            ...(options.interceptors === undefined ? {} : { interceptors: [...options.interceptors] }),
          }),
      ),
      (client) => Effect.sync(() => client.close()),
    )
    const service = makeWithClient(client, namespace)
    yield* service.version.pipe(
      Effect.timeoutFail({
        duration: options.connectTimeout ?? "5 seconds",
        onTimeout: () => new System({ message: `cannot reach containerd at ${path}: no answer in time` }),
      }),
      Effect.mapError(
        (e) =>
          new System({
            message: `cannot reach containerd at ${path}: ${e.message}`,
            ...(e.code === undefined ? {} : { code: e.code }),
            cause: e,
          }),
      ),
    )
    return service
  })

/** A `Containerd` over the socket at `address`. */
export const layer = (options: Options): Layer.Layer<Containerd, ContainerdError> =>
  Layer.scoped(Containerd, make(options))

/** `layer` configured from `CONTAINERD_ADDRESS` (default `/run/containerd/containerd.sock`) and `CONTAINERD_NAMESPACE` (default `default`). */
export const layerConfig: Layer.Layer<Containerd, ContainerdError> = Layer.unwrapEffect(
  Effect.map(
    Effect.orDie(
      Config.all({
        address: Config.string("CONTAINERD_ADDRESS").pipe(Config.withDefault(defaultAddress)),
        namespace: Config.string("CONTAINERD_NAMESPACE").pipe(Config.withDefault("default")),
      }),
    ),
    layer,
  ),
)
