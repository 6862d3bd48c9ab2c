/* Unit tests of server/probe against the running kernel (needs root): every
 * hook kind of tests/bpf/hooks.bpf.c attached and counting, adoption,
 * swapping in place, detaching without leftovers, the errors, and changes
 * committed, rolled back, failed half-way or cut short by a kill.
 * Packets travel over a veth pair: gpt0 here (198.18.0.1), gpt1 in the
 * network namespace graind-pt (198.18.0.2). The BPF objects come from
 * $GRAIND_TEST_BPF (default build/tests/bpf). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/if_link.h>
#include <linux/perf_event.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "server/util/pbmsg.h"
#include "server/features.h"
#include "server/probe/probe.h"

/* Its own pin root, so that an agent running on this machine (whose
 * default root is PROBE_DEFAULT_PIN_ROOT) never takes these pins for stale. */
#define TEST_PIN_ROOT "/sys/fs/bpf/graind-unit"

#define NETNS "graind-pt"
#define IF_HERE "gpt0"
#define ADDR_HERE "198.18.0.1"
#define COUNT_PORT 9

enum slot {
	SLOT_XDP,
	SLOT_TC,
	SLOT_TRACEPOINT,
	SLOT_RAW_TRACEPOINT,
	SLOT_UPROBE,
	SLOT_CGROUP_SKB,
	SLOT_PERF_EVENT,
};

struct blob {
	unsigned char *data;
	size_t len;
};

static struct probe_mgr *mgr;
static struct blob hooks, reject;

/* The uprobe target: kept out of line so the symbol exists. */
__attribute__((noinline)) int probe_test_target(int x)
{
	__asm__ volatile("" ::: "memory");
	return x + 1;
}

/* ================================================================ fixtures */

static struct blob read_blob(const char *name)
{
	const char *dir = getenv("GRAIND_TEST_BPF");
	struct blob b = { NULL, 0 };
	char path[512];
	struct stat st;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir && *dir ? dir : "build/tests/bpf", name);
	f = fopen(path, "rb");
	if (!f || fstat(fileno(f), &st) < 0)
		fail_msg("cannot open %s: %s", path, strerror(errno));
	b.data = malloc(st.st_size);
	assert_non_null(b.data);
	b.len = fread(b.data, 1, st.st_size, f);
	assert_int_equal(b.len, (size_t)st.st_size);
	fclose(f);
	return b;
}

static void run(const char *cmd)
{
	if (system(cmd) != 0)
		fail_msg("command failed: %s", cmd);
}

static const char *const test_probes[] = {
	"ut-net", "ut.dotted", "ut-swap", "ut-tp", "ut-uprobe", "ut-cgroup", "ut-perf",
	"ut-err", "ut-foreign", "ut-reject", "ut-partial", "ut-override", "ut-txn",
};

static void cleanup_network(void)
{
	/* Either may be absent: nothing to check. */
	int ret = system("ip link del " IF_HERE " 2>/dev/null; ip netns del " NETNS " 2>/dev/null");

	(void)ret;
}

static int setup(void **state)
{
	struct gerr err = { 0 };

	(void)state;
	cleanup_network();
	run("ip netns add " NETNS " && "
	    "ip link add " IF_HERE " type veth peer name gpt1 netns " NETNS " && "
	    "ip addr add " ADDR_HERE "/30 dev " IF_HERE " && ip link set " IF_HERE " up && "
	    "ip -n " NETNS " addr add 198.18.0.2/30 dev gpt1 && "
	    "ip -n " NETNS " link set gpt1 up && ip -n " NETNS " link set lo up");
	hooks = read_blob("hooks.bpf.o");
	reject = read_blob("reject_oob.bpf.o");
	/* The links, swaps and rollbacks here are those of an XDP program
	 * that holds its interface alone; sharing one through libxdp's
	 * dispatcher is tested by tests/system/test_xdp_shared.py. */
	setenv("LIBXDP_SKIP_DISPATCHER", "1", 1);
	/* A fresh host may not have bpffs (or tracefs) mounted yet. */
	if (features_mount(&err) < 0)
		fail_msg("features_mount: %s", err.msg);
	if (probe_mgr_new(TEST_PIN_ROOT, &mgr, &err) < 0)
		fail_msg("probe_mgr_new: %s", err.msg);
	for (size_t i = 0; i < sizeof(test_probes) / sizeof(test_probes[0]); i++)
		probe_detach(mgr, test_probes[i], NULL, NULL);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	/* A setup that failed leaves no manager. */
	for (size_t i = 0; mgr && i < sizeof(test_probes) / sizeof(test_probes[0]); i++)
		probe_detach(mgr, test_probes[i], NULL, NULL);
	if (mgr)
		probe_mgr_free(mgr);
	cleanup_network();
	free(hooks.data);
	free(reject.data);
	return 0;
}

/* ================================================================ specs */

static Graind__ProbeSpec *spec_new(void)
{
	Graind__ProbeSpec *s = (Graind__ProbeSpec *)pbmsg_new(&graind__probe_spec__descriptor);

	assert_non_null(s);
	return s;
}

#define NEW(type, desc) ((type *)pbmsg_new(&desc))

static void set(char **field, const char *value)
{
	assert_int_equal(pbmsg_set_string(field, value), 0);
}

/* Add program `prog` with a new attach spec of kind `kind`, returned. */
static Graind__AttachSpec *add_prog(Graind__ProbeSpec *s, const char *prog,
				    Graind__AttachSpec__KindCase kind)
{
	Graind__ProgramAttach *pa = NEW(Graind__ProgramAttach, graind__program_attach__descriptor);
	Graind__AttachSpec *a = NEW(Graind__AttachSpec, graind__attach_spec__descriptor);

	set(&pa->program, prog);
	pa->attach = a;
	a->kind_case = kind;
	switch (kind) {
	case GRAIND__ATTACH_SPEC__KIND_AUTO:
		a->auto_ = NEW(Graind__AutoAttach, graind__auto_attach__descriptor);
		break;
	case GRAIND__ATTACH_SPEC__KIND_XDP:
		a->xdp = NEW(Graind__XdpAttach, graind__xdp_attach__descriptor);
		break;
	case GRAIND__ATTACH_SPEC__KIND_TC:
		a->tc = NEW(Graind__TcAttach, graind__tc_attach__descriptor);
		break;
	case GRAIND__ATTACH_SPEC__KIND_TRACEPOINT:
		a->tracepoint = NEW(Graind__TracepointAttach, graind__tracepoint_attach__descriptor);
		break;
	case GRAIND__ATTACH_SPEC__KIND_RAW_TRACEPOINT:
		a->raw_tracepoint = NEW(Graind__RawTracepointAttach, graind__raw_tracepoint_attach__descriptor);
		break;
	case GRAIND__ATTACH_SPEC__KIND_UPROBE:
		a->uprobe = NEW(Graind__UprobeAttach, graind__uprobe_attach__descriptor);
		break;
	case GRAIND__ATTACH_SPEC__KIND_KPROBE:
		a->kprobe = NEW(Graind__KprobeAttach, graind__kprobe_attach__descriptor);
		break;
	case GRAIND__ATTACH_SPEC__KIND_PERF_EVENT:
		a->perf_event = NEW(Graind__PerfEventAttach, graind__perf_event_attach__descriptor);
		break;
	case GRAIND__ATTACH_SPEC__KIND_CGROUP:
		a->cgroup = NEW(Graind__CgroupAttach, graind__cgroup_attach__descriptor);
		break;
	default:
		fail_msg("kind %d not handled by the test", kind);
	}
	s->programs = realloc(s->programs, (s->n_programs + 1) * sizeof(*s->programs));
	assert_non_null(s->programs);
	s->programs[s->n_programs++] = pa;
	return a;
}

static void add_xdp(Graind__ProbeSpec *s, const char *prog, const char *ifname)
{
	set(&add_prog(s, prog, GRAIND__ATTACH_SPEC__KIND_XDP)->xdp->ifname, ifname);
}

static void add_constant(Graind__ProbeSpec *s, const char *name, const char *value)
{
	Graind__Constant *c = NEW(Graind__Constant, graind__constant__descriptor);

	set(&c->name, name);
	set(&c->value, value);
	s->constants = realloc(s->constants, (s->n_constants + 1) * sizeof(*s->constants));
	assert_non_null(s->constants);
	s->constants[s->n_constants++] = c;
}

static void add_target_pid(Graind__ProbeSpec *s)
{
	char pid[16];

	snprintf(pid, sizeof(pid), "%d", getpid());
	add_constant(s, "target_pid", pid);
}

/* ================================================================ kernel */

static void attach_ok(const char *name, uint64_t gen, Graind__ProbeSpec *s,
		      const struct blob *obj, bool *adopted)
{
	struct gerr err = { 0 };
	bool adopted_here;

	if (probe_attach(mgr, name, gen, s, obj->data, obj->len,
			 adopted ? adopted : &adopted_here, NULL, NULL, &err) < 0)
		fail_msg("attach %s: %d %s", name, err.status, err.msg);
}

/* Attach must fail with `status` and a message containing `needle`, and
 * leave nothing pinned. */
static void attach_fails(const char *name, Graind__ProbeSpec *s,
			 const struct blob *obj, int status, const char *needle)
{
	struct gerr err = { 0 };
	char dir[PATH_MAX];
	bool adopted;

	assert_int_equal(probe_attach(mgr, name, 1, s, obj->data, obj->len,
				      &adopted, NULL, NULL, &err), -1);
	if (err.status != status || !strstr(err.msg, needle))
		fail_msg("expected %d \"%s\", got %d \"%s\"", status, needle, err.status, err.msg);
	snprintf(dir, sizeof(dir), TEST_PIN_ROOT "/%s", name);
	assert_int_equal(access(dir, F_OK), -1);
	assert_int_equal(probe_pinned_generation(mgr, name), 0);
}

static uint64_t count(const char *probe, uint32_t slot)
{
	char path[PATH_MAX];
	uint64_t value = 0;
	int fd;

	snprintf(path, sizeof(path), TEST_PIN_ROOT "/%s/map_counts", probe);
	fd = bpf_obj_get(path);
	if (fd < 0)
		fail_msg("%s: %s", path, strerror(errno));
	assert_int_equal(bpf_map_lookup_elem(fd, &slot, &value), 0);
	close(fd);
	return value;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* Wait for the counter to reach want (packets travel asynchronously). */
static uint64_t count_settled(const char *probe, uint32_t slot, uint64_t want)
{
	for (int i = 0; i < 200 && count(probe, slot) < want; i++)
		sleep_ms(10);
	sleep_ms(50);
	return count(probe, slot);
}

/* Send n UDP datagrams to ADDR_HERE:COUNT_PORT from inside NETNS. */
static void send_udp(int n)
{
	pid_t pid = fork();
	int status;

	assert_true(pid >= 0);
	if (pid == 0) {
		struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(COUNT_PORT) };
		int ns = open("/run/netns/" NETNS, O_RDONLY), s;

		if (ns < 0 || setns(ns, CLONE_NEWNET) < 0)
			_exit(2);
		inet_pton(AF_INET, ADDR_HERE, &to.sin_addr);
		s = socket(AF_INET, SOCK_DGRAM, 0);
		for (int i = 0; i < n; i++)
			if (sendto(s, "x", 1, 0, (struct sockaddr *)&to, sizeof(to)) != 1)
				_exit(3);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* The ids of everything a pinned probe holds in the kernel. */
struct kernel_ids {
	uint32_t prog[16], link[16], map[32];
	size_t n_prog, n_link, n_map;
};

static void add_id(uint32_t *ids, size_t *n, size_t max, uint32_t id)
{
	for (size_t i = 0; i < *n; i++)
		if (ids[i] == id)
			return;
	assert_true(*n < max);
	ids[(*n)++] = id;
}

static bool is_map(int fd)
{
	char link[64], target[32] = "";

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	return readlink(link, target, sizeof(target) - 1) > 0 &&
	       strcmp(target, "anon_inode:bpf-map") == 0;
}

static void collect_ids(const char *probe, struct kernel_ids *k)
{
	char dir[PATH_MAX], path[PATH_MAX + 256];
	struct dirent *de;
	DIR *d;

	memset(k, 0, sizeof(*k));
	snprintf(dir, sizeof(dir), TEST_PIN_ROOT "/%s", probe);
	d = opendir(dir);
	assert_non_null(d);
	while ((de = readdir(d))) {
		union { struct bpf_link_info link; struct bpf_map_info map; } info;
		struct bpf_prog_info pi;
		uint32_t len = sizeof(info), map_ids[16], plen = sizeof(pi);
		int fd, pfd;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		fd = bpf_obj_get(path);
		assert_true(fd >= 0);
		memset(&info, 0, sizeof(info));
		assert_int_equal(bpf_obj_get_info_by_fd(fd, &info, &len), 0);
		/* A classic tc filter's record is a map in a link's place. */
		if (strncmp(de->d_name, "link_", 5) == 0 && !is_map(fd)) {
			add_id(k->link, &k->n_link, 16, info.link.id);
			add_id(k->prog, &k->n_prog, 16, info.link.prog_id);
			pfd = bpf_prog_get_fd_by_id(info.link.prog_id);
			assert_true(pfd >= 0);
			memset(&pi, 0, sizeof(pi));
			pi.nr_map_ids = 16;
			pi.map_ids = (uintptr_t)map_ids;
			assert_int_equal(bpf_obj_get_info_by_fd(pfd, &pi, &plen), 0);
			for (uint32_t i = 0; i < pi.nr_map_ids && i < 16; i++)
				add_id(k->map, &k->n_map, 32, map_ids[i]);
			close(pfd);
		} else {
			add_id(k->map, &k->n_map, 32, info.map.id);
		}
		close(fd);
	}
	closedir(d);
	assert_true(k->n_link > 0 && k->n_prog > 0 && k->n_map > 0);
}

static bool id_exists(int (*get)(uint32_t), uint32_t id)
{
	int fd = get(id);

	if (fd < 0)
		return errno != ENOENT;
	close(fd);
	return true;
}

static int link_by_id(uint32_t id) { return bpf_link_get_fd_by_id(id); }
static int prog_by_id(uint32_t id) { return bpf_prog_get_fd_by_id(id); }
static int map_by_id(uint32_t id) { return bpf_map_get_fd_by_id(id); }

static bool any_exists(const struct kernel_ids *k)
{
	for (size_t i = 0; i < k->n_link; i++)
		if (id_exists(link_by_id, k->link[i]))
			return true;
	for (size_t i = 0; i < k->n_prog; i++)
		if (id_exists(prog_by_id, k->prog[i]))
			return true;
	for (size_t i = 0; i < k->n_map; i++)
		if (id_exists(map_by_id, k->map[i]))
			return true;
	return false;
}

/* Objects go away asynchronously (RCU) after their last reference. */
static void assert_all_gone(const struct kernel_ids *k)
{
	for (int i = 0; i < 200 && any_exists(k); i++)
		sleep_ms(10);
	assert_false(any_exists(k));
}

static void detach_clean(const char *probe)
{
	struct kernel_ids k;
	struct gerr err = { 0 };
	char dir[PATH_MAX];

	collect_ids(probe, &k);
	assert_int_equal(probe_detach(mgr, probe, NULL, &err), 0);
	snprintf(dir, sizeof(dir), TEST_PIN_ROOT "/%s", probe);
	assert_int_equal(access(dir, F_OK), -1);
	assert_all_gone(&k);
}

static Graind__Probe *status_of(const char *name, Graind__ProbeSpec *spec)
{
	Graind__Probe *p = NEW(Graind__Probe, graind__probe__descriptor);
	struct gerr err = { 0 };

	set(&p->name, name);
	p->spec = spec;
	if (probe_status(mgr, p, &err) < 0)
		fail_msg("status: %s", err.msg);
	return p;
}

static void status_free(Graind__Probe *p)
{
	p->spec = NULL;		/* the test's */
	pbmsg_free((ProtobufCMessage *)p);
}

static uint32_t pinned_link_id(const char *probe, const char *prog)
{
	struct bpf_link_info info;
	char path[PATH_MAX];
	uint32_t len = sizeof(info);
	int fd;

	snprintf(path, sizeof(path), TEST_PIN_ROOT "/%s/link_%s", probe, prog);
	fd = bpf_obj_get(path);
	assert_true(fd >= 0);
	memset(&info, 0, sizeof(info));
	assert_int_equal(bpf_obj_get_info_by_fd(fd, &info, &len), 0);
	close(fd);
	return info.id;
}

/* What stays while a TC program is swapped in place: its TCX link, or
 * (kernels without TCX) its classic filter's handle and priority. */
static uint64_t tc_place(const char *probe, Graind__ProbeSpec *s)
{
	Graind__Probe *st;
	uint64_t place = 0;

	if (features_tcx())
		return pinned_link_id(probe, "count_tc");
	st = status_of(probe, s);
	for (size_t i = 0; i < st->n_programs; i++)
		if (strcmp(st->programs[i]->program, "count_tc") == 0 && st->programs[i]->tc_filter)
			place = (uint64_t)st->programs[i]->tc_filter->handle << 32 |
				st->programs[i]->tc_filter->priority;
	status_free(st);
	assert_true(place != 0);
	return place;
}

/* ================================================================ tests */

static void test_xdp_and_tc_count_packets(void **state)
{
	Graind__ProbeSpec *s = spec_new();
	Graind__AttachSpec *tc;
	Graind__Probe *st;

	(void)state;
	add_xdp(s, "count_xdp", IF_HERE);
	tc = add_prog(s, "count_tc", GRAIND__ATTACH_SPEC__KIND_TC);
	set(&tc->tc->ifname, IF_HERE);
	tc->tc->direction = GRAIND__TC_DIRECTION__TC_INGRESS;
	attach_ok("ut-net", 1, s, &hooks, NULL);
	assert_int_equal(probe_pinned_generation(mgr, "ut-net"), 1);

	send_udp(5);
	assert_int_equal(count_settled("ut-net", SLOT_XDP, 5), 5);
	assert_int_equal(count_settled("ut-net", SLOT_TC, 5), 5);

	st = status_of("ut-net", s);
	assert_int_equal(st->n_programs, 2);
	for (size_t i = 0; i < 2; i++) {
		assert_int_equal(st->programs[i]->state, GRAIND__PROGRAM_STATE__PROGRAM_ATTACHED);
		assert_true(st->programs[i]->prog_id > 0);
		/* TC without TCX is a classic filter: where it is, not a link. */
		if (i == 1 && !features_tcx()) {
			assert_int_equal(st->programs[i]->link_id, 0);
			assert_non_null(st->programs[i]->tc_filter);
			assert_string_equal(st->programs[i]->tc_filter->ifname, IF_HERE);
		} else {
			assert_true(st->programs[i]->link_id > 0);
		}
		assert_true(st->programs[i]->run_count >= 5);
		assert_int_equal(strlen(st->programs[i]->attached_at), 24);
	}
	assert_string_equal(st->programs[0]->program, "count_xdp");
	status_free(st);

	detach_clean("ut-net");
	st = status_of("ut-net", s);
	assert_int_equal(st->programs[0]->state, GRAIND__PROGRAM_STATE__PROGRAM_DETACHED);
	status_free(st);
	pbmsg_free((ProtobufCMessage *)s);
}

static void test_adopt_restart_and_swap(void **state)
{
	Graind__ProbeSpec *s = spec_new();
	uint32_t link, old_prog;
	uint64_t tc_link;
	struct gerr err = { 0 };
	Graind__AttachSpec *tc;
	Graind__Probe *st;
	bool adopted;

	(void)state;
	add_xdp(s, "count_xdp", IF_HERE);
	tc = add_prog(s, "count_tc", GRAIND__ATTACH_SPEC__KIND_TC);
	set(&tc->tc->ifname, IF_HERE);
	tc->tc->direction = GRAIND__TC_DIRECTION__TC_EGRESS;
	attach_ok("ut-swap", 1, s, &hooks, &adopted);
	assert_false(adopted);
	link = pinned_link_id("ut-swap", "count_xdp");
	tc_link = tc_place("ut-swap", s);
	send_udp(2);
	assert_int_equal(count_settled("ut-swap", SLOT_XDP, 2), 2);

	/* Same generation: adopted, the kernel untouched. */
	attach_ok("ut-swap", 1, s, &hooks, &adopted);
	assert_true(adopted);
	assert_int_equal(pinned_link_id("ut-swap", "count_xdp"), link);

	/* A new manager (a restarted agent) adopts too, counts kept. */
	probe_mgr_free(mgr);
	assert_int_equal(probe_mgr_new(TEST_PIN_ROOT, &mgr, &err), 0);
	attach_ok("ut-swap", 1, s, &hooks, &adopted);
	assert_true(adopted);
	assert_int_equal(count("ut-swap", SLOT_XDP), 2);

	/* A new generation swaps the program under the same link. */
	st = status_of("ut-swap", s);
	old_prog = st->programs[0]->prog_id;
	status_free(st);
	attach_ok("ut-swap", 2, s, &hooks, &adopted);
	assert_false(adopted);
	assert_int_equal(probe_pinned_generation(mgr, "ut-swap"), 2);
	assert_int_equal(pinned_link_id("ut-swap", "count_xdp"), link);
	assert_int_equal(tc_place("ut-swap", s), tc_link);
	st = status_of("ut-swap", s);
	assert_int_not_equal(st->programs[0]->prog_id, old_prog);
	assert_int_equal(st->programs[0]->link_id, link);
	status_free(st);
	{
		struct kernel_ids old = { .prog = { old_prog }, .n_prog = 1 };

		assert_all_gone(&old);
	}
	send_udp(3);
	assert_int_equal(count_settled("ut-swap", SLOT_XDP, 3), 3);

	/* A generation that fails half-way leaves generation 2 running. */
	{
		Graind__ProbeSpec *bad = spec_new();
		Graind__AttachSpec *a;

		add_xdp(bad, "count_xdp", IF_HERE);
		a = add_prog(bad, "count_sys_enter", GRAIND__ATTACH_SPEC__KIND_RAW_TRACEPOINT);
		set(&a->raw_tracepoint->name, "no_such_tracepoint_xyz");
		st = status_of("ut-swap", s);
		old_prog = st->programs[0]->prog_id;
		status_free(st);
		assert_int_equal(probe_attach(mgr, "ut-swap", 3, bad, hooks.data, hooks.len,
					      &adopted, NULL, NULL, &err), -1);
		assert_int_equal(err.status, 404);
		assert_int_equal(probe_pinned_generation(mgr, "ut-swap"), 2);
		assert_int_equal(pinned_link_id("ut-swap", "count_xdp"), link);
		st = status_of("ut-swap", s);
		assert_int_equal(st->programs[0]->prog_id, old_prog);
		status_free(st);
		send_udp(1);
		assert_int_equal(count_settled("ut-swap", SLOT_XDP, 4), 4);
		pbmsg_free((ProtobufCMessage *)bad);
	}

	detach_clean("ut-swap");
	pbmsg_free((ProtobufCMessage *)s);
}

static void test_tracepoints_with_constant(void **state)
{
	Graind__ProbeSpec *s = spec_new();
	Graind__AttachSpec *a;

	(void)state;
	a = add_prog(s, "count_getpid", GRAIND__ATTACH_SPEC__KIND_TRACEPOINT);
	set(&a->tracepoint->category, "syscalls");
	set(&a->tracepoint->name, "sys_enter_getpid");
	a = add_prog(s, "count_sys_enter", GRAIND__ATTACH_SPEC__KIND_RAW_TRACEPOINT);
	set(&a->raw_tracepoint->name, "sys_enter");
	add_target_pid(s);
	attach_ok("ut-tp", 1, s, &hooks, NULL);

	for (int i = 0; i < 7; i++)
		syscall(SYS_getpid);
	assert_int_equal(count("ut-tp", SLOT_TRACEPOINT), 7);
	assert_true(count("ut-tp", SLOT_RAW_TRACEPOINT) >= 7);
	detach_clean("ut-tp");
	pbmsg_free((ProtobufCMessage *)s);
}

static void test_auto_attach_tracepoint(void **state)
{
	Graind__ProbeSpec *s = spec_new();

	(void)state;
	add_prog(s, "count_getpid", GRAIND__ATTACH_SPEC__KIND_AUTO);
	add_target_pid(s);
	attach_ok("ut-tp", 1, s, &hooks, NULL);
	for (int i = 0; i < 3; i++)
		syscall(SYS_getpid);
	assert_int_equal(count("ut-tp", SLOT_TRACEPOINT), 3);
	detach_clean("ut-tp");
	pbmsg_free((ProtobufCMessage *)s);
}

static void test_uprobe(void **state)
{
	Graind__ProbeSpec *s = spec_new();
	Graind__AttachSpec *a;
	char self[PATH_MAX];
	ssize_t n;

	(void)state;
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	assert_true(n > 0);
	self[n] = '\0';
	a = add_prog(s, "count_uprobe", GRAIND__ATTACH_SPEC__KIND_UPROBE);
	set(&a->uprobe->binary, self);
	set(&a->uprobe->symbol, "probe_test_target");
	a->uprobe->pid = getpid();
	attach_ok("ut-uprobe", 1, s, &hooks, NULL);
	for (int i = 0; i < 4; i++)
		probe_test_target(i);
	assert_int_equal(count("ut-uprobe", SLOT_UPROBE), 4);
	detach_clean("ut-uprobe");

	set(&a->uprobe->symbol, "no_such_symbol_here");
	attach_fails("ut-uprobe", s, &hooks, 404, "no_such_symbol_here");
	set(&a->uprobe->binary, "/no/such/binary");
	attach_fails("ut-uprobe", s, &hooks, 404, "binary /no/such/binary not found");
	pbmsg_free((ProtobufCMessage *)s);
}

/* Where cgroup v2 is mounted (a hybrid host has it below /sys/fs/cgroup). */
static void cgroup2_mount(char *buf, size_t n)
{
	char dev[64], dir[PATH_MAX], type[64];
	FILE *f = fopen("/proc/mounts", "r");

	assert_non_null(f);
	buf[0] = '\0';
	while (fscanf(f, "%63s %4095s %63s %*[^\n]", dev, dir, type) == 3)
		if (strcmp(type, "cgroup2") == 0 && !buf[0])
			snprintf(buf, n, "%s", dir);
	fclose(f);
	if (!buf[0])
		fail_msg("cgroup v2 is not mounted");
}

/* This process's cgroup v2 directory. */
static void own_cgroup(char *buf, size_t n)
{
	char line[512], mount[PATH_MAX];
	FILE *f = fopen("/proc/self/cgroup", "r");

	cgroup2_mount(mount, sizeof(mount));
	assert_non_null(f);
	buf[0] = '\0';
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "0::", 3) == 0) {
			line[strcspn(line, "\n")] = '\0';
			snprintf(buf, n, "%s%s", mount, line + 3);
		}
	}
	fclose(f);
	assert_true(buf[0] != '\0');
}

static void test_cgroup_skb(void **state)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(COUNT_PORT) };
	Graind__ProbeSpec *s = spec_new();
	Graind__AttachSpec *a;
	char cg[PATH_MAX], buf[8];
	int rx, tx;

	(void)state;
	own_cgroup(cg, sizeof(cg));
	a = add_prog(s, "count_cgroup_skb", GRAIND__ATTACH_SPEC__KIND_CGROUP);
	set(&a->cgroup->path, cg);
	attach_ok("ut-cgroup", 1, s, &hooks, NULL);

	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	rx = socket(AF_INET, SOCK_DGRAM, 0);
	tx = socket(AF_INET, SOCK_DGRAM, 0);
	assert_int_equal(bind(rx, (struct sockaddr *)&addr, sizeof(addr)), 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(sendto(tx, "x", 1, 0, (struct sockaddr *)&addr, sizeof(addr)), 1);
		assert_int_equal(recv(rx, buf, sizeof(buf), 0), 1);
	}
	close(rx);
	close(tx);
	assert_true(count("ut-cgroup", SLOT_CGROUP_SKB) >= 3);
	detach_clean("ut-cgroup");

	set(&a->cgroup->path, "/no/such/cgroup");
	attach_fails("ut-cgroup", s, &hooks, 404, "cgroup /no/such/cgroup not found");
	set(&a->cgroup->path, "/tmp");
	attach_fails("ut-cgroup", s, &hooks, 400, "/tmp is not a cgroup v2 directory");
	set(&a->cgroup->path, cg);
	set(&a->cgroup->attach_type, "no_such_type");
	attach_fails("ut-cgroup", s, &hooks, 400, "unknown cgroup attach type");
	pbmsg_free((ProtobufCMessage *)s);
}

static void test_perf_event_every_cpu(void **state)
{
	Graind__ProbeSpec *s = spec_new();
	Graind__AttachSpec *a;
	char path[PATH_MAX];
	struct timespec t0, t;

	(void)state;
	a = add_prog(s, "count_perf_event", GRAIND__ATTACH_SPEC__KIND_PERF_EVENT);
	a->perf_event->type = PERF_TYPE_SOFTWARE;
	a->perf_event->config = PERF_COUNT_SW_CPU_CLOCK;
	a->perf_event->sample_freq = 1000;
	attach_ok("ut-perf", 1, s, &hooks, NULL);

	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		clock_gettime(CLOCK_MONOTONIC, &t);
	} while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < 100);
	assert_true(count("ut-perf", SLOT_PERF_EVENT) > 0);
	for (long cpu = 0; cpu < sysconf(_SC_NPROCESSORS_ONLN); cpu++) {
		snprintf(path, sizeof(path), TEST_PIN_ROOT "/ut-perf/link_count_perf_event-%ld", cpu);
		assert_int_equal(access(path, F_OK), 0);
	}
	detach_clean("ut-perf");

	a->perf_event->sample_freq = 0;
	attach_fails("ut-perf", s, &hooks, 400, "sample_period or sample_freq");
	pbmsg_free((ProtobufCMessage *)s);
}

static void test_errors(void **state)
{
	Graind__ProbeSpec *s;
	Graind__AttachSpec *a;

	(void)state;
	/* Without kprobes (no kprobe PMU) both ways of asking are refused by
	 * name; with them, the section alone attaches. */
	s = spec_new();
	a = add_prog(s, "count_kprobe", GRAIND__ATTACH_SPEC__KIND_KPROBE);
	set(&a->kprobe->function, "do_nanosleep");
	if (access("/sys/bus/event_source/devices/kprobe", F_OK) < 0)
		attach_fails("ut-err", s, &hooks, 422, "kernel built without CONFIG_KPROBES");
	pbmsg_free((ProtobufCMessage *)s);

	s = spec_new();
	add_prog(s, "count_kprobe", GRAIND__ATTACH_SPEC__KIND_AUTO);
	if (access("/sys/bus/event_source/devices/kprobe", F_OK) < 0) {
		attach_fails("ut-err", s, &hooks, 422, "CONFIG_KPROBES");
	} else {
		attach_ok("ut-kprobe", 1, s, &hooks, NULL);
		detach_clean("ut-kprobe");
	}
	pbmsg_free((ProtobufCMessage *)s);

	s = spec_new();
	add_xdp(s, "count_xdp", "veth9");
	attach_fails("ut-err", s, &hooks, 404, "interface veth9 not found");
	pbmsg_free((ProtobufCMessage *)s);

	s = spec_new();
	a = add_prog(s, "count_xdp", GRAIND__ATTACH_SPEC__KIND_TRACEPOINT);
	set(&a->tracepoint->category, "syscalls");
	set(&a->tracepoint->name, "sys_enter_getpid");
	attach_fails("ut-err", s, &hooks, 400, "program count_xdp is xdp; it cannot attach as a tracepoint");
	pbmsg_free((ProtobufCMessage *)s);

	s = spec_new();
	add_xdp(s, "no_such_program", IF_HERE);
	attach_fails("ut-err", s, &hooks, 400, "program no_such_program not found");
	pbmsg_free((ProtobufCMessage *)s);

	s = spec_new();
	add_prog(s, "count_xdp", GRAIND__ATTACH_SPEC__KIND_AUTO);
	attach_fails("ut-err", s, &hooks, 400, "needs an interface");
	pbmsg_free((ProtobufCMessage *)s);

	/* Every program, attach auto: the XDP one has no interface. */
	s = spec_new();
	attach_fails("ut-err", s, &hooks, 400, "needs an interface");
	pbmsg_free((ProtobufCMessage *)s);

	s = spec_new();
	add_xdp(s, "count_xdp", IF_HERE);
	add_constant(s, "no_such_constant", "1");
	attach_fails("ut-err", s, &hooks, 400, "constant no_such_constant not found");
	pbmsg_free((ProtobufCMessage *)s);

	s = spec_new();
	add_xdp(s, "count_xdp", IF_HERE);
	add_constant(s, "target_pid", "0x100000000");
	attach_fails("ut-err", s, &hooks, 400, "not a 4-byte integer");
	pbmsg_free((ProtobufCMessage *)s);

	s = spec_new();
	add_xdp(s, "count_xdp", IF_HERE);
	add_constant(s, "label", "far too long");
	attach_fails("ut-err", s, &hooks, 400, "at most 7 characters");
	pbmsg_free((ProtobufCMessage *)s);

	s = spec_new();
	add_xdp(s, "count_xdp", IF_HERE);
	s->map_overrides = calloc(1, sizeof(*s->map_overrides));
	s->map_overrides[0] = NEW(Graind__MapOverride, graind__map_override__descriptor);
	s->n_map_overrides = 1;
	set(&s->map_overrides[0]->map, "no_such_map");
	s->map_overrides[0]->max_entries = 16;
	attach_fails("ut-err", s, &hooks, 400, "map no_such_map not found");
	pbmsg_free((ProtobufCMessage *)s);
}

static void test_constants_and_overrides_apply(void **state)
{
	Graind__ProbeSpec *s = spec_new();
	struct bpf_map_info info;
	uint32_t len = sizeof(info);
	int fd;

	(void)state;
	add_xdp(s, "count_xdp", IF_HERE);
	add_constant(s, "target_pid", "0x2a");
	add_constant(s, "label", "abc");
	s->map_overrides = calloc(1, sizeof(*s->map_overrides));
	s->map_overrides[0] = NEW(Graind__MapOverride, graind__map_override__descriptor);
	s->n_map_overrides = 1;
	set(&s->map_overrides[0]->map, "counts");
	s->map_overrides[0]->max_entries = 16;
	attach_ok("ut-override", 1, s, &hooks, NULL);

	fd = bpf_obj_get(TEST_PIN_ROOT "/ut-override/map_counts");
	assert_true(fd >= 0);
	memset(&info, 0, sizeof(info));
	assert_int_equal(bpf_obj_get_info_by_fd(fd, &info, &len), 0);
	assert_int_equal(info.max_entries, 16);
	close(fd);
	{
		struct { uint32_t pid; char label[8]; } ro;
		uint32_t key = 0;

		fd = bpf_obj_get(TEST_PIN_ROOT "/ut-override/map_graind-rodata");
		assert_true(fd >= 0);
		assert_int_equal(bpf_map_lookup_elem(fd, &key, &ro), 0);
		assert_int_equal(ro.pid, 42);
		assert_string_equal(ro.label, "abc");
		close(fd);
	}
	detach_clean("ut-override");
	pbmsg_free((ProtobufCMessage *)s);
}

static void test_foreign_xdp_program(void **state)
{
	Graind__ProbeSpec *s = spec_new();
	struct bpf_object *obj;
	struct bpf_program *prog;
	struct bpf_prog_info info;
	uint32_t len = sizeof(info);
	int ifindex = if_nametoindex(IF_HERE);
	char want[64];

	(void)state;
	obj = bpf_object__open_mem(hooks.data, hooks.len, NULL);
	assert_non_null(obj);
	bpf_object__for_each_program(prog, obj)
		bpf_program__set_autoload(prog, strcmp(bpf_program__name(prog), "count_xdp") == 0);
	assert_int_equal(bpf_object__load(obj), 0);
	prog = bpf_object__find_program_by_name(obj, "count_xdp");
	assert_int_equal(bpf_xdp_attach(ifindex, bpf_program__fd(prog), XDP_FLAGS_SKB_MODE, NULL), 0);
	memset(&info, 0, sizeof(info));
	assert_int_equal(bpf_obj_get_info_by_fd(bpf_program__fd(prog), &info, &len), 0);
	snprintf(want, sizeof(want), "XDP program id %u", info.id);

	add_xdp(s, "count_xdp", IF_HERE);
	attach_fails("ut-foreign", s, &hooks, 409, want);

	bpf_xdp_detach(ifindex, XDP_FLAGS_SKB_MODE, NULL);
	bpf_object__close(obj);
	pbmsg_free((ProtobufCMessage *)s);
}

static void test_verifier_rejects(void **state)
{
	Graind__ProbeSpec *s = spec_new();
	Graind__VerifyReport *report = NULL;
	struct gerr err = { 0 };
	bool adopted;

	(void)state;
	add_xdp(s, "read_past_end", IF_HERE);
	assert_int_equal(probe_attach(mgr, "ut-reject", 1, s, reject.data, reject.len,
				      &adopted, &report, NULL, &err), -1);
	assert_int_equal(err.status, 422);
	assert_non_null(strstr(err.msg, "the verifier refused program read_past_end"));
	assert_non_null(report);
	assert_false(report->accepted);
	assert_int_equal(report->n_programs, 1);
	assert_false(report->programs[0]->accepted);
	assert_true(report->programs[0]->error[0] != '\0');
	assert_true(report->programs[0]->verifier_log[0] != '\0');
	assert_int_equal(probe_pinned_generation(mgr, "ut-reject"), 0);
	pbmsg_free((ProtobufCMessage *)report);
	pbmsg_free((ProtobufCMessage *)s);
}

/* The largest id of a program called one of `names`, above `after`. */
static uint32_t newest_prog_named(const char *const *names, size_t n, uint32_t after)
{
	uint32_t id = after, found = 0;

	while (bpf_prog_get_next_id(id, &id) == 0) {
		struct bpf_prog_info info;
		uint32_t len = sizeof(info);
		int fd = bpf_prog_get_fd_by_id(id);

		if (fd < 0)
			continue;
		memset(&info, 0, sizeof(info));
		if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0)
			for (size_t i = 0; i < n; i++)
				if (strcmp(info.name, names[i]) == 0)
					found = id;
		close(fd);
	}
	return found;
}

static void test_second_program_fails_leaves_nothing(void **state)
{
	static const char *const ours[] = { "count_getpid", "count_sys_enter" };
	Graind__ProbeSpec *s = spec_new();
	Graind__AttachSpec *a;
	Graind__Probe *st;
	uint32_t before = 0, id = 0;

	(void)state;
	while (bpf_prog_get_next_id(id, &id) == 0)
		before = id;
	a = add_prog(s, "count_getpid", GRAIND__ATTACH_SPEC__KIND_TRACEPOINT);
	set(&a->tracepoint->category, "syscalls");
	set(&a->tracepoint->name, "sys_enter_getpid");
	a = add_prog(s, "count_sys_enter", GRAIND__ATTACH_SPEC__KIND_RAW_TRACEPOINT);
	set(&a->raw_tracepoint->name, "no_such_tracepoint_xyz");
	attach_fails("ut-partial", s, &hooks, 404, "no_such_tracepoint_xyz");

	for (int i = 0; i < 200 && newest_prog_named(ours, 2, before); i++)
		sleep_ms(10);
	assert_int_equal(newest_prog_named(ours, 2, before), 0);

	st = status_of("ut-partial", s);
	assert_int_equal(st->n_programs, 2);
	assert_int_equal(st->programs[1]->state, GRAIND__PROGRAM_STATE__PROGRAM_FAILED);
	assert_non_null(strstr(st->programs[1]->error, "no_such_tracepoint_xyz"));
	status_free(st);
	pbmsg_free((ProtobufCMessage *)s);
}

static int find_listed(const char *name, void *ctx)
{
	if (strcmp(name, "ut.dotted") == 0)
		++*(int *)ctx;
	return 0;
}

/* bpffs refuses dots in names: the probe's directory stands in for them. */
static void test_dotted_name_listed(void **state)
{
	Graind__ProbeSpec *s = spec_new();
	int n = 0;

	(void)state;
	set(&add_prog(s, "count_xdp", GRAIND__ATTACH_SPEC__KIND_AUTO)->auto_->ifname, IF_HERE);
	attach_ok("ut.dotted", 3, s, &hooks, NULL);
	assert_int_equal(probe_pinned_generation(mgr, "ut.dotted"), 3);
	assert_int_equal(probe_list_pinned(mgr, find_listed, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(probe_detach(mgr, "ut.dotted", NULL, NULL), 0);
	n = 0;
	assert_int_equal(probe_list_pinned(mgr, find_listed, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(probe_pinned_generation(mgr, "ut.dotted"), 0);
	/* Detaching what is not pinned is fine. */
	assert_int_equal(probe_detach(mgr, "ut.dotted", NULL, NULL), 0);
	pbmsg_free((ProtobufCMessage *)s);
}

/* ================================================================ txn */

#define TXN_PROBE "ut-txn"
#define TXN_DIR TEST_PIN_ROOT "/" TXN_PROBE

/* XDP and TC egress on IF_HERE: both are taken over in place by a new
 * generation, and only XDP counts the datagrams send_udp() sends. */
static Graind__ProbeSpec *net_spec(void)
{
	Graind__ProbeSpec *s = spec_new();
	Graind__AttachSpec *tc;

	add_xdp(s, "count_xdp", IF_HERE);
	tc = add_prog(s, "count_tc", GRAIND__ATTACH_SPEC__KIND_TC);
	set(&tc->tc->ifname, IF_HERE);
	tc->tc->direction = GRAIND__TC_DIRECTION__TC_EGRESS;
	return s;
}

static struct probe_txn *attach_pending(uint64_t gen, Graind__ProbeSpec *s)
{
	struct probe_txn *txn = NULL;
	struct gerr err = { 0 };
	bool adopted;

	if (probe_attach(mgr, TXN_PROBE, gen, s, hooks.data, hooks.len, &adopted, NULL,
			 &txn, &err) < 0)
		fail_msg("attach %s: %d %s", TXN_PROBE, err.status, err.msg);
	assert_false(adopted);
	assert_non_null(txn);
	return txn;
}

static struct probe_txn *detach_pending(void)
{
	struct probe_txn *txn = NULL;
	struct gerr err = { 0 };

	if (probe_detach(mgr, TXN_PROBE, &txn, &err) < 0)
		fail_msg("detach %s: %d %s", TXN_PROBE, err.status, err.msg);
	assert_non_null(txn);
	return txn;
}

/* The program the pinned link of `prog` runs. */
static uint32_t pinned_prog_id(const char *probe, const char *prog)
{
	struct bpf_link_info info;
	char path[PATH_MAX];
	uint32_t len = sizeof(info);
	int fd;

	snprintf(path, sizeof(path), TEST_PIN_ROOT "/%s/link_%s", probe, prog);
	fd = bpf_obj_get(path);
	if (fd < 0)
		fail_msg("%s: %s", path, strerror(errno));
	memset(&info, 0, sizeof(info));
	assert_int_equal(bpf_obj_get_info_by_fd(fd, &info, &len), 0);
	close(fd);
	return info.prog_id;
}

static uint32_t pinned_map_id(const char *probe, const char *file)
{
	struct bpf_map_info info;
	char path[PATH_MAX];
	uint32_t len = sizeof(info);
	int fd;

	snprintf(path, sizeof(path), TEST_PIN_ROOT "/%s/%s", probe, file);
	fd = bpf_obj_get(path);
	if (fd < 0)
		fail_msg("%s: %s", path, strerror(errno));
	memset(&info, 0, sizeof(info));
	assert_int_equal(bpf_obj_get_info_by_fd(fd, &info, &len), 0);
	close(fd);
	return info.id;
}

static uint32_t xdp_prog_on_interface(void)
{
	LIBBPF_OPTS(bpf_xdp_query_opts, q);

	assert_int_equal(bpf_xdp_query(if_nametoindex(IF_HERE), 0, &q), 0);
	return q.prog_id;
}

/* Nothing of an unfinished change is left: no staging or detached
 * directory, no program kept for an undo in the live one. */
static void assert_no_leftovers(void)
{
	struct dirent *de;
	DIR *d;

	assert_int_equal(access(TEST_PIN_ROOT "/_new_" TXN_PROBE, F_OK), -1);
	assert_int_equal(access(TEST_PIN_ROOT "/_old_" TXN_PROBE, F_OK), -1);
	d = opendir(TXN_DIR);
	if (!d)
		return;
	while ((de = readdir(d)))
		if (strncmp(de->d_name, "undo_", 5) == 0)
			fail_msg("%s/%s left behind", TXN_DIR, de->d_name);
	closedir(d);
}

/* The descriptors this process has open. */
static int open_fds(void)
{
	struct dirent *de;
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	assert_non_null(d);
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

struct reader {
	pthread_t thread;
	atomic_bool stop;
	unsigned long opened, missing;
};

/* What the collector and /metrics do: open pins by path, again and again. */
static void *read_pins(void *arg)
{
	struct reader *r = arg;

	while (!atomic_load(&r->stop)) {
		int map = bpf_obj_get(TXN_DIR "/map_counts");
		int meta = bpf_obj_get(TXN_DIR "/meta");

		if (map < 0 || meta < 0)
			r->missing++;
		else
			r->opened++;
		if (map >= 0)
			close(map);
		if (meta >= 0)
			close(meta);
	}
	return NULL;
}

static void test_swap_never_leaves_a_gap(void **state)
{
	Graind__ProbeSpec *s = net_spec();
	struct reader r = { .opened = 0 };
	uint64_t gen;

	(void)state;
	attach_ok(TXN_PROBE, 1, s, &hooks, NULL);
	atomic_init(&r.stop, false);
	assert_int_equal(pthread_create(&r.thread, NULL, read_pins, &r), 0);
	for (gen = 2; gen <= 9; gen++) {
		if (gen % 3 == 0)
			probe_txn_commit(attach_pending(gen, s));
		else if (gen % 3 == 1)
			probe_txn_rollback(attach_pending(gen, s));
		else
			attach_ok(TXN_PROBE, gen, s, &hooks, NULL);
	}
	atomic_store(&r.stop, true);
	assert_int_equal(pthread_join(r.thread, NULL), 0);
	assert_true(r.opened > 0);
	assert_int_equal(r.missing, 0);
	/* 4 and 7 were rolled back, 9 committed. */
	assert_int_equal(probe_pinned_generation(mgr, TXN_PROBE), 9);
	assert_no_leftovers();
	detach_clean(TXN_PROBE);
	pbmsg_free((ProtobufCMessage *)s);
}

static void test_new_probe_rollback_and_commit(void **state)
{
	Graind__ProbeSpec *s = net_spec();
	struct probe_txn *txn;
	struct kernel_ids k;

	(void)state;
	txn = attach_pending(1, s);
	assert_int_equal(probe_pinned_generation(mgr, TXN_PROBE), 1);
	collect_ids(TXN_PROBE, &k);
	assert_int_equal(xdp_prog_on_interface(), pinned_prog_id(TXN_PROBE, "count_xdp"));
	probe_txn_rollback(txn);
	assert_int_equal(access(TXN_DIR, F_OK), -1);
	assert_int_equal(probe_pinned_generation(mgr, TXN_PROBE), 0);
	assert_no_leftovers();
	assert_all_gone(&k);
	assert_int_equal(xdp_prog_on_interface(), 0);

	/* Committing a new probe changes nothing more: it stays. */
	txn = attach_pending(1, s);
	probe_txn_commit(txn);
	assert_int_equal(probe_pinned_generation(mgr, TXN_PROBE), 1);
	send_udp(2);
	assert_int_equal(count_settled(TXN_PROBE, SLOT_XDP, 2), 2);
	assert_no_leftovers();
	detach_clean(TXN_PROBE);

	probe_txn_commit(NULL);
	probe_txn_rollback(NULL);
	pbmsg_free((ProtobufCMessage *)s);
}

static void test_generation_rollback_and_commit(void **state)
{
	Graind__ProbeSpec *s = net_spec();
	uint32_t old_xdp, old_tc, old_map, link;
	struct probe_txn *txn, *other;
	struct gerr err = { 0 };
	struct kernel_ids new_gen;
	bool adopted;
	int fds;

	(void)state;
	attach_ok(TXN_PROBE, 1, s, &hooks, NULL);
	fds = open_fds();
	send_udp(2);
	assert_int_equal(count_settled(TXN_PROBE, SLOT_XDP, 2), 2);
	old_xdp = pinned_prog_id(TXN_PROBE, "count_xdp");
	old_tc = pinned_prog_id(TXN_PROBE, "count_tc");
	old_map = pinned_map_id(TXN_PROBE, "map_counts");
	link = pinned_link_id(TXN_PROBE, "count_xdp");

	/* Pending: the new generation runs, on the same link, with new maps. */
	txn = attach_pending(2, s);
	assert_int_equal(open_fds(), fds);
	assert_int_equal(probe_pinned_generation(mgr, TXN_PROBE), 2);
	assert_int_equal(pinned_link_id(TXN_PROBE, "count_xdp"), link);
	assert_int_not_equal(pinned_prog_id(TXN_PROBE, "count_xdp"), old_xdp);
	assert_int_not_equal(pinned_map_id(TXN_PROBE, "map_counts"), old_map);
	send_udp(3);
	assert_int_equal(count_settled(TXN_PROBE, SLOT_XDP, 3), 3);
	collect_ids(TXN_PROBE, &new_gen);
	/* Until it is decided, no other change of the probe. */
	assert_int_equal(probe_attach(mgr, TXN_PROBE, 3, s, hooks.data, hooks.len, &adopted,
				      NULL, &other, &err), -1);
	assert_int_equal(err.status, 409);
	assert_int_equal(probe_detach(mgr, TXN_PROBE, NULL, &err), -1);
	assert_int_equal(err.status, 409);

	probe_txn_rollback(txn);
	assert_int_equal(probe_pinned_generation(mgr, TXN_PROBE), 1);
	assert_int_equal(pinned_link_id(TXN_PROBE, "count_xdp"), link);
	assert_int_equal(pinned_prog_id(TXN_PROBE, "count_xdp"), old_xdp);
	assert_int_equal(pinned_prog_id(TXN_PROBE, "count_tc"), old_tc);
	assert_int_equal(pinned_map_id(TXN_PROBE, "map_counts"), old_map);
	assert_int_equal(count(TXN_PROBE, SLOT_XDP), 2);
	send_udp(1);
	assert_int_equal(count_settled(TXN_PROBE, SLOT_XDP, 3), 3);
	assert_no_leftovers();
	/* The link is generation 1's again: only the new maps and programs go. */
	new_gen.n_link = 0;
	assert_all_gone(&new_gen);

	/* Commit: the new generation stays, the old one goes. */
	{
		struct kernel_ids old = { .prog = { old_xdp, old_tc }, .n_prog = 2,
					  .map = { old_map }, .n_map = 1 };

		txn = attach_pending(2, s);
		probe_txn_commit(txn);
		assert_int_equal(probe_pinned_generation(mgr, TXN_PROBE), 2);
		assert_int_equal(pinned_link_id(TXN_PROBE, "count_xdp"), link);
		assert_no_leftovers();
		assert_all_gone(&old);
		send_udp(2);
		assert_int_equal(count_settled(TXN_PROBE, SLOT_XDP, 2), 2);
	}
	/* A pending change holds no descriptor: its state is all pinned. */
	assert_int_equal(open_fds(), fds);
	detach_clean(TXN_PROBE);
	pbmsg_free((ProtobufCMessage *)s);
}

static void test_detach_rollback_and_commit(void **state)
{
	Graind__ProbeSpec *s = net_spec();
	struct probe_txn *txn;
	struct gerr err = { 0 };
	struct kernel_ids k;
	uint32_t link, prog;
	int fds;

	(void)state;
	attach_ok(TXN_PROBE, 1, s, &hooks, NULL);
	fds = open_fds();
	send_udp(2);
	assert_int_equal(count_settled(TXN_PROBE, SLOT_XDP, 2), 2);
	link = pinned_link_id(TXN_PROBE, "count_xdp");
	prog = pinned_prog_id(TXN_PROBE, "count_xdp");

	/* Pending: out of sight, still attached. */
	txn = detach_pending();
	assert_int_equal(open_fds(), fds);
	assert_int_equal(access(TXN_DIR, F_OK), -1);
	assert_int_equal(probe_pinned_generation(mgr, TXN_PROBE), 0);
	assert_true(id_exists(link_by_id, link));
	assert_int_equal(xdp_prog_on_interface(), prog);
	send_udp(1);
	probe_txn_rollback(txn);
	assert_int_equal(probe_pinned_generation(mgr, TXN_PROBE), 1);
	assert_int_equal(pinned_link_id(TXN_PROBE, "count_xdp"), link);
	/* It counted all along, into the same map. */
	assert_int_equal(count_settled(TXN_PROBE, SLOT_XDP, 3), 3);
	assert_no_leftovers();
	assert_int_equal(open_fds(), fds);

	collect_ids(TXN_PROBE, &k);
	txn = detach_pending();
	probe_txn_commit(txn);
	assert_int_equal(access(TXN_DIR, F_OK), -1);
	assert_no_leftovers();
	assert_all_gone(&k);
	assert_int_equal(xdp_prog_on_interface(), 0);

	/* Nothing pinned: nothing to decide. */
	txn = (struct probe_txn *)&txn;
	assert_int_equal(probe_detach(mgr, TXN_PROBE, &txn, &err), 0);
	assert_null(txn);
	pbmsg_free((ProtobufCMessage *)s);
}

/* The interface going away while a change is pending leaves the lent link
 * with nothing to put back; the rest of the old generation still returns. */
static void test_rollback_after_interface_removed(void **state)
{
	Graind__ProbeSpec *s = spec_new();
	struct probe_txn *txn;
	Graind__AttachSpec *a;
	uint32_t old_map;

	(void)state;
	run("ip link del gptx0 2>/dev/null; ip link add gptx0 type veth peer name gptx1 && ip link set gptx0 up");
	add_xdp(s, "count_xdp", "gptx0");
	a = add_prog(s, "count_getpid", GRAIND__ATTACH_SPEC__KIND_TRACEPOINT);
	set(&a->tracepoint->category, "syscalls");
	set(&a->tracepoint->name, "sys_enter_getpid");
	add_target_pid(s);
	attach_ok(TXN_PROBE, 1, s, &hooks, NULL);
	old_map = pinned_map_id(TXN_PROBE, "map_counts");
	txn = attach_pending(2, s);
	run("ip link del gptx0");
	probe_txn_rollback(txn);
	assert_int_equal(probe_pinned_generation(mgr, TXN_PROBE), 1);
	assert_int_equal(pinned_map_id(TXN_PROBE, "map_counts"), old_map);
	assert_no_leftovers();
	for (int i = 0; i < 3; i++)
		syscall(SYS_getpid);
	assert_int_equal(count(TXN_PROBE, SLOT_TRACEPOINT), 3);
	assert_int_equal(probe_detach(mgr, TXN_PROBE, NULL, NULL), 0);
	pbmsg_free((ProtobufCMessage *)s);
}

/* A bind mount of the live directory on itself makes renaming it fail
 * with EBUSY, as any failure of the kernel's rename would. */
static bool pin_dir_busy(void)
{
	if (mount(TXN_DIR, TXN_DIR, NULL, MS_BIND, NULL) == 0)
		return true;
	fprintf(stderr, "cannot bind-mount %s (%s): rename failure not tested\n", TXN_DIR,
		strerror(errno));
	return false;
}

static void test_failed_rename_keeps_old_generation(void **state)
{
	Graind__ProbeSpec *s = net_spec();
	struct probe_txn *txn = NULL;
	struct gerr err = { 0 };
	uint32_t prog;
	bool adopted;
	int ret;

	(void)state;
	attach_ok(TXN_PROBE, 1, s, &hooks, NULL);
	send_udp(2);
	assert_int_equal(count_settled(TXN_PROBE, SLOT_XDP, 2), 2);
	prog = pinned_prog_id(TXN_PROBE, "count_xdp");
	if (!pin_dir_busy()) {
		detach_clean(TXN_PROBE);
		pbmsg_free((ProtobufCMessage *)s);
		skip();
	}
	ret = probe_attach(mgr, TXN_PROBE, 2, s, hooks.data, hooks.len, &adopted, NULL,
			   &txn, &err);
	assert_int_equal(umount2(TXN_DIR, 0), 0);
	assert_int_equal(ret, -1);
	assert_null(txn);
	assert_int_equal(err.status, 500);
	assert_non_null(strstr(err.msg, "cannot exchange"));
	assert_int_equal(probe_pinned_generation(mgr, TXN_PROBE), 1);
	assert_int_equal(pinned_prog_id(TXN_PROBE, "count_xdp"), prog);
	assert_int_equal(xdp_prog_on_interface(), prog);
	assert_no_leftovers();
	send_udp(1);
	assert_int_equal(count_settled(TXN_PROBE, SLOT_XDP, 3), 3);

	/* A detach whose rename fails leaves the probe attached. */
	assert_true(pin_dir_busy());
	ret = probe_detach(mgr, TXN_PROBE, &txn, &err);
	assert_int_equal(umount2(TXN_DIR, 0), 0);
	assert_int_equal(ret, -1);
	assert_null(txn);
	assert_int_equal(probe_pinned_generation(mgr, TXN_PROBE), 1);
	assert_int_equal(xdp_prog_on_interface(), prog);
	assert_no_leftovers();
	detach_clean(TXN_PROBE);
	pbmsg_free((ProtobufCMessage *)s);
}

/* Run a pending change in a child that is then killed (the agent killed
 * before the store recorded it), with the manager as it was. */
static void crash_during(uint64_t gen, Graind__ProbeSpec *s)
{
	pid_t pid = fork();
	int status;

	assert_true(pid >= 0);
	if (pid == 0) {
		struct probe_txn *txn = NULL;
		struct gerr err = { 0 };
		bool adopted;

		if (gen ? probe_attach(mgr, TXN_PROBE, gen, s, hooks.data, hooks.len, &adopted,
				       NULL, &txn, &err) < 0 :
			  probe_detach(mgr, TXN_PROBE, &txn, &err) < 0) {
			fprintf(stderr, "child: %d %s\n", err.status, err.msg);
			_exit(2);
		}
		raise(SIGKILL);
		_exit(3);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

static void attach_expect_adopted(uint64_t gen, Graind__ProbeSpec *s)
{
	bool adopted;

	attach_ok(TXN_PROBE, gen, s, &hooks, &adopted);
	assert_true(adopted);
	assert_no_leftovers();
}

static int find_txn_probe(const char *name, void *ctx)
{
	if (strcmp(name, TXN_PROBE) == 0)
		++*(int *)ctx;
	return 0;
}

static void test_crash_leftovers_settle(void **state)
{
	Graind__ProbeSpec *s = net_spec();
	uint32_t gen1_prog, gen2_prog;
	struct kernel_ids k;
	int listed = 0;

	(void)state;
	attach_ok(TXN_PROBE, 1, s, &hooks, NULL);
	send_udp(2);
	assert_int_equal(count_settled(TXN_PROBE, SLOT_XDP, 2), 2);
	gen1_prog = pinned_prog_id(TXN_PROBE, "count_xdp");

	/* Exchanged, never committed; the store still says 1: 1 runs again,
	 * counters kept. */
	crash_during(2, s);
	assert_int_equal(probe_pinned_generation(mgr, TXN_PROBE), 2);
	assert_int_equal(access(TEST_PIN_ROOT "/_new_" TXN_PROBE, F_OK), 0);
	attach_expect_adopted(1, s);
	assert_int_equal(pinned_prog_id(TXN_PROBE, "count_xdp"), gen1_prog);
	assert_int_equal(xdp_prog_on_interface(), gen1_prog);
	assert_int_equal(count(TXN_PROBE, SLOT_XDP), 2);

	/* Killed between lending the links and the exchange: put the two
	 * directories back as they were then. The live one wins. */
	crash_during(2, s);
	assert_int_equal(renameat2(AT_FDCWD, TEST_PIN_ROOT "/_new_" TXN_PROBE, AT_FDCWD, TXN_DIR,
				   RENAME_EXCHANGE), 0);
	assert_int_equal(probe_pinned_generation(mgr, TXN_PROBE), 1);
	assert_int_not_equal(xdp_prog_on_interface(), gen1_prog);
	attach_expect_adopted(1, s);
	assert_int_equal(xdp_prog_on_interface(), gen1_prog);
	send_udp(1);
	assert_int_equal(count_settled(TXN_PROBE, SLOT_XDP, 3), 3);

	/* Exchanged, and the store says 2 already: 2 stays, 1 goes. */
	crash_during(2, s);
	gen2_prog = pinned_prog_id(TXN_PROBE, "count_xdp");
	attach_expect_adopted(2, s);
	assert_int_equal(xdp_prog_on_interface(), gen2_prog);
	{
		struct kernel_ids old = { .prog = { gen1_prog }, .n_prog = 1 };

		assert_all_gone(&old);
	}

	/* A detach never committed, the store still attached: back again. */
	crash_during(0, s);
	assert_int_equal(access(TXN_DIR, F_OK), -1);
	attach_expect_adopted(2, s);
	assert_int_equal(xdp_prog_on_interface(), gen2_prog);

	/* A detach never committed of a probe the store does not know: its
	 * name is still listed, and detaching it removes everything. */
	collect_ids(TXN_PROBE, &k);
	crash_during(0, s);
	assert_int_equal(probe_list_pinned(mgr, find_txn_probe, &listed), 0);
	assert_int_equal(listed, 1);
	assert_int_equal(probe_detach(mgr, TXN_PROBE, NULL, NULL), 0);
	assert_no_leftovers();
	assert_all_gone(&k);
	pbmsg_free((ProtobufCMessage *)s);
}

static void assert_warnings(const char *name, const char *const *want, size_t n)
{
	Graind__Probe *p = status_of(name, NULL);

	assert_int_equal(p->n_warnings, n);
	for (size_t i = 0; i < n; i++)
		assert_string_equal(p->warnings[i], want[i]);
	/* Filled again, the same message holds them once. */
	assert_int_equal(probe_status(mgr, p, NULL), 0);
	assert_int_equal(p->n_warnings, n);
	status_free(p);
}

/* What another part of the agent says about a probe is in its status until
 * it says something else, probe by probe, as copies. */
static void test_warnings_in_status(void **state)
{
	char first[] = "map rb: records are shown as hex", second[] = "and another";
	const char *const two[] = { first, second }, *const other[] = { "of the other" };
	const char *const kept[] = { "map rb: records are shown as hex", "and another" };

	(void)state;
	assert_warnings("ut.warned", NULL, 0);
	assert_int_equal(probe_set_warnings(mgr, "ut.warned", two, 2), 0);
	assert_int_equal(probe_set_warnings(mgr, "ut.other", other, 1), 0);
	first[0] = second[0] = 'X';
	assert_warnings("ut.warned", kept, 2);
	assert_warnings("ut.other", other, 1);
	assert_int_equal(probe_set_warnings(mgr, "ut.warned", two + 1, 1), 0);
	assert_warnings("ut.warned", (const char *const[]){ "Xnd another" }, 1);
	assert_int_equal(probe_set_warnings(mgr, "ut.warned", NULL, 0), 0);
	assert_warnings("ut.warned", NULL, 0);
	assert_warnings("ut.other", other, 1);
	assert_int_equal(probe_set_warnings(mgr, "ut.other", NULL, 0), 0);
	assert_warnings("ut.other", NULL, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_xdp_and_tc_count_packets),
		cmocka_unit_test(test_adopt_restart_and_swap),
		cmocka_unit_test(test_tracepoints_with_constant),
		cmocka_unit_test(test_auto_attach_tracepoint),
		cmocka_unit_test(test_uprobe),
		cmocka_unit_test(test_cgroup_skb),
		cmocka_unit_test(test_perf_event_every_cpu),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_constants_and_overrides_apply),
		cmocka_unit_test(test_foreign_xdp_program),
		cmocka_unit_test(test_verifier_rejects),
		cmocka_unit_test(test_second_program_fails_leaves_nothing),
		cmocka_unit_test(test_dotted_name_listed),
		cmocka_unit_test(test_swap_never_leaves_a_gap),
		cmocka_unit_test(test_new_probe_rollback_and_commit),
		cmocka_unit_test(test_generation_rollback_and_commit),
		cmocka_unit_test(test_detach_rollback_and_commit),
		cmocka_unit_test(test_failed_rename_keeps_old_generation),
		cmocka_unit_test(test_rollback_after_interface_removed),
		cmocka_unit_test(test_crash_leftovers_settle),
		cmocka_unit_test(test_warnings_in_status),
	};

	if (geteuid() != 0) {
		fprintf(stderr, "test_probe needs root; skipped\n");
		return 0;
	}
	/* The veth pair, namespace and pin root have fixed names: two runs
	 * at once (several checkouts on one host) take turns. */
	int lock = open("/run/graind-test-probe.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lock < 0 || flock(lock, LOCK_EX) < 0) {
		fprintf(stderr, "test_probe: cannot lock /run/graind-test-probe.lock: %s\n",
			strerror(errno));
		return 1;
	}
	return cmocka_run_group_tests(tests, setup, teardown);
}
