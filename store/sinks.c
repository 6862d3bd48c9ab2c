/* sinks: where samples are sent, and how far each has got. */
#include "store/store.h"
#include "store/store_int.h"

uint64_t store_sink_count(struct store *st)
{
	return store_count(st, STORE_STMT_SINK_COUNT,
			   "SELECT count(*) FROM sinks");
}
