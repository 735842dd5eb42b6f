/**
 * The TLS policy of Aegis's own servers: TLS 1.3 only, with the 256-bit AEAD suites only
 * (AES-256-GCM and ChaCha20-Poly1305; TLS_AES_128_GCM_SHA256 is left out). Node takes TLS 1.3
 * suites in `ciphers` by their `TLS_` names.
 */
export const TLS13_CIPHERSUITES = 'TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256';

/** Spread into `tls.createServer` / `https.createServer` options. */
export const TLS_SERVER_POLICY = { minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3', ciphers: TLS13_CIPHERSUITES } as const;
