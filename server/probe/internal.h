/* Shared by the files of server/probe/; not part of the module's contract.
 *
 * bpffs refuses names with a dot, so the probe's directory writes its '.'
 * as ':'. Pin layout of probe <name> under <pin root>/<dir>/:
 *   meta              single-entry ARRAY map: struct probe_meta
 *   link_<prog>       the link of each program (link_<prog>-<cpu> for the
 *                     per-CPU links of a perf_event program)
 *   map_<map>         every map of the object, '.' written '-'
 *                     (map_graind-rodata)
 * A new generation is built in <pin root>/_new_<dir>/ and renamed into
 * place once every program is attached. */
#ifndef GRAIND_PROBE_INTERNAL_H
#define GRAIND_PROBE_INTERNAL_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "proto/graind.pb-c.h"
#include "server/util/gerr.h"

/* Missing from Debian's 6.1 uapi headers. */
#define PROBE_BPF_TCX_INGRESS 46
#define PROBE_BPF_TCX_EGRESS 47
#define PROBE_BPF_LINK_TYPE_TCX 11

#define PROBE_META_MAGIC 0x67726e31u	/* "grn1" */
#define PROBE_META_MAX_PROGS 64
#define PROBE_PROG_NAME_MAX 64

struct probe_meta_prog {
	char name[PROBE_PROG_NAME_MAX];
	int64_t attached_ms;		/* unix time of the attach */
	uint32_t n_links;
	uint32_t reserved;
};

struct probe_meta {
	uint32_t magic;
	uint32_t n_progs;
	uint64_t generation;
	struct probe_meta_prog progs[PROBE_META_MAX_PROGS];
};

/* What a pinned link says about itself. */
struct probe_link_info {
	uint32_t type;			/* BPF_LINK_TYPE_* */
	uint32_t id;
	uint32_t prog_id;
	uint32_t ifindex;		/* XDP and TCX: 0 once the device is gone */
	uint32_t attach_type;		/* TCX: ingress or egress */
};

/* A link of the generation pinned now, opened from its pin. */
struct probe_old_link {
	char file[NAME_MAX + 1];	/* "link_<prog>" */
	int fd;
	struct probe_link_info info;
	bool taken;			/* swapped to a program of the new generation */
};

enum probe_hook {
	HOOK_XDP,
	HOOK_TC,
	HOOK_TRACEPOINT,
	HOOK_RAW_TRACEPOINT,
	HOOK_UPROBE,
	HOOK_KPROBE,
	HOOK_PERF_EVENT,
	HOOK_CGROUP,
	HOOK_LIBBPF_AUTO,		/* bpf_program__attach() from the section */
};

/* A link the attach created (or an old one it swapped) and where it goes. */
struct probe_link {
	int fd;
	char file[NAME_MAX + 1];
	int undo_prog_fd;		/* swapped: the program to put back, else -1 */
};

/* One selected program on its way into the kernel. */
struct probe_prog {
	struct bpf_program *prog;
	const char *name;
	const Graind__AttachSpec *attach;	/* NULL: auto */
	enum probe_hook hook;
	const char *ifname;
	int ifindex;
	uint32_t xdp_flags;
	enum bpf_attach_type attach_type;	/* TCX direction, cgroup type */
	int cgroup_fd;
	struct probe_old_link *swap;		/* old link to update in place */
	struct probe_link *links;
	size_t n_links;
	int64_t attached_ms;
};

/* hooks.c */
/* Decide the hook of p (p->prog, p->name and p->attach set), check that it
 * fits the program type and that its target exists; choose the old link to
 * swap for XDP/TC. Called before the object is loaded. */
int probe_hook_resolve(struct probe_prog *p, struct probe_old_link *old,
		       size_t n_old, struct gerr *err);
/* Attach the loaded program; fills p->links. */
int probe_hook_attach(struct probe_prog *p, struct gerr *err);
/* Close p's links; swapped ones get their old program back. */
void probe_hook_undo(struct probe_prog *p);
/* Close what probe_hook_resolve opened and what attach kept. */
void probe_hook_release(struct probe_prog *p);
/* Read what the link behind fd says. */
int probe_link_info(int fd, struct probe_link_info *info);
/* Whether the link still hooks something. */
bool probe_link_alive(const struct probe_link_info *info);

/* pins.c */
int probe_pin_path(char *buf, size_t n, const char *dir, const char *file);
/* The pin file name of map `map`. */
void probe_map_file(char *buf, size_t n, const char *map);
int probe_meta_read(const char *dir, struct probe_meta *meta);
int probe_meta_write(const char *dir, const struct probe_meta *meta,
		     struct gerr *err);
/* Unpin everything in dir and remove it; a missing dir is fine. */
int probe_dir_remove(const char *dir, struct gerr *err);
/* Open every link pinned in dir; *out is malloc'd, free it with
 * probe_old_links_free(). */
int probe_old_links_open(const char *dir, struct probe_old_link **out,
			 size_t *n);
void probe_old_links_free(struct probe_old_link *links, size_t n);
/* The number of alive links pinned for program `prog` in dir, and the
 * first one's info. */
size_t probe_prog_links(const char *dir, const char *prog,
			struct probe_link_info *first, bool *all_alive);

/* warnings.c: what other parts of the agent say about probes, by name
 * (probe_set_warnings), under a lock of their own. _set replaces a
 * probe's texts with copies (n == 0 drops them); _fill puts them into
 * probe->warnings. Both return -1 when out of memory. */
struct probe_warnings;
struct probe_warnings *probe_warnings_new(void);
void probe_warnings_free(struct probe_warnings *pw);
int probe_warnings_set(struct probe_warnings *pw, const char *name, const char *const *texts,
		       size_t n);
int probe_warnings_fill(struct probe_warnings *pw, Graind__Probe *probe);

/* rodata.c */
int probe_set_constants(struct bpf_object *obj, Graind__Constant **constants,
			size_t n, struct gerr *err);
int probe_set_map_overrides(struct bpf_object *obj, Graind__MapOverride **ovr,
			    size_t n, struct gerr *err);

#endif
