"""stub_status and metrics through real processes: exact values after known traffic, summed over workers."""

import re
import socket
import time

from fastgw.testing.harness import parse_responses, raw_request, wait_until

CONF = """
worker_processes 2;
error_log logs/error.log notice;
events {{ worker_connections 512; }}
http {{
    access_log off;
    upstream app {{ server 127.0.0.1:{backend} max_conns=1; queue 1 timeout=5s; keepalive 4; }}
    server {{
        listen 127.0.0.1:{{port}};
        location / {{ proxy_pass http://app; }}
        location = /basic_status {{ stub_status; }}
        location = /metrics {{ metrics; }}
        location = /teapot {{ return 418; }}
    }}
}}
"""


def get(port, path):
    out = raw_request(port, b"GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % path.encode())
    return parse_responses(out)[0]


def metric(text, name, **labels):
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r'(\w+)(?:\{(.*)\})? (\S+)$', line)
        if m and m.group(1) == name:
            got = ",".join(sorted((m.group(2) or "").split(","))) if m.group(2) else ""
            if got == want:
                return float(m.group(3))
    raise AssertionError(f"no {name}{{{want}}} in metrics")


def test_stub_status_is_nginx_format_and_exact(gateway, backend):
    gw = gateway(CONF.format(backend=backend))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        raw = (b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" * 3 + b"GET /teapot HTTP/1.1\r\nHost: t\r\n\r\n"
               + b"GET /basic_status HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        s.sendall(raw)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    responses = parse_responses(data)
    assert [r[0] for r in responses] == [200, 200, 200, 418, 200]
    body = responses[-1][2].decode()
    # One connection, five requests counted when they began (as nginx counts).
    assert body == ("Active connections: 1 \nserver accepts handled requests\n 1 1 5 \n"
                    "Reading: 0 Writing: 1 Waiting: 0 \n")


def test_metrics_sum_the_counters_of_every_worker(gateway, backend):
    gw = gateway(CONF.format(backend=backend))
    paths = ["/", "/", "/?status=404", "/teapot", "/?status=500"] * 4
    assert [get(gw.port, p)[0] for p in paths] == [200, 200, 404, 418, 500] * 4

    def settled():
        text = get(gw.port, "/metrics")[2].decode()
        return text if metric(text, "fastgw_connections_active") == 1 else None

    text = wait_until(settled, timeout=5, interval=0.2, message="connections to close")
    # Every request on its own connection: SO_REUSEPORT spreads them over both
    # workers, and the page (served by either) counts them all.
    scrapes = metric(text, "fastgw_connections_accepted_total") - len(paths)
    assert scrapes >= 1
    assert metric(text, "fastgw_connections_handled_total") == len(paths) + scrapes
    assert metric(text, "fastgw_requests_total", status="200") == 8 + scrapes - 1
    assert metric(text, "fastgw_requests_total", status="404") == 4
    assert metric(text, "fastgw_requests_total", status="418") == 4
    assert metric(text, "fastgw_requests_total", status="500") == 4
    assert metric(text, "fastgw_upstream_response_seconds_count", upstream="app") == 16
    # Request time of the 16 proxied requests (the 418s are local): cumulative buckets
    # that end at the count.
    assert metric(text, "fastgw_upstream_request_seconds_count", upstream="app") == 16
    counts = [metric(text, "fastgw_upstream_request_seconds_bucket", upstream="app", le=le)
              for le in ("0.001", "0.01", "0.1", "1.0", "10.0", "+Inf")]
    assert counts == sorted(counts) and counts[-1] == 16
    assert metric(text, "fastgw_worker_up", worker="0") == 1
    assert metric(text, "fastgw_worker_up", worker="1") == 1


def test_overload_metrics(gateway, backend):
    import threading
    gw = gateway(CONF.format(backend=backend).replace("worker_processes 2;", "worker_processes 1;"))
    # Two slow requests hold the only slot and the only queue place; the third is refused.
    held = [threading.Thread(target=get, args=(gw.port, "/?latency=1500")) for _ in range(2)]
    for t in held:
        t.start()
        time.sleep(0.2)
    assert get(gw.port, "/?latency=10")[0] == 503
    during = get(gw.port, "/metrics")[2].decode()
    assert metric(during, "fastgw_upstream_queue_depth", upstream="app") == 1
    assert metric(during, "fastgw_upstream_active", upstream="app", peer=f"127.0.0.1:{backend}") == 1
    assert metric(during, "fastgw_requests_rejected_total", reason="queue_full") == 1
    assert metric(during, "fastgw_requests_total", status="503") == 1
    for t in held:
        t.join(10)
    after = get(gw.port, "/metrics")[2].decode()
    assert metric(after, "fastgw_upstream_queue_depth", upstream="app") == 0
    assert metric(after, "fastgw_upstream_active", upstream="app", peer=f"127.0.0.1:{backend}") == 0
    assert metric(after, "fastgw_requests_rejected_total", reason="queue_timeout") == 0
    assert metric(after, "fastgw_upstream_response_seconds_count", upstream="app") == 2
    assert metric(after, "fastgw_upstream_response_seconds_bucket", upstream="app", le="1.0") == 0
    # Measured from the request's start upstream: queue time is not upstream time.
    assert metric(after, "fastgw_upstream_response_seconds_bucket", upstream="app", le="2.5") == 2
    # The second request waited ~1.3 s in the queue for the first one's slot; its
    # request time includes the wait.
    assert metric(after, "fastgw_upstream_queue_wait_seconds_count", upstream="app") == 1
    assert metric(after, "fastgw_upstream_queue_wait_seconds_bucket", upstream="app", le="0.5") == 0
    assert metric(after, "fastgw_upstream_queue_wait_seconds_bucket", upstream="app", le="2.5") == 1
    assert metric(after, "fastgw_upstream_request_seconds_bucket", upstream="app", le="2.5") == 1


def test_counters_survive_a_reload(gateway, backend):
    """As nginx's stub_status totals do: what old workers counted stays in the totals,
    while they drain (read from their blocks) and after they exit (folded in)."""
    import signal

    gw = gateway(CONF.format(backend=backend))
    for _ in range(5):
        assert get(gw.port, "/teapot")[0] == 418

    def counts():
        body = get(gw.port, "/basic_status")[2].decode()
        accepted, handled, requests = map(int, body.splitlines()[2].split())
        text = get(gw.port, "/metrics")[2].decode()
        return requests, metric(text, "fastgw_requests_total", status="418")

    before, teapots = counts()
    assert teapots == 5 and before == 6   # five teapots and this status request
    old = gw.worker_pids()
    with open(gw.conf_path) as fh:
        text = fh.read()
    with open(gw.conf_path, "w") as fh:
        fh.write(text.replace("return 418;", "return 418 'gen2';"))
    gw.kill(signal.SIGHUP)
    wait_until(lambda: "reconfigured" in gw.error_log(), timeout=10, message="the reload")
    wait_until(lambda: not set(old) & set(gw.worker_pids()), timeout=10,
               message="the old workers to exit")
    wait_until(lambda: "exited with code 0" in gw.error_log(), timeout=5, message="the reap")
    # Since ``before`` was read: the metrics request, then this stub_status one.
    requests, teapots = counts()
    assert teapots == 5
    assert requests == before + 2
    assert get(gw.port, "/teapot")[0] == 418
    assert counts()[1] == 6
