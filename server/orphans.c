/* orphans: see orphans.h. */
#include "server/orphans.h"

#include "server/util/log.h"

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Probe directories under the pin root: their count, the first names. */
static unsigned pinned_probes(const char *root, char *names, size_t n)
{
	DIR *d = opendir(root);
	struct dirent *e;
	unsigned count = 0;
	size_t used = 0;

	names[0] = '\0';
	if (!d)
		return 0;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.' || e->d_type != DT_DIR)
			continue;
		if (count++ < 5 && used + strlen(e->d_name) + 3 < n)
			used += (size_t)snprintf(names + used, n - used, "%s%s", used ? ", " : "",
						 e->d_name);
	}
	closedir(d);
	return count;
}

int orphans_check(const struct config *cfg, const char *db_path, bool *fresh, struct gerr *err)
{
	char path[PATH_MAX + 32], names[256], found[600] = "";
	struct stat st;
	bool missing, exists, had_store;
	unsigned pins;

	exists = stat(db_path, &st) == 0;
	if (exists)
		missing = st.st_size == 0;
	else if (errno == ENOENT)
		missing = true;
	else
		return 0;       /* the store says what is wrong with it */
	*fresh = missing;
	if (!missing || cfg->reset || cfg->adopt_orphans)
		return 0;
	/* Tokens alone prove nothing (they may be provisioned before the
	 * first start); the reserve file and the WAL are made beside a
	 * database by the store itself. */
	snprintf(path, sizeof(path), "%s-reserve", db_path);
	had_store = access(path, F_OK) == 0;
	snprintf(path, sizeof(path), "%s-wal", db_path);
	had_store = had_store || access(path, F_OK) == 0;
	pins = pinned_probes(cfg->pin_root, names, sizeof(names));
	if (!had_store) {
		/* A first start of this state dir. Pins of another life stay
		 * as they are (reconcile leaves them to a fresh store). */
		if (pins)
			log_warn("msg=\"pinned probes the new database does not know are left running\" "
				 "count=%u probes=\"%s%s\" hint=\"PUT a name to take its probe over, or "
				 "start with --reset to remove them\"", pins, names, pins > 5 ? ", ..." : "");
		return 0;
	}
	snprintf(found, sizeof(found), "the store's own files beside it in %.200s",
		 cfg->state_dir);
	if (pins)
		snprintf(found + strlen(found), sizeof(found) - strlen(found),
			 " and %u pinned probe%s under %.200s (%s%s)", pins,
			 pins == 1 ? "" : "s", cfg->pin_root, names, pins > 5 ? ", ..." : "");
	return gerr_set(err, 409,
			"%s is %s but this is no first start (found %.300s): restore it, or start "
			"with --adopt-orphans (pinned probes keep running) or --reset (they are removed)",
			db_path, exists ? "empty" : "missing", found);
}
