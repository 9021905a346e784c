"""Shared counters across generations: the retired block, carry at take-over, fold at exit."""

from fastgw._core.counters import CELLS
from fastgw.config.loader import load


def config(tmp_path, workers, upstreams):
    """A configuration with ``upstreams``: {name: [port, ...]} in that order."""
    blocks = "\n".join(
        f"upstream {name} {{ " + " ".join(f"server 127.0.0.1:{p};" for p in ports) + " }"
        for name, ports in upstreams.items())
    first = next(iter(upstreams))
    text = (f"worker_processes {workers};\nevents {{}}\nhttp {{\n{blocks}\n"
            f"server {{ listen 127.0.0.1:8080; location / {{ proxy_pass http://{first}; }} }}\n}}\n")
    path = tmp_path / f"c{workers}{len(upstreams)}.conf"
    path.write_text(text)
    return load(str(path), str(tmp_path))


def zones(cfg, previous=None, older=()):
    from fastgw.shm import Zones

    return Zones(cfg, previous, older)


def test_a_worker_block_counts_and_totals_sum_workers(tmp_path):
    z = zones(config(tmp_path, 2, {"app": [9001]}))
    w0, w1 = z.stats(0), z.stats(1)
    w0.add_cell(CELLS["requests"], 3)
    w1.add_cell(CELLS["requests"], 4)
    w1.add_cell(CELLS["active"], 2)
    snap = z.snapshot()
    assert snap["requests"] == 7 and snap["active"] == 2


def test_older_generation_counts_until_folded_then_from_the_retired_block(tmp_path):
    a = zones(config(tmp_path, 2, {"app": [9001], "api": [9002, 9003]}))
    a.stats(0).add_cell(CELLS["requests"], 10)
    a.stats(1).add_cell(CELLS["active"], 1)  # a connection still draining
    # The new generation lists its upstreams in another order, and has one less.
    b = zones(config(tmp_path, 1, {"api": [9003, 9002]}), previous=a, older=[a])
    b.stats(0).add_cell(CELLS["requests"], 1)
    snap = b.snapshot()
    assert snap["requests"] == 11 and snap["active"] == 1
    b.carry_from(a)   # a's retired block is empty: nothing changes
    assert b.snapshot()["requests"] == 11
    a.stats(1).add_cell(CELLS["active"], -1)
    b.fold(a)
    assert a.folded and a not in b.older
    snap = b.snapshot()
    assert snap["requests"] == 11 and snap["active"] == 0
    # A third generation carries b's retired block (which holds a's counts).
    c = zones(config(tmp_path, 1, {"api": [9003, 9002]}), previous=b, older=[b])
    c.carry_from(b)   # at take-over: b's retired block (a's counts) moves to c
    assert c.snapshot()["requests"] == 11
    b.stats(0).add_cell(CELLS["requests"], 2)
    c.fold(b)
    assert c.snapshot()["requests"] == 13


def test_status_codes_and_histograms_follow_the_upstream_name(tmp_path):
    from fastgw.observe.status import metrics_renderer

    a = zones(config(tmp_path, 1, {"app": [9001], "api": [9002]}))
    sa = a.stats(0)
    sa.add_cell(20 + 503, 2)  # two 503s (status cells start at 20)
    b = zones(config(tmp_path, 1, {"api": [9002], "app": [9001]}), previous=a, older=[a])
    sa.observe_seconds(a.upstreams.index("api"), "response", 0.003)
    sa.observe_seconds(a.upstreams.index("api"), "queue", 0.25)
    b.fold(a)
    snap = b.snapshot()
    assert snap["status"] == {503: 2}
    api = snap["upstreams"][b.upstreams.index("api")]
    app = snap["upstreams"][b.upstreams.index("app")]
    assert api["response"]["count"] == 1 and app["response"]["count"] == 0
    assert api["queue"]["count"] == 1 and api["queue"]["sum_seconds"] == 0.25
    text = metrics_renderer(b.stats(-1), b)().decode()
    assert 'fastgw_upstream_response_seconds_count{upstream="api"} 1.0' in text
    assert 'fastgw_upstream_queue_wait_seconds_bucket{le="0.25",upstream="api"} 1.0' in text
    assert 'fastgw_upstream_queue_wait_seconds_bucket{le="0.1",upstream="api"} 0.0' in text
    assert 'fastgw_upstream_request_seconds_count{upstream="app"} 0.0' in text


def test_before_the_take_over_the_previous_retired_counts_are_read_in_place(tmp_path):
    a = zones(config(tmp_path, 1, {"app": [9001]}))
    a.stats(0).add_cell(CELLS["requests"], 7)
    b = zones(config(tmp_path, 1, {"app": [9001]}), previous=a, older=[a])
    b.fold(a)                           # a's workers gone: b's retired block has 7
    c = zones(config(tmp_path, 1, {"app": [9001]}), previous=b, older=[b])
    c.stats(0).add_cell(CELLS["requests"], 1)
    assert c.snapshot()["requests"] == 8      # pending: b's retired block read in place
    c.carry_from(b)
    assert c.snapshot()["requests"] == 8      # taken over: carried, counted once
    c.fold(b)
    assert c.snapshot()["requests"] == 8
