from fastgw._core.balancer cimport Balancer, Peer
from fastgw._core.queue cimport RequestQueue


cdef class UpstreamPool:
    cdef public str name
    cdef public int index
    cdef public Balancer balancer
    cdef public int keepalive
    cdef public double keepalive_timeout
    cdef public int keepalive_requests
    cdef public int idle_count
    cdef public long reused
    cdef public long opened
    cdef object loop
    cdef object _sweeper
    cdef public RequestQueue queue
    cdef public object queue_timer
    cdef public set paused_waiters
    cdef public object log_throttle
    cdef public object live_throttle
    cdef public object waker
    cdef public double defer_until
    cdef object _trimmer

    cpdef object acquire(self, Peer peer)
    cpdef bint release(self, Peer peer, object conn, double now)
    cpdef forget(self, Peer peer, object conn)
    cdef bint _evict_oldest(self, Peer preferred, double before)
    cdef double _sweep_interval(self)
