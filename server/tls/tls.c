/* tls: credentials loaded, checked, swapped on reload; server sessions
 * readied with them. */
#include "server/tls/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <gnutls/x509.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "server/util/file.h"
#include "server/util/log.h"
#include "server/util/peerid.h"

struct tls_creds {
	atomic_int refs;
	gnutls_certificate_credentials_t cred;
};

struct tls {
	const char *cert_path, *key_path, *ca_path;     /* cfg's; ca "" without mTLS */
	bool optional;                  /* --client-cert optional */
	gnutls_priority_t prio;
	pthread_mutex_t lock;
	struct tls_creds *cur;          /* a reference of its own */
};

static void creds_put(struct tls_creds *c)
{
	if (c && atomic_fetch_sub(&c->refs, 1) == 1) {
		gnutls_certificate_free_credentials(c->cred);
		free(c);
	}
}

void tls_release(struct tls_creds *creds)
{
	creds_put(creds);
}

/* The whole file, with a message naming the flag when it cannot be read. */
static int read_pem(const char *flag, const char *path, gnutls_datum_t *out, struct gerr *err)
{
	struct stat sb;
	char *buf;
	size_t len;

	if (stat(path, &sb) < 0)
		return gerr_set(err, 500, "%s %s: %s", flag, path, strerror(errno));
	if (S_ISDIR(sb.st_mode))
		return gerr_set(err, 500, "%s %s: is a directory, not a PEM file", flag, path);
	if (file_read(path, &buf, &len) < 0)
		return gerr_set(err, 500, "%s %s: cannot read it: %s", flag, path, strerror(errno));
	if (len > 1024 * 1024) {
		free(buf);
		return gerr_set(err, 500, "%s %s: over 1 MiB, not a PEM file", flag, path);
	}
	out->data = (unsigned char *)buf;
	out->size = (unsigned)len;
	return 0;
}

static void utc(time_t t, char *buf, size_t n)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The leaf certificate of the chain must be valid now: a server that
 * starts with an expired one would only fail every handshake. */
static int check_validity(const char *path, const gnutls_datum_t *pem, struct gerr *err)
{
	gnutls_x509_crt_t *list = NULL;
	unsigned n = 0;
	time_t now = time(NULL), from, until;
	char when[32];
	int rc, ret = 0;

	rc = gnutls_x509_crt_list_import2(&list, &n, pem, GNUTLS_X509_FMT_PEM, 0);
	if (rc < 0 || n == 0)
		return gerr_set(err, 500, "--tls-cert %s: not a PEM certificate (%s)", path,
				rc < 0 ? gnutls_strerror(rc) : "no certificate in it");
	from = gnutls_x509_crt_get_activation_time(list[0]);
	until = gnutls_x509_crt_get_expiration_time(list[0]);
	if (until != (time_t)-1 && until < now) {
		utc(until, when, sizeof(when));
		ret = gerr_set(err, 500, "--tls-cert %s: the certificate expired on %s", path, when);
	} else if (from != (time_t)-1 && from > now) {
		utc(from, when, sizeof(when));
		ret = gerr_set(err, 500, "--tls-cert %s: the certificate is not valid before %s",
			       path, when);
	}
	for (unsigned i = 0; i < n; i++)
		gnutls_x509_crt_deinit(list[i]);
	gnutls_free(list);
	return ret;
}

static int creds_load(const struct tls *tls, struct tls_creds **out, struct gerr *err)
{
	gnutls_datum_t cert = { 0 }, key = { 0 }, ca = { 0 };
	struct tls_creds *c = NULL;
	int rc, ret = -1;

	if (read_pem("--tls-cert", tls->cert_path, &cert, err) < 0 ||
	    read_pem("--tls-key", tls->key_path, &key, err) < 0 ||
	    (tls->ca_path[0] && read_pem("--client-ca", tls->ca_path, &ca, err) < 0) ||
	    check_validity(tls->cert_path, &cert, err) < 0)
		goto out;
	c = calloc(1, sizeof(*c));
	if (!c || gnutls_certificate_allocate_credentials(&c->cred) < 0) {
		gerr_set(err, 500, "out of memory");
		goto out;
	}
	atomic_init(&c->refs, 1);
	rc = gnutls_certificate_set_x509_key_mem2(c->cred, &cert, &key, GNUTLS_X509_FMT_PEM,
						  NULL, 0);
	if (rc == GNUTLS_E_CERTIFICATE_KEY_MISMATCH) {
		gerr_set(err, 500, "--tls-key %s does not match the certificate in --tls-cert %s",
			 tls->key_path, tls->cert_path);
		goto out;
	}
	if (rc < 0) {
		gerr_set(err, 500, "--tls-key %s: not a usable PEM private key for --tls-cert %s (%s)",
			 tls->key_path, tls->cert_path, gnutls_strerror(rc));
		goto out;
	}
	if (tls->ca_path[0]) {
		rc = gnutls_certificate_set_x509_trust_mem(c->cred, &ca, GNUTLS_X509_FMT_PEM);
		if (rc <= 0) {
			gerr_set(err, 500, "--client-ca %s: no PEM certificate in it (%s)", tls->ca_path,
				 rc < 0 ? gnutls_strerror(rc) : "none found");
			goto out;
		}
	}
	*out = c;
	c = NULL;
	ret = 0;
out:
	if (c) {
		if (c->cred)
			gnutls_certificate_free_credentials(c->cred);
		free(c);
	}
	/* The key's bytes do not outlive the call. */
	if (key.data)
		memset(key.data, 0, key.size);
	free(cert.data);
	free(key.data);
	free(ca.data);
	return ret;
}

int tls_load(const struct config *cfg, struct tls **out, struct gerr *err)
{
	struct tls *tls;
	const char *errpos = NULL;
	int rc;

	*out = NULL;
	if (!cfg->tls_cert[0])
		return 0;
	tls = calloc(1, sizeof(*tls));
	if (!tls)
		return gerr_set(err, 500, "out of memory");
	tls->cert_path = cfg->tls_cert;
	tls->key_path = cfg->tls_key;
	tls->ca_path = cfg->client_ca;
	tls->optional = cfg->client_cert_optional;
	pthread_mutex_init(&tls->lock, NULL);
	rc = gnutls_priority_init(&tls->prio, TLS_PRIORITIES, &errpos);
	if (rc < 0) {
		gerr_set(err, 500, "TLS priorities refused by GnuTLS at '%s': %s",
			 errpos ? errpos : "?", gnutls_strerror(rc));
		goto fail;
	}
	if (creds_load(tls, &tls->cur, err) < 0)
		goto fail;
	*out = tls;
	return 0;
fail:
	tls_free(tls);
	return -1;
}

void tls_free(struct tls *tls)
{
	if (!tls)
		return;
	creds_put(tls->cur);
	if (tls->prio)
		gnutls_priority_deinit(tls->prio);
	pthread_mutex_destroy(&tls->lock);
	free(tls);
}

int tls_reload(struct tls *tls, struct gerr *err)
{
	struct tls_creds *c, *old;

	if (creds_load(tls, &c, err) < 0)
		return -1;
	pthread_mutex_lock(&tls->lock);
	old = tls->cur;
	tls->cur = c;
	pthread_mutex_unlock(&tls->lock);
	creds_put(old);         /* freed when its last connection closes */
	return 0;
}

bool tls_mutual(const struct tls *tls)
{
	return tls && tls->ca_path[0];
}

/* Inside the handshake, with the client's Certificate message: it must
 * chain to --client-ca, be valid now and (when it says) be meant for
 * client authentication. Non-zero aborts the handshake. */
static int verify_client(gnutls_session_t session, bool required)
{
	gnutls_typed_vdata_st purpose = {
		.type = GNUTLS_DT_KEY_PURPOSE_OID, .data = (unsigned char *)GNUTLS_KP_TLS_WWW_CLIENT,
	};
	unsigned n = 0, status = 0;
	int rc;

	if (!gnutls_certificate_get_peers(session, &n) || n == 0) {
		if (required)
			log_debug("msg=\"TLS client refused\" reason=\"no client certificate\"");
		return required ? GNUTLS_E_NO_CERTIFICATE_FOUND : 0;
	}
	rc = gnutls_certificate_verify_peers(session, &purpose, 1, &status);
	if (rc < 0 || status != 0) {
		gnutls_datum_t why = { 0 };

		if (rc >= 0)
			gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &why, 0);
		log_debug("msg=\"TLS client refused\" reason=\"%s\"",
			  rc < 0 ? gnutls_strerror(rc) : why.data ? (char *)why.data : "?");
		gnutls_free(why.data);
		return GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR;
	}
	return 0;
}

static int verify_required(gnutls_session_t session)
{
	return verify_client(session, true);
}

static int verify_optional(gnutls_session_t session)
{
	return verify_client(session, false);
}

int tls_session_prepare(struct tls *tls, gnutls_session_t session, struct tls_creds **held)
{
	struct tls_creds *c;

	*held = NULL;
	pthread_mutex_lock(&tls->lock);
	c = tls->cur;
	atomic_fetch_add(&c->refs, 1);
	pthread_mutex_unlock(&tls->lock);
	if (gnutls_priority_set(session, tls->prio) < 0 ||
	    gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, c->cred) < 0) {
		creds_put(c);
		return -1;
	}
	if (tls->ca_path[0]) {
		gnutls_certificate_server_set_request(session, tls->optional ? GNUTLS_CERT_REQUEST :
								      GNUTLS_CERT_REQUIRE);
		gnutls_session_set_verify_function(session, tls->optional ? verify_optional :
									    verify_required);
	}
	*held = c;
	return 0;
}

/* One subject alternative name as a peerid line; unknown kinds are left out. */
static int append_san(char **id, int type, const char *v, size_t len)
{
	char ip[INET6_ADDRSTRLEN];

	switch (type) {
	case GNUTLS_SAN_DNSNAME:
		return peerid_append(id, "DNS:", v, len);
	case GNUTLS_SAN_RFC822NAME:
		return peerid_append(id, "email:", v, len);
	case GNUTLS_SAN_URI:
		return peerid_append(id, "URI:", v, len);
	case GNUTLS_SAN_IPADDRESS:
		if ((len != 4 && len != 16) ||
		    !inet_ntop(len == 4 ? AF_INET : AF_INET6, v, ip, sizeof(ip)))
			return 0;
		return peerid_append(id, "IP:", ip, strlen(ip));
	}
	return 0;
}

char *tls_peer_identity(gnutls_session_t session)
{
	const gnutls_datum_t *peers;
	gnutls_x509_crt_t crt;
	unsigned n = 0;
	char buf[1024], *id = NULL;
	size_t len = sizeof(buf);
	int rc;

	peers = gnutls_certificate_get_peers(session, &n);
	if (!peers || n == 0 || gnutls_x509_crt_init(&crt) < 0)
		return NULL;
	if (gnutls_x509_crt_import(crt, &peers[0], GNUTLS_X509_FMT_DER) < 0)
		goto out;
	rc = gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, buf, &len);
	if (peerid_append(&id, "CN=", buf, rc < 0 ? 0 : len) < 0)
		goto fail;
	for (unsigned seq = 0;; seq++) {
		len = sizeof(buf);
		rc = gnutls_x509_crt_get_subject_alt_name(crt, seq, buf, &len, NULL);
		if (rc == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE)
			break;
		if (rc == GNUTLS_E_SHORT_MEMORY_BUFFER)
			continue;       /* a name over 1 KiB is nobody's */
		if (rc < 0)
			break;
		if (append_san(&id, rc, buf, len) < 0)
			goto fail;
	}
out:
	gnutls_x509_crt_deinit(crt);
	if (id) {
		char line[512];
		size_t i;

		for (i = 0; id[i] && i + 1 < sizeof(line); i++)
			line[i] = id[i] == '\n' ? ',' : id[i] == '"' ? '\'' : id[i];
		line[i] = '\0';
		log_debug("msg=\"TLS client certificate\" identity=\"%s\"", line);
	}
	return id;
fail:
	free(id);
	id = NULL;
	goto out;
}
