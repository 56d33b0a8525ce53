/**
 * The OCI runtime spec (1.0.2 / 1.1, the fields runc uses on Linux) as Schemas,
 * the default Linux spec containerd generates, pure combinators over it, and
 * the checks the client runs before any RPC.
 *
 * ```ts
 * import { pipe } from "effect/Function"
 * import * as Spec from "effect-containerd/domain/Spec"
 *
 * const spec = pipe(
 *   Spec.defaultLinux({ id: "web", namespace: "default", rootPath: "/srv/rootfs", args: ["nginx"] }),
 *   Spec.withEnv({ PORT: "8080" }),
 *   Spec.withMemoryLimit(256 * 1024 * 1024),
 *   Spec.withHostNamespace("network"),
 * )
 * const exec = Spec.processFrom(spec, { args: ["sh"], terminal: true })
 * ```
 *
 * Fields the schema does not name are kept: every object schema here decodes
 * and encodes with `onExcessProperty: "preserve"` (a `parseOptions`
 * annotation, so it holds however the schema is run), and the combinators
 * copy objects with spreads. A spec read back from containerd with newer
 * fields (`linux.intelRdt`, `linux.resources.unified`, …) loses nothing.
 *
 * Every number is a JSON number that must be an integer; 64-bit Go fields
 * (memory limits, CPU quota) stay `number`.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { dual } from "effect/Function"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import { type InvalidParameter, invalidField } from "../errors/ContainerdError.js"
import * as FastDecode from "../internal/fastDecode.js"

// ---------------------------------------------------------------------------
// Schema building blocks
// ---------------------------------------------------------------------------

/** A struct whose unknown fields survive decode and encode; `identifier` names it in error messages. */
const struct = <Fields extends Schema.Struct.Fields>(
  identifier: string,
  fields: Fields,
): Schema.Struct<Fields> =>
  Schema.Struct(fields).annotations({ identifier, parseOptions: { onExcessProperty: "preserve" } })

/** An optional field that, like Go's `omitempty`, is absent rather than `undefined`. */
const optional = <S extends Schema.Schema.All>(schema: S) => Schema.optionalWith(schema, { exact: true })

/** A JSON integer (uint64 values beyond 2^53 included, as `JSON.parse` reads them). */
const Int = Schema.Number.pipe(
  Schema.filter((n) => Number.isInteger(n), {
    message: () => "must be an integer",
    arbitrary: () => (fc) => fc.oneof(fc.integer(), fc.maxSafeInteger()),
  }),
)

const Strings = Schema.Array(Schema.String)
const StringMap = Schema.Record({ key: Schema.String, value: Schema.String })

// ---------------------------------------------------------------------------
// Process
// ---------------------------------------------------------------------------

const Box_ = struct("Box", { height: Int, width: Int })
/** A terminal size in characters. */
export interface Box extends Schema.Schema.Type<typeof Box_> {}
/** Schema of `Box`. */
export const Box: Schema.Schema<Box> = Box_

const User_ = struct("User", {
  uid: Int,
  gid: Int,
  umask: optional(Int),
  additionalGids: optional(Schema.Array(Int)),
  username: optional(Schema.String),
})
/** The user a process runs as. */
export interface User extends Schema.Schema.Type<typeof User_> {}
/** Schema of `User`. */
export const User: Schema.Schema<User> = User_

const LinuxCapabilities_ = struct("LinuxCapabilities", {
  bounding: optional(Strings),
  effective: optional(Strings),
  inheritable: optional(Strings),
  permitted: optional(Strings),
  ambient: optional(Strings),
})
/** The five capability sets of a process (`CAP_*` names). */
export interface LinuxCapabilities extends Schema.Schema.Type<typeof LinuxCapabilities_> {}
/** Schema of `LinuxCapabilities`. */
export const LinuxCapabilities: Schema.Schema<LinuxCapabilities> = LinuxCapabilities_

const PosixRlimit_ = struct("PosixRlimit", { type: Schema.String, hard: Int, soft: Int })
/** One resource limit (`RLIMIT_NOFILE`, …). */
export interface PosixRlimit extends Schema.Schema.Type<typeof PosixRlimit_> {}
/** Schema of `PosixRlimit`. */
export const PosixRlimit: Schema.Schema<PosixRlimit> = PosixRlimit_

const Process_ = struct("Process", {
  terminal: optional(Schema.Boolean),
  consoleSize: optional(Box),
  user: User,
  args: optional(Strings),
  env: optional(Strings),
  cwd: Schema.String,
  capabilities: optional(LinuxCapabilities),
  rlimits: optional(Schema.Array(PosixRlimit)),
  noNewPrivileges: optional(Schema.Boolean),
  apparmorProfile: optional(Schema.String),
  oomScoreAdj: optional(Int),
  selinuxLabel: optional(Schema.String),
})
/** A process to run: the container's init process, or the spec of an exec. */
export interface Process extends Schema.Schema.Type<typeof Process_> {}
/** Schema of `Process`. */
export const Process: Schema.Schema<Process> = Process_

// ---------------------------------------------------------------------------
// Root, mounts, hooks
// ---------------------------------------------------------------------------

const Root_ = struct("Root", { path: Schema.String, readonly: optional(Schema.Boolean) })
/** The container's root filesystem. */
export interface Root extends Schema.Schema.Type<typeof Root_> {}
/** Schema of `Root`. */
export const Root: Schema.Schema<Root> = Root_

const LinuxIdMapping_ = struct("LinuxIdMapping", { containerID: Int, hostID: Int, size: Int })
/** A range of ids in a user namespace (or an id-mapped mount) and the host ids it maps to. */
export interface LinuxIdMapping extends Schema.Schema.Type<typeof LinuxIdMapping_> {}
/** Schema of `LinuxIdMapping`. */
export const LinuxIdMapping: Schema.Schema<LinuxIdMapping> = LinuxIdMapping_

const Mount_ = struct("Mount", {
  destination: Schema.String,
  type: optional(Schema.String),
  source: optional(Schema.String),
  options: optional(Strings),
  uidMappings: optional(Schema.Array(LinuxIdMapping)),
  gidMappings: optional(Schema.Array(LinuxIdMapping)),
})
/** A mount inside the container. */
export interface Mount extends Schema.Schema.Type<typeof Mount_> {}
/** Schema of `Mount`. */
export const Mount: Schema.Schema<Mount> = Mount_

const Hook_ = struct("Hook", {
  path: Schema.String,
  args: optional(Strings),
  env: optional(Strings),
  timeout: optional(Int),
})
/** A program the runtime runs at a point of the container's lifecycle. */
export interface Hook extends Schema.Schema.Type<typeof Hook_> {}
/** Schema of `Hook`. */
export const Hook: Schema.Schema<Hook> = Hook_

const Hooks_ = struct("Hooks", {
  prestart: optional(Schema.Array(Hook)),
  createRuntime: optional(Schema.Array(Hook)),
  createContainer: optional(Schema.Array(Hook)),
  startContainer: optional(Schema.Array(Hook)),
  poststart: optional(Schema.Array(Hook)),
  poststop: optional(Schema.Array(Hook)),
})
/** The lifecycle hooks, by stage. */
export interface Hooks extends Schema.Schema.Type<typeof Hooks_> {}
/** Schema of `Hooks`. */
export const Hooks: Schema.Schema<Hooks> = Hooks_

// ---------------------------------------------------------------------------
// Linux resources
// ---------------------------------------------------------------------------

const LinuxDeviceCgroup_ = struct("LinuxDeviceCgroup", {
  allow: Schema.Boolean,
  type: optional(Schema.String),
  major: optional(Int),
  minor: optional(Int),
  access: optional(Schema.String),
})
/** A device cgroup rule: allow or deny `access` (`rwm`) to matching devices. */
export interface LinuxDeviceCgroup extends Schema.Schema.Type<typeof LinuxDeviceCgroup_> {}
/** Schema of `LinuxDeviceCgroup`. */
export const LinuxDeviceCgroup: Schema.Schema<LinuxDeviceCgroup> = LinuxDeviceCgroup_

const LinuxMemory_ = struct("LinuxMemory", {
  limit: optional(Int),
  reservation: optional(Int),
  swap: optional(Int),
  kernel: optional(Int),
  kernelTCP: optional(Int),
  swappiness: optional(Int),
  disableOOMKiller: optional(Schema.Boolean),
  useHierarchy: optional(Schema.Boolean),
  checkBeforeUpdate: optional(Schema.Boolean),
})
/** Memory cgroup settings, in bytes (`-1` means no limit). */
export interface LinuxMemory extends Schema.Schema.Type<typeof LinuxMemory_> {}
/** Schema of `LinuxMemory`. */
export const LinuxMemory: Schema.Schema<LinuxMemory> = LinuxMemory_

const LinuxCpu_ = struct("LinuxCpu", {
  shares: optional(Int),
  quota: optional(Int),
  period: optional(Int),
  realtimeRuntime: optional(Int),
  realtimePeriod: optional(Int),
  cpus: optional(Schema.String),
  mems: optional(Schema.String),
  idle: optional(Int),
})
/** CPU cgroup settings: shares, CFS quota and period (µs), cpusets. */
export interface LinuxCpu extends Schema.Schema.Type<typeof LinuxCpu_> {}
/** Schema of `LinuxCpu`. */
export const LinuxCpu: Schema.Schema<LinuxCpu> = LinuxCpu_

const LinuxPids_ = struct("LinuxPids", { limit: Int })
/** The pids cgroup limit (`-1` means no limit). */
export interface LinuxPids extends Schema.Schema.Type<typeof LinuxPids_> {}
/** Schema of `LinuxPids`. */
export const LinuxPids: Schema.Schema<LinuxPids> = LinuxPids_

const LinuxWeightDevice_ = struct("LinuxWeightDevice", {
  major: Int,
  minor: Int,
  weight: optional(Int),
  leafWeight: optional(Int),
})
/** A per-device block IO weight. */
export interface LinuxWeightDevice extends Schema.Schema.Type<typeof LinuxWeightDevice_> {}
/** Schema of `LinuxWeightDevice`. */
export const LinuxWeightDevice: Schema.Schema<LinuxWeightDevice> = LinuxWeightDevice_

const LinuxThrottleDevice_ = struct("LinuxThrottleDevice", { major: Int, minor: Int, rate: Int })
/** A per-device block IO rate limit (bytes or operations per second). */
export interface LinuxThrottleDevice extends Schema.Schema.Type<typeof LinuxThrottleDevice_> {}
/** Schema of `LinuxThrottleDevice`. */
export const LinuxThrottleDevice: Schema.Schema<LinuxThrottleDevice> = LinuxThrottleDevice_

const LinuxBlockIO_ = struct("LinuxBlockIO", {
  weight: optional(Int),
  leafWeight: optional(Int),
  weightDevice: optional(Schema.Array(LinuxWeightDevice)),
  throttleReadBpsDevice: optional(Schema.Array(LinuxThrottleDevice)),
  throttleWriteBpsDevice: optional(Schema.Array(LinuxThrottleDevice)),
  throttleReadIOPSDevice: optional(Schema.Array(LinuxThrottleDevice)),
  throttleWriteIOPSDevice: optional(Schema.Array(LinuxThrottleDevice)),
})
/** Block IO cgroup settings. */
export interface LinuxBlockIO extends Schema.Schema.Type<typeof LinuxBlockIO_> {}
/** Schema of `LinuxBlockIO`. */
export const LinuxBlockIO: Schema.Schema<LinuxBlockIO> = LinuxBlockIO_

const LinuxHugepageLimit_ = struct("LinuxHugepageLimit", { pageSize: Schema.String, limit: Int })
/** A hugetlb limit for one page size (`2MB`, `1GB`). */
export interface LinuxHugepageLimit extends Schema.Schema.Type<typeof LinuxHugepageLimit_> {}
/** Schema of `LinuxHugepageLimit`. */
export const LinuxHugepageLimit: Schema.Schema<LinuxHugepageLimit> = LinuxHugepageLimit_

const LinuxInterfacePriority_ = struct("LinuxInterfacePriority", { name: Schema.String, priority: Int })
/** The priority of the container's traffic on one interface. */
export interface LinuxInterfacePriority extends Schema.Schema.Type<typeof LinuxInterfacePriority_> {}
/** Schema of `LinuxInterfacePriority`. */
export const LinuxInterfacePriority: Schema.Schema<LinuxInterfacePriority> = LinuxInterfacePriority_

const LinuxNetwork_ = struct("LinuxNetwork", {
  classID: optional(Int),
  priorities: optional(Schema.Array(LinuxInterfacePriority)),
})
/** Network cgroup settings (net_cls class id, net_prio priorities). */
export interface LinuxNetwork extends Schema.Schema.Type<typeof LinuxNetwork_> {}
/** Schema of `LinuxNetwork`. */
export const LinuxNetwork: Schema.Schema<LinuxNetwork> = LinuxNetwork_

const LinuxResources_ = struct("LinuxResources", {
  devices: optional(Schema.Array(LinuxDeviceCgroup)),
  memory: optional(LinuxMemory),
  cpu: optional(LinuxCpu),
  pids: optional(LinuxPids),
  blockIO: optional(LinuxBlockIO),
  hugepageLimits: optional(Schema.Array(LinuxHugepageLimit)),
  network: optional(LinuxNetwork),
})
/** The container's cgroup settings; also what a task update takes. */
export interface LinuxResources extends Schema.Schema.Type<typeof LinuxResources_> {}
/** Schema of `LinuxResources`. */
export const LinuxResources: Schema.Schema<LinuxResources> = LinuxResources_

// ---------------------------------------------------------------------------
// Linux
// ---------------------------------------------------------------------------

/** The namespace kinds Linux has. */
export const namespaceKinds = ["pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"] as const

/** A Linux namespace kind. */
export type NamespaceKind = (typeof namespaceKinds)[number]

/** Schema of `NamespaceKind`. */
export const NamespaceKind: Schema.Schema<NamespaceKind> = Schema.Literal(...namespaceKinds).annotations({
  message: () => ({ message: `must be one of ${namespaceKinds.join(", ")}`, override: true }),
})

const LinuxNamespace_ = struct("LinuxNamespace", { type: NamespaceKind, path: optional(Schema.String) })
/** A namespace to create, or to join when `path` is set. */
export interface LinuxNamespace extends Schema.Schema.Type<typeof LinuxNamespace_> {}
/** Schema of `LinuxNamespace`. */
export const LinuxNamespace: Schema.Schema<LinuxNamespace> = LinuxNamespace_

const LinuxDevice_ = struct("LinuxDevice", {
  path: Schema.String,
  type: Schema.String,
  major: Int,
  minor: Int,
  fileMode: optional(Int),
  uid: optional(Int),
  gid: optional(Int),
})
/** A device node to create in the container. */
export interface LinuxDevice extends Schema.Schema.Type<typeof LinuxDevice_> {}
/** Schema of `LinuxDevice`. */
export const LinuxDevice: Schema.Schema<LinuxDevice> = LinuxDevice_

const LinuxSeccompArg_ = struct("LinuxSeccompArg", {
  index: Int,
  value: Int,
  valueTwo: optional(Int),
  op: Schema.String,
})
/** A condition on one syscall argument. */
export interface LinuxSeccompArg extends Schema.Schema.Type<typeof LinuxSeccompArg_> {}
/** Schema of `LinuxSeccompArg`. */
export const LinuxSeccompArg: Schema.Schema<LinuxSeccompArg> = LinuxSeccompArg_

const LinuxSyscall_ = struct("LinuxSyscall", {
  names: Strings,
  action: Schema.String,
  errnoRet: optional(Int),
  args: optional(Schema.Array(LinuxSeccompArg)),
})
/** A seccomp rule: an action for some syscalls. */
export interface LinuxSyscall extends Schema.Schema.Type<typeof LinuxSyscall_> {}
/** Schema of `LinuxSyscall`. */
export const LinuxSyscall: Schema.Schema<LinuxSyscall> = LinuxSyscall_

const LinuxSeccomp_ = struct("LinuxSeccomp", {
  defaultAction: Schema.String,
  defaultErrnoRet: optional(Int),
  architectures: optional(Strings),
  flags: optional(Strings),
  listenerPath: optional(Schema.String),
  listenerMetadata: optional(Schema.String),
  syscalls: optional(Schema.Array(LinuxSyscall)),
})
/** A seccomp profile. */
export interface LinuxSeccomp extends Schema.Schema.Type<typeof LinuxSeccomp_> {}
/** Schema of `LinuxSeccomp`. */
export const LinuxSeccomp: Schema.Schema<LinuxSeccomp> = LinuxSeccomp_

const Linux_ = struct("Linux", {
  uidMappings: optional(Schema.Array(LinuxIdMapping)),
  gidMappings: optional(Schema.Array(LinuxIdMapping)),
  sysctl: optional(StringMap),
  resources: optional(LinuxResources),
  cgroupsPath: optional(Schema.String),
  namespaces: optional(Schema.Array(LinuxNamespace)),
  devices: optional(Schema.Array(LinuxDevice)),
  seccomp: optional(LinuxSeccomp),
  rootfsPropagation: optional(Schema.String),
  maskedPaths: optional(Strings),
  readonlyPaths: optional(Strings),
  mountLabel: optional(Schema.String),
})
/** The Linux-specific part of a spec. */
export interface Linux extends Schema.Schema.Type<typeof Linux_> {}
/** Schema of `Linux`. */
export const Linux: Schema.Schema<Linux> = Linux_

// ---------------------------------------------------------------------------
// Spec
// ---------------------------------------------------------------------------

const Spec_ = struct("Spec", {
  ociVersion: Schema.String,
  process: optional(Process),
  root: optional(Root),
  hostname: optional(Schema.String),
  mounts: optional(Schema.Array(Mount)),
  hooks: optional(Hooks),
  annotations: optional(StringMap),
  linux: optional(Linux),
})
/** An OCI runtime spec: everything runc needs to create a container. */
export interface Spec extends Schema.Schema.Type<typeof Spec_> {}
/** Schema of `Spec`; unknown fields at every level are kept. */
export const Spec: Schema.Schema<Spec> = Spec_

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

const plainKey = /^[A-Za-z_$][A-Za-z0-9_$]*$/

const formatPath = (root: string, path: ReadonlyArray<PropertyKey>): string => {
  let out = root
  for (const key of path) {
    if (typeof key === "number") out += `[${key}]`
    else if (typeof key === "string" && plainKey.test(key)) out += out === "" ? key : `.${key}`
    else out += `[${JSON.stringify(String(key))}]`
  }
  return out
}

/**
 * A decoder that remembers what it produced and hands such a value back as is when asked to decode it again.
 *
 * That is the same answer as a second decode, whose only cost would be a copy: these schemas check and never
 * transform, so decoding a decoded value yields an equal one; the decoded tree is fresh (only fields no schema
 * names are shared with the input, and nothing checks those), and its types are readonly, so only a cast can
 * change it afterwards. The client validates a spec and then sends the decoded copy, which the `Containerd` layers
 * decode again: that second decode is now free. Each decoder has its own set: a value decoded as a `Process` does
 * not pass as a `Spec`.
 */
const decoder = <A>(schema: Schema.Schema<A>, root: string) => {
  const decoded = new WeakSet<object>()
  const decodeEither = Schema.decodeUnknownEither(schema)
  // the same copy the schema's decode makes, built without its bookkeeping; what it refuses, the schema explains
  const fast = FastDecode.compile(schema.ast)
  return (u: unknown): Effect.Effect<A, InvalidParameter> => {
    if (typeof u === "object" && u !== null && decoded.has(u)) return Effect.succeed(u as A)
    const quick = fast === undefined ? FastDecode.refused : fast(u)
    if (quick !== FastDecode.refused) {
      if (typeof quick === "object" && quick !== null) decoded.add(quick)
      return Effect.succeed(quick as A)
    }
    const result = decodeEither(u)
    if (Either.isRight(result)) {
      if (typeof result.right === "object" && result.right !== null) decoded.add(result.right)
      return Effect.succeed(result.right)
    }
    const issue = ParseResult.ArrayFormatter.formatErrorSync(result.left)[0]
    const path = formatPath(root, issue?.path ?? [])
    return Effect.fail(invalidField(path === "" ? "spec" : path, issue?.message ?? "is malformed"))
  }
}

/** Decodes a spec (one a user passed, or JSON read back from containerd); the error names the malformed field. */
export const decode: (u: unknown) => Effect.Effect<Spec, InvalidParameter> = decoder(Spec, "")

/** Decodes an exec's process spec; the error names the malformed field under `process`. */
export const decodeProcess: (u: unknown) => Effect.Effect<Process, InvalidParameter> = decoder(
  Process,
  "process",
)

/** Decodes Linux resources (a task update); the error names the malformed field under `resources`. */
export const decodeResources: (u: unknown) => Effect.Effect<LinuxResources, InvalidParameter> = decoder(
  LinuxResources,
  "resources",
)

// ---------------------------------------------------------------------------
// Defaults
// ---------------------------------------------------------------------------

/** The OCI version containerd 1.6 writes into the specs it generates. */
export const ociVersion = "1.0.2-dev"

/** The PATH a process gets by default. */
export const defaultPathEnv = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/** The capabilities containerd grants by default (bounding, effective, permitted). */
export const defaultCapabilities: ReadonlyArray<string> = [
  "CAP_CHOWN",
  "CAP_DAC_OVERRIDE",
  "CAP_FSETID",
  "CAP_FOWNER",
  "CAP_MKNOD",
  "CAP_NET_RAW",
  "CAP_SETGID",
  "CAP_SETUID",
  "CAP_SETFCAP",
  "CAP_SETPCAP",
  "CAP_NET_BIND_SERVICE",
  "CAP_SYS_CHROOT",
  "CAP_KILL",
  "CAP_AUDIT_WRITE",
]

/** Every Linux capability (up to 5.9's `CAP_CHECKPOINT_RESTORE`), what `add: ["ALL"]` grants. */
export const allCapabilities: ReadonlyArray<string> = [
  "CAP_CHOWN",
  "CAP_DAC_OVERRIDE",
  "CAP_DAC_READ_SEARCH",
  "CAP_FOWNER",
  "CAP_FSETID",
  "CAP_KILL",
  "CAP_SETGID",
  "CAP_SETUID",
  "CAP_SETPCAP",
  "CAP_LINUX_IMMUTABLE",
  "CAP_NET_BIND_SERVICE",
  "CAP_NET_BROADCAST",
  "CAP_NET_ADMIN",
  "CAP_NET_RAW",
  "CAP_IPC_LOCK",
  "CAP_IPC_OWNER",
  "CAP_SYS_MODULE",
  "CAP_SYS_RAWIO",
  "CAP_SYS_CHROOT",
  "CAP_SYS_PTRACE",
  "CAP_SYS_PACCT",
  "CAP_SYS_ADMIN",
  "CAP_SYS_BOOT",
  "CAP_SYS_NICE",
  "CAP_SYS_RESOURCE",
  "CAP_SYS_TIME",
  "CAP_SYS_TTY_CONFIG",
  "CAP_MKNOD",
  "CAP_LEASE",
  "CAP_AUDIT_WRITE",
  "CAP_AUDIT_CONTROL",
  "CAP_SETFCAP",
  "CAP_MAC_OVERRIDE",
  "CAP_MAC_ADMIN",
  "CAP_SYSLOG",
  "CAP_WAKE_ALARM",
  "CAP_BLOCK_SUSPEND",
  "CAP_AUDIT_READ",
  "CAP_PERFMON",
  "CAP_BPF",
  "CAP_CHECKPOINT_RESTORE",
]

const defaultMounts = (): Array<Mount> => [
  { destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"] },
  {
    destination: "/dev",
    type: "tmpfs",
    source: "tmpfs",
    options: ["nosuid", "strictatime", "mode=755", "size=65536k"],
  },
  {
    destination: "/dev/pts",
    type: "devpts",
    source: "devpts",
    options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
  },
  {
    destination: "/dev/shm",
    type: "tmpfs",
    source: "shm",
    options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
  },
  { destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"] },
  { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
  {
    destination: "/run",
    type: "tmpfs",
    source: "tmpfs",
    options: ["nosuid", "strictatime", "mode=755", "size=65536k"],
  },
  {
    destination: "/sys/fs/cgroup",
    type: "cgroup",
    source: "cgroup",
    options: ["ro", "nosuid", "noexec", "nodev", "relatime"],
  },
]

/** Environment variables: `KEY=VALUE` entries (a bare `KEY` unsets it), or a record. */
export type Env = ReadonlyArray<string> | Readonly<Record<string, string>>

/** What `makeProcess` and `processFrom` take. */
export interface ProcessOptions {
  readonly args: ReadonlyArray<string>
  /** Merged over the base environment by key. */
  readonly env?: Env
  readonly cwd?: string
  readonly user?: {
    readonly uid: number
    readonly gid: number
    readonly additionalGids?: ReadonlyArray<number>
  }
  /** Run on a pseudo-terminal (no separate stderr then). Default false. */
  readonly terminal?: boolean
}

/** What `defaultLinux` takes. */
export interface DefaultLinuxOptions {
  /** The container id; the last element of the cgroups path. */
  readonly id: string
  /** The containerd namespace; the first element of the cgroups path. */
  readonly namespace: string
  /** Absolute path of the container's root filesystem on the host. */
  readonly rootPath: string
  /** The init process's command line. */
  readonly args: ReadonlyArray<string>
}

const applyProcessOptions = (base: Process, options: ProcessOptions): Process => {
  let p: Process = { ...base, args: [...options.args] }
  if (options.env !== undefined) p = withProcessEnv(p, options.env)
  if (options.cwd !== undefined) p = { ...p, cwd: options.cwd }
  if (options.user !== undefined)
    p = withProcessUser(p, options.user.uid, options.user.gid, options.user.additionalGids)
  if (options.terminal === true) p = { ...p, terminal: true }
  return p
}

/** A process with containerd's defaults (root, `/`, default PATH, capabilities and rlimits, no new privileges). */
export const makeProcess = (options: ProcessOptions): Process =>
  applyProcessOptions(
    {
      user: { uid: 0, gid: 0 },
      args: [],
      env: [defaultPathEnv],
      cwd: "/",
      capabilities: {
        bounding: [...defaultCapabilities],
        effective: [...defaultCapabilities],
        permitted: [...defaultCapabilities],
      },
      rlimits: [{ type: "RLIMIT_NOFILE", hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
    },
    options,
  )

/**
 * The process spec of an exec, as Go's client builds it: a copy of the
 * container's process with new args (and the given env, cwd, user); the
 * terminal is off and the console size dropped unless `terminal: true`.
 */
export const processFrom: {
  (options: ProcessOptions): (spec: Spec) => Process
  (spec: Spec, options: ProcessOptions): Process
} = dual(2, (spec: Spec, options: ProcessOptions): Process => {
  if (spec.process === undefined) return makeProcess(options)
  const { terminal: _terminal, consoleSize: _consoleSize, ...base } = spec.process
  return applyProcessOptions(base, options)
})

/** containerd's default Unix spec (`populateDefaultUnixSpec`) over `rootPath`, running `args`. */
export const defaultLinux = (options: DefaultLinuxOptions): Spec => ({
  ociVersion,
  process: makeProcess({ args: options.args }),
  root: { path: options.rootPath, readonly: false },
  mounts: defaultMounts(),
  linux: {
    maskedPaths: [
      "/proc/acpi",
      "/proc/asound",
      "/proc/kcore",
      "/proc/keys",
      "/proc/latency_stats",
      "/proc/timer_list",
      "/proc/timer_stats",
      "/proc/sched_debug",
      "/sys/firmware",
      "/proc/scsi",
    ],
    readonlyPaths: ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    cgroupsPath: `/${options.namespace}/${options.id}`,
    resources: { devices: [{ allow: false, access: "rwm" }] },
    namespaces: [{ type: "pid" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }, { type: "network" }],
  },
})

// ---------------------------------------------------------------------------
// Process combinators
// ---------------------------------------------------------------------------

const isEntryList = (env: Env): env is ReadonlyArray<string> => Array.isArray(env)

const envKey = (entry: string): string => {
  const at = entry.indexOf("=")
  return at === -1 ? entry : entry.slice(0, at)
}

/** `base` with `overrides` applied by key: a known key is replaced in place, a new one appended, a bare `KEY` removed. */
export const mergeEnv = (base: ReadonlyArray<string>, overrides: Env): Array<string> => {
  const entries = isEntryList(overrides)
    ? overrides
    : Object.entries(overrides).map(([key, value]) => `${key}=${value}`)
  const out: Array<string | undefined> = [...base]
  const index = new Map<string, number>()
  out.forEach((entry, i) => {
    if (entry !== undefined) index.set(envKey(entry), i)
  })
  for (const entry of entries) {
    const key = envKey(entry)
    const at = index.get(key)
    if (!entry.includes("=")) {
      if (at !== undefined) out[at] = undefined
      index.delete(key)
    } else if (at === undefined) {
      index.set(key, out.length)
      out.push(entry)
    } else {
      out[at] = entry
    }
  }
  return out.filter((entry): entry is string => entry !== undefined)
}

const normalizeCapability = (name: string): string => {
  const upper = name.toUpperCase()
  return upper === "ALL" || upper.startsWith("CAP_") ? upper : `CAP_${upper}`
}

/** Capabilities to add and drop; names with or without `CAP_`, and `"ALL"`. Drops apply first. */
export interface CapabilityChanges {
  readonly add?: ReadonlyArray<string>
  readonly drop?: ReadonlyArray<string>
}

const changeCapabilities = (
  caps: LinuxCapabilities | undefined,
  changes: CapabilityChanges,
): LinuxCapabilities => {
  const drop = new Set((changes.drop ?? []).map(normalizeCapability))
  const add = (changes.add ?? [])
    .map(normalizeCapability)
    .flatMap((c) => (c === "ALL" ? allCapabilities : [c]))
  const dropped = (set: ReadonlyArray<string> | undefined): Array<string> =>
    drop.has("ALL") ? [] : (set ?? []).filter((c) => !drop.has(c))
  const granted = (set: ReadonlyArray<string> | undefined): Array<string> => {
    const out = dropped(set)
    for (const c of add) if (!out.includes(c)) out.push(c)
    return out
  }
  return {
    ...caps,
    bounding: granted(caps?.bounding),
    effective: granted(caps?.effective),
    permitted: granted(caps?.permitted),
    ...(caps?.inheritable === undefined ? {} : { inheritable: dropped(caps.inheritable) }),
    ...(caps?.ambient === undefined ? {} : { ambient: dropped(caps.ambient) }),
  }
}

const isRecordArg = (args: IArguments): boolean => typeof args[0] === "object" && args[0] !== null

/** Sets a process's command line. */
export const withProcessArgs: {
  (args: ReadonlyArray<string>): (process: Process) => Process
  (process: Process, args: ReadonlyArray<string>): Process
} = dual(2, (process: Process, args: ReadonlyArray<string>): Process => ({ ...process, args: [...args] }))

/** Merges variables into a process's environment (later wins, order kept; a bare `KEY` unsets). */
export const withProcessEnv: {
  (env: Env): (process: Process) => Process
  (process: Process, env: Env): Process
} = dual(2, (process: Process, env: Env): Process => ({ ...process, env: mergeEnv(process.env ?? [], env) }))

/** Sets a process's working directory. */
export const withProcessCwd: {
  (cwd: string): (process: Process) => Process
  (process: Process, cwd: string): Process
} = dual(2, (process: Process, cwd: string): Process => ({ ...process, cwd }))

/** Sets the user a process runs as; its supplementary groups are replaced by `additionalGids` (none if omitted). */
export const withProcessUser: {
  (uid: number, gid: number, additionalGids?: ReadonlyArray<number>): (process: Process) => Process
  (process: Process, uid: number, gid: number, additionalGids?: ReadonlyArray<number>): Process
} = dual(
  isRecordArg,
  (process: Process, uid: number, gid: number, additionalGids?: ReadonlyArray<number>): Process => {
    const { additionalGids: _previous, ...user } = process.user
    return {
      ...process,
      user: {
        ...user,
        uid,
        gid,
        ...(additionalGids === undefined ? {} : { additionalGids: [...additionalGids] }),
      },
    }
  },
)

/** Runs a process on a pseudo-terminal, of `width` × `height` characters when given. */
export const withProcessTerminal: {
  (width?: number, height?: number): (process: Process) => Process
  (process: Process, width?: number, height?: number): Process
} = dual(
  isRecordArg,
  (process: Process, width?: number, height?: number): Process => ({
    ...process,
    terminal: true,
    ...(width === undefined || height === undefined ? {} : { consoleSize: { width, height } }),
  }),
)

/** Adds and drops capabilities in a process's bounding, effective and permitted sets (drops also leave inheritable and ambient). */
export const withProcessCapabilities: {
  (changes: CapabilityChanges): (process: Process) => Process
  (process: Process, changes: CapabilityChanges): Process
} = dual(
  2,
  (process: Process, changes: CapabilityChanges): Process => ({
    ...process,
    capabilities: changeCapabilities(process.capabilities, changes),
  }),
)

/** Sets whether a process may gain privileges (setuid binaries, file capabilities). */
export const withProcessNoNewPrivileges: {
  (noNewPrivileges: boolean): (process: Process) => Process
  (process: Process, noNewPrivileges: boolean): Process
} = dual(2, (process: Process, noNewPrivileges: boolean): Process => ({ ...process, noNewPrivileges }))

// ---------------------------------------------------------------------------
// Spec combinators
// ---------------------------------------------------------------------------

const bareProcess: Process = { user: { uid: 0, gid: 0 }, cwd: "/" }

const mapProcess = (spec: Spec, f: (process: Process) => Process): Spec => ({
  ...spec,
  process: f(spec.process ?? bareProcess),
})

const mapLinux = (spec: Spec, f: (linux: Linux) => Linux): Spec => ({ ...spec, linux: f(spec.linux ?? {}) })

const mapResources = (spec: Spec, f: (resources: LinuxResources) => LinuxResources): Spec =>
  mapLinux(spec, (linux) => ({ ...linux, resources: f(linux.resources ?? {}) }))

/** Sets the init process's command line. */
export const withArgs: {
  (args: ReadonlyArray<string>): (spec: Spec) => Spec
  (spec: Spec, args: ReadonlyArray<string>): Spec
} = dual(2, (spec: Spec, args: ReadonlyArray<string>): Spec => mapProcess(spec, withProcessArgs(args)))

/** Merges variables into the init process's environment (later wins, order kept; a bare `KEY` unsets). */
export const withEnv: {
  (env: Env): (spec: Spec) => Spec
  (spec: Spec, env: Env): Spec
} = dual(2, (spec: Spec, env: Env): Spec => mapProcess(spec, withProcessEnv(env)))

/** Sets the init process's working directory. */
export const withCwd: {
  (cwd: string): (spec: Spec) => Spec
  (spec: Spec, cwd: string): Spec
} = dual(2, (spec: Spec, cwd: string): Spec => mapProcess(spec, withProcessCwd(cwd)))

/** Sets the user the init process runs as; supplementary groups are replaced by `additionalGids` (none if omitted). */
export const withUser: {
  (uid: number, gid: number, additionalGids?: ReadonlyArray<number>): (spec: Spec) => Spec
  (spec: Spec, uid: number, gid: number, additionalGids?: ReadonlyArray<number>): Spec
} = dual(
  isRecordArg,
  (spec: Spec, uid: number, gid: number, additionalGids?: ReadonlyArray<number>): Spec =>
    mapProcess(spec, (p) => withProcessUser(p, uid, gid, additionalGids)),
)

/** Runs the init process on a pseudo-terminal, of `width` × `height` characters when given. */
export const withTerminal: {
  (width?: number, height?: number): (spec: Spec) => Spec
  (spec: Spec, width?: number, height?: number): Spec
} = dual(
  isRecordArg,
  (spec: Spec, width?: number, height?: number): Spec =>
    mapProcess(spec, (p) => withProcessTerminal(p, width, height)),
)

/** Sets the root filesystem's path, and whether it is read-only when `readonly` is given. */
export const withRootPath: {
  (path: string, options?: { readonly readonly?: boolean }): (spec: Spec) => Spec
  (spec: Spec, path: string, options?: { readonly readonly?: boolean }): Spec
} = dual(
  isRecordArg,
  (spec: Spec, path: string, options?: { readonly readonly?: boolean }): Spec => ({
    ...spec,
    root: {
      ...spec.root,
      path,
      ...(options?.readonly === undefined ? {} : { readonly: options.readonly }),
    },
  }),
)

/** Sets the container's hostname (seen in its UTS namespace). */
export const withHostname: {
  (hostname: string): (spec: Spec) => Spec
  (spec: Spec, hostname: string): Spec
} = dual(2, (spec: Spec, hostname: string): Spec => ({ ...spec, hostname }))

/** Limits the container's memory, in bytes (`-1`: no limit). */
export const withMemoryLimit: {
  (bytes: number): (spec: Spec) => Spec
  (spec: Spec, bytes: number): Spec
} = dual(
  2,
  (spec: Spec, bytes: number): Spec =>
    mapResources(spec, (r) => ({ ...r, memory: { ...r.memory, limit: bytes } })),
)

/** Sets the container's relative CPU weight (cgroup v1 shares; 1024 is the kernel's default). */
export const withCpuShares: {
  (shares: number): (spec: Spec) => Spec
  (spec: Spec, shares: number): Spec
} = dual(
  2,
  (spec: Spec, shares: number): Spec => mapResources(spec, (r) => ({ ...r, cpu: { ...r.cpu, shares } })),
)

/** Caps the container's CPU time at `quota` µs per `period` µs (`quota / period` CPUs). */
export const withCpuQuota: {
  (quota: number, period: number): (spec: Spec) => Spec
  (spec: Spec, quota: number, period: number): Spec
} = dual(
  3,
  (spec: Spec, quota: number, period: number): Spec =>
    mapResources(spec, (r) => ({ ...r, cpu: { ...r.cpu, quota, period } })),
)

/** Limits the number of processes in the container (`-1`: no limit). */
export const withPidsLimit: {
  (limit: number): (spec: Spec) => Spec
  (spec: Spec, limit: number): Spec
} = dual(
  2,
  (spec: Spec, limit: number): Spec => mapResources(spec, (r) => ({ ...r, pids: { ...r.pids, limit } })),
)

/** Adds a mount; one already at the same destination is replaced in place. */
export const withMount: {
  (mount: Mount): (spec: Spec) => Spec
  (spec: Spec, mount: Mount): Spec
} = dual(2, (spec: Spec, mount: Mount): Spec => {
  const mounts = spec.mounts ?? []
  const at = mounts.findIndex((m) => m.destination === mount.destination)
  return { ...spec, mounts: at === -1 ? [...mounts, mount] : mounts.map((m, i) => (i === at ? mount : m)) }
})

/** Shares the host's namespace of this kind (removes it from the spec); `"network"` gives the host network. */
export const withHostNamespace: {
  (kind: NamespaceKind): (spec: Spec) => Spec
  (spec: Spec, kind: NamespaceKind): Spec
} = dual(
  2,
  (spec: Spec, kind: NamespaceKind): Spec =>
    mapLinux(spec, (linux) => ({
      ...linux,
      namespaces: (linux.namespaces ?? []).filter((ns) => ns.type !== kind),
    })),
)

/** Runs the container in a new user namespace with these id mappings (replacing any before). */
export const withUserNamespace: {
  (
    uidMappings: ReadonlyArray<LinuxIdMapping>,
    gidMappings: ReadonlyArray<LinuxIdMapping>,
  ): (spec: Spec) => Spec
  (spec: Spec, uidMappings: ReadonlyArray<LinuxIdMapping>, gidMappings: ReadonlyArray<LinuxIdMapping>): Spec
} = dual(
  3,
  (
    spec: Spec,
    uidMappings: ReadonlyArray<LinuxIdMapping>,
    gidMappings: ReadonlyArray<LinuxIdMapping>,
  ): Spec =>
    mapLinux(spec, (linux) => {
      const namespaces = linux.namespaces ?? []
      return {
        ...linux,
        namespaces: namespaces.some((ns) => ns.type === "user")
          ? namespaces
          : [...namespaces, { type: "user" }],
        uidMappings: [...uidMappings],
        gidMappings: [...gidMappings],
      }
    }),
)

/** Merges annotations into the spec (later wins). */
export const withAnnotations: {
  (annotations: Readonly<Record<string, string>>): (spec: Spec) => Spec
  (spec: Spec, annotations: Readonly<Record<string, string>>): Spec
} = dual(
  2,
  (spec: Spec, annotations: Readonly<Record<string, string>>): Spec => ({
    ...spec,
    annotations: { ...spec.annotations, ...annotations },
  }),
)

/** Adds and drops capabilities of the init process (bounding, effective, permitted; drops also leave inheritable and ambient). */
export const withCapabilities: {
  (changes: CapabilityChanges): (spec: Spec) => Spec
  (spec: Spec, changes: CapabilityChanges): Spec
} = dual(
  2,
  (spec: Spec, changes: CapabilityChanges): Spec => mapProcess(spec, withProcessCapabilities(changes)),
)

/** Sets whether the init process may gain privileges (setuid binaries, file capabilities). */
export const withNoNewPrivileges: {
  (noNewPrivileges: boolean): (spec: Spec) => Spec
  (spec: Spec, noNewPrivileges: boolean): Spec
} = dual(
  2,
  (spec: Spec, noNewPrivileges: boolean): Spec =>
    mapProcess(spec, withProcessNoNewPrivileges(noNewPrivileges)),
)

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

type Problem = readonly [path: string, problem: string]

const maxId = 4294967295

const isAbsolute = (path: string): boolean => path.startsWith("/")

const checkId = (path: string, n: number): Problem | undefined => {
  if (!Number.isInteger(n) || n < 0) return [path, "must be a non-negative integer"]
  if (n > maxId) return [path, `must be at most ${maxId}`]
  return undefined
}

const checkPositive = (path: string, n: number | undefined): Problem | undefined =>
  n === undefined || n > 0 ? undefined : [path, "must be positive"]

/** Positive, or -1 for "no limit" (the cgroup convention). */
const checkLimit = (path: string, n: number | undefined): Problem | undefined =>
  n === -1 ? undefined : checkPositive(path, n)

const first = (checks: Iterable<Problem | undefined>): Problem | undefined => {
  for (const problem of checks) if (problem !== undefined) return problem
  return undefined
}

function* processProblems(p: Process, at: string): Generator<Problem | undefined> {
  if (p.args === undefined || p.args.length === 0) yield [`${at}.args`, "must not be empty"]
  if (!isAbsolute(p.cwd)) yield [`${at}.cwd`, "must be an absolute path"]
  yield checkId(`${at}.user.uid`, p.user.uid)
  yield checkId(`${at}.user.gid`, p.user.gid)
  for (const [i, gid] of (p.user.additionalGids ?? []).entries())
    yield checkId(`${at}.user.additionalGids[${i}]`, gid)
  for (const [i, entry] of (p.env ?? []).entries()) {
    if (entry.indexOf("=") < 1) yield [`${at}.env[${i}]`, "must be KEY=VALUE"]
  }
}

function* resourceProblems(r: LinuxResources, at: string): Generator<Problem | undefined> {
  yield checkLimit(`${at}.memory.limit`, r.memory?.limit)
  yield checkLimit(`${at}.memory.reservation`, r.memory?.reservation)
  yield checkLimit(`${at}.memory.swap`, r.memory?.swap)
  yield checkPositive(`${at}.cpu.shares`, r.cpu?.shares)
  yield checkLimit(`${at}.cpu.quota`, r.cpu?.quota)
  yield checkPositive(`${at}.cpu.period`, r.cpu?.period)
  if (r.pids !== undefined) yield checkLimit(`${at}.pids.limit`, r.pids.limit)
}

function* mappingProblems(
  mappings: ReadonlyArray<LinuxIdMapping>,
  at: string,
): Generator<Problem | undefined> {
  for (const [i, m] of mappings.entries()) {
    yield checkId(`${at}[${i}].containerID`, m.containerID)
    yield checkId(`${at}[${i}].hostID`, m.hostID)
    yield checkPositive(`${at}[${i}].size`, m.size)
  }
}

function* specProblems(spec: Spec): Generator<Problem | undefined> {
  if (spec.process === undefined) yield ["process", "must be present"]
  else yield* processProblems(spec.process, "process")
  if (spec.root === undefined) yield ["root", "must be present"]
  else if (!isAbsolute(spec.root.path)) yield ["root.path", "must be an absolute path"]
  for (const [i, mount] of (spec.mounts ?? []).entries()) {
    if (!isAbsolute(mount.destination)) yield [`mounts[${i}].destination`, "must be an absolute path"]
  }
  const linux = spec.linux
  if (linux === undefined) return
  if (linux.resources !== undefined) yield* resourceProblems(linux.resources, "linux.resources")
  const namespaces = linux.namespaces ?? []
  const seen = new Set<string>()
  for (const [i, ns] of namespaces.entries()) {
    if (!(namespaceKinds as ReadonlyArray<string>).includes(ns.type)) {
      yield [`linux.namespaces[${i}].type`, `must be one of ${namespaceKinds.join(", ")}`]
    }
    if (seen.has(ns.type)) yield [`linux.namespaces[${i}].type`, `duplicates the ${ns.type} namespace`]
    seen.add(ns.type)
  }
  const uidMappings = linux.uidMappings ?? []
  const gidMappings = linux.gidMappings ?? []
  yield* mappingProblems(uidMappings, "linux.uidMappings")
  yield* mappingProblems(gidMappings, "linux.gidMappings")
  const userNs = namespaces.find((ns) => ns.type === "user")
  if (userNs === undefined) {
    if (uidMappings.length > 0 || gidMappings.length > 0) {
      yield ["linux.namespaces", "must include a user namespace when uid or gid mappings are set"]
    }
  } else if (userNs.path === undefined) {
    if (uidMappings.length === 0) yield ["linux.uidMappings", "must not be empty with a new user namespace"]
    if (gidMappings.length === 0) yield ["linux.gidMappings", "must not be empty with a new user namespace"]
  }
}

/** Decodes and checks a value; succeeds with the decoded copy, or with the value itself when `same`. */
const validator =
  <A>(
    decodeValue: (u: unknown) => Effect.Effect<A, InvalidParameter>,
    problems: (a: A) => Iterable<Problem | undefined>,
    same: boolean,
  ) =>
  (value: A): Effect.Effect<A, InvalidParameter> =>
    Effect.flatMap(decodeValue(value), (decoded) => {
      const problem = first(problems(decoded))
      return problem === undefined
        ? Effect.succeed(same ? value : decoded)
        : Effect.fail(invalidField(...problem))
    })

/**
 * Checks a spec before it is sent: well-formed, a process with args, absolute
 * cwd, root path and mount destinations, positive limits (`-1` allowed for
 * memory, quota and pids), valid ids, known and distinct namespaces, user
 * namespace and id mappings together. The error names the offending field.
 */
export const validate: (spec: Spec) => Effect.Effect<Spec, InvalidParameter> = validator(
  decode,
  specProblems,
  true,
)

/**
 * `validate`, succeeding with the decoded copy instead of the spec itself: for a caller that sends the spec on,
 * since `decode` takes that copy as is (the client's `create`).
 */
export const validateDecoded: (spec: Spec) => Effect.Effect<Spec, InvalidParameter> = validator(
  decode,
  specProblems,
  false,
)

const execProblems = (p: Process) => processProblems(p, "process")

/** Checks an exec's process spec (well-formed, args, absolute cwd, ids, env entries); the error names the field. */
export const validateProcess: (process: Process) => Effect.Effect<Process, InvalidParameter> = validator(
  decodeProcess,
  execProblems,
  true,
)

/** `validateProcess`, succeeding with the decoded copy, which `decodeProcess` takes as is (the client's `exec`). */
export const validateProcessDecoded: (process: Process) => Effect.Effect<Process, InvalidParameter> =
  validator(decodeProcess, execProblems, false)

/** Checks a task update's resources (well-formed, positive limits, `-1` for none); the error names the field. */
export const validateResources: (
  resources: LinuxResources,
) => Effect.Effect<LinuxResources, InvalidParameter> = validator(
  decodeResources,
  (r) => resourceProblems(r, "resources"),
  true,
)
