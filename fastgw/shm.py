"""Shared-memory zones, made by the master before it forks (design.md §1).

For now one zone: the counters of every worker (fastgw._core.counters), an
anonymous MAP_SHARED mapping that the workers inherit across fork. Its layout
depends only on the number of worker slots and on the upstreams and their
peers, in the configuration's order.
"""

import mmap
import os

from fastgw._core.counters import Stats, region_size


class Zones:
    """The shared regions of one configuration.

    ``stats(slot)`` gives a worker its Stats view (``slot`` -1: read-only view
    for the master or tools). Sizes are rounded up to whole pages.
    """

    def __init__(self, config):
        self.workers = config.worker_processes
        self.upstreams = list(config.http.upstreams)
        self.peers = [[s.address for s in config.http.upstreams[name].servers]
                      for name in self.upstreams]
        nbytes = region_size(self.workers, [len(p) for p in self.peers])
        size = max(mmap.PAGESIZE, -(-nbytes // mmap.PAGESIZE) * mmap.PAGESIZE)
        self.stats_region = mmap.mmap(-1, size, flags=mmap.MAP_SHARED,
                                      prot=mmap.PROT_READ | mmap.PROT_WRITE)
        # Upstreams with a zone, by index: their max_conns counts are shared.
        self.zoned = [i for i, name in enumerate(self.upstreams)
                      if config.http.upstreams[name].zone]
        # One eventfd per worker slot: a worker that frees a zone slot wakes the
        # workers that have requests queued for it (design.md §6).
        self.wake_fds = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
                         for _ in range(self.workers)] if self.zoned else []

    def stats(self, slot):
        """The counters as seen by worker ``slot`` (writes go to its own block)."""
        return Stats(self.stats_region, self.workers, slot, [len(p) for p in self.peers])

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
