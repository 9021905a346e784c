"""The per-worker keep-alive pool of upstream connections (nginx's ``keepalive N``).

Idle connections wait per peer, most recently used last, and are reused
last-in first-out so that the warmest connection serves next and the rest
age out. ``keepalive`` bounds how many connections stay idle per upstream and
worker (nginx's meaning: a cache size, not a cap on open connections). Unlike
nginx, a connection beyond that bound is closed only once it has been idle for
TRIM_DELAY seconds: one loop iteration may release a hundred connections whose
clients send their next requests in the next iteration, and closing the surplus
at once only to open as many new connections a moment later is the churn that
collapses a proxy's throughput at high concurrency (design.md §2; a new upstream
connection costs ~120 us of CPU here, a reused one nothing). Nor is the surplus
counted at one instant: under steady high load (wrk -c1000) the connections in
use swing by hundreds within a few milliseconds, and trimming down to
``keepalive`` whenever a swing was at its low point closed, and then reopened,
100 to 600 connections a second (and as many closed ones left for the garbage
collector). With reuse last-in first-out, the connections that waited
TRIM_DELAY are exactly those that no swing needed; a second rather than 0.1 s
(fewer than 50 opened a second at -c1000, most for keepalive_requests). A connection
idle for ``keepalive_timeout`` seconds is closed by a sweep that runs at most
once a second, and one that has served ``keepalive_requests`` is not kept.

The pool only needs three things of a connection: ``idle_since`` (loop time
it became idle, seconds), ``closed`` (bool) and ``close()``.
"""

from fastgw._core.balancer cimport Balancer, Peer
from fastgw._core.queue cimport RequestQueue
from libc.math cimport INFINITY

# Seconds a surplus idle connection (beyond ``keepalive``) may wait for reuse.
TRIM_DELAY = 1.0


cdef class UpstreamPool:
    """Idle connections of one upstream group in one worker.

    ``balancer`` picks peers; ``keepalive`` is the idle cache size (0: no
    reuse); ``keepalive_timeout`` seconds; ``keepalive_requests`` a count.
    """

    def __init__(self, str name, Balancer balancer, int keepalive=0,
                 double keepalive_timeout=60.0, int keepalive_requests=1000, loop=None,
                 int queue=0, double queue_timeout=60.0):
        self.name = name
        self.balancer = balancer
        self.keepalive = keepalive
        self.keepalive_timeout = keepalive_timeout
        self.keepalive_requests = keepalive_requests
        self.idle_count = 0
        self.reused = 0
        self.opened = 0
        self.loop = loop
        self._sweeper = None
        # Requests waiting for a peer under max_conns (per worker, design.md §6);
        # the proxy drives it: a capacity of 0 refuses at once.
        self.queue = RequestQueue(queue, queue_timeout)
        self.queue_timer = None
        self.paused_waiters = set()
        self.log_throttle = None
        self.live_throttle = None
        # With a zone: called with the upstream index when a slot is freed, to
        # wake the other workers that have requests queued (fastgw.worker).
        self.waker = None
        # Until then this worker leaves freed zone slots to draining older workers.
        self.defer_until = 0.0
        self._trimmer = None

    cpdef object acquire(self, Peer peer):
        """An idle open connection to ``peer`` (removed from the pool), or None."""
        cdef list idle = peer.idle
        while idle:
            conn = idle.pop()
            self.idle_count -= 1
            if not conn.closed:
                self.reused += 1
                return conn
        return None

    cpdef bint release(self, Peer peer, object conn, double now):
        """Keep ``conn`` for reuse; False (the caller closes it) when keep-alive is off."""
        if self.keepalive <= 0:
            return False
        conn.idle_since = now
        peer.idle.append(conn)
        self.idle_count += 1
        if self.idle_count > self.keepalive:
            if self.loop is None:
                self._evict_oldest(peer, INFINITY)
            elif self._trimmer is None:
                self._trimmer = self.loop.call_later(TRIM_DELAY, self._trim)
        if self._sweeper is None and self.loop is not None:
            self._sweeper = self.loop.call_later(self._sweep_interval(), self._sweep)
        return True

    def _trim(self):
        """Close the oldest idle connections beyond ``keepalive`` that have been idle for
        TRIM_DELAY seconds (to the loop clock's millisecond); look again later while a
        surplus is left."""
        cdef double before = self.loop.time() - TRIM_DELAY + 0.001
        self._trimmer = None
        while self.idle_count > self.keepalive:
            if not self._evict_oldest(None, before):
                break
        if self.idle_count > self.keepalive:
            self._trimmer = self.loop.call_later(TRIM_DELAY, self._trim)

    cpdef forget(self, Peer peer, object conn):
        """Drop an idle connection that closed by itself (the upstream closed it)."""
        try:
            peer.idle.remove(conn)
        except ValueError:
            return
        self.idle_count -= 1

    cdef bint _evict_oldest(self, Peer preferred, double before):
        """Close the oldest idle connection (of ``preferred`` if it has one), if it has
        been idle since ``before`` or earlier; False if there was none to close."""
        cdef Peer peer, victim_peer = None
        cdef double oldest = 0
        if preferred is not None and preferred.idle:
            victim_peer = preferred
        else:
            for peer in self.balancer.peers:
                if peer.idle and (victim_peer is None or peer.idle[0].idle_since < oldest):
                    victim_peer = peer
                    oldest = peer.idle[0].idle_since
        if victim_peer is None or victim_peer.idle[0].idle_since > before:
            return False
        conn = victim_peer.idle.pop(0)
        self.idle_count -= 1
        conn.close()
        return True

    cdef double _sweep_interval(self):
        return min(1.0, max(self.keepalive_timeout / 2, 0.05))

    def _sweep(self):
        """Close connections idle for longer than keepalive_timeout; re-arm while any is idle."""
        cdef Peer peer
        self._sweeper = None
        now = self.loop.time()
        limit = now - self.keepalive_timeout
        for peer in self.balancer.peers:
            while peer.idle and peer.idle[0].idle_since <= limit:
                conn = peer.idle.pop(0)
                self.idle_count -= 1
                conn.close()
        if self.idle_count > 0:
            self._sweeper = self.loop.call_later(self._sweep_interval(), self._sweep)

    def close_idle(self):
        """Close every idle connection (graceful shutdown)."""
        cdef Peer peer
        for peer in self.balancer.peers:
            while peer.idle:
                conn = peer.idle.pop()
                self.idle_count -= 1
                conn.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._trimmer is not None:
            self._trimmer.cancel()
            self._trimmer = None

    def idle_connections(self):
        """How many connections wait idle, per peer address (for tests and status)."""
        cdef Peer peer
        return {peer.address: len(peer.idle) for peer in self.balancer.peers}
