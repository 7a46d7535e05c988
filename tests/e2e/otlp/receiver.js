#!/usr/bin/env node
// Test OTLP/HTTP receiver. Decodes /v1/traces and /v1/metrics bodies (gzip
// aware) with the OFFICIAL OpenTelemetry generated code
// (@opentelemetry/otlp-transformer 0.216.0, build/src/generated/root.js) and
// appends one JSON line per received request to the output file:
//
//   {"seq", "time_ms", "path", "signal", "status", "delay_ms", "headers",
//    "body_bytes", "decode_error", "request"}
//
// "request" is the decoded Export*ServiceRequest as protobufjs toObject with
// longs as strings, enums as names, bytes as lowercase hex and defaults off.
// protobufjs skips unknown fields silently: tests must assert the values they
// expect, never just that something decoded.
//
// Behaviour is scripted through POST /control with a JSON body
//   {"script": [step, ...], "default": step}
// where a step is {"times": n (default 1), "status": 200, "retry_after": "2",
// "delay_ms": 0, "body": "empty" | "garbage" | "partial" | "text",
// "rejected": n, "message": "...", "signal": "traces" | "metrics" (only
// requests of that signal consume the step)}. Steps are consumed in order,
// then "default" (200, empty body) answers (requests of its "signal" only, if
// it names one; others get 200). GET /control returns the state.
//
// Usage: node receiver.js PORT OUTPUT.jsonl
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');
const zlib = require('zlib');

const root = require(path.join(__dirname, 'node_modules', '@opentelemetry', 'otlp-transformer',
	'build', 'src', 'generated', 'root.js'));
const pb = root.opentelemetry.proto.collector;

const SIGNALS = {
	'/v1/traces': {
		name: 'traces',
		request: pb.trace.v1.ExportTraceServiceRequest,
		response: pb.trace.v1.ExportTraceServiceResponse,
		partial: (n, msg) => ({ partialSuccess: { rejectedSpans: n, errorMessage: msg } }),
	},
	'/v1/metrics': {
		name: 'metrics',
		request: pb.metrics.v1.ExportMetricsServiceRequest,
		response: pb.metrics.v1.ExportMetricsServiceResponse,
		partial: (n, msg) => ({ partialSuccess: { rejectedDataPoints: n, errorMessage: msg } }),
	},
};

const port = parseInt(process.argv[2], 10);
const output = process.argv[3];
if (!port || !output) {
	process.stderr.write('usage: receiver.js PORT OUTPUT.jsonl\n');
	process.exit(2);
}

let script = [];
let fallback = { status: 200 };
let seq = 0;

function hexify(v) {
	if (v instanceof Uint8Array)
		return Buffer.from(v).toString('hex');
	if (Array.isArray(v))
		return v.map(hexify);
	if (v && typeof v === 'object') {
		const o = {};
		for (const k of Object.keys(v))
			o[k] = hexify(v[k]);
		return o;
	}
	return v;
}

function nextStep(signal) {
	for (let i = 0; i < script.length; i++) {
		const s = script[i];
		if (s.signal && s.signal !== signal)
			continue;
		const step = Object.assign({}, s);
		s.times = (s.times === undefined ? 1 : s.times) - 1;
		if (s.times <= 0)
			script.splice(i, 1);
		return step;
	}
	if (fallback.signal && fallback.signal !== signal)
		return { status: 200 };
	return fallback;
}

function readBody(req) {
	return new Promise((resolve, reject) => {
		const chunks = [];
		req.on('data', (c) => chunks.push(c));
		req.on('end', () => resolve(Buffer.concat(chunks)));
		req.on('error', reject);
	});
}

async function handle(req, res) {
	const url = req.url.split('?')[0];
	if (url === '/control') {
		if (req.method === 'POST') {
			const cfg = JSON.parse((await readBody(req)).toString() || '{}');
			script = (cfg.script || []).map((s) => Object.assign({}, s));
			fallback = cfg.default || { status: 200 };
		}
		res.writeHead(200, { 'Content-Type': 'application/json' });
		res.end(JSON.stringify({ script, default: fallback, received: seq }));
		return;
	}
	const sig = SIGNALS[url];
	const raw = await readBody(req);
	if (!sig || req.method !== 'POST') {
		res.writeHead(404);
		res.end();
		return;
	}
	const step = nextStep(sig.name);
	const status = step.status || 200;
	const rec = {
		seq: ++seq,
		time_ms: Date.now(),
		path: url,
		signal: sig.name,
		status,
		delay_ms: step.delay_ms || 0,
		headers: req.headers,
		body_bytes: raw.length,
		decode_error: null,
		request: null,
	};
	try {
		const body = (req.headers['content-encoding'] || '') === 'gzip' ? zlib.gunzipSync(raw) : raw;
		const msg = sig.request.decode(body);
		rec.request = hexify(sig.request.toObject(msg, { longs: String, enums: String,
			defaults: false }));
	} catch (e) {
		rec.decode_error = String(e.message || e);
	}
	fs.appendFileSync(output, JSON.stringify(rec) + '\n');

	const headers = {};
	let out = Buffer.alloc(0);
	if (step.retry_after !== undefined)
		headers['Retry-After'] = String(step.retry_after);
	if (step.body === 'garbage') {
		// Field 1 with wire type 7, which does not exist: undecodable.
		out = Buffer.from([0x0f, 0xff, 0xff, 0xff, 0x01]);
		headers['Content-Type'] = 'application/x-protobuf';
	} else if (step.body === 'partial') {
		out = Buffer.from(sig.response.encode(sig.partial(step.rejected || 0,
			step.message || '')).finish());
		headers['Content-Type'] = 'application/x-protobuf';
	} else if (step.body === 'text') {
		out = Buffer.from(step.message || 'error');
		headers['Content-Type'] = 'text/plain';
	} else if (status >= 200 && status < 300) {
		out = Buffer.from(sig.response.encode({}).finish());
		headers['Content-Type'] = 'application/x-protobuf';
	}
	headers['Content-Length'] = String(out.length);
	const send = () => {
		if (res.destroyed)
			return;
		res.writeHead(status, headers);
		res.end(out);
	};
	if (step.delay_ms)
		setTimeout(send, step.delay_ms);
	else
		send();
}

const server = http.createServer((req, res) => {
	handle(req, res).catch((e) => {
		process.stderr.write(`receiver: ${e.stack || e}\n`);
		if (!res.headersSent)
			res.writeHead(500);
		res.end();
	});
});
server.keepAliveTimeout = 30000;
server.listen(port, '127.0.0.1', () => process.stderr.write(`receiver listening on ${port}\n`));
for (const s of ['SIGTERM', 'SIGINT'])
	process.on(s, () => process.exit(0));
