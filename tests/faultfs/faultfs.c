/* faultfs: an LD_PRELOAD shim for tests that makes writes to chosen files
 * fail, as a full disk or a broken one would.
 *
 * Which files: those whose path (readlink of /proc/self/fd/N) contains
 * FAULTFS_MATCH (default "graind.db"). What fails and when is a rule
 *
 *     OP ERRNO NTH COUNT      e.g. "write ENOSPC 1 0", "fsync EIO 3 1"
 *
 * OP is write (write, pwrite, pwrite64, writev, pwritev), fsync (fsync,
 * fdatasync) or any; ERRNO is ENOSPC, EIO or EROFS; the NTH matching call
 * counted from when the rule was set, and the COUNT calls after it (0:
 * every one), fail with ERRNO and write nothing. The rule comes from
 * FAULTFS_RULE at start, and from the file FAULTFS_CTL whenever that file
 * changes (looked at every 20 ms at most; "off" or no file: no faults), so
 * a test can break and mend the disk of a running process. Every call the
 * shim failed is counted in FAULTFS_CTL ".count" ("N\n"), rewritten at
 * each failure, so that a test knows its fault was hit. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

enum op { OP_NONE, OP_WRITE, OP_FSYNC, OP_ANY };

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	enum op op;
	int err;
	unsigned long nth, count;
	unsigned long seen;             /* matching calls since the rule was set */
	unsigned long failed;           /* calls failed, ever */
} rule;
static char match[256] = "graind.db", ctl[512], counter[520];
static struct timespec ctl_mtime;
static long long ctl_checked_ms = -1;
static int inited;

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);

static void parse(const char *text)
{
	char op[16] = "", err[16] = "";
	unsigned long nth = 1, count = 0;

	rule.op = OP_NONE;
	rule.seen = 0;
	if (sscanf(text, "%15s %15s %lu %lu", op, err, &nth, &count) < 2)
		return;
	rule.err = !strcmp(err, "EIO") ? EIO : !strcmp(err, "EROFS") ? EROFS : ENOSPC;
	rule.nth = nth ? nth : 1;
	rule.count = count;
	rule.op = !strcmp(op, "write") ? OP_WRITE : !strcmp(op, "fsync") ? OP_FSYNC :
		  !strcmp(op, "any") ? OP_ANY : OP_NONE;
}

static void init_locked(void)
{
	const char *s;

	if (inited)
		return;
	inited = 1;
	real_write = dlsym(RTLD_NEXT, "write");
	real_pwrite = dlsym(RTLD_NEXT, "pwrite");
	real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
	real_writev = dlsym(RTLD_NEXT, "writev");
	real_pwritev = dlsym(RTLD_NEXT, "pwritev");
	real_fsync = dlsym(RTLD_NEXT, "fsync");
	real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
	if ((s = getenv("FAULTFS_MATCH")))
		snprintf(match, sizeof(match), "%s", s);
	if ((s = getenv("FAULTFS_CTL"))) {
		snprintf(ctl, sizeof(ctl), "%s", s);
		snprintf(counter, sizeof(counter), "%s.count", s);
	}
	if ((s = getenv("FAULTFS_RULE")))
		parse(s);
}

static long long mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Read the control file again when it changed. */
static void follow_ctl_locked(void)
{
	char text[128] = "";
	struct stat sb;
	long long now;
	int fd;
	ssize_t n;

	if (!ctl[0])
		return;
	now = mono_ms();
	if (ctl_checked_ms >= 0 && now - ctl_checked_ms < 20)
		return;
	ctl_checked_ms = now;
	if (stat(ctl, &sb) < 0) {
		if (ctl_mtime.tv_sec || ctl_mtime.tv_nsec)
			parse("off");
		ctl_mtime = (struct timespec){ 0 };
		return;
	}
	if (sb.st_mtim.tv_sec == ctl_mtime.tv_sec && sb.st_mtim.tv_nsec == ctl_mtime.tv_nsec)
		return;
	ctl_mtime = sb.st_mtim;
	fd = open(ctl, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	text[n > 0 ? n : 0] = '\0';
	parse(text);
}

static void count_failed_locked(void)
{
	char line[32];
	int fd, len;

	rule.failed++;
	if (!counter[0])
		return;
	fd = open(counter, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	len = snprintf(line, sizeof(line), "%lu\n", rule.failed);
	if (real_write(fd, line, (size_t)len) < 0)
		(void)0;
	close(fd);
}

static int matches(int fd)
{
	char link[64], path[4096];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, sizeof(path) - 1);
	if (n <= 0)
		return 0;
	path[n] = '\0';
	return strstr(path, match) != NULL;
}

/* Whether this call of kind `op` on fd fails; errno is set when it does. */
static int fails(int fd, enum op op)
{
	int err = 0;

	pthread_mutex_lock(&lock);
	init_locked();
	follow_ctl_locked();
	if (rule.op != OP_NONE && (rule.op == OP_ANY || rule.op == op) && matches(fd)) {
		rule.seen++;
		if (rule.seen >= rule.nth && (!rule.count || rule.seen < rule.nth + rule.count)) {
			err = rule.err;
			count_failed_locked();
		}
	}
	pthread_mutex_unlock(&lock);
	if (err)
		errno = err;
	return err != 0;
}

static void ensure_init(void)
{
	if (!__atomic_load_n(&inited, __ATOMIC_ACQUIRE)) {
		pthread_mutex_lock(&lock);
		init_locked();
		pthread_mutex_unlock(&lock);
	}
}

ssize_t write(int fd, const void *buf, size_t len)
{
	ensure_init();
	if (fd > 2 && fails(fd, OP_WRITE))
		return -1;
	return real_write(fd, buf, len);
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
	ensure_init();
	if (fails(fd, OP_WRITE))
		return -1;
	return real_pwrite(fd, buf, len, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off)
{
	ensure_init();
	if (fails(fd, OP_WRITE))
		return -1;
	return real_pwrite64(fd, buf, len, off);
}

ssize_t writev(int fd, const struct iovec *iov, int n)
{
	ensure_init();
	if (fd > 2 && fails(fd, OP_WRITE))
		return -1;
	return real_writev(fd, iov, n);
}

ssize_t pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
	ensure_init();
	if (fails(fd, OP_WRITE))
		return -1;
	return real_pwritev(fd, iov, n, off);
}

int fsync(int fd)
{
	ensure_init();
	if (fails(fd, OP_FSYNC))
		return -1;
	return real_fsync(fd);
}

int fdatasync(int fd)
{
	ensure_init();
	if (fails(fd, OP_FSYNC))
		return -1;
	return real_fdatasync(fd);
}
