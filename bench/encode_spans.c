/*
 * CPU cost of span export per span: encoding a record into a batch
 * (span_batch__add: semantic-convention attributes + protobuf bytes), wrapping
 * batches into ExportTraceServiceRequests and handing them to the OTLP client
 * (written in place in its request, or gzipped into one, as rastro does).
 * Nothing is sent: the event loop never runs. For comparison, protobuf-c's
 * generic packing of the same message (structs already built, so a lower
 * bound of that approach).
 *
 *   make bench-bins && build/bench/encode_spans [spans] [batch]
 *
 * Times are CPU time of this process (CLOCK_PROCESS_CPUTIME_ID).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/loop.h"
#include "config/config.h"
#include "discover/discover.h"
#include "export/otlp_client.h"
#include "export/otlp_traces.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"
#include "request.h"

#define request_unpack \
	opentelemetry__proto__collector__trace__v1__export_trace_service_request__unpack
#define request_free \
	opentelemetry__proto__collector__trace__v1__export_trace_service_request__free_unpacked
#define request_packed_size \
	opentelemetry__proto__collector__trace__v1__export_trace_service_request__get_packed_size
#define request_pack opentelemetry__proto__collector__trace__v1__export_trace_service_request__pack

static uint64_t cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void set(struct request *r, struct rstr *f, const char *s)
{
	*f = request__store(r, s, strlen(s));
}

static struct service svc = {.id = 1, .refs = 1, .root_pid = 4242, .name = "perlapp",
			     .namespace_ = "poc-ebpf", .instance_id = "host:4242",
			     .exe_path = "/usr/bin/perl"};

/* A typical server span: the seed's Perl app answering GET /products. */
static void make_request(struct request *r)
{
	request__init(r, REQ_HTTP_SERVER);
	r->service = &svc;
	r->pid = r->tid = 4242;
	static const uint8_t lo[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1};
	memcpy(r->tuple.local_addr, lo, 16);
	memcpy(r->tuple.remote_addr, lo, 16);
	r->tuple.local_port = 1337;
	r->tuple.remote_port = 51234;
	r->start_ns = 1000000000ull;
	r->end_ns = 1000350000ull;
	set(r, &r->method, "GET");
	r->method_known = true;
	set(r, &r->path, "/products");
	set(r, &r->host, "localhost:1337");
	set(r, &r->user_agent, "curl/7.88.1");
	r->status = 200;
	r->http_version = 11;
	r->response_body_bytes = 38;
	r->has_response_body_size = true;
	r->has_request_body_size = true;
	memset(r->trace_id, 0xab, 16);
	memset(r->span_id, 0xcd, 8);
	r->sampled = true;
	r->trace_flags = 1;
}

static double run(const struct rastro_config *cfg, struct request *r, int spans, int batch,
		  struct otlp_client *client, size_t *bytes_per_span, double *add_ns)
{
	struct span_batch *b = span_batch__new();
	uint8_t *out = NULL;
	size_t cap = 0, total = 0;
	uint64_t rng = 0x9E3779B97F4A7C15ULL;
	uint64_t add = 0, t0 = cpu_ns();
	for (int i = 0; i < spans;) {
		uint64_t a0 = cpu_ns();
		for (int k = 0; k < batch && i < spans; k++, i++) {
			/* ids are random in real traffic (and do not compress) */
			rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
			memcpy(r->trace_id, &rng, 8);
			memcpy(r->span_id, &rng, 8);
			r->trace_id[8] = (uint8_t)i;
			span_batch__add(b, r, cfg, 1700000000000000000ll);
		}
		add += cpu_ns() - a0;
		size_t len;
		if (client) { /* as rastro does it: written in the client's request */
			len = span_batch__encoded_len(b, cfg);
			uint8_t *body = otlp_client__body_new(len);
			if (!body)
				return -1;
			otlp_client__send_body(client, body, span_batch__write(b, cfg, body),
					       span_batch__count(b));
		} else {
			len = span_batch__encode(b, cfg, &out, &cap);
		}
		total += len;
		span_batch__clear(b);
	}
	double per_span = (double)(cpu_ns() - t0) / spans;
	*bytes_per_span = total / (size_t)spans;
	*add_ns = (double)add / spans;
	free(out);
	span_batch__free(b);
	return per_span;
}

int main(int argc, char **argv)
{
	int spans = argc > 1 ? atoi(argv[1]) : 500000;
	int batch = argc > 2 ? atoi(argv[2]) : 512;
	struct rastro_config cfg;
	char *cargv[] = {"rastro", NULL};
	setenv("RASTRO_OPEN_PORT", "1337", 1);
	if (config__load(&cfg, 1, cargv))
		return 1;
	log__set_level(LOG_ERROR);
	static struct request r;
	make_request(&r);

	struct loop *loop = loop__new();
	struct otlp_signal plain = {.endpoint = "http://127.0.0.1:9/v1/traces", .timeout_ms = 1000};
	struct otlp_signal gz = plain;
	gz.gzip = true;
	const char *why;
	struct otlp_client *c_plain = otlp_client__new(loop, &plain, "traces", 4 << 20, &why);
	struct otlp_client *c_gzip = otlp_client__new(loop, &gz, "traces", 4 << 20, &why);
	size_t bps;
	double add;

	run(&cfg, &r, spans / 10, batch, NULL, &bps, &add); /* warm up */
	printf("span export cost, %d spans, batches of %d (CPU time per span):\n", spans, batch);
	double enc = run(&cfg, &r, spans, batch, NULL, &bps, &add);
	printf("  encode (add + batch request):        %6.0f ns/span (add %0.f), %zu bytes/span\n",
	       enc, add, bps);
	double snd = run(&cfg, &r, spans, batch, c_plain, &bps, &add);
	printf("  encode + queue in the OTLP client:   %6.0f ns/span\n", snd);
	double gzp = run(&cfg, &r, spans, batch, c_gzip, &bps, &add);
	printf("  encode + gzip + queue:               %6.0f ns/span\n", gzp);

	/* protobuf-c's packing of the same request, structs prebuilt */
	struct span_batch *b = span_batch__new();
	for (int k = 0; k < batch; k++)
		span_batch__add(b, &r, &cfg, 1700000000000000000ll);
	uint8_t *out = NULL;
	size_t cap = 0, len = span_batch__encode(b, &cfg, &out, &cap);
	Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest *m =
		request_unpack(NULL, len, out);
	uint8_t *packed = malloc(len);
	int rounds = spans / batch;
	uint64_t t0 = cpu_ns();
	for (int i = 0; i < rounds; i++) {
		if (request_packed_size(m) != len || request_pack(m, packed) != len)
			return 1;
	}
	printf("  protobuf-c get_packed_size + pack:   %6.0f ns/span (structs prebuilt)\n",
	       (double)(cpu_ns() - t0) / ((double)rounds * batch));
	request_free(m, NULL);
	free(packed);
	free(out);
	span_batch__free(b);
	otlp_client__free(c_plain);
	otlp_client__free(c_gzip);
	loop__free(loop);
	config__free(&cfg);
	return 0;
}
