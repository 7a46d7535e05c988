"""The two sets of kernel hooks rastro can take its data from report the same
thing: the socket tracepoints (sock_send_length/sock_recv_length, Linux 6.3
and later, the default where the kernel has them) and the sys_exit fallback
for older kernels (ebpf.hooks: syscall). Each runs the three-process chain
(client role from connect(), cross-process links through TCP sequence
numbers), discovery of servers started after rastro (listen()), writev and
sendfile, exact counts over keep-alive connections, and data read after a
reset, which must leave no kernel state behind."""
import os
import shutil
import socket
import subprocess

import pytest

from conftest import free_port, needs_root
from test_http1 import get, recv_responses
from test_reliability_helpers import bpf_objects, bpftool_json, conns_tgids, map_id_by_name
from test_traces import chain_spans, instrument, start_chain

pytestmark = needs_root

DATA_PROGS = {"socket": {"rastro_sock_send", "rastro_sock_recv"}, "syscall": {"rastro_sys_exit"}}
COMMON_PROGS = {"rastro_sock_state", "rastro_exec", "rastro_fork", "rastro_exit"}
LOGGED = {"socket": "data hooks: sock_send_length/sock_recv_length (socket I/O only)",
          "syscall": "data hooks: sys_exit (every syscall of every process runs a program"}


def attached_programs(pid):
    """Names of the BPF programs rastro (pid) holds."""
    return {bpftool_json("prog", "show", "id", str(i))["name"]
            for i in bpf_objects(pid)["prog"]}


@pytest.mark.parametrize("hooks", ["socket", "syscall"])
def test_each_hook_set_reports_the_same(rastro, servers, tmp_path, hooks):
    perl_port, py_port, ngx_port = free_port(), free_port(), free_port()
    r = rastro(instrument((perl_port, "front"), (py_port, "middle"), (ngx_port, "back")),
               env={"RASTRO_EBPF_HOOKS": hooks})
    assert LOGGED[hooks] in r.stderr()
    assert attached_programs(r.proc.pid) == DATA_PROGS[hooks] | COMMON_PROGS
    # Started after rastro: selected through their listen().
    inner = start_chain(r, servers, tmp_path, perl_port, py_port, ngx_port)
    mid_cli = chain_spans(r.wait_records(5))[3]
    assert mid_cli["url.full"] == inner and mid_cli["http.response.status_code"] == 200

    # 50 requests on one keep-alive connection (nginx: readv-free reads,
    # writev headers), then a sendfile() body: exact records and sizes.
    with socket.create_connection(("127.0.0.1", ngx_port)) as s:
        s.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n" * 50)
        recv_responses(s, 50)
    status, body = get(ngx_port, "/big.bin")
    assert status == 200 and len(body) == 2_000_000
    back = r.wait_records(52, lambda x: x["service.name"] == "back" and x["kind"] == "SERVER")
    back = r.settle(lambda x: x["service.name"] == "back" and x["kind"] == "SERVER")
    assert [x["url.path"] for x in back] == ["/index.html"] * 51 + ["/big.bin"]
    assert all(x["http.response.status_code"] == 200 for x in back)
    assert back[-1]["http.response.body.size"] == 2_000_000
    assert {x["http.response.body.size"] for x in back[:-1]} == {
        len("<h1>nginx under rastro</h1>\n")}


RESET_SERVER = r"""
import socket, struct, sys
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", int(sys.argv[1])))
ls.listen(16)
while True:
    c, _ = ls.accept()
    c.recv(4096)
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    # SO_LINGER 0: close() sends a reset; the bytes above stay readable
    # in the client's receive queue after its socket is closed.
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
"""

RESET_CLIENT = r"""
import socket, sys, time
for _ in range(int(sys.argv[2])):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.05)  # the reset arrives before the read
    assert s.recv(4096).endswith(b"ok")
    s.close()
print("done", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("hooks", ["socket", "syscall"])
def test_data_read_after_a_reset_leaves_no_state(rastro, servers, tmp_path, hooks):
    """A traced client reads a response after the server reset the
    connection: its socket is already closed (the state-change hook has freed
    its entry), so that read must not create kernel state that nothing would
    free, and that a later socket at the same address would inherit."""
    port = free_port()
    (tmp_path / "srv.py").write_text(RESET_SERVER)
    (tmp_path / "cli.py").write_text(RESET_CLIENT)
    servers(["/usr/bin/python3", str(tmp_path / "srv.py"), str(port)], port,
            log=tmp_path / "srv.log")
    # Only the client is traced: a copy of the interpreter under its own name.
    exe = tmp_path / "resetclient"
    shutil.copy(os.path.realpath("/usr/bin/python3"), exe)
    r = rastro('discovery:\n  instrument:\n    - exe_path: "*/resetclient"\n'
               '      name: resetclient\n', env={"RASTRO_EBPF_HOOKS": hooks})
    cli = subprocess.Popen([str(exe), str(tmp_path / "cli.py"), str(port), "20"],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert cli.stdout.readline().strip() == "done"
        r.wait_traced(cli.pid)
        conns = map_id_by_name(bpf_objects(r.proc.pid), "conns")
        assert cli.pid not in conns_tgids(conns)
    finally:
        cli.kill()
        cli.wait()
