"""WebSocket and Upgrade (issue 7, point 8), beyond case PUB-22: through a real fastgw and the probe.

A location tunnels the way nginx does: it forwards the client's Upgrade with
``proxy_set_header Upgrade $http_upgrade`` and a Connection asking for it (a
literal "upgrade" or the ``map $http_upgrade $connection_upgrade`` idiom); the
tunnel opens after, and only after, the upstream answers 101. Anything else is
plain HTTP: a refused upgrade is an ordinary response and the connection goes on
with a fresh parser; another protocol (h2c) is never forwarded.
"""

import time

from fastgw.testing.harness import wait_until
from fastgw.testing.probe import Reply

from test_proxy_semantics import WS_101, WS_EARLY, WS_HANDSHAKE, ws_frame

MAP_HTTP = """
    map $http_upgrade $connection_upgrade { default upgrade; '' close; }
"""
MAP_SERVER = """
    location /ws { proxy_pass http://app; proxy_http_version 1.1;
                   proxy_set_header Upgrade $http_upgrade;
                   proxy_set_header Connection $connection_upgrade;
                   proxy_read_timeout 1s; }
    location = /other { return 200 "other"; }
    location /plain { proxy_pass http://app; }
"""
H2C = (b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
       b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")


def _forwarded(probe, path):
    (req,) = [r for r in probe.requests if r.target == path]
    return req


def _tokens(req, name):
    return {t.strip().lower() for v in req.header(name) for t in v.split(b",")}


def test_map_idiom_tunnels(make_gw, probe, connect):
    """The `map $http_upgrade $connection_upgrade` idiom: a WebSocket handshake becomes a tunnel."""
    gw = make_gw(http=MAP_HTTP, server=MAP_SERVER)
    probe.script(replies={"/ws": Reply(WS_101, echo=True)})
    c = connect(gw.port)
    c.send(WS_HANDSHAKE + WS_EARLY)
    resp = c.read_response(timeout=5.0)
    assert resp.status == 101, resp
    assert resp.header("Upgrade") == ["websocket"], resp
    req = _forwarded(probe, b"/ws")
    assert req.header("Upgrade") == [b"websocket"], req
    assert "upgrade" in {t.decode() for t in _tokens(req, "Connection")}, req
    assert c.read_exactly(len(WS_EARLY), timeout=3.0) == WS_EARLY
    frame = ws_frame(b"x" * 70000)
    c.send(frame)
    assert c.read_exactly(len(frame), timeout=5.0) == frame


def test_map_idiom_plain_request_gets_connection_close(make_gw, probe, connect):
    """Without Upgrade the map yields `close`: forwarded as configured, and no Upgrade field."""
    gw = make_gw(http=MAP_HTTP, server=MAP_SERVER)
    c = connect(gw.port)
    c.send(b"GET /ws HTTP/1.1\r\nHost: a\r\n\r\n")
    resp = c.read_response(timeout=5.0)
    assert resp.status == 200 and resp.body == b"ok", resp
    req = _forwarded(probe, b"/ws")
    assert req.header("Upgrade") == [], req
    assert _tokens(req, "Connection") == {b"close"}, req


def test_refused_upgrade_goes_on_as_http(make_gw, probe, connect):
    """The upstream refuses (403): relayed as an ordinary response; what the client sent
    after the handshake is read as HTTP by a fresh parser and routed by fastgw itself."""
    gw = make_gw(http=MAP_HTTP, server=MAP_SERVER)
    probe.script(replies={"/ws": b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope"})
    c = connect(gw.port)
    c.send(WS_HANDSHAKE + b"GET /other HTTP/1.1\r\nHost: a\r\n\r\n")
    first = c.read_response(timeout=5.0)
    assert first.status == 403 and first.body == b"nope", first
    assert "upgrade" not in first.tokens("connection"), first
    second = c.read_response(timeout=5.0)
    assert second.status == 200 and second.body == b"other", second
    # /other was answered by fastgw's own location, never sent upstream.
    assert b"/other" not in probe.all_bytes()
    # And the connection is still HTTP: one more request through the proxy.
    c.send(b"GET /plain HTTP/1.1\r\nHost: a\r\n\r\n")
    third = c.read_response(timeout=5.0)
    assert third.status == 200 and third.body == b"ok", third


def test_refused_upgrade_frame_after_it_is_a_bad_request(make_gw, probe, connect):
    """Frame bytes sent early after a refused handshake are not HTTP: 400 and close,
    and they never reach the upstream."""
    gw = make_gw(http=MAP_HTTP, server=MAP_SERVER)
    probe.script(replies={"/ws": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno"})
    c = connect(gw.port)
    c.send(WS_HANDSHAKE + WS_EARLY)
    first = c.read_response(timeout=5.0)
    assert first.status == 200 and first.body == b"no", first
    second = c.read_response(timeout=5.0)
    assert second.status == 400, second
    closed, _ = c.wait_closed(3.0)
    assert closed
    assert WS_EARLY not in probe.all_bytes()


def test_location_without_upgrade_never_tunnels(make_gw, probe, connect):
    """A location that does not set Upgrade serves the handshake as a plain GET."""
    gw = make_gw(http=MAP_HTTP, server=MAP_SERVER)
    c = connect(gw.port)
    c.send(WS_HANDSHAKE.replace(b"/ws", b"/plain"))
    resp = c.read_response(timeout=5.0)
    assert resp.status == 200 and resp.body == b"ok", resp
    req = _forwarded(probe, b"/plain")
    assert req.header("Upgrade") == [], req
    assert b"upgrade" not in _tokens(req, "Connection"), req
    # Sec-WebSocket-* are end-to-end fields: they go on, harmless without Upgrade.
    assert req.header("Sec-WebSocket-Version") == [b"13"], req


def test_h2c_upgrade_is_stripped(make_gw, probe, connect):
    """`Upgrade: h2c` on a WebSocket location: no Upgrade, no Connection: upgrade, no
    HTTP2-Settings upstream; the request is served as HTTP/1.1."""
    gw = make_gw(http=MAP_HTTP, server=MAP_SERVER)
    c = connect(gw.port)
    c.send(H2C)
    resp = c.read_response(timeout=5.0)
    assert resp.status == 200 and resp.body == b"ok", resp
    req = _forwarded(probe, b"/ws")
    assert req.header("Upgrade") == [], req
    assert req.header("HTTP2-Settings") == [], req
    assert b"upgrade" not in _tokens(req, "Connection"), req
    c.send(b"GET /other HTTP/1.1\r\nHost: a\r\n\r\n")
    assert c.read_response(timeout=5.0).body == b"other"


def test_tunnel_idle_timeout_closes_both_sides(make_gw, probe, connect):
    """proxy_read_timeout (1 s here) is an idle timeout of the tunnel: an upstream that
    sends nothing gets both sides closed; the access log shows 101."""
    gw = make_gw(http=MAP_HTTP, server=MAP_SERVER)
    probe.script(replies={"/ws": Reply(WS_101, echo=True)})
    c = connect(gw.port)
    c.send(WS_HANDSHAKE)
    assert c.read_response(timeout=5.0).status == 101
    start = time.monotonic()
    closed, _ = c.wait_closed(6.0)
    waited = time.monotonic() - start
    assert closed, "tunnel still open after 6 s with proxy_read_timeout 1s"
    assert 0.5 <= waited <= 4.0, waited
    (conn,) = [pc for pc in probe.connections if pc.requests]
    conn.wait_closed(3.0)
    assert conn.closed
    # The access log is flushed once a second.
    wait_until(lambda: " 101 " in gw.access_log(), timeout=5.0, message="101 in the access log")


def test_upstream_close_ends_tunnel(make_gw, probe, connect):
    """The upstream closes the tunnel: what it sent reaches the client, then the close."""
    gw = make_gw(http=MAP_HTTP, server=MAP_SERVER)
    probe.script(replies={"/ws": Reply(WS_101 + b"\x81\x03bye", 0.2, close=True)})
    c = connect(gw.port)
    c.send(WS_HANDSHAKE)
    assert c.read_response(timeout=5.0).status == 101
    assert c.read_exactly(5, timeout=3.0) == b"\x81\x03bye"
    closed, extra = c.wait_closed(3.0)
    assert closed and extra == b""


def test_client_close_ends_tunnel(make_gw, probe, connect):
    """The client closes the tunnel: the upstream connection is closed too, never pooled."""
    gw = make_gw(http=MAP_HTTP, server=MAP_SERVER)
    probe.script(replies={"/ws": Reply(WS_101, echo=True)})
    c = connect(gw.port)
    c.send(WS_HANDSHAKE)
    assert c.read_response(timeout=5.0).status == 101
    (conn,) = [pc for pc in probe.connections if pc.requests]
    c.close()
    conn.wait_closed(3.0)
    assert conn.closed
    # The next request takes a new upstream connection.
    c2 = connect(gw.port)
    c2.send(b"GET /plain HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert c2.read_response(timeout=5.0).status == 200
    (req,) = [r for r in probe.requests if r.target == b"/plain"]
    assert req.conn_id != conn.id


def test_upgrade_request_with_a_body_keeps_its_body(make_gw, probe, connect):
    """`Upgrade: h2c` + `Connection: Upgrade` on a POST with a body (what `curl --http2 -d`
    sends): httptools would skip such a body, and its bytes would be read as the next
    request. fastgw reads the body as a body: the upstream gets all of it, never a
    second request made of it, with either request buffering."""
    gw = make_gw(server="location /stream { proxy_pass http://app; proxy_request_buffering off; }")
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
    for path in (b"/buffered", b"/stream"):
        c = connect(gw.port)
        c.send(b"POST " + path + b" HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
               b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Length: %d\r\n\r\n" % len(smuggled) + smuggled)
        resp = c.read_response(timeout=5.0)
        assert resp.status == 200 and resp.body == b"ok", resp
        c.send(b"GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        after = c.read_response(timeout=5.0)
        assert after.status == 200, after
        (req,) = [r for r in probe.requests if r.target == path]
        assert req.body == smuggled, req
        assert req.header("Upgrade") == [], req
    assert not [r for r in probe.requests if r.target == b"/smuggled"]


def test_chunked_upgrade_request_body(make_gw, probe, connect):
    """The same with a chunked body: re-framed and forwarded whole."""
    gw = make_gw()
    c = connect(gw.port)
    c.send(b"POST /c HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    resp = c.read_response(timeout=5.0)
    assert resp.status == 200 and resp.body == b"ok", resp
    (req,) = probe.wait_requests(1)
    assert req.body == b"hello"


def test_two_upgrade_fields_are_not_a_websocket_handshake(make_gw, probe, connect):
    """`Upgrade: websocket` and `Upgrade: h2c` as two fields: not RFC 6455's handshake,
    served as a plain GET with no Upgrade upstream."""
    gw = make_gw(http=MAP_HTTP, server=MAP_SERVER)
    probe.script(replies={"/ws": Reply(WS_101, echo=True)})
    c = connect(gw.port)
    c.send(WS_HANDSHAKE.replace(b"Upgrade: websocket\r\n", b"Upgrade: websocket\r\nUpgrade: h2c\r\n"))
    resp = c.read_response(timeout=5.0)
    assert resp.status == 502, resp  # the probe's 101 was not asked for
    req = _forwarded(probe, b"/ws")
    assert req.header("Upgrade") == [], req
