import { describe, expect, it } from 'vitest';
import { fatalLine } from '../../../src/cli/fatal.ts';
import { ConnectorError } from '../../../src/errors.ts';

describe('fatalLine', () => {
  it('is one `pg2crm: <what>; <fix>` line', () => {
    expect(
      fatalLine(new ConnectorError('TABLE_NOT_CAPTURABLE', 'table a.b does not exist; create it\ntable a.c has no primary key; add one')),
    ).toBe('pg2crm: table a.b does not exist; create it; table a.c has no primary key; add one');
  });

  it('adds where to look when nothing explained the error', () => {
    const kafkajs = Object.assign(new Error('Connection error: connect ECONNREFUSED 127.0.0.1:1'), { name: 'KafkaJSConnectionError' });
    expect(fatalLine(kafkajs)).toMatch(/^pg2crm: Connection error: connect ECONNREFUSED 127\.0\.0\.1:1; check kafka\.brokers/);
    expect(fatalLine(new Error('boom'))).toMatch(/^pg2crm: boom; see the log lines above, and run pg2crm check/);
    expect(fatalLine('text')).not.toContain('\n');
  });
});
