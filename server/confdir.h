/* confdir: the agent applies the documents of --config-dir itself.
 *
 * The same Probe, Sink and ObjectSource documents `grainctl apply` reads (JSON or YAML,
 * server/util/declare.h), applied at start, before any transport serves a
 * write, and again whenever a file of the directory changes (inotify; a
 * pass runs once the directory has been quiet for 200 ms). Each file owns
 * what it names (Probe.managed_by "file:<path>"): the API can read it but
 * not change it (409 naming the file), and it is deleted when the file no
 * longer names it or is removed. A file that does not parse, or whose
 * documents the agent refuses, is reported (status, /metrics, the log once
 * per message) and leaves what it owns as it was; while any file is in
 * error a pass runs every 30 s, so a probe waiting for its interface
 * attaches once it can.
 *
 * confdir is a client of the service layer, like a transport: every change
 * goes through svc_run() as an admin call, and is audited. What already
 * matches its document gets no call at all. Object files are pushed, and
 * object sources fetched (FetchObject, which blocks the pass for as long
 * as the download takes), before any probe is put; objects are not owned
 * and stay when their documents go. */
#ifndef GRAIND_CONFDIR_H
#define GRAIND_CONFDIR_H

#include "server/util/gerr.h"

struct agent;
struct confdir;

/* One pass over `dir` (a missing or unreadable directory fails the start),
 * then follow it on a thread of its own. Publishes into agent->confstat,
 * which must be set. */
int confdir_start(struct agent *ag, const char *dir, struct confdir **out, struct gerr *err);

/* Stop following; no pass is running once it returns. NULL is fine. */
void confdir_stop(struct confdir *cd);

#endif
