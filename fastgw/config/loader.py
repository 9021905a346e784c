"""Turn a file (and ``-g`` directives) into a validated :class:`~fastgw.config.model.Config`.

Each directive is checked against the table in :mod:`.directives` for its
context, arity and value; every mistake found is reported with its file and
line (nginx stops at the first, fastgw lists them all). Inheritable values
are merged http -> server -> location with the default applied in one place,
as nginx's merge functions do.
"""

import os
import re
import socket

from . import directives as D
from . import units
from .errors import ConfigError, ConfigErrors
from .model import (Config, Http, Listen, Location, Map, ProxyPass, Return, Server, Settings,
                    Upstream, UpstreamServer)
from .reader import read_file, read_string
from .variables import MAP, SIMPLE, VariableError, compile_template, map_variables

INHERITED = [d for d in D.DIRECTIVES if d.inherit and not d.planned]
REDIRECT_CODES = (301, 302, 303, 307, 308)


def load(path, prefix=None, extra=None):
    """Load and validate a configuration.

    ``path``: the main file; ``prefix``: directory for relative paths (pid,
    logs), default the current directory; ``extra``: ``-g`` main-context
    directives as one string. Returns a Config. Raises ConfigErrors holding
    every ConfigError found (file:line each).
    """
    prefix = os.path.abspath(prefix or os.getcwd())
    path = os.path.abspath(os.path.join(prefix, path))
    files = []
    if not _read_ok(path):
        raise ConfigErrors([ConfigError(f'open() "{path}" failed (2: No such file or directory)')])
    try:
        nodes = read_file(path, files=files)
        if extra:
            # nginx reads -g before the file, so a duplicate is reported in the file.
            gnodes = read_string(extra, "command line", os.path.dirname(path))
            for node in gnodes:
                if node.block is not None:
                    raise ConfigError("block directives are not supported in -g option",
                                      "command line")
            nodes = gnodes + nodes
    except ConfigError as exc:
        raise ConfigErrors([exc]) from None
    builder = _Builder(path, prefix)
    config = builder.build(nodes, tuple(files))
    if builder.errors:
        order = {name: i for i, name in enumerate(files)}
        builder.errors.sort(key=lambda e: (order.get(e.file, len(order)), e.line or 0))
        raise ConfigErrors(builder.errors)
    return config


def _host_of(hostport):
    """The host part of ``host[:port]`` / ``[v6][:port]``, brackets kept for IPv6."""
    if hostport.startswith("["):
        return hostport[:hostport.index("]") + 1] if "]" in hostport else hostport
    return hostport.rpartition(":")[0] if ":" in hostport else hostport


def _read_ok(path):
    try:
        with open(path, "rb"):
            return True
    except OSError:
        return False


BALANCERS = ("least_conn", "ip_hash", "hash", "random")
# Stands for an upstream block that had errors (never part of a loaded Config).
FAILED = Upstream(name="", servers=())


class _Builder:
    def __init__(self, path, prefix):
        self.path = path
        self.prefix = prefix
        self.errors = []
        # limit_req / limit_conn references, checked once every zone is known:
        # (directive, zone name, node).
        self.zone_refs = []
        self.format_nodes = []
        self.format_refs = []

    # -- helpers ----------------------------------------------------------------------------
    def err(self, node, message):
        self.errors.append(node.error(message))

    def abspath(self, p):
        if p in ("stderr", "/dev/stderr") or os.path.isabs(p):
            return p
        return os.path.join(self.prefix, p)

    def collect(self, nodes, context, blocks=()):
        """Validate ``nodes`` in ``context``; return (values, block_nodes).

        ``values`` maps a simple directive's name to its parsed value (a list
        for ``multiple`` ones). Block directives named in ``blocks`` (and
        ``server``/``location`` which are handled by the caller) are returned
        in order as ``block_nodes``.
        """
        values, block_nodes, seen = {}, [], {}
        for node in nodes:
            d = D.lookup(node.name, context)
            if d is None:
                self.err(node, f'unknown directive "{node.name}"')
                continue
            if context not in d.contexts:
                self.err(node, f'"{node.name}" directive is not allowed here')
                continue
            if d.planned:
                self.err(node, f'"{node.name}" directive is not supported yet by this version of '
                               f'fastgw (planned in issue {d.planned})')
                continue
            if d.block and node.block is None and not (node.name == "server" and context == D.UPSTREAM):
                self.err(node, f'directive "{node.name}" has no opening "{{"')
                continue
            if node.block is not None and (not d.block or (node.name == "server" and context == D.UPSTREAM)):
                self.err(node, f'directive "{node.name}" is not terminated by ";"')
                continue
            lo, hi = d.nargs
            if len(node.args) < lo or (hi is not None and len(node.args) > hi):
                self.err(node, f'invalid number of arguments in "{node.name}" directive')
                continue
            if d.block or node.name in blocks or d.parse is None:
                block_nodes.append(node)
                continue
            if d.name in seen and not d.multiple:
                self.err(node, f'"{node.name}" directive is duplicate')
                continue
            seen[d.name] = node
            try:
                value = d.parse(node.args)
            except VariableError as exc:
                self.err(node, str(exc))  # nginx words it without the directive
                continue
            except ValueError as exc:
                self.err(node, f'{exc} in "{node.name}" directive')
                continue
            if d.multiple:
                values.setdefault(d.name, []).append(value)
            else:
                values[d.name] = value
            if d.name == "log_format":
                self.format_nodes.append(node)
            elif d.name == "access_log" and value is not None:
                self.format_refs.append((value[1], node))
            if d.name in ("limit_req", "limit_conn"):
                self.zone_refs.append((d.name, value[0], node))
            elif d.name in ("limit_req_zone", "limit_conn_zone"):
                self.zone_refs.append((d.name, value, node))
        return values, block_nodes

    # -- main ----------------------------------------------------------------------------
    def build(self, nodes, files):
        values, blocks = self.collect(nodes, D.MAIN)
        events = [b for b in blocks if b.name == "events"]
        https = [b for b in blocks if b.name == "http"]
        for extra in events[1:]:
            self.err(extra, '"events" directive is duplicate')
        for extra in https[1:]:
            self.err(extra, '"http" directive is duplicate')
        if not events:
            # nginx refuses to start without an events block; so do we.
            self.errors.append(ConfigError('no "events" section in configuration'))
        worker_connections = int(D.lookup("worker_connections", D.EVENTS).default)
        if events:
            ev, ev_blocks = self.collect(events[0].block, D.EVENTS)
            for b in ev_blocks:
                self.err(b, f'"{b.name}" directive is not allowed here')
            worker_connections = ev.get("worker_connections", worker_connections)

        wp = values.get("worker_processes", 1)
        if wp == "auto":
            wp = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        error_log = values.get("error_log") or D.lookup("error_log", D.MAIN).default_value()
        error_log = (self.abspath(error_log[0]), error_log[1])

        http = Http()
        if https:
            # Variables that `map` blocks define are known everywhere in http, as in
            # nginx, wherever the block stands.
            names = [b.args[1][1:] for b in https[0].block or []
                     if b.name == "map" and len(b.args) == 2 and b.args[1].startswith("$")]
            with map_variables(names):
                http = self.build_http(https[0], error_log)
        return Config(
            path=self.path,
            prefix=self.prefix,
            worker_processes=wp,
            pid=self.abspath(values.get("pid", "logs/fastgw.pid")),
            error_log=error_log,
            worker_shutdown_timeout=values.get("worker_shutdown_timeout", 30.0),
            worker_heartbeat_timeout=values.get("worker_heartbeat_timeout", 10.0),
            worker_rlimit_nofile=values.get("worker_rlimit_nofile"),
            worker_connections=worker_connections,
            http=http,
            files=files,
        )

    # -- http --------------------------------------------------------------------------------
    def build_http(self, node, main_error_log):
        values, blocks = self.collect(node.block, D.HTTP)
        upstreams = {}
        for b in blocks:
            if b.name == "upstream":
                name = b.args[0]
                if name in upstreams:
                    self.err(b, f'duplicate upstream "{name}"')
                    continue
                up = self.build_upstream(b)
                if up is not None:
                    # (FAILED too: the file is refused anyway, and proxy_pass to it is
                    # then not also reported as an unknown host.)
                    upstreams[name] = up
        http_level = dict(values)
        http_level.setdefault("error_log", main_error_log)
        servers = []
        for b in blocks:
            if b.name == "server":
                if b.block is None:
                    self.err(b, 'directive "server" has no opening "{"')
                    continue
                if b.args:
                    self.err(b, 'invalid number of arguments in "server" directive')
                    continue
                server = self.build_server(b, http_level, upstreams)
                if server is not None:
                    servers.append(server)
        defaults = set()
        for server in servers:
            for listen in server.listens:
                if listen.default_server:
                    if listen.address in defaults:
                        self.errors.append(ConfigError(
                            f"a duplicate default server for {listen.host}:{listen.port}",
                            listen.file, listen.line))
                    defaults.add(listen.address)
        maps = {}
        for b in blocks:
            if b.name == "map":
                m = self.build_map(b)
                if m is None:
                    continue
                if m.name in maps or m.name in SIMPLE:
                    self.err(b, f'the duplicate "{m.name}" variable')
                    continue
                maps[m.name] = m
        return Http(upstreams=upstreams, servers=tuple(servers), limit_zones=self.limit_zones(),
                    log_formats=self.log_formats(values.get("log_format", [])), maps=maps)

    def build_map(self, node):
        """``map SOURCE $NAME { ... }`` -> Map (None after an error, recorded)."""
        source, target = node.args
        if not target.startswith("$") or not re.fullmatch(r"\$[A-Za-z0-9_]+", target):
            self.err(node, f'invalid variable name "{target}"')
            return None
        name = target[1:]
        try:
            src = compile_template(source)
        except VariableError as exc:
            self.err(node, str(exc))
            return None
        if (MAP, name.encode("ascii")) in src.parts:
            self.err(node, f'the "{name}" variable maps itself')
            return None
        exact, regexes, default = {}, [], compile_template("")
        for entry in node.block or []:
            if entry.block is not None or len(entry.args) != 1:
                if entry.name == "volatile" and not entry.args and entry.block is None:
                    continue  # nginx: do not cache; fastgw never caches map values
                self.err(entry, f'invalid number of the map parameters')
                continue
            try:
                value = compile_template(entry.args[0])
            except VariableError as exc:
                self.err(entry, str(exc))
                continue
            key = entry.name
            if key == "default":
                default = value
            elif key.startswith("~"):
                flags = re.IGNORECASE if key.startswith("~*") else 0
                pattern = key[2:] if flags else key[1:]
                try:
                    regexes.append((re.compile(pattern.encode("utf-8"), flags), value))
                except re.error as exc:
                    self.err(entry, f'invalid regex "{pattern}": {exc}')
            else:
                if key.startswith("\\"):
                    key = key[1:]  # nginx: a leading backslash escapes "~" or "default"
                exact[key.encode("utf-8")] = value
        return Map(name, src, exact, tuple(regexes), default)

    def log_formats(self, formats):
        """The log formats by name; every access_log must name one (or ``combined``)."""
        out = {}
        for fmt, node in zip(formats, self.format_nodes):
            if fmt.name in out:
                self.err(node, f'duplicate "log_format" name "{fmt.name}"')
            out[fmt.name] = fmt
        for name, node in self.format_refs:
            if name != "combined" and name not in out:
                self.err(node, f'unknown log format "{name}"')
        return out

    def limit_zones(self):
        """The limit zones by name; every limit_req / limit_conn must name one of its kind."""
        zones = {}
        for directive, zone, node in self.zone_refs:
            if directive.endswith("_zone"):
                if zone.name in zones:
                    self.err(node, f'duplicate zone "{zone.name}"')
                else:
                    zones[zone.name] = zone
        for directive, name, node in self.zone_refs:
            if directive.endswith("_zone"):
                continue
            kind = "req" if directive == "limit_req" else "conn"
            zone = zones.get(name)
            if zone is None:
                self.err(node, f'no {directive}_zone "{name}" is defined')
            elif zone.kind != kind:
                self.err(node, f'zone "{name}" is a limit_{zone.kind}_zone, not a '
                               f'{directive}_zone')
        return zones

    def merged(self, *levels):
        """Settings from the nearest level that sets each inherited directive, else its default."""
        out = {}
        for d in INHERITED:
            for level in levels:
                if d.name in level:
                    out[d.name] = level[d.name]
                    break
            else:
                out[d.name] = d.default_value()
        if not any("access_log" in level for level in levels):
            out["access_log"] = [D.lookup("access_log", D.HTTP).parse(
                D.lookup("access_log", D.HTTP).default.split())]
        out["access_log"] = tuple(
            (self.abspath(a[0]),) + tuple(a[1:]) for a in out["access_log"] if a is not None
        ) if None not in out["access_log"] else ()
        el = out["error_log"]
        out["error_log"] = (self.abspath(el[0]), el[1])
        out["client_body_temp_path"] = self.abspath(out["client_body_temp_path"])
        out["proxy_temp_path"] = self.abspath(out["proxy_temp_path"])
        out["proxy_set_header"] = tuple(out["proxy_set_header"])
        out["add_header"] = tuple(out["add_header"])
        out["limit_req"] = tuple(out["limit_req"])
        out["limit_conn"] = tuple(out["limit_conn"])
        return out

    # -- upstream --------------------------------------------------------------------------
    def build_upstream(self, node):
        values, blocks = self.collect(node.block or [], D.UPSTREAM)
        servers = []
        before = len(self.errors)
        for b in blocks:
            if b.name == "server":
                servers.extend(self.upstream_server(b))
            else:
                self.err(b, f'"{b.name}" directive is not allowed here')
        if not servers:
            if len(self.errors) == before:
                self.err(node, f'no servers are inside upstream "{node.args[0]}"')
            # Known by name all the same: its proxy_pass lines need no second error.
            return FAILED
        queue, queue_timeout = values.get("queue", (0, 60.0))
        methods = [n for n in node.block or [] if n.name in BALANCERS]
        for extra in methods[1:]:
            self.err(extra, f'load balancing method redefined by "{extra.name}"')
        balancer = values.get(methods[0].name) if methods else ("round_robin",)
        if balancer is None:
            return FAILED  # its arguments were refused (error already recorded)
        if balancer[0] in ("hash", "ip_hash", "random") and any(s.backup for s in servers):
            # nginx refuses it too: a hash or random pick has no notion of "primary first".
            self.err(node, f'"backup" cannot be used with "{methods[0].name}" balancing')
        health = values.get("health_check")
        if health is not None and not values.get("zone"):
            hc = next(n for n in node.block if n.name == "health_check")
            self.err(hc, f'"health_check" in upstream "{node.args[0]}" needs a "zone" (the '
                         f'checks run in one worker and every worker must see the result)')
        if all(s.backup for s in servers):
            # (All `down` is accepted, as nginx: every request gets 502, no live upstreams.)
            self.err(node, f'no servers but backup ones in upstream "{node.args[0]}"')
        return Upstream(
            name=node.args[0],
            servers=tuple(servers),
            keepalive=values.get("keepalive", 0),
            keepalive_timeout=values.get("keepalive_timeout@upstream", 60.0),
            keepalive_requests=values.get("keepalive_requests@upstream", 1000),
            queue=queue,
            queue_timeout=queue_timeout,
            zone=values.get("zone"),
            balancer=balancer,
            health_check=health,
        )

    def upstream_server(self, node):
        if not node.args:
            self.err(node, 'invalid number of arguments in "server" directive')
            return []
        addr, params = node.args[0], node.args[1:]
        opts = {"weight": 1, "max_conns": 0}
        for p in params:
            key, sep, value = p.partition("=")
            try:
                if key in ("weight", "max_conns", "max_fails") and sep:
                    opts[key] = units.parse_int(value, minimum=1 if key == "weight" else 0)
                    if key == "max_fails":
                        opts["max_fails_set"] = True
                elif key == "fail_timeout" and sep:
                    opts[key] = units.parse_time(value)
                elif key in ("backup", "down") and not sep:
                    opts[key] = True
                elif key == "slow_start":
                    self.err(node, '"server" parameter "slow_start" is not supported by fastgw')
                    return []
                else:
                    raise ValueError
            except ValueError:
                self.err(node, f'invalid parameter "{p}"')
                return []
        try:
            return [UpstreamServer(h, port, name=name, **opts)
                    for h, port, name in self.resolve(addr, node)]
        except ConfigError as exc:
            self.errors.append(exc)
            return []

    def resolve(self, addr, node):
        """``[(ip, port, display_name)]`` for ``host[:port]``; hostnames resolved now, as nginx does."""
        if addr.startswith("unix:"):
            raise node.error(f'unix sockets are not supported yet in "{addr}"')
        if ":" not in addr.strip("[]") or (addr.startswith("[") and addr.endswith("]")):
            addr = addr + ":80"
        try:
            host, port = units.parse_address(addr)
        except ValueError as exc:
            raise node.error(str(exc)) from None
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
            return [(host, port, f"[{host}]:{port}" if ":" in host else None)]
        except OSError:
            pass
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror:
            raise node.error(f'host not found in upstream "{addr}"') from None
        seen = []
        for info in infos:
            ip = info[4][0]
            if ip not in seen:
                seen.append(ip)
        return [(ip, port, f"{ip}:{port}" if ":" not in ip else f"[{ip}]:{port}") for ip in seen]

    # -- server ----------------------------------------------------------------------------
    def build_server(self, node, http_level, upstreams):
        values, blocks = self.collect(node.block, D.SERVER)
        server_level = dict(values)
        # `blocks` holds listen, server_name and return too: collect() has checked
        # their context and arity, the parsing is done here.
        listens, seen_listen = [], set()
        any_listen = any(b.name == "listen" for b in node.block)
        for b in blocks:
            if b.name == "listen":
                listen = self.parse_listen(b)
                if listen is None:
                    continue
                if listen.address in seen_listen:
                    self.err(b, f"a duplicate listen {listen.host}:{listen.port}")
                    continue
                seen_listen.add(listen.address)
                listens.append(listen)
        if not any_listen:
            # nginx listens on *:80 (or 8000 unprivileged) by default; be explicit instead.
            self.err(node, 'no "listen" directive in server')
        names = []
        for b in blocks:
            if b.name == "server_name":
                for name in b.args:
                    if name.startswith("~"):
                        try:
                            re.compile(name[1:])
                        except re.error as exc:
                            self.err(b, f'invalid regex "{name[1:]}": {exc}')
                            continue
                    names.append(name)
        ret = None
        for b in blocks:
            if b.name == "return" and ret is None:
                # nginx executes the first return it meets.
                ret = self.parse_return(b)
        locations = []
        seen = set()
        for b in blocks:
            if b.name == "location":
                loc = self.build_location(b, http_level, server_level, upstreams)
                if loc is None:
                    continue
                # nginx: "=" and prefix ("" and "^~" alike) locations must be
                # unique; regex locations are not checked.
                if loc.modifier not in ("~", "~*"):
                    key = (loc.modifier == "=", loc.pattern)
                    if key in seen:
                        self.err(b, f'duplicate location "{loc.pattern}"')
                        continue
                    seen.add(key)
                locations.append(loc)
            elif b.name not in ("listen", "server_name", "return"):
                self.err(b, f'"{b.name}" directive is not allowed here')
        settings = Settings(self.merged(server_level, http_level))
        return Server(tuple(listens), tuple(names), tuple(locations), settings, ret,
                      node.file, node.line)

    def parse_listen(self, node):
        text = node.args[0]
        # nginx: an address without a port ("listen 127.0.0.1;") means port 80.
        if text.startswith("["):
            if text.endswith("]"):
                text += ":80"
        elif ":" not in text and not (text.isdigit() and text.isascii()):
            text += ":80"
        try:
            host, port = units.parse_address(text)
        except ValueError as exc:
            self.err(node, f'{exc} in "listen" directive')
            return None
        default_server, backlog = False, 511
        for p in node.args[1:]:
            if p in ("default_server", "default"):
                default_server = True
            elif p.startswith("backlog="):
                try:
                    backlog = units.parse_int(p[8:], minimum=1)
                except ValueError:
                    self.err(node, f'invalid backlog "{p[8:]}"')
            elif p == "reuseport":
                pass  # fastgw always uses SO_REUSEPORT, one socket per worker.
            else:
                self.err(node, f'invalid parameter "{p}"')
        return Listen(host, port, default_server, backlog, node.file, node.line)

    def parse_return(self, node):
        args = node.args
        first = args[0]
        if first.isdigit() and first.isascii():
            code = int(first)
            if not 0 <= code <= 999:
                self.err(node, f'invalid return code "{first}"')
                return None
            text = args[1] if len(args) > 1 else None
        elif len(args) == 1 and re.match(r"^(https?://|\$scheme)", first):
            code, text = 302, first
        else:
            self.err(node, f'invalid return code "{first}"')
            return None
        try:
            return Return(code, compile_template(text) if text is not None else None)
        except ValueError as exc:
            self.err(node, str(exc))
            return None

    # -- location ------------------------------------------------------------------------
    def build_location(self, node, http_level, server_level, upstreams):
        if len(node.args) == 2:
            modifier, pattern = node.args
            if modifier not in ("=", "^~", "~", "~*"):
                self.err(node, f'invalid location modifier "{modifier}"')
                return None
        else:
            modifier, pattern = "", node.args[0]
            # nginx accepts the modifier glued to the pattern: "location =/x".
            for m in ("^~", "~*", "=", "~"):
                if pattern.startswith(m) and len(pattern) > len(m):
                    modifier, pattern = m, pattern[len(m):]
                    break
            if pattern.startswith("@"):
                self.err(node, "named locations are not supported yet")
                return None
        if modifier in ("~", "~*"):
            try:
                re.compile(pattern, re.IGNORECASE if modifier == "~*" else 0)
            except re.error as exc:
                self.err(node, f'invalid regex "{pattern}": {exc}')
                return None
        values, blocks = self.collect(node.block, D.LOCATION)
        proxy_pass = ret = status_page = None
        for b in blocks:
            if b.name in ("stub_status", "metrics"):
                if b.args and b.args != ["on"]:
                    self.err(b, f'invalid parameter "{b.args[0]}" in "{b.name}" directive')
                status_page = b.name
                continue
            if b.name == "proxy_pass":
                if proxy_pass is not None:
                    self.err(b, '"proxy_pass" directive is duplicate')
                    continue
                proxy_pass = self.parse_proxy_pass(b, modifier, upstreams)
            elif b.name == "return":
                if ret is None:
                    ret = self.parse_return(b)
            elif b.name == "location":
                self.err(b, "nested locations are not supported yet")
            else:
                self.err(b, f'"{b.name}" directive is not allowed here')
        settings = Settings(self.merged(values, server_level, http_level))
        return Location(modifier, pattern, settings, proxy_pass, ret, node.file, node.line,
                        status_page)

    def parse_proxy_pass(self, node, modifier, upstreams):
        url = node.args[0]
        if "$" in url:
            self.err(node, "variables in proxy_pass are not supported yet")
            return None
        if url.startswith("https://"):
            self.err(node, "https upstreams are not supported yet")
            return None
        if not url.startswith("http://"):
            self.err(node, f'invalid URL prefix in "{url}"')
            return None
        rest = url[7:]
        hostport, slash, uri = rest.partition("/")
        uri = slash + uri if slash else None
        if not hostport:
            self.err(node, f'no host in "{url}"')
            return None
        if uri is not None and modifier in ("~", "~*"):
            self.err(node, '"proxy_pass" cannot have URI part in location given by regular '
                           'expression')
            return None
        named = upstreams.get(hostport)
        if named is not None and not named.implicit:
            return ProxyPass(hostport, uri, hostport, 80)
        host = _host_of(hostport)
        named = upstreams.get(host)
        if named is not None and not named.implicit:
            self.err(node, f'upstream "{host}" may not have port in proxy_pass')
            return None
        try:
            peers = self.resolve(hostport, node)
        except ConfigError as exc:
            self.errors.append(exc)
            return None
        port = peers[0][1]
        key = f"{host}:{port}"
        if key not in upstreams:
            upstreams[key] = Upstream(
                name=key,
                servers=tuple(UpstreamServer(h, p, 1, name) for h, p, name in peers),
                implicit=True,
            )
        # $proxy_host: the host, with the port unless it is 80 (nginx).
        proxy_host = host if port == 80 else key
        return ProxyPass(key, uri, proxy_host, port)
