import { fileURLToPath } from "node:url"
import { defineConfig } from "vitest/config"

const src = (path: string) => fileURLToPath(new URL(`./src/${path}`, import.meta.url))

export default defineConfig({
  test: {
    // the integration daemon's release (kill and delete leftover tasks, stop the daemon) may need more than
    // vitest's default 10 s; past this bound vitest exits without it and the daemon would be left running
    teardownTimeout: 60_000,
    // two test files at a time on a 2-core machine
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    projects: [
      {
        // examples import the library by its package name, as consumers do: map it onto the sources
        resolve: {
          alias: [
            { find: /^effect-containerd$/, replacement: src("index.ts") },
            { find: /^effect-containerd\/(.*)$/, replacement: src("$1.ts") },
          ],
        },
        test: {
          name: "unit",
          include: ["test/*.test.ts", "examples/**/*.test.ts", "test/contract/memory.test.ts"],
          testTimeout: 30_000,
        },
      },
      {
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          globalSetup: ["test/support/globalSetup.ts"],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          pool: "forks",
        },
      },
    ],
  },
})
