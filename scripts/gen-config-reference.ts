import { readFileSync, writeFileSync } from 'node:fs';
import { z } from 'zod';
import { configSchema } from '../src/config.ts';

/**
 * Writes the configuration reference of README.md (between the markers below) from the JSON
 * Schema of src/config.ts: every key path with its type, default and allowed values. Keys, types
 * and defaults come from the schema, so they cannot drift; the descriptions come from the
 * schema's `description` (zod `.describe()` / `.meta()`) when it has one, else from DESCRIPTIONS
 * here. A unit test fails when the README section is stale or a key has no description.
 */
export const START = '<!-- config-reference:start -->';
export const END = '<!-- config-reference:end -->';

/** Key path (`[]` = every array item, `<name>` = any record key) -> what an operator needs to know. */
export const DESCRIPTIONS: Record<string, string> = {
  name: 'Connector name; derives the slot and publication `pg2crm_<name>`, the client id `pg2crm-<name>` and the sink group `pg2crm-<name>-sink`.',
  postgres: 'The source database.',
  'postgres.url': 'Connection URL of a role with the REPLICATION attribute (and SELECT on the tables).',
  'postgres.ssl':
    'TLS to PostgreSQL for every connection (queries and replication); absent = plaintext. Set it here, not as `?sslmode=` in `postgres.url` (refused: node-postgres reads `sslmode=require` as verify-full). Example: `ssl: { mode: verify-full, rootCert_FILE: /etc/pg2crm/pg-ca.pem }`.',
  'postgres.ssl.mode':
    "libpq's sslmode: `disable` plaintext; `require` encrypted, certificate not checked; `verify-ca` the certificate must chain to `rootCert` (or a system CA); `verify-full` also the host in `postgres.url` must be named by the certificate (recommended).",
  'postgres.ssl.rootCert':
    "PEM CA certificate(s) that signed the server's certificate (`rootCert_FILE: /path/ca.pem` reads a file); default the system CAs. Only for verify-ca / verify-full.",
  'postgres.ssl.cert':
    'PEM client certificate when the server asks for one (pg_hba `cert`, `clientcert=verify-full`); with `key`. `cert_FILE` reads a file.',
  'postgres.ssl.key': 'PEM private key of `postgres.ssl.cert`; prefer `key_FILE`.',
  'postgres.tables': '`schema.table` to capture (`table` alone means `public.table`); each needs a primary key.',
  'postgres.slot': 'Replication slot name; default `pg2crm_<name>`.',
  'postgres.publication': 'Publication name; default `pg2crm_<name>`.',
  'postgres.publish':
    'Operations the publication sends; an existing publication whose operations or tables differ is altered to match (logged). Leave out `delete` and deletes never reach the CRM.',
  'postgres.snapshot':
    '`initial`: snapshot every table when the connector creates its slot (first start); a snapshot cut short by a crash resumes after the last chunk Kafka acknowledged; a slot that lost WAL (`wal_status = lost`) stops the connector with an error. `never`: stream only. `when_needed`: as `initial`, and a lost slot is dropped, recreated and everything snapshotted again. `pg2crm snapshot --table` works in every mode.',
  'postgres.snapshotChunkRows': 'Rows per keyset chunk of the initial and incremental snapshots; progress is saved after each chunk.',
  'postgres.heartbeatSeconds': 'Interval of the logical heartbeat message that lets an idle slot confirm and release WAL (0 = off).',
  'postgres.maxBufferedEvents': 'Change events held between the replication stream and Kafka before the stream is paused.',
  'postgres.connectTimeoutMs':
    'Bound on opening each PostgreSQL connection (TCP, TLS, startup); a server that accepts and never answers fails the command instead of hanging it.',
  'postgres.queryTimeoutMs':
    'Bound on one SQL statement (`statement_timeout`; the client stops waiting 5 s later); 0 = none. The replication stream itself is not bounded.',
  kafka: 'The Kafka cluster and the schema registry.',
  'kafka.brokers': '`host:port` list, or one comma-separated string.',
  'kafka.clientId': 'Kafka client id; default `pg2crm-<name>`.',
  'kafka.ssl':
    'TLS to the brokers (SSL or SASL_SSL listener); absent = plaintext. `{}` trusts the system CAs (Confluent Cloud, MSK, Aiven with public CAs).',
  'kafka.ssl.ca':
    "PEM CA certificate(s) that signed the brokers' certificates, trusted instead of the system CAs; `ca_FILE: /path/ca.pem` reads a file.",
  'kafka.ssl.cert': 'PEM client certificate for mutual TLS (with `key`); `cert_FILE` reads a file.',
  'kafka.ssl.key': 'PEM private key of `kafka.ssl.cert`; prefer `key_FILE`.',
  'kafka.ssl.passphrase': 'Passphrase of an encrypted `kafka.ssl.key`; prefer `passphrase_FILE`.',
  'kafka.ssl.rejectUnauthorized':
    "Check the brokers' certificates and host names (on by default). Turn off only to try something out: anyone in between can read and change the stream.",
  'kafka.sasl':
    'SASL authentication: with `kafka.ssl` SASL_SSL, without it SASL_PLAINTEXT. A refused login stops the connector at once with an error naming `kafka.sasl`.',
  'kafka.sasl.mechanism': 'SASL mechanism the brokers offer (Confluent Cloud: `plain` with an API key; MSK and Aiven: `scram-sha-512`).',
  'kafka.sasl.username': 'SASL user name (Confluent Cloud: the API key).',
  'kafka.sasl.password':
    'SASL password (Confluent Cloud: the API secret); never logged. Prefer `password_FILE: /run/secrets/kafka-password`.',
  'kafka.topicPrefix':
    'Change topics are `<topicPrefix>.<schema>.<table>`; also the prefix of the default dead-letter, hash and status topics.',
  'kafka.partitions': 'Partitions of the change topics pg2crm creates (and of the hash topic); the most sink replicas that get work.',
  'kafka.replicationFactor': 'Replication factor of the topics pg2crm creates.',
  'kafka.groupId': 'Sink consumer group; default `pg2crm-<name>-sink`.',
  'kafka.maxMessageBytes':
    "`max.message.bytes` of the change topics pg2crm creates: one event carries a whole row, and Kafka's 1 MiB default rejects rows with large TOASTed values.",
  'kafka.tombstones': 'Emit a null-value tombstone after each delete, so compacted topics drop the key.',
  'kafka.schemaRegistry': 'Confluent-compatible schema registry (Apicurio: `/apis/ccompat/v7`).',
  'kafka.schemaRegistry.url':
    'Registry base URL, without credentials: a URL with `user:password@` is refused (it would be printed and logged); use `username` and `password`.',
  'kafka.schemaRegistry.username': 'HTTP basic auth user (Confluent Cloud: the Schema Registry API key), with `password`.',
  'kafka.schemaRegistry.password': 'HTTP basic auth password; never logged. Prefer `password_FILE`.',
  'kafka.schemaRegistry.ca':
    'PEM CA certificate(s) of an https registry with a private CA, trusted instead of the system CAs; `ca_FILE` reads a file.',
  'kafka.schemaRegistry.compatibility':
    'Level set on the subjects pg2crm creates. The sink decodes each message with its writer schema, so `NONE` lets any ALTER TABLE through; with `BACKWARD` etc. a breaking ALTER TABLE stops the source with an error naming the subject.',
  crm: 'The target CRM.',
  'crm.kind': 'Which CRM adapter to use (see the CRM support matrix).',
  'crm.baseUrl': "CRM API base URL (the simulator's URL for load tests).",
  'crm.auth':
    'One credential; set either `auth` or `credentials`. A static `token`, or an OAuth `flow` with its fields; secrets through `<key>_FILE`.',
  'crm.auth.token':
    'Static API token (Zendesk Sell personal access token, HubSpot private-app token, or any token that does not expire); never logged. Use `token_FILE: /run/secrets/x` to read it from a file.',
  'crm.auth.flow':
    'OAuth flow whose tokens pg2crm obtains and renews ahead of expiry (instead of `token`): Salesforce `client_credentials` or `jwt_bearer`; Dynamics `client_credentials` (Microsoft Entra ID); Zoho, HubSpot (OAuth app) and Zendesk Sell `refresh_token`. On a 401 the token is renewed once and the call retried; only a fresh token refused too stops the connector.',
  'crm.auth.tokenUrl':
    "Token endpoint. Defaults: Dynamics `https://login.microsoftonline.com/<tenantId>/oauth2/v2.0/token`; Zoho the accounts server of crm.baseUrl's data centre (`www.zohoapis.eu` -> `https://accounts.zoho.eu/oauth/v2/token`); HubSpot `<baseUrl origin>/oauth/2026-03/token` (v1 is deprecated on 2027-02-16); Zendesk Sell `https://api.getbase.com/oauth2/token`; Salesforce `https://login.salesforce.com/services/oauth2/token` (jwt_bearer; client_credentials needs the My Domain URL `https://<MyDomain>.my.salesforce.com/services/oauth2/token`).",
  'crm.auth.clientId': 'OAuth client id (Salesforce consumer key, Entra application id, Zoho/HubSpot client id).',
  'crm.auth.clientSecret': 'OAuth client secret; never logged. Prefer `clientSecret_FILE: /run/secrets/x`.',
  'crm.auth.refreshToken': 'Refresh token the app was granted (refresh_token flow); never logged. Prefer `refreshToken_FILE`.',
  'crm.auth.privateKey':
    'PEM private key: signs the Salesforce JWT bearer assertion, or the Dynamics certificate credential (with `certificate`); never logged. Prefer `privateKey_FILE`.',
  'crm.auth.certificate':
    'Dynamics certificate credential: the PEM certificate of `privateKey` as uploaded to the app registration (its SHA-1 thumbprint goes in the assertion).',
  'crm.auth.username': 'Salesforce jwt_bearer: the user the integration acts as (`sub`), pre-authorized for the connected app.',
  'crm.auth.tenantId': 'Dynamics: the Microsoft Entra tenant (id or domain) of the environment.',
  'crm.auth.scope': 'Dynamics: the scope requested; default `<crm.baseUrl origin>/.default`.',
  'crm.auth.audience':
    "Salesforce jwt_bearer `aud`; default the token URL's origin (`https://login.salesforce.com`, `https://test.salesforce.com` or My Domain).",
  'crm.credentials':
    'Several credentials instead of `auth`. Tokens with the same `quotaGroup` spend from one bucket and share one budget of `limits`; each separate group is a separate bucket with its own `limits`, i.e. more capacity.',
  'crm.credentials[].token': 'Static API token; never logged (`token_FILE` reads it from a file).',
  'crm.credentials[].flow': 'As `crm.auth.flow`.',
  'crm.credentials[].tokenUrl': 'As `crm.auth.tokenUrl`.',
  'crm.credentials[].clientId': 'As `crm.auth.clientId`.',
  'crm.credentials[].clientSecret': 'As `crm.auth.clientSecret`.',
  'crm.credentials[].refreshToken': 'As `crm.auth.refreshToken`.',
  'crm.credentials[].privateKey': 'As `crm.auth.privateKey`.',
  'crm.credentials[].certificate': 'As `crm.auth.certificate`.',
  'crm.credentials[].username': 'As `crm.auth.username`.',
  'crm.credentials[].tenantId': 'As `crm.auth.tenantId`.',
  'crm.credentials[].scope': 'As `crm.auth.scope`.',
  'crm.credentials[].audience': 'As `crm.auth.audience`.',
  'crm.credentials[].quotaGroup':
    'Tokens that the CRM counts in one bucket get the same group (e.g. all tokens of one Zendesk Sell account).',
  'crm.limits':
    "Rate limits of one quota group (one credential with `auth`), in the CRM's unit (Zoho: credits); all sink instances share them.",
  'crm.limits.requests': 'Requests (Zoho: credits) per window for the credential, all instances together.',
  'crm.limits.windowSeconds': 'Length of the rolling window the CRM counts `requests` in.',
  'crm.limits.daily':
    "Quota over a rolling 24 h in the CRM's unit: API calls (Salesforce, HubSpot) or credits (Zoho: 1 per 10 records upserted, 500 per Bulk Write job). Unset = no daily cap.",
  'crm.limits.concurrency': 'CRM calls in flight at once, per instance.',
  'crm.limits.utilisation': "Fraction of the quota pg2crm may use; keep some for the account's other tools.",
  'crm.limits.executionSeconds':
    "Dynamics 365: combined execution time (seconds) per window for the credential, all instances together, counted from pg2crm's own call durations. Default 1,200 per 300 s (Dataverse's service protection limit), scaled with `windowSeconds`.",
  'crm.timeoutMs':
    'Timeout of one CRM call (connect, headers and the whole body). Each poll of an asynchronous bulk job is one call; the job itself has `crm.bulkJobTimeoutMinutes`.',
  'crm.tls':
    'TLS towards the CRM and its token endpoint, for CRMs reached through a corporate proxy that re-signs TLS or wants a client certificate; absent = the system CAs.',
  'crm.tls.ca': "PEM CA bundle to trust besides the system CAs (the proxy's CA); `ca_FILE` reads a file.",
  'crm.tls.cert': 'PEM client certificate the proxy asks for (with `key`); `cert_FILE` reads a file.',
  'crm.tls.key': 'PEM private key of `crm.tls.cert`; prefer `key_FILE`.',
  'crm.tls.passphrase': 'Passphrase of an encrypted `crm.tls.key`; prefer `passphrase_FILE`.',
  'crm.bulkJobTimeoutMinutes':
    'How long one asynchronous bulk job (Salesforce Bulk API 2.0, Zoho Bulk Write) may run while the adapter polls it (backing off to one poll every 10 s); past it the job is given up (Salesforce: aborted) and its records retried. Jobs can take minutes.',
  'crm.bulkThreshold':
    "Records in one call from which the adapter uses the CRM's asynchronous bulk API (Salesforce Bulk API 2.0, Zoho Bulk Write) instead of its batch API; 0 = never. Ignored by CRMs without one.",
  'crm.apiVersion': 'API version path segment where the CRM has one (Salesforce `v62.0`, Dynamics `v9.2`, Zoho `v7`).',
  mappings: 'One entry per captured table: which CRM object its rows become.',
  'mappings[].table': '`schema.table`; must be one of `postgres.tables`.',
  'mappings[].object': 'CRM object (Salesforce sObject, HubSpot object type, Dataverse entity set, Zoho module, Sell resource).',
  'mappings[].externalId': 'How the CRM record is found: the CRM field that holds the ERP key.',
  'mappings[].externalId.column': 'Column whose value is the external id (usually the primary key).',
  'mappings[].externalId.field': 'CRM field holding it (unique / external-id / alternate-key field; Sell: `custom_fields.<name>`).',
  'mappings[].fields': '`crmField: column` for every field written.',
  'mappings[].lookups':
    '`crmField: {object, column}`: the field references the record of another mapping (`object`) whose external id is in `column`.',
  'mappings[].lookups.<field>.object': 'CRM object of the referenced record; another mapping must write it.',
  'mappings[].lookups.<field>.column':
    "Column of this table holding the referenced record's external id; NULL clears the CRM's lookup (a CRM that requires it, e.g. a Zendesk Sell deal's contact, rejects that write to the dead-letter topic).",
  'mappings[].onDelete':
    'What a DELETE in PostgreSQL does in the CRM: `delete`, `ignore`, or `{set: {field: value}}` (an upsert of those fields, e.g. a status).',
  'mappings[].priority':
    'When budget is scarce, higher priority goes first: callers of lower priority leave budget for it, and the budget share weighs its partitions by 2^(priority/3).',
  sink: 'Kafka -> CRM.',
  'sink.lingerMs': 'Longest a change waits to be batched with others before it is written.',
  'sink.maxAttempts': 'Attempts for a transiently failing record before it is dead-lettered (throttles never count).',
  'sink.lookupPendingSeconds':
    'How long a record may wait for the record it links to (`LOOKUP_PENDING`) before it is dead-lettered; those retries are not attempts.',
  'sink.deadLetterTopic': 'Topic for records the CRM rejected or that ran out of attempts; default `<topicPrefix>.dlq`.',
  'sink.fetchMaxBytesPerPartition':
    'Most bytes fetched per partition at once: the compaction window (more changes per record fold into one write). The sink holds some 8x this in heap for up to 4 partitions at once: keep 4 x 8 x this well under half the container memory.',
  'sink.noopSkip': 'Skip a change whose mapped CRM fields equal what pg2crm last wrote to that record (saves quota).',
  'sink.hashTopic': 'Compacted topic of the written-field hashes for the no-op skip; default `<topicPrefix>.sink-hashes`.',
  'sink.statusTopic':
    'Compacted topic where each sink instance reports paused partitions and budget use (read by `pg2crm status`); default `<topicPrefix>.sink-status`.',
  ops: 'Monitoring.',
  'ops.port': 'Port of `/metrics`, `/healthz`, `/readyz`, the status page `/` and `/api/timeseries` (0 = off).',
  'ops.host': 'Address the ops port listens on: loopback by default; `0.0.0.0` in a container that Prometheus scrapes over its network.',
  'ops.token':
    'Bearer token (16+ characters) required for `/metrics` and `/api/*`; `/healthz` and `/readyz` stay open. The status page takes it from `/status#token=<token>` or asks. Prefer `token_FILE`; empty = none.',
  'ops.logLevel': 'Log level (JSON logs on stdout).',
  'ops.lagIntervalSeconds': 'How often consumer lag and slot lag are sampled into `/metrics`.',
  'ops.slotLagWarnBytes': 'Log a warning when the replication slot holds more WAL than this.',
};

type Json = Record<string, unknown>;

export interface KeyRow {
  path: string;
  type: string;
  required: boolean;
  default: unknown;
  allowed: string;
  description: string | undefined;
}

const MAX_SAFE = Number.MAX_SAFE_INTEGER;

function typeOf(s: Json): string {
  if (Array.isArray(s.anyOf)) return [...new Set((s.anyOf as Json[]).map(typeOf))].join(' | ');
  if (s.type === 'array') return `${typeOf((s.items as Json | undefined) ?? {})}[]`;
  if (s.type === 'object' && !s.properties && s.additionalProperties && typeof s.additionalProperties === 'object') {
    const v = s.additionalProperties as Json;
    return Object.keys(v).length === 0 ? 'map' : v.properties ? 'map of object' : `map of ${typeOf(v)}`;
  }
  if (typeof s.type === 'string') return s.type;
  return 'any';
}

function allowedOf(s: Json): string {
  const parts: string[] = [];
  const enums = (x: Json): unknown[] => (Array.isArray(x.enum) ? (x.enum as unknown[]) : []);
  const values = [...enums(s), ...(Array.isArray(s.items as unknown) ? [] : enums((s.items as Json | undefined) ?? {}))];
  for (const alt of (s.anyOf as Json[] | undefined) ?? []) values.push(...enums(alt));
  if (values.length) parts.push(values.map((v) => `\`${String(v)}\``).join(', '));
  const min = s.minimum as number | undefined;
  const max = s.maximum as number | undefined;
  if (min !== undefined && max !== undefined && max < MAX_SAFE) parts.push(`${min}–${max}`);
  else if (min !== undefined) parts.push(`≥ ${min}`);
  else if (max !== undefined && max < MAX_SAFE) parts.push(`≤ ${max}`);
  if (typeof s.minItems === 'number' && s.minItems > 0) parts.push(`at least ${s.minItems}`);
  if (typeof s.minLength === 'number' && s.minLength > 0) parts.push('non-empty');
  if (typeof s.pattern === 'string') parts.push(`\`${s.pattern}\``);
  if (s.format === 'uri') parts.push('URL');
  return parts.join('; ');
}

function walk(s: Json, path: string, required: boolean, rows: KeyRow[], emit = true): void {
  if (path && emit) {
    rows.push({
      path,
      type: typeOf(s),
      required,
      default: s.default,
      allowed: allowedOf(s),
      description: (typeof s.description === 'string' ? s.description : undefined) ?? DESCRIPTIONS[path],
    });
  }
  const props = s.properties as Record<string, Json> | undefined;
  if (props) {
    const req = new Set((s.required as string[] | undefined) ?? []);
    for (const [k, v] of Object.entries(props)) walk(v, path ? `${path}.${k}` : k, req.has(k), rows);
    return;
  }
  if (s.type === 'array' && s.items && typeof s.items === 'object' && (s.items as Json).properties) {
    // The item itself is no key of its own: its keys follow as `<path>[].<key>`.
    walk(s.items as Json, `${path}[]`, true, rows, false);
    return;
  }
  const values = s.additionalProperties as Json | undefined;
  if (s.type === 'object' && values && typeof values === 'object' && values.properties) {
    const req = new Set((values.required as string[] | undefined) ?? []);
    for (const [k, v] of Object.entries(values.properties as Record<string, Json>)) walk(v, `${path}.<field>.${k}`, req.has(k), rows);
  }
}

/** Every key of the config, in schema order. */
export function configKeys(): KeyRow[] {
  const schema = z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' }) as Json;
  const rows: KeyRow[] = [];
  walk(schema, '', true, rows);
  return rows;
}

function cell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

function defaultText(v: unknown): string {
  if (v === undefined) return '';
  if (typeof v === 'object' && v !== null && !Array.isArray(v)) return Object.keys(v).length === 0 ? '`{}`' : '(see keys)';
  if (Array.isArray(v)) return `\`[${v.join(', ')}]\``;
  return `\`${String(v)}\``;
}

/** The markdown table (without markers). */
export function configReference(): string {
  const lines = [
    '| key | type | default | allowed | description |',
    '|---|---|---|---|---|',
    ...configKeys().map((r) =>
      [`\`${r.path}\``, `${r.type}${r.required ? ', **required**' : ''}`, defaultText(r.default), r.allowed, r.description ?? '']
        .map(cell)
        .join(' | ')
        .replace(/^/, '| ')
        .replace(/$/, ' |'),
    ),
  ];
  return `${lines.join('\n')}\n`;
}

/** `readme` with the text between the markers replaced by the current reference. */
export function withConfigReference(readme: string): string {
  const from = readme.indexOf(START);
  const to = readme.indexOf(END);
  if (from < 0 || to < from) throw new Error(`README.md has no ${START} ... ${END} section; add the two markers where the reference goes`);
  return `${readme.slice(0, from + START.length)}\n${configReference()}${readme.slice(to)}`;
}

export const README_URL = new URL('../README.md', import.meta.url);

if (import.meta.url === `file://${process.argv[1]}`) {
  writeFileSync(README_URL, withConfigReference(readFileSync(README_URL, 'utf8')));
  process.stdout.write('wrote the configuration reference into README.md\n');
}
