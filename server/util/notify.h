/* notify: systemd's service notifications, written to $NOTIFY_SOCKET (a
 * unix datagram socket; a leading '@' names an abstract one) directly, so
 * that no libsystemd is needed. Without $NOTIFY_SOCKET every call does
 * nothing. */
#ifndef GRAIND_NOTIFY_H
#define GRAIND_NOTIFY_H

#include <stdint.h>

/* Send one message ("READY=1", "STOPPING=1", "WATCHDOG=1", or several
 * "KEY=value" lines); failures are logged at debug level only. */
void notify_send(const char *state);

/* $WATCHDOG_USEC when it is meant for this process ($WATCHDOG_PID unset
 * or ours), else 0: keep-alives are due at least that often. */
uint64_t notify_watchdog_usec(void);

#endif
