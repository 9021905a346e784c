"""In-process pieces for fuzzing the client side of fastgw (tests/fuzz/).

A fuzz example must run in milliseconds, so nothing here forks: one worker's
tables are built in the test process from a real configuration text, the way
fastgw.worker builds them (Runtime, pools, Listener with its VirtualHosts),
and each example gets a fresh :class:`fastgw._core.proxy.Downstream` driven
by hand. Only the client transport is a double (:class:`RecordingTransport`,
which keeps uvloop's rules for a closing transport); the upstream is a real
asyncio TCP server on 127.0.0.1 in the same loop (:class:`RecordingUpstream`)
that logs every byte it receives and answers each request it parses.

:func:`parse_upstream` reads what the upstream received as a strict backend
would (CRLF only, token names, no obs-fold, exactly one framing, fastgw's
own chunk lines), and :func:`split_responses` what the client received.
"""

import asyncio
import os
import re
import socket
import tempfile

import httptools

from fastgw import runtime
from fastgw.config.loader import load

__all__ = [
    "TCHAR", "UpstreamRequest", "UpstreamParse", "parse_upstream", "httptools_reading",
    "RecordingUpstream", "RecordingTransport", "FuzzWorker", "split_responses",
]

# RFC 9110 §5.6.2 token characters.
TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
# Control bytes a field value may never hold (HTAB is allowed, RFC 9110 §5.5).
_CTL = frozenset(range(0x00, 0x20)) - {0x09} | {0x7F}
# Fields fastgw must never pass on from a client (RFC 9110 §7.6.1, issue 7 point 4).
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te",
                        b"upgrade", b"trailer", b"expect"})
# A body kept per upstream request beyond which only its length is counted.
BODY_KEEP = 65536


class UpstreamRequest:
    """One request as the strict upstream read it (``complete`` False: its bytes stop early)."""

    __slots__ = ("method", "target", "version", "headers", "body", "body_len", "chunked",
                 "complete", "start", "end")

    def __init__(self, start):
        self.method = self.target = self.version = None
        self.headers = []
        self.body = bytearray()
        self.body_len = 0
        self.chunked = False
        self.complete = False
        self.start = start
        self.end = None

    def header(self, lname):
        return [v for n, v in self.headers if n.lower() == lname]

    def __repr__(self):
        return (f"<{'' if self.complete else 'partial '}{self.method!r} {self.target!r} "
                f"{len(self.headers)} fields, body {self.body_len}>")


class UpstreamParse:
    """The strict reading of one upstream connection's bytes.

    ``requests``: the requests read (the last one maybe partial); ``error``:
    why reading stopped on bytes a strict backend refuses (None when all were
    read); ``consumed``: offset after the last complete request.
    """

    __slots__ = ("requests", "error", "consumed")

    def __init__(self):
        self.requests = []
        self.error = None
        self.consumed = 0

    @property
    def complete(self):
        return [r for r in self.requests if r.complete]


class _Incomplete(Exception):
    pass


class _Bad(Exception):
    pass


def _line(data, pos):
    """The line at ``pos`` (without CRLF) and the offset after it; a bare CR or LF is an error."""
    end = data.find(b"\r\n", pos)
    if end < 0:
        # Too early to say, unless a bare LF or CR already shows (a strict reader stops).
        stray = re.search(rb"\n|\r(?!$)", bytes(data[pos:pos + 65536]))
        if stray:
            what = "LF" if stray.group() == b"\n" else "CR"
            raise _Bad(f"bare {what} at {pos + stray.start()}")
        raise _Incomplete()
    line = bytes(data[pos:end])
    if b"\n" in line or b"\r" in line:
        raise _Bad(f"bare CR or LF in line {line[:80]!r}")
    return line, end + 2


def _parse_one(data, pos, req, tolerate):
    line, pos = _line(data, pos)
    # fastgw writes single spaces; a client's request line may have runs of SP/HTAB
    # (RFC 9112 §3 lets a recipient parse on whitespace, and fastgw re-writes it).
    parts = re.split(rb"[ \t]+", line) if "client" in tolerate else line.split(b" ")
    if len(parts) != 3:
        raise _Bad(f"request line {line[:120]!r}")
    method, target, version = parts
    if not method or not set(method) <= TCHAR:
        raise _Bad(f"method {method!r}")
    if not target or any(c <= 0x20 or c == 0x7F for c in target):
        raise _Bad(f"target {target[:120]!r}")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise _Bad(f"version {version!r}")
    req.method, req.target, req.version = method, target, version
    while True:
        line, pos = _line(data, pos)
        if not line:
            break
        if line[:1] in (b" ", b"\t"):
            raise _Bad(f"obs-fold line {line[:120]!r}")
        name, colon, value = line.partition(b":")
        if not colon:
            raise _Bad(f"field line without colon {line[:120]!r}")
        if not name or not set(name) <= TCHAR:
            raise _Bad(f"field name {name[:120]!r}")
        bad = set(value) & _CTL
        if bad:
            raise _Bad(f"control byte(s) {sorted(bad)} in the value of {name!r}")
        req.headers.append((name, value.strip(b" \t")))
    lengths = req.header(b"content-length")
    tes = req.header(b"transfer-encoding")
    hosts = req.header(b"host")
    client = "client" in tolerate
    if client:
        # A client's request, read by RFC 9112 alone: Host, hop-by-hop fields, the
        # spelling of chunked are fastgw's business, framing is the reader's.
        if lengths and tes:
            raise _Bad("both Content-Length and Transfer-Encoding")
        if len(lengths) > 1 or (lengths and not lengths[0].isdigit()):
            raise _Bad(f"Content-Length {lengths!r}")
        if tes and (len(tes) > 1 or tes[0].lower() != b"chunked" or req.version == b"HTTP/1.0"):
            raise _Bad(f"Transfer-Encoding {tes!r} in {req.version!r}")
        tes = [b"chunked"] if tes else tes
    if len(hosts) > 1:
        raise _Bad(f"{len(hosts)} Host fields")
    for n, v in req.headers:
        if client:
            break
        # fastgw's own Connection (keep-alive to an HTTP/1.0 upstream, close without
        # a keepalive pool) is the only one allowed, and once.
        if n.lower() == b"connection" and v in (b"keep-alive", b"close") and len(req.header(b"connection")) == 1:
            continue
        if n.lower() in HOP_BY_HOP:
            raise _Bad(f"hop-by-hop field {n!r}: {v[:60]!r} forwarded")
    if lengths and tes:
        raise _Bad("both Content-Length and Transfer-Encoding")
    if len(lengths) > 1:
        raise _Bad(f"{len(lengths)} Content-Length fields")
    if tes and req.version == b"HTTP/1.0" and "chunked-http10" not in tolerate:
        # RFC 9112 §6.1: an HTTP/1.0 recipient does not know chunked.
        raise _Bad("Transfer-Encoding in an HTTP/1.0 request")
    if len(tes) > 1 or (tes and tes[0] != b"chunked"):
        raise _Bad(f"Transfer-Encoding {tes!r} (fastgw sends only its own single chunked)")
    if lengths:
        if not lengths[0].isdigit():
            raise _Bad(f"Content-Length {lengths[0]!r}")
        n = int(lengths[0])
        if len(data) - pos < n:
            req.body_len = len(data) - pos
            raise _Incomplete()
        req.body_len = n
        req.body += data[pos:pos + min(n, BODY_KEEP)]
        return pos + n
    if tes:
        req.chunked = True
        while True:
            line, pos = _line(data, pos)
            if client:
                # RFC 9112 §7.1: 1*HEXDIG, then extensions (BWS ; name [= value]).
                m = re.fullmatch(rb"([0-9a-fA-F]+)((?:[ \t]*;[ \t]*[!#$%&'*+.^_`|~0-9A-Za-z-]+"
                                 rb"(?:[ \t]*=[ \t]*(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+|\"[^\"\\\\]*\"))?)*)", line)
                if not m or int(m.group(1), 16) >= 1 << 63:
                    raise _Bad(f"chunk size line {line[:80]!r}")
                line = m.group(1)  # leading zeros are allowed, however many
            # fastgw writes its own chunk lines: lowercase hex, no extensions.
            elif not re.fullmatch(rb"[0-9a-f]{1,16}", line) or (len(line) > 1 and line[0:1] == b"0"):
                raise _Bad(f"chunk size line {line[:80]!r}")
            size = int(line, 16)
            if size == 0:
                while True:
                    line, pos = _line(data, pos)
                    if not line:
                        return pos
                    if not client:
                        raise _Bad(f"trailer field {line[:80]!r} forwarded")
                    name, colon, value = line.partition(b":")
                    if not colon or not name or not set(name) <= TCHAR or set(value) & _CTL:
                        raise _Bad(f"trailer field {line[:80]!r}")
            if len(data) - pos < size + 2:
                raise _Incomplete()
            if len(req.body) < BODY_KEEP:
                req.body += data[pos:pos + size]
            req.body_len += size
            pos += size
            if data[pos:pos + 2] != b"\r\n":
                raise _Bad(f"chunk data not followed by CRLF: {bytes(data[pos:pos + 8])!r}")
            pos += 2
    return pos


def parse_upstream(data, result=None, tolerate=()):
    """Read ``data`` (one upstream connection's bytes) as a sequence of requests.

    ``result``: an earlier :class:`UpstreamParse` of a prefix of ``data`` to go
    on from (the recording upstream parses as bytes arrive). ``tolerate``: the
    names of rules not to enforce, for a fault known and kept as its own test
    (``"chunked-http10"``: a chunked body in an HTTP/1.0 request), or
    ``"client"``: read what a client sent by RFC 9112's rules only (chunk
    extensions, trailers, any spelling of ``chunked``; not fastgw's own
    rules on what it forwards).
    """
    res = result if result is not None else UpstreamParse()
    if res.requests and not res.requests[-1].complete:
        res.requests.pop()
    if res.error is not None:
        return res
    pos = res.consumed
    while pos < len(data):
        if "client" in tolerate:
            # RFC 9112 §2.2: empty lines before a request-line are ignored.
            while data[pos:pos + 2] == b"\r\n":
                pos += 2
            if pos >= len(data):
                break
        req = UpstreamRequest(pos)
        try:
            end = _parse_one(data, pos, req, tolerate)
        except _Incomplete:
            res.requests.append(req)
            return res
        except _Bad as exc:
            res.error = str(exc)
            return res
        req.complete = True
        req.end = end
        res.requests.append(req)
        pos = res.consumed = end
    return res


class _Reading:
    def __init__(self):
        self.messages = []
        self.cur = None

    def on_message_begin(self):
        self.cur = [None, None, bytearray(), False]
        self.messages.append(self.cur)

    def on_url(self, url):
        self.cur[1] = (self.cur[1] or b"") + url

    def on_headers_complete(self):
        self.cur[0] = self.parser.get_method()

    def on_body(self, body):
        if len(self.cur[2]) < BODY_KEEP:
            self.cur[2] += body

    def on_message_complete(self):
        self.cur[3] = True


def httptools_reading(data):
    """llhttp's reading of the same bytes: ``[(method, url, body kept, complete)]``, or an
    error string. A second parser that frames them alike shows one reading only."""
    reading = _Reading()
    parser = reading.parser = httptools.HttpRequestParser(reading)
    try:
        parser.feed_data(bytes(data))
    except httptools.HttpParserUpgrade:
        return "upgrade"
    except httptools.HttpParserError as exc:
        return f"error: {exc}"
    return [(m[0], m[1], bytes(m[2]), m[3]) for m in reading.messages]


# -- the recording upstream ---------------------------------------------------------------

class _UpConn(asyncio.Protocol):
    def __init__(self, server):
        self.server = server
        self.cid = len(server.conns) + 1
        self.data = bytearray()
        self.parse = UpstreamParse()
        self.answered = 0
        self.transport = None
        self.closed = False
        self.eof = False
        self.dropped = 0  # bytes not kept (over the recording cap)
        server.conns.append(self)

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if len(self.data) + len(data) > self.server.keep_bytes:
            # Only the memory test sends this much: count it, parse no further.
            self.dropped += len(data)
            return
        self.data += data
        parse_upstream(self.data, self.parse, self.server.tolerate)
        for req in self.parse.requests[self.answered:]:
            if not req.complete:
                break
            self.answered += 1
            body = b"" if req.method == b"HEAD" else b"ok"
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Up: %d.%d\r\n\r\n"
                                 % (self.cid, self.answered) + body)
        if self.parse.error is not None:
            # A strict backend closes on bytes it cannot read.
            self.transport.close()

    def eof_received(self):
        self.eof = True
        return False

    def connection_lost(self, exc):
        self.closed = True


class RecordingUpstream:
    """A real TCP upstream on 127.0.0.1 in the running loop: records and answers.

    Each request it reads (strictly, :func:`parse_upstream`) gets
    ``HTTP/1.1 200 OK`` with ``Content-Length: 2``, ``X-Up: <conn>.<n>`` and
    body ``ok`` (none for HEAD), so that every relayed response names the
    upstream request it answers. ``conns`` lists every connection in accept order.
    """

    def __init__(self, keep_bytes=1 << 20, tolerate=()):
        self.conns = []
        self.tolerate = tolerate
        self.keep_bytes = keep_bytes
        self.server = None
        self.port = None

    async def start(self):
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _UpConn(self), "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def mark(self):
        return len(self.conns)

    def total_bytes(self):
        return sum(len(c.data) + c.dropped for c in self.conns)

    def close_conns(self, since=0):
        for c in self.conns[since:]:
            if c.transport is not None and not c.closed:
                c.transport.abort()

    def close(self):
        self.close_conns()
        if self.server is not None:
            self.server.close()


# -- the client transport double ------------------------------------------------------------

class RecordingTransport:
    """The client's transport, as uvloop's TCPTransport behaves towards its protocol.

    Keeps what fastgw writes (``data``). uvloop's rules kept: close() and
    abort() stop reading and call ``connection_lost`` on the next loop turn
    (the write buffer is always empty here); a write while closing is
    dropped, a write after ``write_eof()`` or once closed raises
    RuntimeError; pause/resume are no-ops once closing.
    """

    def __init__(self, loop, protocol, peer=("127.0.0.1", 40000)):
        self.loop = loop
        self.protocol = protocol
        self.peer = peer
        self.data = bytearray()
        self.dropped = 0
        self.reading = True
        self.closing = False
        self.closed = False
        self.eof = False
        self.aborted = False
        self.lost_called = False
        self.sock = None

    def _ensure_alive(self):
        if self.closed:
            raise RuntimeError("unable to perform operation on RecordingTransport; "
                               "the handler is closed")

    def write(self, data):
        self._ensure_alive()
        if self.eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self.closing:
            self.dropped += len(data)
            return
        self.data += data

    def writelines(self, bufs):
        for b in bufs:
            self.write(b)

    def write_eof(self):
        self._ensure_alive()
        self.eof = True

    def can_write_eof(self):
        return True

    def _lost(self):
        self.closed = True
        self.lost_called = True
        self.protocol.connection_lost(None)

    def close(self):
        if self.closing or self.closed:
            return
        self.closing = True
        self.reading = False
        self.loop.call_soon(self._lost)

    def abort(self):
        self.aborted = True
        self.close()

    def is_closing(self):
        return self.closing

    def pause_reading(self):
        if self.closing:
            return
        self.reading = False

    def resume_reading(self):
        if self.closing:
            return
        self.reading = True

    def is_reading(self):
        return self.reading and not self.closing

    def set_write_buffer_limits(self, high=None, low=None):
        self._ensure_alive()

    def get_write_buffer_size(self):
        return 0

    def get_extra_info(self, name, default=None):
        if name == "peername":
            return self.peer
        if name == "socket":
            # fastgw peeks at the client's socket (MSG_PEEK): give it one that
            # never has bytes waiting, as a client that sent all it had.
            if self.sock is None:
                self.sock, self._other = socket.socketpair()
                self.sock.setblocking(False)
            return self.sock
        return default

    def release(self):
        if self.sock is not None:
            self.sock.close()
            self._other.close()
            self.sock = None


# -- one worker's tables, in process ----------------------------------------------------------

class FuzzWorker:
    """A worker's Runtime, pools and Listener built from ``conf`` (a config text).

    ``@UPSTREAM@`` in ``conf`` is replaced by the recording upstream's port and
    ``@LISTEN@`` by a bound (never accepting) socket's port, so that the
    listener's virtual hosts are those of a real ``listen``. Call
    :meth:`start` inside the loop.
    """

    def __init__(self, conf, prefix=None):
        self.conf_text = conf
        self._tmp = None
        if prefix is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="fastgw-fuzz-")
            prefix = self._tmp.name
        self.prefix = prefix
        os.makedirs(os.path.join(prefix, "logs"), exist_ok=True)
        self.upstream = RecordingUpstream()

    async def start(self):
        from fastgw._core.proxy import Runtime
        from fastgw.observe.error_log import Logs
        from fastgw.shm import Zones

        loop = asyncio.get_running_loop()
        await self.upstream.start()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        port = self.sock.getsockname()[1]
        text = (self.conf_text.replace("@UPSTREAM@", str(self.upstream.port))
                .replace("@LISTEN@", str(port)))
        path = os.path.join(self.prefix, "fuzz.conf")
        with open(path, "w") as f:
            f.write(text)
        self.config = load(path, self.prefix)
        self.logs = Logs()
        self.access_logs = runtime.AccessLogs(self.config.http.log_formats)
        self.rt = Runtime(loop, self.logs.get(*self.config.error_log),
                          self.config.worker_connections, str(os.getpid()).encode())
        self.zones = Zones(self.config)
        self.rt.stats = self.zones.stats(0)
        self.rt.pages = runtime.status_pages(self.rt.stats, self.zones)
        self.pools = runtime.build_pools(self.config, loop)
        listen = self.config.http.servers[0].listens[0]
        self.listener = runtime.build_listeners(
            self.config, self.rt, [(listen, self.sock)], self.logs, self.access_logs,
            self.pools, runtime.limit_tables(self.zones, self.rt.error_log))[0]
        return self

    def connect(self, peer=("127.0.0.1", 40000)):
        """A new client connection, as Listener.on_readable makes one: ``(Downstream, transport)``."""
        from fastgw._core.proxy import Downstream

        from fastgw._core.counters import CELLS

        for name in ("accepted", "handled", "active"):
            self.rt.stats.add_cell(CELLS[name], 1)
        ds = Downstream(self.listener, peer, self.listener.vhosts)
        self.rt.active += 1
        self.rt.connections.add(ds)
        transport = RecordingTransport(self.rt.loop, ds, peer)
        ds.connection_made(transport)
        return ds, transport

    def gauges(self):
        """stub_status's gauges of this worker: ``{"active": n, "reading": n, ...}``."""
        from fastgw._core.counters import CELLS

        return {name: self.rt.stats.cell(0, CELLS[name])
                for name in ("active", "reading", "writing", "waiting")}

    def close_idle(self):
        for pool in self.pools.values():
            pool.close_idle()

    def idle_count(self):
        return sum(p.idle_count for p in self.pools.values())

    def close(self):
        self.close_idle()
        self.upstream.close()
        self.access_logs.close()
        self.logs.close()
        self.sock.close()
        try:
            self.zones.close_fds()
        except Exception:
            pass
        if self._tmp is not None:
            self._tmp.cleanup()


# -- the client's view ---------------------------------------------------------------------------

_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})[^\r\n]*\r\n")


class ClientResponse:
    __slots__ = ("status", "headers", "up", "offset", "complete")

    def __init__(self, status, headers, offset):
        self.status = status
        self.headers = headers
        self.offset = offset
        self.up = None
        self.complete = True

    def header(self, lname):
        return [v for n, v in self.headers if n.lower() == lname]

    @property
    def local(self):
        """True for a response fastgw made itself (the upstream's all say X-Up)."""
        return self.up is None

    def __repr__(self):
        return f"<{self.status} {'local' if self.local else 'up ' + self.up.decode()}>"


def split_responses(data):
    """The responses in what the client received: ``(responses, error or None)``.

    Bodies are skipped by Content-Length; a response to HEAD has none, which
    shows as the next response starting where its body would (the bodies
    here, ``ok`` and fastgw's HTML pages, never start with ``HTTP/1.``).
    """
    out = []
    pos = 0
    data = bytes(data)
    while pos < len(data):
        m = _STATUS.match(data, pos)
        if not m:
            return out, f"no status line at {pos}: {data[pos:pos + 60]!r}"
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            return out, None if len(data) - pos < 65536 else "endless head"
        lines = data[m.end():end].split(b"\r\n") if m.end() < end + 2 else []
        headers = []
        for line in lines:
            if not line:
                continue
            name, colon, value = line.partition(b":")
            if not colon:
                return out, f"bad response field {line!r}"
            headers.append((name, value.strip()))
        resp = ClientResponse(int(m.group(1)), headers, pos)
        ups = resp.header(b"x-up")
        resp.up = ups[0] if ups else None
        out.append(resp)
        pos = end + 4
        status = resp.status
        if status < 200 or status in (204, 304):
            continue
        lengths = resp.header(b"content-length")
        if resp.header(b"transfer-encoding"):
            return out, "chunked response (not expected from this upstream)"
        if len(lengths) != 1 or not lengths[0].isdigit():
            return out, f"response without one Content-Length: {resp.headers!r}"
        n = int(lengths[0])
        if data.startswith(b"HTTP/1.", pos) or pos == len(data):
            continue  # a response to HEAD (or the body is still to come, see below)
        if len(data) - pos < n:
            resp.complete = False
            return out, None
        pos += n
    return out, None
