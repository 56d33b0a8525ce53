/**
 * effect-containerd: a containerd client for TypeScript on Effect.
 *
 * @since 0.1.0
 */

/** The error union and its mapping. */
export * from "./errors/ContainerdError.js"
/** The OCI runtime spec: Schema, default, combinators, validation. */
export * as Spec from "./domain/Spec.js"
/** Resource usage of a container. */
export * as Stats from "./domain/Stats.js"
/** Event types and infos handed to a Backend. */
export * as Event from "./domain/Event.js"
/** containerd's task events as Schemas. */
export * as TaskEvent from "./domain/TaskEvent.js"
/** Values crossing the wire service's boundary. */
export * as Types from "./domain/Types.js"
/** The wire service. */
export * as Containerd from "./services/Containerd.js"
/** FIFO sets and process stdio. */
export * as ProcessIO from "./services/ProcessIO.js"
/** The decoded task event stream. */
export * as TaskEvents from "./services/TaskEvents.js"
/** The container client. */
export * as Libcontainerd from "./services/Libcontainerd.js"
/** The consumer's event handler. */
export * as Backend from "./services/Backend.js"
/** gRPC layer of `Containerd`. */
export * as ContainerdLive from "./layers/ContainerdLive.js"
/** A private containerd of the library's own. */
export * as PrivateContainerd from "./layers/PrivateContainerd.js"
/** FIFO layer of `ProcessIO`. */
export * as ProcessIONode from "./layers/ProcessIONode.js"
/** In-memory `ProcessIO`. */
export * as ProcessIOMemory from "./layers/ProcessIOMemory.js"
/** Live `TaskEvents`. */
export * as TaskEventsLive from "./layers/TaskEventsLive.js"
/** In-memory `TaskEvents`. */
export * as TaskEventsMemory from "./layers/TaskEventsMemory.js"
/** The client layer. */
export * as LibcontainerdLive from "./layers/LibcontainerdLive.js"
/** A busybox rootfs for tests and demos. */
export * as Busybox from "./testing/Busybox.js"
/** The library's metrics (operations, failures, durations, event lag, reconnects). */
export * as Telemetry from "./internal/telemetry.js"
/** In-memory `Containerd` for tests. */
export * as ContainerdMemory from "./layers/ContainerdMemory.js"
