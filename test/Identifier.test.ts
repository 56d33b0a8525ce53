import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as FastCheck from "effect/FastCheck"
import { identifierMaxLength, validateIdentifier } from "../src/services/Containerd.js"

const stateDir = "/var/lib/effect-containerd/state"

/** Strings rich in the characters that make paths escape. */
const hostile = FastCheck.array(
  FastCheck.constantFrom("a", "Z", "0", ".", "..", "/", "-", "_", " ", "\\", "\0", "~", "%2e", "é"),
  { maxLength: 40 },
).map((parts) => parts.join(""))

const accepted = (id: string) => Either.isRight(Effect.runSync(Effect.either(validateIdentifier("id", id))))

describe("container ids", () => {
  it.prop(
    "no id the validation accepts yields a path outside the state dir",
    [FastCheck.oneof(hostile, FastCheck.string())],
    ([id]) => {
      if (!accepted(id)) return
      const bundle = Path.join(stateDir, id)
      assert.strictEqual(Path.dirname(bundle), stateDir)
      assert.strictEqual(bundle, `${stateDir}/${id}`, "no normalisation happened")
      assert.isAtMost(id.length, identifierMaxLength)
    },
  )

  it("accepts containerd's identifiers and rejects the rest", () => {
    for (const id of ["a", "web-1", "a.b_c-d", "A1", "x".repeat(76)]) assert.isTrue(accepted(id), id)
    for (const id of [
      "",
      ".",
      "..",
      "../x",
      "a/b",
      "-a",
      "a-",
      "a..b",
      "has space",
      "x".repeat(77),
      "a\0b",
    ]) {
      assert.isFalse(accepted(id), JSON.stringify(id))
    }
  })
})
