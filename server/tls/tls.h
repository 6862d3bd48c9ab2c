/* tls: the agent's TLS credentials and the server side of a TLS session,
 * with GnuTLS, shared by both transports (REST through libmicrohttpd in
 * server/http.c, gRPC through server/grpc/grpc_tls.c).
 *
 * tls_load() reads --tls-cert, --tls-key and --client-ca and checks them
 * (readable, PEM, the key matches the certificate, the certificate valid
 * now), so start-up fails with a message naming the file and the fault.
 * tls_reload() (SIGHUP) reads them again and, when they check out, makes
 * them the credentials of every handshake from then on; a connection
 * already open keeps the ones it began with, since its session holds a
 * reference to them. A failed reload keeps the old credentials.
 *
 * tls_session_prepare() readies a new server session: the priorities
 * (TLS 1.3 and 1.2 only, AEAD ciphers with forward secrecy: TLS_PRIORITIES),
 * the current credentials, and with --client-ca the certificate request
 * (required, or optional with --client-cert optional) and a verify step
 * inside the handshake: a client whose certificate does not verify
 * against the CA (another CA, expired, not for client use) never
 * completes it, so it never sends a request. No session tickets are
 * issued, so every connection is verified against the credentials it
 * was opened with. */
#ifndef GRAIND_TLS_H
#define GRAIND_TLS_H

#include <stdbool.h>
#include <gnutls/gnutls.h>

#include "server/config.h"
#include "server/util/gerr.h"

/* TLS 1.3 and 1.2 only; AES-GCM and ChaCha20-Poly1305 (AEAD: no CBC,
 * no RC4, no SHA-1 MACs), 256-bit keys first; ECDHE key exchange only
 * (forward secrecy) on X25519, P-256 or P-384, X25519 first: the group
 * clients send a key share for, so a TLS 1.3 handshake needs no retry
 * (P-384 first cost a HelloRetryRequest and a slower curve: 6x fewer
 * handshakes per second); the server's order of preference. */
#define TLS_PRIORITIES "SECURE256:+SECURE128:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:" \
	"-CIPHER-ALL:+AES-256-GCM:+CHACHA20-POLY1305:+AES-128-GCM:-MAC-ALL:+AEAD:" \
	"-KX-ALL:+ECDHE-ECDSA:+ECDHE-RSA:" \
	"-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1:%SERVER_PRECEDENCE"

struct tls;
struct tls_creds;               /* one generation of credentials, counted */

/* Load and check the files cfg names. *out is NULL (and 0 returned) when
 * TLS is not configured; else the caller's, to free with tls_free() after
 * every session that used it is gone. */
int tls_load(const struct config *cfg, struct tls **out, struct gerr *err);
void tls_free(struct tls *tls);

/* Read the files again; on success new handshakes use them. On failure
 * the credentials stay as they were and err says why. */
int tls_reload(struct tls *tls, struct gerr *err);

/* Whether clients are asked for a certificate (--client-ca). */
bool tls_mutual(const struct tls *tls);

/* Ready a new server session (before its handshake) as the header says.
 * *held gets the credentials' reference, to drop with tls_release()
 * after gnutls_deinit(session). -1 when GnuTLS refuses (out of memory). */
int tls_session_prepare(struct tls *tls, gnutls_session_t session, struct tls_creds **held);
void tls_release(struct tls_creds *creds);

/* The names of the session's verified client certificate
 * (server/util/peerid.h), malloc'd; NULL when it sent none. Call after
 * the handshake. */
char *tls_peer_identity(gnutls_session_t session);

#endif
