"""The proxy: the downstream (client) protocol, the upstream connection and the relay.

One request's path through a worker::

    Listener.on_readable   accept a batch of connections (the worker owns its accept loop)
    Downstream             parse with llhttp (its C API, strict), route, then either answer
                           locally (return, errors) or hand the request to
    UpstreamConn           a pooled keep-alive connection (or a new one) to a peer picked by
                           the balancer: write the rewritten head and stream the body; parse
                           the response with llhttp and relay it, re-framed, to the client

Flow control runs both ways: when a side's write buffer passes its high-water
mark, the other side's reading is paused until it drains (uvicorn's
flow_control, nginx's busy buffers).

Timeouts (nginx's client_header_timeout, client_body_timeout, send_timeout,
keepalive_timeout, proxy_connect_timeout, proxy_read_timeout,
proxy_send_timeout) cost no timer per read: each connection keeps one timer
armed for at most the shortest timeout it can need; events only record loop
times, and the timer, when it fires, compares them with the deadline of the
connection's current state and re-arms.

Pipelined requests are answered in order: a request parsed while another is
served waits in ``pending`` with its body buffered (reading pauses above
PIPELINE_BUFFER bytes).
"""

import asyncio
import socket
import time
from functools import partial

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from fastgw._core.llhttp cimport (llhttp_t, llhttp_settings_t, llhttp_errno_t, llhttp_method_t,
                                  llhttp_init, llhttp_settings_init, llhttp_execute, llhttp_resume,
                                  llhttp_resume_after_upgrade, llhttp_should_keep_alive,
                                  llhttp_get_error_pos, llhttp_get_error_reason, llhttp_method_name,
                                  HTTP_REQUEST, HTTP_RESPONSE, HTTP_QUERY, HPE_OK, HPE_PAUSED, HPE_PAUSED_UPGRADE,
                                  LLHTTP_VERSION_MAJOR, LLHTTP_VERSION_MINOR, LLHTTP_VERSION_PATCH)

from fastgw._core.http cimport (status_line, date_header, is_hop_by_hop, is_idempotent,
                                local_response)
from fastgw._core.balancer cimport Balancer, Peer, hash_key
from fastgw._core.pool cimport UpstreamPool
from fastgw._core.queue cimport RequestQueue
from fastgw._core.spool cimport BodyBuffer, Spool
from fastgw._core.counters cimport (Stats, C_ACCEPTED, C_HANDLED, C_ACTIVE, C_READING,
                                    C_WRITING, C_WAITING, C_REQUESTS, R_WORKER_CONNECTIONS,
                                    R_QUEUE_FULL, R_QUEUE_TIMEOUT, R_UPSTREAM_ERROR,
                                    R_UPSTREAM_TIMEOUT, R_LIMIT_REQ, R_LIMIT_CONN,
                                    R_NO_LIVE_UPSTREAMS)
from fastgw._core.limits cimport (LimitTable, LR_OK, LR_BUSY, LR_AGAIN, LR_ERROR, LC_OK,
                                  LC_BUSY, OUT_PASSED, OUT_DELAYED, OUT_REJECTED,
                                  OUT_DELAYED_DRY_RUN, OUT_REJECTED_DRY_RUN)
from libc.stdint cimport int32_t, int64_t, uint64_t
from fastgw._core.router cimport Router, VirtualHosts, normalize_path, normalize_host
from fastgw._core.scan cimport has_byte, has_crlf_nul

from fastgw.config import variables as V
from fastgw.observe.access_log import TIME_ISO8601, TIME_LOCAL, combined, log_value
from fastgw.observe.error_log import Throttle

cdef enum:
    K_PROXY = 0
    K_RETURN = 1
    K_NOT_FOUND = 2
    K_STATUS = 3       # stub_status or metrics: a page rendered by Runtime.pages

    # Downstream states.
    S_IDLE = 0        # between requests (keep-alive) or before the first byte
    S_HEAD = 1        # a request head is being received
    S_ACTIVE = 2      # a request is being served
    S_CLOSED = 3

    # Bytes buffered for pipelined requests (and for a body that arrives before
    # its upstream connection is ready) before the client is paused.
    PIPELINE_BUFFER = 1048576
    # Most pipelined requests waiting their turn before the client is paused.
    PIPELINE_DEPTH = 32
    # Write buffer high-water mark of both sides (bytes).
    HIGH_WATER = 262144
    # How many connections one readiness event may accept.
    ACCEPT_BATCH = 64
    # Largest upstream response head (nginx's proxy_buffer_size is 4k/8k; fastgw
    # is more lenient but bounded): beyond it, "upstream sent too big header".
    MAX_UPSTREAM_HEAD = 65536

    # proxy_next_upstream conditions (Location.next_upstream bits).
    NU_ERROR = 1
    NU_TIMEOUT = 2
    NU_INVALID_HEADER = 4
    NU_HTTP_500 = 8
    NU_HTTP_502 = 16
    NU_HTTP_503 = 32
    NU_HTTP_504 = 64
    NU_HTTP_403 = 128
    NU_HTTP_404 = 256
    NU_HTTP_429 = 512
    NU_NON_IDEMPOTENT = 1024
    # Statuses whose retry also counts as a failure of the peer (403 and 404 never do).
    NU_FAILING_STATUS = NU_HTTP_500 | NU_HTTP_502 | NU_HTTP_503 | NU_HTTP_504 | NU_HTTP_429
    # Request body bytes kept in memory to resend on a retry.
    KEEP_BODY = 65536
    # Largest write of a buffered request body, and largest read of a temporary file.
    BODY_PIECE = 65536
    # A read larger than this is parsed a slice at a time (see Downstream._read_slices).
    FEED_SLICE = 8192

NEXT_UPSTREAM_BITS = {
    "error": NU_ERROR, "timeout": NU_TIMEOUT, "invalid_header": NU_INVALID_HEADER,
    "http_500": NU_HTTP_500, "http_502": NU_HTTP_502, "http_503": NU_HTTP_503,
    "http_504": NU_HTTP_504, "http_403": NU_HTTP_403, "http_404": NU_HTTP_404,
    "http_429": NU_HTTP_429, "non_idempotent": NU_NON_IDEMPOTENT,
}


# Status -> its proxy_next_upstream bit (http_500 -> 500: NU_HTTP_500, ...).
cdef dict _STATUS_BITS = {int(name[5:]): bit for name, bit in NEXT_UPSTREAM_BITS.items()
                          if name.startswith("http_")}
cdef int NU_ANY_STATUS = sum(_STATUS_BITS.values())


cdef inline int _status_bit(int status, int conditions):
    """``status``'s bit when ``conditions`` (a location's next_upstream) name it, else 0."""
    if not (conditions & NU_ANY_STATUS):
        return 0  # the default (error timeout): no lookup per response
    return conditions & <int>_STATUS_BITS.get(status, 0)


cdef inline bint _non_idempotent(bytes method):
    # nginx's list for proxy_next_upstream (RFC 9110 §9.2.2 would also name others).
    return method == b"POST" or method == b"PATCH" or method == b"LOCK"

# Public names for the kinds, for fastgw.runtime.
KIND_PROXY = K_PROXY
KIND_RETURN = K_RETURN
KIND_NOT_FOUND = K_NOT_FOUND
KIND_STATUS = K_STATUS

# Seconds between checks that clients of queued requests with a body are still there.
cdef double PEEK_INTERVAL = 0.25
# Lingering close of refused connections: seconds, and how many at once per worker.
cdef double LINGER = 2.0
cdef int MAX_LINGERING = 1024

cdef bytes CRLF = b"\r\n"
# Parts of a header line, joined once per head (no bytes object per line).
cdef bytes COLON = b": "
cdef bytes CHUNK_END = b"0\r\n\r\n"
cdef bytes CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"
cdef frozenset ADD_HEADER_CODES = frozenset({200, 201, 204, 206, 301, 302, 303, 304, 307, 308})
cdef frozenset REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Response fields fastgw replaces with its own (nginx hides the upstream's Date
# and Server and sends its own) or re-frames.
cdef frozenset RESPONSE_SKIP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"content-length", b"date", b"server",
    # Meant for the proxy (nginx's proxy_hide_header default hides it too).
    b"x-accel-buffering",
})


# Granularity of client connection timeouts (seconds): a deadline fires up to this late.
cdef double WHEEL_TICK = 0.1


# One error log line a second for failing temporary files (a full disk fails them all).
_TEMP_LOG = Throttle()


cdef class Wheel:
    """Every client connection's next timeout check, on one loop timer per worker.

    A hashed timer wheel: a connection waits in the set of the tick (WHEEL_TICK
    seconds) its check is due in (its ``timer_slot``); the loop timer runs the due
    sets each tick while any is left. A ``call_later`` per connection cost about
    500 bytes and a libuv timer each; a set entry costs a few dozen bytes. (The
    llhttp parser state lives inside each Downstream, 96 bytes: nothing is
    dropped from idle connections any more.)
    """

    def __init__(self, loop):
        self.loop = loop
        self.slots = {}
        self.done = 0
        self.handle = None

    cdef arm(self, object conn, double delay):
        """Check ``conn`` (a Downstream) again in ``delay`` seconds (at most a tick later)."""
        cdef Downstream c = <Downstream>conn
        cdef double now = self.loop.time()
        cdef long slot = <long>((now + delay) / WHEEL_TICK) + 1
        cdef set due
        if self.handle is None:
            # Nothing was pending: no slot between the last run and now holds anything.
            self.done = <long>(now / WHEEL_TICK)
        if slot <= self.done:
            slot = self.done + 1
        if c.timer_slot == slot:
            return
        if c.timer_slot:
            self.cancel(c)
        c.timer_slot = slot
        due = self.slots.get(slot)
        if due is None:
            self.slots[slot] = {c}
        else:
            due.add(c)
        if self.handle is None:
            self.handle = self.loop.call_later(WHEEL_TICK, self._run)

    cdef cancel(self, object conn):
        cdef Downstream c = <Downstream>conn
        cdef set due
        if c.timer_slot:
            due = self.slots.get(c.timer_slot)
            if due is not None:
                due.discard(c)
                if not due:
                    del self.slots[c.timer_slot]
            c.timer_slot = 0

    def _run(self):
        cdef long now_slot = <long>(self.loop.time() / WHEEL_TICK)
        cdef long s = self.done + 1
        cdef set due
        cdef Downstream c
        self.handle = None
        while s <= now_slot:
            due = self.slots.pop(s, None)
            if due is not None:
                for conn in due:
                    c = <Downstream>conn
                    c.timer_slot = 0
                    try:
                        c._on_timer()
                    except Exception as exc:
                        # One connection's bug must not stop the others' timeouts.
                        self.loop.call_exception_handler({
                            "message": "fastgw: client connection timer failed",
                            "exception": exc, "protocol": c})
            s += 1
        self.done = now_slot
        if self.slots and self.handle is None:
            self.handle = self.loop.call_later(WHEEL_TICK, self._run)


cdef class Runtime:
    """What one worker's connections share: the loop, the main error log, counters.

    ``worker_connections`` bounds client plus upstream connections;
    ``on_drained`` is called once when a graceful shutdown has no connection
    left.
    """

    def __init__(self, loop, error_log, int worker_connections, bytes pid):
        self.loop = loop
        self.wheel = Wheel(loop)
        self.error_log = error_log
        self.connections = set()
        self.worker_connections = worker_connections
        self.active = 0
        self.conn_counter = 0
        self.requests_total = 0
        self.shutting_down = False
        self.on_drained = None
        self.pid = pid
        self.upstream_factory = UpstreamConn
        self.refuse_throttle = Throttle()
        self.stats = None
        self.pages = {}
        self.lingering = {}

    cdef void conn_closed(self, object conn):
        self.connections.discard(conn)
        self.active -= 1
        if self.shutting_down and not self.connections and self.on_drained is not None:
            cb, self.on_drained = self.on_drained, None
            cb()

    def shutdown(self, on_drained, bint keep_idle=False):
        """Begin a graceful stop: busy clients close after their response; idle keep-alive
        ones are closed now, or with ``keep_idle`` (a reload: another generation serves
        the next request) left open until their next request, which is answered with
        ``Connection: close``, or until their keepalive_timeout.

        ``on_drained()`` is called when the last client connection is gone.
        """
        self.shutting_down = True
        self.on_drained = on_drained
        for conn in list(self.connections):
            (<Downstream>conn).graceful_close(keep_idle)
        if not self.connections and self.on_drained is not None:
            cb, self.on_drained = self.on_drained, None
            cb()

    def abort_all(self):
        """Close every client connection now (fast stop)."""
        for conn in list(self.connections):
            (<Downstream>conn).abort()


cdef class Location:
    """A location ready for requests: everything resolved at config time (fastgw.runtime builds it)."""

    def __init__(self):
        self.kind = K_NOT_FOUND
        self.pool = None
        self.prefix = b"/"
        self.exact = False
        self.uri = None
        self.set_headers = ()
        self.skip = frozenset()
        self.proxy_host = b""
        self.proxy_port = b"80"
        self.upstream_http10 = False
        self.add_headers = ()
        self.access_logs = []
        self.ret_code = 0
        self.ret_parts = None
        self.min_timeout = 60.0


cdef class Server:
    """A virtual server ready for requests: its router and connection-level settings."""

    def __init__(self):
        self.router = None
        self.not_found = None
        self.ret = None
        self.name = b""


cdef class Request:
    """One request on a client connection, from its first byte to its access log line."""

    def __init__(self):
        self.headers = []
        self.status = 0
        self.body_buf = []


# -- variables -----------------------------------------------------------------------------

cdef bytes _find_header(Request r, bytes lname):
    cdef tuple h
    for h in r.headers:
        if <bytes>h[2] == lname:
            return <bytes>h[1]
    return None


cdef bytes _arg(bytes args, bytes name):
    if not args:
        return None
    for pair in args.split(b"&"):
        key, sep, value = pair.partition(b"=")
        if key.lower() == name:
            return value
    return None


cdef bytes _cookie(Request r, bytes name):
    cdef tuple h
    for h in r.headers:
        if <bytes>h[2] == b"cookie":
            for item in (<bytes>h[1]).split(b";"):
                key, sep, value = item.strip().partition(b"=")
                if key.lower() == name:
                    return value
    return None


cdef bytes variable(int code, bytes arg, Request r, Downstream ds):
    """The value of one nginx variable for a request (bytes, b"" when unset)."""
    cdef bytes value
    if code == V.HOST:
        if r.host_norm is not None:
            return r.host_norm
        if r.host:
            return normalize_host(r.host) or b""
        return r.server.name if r.server is not None else b""
    if code == V.REMOTE_ADDR:
        return ds.remote_addr
    if code == V.BINARY_REMOTE_ADDR:
        # The key of nginx's examples: 4 bytes for IPv4, 16 for IPv6.
        return socket.inet_pton(socket.AF_INET6 if has_byte(ds.remote_addr, 58) else socket.AF_INET,
                                ds.remote_addr.decode())
    if code == V.LIMIT_REQ_STATUS:
        return r.limit_req_status or b""
    if code == V.LIMIT_CONN_STATUS:
        return r.limit_conn_status or b""
    if code == V.REMOTE_PORT:
        return ds.remote_port
    if code == V.PROXY_HOST:
        return r.location.proxy_host
    if code == V.PROXY_PORT:
        return r.location.proxy_port
    if code == V.PROXY_ADD_X_FORWARDED_FOR:
        if r.xff:
            return r.xff + b", " + ds.remote_addr
        return ds.remote_addr
    if code == V.SCHEME:
        return b"http"
    if code == V.REQUEST_URI:
        return r.url
    if code == V.URI:
        return r.uri or b""
    if code == V.ARGS:
        return r.args or b""
    if code == V.IS_ARGS:
        return b"?" if r.args is not None else b""
    if code == V.REQUEST_METHOD:
        return r.method or b""
    if code == V.SERVER_NAME:
        return r.server.name if r.server is not None else b""
    if code == V.SERVER_PORT:
        return ds.listener.server_port
    if code == V.SERVER_ADDR:
        return ds.listener.server_addr
    if code == V.SERVER_PROTOCOL:
        return b"HTTP/1.1" if r.http11 else b"HTTP/1.0"
    if code == V.CONNECTION:
        return b"%d" % ds.conn_id
    if code == V.CONNECTION_REQUESTS:
        return b"%d" % ds.requests
    if code == V.PID:
        return ds.rt.pid
    if code == V.MSEC:
        return b"%.3f" % time.time()
    if code == V.CONTENT_LENGTH:
        return r.content_length or b""
    if code == V.CONTENT_TYPE:
        return _find_header(r, b"content-type") or b""
    if code == V.REQUEST:
        return r.request_line or b""
    if code == V.HTTP:
        value = _find_header(r, arg)
        return value if value is not None else b""
    if code == V.ARG:
        value = _arg(r.args, arg)
        return value if value is not None else b""
    if code == V.COOKIE:
        value = _cookie(r, arg)
        return value if value is not None else b""
    if code == V.STATUS:
        return b"%03d" % (r.status or r.error_status)
    if code == V.BODY_BYTES_SENT:
        return b"%d" % (r.bytes_sent - r.head_bytes_sent)
    if code == V.BYTES_SENT:
        return b"%d" % r.bytes_sent
    if code == V.REQUEST_TIME:
        return b"%.3f" % (ds.loop.time() - r.start)
    if code == V.REQUEST_LENGTH:
        # Request line, header fields and the blank line, then the body (nginx).
        return b"%d" % (len(r.request_line or b"") + 2 + r.head_size + 2 + r.body_received)
    if code == V.QUEUE_TIME:
        return b"%.3f" % r.queue_time
    if code == V.TIME_LOCAL:
        return TIME_LOCAL.get(time.time())
    if code == V.TIME_ISO8601:
        return TIME_ISO8601.get(time.time())
    if code == V.REMOTE_USER:
        return b""
    if code >= V.UPSTREAM_ADDR and code <= V.UPSTREAM_RESPONSE_TIME:
        return _upstream_variable(code, r.upstream_tries)
    if code == V.MAP:
        return _map_value(arg, r, ds)
    return b""


# map blocks by variable name: (source parts, {value: parts}, ((regex, parts), ...),
# default parts); set by fastgw.runtime for the worker's configuration.
cdef dict _MAPS = {}
cdef int _map_depth = 0


def set_maps(dict maps):
    """Install the worker's ``map`` blocks (fastgw.config.model.Map by name)."""
    global _MAPS
    _MAPS = {name.encode("ascii"): (m.source.parts, {k: v.parts for k, v in m.exact.items()},
                                    tuple((rx, v.parts) for rx, v in m.regexes), m.default.parts)
             for name, m in maps.items()}


cdef bytes _map_value(bytes name, Request r, Downstream ds):
    """nginx's map: exact values first, then the regexes in order, else the default."""
    global _map_depth
    cdef tuple m = _MAPS.get(name)
    cdef object parts
    cdef bytes source
    if m is None or _map_depth > 8:
        return b""  # (maps that refer to each other in a loop end here)
    _map_depth += 1
    try:
        source = render(<tuple>m[0], r, ds)
        parts = (<dict>m[1]).get(source)
        if parts is None:
            for item in <tuple>m[2]:
                if (<tuple>item)[0].search(source) is not None:
                    parts = (<tuple>item)[1]
                    break
            else:
                parts = m[3]
        return render(<tuple>parts, r, ds)
    finally:
        _map_depth -= 1


cdef bytes _upstream_variable(int code, list tries):
    """$upstream_addr, _status, _connect_time, _header_time, _response_time: one value per
    peer tried, joined with ", " (nginx); "-" for a time a try did not reach."""
    cdef list out = []
    cdef list t
    cdef double v
    if not tries:
        return b""
    for t in tries:
        if code == V.UPSTREAM_ADDR:
            out.append(<bytes>t[0])
        elif code == V.UPSTREAM_STATUS:
            out.append(b"%d" % <int>t[1] if t[1] else b"-")
        else:
            v = <double>t[code - V.UPSTREAM_CONNECT_TIME + 2]
            out.append(b"%.3f" % v if v >= 0 else b"-")
    return b", ".join(out)


cdef bytes render_log(tuple parts, int mode, Request r, Downstream ds):
    """A log_format line (with its newline): each variable's value escaped for ``mode``
    (0 default, 1 json, 2 none; fastgw.observe.access_log.log_value)."""
    cdef list out = []
    cdef object part
    for part in parts:
        if type(part) is bytes:
            out.append(part)
        else:
            out.append(log_value(variable(<int>part[0], <bytes>part[1], r, ds), mode))
    out.append(b"\n")
    return b"".join(out)


cdef bytes render(tuple parts, Request r, Downstream ds):
    """Evaluate a compiled template (see fastgw.config.variables.Template)."""
    cdef list out = []
    cdef object part
    for part in parts:
        if type(part) is bytes:
            out.append(part)
        else:
            out.append(variable(<int>part[0], <bytes>part[1], r, ds))
    return b"".join(out)


cdef bytes _safe_value(bytes value):
    """A rendered header value with CR, LF and NUL removed: a variable must not split a header."""
    if has_crlf_nul(value):
        return value.replace(b"\r", b"").replace(b"\n", b"").replace(b"\0", b"")
    return value


# -- accept --------------------------------------------------------------------------------

cdef bytes OVERLOADED = (b"HTTP/1.1 503 Service Temporarily Unavailable\r\nServer: fastgw\r\n"
                         b"Content-Length: 0\r\nRetry-After: 1\r\nConnection: close\r\n\r\n")


cdef class Listener:
    """One listening socket of a worker, with the accept loop the worker owns.

    libuv accepts one connection per loop iteration, so a busy worker drains a
    burst of new connections slowly (design.md §2); here each readiness event
    accepts up to ACCEPT_BATCH connections.
    """

    def __init__(self, Runtime rt, VirtualHosts vhosts, sock):
        self.rt = rt
        self.vhosts = vhosts
        self.by_addr = {}
        self.sock = sock
        host, port = sock.getsockname()[:2]
        self.server_addr = host.encode()
        self.server_port = str(port).encode()
        self.accepting = False

    def start(self):
        """Watch the socket for incoming connections."""
        if not self.accepting:
            self.rt.loop.add_reader(self.sock.fileno(), self.on_readable)
            self.accepting = True

    def stop(self):
        """Stop accepting (the socket stays open: the master owns it)."""
        if self.accepting:
            self.rt.loop.remove_reader(self.sock.fileno())
            self.accepting = False

    def on_readable(self):
        cdef int i
        cdef Runtime rt = self.rt
        for i in range(ACCEPT_BATCH):
            try:
                sock, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # EMFILE/ENFILE: nginx logs "accept() failed" and carries on.
                rt.error_log.log("alert", f"accept() failed ({exc.errno}: {exc.strerror})")
                return
            rt.stats.add(C_ACCEPTED, 1)
            if rt.active >= rt.worker_connections or rt.shutting_down:
                self._refuse(sock)
                continue
            rt.stats.add(C_HANDLED, 1)
            rt.stats.add(C_ACTIVE, 1)
            sock.setblocking(False)
            vhosts = self.vhosts
            if self.by_addr:
                # One getsockname() per connection, only where a wildcard socket
                # serves specific addresses too.
                vhosts = <VirtualHosts>self.by_addr.get(sock.getsockname()[0].encode(), self.vhosts)
            proto = Downstream(self, addr, vhosts)
            rt.active += 1
            rt.connections.add(proto)
            task = rt.loop.create_task(rt.loop.connect_accepted_socket(proto._self, sock))
            task.add_done_callback(partial(_accepted, proto))

    cdef _refuse(self, sock):
        """Over worker_connections: a 503 at once, never a client left in the accept queue."""
        cdef Runtime rt = self.rt
        rt.stats.rejected(R_WORKER_CONNECTIONS)
        rt.stats.status(503)
        write, skipped = rt.refuse_throttle.allow(rt.loop.time())
        if write and rt.error_log.enabled("alert"):
            more = f" ({skipped} more connections refused in the last second)" if skipped else ""
            rt.error_log.log("alert", f"{rt.worker_connections} worker_connections are not "
                                      f"enough{more}")
        try:
            sock.setblocking(False)
            sock.send(OVERLOADED)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        # Lingering close (design.md §6): closing a socket with the client's
        # request still unread makes the kernel send a reset that can destroy the
        # 503 before the client reads it. Read and discard for up to LINGER
        # seconds, or until the client closes; bounded in number too.
        if len(rt.lingering) >= MAX_LINGERING:
            sock.close()
            return
        fd = sock.fileno()
        rt.lingering[fd] = sock
        rt.loop.add_reader(fd, _linger_read, rt, fd)
        rt.loop.call_later(LINGER, _linger_end, rt, fd, sock)


# -- downstream ------------------------------------------------------------------------------

def _accepted(proto, task):
    # A socket that failed between accept() and its transport never gets
    # connection_made/connection_lost: release its slot here.
    if task.cancelled() or task.exception() is not None:
        (<Downstream>proto).connection_lost(None)


def _linger_read(Runtime rt, int fd):
    sock = rt.lingering.get(fd)
    if sock is None:
        return
    try:
        while sock.recv(65536):
            pass
    except (BlockingIOError, InterruptedError):
        return
    except OSError:
        pass
    _linger_end(rt, fd, sock)  # EOF or error: the client is done


def _linger_end(Runtime rt, int fd, sock):
    if rt.lingering.get(fd) is not sock:
        return
    del rt.lingering[fd]
    rt.loop.remove_reader(fd)
    sock.close()


cdef class HttpEnd:
    """One end of an HTTP/1.1 connection as llhttp reads it (Downstream: requests,
    UpstreamConn: responses).

    llhttp's state lives inside the object (no allocation per connection or per
    message); its ``data`` points back here for the C callbacks (see _req_* and
    _resp_* at the end of this module). A header field line comes in pieces,
    across callbacks and reads: it reaches ``_on_header`` once its value is
    complete, that is when the next field begins or the section ends. A line
    longer than ``line_limit`` (name, value and 4 bytes for ": " and CRLF) is
    refused while it is still arriving, in the header section and in a trailer
    section alike: no end buffers an endless line.
    """

    cdef llhttp_t p
    cdef bytes hname
    cdef bytes hvalue
    cdef Py_ssize_t line_limit

    cdef int _on_header_field(self, const char* at, size_t length) except -1:
        cdef bytes name = self.hname, value = self.hvalue
        cdef bytes piece = PyBytes_FromStringAndSize(at, <Py_ssize_t>length)
        if value is not None:
            # A new field line begins: the previous one is complete.
            self.hname = piece
            self.hvalue = None
            return self._on_header(name, value)
        self.hname = piece if name is None else name + piece
        return self._check_line()

    cdef int _on_header_value(self, const char* at, size_t length) except -1:
        cdef bytes piece = PyBytes_FromStringAndSize(at, <Py_ssize_t>length)
        self.hvalue = piece if self.hvalue is None else self.hvalue + piece
        return self._check_line()

    cdef inline int _check_line(self) except -1:
        cdef Py_ssize_t n = 4
        if self.hname is not None:
            n += len(self.hname)
        if self.hvalue is not None:
            n += len(self.hvalue)
        if n > self.line_limit:
            return self._line_too_long()
        return 0

    cdef int _line_too_long(self) except -1:
        """A field line passed ``line_limit``: 1 to stop (each end says why)."""
        return 1

    cdef inline int _header_done(self) except -1:
        """The last field line of a header (or trailer) section is complete."""
        cdef bytes name = self.hname, value = self.hvalue
        if value is None:
            return 0
        self.hname = None
        self.hvalue = None
        return self._on_header(name, value)

    cdef int _on_header(self, bytes name, bytes value) except -1:
        """One complete field line: 0 to go on, 1 to stop (each end says why)."""
        return 0


cdef class Downstream(HttpEnd):
    """The client side of one connection (an asyncio protocol driven by uvloop)."""

    cdef Runtime rt
    cdef public Listener listener
    cdef object loop
    cdef object transport
    # A Python exception a callback raised (a bug, not a malformed request): the
    # callback stops llhttp and _feed reports it.
    cdef object cb_error
    # What stopped parsing: llhttp's reason (str) or cb_error.
    cdef object parse_error
    # Before a request line: fastgw, not llhttp, skips the empty lines there, so that
    # a bare CR or LF is refused (see _skip_empty_lines); eol_cr: a CR was the last
    # byte of the previous read, its LF must come first.
    cdef bint before_line
    cdef bint eol_cr
    cdef public long conn_id
    cdef public bytes remote_addr
    cdef public bytes remote_port
    cdef Request parsing
    cdef Request current
    cdef list pending
    cdef public long requests
    cdef int state
    cdef bint reading_paused
    cdef bint writing_paused
    cdef bint closing
    cdef bint no_more_requests
    cdef bint graceful
    cdef int reject_status
    cdef long head_bytes
    cdef long head_size
    cdef long line_bytes
    cdef long pending_bytes
    cdef double last_read
    cdef double idle_since
    cdef double idle_timeout
    cdef double head_started
    cdef double write_paused_at
    # The wheel tick this connection's next timeout check is due in (0: none).
    cdef long timer_slot
    cdef double timer_step
    cdef Server default_server
    cdef VirtualHosts vhosts
    cdef Location last_location
    # The last request's Host and its normalize_host(): a keep-alive client sends
    # the same Host each time, so it is normalised once per connection.
    cdef bytes host_raw
    cdef bytes host_norm
    cdef bint in_feed
    cdef UpstreamConn send_pending
    # A WebSocket upgrade request was parsed: what the client sent after its head
    # waits here (reading paused) until the upstream has answered. It opens the
    # tunnel after a 101; after any other answer a fresh parser reads it as HTTP.
    cdef bint upgrade_wait
    cdef bytes held
    # The upgraded connection bytes are relayed to, once the upstream said 101.
    cdef UpstreamConn tunnel
    # Bytes of a large read not parsed yet: too many pipelined requests were waiting.
    cdef bytes backlog
    cdef bint backlog_soon
    # proxy_buffering: response bytes the client has not taken yet, and the request
    # to finish once they are gone (its upstream connection is already free).
    cdef Spool spool
    cdef Request spool_finish

    def __init__(self, Listener listener, addr, VirtualHosts vhosts):
        self.listener = listener
        self.rt = listener.rt
        self.loop = self.rt.loop
        self.rt.conn_counter += 1
        self.conn_id = self.rt.conn_counter
        self.remote_addr = str(addr[0]).encode() if addr else b""
        self.remote_port = str(addr[1]).encode() if addr and len(addr) > 1 else b""
        self.pending = []
        self.requests = 0
        self.state = -1
        self._state(S_IDLE)
        self.vhosts = vhosts
        self.default_server = <Server>vhosts.default
        self.line_limit = self.default_server.header_buffer_size
        self._parser_init()

    cdef inline void _parser_init(self) noexcept:
        """A fresh llhttp request parser (strict: no lenient flag is ever set), before
        a request line."""
        llhttp_init(&self.p, HTTP_REQUEST, &REQ_SETTINGS)
        self.p.data = <void*>self
        self.hname = None
        self.hvalue = None
        self.before_line = True
        self.eol_cr = False

    def _self(self):
        return self

    cdef inline void _state(self, int new):
        """Move to a state; stub_status counts each connection in exactly one of
        reading (a head arriving), writing (a request served), waiting (idle)."""
        cdef Stats st = self.rt.stats
        if new == self.state:
            return
        if self.state == S_IDLE:
            st.add(C_WAITING, -1)
        elif self.state == S_HEAD:
            st.add(C_READING, -1)
        elif self.state == S_ACTIVE:
            st.add(C_WRITING, -1)
        if new == S_IDLE:
            st.add(C_WAITING, 1)
        elif new == S_HEAD:
            st.add(C_READING, 1)
        elif new == S_ACTIVE:
            st.add(C_WRITING, 1)
        self.state = new

    # -- asyncio protocol --------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        transport.set_write_buffer_limits(HIGH_WATER)
        now = self.loop.time()
        self.last_read = now
        # The first request gets client_header_timeout to arrive (nginx's post-accept
        # timeout); later idle periods the keepalive_timeout of the last location.
        self.idle_since = now
        self.idle_timeout = self.default_server.header_timeout
        self._arm_timer(self.default_server.min_timeout)
        # A graceful stop that began between accept() and now does not close the
        # connection: its first request is on the way and is served (with
        # Connection: close); graceful_close says why.

    def data_received(self, data):
        if self.closing:
            return
        self.last_read = self.loop.time()
        if self.tunnel is not None:
            self.tunnel.tunnel_send(data)
            return
        if self.held is not None:
            # Reading resumed before the upgrade was decided: keep the order.
            self.held += data
            self._pause_reading()
            return
        if self.backlog is not None:
            self.backlog += data
            self._pause_reading()
            return
        if len(data) > FEED_SLICE:
            self._read_slices(data)
            return
        self._read(data)

    cdef _read_slices(self, bytes data):
        """Parse a large read a slice at a time, so that a flood of pipelined requests
        in one read stops at PIPELINE_DEPTH (each parsed request is an object): the
        rest waits, as bytes, in ``backlog``. A Content-Length body goes in one piece."""
        cdef Py_ssize_t n = len(data), pos = 0, end, left
        cdef Request r
        while pos < n:
            end = pos + FEED_SLICE
            r = self.parsing
            if (r is not None and r.head_done and not r.body_done and not r.chunked
                    and r.content_length is not None):
                left = int(r.content_length) - r.body_received
                if left > FEED_SLICE:
                    end = pos + left
            if end > n:
                end = n
            self._read(data[pos:end])
            pos = end
            if pos >= n or self.closing or self.transport is None:
                return
            if self.no_more_requests and self.parsing is None:
                return  # what follows a last request is never read (see _read)
            if self.held is not None:
                self.held += data[pos:]
                return
            if self.tunnel is not None:
                self.tunnel.tunnel_send(data[pos:])
                return
            if self.reading_paused:
                self.backlog = data[pos:]
                return

    def _drain_backlog(self):
        """Parse what a flood of pipelined requests left over (see _read_slices)."""
        cdef bytes data = self.backlog
        self.backlog_soon = False
        self.backlog = None
        if data is None or self.closing:
            return
        self.data_received(data)
        if self.backlog is None:
            self._maybe_resume()

    cdef _read(self, data):
        cdef object exc
        self.in_feed = True
        if self._feed(data) < 0:
            self.in_feed = False
            exc = self.parse_error
            self.parse_error = None
            if self.reject_status == -1 or (self.no_more_requests and self.parsing is None
                                            and not self.reject_status):
                # Bytes after a request that closes the connection (llhttp says
                # "Data after Connection: close"): never parsed, never answered.
                self._pause_reading()
                self._send_pending()
                return
            self._parse_failed(exc)
            self._send_pending()
            return
        self.in_feed = False
        self._send_pending()
        if self.parsing is not None and not self.parsing.head_done:
            # llhttp holds no line, but fastgw joins a header line's pieces until it
            # ends (``hname``, ``hvalue``): a line over the buffer
            # size is refused as soon as it is, not when (if ever) it ends.
            nl = data.rfind(b"\n")
            if nl < 0:
                self.line_bytes += len(data)
            else:
                self.line_bytes = len(data) - nl - 1
            if self.line_bytes > self.default_server.header_buffer_size:
                # (A long request target was refused by on_url already: 414.)
                self.reject_status = 431
                self._parse_failed(None)
                return
            # The read a head began in may hold earlier pipelined requests too: only
            # later reads count (one read is bounded by the transport's read size).
            if self.head_bytes < 0:
                self.head_bytes = 0
            else:
                self.head_bytes += len(data)
            if self.head_bytes > self.default_server.header_buffers * self.default_server.header_buffer_size:
                # A header line is held in memory until it ends: bound it here.
                self.reject_status = 431
                self._parse_failed(None)

    cdef int _feed(self, object data) except -2:
        """Run llhttp over ``data``: 0, or -1 when parsing must stop (``parse_error``
        and ``reject_status`` say why)."""
        cdef const char* base
        cdef Py_ssize_t n, pos = 0
        cdef llhttp_errno_t err
        if type(data) is not bytes:
            data = bytes(data)
        base = PyBytes_AS_STRING(data)
        n = PyBytes_GET_SIZE(data)
        while True:
            if self.before_line:
                pos = self._skip_empty_lines(base, pos, n)
                if pos < 0:
                    if self.no_more_requests or self.closing:
                        # Bytes after a request that closes the connection are ignored
                        # (nginx), whatever they are.
                        self.reject_status = -1
                    else:
                        # issue 7: llhttp would skip a bare CR or LF here.
                        self.reject_status = 400
                    self.parse_error = "bare CR or LF before the request line"
                    return -1
                if pos >= n:
                    return 0
            err = llhttp_execute(&self.p, base + pos, <size_t>(n - pos))
            if err == HPE_OK:
                return 0
            if err == HPE_PAUSED:
                # _req_message_complete stops llhttp after each message, so that
                # fastgw reads what precedes the next request line itself.
                pos = llhttp_get_error_pos(&self.p) - base
                llhttp_resume(&self.p)
                continue
            if err == HPE_PAUSED_UPGRADE:
                # llhttp stops after a request with Upgrade (and Connection: upgrade),
                # body included. A WebSocket upgrade holds what follows until the
                # upstream answers (see ``held``). Any other (h2c...) is served as a
                # plain request without Upgrade and parsing goes on after it.
                pos = llhttp_get_error_pos(&self.p) - base
                llhttp_resume_after_upgrade(&self.p)
                if self.upgrade_wait:
                    self.upgrade_wait = False
                    if self.current is not None or self.pending:
                        self.held = data[pos:]
                        self._pause_reading()
                        return 0
                    # Answered already (locally): what follows is HTTP.
                if self.closing or pos >= n:
                    return 0
                continue
            if self.cb_error is not None:
                self.parse_error = self.cb_error
                self.cb_error = None
            elif self.parse_error is None:
                self.parse_error = (<bytes>llhttp_get_error_reason(&self.p)).decode("latin-1")
            return -1

    cdef inline Py_ssize_t _skip_empty_lines(self, const char* base, Py_ssize_t pos, Py_ssize_t n) noexcept:
        """The offset of the first byte of a request line at or after ``pos`` (``n``
        when the read ends first), or -1 at a bare CR or LF.

        RFC 9112 §2.2: a server SHOULD ignore at least one empty line (CRLF)
        before the request-line; fastgw ignores any number of them (as llhttp
        does), but not a CR or LF alone, which llhttp and nginx skip too: a
        front end that skips them and a back end that does not read a
        different request (issue 7).
        """
        cdef char c
        while pos < n:
            c = base[pos]
            if self.eol_cr:
                if c != 10:
                    return -1
                self.eol_cr = False
            elif c == 13:
                self.eol_cr = True
            elif c == 10:
                return -1
            else:
                self.before_line = False
                return pos
            pos += 1
        return pos

    def eof_received(self):
        # The client closed its side: as nginx (no proxy_ignore_client_abort), a
        # request still in progress is abandoned, its upstream work stopped, and
        # connection_lost logs it 499. A body it promised can never arrive, nor
        # can the rest of a partial head.
        self._close()
        return False

    def connection_lost(self, exc):
        cdef Request r
        if self.state == S_CLOSED:
            return
        self._state(S_CLOSED)
        self.rt.stats.add(C_ACTIVE, -1)
        self.closing = True
        self.rt.wheel.cancel(self)
        r = self.current
        self._leave_queue(r)
        if self.spool is not None:
            self.spool.close()
            self.spool = None
        if r is not None and r.body_buffer is not None:
            r.body_buffer.close()
            r.body_buffer = None
        if r is not None and not r.done:
            # nginx's 499: the client closed the connection before the response was sent.
            if r.upstream is not None:
                (<UpstreamConn>r.upstream).abort_from_client()
            if not r.response_started:
                r.status = 499
            self._log_request(r)
            r.done = True
        self.current = None
        self.pending = []
        self.rt.conn_closed(self)

    def pause_writing(self):
        cdef Request r = self.current
        self.writing_paused = True
        self.write_paused_at = self.loop.time()
        if r is not None and r.upstream is not None and not (<UpstreamConn>r.upstream).buffered:
            # proxy_buffering off (or an event stream): the upstream waits for the client.
            (<UpstreamConn>r.upstream).pause_reading()

    def resume_writing(self):
        cdef Request r = self.current
        self.writing_paused = False
        if self.spool is not None:
            self._drain_spool()
            if self.writing_paused or (self.spool is not None and self.spool.full()):
                return
        if r is not None and r.upstream is not None:
            (<UpstreamConn>r.upstream).resume_reading()

    cdef spool_write(self, bytes data, UpstreamConn conn):
        """Keep response bytes the client cannot take yet (proxy_buffering)."""
        cdef Location loc = conn.req.location
        if self.spool is None:
            self.spool = Spool(loc.proxy_buffers_size, loc.proxy_temp_path, loc.max_temp_file)
        failed = self.spool.failed
        self.spool.write(data)
        # $bytes_sent counts what reached the client's socket: these count when written.
        conn.req.bytes_sent -= len(data)
        if self.spool.failed is not failed and loc.error_log.enabled("crit"):
            write, skipped = _TEMP_LOG.allow(self.loop.time())
            if write:
                exc = self.spool.failed
                more = f" ({skipped} more since the last such line)" if skipped else ""
                loc.error_log.log("crit", f"temporary file in {loc.proxy_temp_path} failed "
                                          f"({getattr(exc, 'errno', 0)}: {getattr(exc, 'strerror', exc)}); "
                                          f"the rest of the response waits for the client in memory{more}",
                                  conn=self.conn_id, client=self.remote_addr.decode())
        if self.spool.full():
            conn.pause_reading()

    cdef _drain_spool(self):
        """Hand spooled bytes to the client until its write buffer is full again."""
        cdef bytes data
        cdef Request r
        while not self.writing_paused and not self.closing and self.transport is not None:
            data = self.spool.read(BODY_PIECE)
            if data and self.current is not None:
                self.current.bytes_sent += len(data)
            if not data:
                self.spool.close()
                self.spool = None
                if self.spool_finish is not None:
                    r = self.spool_finish
                    self.spool_finish = None
                    self.finish(r)
                return
            self.transport.write(data)

    cdef response_done(self, Request r):
        """The upstream's part of ``r`` is over; finish it once the spool is empty."""
        if self.spool is not None:
            self.spool_finish = r
            return
        self.finish(r)

    # -- llhttp callbacks (through _req_*): 0 goes on, 1 stops with reject_status --------
    cdef int _on_message_begin(self) except -1:
        cdef Request r
        r = Request()
        r.conn = self
        r.queue_handle = -1
        if self.no_more_requests or self.closing:
            # Bytes after a request that closes the connection are ignored (nginx).
            self.reject_status = -1
            return 1
        r.start = self.loop.time()
        r.http11 = True
        # nginx counts a request when it begins (stub_status includes the one asking).
        self.rt.stats.add(C_REQUESTS, 1)
        self.parsing = r
        self.head_bytes = -1
        self.line_bytes = 0
        if self.current is None and self.state == S_IDLE:
            self._state(S_HEAD)
            self.head_started = r.start
        return 0

    cdef int _on_url(self, const char* at, size_t length) except -1:
        cdef Request r = self.parsing
        cdef bytes url = PyBytes_FromStringAndSize(at, <Py_ssize_t>length)
        r.url = url if r.url is None else r.url + url
        if len(r.url) > self.default_server.header_buffer_size:
            self.reject_status = 414
            return 1
        return 0

    cdef int _line_too_long(self) except -1:
        self.reject_status = 431
        return 1

    cdef int _on_header(self, bytes name, bytes value) except -1:
        cdef Request r = self.parsing
        cdef bytes lname
        cdef Py_ssize_t size = len(name) + len(value) + 4
        cdef Py_ssize_t n = len(value)
        if n and (value[n - 1] == 32 or value[n - 1] == 9):
            # RFC 9110 §5.5: whitespace around a value is not part of it (llhttp
            # drops only the leading OWS); nginx strips it too.
            value = value.rstrip(b" \t")
        # The header and trailer sections share large_client_header_buffers' bound.
        r.head_size += size
        if (size > self.default_server.header_buffer_size
                or r.head_size > self.default_server.header_buffers * self.default_server.header_buffer_size):
            # RFC 6585 §5 (nginx says 400 here; fastgw names the cause).
            self.reject_status = 431
            return 1
        if r.head_done:
            # A trailer section (after a chunked body) never joins the header
            # section: fastgw drops request trailers.
            return 0
        if has_byte(name, 95):  # "_"
            # nginx ignores such fields by default (underscores_in_headers off): a
            # backend that maps names to CGI-style variables would confuse
            # X_Forwarded_For with X-Forwarded-For.
            return 0
        lname = name.lower()
        r.headers.append((name, value, lname))
        if lname == b"host":
            if r.host is not None:
                # RFC 9112 §3.2: more than one Host is a 400.
                self.reject_status = 400
                return 1
            r.host = value
        elif lname == b"content-length":
            r.content_length = value
        elif lname == b"transfer-encoding":
            r.te = value if r.te is None else r.te + b"," + value
        elif lname == b"connection":
            for token in value.lower().split(b","):
                token = token.strip()
                if token == b"close":
                    r.conn_close = True
                elif token == b"keep-alive":
                    r.keep_alive = True
                elif token == b"upgrade":
                    r.conn_upgrade = True
        elif lname == b"upgrade":
            r.upgrade_hdr = value if r.upgrade_hdr is None else r.upgrade_hdr + b"," + value
        elif lname == b"expect":
            if value.strip().lower() == b"100-continue":
                r.expect_continue = True
            elif value.strip():  # (an empty list asks nothing: RFC 9110 §5.6.1)
                # RFC 9110 §10.1.1: an expectation the server cannot meet is 417.
                r.error_status = 417
        elif lname == b"x-forwarded-for":
            r.xff = value if r.xff is None else r.xff + b", " + value
        elif lname == b"referer":
            r.referer = value
        elif lname == b"user-agent":
            r.user_agent = value
        return 0

    cdef int _on_headers_complete(self) except -1:
        cdef Request r
        if self._header_done():
            return 1
        r = self.parsing
        r.head_done = True
        r.method = <bytes>METHODS[self.p.method]
        if self.p.http_major == 1 and self.p.http_minor == 1:
            r.http11 = True
            r.keep_alive = not r.conn_close
        elif self.p.http_major == 1 and self.p.http_minor == 0:
            r.http11 = False
            r.keep_alive = r.keep_alive and not r.conn_close
        else:
            self.reject_status = 505
            return 1
        r.request_line = r.method + b" " + (r.url or b"") + (b" HTTP/1.1" if r.http11 else b" HTTP/1.0")
        if r.te is not None:
            status = _te_status(r.te, r.http11)
            if status:
                self.reject_status = status
                return 1
            r.chunked = True
        if r.http11 and r.host is None:
            self.reject_status = 400
            return 1
        if r.method == b"CONNECT":
            self.reject_status = 405
            return 1
        if not r.keep_alive:
            self.no_more_requests = True
        # An upgrade request with a body (say h2c with a POST body) is a plain request
        # here: llhttp reads its body (_req_headers_complete never asks it to skip
        # one) and stops after it, and fastgw goes on parsing (_feed).
        if (r.conn_upgrade and r.http11 and r.method == b"GET" and r.upgrade_hdr is not None
                and not _has_body(r) and r.upgrade_hdr.strip().lower() == b"websocket"):
            # RFC 6455 §4.1's handshake; llhttp stops parsing right after it.
            r.upgrade_asked = True
            self.upgrade_wait = True
        if r.error_status:
            r.keep_alive = False
            r.close_after = True
            self.no_more_requests = True
        if self.current is None:
            self._dispatch(r)
        else:
            self.pending.append(r)
            if len(self.pending) >= PIPELINE_DEPTH:
                self._pause_reading()
        return 0

    cdef int _on_body(self, const char* at, size_t length) except -1:
        cdef Request r = self.parsing
        cdef Location loc
        cdef bytes chunk
        r.body_received += <long>length
        if r.done:
            return 0  # answered already (e.g. a local response): discard, as nginx does
        loc = r.location
        if loc is not None and loc.max_body and r.body_received > loc.max_body:
            self._reject_body(r, 413)
            return 0
        chunk = PyBytes_FromStringAndSize(at, <Py_ssize_t>length)
        if r.upstream is not None and (<UpstreamConn>r.upstream).sending:
            (<UpstreamConn>r.upstream).write_body(chunk)
        elif r.body_buffer is not None:
            try:
                r.body_buffer.write(chunk)
            except OSError as exc:
                self._temp_failed(r, loc.body_temp_path, exc)
        else:
            r.body_buf.append(chunk)
            r.body_buffered += len(chunk)
            self.pending_bytes += len(chunk)
            if self.pending_bytes > PIPELINE_BUFFER:
                self._pause_reading()
        return 0

    cdef int _on_message_complete(self) except -1:
        """2 when llhttp is to pause here: another request may follow on this
        connection, and fastgw reads the bytes before its request line itself."""
        cdef bint keep
        if self._header_done():  # a trailer section's last line
            return 1
        keep = llhttp_should_keep_alive(&self.p)
        # (llhttp stops after an upgrade request anyway: HPE_PAUSED_UPGRADE.)
        self.before_line = keep
        self._message_complete(self.parsing, keep)
        return 2 if keep and not self.p.upgrade else 0

    cdef _message_complete(self, Request r, bint keep):
        r.body_done = True
        self.parsing = None
        if not keep:
            # llhttp's reading (meaningful only here, design.md §2) wins over ours.
            r.keep_alive = False
            self.no_more_requests = True
        if r.upstream is not None and (<UpstreamConn>r.upstream).sending:
            (<UpstreamConn>r.upstream).finish_body()
        elif r.buffering and not r.done and r is self.current:
            # The whole body is here (proxy_request_buffering): now choose a peer.
            r.buffering = False
            self._pick(r, r.location)
        if r.done and r is not self.current and self.current is None:
            # The response went out before the body was read (local answer): go on.
            self._next()

    # -- parse errors --------------------------------------------------------------------
    cdef _parse_failed(self, exc):
        cdef int status = self.reject_status or _status_for(exc, self.parsing)
        cdef Request r = self.parsing
        self.no_more_requests = True
        self.parsing = None
        if self.closing:
            return
        if r is None:
            r = Request()
            r.start = self.loop.time()
            self.rt.stats.add(C_REQUESTS, 1)
        r.error_status = status
        r.keep_alive = False
        r.close_after = True
        if r.request_line is None:
            r.request_line = b""
        if self.default_server.error_log.enabled("info"):
            self.default_server.error_log.log("info", f"client sent invalid request ({exc or status}) while reading client request",
                                  conn=self.conn_id, client=self.remote_addr.decode())
        if r is self.current:
            # The body of the request being served was malformed (e.g. a runaway
            # chunk): the upstream connection is closed without a final chunk and
            # never pooled; the client gets 400 if nothing was sent yet.
            if r.upstream is not None:
                (<UpstreamConn>r.upstream).abort_from_client()
                r.upstream = None
            if not r.response_started:
                self._respond(r, status, None, b"", True)
            else:
                self._close()
            return
        self._pause_reading()
        if self.current is None:
            self._respond(r, status, None, b"", True)
        else:
            self.pending.append(r)

    cdef _reject_body(self, Request r, int status):
        """A body over client_max_body_size: answer ``status`` now and close."""
        r.close_after = True
        r.keep_alive = False
        self.no_more_requests = True
        if r.upstream is not None:
            (<UpstreamConn>r.upstream).abort_from_client()
            r.upstream = None
        if r is self.current and not r.response_started:
            self._respond(r, status, None, b"", True)
        elif r is self.current:
            self._close()

    # -- routing and dispatch ------------------------------------------------------------
    cdef _dispatch(self, Request r):
        cdef Server server
        cdef Location loc
        cdef bytes url = r.url or b""
        cdef bytes path, host
        cdef Py_ssize_t q
        self.current = r
        self._state(S_ACTIVE)
        self.requests += 1
        self.rt.requests_total += 1
        if r.error_status:
            self._respond(r, r.error_status, None, b"", True)
            return
        host = r.host
        if url.startswith(b"/"):
            q = url.find(b"?")
            path = url if q < 0 else url[:q]
            r.args = None if q < 0 else url[q + 1:]
        elif url[:7].lower() == b"http://" or url[:8].lower() == b"https://":
            # Absolute form (RFC 9112 §3.2.2): its authority replaces Host, for
            # routing and for $host alike (nginx), and the origin form is sent on.
            rest = url.split(b"://", 1)[1]
            end = len(rest)
            for sep in (b"/", b"?"):
                q = rest.find(sep)
                if 0 <= q < end:
                    end = q
            host = rest[:end]
            if not _uri_host_ok(host):
                # nginx parses this authority as a host[:port] and nothing else: no
                # userinfo (RFC 9110 §4.2.4: treat "user@" as an error), no ",;%_".
                self._respond(r, 400, None, b"", True)
                return
            rest = rest[end:]
            if not rest.startswith(b"/"):
                rest = b"/" + rest
            q = rest.find(b"?")
            path = rest if q < 0 else rest[:q]
            r.args = None if q < 0 else rest[q + 1:]
            r.url = rest
            r.host = host
        else:
            self._respond(r, 400, None, b"", True)
            return
        if host is not None:
            if host == self.host_raw:
                host = self.host_norm
            else:
                raw = host
                host = normalize_host(host)
                if host is None:
                    self._respond(r, 400, None, b"", True)
                    return
                self.host_raw = raw
                self.host_norm = host
            r.host_norm = host
        server = <Server>self.vhosts.find(host) if host else self.default_server
        r.server = server
        r.uri = normalize_path(path)
        if r.uri is None:
            self._respond(r, 400, None, b"", True)
            return
        if server.ret is not None:
            loc = server.ret
        else:
            loc = server.router.match(r.uri)
            if loc is None:
                loc = server.not_found
        r.location = loc
        if loc.limit_reqs or loc.limit_conns:
            # nginx's preaccess phase: limit_req (which may hold the request), then
            # limit_conn. Not for `return`, which nginx runs before them.
            if not self._limits(r, loc):
                return
        self._serve(r, loc)

    cdef _serve(self, Request r, Location loc):
        if loc.kind == K_PROXY:
            self._proxy(r, loc)
        elif loc.kind == K_RETURN:
            self._return(r, loc)
        elif loc.kind == K_STATUS:
            ctype, body = self.rt.pages[loc.ret_code]()
            self._respond(r, 200, body, b"Content-Type: " + ctype + CRLF + b"Cache-Control: no-cache\r\n",
                          False)
        else:
            self._respond(r, 404, None, b"", False)

    # -- limit_req and limit_conn (nginx's preaccess phase) ----------------------------------
    cdef bint _limits(self, Request r, Location loc):
        """True when ``r`` may go on now; otherwise it was answered, or is held by limit_req."""
        cdef double delay = 0.0
        if loc.limit_redis:
            # A zone in Redis: the check is a round trip; the request is held meanwhile.
            if _has_body(r):
                self._pause_reading()
            self.loop.create_task(_redis_limit_req(self, r, loc))
            return False
        if loc.limit_reqs:
            delay = self._limit_req(r, loc)
            if delay < 0:
                return False
            if delay > 0:
                if _has_body(r):
                    # Held requests read no body, as queued ones (the peek timer is not
                    # needed: the hold is short, and a client that leaves is seen then).
                    self._pause_reading()
                r.limit_timer = self.loop.call_later(delay, self._limit_delay_done, r)
                return False
        if loc.limit_conns:
            return self._limit_conn(r, loc)
        return True

    def _limit_delay_done(self, Request r):
        cdef Location loc = r.location
        r.limit_timer = None
        if self.closing or r.done or r is not self.current:
            return
        if loc.limit_conns and not self._limit_conn(r, loc):
            return
        self._serve(r, loc)
        self._maybe_resume()

    cdef double _limit_req(self, Request r, Location loc):
        """nginx's ngx_http_limit_req_handler: seconds to hold ``r`` (0: go on), or -1 when
        it was answered (rejected)."""
        cdef tuple lim = None
        cdef LimitTable t
        cdef int64_t now = <int64_t>(self.loop.time() * 1000)
        cdef int64_t excess = 0, ex, max_delay, d
        cdef int32_t node = -1
        cdef uint64_t h = 0
        cdef int rc = -1
        cdef int n = 0
        cdef int last = len(loc.limit_reqs) - 1
        cdef list held = None
        cdef bytes key
        cdef int status
        cdef long retry
        for lim in loc.limit_reqs:
            key = render(<tuple>lim[1], r, self)
            if key:
                t = <LimitTable>lim[0]
                rc = t.req_lookup(key, <int64_t>lim[2], <int64_t>lim[3], now, n == last,
                                  &excess, &node, &h)
                if rc == LR_AGAIN:
                    if held is None:
                        held = []
                    held.append((t, node, h, lim))
                elif rc != LR_AGAIN:
                    break
            n += 1
        if rc == -1:
            return 0.0  # every key was empty: not limited
        if rc == LR_BUSY or rc == LR_ERROR:
            if held is not None:
                for item in held:
                    (<LimitTable>item[0]).req_release(item[1], item[2])
            return self._limit_req_reject(r, loc, lim, excess, rc)
        if rc == LR_AGAIN:
            excess = 0  # the last limit's key was empty
        # nginx's ngx_http_limit_req_account: the longest delay of all the limits.
        max_delay = 0 if excess <= <int64_t>lim[4] else (excess - <int64_t>lim[4]) * 1000 // <int64_t>lim[2]
        if held is not None:
            for item in held:
                ex = (<LimitTable>item[0]).req_account(item[1], item[2], <int64_t>item[3][2], now)
                if ex <= <int64_t>item[3][4]:
                    continue
                d = (ex - <int64_t>item[3][4]) * 1000 // <int64_t>item[3][2]
                if d > max_delay:
                    max_delay, excess, lim = d, ex, item[3]
        return self._limit_req_delay(r, loc, lim, excess, max_delay)

    cdef double _limit_req_reject(self, Request r, Location loc, tuple lim, int64_t excess, int rc):
        """Answer a request over a limit_req (LR_BUSY) or that found its zone full (LR_ERROR);
        -1, or 0 in a dry run."""
        cdef int status
        cdef long retry
        if rc == LR_ERROR:
            self._limit_log(lim[6], "alert", f'could not allocate node in limit_req zone '
                                             f'"{lim[5]}"', r)
        else:
            self._limit_log(lim[6], loc.limit_req_level,
                            f'limiting requests{", dry run" if loc.limit_req_dry else ""}, '
                            f'excess: {excess // 1000}.{excess % 1000:03d} by zone '
                            f'"{lim[5]}"', r)
            if loc.limit_req_dry:
                r.limit_req_status = b"REJECTED_DRY_RUN"
                (<LimitTable>lim[0]).outcome(OUT_REJECTED_DRY_RUN)
                return 0.0
        r.limit_req_status = b"REJECTED"
        (<LimitTable>lim[0]).outcome(OUT_REJECTED)
        self.rt.stats.rejected(R_LIMIT_REQ)
        if rc == LR_BUSY:
            status = loc.limit_req_status
            # Until the bucket admits the next request: (excess - burst) / rate.
            retry = (excess - <int64_t>lim[3] + <int64_t>lim[2] - 1) // <int64_t>lim[2]
        else:
            status, retry = 503, 1
        self._respond(r, status, None, b"Retry-After: %d\r\n" % (retry if retry > 0 else 1),
                      _unread_body(r))
        return -1.0

    cdef double _limit_req_delay(self, Request r, Location loc, tuple lim, int64_t excess,
                                 int64_t max_delay):
        """Seconds to hold a request that passed its limits (0: none), logged as nginx does."""
        if max_delay <= 0:
            r.limit_req_status = b"PASSED"
            (<LimitTable>lim[0]).outcome(OUT_PASSED)
            return 0.0
        self._limit_log(lim[6], loc.limit_req_delay_level,
                        f'delaying request{", dry run" if loc.limit_req_dry else ""}, excess: '
                        f'{excess // 1000}.{excess % 1000:03d}, by zone "{lim[5]}"', r)
        if loc.limit_req_dry:
            r.limit_req_status = b"DELAYED_DRY_RUN"
            (<LimitTable>lim[0]).outcome(OUT_DELAYED_DRY_RUN)
            return 0.0
        r.limit_req_status = b"DELAYED"
        (<LimitTable>lim[0]).outcome(OUT_DELAYED)
        return max_delay / 1000.0

    def _limit_req_done(self, Request r, double delay):
        """The Redis path's verdict: hold ``r`` for ``delay`` seconds, or go on now."""
        r.limit_timer = None
        if self.closing or r.done or r is not self.current:
            return
        if delay > 0:
            r.limit_timer = self.loop.call_later(delay, self._limit_delay_done, r)
        else:
            self._limit_delay_done(r)

    cdef bint _limit_conn(self, Request r, Location loc):
        """nginx's ngx_http_limit_conn_handler: count ``r`` in every zone, or answer it."""
        cdef tuple lim
        cdef LimitTable t
        cdef int32_t node = -1
        cdef uint64_t h = 0
        cdef int rc
        cdef list taken = None
        cdef bytes key
        for lim in loc.limit_conns:
            key = render(<tuple>lim[1], r, self)
            if not key:
                continue
            t = <LimitTable>lim[0]
            rc = t.conn_acquire(key, <int64_t>lim[2], &node, &h)
            if rc == LC_OK:
                if taken is None:
                    taken = []
                taken.append((t, node, h))
                continue
            if taken is not None:
                _release_conns(taken)
                taken = None
            if rc == LC_BUSY:
                self._limit_log(lim[4], loc.limit_conn_level,
                                f'limiting connections{", dry run" if loc.limit_conn_dry else ""} '
                                f'by zone "{lim[3]}"', r)
                if loc.limit_conn_dry:
                    r.limit_conn_status = b"REJECTED_DRY_RUN"
                    t.outcome(OUT_REJECTED_DRY_RUN)
                    return True
            else:
                self._limit_log(lim[4], "alert", f'could not allocate node in limit_conn zone '
                                                 f'"{lim[3]}"', r)
            r.limit_conn_status = b"REJECTED"
            t.outcome(OUT_REJECTED)
            self.rt.stats.rejected(R_LIMIT_CONN)
            self._respond(r, loc.limit_conn_status if rc == LC_BUSY else 503, None,
                          b"Retry-After: 1\r\n", _unread_body(r))
            return False
        r.limit_conn_held = taken
        r.limit_conn_status = b"PASSED"
        if taken is not None:
            for item in taken:
                (<LimitTable>(<tuple>item)[0]).outcome(OUT_PASSED)
        return True

    cdef _limit_log(self, object throttle, str level, str message, Request r):
        """A limiter's error log line, at most one per second per zone (with the count skipped)."""
        log = r.location.error_log
        if level == "debug" or not log.enabled(level):
            return
        write, skipped = throttle.allow(self.loop.time())
        if not write:
            return
        more = f" ({skipped} more in the last second)" if skipped else ""
        log.log(level, message + more, conn=self.conn_id, client=self.remote_addr.decode(),
                server=(r.server.name.decode() if r.server is not None else ""),
                request=(r.request_line or b"").decode("latin-1"),
                host=(r.host or b"").decode("latin-1"))

    cdef _return(self, Request r, Location loc):
        cdef bytes text = render(loc.ret_parts, r, self) if loc.ret_parts is not None else None
        cdef int code = loc.ret_code
        if code in REDIRECTS and text is not None:
            if text[:1] == b"/":
                text = b"http://" + (normalize_host(r.host) or self.listener.server_addr) + text
            self._respond(r, code, None, b"Location: " + _safe_value(text) + CRLF, False)
        elif code == 444:
            # nginx's 444 closes the connection without a response.
            r.status = 444
            r.done = True
            self._log_request(r)
            self._close()
        else:
            self._respond(r, code, text, b"", False)

    cdef _proxy(self, Request r, Location loc):
        cdef UpstreamPool pool = loc.pool
        cdef Peer peer
        cdef UpstreamConn conn
        if r.content_length is not None and loc.max_body and int(r.content_length) > loc.max_body:
            # llhttp has checked Content-Length is digits only, so int() is exact here.
            self._respond(r, 413, None, b"", True)
            return
        if r.body_received and loc.max_body and r.body_received > loc.max_body:
            self._respond(r, 413, None, b"", True)
            return
        # nginx forwards an upgrade only over HTTP/1.1 and where the location sets Upgrade.
        r.upgrade = r.upgrade_asked and loc.upgrade and not loc.upstream_http10
        if loc.request_buffering and _unread_body(r):
            # nginx's proxy_request_buffering: read the body whole first, so that a
            # slow client holds no upstream connection and no queue slot.
            self._buffer_body(r, loc)
            return
        if r.chunked and loc.upstream_http10 and r.body_buffer is None:
            # An HTTP/1.0 upstream cannot read chunked (RFC 9112 §6.1): the body is
            # buffered to send a Content-Length whatever proxy_request_buffering says
            # (nginx does the same).
            self._buffer_body(r, loc)
            if r.body_done and not r.done and r.body_buffer is not None:
                r.buffering = False
                self._pick(r, loc)
            return
        self._pick(r, loc)

    cdef _buffer_body(self, Request r, Location loc):
        cdef bytes chunk
        r.body_buffer = BodyBuffer(loc.body_buffer_size, loc.body_temp_path)
        r.buffering = True
        try:
            for chunk in r.body_buf:
                # Arrived before the request's turn (pipelined): counted as pending.
                r.body_buffer.write(chunk)
        except OSError as exc:
            self._temp_failed(r, loc.body_temp_path, exc)
            return
        self.pending_bytes -= r.body_buffered
        r.body_buf = []
        r.body_buffered = 0
        if r.expect_continue and r.http11 and not r.body_done:
            # The body is wanted now (nginx sends 100 when it starts reading it).
            r.expect_continue = False
            self.transport.write(CONTINUE_100)
        self._maybe_resume()

    cdef _temp_failed(self, Request r, str directory, exc):
        """A temporary file could not be made or written: 500, as nginx."""
        log = r.location.error_log if r.location is not None else self.default_server.error_log
        if log.enabled("crit"):
            log.log("crit", f"temporary file in {directory} failed ({getattr(exc, 'errno', 0)}: "
                            f"{getattr(exc, 'strerror', exc)})", conn=self.conn_id,
                    client=self.remote_addr.decode())
        if r.body_buffer is not None:
            r.body_buffer.close()
        r.buffering = False
        if r is self.current and not r.response_started:
            self._respond(r, 500, None, b"", True)
        elif r is self.current:
            self.upstream_broke(r)

    cdef _pick(self, Request r, Location loc):
        """Choose the peer for ``r``: send it, queue it, or answer that none is live."""
        cdef UpstreamPool pool = loc.pool
        cdef Peer peer
        if pool.balancer.key_kind:
            r.hash_key = self._balancer_key(r, pool.balancer)
        peer = pool.balancer.pick(r.hash_key, None)
        if peer is None:
            if pool.balancer.all_out:
                # The circuit is open: every peer is down or failing. Say so at
                # once rather than try a connection that cannot help.
                self._no_live(r, pool)
                return
            # Every live peer is at max_conns: wait in the upstream's queue, or be
            # told at once that the gateway is saturated.
            self._enqueue(r, loc, pool)
            return
        self._to_peer(r, pool, peer)

    cdef uint64_t _balancer_key(self, Request r, Balancer b):
        cdef bytes addr = self.remote_addr
        cdef Py_ssize_t dot
        if b.key_kind == 1:
            # ip_hash: the first three octets of an IPv4 address (nginx), so a
            # client keeps its peer across the addresses of its /24.
            dot = addr.rfind(b".")
            return hash_key(addr[:dot] if dot > 0 and not has_byte(addr, 58) else addr)
        return hash_key(render(b.key_parts, r, self))

    cdef _no_live(self, Request r, UpstreamPool pool):
        """502 at once: no peer of ``pool`` is live (design.md §6, `no_live_upstreams`)."""
        now = self.loop.time()
        write, skipped = pool.live_throttle.allow(now) if pool.live_throttle is not None else (True, 0)
        log = r.location.error_log
        if write and log.enabled("error"):
            more = f" ({skipped} more since the last such line)" if skipped else ""
            log.log("error", f'no live upstreams while connecting to upstream{more}',
                    conn=self.conn_id, client=self.remote_addr.decode(),
                    server=(r.server.name or b"").decode("latin-1") if r.server else "",
                    request=(r.request_line or b"").decode("latin-1"),
                    upstream=f"http://{pool.name}{_upstream_uri(r, r.location).decode('latin-1')}",
                    host=(r.host or b"").decode("latin-1"))
        r.overload = "no_live_upstreams"
        self.rt.stats.rejected(R_NO_LIVE_UPSTREAMS)
        self._respond(r, 502, None, b"", _unread_body(r))

    cdef Peer _next_peer(self, Request r, UpstreamPool pool, Peer failed, int condition,
                         bint sent):
        """The peer for another try of ``r`` after ``failed`` met ``condition`` (an NU_ bit),
        its place taken; None when nginx's rules allow no retry (proxy_next_upstream)."""
        cdef Location loc = r.location
        if self.closing or r.done or not (loc.next_upstream & condition):
            return None
        if r.body_lost:
            return None  # part of the body went upstream and was not kept
        if sent and _non_idempotent(r.method) and not (loc.next_upstream & NU_NON_IDEMPOTENT):
            return None
        if loc.next_tries and r.tries >= loc.next_tries:
            return None
        if loc.next_timeout and self.loop.time() - r.first_try >= loc.next_timeout:
            return None
        if r.tried is None:
            r.tried = set()
        r.tried.add(failed.index)
        return pool.balancer.pick(r.hash_key, r.tried)

    cdef _resend(self, Request r, UpstreamPool pool, Peer peer):
        """Send ``r`` again, to ``peer``, with the body kept from the last try."""
        if r.body_kept:
            r.body_buf = r.body_kept + r.body_buf
        r.body_kept = None
        r.kept_bytes = 0
        r.upstream = None
        self._to_peer(r, pool, peer)

    cdef _to_peer(self, Request r, UpstreamPool pool, Peer peer):
        """Send ``r`` to ``peer``: a pooled connection when one is idle, else a new one."""
        cdef UpstreamConn conn
        if r.tries == 0:
            r.first_try = self.loop.time()
            if r.expect_continue and _unread_body(r) and r.http11:
                # nginx answers Expect: 100-continue itself and never forwards it;
                # only now, when a peer will take the body.
                self.transport.write(CONTINUE_100)
        r.tries += 1
        conn = <UpstreamConn>pool.acquire(peer)
        while conn is not None and _non_idempotent(r.method) and _peek_transport(conn.transport) != 0:
            # A POST must not meet a connection the upstream has closed (it could
            # not be sent again): one recv(MSG_PEEK) sees a close already here.
            conn.close()
            conn = <UpstreamConn>pool.acquire(peer)
        if conn is None:
            conn = UpstreamConn(self.rt, pool, peer)
            conn.attach(self, r)
            conn.connect()
        else:
            conn.attach(self, r)
            if self.in_feed:
                # Sent once this read is parsed: if the rest of it is malformed
                # (say, a bad chunk size), the upstream never sees any of it.
                self.send_pending = conn
            else:
                conn.send_request()

    # -- the upstream queue (design.md §6) ---------------------------------------------------
    cdef _enqueue(self, Request r, Location loc, UpstreamPool pool):
        cdef RequestQueue q = pool.queue
        cdef double now = self.loop.time()
        cdef long handle
        cdef Request victim
        if q.capacity == 0:
            self._overload(r, pool, "queue_full", "no queue and every peer at max_conns")
            return
        if q.expected_wait(loc.priority, now) > q.timeout:
            # Early rejection: with the measured drain rate this request would time
            # out in the queue anyway; tell the client now, keep the slot for others.
            self._overload(r, pool, "queue_full", "expected wait exceeds the queue timeout")
            return
        handle = q.push(r, loc.priority, now)
        if handle < 0:
            self._overload(r, pool, "queue_full", "queue is full")
            return
        r.queue_handle = handle
        r.queued_at = now
        self.rt.stats.queue_depth(pool.index, q.depth)
        if q.displaced is not None:
            # A higher-priority request took the place of the newest lower one.
            victim = <Request>q.displaced
            q.displaced = None
            victim.queue_handle = -1
            pool.paused_waiters.discard(victim)
            (<Downstream>victim.conn)._overload(victim, pool, "queue_full",
                                                "displaced by a request of higher priority")
        if _has_body(r):
            # A queued request reads no more than its head: its body stays in the
            # client's socket until a peer takes it (the queue timer peeks at the
            # socket to see a client leave). A body-less one keeps reading, so its
            # client's close is seen at once.
            self._pause_reading()
            pool.paused_waiters.add(r)
        _arm_queue_timer(pool, now)

    cdef _overload(self, Request r, UpstreamPool pool, str reason, str detail):
        """Answer ``r`` with 503 + Retry-After for an overload ``reason`` (queue_full, queue_timeout)."""
        cdef RequestQueue q = pool.queue
        cdef double now = self.loop.time()
        cdef int retry = q.retry_after(now)
        write, skipped = pool.log_throttle.allow(now) if pool.log_throttle is not None else (True, 0)
        if write:
            log = r.location.error_log
            if log.enabled("warn"):
                more = f" ({skipped} more overload rejections in the last second)" if skipped else ""
                log.log("warn", f'{reason}: upstream "{pool.name}" {detail}, queue depth '
                                f'{q.depth}/{q.capacity}, Retry-After {retry}{more}',
                        conn=self.conn_id, client=self.remote_addr.decode(),
                        request=(r.request_line or b"").decode("latin-1"),
                        host=(r.host or b"").decode("latin-1"))
        r.overload = reason
        self.rt.stats.rejected(R_QUEUE_TIMEOUT if reason == "queue_timeout" else R_QUEUE_FULL)
        # A body left unread: the response says close and lingers (design.md §6).
        self._respond(r, 503, None, b"Retry-After: %d\r\n" % retry, _unread_body(r))

    cdef _dequeued(self, Request r, UpstreamPool pool, Peer peer, double now):
        """A slot freed up for ``r``, which waited ``now - r.queued_at`` seconds."""
        r.queue_handle = -1
        r.queue_time = now - r.queued_at
        self.rt.stats.observe_queue(pool.index, r.queue_time)
        if pool.paused_waiters:
            pool.paused_waiters.discard(r)
        if self.closing or r.done:
            pool.balancer.release(peer)  # the slot pick() took for it
            return
        self._to_peer(r, pool, peer)
        self._maybe_resume()

    cdef _leave_queue(self, Request r):
        """The client of a queued request went away: free its queue slot at once."""
        cdef UpstreamPool pool
        if r is None or r.queue_handle < 0 or r.location is None or r.location.pool is None:
            return
        pool = r.location.pool
        pool.queue.remove(r.queue_handle, r)
        r.queue_time = self.loop.time() - r.queued_at
        self.rt.stats.observe_queue(pool.index, r.queue_time)
        self.rt.stats.queue_depth(pool.index, pool.queue.depth)
        pool.paused_waiters.discard(r)
        r.queue_handle = -1

    cdef _send_pending(self):
        cdef UpstreamConn conn = self.send_pending
        if conn is None:
            return
        self.send_pending = None
        if conn.req is not None and not conn.closed:
            conn.send_request()

    # -- responses ---------------------------------------------------------------------
    cdef _respond(self, Request r, int code, bytes body, bytes extra, bint close):
        """Answer ``r`` locally (errors, return) and finish it."""
        cdef Location loc = r.location
        cdef bint keep
        cdef bytes headers = extra
        if self.closing:
            return
        if close:
            r.close_after = True
        keep = (r.keep_alive and not r.close_after and not self.graceful
                and not self.rt.shutting_down and self._keepalive_allowed(r))
        if loc is not None and loc.add_headers:
            headers += self._add_headers(r, code)
        r.status = code
        r.response_started = True
        data = local_response(code, keep, r.http11, headers, body, r.method == b"HEAD")
        r.bytes_sent = len(data)
        r.head_bytes_sent = data.find(b"\r\n\r\n") + 4
        if not keep:
            r.close_after = True
        self.transport.write(data)
        self.finish(r)

    cdef bint _keepalive_allowed(self, Request r):
        cdef Location loc = r.location
        cdef double timeout
        cdef long limit
        if loc is not None:
            timeout, limit = loc.keepalive_timeout, loc.keepalive_requests
        else:
            timeout, limit = self.default_server.keepalive_timeout, 1000
        return timeout > 0 and self.requests < limit

    cdef bytes _add_headers(self, Request r, int code):
        cdef tuple item
        cdef list out = []
        cdef bytes value
        for item in r.location.add_headers:
            if item[3] or code in ADD_HEADER_CODES:
                value = item[2] if item[2] is not None else render(<tuple>item[1], r, self)
                if value:
                    out.append(<bytes>item[0] + b": " + _safe_value(value) + CRLF)
        return b"".join(out)

    cdef finish(self, Request r):
        """The response to ``r`` is complete (written or handed to the transport)."""
        r.done = True
        if r.queue_handle >= 0:
            self._leave_queue(r)
        if r.location is not None:
            self.last_location = r.location
        if r.body_buffered:
            self.pending_bytes -= r.body_buffered
            r.body_buffered = 0
            r.body_buf = []
        if r.body_buffer is not None:
            r.body_buffer.close()
            r.body_buffer = None
            r.buffering = False
        self._log_request(r)
        if r is self.current:
            self.current = None
        if self.rt.shutting_down:
            self.graceful = True
        if r.close_after or not r.keep_alive:
            self._close_after_write(r)
            return
        if r.body_done or not r.head_done:
            self._next()
        # else: the rest of the body is still arriving; on_message_complete calls _next.

    cdef _next(self):
        """Start the next pipelined request, or wait for one."""
        cdef Request nxt
        if self.closing or self.current is not None:
            return
        if self.pending:
            nxt = <Request>self.pending.pop(0)
            self._dispatch(nxt)
            self._maybe_resume()
            return
        if self.held is not None:
            self._release_held()
            if self.closing or self.current is not None:
                return
        if self.graceful or self.rt.shutting_down or self.no_more_requests and self.parsing is None:
            self._close()
            return
        if self.reading_paused:
            self._resume_reading()
        if self.parsing is not None:
            self._state(S_HEAD)
            self.head_started = self.loop.time()
        else:
            self._state(S_IDLE)
            self.idle_since = self.loop.time()
            self.idle_timeout = (self.last_location.keepalive_timeout if self.last_location is not None
                                 else self.default_server.keepalive_timeout)

    cdef _release_held(self):
        """The upgrade request was answered without a tunnel: what followed its head
        is HTTP again, read by a fresh parser (a pipelined request is routed anew)."""
        cdef bytes held = self.held
        self.held = None
        self._parser_init()
        if held:
            self.data_received(held)

    cdef start_tunnel(self, UpstreamConn conn):
        """The upstream accepted the upgrade: relay raw bytes both ways from now on."""
        cdef bytes held = self.held
        self.tunnel = conn
        self.held = None
        if held:
            conn.tunnel_send(held)
        self._resume_reading()

    cdef tunnel_closed(self, Request r):
        """The tunnel ended on the upstream's side (close or idle timeout): close the client."""
        self.tunnel = None
        self.upstream_broke(r)

    cdef _close_after_write(self, Request r):
        if not r.body_done or self.pending or self.parsing is not None or r.error_status:
            # The client may still be sending what we will not read: shut our side
            # down first and drain what arrives, so that closing does not reset the
            # connection before the client has read the response (nginx's lingering
            # close).
            self._linger()
            return
        self._close()

    cdef _linger(self):
        self.closing = True
        if self.transport is None:
            return
        try:
            if self.transport.can_write_eof():
                self.transport.write_eof()
        except (OSError, RuntimeError):
            self._close()
            return
        if self.reading_paused:
            self.transport.resume_reading()
            self.reading_paused = False
        self._state(S_IDLE)
        # Bounded: the client gets 2 s (nginx's lingering_timeout is 5 s, lingering_time 30 s).
        self.loop.call_later(2.0, self._close)

    def _close(self):
        self.closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def graceful_close(self, bint keep_idle=False):
        """Part of a graceful stop (QUIT, reload): close now if idle, else after the next response.

        With ``keep_idle`` (a reload) nothing is closed before its next response
        (PUB-25: the first response after a reload says ``Connection: close``).
        Otherwise only an idle keep-alive connection with nothing waiting in its
        socket is closed at once, and with a lingering close: our FIN goes first and what
        the client sends after it is read and dropped, so a request that crossed
        the close meets a clean end of stream, which a client may retry (RFC 9112
        §9.3.1), not a reset. A request being served or arriving (a partial
        head, or bytes already in the socket), and the first request of a
        connection just accepted, are served, with ``Connection: close``;
        client_header_timeout and worker_shutdown_timeout bound the wait.
        """
        self.graceful = True
        if self.transport is None or self.current is not None or self.parsing is not None:
            return
        if keep_idle or self.requests == 0 or _bytes_waiting(self):
            return
        self._linger()

    def abort(self):
        """Close the connection at once (fast stop)."""
        cdef Request r = self.current
        if r is not None and r.upstream is not None:
            (<UpstreamConn>r.upstream).abort_from_client()
        if self.transport is not None:
            self.transport.abort()

    cdef _maybe_resume(self):
        """Resume reading the client unless pipelining or an upstream still holds it back."""
        cdef Request r = self.current
        if not self.reading_paused:
            return
        if len(self.pending) >= PIPELINE_DEPTH // 2 or self.pending_bytes >= PIPELINE_BUFFER // 2:
            return
        if r is not None and r.upstream is not None and (<UpstreamConn>r.upstream).writing_paused:
            return
        self._resume_reading()

    cdef _pause_reading(self):
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    cdef _resume_reading(self):
        if self.held is not None:
            return  # the upgrade is not decided yet
        if self.backlog is not None:
            # Bytes already read come first; not inline (this may run deep in a
            # chain of finished requests).
            if not self.backlog_soon:
                self.backlog_soon = True
                self.loop.call_soon(self._drain_backlog)
            return
        if self.reading_paused and self.transport is not None and not self.closing:
            self.reading_paused = False
            self.transport.resume_reading()

    # -- from the upstream side ----------------------------------------------------------
    cdef write(self, object data):
        if self.transport is not None and not self.closing:
            self.transport.write(data)

    cdef upstream_failed(self, Request r, int status):
        """The upstream failed before any of the response was sent: answer ``status``."""
        r.upstream = None
        if self.closing or r.done:
            return
        self._respond(r, status, None, b"", _unread_body(r))

    cdef upstream_broke(self, Request r):
        """The upstream failed mid-response: the client connection cannot be saved."""
        r.upstream = None
        if self.spool is not None:
            # The response is cut short anyway: what waits is dropped with it.
            self.spool.close()
            self.spool = None
        r.close_after = True
        if not r.done:
            r.done = True
            self._log_request(r)
        if r is self.current:
            self.current = None
        self.closing = True
        if self.transport is not None:
            # Closing (not aborting) lets what was already written reach the client;
            # the missing bytes show the client the response is truncated.
            self.transport.close()

    cdef _log_request(self, Request r):
        cdef Location loc = r.location
        cdef list logs
        if r.limit_conn_held is not None:
            # The request has ended, however it ended: its limit_conn counts go back.
            _release_conns(r.limit_conn_held)
            r.limit_conn_held = None
        if r.limit_timer is not None:
            r.limit_timer.cancel()
            r.limit_timer = None
        self.rt.stats.status(r.status or r.error_status)
        if r.upstream_tries is not None and loc is not None and loc.pool is not None:
            self.rt.stats.observe_request(loc.pool.index, self.loop.time() - r.start)
        if loc is not None:
            logs = loc.access_logs
        elif self.default_server is not None and self.default_server.not_found is not None:
            logs = self.default_server.not_found.access_logs
        else:
            return
        if not logs:
            return
        wall = time.time()
        line = None
        for entry in logs:
            # (AccessLog, format parts or None for combined, escape mode, if= parts or None)
            cond = (<tuple>entry)[3]
            if cond is not None:
                value = render(<tuple>cond, r, self)
                if not value or value == b"0":
                    continue
            if (<tuple>entry)[1] is None:
                if line is None:
                    line = combined(self.remote_addr, r.request_line, r.status or r.error_status,
                                    r.bytes_sent - r.head_bytes_sent, r.referer, r.user_agent,
                                    wall)
                (<tuple>entry)[0].write(line, wall)
            else:
                (<tuple>entry)[0].write(render_log(<tuple>(<tuple>entry)[1], <int>(<tuple>entry)[2],
                                                   r, self), wall)

    # -- timers ------------------------------------------------------------------------------
    cdef _arm_timer(self, double step):
        self.timer_step = step if step > 0 else 60.0
        self.rt.wheel.arm(self, self.timer_step)

    def _on_timer(self):
        cdef double now = self.loop.time()
        cdef double deadline = 0
        cdef Request r = self.current
        cdef Request p = self.parsing
        cdef Location loc
        if self.state == S_CLOSED:
            return
        if self.writing_paused:
            # The client does not read what we write (send_timeout), also while
            # closing: close() waits for the buffer to drain, so abort instead.
            loc = r.location if r is not None and r.location is not None else self.last_location
            deadline = self.write_paused_at + (loc.client_send_timeout if loc is not None else 60.0)
            if now >= deadline:
                self._timeout("client timed out (110: Connection timed out) while sending response to client", 0)
                self.abort()
                return
        elif self.closing:
            pass
        elif p is not None and not p.head_done:
            # A head pipelined behind a request being served waits its turn: its
            # deadline runs from when that request is done (see _next).
            if r is None:
                deadline = self.head_started + self.default_server.header_timeout
                if now >= deadline:
                    self._header_timeout(p)
                    return
        elif p is not None and not p.body_done and not self.reading_paused:
            # A body still arriving, for the request being served or for one that
            # was answered early and whose body is read and discarded (nginx).
            loc = p.location if p.location is not None else self.last_location
            deadline = self.last_read + (loc.body_timeout if loc is not None else 60.0)
            if now >= deadline:
                self._timeout("client timed out (110: Connection timed out) while reading client request body",
                              408 if p is r else 0)
                return
        elif r is None and p is None:
            deadline = self.idle_since + self.idle_timeout
            if now >= deadline:
                self._close()
                return
        step = self.timer_step
        if deadline > now and deadline - now < step:
            step = deadline - now
        self.rt.wheel.arm(self, step)

    cdef _header_timeout(self, Request p):
        """client_header_timeout passed with a head still incomplete: 408 and close."""
        if self.default_server.error_log.enabled("info"):
            self.default_server.error_log.log(
                "info", "client timed out (110: Connection timed out) while reading client request headers",
                conn=self.conn_id, client=self.remote_addr.decode())
        self.parsing = None
        self.no_more_requests = True
        p.keep_alive = False
        p.error_status = 408
        if p.request_line is None:
            p.request_line = b""
        self._pause_reading()
        self._respond(p, 408, None, b"", True)

    cdef _timeout(self, str message, int status):
        cdef Request r = self.current
        if self.default_server.error_log.enabled("info"):
            self.default_server.error_log.log("info", message, conn=self.conn_id,
                                              client=self.remote_addr.decode())
        if r is not None and r.upstream is not None:
            (<UpstreamConn>r.upstream).abort_from_client()
            r.upstream = None
        if status and r is not None and not r.response_started:
            r.keep_alive = False
            self._respond(r, status, None, b"", True)
            return
        if r is not None and not r.done:
            r.status = status or 408
            r.done = True
            self._log_request(r)
        self._close()


cdef bint _uri_host_ok(bytes host):
    """True for the authority of an absolute-form target as nginx's request-line parser
    takes it: ``[IPv6]`` or letters, digits, ``.`` and ``-``, then an optional
    ``:port`` of digits (ngx_http_parse_request_line's sw_host states)."""
    cdef const unsigned char* p = <const unsigned char*>(<const char*>host)
    cdef Py_ssize_t n = len(host), i = 0
    cdef unsigned char c
    if n and p[0] == 91:  # "[": up to "]", hex digits, ":" and "." only
        i = 1
        while i < n and p[i] != 93:
            c = p[i] | 0x20
            if not (48 <= p[i] <= 58 or 97 <= c <= 102 or p[i] == 46):
                return False
            i += 1
        if i >= n:
            return False
        i += 1
    else:
        while i < n and p[i] != 58:
            c = p[i] | 0x20
            if not (97 <= c <= 122 or 48 <= p[i] <= 57 or p[i] == 46 or p[i] == 45):
                return False
            i += 1
    if i < n:  # ":port"
        if p[i] != 58:
            return False
        for i in range(i + 1, n):
            if not 48 <= p[i] <= 57:
                return False
    return True


cdef bint _upgrade_field(bytes name, bytes value):
    """True for a proxy_set_header field that asks the upstream to upgrade."""
    cdef bytes lname = name.lower()
    if lname == b"upgrade":
        return True
    return lname == b"connection" and b"upgrade" in [t.strip() for t in value.lower().split(b",")]


cdef inline bint _unread_body(Request r):
    """True while a body the request announced is still (partly) unread.

    A request without Content-Length or Transfer-Encoding has no body: it is
    complete at its head, and answering it early leaves the connection
    reusable (on_message_complete has simply not run yet).
    """
    return not r.body_done and _has_body(r)


cdef inline bint _has_body(Request r):
    """True when the request announced a body (chunked, or a Content-Length above 0)."""
    return r.chunked or (r.content_length is not None and r.content_length.strip() != b"0")


cdef int _te_status(bytes te, bint http11):
    """0 if a request's Transfer-Encoding is exactly ``chunked``, else the status to reject it with.

    RFC 9112 §6.3: chunked absent or not final -> 400; §6.1: chunked final
    after a coding fastgw does not support -> 501. Transfer-Encoding in an
    HTTP/1.0 request is 400 (§6.1: a 1.0 recipient cannot be trusted with it).
    """
    codings = [c.strip().lower() for c in te.split(b",")]
    if not http11:
        return 400
    if codings == [b"chunked"]:
        return 0
    if codings and codings[-1] == b"chunked" and b"chunked" not in codings[:-1] and all(codings[:-1]):
        return 501
    return 400


cdef int _status_for(object exc, Request r):
    """The status for a request llhttp rejected."""
    text = str(exc) if exc is not None else ""
    if r is not None and r.te is not None and "ransfer" in text:
        status = _te_status(r.te, r.http11)
        if status:
            return status
    if "Invalid method" in text or "Unknown method" in text:
        return 400
    return 400


# -- upstream -------------------------------------------------------------------------------

cdef class UpstreamConn(HttpEnd):
    """One connection to a peer: sends a request, parses and relays its response.

    Kept in the pool between requests when both ends agree to keep it alive.
    ``idle_since`` (loop seconds) and ``closed`` are read by the pool.
    """

    cdef public double idle_since
    cdef public bint closed
    cdef Runtime rt
    cdef UpstreamPool pool
    cdef Peer peer
    cdef object loop
    cdef object transport
    # Why llhttp stopped: a callback's reason (str) or exception (a bug).
    cdef object parse_error
    cdef Downstream ds
    cdef Request req
    cdef int requests
    cdef bint reused
    cdef public bint sending
    cdef bint body_chunked
    cdef bint connecting
    cdef bint reading_paused
    cdef bint writing_paused
    cdef bint head_only
    cdef bint interim
    cdef bint resp_done
    cdef bint resp_keep
    cdef bint resp_chunked
    cdef bint resp_until_close
    cdef bint client_chunked
    cdef bint head_sent
    cdef bint got_bytes
    cdef bint counted
    cdef bint conn_counted
    cdef double started
    cdef long head_bytes
    cdef long head_size
    cdef double timer_step
    cdef int status
    cdef bytes reason
    cdef bytes resp_length
    cdef list resp_headers
    cdef list out
    cdef double last_io
    cdef double write_paused_at
    cdef object timer
    cdef object connect_task
    # Bytes of the current request were written (a retry of a POST is then unsafe).
    cdef bint request_sent
    # This try's entry in the request's upstream_tries.
    cdef list record
    # The response's status is one proxy_next_upstream names: counts as a failure.
    cdef bint status_failed
    # Set by on_headers_complete: drop this response and send the request there.
    cdef Peer retry_peer
    # The upstream answered 101 to an upgrade fastgw forwarded; then the raw tunnel.
    cdef bint tunnel_ok
    cdef public bint tunneling
    # proxy_buffering for this response: a slow client's share goes to ds.spool
    # instead of pausing this connection.
    cdef public bint buffered

    def __init__(self, Runtime rt, UpstreamPool pool, Peer peer):
        self.rt = rt
        self.loop = rt.loop
        self.pool = pool
        self.peer = peer
        self._parser_init()
        self.out = []

    cdef inline void _parser_init(self) noexcept:
        """A fresh llhttp response parser (strict: no lenient flag is ever set)."""
        llhttp_init(&self.p, HTTP_RESPONSE, &RESP_SETTINGS)
        self.line_limit = MAX_UPSTREAM_HEAD
        self.p.data = <void*>self
        self.hname = None
        self.hvalue = None

    # -- attach / connect / send ---------------------------------------------------------
    cdef attach(self, Downstream ds, Request r):
        self.ds = ds
        self.req = r
        r.upstream = self
        r.upstream_addr = self.peer.address
        # $upstream_*: a connection from the pool was connected in no time.
        self.record = [self.peer.address_bytes, 0, -1.0 if self.transport is None else 0.0,
                       -1.0, -1.0]
        if r.upstream_tries is None:
            r.upstream_tries = [self.record]
        else:
            r.upstream_tries.append(self.record)
        self.peer.active += 1
        self.rt.stats.peer_active(self.pool.index, self.peer.index, 1)
        self.started = self.loop.time()
        self.counted = True
        self.reused = self.requests > 0
        self.requests += 1
        self.request_sent = False
        self.status_failed = False
        self.retry_peer = None
        self.tunnel_ok = False
        self.buffered = r.location.response_buffering
        self.head_only = r.method == b"HEAD"
        self.resp_done = False
        self.head_sent = False
        self.interim = False
        self.got_bytes = False
        self.status = 0
        self.reason = None
        self.resp_length = None
        self.resp_chunked = False
        self.resp_until_close = False
        self.client_chunked = False
        self.resp_headers = []
        self.head_bytes = 0
        self.head_size = 0
        self.last_io = self.loop.time()
        if self.timer is None or r.location.min_timeout < self.timer_step:
            if self.timer is not None:
                self.timer.cancel()
            self._arm_timer()

    cdef connect(self):
        self.connecting = True
        self.pool.opened += 1
        # Upstream connections count against worker_connections, as in nginx.
        self.rt.active += 1
        self.conn_counted = True
        self.connect_task = self.loop.create_task(
            self.loop.create_connection(self._self, self.peer.host, self.peer.port))
        self.connect_task.add_done_callback(self._connect_done)

    def _self(self):
        return self

    def _connect_done(self, task):
        self.connect_task = None
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.connecting = False
            self.closed = True
            self._uncount()
            if isinstance(exc, OSError) and exc.errno:
                message = f"connect() failed ({exc.errno}: {exc.strerror}) while connecting to upstream"
            else:
                message = f"connect() failed ({exc}) while connecting to upstream"
            self._fail(502, message)

    def connection_made(self, transport):
        self.transport = transport
        self.connecting = False
        if self.record is not None:
            self.record[2] = self.loop.time() - self.started
        transport.set_write_buffer_limits(HIGH_WATER)
        if self.req is None:
            transport.close()
            return
        self.send_request()

    cdef send_request(self):
        cdef Request r = self.req
        cdef list out = [self._head(r)]
        cdef bytes chunk
        if r.body_buffer is not None:
            # A buffered body: sent whole, with its own Content-Length, from the
            # start on every try.
            self.body_chunked = False
            self.sending = True
            self.request_sent = True
            self.last_io = self.loop.time()
            r.body_buffer.rewind()
            self._pump_body(out)
            if self.ds is not None:
                if self.ds.writing_paused and not self.buffered:
                    self.pause_reading()
                self.ds._maybe_resume()
            return
        self.body_chunked = r.chunked
        if r.body_buf:
            for chunk in r.body_buf:
                self._frame(out, chunk)
                self._keep(r, chunk)
            self.ds.pending_bytes -= r.body_buffered
            r.body_buf = []
            r.body_buffered = 0
        if r.body_done and self.body_chunked:
            out.append(CHUNK_END)
        self.sending = not r.body_done
        self.last_io = self.loop.time()
        self.request_sent = True
        self.transport.write(b"".join(out))
        if self.ds.writing_paused and not self.buffered:
            # The client is not reading (a pipelined response behind a slow one):
            # do not read a response it cannot take yet (unless it can be buffered).
            self.pause_reading()
        self.ds._maybe_resume()

    cdef _pump_body(self, list out):
        """Write the buffered body (after what ``out`` holds) until the upstream's write
        buffer is full; resume_writing calls again."""
        cdef Request r = self.req
        cdef Py_ssize_t n = 0
        cdef bytes data
        while True:
            data = r.body_buffer.read(BODY_PIECE)
            if data:
                out.append(data)
                n += len(data)
            if not data or n >= BODY_PIECE:
                if out:
                    self.transport.write(b"".join(out) if len(out) > 1 else out[0])
                    out = []
                    n = 0
                if not data:
                    self.sending = False
                    # proxy_read_timeout runs from the end of the request (nginx).
                    self.last_io = self.loop.time()
                    return
                if self.writing_paused or self.closed or self.req is None:
                    return

    cdef bytes _head(self, Request r):
        """The request head sent upstream: request line, client fields minus hop-by-hop, ours."""
        cdef Location loc = r.location
        cdef Downstream ds = self.ds
        cdef list out = []
        cdef tuple h
        cdef frozenset skip = loc.skip
        cdef set conn_tokens = None
        cdef bytes value, uri
        # Fields the client named in Connection are hop-by-hop too (RFC 9110 §7.6.1).
        for h in r.headers:
            if <bytes>h[2] == b"connection":
                if conn_tokens is None:
                    conn_tokens = set()
                for token in (<bytes>h[1]).lower().split(b","):
                    conn_tokens.add(token.strip())
        uri = _upstream_uri(r, loc)
        out.append(r.method + b" " + uri + (b" HTTP/1.0\r\n" if loc.upstream_http10 else b" HTTP/1.1\r\n"))
        # proxy_set_header fields first (Host leads, as nginx sends it), then the client's.
        for h in loc.set_headers:
            value = <bytes>h[2] if h[2] is not None else render(<tuple>h[1], r, ds)
            if not value and (<bytes>h[0]).lower() == b"host":
                # $host is empty for an HTTP/1.0 request without Host on a server
                # without server_name; an HTTP/1.1 request must carry one (RFC 9112 §3.2).
                value = loc.proxy_host
            if value and loc.upgrade and not r.upgrade and _upgrade_field(<bytes>h[0], value):
                # Not a WebSocket handshake (none, or h2c...): no Upgrade goes on,
                # nor a Connection that would ask for one.
                continue
            if value:
                out += (<bytes>h[0], COLON, _safe_value(value), CRLF)
        for h in r.headers:
            if <bytes>h[2] in skip:
                continue
            if conn_tokens is not None and <bytes>h[2] in conn_tokens:
                continue
            out += (<bytes>h[0], COLON, <bytes>h[1], CRLF)
        if r.body_buffer is not None:
            out.append(b"Content-Length: %d\r\n" % r.body_buffer.size)
        elif r.chunked:
            # fastgw re-chunks the body itself (its own chunk lines, no extensions).
            out.append(b"Transfer-Encoding: chunked\r\n")
        elif r.content_length is not None:
            out.append(b"Content-Length: " + r.content_length.strip() + CRLF)
        # fastgw manages the upstream Connection header itself (nginx needs
        # `proxy_set_header Connection ""` for keep-alive; fastgw does not).
        if self.pool.keepalive > 0:
            if loc.upstream_http10:
                out.append(b"Connection: keep-alive\r\n")
        else:
            out.append(b"Connection: close\r\n")
        out.append(CRLF)
        return b"".join(out)

    cdef _frame(self, list out, bytes chunk):
        if self.body_chunked:
            if chunk:
                out.append(b"%x\r\n" % len(chunk))
                out.append(chunk)
                out.append(CRLF)
        else:
            out.append(chunk)

    cdef inline _keep(self, Request r, bytes chunk):
        # Keep what is sent while it fits, so that a retry can send it again.
        if r.body_lost or r.body_buffer is not None:
            return
        if r.kept_bytes + len(chunk) > KEEP_BODY:
            r.body_lost = True
            r.body_kept = None
            return
        if r.body_kept is None:
            r.body_kept = []
        r.body_kept.append(chunk)
        r.kept_bytes += len(chunk)

    cdef write_body(self, bytes chunk):
        cdef list out = []
        self.last_io = self.loop.time()
        self._keep(self.req, chunk)
        self._frame(out, chunk)
        if out and self.transport is not None:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])

    cdef finish_body(self):
        self.sending = False
        # proxy_read_timeout runs from the end of the request (nginx).
        self.last_io = self.loop.time()
        if self.body_chunked and self.transport is not None:
            self.transport.write(CHUNK_END)

    # -- asyncio protocol ------------------------------------------------------------------
    def data_received(self, data):
        cdef Downstream ds
        cdef llhttp_errno_t err
        cdef const char* base
        cdef object exc
        self.last_io = self.loop.time()
        if self.tunneling:
            self.req.bytes_sent += len(data)
            self.ds.write(data)
            return
        if self.req is None:
            # Bytes from an idle connection: a protocol error; never reuse it.
            self.close()
            return
        self.got_bytes = True
        if not self.head_sent:
            self.head_bytes += len(data)
        if type(data) is not bytes:
            data = bytes(data)
        base = PyBytes_AS_STRING(data)
        err = llhttp_execute(&self.p, base, <size_t>PyBytes_GET_SIZE(data))
        if err == HPE_PAUSED_UPGRADE:
            if self.tunnel_ok:
                self._start_tunnel(data[llhttp_get_error_pos(&self.p) - base:])
                return
            # A 101 fastgw never asked for: the connection now speaks something
            # else and cannot be relayed or reused.
            self._flush()
            self._fail(502, "upstream sent unexpected 101 Switching Protocols while reading "
                            "response header from upstream", False, NU_INVALID_HEADER)
            return
        if err != HPE_OK:
            exc = self.parse_error
            self.parse_error = None
            if exc is None:
                exc = (<bytes>llhttp_get_error_reason(&self.p)).decode("latin-1")
            self._flush()
            if self.resp_done and self.retry_peer is None and not self.tunnel_ok:
                # Bytes after a complete response (another response, or garbage):
                # the client has its answer; this connection is never reused.
                self.resp_keep = False
                self._complete()
                return
            if self.head_size > MAX_UPSTREAM_HEAD:
                self._fail(502, "upstream sent too big header while reading response header from upstream",
                           False, NU_INVALID_HEADER)
            else:
                self._fail(502, f"upstream sent invalid response ({exc}) while reading response header "
                                "from upstream", False, NU_INVALID_HEADER)
            return
        if not self.head_sent and self.head_bytes > MAX_UPSTREAM_HEAD + 65536:
            # A head still incomplete after this much: a partial line is held in
            # memory (hname, hvalue), so bound it here (reads may also carry a body's start).
            self.head_size = MAX_UPSTREAM_HEAD + 1
            self._fail(502, "upstream sent too big header while reading response header from upstream",
                       False, NU_INVALID_HEADER)
            return
        if self.retry_peer is not None:
            self._next_try()
            return
        self._flush()
        if self.resp_done:
            self._complete()

    def eof_received(self):
        if self.req is None:
            # The upstream closed an idle pooled connection: never hand it out again.
            self.closed = True
        return False

    cdef _uncount(self):
        if self.conn_counted:
            self.conn_counted = False
            self.rt.active -= 1

    def connection_lost(self, exc):
        cdef Request r = self.req
        self.closed = True
        self._uncount()
        self.connecting = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if r is None:
            self.pool.forget(self.peer, self)
            return
        if self.tunneling:
            self._tunnel_end("")
            return
        if self.resp_until_close and self.head_sent:
            # The response was delimited by the close (RFC 9112 §6.3 rule 8).
            if self.client_chunked:
                r.bytes_sent += len(CHUNK_END)
                self.out.append(CHUNK_END)
            self._flush()
            self.resp_keep = False
            self._complete()
            return
        phase = "reading upstream" if self.head_sent else "reading response header from upstream"
        if exc is not None:
            message = f"recv() failed ({getattr(exc, 'errno', 0)}: {getattr(exc, 'strerror', exc)}) while {phase}"
        else:
            message = f"upstream prematurely closed connection while {phase}"
        self._fail(502, message, True)

    def pause_writing(self):
        # The upstream reads the request body slower than the client sends it.
        self.writing_paused = True
        self.write_paused_at = self.loop.time()
        if self.ds is not None:
            self.ds._pause_reading()

    def resume_writing(self):
        self.writing_paused = False
        if self.sending and self.req is not None and self.req.body_buffer is not None:
            self._pump_body([])
        if self.ds is not None:
            self.ds._maybe_resume()

    cdef pause_reading(self):
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    cdef resume_reading(self):
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.last_io = self.loop.time()
            self.transport.resume_reading()

    # -- llhttp callbacks (through _resp_*): 0 goes on, 1 stops (parse_error says why) ------
    cdef inline int _stop(self, str why):
        self.parse_error = why
        return 1

    cdef int _on_message_begin(self) except -1:
        if self.resp_done:
            # A second response to one request: never relayed (it would answer a
            # request the client did not send); data_received closes the connection.
            return self._stop("data after the response")
        return 0

    cdef int _on_status(self, const char* at, size_t length) except -1:
        cdef bytes reason = PyBytes_FromStringAndSize(at, <Py_ssize_t>length)
        self.reason = reason if self.reason is None else self.reason + reason
        return 0

    cdef int _line_too_long(self) except -1:
        return self._stop("too big header")

    cdef int _on_header(self, bytes name, bytes value) except -1:
        # The head and a trailer section share MAX_UPSTREAM_HEAD.
        self.head_size += len(name) + len(value) + 4
        if self.head_size > MAX_UPSTREAM_HEAD:
            return self._stop("too big header")
        if self.head_sent:
            return 0  # response trailers: never merged into the header section
        self.resp_headers.append((name, value, name.lower()))
        return 0

    cdef int _on_headers_complete(self) except -1:
        """0, 1 to stop, or 2 when the response has no body whatever its head says
        (the answer to a HEAD request: RFC 9110 §9.3.2)."""
        cdef Request r = self.req
        cdef int status = self.p.status_code
        cdef list out
        cdef tuple h
        cdef set conn_tokens = None
        cdef bint keep
        cdef bytes lname
        if self._header_done():
            return 1
        self.status = status
        if status < 100:
            return self._stop(f"invalid status {status}")
        if status == 101 and r.upgrade and not self.interim:
            return self._upgrade_head()
        if status < 200:
            # 1xx interim responses are not relayed (nginx drops them too); a 101
            # fastgw did not ask for ends in the parser's upgrade stop: a 502.
            self.interim = True
            return 0
        r.upstream_status = status
        self.record[1] = status
        self.record[3] = self.loop.time() - self.started
        bit = _status_bit(status, r.location.next_upstream)
        if bit:
            self.status_failed = bool(bit & NU_FAILING_STATUS)
            self.retry_peer = self.ds._next_peer(r, self.pool, self.peer, bit, True)
            if self.retry_peer is not None:
                # Another peer will answer: this response is dropped unread
                # (data_received acts once the parser has returned).
                self.resp_done = True
                return 2 if self.head_only else 0
        for h in self.resp_headers:
            lname = <bytes>h[2]
            if lname == b"content-length":
                if self.resp_length is not None and self.resp_length != <bytes>h[1]:
                    return self._stop("duplicate Content-Length")
                self.resp_length = (<bytes>h[1]).strip()
            elif lname == b"transfer-encoding":
                # Only a single "chunked" is a framing fastgw can trust (nginx: 502
                # for any other Transfer-Encoding); llhttp alone accepts two TE
                # lines and reads an unknown coding until the close.
                if self.resp_chunked or (<bytes>h[1]).strip().lower() != b"chunked":
                    return self._stop("upstream sent an invalid Transfer-Encoding")
                self.resp_chunked = True
            elif lname == b"connection":
                if conn_tokens is None:
                    conn_tokens = set()
                for token in (<bytes>h[1]).lower().split(b","):
                    conn_tokens.add(token.strip())
            elif lname == b"x-accel-buffering":
                value = (<bytes>h[1]).strip().lower()
                if value == b"no":
                    self.buffered = False
                elif value == b"yes":
                    self.buffered = True
            elif lname == b"content-type" and (<bytes>h[1]).strip().lower().startswith(b"text/event-stream"):
                # Server-sent events (and token streams) reach the client as they come.
                self.buffered = False
        if not self.buffered and self.ds.writing_paused:
            self.pause_reading()
        cdef bint no_body = self.head_only or status == 204 or status == 304
        if not no_body and not self.resp_chunked and self.resp_length is None:
            self.resp_until_close = True
        ds = self.ds
        keep = (r.keep_alive and not r.close_after and not ds.graceful and not self.rt.shutting_down
                and ds._keepalive_allowed(r))
        if not no_body and (self.resp_chunked or self.resp_until_close):
            if r.http11:
                self.client_chunked = True
            else:
                keep = False  # an HTTP/1.0 client reads to the close
        if not keep:
            r.close_after = True
        out = [status_line(status) if self.reason is None or self.reason == b"" else status_line(status, self.reason),
               b"Server: fastgw\r\n", date_header()]
        for h in self.resp_headers:
            if <bytes>h[2] in RESPONSE_SKIP:
                continue
            if conn_tokens is not None and <bytes>h[2] in conn_tokens:
                continue
            out += (<bytes>h[0], COLON, <bytes>h[1], CRLF)
        if self.client_chunked:
            out.append(b"Transfer-Encoding: chunked\r\n")
        elif self.resp_length is not None and not self.resp_chunked and status != 204:
            # (RFC 9110 §8.6: a 204 carries no Content-Length.)
            out.append(b"Content-Length: " + self.resp_length + CRLF)
        if r.location.add_headers:
            out.append(ds._add_headers(r, status))
        if not keep:
            out.append(b"Connection: close\r\n")
        elif not r.http11:
            out.append(b"Connection: keep-alive\r\n")
        out.append(CRLF)
        head = b"".join(out)
        r.status = status
        r.response_started = True
        r.bytes_sent += len(head)
        r.head_bytes_sent = len(head)
        self.out.append(head)
        self.head_sent = True
        if no_body:
            # The response ends with its head (a HEAD request's: llhttp is told so by
            # the 2 returned here, and its next response starts clean).
            self.resp_done = True
            # llhttp's keep-alive flag is only final at message complete, which
            # data_received may act before: read Connection ourselves.
            if conn_tokens is not None and b"close" in conn_tokens:
                self.resp_keep = False
            elif self.p.http_major == 1 and self.p.http_minor == 0:
                self.resp_keep = conn_tokens is not None and b"keep-alive" in conn_tokens
            else:
                self.resp_keep = True
        return 2 if self.head_only else 0

    cdef int _upgrade_head(self) except -1:
        """The 101 to relay to the client: the upstream's fields, with its Upgrade
        (0, or 1 when the 101 names no protocol)."""
        cdef Request r = self.req
        cdef tuple h
        cdef bytes upgrade = None
        cdef list out = [status_line(101) if not self.reason else status_line(101, self.reason),
                         b"Server: fastgw\r\n", date_header()]
        for h in self.resp_headers:
            if <bytes>h[2] == b"upgrade":
                upgrade = <bytes>h[1]
            elif <bytes>h[2] not in RESPONSE_SKIP:
                out += (<bytes>h[0], COLON, <bytes>h[1], CRLF)
        if upgrade is None:
            # RFC 9110 §15.2.2: a 101 names the protocol it switches to.
            return self._stop("101 without Upgrade")
        out.append(b"Upgrade: " + upgrade + b"\r\nConnection: upgrade\r\n\r\n")
        head = b"".join(out)
        r.upstream_status = 101
        self.record[1] = 101
        self.record[3] = self.loop.time() - self.started
        r.status = 101
        r.response_started = True
        r.bytes_sent += len(head)
        r.head_bytes_sent = len(head)
        self.out.append(head)
        self.head_sent = True
        self.tunnel_ok = True
        self.buffered = False
        return 0

    cdef _start_tunnel(self, object rest):
        """Relay the 101 and what came with it, then raw bytes both ways (nginx's
        upgraded mode). The connection is never pooled again."""
        cdef Request r = self.req
        self.tunneling = True
        self._flush()
        if rest:
            r.bytes_sent += len(rest)
            self.ds.write(bytes(rest))
        if self.ds.writing_paused:
            self.pause_reading()
        self.ds.start_tunnel(self)

    cdef tunnel_send(self, object data):
        """Client bytes into the tunnel (not upstream activity: proxy_read_timeout
        keeps running until the upstream sends something)."""
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    cdef _tunnel_end(self, str message):
        """The tunnel is over on the upstream's side: close both ends."""
        cdef Request r = self.req
        cdef Downstream ds = self.ds
        self.tunneling = False
        if message and r.location.error_log.enabled("info"):
            r.location.error_log.log("info", message, conn=ds.conn_id,
                                     client=ds.remote_addr.decode(),
                                     upstream=f"http://{self.peer.address}")
        self._end_try()
        self._account(r, ds, True)
        self._detach()
        self.close()
        ds.tunnel_closed(r)
        _service_queue(self.pool)

    cdef int _on_body(self, const char* at, size_t length) except -1:
        cdef bytes chunk
        if self.interim or self.retry_peer is not None:
            return 0
        if self.resp_done:
            # Bytes after a response that has no body: never reuse this connection.
            self.resp_keep = False
            return 0
        chunk = PyBytes_FromStringAndSize(at, <Py_ssize_t>length)
        self.req.bytes_sent += len(chunk)
        if self.client_chunked:
            line = b"%x\r\n" % len(chunk)
            # What went on the wire, framing included (nginx counts its chunked output).
            self.req.bytes_sent += len(line) + 2
            self.out.append(line)
            self.out.append(chunk)
            self.out.append(CRLF)
        else:
            self.out.append(chunk)
        return 0

    cdef int _on_message_complete(self) except -1:
        if self._header_done():  # a trailer section's last line
            return 1
        if self.tunnel_ok:
            return 0
        if self.interim:
            self.interim = False
            self.resp_headers = []
            self.head_size = 0
            self.reason = None
            return 0
        if self.resp_done and (self.head_only or self.retry_peer is not None):
            return 0
        self.resp_keep = llhttp_should_keep_alive(&self.p)
        if self.client_chunked:
            self.req.bytes_sent += len(CHUNK_END)
            self.out.append(CHUNK_END)
        self.resp_done = True
        return 0

    cdef _flush(self):
        cdef list out = self.out
        cdef Downstream ds = self.ds
        if not out or ds is None:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        self.out = []
        if self.buffered and (ds.writing_paused or ds.spool is not None):
            ds.spool_write(data, self)
        else:
            ds.write(data)

    # -- completion and failure -----------------------------------------------------------
    cdef _complete(self):
        cdef Request r = self.req
        cdef Downstream ds = self.ds
        cdef bint reuse
        self._end_try()
        self._account(r, ds, not self.status_failed)
        self._detach()
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
        # A connection that carried an upgrade request is not pooled even when the
        # upstream refused it: nothing says how the upstream left its state.
        reuse = (self.resp_keep and r.body_done and not self.sending and not self.closed
                 and not r.upgrade
                 and self.requests < self.pool.keepalive_requests and not self.rt.shutting_down)
        if not (reuse and self.pool.release(self.peer, self, self.loop.time())):
            self.close()
        r.upstream = None
        ds.response_done(r)
        _service_queue(self.pool)

    cdef _detach(self):
        if self.counted:
            self.peer.active -= 1
            self.rt.stats.peer_active(self.pool.index, self.peer.index, -1)
            self.counted = False
            self.pool.balancer.release(self.peer)
            if self.pool.waker is not None:
                # A zone slot is free: other workers may have requests waiting for it.
                # If a draining worker of an older generation has, it gets the first
                # claim (its requests have waited since before the reload); this
                # worker's own queue tries again a moment later.
                if self.pool.waker(self.pool.index):
                    self.pool.defer_until = self.loop.time() + DRAINING_FIRST
        self.req = None
        self.ds = None
        self.sending = False

    cdef _end_try(self):
        """This try is over, however it ended: its response time, in the log and metrics."""
        self.record[4] = self.loop.time() - self.started
        self.rt.stats.observe(self.pool.index, self.record[4])

    cdef _account(self, Request r, Downstream ds, bint ok):
        """Passive health (max_fails): the outcome of this try on the peer."""
        if ok:
            self.pool.balancer.succeeded(self.peer)
        elif self.pool.balancer.failed(self.peer):
            log = r.location.error_log
            if log.enabled("warn"):
                log.log("warn", f"upstream server temporarily disabled for "
                                f"{self.peer.fail_timeout:g}s after {self.peer.max_fails} failed "
                                f"attempts", conn=ds.conn_id,
                        client=ds.remote_addr.decode(),
                        upstream=f"http://{self.peer.address}",
                        host=(r.host or b"").decode("latin-1"))

    cdef _next_try(self):
        """The response's status is one to retry and a peer took the request: drop this one."""
        cdef Request r = self.req
        cdef Downstream ds = self.ds
        cdef Peer nxt = self.retry_peer
        cdef UpstreamPool pool = self.pool
        self.retry_peer = None
        self._end_try()
        self._account(r, ds, not self.status_failed)
        self._detach()
        self.close()
        ds._resend(r, pool, nxt)
        _service_queue(pool)

    cdef _fail(self, int status, str message, bint lost=False, int condition=NU_ERROR):
        """This try failed (``condition``: NU_ERROR, NU_TIMEOUT or NU_INVALID_HEADER):
        retry elsewhere when proxy_next_upstream allows, else answer ``status``."""
        cdef Request r = self.req
        cdef Downstream ds = self.ds
        cdef UpstreamPool pool = self.pool
        cdef Peer nxt
        cdef bint sent = self.request_sent
        if self.retry_peer is not None:
            pool.balancer.release(self.retry_peer)
            self.retry_peer = None
        if r is None:
            self.close()
            return
        if self.record is not None:
            if not self.record[1]:
                self.record[1] = status  # nginx logs 502/504 for a try without a response
            self._end_try()
        self._detach()
        self.close()
        if (lost and not self.head_sent and self.reused and not self.got_bytes and not r.retried
                and r.body_done and not r.body_lost and is_idempotent(r.method)):
            # The upstream closed a pooled connection while it sat idle (a race
            # every keep-alive client meets): not a failure of the peer, and the
            # request can be sent again on a fresh connection.
            r.retried = True
            r.upstream = None
            if r.body_kept:
                r.body_buf = r.body_kept + r.body_buf
                r.body_kept = None
                r.kept_bytes = 0
            conn = UpstreamConn(self.rt, pool, self.peer)
            # _detach gave back the request's place on the peer: it keeps it.
            pool.balancer.retake(self.peer)
            conn.attach(ds, r)
            conn.connect()
            return
        self._account(r, ds, False)
        log = r.location.error_log
        if log.enabled("error"):
            log.log("error", message, conn=ds.conn_id, client=ds.remote_addr.decode(),
                    server=(r.server.name or b"").decode("latin-1") if r.server else "",
                    request=(r.request_line or b"").decode("latin-1"),
                    upstream=f"http://{self.peer.address}{_upstream_uri(r, r.location).decode('latin-1')}",
                    host=(r.host or b"").decode("latin-1"))
        if not self.head_sent:
            nxt = ds._next_peer(r, pool, self.peer, condition, sent)
            if nxt is not None:
                ds._resend(r, pool, nxt)
                _service_queue(pool)
                return
        self.rt.stats.rejected(R_UPSTREAM_TIMEOUT if status == 504 else R_UPSTREAM_ERROR)
        if self.head_sent:
            ds.upstream_broke(r)
        else:
            ds.upstream_failed(r, status)
        _service_queue(pool)

    cdef abort_from_client(self):
        """The client went away or sent garbage: drop this connection, never pool it."""
        cdef bint had = self.req is not None
        if had:
            # Not the peer's fault: as nginx frees the peer with no failure, which
            # also ends a half-open trial well.
            self.pool.balancer.succeeded(self.peer)
            if self.tunneling:
                self.tunneling = False
                self._end_try()  # a tunnel's $upstream_response_time is its life
        self._detach()
        self.close()
        if had:
            # Deferred: the caller is in the middle of tearing down its request.
            self.loop.call_soon(_service_queue_soon, self.pool)

    def close(self):
        """Close the connection (idempotent)."""
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None and self.transport.get_write_buffer_size():
            # Unsent request bytes: close() would wait for an upstream that may never
            # read them, holding the socket and its slot.
            self.transport.abort()
        elif self.transport is not None:
            # connection_lost follows and releases the worker_connections slot.
            # The connect task may not have finished yet (connection_made runs
            # first): it must not be cancelled then, or uvloop closes the
            # transport without ever calling connection_lost.
            self.transport.close()
        elif self.connect_task is not None:
            # Still connecting: no transport, so no connection_lost will come.
            self.connect_task.cancel()
            self.connect_task = None
            self.connecting = False
            self._uncount()

    # -- timers ------------------------------------------------------------------------------
    cdef _arm_timer(self):
        cdef Location loc = self.req.location
        self.timer_step = loc.min_timeout
        self.timer = self.loop.call_later(loc.min_timeout, self._on_timer)

    def _on_timer(self):
        cdef Request r = self.req
        cdef Location loc
        cdef double now, deadline
        self.timer = None
        if r is None or self.closed:
            return
        loc = r.location
        now = self.loop.time()
        if self.tunneling:
            # Upgraded: proxy_read_timeout and proxy_send_timeout as idle timeouts.
            if self.writing_paused:
                deadline = self.write_paused_at + loc.send_timeout
                what = "upstream timed out (110: Connection timed out) while sending to upstream in an upgraded connection"
            elif self.reading_paused:
                deadline = now + loc.min_timeout
                what = ""
            else:
                deadline = self.last_io + loc.read_timeout
                what = "upstream timed out (110: Connection timed out) while proxying upgraded connection"
            if now >= deadline and what:
                self._tunnel_end(what)
                return
        elif self.connecting:
            deadline = self.last_io + loc.connect_timeout
            what = "upstream timed out (110: Connection timed out) while connecting to upstream"
        elif self.writing_paused:
            deadline = self.write_paused_at + loc.send_timeout
            what = "upstream timed out (110: Connection timed out) while sending request to upstream"
        elif self.reading_paused or (self.sending and not self.head_sent):
            # Paused by a slow client, or still streaming the request body (the
            # client's body timeout governs that): no read deadline yet.
            deadline = now + loc.min_timeout
            what = ""
        else:
            deadline = self.last_io + loc.read_timeout
            what = ("upstream timed out (110: Connection timed out) while reading response header from upstream"
                    if not self.head_sent else
                    "upstream timed out (110: Connection timed out) while reading upstream")
        if now >= deadline and what:
            self._fail(504, what, False, NU_TIMEOUT)
            return
        step = loc.min_timeout
        if deadline - now < step:
            step = deadline - now
        self.timer = self.loop.call_later(step, self._on_timer)


# Seconds a worker leaves a freed zone slot to a woken draining worker (see _detach).
DRAINING_FIRST = 0.005


cdef void _service_queue(UpstreamPool pool):
    """Give freed peer slots to queued requests, highest priority and oldest first."""
    cdef RequestQueue q = pool.queue
    cdef Peer peer
    cdef Request r
    cdef double now
    cdef uint64_t key
    if q.depth == 0:
        return
    now = pool.loop.time()
    if pool.defer_until > now:
        pool.loop.call_later(pool.defer_until - now, _service_queue_soon, pool)
        return
    while q.depth:
        key = 0
        if pool.balancer.key_kind:
            # A keyed balancer must see the key of the request it places.
            key = (<Request>q.peek()).hash_key
        peer = pool.balancer.pick(key, None)
        if peer is None:
            if pool.balancer.all_out:
                # Every peer went out while these waited: none will come back in
                # time to help; answer them now (no live upstreams).
                while q.depth:
                    r = <Request>q.pop(now)
                    r.queue_handle = -1
                    pool.paused_waiters.discard(r)
                    (<Downstream>r.conn).rt.stats.queue_depth(pool.index, q.depth)
                    (<Downstream>r.conn)._no_live(r, pool)
            return
        r = <Request>q.pop(now)
        (<Downstream>r.conn).rt.stats.queue_depth(pool.index, q.depth)
        (<Downstream>r.conn)._dequeued(r, pool, peer, now)


def _service_queue_soon(UpstreamPool pool):
    _service_queue(pool)


def service_queue(UpstreamPool pool):
    """Give free slots to queued requests (a worker calls it when another wakes it)."""
    _service_queue(pool)


cdef void _arm_queue_timer(UpstreamPool pool, double now):
    """One timer per queue: at its next deadline, or sooner to look for vanished clients."""
    cdef double deadline
    if pool.queue_timer is not None or pool.queue.depth == 0:
        return
    deadline = pool.queue.next_deadline()
    delay = deadline - now
    # Peek for vanished clients; with a zone, also look for slots freed by a
    # worker that could not wake this one (one of an older generation, after a
    # reload, holds other eventfds).
    if (pool.paused_waiters or pool.waker is not None) and delay > PEEK_INTERVAL:
        delay = PEEK_INTERVAL
    pool.queue_timer = pool.loop.call_later(delay if delay > 0 else 0, _on_queue_timer, pool)


def _on_queue_timer(UpstreamPool pool):
    cdef Request r
    cdef double now = pool.loop.time()
    pool.queue_timer = None
    for r in pool.queue.expire(now):
        (<Downstream>r.conn).rt.stats.queue_depth(pool.index, pool.queue.depth)
        r.queue_time = now - r.queued_at
        (<Downstream>r.conn).rt.stats.observe_queue(pool.index, r.queue_time)
        r.queue_handle = -1
        pool.paused_waiters.discard(r)
        (<Downstream>r.conn)._overload(r, pool, "queue_timeout",
                                       f"request waited {now - r.queued_at:.3f}s")
    if pool.paused_waiters:
        # Queued requests with a body have their reading paused, so a client that
        # closes is not seen by the transport: peek at its socket instead.
        for r in list(pool.paused_waiters):
            if _peer_gone(<Downstream>r.conn):
                pool.paused_waiters.discard(r)
                (<Downstream>r.conn).abort()
    if pool.waker is not None and pool.queue.depth:
        _service_queue(pool)
    _arm_queue_timer(pool, now)


async def _redis_limit_req(Downstream ds, Request r, Location loc):
    """limit_req for a location with a zone in Redis (fastgw.redis_limit).

    Every zone is charged as it is checked, in order (a Redis zone cannot hold
    an entry while the others are looked at, as nginx's shared-memory zones do);
    the longest delay wins. A Redis zone that failed uses its local table
    (``redis_fail=open``) or answers 503 (``closed``).
    """
    cdef tuple lim, chosen = None
    cdef LimitTable t
    cdef int64_t excess, best = 0, max_delay = 0, d
    cdef int rc
    cdef bint checked = False
    for lim in loc.limit_reqs:
        key = render(<tuple>lim[1], r, ds)
        if not key:
            continue
        checked = True
        bucket = lim[7]
        result = None
        if bucket is not None:
            # Cancelled (by the request's end) only while it waits for Redis.
            r.limit_timer = asyncio.current_task()
            result = await bucket.check(key, lim[2], lim[3])
            r.limit_timer = None
            if ds.closing or r.done:
                return
            if result is None and not bucket.fail_open:
                r.limit_req_status = b"REJECTED"
                ds.rt.stats.rejected(R_LIMIT_REQ)
                ds._respond(r, 503, None, b"Retry-After: 1\r\n", _unread_body(r))
                return
        if result is None:
            t = <LimitTable>lim[0]
            rc, excess, _, _ = t.req_check(key, lim[2], lim[3],
                                           <int64_t>(ds.loop.time() * 1000), True)
        else:
            rc, excess = (LR_BUSY if result[0] else LR_OK), result[1]
        if rc != LR_OK:
            if ds._limit_req_reject(r, loc, lim, excess, rc) < 0:
                return
            continue
        if excess > <int64_t>lim[4]:
            d = (excess - <int64_t>lim[4]) * 1000 // <int64_t>lim[2]
            if d > max_delay or chosen is None:
                max_delay, best, chosen = d, excess, lim
        elif chosen is None:
            chosen = lim
    if not checked or chosen is None:
        ds._limit_req_done(r, 0.0)
        return
    ds._limit_req_done(r, ds._limit_req_delay(r, loc, chosen, best, max_delay))


cdef void _release_conns(list taken):
    cdef tuple item
    for item in taken:
        (<LimitTable>item[0]).conn_release(<int32_t>item[1], <uint64_t>item[2])


cdef inline int _peek(Downstream ds):
    """What waits in a client's socket, nothing consumed: 1 bytes, 0 nothing yet, -1 the
    client closed or reset it (or the transport is gone)."""
    return _peek_transport(ds.transport)


cdef int _peek_transport(object transport):
    """``_peek`` for any connection's transport."""
    if transport is None or transport.is_closing():
        return -1
    fd = transport.get_extra_info("socket").fileno()
    # uvloop's transport socket cannot recv: borrow the fd, never close it here.
    probe = socket.socket(fileno=fd)
    try:
        return 1 if probe.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) else -1
    except (BlockingIOError, InterruptedError):
        return 0
    except OSError:
        return -1
    finally:
        probe.detach()


cdef inline bint _bytes_waiting(Downstream ds):
    return _peek(ds) == 1


cdef inline bint _peer_gone(Downstream ds):
    return _peek(ds) == -1


cdef bytes _upstream_uri(Request r, Location loc):
    """The request target sent upstream: proxy_pass's URI part replaces the matched prefix."""
    cdef bytes rest, path
    if loc.uri is None:
        return r.url
    # proxy_pass with a URI part: the matched prefix is replaced (nginx).
    if loc.exact:
        path = loc.uri
    elif r.uri.startswith(loc.prefix):
        rest = r.uri[len(loc.prefix):]
        path = loc.uri + rest
    else:
        path = loc.uri
    path = _quote_path(path)
    if loc.uri_args is not None:
        # proxy_pass http://app/echo?x=1: the directive's arguments, then the
        # request's (nginx would append a second "?").
        return path + b"?" + loc.uri_args + (b"&" + r.args if r.args else b"")
    if r.args is not None:
        return path + b"?" + r.args
    return path


cdef bytes _UNRESERVED = (b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                          b"-._~!$&'()*+,;=:@/")


cdef bytes _quote_path(bytes path):
    """Percent-encode what may not appear raw in a path (nginx escapes $uri the same way)."""
    cdef int c
    for c in path:
        if c not in _UNRESERVED:
            break
    else:
        return path
    out = bytearray()
    for c in path:
        if c in _UNRESERVED:
            out.append(c)
        else:
            out += b"%%%02X" % c
    return bytes(out)


# -- llhttp's callbacks ------------------------------------------------------------------------
# llhttp calls these C functions; ``p.data`` is the Downstream or UpstreamConn that owns
# ``p``, and each calls its typed method directly (no Python-level call per callback).
# The methods answer 0 (go on), 1 (stop: the request is refused, reject_status or
# parse_error says why) or 2 (see each); a Python exception (a bug) is kept in cb_error
# or parse_error and stops llhttp too (its -1: HPE_USER or HPE_CB_*).

# The version of the llhttp compiled in (fastgw/_core/vendor/llhttp), for --version.
LLHTTP_VERSION = f"{LLHTTP_VERSION_MAJOR}.{LLHTTP_VERSION_MINOR}.{LLHTTP_VERSION_PATCH}"

# llhttp's method number -> the method's name (bytes, made once: no object per request).
# Its numbers run from 0 to HTTP_QUERY, the last (llhttp_method_name aborts on others).
cdef tuple METHODS = tuple([<bytes>llhttp_method_name(<llhttp_method_t>m) for m in range(HTTP_QUERY + 1)])

cdef llhttp_settings_t REQ_SETTINGS
cdef llhttp_settings_t RESP_SETTINGS


cdef inline int _req_failed(Downstream d, object exc) noexcept:
    d.cb_error = exc
    return -1


cdef int _req_message_begin(llhttp_t* p) noexcept:
    cdef Downstream d = <Downstream>p.data
    try:
        return -d._on_message_begin()
    except BaseException as exc:
        return _req_failed(d, exc)


cdef int _req_url(llhttp_t* p, const char* at, size_t length) noexcept:
    cdef Downstream d = <Downstream>p.data
    try:
        return -d._on_url(at, length)
    except BaseException as exc:
        return _req_failed(d, exc)


cdef int _req_header_field(llhttp_t* p, const char* at, size_t length) noexcept:
    cdef Downstream d = <Downstream>p.data
    try:
        return -d._on_header_field(at, length)
    except BaseException as exc:
        return _req_failed(d, exc)


cdef int _req_header_value(llhttp_t* p, const char* at, size_t length) noexcept:
    cdef Downstream d = <Downstream>p.data
    try:
        return -d._on_header_value(at, length)
    except BaseException as exc:
        return _req_failed(d, exc)


cdef int _req_headers_complete(llhttp_t* p) noexcept:
    # Never 1 (skip the body): an upgrade request's body is read as any other.
    cdef Downstream d = <Downstream>p.data
    try:
        return -d._on_headers_complete()
    except BaseException as exc:
        return _req_failed(d, exc)


cdef int _req_body(llhttp_t* p, const char* at, size_t length) noexcept:
    cdef Downstream d = <Downstream>p.data
    try:
        return -d._on_body(at, length)
    except BaseException as exc:
        return _req_failed(d, exc)


cdef int _req_message_complete(llhttp_t* p) noexcept:
    # 2: pause (HPE_PAUSED) before the next message's first byte (Downstream._feed).
    cdef Downstream d = <Downstream>p.data
    cdef int rc
    try:
        rc = d._on_message_complete()
    except BaseException as exc:
        return _req_failed(d, exc)
    return HPE_PAUSED if rc == 2 else -rc


cdef inline int _resp_failed(UpstreamConn u, object exc) noexcept:
    u.parse_error = exc
    return -1


cdef int _resp_message_begin(llhttp_t* p) noexcept:
    cdef UpstreamConn u = <UpstreamConn>p.data
    try:
        return -u._on_message_begin()
    except BaseException as exc:
        return _resp_failed(u, exc)


cdef int _resp_status(llhttp_t* p, const char* at, size_t length) noexcept:
    cdef UpstreamConn u = <UpstreamConn>p.data
    try:
        return -u._on_status(at, length)
    except BaseException as exc:
        return _resp_failed(u, exc)


cdef int _resp_header_field(llhttp_t* p, const char* at, size_t length) noexcept:
    cdef UpstreamConn u = <UpstreamConn>p.data
    try:
        return -u._on_header_field(at, length)
    except BaseException as exc:
        return _resp_failed(u, exc)


cdef int _resp_header_value(llhttp_t* p, const char* at, size_t length) noexcept:
    cdef UpstreamConn u = <UpstreamConn>p.data
    try:
        return -u._on_header_value(at, length)
    except BaseException as exc:
        return _resp_failed(u, exc)


cdef int _resp_headers_complete(llhttp_t* p) noexcept:
    # 2 -> llhttp's 1: the response has no body (it answers a HEAD request).
    cdef UpstreamConn u = <UpstreamConn>p.data
    cdef int rc
    try:
        rc = u._on_headers_complete()
    except BaseException as exc:
        return _resp_failed(u, exc)
    return 1 if rc == 2 else -rc


cdef int _resp_body(llhttp_t* p, const char* at, size_t length) noexcept:
    cdef UpstreamConn u = <UpstreamConn>p.data
    try:
        return -u._on_body(at, length)
    except BaseException as exc:
        return _resp_failed(u, exc)


cdef int _resp_message_complete(llhttp_t* p) noexcept:
    cdef UpstreamConn u = <UpstreamConn>p.data
    try:
        return -u._on_message_complete()
    except BaseException as exc:
        return _resp_failed(u, exc)


llhttp_settings_init(&REQ_SETTINGS)
REQ_SETTINGS.on_message_begin = _req_message_begin
REQ_SETTINGS.on_url = _req_url
REQ_SETTINGS.on_header_field = _req_header_field
REQ_SETTINGS.on_header_value = _req_header_value
REQ_SETTINGS.on_headers_complete = _req_headers_complete
REQ_SETTINGS.on_body = _req_body
REQ_SETTINGS.on_message_complete = _req_message_complete

llhttp_settings_init(&RESP_SETTINGS)
RESP_SETTINGS.on_message_begin = _resp_message_begin
RESP_SETTINGS.on_status = _resp_status
RESP_SETTINGS.on_header_field = _resp_header_field
RESP_SETTINGS.on_header_value = _resp_header_value
RESP_SETTINGS.on_headers_complete = _resp_headers_complete
RESP_SETTINGS.on_body = _resp_body
RESP_SETTINGS.on_message_complete = _resp_message_complete
