/* features: what this kernel offers graind, and the file systems it needs. */
#ifndef GRAIND_FEATURES_H
#define GRAIND_FEATURES_H

#include <stdbool.h>

#include "proto/graind.pb-c.h"
#include "server/util/gerr.h"

/* Mount bpffs at /sys/fs/bpf (and tracefs at /sys/kernel/tracing) when
 * they are not mounted, and learn what the kernel can do (loading tiny
 * programs). Failing to mount bpffs is an error; tracefs is only logged,
 * since only tracepoint probes need it. */
int features_mount(struct gerr *err);

/* Fill a Graind__Features (from pbmsg_new) by probing the kernel; every
 * missing feature gets a note naming what is missing. */
int features_detect(Graind__Features *f);

/* Changes whenever what features_detect() reports may have: a number to
 * compare, which looks again as features_detect() does. */
uint64_t features_generation(void);

/* Whether the kernel has TCX links (6.6): how TC probes attach by default. */
bool features_tcx(void);

/* Whether BPF trampolines attach here (fentry/fexit): some kernels load
 * such programs and cannot attach them (arm64 before 6.4). */
bool features_fentry(void);

/* Whether the kernel has BPF links on perf events (5.15): what pins a
 * tracepoint, kprobe, uprobe or perf_event program. */
bool features_perf_link(void);
/* libxdp's multi-program dispatcher can run here (freplace programs);
 * when it cannot, _missing says why, naming what the kernel lacks. */
bool features_xdp_dispatcher(void);
const char *features_xdp_dispatcher_missing(void);

#endif
