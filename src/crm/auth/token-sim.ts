import { createVerify, randomBytes } from 'node:crypto';
import type { SimControlOptions, SimRequest } from '../sim-server.ts';

/**
 * The token side of the CRM simulators: the OAuth clients a simulator knows, the access tokens
 * it issued and until when it accepts each. Static tokens (`--token`) never expire. Issued tokens
 * are random and accepted until `issuedAt + ttl` on the simulator's clock (so `/__sim/clock`
 * expires them at once). Each simulator serves its vendor's token endpoint and 401 body with it;
 * token requests skip the simulator's API rate window (the vendors count API calls, not token
 * requests; Microsoft's and Zoho's token endpoints are separate hosts).
 */
export interface SimOAuthClient {
  clientId: string;
  clientSecret?: string;
  refreshToken?: string;
  /** PEM public key (or certificate) that verifies JWT bearer assertions of this client. */
  publicKey?: string;
  /** Salesforce JWT bearer: the users this client may act as (any when unset). */
  usernames?: string[];
}

/** The client every simulator knows unless told otherwise. */
export const SIM_OAUTH_CLIENT: SimOAuthClient = { clientId: 'sim-client', clientSecret: 'sim-secret', refreshToken: 'sim-refresh-token' };

export interface SimOAuthOptions extends SimControlOptions {
  /** Lifetime of issued access tokens, seconds (default: the vendor's). */
  tokenTtlSeconds?: number;
  oauthClients?: SimOAuthClient[];
}

export type TokenState = 'valid' | 'expired' | 'unknown';

export class SimTokens {
  readonly ttlSeconds: number;
  readonly clients: SimOAuthClient[];
  private readonly staticTokens: Set<string>;
  private readonly issuedTokens = new Map<string, number>();
  private readonly now: () => number;
  /** Access tokens issued since the start (or the last reset). */
  issued = 0;

  constructor(staticTokens: Iterable<string>, opts: SimOAuthOptions, defaultTtlSeconds: number, now: () => number) {
    this.staticTokens = new Set(staticTokens);
    this.ttlSeconds = opts.tokenTtlSeconds ?? defaultTtlSeconds;
    this.clients = opts.oauthClients ?? [SIM_OAUTH_CLIENT];
    this.now = now;
  }

  issue(prefix = ''): { value: string; expiresIn: number } {
    const value = `${prefix}${randomBytes(24).toString('base64url')}`;
    this.issuedTokens.set(value, this.now() + this.ttlSeconds * 1000);
    this.issued++;
    // Forget tokens long expired, so a months-long simulator does not grow.
    if (this.issuedTokens.size > 10_000) {
      for (const [t, until] of this.issuedTokens) if (until < this.now() - 3_600_000) this.issuedTokens.delete(t);
    }
    return { value, expiresIn: this.ttlSeconds };
  }

  state(token: string): TokenState {
    if (this.staticTokens.has(token)) return 'valid';
    const until = this.issuedTokens.get(token);
    if (until === undefined) return 'unknown';
    return this.now() < until ? 'valid' : 'expired';
  }

  client(clientId: string | null): SimOAuthClient | undefined {
    return this.clients.find((c) => c.clientId === clientId);
  }

  reset(): void {
    this.issuedTokens.clear();
    this.issued = 0;
  }
}

/** The parameters of a token request: the form body, else the query (Zoho documents query parameters). */
export function tokenParams(req: SimRequest): URLSearchParams {
  const form = new URLSearchParams(typeof req.body === 'string' ? req.body : '');
  for (const [k, v] of req.query) if (!form.has(k)) form.set(k, v);
  return form;
}

/** Verifies an RS256 JWT with `publicKey`; returns its claims, or undefined when malformed or badly signed. */
export function verifyJwt(jwt: string, publicKey: string | undefined): Record<string, unknown> | undefined {
  const parts = jwt.split('.');
  if (parts.length !== 3) return undefined;
  try {
    const header = JSON.parse(Buffer.from(parts[0]!, 'base64url').toString()) as { alg?: string };
    if (header.alg !== 'RS256') return undefined;
    if (publicKey) {
      const ok = createVerify('RSA-SHA256').update(`${parts[0]}.${parts[1]}`).verify(publicKey, Buffer.from(parts[2]!, 'base64url'));
      if (!ok) return undefined;
    }
    return JSON.parse(Buffer.from(parts[1]!, 'base64url').toString()) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

/** `20s`, `5m`, `1h`, `90` (seconds) -> seconds. */
export function parseTtl(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(s|m|h)?$/.exec(text.trim());
  if (!m) return undefined;
  const n = Number(m[1]) * (m[2] === 'h' ? 3600 : m[2] === 'm' ? 60 : 1);
  return n > 0 ? n : undefined;
}
