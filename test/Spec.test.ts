import { assert, describe, it } from "@effect/vitest"
import * as Arbitrary from "effect/Arbitrary"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as FastCheck from "effect/FastCheck"
import { pipe } from "effect/Function"
import * as Schema from "effect/Schema"
import * as Spec from "../src/domain/Spec.js"
import * as FastDecode from "../src/internal/fastDecode.js"

// ---------------------------------------------------------------------------
// helpers and arbitraries
// ---------------------------------------------------------------------------

const base = (args: ReadonlyArray<string> = ["/bin/sh"]) =>
  Spec.defaultLinux({ id: "web", namespace: "default", rootPath: "/var/lib/rootfs/web", args })

/** The message of the InvalidParameter an Effect fails with; an assertion failure if it succeeds. */
const failureMessage = <A>(effect: Effect.Effect<A, { readonly _tag: string; readonly message: string }>) =>
  Effect.map(Effect.either(effect), (result) => {
    if (Either.isRight(result)) return assert.fail("expected an InvalidParameter, but it succeeded")
    assert.strictEqual(result.left._tag, "InvalidParameter")
    return result.left.message
  })

const jsonRoundTrip = (spec: Spec.Spec) =>
  Spec.decode(JSON.parse(JSON.stringify(Schema.encodeSync(Spec.Spec)(spec))))

const deepFreeze = <A>(value: A): A => {
  if (typeof value === "object" && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v)
    Object.freeze(value)
  }
  return value
}

const segment = FastCheck.stringMatching(/^[a-z0-9][a-z0-9_.-]{0,11}$/)
const absolutePath = FastCheck.array(segment, { minLength: 1, maxLength: 4 }).map(
  (parts) => `/${parts.join("/")}`,
)
const envEntry = FastCheck.tuple(FastCheck.stringMatching(/^[A-Z_][A-Z0-9_]{0,8}$/), FastCheck.string()).map(
  ([key, value]) => `${key}=${value}`,
)
const id = FastCheck.nat({ max: 4294967295 })
const mapping = FastCheck.record({
  containerID: FastCheck.nat({ max: 65535 }),
  hostID: FastCheck.nat({ max: 1_000_000 }),
  size: FastCheck.integer({ min: 1, max: 65536 }),
})
const mappings = FastCheck.array(mapping, { minLength: 1, maxLength: 2 })
const mount = FastCheck.record({
  destination: absolutePath,
  type: FastCheck.constantFrom("bind", "tmpfs"),
  source: absolutePath,
  options: FastCheck.subarray(["rbind", "ro", "nosuid", "nodev"]),
})

/** Valid specs: the default spec changed by a random selection of combinators. */
const validSpec: FastCheck.Arbitrary<Spec.Spec> = FastCheck.record({
  id: segment,
  namespace: segment,
  rootPath: absolutePath,
  readonlyRoot: FastCheck.boolean(),
  args: FastCheck.array(FastCheck.string(), { minLength: 1, maxLength: 4 }),
  env: FastCheck.array(envEntry, { maxLength: 4 }),
  cwd: absolutePath,
  user: FastCheck.tuple(id, id, FastCheck.array(id, { maxLength: 3 })),
  terminal: FastCheck.boolean(),
  hostname: FastCheck.option(segment),
  memory: FastCheck.option(
    FastCheck.oneof(FastCheck.constant(-1), FastCheck.integer({ min: 1, max: 2 ** 40 })),
  ),
  shares: FastCheck.option(FastCheck.integer({ min: 2, max: 262144 })),
  quota: FastCheck.option(
    FastCheck.tuple(
      FastCheck.integer({ min: 1000, max: 1_000_000 }),
      FastCheck.integer({ min: 1000, max: 1_000_000 }),
    ),
  ),
  pids: FastCheck.option(FastCheck.integer({ min: 1, max: 100_000 })),
  mounts: FastCheck.array(mount, { maxLength: 3 }),
  hostNamespaces: FastCheck.subarray(["network", "ipc", "uts", "pid"] as const),
  userNamespace: FastCheck.option(FastCheck.tuple(mappings, mappings)),
  capabilities: FastCheck.record({
    add: FastCheck.subarray(["NET_ADMIN", "CAP_SYS_PTRACE", "sys_time"]),
    drop: FastCheck.subarray(["CAP_NET_RAW", "MKNOD", "ALL"]),
  }),
  annotations: FastCheck.dictionary(
    FastCheck.string().filter((key) => key !== "__proto__"),
    FastCheck.string(),
    { maxKeys: 3 },
  ),
}).map((o) => {
  let spec = pipe(
    Spec.defaultLinux({ id: o.id, namespace: o.namespace, rootPath: o.rootPath, args: o.args }),
    Spec.withRootPath(o.rootPath, { readonly: o.readonlyRoot }),
    Spec.withEnv(o.env),
    Spec.withCwd(o.cwd),
    Spec.withUser(o.user[0], o.user[1], o.user[2]),
    Spec.withCapabilities(o.capabilities),
    Spec.withAnnotations(o.annotations),
  )
  if (o.terminal) spec = Spec.withTerminal(spec, 80, 24)
  if (o.hostname !== null) spec = Spec.withHostname(spec, o.hostname)
  if (o.memory !== null) spec = Spec.withMemoryLimit(spec, o.memory)
  if (o.shares !== null) spec = Spec.withCpuShares(spec, o.shares)
  if (o.quota !== null) spec = Spec.withCpuQuota(spec, o.quota[0], o.quota[1])
  if (o.pids !== null) spec = Spec.withPidsLimit(spec, o.pids)
  for (const m of o.mounts) spec = Spec.withMount(spec, m)
  for (const kind of o.hostNamespaces) spec = Spec.withHostNamespace(spec, kind)
  if (o.userNamespace !== null) spec = Spec.withUserNamespace(spec, o.userNamespace[0], o.userNamespace[1])
  return spec
})

/**
 * Whether any object in `u` has an own `__proto__` key. Schema's decoding
 * assigns keys one by one, and assigning `__proto__` sets the prototype instead
 * of a field, so such keys cannot round-trip; the generated specs avoid them.
 */
const hasProtoKey = (u: unknown): boolean =>
  typeof u === "object" && u !== null && (Object.hasOwn(u, "__proto__") || Object.values(u).some(hasProtoKey))

/** Schema-generated specs (every field the schema knows, random values). */
const generatedSpec = Arbitrary.make(Spec.Spec).filter((spec) => !hasProtoKey(spec))

/** Field names the schema does not know, for unknown-field properties. */
const unknownFields = FastCheck.dictionary(
  FastCheck.stringMatching(/^x-[a-z]{1,8}$/),
  FastCheck.jsonValue({ maxDepth: 2 }),
  { minKeys: 1, maxKeys: 3 },
)

// ---------------------------------------------------------------------------
// schema
// ---------------------------------------------------------------------------

describe("Spec schema", () => {
  it.effect.prop(
    "decode(encode(spec)) equals spec for schema-generated specs, through JSON too",
    [generatedSpec],
    ([spec]) =>
      Effect.gen(function* () {
        const encoded = Schema.encodeSync(Spec.Spec)(spec)
        assert.deepStrictEqual(yield* Spec.decode(encoded), spec)
        assert.deepStrictEqual(yield* jsonRoundTrip(spec), spec)
      }),
    { fastCheck: { numRuns: 40 } },
  )

  it.effect.prop("decode(encode(spec)) equals spec for valid specs", [validSpec], ([spec]) =>
    Effect.gen(function* () {
      assert.deepStrictEqual(yield* jsonRoundTrip(spec), spec)
    }),
  )

  it.effect("unknown fields at the top level and nested survive decode → encode", () =>
    Effect.gen(function* () {
      const spec = base()
      const linux = spec.linux!
      const input = {
        ...spec,
        domainname: "example.org",
        process: { ...spec.process!, foo: { bar: [1, 2] }, user: { ...spec.process!.user, extra: true } },
        mounts: spec.mounts!.map((m, i) => (i === 1 ? { ...m, mountFlag: "x" } : m)),
        linux: {
          ...linux,
          intelRdt: { closID: "guaranteed_group", l3CacheSchema: "L3:0=7f0" },
          namespaces: [{ type: "pid" as const, vendor: "v" }],
          resources: {
            ...linux.resources!,
            unified: { "memory.high": "1073741824" },
            memory: { limit: 5, future: 1 },
          },
        },
      }
      const decoded = yield* Spec.decode(input)
      const encoded = Schema.encodeSync(Spec.Spec)(decoded)
      assert.deepStrictEqual(encoded, input)
      assert.deepStrictEqual(JSON.parse(JSON.stringify(encoded)), JSON.parse(JSON.stringify(input)))
      const viaSchema = Schema.decodeUnknownSync(Spec.Spec)(input) as unknown as typeof input
      assert.deepStrictEqual(viaSchema.linux.resources.unified, { "memory.high": "1073741824" })
    }),
  )

  it.effect.prop(
    "unknown fields injected at any object level survive a JSON round trip",
    [
      validSpec,
      unknownFields,
      FastCheck.constantFrom("top", "process", "user", "linux", "resources", "root"),
    ],
    ([spec, extra, level]) =>
      Effect.gen(function* () {
        const linux = spec.linux ?? {}
        const input =
          level === "top"
            ? { ...spec, ...extra }
            : level === "process"
              ? { ...spec, process: { ...spec.process!, ...extra } }
              : level === "user"
                ? { ...spec, process: { ...spec.process!, user: { ...spec.process!.user, ...extra } } }
                : level === "linux"
                  ? { ...spec, linux: { ...linux, ...extra } }
                  : level === "resources"
                    ? { ...spec, linux: { ...linux, resources: { ...linux.resources, ...extra } } }
                    : { ...spec, root: { ...spec.root!, ...extra } }
        const json = JSON.parse(JSON.stringify(input))
        const decoded = yield* Spec.decode(json)
        assert.deepStrictEqual(JSON.parse(JSON.stringify(Schema.encodeSync(Spec.Spec)(decoded))), json)
      }),
  )

  it.effect("decode names the path of a malformed field", () =>
    Effect.gen(function* () {
      const spec = base()
      const cases: ReadonlyArray<readonly [unknown, string]> = [
        [{ ...spec, process: { ...spec.process, args: 42 } }, "process.args: "],
        [{ ...spec, mounts: [spec.mounts![0], { type: "bind" }] }, "mounts[1].destination: is missing"],
        [
          { ...spec, process: { ...spec.process, user: { uid: 1.5, gid: 0 } } },
          "process.user.uid: must be an integer",
        ],
        [{ ...spec, process: { ...spec.process, user: { uid: "0", gid: 0 } } }, "process.user.uid: "],
        [
          { ...spec, linux: { namespaces: [{ type: "pid" }, { type: "bogus" }] } },
          "linux.namespaces[1].type: must be one of",
        ],
        [{ ...spec, annotations: { "io.example/key": 3 } }, 'annotations["io.example/key"]: '],
        [{ ...spec, linux: { resources: { memory: { limit: "1g" } } } }, "linux.resources.memory.limit: "],
        [{ process: spec.process }, "ociVersion: is missing"],
        [42, "spec: Expected Spec"],
      ]
      for (const [input, expected] of cases) {
        const message = yield* failureMessage(Spec.decode(input))
        assert.isTrue(
          message.startsWith(expected),
          `${JSON.stringify(message)} starts with ${JSON.stringify(expected)}`,
        )
      }
    }),
  )

  it.effect("decodeProcess and decodeResources name paths under process and resources", () =>
    Effect.gen(function* () {
      const process = base().process!
      assert.deepStrictEqual(yield* Spec.decodeProcess(process), process)
      const { cwd: _cwd, ...noCwd } = process
      assert.strictEqual(yield* failureMessage(Spec.decodeProcess(noCwd)), "process.cwd: is missing")
      assert.include(
        yield* failureMessage(Spec.decodeResources({ pids: {} })),
        "resources.pids.limit: is missing",
      )
      assert.deepStrictEqual(yield* Spec.decodeResources({ memory: { limit: 7 }, unified: { a: "b" } }), {
        memory: { limit: 7 },
        unified: { a: "b" },
      } as Spec.LinuxResources)
    }),
  )

  it.effect("numbers beyond 2^53 (uint64 from Go) decode as numbers", () =>
    Effect.gen(function* () {
      const spec = base()
      const json = JSON.stringify(spec).replace('"hard":1024', '"hard":18446744073709551615')
      const decoded = yield* Spec.decode(JSON.parse(json))
      assert.strictEqual(decoded.process?.rlimits?.[0]?.hard, 2 ** 64)
    }),
  )
})

// ---------------------------------------------------------------------------
// defaultLinux
// ---------------------------------------------------------------------------

describe("defaultLinux", () => {
  it("has containerd's default process, root and version", () => {
    const spec = Spec.defaultLinux({
      id: "c1",
      namespace: "moby",
      rootPath: "/rootfs/c1",
      args: ["sleep", "60"],
    })
    assert.strictEqual(spec.ociVersion, "1.0.2-dev")
    assert.deepStrictEqual(spec.root, { path: "/rootfs/c1", readonly: false })
    const process = spec.process!
    assert.deepStrictEqual(process.args, ["sleep", "60"])
    assert.deepStrictEqual(process.user, { uid: 0, gid: 0 })
    assert.strictEqual(process.cwd, "/")
    assert.deepStrictEqual(process.env, ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
    assert.isTrue(process.noNewPrivileges)
    assert.isUndefined(process.terminal)
    assert.deepStrictEqual(process.rlimits, [{ type: "RLIMIT_NOFILE", hard: 1024, soft: 1024 }])
    const caps = [
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
    assert.deepStrictEqual(process.capabilities, { bounding: caps, effective: caps, permitted: caps })
  })

  it("has containerd's default mounts", () => {
    assert.deepStrictEqual(base().mounts, [
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
      {
        destination: "/dev/mqueue",
        type: "mqueue",
        source: "mqueue",
        options: ["nosuid", "noexec", "nodev"],
      },
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
    ])
  })

  it("has containerd's Linux section: masked and read-only paths, cgroups path, device rule, namespaces", () => {
    const linux = Spec.defaultLinux({ id: "c1", namespace: "moby", rootPath: "/r", args: ["x"] }).linux!
    assert.deepStrictEqual(linux.maskedPaths, [
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
    ])
    assert.deepStrictEqual(linux.readonlyPaths, [
      "/proc/bus",
      "/proc/fs",
      "/proc/irq",
      "/proc/sys",
      "/proc/sysrq-trigger",
    ])
    assert.strictEqual(linux.cgroupsPath, "/moby/c1")
    assert.deepStrictEqual(linux.resources, { devices: [{ allow: false, access: "rwm" }] })
    assert.deepStrictEqual(
      linux.namespaces?.map((ns) => ns.type),
      ["pid", "ipc", "uts", "mount", "network"],
    )
    assert.isUndefined(linux.uidMappings)
  })

  it.effect.prop(
    "passes validate for any id, namespace, root path and args",
    [segment, segment, absolutePath, FastCheck.array(FastCheck.string(), { minLength: 1, maxLength: 5 })],
    ([id, namespace, rootPath, args]) =>
      Effect.gen(function* () {
        const spec = Spec.defaultLinux({ id, namespace, rootPath, args })
        assert.strictEqual(yield* Spec.validate(spec), spec)
        assert.strictEqual(spec.linux?.cgroupsPath, `/${namespace}/${id}`)
        assert.deepStrictEqual(spec.process?.args, args)
      }),
  )

  it("returns a fresh object each time (no shared arrays between specs)", () => {
    const a = base()
    const b = base()
    assert.notStrictEqual(a.mounts, b.mounts)
    assert.notStrictEqual(a.process?.capabilities?.bounding, b.process?.capabilities?.bounding)
    assert.notStrictEqual(a.process?.capabilities?.bounding, a.process?.capabilities?.effective)
  })
})

// ---------------------------------------------------------------------------
// combinators
// ---------------------------------------------------------------------------

describe("combinators", () => {
  it("withArgs replaces the init command line, data-first and piped alike", () => {
    const spec = base(["a"])
    assert.deepStrictEqual(Spec.withArgs(spec, ["b", "c"]).process?.args, ["b", "c"])
    assert.deepStrictEqual(pipe(spec, Spec.withArgs(["b", "c"])), Spec.withArgs(spec, ["b", "c"]))
    assert.deepStrictEqual(spec.process?.args, ["a"])
  })

  it("withEnv merges by key: replaced in place, new keys appended, later wins, bare KEY unsets", () => {
    const spec = pipe(base(), Spec.withEnv(["A=1", "B=2"]))
    assert.deepStrictEqual(spec.process?.env, [Spec.defaultPathEnv, "A=1", "B=2"])
    const merged = Spec.withEnv(spec, ["B=3", "C=4", "A=5", "C=6"])
    assert.deepStrictEqual(merged.process?.env, [Spec.defaultPathEnv, "A=5", "B=3", "C=6"])
    assert.deepStrictEqual(Spec.withEnv(spec, { PATH: "/bin", D: "x=y" }).process?.env, [
      "PATH=/bin",
      "A=1",
      "B=2",
      "D=x=y",
    ])
    assert.deepStrictEqual(Spec.withEnv(spec, ["A", "Z"]).process?.env, [Spec.defaultPathEnv, "B=2"])
    assert.deepStrictEqual(Spec.withEnv(spec, ["A", "A=again"]).process?.env, [
      Spec.defaultPathEnv,
      "B=2",
      "A=again",
    ])
  })

  it("mergeEnv keeps an empty value and the order of the base", () => {
    assert.deepStrictEqual(Spec.mergeEnv(["X=1", "Y=2"], ["Y=", "W=0"]), ["X=1", "Y=", "W=0"])
  })

  it("withCwd sets the working directory", () => {
    assert.strictEqual(pipe(base(), Spec.withCwd("/srv")).process?.cwd, "/srv")
  })

  it("withUser sets uid, gid and supplementary groups, keeping the umask", () => {
    const withUmask: Spec.Spec = {
      ...base(),
      process: { ...base().process!, user: { uid: 0, gid: 0, umask: 18 } },
    }
    const spec = Spec.withUser(withUmask, 1000, 100, [10, 20])
    assert.deepStrictEqual(spec.process?.user, { uid: 1000, gid: 100, umask: 18, additionalGids: [10, 20] })
    assert.deepStrictEqual(pipe(spec, Spec.withUser(5, 6)).process?.user, { uid: 5, gid: 6, umask: 18 })
  })

  it("withTerminal turns the terminal on, with a console size when given", () => {
    const plain = pipe(base(), Spec.withTerminal())
    assert.isTrue(plain.process?.terminal)
    assert.isUndefined(plain.process?.consoleSize)
    const sized = Spec.withTerminal(base(), 120, 40)
    assert.isTrue(sized.process?.terminal)
    assert.deepStrictEqual(sized.process?.consoleSize, { width: 120, height: 40 })
    assert.deepStrictEqual(pipe(base(), Spec.withTerminal(120, 40)), sized)
  })

  it("withRootPath sets the path, and readonly only when given", () => {
    const ro = Spec.withRootPath(base(), "/other", { readonly: true })
    assert.deepStrictEqual(ro.root, { path: "/other", readonly: true })
    assert.deepStrictEqual(pipe(ro, Spec.withRootPath("/third")).root, { path: "/third", readonly: true })
    assert.deepStrictEqual(pipe(ro, Spec.withRootPath("/third", { readonly: false })).root, {
      path: "/third",
      readonly: false,
    })
  })

  it("withHostname sets the hostname", () => {
    assert.strictEqual(pipe(base(), Spec.withHostname("box")).hostname, "box")
  })

  it("resource combinators set their field and keep the other resources", () => {
    const spec = pipe(
      base(),
      Spec.withMemoryLimit(64 * 1024 * 1024),
      Spec.withCpuShares(512),
      Spec.withCpuQuota(50_000, 100_000),
      Spec.withPidsLimit(100),
    )
    assert.deepStrictEqual(spec.linux?.resources, {
      devices: [{ allow: false, access: "rwm" }],
      memory: { limit: 64 * 1024 * 1024 },
      cpu: { shares: 512, quota: 50_000, period: 100_000 },
      pids: { limit: 100 },
    })
    assert.strictEqual(Spec.withMemoryLimit(spec, 1).linux?.resources?.memory?.limit, 1)
    assert.strictEqual(Spec.withCpuShares(spec, 2).linux?.resources?.cpu?.quota, 50_000)
    assert.deepStrictEqual(Spec.withCpuQuota(spec, 1000, 2000).linux?.resources?.cpu, {
      shares: 512,
      quota: 1000,
      period: 2000,
    })
    assert.strictEqual(Spec.withPidsLimit(spec, 7).linux?.resources?.pids?.limit, 7)
  })

  it("withMount appends a mount, and replaces one at the same destination in place", () => {
    const data: Spec.Mount = {
      destination: "/data",
      type: "bind",
      source: "/srv/data",
      options: ["rbind", "ro"],
    }
    const added = pipe(base(), Spec.withMount(data))
    assert.strictEqual(added.mounts?.length, 9)
    assert.deepStrictEqual(added.mounts?.[8], data)
    const bigShm: Spec.Mount = { destination: "/dev/shm", type: "tmpfs", source: "shm", options: ["size=1g"] }
    const replaced = Spec.withMount(added, bigShm)
    assert.strictEqual(replaced.mounts?.length, 9)
    assert.deepStrictEqual(replaced.mounts?.[3], bigShm)
    assert.deepStrictEqual(
      replaced.mounts?.map((m) => m.destination),
      added.mounts?.map((m) => m.destination),
    )
  })

  it("withHostNamespace removes only that namespace", () => {
    const spec = pipe(base(), Spec.withHostNamespace("network"))
    assert.deepStrictEqual(
      spec.linux?.namespaces?.map((ns) => ns.type),
      ["pid", "ipc", "uts", "mount"],
    )
    assert.deepStrictEqual(
      Spec.withHostNamespace(spec, "pid").linux?.namespaces?.map((ns) => ns.type),
      ["ipc", "uts", "mount"],
    )
  })

  it("withUserNamespace adds one user namespace and sets both mappings", () => {
    const uid: ReadonlyArray<Spec.LinuxIdMapping> = [{ containerID: 0, hostID: 100000, size: 65536 }]
    const gid: ReadonlyArray<Spec.LinuxIdMapping> = [{ containerID: 0, hostID: 200000, size: 65536 }]
    const once = pipe(base(), Spec.withUserNamespace(uid, gid))
    const twice = Spec.withUserNamespace(once, gid, uid)
    assert.deepStrictEqual(once.linux?.uidMappings, uid)
    assert.deepStrictEqual(once.linux?.gidMappings, gid)
    assert.deepStrictEqual(
      twice.linux?.namespaces?.filter((ns) => ns.type === "user"),
      [{ type: "user" }],
    )
    assert.deepStrictEqual(twice.linux?.uidMappings, gid)
  })

  it("withAnnotations merges, later wins", () => {
    const spec = pipe(
      base(),
      Spec.withAnnotations({ a: "1", b: "2" }),
      Spec.withAnnotations({ b: "3", c: "4" }),
    )
    assert.deepStrictEqual(spec.annotations, { a: "1", b: "3", c: "4" })
  })

  it("withCapabilities adds and drops in bounding, effective and permitted, names normalized", () => {
    const spec = pipe(
      base(),
      Spec.withCapabilities({ add: ["net_admin", "CAP_SYS_PTRACE"], drop: ["NET_RAW", "cap_mknod"] }),
    )
    const expected = [
      ...Spec.defaultCapabilities.filter((c) => c !== "CAP_NET_RAW" && c !== "CAP_MKNOD"),
      "CAP_NET_ADMIN",
      "CAP_SYS_PTRACE",
    ]
    assert.deepStrictEqual(spec.process?.capabilities, {
      bounding: expected,
      effective: expected,
      permitted: expected,
    })
  })

  it("withCapabilities drop ALL then add keeps only the added; add ALL grants every capability", () => {
    const only = Spec.withCapabilities(base(), { drop: ["ALL"], add: ["CHOWN"] })
    assert.deepStrictEqual(only.process?.capabilities, {
      bounding: ["CAP_CHOWN"],
      effective: ["CAP_CHOWN"],
      permitted: ["CAP_CHOWN"],
    })
    const all = Spec.withCapabilities(base(), { add: ["ALL"] })
    assert.sameMembers([...(all.process?.capabilities?.bounding ?? [])], [...Spec.allCapabilities])
    assert.strictEqual(all.process?.capabilities?.bounding?.length, Spec.allCapabilities.length)
  })

  it("withCapabilities drops from inheritable and ambient too, and adds nothing there", () => {
    const spec: Spec.Spec = {
      ...base(),
      process: {
        ...base().process!,
        capabilities: {
          bounding: ["CAP_KILL"],
          inheritable: ["CAP_KILL", "CAP_CHOWN"],
          ambient: ["CAP_KILL"],
        },
      },
    }
    const changed = Spec.withCapabilities(spec, { drop: ["KILL"], add: ["CAP_SYSLOG"] })
    assert.deepStrictEqual(changed.process?.capabilities, {
      bounding: ["CAP_SYSLOG"],
      effective: ["CAP_SYSLOG"],
      permitted: ["CAP_SYSLOG"],
      inheritable: ["CAP_CHOWN"],
      ambient: [],
    })
  })

  it("withNoNewPrivileges sets the flag", () => {
    assert.isFalse(pipe(base(), Spec.withNoNewPrivileges(false)).process?.noNewPrivileges)
    assert.isTrue(
      Spec.withNoNewPrivileges(pipe(base(), Spec.withNoNewPrivileges(false)), true).process?.noNewPrivileges,
    )
  })

  it("process combinators on a spec without a process start from root in /", () => {
    const spec: Spec.Spec = { ociVersion: "1.0.2" }
    assert.deepStrictEqual(Spec.withArgs(spec, ["x"]).process, {
      user: { uid: 0, gid: 0 },
      cwd: "/",
      args: ["x"],
    })
    assert.deepStrictEqual(Spec.withMemoryLimit(spec, 10).linux, { resources: { memory: { limit: 10 } } })
  })

  it("combinators keep unknown fields of the objects they copy", () => {
    const spec = {
      ...base(),
      vendor: 1,
      process: { ...base().process!, vendorProcess: 2 },
      linux: {
        ...base().linux!,
        intelRdt: { closID: "x" },
        resources: { ...base().linux!.resources, unified: { k: "v" } },
      },
    } as Spec.Spec
    const changed = pipe(
      spec,
      Spec.withArgs(["y"]),
      Spec.withEnv({ A: "1" }),
      Spec.withUser(1, 1),
      Spec.withMemoryLimit(10),
      Spec.withHostNamespace("ipc"),
      Spec.withCapabilities({ drop: ["ALL"] }),
    ) as unknown as typeof spec & {
      vendor: number
      process: { vendorProcess: number }
      linux: { intelRdt: unknown; resources: { unified: unknown } }
    }
    assert.strictEqual(changed.vendor, 1)
    assert.strictEqual(changed.process.vendorProcess, 2)
    assert.deepStrictEqual(changed.linux.intelRdt, { closID: "x" })
    assert.deepStrictEqual(changed.linux.resources.unified, { k: "v" })
  })

  it.prop("every combinator leaves its input unchanged", [validSpec], ([spec]) => {
    const before = JSON.stringify(spec)
    const frozen = deepFreeze(spec)
    pipe(
      frozen,
      Spec.withArgs(["z"]),
      Spec.withEnv(["Q=1", "PATH"]),
      Spec.withCwd("/tmp"),
      Spec.withUser(3, 4, [5]),
      Spec.withTerminal(10, 10),
      Spec.withRootPath("/r", { readonly: true }),
      Spec.withHostname("h"),
      Spec.withMemoryLimit(1),
      Spec.withCpuShares(2),
      Spec.withCpuQuota(3, 4),
      Spec.withPidsLimit(5),
      Spec.withMount({ destination: "/proc" }),
      Spec.withHostNamespace("mount"),
      Spec.withUserNamespace(
        [{ containerID: 0, hostID: 1, size: 1 }],
        [{ containerID: 0, hostID: 1, size: 1 }],
      ),
      Spec.withAnnotations({ k: "v" }),
      Spec.withCapabilities({ add: ["ALL"], drop: ["ALL"] }),
      Spec.withNoNewPrivileges(false),
    )
    Spec.processFrom(frozen, { args: ["x"], env: ["Q=1"], user: { uid: 1, gid: 1 }, terminal: true })
    assert.strictEqual(JSON.stringify(spec), before)
  })
})

// ---------------------------------------------------------------------------
// exec processes
// ---------------------------------------------------------------------------

describe("processFrom and process combinators", () => {
  it("processFrom copies the container's process with new args, terminal off", () => {
    const spec = pipe(
      base(["sleep", "60"]),
      Spec.withEnv({ A: "1" }),
      Spec.withUser(7, 8),
      Spec.withTerminal(80, 24),
    )
    const process = Spec.processFrom(spec, { args: ["sh", "-c", "true"] })
    const { terminal: _t, consoleSize: _c, ...rest } = spec.process!
    assert.deepStrictEqual(process, { ...rest, args: ["sh", "-c", "true"] })
    assert.isUndefined(process.terminal)
    assert.deepStrictEqual(pipe(spec, Spec.processFrom({ args: ["sh", "-c", "true"] })), process)
  })

  it("processFrom applies env, cwd, user and terminal options", () => {
    const spec = pipe(base(), Spec.withEnv({ A: "1" }))
    const process = Spec.processFrom(spec, {
      args: ["id"],
      env: { A: "2", B: "3" },
      cwd: "/work",
      user: { uid: 1000, gid: 1000, additionalGids: [27] },
      terminal: true,
    })
    assert.deepStrictEqual(process.env, [Spec.defaultPathEnv, "A=2", "B=3"])
    assert.strictEqual(process.cwd, "/work")
    assert.deepStrictEqual(process.user, { uid: 1000, gid: 1000, additionalGids: [27] })
    assert.isTrue(process.terminal)
    assert.deepStrictEqual(process.capabilities, spec.process?.capabilities)
  })

  it("processFrom on a spec without a process gives makeProcess's defaults", () => {
    assert.deepStrictEqual(
      Spec.processFrom({ ociVersion: "1.0.2" }, { args: ["ls"] }),
      Spec.makeProcess({ args: ["ls"] }),
    )
    assert.deepStrictEqual(Spec.makeProcess({ args: ["ls"] }), { ...base(["ls"]).process! })
  })

  it("process combinators change a Process", () => {
    const process = pipe(
      Spec.makeProcess({ args: ["a"] }),
      Spec.withProcessArgs(["b"]),
      Spec.withProcessEnv({ X: "1" }),
      Spec.withProcessCwd("/home"),
      Spec.withProcessUser(2, 3, [4]),
      Spec.withProcessTerminal(),
      Spec.withProcessCapabilities({ drop: ["ALL"], add: ["KILL"] }),
      Spec.withProcessNoNewPrivileges(false),
    )
    assert.deepStrictEqual(process, {
      user: { uid: 2, gid: 3, additionalGids: [4] },
      args: ["b"],
      env: [Spec.defaultPathEnv, "X=1"],
      cwd: "/home",
      capabilities: { bounding: ["CAP_KILL"], effective: ["CAP_KILL"], permitted: ["CAP_KILL"] },
      rlimits: [{ type: "RLIMIT_NOFILE", hard: 1024, soft: 1024 }],
      noNewPrivileges: false,
      terminal: true,
    })
    assert.deepStrictEqual(Spec.withProcessTerminal(process, 100, 30).consoleSize, { width: 100, height: 30 })
  })
})

// ---------------------------------------------------------------------------
// validation
// ---------------------------------------------------------------------------

const failsWith = (spec: Spec.Spec, expected: string) =>
  Effect.gen(function* () {
    const message = yield* failureMessage(Spec.validate(spec))
    assert.strictEqual(message, expected)
  })

const linuxOf = (spec: Spec.Spec): Spec.Linux => spec.linux ?? {}

describe("validate", () => {
  it.effect("accepts the default spec and returns it", () =>
    Effect.gen(function* () {
      const spec = base()
      assert.strictEqual(yield* Spec.validate(spec), spec)
    }),
  )

  it.effect.prop("accepts every generated valid spec", [validSpec], ([spec]) =>
    Effect.gen(function* () {
      assert.strictEqual(yield* Spec.validate(spec), spec)
    }),
  )

  it.effect("empty or missing args", () =>
    Effect.gen(function* () {
      yield* failsWith(Spec.withArgs(base(), []), "process.args: must not be empty")
      const { args: _args, ...noArgs } = base().process!
      yield* failsWith({ ...base(), process: noArgs }, "process.args: must not be empty")
    }),
  )

  it.effect("relative cwd", () =>
    failsWith(Spec.withCwd(base(), "srv"), "process.cwd: must be an absolute path"),
  )

  it.effect("missing process or root, relative root path", () =>
    Effect.gen(function* () {
      const { process: _p, ...noProcess } = base()
      yield* failsWith(noProcess, "process: must be present")
      const { root: _r, ...noRoot } = base()
      yield* failsWith(noRoot, "root: must be present")
      yield* failsWith(Spec.withRootPath(base(), "rootfs"), "root.path: must be an absolute path")
    }),
  )

  it.effect("relative mount destination names its index", () =>
    Effect.gen(function* () {
      const spec = base()
      const mounts = spec.mounts!.map((m, i) => (i === 2 ? { ...m, destination: "dev/pts" } : m))
      yield* failsWith({ ...spec, mounts }, "mounts[2].destination: must be an absolute path")
    }),
  )

  it.effect("non-positive limits; -1 means no limit where cgroups allow it", () =>
    Effect.gen(function* () {
      yield* failsWith(Spec.withMemoryLimit(base(), 0), "linux.resources.memory.limit: must be positive")
      yield* failsWith(Spec.withMemoryLimit(base(), -5), "linux.resources.memory.limit: must be positive")
      yield* failsWith(Spec.withCpuShares(base(), 0), "linux.resources.cpu.shares: must be positive")
      yield* failsWith(Spec.withCpuQuota(base(), -2, 100_000), "linux.resources.cpu.quota: must be positive")
      yield* failsWith(Spec.withCpuQuota(base(), 1000, 0), "linux.resources.cpu.period: must be positive")
      yield* failsWith(Spec.withPidsLimit(base(), 0), "linux.resources.pids.limit: must be positive")
      const unlimited = pipe(
        base(),
        Spec.withMemoryLimit(-1),
        Spec.withPidsLimit(-1),
        Spec.withCpuQuota(-1, 100_000),
      )
      assert.strictEqual(yield* Spec.validate(unlimited), unlimited)
    }),
  )

  it.effect("uid and gid must be non-negative 32-bit integers", () =>
    Effect.gen(function* () {
      yield* failsWith(Spec.withUser(base(), -1, 0), "process.user.uid: must be a non-negative integer")
      yield* failsWith(Spec.withUser(base(), 0, 4294967296), "process.user.gid: must be at most 4294967295")
      yield* failsWith(
        Spec.withUser(base(), 0, 0, [1, -3]),
        "process.user.additionalGids[1]: must be a non-negative integer",
      )
      yield* failsWith(Spec.withUser(base(), 0.5, 0), "process.user.uid: must be an integer")
    }),
  )

  it.effect("env entries must be KEY=VALUE", () =>
    Effect.gen(function* () {
      const spec = base()
      yield* failsWith(
        { ...spec, process: { ...spec.process!, env: ["A=1", "=nokey"] } },
        "process.env[1]: must be KEY=VALUE",
      )
    }),
  )

  it.effect("unknown or duplicate namespace kinds", () =>
    Effect.gen(function* () {
      const spec = base()
      const bogus = {
        ...spec,
        linux: { ...spec.linux, namespaces: [{ type: "pid" }, { type: "bogus" }] },
      } as unknown as Spec.Spec
      const message = yield* failureMessage(Spec.validate(bogus))
      assert.isTrue(message.startsWith("linux.namespaces[1].type: must be one of pid, network"), message)
      const dup = {
        ...spec,
        linux: { ...spec.linux, namespaces: [{ type: "pid" }, { type: "uts" }, { type: "pid" }] },
      } as Spec.Spec
      yield* failsWith(dup, "linux.namespaces[2].type: duplicates the pid namespace")
    }),
  )

  it.effect("user namespace and id mappings go together", () =>
    Effect.gen(function* () {
      const spec = base()
      const mapping = [{ containerID: 0, hostID: 1000, size: 1 }]
      const userNs = {
        ...spec,
        linux: { ...linuxOf(spec), namespaces: [...linuxOf(spec).namespaces!, { type: "user" as const }] },
      }
      yield* failsWith(userNs, "linux.uidMappings: must not be empty with a new user namespace")
      yield* failsWith(
        { ...userNs, linux: { ...userNs.linux, uidMappings: mapping } },
        "linux.gidMappings: must not be empty with a new user namespace",
      )
      yield* failsWith(
        { ...spec, linux: { ...linuxOf(spec), gidMappings: mapping } },
        "linux.namespaces: must include a user namespace when uid or gid mappings are set",
      )
      yield* failsWith(
        Spec.withUserNamespace(spec, [{ containerID: 0, hostID: 1000, size: 0 }], mapping),
        "linux.uidMappings[0].size: must be positive",
      )
      const joined = {
        ...spec,
        linux: { ...linuxOf(spec), namespaces: [{ type: "user" as const, path: "/proc/42/ns/user" }] },
      }
      assert.strictEqual(yield* Spec.validate(joined), joined)
      const ok = Spec.withUserNamespace(spec, mapping, mapping)
      assert.strictEqual(yield* Spec.validate(ok), ok)
    }),
  )

  it.effect("a malformed spec fails with the path of the malformed field", () =>
    Effect.gen(function* () {
      const spec = base()
      const bad = { ...spec, process: { ...spec.process, args: 42 } } as unknown as Spec.Spec
      const message = yield* failureMessage(Spec.validate(bad))
      assert.isTrue(message.startsWith("process.args: "), message)
    }),
  )

  type Fault = readonly [name: string, inject: (spec: Spec.Spec) => readonly [Spec.Spec, string]]
  const withLinux = (spec: Spec.Spec, linux: Spec.Linux): Spec.Spec => ({ ...spec, linux })
  const faults: ReadonlyArray<Fault> = [
    ["empty args", (s) => [Spec.withArgs(s, []), "process.args"]],
    ["relative cwd", (s) => [Spec.withCwd(s, "work/dir"), "process.cwd"]],
    ["relative root", (s) => [Spec.withRootPath(s, "rootfs"), "root.path"]],
    [
      "relative mount destination",
      (s) => [
        { ...s, mounts: [...(s.mounts ?? []), { destination: "mnt" }] },
        `mounts[${s.mounts?.length ?? 0}].destination`,
      ],
    ],
    ["zero memory limit", (s) => [Spec.withMemoryLimit(s, 0), "linux.resources.memory.limit"]],
    ["negative memory limit", (s) => [Spec.withMemoryLimit(s, -2), "linux.resources.memory.limit"]],
    ["zero cpu shares", (s) => [Spec.withCpuShares(s, 0), "linux.resources.cpu.shares"]],
    ["negative cpu quota", (s) => [Spec.withCpuQuota(s, -7, 100_000), "linux.resources.cpu.quota"]],
    ["zero pids limit", (s) => [Spec.withPidsLimit(s, 0), "linux.resources.pids.limit"]],
    ["negative uid", (s) => [Spec.withUser(s, -1, 0), "process.user.uid"]],
    ["gid beyond 32 bits", (s) => [Spec.withUser(s, 0, 2 ** 32), "process.user.gid"]],
    [
      "env without =",
      (s) => [
        { ...s, process: { ...s.process!, env: [...(s.process?.env ?? []), "NOVALUE"] } },
        `process.env[${s.process?.env?.length ?? 0}]`,
      ],
    ],
    [
      "unknown namespace kind",
      (s) => {
        const namespaces = linuxOf(s).namespaces ?? []
        return [
          withLinux(s, {
            ...linuxOf(s),
            namespaces: [...namespaces, { type: "bogus" } as unknown as Spec.LinuxNamespace],
          }),
          `linux.namespaces[${namespaces.length}].type`,
        ]
      },
    ],
    [
      "duplicate namespace",
      (s) => {
        const namespaces = linuxOf(s).namespaces ?? []
        return [
          withLinux(s, { ...linuxOf(s), namespaces: [...namespaces, { type: "time" }, { type: "time" }] }),
          `linux.namespaces[${namespaces.length + 1}].type`,
        ]
      },
    ],
    [
      "user namespace without uid mappings",
      (s) => {
        const { uidMappings: _u, gidMappings: _g, ...linux } = linuxOf(s)
        const namespaces = (linux.namespaces ?? []).filter((ns) => ns.type !== "user")
        return [
          withLinux(s, { ...linux, namespaces: [...namespaces, { type: "user" }] }),
          "linux.uidMappings",
        ]
      },
    ],
    [
      "mappings without a user namespace",
      (s) => {
        const mapping = [{ containerID: 0, hostID: 1, size: 1 }]
        return [
          Spec.withHostNamespace(Spec.withUserNamespace(s, mapping, mapping), "user"),
          "linux.namespaces",
        ]
      },
    ],
    [
      "zero-sized gid mapping",
      (s) => [
        Spec.withUserNamespace(
          s,
          [{ containerID: 0, hostID: 1, size: 1 }],
          [{ containerID: 0, hostID: 1, size: 0 }],
        ),
        "linux.gidMappings[0].size",
      ],
    ],
  ]

  it.effect.prop(
    "any valid spec with any injected fault fails naming the fault's path",
    [validSpec, FastCheck.constantFrom(...faults)],
    ([spec, [name, inject]]) =>
      Effect.gen(function* () {
        const [faulty, path] = inject(spec)
        const message = yield* failureMessage(Spec.validate(faulty))
        assert.isTrue(message.startsWith(`${path}: `), `${name}: ${message}`)
      }),
    { fastCheck: { numRuns: 300 } },
  )
})

describe("validateProcess and validateResources", () => {
  it.effect("validateProcess accepts an exec process and names process.* fields", () =>
    Effect.gen(function* () {
      const process = Spec.processFrom(base(), { args: ["ls"] })
      assert.strictEqual(yield* Spec.validateProcess(process), process)
      assert.strictEqual(
        yield* failureMessage(Spec.validateProcess(Spec.withProcessArgs(process, []))),
        "process.args: must not be empty",
      )
      assert.strictEqual(
        yield* failureMessage(Spec.validateProcess(Spec.withProcessCwd(process, "."))),
        "process.cwd: must be an absolute path",
      )
      assert.strictEqual(
        yield* failureMessage(Spec.validateProcess(Spec.withProcessUser(process, 0, -4))),
        "process.user.gid: must be a non-negative integer",
      )
      const malformed = { ...process, env: "A=1" } as unknown as Spec.Process
      assert.isTrue((yield* failureMessage(Spec.validateProcess(malformed))).startsWith("process.env: "))
    }),
  )

  it.effect("validateResources checks limits under resources.*", () =>
    Effect.gen(function* () {
      const ok: Spec.LinuxResources = { memory: { limit: 96 * 1024 * 1024 }, pids: { limit: -1 } }
      assert.strictEqual(yield* Spec.validateResources(ok), ok)
      assert.strictEqual(
        yield* failureMessage(Spec.validateResources({ memory: { limit: -5 } })),
        "resources.memory.limit: must be positive",
      )
      assert.strictEqual(
        yield* failureMessage(Spec.validateResources({ cpu: { shares: 0 } })),
        "resources.cpu.shares: must be positive",
      )
    }),
  )
})

describe("validateDecoded and decoding a decoded value", () => {
  it.effect(
    "validateDecoded checks as validate does and succeeds with an equal copy, which decode takes as is",
    () =>
      Effect.gen(function* () {
        const spec = Spec.withEnv(base(), { A: "1" })
        const valid = yield* Spec.validateDecoded(spec)
        assert.notStrictEqual(valid, spec)
        assert.deepStrictEqual(valid, spec)
        assert.strictEqual(yield* Spec.decode(valid), valid)
        // a value it did not produce is decoded into a copy, and a malformed one still fails
        assert.notStrictEqual(yield* Spec.decode(spec), spec)
        assert.strictEqual(
          yield* failureMessage(Spec.validateDecoded(Spec.withArgs(spec, []))),
          "process.args: must not be empty",
        )
      }),
  )

  it.effect("validateProcessDecoded's copy passes decodeProcess as is, but not decode", () =>
    Effect.gen(function* () {
      const process = Spec.processFrom(base(), { args: ["ls"] })
      const valid = yield* Spec.validateProcessDecoded(process)
      assert.notStrictEqual(valid, process)
      assert.deepStrictEqual(valid, process)
      assert.strictEqual(yield* Spec.decodeProcess(valid), valid)
      assert.strictEqual(yield* failureMessage(Spec.decode(valid)), "ociVersion: is missing")
      assert.strictEqual(
        yield* failureMessage(Spec.validateProcessDecoded(Spec.withProcessCwd(process, "."))),
        "process.cwd: must be an absolute path",
      )
    }),
  )
})

// ---------------------------------------------------------------------------
// the decoders' fast path
// ---------------------------------------------------------------------------

/** Every object and array inside `u` with the path to it (the root first). */
const containers = (u: unknown, path: ReadonlyArray<PropertyKey> = []): Array<ReadonlyArray<PropertyKey>> => {
  if (typeof u !== "object" || u === null) return []
  const out: Array<ReadonlyArray<PropertyKey>> = [path]
  for (const [key, value] of Object.entries(u)) out.push(...containers(value, [...path, key]))
  return out
}

/** A deep copy of `u` with the field `key` of the container at `path` set to `value`, or deleted when `remove`. */
const mutate = (
  u: unknown,
  path: ReadonlyArray<PropertyKey>,
  key: string,
  value: unknown,
  remove: boolean,
) => {
  const copy = structuredClone(u) as Record<PropertyKey, unknown>
  let target = copy
  for (const step of path) target = target[step] as Record<PropertyKey, unknown>
  if (remove) delete target[key]
  else target[key] = value
  return copy
}

const anyValue = FastCheck.oneof(
  FastCheck.jsonValue({ maxDepth: 2 }),
  FastCheck.constant(undefined),
  FastCheck.double(),
  FastCheck.array(FastCheck.oneof(FastCheck.string(), FastCheck.integer())),
)

describe("Spec decoders' fast path", () => {
  const schemas = [Spec.Spec, Spec.Process, Spec.LinuxResources] as const
  const checks = schemas.map((schema) => FastDecode.compile(schema.ast))

  it("covers the spec, process and resources schemas", () => {
    for (const check of checks) assert.isDefined(check)
  })

  it.prop(
    "accepts what the schema accepts and builds the copy the schema's decode builds, unknown fields included",
    [generatedSpec, unknownFields],
    ([spec, extra]) => {
      const input = { ...spec, ...extra }
      const fast = checks[0]!(input)
      assert.notStrictEqual(fast, FastDecode.refused)
      assert.deepStrictEqual(fast, Schema.decodeUnknownSync(Spec.Spec)(input))
      assert.notStrictEqual(fast, input, "a fresh copy")
      if (spec.process !== undefined) {
        assert.deepStrictEqual(checks[1]!(spec.process), Schema.decodeUnknownSync(Spec.Process)(spec.process))
      }
      const resources = spec.linux?.resources
      if (resources !== undefined) {
        assert.deepStrictEqual(
          checks[2]!(resources),
          Schema.decodeUnknownSync(Spec.LinuxResources)(resources),
        )
      }
    },
    { fastCheck: { numRuns: 60 } },
  )

  it.prop(
    "a field set to anything, or removed, anywhere: refused exactly when the schema refuses, else the same copy",
    [validSpec, FastCheck.nat(), FastCheck.string({ maxLength: 12 }), anyValue, FastCheck.boolean()],
    ([spec, at, fallbackKey, value, remove]) => {
      const places = containers(spec)
      const path = places[at % places.length]!
      let target: unknown = spec
      for (const step of path) target = (target as Record<PropertyKey, unknown>)[step]
      const keys = Object.keys(target as object)
      const key = keys.length > 0 && at % 3 !== 0 ? keys[at % keys.length]! : fallbackKey
      const input = mutate(spec, path, key, value, remove)
      const viaSchema = Schema.decodeUnknownEither(Spec.Spec)(input)
      const fast = checks[0]!(input)
      if (Either.isLeft(viaSchema)) assert.strictEqual(fast, FastDecode.refused)
      else assert.deepStrictEqual(fast, viaSchema.right)
    },
    { fastCheck: { numRuns: 400 } },
  )

  it("every field of a default spec set to a value of each kind, or removed: the same verdict and copy as the schema", () => {
    const spec = Spec.withTerminal(
      Spec.withMemoryLimit(
        Spec.withUserNamespace(
          base(),
          [{ containerID: 0, hostID: 1000, size: 65536 }],
          [{ containerID: 0, hostID: 1000, size: 65536 }],
        ),
        1 << 20,
      ),
      80,
      24,
    )
    const kinds: ReadonlyArray<unknown> = [
      undefined,
      null,
      "s",
      "",
      1,
      -1,
      1.5,
      true,
      [],
      ["x"],
      [1],
      {},
      { a: "b" },
    ]
    let refusals = 0
    let checked = 0
    for (const path of containers(spec)) {
      let target: unknown = spec
      for (const step of path) target = (target as Record<PropertyKey, unknown>)[step]
      for (const key of [...Object.keys(target as object), "x-unknown"]) {
        for (const [i, value] of [...kinds, "remove"].entries()) {
          const input = mutate(spec, path, key, value, i === kinds.length)
          const viaSchema = Schema.decodeUnknownEither(Spec.Spec)(input)
          const fast = checks[0]!(input)
          checked++
          if (Either.isLeft(viaSchema)) {
            refusals++
            assert.strictEqual(
              fast,
              FastDecode.refused,
              `${[...path, key].join(".")} = ${JSON.stringify(value)}`,
            )
          } else {
            assert.deepStrictEqual(
              fast,
              viaSchema.right,
              `${[...path, key].join(".")} = ${JSON.stringify(value)}`,
            )
          }
        }
      }
    }
    assert.isAbove(refusals, checked / 3, "most changes are refused")
  })

  it.effect("a spec the fast path refuses fails with the schema's message", () =>
    Effect.gen(function* () {
      const spec = base()
      const bad = { ...spec, process: { ...spec.process!, args: ["/bin/sh", 7] } }
      assert.strictEqual(checks[0]!(bad), FastDecode.refused)
      assert.strictEqual(
        yield* failureMessage(Spec.decode(bad)),
        "process.args[1]: Expected string, actual 7",
      )
    }),
  )
})
