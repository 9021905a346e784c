"""Regressions for faults found by trying to break fastgw: slots held, buffers unbounded, false errors."""

import json
import socket
import threading
import time

import pytest

from fastgw.testing.harness import parse_responses, raw_request, wait_until

CONF = """
worker_processes 1;
error_log logs/error.log debug;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_header_timeout 60s;
    client_max_body_size 64m;
    upstream app {{ server 127.0.0.1:{backend}; keepalive 8; }}
    server {{
        listen 127.0.0.1:{{port}};
        location / {{ proxy_pass http://app; proxy_read_timeout 1s; }}
        location = /ret {{ return 200 "early"; client_body_timeout 1s; }}
        location /slowread {{ proxy_pass http://app; send_timeout 1s; }}
        location /upload {{ proxy_pass http://app/echo; proxy_read_timeout 1s; }}
        {extra}
    }}
}}
"""


def counted(gw):
    """(counted, clients, idle upstream) from the worker's last debug line."""
    lines = [ln for ln in gw.error_log().splitlines() if "connections:" in ln]
    if not lines:
        return None
    words = lines[-1].split("connections: ")[1].split()
    return int(words[0]), int(words[2]), int(words[4])


def wait_quiet(gw, timeout=8):
    """Wait until the worker counts no client and only idle pooled upstream connections."""
    return wait_until(lambda: (lambda c: c if c and c[1] == 0 and c[0] == c[2] else None)(counted(gw)),
                      timeout=timeout, interval=0.2, message="the worker to count only idle connections")


def read_all(sock):
    """Every byte until the peer closes (bounded by the socket's timeout)."""
    data = b""
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            return data
        data += chunk


def closed_within(sock, seconds):
    """True if the peer closes (EOF or reset) within ``seconds``, reading whatever comes."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if not sock.recv(1 << 20):
                return True
        except socket.timeout:
            continue
        except ConnectionResetError:
            return True
    return False


@pytest.fixture
def gw(gateway, backend):
    def make(extra=""):
        return gateway(CONF.format(backend=backend, extra=extra))
    return make


def test_early_answer_then_silent_body_is_closed_by_client_body_timeout(gw):
    g = gw()
    with socket.create_connection(("127.0.0.1", g.port), timeout=5) as s:
        s.sendall(b"POST /ret HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n")
        t0 = time.monotonic()
        assert closed_within(s, 4.0), "connection held after the body stopped coming"
        assert 0.5 <= time.monotonic() - t0 < 4.0
    wait_quiet(g)


def test_early_answer_then_body_keeps_the_connection(gw):
    g = gw()
    with socket.create_connection(("127.0.0.1", g.port), timeout=5) as s:
        s.sendall(b"POST /ret HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n")
        time.sleep(0.2)
        s.sendall(b"0123456789GET /ret HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = read_all(s)
    assert [r[2] for r in parse_responses(data)] == [b"early", b"early"]


def test_client_that_never_reads_is_cut_off_by_send_timeout(gw):
    g = gw()
    size = 64 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", g.port), timeout=5) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"GET /slowread?size=%d HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % size)
        time.sleep(3.0)
        received, t0 = 0, time.monotonic()
        s.settimeout(5)
        try:
            while time.monotonic() - t0 < 20:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                received += len(chunk)
        except ConnectionResetError:
            pass
    assert received < size, "the whole response waited for a client that did not read"
    assert "while sending response to client" in g.error_log()
    wait_quiet(g)


def test_upstream_that_never_reads_the_body_releases_its_slot(gateway):
    sink = socket.socket()
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sink.bind(("127.0.0.1", 0))
    sink.listen(8)
    accepted = []
    threading.Thread(target=lambda: accepted.append(sink.accept()), daemon=True).start()
    g = gateway(f"""
        worker_processes 1;
        error_log logs/error.log debug;
        events {{ }}
        http {{ server {{ listen 127.0.0.1:{{port}};
            location / {{ proxy_pass http://127.0.0.1:{sink.getsockname()[1]}; proxy_send_timeout 1s;
                     client_max_body_size 64m; }} }} }}""")
    body = b"x" * (16 * 1024 * 1024)
    with socket.create_connection(("127.0.0.1", g.port), timeout=10) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body))
        try:
            s.sendall(body)
        except OSError:
            pass
        s.settimeout(10)
        assert s.recv(100).startswith(b"HTTP/1.1 504")
    wait_quiet(g)
    sink.close()


def test_slow_upload_is_not_cut_by_proxy_read_timeout(gw):
    g = gw()
    body = b"y" * 5000
    with socket.create_connection(("127.0.0.1", g.port), timeout=10) as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n")
        for i in range(0, 5000, 500):  # 2 s in all, longer than proxy_read_timeout 1s
            s.sendall(body[i:i + 500])
            time.sleep(0.2)
        data = read_all(s)
    (status, _, out), = parse_responses(data)
    assert status == 200 and json.loads(out)["body_len"] == 5000


def test_big_pipelined_body_behind_a_slow_request(gw):
    g = gw()
    body = b"z" * (3 * 1024 * 1024)
    raw = (b"GET /?latency=500&size=2 HTTP/1.1\r\nHost: t\r\n\r\n"
           b"POST /upload HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
           + body)
    responses = parse_responses(raw_request(g.port, raw, timeout=10))
    assert [r[0] for r in responses] == [200, 200]
    assert json.loads(responses[1][2])["body_len"] == len(body)


def test_bytes_after_connection_close_do_not_delay_the_request(gw):
    g = gw()
    raw_request(g.port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")  # warm the pool
    t0 = time.monotonic()
    out = raw_request(g.port, b"GET /first HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                              b"GET /second HTTP/1.1\r\nHost: t\r\n\r\n")
    assert time.monotonic() - t0 < 0.5
    assert [r[0] for r in parse_responses(out)] == [200]


def test_read_timeout_on_a_reused_connection_is_not_retried(gw, backend):
    import http.client
    g = gw()
    raw_request(g.port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")  # warm the pool
    conn = http.client.HTTPConnection("127.0.0.1", backend, timeout=5)
    conn.request("GET", "/__reset")
    conn.getresponse().read()
    t0 = time.monotonic()
    (status, _, _), = parse_responses(raw_request(g.port, b"GET /hang?stall=1 HTTP/1.1\r\nHost: t\r\n"
                                                          b"Connection: close\r\n\r\n"))
    assert status == 504 and time.monotonic() - t0 < 2.5
    conn.request("GET", "/__stats")
    assert json.loads(conn.getresponse().read())["requests_total"] == 1
    conn.close()


def test_absolute_form_sets_host_for_routing_and_upstream(gw):
    g = gw(extra="location /abs { proxy_pass http://app/echo; proxy_set_header Host $host; }")
    out = raw_request(g.port, b"GET http://Example.test/abs?x=1 HTTP/1.1\r\nHost: other.test\r\n"
                              b"Connection: close\r\n\r\n")
    (status, _, body), = parse_responses(out)
    sent = json.loads(body)
    assert status == 200
    assert dict((n.lower(), v) for n, v in sent["headers"])["host"] == "example.test"
    assert sent["target"] == "/echo?x=1"
    out = raw_request(g.port, b"GET http://a.test?x=1 HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
    assert parse_responses(out)[0][0] == 200


@pytest.mark.parametrize("authority", [b"b.test@evil", b"x@b.test", b"a.test,b.test", b"a.test;x",
                                       b"a.test%2fx", b"a_b.test", b"a.test:8x", b"[::1]x", b"[::1"])
def test_absolute_form_authority_is_a_host_and_port_only(gw, authority):
    """nginx's request-line parser takes only [IPv6] or letters, digits, "." and "-", then
    ":port": userinfo (RFC 9110 §4.2.4) and other bytes are a 400 with nothing forwarded
    (found by a break-it review: "b.test@evil" went upstream as Host)."""
    g = gw(extra="location /abs { proxy_pass http://app/echo; proxy_set_header Host $host; }")
    out = raw_request(g.port, b"GET http://" + authority + b"/abs HTTP/1.1\r\nHost: a\r\n"
                              b"Connection: close\r\n\r\n")
    assert parse_responses(out)[0][0] == 400


def test_host_details_as_nginx(gw):
    """An IPv6 Host is "[...]" with an optional port and nothing else; trailing
    whitespace is not part of a value (RFC 9110 §5.5); an empty Expect asks for
    nothing (RFC 9110 §5.6.1: an empty list)."""
    g = gw(extra="location /abs { proxy_pass http://app/echo; proxy_set_header Host $host; }")

    def ask(head):
        out = raw_request(g.port, b"GET /abs HTTP/1.1\r\n" + head + b"Connection: close\r\n\r\n")
        return parse_responses(out)[0]

    assert ask(b"Host: [::1]/../x\r\n")[0] == 400
    assert ask(b"Host: [::1]:8x\r\n")[0] == 400
    status, _, body = ask(b"Host: [::1]:80\r\n")
    assert status == 200 and dict((n.lower(), v) for n, v in json.loads(body)["headers"])["host"] == "[::1]"
    status, _, body = ask(b"Host: a.test \r\nX-Foo: bar  \r\nX-Forwarded-For: 1.2.3.4 \r\n")
    assert status == 200, body
    sent = dict((n.lower(), v) for n, v in json.loads(body)["headers"])
    assert sent["host"] == "a.test" and sent["x-foo"] == "bar"
    assert sent["x-forwarded-for"].startswith("1.2.3.4,") or sent["x-forwarded-for"] == "1.2.3.4"
    assert ask(b"Host: a.test\r\nExpect: \r\n")[0] == 200
    assert ask(b"Host: a.test\r\nExpect: bogus\r\n")[0] == 417


def _rss_kib(pid):
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))


def test_pipelined_upgrade_requests_use_bounded_memory(gw):
    g = gw(extra="location = /up { return 200 \"u\"; keepalive_requests 100000; }")
    worker = g.worker_pids()[0]
    before = _rss_kib(worker)
    one = b"GET /up HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n"
    out = raw_request(g.port, one * 4000 + b"GET /up HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                      timeout=20)
    assert out.count(b"HTTP/1.1 200 OK") == 4001
    assert _rss_kib(worker) - before < 40 * 1024


def test_many_pipelined_requests_with_a_split_head_are_all_served(gw):
    g = gw(extra="location = /p { return 200 \"p\"; }")
    one = b"GET /p HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"p" * 900 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", g.port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        last = b"GET /p HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Pad: " + b"q" * 900 + b"\r\n\r\n"
        s.sendall(one * 120 + last[:500])
        time.sleep(0.3)
        s.sendall(last[500:])
        data = read_all(s)
    assert [r[0] for r in parse_responses(data)] == [200] * 121


def test_partial_head_then_fin_is_closed_at_once(gw):
    g = gw()
    with socket.create_connection(("127.0.0.1", g.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHo")
        s.shutdown(socket.SHUT_WR)
        t0 = time.monotonic()
        assert closed_within(s, 3.0)
        assert time.monotonic() - t0 < 1.0
    wait_quiet(g)


def test_headers_with_underscores_are_not_forwarded(gw):
    g = gw(extra="location /e { proxy_pass http://app/echo; }")
    out = raw_request(g.port, b"GET /e HTTP/1.1\r\nHost: t\r\nX_Forwarded_For: 1.2.3.4\r\n"
                              b"X-Ok: 1\r\nConnection: close\r\n\r\n")
    names = [n.lower() for n, _ in json.loads(parse_responses(out)[0][2])["headers"]]
    assert "x-ok" in names and "x_forwarded_for" not in names


def test_upstream_too_big_header_is_502(gw):
    g = gw()
    out = raw_request(g.port, b"GET /?headers=2500 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert parse_responses(out)[0][0] == 502
    assert "upstream sent too big header" in g.error_log()


def test_return_wins_over_proxy_pass_in_one_location(gw, backend):
    g = gw(extra="location /both { proxy_pass http://app; return 418; }")
    (status, _, _), = parse_responses(raw_request(g.port, b"GET /both HTTP/1.1\r\nHost: t\r\n"
                                                          b"Connection: close\r\n\r\n"))
    assert status == 418


def test_utf8_in_configuration_values(gw):
    g = gw(extra='location = /u { return 200 "h\u00e9llo \u2713"; }')
    (status, _, body), = parse_responses(raw_request(g.port, b"GET /u HTTP/1.1\r\nHost: t\r\n"
                                                             b"Connection: close\r\n\r\n"))
    assert status == 200 and body.decode("utf-8") == "h\u00e9llo \u2713"
