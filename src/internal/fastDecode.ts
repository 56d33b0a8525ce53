/**
 * A fast path for decoding values through schemas that check and never transform (the OCI spec's): the schema's
 * AST compiled once into plain functions that check a value and build the same fresh copy `Schema.decodeUnknown`
 * builds, without its per-node `Either`s, index-sorted arrays and issue bookkeeping (a default Linux spec: about
 * 90 KB of garbage per decode). It only says yes or no: a value it refuses goes through the schema, which names
 * what is wrong, so error messages are the schema's own.
 *
 * It covers the AST nodes those schemas are made of — structs and records (`TypeLiteral`, with the
 * `onExcessProperty` of a `parseOptions` annotation), arrays (`TupleType` with one rest element), refinements,
 * literals, unions of literals, strings, numbers and booleans — and `compile` returns `undefined` for a schema
 * with any other node, whose values then always go through the schema.
 */
import * as Option from "effect/Option"
import * as AST from "effect/SchemaAST"

/** What a compiled check returns for a value the schema would refuse. */
export const refused: unique symbol = Symbol("effect-containerd/fastDecode/refused")

/** A compiled check: the decoded copy, or `refused`. */
export type Check = (input: unknown) => unknown

const isRecord = (u: unknown): u is Record<PropertyKey, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u)

/** The check of `ast`, or `undefined` when it has a node this fast path does not cover. */
export const compile = (ast: AST.AST): Check | undefined => go(ast, false)

const go = (ast: AST.AST, preserveExcess: boolean): Check | undefined => {
  let preserve = preserveExcess
  const annotation = AST.getParseOptionsAnnotation(ast)
  if (Option.isSome(annotation) && annotation.value.onExcessProperty !== undefined) {
    if (annotation.value.onExcessProperty === "error") return undefined
    preserve = annotation.value.onExcessProperty === "preserve"
  }
  switch (ast._tag) {
    case "StringKeyword":
      return (u) => (typeof u === "string" ? u : refused)
    case "NumberKeyword":
      return (u) => (typeof u === "number" ? u : refused)
    case "BooleanKeyword":
      return (u) => (typeof u === "boolean" ? u : refused)
    case "Literal": {
      const literal = ast.literal
      return (u) => (u === literal ? u : refused)
    }
    case "Union": {
      const literals: Array<AST.LiteralValue> = []
      for (const member of ast.types) {
        if (member._tag !== "Literal") return undefined
        literals.push(member.literal)
      }
      return (u) => (literals.includes(u as AST.LiteralValue) ? u : refused)
    }
    case "Refinement": {
      const from = go(ast.from, preserve)
      if (from === undefined) return undefined
      const options: AST.ParseOptions = { onExcessProperty: preserve ? "preserve" : "ignore" }
      return (u) => {
        const a = from(u)
        return a === refused || Option.isSome(ast.filter(a, options, ast)) ? refused : a
      }
    }
    case "TupleType": {
      const rest = ast.rest[0]
      if (ast.elements.length > 0 || ast.rest.length !== 1 || rest === undefined) return undefined
      const item = go(rest.type, preserve)
      if (item === undefined) return undefined
      return (u) => {
        if (!Array.isArray(u)) return refused
        const out = new Array<unknown>(u.length)
        for (let i = 0; i < u.length; i++) {
          const v = item(u[i])
          if (v === refused) return refused
          out[i] = v
        }
        return out
      }
    }
    case "TypeLiteral":
      return typeLiteral(ast, preserve)
    default:
      return undefined
  }
}

const typeLiteral = (ast: AST.TypeLiteral, preserve: boolean): Check | undefined => {
  if (ast.propertySignatures.length === 0 && ast.indexSignatures.length === 0) return undefined
  const properties: Array<{ readonly name: PropertyKey; readonly optional: boolean; readonly check: Check }> =
    []
  for (const ps of ast.propertySignatures) {
    const check = go(ps.type, preserve)
    if (check === undefined) return undefined
    properties.push({ name: ps.name, optional: ps.isOptional, check })
  }
  const names = new Set<PropertyKey>(properties.map((p) => p.name))
  // only string-keyed index signatures (records): their keys are every string key
  let index: Check | undefined
  if (ast.indexSignatures.length > 1) return undefined
  const signature = ast.indexSignatures[0]
  if (signature !== undefined) {
    if (signature.parameter._tag !== "StringKeyword") return undefined
    index = go(signature.type, preserve)
    if (index === undefined) return undefined
  }
  const indexCheck = index
  return (u) => {
    if (!isRecord(u)) return refused
    const out: Record<PropertyKey, unknown> = {}
    if (preserve) {
      // keys the schema does not expect are kept as they are, before the others (as the schema's decode does)
      for (const key of Reflect.ownKeys(u)) {
        if (indexCheck !== undefined ? typeof key !== "string" : !names.has(key)) out[key] = u[key]
      }
    }
    for (const p of properties) {
      if (!Object.hasOwn(u, p.name)) {
        if (p.optional) continue
        return refused
      }
      const v = p.check(u[p.name])
      if (v === refused) return refused
      out[p.name] = v
    }
    if (indexCheck !== undefined) {
      for (const key of Object.keys(u)) {
        const v = indexCheck(u[key])
        if (v === refused) return refused
        if (!names.has(key)) out[key] = v
      }
    }
    return out
  }
}
