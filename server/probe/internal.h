/* Shared by the files of server/probe/; not part of the module's contract.
 *
 * bpffs refuses names with a dot, so the probe's directory writes its '.'
 * as ':'. Pin layout of probe <name> under <pin root>/<dir>/:
 *   meta              single-entry ARRAY map: struct probe_meta
 *   link_<prog>       the link of each program (link_<prog>-<cpu> for the
 *                     per-CPU links of a perf_event program)
 *   map_<map>         every map of the object, '.' written '-'
 *                     (map_graind-rodata)
 *   undo_<link file>  only in a generation that lent an XDP/TC link to the
 *                     next one: the program the link ran before, so that
 *                     the swap can be undone
 * A new generation is built in <pin root>/_new_<dir>/ and exchanged with
 * <dir> (RENAME_EXCHANGE) once every program is attached: the live name
 * always holds a whole generation, and _new_<dir> then holds the old one
 * until the change is committed or rolled back. A detach renames <dir> to
 * <pin root>/_old_<dir>. txn.c tells what a crash leaves and what wins. */
#ifndef GRAIND_PROBE_INTERNAL_H
#define GRAIND_PROBE_INTERNAL_H

#include <limits.h>
#include <pthread.h>
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
#define PROBE_BPF_F_BEFORE (1U << 3)
#define PROBE_BPF_F_AFTER (1U << 4)
#define PROBE_BPF_F_LINK (1U << 13)	/* the relative fd is a link */
/* Not kernel link types: a classic tc filter's record (tcfilter.c), an
 * XDP program's place in libxdp's dispatcher (xdpslot.c). */
#define PROBE_LINK_TYPE_TC_FILTER 0x7463u
#define PROBE_LINK_TYPE_XDP_SLOT 0x7864u

#define PROBE_META_MAGIC 0x67726e31u	/* "grn1" */
#define PROBE_META_MAX_PROGS 64
#define PROBE_PROG_NAME_MAX 64

#define PROBE_STAGING_PREFIX "_new_"
#define PROBE_TRASH_PREFIX "_old_"
#define PROBE_UNDO_PREFIX "undo_"

struct failure;

struct probe_mgr {
	pthread_mutex_t lock;
	int stats_fd;			/* keeps BPF run-time statistics on */
	struct failure *failures;	/* probe.c, under failures_lock */
	pthread_mutex_t failures_lock;
	struct probe_txn *pending;	/* txn.c: changes not yet decided */
	struct probe_warnings *warnings;	/* warnings.c */
};

struct probe_meta_prog {
	char name[PROBE_PROG_NAME_MAX];
	int64_t attached_ms;		/* unix time of the attach */
	uint32_t n_links;
	uint32_t prog_id;		/* 0: written by an agent that did not record it */
};

struct probe_meta {
	uint32_t magic;
	uint32_t n_progs;
	uint64_t generation;
	struct probe_meta_prog progs[PROBE_META_MAX_PROGS];
	uint64_t built_us;		/* CLOCK_MONOTONIC: which of two generations is newer */
};

/* What a pinned link says about itself. */
struct probe_link_info {
	uint32_t type;			/* BPF_LINK_TYPE_* */
	uint32_t id;
	uint32_t prog_id;
	uint32_t ifindex;		/* XDP, TCX, tc filter: 0 once the device is gone */
	uint32_t attach_type;		/* TCX, tc filter: PROBE_BPF_TCX_INGRESS or _EGRESS */
	uint32_t tc_handle;		/* tc filter: where it is */
	uint32_t tc_priority;
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

/* A link the attach created (or an old one it takes over) and where it goes. */
struct probe_link {
	int fd;
	char file[NAME_MAX + 1];
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
	bool xdp_slot;				/* XDP through libxdp's dispatcher */
	bool tc_classic;			/* TC as a classic tc filter, not TCX */
	uint32_t tc_place;			/* TCX: PROBE_BPF_F_BEFORE/AFTER, | _LINK */
	int tc_relative_fd;			/* with PROBE_BPF_F_LINK: the link placed
						 * against (probe.c opens it); -1 */
	enum bpf_attach_type attach_type;	/* TC direction, cgroup type */
	int cgroup_fd;
	struct probe_old_link *swap;		/* old link to update in place, once the
						 * new generation is pinned */
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
/* The "<probe>/<program>" whose link a new TCX link of p goes before or
 * after, or NULL: the caller opens it as p->tc_relative_fd. */
const char *probe_hook_relative(const struct probe_prog *p);
/* Attach the loaded program; fills p->links. An XDP/TC program with an
 * old link to take over only gets that link (p->swap), still running the
 * old program: the caller swaps it once nothing else can fail. */
int probe_hook_attach(struct probe_prog *p, struct gerr *err);
/* A program that joins libxdp's dispatcher (p->xdp_slot) is attached as
 * obj loads: libxdp loads it (see xdpslot.c). Call instead of
 * bpf_object__load(); fills p->links with its record. */
int probe_hook_load_slot(struct probe_prog *p, struct bpf_object *obj, struct gerr *err);
/* Put p's program on the old link it takes over (p->swap). */
int probe_hook_swap(struct probe_prog *p, struct gerr *err);
/* Close what probe_hook_resolve opened and what attach kept. */
void probe_hook_release(struct probe_prog *p);
/* Read what the link behind fd (or the tc filter record) says. */
int probe_link_info(int fd, struct probe_link_info *info);
/* Put prog_fd on the link (or the tc filter) behind fd; -errno. */
int probe_link_set_prog(int fd, int prog_fd);
/* Before a pin of fd goes: remove the tc filter it records, or take the
 * XDP program it records out of the dispatcher, if it still runs its
 * generation's program. Links need nothing. Also what undoes a record
 * that was never pinned. */
void probe_link_release(int fd);

/* tcfilter.c: classic tc filters, each recorded by a pinned map. */
bool probe_tc_is_record(int fd);
int probe_tc_info(int fd, struct probe_link_info *info);
/* Add p's filter (or, with p->swap, record the one it takes over);
 * *record_fd is the record to pin as its link. */
int probe_tc_attach(const struct probe_prog *p, int prog_fd, int *record_fd,
		    struct gerr *err);
int probe_tc_set_prog(int record_fd, int prog_fd);
int probe_tc_release(int record_fd);
/* Whether the link still hooks something. */
bool probe_link_alive(const struct probe_link_info *info);

/* xdpdispatch.c: what runs XDP on an interface, read as libxdp lays it
 * out (no libxdp: see there). */
#define XDP_DISPATCH_SLOTS 10
struct xdp_dispatch_slot {
	uint32_t prog_id;
	uint32_t priority;
	uint32_t proceed_on;		/* bit n: XDP action n */
};
struct xdp_dispatch {
	uint32_t dispatcher_id;		/* 0: no dispatcher */
	uint32_t lone_id;		/* a program that is not one */
	size_t n_slots;
	struct xdp_dispatch_slot slots[XDP_DISPATCH_SLOTS];	/* in run order */
};
int xdp_dispatch_read(uint32_t ifindex, struct xdp_dispatch *out);
const struct xdp_dispatch_slot *xdp_dispatch_find(const struct xdp_dispatch *d, uint32_t prog_id);

/* xdpslot.c: XDP programs in libxdp's dispatcher, each recorded by a
 * pinned map. */
struct probe_xdp_slot {
	uint32_t dispatcher_id;
	uint32_t priority;
	uint32_t proceed_on;		/* bit n: XDP action n */
};
bool probe_xdp_is_record(int fd);
int probe_xdp_info(int fd, struct probe_link_info *info);
/* Load obj through libxdp, which makes p's program an extension of a slot
 * of the dispatcher on p's interface and loads the whole object; then
 * record it: *record_fd is the record to pin as its link. A failure
 * before the object loaded leaves bpf_program__fd(p->prog) < 0. */
int probe_xdp_load_attach(struct probe_prog *p, struct bpf_object *obj, int *record_fd,
			  struct gerr *err);
/* Take the recorded program out of the dispatcher, if it is still in. */
int probe_xdp_release(int record_fd);
/* Where prog_id runs in the dispatcher on ifindex; -ENOENT: not there. */
int probe_xdp_describe(uint32_t ifindex, uint32_t prog_id, struct probe_xdp_slot *out);
/* The program on ifindex when it is not a dispatcher graind can join. */
uint32_t probe_xdp_lone_program(uint32_t ifindex);

/* pins.c */
/* Whether fd is a BPF object of that kind, as /proc names it: "bpf-map",
 * "bpf-prog", "bpf_link". */
bool probe_fd_is(int fd, const char *kind);
/* Records (tcfilter.c, xdpslot.c): what graind made where a link would
 * be, a single-entry array map of `size` bytes that starts with its
 * magic. _new returns the fd to pin, or -errno; _read fills rec, -EBADMSG
 * when fd is not a record of that magic. */
int probe_record_new(const char *name, const void *rec, size_t size);
int probe_record_read(int fd, void *rec, size_t size, uint32_t magic);
/* The id of the program behind fd, 0 when unknown. */
uint32_t probe_prog_id(int fd);
int probe_pin_path(char *buf, size_t n, const char *dir, const char *file);
/* The pin file name of map `map`. */
void probe_map_file(char *buf, size_t n, const char *map);
int probe_meta_read(const char *dir, struct probe_meta *meta);
int probe_meta_write(const char *dir, const struct probe_meta *meta,
		     struct gerr *err);
/* Unpin everything in dir and remove it; a missing dir is fine. */
int probe_dir_remove(const char *dir, struct gerr *err);
bool probe_dir_exists(const char *dir);
/* The pinned probe in dir runs `generation` and every link still hooks
 * something; with `strict`, each program whose id the meta recorded is the
 * one its link runs. */
bool probe_adoptable(const char *dir, uint64_t generation, bool strict);
/* The generation pinned in dir (0: none), and when it was built. */
uint64_t probe_dir_generation(const char *dir, uint64_t *built_us);
/* For every undo_<link> pin in dir: put the program it holds back on the
 * link. Returns the number of links that could not be put back. */
int probe_undo_relink(const char *dir);
/* Unpin every undo_<link> pin in dir. */
void probe_undo_unpin(const char *dir);
/* Open every link pinned in dir; *out is malloc'd, free it with
 * probe_old_links_free(). */
int probe_old_links_open(const char *dir, struct probe_old_link **out,
			 size_t *n);
void probe_old_links_free(struct probe_old_link *links, size_t n);
/* The number of alive links pinned for program `prog` in dir, and the
 * first one's info. */
size_t probe_prog_links(const char *dir, const char *prog,
			struct probe_link_info *first, bool *all_alive);

/* txn.c (callers hold mgr->lock) */
enum probe_txn_kind {
	PROBE_TXN_CREATED,		/* dir is new: rollback removes it */
	PROBE_TXN_REPLACED,		/* staging holds the old generation */
	PROBE_TXN_DETACHED,		/* trash holds the detached probe */
};
/* Allocated before the kernel changes, so that recording one cannot fail. */
struct probe_txn *probe_txn_alloc(void);
/* Record t as pending for `name`, with its pin directories. */
void probe_txn_start(struct probe_txn *t, struct probe_mgr *mgr,
		     enum probe_txn_kind kind, const char *name,
		     const char *dir, const char *staging, const char *trash);
bool probe_txn_pending(struct probe_mgr *mgr, const char *name);
/* At probe_mgr_free: pending changes no longer take its lock. */
void probe_txn_orphan_all(struct probe_mgr *mgr);
/* renameat2(from, to, RENAME_EXCHANGE) when `exchange`, else
 * RENAME_NOREPLACE: never a moment with neither name. */
int probe_dir_move(const char *from, const char *to, bool exchange,
		   struct gerr *err);
/* Take dir out of sight in one rename, then unpin it. */
int probe_dir_retire(const char *dir, const char *trash, struct gerr *err);
/* Undo an exchange: the generation in staging runs again under dir, with
 * the links it lent back on its programs, and the newer one is removed. */
int probe_gen_back(const char *dir, const char *staging, struct gerr *err);
/* Decide what an unfinished change (a crash, a failed rollback) left in
 * staging and trash, given the generation the caller wants (0: none). */
void probe_settle(const char *name, const char *dir, const char *staging,
		  const char *trash, uint64_t want);

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
