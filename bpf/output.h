/* SPDX-License-Identifier: GPL-2.0 */
/* output: what a map feeds when a probe's spec names no output for it,
 * told to graind in the object's BTF as a decl tag on the map
 * ("graind.output=<kind>"). The spec's `outputs` still decide over it. */
#ifndef GRAIND_BPF_OUTPUT_H
#define GRAIND_BPF_OUTPUT_H

/* Not exported: a map the programs keep for themselves (scratch state,
 * timestamps), no samples and no /metrics family. */
#define GRAIND_OUTPUT_NONE __attribute__((btf_decl_tag("graind.output=none")))

/* An array whose integer key is a log2 slot: a metric shown in /metrics
 * as one Prometheus histogram (outputs metric.log2Histogram). */
#define GRAIND_OUTPUT_LOG2_HISTOGRAM \
	__attribute__((btf_decl_tag("graind.output=log2_histogram")))

#endif
