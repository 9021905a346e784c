"""Shared-memory zones, made by the master before it forks (design.md §1).

Two anonymous MAP_SHARED mappings that the workers inherit across fork: the
counters of every worker (fastgw._core.counters), whose layout depends on the
number of worker slots and on the upstreams and their peers in the
configuration's order; and the upstream zone cells (requests in flight per
peer of a zoned upstream), which a reload keeps when the upstreams are the same.
"""

import mmap
import os
import time

from fastgw._core.counters import (CUMULATIVE, HISTOGRAMS, P_CHECKED_CELL, P_FAILS_CELL, P_HC_DOWN_CELL,
                                   UPSTREAM_CUMULATIVE, Stats, region_size, zone_size)
from fastgw._core.limits import LimitTable

# Control cells of a generation's counters (int64): a sequence number, odd while
# the master folds counts into the retired block (readers retry), and a flag set
# once the generation's own counts have been folded into a newer one.
SEQ, FOLDED, CARRIED = 0, 1, 2


def _region(nbytes):
    """An anonymous MAP_SHARED mapping of at least ``nbytes`` (whole pages, zeroed)."""
    size = max(mmap.PAGESIZE, -(-nbytes // mmap.PAGESIZE) * mmap.PAGESIZE)
    return mmap.mmap(-1, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)


class Zones:
    """The shared regions of one configuration (one generation of workers).

    ``stats(slot)`` gives a worker its Stats view (``slot`` -1: read-only view
    for the master or tools). Sizes are rounded up to whole pages.

    ``previous``: the Zones of the running configuration, at reload. An
    upstream's zone cells (requests in flight per peer, shared by all workers)
    are kept when the upstream keeps its name and its peers, as nginx keeps a
    zone whose name and size did not change: the old workers' requests still
    in flight keep counting against ``max_conns`` while the new workers start.
    The per-worker counter blocks are always new.

    Counters outlive a reload as nginx's stub_status totals do: each
    generation has, after its workers' blocks, a retired block. When a
    generation takes over, the master adds the previous one's retired block
    into the new one's (``carry_from``); when a generation's last worker has
    exited, the master adds its workers' cumulative counts into the current
    generation's retired block and marks it folded (``fold``). ``older`` lists
    the Zones of the generations still running when this one was made: until
    they are folded, ``snapshot`` adds their workers' blocks (their connections
    count as active, as nginx's old workers' do). Cumulative counts are matched
    by upstream name; a reader never sees a count twice (``SEQ``); until the
    take-over, the new workers' pages read the previous generation's retired
    block where it is (``CARRIED``). The old workers' pages lack what is
    folded into newer generations while they drain (they answer little: only
    the last request of their keep-alive connections).
    """

    def __init__(self, config, previous=None, older=()):
        self.workers = config.worker_processes
        self.upstreams = list(config.http.upstreams)
        self.peers = [[s.address for s in config.http.upstreams[name].servers]
                      for name in self.upstreams]
        # (down, checked, max_fails, fail_timeout ms) per peer: to tell its state from its cells.
        self.peer_health = [[(s.down, up.health_check is not None, up.max_fails(s),
                              int(s.fail_timeout * 1000))
                             for s in up.servers]
                            for up in (config.http.upstreams[name] for name in self.upstreams)]
        nbytes = region_size(self.workers + 1, [len(p) for p in self.peers])
        self.stats_region = _region(nbytes)
        self.ctl_region = _region(16)
        self.ctl = memoryview(self.ctl_region).cast("q")
        self.older = list(older)
        self.previous = previous
        self._view = None
        # One region per upstream, kept from the running configuration when the
        # upstream has the same name and the same peers in the same order.
        self.zone_regions = []
        for name, peers in zip(self.upstreams, self.peers):
            kept = None
            if previous is not None and name in previous.upstreams:
                i = previous.upstreams.index(name)
                if previous.peers[i] == peers:
                    kept = previous.zone_regions[i]
            self.zone_regions.append(kept if kept is not None else _region(zone_size(len(peers))))
        # limit_req / limit_conn zones: a table each, kept across a reload while
        # the zone's name, size and key are unchanged (state survives, as in nginx).
        self.limit_specs = dict(config.http.limit_zones)
        self.limit_tables = {}
        for name, spec in self.limit_specs.items():
            old = previous.limit_specs.get(name) if previous is not None else None
            if old is not None and old.signature() == spec.signature():
                self.limit_tables[name] = previous.limit_tables[name]
            else:
                self.limit_tables[name] = LimitTable(_region(spec.size), True, name)
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
                     self.zone_regions, True)

    def view(self):
        """A reader's Stats (cached)."""
        if self._view is None:
            self._view = self.stats(-1)
        return self._view

    @property
    def folded(self):
        return bool(self.ctl[FOLDED])

    # -- the master, across reloads --------------------------------------------------------
    def carry_from(self, previous):
        """This generation takes over from ``previous``: carry its retired counts."""
        self._fold(previous, [previous.workers], carried=previous)

    def fold(self, old):
        """``old``'s last worker has exited: its counts join this generation's retired block."""
        self._fold(old, range(old.workers), mark=old)
        if old in self.older:
            self.older.remove(old)

    def _fold(self, src, blocks, mark=None, carried=None):
        a, b = src.view(), self.view()
        retired = self.workers
        self.ctl[SEQ] += 1  # odd: readers retry
        try:
            for cell in CUMULATIVE:
                n = sum(a.cell(w, cell) for w in blocks)
                if n:
                    b.add_to(retired, cell, n)
            for u, name in enumerate(src.upstreams):
                if name not in self.upstreams:
                    continue
                at_a = a.upstream_offsets[u]
                at_b = b.upstream_offsets[self.upstreams.index(name)]
                for k in UPSTREAM_CUMULATIVE:
                    n = sum(a.cell(w, at_a + k) for w in blocks)
                    if n:
                        b.add_to(retired, at_b + k, n)
            if mark is not None:
                mark.ctl[FOLDED] = 1
            if carried is not None:
                carried.ctl[CARRIED] = 1
        finally:
            self.ctl[SEQ] += 1

    # -- readers (the stub_status and metrics pages) --------------------------------------
    def snapshot(self):
        """The counters of this generation (retired block included) and of the older
        generations still running, summed; the layout (upstream order) is this one's."""
        snap = None
        prev = self.previous
        for _ in range(1000):
            seq = self.ctl[SEQ]
            pseq = prev.ctl[SEQ] if prev is not None else 0
            if seq & 1 or pseq & 1:
                continue  # the master is folding: microseconds
            snap = self.view().snapshot()
            if prev is not None and not prev.ctl[CARRIED]:
                # Before the take-over (while the new workers start), the previous
                # generation's retired counts are still in its own block.
                whole = prev.view().snapshot()
                _merge(snap, whole, prev, self)
                _merge(snap, prev.view().snapshot(retired=False), prev, self, -1)
            for old in self.older:
                if not old.folded:
                    _merge(snap, old.view().snapshot(retired=False), old, self)
            if self.ctl[SEQ] == seq and (prev is None or prev.ctl[SEQ] == pseq):
                return snap
        return snap if snap is not None else self.view().snapshot()

    def peer_states(self, upstream):
        """Each peer's state of a zoned upstream (index): "up", "failed" (max_fails, within
        fail_timeout), "unhealthy" (active check) or "down" (configured)."""
        view = self.view()
        now_ms = time.monotonic() * 1000  # CLOCK_MONOTONIC, as the balancer's timestamps
        out = []
        for i, (down, checked, max_fails, fail_timeout_ms) in enumerate(self.peer_health[upstream]):
            cells = view.peer_cells(upstream, i)
            if down:
                out.append("down")
            elif checked and cells[P_HC_DOWN_CELL]:
                out.append("unhealthy")
            elif max_fails and cells[P_FAILS_CELL] >= max_fails and now_ms - cells[P_CHECKED_CELL] <= fail_timeout_ms:
                out.append("failed")
            else:
                out.append("up")
        return out

    def upstream_index(self, name):
        return self.upstreams.index(name)

    def waker(self, stats, slot):
        """For worker ``slot``: a function of an upstream index that wakes the workers with
        requests queued for that upstream (one eventfd write each): the others of this
        generation, and those of older generations still draining that share the
        upstream's zone cells (after a reload, a slot freed by a new worker must reach a
        request queued in an old one)."""
        targets = []
        for u, name in enumerate(self.upstreams):
            mine = [(stats, w, self.wake_fds[w], u, False) for w in range(self.workers)
                    if w != slot and self.wake_fds]
            for old in self.older:
                if name in old.upstreams and old.wake_fds and not old.folded:
                    i = old.upstreams.index(name)
                    if old.zone_regions[i] is self.zone_regions[u]:
                        view = old.view()
                        mine += [(view, w, old.wake_fds[w], i, True) for w in range(old.workers)]
            targets.append(mine)

        def wake(upstream):
            """Returns True when a worker of an older generation was woken."""
            older = False
            for view, w, fd, index, is_older in targets[upstream]:
                if view.queue_depth_of(w, index) > 0:
                    try:
                        os.eventfd_write(fd, 1)
                        older = older or is_older
                    except OSError:
                        pass  # already signalled and not yet read, or gone
            return older
        return wake


def _merge(into, snap, src, dst, sign=1):
    """Add (``sign`` -1: subtract) counters ``snap`` of generation ``src`` into ``into``
    (layout of ``dst``)."""
    for key in ("accepted", "handled", "active", "reading", "writing", "waiting", "requests"):
        into[key] += sign * snap[key]
    for reason, n in snap["rejected"].items():
        into["rejected"][reason] = into["rejected"].get(reason, 0) + sign * n
    for code, n in snap["status"].items():
        total = into["status"].get(code, 0) + sign * n
        if total:
            into["status"][code] = total
        else:
            into["status"].pop(code, None)
    for u, name in enumerate(src.upstreams):
        if name not in dst.upstreams:
            continue
        v = dst.upstreams.index(name)
        a, b = snap["upstreams"][u], into["upstreams"][v]
        b["queue_depth"] += sign * a["queue_depth"]
        for name in HISTOGRAMS:
            ha, hb = a[name], b[name]
            hb["buckets"] = [x + sign * y for x, y in zip(hb["buckets"], ha["buckets"])]
            hb["sum_seconds"] += sign * ha["sum_seconds"]
            hb["count"] += sign * ha["count"]
        for i, peer in enumerate(src.peers[u]):
            if peer in dst.peers[v]:
                b["peer_active"][dst.peers[v].index(peer)] += sign * a["peer_active"][i]
