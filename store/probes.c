/* probes: the desired state of probes. */
#include "store/store.h"
#include "store/store_int.h"

#include <stdio.h>
#include <string.h>

int store_probes_using_object(struct store *st, const char *sha256,
			      char *buf, size_t size, unsigned *count,
			      struct gerr *err)
{
	sqlite3_stmt *stmt;
	size_t used = 0;
	unsigned hidden = 0;
	int ret = -1, rc;

	*count = 0;
	buf[0] = '\0';
	stmt = store_stmt(st, STORE_STMT_PROBE_NAMES_BY_OBJECT,
		"SELECT name FROM probes WHERE object_sha256 = ? ORDER BY name",
		err);
	if (!stmt)
		goto out;
	sqlite3_bind_text(stmt, 1, sha256, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(stmt, 0);
		size_t need = strlen(name) + (*count ? 2 : 0);

		if (hidden || used + need + 24 >= size) {
			hidden++;
		} else {
			used += snprintf(buf + used, size - used, "%s%s",
					 *count ? ", " : "", name);
		}
		(*count)++;
	}
	if (rc != SQLITE_DONE) {
		store_fail(st, err, "cannot find probes using object %s", sha256);
		goto out;
	}
	if (hidden)
		snprintf(buf + used, size - used, " and %u more", hidden);
	ret = 0;
out:
	store_stmt_done(stmt);
	return ret;
}

uint64_t store_probe_count(struct store *st)
{
	return store_count(st, STORE_STMT_PROBE_COUNT,
			   "SELECT count(*) FROM probes");
}
