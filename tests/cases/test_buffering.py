"""Request and response buffering (issue 7, point 7; design.md §2), through a real fastgw and the probe.

`proxy_request_buffering on` (the default, as nginx) reads a request body whole
before a peer is chosen; `proxy_buffering on` (the default) reads a response as
fast as the upstream sends it. Either way memory is bounded (client_body_buffer_size,
proxy_buffers) and the rest waits in an unlinked temporary file under the prefix.
The probe's ``sent`` records a reply only once its ``sendall`` returned, which
shows whether fastgw took the whole response while its client read nothing.
"""

import hashlib
import os
import time

import pytest

from fastgw.testing.harness import wait_until
from fastgw.testing.probe import Client, Reply, chunk

# Larger than what loopback socket buffers on both sides of fastgw can absorb.
BIG = 32 * 1024 * 1024


def _big_reply(extra=b""):
    body = bytes(range(256)) * (BIG // 256)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(body), extra)
    return head + body, hashlib.sha256(body).hexdigest()


def _upstream_done(probe, path, size):
    """True once the probe has handed all ``size`` bytes of its reply to ``path`` to the kernel."""
    return any(sum(len(d) for _, d in pc.sent) >= size
               for pc in probe.connections if any(r.target == path for r in pc.requests))


def _read_all(c, timeout=60.0):
    resp = c.read_response(timeout=timeout)
    return resp, hashlib.sha256(resp.body).hexdigest()


def test_slow_client_body_reaches_upstream_whole(make_gw, probe, connect):
    """Default buffering: nothing of a trickling request reaches the upstream until its
    body is complete; then it goes on whole, with Content-Length, no chunk lines."""
    gw = make_gw()
    c = connect(gw.port)
    c.send(b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(3):
        c.send(chunk(b"x" * 10))
        time.sleep(0.3)
    assert b"/up" not in probe.all_bytes(), "the upstream saw a request whose body is not complete"
    c.send(chunk(b""))
    resp = c.read_response(timeout=5.0)
    assert resp.status == 200 and resp.body == b"ok", resp
    (req,) = probe.wait_requests(1)
    assert req.body == b"x" * 30
    assert req.header("Content-Length") == [b"30"] and req.header("Transfer-Encoding") == []


def test_streaming_when_request_buffering_off(make_gw, probe, connect):
    """`proxy_request_buffering off`: the head and the first bytes go on at once."""
    gw = make_gw(location="proxy_request_buffering off;")
    c = connect(gw.port)
    c.send(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n12345")
    wait_until(lambda: b"POST /up" in probe.all_bytes(), timeout=3.0, message="head upstream")
    c.send(b"67890")
    assert c.read_response(timeout=5.0).status == 200
    (req,) = probe.wait_requests(1)
    assert req.body == b"1234567890"


def test_large_body_spills_to_an_unlinked_temp_file(make_gw, probe, connect):
    """A body over client_body_buffer_size goes to client_body_temp under the prefix;
    the upstream gets it intact, and no file is left behind."""
    gw = make_gw(location="client_body_buffer_size 1k;")
    body = os.urandom(300 * 1024)
    c = connect(gw.port)
    c.send(b"POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    assert c.read_response(timeout=10.0).status == 200
    (req,) = probe.wait_requests(1)
    assert req.body == body
    temp = gw.path("client_body_temp")
    assert os.path.isdir(temp) and os.listdir(temp) == []


def test_buffered_body_is_resent_to_the_next_peer(make_gw, probe, dead_port):
    """A buffered body (here 200 KiB, over the 64 KiB a streamed one keeps) can be sent
    again: a PUT whose first peer refuses the connection reaches the next one whole."""
    gw = make_gw(workers=1, upstream=f"server 127.0.0.1:{dead_port};")
    body = os.urandom(200 * 1024)
    for _ in range(3):
        with Client(gw.port) as c:
            c.send(b"PUT /put HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
                   % len(body) + body)
            resp = c.read_response(timeout=10.0)
            assert resp.status == 200, resp
    reqs = probe.wait_requests(3)
    assert [r.body == body for r in reqs] == [True] * 3
    assert "connect() failed" in gw.error_log(), "no request met the dead peer"


def test_slow_reader_does_not_hold_the_upstream(make_gw, probe, connect):
    """Default buffering: a client that reads nothing still lets the upstream send its whole
    32 MiB response (memory, then proxy_temp); then the client gets it all, intact."""
    gw = make_gw(location="")
    reply, digest = _big_reply()
    probe.script(replies={"/big": Reply(reply)})
    c = connect(gw.port)
    c.send(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
    wait_until(lambda: _upstream_done(probe, b"/big", len(reply)), timeout=15.0,
               message="upstream finished sending while the client reads nothing")
    resp, got = _read_all(c)
    assert resp.status == 200 and got == digest
    temp = gw.path("proxy_temp")
    assert os.path.isdir(temp) and os.listdir(temp) == []
    # The connection goes on.
    c.send(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
    assert c.read_response(timeout=5.0).body == b"ok"


def _held_by_slow_reader(gw, probe, connect, extra=b""):
    """The upstream's 32 MiB reply (with ``extra`` fields) must wait for a client that
    reads nothing; then the client gets it intact. Returns the response."""
    reply, digest = _big_reply(extra)
    probe.script(replies={"/big": Reply(reply)})
    c = connect(gw.port)
    c.send(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
    time.sleep(1.5)
    assert not _upstream_done(probe, b"/big", len(reply)), \
        "the upstream finished although the client read nothing and buffering is off"
    resp, got = _read_all(c)
    assert resp.status == 200 and got == digest
    return resp


@pytest.mark.parametrize("directive", ["proxy_buffering off;", "proxy_max_temp_file_size 0;"])
def test_upstream_waits_for_the_client(make_gw, probe, connect, directive):
    """`proxy_buffering off`: the upstream is read only as fast as the client reads;
    `proxy_max_temp_file_size 0`: the same once proxy_buffers are full. No temp file."""
    gw = make_gw(location=directive)
    _held_by_slow_reader(gw, probe, connect)
    assert not os.path.exists(gw.path("proxy_temp"))


def test_x_accel_buffering_no_turns_buffering_off(make_gw, probe, connect):
    """The upstream's `X-Accel-Buffering: no` turns buffering off for its response; the
    field is for fastgw, not relayed (as nginx)."""
    gw = make_gw(location="")
    resp = _held_by_slow_reader(gw, probe, connect, b"X-Accel-Buffering: no\r\n")
    assert resp.header("X-Accel-Buffering") == [], resp


def test_chunked_body_to_http10_upstream_is_buffered(make_gw, probe, connect):
    """An HTTP/1.0 upstream cannot read chunked: the body is buffered and sent with a
    Content-Length even with proxy_request_buffering off (as nginx)."""
    gw = make_gw(server="location /old { proxy_pass http://app; proxy_http_version 1.0; "
                        "proxy_request_buffering off; }")
    c = connect(gw.port)
    c.send(b"POST /old HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    time.sleep(0.3)
    c.send(b"2\r\nde\r\n0\r\n\r\n")
    assert c.read_response(timeout=5.0).status == 200
    (req,) = probe.wait_requests(1)
    assert b"POST /old HTTP/1.0\r\n" in probe.all_bytes()
    assert req.body == b"abcde" and req.header("Content-Length") == [b"5"]
    assert req.header("Transfer-Encoding") == []


def test_no_100_continue_without_a_body(make_gw, probe, connect):
    """`Expect: 100-continue` on a request without a body gets no 100, only the answer."""
    gw = make_gw()
    c = connect(gw.port)
    c.send(b"POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n")
    resp = c.read_response(timeout=5.0)
    assert resp.status == 200, resp
    assert b"100 Continue" not in c.received


def test_bytes_sent_counts_what_the_client_took(make_gw, probe, connect):
    """A client that reads 1 KB of a spooled 32 MiB response and leaves: the access log's
    $body_bytes_sent is what reached its socket, not what the upstream sent."""
    gw = make_gw()
    reply, _ = _big_reply()
    probe.script(replies={"/big": Reply(reply)})
    c = connect(gw.port)
    c.send(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
    wait_until(lambda: _upstream_done(probe, b"/big", len(reply)), timeout=15.0,
               message="the upstream sent everything")
    c.read_exactly(1024, timeout=5.0)
    c.close()
    line = wait_until(lambda: [l for l in gw.access_log().splitlines() if "/big" in l],
                      timeout=5.0, message="the access log line")[0]
    sent = int(line.split('" ')[1].split()[1])
    assert 0 < sent < BIG // 2, line
