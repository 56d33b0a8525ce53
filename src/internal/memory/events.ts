/**
 * The in-memory containerd's event exchange: envelopes are delivered live to
 * the subscriptions open at publication (containerd keeps no backlog), in
 * publication order, each subscription filtered with containerd's filter
 * syntax. Test hooks drop or hold envelopes and cut subscriptions.
 *
 * @internal
 */
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire"
import type * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Mailbox from "effect/Mailbox"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Proto from "../../../generated/containerd/events/task.js"
import type { Envelope } from "../../domain/Types.js"
import type { ContainerdError } from "../../errors/ContainerdError.js"
import * as Filters from "./filters.js"
import { invalidArgument, type NamespaceState, now, unavailable } from "./state.js"

/** One envelope with the string fields of its event (`event.<field>` in filters). */
interface Published {
  readonly envelope: Envelope
  readonly fields: Readonly<Record<string, string>>
}

interface Subscriber {
  readonly filter: Filters.Filter
  readonly mailbox: Mailbox.Mailbox<Envelope, ContainerdError>
}

const matches = (filter: Filters.Filter, published: Published): boolean =>
  filter((fieldpath) => {
    switch (fieldpath[0]) {
      case "namespace":
        return fieldpath.length === 1 ? published.envelope.namespace : undefined
      case "topic":
        return fieldpath.length === 1 ? published.envelope.topic : undefined
      case "event":
        return published.fields[fieldpath.slice(1).join(".")]
      default:
        return undefined
    }
  })

/** Envelopes the publication log keeps: the newest ones, so that a long test run's memory stays bounded. */
export const logLimit = 10_000

/** The exchange: subscriptions, the publication log and the test hooks. */
export class Bus {
  private readonly subscribers = new Set<Subscriber>()
  private readonly drops = new Set<(envelope: Envelope) => boolean>()
  private holds = 0
  private held: Array<Published> = []
  readonly log: Array<Envelope> = []

  /** Publishes one event now, stamped with the caller's clock. */
  publish(
    ns: NamespaceState,
    clock: Clock.Clock,
    topic: string,
    typeName: string,
    value: Uint8Array,
    fields: Readonly<Record<string, string>>,
  ): void {
    const envelope: Envelope = {
      timestamp: now(clock),
      namespace: ns.name,
      topic,
      event: { typeUrl: `containerd.events.${typeName}`, value },
    }
    this.log.push(envelope)
    // dropped a batch at a time: the log is trimmed once per `logLimit / 2` envelopes, not on each
    if (this.log.length > logLimit) this.log.splice(0, this.log.length - logLimit / 2)
    for (const drop of this.drops) if (drop(envelope)) return
    const published = { envelope, fields }
    if (this.holds > 0) this.held.push(published)
    else this.deliver(published)
  }

  private deliver(published: Published): void {
    for (const subscriber of this.subscribers) {
      if (matches(subscriber.filter, published)) subscriber.mailbox.unsafeOffer(published.envelope)
    }
  }

  /** A subscription: registered when the stream starts, removed when it ends. */
  subscribe(filters: ReadonlyArray<string>): Stream.Stream<Envelope, ContainerdError> {
    return Stream.unwrapScoped(
      Effect.gen(this, function* () {
        const parsed = Filters.parseAll(filters)
        if (Either.isLeft(parsed)) return yield* Effect.fail(invalidArgument(parsed.left))
        const mailbox = yield* Mailbox.make<Envelope, ContainerdError>()
        const subscriber: Subscriber = { filter: parsed.right, mailbox }
        yield* Effect.acquireRelease(
          Effect.sync(() => this.subscribers.add(subscriber)),
          () => Effect.sync(() => this.subscribers.delete(subscriber)),
        )
        return Mailbox.toStream(mailbox)
      }),
    )
  }

  /** How many subscriptions are open. */
  get subscriberCount(): number {
    return this.subscribers.size
  }

  /** Fails every open subscription with what a client sees when containerd goes away. */
  disconnect(): void {
    const error = unavailable("transport is closing")
    for (const subscriber of this.subscribers) subscriber.mailbox.unsafeDone(Exit.fail(error))
    this.subscribers.clear()
  }

  /** While the scope is open, envelopes matching `predicate` are dropped. */
  drop(predicate: (envelope: Envelope) => boolean): Effect.Effect<void, never, Scope.Scope> {
    return Effect.acquireRelease(
      Effect.sync(() => this.drops.add(predicate)),
      () => Effect.sync(() => this.drops.delete(predicate)),
    ).pipe(Effect.asVoid)
  }

  /** While the scope is open, envelopes are held; at its close they go to the subscriptions open then. */
  hold(): Effect.Effect<void, never, Scope.Scope> {
    return Effect.acquireRelease(
      Effect.sync(() => {
        this.holds++
      }),
      () =>
        Effect.sync(() => {
          this.holds--
          if (this.holds > 0) return
          const held = this.held
          this.held = []
          for (const published of held) this.deliver(published)
        }),
    )
  }
}

// ---------------------------------------------------------------------------
// payloads

const bytes = (writer: BinaryWriter): Uint8Array => writer.finish()

const writeString = (writer: BinaryWriter, field: number, value: string): BinaryWriter =>
  value === "" ? writer : writer.tag(field, WireType.LengthDelimited).string(value)

const writeLabels = (
  writer: BinaryWriter,
  field: number,
  labels: Readonly<Record<string, string>>,
): BinaryWriter => {
  for (const [key, value] of Object.entries(labels)) {
    writer.tag(field, WireType.LengthDelimited).fork()
    writeString(writer, 1, key)
    writeString(writer, 2, value)
    writer.join()
  }
  return writer
}

/** `containerd.events.ContainerCreate` (id = 1, image = 2, runtime = 3 {name = 1}). */
export const containerCreate = (id: string, image: string, runtime: string): Uint8Array => {
  const writer = new BinaryWriter()
  writeString(writer, 1, id)
  writeString(writer, 2, image)
  writer.tag(3, WireType.LengthDelimited).fork()
  writeString(writer, 1, runtime)
  writer.join()
  return bytes(writer)
}

/** `containerd.events.ContainerUpdate` (id = 1, image = 2, labels = 3). */
export const containerUpdate = (
  id: string,
  image: string,
  labels: Readonly<Record<string, string>>,
): Uint8Array => {
  const writer = new BinaryWriter()
  writeString(writer, 1, id)
  writeString(writer, 2, image)
  writeLabels(writer, 3, labels)
  return bytes(writer)
}

/** A message whose only field is one string at number 1 (`ContainerDelete`, `ImageDelete`, `ContentDelete`). */
export const single = (value: string): Uint8Array => bytes(writeString(new BinaryWriter(), 1, value))

/** `containerd.events.ImageCreate` (name = 1, labels = 2). */
export const imageCreate = (name: string, labels: Readonly<Record<string, string>>): Uint8Array =>
  bytes(writeLabels(writeString(new BinaryWriter(), 1, name), 2, labels))

/** Task payloads, encoded with the generated messages. */
export const task = {
  create: (m: Proto.DeepPartial<Proto.TaskCreate>) =>
    Proto.TaskCreate.encode(Proto.TaskCreate.fromPartial(m)).finish(),
  start: (m: Proto.DeepPartial<Proto.TaskStart>) =>
    Proto.TaskStart.encode(Proto.TaskStart.fromPartial(m)).finish(),
  exit: (m: Proto.DeepPartial<Proto.TaskExit>) =>
    Proto.TaskExit.encode(Proto.TaskExit.fromPartial(m)).finish(),
  oom: (m: Proto.DeepPartial<Proto.TaskOOM>) => Proto.TaskOOM.encode(Proto.TaskOOM.fromPartial(m)).finish(),
  execAdded: (m: Proto.DeepPartial<Proto.TaskExecAdded>) =>
    Proto.TaskExecAdded.encode(Proto.TaskExecAdded.fromPartial(m)).finish(),
  execStarted: (m: Proto.DeepPartial<Proto.TaskExecStarted>) =>
    Proto.TaskExecStarted.encode(Proto.TaskExecStarted.fromPartial(m)).finish(),
  paused: (m: Proto.DeepPartial<Proto.TaskPaused>) =>
    Proto.TaskPaused.encode(Proto.TaskPaused.fromPartial(m)).finish(),
  resumed: (m: Proto.DeepPartial<Proto.TaskResumed>) =>
    Proto.TaskResumed.encode(Proto.TaskResumed.fromPartial(m)).finish(),
  delete: (m: Proto.DeepPartial<Proto.TaskDelete>) =>
    Proto.TaskDelete.encode(Proto.TaskDelete.fromPartial(m)).finish(),
}
