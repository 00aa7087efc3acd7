import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config.ts';
import { errorMessage } from '../../src/errors.ts';
import {
  clearSecrets,
  redactUrls,
  registerRuntimeSecret,
  registerSecrets,
  scrubAndCap,
  scrubSecrets,
  secretsOf,
} from '../../src/secrets.ts';

afterEach(() => clearSecrets());

describe('secrets', () => {
  it('redacts user and password of URLs in messages', () => {
    expect(redactUrls('cannot connect to postgresql://pg2crm:s3cret-pw@db:5432/erp: refused')).toBe(
      'cannot connect to postgresql://***@db:5432/erp: refused',
    );
    expect(redactUrls('registry https://user:p%40ss@reg.example.com/apis')).toBe('registry https://***@reg.example.com/apis');
    // No password: nothing to hide, and plain text with colons stays as it was.
    expect(redactUrls('http://reg:8081/x and a:b@c')).toBe('http://reg:8081/x and a:b@c');
  });

  it('collects the credentials of a config: tokens, secrets, keys, passwords in URLs', () => {
    const found = secretsOf({
      postgres: { url: 'postgresql://u:pg-password-1@h/db' },
      kafka: {
        sasl: { mechanism: 'scram-sha-512', username: 'svc', password: 'kafka-password' },
        schemaRegistry: { url: 'http://r', password: 'registry-password' },
      },
      crm: {
        baseUrl: 'https://x',
        tokenUrl: 'https://login/token',
        credentials: [{ token: 'tok-1234567' }, { clientSecret: 'cs-1234567', refreshToken: 'rt-1234567', clientId: 'public-id' }],
      },
      ops: { token: 'ops-token-0123456789' },
    });
    expect(found.sort()).toEqual(
      ['cs-1234567', 'kafka-password', 'ops-token-0123456789', 'pg-password-1', 'registry-password', 'rt-1234567', 'tok-1234567'].sort(),
    );
  });

  it('scrubs registered secrets (also URL-encoded) and echoed credentials of any value', () => {
    registerSecrets(['crm-token-abcdef', 'p@ss word!']);
    expect(scrubSecrets('token crm-token-abcdef refused')).toBe('token *** refused');
    expect(scrubSecrets('sent p%40ss%20word! and p@ss word!')).toBe('sent *** and ***');
    // An OAuth access token pg2crm fetched is in no config: the header form gives it away.
    expect(scrubSecrets('Authorization: Bearer eyJhbGciOi.payload.sig-_x')).toBe('Authorization: Bearer ***');
    expect(scrubSecrets('authorization: Zoho-oauthtoken 1000.abc.def')).toBe('authorization: Zoho-oauthtoken ***');
    expect(scrubSecrets('{"access_token":"at-xyz","token_type":"bearer","refresh_token": "rt\\"q"}')).toBe(
      '{"access_token":"***","token_type":"bearer","refresh_token": "***"}',
    );
    expect(scrubSecrets('grant_type=refresh_token&client_id=app&client_secret=cs-999&refresh_token=rt-1')).toBe(
      'grant_type=refresh_token&client_id=app&client_secret=***&refresh_token=***',
    );
    // Ordinary text is left alone.
    expect(scrubSecrets('email is invalid: {"last_name":"Bearer","email":"a@b.c"}')).toBe(
      'email is invalid: {"last_name":"Bearer","email":"a@b.c"}',
    );
    expect(scrubSecrets('Basic authentication failed; OAuth client_credentials accepted')).toBe(
      'Basic authentication failed; OAuth client_credentials accepted',
    );
    // ... but any scheme after the header's name is a credential.
    expect(scrubSecrets('authorization: Basic dXNlcjpwYXNz')).toBe('authorization: Basic ***');
    // A secret with a quote or backslash, as a JSON log line escapes it.
    registerSecrets(['pa"ss\\word-123']);
    expect(scrubSecrets(JSON.stringify({ msg: 'login pa"ss\\word-123 refused' }))).toBe('{"msg":"login *** refused"}');
  });

  it('scrubs the latest tokens fetched at run time, and keeps only the last few', () => {
    for (let i = 0; i < 20; i++) registerRuntimeSecret(`fetched-access-token-${i}`);
    expect(scrubSecrets('CRM said: bad value; token fetched-access-token-19 in request')).toBe('CRM said: bad value; token *** in request');
    expect(scrubSecrets('fetched-access-token-12')).toBe('***');
    // Long expired: no longer worth a comparison on every log line.
    expect(scrubSecrets('fetched-access-token-3')).toBe('fetched-access-token-3');
  });

  it('stays linear on long texts without structure', () => {
    const started = performance.now();
    scrubSecrets('e'.repeat(200_000));
    scrubSecrets(`${'a:'.repeat(50_000)}`);
    expect(performance.now() - started).toBeLessThan(500);
  });

  it('caps after scrubbing, saying how long the text was', () => {
    registerSecrets(['secret-value-1']);
    const text = `${'x'.repeat(50)} secret-value-1 ${'y'.repeat(50)}`;
    expect(scrubAndCap(text, 60)).toBe(`${'x'.repeat(50)} *** yyyyy… (105 characters, cut)`);
  });

  it("parseConfig registers the config's secrets; error messages then leave them out", () => {
    parseConfig(
      {
        name: 'c',
        postgres: { url: 'postgresql://u:pg-pass-4242@127.0.0.1:5432/db', tables: ['t'] },
        kafka: { brokers: '127.0.0.1:9092', topicPrefix: 'x', schemaRegistry: { url: 'http://127.0.0.1:8081' } },
        crm: {
          kind: 'zendesk-sell',
          baseUrl: 'http://127.0.0.1:8089',
          auth: { token: 'crm-token-4242' },
          limits: { requests: 1, windowSeconds: 1 },
        },
        // A CRM field called `token`: a name the user chose, not a credential.
        mappings: [
          { table: 't', object: 'contacts', externalId: { column: 'id', field: 'e' }, fields: { a: 'a', token: 'customer_code' } },
        ],
      },
      {},
    );
    expect(errorMessage(new Error('CRM said: token crm-token-4242 is unknown; pg-pass-4242'))).toBe('CRM said: token *** is unknown; ***');
    expect(errorMessage(new Error('column customer_code is missing'))).toBe('column customer_code is missing');
  });
});
