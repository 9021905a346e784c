"""Micro benchmarks of the limit tables (pytest-benchmark).

CI runs them as plain tests (timing disabled in pyproject.toml); time them by hand:

    .venv/bin/pytest benchmarks/micro --benchmark-enable

The check is what a request pays per zone: one lock, one hash lookup, the bucket
arithmetic, one unlock.
"""

import mmap

from fastgw._core.limits import RESULTS, LimitTable

RATE = 1_000_000 * 1000       # 1,000,000 r/s: every check passes
BURST = 0


def _table():
    return LimitTable(mmap.mmap(-1, 1 << 20), True, "bench")


def test_limit_req_check_existing_key(benchmark):
    t = _table()
    now = [1000]
    t.req_check(b"\x7f\x00\x00\x01", RATE, BURST, now[0])

    def check():
        now[0] += 1
        return t.req_check(b"\x7f\x00\x00\x01", RATE, BURST, now[0])[0]
    assert benchmark(check) == RESULTS["OK"]


def test_limit_req_check_many_keys(benchmark):
    t = _table()
    keys = [b"key-%d" % i for i in range(5000)]
    state = {"i": 0, "now": 1000}

    def check():
        state["i"] = (state["i"] + 1) % len(keys)
        state["now"] += 1
        return t.req_check(keys[state["i"]], RATE, BURST, state["now"])[0]
    assert benchmark(check) == RESULTS["OK"]


def test_limit_conn_take_and_give(benchmark):
    t = _table()

    def take_give():
        rc, node, h = t.conn_take(b"\x7f\x00\x00\x01", 10)
        t.conn_give(node, h)
        return rc
    assert benchmark(take_give) == RESULTS["OK"]
    assert t.stats()["used"] == 0
