import { afterEach, expect } from 'vitest';
import type { WriteOutcome } from '../../../src/crm/crm-adapter.ts';
import type { CrmSimulator } from '../../../src/crm/sim-server.ts';
import { type GarbageProxy, garbageProxy, rewriteProxy } from '../../helpers/garbage-proxy.ts';

/**
 * What the adapter unit tests share: requests to a simulator as a client sends them, and the
 * checks of answers that are not the CRM's (issue 10, defect 3).
 */

/**
 * What the tests of a file open, closed after each test: proxies, then adapters, then the
 * simulator (the proxies and adapters talk to it). Tests push to `proxies` and `adapters`;
 * `started(s)` records the simulator a test started and hands it back.
 */
export function closedAfterEach<A extends { close(): Promise<void> }>(): {
  proxies: GarbageProxy[];
  adapters: A[];
  started(s: CrmSimulator): CrmSimulator;
} {
  let sim: CrmSimulator | undefined;
  const proxies: GarbageProxy[] = [];
  const adapters: A[] = [];
  afterEach(async () => {
    for (const p of proxies.splice(0)) await p.close();
    for (const a of adapters.splice(0)) await a.close();
    await sim?.close();
    sim = undefined;
  });
  return {
    proxies,
    adapters,
    started(s) {
      sim = s;
      return s;
    },
  };
}

/** A request to a simulator with a bearer token (Zoho's scheme is its own: `scheme`). */
export function simCall(
  s: CrmSimulator,
  method: string,
  path: string,
  body?: unknown,
  token = 'sim-token',
  contentType = 'application/json',
  scheme = 'Bearer',
) {
  return fetch(`${s.url}${path}`, {
    method,
    headers: { authorization: `${scheme} ${token}`, 'content-type': contentType },
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  });
}

/** A simulator's control endpoint (`/__sim/...`), read as JSON. */
export async function simJson<T>(s: CrmSimulator, path: string): Promise<T> {
  return (await (await fetch(`${s.url}${path}`)).json()) as T;
}

/** The garbage a proxy or a broken CRM answers with, as the simulators' `garbage` fault sends it. */
export const GARBAGE_KINDS = ['html', 'truncated', 'empty'] as const;
export type GarbageKind = (typeof GARBAGE_KINDS)[number];

/** Arms the simulator's `garbage` fault: its next `requests` answers are a 200 with `kind`. */
export function armGarbage(s: CrmSimulator, kind: GarbageKind, requests = 1) {
  return fetch(`${s.url}/__sim/faults`, { method: 'POST', body: JSON.stringify({ garbage: { requests, kind } }) });
}

/** The write either threw CRM_BAD_RESPONSE or retried every record with it; nothing is done. */
export async function expectBad(p: Promise<WriteOutcome[]>, label = ''): Promise<void> {
  let out: WriteOutcome[];
  try {
    out = await p;
  } catch (err) {
    expect(err).toMatchObject({ code: 'CRM_BAD_RESPONSE', retriable: true });
    return;
  }
  expect(out.map((o) => `${label}${o.status === 'retry' ? `${o.code}/${o.kind}` : o.status}`)).toEqual(
    out.map(() => `${label}CRM_BAD_RESPONSE/bad-response`),
  );
}

/** Each outcome as `code/kind` (a retry) or its status: one line to compare a whole call by. */
export function outcomeLabels(out: WriteOutcome[]): string[] {
  return out.map((o) => (o.status === 'retry' ? `${o.code}/${o.kind}` : o.status));
}

/**
 * `pg2crm check` must not pass on a 200 that is not the CRM's: ping fails (its message naming
 * `request` when given), then passes on the real answer.
 */
export async function expectPingFailsOnGarbage(
  s: CrmSimulator,
  adapter: { ping(): Promise<void> },
  kind: GarbageKind,
  request?: string,
): Promise<void> {
  await armGarbage(s, kind);
  await expect(adapter.ping()).rejects.toMatchObject({
    code: 'CRM_BAD_RESPONSE',
    retriable: true,
    ...(request !== undefined ? { message: expect.stringContaining(request) } : {}),
  });
  await adapter.ping();
}

/**
 * A bulk job's polls: one garbled status answer is polled past (the job runs on and its records
 * are done); three in a row give up on the job (CRM_BAD_RESPONSE). `writeVia(baseUrl, from)`
 * writes three records, numbered from `from`, through an adapter at `baseUrl`; `keep` closes
 * the proxies after the test.
 */
export async function expectOneGarbledPollPassed(
  s: CrmSimulator,
  poll: (method: string, path: string) => boolean,
  kind: GarbageKind,
  writeVia: (baseUrl: string, from: number) => Promise<WriteOutcome[]>,
  keep: (p: GarbageProxy) => void,
): Promise<void> {
  const once = await garbageProxy(s.url, poll, kind);
  keep(once);
  expect((await writeVia(once.url, 20)).map((o) => o.status)).toEqual(['done', 'done', 'done']);
  expect(once.hits).toHaveLength(1);
  const thrice = await garbageProxy(s.url, poll, kind, 3);
  keep(thrice);
  await expectBad(writeVia(thrice.url, 30), 'poll x3: ');
  expect(thrice.hits).toHaveLength(3);
}

/** `proxied(s, when, kind)`: a garbageProxy in front of `s`, handed to `keep` to be closed after the test. */
export function proxiedBy(keep: (p: GarbageProxy) => void) {
  return async (s: CrmSimulator, when: (method: string, path: string) => boolean, kind: GarbageKind): Promise<GarbageProxy> => {
    const p = await garbageProxy(s.url, when, kind);
    keep(p);
    return p;
  };
}

/** `rewritten(s, when, rewrite)`: a rewriteProxy in front of `s`, handed to `keep` to be closed after the test. */
export function rewrittenBy(keep: (p: GarbageProxy) => void) {
  return async (
    s: CrmSimulator,
    when: (method: string, path: string) => boolean,
    rewrite: (body: unknown) => unknown,
    times?: number,
  ): Promise<GarbageProxy> => {
    const p = await rewriteProxy(s.url, when, rewrite, times);
    keep(p);
    return p;
  };
}
