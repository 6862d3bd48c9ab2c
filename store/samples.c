/* samples: measured values, append-only, waiting for the sinks. */
#include "store/store.h"
#include "store/store_int.h"

uint64_t store_sample_count(struct store *st)
{
	return store_count(st, STORE_STMT_SAMPLE_COUNT,
			   "SELECT count(*) FROM samples");
}
