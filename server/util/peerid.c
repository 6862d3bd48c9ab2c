/* peerid: the names of a verified client certificate, one a line. */
#include "server/util/peerid.h"

#include <stdlib.h>
#include <string.h>

/* The value of a line after its type ("CN=", "DNS:", ...), or NULL when
 * the line has no known type. */
static const char *line_value(const char *line, size_t len, size_t *vlen)
{
	static const char *const types[] = { "CN=", "DNS:", "IP:", "email:", "URI:" };

	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		size_t t = strlen(types[i]);

		if (len >= t && memcmp(line, types[i], t) == 0) {
			*vlen = len - t;
			return line + t;
		}
	}
	return NULL;
}

bool peerid_matches(const char *identity, const char *want)
{
	size_t wlen, want_vlen = 0;
	bool typed;

	if (!identity || !want || !*want)
		return false;
	wlen = strlen(want);
	typed = line_value(want, wlen, &want_vlen) != NULL;
	if (typed && want_vlen == 0)
		return false;           /* "CN=" names nobody, not a certificate without a CN */
	for (const char *p = identity; *p;) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p), vlen;
		const char *v = line_value(p, len, &vlen);

		if (typed ? (len == wlen && memcmp(p, want, len) == 0) :
			    (v && vlen == wlen && memcmp(v, want, vlen) == 0))
			return true;
		if (!nl)
			break;
		p = nl + 1;
	}
	return false;
}

const char *peerid_cn(const char *identity, char *buf, size_t n)
{
	size_t len;

	if (!n)
		return buf;
	buf[0] = '\0';
	if (!identity || strncmp(identity, "CN=", 3) != 0)
		return buf;
	len = strcspn(identity + 3, "\n");
	if (len >= n)
		len = n - 1;
	memcpy(buf, identity + 3, len);
	buf[len] = '\0';
	return buf;
}

int peerid_append(char **identity, const char *type, const char *value, size_t len)
{
	size_t old = *identity ? strlen(*identity) : 0, tlen = strlen(type);
	size_t sep = *identity ? 1 : 0;
	char *grown = realloc(*identity, old + sep + tlen + len + 1);
	char *out;

	if (!grown)
		return -1;
	out = grown + old;
	if (sep)
		*out++ = '\n';
	memcpy(out, type, tlen);
	out += tlen;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)value[i];

		*out++ = c < 0x20 || c == 0x7f ? '?' : (char)c;
	}
	*out = '\0';
	*identity = grown;
	return 0;
}
