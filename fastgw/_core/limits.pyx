"""Shared-memory tables of limit_req and limit_conn zones (nginx's ngx_http_limit_req_module
and ngx_http_limit_conn_module), exact across workers.

A zone is one MAP_SHARED region that the master makes before fork and keeps
across a reload when its name, size and key are unchanged (fastgw.shm):

    header (128 bytes) | buckets: int32[nbuckets] | entries: Entry[capacity]

An entry (128 bytes) holds the 64-bit FNV-1a hash of its key, the key itself
(up to 80 bytes; a longer key is stored as its BLAKE2b digest), nginx's
limit_req state (``excess`` in milli-requests and ``last`` in milliseconds),
a ``count`` (limit_req: lookups in flight; limit_conn: requests in flight),
its place in the least-recently-used list and its hash chain. A megabyte
holds about 7,700 keys (an entry plus its share of the bucket array).

Every operation holds the zone's spinlock, a compare-and-swap on a word in the
header that records the holder's pid; it is never held across an await (no
operation here yields). When a worker dies holding it, the master releases it
as it reaps the worker (``release_if_held_by``), as nginx does.

Eviction is nginx's: each new key first removes up to two least-recently-used
entries idle for a minute whose excess has drained; a table that is still full
removes its least recently used entry by force; an entry with requests in
flight is never removed, and when nothing can be removed the lookup fails
(LR_ERROR / LC_ERROR: the caller answers 503 and logs it).

Time is milliseconds of the monotonic clock, the same in every worker.
"""

import hashlib
import os

from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.string cimport memcmp, memcpy, memset
from fastgw._core.counters cimport fg_atomic_add, fg_atomic_load, fnv1a

cdef extern from "sched.h":
    int sched_yield() nogil

cdef extern from *:
    """
    static inline int fg_cas64(int64_t *p, int64_t expected, int64_t desired) {
        return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_ACQUIRE,
                                           __ATOMIC_RELAXED);
    }
    static inline void fg_store64(int64_t *p, int64_t v) {
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
    }
    """
    int fg_cas64(int64_t* p, int64_t expected, int64_t desired) nogil
    void fg_store64(int64_t* p, int64_t v) nogil

cdef int64_t _pid = os.getpid()


def set_process():
    """Record this process's pid as the lock owner id (a worker calls it after fork)."""
    global _pid
    _pid = os.getpid()


def table_capacity(long size):
    """Entries a zone of ``size`` bytes holds (each: one entry and two buckets' share)."""
    return max(1, (size - HEADER_SIZE) // (ENTRY_SIZE + 8))


cdef inline bytes _stored(bytes key):
    if len(key) <= KEY_MAX:
        return key
    return b"\xff" + hashlib.blake2b(key, digest_size=32).digest()


cdef inline int64_t _elapsed(int64_t now, int64_t last):
    """nginx's clock-step rule: a step back of over a minute counts as 1 ms, a small one as 0."""
    cdef int64_t ms = now - last
    if ms < -60000:
        return 1
    if ms < 0:
        return 0
    return ms


cdef class LimitTable:
    """A zone's table in ``buffer`` (a writable buffer of the zone's size, e.g. an mmap).

    ``init`` formats it (the master, once, before fork); otherwise the table is
    attached as it is. Raises ValueError if the buffer cannot hold one entry.
    """

    def __init__(self, buffer, bint init=True, str name=""):
        cdef unsigned char[::1] view = buffer
        cdef Py_ssize_t size = view.shape[0]
        cdef int64_t capacity = table_capacity(size)
        cdef int64_t nbuckets = 1
        cdef int32_t i
        if size < HEADER_SIZE + ENTRY_SIZE + 8:
            raise ValueError("zone too small")
        self.buffer = buffer
        self.name = name
        self.h = <Header*>&view[0]
        if init:
            while nbuckets < capacity:
                nbuckets *= 2
            # table_capacity left 8 bytes per entry for buckets: this always fits.
            while nbuckets * 4 + capacity * ENTRY_SIZE + HEADER_SIZE > size:
                capacity -= 1
            memset(&view[0], 0, HEADER_SIZE)
            self.h.capacity = capacity
            self.h.nbuckets = nbuckets
        self.buckets = <int32_t*>(<char*>self.h + HEADER_SIZE)
        self.entries = <Entry*>(<char*>self.buckets + self.h.nbuckets * 4)
        if init:
            for i in range(self.h.nbuckets):
                self.buckets[i] = -1
            for i in range(self.h.capacity):
                self.entries[i].chain = i + 1 if i + 1 < self.h.capacity else -1
            self.h.free_head = 0 if self.h.capacity else -1
            self.h.lru_head = self.h.lru_tail = -1
            self.h.used = 0

    # -- the lock -------------------------------------------------------------------------
    cdef void lock(self):
        cdef int spins = 0
        if fg_cas64(&self.h.lock, 0, _pid):
            return
        self.h.contended += 1
        while not fg_cas64(&self.h.lock, 0, _pid):
            spins += 1
            if spins >= 64:
                spins = 0
                sched_yield()

    cdef void unlock(self):
        fg_store64(&self.h.lock, 0)

    def release_if_held_by(self, int64_t pid):
        """The master, reaping ``pid``: free the lock if that process died holding it.
        Returns True if it did."""
        return bool(fg_cas64(&self.h.lock, pid, 0))

    def locked_by(self):
        """The pid holding the lock, 0 when free."""
        return self.h.lock

    def _test_hold_lock(self):
        """Take the lock and keep it (tests of a holder that dies)."""
        self.lock()

    # -- entries --------------------------------------------------------------------------
    cdef int32_t find(self, uint64_t hash, bytes key):
        cdef int32_t i = self.buckets[hash & <uint64_t>(self.h.nbuckets - 1)]
        cdef Entry* e
        cdef Py_ssize_t n = len(key)
        while i >= 0:
            e = &self.entries[i]
            if e.hash == hash and e.keylen == n and memcmp(e.key, <const char*>key, n) == 0:
                return i
            i = e.chain
        return -1

    cdef int32_t insert(self, uint64_t hash, bytes key):
        """A new entry for ``key`` at the head of the LRU list; -1 if the table is full."""
        cdef int32_t i = <int32_t>self.h.free_head
        cdef Entry* e
        cdef uint64_t b
        if i < 0:
            return -1
        e = &self.entries[i]
        self.h.free_head = e.chain
        b = hash & <uint64_t>(self.h.nbuckets - 1)
        e.hash = hash
        e.keylen = <uint16_t>len(key)
        memcpy(e.key, <const char*>key, len(key))
        e.excess = 0
        e.last = 0
        e.count = 0
        e.chain = self.buckets[b]
        self.buckets[b] = i
        e.prev = -1
        e.next = <int32_t>self.h.lru_head
        if self.h.lru_head >= 0:
            self.entries[self.h.lru_head].prev = i
        self.h.lru_head = i
        if self.h.lru_tail < 0:
            self.h.lru_tail = i
        self.h.used += 1
        return i

    cdef void remove(self, int32_t i):
        cdef Entry* e = &self.entries[i]
        cdef uint64_t b = e.hash & <uint64_t>(self.h.nbuckets - 1)
        cdef int32_t j = self.buckets[b]
        if j == i:
            self.buckets[b] = e.chain
        else:
            while j >= 0 and self.entries[j].chain != i:
                j = self.entries[j].chain
            if j >= 0:
                self.entries[j].chain = e.chain
        if e.prev >= 0:
            self.entries[e.prev].next = e.next
        else:
            self.h.lru_head = e.next
        if e.next >= 0:
            self.entries[e.next].prev = e.prev
        else:
            self.h.lru_tail = e.prev
        e.keylen = 0
        e.hash = 0
        e.chain = <int32_t>self.h.free_head
        self.h.free_head = i
        self.h.used -= 1

    cdef void touch(self, int32_t i):
        cdef Entry* e = &self.entries[i]
        if self.h.lru_head == i:
            return
        # Unlink, then in front.
        if e.prev >= 0:
            self.entries[e.prev].next = e.next
        if e.next >= 0:
            self.entries[e.next].prev = e.prev
        else:
            self.h.lru_tail = e.prev
        e.prev = -1
        e.next = <int32_t>self.h.lru_head
        if self.h.lru_head >= 0:
            self.entries[self.h.lru_head].prev = i
        self.h.lru_head = i

    cdef void expire(self, int n, int64_t now, int64_t rate):
        """nginx's ngx_http_limit_req_expire: ``n`` 1 removes up to two drained entries
        idle for a minute; ``n`` 0 also removes the least recently used one by force."""
        cdef int32_t i
        cdef Entry* e
        cdef int64_t ms
        while n < 3:
            i = <int32_t>self.h.lru_tail
            if i < 0:
                return
            e = &self.entries[i]
            if e.count:
                # Entries are moved to the front when used: nothing older is free.
                return
            if n != 0:
                ms = now - e.last
                if ms < 0:
                    ms = -ms
                if ms < 60000:
                    return
                if rate and e.excess - rate * ms // 1000 > 0:
                    return
            else:
                self.h.evicted += 1
            n += 1
            self.remove(i)

    # -- limit_req ------------------------------------------------------------------------
    cdef int req_lookup(self, bytes key, int64_t rate, int64_t burst, int64_t now, bint account,
                        int64_t* excess, int32_t* node, uint64_t* hash):
        """nginx's ngx_http_limit_req_lookup for one zone, under the lock.

        ``rate`` in milli-requests per second, ``burst`` in milli-requests, ``now``
        in ms. LR_BUSY: over the burst (``excess`` says by how much). LR_OK: the
        last limit of the request, accounted. LR_AGAIN: an earlier limit, held
        (``node``, ``hash``) until req_account. LR_ERROR: the table is full.
        """
        cdef bytes k = _stored(key)
        cdef uint64_t h = fnv1a(k)
        cdef int32_t i
        cdef Entry* e
        cdef int64_t ms, ex
        hash[0] = h
        self.lock()
        i = self.find(h, k)
        if i >= 0:
            e = &self.entries[i]
            self.touch(i)
            ms = _elapsed(now, e.last)
            ex = e.excess - rate * ms // 1000 + 1000
            if ex < 0:
                ex = 0
            excess[0] = ex
            if ex > burst:
                self.unlock()
                return LR_BUSY
            if account:
                e.excess = ex
                if ms:
                    e.last = now
                self.unlock()
                return LR_OK
            e.count += 1
            node[0] = i
            self.unlock()
            return LR_AGAIN
        excess[0] = 0
        self.expire(1, now, rate)
        i = self.insert(h, k)
        if i < 0:
            self.expire(0, now, rate)
            i = self.insert(h, k)
            if i < 0:
                self.h.full += 1
                self.unlock()
                return LR_ERROR
        e = &self.entries[i]
        e.excess = 0
        e.last = now
        if account:
            e.count = 0
            self.unlock()
            return LR_OK
        e.count = 1
        node[0] = i
        self.unlock()
        return LR_AGAIN

    cdef int64_t req_account(self, int32_t node, uint64_t hash, int64_t rate, int64_t now):
        """The accounting half of nginx's ngx_http_limit_req_account for a held entry:
        charge one request, release the hold; returns the entry's new excess."""
        cdef Entry* e
        cdef int64_t ms, ex = 0
        self.lock()
        e = &self.entries[node]
        if e.hash == hash and e.count > 0:
            ms = _elapsed(now, e.last)
            ex = e.excess - rate * ms // 1000 + 1000
            if ex < 0:
                ex = 0
            if ms:
                e.last = now
            e.excess = ex
            e.count -= 1
        self.unlock()
        return ex

    def req_release(self, int32_t node, uint64_t hash):
        """Drop a hold taken by an LR_AGAIN lookup without charging (a later limit refused)."""
        cdef Entry* e
        self.lock()
        e = &self.entries[node]
        if e.hash == hash and e.count > 0:
            e.count -= 1
        self.unlock()

    def req_check(self, bytes key, int64_t rate, int64_t burst, int64_t now, bint account=True):
        """Python entry to req_lookup (tests, tools): ``(result, excess, node, hash)``."""
        cdef int64_t excess = 0
        cdef int32_t node = -1
        cdef uint64_t hash = 0
        cdef int rc = self.req_lookup(key, rate, burst, now, account, &excess, &node, &hash)
        return rc, excess, node, hash

    def req_charge(self, int32_t node, uint64_t hash, int64_t rate, int64_t now):
        """Python entry to req_account."""
        return self.req_account(node, hash, rate, now)

    # -- limit_conn -----------------------------------------------------------------------
    cdef int conn_acquire(self, bytes key, int64_t limit, int32_t* node, uint64_t* hash):
        """One more request in flight for ``key`` unless ``limit`` are (LC_BUSY) or the
        table is full (LC_ERROR). On LC_OK, ``node`` and ``hash`` are for conn_release."""
        cdef bytes k = _stored(key)
        cdef uint64_t h = fnv1a(k)
        cdef int32_t i
        cdef Entry* e
        hash[0] = h
        self.lock()
        i = self.find(h, k)
        if i >= 0:
            e = &self.entries[i]
            if e.count >= limit:
                self.unlock()
                return LC_BUSY
            e.count += 1
            self.touch(i)
            node[0] = i
            self.unlock()
            return LC_OK
        # Entries live only while requests are in flight: nothing can be evicted.
        i = self.insert(h, k)
        if i < 0:
            self.h.full += 1
            self.unlock()
            return LC_ERROR
        self.entries[i].count = 1
        node[0] = i
        self.unlock()
        return LC_OK

    cdef void conn_release(self, int32_t node, uint64_t hash):
        cdef Entry* e
        self.lock()
        e = &self.entries[node]
        if e.hash == hash and e.count > 0:
            e.count -= 1
            if e.count == 0:
                self.remove(node)
        self.unlock()

    def conn_take(self, bytes key, int64_t limit):
        """Python entry to conn_acquire: ``(result, node, hash)``."""
        cdef int32_t node = -1
        cdef uint64_t hash = 0
        cdef int rc = self.conn_acquire(key, limit, &node, &hash)
        return rc, node, hash

    def conn_give(self, int32_t node, uint64_t hash):
        """Python entry to conn_release."""
        self.conn_release(node, hash)

    cdef void outcome(self, int kind):
        """Count one request this zone decided (OUT_*), for the metrics: an atomic add,
        no lock (every worker's view of the zone shares the header)."""
        fg_atomic_add(&self.h.outcomes[kind], 1)

    # -- inspection -----------------------------------------------------------------------
    def stats(self):
        """``{"capacity", "used", "evicted", "full", "contended", "passed", "delayed",
        "rejected", "delayed_dry_run", "rejected_dry_run"}``."""
        return {"capacity": self.h.capacity, "used": self.h.used, "evicted": self.h.evicted,
                "full": self.h.full, "contended": self.h.contended,
                "passed": fg_atomic_load(&self.h.outcomes[OUT_PASSED]),
                "delayed": fg_atomic_load(&self.h.outcomes[OUT_DELAYED]),
                "rejected": fg_atomic_load(&self.h.outcomes[OUT_REJECTED]),
                "delayed_dry_run": fg_atomic_load(&self.h.outcomes[OUT_DELAYED_DRY_RUN]),
                "rejected_dry_run": fg_atomic_load(&self.h.outcomes[OUT_REJECTED_DRY_RUN])}

    def entry(self, bytes key):
        """``(excess, last, count)`` of ``key``'s entry, or None (tests)."""
        cdef bytes k = _stored(key)
        cdef int32_t i
        self.lock()
        i = self.find(fnv1a(k), k)
        out = None if i < 0 else (self.entries[i].excess, self.entries[i].last,
                                  self.entries[i].count)
        self.unlock()
        return out


RESULTS = {"OK": LR_OK, "BUSY": LR_BUSY, "AGAIN": LR_AGAIN, "ERROR": LR_ERROR}
