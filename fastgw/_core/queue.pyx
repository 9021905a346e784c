"""The bounded request queue of an upstream (NGINX Plus's ``queue N timeout=T``).

Requests that find every peer at ``max_conns`` wait here for a slot. The
queue is preallocated and fixed in size: ``capacity`` slots whose order is
kept by intrusive linked lists, one per priority class (0 is the highest),
so that push, pop, removal from the middle (a client that went away) and
displacement are all O(1) and allocate nothing. A handle is a slot index:
stable for as long as the item waits.

- ``pop`` takes the oldest request of the highest priority present.
- ``push`` on a full queue displaces the most recently queued request of the
  lowest priority present, if that is lower than the arriving one (load
  shedding by class, fastgw's ``priority``); otherwise the arrival is refused.
- ``expire`` returns what waited ``timeout`` seconds.
- The drain rate is the smoothed interval between pops while requests wait;
  from it ``expected_wait`` (queue depth ahead divided by the drain rate) and
  ``retry_after`` (the wait of the whole queue, rounded up, at least 1 s,
  capped) are derived. With no drain measured yet, ``expected_wait`` is 0:
  requests are queued, never rejected on a guess (design.md §6).

Times are loop seconds (floats).
"""

from libc.stdlib cimport malloc, free as cfree
from libc.math cimport ceil


cdef class RequestQueue:
    """A fixed-capacity priority queue of waiting requests.

    ``capacity``: slots (0 makes every push fail); ``timeout``: seconds a
    request may wait. Priorities outside 0..15 are clamped.
    """

    def __cinit__(self, int capacity, double timeout=60.0):
        cdef int i
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.capacity = capacity
        self.timeout = timeout
        self.depth = 0
        n = capacity if capacity > 0 else 1
        self.next_ = <int*>malloc(n * sizeof(int))
        self.prev_ = <int*>malloc(n * sizeof(int))
        self.cls_ = <int*>malloc(n * sizeof(int))
        self.free = <int*>malloc(n * sizeof(int))
        self.stamps = <double*>malloc(n * sizeof(double))
        if not (self.next_ and self.prev_ and self.cls_ and self.free and self.stamps):
            raise MemoryError()
        self.items = [None] * capacity
        # Free slots as a stack; handing out low indices first keeps it cache-friendly.
        self.nfree = capacity
        for i in range(capacity):
            self.free[i] = capacity - 1 - i
        for i in range(MAX_CLASSES):
            self.heads[i] = -1
            self.tails[i] = -1
            self.live[i] = 0
        self.last_pop = 0.0
        self.busy_since = 0.0
        self.interval = 0.0
        self.pops = 0

    def __dealloc__(self):
        cfree(self.next_)
        cfree(self.prev_)
        cfree(self.cls_)
        cfree(self.free)
        cfree(self.stamps)

    cpdef long push(self, object item, int priority, double now) except -2:
        """Queue ``item``; return its handle, or -1 when refused (full, nothing lower to displace).

        A displaced item, if any, is left in ``displaced`` (else None).
        """
        cdef int c = 0 if priority < 0 else (MAX_CLASSES - 1 if priority >= MAX_CLASSES else priority)
        cdef int slot, v
        self.displaced = None
        if self.capacity == 0:
            return -1
        if self.depth >= self.capacity:
            v = MAX_CLASSES - 1
            while v > c and self.live[v] == 0:
                v -= 1
            if v <= c:
                return -1
            self.displaced = self._take(self.tails[v])
        self.nfree -= 1
        slot = self.free[self.nfree]
        if self.depth == 0:
            # The queue starts waiting now: a drain "stall" is measured from here,
            # not from a departure long before (an empty queue has nothing to drain).
            self.busy_since = now
        self.items[slot] = item
        self.cls_[slot] = c
        self.stamps[slot] = now
        self.next_[slot] = -1
        self.prev_[slot] = self.tails[c]
        if self.tails[c] >= 0:
            self.next_[self.tails[c]] = slot
        else:
            self.heads[c] = slot
        self.tails[c] = slot
        self.live[c] += 1
        self.depth += 1
        return slot

    cdef object _take(self, int slot):
        """Unlink ``slot`` and free it; return its item."""
        cdef int c = self.cls_[slot]
        cdef int p = self.prev_[slot], n = self.next_[slot]
        if p >= 0:
            self.next_[p] = n
        else:
            self.heads[c] = n
        if n >= 0:
            self.prev_[n] = p
        else:
            self.tails[c] = p
        item = self.items[slot]
        self.items[slot] = None
        self.free[self.nfree] = slot
        self.nfree += 1
        self.live[c] -= 1
        self.depth -= 1
        return item

    cpdef object peek(self):
        """The item ``pop`` would return next, left in place (None when empty)."""
        cdef int c
        for c in range(MAX_CLASSES):
            if self.heads[c] >= 0:
                return self.items[self.heads[c]]
        return None

    cpdef object pop(self, double now):
        """The oldest item of the highest priority (None when empty); records the drain."""
        cdef int c, slot
        cdef double sample
        for c in range(MAX_CLASSES):
            slot = self.heads[c]
            if slot >= 0:
                self.last_wait = now - self.stamps[slot]
                if self.pops > 0 and self.last_pop > 0:
                    # Smoothed interval between two departures (an EWMA, 1/5 weight),
                    # counted only while requests waited: if the queue was empty since
                    # the last departure, from when it filled again. An idle spell is
                    # not a slow drain (it made early rejection refuse bursts after a
                    # quiet minute).
                    sample = now - (self.last_pop if self.last_pop > self.busy_since
                                    else self.busy_since)
                    if self.interval == 0:
                        self.interval = sample
                    else:
                        self.interval += (sample - self.interval) * 0.2
                self.last_pop = now
                self.pops += 1
                return self._take(slot)
        return None

    cpdef bint remove(self, long handle, object item):
        """Remove ``item`` queued under ``handle`` (a client that went away); False if not there."""
        if handle < 0 or handle >= self.capacity or self.items[handle] is not item:
            return False
        self._take(<int>handle)
        return True

    cpdef list expire(self, double now):
        """Remove and return the items that have waited ``timeout`` seconds, oldest first per class."""
        cdef list out = []
        cdef int c, slot
        for c in range(MAX_CLASSES):
            slot = self.heads[c]
            while slot >= 0 and self.stamps[slot] + self.timeout <= now:
                out.append(self._take(slot))
                slot = self.heads[c]
        return out

    cpdef double next_deadline(self):
        """When the next item times out (loop seconds), 0 when empty."""
        cdef int c, slot
        cdef double best = 0
        cdef bint found = False
        for c in range(MAX_CLASSES):
            slot = self.heads[c]
            if slot >= 0 and (not found or self.stamps[slot] < best):
                best = self.stamps[slot]
                found = True
        return best + self.timeout if found else 0

    cpdef int ahead(self, int priority):
        """How many queued items would be served before a new one of ``priority``."""
        cdef int c, n = 0
        cdef int top = 0 if priority < 0 else (MAX_CLASSES - 1 if priority >= MAX_CLASSES else priority)
        for c in range(top + 1):
            n += self.live[c]
        return n

    cpdef double expected_wait(self, int priority, double now):
        """Seconds a new item of ``priority`` would wait, from the drain rate; 0 without history."""
        cdef double interval = self.interval
        cdef double since, wait
        if self.pops < 2 or interval <= 0:
            return 0.0
        wait = (self.ahead(priority) + 1) * interval
        if self.depth:
            # A queue that stopped draining must not keep promising its old rate: a
            # new arrival waits at least as long as nothing has left (since the last
            # departure, or since requests began waiting). Not that gap times the
            # depth: one pause of a few ms (a burst of new upstream connections, a
            # slow loop iteration) would then refuse a healthy queue of hundreds.
            since = now - (self.last_pop if self.last_pop > self.busy_since else self.busy_since)
            if since > wait:
                wait = since
        return wait

    cpdef int retry_after(self, double now, int cap=30):
        """Seconds a rejected client should wait (Retry-After): the whole queue's drain time.

        At least 1, at most ``cap``; without a drain history, the queue timeout.
        """
        cdef double wait = self.expected_wait(MAX_CLASSES - 1, now)
        if wait <= 0:
            wait = self.timeout
        wait = ceil(wait)
        if wait < 1:
            return 1
        if wait > cap:
            return cap
        return <int>wait

    def __len__(self):
        return self.depth

    def stats(self):
        """``{"depth", "capacity", "per_class", "interval", "pops"}`` for tests and status."""
        return {"depth": self.depth, "capacity": self.capacity,
                "per_class": [self.live[c] for c in range(MAX_CLASSES)],
                "interval": self.interval, "pops": self.pops}
