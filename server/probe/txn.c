/* Kernel changes that are not final yet, and what a crash leaves of one.
 *
 * A change moves whole pin directories, each move one rename, so the live
 * name <dir> always holds one whole generation or nothing at all:
 *   attach   the new generation, built in staging (_new_<dir>), is
 *            exchanged with <dir>; staging then holds the old one. XDP/TC
 *            links the new generation took over in place are shared by
 *            both, and the old one keeps the program each ran pinned as
 *            undo_<link>. Commit unpins staging; rollback puts the old
 *            programs back on those links and exchanges again.
 *   detach   <dir> is renamed to trash (_old_<dir>), whose pinned links
 *            keep the programs attached. Commit unpins trash; rollback
 *            renames it back.
 * No file descriptor is kept between the change and its end: everything
 * a rollback needs is pinned.
 *
 * After a crash (or a failed rollback) the next attach or detach of the
 * probe decides what is left (probe_settle); reconcile at start makes
 * that call for every probe, with the generation the store holds:
 *   - staging newer than <dir> (no meta, or built later): the exchange
 *     never happened. The live generation wins; the links it lent get
 *     their programs back and staging is unpinned.
 *   - staging older than <dir>: the exchange happened and was never
 *     committed. The generation the store holds wins: when <dir> does not
 *     run it and staging does, the exchange is undone (counters kept);
 *     otherwise staging is unpinned.
 *   - trash: the detach happened and was never committed. When the store
 *     wants that generation attached and <dir> is empty, it is renamed
 *     back; otherwise it is unpinned. */
#define _GNU_SOURCE
#include "server/probe/probe.h"
#include "server/probe/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/util/log.h"

struct probe_txn {
	struct probe_txn *next;		/* in mgr->pending */
	struct probe_mgr *mgr;		/* NULL once the manager is gone */
	enum probe_txn_kind kind;
	char name[NAME_MAX + 1];
	char dir[PATH_MAX];
	char staging[PATH_MAX];
	char trash[PATH_MAX];
};

struct probe_txn *probe_txn_alloc(void)
{
	return calloc(1, sizeof(struct probe_txn));
}

void probe_txn_start(struct probe_txn *t, struct probe_mgr *mgr,
		     enum probe_txn_kind kind, const char *name,
		     const char *dir, const char *staging, const char *trash)
{
	t->mgr = mgr;
	t->kind = kind;
	snprintf(t->name, sizeof(t->name), "%s", name);
	snprintf(t->dir, sizeof(t->dir), "%s", dir);
	snprintf(t->staging, sizeof(t->staging), "%s", staging);
	snprintf(t->trash, sizeof(t->trash), "%s", trash);
	t->next = mgr->pending;
	mgr->pending = t;
}

bool probe_txn_pending(struct probe_mgr *mgr, const char *name)
{
	struct probe_txn *t;

	for (t = mgr->pending; t; t = t->next)
		if (strcmp(t->name, name) == 0)
			return true;
	return false;
}

void probe_txn_orphan_all(struct probe_mgr *mgr)
{
	while (mgr->pending) {
		struct probe_txn *t = mgr->pending;

		log_warn("msg=\"probe change neither committed nor rolled back\" probe=%s", t->name);
		mgr->pending = t->next;
		t->next = NULL;
		t->mgr = NULL;
	}
}

/* Take t off the pending list, holding the lock while it ends. */
static void txn_begin_end(struct probe_txn *t)
{
	struct probe_txn **pp;

	if (!t->mgr)
		return;
	pthread_mutex_lock(&t->mgr->lock);
	for (pp = &t->mgr->pending; *pp; pp = &(*pp)->next) {
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	}
}

static void txn_end(struct probe_txn *t)
{
	if (t->mgr)
		pthread_mutex_unlock(&t->mgr->lock);
	free(t);
}

int probe_dir_move(const char *from, const char *to, bool exchange,
		   struct gerr *err)
{
	if (renameat2(AT_FDCWD, from, AT_FDCWD, to,
		      exchange ? RENAME_EXCHANGE : RENAME_NOREPLACE) < 0)
		return gerr_set(err, 500, "cannot %s %s %s %s: %s",
				exchange ? "exchange" : "rename", from,
				exchange ? "with" : "to", to, strerror(errno));
	return 0;
}

int probe_dir_retire(const char *dir, const char *trash, struct gerr *err)
{
	struct gerr ignored;

	if (!probe_dir_exists(dir))
		return 0;
	if (probe_dir_remove(trash, err) < 0)
		return -1;
	/* Without the rename, readers would see the pins go one by one. */
	if (probe_dir_move(dir, trash, false, &ignored) < 0)
		return probe_dir_remove(dir, err);
	return probe_dir_remove(trash, err);
}

int probe_gen_back(const char *dir, const char *staging, struct gerr *err)
{
	struct gerr rm = { 0 };

	if (probe_undo_relink(staging) > 0)
		return gerr_set(err, 500, "cannot put the previous programs back on the links of %s",
				staging);
	if (probe_dir_move(staging, dir, true, err) < 0)
		return -1;
	/* The old generation is live again; what is left goes. */
	if (probe_dir_remove(staging, &rm) < 0)
		log_error("msg=\"cannot remove a rolled back probe generation\" error=\"%s\"", rm.msg);
	probe_undo_unpin(dir);
	return 0;
}

void probe_txn_commit(struct probe_txn *t)
{
	struct gerr err = { 0 };

	if (!t)
		return;
	txn_begin_end(t);
	if (t->kind == PROBE_TXN_REPLACED && probe_dir_remove(t->staging, &err) < 0)
		log_error("msg=\"cannot remove the replaced probe generation\" probe=%s error=\"%s\"",
			  t->name, err.msg);
	if (t->kind == PROBE_TXN_DETACHED && probe_dir_remove(t->trash, &err) < 0)
		log_error("msg=\"cannot remove a detached probe\" probe=%s error=\"%s\"",
			  t->name, err.msg);
	txn_end(t);
}

void probe_txn_rollback(struct probe_txn *t)
{
	struct gerr err = { 0 };
	int ret = 0;

	if (!t)
		return;
	txn_begin_end(t);
	switch (t->kind) {
	case PROBE_TXN_CREATED:
		ret = probe_dir_retire(t->dir, t->trash, &err);
		break;
	case PROBE_TXN_REPLACED:
		ret = probe_gen_back(t->dir, t->staging, &err);
		break;
	case PROBE_TXN_DETACHED:
		ret = probe_dir_move(t->trash, t->dir, false, &err);
		break;
	}
	if (ret < 0)
		log_error("msg=\"cannot roll back a probe change; the next change of the probe settles it\" probe=%s error=\"%s\"",
			  t->name, err.msg);
	else
		log_info("msg=\"probe change rolled back\" probe=%s", t->name);
	txn_end(t);
}

/* Unpin dir, saying why. */
static void drop(const char *name, const char *dir, const char *why)
{
	struct gerr err = { 0 };

	log_warn("msg=\"removing %s\" probe=%s path=%s", why, name, dir);
	if (probe_dir_remove(dir, &err) < 0)
		log_error("msg=\"cannot remove %s\" probe=%s error=\"%s\"", why, name, err.msg);
}

void probe_settle(const char *name, const char *dir, const char *staging,
		  const char *trash, uint64_t want)
{
	uint64_t live_built, staged_built, staged_gen;
	struct gerr err = { 0 };

	if (probe_dir_exists(trash)) {
		if (want && !probe_dir_exists(dir) && probe_adoptable(trash, want, true) &&
		    probe_dir_move(trash, dir, false, &err) == 0)
			log_warn("msg=\"a detach was never committed; attached again\" probe=%s", name);
		else
			drop(name, trash, "a detached probe");
	}
	if (!probe_dir_exists(staging))
		return;
	staged_gen = probe_dir_generation(staging, &staged_built);
	if (!probe_dir_generation(dir, &live_built) || !staged_gen ||
	    staged_built >= live_built) {
		/* Never exchanged: the live generation stays as it was. */
		probe_undo_relink(dir);
		probe_undo_unpin(dir);
		drop(name, staging, "an unfinished probe generation");
		return;
	}
	if (want && staged_gen == want && !probe_adoptable(dir, want, true)) {
		if (probe_gen_back(dir, staging, &err) == 0) {
			log_warn("msg=\"a new generation was never committed; the previous one runs again\" probe=%s generation=%llu",
				 name, (unsigned long long)want);
			return;
		}
		log_error("msg=\"cannot bring back the previous generation\" probe=%s error=\"%s\"",
			  name, err.msg);
	}
	drop(name, staging, "a replaced probe generation");
}
