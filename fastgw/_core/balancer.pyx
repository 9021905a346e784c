"""Peers, their health, and the balancers that choose among them (nginx's upstream modules).

A peer's state lives in cells (counters.pxd P_*): requests in flight, passive
failures, and the active health check's verdict. With a ``zone`` the cells
are in shared memory and every worker reads and updates the same ones
(atomics, never a lock, never across an await); without one each worker has
its own, as in nginx.

Whether a peer may take a request:

- ``down`` in the configuration, or out by the active health check: never;
- ``max_fails`` failures counted within ``fail_timeout`` (nginx's passive
  health, ngx_http_upstream_round_robin.c): out until ``fail_timeout`` has
  passed since the last failure; then one request, and one only across all
  workers (a compare-and-swap on the window's start), tries it: success
  brings it back, failure takes it out again;
- ``max_conns`` requests in flight: busy (the request may wait in the queue);
- a peer this request already tried (``tried``): skipped.

``backup`` peers serve only when no primary peer can (round robin and
least_conn, as nginx). ``pick`` returns None when nothing can serve;
``all_out`` then tells "nothing is live" (502, no live upstreams) from
"everything is busy" (the queue).

Balancers: ``RoundRobin`` is ngx_http_upstream_get_peer's smooth weighted
round robin (weights 5, 1, 1 give a a b a c a a); ``LeastConn`` the fewest in
flight per unit of weight, ties by round robin; ``Hash`` a key's hash modulo
the total weight with rehashing past unusable peers (``hash KEY``,
``ip_hash``), or a ketama ring of 160 points per unit of weight
(``consistent``); ``Random`` a weighted random peer, or the less loaded of
two (``random two``).
"""

import os
import time

from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from fastgw._core.counters cimport (
    P_ACCESSED, P_ACTIVE, P_CHECKED, P_FAILS, P_HC_CHECKS, P_HC_DOWN, P_HC_FAILS, P_HC_PASSES,
    PEER_CELLS, Stats, fg_atomic_add, fg_atomic_cas, fg_atomic_load, fg_atomic_store,
    fg_try_acquire, fnv1a,
)

from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

# Rehashes before a hash balancer falls back to round robin (nginx: 20).
cdef int REHASH_TRIES = 20
# Ring points per unit of weight (ketama; nginx: 160).
cdef int RING_POINTS = 160

cdef enum:
    USABLE = 0
    BUSY = 1
    OUT = 2
    TRIED = 3


cdef inline int64_t _now_ms() nogil:
    # CLOCK_MONOTONIC is one clock for all processes: workers compare each
    # other's timestamps in the zone.
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec * 1000 + ts.tv_nsec // 1000000


cdef inline uint64_t _mix(uint64_t h) nogil:
    # murmur3's fmix64: FNV's low bits are weak, and the modulo reads them.
    h ^= h >> 33
    h *= 0xff51afd7ed558ccdULL
    h ^= h >> 33
    h *= 0xc4ceb9fe1a85ec53ULL
    h ^= h >> 33
    return h


cdef uint64_t hash_key(bytes key):
    """The 64-bit hash a hash balancer uses for ``key`` (FNV-1a, then fmix64)."""
    return _mix(fnv1a(key))


def key_hash(bytes key):
    """``hash_key`` from Python."""
    return hash_key(key)


cdef class Peer:
    """One upstream server as this worker sees it.

    ``host`` is an IP literal, ``port`` an int, ``weight`` >= 1, ``address``
    the ``host:port`` text logged as ``$upstream_addr``, ``index`` its place
    in the upstream (and in the zone). ``max_conns`` 0 is unbounded;
    ``max_fails`` 0 never takes the peer out; ``fail_timeout`` in seconds;
    ``checked``: the upstream has active health checks (their verdict applies).
    """

    def __init__(self, str host, int port, int weight=1, str address=None, int index=0,
                 int max_conns=0, int max_fails=1, double fail_timeout=10.0, bint backup=False,
                 bint down=False, bint checked=True):
        cdef int i
        self.host = host
        self.port = port
        self.weight = weight
        self.max_conns = max_conns
        self.max_fails = max_fails
        self.fail_timeout = fail_timeout
        self.fail_timeout_ms = <int64_t>(fail_timeout * 1000)
        self.backup = backup
        self.down = down
        self.checked = checked
        self.address = address or f"{host}:{port}"
        self.address_bytes = self.address.encode("ascii")
        self.index = index
        self.current_weight = 0
        self.effective_weight = weight
        self.active = 0
        self.idle = []
        for i in range(PEER_CELLS):
            self.local[i] = 0
        self.cells = self.local
        self.zoned = False

    def use_zone(self, Stats stats, int upstream):
        """Keep this peer's state in the zone of ``stats`` (upstream index): shared by all workers."""
        self.cells = stats.peer_shared(upstream, self.index)
        self.zone_owner = stats
        self.zoned = True

    @property
    def in_flight(self):
        """Requests in flight to the peer (all workers with a zone, else this one)."""
        return fg_atomic_load(self.cells + P_ACTIVE)

    @property
    def fails(self):
        """Failed attempts counted towards ``max_fails``."""
        return fg_atomic_load(self.cells + P_FAILS)

    @property
    def checks(self):
        """Active health checks recorded for the peer."""
        return fg_atomic_load(self.cells + P_HC_CHECKS)

    def state(self):
        """``"down"`` (configured), ``"unhealthy"`` (active check), ``"failed"`` (max_fails,
        within fail_timeout) or ``"up"``."""
        if self.down:
            return "down"
        if self.checked and fg_atomic_load(self.cells + P_HC_DOWN):
            return "unhealthy"
        if (self.max_fails > 0 and fg_atomic_load(self.cells + P_FAILS) >= self.max_fails
                and _now_ms() - fg_atomic_load(self.cells + P_CHECKED) <= self.fail_timeout_ms):
            return "failed"
        return "up"

    def health_report(self, bint ok, int fails, int passes):
        """Record one active health check: ``ok`` or not.

        The peer goes out after ``fails`` failed checks in a row and comes back
        after ``passes`` passed ones in a row (its passive failures are then
        forgotten). Returns ``"down"`` or ``"up"`` when the verdict changed,
        else None.
        """
        cdef int64_t* c = self.cells
        fg_atomic_add(c + P_HC_CHECKS, 1)
        if ok:
            fg_atomic_store(c + P_HC_FAILS, 0)
            if fg_atomic_add(c + P_HC_PASSES, 1) >= passes and fg_atomic_load(c + P_HC_DOWN):
                fg_atomic_store(c + P_FAILS, 0)
                fg_atomic_store(c + P_HC_DOWN, 0)
                return "up"
        else:
            fg_atomic_store(c + P_HC_PASSES, 0)
            if fg_atomic_add(c + P_HC_FAILS, 1) >= fails and not fg_atomic_load(c + P_HC_DOWN):
                fg_atomic_store(c + P_HC_DOWN, 1)
                return "down"
        return None

    def clear_health(self):
        """Forget the active health check's verdict and runs (the check was removed)."""
        fg_atomic_store(self.cells + P_HC_DOWN, 0)
        fg_atomic_store(self.cells + P_HC_FAILS, 0)
        fg_atomic_store(self.cells + P_HC_PASSES, 0)

    def __repr__(self):
        return f"Peer({self.address}, weight={self.weight})"


cdef inline int _state(Peer p, object tried, int64_t* now):
    cdef int64_t* c = p.cells
    if tried is not None and p.index in tried:
        return TRIED
    if p.down or (p.checked and fg_atomic_load(c + P_HC_DOWN)):
        # (A verdict left in the zone by checks that a reload removed is ignored.)
        return OUT
    if p.max_fails > 0 and fg_atomic_load(c + P_FAILS) >= p.max_fails:
        if now[0] == 0:
            now[0] = _now_ms()
        if now[0] - fg_atomic_load(c + P_CHECKED) <= p.fail_timeout_ms:
            return OUT
    if p.max_conns > 0 and fg_atomic_load(c + P_ACTIVE) >= p.max_conns:
        return BUSY
    return USABLE


cdef inline bint _take(Peer p, int64_t* now):
    """Claim a request's place on ``p``: False when another worker got there first."""
    cdef int64_t* c = p.cells
    cdef int64_t fails, checked
    if p.max_fails > 0:
        fails = fg_atomic_load(c + P_FAILS)
        if fails > 0:
            if now[0] == 0:
                now[0] = _now_ms()
            checked = fg_atomic_load(c + P_CHECKED)
            if now[0] - checked > p.fail_timeout_ms:
                # A new window starts (nginx's `checked`); for a peer that is out it
                # is the trial, and only the worker whose swap succeeds sends it.
                if not fg_atomic_cas(c + P_CHECKED, checked, now[0]) and fails >= p.max_fails:
                    return False
    if p.max_conns > 0:
        return fg_try_acquire(c + P_ACTIVE, p.max_conns)
    fg_atomic_add(c + P_ACTIVE, 1)
    return True


cdef Peer _round_robin(list peers, object tried, int64_t* now, Peer like=None):
    """Smooth weighted round robin over the usable peers of ``peers`` (with ``like``: only
    those exactly as loaded as it, for least_conn's ties)."""
    cdef Peer peer, best = None
    cdef int total = 0
    cdef Py_ssize_t i, n = len(peers)
    for i in range(n):
        peer = <Peer>peers[i]
        if _state(peer, tried, now) != USABLE:
            continue
        if like is not None and (_less_loaded(peer, like) or _less_loaded(like, peer)):
            continue
        peer.current_weight += peer.effective_weight
        total += peer.effective_weight
        if best is None or peer.current_weight > best.current_weight:
            best = peer
    if best is not None:
        best.current_weight -= total
    return best


cdef inline bint _less_loaded(Peer a, Peer b):
    # a.active / a.weight < b.active / b.weight, without division.
    return (fg_atomic_load(a.cells + P_ACTIVE) * b.weight
            < fg_atomic_load(b.cells + P_ACTIVE) * a.weight)


cdef class Balancer:
    """Chooses a peer of an upstream for each request (base of the balancing methods).

    ``peers`` is a non-empty list of Peer in index order (ValueError
    otherwise); ``primary`` and ``backups`` split it. Subclasses implement
    ``_choose``.
    """

    def __init__(self, list peers):
        if not peers:
            raise ValueError("an upstream needs at least one peer")
        self.peers = peers
        self.primary = [p for p in peers if not (<Peer>p).backup]
        self.backups = [p for p in peers if (<Peer>p).backup]
        self.n = len(peers)
        self.key_kind = 0
        self.key_parts = None
        self.all_out = False
        self.rng = (<uint64_t>os.getpid() << 32) ^ <uint64_t>time.monotonic_ns() | 1

    cdef Peer pick(self, uint64_t key, object tried):
        """The peer for a request with hash ``key`` (0 when the method has none), its place
        taken; None when none can serve (``all_out`` then says whether any is live).

        ``tried``: None, or a set of peer indices this request already tried.
        """
        cdef int64_t now = 0
        cdef Peer peer
        cdef int attempt
        for attempt in range(self.n + 2):
            peer = self._choose(self.primary, key, tried, &now)
            if peer is None and self.backups:
                peer = _round_robin(self.backups, tried, &now)
            if peer is None:
                break
            if _take(peer, &now):
                self.all_out = False
                return peer
            # Another worker took its last slot or its trial meanwhile: look again.
        self.all_out = not self._any_live(tried)
        return None

    cdef Peer _choose(self, list peers, uint64_t key, object tried, int64_t* now):
        return _round_robin(peers, tried, now)

    cdef bint _any_live(self, object tried):
        cdef int64_t now = 0
        cdef Peer peer
        for peer in self.peers:
            if _state(peer, tried, &now) <= BUSY:
                return True
        return False

    cdef void release(self, Peer peer):
        """Give back the place ``pick`` took on ``peer``."""
        fg_atomic_add(peer.cells + P_ACTIVE, -1)

    cdef void retake(self, Peer peer):
        """Take back at once a place just released (same request, fresh connection)."""
        fg_atomic_add(peer.cells + P_ACTIVE, 1)

    cdef bint failed(self, Peer peer):
        """Count a failed attempt (nginx's max_fails); True when it takes the peer out."""
        cdef int64_t now
        if peer.max_fails <= 0:
            return False
        now = _now_ms()
        fg_atomic_store(peer.cells + P_ACCESSED, now)
        fg_atomic_store(peer.cells + P_CHECKED, now)
        return fg_atomic_add(peer.cells + P_FAILS, 1) == peer.max_fails

    cdef void succeeded(self, Peer peer):
        """A request to ``peer`` went well: after a trial (or a quiet window) its failures
        are forgotten."""
        cdef int64_t* c = peer.cells
        if (peer.max_fails > 0 and fg_atomic_load(c + P_FAILS) > 0
                and fg_atomic_load(c + P_ACCESSED) < fg_atomic_load(c + P_CHECKED)):
            fg_atomic_store(c + P_FAILS, 0)

    # -- Python entry points (tests and tools) --------------------------------------------
    def next_peer(self, key=None, tried=None):
        """``pick`` from Python: ``key`` (bytes, hashed as the proxy does) or None."""
        return self.pick(key_hash(key) if key is not None else 0, tried)

    def give_back(self, Peer peer):
        """``release`` from Python."""
        self.release(peer)

    def report(self, Peer peer, bint ok):
        """``succeeded`` / ``failed`` from Python; returns whether the peer went out."""
        if ok:
            self.succeeded(peer)
            return False
        return self.failed(peer)


cdef class RoundRobin(Balancer):
    """nginx's smooth weighted round robin (the default)."""


cdef class LeastConn(Balancer):
    """nginx's ``least_conn``: the fewest requests in flight per unit of weight."""

    cdef Peer _choose(self, list peers, uint64_t key, object tried, int64_t* now):
        cdef Peer peer, best = None
        cdef int ties = 0
        cdef Py_ssize_t i, n = len(peers)
        for i in range(n):
            peer = <Peer>peers[i]
            if _state(peer, tried, now) != USABLE:
                continue
            if best is None or _less_loaded(peer, best):
                best = peer
                ties = 1
            elif not _less_loaded(best, peer):
                ties += 1
        if ties <= 1:
            return best
        # Equally loaded: weighted round robin among them, as nginx (no list per pick).
        return _round_robin(peers, tried, now, best)


cdef class Hash(Balancer):
    """``hash KEY [consistent]`` and ``ip_hash``: the key's hash picks the peer.

    Modulo the total weight with up to 20 rehashes past unusable peers, then
    round robin (nginx); or, with ``consistent``, the first point at or after
    the key's on a ring of 160 points per unit of weight, walking on past
    unusable peers.
    """

    def __init__(self, list peers, bint consistent=False):
        cdef int i, j, k
        super().__init__(peers)
        self.consistent = consistent
        self.total_weight = sum((<Peer>p).weight for p in self.primary)
        self.points = NULL
        self.point_peer = NULL
        self.npoints = 0
        if consistent:
            ring = []
            for i, p in enumerate(self.primary):
                for j in range(RING_POINTS * (<Peer>p).weight):
                    point = <uint32_t>(_mix(fnv1a(f"{(<Peer>p).address}-{j}".encode())) >> 32)
                    ring.append((point, i))
            ring.sort()
            self.npoints = len(ring)
            self.points = <uint32_t*>malloc(sizeof(uint32_t) * self.npoints)
            self.point_peer = <int*>malloc(sizeof(int) * self.npoints)
            if self.points == NULL or self.point_peer == NULL:
                raise MemoryError()
            for k in range(self.npoints):
                self.points[k] = ring[k][0]
                self.point_peer[k] = ring[k][1]

    def __dealloc__(self):
        free(self.points)
        free(self.point_peer)

    cdef Peer _choose(self, list peers, uint64_t key, object tried, int64_t* now):
        cdef Peer peer
        cdef int64_t w
        cdef int attempt, lo, hi, mid, k
        cdef uint32_t point
        cdef Py_ssize_t i, n = len(peers)
        if self.consistent:
            if self.npoints == 0:
                return None
            point = <uint32_t>(key >> 32)
            lo, hi = 0, self.npoints
            while lo < hi:
                mid = (lo + hi) // 2
                if self.points[mid] < point:
                    lo = mid + 1
                else:
                    hi = mid
            for k in range(self.npoints):
                peer = <Peer>peers[self.point_peer[(lo + k) % self.npoints]]
                if _state(peer, tried, now) == USABLE:
                    return peer
            return None
        if self.total_weight <= 0:
            return None
        for attempt in range(REHASH_TRIES):
            w = <int64_t>(key % <uint64_t>self.total_weight)
            for i in range(n):
                peer = <Peer>peers[i]
                if w < peer.weight:
                    break
                w -= peer.weight
            if _state(peer, tried, now) == USABLE:
                return peer
            key = _mix(key + <uint64_t>attempt + 1)
        return _round_robin(peers, tried, now)


cdef class Random(Balancer):
    """``random [two]``: a peer drawn by weight; with ``two`` the less loaded of two draws."""

    def __init__(self, list peers, bint two=False):
        super().__init__(peers)
        self.two = two
        self.total_weight = sum((<Peer>p).weight for p in self.primary)

    cdef Peer _draw(self, list peers, object tried, int64_t* now, Peer other):
        cdef Peer peer = None
        cdef int64_t w
        cdef int attempt
        cdef Py_ssize_t i, n = len(peers)
        if self.total_weight <= 0:
            return None
        for attempt in range(REHASH_TRIES):
            # xorshift64: fast and plenty for spreading load.
            self.rng ^= self.rng << 13
            self.rng ^= self.rng >> 7
            self.rng ^= self.rng << 17
            w = <int64_t>(self.rng % <uint64_t>self.total_weight)
            for i in range(n):
                peer = <Peer>peers[i]
                if w < peer.weight:
                    break
                w -= peer.weight
            if peer is not other and _state(peer, tried, now) == USABLE:
                return peer
        return None

    cdef Peer _choose(self, list peers, uint64_t key, object tried, int64_t* now):
        cdef Peer a = self._draw(peers, tried, now, None)
        cdef Peer b
        if a is None:
            return _round_robin(peers, tried, now)
        if not self.two or len(peers) < 2:
            return a
        b = self._draw(peers, tried, now, a)
        if b is not None and _less_loaded(b, a):
            return b
        return a


def make_balancer(list peers, tuple method=("round_robin",)):
    """The Balancer for an upstream's ``method`` (fastgw.config.model.Upstream.balancer)."""
    kind = method[0]
    if kind == "least_conn":
        return LeastConn(peers)
    if kind == "ip_hash":
        b = Hash(peers, False)
        b.key_kind = 1
        return b
    if kind == "hash":
        b = Hash(peers, method[2])
        b.key_kind = 2
        b.key_parts = method[1].parts
        return b
    if kind == "random":
        return Random(peers, method[1])
    return RoundRobin(peers)
