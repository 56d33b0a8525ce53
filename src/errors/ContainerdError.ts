/**
 * The errors every effect-containerd operation fails with.
 *
 * Four tagged errors, one union, one mapping function. Each error keeps the
 * message a user can act on, the gRPC status code when the failure came from
 * containerd, and the original cause.
 *
 * `wrapError` decides an error's kind, and nothing else does:
 *
 * | input                                                                 | result             |
 * |-----------------------------------------------------------------------|--------------------|
 * | already a `ContainerdError`                                           | unchanged          |
 * | message contains "container does not exist", "not found" or "no such container" | `NotFound` (whatever the code) |
 * | gRPC `NOT_FOUND` (5)                                                  | `NotFound`         |
 * | gRPC `ALREADY_EXISTS` (6), `FAILED_PRECONDITION` (9)                  | `Conflict`         |
 * | gRPC `INVALID_ARGUMENT` (3), `OUT_OF_RANGE` (11)                      | `InvalidParameter` |
 * | anything else (other codes, errno errors, plain values)               | `System`           |
 *
 * @since 0.1.0
 */
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"

/** Brand shared by every effect-containerd error, for `isContainerdError`. */
export const TypeId: unique symbol = Symbol.for("effect-containerd/ContainerdError")

/** The brand's type. */
export type TypeId = typeof TypeId

/** gRPC status codes the mapping distinguishes. */
export const GrpcCode = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const

const fields = {
  message: Schema.String,
  code: Schema.optional(Schema.Number),
  cause: Schema.optional(Schema.Defect),
}

/** What every error is made of. */
export interface ErrorProps {
  readonly message: string
  readonly code?: number
  readonly cause?: unknown
}

/**
 * Errors are made often (every refused call, every mapped gRPC failure), and their fields are plain values the
 * types already check: the constructor skips the schema's run-time check of them, which would cost tens of µs per
 * error. Pass `false` to check anyway. Decoding through the schema (`Schema.decodeUnknown(ContainerdError)`)
 * still checks.
 */
const unchecked = (disableValidation: boolean | undefined): boolean => disableValidation ?? true

/** The object or process does not exist (containerd NOT_FOUND, or "no such container"). */
export class NotFound extends Schema.TaggedError<NotFound>("effect-containerd/NotFound")("NotFound", fields) {
  readonly [TypeId]: TypeId = TypeId
  constructor(props: ErrorProps, disableValidation?: boolean) {
    super(props, unchecked(disableValidation))
  }
}

/** The request conflicts with current state: the id is in use, the container is already started, a task still runs. */
export class Conflict extends Schema.TaggedError<Conflict>("effect-containerd/Conflict")("Conflict", fields) {
  readonly [TypeId]: TypeId = TypeId
  constructor(props: ErrorProps, disableValidation?: boolean) {
    super(props, unchecked(disableValidation))
  }
}

/** The request itself is wrong: a bad id, spec, address or option. Nothing was changed. */
export class InvalidParameter extends Schema.TaggedError<InvalidParameter>(
  "effect-containerd/InvalidParameter",
)("InvalidParameter", fields) {
  readonly [TypeId]: TypeId = TypeId
  constructor(props: ErrorProps, disableValidation?: boolean) {
    super(props, unchecked(disableValidation))
  }
}

/** Anything else: the daemon is unreachable, the runtime failed, an fd could not be opened. */
export class System extends Schema.TaggedError<System>("effect-containerd/System")("System", fields) {
  readonly [TypeId]: TypeId = TypeId
  constructor(props: ErrorProps, disableValidation?: boolean) {
    super(props, unchecked(disableValidation))
  }
}

/** Every error that leaves the library. */
export type ContainerdError = NotFound | Conflict | InvalidParameter | System

/** Schema of the union, for encoding errors across a boundary. */
export const ContainerdError: Schema.Union<
  [typeof NotFound, typeof Conflict, typeof InvalidParameter, typeof System]
> = Schema.Union(NotFound, Conflict, InvalidParameter, System)

/** Whether a value is one of the library's errors. */
export const isContainerdError = (u: unknown): u is ContainerdError => Predicate.hasProperty(u, TypeId)

const notFoundPhrases = ["container does not exist", "not found", "no such container"] as const

const messageOf = (u: unknown): string => {
  if (Predicate.hasProperty(u, "details") && typeof u.details === "string" && u.details.length > 0) {
    return u.details
  }
  if (Predicate.hasProperty(u, "message") && typeof u.message === "string") return u.message
  if (typeof u === "string") return u
  try {
    return String(u)
  } catch {
    return "unknown error"
  }
}

const codeOf = (u: unknown): number | undefined =>
  Predicate.hasProperty(u, "code") && typeof u.code === "number" ? u.code : undefined

/**
 * Maps any failure onto the error union (table in the module comment).
 * A gRPC `ServiceError`'s `details` is containerd's own message and is kept as the message.
 */
export const wrapError = (u: unknown): ContainerdError => {
  if (isContainerdError(u)) return u
  const message = messageOf(u)
  const code = codeOf(u)
  const props = code === undefined ? { message, cause: u } : { message, code, cause: u }
  if (notFoundPhrases.some((phrase) => message.includes(phrase))) return new NotFound(props)
  switch (code) {
    case GrpcCode.NOT_FOUND:
      return new NotFound(props)
    case GrpcCode.ALREADY_EXISTS:
    case GrpcCode.FAILED_PRECONDITION:
      return new Conflict(props)
    case GrpcCode.INVALID_ARGUMENT:
    case GrpcCode.OUT_OF_RANGE:
      return new InvalidParameter(props)
    default:
      return new System(props)
  }
}

/** An `InvalidParameter` naming the offending field: `invalidField("process.args", "must not be empty")`. */
export const invalidField = (path: string, problem: string): InvalidParameter =>
  new InvalidParameter({ message: `${path}: ${problem}` })
