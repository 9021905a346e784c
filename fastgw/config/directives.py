"""The directive table: each directive of fastgw declared once.

A :class:`Directive` names its contexts, its arity, how its arguments become a
value, its default and its documentation. The loader (validation, defaults,
inheritance), ``fastgw -T`` and ``docs/directives.md``
(``python -m fastgw.config.docs``) are all driven by this table, in the way
nginx declares ``ngx_command_t`` arrays and gunicorn its settings.

Values are stored in engine units: seconds (float) for times, bytes (int) for
sizes.
"""

import re
from dataclasses import dataclass

from . import units
from .model import HealthCheck, LimitZone, LogFormat
from .variables import compile_template

MAIN, EVENTS, HTTP, SERVER, LOCATION, UPSTREAM = (
    "main", "events", "http", "server", "location", "upstream",
)
HSL = frozenset({HTTP, SERVER, LOCATION})
HS = frozenset({HTTP, SERVER})

ERROR_LEVELS = ("debug", "info", "notice", "warn", "error", "crit", "alert", "emerg")


@dataclass(frozen=True)
class Directive:
    """One configuration directive.

    ``nargs`` is ``(min, max)``, ``max`` None for unbounded. ``parse`` turns
    the argument list (strings) into the stored value and raises ValueError
    with the user-facing reason. ``default`` is the value as one would write
    it in a file (documented, and parsed when the directive is not set).
    ``multiple`` directives accumulate a list per level and are inherited as a
    whole list from the nearest level that sets any (nginx's array merge).
    ``inherit`` directives set at http or server level are defaults for the
    levels below. ``planned`` names the issue that brings a directive of
    design.md that fastgw does not yet implement: such a directive is
    rejected rather than ignored.
    """

    name: str
    contexts: frozenset
    nargs: tuple
    doc: str
    parse: object = None
    default: str = None
    block: bool = False
    multiple: bool = False
    inherit: bool = False
    planned: str = None

    def default_value(self):
        """The parsed default (None when the directive has none)."""
        if self.default is None:
            return [] if self.multiple else None
        if self.multiple:
            return []
        return self.parse(self.default.split())


def _one(fn):
    return lambda args: fn(args[0])


def _worker_processes(args):
    if args[0] == "auto":
        return "auto"
    return units.parse_int(args[0], minimum=1)


def _error_log(args):
    path = args[0]
    level = args[1] if len(args) > 1 else "error"
    if level not in ERROR_LEVELS:
        raise ValueError(f'invalid log level "{level}"')
    return (path, level)


def _access_log(args):
    """``access_log off`` or ``access_log PATH [FORMAT] [buffer=SIZE] [flush=TIME]``."""
    if args[0] == "off":
        if len(args) > 1:
            raise ValueError('"off" takes no other parameters')
        return None
    path, fmt, buffer, flush, cond = args[0], "combined", 64 * 1024, 1.0, None
    rest = args[1:]
    if rest and "=" not in rest[0]:
        fmt = rest.pop(0)  # a log_format name: the loader checks it exists
    for item in rest:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f'invalid parameter "{item}"')
        if key == "buffer":
            buffer = units.parse_size(value)
        elif key == "flush":
            flush = units.parse_time(value)
        elif key == "if" and value:
            cond = compile_template(value)
        else:
            raise ValueError(f'invalid parameter "{item}"')
    return (path, fmt, buffer, flush, cond)


LOG_ESCAPES = ("default", "json", "none")


def _log_format(args):
    """``log_format NAME [escape=...] STRING ...`` -> LogFormat (strings joined, as nginx)."""
    name, rest = args[0], list(args[1:])
    escape = "default"
    if rest and rest[0].startswith("escape="):
        escape = rest.pop(0)[len("escape="):]
        if escape not in LOG_ESCAPES:
            raise ValueError(f'unknown log format escaping "{escape}"')
    if not rest:
        raise ValueError("invalid number of arguments")
    if name == "combined":
        raise ValueError('duplicate "log_format" name "combined"')
    return LogFormat(name, escape, compile_template("".join(rest)))


def _header_pair(args):
    name = args[0]
    if not name or any(c in name for c in ' \t:\r\n\0') or not name.isascii():
        raise ValueError(f'invalid header name "{name}"')
    return (name, compile_template(args[1]))


def _add_header(args):
    name, value = _header_pair(args[:2])
    always = False
    if len(args) == 3:
        if args[2] != "always":
            raise ValueError(f'invalid parameter "{args[2]}"')
        always = True
    return (name, value, always)


def _http_version(args):
    if args[0] not in ("1.0", "1.1"):
        raise ValueError(f'invalid value "{args[0]}", it must be "1.0" or "1.1"')
    return args[0]


def _large_buffers(args):
    number = units.parse_int(args[0], minimum=1)
    size = units.parse_size(args[1])
    if size < 128:
        raise ValueError("buffer size must be at least 128 bytes")
    return (number, size)


def _proxy_buffers(args):
    number = units.parse_int(args[0], minimum=1)
    size = units.parse_size(args[1])
    if size < 1024:
        raise ValueError("buffer size must be at least 1k")
    return (number, size)


def _temp_path(args):
    for level in args[1:]:
        if level not in ("1", "2"):
            raise ValueError(f'invalid level "{level}": each must be 1 or 2')
    return args[0]


def _priority(text):
    value = units.parse_int(text)
    if value > 15:
        raise ValueError(f'priority "{text}" must be between 0 and 15')
    return value


def _queue(args):
    size = units.parse_int(args[0])
    timeout = 60.0
    if len(args) == 2:
        key, sep, value = args[1].partition("=")
        if key != "timeout" or not sep:
            raise ValueError(f'invalid parameter "{args[1]}"')
        timeout = units.parse_time(value)
        if timeout <= 0:
            raise ValueError(f'invalid timeout "{value}"')
    return (size, timeout)


def _heartbeat_timeout(text):
    value = units.parse_time(text)
    if value < 2:
        raise ValueError(f'"{text}" is too short: at least 2s (heartbeats come each second)')
    return value


def _zone_param(value):
    """``NAME:SIZE`` of a limit zone; size at least 8k (nginx refuses small zones too)."""
    name, sep, size = value.partition(":")
    if not name or not sep or not all(c.isalnum() or c in "_-" for c in name):
        raise ValueError(f'invalid zone size "{value}"')
    nbytes = units.parse_size(size)
    if nbytes < 8192:
        raise ValueError(f'zone "{name}" is too small')
    return name, nbytes


def _limit_zone(kind, args):
    key = compile_template(args[0])
    name = size = rate = redis = None
    redis_timeout, redis_fail = 0.1, "open"
    for item in args[1:]:
        param, sep, value = item.partition("=")
        if param == "zone" and sep:
            name, size = _zone_param(value)
        elif param == "rate" and sep and kind == "req":
            m = re.fullmatch(r"(\d+)r/([sm])", value)
            if not m or int(m.group(1)) == 0:
                raise ValueError(f'invalid rate "{value}"')
            # nginx's unit: milli-requests per second.
            rate = int(m.group(1)) * 1000 // (60 if m.group(2) == "m" else 1)
            if rate == 0:
                raise ValueError(f'invalid rate "{value}"')
        elif param == "redis" and sep and kind == "req":
            host, port = units.parse_address(value, default_host=None)
            if not host or not port:
                raise ValueError(f'invalid redis address "{value}" (HOST:PORT)')
            redis = (host, port)
        elif param == "redis_timeout" and sep and kind == "req":
            redis_timeout = units.parse_time(value)
            if redis_timeout <= 0:
                raise ValueError(f'invalid redis_timeout "{value}"')
        elif param == "redis_fail" and sep and kind == "req":
            if value not in ("open", "closed"):
                raise ValueError(f'invalid redis_fail "{value}", it must be "open" or "closed"')
            redis_fail = value
        else:
            raise ValueError(f'invalid parameter "{item}"')
    if name is None:
        raise ValueError('"zone" parameter is required')
    if kind == "req" and rate is None:
        rate = 1000  # nginx's default: 1r/s
    if redis is None and any(a.startswith(("redis_timeout=", "redis_fail=")) for a in args):
        raise ValueError('"redis_timeout" and "redis_fail" need "redis="')
    return LimitZone(kind=kind, name=name, size=size, key=key, rate=rate or 0, redis=redis,
                     redis_timeout=redis_timeout, redis_fail=redis_fail)


def _limit_req(args):
    """``zone=NAME [burst=N] [nodelay | delay=N]`` -> (name, burst, delay) in milli-requests."""
    name, burst, delay, nodelay = None, 0, 0, False
    for item in args:
        param, sep, value = item.partition("=")
        if param == "zone" and sep and value:
            name = value
        elif param == "burst" and sep:
            burst = units.parse_int(value)
        elif param == "delay" and sep:
            delay = units.parse_int(value)
        elif item == "nodelay":
            nodelay = True
        else:
            raise ValueError(f'invalid parameter "{item}"')
    if name is None:
        raise ValueError('"zone" parameter is required')
    if nodelay and any(a.startswith("delay=") for a in args):
        raise ValueError('"nodelay" and "delay=" cannot be used together')
    # nginx: nodelay is a delay threshold no excess can reach.
    return (name, burst * 1000, (1 << 60) if nodelay else delay * 1000)


NEXT_UPSTREAM = ("error", "timeout", "invalid_header", "http_500", "http_502", "http_503",
                 "http_504", "http_403", "http_404", "http_429", "non_idempotent")


def _next_upstream(args):
    """``proxy_next_upstream`` conditions -> frozenset of names (empty for ``off``)."""
    if "off" in args:
        if len(args) > 1:
            raise ValueError('"off" takes no other parameters')
        return frozenset()
    for a in args:
        if a not in NEXT_UPSTREAM:
            raise ValueError(f'invalid value "{a}"')
    return frozenset(args)


def _hash(args):
    if len(args) == 2 and args[1] != "consistent":
        raise ValueError(f'invalid parameter "{args[1]}"')
    return ("hash", compile_template(args[0]), len(args) == 2)


def _random(args):
    if args and args[0] != "two":
        raise ValueError(f'invalid parameter "{args[0]}"')
    return ("random", bool(args))


def _health_check(args):
    """-> HealthCheck; nginx-style ``key=value`` parameters, each at most once."""
    params = {"interval": 5.0, "uri": "/", "fails": 1, "passes": 1, "match": (200, 399)}
    seen = set()
    for item in args:
        key, sep, value = item.partition("=")
        if not sep or key not in params or key in seen:
            raise ValueError(f'invalid parameter "{item}"')
        seen.add(key)
        if key == "interval":
            params[key] = units.parse_time(value)
            if params[key] <= 0:
                raise ValueError(f'invalid interval "{value}"')
        elif key == "uri":
            if not value.startswith("/") or any(c in value for c in " \t\r\n\0"):
                raise ValueError(f'invalid uri "{value}"')
            params[key] = value
        elif key in ("fails", "passes"):
            params[key] = units.parse_int(value, minimum=1)
        else:
            m = re.fullmatch(r"([1-5]\d\d)(?:-([1-5]\d\d))?", value)
            if not m or (m.group(2) and int(m.group(2)) < int(m.group(1))):
                raise ValueError(f'invalid match "{value}" (STATUS or STATUS-STATUS)')
            params[key] = (int(m.group(1)), int(m.group(2) or m.group(1)))
    return HealthCheck(**params)


def _limit_conn(args):
    n = units.parse_int(args[1])
    if not 1 <= n <= 65535:
        raise ValueError(f'invalid number of connections "{args[1]}"')
    return (args[0], n)


def _limit_status(text):
    code = units.parse_int(text)
    if not 400 <= code <= 599:
        raise ValueError(f'value must be between 400 and 599')
    return code


def _limit_log_level(text):
    if text not in ("info", "notice", "warn", "error"):
        raise ValueError(f'invalid value "{text}"')
    return text


def _zone(args):
    name = args[0]
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise ValueError(f'invalid zone name "{name}"')
    if len(args) == 2:
        units.parse_size(args[1])
    return name


def _planned(name, contexts, nargs, issue, doc):
    return Directive(name, frozenset(contexts), nargs, doc, planned=issue)


_TIME = _one(units.parse_time)
_SIZE = _one(units.parse_size)
_INT = _one(units.parse_int)
_POSINT = _one(lambda s: units.parse_int(s, minimum=1))
_FLAG = _one(units.parse_flag)

DIRECTIVES = [
    # -- main -------------------------------------------------------------------------------
    Directive("worker_processes", frozenset({MAIN}), (1, 1),
              "Number of worker processes; `auto` = one per CPU core.",
              _worker_processes, default="1"),
    Directive("pid", frozenset({MAIN}), (1, 1),
              "File the master writes its process id to (relative to the prefix).",
              _one(str), default="logs/fastgw.pid"),
    Directive("error_log", frozenset({MAIN, HTTP, SERVER, LOCATION}), (1, 2),
              "Error log file and minimum level (debug info notice warn error crit alert emerg). "
              "`stderr` writes to standard error.",
              _error_log, default="logs/error.log error", inherit=True),
    Directive("worker_shutdown_timeout", frozenset({MAIN}), (1, 1),
              "How long a gracefully stopping worker may take to finish in-flight requests "
              "before it is stopped (fastgw's default; nginx has none).",
              _TIME, default="30s"),
    Directive("worker_heartbeat_timeout", frozenset({MAIN}), (1, 1),
              "fastgw: a worker sends the master a heartbeat each second; one silent for this "
              "long is taken as hung (its loop blocked), logged, killed and replaced. At least "
              "2s (a busy machine delays heartbeats).",
              _one(_heartbeat_timeout), default="10s"),
    Directive("worker_rlimit_nofile", frozenset({MAIN}), (1, 1),
              "RLIMIT_NOFILE for worker processes.", _POSINT),
    Directive("events", frozenset({MAIN}), (0, 0), "Connection processing settings.", block=True),
    Directive("http", frozenset({MAIN}), (0, 0), "The HTTP server settings.", block=True),
    # -- events -----------------------------------------------------------------------------
    Directive("worker_connections", frozenset({EVENTS}), (1, 1),
              "Most simultaneous connections a worker opens, clients and upstreams counted "
              "together, as nginx counts them.", _POSINT, default="512"),
    # -- http ------------------------------------------------------------------------------
    Directive("upstream", frozenset({HTTP}), (1, 1), "A named group of upstream servers.", block=True),
    Directive("server", frozenset({HTTP, UPSTREAM}), (0, None),
              "In http: a virtual server. In upstream: `server ADDR [weight=N] [max_conns=N] "
              "[max_fails=N] [fail_timeout=T] [backup] [down]`, a peer (a host name is resolved "
              "at start and at each reload, every address a peer). `max_conns` bounds its "
              "requests in flight (per worker, or across workers with a `zone`; 0: no bound), "
              "the rest wait in the upstream's `queue`. `max_fails` (default 1; 0: never) failed "
              "attempts within `fail_timeout` (default 10s) take it out for `fail_timeout`, then "
              "one request tries it (nginx; fastgw also applies it to a group's only server "
              "when its line sets `max_fails`). `backup`: used only when no primary peer can "
              "serve (round robin and least_conn). `down`: never used.",
              block=True),
    Directive("map", frozenset({HTTP}), (2, 2),
              "`map SOURCE $NAME { [default VALUE;] [STRING VALUE;] [~REGEX VALUE;] "
              "[~*REGEX VALUE;] }`: `$NAME` is VALUE for the first entry that matches SOURCE "
              "(variables allowed): exact strings first, then regexes in order (`~*`: "
              "case-insensitive), else the default (empty when not given). Values may use "
              "variables. E.g. `map $status $loggable { ~^[23] 0; default 1; }` with "
              "`access_log ... if=$loggable`.", block=True),
    Directive("limit_req_zone", frozenset({HTTP}), (2, 6),
              "`limit_req_zone KEY zone=NAME:SIZE rate=Nr/s|Nr/m`: a shared-memory zone of "
              "request rates per KEY (variables, e.g. `$binary_remote_addr`), exact across "
              "workers. SIZE holds about 7,700 keys per megabyte (least recently used keys are "
              "evicted when it is full); a key that evaluates empty is not limited. The zone "
              "keeps its state across a reload while its name, size and key do not change. "
              "`redis=HOST:PORT [redis_timeout=T] [redis_fail=open|closed]` keeps the buckets in "
              "Redis instead, shared by every gateway instance (one atomic script per check); "
              "when Redis fails or takes longer than `redis_timeout` (default 100ms), the local "
              "zone takes over (`open`, the default) or the request gets 503 (`closed`). "
              "Gateways share a limit when they name the same zone and the same Redis.",
              lambda args: _limit_zone("req", args), multiple=True),
    Directive("limit_conn_zone", frozenset({HTTP}), (2, 2),
              "`limit_conn_zone KEY zone=NAME:SIZE`: a shared-memory zone counting requests in "
              "flight per KEY across workers (about 7,700 keys per megabyte).",
              lambda args: _limit_zone("conn", args), multiple=True),
    Directive("log_format", frozenset({HTTP}), (2, None),
              "`log_format NAME [escape=default|json|none] STRING ...`: a named access log "
              "format; the strings are joined and may use any variable: nginx's (`$status`, "
              "`$request`, `$body_bytes_sent`, `$bytes_sent`, `$request_length`, "
              "`$request_time`, `$time_local`, `$time_iso8601`, `$http_NAME`, `$arg_NAME`, "
              "`$upstream_addr`, `$upstream_status`, `$upstream_*_time` over every peer tried, "
              "...) and fastgw's `$queue_time` (seconds waited in the upstream queue). "
              "`combined` is predefined. Empty values are written `-` (nothing with `json`).",
              _log_format, multiple=True),
    # -- http, server, location ----------------------------------------------------------
    Directive("access_log", HSL, (1, 5),
              "`access_log PATH [FORMAT] [buffer=SIZE] [flush=TIME] [if=COND] | off`. Buffered by "
              "default (fastgw: buffer=64k flush=1s; `buffer=0` writes each line at once), "
              "flushed at exit and reopened on USR1. With `if=`, a request is logged only when "
              "COND (variables allowed) is neither empty nor `0`. Several at one level all "
              "apply; `off` at a level turns logging off there.",
              _access_log, default="logs/access.log combined", multiple=True, inherit=True),
    Directive("keepalive_timeout", HSL, (1, 1),
              "How long an idle client keep-alive connection stays open; 0 disables keep-alive.",
              _TIME, default="75s", inherit=True),
    Directive("keepalive_requests", HSL, (1, 1),
              "Most requests served over one client connection.",
              _INT, default="1000", inherit=True),
    Directive("client_header_timeout", HS, (1, 1),
              "Time allowed to receive a whole request head.", _TIME, default="60s", inherit=True),
    Directive("client_body_timeout", HSL, (1, 1),
              "Longest pause between two reads of a request body.", _TIME, default="60s",
              inherit=True),
    Directive("send_timeout", HSL, (1, 1),
              "Longest time a response write to the client may stall.", _TIME, default="60s",
              inherit=True),
    Directive("client_max_body_size", HSL, (1, 1),
              "Largest request body accepted (413 beyond); 0 = no limit.", _SIZE, default="1m",
              inherit=True),
    Directive("large_client_header_buffers", HS, (2, 2),
              "`NUMBER SIZE`: a request line longer than SIZE is answered 414, a header line "
              "longer than SIZE or a head larger than NUMBER*SIZE 400.",
              _large_buffers, default="4 8k", inherit=True),
    Directive("add_header", HSL, (2, 3),
              "`add_header NAME VALUE [always]`: add a header to responses with status 200, 201, "
              "204, 206, 301, 302, 303, 304, 307 or 308 (any status with `always`).",
              _add_header, multiple=True, inherit=True),
    Directive("client_body_buffer_size", HSL, (1, 1),
              "With `proxy_request_buffering on`, the part of a request body kept in memory; "
              "the rest goes to a temporary file under `client_body_temp_path`. fastgw's default "
              "is 64k (nginx: 16k), so bodies up to 64 KiB never touch the disk.",
              _SIZE, default="64k", inherit=True),
    Directive("client_body_temp_path", HSL, (1, 4),
              "`client_body_temp_path PATH [LEVEL ...]`: directory of request body temporary "
              "files (relative to the prefix; made on first use). Files are unlinked as soon as "
              "they are made. nginx's LEVELs are accepted and ignored.",
              _temp_path, default="client_body_temp", inherit=True),
    Directive("priority", HSL, (1, 1),
              "fastgw: the queue priority class of requests, 0 (highest, the default) to 15. "
              "When an upstream queue is full, a request displaces the most recently queued one "
              "of a lower class (which gets the queue_full 503); a queued slot goes to the "
              "oldest request of the highest class.",
              _one(lambda s: _priority(s)), default="0", inherit=True),
    # -- server ---------------------------------------------------------------------------
    Directive("listen", frozenset({SERVER}), (1, 4),
              "`listen [ADDR:]PORT [default_server] [backlog=N]`: one SO_REUSEPORT socket per "
              "worker is bound for each address.", multiple=True),
    Directive("server_name", frozenset({SERVER}), (1, None),
              "Names of the virtual server: exact, `*.example.com`, `www.example.*` or `~regex`.",
              multiple=True),
    Directive("location", frozenset({SERVER}), (1, 2),
              "`location [=|^~|~|~*] PATTERN { }` with nginx's matching order.", block=True),
    # -- location (and server, http as defaults) -------------------------------------
    Directive("proxy_pass", frozenset({LOCATION}), (1, 1),
              "`proxy_pass http://UPSTREAM_OR_HOST[:PORT][/URI]`. With a URI part the matched "
              "location prefix is replaced by it, as in nginx. Arguments in the URI part stay "
              "arguments, and the request's follow them after `&` (nginx appends a second "
              "`?`)."),
    Directive("proxy_set_header", HSL, (2, 2),
              "`proxy_set_header NAME VALUE`: set a header sent upstream (variables allowed; an "
              "empty value removes it). Default `Host $proxy_host`. fastgw manages the upstream "
              "`Connection` header itself. Setting `Upgrade` (nginx's WebSocket idiom: "
              "`proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection "
              "\"upgrade\";`, or `$connection_upgrade` from a `map`) lets a WebSocket handshake "
              "through, tunnelled once the upstream answers 101; other requests get neither "
              "field, and no other protocol (h2c) is ever forwarded.",
              _header_pair, multiple=True, inherit=True),
    Directive("proxy_http_version", HSL, (1, 1),
              "HTTP version spoken to upstreams: 1.1 (fastgw's default) or 1.0.",
              _one(lambda s: _http_version([s])), default="1.1", inherit=True),
    Directive("proxy_connect_timeout", HSL, (1, 1),
              "Time allowed to establish an upstream connection (504 beyond).",
              _TIME, default="60s", inherit=True),
    Directive("proxy_send_timeout", HSL, (1, 1),
              "Longest stall of one write to the upstream (504 beyond).",
              _TIME, default="60s", inherit=True),
    Directive("proxy_read_timeout", HSL, (1, 1),
              "Longest wait between two reads from the upstream (504 if nothing was sent to the "
              "client yet).", _TIME, default="60s", inherit=True),
    Directive("return", frozenset({SERVER, LOCATION}), (1, 2),
              "`return CODE [TEXT]`, `return CODE URL` (301, 302, 303, 307, 308) or "
              "`return URL`: answer without an upstream."),
    Directive("proxy_next_upstream", HSL, (1, None),
              "`proxy_next_upstream error | timeout | invalid_header | http_500 | http_502 | "
              "http_503 | http_504 | http_403 | http_404 | http_429 | non_idempotent | off ...`: "
              "when a request goes on to the next peer (nginx's meaning). Never once any of the "
              "response went to the client; a POST, LOCK or PATCH only when it had not been sent "
              "yet, unless `non_idempotent` is given; and only when the request body is still "
              "held by fastgw (bodies up to 64 KiB that arrived with the request are kept).",
              _next_upstream, default="error timeout", inherit=True),
    Directive("proxy_next_upstream_tries", HSL, (1, 1),
              "Most peers one request tries, the first included (0: no limit but the number of "
              "peers).", _INT, default="0", inherit=True),
    Directive("proxy_next_upstream_timeout", HSL, (1, 1),
              "No new peer is tried this long after the first try started (0: no limit).",
              _TIME, default="0", inherit=True),
    Directive("proxy_request_buffering", HSL, (1, 1),
              "`on` (default, as nginx): a request body is read whole before a peer is chosen, "
              "so a slow client never holds an upstream connection; it is sent with its own "
              "Content-Length, and can be sent again to another peer (proxy_next_upstream). "
              "`off`: the body streams to the peer as it arrives, with flow control.",
              _FLAG, default="on", inherit=True),
    Directive("proxy_buffering", HSL, (1, 1),
              "`on` (default, as nginx): a response is read as fast as the upstream sends it; "
              "what the client has not taken yet waits in `proxy_buffers`, then in a temporary "
              "file under `proxy_temp_path` (at most `proxy_max_temp_file_size`), so a slow "
              "reader never holds an upstream connection. `off`: the upstream is read only as "
              "fast as the client reads. Either way each piece is sent to the client as soon "
              "as it can take it. The upstream's `X-Accel-Buffering: no|yes` overrides this "
              "per response, and `Content-Type: text/event-stream` turns it off.",
              _FLAG, default="on", inherit=True),
    Directive("proxy_buffers", HSL, (2, 2),
              "`proxy_buffers NUMBER SIZE`: memory (NUMBER x SIZE bytes) for the part of one "
              "response a slow client has not taken, beyond the 256 KiB the client socket's "
              "write buffer holds. fastgw's default is 8 16k (128 KiB): a response up to about "
              "384 KiB never touches the disk, however slow the client.",
              _proxy_buffers, default="8 16k", inherit=True),
    Directive("proxy_max_temp_file_size", HSL, (1, 1),
              "Most bytes of one response waiting in a temporary file; beyond, the upstream is "
              "read only as fast as the client reads. 0 disables temporary files.",
              _SIZE, default="1024m", inherit=True),
    Directive("proxy_temp_path", HSL, (1, 4),
              "`proxy_temp_path PATH [LEVEL ...]`: directory of response temporary files "
              "(relative to the prefix; made on first use; files unlinked at once). LEVELs are "
              "accepted and ignored.",
              _temp_path, default="proxy_temp", inherit=True),
    Directive("limit_req", HSL, (1, 3),
              "`limit_req zone=NAME [burst=N] [nodelay | delay=N]`: nginx's leaky bucket. Up to "
              "`burst` requests over the rate are delayed to the rate (held in the worker, "
              "holding no upstream connection); with `delay=N` the first N of them pass at once; "
              "with `nodelay` all of them do; beyond the burst, `limit_req_status` with "
              "Retry-After (seconds until the bucket admits the next request, rounded up). "
              "Several `limit_req` at one level all apply; a level with none inherits the "
              "outer level's. Applies to proxied, status and not-found requests, not to "
              "`return` (as in nginx, which runs `return` before its limits).",
              _limit_req, multiple=True, inherit=True),
    Directive("limit_req_status", HSL, (1, 1),
              "Status of limit_req rejections: fastgw's default is 429 (a client over its own "
              "limit, RFC 6585); nginx's is 503. A zone that is full answers 503.",
              _one(_limit_status), default="429", inherit=True),
    Directive("limit_req_log_level", HSL, (1, 1),
              "Level of the `limiting requests` line (at most one per second per zone, with "
              "the count skipped); delays are logged one level lower.",
              _one(_limit_log_level), default="error", inherit=True),
    Directive("limit_req_dry_run", HSL, (1, 1),
              "`on`: count and log, but neither reject nor delay ($limit_req_status says "
              "REJECTED_DRY_RUN or DELAYED_DRY_RUN).", _FLAG, default="off", inherit=True),
    Directive("limit_conn", HSL, (2, 2),
              "`limit_conn ZONE N`: at most N requests in flight per key of the zone, across "
              "workers; the count is released when the request ends, however it ends. Several "
              "at one level all apply; a level with none inherits the outer level's.",
              _limit_conn, multiple=True, inherit=True),
    Directive("limit_conn_status", HSL, (1, 1),
              "Status of limit_conn rejections (fastgw 429, nginx 503).",
              _one(_limit_status), default="429", inherit=True),
    Directive("limit_conn_log_level", HSL, (1, 1),
              "Level of the `limiting connections` line (at most one per second per zone).",
              _one(_limit_log_level), default="error", inherit=True),
    Directive("limit_conn_dry_run", HSL, (1, 1),
              "`on`: count and log, but do not reject.", _FLAG, default="off", inherit=True),
    Directive("stub_status", frozenset({LOCATION}), (0, 1),
              "The location answers nginx's stub_status page (active connections, accepts, "
              "handled, requests, reading/writing/waiting), summed over all workers."),
    Directive("metrics", frozenset({LOCATION}), (0, 0),
              "fastgw: the location answers the Prometheus exposition of fastgw's counters "
              "(connections, responses by status, rejections by reason, upstream queue depth, "
              "requests in flight per peer, upstream response-time histograms, worker liveness)."),
    # -- upstream -----------------------------------------------------------------------------
    Directive("keepalive", frozenset({UPSTREAM}), (1, 1),
              "Most idle upstream connections each worker keeps for reuse.", _INT, default="0"),
    Directive("keepalive_timeout@upstream", frozenset({UPSTREAM}), (1, 1),
              "`keepalive_timeout` in upstream: how long an idle upstream connection is kept.",
              _TIME, default="60s"),
    Directive("keepalive_requests@upstream", frozenset({UPSTREAM}), (1, 1),
              "`keepalive_requests` in upstream: most requests sent over one upstream connection.",
              _INT, default="1000"),
    Directive("zone", frozenset({UPSTREAM}), (1, 2),
              "`zone NAME [SIZE]`: the upstream's peer state is shared by all workers (atomic "
              "cells in shared memory: requests in flight for `max_conns` and `least_conn`, "
              "failures for `max_fails`, the `health_check` verdict); a slot freed in one "
              "worker wakes the others that have requests queued. SIZE is accepted for nginx compatibility; fastgw sizes "
              "the zone itself.", _zone),
    Directive("queue", frozenset({UPSTREAM}), (1, 2),
              "`queue N [timeout=T]` (NGINX Plus syntax): when every peer is at `max_conns`, up "
              "to N requests per worker wait for a slot, at most T (default 60s); beyond, 503 "
              "with Retry-After at once (`queue_full`), or after T (`queue_timeout`). Without "
              "`queue`, a request that finds every peer busy gets the `queue_full` 503 at once.",
              _queue),
    Directive("least_conn", frozenset({UPSTREAM}), (0, 0),
              "Send each request to the peer with the fewest requests in flight relative to its "
              "weight (counted across workers with a `zone`); ties go by weighted round robin.",
              lambda args: ("least_conn",)),
    Directive("ip_hash", frozenset({UPSTREAM}), (0, 0),
              "Pick the peer from a hash of the client address (the first three octets of an "
              "IPv4 address, the whole IPv6 address, as nginx); an unavailable peer's clients "
              "go to the next one by rehashing.", lambda args: ("ip_hash",)),
    Directive("hash", frozenset({UPSTREAM}), (1, 2),
              "`hash KEY [consistent]`: pick the peer from a hash of KEY (variables allowed, e.g. "
              "`$request_uri`). With `consistent`, a ketama ring (160 points per unit of "
              "weight): removing one of N peers moves only about 1/N of the keys.", _hash),
    Directive("random", frozenset({UPSTREAM}), (0, 1),
              "`random [two]`: a random peer by weight; with `two`, the less loaded of two "
              "random peers (power of two choices, compared as least_conn).", _random),
    Directive("health_check", frozenset({UPSTREAM}), (0, 5),
              "`health_check [interval=T] [uri=PATH] [fails=N] [passes=N] [match=STATUS-RANGE]` "
              "(fastgw form: NGINX Plus puts it in a location, with a `match {}` block): every T "
              "(default 5s) one worker sends `GET PATH` (default `/`) to each peer; a peer that "
              "fails N checks in a row (default 1: refused, timed out after T or 5 s, or a status "
              "outside the range, default 200-399) is out until it passes N in a row (default 1). "
              "Needs a `zone`; every worker sees the result.", _health_check),
]

# Directives whose name means something else inside `upstream` are declared
# under NAME@upstream; TABLE maps (name, context) to the declaration.
BY_NAME = {}
for _d in DIRECTIVES:
    BY_NAME.setdefault(_d.name.partition("@")[0], []).append(_d)


def lookup(name, context):
    """The Directive for ``name`` in ``context``, or the first declared one if none fits.

    Returns None for a directive fastgw does not know at all.
    """
    candidates = BY_NAME.get(name)
    if not candidates:
        return None
    for d in candidates:
        if context in d.contexts:
            return d
    return candidates[0]
