import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';

/**
 * `npm run demo` on a healthy stack prints its progress and nothing else: no warning or error
 * line of the connector's log (pino level >= 40), no Node warning on stderr. Runs the demo as
 * `npm run demo` does (node scripts/demo.ts, about 25 s).
 */
const repoRoot = new URL('../../', import.meta.url).pathname;

describe('npm run demo', () => {
  it('prints no warnings or errors on a healthy stack', async () => {
    const child = spawn(process.execPath, ['scripts/demo.ts'], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 100_000);
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    clearTimeout(timer);

    expect(stdout).toContain('Done: the CRM simulator holds exactly the ERP rows');
    const loud = stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { level: number; msg: string })
      .filter((entry) => entry.level >= 40)
      .map((entry) => `${entry.level} ${entry.msg}`);
    expect(loud).toEqual([]);
    expect(stderr).not.toMatch(/Warning/);
    expect(stderr.split('\n').filter((l) => /warn|error/i.test(l))).toEqual([]);
    expect(code).toBe(0);
  }, 120_000);
});
