/* probe: the kernel side of probes.
 *
 * Loads a stored object with libbpf, attaches the programs a ProbeSpec
 * selects, and pins every link and map under the pin root/<probe>/ so
 * probes keep running when the agent stops or is killed. A restarted agent
 * re-adopts pinned probes without touching the kernel; detaching removes
 * every pin, link, program and map of a probe.
 *
 * bpffs refuses names with a dot, so probe "a.b" lives in directory "a:b".
 * In it: "meta" (the manager's single-entry ARRAY map: generation and
 * attach times), "link_<prog>" per program ("link_<prog>-<cpu>" for each
 * CPU of a perf_event program) and "map_<map>" per map of the object, a
 * dot in the map name written '-' ("map_graind-rodata").
 *
 * TC programs attach as TCX links (kernel 6.6+); TCX has no priorities, so
 * TcAttach.priority is ignored.
 *
 * A probe's directory changes in single renames (a new generation is
 * exchanged with the old one, RENAME_EXCHANGE), so whoever opens a pin by
 * path finds one whole generation, never none while one is being replaced.
 * A change can stay undoable until its caller has recorded it (struct
 * probe_txn); what a crash leaves is decided by the next attach or detach
 * of the probe, in favour of the generation that call asks for (txn.c).
 *
 * All functions are safe to call from several threads; operations on the
 * kernel are serialised inside. */
#ifndef GRAIND_PROBE_H
#define GRAIND_PROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/graind.pb-c.h"
#include "server/util/gerr.h"

#define PROBE_DEFAULT_PIN_ROOT "/sys/fs/bpf/graind"

struct probe_mgr;

/* A kernel change not yet final: commit it once the store has recorded it, or roll it back. */
struct probe_txn;
/* Make final: remove what the change replaced. NULL is a no-op. Frees txn. */
void probe_txn_commit(struct probe_txn *txn);
/* Put the kernel back as it was before the change (old generation live again, a new probe gone,
 * a detached probe attached again). NULL is a no-op. Frees txn. Logs, never fails silently. */
void probe_txn_rollback(struct probe_txn *txn);

/* Pin probes under `pin_root` (PROBE_DEFAULT_PIN_ROOT unless the operator
 * says otherwise; one manager per process), creating it (bpffs must be
 * mounted), and enable kernel BPF run statistics for as long as the
 * manager lives. */
int probe_mgr_new(const char *pin_root, struct probe_mgr **out, struct gerr *err);

/* Free the manager. Never detaches anything: pinned probes keep running.
 * Decide every txn first; one still pending is left as a crash would leave
 * it (and still works, without the manager's lock). */
void probe_mgr_free(struct probe_mgr *mgr);

/* Make probe `name` run `spec` at `generation`, from the object's bytes.
 *
 * When the probe is already pinned at this generation and its links are
 * alive, it is adopted as it is (*adopted = true, nothing changes in the
 * kernel). Otherwise the object is loaded, every selected program attached
 * and pinned; an attached XDP/TC program of the same name and hook is
 * swapped in place (bpf_link_update) so the interface never runs nothing.
 * All or nothing: when any program fails, no new state remains and a
 * previous generation's attachment is left as it was.
 *
 * With txn NULL the change is final at once. Otherwise, on success, *txn
 * is the pending change (NULL when the probe was adopted): until it is
 * committed the old generation stays pinned aside (its programs other
 * than swapped XDP/TC ones keep running), and until it is decided every
 * other attach or detach of the probe is refused with 409.
 *
 * Errors name the cause: 400 spec does not fit the object (unknown
 * program, attach kind that does not fit the program type); 404 interface,
 * binary, symbol or cgroup not found; 409 the interface already runs an
 * XDP program that is not ours (naming its id); 422 the kernel lacks what
 * the hook needs (e.g. "kprobes are not available: kernel built without
 * CONFIG_KPROBES") or the verifier refused a program — then *report (when
 * report is not NULL) is a Graind__VerifyReport the caller frees with
 * pbmsg_free(). */
int probe_attach(struct probe_mgr *mgr, const char *name, uint64_t generation,
		 const Graind__ProbeSpec *spec, const void *obj, size_t obj_len,
		 bool *adopted, Graind__VerifyReport **report,
		 struct probe_txn **txn, struct gerr *err);

/* Remove every pin, link, program and map of probe `name`. Nothing pinned
 * is not an error. With txn non-NULL the probe leaves its pin directory
 * at once but keeps running until *txn is committed (*txn is NULL when
 * nothing was pinned); rollback puts it back. */
int probe_detach(struct probe_mgr *mgr, const char *name,
		 struct probe_txn **txn, struct gerr *err);

/* Add the kernel's view to `probe` (a Graind__Probe whose name and spec are
 * set): one Graind__ProgramStatus per program with state, program and link
 * ids, attach time, run count and run time; a probe that failed its last
 * attach reports PROGRAM_FAILED with the error. Probe.warnings: what
 * probe_set_warnings() was told last. */
int probe_status(struct probe_mgr *mgr, Graind__Probe *probe, struct gerr *err);

/* What another part of the agent found wrong with probe `name` that is no
 * error (the collector: why a map's records are shown as hex), for
 * probe_status() to list in Probe.warnings: replaces the probe's earlier
 * texts with copies of these `n` (0 drops them). Kept in memory only,
 * until replaced; never waits for an attach in progress. -1 when out of
 * memory (the earlier texts stay). */
int probe_set_warnings(struct probe_mgr *mgr, const char *name, const char *const *texts,
		       size_t n);

/* What probe `name` costs now: its programs' run time together (the
 * kernel's run_time_ns, counted while bpf_stats is on) and the bytes its
 * pinned maps hold (memlock in their fdinfo, as the kernel charges them).
 * Read from the pins, without the manager's lock. -1 when it has none. */
int probe_cost(const char *name, uint64_t *run_time_ns, uint64_t *map_bytes);

/* Open the pinned map `map` of probe `name` (its name in the object, e.g.
 * "counts" or ".rodata"). Returns a new fd the caller closes, or a
 * negative errno (-ENOENT when the probe or map is not pinned). */
int probe_map_open(const char *name, const char *map);

/* The generation pinned for `name`, or 0 when nothing is pinned. */
uint64_t probe_pinned_generation(struct probe_mgr *mgr, const char *name);

/* Call fn for the name of every probe pinned under the pin root, including
 * a probe of which a crash left only a staging or detached directory. */
int probe_list_pinned(struct probe_mgr *mgr,
		      int (*fn)(const char *name, void *ctx), void *ctx);

#endif
