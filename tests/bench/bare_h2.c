/* The reference for the gRPC benchmark: a bare nghttp2 responder that
 * answers every request, as soon as its END_STREAM arrives, with the
 * same framed response message and `grpc-status: 0` trailers, from one
 * epoll thread (graind's loop is one thread too, and also hands each
 * call to a worker), its frames gathered into one write as graind's are.
 * Usage: bare_h2 PORT RESPONSE_FILE; prints "ready". */
#define _GNU_SOURCE             /* accept4 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static uint8_t *answer;
static size_t answer_len;

struct conn {
	int fd;
	nghttp2_session *session;
};

struct reply {
	size_t off;
};

#define NV(n, v) { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1, NGHTTP2_NV_FLAG_NONE }

static ssize_t read_answer(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
			   uint32_t *flags, nghttp2_data_source *source, void *user_data)
{
	struct reply *r = source->ptr;
	size_t n = answer_len - r->off < length ? answer_len - r->off : length;
	nghttp2_nv trailers[] = { NV("grpc-status", "0") };

	(void)user_data;
	memcpy(buf, answer + r->off, n);
	r->off += n;
	if (r->off == answer_len) {
		*flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
		nghttp2_submit_trailer(session, id, trailers, 1);
		free(r);
	}
	return (ssize_t)n;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
	nghttp2_nv headers[] = { NV(":status", "200"), NV("content-type", "application/grpc") };
	nghttp2_data_provider dp = { .read_callback = read_answer };

	(void)ud;
	if ((frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) ||
	    !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
		return 0;
	dp.source.ptr = calloc(1, sizeof(struct reply));
	if (!dp.source.ptr)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	nghttp2_submit_response(session, frame->hd.stream_id, headers, 2, &dp);
	return 0;
}

/* What nghttp2 has to send, gathered and written at once (as graind does:
 * one write for an answer's frames, and for many answers). */
static int flush(struct conn *c)
{
	static uint8_t out[1 << 16];

	for (;;) {
		size_t len = 0, off = 0;

		while (len < sizeof(out) - 16384) {
			const uint8_t *data;
			ssize_t n = nghttp2_session_mem_send(c->session, &data);

			if (n < 0)
				return -1;
			if (n == 0)
				break;
			if ((size_t)n > sizeof(out) - len)
				return -1;
			memcpy(out + len, data, (size_t)n);
			len += (size_t)n;
		}
		if (!len)
			return 0;
		while (off < len) {
			ssize_t w = write(c->fd, out + off, len - off);

			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				/* The bench's clients read as fast as they send:
				 * wait for room rather than buffer. */
				if (errno == EAGAIN) {
					usleep(50);
					continue;
				}
				return -1;
			}
			off += (size_t)w;
		}
	}
}

int main(int argc, char **argv)
{
	nghttp2_session_callbacks *cbs;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct epoll_event ev = { .events = EPOLLIN }, evs[64];
	nghttp2_settings_entry settings[] = { { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100 } };
	int lfd, ep, one = 1;
	FILE *f;

	if (argc != 3 || !(f = fopen(argv[2], "rb")))
		return 2;
	answer = malloc(1 << 20);
	answer_len = fread(answer, 1, 1 << 20, f);
	fclose(f);
	nghttp2_session_callbacks_new(&cbs);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	sa.sin_port = htons((uint16_t)atoi(argv[1]));
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 512) < 0)
		return 1;
	ep = epoll_create1(0);
	ev.data.ptr = NULL;
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		int n = epoll_wait(ep, evs, 64, -1);

		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			uint8_t buf[16384];
			ssize_t r;

			if (!c) {
				int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);

				if (fd < 0)
					continue;
				setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
				c = calloc(1, sizeof(*c));
				c->fd = fd;
				nghttp2_session_server_new(&c->session, cbs, c);
				nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, settings, 1);
				ev.data.ptr = c;
				epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
				flush(c);
				continue;
			}
			while ((r = read(c->fd, buf, sizeof(buf))) > 0)
				if (nghttp2_session_mem_recv(c->session, buf, (size_t)r) < 0)
					break;
			if (r == 0 || (r < 0 && errno != EAGAIN) || flush(c) < 0) {
				epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
				close(c->fd);
				nghttp2_session_del(c->session);
				free(c);
			}
		}
	}
}
