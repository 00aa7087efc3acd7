import type { CrmConfig } from '../config.ts';
import type { CrmAdapter } from './crm-adapter.ts';
import { ZendeskSellAdapter } from './zendesk-sell/adapter.ts';

/** The adapter for `crm.kind`; the config schema already rejected unknown kinds. */
export function createAdapter(config: CrmConfig): CrmAdapter {
  switch (config.kind) {
    case 'zendesk-sell':
      return new ZendeskSellAdapter(config);
  }
}
