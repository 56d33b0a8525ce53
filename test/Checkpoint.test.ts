import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Tar from "tar"
import { checkArchive, entryProblem, extractArchive } from "../src/internal/checkpoint.js"

/** One entry of a hand-made tar: whatever path, type and link the test wants, unfiltered. */
interface Entry {
  readonly path: string
  readonly type: "File" | "Directory" | "SymbolicLink" | "Link" | "CharacterDevice"
  readonly body?: string
  readonly linkpath?: string
}

/** A tar archive written header by header, so hostile paths reach the file exactly as given. */
const tarOf = (entries: ReadonlyArray<Entry>): Buffer => {
  const blocks: Array<Buffer> = []
  for (const entry of entries) {
    const body = Buffer.from(entry.body ?? "")
    const header = new Tar.Header({
      path: entry.path,
      type: entry.type,
      mode: entry.type === "Directory" ? 0o755 : 0o644,
      uid: 0,
      gid: 0,
      size: entry.type === "File" ? body.byteLength : 0,
      mtime: new Date(0),
      ...(entry.linkpath === undefined ? {} : { linkpath: entry.linkpath }),
    })
    const block = Buffer.alloc(512)
    header.encode(block, 0)
    blocks.push(block)
    if (entry.type === "File" && body.byteLength > 0) {
      blocks.push(body, Buffer.alloc((512 - (body.byteLength % 512)) % 512))
    }
  }
  blocks.push(Buffer.alloc(1024))
  return Buffer.concat(blocks)
}

/** A temp dir with the tar in `archive.tar`, an `outer/` dir a hostile entry would reach, and `outer/out` to extract into. */
const sandbox = (entries: ReadonlyArray<Entry>) => {
  const root = Fs.mkdtempSync(Path.join(Os.tmpdir(), "checkpoint-unit-"))
  const file = Path.join(root, "archive.tar")
  Fs.writeFileSync(file, tarOf(entries))
  const outer = Path.join(root, "outer")
  const out = Path.join(outer, "out")
  Fs.mkdirSync(out, { recursive: true })
  return { root, file, outer, out, dispose: () => Fs.rmSync(root, { recursive: true, force: true }) }
}

/** Every path under `dir`, relative, sorted. */
const tree = (dir: string): Array<string> => {
  if (!Fs.existsSync(dir)) return []
  return (Fs.readdirSync(dir, { recursive: true }) as Array<string>).sort()
}

const none = new Set<string>()

describe("entryProblem", () => {
  const table: ReadonlyArray<
    [string, Parameters<typeof entryProblem>[0], ReadonlySet<string>, string | undefined]
  > = [
    ["a plain file", { path: "pages-1.img", type: "File" }, none, undefined],
    ["a file under ./", { path: "./sub/core-1.img", type: "File" }, none, undefined],
    ["a directory", { path: "sub/", type: "Directory" }, none, undefined],
    ["the root entry .", { path: "./", type: "Directory" }, none, undefined],
    ["an absolute path", { path: "/etc/x", type: "File" }, none, "is an absolute path"],
    ["a leading ..", { path: "../x", type: "File" }, none, "contains '..'"],
    ["a .. in the middle", { path: "a/../../x", type: "File" }, none, "contains '..'"],
    ["a NUL", { path: "a\0b", type: "File" }, none, "contains NUL"],
    [
      "a file through a symlink",
      { path: "link/etc/pwned", type: "File" },
      new Set(["link"]),
      "goes through the symlink link",
    ],
    [
      "a directory through a nested symlink",
      { path: "a/b/c/", type: "Directory" },
      new Set(["a/b"]),
      "goes through the symlink a/b",
    ],
    [
      "a symlink to /",
      { path: "link", type: "SymbolicLink", linkpath: "/" },
      none,
      "links to the absolute path /",
    ],
    [
      "a symlink climbing out",
      { path: "sub/link", type: "SymbolicLink", linkpath: "../../x" },
      none,
      "links outside the directory (../../x)",
    ],
    ["a symlink up to the root", { path: "sub/link", type: "SymbolicLink", linkpath: ".." }, none, undefined],
    [
      "a symlink to a sibling",
      { path: "sub/link", type: "SymbolicLink", linkpath: "../a/b" },
      none,
      undefined,
    ],
    [
      "a symlink escaping through another symlink",
      { path: "d/u", type: "SymbolicLink", linkpath: "s/../.." },
      new Set(["d/s"]),
      "links through the symlink d/s (s/../..)",
    ],
    [
      "a symlink without a target",
      { path: "l", type: "SymbolicLink", linkpath: "" },
      none,
      "is a link without a target",
    ],
    [
      "a hardlink climbing out",
      { path: "sub/hard", type: "Link", linkpath: "../outside" },
      none,
      "links outside the directory (../outside)",
    ],
    [
      "a hardlink to an absolute path",
      { path: "hard", type: "Link", linkpath: "/etc/passwd" },
      none,
      "links to the absolute path /etc/passwd",
    ],
    // a hardlink's target is relative to the archive's root, not to the entry's dir
    ["a hardlink inside", { path: "sub/hard", type: "Link", linkpath: "sub/file" }, none, undefined],
    [
      "a hardlink through a symlink",
      { path: "hard", type: "Link", linkpath: "d/u/etc/passwd" },
      new Set(["d/u"]),
      "links through the symlink d/u (d/u/etc/passwd)",
    ],
    [
      "a device",
      { path: "dev/null", type: "CharacterDevice" },
      none,
      "has the unsupported type CharacterDevice",
    ],
  ]
  for (const [name, entry, symlinks, expected] of table) {
    it(`${name}: ${expected ?? "ok"}`, () => {
      assert.strictEqual(entryProblem(entry, symlinks), expected)
    })
  }
})

describe("extractArchive", () => {
  it.live("a good archive is extracted with its files, dirs and inside links", () =>
    Effect.gen(function* () {
      const box = sandbox([
        { path: "./", type: "Directory" },
        { path: "./inventory.img", type: "File", body: "inventory" },
        { path: "./sub/", type: "Directory" },
        { path: "./sub/pages-1.img", type: "File", body: "x".repeat(1500) },
        { path: "./sub/up", type: "SymbolicLink", linkpath: "../inventory.img" },
        { path: "./hard", type: "Link", linkpath: "sub/pages-1.img" },
      ])
      try {
        yield* extractArchive(box.file, box.out)
        assert.deepStrictEqual(tree(box.out), ["hard", "inventory.img", "sub", "sub/pages-1.img", "sub/up"])
        assert.strictEqual(Fs.readFileSync(Path.join(box.out, "inventory.img"), "utf8"), "inventory")
        assert.strictEqual(Fs.readFileSync(Path.join(box.out, "sub/pages-1.img"), "utf8"), "x".repeat(1500))
        assert.strictEqual(Fs.readlinkSync(Path.join(box.out, "sub/up")), "../inventory.img")
        assert.strictEqual(
          Fs.statSync(Path.join(box.out, "hard")).ino,
          Fs.statSync(Path.join(box.out, "sub/pages-1.img")).ino,
        )
        assert.deepStrictEqual(tree(box.outer), ["out", ...tree(box.out).map((p) => `out/${p}`)])
      } finally {
        box.dispose()
      }
    }),
  )

  it.live("a directory made with tar.create round-trips", () =>
    Effect.gen(function* () {
      const src = Fs.mkdtempSync(Path.join(Os.tmpdir(), "checkpoint-src-"))
      const box = sandbox([])
      try {
        Fs.mkdirSync(Path.join(src, "a/b"), { recursive: true })
        Fs.writeFileSync(Path.join(src, "a/b/c.img"), "deep")
        Fs.writeFileSync(Path.join(src, "top.img"), "top")
        yield* Effect.promise(() => Tar.create({ cwd: src, file: box.file, portable: true }, ["."]))
        yield* extractArchive(box.file, box.out)
        assert.deepStrictEqual(tree(box.out), ["a", "a/b", "a/b/c.img", "top.img"])
        assert.strictEqual(Fs.readFileSync(Path.join(box.out, "a/b/c.img"), "utf8"), "deep")
      } finally {
        box.dispose()
        Fs.rmSync(src, { recursive: true, force: true })
      }
    }),
  )

  const unique = `${process.pid}-${Math.random().toString(36).slice(2, 8)}`
  const hostile: ReadonlyArray<
    [string, ReadonlyArray<Entry>, (box: ReturnType<typeof sandbox>) => ReadonlyArray<string>]
  > = [
    [
      "an entry ../x",
      [
        { path: "ok.img", type: "File", body: "fine" },
        { path: "../x", type: "File", body: "escaped" },
      ],
      (box) => [Path.join(box.outer, "x")],
    ],
    [
      "an absolute entry /etc/x",
      [
        { path: "ok.img", type: "File", body: "fine" },
        { path: `/etc/x-${unique}`, type: "File", body: "escaped" },
      ],
      () => [`/etc/x-${unique}`],
    ],
    [
      "a symlink link -> / and a file link/etc/pwned",
      [
        { path: "ok.img", type: "File", body: "fine" },
        { path: "link", type: "SymbolicLink", linkpath: "/" },
        { path: `link/etc/pwned-${unique}`, type: "File", body: "escaped" },
      ],
      () => [`/etc/pwned-${unique}`],
    ],
    [
      "a symlink link -> .. and a file through it",
      [
        { path: "ok.img", type: "File", body: "fine" },
        { path: "sub/", type: "Directory" },
        { path: "sub/link", type: "SymbolicLink", linkpath: ".." },
        { path: "sub/link/x", type: "File", body: "through" },
      ],
      (box) => [Path.join(box.out, "x")],
    ],
    [
      "a symlink chain climbing out, then a hardlink and a file through it",
      [
        { path: "ok.img", type: "File", body: "fine" },
        { path: "d/", type: "Directory" },
        { path: "d/s", type: "SymbolicLink", linkpath: ".." },
        { path: "d/u", type: "SymbolicLink", linkpath: "s/../.." },
        { path: "h", type: "Link", linkpath: "d/u/secret" },
        { path: "h", type: "File", body: "overwritten" },
      ],
      (box) => [Path.join(box.outer, "d"), Path.join(box.out, "h")],
    ],
    [
      "a hardlink to a file outside",
      [
        { path: "ok.img", type: "File", body: "fine" },
        { path: "hard", type: "Link", linkpath: "../secret" },
      ],
      (box) => [Path.join(box.out, "hard")],
    ],
  ]
  for (const [name, entries, wouldWrite] of hostile) {
    it.live(`${name}: InvalidParameter, nothing written inside or outside`, () =>
      Effect.gen(function* () {
        const box = sandbox(entries)
        // a file outside the target that a link escape would reach
        Fs.writeFileSync(Path.join(box.outer, "secret"), "secret")
        try {
          const targets = wouldWrite(box)
          for (const target of targets) assert.isFalse(Fs.existsSync(target), `${target} absent before`)
          const error = yield* Effect.flip(extractArchive(box.file, box.out))
          assert.strictEqual(error._tag, "InvalidParameter")
          assert.include(error.message, "refusing to extract")
          for (const target of targets) assert.isFalse(Fs.existsSync(target), `${target} not written`)
          assert.deepStrictEqual(tree(box.out), [], "nothing inside")
          assert.deepStrictEqual(tree(box.outer), ["out", "secret"], "nothing beside it")
          assert.strictEqual(Fs.readFileSync(Path.join(box.outer, "secret"), "utf8"), "secret")
        } finally {
          box.dispose()
        }
      }),
    )
  }

  it.live("a symlink already in the target dir counts: a file through it is refused", () =>
    Effect.gen(function* () {
      const box = sandbox([{ path: "pre/x", type: "File", body: "through" }])
      try {
        Fs.symlinkSync(box.outer, Path.join(box.out, "pre"))
        const error = yield* Effect.flip(extractArchive(box.file, box.out))
        assert.strictEqual(error._tag, "InvalidParameter")
        assert.include(error.message, "goes through the symlink pre")
        assert.isFalse(Fs.existsSync(Path.join(box.outer, "x")))
      } finally {
        box.dispose()
      }
    }),
  )

  it.live("checkArchive alone writes nothing, even for a good archive", () =>
    Effect.gen(function* () {
      const box = sandbox([{ path: "a.img", type: "File", body: "a" }])
      try {
        yield* checkArchive(box.file, box.out)
        assert.deepStrictEqual(tree(box.out), [])
      } finally {
        box.dispose()
      }
    }),
  )

  it.live("a file that is not a tar fails with a typed error and writes nothing", () =>
    Effect.gen(function* () {
      const box = sandbox([])
      try {
        Fs.writeFileSync(box.file, "this is not a tar archive at all".repeat(40))
        const error = yield* Effect.flip(extractArchive(box.file, box.out))
        assert.oneOf(error._tag, ["System", "InvalidParameter"])
        assert.deepStrictEqual(tree(box.out), [])
      } finally {
        box.dispose()
      }
    }),
  )
})
