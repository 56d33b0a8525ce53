import { assert, describe, it } from "@effect/vitest"
import * as FastCheck from "effect/FastCheck"
import * as Schema from "effect/Schema"
import {
  Conflict,
  ContainerdError,
  GrpcCode,
  InvalidParameter,
  isContainerdError,
  NotFound,
  System,
  wrapError,
} from "../src/errors/ContainerdError.js"

const phrases = ["container does not exist", "not found", "no such container"]

/** A grpc-js ServiceError as the client library produces it. */
const serviceError = (code: number, details: string) =>
  Object.assign(new Error(`${code} ${details}`), { code, details, metadata: {} })

const codes = FastCheck.integer({ min: 0, max: 16 })
/** Messages that contain none of the NotFound phrases. */
const plainMessages = FastCheck.string().filter((s) => !phrases.some((p) => s.includes(p)))
const phraseMessages = FastCheck.tuple(
  FastCheck.string(),
  FastCheck.constantFrom(...phrases),
  FastCheck.string(),
).map(([a, p, b]) => `${a}${p}${b}`)

const expectedTag = (code: number): ContainerdError["_tag"] => {
  switch (code) {
    case GrpcCode.NOT_FOUND:
      return "NotFound"
    case GrpcCode.ALREADY_EXISTS:
    case GrpcCode.FAILED_PRECONDITION:
      return "Conflict"
    case GrpcCode.INVALID_ARGUMENT:
    case GrpcCode.OUT_OF_RANGE:
      return "InvalidParameter"
    default:
      return "System"
  }
}

const errors = FastCheck.tuple(
  FastCheck.constantFrom(NotFound, Conflict, InvalidParameter, System),
  FastCheck.string(),
  FastCheck.option(codes, { nil: undefined }),
).map(([Ctor, message, code]) => (code === undefined ? new Ctor({ message }) : new Ctor({ message, code })))

describe("wrapError", () => {
  it.prop(
    "is total over arbitrary codes × messages and follows the code table",
    [codes, plainMessages],
    ([code, message]) => {
      const error = wrapError(serviceError(code, message))
      assert.isTrue(isContainerdError(error))
      assert.strictEqual(error._tag, expectedTag(code))
    },
  )

  it.prop("the NotFound phrases win over every code", [codes, phraseMessages], ([code, message]) => {
    assert.strictEqual(wrapError(serviceError(code, message))._tag, "NotFound")
  })

  it.prop(
    "keeps containerd's message and code",
    [codes, FastCheck.string({ minLength: 1 })],
    ([code, message]) => {
      const error = wrapError(serviceError(code, message))
      assert.strictEqual(error.message, message)
      assert.strictEqual(error.code, code)
    },
  )

  it.prop("is idempotent and passes library errors through unchanged", [errors], ([error]) => {
    assert.strictEqual(wrapError(error), error)
    const wrapped = wrapError(serviceError(5, "x"))
    assert.strictEqual(wrapError(wrapped), wrapped)
  })

  it.prop("maps anything at all to one of the four errors", [FastCheck.anything()], ([value]) => {
    const error = wrapError(value)
    assert.include(["NotFound", "Conflict", "InvalidParameter", "System"], error._tag)
  })

  it("errno errors are System, with their message", () => {
    const errno = Object.assign(new Error("ENOENT: no such file or directory, open '/x'"), {
      code: "ENOENT",
      errno: -2,
    })
    const error = wrapError(errno)
    assert.strictEqual(error._tag, "System")
    assert.strictEqual(error.code, undefined)
    assert.include(error.message, "ENOENT")
  })
})

describe("ContainerdError schema", () => {
  it.prop("encode → decode round-trips every error", [errors], ([error]) => {
    const encoded = Schema.encodeSync(ContainerdError)(error)
    const decoded = Schema.decodeUnknownSync(ContainerdError)(JSON.parse(JSON.stringify(encoded)))
    assert.strictEqual(decoded._tag, error._tag)
    assert.strictEqual(decoded.message, error.message)
    assert.strictEqual(decoded.code, error.code)
    assert.isTrue(isContainerdError(decoded))
  })

  it("construction skips the fields' run-time check unless asked (false); decoding through the schema checks", () => {
    const wrong = { message: 42 } as unknown as { message: string }
    for (const make of [
      (d?: boolean) => new NotFound(wrong, d),
      (d?: boolean) => new Conflict(wrong, d),
      (d?: boolean) => new InvalidParameter(wrong, d),
      (d?: boolean) => new System(wrong, d),
    ]) {
      const made = make()
      assert.isTrue(isContainerdError(made))
      assert.throws(() => make(false))
    }
    const decoded = Schema.decodeUnknownEither(ContainerdError)({ _tag: "NotFound", message: 42 })
    assert.strictEqual(decoded._tag, "Left")
    const right = Schema.decodeUnknownEither(ContainerdError)({
      _tag: "Conflict",
      message: "id already in use",
    })
    assert.strictEqual(right._tag, "Right")
  })
})
