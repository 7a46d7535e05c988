/*
 * CPU cost of the trace contexts per request (traces__start + traces__finish)
 * in the pattern of the nginx rows: server requests on 16 keep-alive
 * connections, one every 50 µs of event time (20,000 per second), each
 * finished before the next starts. Between two requests the loop reads
 * `stream` bytes of an 8 MiB buffer, as rastro reads the ring buffer between
 * two records, so the contexts' memory competes for the cache as it does in
 * rastro. With `jitter` on (the default), the requests arrive at random
 * (uniform gaps of 0 to 100 µs, 50 on average) and last 10 to 50 µs, so
 * each request's start frees 0, 1 or more finished contexts, as in rastro
 * under real load; 0 gives the old regular pattern (exactly one each).
 *
 *   make bench-bins && build/bench/trace_contexts [stream bytes] [requests] [jitter 0|1]
 *
 * Prints one JSON line; times are wall-clock around the two calls only
 * (CLOCK_MONOTONIC), so the figure moves with the host's load: compare two
 * builds back to back.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config/config.h"
#include "request.h"
#include "traces/traces.h"

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv)
{
	static struct rastro_config cfg;
	static struct request r;
	const size_t ring = 8u << 20;
	size_t stream = argc > 1 ? strtoul(argv[1], NULL, 10) : 1500;
	long n = argc > 2 ? strtol(argv[2], NULL, 10) : 400000;
	int jitter = argc > 3 ? atoi(argv[3]) : 1;
	uint64_t rnd = 0x9E3779B97F4A7C15ull;
	unsigned char *buf = malloc(ring);
	cfg.sampler = SAMPLER_ALWAYS_ON;
	struct traces *t = traces__new(&cfg, 42);
	if (!buf || !t || n <= 0) {
		fprintf(stderr, "usage: trace_contexts [stream bytes] [requests] [jitter 0|1]\n");
		return 2;
	}
	memset(buf, 1, ring);

	uint8_t client[16] = {[10] = 0xff, [11] = 0xff, [12] = 127, [15] = 1};
	uint8_t server[16] = {[10] = 0xff, [11] = 0xff, [12] = 127, [15] = 1};
	uint32_t seq[16] = {0};
	uint64_t ev = 10ull * 1000000000ull, spent = 0;
	size_t off = 0;
	unsigned sum = 0;
	for (long i = 0; i < n; i++) {
		for (size_t k = 0; k < stream; k += 64) {
			sum += buf[off];
			off = (off + 64) & (ring - 1);
		}
		int c = (int)(i & 15);
		request__init(&r, REQ_HTTP_SERVER);
		r.pid = r.tid = 100;
		memcpy(r.tuple.remote_addr, client, 16);
		memcpy(r.tuple.local_addr, server, 16);
		r.tuple.local_port = 8080;
		r.tuple.remote_port = (uint16_t)(40000 + c);
		seq[c] += 90;
		r.request_seq = seq[c];
		r.request_seq_valid = true;
		rnd ^= rnd << 13, rnd ^= rnd >> 7, rnd ^= rnd << 17; /* xorshift64 */
		r.start_ns = ev;
		r.end_ns = ev + (jitter ? 10000 + rnd % 40000 : 30000);
		r.started = true;
		uint64_t a = now_ns();
		traces__start(t, &r);
		traces__finish(t, &r);
		spent += now_ns() - a;
		ev += jitter ? (rnd >> 32) % 100001 : 50000;
	}
	struct traces_stats st;
	traces__stats(t, &st);
	printf("{\"requests\":%ld,\"stream_bytes\":%zu,\"jitter\":%d,\"ns_per_request\":%.1f,"
	       "\"contexts_held\":%llu,\"checksum\":%u}\n",
	       n, stream, jitter, (double)spent / (double)n, (unsigned long long)st.contexts, sum & 1);
	traces__free(t);
	free(buf);
	return 0;
}
