/* peerid: who a verified client certificate names, as one string the
 * transports hand to the auth layer (svc_call.client_identity).
 *
 * The string holds one name a line: the subject's common name first as
 * "CN=<name>" (a line "CN=" when the subject has none), then each subject
 * alternative name as "DNS:<name>", "IP:<address>", "email:<address>" or
 * "URI:<uri>", in certificate order. Control characters in a name are
 * replaced by '?', so a line is always one name. NULL, not "", means the
 * connection carries no verified client certificate (plain, a unix
 * socket, or TLS without one).
 *
 * These functions only read the string; they know nothing of TLS. */
#ifndef GRAIND_UTIL_PEERID_H
#define GRAIND_UTIL_PEERID_H

#include <stdbool.h>
#include <stddef.h>

/* Whether identity names `want`: a typed name ("CN=agent-1",
 * "DNS:host.example", "IP:10.0.0.5", ...) matches that line exactly; an
 * untyped one ("agent-1") matches the common name or any SAN's value.
 * False for a NULL identity, an empty `want` or an empty name ("CN="). */
bool peerid_matches(const char *identity, const char *want);

/* The subject common name into buf (size n, cut to fit), "" when there
 * is none or identity is NULL; returns buf. */
const char *peerid_cn(const char *identity, char *buf, size_t n);

/* Append one name line ("DNS:" and its value) to the malloc'd string
 * *identity (NULL starts it); -1 when out of memory. For producers. */
int peerid_append(char **identity, const char *type, const char *value, size_t len);

#endif
