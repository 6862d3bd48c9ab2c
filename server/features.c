#define _GNU_SOURCE             /* pipe2 */
#include "server/features.h"

#include <stdbool.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>
#include <linux/magic.h>

#include "server/util/clock.h"
#include "server/util/log.h"

#define BPFFS_DIR "/sys/fs/bpf"
#define TRACEFS_DIR "/sys/kernel/tracing"
/* BPF_TCX_INGRESS, missing from Debian 12's uapi headers (6.1). */
#define FEATURES_BPF_TCX_INGRESS 46

static int fs_is(const char *path, long magic)
{
	struct statfs sfs;

	return statfs(path, &sfs) == 0 && sfs.f_type == magic;
}


static void note(Graind__Features *f, const char *text)
{
	char **grown = realloc(f->notes, (f->n_notes + 1) * sizeof(*grown));
	char *copy = strdup(text);

	if (!grown || !copy) {
		free(copy);
		if (grown)
			f->notes = grown;
		return;
	}
	f->notes = grown;
	f->notes[f->n_notes++] = copy;
}

static int file_contains(const char *path, const char *word)
{
	char buf[512] = "";
	FILE *fp = fopen(path, "re");
	size_t n;

	if (!fp)
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, fp);
	buf[n] = '\0';
	fclose(fp);
	return strstr(buf, word) != NULL;
}

/* Record whether a feature is there; when it is not, say why. */
static bool feature(Graind__Features *f, Graind__FeatureState *state, bool present,
		    const char *why)
{
	*state = present ? GRAIND__FEATURE_STATE__FEATURE_PRESENT :
			   GRAIND__FEATURE_STATE__FEATURE_MISSING;
	if (!present)
		note(f, why);
	return present;
}

/* What the kernel's BPF itself can do does not change while it runs, and
 * asking loads a program or creates a map each time (JIT, vmap, text
 * poke): asked once. Mounts and files are looked at again once the last
 * look is a second old, so that a status poll costs no path walks. */
static struct {
	bool ringbuf, xdp, fentry, tcx, perf_link, bpf_cookie, kprobe_multi, freplace;
	int freplace_errno;		/* why not */
} kernel_can;
static pthread_once_t kernel_once = PTHREAD_ONCE_INIT;

/* Made once the probes answered: why libxdp's dispatcher cannot run. */
static char freplace_missing[160], freplace_note[224];

static struct {
	pthread_mutex_t lock;
	uint64_t at_us;                 /* 0: never looked */
	uint64_t generation;            /* +1 whenever a look saw something else */
	bool btf, bpffs, tracefs, kprobes, bpf_stats, lsm;
} seen = { .lock = PTHREAD_MUTEX_INITIALIZER };

#define LOOK_AGAIN_US 1000000

/* A program that returns 0, of the given type: for the probes below. */
static int trivial_prog(enum bpf_prog_type type, enum bpf_attach_type expected)
{
	const struct bpf_insn insns[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = expected);

	return bpf_prog_load(type, NULL, "GPL", insns, 2, &opts);
}

/* TCX (6.6) answers a query of loopback's TCX ingress; older kernels do
 * not know the attach type (EINVAL). */
static bool probe_tcx(void)
{
	uint32_t count = 0;

	return bpf_prog_query(1, FEATURES_BPF_TCX_INGRESS, 0, NULL, NULL, &count) == 0;
}

/* As libbpf asks: a link on perf event fd -1 is EBADF where perf links
 * exist (5.15), EINVAL before. */
static bool probe_perf_link(void)
{
	int prog = trivial_prog(BPF_PROG_TYPE_TRACEPOINT, 0), link, saved;

	if (prog < 0)
		return false;
	link = bpf_link_create(prog, -1, BPF_PERF_EVENT, NULL);
	saved = errno;
	if (link >= 0)
		close(link);
	close(prog);
	return link < 0 && saved == EBADF;
}

/* The kernel knows the attach type (5.18), and a link on a symbol that
 * does not exist fails looking it up, not for want of fprobe. */
static bool probe_kprobe_multi(void)
{
	const char *syms[] = { "graind_no_such_function" };
	LIBBPF_OPTS(bpf_link_create_opts, opts, .kprobe_multi.syms = syms,
		    .kprobe_multi.cnt = 1);
	int prog = trivial_prog(BPF_PROG_TYPE_KPROBE, BPF_TRACE_KPROBE_MULTI), link, saved;

	if (prog < 0)
		return false;
	link = bpf_link_create(prog, 0, BPF_TRACE_KPROBE_MULTI, &opts);
	saved = errno;
	if (link >= 0)
		close(link);
	close(prog);
	return link < 0 && (saved == ENOENT || saved == ESRCH);
}

/* A trampoline is attached, not just loaded: arm64 6.1 loads fentry
 * programs and refuses to attach them (ENOTSUPP: no direct calls in its
 * ftrace before 6.4). A no-op on bpf_fentry_test1, which only BPF's own
 * test runs call, attached and detached at once. */
static bool probe_fentry(void)
{
	const struct bpf_insn insns[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	struct btf *vmlinux = btf__load_vmlinux_btf();
	LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = BPF_TRACE_FENTRY);
	int id, prog, link;

	if (!vmlinux)
		return false;
	id = btf__find_by_name_kind(vmlinux, "bpf_fentry_test1", BTF_KIND_FUNC);
	btf__free(vmlinux);
	if (id <= 0)
		return false;
	opts.attach_btf_id = id;
	prog = bpf_prog_load(BPF_PROG_TYPE_TRACING, NULL, "GPL", insns, 2, &opts);
	if (prog < 0)
		return false;
	link = bpf_raw_tracepoint_open(NULL, prog);
	if (link >= 0)
		close(link);
	close(prog);
	return link >= 0;
}

/* What libxdp's dispatcher needs: an extension (freplace) program put in
 * place of a global function of a loaded XDP program. Both are the same
 * "return XDP_PASS" with a hand-made BTF of one function,
 * int f(struct xdp_md *ctx). errno tells why not. */
static bool probe_freplace(void)
{
	const struct bpf_insn insns[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 2 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	struct bpf_func_info func = { .insn_off = 0 };
	LIBBPF_OPTS(bpf_prog_load_opts, opts, .func_info = &func, .func_info_cnt = 1,
		    .func_info_rec_size = sizeof(func));
	int target = -1, ext = -1, link = -1, saved = 0, ret, ctx, proto;
	struct btf *btf = btf__new_empty();

	if (!btf)
		return false;
	/* A parameter follows its prototype: the types it names come first. */
	ret = btf__add_int(btf, "int", 4, BTF_INT_SIGNED);
	ctx = btf__add_ptr(btf, btf__add_struct(btf, "xdp_md", 24));
	proto = btf__add_func_proto(btf, ret);
	if (ret < 0 || ctx < 0 || proto < 0 || btf__add_func_param(btf, "ctx", ctx) < 0 ||
	    (int)(func.type_id = btf__add_func(btf, "graind_slot", BTF_FUNC_GLOBAL, proto)) < 0 ||
	    btf__load_into_kernel(btf) < 0)
		goto out;
	opts.prog_btf_fd = btf__fd(btf);
	target = bpf_prog_load(BPF_PROG_TYPE_XDP, NULL, "GPL", insns, 2, &opts);
	if (target < 0)
		goto out;
	opts.attach_prog_fd = target;
	opts.attach_btf_id = func.type_id;
	ext = bpf_prog_load(BPF_PROG_TYPE_EXT, NULL, "GPL", insns, 2, &opts);
	if (ext >= 0)
		link = bpf_raw_tracepoint_open(NULL, ext);
out:
	saved = errno;
	if (link >= 0)
		close(link);
	if (ext >= 0)
		close(ext);
	if (target >= 0)
		close(target);
	btf__free(btf);
	kernel_can.freplace_errno = link >= 0 ? 0 : saved;
	return link >= 0;
}

static void kernel_probe_here(void)
{
	kernel_can.ringbuf = libbpf_probe_bpf_map_type(BPF_MAP_TYPE_RINGBUF, NULL) == 1;
	kernel_can.xdp = libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_XDP, NULL) == 1;
	kernel_can.fentry = probe_fentry();
	kernel_can.tcx = probe_tcx();
	kernel_can.perf_link = probe_perf_link();
	kernel_can.bpf_cookie = libbpf_probe_bpf_helper(BPF_PROG_TYPE_KPROBE,
							BPF_FUNC_get_attach_cookie, NULL) == 1;
	kernel_can.kprobe_multi = probe_kprobe_multi();
	kernel_can.freplace = probe_freplace();
}

/* libxdp's own switch: with LIBXDP_SKIP_DISPATCHER=1 it attaches a
 * program alone, and so does graind, whatever the kernel could do. */
static bool dispatcher_switched_off(void)
{
	const char *skip = getenv("LIBXDP_SKIP_DISPATCHER");

	return skip && strcmp(skip, "1") == 0;
}

/* In a child process, which hands the answers back through a pipe: the
 * fentry probe parses the kernel's BTF, megabytes that would otherwise
 * stay in the agent's heap for good. Here, when there is no child, or it
 * does not answer in time (forked from a threaded process, it could be
 * stuck on a lock another thread held). */
#define PROBE_CHILD_MS 10000

static void kernel_probe(void)
{
	struct pollfd pfd;
	int fds[2];
	pid_t pid;

	if (pipe2(fds, O_CLOEXEC) < 0) {
		kernel_probe_here();
		return;
	}
	pid = fork();
	if (pid == 0) {
		close(fds[0]);
		kernel_probe_here();
		_exit(write(fds[1], &kernel_can, sizeof(kernel_can)) == (ssize_t)sizeof(kernel_can) ?
		      0 : 1);
	}
	close(fds[1]);
	pfd = (struct pollfd){ .fd = fds[0], .events = POLLIN };
	if (pid < 0 || poll(&pfd, 1, PROBE_CHILD_MS) != 1 ||
	    read(fds[0], &kernel_can, sizeof(kernel_can)) != (ssize_t)sizeof(kernel_can)) {
		if (pid > 0)
			kill(pid, SIGKILL);
		kernel_probe_here();
	}
	close(fds[0]);
	if (pid > 0)
		waitpid(pid, NULL, 0);
	if (kernel_can.freplace && dispatcher_switched_off()) {
		kernel_can.freplace = false;
		snprintf(freplace_missing, sizeof(freplace_missing),
			 "switched off by LIBXDP_SKIP_DISPATCHER=1");
	} else {
		snprintf(freplace_missing, sizeof(freplace_missing),
			 "this kernel cannot put freplace programs into an XDP program (%s), which libxdp's dispatcher needs",
			 strerror(kernel_can.freplace_errno));
	}
	snprintf(freplace_note, sizeof(freplace_note), "xdpDispatcher: %s; an interface holds one XDP program",
		 freplace_missing);
}

int features_mount(struct gerr *err)
{
	if (!fs_is(BPFFS_DIR, BPF_FS_MAGIC)) {
		mkdir(BPFFS_DIR, 0700);
		if (mount("bpf", BPFFS_DIR, "bpf", 0, "mode=0700") < 0)
			return gerr_set(err, 500, "bpffs is not mounted at %s and mounting it failed: %s%s",
					BPFFS_DIR, strerror(errno),
					errno == EPERM ? " (mounting needs CAP_SYS_ADMIN: mount it "
					"before graind starts)" : "");
		log_info("msg=\"mounted bpffs\" path=%s", BPFFS_DIR);
	}
	if (!fs_is(TRACEFS_DIR, TRACEFS_MAGIC)) {
		if (mount("tracefs", TRACEFS_DIR, "tracefs", 0, NULL) < 0)
			log_warn("msg=\"tracefs is not mounted and mounting it failed; tracepoint probes need it\" path=%s error=\"%s\"",
				 TRACEFS_DIR, strerror(errno));
		else
			log_info("msg=\"mounted tracefs\" path=%s", TRACEFS_DIR);
	}
	/* Learnt now, so that no status call waits for the kernel's answers. */
	pthread_once(&kernel_once, kernel_probe);
	return 0;
}

bool features_tcx(void)
{
	pthread_once(&kernel_once, kernel_probe);
	return kernel_can.tcx;
}

bool features_fentry(void)
{
	pthread_once(&kernel_once, kernel_probe);
	return kernel_can.fentry;
}

bool features_xdp_dispatcher(void)
{
	pthread_once(&kernel_once, kernel_probe);
	return kernel_can.freplace;
}

const char *features_xdp_dispatcher_missing(void)
{
	pthread_once(&kernel_once, kernel_probe);
	return kernel_can.freplace ? NULL : freplace_missing;
}

bool features_perf_link(void)
{
	pthread_once(&kernel_once, kernel_probe);
	return kernel_can.perf_link;
}

/* With seen.lock held: look again once the last look is old. */
static void look(void)
{
	uint64_t now = clock_mono_us();
	bool btf, bpffs, tracefs, kprobes, bpf_stats, lsm;

	if (seen.at_us && now - seen.at_us < LOOK_AGAIN_US)
		return;
	btf = access("/sys/kernel/btf/vmlinux", R_OK) == 0;
	bpffs = fs_is(BPFFS_DIR, BPF_FS_MAGIC);
	tracefs = fs_is(TRACEFS_DIR, TRACEFS_MAGIC);
	/* The kprobe PMU exists exactly when the kernel has CONFIG_KPROBES. */
	kprobes = access("/sys/bus/event_source/devices/kprobe", F_OK) == 0;
	bpf_stats = access("/proc/sys/kernel/bpf_stats_enabled", F_OK) == 0;
	lsm = file_contains("/sys/kernel/security/lsm", "bpf");
	if (!seen.at_us || btf != seen.btf || bpffs != seen.bpffs || tracefs != seen.tracefs ||
	    kprobes != seen.kprobes || bpf_stats != seen.bpf_stats || lsm != seen.lsm)
		__atomic_add_fetch(&seen.generation, 1, __ATOMIC_RELEASE);
	seen.btf = btf;
	seen.bpffs = bpffs;
	seen.tracefs = tracefs;
	seen.kprobes = kprobes;
	seen.bpf_stats = bpf_stats;
	seen.lsm = lsm;
	__atomic_store_n(&seen.at_us, now, __ATOMIC_RELEASE);
}

uint64_t features_generation(void)
{
	uint64_t at = __atomic_load_n(&seen.at_us, __ATOMIC_ACQUIRE), gen;

	/* A fresh look: its generation stands without the lock. */
	if (at && clock_mono_us() - at < LOOK_AGAIN_US)
		return __atomic_load_n(&seen.generation, __ATOMIC_ACQUIRE);
	pthread_mutex_lock(&seen.lock);
	look();
	gen = seen.generation;
	pthread_mutex_unlock(&seen.lock);
	return gen;
}

int features_detect(Graind__Features *f)
{
	pthread_once(&kernel_once, kernel_probe);
	pthread_mutex_lock(&seen.lock);
	look();
	feature(f, &f->btf, seen.btf,
		"btf: /sys/kernel/btf/vmlinux is missing (kernel built without CONFIG_DEBUG_INFO_BTF); CO-RE objects cannot load");
	feature(f, &f->bpffs, seen.bpffs,
		"bpffs: not mounted at " BPFFS_DIR "; probes cannot be pinned");
	feature(f, &f->tracefs, seen.tracefs,
		"tracefs: not mounted at " TRACEFS_DIR "; tracepoint probes cannot attach");
	feature(f, &f->kprobes, seen.kprobes,
		"kprobes: kernel built without CONFIG_KPROBES (no kprobe PMU in /sys/bus/event_source/devices); kprobe/kretprobe probes cannot attach");
	feature(f, &f->ringbuf, kernel_can.ringbuf,
		"ringbuf: BPF_MAP_TYPE_RINGBUF is not supported (kernel 5.8 has it)");
	feature(f, &f->xdp, kernel_can.xdp,
		"xdp: BPF_PROG_TYPE_XDP is not supported by this kernel");
	feature(f, &f->bpf_stats, seen.bpf_stats,
		"bpf_stats: /proc/sys/kernel/bpf_stats_enabled is missing; program run counts are unavailable");
	feature(f, &f->fentry, kernel_can.fentry,
		"fentry: BPF trampolines cannot attach here (they need ftrace with direct calls: x86-64 since 5.5, arm64 since 6.4); fentry/fexit programs cannot attach");
	feature(f, &f->xdp_dispatcher, kernel_can.freplace, freplace_note);
	feature(f, &f->tcx, kernel_can.tcx,
		"tcx: no TCX links (kernel 6.6 has them); TC probes attach as classic tc filters (cls_bpf under clsact)");
	f->tc_mode = kernel_can.tcx ? GRAIND__TC_MODE__TC_MODE_TCX : GRAIND__TC_MODE__TC_MODE_CLASSIC;
	feature(f, &f->perf_link, kernel_can.perf_link,
		"perfLink: no BPF links on perf events (kernel 5.15 has them); tracepoint, kprobe and uprobe probes cannot be pinned");
	feature(f, &f->bpf_cookie, kernel_can.bpf_cookie,
		"bpfCookie: no bpf_get_attach_cookie() (kernel 5.15 has it)");
	feature(f, &f->kprobe_multi, kernel_can.kprobe_multi,
		"kprobeMulti: no kprobe.multi links (kernel 5.18 with CONFIG_FPROBE has them)");
	feature(f, &f->lsm, seen.lsm,
		"lsm: BPF LSM is not active (needs CONFIG_BPF_LSM and 'bpf' in the lsm= boot parameter)");
	pthread_mutex_unlock(&seen.lock);
	return 0;
}
