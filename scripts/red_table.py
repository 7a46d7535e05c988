#!/usr/bin/env python3
"""Reads rastro's Prometheus endpoint and prints the RED numbers per service and
route: requests, errors, and p50/p95/p99 latency from the histogram buckets
(interpolated within a bucket, as PromQL's histogram_quantile does).

usage: red_table.py [URL] [--seconds N] [--expect M]
  N: the window the counts cover, for req/s
  M: wait (up to --wait seconds, 10 by default) until M requests are counted
"""
import re
import sys
import time
import urllib.request
from collections import defaultdict

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? ([^ ]+)')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = LINE.match(line)
        if m:
            yield m.group(1), dict(LABEL.findall(m.group(3) or "")), float(m.group(4))


def quantile(q, buckets):
    """buckets: sorted [(le, cumulative count)]."""
    total = buckets[-1][1] if buckets else 0
    if not total:
        return float("nan")
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1e-12)
        prev_le, prev_c = le, c
    return prev_le


def measure(url):
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    count = defaultdict(float)
    errors = defaultdict(float)
    buckets = defaultdict(dict)
    for name, labels, value in parse(text):
        if not name.startswith("http_server_request_duration_seconds"):
            continue
        key = (labels.get("service_namespace", ""), labels.get("service_name", ""),
               labels.get("http_request_method", ""), labels.get("http_route", ""))
        if name.endswith("_count"):
            count[key] += value
            if labels.get("error_type"):
                errors[key] += value
        elif name.endswith("_bucket"):
            le = float("inf") if labels["le"] == "+Inf" else float(labels["le"])
            buckets[key][le] = buckets[key].get(le, 0) + value
    return count, errors, buckets


def main():
    url = "http://127.0.0.1:9400/metrics"
    seconds = None
    expect = 0
    wait = 10.0
    args = sys.argv[1:]
    while args:
        a = args.pop(0)
        if a == "--seconds":
            seconds = float(args.pop(0))
        elif a == "--expect":
            expect = int(args.pop(0))
        elif a == "--wait":
            wait = float(args.pop(0))
        else:
            url = a
    # Requests are counted when their responses are seen: the last ones may
    # still be on their way when the table is asked for.
    deadline = time.monotonic() + wait
    while True:
        count, errors, buckets = measure(url)
        total = int(sum(count.values()))
        if total >= expect or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if total < expect:
        print(f"  (only {total} of the {expect} requests sent were measured after {wait:g} s)",
              file=sys.stderr)
    if not count:
        print("  (no HTTP server requests measured yet)")
        return
    head = f"  {'service':<22} {'route':<26} {'requests':>8} {'req/s':>7} {'errors':>6} " \
           f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
    print(head)
    print("  " + "-" * (len(head) - 2))
    for key in sorted(count):
        ns, svc, method, route = key
        b = sorted(buckets[key].items())
        rate = f"{count[key] / seconds:7.1f}" if seconds else f"{'-':>7}"
        p = [quantile(q, b) * 1000 for q in (0.5, 0.95, 0.99)]
        name = f"{ns}/{svc}" if ns else svc
        print(f"  {name:<22} {(method + ' ' + route):<26} {int(count[key]):>8} {rate} "
              f"{int(errors[key]):>6} {p[0]:>8.2f} {p[1]:>8.2f} {p[2]:>8.2f}")


if __name__ == "__main__":
    main()
