/* elfchk: checks an uploaded eBPF ELF object and describes it; verifies it
 * with the real kernel verifier.
 *
 * Nothing here keeps kernel state: elfchk_verify loads each program as a
 * dry run and closes it again. Both functions take untrusted bytes. */
#ifndef GRAIND_ELFCHK_H
#define GRAIND_ELFCHK_H

#include <stddef.h>

#include "proto/graind.pb-c.h"
#include "server/util/gerr.h"

/* Size of the verifier log kept per rejected program. */
#define ELFCHK_VERIFIER_LOG_MAX (64 * 1024)

/* Install graind's libbpf print hook (libbpf_set_print is process-wide):
 * warnings go to the log as warnings, the rest at debug level; while elfchk
 * works on an upload they are kept for its error messages instead.
 * Also lifts RLIMIT_MEMLOCK for kernels that still charge BPF memory to it.
 * Idempotent and thread-safe; the functions below call it themselves.
 * Call it at startup before any other libbpf use, and nowhere else call
 * libbpf_set_print. */
void elfchk_init(void);

/* Check `buf` (ELF64, EM_BPF, host byte order, sane section table, at
 * least one program, BTF parses when present, libbpf opens it) and fill
 * `obj` (a Graind__Object from pbmsg_new) with license, BTF flags, kernel
 * version, programs, maps and warnings (e.g. "no BTF: maps will be dumped
 * as hex"). Does not set sha256, name, size, created.
 * Fails with 400 (not an ELF, wrong machine/class/endianness, truncated,
 * bad section table: the message names what is wrong, e.g. "object is
 * big-endian; this host is little-endian") or 422 (a well-formed ELF
 * libbpf cannot use: no programs, BTF that does not parse, ...). */
int elfchk_inspect(const void *buf, size_t len, Graind__Object *obj,
		   struct gerr *err);

/* Load every program of the (already inspected) object into the kernel one
 * at a time, record the verdict, and unload it. Fills `report` (a
 * Graind__VerifyReport from pbmsg_new) except sha256. Maps are created
 * for the dry run only: never pinned, never reused from bpffs. Per-program
 * failures are verdicts, not errors; the function fails only when the
 * object cannot be opened at all (400/422 as for elfchk_inspect) or on
 * 500 (out of memory). Needs root (CAP_BPF and CAP_PERFMON). */
int elfchk_verify(const void *buf, size_t len, Graind__VerifyReport *report,
		  struct gerr *err);

#endif
