/**
 * What an in-memory process does: the scripts a test registers (first match
 * wins), then a few built-in commands, then "exit 0 at once".
 *
 * @internal
 */
import * as Duration from "effect/Duration"
import type { Match, ProcessInfo, Script, ScriptSource } from "../../layers/ContainerdMemory.js"

/** A registered script. */
export interface Entry {
  readonly match: Match
  readonly script: ScriptSource
}

const matchesArgs = (expected: Match["args"], args: ReadonlyArray<string>): boolean => {
  if (expected === undefined) return true
  if (typeof expected === "function") return expected(args)
  return expected.length === args.length && expected.every((a, i) => a === args[i])
}

const matches = (match: Match, info: ProcessInfo): boolean =>
  (match.namespace === undefined || match.namespace === info.namespace) &&
  (match.containerId === undefined || match.containerId === info.containerId) &&
  (match.execId === undefined || match.execId === info.execId) &&
  matchesArgs(match.args, info.args)

const basename = (path: string): string => path.slice(path.lastIndexOf("/") + 1)

const seconds = (text: string): Duration.Duration | undefined => {
  if (text === "inf" || text === "infinity") return Duration.infinity
  const n = Number(text.endsWith("s") ? text.slice(0, -1) : text)
  return Number.isFinite(n) && n >= 0 ? Duration.millis(Math.round(n * 1000)) : undefined
}

/** The built-in commands: `cat`, `true`, `false`, `sleep N`, `echo …`, `sh -c "exit N"` (and `sh -c` of those). */
export const builtin = (args: ReadonlyArray<string>): Script | undefined => {
  const [command, ...rest] = args
  if (command === undefined) return undefined
  switch (basename(command)) {
    case "cat":
      return { echoStdin: true }
    case "true":
      return { exitCode: 0 }
    case "false":
      return { exitCode: 1 }
    case "sleep": {
      const duration = rest[0] === undefined ? undefined : seconds(rest[0])
      return duration === undefined
        ? { exitCode: 1, stderr: `sleep: invalid number '${rest[0] ?? ""}'\n` }
        : { duration }
    }
    case "echo": {
      const noNewline = rest[0] === "-n"
      const words = noNewline ? rest.slice(1) : rest
      return { stdout: `${words.join(" ")}${noNewline ? "" : "\n"}` }
    }
    case "sh":
    case "ash":
    case "bash": {
      if (rest[0] !== "-c" || rest[1] === undefined) return undefined
      const line = rest[1].trim()
      const exit = /^exit(?:\s+(\d+))?$/.exec(line)
      if (exit !== null) return { exitCode: Number(exit[1] ?? "0") % 256 }
      if (/["'`$|&;<>()\\]/.test(line)) return undefined
      return builtin(line.split(/\s+/))
    }
    default:
      return undefined
  }
}

/** The script of a process: the first registered match, else a built-in, else exit 0 at once. */
export const resolve = (entries: ReadonlyArray<Entry>, info: ProcessInfo): Script => {
  for (const entry of entries) {
    if (matches(entry.match, info)) {
      return typeof entry.script === "function" ? entry.script(info) : entry.script
    }
  }
  return builtin(info.args) ?? {}
}
