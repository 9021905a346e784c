"""Balancing methods, passive and active health, backup/down: fastgw._core.balancer directly."""

import time
from collections import Counter

import pytest

from fastgw._core.balancer import (Hash, LeastConn, Peer, Random, RoundRobin, key_hash,
                                   make_balancer)
from fastgw._core.counters import Stats, region_size, zone_size


def peers(*weights, **opts):
    return [Peer(f"10.0.0.{i + 1}", 8000, w, None, i, **opts) for i, w in enumerate(weights)]


def name(p):
    return None if p is None else "abcdefgh"[p.index]


# -- least_conn ----------------------------------------------------------------------------

def test_least_conn_prefers_the_idle_peer():
    ps = peers(1, 1)
    lc = LeastConn(ps)
    first = lc.next_peer()
    # The first peer holds a request: every new one goes to the other until it
    # holds as many.
    assert lc.next_peer() is not first
    other = ps[1 - first.index]
    lc.give_back(other)
    assert [lc.next_peer() is other for _ in range(1)] == [True]


def test_least_conn_counts_per_unit_of_weight():
    ps = peers(2, 1)
    lc = LeastConn(ps)
    taken = [name(lc.next_peer()) for _ in range(6)]
    # a (weight 2) holds twice as many as b at every balance point.
    assert Counter(taken) == {"a": 4, "b": 2}


def test_least_conn_ties_go_round_robin():
    ps = peers(1, 1, 1)
    lc = LeastConn(ps)
    seq = []
    for _ in range(6):
        p = lc.next_peer()
        seq.append(name(p))
        lc.give_back(p)  # always idle again: every pick is a tie
    assert seq == list("abcabc")


# -- hash ----------------------------------------------------------------------------------

KEYS = [f"/item/{i}".encode() for i in range(2000)]


def mapping(b):
    out = {}
    for k in KEYS:
        p = b.next_peer(k)
        b.give_back(p)
        out[k] = p.address
    return out


@pytest.mark.parametrize("consistent", [False, True])
def test_hash_keeps_each_key_on_one_peer(consistent):
    b = Hash(peers(1, 1, 1, 1), consistent)
    first = mapping(b)
    assert mapping(b) == first
    counts = Counter(first.values())
    assert len(counts) == 4 and min(counts.values()) > len(KEYS) / 4 * 0.6


def test_consistent_hash_moves_only_the_removed_peers_keys():
    four = [Peer(f"10.0.0.{i + 1}", 8000, 1, None, i) for i in range(4)]
    before = mapping(Hash(four, True))
    three = [Peer(f"10.0.0.{i + 1}", 8000, 1, None, i) for i in range(3)]
    after = mapping(Hash(three, True))
    moved = [k for k in KEYS if before[k] != after[k]]
    # Only keys of the removed peer move, and they are about 1/4 of all.
    assert all(before[k] == "10.0.0.4:8000" for k in moved)
    assert 0.15 < len(moved) / len(KEYS) < 0.35


def test_plain_hash_follows_weights_and_skips_an_out_peer():
    ps = peers(3, 1)
    b = Hash(ps, False)
    counts = Counter(mapping(b).values())
    assert 0.68 < counts["10.0.0.1:8000"] / len(KEYS) < 0.82
    ps[0].health_report(False, 1, 1)
    assert set(mapping(b).values()) == {"10.0.0.2:8000"}


def test_consistent_hash_sends_an_out_peers_keys_to_others_and_back():
    ps = peers(1, 1, 1)
    b = Hash(ps, True)
    before = mapping(b)
    ps[1].health_report(False, 1, 1)
    during = mapping(b)
    assert "10.0.0.2:8000" not in during.values()
    assert all(during[k] == before[k] for k in KEYS if before[k] != "10.0.0.2:8000")
    ps[1].health_report(True, 1, 1)
    assert mapping(b) == before


def test_make_balancer_kinds():
    from fastgw.config.variables import compile_template

    assert isinstance(make_balancer(peers(1)), RoundRobin)
    assert isinstance(make_balancer(peers(1), ("least_conn",)), LeastConn)
    ip = make_balancer(peers(1), ("ip_hash",))
    assert isinstance(ip, Hash) and ip.key_kind == 1
    h = make_balancer(peers(1), ("hash", compile_template("$request_uri"), True))
    assert isinstance(h, Hash) and h.key_kind == 2 and h.key_parts
    assert isinstance(make_balancer(peers(1), ("random", True)), Random)
    assert key_hash(b"x") == key_hash(b"x") != key_hash(b"y")


# -- random --------------------------------------------------------------------------------

def test_random_follows_weights():
    b = Random(peers(3, 1))
    counts = Counter()
    for _ in range(4000):
        p = b.next_peer()
        b.give_back(p)
        counts[name(p)] += 1
    assert 0.70 < counts["a"] / 4000 < 0.80


def test_random_two_prefers_the_less_loaded():
    ps = peers(1, 1)
    b = Random(ps, True)
    for _ in range(5):
        # a holds 5 requests (taken directly through the balancer)
        while True:
            p = b.next_peer()
            if p.index == 0:
                break
            b.give_back(p)
    counts = Counter()
    for _ in range(200):
        p = b.next_peer()
        b.give_back(p)
        counts[name(p)] += 1
    # Two draws land on b unless both hit a (1 in 4 when the draws were independent;
    # the second draw is never the first's peer, so always b).
    assert counts["b"] == 200


# -- passive health (max_fails / fail_timeout) ------------------------------------------------

def test_max_fails_takes_a_peer_out_for_fail_timeout_then_one_trial():
    ps = peers(1, 1, max_fails=1, fail_timeout=0.5)
    rr = RoundRobin(ps)
    assert rr.report(ps[0], False) is True  # went out
    assert ps[0].state() == "failed"
    assert {name(rr.next_peer()) for _ in range(10)} == {"b"}
    time.sleep(0.6)
    picks = [name(rr.next_peer()) for _ in range(10)]
    # One trial request, and one only, until its outcome is known.
    assert picks.count("a") == 1
    rr.report(ps[0], True)
    assert ps[0].fails == 0 and ps[0].state() == "up"
    assert "a" in {name(rr.next_peer()) for _ in range(4)}


def test_a_failed_trial_takes_the_peer_out_again():
    ps = peers(1, 1, max_fails=1, fail_timeout=0.3)
    rr = RoundRobin(ps)
    rr.report(ps[0], False)
    time.sleep(0.4)
    assert [name(rr.next_peer()) for _ in range(4)].count("a") == 1
    assert rr.report(ps[0], False) is False  # already counted out: no new transition
    assert {name(rr.next_peer()) for _ in range(6)} == {"b"}


def test_max_fails_counts_within_the_window():
    ps = peers(1, 1, max_fails=3, fail_timeout=10)
    rr = RoundRobin(ps)
    assert rr.report(ps[0], False) is False
    assert rr.report(ps[0], False) is False
    assert ps[0].state() == "up"
    assert rr.report(ps[0], False) is True
    assert ps[0].state() == "failed"


def test_max_fails_zero_never_takes_out():
    ps = peers(1, 1, max_fails=0)
    rr = RoundRobin(ps)
    for _ in range(5):
        assert rr.report(ps[0], False) is False
    assert ps[0].state() == "up" and ps[0].fails == 0


# -- down, backup, all out, busy, tried --------------------------------------------------------

def test_down_peer_is_never_picked_and_all_down_is_all_out():
    ps = peers(1, 1)
    ps[0].down = True
    rr = RoundRobin(ps)
    assert {name(rr.next_peer()) for _ in range(5)} == {"b"}
    ps[1].health_report(False, 1, 1)
    assert rr.next_peer() is None and rr.all_out


def test_busy_peers_are_not_all_out():
    ps = peers(1, max_conns=1)
    rr = RoundRobin(ps)
    assert rr.next_peer() is ps[0]
    assert rr.next_peer() is None and not rr.all_out
    rr.give_back(ps[0])
    assert rr.next_peer() is ps[0]


def test_backup_serves_only_when_no_primary_can():
    ps = [Peer("10.0.0.1", 80, 1, None, 0), Peer("10.0.0.2", 80, 1, None, 1),
          Peer("10.0.0.9", 80, 1, None, 2, backup=True)]
    rr = RoundRobin(ps)
    assert "c" not in {name(rr.next_peer()) for _ in range(10)}
    ps[0].health_report(False, 1, 1)
    ps[1].health_report(False, 1, 1)
    assert {name(rr.next_peer()) for _ in range(5)} == {"c"}
    ps[1].health_report(True, 1, 1)
    assert {name(rr.next_peer()) for _ in range(5)} == {"b"}


def test_tried_peers_are_skipped():
    ps = peers(1, 1, 1)
    rr = RoundRobin(ps)
    assert {name(rr.next_peer(None, {0, 2})) for _ in range(4)} == {"b"}
    assert rr.next_peer(None, {0, 1, 2}) is None and rr.all_out


# -- active health verdicts -------------------------------------------------------------------

def test_health_report_needs_fails_and_passes_in_a_row():
    p = Peer("10.0.0.1", 80)
    assert p.health_report(False, 2, 2) is None
    assert p.health_report(True, 2, 2) is None     # breaks the run of failures
    assert p.health_report(False, 2, 2) is None
    assert p.health_report(False, 2, 2) == "down"
    assert p.state() == "unhealthy"
    assert p.health_report(True, 2, 2) is None
    assert p.health_report(True, 2, 2) == "up"
    assert p.state() == "up" and p.checks == 6


# -- shared state across workers -----------------------------------------------------------------

def two_workers(n):
    region = bytearray(region_size(2, [n]))
    zone = bytearray(zone_size(n))
    views = [Stats(region, 2, slot, [n], [zone]) for slot in (0, 1)]
    balancers = []
    for stats in views:
        ps = peers(*([1] * n), max_fails=1, fail_timeout=0.3)
        for p in ps:
            p.use_zone(stats, 0)
        balancers.append((RoundRobin(ps), ps))
    return balancers


def test_zone_shares_failures_and_gives_the_trial_to_one_worker():
    (rr0, ps0), (rr1, ps1) = two_workers(2)
    rr0.report(ps0[0], False)
    # Worker 1 sees worker 0's verdict at once.
    assert ps1[0].state() == "failed"
    assert {name(rr1.next_peer()) for _ in range(4)} == {"b"}
    time.sleep(0.4)
    trials = [name(rr0.next_peer()) for _ in range(3)] + [name(rr1.next_peer()) for _ in range(3)]
    assert trials.count("a") == 1
    ps1[1].health_report(False, 1, 1)
    assert ps0[1].state() == "unhealthy"
    assert ps0[0].in_flight + ps0[1].in_flight == ps1[0].in_flight + ps1[1].in_flight


def test_a_verdict_is_ignored_without_health_checks():
    p = Peer("10.0.0.1", 80, checked=False)
    p.health_report(False, 1, 1)  # a verdict left in the zone by a removed check
    assert p.state() == "up"
    assert RoundRobin([p]).next_peer() is p
