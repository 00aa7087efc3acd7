import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { configJsonSchema } from '../../scripts/gen-schemas.ts';

describe('schemas/pg2crm-config.schema.json', () => {
  it('is generated from the current zod schema (run `npm run schemas` after changing config.ts)', () => {
    expect(readFileSync(new URL('../../schemas/pg2crm-config.schema.json', import.meta.url), 'utf8')).toBe(configJsonSchema());
  });
});
