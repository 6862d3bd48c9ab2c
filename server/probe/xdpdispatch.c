/* What runs XDP on an interface, read as libxdp's protocol lays it out,
 * without libxdp: its 1.3.1 (Debian 12) leaks a program descriptor on
 * every look (xdp_multiprog__get_from_ifindex, xdp_program__from_id;
 * fixed upstream after 1.3.1), and a status poll looks often.
 *
 * The protocol: the interface runs a program named xdp_dispatcher; libxdp
 * pins the programs in its slots as <bpffs>/xdp/dispatch-<ifindex>-<id of
 * the dispatcher>/prog<n>-prog, n from 0, in run order; the dispatcher's
 * .rodata holds struct xdp_dispatcher_config (<xdp/prog_dispatcher.h>):
 * per slot the run priority and the bitmap of actions after which the
 * chain goes on. Anything else on the interface is a program alone. */
#include "server/probe/internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xdp/prog_dispatcher.h>

#define DISPATCHER_NAME "xdp_dispatcher"

/* Where libxdp pins: LIBXDP_BPFFS when set, as libxdp reads it. */
static const char *bpffs_root(void)
{
	const char *env = getenv("LIBXDP_BPFFS");

	return env && env[0] ? env : "/sys/fs/bpf";
}

/* The dispatcher's config, from the one map of its that holds it. */
static int read_config(int prog_fd, struct xdp_dispatcher_config *cfg)
{
	uint32_t ids[8], len, key = 0;
	struct bpf_prog_info info;
	int ret = -ENOENT;

	memset(&info, 0, sizeof(info));
	info.nr_map_ids = sizeof(ids) / sizeof(ids[0]);
	info.map_ids = (uintptr_t)ids;
	len = sizeof(info);
	if (bpf_obj_get_info_by_fd(prog_fd, &info, &len) < 0)
		return -errno;
	for (uint32_t i = 0; i < info.nr_map_ids && i < sizeof(ids) / sizeof(ids[0]); i++) {
		struct bpf_map_info map;
		uint32_t map_len = sizeof(map);
		int fd = bpf_map_get_fd_by_id(ids[i]);

		if (fd < 0)
			continue;
		memset(&map, 0, sizeof(map));
		memset(cfg, 0, sizeof(*cfg));
		if (bpf_obj_get_info_by_fd(fd, &map, &map_len) == 0 &&
		    map.value_size == sizeof(*cfg) && bpf_map_lookup_elem(fd, &key, cfg) == 0 &&
		    cfg->magic == XDP_DISPATCHER_MAGIC)
			ret = 0;
		close(fd);
		if (ret == 0)
			break;
	}
	return ret;
}

static uint32_t pinned_prog_id(const char *dir, size_t slot)
{
	char path[PATH_MAX];
	uint32_t id;
	int fd;

	if (snprintf(path, sizeof(path), "%s/prog%zu-prog", dir, slot) >= (int)sizeof(path))
		return 0;
	fd = bpf_obj_get(path);
	if (fd < 0)
		return 0;
	id = probe_prog_id(fd);
	close(fd);
	return id;
}

int xdp_dispatch_read(uint32_t ifindex, struct xdp_dispatch *out)
{
	LIBBPF_OPTS(bpf_xdp_query_opts, q);
	struct xdp_dispatcher_config cfg;
	struct bpf_prog_info info;
	uint32_t len = sizeof(info);
	char dir[PATH_MAX];
	int fd, ret;

	memset(out, 0, sizeof(*out));
	if (bpf_xdp_query((int)ifindex, 0, &q) < 0)
		return -errno;
	if (!q.prog_id)		/* attached in two modes at once: either one */
		q.prog_id = q.drv_prog_id ? q.drv_prog_id : q.skb_prog_id;
	if (!q.prog_id)
		return 0;	/* nothing runs there */
	fd = bpf_prog_get_fd_by_id(q.prog_id);
	if (fd < 0)
		return -errno;
	memset(&info, 0, sizeof(info));
	ret = bpf_obj_get_info_by_fd(fd, &info, &len) < 0 ? -errno : 0;
	if (ret == 0 && strcmp(info.name, DISPATCHER_NAME) == 0 && read_config(fd, &cfg) == 0) {
		snprintf(dir, sizeof(dir), "%s/xdp/dispatch-%u-%u", bpffs_root(), ifindex,
			 q.prog_id);
		out->dispatcher_id = q.prog_id;
		for (size_t i = 0; i < cfg.num_progs_enabled && i < XDP_DISPATCH_SLOTS; i++) {
			out->slots[i].prog_id = pinned_prog_id(dir, i);
			out->slots[i].priority = cfg.run_prios[i];
			/* The top bit only keeps an empty slot from ending the chain. */
			out->slots[i].proceed_on = cfg.chain_call_actions[i] &
						   ~(1u << XDP_DISPATCHER_RETVAL);
			out->n_slots++;
		}
	} else if (ret == 0) {
		out->lone_id = q.prog_id;
	}
	close(fd);
	return ret;
}

const struct xdp_dispatch_slot *xdp_dispatch_find(const struct xdp_dispatch *d, uint32_t prog_id)
{
	for (size_t i = 0; prog_id && i < d->n_slots; i++)
		if (d->slots[i].prog_id == prog_id)
			return &d->slots[i];
	return NULL;
}
