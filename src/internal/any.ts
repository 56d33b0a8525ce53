/**
 * Packing and unpacking of `google.protobuf.Any` payloads with the bare type
 * URLs containerd 1.6 expects (no `type.googleapis.com/` prefix).
 */
import * as Effect from "effect/Effect"
import { Metrics as CgroupV1Metrics } from "../../generated/cgroups/v1/metrics.js"
import { Metrics as CgroupV2Metrics } from "../../generated/cgroups/v2/metrics.js"
import { CheckpointOptions, Options, ProcessDetails } from "../../generated/containerd/runc/options/oci.js"
import type { Any } from "../../generated/google/protobuf/any.js"
import * as Spec from "../domain/Spec.js"
import type * as T from "../domain/Types.js"
import { type InvalidParameter, System } from "../errors/ContainerdError.js"

/** Type URLs of the payloads the library packs or reads. */
export const TypeUrl = {
  spec: "types.containerd.io/opencontainers/runtime-spec/1/Spec",
  process: "types.containerd.io/opencontainers/runtime-spec/1/Process",
  resources: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources",
  runcOptions: "containerd.runc.v1.Options",
  checkpointOptions: "containerd.runc.v1.CheckpointOptions",
  processDetails: "containerd.runc.v1.ProcessDetails",
  cgroupsV1: "io.containerd.cgroups.v1.Metrics",
  cgroupsV2: "io.containerd.cgroups.v2.Metrics",
} as const

const json = (typeUrl: string, value: unknown): Any => ({
  typeUrl,
  value: Buffer.from(JSON.stringify(value)),
})

/** Packs a spec as JSON. */
export const packSpec = (spec: Spec.Spec): Any => json(TypeUrl.spec, spec)

/** Packs an exec's process spec as JSON. */
export const packProcess = (process: Spec.Process): Any => json(TypeUrl.process, process)

/** Packs Linux resources (for a task update) as JSON. */
export const packResources = (resources: Spec.LinuxResources): Any => json(TypeUrl.resources, resources)

/** Reads a spec back; anything not JSON or not a spec is a `System` error (containerd gave it to us). */
export const unpackSpec = (any: Any): Effect.Effect<Spec.Spec, System | InvalidParameter> =>
  Effect.try({
    try: () => JSON.parse(Buffer.from(any.value).toString("utf8")) as unknown,
    catch: (cause) =>
      new System({ message: `containerd returned a spec that is not JSON (${any.typeUrl})`, cause }),
  }).pipe(Effect.flatMap(Spec.decode))

const withoutDefaults = <A extends object>(value: A): Partial<A> => {
  const out: Partial<A> = {}
  for (const [key, v] of Object.entries(value) as Array<[keyof A, A[keyof A]]>) {
    if (v === "" || v === false || v === 0 || (Array.isArray(v) && v.length === 0)) continue
    out[key] = v
  }
  return out
}

/** Packs runc v2 options. */
export const packRuncOptions = (options: T.RuncOptions): Any => ({
  typeUrl: TypeUrl.runcOptions,
  value: Buffer.from(Options.encode(Options.fromPartial(options)).finish()),
})

/** Reads runc v2 options; other payloads give `undefined`. */
export const unpackRuncOptions = (any: Any): T.RuncOptions | undefined =>
  any.typeUrl === TypeUrl.runcOptions
    ? (withoutDefaults(Options.decode(any.value)) as T.RuncOptions)
    : undefined

/** Packs checkpoint options. */
export const packCheckpointOptions = (options: T.CheckpointOptions): Any => ({
  typeUrl: TypeUrl.checkpointOptions,
  value: Buffer.from(
    CheckpointOptions.encode(
      CheckpointOptions.fromPartial({ ...options, emptyNamespaces: [...(options.emptyNamespaces ?? [])] }),
    ).finish(),
  ),
})

/** The exec id in a ListPids entry, when it is one. */
export const unpackProcessDetails = (any: Any): string | undefined =>
  any.typeUrl === TypeUrl.processDetails ? ProcessDetails.decode(any.value).execId : undefined

/** Decodes a metrics payload of cgroups v1 or v2. */
export const unpackMetrics = (any: Any): T.CgroupMetrics => {
  switch (any.typeUrl) {
    case TypeUrl.cgroupsV1:
      return { _tag: "v1", metrics: CgroupV1Metrics.decode(any.value) }
    case TypeUrl.cgroupsV2:
      return { _tag: "v2", metrics: CgroupV2Metrics.decode(any.value) }
    default:
      return { _tag: "unknown", data: { typeUrl: any.typeUrl, value: any.value } }
  }
}
