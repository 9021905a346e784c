"""The configuration loader: fastgw.config.loader.load and the directive table behind it."""

import os

import pytest

from fastgw.config import directives as D
from fastgw.config.errors import ConfigError, ConfigErrors
from fastgw.config.loader import load
from fastgw.config.model import Config, HealthCheck

# -- helpers -------------------------------------------------------------------------------------


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load_text(tmp_path, text, extra=None, name="fastgw.conf"):
    """Write ``text`` to tmp_path/name and load it with tmp_path as the prefix."""
    path = write(tmp_path / name, text)
    return load(str(path), str(tmp_path), extra)


def errors_of(tmp_path, text, extra=None, name="fastgw.conf"):
    """The ConfigError list that loading ``text`` raises.

    The reader raises a single ConfigError for syntax errors (see
    test_syntax_errors_are_raised_as_config_errors), the builder ConfigErrors;
    both are accepted here so that each test checks its message and place.
    """
    path = write(tmp_path / name, text)
    with pytest.raises((ConfigErrors, ConfigError)) as info:
        load(str(path), str(tmp_path), extra)
    exc = info.value
    return exc.errors if isinstance(exc, ConfigErrors) else [exc]


def line_of(text, marker):
    """1-based number of the only line of ``text`` containing ``marker``."""
    hits = [i + 1 for i, line in enumerate(text.splitlines()) if marker in line]
    assert len(hits) == 1, (marker, hits)
    return hits[0]


def assert_one_error(errors, message, file, line):
    assert len(errors) == 1, [str(e) for e in errors]
    err = errors[0]
    assert (err.message, err.file, err.line) == (message, str(file), line)
    assert str(err) == f"{message} in {file}:{line}"


def conf(main="", events="", http="", server="", location="", upstream="", tail=""):
    """A whole valid configuration with text inserted at each level.

    One upstream "backend" (127.0.0.1:9001), one server on 8080 with
    ``location /`` proxying to it.
    """
    return "\n".join([
        "# test configuration",
        main,
        "events {",
        events,
        "}",
        "http {",
        http,
        "    upstream backend {",
        "        server 127.0.0.1:9001;",
        upstream,
        "    }",
        "    server {",
        "        listen 8080;",
        server,
        "        location / {",
        "            proxy_pass http://backend;",
        location,
        "        }",
        tail,
        "    }",
        "}",
        "",
    ])


def server0(config):
    return config.http.servers[0]


def location0(config):
    return config.http.servers[0].locations[0]


def settings(config):
    return location0(config).settings


def not_supported(name, issue):
    return f'"{name}" directive is not supported yet by this version of fastgw (planned in issue {issue})'


# -- a valid use of every implemented directive ------------------------------------------------

PREFIX = "@PREFIX@"  # replaced by the prefix in expected values

VALID = [
    # (directive, where, text, getter, expected)
    ("worker_processes", "main", "worker_processes 4;", lambda c: c.worker_processes, 4),
    ("pid", "main", "pid run/gw.pid;", lambda c: c.pid, PREFIX + "/run/gw.pid"),
    ("pid", "main", "pid /var/run/gw.pid;", lambda c: c.pid, "/var/run/gw.pid"),
    ("error_log", "main", "error_log logs/e.log warn;", lambda c: c.error_log,
     (PREFIX + "/logs/e.log", "warn")),
    ("error_log", "main", "error_log stderr;", lambda c: c.error_log, ("stderr", "error")),
    ("error_log", "location", "error_log /tmp/loc.log debug;", lambda c: settings(c).error_log,
     ("/tmp/loc.log", "debug")),
    ("worker_shutdown_timeout", "main", "worker_shutdown_timeout 10s;",
     lambda c: c.worker_shutdown_timeout, 10.0),
    ("worker_shutdown_timeout", "main", "worker_shutdown_timeout 1m30s;",
     lambda c: c.worker_shutdown_timeout, 90.0),
    ("worker_heartbeat_timeout", "main", "worker_heartbeat_timeout 2s;",
     lambda c: c.worker_heartbeat_timeout, 2.0),
    ("limit_req_zone", "http", "limit_req_zone $binary_remote_addr zone=one:1m rate=30r/m;",
     lambda c: (c.http.limit_zones["one"].size, c.http.limit_zones["one"].rate,
                c.http.limit_zones["one"].key.source), (1 << 20, 500, "$binary_remote_addr")),
    ("limit_req_zone", "http",
     "limit_req_zone $http_x_key zone=r:1m rate=5r/s redis=127.0.0.1:6380 redis_timeout=50ms "
     "redis_fail=closed;",
     lambda c: (c.http.limit_zones["r"].redis, c.http.limit_zones["r"].redis_timeout,
                c.http.limit_zones["r"].redis_fail), (("127.0.0.1", 6380), 0.05, "closed")),
    ("limit_conn_zone", "http", "limit_conn_zone $http_x_key zone=k:64k;",
     lambda c: (c.http.limit_zones["k"].kind, c.http.limit_zones["k"].size), ("conn", 65536)),
    ("limit_req", "http", "limit_req_zone $uri zone=one:1m rate=10r/s; "
     "limit_req zone=one burst=5 nodelay; limit_req zone=one delay=2;",
     lambda c: settings(c).limit_req, (("one", 5000, 1 << 60), ("one", 0, 2000))),
    ("limit_conn", "http", "limit_conn_zone $uri zone=c:1m; limit_conn c 3;",
     lambda c: settings(c).limit_conn, (("c", 3),)),
    ("limit_req_status", "location", "limit_req_status 503;",
     lambda c: settings(c).limit_req_status, 503),
    ("limit_req_log_level", "server", "limit_req_log_level warn;",
     lambda c: settings(c).limit_req_log_level, "warn"),
    ("limit_req_dry_run", "location", "limit_req_dry_run on;",
     lambda c: settings(c).limit_req_dry_run, True),
    ("limit_conn_status", "location", "limit_conn_status 503;",
     lambda c: settings(c).limit_conn_status, 503),
    ("limit_conn_log_level", "location", "limit_conn_log_level info;",
     lambda c: settings(c).limit_conn_log_level, "info"),
    ("limit_conn_dry_run", "location", "limit_conn_dry_run on;",
     lambda c: settings(c).limit_conn_dry_run, True),
    ("worker_rlimit_nofile", "main", "worker_rlimit_nofile 65536;",
     lambda c: c.worker_rlimit_nofile, 65536),
    ("worker_connections", "events", "worker_connections 4096;",
     lambda c: c.worker_connections, 4096),
    ("access_log", "http", "access_log logs/api.log;", lambda c: settings(c).access_log,
     ((PREFIX + "/logs/api.log", "combined", 65536, 1.0, None),)),
    ("access_log", "location", "access_log /var/log/a.log combined buffer=32k flush=5s;",
     lambda c: settings(c).access_log, (("/var/log/a.log", "combined", 32768, 5.0, None),)),
    ("access_log", "server", "access_log logs/s.log buffer=0;",
     lambda c: settings(c).access_log, ((PREFIX + "/logs/s.log", "combined", 0, 1.0, None),)),
    ("keepalive_timeout", "location", "keepalive_timeout 5s;",
     lambda c: settings(c).keepalive_timeout, 5.0),
    ("keepalive_timeout", "http", "keepalive_timeout 0;",
     lambda c: settings(c).keepalive_timeout, 0.0),
    ("keepalive_requests", "server", "keepalive_requests 50;",
     lambda c: settings(c).keepalive_requests, 50),
    ("client_header_timeout", "server", "client_header_timeout 500ms;",
     lambda c: server0(c).settings.client_header_timeout, 0.5),
    ("client_body_timeout", "location", "client_body_timeout 2m;",
     lambda c: settings(c).client_body_timeout, 120.0),
    ("send_timeout", "location", "send_timeout 1h;", lambda c: settings(c).send_timeout, 3600.0),
    ("client_max_body_size", "location", "client_max_body_size 10m;",
     lambda c: settings(c).client_max_body_size, 10 * 1024 * 1024),
    ("client_max_body_size", "http", "client_max_body_size 0;",
     lambda c: settings(c).client_max_body_size, 0),
    ("client_body_buffer_size", "location", "client_body_buffer_size 1m;",
     lambda c: settings(c).client_body_buffer_size, 1024 * 1024),
    ("client_body_temp_path", "http", "client_body_temp_path /var/tmp/fg 1 2;",
     lambda c: settings(c).client_body_temp_path, "/var/tmp/fg"),
    ("client_body_temp_path", "location", "client_body_temp_path tmp/body;",
     lambda c: settings(c).client_body_temp_path, PREFIX + "/tmp/body"),
    ("proxy_request_buffering", "location", "proxy_request_buffering off;",
     lambda c: settings(c).proxy_request_buffering, False),
    ("proxy_buffering", "server", "proxy_buffering off;",
     lambda c: settings(c).proxy_buffering, False),
    ("proxy_buffers", "location", "proxy_buffers 4 64k;",
     lambda c: settings(c).proxy_buffers, (4, 65536)),
    ("proxy_max_temp_file_size", "location", "proxy_max_temp_file_size 0;",
     lambda c: settings(c).proxy_max_temp_file_size, 0),
    ("proxy_temp_path", "location", "proxy_temp_path tmp/resp;",
     lambda c: settings(c).proxy_temp_path, PREFIX + "/tmp/resp"),
    ("large_client_header_buffers", "server", "large_client_header_buffers 8 16k;",
     lambda c: server0(c).settings.large_client_header_buffers, (8, 16384)),
    ("add_header", "location", "add_header X-Served-By fastgw;",
     lambda c: [(n, t.source, a) for n, t, a in settings(c).add_header],
     [("X-Served-By", "fastgw", False)]),
    ("add_header", "location", 'add_header X-Host "$host" always;',
     lambda c: [(n, t.source, a) for n, t, a in settings(c).add_header], [("X-Host", "$host", True)]),
    ("proxy_set_header", "location", "proxy_set_header X-Real-IP $remote_addr;",
     lambda c: [(n, t.source) for n, t in settings(c).proxy_set_header],
     [("X-Real-IP", "$remote_addr")]),
    ("proxy_http_version", "location", "proxy_http_version 1.0;",
     lambda c: settings(c).proxy_http_version, "1.0"),
    ("proxy_connect_timeout", "location", "proxy_connect_timeout 3s;",
     lambda c: settings(c).proxy_connect_timeout, 3.0),
    ("proxy_send_timeout", "location", "proxy_send_timeout 250ms;",
     lambda c: settings(c).proxy_send_timeout, 0.25),
    ("proxy_read_timeout", "location", "proxy_read_timeout 120;",
     lambda c: settings(c).proxy_read_timeout, 120.0),
    ("keepalive", "upstream", "keepalive 16;",
     lambda c: c.http.upstreams["backend"].keepalive, 16),
    ("keepalive_timeout@upstream", "upstream", "keepalive_timeout 30s;",
     lambda c: c.http.upstreams["backend"].keepalive_timeout, 30.0),
    ("keepalive_requests@upstream", "upstream", "keepalive_requests 100;",
     lambda c: c.http.upstreams["backend"].keepalive_requests, 100),
    ("queue", "upstream", "queue 100;",
     lambda c: (c.http.upstreams["backend"].queue, c.http.upstreams["backend"].queue_timeout),
     (100, 60.0)),
    ("queue", "upstream", "queue 8 timeout=500ms;",
     lambda c: (c.http.upstreams["backend"].queue, c.http.upstreams["backend"].queue_timeout),
     (8, 0.5)),
    ("priority", "location", "priority 3;", lambda c: settings(c).priority, 3),
    ("zone", "upstream", "zone backend 64k;", lambda c: c.http.upstreams["backend"].zone, "backend"),
    ("zone", "upstream", "zone shared;", lambda c: c.http.upstreams["backend"].zone, "shared"),
    ("priority", "http", "priority 15;", lambda c: settings(c).priority, 15),
    ("log_format", "http", "log_format main escape=json '{\"s\":$status,' '\"u\":\"$uri\"}';",
     lambda c: (c.http.log_formats["main"].escape, c.http.log_formats["main"].template.source),
     ("json", '{"s":$status,"u":"$uri"}')),
    ("access_log", "location", "access_log logs/x.log combined if=$arg_log;",
     lambda c: settings(c).access_log[0][4].source, "$arg_log"),
    ("proxy_next_upstream", "location", "", lambda c: settings(c).proxy_next_upstream,
     frozenset({"error", "timeout"})),
    ("proxy_next_upstream", "location", "proxy_next_upstream error http_503 non_idempotent;",
     lambda c: settings(c).proxy_next_upstream, frozenset({"error", "http_503", "non_idempotent"})),
    ("proxy_next_upstream", "http", "proxy_next_upstream off;",
     lambda c: settings(c).proxy_next_upstream, frozenset()),
    ("proxy_next_upstream_tries", "location", "",
     lambda c: settings(c).proxy_next_upstream_tries, 0),
    ("proxy_next_upstream_tries", "server", "proxy_next_upstream_tries 2;",
     lambda c: settings(c).proxy_next_upstream_tries, 2),
    ("proxy_next_upstream_timeout", "location", "proxy_next_upstream_timeout 1500ms;",
     lambda c: settings(c).proxy_next_upstream_timeout, 1.5),
    ("least_conn", "upstream", "least_conn;", lambda c: c.http.upstreams["backend"].balancer,
     ("least_conn",)),
    ("ip_hash", "upstream", "ip_hash;", lambda c: c.http.upstreams["backend"].balancer,
     ("ip_hash",)),
    ("hash", "upstream", "hash $request_uri consistent;",
     lambda c: (c.http.upstreams["backend"].balancer[0], c.http.upstreams["backend"].balancer[2]),
     ("hash", True)),
    ("hash", "upstream", "hash $remote_addr;",
     lambda c: c.http.upstreams["backend"].balancer[2], False),
    ("random", "upstream", "random two;", lambda c: c.http.upstreams["backend"].balancer,
     ("random", True)),
    ("random", "upstream", "", lambda c: c.http.upstreams["backend"].balancer,
     ("round_robin",)),
    ("health_check", "upstream", "zone backend; health_check;",
     lambda c: c.http.upstreams["backend"].health_check, HealthCheck()),
    ("health_check", "upstream",
     "zone backend; health_check interval=2s uri=/health fails=2 passes=3 match=200-204;",
     lambda c: c.http.upstreams["backend"].health_check,
     HealthCheck(2.0, "/health", 2, 3, (200, 204))),
]

# Implemented directives whose forms have their own tests below.
STRUCTURAL = {
    "events", "http", "upstream", "server", "location", "listen", "server_name", "proxy_pass",
    "return", "stub_status", "metrics", "map",
}


def _expand(value, prefix):
    if isinstance(value, str):
        return value.replace(PREFIX, prefix)
    if isinstance(value, tuple):
        return tuple(_expand(v, prefix) for v in value)
    return value


def test_every_implemented_directive_is_covered():
    implemented = {d.name for d in D.DIRECTIVES if not d.planned}
    assert implemented == {case[0] for case in VALID} | STRUCTURAL


@pytest.mark.parametrize("name, where, text, getter, expected", VALID,
                         ids=[f"{c[0]}:{c[2]}" for c in VALID])
def test_valid_directive(tmp_path, name, where, text, getter, expected):
    config = load_text(tmp_path, conf(**{where: text}))
    value = getter(config)
    assert value == _expand(expected, str(tmp_path))
    assert type(value) is type(expected)


def test_defaults(tmp_path):
    config = load_text(tmp_path, conf())
    p = str(tmp_path)
    assert isinstance(config, Config)
    assert config.worker_processes == 1
    assert config.pid == p + "/logs/fastgw.pid"
    assert config.error_log == (p + "/logs/error.log", "error")
    assert config.worker_shutdown_timeout == 30.0
    assert config.worker_rlimit_nofile is None
    assert config.worker_connections == 512
    expected = {
        "error_log": (p + "/logs/error.log", "error"),
        "access_log": ((p + "/logs/access.log", "combined", 65536, 1.0, None),),
        "keepalive_timeout": 75.0,
        "keepalive_requests": 1000,
        "client_header_timeout": 60.0,
        "client_body_timeout": 60.0,
        "send_timeout": 60.0,
        "client_max_body_size": 1024 * 1024,
        "client_body_buffer_size": 65536,
        "client_body_temp_path": p + "/client_body_temp",
        "proxy_request_buffering": True,
        "proxy_buffering": True,
        "proxy_buffers": (8, 16384),
        "proxy_max_temp_file_size": 1024 * 1024 * 1024,
        "proxy_temp_path": p + "/proxy_temp",
        "large_client_header_buffers": (4, 8192),
        "add_header": (),
        "proxy_set_header": (),
        "proxy_http_version": "1.1",
        "proxy_connect_timeout": 60.0,
        "proxy_send_timeout": 60.0,
        "proxy_read_timeout": 60.0,
        "proxy_next_upstream": frozenset({"error", "timeout"}),
        "proxy_next_upstream_tries": 0,
        "proxy_next_upstream_timeout": 0.0,
        "priority": 0,
        "limit_req": (),
        "limit_req_status": 429,
        "limit_req_log_level": "error",
        "limit_req_dry_run": False,
        "limit_conn": (),
        "limit_conn_status": 429,
        "limit_conn_log_level": "error",
        "limit_conn_dry_run": False,
    }
    assert settings(config).as_dict() == expected
    assert server0(config).settings.as_dict() == expected
    up = config.http.upstreams["backend"]
    assert (up.keepalive, up.keepalive_timeout, up.keepalive_requests) == (0, 60.0, 1000)
    assert up.implicit is False


@pytest.mark.parametrize("d", [d for d in D.DIRECTIVES if d.default is not None and not d.planned],
                         ids=lambda d: d.name)
def test_table_default_is_the_default_applied(tmp_path, d):
    """The default documented in the table (docs/directives.md) is what an unset directive gets."""
    config = load_text(tmp_path, conf())
    value = d.parse(d.default.split())
    if d.name.endswith("_temp_path"):
        value = os.path.join(str(tmp_path), value)
    if d.name in ("pid", "error_log"):
        value = os.path.join(str(tmp_path), value) if d.name == "pid" else \
            (os.path.join(str(tmp_path), value[0]), value[1])
    if d.name == "access_log":
        value = ((os.path.join(str(tmp_path), value[0]),) + value[1:],)
    where = {
        "worker_processes": lambda c: c.worker_processes,
        "pid": lambda c: c.pid,
        "error_log": lambda c: c.error_log,
        "worker_shutdown_timeout": lambda c: c.worker_shutdown_timeout,
        "worker_heartbeat_timeout": lambda c: c.worker_heartbeat_timeout,
        "worker_connections": lambda c: c.worker_connections,
        "keepalive": lambda c: c.http.upstreams["backend"].keepalive,
        "keepalive_timeout@upstream": lambda c: c.http.upstreams["backend"].keepalive_timeout,
        "keepalive_requests@upstream": lambda c: c.http.upstreams["backend"].keepalive_requests,
    }.get(d.name, lambda c: getattr(settings(c), d.name))
    assert where(config) == value


def test_worker_processes_auto_is_the_cpu_count(tmp_path):
    config = load_text(tmp_path, conf(main="worker_processes auto;"))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert config.worker_processes == cpus
    assert isinstance(config.worker_processes, int) and config.worker_processes >= 1


def test_relative_main_file_resolves_against_prefix(tmp_path):
    write(tmp_path / "conf" / "fastgw.conf", conf())
    config = load("conf/fastgw.conf", str(tmp_path))
    assert config.path == str(tmp_path / "conf" / "fastgw.conf")
    assert config.prefix == str(tmp_path)
    assert config.files == (str(tmp_path / "conf" / "fastgw.conf"),)


def test_missing_main_file(tmp_path):
    with pytest.raises(ConfigErrors) as info:
        load(str(tmp_path / "nope.conf"), str(tmp_path))
    [err] = info.value.errors
    assert err.message == f'open() "{tmp_path / "nope.conf"}" failed (2: No such file or directory)'


# -- planned directives -------------------------------------------------------------------------

def test_planned_directive_is_rejected(tmp_path, planned_directive):
    d = planned_directive
    text = conf(location=f"{d.name} x;  # planned")
    errors = errors_of(tmp_path, text)
    assert_one_error(errors, not_supported(d.name, d.planned), tmp_path / "fastgw.conf",
                     line_of(text, "# planned"))
    assert "not supported yet" in errors[0].message


def test_planned_directive_in_included_file(tmp_path, planned_directive):
    write(tmp_path / "cache.conf", "\n\nproxy_cache on;\n")
    text = conf(location="include cache.conf;")
    errors = errors_of(tmp_path, text)
    assert_one_error(errors, not_supported("proxy_cache", "#99"), tmp_path / "cache.conf", 3)


# -- errors, each at its file and line ----------------------------------------------------------

@pytest.mark.parametrize("where, statement, message", [
    ("location", "foo bar;", 'unknown directive "foo"'),
    ("main", "foo;", 'unknown directive "foo"'),
    ("events", "use epoll_x;", 'unknown directive "use"'),
    ("upstream", "bogus 1;", 'unknown directive "bogus"'),
    ("http", "proxy_pass http://backend;", '"proxy_pass" directive is not allowed here'),
    ("server", "proxy_pass http://backend;", '"proxy_pass" directive is not allowed here'),
    ("location", "listen 8081;", '"listen" directive is not allowed here'),
    ("http", "worker_connections 10;", '"worker_connections" directive is not allowed here'),
    ("location", "worker_processes 2;", '"worker_processes" directive is not allowed here'),
    ("main", "keepalive_timeout 5s;", '"keepalive_timeout" directive is not allowed here'),
    ("location", "client_header_timeout 5s;", '"client_header_timeout" directive is not allowed here'),
    ("location", "keepalive 4;", '"keepalive" directive is not allowed here'),
    ("location", "proxy_read_timeout;", 'invalid number of arguments in "proxy_read_timeout" directive'),
    ("location", "proxy_read_timeout 1s 2s;", 'invalid number of arguments in "proxy_read_timeout" directive'),
    ("main", "worker_processes;", 'invalid number of arguments in "worker_processes" directive'),
    pytest.param("server", "listen;", 'invalid number of arguments in "listen" directive'),
    pytest.param("server", "return;", 'invalid number of arguments in "return" directive'),
    ("location", "add_header X;", 'invalid number of arguments in "add_header" directive'),
    ("location", "return;", 'invalid number of arguments in "return" directive'),
    ("location", "client_max_body_size 1q;", 'invalid size "1q" in "client_max_body_size" directive'),
    ("location", "proxy_buffers 8;", 'invalid number of arguments in "proxy_buffers" directive'),
    ("location", "proxy_buffers 8 512;",
     'buffer size must be at least 1k in "proxy_buffers" directive'),
    ("location", "proxy_buffering maybe;",
     'invalid value "maybe", it must be "on" or "off" in "proxy_buffering" directive'),
    ("location", "proxy_temp_path t 3;",
     'invalid level "3": each must be 1 or 2 in "proxy_temp_path" directive'),
    ("location", "proxy_read_timeout 5x;", 'invalid time "5x" in "proxy_read_timeout" directive'),
    ("location", "proxy_connect_timeout -1;", 'invalid time "-1" in "proxy_connect_timeout" directive'),
    ("main", "worker_processes two;", 'invalid number "two" in "worker_processes" directive'),
    ("main", "worker_processes 0;", 'value "0" must be at least 1 in "worker_processes" directive'),
    ("main", "error_log logs/e.log loud;", 'invalid log level "loud" in "error_log" directive'),
    ("location", "proxy_http_version 2.0;",
     'invalid value "2.0", it must be "1.0" or "1.1" in "proxy_http_version" directive'),
    ("server", "large_client_header_buffers 4 100;",
     'buffer size must be at least 128 bytes in "large_client_header_buffers" directive'),
    ("location", "add_header X-A b sometimes;", 'invalid parameter "sometimes" in "add_header" directive'),
    ("location", 'add_header "X A" b;', 'invalid header name "X A" in "add_header" directive'),
    ("location", "access_log off logs/x.log;", '"off" takes no other parameters in "access_log" directive'),
    ("location", "access_log logs/x.log buffer=1q;", 'invalid size "1q" in "access_log" directive'),
    ("location", "access_log logs/x.log flush=5x;", 'invalid time "5x" in "access_log" directive'),
    ("location", "access_log logs/x.log main;", 'unknown log format "main"'),
    ("location", "access_log logs/x.log if=;", 'invalid parameter "if=" in "access_log" directive'),
    ("http", "log_format main escape=xml '$status';",
     'unknown log format escaping "xml" in "log_format" directive'),
    ("http", "log_format combined '$status';",
     'duplicate "log_format" name "combined" in "log_format" directive'),
    ("http", "log_format main '$nope';", 'unknown "nope" variable'),
    ("http", "log_format main '${status';", 'the closing bracket in "status" variable is missing'),
    ("http", "log_format main 'a${}b';", 'invalid variable name in "a${}b"'),
    ("http", "log_format a '$status';\n    log_format a '$uri';  # here",
     'duplicate "log_format" name "a"'),
    # nginx words an unknown variable without naming the directive.
    ("location", "proxy_set_header X-Foo $foo;", 'unknown "foo" variable'),
    ("location", "proxy_set_header X-Foo ${foo}bar;", 'unknown "foo" variable'),
    ("location", "proxy_read_timeout 1s;\n            proxy_read_timeout 2s;  # here",
     '"proxy_read_timeout" directive is duplicate'),
    ("main", "worker_processes 1;\nworker_processes 2;  # here", '"worker_processes" directive is duplicate'),
    ("upstream", "keepalive 1;\n        keepalive 2;  # here", '"keepalive" directive is duplicate'),
    ("events", "worker_connections 1;\nworker_connections 2;  # here",
     '"worker_connections" directive is duplicate'),
    ("location", "proxy_pass http://backend;  # here", '"proxy_pass" directive is duplicate'),
    ("tail", "location / {}  # here", 'duplicate location "/"'),
    ("http", "limit_req_zone $uri zone=one rate=10r/s;",
     'invalid zone size "one" in "limit_req_zone" directive'),
    ("http", "limit_req_zone $uri zone=one:4k rate=10r/s;",
     'zone "one" is too small in "limit_req_zone" directive'),
    ("http", "limit_req_zone $uri zone=one:1m rate=10r/h;",
     'invalid rate "10r/h" in "limit_req_zone" directive'),
    ("http", "limit_req_zone $uri rate=10r/s;",
     '"zone" parameter is required in "limit_req_zone" directive'),
    ("http", "limit_req_zone $uri zone=a:1m;\nlimit_req_zone $args zone=a:1m;  # here",
     'duplicate zone "a"'),
    ("location", "limit_req zone=nope;", 'no limit_req_zone "nope" is defined'),
    ("http", "limit_conn_zone $uri zone=c:1m;\nlimit_req zone=c;  # here",
     'zone "c" is a limit_conn_zone, not a limit_req_zone'),
    ("location", "limit_req burst=5;", '"zone" parameter is required in "limit_req" directive'),
    ("http", "limit_req_zone $uri zone=r:1m rate=1r/s redis=localhost;",
     'no port in "localhost" in "limit_req_zone" directive'),
    ("http", "limit_req_zone $uri zone=r:1m rate=1r/s redis=h:1 redis_fail=maybe;",
     'invalid redis_fail "maybe", it must be "open" or "closed" in "limit_req_zone" directive'),
    ("http", "limit_req_zone $uri zone=r:1m rate=1r/s redis_timeout=1s;",
     '"redis_timeout" and "redis_fail" need "redis=" in "limit_req_zone" directive'),
    ("location", "limit_req zone=a nodelay delay=2;",
     '"nodelay" and "delay=" cannot be used together in "limit_req" directive'),
    ("location", "limit_conn c 0;", 'invalid number of connections "0" in "limit_conn" directive'),
    ("location", "limit_req_status 200;",
     'value must be between 400 and 599 in "limit_req_status" directive'),
    ("location", "limit_conn_log_level debug;",
     'invalid value "debug" in "limit_conn_log_level" directive'),
    ("main", "worker_heartbeat_timeout 1s;",
     '"1s" is too short: at least 2s (heartbeats come each second) in "worker_heartbeat_timeout" '
     'directive'),
])
def test_error_at_file_and_line(tmp_path, where, statement, message):
    marked = statement if "# here" in statement else statement + "  # here"
    text = conf(**{where: marked})
    assert_one_error(errors_of(tmp_path, text), message, tmp_path / "fastgw.conf",
                     line_of(text, "# here"))


def test_bad_flag_is_an_invalid_value(tmp_path, monkeypatch):
    # A flag declared the way the table would (as the *_dry_run ones are), so that the
    # loader's report is checked apart from any one directive.
    from fastgw.config import units
    flag = D.Directive("x_flag", D.HSL, (1, 1), "test", lambda a: units.parse_flag(a[0]),
                       inherit=True)
    monkeypatch.setitem(D.BY_NAME, "x_flag", [flag])
    load_text(tmp_path, conf(location="x_flag off;"))
    text = conf(location="x_flag maybe;  # here")
    assert_one_error(errors_of(tmp_path, text),
                     'invalid value "maybe", it must be "on" or "off" in "x_flag" directive',
                     tmp_path / "fastgw.conf", line_of(text, "# here"))


def test_duplicate_events_and_http(tmp_path):
    text = conf(main="events {}") + "http {  # second http\n}\n"
    errors = errors_of(tmp_path, text)
    lines = text.splitlines()
    second_events = [i + 1 for i, l in enumerate(lines) if l.startswith("events")][1]
    assert [(e.message, e.line) for e in errors] == [
        ('"events" directive is duplicate', second_events),
        ('"http" directive is duplicate', line_of(text, "# second http")),
    ]


def test_listen_with_too_many_arguments_is_one_error(tmp_path):
    text = "events {}\nhttp {\n    server {\n        listen 80 a b c d e;\n    }\n}\n"
    assert_one_error(errors_of(tmp_path, text), 'invalid number of arguments in "listen" directive',
                     tmp_path / "fastgw.conf", 4)


def test_missing_semicolon_before_brace(tmp_path):
    text = "\n".join([
        "events {}",
        "http {",
        "    server {",
        "        listen 8080;",
        "        location / {",
        "            return 204",
        "        }",
        "    }",
        "}",
    ])
    assert_one_error(errors_of(tmp_path, text), 'unexpected "}"', tmp_path / "fastgw.conf", 7)


def test_unexpected_closing_brace_at_top(tmp_path):
    text = "events {}\nhttp {\n}\n}\n"
    assert_one_error(errors_of(tmp_path, text), 'unexpected "}"', tmp_path / "fastgw.conf", 4)


def test_unexpected_end_of_file(tmp_path):
    text = "events {}\nhttp {\n    server {\n        listen 8080;"
    assert_one_error(errors_of(tmp_path, text), 'unexpected end of file, expecting "}"',
                     tmp_path / "fastgw.conf", 4)


def test_unexpected_end_of_file_in_directive(tmp_path):
    text = "events {}\nworker_processes 2"
    assert_one_error(errors_of(tmp_path, text), 'unexpected end of file, expecting ";" or "}"',
                     tmp_path / "fastgw.conf", 2)


def test_block_without_brace_and_simple_directive_with_block(tmp_path):
    text = conf(location="proxy_read_timeout 5s { }  # here")
    assert_one_error(errors_of(tmp_path, text), 'directive "proxy_read_timeout" is not terminated by ";"',
                     tmp_path / "fastgw.conf", line_of(text, "# here"))
    errors = errors_of(tmp_path, "events;\n")
    assert (errors[0].message, errors[0].file, errors[0].line) == (
        'directive "events" has no opening "{"', str(tmp_path / "fastgw.conf"), 1)


def test_missing_events(tmp_path):
    errors = errors_of(tmp_path, "worker_processes 1;\nhttp {\n}\n")
    assert len(errors) == 1
    assert errors[0].message == 'no "events" section in configuration'
    # nginx names no file for this one: "no "events" section in configuration"
    assert (errors[0].file, errors[0].line) == (None, None)
    assert str(errors[0]) == 'no "events" section in configuration'


def test_unknown_variable_in_return(tmp_path):
    text = conf(tail='location /r { return 200 "$nosuch"; }  # here')
    assert_one_error(errors_of(tmp_path, text), 'unknown "nosuch" variable',
                     tmp_path / "fastgw.conf", line_of(text, "# here"))


def test_proxy_pass_with_uri_in_regex_location(tmp_path):
    text = conf(tail=r"location ~ \.php$ {  # here" "\n" "proxy_pass http://backend/app/; }")
    errors = errors_of(tmp_path, text)
    assert len(errors) == 1
    assert errors[0].message.startswith(
        '"proxy_pass" cannot have URI part in location given by regular expression')
    assert (errors[0].file, errors[0].line) == (str(tmp_path / "fastgw.conf"),
                                                line_of(text, "proxy_pass http://backend/app/"))
    # Without a URI part it is fine.
    config = load_text(tmp_path, conf(tail=r"location ~* \.php$ { proxy_pass http://backend; }"))
    assert server0(config).locations[1].proxy_pass.uri is None


@pytest.mark.parametrize("first, second", [
    ("location /a {}", "location /a {}"),
    ("location = /a {}", "location = /a {}"),
    ("location ^~ /a {}", "location ^~ /a {}"),
])
def test_duplicate_location(tmp_path, first, second):
    text = conf(tail=f"{first}\n{second}  # here")
    assert_one_error(errors_of(tmp_path, text), f'duplicate location "{first.split()[-2]}"',
                     tmp_path / "fastgw.conf", line_of(text, "# here"))


def test_identical_regex_locations_are_not_checked(tmp_path):
    """nginx checks "=" and prefix locations for duplicates, not regex ones (the first wins)."""
    config = load_text(tmp_path, conf(tail="location ~ ^/a { return 201; }\nlocation ~ ^/a { return 202; }"))
    assert [loc.ret.code for loc in server0(config).locations if loc.modifier == "~"] == [201, 202]


def test_same_pattern_with_different_match_kinds_is_not_duplicate(tmp_path):
    config = load_text(tmp_path, conf(tail="location = /a {}\nlocation /a {}\nlocation ~ /a {}\n"
                                           "location ~* /a {}"))
    assert [(l.modifier, l.pattern) for l in server0(config).locations] == [
        ("", "/"), ("=", "/a"), ("", "/a"), ("~", "/a"), ("~*", "/a")]


def test_prefix_and_caret_tilde_same_pattern_is_duplicate(tmp_path):
    text = conf(tail="location /a {}\nlocation ^~ /a {}  # here")
    assert_one_error(errors_of(tmp_path, text), 'duplicate location "/a"',
                     tmp_path / "fastgw.conf", line_of(text, "# here"))


def test_upstream_with_no_servers(tmp_path):
    text = conf(http="upstream empty {  # here\n    keepalive 2;\n}")
    assert_one_error(errors_of(tmp_path, text), 'no servers are inside upstream "empty"',
                     tmp_path / "fastgw.conf", line_of(text, "# here"))


def test_upstream_server_health_parameters(tmp_path):
    config = load_text(tmp_path, conf(upstream="server 127.0.0.1:9002 max_fails=3 fail_timeout=30s;\n"
                                               "server 127.0.0.1:9003 backup;\n"
                                               "server 127.0.0.1:9004 down max_fails=0;"))
    first, second, backup, down = config.http.upstreams["backend"].servers
    assert (first.max_fails, first.fail_timeout, first.max_fails_set) == (1, 10.0, False)
    assert (second.max_fails, second.fail_timeout, second.max_fails_set) == (3, 30.0, True)
    assert (backup.backup, backup.down) == (True, False)
    assert (down.down, down.max_fails) == (True, 0)


def test_upstream_slow_start_is_refused(tmp_path):
    text = conf(upstream="server 127.0.0.1:9002 slow_start=30s;  # here")
    assert_one_error(errors_of(tmp_path, text),
                     '"server" parameter "slow_start" is not supported by fastgw',
                     tmp_path / "fastgw.conf", line_of(text, "# here"))


@pytest.mark.parametrize("text, message", [
    ("least_conn;\nip_hash;  # here", 'load balancing method redefined by "ip_hash"'),
    ("hash $uri;\nserver 127.0.0.1:9002 backup;  # here",
     '"backup" cannot be used with "hash" balancing'),
    ("health_check;  # here", '"health_check" in upstream "backend" needs a "zone"'),
    ("zone backend; health_check interval=0;  # here", 'invalid interval "0"'),
    ("zone backend; health_check match=600;  # here", 'invalid match "600"'),
    ("zone backend; health_check uri=health;  # here", 'invalid uri "health"'),
    ("zone backend; health_check fails=0;  # here", 'must be at least 1'),
    ("hash $uri ring;  # here", 'invalid parameter "ring"'),
    ("random three;  # here", 'invalid parameter "three"'),
])
def test_upstream_balancing_errors(tmp_path, text, message):
    errors = errors_of(tmp_path, conf(upstream=text))
    lines = [e for e in errors if message in e.message]
    assert lines, [e.message for e in errors]
    # "backup" with hash is reported on the upstream line; the others on theirs.
    if "backup" not in message:
        assert lines[0].line == line_of(conf(upstream=text), "# here")


def test_all_down_is_accepted_all_backup_is_not(tmp_path):
    config = load_text(tmp_path, conf(upstream="server 127.0.0.1:9002 down;").replace(
        "server 127.0.0.1:9001;", "server 127.0.0.1:9001 down;"))
    assert all(s.down for s in config.http.upstreams["backend"].servers)
    text = conf(http="upstream spare {  # here\n    server 127.0.0.1:9003 backup;\n}")
    assert_one_error(errors_of(tmp_path, text), 'no servers but backup ones in upstream "spare"',
                     tmp_path / "fastgw.conf", line_of(text, "# here"))


def test_a_bad_server_line_is_the_only_error(tmp_path):
    text = conf(http="upstream other {\n    server 127.0.0.1:9003 max_fails=-1;  # here\n}",
                tail="location /o { proxy_pass http://other; }")
    assert_one_error(errors_of(tmp_path, text), 'invalid parameter "max_fails=-1"',
                     tmp_path / "fastgw.conf", line_of(text, "# here"))


def test_map_blocks(tmp_path):
    # The log format uses $kind before the map that defines it: nginx allows it.
    text = conf(http="log_format m '$kind';\n"
                     "map $http_user_agent $kind {\n"
                     "    default     other;\n"
                     "    curl/8      exact;\n"
                     "    ~*bot       robot-$uri;\n"
                     "    \\default  escaped;\n"
                     "    volatile;\n"
                     "}")
    m = load_text(tmp_path, text).http.maps["kind"]
    assert m.source.source == "$http_user_agent"
    assert set(m.exact) == {b"curl/8", b"default"}
    assert m.default.source == "other"
    assert [(rx.pattern, v.source) for rx, v in m.regexes] == [(b"bot", "robot-$uri")]
    assert m.regexes[0][0].search(b"GoogleBOT")


@pytest.mark.parametrize("block, message", [
    ("map $uri kind { default 1; }  # here", 'invalid variable name "kind"'),
    ("map $uri $status { default 1; }  # here", 'the duplicate "status" variable'),
    ("map $uri $k { default 1; }\nmap $args $k { default 2; }  # here", 'the duplicate "k" variable'),
    ("map $k $k { default 1; }  # here", 'the "k" variable maps itself'),
    ("map $uri $k {\n    ~[ 1;  # here\n}", 'invalid regex "["'),
    ("map $uri $k {\n    a b c;  # here\n}", "invalid number of the map parameters"),
    ("map $uri $k {\n    a $nope;  # here\n}", 'unknown "nope" variable'),
    ("map $nope $k { default 1; }  # here", 'unknown "nope" variable'),
])
def test_map_errors(tmp_path, block, message):
    text = conf(http=block)
    errors = errors_of(tmp_path, text)
    assert [e.message for e in errors] == [message] or any(message in e.message for e in errors), \
        [e.message for e in errors]
    assert any(e.line == line_of(text, "# here") for e in errors if message in e.message)


def test_proxy_next_upstream_errors(tmp_path):
    text = conf(location="proxy_next_upstream error bogus;  # here")
    assert_one_error(errors_of(tmp_path, text), 'invalid value "bogus" in "proxy_next_upstream" directive',
                     tmp_path / "fastgw.conf", line_of(text, "# here"))
    text = conf(location="proxy_next_upstream off error;  # here")
    assert_one_error(errors_of(tmp_path, text),
                     '"off" takes no other parameters in "proxy_next_upstream" directive',
                     tmp_path / "fastgw.conf", line_of(text, "# here"))


@pytest.mark.parametrize("param", ["weight=0", "weight=x", "weight=", "bogus", "weight=-1"])
def test_upstream_server_invalid_parameter(tmp_path, param):
    text = conf(upstream=f"server 127.0.0.1:9002 {param};  # here")
    assert_one_error(errors_of(tmp_path, text), f'invalid parameter "{param}"',
                     tmp_path / "fastgw.conf", line_of(text, "# here"))


def test_upstream_servers_and_weights(tmp_path):
    config = load_text(tmp_path, conf(upstream="server 127.0.0.2 weight=5;\nserver [::1]:9003;"))
    up = config.http.upstreams["backend"]
    assert [(s.host, s.port, s.weight) for s in up.servers] == [
        ("127.0.0.1", 9001, 1), ("127.0.0.2", 80, 5), ("::1", 9003, 1)]
    assert up.servers[0].address == "127.0.0.1:9001"


def test_upstream_defined_after_the_server_using_it(tmp_path):
    text = "\n".join([
        "events {}",
        "http {",
        "    server { listen 8080; location / { proxy_pass http://late; } }",
        "    upstream late { server 127.0.0.1:9005; }",
        "}",
    ])
    config = load_text(tmp_path, text)
    assert location0(config).proxy_pass.upstream == "late"
    assert config.http.upstreams["late"].servers[0].port == 9005


def test_duplicate_upstream(tmp_path):
    # The upstream inserted in http comes first; conf()'s own "backend" is the duplicate.
    text = conf(http="upstream backend { server 127.0.0.1:9009; }  # first")
    lines = text.splitlines()
    second = [i + 1 for i, l in enumerate(lines) if "upstream backend {" in l][1]
    assert_one_error(errors_of(tmp_path, text), 'duplicate upstream "backend"',
                     tmp_path / "fastgw.conf", second)


def test_include_of_missing_file(tmp_path):
    text = conf(http="include missing.conf;  # here")
    missing = tmp_path / "missing.conf"
    assert_one_error(errors_of(tmp_path, text),
                     f'open() "{missing}" failed (2: No such file or directory)',
                     tmp_path / "fastgw.conf", line_of(text, "# here"))


def test_error_inside_included_file(tmp_path):
    inc = write(tmp_path / "conf.d" / "api.conf", "# api\nproxy_read_timeout 5s;\nbogus 1;\n")
    text = conf(location="include conf.d/api.conf;")
    assert_one_error(errors_of(tmp_path, text), 'unknown directive "bogus"', inc, 3)


def test_syntax_error_inside_included_file(tmp_path):
    inc = write(tmp_path / "conf.d" / "api.conf", "\nproxy_read_timeout 5s;\n}\n")
    text = conf(location="include conf.d/api.conf;")
    assert_one_error(errors_of(tmp_path, text), 'unexpected "}"', inc, 3)


def test_error_in_nested_include(tmp_path):
    write(tmp_path / "a.conf", "include b.conf;\n")
    inner = write(tmp_path / "b.conf", "\n\nkeepalive_timeout 5q;\n")
    text = conf(http="include a.conf;")
    assert_one_error(errors_of(tmp_path, text), 'invalid time "5q" in "keepalive_timeout" directive',
                     inner, 3)


def test_several_errors_are_all_reported(tmp_path):
    text = "\n".join([
        "worker_processes many;",                 # 1
        "events {",                               # 2
        "    worker_connections 0;",              # 3
        "}",                                      # 4
        "http {",                                 # 5
        "    keepalive_timeout 5x;",              # 6
        "    server {",                           # 7
        "        listen 8080;",                   # 8
        "        proxy_pass http://backend;",     # 9
        "        location / {",                   # 10
        "            frobnicate;",                # 11
        "            client_max_body_size 1q;",   # 12
        "            proxy_pass http://backend/x;",
        "        }",                              # 14
        "    }",                                  # 15
        "    upstream backend {",                 # 16
        "        server 127.0.0.1:9001;",         # 17
        "        server 127.0.0.1:9002 slow_start=1s;",  # 18
        "    }",                                  # 19
        "}",                                      # 20
    ])
    errors = errors_of(tmp_path, text)
    path = str(tmp_path / "fastgw.conf")
    assert all(e.file == path for e in errors)
    found = sorted((e.line, e.message) for e in errors)
    assert found == [
        (1, 'invalid number "many" in "worker_processes" directive'),
        (3, 'value "0" must be at least 1 in "worker_connections" directive'),
        (6, 'invalid time "5x" in "keepalive_timeout" directive'),
        (9, '"proxy_pass" directive is not allowed here'),
        (11, 'unknown directive "frobnicate"'),
        (12, 'invalid size "1q" in "client_max_body_size" directive'),
        (18, '"server" parameter "slow_start" is not supported by fastgw'),
    ]


def test_errors_are_in_file_order(tmp_path):
    text = "\n".join([
        "events {}",
        "http {",
        "    server {",
        "        location / { bad1; }",
        "        listen 99999;",
        "        bad2;",
        "    }",
        "    upstream u { bad3; server 127.0.0.1; }",
        "}",
    ])
    errors = errors_of(tmp_path, text)
    assert [e.line for e in errors] == sorted(e.line for e in errors)


def test_syntax_errors_are_raised_as_config_errors(tmp_path):
    path = write(tmp_path / "fastgw.conf", "events {}\nhttp {\n")
    with pytest.raises(ConfigErrors):
        load(str(path), str(tmp_path))


# -- include ---------------------------------------------------------------------------------------

def test_include_glob_sorted_and_relative_to_main_file(tmp_path):
    confdir = tmp_path / "etc"
    # Created out of order; nginx includes glob matches sorted by name.
    write(confdir / "sites" / "b.conf", "server { listen 8082; }\n")
    write(confdir / "sites" / "10-a.conf", "server { listen 8080; }\n")
    write(confdir / "sites" / "9-a.conf", "server { listen 8081; }\n")
    write(confdir / "sites" / "ignored.txt", "this is not a config\n")
    (confdir / "sites" / "dir.conf").mkdir()  # a directory matching the glob is skipped
    main = write(confdir / "main.conf", "events {}\nhttp {\n    include sites/*.conf;\n}\n")
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    config = load(str(main), str(prefix))
    assert [s.listens[0].port for s in config.http.servers] == [8080, 8081, 8082]
    assert config.files == (str(main), str(confdir / "sites" / "10-a.conf"),
                            str(confdir / "sites" / "9-a.conf"), str(confdir / "sites" / "b.conf"))
    assert config.http.servers[0].file == str(confdir / "sites" / "10-a.conf")
    assert config.http.servers[0].listens[0].line == 1


def test_include_glob_with_no_match_is_allowed(tmp_path):
    config = load_text(tmp_path, conf(http="include conf.d/*.conf;", location="include none/*;"))
    assert len(config.http.servers) == 1


def test_nested_include_is_relative_to_main_file_directory(tmp_path):
    confdir = tmp_path / "etc"
    write(confdir / "main.conf", "events {}\nhttp {\n    include sites/site.conf;\n}\n")
    # In sites/site.conf, "snippets/..." is relative to etc/, not etc/sites/ (nginx's conf prefix).
    write(confdir / "sites" / "site.conf",
          "server {\n    listen 8080;\n    location / {\n        include snippets/t.conf;\n"
          "        return 204;\n    }\n}\n")
    write(confdir / "snippets" / "t.conf", "proxy_read_timeout 7s;\n")
    write(confdir / "sites" / "snippets" / "t.conf", "proxy_read_timeout 99s;\n")
    config = load(str(confdir / "main.conf"), str(tmp_path / "elsewhere"))
    assert settings(config).proxy_read_timeout == 7.0


def test_include_absolute_path(tmp_path):
    inc = write(tmp_path / "abs" / "t.conf", "keepalive_timeout 3s;\n")
    config = load_text(tmp_path, conf(http=f"include {inc};"))
    assert settings(config).keepalive_timeout == 3.0


def test_include_in_main_context(tmp_path):
    write(tmp_path / "main.d" / "w.conf", "worker_processes 6;\n")
    config = load_text(tmp_path, conf(main="include main.d/*.conf;"))
    assert config.worker_processes == 6


# -- quoting and escapes --------------------------------------------------------------------------

def test_quoted_strings_and_escapes(tmp_path):
    text = conf(tail="\n".join([
        r'location = /a { return 200 "a \"b\""; }',
        r"location = /b { return 200 'x'; }",
        r'location = /c { return 200 "1\t2\n3\\4"; }',
        r"location = /d { return 200 'single \'q\' \"d\"'; }",
        r'location = /e { return 200 "{ not a block; }"; }',
        r'location = /f { return 200 "# not a comment"; }  # a comment',
        r'location = /g { return 200 "\q\."; }',
        r'location = /h { return 200 a\"b; }',
        r'location ~ \.php$ { return 204; }',
        r'location ~ "^/x\d+$" { return 204; }',
    ]))
    config = load_text(tmp_path, text)
    locs = {l.pattern: l for l in server0(config).locations}
    assert locs["/a"].ret.text.source == 'a "b"'
    assert locs["/b"].ret.text.source == "x"
    assert locs["/c"].ret.text.source == "1\t2\n3\\4"
    assert locs["/d"].ret.text.source == "single 'q' \"d\""
    assert locs["/e"].ret.text.source == "{ not a block; }"
    assert locs["/f"].ret.text.source == "# not a comment"
    assert locs["/g"].ret.text.source == "\\q\\."          # unknown escapes keep the backslash
    assert locs["/h"].ret.text.source == 'a"b'             # escapes apply unquoted too
    assert locs[r"\.php$"].modifier == "~"                  # the regex keeps its backslash
    assert locs[r"^/x\d+$"].modifier == "~"


def test_quoted_empty_and_spaced_arguments(tmp_path):
    config = load_text(tmp_path, conf(server='server_name "" "a b" x;',
                                      location='proxy_set_header Accept-Encoding "";'))
    assert server0(config).names == ("", "a b", "x")
    [(name, tmpl)] = settings(config).proxy_set_header
    assert (name, tmpl.source, tmpl.static) == ("Accept-Encoding", "", b"")


def test_comments_are_ignored(tmp_path):
    text = conf(main="# worker_processes 9;\nworker_processes 2; # trailing comment ;{}")
    assert load_text(tmp_path, text).worker_processes == 2


# -- -g extra directives -------------------------------------------------------------------------

def test_extra_directives_applied(tmp_path):
    config = load_text(tmp_path, conf(), extra="worker_processes 3;")
    assert config.worker_processes == 3
    config = load_text(tmp_path, conf(), extra="worker_processes 3; pid /tmp/x.pid;")
    assert (config.worker_processes, config.pid) == (3, "/tmp/x.pid")


def test_extra_directive_error_names_command_line(tmp_path):
    errors = errors_of(tmp_path, conf(), extra="worker_processes 3; bogus 1;")
    assert len(errors) == 1
    assert errors[0].message == 'unknown directive "bogus"'
    assert errors[0].file == "command line"
    assert str(errors[0]).startswith('unknown directive "bogus" in command line')


def test_extra_directive_in_wrong_context(tmp_path):
    errors = errors_of(tmp_path, conf(), extra="keepalive_timeout 5s;")
    assert [(e.message, e.file) for e in errors] == [
        ('"keepalive_timeout" directive is not allowed here', "command line")]


def test_extra_directive_syntax_error_names_command_line(tmp_path):
    errors = errors_of(tmp_path, conf(), extra="worker_processes 3")
    assert len(errors) == 1
    assert errors[0].message == 'unexpected end of file, expecting ";" or "}"'
    assert errors[0].file == "command line"


def test_extra_directive_error_text_as_nginx(tmp_path):
    errors = errors_of(tmp_path, conf(), extra="bogus 1;")
    assert str(errors[0]) == 'unknown directive "bogus" in command line'


# -- inheritance ---------------------------------------------------------------------------------

def test_inheritance_http_server_location(tmp_path):
    text = "\n".join([
        "events {}",
        "http {",
        "    proxy_read_timeout 10s;",
        "    keepalive_timeout 20s;",
        "    client_max_body_size 2m;",
        "    server {",
        "        listen 8080;",
        "        keepalive_timeout 30s;",
        "        location /a { proxy_read_timeout 11s; return 204; }",
        "        location /b { keepalive_timeout 40s; return 204; }",
        "    }",
        "    server {",
        "        listen 8081;",
        "        location /c { return 204; }",
        "    }",
        "}",
    ])
    config = load_text(tmp_path, text)
    s1, s2 = config.http.servers
    a, b = s1.locations
    [c] = s2.locations
    assert (a.settings.proxy_read_timeout, b.settings.proxy_read_timeout,
            c.settings.proxy_read_timeout) == (11.0, 10.0, 10.0)
    assert (s1.settings.keepalive_timeout, a.settings.keepalive_timeout,
            b.settings.keepalive_timeout) == (30.0, 30.0, 40.0)
    assert (s2.settings.keepalive_timeout, c.settings.keepalive_timeout) == (20.0, 20.0)
    assert {a.settings.client_max_body_size, b.settings.client_max_body_size,
            c.settings.client_max_body_size} == {2 * 1024 * 1024}
    # what is not set anywhere has its default
    assert c.settings.proxy_connect_timeout == 60.0


def test_server_only_directives_reach_locations(tmp_path):
    config = load_text(tmp_path, conf(http="client_header_timeout 5s;",
                                      server="large_client_header_buffers 2 1k;"))
    assert settings(config).client_header_timeout == 5.0
    assert settings(config).large_client_header_buffers == (2, 1024)


def test_error_log_inherited_from_main(tmp_path):
    config = load_text(tmp_path, conf(main="error_log logs/main.log warn;",
                                      tail="location /x { error_log stderr info; }"))
    p = str(tmp_path)
    assert config.error_log == (p + "/logs/main.log", "warn")
    assert server0(config).settings.error_log == (p + "/logs/main.log", "warn")
    assert settings(config).error_log == (p + "/logs/main.log", "warn")
    assert server0(config).locations[1].settings.error_log == ("stderr", "info")


def _headers(s):
    return [(n, t.source) for n, t in s.proxy_set_header]


def _added(s):
    return [(n, t.source, a) for n, t, a in s.add_header]


def test_array_directives_inherit_as_a_whole(tmp_path):
    text = "\n".join([
        "events {}",
        "http {",
        "    proxy_set_header X-A 1;",
        "    proxy_set_header X-B 2;",
        "    add_header X-H h;",
        "    server {",
        "        listen 8080;",
        "        location /inherit { return 204; }",
        "        location /own {",
        "            proxy_set_header X-C 3;",
        "            return 204;",
        "        }",
        "        location /headers-only {",
        "            add_header X-L l always;",
        "            return 204;",
        "        }",
        "    }",
        "    server {",
        "        listen 8081;",
        "        proxy_set_header X-S s;",
        "        location /s { return 204; }",
        "        location /s2 { proxy_set_header X-T t; return 204; }",
        "    }",
        "}",
    ])
    config = load_text(tmp_path, text)
    s1, s2 = config.http.servers
    inherit, own, headers_only = s1.locations
    s, s2loc = s2.locations
    assert _headers(inherit.settings) == [("X-A", "1"), ("X-B", "2")]
    assert _added(inherit.settings) == [("X-H", "h", False)]
    # a level that sets any proxy_set_header does not inherit the parent's list
    assert _headers(own.settings) == [("X-C", "3")]
    assert _added(own.settings) == [("X-H", "h", False)]   # add_header is a separate array
    assert _added(headers_only.settings) == [("X-L", "l", True)]
    assert _headers(headers_only.settings) == [("X-A", "1"), ("X-B", "2")]
    assert _headers(s2.settings) == [("X-S", "s")]
    assert _headers(s.settings) == [("X-S", "s")]
    assert _headers(s2loc.settings) == [("X-T", "t")]
    assert _added(s.settings) == [("X-H", "h", False)]


# -- access_log ----------------------------------------------------------------------------------

def test_access_log_default_and_off(tmp_path):
    text = "\n".join([
        "events {}",
        "http {",
        "    server {",
        "        listen 8080;",
        "        location /default { return 204; }",
        "        location /off { access_log off; return 204; }",
        "    }",
        "    server {",
        "        listen 8081;",
        "        access_log off;",
        "        location /inherits-off { return 204; }",
        "        location /own { access_log logs/own.log; return 204; }",
        "    }",
        "}",
    ])
    config = load_text(tmp_path, text)
    p = str(tmp_path)
    s1, s2 = config.http.servers
    default, off = s1.locations
    inherits_off, own = s2.locations
    assert default.settings.access_log == ((p + "/logs/access.log", "combined", 65536, 1.0, None),)
    assert s1.settings.access_log == ((p + "/logs/access.log", "combined", 65536, 1.0, None),)
    assert off.settings.access_log == ()
    assert s2.settings.access_log == ()
    assert inherits_off.settings.access_log == ()
    assert own.settings.access_log == ((p + "/logs/own.log", "combined", 65536, 1.0, None),)


def test_access_log_several_and_array_rule(tmp_path):
    config = load_text(tmp_path, conf(
        http="access_log logs/a.log;\naccess_log /var/log/b.log combined buffer=4k;",
        tail="location /x { access_log logs/x.log flush=2s; return 204; }\n"
             "location /y { access_log logs/y.log; access_log off; return 204; }"))
    p = str(tmp_path)
    assert settings(config).access_log == (
        (p + "/logs/a.log", "combined", 65536, 1.0, None), ("/var/log/b.log", "combined", 4096, 1.0, None))
    x, y = server0(config).locations[1:]
    assert x.settings.access_log == ((p + "/logs/x.log", "combined", 65536, 2.0, None),)
    assert y.settings.access_log == ()  # "off" at a level wins, as in nginx


# -- proxy_pass ------------------------------------------------------------------------------------

def test_proxy_pass_to_upstream(tmp_path):
    config = load_text(tmp_path, conf(tail="location /v1/ { proxy_pass http://backend/v2/; }"))
    root, v1 = server0(config).locations
    assert root.proxy_pass.upstream == "backend"
    assert root.proxy_pass.proxy_host == "backend"
    assert root.proxy_pass.uri is None
    assert v1.proxy_pass.upstream == "backend"
    assert v1.proxy_pass.uri == "/v2/"
    assert set(config.http.upstreams) == {"backend"}


def test_proxy_pass_to_address_makes_implicit_upstream(tmp_path):
    config = load_text(tmp_path, conf(tail="location /api/ { proxy_pass http://127.0.0.1:9001; }\n"
                                           "location /v1/ { proxy_pass http://127.0.0.1:9002/v1/; }"))
    api, v1 = server0(config).locations[1:]
    assert api.proxy_pass.upstream == "127.0.0.1:9001"
    assert api.proxy_pass.uri is None
    assert api.proxy_pass.proxy_host == "127.0.0.1:9001"
    assert api.proxy_pass.proxy_port == 9001
    up = config.http.upstreams["127.0.0.1:9001"]
    assert up.implicit is True
    assert up.keepalive == 0
    assert [(s.host, s.port, s.weight) for s in up.servers] == [("127.0.0.1", 9001, 1)]
    assert v1.proxy_pass.upstream == "127.0.0.1:9002"
    assert v1.proxy_pass.uri == "/v1/"
    assert config.http.upstreams["127.0.0.1:9002"].servers[0].port == 9002


def test_proxy_pass_default_port(tmp_path):
    config = load_text(tmp_path, conf(tail="location /a { proxy_pass http://127.0.0.1; }"))
    pp = server0(config).locations[1].proxy_pass
    assert pp.upstream == "127.0.0.1:80"
    assert (pp.proxy_host, pp.proxy_port) == ("127.0.0.1", 80)
    assert config.http.upstreams["127.0.0.1:80"].servers[0].port == 80


def test_proxy_pass_hostname_resolves(tmp_path):
    config = load_text(tmp_path, conf(tail="location /a { proxy_pass http://localhost:9001; }"))
    pp = server0(config).locations[1].proxy_pass
    assert pp.upstream == "localhost:9001"
    assert (pp.proxy_host, pp.proxy_port) == ("localhost:9001", 9001)
    servers = config.http.upstreams["localhost:9001"].servers
    assert servers
    assert {s.host for s in servers} <= {"127.0.0.1", "::1"}
    assert all(s.port == 9001 for s in servers)
    assert {s.address for s in servers} <= {"127.0.0.1:9001", "[::1]:9001"}


@pytest.mark.parametrize("url, message", [
    ("ftp://127.0.0.1", 'invalid URL prefix in "ftp://127.0.0.1"'),
    ("127.0.0.1:9001", 'invalid URL prefix in "127.0.0.1:9001"'),
    ("http://", 'no host in "http://"'),
    ("http:///x", 'no host in "http:///x"'),
    ("http://backend:8080", 'upstream "backend" may not have port in proxy_pass'),
    ("http://no-such-host.invalid", 'host not found in upstream "no-such-host.invalid:80"'),
    ("http://127.0.0.1:99999", 'invalid port in "127.0.0.1:99999"'),
])
def test_proxy_pass_errors(tmp_path, url, message):
    text = conf(tail=f"location /bad {{ proxy_pass {url}; }}  # here")
    errors = errors_of(tmp_path, text)
    assert len(errors) == 1, [str(e) for e in errors]
    assert errors[0].message.startswith(message)
    assert (errors[0].file, errors[0].line) == (str(tmp_path / "fastgw.conf"), line_of(text, "# here"))


def test_proxy_pass_same_address_twice(tmp_path):
    config = load_text(tmp_path, conf(tail="\n".join([
        "location /a { proxy_pass http://127.0.0.1:9001; }",
        "location /b { proxy_pass http://127.0.0.1:9001/b/; }",
        "location /c { proxy_pass http://127.0.0.1; }",
        "location /d { proxy_pass http://127.0.0.1:80/d/; }",
    ])))
    a, b, c, d = server0(config).locations[1:]
    assert (a.proxy_pass.proxy_host, a.proxy_pass.proxy_port) == ("127.0.0.1:9001", 9001)
    assert (b.proxy_pass.proxy_host, b.proxy_pass.proxy_port) == ("127.0.0.1:9001", 9001)
    assert (c.proxy_pass.proxy_host, c.proxy_pass.proxy_port) == ("127.0.0.1", 80)
    assert (d.proxy_pass.proxy_host, d.proxy_pass.proxy_port) == ("127.0.0.1", 80)


def test_proxy_pass_ipv6_without_port(tmp_path):
    config = load_text(tmp_path, conf(tail="location /a { proxy_pass http://[::1]; }"))
    pp = server0(config).locations[1].proxy_pass
    assert pp.upstream == "[::1]:80"
    assert (pp.proxy_host, pp.proxy_port) == ("[::1]", 80)


def test_proxy_pass_ipv6_with_port(tmp_path):
    config = load_text(tmp_path, conf(tail="location /a { proxy_pass http://[::1]:9001/x; }"))
    pp = server0(config).locations[1].proxy_pass
    assert (pp.upstream, pp.uri, pp.proxy_host, pp.proxy_port) == ("[::1]:9001", "/x", "[::1]:9001", 9001)
    assert [(s.host, s.port) for s in config.http.upstreams["[::1]:9001"].servers] == [("::1", 9001)]


# -- listen ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, host, port, default_server, backlog", [
    ("8080", "0.0.0.0", 8080, False, 511),
    ("127.0.0.1:8080", "127.0.0.1", 8080, False, 511),
    ("*:8080", "0.0.0.0", 8080, False, 511),
    ("[::1]:8080", "::1", 8080, False, 511),
    ("[::]:8080", "::", 8080, False, 511),
    ("8080 default_server", "0.0.0.0", 8080, True, 511),
    ("8080 default", "0.0.0.0", 8080, True, 511),
    ("8080 backlog=1024", "0.0.0.0", 8080, False, 1024),
    ("127.0.0.1:8080 default_server backlog=16 reuseport", "127.0.0.1", 8080, True, 16),
])
def test_listen_forms(tmp_path, args, host, port, default_server, backlog):
    text = "events {}\nhttp {\n    server {\n        listen " + args + ";\n    }\n}\n"
    config = load_text(tmp_path, text)
    [listen] = server0(config).listens
    assert (listen.host, listen.port, listen.default_server, listen.backlog) == (
        host, port, default_server, backlog)
    assert (listen.file, listen.line) == (str(tmp_path / "fastgw.conf"), 4)
    assert config.listens() == [listen]


@pytest.mark.parametrize("args, message", [
    ("0", 'invalid port in "0" in "listen" directive'),
    ("65536", 'invalid port in "65536" in "listen" directive'),
    ("127.0.0.1:http", 'invalid port in "127.0.0.1:http" in "listen" directive'),
    ("127.0.0.1:", 'invalid port in "127.0.0.1:" in "listen" directive'),
    (":8080", 'invalid host in ":8080" in "listen" directive'),
    ("8080 backlog=x", 'invalid backlog "x"'),
    ("8080 backlog=0", 'invalid backlog "0"'),
    ("8080 ssl", 'invalid parameter "ssl"'),
])
def test_listen_errors(tmp_path, args, message):
    text = "events {}\nhttp {\n    server {\n        listen " + args + ";\n    }\n}\n"
    errors = errors_of(tmp_path, text)
    assert (errors[0].message, errors[0].file, errors[0].line) == (
        message, str(tmp_path / "fastgw.conf"), 4)


def test_several_servers_and_listens(tmp_path):
    text = "\n".join([
        "events {}",
        "http {",
        "    server { listen 8080; listen 127.0.0.1:8081; server_name a.example.com; }",
        "    server { listen 8080 default_server; server_name b.example.com *.b.example.com; }",
        "}",
    ])
    config = load_text(tmp_path, text)
    a, b = config.http.servers
    assert [l.address for l in a.listens] == [("0.0.0.0", 8080), ("127.0.0.1", 8081)]
    assert a.names == ("a.example.com",)
    assert b.names == ("b.example.com", "*.b.example.com")
    assert b.listens[0].default_server is True
    # distinct addresses in file order, the first listen of each wins
    assert [l.address for l in config.listens()] == [("0.0.0.0", 8080), ("127.0.0.1", 8081)]
    assert config.listens()[0].default_server is False


def test_server_without_listen_is_an_error(tmp_path):
    text = "events {}\nhttp {\n    server {\n        server_name x;\n    }\n}\n"
    assert_one_error(errors_of(tmp_path, text), 'no "listen" directive in server',
                     tmp_path / "fastgw.conf", 3)


def test_listen_address_without_port_is_port_80(tmp_path):
    text = "events {}\nhttp {\n    server {\n        listen 127.0.0.1;\n    }\n}\n"
    [listen] = server0(load_text(tmp_path, text)).listens
    assert (listen.host, listen.port) == ("127.0.0.1", 80)


def test_duplicate_listen_in_one_server(tmp_path):
    text = "events {}\nhttp {\n    server {\n        listen 8080;\n        listen 8080;\n    }\n}\n"
    errors = errors_of(tmp_path, text)
    assert [(e.file, e.line) for e in errors] == [(str(tmp_path / "fastgw.conf"), 5)]
    assert "duplicate listen" in errors[0].message


def test_two_default_servers_on_one_address(tmp_path):
    text = "\n".join([
        "events {}",
        "http {",
        "    server { listen 8080 default_server; }",
        "    server { listen 8080 default_server; }",
        "}",
    ])
    errors = errors_of(tmp_path, text)
    assert [(e.file, e.line) for e in errors] == [(str(tmp_path / "fastgw.conf"), 4)]
    assert "duplicate default server" in errors[0].message


# -- server_name ------------------------------------------------------------------------------------

def test_server_name_forms(tmp_path):
    config = load_text(tmp_path, conf(server=r'server_name example.com *.example.com www.example.* '
                                             r'.example.org "~^(?P<n>\w+)\.example\.net$";'
                                             "\nserver_name second.example.com;"))
    assert server0(config).names == ("example.com", "*.example.com", "www.example.*",
                                     ".example.org", r"~^(?P<n>\w+)\.example\.net$",
                                     "second.example.com")


def test_server_name_bad_regex_line(tmp_path):
    text = conf(server='server_name ok "~(";  # here')
    errors = errors_of(tmp_path, text)
    assert len(errors) == 1
    assert errors[0].message.startswith('invalid regex "("')
    assert errors[0].line == line_of(text, "# here")


def test_location_bad_regex(tmp_path):
    text = conf(tail='location ~ "(" { return 204; }  # here')
    errors = errors_of(tmp_path, text)
    assert len(errors) == 1
    assert errors[0].message.startswith('invalid regex "("')
    assert errors[0].line == line_of(text, "# here")


def test_location_modifiers(tmp_path):
    config = load_text(tmp_path, conf(tail="location = /x { return 204; }\nlocation =/y { return 204; }\n"
                                           "location ^~ /s/ { return 204; }\n"
                                           "location ~* \\.JPG$ { return 204; }"))
    assert [(l.modifier, l.pattern) for l in server0(config).locations] == [
        ("", "/"), ("=", "/x"), ("=", "/y"), ("^~", "/s/"), ("~*", r"\.JPG$")]
    text = conf(tail="location ~~ /x { return 204; }  # here")
    assert_one_error(errors_of(tmp_path, text), 'invalid location modifier "~~"',
                     tmp_path / "fastgw.conf", line_of(text, "# here"))


# -- return ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, code, source", [
    ("204", 204, None),
    ('200 "text $host"', 200, "text $host"),
    ("404 'not here'", 404, "not here"),
    ("301 http://x/", 301, "http://x/"),
    ("308 https://example.com$request_uri", 308, "https://example.com$request_uri"),
    ("https://x/", 302, "https://x/"),
    ("http://x/", 302, "http://x/"),
    ("$scheme://x$request_uri", 302, "$scheme://x$request_uri"),
    ("999", 999, None),
])
def test_return_forms(tmp_path, args, code, source):
    config = load_text(tmp_path, conf(tail=f"location = /r {{ return {args}; }}"))
    ret = server0(config).locations[1].ret
    assert ret.code == code
    if source is None:
        assert ret.text is None
    else:
        assert ret.text.source == source


def test_return_text_template(tmp_path):
    config = load_text(tmp_path, conf(tail='location = /r { return 200 "text $host"; }'))
    tmpl = server0(config).locations[1].ret.text
    assert tmpl.static is None
    assert tmpl.parts[0] == b"text "
    assert len(tmpl.parts) == 2 and not isinstance(tmpl.parts[1], bytes)
    config = load_text(tmp_path, conf(tail='location = /r { return 200 "plain"; }'))
    assert server0(config).locations[1].ret.text.static == b"plain"


def test_return_in_server(tmp_path):
    config = load_text(tmp_path, conf(server="return 301 https://example.com$request_uri;"))
    assert server0(config).ret.code == 301
    assert server0(config).ret.text.source == "https://example.com$request_uri"


@pytest.mark.parametrize("args, message", [
    ("1000", 'invalid return code "1000"'),
    ("abc", 'invalid return code "abc"'),
    ("-1", 'invalid return code "-1"'),
    ("ftp://x/", 'invalid return code "ftp://x/"'),
    ("https://x/ extra", 'invalid return code "https://x/"'),
])
def test_return_errors(tmp_path, args, message):
    text = conf(tail=f"location = /r {{ return {args}; }}  # here")
    assert_one_error(errors_of(tmp_path, text), message, tmp_path / "fastgw.conf",
                     line_of(text, "# here"))


def test_first_return_wins(tmp_path):
    config = load_text(tmp_path, conf(tail="location = /r { return 200; return 404; }"))
    assert server0(config).locations[1].ret.code == 200


@pytest.mark.parametrize("text, message", [
    ("queue 5 wait=1s;", 'invalid parameter "wait=1s" in "queue" directive'),
    ("queue 5 timeout=0;", 'invalid timeout "0" in "queue" directive'),
    ("queue x;", 'invalid number "x" in "queue" directive'),
])
def test_queue_errors(tmp_path, text, message):
    errors = errors_of(tmp_path, conf(upstream=text + "  # here"))
    assert [e.message for e in errors] == [message]


def test_priority_range(tmp_path):
    errors = errors_of(tmp_path, conf(location="priority 16;"))
    assert [e.message for e in errors] == ['priority "16" must be between 0 and 15 in "priority" directive']
    assert settings(load_text(tmp_path, conf())).priority == 0


def test_upstream_server_max_conns(tmp_path):
    config = load_text(tmp_path, conf(upstream="server 127.0.0.1:9002 max_conns=2 weight=3;"))
    servers = config.http.upstreams["backend"].servers
    assert [(s.port, s.max_conns, s.weight) for s in servers][-1] == (9002, 2, 3)
    assert servers[0].max_conns == 0
    errors = errors_of(tmp_path, conf(upstream="server 127.0.0.1:9002 max_conns=-1;"))
    assert [e.message for e in errors] == ['invalid parameter "max_conns=-1"']


def test_status_pages(tmp_path):
    config = load_text(tmp_path, conf(tail="location = /s { stub_status; }\nlocation = /m { metrics; }"))
    pages = {loc.pattern: loc.status_page for loc in server0(config).locations}
    assert pages["/s"] == "stub_status" and pages["/m"] == "metrics"
    errors = errors_of(tmp_path, conf(tail="location = /s { stub_status yes; }"))
    assert [e.message for e in errors] == ['invalid parameter "yes" in "stub_status" directive']
    errors = errors_of(tmp_path, conf(server="stub_status;"))
    assert [e.message for e in errors] == ['"stub_status" directive is not allowed here']


def test_zone_errors(tmp_path):
    errors = errors_of(tmp_path, conf(upstream="zone bad/name;"))
    assert [e.message for e in errors] == ['invalid zone name "bad/name" in "zone" directive']
    errors = errors_of(tmp_path, conf(upstream="zone z 1q;"))
    assert [e.message for e in errors] == ['invalid size "1q" in "zone" directive']
