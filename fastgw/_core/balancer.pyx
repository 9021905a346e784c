"""Peers and nginx's smooth weighted round robin.

With a ``zone``, a peer's ``max_conns`` holds across workers: its count of
requests in flight is a shared cell, and ``pick`` takes a slot with a
compare-and-swap (never more than ``max_conns`` in flight, whichever worker
asks); ``release`` gives it back.

``RoundRobin.pick`` is ngx_http_upstream_get_peer: every peer's current weight
grows by its effective weight, the largest wins and gives back the total. With
weights 5, 1, 1 the order is a a b a c a a: spread out, not bursty. Other
balancers (least_conn, hash, random two) come with the resilience issue and
will decorate the same Peer objects.
"""

from fastgw._core.counters cimport Stats, fg_atomic_add, fg_atomic_load, fg_try_acquire


cdef class Peer:
    """One upstream server as this worker sees it.

    ``host`` is an IP literal, ``port`` an int, ``weight`` >= 1, ``address``
    the ``host:port`` text logged as ``$upstream_addr``.
    """

    def __init__(self, str host, int port, int weight=1, str address=None, int index=0,
                 int max_conns=0):
        self.host = host
        self.port = port
        self.weight = weight
        self.max_conns = max_conns
        self.address = address or f"{host}:{port}"
        self.index = index
        self.current_weight = 0
        self.effective_weight = weight
        self.active = 0
        self.idle = []
        self.shared_active = NULL

    def use_zone(self, Stats stats, int upstream):
        """Count this peer's requests in flight in the zone of ``stats`` (upstream index)."""
        self.shared_active = stats.peer_shared(upstream, self.index)

    def __repr__(self):
        return f"Peer({self.address}, weight={self.weight})"


cdef inline bint _busy(Peer peer):
    if peer.max_conns <= 0:
        return False
    if peer.shared_active != NULL:
        return fg_atomic_load(peer.shared_active) >= peer.max_conns
    return peer.active >= peer.max_conns


cdef class RoundRobin:
    """Smooth weighted round robin over ``peers`` (a non-empty list of Peer).

    A peer with ``max_conns`` whose ``active`` count has reached it is
    skipped, as nginx does; ``pick`` returns None when every peer is full
    (the request then waits in the upstream's queue).
    """

    def __init__(self, list peers):
        if not peers:
            raise ValueError("an upstream needs at least one peer")
        self.peers = peers
        self.n = len(peers)
        self.bounded = any((<Peer>p).max_conns > 0 for p in peers)

    cdef Peer pick(self):
        """The next peer with a free slot, its zone slot taken; None when all are full."""
        cdef Peer best
        cdef int tries
        for tries in range(self.n + 1):
            best = self._choose()
            if best is None or best.shared_active == NULL or best.max_conns <= 0:
                return best
            if fg_try_acquire(best.shared_active, best.max_conns):
                return best
            # Another worker took the last slot meanwhile: it is full now, look again.
        return None

    cdef void release(self, Peer peer):
        """Give back a zone slot taken by pick (nothing to do without a zone)."""
        if peer.shared_active != NULL and peer.max_conns > 0:
            fg_atomic_add(peer.shared_active, -1)

    cdef Peer _choose(self):
        cdef Peer peer, best = None
        cdef int total = 0
        cdef Py_ssize_t i
        if self.n == 1:
            peer = <Peer>self.peers[0]
            if self.bounded and _busy(peer):
                return None
            return peer
        for i in range(self.n):
            peer = <Peer>self.peers[i]
            if self.bounded and _busy(peer):
                continue
            peer.current_weight += peer.effective_weight
            total += peer.effective_weight
            if best is None or peer.current_weight > best.current_weight:
                best = peer
        if best is not None:
            best.current_weight -= total
        return best

    def next_peer(self):
        """The next peer (Python entry point, for tests and tools)."""
        return self.pick()
