import { describe, expect, it } from 'vitest';
import { parseTtl, SimTokens } from '../../../src/crm/auth/token-sim.ts';
import { runSimulator } from '../../../src/cli/sim-command.ts';

describe('simulator tokens', () => {
  it('--token-ttl takes 20s, 5m, 1h or seconds; anything else is refused with the form', async () => {
    expect(parseTtl('20s')).toBe(20);
    expect(parseTtl('5m')).toBe(300);
    expect(parseTtl('1h')).toBe(3600);
    expect(parseTtl('90')).toBe(90);
    expect(parseTtl('0s')).toBeUndefined();
    expect(parseTtl('soon')).toBeUndefined();
    await expect(runSimulator('dynamics', { port: 0, tokenTtl: 'soon' })).rejects.toThrow(
      /--token-ttl soon: write a duration, e.g. 20s, 5m, 1h/,
    );
  });

  it('issued tokens are random and accepted until their lifetime ends on the simulator clock; static ones forever', () => {
    let now = 0;
    const t = new SimTokens(['static'], { tokenTtlSeconds: 20 }, 3600, () => now);
    const a = t.issue();
    const b = t.issue();
    expect(a.value).not.toBe(b.value);
    expect(a.expiresIn).toBe(20);
    expect(t.state(a.value)).toBe('valid');
    now = 19_999;
    expect(t.state(a.value)).toBe('valid');
    now = 20_000;
    expect(t.state(a.value)).toBe('expired');
    expect(t.state('static')).toBe('valid');
    expect(t.state('never-issued')).toBe('unknown');
    expect(t.issued).toBe(2);
  });
});
