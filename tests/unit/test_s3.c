/* Unit tests of server/sink/s3.c: object keys, and PUTs against a one-shot
 * HTTP server on loopback that records the request, whose SigV4 signature
 * is recomputed here independently of libcurl. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <zlib.h>

#include "server/util/codec.h"
#include "server/util/pbmsg.h"
#include "proto/graind.pb-c.h"
#include "server/sink/s3.h"
#include "server/util/sha256.h"

#define ACCESS_KEY "AKIDEXAMPLE"
#define SECRET_KEY "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define REGION "eu-west-3"

/* ================================================================ samples */

static const char *const sample_json[] = {
	"{\"id\":\"41\",\"probe\":\"tcp/accept\",\"map\":\"events\","
	"\"time\":\"2026-11-25T14:58:20.947Z\",\"kind\":\"EVENT\","
	"\"fields\":[{\"name\":\"comm\",\"text\":\"curl \\\"x\\\"\\n\"},"
	"{\"name\":\"pid\",\"int\":\"-42\"},{\"name\":\"ok\",\"flag\":true}]}",
	"{\"id\":\"42\",\"probe\":\"tcp/accept\",\"map\":\"counts\","
	"\"time\":\"2026-11-25T15:00:01Z\",\"kind\":\"METRIC\",\"name\":\"accepts\","
	"\"tags\":[{\"key\":\"port\",\"value\":\"443\"}],\"value\":1234.5,"
	"\"metricKind\":\"COUNTER\"}",
	"{\"id\":\"57\",\"probe\":\"tcp/accept\",\"map\":\"counts\","
	"\"time\":\"2026-11-25T15:00:02Z\",\"kind\":\"METRIC\",\"name\":\"open\","
	"\"value\":7,\"metricKind\":\"GAUGE\"}",
};

#define N_SAMPLES (sizeof(sample_json) / sizeof(sample_json[0]))

static Graind__Sample *sample_from_json(const char *json)
{
	ProtobufCMessage *msg = NULL;
	struct gerr err = { 0 };

	if (codec_decode(CODEC_JSON, &graind__sample__descriptor, json, strlen(json),
			 &msg, &err) < 0)
		fail_msg("sample JSON: %s", err.msg);
	return (Graind__Sample *)msg;
}

static void samples_load(Graind__Sample **samples)
{
	for (size_t i = 0; i < N_SAMPLES; i++)
		samples[i] = sample_from_json(sample_json[i]);
}

static void samples_free(Graind__Sample **samples, size_t n)
{
	for (size_t i = 0; i < n; i++)
		pbmsg_free(&samples[i]->base);
}

/* Two messages are equal when their protobuf encodings are. */
static void assert_same_sample(const Graind__Sample *a, const Graind__Sample *b)
{
	char *pa, *pb;
	size_t la, lb;

	assert_int_equal(codec_encode(CODEC_PROTOBUF, &a->base, &pa, &la, NULL), 0);
	assert_int_equal(codec_encode(CODEC_PROTOBUF, &b->base, &pb, &lb, NULL), 0);
	assert_int_equal(la, lb);
	assert_memory_equal(pa, pb, la);
	free(pa);
	free(pb);
}

static Graind__S3Sink sink_config(const char *endpoint)
{
	Graind__S3Sink cfg = GRAIND__S3_SINK__INIT;

	cfg.endpoint = (char *)endpoint;
	cfg.bucket = "metrics-bkt";
	cfg.region = REGION;
	cfg.key_prefix = "graind/raw";
	cfg.access_key_id = ACCESS_KEY;
	cfg.secret_access_key = SECRET_KEY;
	cfg.path_style = 1;
	return cfg;
}

/* ================================================================ keys */

static void key_of(const char *prefix, const char *host, const char *probe,
		   const char *time, uint64_t first, uint64_t last, char *key, size_t size,
		   int expect)
{
	Graind__S3Sink cfg = GRAIND__S3_SINK__INIT;
	Graind__Sample a = GRAIND__SAMPLE__INIT, b = GRAIND__SAMPLE__INIT;
	Graind__Sample *batch[] = { &a, &b };

	cfg.key_prefix = (char *)prefix;
	a.id = first;
	a.time = (char *)time;
	b.id = last;
	b.time = "1999-01-01T00:00:00Z";  /* only the first sample's time counts */
	assert_int_equal(s3_object_key(&cfg, host, probe, batch, 2, key, size), expect);
}

static void test_key_layout(void **state)
{
	char key[1100];

	(void)state;
	key_of("graind", "web-1.example.com", "tcp_accept", "2026-11-25T14:58:20.947Z",
	       41, 57, key, sizeof(key), 0);
	assert_string_equal(key, "graind/web-1.example.com/tcp_accept/dt=2026-11-25/"
			    "hour=14/41-57.ndjson.gz");
	key_of("", "h", "p", "2026-01-02T03:04:05Z", 1, 18446744073709551615ULL,
	       key, sizeof(key), 0);
	assert_string_equal(key, "h/p/dt=2026-01-02/hour=03/1-18446744073709551615.ndjson.gz");
	key_of("//a/b//", "h", "p", "2026-01-02T03:04:05Z", 7, 7, key, sizeof(key), 0);
	assert_string_equal(key, "a/b/h/p/dt=2026-01-02/hour=03/7-7.ndjson.gz");
	key_of(NULL, "h", "p", "2026-01-02T03:04:05Z", 7, 7, key, sizeof(key), 0);
	assert_string_equal(key, "h/p/dt=2026-01-02/hour=03/7-7.ndjson.gz");
}

static void test_key_sanitises_names(void **state)
{
	char key[1100];

	(void)state;
	key_of("p", "h\xc3\xa9 st/1", "a:b*c?", "2026-01-02T03:04:05Z", 1, 2, key,
	       sizeof(key), 0);
	assert_string_equal(key, "p/h___st_1/a_b_c_/dt=2026-01-02/hour=03/1-2.ndjson.gz");
	key_of("p", "..", "", "2026-01-02T03:04:05Z", 1, 2, key, sizeof(key), 0);
	assert_string_equal(key, "p/__/_/dt=2026-01-02/hour=03/1-2.ndjson.gz");
	key_of("p", "a..b", ".", "2026-01-02T03:04:05Z", 1, 2, key, sizeof(key), 0);
	assert_string_equal(key, "p/a..b/_/dt=2026-01-02/hour=03/1-2.ndjson.gz");
}

static void test_key_time(void **state)
{
	char key[1100];

	(void)state;
	/* Offsets are converted to UTC, across a day and a year boundary. */
	key_of("", "h", "p", "2026-12-31T23:30:00-02:00", 1, 2, key, sizeof(key), 0);
	assert_string_equal(key, "h/p/dt=2027-01-01/hour=01/1-2.ndjson.gz");
	key_of("", "h", "p", "2026-03-01T00:10:00.123456+01:00", 1, 2, key, sizeof(key), 0);
	assert_string_equal(key, "h/p/dt=2026-02-28/hour=23/1-2.ndjson.gz");
	key_of("", "h", "p", "2026-11-25t14:58:20z", 1, 2, key, sizeof(key), 0);
	assert_string_equal(key, "h/p/dt=2026-11-25/hour=14/1-2.ndjson.gz");

	key_of("", "h", "p", "", 1, 2, key, sizeof(key), -1);
	key_of("", "h", "p", "2026-11-25", 1, 2, key, sizeof(key), -1);
	key_of("", "h", "p", "2026-11-25T14:58:20", 1, 2, key, sizeof(key), -1);
	key_of("", "h", "p", "2026-13-25T14:58:20Z", 1, 2, key, sizeof(key), -1);
	key_of("", "h", "p", "2026-11-25T24:58:20Z", 1, 2, key, sizeof(key), -1);
	key_of("", "h", "p", "2026-11-25T14:58:20Zjunk", 1, 2, key, sizeof(key), -1);
}

static void test_key_limits(void **state)
{
	Graind__S3Sink cfg = GRAIND__S3_SINK__INIT;
	char key[64], host[1100], big[2048];

	(void)state;
	assert_int_equal(s3_object_key(&cfg, "h", "p", NULL, 0, key, sizeof(key)), -1);
	/* Exactly fits, then one byte short. */
	key_of("", "h", "p", "2026-01-02T03:04:05Z", 1, 2, key, 40, 0);
	assert_int_equal(strlen(key), 39);
	key_of("", "h", "p", "2026-01-02T03:04:05Z", 1, 2, key, 39, -1);
	/* Beyond S3's 1024-byte keys, whatever the buffer. */
	memset(host, 'h', 1020);
	host[1020] = '\0';
	key_of("", host, "p", "2026-01-02T03:04:05Z", 1, 2, big, sizeof(big), -1);
}

/* ================================================================ HMAC, SigV4 */

static void hmac_sha256(const void *key, size_t key_len, const void *msg, size_t msg_len,
			uint8_t out[32])
{
	uint8_t k[64] = { 0 }, inner[32];
	uint8_t *buf = malloc(64 + (msg_len > 32 ? msg_len : 32));

	assert_non_null(buf);
	if (key_len > 64)
		sha256(key, key_len, k);
	else
		memcpy(k, key, key_len);
	for (int i = 0; i < 64; i++)
		buf[i] = k[i] ^ 0x36;
	memcpy(buf + 64, msg, msg_len);
	sha256(buf, 64 + msg_len, inner);
	for (int i = 0; i < 64; i++)
		buf[i] = k[i] ^ 0x5c;
	memcpy(buf + 64, inner, 32);
	sha256(buf, 64 + 32, out);
	free(buf);
}

static void to_hex(const uint8_t *d, size_t n, char *hex)
{
	for (size_t i = 0; i < n; i++)
		sprintf(hex + 2 * i, "%02x", d[i]);
}

static void test_hmac_rfc4231(void **state)
{
	uint8_t mac[32];
	char hex[65];

	(void)state;
	hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28, mac);
	to_hex(mac, 32, hex);
	assert_string_equal(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

/* ================================================================ HTTP server */

struct request {
	char method[16];
	char path[2048];
	char *headers;          /* the raw header block, after the request line */
	unsigned char *body;
	size_t body_len;
};

struct server {
	int fd;
	int port;
	pthread_t thread;
	const char *response;   /* sent verbatim */
	char endpoint[64];
	struct request req;
	int served;
};

/* The value of header `name` (case-insensitive), trimmed, or NULL. */
static const char *header(const struct request *req, const char *name, char *out,
			  size_t size)
{
	size_t len = strlen(name);

	for (const char *line = req->headers; line && *line;) {
		const char *end = strstr(line, "\r\n");

		if (!end)
			break;
		if (strncasecmp(line, name, len) == 0 && line[len] == ':') {
			const char *v = line + len + 1;
			size_t n;

			while (*v == ' ' || *v == '\t')
				v++;
			n = (size_t)(end - v);
			while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
				n--;
			if (n >= size)
				n = size - 1;
			memcpy(out, v, n);
			out[n] = '\0';
			return out;
		}
		line = end + 2;
	}
	return NULL;
}

static void *serve_one(void *arg)
{
	struct server *s = arg;
	size_t cap = 1 << 16, len = 0, need;
	char *buf = malloc(cap + 1), *end, value[32];
	int c, continued = 0;
	ssize_t r;

	c = accept(s->fd, NULL, NULL);
	if (c < 0 || !buf)
		goto out;
	for (;;) {
		if (len == cap) {
			cap *= 2;
			buf = realloc(buf, cap + 1);
		}
		r = read(c, buf + len, cap - len);
		if (r <= 0)
			goto out;
		len += (size_t)r;
		buf[len] = '\0';
		end = strstr(buf, "\r\n\r\n");
		if (!end)
			continue;
		s->req.headers = strndup(strstr(buf, "\r\n") + 2,
					 (size_t)(end + 2 - (strstr(buf, "\r\n") + 2)));
		sscanf(buf, "%15s %2047s", s->req.method, s->req.path);
		need = header(&s->req, "Content-Length", value, sizeof(value))
			       ? strtoul(value, NULL, 10) : 0;
		if (!continued && header(&s->req, "Expect", value, sizeof(value))) {
			static const char go_on[] = "HTTP/1.1 100 Continue\r\n\r\n";

			continued = 1;
			if (write(c, go_on, sizeof(go_on) - 1) < 0)
				goto out;
		}
		if (len - (size_t)(end + 4 - buf) >= need) {
			s->req.body_len = need;
			s->req.body = malloc(need + 1);
			memcpy(s->req.body, end + 4, need);
			break;
		}
		free(s->req.headers);
		s->req.headers = NULL;
	}
	if (write(c, s->response, strlen(s->response)) < 0)
		goto out;
	s->served = 1;
out:
	if (c >= 0)
		close(c);
	free(buf);
	return NULL;
}

/* Listen on 127.0.0.1; endpoint names it as http://<name>:<port>. */
static void server_start(struct server *s, const char *name, const char *response)
{
	struct sockaddr_in addr = { .sin_family = AF_INET };
	socklen_t alen = sizeof(addr);

	memset(s, 0, sizeof(*s));
	s->response = response;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(s->fd >= 0);
	assert_int_equal(bind(s->fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(listen(s->fd, 4), 0);
	assert_int_equal(getsockname(s->fd, (struct sockaddr *)&addr, &alen), 0);
	s->port = ntohs(addr.sin_port);
	snprintf(s->endpoint, sizeof(s->endpoint), "http://%s:%d", name, s->port);
	assert_int_equal(pthread_create(&s->thread, NULL, serve_one, s), 0);
}

static void server_stop(struct server *s)
{
	pthread_join(s->thread, NULL);
	close(s->fd);
}

static void server_free(struct server *s)
{
	free(s->req.headers);
	free(s->req.body);
}

static const char ok_response[] =
	"HTTP/1.1 200 OK\r\nETag: \"abc\"\r\nContent-Length: 0\r\n"
	"Connection: close\r\n\r\n";

/* ================================================================ checks */

static void gunzip(const unsigned char *in, size_t len, char **out, size_t *out_len)
{
	z_stream z = { 0 };
	size_t cap = 4096;
	char *buf = malloc(cap);
	int rc;

	assert_int_equal(inflateInit2(&z, 15 + 16), Z_OK);
	z.next_in = (Bytef *)in;
	z.avail_in = (uInt)len;
	do {
		if (z.total_out + 1024 > cap) {
			cap *= 2;
			buf = realloc(buf, cap);
		}
		z.next_out = (Bytef *)buf + z.total_out;
		z.avail_out = (uInt)(cap - z.total_out - 1);
		rc = inflate(&z, Z_NO_FLUSH);
		assert_true(rc == Z_OK || rc == Z_STREAM_END);
	} while (rc != Z_STREAM_END);
	assert_int_equal(z.avail_in, 0);
	*out_len = z.total_out;
	buf[*out_len] = '\0';
	*out = buf;
	inflateEnd(&z);
}

/* The body is gzip'd NDJSON, one line per input sample, in order. */
static void assert_body_holds(const struct request *req, Graind__Sample **samples, size_t n)
{
	char *text, *line, *save = NULL;
	size_t len, i = 0;

	gunzip(req->body, req->body_len, &text, &len);
	assert_int_equal(strlen(text), len);
	assert_true(len > 0 && text[len - 1] == '\n');
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		Graind__Sample *got = sample_from_json(line);

		assert_true(i < n);
		assert_same_sample(got, samples[i++]);
		pbmsg_free(&got->base);
	}
	assert_int_equal(i, n);
	free(text);
}

static void uri_encode(const char *in, char *out)
{
	for (; *in; in++) {
		unsigned char c = (unsigned char)*in;

		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '.' || c == '_' || c == '~' || c == '/')
			*out++ = (char)c;
		else
			out += sprintf(out, "%%%02X", c);
	}
	*out = '\0';
}

static void uri_decode(const char *in, char *out)
{
	for (; *in; in++) {
		unsigned int c;

		if (*in == '%' && sscanf(in + 1, "%2x", &c) == 1) {
			*out++ = (char)c;
			in += 2;
		} else {
			*out++ = *in;
		}
	}
	*out = '\0';
}

/* Recompute the SigV4 signature of the received request, as S3 does: the
 * canonical URI is the URI-encoded object path (decoded from the request
 * first), the headers are those the Authorization header lists, the
 * payload hash is x-amz-content-sha256. */
static void assert_signature(const struct request *req, const char *secret)
{
	char auth[1024], amz_date[32], payload[80], cred_prefix[256], value[1024];
	char decoded[2048], canon_uri[6144], signed_headers[512], sent_sig[80];
	char canon_hash[65], sts[512], sig_hex[65], secret_key[256], date[9];
	uint8_t k[32], sig[32];
	const char *p;
	char *canon;
	size_t size;
	FILE *f;

	assert_non_null(header(req, "Authorization", auth, sizeof(auth)));
	assert_non_null(header(req, "x-amz-date", amz_date, sizeof(amz_date)));
	assert_int_equal(strlen(amz_date), 16);  /* 20261125T145820Z */
	assert_non_null(header(req, "x-amz-content-sha256", payload, sizeof(payload)));
	snprintf(date, sizeof(date), "%.8s", amz_date);

	snprintf(cred_prefix, sizeof(cred_prefix),
		 "AWS4-HMAC-SHA256 Credential=" ACCESS_KEY "/%s/" REGION "/s3/aws4_request, ",
		 date);
	assert_true(strncmp(auth, cred_prefix, strlen(cred_prefix)) == 0);
	p = strstr(auth, "SignedHeaders=");
	assert_non_null(p);
	assert_int_equal(sscanf(p, "SignedHeaders=%511[^,], Signature=%79s", signed_headers,
				sent_sig), 2);
	assert_int_equal(strlen(sent_sig), 64);
	for (const char *must = "content-type;host;x-amz-content-sha256;x-amz-date";
	     *must;) {
		char name[64];
		size_t n = strcspn(must, ";");

		snprintf(name, sizeof(name), ";%.*s;", (int)n, must);
		snprintf(value, sizeof(value), ";%s;", signed_headers);
		assert_non_null(strstr(value, name));
		must += n + (must[n] == ';');
	}

	uri_decode(req->path, decoded);
	uri_encode(decoded, canon_uri);
	f = open_memstream(&canon, &size);
	fprintf(f, "%s\n%s\n\n", req->method, canon_uri);
	for (const char *h = signed_headers; *h;) {
		char name[64];
		size_t n = strcspn(h, ";");

		snprintf(name, sizeof(name), "%.*s", (int)n, h);
		if (!header(req, name, value, sizeof(value)))
			fail_msg("signed header %s was not sent", name);
		fprintf(f, "%s:%s\n", name, value);
		h += n + (h[n] == ';');
	}
	fprintf(f, "\n%s\n%s", signed_headers, payload);
	fclose(f);
	sha256_hex(canon, size, canon_hash);
	free(canon);

	snprintf(sts, sizeof(sts), "AWS4-HMAC-SHA256\n%s\n%s/" REGION "/s3/aws4_request\n%s",
		 amz_date, date, canon_hash);
	snprintf(secret_key, sizeof(secret_key), "AWS4%s", secret);
	hmac_sha256(secret_key, strlen(secret_key), date, 8, k);
	hmac_sha256(k, 32, REGION, strlen(REGION), k);
	hmac_sha256(k, 32, "s3", 2, k);
	hmac_sha256(k, 32, "aws4_request", 12, k);
	hmac_sha256(k, 32, sts, strlen(sts), sig);
	to_hex(sig, 32, sig_hex);
	assert_string_equal(sig_hex, sent_sig);
}

/* ================================================================ PUTs */

/* PUT the test samples to a fresh one-shot server at `name` answering
 * `response`; the server has stopped when this returns. */
static int put_samples(struct server *srv, const char *name, const char *response,
		       Graind__S3Sink *cfg, size_t *bytes, struct gerr *err)
{
	Graind__Sample *samples[N_SAMPLES];
	int ret;

	samples_load(samples);
	server_start(srv, name, response);
	cfg->endpoint = srv->endpoint;
	ret = s3_put_batch(cfg, "web-1", "tcp/accept", samples, N_SAMPLES, NULL, bytes, err);
	server_stop(srv);
	samples_free(samples, N_SAMPLES);
	return ret;
}

static void test_put_path_style(void **state)
{
	Graind__Sample *samples[N_SAMPLES];
	Graind__S3Sink cfg = sink_config("");
	char value[256], host[64], hash[65];
	struct gerr err = { 0 };
	struct server srv;
	size_t bytes = 0;

	(void)state;
	assert_int_equal(put_samples(&srv, "127.0.0.1", ok_response, &cfg, &bytes, &err), 0);
	assert_int_equal(srv.served, 1);
	assert_string_equal(srv.req.method, "PUT");
	/* '=' is percent-encoded, so the signed path is the canonical one. */
	assert_string_equal(srv.req.path, "/metrics-bkt/graind/raw/web-1/tcp_accept/"
			    "dt%3D2026-11-25/hour%3D14/41-57.ndjson.gz");
	snprintf(host, sizeof(host), "127.0.0.1:%d", srv.port);
	assert_string_equal(header(&srv.req, "Host", value, sizeof(value)), host);
	assert_string_equal(header(&srv.req, "Content-Type", value, sizeof(value)),
			    "application/gzip");
	assert_null(header(&srv.req, "Expect", value, sizeof(value)));
	assert_int_equal(bytes, srv.req.body_len);

	sha256_hex(srv.req.body, srv.req.body_len, hash);
	assert_string_equal(header(&srv.req, "x-amz-content-sha256", value, sizeof(value)),
			    hash);
	assert_signature(&srv.req, SECRET_KEY);

	samples_load(samples);
	assert_body_holds(&srv.req, samples, N_SAMPLES);
	samples_free(samples, N_SAMPLES);
	server_free(&srv);
}

static void test_put_virtual_host(void **state)
{
	Graind__Sample *samples[N_SAMPLES];
	Graind__S3Sink cfg = sink_config("");
	char value[256], host[128];
	struct gerr err = { 0 };
	struct server srv;
	size_t bytes = 0;

	(void)state;
	cfg.path_style = 0;
	cfg.key_prefix = "";
	/* libcurl resolves *.localhost to loopback by itself. */
	assert_int_equal(put_samples(&srv, "localhost", ok_response, &cfg, &bytes, &err), 0);
	assert_string_equal(srv.req.method, "PUT");
	assert_string_equal(srv.req.path,
			    "/web-1/tcp_accept/dt%3D2026-11-25/hour%3D14/41-57.ndjson.gz");
	snprintf(host, sizeof(host), "metrics-bkt.localhost:%d", srv.port);
	assert_string_equal(header(&srv.req, "Host", value, sizeof(value)), host);
	assert_signature(&srv.req, SECRET_KEY);

	samples_load(samples);
	assert_body_holds(&srv.req, samples, N_SAMPLES);
	samples_free(samples, N_SAMPLES);
	server_free(&srv);
}

/* A batch whose object is over 1 MiB: the gzip stream spans many output
 * chunks and libcurl asks for 100-continue, which is not signed. */
static void test_put_large_batch(void **state)
{
	enum { N = 12000 };
	Graind__Sample **samples = calloc(N, sizeof(*samples));
	Graind__S3Sink cfg = sink_config("");
	char json[512], noise[257], value[64];
	struct gerr err = { 0 };
	struct server srv;
	uint32_t x = 2463534242u;
	size_t bytes = 0;

	(void)state;
	for (int i = 0; i < N; i++) {
		for (int j = 0; j < 256; j++) {
			x ^= x << 13, x ^= x >> 17, x ^= x << 5;  /* xorshift32 */
			noise[j] = "0123456789abcdef"[x & 15];
		}
		noise[256] = '\0';
		snprintf(json, sizeof(json),
			 "{\"id\":\"%d\",\"probe\":\"big\",\"time\":\"2026-11-25T03:00:00Z\","
			 "\"kind\":\"EVENT\",\"fields\":[{\"name\":\"n\",\"text\":\"%s\"}]}",
			 1000 + i, noise);
		samples[i] = sample_from_json(json);
	}
	server_start(&srv, "127.0.0.1", ok_response);
	cfg.endpoint = srv.endpoint;
	assert_int_equal(s3_put_batch(&cfg, "h", "big", samples, N, NULL, &bytes, &err), 0);
	server_stop(&srv);
	assert_true(bytes > 1024 * 1024);
	assert_int_equal(bytes, srv.req.body_len);
	assert_string_equal(header(&srv.req, "Expect", value, sizeof(value)), "100-continue");
	assert_string_equal(srv.req.path,
			    "/metrics-bkt/graind/raw/h/big/dt%3D2026-11-25/hour%3D03/1000-12999.ndjson.gz");
	assert_signature(&srv.req, SECRET_KEY);
	assert_body_holds(&srv.req, samples, N);
	samples_free(samples, N);
	free(samples);
	server_free(&srv);
}

static void test_put_default_region(void **state)
{
	Graind__S3Sink cfg = sink_config("");
	char auth[512];
	struct gerr err = { 0 };
	struct server srv;

	(void)state;
	cfg.region = "";
	assert_int_equal(put_samples(&srv, "127.0.0.1", ok_response, &cfg, NULL, &err), 0);
	assert_non_null(header(&srv.req, "Authorization", auth, sizeof(auth)));
	assert_non_null(strstr(auth, "/us-east-1/s3/aws4_request"));
	server_free(&srv);
}

static const char signature_error[] =
	"HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\n"
	"Connection: close\r\n\r\n"
	"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>"
	"<Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated "
	"does not match the signature you provided. Check your key &amp; signing "
	"method.</Message><RequestId>4442587FB7D0A2F9</RequestId></Error>";

static void test_put_s3_error(void **state)
{
	Graind__S3Sink cfg = sink_config("");
	struct gerr err = { 0 };
	struct server srv;
	size_t bytes = 99;

	(void)state;
	assert_int_equal(put_samples(&srv, "127.0.0.1", signature_error, &cfg, &bytes, &err),
			 -1);
	assert_int_equal(srv.served, 1);
	assert_int_equal(err.status, 502);
	assert_int_equal(bytes, 0);
	assert_string_equal(err.msg,
			    "S3 PUT graind/raw/web-1/tcp_accept/dt=2026-11-25/hour=14/"
			    "41-57.ndjson.gz: 403 SignatureDoesNotMatch: The request "
			    "signature we calculated does not match the signature you "
			    "provided. Check your key & signing method.");
	server_free(&srv);
}

static void test_put_plain_http_error(void **state)
{
	Graind__S3Sink cfg = sink_config("");
	struct gerr err = { 0 };
	struct server srv;

	(void)state;
	assert_int_equal(put_samples(&srv, "127.0.0.1",
				     "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
				     "Content-Length: 9\r\n\r\nbusy\nmore",
				     &cfg, NULL, &err), -1);
	assert_int_equal(err.status, 502);
	assert_non_null(strstr(err.msg, ".ndjson.gz: HTTP 503: busy"));
	assert_null(strstr(err.msg, "more"));
	server_free(&srv);
}

static void test_put_connection_refused(void **state)
{
	Graind__Sample *samples[N_SAMPLES];
	struct sockaddr_in addr = { .sin_family = AF_INET };
	socklen_t alen = sizeof(addr);
	Graind__S3Sink cfg = sink_config("");
	struct gerr err = { 0 };
	char endpoint[64];
	int fd;

	(void)state;
	/* A port that was just free and has no listener. */
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &alen), 0);
	close(fd);
	snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%d", ntohs(addr.sin_port));
	cfg.endpoint = endpoint;

	samples_load(samples);
	assert_int_equal(s3_put_batch(&cfg, "h", "p", samples, N_SAMPLES, NULL, NULL, &err), -1);
	samples_free(samples, N_SAMPLES);
	assert_int_equal(err.status, 502);
	assert_true(strncmp(err.msg, "S3 PUT graind/raw/h/p/dt=2026-11-25/hour=14/41-57.ndjson.gz: ",
			    60) == 0);
	assert_non_null(strstr(err.msg, "Failed to connect to 127.0.0.1 port"));
}

/* ================================================================ cancel */

struct cancelled_put {
	Graind__S3Sink cfg;
	atomic_bool cancel;
	struct gerr err;
	int ret;
};

static void *put_until_cancelled(void *arg)
{
	struct cancelled_put *cp = arg;
	Graind__Sample *samples[N_SAMPLES];

	samples_load(samples);
	cp->ret = s3_put_batch(&cp->cfg, "h", "p", samples, N_SAMPLES, &cp->cancel, NULL,
			       &cp->err);
	samples_free(samples, N_SAMPLES);
	return NULL;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A PUT to `fd` (listening) is cancelled 300 ms after it starts and
 * returns within a second of that, far before any of its timeouts. */
static void expect_cancelled(int fd)
{
	struct sockaddr_in addr;
	socklen_t alen = sizeof(addr);
	struct cancelled_put cp = { .cfg = sink_config(""), .ret = 0 };
	char endpoint[64];
	pthread_t thread;
	double t0;

	assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &alen), 0);
	snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%d", ntohs(addr.sin_port));
	cp.cfg.endpoint = endpoint;
	atomic_init(&cp.cancel, false);
	assert_int_equal(pthread_create(&thread, NULL, put_until_cancelled, &cp), 0);
	usleep(300 * 1000);
	t0 = now_s();
	atomic_store(&cp.cancel, true);
	pthread_join(thread, NULL);
	assert_true(now_s() - t0 < 1.2);
	assert_int_equal(cp.ret, -1);
	assert_int_equal(cp.err.status, 503);
	assert_string_equal(cp.err.msg,
			    "S3 PUT graind/raw/h/p/dt=2026-11-25/hour=14/41-57.ndjson.gz: cancelled");
}

static int listen_loopback(int backlog)
{
	struct sockaddr_in addr = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(listen(fd, backlog), 0);
	return fd;
}

/* A peer whose kernel takes the connection and the request, and that
 * never answers. */
static void test_put_cancelled_while_waiting_for_an_answer(void **state)
{
	int fd = listen_loopback(4);

	(void)state;
	expect_cancelled(fd);
	close(fd);
}

/* A peer that answers no SYN: its one-entry accept queue is full. */
static void test_put_cancelled_while_connecting(void **state)
{
	struct sockaddr_in addr;
	socklen_t alen = sizeof(addr);
	int fd = listen_loopback(0), filler = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	(void)state;
	assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &alen), 0);
	assert_int_equal(connect(filler, (struct sockaddr *)&addr, alen), 0);
	expect_cancelled(fd);
	close(filler);
	close(fd);
}

static void test_put_secret_file(void **state)
{
	char path[] = "/tmp/test_s3_secretXXXXXX";
	Graind__S3Sink cfg = sink_config("");
	struct gerr err = { 0 };
	struct server srv;
	int fd;

	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "file-secret/KEY+1\n", 18), 18);
	close(fd);
	cfg.secret_access_key = "not-this-one";
	cfg.secret_file = path;
	assert_int_equal(put_samples(&srv, "127.0.0.1", ok_response, &cfg, NULL, &err), 0);
	assert_signature(&srv.req, "file-secret/KEY+1");
	server_free(&srv);
	unlink(path);
}

static void test_put_secret_file_unreadable(void **state)
{
	Graind__Sample *samples[N_SAMPLES];
	Graind__S3Sink cfg = sink_config("http://127.0.0.1:9");
	struct gerr err = { 0 };

	(void)state;
	cfg.secret_file = "/nonexistent/graind/s3-secret";
	samples_load(samples);
	assert_int_equal(s3_put_batch(&cfg, "h", "p", samples, N_SAMPLES, NULL, NULL, &err), -1);
	samples_free(samples, N_SAMPLES);
	assert_int_equal(err.status, 500);
	assert_string_equal(err.msg, "S3 secret_file /nonexistent/graind/s3-secret: "
			    "No such file or directory");
}

static void test_put_bad_config(void **state)
{
	Graind__Sample *samples[N_SAMPLES];
	Graind__S3Sink cfg = sink_config("http://127.0.0.1:9");
	struct gerr err = { 0 };

	(void)state;
	samples_load(samples);
	cfg.bucket = "";
	assert_int_equal(s3_put_batch(&cfg, "h", "p", samples, N_SAMPLES, NULL, NULL, &err), -1);
	assert_int_equal(err.status, 400);
	assert_string_equal(err.msg, "S3 sink has no bucket");
	cfg.bucket = "b";
	cfg.endpoint = "http:///path";
	assert_int_equal(s3_put_batch(&cfg, "h", "p", samples, N_SAMPLES, NULL, NULL, &err), -1);
	assert_int_equal(err.status, 400);
	assert_non_null(strstr(err.msg, "has no host"));
	cfg.endpoint = "http://127.0.0.1:9";
	assert_int_equal(s3_put_batch(&cfg, "h", "p", samples, 0, NULL, NULL, &err), -1);
	assert_int_equal(err.status, 500);
	samples_free(samples, N_SAMPLES);
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(test_key_layout),
	cmocka_unit_test(test_key_sanitises_names),
	cmocka_unit_test(test_key_time),
	cmocka_unit_test(test_key_limits),
	cmocka_unit_test(test_hmac_rfc4231),
	cmocka_unit_test(test_put_path_style),
	cmocka_unit_test(test_put_virtual_host),
	cmocka_unit_test(test_put_large_batch),
	cmocka_unit_test(test_put_default_region),
	cmocka_unit_test(test_put_s3_error),
	cmocka_unit_test(test_put_plain_http_error),
	cmocka_unit_test(test_put_connection_refused),
	cmocka_unit_test(test_put_cancelled_while_waiting_for_an_answer),
	cmocka_unit_test(test_put_cancelled_while_connecting),
	cmocka_unit_test(test_put_secret_file),
	cmocka_unit_test(test_put_secret_file_unreadable),
	cmocka_unit_test(test_put_bad_config),
};

int main(void)
{
	return cmocka_run_group_tests(tests, NULL, NULL);
}
