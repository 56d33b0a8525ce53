/**
 * `stats` decoding: containerd's metrics payload (an `Any` of cgroups v1 or v2
 * `Metrics`) through the same functions the client uses (`unpackMetrics`,
 * `Stats.fromCgroupMetrics`). The real-daemon tests run on this machine's
 * cgroup v1 only, so the v2 shape is shown here from encoded messages.
 */
import { assert, describe, it } from "@effect/vitest"
import { Metrics as V1Metrics } from "../generated/cgroups/v1/metrics.js"
import { Metrics as V2Metrics } from "../generated/cgroups/v2/metrics.js"
import * as Stats from "../src/domain/Stats.js"
import { TypeUrl, unpackMetrics } from "../src/internal/any.js"

const read = { seconds: 1_700_000_000n, nanos: 5 }

/** A payload as containerd sends it: the message encoded in an `Any`. */
const decode = (typeUrl: string, value: Uint8Array) =>
  Stats.fromCgroupMetrics(unpackMetrics({ typeUrl, value: Buffer.from(value) }), read)

describe("Stats", () => {
  it("cgroups v2: microseconds become nanoseconds, io.stat is summed over devices, no max usage", () => {
    const message = V2Metrics.fromPartial({
      pids: { current: 7n, limit: 0n },
      cpu: { usageUsec: 1_500n, userUsec: 1_000n, systemUsec: 500n },
      memory: { usage: 4_194_304n, usageLimit: 67_108_864n },
      io: {
        usage: [
          { major: 8n, minor: 0n, rbytes: 4_096n, wbytes: 8_192n, rios: 1n, wios: 2n },
          { major: 8n, minor: 16n, rbytes: 1_024n, wbytes: 0n, rios: 1n, wios: 0n },
        ],
      },
    })
    const stats = decode(TypeUrl.cgroupsV2, V2Metrics.encode(message).finish())
    assert.deepStrictEqual(stats, {
      read,
      cgroup: "v2",
      cpu: { usageNanos: 1_500_000n, userNanos: 1_000_000n, systemNanos: 500_000n },
      memory: { usage: 4_194_304n, limit: 67_108_864n, maxUsage: 0n },
      pids: { current: 7n, limit: 0n },
      blkio: { readBytes: 5_120n, writeBytes: 8_192n },
    })
  })

  it("cgroups v1: blkio bytes summed by operation over devices; an unlimited limit (2^63 − 4096) stays exact", () => {
    const unlimited = 2n ** 63n - 4_096n
    const message = V1Metrics.fromPartial({
      pids: { current: 3n, limit: 100n },
      cpu: { usage: { total: 2_000n, kernel: 600n, user: 1_400n, perCpu: [1_000n, 1_000n] } },
      memory: { usage: { usage: 1_048_576n, limit: unlimited, max: 2_097_152n, failcnt: 0n } },
      blkio: {
        ioServiceBytesRecursive: [
          { op: "Read", device: "", major: 8n, minor: 0n, value: 300n },
          { op: "Write", device: "", major: 8n, minor: 0n, value: 50n },
          { op: "Read", device: "", major: 8n, minor: 16n, value: 200n },
          { op: "Sync", device: "", major: 8n, minor: 0n, value: 999n },
          { op: "Total", device: "", major: 8n, minor: 0n, value: 550n },
        ],
      },
    })
    const stats = decode(TypeUrl.cgroupsV1, V1Metrics.encode(message).finish())
    assert.deepStrictEqual(stats, {
      read,
      cgroup: "v1",
      cpu: { usageNanos: 2_000n, userNanos: 1_400n, systemNanos: 600n },
      memory: { usage: 1_048_576n, limit: unlimited, maxUsage: 2_097_152n },
      pids: { current: 3n, limit: 100n },
      blkio: { readBytes: 500n, writeBytes: 50n },
    })
  })

  it("a payload of another type is no Stats", () => {
    assert.isUndefined(decode("io.containerd.cgroups.v3.Metrics", new Uint8Array([8, 1])))
  })
})
