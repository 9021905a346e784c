"""Upstream resilience through real processes: balancing, passive and active health,
circuit breaking, retries and timeouts (issue 6)."""

import http.client
import json
import re
import signal
import socket
import threading
import time
from collections import Counter

from fastgw.testing.harness import free_port, wait_until


def conf(upstream, location="", workers=1, http_extra="", read_timeout="5s"):
    return f"""
        worker_processes {workers};
        error_log logs/error.log info;
        events {{ worker_connections 1024; }}
        http {{
            access_log off;
            upstream app {{
                {upstream}
            }}
            {http_extra}
            server {{
                listen 127.0.0.1:{{port}};
                location / {{
                    proxy_pass http://app;
                    proxy_connect_timeout 1s;
                    proxy_read_timeout {read_timeout};
                    {location}
                }}
                location = /metrics {{ metrics; }}
            }}
        }}"""


def request(port, path="/", method="GET", body=None, conn=None, timeout=10):
    """One request; ``(status, headers, body, seconds)``. A new connection unless ``conn``."""
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    t0 = time.monotonic()
    headers = {} if conn else {"Connection": "close"}
    c.request(method, path, body=body, headers=headers)
    resp = c.getresponse()
    data = resp.read()
    elapsed = time.monotonic() - t0
    if conn is None:
        c.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data, elapsed


def served_by(port, n, path="/", conn=None):
    """Which backend port answered each of ``n`` requests (None for a non-200)."""
    out = []
    for _ in range(n):
        status, headers, _, _ = request(port, path, conn=conn)
        out.append(int(headers["x-backend-port"]) if status == 200 else None)
    return out


def backend_stats(port):
    return json.loads(request(port, "/__stats")[2])


def reset(port):
    request(port, "/__reset")


def metric(gw, name, **labels):
    """The value of sample ``name`` with exactly ``labels`` in /metrics (0.0 when absent)."""
    text = request(gw.port, "/metrics")[2].decode()
    for line in text.splitlines():
        m = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if m and m.group(1) == name and dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or "")) == labels:
            return float(m.group(3))
    return 0.0


# -- balancing -----------------------------------------------------------------------------

def test_weights_3_to_1_split_requests_75_25(gateway, make_backend):
    a, b = make_backend(), make_backend()
    gw = gateway(conf(f"server 127.0.0.1:{a} weight=3; server 127.0.0.1:{b}; keepalive 8;"))
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    counts = Counter(served_by(gw.port, 400, conn=conn))
    conn.close()
    assert counts[a] + counts[b] == 400
    assert abs(counts[a] / 400 - 0.75) <= 0.03, counts


def test_least_conn_sends_new_requests_to_the_idle_peer(gateway, make_backend):
    import threading

    a, b = make_backend(), make_backend()
    gw = gateway(conf(f"least_conn; server 127.0.0.1:{a}; server 127.0.0.1:{b}; keepalive 8;"))
    slow = {}
    t = threading.Thread(target=lambda: slow.update(r=request(gw.port, "/?latency=2000")))
    t.start()
    wait_until(lambda: backend_stats(a)["in_flight"] + backend_stats(b)["in_flight"] == 1,
               timeout=5, message="the slow request to reach a peer")
    busy = a if backend_stats(a)["in_flight"] else b
    fast = served_by(gw.port, 20)
    t.join(10)
    assert slow["r"][0] == 200 and int(slow["r"][1]["x-backend-port"]) == busy
    # Round robin would have sent half of them to the busy peer.
    assert set(fast) == {b if busy == a else a}


def test_consistent_hash_keeps_keys_and_moves_about_a_quarter(gateway, make_backend):
    ports = [make_backend() for _ in range(4)]
    servers = " ".join(f"server 127.0.0.1:{p};" for p in ports)
    gw4 = gateway(conf(f"hash $arg_k consistent; {servers} keepalive 8;"))
    servers3 = " ".join(f"server 127.0.0.1:{p};" for p in ports[:3])
    gw3 = gateway(conf(f"hash $arg_k consistent; {servers3} keepalive 8;"))
    c4 = http.client.HTTPConnection("127.0.0.1", gw4.port, timeout=10)
    c3 = http.client.HTTPConnection("127.0.0.1", gw3.port, timeout=10)
    keys = range(120)
    first = {k: served_by(gw4.port, 1, f"/?k={k}", c4)[0] for k in keys}
    again = {k: served_by(gw4.port, 1, f"/?k={k}", c4)[0] for k in keys}
    assert first == again, "a key must stay on its peer"
    assert len(set(first.values())) == 4
    without = {k: served_by(gw3.port, 1, f"/?k={k}", c3)[0] for k in keys}
    moved = [k for k in keys if without[k] != first[k]]
    # Only the removed peer's keys move (about 1/4 of them).
    assert all(first[k] == ports[3] for k in moved)
    assert 0.1 <= len(moved) / len(keys) <= 0.4, len(moved)


# -- passive health, retries, circuit breaking -------------------------------------------------

def test_dead_peer_is_retried_and_tried_at_most_once_per_fail_timeout(gateway, backend):
    dead = free_port()
    gw = gateway(conf(f"zone app; server 127.0.0.1:{backend}; server 127.0.0.1:{dead} "
                      f"fail_timeout=1s; keepalive 8;", workers=2))
    statuses, t0 = [], time.monotonic()
    for _ in range(60):
        # A new connection each time: both workers serve, sharing the peer's state.
        statuses.append(request(gw.port, "/")[0])
        time.sleep(0.04)
    elapsed = time.monotonic() - t0
    assert statuses == [200] * 60
    log = gw.error_log()
    tries = log.count(f"upstream: \"http://127.0.0.1:{dead}/")
    assert 1 <= tries <= int(elapsed / 1.0) + 1, (tries, elapsed)
    assert "upstream server temporarily disabled" in log
    states = {st: metric(gw, "fastgw_upstream_peer_state", upstream="app",
                         peer=f"127.0.0.1:{dead}", state=st) for st in ("up", "failed")}
    assert sum(states.values()) == 1  # failed within fail_timeout, or up again after it


def test_all_peers_dead_gives_a_fast_502_no_live_upstreams(gateway):
    d1, d2 = free_port(), free_port()
    gw = gateway(conf(f"server 127.0.0.1:{d1}; server 127.0.0.1:{d2};"))
    first = request(gw.port, "/")
    assert first[0] == 502  # both tried (refused), both now out
    for _ in range(5):
        status, _, _, elapsed = request(gw.port, "/")
        assert status == 502 and elapsed < 0.5
    log = gw.error_log()
    assert "no live upstreams while connecting to upstream" in log
    # Two refused connections only: the circuit is open for the rest.
    assert log.count("connect() failed") == 2
    assert metric(gw, "fastgw_requests_rejected_total", reason="no_live_upstreams") == 5


def test_single_server_stays_in_unless_max_fails_is_set(gateway):
    dead = free_port()
    gw = gateway(conf(f"server 127.0.0.1:{dead};"))
    for _ in range(3):
        assert request(gw.port, "/")[0] == 502
    # nginx never takes a group's only server out: every request tried it.
    assert gw.error_log().count("connect() failed") == 3
    gw2 = gateway(conf(f"server 127.0.0.1:{dead} max_fails=1 fail_timeout=30s;"))
    for _ in range(3):
        assert request(gw2.port, "/")[0] == 502
    assert gw2.error_log().count("connect() failed") == 1
    assert metric(gw2, "fastgw_requests_rejected_total", reason="no_live_upstreams") == 2


def test_post_is_not_retried_by_default_but_get_is(gateway, make_backend):
    a, b = make_backend(), make_backend()
    peers = f"server 127.0.0.1:{a} max_fails=0; server 127.0.0.1:{b} max_fails=0; keepalive 8;"
    gw = gateway(conf(peers))
    for p in (a, b):
        reset(p)
    # drop=1: the peer reads the request and closes without answering.
    assert request(gw.port, "/?drop=1", "POST", b"payload")[0] == 502
    assert backend_stats(a)["requests_total"] + backend_stats(b)["requests_total"] == 1
    for p in (a, b):
        reset(p)
    assert request(gw.port, "/?drop=1", "GET")[0] == 502
    assert backend_stats(a)["requests_total"] + backend_stats(b)["requests_total"] == 2
    # With non_idempotent the POST goes on to the other peer, body and all.
    gw2 = gateway(conf(peers, "proxy_next_upstream error timeout non_idempotent;"))
    for p in (a, b):
        reset(p)
    assert request(gw2.port, "/?drop=1", "POST", b"payload")[0] == 502
    assert backend_stats(a)["requests_total"] + backend_stats(b)["requests_total"] == 2


def test_a_body_that_was_not_kept_is_never_resent(gateway, make_backend):
    """proxy_request_buffering off: a streamed body over the 64 KiB kept is never resent
    (on, the default, the whole body is held and a retry sends it again: test_buffering)."""
    a, b = make_backend(), make_backend()
    gw = gateway(conf(f"server 127.0.0.1:{a} max_fails=0; server 127.0.0.1:{b} max_fails=0;",
                      "proxy_next_upstream error timeout non_idempotent; "
                      "proxy_request_buffering off;"))
    for p in (a, b):
        reset(p)
    # 200 KiB streams through: more than the 64 KiB kept for a retry.
    assert request(gw.port, "/?drop=1", "PUT", b"y" * 200_000)[0] == 502
    assert backend_stats(a)["requests_total"] + backend_stats(b)["requests_total"] == 1


def test_a_buffered_body_is_resent_whole(gateway, make_backend):
    """proxy_request_buffering on (the default): the same 200 KiB PUT goes to both peers."""
    a, b = make_backend(), make_backend()
    gw = gateway(conf(f"server 127.0.0.1:{a} max_fails=0; server 127.0.0.1:{b} max_fails=0;",
                      "proxy_next_upstream error timeout non_idempotent;"))
    for p in (a, b):
        reset(p)
    assert request(gw.port, "/?drop=1", "PUT", b"y" * 200_000)[0] == 502
    assert backend_stats(a)["requests_total"] + backend_stats(b)["requests_total"] == 2


def test_proxy_next_upstream_tries_bounds_the_attempts(gateway, make_backend):
    ports = [make_backend() for _ in range(3)]
    servers = " ".join(f"server 127.0.0.1:{p} max_fails=0;" for p in ports)
    gw = gateway(conf(servers, "proxy_next_upstream_tries 2;"))
    for p in ports:
        reset(p)
    assert request(gw.port, "/?drop=1")[0] == 502
    assert sum(backend_stats(p)["requests_total"] for p in ports) == 2


def test_http_503_retry_goes_to_the_other_peer_with_the_body(gateway, make_backend):
    a, b = make_backend(), make_backend()
    gw = gateway(conf(f"server 127.0.0.1:{a}; server 127.0.0.1:{b}; keepalive 8;",
                      "proxy_next_upstream error timeout http_503 non_idempotent;"))
    request(a, "/__health?status=503")
    for _ in range(4):
        status, headers, _, _ = request(gw.port, "/health")
        assert status == 200 and int(headers["x-backend-port"]) == b
    assert backend_stats(a)["health_checks"] >= 1  # it was asked, and its 503 dropped
    # $upstream_addr-style bookkeeping aside, a body is resent intact.
    status, headers, body, _ = request(gw.port, "/echo", "PUT", b"x" * 3000)
    assert status == 200 and json.loads(body)["body_len"] == 3000


def test_read_timeout_gives_504_after_the_timeout(gateway, backend):
    gw = gateway(conf(f"server 127.0.0.1:{backend};", read_timeout="1s"))
    status, _, _, elapsed = request(gw.port, "/?latency=4000")
    assert status == 504
    assert 0.9 <= elapsed < 2.5
    assert "upstream timed out (110: Connection timed out) while reading response header" in gw.error_log()
    assert metric(gw, "fastgw_requests_rejected_total", reason="upstream_timeout") == 1


def test_idle_close_race_never_reaches_the_client(gateway, make_backend):
    # The upstream closes keep-alive connections idle for 300 ms; fastgw keeps
    # them for 60 s. Requests that arrive around the close must still succeed.
    up = make_backend("--keepalive-timeout", "300ms")
    gw = gateway(conf(f"server 127.0.0.1:{up}; keepalive 8;"))
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    results = []
    for i in range(12):
        time.sleep(0.27 + 0.005 * i)  # sweeps across the 300 ms close
        results.append(request(gw.port, "/", conn=conn)[0])
    for _ in range(3):
        time.sleep(0.45)  # the close has happened: a POST must not meet it
        results.append(request(gw.port, "/echo", "POST", b"data", conn=conn)[0])
    conn.close()
    assert results == [200] * 15
    assert "upstream prematurely closed" not in gw.error_log()


# -- active health checks ---------------------------------------------------------------------

def test_active_check_takes_out_an_unhealthy_peer_and_brings_it_back(gateway, make_backend):
    a, b = make_backend(), make_backend()
    gw = gateway(conf(f"zone app; server 127.0.0.1:{a}; server 127.0.0.1:{b}; keepalive 8; "
                      f"health_check interval=200ms uri=/health fails=1 passes=2;", workers=2))
    wait_until(lambda: backend_stats(b)["health_checks"] >= 2, timeout=5,
               message="health checks to reach the peer")
    assert set(served_by(gw.port, 10)) == {a, b}
    request(b, "/__health?status=503")
    wait_until(lambda: "is unhealthy" in gw.error_log(), timeout=5, message="the peer to go out")
    # Both workers (new connection each time) skip it.
    assert set(served_by(gw.port, 20)) == {a}
    log = gw.error_log()
    assert f'peer 127.0.0.1:{b} of upstream "app" is unhealthy: status 503' in log
    assert metric(gw, "fastgw_upstream_peer_state", upstream="app", peer=f"127.0.0.1:{b}",
                  state="unhealthy") == 1
    assert metric(gw, "fastgw_upstream_peer_state", upstream="app", peer=f"127.0.0.1:{a}",
                  state="up") == 1
    request(b, "/__health?status=200")
    wait_until(lambda: "healthy again" in gw.error_log(), timeout=5, message="the peer to return")
    assert b in set(served_by(gw.port, 10))


def garbage_peer(stop):
    """A peer that answers every connection with 70 000 bytes and no line end; its port."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)

    def run():
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            with c:
                c.settimeout(1)
                try:
                    c.recv(4096)
                    c.sendall(b"A" * 70000)
                except OSError:
                    pass
        srv.close()

    threading.Thread(target=run, daemon=True).start()
    return srv.getsockname()[1]


def test_a_garbage_health_answer_fails_the_check_and_checks_go_on(gateway, backend):
    stop = threading.Event()
    try:
        evil = garbage_peer(stop)
        gw = gateway(conf(f"zone app; server 127.0.0.1:{backend}; server 127.0.0.1:{evil}; "
                          f"health_check interval=200ms uri=/health;"))
        wait_until(lambda: f"peer 127.0.0.1:{evil} of upstream" in gw.error_log(), timeout=5,
                   message="the garbage peer to go out")
        assert "invalid response" in gw.error_log()
        # The checks of the other peer go on: it goes out and comes back.
        request(backend, "/__health?status=503")
        wait_until(lambda: f"peer 127.0.0.1:{backend} of upstream" in gw.error_log(), timeout=5,
                   message="the backend to go out")
        request(backend, "/__health?status=200")
        wait_until(lambda: "healthy again" in gw.error_log(), timeout=5,
                   message="the backend to come back")
    finally:
        stop.set()


def test_a_reload_that_removes_health_check_ignores_its_verdict(gateway, make_backend):
    a, b = make_backend(), make_backend()
    peers = f"zone app; server 127.0.0.1:{a}; server 127.0.0.1:{b}; keepalive 8;"
    gw = gateway(conf(peers + " health_check interval=100ms uri=/health;"))
    request(b, "/__health?status=503")
    wait_until(lambda: "is unhealthy" in gw.error_log(), timeout=5, message="b to go out")
    with open(gw.conf_path, "w") as fh:
        fh.write(conf(peers).replace("{port}", str(gw.port)))
    gw.kill(signal.SIGHUP)
    wait_until(lambda: "reconfigured" in gw.error_log(), timeout=10, message="the reload")
    # b still answers 503 on /health, but nothing checks it any more: it serves.
    wait_until(lambda: b in served_by(gw.port, 4), timeout=5, message="b to serve again")
    assert metric(gw, "fastgw_upstream_peer_state", upstream="app", peer=f"127.0.0.1:{b}",
                  state="up") == 1


def test_error_lines_name_the_rewritten_upstream_uri(gateway):
    dead = free_port()
    gw = gateway(conf(f"server 127.0.0.1:{dead};").replace(
        "location = /metrics", "location /api/ { proxy_pass http://app/v1/; }\n"
                               "                location = /metrics"))
    assert request(gw.port, "/api/items?x=1")[0] == 502
    assert f'upstream: "http://127.0.0.1:{dead}/v1/items?x=1"' in gw.error_log()


def test_an_upstream_whose_servers_are_all_down_answers_502_at_once(gateway):
    gw = gateway(conf("server 127.0.0.1:9 down; server 127.0.0.1:10 down;"))
    status, _, _, elapsed = request(gw.port, "/")
    assert status == 502 and elapsed < 0.5
    assert "no live upstreams" in gw.error_log() and "connect() failed" not in gw.error_log()
