#include "metrics/self_metrics.h"

#include <string.h>

#include "capture/capture.h"
#include "protocols/conntrack.h"

static void begin(struct self_family *f, const char *name, const char *help, const char *unit,
		  bool counter)
{
	f->name = name;
	f->help = help;
	f->unit = unit;
	f->counter = counter;
	f->nsamples = 0;
}

static void sample2(struct self_family *f, const char *k1, const char *v1, const char *k2,
		    const char *v2, uint64_t value)
{
	if (f->nsamples == SELF_MAX_SAMPLES)
		return;
	struct self_sample *s = &f->samples[f->nsamples++];
	s->nlabels = k2 ? 2 : k1 ? 1 : 0;
	s->label_key[0] = k1;
	s->label_value[0] = v1;
	s->label_key[1] = k2;
	s->label_value[1] = v2;
	s->value = value;
}

static void sample1(struct self_family *f, const char *k, const char *v, uint64_t value)
{
	sample2(f, k, v, NULL, NULL, value);
}

static void sample(struct self_family *f, uint64_t value)
{
	sample2(f, NULL, NULL, NULL, NULL, value);
}

static void emit(struct self_family *f, self_family_fn fn, void *ctx)
{
	if (f->nsamples)
		fn(ctx, f);
}

static void collect_pipeline(const struct self_stats *st, struct self_family *f, self_family_fn fn,
			     void *ctx)
{
	begin(f, "rastro_events_received", "Data events delivered by the kernel.", "{event}", true);
	sample(f, st->kernel[RASTRO_STAT_DATA_EVENTS]);
	emit(f, fn, ctx);

	begin(f, "rastro_event_records_received",
	      "Ring buffer records that carried the data events (one holds a thread's run of "
	      "events, up to 4 KiB).", "{record}", true);
	sample(f, st->kernel[RASTRO_STAT_DATA_RECORDS]);
	emit(f, fn, ctx);

	begin(f, "rastro_events_merged",
	      "sendfile() calls added to the event before them on the same socket: their bytes "
	      "continue it (not a loss).", "{event}", true);
	sample(f, st->kernel[RASTRO_STAT_DATA_MERGED]);
	emit(f, fn, ctx);

	begin(f, "rastro_event_batches_taken_over",
	      "Batches of data events one CPU held back that another delivered, so that a "
	      "connection's events stay in order when its thread moves between CPUs (not a loss).",
	      "{record}", true);
	sample(f, st->kernel[RASTRO_STAT_BATCH_TAKEN_OVER]);
	emit(f, fn, ctx);

	begin(f, "rastro_events_sent_ahead",
	      "Data events the kernel sent ahead of earlier events of their connection that "
	      "another CPU kept held past every try (its vCPU descheduled), each naming the batch "
	      "that holds them; and threads that moved on while such a CPU kept their events "
	      "(not a loss: the agent reads them in order).", "{event}", true);
	sample(f, st->kernel[RASTRO_STAT_SENT_AHEAD]);
	emit(f, fn, ctx);

	begin(f, "rastro_events_reordered",
	      "Data events the agent held back until the batch with earlier events of their "
	      "connection was read: those sent ahead, and that connection's events that came "
	      "meanwhile (not a loss).", "{event}", true);
	sample(f, st->conns.reordered);
	emit(f, fn, ctx);

	begin(f, "rastro_events_unordered",
	      "Data events parsed before earlier events of their connection: their batch did not "
	      "come within a second (lost, and counted as such, or later still) or the agent ran "
	      "out of room to hold them. The parser may find a gap there.", "{event}", true);
	sample(f, st->conns.unordered);
	emit(f, fn, ctx);

	begin(f, "rastro_late_reads",
	      "Reads of bytes a peer sent before it reset the connection, read by the process "
	      "after the reset (a response followed by a reset): added to that connection, "
	      "whose kernel state the reset had ended.", "{event}", true);
	sample(f, st->conns.late_reads);
	emit(f, fn, ctx);

	begin(f, "rastro_late_connections_not_kept",
	      "Connections a peer's reset ended with bytes the process had not read yet that the "
	      "agent could not keep for those reads (1,024 kept already, or out of memory): "
	      "their request is reported unanswered even if the process reads a response.",
	      "{connection}", true);
	sample(f, st->conns.late_not_kept);
	emit(f, fn, ctx);

	begin(f, "rastro_events_lost",
	      "Events lost, by where (kernel: never delivered; parser: dropped or cut short "
	      "by a protocol parser) and cause.",
	      "{event}", true);
	static const int kernel_causes[] = {RASTRO_LOSS_RINGBUF_FULL, RASTRO_LOSS_CONN_MAP_FULL,
					    RASTRO_LOSS_CONTROL_RINGBUF,
					    RASTRO_LOSS_TRACED_MAP_FULL};
	for (size_t i = 0; i < sizeof(kernel_causes) / sizeof(kernel_causes[0]); i++)
		sample2(f, "source", "kernel", "cause", capture__stat_name(kernel_causes[i]),
			st->kernel[kernel_causes[i]]);
	sample2(f, "source", "kernel", "cause", "program_skipped", st->kernel_skipped_runs);
	for (int i = 0; i < CONN__COUNTERS; i++)
		sample2(f, "source", "parser", "cause", conntrack__counter_name(i),
			st->conns.counters[i]);
	emit(f, fn, ctx);

	begin(f, "rastro_payloads_truncated",
	      "Data events whose payload was cut at ebpf.capture_bytes.", "{event}", true);
	sample(f, st->kernel[RASTRO_STAT_TRUNCATED]);
	emit(f, fn, ctx);

	begin(f, "rastro_unknown_service_events",
	      "Data events of a process no longer known to discovery (dropped).", "{event}", true);
	sample(f, st->conns.unknown_service_events);
	emit(f, fn, ctx);

	begin(f, "rastro_requests", "Request records produced by the protocol parsers.",
	      "{request}", true);
	sample(f, st->conns.requests);
	emit(f, fn, ctx);

	begin(f, "rastro_requests_ignored", "Requests dropped by routes.ignored_patterns.",
	      "{request}", true);
	sample(f, st->requests_ignored);
	emit(f, fn, ctx);

	begin(f, "rastro_connections", "TCP connections tracked now.", "{connection}", false);
	sample(f, st->conns.connections);
	emit(f, fn, ctx);

	begin(f, "rastro_instrumented_processes", "Processes instrumented now.", "{process}",
	      false);
	sample(f, st->traced_processes);
	emit(f, fn, ctx);

	begin(f, "rastro_bpf_map_bytes", "Kernel memory held by rastro's BPF maps.", "By", false);
	sample(f, st->bpf_map_bytes);
	emit(f, fn, ctx);

	begin(f, "rastro_kernel_connections",
	      "TCP connections of traced processes the kernel keeps state for now.", "{connection}",
	      false);
	sample(f, st->kernel_connections);
	emit(f, fn, ctx);

	begin(f, "rastro_kernel_connections_settled",
	      "Connections whose kernel state moved from the hash map, where it starts, to the "
	      "socket's own storage when they carried a second request (socket hooks).",
	      "{connection}", true);
	sample(f, st->kernel[RASTRO_STAT_CONN_SETTLED]);
	emit(f, fn, ctx);

	begin(f, "rastro_connections_muted",
	      "Connections without a protocol rastro knows (TLS, WebSocket, a server it has no "
	      "parser for) whose data the kernel stopped sending.",
	      "{connection}", true);
	sample(f, st->conns.muted);
	emit(f, fn, ctx);

	begin(f, "rastro_connections_mute_failed",
	      "Connections without a known protocol the kernel could not be told to stop sending "
	      "(its map full): their data keeps coming and is ignored.",
	      "{connection}", true);
	sample(f, st->conns.mute_failed);
	emit(f, fn, ctx);

	begin(f, "rastro_events_muted",
	      "Data events of muted connections the kernel did not send (not a loss).", "{event}",
	      true);
	sample(f, st->kernel[RASTRO_STAT_MUTED]);
	emit(f, fn, ctx);
}

/* One family over both OTLP clients, labelled by signal. */
#define CLIENT_FAMILY(field)                                                                       \
	do {                                                                                       \
		if (st->has_metrics_client)                                                        \
			sample1(f, "signal", "metrics", st->metrics_client.field);                 \
		if (st->has_traces_client)                                                         \
			sample1(f, "signal", "traces", st->traces_client.field);                   \
		emit(f, fn, ctx);                                                                  \
	} while (0)

static void collect_export(const struct self_stats *st, struct self_family *f, self_family_fn fn,
			   void *ctx)
{
	begin(f, "rastro_export_requests", "OTLP export attempts (retries included).", "{request}",
	      true);
	CLIENT_FAMILY(requests_sent);

	begin(f, "rastro_export_failures",
	      "OTLP export attempts that failed: retryable (429, 502, 503, 504, connection "
	      "errors: retried) or permanent (dropped).",
	      "{request}", true);
	for (int i = 0; i < 2; i++) {
		bool has = i ? st->has_traces_client : st->has_metrics_client;
		const struct otlp_client_stats *c = i ? &st->traces_client : &st->metrics_client;
		const char *signal = i ? "traces" : "metrics";
		if (!has)
			continue;
		sample2(f, "signal", signal, "cause", "retryable", c->failed_retryable);
		sample2(f, "signal", signal, "cause", "permanent", c->failed_permanent);
	}
	emit(f, fn, ctx);

	begin(f, "rastro_export_retries", "OTLP export requests sent again.", "{request}", true);
	CLIENT_FAMILY(retries);

	begin(f, "rastro_export_dropped_requests",
	      "OTLP export requests given up: queue full (otel_export.max_queue_bytes) or "
	      "retried for too long.",
	      "{request}", true);
	for (int i = 0; i < 2; i++) {
		bool has = i ? st->has_traces_client : st->has_metrics_client;
		const struct otlp_client_stats *c = i ? &st->traces_client : &st->metrics_client;
		const char *signal = i ? "traces" : "metrics";
		if (!has)
			continue;
		sample2(f, "signal", signal, "cause", "queue_full", c->dropped_queue_full);
		sample2(f, "signal", signal, "cause", "expired", c->dropped_expired);
	}
	emit(f, fn, ctx);

	begin(f, "rastro_export_dropped_items",
	      "Spans or data points in OTLP export requests that were dropped.", "{item}", true);
	CLIENT_FAMILY(dropped_items);

	begin(f, "rastro_export_rejected_items",
	      "Spans or data points the backend rejected in a partial success.", "{item}", true);
	CLIENT_FAMILY(rejected_items);

	begin(f, "rastro_export_queue_bytes", "Encoded OTLP requests waiting to be sent.", "By",
	      false);
	CLIENT_FAMILY(queue_bytes);

	begin(f, "rastro_export_queue_requests", "OTLP requests waiting to be sent.", "{request}",
	      false);
	CLIENT_FAMILY(queue_requests);

	if (!st->has_traces_client)
		return;
	begin(f, "rastro_spans_queued", "Spans waiting for a batch.", "{span}", false);
	sample(f, st->spans_queued);
	emit(f, fn, ctx);

	begin(f, "rastro_spans_dropped",
	      "Spans dropped before export: otel_traces_export.max_queue_size reached "
	      "(queue_full), or no memory to queue or encode them (out_of_memory).", "{span}",
	      true);
	sample1(f, "cause", "queue_full", st->spans_dropped_queue);
	sample1(f, "cause", "out_of_memory", st->spans_dropped_no_memory);
	emit(f, fn, ctx);

	begin(f, "rastro_spans_sampled_out", "Spans not exported by the sampler's decision.",
	      "{span}", true);
	sample(f, st->spans_sampled_out);
	emit(f, fn, ctx);

	begin(f, "rastro_spans_exported", "Spans handed to the OTLP client.", "{span}", true);
	sample(f, st->spans_exported);
	emit(f, fn, ctx);

	begin(f, "rastro_span_queue_waits",
	      "Drains of the ring buffer that stopped while the span queue was nearly full, "
	      "leaving the rest of the events in the ring for the exporter to catch up.",
	      "{drain}", true);
	sample(f, st->span_queue_waits);
	emit(f, fn, ctx);
}

static void collect_registry(const struct metrics *m, struct self_family *f, self_family_fn fn,
			     void *ctx)
{
	struct metrics_stats ms;
	metrics__stats(m, &ms);

	begin(f, "rastro_metric_series",
	      "Series per metric now (a kind's body-size histograms share its duration "
	      "histogram's series), overflow series excluded.",
	      "{series}", false);
	for (int k = 0; k < REQ__COUNT; k++)
		sample1(f, "metric", metrics__desc(metrics__kind_metric(k))->name, ms.series[k]);
	emit(f, fn, ctx);

	begin(f, "rastro_metric_overflow",
	      "Records counted in an otel.metric.overflow series because the metric had "
	      "otel_metrics_export.max_series series.",
	      "{request}", true);
	for (int k = 0; k < REQ__COUNT; k++)
		sample1(f, "metric", metrics__desc(metrics__kind_metric(k))->name,
			ms.overflow_records[k]);
	emit(f, fn, ctx);

	begin(f, "rastro_metric_series_expired",
	      "Series removed after otel_metrics_export.ttl without an update.", "{series}", true);
	sample(f, ms.expired_series);
	emit(f, fn, ctx);

	begin(f, "rastro_metric_records_dropped", "Request records the metrics could not count.",
	      "{request}", true);
	for (int i = 0; i < METRICS_DROP__COUNT; i++)
		sample1(f, "cause", metrics__drop_name(i), ms.dropped[i]);
	emit(f, fn, ctx);
}

void self_metrics__collect(const struct self_stats *st, const struct metrics *m, self_family_fn fn,
			   void *ctx)
{
	struct self_family f;
	memset(&f, 0, sizeof(f));
	if (st) {
		collect_pipeline(st, &f, fn, ctx);
		collect_export(st, &f, fn, ctx);
	}
	if (m)
		collect_registry(m, &f, fn, ctx);
}
