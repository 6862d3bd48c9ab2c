/* signing: trusted minisign keys and the --require-signed gate. */
#include "server/signing.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/graind.pb-c.h"
#include "server/builtin.h"
#include "server/util/file.h"
#include "server/util/log.h"
#include "server/util/minisign.h"
#include "server/util/pbmsg.h"
#include "store/store.h"

#define KEY_FILE_MAX 4096

struct trusted_key {
	struct minisign_key key;
	char file[NAME_MAX + 1];
};

struct keyset {
	struct trusted_key *keys;
	size_t n;
};

struct signing {
	pthread_mutex_t lock;           /* guards keys */
	struct keyset keys;
	uint64_t generation;            /* +1 at every reload */
	char dir[PATH_MAX];
	bool require_signed;
};

static void pk_hex(const uint8_t pk[32], char out[65])
{
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", pk[i]);
}

static bool is_key_file(const char *name)
{
	size_t len = strlen(name);

	return name[0] != '.' && len > 4 && strcmp(name + len - 4, ".pub") == 0;
}

static int by_file(const void *a, const void *b)
{
	return strcmp(((const struct trusted_key *)a)->file, ((const struct trusted_key *)b)->file);
}

static int add_key(struct keyset *set, const char *dir, const char *name, struct gerr *err)
{
	char path[PATH_MAX + NAME_MAX + 2], *text = NULL;
	struct trusted_key *grown, tk = { 0 };
	size_t len;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (file_read(path, &text, &len) < 0)
		return gerr_set(err, 400, "trusted key %s: %s", path, strerror(errno));
	if (len > KEY_FILE_MAX) {
		free(text);
		return gerr_set(err, 400, "trusted key %s: %zu bytes is not a minisign public key",
				path, len);
	}
	if (minisign_parse_key(text, len, &tk.key, err) < 0) {
		free(text);
		gerr_prefix(err, "trusted key %s", path);
		return -1;
	}
	free(text);
	for (size_t i = 0; i < set->n; i++)
		if (memcmp(set->keys[i].key.key_id, tk.key.key_id, 8) == 0) {
			char id[MINISIGN_KEY_ID_HEX + 1];

			minisign_key_id_hex(tk.key.key_id, id);
			return gerr_set(err, 400, "trusted keys %s and %s have the same key id %s",
					set->keys[i].file, name, id);
		}
	snprintf(tk.file, sizeof(tk.file), "%s", name);
	grown = realloc(set->keys, (set->n + 1) * sizeof(*grown));
	if (!grown)
		return gerr_set(err, 500, "out of memory");
	set->keys = grown;
	set->keys[set->n++] = tk;
	return 0;
}

static int read_keys(const char *dir, struct keyset *out, struct gerr *err)
{
	struct keyset set = { 0 };
	struct dirent *de;
	DIR *d;

	*out = set;
	if (!dir[0])
		return 0;
	d = opendir(dir);
	if (!d)
		return gerr_set(err, 400, "--trusted-keys %s: %s", dir, strerror(errno));
	while ((de = readdir(d)) != NULL) {
		if (!is_key_file(de->d_name))
			continue;
		if (add_key(&set, dir, de->d_name, err) < 0) {
			closedir(d);
			free(set.keys);
			return -1;
		}
	}
	closedir(d);
	if (set.n == 0)
		return gerr_set(err, 400, "--trusted-keys %s holds no minisign public key "
				"(a *.pub file, as minisign -G writes)", dir);
	qsort(set.keys, set.n, sizeof(*set.keys), by_file);
	*out = set;
	return 0;
}

int signing_open(const char *dir, bool require_signed, struct signing **out,
		 struct gerr *err)
{
	struct signing *sg = calloc(1, sizeof(*sg));

	*out = NULL;
	if (!sg)
		return gerr_set(err, 500, "out of memory");
	snprintf(sg->dir, sizeof(sg->dir), "%s", dir);
	sg->require_signed = require_signed;
	if (read_keys(sg->dir, &sg->keys, err) < 0) {
		free(sg);
		return -1;
	}
	pthread_mutex_init(&sg->lock, NULL);
	*out = sg;
	return 0;
}

void signing_free(struct signing *sg)
{
	if (!sg)
		return;
	pthread_mutex_destroy(&sg->lock);
	free(sg->keys.keys);
	free(sg);
}

int signing_reload(struct signing *sg, struct gerr *err)
{
	struct keyset fresh, old;

	if (read_keys(sg->dir, &fresh, err) < 0)
		return -1;
	pthread_mutex_lock(&sg->lock);
	old = sg->keys;
	sg->keys = fresh;
	sg->generation++;
	pthread_mutex_unlock(&sg->lock);
	free(old.keys);
	log_info("msg=\"trusted keys read\" dir=\"%s\" keys=%zu", sg->dir, fresh.n);
	return 0;
}

/* The trusted key with this id into *key; false when none. */
static bool find_key(struct signing *sg, const uint8_t key_id[8], struct minisign_key *key)
{
	bool found = false;

	if (!sg)
		return false;
	pthread_mutex_lock(&sg->lock);
	for (size_t i = 0; i < sg->keys.n && !found; i++)
		if (memcmp(sg->keys.keys[i].key.key_id, key_id, 8) == 0) {
			*key = sg->keys.keys[i].key;
			found = true;
		}
	pthread_mutex_unlock(&sg->lock);
	return found;
}

int signing_check_upload(struct signing *sg, const char *signature, const void *bytes,
			 size_t len, char verified_key[65], struct gerr *err)
{
	struct minisign_sig sig;
	struct minisign_key key;

	verified_key[0] = '\0';
	if (minisign_parse_sig(signature, strlen(signature), &sig, err) < 0)
		return -1;
	if (!find_key(sg, sig.key_id, &key))
		return 0;
	if (minisign_verify(&key, &sig, bytes, len, err) < 0)
		return -1;
	pk_hex(key.pk, verified_key);
	return 0;
}

int signing_describe(struct signing *sg, const struct store_object *row,
		     Graind__Signer **out)
{
	Graind__Signer *signer;
	struct minisign_sig sig;
	struct minisign_key key;
	char id[MINISIGN_KEY_ID_HEX + 1], pk[65], reason[256] = "";

	*out = NULL;
	if (!row->signature)
		return 0;
	signer = (Graind__Signer *)pbmsg_new(&graind__signer__descriptor);
	if (!signer)
		return -1;
	if (minisign_parse_sig(row->signature, strlen(row->signature), &sig, NULL) < 0) {
		/* Checked at upload: only damage in the database gets here. */
		snprintf(reason, sizeof(reason), "the stored signature does not parse");
	} else {
		minisign_key_id_hex(sig.key_id, id);
		if (!find_key(sg, sig.key_id, &key)) {
			snprintf(reason, sizeof(reason), "key %s is not a trusted key", id);
		} else {
			pk_hex(key.pk, pk);
			if (strcmp(pk, row->verified_key) == 0)
				signer->trusted = true;
			else
				snprintf(reason, sizeof(reason), "key %s was not trusted when the object "
					 "was uploaded: attaching checks it again", id);
		}
		if (pbmsg_set_string(&signer->key_id, id) < 0 ||
		    pbmsg_set_string(&signer->trusted_comment, sig.trusted_comment) < 0 ||
		    pbmsg_set_string(&signer->algorithm, minisign_algorithm(&sig)) < 0)
			goto oom;
	}
	if (pbmsg_set_string(&signer->reason, reason) < 0)
		goto oom;
	*out = signer;
	return 0;
oom:
	pbmsg_free(&signer->base);
	return -1;
}

/* Whether the policy lets the stored object `row`, of bytes[len], into
 * the kernel. */
static int admit(struct signing *sg, const struct store_object *row, const void *bytes,
		 size_t len, struct gerr *err)
{
	struct minisign_sig sig;
	struct minisign_key key;
	char id[MINISIGN_KEY_ID_HEX + 1];

	if (!sg->require_signed || row->builtin)
		return 0;
	if (!row->signature)
		return gerr_set(err, 422, "object %s is not signed, and --require-signed loads only "
				"objects signed by a trusted key%s%s: upload it again with its "
				"minisign signature", row->sha256, sg->dir[0] ? " of " : "", sg->dir);
	if (minisign_parse_sig(row->signature, strlen(row->signature), &sig, err) < 0) {
		gerr_prefix(err, "object %s", row->sha256);
		if (err)
			err->status = 422;
		return -1;
	}
	minisign_key_id_hex(sig.key_id, id);
	if (!find_key(sg, sig.key_id, &key))
		return gerr_set(err, 422, "object %s is signed by key %s, which is not a trusted "
				"key%s%s (--require-signed)", row->sha256, id,
				sg->dir[0] ? " of " : "", sg->dir);
	if (minisign_verify(&key, &sig, bytes, len, err) < 0) {
		gerr_prefix(err, "object %s", row->sha256);
		return -1;
	}
	return 0;
}

int signing_kernel_object(struct signing *sg, struct store *st,
			  const Graind__ProbeSpec *spec, void **bytes, size_t *len,
			  struct gerr *err)
{
	struct store_object row = { 0 };
	int ret;

	*bytes = NULL;
	*len = 0;
	if (spec->object_case != GRAIND__PROBE_SPEC__OBJECT_OBJECT_SHA256 || !sg ||
	    !sg->require_signed)
		return builtin_spec_object(st, spec, bytes, len, err);
	if (store_object_get(st, spec->object_sha256, &row, err) < 0)
		return -1;
	ret = store_object_content(st, row.sha256, bytes, len, err);
	if (ret == 0 && (ret = admit(sg, &row, *bytes, *len, err)) < 0) {
		free(*bytes);
		*bytes = NULL;
		*len = 0;
	}
	store_object_clear(&row);
	return ret;
}

uint64_t signing_generation(struct signing *sg)
{
	uint64_t gen;

	pthread_mutex_lock(&sg->lock);
	gen = sg->generation;
	pthread_mutex_unlock(&sg->lock);
	return gen;
}

int signing_policy(struct signing *sg, Graind__SignaturePolicy **out)
{
	Graind__SignaturePolicy *policy;
	char id[MINISIGN_KEY_ID_HEX + 1];

	*out = NULL;
	policy = (Graind__SignaturePolicy *)pbmsg_new(&graind__signature_policy__descriptor);
	if (!policy || pbmsg_set_string(&policy->trusted_keys_dir, sg->dir) < 0)
		goto oom;
	policy->require_signed = sg->require_signed;
	pthread_mutex_lock(&sg->lock);
	policy->trusted_key_ids = calloc(sg->keys.n ? sg->keys.n : 1, sizeof(char *));
	for (size_t i = 0; policy->trusted_key_ids && i < sg->keys.n; i++) {
		minisign_key_id_hex(sg->keys.keys[i].key.key_id, id);
		if (!(policy->trusted_key_ids[i] = strdup(id)))
			break;
		policy->n_trusted_key_ids++;
	}
	pthread_mutex_unlock(&sg->lock);
	if (!policy->trusted_key_ids)
		goto oom;
	*out = policy;
	return 0;
oom:
	pbmsg_free(policy ? &policy->base : NULL);
	return -1;
}
