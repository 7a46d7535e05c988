"""gRPC server and client for rastro's HTTP/2 end-to-end tests, on Debian's
python3-grpcio. The stubs are generated from greeter.proto at test time; their
directory comes first on the command line.

  grpc_greeter.py STUBS server PORT
  grpc_greeter.py STUBS client PORT ACTION...   (one channel for all actions)

Client actions (run in order; one JSON line per call on stdout):
  hello:NAME             unary SayHello
  slow:MS                unary SayHello that takes MS milliseconds
  fail:CODE              Fail, answered with that gRPC status code
  stream:COUNT:MS        StreamHellos, COUNT replies MS apart
  concurrent:N           N SayHello calls in flight at once on the channel
  mixed:N                N SayHello (the i-th takes 100 + 4 i ms) and N Fail(NOT_FOUND),
                         all in flight at once
  traced:TRACEPARENT     SayHello with that traceparent in its metadata
  gate:PATH              wait until PATH exists (first action: before connecting)
"""
import json
import os
import sys
import threading
import time
from concurrent import futures

sys.path.insert(0, sys.argv[1])

import grpc  # noqa: E402

import greeter_pb2  # noqa: E402
import greeter_pb2_grpc  # noqa: E402


class Greeter(greeter_pb2_grpc.GreeterServicer):
    def SayHello(self, request, context):
        if request.delay_ms:
            time.sleep(request.delay_ms / 1000)
        return greeter_pb2.HelloReply(message=f"Hello, {request.name}!")

    def Fail(self, request, context):
        context.abort(grpc.StatusCode(_code(request.code)), request.message or "failed")

    def StreamHellos(self, request, context):
        for i in range(request.count):
            if i and request.delay_ms:
                time.sleep(request.delay_ms / 1000)
            yield greeter_pb2.HelloReply(message=f"Hello #{i}, {request.name}")


def _code(number):
    for c in grpc.StatusCode:
        if c.value[0] == number:
            return c.value
    raise ValueError(number)


def serve(port):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=160),
                         options=[("grpc.so_reuseport", 0)])
    greeter_pb2_grpc.add_GreeterServicer_to_server(Greeter(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"serving on {port}", flush=True)
    server.wait_for_termination()


def report(**kw):
    print(json.dumps(kw), flush=True)


def gate(path):
    deadline = time.time() + 30
    while not os.path.exists(path):
        if time.time() > deadline:
            raise SystemExit(f"gate {path} never opened")
        time.sleep(0.02)


def client(port, actions):
    if actions and actions[0].startswith("gate:"):
        gate(actions.pop(0)[5:])
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        stub = greeter_pb2_grpc.GreeterStub(channel)
        for action in actions:
            kind, _, arg = action.partition(":")
            if kind == "hello":
                r = stub.SayHello(greeter_pb2.HelloRequest(name=arg), timeout=10)
                report(call="hello", message=r.message)
            elif kind == "slow":
                r = stub.SayHello(greeter_pb2.HelloRequest(name="slow", delay_ms=int(arg)),
                                  timeout=10)
                report(call="slow", message=r.message)
            elif kind == "fail":
                try:
                    stub.Fail(greeter_pb2.FailRequest(code=int(arg)), timeout=10)
                    report(call="fail", code=0)
                except grpc.RpcError as e:
                    report(call="fail", code=e.code().value[0], details=e.details())
            elif kind == "stream":
                count, delay = (int(x) for x in arg.split(":"))
                replies = [r.message for r in stub.StreamHellos(
                    greeter_pb2.HelloRequest(name="stream", count=count, delay_ms=delay),
                    timeout=10)]
                report(call="stream", replies=len(replies))
            elif kind == "concurrent":
                n = int(arg)
                calls = [stub.SayHello.future(
                    greeter_pb2.HelloRequest(name=f"c{i}", delay_ms=50), timeout=10)
                    for i in range(n)]
                report(call="concurrent", ok=sum(1 for c in calls if c.result().message))
            elif kind == "mixed":
                n = int(arg)
                calls = []
                for i in range(n):
                    calls.append(stub.SayHello.future(
                        greeter_pb2.HelloRequest(name=f"m{i}", delay_ms=100 + 4 * i), timeout=10))
                    calls.append(stub.Fail.future(greeter_pb2.FailRequest(code=5), timeout=10))
                codes = [c.code().value[0] for c in calls]
                report(call="mixed", ok=codes.count(0), not_found=codes.count(5))
            elif kind == "gate":
                gate(arg)
                report(call="gate")
            elif kind == "traced":
                r = stub.SayHello(greeter_pb2.HelloRequest(name="traced"),
                                  metadata=[("traceparent", arg)], timeout=10)
                report(call="traced", message=r.message)
            else:
                raise SystemExit(f"unknown action {action}")


if __name__ == "__main__":
    if sys.argv[2] == "server":
        serve(int(sys.argv[3]))
    else:
        client(int(sys.argv[3]), sys.argv[4:])
