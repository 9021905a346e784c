"""Micro benchmarks of hot-path pieces (pytest-benchmark): queue, balancers, counters, logs.

CI runs them as plain tests (timing disabled in pyproject.toml), so they never rot;
time them by hand:

    .venv/bin/pytest benchmarks/micro --benchmark-enable

Each measures what one request pays for that piece; each also checks its result,
so a benchmark that stopped doing the work would fail.
"""

import json

import pytest

from fastgw._core.balancer import Peer, make_balancer
from fastgw._core.counters import Stats, region_size, zone_size
from fastgw._core.queue import RequestQueue
from fastgw.config.variables import compile_template
from fastgw.observe.access_log import combined, log_value


def test_queue_push_then_pop(benchmark):
    q = RequestQueue(1024, 60.0)
    item = object()
    now = [0.0]

    def push_pop():
        now[0] += 0.001
        q.push(item, 0, now[0])
        return q.pop(now[0])
    assert benchmark(push_pop) is item
    assert q.depth == 0


def test_queue_pop_from_a_deep_queue(benchmark):
    q = RequestQueue(4096, 60.0)
    for i in range(2048):
        q.push(i, i % 4, 0.0)

    def pop_push():
        item = q.pop(1.0)
        q.push(item, item % 4, 1.0)
        return item
    assert isinstance(benchmark(pop_push), int)
    assert q.depth == 2048


METHODS = {
    "round_robin": ("round_robin",),
    "least_conn": ("least_conn",),
    "hash_consistent": ("hash", compile_template("$uri"), True),
    "random_two": ("random", True),
}


@pytest.mark.parametrize("method", METHODS, ids=list(METHODS))
def test_balancer_pick_and_release(benchmark, method):
    peers = [Peer(f"10.0.0.{i}", 8000, 1 + i % 3, None, i, max_conns=1000) for i in range(8)]
    b = make_balancer(peers, METHODS[method])

    def pick_release():
        p = b.next_peer(b"/items/42" if b.key_kind else None)
        b.give_back(p)
        return p
    assert isinstance(benchmark(pick_release), Peer)
    assert all(p.in_flight == 0 for p in peers)


def test_balancer_pick_with_shared_zone(benchmark):
    region = bytearray(region_size(2, [4]))
    zone = bytearray(zone_size(4))
    stats = Stats(region, 2, 0, [4], [zone])
    peers = [Peer(f"10.0.0.{i}", 8000, 1, None, i, max_conns=64) for i in range(4)]
    for p in peers:
        p.use_zone(stats, 0)
    b = make_balancer(peers)

    def pick_release():
        p = b.next_peer()
        b.give_back(p)
        return p
    assert isinstance(benchmark(pick_release), Peer)
    assert stats.shared_active(0, 0) == 0


def test_histogram_observe(benchmark):
    region = bytearray(region_size(1, [2]))
    stats = Stats(region, 1, 0, [2])
    benchmark(stats.observe_seconds, 0, "response", 0.0042)
    snap = stats.snapshot()["upstreams"][0]["response"]
    assert snap["count"] >= 1 and snap["count"] == sum(snap["buckets"])


def test_access_log_combined_line(benchmark):
    line = benchmark(combined, b"127.0.0.1", b"GET /items/42?x=1 HTTP/1.1", 200, 1234,
                     b"https://example.com/", b"Mozilla/5.0 (X11; Linux x86_64)", 1764403200.0)
    assert line.endswith(b'"https://example.com/" "Mozilla/5.0 (X11; Linux x86_64)"\n')


def test_access_log_json_value(benchmark):
    hostile = b'agent"},{"admin":true\\ \t\xc3\xa9'
    value = benchmark(log_value, hostile, 1)
    assert json.loads(b'{"ua":"' + value + b'"}') == {"ua": hostile.decode("utf-8")}
