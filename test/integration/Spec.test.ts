/**
 * The default spec and each combinator, observed from inside a real
 * container: what `env`, `pwd`, `id`, `hostname`, the cgroup, the root
 * filesystem, a bind mount and the network interfaces say.
 */
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { assert, describe, layer } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import { pipe } from "effect/Function"
import * as Spec from "../../src/domain/Spec.js"
import { Libcontainerd } from "../../src/services/Libcontainerd.js"
import { capture, clientLayer, exitOf, tempStateDir } from "../support/client.js"
import { busyboxSpec, freshNamespace } from "../support/daemon.js"

const namespace = freshNamespace("spec")
const stateDir = tempStateDir()
let counter = 0

/** Runs a container with `spec` and returns its exit code and stdout/stderr. */
const run = (build: (id: string) => Spec.Spec) =>
  Effect.gen(function* () {
    const client = yield* Libcontainerd
    const id = `s${++counter}`
    const { captured, attach } = yield* capture
    yield* client.create(id, build(id))
    yield* client.start(id, { attachStdio: attach })
    const exit = yield* exitOf(id)
    const stdout = yield* Deferred.await(captured.stdout)
    const stderr = yield* Deferred.await(captured.stderr)
    yield* client.deleteTask(id)
    yield* client.delete(id)
    return { code: exit.exitCode, stdout, stderr }
  })

const sh = (script: string) => (id: string) => busyboxSpec(id, namespace, ["sh", "-c", script])

describe("Spec in real containers", () => {
  layer(clientLayer(namespace, stateDir), { excludeTestServices: true })((it) => {
    it.effect("the default spec runs a busybox container that exits 0", () =>
      Effect.gen(function* () {
        const result = yield* run((id) => busyboxSpec(id, namespace, ["true"]))
        assert.strictEqual(result.code, 0)
      }),
    )

    it.effect("withEnv: env prints the merged variables", () =>
      Effect.gen(function* () {
        const result = yield* run((id) =>
          pipe(sh("env")(id), Spec.withEnv({ FOO: "bar", PATH: "/bin" }), Spec.withEnv(["FOO=baz"])),
        )
        const lines = result.stdout.trim().split("\n")
        assert.include(lines, "FOO=baz")
        assert.include(lines, "PATH=/bin")
        assert.notInclude(lines, "FOO=bar")
      }),
    )

    it.effect("withCwd: pwd prints the working directory", () =>
      Effect.gen(function* () {
        const result = yield* run((id) => Spec.withCwd(sh("pwd")(id), "/tmp"))
        assert.strictEqual(result.stdout.trim(), "/tmp")
      }),
    )

    it.effect("withUser: id prints uid, gid and the extra groups", () =>
      Effect.gen(function* () {
        const result = yield* run((id) => Spec.withUser(sh("id")(id), 1234, 5678, [42]))
        assert.match(result.stdout, /uid=1234/)
        assert.match(result.stdout, /gid=5678/)
        assert.match(result.stdout, /groups=.*42/)
      }),
    )

    it.effect("withHostname: hostname prints it", () =>
      Effect.gen(function* () {
        const result = yield* run((id) => Spec.withHostname(sh("hostname")(id), "box-one"))
        assert.strictEqual(result.stdout.trim(), "box-one")
      }),
    )

    it.effect("withMemoryLimit, withCpuShares, withPidsLimit: the container's cgroup shows them", () =>
      Effect.gen(function* () {
        const result = yield* run((id) =>
          pipe(
            sh(
              "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/pids/pids.max",
            )(id),
            Spec.withMemoryLimit(48 * 1024 * 1024),
            Spec.withCpuShares(512),
            Spec.withPidsLimit(77),
          ),
        )
        assert.deepStrictEqual(result.stdout.trim().split("\n"), [String(48 * 1024 * 1024), "512", "77"])
      }),
    )

    it.effect("withCpuQuota: the CFS quota and period are set", () =>
      Effect.gen(function* () {
        const result = yield* run((id) =>
          Spec.withCpuQuota(
            sh("cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us")(id),
            50000,
            100000,
          ),
        )
        assert.deepStrictEqual(result.stdout.trim().split("\n"), ["50000", "100000"])
      }),
    )

    it.effect("withRootPath readonly: a write to the root filesystem fails", () =>
      Effect.gen(function* () {
        const result = yield* run((id) => {
          const base = sh("touch /newfile && echo wrote || echo refused")(id)
          return Spec.withRootPath(base, base.root?.path ?? "", { readonly: true })
        })
        assert.strictEqual(result.stdout.trim(), "refused")
        assert.match(result.stderr, /Read-only file system/)
      }),
    )

    it.effect("withMount: a bind mount is visible", () =>
      Effect.gen(function* () {
        const host = Fs.mkdtempSync(Path.join(Os.tmpdir(), "bind-"))
        Fs.writeFileSync(Path.join(host, "greeting"), "from the host\n")
        const result = yield* run((id) =>
          Spec.withMount(sh("cat /data/greeting")(id), {
            destination: "/data",
            type: "bind",
            source: host,
            options: ["rbind", "ro"],
          }),
        )
        Fs.rmSync(host, { recursive: true, force: true })
        assert.strictEqual(result.stdout, "from the host\n")
      }),
    )

    it.effect("withHostNamespace network: the host's interfaces are visible", () =>
      Effect.gen(function* () {
        const hostInterfaces = Object.keys(Os.networkInterfaces()).sort()
        const isolated = yield* run(sh("ls /sys/class/net"))
        assert.deepStrictEqual(isolated.stdout.trim().split(/\s+/), ["lo"], "own namespace: only lo")
        const shared = yield* run((id) => Spec.withHostNamespace(sh("ls /sys/class/net")(id), "network"))
        const inside = shared.stdout.trim().split(/\s+/).sort()
        for (const name of hostInterfaces) assert.include(inside, name)
      }),
    )

    it.effect("withCapabilities and withNoNewPrivileges reach the process status", () =>
      Effect.gen(function* () {
        const result = yield* run((id) =>
          pipe(
            sh("grep -E '^(CapEff|NoNewPrivs)' /proc/self/status")(id),
            Spec.withCapabilities({ drop: ["ALL"], add: ["CAP_CHOWN"] }),
            Spec.withNoNewPrivileges(true),
          ),
        )
        // CAP_CHOWN is bit 0
        assert.match(result.stdout, /CapEff:\s+0000000000000001/)
        assert.match(result.stdout, /NoNewPrivs:\s+1/)
      }),
    )

    it.effect("withUserNamespace: root in the container is the mapped host user", () =>
      Effect.gen(function* () {
        const result = yield* run((id) =>
          Spec.withUserNamespace(
            sh("cat /proc/self/uid_map")(id),
            [{ containerID: 0, hostID: 100000, size: 65536 }],
            [{ containerID: 0, hostID: 100000, size: 65536 }],
          ),
        )
        assert.match(result.stdout.trim(), /^0\s+100000\s+65536$/)
      }),
    )
  })
})
