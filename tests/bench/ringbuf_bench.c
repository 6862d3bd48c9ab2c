/* Drives the event sources of tests/bpf/bench_events.bpf.c for the samples
 * pipeline benchmark, and is the bare consumer it is measured against.
 *
 *   ringbuf_bench xdp-bare OBJ SECONDS
 *	load OBJ, run emit_xdp with BPF_PROG_TEST_RUN for SECONDS and count
 *	the records with ring_buffer__poll() meanwhile
 *   ringbuf_bench xdp-trigger PIN_DIR SECONDS
 *	only run the emit_xdp that a graind probe pinned in PIN_DIR
 *   ringbuf_bench getpid-bare OBJ CALLS
 *	a child calls getpid() CALLS times under emit_getpid; count the records
 *   ringbuf_bench getpid-loop CALLS
 *	print "pid=P", wait for a line on stdin, call getpid() CALLS times
 *   ringbuf_bench counts PIN_DIR
 *	what the `counts` map of a graind probe says
 *
 * Each prints one line of key=value: produced (runs that made a record),
 * full (records the full ring buffer refused), delivered, seconds,
 * ns_per_call. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>

#define REPEAT 4096     /* test runs per BPF_PROG_TEST_RUN call */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "ringbuf_bench: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* ---------------------------------------------------------------- sources */

/* Ethernet frames of the bench's ethertype, 64 bytes; the last one wakes
 * the consumer at once. */
static const uint8_t packet[64] = {
	2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x88, 0xb5,
};
static const uint8_t last_packet[64] = {
	2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x88, 0xb5, 'F',
};

struct trigger {
	int prog_fd;
	double seconds;
	volatile int done;
	int error;
};

static int test_run(int fd, const uint8_t *pkt, int repeat)
{
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = pkt, .data_size_in = sizeof(packet),
		    .repeat = repeat);

	return bpf_prog_test_run_opts(fd, &opts) < 0 ? errno : 0;
}

/* Run the XDP program REPEAT times per call until the time is up, then
 * once more to wake the consumer for the last records. */
static void *run_xdp(void *arg)
{
	struct trigger *t = arg;
	double end = now_s() + t->seconds;

	while (!t->error && now_s() < end)
		t->error = test_run(t->prog_fd, packet, REPEAT);
	if (!t->error)
		t->error = test_run(t->prog_fd, last_packet, 1);
	__atomic_store_n(&t->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* CALLS getpid() system calls; the mean ns per call. */
static double getpid_loop(long calls)
{
	double t0 = now_s();

	for (long i = 0; i < calls; i++)
		syscall(SYS_getpid);
	return (now_s() - t0) * 1e9 / calls;
}

/* Slot 0 (runs that made a record) and 1 (refused records) of `counts`,
 * summed over the CPUs. */
static void read_counts(int fd, uint64_t *produced, uint64_t *full)
{
	int ncpu = libbpf_num_possible_cpus();
	uint64_t *v = calloc(ncpu, sizeof(*v));
	uint64_t *out[2] = { produced, full };

	if (!v)
		die("calloc");
	for (uint32_t slot = 0; slot < 2; slot++) {
		*out[slot] = 0;
		if (bpf_map_lookup_elem(fd, &slot, v) < 0)
			die("reading counts");
		for (int i = 0; i < ncpu; i++)
			*out[slot] += v[i];
	}
	free(v);
}

/* ---------------------------------------------------------------- bare */

static int count_record(void *ctx, void *data, size_t size)
{
	(void)data;
	(void)size;
	(*(uint64_t *)ctx)++;
	return 0;
}

struct bare {
	struct bpf_object *obj;
	struct ring_buffer *rb;
	struct bpf_link *link;
	uint64_t delivered;
};

/* Open OBJ with only `prog` loaded (target_pid set) and the ring buffer
 * counted. */
static void bare_open(struct bare *b, const char *path, const char *prog, uint32_t target_pid)
{
	struct bpf_program *p;
	struct bpf_map *rodata;

	b->obj = bpf_object__open_file(path, NULL);
	if (!b->obj)
		die(path);
	bpf_object__for_each_program(p, b->obj)
		bpf_program__set_autoload(p, strcmp(bpf_program__name(p), prog) == 0);
	bpf_object__for_each_map(rodata, b->obj)
		if (strstr(bpf_map__name(rodata), ".rodata")) {
			size_t size = bpf_map__value_size(rodata);
			uint32_t *v = calloc(1, size < 4 ? 4 : size);

			if (!v)
				die("calloc");
			*v = target_pid;        /* the only constant */
			if (bpf_map__set_initial_value(rodata, v, size) < 0)
				die("setting target_pid");
			free(v);
		}
	if (bpf_object__load(b->obj) < 0)
		die("loading the object");
	b->rb = ring_buffer__new(bpf_object__find_map_fd_by_name(b->obj, "events"),
				 count_record, &b->delivered, NULL);
	if (!b->rb)
		die("ring_buffer__new");
}

static void bare_report(struct bare *b, double seconds, double ns_per_call)
{
	uint64_t produced, full;

	read_counts(bpf_object__find_map_fd_by_name(b->obj, "counts"), &produced, &full);
	printf("produced=%llu full=%llu delivered=%llu seconds=%.6f ns_per_call=%.1f\n",
	       (unsigned long long)produced, (unsigned long long)full,
	       (unsigned long long)b->delivered, seconds, ns_per_call);
	bpf_link__destroy(b->link);
	ring_buffer__free(b->rb);
	bpf_object__close(b->obj);
}

static int xdp_bare(const char *path, double seconds)
{
	struct bare b = { 0 };
	struct trigger t = { .seconds = seconds };
	pthread_t thread;
	double t0;

	bare_open(&b, path, "emit_xdp", 0);
	t.prog_fd = bpf_program__fd(bpf_object__find_program_by_name(b.obj, "emit_xdp"));
	t0 = now_s();
	if (pthread_create(&thread, NULL, run_xdp, &t) != 0)
		die("pthread_create");
	while (!__atomic_load_n(&t.done, __ATOMIC_ACQUIRE))
		if (ring_buffer__poll(b.rb, 100) < 0 && errno != EINTR)
			die("ring_buffer__poll");
	pthread_join(thread, NULL);
	ring_buffer__consume(b.rb);
	if (t.error) {
		errno = t.error;
		die("BPF_PROG_TEST_RUN");
	}
	bare_report(&b, now_s() - t0, 0);
	return 0;
}

static int getpid_bare(const char *path, long calls)
{
	int go[2], result[2];
	struct bare b = { 0 };
	double ns = 0, t0;
	pid_t child;
	char c;

	if (pipe(go) < 0 || pipe(result) < 0)
		die("pipe");
	child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		if (read(go[0], &c, 1) != 1)
			_exit(1);
		ns = getpid_loop(calls);
		_exit(write(result[1], &ns, sizeof(ns)) == sizeof(ns) ? 0 : 1);
	}
	close(result[1]);
	bare_open(&b, path, "emit_getpid", (uint32_t)child);
	b.link = bpf_program__attach(bpf_object__find_program_by_name(b.obj, "emit_getpid"));
	if (!b.link)
		die("attaching emit_getpid");
	t0 = now_s();
	if (write(go[1], "g", 1) != 1)
		die("starting the child");
	for (;;) {
		struct pollfd pfd = { .fd = result[0], .events = POLLIN };

		if (ring_buffer__poll(b.rb, 50) < 0 && errno != EINTR)
			die("ring_buffer__poll");
		if (poll(&pfd, 1, 0) == 1)
			break;
	}
	if (read(result[0], &ns, sizeof(ns)) != sizeof(ns))
		die("the child's result");
	waitpid(child, NULL, 0);
	ring_buffer__consume(b.rb);
	bare_report(&b, now_s() - t0, ns);
	return 0;
}

/* ---------------------------------------------------------------- graind's */

/* The program behind the pinned link PIN_DIR/link_<prog>. */
static int pinned_prog(const char *dir, const char *prog)
{
	struct bpf_link_info info = { 0 };
	uint32_t len = sizeof(info);
	char path[4096];
	int link, fd;

	snprintf(path, sizeof(path), "%s/link_%s", dir, prog);
	link = bpf_obj_get(path);
	if (link < 0)
		die(path);
	if (bpf_obj_get_info_by_fd(link, &info, &len) < 0)
		die("link info");
	fd = bpf_prog_get_fd_by_id(info.prog_id);
	if (fd < 0)
		die("program of the link");
	close(link);
	return fd;
}

static int pinned_counts(const char *dir)
{
	char path[4096];
	int fd;

	snprintf(path, sizeof(path), "%s/map_counts", dir);
	fd = bpf_obj_get(path);
	if (fd < 0)
		die(path);
	return fd;
}

static void print_counts(const char *dir)
{
	int fd = pinned_counts(dir);
	uint64_t produced, full;

	read_counts(fd, &produced, &full);
	printf("produced=%llu full=%llu\n", (unsigned long long)produced,
	       (unsigned long long)full);
	close(fd);
}

static int xdp_trigger(const char *dir, double seconds)
{
	struct trigger t = { .prog_fd = pinned_prog(dir, "emit_xdp"), .seconds = seconds };

	run_xdp(&t);
	if (t.error) {
		errno = t.error;
		die("BPF_PROG_TEST_RUN");
	}
	print_counts(dir);
	return 0;
}

static int getpid_wait_loop(long calls)
{
	char line[16];

	printf("pid=%d\n", getpid());
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return 1;
	printf("ns_per_call=%.1f\n", getpid_loop(calls));
	return 0;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "";

	if (strcmp(mode, "xdp-bare") == 0 && argc == 4)
		return xdp_bare(argv[2], atof(argv[3]));
	if (strcmp(mode, "xdp-trigger") == 0 && argc == 4)
		return xdp_trigger(argv[2], atof(argv[3]));
	if (strcmp(mode, "getpid-bare") == 0 && argc == 4)
		return getpid_bare(argv[2], atol(argv[3]));
	if (strcmp(mode, "getpid-loop") == 0 && argc == 3)
		return getpid_wait_loop(atol(argv[2]));
	if (strcmp(mode, "counts") == 0 && argc == 3) {
		print_counts(argv[2]);
		return 0;
	}
	fprintf(stderr, "usage: see the comment at the top of ringbuf_bench.c\n");
	return 2;
}
