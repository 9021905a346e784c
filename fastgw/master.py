"""The master process: sockets, generations of workers, signals. It never serves a request.

Shaped after gunicorn's arbiter and nginx's ngx_master_process_cycle:

* The master binds SO_REUSEPORT listening sockets, at least one per ``listen``
  address and worker slot, and keeps them. A worker inherits its slot's
  sockets across fork; a replacement for the slot, or the slot's worker in the
  next generation, inherits the same ones, so the kernel's accept queue of a
  socket is never thrown away (design.md §1). Closing a reuseport socket would
  reset the connections waiting in its queue, so when a reload leaves fewer
  slots, the surplus sockets are not closed: socket j goes to slot j mod N,
  and the remaining workers accept on them too.
* A generation is one configuration's workers and shared zones. HUP (reload)
  parses the file again; if it is invalid, each error is logged with file and
  line and the running generation keeps serving. If it is valid, the master
  binds what is new, makes the new zones, starts the new generation and, only
  when all its workers have reported ready, asks the old ones to finish
  gracefully (they stop accepting, finish in-flight and queued requests and
  exit, bounded by worker_shutdown_timeout). A new worker that dies before it
  is ready fails the reload: the old generation stays. The sockets of a
  removed ``listen`` are closed when no live worker uses them any more.
* Master and workers talk over a socketpair per worker, in msgpack frames:
  the master sends ``quit`` (graceful stop), ``stop`` (fast stop) and
  ``reopen`` (logs); a worker sends ``ready`` and a ``heartbeat`` each second.
  A worker silent for ``worker_heartbeat_timeout`` is hung: it is logged,
  killed and replaced. Signals sent to a worker directly still work.
* Signal handlers only record the signal and wake the main loop through a
  pipe; the loop dispatches to ``handle_<signal>`` in order.
* A worker that dies unexpectedly is logged with its exit status or signal and
  replaced at once on the same sockets; one that keeps dying right after start
  is respawned with an exponential back-off (0.1 s doubling to 10 s), and the
  error log says so.

Signals: HUP reload, QUIT graceful stop, TERM/INT fast stop, USR1 reopen logs,
CHLD reap.
"""

import errno
import os
import select
import signal
import socket
import sys
import time

import msgpack
from setproctitle import setproctitle

from fastgw.observe.error_log import Logs

# A worker that dies within this many seconds of its start counts as a crash at
# start for the back-off.
QUICK_DEATH = 2.0
BACKOFF_MIN, BACKOFF_MAX = 0.1, 10.0
# Fast stop: how long workers get to exit after TERM before SIGKILL.
TERM_GRACE = 5.0
# Reload: how long the new generation may take to report ready before the
# reload is abandoned and the old generation keeps serving.
READY_TIMEOUT = 30.0
# Master-to-worker commands, and the signal that does the same when the
# channel cannot take the message.
COMMANDS = {"quit": signal.SIGQUIT, "stop": signal.SIGTERM, "reopen": signal.SIGUSR1}


class MasterError(Exception):
    """Start-up failed (pid file, bind); the message is nginx-worded."""


class Slot:
    """A worker slot of one generation: its sockets, its worker, its channel, its crash history."""

    def __init__(self, generation, index, sockets):
        self.generation = generation
        self.index = index
        self.sockets = sockets  # [(Listen, socket)]
        self.pid = None
        self.started = 0.0
        self.ready = False
        self.failures = 0
        self.respawn_at = None
        self.chan = None  # the master's end of the socketpair
        self.unpacker = None
        self.heartbeat = 0.0  # monotonic time of the last sign of life
        self.quitting = False


class Generation:
    """The workers of one configuration, and its shared zones (fastgw.shm.Zones)."""

    def __init__(self, number, config, zones):
        self.number = number
        self.config = config
        self.zones = zones
        self.stats = zones.stats(-1)
        self.slots = []

    def alive(self):
        return [s for s in self.slots if s.pid is not None]

    def close(self):
        for slot in self.slots:
            if slot.chan is not None:
                slot.chan.close()
                slot.chan = None
        self.zones.close_fds()


class Master:
    """Supervise the workers of the current configuration until a stop signal.

    ``argv`` is shown in the process title (``fastgw: master process ...``).
    ``reload_config()`` returns the configuration to apply at HUP (it raises
    ConfigErrors, ConfigError or OSError when the file is not usable); without
    it HUP is refused with a log line.
    """

    SIGNALS = (signal.SIGHUP, signal.SIGQUIT, signal.SIGINT, signal.SIGTERM,
               signal.SIGUSR1, signal.SIGCHLD, signal.SIGWINCH)

    def __init__(self, config, argv=None, reload_config=None):
        self.config = config
        self.argv = argv or sys.argv
        self.reload_config = reload_config
        self.logs = Logs()
        self.log = self.logs.get(*config.error_log)
        self.sockets = {}  # (host, port) -> [socket], at least one per slot
        self.current = None
        self.pending = None  # a reload's generation, until all its workers are ready
        self.pending_deadline = 0.0
        self.pending_logs = None
        self.retiring = []  # older generations finishing their requests
        self.generations = 0
        self.sig_queue = []
        self.wake_r = self.wake_w = None
        self.stopping = None  # None, "graceful" or "fast"
        self.stop_deadline = None
        self.pid_written = False

    @property
    def slots(self):
        """The slots of the current generation."""
        return self.current.slots if self.current is not None else []

    def generations_alive(self):
        gens = [self.current] if self.current is not None else []
        if self.pending is not None:
            gens.append(self.pending)
        return gens + self.retiring

    def all_slots(self):
        return [slot for gen in self.generations_alive() for slot in gen.slots]

    # -- start ------------------------------------------------------------------------------
    def run(self):
        """Start, supervise, stop; returns the exit code."""
        setproctitle("fastgw: master process " + " ".join(self.argv))
        self.write_pid(self.config.pid)
        try:
            self.bind(self.config)
            # Shared memory before the fork: the workers inherit the mapping.
            self.current = self.new_generation(self.config)
            self.install_signals()
            for slot in self.slots:
                self.spawn(slot)
            self.log.log("notice", f"fastgw started with {len(self.slots)} worker processes")
            self.loop()
            return 0
        finally:
            self.close_sockets()
            self.remove_pid(self.config.pid)
            self.logs.close()

    def write_pid(self, path):
        try:
            with open(path) as fh:
                old = int(fh.read().strip() or 0)
            if old and old != os.getpid() and _alive(old):
                raise MasterError(f'fastgw is already running (pid {old} in "{path}")')
        except (OSError, ValueError):
            pass
        tmp = f"{path}.{os.getpid()}"
        try:
            with open(tmp, "w") as fh:
                fh.write(f"{os.getpid()}\n")
            os.replace(tmp, path)
        except OSError as exc:
            raise MasterError(f'open() "{path}" failed ({exc.errno}: {exc.strerror})') from None
        self.pid_written = True

    def remove_pid(self, path):
        if not self.pid_written:
            return
        try:
            with open(path) as fh:
                if int(fh.read().strip() or 0) == os.getpid():
                    os.unlink(path)
        except (OSError, ValueError):
            pass

    def bind(self, config):
        """Make sure every listen address of ``config`` has a socket per worker slot.

        New addresses are probed first: the probe binds without SO_REUSEPORT,
        so it fails if anything else holds the address, even another fastgw
        with SO_REUSEPORT, which would otherwise silently share the port with
        us. Raises MasterError (nginx's ``bind() to ... failed``) after closing
        whatever this call bound.
        """
        n = config.worker_processes
        added = []  # (address, socket) bound by this call, undone on failure
        try:
            for listen in config.listens():
                socks = self.sockets.get(listen.address)
                if socks is None:
                    _probe(listen)
                    socks = []
                while len(socks) < n:
                    sock = _reuseport_socket(listen)
                    added.append((listen.address, sock))
                    socks.append(sock)
                self.sockets[listen.address] = socks
        except MasterError:
            for address, sock in added:
                sock.close()
                socks = self.sockets.get(address)
                if socks is not None and sock in socks:
                    socks.remove(sock)
                    if not socks:
                        del self.sockets[address]
            raise

    def new_generation(self, config):
        """A generation for ``config``: its zones and slots (sockets already bound)."""
        from fastgw.shm import Zones

        self.generations += 1
        previous = self.current.zones if self.current is not None else None
        older = [g.zones for g in self.generations_alive()]
        gen = Generation(self.generations, config, Zones(config, previous, older))
        n = config.worker_processes
        for i in range(n):
            sockets = []
            for listen in config.listens():
                socks = self.sockets[listen.address]
                # Surplus sockets (left by a generation with more slots) are served
                # too: socket j belongs to slot j mod n.
                sockets.extend((listen, socks[j]) for j in range(len(socks)) if j % n == i)
            gen.slots.append(Slot(gen, i, sockets))
        return gen

    def close_sockets(self, addresses=None):
        for address in list(self.sockets if addresses is None else addresses):
            for sock in self.sockets.pop(address, ()):
                sock.close()

    def close_unused_sockets(self):
        """Close the sockets no live worker accepts on: those of a removed ``listen``, or
        those a failed reload bound for slots that never served."""
        used = set()
        for gen in self.generations_alive():
            for slot in gen.slots:
                if gen is self.current or gen is self.pending or slot.pid is not None:
                    used.update(id(sock) for _, sock in slot.sockets)
        for address in list(self.sockets):
            keep = [sock for sock in self.sockets[address] if id(sock) in used]
            if len(keep) == len(self.sockets[address]):
                continue
            self.log.log("notice", f"closing {len(self.sockets[address]) - len(keep)} listening "
                                   f"sockets of {address[0]}:{address[1]} no worker uses any more")
            for sock in self.sockets[address]:
                if id(sock) not in used:
                    sock.close()
            if keep:
                self.sockets[address] = keep
            else:
                del self.sockets[address]

    def install_signals(self):
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        for sig in self.SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame):
        # Only record it: the main loop does the work (gunicorn's arbiter).
        self.sig_queue.append(signum)
        try:
            os.write(self.wake_w, b"!")
        except OSError:
            pass

    # -- workers ----------------------------------------------------------------------------
    def spawn(self, slot):
        gen = slot.generation
        # What a previous worker of this slot held is gone with it.
        gen.stats.clear_gauges(slot.index)
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            parent_end.close()
            # The child leaves the master's signal handling behind at once.
            for sig in self.SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            mine = {id(sock) for _, sock in slot.sockets}
            for socks in self.sockets.values():
                for sock in socks:
                    if id(sock) not in mine:
                        sock.close()
            for other in self.all_slots():
                if other.chan is not None:
                    other.chan.close()
            for other in self.generations_alive():
                # Older generations' wake-up descriptors stay: this worker may free a
                # zone slot that one of their queued requests waits for.
                if other is not gen and other.zones not in gen.zones.older:
                    other.zones.close_fds()
            if self.wake_r is not None:
                os.close(self.wake_r)
                os.close(self.wake_w)
            # The worker opens its own logs; the master's would stay open forever
            # (a rotated file never freed, one more descriptor per reload).
            self.logs.close()
            if self.pending_logs is not None:
                self.pending_logs.close()
            from fastgw.worker import run_worker  # the compiled hot path, children only

            run_worker(gen.config, slot.index, slot.sockets, child_end, os.getppid(), gen.zones)
        child_end.close()
        parent_end.setblocking(False)
        if slot.chan is not None:
            slot.chan.close()
        slot.chan = parent_end
        slot.unpacker = msgpack.Unpacker()
        slot.pid = pid
        slot.started = slot.heartbeat = time.monotonic()
        slot.ready = False
        slot.respawn_at = None
        self.log.log("notice", f"start worker process {pid}")

    def send(self, slot, command, **extra):
        """Send ``command`` (quit, stop, reopen) to a slot's worker; a signal if the channel fails."""
        if slot.pid is None:
            return
        try:
            slot.chan.send(msgpack.packb({"cmd": command, **extra}))
        except (OSError, AttributeError):
            _kill(slot.pid, COMMANDS[command])

    def reap(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((s for s in self.all_slots() if s.pid == pid), None)
            if slot is None:
                continue
            gen = slot.generation
            slot.pid = None
            if slot.chan is not None:
                slot.chan.close()
                slot.chan = None
            # Zone slots the dead worker held are given back to the others, and a
            # limit zone lock it died holding is freed (nginx does the same).
            gen.stats.release_worker(slot.index, gen.zones.zoned)
            for other in self.generations_alive():
                for name, table in other.zones.limit_tables.items():
                    if table.release_if_held_by(pid):
                        self.log.log("alert", f"worker process {pid} died holding the lock of "
                                              f'zone "{name}"; released')
            gen.stats.clear_gauges(slot.index)
            how = _describe(status)
            if self.stopping or slot.quitting or gen in self.retiring:
                self.log.log("notice", f"worker process {pid} {how}")
                if gen in self.retiring and not gen.alive():
                    self.retire_done(gen)
                continue
            if gen is self.pending:
                self.log.log("alert", f"worker process {pid} of the new configuration {how} before "
                                      f"it was ready; reload failed, the running configuration "
                                      f"stays in force")
                self.abandon_pending()
                continue
            lived = time.monotonic() - slot.started
            if lived < QUICK_DEATH:
                slot.failures += 1
                delay = min(BACKOFF_MIN * 2 ** (slot.failures - 1), BACKOFF_MAX)
                self.log.log("alert", f"worker process {pid} {how} {lived:.1f}s after its start; "
                                      f"respawning in {delay:.1f}s (attempt {slot.failures})")
                slot.respawn_at = time.monotonic() + delay
            else:
                slot.failures = 0
                self.log.log("alert", f"worker process {pid} {how}")
                self.spawn(slot)

    def read_channel(self, slot):
        try:
            data = slot.chan.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            slot.chan.close()
            slot.chan = None
            return
        slot.heartbeat = time.monotonic()
        slot.unpacker.feed(data)
        for message in slot.unpacker:
            if isinstance(message, dict) and message.get("event") == "ready" and not slot.ready:
                slot.ready = True
                self.log.log("notice", f"worker process {slot.pid} is ready")

    def check_heartbeats(self, now):
        for slot in self.all_slots():
            timeout = slot.generation.config.worker_heartbeat_timeout
            if slot.pid is not None and timeout and now - slot.heartbeat > timeout:
                self.log.log("alert", f"worker process {slot.pid} sent no heartbeat for "
                                      f"{now - slot.heartbeat:.1f}s (worker_heartbeat_timeout "
                                      f"{timeout:g}s): it is hung, killing it")
                _kill(slot.pid, signal.SIGKILL)
                slot.heartbeat = now  # once; the reap replaces it

    # -- reload ---------------------------------------------------------------------------
    def retire(self, gen):
        """Ask every worker of ``gen`` to finish gracefully (another generation serves)."""
        for slot in gen.slots:
            slot.quitting = True
            slot.respawn_at = None
            self.send(slot, "quit", reload=True)
        self.retiring.append(gen)
        if not gen.alive():
            self.retire_done(gen)

    def retire_done(self, gen):
        """The last worker of a retired generation has exited."""
        if gen in self.retiring:
            self.retiring.remove(gen)
        gen.close()
        # Its counts join the current generation's totals (stub_status and
        # metrics do not go back after a reload).
        self.current.zones.fold(gen.zones)
        for other in self.generations_alive():
            if gen.zones in other.zones.older:
                other.zones.older.remove(gen.zones)
        if not self.stopping:
            self.close_unused_sockets()

    def abandon_pending(self):
        gen, self.pending = self.pending, None
        if self.pending_logs is not None and self.pending_logs is not self.logs:
            self.pending_logs.close()
        self.pending_logs = None
        # Its workers may already have accepted connections: they finish them.
        self.retire(gen)

    def promote_pending(self):
        """Every new worker is ready: the new generation serves, the old one drains."""
        old, self.current, self.pending = self.current, self.pending, None
        self.current.zones.carry_from(old.zones)
        # Carried: the master's copy needs no link back (its workers keep theirs). Left
        # in place, each generation would keep every earlier one's regions mapped.
        self.current.zones.previous = None
        old_logs, old_pid = self.logs, self.config.pid
        self.config = self.current.config
        self.logs, self.pending_logs = self.pending_logs, None
        self.log = self.logs.get(*self.config.error_log)
        if self.config.pid != old_pid:
            # nginx moves the pid file too.
            self.remove_pid(old_pid)
            try:
                self.write_pid(self.config.pid)
            except MasterError as exc:
                self.log.log("alert", str(exc))
        if old_logs is not self.logs:
            old_logs.close()
        self.log.log("notice", f"reconfigured: generation {self.current.number} with "
                               f"{len(self.current.slots)} worker processes is serving; "
                               f"the previous one is finishing its requests")
        self.retire(old)

    def reload(self):
        """HUP: apply the configuration file again, or keep the running one if it is not usable."""
        from fastgw.config.errors import ConfigError, ConfigErrors

        self.log.log("notice", "signal 1 (SIGHUP) received, reconfiguring")
        if self.reload_config is None:
            self.log.log("warn", "reload is not available in this process; "
                                 "the running configuration stays in force")
            return
        try:
            config = self.reload_config()
        except (ConfigErrors, ConfigError, OSError) as exc:
            errors = (exc.errors if isinstance(exc, ConfigErrors)
                      else [exc.strerror if isinstance(exc, OSError) and exc.strerror else exc])
            for error in errors:
                self.log.log("emerg", str(error))
            self.log.log("alert", "reload failed: the running configuration stays in force")
            return
        try:
            self.bind(config)
        except MasterError as exc:
            self.log.log("emerg", str(exc))
            self.log.log("alert", "reload failed: the running configuration stays in force")
            return
        if self.pending is not None:
            # A reload during a reload: the newer file wins.
            self.abandon_pending()
        logs = Logs()
        try:
            logs.get(*config.error_log)
        except OSError as exc:
            self.log.log("emerg", f"{exc}")
            self.close_unused_sockets()
            return
        self.pending_logs = logs
        self.pending = self.new_generation(config)
        self.pending_deadline = time.monotonic() + READY_TIMEOUT
        for slot in self.pending.slots:
            self.spawn(slot)

    # -- main loop ------------------------------------------------------------------------
    def loop(self):
        while True:
            channels = {s.chan.fileno(): s for s in self.all_slots() if s.chan is not None}
            timeout = 1.0
            now = time.monotonic()
            for slot in self.slots:
                if slot.respawn_at is not None:
                    timeout = max(0.0, min(timeout, slot.respawn_at - now))
            # poll, not select: select() fails past descriptor 1023.
            poller = select.poll()
            for fd in (self.wake_r, *channels):
                poller.register(fd, select.POLLIN)
            try:
                readable = [fd for fd, _ in poller.poll(timeout * 1000)]
            except InterruptedError:
                readable = []
            for fd in readable:
                if fd == self.wake_r:
                    try:
                        while os.read(self.wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                elif fd in channels and channels[fd].chan is not None:
                    self.read_channel(channels[fd])
            # Signals that arrived together are handled once each, in order of
            # arrival (nginx merges them the same way): ten HUPs are one reload.
            pending, self.sig_queue = self.sig_queue, []
            for sig in dict.fromkeys(pending):
                handler = getattr(self, "handle_" + signal.Signals(sig).name[3:].lower(), None)
                if handler is not None:
                    handler()
            now = time.monotonic()
            self.check_heartbeats(now)
            if self.pending is not None and not self.stopping:
                if all(s.ready for s in self.pending.slots):
                    self.promote_pending()
                elif now >= self.pending_deadline:
                    self.log.log("alert", f"the new worker processes were not ready after "
                                          f"{READY_TIMEOUT:g}s; reload failed, the running "
                                          f"configuration stays in force")
                    self.abandon_pending()
            if not self.stopping:
                for slot in self.slots:
                    if slot.pid is None and slot.respawn_at is not None and now >= slot.respawn_at:
                        self.spawn(slot)
            if self.stopping:
                alive = [s.pid for s in self.all_slots() if s.pid is not None]
                if not alive:
                    self.log.log("notice", "exit")
                    return
                if now >= self.stop_deadline:
                    for pid in alive:
                        self.log.log("alert", f"worker process {pid} did not exit in time, killing it")
                        _kill(pid, signal.SIGKILL)
                    self.stop_deadline = now + 5.0

    # -- signal handlers -------------------------------------------------------------------
    def handle_chld(self):
        self.reap()

    def handle_hup(self):
        if not self.stopping:
            self.reload()

    def handle_quit(self):
        if self.stopping:
            return
        self.log.log("notice", "gracefully shutting down")
        self.stopping = "graceful"
        # Workers bound themselves by worker_shutdown_timeout; the master allows a
        # little more before it resorts to SIGKILL.
        timeout = max(g.config.worker_shutdown_timeout for g in self.generations_alive())
        self.stop_deadline = time.monotonic() + timeout + 2.0
        self._command_workers("quit")
        # As nginx: stop listening, so that new clients are refused at once
        # instead of waiting in an accept queue nobody will serve (the workers
        # close their copies too).
        self.close_sockets()

    def handle_term(self):
        if self.stopping == "fast":
            return
        self.log.log("notice", "exiting")
        self.stopping = "fast"
        self.stop_deadline = time.monotonic() + TERM_GRACE
        self._command_workers("stop")

    handle_int = handle_term

    def handle_usr1(self):
        self.log.log("notice", "reopening logs")
        self.logs.reopen()
        if self.pending_logs is not None:
            self.pending_logs.reopen()
        self._command_workers("reopen")

    def handle_winch(self):
        pass

    def _command_workers(self, command):
        for slot in self.all_slots():
            self.send(slot, command)


def _probe(listen):
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(listen.address)
    except OSError as exc:
        raise MasterError(f'bind() to {listen.host}:{listen.port} failed '
                          f'({exc.errno}: {exc.strerror})') from None
    finally:
        probe.close()


def _reuseport_socket(listen):
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET6:
        # nginx's ipv6only=on: [::]:80 and 0.0.0.0:80 are separate sockets.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(listen.address)
        sock.listen(listen.backlog)
    except OSError as exc:
        sock.close()
        raise MasterError(f'bind() to {listen.host}:{listen.port} failed '
                          f'({exc.errno}: {exc.strerror})') from None
    sock.setblocking(False)
    os.set_inheritable(sock.fileno(), False)
    return sock


def _kill(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(status):
    """nginx's wording: ``exited with code N`` or ``exited on signal N``."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        core = " (core dumped)" if os.WCOREDUMP(status) else ""
        return f"exited on signal {sig}{core}"
    return f"exited with code {os.WEXITSTATUS(status)}"


def send_signal(pid_path, name):
    """``fastgw -s NAME``: signal the master whose pid is in ``pid_path``.

    Raises MasterError with nginx's wording when the pid file is missing,
    invalid or names no running process.
    """
    sig = {"stop": signal.SIGTERM, "quit": signal.SIGQUIT, "reload": signal.SIGHUP,
           "reopen": signal.SIGUSR1}[name]
    try:
        with open(pid_path) as fh:
            text = fh.read().strip()
    except OSError as exc:
        raise MasterError(f'open() "{pid_path}" failed ({exc.errno}: {exc.strerror})') from None
    if not text.isdigit():
        raise MasterError(f'invalid PID number "{text}" in "{pid_path}"')
    try:
        os.kill(int(text), sig)
    except ProcessLookupError:
        raise MasterError(f'kill({text}, {int(sig)}) failed ({errno.ESRCH}: No such process)') from None
