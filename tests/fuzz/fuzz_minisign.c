/* Fuzz the minisign parsers and verifier on what an upload and
 * --trusted-keys bring: input is "KEY\0SIGNATURE\0MESSAGE" (a public key
 * file, a signature file or its base64, and the signed bytes; seeds.py
 * makes real ones with the minisign tool). A file that does not parse is a
 * 400 with a reason; one that does verifies or is a 422; and a message
 * that verifies stops verifying when one of its bytes changes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/util/log.h"
#include "server/util/minisign.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_set_level(LOG_ERROR);
	return 0;
}

/* The next NUL-terminated part of data[*at, size), or all that is left. */
static const uint8_t *part(const uint8_t *data, size_t size, size_t *at, size_t *len)
{
	const uint8_t *start = data + *at;
	const uint8_t *nul = memchr(start, 0, size - *at);

	*len = nul ? (size_t)(nul - start) : size - *at;
	*at += *len + (nul != NULL);
	return start;
}

static void expect_refused(const struct gerr *err, int status)
{
	fuzz_check(err->status == status && err->msg[0], "%d %s", err->status, err->msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct minisign_key key;
	struct minisign_sig sig;
	struct gerr err = { 0 };
	const uint8_t *key_text, *sig_text, *msg;
	size_t at = 0, key_len, sig_len, msg_len;
	bool have_key, have_sig;
	uint8_t *changed;

	key_text = part(data, size, &at, &key_len);
	sig_text = part(data, size, &at, &sig_len);
	msg = data + at;
	msg_len = size - at;

	have_key = minisign_parse_key((const char *)key_text, key_len, &key, &err) == 0;
	if (!have_key)
		expect_refused(&err, 400);
	err = (struct gerr){ 0 };
	have_sig = minisign_parse_sig((const char *)sig_text, sig_len, &sig, &err) == 0;
	if (!have_sig) {
		expect_refused(&err, 400);
		return 0;
	}
	fuzz_check(strlen(sig.trusted_comment) <= MINISIGN_COMMENT_MAX, "comment overflows");
	fuzz_check(minisign_algorithm(&sig)[0], "no algorithm name");
	if (!have_key || memcmp(key.key_id, sig.key_id, sizeof(key.key_id)) != 0)
		return 0;

	err = (struct gerr){ 0 };
	if (minisign_verify(&key, &sig, msg, msg_len, &err) != 0) {
		expect_refused(&err, 422);
		return 0;
	}
	if (msg_len == 0)
		return 0;
	changed = malloc(msg_len);
	fuzz_check(changed, "out of memory");
	memcpy(changed, msg, msg_len);
	changed[msg_len / 2] ^= 0x01;
	err = (struct gerr){ 0 };
	fuzz_check(minisign_verify(&key, &sig, changed, msg_len, &err) != 0,
		   "a changed byte still verifies");
	expect_refused(&err, 422);
	free(changed);
	return 0;
}
