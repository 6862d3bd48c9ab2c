/* file: a whole file read into memory. */
#include "server/util/file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

int file_read(const char *path, char **buf, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *b = NULL, *nb;
	size_t cap = 0, n = 0, got;
	int saved;

	if (!f)
		return -1;
	do {
		if (n + 65536 + 1 > cap) {
			cap = cap ? cap * 2 : 65536 * 2;
			if (!(nb = realloc(b, cap))) {
				errno = ENOMEM;
				goto fail;
			}
			b = nb;
		}
		got = fread(b + n, 1, 65536, f);
		n += got;
	} while (got > 0);
	if (ferror(f)) {
		errno = EIO;
		goto fail;
	}
	fclose(f);
	b[n] = 0;
	*buf = b;
	*len = n;
	return 0;
fail:
	saved = errno;
	free(b);
	fclose(f);
	errno = saved;
	return -1;
}
