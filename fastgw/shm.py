"""Shared-memory zones, made by the master before it forks (design.md §1).

For now one zone: the counters of every worker (fastgw._core.counters), an
anonymous MAP_SHARED mapping that the workers inherit across fork. Its layout
depends only on the number of worker slots and on the upstreams and their
peers, in the configuration's order.
"""

import mmap

from fastgw._core.counters import Stats, block_size


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
        cells = block_size([len(p) for p in self.peers]) * self.workers
        size = max(mmap.PAGESIZE, -(-cells * 8 // mmap.PAGESIZE) * mmap.PAGESIZE)
        self.stats_region = mmap.mmap(-1, size, flags=mmap.MAP_SHARED,
                                      prot=mmap.PROT_READ | mmap.PROT_WRITE)

    def stats(self, slot):
        """The counters as seen by worker ``slot`` (writes go to its own block)."""
        return Stats(self.stats_region, self.workers, slot, [len(p) for p in self.peers])

    def upstream_index(self, name):
        return self.upstreams.index(name)
