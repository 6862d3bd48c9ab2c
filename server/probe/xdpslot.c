/* XDP programs in libxdp's multi-program dispatcher, so that several
 * probes and other tools (xdp-loader, xdp-filter) share an interface in
 * run-priority order.
 *
 * libxdp owns the dispatcher and its pins under its own bpffs directory,
 * as its protocol requires; the program is an extension (freplace) of one
 * of the dispatcher's slots, which libxdp loads itself: it turns the
 * program into one before it loads the whole object. So graind has no
 * link to pin. Each program it put there is recorded instead by a
 * single-entry array map (struct xdp_record) pinned where a link would be
 * (link_<prog>): the interface and the program's id. What the dispatcher
 * runs is asked each time, so a record reads like a link
 * (probe_link_info): it hooks nothing once the program is no longer in
 * the interface's dispatcher.
 *
 * The dispatcher outlives every pin of graind's, so unpinning detaches
 * nothing: the record's owner takes the program out first
 * (probe_xdp_release). A change of a probe puts the new program in beside
 * the old one, which leaves when the old generation is removed: for that
 * moment both run, and the other programs on the interface never stop. */
#include "server/probe/internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <xdp/libxdp.h>

#include "server/util/log.h"

#define XDP_RECORD_MAGIC 0x67726e78u	/* "grnx" */

struct xdp_record {
	uint32_t magic;
	uint32_t ifindex;
	uint32_t prog_id;		/* what this generation put into the dispatcher */
	uint32_t mode;			/* enum xdp_attach_mode */
};

static int record_read(int fd, struct xdp_record *rec)
{
	return probe_record_read(fd, rec, sizeof(*rec), XDP_RECORD_MAGIC);
}

bool probe_xdp_is_record(int fd)
{
	struct xdp_record rec;

	return record_read(fd, &rec) == 0;
}

/* libxdp speaks to stderr unless told otherwise: into the agent's log. */
static int libxdp_log(enum libxdp_print_level level, const char *fmt, va_list args)
{
	char line[512];
	size_t n;

	if (level == LIBXDP_DEBUG)
		return 0;
	vsnprintf(line, sizeof(line), fmt, args);
	n = strlen(line);
	while (n && line[n - 1] == '\n')
		line[--n] = '\0';
	for (char *c = line; *c; c++)
		if (*c == '"' || *c == '\n')
			*c = '\'';
	if (level == LIBXDP_WARN)
		log_warn("msg=\"libxdp: %s\"", line);
	else
		log_info("msg=\"libxdp: %s\"", line);
	return 0;
}

static void route_libxdp_log(void)
{
	libxdp_set_print(libxdp_log);
}

static void libxdp_init(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, route_libxdp_log);
}

/* libxdp changes the dispatcher under this lock, and no one reads it
 * meanwhile: see sweep_leaks(). */
static pthread_rwlock_t dispatch_lock = PTHREAD_RWLOCK_INITIALIZER;

/* What runs on ifindex, read while libxdp changes nothing there. */
static int dispatch_read(uint32_t ifindex, struct xdp_dispatch *d)
{
	int ret;

	pthread_rwlock_rdlock(&dispatch_lock);
	ret = xdp_dispatch_read(ifindex, d);
	pthread_rwlock_unlock(&dispatch_lock);
	return ret;
}

static bool in_dispatcher(const struct xdp_record *rec)
{
	struct xdp_dispatch d;

	return dispatch_read(rec->ifindex, &d) == 0 && xdp_dispatch_find(&d, rec->prog_id);
}

int probe_xdp_info(int fd, struct probe_link_info *out)
{
	struct xdp_record rec;
	int ret = record_read(fd, &rec);

	if (ret < 0)
		return ret;
	memset(out, 0, sizeof(*out));
	out->type = PROBE_LINK_TYPE_XDP_SLOT;
	if (in_dispatcher(&rec)) {
		out->prog_id = rec.prog_id;
		out->ifindex = rec.ifindex;
	}
	return 0;
}

int probe_xdp_describe(uint32_t ifindex, uint32_t prog_id, struct probe_xdp_slot *out)
{
	const struct xdp_dispatch_slot *slot;
	struct xdp_dispatch d;
	int ret;

	memset(out, 0, sizeof(*out));
	ret = dispatch_read(ifindex, &d);
	slot = ret == 0 ? xdp_dispatch_find(&d, prog_id) : NULL;
	if (!slot)
		return -ENOENT;
	out->dispatcher_id = d.dispatcher_id;
	out->priority = slot->priority;
	out->proceed_on = slot->proceed_on;
	return 0;
}

uint32_t probe_xdp_lone_program(uint32_t ifindex)
{
	struct xdp_dispatch d;

	return dispatch_read(ifindex, &d) == 0 ? d.lone_id : 0;
}

/* The descriptors open now, sorted; *n of them. */
static int *open_fds(size_t *n)
{
	struct dirent *de;
	int *fds = NULL, *grown;
	size_t cap = 0;
	DIR *d = opendir("/proc/self/fd");

	*n = 0;
	if (!d)
		return NULL;
	while ((de = readdir(d))) {
		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		if (*n == cap) {
			cap = cap ? 2 * cap : 64;
			grown = realloc(fds, cap * sizeof(*fds));
			if (!grown)
				break;
			fds = grown;
		}
		fds[(*n)++] = atoi(de->d_name);
	}
	closedir(d);
	return fds;
}

static bool listed(const int *fds, size_t n, int fd)
{
	for (size_t i = 0; i < n; i++)
		if (fds[i] == fd)
			return true;
	return false;
}

/* A program descriptor of the dispatcher or of a program in one (an
 * extension) that obj, when set, does not own. */
static bool is_libxdp_prog_fd(int fd, struct bpf_object *obj)
{
	struct bpf_prog_info info;
	struct bpf_program *prog;
	uint32_t len = sizeof(info);

	if (!probe_fd_is(fd, "bpf-prog"))
		return false;
	if (obj)
		bpf_object__for_each_program(prog, obj)
			if (bpf_program__fd(prog) == fd)
				return false;
	memset(&info, 0, sizeof(info));
	return bpf_obj_get_info_by_fd(fd, &info, &len) == 0 &&
	       (info.type == BPF_PROG_TYPE_EXT || strcmp(info.name, "xdp_dispatcher") == 0);
}

/* libxdp 1.3.1 looks up the interface's dispatcher at every attach and
 * detach, and never closes the descriptors that lookup opens, of the
 * dispatcher and of every program in it (xdp_program__from_pin,
 * xdp_multiprog__from_id; fixed upstream after 1.3.1): each replaced
 * dispatcher, and each program taken out, would stay loaded for as long
 * as the agent runs. Nothing else in the agent opens such a program while
 * dispatch_lock is held for writing, so one that appeared during the call
 * and is still open is that leak, and is closed; the programs of obj,
 * which libxdp loaded for us, are ours. */
static void sweep_leaks(const int *before, size_t n_before, struct bpf_object *obj)
{
	size_t n;
	int *now = open_fds(&n);

	for (size_t i = 0; now && i < n; i++)
		if (!listed(before, n_before, now[i]) && is_libxdp_prog_fd(now[i], obj))
			close(now[i]);
	free(now);
}

static enum xdp_attach_mode libxdp_mode(uint32_t xdp_flags)
{
	if (xdp_flags & XDP_FLAGS_SKB_MODE)
		return XDP_MODE_SKB;
	if (xdp_flags & XDP_FLAGS_DRV_MODE)
		return XDP_MODE_NATIVE;
	return XDP_MODE_UNSPEC;
}

/* The spec's priority and actions, over the object's .xdp_run_config. */
static int apply_run_config(const struct probe_prog *p, struct xdp_program *xp)
{
	const Graind__XdpAttach *x = p->attach &&
		p->attach->kind_case == GRAIND__ATTACH_SPEC__KIND_XDP ? p->attach->xdp : NULL;
	int ret = 0;

	if (!x)
		return 0;
	if (x->priority)
		ret = xdp_program__set_run_prio(xp, x->priority);
	for (unsigned int a = XDP_ABORTED; ret == 0 && x->n_proceed_on && a <= XDP_REDIRECT; a++) {
		bool on = false;

		for (size_t i = 0; i < x->n_proceed_on; i++)
			on |= (unsigned int)x->proceed_on[i] == a;
		ret = xdp_program__set_chain_call_enabled(xp, a, on);
	}
	return ret;
}

static int record_new(const struct xdp_record *rec)
{
	return probe_record_new("graind_xdp", rec, sizeof(*rec));
}

/* With dispatch_lock held for writing. Not xdp_program__from_id(),
 * which leaks the descriptor it opens in 1.3.1. */
static void take_out_locked(const struct xdp_record *rec)
{
	struct xdp_program *xp;
	int fd = bpf_prog_get_fd_by_id(rec->prog_id), ret;

	libxdp_init();		/* an agent that adopted the probe loaded nothing */
	if (fd < 0)
		return;		/* gone already */
	xp = xdp_program__from_fd(fd);
	close(fd);
	if (!xp || libxdp_get_error(xp))
		return;
	ret = xdp_program__detach(xp, (int)rec->ifindex, (enum xdp_attach_mode)rec->mode, 0);
	if (ret < 0 && ret != -ENOENT)
		log_error("msg=\"cannot take an XDP program out of the dispatcher\" ifindex=%u prog_id=%u error=\"%s\"",
			  rec->ifindex, rec->prog_id, strerror(-ret));
	xdp_program__close(xp);
}

static void take_out(const struct xdp_record *rec)
{
	size_t n;
	int *before;

	pthread_rwlock_wrlock(&dispatch_lock);
	before = open_fds(&n);
	take_out_locked(rec);
	sweep_leaks(before, n, NULL);
	pthread_rwlock_unlock(&dispatch_lock);
	free(before);
}

static int attach_failure(const struct probe_prog *p, int ret, struct gerr *err)
{
	char reason[128];

	libxdp_strerror(ret, reason, sizeof(reason));
	if (ret == -EEXIST || ret == -EBUSY)
		return gerr_set(err, 409, "program %s: cannot join the XDP dispatcher of %s: %s (is it attached in another mode?)",
				p->name, p->ifname, reason);
	return gerr_set(err, ret == -EOPNOTSUPP ? 422 : 500,
			"program %s: cannot join the XDP dispatcher of %s: %s", p->name, p->ifname,
			reason);
}

int probe_xdp_load_attach(struct probe_prog *p, struct bpf_object *obj, int *record_fd,
			  struct gerr *err)
{
	DECLARE_LIBXDP_OPTS(xdp_program_opts, opts, .obj = obj, .prog_name = p->name);
	struct xdp_record rec = {
		.magic = XDP_RECORD_MAGIC,
		.ifindex = (uint32_t)p->ifindex,
		.mode = libxdp_mode(p->xdp_flags),
	};
	struct xdp_program *xp;
	size_t n_before;
	int *before, ret;

	libxdp_init();
	*record_fd = -1;
	xp = xdp_program__create(&opts);
	ret = (int)libxdp_get_error(xp);
	if (!xp || ret)
		return gerr_set(err, 500, "program %s: libxdp cannot take it: %s", p->name,
				strerror(ret ? -ret : ENOMEM));
	if (apply_run_config(p, xp) < 0) {
		xdp_program__close(xp);
		return gerr_set(err, 400, "program %s: libxdp refuses its priority or proceedOn", p->name);
	}
	pthread_rwlock_wrlock(&dispatch_lock);
	before = open_fds(&n_before);
	ret = xdp_program__attach(xp, p->ifindex, (enum xdp_attach_mode)rec.mode, 0);
	rec.prog_id = xdp_program__id(xp);
	xdp_program__close(xp);
	sweep_leaks(before, n_before, obj);
	pthread_rwlock_unlock(&dispatch_lock);
	free(before);
	if (ret == 0 && !rec.prog_id)
		rec.prog_id = probe_prog_id(bpf_program__fd(p->prog));
	if (ret < 0)
		return attach_failure(p, ret, err);
	if (!in_dispatcher(&rec)) {
		/* libxdp fell back to attaching it alone. */
		take_out(&rec);
		return gerr_set(err, 422, "program %s: libxdp attached it to %s without its dispatcher, which graind does not manage",
				p->name, p->ifname);
	}
	*record_fd = record_new(&rec);
	if (*record_fd >= 0)
		return 0;
	take_out(&rec);
	return gerr_set(err, 500, "program %s: cannot record its place in the XDP dispatcher: %s",
			p->name, strerror(-*record_fd));
}

int probe_xdp_release(int record_fd)
{
	struct xdp_record rec;
	int ret = record_read(record_fd, &rec);

	if (ret < 0)
		return ret;
	if (in_dispatcher(&rec))
		take_out(&rec);
	return 0;
}
