/* sha256: GnuTLS's SHA-256 (nettle's, with the CPU's SHA extensions
 * where it has them): every bearer token of every call is hashed. */
#include "server/util/sha256.h"

#include <gnutls/crypto.h>
#include <stdlib.h>

void sha256(const void *buf, size_t len, uint8_t digest[32])
{
	/* Fails only for an unknown algorithm: SHA-256 is always built in. */
	if (gnutls_hash_fast(GNUTLS_DIG_SHA256, buf, len, digest) < 0)
		abort();
}

void sha256_hex(const void *buf, size_t len, char hex[SHA256_HEX_LEN + 1])
{
	static const char digits[] = "0123456789abcdef";
	uint8_t d[32];

	sha256(buf, len, d);
	for (int i = 0; i < 32; i++) {
		hex[2 * i] = digits[d[i] >> 4];
		hex[2 * i + 1] = digits[d[i] & 15];
	}
	hex[SHA256_HEX_LEN] = '\0';
}
