"""Peers and nginx's smooth weighted round robin: fastgw._core.balancer."""

from collections import Counter

import pytest

from fastgw._core.balancer import Peer, RoundRobin


def names(rr, n, by):
    return [by[id(rr.next_peer())] for _ in range(n)]


def make(weights):
    peers = [Peer("10.0.0.%d" % (i + 1), 8000 + i, w) for i, w in enumerate(weights)]
    by = {id(p): "abcdefgh"[i] for i, p in enumerate(peers)}
    return peers, by


def test_peer_attributes():
    p = Peer("10.0.0.1", 8080, 3)
    assert (p.host, p.port, p.weight) == ("10.0.0.1", 8080, 3)
    assert p.address == "10.0.0.1:8080"
    assert p.effective_weight == 3
    assert p.current_weight == 0
    assert p.active == 0
    assert p.idle == []
    assert Peer("10.0.0.1", 80).weight == 1
    assert Peer("::1", 80, 1, "[::1]:80").address == "[::1]:80"


def test_nginx_smooth_sequence_5_1_1():
    # The sequence documented in nginx's ngx_http_upstream_round_robin.c for weights 5, 1, 1.
    peers, by = make([5, 1, 1])
    rr = RoundRobin(peers)
    assert names(rr, 7, by) == list("aabacaa")
    # and it repeats with period sum(weights)
    assert names(rr, 14, by) == list("aabacaa") * 2


@pytest.mark.parametrize("weights, sequence", [
    ([1, 1, 1], "abcabc"),
    ([2, 1], "abaaba"),
    ([1, 2], "babbab"),
    ([3, 2], "ababaababa"),
])
def test_smooth_sequences(weights, sequence):
    peers, by = make(weights)
    assert "".join(names(RoundRobin(peers), len(sequence), by)) == sequence


@pytest.mark.parametrize("weights", [[5, 1, 1], [1, 1, 1], [3, 2], [7, 3, 1, 1], [1, 10], [4]])
@pytest.mark.parametrize("rounds", [1, 3])
def test_each_peer_gets_its_exact_share(weights, rounds):
    peers, by = make(weights)
    rr = RoundRobin(peers)
    counts = Counter(names(rr, rounds * sum(weights), by))
    assert counts == {"abcdefgh"[i]: rounds * w for i, w in enumerate(weights)}


def test_one_peer_is_always_picked():
    p = Peer("10.0.0.1", 80, 1)
    rr = RoundRobin([p])
    assert all(rr.next_peer() is p for _ in range(10))
    heavy = Peer("10.0.0.2", 80, 5)
    rr = RoundRobin([heavy])
    assert all(rr.next_peer() is heavy for _ in range(10))


def test_empty_peer_list_raises():
    with pytest.raises(ValueError):
        RoundRobin([])
