/* Shared by the files of server/elf/; not part of the module's contract. */
#ifndef GRAIND_ELF_INTERNAL_H
#define GRAIND_ELF_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include <bpf/libbpf.h>

#include "server/util/gerr.h"

/* Check the ELF structure of untrusted bytes without libelf or libbpf:
 * header, section table, section and symbol bounds, relocations, and that
 * .BTF parses. 400 for a malformed file, 422 for a well-formed one libbpf
 * cannot use. On success, *has_btf and *has_btf_ext tell what was found. */
int elfchk_check_layout(const void *buf, size_t len, int *has_btf,
			int *has_btf_ext, struct gerr *err);

/* Check what libbpf trusts in a parsed BTF: type ids and name offsets in
 * range, and chains of modifiers that end. 422 naming the bad type. */
struct btf;
int elfchk_check_btf(const struct btf *btf, struct gerr *err);

/* The bytes of the first section called `name` (not NOBITS), or NULL.
 * Only valid after elfchk_check_layout() accepted `buf`. */
const void *elfchk_section(const void *buf, size_t len, const char *name,
			   size_t *size);

/* The path of a BTF file holding what the CO-RE relocations of the
 * object in buf can resolve to in the running kernel's BTF, for libbpf's
 * btf_custom_path: made once per object and kept for the rest of the run
 * (kbtf.c). "" when the object is to be loaded against the whole kernel
 * BTF. */
#define ELFCHK_BTF_PATH_MAX 32
void elfchk_kernel_btf(const void *buf, size_t len, char path[ELFCHK_BTF_PATH_MAX]);

/* The cut of `kernel` for the object in buf (checked by
 * elfchk_check_layout()), to free with btf__free(); NULL with *why when
 * the object is to be loaded against the whole BTF. */
struct btf *elfchk_btf_cut(const void *buf, size_t len, const struct btf *kernel,
			   const char **why);

/* "file:line" into out of the first line of `section` in the object's
 * .BTF.ext line info whose text is `text` (as the verifier prints it:
 * trimmed); a long file name is shortened to fit. -1 with out empty when
 * there is none. */
int elfchk_source_line(const void *buf, size_t len, const struct btf *btf, const char *section,
		       const char *text, char *out, size_t n);

/* libbpf's warnings for the calling thread, collected between
 * elfchk_capture_begin() and elfchk_capture_end(). */
struct elfchk_capture {
	char first_warn[256];	/* the first warning: usually the cause */
	char last[256];		/* the last line at any level */
};
void elfchk_capture_begin(struct elfchk_capture *cap);
void elfchk_capture_end(void);

/* Check the layout, then open the object with libbpf. The object refers to
 * `buf`, which must outlive it; close it with bpf_object__close(). The BTF
 * flags are those of elfchk_check_layout(). An object opened `for_load`
 * resolves its CO-RE relocations against elfchk_kernel_btf(). On failure
 * fills err and returns NULL. */
struct bpf_object *elfchk_open(const void *buf, size_t len, bool for_load, int *has_btf,
			       int *has_btf_ext, struct gerr *err);

#endif
