import { ConnectorError } from '../../errors.ts';
import type { AccessToken } from '../auth/token-provider.ts';

/**
 * Salesforce's token answer names the org's API base, `instance_url`
 * (https://help.salesforce.com/s/articleView?id=xcloud.remoteaccess_oauth_client_credentials_flow.htm,
 * https://help.salesforce.com/s/articleView?id=xcloud.remoteaccess_oauth_jwt_flow.htm). pg2crm
 * sends its calls to `crm.baseUrl`; a token for another instance (a sandbox's credentials with a
 * production baseUrl, or the reverse) would write to the wrong org or be refused, so it stops with
 * the fix instead. `check` shows the instance the token is for.
 */
export function assertInstance(token: AccessToken, baseUrl: string, credential: string): void {
  if (!token.instanceUrl) return;
  let instance: string;
  try {
    instance = new URL(token.instanceUrl).origin;
  } catch {
    return;
  }
  const base = new URL(baseUrl).origin;
  if (instance !== base) {
    throw new ConnectorError(
      'CRM_AUTH',
      `the Salesforce token of ${credential} is for the instance ${instance}, but crm.baseUrl is ${base}; set crm.baseUrl to ${instance} (the token answer's instance_url), or use the credentials of the org at ${base}`,
      { retriable: false },
    );
  }
}
