#include "server/objects.h"

#include <stdint.h>
#include <stdlib.h>

#include "server/util/pbmsg.h"
#include "proto/graind.pb-c.h"
#include "server/elf/elfchk.h"
#include "store/store.h"

/* Stored, with bytes that still hash to the id: nothing to do. A copy
 * damaged in the database is written over by the true bytes. */
static bool object_intact(struct store *st, const char *sha256)
{
	struct gerr err = { 0 };
	void *bytes = NULL;
	size_t len;

	if (store_object_content(st, sha256, &bytes, &len, &err) < 0)
		return false;
	free(bytes);
	return true;
}

int objects_add(struct store *st, const char *sha256, const char *name,
		const void *bytes, size_t len, bool builtin, const char *description,
		const Graind__ObjectOrigin *origin, bool *created, struct gerr *err)
{
	Graind__Object *obj;
	uint8_t *meta = NULL;
	size_t meta_len;
	int ret = -1;

	*created = false;
	if (object_intact(st, sha256))
		return 0;
	obj = (Graind__Object *)pbmsg_new(&graind__object__descriptor);
	if (!obj)
		return gerr_set(err, 500, "out of memory");
	if (elfchk_inspect(bytes, len, obj, err) < 0)
		goto out;
	if (description && pbmsg_set_string(&obj->description, description) < 0) {
		gerr_set(err, 500, "out of memory");
		goto out;
	}
	/* Lent for the packing, and taken back before the free. */
	obj->origin = (Graind__ObjectOrigin *)origin;
	meta_len = protobuf_c_message_get_packed_size(&obj->base);
	meta = malloc(meta_len ? meta_len : 1);
	if (meta)
		protobuf_c_message_pack(&obj->base, meta);
	obj->origin = NULL;
	if (!meta) {
		gerr_set(err, 500, "out of memory");
		goto out;
	}
	ret = store_object_put(st, sha256, name, bytes, len, meta, meta_len, builtin,
			       created, err);
out:
	free(meta);
	pbmsg_free(&obj->base);
	return ret;
}
