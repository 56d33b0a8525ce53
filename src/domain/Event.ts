/**
 * The events the client hands to a `Backend`: the seed's `EventType` and
 * `EventInfo`.
 *
 * @since 0.1.0
 */
import type { Timestamp } from "./Types.js"

/** The name the client gives a container's init process. */
export const initProcessName = "init"

/** What happened. */
export type EventType =
  | "create"
  | "start"
  | "exit"
  | "oom"
  | "exec-added"
  | "exec-started"
  | "paused"
  | "resumed"

/** Facts of one event. `processId` is the container id for the init process, the exec id for an exec. */
export interface EventInfo {
  readonly containerId: string
  readonly processId: string
  readonly pid: number
  readonly exitCode: number
  readonly exitedAt: Timestamp | undefined
  readonly oomKilled: boolean
}

/** One processed event, as `Libcontainerd.events` streams it. */
export interface ProcessedEvent {
  readonly containerId: string
  readonly type: EventType
  readonly info: EventInfo
}
