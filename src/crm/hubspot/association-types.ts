/**
 * HUBSPOT_DEFINED association type ids, per direction `<from>/<to>` (association types are
 * unidirectional), from
 * https://developers.hubspot.com/docs/guides/api/crm/associations/associations-v4#association-type-id-values.
 * The unlabeled type is what a lookup creates; the primary-company labels are accepted too.
 */
export const HUBSPOT_ASSOCIATION_TYPES: Record<string, number> = {
  'contacts/companies': 279,
  'companies/contacts': 280,
  'deals/contacts': 3,
  'contacts/deals': 4,
  'deals/companies': 341,
  'companies/deals': 342,
  'tickets/contacts': 16,
  'contacts/tickets': 15,
  'tickets/companies': 339,
  'companies/tickets': 340,
  'line_items/deals': 20,
  'deals/line_items': 19,
};

/** The "Primary" company labels (also HUBSPOT_DEFINED). */
export const HUBSPOT_PRIMARY_ASSOCIATION_TYPES: Record<string, number> = {
  'contacts/companies': 1,
  'companies/contacts': 2,
  'deals/companies': 5,
  'companies/deals': 6,
};
