"""Fixtures of the HTTP case tests: the recording probe upstream and fastgw on the cases' baseline config.

The baseline config of the cases (README "Common test setup"), in fastgw's
directives: the probe's real port replaces 127.0.0.1:9001 and a free port
nothing listens on replaces 127.0.0.1:9002 (``dead_port``). Each test gets a
fresh probe and a fresh gateway.
"""

import time

import pytest

from fastgw.testing.harness import free_port
from fastgw.testing.probe import Client, Probe

BASELINE_CONF = """
worker_processes @WORKERS@;
error_log logs/error.log notice;
@MAIN@
events { worker_connections 1024; }
http {
    client_header_timeout      5s;
    client_body_timeout        5s;
    keepalive_timeout          15s;
    large_client_header_buffers 4 8k;
    client_max_body_size       1m;

    upstream app {
        server 127.0.0.1:@PROBE@@PEER@;
        keepalive 8;
        @UPSTREAM@
    }
    server {
        listen 127.0.0.1:{port};
        location / {
            proxy_pass            http://app;
            proxy_http_version    1.1;
            proxy_connect_timeout 1s;
            proxy_read_timeout    2s;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            @LOCATION@
        }
        @SERVER@
    }
    @HTTP@
}
"""


def baseline_conf(probe_port, dead_port, workers=2, main="", upstream="", location="",
                  server="", http="", peer=""):
    """The baseline config text; the keyword arguments are added to the named blocks.

    ``peer`` is appended to the upstream's ``server`` line (e.g. `` max_conns=2``).

    ``{port}`` (the gateway's own port, filled in by the harness) and
    ``@DEAD@`` (``dead_port``) may appear in the additions.
    """
    conf = BASELINE_CONF
    for key, value in (("@WORKERS@", str(workers)), ("@MAIN@", main), ("@UPSTREAM@", upstream),
                       ("@LOCATION@", location), ("@SERVER@", server), ("@HTTP@", http),
                       ("@PEER@", peer), ("@PROBE@", str(probe_port))):
        conf = conf.replace(key, value)
    return conf.replace("@DEAD@", str(dead_port))


@pytest.fixture
def probe():
    """The recording upstream (fastgw.testing.probe.Probe), started; stopped after the test."""
    with Probe() as p:
        yield p


@pytest.fixture
def dead_port():
    """A port on 127.0.0.1 where nothing listens (connection refused)."""
    return free_port()


@pytest.fixture
def make_gw(gateway, probe, dead_port):
    """Start fastgw on the baseline config plus additions: ``make_gw(**baseline_conf kwargs) -> Gateway``."""

    def make(**extra):
        return gateway(baseline_conf(probe.port, dead_port, **extra))

    return make


@pytest.fixture
def gw(make_gw):
    """fastgw on the baseline config (2 workers) in front of the probe."""
    return make_gw()


@pytest.fixture
def connect():
    """Open raw client connections: ``connect(port) -> Client``; all closed after the test."""
    clients = []

    def make(port, **kwargs):
        c = Client(port, **kwargs)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


def fresh_request_succeeds(port, probe, path=b"/fresh"):
    """A GET on a new connection gets the probe's 200 ``ok``; returns the probe's request."""
    mark = probe.mark()
    with Client(port) as c:
        c.send(b"GET " + path + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        resp = c.read_response(timeout=5.0)
    assert resp.status == 200, resp
    assert resp.body == b"ok", resp
    got = [r for r in probe.requests_since(mark) if r.target == path]
    assert len(got) == 1, got
    return got[0]


def warm_pools(port, probe, workers=2, tries=60):
    """Leave an idle pooled upstream connection in every worker (each worker has its own pool).

    Requests on new client connections land on the workers at random
    (SO_REUSEPORT); each worker reuses its one idle connection, so the number
    of probe connections is the number of workers that served.
    """
    for _ in range(tries):
        fresh_request_succeeds(port, probe, b"/warm")
        if len({r.conn_id for r in probe.requests}) >= workers:
            break
    assert len({r.conn_id for r in probe.requests}) >= workers, probe.connections
    assert all(not c.closed for c in probe.connections), probe.connections


def _gateway(request, gateway):
    return gateway if gateway is not None else request.getfixturevalue("gw")


@pytest.fixture
def fresh_ok(request, probe):
    """``fresh_ok(path=b"/fresh", gateway=gw)``: a GET on a new connection succeeds (fresh_request_succeeds)."""
    return lambda path=b"/fresh", gateway=None: fresh_request_succeeds(
        _gateway(request, gateway).port, probe, path)


@pytest.fixture
def warm(request, probe):
    """``warm(gateway=gw)``: leave an idle pooled upstream connection in every worker (warm_pools)."""
    return lambda gateway=None: warm_pools(_gateway(request, gateway).port, probe)


@pytest.fixture
def reject_close(request, probe):
    """Assert the cases' REJECT-CLOSE for a payload: ``reject_close(payload, status, forbidden=())``.

    * fastgw answers ``status`` with ``Connection: close`` and closes the
      connection right after it, with nothing after the response (the bytes
      after the bad message are never parsed as a new request);
    * the probe logs zero bytes for that client connection (checked with a
      warm pool in every worker, so that a head forwarded early would be
      seen), and no byte string of ``forbidden`` (smuggled paths) ever
      appears in what the probe received;
    * two requests on fresh connections afterwards succeed.

    ``gateway`` defaults to the baseline one (the ``gw`` fixture). Returns
    the response.
    """

    def check(payload, status, forbidden=(), gateway=None):
        gw = _gateway(request, gateway)
        warm_pools(gw.port, probe)
        mark = probe.mark()
        with Client(gw.port) as c:
            c.send(payload)
            resp = c.read_response(timeout=5.0)
            assert resp.status == status, resp
            assert "close" in resp.tokens("connection"), resp
            t0 = time.monotonic()
            closed, extra = c.wait_closed(timeout=2.0)
            assert closed, "fastgw kept the connection open after a rejection"
            assert time.monotonic() - t0 < 1.5
            assert extra == b"", f"bytes after the rejection: {extra[:300]!r}"
        time.sleep(0.1)   # anything fastgw would still forward has arrived by now
        leaked = probe.bytes_since(mark)
        assert leaked == b"", f"the probe received bytes of a rejected request: {leaked[:300]!r}"
        everything = probe.all_bytes()
        for word in forbidden:
            assert word not in everything, f"{word!r} reached the upstream"
        fresh_request_succeeds(gw.port, probe)
        fresh_request_succeeds(gw.port, probe)
        assert probe.errors == []
        return resp

    return check
