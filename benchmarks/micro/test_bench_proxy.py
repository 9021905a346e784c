"""Micro benchmark of the whole request path in one process (pytest-benchmark).

One keep-alive request through fastgw's real Downstream and UpstreamConn, built
from a real config (fastgw.testing.fuzz.FuzzWorker): the client's request is
parsed, routed, rewritten and written to a pooled upstream connection; the
upstream's response is parsed, its head rewritten and relayed; the request is
finished and logged to stub_status. Only the two transports are stand-ins that
keep what is written, so the figure is fastgw's user-space CPU per request with
no kernel time and no other process: steady enough to measure a step of 1 us,
which the macro benchmark (wrk, loopback, a shared VM) cannot resolve.

    .venv/bin/pytest benchmarks/micro/test_bench_proxy.py --benchmark-enable
"""

import asyncio

import pytest

from fastgw.testing.fuzz import FuzzWorker

CONF = """
worker_processes 1;
error_log logs/error.log error;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000000;
    upstream app { server 127.0.0.1:@UPSTREAM@; keepalive 64; keepalive_requests 1000000000; }
    server {
        listen 127.0.0.1:@LISTEN@;
        location / { proxy_pass http://app; }
    }
}
"""

# What wrk sends, and what nginx's `return 200` with a 100-byte body answers.
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 29 Nov 2026 20:00:00 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 100\r\nConnection: keep-alive\r\n\r\n"
            + b"x" * 100)


class UpstreamTransport:
    """The pooled upstream connection's transport: keeps what fastgw writes."""

    def __init__(self, protocol):
        self.protocol = protocol
        self.data = bytearray()
        self.closing = False

    def write(self, data):
        self.data += data

    def get_write_buffer_size(self):
        return 0

    def set_write_buffer_limits(self, high=None, low=None):
        pass

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def is_closing(self):
        return self.closing

    def close(self):
        self.closing = True

    abort = close

    def get_extra_info(self, name, default=None):
        return default


@pytest.fixture
def path():
    """``(downstream, client transport, upstream protocol, upstream transport)`` after one
    request has opened the pooled upstream connection."""
    loop = asyncio.new_event_loop()  # a Python loop: its create_connection can be replaced
    made = []

    async def create_connection(factory, host, port):
        protocol = factory()
        transport = UpstreamTransport(protocol)
        made.append((protocol, transport))
        protocol.connection_made(transport)
        return transport, protocol

    loop.create_connection = create_connection
    worker = FuzzWorker(CONF)
    asyncio.set_event_loop(loop)
    loop.run_until_complete(worker.start())
    ds, client = worker.connect()
    ds.data_received(REQUEST)
    for _ in range(3):
        loop.run_until_complete(asyncio.sleep(0))
    (up, up_transport), = made
    up.data_received(RESPONSE)
    assert client.data.startswith(b"HTTP/1.1 200 OK\r\n") and client.data.endswith(b"x" * 100)
    client.data.clear()
    up_transport.data.clear()
    yield ds, client, up, up_transport
    worker.close()
    loop.close()
    asyncio.set_event_loop(None)


def test_proxied_request(benchmark, path):
    """One request and its 100-byte response, on keep-alive connections both sides."""
    ds, client, up, up_transport = path

    def one():
        ds.data_received(REQUEST)
        up.data_received(RESPONSE)
        sent = bytes(up_transport.data)
        got = bytes(client.data)
        up_transport.data.clear()
        client.data.clear()
        return sent, got

    sent, got = benchmark(one)
    assert sent.startswith(b"GET / HTTP/1.1\r\nHost: app\r\n"), sent
    assert got.startswith(b"HTTP/1.1 200 OK\r\nServer: fastgw\r\n"), got
    assert b"Content-Length: 100\r\n" in got and got.endswith(b"\r\n\r\n" + b"x" * 100)


CONF_LOCAL = CONF.replace("location / { proxy_pass http://app; }", 'location / { return 200 "ok"; }')
assert CONF_LOCAL != CONF
# Pipelined requests in one read: the parser's cost between messages shows.
PIPELINED = 8


@pytest.fixture
def local():
    """``(downstream, client transport)`` of a server that answers `return 200` itself."""
    loop = asyncio.new_event_loop()
    worker = FuzzWorker(CONF_LOCAL)
    asyncio.set_event_loop(loop)
    loop.run_until_complete(worker.start())
    ds, client = worker.connect()
    yield ds, client
    worker.close()
    loop.close()
    asyncio.set_event_loop(None)


def test_pipelined_local_requests(benchmark, local):
    """PIPELINED keep-alive requests in one read, each answered locally (no upstream)."""
    ds, client = local
    data = REQUEST * PIPELINED

    def many():
        ds.data_received(data)
        got = bytes(client.data)
        client.data.clear()
        return got

    got = benchmark(many)
    assert got.count(b"HTTP/1.1 200 OK\r\n") == PIPELINED, got
