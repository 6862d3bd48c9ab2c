/* minisign: signature and public key files, checked with libsodium. */
#include "server/util/minisign.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UNTRUSTED_PREFIX "untrusted comment: "
#define TRUSTED_PREFIX "trusted comment: "
#define SIG_BIN_LEN (2 + 8 + 64)
#define KEY_BIN_LEN (2 + 8 + 32)
/* A signature file with comments at their longest, in base64. */
#define SIG_TEXT_MAX 4096

struct lines {
	const char *p, *end;
};

/* The next line without its "\n" or "\r\n"; false at the end. */
static bool next_line(struct lines *l, const char **line, size_t *len)
{
	const char *nl;

	if (l->p >= l->end)
		return false;
	nl = memchr(l->p, '\n', (size_t)(l->end - l->p));
	*line = l->p;
	*len = (size_t)((nl ? nl : l->end) - l->p);
	l->p = nl ? nl + 1 : l->end;
	if (*len && (*line)[*len - 1] == '\r')
		(*len)--;
	return true;
}

static bool starts_with(const char *line, size_t len, const char *prefix)
{
	size_t n = strlen(prefix);

	return len >= n && memcmp(line, prefix, n) == 0;
}

/* Exactly `want` bytes from a base64 line (standard alphabet, padded). */
static bool base64_exact(const char *line, size_t len, uint8_t *out, size_t want)
{
	size_t got = 0;
	const char *end = NULL;
	uint8_t buf[128];

	if (sodium_init() < 0 || want > sizeof(buf))
		return false;
	if (sodium_base642bin(buf, sizeof(buf), line, len, NULL, &got, &end,
			      sodium_base64_VARIANT_ORIGINAL) != 0)
		return false;
	if (end != line + len || got != want)
		return false;
	memcpy(out, buf, want);
	return true;
}

/* The text of a base64-encoded signature file, malloc'd, or NULL. */
static char *unwrap_base64(const char *text, size_t len, size_t *out_len)
{
	const char *end = NULL;
	char *out;

	if (sodium_init() < 0 || len > SIG_TEXT_MAX * 2)
		return NULL;
	out = malloc(len + 1);
	if (!out)
		return NULL;
	if (sodium_base642bin((unsigned char *)out, len, text, len, " \t\r\n", out_len, &end,
			      sodium_base64_VARIANT_ORIGINAL) != 0 || end != text + len ||
	    !starts_with(out, *out_len, UNTRUSTED_PREFIX)) {
		free(out);
		return NULL;
	}
	return out;
}

static int parse_sig_text(const char *text, size_t len, struct minisign_sig *sig,
			  struct gerr *err)
{
	struct lines l = { text, text + len };
	uint8_t bin[SIG_BIN_LEN];
	const char *line;
	size_t n;

	if (!next_line(&l, &line, &n) || !starts_with(line, n, UNTRUSTED_PREFIX))
		return gerr_set(err, 400, "the signature is not a minisign signature file: its "
				"first line must be \"untrusted comment: …\"");
	if (!next_line(&l, &line, &n) || !base64_exact(line, n, bin, sizeof(bin)))
		return gerr_set(err, 400, "the signature's second line is not the base64 of a "
				"minisign signature (%d bytes): is it truncated?", SIG_BIN_LEN);
	if (bin[0] != 'E' || (bin[1] != 'd' && bin[1] != 'D'))
		return gerr_set(err, 400, "the signature's algorithm is \"%c%c\" (0x%02x 0x%02x): "
				"minisign signs with \"Ed\" (legacy) or \"ED\" (prehashed)",
				bin[0] >= 0x20 && bin[0] < 0x7f ? bin[0] : '?',
				bin[1] >= 0x20 && bin[1] < 0x7f ? bin[1] : '?', bin[0], bin[1]);
	sig->prehashed = bin[1] == 'D';
	memcpy(sig->key_id, bin + 2, 8);
	memcpy(sig->sig, bin + 10, 64);
	if (!next_line(&l, &line, &n) || !starts_with(line, n, TRUSTED_PREFIX))
		return gerr_set(err, 400, "the signature has no \"trusted comment: …\" third line: "
				"is it truncated?");
	line += strlen(TRUSTED_PREFIX);
	n -= strlen(TRUSTED_PREFIX);
	if (n > MINISIGN_COMMENT_MAX || memchr(line, '\0', n))
		return gerr_set(err, 400, "the signature's trusted comment is over %d bytes or "
				"holds a NUL byte", MINISIGN_COMMENT_MAX);
	memcpy(sig->trusted_comment, line, n);
	sig->trusted_comment[n] = '\0';
	if (!next_line(&l, &line, &n) || !base64_exact(line, n, sig->global_sig, 64))
		return gerr_set(err, 400, "the signature's fourth line is not the base64 of its "
				"global signature (64 bytes): is it truncated?");
	while (next_line(&l, &line, &n))
		if (n)
			return gerr_set(err, 400, "the signature has text after its fourth line");
	return 0;
}

int minisign_parse_sig(const char *text, size_t len, struct minisign_sig *sig,
		       struct gerr *err)
{
	char *unwrapped;
	size_t n;
	int ret;

	memset(sig, 0, sizeof(*sig));
	if (len > SIG_TEXT_MAX * 2)
		return gerr_set(err, 400, "the signature is %zu bytes: a minisign signature file "
				"is a few hundred", len);
	if (starts_with(text, len, UNTRUSTED_PREFIX))
		return parse_sig_text(text, len, sig, err);
	unwrapped = unwrap_base64(text, len, &n);
	if (!unwrapped)
		return gerr_set(err, 400, "the signature is neither a minisign signature file "
				"(\"untrusted comment: …\" first) nor the base64 of one");
	ret = parse_sig_text(unwrapped, n, sig, err);
	free(unwrapped);
	return ret;
}

int minisign_parse_key(const char *text, size_t len, struct minisign_key *key,
		       struct gerr *err)
{
	struct lines l = { text, text + len };
	uint8_t bin[KEY_BIN_LEN];
	const char *line;
	size_t n;

	memset(key, 0, sizeof(*key));
	if (!next_line(&l, &line, &n))
		return gerr_set(err, 400, "empty: not a minisign public key");
	if (starts_with(line, n, UNTRUSTED_PREFIX) && !next_line(&l, &line, &n))
		return gerr_set(err, 400, "a comment line and no key: not a minisign public key");
	if (!base64_exact(line, n, bin, sizeof(bin)))
		return gerr_set(err, 400, "not a minisign public key: the key line must be the "
				"base64 of %d bytes", KEY_BIN_LEN);
	if (bin[0] != 'E' || bin[1] != 'd')
		return gerr_set(err, 400, "not a minisign Ed25519 public key (algorithm bytes "
				"0x%02x 0x%02x)", bin[0], bin[1]);
	memcpy(key->key_id, bin + 2, 8);
	memcpy(key->pk, bin + 10, 32);
	while (next_line(&l, &line, &n))
		if (n)
			return gerr_set(err, 400, "text after the key line: not a minisign public key");
	return 0;
}

int minisign_verify(const struct minisign_key *key, const struct minisign_sig *sig,
		    const void *msg, size_t len, struct gerr *err)
{
	uint8_t signed_part[64 + MINISIGN_COMMENT_MAX], digest[crypto_generichash_BYTES_MAX];
	char id[MINISIGN_KEY_ID_HEX + 1];
	size_t comment_len = strlen(sig->trusted_comment);
	int bad;

	minisign_key_id_hex(sig->key_id, id);
	if (sodium_init() < 0)
		return gerr_set(err, 500, "libsodium does not initialise");
	if (sig->prehashed) {
		crypto_generichash(digest, sizeof(digest), msg, len, NULL, 0);
		bad = crypto_sign_verify_detached(sig->sig, digest, sizeof(digest), key->pk);
	} else {
		bad = crypto_sign_verify_detached(sig->sig, msg, len, key->pk);
	}
	if (bad)
		return gerr_set(err, 422, "the signature by key %s does not verify: these are not "
				"the bytes that were signed", id);
	memcpy(signed_part, sig->sig, 64);
	memcpy(signed_part + 64, sig->trusted_comment, comment_len);
	if (crypto_sign_verify_detached(sig->global_sig, signed_part, 64 + comment_len, key->pk))
		return gerr_set(err, 422, "the trusted comment of the signature by key %s does not "
				"verify: it was changed after signing", id);
	return 0;
}

void minisign_key_id_hex(const uint8_t key_id[8], char out[MINISIGN_KEY_ID_HEX + 1])
{
	/* minisign prints the id as a little-endian 64-bit number. */
	for (int i = 0; i < 8; i++)
		snprintf(out + 2 * i, 3, "%02X", key_id[7 - i]);
}

const char *minisign_algorithm(const struct minisign_sig *sig)
{
	return sig->prehashed ? "Ed25519 (prehashed BLAKE2b-512)" : "Ed25519";
}
