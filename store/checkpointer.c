/* checkpointer: the WAL copied into the database on a thread and a
 * connection of its own (see store_int.h).
 *
 * A checkpoint of STORE_WAL_BYTES takes tens of milliseconds and an
 * fsync; run from the WAL hook it held up the commit that crossed the
 * threshold, and with it every ring buffer whose records wait for their
 * commit. Here it runs beside the writer: SQLite lets a PASSIVE
 * checkpoint copy frames while another connection appends new ones.
 *
 * SQLite reuses the WAL from its start only once a checkpoint has copied
 * every frame in it, so a pass that ends with frames written meanwhile is
 * followed by another, up to PASSES_MAX, each copying only the frames the
 * one before could not. The thread reports nothing to the store's health
 * itself (its fields are the store lock's): a pass that fails sets
 * `failed`, and the next commit checkpoints on the store's own connection
 * (health.c), which records the fault the usual way. */
#define _GNU_SOURCE
#include "store/store_int.h"

#include <pthread.h>
#include <stdlib.h>

#include "server/util/log.h"

#define PASSES_MAX 8

struct store_checkpointer {
	sqlite3 *db;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool asked, stop;
	bool failed;            /* a pass failed (atomic) */
	uint64_t passes;        /* passes that copied frames (atomic) */
};

/* Passes until the WAL is copied whole, or a pass copies nothing new. */
static void checkpoint_all(struct store_checkpointer *cp)
{
	int log_frames = 0, done_frames = 0, before = -1, rc;

	for (int pass = 0; pass < PASSES_MAX; pass++) {
		rc = sqlite3_wal_checkpoint_v2(cp->db, NULL, SQLITE_CHECKPOINT_PASSIVE,
					       &log_frames, &done_frames);
		if (rc == SQLITE_BUSY)
			return;         /* the store's own connection checkpoints */
		if (rc != SQLITE_OK) {
			__atomic_store_n(&cp->failed, true, __ATOMIC_RELEASE);
			return;
		}
		if (done_frames > before && done_frames > 0)
			__atomic_add_fetch(&cp->passes, 1, __ATOMIC_RELAXED);
		if (done_frames >= log_frames || done_frames == before)
			return;
		before = done_frames;
	}
}

static void *checkpointer_main(void *arg)
{
	struct store_checkpointer *cp = arg;

	pthread_mutex_lock(&cp->lock);
	for (;;) {
		while (!cp->asked && !cp->stop)
			pthread_cond_wait(&cp->wake, &cp->lock);
		if (cp->stop)
			break;
		cp->asked = false;
		pthread_mutex_unlock(&cp->lock);
		checkpoint_all(cp);
		pthread_mutex_lock(&cp->lock);
	}
	pthread_mutex_unlock(&cp->lock);
	return NULL;
}

int store_checkpointer_start(struct store *st, struct gerr *err)
{
	struct store_checkpointer *cp = calloc(1, sizeof(*cp));
	int rc;

	if (!cp)
		return gerr_set(err, 500, "out of memory");
	/* A connection finds the database in WAL mode at its first read. */
	rc = sqlite3_open_v2(st->path, &cp->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(cp->db, "PRAGMA schema_version", NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		gerr_set(err, 500, "database %s: cannot open a connection to checkpoint with: %s",
			 st->path, cp->db ? sqlite3_errmsg(cp->db) : sqlite3_errstr(rc));
		sqlite3_close(cp->db);
		free(cp);
		return -1;
	}
	pthread_mutex_init(&cp->lock, NULL);
	pthread_cond_init(&cp->wake, NULL);
	if (pthread_create(&cp->thread, NULL, checkpointer_main, cp) != 0) {
		gerr_set(err, 500, "database %s: cannot start the checkpoint thread", st->path);
		pthread_cond_destroy(&cp->wake);
		pthread_mutex_destroy(&cp->lock);
		sqlite3_close(cp->db);
		free(cp);
		return -1;
	}
	pthread_setname_np(cp->thread, "graind-ckpt");
	st->checkpointer = cp;
	return 0;
}

bool store_checkpointer_ask(struct store *st)
{
	struct store_checkpointer *cp = st->checkpointer;

	if (!cp || __atomic_exchange_n(&cp->failed, false, __ATOMIC_ACQUIRE))
		return false;
	pthread_mutex_lock(&cp->lock);
	cp->asked = true;
	pthread_cond_signal(&cp->wake);
	pthread_mutex_unlock(&cp->lock);
	return true;
}

uint64_t store_checkpointer_passes(const struct store *st)
{
	return st->checkpointer ? __atomic_load_n(&st->checkpointer->passes, __ATOMIC_RELAXED) : 0;
}

void store_checkpointer_stop(struct store *st)
{
	struct store_checkpointer *cp = st->checkpointer;

	if (!cp)
		return;
	pthread_mutex_lock(&cp->lock);
	cp->stop = true;
	pthread_cond_signal(&cp->wake);
	pthread_mutex_unlock(&cp->lock);
	pthread_join(cp->thread, NULL);
	if (sqlite3_close(cp->db) != SQLITE_OK)
		log_error("msg=\"cannot close the checkpoint connection\" path=\"%s\"", st->path);
	pthread_cond_destroy(&cp->wake);
	pthread_mutex_destroy(&cp->lock);
	free(cp);
	st->checkpointer = NULL;
}
