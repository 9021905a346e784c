"""Per-worker counters in shared memory (design.md §7): the numbers behind stub_status and metrics.

The master maps one anonymous MAP_SHARED region before it forks (fastgw.shm);
every worker owns one block of int64 cells in it and is the only writer of
that block, so an update is a plain add in the worker's own cache lines: no
lock, no atomic read-modify-write, nothing shared to contend on. Readers (the
worker that serves /stub_status or /metrics) sum the blocks of all workers;
aligned 64-bit loads cannot tear on the platforms fastgw runs on.

A block holds, as int64 cells: connection counts (accepted, handled, active,
reading, writing, waiting), requests, a heartbeat (unix ms) and pid, overload
rejections by reason, responses by status code (0..599), and per upstream:
the queue depth, a latency histogram of upstream response times
(N_BUCKETS cumulative-at-read buckets, sum in microseconds, count) and the
requests in flight per peer.
"""

from libc.stdint cimport int64_t

REASONS = ("worker_connections", "queue_full", "queue_timeout", "limit_req", "limit_conn",
           "upstream_error", "upstream_timeout", "no_live_upstreams")
REASON_CODES = {name: i for i, name in enumerate(REASONS)}
# Upper bounds (seconds) of the upstream response histogram; the last is +Inf.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
           60.0, float("inf"))
cdef double[16] _BOUNDS
for _i, _b in enumerate(BUCKETS):
    _BOUNDS[_i] = _b if _b != float("inf") else 1e300

# Per-upstream cells: depth, then three histograms of N_BUCKETS buckets, sum (us) and
# count each (upstream response time, request time, queue wait), then one per peer.
HIST = N_BUCKETS + 2
HISTOGRAMS = ("response", "request", "queue")
UPSTREAM_FIXED = 1 + len(HISTOGRAMS) * HIST


def block_size(list peer_counts):
    """Cells (int64) in one worker's block for upstreams with ``peer_counts`` peers each."""
    return C_UPSTREAMS + sum(UPSTREAM_FIXED + n for n in peer_counts)


def region_size(int workers, list peer_counts):
    """Bytes for ``workers`` blocks plus the zone area (PEER_CELLS shared cells per peer)."""
    return (block_size(peer_counts) * workers + sum(peer_counts) * PEER_CELLS) * 8


def zone_size(int peers):
    """Bytes of one upstream's zone: PEER_CELLS int64 cells per peer."""
    return max(1, peers) * PEER_CELLS * 8


PEER_CELL_COUNT = PEER_CELLS
# A peer's cells, for readers in Python (fastgw.shm).
P_ACTIVE_CELL, P_FAILS_CELL, P_CHECKED_CELL, P_HC_DOWN_CELL = P_ACTIVE, P_FAILS, P_CHECKED, P_HC_DOWN


cdef class Stats:
    """The counters of ``workers`` worker blocks in ``buffer`` (a writable buffer, e.g. mmap).

    ``slot`` is this process's block (writes go there; -1 for a reader only,
    such as the master). ``peer_counts`` lists the peers of each upstream in
    the configuration's order. ``zone_buffer``, when given, holds the shared
    per-peer cells instead of the end of ``buffer`` (PEER_CELLS int64 per peer): one
    buffer for all upstreams, or a list of one buffer per upstream, so that a
    reload can keep each unchanged upstream's cells while the worker blocks
    are new. With
    ``retired``, the buffer holds one more block after the workers' (index
    ``workers``): the cumulative counts of workers of earlier configurations,
    which the master folds in (fastgw.shm); totals include it. Raises
    ValueError when a buffer is too small.
    """

    def __init__(self, buffer, int workers, int slot, list peer_counts, zone_buffer=None,
                 bint retired=False):
        cdef unsigned char[::1] view = buffer
        cdef unsigned char[::1] zview
        self.buffer = buffer
        self.workers = workers
        self.slot = slot
        self.peer_counts = list(peer_counts)
        self.block = block_size(self.peer_counts)
        self.has_retired = retired
        if view.shape[0] < region_size(workers + (1 if retired else 0), self.peer_counts):
            raise ValueError("shared memory region too small for the counters")
        self.base = <int64_t*>&view[0]
        self.mine = self.base + (slot if slot >= 0 else 0) * self.block
        offsets, at = [], C_UPSTREAMS
        for n in self.peer_counts:
            offsets.append(at)
            at += UPSTREAM_FIXED + n
        self.upstream_offsets = offsets
        # After the worker blocks: one cell per peer, shared by all workers and
        # updated atomically (the requests in flight to a peer of a zoned upstream).
        self.zone_base = self.base + self.block * (workers + (1 if retired else 0))
        self.zone_buffer = zone_buffer
        self.zone_addrs = None
        if isinstance(zone_buffer, list):
            # One buffer per upstream (a reload keeps each unchanged upstream's cells).
            if len(zone_buffer) != len(self.peer_counts):
                raise ValueError("one zone buffer per upstream is needed")
            addrs = []
            for u, buf in enumerate(zone_buffer):
                zview = buf
                if zview.shape[0] < zone_size(self.peer_counts[u]):
                    raise ValueError("shared memory zone too small for the peers")
                addrs.append(<size_t>&zview[0])
            self.zone_addrs = addrs
        elif zone_buffer is not None:
            zview = zone_buffer
            if zview.shape[0] < sum(self.peer_counts) * PEER_CELLS * 8:
                raise ValueError("shared memory zone too small for the peers")
            self.zone_base = <int64_t*>&zview[0]
        offsets, at = [], 0
        for n in self.peer_counts:
            offsets.append(at)
            at += n * PEER_CELLS
        self.zone_offsets = offsets

    cdef int64_t* peer_shared(self, int upstream, int peer):
        if self.zone_addrs is not None:
            return <int64_t*><size_t>self.zone_addrs[upstream] + peer * PEER_CELLS
        return self.zone_base + <int>self.zone_offsets[upstream] + peer * PEER_CELLS

    def shared_active(self, int upstream, int peer):
        """The zone's count of requests in flight to a peer (all workers)."""
        return fg_atomic_load(self.peer_shared(upstream, peer))

    def peer_cells(self, int upstream, int peer):
        """A peer's zone cells as a tuple of PEER_CELLS ints (P_ACTIVE, P_FAILS, ...)."""
        cdef int64_t* cells = self.peer_shared(upstream, peer)
        cdef int i
        cdef list out = []
        for i in range(PEER_CELLS):
            out.append(fg_atomic_load(cells + i))
        return tuple(out)

    def release_worker(self, int worker, list zoned):
        """Give back the zone slots a dead worker held: ``zoned`` lists upstream indices.

        The master calls it when it reaps a worker, before clear_gauges.
        """
        cdef int u, i
        cdef int64_t held
        for u in zoned:
            for i in range(self.peer_counts[u]):
                held = self.base[worker * self.block + <int>self.upstream_offsets[u] + UPSTREAM_FIXED + i]
                if held:
                    fg_atomic_add(self.peer_shared(u, i), -held)

    def queue_depth_of(self, int worker, int upstream):
        """A worker's queue depth for an upstream (to decide whom to wake)."""
        return self.base[worker * self.block + <int>self.upstream_offsets[upstream]]

    cdef void queue_depth(self, int upstream, int64_t depth):
        self.mine[<int>self.upstream_offsets[upstream]] = depth

    cdef void peer_active(self, int upstream, int peer, int64_t delta):
        self.mine[<int>self.upstream_offsets[upstream] + UPSTREAM_FIXED + peer] += delta

    cdef void observe(self, int upstream, double seconds):
        """An upstream response took ``seconds`` (request sent to response end)."""
        self._observe(<int>self.upstream_offsets[upstream] + 1, seconds)

    cdef void observe_request(self, int upstream, double seconds):
        """A request proxied to ``upstream`` took ``seconds`` from its first byte to its end."""
        self._observe(<int>self.upstream_offsets[upstream] + 1 + HIST_CELLS, seconds)

    cdef void observe_queue(self, int upstream, double seconds):
        """A request left ``upstream``'s queue after ``seconds``: served, timed out, or its
        client gone (requests that never queued are not counted)."""
        self._observe(<int>self.upstream_offsets[upstream] + 1 + 2 * HIST_CELLS, seconds)

    cdef void _observe(self, int at, double seconds):
        cdef int i = 0
        while seconds > _BOUNDS[i] and i < N_BUCKETS - 1:
            i += 1
        self.mine[at + i] += 1
        self.mine[at + N_BUCKETS] += <int64_t>(seconds * 1e6)
        self.mine[at + N_BUCKETS + 1] += 1

    # -- Python side (the worker loop, the status pages, tests) ------------------------
    def observe_seconds(self, int upstream, str kind, double seconds):
        """Record ``seconds`` in an upstream's ``kind`` histogram (one of HISTOGRAMS)."""
        self._observe(<int>self.upstream_offsets[upstream] + 1 + HISTOGRAMS.index(kind) * HIST,
                      seconds)

    def set_cell(self, int cell, int64_t value):
        """Set one cell of this worker's block (heartbeat, pid, up)."""
        self.mine[cell] = value

    def add_cell(self, int cell, int64_t n=1):
        self.mine[cell] += n

    def cell(self, int worker, int cell):
        """One cell of one worker's block."""
        return self.base[worker * self.block + cell]

    def add_to(self, int block, int cell, int64_t n):
        """Add to one cell of any block (the master folding counts into the retired block)."""
        self.base[block * self.block + cell] += n

    def total(self, int cell, bint retired=True):
        """A cell summed over all workers, and the retired block unless ``retired`` is False."""
        cdef int w
        cdef int64_t n = 0
        for w in range(self.workers):
            n += self.base[w * self.block + cell]
        if retired and self.has_retired:
            n += self.base[self.workers * self.block + cell]
        return n

    def clear_gauges(self, int worker):
        """Zero what a dead worker held (connections by state, queue depths, requests in flight).

        The master calls it before a slot's new worker starts; the cumulative
        counters (accepted, requests, statuses, rejections, histograms) stay, as
        nginx's stub_status totals survive a worker's restart.
        """
        cdef int64_t* p = self.base + worker * self.block
        cdef int u, i, at
        for i in (C_ACTIVE, C_READING, C_WRITING, C_WAITING, C_UP):
            p[i] = 0
        for u in range(len(self.peer_counts)):
            at = self.upstream_offsets[u]
            p[at] = 0
            for i in range(self.peer_counts[u]):
                p[at + UPSTREAM_FIXED + i] = 0

    def snapshot(self, bint retired=True):
        """Everything summed over workers (and the retired block unless ``retired`` is
        False), as plain Python data (dict)."""
        cdef int w, u, i, at
        r = retired
        out = {
            "accepted": self.total(C_ACCEPTED, r), "handled": self.total(C_HANDLED, r),
            "active": self.total(C_ACTIVE, r), "reading": self.total(C_READING, r),
            "writing": self.total(C_WRITING, r), "waiting": self.total(C_WAITING, r),
            "requests": self.total(C_REQUESTS, r),
            "rejected": {REASONS[i]: self.total(C_REJECTED + i, r) for i in range(N_REASONS)},
            "status": {}, "workers": [], "upstreams": [],
        }
        for i in range(N_STATUS):
            n = self.total(C_STATUS + i, r)
            if n:
                out["status"][i] = n
        for w in range(self.workers):
            out["workers"].append({"up": self.cell(w, C_UP), "pid": self.cell(w, C_PID),
                                   "heartbeat_ms": self.cell(w, C_HEARTBEAT),
                                   "active": self.cell(w, C_ACTIVE),
                                   "requests": self.cell(w, C_REQUESTS)})
        for u in range(len(self.peer_counts)):
            at = self.upstream_offsets[u]
            up = {"queue_depth": self.total(at, r),
                  "peer_active": [self.total(at + UPSTREAM_FIXED + i, r)
                                  for i in range(self.peer_counts[u])]}
            for k, name in enumerate(HISTOGRAMS):
                h = at + 1 + k * HIST
                up[name] = {"buckets": [self.total(h + i, r) for i in range(N_BUCKETS)],
                            "sum_seconds": self.total(h + N_BUCKETS, r) / 1e6,
                            "count": self.total(h + N_BUCKETS + 1, r)}
            out["upstreams"].append(up)
        return out


# Cumulative cells (those a reload carries over): of a block, and of an upstream
# section relative to its offset (histogram buckets, sum, count).
CUMULATIVE = ((C_ACCEPTED, C_HANDLED, C_REQUESTS) + tuple(range(C_REJECTED, C_REJECTED + N_REASONS))
              + tuple(range(C_STATUS, C_STATUS + N_STATUS)))
UPSTREAM_CUMULATIVE = tuple(range(1, 1 + len(HISTOGRAMS) * HIST))


CELLS = {"accepted": C_ACCEPTED, "handled": C_HANDLED, "active": C_ACTIVE, "reading": C_READING,
         "writing": C_WRITING, "waiting": C_WAITING, "requests": C_REQUESTS,
         "heartbeat": C_HEARTBEAT, "pid": C_PID, "up": C_UP}
