/* Built-in probes: the embedded objects and their registration. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/graind.pb-c.h"
#include "server/builtin.h"
#include "server/objects.h"
#include "server/util/log.h"
#include "store/store.h"

/* Symbols of the embedded objects, from the build's embed.S. */
#define EMBEDDED(name) \
	extern const unsigned char embed_bpf_##name##_start[], embed_bpf_##name##_end[]
EMBEDDED(dns);
EMBEDDED(netstat);
EMBEDDED(syscalls);
EMBEDDED(exec);
EMBEDDED(tcpstate);
EMBEDDED(runqlat);

struct builtin {
	const char *name;
	const char *description;
	const unsigned char *start, *end;
};

#define BUILTIN(name, description) \
	{ #name, description, embed_bpf_##name##_start, embed_bpf_##name##_end }

static const struct builtin builtins[] = {
	BUILTIN(dns, "XDP DNS parser: each query and response on UDP port 53 as an event "
		"(addresses, ports, id, flags, opcode, rcode, qname, qtype); parse errors counted"),
	BUILTIN(netstat, "Packets and bytes by interface, direction, L3 and L4 protocol "
		"(XDP ingress, TC ingress and egress)"),
	BUILTIN(syscalls, "System calls counted by number (raw tracepoint sys_enter), "
		"optionally for one process or cgroup"),
	BUILTIN(exec, "Each program started (tracepoint sched_process_exec): pid, ppid, uid, "
		"comm, filename"),
	BUILTIN(tcpstate, "TCP state changes (tracepoint sock/inet_sock_set_state): "
		"addresses, ports, old and new state, pid, comm"),
	BUILTIN(runqlat, "Run-queue latency: time from wake-up to running as a log2 "
		"histogram in microseconds"),
};

#define N_BUILTINS (sizeof(builtins) / sizeof(builtins[0]))

static size_t builtin_len(const struct builtin *b)
{
	return (size_t)(b->end - b->start);
}

static const struct builtin *find(const char *name)
{
	for (size_t i = 0; i < N_BUILTINS; i++)
		if (strcmp(builtins[i].name, name) == 0)
			return &builtins[i];
	return NULL;
}

size_t builtin_count(void)
{
	return N_BUILTINS;
}

const char *builtin_name(size_t i)
{
	return i < N_BUILTINS ? builtins[i].name : NULL;
}

int builtin_object_sha256(const char *name, char sha256[SHA256_HEX_LEN + 1],
			  struct gerr *err)
{
	const struct builtin *b = find(name);
	char names[256] = "";

	if (!b) {
		for (size_t i = 0; i < N_BUILTINS; i++) {
			size_t used = strlen(names);

			snprintf(names + used, sizeof(names) - used, "%s%s", i ? ", " : "",
				 builtins[i].name);
		}
		return gerr_set(err, 404, "no built-in object named '%s' (built-ins: %s)", name,
				names);
	}
	sha256_hex(b->start, builtin_len(b), sha256);
	return 0;
}

static int register_one(struct store *st, const struct builtin *b, struct gerr *err)
{
	char sha256[SHA256_HEX_LEN + 1];
	bool created;

	sha256_hex(b->start, builtin_len(b), sha256);
	if (objects_add(st, sha256, b->name, b->start, builtin_len(b), true, b->description, NULL,
			&created, err) < 0) {
		/* Built-ins are ours: one that fails the checks is a build problem. */
		gerr_prefix(err, "built-in object %s does not pass the object checks", b->name);
		if (err)
			err->status = 500;
		return -1;
	}
	if (created)
		log_info("msg=\"built-in object stored\" name=%s sha256=%s size=%zu", b->name,
			 sha256, builtin_len(b));
	return 0;
}

int builtin_register(struct store *st, struct gerr *err)
{
	for (size_t i = 0; i < N_BUILTINS; i++)
		if (register_one(st, &builtins[i], err) < 0)
			return -1;
	return 0;
}

int builtin_spec_object(struct store *st, const Graind__ProbeSpec *spec,
			void **bytes, size_t *len, struct gerr *err)
{
	char sha256[SHA256_HEX_LEN + 1];

	switch (spec->object_case) {
	case GRAIND__PROBE_SPEC__OBJECT_BUILTIN:
		if (builtin_object_sha256(spec->builtin, sha256, err) < 0)
			return -1;
		break;
	case GRAIND__PROBE_SPEC__OBJECT_OBJECT_SHA256:
		snprintf(sha256, sizeof(sha256), "%s", spec->object_sha256);
		break;
	default:
		return gerr_set(err, 400, "the spec names no object: set objectSha256 or builtin");
	}
	return store_object_content(st, sha256, bytes, len, err);
}
