import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  configKeys,
  configReference,
  DESCRIPTIONS,
  END,
  README_URL,
  START,
  withConfigReference,
} from '../../scripts/gen-config-reference.ts';
import { configJsonSchema } from '../../scripts/gen-schemas.ts';

describe('schemas/pg2crm-config.schema.json', () => {
  it('is generated from the current zod schema (run `npm run schemas` after changing config.ts)', () => {
    expect(readFileSync(new URL('../../schemas/pg2crm-config.schema.json', import.meta.url), 'utf8')).toBe(configJsonSchema());
  });
});

describe('README.md configuration reference', () => {
  const readme = readFileSync(README_URL, 'utf8');

  it('is generated from the current zod schema (run `npm run schemas` after changing config.ts)', () => {
    expect(readme).toBe(withConfigReference(readme));
  });

  it('lists every key of the schema with its default and allowed values', () => {
    const section = readme.slice(readme.indexOf(START), readme.indexOf(END));
    for (const key of [
      'name',
      'postgres.snapshot',
      'kafka.schemaRegistry.compatibility',
      'crm.limits.utilisation',
      'mappings[].lookups.<field>.column',
      'ops.slotLagWarnBytes',
    ]) {
      expect(section).toContain(`| \`${key}\` |`);
    }
    expect(section).toMatch(/\| `postgres\.snapshot` \| string \| `initial` \| `initial`, `never`, `when_needed` \|/);
    expect(section).toMatch(
      /\| `crm\.kind` \| string, \*\*required\*\* \| {2}\| `zendesk-sell`, `salesforce`, `hubspot`, `dynamics`, `zoho` \|/,
    );
    expect(
      configReference()
        .split('\n')
        .filter((l) => l.startsWith('| `')).length,
    ).toBe(configKeys().length);
  });

  it('has a description for every key (add it to DESCRIPTIONS in scripts/gen-config-reference.ts)', () => {
    expect(
      configKeys()
        .filter((k) => !k.description)
        .map((k) => k.path),
    ).toEqual([]);
  });

  it('describes no key that the schema does not have', () => {
    const keys = new Set(configKeys().map((k) => k.path));
    expect(Object.keys(DESCRIPTIONS).filter((k) => !keys.has(k))).toEqual([]);
  });

  it('notices a stale section', () => {
    const stale = readme.replace('| `ops.logLevel` |', '| `ops.logLevelOld` |');
    expect(withConfigReference(stale)).not.toBe(stale);
    expect(() => withConfigReference('# no markers\n')).toThrow(/config-reference:start/);
  });
});
