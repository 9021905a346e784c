"""Proxying through a real fastgw process in front of the real sample upstream."""

import contextlib
import hashlib
import http.client
import json
import socket
import time

import pytest

from fastgw.testing.harness import parse_responses, raw_request, wait_until


def request(port, method="GET", path="/", body=None, headers=None, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def stats(backend_port):
    return json.loads(request(backend_port, path="/__stats")[2])


def echo(port, method="GET", path="/echo", body=None, headers=None):
    status, hdrs, data = request(port, method, path, body, headers)
    assert status == 200, (status, data)
    return json.loads(data)


def test_get_is_proxied(base_gateway, backend):
    gw = base_gateway()
    status, headers, body = request(gw.port, path="/anything?size=123")
    assert status == 200
    assert body == b"x" * 123
    assert headers["X-Backend-Port"] == str(backend)
    assert headers["Server"] == "fastgw"
    assert "Date" in headers


@pytest.mark.parametrize("size", [0, 1, 65536 + 7, 1024 * 1024])
def test_post_body_with_content_length(base_gateway, size):
    gw = base_gateway()
    body = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    data = echo(gw.port, "POST", "/echo", body, {"Content-Type": "application/octet-stream"})
    assert data["method"] == "POST"
    assert data["body_len"] == size
    assert data["body_sha256"] == hashlib.sha256(body).hexdigest()
    names = [n.lower() for n, _ in data["headers"]]
    assert names.count("content-length") == 1


@pytest.mark.parametrize("buffering", ["on", "off"])
def test_post_chunked_body_is_reframed(base_gateway, buffering):
    """A chunked request body is re-framed, chunk extensions dropped: with
    proxy_request_buffering on (the default, as nginx) it goes on whole with its own
    Content-Length; off, it streams with fastgw's own chunk lines."""
    gw = base_gateway(http_extra=f"proxy_request_buffering {buffering};")
    chunks = [b"a" * 10, b"b" * 70000, b"c"]
    payload = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    raw = (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
           b"Connection: close\r\n\r\n" + payload)
    (status, headers, body), = parse_responses(raw_request(gw.port, raw))
    assert status == 200
    data = json.loads(body)
    assert data["body_len"] == sum(map(len, chunks))
    assert data["body_sha256"] == hashlib.sha256(b"".join(chunks)).hexdigest()
    sent = {n.lower(): v for n, v in data["headers"]}
    if buffering == "on":
        assert sent["content-length"] == str(sum(map(len, chunks)))
        assert "transfer-encoding" not in sent
    else:
        assert sent["transfer-encoding"] == "chunked"
        assert "content-length" not in sent


def test_body_over_client_max_body_size_is_413(base_gateway, backend):
    gw = base_gateway(extra="location /small { proxy_pass http://app; client_max_body_size 10; }")
    request(backend, path="/__reset")
    status, _, _ = request(gw.port, "POST", "/small", b"x" * 11)
    assert status == 413
    raw = (b"POST /small HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"6\r\nxxxxxx\r\n6\r\nxxxxxx\r\n0\r\n\r\n")
    (status, headers, _), = parse_responses(raw_request(gw.port, raw))
    assert status == 413
    assert headers["connection"] == "close"
    assert request(gw.port, "POST", "/small", b"x" * 10)[0] == 200


def test_upstream_keepalive_reuses_connections(base_gateway, backend):
    gw = base_gateway()
    request(backend, path="/__reset")
    for _ in range(20):
        assert request(gw.port, path="/")[0] == 200
    s = stats(backend)
    assert s["requests_total"] == 20
    # One connection from the gateway, one for this /__stats request.
    assert s["connections_total"] == 2


def test_without_keepalive_each_request_opens_a_connection(gateway, backend):
    gw = gateway(f"""
        events {{ }}
        error_log logs/error.log notice;
        http {{ server {{ listen 127.0.0.1:{{port}};
            location / {{ proxy_pass http://127.0.0.1:{backend}; }} }} }}""")
    request(backend, path="/__reset")
    for _ in range(5):
        assert request(gw.port)[0] == 200
    data = echo(gw.port)
    sent = {n.lower(): v for n, v in data["headers"]}
    assert sent["connection"] == "close"
    assert sent["host"] == f"127.0.0.1:{backend}"
    # One per proxied request, plus this /__stats request.
    assert stats(backend)["connections_total"] == 7


def test_pipelined_requests_are_answered_in_order(base_gateway):
    gw = base_gateway()
    sizes = [5, 300, 0, 70000, 1]
    raw = b"".join(b"GET /p?size=%d HTTP/1.1\r\nHost: t\r\n\r\n" % n for n in sizes)
    raw += b"GET /last?size=2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    responses = parse_responses(raw_request(gw.port, raw))
    assert [len(body) for _, _, body in responses] == sizes + [2]
    assert all(status == 200 for status, _, _ in responses)


def test_pipelined_requests_with_slow_first_response(base_gateway):
    gw = base_gateway()
    raw = (b"GET /a?latency=300&size=1 HTTP/1.1\r\nHost: t\r\n\r\n"
           b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
           b"GET /c?size=3 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    responses = parse_responses(raw_request(gw.port, raw))
    assert [r[0] for r in responses] == [200, 200, 200]
    assert responses[0][2] == b"x"
    assert json.loads(responses[1][2])["body_len"] == 3
    assert responses[2][2] == b"xxx"


def test_refused_upstream_is_502(gateway):
    from fastgw.testing.harness import free_port
    dead = free_port()
    gw = gateway(f"""
        events {{ }}
        error_log logs/error.log notice;
        http {{ server {{ listen 127.0.0.1:{{port}};
            location / {{ proxy_pass http://127.0.0.1:{dead}; }} }} }}""")
    t0 = time.monotonic()
    status, _, body = request(gw.port)
    assert status == 502
    assert b"502 Bad Gateway" in body
    assert time.monotonic() - t0 < 1.0
    assert "connect() failed (111: Connection refused) while connecting to upstream" in gw.error_log()


def test_upstream_closing_without_response_is_502(base_gateway):
    gw = base_gateway()
    assert request(gw.port, path="/x?drop=1")[0] == 502
    assert "upstream prematurely closed connection" in gw.error_log()
    assert request(gw.port, path="/x")[0] == 200


def test_upstream_too_slow_is_504(base_gateway):
    gw = base_gateway(extra="location /slow { proxy_pass http://app; proxy_read_timeout 1s; }")
    t0 = time.monotonic()
    status, _, _ = request(gw.port, path="/slow?stall=1")
    elapsed = time.monotonic() - t0
    assert status == 504
    assert 0.5 <= elapsed < 3.0
    assert "upstream timed out" in gw.error_log()
    assert request(gw.port, path="/")[0] == 200


def test_idle_upstream_close_is_retried_transparently(base_gateway, backend):
    gw = base_gateway()
    # close=1 makes the upstream close after answering; with a keep-alive race the
    # next request would meet a dead pooled connection: it must still succeed.
    for _ in range(10):
        assert request(gw.port, path="/?close=1")[0] == 200
        assert request(gw.port, path="/")[0] == 200


def test_http10_client(base_gateway):
    gw = base_gateway()
    out = raw_request(gw.port, b"GET /?size=4 HTTP/1.0\r\n\r\n")
    (status, headers, body), = parse_responses(out)
    assert status == 200 and body == b"xxxx"
    assert headers.get("connection") == "close"
    out = raw_request(gw.port, b"GET /?size=4 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                      timeout=1.0)
    (status, headers, body), = parse_responses(out)
    assert headers["connection"] == "keep-alive"
    # An upstream chunked response reaches an HTTP/1.0 client delimited by the close.
    out = raw_request(gw.port, b"GET /?size=50&chunked=1 HTTP/1.0\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head and body == b"x" * 50


def test_upstream_chunked_and_eof_responses_reach_11_clients_chunked(base_gateway):
    gw = base_gateway()
    for query in (b"chunked=1", b"eof=1"):
        out = raw_request(gw.port, b"GET /?size=1000&%s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % query)
        (status, headers, body), = parse_responses(out)
        assert status == 200
        assert headers["transfer-encoding"] == "chunked"
        assert body == b"x" * 1000


def test_large_response_streams_intact(base_gateway):
    gw = base_gateway()
    status, _, body = request(gw.port, path="/?size=8388608")
    assert status == 200 and len(body) == 8388608


def test_hop_by_hop_headers_are_not_forwarded(base_gateway):
    gw = base_gateway()
    data = echo(gw.port, headers={
        "Connection": "keep-alive, X-Secret", "X-Secret": "1", "Keep-Alive": "timeout=5",
        "TE": "trailers", "Proxy-Connection": "keep-alive", "Upgrade": "h2c", "X-Kept": "yes",
    })
    sent = {n.lower(): v for n, v in data["headers"]}
    for name in ("connection", "x-secret", "keep-alive", "te", "proxy-connection", "upgrade"):
        assert name not in sent
    assert sent["x-kept"] == "yes"
    assert sent["host"] == "app"


def test_proxy_set_header_with_variables(base_gateway):
    gw = base_gateway(extra="""
        location /vars {
            proxy_pass http://app/echo;
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Uri "$request_method $uri $args";
            proxy_set_header X-Empty "";
        }""")
    data = echo(gw.port, path="/vars?a=1", headers={"Host": "Example.TEST:81",
                                                    "X-Forwarded-For": "192.0.2.1", "X-Empty": "client"})
    sent = {n.lower(): v for n, v in data["headers"]}
    assert sent["host"] == "example.test"
    assert sent["x-real-ip"] == "127.0.0.1"
    assert sent["x-forwarded-for"] == "192.0.2.1, 127.0.0.1"
    assert sent["x-uri"] == "GET /vars a=1"
    assert "x-empty" not in sent
    assert data["target"] == "/echo?a=1"


def test_proxy_pass_uri_replaces_location_prefix(base_gateway):
    gw = base_gateway(extra="location /api/ { proxy_pass http://app/echo/v1/; }")
    assert echo(gw.port, path="/api/users/7?x=1")["target"] == "/echo/v1/users/7?x=1"
    # Without a URI part the request URI goes as the client sent it.
    assert echo(gw.port, path="/echo/%41?q=%20")["target"] == "/echo/%41?q=%20"


def test_proxy_pass_uri_with_arguments(base_gateway):
    """The directive's own arguments stay arguments: never escaped into the path; the
    request's follow them after "&"; the rest of the path goes before the "?"."""
    gw = base_gateway(extra="""
        location = /e1 { proxy_pass http://app/echo?x=1; }
        location /e6/ { proxy_pass http://app/echo/?x=1; }""")
    assert echo(gw.port, path="/e1")["target"] == "/echo?x=1"
    assert echo(gw.port, path="/e1?y=2")["target"] == "/echo?x=1&y=2"
    assert echo(gw.port, path="/e6/a?y=2")["target"] == "/echo/a?x=1&y=2"


def test_return_and_location_matching(base_gateway):
    gw = base_gateway(extra="""
        location = /exact { return 200 "exact"; }
        location ^~ /static/ { return 200 "static"; }
        location ~* \\.(png|jpg)$ { return 200 "image"; }
        location /static/deep/ { return 200 "never: ^~ wins"; }
        location /moved { return 301 /new; }
        location /gone { return 410; }""")
    assert request(gw.port, path="/exact")[2] == b"exact"
    assert request(gw.port, path="/static/a.png")[2] == b"static"
    assert request(gw.port, path="/img/A.PNG")[2] == b"image"
    status, headers, _ = request(gw.port, path="/moved")
    assert status == 301 and headers["Location"].endswith("/new")
    assert request(gw.port, path="/gone")[0] == 410
    assert request(gw.port, path="/exact/x?size=1")[2] == b"x"


def test_head_then_get_on_one_upstream_connection(base_gateway):
    gw = base_gateway()
    raw = (b"HEAD /?size=10 HTTP/1.1\r\nHost: t\r\n\r\n"
           b"GET /?size=3 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    out = raw_request(gw.port, raw)
    first, _, rest = out.partition(b"\r\n\r\n")
    assert b"Content-Length: 10" in first
    (status, _, body), = parse_responses(rest)
    assert status == 200 and body == b"xxx"


def test_expect_100_continue(base_gateway):
    gw = base_gateway()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(b"abcd")
        data = b""
        while b"}" not in data:
            data += s.recv(65536)
    (status, _, body), = parse_responses(data)
    sent = json.loads(body)
    assert status == 200 and sent["body_len"] == 4
    assert "expect" not in {n.lower() for n, _ in sent["headers"]}


def test_smuggling_attempt_never_reaches_upstream(base_gateway, backend):
    gw = base_gateway()
    request(backend, path="/__reset")
    out = raw_request(gw.port, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 37\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n")
    (status, headers, _), = parse_responses(out)
    assert status == 400 and headers["connection"] == "close"
    assert stats(backend)["requests_total"] == 0


def test_weighted_round_robin_across_peers(gateway, make_backend):
    a, b = make_backend(), make_backend()
    gw = gateway(f"""
        events {{ }}
        error_log logs/error.log notice;
        http {{
            upstream pair {{ server 127.0.0.1:{a} weight=2; server 127.0.0.1:{b}; keepalive 4; }}
            server {{ listen 127.0.0.1:{{port}}; location / {{ proxy_pass http://pair; }} }}
        }}""")
    seen = [request(gw.port)[1]["X-Backend-Port"] for _ in range(30)]
    assert seen.count(str(a)) == 20 and seen.count(str(b)) == 10


def test_add_header(base_gateway):
    gw = base_gateway(extra="""
        location /h { proxy_pass http://app; add_header X-Gw "on $host"; add_header X-All 1 always; }""")
    status, headers, _ = request(gw.port, path="/h", headers={"Host": "h.test"})
    assert headers["X-Gw"] == "on h.test" and headers["X-All"] == "1"
    status, headers, _ = request(gw.port, path="/h?status=500")
    assert status == 500 and "X-Gw" not in headers and headers["X-All"] == "1"


def test_access_log_line(base_gateway):
    gw = base_gateway()
    request(gw.port, path="/logged?size=7", headers={"User-Agent": "tester/1", "Referer": "http://r/"})
    line = wait_until(lambda: gw.access_log().strip(), timeout=5, message="access log flush")
    assert '"GET /logged?size=7 HTTP/1.1" 200 ' in line
    assert line.startswith("127.0.0.1 - - [")
    assert line.endswith('"http://r/" "tester/1"')


def test_keepalive_requests_and_timeout(base_gateway):
    gw = base_gateway(http_extra="", extra="""
        location /ka { proxy_pass http://app; keepalive_requests 2; }""")
    raw = b"GET /ka HTTP/1.1\r\nHost: t\r\n\r\n" * 3
    responses = parse_responses(raw_request(gw.port, raw))
    assert len(responses) == 2
    assert responses[1][1]["connection"] == "close"


def test_client_timeouts(gateway, backend):
    gw = gateway(f"""
        events {{ }}
        error_log logs/error.log notice;
        http {{
            keepalive_timeout 1s;
            client_header_timeout 1s;
            upstream app {{ server 127.0.0.1:{backend}; keepalive 2; }}
            server {{ listen 127.0.0.1:{{port}}; location / {{ proxy_pass http://app; }} }}
        }}""")
    for data in (b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", b"GET / HTTP/1.1\r\nHo"):
        t0 = time.monotonic()
        got = raw_request(gw.port, data, timeout=10)
        assert 0.5 <= time.monotonic() - t0 < 3.0
        if data.endswith(b"Ho"):
            # An incomplete head at client_header_timeout: 408 and close.
            (status, headers, _), = parse_responses(got)
            assert status == 408 and headers["connection"] == "close"
        else:
            # Idle after a response (keepalive_timeout): closed without a word.
            assert len(parse_responses(got)) == 1


def test_keepalive_connection_after_a_long_idle_spell(base_gateway):
    """An idle keep-alive connection gives its parser back after a second (memory per idle
    connection); the next request, even split across reads, is parsed by a new one."""
    gw = base_gateway()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(b"GET /?size=5 HTTP/1.1\r\nHost: t\r\n\r\n")
        first = b""
        while not first.endswith(b"xxxxx"):
            first += s.recv(65536)
        time.sleep(2.5)
        s.sendall(b"GET /?size=7 HTTP/1.1\r\nHo")
        time.sleep(0.2)
        s.sendall(b"st: t\r\nConnection: close\r\n\r\n")
        second = b""
        while True:
            data = s.recv(65536)
            if not data:
                break
            second += data
    (status, _, body), = parse_responses(second)
    assert status == 200 and body == b"x" * 7


def test_header_timeout_is_absolute(gateway, backend):
    """client_header_timeout is a deadline from the head's first byte: a client that
    trickles a byte every 0.3 s cannot extend it past 1 s."""
    gw = gateway(f"""
        events {{ }}
        error_log logs/error.log notice;
        http {{
            client_header_timeout 1s;
            upstream app {{ server 127.0.0.1:{backend}; }}
            server {{ listen 127.0.0.1:{{port}}; location / {{ proxy_pass http://app; }} }}
        }}""")
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        t0 = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\nX-Slow: ")
        got = b""
        for _ in range(20):
            time.sleep(0.3)
            try:
                s.sendall(b"a")
            except OSError:
                break
            s.settimeout(0.01)
            try:
                data = s.recv(65536)
            except socket.timeout:
                continue
            finally:
                s.settimeout(10)
            got += data
            if not data or b"\r\n\r\n" in got:
                break
        elapsed = time.monotonic() - t0
    assert got.startswith(b"HTTP/1.1 408 "), got
    assert 0.5 <= elapsed < 3.0, elapsed


def test_request_head_limits(base_gateway):
    gw = base_gateway()
    long_uri = b"/" + b"a" * 9000
    (status, _, _), = parse_responses(raw_request(gw.port, b"GET " + long_uri + b" HTTP/1.1\r\nHost: t\r\n\r\n"))
    assert status == 414
    # A header line over the buffer size, or more than NUMBER x SIZE of head: 431
    # (RFC 6585 §5), answered as soon as the limit is crossed.
    big = b"X-Big: " + b"b" * 9000 + b"\r\n"
    (status, _, _), = parse_responses(raw_request(gw.port, b"GET / HTTP/1.1\r\nHost: t\r\n" + big + b"\r\n"))
    assert status == 431
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(40))
    (status, _, _), = parse_responses(raw_request(gw.port, b"GET / HTTP/1.1\r\nHost: t\r\n" + many + b"\r\n"))
    assert status == 431
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        # The head never ends: the answer must not wait for it.
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX-Endless: " + b"e" * 20000)
        s.settimeout(5)
        assert s.recv(65536).startswith(b"HTTP/1.1 431 ")


@pytest.mark.parametrize("buffering", ["on", "off"])
def test_request_trailer_limits(base_gateway, backend, buffering):
    """A trailer section is bounded as a header section is: a trailer line that never
    ends gets 431 as soon as it passes the buffer size (it was held whole, a quadratic
    copy that blocked the worker for seconds at 8 MiB), and so do many small trailer
    lines past NUMBER x SIZE. With request buffering on, nothing reaches the upstream."""
    gw = base_gateway(extra=f"proxy_request_buffering {buffering};")
    before = stats(backend)["requests_total"]
    head = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n"
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(head + b"X-T: ")
        started = time.monotonic()
        got = b""
        # Once the 431 is out fastgw closes, and the rest of the writes are refused.
        with contextlib.suppress(OSError):
            for _ in range(64):  # at most 4 MiB, in 64 KiB writes
                s.sendall(b"a" * 65536)
        s.settimeout(5)
        with contextlib.suppress(OSError):
            while not got.endswith(b"\r\n\r\n") or b"431" not in got:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
    assert got.startswith(b"HTTP/1.1 431 "), got[:200]
    assert time.monotonic() - started < 5
    many = b"".join(b"X-T%d: %s\r\n" % (i, b"v" * 1000) for i in range(40))
    (status, _, _), = parse_responses(raw_request(gw.port, head + many + b"\r\n"))
    assert status == 431
    # The worker still answers at once, and the same trailer within bounds is fine.
    (status, _, body), = parse_responses(raw_request(gw.port, head + b"X-T: ok\r\n\r\n"))
    assert status == 200 and json.loads(body)["body_len"] == 1
    if buffering == "on":
        assert stats(backend)["requests_total"] == before + 1


def test_missing_host_and_bad_path_are_400(base_gateway, backend):
    gw = base_gateway()
    request(backend, path="/__reset")
    for raw in (b"GET / HTTP/1.1\r\n\r\n", b"GET /../etc/passwd HTTP/1.1\r\nHost: t\r\n\r\n",
                b"GET /a%00b HTTP/1.1\r\nHost: t\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"):
        (status, headers, _), = parse_responses(raw_request(gw.port, raw))
        assert status == 400, raw
    assert stats(backend)["requests_total"] == 0


def _rss_kib(pid):
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_slow_client_pauses_the_upstream_instead_of_buffering(base_gateway):
    """Flow control: a client that does not read must not make the worker buffer the response."""
    gw = base_gateway()
    worker = gw.worker_pids()[0]
    before = _rss_kib(worker)
    size = 200 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"GET /?size=%d HTTP/1.1\r\nHost: t\r\n\r\n" % size)
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 OK")
        time.sleep(1.5)  # the upstream keeps writing; the worker must pause reading it
        grown = _rss_kib(worker) - before
        assert grown < 32 * 1024, f"worker grew by {grown} KiB while the client was not reading"
        received = len(first.partition(b"\r\n\r\n")[2])
        deadline = time.monotonic() + 60
        while received < size and time.monotonic() < deadline:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            received += len(chunk)
    # The whole body came through once the client read it.
    assert received == size


def test_upstream_churn_releases_every_connection_slot(gateway, backend):
    """More requests in flight than idle upstream connections kept: every closed
    connection must give back its worker_connections slot (a leak once made the
    worker refuse all clients with 503 after a few thousand churned connections)."""
    import asyncio

    gw = gateway(f"""
        worker_processes 1;
        error_log logs/error.log debug;
        events {{ worker_connections 700; }}
        http {{
            access_log off;
            upstream app {{ server 127.0.0.1:{backend}; keepalive 2; }}
            server {{ listen 127.0.0.1:{{port}}; location / {{ proxy_pass http://app; }} }}
        }}""")

    async def one():
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = await reader.read()
        writer.close()
        return data.split(b" ", 2)[1]

    async def rounds():
        statuses = []
        for _ in range(6):
            statuses += await asyncio.gather(*(one() for _ in range(300)))
        return statuses

    statuses = asyncio.run(asyncio.wait_for(rounds(), 60))
    assert statuses.count(b"200") == len(statuses) == 1800
    # Once idle (and the surplus idle connections trimmed, 0.1 s later), the worker
    # counts exactly the idle pooled upstream connections, at most `keepalive`.
    def settled():
        lines = [ln for ln in gw.error_log().splitlines() if "connections:" in ln]
        if not lines or " 0 clients" not in lines[-1]:
            return None
        counted = int(lines[-1].split("connections: ")[1].split()[0])
        idle = int(lines[-1].split(" clients, ")[1].split()[0])
        return (counted, idle) if idle <= 2 else None

    counted, idle = wait_until(settled, timeout=8, interval=0.2, message="an idle, trimmed worker")
    assert counted == idle
    assert request(gw.port)[0] == 200
