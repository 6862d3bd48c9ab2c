/* s3: samples as gzip-compressed NDJSON objects in an S3 bucket.
 *
 * One PUT per batch, signed with AWS SigV4 by libcurl
 * (CURLOPT_AWS_SIGV4 "aws:amz:<region>:s3"), with the body's checksum
 * (x-amz-content-sha256 and Content-MD5 or x-amz-checksum-sha256). The
 * key is derived from the batch: <key_prefix>/<host>/<probe>/dt=YYYY-MM-DD/
 * hour=HH/<first-id>-<last-id>.ndjson.gz (date and hour of the first
 * sample), so a retry rewrites the same object. Each line is one sample as
 * proto3 JSON (the codec). HTTP errors and S3 XML error bodies become a
 * readable message ("403 SignatureDoesNotMatch: The request signature we
 * calculated does not match ..."). */
#ifndef GRAIND_S3_H
#define GRAIND_S3_H

#include <stddef.h>

#include "proto/graind.pb-c.h"
#include "server/util/gerr.h"

/* The object key for a batch of one probe's samples (ids ascending). */
int s3_object_key(const Graind__S3Sink *cfg, const char *host, const char *probe,
		  Graind__Sample *const *samples, size_t n, char *key, size_t key_size);

/* PUT one batch (samples of ONE probe, ids ascending) as one object.
 * *bytes gets the compressed size. Errors: 502 with the S3 error code and
 * message, or the transport error (connection refused, TLS, timeout). */
int s3_put_batch(const Graind__S3Sink *cfg, const char *host, const char *probe,
		 Graind__Sample *const *samples, size_t n, size_t *bytes,
		 struct gerr *err);

#endif
