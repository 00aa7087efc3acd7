import { ConnectorError } from '../../errors.ts';
import { componentLogger } from '../../logger.ts';
import { registerRuntimeSecret } from '../../secrets.ts';

/**
 * One CRM credential's access token. A static token (API key, private-app token, personal access
 * token) is used as configured; an OAuth token is fetched from the vendor's token endpoint,
 * cached, and fetched again ahead of its expiry, so a connector runs for months on tokens that
 * live an hour. Token requests go to the token endpoint directly, never through the sink's
 * RateBudget: no vendor of the five counts them against the API limits.
 *
 * Rules (issue 11 §1):
 * - refresh when the token is within max(60 s, 10 % of its lifetime) of expiry, but never
 *   earlier than a quarter of its lifetime before it (a simulator's 8 s token is used for 6 s);
 * - one token request in flight per credential: concurrent callers share it;
 * - a 401 refreshes once (`refreshAfterRejection`: only if the refused token is still the
 *   current one, so 20 calls refused together cause one refresh) and the call is retried once;
 *   a token just issued and refused too stops the connector (CRM_AUTH, naming the credential);
 * - a token endpoint failing transiently (5xx, timeout, unreachable) is a retriable error; while
 *   the current token has not expired it keeps being used.
 */
export interface AccessToken {
  value: string;
  /** Epoch ms; undefined = does not expire (static tokens). */
  expiresAt?: number;
  /** API base the token is for, when the token endpoint says (Salesforce `instance_url`, Zoho `api_domain`). */
  instanceUrl?: string;
}

export type FlowName = 'static' | 'client_credentials' | 'jwt_bearer' | 'refresh_token';

/** How a credential gets a token: one request to the token endpoint per call. */
export interface TokenFlow {
  readonly flow: FlowName;
  fetch(): Promise<AccessToken>;
}

const MIN_MARGIN_MS = 60_000;
const MARGIN_SHARE = 0.1;
const MAX_MARGIN_SHARE = 0.25;
/** After a failed refresh with a still-valid token, wait this long before asking the endpoint again. */
const FAILED_REFRESH_PAUSE_MS = 2000;

const log = componentLogger('crm.auth');

export class TokenProvider {
  /** Where the credential is configured, e.g. `crm.auth` or `crm.credentials[1]`. */
  readonly credential: string;
  private readonly source: TokenFlow;
  private readonly now: () => number;
  private current: (AccessToken & { issuedAt: number }) | undefined;
  private inFlight: Promise<AccessToken> | undefined;
  private failedAt: number | undefined;
  /** Tokens obtained from the endpoint (for tests and `check`). */
  issued = 0;

  constructor(credential: string, source: TokenFlow, opts: { now?: () => number } = {}) {
    this.credential = credential;
    this.source = source;
    this.now = opts.now ?? Date.now;
  }

  /** A configured token that never changes (today's `crm.auth.token`). */
  static static(credential: string, token: string): TokenProvider {
    return new TokenProvider(credential, { flow: 'static', fetch: async () => ({ value: token }) });
  }

  get flow(): FlowName {
    return this.source.flow;
  }

  get isStatic(): boolean {
    return this.source.flow === 'static';
  }

  /** The token to use now: the cached one, or a new one when it is near expiry. */
  async token(): Promise<AccessToken> {
    const cur = this.current;
    if (cur && !this.dueForRefresh(cur)) return cur;
    if (cur && !this.expired(cur) && this.failedAt !== undefined && this.now() - this.failedAt < FAILED_REFRESH_PAUSE_MS) return cur;
    try {
      return await this.refresh();
    } catch (err) {
      // The endpoint failed transiently while the token still works: keep using it.
      if (cur && !this.expired(cur) && err instanceof ConnectorError && err.retriable) return cur;
      throw err;
    }
  }

  /**
   * The CRM refused `rejected` (401): a new token, unless the current one is already another
   * (a concurrent call refreshed it). A static token cannot be refreshed: CRM_AUTH at once.
   */
  async refreshAfterRejection(rejected: string): Promise<AccessToken> {
    if (this.isStatic) throw this.refused(undefined);
    if (this.current && this.current.value !== rejected) return this.current;
    return this.refresh();
  }

  /** The CRM refused a token it should accept: permanent, names the credential and the fix, never the token. */
  refused(vendor: string | undefined, status = 401): ConnectorError {
    const who = vendor ?? 'the CRM';
    if (this.isStatic) {
      return new ConnectorError('CRM_AUTH', `${who} rejected the token (HTTP ${status}); check ${this.credential}.token`, {
        retriable: false,
      });
    }
    return new ConnectorError(
      'CRM_AUTH',
      `${who} refused a token just issued for ${this.credential} (${this.flow}, HTTP ${status}); the token endpoint accepts the credential but the CRM does not: check that the client/user of ${this.credential} may use the API of crm.baseUrl (permissions, API access, the right org/tenant/data centre)`,
      { retriable: false },
    );
  }

  /** For `pg2crm check`: the flow and when the current token expires. */
  describe(): string {
    if (this.isStatic) return 'static token';
    const cur = this.current;
    if (!cur) return `${this.flow} (no token yet)`;
    const parts = [`${this.flow} token`];
    // Salesforce's token answer has no expires_in: its session lasts the org's session timeout.
    parts.push(
      cur.expiresAt !== undefined
        ? `expires in ${formatDuration(cur.expiresAt - this.now())}`
        : 'expiry not given (renewed when the CRM answers 401)',
    );
    if (cur.instanceUrl) parts.push(`instance ${cur.instanceUrl}`);
    return parts.join(', ');
  }

  /** The current token's instance URL, when the token endpoint gave one. */
  get instanceUrl(): string | undefined {
    return this.current?.instanceUrl;
  }

  private dueForRefresh(t: AccessToken & { issuedAt: number }): boolean {
    if (t.expiresAt === undefined) return false;
    const lifetime = Math.max(0, t.expiresAt - t.issuedAt);
    const margin = Math.min(Math.max(MIN_MARGIN_MS, lifetime * MARGIN_SHARE), lifetime * MAX_MARGIN_SHARE);
    return this.now() >= t.expiresAt - margin;
  }

  private expired(t: AccessToken): boolean {
    return t.expiresAt !== undefined && this.now() >= t.expiresAt;
  }

  /** One token request at a time: callers arriving meanwhile get the same answer. */
  private refresh(): Promise<AccessToken> {
    this.inFlight ??= (async () => {
      const issuedAt = this.now();
      try {
        const t = await this.source.fetch();
        // A CRM may quote it back in an error text (and so into a dead letter): scrub it like a configured token.
        registerRuntimeSecret(t.value);
        this.current = { ...t, issuedAt };
        this.failedAt = undefined;
        this.issued++;
        if (!this.isStatic) {
          log.info(
            {
              credential: this.credential,
              flow: this.flow,
              expiresInSeconds: t.expiresAt === undefined ? undefined : Math.round((t.expiresAt - issuedAt) / 1000),
            },
            'access token issued',
          );
        }
        return this.current;
      } catch (err) {
        this.failedAt = this.now();
        // The message names the endpoint and the vendor's error, never a secret (see oauth-flows.ts).
        // pino's err serializer keeps the code, kind, retriable and cause.
        log.warn({ credential: this.credential, flow: this.flow, err }, 'token request failed');
        throw err;
      } finally {
        this.inFlight = undefined;
      }
    })();
    return this.inFlight;
  }
}

/**
 * Runs a CRM request with the credential's token. When `rejected(answer)` (the vendor's 401 for
 * an expired or invalid token), refreshes once and retries once; refused again, throws CRM_AUTH
 * naming the credential. `vendor` names the CRM in that message.
 */
export async function withToken<T>(
  auth: TokenProvider,
  vendor: string,
  call: (token: AccessToken) => Promise<T>,
  rejected: (answer: T) => boolean,
): Promise<T> {
  const first = await auth.token();
  const answer = await call(first);
  if (!rejected(answer)) return answer;
  if (auth.isStatic) throw auth.refused(vendor);
  const fresh = await auth.refreshAfterRejection(first.value);
  const again = await call(fresh);
  if (!rejected(again)) return again;
  throw auth.refused(vendor);
}

/** `1h59m`, `4m10s`, `12s`. */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${s}s`;
}
