from libc.stdint cimport int64_t, uint32_t, uint64_t

from fastgw._core.counters cimport PEER_CELLS


cdef uint64_t hash_key(bytes key)


cdef class Peer:
    # The peer's state cells (counters.pxd P_*): its upstream's zone in shared
    # memory, or `local` without a zone.
    cdef int64_t* cells
    cdef int64_t local[PEER_CELLS]
    cdef public bint zoned
    # Keeps the zone's memory mapped while `cells` points into it.
    cdef object zone_owner
    cdef public str host
    cdef public int port
    cdef public int weight
    cdef public int max_conns
    cdef public int max_fails
    cdef public double fail_timeout
    cdef int64_t fail_timeout_ms
    cdef public bint backup
    cdef public bint down
    # The upstream has a health_check: the check's verdict applies.
    cdef public bint checked
    cdef public str address
    # `address` as bytes, for $upstream_addr.
    cdef public bytes address_bytes
    cdef public int index
    cdef public int current_weight
    cdef public int effective_weight
    # Requests this worker has in flight to the peer.
    cdef public int active
    # Idle keep-alive connections to the peer, most recently used last (pool.pyx).
    cdef public list idle


cdef class Balancer:
    # Every peer, in index order (primary and backup); then each kind.
    cdef public list peers
    cdef public list primary
    cdef public list backups
    cdef int n
    # 0: no key; 1: the client address (ip_hash); 2: a template (hash KEY).
    cdef public int key_kind
    cdef public tuple key_parts
    # The last pick that returned None found no live peer (every one down,
    # failed or already tried) rather than only busy ones.
    cdef public bint all_out
    cdef uint64_t rng

    cdef Peer pick(self, uint64_t key, object tried)
    cdef Peer _choose(self, list peers, uint64_t key, object tried, int64_t* now)
    cdef bint _any_live(self, object tried)
    cdef void release(self, Peer peer)
    cdef void retake(self, Peer peer)
    cdef bint failed(self, Peer peer)
    cdef void succeeded(self, Peer peer)


cdef class RoundRobin(Balancer):
    pass


cdef class LeastConn(Balancer):
    pass


cdef class Hash(Balancer):
    cdef int64_t total_weight
    cdef bint consistent
    cdef uint32_t* points
    cdef int* point_peer
    cdef int npoints


cdef class Random(Balancer):
    cdef int64_t total_weight
    cdef bint two
    cdef Peer _draw(self, list peers, object tried, int64_t* now, Peer other)
