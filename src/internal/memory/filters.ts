/**
 * containerd's filter syntax, as its Events, Containers and Tasks services
 * accept it: separate filters are ORed, the comma-separated selectors of one
 * filter are ANDed. A selector is a dotted field path, optionally followed by
 * an operator (`==`, `!=`, `~=`) and a value. Field names and values may be
 * double-quoted; `|…|` and `/…/` quote only the regex of `~=`, so an unquoted
 * value cannot start with `/` (`topic==/tasks/exit` is a parse error).
 *
 * @internal
 */
import * as Either from "effect/Either"

/** Looks a field path up in the object being filtered; `undefined` when the object has no such field. */
export type Adaptor = (fieldpath: ReadonlyArray<string>) => string | undefined

/** A parsed filter. */
export type Filter = (adaptor: Adaptor) => boolean

interface Selector {
  readonly fieldpath: ReadonlyArray<string>
  readonly test: (value: string | undefined) => boolean
}

class ParseError {
  constructor(
    readonly position: number,
    readonly problem: string,
  ) {}
}

const isFieldChar = (c: string): boolean => /[A-Za-z0-9_]/.test(c)
const isSpace = (c: string): boolean => c === " " || c === "\t" || c === "\n" || c === "\r"

class Parser {
  private pos = 0

  constructor(private readonly input: string) {}

  private peek(): string | undefined {
    return this.input[this.pos]
  }

  private skipSpace(): void {
    while (this.pos < this.input.length && isSpace(this.input[this.pos]!)) this.pos++
  }

  private fail(problem: string): never {
    throw new ParseError(this.pos, problem)
  }

  /** A string between `quote`s; a backslash escapes the next character (`\n`, `\t` and friends for `"`). */
  private quoted(quote: string): string {
    const start = this.pos
    this.pos++
    let out = ""
    while (this.pos < this.input.length) {
      const c = this.input[this.pos]!
      if (c === quote) {
        this.pos++
        return out
      }
      if (c === "\\" && this.pos + 1 < this.input.length) {
        const next = this.input[this.pos + 1]!
        this.pos += 2
        if (quote !== '"') {
          out += next === quote ? next : `\\${next}`
          continue
        }
        out += next === "n" ? "\n" : next === "t" ? "\t" : next === "r" ? "\r" : next
        continue
      }
      out += c
      this.pos++
    }
    this.pos = start
    return this.fail("unterminated quoted string")
  }

  private field(): string {
    this.skipSpace()
    if (this.peek() === '"') return this.quoted('"')
    const start = this.pos
    while (this.pos < this.input.length && isFieldChar(this.input[this.pos]!)) this.pos++
    if (this.pos === start) this.fail("expected field or quoted")
    return this.input.slice(start, this.pos)
  }

  private value(regex: boolean): string {
    this.skipSpace()
    const c = this.peek()
    if (c === '"') return this.quoted('"')
    if (c === "|" || c === "/") {
      if (!regex) this.fail("invalid quote encountered")
      return this.quoted(c)
    }
    const start = this.pos
    while (this.pos < this.input.length) {
      const ch = this.input[this.pos]!
      if (ch === "," || isSpace(ch)) break
      this.pos++
    }
    if (this.pos === start) this.fail("expected value or quoted")
    return this.input.slice(start, this.pos)
  }

  private selector(): Selector {
    const fieldpath = [this.field()]
    while (this.peek() === ".") {
      this.pos++
      fieldpath.push(this.field())
    }
    this.skipSpace()
    const c = this.peek()
    if (c === undefined || c === ",") return { fieldpath, test: (value) => value !== undefined }
    const op = this.input.slice(this.pos, this.pos + 2)
    if (op !== "==" && op !== "!=" && op !== "~=") return this.fail("expected operator")
    this.pos += 2
    const value = this.value(op === "~=")
    switch (op) {
      case "==":
        return { fieldpath, test: (v) => v !== undefined && v === value }
      case "!=":
        return { fieldpath, test: (v) => (v ?? "") !== value }
      case "~=": {
        let re: RegExp
        try {
          re = new RegExp(value)
        } catch (e) {
          return this.fail(
            `invalid regexp ${JSON.stringify(value)}: ${e instanceof Error ? e.message : String(e)}`,
          )
        }
        return { fieldpath, test: (v) => v !== undefined && re.test(v) }
      }
    }
  }

  parse(): ReadonlyArray<Selector> {
    this.skipSpace()
    if (this.pos >= this.input.length) return []
    const selectors = [this.selector()]
    for (;;) {
      this.skipSpace()
      const c = this.peek()
      if (c === undefined) return selectors
      if (c !== ",") this.fail("expected a comma or the end")
      this.pos++
      selectors.push(this.selector())
    }
  }
}

/** Parses one filter; the error is containerd's INVALID_ARGUMENT text. */
export const parse = (input: string): Either.Either<Filter, string> => {
  try {
    const selectors = new Parser(input).parse()
    return Either.right((adaptor) => selectors.every((s) => s.test(adaptor(s.fieldpath))))
  } catch (e) {
    if (!(e instanceof ParseError)) throw e
    const at = Math.min(e.position, input.length)
    return Either.left(
      `parse error: [${input.slice(0, at)} >|${input.slice(at, at + 1)}|< ${input.slice(at + 1)}]: ${e.problem}: invalid argument`,
    )
  }
}

/** Parses filters that are ORed; no filter matches everything. */
export const parseAll = (inputs: ReadonlyArray<string>): Either.Either<Filter, string> => {
  const filters: Array<Filter> = []
  for (const input of inputs) {
    const parsed = parse(input)
    if (Either.isLeft(parsed)) return Either.left(parsed.left)
    filters.push(parsed.right)
  }
  return Either.right(filters.length === 0 ? () => true : (adaptor) => filters.some((f) => f(adaptor)))
}
