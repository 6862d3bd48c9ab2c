/* The agent the transport targets serve (fuzz_http, fuzz_grpc): a store in
 * a temporary directory (tmpfs when there is one: every change commits and
 * syncs), the token files and the feeds; no probe manager, collector or
 * sinks. At exit, fuzz_agent_stop (when a target sets it) runs first,
 * then the agent is closed and its directory removed. Include it in the
 * target's one file. */
#ifndef GRAIND_FUZZ_AGENT_H
#define GRAIND_FUZZ_AGENT_H

#include <ftw.h>        /* the target defines _GNU_SOURCE first, for nftw */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/agent.h"
#include "server/auth.h"
#include "server/builtin.h"
#include "server/config.h"
#include "server/elf/elfchk.h"
#include "server/util/feed.h"
#include "server/util/log.h"
#include "store/store.h"
#include "tests/fuzz/fuzz.h"

static struct agent agent;
static char agent_dir[64];
static void (*fuzz_agent_stop)(void);

static int fuzz_agent_remove(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void fuzz_agent_close(void)
{
	if (fuzz_agent_stop)
		fuzz_agent_stop();
	store_close(agent.store);
	auth_free(agent.auth);
	feed_free(agent.sample_feed);
	feed_free(agent.probe_feed);
	nftw(agent_dir, fuzz_agent_remove, 8, FTW_DEPTH | FTW_PHYS);
}

/* Open the agent of target `name`, with graind's flags `flags` (NULL
 * ended) besides --state-dir. */
static void fuzz_agent_open(const char *name, char *const *flags)
{
	char db[PATH_MAX], *args[16] = { "graind", "--state-dir", agent_dir };
	struct gerr err = { 0 };
	int n = 3;

	for (; *flags; flags++) {
		fuzz_check(n < 15, "too many flags");
		args[n++] = *flags;
	}
	log_set_level(LOG_ERROR);
	elfchk_init();
	snprintf(agent_dir, sizeof(agent_dir), "%s/graind-fuzz-%s.XXXXXX",
		 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp", name);
	fuzz_check(mkdtemp(agent_dir), "mkdtemp");
	atexit(fuzz_agent_close);
	fuzz_check(config_parse(&agent.cfg, n, args) == CONFIG_RUN, "config");
	snprintf(db, sizeof(db), "%s/graind.db", agent_dir);
	fuzz_check(store_open(db, &agent.store, &err) == 0 &&
		   builtin_register(agent.store, &err) == 0 &&
		   auth_load(agent_dir, "", &agent.auth, &err) == 0, "%s", err.msg);
	pthread_mutex_init(&agent.probe_lock, NULL);
	agent.sample_feed = feed_new(0, 0, 1);
	agent.probe_feed = feed_new(16, 1 << 16, 1);
	fuzz_check(agent.sample_feed && agent.probe_feed, "out of memory");
	agent.started_ms = 1;
}

#endif
