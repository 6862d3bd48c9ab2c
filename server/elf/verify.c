/* elfchk_verify: a dry run of every program through the kernel verifier.
 *
 * First the whole object is loaded once, each program with a small stats
 * log that gives the kernel's own verification time. When the kernel
 * accepts everything that is the report. Otherwise each program is loaded
 * alone from a fresh bpf_object, so every refusal gets its own verdict and
 * log. Objects are closed again, so nothing stays in the kernel. */
#include "server/elf/elfchk.h"
#include "server/elf/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "server/features.h"
#include "server/util/pbmsg.h"

#ifndef ENOTSUPP
#define ENOTSUPP 524	/* kernel-internal, leaks out of bpf() */
#endif

/* What one load attempt left behind. */
struct attempt {
	int ret;			/* bpf_object__load(), -errno */
	char *log;			/* verifier log, ELFCHK_VERIFIER_LOG_MAX */
	struct elfchk_capture cap;	/* libbpf's own warnings */
};

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void errno_text(int ret, char *buf, size_t n)
{
	if (ret == -ENOTSUPP)
		snprintf(buf, n, "operation not supported by this kernel (ENOTSUPP)");
	else if (ret == -EPERM && geteuid() != 0)
		snprintf(buf, n, "Operation not permitted (loading BPF programs needs root, or CAP_BPF and CAP_PERFMON)");
	else
		libbpf_strerror(ret, buf, n);
}

/* ---------------------------------------------------------------- the log */

struct line {
	const char *s;
	size_t len;
};

static int starts_with(const struct line *l, const char *prefix)
{
	size_t n = strlen(prefix);

	return l->len >= n && memcmp(l->s, prefix, n) == 0;
}

/* "12: (85) call ..." : an instruction the verifier walked. */
static int is_insn(const struct line *l)
{
	size_t i = 0;

	while (i < l->len && l->s[i] >= '0' && l->s[i] <= '9')
		i++;
	return i > 0 && i + 2 < l->len && l->s[i] == ':' && l->s[i + 1] == ' ' &&
	       l->s[i + 2] == '(';
}

/* Lines that summarise rather than explain. */
static int is_trailer(const struct line *l)
{
	return starts_with(l, "processed ") || starts_with(l, "verification time") ||
	       starts_with(l, "stack depth") || starts_with(l, "-- END");
}

static size_t split_lines(const char *log, struct line *lines, size_t max)
{
	size_t n = 0;
	const char *nl;

	while (*log && n < max) {
		nl = strchr(log, '\n');
		lines[n].s = log;
		lines[n].len = nl ? (size_t)(nl - log) : strlen(log);
		if (lines[n].len)
			n++;
		if (!nl)
			break;
		log = nl + 1;
	}
	return n;
}

static int set_line(char **field, const char *s, size_t len)
{
	char *copy;
	int ret;

	while (len && (*s == ' ' || *s == '\t'))
		s++, len--;
	while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
		len--;
	copy = strndup(s, len);
	if (!copy)
		return -1;
	ret = pbmsg_set_string(field, copy);
	free(copy);
	return ret;
}

/* Split "; return arr[8]; @ reject_oob.bpf.c:21" into its source text and
 * "file:line" (absent before kernel 6.2: locate_source finds it). */
static void split_source(const struct line *l, struct line *text,
			 struct line *where)
{
	const char *s = l->s + 1, *end = l->s + l->len, *p;

	*text = (struct line){ s, end - s };
	*where = (struct line){ end, 0 };
	for (p = s; p + 3 <= end; p++) {
		if (memcmp(p, " @ ", 3) == 0) {
			*text = (struct line){ s, p - s };
			*where = (struct line){ p + 3, end - (p + 3) };
		}
	}
	while (text->len && (*text->s == ' ' || *text->s == '\t'))
		text->s++, text->len--;
}

/* The last source line before `before` that names real code (the compiler
 * emits empty ones for line 0). */
static int set_source(Graind__ProgramVerdict *v, const struct line *lines,
		      size_t before)
{
	struct line text, where;
	size_t i;

	for (i = before; i > 0; i--) {
		if (lines[i - 1].s[0] != ';')
			continue;
		split_source(&lines[i - 1], &text, &where);
		if (!text.len)
			continue;
		if (set_line(&v->source_text, text.s, text.len) < 0 ||
		    set_line(&v->source_line, where.s, where.len) < 0)
			return -1;
		break;
	}
	return 0;
}

/* The verifier's reason is the first line after the last instruction it
 * walked; the source line is the last "; ..." line before that. */
static int parse_log(Graind__ProgramVerdict *v, const char *log)
{
	enum { MAX_LINES = ELFCHK_VERIFIER_LOG_MAX / 2 };
	struct line *lines;
	size_t n, end, i, reason;
	int ret = -1;

	lines = malloc(MAX_LINES * sizeof(*lines));
	if (!lines)
		return -1;
	n = split_lines(log, lines, MAX_LINES);
	for (end = n; end > 0 && is_trailer(&lines[end - 1]); end--)
		;
	if (end == 0)
		goto done;
	reason = end - 1;
	for (i = end; i > 0; i--) {
		if (is_insn(&lines[i - 1])) {
			if (i < end)
				reason = i;
			break;
		}
	}
	if (set_line(&v->error, lines[reason].s, lines[reason].len) < 0 ||
	    set_source(v, lines, reason) < 0)
		goto out;
done:
	ret = 0;
out:
	free(lines);
	return ret;
}

/* ---------------------------------------------------------------- verdicts */

/* The kernel feature a refused program needs and this kernel lacks, or
 * NULL when the refusal is the program's own fault. */
static bool needs_trampoline(const struct bpf_program *prog)
{
	enum bpf_attach_type attach = bpf_program__expected_attach_type(prog);

	return bpf_program__type(prog) == BPF_PROG_TYPE_TRACING &&
	       (attach == BPF_TRACE_FENTRY || attach == BPF_TRACE_FEXIT ||
		attach == BPF_MODIFY_RETURN);
}

static const char *missing_feature(const struct bpf_program *prog,
				   const struct attempt *a, char *buf, size_t n)
{
	enum bpf_prog_type type = bpf_program__type(prog);
	const char *name = libbpf_bpf_prog_type_str(type);
	int unsupported = libbpf_probe_bpf_prog_type(type, NULL) == 0;

	/* With a verifier log the verifier ran: a program bug, not the kernel. */
	if (!unsupported && (a->log[0] || (a->ret != -ENOTSUPP &&
					   a->ret != -EOPNOTSUPP)))
		return NULL;
	if (needs_trampoline(prog))
		return "BPF trampoline (fentry/fexit) support";
	if (type == BPF_PROG_TYPE_LSM)
		return "BPF LSM (CONFIG_BPF_LSM and lsm=bpf)";
	snprintf(buf, n, "program type %s is not supported by this kernel",
		 name ? name : "unknown");
	return buf;
}

static int set_verifier_log(Graind__ProgramVerdict *v, const struct attempt *a)
{
	const char *log = a->log, *nl;
	size_t len = strlen(log);

	/* The kernel keeps the tail of a log that does not fit (ENOSPC);
	 * start it at a whole line. */
	v->verifier_log_truncated = a->ret == -ENOSPC ||
				    len + 1 >= ELFCHK_VERIFIER_LOG_MAX;
	if (v->verifier_log_truncated && (nl = strchr(log, '\n')))
		log = nl + 1;
	return pbmsg_set_string(&v->verifier_log, log);
}

/* Kernels before 6.2 print the source line without "@ file:line": the
 * object's line info says where it is. */
static int locate_source(Graind__ProgramVerdict *v, const void *buf, size_t len,
			 const struct bpf_object *obj, const struct bpf_program *prog)
{
	char where[256];

	if (v->source_line[0] || !v->source_text[0] ||
	    elfchk_source_line(buf, len, bpf_object__btf(obj),
			       bpf_program__section_name(prog), v->source_text, where,
			       sizeof(where)) < 0)
		return 0;
	return pbmsg_set_string(&v->source_line, where);
}

static int describe_failure(Graind__ProgramVerdict *v, const void *buf, size_t len,
			    const struct bpf_object *obj, const struct bpf_program *prog,
			    struct attempt *a)
{
	char reason[GERR_MSG_MAX], feature[128], text[128];
	const char *missing;

	if (set_verifier_log(v, a) < 0 || parse_log(v, v->verifier_log) < 0 ||
	    locate_source(v, buf, len, obj, prog) < 0)
		return -1;
	missing = missing_feature(prog, a, feature, sizeof(feature));
	if (missing && pbmsg_set_string(&v->missing_feature, missing) < 0)
		return -1;
	if (v->error[0])
		return 0;

	/* The verifier said nothing: the missing feature, libbpf's own first
	 * warning, or the errno. */
	errno_text(a->ret, text, sizeof(text));
	if (missing)
		snprintf(reason, sizeof(reason), "this kernel lacks what the program needs: %s (%s)",
			 missing, text);
	else if (a->cap.first_warn[0])
		snprintf(reason, sizeof(reason), "%s", a->cap.first_warn);
	else
		snprintf(reason, sizeof(reason), "%s", text);
	return pbmsg_set_string(&v->error, reason);
}

/* Accepted, and also said when the kernel loads the program but cannot
 * attach it (fentry on arm64 before 6.4). */
static int record_success(Graind__ProgramVerdict *v,
			  const struct bpf_program *prog)
{
	struct bpf_prog_info info;
	__u32 len = sizeof(info);

	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(bpf_program__fd(prog), &info, &len) == 0)
		v->verified_insns = info.verified_insns;
	if (needs_trampoline(prog) && !features_fentry())
		return pbmsg_set_string(&v->missing_feature,
					"BPF trampoline (fentry/fexit) support: the kernel loads the program and cannot attach it");
	return 0;
}

static int fill_verdict_names(Graind__ProgramVerdict *v, const struct bpf_program *prog)
{
	const char *type = libbpf_bpf_prog_type_str(bpf_program__type(prog));

	return pbmsg_set_string(&v->program, bpf_program__name(prog)) < 0 ||
	       pbmsg_set_string(&v->section, bpf_program__section_name(prog)) < 0 ||
	       pbmsg_set_string(&v->type, type ? type : "unknown") < 0 ? -1 : 0;
}

/* Load the idx-th program alone and fill its verdict. */
static int verify_one(const void *buf, size_t len, size_t idx,
		      Graind__ProgramVerdict *v, struct gerr *err)
{
	struct attempt a = { .log = calloc(1, ELFCHK_VERIFIER_LOG_MAX) };
	struct bpf_program *prog, *target = NULL;
	struct bpf_object *obj = NULL;
	struct bpf_map *map;
	uint64_t start;
	size_t i = 0;
	int ret = -1;

	if (!a.log) {
		gerr_set(err, 500, "out of memory");
		goto out;
	}
	obj = elfchk_open(buf, len, true, NULL, NULL, err);
	if (!obj)
		goto out;
	bpf_object__for_each_program(prog, obj) {
		bpf_program__set_autoload(prog, i == idx);
		if (i++ == idx)
			target = prog;
	}
	if (!target) {
		gerr_set(err, 500, "program %zu vanished between two opens", idx);
		goto out;
	}
	/* A dry run must neither pin maps nor reuse maps pinned by others. */
	bpf_object__for_each_map(map, obj)
		bpf_map__set_pin_path(map, NULL);
	if (fill_verdict_names(v, target) < 0)
		goto oom;

	/* Log level 0 keeps accepted loads fast; on failure libbpf retries
	 * once at level 1 into this buffer. */
	bpf_program__set_log_buf(target, a.log, ELFCHK_VERIFIER_LOG_MAX);
	bpf_program__set_log_level(target, 0);
	elfchk_capture_begin(&a.cap);
	start = now_us();
	a.ret = bpf_object__load(obj);
	v->load_time_us = now_us() - start;
	elfchk_capture_end();

	v->accepted = a.ret == 0;
	if (v->accepted ? record_success(v, target) < 0 :
			  describe_failure(v, buf, len, obj, target, &a) < 0)
		goto oom;
	ret = 0;
	goto out;
oom:
	gerr_set(err, 500, "out of memory");
out:
	bpf_object__close(obj);
	free(a.log);
	return ret;
}

#define STATS_LOG_SIZE 512

/* "verification time 123 usec" from a BPF_LOG_STATS log, 0 when absent. */
static uint64_t verification_time_us(const char *log)
{
	const char *p = strstr(log, "verification time ");

	return p ? strtoull(p + strlen("verification time "), NULL, 10) : 0;
}


/* Load every program at once. 1 when the kernel accepted them all (the
 * verdicts are filled), 0 when something was refused (nothing filled). */
static int verify_all(const void *buf, size_t len, Graind__VerifyReport *report,
		      size_t n, struct gerr *err)
{
	struct bpf_object *obj;
	struct bpf_program *prog;
	struct bpf_map *map;
	struct elfchk_capture cap;
	char (*logs)[STATS_LOG_SIZE];
	size_t i = 0;
	int ret = -1;

	logs = calloc(n, sizeof(*logs));
	if (!logs)
		return gerr_set(err, 500, "out of memory");
	obj = elfchk_open(buf, len, true, NULL, NULL, err);
	if (!obj)
		goto out;
	bpf_object__for_each_map(map, obj)
		bpf_map__set_pin_path(map, NULL);
	bpf_object__for_each_program(prog, obj) {
		bpf_program__set_log_buf(prog, logs[i++], STATS_LOG_SIZE);
		bpf_program__set_log_level(prog, 4);    /* BPF_LOG_STATS */
	}
	elfchk_capture_begin(&cap);
	ret = bpf_object__load(obj) == 0;
	elfchk_capture_end();
	for (i = 0, prog = NULL; ret == 1 && (prog = bpf_object__next_program(obj, prog)); i++) {
		Graind__ProgramVerdict *v;

		v = (Graind__ProgramVerdict *)pbmsg_new(&graind__program_verdict__descriptor);
		if (!v || fill_verdict_names(v, prog) < 0) {
			pbmsg_free((ProtobufCMessage *)v);
			ret = gerr_set(err, 500, "out of memory");
			break;
		}
		report->programs[report->n_programs++] = v;
		v->accepted = 1;
		v->load_time_us = verification_time_us(logs[i]);
		if (record_success(v, prog) < 0) {
			ret = gerr_set(err, 500, "out of memory");
			break;
		}
	}
out:
	bpf_object__close(obj);
	free(logs);
	return ret;
}

int elfchk_verify(const void *buf, size_t len, Graind__VerifyReport *report,
		  struct gerr *err)
{
	Graind__ProgramVerdict *v;
	struct bpf_program *prog;
	struct bpf_object *obj;
	struct utsname uts;
	size_t i, n = 0;

	obj = elfchk_open(buf, len, false, NULL, NULL, err);
	if (!obj)
		return -1;
	bpf_object__for_each_program(prog, obj)
		n++;
	bpf_object__close(obj);
	if (!n)
		return gerr_set(err, 422, "object has no programs (no executable section such as SEC(\"xdp\"))");

	if (uname(&uts) == 0 && pbmsg_set_string(&report->kernel_release, uts.release) < 0)
		return gerr_set(err, 500, "out of memory");
	report->programs = calloc(n, sizeof(*report->programs));
	if (!report->programs)
		return gerr_set(err, 500, "out of memory");
	report->accepted = 1;
	switch (verify_all(buf, len, report, n, err)) {
	case 1:
		return 0;
	case -1:
		return -1;
	}
	for (i = 0; i < n; i++) {
		v = (Graind__ProgramVerdict *)pbmsg_new(&graind__program_verdict__descriptor);
		if (!v)
			return gerr_set(err, 500, "out of memory");
		report->programs[report->n_programs++] = v;
		if (verify_one(buf, len, i, v, err) < 0)
			return -1;
		if (!v->accepted)
			report->accepted = 0;
	}
	return 0;
}
