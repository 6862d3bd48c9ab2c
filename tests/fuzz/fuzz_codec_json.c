/* Fuzz the codec's JSON decoding of every message type of the schema
 * (byte 0 picks it), with the round trip of tests/fuzz/fuzz_codec.h. */
#include "tests/fuzz/fuzz_codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_codec_one(CODEC_JSON, data, size);
}
