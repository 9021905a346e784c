"""The bounded request queue (fastgw._core.queue.RequestQueue) on its own."""

import pytest

from fastgw._core.queue import RequestQueue


def drain(q, now=0.0):
    out = []
    while len(q):
        out.append(q.pop(now))
    return out


def test_fifo_within_a_class_and_capacity():
    q = RequestQueue(3, timeout=10)
    assert [q.push(x, 0, 0.0) >= 0 for x in "abc"] == [True, True, True]
    assert q.push("d", 0, 0.0) == -1 and q.displaced is None
    assert len(q) == 3
    assert drain(q) == ["a", "b", "c"]
    assert q.pop(0.0) is None


def test_slots_are_reused_around_and_around():
    q = RequestQueue(4, timeout=10)
    seen = []
    for i in range(1000):
        assert q.push(i, i % 3, float(i)) >= 0
        if len(q) == 4:
            seen.append(q.pop(float(i)))
    seen += drain(q)
    assert sorted(seen) == list(range(1000))
    assert q.stats()["depth"] == 0


def test_highest_priority_first_then_oldest():
    q = RequestQueue(10, timeout=10)
    for item, prio in [("low1", 5), ("hi1", 0), ("mid", 2), ("low2", 5), ("hi2", 0)]:
        q.push(item, prio, 0.0)
    assert drain(q) == ["hi1", "hi2", "mid", "low1", "low2"]


class Item:
    """A queued request stand-in: the queue matches items by identity."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


def test_removal_from_the_middle():
    q = RequestQueue(5, timeout=10)
    items = {x: Item(x) for x in "abcdef"}
    handles = {x: q.push(items[x], 1, 0.0) for x in "abcde"}
    assert q.remove(handles["c"], items["c"])
    assert not q.remove(handles["c"], items["c"])        # already gone
    assert not q.remove(handles["a"], Item("a"))         # not the item queued under it
    assert q.remove(handles["a"], items["a"]) and q.remove(handles["e"], items["e"])
    assert len(q) == 2
    assert q.push(items["f"], 1, 0.0) >= 0
    assert [i.name for i in drain(q)] == ["b", "d", "f"]


def test_a_full_queue_displaces_the_newest_of_the_lowest_class():
    q = RequestQueue(3, timeout=10)
    q.push("low-old", 5, 0.0)
    q.push("low-new", 5, 1.0)
    q.push("mid", 2, 2.0)
    assert q.push("high", 0, 3.0) >= 0
    assert q.displaced == "low-new"
    assert q.push("also-low", 5, 4.0) == -1        # not higher than what is there
    assert q.push("mid2", 2, 5.0) >= 0 and q.displaced == "low-old"
    assert drain(q) == ["high", "mid", "mid2"]


def test_equal_priority_never_displaces():
    q = RequestQueue(1, timeout=10)
    q.push("a", 3, 0.0)
    assert q.push("b", 3, 0.0) == -1 and q.displaced is None


def test_zero_capacity_refuses_everything():
    q = RequestQueue(0, timeout=10)
    assert q.push("a", 0, 0.0) == -1
    assert q.next_deadline() == 0


def test_expire_and_next_deadline():
    q = RequestQueue(10, timeout=2.0)
    q.push("a", 1, 0.0)
    q.push("b", 0, 1.0)
    q.push("c", 1, 1.5)
    assert q.next_deadline() == 2.0
    assert q.expire(1.9) == []
    assert q.expire(3.2) == ["b", "a"]
    assert q.next_deadline() == 3.5
    assert q.expire(10) == ["c"] and len(q) == 0


def test_priorities_are_clamped():
    q = RequestQueue(3, timeout=10)
    q.push("neg", -4, 0.0)
    q.push("huge", 99, 0.0)
    q.push("zero", 0, 0.0)
    assert drain(q) == ["neg", "zero", "huge"]


def test_drain_rate_gives_expected_wait_and_retry_after():
    q = RequestQueue(100, timeout=60)
    assert q.expected_wait(0, 0.0) == 0          # no history: queue, never guess
    assert q.retry_after(0.0) == 30              # the timeout, capped
    for i in range(20):
        q.push(i, 0, 0.0)
    for i in range(10):                          # one departure every 0.5 s
        q.pop(i * 0.5)
    assert q.stats()["interval"] == pytest.approx(0.5)
    # 10 waiting ahead + itself, 0.5 s each.
    assert q.expected_wait(0, 4.5) == pytest.approx(5.5)
    assert q.retry_after(4.5) == 6
    # A queue that stopped draining stops promising its old rate: nothing left for
    # 40 s, so a new arrival waits at least that long.
    assert q.expected_wait(0, 44.5) == pytest.approx(40.0)
    assert q.retry_after(44.5) == 30
    assert q.retry_after(44.5, cap=10) == 10


def test_last_wait_is_recorded():
    q = RequestQueue(2, timeout=10)
    q.push("a", 0, 1.0)
    q.pop(3.5)
    assert q.last_wait == pytest.approx(2.5)


def test_ahead_counts_equal_and_higher_priorities():
    q = RequestQueue(10, timeout=10)
    for prio in (0, 1, 1, 3, 5):
        q.push(prio, prio, 0.0)
    assert [q.ahead(p) for p in (0, 1, 2, 3, 9)] == [1, 3, 3, 4, 5]


def test_an_empty_queue_after_a_quiet_spell_promises_a_short_wait():
    """Regression: the stall rule once measured from the last departure even when
    nothing waited, so after a quiet second every arrival was rejected early."""
    q = RequestQueue(64, timeout=1.0)
    for i in range(4):
        q.push(i, 0, 0.0)
    for i in range(4):
        q.pop(0.01 * i)
    assert len(q) == 0
    assert q.expected_wait(0, 5.0) == pytest.approx(0.01)
    assert q.retry_after(5.0) == 1
    # Once something waits and nothing leaves, the stall counts from its arrival.
    q.push("w", 0, 5.0)
    assert q.expected_wait(0, 5.5) == pytest.approx(0.5)


def test_a_short_pause_does_not_refuse_a_deep_healthy_queue():
    """Regression (found by the -c1000 benchmark): 600 requests queued behind 64 slots
    draining 14,000 a second; a 20 ms pause between two departures (new upstream
    connections, a slow loop iteration) once multiplied by the depth predicted a
    12 s wait and refused requests early against a 10 s timeout."""
    q = RequestQueue(4096, timeout=10)
    t = 0.0
    for i in range(700):
        q.push(i, 0, t)
    for i in range(100):                 # departures ~70 us apart
        t += 0.00007
        q.pop(t)
    assert len(q) == 600
    assert q.expected_wait(0, t + 0.020) < 1.0
    # A real stall still counts: nothing has left for 11 s.
    assert q.expected_wait(0, t + 11.0) > q.timeout


def test_an_idle_spell_does_not_count_as_a_slow_drain():
    """Departures 0.1 s apart, then the queue is empty for 10 s, then a new burst: the
    interval stays about 0.1 s, so the burst is queued rather than refused early."""
    q = RequestQueue(16, timeout=2)
    for i in range(5):
        q.push(i, 0, 0.0)
    for i in range(5):
        q.pop(0.1 * (i + 1))
    assert q.stats()["interval"] == pytest.approx(0.1)
    q.push("a", 0, 10.5)
    q.push("b", 0, 10.5)
    q.pop(10.6)                        # the first departure after the quiet spell
    assert q.stats()["interval"] == pytest.approx(0.1)
    assert q.expected_wait(0, 10.6) < 0.5
