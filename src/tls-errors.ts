/**
 * TLS failures by the `code` Node gives them, so that the code that maps a failed connection to
 * "fix postgres.ssl / kafka.ssl / kafka.schemaRegistry.ca" reads a closed set of names, not a
 * pattern over codes or messages. Two families:
 *
 * - certificate: the peer's certificate is not trusted or does not name the host. OpenSSL's
 *   X.509 verification results (X509_V_ERR_*, https://docs.openssl.org/3.0/man3/X509_STORE_CTX_get_error/)
 *   as Node names them in `err.code` (without the prefix), and Node's host name check
 *   (ERR_TLS_CERT_ALTNAME_INVALID, https://nodejs.org/api/errors.html#err_tls_cert_altname_invalid);
 * - handshake: the TLS handshake itself failed: an error of OpenSSL's "SSL routines" library
 *   (Node sets `err.library` and `err.code = 'ERR_SSL_<REASON>'`,
 *   https://nodejs.org/api/errors.html#openssl-errors), EPROTO, or one of Node's other ERR_TLS_*
 *   errors (a handshake timeout, no common protocol version). Most often the other end is not a
 *   TLS listener (it answered in plaintext: ERR_SSL_WRONG_VERSION_NUMBER).
 */

/** OpenSSL's X.509 verification failures, as Node names them in `err.code`. */
export const CERTIFICATE_ERROR_CODES: ReadonlySet<string> = new Set([
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_CRL',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECRYPT_CRL_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
  'CERT_SIGNATURE_FAILURE',
  'CRL_SIGNATURE_FAILURE',
  'CERT_NOT_YET_VALID',
  'CERT_HAS_EXPIRED',
  'CRL_NOT_YET_VALID',
  'CRL_HAS_EXPIRED',
  'ERROR_IN_CERT_NOT_BEFORE_FIELD',
  'ERROR_IN_CERT_NOT_AFTER_FIELD',
  'ERROR_IN_CRL_LAST_UPDATE_FIELD',
  'ERROR_IN_CRL_NEXT_UPDATE_FIELD',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'CERT_CHAIN_TOO_LONG',
  'CERT_REVOKED',
  'INVALID_CA',
  'PATH_LENGTH_EXCEEDED',
  'INVALID_PURPOSE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'HOSTNAME_MISMATCH',
  // Node's check that the certificate names the host (tls.checkServerIdentity).
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'ERR_TLS_CERT_ALTNAME_FORMAT',
]);

/** Node's own TLS errors while connecting, besides the host name check (a certificate error). */
export const NODE_TLS_ERROR_CODES: ReadonlySet<string> = new Set([
  'ERR_TLS_HANDSHAKE_TIMEOUT',
  'ERR_TLS_INVALID_PROTOCOL_VERSION',
  'ERR_TLS_PROTOCOL_VERSION_CONFLICT',
  'ERR_TLS_INVALID_CONTEXT',
  'ERR_TLS_INVALID_STATE',
  'ERR_TLS_DH_PARAM_SIZE',
  'ERR_TLS_RENEGOTIATION_DISABLED',
  'ERR_TLS_RENEGOTIATION_UNSUPPORTED',
  'ERR_TLS_REQUIRED_SERVER_NAME',
  'ERR_TLS_SESSION_ATTACK',
  'ERR_TLS_SNI_FROM_SERVER',
]);

/**
 * Handshake failures by code, for where only the code survives (kafkajs copies `code` into its
 * KafkaJSConnectionError and drops `library`): OpenSSL's reasons seen when one end is not a TLS
 * listener or the two ends share no protocol or certificate, and EPROTO (a TLS protocol error
 * from the socket).
 */
export const HANDSHAKE_ERROR_CODES: ReadonlySet<string> = new Set([
  'EPROTO',
  'ERR_SSL_WRONG_VERSION_NUMBER',
  'ERR_SSL_PACKET_LENGTH_TOO_LONG',
  'ERR_SSL_HTTP_REQUEST',
  'ERR_SSL_RECORD_LAYER_FAILURE',
  'ERR_SSL_UNEXPECTED_EOF_WHILE_READING',
  'ERR_SSL_UNSUPPORTED_PROTOCOL',
  'ERR_SSL_NO_PROTOCOLS_AVAILABLE',
  'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE',
  'ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE',
  'ERR_SSL_SSLV3_ALERT_CERTIFICATE_UNKNOWN',
  'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA',
  'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION',
  'ERR_SSL_TLSV1_ALERT_INTERNAL_ERROR',
  'ERR_SSL_TLSV1_ALERT_ACCESS_DENIED',
  'ERR_SSL_TLSV1_ALERT_DECRYPT_ERROR',
  'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED',
]);

/** OpenSSL's name for its TLS library, in `err.library` of the errors it raises. */
const OPENSSL_SSL_LIBRARY = 'SSL routines';

export type TlsFailure = 'certificate' | 'handshake';

/** Which TLS failure `err` is (its own code and library, not its causes), or undefined. */
export function tlsFailure(err: unknown): TlsFailure | undefined {
  if (err === null || typeof err !== 'object') return undefined;
  const { code, library } = err as { code?: unknown; library?: unknown };
  if (typeof code === 'string' && CERTIFICATE_ERROR_CODES.has(code)) return 'certificate';
  if (typeof code === 'string' && (HANDSHAKE_ERROR_CODES.has(code) || NODE_TLS_ERROR_CODES.has(code))) return 'handshake';
  if (library === OPENSSL_SSL_LIBRARY) return 'handshake';
  return undefined;
}

/** A certificate the client does not trust, or one that does not name the host. */
export function isCertificateError(err: unknown): boolean {
  return tlsFailure(err) === 'certificate';
}
