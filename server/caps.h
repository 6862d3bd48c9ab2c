/* caps: the capabilities graind needs, checked at start so that a
 * missing one is named there, never met as an EPERM at the first attach.
 *
 *   CAP_BPF             load programs, create maps and BTF, pin (needed)
 *   CAP_PERFMON         tracing programs: tracepoints, uprobes, perf
 *                       events, and loading them (needed)
 *   CAP_NET_ADMIN       XDP, TC and cgroup attachments (needed)
 *   CAP_DAC_READ_SEARCH a user other than root: read tracepoint ids in
 *                       tracefs and reach /sys/fs/bpf (both mode 0700)
 *   CAP_SYS_ADMIN       this kernel's BPF_PROG_GET_FD_BY_ID: replacing a
 *                       running XDP/TC program in place, and run-time
 *                       statistics; mounting bpffs or tracefs when missing
 *   CAP_SYS_RESOURCE    kernels before 5.11 only: RLIMIT_MEMLOCK
 *
 * A needed one missing stops the start; the others are warned about,
 * with what will not work. */
#ifndef GRAIND_CAPS_H
#define GRAIND_CAPS_H

#include "server/util/gerr.h"

/* 0, or -1 with err naming every needed capability the process lacks;
 * warnings about the others go to the log. */
int caps_check(struct gerr *err);

#endif
