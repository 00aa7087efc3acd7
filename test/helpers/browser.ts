import { createReadStream, createWriteStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createBrotliDecompress } from 'node:zlib';

/**
 * The browser for the browser tests comes from the npm registry, so that `npm ci && npm test` is
 * the whole set-up: the devDependency `@sparticuz/chromium` carries a brotli-compressed Chromium
 * headless shell (linux x64) in its tarball, and this unpacks it once into node_modules/.cache.
 * That binary links only libc, NSS/NSPR and expat, which a fresh Debian machine of this kind has;
 * it needs no apt-installed Chromium and no download from a browser CDN (unreachable here).
 * We do not call the package's own executablePath(): it unpacks into the shared /tmp and sets
 * Lambda-only environment variables.
 */

/** Set to a Chromium/Chrome executable to use that instead (other platforms, or to compare). */
export const CHROMIUM_ENV = 'PG2CRM_TEST_CHROMIUM';

const repoRoot = new URL('../../', import.meta.url).pathname;

export interface BundledChromiumOptions {
  /** Folder holding chromium.br; default: the installed @sparticuz/chromium's bin/. */
  binDir?: string;
  /** Version tag of the cache entry; default: the installed package's version. */
  version?: string;
  /** Cache root; default node_modules/.cache/pg2crm-chromium. */
  cacheDir?: string;
  env?: NodeJS.ProcessEnv;
  platform?: NodeJS.Platform;
  arch?: string;
}

function installedPackage(): { binDir: string; version: string } {
  const require = createRequire(import.meta.url);
  let entry: string;
  try {
    entry = require.resolve('@sparticuz/chromium');
  } catch {
    throw new Error('@sparticuz/chromium is not installed; run `npm ci` (it is a devDependency that carries the test browser)');
  }
  const pkgDir = join(dirname(entry), '..');
  const version = (JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8')) as { version: string }).version;
  return { binDir: join(pkgDir, 'bin'), version };
}

/**
 * Path of a headless Chromium for playwright-core's `executablePath`: $PG2CRM_TEST_CHROMIUM if set,
 * else the bundled binary, unpacked on first use (~3 s, ~210 MB) and reused afterwards.
 */
export async function bundledChromium(opts: BundledChromiumOptions = {}): Promise<string> {
  const env = opts.env ?? process.env;
  const override = env[CHROMIUM_ENV];
  if (override) {
    if (!existsSync(override))
      throw new Error(`${CHROMIUM_ENV}=${override} does not exist; point it at a Chromium executable or unset it to use the bundled one`);
    return override;
  }
  const platform = opts.platform ?? process.platform;
  const arch = opts.arch ?? process.arch;
  if (platform !== 'linux' || arch !== 'x64') {
    throw new Error(
      `the bundled test Chromium is built for linux x64, not ${platform} ${arch}; set ${CHROMIUM_ENV} to a Chromium executable`,
    );
  }
  const pkg = opts.binDir && opts.version ? { binDir: opts.binDir, version: opts.version } : installedPackage();
  const dir = join(opts.cacheDir ?? join(repoRoot, 'node_modules', '.cache', 'pg2crm-chromium'), pkg.version);
  const exe = join(dir, 'chromium');
  if (existsSync(exe)) return exe;
  const source = join(pkg.binDir, 'chromium.br');
  if (!existsSync(source))
    throw new Error(`${source} is missing: the @sparticuz/chromium package layout changed; update test/helpers/browser.ts`);
  mkdirSync(dir, { recursive: true });
  // Unpack beside the target and rename: a run that is interrupted, or two runs at once, never
  // leave a half-written executable under the final name.
  const partial = `${exe}.${process.pid}.partial`;
  try {
    await pipeline(createReadStream(source), createBrotliDecompress(), createWriteStream(partial, { mode: 0o755 }));
    renameSync(partial, exe);
  } finally {
    rmSync(partial, { force: true });
  }
  return exe;
}

/**
 * Launch flags: running as root needs --no-sandbox; the machine has no GPU and the package's
 * SwiftShader libraries are not unpacked, so software compositing only.
 */
export const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu'];
