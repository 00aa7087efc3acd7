import { writeFileSync } from 'node:fs';
import { z } from 'zod';
import { configSchema } from '../src/config.ts';

/**
 * Writes schemas/pg2crm-config.schema.json from the zod schema (the one source of truth), for
 * editor completion in connector configs. A unit test fails when the file is stale.
 */
export function configJsonSchema(): string {
  const schema = z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  return `${JSON.stringify({ ...schema, title: 'pg2crm connector config' }, null, 2)}\n`;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  writeFileSync(new URL('../schemas/pg2crm-config.schema.json', import.meta.url), configJsonSchema());
  process.stdout.write('wrote schemas/pg2crm-config.schema.json\n');
}
