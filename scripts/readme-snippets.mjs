#!/usr/bin/env node
// Extracts the README's ```ts blocks into examples/.readme/ so that
// `npm run typecheck` compiles them: the README's snippets cannot rot.
import * as Fs from "node:fs"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"

const root = Path.resolve(Path.dirname(fileURLToPath(import.meta.url)), "..")
const out = Path.join(root, "examples", ".readme")
const readme = Fs.readFileSync(Path.join(root, "README.md"), "utf8")
const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1])
Fs.rmSync(out, { recursive: true, force: true })
Fs.mkdirSync(out, { recursive: true })
blocks.forEach((code, i) => {
  Fs.writeFileSync(
    Path.join(out, `snippet-${String(i + 1).padStart(2, "0")}.ts`),
    `// from README.md, block ${i + 1}\n${code}`,
  )
})
console.error(`readme-snippets: ${blocks.length} snippets written to ${Path.relative(root, out)}`)
