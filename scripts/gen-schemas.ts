import { readFileSync, writeFileSync } from 'node:fs';
import { z } from 'zod';
import { configSchema } from '../src/config.ts';
import { README_URL, withConfigReference } from './gen-config-reference.ts';

/**
 * Writes schemas/pg2crm-config.schema.json from the zod schema (the one source of truth), for
 * editor completion in connector configs, and the configuration reference in README.md
 * (scripts/gen-config-reference.ts). Unit tests fail when either is stale.
 */
export function configJsonSchema(): string {
  const schema = z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  return `${JSON.stringify({ ...schema, title: 'pg2crm connector config' }, null, 2)}\n`;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  writeFileSync(new URL('../schemas/pg2crm-config.schema.json', import.meta.url), configJsonSchema());
  process.stdout.write('wrote schemas/pg2crm-config.schema.json\n');
  // The README's configuration reference is generated from the same schema.
  writeFileSync(README_URL, withConfigReference(readFileSync(README_URL, 'utf8')));
  process.stdout.write('wrote the configuration reference into README.md\n');
}
