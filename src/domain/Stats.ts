/**
 * One typed view of a container's resource usage, decoded from containerd's
 * cgroups v1 or v2 metrics. Counters are `bigint` (cgroup v1 reports an
 * unlimited memory limit as 2^63 − 4096, beyond a JS number).
 *
 * @since 0.1.0
 */
import type { CgroupMetrics, TaskMetric, Timestamp } from "./Types.js"

/** A container's resource usage at `read`. */
export interface Stats {
  /** When containerd sampled the cgroup. */
  readonly read: Timestamp | undefined
  /** Which cgroup version the numbers come from. */
  readonly cgroup: "v1" | "v2"
  readonly cpu: {
    /** Total CPU time consumed, in nanoseconds. */
    readonly usageNanos: bigint
    readonly userNanos: bigint
    readonly systemNanos: bigint
  }
  readonly memory: {
    /** Bytes in use (including page cache, as the cgroup reports it). */
    readonly usage: bigint
    /** The limit in bytes; the kernel's "unlimited" value when none is set. */
    readonly limit: bigint
    /** Highest usage seen (cgroup v1 only; 0 on v2). */
    readonly maxUsage: bigint
  }
  readonly pids: { readonly current: bigint; readonly limit: bigint }
  readonly blkio: { readonly readBytes: bigint; readonly writeBytes: bigint }
}

const sumBy = <A>(entries: ReadonlyArray<A>, pick: (a: A) => bigint): bigint =>
  entries.reduce((total, entry) => total + pick(entry), 0n)

/** Decodes a metrics sample; `undefined` for a payload of an unknown type. */
export const fromMetric = (metric: TaskMetric): Stats | undefined =>
  fromCgroupMetrics(metric.data, metric.timestamp)

/** Decodes cgroups v1 or v2 metrics. */
export const fromCgroupMetrics = (data: CgroupMetrics, read: Timestamp | undefined): Stats | undefined => {
  switch (data._tag) {
    case "v1": {
      const m = data.metrics
      const serviced = m.blkio?.ioServiceBytesRecursive ?? []
      return {
        read,
        cgroup: "v1",
        cpu: {
          usageNanos: m.cpu?.usage?.total ?? 0n,
          userNanos: m.cpu?.usage?.user ?? 0n,
          systemNanos: m.cpu?.usage?.kernel ?? 0n,
        },
        memory: {
          usage: m.memory?.usage?.usage ?? 0n,
          limit: m.memory?.usage?.limit ?? 0n,
          maxUsage: m.memory?.usage?.max ?? 0n,
        },
        pids: { current: m.pids?.current ?? 0n, limit: m.pids?.limit ?? 0n },
        blkio: {
          readBytes: sumBy(
            serviced.filter((e) => e.op.toLowerCase() === "read"),
            (e) => e.value,
          ),
          writeBytes: sumBy(
            serviced.filter((e) => e.op.toLowerCase() === "write"),
            (e) => e.value,
          ),
        },
      }
    }
    case "v2": {
      const m = data.metrics
      const io = m.io?.usage ?? []
      return {
        read,
        cgroup: "v2",
        cpu: {
          usageNanos: (m.cpu?.usageUsec ?? 0n) * 1000n,
          userNanos: (m.cpu?.userUsec ?? 0n) * 1000n,
          systemNanos: (m.cpu?.systemUsec ?? 0n) * 1000n,
        },
        memory: { usage: m.memory?.usage ?? 0n, limit: m.memory?.usageLimit ?? 0n, maxUsage: 0n },
        pids: { current: m.pids?.current ?? 0n, limit: m.pids?.limit ?? 0n },
        blkio: { readBytes: sumBy(io, (e) => e.rbytes), writeBytes: sumBy(io, (e) => e.wbytes) },
      }
    }
    default:
      return undefined
  }
}
