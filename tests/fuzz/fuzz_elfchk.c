/* Fuzz the ELF checks of an upload: elfchk_inspect() on arbitrary bytes
 * (layout, BTF, libbpf's open; nothing is loaded into the kernel). What it
 * accepts must describe an object fully: a name for every program and map,
 * and a JSON encoding, as GetObject gives it; and its line info (.BTF.ext)
 * must read safely for each program's section, as the verifier's report
 * reads it on kernels that print no "file:line". */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/graind.pb-c.h"
#include "server/elf/elfchk.h"
#include "server/elf/internal.h"
#include "server/util/codec.h"
#include "server/util/log.h"
#include "server/util/pbmsg.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_set_level(LOG_ERROR);
	elfchk_init();
	return 0;
}

/* Look up a line in every program's section: "file:line" or nothing. */
static void check_line_info(const uint8_t *data, size_t size)
{
	struct gerr err = { 0 };
	struct bpf_object *bo = elfchk_open(data, size, false, NULL, NULL, &err);
	struct bpf_program *prog;
	char where[64];

	if (!bo)
		return;
	bpf_object__for_each_program(prog, bo) {
		if (elfchk_source_line(data, size, bpf_object__btf(bo),
				       bpf_program__section_name(prog), "return 0;", where,
				       sizeof(where)) == 0)
			fuzz_check(strchr(where, ':'), "a line without file:line: %s", where);
		else
			fuzz_check(!where[0], "a failed lookup left %s", where);
	}
	bpf_object__close(bo);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Graind__Object *obj = (Graind__Object *)pbmsg_new(&graind__object__descriptor);
	struct gerr err = { 0 };
	char *json = NULL;
	size_t len;

	fuzz_check(obj, "out of memory");
	if (elfchk_inspect(data, size, obj, &err) == 0) {
		for (size_t i = 0; i < obj->n_programs; i++)
			fuzz_check(obj->programs[i]->name && *obj->programs[i]->name,
				   "program %zu has no name", i);
		for (size_t i = 0; i < obj->n_maps; i++)
			fuzz_check(obj->maps[i]->name, "map %zu has no name", i);
		fuzz_check(!codec_encode(CODEC_JSON, &obj->base, &json, &len, &err),
			   "%s", err.msg);
		check_line_info(data, size);
	} else {
		/* untrusted bytes are the caller's fault, and said so */
		fuzz_check((err.status == 400 || err.status == 422) && err.msg[0],
			   "%d %s", err.status, err.msg);
	}
	free(json);
	pbmsg_free(&obj->base);
	return 0;
}
