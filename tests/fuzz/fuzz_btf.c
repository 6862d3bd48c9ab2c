/* Fuzz the BTF checks: btf__new() of arbitrary bytes as a .BTF section,
 * then elfchk_check_btf(). BTF it accepts is what libbpf goes on to use
 * on an upload, so walking it as libbpf does (names, sizes, modifier
 * chains) must stay within its bounds and end. */
#include <stddef.h>
#include <stdint.h>

#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "server/elf/elfchk.h"
#include "server/elf/internal.h"
#include "server/util/log.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_set_level(LOG_ERROR);
	elfchk_init();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gerr err = { 0 };
	struct btf *btf;
	__u32 n;

	btf = btf__new(data, (__u32)size);
	if (!btf)
		return 0;
	if (elfchk_check_btf(btf, &err) < 0) {
		fuzz_check(err.status == 422 && err.msg[0], "%d %s", err.status, err.msg);
		btf__free(btf);
		return 0;
	}
	n = btf__type_cnt(btf);
	for (__u32 id = 1; id < n; id++) {
		const struct btf_type *t = btf__type_by_id(btf, id);

		fuzz_check(t && btf__name_by_offset(btf, t->name_off), "type %u", id);
		btf__resolve_size(btf, id);
		btf__resolve_type(btf, id);
	}
	btf__free(btf);
	return 0;
}
