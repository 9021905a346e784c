"""Cases PUB-23 and PUB-24: overload and rate limiting, through a real fastgw and the recording probe.

Both need directives fastgw does not have yet (fastgw rejects them at start):
the upstream queue and max_conns (issue 3) and limit_req (issue 4). The tests
are written as they should pass once the features exist.
"""

import threading
import time

import pytest

from fastgw.testing.probe import Client, Reply, default_reply


def margin(seconds):
    """The allowance added to an expected duration on a shared 2-core machine (seconds)."""
    return max(0.5, seconds / 2)


def retry_after_ok(resp):
    values = resp.header("Retry-After")
    return len(values) == 1 and values[0].isdigit() and int(values[0]) >= 1


class Timed(threading.Thread):
    """Send one request on a new connection at ``start`` (monotonic s) and record the response."""

    def __init__(self, port, payload, start, close_at=None, timeout=10.0):
        super().__init__(daemon=True)
        self.port, self.payload, self.start_at = port, payload, start
        self.close_at, self.timeout = close_at, timeout
        self.resp = self.error = self.sent_at = None

    def run(self):
        time.sleep(max(0.0, self.start_at - time.monotonic()))
        try:
            with Client(self.port) as c:
                self.sent_at = c.send(self.payload)
                if self.close_at is not None:
                    time.sleep(max(0.0, self.close_at - time.monotonic()))
                    return
                self.resp = c.read_response(timeout=self.timeout)
        except Exception as exc:   # recorded, asserted by the test
            self.error = exc

    @property
    def elapsed(self):
        return self.resp.t_done - self.sent_at


# -- PUB-23 --------------------------------------------------------------------------------

def test_pub23_queue_full_fast_503_with_retry_after(make_gw, probe):
    """PUB-23: bounded queue full -> fast 503 with Retry-After, never a hang.

    Sources: HAProxy `timeout queue`; Angie upstream `queue`; trafficserver#1369, #9121;
    knative/serving#602; zoxy-io/zoxy#138; haproxy#2659; antiwork/gumroad#7538. One worker;
    upstream `app` with `max_conns=2` and `queue 2 timeout=1s`; the probe holds every request
    5 s. At t=0 six connections send `GET /`; at t=0.2 s a seventh (`GET /seventh`, a distinct
    path so that the probe log can tell it apart) is opened and closed at t=0.5 s; from
    t=0.1 s a local health location is polled every 100 ms. Expected: two 503 within 100 ms
    with `Retry-After: <integer >= 1>`; the two queued requests 503 (+ Retry-After) at
    1.0 s ± 0.2 s; the two in-flight 200 at ~5 s; the seventh never reaches the upstream; the
    upstream never sees more than 2 concurrent requests; the health location answers within
    100 ms throughout; afterwards a new request gets 200 (no leaked slots); never 502.
    """
    probe.script(handler=lambda req: Reply(5.0, default_reply(req.conn_id)))
    # The upstream holds each request 5 s: longer than the baseline's 2 s read
    # timeout, so "/" gets its own location with a longer one.
    gw = make_gw(workers=1, peer=" max_conns=2", upstream="queue 2 timeout=1s;",
                 server='location = /healthz { return 200 "ok\\n"; }\n'
                        '        location = / { proxy_pass http://app; proxy_read_timeout 10s; }')
    t0 = time.monotonic() + 0.05
    burst = [Timed(gw.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", t0) for _ in range(6)]
    seventh = Timed(gw.port, b"GET /seventh HTTP/1.1\r\nHost: a\r\n\r\n", t0 + 0.2, close_at=t0 + 0.5)
    for t in burst + [seventh]:
        t.start()
    health = []
    next_poll = t0 + 0.1
    while any(t.is_alive() for t in burst):
        time.sleep(max(0.0, next_poll - time.monotonic()))
        next_poll += 0.1
        with Client(gw.port) as c:
            sent = c.send(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            r = c.read_response(timeout=2.0)
        health.append((r.status, r.t_done - sent))
        if time.monotonic() - t0 > 15:
            break
    for t in burst + [seventh]:
        t.join(10)
    assert [t.error for t in burst] == [None] * 6
    results = sorted((t.elapsed, t.resp.status, t.resp) for t in burst)
    statuses = [s for _, s, _ in results]
    assert sorted(statuses) == [200, 200, 503, 503, 503, 503], results
    rejected = [(e, r) for e, s, r in results if s == 503]
    fast, queued = rejected[:2], rejected[2:]
    for elapsed, r in fast:
        assert elapsed < 0.1 + margin(0.1), elapsed
        assert retry_after_ok(r), r
    for elapsed, r in queued:
        assert 1.0 - 0.2 <= elapsed <= 1.0 + margin(1.0), elapsed
        assert retry_after_ok(r), r
    for elapsed, s, r in results:
        if s == 200:
            assert 5.0 <= elapsed <= 5.0 + margin(5.0), elapsed
    assert b"/seventh" not in probe.all_bytes()
    assert probe.max_active <= 2, probe.max_active
    assert health and all(s == 200 and e < 0.1 + margin(0.1) for s, e in health), health
    probe.script()   # answer at once from now on
    with Client(gw.port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        after = c.read_response(timeout=5.0)
    assert after.status == 200 and after.body == b"ok", after


# -- PUB-24 --------------------------------------------------------------------------------

LIMIT_ZONES = """
    limit_req_zone $binary_remote_addr zone=one:1m  rate=2r/s;
    limit_req_zone $binary_remote_addr zone=long:1m rate=2r/s;
    limit_req_zone $binary_remote_addr zone=fast:1m rate=1000r/s;
"""
LIMIT_LOCATIONS = """
    location /status { proxy_pass http://app; limit_req zone=one burst=1 nodelay; limit_req_status 501; }
    location /long   { proxy_pass http://app; limit_req zone=long burst=5; }
    location /fast   { proxy_pass http://app; limit_req zone=fast burst=1; }
"""
LONG_BODY = bytes(range(256)) * (704 * 4)      # 704 KiB


def _get(port, path, read_after=0.0, timeout=10.0):
    with Client(port) as c:
        sent = c.send(b"GET " + path + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        if read_after:
            time.sleep(read_after)
        resp = c.read_response(timeout=timeout)
    return resp, sent


def test_pub24_limit_req_burst_nodelay_status(make_gw, probe):
    """PUB-24: `limit_req` burst / nodelay / custom status (nginx-tests limit_req.t).

    Sources: nginx-tests limit_req.t; nginx mailing list Dec 2008 (Igor Sysoev: a delayed
    request is served normally); nginx-devel Feb 2011 (Maxim Dounin: millisecond precision).
    Zones keyed by client address: one and long 2 r/s, fast 1000 r/s. Expected, one client,
    each request on a new connection after the previous response: /test1.html 200, again 200
    at once (burst slot, nodelay), again rejected with fastgw's default limit_req_status 429
    (design.md §6; nginx 503); /status.html 501; two more /test1.html (not checked);
    /long.html, then /long.html again read slowly (after 0.6 s): delayed ~0.5 s and complete
    (same byte count); /test1.html 200 (rejections were not counted); /fast.html, 0.1 s,
    /fast.html 200.
    """
    long_reply = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(LONG_BODY) + LONG_BODY
    probe.script(replies={"/long.html": long_reply})
    gw = make_gw(http=LIMIT_ZONES, location="limit_req zone=one burst=1 nodelay;",
                 server=LIMIT_LOCATIONS)
    r1, _ = _get(gw.port, b"/test1.html")
    assert r1.status == 200, r1
    r2, sent = _get(gw.port, b"/test1.html")
    assert r2.status == 200 and r2.t_done - sent < margin(0.1), r2
    r3, _ = _get(gw.port, b"/test1.html")
    assert r3.status == 429, r3
    r4, _ = _get(gw.port, b"/status.html")
    assert r4.status == 501, r4
    _get(gw.port, b"/test1.html")
    _get(gw.port, b"/test1.html")
    first, _ = _get(gw.port, b"/long.html")
    assert first.status == 200 and first.body == LONG_BODY, first
    mark = probe.mark()
    second, sent = _get(gw.port, b"/long.html", read_after=0.6)
    assert second.status == 200 and second.complete and len(second.body) == len(first.body), second
    (req,) = probe.requests_since(mark)
    assert 0.5 - 0.1 <= req.t_head - sent <= 0.5 + margin(0.5), req.t_head - sent
    r8, _ = _get(gw.port, b"/test1.html")
    assert r8.status == 200, r8
    r9a, _ = _get(gw.port, b"/fast.html")
    time.sleep(0.1)
    r9b, _ = _get(gw.port, b"/fast.html")
    assert r9a.status == 200 and r9b.status == 200, (r9a, r9b)


LIMIT2_ZONES = """
    limit_req_zone $arg_b zone=fast:1m rate=1000r/s;
    limit_req_zone $arg_a zone=slow:1m rate=1r/m;
    limit_req_zone $arg_b zone=fastnd:1m rate=1000r/s;
    limit_req_zone $arg_a zone=slownd:1m rate=1r/m;
"""
LIMIT2_LOCATIONS = """
    location /two   { proxy_pass http://app; limit_req zone=fast; limit_req zone=slow; }
    location /twond { proxy_pass http://app; limit_req zone=fastnd nodelay; limit_req zone=slownd nodelay; }
"""


@pytest.mark.parametrize("path", [b"/two", b"/twond"], ids=["delay", "nodelay"])
def test_pub24_two_limits_keyed_by_arguments(make_gw, probe, path):
    """PUB-24 add-on (nginx-tests limit_req2.t): one location with two limits.

    zone=fast (1000 r/s keyed by $arg_b) and zone=slow (1 r/min keyed by $arg_a); 0.1 s
    between the requests of a pair. Expected: `?b=1` 200, 200; `?a=1` 200, 429;
    `?a=2&b=2` 200, 429 (nginx: 503); no arguments 200, 200 (an empty key is not limited);
    identical with nodelay (a second location with its own zones).
    """
    gw = make_gw(http=LIMIT2_ZONES, server=LIMIT2_LOCATIONS)
    expected = [(b"?b=1", 200, 200), (b"?a=1", 200, 429), (b"?a=2&b=2", 200, 429), (b"", 200, 200)]
    got = []
    for args, _, _ in expected:
        first, _ = _get(gw.port, path + args)
        time.sleep(0.1)
        second, _ = _get(gw.port, path + args)
        got.append((args, first.status, second.status))
    assert got == expected
