import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requestToken } from '../../../src/crm/auth/oauth-flows.ts';

/**
 * What a token endpoint's refusal means, decided by the HTTP status and the documented `error`
 * values, never by the wording of a description: a throttle or an outage is retriable
 * (CRM_TOKEN_UNAVAILABLE, with its Retry-After), a refused credential is permanent (CRM_AUTH).
 */
let server: Server;
let answer: { status: number; body: unknown; headers?: Record<string, string> } = { status: 200, body: {} };
beforeAll(async () => {
  server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(answer.status, { 'content-type': 'application/json', ...answer.headers });
      res.end(typeof answer.body === 'string' ? answer.body : JSON.stringify(answer.body));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

function token() {
  return requestToken({
    vendor: 'Test',
    credential: 'crm.auth',
    flow: 'refresh_token',
    tokenUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}/token`,
    params: () => ({ grant_type: 'refresh_token', client_id: 'cid', client_secret: 'secret-value', refresh_token: 'refresh-value' }),
    timeoutMs: 5000,
    fix: 'check crm.auth',
  }).catch((e: unknown) => e);
}

const RETRIED = { code: 'CRM_TOKEN_UNAVAILABLE', retriable: true };
const REFUSED = { code: 'CRM_AUTH', retriable: false };

describe('token endpoint refusals', () => {
  it.each([
    ['429 (any body)', 429, { error: 'slow down' }, RETRIED],
    ['503', 503, 'Service Unavailable', RETRIED],
    ['408', 408, '', RETRIED],
    // https://www.zoho.com/accounts/protocol/oauth/token-limits.html: past 10 access tokens in 10 minutes
    [
      'Zoho token throttle: 400 "Access Denied"',
      400,
      {
        error_description: 'You have made too many requests continuously. Please try again after some time.',
        error: 'Access Denied',
        status: 'failure',
      },
      RETRIED,
    ],
    // RFC 6749 §4.1.2.1; Microsoft Entra answers it at the token endpoint too (reference-error-codes)
    [
      '400 temporarily_unavailable',
      400,
      {
        error: 'temporarily_unavailable',
        error_description: 'AADSTS50196: The server terminated an operation because it encountered a client request loop.',
      },
      RETRIED,
    ],
    ['200 without a token', 200, { token_type: 'bearer' }, RETRIED],
    // RFC 6749 §5.2
    ['400 invalid_grant', 400, { error: 'invalid_grant', error_description: 'expired access/refresh token' }, REFUSED],
    ['401 invalid_client', 401, { error: 'invalid_client' }, REFUSED],
    ['400 unsupported_grant_type', 400, { error: 'unsupported_grant_type' }, REFUSED],
    // Zoho answers a refresh token it does not know with HTTP 200
    ['Zoho 200 invalid_code', 200, { error: 'invalid_code' }, REFUSED],
    ['Zoho 200 invalid_client', 200, { error: 'invalid_client' }, REFUSED],
    // Salesforce: the run-as user deactivated; the description's words do not make it a throttle
    [
      'Salesforce 400 inactive_user',
      400,
      { error: 'inactive_user', error_description: 'rate limit of logins reached for inactive user' },
      REFUSED,
    ],
  ] as const)('%s', async (_name, status, body, expected) => {
    answer = { status, body };
    expect(await token()).toMatchObject(expected);
  });

  it('a throttle carries the Retry-After it was given', async () => {
    answer = { status: 429, body: {}, headers: { 'retry-after': '7' } };
    expect(await token()).toMatchObject({ ...RETRIED, retryAfterSeconds: 7 });
  });
});
