/**
 * Group "wire": a Version round trip through the `Containerd` service vs a
 * bare grpc-js call on the same channel, interleaved in one run.
 */
import * as Grpc from "@grpc/grpc-js"
import * as Effect from "effect/Effect"
import { VersionService } from "../generated/containerd/services/version/v1/version.js"
import * as ContainerdLive from "../src/layers/ContainerdLive.js"
import { withDaemon } from "./daemon.js"
import { against, type Group, summarize, timePair } from "./harness.js"

export const wire: Group = {
  name: "wire",
  description: "Version round trip: Containerd service vs bare grpc-js on the same channel",
  run: () =>
    withDaemon(async (address) => {
      const client = new Grpc.Client(`unix://${address}`, Grpc.credentials.createInsecure(), {
        "grpc.max_receive_message_length": 16 * 1024 * 1024,
        "grpc.max_send_message_length": 16 * 1024 * 1024,
      })
      try {
        const service = ContainerdLive.makeWithClient(client, "default")
        const metadata = new Grpc.Metadata()
        metadata.set("containerd-namespace", "default")
        const bare = () =>
          new Promise<void>((resolve, reject) => {
            client.makeUnaryRequest(
              VersionService.version.path,
              VersionService.version.requestSerialize,
              VersionService.version.responseDeserialize,
              {},
              metadata.clone(),
              {},
              (error) => (error ? reject(error) : resolve()),
            )
          })
        const viaService = () => Effect.runPromise(service.version)
        const [ours, theirs] = await timePair(viaService, bare, 3000, 300)
        const baseline = summarize("wire", "version: bare grpc-js", "ms", theirs)
        const row = summarize("wire", "version: Containerd service", "ms", ours)
        return [baseline, against(row, baseline)]
      } finally {
        client.close()
      }
    }),
}
