from libc.stdint cimport int64_t


cdef class Peer:
    # The zone's shared count of requests in flight (NULL without a zone).
    cdef int64_t* shared_active
    cdef public str host
    cdef public int port
    cdef public int weight
    cdef public int max_conns
    cdef public str address
    cdef public int index
    cdef public int current_weight
    cdef public int effective_weight
    # Requests this worker has in flight to the peer.
    cdef public int active
    # Idle keep-alive connections to the peer, most recently used last (pool.pyx).
    cdef public list idle


cdef class RoundRobin:
    cdef public list peers
    cdef int n
    cdef public bint bounded
    cdef Peer pick(self)
    cdef Peer _choose(self)
    cdef void release(self, Peer peer)
