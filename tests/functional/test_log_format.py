"""log_format and access_log through real processes (issue 8, first part)."""

import http.client
import json
import re
import signal
import socket
import time

from fastgw.testing.harness import free_port, wait_until


def conf(backend, formats, logs, upstream_extra="", workers=1):
    return f"""
        worker_processes {workers};
        error_log logs/error.log info;
        events {{ worker_connections 256; }}
        http {{
            {formats}
            upstream app {{ server 127.0.0.1:{backend}; {upstream_extra} keepalive 4; }}
            server {{
                listen 127.0.0.1:{{port}};
                {logs}
                location / {{ proxy_pass http://app; }}
                location /quiet {{ proxy_pass http://app; access_log off; }}
            }}
        }}"""


def get(port, path, headers=None, method="GET", body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, path, body=body, headers=dict(headers or {}, Connection="close"))
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def lines(gw, name):
    try:
        with open(gw.path("logs", name), encoding="latin-1") as fh:
            return fh.read().splitlines()
    except FileNotFoundError:
        return []


def test_custom_format_has_exact_values(gateway, backend):
    fmt = ("log_format main '$status $body_bytes_sent $request_method $uri $args '"
           " '$upstream_addr $upstream_status $http_x_trace $request_time $queue_time';")
    gw = gateway(conf(backend, fmt, "access_log logs/main.log main buffer=0;"))
    status, body = get(gw.port, "/item?size=123", {"X-Trace": "t-1"})
    assert status == 200 and len(body) == 123
    line = wait_until(lambda: lines(gw, "main.log"), timeout=5, message="the line")[0]
    parts = line.split(" ")
    assert parts[:8] == ["200", "123", "GET", "/item", "size=123", f"127.0.0.1:{backend}",
                         "200", "t-1"]
    assert 0 <= float(parts[8]) < 2 and parts[9] == "0.000"


def test_empty_values_are_a_dash_and_upstream_vars_absent_for_local_answers(gateway, backend):
    fmt = "log_format f '[$http_referer] [$args] [$upstream_addr] [$upstream_status]';"
    gw = gateway(conf(backend, fmt, "access_log logs/f.log f buffer=0;\n"
                                    "location = /local { return 204; }"))
    get(gw.port, "/local")
    line = wait_until(lambda: lines(gw, "f.log"), timeout=5, message="the line")[0]
    assert line == "[-] [-] [-] [-]"


def test_upstream_vars_list_every_peer_tried(gateway, make_backend):
    a = make_backend()
    dead = free_port()
    fmt = ("log_format up '$upstream_addr|$upstream_status|$upstream_connect_time|"
           "$upstream_header_time|$upstream_response_time';")
    gw = gateway(conf(0, fmt, "access_log logs/up.log up buffer=0;").replace(
        "server 127.0.0.1:0;", f"server 127.0.0.1:{dead}; server 127.0.0.1:{a};"))
    seen = set()
    for _ in range(2):  # round robin: one of the two requests tries the dead peer first
        assert get(gw.port, "/")[0] == 200
    for line in wait_until(lambda: len(lines(gw, "up.log")) == 2 and lines(gw, "up.log"),
                           timeout=5, message="two lines"):
        addr, status, connect, header, response = line.split("|")
        seen.add(addr)
        if "," in addr:
            assert addr == f"127.0.0.1:{dead}, 127.0.0.1:{a}"
            assert status == "502, 200"
            assert connect.startswith("-, ") and header.startswith("-, ")
            assert len(response.split(", ")) == 2
    assert f"127.0.0.1:{dead}, 127.0.0.1:{a}" in seen


def test_json_escaping_of_a_hostile_user_agent(gateway, backend):
    fmt = "log_format js escape=json '{\"ua\":\"$http_user_agent\",\"ref\":\"$http_referer\"}';"
    gw = gateway(conf(backend, fmt, "access_log logs/js.log js buffer=0;"))
    # Quotes, a backslash, a tab and a non-ASCII byte: what a header may carry.
    hostile = 'evil"},{"admin":true\\ \t\xe9'
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    c.putrequest("GET", "/", skip_accept_encoding=True)
    c.putheader("User-Agent", hostile.encode("latin-1"))
    c.putheader("Connection", "close")
    c.endheaders()
    c.getresponse().read()
    c.close()
    line = wait_until(lambda: lines(gw, "js.log"), timeout=5, message="the line")[0]
    record = json.loads(line)
    assert record == {"ua": hostile, "ref": ""}


def test_default_escaping_keeps_one_line_per_request(gateway, backend):
    fmt = "log_format d '\"$http_x_note\"';"
    gw = gateway(conf(backend, fmt, "access_log logs/d.log d buffer=0;"))
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    c.putrequest("GET", "/")
    c.putheader("X-Note", b'a"b\\c\xe9')
    c.putheader("Connection", "close")
    c.endheaders()
    c.getresponse().read()
    line = wait_until(lambda: lines(gw, "d.log"), timeout=5, message="the line")[0]
    assert line == '"a\\x22b\\x5Cc\\xE9"'


def test_access_log_if_and_off(gateway, backend):
    fmt = "log_format s '$uri';"
    gw = gateway(conf(backend, fmt, "access_log logs/s.log s buffer=0 if=$arg_log;"))
    for path in ("/a?log=1", "/b", "/c?log=0", "/d?log=yes", "/quiet?log=1"):
        assert get(gw.port, path)[0] == 200
    wait_until(lambda: len(lines(gw, "s.log")) >= 2, timeout=5, message="two lines")
    time.sleep(0.3)
    assert lines(gw, "s.log") == ["/a", "/d"]


def test_several_logs_at_one_level_and_buffered_flush(gateway, backend):
    fmt = "log_format s '$status $uri';"
    gw = gateway(conf(backend, fmt, "access_log logs/all.log combined buffer=64k flush=1s;\n"
                                    "access_log logs/short.log s buffer=64k flush=30s;"))
    get(gw.port, "/one")
    # The combined log flushes within its 1 s interval; the other waits.
    wait_until(lambda: lines(gw, "all.log"), timeout=5, message="the flush interval")
    assert lines(gw, "short.log") == []
    assert '"GET /one HTTP/1.1" 200' in lines(gw, "all.log")[0]
    # QUIT flushes what is left.
    gw.kill(signal.SIGQUIT)
    gw.proc.wait(15)
    assert lines(gw, "short.log") == ["200 /one"]


def test_error_log_levels_per_location(gateway):
    dead = free_port()
    gw = gateway(f"""
        error_log logs/error.log notice;
        events {{ }}
        http {{
            access_log off;
            upstream gone {{ server 127.0.0.1:{dead}; }}
            server {{
                listen 127.0.0.1:{{port}};
                location /quiet {{ proxy_pass http://gone; error_log logs/quiet.log crit; }}
                location /loud {{ proxy_pass http://gone; error_log logs/loud.log info; }}
                location / {{ proxy_pass http://gone; }}
            }}
        }}""")
    for path in ("/quiet", "/loud", "/main"):
        assert get(gw.port, path)[0] == 502
    time.sleep(0.2)
    # connect() failed is an [error] line: below crit, within info and notice.
    assert lines(gw, "quiet.log") == []
    loud = lines(gw, "loud.log")
    assert len(loud) == 1 and "[error]" in loud[0] and '"GET /loud HTTP/1.1"' in loud[0]
    assert re.match(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[error\] \d+#\d+: \*\d+ connect\(\) failed",
                    loud[0])
    main = [line for line in lines(gw, "error.log") if "connect() failed" in line]
    assert len(main) == 1 and '"GET /main HTTP/1.1"' in main[0]


def test_map_drives_what_is_logged_and_how(gateway, backend):
    formats = ("map $status $loggable { ~^[23] 0; default 1; }\n"
               "map $http_user_agent $client { default human; ~*bot robot-$uri; curl/8 tool; }\n"
               "log_format m '$status $client';")
    gw = gateway(conf(backend, formats, "access_log logs/m.log m buffer=0 if=$loggable;"))
    assert get(gw.port, "/ok")[0] == 200
    assert get(gw.port, "/gone?status=404", {"User-Agent": "GoogleBot/2"})[0] == 404
    assert get(gw.port, "/err?status=500", {"User-Agent": "curl/8"})[0] == 500
    assert get(gw.port, "/x?status=503", {"User-Agent": "Mozilla"})[0] == 503
    wait_until(lambda: len(lines(gw, "m.log")) >= 3, timeout=5, message="three lines")
    time.sleep(0.2)
    assert lines(gw, "m.log") == ["404 robot-/gone", "500 tool", "503 human"]


def raw(port, data, close_after=None, shut=False):
    """Send ``data``; then close (after ``close_after`` s) or read to the end. Returns bytes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(data)
    if close_after is not None:
        time.sleep(close_after)
        if shut:
            s.shutdown(socket.SHUT_WR)
            time.sleep(0.2)
        s.close()
        return b""
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    return out


def test_a_client_that_leaves_is_logged_499_at_once(gateway, backend):
    fmt = "log_format s '$status $uri $request_time';"
    gw = gateway(conf(backend, fmt, "access_log logs/s.log s buffer=0;"))
    # Gone while the upstream works (a FIN, as nginx sees it: no proxy_ignore_client_abort).
    raw(gw.port, b"GET /slow?latency=1500 HTTP/1.1\r\nHost: t\r\n\r\n", close_after=0.2, shut=True)
    # Gone before sending the body it promised.
    raw(gw.port, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n", close_after=0.1)
    got = wait_until(lambda: len(lines(gw, "s.log")) == 2 and lines(gw, "s.log"), timeout=1.5,
                     message="both logged at once")
    assert sorted(line.split(" ")[:2] for line in got) == [["499", "/echo"], ["499", "/slow"]]
    assert all(float(line.split(" ")[2]) < 1.0 for line in got)
    assert "client timed out" not in gw.error_log()


def test_request_length_and_bytes_sent_count_what_crossed_the_wire(gateway, backend):
    fmt = "log_format n '$request_length $bytes_sent $body_bytes_sent';"
    gw = gateway(conf(backend, fmt, "access_log logs/n.log n buffer=0;"))
    req = b"GET /c?size=1000&chunked=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out = raw(gw.port, req)
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    line = wait_until(lambda: lines(gw, "n.log"), timeout=5, message="the line")[0]
    assert line.split(" ") == [str(len(req)), str(len(out)), str(len(body))]
