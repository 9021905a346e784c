"""A recording, scriptable upstream (the "probe") and a raw client, for the HTTP case tests.

The probe is the upstream of the cases' common test setup (tests/cases/): a raw
TCP server run in the test process, on 127.0.0.1 and a free port, that

* logs every byte it receives, per accepted connection, with a connection id
  (1, 2, ... in accept order) and a timestamp (``time.monotonic()`` seconds);
* parses requests strictly with llhttp (httptools at its default strictness:
  CRLF only, exactly one of Content-Length and chunked, no obs-fold); a
  request it cannot parse is recorded in :attr:`Probe.errors` and its
  connection closed without an answer;
* answers each request, by default, with
  ``HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nX-Conn: <id>\\r\\n\\r\\nok`` and keeps
  the connection open;
* can be scripted per test (:meth:`Probe.script`): a mapping of path to reply
  or a callable, replies made of steps (bytes sent exactly, pauses, bytes
  dripped over time, hang, close with FIN, reset with RST), early replies
  sent as soon as a request head is parsed (before its body), idle
  connections closed after N seconds (FIN or RST), and an echo tunnel after
  an upgrade.

Each connection has a reader thread (reads, logs, parses; it owns closing)
and a writer thread (runs the replies in request order), so bytes keep being
read and logged while a reply pauses or hangs. Every wait is bounded: a
hanging reply ends when its connection closes or the probe stops.

Usage::

    with Probe() as probe:
        probe.script(replies={"/slow": Reply(0.5, b"HTTP/1.1 200 OK\\r\\n...")})
        ...
        assert b"/admin" not in probe.all_bytes()

:class:`Client` is the other end: a raw client socket that records when each
byte arrived and reads responses strictly (:class:`Response`), for tests of
framing and timing. :func:`blackhole` gives a port whose connects never
complete.

Units: times in seconds (float), sizes in bytes.
"""

import contextlib
import queue
import re
import select
import socket
import struct
import threading
import time

import httptools

from fastgw.testing.harness import wait_until

__all__ = [
    "Probe", "ProbeConn", "ProbeRequest", "Reply", "Drip", "HANG", "CLOSE", "RST",
    "default_reply", "Client", "Response", "blackhole", "chunk",
]


class _Step:
    """A named reply step (sentinel)."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


HANG = _Step("HANG")
"""Reply step: never answer (the connection stays open and its bytes keep being logged)."""
CLOSE = _Step("CLOSE")
"""Reply step: close the connection normally (FIN; the kernel sends RST if unread bytes remain)."""
RST = _Step("RST")
"""Reply step: abort the connection with a reset (SO_LINGER 0, then close)."""


class Drip:
    """Reply step: send ``data`` ``size`` bytes at a time, waiting ``interval`` seconds before each piece."""

    def __init__(self, data, interval, size=1):
        self.data = bytes(data)
        self.interval = float(interval)
        self.size = int(size)

    def __repr__(self):
        return f"Drip({len(self.data)} bytes, every {self.interval}s, {self.size} at a time)"


class Reply:
    """A scripted reply: ``steps`` run in order on the connection.

    A step is ``bytes`` (sent exactly, in one ``sendall``), a number (pause,
    seconds), a :class:`Drip`, :data:`HANG`, :data:`CLOSE` or :data:`RST`.
    ``close`` / ``rst``: close (FIN) or reset (RST) the connection after the
    last step. ``echo``: after the last step the connection becomes a raw
    tunnel that echoes every byte it receives (also the bytes that followed
    an upgrade request in the same read).
    """

    def __init__(self, *steps, close=False, rst=False, echo=False):
        self.steps = list(steps)
        if close:
            self.steps.append(CLOSE)
        if rst:
            self.steps.append(RST)
        self.echo = echo

    def __repr__(self):
        return f"Reply({self.steps!r}, echo={self.echo})"


def default_reply(conn_id):
    """The probe's default answer on connection ``conn_id`` (bytes)."""
    return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Conn: %d\r\n\r\nok" % conn_id


def chunk(data):
    """``data`` as one chunk of a chunked body (bytes; an empty ``data`` is the last chunk)."""
    if not data:
        return b"0\r\n\r\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def _as_reply(spec):
    if spec is None or isinstance(spec, Reply):
        return spec
    if isinstance(spec, (bytes, bytearray)):
        return Reply(bytes(spec))
    if isinstance(spec, (list, tuple)):
        return Reply(*spec)
    if isinstance(spec, (_Step, Drip, int, float)):
        return Reply(spec)
    raise TypeError(f"not a reply: {spec!r}")


class ProbeRequest:
    """One request the probe parsed.

    ``method``, ``target`` (the request-target as sent), ``path`` (target
    without the query), ``version`` ("1.1"), ``headers`` (list of
    ``(name, value)`` bytes pairs in order, as received), ``body`` (the
    de-framed body bytes), ``trailers`` (fields after a chunked body),
    ``chunked`` (bool), ``upgrade`` (llhttp stopped at an upgrade request),
    ``upgrade_tail`` (bytes that followed the upgrade request in the same
    read), ``t_begin`` / ``t_head`` / ``t_complete`` (monotonic seconds),
    ``conn_id`` and ``index`` (0-based position on its connection).
    """

    def __init__(self, conn_id, index, t_begin):
        self.conn_id = conn_id
        self.index = index
        self.t_begin = t_begin
        self.t_head = None
        self.t_complete = None
        self.method = b""
        self.target = b""
        self.version = None
        self.headers = []
        self.trailers = []
        self.body = b""
        self.chunked = False
        self.complete = False
        self.upgrade = False
        self.upgrade_tail = b""
        self._name = None

    @property
    def path(self):
        return self.target.split(b"?", 1)[0]

    def header(self, name):
        """Values of every field called ``name`` (case-insensitive), in order (list of bytes)."""
        lname = name.lower().encode() if isinstance(name, str) else name.lower()
        return [v for n, v in self.headers if n.lower() == lname]

    def __repr__(self):
        return (f"<ProbeRequest conn={self.conn_id} #{self.index} {self.method!r} {self.target!r} "
                f"headers={self.headers!r} body={self.body[:60]!r}>")


class ProbeConn:
    """One accepted connection: what it received and sent, and how it ended.

    ``id`` (1, 2, ...), ``chunks`` (list of ``(t, bytes)`` as received),
    ``sent`` (list of ``(t, bytes)`` after each send), ``requests`` (complete
    :class:`ProbeRequest` objects), ``partial`` (a request begun but not
    complete, or None), ``error`` (the parse error text, or None),
    ``accepted_at``, ``peer_closed_at`` (the peer closed or reset it),
    ``peer_reset`` (bool), ``probe_closed_at`` (the probe closed it), times in
    monotonic seconds.
    """

    def __init__(self, probe, sock, conn_id):
        self.probe = probe
        self.sock = sock
        self.id = conn_id
        self.accepted_at = time.monotonic()
        self.chunks = []
        self.sent = []
        self.requests = []
        self.partial = None
        self.error = None
        self.peer_closed_at = None
        self.peer_reset = False
        self.probe_closed_at = None
        self.closed_event = threading.Event()
        self._queue = queue.Queue()
        self._send_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._busy = 0            # requests begun and not yet answered
        self._idle_since = self.accepted_at
        self._raw = False         # after an upgrade: bytes are not parsed
        self._echo = False
        self._raw_pending = b""
        self._active = 0          # requests counted in the probe's `active`

    @property
    def data(self):
        """Every byte received on this connection (bytes)."""
        return b"".join(c for _, c in self.chunks)

    @property
    def sent_data(self):
        """Every byte the probe sent on this connection (bytes)."""
        return b"".join(c for _, c in self.sent)

    @property
    def closed(self):
        return self.closed_event.is_set()

    def wait_closed(self, timeout=5.0):
        """Wait up to ``timeout`` seconds for the connection to end; True if it did."""
        return self.closed_event.wait(timeout)

    def __repr__(self):
        state = "open" if not self.closed else (
            "reset by peer" if self.peer_reset else
            "closed by peer" if self.peer_closed_at else "closed by probe")
        return f"<ProbeConn {self.id} {state} received={len(self.data)}B requests={len(self.requests)}>"

    # -- closing (idempotent; the first reason wins) -------------------------------------
    def _close(self, how):
        with self._close_lock:
            if self.closed_event.is_set():
                return
            now = time.monotonic()
            if how in ("peer", "peer-reset"):
                self.peer_closed_at = now
                self.peer_reset = how == "peer-reset"
            else:
                self.probe_closed_at = now
            try:
                if how == "rst":
                    self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                elif how == "fin":
                    self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                self.sock.close()
            except OSError:
                pass
            self.closed_event.set()
        self._queue.put(None)     # wake the writer thread: nothing more to answer
        self.probe._request_done(self, all_of_conn=True)

    def _send(self, data):
        with self._send_lock:
            if self.closed_event.is_set():
                return False
            try:
                self.sock.sendall(data)
            except OSError:
                return False
            self.sent.append((time.monotonic(), bytes(data)))
            return True


class _Callbacks:
    """httptools callbacks of one connection."""

    def __init__(self, probe, conn):
        self.probe = probe
        self.conn = conn
        self.req = None

    def on_message_begin(self):
        conn = self.conn
        self.req = ProbeRequest(conn.id, len(conn.requests), time.monotonic())
        conn.partial = self.req
        with conn._close_lock:
            conn._busy += 1

    def on_url(self, url):
        self.req.target += url

    def on_header(self, name, value):
        req = self.req
        if req.t_head is not None:
            req.trailers.append((name, value))
        else:
            req.headers.append((name, value))

    def on_headers_complete(self):
        req = self.req
        req.t_head = time.monotonic()
        req.method = self.parser.get_method()
        req.version = self.parser.get_http_version()
        req.chunked = any(n.lower() == b"transfer-encoding" for n, _ in req.headers)
        self.probe._request_started(self.conn)
        early = self.probe._lookup(self.probe._early, req)
        if early is not None:
            req._early = True
            self.conn._queue.put((req, _as_reply(early)))

    def on_body(self, body):
        self.req.body += body

    def on_message_complete(self):
        req, conn = self.req, self.conn
        req.complete = True
        req.t_complete = time.monotonic()
        conn.requests.append(req)
        conn.partial = None
        with self.probe._lock:
            self.probe._requests.append(req)
        if not getattr(req, "_early", False):
            reply = self.probe._lookup(self.probe._handler, req)
            if reply is None:
                reply = self.probe._lookup(self.probe._replies, req)
            if reply is None:
                reply = default_reply(conn.id)
            conn._queue.put((req, _as_reply(reply)))


class Probe:
    """The recording upstream. Start it with ``with Probe() as probe:`` (or :meth:`start`/:meth:`stop`).

    ``replies``, ``handler``, ``early``, ``idle_close`` and ``idle_rst`` are
    as in :meth:`script`. :attr:`port` is the port it listens on (127.0.0.1).
    """

    #: how often (seconds) a reader thread wakes to check for idle timeouts and stop
    TICK = 0.01

    def __init__(self, replies=None, handler=None, early=None, idle_close=None, idle_rst=False,
                 host="127.0.0.1", port=0):
        self.host = host
        self._bind_port = port
        self.port = None
        self._lock = threading.Lock()
        self._conns = []
        self._requests = []
        self.errors = []
        self.active = 0
        self.max_active = 0
        self._stop = threading.Event()
        self._threads = []
        self._listener = None
        self._handler = None
        self._replies = None
        self._early = None
        self.idle_close = None
        self.idle_rst = False
        self.script(replies=replies, handler=handler, early=early, idle_close=idle_close,
                    idle_rst=idle_rst)

    # -- life cycle --------------------------------------------------------------------
    def start(self):
        """Bind and start accepting; returns self."""
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((self.host, self._bind_port))
        self._listener.listen(128)
        self._listener.settimeout(self.TICK * 5)
        self.port = self._listener.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, name=f"probe-accept-{self.port}", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self, timeout=5.0):
        """Stop accepting, close every connection, and wait (at most ``timeout`` seconds) for the threads."""
        self._stop.set()
        if self._listener is not None:
            try:
                self._listener.close()
            except OSError:
                pass
        for conn in self.connections:
            conn._close("probe-stop")
        deadline = time.monotonic() + timeout
        for t in list(self._threads):
            t.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def script(self, replies=None, handler=None, early=None, idle_close=None, idle_rst=False):
        """Set how the probe answers from now on (every argument replaces the previous setting).

        ``replies``: a mapping from a request-target or a path (bytes or str;
        the full target is tried first) to a reply or to a callable
        ``fn(request) -> reply``. ``handler``: a callable
        ``fn(request) -> reply or None``, consulted before ``replies``. A
        reply is ``bytes`` (sent exactly), a :class:`Reply`, a list of steps
        or a single step; None falls through to the default reply. Both are
        consulted once the request is complete (head and body).

        ``early``: a mapping or callable like ``replies``, consulted as soon as
        a request head is parsed; a reply found there is sent at once, before
        the body is read, and the request gets no other answer.

        ``idle_close``: close a connection that has been idle (no request in
        progress, every reply done) for this many seconds since its last
        reply (or since it was accepted); ``idle_rst``: do it with a reset
        (SO_LINGER 0) rather than a FIN.
        """
        self._replies = self._table(replies)
        self._handler = handler
        self._early = self._table(early)
        self.idle_close = idle_close
        self.idle_rst = idle_rst

    @staticmethod
    def _table(spec):
        if spec is None or callable(spec):
            return spec
        return {(k.encode() if isinstance(k, str) else bytes(k)): v for k, v in spec.items()}

    def _lookup(self, table, req):
        if table is None:
            return None
        if callable(table):
            return table(req)
        for key in (req.target, req.path):
            if key in table:
                value = table[key]
                return value(req) if callable(value) else value
        return None

    # -- the log ---------------------------------------------------------------------------
    @property
    def connections(self):
        """Every accepted connection, in accept order (list of :class:`ProbeConn`)."""
        with self._lock:
            return list(self._conns)

    @property
    def requests(self):
        """Every complete request, in the order they completed (list of :class:`ProbeRequest`)."""
        with self._lock:
            return list(self._requests)

    def conn(self, conn_id):
        """The :class:`ProbeConn` with id ``conn_id``."""
        return self.connections[conn_id - 1]

    def received(self, conn_id):
        """Every byte received on connection ``conn_id`` (bytes)."""
        return self.conn(conn_id).data

    def all_bytes(self):
        """Every byte received on every connection, connection after connection (bytes)."""
        return b"".join(c.data for c in self.connections)

    def mark(self):
        """A point in the log (for :meth:`bytes_since` and :meth:`requests_since`)."""
        with self._lock:
            return ({c.id: len(c.chunks) for c in self._conns}, len(self._requests))

    def bytes_since(self, mark):
        """Every byte received after ``mark``, on old and new connections (bytes)."""
        counts, _ = mark
        return b"".join(b"".join(d for _, d in c.chunks[counts.get(c.id, 0):]) for c in self.connections)

    def requests_since(self, mark):
        """Complete requests after ``mark`` (list)."""
        return self.requests[mark[1]:]

    def wait_for(self, predicate, timeout=5.0, message="probe condition"):
        """Poll ``predicate()`` until truthy; return its value, or raise TimeoutError after ``timeout`` seconds."""
        return wait_until(predicate, timeout, interval=0.005, message=message)

    def wait_requests(self, count, timeout=5.0):
        """Wait until at least ``count`` complete requests were logged; returns the list."""
        self.wait_for(lambda: len(self._requests) >= count, timeout, f"{count} probe requests")
        return self.requests

    # -- accounting ------------------------------------------------------------------------
    def _request_started(self, conn):
        with self._lock:
            conn._active += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)

    def _request_done(self, conn, all_of_conn=False):
        with self._lock:
            n = conn._active if all_of_conn else min(conn._active, 1)
            conn._active -= n
            self.active -= n

    # -- threads -----------------------------------------------------------------------------
    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            sock.settimeout(None)
            with self._lock:
                conn = ProbeConn(self, sock, len(self._conns) + 1)
                self._conns.append(conn)
            for target, name in ((self._read_loop, "r"), (self._write_loop, "w")):
                t = threading.Thread(target=target, args=(conn,), name=f"probe-{name}{conn.id}", daemon=True)
                t.start()
                self._threads.append(t)

    def _read_loop(self, conn):
        cb = _Callbacks(self, conn)
        parser = httptools.HttpRequestParser(cb)
        cb.parser = parser
        sock = conn.sock
        while not self._stop.is_set() and not conn.closed:
            if (self.idle_close is not None and conn._busy == 0 and conn._queue.empty()
                    and not conn._raw
                    and time.monotonic() - conn._idle_since >= self.idle_close):
                conn._close("rst" if self.idle_rst else "fin")
                break
            wait = self.TICK
            if self.idle_close is not None:
                wait = max(0.0, min(wait, conn._idle_since + self.idle_close - time.monotonic()))
            try:
                readable, _, _ = select.select([sock], [], [], wait)
            except (OSError, ValueError):
                break
            if not readable:
                continue
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                conn._close("peer-reset")
                break
            except OSError:
                break
            if not data:
                conn._close("peer")
                break
            conn.chunks.append((time.monotonic(), data))
            if conn._raw:
                self._raw_data(conn, data)
                continue
            try:
                parser.feed_data(data)
            except httptools.HttpParserUpgrade as exc:
                offset = exc.args[0] if exc.args else len(data)
                req = conn.requests[-1] if conn.requests else None
                tail = data[offset:]
                if req is not None:
                    req.upgrade = True
                    req.upgrade_tail = tail
                conn._raw = True
                self._raw_data(conn, tail)
            except httptools.HttpParserError as exc:
                conn.error = f"{type(exc).__name__}: {exc}"
                with self._lock:
                    self.errors.append((conn.id, conn.error))
                conn._close("fin")
                break
        conn._close("probe")      # no-op when already closed; else the probe is stopping

    def _raw_data(self, conn, data):
        with conn._send_lock:
            if not conn._echo:
                conn._raw_pending += data
                return
        if data:
            conn._send(data)

    def _write_loop(self, conn):
        while True:
            try:
                item = conn._queue.get(timeout=self.TICK * 10)
            except queue.Empty:
                if conn.closed or self._stop.is_set():
                    return
                continue
            if item is None:
                return
            req, reply = item
            ok = self._run(conn, reply)
            with conn._close_lock:
                conn._busy = max(0, conn._busy - 1)
                conn._idle_since = time.monotonic()
            self._request_done(conn)
            if not ok:
                return
            if reply.echo:
                with conn._send_lock:
                    conn._echo = True
                    pending, conn._raw_pending = conn._raw_pending, b""
                conn._raw = True
                if pending:
                    conn._send(pending)

    def _run(self, conn, reply):
        """Run a reply's steps; False when the connection is gone (stop answering)."""
        for step in reply.steps:
            if conn.closed or self._stop.is_set():
                return False
            if isinstance(step, (bytes, bytearray)):
                if not conn._send(step):
                    return False
            elif isinstance(step, (int, float)):
                if conn.closed_event.wait(step):
                    return False
            elif isinstance(step, Drip):
                for i in range(0, len(step.data), step.size):
                    if conn.closed_event.wait(step.interval):
                        return False
                    if not conn._send(step.data[i:i + step.size]):
                        return False
            elif step is HANG:
                while not conn.closed_event.wait(0.1):
                    if self._stop.is_set():
                        return False
                return False
            elif step is CLOSE:
                conn._close("fin")
                return False
            elif step is RST:
                conn._close("rst")
                return False
            else:
                raise TypeError(f"unknown reply step {step!r}")
        return True


@contextlib.contextmanager
def blackhole(host="127.0.0.1"):
    """A port whose TCP connects never complete (yields the port, int).

    A listener with a backlog of 0 that never accepts is filled with
    connections; the kernel then drops further SYNs, so a connect to it waits
    until the connecting side gives up.
    """
    listener = socket.socket()
    fill = []
    try:
        listener.bind((host, 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect((host, port))
            except BlockingIOError:
                pass
            fill.append(s)
        time.sleep(0.05)
        yield port
    finally:
        for s in fill:
            s.close()
        listener.close()


# -- the client side ------------------------------------------------------------------------

_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9]) ([\t !-~\x80-\xff]*)")
_FIELD = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*")


class Response:
    """A response read by :meth:`Client.read_response`.

    ``status`` (int), ``reason``, ``version`` (b"HTTP/1.1"), ``headers`` (list
    of ``(name, value)`` bytes in order), ``body`` (de-framed bytes),
    ``framing`` ("none", "length", "chunked" or "close"), ``chunks`` (the
    chunk payloads of a chunked body), ``trailers`` (fields after a chunked
    body), ``complete`` (False when the connection ended before the framing
    was satisfied), ``raw`` (the bytes of the response on the wire),
    ``t_start`` / ``t_head`` / ``t_done`` (monotonic seconds when its first
    byte, its blank line and its last byte arrived).
    """

    def __init__(self):
        self.status = None
        self.reason = b""
        self.version = b""
        self.headers = []
        self.body = b""
        self.framing = None
        self.chunks = []
        self.trailers = []
        self.complete = False
        self.raw = b""
        self.t_start = self.t_head = self.t_done = None

    def header(self, name):
        """Values of every field called ``name`` (case-insensitive), as str, in order (list)."""
        lname = name.lower().encode()
        return [v.decode("latin-1") for n, v in self.headers if n.lower() == lname]

    def first(self, name, default=None):
        """The first value of ``name`` (str), or ``default``."""
        values = self.header(name)
        return values[0] if values else default

    def tokens(self, name):
        """The comma-separated tokens of every ``name`` field, lower-cased (set of str)."""
        return {t.strip().lower() for v in self.header(name) for t in v.split(",") if t.strip()}

    def __repr__(self):
        return (f"<Response {self.status} framing={self.framing} complete={self.complete} "
                f"headers={self.headers!r} body={self.body[:80]!r}>")


class Client:
    """A raw client connection to 127.0.0.1:``port`` that timestamps what it receives.

    ``nodelay``: set TCP_NODELAY (each ``send`` leaves as its own segment).
    ``log`` is a list of ``(t, bytes)`` as received; ``buffer`` holds what
    :meth:`read_response` has not consumed yet; ``eof_at`` is when the server
    closed (or reset: ``reset`` True) the connection. Every read is bounded by
    its ``timeout`` (seconds).
    """

    def __init__(self, port, host="127.0.0.1", nodelay=True, connect_timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=connect_timeout)
        if nodelay:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.log = []
        self.buffer = b""
        self._times = []          # arrival time of each byte range in buffer: (end_offset, t)
        self.eof_at = None
        self.reset = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        """Send ``data`` (one ``sendall``); returns the monotonic time after sending."""
        self.sock.sendall(data)
        return time.monotonic()

    def send_pieces(self, pieces, pause):
        """Send each of ``pieces`` with its own ``send``, ``pause`` seconds apart."""
        for i, piece in enumerate(pieces):
            if i:
                time.sleep(pause)
            self.sock.sendall(piece)

    @property
    def closed(self):
        return self.eof_at is not None

    def _fill(self, deadline):
        """Read once (until ``deadline``); False on EOF, raises TimeoutError when nothing came."""
        if self.eof_at is not None:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no data from the server in time")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no data from the server in time") from None
        except ConnectionResetError:
            self.eof_at = time.monotonic()
            self.reset = True
            return False
        now = time.monotonic()
        if not data:
            self.eof_at = now
            return False
        self.log.append((now, data))
        self.buffer += data
        self._times.append((len(self.buffer), now))
        return True

    def _time_of(self, offset):
        """When the byte at buffer ``offset`` arrived."""
        for end, t in self._times:
            if offset < end:
                return t
        return self._times[-1][1] if self._times else time.monotonic()

    def _consume(self, n):
        self.buffer = self.buffer[n:]
        self._times = [(end - n, t) for end, t in self._times if end - n > 0]

    def recv_until(self, predicate, timeout=5.0):
        """Read until ``predicate(buffer)`` is true or EOF; returns the buffer (not consumed)."""
        deadline = time.monotonic() + timeout
        while not predicate(self.buffer):
            if not self._fill(deadline):
                break
        return self.buffer

    def read_exactly(self, n, timeout=5.0):
        """Read and consume exactly ``n`` raw bytes (fewer only if the server closed first)."""
        self.recv_until(lambda buf: len(buf) >= n, timeout)
        data = self.buffer[:n]
        self._consume(len(data))
        return data

    def arrival(self, offset):
        """When the byte at ``offset`` of everything this connection received arrived (monotonic s)."""
        seen = 0
        for t, data in self.log:
            seen += len(data)
            if offset < seen:
                return t
        raise ValueError(f"byte {offset} never arrived ({seen} received)")

    @property
    def received(self):
        """Every byte this connection received, consumed or not (bytes)."""
        return b"".join(d for _, d in self.log)

    def read_response(self, method=b"GET", timeout=5.0):
        """Read and consume one response, strictly (:class:`Response`).

        ``method`` is the request's (HEAD responses have no body). Raises
        TimeoutError when the response does not complete within ``timeout``
        seconds, EOFError when the server closed before sending anything,
        ValueError for a malformed head. A body cut by the close is returned
        with ``complete`` False.
        """
        if isinstance(method, str):
            method = method.encode()
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill(deadline):
                if not self.buffer:
                    raise EOFError("the server closed the connection without a response")
                raise ValueError(f"connection closed inside a response head: {self.buffer[:300]!r}")
        resp = Response()
        resp.t_start = self._time_of(0)
        head_end = self.buffer.index(b"\r\n\r\n")
        resp.t_head = self._time_of(head_end + 3)
        head = self.buffer[:head_end]
        lines = head.split(b"\r\n")
        m = _STATUS_LINE.fullmatch(lines[0])
        if not m:
            raise ValueError(f"malformed status line {lines[0][:200]!r}")
        resp.version = lines[0][:8]
        resp.status = int(m.group(1))
        resp.reason = m.group(2)
        for line in lines[1:]:
            fm = _FIELD.fullmatch(line)
            if not fm or b"\n" in line or b"\r" in line or b"\0" in line:
                raise ValueError(f"malformed header line {line[:200]!r} in {head[:500]!r}")
            resp.headers.append((fm.group(1), fm.group(2)))
        pos = head_end + 4
        te = [t.strip().lower() for v in resp.header("transfer-encoding") for t in v.split(",")]
        lengths = resp.header("content-length")
        if method == b"HEAD" or resp.status < 200 or resp.status in (204, 304):
            resp.framing = "none"
            end = pos
        elif te:
            if te[-1] != "chunked":
                resp.framing = "close"
                end = None
            else:
                resp.framing = "chunked"
                end = self._read_chunked(resp, pos, deadline)
        elif lengths:
            if len(set(lengths)) != 1 or not lengths[0].isdigit():
                raise ValueError(f"invalid Content-Length {lengths!r}")
            resp.framing = "length"
            need = pos + int(lengths[0])
            while len(self.buffer) < need:
                if not self._fill(deadline):
                    break
            end = need if len(self.buffer) >= need else None
            resp.body = self.buffer[pos:need]
        else:
            resp.framing = "close"
            end = None
        if resp.framing == "close":
            while self._fill(deadline):
                pass
            resp.body = self.buffer[pos:]
            end = len(self.buffer)
            resp.complete = True
        elif end is not None:
            resp.complete = True
        else:
            end = len(self.buffer)
        resp.t_done = self._time_of(max(end - 1, 0))
        resp.raw = self.buffer[:end]
        self._consume(end)
        return resp

    def _read_chunked(self, resp, pos, deadline):
        """Parse a chunked body at ``pos``; the end offset, or None if the connection ended first."""
        body = []
        while True:
            while b"\r\n" not in self.buffer[pos:]:
                if not self._fill(deadline):
                    resp.body = b"".join(body)
                    return None
            line_end = self.buffer.index(b"\r\n", pos)
            size_line = self.buffer[pos:line_end]
            size_text = size_line.split(b";", 1)[0]
            if not re.fullmatch(rb"[0-9A-Fa-f]+", size_text):
                raise ValueError(f"invalid chunk size line {size_line[:100]!r}")
            size = int(size_text, 16)
            pos = line_end + 2
            if size == 0:
                break
            while len(self.buffer) < pos + size + 2:
                if not self._fill(deadline):
                    resp.body = b"".join(body) + self.buffer[pos:pos + size]
                    return None
            data = self.buffer[pos:pos + size]
            if self.buffer[pos + size:pos + size + 2] != b"\r\n":
                raise ValueError("chunk data not followed by CRLF")
            body.append(data)
            resp.chunks.append(data)
            pos += size + 2
        # Trailer section, then the final CRLF.
        while True:
            while b"\r\n" not in self.buffer[pos:]:
                if not self._fill(deadline):
                    resp.body = b"".join(body)
                    return None
            line_end = self.buffer.index(b"\r\n", pos)
            line = self.buffer[pos:line_end]
            pos = line_end + 2
            if not line:
                break
            fm = _FIELD.fullmatch(line)
            if not fm:
                raise ValueError(f"malformed trailer line {line[:200]!r}")
            resp.trailers.append((fm.group(1), fm.group(2)))
        resp.body = b"".join(body)
        return pos

    def wait_closed(self, timeout=2.0):
        """Read until the server closes the connection or ``timeout`` seconds pass.

        Returns ``(closed, extra)``: whether it closed (FIN or RST) and the
        bytes that arrived meanwhile (also consumed from the buffer).
        """
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline):
                pass
        except TimeoutError:
            pass
        extra = self.buffer
        self._consume(len(extra))
        return self.closed, extra
