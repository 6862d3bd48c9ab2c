/* minisign: the signature and public key files of the minisign tool
 * (Ed25519; legacy signatures over the bytes, prehashed ones over their
 * BLAKE2b-512), read and checked with libsodium.
 *
 * A signature file is four lines: "untrusted comment: …", base64 of the
 * algorithm ("Ed" legacy, "ED" prehashed), the 8-byte key id and the
 * 64-byte signature; "trusted comment: …", and base64 of the global
 * signature over the signature and the trusted comment. A public key file
 * is "untrusted comment: …" and base64 of "Ed", the key id and the 32-byte
 * key. Both are untrusted input: every parse failure is a 400 naming what
 * is wrong. */
#ifndef GRAIND_MINISIGN_H
#define GRAIND_MINISIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "server/util/gerr.h"

#define MINISIGN_KEY_ID_HEX 16
#define MINISIGN_COMMENT_MAX 1024

struct minisign_sig {
	bool prehashed;                 /* "ED": signs the BLAKE2b-512 of the bytes */
	uint8_t key_id[8];
	uint8_t sig[64];
	char trusted_comment[MINISIGN_COMMENT_MAX + 1];
	uint8_t global_sig[64];
};

struct minisign_key {
	uint8_t key_id[8];
	uint8_t pk[32];
};

/* Parse a signature file's text, or that text in base64 (what fits an
 * HTTP header). 400 when it is not one. */
int minisign_parse_sig(const char *text, size_t len, struct minisign_sig *sig,
		       struct gerr *err);

/* Parse a public key file's text (its comment line may be left out). */
int minisign_parse_key(const char *text, size_t len, struct minisign_key *key,
		       struct gerr *err);

/* Whether `sig` is key's signature of msg[len] and of its trusted
 * comment: 0, or 422 saying which part does not verify. The caller has
 * matched the key ids. */
int minisign_verify(const struct minisign_key *key, const struct minisign_sig *sig,
		    const void *msg, size_t len, struct gerr *err);

/* The key id as 16 uppercase hex digits, leading zeros kept (minisign
 * leaves them out of its comment lines). */
void minisign_key_id_hex(const uint8_t key_id[8], char out[MINISIGN_KEY_ID_HEX + 1]);

/* "Ed25519" or "Ed25519 (prehashed BLAKE2b-512)". */
const char *minisign_algorithm(const struct minisign_sig *sig);

#endif
