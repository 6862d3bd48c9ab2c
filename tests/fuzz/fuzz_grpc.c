/* Fuzz the gRPC transport: HTTP/2 framing (nghttp2), our headers
 * (content-type, grpc-timeout, grpc-encoding, authority), the 5-byte
 * message prefix and the stream bookkeeping, on a real server. The agent
 * of fuzz_http's kind (a store in a temporary directory, tokens, no probe
 * manager) serves gRPC on a unix socket; each input is the bytes a client
 * sends after the connection preface, followed by a PING whose ACK marks
 * that the server has read everything. Calls of service Graind carry no
 * valid token (the fuzzer cannot guess one), so they end at the 401 of
 * the service layer; Health and reflection answer. The server must start
 * every connection with SETTINGS, never crash (ASan and UBSan watch its
 * threads), and still serve a Health check after every 512 inputs. */
#define _GNU_SOURCE     /* nftw, in fuzz_agent.h */
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "server/grpc/grpc.h"
#include "tests/fuzz/fuzz.h"
#include "tests/fuzz/fuzz_agent.h"

#define PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define QUIET_MS 100            /* an input the server waits on forever ends here */

static struct grpc_server *server;

/* A client SETTINGS frame (empty) and the PING that ends every input. */
static const uint8_t settings[] = { 0, 0, 0, 0x4, 0, 0, 0, 0, 0 };
static const uint8_t ping[] = { 0, 0, 8, 0x6, 0, 0, 0, 0, 0, 'g', 'r', 'a', 'i', 'n', 'd', '!', '!' };

static void server_stop(void)
{
	grpc_stop(server);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static char *const flags[] = { "--grpc-listen", "none", "--listen", "none", NULL };
	struct gerr err = { 0 };

	(void)argc;
	(void)argv;
	fuzz_agent_open("grpc", flags);
	fuzz_agent_stop = server_stop;
	fuzz_check(grpc_start(&agent, &server, &err) == 0 && server, "%s", err.msg);
	return 0;
}

static int dial(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	fuzz_check(fd >= 0, "socket");
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", agent.cfg.grpc_socket_path);
	fuzz_check(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "the server refuses connections");
	return fd;
}

/* Send it all (the server may close early: then stop). */
static void send_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

/* Read what the server answers until it closes, acknowledges our PING, or
 * is quiet for QUIET_MS; its first frame must be SETTINGS. Returns the
 * bytes read into buf (at most cap). */
static size_t read_answer(int fd, uint8_t *buf, size_t cap)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	size_t got = 0;

	while (got < cap && poll(&pfd, 1, QUIET_MS) > 0) {
		ssize_t r = recv(fd, buf + got, cap - got, 0);

		if (r <= 0)
			break;
		got += (size_t)r;
		if (memmem(buf, got, ping + 9, 8))      /* the ACK carries our opaque data */
			break;
	}
	if (got >= 9)
		fuzz_check(buf[3] == 0x4, "the server's first frame is of type %u, not SETTINGS", buf[3]);
	return got;
}

/* A Health check of the server (the empty service name): it must answer
 * SERVING (HealthCheckResponse field 1 = 1). */
static void health_check(void)
{
	/* HEADERS, END_HEADERS, stream 1, HPACK literals without indexing:
	 * :method POST, :scheme http, :path, :authority, content-type, te. */
	static const char path[] = "/grpc.health.v1.Health/Check";
	uint8_t frame[256], answer[4096];
	size_t n = 9;
	int fd = dial();

#define LIT(name, value) do { \
	frame[n++] = 0; frame[n++] = sizeof(name) - 1; memcpy(frame + n, name, sizeof(name) - 1); \
	n += sizeof(name) - 1; frame[n++] = sizeof(value) - 1; \
	memcpy(frame + n, value, sizeof(value) - 1); n += sizeof(value) - 1; } while (0)
	frame[n++] = 0x83;              /* :method POST (static table 3) */
	frame[n++] = 0x86;              /* :scheme http (static table 6) */
	LIT(":path", path);
	LIT(":authority", "localhost");
	LIT("content-type", "application/grpc");
	LIT("te", "trailers");
#undef LIT
	frame[0] = 0;
	frame[1] = (uint8_t)((n - 9) >> 8);
	frame[2] = (uint8_t)(n - 9);
	frame[3] = 0x1;                 /* HEADERS */
	frame[4] = 0x4;                 /* END_HEADERS */
	frame[5] = frame[6] = frame[7] = 0;
	frame[8] = 1;
	/* DATA, END_STREAM: a 5-byte prefix, an empty HealthCheckRequest. */
	static const uint8_t data[] = { 0, 0, 5, 0x0, 0x1, 0, 0, 0, 1, 0, 0, 0, 0, 0 };
	send_all(fd, (const uint8_t *)PREFACE, strlen(PREFACE));
	send_all(fd, settings, sizeof(settings));
	send_all(fd, frame, n);
	send_all(fd, data, sizeof(data));
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	size_t got = 0;
	static const uint8_t serving[] = { 0, 0, 0, 0, 2, 0x08, 0x01 };

	while (got < sizeof(answer) && !memmem(answer, got, serving, sizeof(serving)) &&
	       poll(&pfd, 1, 5000) > 0) {
		ssize_t r = recv(fd, answer + got, sizeof(answer) - got, 0);

		if (r <= 0)
			break;
		got += (size_t)r;
	}
	fuzz_check(memmem(answer, got, serving, sizeof(serving)), "no SERVING answer to a Health check");
	close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static unsigned inputs;
	static uint8_t answer[1 << 16];
	int fd = dial();

	send_all(fd, (const uint8_t *)PREFACE, strlen(PREFACE));
	send_all(fd, data, size);
	send_all(fd, ping, sizeof(ping));
	read_answer(fd, answer, sizeof(answer));
	close(fd);
	if (++inputs % 512 == 1)
		health_check();
	return 0;
}
