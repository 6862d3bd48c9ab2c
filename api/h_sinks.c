/* Sink handlers: create/replace, list, get, delete.
 *
 * The store keeps the configuration as sent (secrets included); every
 * reply masks the secret and adds the forwarder's health. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/util/pbmsg.h"
#include "api/handlers.h"
#include "proto/graind.pb-c.h"
#include "server/agent.h"
#include "server/sink/sink.h"
#include "server/util/log.h"
#include "store/store.h"

#define SECRET_MASK "********"

static int check_sink_name(const char *name, struct gerr *err)
{
	if (api_check_probe_name(name, err) < 0)
		return gerr_set(err, 400,
				"sink name must match [a-z0-9][a-z0-9._-]{0,62} (lowercase letters, digits, '.', '_', '-')");
	return 0;
}

static Graind__Sink *unpack_sink(const struct store_sink *row, struct gerr *err)
{
	Graind__Sink *sink = graind__sink__unpack(NULL, row->config_len, row->config);

	if (!sink)
		gerr_set(err, 500, "stored configuration of sink %s does not decode", row->name);
	return sink;
}

/* The sink as a reply: its name, the secret masked, the health added. */
static int sink_reply(struct agent *ag, const struct store_sink *row, Graind__Sink **out,
		      struct gerr *err)
{
	Graind__Sink *sink = unpack_sink(row, err);

	*out = sink;
	if (!sink)
		return -1;
	if (pbmsg_set_string(&sink->name, row->name) < 0)
		return gerr_set(err, 500, "out of memory");
	if (sink->kind_case == GRAIND__SINK__KIND_S3 && sink->s3->secret_access_key[0] &&
	    pbmsg_set_string(&sink->s3->secret_access_key, SECRET_MASK) < 0)
		return gerr_set(err, 500, "out of memory");
	if (sink->health) {
		pbmsg_free(&sink->health->base);
		sink->health = NULL;
	}
	return ag->sinks ? sinks_health(ag->sinks, sink, err) : 0;
}

static int reply_sink(struct api_call *call, const char *name, struct gerr *err)
{
	struct store_sink row = { 0 };
	Graind__Sink *sink = NULL;
	int ret;

	if (store_sink_get(call->agent->store, name, &row, err) < 0)
		return -1;
	ret = sink_reply(call->agent, &row, &sink, err);
	store_sink_clear(&row);
	call->reply = sink ? &sink->base : NULL;
	return ret;
}

/* A client that read the sink and sends it back unchanged sends the mask:
 * it means "keep the stored secret". */
static int keep_masked_secret(struct agent *ag, const char *name, Graind__S3Sink *s3,
			      struct gerr *err)
{
	struct store_sink row = { 0 };
	Graind__Sink *old = NULL;
	int ret = -1;

	if (strcmp(s3->secret_access_key, SECRET_MASK) != 0)
		return 0;
	if (store_sink_get(ag->store, name, &row, NULL) == 0)
		old = unpack_sink(&row, err);
	if (!old || old->kind_case != GRAIND__SINK__KIND_S3 || !old->s3->secret_access_key[0]) {
		gerr_set(err, 400, "s3.secretAccessKey is the mask '%s' but sink %s has no stored secret: send the secret itself",
			 SECRET_MASK, name);
		goto out;
	}
	if (pbmsg_set_string(&s3->secret_access_key, old->s3->secret_access_key) < 0) {
		gerr_set(err, 500, "out of memory");
		goto out;
	}
	ret = 0;
out:
	if (old)
		graind__sink__free_unpacked(old, NULL);
	store_sink_clear(&row);
	return ret;
}

/* The configuration as stored: the request without health. */
static int pack_config(Graind__Sink *sink, uint8_t **out, size_t *len, struct gerr *err)
{
	Graind__Sink copy = *sink;

	copy.health = NULL;
	*len = graind__sink__get_packed_size(&copy);
	*out = malloc(*len ? *len : 1);
	if (!*out)
		return gerr_set(err, 500, "out of memory");
	graind__sink__pack(&copy, *out);
	return 0;
}

int h_sink_put(struct api_call *call, struct gerr *err)
{
	Graind__Sink *sink = (Graind__Sink *)call->body;
	struct agent *ag = call->agent;
	const char *name = call->args[0];
	uint8_t *packed = NULL;
	size_t packed_len;
	bool created;
	int ret = -1;

	if (check_sink_name(name, err) < 0)
		return -1;
	if (sink->name[0] && strcmp(sink->name, name) != 0)
		return gerr_set(err, 400, "name '%s' in the body differs from '%s' in the path",
				sink->name, name);
	if (pbmsg_set_string(&sink->name, name) < 0)
		return gerr_set(err, 500, "out of memory");
	if ((sink->kind_case == GRAIND__SINK__KIND_S3 &&
	     keep_masked_secret(ag, name, sink->s3, err) < 0) ||
	    sinks_check_config(sink, err) < 0 ||
	    pack_config(sink, &packed, &packed_len, err) < 0 ||
	    store_sink_put(ag->store, name, packed, packed_len, &created, err) < 0)
		goto out;
	log_info("msg=\"sink stored\" sink=%s kind=%s created=%d", name,
		 sink->kind_case == GRAIND__SINK__KIND_S3 ? "s3" : "statsd", created);
	sinks_changed(ag->sinks, name);
	if (created) {
		call->status = 201;
		snprintf(call->location, sizeof(call->location), "/v1/sinks/%.64s", name);
	}
	ret = reply_sink(call, name, err);
out:
	free(packed);
	return ret;
}

int h_sink_get(struct api_call *call, struct gerr *err)
{
	if (check_sink_name(call->args[0], err) < 0)
		return -1;
	return reply_sink(call, call->args[0], err);
}

int h_sink_delete(struct api_call *call, struct gerr *err)
{
	if (check_sink_name(call->args[0], err) < 0 ||
	    store_sink_delete(call->agent->store, call->args[0], err) < 0)
		return -1;
	sinks_changed(call->agent->sinks, call->args[0]);
	log_info("msg=\"sink deleted\" sink=%s", call->args[0]);
	call->status = 204;
	return 0;
}

/* Rows are copied out first: the store is locked while listing, and the
 * health (which reads the store) is added afterwards. */
struct sink_rows {
	struct store_sink *rows;
	size_t n;
};

static int copy_row(const struct store_sink *row, void *ctx)
{
	struct sink_rows *list = ctx;
	struct store_sink *grown = realloc(list->rows, (list->n + 1) * sizeof(*grown));
	struct store_sink *copy;

	if (!grown)
		return -1;
	list->rows = grown;
	copy = &grown[list->n];
	*copy = *row;
	copy->config = malloc(row->config_len ? row->config_len : 1);
	copy->last_error = strdup(row->last_error);
	if (!copy->config || !copy->last_error) {
		free(copy->config);
		free(copy->last_error);
		return -1;
	}
	memcpy(copy->config, row->config, row->config_len);
	list->n++;
	return 0;
}

int api_sinks_all(struct agent *ag, Graind__Sink ***out, size_t *n, struct gerr *err)
{
	struct sink_rows list = { 0 };
	Graind__Sink **sinks = NULL;
	int ret = -1;

	*out = NULL;
	*n = 0;
	if (store_sink_list(ag->store, copy_row, &list, err) != 0) {
		if (!err->msg[0])
			gerr_set(err, 500, "out of memory listing sinks");
		goto out;
	}
	sinks = calloc(list.n ? list.n : 1, sizeof(*sinks));
	if (!sinks) {
		gerr_set(err, 500, "out of memory");
		goto out;
	}
	*out = sinks;
	for (size_t i = 0; i < list.n; i++) {
		struct gerr one = { 0 };

		if (sink_reply(ag, &list.rows[i], &sinks[*n], &one) == 0) {
			(*n)++;
			continue;
		}
		pbmsg_free((ProtobufCMessage *)sinks[*n]);
		sinks[*n] = NULL;
		/* A sink deleted while the list was built is just not listed. */
		if (one.status != 404) {
			*err = one;
			goto out;
		}
	}
	ret = 0;
out:
	for (size_t i = 0; i < list.n; i++)
		store_sink_clear(&list.rows[i]);
	free(list.rows);
	return ret;
}

int h_sink_list(struct api_call *call, struct gerr *err)
{
	Graind__ListSinksResponse *resp;

	resp = (Graind__ListSinksResponse *)pbmsg_new(&graind__list_sinks_response__descriptor);
	if (!resp)
		return gerr_set(err, 500, "out of memory");
	call->reply = &resp->base;
	return api_sinks_all(call->agent, &resp->sinks, &resp->n_sinks, err);
}
