"""A test OTLP/HTTP receiver (tests/e2e/otlp/receiver.js) that decodes what
rastro sends with the official OpenTelemetry generated code
(@opentelemetry/otlp-transformer 0.216.0), and helpers over its output.

Use from a test module:

    from otlp_fixtures import otlp_receiver  # noqa: F401  (the fixture)

    def test_x(otlp_receiver, rastro):
        r = rastro(cfg, env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp_receiver.traces_url})
        ...
        spans = otlp_receiver.wait_spans(3)

protobufjs skips unknown fields silently: assert the values you expect.
"""
import json
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port, wait_for, wait_port

HERE = Path(__file__).resolve().parent / "otlp"


def _ensure_node_modules():
    if (HERE / "node_modules" / "@opentelemetry" / "otlp-transformer").is_dir():
        return
    if not shutil.which("npm"):
        pytest.skip("npm is not installed (scripts/install-deps.sh test installs it)")
    r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=HERE,
                       capture_output=True, text=True, timeout=300)
    if r.returncode:
        pytest.fail(f"npm ci in {HERE} failed: {r.stderr[-2000:]}")


def attrs(kvs):
    """OTLP KeyValue list (as decoded) -> {key: python value}."""
    out = {}
    for kv in kvs or []:
        v = kv.get("value", {})
        if "stringValue" in v:
            out[kv["key"]] = v["stringValue"]
        elif "intValue" in v:
            out[kv["key"]] = int(v["intValue"])
        elif "boolValue" in v:
            out[kv["key"]] = v["boolValue"]
        elif "doubleValue" in v:
            out[kv["key"]] = v["doubleValue"]
        else:
            out[kv["key"]] = v  # arrays, maps, bytes, or an empty AnyValue: compared as is
    return out


class OtlpReceiver:
    def __init__(self, tmp_path):
        self.port = free_port()
        self.output = Path(tmp_path) / f"otlp-{self.port}.jsonl"
        self.output.touch()
        self.log = Path(tmp_path) / f"otlp-{self.port}.log"
        self.proc = None

    # ---- lifecycle

    def start(self):
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(["node", str(HERE / "receiver.js"), str(self.port),
                                          str(self.output)], stdout=log,
                                         stderr=subprocess.STDOUT)
        try:
            wait_port(self.port, timeout=15)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self):
        """Stops the receiver (the port then refuses connections)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    @property
    def endpoint(self):
        """Base URL (OTEL_EXPORTER_OTLP_ENDPOINT style)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def traces_url(self):
        return f"{self.endpoint}/v1/traces"

    @property
    def metrics_url(self):
        return f"{self.endpoint}/v1/metrics"

    # ---- behaviour

    def script(self, *steps, default=None):
        """Scripted answers, consumed in order, then `default` (200).
        A step: {"times": n, "status": 503, "retry_after": "2", "delay_ms": 10000,
        "body": "garbage" | "partial" | "text", "rejected": n, "message": "...",
        "signal": "traces" | "metrics"}."""
        body = json.dumps({"script": list(steps), "default": default or {"status": 200}})
        req = urllib.request.Request(f"{self.endpoint}/control", data=body.encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    # ---- what arrived

    def requests(self, signal=None):
        """Every request received, in order (rejected ones included), as
        recorded by receiver.js: seq, time_ms, path, signal, status, headers,
        body_bytes, decode_error, request (the decoded message)."""
        out = []
        text = self.output.read_text()
        # The receiver may be writing its last line right now: only whole
        # lines (ended by a newline) are complete records.
        for line in text[:text.rfind("\n") + 1].splitlines():
            if line.strip():
                rec = json.loads(line)
                if signal is None or rec["signal"] == signal:
                    out.append(rec)
        return out

    def _accepted(self, signal):
        out = []
        for rec in self.requests(signal):
            if 200 <= rec["status"] < 300:
                assert rec["decode_error"] is None, rec
                out.append(rec["request"])
        return out

    def traces(self):
        """Decoded ExportTraceServiceRequests that were answered 2xx."""
        return self._accepted("traces")

    def metrics(self):
        """Decoded ExportMetricsServiceRequests that were answered 2xx."""
        return self._accepted("metrics")

    def spans(self, requests=None):
        """Flattened spans of accepted trace requests: each span dict gets
        "_resource" (attributes as a dict) and "_scope" (the scope)."""
        out = []
        for req in self.traces() if requests is None else requests:
            for rs in req.get("resourceSpans", []):
                res = attrs(rs.get("resource", {}).get("attributes"))
                for ss in rs.get("scopeSpans", []):
                    for span in ss.get("spans", []):
                        out.append(dict(span, _resource=res, _scope=ss.get("scope", {})))
        return out

    def wait_spans(self, n, pred=None, timeout=15.0):
        """Waits until at least n matching spans were accepted; returns them all."""
        def have():
            return [s for s in self.spans() if pred is None or pred(s)]
        wait_for(lambda: len(have()) >= n, timeout=timeout,
                 what=f"{n} spans at the OTLP receiver (have {len(have())})")
        return have()


@pytest.fixture
def otlp_receiver(tmp_path):
    """A started OtlpReceiver on a free port; stopped at teardown."""
    if not shutil.which("node"):
        pytest.skip("node is not installed (scripts/install-deps.sh test installs it)")
    _ensure_node_modules()
    r = OtlpReceiver(tmp_path).start()
    yield r
    r.stop()


def rss_kib(pid):
    """Resident set size of pid in KiB (/proc/PID/status VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def wait_quiet(pred_count, quiet=1.0, timeout=20.0):
    """Waits until pred_count() stops changing for `quiet` seconds; returns it."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        n = pred_count()
        if n == last:
            return n
        last = n
        time.sleep(quiet)
    return pred_count()


__all__ = ["OtlpReceiver", "attrs", "otlp_receiver", "rss_kib", "wait_quiet"]
