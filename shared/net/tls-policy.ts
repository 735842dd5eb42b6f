/**
 * The one TLS policy of every Aegis connection — each listener (coordinator mTLS and enrollment
 * addresses, the dashboard) and each outgoing connection (clients, operators, the backup-registry
 * fetch, enrollment, the offline CA flow): TLS 1.3 only, with the two AEAD suites of 256-bit
 * strength, `TLS_AES_256_GCM_SHA384` and `TLS_CHACHA20_POLY1305_SHA256`. OpenSSL's default also
 * offers `TLS_AES_128_GCM_SHA256`; these options leave it out on both sides.
 *
 * Node applies cipher names that start with `TLS_` as the TLS 1.3 suites (SSL_CTX_set_ciphersuites);
 * with only such names the TLS 1.2 list is empty, which suits a TLS 1.3-only endpoint.
 */
import type { SecureContextOptions } from 'node:tls';

/** The TLS 1.3 suites Aegis offers and accepts, in preference order. */
export const TLS13_CIPHERSUITES = 'TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256';

/** Options for `tls.createSecureContext`, `tls.connect`, `https.createServer` and the like. */
export const TLS_SERVER_POLICY = { minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3', ciphers: TLS13_CIPHERSUITES } as const satisfies SecureContextOptions;

/** The same policy for outgoing connections. */
export const TLS_CLIENT_POLICY = TLS_SERVER_POLICY;
