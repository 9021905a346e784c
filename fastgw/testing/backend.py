"""The sample upstream: a small, fast HTTP/1.1 origin server for fastgw's demo, tests and benchmarks.

Run it as::

    python -m fastgw.testing.backend --port 9001 [--host 127.0.0.1] [--latency 20ms]
                                     [--body-size 100] [--concurrency N]
                                     [--keepalive-timeout T] [--quiet]

It is built on asyncio with uvloop and httptools only. Once it listens it
prints exactly one line, ``listening on HOST:PORT``, to stdout and flushes it
(``--port 0`` picks a free port and prints the real one); it prints nothing
else, not even per request (``--quiet`` is accepted for symmetry and changes
nothing). SIGTERM and SIGINT make it close every connection and exit 0.

Protocol
--------
* HTTP/1.1 keep-alive; HTTP/1.0 closes after the response unless the request
  asked for ``Connection: keep-alive`` (then the response says so too).
  Responses are always ``HTTP/1.1``.
* Pipelined requests are answered in order, one after the other: a request on
  a connection is served only once the previous response has been written.
* Request bodies (``Content-Length`` or ``Transfer-Encoding: chunked``) are read
  fully before the request is answered. ``Expect: 100-continue`` gets an
  interim ``100 Continue`` when nothing else is pending on the connection.
* A client that half-closes (sends FIN) is taken as gone: the connection is
  closed and its pending requests are abandoned, freeing their concurrency
  slots (as when a proxy gives up on an upstream request).
* Strict parsing (httptools/llhttp defaults): on a parse error the requests
  before it are answered, then ``400 Bad Request`` with ``Connection: close``,
  then the connection is closed. A request that asks to upgrade (or CONNECT)
  is answered as a plain request, with ``Connection: close``.
* ``HEAD`` gets the headers the ``GET`` would get (same Content-Length) and no
  body. Statuses 204 and 304 carry no body and no Content-Length.

Defaults (per process, from the flags)
--------------------------------------
``--latency T``
    delay before answering each request, nginx time syntax (``20ms``, ``1s``,
    ``1m30s``, ``0``; a bare number means seconds, as in nginx). Default 0.
``--body-size N``
    bytes of response body, ``b"x" * N`` (see :func:`make_body`). Default 100.
``--concurrency N``
    at most N requests are being served at once (sleeping their latency and
    writing their response); the others wait in FIFO order for a slot, like a
    backend with N threads. Default 0: unlimited.
``--keepalive-timeout T``
    close a connection with no request in progress once no byte arrived for
    T (nginx time), as servers close idle keep-alive connections. Default 0:
    never.

Per-request query options (override the defaults; unknown keys are ignored)
---------------------------------------------------------------------------
==============  ==============================================================
``latency=MS``  delay before answering, in milliseconds (may be fractional)
``size=BYTES``  response body size in bytes (default route only)
``status=CODE`` response status, 200..999
``chunked=1``   body sent with ``Transfer-Encoding: chunked`` in ``pieces``
                chunks (to an HTTP/1.0 client: no length, closed, as ``eof=1``)
``close=1``     answer with ``Connection: close``, then close
``eof=1``       no Content-Length: the body ends when the connection closes
``drop=1``      after the latency, close the connection without any response
                (``drop=rst``: abort it with a TCP RST instead of a FIN)
``stall=1``     never answer; the connection stays open, later requests on it
                are ignored; takes no concurrency slot
``trickle=MS``  headers at once, then the body in ``pieces`` writes, each after
                a pause of MS milliseconds
``pieces=K``    number of chunks/pieces for ``chunked``/``trickle`` (default 4)
``headers=N``   add N extra headers ``X-Pad-1`` .. ``X-Pad-N`` (32-byte values)
``body=1``      ``/echo`` only: include the request body in the JSON
==============  ==============================================================

Boolean options accept ``1/true/yes/on`` and ``0/false/no/off``. A bad value
gets ``400`` (the connection is kept).

Every response carries ``Content-Length`` (unless chunked, eof-framed or
204/304), ``Server: fastgw-backend``, ``X-Backend-Port: <listening port>``,
``X-Conn-Id: <TCP connection number, from 1>``, ``X-Conn-Requests: <requests
on this connection so far>`` and ``X-Request-Count: <process-wide requests so
far>`` (the count includes this request). Requests are counted as they
arrive, so a pipelined request that is never answered (it followed a
``close``, ``drop`` or ``stall``) still counted. ``connections_open`` counts
the connection asking for ``/__stats``.

Paths
-----
``/echo`` and ``/echo/...`` (any method)
    200 with JSON ``{"method", "target" (raw request-target), "version"
    ("1.1"/"1.0"), "headers" ([[name, value], ...] as received, in order),
    "body_len", "body_sha256", "conn_id", "conn_requests"}``; with ``body=1``
    also ``"body"``: the request body decoded as latin-1. Strings are latin-1
    decodings of the received bytes.
``/__stats``
    JSON ``{"connections_total", "connections_open", "requests_total",
    "in_flight", "max_in_flight", "queued", "health_checks", "pid", "port"}``: ``in_flight`` is
    the number of requests being served now (holding a concurrency slot),
    ``max_in_flight`` the most at once since start or the last reset,
    ``queued`` the number waiting for a slot.
``/__reset``
    zeroes ``connections_total``, ``requests_total`` (so also the next
    ``X-Request-Count``) and sets ``max_in_flight`` to the current
    ``in_flight``; answers 200 ``{}``. Connection ids keep counting.
``/health``
    the health status (200 unless set), body ``health``: for active health checks.
``/__health?status=CODE``
    sets the status ``/health`` answers from now on; answers 200 ``{}``.
any other path
    the default response: 200, ``text/plain``, ``--body-size`` bytes.

``/__stats``, ``/__reset``, ``/health`` and ``/__health`` do not count as requests and ignore the query,
latency and concurrency limit. The default response (an HTTP/1.1 keep-alive
request other than ``HEAD``, without query, to any other path, with no process
latency) is precomputed and written synchronously; any request that needs no
waiting is served without creating a task; every response is one
``transport.write`` (except ``trickle``, and the interim ``100 Continue``).
A client that stops reading its responses is no longer read from either.

For tests, :func:`start_backend` runs the server as a subprocess and returns
it with its port; :func:`stop_backend` stops it and :func:`running_backend`
does both as a context manager.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import http
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import time
import traceback
from urllib.parse import parse_qsl

import httptools

__all__ = [
    "Backend",
    "make_body",
    "parse_time",
    "parse_options",
    "serve",
    "main",
    "start_backend",
    "stop_backend",
    "running_backend",
]

SERVER_NAME = b"fastgw-backend"
MAX_BODY_SIZE = 1 << 30          # bytes: the most size= may ask for
MAX_PAD_HEADERS = 10000          # the most headers= may ask for
MAX_PIECES = 10000               # the most pieces= may ask for
DEFAULT_PIECES = 4
_PAD_VALUE = b"0123456789abcdef0123456789abcdef"  # 32 bytes
_PIPELINE_PAUSE = 256            # queued requests on one connection before we stop reading
_PIPELINE_RESUME = 64

_TIME_UNITS = {
    "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0,
    "w": 7 * 86400.0, "M": 30 * 86400.0, "y": 365 * 86400.0,
}
_TIME_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w|M|y)?")


def parse_time(text: str) -> float:
    """Parse an nginx time (``20ms``, ``1s``, ``1m30s``, ``0``; bare number = seconds).

    Fractions are also accepted (``1.5s``). Returns seconds (float); raises
    ValueError on anything else.
    """
    text = text.strip()
    if not text:
        raise ValueError('invalid time ""')
    pos, total, seen = 0, 0.0, set()
    while pos < len(text):
        m = _TIME_PART.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f'invalid time "{text}"')
        unit = m.group(2) or "s"
        if unit in seen:
            raise ValueError(f'invalid time "{text}"')
        seen.add(unit)
        total += float(m.group(1)) * _TIME_UNITS[unit]
        pos = m.end()
    return total


def make_body(size: int) -> bytes:
    """Return the response body the backend sends for ``size`` bytes: ``b"x" * size``."""
    return b"x" * size


_REASONS: dict[int, bytes] = {}


def _reason(status: int) -> bytes:
    r = _REASONS.get(status)
    if r is None:
        try:
            r = http.HTTPStatus(status).phrase.encode("latin-1")
        except ValueError:
            r = b"Unknown"
        _REASONS[status] = r
    return r


# ---------------------------------------------------------------- query options

class Options:
    """Per-request options parsed from the query string (see the module docstring).

    Attributes: ``latency`` (seconds or None = process default), ``size``
    (bytes or None), ``status`` (int), ``chunked``, ``close``, ``eof``,
    ``stall``, ``body`` (bools), ``drop`` (None, ``"fin"`` or ``"rst"``),
    ``trickle`` (seconds between pieces or None), ``pieces`` (int),
    ``headers`` (number of X-Pad headers).
    """

    __slots__ = ("latency", "size", "status", "chunked", "close", "eof", "drop",
                 "stall", "trickle", "pieces", "headers", "body")

    def __init__(self):
        self.latency = None
        self.size = None
        self.status = 200
        self.chunked = False
        self.close = False
        self.eof = False
        self.drop = None
        self.stall = False
        self.trickle = None
        self.pieces = DEFAULT_PIECES
        self.headers = 0
        self.body = False


_DEFAULT_OPTIONS = Options()
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _flag(key, value):
    v = value.lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"{key}: expected 1 or 0, got {value!r}")


def _int(key, value, lo, hi):
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"{key}: expected an integer, got {value!r}") from None
    if not lo <= n <= hi:
        raise ValueError(f"{key}: {n} is not in {lo}..{hi}")
    return n


def _ms(key, value):
    try:
        ms = float(value)
    except ValueError:
        raise ValueError(f"{key}: expected milliseconds, got {value!r}") from None
    if not 0 <= ms < 1e9:
        raise ValueError(f"{key}: {value!r} is out of range")
    return ms / 1000.0


_OPTIONS_CACHE: dict = {}


def parse_options(query: bytes) -> Options:
    """Parse a raw query string (without ``?``) into :class:`Options` (treat it as read-only).

    Times in the query are milliseconds and are returned in seconds. Raises
    ValueError with a message for a bad value; unknown keys are ignored.
    Results are cached per query string.
    """
    if not query:
        return _DEFAULT_OPTIONS
    o = _OPTIONS_CACHE.get(query)
    if o is None:
        o = _parse_options(query)
        if len(_OPTIONS_CACHE) >= 1024:
            _OPTIONS_CACHE.clear()
        _OPTIONS_CACHE[query] = o
    return o


def _parse_options(query: bytes) -> Options:
    o = Options()
    for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if key == "latency":
            o.latency = _ms(key, value)
        elif key == "size":
            o.size = _int(key, value, 0, MAX_BODY_SIZE)
        elif key == "status":
            o.status = _int(key, value, 200, 999)
        elif key == "chunked":
            o.chunked = _flag(key, value)
        elif key == "close":
            o.close = _flag(key, value)
        elif key == "eof":
            o.eof = _flag(key, value)
        elif key == "drop":
            if value.lower() == "rst":
                o.drop = "rst"
            else:
                o.drop = "fin" if _flag(key, value) else None
        elif key == "stall":
            o.stall = _flag(key, value)
        elif key == "trickle":
            o.trickle = _ms(key, value)
        elif key == "pieces":
            o.pieces = _int(key, value, 1, MAX_PIECES)
        elif key == "headers":
            o.headers = _int(key, value, 0, MAX_PAD_HEADERS)
        elif key == "body":
            o.body = _flag(key, value)
    return o


def _split(data: bytes, n: int) -> list:
    """Split ``data`` into at most ``n`` non-empty pieces of near-equal size."""
    if not data:
        return []
    n = max(1, min(n, len(data)))
    step = -(-len(data) // n)
    return [data[i:i + step] for i in range(0, len(data), step)]


# ---------------------------------------------------------------- process state

class Backend:
    """Process-wide settings, counters and the FIFO concurrency limiter.

    ``latency`` is in seconds, ``body_size`` in bytes, ``concurrency`` the most
    requests served at once (0 = unlimited).
    """

    def __init__(self, latency: float = 0.0, body_size: int = 100, concurrency: int = 0):
        self.latency = float(latency)
        self.body_size = int(body_size)
        self.concurrency = int(concurrency)
        self.port = 0
        self.conn_ids = 0
        self.connections_total = 0
        self.connections: set = set()
        self.requests_total = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.queued = 0
        self.health_status = 200
        self.health_checks = 0
        self.pending_health = b""
        self.keepalive_timeout = 0.0
        self._active = 0
        self._waiters: collections.deque = collections.deque()
        self._bodies: dict = {}
        self.port_line = b""
        self.fast_template = b""
        self.set_port(0)

    def set_port(self, port: int) -> None:
        """Record the listening port and precompute the default response template."""
        self.port = port
        self.port_line = b"X-Backend-Port: %d\r\n" % port
        body = self.body(self.body_size)
        self.fast_template = (
            b"HTTP/1.1 200 OK\r\nServer: " + SERVER_NAME
            + b"\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n" % len(body)
            + self.port_line
            + b"X-Conn-Id: %d\r\nX-Conn-Requests: %d\r\nX-Request-Count: %d\r\n\r\n"
            + body.replace(b"%", b"%%")
        )

    def body(self, size: int) -> bytes:
        """Return the (cached) response body of ``size`` bytes."""
        b = self._bodies.get(size)
        if b is None:
            b = make_body(size)
            if size <= 1 << 24:
                if len(self._bodies) >= 64:
                    self._bodies.clear()
                self._bodies[size] = b
        return b

    # The limiter: _active slots taken out of `concurrency`; waiters are futures, FIFO.
    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody waits; True when taken (always when unlimited)."""
        if self.concurrency <= 0:
            return True
        if self._active < self.concurrency and not self._waiters:
            self._active += 1
            return True
        return False

    async def acquire(self) -> None:
        """Wait (FIFO) for a slot; a cancelled waiter gives back a slot handed to it."""
        if self.try_acquire():
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self.queued += 1
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
            raise
        finally:
            self.queued -= 1

    def release(self) -> None:
        """Give a slot back: to the first live waiter, else to the pool."""
        if self.concurrency <= 0:
            return
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self._active -= 1

    def stats(self) -> dict:
        """The counters served at ``/__stats``."""
        return {
            "connections_total": self.connections_total,
            "connections_open": len(self.connections),
            "requests_total": self.requests_total,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "queued": self.queued,
            "health_checks": self.health_checks,
            "pid": os.getpid(),
            "port": self.port,
        }

    def reset(self) -> None:
        """Zero the totals and restart ``max_in_flight`` from the current ``in_flight``."""
        self.connections_total = 0
        self.requests_total = 0
        self.max_in_flight = self.in_flight


# ---------------------------------------------------------------- connections

_DEFAULT, _ECHO, _STATS, _RESET, _BAD, _ERROR, _HEALTH, _SET_HEALTH = range(8)
_ROUTES = {b"/echo": _ECHO, b"/__stats": _STATS, b"/__reset": _RESET, b"/health": _HEALTH,
           b"/__health": _SET_HEALTH}
# Control routes: answered at once, not counted, no query options.
_CONTROL = (_STATS, _RESET, _HEALTH, _SET_HEALTH)


class _Request:
    __slots__ = ("kind", "method", "target", "version", "keep_alive", "headers",
                 "body_len", "body_sha256", "body", "opts", "error",
                 "conn_requests", "count")


class _Conn(asyncio.Protocol):
    """One client TCP connection: parses requests and answers them in order."""

    def __init__(self, backend: Backend):
        self.b = backend
        self.parser = httptools.HttpRequestParser(self)
        self.transport = None
        self.conn_id = 0
        self.nreq = 0
        self.queue: collections.deque = collections.deque()
        self.task = None
        self.closed = False          # connection_lost seen
        self.done = False            # no more responses will be written (closing, dropped, stalled)
        self.ignore_input = False    # parse error, upgrade, eof, close: discard further bytes
        self.input_eof = False
        self.reading_paused = False
        self.drain_waiter = None
        self.write_paused = False
        # the message being parsed
        self.url = b""
        self.headers = None
        self.body_len = 0
        self.hasher = None
        self.body_parts = None
        self.kind = _DEFAULT
        self.opts = _DEFAULT_OPTIONS
        self.error = None
        self.expect = False

    # -- asyncio.Protocol
    def connection_made(self, transport):
        b = self.b
        self.transport = transport
        b.conn_ids += 1
        self.conn_id = b.conn_ids
        b.connections_total += 1
        b.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.last_rx = time.monotonic()
        if b.keepalive_timeout > 0:
            asyncio.get_running_loop().call_later(b.keepalive_timeout, self._idle_check)

    def _idle_check(self):
        # --keepalive-timeout: close a connection with nothing in progress once no
        # byte came for that long (the idle close every keep-alive client races).
        if self.closed or self.done:
            return
        idle = time.monotonic() - self.last_rx
        timeout = self.b.keepalive_timeout
        if idle >= timeout and self.task is None and not self.queue:
            self.done = self.ignore_input = True
            self.transport.close()
            return
        asyncio.get_running_loop().call_later(max(timeout - idle, 0.01), self._idle_check)

    def connection_lost(self, exc):
        self.closed = self.done = self.ignore_input = True
        self.b.connections.discard(self)
        self.queue.clear()
        if self.task is not None:
            self.task.cancel()
        self._wake_drain()

    def data_received(self, data):
        self.last_rx = time.monotonic()
        if self.ignore_input:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.ignore_input = True     # the request was already queued with keep_alive False
        except httptools.HttpParserCallbackError:
            self._internal_error()
        except httptools.HttpParserError:
            self.ignore_input = True
            r = _Request()
            r.kind = _BAD
            r.method = b""
            r.keep_alive = False
            r.version = "1.1"
            self._dispatch(r)
        except Exception:
            self._internal_error()

    def _internal_error(self):
        # A bug in this module: say so on stderr, answer 500 and close.
        traceback.print_exc()
        self.ignore_input = True
        r = _Request()
        r.kind = _ERROR
        r.method = b""
        r.keep_alive = False
        r.version = "1.1"
        self._dispatch(r)

    def eof_received(self):
        # A client that shuts down its sending side is taken as gone, the way a
        # proxy abandons an upstream request: the transport closes and what is
        # pending (queued, sleeping, waiting for a slot) is cancelled.
        self.input_eof = self.ignore_input = True
        return False

    def pause_writing(self):
        # The client does not read its responses: stop reading its requests too.
        self.write_paused = True
        self._update_reading()

    def resume_writing(self):
        self.write_paused = False
        self._wake_drain()
        self._update_reading()

    def _update_reading(self):
        """Read while fewer than _PIPELINE_PAUSE requests are queued and writes are not paused."""
        if self.closed or self.done:
            return
        if self.reading_paused:
            if not self.write_paused and len(self.queue) <= _PIPELINE_RESUME:
                self.reading_paused = False
                self.transport.resume_reading()
        elif self.write_paused or len(self.queue) >= _PIPELINE_PAUSE:
            self.reading_paused = True
            self.transport.pause_reading()

    def _wake_drain(self):
        w, self.drain_waiter = self.drain_waiter, None
        if w is not None and not w.done():
            w.set_result(None)

    async def _drain(self):
        if self.write_paused and not self.closed:
            self.drain_waiter = asyncio.get_running_loop().create_future()
            await self.drain_waiter

    # -- httptools callbacks
    def on_message_begin(self):
        self.url = b""
        self.headers = []
        self.body_len = 0
        self.hasher = None
        self.body_parts = None
        self.expect = False

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        self.headers.append((name, value))
        if len(name) == 6 and name.lower() == b"expect" and value.lower() == b"100-continue":
            self.expect = True

    def on_headers_complete(self):
        url = self.url
        q = url.find(b"?")
        if q < 0:
            path, query = url, b""
        else:
            path, query = url[:q], url[q + 1:]
        if path[:1] != b"/":             # absolute-form or "*"
            try:
                u = httptools.parse_url(url)
                path, query = u.path or b"/", u.query or b""
            except httptools.HttpParserInvalidURLError:
                pass
        kind = _ROUTES.get(path, _DEFAULT)
        if kind == _DEFAULT and path.startswith(b"/echo/"):
            kind = _ECHO
        self.kind = kind
        self.error = None
        if kind == _SET_HEALTH:
            self.opts = _DEFAULT_OPTIONS
            self.b.pending_health = query
        elif kind in _CONTROL:
            self.opts = _DEFAULT_OPTIONS
        else:
            try:
                self.opts = parse_options(query)
            except ValueError as e:
                self.opts = _DEFAULT_OPTIONS
                self.error = str(e)
        if kind == _ECHO:
            self.hasher = hashlib.sha256()
            if self.opts.body:
                self.body_parts = []
        if self.expect and self.task is None and not self.queue and not self.done \
                and self.parser.get_http_version() == "1.1":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body):
        self.body_len += len(body)
        if self.hasher is not None:
            self.hasher.update(body)
            if self.body_parts is not None:
                self.body_parts.append(body)

    def on_message_complete(self):
        if self.ignore_input:
            return
        p = self.parser
        b = self.b
        kind = self.kind
        # The fast path: default response, nothing pending, no latency, a free slot.
        if (kind == _DEFAULT and self.opts is _DEFAULT_OPTIONS and self.error is None
                and self.task is None and not self.queue and b.latency == 0
                and p.should_keep_alive() and not p.should_upgrade()
                and p.get_http_version() == "1.1" and p.get_method() != b"HEAD"
                and b.try_acquire()):
            self.nreq += 1
            b.requests_total += 1
            b.in_flight += 1
            if b.in_flight > b.max_in_flight:
                b.max_in_flight = b.in_flight
            self.transport.write(b.fast_template % (self.conn_id, self.nreq, b.requests_total))
            b.in_flight -= 1
            b.release()
            return
        r = _Request()
        r.kind = kind
        r.method = p.get_method()
        r.version = p.get_http_version()
        r.keep_alive = p.should_keep_alive()
        if p.should_upgrade():
            r.keep_alive = False
            self.ignore_input = True
        r.target = self.url
        r.opts = self.opts
        r.error = self.error
        if kind == _ECHO:
            r.headers = self.headers
            r.body_len = self.body_len
            r.body_sha256 = self.hasher.hexdigest()
            r.body = b"".join(self.body_parts) if self.body_parts is not None else None
        if kind not in _CONTROL:
            self.nreq += 1
            b.requests_total += 1
        r.conn_requests = self.nreq
        r.count = b.requests_total
        self._dispatch(r)

    # -- serving
    def _dispatch(self, r):
        if self.done:
            return
        if self.task is None and not self.queue:
            if r.kind in _CONTROL or r.kind in (_BAD, _ERROR):
                self._write_simple(r)
                return
            if self._serve_now(r):
                return
        self.queue.append(r)
        if len(self.queue) >= _PIPELINE_PAUSE and not self.reading_paused:
            self._update_reading()
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._worker())

    async def _worker(self):
        try:
            while self.queue and not self.done:
                r = self.queue.popleft()
                if self.reading_paused:
                    self._update_reading()
                if r.kind in _CONTROL or r.kind in (_BAD, _ERROR):
                    self._write_simple(r)
                else:
                    await self._serve(r)
        except asyncio.CancelledError:
            return
        except Exception:
            traceback.print_exc()
            self.done = True
            if not self.closed:
                self.transport.abort()
        finally:
            self.task = None

    def _head(self, r, status, ctype, framing, length, keep, pads=0):
        """Build the status line and headers; framing is "length", "chunked", "eof" or "none"."""
        parts = [b"HTTP/1.1 %d %s\r\nServer: %s\r\n" % (status, _reason(status), SERVER_NAME)]
        if framing != "none":
            parts.append(b"Content-Type: %s\r\n" % ctype)
        if framing == "length":
            parts.append(b"Content-Length: %d\r\n" % length)
        elif framing == "chunked":
            parts.append(b"Transfer-Encoding: chunked\r\n")
        parts.append(self.b.port_line)
        parts.append(b"X-Conn-Id: %d\r\nX-Conn-Requests: %d\r\nX-Request-Count: %d\r\n"
                     % (self.conn_id, r.conn_requests, r.count))
        for i in range(1, pads + 1):
            parts.append(b"X-Pad-%d: %s\r\n" % (i, _PAD_VALUE))
        if not keep:
            parts.append(b"Connection: close\r\n")
        elif r.version == "1.0":
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def _finish(self, keep):
        if not keep and not self.done:
            self.done = self.ignore_input = True
            self.queue.clear()
            self.transport.close()

    def _write_simple(self, r):
        """Answer a control request, a parse error or an internal error, at once."""
        b = self.b
        kind = r.kind
        if kind == _STATS:
            status, body = 200, json.dumps(b.stats()).encode()
        elif kind == _RESET:
            b.reset()
            status, body = 200, b"{}"
        elif kind == _HEALTH:
            b.health_checks += 1
            status, body = b.health_status, b"health\n"
        elif kind == _SET_HEALTH:
            try:
                b.health_status = _int("status", dict(parse_qsl(b.pending_health.decode("latin-1")))
                                       .get("status", "200"), 200, 599)
                status, body = 200, b"{}"
            except ValueError as e:
                status, body = 400, str(e).encode() + b"\n"
        elif kind == _BAD:
            status, body = 400, b"bad request\n"
        else:
            status, body = 500, b"internal error\n"
        r.conn_requests, r.count = self.nreq, b.requests_total
        keep = r.keep_alive
        ctype = b"application/json" if status == 200 else b"text/plain"
        head = self._head(r, status, ctype, "length", len(body), keep)
        self.transport.write(head if r.method == b"HEAD" else head + body)
        self._finish(keep)

    def _bad_query(self, r):
        body = ("bad query: " + r.error + "\n").encode()
        head = self._head(r, 400, b"text/plain", "length", len(body), r.keep_alive)
        self.transport.write(head if r.method == b"HEAD" else head + body)
        self._finish(r.keep_alive)

    def _serve_now(self, r):
        """Serve ``r`` synchronously if it needs no waiting (no latency, trickle,
        stall, and a free slot); return False (nothing done) otherwise."""
        b = self.b
        o = r.opts
        if r.error is not None:
            self._bad_query(r)
            return True
        if o.stall or o.trickle is not None:
            return False
        latency = b.latency if o.latency is None else o.latency
        if latency > 0 or not b.try_acquire():
            return False
        b.in_flight += 1
        if b.in_flight > b.max_in_flight:
            b.max_in_flight = b.in_flight
        try:
            if o.drop is not None:
                self._drop(o.drop == "rst")
            else:
                self._respond_now(r, o)
        finally:
            b.in_flight -= 1
            b.release()
        return True

    async def _serve(self, r):
        b = self.b
        o = r.opts
        if r.error is not None:
            self._bad_query(r)
            return
        if o.stall:
            self.done = self.ignore_input = True
            self.queue.clear()
            return
        latency = b.latency if o.latency is None else o.latency
        await b.acquire()
        b.in_flight += 1
        if b.in_flight > b.max_in_flight:
            b.max_in_flight = b.in_flight
        try:
            if latency > 0:
                await asyncio.sleep(latency)
            if self.done:
                return
            if o.drop is not None:
                self._drop(o.drop == "rst")
                return
            if o.trickle is None:
                self._respond_now(r, o)
            else:
                await self._respond_trickle(r, o)
        finally:
            b.in_flight -= 1
            b.release()

    def _drop(self, rst):
        self.done = self.ignore_input = True
        self.queue.clear()
        if rst:
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError, AttributeError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()
        else:
            self.transport.close()

    def _echo_body(self, r):
        d = {
            "method": r.method.decode("latin-1"),
            "target": r.target.decode("latin-1"),
            "version": r.version,
            "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in r.headers],
            "body_len": r.body_len,
            "body_sha256": r.body_sha256,
            "conn_id": self.conn_id,
            "conn_requests": r.conn_requests,
        }
        if r.body is not None:
            d["body"] = r.body.decode("latin-1")
        return json.dumps(d).encode()

    def _response(self, r, o):
        """Return (head, body pieces or None, keep-alive) for a normal response."""
        b = self.b
        status = o.status
        if r.kind == _ECHO:
            body, ctype = self._echo_body(r), b"application/json"
        else:
            body, ctype = b.body(b.body_size if o.size is None else o.size), b"text/plain"
        keep = r.keep_alive and not o.close
        if status in (204, 304):
            framing, body = "none", b""
        elif o.eof or (o.chunked and r.version == "1.0"):
            framing, keep = "eof", False
        elif o.chunked:
            framing = "chunked"
        else:
            framing = "length"
        head = self._head(r, status, ctype, framing, len(body), keep, o.headers)
        if r.method == b"HEAD" or framing == "none":
            return head, [], keep
        if framing == "chunked":
            pieces = [b"%x\r\n%s\r\n" % (len(p), p) for p in _split(body, o.pieces)]
            if pieces:
                pieces[-1] += b"0\r\n\r\n"
            else:
                pieces = [b"0\r\n\r\n"]
        elif o.trickle is not None:
            pieces = _split(body, o.pieces)
        else:
            pieces = [body]
        return head, pieces, keep

    def _respond_now(self, r, o):
        """Write the whole response in one transport.write (trickle ignored)."""
        head, pieces, keep = self._response(r, o)
        self.transport.write(head + b"".join(pieces) if pieces else head)
        self._finish(keep)

    async def _respond_trickle(self, r, o):
        """Write the head at once, then each body piece after o.trickle seconds."""
        head, pieces, keep = self._response(r, o)
        self.transport.write(head)
        for p in pieces:
            await asyncio.sleep(o.trickle)
            if self.closed:
                return
            self.transport.write(p)
            await self._drain()
        self._finish(keep)


# ---------------------------------------------------------------- running

async def serve(host: str = "127.0.0.1", port: int = 0, backend: Backend | None = None,
                quiet: bool = False) -> int:
    """Listen on ``host:port`` (0 = a free port), print ``listening on HOST:PORT``,
    serve until SIGTERM/SIGINT, close every connection and return 0."""
    loop = asyncio.get_running_loop()
    backend = backend or Backend()
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, stype, proto, _, addr = infos[0]
    sock = socket.socket(family, stype, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(addr)
    sock.listen(4096)
    sock.setblocking(False)
    real_port = sock.getsockname()[1]
    backend.set_port(real_port)
    server = await loop.create_server(lambda: _Conn(backend), sock=sock, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sys.stdout.write(f"listening on {host}:{real_port}\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        server.close()
        for c in list(backend.connections):
            if c.transport is not None:
                c.transport.abort()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2.0)
    return 0


def _build_argparser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fastgw.testing.backend",
        description="fastgw's sample upstream: a small, fast HTTP/1.1 origin server.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=9001, help="port to listen on, 0 = any free one (default 9001)")
    p.add_argument("--latency", default="0",
                   help="delay before each answer, nginx time: 20ms, 1s, 0 (bare number = seconds; default 0)")
    p.add_argument("--body-size", type=int, default=100, help="response body bytes (default 100)")
    p.add_argument("--concurrency", type=int, default=0,
                   help="at most N requests served at once, others wait FIFO (default 0 = unlimited)")
    p.add_argument("--keepalive-timeout", default="0",
                   help="close a keep-alive connection idle this long, nginx time (default 0 = never)")
    p.add_argument("--quiet", action="store_true", help="print nothing but the listening line (the default anyway)")
    return p


def main(argv=None) -> int:
    """Command-line entry point; returns the exit status."""
    p = _build_argparser()
    args = p.parse_args(argv)
    try:
        latency = parse_time(args.latency)
    except ValueError as e:
        p.error(f"--latency: {e}")
    if args.body_size < 0 or args.body_size > MAX_BODY_SIZE:
        p.error("--body-size: out of range")
    if args.concurrency < 0:
        p.error("--concurrency: must be >= 0")
    backend = Backend(latency=latency, body_size=args.body_size, concurrency=args.concurrency)
    try:
        backend.keepalive_timeout = parse_time(args.keepalive_timeout)
    except ValueError as e:
        p.error(f"--keepalive-timeout: {e}")
    coro = serve(args.host, args.port, backend, quiet=args.quiet)
    try:
        import uvloop
    except ImportError:  # still works, only slower
        return asyncio.run(coro)
    if hasattr(uvloop, "run"):
        return uvloop.run(coro)
    uvloop.install()
    return asyncio.run(coro)


# ---------------------------------------------------------------- test helpers



def start_backend(port: int = 0, *args, host: str = "127.0.0.1", timeout: float = 10.0,
                  env: dict | None = None, stderr=None):
    """Start the backend as a subprocess and wait for it to listen.

    Runs ``sys.executable -m fastgw.testing.backend --host HOST --port PORT
    *ARGS`` (e.g. ``start_backend(0, "--latency", "20ms")``), waits at most
    ``timeout`` seconds for its ``listening on`` line and returns
    ``(subprocess.Popen, port)``, port being the real one when 0 was asked.
    It runs the installed fastgw, as the tests do. Raises RuntimeError
    (after killing it) if it exits or does not listen in time.
    Stop it with :func:`stop_backend`.
    """
    cmd = [sys.executable, "-m", "fastgw.testing.backend", "--host", host, "--port", str(port)]
    cmd += [str(a) for a in args]
    env = dict(os.environ if env is None else env)
    # cwd "/": the installed fastgw is imported, never a source tree in the cwd.
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=stderr, env=env, cwd="/")
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    buf = b""
    try:
        while b"\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"backend did not listen within {timeout} s: {cmd}")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                rc = proc.wait(timeout=5)
                raise RuntimeError(f"backend exited with status {rc} before listening: {cmd}")
            buf += chunk
        line = buf.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"unexpected first line from backend: {line!r}")
        return proc, int(line.rsplit(":", 1)[1])
    except BaseException:
        stop_backend(proc)
        raise


def stop_backend(proc: subprocess.Popen, timeout: float = 5.0):
    """Stop a backend from :func:`start_backend`: SIGTERM, wait ``timeout`` seconds, then SIGKILL.

    Returns its exit status.
    """
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode


@contextlib.contextmanager
def running_backend(*args, port: int = 0, **kwargs):
    """Context manager: ``with running_backend("--latency", "5ms") as port: ...``; stops it on exit."""
    proc, real_port = start_backend(port, *args, **kwargs)
    try:
        yield real_port
    finally:
        stop_backend(proc)


if __name__ == "__main__":
    sys.exit(main())
