/* svc sinks: put, list, get, delete.
 *
 * The store keeps the configuration as sent (secrets included); every
 * answer masks the secret and adds the forwarder's health. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/agent.h"
#include "server/sink/sink.h"
#include "server/svc/svc_int.h"
#include "server/util/log.h"
#include "store/store.h"

#define SECRET_MASK "********"

static Graind__Sink *unpack_sink(const struct store_sink *row, struct gerr *err)
{
	Graind__Sink *sink = graind__sink__unpack(NULL, row->config_len, row->config);

	if (!sink)
		gerr_set(err, 500, "stored configuration of sink %s does not decode", row->name);
	return sink;
}

/* The sink as answered: its name and owner ("": none), the secret
 * masked, the health added. */
static int sink_from_row(struct agent *ag, const struct store_sink *row, const char *owner,
			 Graind__Sink **out, struct gerr *err)
{
	Graind__Sink *sink = unpack_sink(row, err);

	*out = sink;
	if (!sink)
		return -1;
	if (pbmsg_set_string(&sink->name, row->name) < 0)
		return gerr_set(err, 500, "out of memory");
	sink->generation = row->generation;
	if (owner[0] && pbmsg_set_string(&sink->managed_by, owner) < 0)
		return gerr_set(err, 500, "out of memory");
	if (sink->kind_case == GRAIND__SINK__KIND_S3 && sink->s3->secret_access_key[0] &&
	    pbmsg_set_string(&sink->s3->secret_access_key, SECRET_MASK) < 0)
		return gerr_set(err, 500, "out of memory");
	if (sink->health) {
		pbmsg_free(&sink->health->base);
		sink->health = NULL;
	}
	return ag->sinks ? sinks_health(ag->sinks, sink, row, err) : 0;
}

static int stored_sink(struct agent *ag, const char *name, Graind__Sink **out,
		       struct gerr *err)
{
	struct store_sink row = { 0 };
	char owner[SVC_OWNER_MAX];
	int ret;

	if (store_sink_get(ag->store, name, &row, err) < 0)
		return -1;
	ret = store_managed_get(ag->store, STORE_MANAGED_SINK, name, owner, sizeof(owner), err);
	if (ret == 0)
		ret = sink_from_row(ag, &row, owner, out, err);
	store_sink_clear(&row);
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
	pbmsg_free(old ? &old->base : NULL);
	store_sink_clear(&row);
	return ret;
}

/* The configuration as stored: the sink as sent, named, without health. */
static int pack_config(const Graind__Sink *sink, const char *name, uint8_t **out, size_t *len,
		       struct gerr *err)
{
	Graind__Sink copy = *sink;

	copy.health = NULL;
	copy.name = (char *)name;
	copy.managed_by = (char *)"";     /* status, not configuration */
	copy.generation = 0;
	*len = graind__sink__get_packed_size(&copy);
	*out = malloc(*len ? *len : 1);
	if (!*out)
		return gerr_set(err, 500, "out of memory");
	graind__sink__pack(&copy, *out);
	return 0;
}

int svc_put_sink(struct svc_call *call, const Graind__PutSinkRequest *req,
		 Graind__Sink **resp, struct gerr *err)
{
	struct agent *ag = call->agent;
	Graind__S3Sink s3 = GRAIND__S3_SINK__INIT;
	Graind__Sink sink;
	uint8_t *packed = NULL;
	size_t packed_len;
	int ret = -1;

	if (svc_check_name("sink", req->name, err) < 0)
		return -1;
	if (!req->sink)
		return gerr_set(err, 400, "sink is missing: send the Sink to store");
	if (req->sink->name[0] && strcmp(req->sink->name, req->name) != 0)
		return gerr_set(err, 400, "name '%s' in the body differs from '%s' in the path",
				req->sink->name, req->name);
	/* A shallow copy: the masked secret may be replaced by the stored one. */
	sink = *req->sink;
	if (sink.kind_case == GRAIND__SINK__KIND_S3) {
		s3 = *sink.s3;
		s3.secret_access_key = strdup(s3.secret_access_key);
		if (!s3.secret_access_key)
			return gerr_set(err, 500, "out of memory");
		sink.s3 = &s3;
		if (keep_masked_secret(ag, req->name, &s3, err) < 0)
			goto out;
	}
	if (svc_check_owner(call, STORE_MANAGED_SINK, req->name, err) < 0 ||
	    sinks_check_config(&sink, err) < 0 ||
	    pack_config(&sink, req->name, &packed, &packed_len, err) < 0 ||
	    store_sink_put(ag->store, req->name, packed, packed_len, req->if_generation,
			   &call->created, err) < 0 ||
	    svc_record_owner(call, STORE_MANAGED_SINK, req->name, false, err) < 0)
		goto out;
	log_info("msg=\"sink stored\" sink=%s kind=%s created=%d", req->name,
		 sink.kind_case == GRAIND__SINK__KIND_S3 ? "s3" : "statsd", call->created);
	sinks_changed(ag->sinks, req->name);
	ret = stored_sink(ag, req->name, resp, err);
out:
	if (s3.secret_access_key != protobuf_c_empty_string)
		free(s3.secret_access_key);
	free(packed);
	return ret;
}

int svc_get_sink(struct svc_call *call, const Graind__GetSinkRequest *req,
		 Graind__Sink **resp, struct gerr *err)
{
	if (svc_check_name("sink", req->name, err) < 0)
		return -1;
	return stored_sink(call->agent, req->name, resp, err);
}

int svc_delete_sink(struct svc_call *call, const Graind__DeleteSinkRequest *req,
		    Graind__Empty **resp, struct gerr *err)
{
	if (svc_check_name("sink", req->name, err) < 0 ||
	    SVC_NEW(resp, &graind__empty__descriptor, err) < 0 ||
	    svc_check_owner(call, STORE_MANAGED_SINK, req->name, err) < 0 ||
	    store_sink_delete(call->agent->store, req->name, err) < 0 ||
	    svc_record_owner(call, STORE_MANAGED_SINK, req->name, true, err) < 0) {
		/* A sink its file's owner row outlived (a crash between the two). */
		if (err->status == 404 && call->manager)
			svc_record_owner(call, STORE_MANAGED_SINK, req->name, true,
					 &(struct gerr){ 0 });
		return -1;
	}
	sinks_changed(call->agent->sinks, req->name);
	log_info("msg=\"sink deleted\" sink=%s", req->name);
	return 0;
}

/* The sinks as answered, built as the store walks them. */
struct sink_list {
	struct agent *agent;
	Graind__Sink **sinks;
	size_t n;
	struct gerr *err;
};

static int add_sink(const struct store_sink *row, const char *owner, void *ctx)
{
	struct sink_list *l = ctx;
	Graind__Sink **grown = realloc(l->sinks, (l->n + 1) * sizeof(*grown));

	if (!grown)
		return gerr_set(l->err, 500, "out of memory listing sinks");
	l->sinks = grown;
	if (sink_from_row(l->agent, row, owner, &grown[l->n], l->err) < 0) {
		pbmsg_free((ProtobufCMessage *)grown[l->n]);
		return -1;
	}
	l->n++;
	return 0;
}

int svc_sinks_all(struct agent *ag, Graind__Sink ***out, size_t *n, struct gerr *err)
{
	struct sink_list l = { .agent = ag, .err = err };
	int ret = store_sink_list(ag->store, add_sink, &l);

	if (ret != 0 && !err->msg[0])
		gerr_set(err, 500, "out of memory listing sinks");
	*out = l.sinks;
	*n = l.n;
	return ret ? -1 : 0;
}

int svc_list_sinks(struct svc_call *call, const Graind__ListSinksRequest *req,
		   Graind__ListSinksResponse **resp, struct gerr *err)
{
	(void)req;
	if (SVC_NEW(resp, &graind__list_sinks_response__descriptor, err) < 0)
		return -1;
	return svc_sinks_all(call->agent, &(*resp)->sinks, &(*resp)->n_sinks, err);
}
