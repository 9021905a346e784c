"""Shared-memory zones, made by the master before it forks (design.md §1).

Two anonymous MAP_SHARED mappings that the workers inherit across fork: the
counters of every worker (fastgw._core.counters), whose layout depends on the
number of worker slots and on the upstreams and their peers in the
configuration's order; and the upstream zone cells (requests in flight per
peer of a zoned upstream), which a reload keeps when the upstreams are the same.
"""

import mmap
import os

from fastgw._core.counters import Stats, region_size


def _region(nbytes):
    """An anonymous MAP_SHARED mapping of at least ``nbytes`` (whole pages, zeroed)."""
    size = max(mmap.PAGESIZE, -(-nbytes // mmap.PAGESIZE) * mmap.PAGESIZE)
    return mmap.mmap(-1, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)


class Zones:
    """The shared regions of one configuration (one generation of workers).

    ``stats(slot)`` gives a worker its Stats view (``slot`` -1: read-only view
    for the master or tools). Sizes are rounded up to whole pages.

    ``previous``: the Zones of the running configuration, at reload. The
    upstream zone cells (requests in flight per peer, shared by all workers)
    are kept when the upstreams and their peers are the same, as nginx keeps
    a zone whose name and size did not change: the old workers' requests still
    in flight keep counting against ``max_conns`` while the new workers start.
    The per-worker counter blocks are always new.
    """

    def __init__(self, config, previous=None):
        self.workers = config.worker_processes
        self.upstreams = list(config.http.upstreams)
        self.peers = [[s.address for s in config.http.upstreams[name].servers]
                      for name in self.upstreams]
        nbytes = region_size(self.workers, [len(p) for p in self.peers])
        self.stats_region = _region(nbytes)
        if previous is not None and (previous.upstreams, previous.peers) == (self.upstreams,
                                                                              self.peers):
            self.zone_region = previous.zone_region
        else:
            self.zone_region = _region(8 * sum(len(p) for p in self.peers))
        # Upstreams with a zone, by index: their max_conns counts are shared.
        self.zoned = [i for i, name in enumerate(self.upstreams)
                      if config.http.upstreams[name].zone]
        # One eventfd per worker slot: a worker that frees a zone slot wakes the
        # workers that have requests queued for it (design.md §6).
        self.wake_fds = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
                         for _ in range(self.workers)] if self.zoned else []

    def close_fds(self):
        """Close the wake-up eventfds (a generation is gone, or in a child of another one)."""
        for fd in self.wake_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.wake_fds = []

    def stats(self, slot):
        """The counters as seen by worker ``slot`` (writes go to its own block)."""
        return Stats(self.stats_region, self.workers, slot, [len(p) for p in self.peers],
                     self.zone_region)

    def upstream_index(self, name):
        return self.upstreams.index(name)

    def waker(self, stats, slot):
        """For worker ``slot``: a function of an upstream index that wakes the other
        workers with requests queued for that upstream (one eventfd write each)."""
        others = [w for w in range(self.workers) if w != slot]
        fds = self.wake_fds

        def wake(upstream):
            for w in others:
                if stats.queue_depth_of(w, upstream) > 0:
                    try:
                        os.eventfd_write(fds[w], 1)
                    except BlockingIOError:
                        pass  # already signalled and not yet read
        return wake
