import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

/** verify and the replay machinery it shares with `dlq replay` sit below the CLI: nothing there imports src/cli/. */
describe('verify layering', () => {
  it('src/verify imports nothing from src/cli', () => {
    const dir = new URL('../../../src/verify/', import.meta.url);
    const offenders = readdirSync(dir)
      .filter((f) => f.endsWith('.ts'))
      .filter((f) => /from '\.\.\/cli\//.test(readFileSync(new URL(f, dir), 'utf8')));
    expect(offenders).toEqual([]);
  });
});
