/**
 * containerd's task events, decoded, as one stream that survives failures of
 * the underlying subscription.
 *
 * The stream interleaves two kinds of items:
 *
 * - `Subscribed { attempt, confirmed }` — a new subscription is live. It is
 *   emitted once per subscription, before any event of that subscription, and
 *   only once the subscription is established: when its first envelope
 *   arrived (`confirmed: true`) or when the call has been open for the settle
 *   time without failing (`confirmed: false`; containerd's Subscribe sends no
 *   "ready" message).
 * - `TaskEventEnvelope` — one decoded event.
 *
 * containerd keeps no backlog: an event published while no subscription is
 * registered is gone. A consumer that must not miss an exit reconciles its
 * tracked tasks (`Tasks.Get` / `Tasks.Wait`) each time it sees `Subscribed`,
 * and deduplicates exits (one may arrive both ways). Because reconciliation
 * starts after the subscription is registered, an exit either happened before
 * the reconcile read the task (the reconcile sees it) or after the
 * subscription started (the stream delivers it).
 *
 * ```ts
 * Stream.runForEach(taskEvents.subscribe, (item) =>
 *   item._tag === "Subscribed" ? reconcile : dispatch(item.event)
 * )
 * ```
 *
 * Layers: `TaskEventsLive.layer` (over `Containerd`), `TaskEventsMemory.layer`
 * (fed by hand, for tests).
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Stream from "effect/Stream"
import type { TaskEventsItem } from "../domain/TaskEvent.js"
import type { ContainerdError } from "../errors/ContainerdError.js"

/** The service's interface. */
export declare namespace TaskEvents {
  /** The decoded task event stream. */
  export interface Service {
    /**
     * Subscribes (again after every failure, with backoff) and emits a
     * `Subscribed` marker before the events of each subscription. Fails only
     * when the layer's retry schedule gives up; interruption cancels the call.
     */
    readonly subscribe: Stream.Stream<TaskEventsItem, ContainerdError>
  }
}

/** The task event stream's tag. */
export class TaskEvents extends Context.Tag("effect-containerd/TaskEvents")<
  TaskEvents,
  TaskEvents.Service
>() {}

/**
 * The filter the client subscribes with: task topics of one namespace, less the `ignored` topics (each
 * `/tasks/<name>`), which the daemon then does not send at all.
 */
export const filterFor = (namespace: string, ignored: ReadonlyArray<string> = []): string =>
  // containerd takes `|`-quoted values only after `~=`; after `!=`, a value with `/` needs double quotes
  ignored.reduce(
    (filter, topic) => `${filter},topic!="${topic}"`,
    `namespace==${namespace},topic~=|^/tasks/|`,
  )
