import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

const root = new URL('../../', import.meta.url).pathname;
const SECRET = 'pg-Pa55word-7f3a9c';

/**
 * An error logged as `{ err }` goes through pino's error serializer (type, message and stack with
 * their causes, and the error's own fields: code, kind, retriable), and the logger's secret
 * scrubbing (streamWrite) still reaches every part of it. Run in a child process: pino writes to fd 1.
 */
function logLine(level = 'info'): Record<string, unknown> & { err: Record<string, unknown> } {
  const script = `
    import { componentLogger, setLogLevel } from '${root}src/logger.ts';
    import { registerSecrets } from '${root}src/secrets.ts';
    import { ConnectorError } from '${root}src/errors.ts';
    registerSecrets([${JSON.stringify(SECRET)}]);
    const cause = new Error('password authentication failed for user "erp" with password ${SECRET}');
    const err = new ConnectorError('POSTGRES_CONNECT', 'cannot connect to PostgreSQL (password "${SECRET}"); check postgres.url', { retriable: true, cause });
    setLogLevel('${level}');
    componentLogger('unit').error({ err }, 'source failed');
    componentLogger('unit').error({ err: new TypeError('not a ConnectorError') }, 'bug');
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', cwd: root });
  expect(r.stderr).toBe('');
  const lines = r.stdout.split('\n').filter((l) => l.startsWith('{'));
  expect(lines).toHaveLength(2);
  expect(r.stdout).not.toContain(SECRET);
  // An error that is not a ConnectorError is a bug: its stack is always logged.
  expect(JSON.parse(lines[1]!).err.stack).toMatch(/^TypeError: not a ConnectorError\n\s+at /);
  return JSON.parse(lines[0]!) as Record<string, unknown> & { err: Record<string, unknown> };
}

describe('logger', () => {
  it('logs a ConnectorError with its code, kind and cause, and without the configured secret', () => {
    const line = logLine();
    expect(line).toMatchObject({ level: 50, msg: 'source failed', component: 'unit' });
    expect(line.err).toMatchObject({ type: 'ConnectorError', code: 'POSTGRES_CONNECT', kind: 'unreachable', retriable: true });
    // pino's serializer appends the cause to message and stack; the secret is masked in both.
    expect(line.err.message).toBe(
      'cannot connect to PostgreSQL (password "***"); check postgres.url: password authentication failed for user "erp" with password ***',
    );
    // A named condition: no stack trace at info level (operators read these lines).
    expect(line.err.stack).toBeUndefined();
    expect(JSON.stringify(line)).not.toContain(SECRET);
  });

  it("keeps a ConnectorError's stack with its cause at debug level, still without the secret", () => {
    const line = logLine('debug');
    const stack = String(line.err.stack);
    expect(stack).toMatch(/^ConnectorError: cannot connect to PostgreSQL \(password "\*\*\*"\)/);
    expect(stack).toMatch(/caused by: Error: password authentication failed for user "erp" with password \*\*\*/);
    expect(JSON.stringify(line)).not.toContain(SECRET);
  });
});
