/* S3 samples/s of server/sink/s3.c: s3_put_batch() of batches of event
 * samples to an S3 endpoint on loopback.
 *
 *   s3_bench ENDPOINT BUCKET ACCESS_KEY SECRET BATCHES ROWS RAW_DIR
 *
 * Each batch is ROWS event samples of one probe with the fields of
 * tests/bpf/bench_events.bpf.c's record, ids following on from the
 * previous batch. Before the PUTs, each batch's NDJSON (what s3.c
 * compresses: one proto3 JSON line per sample) is written to
 * RAW_DIR/<n>.ndjson for a reference to send the same bytes.
 * Prints one line: batches, samples, bytes (compressed, sent),
 * raw_bytes, seconds (in s3_put_batch), encode_seconds (JSON alone). */
#define _GNU_SOURCE
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/util/codec.h"
#include "server/sink/s3.h"

#define N_FIELDS 12

struct event_set {
	size_t n;
	Graind__Sample *samples;
	Graind__Sample **ptrs;
	Graind__Field *fields;          /* N_FIELDS per sample */
	Graind__Field **field_ptrs;
	char (*times)[32];
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n, size);

	if (!p) {
		fprintf(stderr, "s3_bench: out of memory\n");
		exit(1);
	}
	return p;
}

static const char *const field_names[N_FIELDS] = {
	"pid", "cpu", "comm", "ts", "seq", "a", "b", "c", "d", "e", "f", "ok",
};

static void events_build(struct event_set *set, size_t n)
{
	set->n = n;
	set->samples = xcalloc(n, sizeof(*set->samples));
	set->ptrs = xcalloc(n, sizeof(*set->ptrs));
	set->fields = xcalloc(n * N_FIELDS, sizeof(*set->fields));
	set->field_ptrs = xcalloc(n * N_FIELDS, sizeof(*set->field_ptrs));
	set->times = xcalloc(n, sizeof(*set->times));
	for (size_t i = 0; i < n; i++) {
		Graind__Sample *s = &set->samples[i];
		Graind__Field *f = &set->fields[i * N_FIELDS];

		graind__sample__init(s);
		s->probe = "bench/getpid";
		s->map = "events";
		s->kind = GRAIND__SAMPLE_KIND__EVENT;
		s->time = set->times[i];
		s->fields = &set->field_ptrs[i * N_FIELDS];
		s->n_fields = N_FIELDS;
		for (size_t k = 0; k < N_FIELDS; k++) {
			graind__field__init(&f[k]);
			f[k].name = (char *)field_names[k];
			f[k].value_case = GRAIND__FIELD__VALUE_UINT;
			s->fields[k] = &f[k];
		}
		f[2].value_case = GRAIND__FIELD__VALUE_TEXT;
		f[11].value_case = GRAIND__FIELD__VALUE_FLAG;
		set->ptrs[i] = s;
	}
}

static const char *const comms[] = {
	"nginx", "postgres", "sshd", "systemd-journal", "node", "python3", "cron", "rsyslogd",
};

/* xorshift64: the same values on every run. */
static uint64_t next_random(uint64_t *state)
{
	*state ^= *state << 13;
	*state ^= *state >> 7;
	*state ^= *state << 17;
	return *state;
}

/* The values of batch `round`: ids and times go on, the fields vary as
 * the records of a few busy processes do. */
static void events_advance(struct event_set *set, size_t round)
{
	static uint64_t state = 88172645463325252ull, ns = 1795100300000000000ull;

	for (size_t i = 0; i < set->n; i++) {
		Graind__Sample *s = &set->samples[i];
		Graind__Field *f = &set->fields[i * N_FIELDS];
		uint64_t r = next_random(&state), proc = r % 8;
		time_t secs;
		struct tm tm;

		ns += 200 + r % 5000;
		secs = (time_t)(ns / 1000000000);
		s->id = (uint64_t)round * set->n + i + 1;
		gmtime_r(&secs, &tm);
		strftime(set->times[i], sizeof(set->times[i]), "%Y-%m-%dT%H:%M:%S", &tm);
		snprintf(set->times[i] + 19, sizeof(set->times[i]) - 19, ".%03uZ",
			 (unsigned)(ns / 1000000 % 1000));
		f[0].uint = 1000 + proc * 37;
		f[1].uint = (r >> 8) % 2;
		f[2].text = (char *)comms[proc];
		f[3].uint = ns;
		f[4].uint = ns >> 10;
		f[5].uint = (r >> 16) % 4096;
		f[6].uint = f[5].uint * 3;
		f[7].uint = f[0].uint & 0xff;
		f[8].uint = 42;
		f[9].uint = (r >> 32) % 100 < 5;
		f[10].uint = (r >> 40) % 1000000;
		f[11].flag = (r >> 50) % 3 == 0;
	}
}

/* The batch's NDJSON into `path`; its size. */
static size_t write_raw(const struct event_set *set, const char *path, double *seconds)
{
	struct gerr err = { 0 };
	size_t len, total = 0;
	char *line;
	double t0;
	FILE *f;

	f = fopen(path, "w");
	if (!f) {
		perror(path);
		exit(1);
	}
	for (size_t i = 0; i < set->n; i++) {
		t0 = now_s();
		if (codec_encode(CODEC_JSON, &set->ptrs[i]->base, &line, &len, &err) < 0) {
			fprintf(stderr, "s3_bench: %s\n", err.msg);
			exit(1);
		}
		*seconds += now_s() - t0;
		fwrite(line, 1, len, f);
		fputc('\n', f);
		total += len + 1;
		free(line);
	}
	fclose(f);
	return total;
}

int main(int argc, char **argv)
{
	Graind__S3Sink cfg = GRAIND__S3_SINK__INIT;
	struct event_set set;
	struct gerr err = { 0 };
	size_t batches, rows, bytes, sent = 0, raw = 0;
	double seconds = 0, encode_seconds = 0, t0;
	char path[4096];

	if (argc != 8 || (batches = strtoul(argv[5], NULL, 10)) == 0 ||
	    (rows = strtoul(argv[6], NULL, 10)) == 0) {
		fprintf(stderr, "usage: s3_bench ENDPOINT BUCKET ACCESS_KEY SECRET "
			"BATCHES ROWS RAW_DIR\n");
		return 2;
	}
	cfg.endpoint = argv[1];
	cfg.bucket = argv[2];
	cfg.access_key_id = argv[3];
	cfg.secret_access_key = argv[4];
	cfg.key_prefix = "bench";
	cfg.path_style = true;
	events_build(&set, rows);
	for (size_t b = 0; b < batches; b++) {
		events_advance(&set, b);
		snprintf(path, sizeof(path), "%s/%zu.ndjson", argv[7], b);
		raw += write_raw(&set, path, &encode_seconds);
		t0 = now_s();
		if (s3_put_batch(&cfg, "benchhost", "bench/getpid", set.ptrs, rows, NULL, &bytes,
				 &err) < 0) {
			fprintf(stderr, "s3_bench: %s\n", err.msg);
			return 1;
		}
		seconds += now_s() - t0;
		sent += bytes;
	}
	printf("s3 batches=%zu samples=%zu bytes=%zu raw_bytes=%zu seconds=%.4f "
	       "encode_seconds=%.4f\n", batches, batches * rows, sent, raw, seconds,
	       encode_seconds);
	return 0;
}
