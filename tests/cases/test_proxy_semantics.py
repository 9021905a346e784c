"""Cases PUB-11..PUB-22: proxy semantics, through a real fastgw and the recording probe.

Times are asserted with the margins of the cases' README for a shared 2-core
machine: an expected bound gets at least 0.5 s more (or half its value, when
that is larger); a timeout must never fire before its value less the case's
own tolerance. PUB-19 runs 20 short rounds by default, the full 200 rounds of
about 1 s with FASTGW_FULL_CASES=1.
"""

import os
import random
import struct
import time

import pytest

from fastgw.testing.probe import HANG, Client, Drip, Reply, blackhole, chunk


def margin(seconds):
    """The allowance added to an expected duration on a shared 2-core machine (seconds)."""
    return max(0.5, seconds / 2)


def quiet(client, seconds=0.3):
    """Bytes the client receives within ``seconds`` (nothing is expected) and whether it closed."""
    closed, extra = client.wait_closed(timeout=seconds)
    return closed, extra


def resp_bytes(body, extra=b""):
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


# -- PUB-11 --------------------------------------------------------------------------------

HOP_REQ = (b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Internal-Token\r\n"
           b"Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\n"
           b"Upgrade: foo/1\r\nX-Internal-Token: secret\r\nX-Keep: 1\r\n\r\n")
HOP_RESP = (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Backend-Secret\r\n"
            b"Keep-Alive: timeout=5, max=100\r\nX-Backend-Secret: s3cr3t\r\nX-Keep: 1\r\n\r\nok")


def test_pub11_hop_by_hop_headers_stripped(gw, probe, connect):
    """PUB-11: hop-by-hop headers, including those named in `Connection`, are not forwarded.

    Sources: linkerd#676; vellum-assistant#1487; cloudflare/pingora#734 (#706);
    elazarl/goproxy#78; RFC 9110 §7.6.1. Expected: the upstream request has `Host: a` and
    `X-Keep: 1` and none of the client's Connection tokens, Keep-Alive, TE (fastgw drops
    trailers, so it sends no TE of its own), Proxy-Connection, Upgrade, X-Internal-Token
    (fastgw may send its own `Connection: keep-alive`); the client response has `X-Keep: 1`
    and body `ok`, and no X-Backend-Secret or upstream Keep-Alive.
    """
    probe.script(replies={"/echo": HOP_RESP})
    c = connect(gw.port)
    c.send(HOP_REQ)
    resp = c.read_response()
    (req,) = probe.wait_requests(1)
    assert req.header("Host") == [b"a"], req
    assert req.header("X-Keep") == [b"1"], req
    for name in ("Keep-Alive", "TE", "Proxy-Connection", "Upgrade", "X-Internal-Token"):
        assert req.header(name) == [], (name, req)
    conn_tokens = {t.strip().lower() for v in req.header("Connection") for t in v.split(b",")}
    assert conn_tokens <= {b"keep-alive", b"close"}, req
    upstream_bytes = probe.all_bytes()
    assert b"secret" not in upstream_bytes and b"timeout=5" not in upstream_bytes
    assert resp.status == 200 and resp.body == b"ok", resp
    assert resp.header("X-Keep") == ["1"], resp
    assert resp.header("X-Backend-Secret") == [] and resp.header("Keep-Alive") == [], resp
    assert resp.tokens("connection") <= {"keep-alive", "close"}, resp
    assert b"s3cr3t" not in c.received


# -- PUB-12 --------------------------------------------------------------------------------

XFF = [
    ("A two client XFF lines",
     b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-For: 198.51.100.7\r\n\r\n",
     b"192.0.2.1, 198.51.100.7, 127.0.0.1"),
    ("B no client XFF", b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n", b"127.0.0.1"),
]


@pytest.mark.parametrize("payload,expected", [(p, e) for _, p, e in XFF], ids=[x[0] for x in XFF])
def test_pub12_x_forwarded_for_appended_as_one_field(gw, probe, connect, payload, expected):
    """PUB-12: X-Forwarded-For is appended to, as one field ($proxy_add_x_forwarded_for).

    Sources: nginx-tests proxy.t ("proxy_add_x_forwarded_for"); golang/go commit 7520f0b
    (issue 3846); aether-lang-dev/aether#1837. Expected: the upstream receives exactly one
    X-Forwarded-For line: A `192.0.2.1, 198.51.100.7, 127.0.0.1`, B `127.0.0.1`.
    """
    c = connect(gw.port)
    c.send(payload)
    resp = c.read_response()
    assert resp.status == 200, resp
    (req,) = probe.wait_requests(1)
    assert req.header("X-Forwarded-For") == [expected], req
    assert probe.all_bytes().lower().count(b"\r\nx-forwarded-for:") == 1


# -- PUB-13 --------------------------------------------------------------------------------

HTTP10_A = b"GET /a HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"
HTTP10_B = b"GET /b HTTP/1.0\r\nHost: a\r\n\r\n"
UP_CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"


def test_pub13_http10_client_gets_no_chunked_response(gw, probe, connect):
    """PUB-13: HTTP/1.0 client, with and without keep-alive, in front of a chunked upstream response.

    Sources: envoy#9797, envoy#7123, node-http-proxy#407, hyper#1634. Expected: A's response
    has no Transfer-Encoding and body `hello`; fastgw's choice (as nginx) is no length and a
    close after the body, so the response does not promise keep-alive and the connection
    closes (B then goes on a new connection). B's response: no chunked coding, signals close,
    and fastgw closes the connection after it.
    """
    probe.script(handler=lambda req: UP_CHUNKED)
    c = connect(gw.port)
    c.send(HTTP10_A)
    a = c.read_response(timeout=5.0)
    assert a.status == 200, a
    assert a.header("Transfer-Encoding") == [] and a.body == b"hello", a
    assert a.header("Content-Length") == [] and a.framing == "close", a
    assert "keep-alive" not in a.tokens("connection"), a
    assert c.closed, "fastgw did not close after the close-delimited response"
    c2 = connect(gw.port)
    c2.send(HTTP10_B)
    b = c2.read_response(timeout=5.0)
    assert b.status == 200, b
    assert b.header("Transfer-Encoding") == [] and b.body == b"hello", b
    assert "keep-alive" not in b.tokens("connection"), b
    closed, extra = c2.wait_closed(2.0)
    assert closed and extra == b"", extra
    assert [r.target for r in probe.requests] == [b"/a", b"/b"]


# -- PUB-14 --------------------------------------------------------------------------------

PIPE_A = (b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\nGET /fast HTTP/1.1\r\nHost: a\r\n\r\n"
          b"GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
          b"GET /after-close HTTP/1.1\r\nHost: a\r\n\r\n")
PIPE_B = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nInvalid\r\n\r\n"


def test_pub14_pipelined_in_order_nothing_after_close(gw, probe, connect):
    """PUB-14 A: pipelined requests all answered, in order, nothing after `Connection: close`.

    Sources: aether-lang-dev/aether#1834; guzba/mummy#142; uvicorn#2238; http-garden server
    bug 45; nginx-tests http_header_buffers.t. The upstream delays `/slow` by 500 ms.
    Expected: exactly three responses in the order /slow, /fast, /last (the third with
    `Connection: close`), then the connection closes; `/after-close` never reaches the
    upstream; no 400 after the third response.
    """
    probe.script(replies={"/slow": Reply(0.5, resp_bytes(b"slow")), "/fast": resp_bytes(b"fast"),
                          "/last": resp_bytes(b"last")})
    c = connect(gw.port)
    c.send(PIPE_A)
    bodies = []
    for _ in range(3):
        r = c.read_response(timeout=5.0)
        assert r.status == 200, r
        bodies.append(r.body)
    assert bodies == [b"slow", b"fast", b"last"]
    assert "close" in r.tokens("connection"), r
    closed, extra = c.wait_closed(2.0)
    assert closed and extra == b"", f"after the closing response: {extra[:200]!r}"
    time.sleep(0.1)
    assert [q.target for q in probe.requests] == [b"/slow", b"/fast", b"/last"]
    assert b"/after-close" not in probe.all_bytes()


def test_pub14_valid_then_invalid_pipelined(gw, probe, connect):
    """PUB-14 B: a valid request pipelined before an invalid one is answered first.

    Sources as PUB-14 A (http-garden server bug 45: the valid request was closed without an
    answer). Expected: first a 200 for `GET /`, then 400 and close.
    """
    c = connect(gw.port)
    c.send(PIPE_B)
    first = c.read_response(timeout=5.0)
    assert first.status == 200 and first.body == b"ok", first
    second = c.read_response(timeout=5.0)
    assert second.status == 400, second
    assert "close" in second.tokens("connection"), second
    closed, extra = c.wait_closed(2.0)
    assert closed and extra == b"", extra
    assert [q.target for q in probe.requests] == [b"/"]


def test_pipelined_partial_head_waits_for_the_request_being_served(make_gw, probe, connect):
    """A partial head pipelined behind a slow request: its client_header_timeout (1 s here)
    starts when that request is done, so the valid request is answered first (1.5 s), and
    then the partial head gets 408 and the connection closes."""
    gw = make_gw(server="client_header_timeout 1s;")
    probe.script(replies={"/slow": Reply(1.5, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")})
    c = connect(gw.port)
    t0 = c.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTTP/1.1\r\nHo")
    first = c.read_response(timeout=5.0)
    assert first.status == 200 and first.body == b"slow", first
    second = c.read_response(timeout=5.0)
    assert second.status == 408, second
    assert second.t_done - first.t_done >= 0.5, (first.t_done, second.t_done)
    assert second.t_done - t0 < 6.0
    closed, _ = c.wait_closed(3.0)
    assert closed


# -- PUB-15 --------------------------------------------------------------------------------

EXPECT_A = b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
EXPECT_B = b"POST /upload HTTP/1.0\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
EXPECT_C = b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-Continue\r\n\r\n"
EXPECT_D_UP = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
EXPECT_E = b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: foo\r\n\r\nhello"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@pytest.mark.parametrize("payload", [EXPECT_A, EXPECT_C], ids=["A 100-continue", "C 100-Continue"])
def test_pub15_expect_100_continue(gw, probe, connect, payload):
    """PUB-15 A, C: `Expect: 100-continue` (matched case-insensitively) from an HTTP/1.1 client.

    Sources: nginx-tests http_expect_100_continue.t; fluxzy.core#625; trafficserver#2543;
    lets-proxy#58, Proxyman#1807; contour#5074. Expected: within 1 s the client receives
    `HTTP/1.1 100 Continue\\r\\n\\r\\n` exactly once; after it sends `hello`, the final 200; the
    upstream saw the 5 body bytes.
    """
    c = connect(gw.port)
    t0 = c.send(payload)
    interim = c.read_response(timeout=1.0 + margin(1.0))
    assert interim.status == 100 and interim.raw == CONTINUE, interim
    assert interim.t_done - t0 < 1.0 + margin(1.0)
    c.send(b"hello")
    final = c.read_response(timeout=5.0)
    assert final.status == 200 and final.body == b"ok", final
    closed, extra = quiet(c)
    assert extra == b"" and not closed
    assert c.received.count(b"100 Continue") == 1
    (req,) = probe.wait_requests(1)
    assert req.body == b"hello", req


def test_pub15_no_100_to_http10_client(gw, probe, connect):
    """PUB-15 B: no `100 Continue` is ever sent to an HTTP/1.0 client.

    Sources as PUB-15 A. The body follows 1 s after the head. Expected: no 100; after the
    body arrives, the final 200.
    """
    c = connect(gw.port)
    c.send(EXPECT_B)
    closed, early = c.wait_closed(timeout=1.0)
    assert early == b"" and not closed, early
    c.send(b"hello")
    final = c.read_response(timeout=5.0)
    assert final.status == 200 and final.body == b"ok", final
    assert b" 100 " not in c.received.split(b"\r\n", 1)[0] and b"100 Continue" not in c.received
    (req,) = probe.wait_requests(1)
    assert req.body == b"hello", req


@pytest.mark.parametrize("buffering", ["on", "off"], ids=["request buffering", "streaming"])
def test_pub15_upstream_early_final_response(make_gw, probe, connect, fresh_ok, buffering):
    """PUB-15 D: the upstream answers 413 as soon as it has the head, without reading the body.

    Sources as PUB-15 A (fluxzy.core#625: stop the body pump on an early final response).
    Expected: the client receives 413; the late body bytes are never sent to a pooled upstream
    connection as if they were a new request; that upstream connection is closed, not pooled.
    With proxy_request_buffering on (the default, as nginx) fastgw answers 100 itself and
    reads the body before any peer is asked; off, the head goes on at once and the body is late.
    """
    gw = make_gw(location=f"proxy_request_buffering {buffering};")
    probe.script(early={"/upload": Reply(EXPECT_D_UP)})
    c = connect(gw.port)
    c.send(EXPECT_A)
    resp = c.read_response(timeout=5.0)
    if resp.status == 100:
        if buffering == "on":
            c.send(b"hello")
        resp = c.read_response(timeout=5.0)
    assert resp.status == 413, resp
    if buffering == "off":
        c.send(b"hello")     # the late body
    time.sleep(0.3)
    upload = [conn for conn in probe.connections if b"POST /upload" in conn.data]
    assert len(upload) == 1, probe.connections
    assert upload[0].wait_closed(2.5) and upload[0].peer_closed_at, \
        "fastgw kept the upstream connection that answered early with Connection: close"
    if "close" in resp.tokens("connection"):
        closed, extra = c.wait_closed(2.0)
        assert closed and extra == b"", extra
    else:
        c.send(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
        after = c.read_response(timeout=5.0)
        assert after.status == 200 and after.body == b"ok", after
    req = fresh_ok()
    assert req.conn_id != upload[0].id
    for conn in probe.connections:
        if conn is not upload[0]:
            assert b"hello" not in conn.data, conn
    assert probe.errors == []


def test_pub15_unknown_expectation_is_417(gw, probe, connect):
    """PUB-15 E: `Expect: foo`.

    Sources: RFC 9110 §10.1.1; nginx-tests http_expect_100_continue.t (417 marked TODO there).
    Expected: fastgw's choice `417 Expectation Failed`, answered at once (never a hang);
    the request is not forwarded.
    """
    c = connect(gw.port)
    t0 = c.send(EXPECT_E)
    resp = c.read_response(timeout=1.0 + margin(1.0))
    assert resp.status == 417, resp
    assert resp.t_done - t0 < margin(0.1)
    time.sleep(0.1)
    assert b"/upload" not in probe.all_bytes()


# -- PUB-16 --------------------------------------------------------------------------------

BODY26 = b"abcdefghijklmnopqrstuvwxyz"
BODYLESS = [
    (b"HEAD", b"/length/head1", b"HTTP/1.1 200 OK\r\nX-Connection: 1\r\nContent-Length: 26\r\n\r\n"),
    (b"GET", b"/length/head2", b"HTTP/1.1 200 OK\r\nX-Connection: 1\r\nContent-Length: 26\r\n\r\n" + BODY26),
    (b"GET", b"/304len", b"HTTP/1.1 304 Not Modified\r\nX-Connection: 1\r\nContent-Length: 100\r\n\r\n"),
    (b"GET", b"/304nolen", b"HTTP/1.1 304 Not Modified\r\nX-Connection: 1\r\n\r\n"),
    (b"GET", b"/204", b"HTTP/1.1 204 No Content\r\nX-Connection: 1\r\n\r\n"),
]


def test_pub16_bodyless_responses_and_upstream_reuse(gw, probe, connect):
    """PUB-16: body-less responses (HEAD, 304, 204) and upstream connection reuse.

    Sources: nginx-tests proxy_keepalive.t; curl#482; vlang/v#26999; freeunit#283, #295;
    lalinsky/dusty#158; http-proxy-middleware#1121, anyproxy#365; rstudio#18541. Expected:
    each response reaches the client promptly (< 100 ms, not after proxy_read_timeout); the
    HEAD response keeps `Content-Length: 26` and has no body; 304/204 carry no body, no added
    Transfer-Encoding, no `0\\r\\n\\r\\n`; every request is served on the same upstream connection
    and the 26-byte body arrives intact.
    """
    probe.script(replies={path: reply for _, path, reply in BODYLESS})
    c = connect(gw.port)
    for method, path, _ in BODYLESS:
        t0 = c.send(method + b" " + path + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        resp = c.read_response(method=method, timeout=5.0)
        assert resp.t_done - t0 < 0.1 + margin(0.1), (path, resp.t_done - t0)
        assert resp.first("X-Connection") == "1", resp
        assert resp.header("Transfer-Encoding") == [], (path, resp)
        if method == b"HEAD":
            assert resp.status == 200 and resp.header("Content-Length") == ["26"], resp
        elif path == b"/length/head2":
            assert resp.status == 200 and resp.body == BODY26 and resp.complete, resp
        else:
            assert resp.status == int(path[1:4]), resp
            assert resp.raw.endswith(b"\r\n\r\n") and b"\r\n\r\n0\r\n\r\n" not in resp.raw, resp
    closed, extra = quiet(c)
    assert extra == b"" and not closed, f"stray bytes after the responses: {extra!r}"
    reqs = probe.requests
    assert [r.target for r in reqs] == [p for _, p, _ in BODYLESS]
    assert len({r.conn_id for r in reqs}) == 1, "the upstream connection was not reused"


# -- PUB-17 --------------------------------------------------------------------------------

UP_A = b"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nSEE-THIS\r\n0\r\n\r\n"
UP_B = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nTEST-OK-IF-YOU-SEE-THIS\n"
UP_C = b"HTTP/1.1 200 OK\r\nContent-Length: 24\r\nConnection: close\r\n\r\nTEST-OK-IF-YOU-SEE-THIS\n"
UP_D = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
        b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nContent-Length: 999\r\n\r\n")
UP_D2 = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
         b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n")
GET_X = b"GET /x HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n"


def test_pub17_chunked_with_close(gw, probe, connect):
    """PUB-17 A: chunked upstream response with `Connection: close`.

    Sources: nginx-tests proxy_chunked.t. Expected: a complete 200 with body `SEE-THIS`.
    """
    probe.script(replies={"/x": Reply(UP_A, close=True)})
    c = connect(gw.port)
    c.send(GET_X)
    resp = c.read_response(timeout=5.0)
    assert resp.status == 200 and resp.complete and resp.body == b"SEE-THIS", resp


def test_pub17_close_delimited_response(gw, probe, connect):
    """PUB-17 B: close-delimited upstream response (no length; the upstream closes).

    Sources: nginx-tests proxy_noclose.t; tempesta#639 (forwarded unframed on a kept-alive
    connection). Expected: the full body `TEST-OK-IF-YOU-SEE-THIS\\n`, framed as chunked or
    sent without length with a close; fastgw's choice for an HTTP/1.1 client is chunked, and
    the client connection then stays usable unless the response says close.
    """
    probe.script(replies={"/x": Reply(UP_B, close=True)})
    c = connect(gw.port)
    c.send(GET_X)
    resp = c.read_response(timeout=5.0)
    assert resp.status == 200 and resp.body == b"TEST-OK-IF-YOU-SEE-THIS\n", resp
    assert resp.framing == "chunked" and resp.complete, resp
    if "close" in resp.tokens("connection"):
        closed, extra = c.wait_closed(2.0)
        assert closed and extra == b""
    else:
        c.send(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        nxt = c.read_response(timeout=5.0)
        assert nxt.status == 200 and nxt.body == b"ok", nxt


def test_pub17_length_satisfied_upstream_stays_open(make_gw, probe, connect):
    """PUB-17 C: Content-Length satisfied while the upstream keeps the socket open (10 s).

    Sources: nginx-tests proxy_noclose.t (Content-Length is used as a hint). Location with
    `proxy_read_timeout 10s`. Expected: the complete response within 500 ms, not after 10 s.
    """
    gw = make_gw(server="location /x { proxy_pass http://app; proxy_read_timeout 10s; }")
    probe.script(replies={"/x": Reply(UP_C)})
    c = connect(gw.port)
    t0 = c.send(GET_X)
    resp = c.read_response(timeout=5.0)
    assert resp.status == 200 and resp.body == b"TEST-OK-IF-YOU-SEE-THIS\n" and resp.complete, resp
    assert resp.t_done - t0 < 0.5 + margin(0.5)


def test_pub17_trailer_not_merged_into_header_section(gw, probe, connect):
    """PUB-17 D2: chunked upstream response with a trailer field.

    Sources: zoxy-io/zoxy#244; trafficserver#11603; tempesta#1902. Expected: body `hello`;
    `X-Checksum` either forwarded as a trailer or dropped (fastgw drops trailers), never in
    the response header section.
    """
    probe.script(replies={"/x": UP_D2})
    c = connect(gw.port)
    c.send(GET_X)
    resp = c.read_response(timeout=5.0)
    assert resp.status == 200 and resp.complete and resp.body == b"hello", resp
    assert resp.header("X-Checksum") == [], resp
    assert all(n.lower() != b"content-length" for n, _ in resp.trailers), resp


def test_pub17_content_length_in_trailer_never_applied(gw, probe, connect):
    """PUB-17 D: a trailer section carrying `Content-Length: 999`.

    Sources as D2. Expected: the trailer `Content-Length: 999` is never forwarded nor applied;
    either the response ends cleanly without trailers, or (headers already sent) the client
    connection is aborted without a clean terminator.
    """
    probe.script(replies={"/x": UP_D})
    c = connect(gw.port)
    c.send(GET_X)
    resp = c.read_response(timeout=5.0)
    assert resp.status == 200, resp
    assert b"999" not in c.received
    assert resp.header("Content-Length") == [], resp
    if resp.complete:
        assert resp.body == b"hello" and resp.trailers == [], resp
    else:
        assert c.closed, "response left unterminated on an open connection"


# -- PUB-18 --------------------------------------------------------------------------------

_BASE = b"HTTP/1.1 200 OK\r\nConnection: close\r\n"
UP_BAD = [
    ("R1 invalid length", _BASE + b"Content-Length: foo\r\n\r\n"),
    ("R2 duplicate length", _BASE + b"Content-Length: 0\r\nContent-Length: 0\r\n\r\n"),
    ("R3 unknown TE", _BASE + b"Transfer-Encoding: foo\r\n\r\n"),
    ("R4 duplicate TE", _BASE + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("R5 CL then TE", _BASE + b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("R6 TE then CL", _BASE + b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n"),
    ("R7 not HTTP at all", b"HELLO WORLD\r\n\r\n"),
]


@pytest.mark.parametrize("up_closes", [True, False], ids=["upstream closes", "upstream stays open"])
@pytest.mark.parametrize("reply", [r for _, r in UP_BAD], ids=[label for label, _ in UP_BAD])
def test_pub18_invalid_upstream_framing_is_502(gw, probe, connect, fresh_ok, reply, up_closes):
    """PUB-18: the upstream sends invalid or ambiguous framing.

    Sources: nginx-tests proxy_duplicate_headers.t (each reply -> 502); h2o#2070. The upstream
    replies then closes (as in the case) or keeps the socket open (then fastgw itself must
    close it). Expected: 502 for every reply, no partial 200 ever; the upstream connection is
    closed and never pooled; the client connection remains usable or is closed cleanly.
    """
    probe.script(replies={"/": Reply(reply, close=up_closes)})
    c = connect(gw.port)
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    resp = c.read_response(timeout=5.0)
    assert resp.status == 502, resp
    assert c.received.count(b"HTTP/1.1") == 1 and b" 200 " not in c.received, c.received[:300]
    (bad,) = [conn for conn in probe.connections if conn.requests and conn.requests[0].target == b"/"]
    assert bad.wait_closed(2.0), "the upstream connection with the broken response stayed open"
    if not up_closes:
        assert bad.peer_closed_at is not None
    if "close" in resp.tokens("connection"):
        closed, extra = c.wait_closed(2.0)
        assert closed and extra == b"", extra
    else:
        c.send(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        nxt = c.read_response(timeout=5.0)
        assert nxt.status == 200 and nxt.body == b"ok", nxt
    for _ in range(2):
        assert fresh_ok().conn_id != bad.id


def test_second_response_to_one_request_is_never_relayed(gw, probe, connect, fresh_ok):
    """The upstream sends two complete responses to one request (a desync, or a poisoned
    upstream): the client gets the first only, and that upstream connection is closed,
    never pooled."""
    probe.script(replies={"/two": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                                  b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\nX-Evil: 1\r\n\r\nbad"})
    c = connect(gw.port)
    c.send(b"GET /two HTTP/1.1\r\nHost: a\r\n\r\n")
    resp = c.read_response(timeout=5.0)
    assert resp.status == 200 and resp.body == b"ok", resp
    c.send(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
    after = c.read_response(timeout=5.0)
    assert after.status == 200 and after.body == b"ok", after
    assert b"201" not in c.received and b"X-Evil" not in c.received
    (two,) = [pc for pc in probe.connections if any(r.target == b"/two" for r in pc.requests)]
    assert two.wait_closed(3.0)
    assert all(r.target == b"/two" for r in two.requests)
    fresh_ok()


# -- PUB-19 --------------------------------------------------------------------------------

FULL = os.environ.get("FASTGW_FULL_CASES") == "1"
STALE_G = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
STALE_P = b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"


@pytest.mark.timeout(400 if FULL else 120)   # 200 rounds of ~1 s need more than the default
@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("close_with", ["FIN", "RST"])
def test_pub19_upstream_closes_pooled_connection_at_reuse(make_gw, probe, method, close_with):
    """PUB-19: the upstream closes a pooled keep-alive connection just as it is reused.

    Sources: sozu#1442; caddy#6452; h2o#281; envoy#1979; aether-lang-dev/aether#1839;
    openresty#200; maw-js#2658. Upstream pool keepalive_timeout 60s; the probe closes every
    idle connection exactly T after its last response (FIN, or RST with SO_LINGER 0); each
    round is a new client connection after a sleep uniform in [0.9 T, 1.1 T]. T = 1.0 s and
    200 rounds with FASTGW_FULL_CASES=1, else T = 0.2 s and 20 rounds. Expected: GET, 0
    errors (fastgw detects the closed idle connection or retries once on a new one); POST,
    every answer 200 or 502, never processed twice by the upstream, no malformed status
    line; no response takes longer than 2 s.
    """
    idle, rounds = (1.0, 200) if FULL else (0.2, 20)
    probe.script(idle_close=idle, idle_rst=close_with == "RST")
    gw = make_gw(upstream="keepalive_timeout 60s;")
    payload = STALE_G if method == "GET" else STALE_P
    rng = random.Random(19)
    problems = []
    statuses = []
    for i in range(rounds):
        time.sleep(rng.uniform(0.9 * idle, 1.1 * idle))
        mark = probe.mark()
        t0 = time.monotonic()
        try:
            with Client(gw.port) as c:
                c.send(payload)
                resp = c.read_response(timeout=5.0)
        except (TimeoutError, EOFError, ValueError, OSError) as exc:
            problems.append(f"round {i}: {type(exc).__name__}: {exc}")
            continue
        elapsed = time.monotonic() - t0
        statuses.append(resp.status)
        processed = [r for r in probe.requests_since(mark) if r.method == method.encode()]
        if elapsed > 2.0 + 0.5:
            problems.append(f"round {i}: answered after {elapsed:.2f}s")
        if method == "GET" and (resp.status != 200 or resp.body != b"ok"):
            problems.append(f"round {i}: GET answered {resp.status} {resp.body[:80]!r}")
        if method == "POST":
            if resp.status not in (200, 502):
                problems.append(f"round {i}: POST answered {resp.status}")
            if len(processed) > 1:
                problems.append(f"round {i}: the upstream processed the POST {len(processed)} times")
            if resp.status == 200 and len(processed) != 1:
                problems.append(f"round {i}: 200 but the upstream processed the POST {len(processed)} times")
    assert not problems, f"{len(problems)} problems in {rounds} rounds: {problems}"
    assert probe.errors == []
    assert len(probe.connections) > 1, "the probe never closed an idle connection"


# -- PUB-20 --------------------------------------------------------------------------------

TIMEOUT_LOCATIONS = """
    location /slowhdr { proxy_pass http://app; proxy_connect_timeout 1s; proxy_read_timeout 10s; }
    location /refused { proxy_pass http://127.0.0.1:@DEAD@; }
"""


def _timed_get(port, path, timeout=15.0):
    with Client(port) as c:
        t0 = c.send(b"GET " + path + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        resp = c.read_response(timeout=timeout)
    return resp, resp.t_done - t0


def test_pub20a_read_timeout_is_504(make_gw, probe):
    """PUB-20 (a): `/hang` - the upstream accepts and reads the request but never answers.

    Sources: nginx-tests proxy.t, proxy_next_upstream.t; antiwork/gumroad#7538. Expected:
    504 at proxy_read_timeout 2.0 s (± 0.3 s; here 1.7 s to 2.0 s + margin), and fastgw closes
    the upstream connection.
    """
    gw = make_gw(server=TIMEOUT_LOCATIONS)
    probe.script(replies={"/hang": HANG})
    resp, elapsed = _timed_get(gw.port, b"/hang")
    assert resp.status == 504, resp
    assert 2.0 - 0.3 <= elapsed <= 2.0 + margin(2.0), elapsed
    (conn,) = [c for c in probe.connections if c.requests and c.requests[0].target == b"/hang"]
    assert conn.wait_closed(1.0) and conn.peer_closed_at is not None


def test_pub20b_refused_is_502_at_once(make_gw, probe):
    """PUB-20 (b): `/refused` - nothing listens on the upstream port.

    Expected: 502 within 100 ms (+ margin).
    """
    gw = make_gw(server=TIMEOUT_LOCATIONS)
    resp, elapsed = _timed_get(gw.port, b"/refused")
    assert resp.status == 502, resp
    assert elapsed < 0.1 + margin(0.1), elapsed


def test_pub20c_connect_timeout_is_504(make_gw, probe):
    """PUB-20 (c): an upstream whose connect never completes (a listener with a full backlog).

    Expected: 504 (fastgw's choice for a timeout; 502 is allowed by the case) at the 1 s
    proxy_connect_timeout - not later.
    """
    with blackhole() as port:
        gw = make_gw(server="location /blackhole { proxy_pass http://127.0.0.1:%d; "
                            "proxy_connect_timeout 1s; }" % port)
        resp, elapsed = _timed_get(gw.port, b"/blackhole")
    assert resp.status == 504, resp
    assert 0.9 <= elapsed <= 1.0 + margin(1.0), elapsed


def test_pub20d_connect_timer_stops_once_connected(make_gw, probe):
    """PUB-20 (d): `/slowhdr` (connect 1 s, read 10 s) - the upstream answers after 3 s.

    Sources: nginx-tests proxy.t location /timeout. Expected: 200 after about 3 s (the connect
    timer stops once connected).
    """
    gw = make_gw(server=TIMEOUT_LOCATIONS)
    probe.script(replies={"/slowhdr": Reply(3.0, resp_bytes(b"slow"))})
    resp, elapsed = _timed_get(gw.port, b"/slowhdr")
    assert resp.status == 200 and resp.body == b"slow", resp
    assert 3.0 <= elapsed <= 3.0 + margin(3.0), elapsed


def test_pub20e_read_timeout_is_between_reads(make_gw, probe):
    """PUB-20 (e): `/drip` - the head at once, then one body byte per second (5 bytes).

    Expected: 200 with the full 5-byte body: proxy_read_timeout (2 s) is an idle timer between
    reads, not a total deadline.
    """
    gw = make_gw(server=TIMEOUT_LOCATIONS)
    probe.script(replies={"/drip": Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                                         Drip(b"hello", 1.0))})
    resp, elapsed = _timed_get(gw.port, b"/drip")
    assert resp.status == 200 and resp.complete and resp.body == b"hello", resp
    assert 5.0 <= elapsed <= 5.0 + margin(5.0), elapsed


# -- PUB-21 --------------------------------------------------------------------------------

SSE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n")
SSE_REQ = b"GET /events HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\r\nAccept-Encoding: gzip\r\n\r\n"
EVENTS = [b"data: %d\n\n" % n for n in range(1, 6)]


@pytest.mark.parametrize("extra", [b"", b"X-Accel-Buffering: no\r\n"], ids=["plain", "X-Accel-Buffering no"])
def test_pub21_server_sent_events_stream(gw, probe, connect, extra):
    """PUB-21: Server-Sent Events must stream, not buffer.

    Sources: nginx#1505; caddy#4247, #6293; garrytan/gbrain#2547; lua-resty-http#181;
    mdn/dom-examples#26. The upstream sends the head at once, then one chunk `data: <n>\\n\\n`
    every 1 s (n = 1..5), then the last chunk. Expected: the client has the head within
    200 ms (+ margin) of the upstream sending it, before any event; each event within 200 ms
    (+ margin) of the upstream writing it, before the next is written (no coalescing); no
    compression; the stream is not cut by the 2 s proxy_read_timeout; the chunked terminator
    arrives.
    """
    steps = [SSE_HEAD + extra + b"\r\n"]
    for event in EVENTS:
        steps += [1.0, chunk(event)]
    steps.append(chunk(b""))
    probe.script(replies={"/events": Reply(*steps)})
    c = connect(gw.port)
    c.send(SSE_REQ)
    resp = c.read_response(timeout=5 * 1.0 + 5.0)
    assert resp.status == 200 and resp.complete and resp.framing == "chunked", resp
    assert resp.first("Content-Type") == "text/event-stream", resp
    assert resp.header("Content-Encoding") == [], resp
    assert resp.body == b"".join(EVENTS), resp
    assert resp.chunks == EVENTS, f"events coalesced or split: {resp.chunks!r}"
    (conn,) = [pc for pc in probe.connections if pc.requests]
    sent = conn.sent
    assert len(sent) == 7, sent
    head_sent = sent[0][0]
    event_sent = [t for t, _ in sent[1:6]]
    allowance = 0.2 + margin(0.2)
    received = c.received
    head_at = c.arrival(received.index(b"\r\n\r\n") + 3)
    assert head_at - head_sent < allowance, head_at - head_sent
    assert head_at < event_sent[0], "the head was held until the first event"
    pos = received.index(b"\r\n\r\n") + 4
    for n, event in enumerate(EVENTS):
        end = received.index(event, pos) + len(event) - 1
        pos = end + 1
        at = c.arrival(end)
        assert at - event_sent[n] < allowance, (n + 1, at - event_sent[n])
        if n + 1 < len(EVENTS):
            assert at < event_sent[n + 1], f"event {n + 1} arrived only with event {n + 2}"


# -- PUB-22 --------------------------------------------------------------------------------

WS_CONF = """
    location /ws { proxy_pass http://app; proxy_http_version 1.1;
                   proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection "upgrade";
                   proxy_read_timeout 2s; }
"""
WS_HANDSHAKE = (b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
                b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
WS_EARLY = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"   # masked text frame "Hello" (RFC 6455)
WS_101 = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
WS_NO_UPGRADE = b"GET /ws HTTP/1.1\r\nHost: a\r\n\r\n"


def ws_frame(payload, opcode=0x2, mask=b"\x01\x02\x03\x04"):
    """A masked client WebSocket frame (RFC 6455 §5.2) carrying ``payload``."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def test_pub22_websocket_upgrade_pass_through(make_gw, probe, connect):
    """PUB-22 A: WebSocket upgrade pass-through, with a frame in the same write as the handshake.

    Sources: nginx-tests proxy_upgrade.t; vertx-http-proxy#106 (`Connection: keep-alive,
    Upgrade`); dsh-auth-gate#50; hashbang/shell-server#119. The probe answers 101 and then
    echoes every byte. Expected: the upstream receives `Upgrade: websocket`, a Connection
    header containing `upgrade`, the Sec-WebSocket-* headers unchanged, then the 11 frame bytes;
    the client receives 101 with `Upgrade: websocket`, `Connection: upgrade` and the unchanged
    Sec-WebSocket-Accept; then bytes flow both ways unchanged (a 48 KiB message echoed intact,
    10 messages in order).
    """
    gw = make_gw(server=WS_CONF)
    probe.script(replies={"/ws": Reply(WS_101, echo=True)})
    c = connect(gw.port)
    c.send(WS_HANDSHAKE + WS_EARLY)
    resp = c.read_response(timeout=5.0)
    assert resp.status == 101, resp
    assert resp.header("Upgrade") == ["websocket"], resp
    assert "upgrade" in resp.tokens("connection"), resp
    assert resp.header("Sec-WebSocket-Accept") == ["s3pPLMBiTxaQ9kYGzzhZRbK+xOo="], resp
    (conn,) = [pc for pc in probe.connections if pc.requests]
    req = conn.requests[0]
    assert req.header("Upgrade") == [b"websocket"], req
    assert b"upgrade" in {t.strip().lower() for v in req.header("Connection") for t in v.split(b",")}, req
    assert req.header("Sec-WebSocket-Version") == [b"13"], req
    assert req.header("Sec-WebSocket-Key") == [b"dGhlIHNhbXBsZSBub25jZQ=="], req
    assert c.read_exactly(len(WS_EARLY), timeout=3.0) == WS_EARLY
    assert conn.data.endswith(b"\r\n\r\n" + WS_EARLY)
    big = ws_frame(bytes(range(256)) * 192)          # 48 KiB message
    c.send(big)
    assert c.read_exactly(len(big), timeout=5.0) == big
    small = [ws_frame(b"message %d" % i, opcode=0x1) for i in range(10)]
    for frame in small:
        c.send(frame)
    assert c.read_exactly(sum(map(len, small)), timeout=5.0) == b"".join(small)


def test_pub22_no_upgrade_requested_never_101(make_gw, probe, connect, fresh_ok):
    """PUB-22 B: the client did not ask to upgrade, the upstream still answers 101.

    Sources: nginx-tests proxy_upgrade.t ("handshake noupgrade"). Expected: the client never
    receives 101; fastgw answers with an error (502, the case's recommendation: an unsolicited
    101 is an invalid upstream response) and does not enter tunnel mode. The 502 must be
    fastgw's decision, not the fallout of an exception escaping the upstream protocol (no
    traceback in fastgw's output).
    """
    gw = make_gw(server=WS_CONF)
    probe.script(replies={"/ws": Reply(WS_101)})
    c = connect(gw.port)
    c.send(WS_NO_UPGRADE)
    resp = c.read_response(timeout=5.0)
    assert resp.status != 101 and b" 101 " not in c.received, resp
    assert resp.status == 502, resp
    if "close" in resp.tokens("connection"):
        closed, extra = c.wait_closed(2.0)
        assert closed and extra == b""
    else:
        c.send(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
        after = c.read_response(timeout=5.0)
        assert after.status == 200 and after.body == b"ok", after
    fresh_ok()
    assert "Traceback" not in gw.output(), gw.output()[-3000:]
