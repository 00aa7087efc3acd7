import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    reporters: ['default', './test/helpers/summary-reporter.ts'],
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          environment: 'node',
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts', 'test/chaos/**/*.test.ts'],
          environment: 'node',
          // Real PostgreSQL, Kafka and schema registry, started once per run (or taken from env).
          globalSetup: ['test/integration/global-setup.ts'],
          testTimeout: 240_000,
          hookTimeout: 240_000,
          // Two cores run PostgreSQL, Kafka, the registry and the connectors under test:
          // one integration file at a time keeps timings meaningful.
          fileParallelism: false,
        },
      },
    ],
  },
});
