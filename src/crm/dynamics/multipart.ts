import { randomUUID } from 'node:crypto';

/**
 * OData `$batch` bodies as Dataverse reads and writes them (OData 4.0 part 1, 11.7 "Batch
 * Requests"; https://learn.microsoft.com/power-apps/developer/data-platform/webapi/execute-batch-operations-using-web-api):
 *
 *   --batch_<id>                                 one MIME part per operation
 *   Content-Type: application/http
 *   Content-Transfer-Encoding: binary
 *                                                blank line, then a whole HTTP message
 *   PATCH /api/data/v9.2/contacts(erp_id='42') HTTP/1.1
 *   Content-Type: application/json
 *
 *   {"lastname":"Smith"}
 *   --batch_<id>--                               close delimiter
 *
 * A part may instead be a change set: `Content-Type: multipart/mixed; boundary=changeset_<id>`
 * holding operations that succeed or fail together. Responses mirror requests, one part per
 * operation, in order, each an HTTP status line, headers and a body. Lines end in CRLF (RFC 2046);
 * the parser also takes bare LF, which hand-written batches often use.
 */

const CRLF = '\r\n';

export interface BatchOperation {
  method: string;
  /** Absolute path (`/api/data/v9.2/contacts(...)`), absolute URL, or relative to the service root. */
  url: string;
  headers?: Record<string, string>;
  body?: string;
  contentId?: string;
}

export interface BatchItemResponse {
  status: number;
  statusText?: string;
  /** Header names in lower case. */
  headers: Record<string, string>;
  body: string;
  contentId?: string;
}

export type BatchRequestItem = BatchOperation | { changeset: BatchOperation[] };
export type BatchResponseItem = BatchItemResponse | { changeset: BatchItemResponse[] };

interface MimePart {
  headers: Record<string, string>;
  body: string;
}

const STATUS_TEXT: Record<number, string> = {
  200: 'OK',
  201: 'Created',
  204: 'No Content',
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  412: 'Precondition Failed',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

export function newBoundary(prefix: 'batch' | 'changeset' | 'batchresponse' | 'changesetresponse'): string {
  return `${prefix}_${randomUUID()}`;
}

/** The `boundary` parameter of a multipart Content-Type, quoted or not; undefined when absent. */
export function boundaryOf(contentType: string | undefined): string | undefined {
  if (!contentType || !/^\s*multipart\/mixed\b/i.test(contentType)) return undefined;
  const m = /;\s*boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType);
  return m ? (m[1] ?? m[2]) : undefined;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Splits a block of `Name: value` lines (names lower-cased) from what follows the first blank line. */
function splitHead(text: string): { head: string[]; rest: string } {
  const m = /\r?\n\r?\n/.exec(text);
  const headText = m ? text.slice(0, m.index) : text;
  const rest = m ? text.slice(m.index + m[0].length) : '';
  return { head: headText === '' ? [] : headText.split(/\r?\n/), rest };
}

function parseHeaderLines(lines: string[]): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const i = line.indexOf(':');
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  return headers;
}

/** The parts of a multipart body; throws when the close delimiter is missing (a truncated body). */
export function splitMultipart(text: string, boundary: string): MimePart[] {
  // A delimiter is `--boundary` at the start of a line; the line break before it belongs to it.
  const re = new RegExp(`(?:^|\\r?\\n)--${escapeRegExp(boundary)}(--)?[ \\t]*(?=\\r?\\n|$)`, 'g');
  const parts: MimePart[] = [];
  let start = -1;
  let closed = false;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    if (start >= 0) {
      const raw = text.slice(start, m.index).replace(/^\r?\n/, '');
      const { head, rest } = splitHead(raw);
      parts.push({ headers: parseHeaderLines(head), body: rest });
    }
    if (m[1]) {
      closed = true;
      break;
    }
    start = re.lastIndex;
  }
  if (!closed) throw new Error(`multipart body has no close delimiter --${boundary}--`);
  return parts;
}

/** An `application/http` part's message: request line or status line, headers, body. */
function parseHttpMessage(text: string): { line: string; headers: Record<string, string>; body: string } {
  const { head, rest } = splitHead(text.replace(/^(\r?\n)+/, ''));
  const [line = '', ...headerLines] = head;
  return { line, headers: parseHeaderLines(headerLines), body: rest.replace(/(\r?\n)+$/, '') };
}

function httpPart(message: string, contentId?: string): string {
  return [
    'Content-Type: application/http',
    'Content-Transfer-Encoding: binary',
    ...(contentId !== undefined ? [`Content-ID: ${contentId}`] : []),
    '',
    message,
  ].join(CRLF);
}

function httpMessage(startLine: string, headers: Record<string, string> | undefined, body: string | undefined): string {
  const lines = [startLine, ...Object.entries(headers ?? {}).map(([k, v]) => `${k}: ${v}`), ''];
  return lines.join(CRLF) + CRLF + (body ?? '') + CRLF;
}

function assemble(boundary: string, parts: string[]): string {
  return `${parts.map((p) => `--${boundary}${CRLF}${p}${CRLF}`).join('')}--${boundary}--${CRLF}`;
}

function operationPart(op: BatchOperation): string {
  const headers = { ...op.headers };
  if (op.body !== undefined && !Object.keys(headers).some((h) => h.toLowerCase() === 'content-type')) {
    headers['Content-Type'] = 'application/json';
  }
  return httpPart(httpMessage(`${op.method} ${op.url} HTTP/1.1`, headers, op.body), op.contentId);
}

function responsePart(r: BatchItemResponse): string {
  const text = r.statusText ?? STATUS_TEXT[r.status] ?? '';
  return httpPart(httpMessage(`HTTP/1.1 ${r.status} ${text}`.trimEnd(), r.headers, r.body), r.contentId);
}

function isChangeset<T>(item: T | { changeset: T[] }): item is { changeset: T[] } {
  return typeof item === 'object' && item !== null && 'changeset' in item;
}

/** A `$batch` request body; send it with `Content-Type: multipart/mixed; boundary=<boundary>`. */
export function buildBatchRequest(boundary: string, items: BatchRequestItem[]): string {
  return assemble(
    boundary,
    items.map((item) => {
      if (!isChangeset(item)) return operationPart(item);
      const cs = newBoundary('changeset');
      return `Content-Type: multipart/mixed; boundary=${cs}${CRLF}${CRLF}${assemble(cs, item.changeset.map(operationPart))}`;
    }),
  );
}

/** A `$batch` response body; served with `Content-Type: multipart/mixed; boundary=<boundary>`. */
export function buildBatchResponse(boundary: string, items: BatchResponseItem[]): string {
  return assemble(
    boundary,
    items.map((item) => {
      if (!isChangeset(item)) return responsePart(item);
      const cs = newBoundary('changesetresponse');
      return `Content-Type: multipart/mixed; boundary=${cs}${CRLF}${CRLF}${assemble(cs, item.changeset.map(responsePart))}`;
    }),
  );
}

function nested<T>(part: MimePart, leaf: (p: MimePart) => T): T | { changeset: T[] } {
  const inner = boundaryOf(part.headers['content-type']);
  if (inner) return { changeset: splitMultipart(part.body, inner).map(leaf) };
  return leaf(part);
}

function toOperation(part: MimePart): BatchOperation {
  const msg = parseHttpMessage(part.body);
  const m = /^([A-Z]+)\s+(\S+)(?:\s+HTTP\/\d\.\d)?$/.exec(msg.line.trim());
  if (!m) throw new Error(`batch part has no request line: ${msg.line.slice(0, 80)}`);
  return {
    method: m[1]!,
    url: m[2]!,
    headers: msg.headers,
    ...(msg.body !== '' ? { body: msg.body } : {}),
    ...(part.headers['content-id'] !== undefined ? { contentId: part.headers['content-id'] } : {}),
  };
}

function toResponse(part: MimePart): BatchItemResponse {
  const msg = parseHttpMessage(part.body);
  const m = /^HTTP\/\d\.\d\s+(\d{3})\s*(.*)$/.exec(msg.line.trim());
  if (!m) throw new Error(`batch response part has no status line: ${msg.line.slice(0, 80)}`);
  return {
    status: Number(m[1]),
    statusText: m[2]!,
    headers: msg.headers,
    body: msg.body,
    ...(part.headers['content-id'] !== undefined ? { contentId: part.headers['content-id'] } : {}),
  };
}

export function parseBatchRequest(text: string, boundary: string): BatchRequestItem[] {
  return splitMultipart(text, boundary).map((p) => nested(p, toOperation));
}

/** The responses in order, change-set responses flattened into the sequence. */
export function parseBatchResponse(text: string, boundary: string): BatchItemResponse[] {
  return splitMultipart(text, boundary).flatMap((p) => {
    const item = nested(p, toResponse);
    return isChangeset(item) ? item.changeset : [item];
  });
}
