#!/usr/bin/env node
// Regenerates generated/ (TypeScript: messages + @grpc/grpc-js clients) from
// the project's own schema in proto/, using buf and the ts-proto plugin from
// node_modules. Options live in buf.gen.yaml.
//
//   node scripts/generate.mjs           rewrite generated/ (stale files are removed)
//   node scripts/generate.mjs --check   regenerate into a temp dir and exit 1 if
//                                       generated/ differs from it
import { spawnSync } from "node:child_process"
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import { fileURLToPath } from "node:url"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const outDirName = "generated" // must match `out:` in buf.gen.yaml
const target = path.join(root, outDirName)
const bin = (name) =>
  path.join(root, "node_modules", ".bin", process.platform === "win32" ? `${name}.cmd` : name)

const args = process.argv.slice(2)
const unknown = args.filter((a) => a !== "--check")
if (unknown.length > 0) {
  console.error(
    `generate: unknown argument(s): ${unknown.join(" ")}\nusage: node scripts/generate.mjs [--check]`,
  )
  process.exit(2)
}
const check = args.includes("--check")

for (const tool of ["buf", "protoc-gen-ts_proto"]) {
  if (!fs.existsSync(bin(tool))) {
    console.error(`generate: ${path.relative(root, bin(tool))} is missing; run npm ci first`)
    process.exit(2)
  }
}

/** Relative paths (with "/") of every file under dir, sorted; [] if dir is absent. */
const listFiles = (dir) => {
  if (!fs.existsSync(dir)) return []
  return fs
    .readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) =>
      path
        .relative(dir, path.join(e.parentPath ?? e.path, e.name))
        .split(path.sep)
        .join("/"),
    )
    .sort()
}

/** Runs buf into tmp and then writes or compares; returns the exit code. */
const run = (tmp) => {
  // buf resolves `out: generated` against -o, so the fresh tree lands in tmp/generated.
  const result = spawnSync(bin("buf"), ["generate", "--template", "buf.gen.yaml", "-o", tmp], {
    cwd: root,
    stdio: "inherit",
  })
  if (result.error) throw result.error
  if (result.status !== 0) {
    console.error(`generate: buf generate failed (exit ${result.status ?? result.signal})`)
    return 1
  }
  const fresh = path.join(tmp, outDirName)
  const freshFiles = listFiles(fresh)
  if (freshFiles.length === 0) {
    console.error("generate: buf produced no files")
    return 1
  }

  if (check) {
    const current = new Set(listFiles(target))
    const differing = []
    for (const file of freshFiles) {
      if (!current.has(file)) differing.push({ file, what: "missing" })
      else if (!fs.readFileSync(path.join(fresh, file)).equals(fs.readFileSync(path.join(target, file))))
        differing.push({ file, what: "changed" })
      current.delete(file)
    }
    for (const file of current) differing.push({ file, what: "extra" })
    if (differing.length > 0) {
      differing.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0))
      console.error(
        `generate --check: ${outDirName}/ is stale (${differing.length} file(s) differ); run \`npm run generate\`:`,
      )
      for (const { file, what } of differing) console.error(`  ${what.padEnd(8)} ${outDirName}/${file}`)
      return 1
    }
    console.log(`generate --check: ${outDirName}/ is up to date (${freshFiles.length} files)`)
    return 0
  }

  // Replace the whole directory so files of removed protos disappear.
  fs.rmSync(target, { recursive: true, force: true })
  fs.cpSync(fresh, target, { recursive: true })
  console.log(`generate: wrote ${freshFiles.length} files to ${outDirName}/`)
  return 0
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "effect-containerd-generate-"))
try {
  process.exitCode = run(tmp)
} finally {
  fs.rmSync(tmp, { recursive: true, force: true })
}
