/* grainctl prometheus-targets: the hosts as a Prometheus file_sd document.
 *
 * One target group per host, so that each series carries the host it came
 * from (label graind_host, the URL as given) besides Prometheus' own
 * `instance`. Scheme and metrics path come from the URL (a path prefix in
 * front of a reverse proxy is kept). Unix socket hosts cannot be scraped
 * and are left out with a warning. No host is contacted: a target that is
 * down belongs in the file, where Prometheus reports it as down.
 *
 * The file is replaced atomically (written beside it, then renamed), since
 * Prometheus re-reads it whenever it changes. */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/grainctl/ctl.h"

enum { OPT_FILE, OPT_LABELS };

/* "a=b,c=d" into labels; -1 with a message when a pair is malformed. */
static int add_labels(json_t *labels, const char *spec)
{
	char *copy = strdup(spec), *save = NULL;
	int ret = 0;

	if (!copy)
		return -1;
	for (char *pair = strtok_r(copy, ",", &save); pair; pair = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(pair, '=');

		if (!eq || eq == pair) {
			fprintf(stderr, "grainctl: --labels: '%s' is not NAME=VALUE\n", pair);
			ret = -1;
			break;
		}
		*eq = '\0';
		if (strncmp(pair, "__", 2) == 0) {
			fprintf(stderr, "grainctl: --labels: '%s': names starting with __ are "
				"Prometheus' own\n", pair);
			ret = -1;
			break;
		}
		json_object_set_new(labels, pair, json_string(eq + 1));
	}
	free(copy);
	return ret;
}

/* The target group of one http(s) host, or NULL with a message. */
static json_t *target_group(const char *host, const json_t *extra)
{
	char *scheme = NULL, *name = NULL, *port = NULL, *path = NULL, *target = NULL;
	char *metrics_path = NULL;
	json_t *group = NULL;
	CURLU *u = curl_url();

	if (!u || curl_url_set(u, CURLUPART_URL, host, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &name, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK) {
		fprintf(stderr, "grainctl: %s: not a URL Prometheus can scrape\n", host);
		goto out;
	}
	size_t plen = strlen(path);

	while (plen && path[plen - 1] == '/')
		plen--;
	if (asprintf(&target, "%s:%s", name, port) < 0 ||
	    asprintf(&metrics_path, "%.*s/metrics", (int)plen, path) < 0)
		goto out;
	json_t *labels = json_deep_copy(extra);

	json_object_set_new(labels, "graind_host", json_string(host));
	json_object_set_new(labels, "__scheme__", json_string(scheme));
	json_object_set_new(labels, "__metrics_path__", json_string(metrics_path));
	group = json_pack("{s:[s], s:o}", "targets", target, "labels", labels);
out:
	curl_free(scheme);
	curl_free(name);
	curl_free(port);
	curl_free(path);
	curl_url_cleanup(u);
	free(target);
	free(metrics_path);
	return group;
}

static int write_document(const json_t *doc, const char *file)
{
	char *tmp = NULL;
	int ret = -1;

	if (!file || strcmp(file, "-") == 0) {
		if (json_dumpf(doc, stdout, JSON_INDENT(2)) == 0 && fputc('\n', stdout) != EOF)
			return 0;
		fprintf(stderr, "grainctl: cannot write the targets: %s\n", strerror(errno));
		return -1;
	}
	if (asprintf(&tmp, "%s.tmp.%d", file, (int)getpid()) < 0)
		return -1;
	if (json_dump_file(doc, tmp, JSON_INDENT(2)) != 0)
		fprintf(stderr, "grainctl: cannot write %s\n", tmp);
	else if (rename(tmp, file) < 0)
		fprintf(stderr, "grainctl: cannot rename %s to %s: %s\n", tmp, file,
			strerror(errno));
	else
		ret = 0;
	if (ret < 0)
		unlink(tmp);
	free(tmp);
	return ret;
}

static int prometheus_targets(struct ctl *ctl, const struct ctl_args *a)
{
	json_t *doc = json_array(), *extra = json_object();
	int ret = CTL_EXIT_USAGE;
	size_t groups = 0;

	if (!doc || !extra)
		goto out;
	if (a->opt[OPT_LABELS] && add_labels(extra, a->opt[OPT_LABELS]) < 0)
		goto out;
	for (size_t i = 0; i < ctl->nhosts; i++) {
		const char *host = ctl->hosts[i];
		json_t *group;

		if (strncmp(host, "unix:", 5) == 0) {
			fprintf(stderr, "grainctl: %s: a unix socket cannot be scraped; left out\n",
				host);
			continue;
		}
		if (!(group = target_group(host, extra)))
			goto out;
		json_array_append_new(doc, group);
		groups++;
	}
	if (!groups) {
		fprintf(stderr, "grainctl: prometheus-targets: no http(s) host given\n");
		goto out;
	}
	ret = write_document(doc, a->opt[OPT_FILE]) == 0 ? CTL_EXIT_OK : CTL_EXIT_HOST;
out:
	json_decref(doc);
	json_decref(extra);
	return ret;
}

const struct ctl_cmd ctl_prom_cmds[] = {
	{ "prometheus-targets", NULL, "[-f FILE] [--labels NAME=VALUE,...]",
	  "write the hosts as a Prometheus file_sd target file (no host is contacted)", 0, 0,
	  { [OPT_FILE] = { "file", 'f', true, "where to write it (default: standard output)" },
	    [OPT_LABELS] = { "labels", 0, true, "labels given to every target" } },
	  prometheus_targets },
	{ 0 }
};
