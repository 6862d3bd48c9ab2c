/* The probe's directory in bpffs: its meta map, its pinned links and the
 * programs a generation lent its links away from. */
#include "server/probe/internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/util/log.h"

int probe_pin_path(char *buf, size_t n, const char *dir, const char *file)
{
	int len = snprintf(buf, n, "%s/%s", dir, file);

	return len < 0 || (size_t)len >= n ? -1 : 0;
}

void probe_map_file(char *buf, size_t n, const char *map)
{
	char *p;

	snprintf(buf, n, "map_%s", map);
	for (p = buf; *p; p++)
		if (*p == '.')
			*p = '-';
}

int probe_meta_read(const char *dir, struct probe_meta *meta)
{
	char path[PATH_MAX];
	uint32_t key = 0;
	int fd, ret;

	if (probe_pin_path(path, sizeof(path), dir, "meta") < 0)
		return -ENAMETOOLONG;
	fd = bpf_obj_get(path);
	if (fd < 0)
		return -errno;
	/* A meta pinned by an older agent is shorter: its tail reads as 0. */
	memset(meta, 0, sizeof(*meta));
	ret = bpf_map_lookup_elem(fd, &key, meta) < 0 ? -errno : 0;
	close(fd);
	if (ret == 0 && (meta->magic != PROBE_META_MAGIC ||
			 meta->n_progs > PROBE_META_MAX_PROGS))
		ret = -EBADMSG;
	return ret;
}

int probe_meta_write(const char *dir, const struct probe_meta *meta,
		     struct gerr *err)
{
	char path[PATH_MAX];
	uint32_t key = 0;
	int fd, ret = -1;

	if (probe_pin_path(path, sizeof(path), dir, "meta") < 0)
		return gerr_set(err, 500, "pin path too long: %s", dir);
	fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "graind_meta", sizeof(key),
			    sizeof(*meta), 1, NULL);
	if (fd < 0)
		return gerr_set(err, 500, "cannot create the meta map: %s", strerror(errno));
	if (bpf_map_update_elem(fd, &key, meta, BPF_ANY) < 0 ||
	    bpf_obj_pin(fd, path) < 0) {
		gerr_set(err, 500, "cannot pin %s: %s", path, strerror(errno));
		goto out;
	}
	ret = 0;
out:
	close(fd);
	return ret;
}

/* What the link pinned at path hooks goes with its pin, except a tc
 * filter, which is removed here. */
static void release_link(const char *path)
{
	int fd = bpf_obj_get(path);

	if (fd >= 0) {
		probe_link_release(fd);
		close(fd);
	}
}

bool probe_fd_is(int fd, const char *kind)
{
	char link[64], target[32];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, target, sizeof(target) - 1);
	if (n < 0)
		return false;
	target[n] = '\0';
	return strncmp(target, "anon_inode:", 11) == 0 && strcmp(target + 11, kind) == 0;
}

int probe_record_new(const char *name, const void *rec, size_t size)
{
	uint32_t key = 0;
	int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, name, sizeof(key), (uint32_t)size, 1, NULL);

	if (fd < 0)
		return -errno;
	if (bpf_map_update_elem(fd, &key, rec, BPF_ANY) < 0) {
		int ret = -errno;

		close(fd);
		return ret;
	}
	return fd;
}

int probe_record_read(int fd, void *rec, size_t size, uint32_t magic)
{
	struct bpf_map_info info;
	uint32_t key = 0, len = sizeof(info);

	if (!probe_fd_is(fd, "bpf-map"))
		return -EBADF;
	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(fd, &info, &len) < 0)
		return -errno;
	if (info.type != BPF_MAP_TYPE_ARRAY || info.value_size != size || info.max_entries != 1)
		return -EBADMSG;
	if (bpf_map_lookup_elem(fd, &key, rec) < 0)
		return -errno;
	return *(const uint32_t *)rec == magic ? 0 : -EBADMSG;
}

uint32_t probe_prog_id(int fd)
{
	struct bpf_prog_info info;
	uint32_t len = sizeof(info);

	memset(&info, 0, sizeof(info));
	return bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.id : 0;
}

int probe_dir_remove(const char *dir, struct gerr *err)
{
	char path[PATH_MAX];
	struct dirent *de;
	DIR *d;
	int ret = 0;

	d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 :
		       gerr_set(err, 500, "cannot open %s: %s", dir, strerror(errno));
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (probe_pin_path(path, sizeof(path), dir, de->d_name) < 0) {
			ret = gerr_set(err, 500, "pin path too long: %s/%s", dir, de->d_name);
			continue;
		}
		if (strncmp(de->d_name, "link_", 5) == 0)
			release_link(path);
		if (unlink(path) < 0)
			ret = gerr_set(err, 500, "cannot unpin %s: %s", path, strerror(errno));
	}
	closedir(d);
	if (ret == 0 && rmdir(dir) < 0 && errno != ENOENT)
		ret = gerr_set(err, 500, "cannot remove %s: %s", dir, strerror(errno));
	return ret;
}

bool probe_dir_exists(const char *dir)
{
	struct stat st;

	return stat(dir, &st) == 0;
}

uint64_t probe_dir_generation(const char *dir, uint64_t *built_us)
{
	struct probe_meta *meta = calloc(1, sizeof(*meta));
	uint64_t gen = 0;

	*built_us = 0;
	if (meta && probe_meta_read(dir, meta) == 0) {
		gen = meta->generation;
		*built_us = meta->built_us;
	}
	free(meta);
	return gen;
}

/* Call fn(dir, "link_x", "undo_link_x") for every undo pin in dir. */
static int for_each_undo(const char *dir,
			 int (*fn)(const char *dir, const char *link, const char *undo))
{
	size_t n = strlen(PROBE_UNDO_PREFIX);
	struct dirent *de;
	DIR *d = opendir(dir);
	int failed = 0;

	if (!d)
		return 0;
	while ((de = readdir(d)))
		if (strncmp(de->d_name, PROBE_UNDO_PREFIX, n) == 0 &&
		    fn(dir, de->d_name + n, de->d_name) < 0)
			failed++;
	closedir(d);
	return failed;
}

static int relink_one(const char *dir, const char *link, const char *undo)
{
	char path[PATH_MAX];
	int link_fd = -1, prog_fd = -1, ret = -EINVAL;

	if (probe_pin_path(path, sizeof(path), dir, link) == 0 &&
	    (link_fd = bpf_obj_get(path)) >= 0 &&
	    probe_pin_path(path, sizeof(path), dir, undo) == 0 &&
	    (prog_fd = bpf_obj_get(path)) >= 0)
		ret = probe_link_set_prog(link_fd, prog_fd);
	else
		ret = -errno;
	if (link_fd >= 0)
		close(link_fd);
	if (prog_fd >= 0)
		close(prog_fd);
	/* ENOLINK: the interface is gone, and with it what to put back. */
	if (ret < 0 && ret != -ENOLINK) {
		log_error("msg=\"cannot put the previous program back on a link\" dir=%s link=%s error=\"%s\"",
			  dir, link, strerror(-ret));
		return -1;
	}
	return 0;
}

int probe_undo_relink(const char *dir)
{
	return for_each_undo(dir, relink_one);
}

static int unpin_one(const char *dir, const char *link, const char *undo)
{
	char path[PATH_MAX];

	(void)link;
	if (probe_pin_path(path, sizeof(path), dir, undo) < 0 || unlink(path) < 0) {
		log_error("msg=\"cannot unpin\" dir=%s file=%s error=\"%s\"", dir, undo,
			  strerror(errno));
		return -1;
	}
	return 0;
}

void probe_undo_unpin(const char *dir)
{
	for_each_undo(dir, unpin_one);
}

void probe_old_links_free(struct probe_old_link *links, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		close(links[i].fd);
	free(links);
}

static int open_link(const char *dir, const char *file, struct probe_old_link *l)
{
	char path[PATH_MAX];

	if (probe_pin_path(path, sizeof(path), dir, file) < 0)
		return -1;
	l->fd = bpf_obj_get(path);
	if (l->fd < 0)
		return -1;
	if (probe_link_info(l->fd, &l->info) < 0) {
		close(l->fd);
		return -1;
	}
	snprintf(l->file, sizeof(l->file), "%s", file);
	l->taken = false;
	return 0;
}

int probe_old_links_open(const char *dir, struct probe_old_link **out,
			 size_t *n)
{
	struct probe_old_link *links = NULL, *grown;
	struct dirent *de;
	size_t count = 0;
	DIR *d;

	*out = NULL;
	*n = 0;
	d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((de = readdir(d))) {
		if (strncmp(de->d_name, "link_", 5) != 0)
			continue;
		grown = realloc(links, (count + 1) * sizeof(*links));
		if (!grown) {
			closedir(d);
			probe_old_links_free(links, count);
			return -ENOMEM;
		}
		links = grown;
		if (open_link(dir, de->d_name, &links[count]) == 0)
			count++;
	}
	closedir(d);
	*out = links;
	*n = count;
	return 0;
}

/* "link_<prog>" or "link_<prog>-<cpu>" */
static bool is_link_of(const char *file, const char *prog)
{
	size_t n = strlen(prog);

	return strncmp(file, "link_", 5) == 0 && strncmp(file + 5, prog, n) == 0 &&
	       (file[5 + n] == '\0' || file[5 + n] == '-');
}

size_t probe_prog_links(const char *dir, const char *prog,
			struct probe_link_info *first, bool *all_alive)
{
	struct probe_old_link l;
	struct dirent *de;
	size_t count = 0;
	DIR *d;

	*all_alive = true;
	memset(first, 0, sizeof(*first));
	d = opendir(dir);
	if (!d)
		return 0;
	while ((de = readdir(d))) {
		if (!is_link_of(de->d_name, prog) || open_link(dir, de->d_name, &l) < 0)
			continue;
		if (!probe_link_alive(&l.info))
			*all_alive = false;
		if (count++ == 0 || strcmp(de->d_name + 5, prog) == 0)
			*first = l.info;
		close(l.fd);
	}
	closedir(d);
	if (!count)
		*all_alive = false;
	return count;
}

bool probe_adoptable(const char *dir, uint64_t generation, bool strict)
{
	struct probe_meta *meta = calloc(1, sizeof(*meta));
	struct probe_link_info first;
	bool alive, ok = false;
	uint32_t i;

	if (!meta || probe_meta_read(dir, meta) < 0 || meta->generation != generation ||
	    !meta->n_progs)
		goto out;
	for (i = 0; i < meta->n_progs; i++) {
		struct probe_meta_prog *mp = &meta->progs[i];

		mp->name[PROBE_PROG_NAME_MAX - 1] = '\0';
		if (probe_prog_links(dir, mp->name, &first, &alive) != mp->n_links || !alive)
			goto out;
		/* A link lent to a newer generation that never became final. */
		if (strict && mp->prog_id && first.prog_id != mp->prog_id)
			goto out;
	}
	ok = true;
out:
	free(meta);
	return ok;
}
