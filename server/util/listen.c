#include "server/util/listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

int listen_tcp(const char *host, unsigned port, char *bound, size_t n, struct gerr *err)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICSERV | AI_PASSIVE };
	struct sockaddr_storage sa;
	socklen_t sa_len = sizeof(sa);
	char port_s[8], addr[INET6_ADDRSTRLEN];
	struct addrinfo *ai;
	int fd, one = 1, rc;

	snprintf(port_s, sizeof(port_s), "%u", port);
	rc = getaddrinfo(host, port_s, &hints, &ai);
	if (rc != 0)
		return gerr_set(err, 500, "cannot resolve listen address %s: %s", host,
				gai_strerror(rc));
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &sa_len) < 0) {
		gerr_set(err, 500, "cannot listen on %s:%u: %s", host, port, strerror(errno));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(ai);
		return -1;
	}
	freeaddrinfo(ai);
	if (sa.ss_family == AF_INET6) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&sa;

		inet_ntop(AF_INET6, &in6->sin6_addr, addr, sizeof(addr));
		snprintf(bound, n, "[%s]:%u", addr, ntohs(in6->sin6_port));
	} else {
		struct sockaddr_in *in4 = (struct sockaddr_in *)&sa;

		inet_ntop(AF_INET, &in4->sin_addr, addr, sizeof(addr));
		snprintf(bound, n, "%s:%u", addr, ntohs(in4->sin_port));
	}
	return fd;
}

int listen_unix(const char *path, const char *flag, struct gerr *err)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct stat sb;
	int fd, ret = -1;

	if (lstat(path, &sb) == 0) {
		if (!S_ISSOCK(sb.st_mode))
			return gerr_set(err, 500, "%s exists and is not a socket; remove it or pass %s",
					path, flag);
		unlink(path);
	}
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0) {
		/* The socket file gets its final mode (0660) as bind creates
		 * it: chmod afterwards would leave a moment with the caller's
		 * umask, when anyone might connect. The umask is the
		 * process's: a file another thread creates meanwhile only
		 * loses the same bits (group execute, everything for others). */
		mode_t old = umask(0117);

		ret = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
		umask(old);
	}
	if (fd < 0 || ret < 0 || listen(fd, 128) < 0) {
		gerr_set(err, 500, "cannot listen on unix socket %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

void listen_peer_text(const struct sockaddr *peer, char *out, size_t n)
{
	const void *addr = NULL;

	if (n)
		out[0] = '\0';
	if (peer && peer->sa_family == AF_INET)
		addr = &((const struct sockaddr_in *)peer)->sin_addr;
	else if (peer && peer->sa_family == AF_INET6)
		addr = &((const struct sockaddr_in6 *)peer)->sin6_addr;
	if (addr && !inet_ntop(peer->sa_family, addr, out, (socklen_t)n) && n)
		out[0] = '\0';
}
