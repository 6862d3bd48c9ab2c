/* s3: samples as gzip-compressed NDJSON objects in an S3 bucket.
 *
 * One PUT per batch, signed with AWS SigV4 by libcurl
 * (CURLOPT_AWS_SIGV4 "aws:amz:<region>:s3", region "us-east-1" when
 * empty). The body's SHA-256 goes in x-amz-content-sha256: it is the
 * signed payload hash, and S3 refuses a body that does not match it. The
 * key is derived from the batch: <key_prefix>/<host>/<probe>/dt=YYYY-MM-DD/
 * hour=HH/<first-id>-<last-id>.ndjson.gz (UTC date and hour of the first
 * sample's time, ids in plain decimal), so a retry rewrites the same
 * object. Host and probe are reduced to [A-Za-z0-9._-] (others become
 * '_'); an empty key_prefix adds no leading '/'. Each line is one sample
 * as proto3 JSON (the codec); the object is Content-Type application/gzip.
 *
 * The URL is <endpoint>/<bucket>/<key> with path_style, else
 * <scheme>://<bucket>.<endpoint host>/<key>; an endpoint without a scheme
 * is https. The secret is secret_file's first line when secret_file is
 * set, else secret_access_key. HTTP errors and S3 XML error bodies become
 * a readable message ("403 SignatureDoesNotMatch: The request signature
 * we calculated does not match ...").
 *
 * Both functions are thread-safe. s3_put_batch gives up after 5 s without
 * a connection, 20 s below 64 bytes/s (a peer that accepts and never
 * answers, or answers a byte a second) and 60 s in all, and within about
 * a second of *cancel becoming true (checked by libcurl's progress
 * callback, and never waiting for a name lookup that is under way). It
 * initialises libcurl's global state on first use (once, never cleaned
 * up). */
#ifndef GRAIND_S3_H
#define GRAIND_S3_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "proto/graind.pb-c.h"
#include "server/util/gerr.h"

/* The object key for a batch of one probe's samples (ids ascending) into
 * key (1025 bytes always suffice). Returns -1 for an empty batch, a first
 * sample without an RFC 3339 time, or a key that does not fit key_size or
 * S3's 1024 bytes. */
int s3_object_key(const Graind__S3Sink *cfg, const char *host, const char *probe,
		  Graind__Sample *const *samples, size_t n, char *key, size_t key_size);

/* PUT one batch (samples of ONE probe, ids ascending) as one object.
 * *bytes (may be NULL) gets the compressed size on success, 0 otherwise.
 * `cancel` (may be NULL) aborts the PUT once it is true.
 * Errors: 502 "S3 PUT <key>: 403 <Code>: <Message>" from S3, or with the
 * transport error (connection refused, TLS, timeout); 503 "S3 PUT <key>:
 * cancelled"; 400 for a config without bucket, endpoint host or
 * access_key_id; 500 for an unreadable secret_file (named) or a batch
 * that yields no key. */
int s3_put_batch(const Graind__S3Sink *cfg, const char *host, const char *probe,
		 Graind__Sample *const *samples, size_t n, const atomic_bool *cancel,
		 size_t *bytes, struct gerr *err);

#endif
