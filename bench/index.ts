/**
 * `npm run bench` runs every group; `npm run bench -- <group> [<group>…]` runs
 * the named ones. Prints a table and writes bench/results.json.
 */
import * as Fs from "node:fs"
import * as Path from "node:path"
import { type Group, print, type Result, withoutSamples } from "./harness.js"
import { contract } from "./contract.js"
import { events } from "./events.js"
import { stdio } from "./stdio.js"
import { lifecycle } from "./lifecycle.js"
import { wire } from "./wire.js"

const groups: ReadonlyArray<Group> = [wire, events, lifecycle, stdio, contract]

const main = async () => {
  const wanted = process.argv.slice(2).filter((a) => !a.startsWith("-"))
  const unknown = wanted.filter((w) => !groups.some((g) => g.name === w))
  if (unknown.length > 0) {
    console.error(`unknown group(s): ${unknown.join(", ")}; groups: ${groups.map((g) => g.name).join(", ")}`)
    process.exit(2)
  }
  const selected = wanted.length === 0 ? groups : groups.filter((g) => wanted.includes(g.name))
  const rows: Result[] = []
  for (const group of selected) {
    console.error(`running ${group.name}: ${group.description}`)
    rows.push(...(await group.run()))
  }
  print(rows)
  // run from the package root (npm run bench); the compiled groups live in .bench-build/
  const out = Path.join(process.cwd(), "bench", "results.json")
  Fs.writeFileSync(out, `${JSON.stringify(rows.map(withoutSamples), null, 2)}\n`)
  console.error(`wrote ${out}`)
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
