/**
 * A minimal container root filesystem made from the host's static busybox
 * (Debian package `busybox-static`): `/bin/busybox` and a link per applet.
 * Enough for containers created Docker-style, with `root.path` pointing at a
 * directory and no image or snapshotter.
 *
 * @since 0.1.0
 */
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { System } from "../errors/ContainerdError.js"

/** Where the static busybox is expected. */
export const busyboxPath = "/bin/busybox"

const applets = (binary: string): ReadonlyArray<string> => {
  const out = ChildProcess.spawnSync(binary, ["--list"], { encoding: "utf8" })
  if (out.status !== 0) throw new Error(`${binary} --list failed: ${out.stderr}`)
  return out.stdout.split("\n").filter((name) => /^[A-Za-z0-9_.[-]+$/.test(name))
}

/** Writes a busybox rootfs into `dir` (created if needed) and returns `dir`. */
export const writeRootfs = (dir: string, binary: string = busyboxPath): Effect.Effect<string, System> =>
  Effect.try({
    try: () => {
      if (!Fs.existsSync(binary)) {
        throw new Error(`${binary} not found: install the Debian package busybox-static`)
      }
      // traversable by any uid: a user namespace maps container root to an unprivileged host uid
      Fs.mkdirSync(dir, { recursive: true })
      Fs.chmodSync(dir, 0o755)
      for (const sub of ["bin", "dev", "proc", "sys", "tmp", "etc", "root", "run"]) {
        Fs.mkdirSync(Path.join(dir, sub), { recursive: true })
      }
      Fs.chmodSync(Path.join(dir, "tmp"), 0o1777)
      Fs.copyFileSync(binary, Path.join(dir, "bin", "busybox"))
      Fs.chmodSync(Path.join(dir, "bin", "busybox"), 0o755)
      for (const applet of applets(binary)) {
        const link = Path.join(dir, "bin", applet)
        if (applet !== "busybox" && !Fs.existsSync(link)) Fs.symlinkSync("busybox", link)
      }
      Fs.writeFileSync(
        Path.join(dir, "etc", "passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
      )
      Fs.writeFileSync(Path.join(dir, "etc", "group"), "root:x:0:\nnogroup:x:65534:\n")
      return dir
    },
    catch: (cause) =>
      new System({ message: `cannot build a busybox rootfs in ${dir}: ${String(cause)}`, cause }),
  })

/** A busybox rootfs in a fresh temp dir, removed when the scope closes. */
export const rootfs = (parentDir: string = Os.tmpdir()): Effect.Effect<string, System, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.flatMap(
      Effect.sync(() => Fs.mkdtempSync(Path.join(parentDir, "busybox-rootfs-"))),
      (dir) => writeRootfs(dir),
    ),
    (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true })),
  )
