from libc.stdint cimport int32_t, int64_t, uint16_t, uint64_t, uint8_t

cdef enum:
    ENTRY_SIZE = 128
    KEY_MAX = 80
    HEADER_SIZE = 128

    # Results of a limit_req lookup (nginx's NGX_OK, NGX_BUSY, NGX_AGAIN, NGX_ERROR).
    LR_OK = 0
    LR_BUSY = 1
    LR_AGAIN = 2
    LR_ERROR = 3

    # Results of a limit_conn acquire.
    LC_OK = 0
    LC_BUSY = 1
    LC_ERROR = 3

    # Header.outcomes cells.
    OUT_PASSED = 0
    OUT_DELAYED = 1
    OUT_REJECTED = 2
    OUT_DELAYED_DRY_RUN = 3
    OUT_REJECTED_DRY_RUN = 4

cdef struct Header:
    int64_t lock          # pid of the holder, 0 when free
    int64_t capacity      # entries
    int64_t nbuckets      # a power of two
    int64_t used
    int64_t lru_head      # most recently used; -1 when empty
    int64_t lru_tail
    int64_t free_head
    int64_t evicted       # entries removed by force when the table was full
    int64_t full          # lookups refused because nothing could be evicted
    int64_t contended     # lock acquisitions that had to spin
    # Outcomes of the requests this zone decided (atomic adds; metrics):
    int64_t outcomes[5]   # OUT_PASSED, OUT_DELAYED, OUT_REJECTED, and their dry runs

cdef struct Entry:
    uint64_t hash
    int64_t excess        # limit_req: milli-requests (nginx's lr->excess)
    int64_t last          # limit_req: ms of the last update
    int32_t count         # limit_req: lookups in flight; limit_conn: requests in flight
    int32_t prev          # LRU list
    int32_t next
    int32_t chain         # hash chain, or the free list
    uint16_t keylen
    uint8_t pad[6]
    uint8_t key[KEY_MAX]


cdef class LimitTable:
    cdef object buffer
    cdef Header* h
    cdef int32_t* buckets
    cdef Entry* entries
    cdef public str name

    cdef void lock(self)
    cdef void unlock(self)
    cdef int32_t find(self, uint64_t hash, bytes key)
    cdef int32_t insert(self, uint64_t hash, bytes key)
    cdef void remove(self, int32_t i)
    cdef void touch(self, int32_t i)
    cdef void expire(self, int n, int64_t now, int64_t rate)
    cdef int req_lookup(self, bytes key, int64_t rate, int64_t burst, int64_t now, bint account,
                        int64_t* excess, int32_t* node, uint64_t* hash)
    cdef int64_t req_account(self, int32_t node, uint64_t hash, int64_t rate, int64_t now)
    cdef int conn_acquire(self, bytes key, int64_t limit, int32_t* node, uint64_t* hash)
    cdef void conn_release(self, int32_t node, uint64_t hash)
    cdef void outcome(self, int kind)
