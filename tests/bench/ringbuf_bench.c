/* Drives the event sources of tests/bpf/bench_events.bpf.c for the samples
 * pipeline benchmark, and is the bare consumer it is measured against.
 * RATE is runs per second, paced in batches (0: as fast as it goes).
 *
 *   ringbuf_bench xdp-bare OBJ IFNAME SECONDS RATE
 *	load OBJ, attach emit_xdp to IFNAME, run it with BPF_PROG_TEST_RUN
 *	for SECONDS at RATE and count the records meanwhile, read the way
 *	graind's collector reads its rings
 *   ringbuf_bench xdp-trigger PIN_DIR SECONDS RATE
 *	only run, the same way, the emit_xdp that a graind probe pinned in
 *	PIN_DIR
 *   ringbuf_bench getpid-bare OBJ CALLS RATE
 *	a child calls getpid() CALLS times at RATE under emit_getpid; count
 *	the records
 *   ringbuf_bench getpid-loop CALLS RATE
 *	print "pid=P", wait for a line on stdin, call getpid() CALLS times
 *	at RATE
 *   ringbuf_bench counts PIN_DIR
 *	what the `counts` map of a graind probe says
 *
 * Each prints one line of key=value: produced (runs that made a record),
 * full (records the full ring buffer refused), delivered, seconds,
 * ns_per_call (in the batches only), rate (the runs per second the
 * producer kept up). */
#define _GNU_SOURCE
#include <errno.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>

#define REPEAT 4096     /* the most runs of one batch (one BPF_PROG_TEST_RUN) */
#define TICK_NS 1000000L /* a paced producer runs what it owes once per tick */

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

/* ---------------------------------------------------------------- pacing */

/* Runs n more times; 0 or an errno. */
typedef int (*batch_fn)(void *ctx, long n);

struct pace {
	double rate;            /* runs per second; 0: as fast as it goes */
	double seconds;         /* stop after this long (0: no bound) ... */
	long total;             /* ... or after this many runs (0: no bound) */
	long runs;              /* out: runs made */
	double elapsed, busy;   /* out: seconds in all, in batches */
};

/* The runs the schedule owes now, at most REPEAT. Each tick runs what is
 * owed since the start, so a tick that wakes late is made up at once
 * rather than lowering the rate. */
static long owed(const struct pace *p, double t)
{
	long n = p->rate ? (long)(p->rate * t) + 1 - p->runs : REPEAT;

	if (p->total && n > p->total - p->runs)
		n = p->total - p->runs;
	return n > REPEAT ? REPEAT : n;
}

static int pace_run(struct pace *p, batch_fn fn, void *ctx)
{
	const struct timespec tick = { 0, TICK_NS };
	double t0 = now_s();
	int err = 0;

	p->runs = 0;
	p->busy = 0;
	while (!err && !(p->total && p->runs >= p->total) &&
	       !(p->seconds && now_s() - t0 >= p->seconds)) {
		long n = owed(p, now_s() - t0);
		double b0;

		if (n <= 0) {
			nanosleep(&tick, NULL);
			continue;
		}
		b0 = now_s();
		err = fn(ctx, n);
		p->busy += now_s() - b0;
		p->runs += n;
	}
	p->elapsed = now_s() - t0;
	return err;
}

static double pace_rate(const struct pace *p)
{
	return p->elapsed > 0 ? p->runs / p->elapsed : 0;
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
	struct pace pace;
	volatile int done;
	int error;
};

static int test_run(int fd, const uint8_t *pkt, int repeat)
{
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = pkt, .data_size_in = sizeof(packet),
		    .repeat = repeat);

	return bpf_prog_test_run_opts(fd, &opts) < 0 ? errno : 0;
}

static int xdp_batch(void *ctx, long n)
{
	return test_run(*(int *)ctx, packet, (int)n);
}

/* Run the XDP program at the pace asked, then once more to wake the
 * consumer for the last records. */
static void *run_xdp(void *arg)
{
	struct trigger *t = arg;

	t->error = pace_run(&t->pace, xdp_batch, &t->prog_fd);
	if (!t->error)
		t->error = test_run(t->prog_fd, last_packet, 1);
	__atomic_store_n(&t->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static int getpid_batch(void *ctx, long n)
{
	(void)ctx;
	for (long i = 0; i < n; i++)
		syscall(SYS_getpid);
	return 0;
}

/* CALLS getpid() system calls at RATE; the mean ns per call (in the
 * batches) and the rate kept up. */
static void getpid_loop(long calls, double rate, double out[2])
{
	struct pace p = { .rate = rate, .total = calls };

	pace_run(&p, getpid_batch, NULL);
	out[0] = p.runs ? p.busy * 1e9 / p.runs : 0;
	out[1] = pace_rate(&p);
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

/* ---------------------------------------------------------------- reader */

/* The bare consumer reads the ring the way graind's collector does
 * (server/collect/ringread.c, collector_main in collect.c): mapped
 * directly, not through libbpf's callback, drained whole after each
 * epoll wake-up, and a wake-up that brought fewer than COALESCE_BELOW
 * records lets records gather for COALESCE_US before the next wait. It
 * does better on one point, so that it stays a ceiling: it releases what
 * it read at once rather than after a commit. */
#define COALESCE_BELOW 64
#define COALESCE_US    1000
/* The consumer position, which producers read on every reserve, is
 * stored once per this many bytes and at the end of a drain: libbpf
 * stores it per record, a cache line bounced to the producer each time. */
#define RELEASE_BYTES  (64u << 10)

#ifndef BPF_RINGBUF_BUSY_BIT
#define BPF_RINGBUF_BUSY_BIT (1U << 31)
#define BPF_RINGBUF_DISCARD_BIT (1U << 30)
#define BPF_RINGBUF_HDR_SZ 8
#endif

struct reader {
	unsigned long *consumer;        /* the kernel's consumer position (rw page) */
	unsigned long *producer;        /* its producer position (ro, then the data) */
	uint8_t *data;                  /* mapped twice: a record never wraps */
	size_t page, size;
	uint64_t pos;
	int epfd;
	uint64_t delivered;
};

static void reader_open(struct reader *r, int map_fd)
{
	struct epoll_event ev = { .events = EPOLLIN };
	struct bpf_map_info info = { 0 };
	uint32_t len = sizeof(info);

	if (bpf_obj_get_info_by_fd(map_fd, &info, &len) < 0)
		die("ring buffer info");
	r->page = (size_t)sysconf(_SC_PAGESIZE);
	r->size = info.max_entries;
	r->consumer = mmap(NULL, r->page, PROT_READ | PROT_WRITE, MAP_SHARED, map_fd, 0);
	r->producer = mmap(NULL, r->page + 2 * r->size, PROT_READ, MAP_SHARED, map_fd,
			   (off_t)r->page);
	if (r->consumer == MAP_FAILED || r->producer == MAP_FAILED)
		die("mapping the ring buffer");
	r->data = (uint8_t *)r->producer + r->page;
	r->pos = __atomic_load_n(r->consumer, __ATOMIC_ACQUIRE);
	r->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (r->epfd < 0 || epoll_ctl(r->epfd, EPOLL_CTL_ADD, map_fd, &ev) < 0)
		die("epoll");
}

static void reader_close(struct reader *r)
{
	munmap(r->consumer, r->page);
	munmap(r->producer, r->page + 2 * r->size);
	close(r->epfd);
}

static size_t record_span(uint32_t len)
{
	len &= ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT);
	return ((size_t)len + BPF_RINGBUF_HDR_SZ + 7) & ~(size_t)7;
}

/* Count every record up to the producer, and again while it moves; stop
 * at one still being written (the next round brings it). The records
 * read. */
static uint64_t reader_drain(struct reader *r)
{
	uint64_t n = 0, released = r->pos;
	uint64_t prod;

	while (r->pos < (prod = __atomic_load_n(r->producer, __ATOMIC_ACQUIRE))) {
		uint32_t *hdr = (uint32_t *)(r->data + (r->pos & (r->size - 1)));
		uint32_t len = __atomic_load_n(hdr, __ATOMIC_ACQUIRE);

		if (len & BPF_RINGBUF_BUSY_BIT)
			break;
		r->pos += record_span(len);
		n += !(len & BPF_RINGBUF_DISCARD_BIT);
		if (r->pos - released >= RELEASE_BYTES) {
			__atomic_store_n(r->consumer, (unsigned long)r->pos, __ATOMIC_RELEASE);
			released = r->pos;
		}
	}
	__atomic_store_n(r->consumer, (unsigned long)r->pos, __ATOMIC_RELEASE);
	r->delivered += n;
	return n;
}

/* One round of the collector's loop: wait for a wake-up (or the
 * timeout, which graind does not have), drain, let a trickle gather. */
static void reader_round(struct reader *r, int timeout_ms)
{
	const struct timespec gather = { 0, COALESCE_US * 1000L };
	struct epoll_event ev;

	if (epoll_wait(r->epfd, &ev, 1, timeout_ms) < 0 && errno != EINTR)
		die("epoll_wait");
	if (reader_drain(r) < COALESCE_BELOW)
		nanosleep(&gather, NULL);
}

/* ---------------------------------------------------------------- bare */

struct bare {
	struct bpf_object *obj;
	struct reader reader;
	struct bpf_link *link;
};

/* Open OBJ with only `prog` loaded (target_pid set) and its ring buffer
 * read. */
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
	reader_open(&b->reader, bpf_object__find_map_fd_by_name(b->obj, "events"));
}

static void bare_report(struct bare *b, double seconds, double ns_per_call, double rate)
{
	uint64_t produced, full;

	read_counts(bpf_object__find_map_fd_by_name(b->obj, "counts"), &produced, &full);
	printf("produced=%llu full=%llu delivered=%llu seconds=%.6f ns_per_call=%.1f "
	       "rate=%.0f\n", (unsigned long long)produced, (unsigned long long)full,
	       (unsigned long long)b->reader.delivered, seconds, ns_per_call, rate);
	bpf_link__destroy(b->link);
	reader_close(&b->reader);
	bpf_object__close(b->obj);
}

/* BPF_PROG_TEST_RUN with repeat puts the program into the kernel's XDP
 * dispatcher and takes it out again, a synchronize_rcu() per call, unless
 * an attachment holds it there: attached to IFNAME (no traffic), a run
 * costs what one of the program graind attached does, some 25 times
 * less here. */
static int xdp_bare(const char *path, const char *ifname, double seconds, double rate)
{
	struct trigger t = { .pace = { .rate = rate, .seconds = seconds } };
	struct bpf_program *prog;
	struct bare b = { 0 };
	pthread_t thread;
	double t0;

	bare_open(&b, path, "emit_xdp", 0);
	prog = bpf_object__find_program_by_name(b.obj, "emit_xdp");
	t.prog_fd = bpf_program__fd(prog);
	b.link = bpf_program__attach_xdp(prog, (int)if_nametoindex(ifname));
	if (!b.link)
		die(ifname);
	t0 = now_s();
	if (pthread_create(&thread, NULL, run_xdp, &t) != 0)
		die("pthread_create");
	while (!__atomic_load_n(&t.done, __ATOMIC_ACQUIRE))
		reader_round(&b.reader, 50);
	pthread_join(thread, NULL);
	reader_drain(&b.reader);
	if (t.error) {
		errno = t.error;
		die("BPF_PROG_TEST_RUN");
	}
	bare_report(&b, now_s() - t0, 0, pace_rate(&t.pace));
	return 0;
}

static int getpid_bare(const char *path, long calls, double rate)
{
	int go[2], result[2];
	struct bare b = { 0 };
	double out[2] = { 0 }, t0;
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
		getpid_loop(calls, rate, out);
		_exit(write(result[1], out, sizeof(out)) == sizeof(out) ? 0 : 1);
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

		reader_round(&b.reader, 50);
		if (poll(&pfd, 1, 0) == 1)
			break;
	}
	if (read(result[0], out, sizeof(out)) != sizeof(out))
		die("the child's result");
	waitpid(child, NULL, 0);
	reader_drain(&b.reader);
	bare_report(&b, now_s() - t0, out[0], out[1]);
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

static void print_counts(const char *dir, double rate)
{
	int fd = pinned_counts(dir);
	uint64_t produced, full;

	read_counts(fd, &produced, &full);
	printf("produced=%llu full=%llu rate=%.0f\n", (unsigned long long)produced,
	       (unsigned long long)full, rate);
	close(fd);
}

static int xdp_trigger(const char *dir, double seconds, double rate)
{
	struct trigger t = { .prog_fd = pinned_prog(dir, "emit_xdp"),
			     .pace = { .rate = rate, .seconds = seconds } };

	run_xdp(&t);
	if (t.error) {
		errno = t.error;
		die("BPF_PROG_TEST_RUN");
	}
	print_counts(dir, pace_rate(&t.pace));
	return 0;
}

static int getpid_wait_loop(long calls, double rate)
{
	double out[2];
	char line[16];

	printf("pid=%d\n", getpid());
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return 1;
	getpid_loop(calls, rate, out);
	printf("ns_per_call=%.1f rate=%.0f\n", out[0], out[1]);
	return 0;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "";

	if (strcmp(mode, "xdp-bare") == 0 && argc == 6)
		return xdp_bare(argv[2], argv[3], atof(argv[4]), atof(argv[5]));
	if (strcmp(mode, "xdp-trigger") == 0 && argc == 5)
		return xdp_trigger(argv[2], atof(argv[3]), atof(argv[4]));
	if (strcmp(mode, "getpid-bare") == 0 && argc == 5)
		return getpid_bare(argv[2], atol(argv[3]), atof(argv[4]));
	if (strcmp(mode, "getpid-loop") == 0 && argc == 4)
		return getpid_wait_loop(atol(argv[2]), atof(argv[3]));
	if (strcmp(mode, "counts") == 0 && argc == 3) {
		print_counts(argv[2], 0);
		return 0;
	}
	fprintf(stderr, "usage: see the comment at the top of ringbuf_bench.c\n");
	return 2;
}
