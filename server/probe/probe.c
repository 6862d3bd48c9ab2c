/* probe: load, attach, pin, adopt, swap and detach; the kernel's view of a
 * probe for the API. See internal.h for the pin layout, txn.c for how a
 * change is undone and what a crash leaves. */
#include "server/probe/probe.h"
#include "server/probe/internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <pthread.h>
#include <stdio.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "server/util/pbmsg.h"
#include "server/elf/elfchk.h"
#include "server/elf/internal.h"
#include "server/util/clock.h"
#include "server/util/log.h"

/* Why the last attach of a probe failed, until it succeeds or detaches. */
struct failure {
	struct failure *next;
	char *probe;
	char program[PROBE_PROG_NAME_MAX];
	char msg[GERR_MSG_MAX];
};

/* One attach in progress. */
struct attach_ctx {
	const char *name;
	char dir[PATH_MAX];		/* pin_root/<name> */
	char staging[PATH_MAX];		/* pin_root/_new_<name> */
	char trash[PATH_MAX];		/* pin_root/_old_<name> */
	bool replaced;			/* a generation was live before */
	struct bpf_object *obj;
	struct probe_prog *progs;
	size_t n_progs;
	struct probe_old_link *old;
	size_t n_old;
	const char *failed_program;
};

/* ---------------------------------------------------------------- manager */

/* Where probes are pinned: set once by probe_mgr_new (one manager per
 * process), read by every function of the module. */
static char pin_root[PATH_MAX] = PROBE_DEFAULT_PIN_ROOT;

int probe_mgr_new(const char *root, struct probe_mgr **out, struct gerr *err)
{
	struct probe_mgr *mgr;

	*out = NULL;
	if (!root || !*root || strlen(root) >= sizeof(pin_root) - 80)
		return gerr_set(err, 500, "pin root '%s' is empty or too long", root ? root : "");
	snprintf(pin_root, sizeof(pin_root), "%s", root);
	elfchk_init();
	if (mkdir(pin_root, 0700) < 0 && errno != EEXIST)
		return gerr_set(err, 500, "cannot create %s: %s (is bpffs mounted at /sys/fs/bpf?)",
				pin_root, strerror(errno));
	mgr = calloc(1, sizeof(*mgr));
	if (mgr && !(mgr->warnings = probe_warnings_new())) {
		free(mgr);
		mgr = NULL;
	}
	if (!mgr)
		return gerr_set(err, 500, "out of memory");
	pthread_mutex_init(&mgr->lock, NULL);
	pthread_mutex_init(&mgr->failures_lock, NULL);
	mgr->stats_fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
	if (mgr->stats_fd < 0)
		log_warn("msg=\"BPF run-time statistics unavailable\" error=\"%s\"",
			 strerror(errno));
	*out = mgr;
	return 0;
}

/* The failure list has a lock of its own, held only for a moment, so that
 * probe_status() never waits for an attach (which holds mgr->lock while
 * the verifier runs). Order: mgr->lock, then failures_lock. */
static void failure_unlink(struct probe_mgr *mgr, const char *name)
{
	struct failure **pp = &mgr->failures, *f;

	while ((f = *pp)) {
		if (strcmp(f->probe, name) == 0) {
			*pp = f->next;
			free(f->probe);
			free(f);
		} else {
			pp = &f->next;
		}
	}
}

static void failure_clear(struct probe_mgr *mgr, const char *name)
{
	pthread_mutex_lock(&mgr->failures_lock);
	failure_unlink(mgr, name);
	pthread_mutex_unlock(&mgr->failures_lock);
}

static void failure_record(struct probe_mgr *mgr, const char *name,
			   const char *program, const struct gerr *err)
{
	struct failure *f = calloc(1, sizeof(*f));

	if (!f || !(f->probe = strdup(name))) {
		free(f);
		failure_clear(mgr, name);
		return;
	}
	snprintf(f->program, sizeof(f->program), "%s", program ? program : "");
	snprintf(f->msg, sizeof(f->msg), "%s", err ? err->msg : "attach failed");
	pthread_mutex_lock(&mgr->failures_lock);
	failure_unlink(mgr, name);
	f->next = mgr->failures;
	mgr->failures = f;
	pthread_mutex_unlock(&mgr->failures_lock);
}

/* A copy of the last failure of `name` into *out; false when none. */
static bool failure_find(struct probe_mgr *mgr, const char *name, struct failure *out)
{
	bool found = false;

	pthread_mutex_lock(&mgr->failures_lock);
	for (struct failure *f = mgr->failures; f && !found; f = f->next) {
		if (strcmp(f->probe, name) == 0) {
			*out = *f;
			out->next = NULL;
			out->probe = NULL;
			found = true;
		}
	}
	pthread_mutex_unlock(&mgr->failures_lock);
	return found;
}

void probe_mgr_free(struct probe_mgr *mgr)
{
	if (!mgr)
		return;
	probe_txn_orphan_all(mgr);
	while (mgr->failures) {
		struct failure *f = mgr->failures;

		mgr->failures = f->next;
		free(f->probe);
		free(f);
	}
	probe_warnings_free(mgr->warnings);
	if (mgr->stats_fd >= 0)
		close(mgr->stats_fd);
	pthread_mutex_destroy(&mgr->lock);
	pthread_mutex_destroy(&mgr->failures_lock);
	free(mgr);
}

/* Names become directory names in bpffs, where ':' stands for '.'. */
static int check_name(const char *name, struct gerr *err)
{
	size_t len = strlen(name);

	if (!len || len > 128 || name[0] == '.' || name[0] == '_' ||
	    strpbrk(name, "/:"))
		return gerr_set(err, 400, "probe name %s cannot be a pin directory name", name);
	return 0;
}

static int probe_dir(char *buf, size_t n, const char *prefix, const char *name)
{
	int len = snprintf(buf, n, "%s/%s%s", pin_root, prefix, name);
	char *p;

	if (len < 0 || (size_t)len >= n)
		return -1;
	for (p = buf + strlen(pin_root) + 1; *p; p++)
		if (*p == '.')
			*p = ':';
	return 0;
}

/* The three pin directories of probe `name`. */
static int probe_dirs(const char *name, char *dir, char *staging, char *trash,
		      struct gerr *err)
{
	if (probe_dir(dir, PATH_MAX, "", name) < 0 ||
	    probe_dir(staging, PATH_MAX, PROBE_STAGING_PREFIX, name) < 0 ||
	    probe_dir(trash, PATH_MAX, PROBE_TRASH_PREFIX, name) < 0)
		return gerr_set(err, 400, "probe name %s is too long", name);
	return 0;
}

static int refuse_pending(struct probe_mgr *mgr, const char *name, struct gerr *err)
{
	if (probe_txn_pending(mgr, name))
		return gerr_set(err, 409, "a change of probe %s is neither committed nor rolled back yet",
				name);
	return 0;
}

/* ---------------------------------------------------------------- attach */

static bool is_selected(const Graind__ProbeSpec *spec, const char *prog)
{
	size_t i;

	for (i = 0; i < spec->n_programs; i++)
		if (strcmp(spec->programs[i]->program, prog) == 0)
			return true;
	return spec->n_programs == 0;
}

/* Select the programs in spec order (object order for "all"), and switch
 * off loading for the others. */
static int select_programs(struct attach_ctx *c, const Graind__ProbeSpec *spec,
			   struct gerr *err)
{
	struct bpf_program *prog;
	size_t n = 0, i;

	bpf_object__for_each_program(prog, c->obj)
		n++;
	c->progs = calloc(n ? n : 1, sizeof(*c->progs));
	if (!c->progs)
		return gerr_set(err, 500, "out of memory");
	for (i = 0; i < spec->n_programs; i++) {
		const char *want = spec->programs[i]->program;

		if (!bpf_object__find_program_by_name(c->obj, want))
			return gerr_set(err, 400, "program %s not found in the object", want);
		for (size_t j = 0; j < i; j++)
			if (strcmp(spec->programs[j]->program, want) == 0)
				return gerr_set(err, 400, "program %s is listed twice", want);
	}
	if (n > PROBE_META_MAX_PROGS)
		return gerr_set(err, 400, "a probe runs at most %d programs", PROBE_META_MAX_PROGS);

	bpf_object__for_each_program(prog, c->obj)
		bpf_program__set_autoload(prog, is_selected(spec, bpf_program__name(prog)));
	/* Attach in the order the spec lists. */
	for (i = 0; i < (spec->n_programs ? spec->n_programs : n); i++) {
		struct probe_prog *p = &c->progs[c->n_progs++];

		if (spec->n_programs) {
			p->prog = bpf_object__find_program_by_name(c->obj, spec->programs[i]->program);
			p->attach = spec->programs[i]->attach;
		} else {
			size_t k = 0;

			bpf_object__for_each_program(prog, c->obj)
				if (k++ == i)
					p->prog = prog;
		}
		p->name = bpf_program__name(p->prog);
		p->cgroup_fd = -1;
		p->tc_relative_fd = -1;
		if (strlen(p->name) >= PROBE_PROG_NAME_MAX)
			return gerr_set(err, 400, "program name %s is too long", p->name);
	}
	return 0;
}

/* The verifier's word on the first refused program, with the report.
 * Where the verifier accepts every program, `other` (when set) says why
 * the load failed. */
static int load_failure(struct attach_ctx *c, const void *obj, size_t obj_len,
			int ret, const struct elfchk_capture *cap, const struct gerr *other,
			Graind__VerifyReport **report, struct gerr *err)
{
	Graind__VerifyReport *r;
	struct gerr verr;
	char reason[128];
	size_t i, k;

	r = (Graind__VerifyReport *)pbmsg_new(&graind__verify_report__descriptor);
	if (r && elfchk_verify(obj, obj_len, r, &verr) == 0) {
		for (i = 0; i < r->n_programs; i++) {
			const Graind__ProgramVerdict *v = r->programs[i];

			for (k = 0; k < c->n_progs; k++)
				if (!v->accepted && strcmp(v->program, c->progs[k].name) == 0)
					break;
			if (k == c->n_progs)
				continue;
			c->failed_program = c->progs[k].name;
			gerr_set(err, 422, "the verifier refused program %s: %s%s%s",
				 v->program, v->error,
				 v->source_line[0] ? " at " : "", v->source_line);
			goto out;
		}
	}
	if (other) {
		*err = *other;
		goto out;
	}
	libbpf_strerror(ret, reason, sizeof(reason));
	gerr_set(err, 422, "cannot load the object: %s%s%s%s", reason,
		 cap->first_warn[0] ? " (" : "", cap->first_warn,
		 cap->first_warn[0] ? ")" : "");
out:
	if (report && r)
		*report = r;
	else
		pbmsg_free((ProtobufCMessage *)r);
	return -1;
}

/* The program that joins libxdp's dispatcher, which loads the object
 * (at most one: the object loads once). */
static int find_slot(struct attach_ctx *c, struct probe_prog **slot, struct gerr *err)
{
	*slot = NULL;
	for (size_t i = 0; i < c->n_progs; i++) {
		if (!c->progs[i].xdp_slot)
			continue;
		if (*slot)
			return gerr_set(err, 400, "programs %s and %s both join an XDP dispatcher: libxdp loads one program of an object there; put the other in a probe of its own",
					(*slot)->name, c->progs[i].name);
		*slot = &c->progs[i];
	}
	return 0;
}

static int load(struct attach_ctx *c, const void *obj, size_t obj_len,
		Graind__VerifyReport **report, struct gerr *err)
{
	struct elfchk_capture cap;
	struct probe_prog *slot;
	struct gerr slot_err = { 0 };
	int ret;

	if (find_slot(c, &slot, err) < 0)
		return -1;
	elfchk_capture_begin(&cap);
	ret = slot ? probe_hook_load_slot(slot, c->obj, &slot_err) : bpf_object__load(c->obj);
	elfchk_capture_end();
	if (ret == 0)
		return 0;
	if (slot && bpf_program__fd(slot->prog) >= 0) {
		/* Loaded, and then the dispatcher said no. */
		c->failed_program = slot->name;
		*err = slot_err;
		return -1;
	}
	return load_failure(c, obj, obj_len, ret, &cap, slot ? &slot_err : NULL, report, err);
}

/* The link a TCX program is placed before or after ("<probe>/<program>"):
 * one of this probe's programs listed before it, or another probe's
 * pinned link. */
static int open_relative(struct attach_ctx *c, size_t i, struct gerr *err)
{
	struct probe_prog *p = &c->progs[i];
	const char *ref = probe_hook_relative(p), *prog;
	char probe[130], dir[PATH_MAX], file[NAME_MAX + 1], path[PATH_MAX];
	struct gerr name_err = { 0 };

	if (!ref)
		return 0;
	prog = strchr(ref, '/');
	if (!prog || prog == ref || (size_t)(prog - ref) >= sizeof(probe) || !prog[1] ||
	    strchr(++prog, '/') || strlen(prog) >= PROBE_PROG_NAME_MAX)
		return gerr_set(err, 400, "program %s: place it before or after \"<probe>/<program>\", not \"%s\"",
				p->name, ref);
	snprintf(probe, sizeof(probe), "%.*s", (int)(prog - 1 - ref), ref);
	if (strcmp(probe, c->name) == 0) {
		for (size_t j = 0; j < i; j++)
			if (strcmp(c->progs[j].name, prog) == 0 && c->progs[j].n_links)
				p->tc_relative_fd = fcntl(c->progs[j].links[0].fd, F_DUPFD_CLOEXEC, 0);
		if (p->tc_relative_fd < 0)
			return gerr_set(err, 400, "program %s: %s is not a program listed before it in this probe",
					p->name, ref);
		return 0;
	}
	snprintf(file, sizeof(file), "link_%s", prog);
	if (check_name(probe, &name_err) < 0 || probe_dir(dir, sizeof(dir), "", probe) < 0 ||
	    probe_pin_path(path, sizeof(path), dir, file) < 0 ||
	    (p->tc_relative_fd = bpf_obj_get(path)) < 0)
		return gerr_set(err, 409, "program %s: probe %s has no attached program %s to place it against",
				p->name, probe, prog);
	return 0;
}

/* New links live only in our descriptors until pinned, so a failure (or
 * a crash) here leaves nothing: ctx_release closes them. */
static int attach_all(struct attach_ctx *c, struct gerr *err)
{
	size_t i;

	for (i = 0; i < c->n_progs; i++) {
		if (open_relative(c, i, err) < 0 || probe_hook_attach(&c->progs[i], err) < 0) {
			c->failed_program = c->progs[i].name;
			return -1;
		}
		c->progs[i].attached_ms = clock_unix_ms();
	}
	return 0;
}

static int pin_fd(const char *dir, const char *file, int fd, struct gerr *err)
{
	char path[PATH_MAX];

	if (probe_pin_path(path, sizeof(path), dir, file) < 0)
		return gerr_set(err, 500, "pin path too long: %s/%s", dir, file);
	if (bpf_obj_pin(fd, path) < 0)
		return gerr_set(err, 500, "cannot pin %s: %s", path, strerror(errno));
	return 0;
}

/* Everything of the new generation pinned in the staging directory. */
static int pin_staging(struct attach_ctx *c, uint64_t generation,
		       struct gerr *err)
{
	struct probe_meta *meta;
	struct bpf_map *map;
	char file[NAME_MAX + 1];
	size_t i, k;
	int ret = -1;

	meta = calloc(1, sizeof(*meta));
	if (!meta)
		return gerr_set(err, 500, "out of memory");
	if (probe_dir_remove(c->staging, err) < 0)
		goto out;
	if (mkdir(c->staging, 0700) < 0) {
		gerr_set(err, 500, "cannot create %s: %s", c->staging, strerror(errno));
		goto out;
	}
	bpf_object__for_each_map(map, c->obj) {
		if (bpf_map__fd(map) < 0)
			continue;
		probe_map_file(file, sizeof(file), bpf_map__name(map));
		if (pin_fd(c->staging, file, bpf_map__fd(map), err) < 0)
			goto out;
	}
	meta->magic = PROBE_META_MAGIC;
	meta->generation = generation;
	meta->n_progs = c->n_progs;
	meta->built_us = clock_mono_us();
	for (i = 0; i < c->n_progs; i++) {
		struct probe_prog *p = &c->progs[i];

		snprintf(meta->progs[i].name, PROBE_PROG_NAME_MAX, "%s", p->name);
		meta->progs[i].attached_ms = p->attached_ms;
		meta->progs[i].n_links = p->n_links;
		meta->progs[i].prog_id = probe_prog_id(bpf_program__fd(p->prog));
		for (k = 0; k < p->n_links; k++)
			if (pin_fd(c->staging, p->links[k].file, p->links[k].fd, err) < 0)
				goto out;
	}
	ret = probe_meta_write(c->staging, meta, err);
out:
	free(meta);
	return ret;
}

/* Swap the new programs onto the XDP/TC links they take over. The old
 * program is pinned beside its link first, so that the old generation can
 * take it back even after a crash. */
static int lend_links(struct attach_ctx *c, struct gerr *err)
{
	char file[sizeof(PROBE_UNDO_PREFIX) + NAME_MAX];
	size_t i;
	int old, ret;

	for (i = 0; i < c->n_progs; i++) {
		struct probe_prog *p = &c->progs[i];

		if (!p->swap)
			continue;
		old = bpf_prog_get_fd_by_id(p->swap->info.prog_id);
		if (old < 0 && errno == EPERM)
			return gerr_set(err, 409, "program %s: replacing it in place while it runs "
					"needs CAP_SYS_ADMIN on this kernel (BPF_PROG_GET_FD_BY_ID), which "
					"graind lacks: detach the probe, then change it", p->name);
		if (old < 0)
			return gerr_set(err, 500, "program %s: the program of its running link is gone: %s",
					p->name, strerror(errno));
		snprintf(file, sizeof(file), PROBE_UNDO_PREFIX "%s", p->swap->file);
		ret = pin_fd(c->dir, file, old, err);
		close(old);
		if (ret < 0)
			return -1;
		if (probe_hook_swap(p, err) < 0)
			return -1;
	}
	return 0;
}

/* Put the staged generation in place of the live one in one rename; the
 * staging name then holds the old one (see txn.c). */
static int install(struct attach_ctx *c, uint64_t generation, struct gerr *err)
{
	struct gerr ignored;

	c->replaced = probe_dir_exists(c->dir);
	if (pin_staging(c, generation, err) < 0 || lend_links(c, err) < 0 ||
	    probe_dir_move(c->staging, c->dir, c->replaced, err) < 0)
		goto fail;
	return 0;
fail:
	probe_undo_relink(c->dir);
	probe_undo_unpin(c->dir);
	probe_dir_remove(c->staging, &ignored);
	return -1;
}

static void ctx_release(struct attach_ctx *c)
{
	size_t i;

	for (i = 0; i < c->n_progs; i++)
		probe_hook_release(&c->progs[i]);
	free(c->progs);
	probe_old_links_free(c->old, c->n_old);
	bpf_object__close(c->obj);
	/* libbpf's parse of an object leaves a megabyte or more of freed
	 * heap behind, which an agent that then idles would keep resident;
	 * loads are rare enough to give it back each time. */
	malloc_trim(0);
}

/* After a failure: what a record (a tc filter, a place in an XDP
 * dispatcher) holds outlives its descriptors, unlike a link. Each one
 * that still runs this generation's program is undone; one that was
 * pinned and unpinned already, or lent nothing, is left. */
static void release_unpinned(struct attach_ctx *c)
{
	for (size_t i = 0; i < c->n_progs; i++)
		for (size_t k = 0; k < c->progs[i].n_links; k++)
			probe_link_release(c->progs[i].links[k].fd);
}

static int attach_new(struct attach_ctx *c, uint64_t generation,
		      const Graind__ProbeSpec *spec, const void *obj,
		      size_t obj_len, Graind__VerifyReport **report,
		      struct gerr *err)
{
	size_t i;

	if (probe_old_links_open(c->dir, &c->old, &c->n_old) < 0)
		return gerr_set(err, 500, "cannot read %s", c->dir);
	c->obj = elfchk_open(obj, obj_len, true, NULL, NULL, err);
	if (!c->obj)
		return -1;
	if (select_programs(c, spec, err) < 0 ||
	    probe_set_constants(c->obj, spec->constants, spec->n_constants, err) < 0 ||
	    probe_set_map_overrides(c->obj, spec->map_overrides, spec->n_map_overrides, err) < 0)
		return -1;
	for (i = 0; i < c->n_progs; i++) {
		if (probe_hook_resolve(&c->progs[i], c->old, c->n_old, err) < 0) {
			c->failed_program = c->progs[i].name;
			return -1;
		}
	}
	if (load(c, obj, obj_len, report, err) < 0 || attach_all(c, err) < 0 ||
	    install(c, generation, err) < 0) {
		release_unpinned(c);
		return -1;
	}
	return 0;
}

/* The old generation in staging goes now: there is nothing to undo. */
static void finish_now(const struct attach_ctx *c)
{
	struct gerr err = { 0 };

	if (c->replaced && probe_dir_remove(c->staging, &err) < 0)
		log_error("msg=\"cannot remove the replaced probe generation\" probe=%s error=\"%s\"",
			  c->name, err.msg);
}

int probe_attach(struct probe_mgr *mgr, const char *name, uint64_t generation,
		 const Graind__ProbeSpec *spec, const void *obj, size_t obj_len,
		 bool *adopted, Graind__VerifyReport **report,
		 struct probe_txn **txn, struct gerr *err)
{
	struct attach_ctx c = { .name = name };
	struct probe_txn *t = NULL;
	int ret = -1;

	*adopted = false;
	if (report)
		*report = NULL;
	if (txn)
		*txn = NULL;
	if (check_name(name, err) < 0 ||
	    probe_dirs(name, c.dir, c.staging, c.trash, err) < 0)
		return -1;
	if (txn && !(t = probe_txn_alloc()))
		return gerr_set(err, 500, "out of memory");

	pthread_mutex_lock(&mgr->lock);
	if (refuse_pending(mgr, name, err) < 0)
		goto out;
	probe_settle(name, c.dir, c.staging, c.trash, generation);
	if (probe_adoptable(c.dir, generation, true)) {
		*adopted = true;
		failure_clear(mgr, name);
		ret = 0;
		goto out;
	}
	ret = attach_new(&c, generation, spec, obj, obj_len, report, err);
	if (ret < 0) {
		failure_record(mgr, name, c.failed_program, err);
	} else {
		failure_clear(mgr, name);
		if (t) {
			probe_txn_start(t, mgr, c.replaced ? PROBE_TXN_REPLACED : PROBE_TXN_CREATED,
					name, c.dir, c.staging, c.trash);
			*txn = t;
			t = NULL;
		} else {
			finish_now(&c);
		}
		log_info("msg=\"probe attached\" probe=%s generation=%llu%s", name,
			 (unsigned long long)generation, txn ? " pending=1" : "");
	}
	ctx_release(&c);
out:
	pthread_mutex_unlock(&mgr->lock);
	free(t);
	return ret;
}

/* ---------------------------------------------------------------- detach */

int probe_detach(struct probe_mgr *mgr, const char *name,
		 struct probe_txn **txn, struct gerr *err)
{
	char dir[PATH_MAX], staging[PATH_MAX], trash[PATH_MAX];
	struct probe_txn *t = NULL;
	int ret = -1;

	if (txn)
		*txn = NULL;
	if (check_name(name, err) < 0 || probe_dirs(name, dir, staging, trash, err) < 0)
		return -1;
	if (txn && !(t = probe_txn_alloc()))
		return gerr_set(err, 500, "out of memory");
	pthread_mutex_lock(&mgr->lock);
	if (refuse_pending(mgr, name, err) < 0)
		goto out;
	failure_clear(mgr, name);
	probe_settle(name, dir, staging, trash, 0);
	if (!t) {
		ret = probe_dir_retire(dir, trash, err);
		goto out;
	}
	ret = 0;
	if (!probe_dir_exists(dir))
		goto out;		/* nothing changes in the kernel */
	/* The links pinned in trash keep every program attached until the
	 * commit unpins them. */
	ret = probe_dir_move(dir, trash, false, err);
	if (ret == 0) {
		probe_txn_start(t, mgr, PROBE_TXN_DETACHED, name, dir, staging, trash);
		*txn = t;
		t = NULL;
	}
out:
	pthread_mutex_unlock(&mgr->lock);
	free(t);
	return ret;
}

/* ---------------------------------------------------------------- status */

static int format_time(char **field, int64_t ms)
{
	char buf[CLOCK_TEXT_MAX];

	clock_format(ms, buf);
	return pbmsg_set_string(field, buf);
}

static void prog_stats(Graind__ProgramStatus *st)
{
	struct bpf_prog_info info;
	uint32_t len = sizeof(info);
	int fd = bpf_prog_get_fd_by_id(st->prog_id);

	if (fd < 0)
		return;
	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0) {
		st->run_count = info.run_cnt;
		st->run_time_ns = info.run_time_ns;
	}
	close(fd);
}

/* Where a classic tc program's filter is: it has no link to show. */
static int tc_filter_status(Graind__ProgramStatus *st, const struct probe_link_info *info)
{
	char ifname[IF_NAMESIZE] = "";
	Graind__TcFilter *tf;

	tf = (Graind__TcFilter *)pbmsg_new(&graind__tc_filter__descriptor);
	if (!tf)
		return -1;
	st->tc_filter = tf;
	if (info->ifindex)
		if_indextoname(info->ifindex, ifname);
	tf->direction = info->attach_type == PROBE_BPF_TCX_EGRESS ?
			GRAIND__TC_DIRECTION__TC_EGRESS : GRAIND__TC_DIRECTION__TC_INGRESS;
	tf->handle = info->tc_handle;
	tf->priority = info->tc_priority;
	return pbmsg_set_string(&tf->ifname, ifname);
}

/* Where an XDP program runs in libxdp's dispatcher: it has no link. */
static int xdp_slot_status(Graind__ProgramStatus *st, const struct probe_link_info *info)
{
	char ifname[IF_NAMESIZE] = "";
	struct probe_xdp_slot where;
	Graind__XdpSlot *slot;
	size_t n = 0;

	if (probe_xdp_describe(info->ifindex, info->prog_id, &where) < 0)
		return 0;	/* left the dispatcher a moment ago */
	slot = (Graind__XdpSlot *)pbmsg_new(&graind__xdp_slot__descriptor);
	if (!slot)
		return -1;
	st->xdp_slot = slot;
	slot->dispatcher_id = where.dispatcher_id;
	slot->priority = where.priority;
	slot->proceed_on = calloc(XDP_REDIRECT + 1, sizeof(*slot->proceed_on));
	if (!slot->proceed_on)
		return -1;
	for (unsigned int a = XDP_ABORTED; a <= XDP_REDIRECT; a++)
		if (where.proceed_on & (1u << a))
			slot->proceed_on[n++] = (Graind__XdpAction)a;
	slot->n_proceed_on = n;
	if_indextoname(info->ifindex, ifname);
	return pbmsg_set_string(&slot->ifname, ifname);
}

/* Fill st for program `prog` from the pins, the meta entry (may be NULL) and
 * the last failure (may be NULL). */
static int program_status(Graind__ProgramStatus *st, const char *dir,
			  const char *prog, const struct probe_meta_prog *mp,
			  const struct failure *f)
{
	struct probe_link_info first;
	bool alive;
	size_t n;

	if (pbmsg_set_string(&st->program, prog) < 0)
		return -1;
	n = mp ? probe_prog_links(dir, prog, &first, &alive) : 0;
	if (f && (!n || !f->program[0] || strcmp(f->program, prog) == 0)) {
		st->state = GRAIND__PROGRAM_STATE__PROGRAM_FAILED;
		if (pbmsg_set_string(&st->error, f->msg) < 0)
			return -1;
	} else {
		st->state = n && alive ? GRAIND__PROGRAM_STATE__PROGRAM_ATTACHED :
					 GRAIND__PROGRAM_STATE__PROGRAM_DETACHED;
		if (n && !alive && pbmsg_set_string(&st->error, "the link no longer hooks anything (interface removed?)") < 0)
			return -1;
	}
	if (!n)
		return 0;
	st->prog_id = first.prog_id;
	st->link_id = first.id;
	if (first.type == PROBE_LINK_TYPE_TC_FILTER && tc_filter_status(st, &first) < 0)
		return -1;
	if (first.type == PROBE_LINK_TYPE_XDP_SLOT && first.ifindex &&
	    xdp_slot_status(st, &first) < 0)
		return -1;
	prog_stats(st);
	return format_time(&st->attached_at, mp->attached_ms);
}

static const struct probe_meta_prog *meta_prog(const struct probe_meta *meta,
					       const char *name)
{
	uint32_t i;

	for (i = 0; meta && i < meta->n_progs; i++)
		if (strcmp(meta->progs[i].name, name) == 0)
			return &meta->progs[i];
	return NULL;
}

static int add_status(Graind__Probe *probe, const char *dir, const char *prog,
		      const struct probe_meta *meta, const struct failure *f)
{
	Graind__ProgramStatus *st, **grown;

	grown = realloc(probe->programs, (probe->n_programs + 1) * sizeof(*grown));
	if (!grown)
		return -1;
	probe->programs = grown;
	st = (Graind__ProgramStatus *)pbmsg_new(&graind__program_status__descriptor);
	if (!st)
		return -1;
	probe->programs[probe->n_programs++] = st;
	return program_status(st, dir, prog, meta_prog(meta, prog), f);
}

static int fill_status(Graind__Probe *probe, const char *dir,
		       const struct probe_meta *meta, const struct failure *f)
{
	const Graind__ProbeSpec *spec = probe->spec;
	size_t i;

	if (spec && spec->n_programs) {
		for (i = 0; i < spec->n_programs; i++)
			if (add_status(probe, dir, spec->programs[i]->program, meta, f) < 0)
				return -1;
		return 0;
	}
	if (meta) {
		for (i = 0; i < meta->n_progs; i++)
			if (add_status(probe, dir, meta->progs[i].name, meta, f) < 0)
				return -1;
		return 0;
	}
	if (f)
		return add_status(probe, dir, f->program, NULL, f);
	return 0;
}

int probe_status(struct probe_mgr *mgr, Graind__Probe *probe, struct gerr *err)
{
	struct failure failure;
	bool found;
	struct probe_meta *meta;
	char dir[PATH_MAX];
	size_t i;
	int ret = 0;

	if (check_name(probe->name, err) < 0)
		return -1;
	if (probe_dir(dir, sizeof(dir), "", probe->name) < 0)
		return gerr_set(err, 400, "probe name %s is too long", probe->name);
	meta = calloc(1, sizeof(*meta));
	if (!meta)
		return gerr_set(err, 500, "out of memory");
	for (i = 0; i < probe->n_programs; i++)
		pbmsg_free((ProtobufCMessage *)probe->programs[i]);
	free(probe->programs);
	probe->programs = NULL;
	probe->n_programs = 0;

	/* Pins change by atomic renames, so they are read without the lock,
	 * which an attach holds for as long as the verifier runs. */
	if (probe_meta_read(dir, meta) < 0) {
		free(meta);
		meta = NULL;
	}
	/* A failure matters only while nothing runs: a refused update leaves
	 * the pinned generation running, and that is what the kernel has. */
	found = !meta && failure_find(mgr, probe->name, &failure);
	if (fill_status(probe, dir, meta, found ? &failure : NULL) < 0 ||
	    probe_warnings_fill(mgr->warnings, probe) < 0)
		ret = gerr_set(err, 500, "out of memory");
	free(meta);
	return ret;
}

int probe_set_warnings(struct probe_mgr *mgr, const char *name, const char *const *texts,
		       size_t n)
{
	return probe_warnings_set(mgr->warnings, name, texts, n);
}

uint64_t probe_pinned_generation(struct probe_mgr *mgr, const char *name)
{
	struct probe_meta *meta = calloc(1, sizeof(*meta));
	char dir[PATH_MAX];
	uint64_t gen = 0;

	if (!meta || check_name(name, NULL) < 0 ||
	    probe_dir(dir, sizeof(dir), "", name) < 0) {
		free(meta);
		return 0;
	}
	pthread_mutex_lock(&mgr->lock);
	if (probe_meta_read(dir, meta) == 0)
		gen = meta->generation;
	pthread_mutex_unlock(&mgr->lock);
	free(meta);
	return gen;
}

/* Whether `file` in the pin root names a probe not yet listed; a staging or
 * trash directory alone (what a crash left) names its probe too. Strips
 * the prefix. */
static bool listed_once(char *file)
{
	const char *prefixes[] = { PROBE_STAGING_PREFIX, PROBE_TRASH_PREFIX };
	char path[PATH_MAX];
	size_t i, k;

	if (file[0] != '_')
		return true;
	for (i = 0; i < 2; i++) {
		size_t n = strlen(prefixes[i]);

		if (strncmp(file, prefixes[i], n) != 0)
			continue;
		/* The names that come before this one in the order live,
		 * staging, trash. */
		for (k = 0; k <= i; k++) {
			if (probe_dir(path, sizeof(path), k ? prefixes[k - 1] : "", file + n) == 0 &&
			    probe_dir_exists(path))
				return false;
		}
		memmove(file, file + n, strlen(file + n) + 1);
		return true;
	}
	return false;
}

int probe_list_pinned(struct probe_mgr *mgr,
		      int (*fn)(const char *name, void *ctx), void *ctx)
{
	struct dirent *de;
	DIR *d;
	int ret = 0;

	(void)mgr;
	d = opendir(pin_root);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while (ret == 0 && (de = readdir(d))) {
		char *p;

		if (de->d_name[0] == '.' || de->d_type != DT_DIR || !listed_once(de->d_name))
			continue;
		for (p = de->d_name; *p; p++)
			if (*p == ':')
				*p = '.';
		ret = fn(de->d_name, ctx);
	}
	closedir(d);
	return ret;
}

/* The bytes the kernel charges a map for (fdinfo's memlock), 0 when unknown. */
static uint64_t map_memlock(int fd)
{
	char path[64], line[128];
	unsigned long long v = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = fopen(path, "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "memlock: %llu", &v) == 1)
			break;
	fclose(f);
	return v;
}

int probe_cost(const char *name, uint64_t *run_time_ns, uint64_t *map_bytes)
{
	char dir[PATH_MAX], path[PATH_MAX + 256];
	struct probe_meta *meta;
	struct dirent *de;
	DIR *d;

	*run_time_ns = *map_bytes = 0;
	if (check_name(name, NULL) < 0 || probe_dir(dir, sizeof(dir), "", name) < 0 ||
	    !(meta = calloc(1, sizeof(*meta))))
		return -1;
	if (probe_meta_read(dir, meta) < 0 || !(d = opendir(dir))) {
		free(meta);
		return -1;
	}
	for (uint32_t i = 0; i < meta->n_progs; i++) {
		struct probe_link_info first;
		struct bpf_prog_info info;
		uint32_t len = sizeof(info);
		bool alive;
		int fd;

		if (!probe_prog_links(dir, meta->progs[i].name, &first, &alive) ||
		    (fd = bpf_prog_get_fd_by_id(first.prog_id)) < 0)
			continue;
		memset(&info, 0, sizeof(info));
		if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0)
			*run_time_ns += info.run_time_ns;
		close(fd);
	}
	while ((de = readdir(d))) {
		int fd;

		if (strncmp(de->d_name, "map_", 4) != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		fd = bpf_obj_get(path);
		if (fd < 0)
			continue;
		*map_bytes += map_memlock(fd);
		close(fd);
	}
	closedir(d);
	free(meta);
	return 0;
}

int probe_map_open(const char *name, const char *map)
{
	char dir[PATH_MAX], file[256], path[PATH_MAX + 256];
	int fd;

	if (check_name(name, NULL) < 0 || probe_dir(dir, sizeof(dir), "", name) < 0)
		return -EINVAL;
	probe_map_file(file, sizeof(file), map);
	snprintf(path, sizeof(path), "%s/%s", dir, file);
	fd = bpf_obj_get(path);
	return fd < 0 ? -errno : fd;
}
