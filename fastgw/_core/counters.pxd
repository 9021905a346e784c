from libc.stdint cimport int64_t, uint64_t

cdef extern from *:
    """
    /* GCC/Clang atomics on shared-memory cells (fastgw zones). */
    static inline int64_t fg_atomic_add(int64_t *p, int64_t v) {
        return __atomic_add_fetch(p, v, __ATOMIC_SEQ_CST);
    }
    static inline int64_t fg_atomic_load(int64_t *p) {
        return __atomic_load_n(p, __ATOMIC_SEQ_CST);
    }
    /* Take one slot if fewer than `limit` are taken; 1 on success. */
    static inline int fg_try_acquire(int64_t *p, int64_t limit) {
        int64_t cur = __atomic_load_n(p, __ATOMIC_SEQ_CST);
        while (cur < limit) {
            if (__atomic_compare_exchange_n(p, &cur, cur + 1, 0, __ATOMIC_SEQ_CST,
                                            __ATOMIC_SEQ_CST))
                return 1;
        }
        return 0;
    }
    static inline void fg_atomic_store(int64_t *p, int64_t v) {
        __atomic_store_n(p, v, __ATOMIC_SEQ_CST);
    }
    /* Set *p to `desired` if it still holds `expected`; 1 on success. */
    static inline int fg_atomic_cas(int64_t *p, int64_t expected, int64_t desired) {
        return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_SEQ_CST,
                                           __ATOMIC_SEQ_CST);
    }
    """
    int64_t fg_atomic_add(int64_t* p, int64_t v) nogil
    int64_t fg_atomic_load(int64_t* p) nogil
    int fg_try_acquire(int64_t* p, int64_t limit) nogil
    void fg_atomic_store(int64_t* p, int64_t v) nogil
    int fg_atomic_cas(int64_t* p, int64_t expected, int64_t desired) nogil


cdef inline uint64_t fnv1a(bytes key):
    """64-bit FNV-1a of ``key`` (limit zone keys, balancer hash keys)."""
    cdef const unsigned char* p = key
    cdef Py_ssize_t i, n = len(key)
    cdef uint64_t h = 14695981039346656037ULL
    for i in range(n):
        h ^= p[i]
        h *= 1099511628211ULL
    return h

cdef enum:
    # A peer's cells in its upstream's zone (shared by all workers; int64 each).
    P_ACTIVE = 0        # requests in flight
    P_FAILS = 1         # failed attempts (max_fails)
    P_ACCESSED = 2      # last failure, monotonic ms
    P_CHECKED = 3       # start of the fail_timeout window / last trial, monotonic ms
    P_HC_DOWN = 4       # 1: out by the active health check
    P_HC_FAILS = 5      # checks failed in a row
    P_HC_PASSES = 6     # checks passed in a row
    P_HC_CHECKS = 7     # checks done
    PEER_CELLS = 8

cdef enum:
    # Cells of a worker's block (int64 each).
    C_ACCEPTED = 0
    C_HANDLED = 1
    C_ACTIVE = 2
    C_READING = 3
    C_WRITING = 4
    C_WAITING = 5
    C_REQUESTS = 6
    C_HEARTBEAT = 7
    C_PID = 8
    C_UP = 9
    C_REJECTED = 10          # 8 reasons
    N_REASONS = 8
    C_STATUS = 20            # 600 codes
    N_STATUS = 600
    C_UPSTREAMS = 620        # then per upstream: queue depth, histogram, peers
    N_BUCKETS = 16
    HIST_CELLS = 18          # N_BUCKETS + sum + count

    # Rejection reasons (design.md §6), in the order of REASONS.
    R_WORKER_CONNECTIONS = 0
    R_QUEUE_FULL = 1
    R_QUEUE_TIMEOUT = 2
    R_LIMIT_REQ = 3
    R_LIMIT_CONN = 4
    R_UPSTREAM_ERROR = 5
    R_UPSTREAM_TIMEOUT = 6
    R_NO_LIVE_UPSTREAMS = 7


cdef class Stats:
    cdef object buffer
    cdef object zone_buffer
    cdef int64_t* base
    cdef int64_t* mine
    cdef public int workers
    cdef public bint has_retired
    cdef public int slot
    cdef public long block
    cdef public list upstream_offsets
    cdef public list peer_counts
    cdef int64_t* zone_base
    cdef public list zone_offsets
    cdef list zone_addrs

    cdef inline void add(self, int cell, int64_t n):
        self.mine[cell] += n

    cdef inline void status(self, int code):
        if 0 <= code < N_STATUS:
            self.mine[C_STATUS + code] += 1

    cdef inline void rejected(self, int reason):
        self.mine[C_REJECTED + reason] += 1

    cdef void queue_depth(self, int upstream, int64_t depth)
    cdef void peer_active(self, int upstream, int peer, int64_t delta)
    cdef void observe(self, int upstream, double seconds)
    cdef void observe_request(self, int upstream, double seconds)
    cdef void observe_queue(self, int upstream, double seconds)
    cdef void _observe(self, int at, double seconds)
    cdef int64_t* peer_shared(self, int upstream, int peer)
