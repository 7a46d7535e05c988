#!/usr/bin/env node
// Counting OTLP/HTTP receiver for the soak test. Decodes every /v1/traces and
// /v1/metrics request with the OFFICIAL OpenTelemetry generated code (the
// @opentelemetry/otlp-transformer 0.216.0 installed for tests/e2e/otlp) and
// keeps only counts, so that hours of traffic cost no disk:
//
//   spans[service.name|kind|name]        spans received
//   metrics[service.name|metric|attrs]   the latest cumulative count of each
//                                        histogram data point (or sum value)
//
// GET /counts returns {"requests", "bytes", "decode_errors", "spans",
// "metrics"}. Every request is answered 200 with an empty body.
//   node otlp_count.js PORT
'use strict';

const http = require('http');
const path = require('path');
const zlib = require('zlib');

const root = require(path.join(__dirname, '..', 'e2e', 'otlp', 'node_modules', '@opentelemetry',
	'otlp-transformer', 'build', 'src', 'generated', 'root.js'));
const pb = root.opentelemetry.proto.collector;
const TraceReq = pb.trace.v1.ExportTraceServiceRequest;
const MetricsReq = pb.metrics.v1.ExportMetricsServiceRequest;

const counts = { requests: 0, bytes: 0, decode_errors: 0, spans: {}, metrics: {} };

function attrValue(v) {
	if (!v)
		return '';
	for (const k of ['stringValue', 'intValue', 'boolValue', 'doubleValue'])
		if (v[k] !== undefined && v[k] !== null)
			return String(v[k]);
	return '';
}

function attrs(list) {
	const out = {};
	for (const kv of list || [])
		out[kv.key] = attrValue(kv.value);
	return out;
}

function attrKey(list) {
	const a = attrs(list);
	return Object.keys(a).sort().map((k) => `${k}=${a[k]}`).join(',');
}

function onTraces(msg) {
	for (const rs of msg.resourceSpans || []) {
		const svc = attrs(rs.resource && rs.resource.attributes)['service.name'] || '';
		for (const ss of rs.scopeSpans || [])
			for (const s of ss.spans || []) {
				const k = `${svc}|${s.kind}|${s.name}`;
				counts.spans[k] = (counts.spans[k] || 0) + 1;
			}
	}
}

function onMetrics(msg) {
	for (const rm of msg.resourceMetrics || []) {
		const svc = attrs(rm.resource && rm.resource.attributes)['service.name'] || '';
		for (const sm of rm.scopeMetrics || [])
			for (const m of sm.metrics || []) {
				const pts = (m.histogram && m.histogram.dataPoints) ||
					(m.sum && m.sum.dataPoints) || (m.gauge && m.gauge.dataPoints) || [];
				for (const dp of pts) {
					const v = m.histogram ? Number(dp.count)
						: Number(dp.asInt !== undefined && dp.asInt !== null ? dp.asInt : dp.asDouble);
					counts.metrics[`${svc}|${m.name}|${attrKey(dp.attributes)}`] = v;
				}
			}
	}
}

http.createServer((req, res) => {
	const chunks = [];
	req.on('data', (c) => chunks.push(c));
	req.on('end', () => {
		const url = req.url.split('?')[0];
		if (req.method === 'GET' && url === '/counts') {
			res.writeHead(200, { 'Content-Type': 'application/json' });
			res.end(JSON.stringify(counts));
			return;
		}
		const raw = Buffer.concat(chunks);
		counts.requests++;
		counts.bytes += raw.length;
		try {
			const body = (req.headers['content-encoding'] || '') === 'gzip' ? zlib.gunzipSync(raw) : raw;
			if (url === '/v1/traces')
				onTraces(TraceReq.toObject(TraceReq.decode(body), { longs: String, enums: String }));
			else if (url === '/v1/metrics')
				onMetrics(MetricsReq.toObject(MetricsReq.decode(body), { longs: String, enums: String }));
		} catch (e) {
			counts.decode_errors++;
		}
		res.writeHead(200, { 'Content-Type': 'application/x-protobuf' });
		res.end();
	});
}).listen(parseInt(process.argv[2], 10), '127.0.0.1');
