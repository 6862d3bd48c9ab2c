/* check_cmd: `graind check`, the database's offline checker (see
 * check_cmd.h). */
#include "server/check_cmd.h"

#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "server/config.h"
#include "store/store.h"

/* Read per step; the command has the machine to itself. */
#define CHECK_STEP_BYTES (64u << 20)

static const char usage[] =
"usage: graind check [--state-dir DIR]\n"
"\n"
"Check the database of graind (DIR/graind.db) for damage, without changing\n"
"it; graind may be running on it. It runs SQLite's full integrity_check,\n"
"hashes every object and checks every sample block's checksum and framing.\n"
"Each damage is one line on stdout, then a summary.\n"
"\n"
"exit status: 0 nothing damaged, 1 damage found, 2 usage or unreadable\n"
"\n"
"options:\n"
"  -d, --state-dir DIR     default " CONFIG_DEFAULT_STATE_DIR "\n"
"  -h, --help              print this help\n";

struct tally {
	unsigned long long database, objects, blocks, samples;
};

static void print_damage(const struct store_damage *d, void *ctx)
{
	struct tally *t = ctx;

	switch (d->kind) {
	case STORE_DAMAGE_DATABASE:
		t->database++;
		printf("database: %s\n", d->what);
		break;
	case STORE_DAMAGE_OBJECT:
		t->objects++;
		printf("object %s: %s; upload it again\n", d->sha256, d->what);
		break;
	case STORE_DAMAGE_SAMPLES:
		t->blocks++;
		t->samples += d->last_id - d->first_id + 1;
		printf("samples %llu..%llu of probe %s: %s; readers skip them\n",
		       (unsigned long long)d->first_id, (unsigned long long)d->last_id,
		       d->probe[0] ? d->probe : "?", d->what);
		break;
	}
}

static int parse(int argc, char **argv, char *db_path, size_t size)
{
	static const struct option options[] = {
		{ "state-dir", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *dir = CONFIG_DEFAULT_STATE_DIR;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "d:h", options, NULL)) != -1) {
		switch (c) {
		case 'd':
			dir = optarg;
			break;
		case 'h':
			fputs(usage, stdout);
			return 1;
		default:
			fputs(usage, stderr);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "graind check: unexpected argument '%s'\n%s", argv[optind], usage);
		return -1;
	}
	if ((size_t)snprintf(db_path, size, "%s/graind.db", dir) >= size) {
		fprintf(stderr, "graind check: --state-dir is too long\n");
		return -1;
	}
	return 0;
}

int check_main(int argc, char **argv)
{
	char db_path[PATH_MAX + 16];
	struct store_scan scan = { 0 };
	struct tally t = { 0 };
	struct store *st;
	struct gerr err;
	int rc;

	rc = parse(argc, argv, db_path, sizeof(db_path));
	if (rc)
		return rc > 0 ? 0 : 2;
	if (store_open_check(db_path, &st, &err) < 0) {
		fprintf(stderr, "graind check: %s\n", err.msg);
		return 2;
	}
	printf("checking %s\n", db_path);
	if (store_check_database(st, print_damage, &t, &err) < 0) {
		t.database++;
		printf("database: %s\n", err.msg);
	}
	while (!scan.done && store_scan_step(st, &scan, CHECK_STEP_BYTES, print_damage, &t, &err) == 0)
		;
	store_close(st);
	if (!scan.done) {
		fprintf(stderr, "graind check: %s\n", err.msg);
		return 2;
	}
	printf("%llu objects, %llu sample blocks, %llu bytes checked: ",
	       (unsigned long long)scan.objects, (unsigned long long)scan.blocks,
	       (unsigned long long)scan.bytes);
	if (!t.database && !t.objects && !t.blocks) {
		printf("nothing damaged\n");
		return 0;
	}
	printf("%llu database problems, %llu damaged objects, %llu damaged sample blocks "
	       "(%llu samples)\n", t.database, t.objects, t.blocks, t.samples);
	return 1;
}
