"""Overload control through real processes: max_conns, the queue, priorities, fast rejections."""

import json
import socket
import threading
import time

import pytest

from fastgw.testing.harness import parse_responses, raw_request, wait_until


def conf(backend, queue="queue 4 timeout=10s;", max_conns=2, extra="", workers=1, wc=512):
    return f"""
        worker_processes {workers};
        error_log logs/error.log notice;
        events {{ worker_connections {wc}; }}
        http {{
            access_log off;
            upstream app {{
                server 127.0.0.1:{backend} max_conns={max_conns};
                keepalive 8;
                {queue}
            }}
            server {{
                listen 127.0.0.1:{{port}};
                location / {{ proxy_pass http://app; proxy_read_timeout 10s; }}
                location /low {{ proxy_pass http://app; priority 5; }}
                location /high {{ proxy_pass http://app; priority 0; }}
                {extra}
            }}
        }}"""


def stats(port):
    out = raw_request(port, b"GET /__stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    return json.loads(parse_responses(out)[0][2])


def reset(port):
    raw_request(port, b"GET /__reset HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")


def timed_request(port, path, results, key, timeout=20):
    t0 = time.monotonic()
    try:
        out = raw_request(port, b"GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % path.encode(),
                          timeout=timeout)
        status, headers, _ = parse_responses(out)[0]
    except (OSError, ValueError, IndexError) as exc:
        status, headers = repr(exc), {}
    results[key] = (status, headers, time.monotonic() - t0)


def fire(port, paths, spacing=0.0):
    results, threads = {}, []
    for i, path in enumerate(paths):
        t = threading.Thread(target=timed_request, args=(port, path, results, i))
        t.start()
        threads.append(t)
        if spacing:
            time.sleep(spacing)
    for t in threads:
        t.join(30)
    return [results[i] for i in range(len(paths))]


def test_max_conns_and_queue_admit_six_and_reject_the_rest_at_once(gateway, backend):
    gw = gateway(conf(backend))
    reset(backend)
    results = fire(gw.port, ["/?latency=1000"] * 30)
    served = [r for r in results if r[0] == 200]
    rejected = [r for r in results if r[0] == 503]
    assert len(served) == 6 and len(rejected) == 24, [r[0] for r in results]
    for status, headers, elapsed in rejected:
        assert int(headers["retry-after"]) >= 1
        assert elapsed < 0.9, "a rejection must not wait"
    assert stats(backend)["max_in_flight"] <= 2
    # Two at a time, 1 s each: the last of the six finishes after ~3 s.
    assert max(r[2] for r in served) >= 2.5
    assert "queue_full" in gw.error_log()


def test_without_queue_a_busy_upstream_is_503_at_once(gateway, backend):
    gw = gateway(conf(backend, queue="", max_conns=1))
    results = fire(gw.port, ["/?latency=800"] * 4)
    assert sorted(r[0] for r in results) == [200, 503, 503, 503]
    assert all(r[2] < 0.6 for r in results if r[0] == 503)


def test_rejected_request_without_body_keeps_its_connection(gateway, backend):
    """A 503 for a request with no body leaves nothing unread: the connection stays
    open for the client's next request (under overload, a reconnect per rejection
    would cost more than the rejection itself)."""
    gw = gateway(conf(backend, queue="", max_conns=1))
    results = {}
    t = threading.Thread(target=timed_request, args=(gw.port, "/?latency=1500", results, "busy"))
    t.start()
    time.sleep(0.4)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as c:
        c.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        first = b""
        while b"\r\n\r\n" not in first:
            first += c.recv(4096)
        assert first.startswith(b"HTTP/1.1 503") and b"Connection: close" not in first
        t.join(5)
        c.sendall(b"GET /?latency=10 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        rest = b""
        while chunk := c.recv(65536):
            rest += chunk
    statuses = [r[0] for r in parse_responses(first + rest)]
    assert statuses == [503, 200]
    assert results["busy"][0] == 200


def test_queue_timeout(gateway, backend):
    gw = gateway(conf(backend, queue="queue 4 timeout=1s;", max_conns=1))
    results = fire(gw.port, ["/?latency=3000"] + ["/?latency=10"] * 3, spacing=0.05)
    assert results[0][0] == 200
    for status, headers, elapsed in results[1:]:
        assert status == 503 and "retry-after" in headers
        assert 0.5 <= elapsed < 2.5
    assert "queue_timeout" in gw.error_log()


@pytest.mark.parametrize("head, wait", [
    # Without a body the client keeps being read: its close is seen at once.
    (b"GET /gone HTTP/1.1\r\nHost: t\r\n\r\n", 0.2),
    # With a body reading is paused; the gateway peeks at the socket every 0.25 s.
    (b"POST /gone HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n", 0.6),
], ids=["without a body", "with a body"])
def test_client_closing_while_queued_frees_its_slot(gateway, backend, head, wait):
    gw = gateway(conf(backend, queue="queue 1 timeout=10s;", max_conns=1))
    reset(backend)
    results = {}
    first = threading.Thread(target=timed_request, args=(gw.port, "/?latency=1500", results, "first"))
    first.start()
    time.sleep(0.3)
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(head)
        time.sleep(0.3)
    # The gone client's slot is free again: this request queues instead of a 503.
    time.sleep(wait)
    timed_request(gw.port, "/?latency=10", results, "second")
    first.join(10)
    assert results["first"][0] == 200
    assert results["second"][0] == 200
    assert stats(backend)["requests_total"] == 2  # /gone never reached the upstream


def test_higher_priority_displaces_the_newest_lower(gateway, backend):
    gw = gateway(conf(backend, queue="queue 2 timeout=10s;", max_conns=1))
    paths = ["/?latency=1500", "/low?latency=300", "/low?latency=300&n=2", "/high?latency=300"]
    spacing = 0.15
    results = fire(gw.port, paths, spacing=spacing)
    finished = [i * spacing + r[2] for i, r in enumerate(results)]
    assert results[0][0] == 200
    assert results[1][0] == 200          # the oldest low stays queued and is served
    assert results[2][0] == 503          # the newest low is displaced at once
    assert results[2][2] < 0.6
    assert results[3][0] == 200
    # The slot freed by the first goes to the high one, though the low one waited longer.
    assert finished[3] + 0.15 < finished[1]


def test_worker_connections_overflow_is_503_not_a_hang(gateway, backend):
    gw = gateway(conf(backend, queue="", max_conns=0, wc=8))
    held = []
    try:
        for _ in range(12):
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
            held.append(s)
        t0 = time.monotonic()
        out = raw_request(gw.port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", timeout=5)
        assert out.startswith(b"HTTP/1.1 503")
        assert b"Retry-After: " in out and b"Connection: close" in out
        assert time.monotonic() - t0 < 1.0
        # A client still sending a body it was not asked for must read the 503 too
        # (lingering close: no reset destroys the response).
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as c:
                try:
                    c.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 200000\r\n\r\n"
                              + b"b" * 200000)
                except OSError:
                    pass
                assert c.recv(100).startswith(b"HTTP/1.1 503")
    finally:
        for s in held:
            s.close()
    assert "worker_connections are not enough" in gw.error_log()


def test_zone_shares_max_conns_and_slots_across_workers(gateway, backend):
    """With a zone, max_conns holds across workers, and a slot freed in one worker
    serves a request queued in another at once (each worker is woken by an eventfd)."""
    # queue 12: SO_REUSEPORT hashes connections to workers, so one worker may get
    # nearly all twelve; each must be able to queue them all.
    gw = gateway(conf(backend, queue="queue 12 timeout=10s; zone app 64k;", max_conns=1,
                      workers=2))
    reset(backend)
    t0 = time.monotonic()
    # Twelve connections: SO_REUSEPORT spreads them over both workers.
    results = fire(gw.port, ["/?latency=300"] * 12, spacing=0.01)
    elapsed = time.monotonic() - t0
    assert [r[0] for r in results] == [200] * 12
    s = stats(backend)
    assert s["max_in_flight"] == 1          # one slot for the whole gateway
    # One at a time, 0.3 s each: ~3.6 s. A request stuck in a worker that was not
    # woken would wait for its queue timeout (10 s).
    assert 3.3 <= elapsed < 6.0


def test_zone_slot_of_a_killed_worker_is_given_back(gateway, backend):
    import os
    import signal as _signal
    gw = gateway(conf(backend, queue="queue 4 timeout=10s; zone app;", max_conns=1, workers=2))
    results = {}
    t = threading.Thread(target=timed_request, args=(gw.port, "/?latency=5000", results, "slow"))
    t.start()
    time.sleep(0.5)
    # Kill whichever worker holds the slot; its slot must come back to the zone.
    for pid in gw.worker_pids():
        os.kill(pid, _signal.SIGKILL)
    gw.wait_ready(2, since=2)
    assert timed_request(gw.port, "/?latency=10", results, "after") is None
    assert results["after"][0] == 200 and results["after"][2] < 2.0
    t.join(10)
