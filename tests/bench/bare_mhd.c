/* The reference for the HTTP benchmark: a bare libmicrohttpd responder with
 * graind's threading options, answering every request with a fixed body of
 * the size graind's reply has. Usage: bare_mhd PORT THREADS BODY_FILE */
#include <microhttpd.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

static char *body;
static size_t body_len;

static enum MHD_Result answer(void *cls, struct MHD_Connection *conn, const char *url,
			      const char *method, const char *version,
			      const char *upload_data, size_t *upload_data_size,
			      void **con_cls)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	(void)cls, (void)url, (void)method, (void)version, (void)upload_data;
	(void)upload_data_size;
	/* Only the headers are in at the first call: a response queued then
	 * makes libmicrohttpd close the connection, as graind does not. */
	if (!*con_cls) {
		*con_cls = &body;
		return MHD_YES;
	}
	resp = MHD_create_response_from_buffer(body_len, body, MHD_RESPMEM_PERSISTENT);
	MHD_add_response_header(resp, "Content-Type", "application/json");
	ret = MHD_queue_response(conn, 200, resp);
	MHD_destroy_response(resp);
	return ret;
}

int main(int argc, char **argv)
{
	struct MHD_Daemon *d;
	FILE *f;
	sigset_t set;
	int sig;

	if (argc != 4)
		return 2;
	f = fopen(argv[3], "rb");
	if (!f)
		return 1;
	fseek(f, 0, SEEK_END);
	body_len = (size_t)ftell(f);
	rewind(f);
	body = malloc(body_len + 1);
	if (!body || fread(body, 1, body_len, f) != body_len)
		return 1;
	fclose(f);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL,
			     (uint16_t)atoi(argv[1]), NULL, NULL, answer, NULL,
			     MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)atoi(argv[2]),
			     MHD_OPTION_CONNECTION_TIMEOUT, 60u,
			     MHD_OPTION_CONNECTION_LIMIT, 1024u,
			     MHD_OPTION_END);
	if (!d)
		return 1;
	printf("ready\n");
	fflush(stdout);
	sigwait(&set, &sig);
	MHD_stop_daemon(d);
	return 0;
}
