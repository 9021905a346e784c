"""Peers and nginx's smooth weighted round robin.

``RoundRobin.pick`` is ngx_http_upstream_get_peer: every peer's current weight
grows by its effective weight, the largest wins and gives back the total. With
weights 5, 1, 1 the order is a a b a c a a: spread out, not bursty. Other
balancers (least_conn, hash, random two) come with the resilience issue and
will decorate the same Peer objects.
"""


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

    def __repr__(self):
        return f"Peer({self.address}, weight={self.weight})"


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
        cdef Peer peer, best = None
        cdef int total = 0
        cdef Py_ssize_t i
        if self.n == 1:
            peer = <Peer>self.peers[0]
            if self.bounded and peer.active >= peer.max_conns:
                return None
            return peer
        for i in range(self.n):
            peer = <Peer>self.peers[i]
            if self.bounded and peer.max_conns > 0 and peer.active >= peer.max_conns:
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
