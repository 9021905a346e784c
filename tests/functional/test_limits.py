"""limit_req and limit_conn through real processes: exact across workers, held, released."""

import signal
import socket
import threading
import time

from fastgw.testing.harness import parse_responses, raw_request, wait_until

CONF = """
worker_processes {workers};
error_log logs/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    {zones}
    upstream app {{ server 127.0.0.1:{backend}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{{port}};
        location / {{ {limits} proxy_pass http://app; proxy_read_timeout 10s; }}
        location = /ret {{ {limits} return 200 "ret"; }}
    }}
}}
"""

ZONES = ("limit_req_zone $binary_remote_addr zone=one:1m rate=10r/s; "
         "limit_conn_zone $binary_remote_addr zone=addr:1m;")


def conf(backend, limits, zones=ZONES, workers=2):
    return CONF.format(backend=backend, limits=limits, zones=zones, workers=workers)


def request(port, path="/?size=2", headers=b"", timeout=10):
    """One request on a new connection: (status, headers, seconds)."""
    t0 = time.monotonic()
    out = raw_request(port, b"GET %s HTTP/1.1\r\nHost: t\r\n%sConnection: close\r\n\r\n"
                      % (path.encode(), headers), timeout=timeout)
    status, hdrs, _ = parse_responses(out)[0]
    return status, hdrs, time.monotonic() - t0


def fire(port, n, spacing, path="/?size=2", headers=b""):
    results, threads = [None] * n, []

    def one(i):
        try:
            results[i] = request(port, path, headers)
        except (OSError, ValueError, IndexError) as exc:
            results[i] = (repr(exc), {}, 0.0)
    for i in range(n):
        t = threading.Thread(target=one, args=(i,))
        t.start()
        threads.append(t)
        if spacing:
            time.sleep(spacing)
    for t in threads:
        t.join(30)
    return results


def test_limit_req_is_exact_across_two_workers(gateway, backend):
    """rate=10r/s burst=5 nodelay, 60 requests over one second on new connections (spread
    over both workers by SO_REUSEPORT): 1 + 5 + about 10 pass. Per-worker buckets would
    pass about twice that."""
    gw = gateway(conf(backend, "limit_req zone=one burst=5 nodelay;"))
    results = fire(gw.port, 60, 1 / 60)
    ok = [r for r in results if r[0] == 200]
    rejected = [r for r in results if r[0] == 429]
    assert len(ok) + len(rejected) == 60, [r[0] for r in results]
    assert 13 <= len(ok) <= 19, len(ok)
    for status, headers, elapsed in rejected:
        assert int(headers["retry-after"]) >= 1
        assert elapsed < 0.5   # nodelay: nothing is held
    log = gw.error_log()
    assert 'limiting requests, excess: ' in log and 'by zone "one"' in log


def test_delay_holds_requests_to_the_rate(gateway, backend):
    """burst=5 without nodelay: the excess is not rejected but spaced out at 10r/s."""
    gw = gateway(conf(backend, "limit_req zone=one burst=5;", workers=1))
    results = fire(gw.port, 6, 0.0)
    assert [r[0] for r in results] == [200] * 6
    times = sorted(r[2] for r in results)
    assert times[0] < 0.3
    # The fifth excess request waits about 5 x 100 ms.
    assert 0.35 <= times[-1] < 2.0
    assert "delaying request, excess: " in gw.error_log()


def test_delay_threshold_lets_the_first_ones_through(gateway, backend):
    gw = gateway(conf(backend, "limit_req zone=one burst=5 delay=3;", workers=1))
    results = fire(gw.port, 6, 0.0)
    assert [r[0] for r in results] == [200] * 6
    times = sorted(r[2] for r in results)
    assert times[3] < 0.3          # the first request and three of the excess pass at once
    assert times[-1] >= 0.1        # the rest are held


def test_limit_conn_across_workers(gateway, backend):
    """limit_conn addr 2: six concurrent slow requests from one address on different
    workers; two are served, four get 429 at once."""
    from test_upstream_queue import reset, stats

    gw = gateway(conf(backend, "limit_conn addr 2;"))
    reset(backend)
    results = fire(gw.port, 6, 0.02, path="/?latency=1000")
    statuses = sorted(r[0] for r in results)
    assert statuses == [200, 200, 429, 429, 429, 429], statuses
    for status, headers, elapsed in results:
        if status == 429:
            assert headers["retry-after"] == "1" and elapsed < 0.8
    assert stats(backend)["max_in_flight"] == 2
    assert 'limiting connections by zone "addr"' in gw.error_log()
    # Everything was released: two more at once pass.
    assert [r[0] for r in fire(gw.port, 2, 0.0)] == [200, 200]


def test_limit_conn_count_is_released_when_the_client_aborts(gateway, backend):
    gw = gateway(conf(backend, "limit_conn addr 1;", workers=1))
    s = socket.create_connection(("127.0.0.1", gw.port))
    s.sendall(b"GET /?latency=3000 HTTP/1.1\r\nHost: t\r\n\r\n")
    time.sleep(0.4)
    assert request(gw.port)[0] == 429
    s.close()   # the client goes away mid-request
    wait_until(lambda: request(gw.port)[0] == 200, timeout=3, message="the count released")


def test_empty_key_is_not_limited_and_return_is_not_limited(gateway, backend):
    zones = "limit_req_zone $http_x_key zone=one:1m rate=1r/m;"
    gw = gateway(conf(backend, "limit_req zone=one;", zones=zones, workers=1))
    assert [request(gw.port)[0] for _ in range(5)] == [200] * 5         # no X-Key
    assert [request(gw.port, headers=b"X-Key: a\r\n")[0] for _ in range(2)] == [200, 429]
    assert [request(gw.port, "/ret", headers=b"X-Key: a\r\n")[0] for _ in range(3)] == [200] * 3


def test_status_and_dry_run(gateway, backend):
    gw = gateway(conf(backend, "limit_req zone=one; limit_req_status 503;", workers=1))
    assert [r[0] for r in fire(gw.port, 3, 0.0)][:3].count(503) >= 1
    gw2 = gateway(conf(backend, "limit_req zone=one; limit_req_dry_run on;", workers=1))
    assert [r[0] for r in fire(gw2.port, 5, 0.0)] == [200] * 5
    assert "limiting requests, dry run, excess:" in gw2.error_log()


def test_two_limits_both_apply(gateway, backend):
    zones = ("limit_req_zone $binary_remote_addr zone=fast:1m rate=100r/s; "
             "limit_req_zone $http_x_key zone=slow:1m rate=1r/m;")
    gw = gateway(conf(backend, "limit_req zone=fast burst=10 nodelay; limit_req zone=slow;",
                      zones=zones, workers=1))
    assert request(gw.port, headers=b"X-Key: k\r\n")[0] == 200
    assert request(gw.port, headers=b"X-Key: k\r\n")[0] == 429    # the slow zone refuses
    assert request(gw.port, headers=b"X-Key: other\r\n")[0] == 200


def test_full_zone_evicts_then_answers_503(gateway, backend):
    """An 8k zone holds 59 keys. limit_req evicts the least recently used; limit_conn
    cannot evict a key with requests in flight: the next key gets 503 and a log line."""
    zones = ("limit_req_zone $http_x_key zone=small:8k rate=1r/m; "
             "limit_conn_zone $http_x_key zone=conns:8k;")
    gw = gateway(conf(backend, "limit_req zone=small;", zones=zones, workers=1))
    for i in range(80):
        assert request(gw.port, headers=b"X-Key: k%d\r\n" % i)[0] == 200
    # k0 was evicted long ago: it passes again; k79 is still limited.
    assert request(gw.port, headers=b"X-Key: k0\r\n")[0] == 200
    assert request(gw.port, headers=b"X-Key: k79\r\n")[0] == 429

    gw2 = gateway(conf(backend, "limit_conn conns 1;", zones=zones, workers=1))
    held = []
    try:
        for i in range(59):
            s = socket.create_connection(("127.0.0.1", gw2.port))
            s.sendall(b"GET /?latency=4000 HTTP/1.1\r\nHost: t\r\nX-Key: c%d\r\n\r\n" % i)
            held.append(s)
        time.sleep(0.5)
        status, headers, _ = request(gw2.port, headers=b"X-Key: one-too-many\r\n")
        assert status == 503 and headers["retry-after"] == "1"
        assert 'could not allocate node in limit_conn zone "conns"' in gw2.error_log()
    finally:
        for s in held:
            s.close()


def test_zone_state_survives_a_reload_unless_the_zone_changes(gateway, backend):
    zones = "limit_req_zone $binary_remote_addr zone=one:1m rate=1r/m;"
    gw = gateway(conf(backend, "limit_req zone=one;", zones=zones, workers=1))
    assert request(gw.port)[0] == 200
    assert request(gw.port)[0] == 429

    def reload(text, n):
        with open(gw.conf_path, "w") as fh:
            fh.write(text.replace("{port}", str(gw.port)))
        gw.kill(signal.SIGHUP)
        wait_until(lambda: gw.error_log().count("reconfigured") == n, timeout=10,
                   message="the reload")
    # Same zone (name, size, key), another location setting: the bucket is kept.
    reload(conf(backend, "limit_req zone=one; limit_req_status 503;", zones=zones, workers=1), 1)
    assert request(gw.port)[0] == 503
    # A new size is a new zone: its state starts empty.
    reload(conf(backend, "limit_req zone=one;", zones=zones.replace("1m", "2m"), workers=1), 2)
    assert request(gw.port)[0] == 200


def test_a_limit_for_an_unknown_zone_is_a_config_error(tmp_path, backend):
    from test_process import run_cli

    (tmp_path / "conf").mkdir()
    text = conf(backend, "limit_req zone=nope;").replace("{port}", "1")
    (tmp_path / "conf" / "fastgw.conf").write_text(text)
    out = run_cli("-p", str(tmp_path), "-t")
    assert out.returncode == 1
    line = text[:text.index("zone=nope")].count("\n") + 1
    assert f'no limit_req_zone "nope" is defined in {tmp_path}/conf/fastgw.conf:{line}' in out.stderr


def test_limit_conn_count_is_released_after_an_upstream_timeout_and_error(gateway, backend):
    text = conf(backend, "limit_conn addr 1;", workers=1).replace(
        "proxy_read_timeout 10s;", "proxy_read_timeout 1s;")
    gw = gateway(text)
    assert request(gw.port, "/?latency=2000")[0] == 504      # proxy_read_timeout
    assert request(gw.port, "/?drop=1")[0] == 502            # the upstream closes early
    assert request(gw.port)[0] == 200                        # nothing is still counted


def test_outcomes_per_zone_in_metrics_across_workers(gateway, backend):
    import re

    zones = ("limit_req_zone $binary_remote_addr zone=slow:1m rate=1r/m; "
             "limit_conn_zone $binary_remote_addr zone=addr:1m;")
    gw = gateway(conf(backend, "limit_req zone=slow burst=2 nodelay; limit_conn addr 5;", zones)
                 .replace("location = /ret", "location = /metrics { metrics; }\n"
                                             "        location = /ret"))
    # A new connection each time: both workers decide, in the one shared zone.
    statuses = [request(gw.port)[0] for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    body = raw_request(gw.port, b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    text = parse_responses(body)[0][2].decode()

    def value(name, **labels):
        for line in text.splitlines():
            m = re.fullmatch(r"(\w+)\{(.*)\} (\S+)", line)
            if m and m.group(1) == name and dict(re.findall(r'(\w+)="([^"]*)"', m.group(2))) == labels:
                return float(m.group(3))
        return None

    assert value("fastgw_limit_req_requests_total", zone="slow", outcome="passed") == 3
    assert value("fastgw_limit_req_requests_total", zone="slow", outcome="rejected") == 2
    assert value("fastgw_limit_req_requests_total", zone="slow", outcome="delayed") == 0
    # limit_conn decides after limit_req: the 3 that passed it passed limit_conn too.
    assert value("fastgw_limit_conn_requests_total", zone="addr", outcome="passed") == 3
    assert value("fastgw_limit_conn_requests_total", zone="addr", outcome="rejected") == 0
