/**
 * grpc-js calls as Effects and Streams: interruption cancels the call, every
 * failure goes through `wrapError`.
 */
import type * as Grpc from "@grpc/grpc-js"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import { type ContainerdError, wrapError } from "../errors/ContainerdError.js"

/** The part of a grpc-js method definition the calls use. */
export interface Method<Req, Res> {
  readonly path: string
  readonly requestSerialize: (value: Req) => Buffer
  readonly responseDeserialize: (bytes: Buffer) => Res
}

/** A unary call; interrupting the fiber cancels the RPC. */
export const unary = <Req, Res>(
  client: Grpc.Client,
  method: Method<Req, Res>,
  request: Req,
  metadata: Grpc.Metadata,
  options: Grpc.CallOptions = {},
): Effect.Effect<Res, ContainerdError> =>
  Effect.async<Res, ContainerdError>((resume) => {
    const call = client.makeUnaryRequest(
      method.path,
      method.requestSerialize,
      method.responseDeserialize,
      request,
      metadata,
      options,
      (error, response) => {
        if (error) resume(Effect.fail(wrapError(error)))
        else resume(Effect.succeed(response as Res))
      },
    )
    return Effect.sync(() => call.cancel())
  })

/** Starts a server-streaming call (the caller cancels it). */
const startServerStream = <Req, Res>(
  client: Grpc.Client,
  method: Method<Req, Res>,
  request: Req,
  metadata: Grpc.Metadata,
  options: Grpc.CallOptions,
) =>
  Effect.sync(() =>
    client.makeServerStreamRequest(
      method.path,
      method.requestSerialize,
      method.responseDeserialize,
      request,
      metadata,
      options,
    ),
  )

/**
 * A server-streaming call as a Stream. Messages are pulled on demand (the
 * call is paused while the consumer is busy); the finalizer cancels the call,
 * so ending or interrupting the stream ends the RPC.
 */
export const serverStream = <Req, Res>(
  client: Grpc.Client,
  method: Method<Req, Res>,
  request: Req,
  metadata: Grpc.Metadata,
  options: Grpc.CallOptions = {},
): Stream.Stream<Res, ContainerdError> =>
  Stream.unwrapScoped(
    Effect.map(
      Effect.acquireRelease(startServerStream(client, method, request, metadata, options), (call) =>
        Effect.sync(() => call.cancel()),
      ),
      (call) => pullReadable<Res>(call),
    ),
  )

/**
 * A server-streaming call run to its end, handing each message to `onMessage` in order: the call is paused while
 * `onMessage` runs. It fails as `serverStream` does; its end, failure or interruption cancels the call. The same
 * call as `serverStream`, for a consumer that needs no Stream (which costs its machinery on every message).
 */
export const serverStreamForEach = <Req, Res>(
  client: Grpc.Client,
  method: Method<Req, Res>,
  request: Req,
  metadata: Grpc.Metadata,
  onMessage: (message: Res) => Effect.Effect<unknown>,
  options: Grpc.CallOptions = {},
): Effect.Effect<void, ContainerdError> =>
  Effect.acquireUseRelease(
    startServerStream(client, method, request, metadata, options),
    (call) => {
      const next = readMessages<Res>(call)
      const loop: Effect.Effect<void, ContainerdError> = Effect.matchEffect(next, {
        onFailure: (failure) => (Option.isNone(failure) ? Effect.void : Effect.fail(failure.value)),
        onSuccess: (message) => Effect.flatMap(onMessage(message), () => loop),
      })
      return loop
    },
    (call) => Effect.sync(() => call.cancel()),
  )

/** Reads an object-mode readable one message at a time, honouring back-pressure. */
const pullReadable = <A>(
  readable: NodeJS.ReadableStream & { read(): unknown },
): Stream.Stream<A, ContainerdError> => Stream.repeatEffectOption(readMessages<A>(readable))

/** The next message of an object-mode readable, waiting for one; fails with `None` at its end. */
const readMessages = <A>(
  readable: NodeJS.ReadableStream & { read(): unknown },
): Effect.Effect<A, Option.Option<ContainerdError>> => {
  let ended = false
  let failure: ContainerdError | undefined
  let wake: (() => void) | undefined
  const notify = () => {
    const w = wake
    wake = undefined
    w?.()
  }
  readable.on("readable", notify)
  readable.on("end", () => {
    ended = true
    notify()
  })
  readable.on("error", (error) => {
    failure = wrapError(error)
    notify()
  })
  const next: Effect.Effect<A, Option.Option<ContainerdError>> = Effect.suspend(() => {
    const value = readable.read()
    if (value !== null) return Effect.succeed(value as A)
    if (failure !== undefined) return Effect.fail(Option.some(failure))
    if (ended) return Effect.fail(Option.none())
    // no canceler (which would cost an interruption handler per wait): a wait that is interrupted leaves `wake`
    // set, and an async resumes once, so a later notification resumes nothing
    return Effect.zipRight(
      Effect.async<void>((resume) => {
        wake = () => resume(Effect.void)
      }),
      next,
    )
  })
  return next
}

/** A bidirectional call driven strictly request → response (containerd's Content.Write). */
export interface Duplex<Req, Res> {
  readonly roundTrip: (request: Req) => Effect.Effect<Res, ContainerdError>
}

/** Opens a bidirectional call in a Scope; closing the scope cancels it. */
export const duplex = <Req, Res>(
  client: Grpc.Client,
  method: Method<Req, Res>,
  metadata: Grpc.Metadata,
  options: Grpc.CallOptions = {},
): Effect.Effect<Duplex<Req, Res>, never, Scope.Scope> =>
  Effect.gen(function* () {
    const responses = yield* Queue.unbounded<Exit.Exit<Res, ContainerdError>>()
    const call = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const call = client.makeBidiStreamRequest(
          method.path,
          method.requestSerialize,
          method.responseDeserialize,
          metadata,
          options,
        )
        call.on("data", (response: Res) => Queue.unsafeOffer(responses, Exit.succeed(response)))
        call.on("error", (error) => Queue.unsafeOffer(responses, Exit.fail(wrapError(error))))
        call.on("end", () =>
          Queue.unsafeOffer(
            responses,
            Exit.fail(wrapError(new Error(`${method.path}: the stream ended early`))),
          ),
        )
        return call
      }),
      (call) => Effect.sync(() => call.cancel()),
    )
    const roundTrip = (request: Req): Effect.Effect<Res, ContainerdError> =>
      Effect.async<void>((resume) => {
        if (call.write(request)) resume(Effect.void)
        else call.once("drain", () => resume(Effect.void))
      }).pipe(Effect.zipRight(Queue.take(responses)), Effect.flatten)
    return { roundTrip }
  })
