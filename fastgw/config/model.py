"""The typed, frozen configuration the loader produces and the processes use.

Times are seconds (float), sizes bytes (int). Paths are absolute (resolved
against the prefix by the loader). Everything here is immutable so a worker
can keep the object it was started with while the master loads another.
"""

from dataclasses import dataclass, field


class Settings:
    """Merged values of the inheritable directives at one level (read-only).

    Attribute access by directive name: ``settings.proxy_read_timeout``
    (seconds). ``as_dict()`` gives a copy for display.
    """

    __slots__ = ("_values",)

    def __init__(self, values):
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        raise AttributeError("Settings are read-only")

    def as_dict(self):
        """A copy of the values as a plain dict."""
        return dict(self._values)

    def __repr__(self):
        return f"Settings({self._values!r})"


@dataclass(frozen=True)
class Listen:
    """One ``listen``: address, port, and socket options."""

    host: str
    port: int
    default_server: bool = False
    backlog: int = 511
    file: str = None
    line: int = None

    @property
    def address(self):
        """``(host, port)``, the key that identifies the listening socket."""
        return (self.host, self.port)


@dataclass(frozen=True)
class UpstreamServer:
    """A peer of an upstream group: where to connect, its weight and health settings.

    ``max_fails`` failed attempts within ``fail_timeout`` seconds take the peer
    out for ``fail_timeout`` seconds (0: never); ``backup`` peers serve only
    when no primary peer can; a ``down`` peer never serves (nginx's meaning).
    """

    host: str
    port: int
    weight: int = 1
    name: str = None
    max_conns: int = 0
    max_fails: int = 1
    fail_timeout: float = 10.0
    backup: bool = False
    down: bool = False
    # max_fails written on the line: a group's only server obeys it then (nginx
    # never takes a single server out; fastgw does when told to).
    max_fails_set: bool = False

    @property
    def address(self):
        """``host:port`` as nginx prints it in ``$upstream_addr``."""
        return self.name or f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Upstream:
    """An ``upstream`` block, or the implicit group of a ``proxy_pass host:port``.

    ``keepalive`` is the most idle connections cached per worker (0: none, the
    upstream connection is closed after each response, as nginx without
    ``keepalive``); ``keepalive_timeout`` seconds; ``keepalive_requests`` a
    count; ``queue`` how many requests may wait for a peer under
    ``max_conns``, per worker, at most ``queue_timeout`` seconds; ``zone``
    names the shared zone that makes ``max_conns`` hold across workers.
    """

    name: str
    servers: tuple
    keepalive: int = 0
    keepalive_timeout: float = 60.0
    keepalive_requests: int = 1000
    implicit: bool = False
    queue: int = 0
    queue_timeout: float = 60.0
    zone: str = None
    # ("round_robin",) | ("least_conn",) | ("ip_hash",) | ("hash", Template, consistent)
    # | ("random", two)
    balancer: tuple = ("round_robin",)
    health_check: object = None

    def max_fails(self, server):
        """The max_fails that applies to ``server``: nginx never takes a group's only server
        out on failures; fastgw does when the server's line sets max_fails."""
        if len(self.servers) == 1 and not server.max_fails_set:
            return 0
        return server.max_fails


@dataclass(frozen=True)
class HealthCheck:
    """``health_check`` of an upstream: ``interval`` seconds between rounds, ``uri``,
    ``fails``/``passes`` checks in a row to go out/in, ``match`` inclusive status range."""

    interval: float = 5.0
    uri: str = "/"
    fails: int = 1
    passes: int = 1
    match: tuple = (200, 399)


@dataclass(frozen=True)
class ProxyPass:
    """``proxy_pass http://HOST[:PORT][/URI]``.

    ``uri`` is None when the URL has no URI part (the request URI is passed
    unchanged), else the text that replaces the matched location prefix.
    ``proxy_host`` is ``$proxy_host`` (host, with ``:port`` unless it is 80).
    """

    upstream: str
    uri: str = None
    proxy_host: str = ""
    proxy_port: int = 80


@dataclass(frozen=True)
class Return:
    """``return CODE [TEXT|URL]``: ``text`` is a Template or None."""

    code: int
    text: object = None


@dataclass(frozen=True)
class Location:
    """A ``location`` block: how it matches and what it does."""

    modifier: str
    pattern: str
    settings: Settings
    proxy_pass: ProxyPass = None
    ret: Return = None
    file: str = None
    line: int = None
    status_page: str = None


@dataclass(frozen=True)
class Server:
    """A virtual server: its listens, names, locations and merged settings."""

    listens: tuple
    names: tuple
    locations: tuple
    settings: Settings
    ret: Return = None
    file: str = None
    line: int = None


@dataclass(frozen=True)
class LimitZone:
    """A ``limit_req_zone`` (kind "req") or ``limit_conn_zone`` (kind "conn").

    ``size`` in bytes; ``key`` a compiled Template; ``rate`` in milli-requests
    per second (nginx's unit; 0 for limit_conn); ``redis`` ``(host, port)`` of
    the server holding the buckets (fastgw.redis_limit), else None.
    """

    kind: str
    name: str
    size: int
    key: object
    rate: int = 0
    redis: tuple = None          # (host, port) when the buckets live in Redis
    redis_timeout: float = 0.1   # seconds
    redis_fail: str = "open"

    def signature(self):
        """What must not change for a reload to keep the zone's state (nginx: name, size, key)."""
        return (self.kind, self.name, self.size, self.key.source)


@dataclass(frozen=True)
class Http:
    """The ``http`` block: upstream groups by name, servers in file order, limit zones by name."""

    upstreams: dict = field(default_factory=dict)
    servers: tuple = ()
    limit_zones: dict = field(default_factory=dict)
    log_formats: dict = field(default_factory=dict)
    maps: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Map:
    """``map SOURCE $NAME { ... }``: ``source`` a Template; ``exact`` {bytes: Template};
    ``regexes`` ((compiled bytes pattern, Template), ...) tried in order after the exact
    values; ``default`` a Template (empty when not given), as nginx's map."""

    name: str
    source: object
    exact: dict
    regexes: tuple
    default: object


@dataclass(frozen=True)
class LogFormat:
    """``log_format NAME [escape=default|json|none] STRING ...``: the strings joined, compiled.

    ``escape``: how variable values are written (nginx's: ``default`` turns ``"``, ``\\``
    and bytes outside 0x20..0x7e into ``\\xHH``, ``json`` escapes for a JSON string,
    ``none`` writes them as they are); an empty value is ``-`` (nothing with ``json``).
    """

    name: str
    escape: str
    template: object


@dataclass(frozen=True)
class Config:
    """A whole validated configuration.

    ``worker_processes`` is resolved (``auto`` -> CPU count). ``files`` lists
    every file read, main file first, for ``-T``.
    """

    path: str
    prefix: str
    worker_processes: int
    pid: str
    error_log: tuple
    worker_shutdown_timeout: float
    worker_rlimit_nofile: int
    worker_connections: int
    http: Http
    files: tuple = ()
    worker_heartbeat_timeout: float = 10.0

    def listens(self):
        """The sockets to bind: distinct addresses in file order, as ``Listen``.

        The first ``listen`` of an address gives its options. As in nginx, an
        address on a port that also has a wildcard listen (``listen 80`` and
        ``listen 127.0.0.1:80``) gets no socket of its own: the wildcard socket
        accepts for it and the worker picks its servers by the connection's
        local address (:meth:`served_by`).
        """
        seen = {}
        for server in self.http.servers:
            for listen in server.listens:
                seen.setdefault(listen.address, listen)
        wildcard_ports = {(l.port, _family(l.host)) for l in seen.values() if _is_wildcard(l.host)}
        return [l for l in seen.values()
                if _is_wildcard(l.host) or (l.port, _family(l.host)) not in wildcard_ports]

    def served_by(self, listen):
        """The specific addresses a wildcard ``listen`` socket accepts for: ``[(host, port)]``."""
        if not _is_wildcard(listen.host):
            return []
        out = []
        for server in self.http.servers:
            for other in server.listens:
                if (other.port == listen.port and not _is_wildcard(other.host)
                        and _family(other.host) == _family(listen.host) and other.address not in out):
                    out.append(other.address)
        return out


def _is_wildcard(host):
    return host in ("0.0.0.0", "::", "*")


def _family(host):
    return 6 if ":" in host else 4
