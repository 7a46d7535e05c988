#!/usr/bin/env python3
"""An HTTP/1.1 keep-alive server that counts its own socket syscalls: every
recv and send that moved at least one byte is one data event rastro's kernel
side must either deliver or count as lost. Each request is answered with a
4,000-byte body, so events are large and a small ring buffer fills quickly.

  countserver.py PORT     serves until stdin reaches EOF, then prints
                          {"recv": n, "send": n, "requests": n} and exits.

socket.recv and socket.send are one recvfrom/sendto syscall each (CPython
retries only on EINTR, and this process takes no signal while serving)."""
import json
import socket
import sys
import threading

BODY = b"x" * 4000
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n"
            % len(BODY)) + BODY
lock = threading.Lock()
counts = {"recv": 0, "send": 0, "requests": 0}


def serve(conn):
    recv = send = requests = 0
    buf = b""
    try:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            recv += 1
            buf += data
            while b"\r\n\r\n" in buf:  # GETs only: a head is a request
                _, buf = buf.split(b"\r\n\r\n", 1)
                requests += 1
                out = memoryview(RESPONSE)
                while out:
                    n = conn.send(out)
                    send += 1
                    out = out[n:]
    except OSError:
        pass
    finally:
        conn.close()
        with lock:
            counts["recv"] += recv
            counts["send"] += send
            counts["requests"] += requests


def main():
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", int(sys.argv[1])))
    ls.listen(1024)
    threads = []

    def accept():
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            t = threading.Thread(target=serve, args=(c,), daemon=True)
            t.start()
            threads.append(t)
    threading.Thread(target=accept, daemon=True).start()
    sys.stdin.read()
    for t in list(threads):
        t.join(30)
    with lock:
        print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main()
