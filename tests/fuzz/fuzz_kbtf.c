/* Fuzz the cut of the kernel's BTF (server/elf/kbtf.c): the CO-RE
 * relocations of arbitrary bytes that pass the layout check, walked
 * against the running kernel's BTF, read once. A cut must be BTF that
 * libbpf parses back, with no more types than the kernel's. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <bpf/btf.h>

#include "server/elf/elfchk.h"
#include "server/elf/internal.h"
#include "server/util/log.h"
#include "tests/fuzz/fuzz.h"

static struct btf *kernel;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_set_level(LOG_ERROR);
	elfchk_init();
	kernel = btf__load_vmlinux_btf();
	fuzz_check(kernel, "the kernel's BTF cannot be read");
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gerr err = { 0 };
	const char *why = NULL;
	const void *raw;
	struct btf *cut, *back;
	uint32_t raw_len;
	int has_btf, has_btf_ext;

	if (elfchk_check_layout(data, size, &has_btf, &has_btf_ext, &err) < 0)
		return 0;
	cut = elfchk_btf_cut(data, size, kernel, &why);
	if (!cut) {
		fuzz_check(why && why[0], "no cut, and no reason");
		return 0;
	}
	fuzz_check(btf__type_cnt(cut) <= btf__type_cnt(kernel), "a cut larger than the kernel's");
	raw = btf__raw_data(cut, &raw_len);
	fuzz_check(raw, "a cut without raw data");
	back = btf__new(raw, raw_len);
	fuzz_check(back, "libbpf does not parse a cut back");
	fuzz_check(btf__type_cnt(back) == btf__type_cnt(cut), "a cut changed when parsed back");
	btf__free(back);
	btf__free(cut);
	return 0;
}
