#!/bin/sh
# Run one fuzz target: tests/fuzz/run.sh NAME, with BUILD and FUZZ_TIME
# (seconds) from the environment. New inputs go to $BUILD/fuzz/NAME/corpus;
# a crash, leak or timeout leaves its input as $BUILD/fuzz/NAME/crash-*,
# leak-* or timeout-* and fails. Prints one summary line.
set -u
name=$1
bin=$BUILD/fuzz/bin/fuzz_$name
out=$BUILD/fuzz/$name
seeds=$BUILD/fuzz/seeds/$name
mkdir -p "$out/corpus" "$seeds"
export GRAIND_TEST_BPF="${GRAIND_TEST_BPF:-$BUILD/tests/bpf}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
"$bin" -max_total_time="$FUZZ_TIME" -timeout=10 -rss_limit_mb=2048 \
	-artifact_prefix="$out/" -print_final_stats=1 "$out/corpus" "$seeds" \
	>"$out/log" 2>&1
rc=$?
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/log" | tail -n 1)
if [ $rc = 0 ]; then
	echo "fuzz $name: ${runs:-?} runs, ok"
	exit 0
fi
found=$(ls -t "$out"/crash-* "$out"/leak-* "$out"/timeout-* "$out"/oom-* 2>/dev/null | head -n 1)
echo "fuzz $name: ${runs:-?} runs, FAILED (exit $rc), reproduce with: $bin ${found:-(no input saved)}"
tail -n 40 "$out/log"
exit 1
