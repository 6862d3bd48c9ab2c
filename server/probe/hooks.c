/* Where each program goes: the attach spec checked against the program type
 * and the machine, then the link itself. Every link is kept as a plain fd so
 * that it can be pinned and closed the same way whatever made it. */
#include "server/probe/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <linux/perf_event.h>
#include <net/if.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "server/elf/internal.h"
#include "server/features.h"

#define KPROBE_PMU "/sys/bus/event_source/devices/kprobe"

static const char *hook_name(enum probe_hook hook)
{
	switch (hook) {
	case HOOK_XDP:			return "xdp";
	case HOOK_TC:			return "tc";
	case HOOK_TRACEPOINT:		return "tracepoint";
	case HOOK_RAW_TRACEPOINT:	return "raw_tracepoint";
	case HOOK_UPROBE:		return "uprobe";
	case HOOK_KPROBE:		return "kprobe";
	case HOOK_PERF_EVENT:		return "perf_event";
	case HOOK_CGROUP:		return "cgroup";
	case HOOK_LIBBPF_AUTO:		return "auto";
	}
	return "?";
}

static const char *prog_type_name(const struct bpf_program *prog)
{
	const char *s = libbpf_bpf_prog_type_str(bpf_program__type(prog));

	return s ? s : "unknown";
}

static bool type_fits(enum probe_hook hook, enum bpf_prog_type type)
{
	switch (hook) {
	case HOOK_XDP:
		return type == BPF_PROG_TYPE_XDP;
	case HOOK_TC:
		return type == BPF_PROG_TYPE_SCHED_CLS;
	case HOOK_TRACEPOINT:
		return type == BPF_PROG_TYPE_TRACEPOINT;
	case HOOK_RAW_TRACEPOINT:
		return type == BPF_PROG_TYPE_RAW_TRACEPOINT ||
		       type == BPF_PROG_TYPE_RAW_TRACEPOINT_WRITABLE;
	case HOOK_UPROBE:
	case HOOK_KPROBE:
		return type == BPF_PROG_TYPE_KPROBE;
	case HOOK_PERF_EVENT:
		return type == BPF_PROG_TYPE_PERF_EVENT;
	case HOOK_CGROUP:
		return type == BPF_PROG_TYPE_CGROUP_SKB ||
		       type == BPF_PROG_TYPE_CGROUP_SOCK ||
		       type == BPF_PROG_TYPE_CGROUP_SOCK_ADDR ||
		       type == BPF_PROG_TYPE_CGROUP_SOCKOPT ||
		       type == BPF_PROG_TYPE_CGROUP_SYSCTL ||
		       type == BPF_PROG_TYPE_CGROUP_DEVICE ||
		       type == BPF_PROG_TYPE_SOCK_OPS;
	case HOOK_LIBBPF_AUTO:
		return true;
	}
	return false;
}

static bool kprobes_available(void)
{
	return access(KPROBE_PMU, F_OK) == 0;
}

static int kprobes_missing(struct gerr *err)
{
	return gerr_set(err, 422, "kprobes are not available: kernel built without CONFIG_KPROBES");
}

/* ---------------------------------------------------------------- resolve */

/* TCX where the kernel has it, unless the spec asks for a classic filter. */
static int tc_mode(struct probe_prog *p, Graind__TcMode mode, struct gerr *err)
{
	bool tcx = features_tcx();

	if (mode == GRAIND__TC_MODE__TC_MODE_TCX && !tcx)
		return gerr_set(err, 422, "program %s: TCX links are missing from this kernel (6.6 has them): use mode TC_MODE_CLASSIC or TC_MODE_AUTO",
				p->name);
	p->tc_classic = mode == GRAIND__TC_MODE__TC_MODE_CLASSIC ||
			(mode == GRAIND__TC_MODE__TC_MODE_AUTO && !tcx);
	return 0;
}

/* Where among the TCX links of its hook p's new link goes: first (before
 * all), last (after all), or before/after another link. */
static int tc_place(struct probe_prog *p, const Graind__TcAttach *tc, struct gerr *err)
{
	switch (tc->place_case) {
	case GRAIND__TC_ATTACH__PLACE_FIRST:
		p->tc_place = tc->first ? PROBE_BPF_F_BEFORE : 0;
		break;
	case GRAIND__TC_ATTACH__PLACE_LAST:
		p->tc_place = tc->last ? PROBE_BPF_F_AFTER : 0;
		break;
	case GRAIND__TC_ATTACH__PLACE_BEFORE:
		p->tc_place = PROBE_BPF_F_BEFORE | PROBE_BPF_F_LINK;
		break;
	case GRAIND__TC_ATTACH__PLACE_AFTER:
		p->tc_place = PROBE_BPF_F_AFTER | PROBE_BPF_F_LINK;
		break;
	default:
		p->tc_place = 0;
	}
	if (p->tc_place && p->tc_classic)
		return gerr_set(err, 422, "program %s: first, last, before and after place TCX links; classic tc filters run in the order of tc.priority",
				p->name);
	return 0;
}

const char *probe_hook_relative(const struct probe_prog *p)
{
	if (p->hook != HOOK_TC || !(p->tc_place & PROBE_BPF_F_LINK) || p->swap)
		return NULL;
	return p->attach->tc->place_case == GRAIND__TC_ATTACH__PLACE_BEFORE ?
	       p->attach->tc->before : p->attach->tc->after;
}

/* The hook an explicit spec asks for. */
static int hook_of_spec(struct probe_prog *p, struct gerr *err)
{
	const Graind__AttachSpec *a = p->attach;

	switch (a->kind_case) {
	case GRAIND__ATTACH_SPEC__KIND_XDP:
		p->hook = HOOK_XDP;
		p->ifname = a->xdp->ifname;
		if (a->xdp->mode == GRAIND__XDP_MODE__XDP_MODE_SKB)
			p->xdp_flags = XDP_FLAGS_SKB_MODE;
		else if (a->xdp->mode == GRAIND__XDP_MODE__XDP_MODE_DRV)
			p->xdp_flags = XDP_FLAGS_DRV_MODE;
		else if (a->xdp->mode == GRAIND__XDP_MODE__XDP_MODE_HW)
			p->xdp_flags = XDP_FLAGS_HW_MODE;
		return 0;
	case GRAIND__ATTACH_SPEC__KIND_TC:
		p->hook = HOOK_TC;
		p->ifname = a->tc->ifname;
		p->attach_type = a->tc->direction == GRAIND__TC_DIRECTION__TC_EGRESS ?
				 PROBE_BPF_TCX_EGRESS : PROBE_BPF_TCX_INGRESS;
		if (tc_mode(p, a->tc->mode, err) < 0)
			return -1;
		return tc_place(p, a->tc, err);
	case GRAIND__ATTACH_SPEC__KIND_TRACEPOINT:
		p->hook = HOOK_TRACEPOINT;
		return 0;
	case GRAIND__ATTACH_SPEC__KIND_RAW_TRACEPOINT:
		p->hook = HOOK_RAW_TRACEPOINT;
		return 0;
	case GRAIND__ATTACH_SPEC__KIND_UPROBE:
	case GRAIND__ATTACH_SPEC__KIND_URETPROBE:
		p->hook = HOOK_UPROBE;
		return 0;
	case GRAIND__ATTACH_SPEC__KIND_KPROBE:
	case GRAIND__ATTACH_SPEC__KIND_KRETPROBE:
		p->hook = HOOK_KPROBE;
		return 0;
	case GRAIND__ATTACH_SPEC__KIND_PERF_EVENT:
		p->hook = HOOK_PERF_EVENT;
		return 0;
	case GRAIND__ATTACH_SPEC__KIND_CGROUP:
		p->hook = HOOK_CGROUP;
		return 0;
	case GRAIND__ATTACH_SPEC__KIND_AUTO:
	case GRAIND__ATTACH_SPEC__KIND__NOT_SET:
	default:
		break;
	}
	return gerr_set(err, 400, "program %s: unknown attach kind", p->name);
}

/* The hook the section name implies, as bpf_program__attach() would. */
static int hook_of_section(struct probe_prog *p, struct gerr *err)
{
	enum bpf_prog_type type = bpf_program__type(p->prog);
	const char *sec = bpf_program__section_name(p->prog);

	p->ifname = p->attach && p->attach->auto_ ? p->attach->auto_->ifname : "";
	switch (type) {
	case BPF_PROG_TYPE_XDP:
		p->hook = HOOK_XDP;
		break;
	case BPF_PROG_TYPE_SCHED_CLS:
		p->hook = HOOK_TC;
		p->attach_type = strstr(sec, "egress") ? PROBE_BPF_TCX_EGRESS :
							 PROBE_BPF_TCX_INGRESS;
		if (tc_mode(p, GRAIND__TC_MODE__TC_MODE_AUTO, err) < 0)
			return -1;
		break;
	case BPF_PROG_TYPE_PERF_EVENT:
		return gerr_set(err, 400, "program %s is perf_event; it needs a perf_event attach spec (type, config, sample period)",
				p->name);
	case BPF_PROG_TYPE_CGROUP_SKB:
	case BPF_PROG_TYPE_CGROUP_SOCK:
	case BPF_PROG_TYPE_CGROUP_SOCK_ADDR:
	case BPF_PROG_TYPE_CGROUP_SOCKOPT:
	case BPF_PROG_TYPE_CGROUP_SYSCTL:
	case BPF_PROG_TYPE_CGROUP_DEVICE:
	case BPF_PROG_TYPE_SOCK_OPS:
		return gerr_set(err, 400, "program %s is %s; it needs a cgroup attach spec naming the cgroup",
				p->name, prog_type_name(p->prog));
	case BPF_PROG_TYPE_KPROBE:
		if ((!strncmp(sec, "kprobe", 6) || !strncmp(sec, "kretprobe", 9)) &&
		    !kprobes_available())
			return kprobes_missing(err);
		/* fallthrough */
	default:
		p->hook = HOOK_LIBBPF_AUTO;
		return 0;
	}
	if (!p->ifname[0])
		return gerr_set(err, 400, "program %s is %s; attaching it needs an interface (ifname)",
				p->name, prog_type_name(p->prog));
	return 0;
}

static int find_ifindex(struct probe_prog *p, struct gerr *err)
{
	if (!p->ifname[0])
		return gerr_set(err, 400, "program %s: %s attach needs ifname",
				p->name, hook_name(p->hook));
	p->ifindex = if_nametoindex(p->ifname);
	if (!p->ifindex)
		return gerr_set(err, 404, "interface %s not found", p->ifname);
	return 0;
}

/* The old XDP/TC link this program takes over: XDP allows one program per
 * interface, TC one of each name per direction and mode. */
static struct probe_old_link *find_swap(const struct probe_prog *p,
					struct probe_old_link *old, size_t n_old)
{
	char want[NAME_MAX + 1];
	size_t i;

	snprintf(want, sizeof(want), "link_%s", p->name);
	for (i = 0; i < n_old; i++) {
		const struct probe_link_info *info = &old[i].info;

		if (old[i].taken || info->ifindex != (uint32_t)p->ifindex)
			continue;
		if (p->hook == HOOK_XDP && info->type == BPF_LINK_TYPE_XDP)
			return &old[i];
		if (p->hook == HOOK_TC &&
		    info->type == (p->tc_classic ? PROBE_LINK_TYPE_TC_FILTER : PROBE_BPF_LINK_TYPE_TCX) &&
		    info->attach_type == (uint32_t)p->attach_type &&
		    strcmp(old[i].file, want) == 0)
			return &old[i];
	}
	return NULL;
}

/* The XDP program on p's interface that is not p's to replace, or 0. */
static uint32_t foreign_xdp(const struct probe_prog *p)
{
	LIBBPF_OPTS(bpf_xdp_query_opts, q);
	uint32_t ids[4];

	if (bpf_xdp_query(p->ifindex, 0, &q) < 0)
		return 0;	/* no netlink answer: let the attach speak */
	ids[0] = q.prog_id, ids[1] = q.skb_prog_id;
	ids[2] = q.drv_prog_id, ids[3] = q.hw_prog_id;
	for (size_t i = 0; i < 4; i++)
		if (ids[i] && !(p->swap && p->swap->info.prog_id == ids[i]))
			return ids[i];
	return 0;
}

/* A link whose last pin was just removed (a detach a moment ago) is
 * released by the kernel a little later, from a work queue: its program
 * stays on the interface until then. So a foreign program gets half a
 * second to go before the answer is 409. */
#define XDP_RELEASE_WAIT_MS 500

static int check_xdp_free(struct probe_prog *p, struct gerr *err)
{
	uint32_t id = foreign_xdp(p);

	for (int waited = 0; id && waited < XDP_RELEASE_WAIT_MS; waited += 10) {
		usleep(10 * 1000);
		id = foreign_xdp(p);
	}
	if (id)
		return gerr_set(err, 409, "interface %s already runs XDP program id %u that is not part of this probe%s%s",
				p->ifname, id,
				features_xdp_dispatcher() ? "" : "; sharing an interface needs libxdp's dispatcher: ",
				features_xdp_dispatcher() ? "" : features_xdp_dispatcher_missing());
	return 0;
}

/* The interface runs no XDP program, or libxdp's dispatcher: a program
 * attached alone (by a tool without libxdp, or xdp-loader's fallback)
 * leaves no slot to take. */
static int check_dispatcher_joinable(struct probe_prog *p, struct gerr *err)
{
	uint32_t id = probe_xdp_lone_program((uint32_t)p->ifindex);

	for (int waited = 0; id && waited < XDP_RELEASE_WAIT_MS; waited += 10) {
		usleep(10 * 1000);
		id = probe_xdp_lone_program((uint32_t)p->ifindex);
	}
	if (id)
		return gerr_set(err, 409, "interface %s already runs XDP program id %u alone, not in libxdp's dispatcher: detach it, or load it with xdp-loader, to share the interface",
				p->ifname, id);
	return 0;
}

/* XDP joins libxdp's dispatcher where the kernel can run it, except in
 * hardware offload (one program) and where this probe's previous
 * generation holds the interface with a link of its own: its update
 * swaps the program on that link as before. */
static bool use_dispatcher(const struct probe_prog *p)
{
	return features_xdp_dispatcher() && !(p->xdp_flags & XDP_FLAGS_HW_MODE) &&
	       !(p->swap && p->swap->info.type == BPF_LINK_TYPE_XDP);
}

static int resolve_cgroup(struct probe_prog *p, struct gerr *err)
{
	const Graind__CgroupAttach *c = p->attach->cgroup;
	struct statfs fs;
	int t;

	p->attach_type = bpf_program__expected_attach_type(p->prog);
	if (c->attach_type[0]) {
		for (t = 0; t < __MAX_BPF_ATTACH_TYPE; t++) {
			const char *s = libbpf_bpf_attach_type_str(t);

			if (s && strcmp(s, c->attach_type) == 0)
				break;
		}
		if (t == __MAX_BPF_ATTACH_TYPE)
			return gerr_set(err, 400, "program %s: unknown cgroup attach type %s (e.g. cgroup_inet_ingress)",
					p->name, c->attach_type);
		p->attach_type = t;
		bpf_program__set_expected_attach_type(p->prog, t);
	}
	p->cgroup_fd = open(c->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (p->cgroup_fd < 0)
		return gerr_set(err, errno == ENOENT || errno == ENOTDIR ? 404 : 400,
				"cgroup %s not found: %s", c->path, strerror(errno));
	if (fstatfs(p->cgroup_fd, &fs) < 0 || fs.f_type != CGROUP2_SUPER_MAGIC)
		return gerr_set(err, 400, "%s is not a cgroup v2 directory (see the cgroup2 line of /proc/mounts)",
				c->path);
	return 0;
}

static int resolve_uprobe(struct probe_prog *p, struct gerr *err)
{
	const Graind__UprobeAttach *u = p->attach->uprobe;   /* or uretprobe: one storage */

	if (!u->binary[0])
		return gerr_set(err, 400, "program %s: uprobe needs a binary", p->name);
	if (strchr(u->binary, '/') && access(u->binary, F_OK) < 0)
		return gerr_set(err, 404, "binary %s not found", u->binary);
	return 0;
}

int probe_hook_resolve(struct probe_prog *p, struct probe_old_link *old,
		       size_t n_old, struct gerr *err)
{
	enum bpf_prog_type type = bpf_program__type(p->prog);
	int ret;

	p->cgroup_fd = -1;
	p->tc_relative_fd = -1;
	p->tc_place = 0;
	p->xdp_slot = false;
	p->ifname = "";
	if (!p->attach || p->attach->kind_case == GRAIND__ATTACH_SPEC__KIND_AUTO ||
	    p->attach->kind_case == GRAIND__ATTACH_SPEC__KIND__NOT_SET)
		ret = hook_of_section(p, err);
	else
		ret = hook_of_spec(p, err);
	if (ret < 0)
		return ret;
	if (!type_fits(p->hook, type))
		return gerr_set(err, 400, "program %s is %s; it cannot attach as %s %s",
				p->name, prog_type_name(p->prog),
				p->hook == HOOK_XDP ? "an" : "a",
				hook_name(p->hook));

	if ((p->hook == HOOK_TRACEPOINT || p->hook == HOOK_KPROBE || p->hook == HOOK_UPROBE ||
	     p->hook == HOOK_PERF_EVENT) && !features_perf_link())
		return gerr_set(err, 422, "program %s: %s needs BPF links on perf events to stay attached, which this kernel lacks (5.15 has them)",
				p->name, hook_name(p->hook));
	switch (p->hook) {
	case HOOK_XDP:
		if (find_ifindex(p, err) < 0)
			return -1;
		p->swap = find_swap(p, old, n_old);
		p->xdp_slot = use_dispatcher(p);
		if (!p->xdp_slot)
			return check_xdp_free(p, err);
		p->swap = NULL;		/* the old program leaves with its generation */
		return check_dispatcher_joinable(p, err);
	case HOOK_TC:
		if (find_ifindex(p, err) < 0)
			return -1;
		p->swap = find_swap(p, old, n_old);
		return 0;
	case HOOK_KPROBE:
		return kprobes_available() ? 0 : kprobes_missing(err);
	case HOOK_UPROBE:
		return resolve_uprobe(p, err);
	case HOOK_CGROUP:
		return resolve_cgroup(p, err);
	case HOOK_PERF_EVENT:
		if (!p->attach->perf_event->sample_period && !p->attach->perf_event->sample_freq)
			return gerr_set(err, 400, "program %s: perf_event needs sample_period or sample_freq",
					p->name);
		return 0;
	default:
		return 0;
	}
}

/* ---------------------------------------------------------------- attach */

static int add_link(struct probe_prog *p, int fd, const char *suffix)
{
	struct probe_link *l;

	l = realloc(p->links, (p->n_links + 1) * sizeof(*l));
	if (!l) {
		close(fd);
		return -1;
	}
	p->links = l;
	l = &p->links[p->n_links++];
	l->fd = fd;
	snprintf(l->file, sizeof(l->file), "link_%s%s", p->name, suffix);
	return 0;
}

/* A libbpf link becomes a plain fd: the dup keeps the kernel link alive
 * when libbpf closes its own descriptors. libbpf also disables the perf
 * event of a tracepoint or uprobe link then, which does not stop the
 * program: it runs from the probe itself, not from the event. */
static int take_libbpf_link(struct probe_prog *p, struct bpf_link *link,
			    const char *suffix)
{
	int fd = fcntl(bpf_link__fd(link), F_DUPFD_CLOEXEC, 0);

	bpf_link__destroy(link);
	if (fd < 0)
		return -1;
	return add_link(p, fd, suffix);
}

static int attach_error(const struct probe_prog *p, int ret, const char *what,
			const struct elfchk_capture *cap, struct gerr *err)
{
	char reason[128];
	int status;

	switch (-ret) {
	case ENOENT:
	case ENODEV:
		status = 404;
		break;
	case EEXIST:
	case EBUSY:
		status = 409;
		break;
	case EINVAL:
		status = 400;
		break;
	case EOPNOTSUPP:
	case 524:	/* ENOTSUPP, kernel-internal */
		status = 422;
		break;
	case E2BIG:
		/* A tracepoint's perf event runs at most 64 programs. */
		return gerr_set(err, 409, "program %s: cannot attach to %s: the hook already "
				"runs as many BPF programs as the kernel allows (E2BIG)",
				p->name, what);
	default:
		status = 500;
	}
	libbpf_strerror(ret, reason, sizeof(reason));
	if (cap && cap->first_warn[0])
		return gerr_set(err, status, "program %s: cannot attach to %s: %s (%s)",
				p->name, what, reason, cap->first_warn);
	return gerr_set(err, status, "program %s: cannot attach to %s: %s",
			p->name, what, reason);
}

/* The new generation pins the old link as its own; the program on it is
 * swapped only once everything else is in place (probe.c, lend_links). */
static int take_over(struct probe_prog *p, struct gerr *err)
{
	int fd = fcntl(p->swap->fd, F_DUPFD_CLOEXEC, 0);

	if (fd < 0 || add_link(p, fd, "") < 0)
		return gerr_set(err, 500, "out of file descriptors");
	p->swap->taken = true;
	return 0;
}

int probe_hook_load_slot(struct probe_prog *p, struct bpf_object *obj, struct gerr *err)
{
	int fd;

	if (probe_xdp_load_attach(p, obj, &fd, err) < 0)
		return -1;
	if (add_link(p, fd, "") < 0) {
		probe_xdp_release(fd);
		close(fd);
		return gerr_set(err, 500, "out of memory");
	}
	return 0;
}

int probe_hook_swap(struct probe_prog *p, struct gerr *err)
{
	int ret = probe_link_set_prog(p->swap->fd, bpf_program__fd(p->prog));

	return ret < 0 ? attach_error(p, ret, p->ifname, NULL, err) : 0;
}

/* BPF_LINK_CREATE of a TCX link with a place: libbpf 1.1 knows no TCX
 * fields. */
static int tcx_link_create(int prog_fd, const struct probe_prog *p)
{
	union {
		struct {
			uint32_t prog_fd, target_ifindex, attach_type, flags;
			uint32_t relative_fd, pad;
			uint64_t expected_revision;
		} link;
		unsigned char raw[32];
	} attr;

	memset(&attr, 0, sizeof(attr));
	attr.link.prog_fd = (uint32_t)prog_fd;
	attr.link.target_ifindex = (uint32_t)p->ifindex;
	attr.link.attach_type = (uint32_t)p->attach_type;
	attr.link.flags = p->tc_place;
	if (p->tc_place & PROBE_BPF_F_LINK)
		attr.link.relative_fd = (uint32_t)p->tc_relative_fd;
	return (int)syscall(SYS_bpf, BPF_LINK_CREATE, &attr, sizeof(attr));
}

/* The link p is placed against hooks the same interface and direction. */
static int check_relative(const struct probe_prog *p, struct gerr *err)
{
	struct probe_link_info info;
	const char *ref = probe_hook_relative(p);

	if (probe_link_info(p->tc_relative_fd, &info) < 0 || info.type != PROBE_BPF_LINK_TYPE_TCX)
		return gerr_set(err, 409, "program %s: %s is not a TCX link to place against",
				p->name, ref);
	if (info.ifindex != (uint32_t)p->ifindex || info.attach_type != (uint32_t)p->attach_type)
		return gerr_set(err, 409, "program %s: %s runs on another interface or direction than %s %s",
				p->name, ref, p->ifname,
				p->attach_type == PROBE_BPF_TCX_EGRESS ? "egress" : "ingress");
	return 0;
}

static int attach_netdev(struct probe_prog *p, int prog_fd, struct gerr *err)
{
	LIBBPF_OPTS(bpf_link_create_opts, opts, .flags = p->xdp_flags);
	enum bpf_attach_type type = p->hook == HOOK_XDP ? BPF_XDP : p->attach_type;
	int fd;

	if (p->xdp_slot)
		return 0;	/* it joined the dispatcher as the object loaded */
	if (p->hook == HOOK_TC && p->tc_classic) {
		if (probe_tc_attach(p, prog_fd, &fd, err) < 0)
			return -1;
		if (p->swap)
			p->swap->taken = true;
		return add_link(p, fd, "") < 0 ? gerr_set(err, 500, "out of memory") : 0;
	}
	if (p->swap)
		return take_over(p, err);
	if (p->tc_place & PROBE_BPF_F_LINK && check_relative(p, err) < 0)
		return -1;
	if (p->tc_place)
		fd = tcx_link_create(prog_fd, p);
	else
		fd = bpf_link_create(prog_fd, p->ifindex, type,
				     p->hook == HOOK_XDP ? &opts : NULL);
	if (fd < 0)
		return attach_error(p, -errno, p->ifname, NULL, err);
	return add_link(p, fd, "") < 0 ? gerr_set(err, 500, "out of memory") : 0;
}

static int attach_cgroup(struct probe_prog *p, int prog_fd, struct gerr *err)
{
	int fd = bpf_link_create(prog_fd, p->cgroup_fd, p->attach_type, NULL);

	if (fd < 0)
		return attach_error(p, -errno, p->attach->cgroup->path, NULL, err);
	return add_link(p, fd, "") < 0 ? gerr_set(err, 500, "out of memory") : 0;
}

static int perf_open(const Graind__PerfEventAttach *pe, int cpu)
{
	struct perf_event_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.size = sizeof(attr);
	attr.type = pe->type;
	attr.config = pe->config;
	if (pe->sample_freq) {
		attr.freq = 1;
		attr.sample_freq = pe->sample_freq;
	} else {
		attr.sample_period = pe->sample_period;
	}
	return syscall(SYS_perf_event_open, &attr, -1, cpu, -1, PERF_FLAG_FD_CLOEXEC);
}

/* One perf event and one link per online CPU. The link is made here, not
 * by libbpf, whose link would disable the event when we close it: the
 * link keeps the event, which keeps running. */
static int attach_perf(struct probe_prog *p, int prog_fd, struct gerr *err)
{
	int cpus = libbpf_num_possible_cpus(), cpu, pfd, fd, ret;
	char suffix[16];

	for (cpu = 0; cpu < cpus; cpu++) {
		pfd = perf_open(p->attach->perf_event, cpu);
		if (pfd < 0 && errno == ENODEV)
			continue;	/* offline */
		if (pfd < 0)
			return attach_error(p, -errno, "a perf event", NULL, err);
		fd = bpf_link_create(prog_fd, pfd, BPF_PERF_EVENT, NULL);
		ret = -errno;
		close(pfd);
		if (fd < 0)
			return attach_error(p, ret, "a perf event", NULL, err);
		snprintf(suffix, sizeof(suffix), "-%d", cpu);
		if (add_link(p, fd, suffix) < 0)
			return gerr_set(err, 500, "out of memory");
	}
	if (!p->n_links)
		return gerr_set(err, 422, "program %s: no online CPU accepted the perf event", p->name);
	return 0;
}

/* The hooks libbpf attaches for us, returning the link or NULL. */
static struct bpf_link *attach_libbpf(struct probe_prog *p, char *what, size_t n)
{
	const Graind__AttachSpec *a = p->attach;
	const Graind__UprobeAttach *u;
	const Graind__KprobeAttach *k;

	switch (p->hook) {
	case HOOK_TRACEPOINT:
		snprintf(what, n, "tracepoint %s:%s", a->tracepoint->category,
			 a->tracepoint->name);
		return bpf_program__attach_tracepoint(p->prog, a->tracepoint->category,
						      a->tracepoint->name);
	case HOOK_RAW_TRACEPOINT:
		snprintf(what, n, "raw tracepoint %s", a->raw_tracepoint->name);
		return bpf_program__attach_raw_tracepoint(p->prog, a->raw_tracepoint->name);
	case HOOK_UPROBE: {
		LIBBPF_OPTS(bpf_uprobe_opts, uo);

		/* uprobe and uretprobe share the oneof's storage: ask the case. */
		u = a->uprobe;
		uo.retprobe = a->kind_case == GRAIND__ATTACH_SPEC__KIND_URETPROBE;
		uo.func_name = u->symbol[0] ? u->symbol : NULL;
		snprintf(what, n, "%s in %s", u->symbol[0] ? u->symbol : "offset", u->binary);
		return bpf_program__attach_uprobe_opts(p->prog, u->pid ? u->pid : -1,
						       u->binary, u->offset, &uo);
	}
	case HOOK_KPROBE: {
		LIBBPF_OPTS(bpf_kprobe_opts, ko);

		k = a->kprobe;          /* or kretprobe: one storage */
		ko.retprobe = a->kind_case == GRAIND__ATTACH_SPEC__KIND_KRETPROBE;
		ko.offset = k->offset;
		snprintf(what, n, "kernel function %s", k->function);
		return bpf_program__attach_kprobe_opts(p->prog, k->function, &ko);
	}
	default:
		snprintf(what, n, "section %s", bpf_program__section_name(p->prog));
		return bpf_program__attach(p->prog);
	}
}

static int attach_through_libbpf(struct probe_prog *p, struct gerr *err)
{
	struct elfchk_capture cap;
	struct bpf_link *link;
	char what[256];
	int ret;

	elfchk_capture_begin(&cap);
	link = attach_libbpf(p, what, sizeof(what));
	ret = link ? 0 : -errno;
	elfchk_capture_end();
	if (!link && p->hook == HOOK_LIBBPF_AUTO && ret == -EOPNOTSUPP)
		return gerr_set(err, 400, "program %s: section %s does not say where to attach; give an attach spec",
				p->name, bpf_program__section_name(p->prog));
	if (!link && p->hook == HOOK_UPROBE && ret == -ENOENT)
		return gerr_set(err, 404, "program %s: %s not found", p->name, what);
	if (!link)
		return attach_error(p, ret, what, &cap, err);
	if (take_libbpf_link(p, link, "") < 0)
		return gerr_set(err, 500, "out of file descriptors");
	return 0;
}

int probe_hook_attach(struct probe_prog *p, struct gerr *err)
{
	int prog_fd = bpf_program__fd(p->prog);

	switch (p->hook) {
	case HOOK_XDP:
	case HOOK_TC:
		return attach_netdev(p, prog_fd, err);
	case HOOK_CGROUP:
		return attach_cgroup(p, prog_fd, err);
	case HOOK_PERF_EVENT:
		return attach_perf(p, prog_fd, err);
	default:
		return attach_through_libbpf(p, err);
	}
}

void probe_hook_release(struct probe_prog *p)
{
	size_t i;

	for (i = 0; i < p->n_links; i++)
		close(p->links[i].fd);
	free(p->links);
	p->links = NULL;
	p->n_links = 0;
	if (p->cgroup_fd >= 0)
		close(p->cgroup_fd);
	p->cgroup_fd = -1;
	if (p->tc_relative_fd >= 0)
		close(p->tc_relative_fd);
	p->tc_relative_fd = -1;
}

/* ---------------------------------------------------------------- links */

int probe_link_info(int fd, struct probe_link_info *out)
{
	/* Room for a newer kernel's struct; the tail must stay zero. */
	union {
		struct bpf_link_info info;
		unsigned char raw[256];
	} u;
	uint32_t len = sizeof(u), *ifindex;

	if (probe_tc_is_record(fd))
		return probe_tc_info(fd, out);
	if (probe_xdp_is_record(fd))
		return probe_xdp_info(fd, out);
	memset(&u, 0, sizeof(u));
	if (bpf_obj_get_info_by_fd(fd, &u, &len) < 0)
		return -errno;
	memset(out, 0, sizeof(*out));
	out->type = u.info.type;
	out->id = u.info.id;
	out->prog_id = u.info.prog_id;
	/* TCX's { ifindex, attach_type } shares the place of XDP's ifindex. */
	ifindex = (uint32_t *)(u.raw + offsetof(struct bpf_link_info, xdp.ifindex));
	if (out->type == BPF_LINK_TYPE_XDP || out->type == PROBE_BPF_LINK_TYPE_TCX)
		out->ifindex = ifindex[0];
	if (out->type == PROBE_BPF_LINK_TYPE_TCX)
		out->attach_type = ifindex[1];
	return 0;
}

bool probe_link_alive(const struct probe_link_info *info)
{
	if (info->type == BPF_LINK_TYPE_XDP || info->type == PROBE_BPF_LINK_TYPE_TCX ||
	    info->type == PROBE_LINK_TYPE_TC_FILTER || info->type == PROBE_LINK_TYPE_XDP_SLOT)
		return info->ifindex != 0;
	return info->prog_id != 0;
}

int probe_link_set_prog(int fd, int prog_fd)
{
	if (probe_tc_is_record(fd))
		return probe_tc_set_prog(fd, prog_fd);
	if (probe_xdp_is_record(fd))
		return -EOPNOTSUPP;	/* never lent: a new program joins beside the old */
	return bpf_link_update(fd, prog_fd, NULL) < 0 ? -errno : 0;
}

void probe_link_release(int fd)
{
	if (probe_tc_is_record(fd))
		probe_tc_release(fd);
	else if (probe_xdp_is_record(fd))
		probe_xdp_release(fd);
}
