import type { Dispatcher, Pool } from 'undici';
import { ConnectorError, errorMessage } from '../errors.ts';

/**
 * The HTTP plumbing every CRM adapter shares. A request that does not get an answer (connection
 * refused, timeout, a body cut off) is a retriable `CRM_UNREACHABLE` naming the request; what an
 * answer means (throttle, auth, per-record errors) is each adapter's business.
 */
export type HttpHeaders = Record<string, string | string[] | undefined>;

export interface HttpAnswer {
  status: number;
  headers: HttpHeaders;
  text: string;
}

export async function send(
  pool: Pool,
  req: { method: string; path: string; headers: Record<string, string>; body?: string | Buffer | undefined; timeoutMs: number; what: string },
): Promise<HttpAnswer> {
  let res;
  try {
    res = await pool.request({
      method: req.method as Dispatcher.HttpMethod,
      path: req.path,
      headers: req.headers,
      ...(req.body !== undefined ? { body: req.body } : {}),
      headersTimeout: req.timeoutMs,
      bodyTimeout: req.timeoutMs,
    });
  } catch (err) {
    throw new ConnectorError('CRM_UNREACHABLE', `${req.what} failed: ${errorMessage(err)}`, { retriable: true, cause: err });
  }
  try {
    return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
  } catch (err) {
    throw new ConnectorError('CRM_UNREACHABLE', `${req.what}: the response was cut off: ${errorMessage(err)}`, { retriable: true, cause: err });
  }
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

/** A response header (undici lower-cases names; a repeated header counts by its first value). */
export function header(headers: HttpHeaders, name: string): string | undefined {
  const v = headers[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

/** The body as JSON, or as the text itself when it is not JSON (error pages, CSV). */
export function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
