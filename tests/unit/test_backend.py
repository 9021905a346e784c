"""Tests of the sample upstream, fastgw.testing.backend, over real sockets to 127.0.0.1."""

import hashlib
import json
import socket
import threading
import time

import pytest

from fastgw.testing.backend import parse_time, start_backend, stop_backend

TIMEOUT = 5.0  # seconds, for every socket operation


@pytest.fixture(scope="module")
def port():
    proc, port = start_backend(0)
    try:
        yield port
    finally:
        assert stop_backend(proc) == 0


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    s.settimeout(TIMEOUT)
    return s


class Reader:
    """Reads HTTP/1.1 responses off a socket (Content-Length, chunked or close framing)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.eof = False

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            self.eof = True
            raise EOFError("connection closed")
        self.buf += data

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def response(self, head=False):
        """Return (status, {lower-name: value}, body); head=True: no body expected."""
        status = int(self._line().split(b" ", 2)[1])
        headers = {}
        while True:
            line = self._line()
            if not line:
                break
            name, value = line.split(b":", 1)
            headers[name.strip().lower().decode()] = value.strip().decode()
        if head or status in (204, 304):
            return status, headers, b""
        if "content-length" in headers:
            return status, headers, self._exact(int(headers["content-length"]))
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    self._line()
                    return status, headers, body
                body += self._exact(size)
                self._line()
        while True:  # framed by close
            try:
                self._fill()
            except EOFError:
                body, self.buf = self.buf, b""
                return status, headers, body

    def closed(self):
        """True when the peer closes with nothing more to read (within TIMEOUT)."""
        try:
            self._fill()
        except EOFError:
            return not self.buf
        except ConnectionResetError:
            return True
        return False


def get(port, target, method="GET"):
    with connect(port) as s:
        s.sendall(f"{method} {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        return Reader(s).response(head=method == "HEAD")


def test_parse_time():
    assert parse_time("0") == 0
    assert parse_time("20ms") == pytest.approx(0.02)
    assert parse_time("1s") == 1.0
    assert parse_time("1m30s") == 90.0
    assert parse_time("2") == 2.0  # bare number: seconds, as in nginx
    for bad in ("", "ms", "1x", "1s1s"):
        with pytest.raises(ValueError):
            parse_time(bad)


def test_default_response_and_keepalive_counters(port):
    with connect(port) as s:
        r = Reader(s)
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        st1, h1, b1 = r.response()
        s.sendall(b"GET /other HTTP/1.1\r\nHost: t\r\n\r\n")
        st2, h2, b2 = r.response()
    assert st1 == st2 == 200
    assert b1 == b2 == b"x" * 100
    assert h1["content-length"] == "100"
    assert h1["x-backend-port"] == str(port)
    assert h1["x-conn-id"] == h2["x-conn-id"]
    assert (h1["x-conn-requests"], h2["x-conn-requests"]) == ("1", "2")
    assert int(h2["x-request-count"]) == int(h1["x-request-count"]) + 1
    _, h3, _ = get(port, "/")
    assert int(h3["x-conn-id"]) > int(h1["x-conn-id"])
    assert h3["x-conn-requests"] == "1"


def test_pipelining_answers_in_order(port):
    with connect(port) as s:
        s.sendall(b"GET /?latency=100&size=1 HTTP/1.1\r\nHost: t\r\n\r\n"
                  b"GET /?size=2 HTTP/1.1\r\nHost: t\r\n\r\n"
                  b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n"
                  b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        r = Reader(s)
        out = [r.response() for _ in range(4)]
    assert [b for _, _, b in out[:2]] == [b"x", b"xx"]
    assert json.loads(out[2][2])["conn_requests"] == 3
    assert out[3][2] == b"x" * 100
    assert [h["x-conn-requests"] for _, h, _ in out] == ["1", "2", "3", "4"]


def test_chunked_upload_to_echo(port):
    payload = [b"hello ", b"chunked ", b"world"]
    with connect(port) as s:
        s.sendall(b"POST /echo?body=1 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                  b"X-Test: A b\r\n\r\n")
        for p in payload:
            s.sendall(b"%x\r\n%s\r\n" % (len(p), p))
            time.sleep(0.01)
        s.sendall(b"0\r\n\r\n")
        status, headers, body = Reader(s).response()
    assert status == 200
    assert headers["content-type"] == "application/json"
    d = json.loads(body)
    full = b"".join(payload)
    assert d["method"] == "POST"
    assert d["target"] == "/echo?body=1"
    assert d["version"] == "1.1"
    assert d["headers"] == [["Host", "t"], ["Transfer-Encoding", "chunked"], ["X-Test", "A b"]]
    assert d["body_len"] == len(full)
    assert d["body_sha256"] == hashlib.sha256(full).hexdigest()
    assert d["body"] == full.decode()


def test_echo_prefix_keeps_raw_target(port):
    status, headers, body = get(port, "/echo/v1/%41?q=%20")
    assert status == 200 and headers["content-type"] == "application/json"
    d = json.loads(body)
    assert d["target"] == "/echo/v1/%41?q=%20"
    assert d["body_len"] == 0 and "body" not in d


def test_head_has_get_length_and_no_body(port):
    with connect(port) as s:
        r = Reader(s)
        s.sendall(b"HEAD /?size=77 HTTP/1.1\r\nHost: t\r\n\r\nGET /?size=3 HTTP/1.1\r\nHost: t\r\n\r\n")
        st, h, _ = r.response(head=True)
        # if HEAD had sent a body, this next response would not parse
        st2, h2, b2 = r.response()
    assert st == 200 and h["content-length"] == "77"
    assert st2 == 200 and b2 == b"xxx" and h2["x-conn-requests"] == "2"


def test_status_override(port):
    status, headers, body = get(port, "/?status=503&size=5")
    assert status == 503 and body == b"xxxxx"
    status, headers, body = get(port, "/?status=204")
    assert status == 204 and "content-length" not in headers


def test_drop_closes_without_response(port):
    with connect(port) as s:
        s.sendall(b"GET /?drop=1 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert Reader(s).closed()


def test_close_and_chunked_response(port):
    with connect(port) as s:
        s.sendall(b"GET /?chunked=1&size=10&close=1 HTTP/1.1\r\nHost: t\r\n\r\n")
        r = Reader(s)
        status, headers, body = r.response()
        assert headers["transfer-encoding"] == "chunked"
        assert headers["connection"] == "close"
        assert body == b"x" * 10
        assert r.closed()


def test_parse_error_gets_400_and_close(port):
    with connect(port) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nNOT HTTP AT ALL\r\n\r\n")
        r = Reader(s)
        assert r.response()[0] == 200
        status, headers, _ = r.response()
        assert status == 400 and headers["connection"] == "close"
        assert r.closed()


def test_concurrency_limit_and_stats():
    proc, port = start_backend(0, "--concurrency", "2", "--latency", "100ms")
    try:
        assert get(port, "/__reset")[2] == b"{}"
        done = []

        def one():
            done.append(get(port, "/")[0])

        t0 = time.monotonic()
        threads = [threading.Thread(target=one) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
        elapsed = time.monotonic() - t0
        assert done == [200] * 6
        assert elapsed >= 0.28  # three rounds of two
        stats = json.loads(get(port, "/__stats")[2])
        assert stats["max_in_flight"] == 2
        assert stats["requests_total"] == 6
        assert stats["in_flight"] == 0 and stats["queued"] == 0
    finally:
        assert stop_backend(proc) == 0
