"""limit_req zones in Redis: one limit shared by several gateway instances, and the fallback
when Redis fails, through real fastgw processes and a real redis-server."""

import threading
import time

from fastgw.testing.harness import parse_responses, raw_request, wait_until

CONF = """
worker_processes {workers};
error_log logs/error.log info;
events {{ worker_connections 512; }}
http {{
    access_log off;
    limit_req_zone $http_x_key zone=shared:1m rate=1r/m redis=127.0.0.1:{redis} {extra};
    upstream app {{ server 127.0.0.1:{backend}; keepalive 8; }}
    server {{
        listen 127.0.0.1:{{port}};
        location / {{ limit_req zone=shared burst=4 nodelay; proxy_pass http://app; }}
    }}
}}
"""


def conf(backend, redis, extra="", workers=1):
    return CONF.format(backend=backend, redis=redis, extra=extra, workers=workers)


def get(port, key, timeout=10):
    t0 = time.monotonic()
    out = raw_request(port, b"GET /?size=2 HTTP/1.1\r\nHost: t\r\nX-Key: %s\r\n"
                      b"Connection: close\r\n\r\n" % key, timeout=timeout)
    status, headers, _ = parse_responses(out)[0]
    return status, headers, time.monotonic() - t0


def test_two_gateways_share_one_limit(gateway, backend, redis_server):
    """1r/m burst=4: five requests per key pass in all, whichever instance (and worker)
    gets them."""
    a = gateway(conf(backend, redis_server.port, workers=2))
    b = gateway(conf(backend, redis_server.port, workers=2))
    statuses = [get((a, b)[i % 2].port, b"user-1")[0] for i in range(12)]
    assert statuses.count(200) == 5 and statuses.count(429) == 7, statuses
    status, headers, _ = get(a.port, b"user-1")
    # One request drains in 1000 / 16 ms (nginx keeps 1r/m as 16 milli-requests/s).
    assert status == 429 and 1 <= int(headers["retry-after"]) <= 63
    # Another key has its own bucket.
    assert get(b.port, b"user-2")[0] == 200
    # The bucket is in Redis, under the zone's prefix.
    assert b"fastgw:limit_req:shared:user-1" in redis_server.command("KEYS", "fastgw:*")


def test_concurrent_checks_through_two_gateways_are_exact(gateway, backend, redis_server):
    a = gateway(conf(backend, redis_server.port, workers=2))
    b = gateway(conf(backend, redis_server.port, workers=2))
    results = []
    lock = threading.Lock()

    def one(i):
        r = get((a, b)[i % 2].port, b"burst")[0]
        with lock:
            results.append(r)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert results.count(200) == 5 and results.count(429) == 15, results


def test_redis_down_falls_back_to_the_local_zone(gateway, backend, redis_server):
    gw = gateway(conf(backend, redis_server.port, "redis_timeout=300ms"))
    assert [get(gw.port, b"k")[0] for _ in range(6)] == [200] * 5 + [429]
    redis_server.stop()
    # The local zone was never charged: its own bucket starts empty, and limits again.
    results = [get(gw.port, b"k") for _ in range(6)]
    assert [r[0] for r in results] == [200] * 5 + [429]
    assert all(r[2] < 1.0 for r in results)
    log = gw.error_log()
    assert 'limit_req zone "shared": redis 127.0.0.1:' in log and "using the local zone" in log
    # At most one such line per 10 seconds.
    assert log.count("using the local zone") == 1


def test_redis_down_with_redis_fail_closed_rejects(gateway, backend, redis_server):
    gw = gateway(conf(backend, redis_server.port, "redis_fail=closed"))
    assert get(gw.port, b"k")[0] == 200
    redis_server.stop()
    status, headers, elapsed = get(gw.port, b"k")
    assert status == 503 and headers["retry-after"] == "1" and elapsed < 1.0
    assert "rejecting requests (503)" in gw.error_log()


def test_slow_redis_is_given_up_after_redis_timeout(gateway, backend, redis_server):
    gw = gateway(conf(backend, redis_server.port, "redis_timeout=200ms"))
    assert get(gw.port, b"k")[0] == 200       # connects the worker's pool
    blocker = threading.Thread(target=redis_server.command, args=("DEBUG", "SLEEP", "2"))
    blocker.start()
    time.sleep(0.2)
    status, _, elapsed = get(gw.port, b"k")
    blocker.join(10)
    assert status == 200 and elapsed < 1.2      # the local zone answered, not Redis
    assert "TimeoutError" in gw.error_log()
    # Redis answers again: the shared bucket is used again (one request charged so far).
    wait_until(lambda: get(gw.port, b"k2")[0] == 200, timeout=5, message="redis back")
