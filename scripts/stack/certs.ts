import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run } from './processes.ts';

/**
 * Certificates for the stack's TLS listeners (issue 12 §1), made with openssl: one CA, and one
 * server certificate naming localhost and 127.0.0.1 that Kafka's SASL_SSL listener (as a
 * PKCS12 keystore), PostgreSQL (ssl=on) and test proxies present. Clients trust `ca.pem`.
 * Test-only material: unencrypted keys, a fixed keystore password.
 */
export interface CertPair {
  /** PEM certificate file. */
  cert: string;
  /** PEM private key file (unencrypted). */
  key: string;
}

export interface StackCerts {
  dir: string;
  ca: CertPair;
  server: CertPair;
  /** server cert + key + CA as PKCS12, for the broker's ssl.keystore. */
  keystore: string;
  keystorePassword: string;
}

export const KEYSTORE_PASSWORD = 'pg2crm-stack';
/** The names of the server certificate: the stack's services listen on loopback. */
export const SERVER_CERT_HOSTS = ['localhost', '127.0.0.1'];

/** A self-signed CA named `name` in `dir` (`<file>.pem`, `<file>.key`). */
export async function makeCa(dir: string, name: string, file = 'ca'): Promise<CertPair> {
  mkdirSync(dir, { recursive: true });
  const pair = { cert: join(dir, `${file}.pem`), key: join(dir, `${file}.key`) };
  await run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    pair.key,
    '-out',
    pair.cert,
    '-days',
    '3650',
    '-subj',
    `/CN=${name}`,
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  return pair;
}

/**
 * A certificate signed by `ca` naming `hosts` (DNS names and IP addresses) as subjectAltName,
 * usable by servers and clients (mutual TLS).
 */
export async function makeCert(ca: CertPair, dir: string, file: string, hosts: string[]): Promise<CertPair> {
  mkdirSync(dir, { recursive: true });
  const pair = { cert: join(dir, `${file}.pem`), key: join(dir, `${file}.key`) };
  const csr = join(dir, `${file}.csr`);
  const ext = join(dir, `${file}.ext`);
  const san = hosts.map((h) => (/^[\d.]+$|:/.test(h) ? `IP:${h}` : `DNS:${h}`)).join(',');
  writeFileSync(ext, `subjectAltName=${san}\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n`);
  await run('openssl', [
    'req',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    pair.key,
    '-out',
    csr,
    '-subj',
    `/CN=${hosts[0] ?? file}`,
  ]);
  await run('openssl', [
    'x509',
    '-req',
    '-in',
    csr,
    '-CA',
    ca.cert,
    '-CAkey',
    ca.key,
    '-CAcreateserial',
    '-out',
    pair.cert,
    '-days',
    '3650',
    '-extfile',
    ext,
  ]);
  rmSync(csr);
  rmSync(ext);
  return pair;
}

/**
 * The certificates of the stack in `stackDir` (`<stackDir>/certs`), made on first use, the
 * server's naming `hosts` (the container path of the tests adds a non-loopback engine host).
 */
export async function stackCerts(stackDir: string, hosts: string[] = SERVER_CERT_HOSTS): Promise<StackCerts> {
  const dir = join(stackDir, 'certs');
  const certs: StackCerts = {
    dir,
    ca: { cert: join(dir, 'ca.pem'), key: join(dir, 'ca.key') },
    server: { cert: join(dir, 'server.pem'), key: join(dir, 'server.key') },
    keystore: join(dir, 'server.p12'),
    keystorePassword: KEYSTORE_PASSWORD,
  };
  if (existsSync(certs.keystore)) return certs;
  // Made in a temp dir renamed into place: a half-made set is never taken for a complete one.
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  const ca = await makeCa(tmp, 'pg2crm stack CA');
  await makeCert(ca, tmp, 'server', hosts);
  await run('openssl', [
    'pkcs12',
    '-export',
    '-in',
    join(tmp, 'server.pem'),
    '-inkey',
    join(tmp, 'server.key'),
    '-certfile',
    ca.cert,
    '-name',
    'server',
    '-out',
    join(tmp, 'server.p12'),
    '-passout',
    `pass:${KEYSTORE_PASSWORD}`,
  ]);
  rmSync(dir, { recursive: true, force: true });
  renameSync(tmp, dir);
  return certs;
}

/** The PEM text of a file (for configs that take the certificate itself). */
export function pem(file: string): string {
  return readFileSync(file, 'utf8');
}
