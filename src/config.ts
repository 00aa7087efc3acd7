import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConnectorError } from './errors.ts';
import { registerSecrets, secretsOf } from './secrets.ts';

/**
 * The connector's configuration: parsed once, here, and handed out in slices. This is the only
 * module that reads process.env (for `${VAR}` substitution and `*_FILE` secrets).
 */

const identifier = z.string().regex(/^[a-z_][a-z0-9_]*$/, 'use lower-case letters, digits and underscores, starting with a letter or _');

/** `schema.table` or `table` (schema `public`). */
const qualifiedTable = z
  .string()
  .regex(/^([a-z_][a-z0-9_]*\.)?[a-z_][a-z0-9_]*$/, 'write the table as schema.table, e.g. public.customers')
  .transform((t) => (t.includes('.') ? t : `public.${t}`));

const brokers = z
  .union([z.string(), z.array(z.string())])
  .transform((b) => (Array.isArray(b) ? b : b.split(',')).map((s) => s.trim()).filter(Boolean))
  .pipe(z.array(z.string().regex(/^[^:/\s]+:\d+$/, 'write each broker as host:port')).min(1, 'give at least one broker'));

/**
 * PEM material for TLS settings (issue 12 §1). Each key takes the PEM text itself, or `<key>_FILE`
 * with the path of a file holding it (the secrets convention of resolveSecretFiles), e.g.
 * `ca_FILE: /etc/ssl/kafka-ca.pem`.
 */
const pemCertificates = (what: string) =>
  z
    .string()
    .refine(
      (v) => v.includes('-----BEGIN CERTIFICATE-----'),
      `${what} is PEM text (-----BEGIN CERTIFICATE-----); to give a file, write the key with _FILE, e.g. ca_FILE: /path/ca.pem`,
    );
const pemKey = z
  .string()
  .refine(
    (v) => /-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(v),
    'the private key is PEM text (-----BEGIN PRIVATE KEY-----); to give a file, write key_FILE: /path/key.pem',
  );

/** TLS towards a server: extra CAs to trust, and a client certificate for mutual TLS. */
const tlsClientFields = {
  /** CA certificate(s) to trust (PEM): Kafka and the registry trust these instead of the system's, crm.tls in addition to them. */
  ca: pemCertificates('ca').optional(),
  /** Client certificate chain (PEM) for mutual TLS; needs `key`. */
  cert: pemCertificates('cert').optional(),
  /** Private key (PEM) of `cert`. */
  key: pemKey.optional(),
  /** Passphrase of an encrypted `key`. */
  passphrase: z.string().optional(),
};

function checkClientCert(t: { cert?: string | undefined; key?: string | undefined }, at: string, ctx: z.RefinementCtx): void {
  if ((t.cert === undefined) !== (t.key === undefined)) {
    ctx.addIssue({
      code: 'custom',
      path: [t.cert === undefined ? 'cert' : 'key'],
      message: `mutual TLS needs both ${at}.cert and ${at}.key (or cert_FILE and key_FILE)`,
    });
  }
}

/**
 * `postgres.ssl`: libpq's sslmode, mapped to node-postgres' `ssl` for every connection (queries
 * and replication). Set it here, not as `?sslmode=` in postgres.url (node-postgres would let the
 * URL win and reads sslmode=require as verify-full).
 */
const postgresSslSchema = z
  .strictObject({
    /**
     * - `disable`: plaintext;
     * - `require`: encrypted, the server's certificate is not checked (as libpq's require);
     * - `verify-ca`: encrypted, the certificate must chain to `rootCert` (or a system CA), any host name;
     * - `verify-full`: as verify-ca, and the certificate must name the host of postgres.url.
     */
    mode: z.enum(['disable', 'require', 'verify-ca', 'verify-full'], { error: 'use disable, require, verify-ca or verify-full' }),
    /** CA certificate(s) (PEM) that signed the server's certificate; rootCert_FILE for a file. Default: the system's CAs. */
    rootCert: pemCertificates('rootCert').optional(),
    /** Client certificate + key (PEM) when the server asks for one (pg_hba `cert` / clientcert). */
    cert: pemCertificates('cert').optional(),
    key: pemKey.optional(),
  })
  .superRefine((t, ctx) => {
    checkClientCert(t, 'postgres.ssl', ctx);
    if (t.rootCert !== undefined && (t.mode === 'disable' || t.mode === 'require')) {
      ctx.addIssue({
        code: 'custom',
        path: ['rootCert'],
        message: `sslmode ${t.mode} does not check the certificate, so rootCert would be ignored; use mode verify-full (or verify-ca)`,
      });
    }
  });

const postgresSchema = z.strictObject({
  url: z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'use a postgresql:// connection URL')
    .refine((u) => !/[?&]ssl(mode|rootcert|cert|key)?=/i.test(u), 'set TLS in postgres.ssl (mode, rootCert), not as ?sslmode= in the URL'),
  /** TLS to PostgreSQL (see postgresSslSchema); default: plaintext. */
  ssl: postgresSslSchema.optional(),
  tables: z.array(qualifiedTable).min(1, 'list at least one table to capture'),
  slot: identifier.optional(),
  publication: identifier.optional(),
  /**
   * Which operations the publication sends (CREATE PUBLICATION ... WITH (publish = ...)); an
   * existing publication is altered to match. Leave out `delete` and deletes never reach the CRM.
   */
  publish: z
    .array(z.enum(['insert', 'update', 'delete', 'truncate']))
    .min(1, 'publish at least one of insert, update, delete, truncate')
    .refine((ops) => new Set(ops).size === ops.length, 'list each operation once')
    .default(['insert', 'update', 'delete', 'truncate']),
  /**
   * When tables are read in full (op 'r' events), besides `pg2crm snapshot --table` requests, which run in every mode:
   * - `initial`: when the connector creates its replication slot (first start), inside the slot's exported snapshot;
   *   a snapshot cut short by a crash resumes after the last chunk Kafka acknowledged. A slot that lost WAL it
   *   needed (wal_status = lost) stops the connector with an error.
   * - `never`: stream only; no snapshot even when the slot is created.
   * - `when_needed`: as `initial`, and a slot that lost WAL is dropped, recreated and everything snapshotted again.
   */
  snapshot: z.enum(['initial', 'never', 'when_needed']).default('initial'),
  /** Rows per keyset page (chunk) of the initial and incremental snapshots; progress is saved per chunk. */
  snapshotChunkRows: z.number().int().min(1).max(1_000_000).default(5000),
  /** Interval of the logical heartbeat message that keeps an idle slot moving (0 = off). */
  heartbeatSeconds: z.number().min(0).default(10),
  /** Most change events held between the replication stream and Kafka before it is paused. */
  maxBufferedEvents: z.number().int().min(100).default(20_000),
  /**
   * Bound on opening a PostgreSQL connection (TCP, TLS, startup): a server that accepts and never
   * answers fails the command with a clear error instead of hanging it.
   */
  connectTimeoutMs: z.number().int().min(100).default(10_000),
  /**
   * Bound on one statement (statement_timeout; the client stops waiting 5 s later); 0 = none.
   * Not applied to the replication stream, which is long-lived.
   */
  queryTimeoutMs: z.number().int().min(0).default(60_000),
});

/**
 * `kafka.ssl`: TLS to the brokers. `{}` trusts the system's CAs (Confluent Cloud,
 * MSK, Aiven with public CAs); `ca` adds a private CA; `cert` + `key` for mutual TLS.
 */
const kafkaSslSchema = z
  .strictObject(
    {
      ...tlsClientFields,
      /** Check the broker's certificate and host name. Turn off only to try something out: anyone in between can read and change the stream. */
      rejectUnauthorized: z.boolean().default(true),
    },
    {
      error: (issue) =>
        issue.code === 'invalid_type'
          ? 'write kafka.ssl as an object: {} for TLS with the system CAs, or { ca_FILE: /path/ca.pem }'
          : undefined,
    },
  )
  .superRefine((t, ctx) => checkClientCert(t, 'kafka.ssl', ctx));

/** `kafka.sasl`: SASL authentication (with `kafka.ssl`: SASL_SSL; without: SASL_PLAINTEXT). */
const kafkaSaslSchema = z.strictObject({
  mechanism: z.enum(['plain', 'scram-sha-256', 'scram-sha-512'], { error: 'use plain, scram-sha-256 or scram-sha-512' }),
  username: z.string().min(1, 'set the SASL user name'),
  password: z.string().min(1, 'set the SASL password (or password_FILE)'),
});

/** `kafka.schemaRegistry`: its URL carries no credentials (they would be printed and logged). */
const schemaRegistrySchema = z
  .strictObject({
    url: z.url('use an http(s):// URL').refine((u) => {
      try {
        const parsed = new URL(u);
        return parsed.username === '' && parsed.password === '';
      } catch {
        return true;
      }
    }, 'remove the user name and password from the URL (they would be printed and logged) and set kafka.schemaRegistry.username and kafka.schemaRegistry.password (or password_FILE)'),
    /** HTTP basic auth (Confluent Cloud: the API key and secret). */
    username: z.string().min(1).optional(),
    password: z.string().min(1).optional(),
    /** CA certificate(s) (PEM) of an https registry with a private CA; ca_FILE for a file. */
    ca: pemCertificates('ca').optional(),
    /**
     * Compatibility level pg2crm sets on the subjects it creates. pg2crm's sink decodes every
     * message with the schema it was written with, so NONE lets any ALTER TABLE (even a type
     * change) through; choose BACKWARD when other consumers need it, and a breaking ALTER TABLE
     * then stops the source with an error naming the subject.
     */
    compatibility: z
      .enum(['NONE', 'BACKWARD', 'BACKWARD_TRANSITIVE', 'FORWARD', 'FORWARD_TRANSITIVE', 'FULL', 'FULL_TRANSITIVE'])
      .default('NONE'),
  })
  .superRefine((r, ctx) => {
    // Basic auth over plain http hands the password to anyone on the path (loopback aside).
    if (r.username !== undefined && URL.canParse(r.url)) {
      const u = new URL(r.url);
      if (u.protocol === 'http:' && !['localhost', '127.0.0.1', '[::1]'].includes(u.hostname)) {
        ctx.addIssue({
          code: 'custom',
          path: ['url'],
          message:
            "basic auth over http:// sends the password in clear text: use the registry's https:// URL (with ca or ca_FILE for a private CA)",
        });
      }
    }
    if ((r.username === undefined) !== (r.password === undefined)) {
      ctx.addIssue({
        code: 'custom',
        path: [r.username === undefined ? 'username' : 'password'],
        message: 'basic auth needs both kafka.schemaRegistry.username and kafka.schemaRegistry.password (or password_FILE)',
      });
    }
  });

const kafkaSchema = z
  .strictObject({
    brokers,
    clientId: z.string().optional(),
    /** TLS to the brokers (see kafkaSslSchema); default: plaintext. */
    ssl: kafkaSslSchema.optional(),
    /** SASL authentication (see kafkaSaslSchema); default: none. */
    sasl: kafkaSaslSchema.optional(),
    topicPrefix: z.string().regex(/^[A-Za-z0-9._-]+$/, 'Kafka topic names allow letters, digits, ".", "_" and "-"'),
    partitions: z.number().int().min(1).max(10_000).default(3),
    replicationFactor: z.number().int().min(1).default(1),
    groupId: z.string().optional(),
    /**
     * `max.message.bytes` of the topics pg2crm creates. One change event carries a whole row, and
     * Kafka's default (1 MiB) rejects rows with large TOASTed values.
     */
    maxMessageBytes: z
      .number()
      .int()
      .min(1024)
      .default(16 * 1024 * 1024),
    /** Emit a null-value tombstone after each delete so compacted topics drop the key. */
    tombstones: z.boolean().default(true),
    schemaRegistry: schemaRegistrySchema,
  })
  .superRefine((k, ctx) => {
    // SCRAM never sends the password; PLAIN does, so without TLS anyone on the path reads it.
    if (k.sasl?.mechanism === 'plain' && !k.ssl) {
      ctx.addIssue({
        code: 'custom',
        path: ['sasl', 'mechanism'],
        message:
          "SASL PLAIN without kafka.ssl sends the password in clear text: set kafka.ssl (the brokers' SASL_SSL listener), or use scram-sha-256 / scram-sha-512",
      });
    }
  });

const limitsSchema = z.strictObject({
  /** Requests allowed per window for this credential (all instances together). */
  requests: z.number().int().min(1),
  windowSeconds: z.number().min(1),
  /**
   * Quota over a rolling 24 h, in the CRM's own unit: API calls (Salesforce, HubSpot) or credits
   * (Zoho: 1 per 10 records upserted, 500 per Bulk Write job). Unset = no daily cap.
   */
  daily: z.number().int().min(1).optional(),
  /** Requests in flight at once. */
  concurrency: z.number().int().min(1).max(100).default(4),
  /** Fraction of the quota pg2crm may use; keep a little for other tools of the account. */
  utilisation: z.number().min(0.05).max(1).default(1),
  /**
   * Dynamics 365: combined execution time (seconds) allowed per window for this credential (all
   * instances together), counted from pg2crm's own call durations. Default 1,200 per 300 s
   * (Dataverse's service protection limit), scaled with `windowSeconds`. Other CRMs ignore it.
   */
  executionSeconds: z.number().min(0.001).optional(),
});

const crmKinds = ['zendesk-sell', 'salesforce', 'hubspot', 'dynamics', 'zoho'] as const;

/**
 * A CRM credential: `token` (static: Zendesk Sell personal access token, HubSpot private-app
 * token, or any token that does not expire) or an OAuth `flow` (issue 11 §1). Secrets go in
 * `<key>_FILE` (clientSecret_FILE, refreshToken_FILE, privateKey_FILE, token_FILE).
 */
const credentialFields = {
  token: z.string().min(1, 'set the API token (or token_FILE)').optional(),
  flow: z
    .enum(['client_credentials', 'jwt_bearer', 'refresh_token'], { error: 'use client_credentials, jwt_bearer or refresh_token' })
    .optional(),
  /** Token endpoint; defaults per CRM (see checkCredential). */
  tokenUrl: z.url('use the token endpoint URL, e.g. https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token').optional(),
  clientId: z.string().min(1).optional(),
  clientSecret: z.string().min(1).optional(),
  refreshToken: z.string().min(1).optional(),
  /** PEM private key: Salesforce JWT bearer assertion, Dynamics certificate credential. */
  privateKey: z.string().min(1).optional(),
  /** PEM certificate whose key is `privateKey` (Dynamics certificate credential: its thumbprint goes in the assertion). */
  certificate: z.string().min(1).optional(),
  /** Salesforce JWT bearer: the user the integration acts as (`sub`). */
  username: z.string().min(1).optional(),
  /** Dynamics: the Microsoft Entra tenant (id or domain). */
  tenantId: z.string().min(1).optional(),
  /** Dynamics: default `<crm.baseUrl origin>/.default`. */
  scope: z.string().min(1).optional(),
  /** Salesforce JWT bearer `aud`: default the token URL's origin (login.salesforce.com, test.salesforce.com or the My Domain URL). */
  audience: z.string().min(1).optional(),
};

/** Which OAuth flows each CRM offers pg2crm (a static `token` works for every CRM). */
export const CRM_FLOWS: Record<(typeof crmKinds)[number], readonly string[]> = {
  salesforce: ['client_credentials', 'jwt_bearer'],
  dynamics: ['client_credentials'],
  zoho: ['refresh_token'],
  hubspot: ['refresh_token'],
  'zendesk-sell': ['refresh_token'],
};

/**
 * Zoho's accounts server for the data centre of an API domain (www.zohoapis.eu ->
 * https://accounts.zoho.eu): "You must use your domain-specific Zoho Accounts URL"
 * (https://www.zoho.com/assist/api/refresh-access-token.html lists .com, .com.au, .eu, .in, .com.cn, .jp;
 * https://www.zoho.com/fsm/developer/help/api/refresh-token.html adds zohocloud.ca and .sa).
 */
export function zohoAccountsUrl(baseUrl: string): string | undefined {
  const host = new URL(baseUrl).hostname;
  const m = /(?:^|\.)zohoapis\.(com\.au|com\.cn|com|eu|in|jp|sa|ca)$/.exec(host);
  if (!m) return undefined;
  return m[1] === 'ca' ? 'https://accounts.zohocloud.ca' : `https://accounts.zoho.${m[1]}`;
}

type CredentialInput = { [K in keyof typeof credentialFields]?: z.output<(typeof credentialFields)[K]> };

/** What a credential lacks for its CRM and flow: [key, message] pairs (key '' = the credential itself). */
function checkCredential(kind: (typeof crmKinds)[number], baseUrl: string, c: CredentialInput, at: string): [string, string][] {
  const out: [string, string][] = [];
  if (c.token !== undefined && c.flow !== undefined)
    return [['', `set either ${at}.token (a static token) or ${at}.flow (OAuth), not both`]];
  if (c.token === undefined && c.flow === undefined) {
    return [['', `set ${at}.token (a static token, or token_FILE) or ${at}.flow (OAuth: ${CRM_FLOWS[kind].join(' or ')} for ${kind})`]];
  }
  if (c.flow === undefined) return out;
  if (!CRM_FLOWS[kind].includes(c.flow)) return [['flow', `${kind} takes flow ${CRM_FLOWS[kind].join(' or ')} (or a static token)`]];
  const need = (key: keyof CredentialInput, why: string) => {
    if (c[key] === undefined)
      out.push([
        key,
        `${c.flow} needs ${at}.${key}${key === 'clientSecret' || key === 'refreshToken' || key === 'privateKey' ? ` (or ${key}_FILE)` : ''}: ${why}`,
      ]);
  };
  need('clientId', 'the OAuth client (app) id');
  if (c.flow === 'client_credentials') {
    if (kind === 'dynamics' && c.privateKey !== undefined)
      need('certificate', 'the certificate (PEM) registered on the app, whose key is privateKey');
    else
      need(
        'clientSecret',
        kind === 'dynamics' ? "the app registration's client secret (or privateKey + certificate)" : 'the client secret',
      );
    if (kind === 'dynamics' && c.tenantId === undefined && c.tokenUrl === undefined)
      need('tenantId', 'the Microsoft Entra tenant id or domain of the environment');
    if (kind === 'salesforce')
      need(
        'tokenUrl',
        'the My Domain token endpoint, https://<MyDomain>.my.salesforce.com/services/oauth2/token (the client credentials flow is not served by login.salesforce.com)',
      );
  }
  if (c.flow === 'jwt_bearer') {
    need('username', 'the Salesforce user the integration acts as (sub)');
    need('privateKey', 'the PEM private key whose certificate is uploaded to the connected app');
    if (c.privateKey !== undefined && !/-----BEGIN (RSA |ENCRYPTED )?PRIVATE KEY-----/.test(c.privateKey))
      out.push(['privateKey', 'use an unencrypted PEM private key (-----BEGIN PRIVATE KEY-----)']);
  }
  if (c.flow === 'refresh_token') {
    need('clientSecret', 'the client secret');
    need('refreshToken', 'the refresh token the app was granted');
    if (kind === 'zoho' && c.tokenUrl === undefined && zohoAccountsUrl(baseUrl) === undefined) {
      out.push([
        'tokenUrl',
        `crm.baseUrl ${new URL(baseUrl).host} is not a zohoapis domain, so the accounts server is unknown; set ${at}.tokenUrl (e.g. https://accounts.zoho.eu/oauth/v2/token)`,
      ]);
    }
  }
  return out;
}

const crmSchema = z.strictObject({
  kind: z.enum(crmKinds, { error: `unknown CRM kind; supported: ${crmKinds.join(', ')}` }),
  baseUrl: z.url('use the CRM API base URL, e.g. https://api.getbase.com'),
  /**
   * One credential: a static `token`, or an OAuth `flow` whose tokens pg2crm fetches and renews
   * (see credentialFields and checkCredential for what each CRM takes).
   */
  auth: z.strictObject(credentialFields).optional(),
  /**
   * Several credentials instead of `auth`. Tokens with the same `quotaGroup` spend from one bucket
   * (e.g. tokens of one Zendesk Sell account) and share one budget of `limits`; each separate
   * group is a separate bucket with its own `limits`, i.e. more capacity.
   */
  credentials: z
    .array(
      z.strictObject({
        ...credentialFields,
        quotaGroup: z
          .string()
          .regex(/^[A-Za-z0-9._-]+$/, 'use letters, digits, ".", "_" and "-"')
          .default('default'),
      }),
    )
    .min(1, 'list at least one credential')
    .optional(),
  limits: limitsSchema,
  timeoutMs: z.number().int().min(100).default(30_000),
  /**
   * TLS towards the CRM (and its token endpoint) for CRMs behind a corporate proxy that
   * re-signs TLS: `ca` (PEM bundle to trust besides the system's), `cert` + `key` when the
   * proxy wants a client certificate. Each takes `<key>_FILE` for a file.
   */
  tls: z
    .strictObject(tlsClientFields)
    .superRefine((t, ctx) => checkClientCert(t, 'crm.tls', ctx))
    .optional(),
  /**
   * Records in one call from which the adapter uses the CRM's asynchronous bulk API instead of
   * the regular batch API (Salesforce Bulk API 2.0, Zoho Bulk Write); 0 = never. Ignored by CRMs
   * without one.
   */
  bulkThreshold: z.number().int().min(0).default(2000),
  /**
   * How long one asynchronous bulk job (Salesforce Bulk API 2.0, Zoho Bulk Write) may run before
   * the adapter gives up on it; each poll is still one call bounded by `timeoutMs`.
   */
  bulkJobTimeoutMinutes: z
    .number()
    .min(0.01)
    .max(24 * 60)
    .default(30),
  /** API version path segment where the CRM has one (e.g. Salesforce `v62.0`, Zoho `v7`). */
  apiVersion: z.string().optional(),
});

const mappingSchema = z.strictObject({
  table: qualifiedTable,
  object: z.string().min(1),
  externalId: z.strictObject({ column: z.string().min(1), field: z.string().min(1) }),
  fields: z.record(z.string(), z.string()).refine((f) => Object.keys(f).length > 0, 'map at least one field'),
  lookups: z.record(z.string(), z.strictObject({ object: z.string(), column: z.string() })).default({}),
  /** What a DELETE in PostgreSQL does in the CRM. */
  onDelete: z.union([z.enum(['delete', 'ignore']), z.strictObject({ set: z.record(z.string(), z.unknown()) })]).default('delete'),
  priority: z.number().int().min(0).max(9).default(5),
});

const sinkSchema = z
  .strictObject({
    /** Max time a change waits to be batched with others before it is written. */
    lingerMs: z.number().int().min(0).default(200),
    /** Attempts for a transiently failing record before it is dead-lettered. */
    maxAttempts: z.number().int().min(1).default(8),
    /**
     * How long a record may wait for a record it links to (a lookup the CRM cannot resolve yet,
     * `LOOKUP_PENDING`) before it is dead-lettered. Those retries are not attempts: the linked
     * record is usually just behind in another partition (throttled, or its sink restarting).
     */
    lookupPendingSeconds: z.number().int().min(1).default(900),
    /** Topic for records the CRM rejected; default `<topicPrefix>.dlq`. */
    deadLetterTopic: z.string().optional(),
    /**
     * Most bytes fetched per partition at once (Kafka's own default, `max.partition.fetch.bytes`).
     * A fetch is the compaction window: more changes to one record fold into one write. It is
     * also what the sink holds: kafkajs keeps a fetch's messages as objects and each record of it
     * has a compacted write, some 8x the fetched bytes in heap, for up to 4 partitions at once.
     * 8 MiB outgrew a 256 MB container behind a throttle (`npm run bench:memory`).
     */
    fetchMaxBytesPerPartition: z
      .number()
      .int()
      .min(64 * 1024)
      .default(1024 * 1024),
    /**
     * Skip a change whose mapped CRM fields are what pg2crm last wrote to that record. The hashes
     * live in the compacted topic `hashTopic` (default `<topicPrefix>.sink-hashes`).
     */
    noopSkip: z.boolean().default(true),
    hashTopic: z.string().optional(),
    /** Compacted topic where each sink instance reports paused partitions and budget use (read by `pg2crm status`); default `<topicPrefix>.sink-status`. */
    statusTopic: z.string().optional(),
  })
  .default({ lingerMs: 200, maxAttempts: 8, lookupPendingSeconds: 900, noopSkip: true, fetchMaxBytesPerPartition: 1024 * 1024 });

const opsSchema = z
  .strictObject({
    /** Port of /metrics, /healthz, /readyz (0 = off). */
    port: z.number().int().min(0).max(65535).default(0),
    /**
     * Address the ops port listens on. Loopback by default: /metrics and the status page tell
     * anyone who can reach them about the data flow. `0.0.0.0` in a container whose network
     * Prometheus shares (docker-compose.yml sets it).
     */
    host: z.string().min(1).default('127.0.0.1'),
    /**
     * Bearer token required for /metrics, /api/* (and so the status page's data); /healthz and
     * /readyz stay open for probes. Unset or empty (`${PG2CRM_OPS_TOKEN:-}`) = no token.
     * Prefer token_FILE.
     */
    token: z
      .string()
      .optional()
      .transform((t) => (t === '' ? undefined : t))
      .refine((t) => t === undefined || t.length >= 16, 'use an ops token of at least 16 characters (e.g. openssl rand -hex 24)'),
    logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).default('info'),
    /** How often consumer lag and slot lag are sampled into /metrics. */
    lagIntervalSeconds: z.number().min(1).default(10),
    /** Warn when the replication slot holds more WAL than this. */
    slotLagWarnBytes: z
      .number()
      .int()
      .min(0)
      .default(1024 ** 3),
  })
  .default({ port: 0, host: '127.0.0.1', token: undefined, logLevel: 'info', lagIntervalSeconds: 10, slotLagWarnBytes: 1024 ** 3 });

export const configSchema = z
  .strictObject({
    name: identifier,
    postgres: postgresSchema,
    kafka: kafkaSchema,
    crm: crmSchema,
    mappings: z.array(mappingSchema).min(1, 'add at least one mapping'),
    sink: sinkSchema,
    ops: opsSchema,
  })
  .superRefine((cfg, ctx) => {
    if (!cfg.crm.auth === !cfg.crm.credentials) {
      ctx.addIssue({
        code: 'custom',
        path: ['crm', cfg.crm.auth ? 'credentials' : 'auth'],
        message: cfg.crm.auth
          ? 'set either crm.auth (one token) or crm.credentials (several), not both'
          : 'set crm.auth.token (one credential) or crm.credentials (several tokens and their quota groups)',
      });
    }
    const creds: [(string | number)[], string, CredentialInput][] = cfg.crm.credentials
      ? cfg.crm.credentials.map((c, i) => [['crm', 'credentials', i], `crm.credentials.${i}`, c])
      : cfg.crm.auth
        ? [[['crm', 'auth'], 'crm.auth', cfg.crm.auth]]
        : [];
    for (const [path, at, c] of creds) {
      for (const [key, message] of checkCredential(cfg.crm.kind, cfg.crm.baseUrl, c, at)) {
        ctx.addIssue({ code: 'custom', path: key ? [...path, key] : path, message });
      }
    }
    const tables = new Set(cfg.postgres.tables);
    const objects = new Map(cfg.mappings.map((m) => [m.object, m]));
    cfg.mappings.forEach((m, i) => {
      if (!tables.has(m.table)) {
        ctx.addIssue({
          code: 'custom',
          path: ['mappings', i, 'table'],
          message: `table ${m.table} is not captured; add it to postgres.tables`,
        });
      }
      for (const [field, lookup] of Object.entries(m.lookups)) {
        if (!objects.has(lookup.object)) {
          ctx.addIssue({
            code: 'custom',
            path: ['mappings', i, 'lookups', field, 'object'],
            message: `no mapping writes object ${lookup.object}; add one or remove this lookup`,
          });
        }
      }
    });
  })
  .transform((cfg) => ({
    ...cfg,
    postgres: {
      ...cfg.postgres,
      slot: cfg.postgres.slot ?? `pg2crm_${cfg.name}`,
      publication: cfg.postgres.publication ?? `pg2crm_${cfg.name}`,
    },
    // Every credential as a list, each named by where it is configured (for messages); `auth` is
    // the first, for what needs one (check, dlq replay, an adapter built from the config alone).
    crm: ((credentials: CrmCredential[]) => ({ ...cfg.crm, credentials, auth: credentials[0]! }))(
      cfg.crm.credentials
        ? cfg.crm.credentials.map((c, i) => ({ ...c, name: `crm.credentials[${i}]` }))
        : cfg.crm.auth
          ? [{ ...cfg.crm.auth, quotaGroup: 'default', name: 'crm.auth' }]
          : [],
    ),
    kafka: {
      ...cfg.kafka,
      clientId: cfg.kafka.clientId ?? `pg2crm-${cfg.name}`,
      groupId: cfg.kafka.groupId ?? `pg2crm-${cfg.name}-sink`,
    },
    sink: {
      ...cfg.sink,
      deadLetterTopic: cfg.sink.deadLetterTopic ?? `${cfg.kafka.topicPrefix}.dlq`,
      hashTopic: cfg.sink.hashTopic ?? `${cfg.kafka.topicPrefix}.sink-hashes`,
      statusTopic: cfg.sink.statusTopic ?? `${cfg.kafka.topicPrefix}.sink-status`,
    },
    // A lookup finds the other record by the external-id field its own mapping writes.
    mappings: cfg.mappings.map((m) => ({
      ...m,
      lookups: Object.fromEntries(
        Object.entries(m.lookups).map(([field, l]) => [
          field,
          { ...l, externalIdField: cfg.mappings.find((o) => o.object === l.object)?.externalId.field ?? '' },
        ]),
      ),
    })),
  }));

export type Config = z.output<typeof configSchema>;
export type PostgresConfig = Config['postgres'];
export type KafkaConfig = Config['kafka'];
export type CrmConfig = Config['crm'];
/** One credential as the adapters get it: the fields of `crm.auth`, its quota group and where it is configured. */
export type CrmCredential = CredentialInput & { quotaGroup: string; name: string };
export type MappingConfig = Config['mappings'][number];
export type SinkConfig = Config['sink'];

type Env = Record<string, string | undefined>;

/**
 * Replaces `${VAR}` and `${VAR:-default}` in every string of the parsed document. A missing
 * variable without a default is an error naming the variable and where it was used.
 */
export function substituteEnv(value: unknown, env: Env, path: string[] = []): unknown {
  if (typeof value === 'string') {
    const out = substituteString(value, env, path);
    // A scalar that is one placeholder takes the type its value has in YAML (`${PORT:-8080}` is a
    // number), as it would had the value been written in place.
    if (/^\$\{[^}]*\}$/.test(value)) {
      const typed: unknown = parseYaml(out);
      if (typeof typed === 'number' || typeof typed === 'boolean') return typed;
    }
    return out;
  }
  if (Array.isArray(value)) return value.map((v, i) => substituteEnv(v, env, [...path, String(i)]));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = substituteEnv(v, env, [...path, k]);
    return out;
  }
  return value;
}

function substituteString(value: string, env: Env, path: string[]): string {
  return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}/g, (_m, name: string, hasDefault, def: string) => {
    const v = env[name];
    if (v !== undefined && v !== '') return v;
    // `${NAME}` with NAME_FILE set reads the file (compose/Kubernetes secrets, as the postgres image does).
    const file = env[`${name}_FILE`];
    if (file !== undefined && file !== '') return readEnvSecretFile(name, file, path);
    if (hasDefault !== undefined) return def;
    throw new ConnectorError(
      'CONFIG_ENV_MISSING',
      `config ${path.join('.') || '(root)'}: environment variable ${name} is not set; export it or write \${${name}:-default}`,
    );
  });
}

function readEnvSecretFile(name: string, file: string, path: string[]): string {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch (err) {
    throw new ConnectorError(
      'CONFIG_SECRET_FILE',
      `config ${path.join('.') || '(root)'}: cannot read ${name}_FILE ${file}; check that it exists and is readable`,
      { cause: err },
    );
  }
}

/**
 * `<key>_FILE: /run/secrets/x` becomes `<key>: <file contents, trimmed>` (Docker/Kubernetes
 * secrets convention), so tokens never need to be in the config file or the environment.
 */
export function resolveSecretFiles(value: unknown, path: string[] = []): unknown {
  if (Array.isArray(value)) return value.map((v, i) => resolveSecretFiles(v, [...path, String(i)]));
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    if (k.endsWith('_FILE') && typeof v === 'string') {
      const key = k.slice(0, -'_FILE'.length);
      try {
        out[key] = readFileSync(v, 'utf8').trim();
      } catch (err) {
        throw new ConnectorError(
          'CONFIG_SECRET_FILE',
          `config ${[...path, k].join('.')}: cannot read secret file ${v}; check that it exists and is readable`,
          { cause: err },
        );
      }
    } else {
      out[k] = resolveSecretFiles(v, [...path, k]);
    }
  }
  return out;
}

/** The value at `path` in what was parsed (undefined when any step is missing). */
function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let at = input;
  for (const key of path) {
    if (at === null || typeof at !== 'object') return undefined;
    at = (at as Record<PropertyKey, unknown>)[key];
  }
  return at;
}

/** `input`: what was parsed, to tell a missing key (nothing at the issue's path) from a wrong type. */
export function formatIssues(error: z.ZodError, input: unknown): string {
  return error.issues
    .map((issue) => {
      const where = issue.path.length ? issue.path.join('.') : '(root)';
      let msg = issue.message;
      if (issue.code === 'unrecognized_keys') msg = `unknown key(s) ${issue.keys.join(', ')}: remove them or check the spelling`;
      if (issue.code === 'invalid_type' && valueAt(input, issue.path) === undefined) msg = `missing required key (${issue.expected})`;
      return `  - ${where}: ${msg}`;
    })
    .join('\n');
}

export function parseConfig(raw: unknown, env: Env = process.env, source = 'config'): Config {
  const substituted = resolveSecretFiles(substituteEnv(raw, env));
  const result = configSchema.safeParse(substituted);
  if (!result.success) {
    throw new ConnectorError('CONFIG_INVALID', `invalid ${source}:\n${formatIssues(result.error, substituted)}`);
  }
  // From here on, logs, error messages and dead letters are scrubbed of these values.
  // Not the mappings: their keys are CRM field names the user chose (a field may well be called
  // `key` or `token`), never credentials; masking them would hide column names in every message.
  const { mappings: _fieldNames, ...credentialsLiveHere } = result.data;
  registerSecrets(secretsOf(credentialsLiveHere));
  return result.data;
}

export function loadConfig(file: string, env: Env = process.env): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConnectorError('CONFIG_NOT_FOUND', `cannot read config file ${file}; check the --config path`, { cause: err });
  }
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new ConnectorError('CONFIG_SYNTAX', `config file ${file} is not valid YAML/JSON: ${(err as Error).message}`, { cause: err });
  }
  return parseConfig(raw, env, `config file ${file}`);
}

/** Settings taken from the environment by tools (stack, tests); config.ts is their one reader. */
export function envSetting(
  name: 'PG_URL' | 'KAFKA_BROKERS' | 'SCHEMA_REGISTRY_URL' | 'PG2CRM_STACK_DIR' | 'PG2CRM_CACHE_DIR' | 'PG2CRM_STACK_PORT_BASE',
): string | undefined {
  const v = process.env[name];
  return v === undefined || v === '' ? undefined : v;
}
