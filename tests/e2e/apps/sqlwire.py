#!/usr/bin/env python3
"""A database-like TCP service with a framing rastro does not know (a 4-byte
big-endian length, then SQL text; the reply is framed the same way), and a
client for it.

  sqlwire.py server PORT
  sqlwire.py client LISTEN_PORT SERVER_PORT
      listens on LISTEN_PORT (only so that rastro can select the process by
      port), prints "ready", waits for a line on stdin, then sends each
      following stdin line as one query, reads its reply, prints it, and
      exits at EOF.
"""
import socket
import struct
import sys
import threading


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def recv_frame(s):
    (n,) = struct.unpack(">I", recv_exact(s, 4))
    return recv_exact(s, n)


def send_frame(s, data):
    s.sendall(struct.pack(">I", len(data)) + data)


def serve_one(conn):
    with conn:
        try:
            while True:
                sql = recv_frame(conn)
                send_frame(conn, b"OK " + str(len(sql)).encode())
        except ConnectionError:
            pass


def server(port):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(16)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve_one, args=(conn,), daemon=True).start()


def client(listen_port, server_port):
    lst = socket.socket()
    lst.bind(("127.0.0.1", listen_port))
    lst.listen(1)
    print("ready", flush=True)
    sys.stdin.readline()
    with socket.create_connection(("127.0.0.1", server_port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for line in sys.stdin:
            send_frame(s, line.rstrip("\n").encode())
            print(recv_frame(s).decode(), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(int(sys.argv[2]))
    else:
        client(int(sys.argv[2]), int(sys.argv[3]))
