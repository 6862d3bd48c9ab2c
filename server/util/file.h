/* file: a whole file read into memory. */
#ifndef GRAIND_UTIL_FILE_H
#define GRAIND_UTIL_FILE_H

#include <stddef.h>

/* The bytes of `path`, malloc'd with a NUL after them, into *buf and *len;
 * -1 with errno set (nothing to free). */
int file_read(const char *path, char **buf, size_t *len);

#endif
