import tlsModule from 'node:tls';
import { Agent, type Dispatcher, Pool, fetch as undiciFetch } from 'undici';
import type { CrmConfig } from '../config.ts';
import { ConnectorError, errorMessage } from '../errors.ts';
import { VERSION } from '../version.ts';
import { CERTIFICATE_ERROR_CODES } from '../tls-errors.ts';
import type { RateSignal, WriteOutcome } from './crm-adapter.ts';

/**
 * Sent with every CRM request. Zendesk refuses requests without one (400 `invalid_user_agent`,
 * https://developer.zendesk.com/api-reference/introduction/requests/#user-agent); for the
 * others it names pg2crm in the CRM's API logs.
 */
export const USER_AGENT = `pg2crm/${VERSION}`;

/**
 * The HTTP plumbing every CRM adapter shares. A request that does not get an answer (connection
 * refused, timeout, a body cut off) is a retriable `CRM_UNREACHABLE` naming the request; what an
 * answer means (throttle, auth, per-record errors) is each adapter's business.
 */
export type HttpHeaders = Record<string, string | string[] | undefined>;

/** `crm.tls`: a CA bundle to trust and/or a client certificate, for CRMs behind a proxy that re-signs TLS. */
export type CrmTls = CrmConfig['tls'];

/**
 * `crm.tls` as undici's connect options. `ca` is added to Node's built-in CAs, not put in their
 * place: a proxy that re-signs only some hosts still lets the others through with their public
 * certificates.
 */
export function crmTlsOptions(tls: CrmTls): { ca?: string[]; cert?: string; key?: string; passphrase?: string } | undefined {
  if (!tls) return undefined;
  return {
    ...(tls.ca ? { ca: [...tlsRootCertificates(), tls.ca] } : {}),
    ...(tls.cert && tls.key ? { cert: tls.cert, key: tls.key } : {}),
    ...(tls.passphrase ? { passphrase: tls.passphrase } : {}),
  };
}

let rootCertificates: readonly string[] | undefined;
function tlsRootCertificates(): readonly string[] {
  // node:tls's list, read once (it is a few hundred certificates).
  rootCertificates ??= tlsModule.rootCertificates;
  return rootCertificates;
}

/** The connection pool of one CRM origin, with `crm.tls` when set. Every adapter makes its pools here. */
export function crmPool(origin: string, tls: CrmTls, opts: { connections: number; keepAliveTimeout: number }): Pool {
  const connect = crmTlsOptions(tls);
  return new Pool(origin, { ...opts, ...(connect ? { connect } : {}) });
}

const tlsAgents = new WeakMap<object, Agent>();

/**
 * fetch for calls outside the pools (OAuth token endpoints): with `crm.tls`, undici's own fetch
 * over an Agent that has it (the global fetch is Node's bundled undici, which need not accept
 * an Agent of the npm package's version); without, the global fetch.
 */
export function crmFetch(tls: CrmTls): typeof globalThis.fetch {
  const connect = crmTlsOptions(tls);
  if (!tls || !connect) return globalThis.fetch;
  let agent = tlsAgents.get(tls);
  if (!agent) tlsAgents.set(tls, (agent = new Agent({ connect })));
  const dispatcher = agent;
  return ((input: string | URL, init?: RequestInit) =>
    undiciFetch(input, { ...(init as Parameters<typeof undiciFetch>[1]), dispatcher })) as unknown as typeof globalThis.fetch;
}

export interface HttpAnswer {
  status: number;
  headers: HttpHeaders;
  text: string;
  /** The body's bytes, when the request asked for `binary` (then `text` is empty). */
  bytes?: Buffer;
}

export async function send(
  pool: Pool,
  req: {
    method: string;
    path: string;
    headers: Record<string, string>;
    body?: string | Buffer | undefined;
    timeoutMs: number;
    what: string;
    /** Aborts the call early (e.g. the connector stopping); ends as a retriable CRM_UNREACHABLE. */
    signal?: AbortSignal | undefined;
    /** The body is binary (a zip download): keep its bytes, not text. */
    binary?: boolean;
  },
): Promise<HttpAnswer> {
  // undici's headersTimeout/bodyTimeout bound the gap between bytes: a server trickling its body
  // keeps a call alive for as long as it likes. One deadline over the whole call (connect,
  // headers and the full body) is what `crm.timeoutMs` promises, and what bounds a stop.
  const deadline = AbortSignal.timeout(req.timeoutMs);
  const signal = req.signal ? AbortSignal.any([deadline, req.signal]) : deadline;
  const failure = (err: unknown, stage: string): ConnectorError => {
    const code = (err as { code?: unknown } | null)?.code;
    if (deadline.aborted || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
      return new ConnectorError(
        'CRM_TIMEOUT',
        `${req.what}: no complete answer within crm.timeoutMs (${req.timeoutMs} ms); the CRM or the network is slow, raise crm.timeoutMs if its answers are legitimately this slow`,
        { retriable: true, cause: err },
      );
    }
    if (req.signal?.aborted)
      return new ConnectorError('CRM_UNREACHABLE', `${req.what}: aborted (${stage}): the connector is stopping`, {
        retriable: true,
        cause: err,
      });
    const tls = untrustedCertificate(err);
    if (tls) {
      return new ConnectorError(
        'CRM_TLS',
        `${req.what} failed: the CRM's TLS certificate is not trusted (${tls}); if a corporate proxy re-signs TLS, set crm.tls.ca (or ca_FILE) to its CA bundle`,
        { retriable: true, cause: err },
      );
    }
    return new ConnectorError(
      'CRM_UNREACHABLE',
      `${req.what}${stage === 'request' ? ' failed' : ': the response was cut off'}: ${errorMessage(err)}`,
      { retriable: true, cause: err },
    );
  };
  let res: Dispatcher.ResponseData;
  try {
    res = await pool.request({
      method: req.method as Dispatcher.HttpMethod,
      path: req.path,
      headers: { 'user-agent': USER_AGENT, ...req.headers },
      ...(req.body !== undefined ? { body: req.body } : {}),
      headersTimeout: req.timeoutMs,
      bodyTimeout: req.timeoutMs,
      signal,
    });
  } catch (err) {
    throw failure(err, 'request');
  }
  try {
    if (req.binary) return { status: res.statusCode, headers: res.headers, text: '', bytes: Buffer.from(await res.body.arrayBuffer()) };
    return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
  } catch (err) {
    throw failure(err, 'body');
  }
}

/** The code of a certificate Node's TLS did not trust (the error or its cause), else undefined. */
export function untrustedCertificate(err: unknown): string | undefined {
  for (
    let x = err as { code?: unknown; cause?: unknown } | undefined, i = 0;
    x && typeof x === 'object' && i < 4;
    x = x.cause as typeof x, i++
  ) {
    if (typeof x.code === 'string' && CERTIFICATE_ERROR_CODES.has(x.code)) return x.code;
  }
  return undefined;
}

/** A JSON API's answer: the body parsed (`safeJson`), undefined when empty. */
export interface JsonAnswer {
  status: number;
  headers: HttpHeaders;
  body: unknown;
}

/** `send` for JSON APIs with a bearer token: the body serialized, the answer parsed. */
export async function sendJson(
  pool: Pool,
  req: { method: string; path: string; token: string; body: unknown; timeoutMs: number; what: string },
): Promise<JsonAnswer> {
  const res = await send(pool, {
    method: req.method,
    path: req.path,
    headers: {
      authorization: `Bearer ${req.token}`,
      accept: 'application/json',
      ...(req.body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    body: req.body !== undefined ? JSON.stringify(req.body) : undefined,
    timeoutMs: req.timeoutMs,
    what: req.what,
  });
  return { status: res.status, headers: res.headers, body: res.text ? safeJson(res.text) : undefined };
}

/** A JSON object (not null, not an array): the first check of every documented answer shape. */
export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * An answer that is not the CRM's documented shape (HTML from a proxy, truncated JSON, an empty
 * body, a missing id) is not a success: retriable, and counted by the circuit breaker like a 5xx.
 * `what` names the request, `expected` the documented shape; the body is quoted short.
 */
export function badResponse(what: string, status: number, text: string, expected: string): ConnectorError {
  const quoted = text.length === 0 ? 'an empty body' : JSON.stringify(text.length > 120 ? `${text.slice(0, 120)}…` : text);
  return new ConnectorError(
    'CRM_BAD_RESPONSE',
    `${what}: HTTP ${status} with ${quoted}, expected ${expected}; the CRM or a proxy in front of it answered something else`,
    { retriable: true },
  );
}

/** Longest wait a Retry-After may ask for (Zendesk Sell's documented lockout is an hour). */
export const RETRY_AFTER_CAP_SECONDS = 24 * 3600;

/**
 * The one Retry-After parser: delay-seconds or an HTTP-date
 * (https://www.rfc-editor.org/rfc/rfc9110#field.retry-after), finite, not negative, capped at
 * RETRY_AFTER_CAP_SECONDS; undefined when absent or unreadable, so the caller's default applies.
 */
export function parseRetryAfter(value: string | number | undefined | null, now = Date.now()): number | undefined {
  if (value === undefined || value === null) return undefined;
  const text = String(value).trim();
  if (text === '') return undefined;
  let seconds: number;
  if (/^\d+(\.\d+)?$/.test(text)) seconds = Number(text);
  else {
    // Every HTTP-date form ends in GMT; Date.parse alone would read "-5" as a year.
    if (!/GMT$/.test(text)) return undefined;
    const at = Date.parse(text);
    if (!Number.isFinite(at)) return undefined;
    seconds = Math.max(0, Math.ceil((at - now) / 1000));
  }
  return Number.isFinite(seconds) ? Math.min(seconds, RETRY_AFTER_CAP_SECONDS) : undefined;
}

/** A response header (undici lower-cases names; a repeated header counts by its first value). */
export function header(headers: HttpHeaders, name: string): string | undefined {
  const v = headers[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

/** The wait a throttled answer asks for: its Retry-After, else the vendor's documented wait. */
export function throttleWait(headers: HttpHeaders, defaultSeconds?: number, now?: number): number | undefined {
  return parseRetryAfter(header(headers, 'retry-after'), now) ?? defaultSeconds;
}

/** A per-record retry outcome. */
export type RetryOutcome = Extract<WriteOutcome, { status: 'retry' }>;

/**
 * The one path of a throttle from a CRM's answer to the pause: the wait is read once from
 * Retry-After (parseRetryAfter), else the vendor's documented wait (`defaultSeconds`, which may
 * itself depend on the answer: Salesforce's limit named in the body, HubSpot's DAILY policy,
 * Zoho's credits left), and the same number goes to the budget (`onSignal`, with the rest of
 * the answer's rate information in `signal`) and into the records' outcome, so the pause the
 * budget takes and the one the records ask for cannot disagree. Without either, neither carries
 * a wait (the budget's own backoff applies).
 */
export function throttled(
  headers: HttpHeaders,
  opts: { message: string; onSignal: (s: RateSignal) => void; defaultSeconds?: number | undefined; signal?: RateSignal; now?: number },
): RetryOutcome {
  const wait = throttleWait(headers, opts.defaultSeconds, opts.now);
  const after = wait !== undefined ? { retryAfterSeconds: wait } : {};
  opts.onSignal({ ...opts.signal, throttled: true, ...after });
  return { status: 'retry', code: 'RATE_LIMITED', kind: 'throttle', message: opts.message, ...after };
}

/**
 * A throttle that ends a whole call (the adapter cannot go on with the rest): a retriable
 * RATE_LIMITED ConnectorError that carries the outcome `throttled` built, so the records left
 * get that outcome and its wait, the one the budget was given.
 */
export class ThrottledCall extends ConnectorError {
  readonly outcome: RetryOutcome;
  constructor(outcome: RetryOutcome) {
    super('RATE_LIMITED', outcome.message, {
      retriable: true,
      ...(outcome.retryAfterSeconds !== undefined ? { retryAfterSeconds: outcome.retryAfterSeconds } : {}),
    });
    this.outcome = outcome;
  }
}

/** The body as JSON, or as the text itself when it is not JSON (error pages, CSV). */
export function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
