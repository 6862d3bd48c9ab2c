/* The structural checks that run on untrusted bytes before libelf and
 * libbpf see them. Everything is read with memcpy: the buffer may be
 * unaligned and every offset in it is hostile. */
#include "server/elf/internal.h"

#include <elf.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <bpf/btf.h>

#ifndef EM_BPF
#define EM_BPF 247
#endif

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define HOST_ELFDATA ELFDATA2LSB
#define HOST_ORDER "little-endian"
#define OTHER_ORDER "big-endian"
#else
#define HOST_ELFDATA ELFDATA2MSB
#define HOST_ORDER "big-endian"
#define OTHER_ORDER "little-endian"
#endif

struct layout {
	const unsigned char *buf;
	size_t len;
	Elf64_Ehdr eh;
	size_t shnum;
	size_t shstrndx;
	Elf64_Shdr strtab;	/* the section name table */
};

static int in_file(size_t len, uint64_t off, uint64_t size)
{
	return off <= len && size <= len - off;
}

static void read_shdr(const struct layout *l, size_t idx, Elf64_Shdr *sh)
{
	memcpy(sh, l->buf + l->eh.e_shoff + idx * sizeof(*sh), sizeof(*sh));
}

/* The name of section `sh`, already checked to be NUL-terminated. */
static const char *sec_name(const struct layout *l, const Elf64_Shdr *sh)
{
	return (const char *)l->buf + l->strtab.sh_offset + sh->sh_name;
}

static const char *machine_name(unsigned int machine)
{
	switch (machine) {
	case EM_NONE:		return "no machine";
	case EM_386:		return "x86 (i386)";
	case EM_X86_64:		return "x86-64";
	case EM_ARM:		return "32-bit ARM";
	case EM_AARCH64:	return "AArch64";
	case EM_RISCV:		return "RISC-V";
	case EM_PPC:		return "PowerPC";
	case EM_PPC64:		return "PowerPC64";
	case EM_S390:		return "s390";
	case EM_MIPS:		return "MIPS";
	case EM_SPARCV9:	return "SPARC v9";
	case 258:		return "LoongArch";
	default:		return NULL;
	}
}

static const char *type_name(unsigned int type)
{
	switch (type) {
	case ET_NONE:	return "of no type";
	case ET_EXEC:	return "an executable";
	case ET_DYN:	return "a shared object or PIE executable";
	case ET_CORE:	return "a core dump";
	default:	return "of an unknown type";
	}
}

static int check_header(struct layout *l, struct gerr *err)
{
	const unsigned char *id = l->buf;
	const char *machine;

	if (l->len == 0)
		return gerr_set(err, 400, "object is empty");
	if (l->len < SELFMAG || memcmp(id, ELFMAG, SELFMAG) != 0)
		return gerr_set(err, 400, "not an ELF file (bad magic)");
	if (l->len < EI_NIDENT)
		return gerr_set(err, 400, "truncated ELF header: %zu bytes, need %zu",
				l->len, sizeof(Elf64_Ehdr));
	if (id[EI_CLASS] == ELFCLASS32)
		return gerr_set(err, 400, "object is 32-bit ELF; eBPF objects are ELF64");
	if (id[EI_CLASS] != ELFCLASS64)
		return gerr_set(err, 400, "unknown ELF class %u", id[EI_CLASS]);
	if (id[EI_DATA] == ELFDATA2LSB || id[EI_DATA] == ELFDATA2MSB) {
		if (id[EI_DATA] != HOST_ELFDATA)
			return gerr_set(err, 400, "object is %s; this host is %s",
					OTHER_ORDER, HOST_ORDER);
	} else {
		return gerr_set(err, 400, "unknown ELF byte order %u", id[EI_DATA]);
	}
	if (l->len < sizeof(Elf64_Ehdr))
		return gerr_set(err, 400, "truncated ELF header: %zu bytes, need %zu",
				l->len, sizeof(Elf64_Ehdr));
	memcpy(&l->eh, l->buf, sizeof(l->eh));
	if (id[EI_VERSION] != EV_CURRENT || l->eh.e_version != EV_CURRENT)
		return gerr_set(err, 400, "unsupported ELF version %u", l->eh.e_version);
	if (l->eh.e_machine != EM_BPF) {
		machine = machine_name(l->eh.e_machine);
		if (machine)
			return gerr_set(err, 400, "object is for %s (e_machine %u), not eBPF (e_machine %u)",
					machine, l->eh.e_machine, EM_BPF);
		return gerr_set(err, 400, "object is for machine %u, not eBPF (e_machine %u)",
				l->eh.e_machine, EM_BPF);
	}
	if (l->eh.e_type != ET_REL)
		return gerr_set(err, 400, "object is %s (e_type %u); eBPF objects are relocatable (ET_REL, as clang -c writes them)",
				type_name(l->eh.e_type), l->eh.e_type);
	return 0;
}

/* Locate the section header table and the section name table. */
static int check_table(struct layout *l, struct gerr *err)
{
	const Elf64_Ehdr *eh = &l->eh;
	Elf64_Shdr sh0;

	if (eh->e_shoff == 0)
		return gerr_set(err, 400, "object has no section header table");
	if (eh->e_shentsize != sizeof(Elf64_Shdr))
		return gerr_set(err, 400, "section header size is %u bytes, expected %zu",
				eh->e_shentsize, sizeof(Elf64_Shdr));
	if (!in_file(l->len, eh->e_shoff, sizeof(Elf64_Shdr)))
		return gerr_set(err, 400, "section header table at offset %lu lies outside the file (%zu bytes)",
				(unsigned long)eh->e_shoff, l->len);
	read_shdr(l, 0, &sh0);

	/* Extended numbering: the real counts live in section 0. */
	l->shnum = eh->e_shnum ? eh->e_shnum : sh0.sh_size;
	l->shstrndx = eh->e_shstrndx == SHN_XINDEX ? sh0.sh_link : eh->e_shstrndx;
	if (l->shnum < 2)
		return gerr_set(err, 400, "object has no sections");
	if (l->shnum > (l->len - eh->e_shoff) / sizeof(Elf64_Shdr))
		return gerr_set(err, 400, "section header table (%zu entries at offset %lu) runs past the end of the file (%zu bytes)",
				l->shnum, (unsigned long)eh->e_shoff, l->len);
	if (l->shstrndx == SHN_UNDEF || l->shstrndx >= l->shnum)
		return gerr_set(err, 400, "section name table index %zu is out of range (%zu sections)",
				l->shstrndx, l->shnum);
	read_shdr(l, l->shstrndx, &l->strtab);
	if (l->strtab.sh_type != SHT_STRTAB || l->strtab.sh_size == 0)
		return gerr_set(err, 400, "section %zu is not a string table but e_shstrndx names it",
				l->shstrndx);
	if (!in_file(l->len, l->strtab.sh_offset, l->strtab.sh_size))
		return gerr_set(err, 400, "section name table lies outside the file");
	return 0;
}

/* Bounds, names and links of every section header. */
static int check_section(const struct layout *l, size_t idx, struct gerr *err)
{
	const char *names = (const char *)l->buf + l->strtab.sh_offset;
	const char *name;
	Elf64_Shdr sh;

	read_shdr(l, idx, &sh);
	if (sh.sh_name >= l->strtab.sh_size ||
	    !memchr(names + sh.sh_name, '\0', l->strtab.sh_size - sh.sh_name))
		return gerr_set(err, 400, "section %zu: name is not inside the section name table", idx);
	name = names + sh.sh_name;
	if (sh.sh_type != SHT_NOBITS && !in_file(l->len, sh.sh_offset, sh.sh_size))
		return gerr_set(err, 400, "section %zu (%s): %lu bytes at offset %lu lie outside the file (%zu bytes)",
				idx, name, (unsigned long)sh.sh_size,
				(unsigned long)sh.sh_offset, l->len);
	if (sh.sh_link >= l->shnum)
		return gerr_set(err, 400, "section %zu (%s): link to section %u, which does not exist",
				idx, name, sh.sh_link);
	if (sh.sh_type == SHT_PROGBITS && (sh.sh_flags & SHF_EXECINSTR) &&
	    sh.sh_size % sizeof(struct bpf_insn))
		return gerr_set(err, 400, "section %zu (%s): size %lu is not a whole number of 8-byte instructions",
				idx, name, (unsigned long)sh.sh_size);
	return 0;
}

/* Fixed-size entries: entsize as expected and a whole number of them. */
static int check_entries(const struct layout *l, const Elf64_Shdr *sh,
			 size_t entsize, struct gerr *err)
{
	if (sh->sh_entsize != entsize || sh->sh_size % entsize)
		return gerr_set(err, 400, "section %s: entry size %lu and size %lu do not fit %zu-byte entries",
				sec_name(l, sh), (unsigned long)sh->sh_entsize,
				(unsigned long)sh->sh_size, entsize);
	return 0;
}

static int check_symbol(const struct layout *l, const Elf64_Sym *sym,
			size_t idx, const Elf64_Shdr *strs, struct gerr *err)
{
	const char *names = (const char *)l->buf + strs->sh_offset;
	Elf64_Shdr target;

	if (sym->st_name >= strs->sh_size ||
	    !memchr(names + sym->st_name, '\0', strs->sh_size - sym->st_name))
		return gerr_set(err, 400, "symbol %zu: name is not inside the string table", idx);
	if (sym->st_shndx == SHN_UNDEF || sym->st_shndx == SHN_ABS ||
	    sym->st_shndx == SHN_COMMON)
		return 0;
	if (sym->st_shndx >= l->shnum)
		return gerr_set(err, 400, "symbol %zu (%s): section index %u is out of range",
				idx, names + sym->st_name, sym->st_shndx);
	read_shdr(l, sym->st_shndx, &target);
	if (ELF64_ST_TYPE(sym->st_info) == STT_FUNC &&
	    (target.sh_flags & SHF_EXECINSTR) &&
	    (sym->st_value % sizeof(struct bpf_insn) ||
	     !in_file(target.sh_size, sym->st_value, sym->st_size)))
		return gerr_set(err, 400, "function %s lies outside its section %s",
				names + sym->st_name, sec_name(l, &target));
	return 0;
}

static int check_symtab(const struct layout *l, const Elf64_Shdr *sh,
			struct gerr *err)
{
	Elf64_Shdr strs;
	Elf64_Sym sym;
	size_t i;

	if (check_entries(l, sh, sizeof(Elf64_Sym), err) < 0)
		return -1;
	/* Section 0 is never checked, so it cannot be a string table. */
	if (sh->sh_link == 0 || sh->sh_link >= l->shnum)
		return gerr_set(err, 400, "symbol table %s does not link to a string table",
				sec_name(l, sh));
	read_shdr(l, sh->sh_link, &strs);
	if (strs.sh_type != SHT_STRTAB || strs.sh_size == 0 ||
	    !in_file(l->len, strs.sh_offset, strs.sh_size))
		return gerr_set(err, 400, "symbol table %s does not link to a string table",
				sec_name(l, sh));
	for (i = 0; i < sh->sh_size / sizeof(sym); i++) {
		memcpy(&sym, l->buf + sh->sh_offset + i * sizeof(sym), sizeof(sym));
		if (check_symbol(l, &sym, i, &strs, err) < 0)
			return -1;
	}
	return 0;
}

static int check_rel(const struct layout *l, const Elf64_Shdr *sh,
		     struct gerr *err)
{
	Elf64_Shdr symtab, target;
	size_t i, nsyms;
	Elf64_Rel rel;

	if (check_entries(l, sh, sizeof(Elf64_Rel), err) < 0)
		return -1;
	read_shdr(l, sh->sh_link, &symtab);
	if (symtab.sh_type != SHT_SYMTAB)
		return gerr_set(err, 400, "relocation section %s does not link to the symbol table",
				sec_name(l, sh));
	if (sh->sh_info == 0 || sh->sh_info >= l->shnum)
		return gerr_set(err, 400, "relocation section %s applies to section %u, which does not exist",
				sec_name(l, sh), sh->sh_info);
	read_shdr(l, sh->sh_info, &target);
	nsyms = symtab.sh_size / sizeof(Elf64_Sym);
	for (i = 0; i < sh->sh_size / sizeof(rel); i++) {
		memcpy(&rel, l->buf + sh->sh_offset + i * sizeof(rel), sizeof(rel));
		if (ELF64_R_SYM(rel.r_info) >= nsyms)
			return gerr_set(err, 400, "relocation %zu in %s names symbol %lu of %zu",
					i, sec_name(l, sh),
					(unsigned long)ELF64_R_SYM(rel.r_info), nsyms);
		if (target.sh_type != SHT_NOBITS && rel.r_offset >= target.sh_size)
			return gerr_set(err, 400, "relocation %zu in %s points outside section %s",
					i, sec_name(l, sh), sec_name(l, &target));
	}
	return 0;
}

/* Symbol tables and relocations, once every header is known to be sane. */
static int check_tables(const struct layout *l, struct gerr *err)
{
	int symtabs = 0;
	Elf64_Shdr sh;
	size_t i;

	for (i = 1; i < l->shnum; i++) {
		read_shdr(l, i, &sh);
		if (sh.sh_type == SHT_SYMTAB) {
			if (++symtabs > 1)
				return gerr_set(err, 400, "object has more than one symbol table");
			if (check_symtab(l, &sh, err) < 0)
				return -1;
		} else if (sh.sh_type == SHT_REL) {
			if (check_rel(l, &sh, err) < 0)
				return -1;
		}
	}
	if (!symtabs)
		return gerr_set(err, 422, "object has no symbol table (was it stripped?)");
	return 0;
}

static int find_section(const struct layout *l, const char *name,
			Elf64_Shdr *out)
{
	size_t i;

	for (i = 1; i < l->shnum; i++) {
		read_shdr(l, i, out);
		if (out->sh_type != SHT_NOBITS && strcmp(sec_name(l, out), name) == 0)
			return 1;
	}
	return 0;
}

static int check_btf(const struct layout *l, int *has_btf, int *has_btf_ext,
		     struct gerr *err)
{
	struct elfchk_capture cap;
	Elf64_Shdr sh;
	struct btf *btf;
	int ret;

	*has_btf_ext = find_section(l, ".BTF.ext", &sh) && sh.sh_size > 0;
	*has_btf = find_section(l, ".BTF", &sh);
	if (!*has_btf)
		return 0;
	if (sh.sh_size == 0)
		return gerr_set(err, 422, "BTF section does not parse: it is empty");

	elfchk_capture_begin(&cap);
	btf = btf__new(l->buf + sh.sh_offset, sh.sh_size);
	ret = btf ? 0 : -errno;
	elfchk_capture_end();
	if (!btf)
		return gerr_set(err, 422, "BTF section does not parse: %s",
				cap.last[0] ? cap.last : strerror(-ret));
	ret = elfchk_check_btf(btf, err);
	btf__free(btf);
	return ret;
}

/* libbpf 1.1 copies the license up to one byte past its section. */
static int check_license(const struct layout *l, struct gerr *err)
{
	Elf64_Shdr sh;

	if (find_section(l, "license", &sh) &&
	    !memchr(l->buf + sh.sh_offset, '\0', sh.sh_size))
		return gerr_set(err, 422, "license section is not NUL-terminated");
	return 0;
}

int elfchk_check_layout(const void *buf, size_t len, int *has_btf,
			int *has_btf_ext, struct gerr *err)
{
	struct layout l = { .buf = buf, .len = len };
	size_t i;

	if (!buf && len)
		return gerr_set(err, 400, "object is empty");
	if (check_header(&l, err) < 0 || check_table(&l, err) < 0)
		return -1;
	for (i = 1; i < l.shnum; i++)
		if (check_section(&l, i, err) < 0)
			return -1;
	if (check_tables(&l, err) < 0 || check_license(&l, err) < 0)
		return -1;
	return check_btf(&l, has_btf, has_btf_ext, err);
}

const void *elfchk_section(const void *buf, size_t len, const char *name,
			   size_t *size)
{
	struct layout l = { .buf = buf, .len = len };
	Elf64_Shdr sh;

	memcpy(&l.eh, buf, sizeof(l.eh));
	if (check_table(&l, NULL) < 0 || !find_section(&l, name, &sh))
		return NULL;
	*size = sh.sh_size;
	return l.buf + sh.sh_offset;
}
