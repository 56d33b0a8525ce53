/**
 * The values that cross the `Containerd` boundary: containers, processes,
 * exits, descriptors, runtime options. Plain readonly data; 64-bit integers
 * that can exceed 2^53 are `bigint`, timestamps are lossless.
 *
 * @since 0.1.0
 */
import type { Process, Spec } from "./Spec.js"

/** A lossless protobuf timestamp. */
export interface Timestamp {
  readonly seconds: bigint
  readonly nanos: number
}

/** Converts a timestamp to a `Date` (millisecond precision). */
export const timestampToDate = (t: Timestamp): Date =>
  new Date(Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6))

/** The timestamp of a `Date`. */
export const timestampFromDate = (d: Date): Timestamp => {
  const ms = d.getTime()
  const seconds = Math.floor(ms / 1000)
  return { seconds: BigInt(seconds), nanos: (ms - seconds * 1000) * 1e6 }
}

/** containerd's zero time (Go's `time.Time{}` as a protobuf timestamp). */
export const zeroTimestamp: Timestamp = { seconds: -62135596800n, nanos: 0 }

/** A packed protobuf `Any` the library does not interpret. */
export interface AnyValue {
  readonly typeUrl: string
  readonly value: Uint8Array
}

/** The runc v2 shim's runtime and task options (`containerd.runc.v1.Options`). */
export interface RuncOptions {
  readonly noPivotRoot?: boolean
  readonly noNewKeyring?: boolean
  readonly shimCgroup?: string
  readonly ioUid?: number
  readonly ioGid?: number
  readonly binaryName?: string
  readonly root?: string
  readonly criuPath?: string
  readonly systemdCgroup?: boolean
  readonly criuImagePath?: string
  readonly criuWorkPath?: string
}

/** Checkpoint options of the runc v2 shim (`containerd.runc.v1.CheckpointOptions`). */
export interface CheckpointOptions {
  readonly exit?: boolean
  readonly openTcp?: boolean
  readonly externalUnixSockets?: boolean
  readonly terminal?: boolean
  readonly fileLocks?: boolean
  readonly emptyNamespaces?: ReadonlyArray<string>
  readonly cgroupsMode?: string
  readonly imagePath?: string
  readonly workPath?: string
}

/** The runtime a container runs with. */
export interface Runtime {
  readonly name: string
  readonly options?: RuncOptions
}

/** A container record as containerd stores it. */
export interface Container {
  readonly id: string
  readonly labels: Readonly<Record<string, string>>
  readonly image: string
  readonly runtime: Runtime
  readonly spec: Spec | undefined
  readonly snapshotter: string
  readonly snapshotKey: string
  readonly createdAt: Timestamp | undefined
  readonly updatedAt: Timestamp | undefined
}

/** What `containers.create` takes. */
export interface ContainerInput {
  readonly id: string
  readonly spec: Spec
  readonly runtime?: Runtime
  readonly labels?: Readonly<Record<string, string>>
  readonly image?: string
}

/** A filesystem mount for a task's rootfs. */
export interface Mount {
  readonly type: string
  readonly source: string
  readonly target?: string
  readonly options: ReadonlyArray<string>
}

/** An OCI content descriptor. */
export interface Descriptor {
  readonly mediaType: string
  readonly digest: string
  readonly size: bigint
  readonly annotations?: Readonly<Record<string, string>>
}

/** The state of a task or process. */
export type TaskStatus = "UNKNOWN" | "CREATED" | "RUNNING" | "STOPPED" | "PAUSED" | "PAUSING"

/** A task or exec process as `Tasks.Get`/`Tasks.List` report it. */
export interface ProcessRecord {
  /** The container id. */
  readonly containerId: string
  /** The process id: the container id for the init, the exec id for an exec. */
  readonly id: string
  readonly pid: number
  readonly status: TaskStatus
  readonly stdin: string
  readonly stdout: string
  readonly stderr: string
  readonly terminal: boolean
  readonly exitStatus: number
  readonly exitedAt: Timestamp | undefined
}

/** How a process ended. */
export interface ExitStatus {
  readonly exitStatus: number
  readonly exitedAt: Timestamp
}

/** What a task or process delete reports. */
export interface DeletedProcess extends ExitStatus {
  readonly id: string
  readonly pid: number
}

/** One process of a task, from `Tasks.ListPids`; `execId` is set for exec processes only. */
export interface PidInfo {
  readonly pid: number
  readonly execId?: string
}

/** What `tasks.create` takes. Paths are the FIFOs of the init process ("" for none). */
export interface CreateTaskInput {
  readonly containerId: string
  readonly stdin?: string
  readonly stdout?: string
  readonly stderr?: string
  readonly terminal?: boolean
  readonly rootfs?: ReadonlyArray<Mount>
  readonly checkpoint?: Descriptor
  readonly options?: RuncOptions
}

/** What `tasks.exec` takes. */
export interface ExecInput {
  readonly containerId: string
  readonly execId: string
  readonly stdin?: string
  readonly stdout?: string
  readonly stderr?: string
  readonly terminal?: boolean
  readonly spec: Process
}

/** Addresses one process: the init when `execId` is absent. */
export interface ProcessRef {
  readonly containerId: string
  readonly execId?: string
}

/** A protobuf-decoded cgroups metrics message, v1 or v2. */
export type CgroupMetrics =
  | { readonly _tag: "v1"; readonly metrics: import("../../generated/cgroups/v1/metrics.js").Metrics }
  | { readonly _tag: "v2"; readonly metrics: import("../../generated/cgroups/v2/metrics.js").Metrics }
  | { readonly _tag: "unknown"; readonly data: AnyValue }

/** One task's metrics sample. */
export interface TaskMetric {
  readonly id: string
  readonly timestamp: Timestamp | undefined
  readonly data: CgroupMetrics
}

/** A content blob's metadata. */
export interface ContentInfo {
  readonly digest: string
  readonly size: bigint
  readonly createdAt: Timestamp | undefined
  readonly updatedAt: Timestamp | undefined
  readonly labels: Readonly<Record<string, string>>
}

/** An image record. */
export interface Image {
  readonly name: string
  readonly labels: Readonly<Record<string, string>>
  readonly target: Descriptor
  readonly createdAt?: Timestamp | undefined
  readonly updatedAt?: Timestamp | undefined
}

/** A lease record. */
export interface Lease {
  readonly id: string
  readonly labels: Readonly<Record<string, string>>
  readonly createdAt: Timestamp | undefined
}

/** An event as containerd publishes it, the payload still packed. */
export interface Envelope {
  readonly timestamp: Timestamp | undefined
  readonly namespace: string
  readonly topic: string
  readonly event: AnyValue | undefined
}
