/* pbmsg: building protobuf-c messages on the heap.
 *
 * Every message the project builds by hand, decodes or hands to the codec
 * is a heap tree: strings, bytes, arrays and sub-messages malloc'd, unset
 * strings pointing at protobuf_c_empty_string. That is the layout
 * protobuf_c_message_free_unpacked() expects, so pbmsg_free() frees any of
 * them, whoever built it. */
#ifndef GRAIND_PBMSG_H
#define GRAIND_PBMSG_H

#include <stdint.h>
#include <protobuf-c/protobuf-c.h>

/* A new message of type `desc`, initialised to its defaults, or NULL when
 * out of memory. Free with pbmsg_free(). */
ProtobufCMessage *pbmsg_new(const ProtobufCMessageDescriptor *desc);

/* Free a message tree (NULL is fine). */
void pbmsg_free(ProtobufCMessage *msg);

/* Replace a string field of a heap message: frees the old value (unless it
 * is the shared empty default) and stores a copy of `value`
 * (pbmsg_set_string) or `value` itself (pbmsg_take_string, which also
 * accepts NULL as "out of memory"). Return -1 when out of memory. */
int pbmsg_set_string(char **field, const char *value);
int pbmsg_take_string(char **field, char *value);

/* A unix-ms time as RFC 3339 UTC ("2026-11-25T13:52:36.123Z") into a
 * string field. Returns -1 when out of memory. */
int pbmsg_set_time(char **field, int64_t unix_ms);

#endif
