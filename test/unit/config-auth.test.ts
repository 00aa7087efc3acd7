import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { errorOf } from '../helpers/config-errors.ts';
import { parseConfig, zohoAccountsUrl } from '../../src/config.ts';
import { tokenUrlOf } from '../../src/crm/auth/oauth-flows.ts';

/** `crm.auth` / `crm.credentials[]`: a static token as before, or an OAuth flow checked per CRM. */
const base = {
  name: 'erp',
  postgres: { url: 'postgresql://u:p@h:5432/db', tables: ['erp.customers'] },
  kafka: { brokers: 'k1:9092', topicPrefix: 'erp', schemaRegistry: { url: 'http://r:8081' } },
  mappings: [
    { table: 'erp.customers', object: 'contacts', externalId: { column: 'id', field: 'erp_id' }, fields: { last_name: 'last_name' } },
  ],
};
const limits = { requests: 100, windowSeconds: 10 };

function crm(kind: string, auth: Record<string, unknown>, baseUrl = 'https://org.crm.dynamics.com') {
  return { ...base, crm: { kind, baseUrl, auth, limits } };
}

describe('crm.auth', () => {
  it('keeps the static form unchanged, named by where it is configured', () => {
    const c = parseConfig(crm('zendesk-sell', { token: 't' }, 'https://api.getbase.com'), {});
    expect(c.crm.auth).toEqual({ token: 't', quotaGroup: 'default', name: 'crm.auth' });
    const several = parseConfig(
      {
        ...base,
        crm: {
          kind: 'hubspot',
          baseUrl: 'https://api.hubapi.com',
          credentials: [{ token: 'a' }, { flow: 'refresh_token', clientId: 'c', clientSecret: 's', refreshToken: 'r', quotaGroup: 'b' }],
          limits,
        },
      },
      {},
    );
    expect(several.crm.credentials.map((x) => x.name)).toEqual(['crm.credentials[0]', 'crm.credentials[1]']);
    expect(several.crm.credentials[1]).toMatchObject({ flow: 'refresh_token', quotaGroup: 'b' });
  });

  it('reads OAuth secrets from <key>_FILE', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pg2crm-auth-'));
    writeFileSync(join(dir, 'secret'), 'the-secret\n');
    const c = parseConfig(
      crm('dynamics', { flow: 'client_credentials', tenantId: 't', clientId: 'c', clientSecret_FILE: join(dir, 'secret') }),
      {},
    );
    expect(c.crm.auth.clientSecret).toBe('the-secret');
  });

  it('names the path and the fix for a missing field, a flow the CRM does not offer, and token plus flow', () => {
    expect(errorOf(crm('dynamics', { flow: 'client_credentials', tenantId: 't', clientId: 'c' }))).toMatch(
      /crm\.auth\.clientSecret: client_credentials needs crm\.auth\.clientSecret \(or clientSecret_FILE\)/,
    );
    expect(errorOf(crm('dynamics', { flow: 'refresh_token', clientId: 'c', clientSecret: 's', refreshToken: 'r' }))).toMatch(
      /crm\.auth\.flow: dynamics takes flow client_credentials \(or a static token\)/,
    );
    expect(errorOf(crm('dynamics', { token: 't', flow: 'client_credentials' }))).toMatch(
      /crm\.auth: set either crm\.auth\.token .* or crm\.auth\.flow \(OAuth\), not both/,
    );
    expect(errorOf(crm('dynamics', {}))).toMatch(
      /crm\.auth: set crm\.auth\.token .* or crm\.auth\.flow \(OAuth: client_credentials for dynamics\)/,
    );
    expect(errorOf(crm('dynamics', { flow: 'client_credentials', clientId: 'c', clientSecret: 's' }))).toMatch(
      /crm\.auth\.tenantId: client_credentials needs crm\.auth\.tenantId/,
    );
    expect(
      errorOf(crm('salesforce', { flow: 'client_credentials', clientId: 'c', clientSecret: 's' }, 'https://acme.my.salesforce.com')),
    ).toMatch(/crm\.auth\.tokenUrl: .*My Domain token endpoint/);
    expect(
      errorOf(
        crm('salesforce', { flow: 'jwt_bearer', clientId: 'c', username: 'u', privateKey: 'not a key' }, 'https://acme.my.salesforce.com'),
      ),
    ).toMatch(/crm\.auth\.privateKey: use an unencrypted PEM private key/);
    expect(
      errorOf({
        ...base,
        crm: {
          kind: 'hubspot',
          baseUrl: 'https://api.hubapi.com',
          credentials: [{ token: 'a' }, { flow: 'refresh_token', clientId: 'c' }],
          limits,
        },
      }),
    ).toMatch(/crm\.credentials\.1\.clientSecret: refresh_token needs crm\.credentials\.1\.clientSecret/);
  });

  it("Zoho: the accounts server follows the API domain's data centre, and an unknown domain needs tokenUrl", () => {
    expect(zohoAccountsUrl('https://www.zohoapis.eu')).toBe('https://accounts.zoho.eu');
    expect(zohoAccountsUrl('https://www.zohoapis.com.au/crm')).toBe('https://accounts.zoho.com.au');
    expect(zohoAccountsUrl('https://zohoapis.in')).toBe('https://accounts.zoho.in');
    expect(zohoAccountsUrl('https://www.zohoapis.jp')).toBe('https://accounts.zoho.jp');
    expect(zohoAccountsUrl('https://www.zohoapis.ca')).toBe('https://accounts.zohocloud.ca');
    expect(zohoAccountsUrl('http://127.0.0.1:8080')).toBeUndefined();
    const zoho = { flow: 'refresh_token', clientId: 'c', clientSecret: 's', refreshToken: 'r' };
    const c = parseConfig(crm('zoho', zoho, 'https://www.zohoapis.eu'), {});
    expect(tokenUrlOf(c.crm, c.crm.auth)).toBe('https://accounts.zoho.eu/oauth/v2/token');
    expect(errorOf(crm('zoho', zoho, 'http://127.0.0.1:8080'))).toMatch(
      /crm\.auth\.tokenUrl: crm\.baseUrl 127\.0\.0\.1:8080 is not a zohoapis domain/,
    );
  });

  it('defaults the Entra token endpoint from the tenant and HubSpot from the API origin', () => {
    const d = parseConfig(
      crm('dynamics', { flow: 'client_credentials', tenantId: 'contoso.onmicrosoft.com', clientId: 'c', clientSecret: 's' }),
      {},
    );
    expect(tokenUrlOf(d.crm, d.crm.auth)).toBe('https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token');
    const h = parseConfig(
      crm('hubspot', { flow: 'refresh_token', clientId: 'c', clientSecret: 's', refreshToken: 'r' }, 'https://api.hubapi.com'),
      {},
    );
    expect(tokenUrlOf(h.crm, h.crm.auth)).toBe('https://api.hubapi.com/oauth/2026-03/token');
  });
});
