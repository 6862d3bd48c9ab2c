/* pbmsg: building protobuf-c messages on the heap. */
#include "server/util/pbmsg.h"

#include <stdlib.h>
#include <string.h>

#include "server/util/clock.h"

ProtobufCMessage *pbmsg_new(const ProtobufCMessageDescriptor *desc)
{
	ProtobufCMessage *msg = malloc(desc->sizeof_message);

	if (msg)
		protobuf_c_message_init(desc, msg);
	return msg;
}

void pbmsg_free(ProtobufCMessage *msg)
{
	if (msg)
		protobuf_c_message_free_unpacked(msg, NULL);
}

int pbmsg_take_string(char **field, char *value)
{
	if (!value)
		return -1;
	if (*field && *field != protobuf_c_empty_string)
		free(*field);
	*field = value;
	return 0;
}

int pbmsg_set_string(char **field, const char *value)
{
	return pbmsg_take_string(field, strdup(value ? value : ""));
}

int pbmsg_set_time(char **field, int64_t unix_ms)
{
	char buf[CLOCK_TEXT_MAX];

	clock_format(unix_ms, buf);
	return pbmsg_set_string(field, buf);
}
