/* caps: see caps.h. The capability sets come from capget(2) itself, so
 * that no libcap is needed. */
#include "server/caps.h"

#include <linux/capability.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "server/util/log.h"

#ifndef CAP_PERFMON
#define CAP_PERFMON 38
#endif
#ifndef CAP_BPF
#define CAP_BPF 39
#endif

struct cap_need {
	int cap;
	const char *name;
	bool needed;            /* its absence stops the start */
	const char *why;
};

static const struct cap_need needs[] = {
	{ CAP_BPF, "CAP_BPF", true, "to load programs, create maps and pin them" },
	{ CAP_PERFMON, "CAP_PERFMON", true,
	  "to load and attach tracing programs (tracepoints, uprobes, perf events)" },
	{ CAP_NET_ADMIN, "CAP_NET_ADMIN", true, "to attach XDP, TC and cgroup programs" },
	{ CAP_SYS_ADMIN, "CAP_SYS_ADMIN", false,
	  "replacing a running XDP or TC program in place and program run-time statistics "
	  "need it on this kernel (BPF_PROG_GET_FD_BY_ID); without it, detach such a probe "
	  "before changing it" },
};

/* The effective set, bit n for CAP_* number n (0 when it cannot be read). */
static uint64_t effective_caps(void)
{
	struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct data[2];

	memset(data, 0, sizeof(data));
	if (syscall(SYS_capget, &hdr, data) != 0)
		return 0;
	return (uint64_t)data[1].effective << 32 | data[0].effective;
}

static bool has(uint64_t caps, int cap)
{
	return (caps >> cap) & 1;
}

/* Before 5.11 BPF memory counts against RLIMIT_MEMLOCK. */
static bool kernel_before_5_11(void)
{
	struct utsname u;
	unsigned major = 0, minor = 0;

	return uname(&u) == 0 && sscanf(u.release, "%u.%u", &major, &minor) == 2 &&
	       (major < 5 || (major == 5 && minor < 11));
}

static bool dir_reachable(const char *path)
{
	return access(path, X_OK) == 0;
}

int caps_check(struct gerr *err)
{
	uint64_t caps = effective_caps();
	char missing[512] = "";
	size_t at = 0;

	for (size_t i = 0; i < sizeof(needs) / sizeof(needs[0]); i++) {
		if (has(caps, needs[i].cap))
			continue;
		if (!needs[i].needed) {
			log_warn("msg=\"capability missing\" capability=%s effect=\"%s\"",
				 needs[i].name, needs[i].why);
			continue;
		}
		at += (size_t)snprintf(missing + at, sizeof(missing) - at, "%s%s (%s)",
				       at ? ", " : "", needs[i].name, needs[i].why);
		if (at >= sizeof(missing))
			at = sizeof(missing) - 1;
	}
	if (missing[0])
		return gerr_set(err, 1, "missing capabilities: %s. Run graind as root, or grant "
				"them (systemd: AmbientCapabilities=; setpriv --ambient-caps); "
				"README \"Least privilege\" lists what needs which", missing);
	if (geteuid() != 0 && !has(caps, CAP_DAC_READ_SEARCH) &&
	    (!dir_reachable("/sys/kernel/tracing") || !dir_reachable("/sys/fs/bpf")))
		log_warn("msg=\"capability missing\" capability=CAP_DAC_READ_SEARCH "
			 "effect=\"tracefs or /sys/fs/bpf is closed to this user: tracepoints "
			 "cannot attach, pins cannot be reached\"");
	if (kernel_before_5_11() && !has(caps, CAP_SYS_RESOURCE))
		log_warn("msg=\"capability missing\" capability=CAP_SYS_RESOURCE "
			 "effect=\"this kernel counts BPF memory against RLIMIT_MEMLOCK, which "
			 "cannot be raised without it\"");
	return 0;
}
