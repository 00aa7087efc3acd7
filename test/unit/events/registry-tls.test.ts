import { describe, expect, it } from 'vitest';
import { registryTlsError } from '../../../src/events/registry-client.ts';

/**
 * A TLS failure towards an https registry becomes SCHEMA_REGISTRY_TLS naming
 * kafka.schemaRegistry.ca, found by the code Node gives the certificate failure, also where
 * undici or the registry client wrapped it (`fetch failed` with the socket error as its cause).
 */
function wrapped(code: string, message: string): Error {
  return new TypeError('fetch failed', { cause: Object.assign(new Error(message), { code }) });
}

describe('registryTlsError', () => {
  it('a certificate the client does not trust, or one not naming the host, names kafka.schemaRegistry.ca', () => {
    for (const code of [
      'SELF_SIGNED_CERT_IN_CHAIN',
      'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
      'DEPTH_ZERO_SELF_SIGNED_CERT',
      'CERT_HAS_EXPIRED',
      'ERR_TLS_CERT_ALTNAME_INVALID',
    ]) {
      const err = registryTlsError(wrapped(code, 'certificate problem'));
      expect(err, code).toMatchObject({ code: 'SCHEMA_REGISTRY_TLS', kind: 'auth', retriable: false });
      expect(err!.message).toContain(`(certificate problem, ${code}); check kafka.schemaRegistry.ca (or ca_FILE)`);
    }
    expect(registryTlsError(wrapped('UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'x'), true)?.retriable).toBe(true);
  });

  it('other failures are not TLS', () => {
    for (const code of ['ECONNREFUSED', 'ENOTFOUND', 'ECONNRESET', 'UND_ERR_CONNECT_TIMEOUT']) {
      expect(registryTlsError(wrapped(code, 'no'))).toBeUndefined();
    }
    expect(registryTlsError(new Error('boom'))).toBeUndefined();
    expect(registryTlsError(undefined)).toBeUndefined();
  });
});
