/* TC programs as classic tc filters: cls_bpf in direct-action mode under
 * the interface's clsact qdisc, for kernels without TCX links (6.6).
 *
 * A filter is no BPF link and cannot be pinned. So each one graind makes
 * is recorded by a single-entry array map (struct tc_record) pinned where
 * a link would be (link_<prog>): where the filter is, (ifindex, direction,
 * handle, priority), and which program the generation that pinned it put
 * there. What the filter runs now is asked of the kernel each time, so a
 * record reads like a link (probe_link_info): its program is the one the
 * filter runs, and it hooks nothing once the filter is gone.
 *
 * A filter outlives its pins, so unpinning detaches nothing: the record's
 * owner removes the filter first (probe_tc_release), and only while it
 * still runs that generation's program. A generation that handed the
 * filter to a newer one, or got it back after a rollback, leaves it be. */
#include "server/probe/internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define TC_RECORD_MAGIC 0x67726e74u	/* "grnt" */

struct tc_record {
	uint32_t magic;
	uint32_t ifindex;
	uint32_t attach_point;		/* BPF_TC_INGRESS or BPF_TC_EGRESS */
	uint32_t handle;
	uint32_t priority;
	uint32_t prog_id;		/* what this generation put on the filter */
};

static int record_read(int fd, struct tc_record *rec)
{
	return probe_record_read(fd, rec, sizeof(*rec), TC_RECORD_MAGIC);
}

bool probe_tc_is_record(int fd)
{
	struct tc_record rec;

	return record_read(fd, &rec) == 0;
}

static void hook_of(const struct tc_record *rec, struct bpf_tc_hook *hook)
{
	memset(hook, 0, sizeof(*hook));
	hook->sz = sizeof(*hook);
	hook->ifindex = rec->ifindex;
	hook->attach_point = rec->attach_point;
}

/* The program the filter at rec's place runs: 0 when there is none. */
static uint32_t running_prog(const struct tc_record *rec)
{
	LIBBPF_OPTS(bpf_tc_opts, q, .handle = rec->handle, .priority = rec->priority);
	struct bpf_tc_hook hook;

	hook_of(rec, &hook);
	return bpf_tc_query(&hook, &q) == 0 ? q.prog_id : 0;
}

static void remove_filter(const struct tc_record *rec)
{
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = rec->handle, .priority = rec->priority);
	struct bpf_tc_hook hook;

	hook_of(rec, &hook);
	bpf_tc_detach(&hook, &opts);
}

int probe_tc_info(int fd, struct probe_link_info *out)
{
	struct tc_record rec;
	int ret = record_read(fd, &rec);

	if (ret < 0)
		return ret;
	memset(out, 0, sizeof(*out));
	out->type = PROBE_LINK_TYPE_TC_FILTER;
	out->prog_id = running_prog(&rec);
	out->ifindex = out->prog_id ? rec.ifindex : 0;
	out->attach_type = rec.attach_point == BPF_TC_EGRESS ? PROBE_BPF_TCX_EGRESS :
							      PROBE_BPF_TCX_INGRESS;
	out->tc_handle = rec.handle;
	out->tc_priority = rec.priority;
	return 0;
}

/* A record of a filter, as an fd to pin. */
static int record_new(const struct tc_record *rec)
{
	return probe_record_new("graind_tc", rec, sizeof(*rec));
}

int probe_tc_attach(const struct probe_prog *p, int prog_fd, int *record_fd, struct gerr *err)
{
	struct tc_record rec = {
		.magic = TC_RECORD_MAGIC,
		.ifindex = p->ifindex,
		.attach_point = p->attach_type == PROBE_BPF_TCX_EGRESS ? BPF_TC_EGRESS : BPF_TC_INGRESS,
		.prog_id = probe_prog_id(prog_fd),
	};
	LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = prog_fd);
	struct bpf_tc_hook hook;
	int ret;

	if (p->swap) {
		/* The filter stays where it is; the swap puts this program on it. */
		struct tc_record old;

		if (record_read(p->swap->fd, &old) < 0)
			return gerr_set(err, 500, "program %s: the record of its tc filter is unreadable",
					p->name);
		rec.handle = old.handle;
		rec.priority = old.priority;
	} else {
		hook_of(&rec, &hook);
		ret = bpf_tc_hook_create(&hook);
		if (ret < 0 && ret != -EEXIST)
			return gerr_set(err, ret == -ENOENT || ret == -EOPNOTSUPP ? 422 : 500,
					"program %s: cannot add the clsact qdisc to %s: %s (the kernel needs CONFIG_NET_SCH_INGRESS)",
					p->name, p->ifname, strerror(-ret));
		opts.priority = p->attach->tc ? p->attach->tc->priority : 0;
		ret = bpf_tc_attach(&hook, &opts);
		/* The kernel refuses a filter of another kind at a priority with
		 * EINVAL, and the same handle with EEXIST. */
		if (ret == -EEXIST || (ret == -EINVAL && opts.priority))
			return gerr_set(err, 409, "program %s: %s already has a tc filter at priority %u that is not this probe's: choose another priority",
					p->name, p->ifname, opts.priority);
		if (ret < 0)
			return gerr_set(err, ret == -EOPNOTSUPP || ret == -ENOENT ? 422 : 500,
					"program %s: cannot add a tc filter to %s: %s (the kernel needs CONFIG_NET_CLS_BPF)",
					p->name, p->ifname, strerror(-ret));
		rec.handle = opts.handle;
		rec.priority = opts.priority;
	}
	*record_fd = record_new(&rec);
	if (*record_fd >= 0)
		return 0;
	if (!p->swap)
		remove_filter(&rec);
	return gerr_set(err, 500, "program %s: cannot record its tc filter: %s", p->name,
			strerror(-*record_fd));
}

int probe_tc_set_prog(int record_fd, int prog_fd)
{
	struct tc_record rec;
	LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = prog_fd, .flags = BPF_TC_F_REPLACE);
	struct bpf_tc_hook hook;
	int ret = record_read(record_fd, &rec);

	if (ret < 0)
		return ret;
	/* Gone with its interface: there is nothing to put the program on. */
	if (!running_prog(&rec))
		return -ENOLINK;
	hook_of(&rec, &hook);
	opts.handle = rec.handle;
	opts.priority = rec.priority;
	return bpf_tc_attach(&hook, &opts);
}

int probe_tc_release(int record_fd)
{
	struct tc_record rec;
	int ret = record_read(record_fd, &rec);

	if (ret < 0)
		return ret;
	if (!rec.prog_id || running_prog(&rec) != rec.prog_id)
		return 0;	/* not this generation's program (any more) */
	remove_filter(&rec);
	return 0;
}
