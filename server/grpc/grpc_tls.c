/* grpc_tls: a GnuTLS server session under a gRPC connection. */
#include "server/grpc/grpc_tls.h"

#include <errno.h>
#include <gnutls/gnutls.h>
#include <stdlib.h>
#include <string.h>

#include "server/tls/tls.h"
#include "server/util/log.h"

struct grpc_tls {
	gnutls_session_t session;
	struct tls_creds *creds;        /* held until the session is gone */
	char *identity;
	bool done;
};

struct grpc_tls *grpc_tls_new(struct tls *tls, int fd)
{
	static const gnutls_datum_t h2 = { (unsigned char *)"h2", 2 };
	struct grpc_tls *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	/* No tickets: no resumption, so every connection is verified against
	 * the credentials it was opened with. */
	if (gnutls_init(&t->session, GNUTLS_SERVER | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL |
			GNUTLS_NO_TICKETS) < 0) {
		free(t);
		return NULL;
	}
	if (tls_session_prepare(tls, t->session, &t->creds) < 0 ||
	    gnutls_alpn_set_protocols(t->session, &h2, 1, GNUTLS_ALPN_MANDATORY) < 0) {
		grpc_tls_free(t);
		return NULL;
	}
	gnutls_transport_set_int(t->session, fd);
	return t;
}

int grpc_tls_handshake(struct grpc_tls *t)
{
	gnutls_datum_t proto = { 0 };
	int rc;

	if (t->done)
		return 1;
	do
		rc = gnutls_handshake(t->session);
	while (rc == GNUTLS_E_INTERRUPTED);
	if (rc == GNUTLS_E_AGAIN)
		return 0;
	if (rc < 0) {
		log_debug("msg=\"grpc TLS handshake failed\" reason=\"%s\"", gnutls_strerror(rc));
		/* The client hears why (bad certificate, no shared cipher...)
		 * when the socket takes the alert at once. */
		if (gnutls_error_is_fatal(rc))
			gnutls_alert_send_appropriate(t->session, rc);
		return -1;
	}
	/* gRPC is HTTP/2 only: a client that did not offer "h2" is refused
	 * (GnuTLS's mandatory flag covers a list without it, this one no list). */
	if (gnutls_alpn_get_selected_protocol(t->session, &proto) < 0 || proto.size != 2 ||
	    memcmp(proto.data, "h2", 2) != 0) {
		log_debug("msg=\"grpc TLS connection refused\" reason=\"the client did not offer ALPN h2\"");
		gnutls_alert_send(t->session, GNUTLS_AL_FATAL, GNUTLS_A_NO_APPLICATION_PROTOCOL);
		return -1;
	}
	t->identity = tls_peer_identity(t->session);
	t->done = true;
	return 1;
}

bool grpc_tls_wants_write(const struct grpc_tls *t)
{
	return gnutls_record_get_direction(t->session) == 1;
}

/* A GnuTLS result as read()/write() give theirs. */
static ssize_t as_syscall(ssize_t rc)
{
	if (rc >= 0)
		return rc;
	if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED) {
		errno = EAGAIN;
		return -1;
	}
	if (rc == GNUTLS_E_PREMATURE_TERMINATION)
		return 0;               /* closed without close_notify: an end all the same */
	log_debug("msg=\"grpc TLS record error\" reason=\"%s\"", gnutls_strerror((int)rc));
	errno = EPROTO;
	return -1;
}

ssize_t grpc_tls_read(struct grpc_tls *t, void *buf, size_t n)
{
	return as_syscall(gnutls_record_recv(t->session, buf, n));
}

ssize_t grpc_tls_write(struct grpc_tls *t, const void *buf, size_t n)
{
	return as_syscall(gnutls_record_send(t->session, buf, n));
}

bool grpc_tls_pending(const struct grpc_tls *t)
{
	return t->done && gnutls_record_check_pending(t->session) > 0;
}

const char *grpc_tls_identity(const struct grpc_tls *t)
{
	return t->identity;
}

void grpc_tls_free(struct grpc_tls *t)
{
	if (!t)
		return;
	if (t->done)
		gnutls_bye(t->session, GNUTLS_SHUT_WR);     /* non-blocking: best effort */
	gnutls_deinit(t->session);
	tls_release(t->creds);
	free(t->identity);
	free(t);
}
