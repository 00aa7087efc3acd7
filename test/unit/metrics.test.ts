import { describe, expect, it } from 'vitest';
import { registry } from '../../src/metrics.ts';

/** The shape Prometheus's naming conventions ask of every pg2crm metric (https://prometheus.io/docs/practices/naming/). */
describe('metrics', () => {
  const all = registry.getMetricsAsArray().map((m) => {
    const { name, help, type, labelNames } = m as unknown as { name: string; help: string; type: string; labelNames: string[] };
    return { name, help, type, labelNames };
  });

  it('are all declared in src/metrics.ts', () => {
    expect(all.length).toBeGreaterThan(10);
  });

  it('are named pg2crm_<snake_case>, counters ending in _total and nothing else', () => {
    const wrong = all.filter((m) => !/^pg2crm_[a-z][a-z0-9_]*$/.test(m.name) || (m.type === 'counter') !== m.name.endsWith('_total'));
    expect(wrong.map((m) => `${m.type} ${m.name}`)).toEqual([]);
  });

  it('measure time in seconds and sizes in bytes (base units)', () => {
    const units = /_(milliseconds|millis|ms|minutes|hours|days|kilobytes|kb|megabytes|mb|bits)(_|$)/;
    expect(all.filter((m) => units.test(m.name)).map((m) => m.name)).toEqual([]);
  });

  it('have snake_case labels and a help text', () => {
    const wrong = all.filter(
      (m) => m.labelNames.some((l) => !/^[a-z][a-z0-9_]*$/.test(l)) || m.help.trim().length < 10 || m.help.endsWith('.'),
    );
    expect(wrong.map((m) => `${m.name} ${JSON.stringify(m.labelNames)} ${m.help}`)).toEqual([]);
  });
});
