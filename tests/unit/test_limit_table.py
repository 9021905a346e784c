"""The shared limit tables against nginx's formulas (ngx_http_limit_req_module.c,
ngx_http_limit_conn_module.c): excess in milli-requests, rate in milli-requests per
second, time in ms."""

import mmap
import os

import pytest

from fastgw._core.limits import RESULTS, LimitTable, table_capacity

OK, BUSY, AGAIN, ERROR = RESULTS["OK"], RESULTS["BUSY"], RESULTS["AGAIN"], RESULTS["ERROR"]
RATE_10 = 10 * 1000          # 10r/s
BURST_5 = 5 * 1000


def table(size=64 * 1024):
    return LimitTable(mmap.mmap(-1, size), True, "test")


def test_capacity_per_megabyte_is_documented():
    assert 7000 < table_capacity(1 << 20) < 8000
    t = table(1 << 20)
    assert t.stats()["capacity"] == table_capacity(1 << 20)


def test_burst_then_refused_then_refilled_at_the_rate():
    t = table()
    now = 1_000_000
    assert t.req_check(b"k", RATE_10, BURST_5, now)[:2] == (OK, 0)   # a new key: excess 0
    for n in range(1, 6):
        assert t.req_check(b"k", RATE_10, BURST_5, now)[:2] == (OK, n * 1000)
    # The sixth within the same millisecond: 6000 > burst 5000, refused and not charged.
    assert t.req_check(b"k", RATE_10, BURST_5, now)[:2] == (BUSY, 6000)
    assert t.entry(b"k")[0] == 5000
    # 100 ms drain one request at 10r/s: 5000 - 10000 * 100 / 1000 + 1000.
    assert t.req_check(b"k", RATE_10, BURST_5, now + 100)[:2] == (OK, 5000)
    # 99 ms later, 990 milli-requests drained: 5000 - 990 + 1000 = 5010 > 5000.
    assert t.req_check(b"k", RATE_10, BURST_5, now + 199)[:2] == (BUSY, 5010)


def test_rate_per_minute_arithmetic():
    t = table()
    rate = 30 * 1000 // 60      # 30r/m: nginx stores 500 milli-requests per second
    now = 5_000
    assert t.req_check(b"m", rate, 0, now)[0] == OK
    # The first request left excess 0: 0 - 500 * 1999 / 1000 + 1000 = 1 > burst 0.
    assert t.req_check(b"m", rate, 0, now + 1999)[:2] == (BUSY, 1)
    assert t.req_check(b"m", rate, 0, now + 2000)[:2] == (OK, 0)


def test_long_idle_drains_to_zero_and_clock_steps_follow_nginx():
    t = table()
    now = 10_000_000
    for _ in range(6):
        t.req_check(b"c", RATE_10, BURST_5, now)
    # Hours idle: excess never goes below zero.
    assert t.req_check(b"c", RATE_10, BURST_5, now + 3_600_000)[:2] == (OK, 0)
    base = now + 3_600_000
    for _ in range(5):
        t.req_check(b"c", RATE_10, BURST_5, base)
    assert t.entry(b"c")[0] == 5000
    # The clock steps back a little: elapsed counts as 0 ms, nothing drains.
    assert t.req_check(b"c", RATE_10, BURST_5, base - 500)[:2] == (BUSY, 6000)
    # It steps back more than a minute: elapsed counts as 1 ms (10 milli-requests).
    assert t.req_check(b"c", RATE_10, BURST_5, base - 120_000)[:2] == (BUSY, 5990)


def test_a_held_lookup_is_charged_by_account():
    t = table()
    rc, excess, node, h = t.req_check(b"a", RATE_10, BURST_5, 1000, account=False)
    assert (rc, excess) == (AGAIN, 0)
    assert t.entry(b"a")[2] == 1             # held: count 1
    assert t.req_charge(node, h, RATE_10, 1000) == 1000   # 0 - 0 + 1000
    assert t.entry(b"a")[2] == 0


def test_long_keys_are_kept_by_digest():
    t = table()
    a, b = b"x" * 200, b"x" * 199 + b"y"
    t.req_check(a, RATE_10, 0, 1000)
    assert t.req_check(b, RATE_10, 0, 1000)[0] == OK   # a different key
    assert t.req_check(a, RATE_10, 0, 1000)[0] == BUSY


def test_full_table_evicts_the_least_recently_used_but_never_a_held_entry():
    t = table(4096)
    cap = t.stats()["capacity"]
    now = 1000
    for i in range(cap):
        assert t.req_check(b"key%d" % i, RATE_10, BURST_5, now)[0] == OK
    t.req_check(b"key0", RATE_10, BURST_5, now)           # key0 is now most recent
    assert t.req_check(b"new", RATE_10, BURST_5, now)[0] == OK
    assert t.entry(b"key1") is None and t.entry(b"key0") is not None
    assert t.stats()["evicted"] == 1
    # Hold every entry (lookups in flight): nothing can be evicted, the lookup fails.
    held = [t.req_check(b"h%d" % i, RATE_10, BURST_5, now, account=False) for i in range(cap)]
    assert all(h[0] == AGAIN for h in held)
    assert t.req_check(b"one more", RATE_10, BURST_5, now)[0] == ERROR
    assert t.stats()["full"] == 1


def test_drained_idle_entries_are_removed_first():
    t = table(4096)
    cap = t.stats()["capacity"]
    for i in range(cap):
        t.req_check(b"old%d" % i, RATE_10, BURST_5, 0)
    # A minute later every entry has drained: two are removed without force.
    assert t.req_check(b"fresh", RATE_10, BURST_5, 61_000)[0] == OK
    assert t.stats()["evicted"] == 0 and t.stats()["used"] == cap - 1


def test_limit_conn_counts_in_flight_and_forgets_idle_keys():
    t = table()
    takes = [t.conn_take(b"ip", 2) for _ in range(3)]
    assert [x[0] for x in takes] == [OK, OK, BUSY]
    t.conn_give(*takes[0][1:])
    again = t.conn_take(b"ip", 2)
    assert again[0] == OK
    t.conn_give(*takes[1][1:])
    t.conn_give(*again[1:])
    assert t.entry(b"ip") is None and t.stats()["used"] == 0


def test_limit_conn_full_table_is_an_error():
    t = table(4096)
    cap = t.stats()["capacity"]
    for i in range(cap):
        assert t.conn_take(b"c%d" % i, 1)[0] == OK
    assert t.conn_take(b"more", 1)[0] == ERROR


def test_lock_of_a_dead_holder_is_released_by_pid():
    t = table()
    pid = os.fork()
    if pid == 0:
        # The child takes the lock through a held lookup's path, then dies holding it.
        from fastgw._core import limits

        limits.set_process()
        t._test_hold_lock()
        os._exit(0)
    os.waitpid(pid, 0)
    assert t.locked_by() == pid
    assert t.release_if_held_by(pid + 1) is False
    assert t.release_if_held_by(pid) is True
    assert t.req_check(b"after", RATE_10, 0, 1)[0] == OK


@pytest.mark.parametrize("size", [0, 100])
def test_too_small_a_zone_is_refused(size):
    with pytest.raises(ValueError):
        LimitTable(bytearray(size), True, "tiny")
