"""One worker process: a uvloop loop serving its listening sockets until told to stop.

The master forks a worker per slot and hands it the slot's SO_REUSEPORT
sockets (one per ``listen`` address). The worker builds its tables from the
configuration, tells the master it is ready and then serves. The master and
the worker share a socketpair carrying msgpack frames: the worker sends
``{"event": "ready"}`` once and ``{"event": "heartbeat"}`` each second (the
master kills a worker that stays silent, fastgw.master); the master sends
commands, which the same signals also give, as nginx's workers take them:

* ``quit`` / QUIT: graceful stop (``"reload": true`` when a new generation
  has taken over: idle keep-alive connections then stay until their next
  response, which says ``Connection: close``). Stop accepting (the socket stays open in the
  master, so connections wait in its accept queue for the next worker), close
  idle keep-alive connections, finish in-flight and queued requests (their
  responses say ``Connection: close``), exit; ``worker_shutdown_timeout``
  bounds it.
* ``stop`` / TERM, INT: fast stop: close everything and exit.
* ``reopen`` / USR1: reopen log files.

A worker whose master disappears (its channel closes, or its parent pid
changes) exits on its own.
"""

import asyncio
import gc
import os
import resource
import signal
import sys
import time

import msgpack
import uvloop
from setproctitle import setproctitle

from fastgw import runtime
from fastgw._core import limits
from fastgw._core.counters import CELLS
from fastgw._core.proxy import Runtime, service_queue
from fastgw.health import HealthChecks
from fastgw.observe.error_log import Logs
from fastgw.shm import Zones

TICK = 1.0  # seconds between housekeeping passes (log flush, parent check)
# Net allocations of tracked objects that start a young-generation collection (Python: 700).
GC_THRESHOLD = 10000


class Worker:
    """A worker for one slot.

    ``config``: the Config; ``slot``: its index; ``sockets``: list of
    ``(Listen, socket)``; ``channel``: the worker's end of the socketpair to
    the master (or None); ``master_pid``: the pid to watch.
    """

    def __init__(self, config, slot, sockets, channel=None, master_pid=None, zones=None):
        self.config = config
        self.zones = zones
        self.slot = slot
        self.sockets = sockets
        self.channel = channel
        self.unpacker = msgpack.Unpacker()
        self.master_pid = master_pid or os.getppid()
        self.loop = None
        self.rt = None
        self.listeners = []
        self.pools = {}
        self.logs = Logs()
        self.access_logs = runtime.AccessLogs(config.http.log_formats)
        self.stopping = False
        self.exit_code = 0
        self.health = None

    def run(self):
        """Serve until stopped; returns the process exit code."""
        setproctitle("fastgw: worker process")
        for sig in (signal.SIGHUP, signal.SIGQUIT, signal.SIGTERM, signal.SIGINT,
                    signal.SIGUSR1, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        self.error_log = self.logs.get(*self.config.error_log)
        if self.config.worker_rlimit_nofile:
            n = self.config.worker_rlimit_nofile
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
            except (ValueError, OSError) as exc:
                # nginx logs an alert and carries on with the limit it has.
                self.error_log.log("alert", f"setrlimit(RLIMIT_NOFILE, {n}) failed ({exc})")
        limits.set_process()  # the limit zones' lock records this pid
        self.loop = uvloop.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.rt = Runtime(self.loop, self.error_log, self.config.worker_connections,
                          str(os.getpid()).encode())
        if self.zones is None:
            self.zones = Zones(self.config)  # a worker run on its own (tests, tools)
        self.stats = self.zones.stats(self.slot)
        self.stats.set_cell(CELLS["pid"], os.getpid())
        self.stats.set_cell(CELLS["up"], 1)
        self.stats.set_cell(CELLS["heartbeat"], int(time.time() * 1000))
        self.rt.stats = self.stats
        self.rt.pages = runtime.status_pages(self.stats, self.zones)
        self.pools = runtime.build_pools(self.config, self.loop)
        self.use_zones()
        if self.slot == 0:
            # One worker checks for all: the verdicts live in the zones.
            self.health = HealthChecks(self.loop, self.config.http.upstreams, self.pools,
                                       self.error_log)
            self.health.start()
        self.listeners = runtime.build_listeners(self.config, self.rt, self.sockets, self.logs,
                                                 self.access_logs, self.pools,
                                                 runtime.limit_tables(self.zones,
                                                                      self.error_log))
        for listener in self.listeners:
            listener.start()
        self.loop.add_signal_handler(signal.SIGQUIT, self.graceful_stop)
        self.loop.add_signal_handler(signal.SIGTERM, self.fast_stop)
        self.loop.add_signal_handler(signal.SIGINT, self.fast_stop)
        self.loop.add_signal_handler(signal.SIGUSR1, self.reopen_logs)
        self.loop.add_signal_handler(signal.SIGHUP, lambda: None)
        if self.channel is not None:
            self.channel.setblocking(False)
            self.loop.add_reader(self.channel.fileno(), self._on_channel)
        self.loop.call_later(TICK, self.tick)
        self.notify({"event": "ready", "slot": self.slot, "pid": os.getpid()})
        # The garbage collector, tuned for a worker that serves: what start-up built
        # (modules, configuration, routes, pools) lives as long as the worker and is
        # moved out of its sight, and a young-generation collection waits for
        # GC_THRESHOLD net allocations rather than 700. At -c1000 a loop iteration
        # reads hundreds of requests whose objects all survive until their responses
        # come back, so with 700 collections ran many times per iteration, promoting
        # them all, and took 5-8% of the worker's CPU (issue 9); with this, ~0.1%.
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD, 10, 10)
        try:
            self.loop.run_forever()
        finally:
            self.stats.set_cell(CELLS["up"], 0)
            self.access_logs.close()
            self.logs.close()
        return self.exit_code

    def use_zones(self):
        """Share max_conns counts of zoned upstreams and listen for wake-ups from other workers."""
        if not self.zones.zoned:
            return
        waker = self.zones.waker(self.stats, self.slot)
        self.zoned_pools = []
        for name, pool in self.pools.items():
            index = self.zones.upstream_index(name)
            if index in self.zones.zoned:
                for peer in pool.balancer.peers:
                    peer.use_zone(self.stats, index)
                pool.waker = waker
                self.zoned_pools.append(pool)
        fd = self.zones.wake_fds[self.slot]
        self.loop.add_reader(fd, self._woken, fd)

    def _woken(self, fd):
        try:
            os.eventfd_read(fd)
        except BlockingIOError:
            return
        for pool in self.zoned_pools:
            service_queue(pool)

    def notify(self, message):
        """Send one msgpack frame to the master (best effort: never blocks the loop)."""
        if self.channel is None:
            return
        try:
            self.channel.send(msgpack.packb(message))
        except OSError:
            pass

    def _on_channel(self):
        try:
            data = self.channel.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.loop.remove_reader(self.channel.fileno())
            self.channel.close()
            self.channel = None
            if not self.stopping:
                self.error_log.log("alert", "master process is gone, exiting")
                self.fast_stop()
            return
        self.unpacker.feed(data)
        for message in self.unpacker:
            command = message.get("cmd") if isinstance(message, dict) else None
            if command == "quit":
                self.graceful_stop(reload=bool(message.get("reload")))
            elif command == "stop":
                self.fast_stop()
            elif command == "reopen":
                self.reopen_logs()

    def tick(self):
        now = time.time()
        self.access_logs.flush_due(now)
        self.stats.set_cell(CELLS["heartbeat"], int(now * 1000))
        self.notify({"event": "heartbeat"})
        if self.error_log.enabled("debug"):
            idle = sum(p.idle_count for p in self.pools.values())
            self.error_log.log("debug", f"connections: {self.rt.active} counted, "
                                        f"{len(self.rt.connections)} clients, {idle} idle upstream")
        if os.getppid() != self.master_pid:
            # The master is gone (killed -9?): nobody can stop or replace us.
            self.error_log.log("alert", "master process is gone, exiting")
            self.fast_stop()
            return
        self.loop.call_later(TICK, self.tick)

    def graceful_stop(self, reload=False):
        """Stop accepting and finish. ``reload``: a new generation has taken over, so idle
        keep-alive clients are not cut off: each gets ``Connection: close`` on its next
        response (or its keepalive_timeout), bounded by worker_shutdown_timeout."""
        if self.stopping:
            return
        self.stopping = True
        if self.health is not None:
            self.health.stop()
        self.error_log.log("notice", "gracefully shutting down" + (" (reload)" if reload else ""))
        for listener in self.listeners:
            listener.stop()
            # Our copy only: a reload's new worker keeps the master's socket.
            listener.sock.close()
        for pool in self.pools.values():
            pool.close_idle()
        self.loop.call_later(self.config.worker_shutdown_timeout, self._shutdown_timeout)
        self.rt.shutdown(self._drained, reload)

    def _drained(self):
        self.access_logs.flush()
        self.loop.call_soon(self.loop.stop)

    def _shutdown_timeout(self):
        self.error_log.log("warn", "worker_shutdown_timeout expired, closing "
                                   f"{len(self.rt.connections)} connections")
        self.fast_stop()

    def fast_stop(self):
        self.stopping = True
        if self.health is not None:
            self.health.stop()
        for listener in self.listeners:
            listener.stop()
        self.rt.abort_all()
        for pool in self.pools.values():
            pool.close_idle()
        self.access_logs.flush()
        self.loop.call_soon(self.loop.stop)

    def reopen_logs(self):
        self.logs.reopen()
        self.access_logs.reopen()


def run_worker(config, slot, sockets, channel, master_pid, zones=None):
    """Entry point in the forked child: run a Worker and exit with its code (never returns)."""
    code = 1
    try:
        code = Worker(config, slot, sockets, channel, master_pid, zones).run()
    except BaseException as exc:  # noqa: BLE001 - a worker must die loudly, not silently
        try:
            Logs().get(*config.error_log).log("emerg", f"worker process failed: {exc!r}")
        except Exception:
            pass
        sys.stderr.write(f"fastgw: [emerg] worker process failed: {exc!r}\n")
        code = 2
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
