/* elfchk_source_line: where a source line the verifier printed is, read
 * from the object's own line info (.BTF.ext), for kernels that print the
 * line without its "@ file:line" (before 6.2).
 *
 * .BTF.ext: a header, then at line_info_off a record size and, per ELF
 * section, {section name, count} followed by that many records of
 * {insn_off, file_name_off, line_off, line_col}; names and the line text
 * are offsets into the BTF string table, the line number is line_col >> 10.
 * The bytes were parsed once by libbpf already; every bound is checked
 * again here all the same. */
#include "server/elf/internal.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <bpf/btf.h>

struct btf_ext_header {
	uint16_t magic;
	uint8_t version;
	uint8_t flags;
	uint32_t hdr_len;
	uint32_t func_info_off;
	uint32_t func_info_len;
	uint32_t line_info_off;
	uint32_t line_info_len;
};

struct line_record {
	uint32_t insn_off;
	uint32_t file_name_off;
	uint32_t line_off;
	uint32_t line_col;
};

#define BTF_MAGIC_NR 0xeB9F

static const char *ltrim(const char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	return s;
}

/* Whether the BTF line `line` is the one the verifier printed as `text`
 * (it prints the line with its indentation trimmed; text is trimmed at
 * both ends). */
static int same_line(const char *line, const char *text)
{
	size_t n = strlen(text);

	line = ltrim(line);
	if (strncmp(line, text, n) != 0)
		return 0;
	return ltrim(line + n)[0] == '\0';
}

/* "file:line" into out; a file name too long for out is cut, never the
 * ":line" that makes it a place. */
static int format_place(const char *file, uint32_t line, char *out, size_t n)
{
	char suffix[16];
	int slen = snprintf(suffix, sizeof(suffix), ":%u", line);

	if ((size_t)slen + 1 >= n)
		return -1;
	snprintf(out, n, "%.*s%s", (int)(n - 1 - (size_t)slen), file, suffix);
	return 0;
}

int elfchk_source_line(const void *buf, size_t len, const struct btf *btf, const char *section,
		       const char *text, char *out, size_t n)
{
	struct btf_ext_header h;
	const unsigned char *ext, *p, *end;
	size_t size;
	uint32_t rec_size;

	out[0] = '\0';
	ext = elfchk_section(buf, len, ".BTF.ext", &size);
	if (!ext || !btf || !text[0] || size < sizeof(h))
		return -1;
	memcpy(&h, ext, sizeof(h));	/* the section need not be aligned */
	if (h.magic != BTF_MAGIC_NR || h.hdr_len > size || h.line_info_off > size - h.hdr_len ||
	    h.line_info_len > size - h.hdr_len - h.line_info_off || h.line_info_len < 4)
		return -1;
	p = ext + h.hdr_len + h.line_info_off;
	end = p + h.line_info_len;
	memcpy(&rec_size, p, 4);
	p += 4;
	if (rec_size < sizeof(struct line_record))
		return -1;
	while ((size_t)(end - p) >= 8) {
		uint32_t sec_off, count;
		const char *sec;

		memcpy(&sec_off, p, 4);
		memcpy(&count, p + 4, 4);
		p += 8;
		if (count > (size_t)(end - p) / rec_size)
			return -1;
		sec = btf__name_by_offset(btf, sec_off);
		for (uint32_t i = 0; sec && strcmp(sec, section) == 0 && i < count; i++) {
			struct line_record r;
			const char *line, *file, *base;

			memcpy(&r, p + (size_t)i * rec_size, sizeof(r));
			line = btf__name_by_offset(btf, r.line_off);
			file = btf__name_by_offset(btf, r.file_name_off);
			if (!line || !file || !same_line(line, text))
				continue;
			base = strrchr(file, '/');
			return format_place(base ? base + 1 : file, r.line_col >> 10, out, n);
		}
		p += (size_t)count * rec_size;
	}
	return -1;
}
