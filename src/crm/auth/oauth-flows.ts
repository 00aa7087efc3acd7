import { createHash, createSign, randomUUID, X509Certificate } from 'node:crypto';
import type { CrmConfig, CrmCredential } from '../../config.ts';
import { zohoAccountsUrl } from '../../config.ts';
import { ConnectorError, errorMessage } from '../../errors.ts';
import { crmFetch, parseRetryAfter, USER_AGENT } from '../http.ts';
import { componentLogger } from '../../logger.ts';
import { type AccessToken, type FlowName, type TokenFlow, TokenProvider } from './token-provider.ts';

const log = componentLogger('crm.auth');

/**
 * The OAuth 2.0 token requests of the five CRMs (RFC 6749 §4.4 client credentials, §6 refresh
 * token; RFC 7523 JWT bearer), each a form POST to the vendor's token endpoint:
 *
 * - Salesforce client credentials: `POST https://<MyDomain>.my.salesforce.com/services/oauth2/token`,
 *   `grant_type=client_credentials&client_id&client_secret`; the answer's `instance_url` is the
 *   API base (https://developer.salesforce.com/docs/atlas.en-us.262.0.chatterapi.meta/chatterapi/quickstart_connecting.htm,
 *   https://help.salesforce.com/s/articleView?id=xcloud.remoteaccess_oauth_client_credentials_flow.htm).
 *   Salesforce JWT bearer: `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>`,
 *   the JWT RS256-signed with `iss` client id, `sub` username, `aud` the login URL, `exp`
 *   (https://help.salesforce.com/s/articleView?id=xcloud.remoteaccess_oauth_jwt_flow.htm).
 *   Neither answer carries `expires_in`: the session lasts until the org's session timeout
 *   (default 2 h), then the API answers 401 INVALID_SESSION_ID and the token is renewed then.
 * - Dynamics 365 / Dataverse: Microsoft Entra ID client credentials,
 *   `POST https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token`,
 *   `grant_type=client_credentials&client_id&client_secret&scope=<org URL>/.default`, or with a
 *   certificate `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer&client_assertion=<JWT>`
 *   (`x5t` the certificate's SHA-1 thumbprint, `aud` the token URL, `iss`=`sub` the client id);
 *   answer `{token_type, expires_in, access_token}`
 *   (https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow,
 *   https://learn.microsoft.com/entra/identity-platform/certificate-credentials).
 * - Zoho: `POST {accounts server}/oauth/v2/token`, `grant_type=refresh_token&client_id&client_secret&refresh_token`,
 *   answer `{access_token, expires_in: 3600, api_domain, token_type}`; the accounts server is the
 *   data centre's (https://www.zoho.com/accounts/protocol/oauth/web-apps/access-token-expiry.html).
 *   Zoho answers some failures with HTTP 200 and `{"error": "..."}`, so the body decides.
 * - HubSpot OAuth app: `POST https://api.hubapi.com/oauth/2026-03/token` (form body),
 *   `grant_type=refresh_token&client_id&client_secret&refresh_token`, answer `{access_token,
 *   refresh_token, expires_in}`, access tokens live 30 minutes
 *   (https://developers.hubspot.com/docs/api-reference/2026-03/authentication/oauth-tokens/refresh-oauth-token,
 *   https://developers.hubspot.com/docs/methods/oauth2/refresh-access-token). The v1 endpoint
 *   `/oauth/v1/token` is deprecated on February 16, 2027
 *   (https://developers.hubspot.com/changelog/v1-oauth-api-deprecation), so it is not the default.
 * - Zendesk Sell OAuth: `POST https://api.getbase.com/oauth2/token`, refresh token grant with the
 *   client authenticated by HTTP Basic (RFC 6749 §2.3.1, which every server must accept), answer
 *   `{access_token, token_type:"bearer", expires_in:3599, refresh_token, scope}`
 *   (https://developer.zendesk.com/documentation/api-basics/authentication/refresh-token; the Sell
 *   answer's shape from https://support.zendesk.com/hc/en-us/community/posts/5003737490458).
 *   A refresh token in an answer that differs from the one sent replaces it for the next refresh
 *   (rotation), in memory only: a restart reads the configured one again.
 *
 * Parameters go in the form body, never the URL (proxies log URLs). Failures are told apart by
 * the HTTP status and the documented `error` values (BUSY_ERRORS, PERMANENT_ERRORS), never by the
 * wording of a description: an endpoint that cannot be reached, times out, answers 5xx, 408 or
 * 429, or a busy `error` is retriable (CRM_TOKEN_UNAVAILABLE); `invalid_client`,
 * `invalid_grant` and other 4xx refusals are permanent (CRM_AUTH) naming the credential and what
 * to check, never a secret.
 */
export interface OAuthRequest {
  vendor: string;
  credential: string;
  flow: FlowName;
  tokenUrl: string;
  /** Form parameters, secrets included (sent in the body only). */
  params: () => Record<string, string>;
  timeoutMs: number;
  /** What to check when the endpoint refuses the credential. */
  fix: string;
  /** Client id and secret as HTTP Basic instead of form parameters. */
  basic?: { clientId: string; clientSecret: string };
  /** `crm.tls` (a proxy's CA, a client certificate) for the token endpoint too. */
  tls?: CrmConfig['tls'];
}

/** A token answer, with the refresh token when the answer carries one (rotation). */
export type TokenAnswer = AccessToken & { refreshToken?: string };

/**
 * Token endpoint `error` values (compared lower-cased) that refuse the credential: no retry fixes
 * them. Some come with HTTP 200 (Zoho), so the value decides, not only the status.
 */
const PERMANENT_ERRORS: ReadonlySet<string> = new Set([
  // RFC 6749 §5.2 (https://www.rfc-editor.org/rfc/rfc6749#section-5.2)
  'invalid_request',
  'invalid_client',
  'invalid_grant',
  'unauthorized_client',
  'unsupported_grant_type',
  'invalid_scope',
  // Zoho Accounts: a refresh token or client secret it does not know, answered with HTTP 200
  'invalid_code',
  'invalid_client_secret',
  // Salesforce: unknown consumer key or secret, the run-as user or org deactivated, the user not
  // let into the app (values field-reported; the error format is RFC 6749's, per
  // https://help.salesforce.com/s/articleView?id=xcloud.remoteaccess_oauth_flow_errors.htm)
  'invalid_client_id',
  'invalid_client_credentials',
  'inactive_user',
  'inactive_org',
  'invalid_app_access',
]);

/**
 * Token endpoint `error` values (compared lower-cased) that mean "not now", whatever the status:
 * - `temporarily_unavailable`, `server_error`: RFC 6749 §4.1.2.1's overload and outage values,
 *   which Microsoft Entra also answers at its token endpoint ("The server is temporarily too busy
 *   to handle the request. Retry the request after a small delay",
 *   https://learn.microsoft.com/entra/identity-platform/reference-error-codes#handling-error-codes-in-your-application).
 * - `access denied`: Zoho Accounts' token throttle, past 10 access tokens per refresh token in
 *   10 minutes: HTTP 400 `{"error":"Access Denied","error_description":"You have made too many
 *   requests continuously. ..."}` (https://www.zoho.com/accounts/protocol/oauth/token-limits.html).
 */
const BUSY_ERRORS: ReadonlySet<string> = new Set(['temporarily_unavailable', 'server_error', 'access denied']);

export async function requestToken(req: OAuthRequest, now: () => number = Date.now): Promise<TokenAnswer> {
  const endpoint = new URL(req.tokenUrl);
  const what = `${req.vendor} token endpoint ${endpoint.origin}${endpoint.pathname} for ${req.credential} (${req.flow})`;
  const sentAt = now();
  const { status, text, retryAfter } = await postTokenRequest(req, what);
  let body: Record<string, unknown> = {};
  try {
    const parsed: unknown = JSON.parse(text);
    if (parsed && typeof parsed === 'object') body = parsed as Record<string, unknown>;
  } catch {
    /* not JSON: judged by the status below */
  }
  const access = str(body.access_token) ?? str(body.accessToken);
  if (status === 200 && access && !body.error) {
    const expiresIn = num(body.expires_in) ?? num(body.expiresIn);
    const instanceUrl = str(body.instance_url) ?? str(body.api_domain);
    const refreshToken = str(body.refresh_token);
    return {
      value: access,
      ...(refreshToken ? { refreshToken } : {}),
      ...(expiresIn !== undefined ? { expiresAt: sentAt + expiresIn * 1000 } : {}),
      ...(instanceUrl ? { instanceUrl } : {}),
    };
  }
  throw refusal(req, what, { status, text, retryAfter }, body);
}

interface TokenHttpAnswer {
  status: number;
  text: string;
  retryAfter: string | null;
}

/** POSTs the grant; no answer at all (unreachable, timed out) is retriable. */
async function postTokenRequest(req: OAuthRequest, what: string): Promise<TokenHttpAnswer> {
  try {
    const res = await crmFetch(req.tls)(req.tokenUrl, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        accept: 'application/json',
        'user-agent': USER_AGENT,
        ...(req.basic
          ? {
              authorization: `Basic ${Buffer.from(`${encodeURIComponent(req.basic.clientId)}:${encodeURIComponent(req.basic.clientSecret)}`).toString('base64')}`,
            }
          : {}),
      },
      body: new URLSearchParams(req.params()).toString(),
      signal: AbortSignal.timeout(req.timeoutMs),
    });
    const retryAfter = res.headers.get('retry-after');
    return { status: res.status, retryAfter, text: await res.text() };
  } catch (err) {
    const timedOut = err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError');
    throw new ConnectorError(
      'CRM_TOKEN_UNAVAILABLE',
      `${what}: ${timedOut ? `no answer within crm.timeoutMs (${req.timeoutMs} ms)` : `unreachable (${errorMessage(err)})`}; retried`,
      { retriable: true, cause: err },
    );
  }
}

/** The error for an answer that carries no token: retried when the endpoint is busy or failing, permanent when it refused the credential. */
function refusal(req: OAuthRequest, what: string, answer: TokenHttpAnswer, body: Record<string, unknown>): ConnectorError {
  const { status, text } = answer;
  const error = str(body.error) ?? str(body.errorCode) ?? str(body.status);
  const description = str(body.error_description) ?? str(body.message) ?? (error ? undefined : text.slice(0, 120));
  // An error page that echoes the request must not carry a secret into a message or a log.
  const secrets = [
    ...Object.entries(req.params())
      .filter(([k]) => /secret|token|assertion/.test(k))
      .map(([, v]) => v),
    req.basic?.clientSecret,
  ].filter((v): v is string => !!v && v.length >= 4);
  const redact = (t: string) => secrets.reduce((out, v) => out.split(v).join('[redacted]'), t);
  const said = redact(
    [`HTTP ${status}`, error, description ? JSON.stringify(description.slice(0, 200)) : undefined].filter(Boolean).join(' '),
  );
  const value = error?.toLowerCase();
  const busy = status === 429 || (value !== undefined && BUSY_ERRORS.has(value));
  if (busy || status >= 500 || status === 408) {
    const after = parseRetryAfter(answer.retryAfter);
    return new ConnectorError('CRM_TOKEN_UNAVAILABLE', `${what}: ${said}; retried`, {
      retriable: true,
      ...(after !== undefined ? { retryAfterSeconds: after } : {}),
    });
  }
  if ((value !== undefined && PERMANENT_ERRORS.has(value)) || status === 400 || status === 401 || status === 403) {
    return new ConnectorError('CRM_AUTH', `${what} refused the credential: ${said}; ${req.fix}`, { retriable: false });
  }
  // 200 without a token, or an answer of no documented shape (a proxy's page): retriable.
  return new ConnectorError('CRM_TOKEN_UNAVAILABLE', `${what}: ${said}, expected {"access_token":…}; retried`, { retriable: true });
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

function num(v: unknown): number | undefined {
  const n = typeof v === 'string' ? Number(v) : v;
  return typeof n === 'number' && Number.isFinite(n) && n > 0 ? n : undefined;
}

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');

/** An RS256-signed JWT (RFC 7519) with node:crypto. */
export function signJwt(header: Record<string, unknown>, claims: Record<string, unknown>, privateKeyPem: string): string {
  const input = `${b64url(JSON.stringify({ alg: 'RS256', ...header }))}.${b64url(JSON.stringify(claims))}`;
  const signature = createSign('RSA-SHA256').update(input).sign(privateKeyPem);
  return `${input}.${b64url(signature)}`;
}

const VENDOR: Record<string, string> = {
  salesforce: 'Salesforce',
  dynamics: 'Microsoft Entra ID',
  zoho: 'Zoho Accounts',
  hubspot: 'HubSpot',
  'zendesk-sell': 'Zendesk Sell',
};

/** The token endpoint of a credential: configured, or the CRM's documented default. */
export function tokenUrlOf(crm: Pick<CrmConfig, 'kind' | 'baseUrl'>, c: CrmCredential): string {
  if (c.tokenUrl) return c.tokenUrl;
  switch (crm.kind) {
    case 'dynamics':
      return `https://login.microsoftonline.com/${encodeURIComponent(c.tenantId ?? 'common')}/oauth2/v2.0/token`;
    case 'zoho':
      return `${zohoAccountsUrl(crm.baseUrl) ?? 'https://accounts.zoho.com'}/oauth/v2/token`;
    case 'hubspot':
      return `${new URL(crm.baseUrl).origin}/oauth/2026-03/token`;
    case 'zendesk-sell':
      return 'https://api.getbase.com/oauth2/token';
    default:
      return 'https://login.salesforce.com/services/oauth2/token';
  }
}

/** What a flow sends to the token endpoint, and what to check when the endpoint refuses it. */
interface Grant {
  params: () => Record<string, string>;
  fix: string;
  basic?: OAuthRequest['basic'];
}

type GrantCrm = Pick<CrmConfig, 'kind' | 'baseUrl'>;

/**
 * The grant of a credential's flow. `refreshToken()` is read at each request: the endpoint may
 * rotate it.
 */
function grantOf(crm: GrantCrm, c: CrmCredential, tokenUrl: string, now: () => number, refreshToken: () => string): Grant {
  const at = c.name;
  if (c.flow === 'refresh_token') {
    const fix = `check ${at}.clientId, clientSecret and refreshToken (a refresh token revoked or issued to another client must be granted again)${crm.kind === 'zoho' ? ` and that ${tokenUrl} is the accounts server of the org's data centre` : ''}`;
    if (crm.kind === 'zendesk-sell') {
      const basic = { clientId: c.clientId!, clientSecret: c.clientSecret! };
      return { basic, fix, params: () => ({ grant_type: 'refresh_token', refresh_token: refreshToken() }) };
    }
    const params = () => ({
      grant_type: 'refresh_token',
      client_id: c.clientId!,
      client_secret: c.clientSecret!,
      refresh_token: refreshToken(),
    });
    return { params, fix };
  }
  if (c.flow === 'jwt_bearer') {
    const aud = c.audience ?? new URL(tokenUrl).origin;
    const params = () => ({
      grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer',
      // Salesforce: exp within 3 minutes of issue.
      assertion: signJwt({}, { iss: c.clientId, sub: c.username, aud, exp: Math.floor(now() / 1000) + 180 }, c.privateKey!),
    });
    const fix = `check ${at}.clientId (the connected app's consumer key), ${at}.username (a user pre-authorized for the app), that the app holds the certificate of ${at}.privateKey, and ${at}.audience/tokenUrl (login.salesforce.com, test.salesforce.com or My Domain)`;
    return { params, fix };
  }
  if (crm.kind === 'dynamics' && c.privateKey && c.certificate) return certificateGrant(crm, c, tokenUrl, now);
  const scope = c.scope ?? `${new URL(crm.baseUrl).origin}/.default`;
  const params = () => ({
    grant_type: 'client_credentials',
    client_id: c.clientId!,
    client_secret: c.clientSecret!,
    ...(crm.kind === 'dynamics' ? { scope } : {}),
  });
  const fix =
    crm.kind === 'dynamics'
      ? `check ${at}.tenantId, clientId and clientSecret (secrets expire: create a new one in the app registration) and ${at}.scope`
      : `check ${at}.clientId and clientSecret and that the connected app enables the client credentials flow with a run-as user`;
  return { params, fix };
}

/** Microsoft Entra's client credentials with a certificate: a signed client assertion instead of a secret. */
function certificateGrant(crm: GrantCrm, c: CrmCredential, tokenUrl: string, now: () => number): Grant {
  const thumbprint = createHash('sha1').update(new X509Certificate(c.certificate!).raw).digest();
  const scope = c.scope ?? `${new URL(crm.baseUrl).origin}/.default`;
  const params = () => {
    const t = Math.floor(now() / 1000);
    return {
      grant_type: 'client_credentials',
      client_id: c.clientId!,
      scope,
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: signJwt(
        { typ: 'JWT', x5t: b64url(thumbprint) },
        { aud: tokenUrl, iss: c.clientId, sub: c.clientId, jti: randomUUID(), nbf: t, iat: t, exp: t + 600 },
        c.privateKey!,
      ),
    };
  };
  const fix = `check ${c.name}.tenantId, clientId, that the certificate is uploaded to the app registration, and that the app is an application user of the environment`;
  return { params, fix };
}

/**
 * The token provider of one credential of `crm` (the config schema already checked that the
 * flow suits the CRM and that its fields are there).
 */
export function tokenProviderFor(
  crm: Pick<CrmConfig, 'kind' | 'baseUrl' | 'timeoutMs'> & Partial<Pick<CrmConfig, 'tls'>>,
  c: CrmCredential,
  now: () => number = Date.now,
): TokenProvider {
  if (!c.flow) return TokenProvider.static(c.name, c.token ?? '');
  const tokenUrl = tokenUrlOf(crm, c);
  const vendor = VENDOR[crm.kind] ?? crm.kind;
  const at = c.name;
  const timeoutMs = crm.timeoutMs;
  const flow = c.flow;
  let refreshToken = c.refreshToken;
  const { params, fix, basic } = grantOf(crm, c, tokenUrl, now, () => refreshToken!);
  const source: TokenFlow = {
    flow,
    fetch: async () => {
      const { refreshToken: rotated, ...token } = await requestToken(
        {
          vendor,
          credential: at,
          flow,
          tokenUrl,
          params,
          timeoutMs,
          fix,
          ...(basic ? { basic } : {}),
          ...(crm.tls ? { tls: crm.tls } : {}),
        },
        now,
      );
      if (flow === 'refresh_token' && rotated && rotated !== refreshToken) {
        refreshToken = rotated;
        log.warn(
          { credential: at },
          'the token endpoint rotated the refresh token; the new one is used until a restart, which reads the configured one again',
        );
      }
      return token;
    },
  };
  return new TokenProvider(at, source, { now });
}
