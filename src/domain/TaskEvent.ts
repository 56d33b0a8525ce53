/**
 * containerd's task events as Schemas, and the decoding of an event envelope.
 *
 * Each event is a `Schema.TaggedStruct` named after its protobuf message
 * (`TaskExit`, `TaskOOM`, …); `TaskEvent` is their union. An event travels in a
 * `TaskEventEnvelope` that keeps the envelope's `topic`, `namespace` and
 * `timestamp` beside the decoded `event`. Timestamps stay lossless
 * (`{ seconds: bigint, nanos }`); a timestamp containerd left unset becomes
 * containerd's zero time (`zeroTimestamp`), as Go's client reads it.
 *
 * `decodeEnvelope` maps the bare type URL (`containerd.events.TaskExit`) to its
 * protobuf decoder and validates the result: an unknown type is `Right(None)`,
 * a payload that does not decode or validate is `Left(MalformedEvent)`.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Proto from "../../generated/containerd/events/task.js"
import type { Timestamp as ProtoTimestamp } from "../../generated/google/protobuf/timestamp.js"
import type { Mount as ProtoMount } from "../../generated/containerd/types/mount.js"
import { type Envelope, zeroTimestamp } from "./Types.js"

/** A lossless protobuf timestamp (`seconds` as bigint), the Schema of `Types.Timestamp`. */
export const Timestamp = Schema.Struct({ seconds: Schema.BigIntFromSelf, nanos: Schema.Number })

/** A lossless protobuf timestamp. */
export type Timestamp = typeof Timestamp.Type

/** A rootfs mount of a created task (`target` omitted when containerd sends none). */
export const Mount = Schema.Struct({
  type: Schema.String,
  source: Schema.String,
  target: Schema.optional(Schema.String),
  options: Schema.Array(Schema.String),
})

/** The stdio FIFO paths of a created task. */
export const TaskIO = Schema.Struct({
  stdin: Schema.String,
  stdout: Schema.String,
  stderr: Schema.String,
  terminal: Schema.Boolean,
})

const ContainerId = Schema.NonEmptyString

/** Topic `/tasks/create`: a task was created (`rootfs` omitted when empty, `io` when unset). */
export const TaskCreate = Schema.TaggedStruct("TaskCreate", {
  containerId: ContainerId,
  bundle: Schema.String,
  rootfs: Schema.optional(Schema.Array(Mount)),
  io: Schema.optional(TaskIO),
  checkpoint: Schema.String,
  pid: Schema.Number,
})

/** Topic `/tasks/start`: the init process started. */
export const TaskStart = Schema.TaggedStruct("TaskStart", { containerId: ContainerId, pid: Schema.Number })

/** Topic `/tasks/exit`: a process exited; `id` is the exec id, or the container id for the init process. */
export const TaskExit = Schema.TaggedStruct("TaskExit", {
  containerId: ContainerId,
  id: Schema.String,
  pid: Schema.Number,
  exitStatus: Schema.Number,
  exitedAt: Timestamp,
})

/** Topic `/tasks/oom`: the container hit its memory limit (may repeat, may come late). */
export const TaskOOM = Schema.TaggedStruct("TaskOOM", { containerId: ContainerId })

/** Topic `/tasks/exec-added`: an exec process was created. */
export const TaskExecAdded = Schema.TaggedStruct("TaskExecAdded", {
  containerId: ContainerId,
  execId: Schema.String,
})

/** Topic `/tasks/exec-started`: an exec process started. */
export const TaskExecStarted = Schema.TaggedStruct("TaskExecStarted", {
  containerId: ContainerId,
  execId: Schema.String,
  pid: Schema.Number,
})

/** Topic `/tasks/paused`: the task was paused. */
export const TaskPaused = Schema.TaggedStruct("TaskPaused", { containerId: ContainerId })

/** Topic `/tasks/resumed`: the task was resumed. */
export const TaskResumed = Schema.TaggedStruct("TaskResumed", { containerId: ContainerId })

/** Topic `/tasks/delete`: a task or exec process was deleted; `id` is the process id. */
export const TaskDelete = Schema.TaggedStruct("TaskDelete", {
  containerId: ContainerId,
  pid: Schema.Number,
  exitStatus: Schema.Number,
  exitedAt: Timestamp,
  id: Schema.String,
})

/** Topic `/tasks/checkpointed`: a checkpoint of the task was taken. */
export const TaskCheckpointed = Schema.TaggedStruct("TaskCheckpointed", {
  containerId: ContainerId,
  checkpoint: Schema.String,
})

/** Any task event. */
export const TaskEvent = Schema.Union(
  TaskCreate,
  TaskStart,
  TaskExit,
  TaskOOM,
  TaskExecAdded,
  TaskExecStarted,
  TaskPaused,
  TaskResumed,
  TaskDelete,
  TaskCheckpointed,
)

/** Any task event. */
export type TaskEvent = typeof TaskEvent.Type

/** A decoded event with its envelope's topic, namespace and publication time. */
export const TaskEventEnvelope = Schema.TaggedStruct("TaskEventEnvelope", {
  topic: Schema.String,
  namespace: Schema.String,
  timestamp: Timestamp,
  event: TaskEvent,
})

/** A decoded event with its envelope's topic, namespace and publication time. */
export interface TaskEventEnvelope extends Schema.Schema.Type<typeof TaskEventEnvelope> {}

/**
 * Marks the start of a live subscription: every event that subscription
 * delivers follows this item. `attempt` counts subscribe calls from 1;
 * `confirmed` is true when the subscription is known to be registered (an
 * envelope arrived, or the in-memory hub registered it), false when it is
 * inferred from the call staying open for the settle time.
 */
export const Subscribed = Schema.TaggedStruct("Subscribed", {
  attempt: Schema.Number,
  confirmed: Schema.Boolean,
})

/** Marks the start of a live subscription. */
export interface Subscribed extends Schema.Schema.Type<typeof Subscribed> {}

/** What a `TaskEvents` stream emits: a subscription marker or an event. */
export const TaskEventsItem = Schema.Union(Subscribed, TaskEventEnvelope)

/** What a `TaskEvents` stream emits: a subscription marker or an event. */
export type TaskEventsItem = Subscribed | TaskEventEnvelope

/** An envelope whose payload is missing or does not decode or validate; logged and skipped. */
export class MalformedEvent extends Data.TaggedError("MalformedEvent")<{
  readonly topic: string
  readonly typeUrl: string
  readonly message: string
}> {}

/** The prefix of every task event's type URL. */
export const typeUrlPrefix = "containerd.events."

/** The type URL of an event, e.g. `containerd.events.TaskExit`. */
export const typeUrlOf = (event: TaskEvent): string => typeUrlPrefix + event._tag

const timestamp = (t: ProtoTimestamp | undefined): Timestamp => (t === undefined ? zeroTimestamp : t)

const mount = (m: ProtoMount): typeof Mount.Type =>
  m.target === "" ? { type: m.type, source: m.source, options: m.options } : m

interface Codec {
  readonly fromBytes: (bytes: Uint8Array) => TaskEvent
  readonly toBytes: (event: TaskEvent) => Uint8Array
}

/** The codec of one event type; its schema only names the type (`problemOf` stands in for running it). */
const codec = <E extends TaskEvent, M>(
  _schema: Schema.Schema<E, any>,
  fns: Proto.MessageFns<M>,
  from: (m: M) => NoInfer<E>,
  to: (e: NoInfer<E>) => M,
): Codec => ({
  fromBytes: (bytes) => from(fns.decode(bytes)),
  toBytes: (event) => fns.encode(to(event as E)).finish(),
})

/**
 * What the event schemas require beyond the types the generated decoders already guarantee: a non-empty
 * container id. Checked by hand, because running a schema per event costs tens of µs on the client's hot path
 * (a test holds this check to the schemas).
 */
const problemOf = (event: TaskEvent): string | undefined =>
  event.containerId === "" ? 'containerId: Expected a non empty string, actual ""' : undefined

const codecs: Readonly<Record<TaskEvent["_tag"], Codec>> = {
  TaskCreate: codec(
    TaskCreate,
    Proto.TaskCreate,
    (m) => ({
      _tag: "TaskCreate",
      containerId: m.containerId,
      bundle: m.bundle,
      ...(m.rootfs.length === 0 ? {} : { rootfs: m.rootfs.map(mount) }),
      ...(m.io === undefined ? {} : { io: m.io }),
      checkpoint: m.checkpoint,
      pid: m.pid,
    }),
    (e) => ({
      containerId: e.containerId,
      bundle: e.bundle,
      rootfs: (e.rootfs ?? []).map((r) => ({ ...r, target: r.target ?? "", options: [...r.options] })),
      io: e.io,
      checkpoint: e.checkpoint,
      pid: e.pid,
    }),
  ),
  TaskStart: codec(
    TaskStart,
    Proto.TaskStart,
    (m) => ({ _tag: "TaskStart", containerId: m.containerId, pid: m.pid }),
    (e) => ({ containerId: e.containerId, pid: e.pid }),
  ),
  TaskExit: codec(
    TaskExit,
    Proto.TaskExit,
    (m) => ({
      _tag: "TaskExit",
      containerId: m.containerId,
      id: m.id,
      pid: m.pid,
      exitStatus: m.exitStatus,
      exitedAt: timestamp(m.exitedAt),
    }),
    (e) => ({
      containerId: e.containerId,
      id: e.id,
      pid: e.pid,
      exitStatus: e.exitStatus,
      exitedAt: e.exitedAt,
    }),
  ),
  TaskOOM: codec(
    TaskOOM,
    Proto.TaskOOM,
    (m) => ({ _tag: "TaskOOM", containerId: m.containerId }),
    (e) => ({ containerId: e.containerId }),
  ),
  TaskExecAdded: codec(
    TaskExecAdded,
    Proto.TaskExecAdded,
    (m) => ({ _tag: "TaskExecAdded", containerId: m.containerId, execId: m.execId }),
    (e) => ({ containerId: e.containerId, execId: e.execId }),
  ),
  TaskExecStarted: codec(
    TaskExecStarted,
    Proto.TaskExecStarted,
    (m) => ({ _tag: "TaskExecStarted", containerId: m.containerId, execId: m.execId, pid: m.pid }),
    (e) => ({ containerId: e.containerId, execId: e.execId, pid: e.pid }),
  ),
  TaskPaused: codec(
    TaskPaused,
    Proto.TaskPaused,
    (m) => ({ _tag: "TaskPaused", containerId: m.containerId }),
    (e) => ({ containerId: e.containerId }),
  ),
  TaskResumed: codec(
    TaskResumed,
    Proto.TaskResumed,
    (m) => ({ _tag: "TaskResumed", containerId: m.containerId }),
    (e) => ({ containerId: e.containerId }),
  ),
  TaskDelete: codec(
    TaskDelete,
    Proto.TaskDelete,
    (m) => ({
      _tag: "TaskDelete",
      containerId: m.containerId,
      pid: m.pid,
      exitStatus: m.exitStatus,
      exitedAt: timestamp(m.exitedAt),
      id: m.id,
    }),
    (e) => ({
      containerId: e.containerId,
      pid: e.pid,
      exitStatus: e.exitStatus,
      exitedAt: e.exitedAt,
      id: e.id,
    }),
  ),
  TaskCheckpointed: codec(
    TaskCheckpointed,
    Proto.TaskCheckpointed,
    (m) => ({ _tag: "TaskCheckpointed", containerId: m.containerId, checkpoint: m.checkpoint }),
    (e) => ({ containerId: e.containerId, checkpoint: e.checkpoint }),
  ),
}

const codecOf = (typeUrl: string): Codec | undefined =>
  typeUrl.startsWith(typeUrlPrefix) && Object.hasOwn(codecs, typeUrl.slice(typeUrlPrefix.length))
    ? codecs[typeUrl.slice(typeUrlPrefix.length) as TaskEvent["_tag"]]
    : undefined

/**
 * Decodes an envelope's payload: `Right(Some)` for a task event, `Right(None)`
 * for a type URL that is not a task event, `Left` for a missing payload or one
 * that does not decode or validate.
 */
export const decodeEnvelope = (
  envelope: Envelope,
): Either.Either<Option.Option<TaskEventEnvelope>, MalformedEvent> => {
  const payload = envelope.event
  if (payload === undefined) {
    return Either.left(
      new MalformedEvent({ topic: envelope.topic, typeUrl: "", message: "the envelope has no event" }),
    )
  }
  const c = codecOf(payload.typeUrl)
  if (c === undefined) return Either.right(Option.none())
  const malformed = (message: string) =>
    new MalformedEvent({ topic: envelope.topic, typeUrl: payload.typeUrl, message })
  let raw: TaskEvent
  try {
    raw = c.fromBytes(payload.value)
  } catch (error) {
    return Either.left(malformed(error instanceof Error ? error.message : String(error)))
  }
  const problem = problemOf(raw)
  if (problem !== undefined) return Either.left(malformed(problem))
  return Either.right(
    Option.some({
      _tag: "TaskEventEnvelope",
      topic: envelope.topic,
      namespace: envelope.namespace,
      timestamp: timestamp(envelope.timestamp),
      event: raw,
    }),
  )
}

/** Packs an event the way containerd does (bare type URL, protobuf bytes); for tests and in-memory daemons. */
export const encodeEvent = (event: TaskEvent): { readonly typeUrl: string; readonly value: Uint8Array } => ({
  typeUrl: typeUrlOf(event),
  value: codecs[event._tag].toBytes(event),
})

const topics: Readonly<Record<TaskEvent["_tag"], string>> = {
  TaskCreate: "/tasks/create",
  TaskStart: "/tasks/start",
  TaskExit: "/tasks/exit",
  TaskOOM: "/tasks/oom",
  TaskExecAdded: "/tasks/exec-added",
  TaskExecStarted: "/tasks/exec-started",
  TaskPaused: "/tasks/paused",
  TaskResumed: "/tasks/resumed",
  TaskDelete: "/tasks/delete",
  TaskCheckpointed: "/tasks/checkpointed",
}

/** The topic containerd publishes an event under, e.g. `/tasks/exit` for `TaskExit`. */
export const topicOf = (event: TaskEvent): string => topics[event._tag]
