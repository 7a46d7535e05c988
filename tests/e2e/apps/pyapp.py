#!/usr/bin/env python3
"""A small HTTP/1.1 service (python3's http.server) for the tests.
Usage: pyapp.py PORT [--threads]

  GET  /hello            200 text
  GET  /status/N         status N
  POST /echo             echoes the body (honours Expect: 100-continue)
  GET  /call?url=U       GETs U with urllib (a client call) and returns its status
"""
import sys
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, ctype="text/plain"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/hello":
            return self.reply(200, b"hello from python\n")
        if url.path.startswith("/status/"):
            return self.reply(int(url.path.split("/")[2]), b"status\n")
        if url.path == "/call":
            target = urllib.parse.parse_qs(url.query)["url"][0]
            try:
                with urllib.request.urlopen(target, timeout=10) as r:
                    r.read()
                    status = r.status
            except urllib.error.HTTPError as e:
                status = e.code
            return self.reply(200, f"downstream {status}\n".encode())
        return self.reply(404, b"not found\n")

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        return self.reply(200, body, "application/octet-stream")


if __name__ == "__main__":
    port = int(sys.argv[1])
    cls = ThreadingHTTPServer if "--threads" in sys.argv else HTTPServer
    cls(("127.0.0.1", port), Handler).serve_forever()
