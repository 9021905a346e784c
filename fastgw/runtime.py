"""Build a worker's ready-to-serve tables from a Config (the cold side of the hot path).

Everything a request needs is resolved here, once: upstream pools with their
balancers, each location's compiled header templates, timeouts in seconds,
size limits in bytes, its logs; then the virtual hosts of each listening
socket. The hot path (fastgw._core.proxy) only walks these objects.
"""

from fastgw._core import proxy
from fastgw._core.balancer import Peer, make_balancer
from fastgw._core.http import HOP_BY_HOP
from fastgw._core.pool import UpstreamPool
from fastgw._core.router import Router, VirtualHosts
from fastgw.config import variables as V
from fastgw.config.variables import compile_template
from fastgw.observe.access_log import AccessLog
from fastgw.observe.error_log import Throttle

# Client fields never copied upstream: hop-by-hop ones (RFC 9110 §7.6.1), the
# framing fastgw redoes itself, and Expect (fastgw answers 100-continue itself).
NOT_FORWARDED = frozenset(HOP_BY_HOP | {b"content-length", b"expect"})
DEFAULT_HOST = ("Host", compile_template("$proxy_host"))
# log_format escape= modes as the proxy's render_log numbers them.
ESCAPES = {"default": 0, "json": 1, "none": 2}
# Runtime.pages keys of the status pages a location can serve.
PAGES = {"stub_status": 1, "metrics": 2}


class AccessLogs:
    """One AccessLog per path in a process, whatever the number of locations naming it."""

    def __init__(self, formats=None):
        self.files = {}
        self.formats = formats or {}

    def entry(self, path, fmt, buffer, flush, cond):
        """A location's access_log: ``(AccessLog, format parts or None for combined, escape
        mode, if= parts or None)``, as the proxy's _log_request reads it."""
        log = self.get(path, buffer, flush)
        cond_parts = cond.parts if cond is not None else None
        if fmt == "combined":
            return (log, None, 0, cond_parts)
        spec = self.formats[fmt]
        return (log, spec.template.parts, ESCAPES[spec.escape], cond_parts)

    def get(self, path, buffer, flush):
        log = self.files.get(path)
        if log is None:
            log = self.files[path] = AccessLog(path, buffer, flush)
        return log

    def flush_due(self, now):
        for log in self.files.values():
            log.flush_if_due(now)

    def flush(self):
        for log in self.files.values():
            log.flush()

    def reopen(self):
        for log in self.files.values():
            log.reopen()

    def close(self):
        for log in self.files.values():
            log.close()


def build_pools(config, loop):
    """``{upstream name: UpstreamPool}`` for every upstream group, each with its balancer.

    A pool's ``index`` is its upstream's place in the configuration, which is
    also its place in the shared counters (fastgw.shm).
    """
    pools = {}
    for index, (name, up) in enumerate(config.http.upstreams.items()):
        peers = [Peer(s.host, s.port, s.weight, s.address, i, s.max_conns, up.max_fails(s),
                      s.fail_timeout, s.backup, s.down, up.health_check is not None)
                 for i, s in enumerate(up.servers)]
        pools[name] = UpstreamPool(name, make_balancer(peers, up.balancer), up.keepalive,
                                   up.keepalive_timeout,
                                   up.keepalive_requests, loop, up.queue, up.queue_timeout)
        pools[name].log_throttle = Throttle()
        pools[name].live_throttle = Throttle()
        pools[name].index = index
    return pools


# limit_req_log_level: delays are logged one level lower (nginx).
_LOWER = {"error": "warn", "warn": "notice", "notice": "info", "info": "debug"}


def limit_tables(zones, error_log=None):
    """zone name -> (LimitTable, LimitZone, Throttle, RedisBucket or None) for a worker's
    locations (call it in the worker: a Redis zone gets this worker's connection pool)."""
    if zones is None:
        return {}
    out = {}
    for name, table in zones.limit_tables.items():
        spec = zones.limit_specs[name]
        bucket = None
        if spec.redis is not None:
            from fastgw.redis_limit import RedisBucket

            bucket = RedisBucket(name, spec.redis[0], spec.redis[1], spec.redis_timeout,
                                 spec.redis_fail == "open", error_log)
        out[name] = (table, spec, Throttle(), bucket)
    return out


def _limits(loc, kind, s, tables):
    """The limit_req / limit_conn settings of a location (none for `return`, as nginx)."""
    loc.limit_req_status = s.limit_req_status
    loc.limit_req_level = s.limit_req_log_level
    loc.limit_req_delay_level = _LOWER[s.limit_req_log_level]
    loc.limit_req_dry = s.limit_req_dry_run
    loc.limit_conn_status = s.limit_conn_status
    loc.limit_conn_level = s.limit_conn_log_level
    loc.limit_conn_dry = s.limit_conn_dry_run
    loc.limit_redis = False
    if kind == proxy.KIND_RETURN or not tables:
        loc.limit_reqs = loc.limit_conns = ()
        return
    reqs = []
    for name, burst, delay in s.limit_req:
        table, zone, throttle, bucket = tables[name]
        reqs.append((table, zone.key.parts, zone.rate, burst, delay, name, throttle, bucket))
        loc.limit_redis = loc.limit_redis or bucket is not None
    loc.limit_reqs = tuple(reqs)
    conns = []
    for name, most in s.limit_conn:
        table, zone, throttle, _ = tables[name]
        conns.append((table, zone.key.parts, most, name, throttle))
    loc.limit_conns = tuple(conns)


def _location(kind, settings, logs, access_logs, conf=None, tables=None):
    loc = proxy.Location()
    loc.conf = conf
    loc.kind = kind
    s = settings
    loc.connect_timeout = s.proxy_connect_timeout
    loc.send_timeout = s.proxy_send_timeout
    loc.read_timeout = s.proxy_read_timeout
    loc.next_upstream = sum(proxy.NEXT_UPSTREAM_BITS[c] for c in s.proxy_next_upstream)
    loc.next_tries = s.proxy_next_upstream_tries
    loc.next_timeout = s.proxy_next_upstream_timeout
    loc.keepalive_timeout = s.keepalive_timeout
    loc.keepalive_requests = s.keepalive_requests
    loc.body_timeout = s.client_body_timeout
    loc.client_send_timeout = s.send_timeout
    loc.max_body = s.client_max_body_size
    loc.priority = s.priority
    loc.upstream_http10 = s.proxy_http_version == "1.0"
    loc.request_buffering = s.proxy_request_buffering
    loc.body_buffer_size = s.client_body_buffer_size
    loc.body_temp_path = s.client_body_temp_path
    loc.response_buffering = s.proxy_buffering
    loc.proxy_buffers_size = s.proxy_buffers[0] * s.proxy_buffers[1]
    loc.max_temp_file = s.proxy_max_temp_file_size
    loc.proxy_temp_path = s.proxy_temp_path
    loc.min_timeout = min(t for t in (s.proxy_connect_timeout, s.proxy_send_timeout,
                                      s.proxy_read_timeout, 60.0) if t > 0)
    loc.add_headers = tuple(
        (name.encode("ascii"), tmpl.parts, tmpl.static, always)
        for name, tmpl, always in s.add_header
    )
    loc.access_logs = [access_logs.entry(path, fmt, buffer, flush, cond)
                       for path, fmt, buffer, flush, cond in s.access_log]
    loc.error_log = logs.get(*s.error_log)
    set_headers = list(s.proxy_set_header)
    if not any(name.lower() == "host" for name, _ in set_headers):
        set_headers.insert(0, DEFAULT_HOST)
    loc.set_headers = tuple(
        (name.encode("ascii"), tmpl.parts, tmpl.static) for name, tmpl in set_headers
    )
    loc.skip = frozenset(NOT_FORWARDED | {name.lower().encode("ascii") for name, _ in set_headers})
    # nginx tunnels only what the location forwards an Upgrade for.
    loc.upgrade = any(name.lower() == "upgrade" for name, _ in set_headers)
    _limits(loc, kind, s, tables)
    return loc


def fold_constants(parts, constants):
    """Replace variables that are constant for a location by their bytes.

    ``constants`` maps a variable code to its value. Returns ``(parts, static)``
    where ``static`` is the whole value when nothing variable is left, so the
    default ``Host $proxy_host`` costs no evaluation per request.
    """
    out = []
    for part in parts:
        if not isinstance(part, bytes) and part[0] in constants:
            part = constants[part[0]]
        if isinstance(part, bytes) and out and isinstance(out[-1], bytes):
            out[-1] += part
        else:
            out.append(part)
    if all(isinstance(p, bytes) for p in out):
        return tuple(out), b"".join(out)
    return tuple(out), None


def build_location(conf, pools, logs, access_logs, tables=None):
    """The runtime Location for a config Location.

    ``return`` wins over ``proxy_pass`` in one location: nginx runs it in the
    rewrite phase, before the content phase would proxy.
    """
    if conf.ret is not None:
        loc = _location(proxy.KIND_RETURN, conf.settings, logs, access_logs, conf, tables)
        _set_return(loc, conf.ret)
    elif conf.status_page is not None:
        loc = _location(proxy.KIND_STATUS, conf.settings, logs, access_logs, conf, tables)
        loc.ret_code = PAGES[conf.status_page]
    elif conf.proxy_pass is not None:
        loc = _location(proxy.KIND_PROXY, conf.settings, logs, access_logs, conf, tables)
        pp = conf.proxy_pass
        loc.pool = pools[pp.upstream]
        loc.uri = pp.uri.encode("utf-8") if pp.uri is not None else None
        if loc.uri is not None and b"?" in loc.uri:
            # The directive's own arguments stay arguments (never escaped into the path).
            loc.uri, loc.uri_args = loc.uri.split(b"?", 1)
        loc.proxy_host = pp.proxy_host.encode("utf-8")
        loc.proxy_port = str(pp.proxy_port).encode()
        constants = {V.PROXY_HOST: loc.proxy_host, V.PROXY_PORT: loc.proxy_port, V.SCHEME: b"http"}
        loc.set_headers = tuple(
            (name, *fold_constants(parts, constants)) for name, parts, _static in loc.set_headers
        )
    else:
        # No content handler: nginx would look for a file; fastgw serves no files.
        loc = _location(proxy.KIND_NOT_FOUND, conf.settings, logs, access_logs, conf, tables)
    loc.prefix = conf.pattern.encode("utf-8")
    loc.exact = conf.modifier == "="
    return loc


def _set_return(loc, ret):
    loc.ret_code = ret.code
    loc.ret_parts = ret.text.parts if ret.text is not None else None


def build_server(conf, pools, logs, access_logs, tables=None):
    """The runtime Server for a config Server: router, not-found and return handlers, timeouts."""
    server = proxy.Server()
    server.conf = conf
    s = conf.settings
    locations = [(loc.modifier, loc.pattern, build_location(loc, pools, logs, access_logs, tables))
                 for loc in conf.locations]
    server.router = Router(locations)
    server.not_found = _location(proxy.KIND_NOT_FOUND, s, logs, access_logs, None, tables)
    if conf.ret is not None:
        ret = _location(proxy.KIND_RETURN, s, logs, access_logs)
        _set_return(ret, conf.ret)
        server.ret = ret
    first = next((n for n in conf.names if not n.startswith(("~", "*", "."))), "")
    server.name = first.encode("idna" if not first.isascii() else "ascii")
    server.header_timeout = s.client_header_timeout
    server.header_buffers, server.header_buffer_size = s.large_client_header_buffers
    server.keepalive_timeout = s.keepalive_timeout
    timeouts = [s.client_header_timeout, s.keepalive_timeout, s.client_body_timeout, s.send_timeout]
    for loc in conf.locations:
        timeouts += [loc.settings.client_body_timeout, loc.settings.send_timeout,
                     loc.settings.keepalive_timeout]
    server.min_timeout = min([t for t in timeouts if t > 0] or [60.0])
    server.error_log = logs.get(*s.error_log)
    return server


def status_pages(stats, zones):
    """``Runtime.pages``: page number -> function returning ``(content type, body)`` (bytes)."""
    from fastgw.observe.status import PROMETHEUS_CONTENT_TYPE, metrics_renderer, stub_status

    render_metrics = metrics_renderer(stats, zones)
    return {
        PAGES["stub_status"]: lambda: (b"text/plain", stub_status(zones.snapshot())),
        PAGES["metrics"]: lambda: (PROMETHEUS_CONTENT_TYPE, render_metrics()),
    }


def build_listeners(config, rt, sockets, logs, access_logs, pools, tables=None):
    """One Listener per socket: ``sockets`` is a list of ``(Listen, socket)`` for this worker."""
    proxy.set_maps(config.http.maps)
    servers = [(conf, build_server(conf, pools, logs, access_logs, tables))
               for conf in config.http.servers]

    def vhosts(address):
        members, default = [], None
        for conf, server in servers:
            for lst in conf.listens:
                if lst.address == address:
                    members.append((conf.names, server))
                    if lst.default_server and default is None:
                        default = server
        return VirtualHosts(members, default)

    listeners = []
    for listen, sock in sockets:
        listener = proxy.Listener(rt, vhosts(listen.address), sock)
        # A wildcard socket also accepts for specific addresses on its port; those
        # connections get the servers of their address (nginx's addr_conf).
        listener.by_addr = {host.encode(): vhosts((host, port))
                            for host, port in config.served_by(listen)}
        listeners.append(listener)
    return listeners
