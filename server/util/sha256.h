/* sha256: FIPS 180-4 SHA-256, for content addresses of uploaded objects
 * and the digests bearer tokens are compared by. */
#ifndef GRAIND_SHA256_H
#define GRAIND_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_HEX_LEN 64

/* Digest of buf as 64 lowercase hex digits plus NUL into hex[65]. */
void sha256_hex(const void *buf, size_t len, char hex[SHA256_HEX_LEN + 1]);

/* The 32-byte digest. */
void sha256(const void *buf, size_t len, uint8_t digest[32]);

#endif
