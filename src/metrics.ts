import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** Every Prometheus metric of pg2crm, declared in one place. */
export const registry = new Registry();

export const metrics = {
  eventsProduced: new Counter({
    name: 'pg2crm_events_produced_total',
    help: 'Change events acknowledged by Kafka (source)',
    registers: [registry],
  }),
  snapshotRows: new Counter({
    name: 'pg2crm_snapshot_rows_total',
    help: "Rows read by snapshots: kind=initial (inside the slot's exported snapshot) or incremental (watermark chunks: resumed or pg2crm snapshot)",
    labelNames: ['table', 'kind'] as const,
    registers: [registry],
  }),
  eventsConsumed: new Counter({
    name: 'pg2crm_events_consumed_total',
    help: 'Change events read from Kafka (sink)',
    registers: [registry],
  }),
  recordsWritten: new Counter({
    name: 'pg2crm_records_written_total',
    help: 'Records the CRM accepted, by object and op (upsert | delete)',
    labelNames: ['object', 'op'] as const,
    registers: [registry],
  }),
  crmRequests: new Counter({
    name: 'pg2crm_crm_requests_total',
    help: 'CRM write calls, by object and outcome (ok | error)',
    labelNames: ['object', 'outcome'] as const,
    registers: [registry],
  }),
  throttles: new Counter({
    name: 'pg2crm_crm_throttles_total',
    help: 'Responses in which the CRM throttled pg2crm',
    registers: [registry],
  }),
  deadLettered: new Counter({
    name: 'pg2crm_dead_lettered_total',
    help: 'Records sent to the dead-letter topic, by object',
    labelNames: ['object'] as const,
    registers: [registry],
  }),
  pausedPartitions: new Gauge({
    name: 'pg2crm_paused_partitions',
    help: 'Topic-partitions the sink paused for backpressure (a linger pause, waiting for fuller calls, is not counted)',
    registers: [registry],
  }),
  budgetTokens: new Gauge({
    name: 'pg2crm_budget_tokens',
    help: 'Requests left in the rate budget of this instance',
    registers: [registry],
  }),
  budgetLimit: new Gauge({
    name: 'pg2crm_budget_limit',
    help: 'Requests per window: scope=quota is the credential (all instances), scope=instance is what this instance may use now (share x adaptive scale)',
    labelNames: ['scope'] as const,
    registers: [registry],
  }),
  budgetUsed: new Gauge({
    name: 'pg2crm_budget_used',
    help: 'Requests spent in the current rolling window: scope=instance is what this instance spent',
    labelNames: ['scope'] as const,
    registers: [registry],
  }),
  budgetShare: new Gauge({
    name: 'pg2crm_budget_share',
    help: "This instance's fraction of the credential's quota (follows its partitions' lag and priority)",
    registers: [registry],
  }),
  circuitState: new Gauge({
    name: 'pg2crm_circuit_state',
    help: 'CRM circuit breaker: 0 closed, 1 half-open, 2 open',
    registers: [registry],
  }),
  inFlight: new Gauge({
    name: 'pg2crm_crm_in_flight',
    help: 'CRM calls in flight',
    registers: [registry],
  }),
  batchSize: new Histogram({
    name: 'pg2crm_crm_batch_size',
    help: 'Records per CRM call, by object',
    labelNames: ['object'] as const,
    buckets: [1, 5, 10, 25, 50, 100, 200, 500, 1000, 5000, 25000],
    registers: [registry],
  }),
  noopSkipped: new Counter({
    name: 'pg2crm_noop_skipped_total',
    help: 'Changes not sent because the mapped CRM fields were unchanged since the last successful write',
    labelNames: ['object'] as const,
    registers: [registry],
  }),
  partitionStalledSeconds: new Gauge({
    name: 'pg2crm_partition_stalled_seconds',
    help: "Seconds a topic-partition has had consumer lag while the sink group's committed offset did not move (0 = moving or no lag); alert on it: a stuck partition on a quiet table never crosses a lag alert",
    labelNames: ['topic', 'partition'] as const,
    registers: [registry],
  }),
  consumerLag: new Gauge({
    name: 'pg2crm_consumer_lag',
    help: 'Sink consumer group lag per topic-partition, in messages: end offset - committed offset',
    labelNames: ['topic', 'partition'] as const,
    registers: [registry],
  }),
  slotLagBytes: new Gauge({
    name: 'pg2crm_replication_slot_lag_bytes',
    help: 'WAL the replication slot holds: current WAL LSN - confirmed_flush_lsn',
    labelNames: ['slot'] as const,
    registers: [registry],
  }),
  writtenHashKeys: new Gauge({
    name: 'pg2crm_written_hash_keys',
    help: "CRM records in the sink's written-hash store (no-op skip), each ~34 bytes of memory (npm run bench:hashes)",
    registers: [registry],
  }),
  endToEndSeconds: new Histogram({
    name: 'pg2crm_end_to_end_seconds',
    help: 'Seconds from the PostgreSQL commit to the CRM accepting the write',
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [registry],
  }),
};
