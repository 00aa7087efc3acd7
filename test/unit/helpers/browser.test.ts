import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { brotliCompressSync } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { bundledChromium, CHROMIUM_ENV } from '../../helpers/browser.ts';

/** The browser-test helper: where the status-page test's Chromium comes from on a fresh machine. */
describe('bundledChromium', () => {
  const dirs: string[] = [];
  const tmp = () => {
    const d = mkdtempSync(join(tmpdir(), 'pg2crm-browser-'));
    dirs.push(d);
    return d;
  };
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  const linux = { platform: 'linux' as const, arch: 'x64', env: {} };

  it('unpacks chromium.br once into the cache as an executable, then reuses it', async () => {
    const binDir = tmp();
    const cacheDir = tmp();
    const payload = Buffer.from('#!/bin/sh\necho fake chromium\n'.repeat(1000));
    writeFileSync(join(binDir, 'chromium.br'), brotliCompressSync(payload));
    const exe = await bundledChromium({ ...linux, binDir, version: '1.2.3', cacheDir });
    expect(exe).toBe(join(cacheDir, '1.2.3', 'chromium'));
    expect(readFileSync(exe).equals(payload)).toBe(true);
    expect(statSync(exe).mode & 0o777).toBe(0o755);
    // No partial file left beside it.
    expect(existsSync(`${exe}.${process.pid}.partial`)).toBe(false);
    // Second call: served from the cache, the compressed source is not read again.
    rmSync(join(binDir, 'chromium.br'));
    expect(await bundledChromium({ ...linux, binDir, version: '1.2.3', cacheDir })).toBe(exe);
    // Another version is a new cache entry: it needs the source again, and says what changed if absent.
    await expect(bundledChromium({ ...linux, binDir, version: '1.2.4', cacheDir })).rejects.toThrow(
      /chromium\.br is missing.*package layout changed/,
    );
  });

  it('takes $PG2CRM_TEST_CHROMIUM when set, and names it when it points nowhere', async () => {
    const d = tmp();
    const exe = join(d, 'chrome');
    writeFileSync(exe, '');
    expect(await bundledChromium({ ...linux, env: { [CHROMIUM_ENV]: exe } })).toBe(exe);
    await expect(bundledChromium({ ...linux, env: { [CHROMIUM_ENV]: join(d, 'nope') } })).rejects.toThrow(
      /PG2CRM_TEST_CHROMIUM=.*nope does not exist/,
    );
  });

  it('on other platforms asks for $PG2CRM_TEST_CHROMIUM instead of running a linux x64 binary', async () => {
    await expect(bundledChromium({ platform: 'darwin', arch: 'arm64', env: {} })).rejects.toThrow(
      /linux x64, not darwin arm64; set PG2CRM_TEST_CHROMIUM/,
    );
    await expect(bundledChromium({ platform: 'linux', arch: 'arm64', env: {} })).rejects.toThrow(/set PG2CRM_TEST_CHROMIUM/);
  });

  it('the installed @sparticuz/chromium still carries bin/chromium.br (the layout the helper relies on)', () => {
    const entry = createRequire(import.meta.url).resolve('@sparticuz/chromium');
    const br = join(dirname(entry), '..', 'bin', 'chromium.br');
    // Tens of MB: the real browser, not a stub that downloads one.
    expect(statSync(br).size).toBeGreaterThan(30 * 1024 * 1024);
  });
});
