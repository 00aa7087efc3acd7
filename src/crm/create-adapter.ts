import type { CrmConfig } from '../config.ts';
import { ConnectorError } from '../errors.ts';
import type { CrmAdapter } from './crm-adapter.ts';
import { CrmCaches } from './crm-caches.ts';
import { HubSpotAdapter } from './hubspot/adapter.ts';
import { SalesforceAdapter } from './salesforce/adapter.ts';
import { DynamicsAdapter } from './dynamics/adapter.ts';
import { ZendeskSellAdapter } from './zendesk-sell/adapter.ts';
import { ZohoAdapter } from './zoho/adapter.ts';

/**
 * The adapter for `crm.kind`; the config schema already rejected unknown kinds. Adapters of one
 * process (one per credential) pass the same `caches`.
 */
export function createAdapter(config: CrmConfig, caches: CrmCaches = new CrmCaches()): CrmAdapter {
  switch (config.kind) {
    case 'zendesk-sell':
      return new ZendeskSellAdapter(config, caches);
    case 'dynamics':
      return new DynamicsAdapter(config);
    case 'hubspot':
      return new HubSpotAdapter(config, caches);
    case 'zoho':
      return new ZohoAdapter(config, caches);
    case 'salesforce':
      return new SalesforceAdapter(config);
    default:
      throw new ConnectorError(
        'CONFIG_CRM_KIND',
        `crm.kind ${config.kind} has no adapter in this build; use one of: zendesk-sell, hubspot, dynamics, zoho, salesforce`,
      );
  }
}
