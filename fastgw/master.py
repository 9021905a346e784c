"""The master process: sockets, workers, signals. It never serves a request.

Shaped after gunicorn's arbiter and nginx's ngx_master_process_cycle:

* The master binds one SO_REUSEPORT listening socket per ``listen`` address
  and worker slot, and keeps them all. A worker inherits its slot's sockets
  across fork; a replacement for the slot inherits the same ones, so the
  kernel's accept queue is never thrown away (design.md §1).
* Signal handlers only record the signal and wake the main loop through a
  pipe; the loop dispatches to ``handle_<signal>`` in order.
* A worker that dies unexpectedly is logged with its exit status or signal and
  replaced at once on the same sockets; one that keeps dying right after start
  is respawned with an exponential back-off (0.1 s doubling to 10 s), and the
  error log says so.

Signals: QUIT graceful stop, TERM/INT fast stop, USR1 reopen logs, CHLD reap.
HUP (reload) comes with the lifecycle issue; until then it is logged and
ignored, and the running configuration stays in force.
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


class MasterError(Exception):
    """Start-up failed (pid file, bind); the message is nginx-worded."""


class Slot:
    """A worker slot: its sockets, its current worker, and its crash history."""

    def __init__(self, index, sockets):
        self.index = index
        self.sockets = sockets  # [(Listen, socket)]
        self.pid = None
        self.started = 0.0
        self.ready = False
        self.failures = 0
        self.respawn_at = None
        self.status_r = None


class Master:
    """Supervise ``config.worker_processes`` workers until a stop signal.

    ``argv`` is shown in the process title (``fastgw: master process ...``).
    """

    SIGNALS = (signal.SIGHUP, signal.SIGQUIT, signal.SIGINT, signal.SIGTERM,
               signal.SIGUSR1, signal.SIGCHLD, signal.SIGWINCH)

    def __init__(self, config, argv=None):
        self.config = config
        self.argv = argv or sys.argv
        self.logs = Logs()
        self.log = self.logs.get(*config.error_log)
        self.slots = []
        self.sockets = {}  # (host, port) -> [socket per slot]
        self.sig_queue = []
        self.wake_r = self.wake_w = None
        self.zones = self.stats = None
        self.stopping = None  # None, "graceful" or "fast"
        self.stop_deadline = None
        self.pid_written = False

    # -- start ------------------------------------------------------------------------------
    def run(self):
        """Start, supervise, stop; returns the exit code."""
        setproctitle("fastgw: master process " + " ".join(self.argv))
        self.write_pid()
        try:
            # Shared memory first: the workers inherit the mapping across fork.
            from fastgw.shm import Zones

            self.zones = Zones(self.config)
            self.stats = self.zones.stats(-1)
            self.bind()
            self.install_signals()
            for slot in self.slots:
                self.spawn(slot)
            self.log.log("notice", f"fastgw started with {len(self.slots)} worker processes")
            self.loop()
            return 0
        finally:
            self.close_sockets()
            self.remove_pid()
            self.logs.close()

    def write_pid(self):
        path = self.config.pid
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

    def remove_pid(self):
        if not self.pid_written:
            return
        try:
            with open(self.config.pid) as fh:
                if int(fh.read().strip() or 0) == os.getpid():
                    os.unlink(self.config.pid)
        except (OSError, ValueError):
            pass

    def bind(self):
        """Bind every listen address once per slot (SO_REUSEPORT), after a probe.

        The probe binds without SO_REUSEPORT first: it fails if anything else
        holds the address, even another fastgw with SO_REUSEPORT, which would
        otherwise silently share the port with us.
        """
        n = self.config.worker_processes
        listens = self.config.listens()
        for listen in listens:
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
            socks = []
            for _ in range(n):
                sock = socket.socket(family, socket.SOCK_STREAM)
                if family == socket.AF_INET6:
                    # nginx's ipv6only=on: [::]:80 and 0.0.0.0:80 are separate sockets.
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                try:
                    sock.bind(listen.address)
                except OSError as exc:
                    sock.close()
                    raise MasterError(f'bind() to {listen.host}:{listen.port} failed '
                                      f'({exc.errno}: {exc.strerror})') from None
                sock.listen(listen.backlog)
                sock.setblocking(False)
                os.set_inheritable(sock.fileno(), False)
                socks.append(sock)
            self.sockets[listen.address] = socks
        for i in range(n):
            self.slots.append(Slot(i, [(listen, self.sockets[listen.address][i]) for listen in listens]))

    def close_sockets(self):
        for socks in self.sockets.values():
            for sock in socks:
                sock.close()
        self.sockets = {}

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
        # What a previous worker of this slot held is gone with it.
        self.stats.clear_gauges(slot.index)
        r, w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            os.close(r)
            # The child leaves the master's signal handling behind at once.
            for sig in self.SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            for other in self.slots:
                if other.status_r is not None:
                    try:
                        os.close(other.status_r)
                    except OSError:
                        pass
                if other is not slot:
                    for _, sock in other.sockets:
                        sock.close()
            if self.wake_r is not None:
                os.close(self.wake_r)
                os.close(self.wake_w)
            from fastgw.worker import run_worker  # the compiled hot path, children only

            run_worker(self.config, slot.index, slot.sockets, w, os.getppid(), self.zones)
        os.close(w)
        os.set_blocking(r, False)
        if slot.status_r is not None:
            os.close(slot.status_r)
        slot.status_r = r
        slot.pid = pid
        slot.started = time.monotonic()
        slot.ready = False
        slot.respawn_at = None
        self.log.log("notice", f"start worker process {pid}")

    def reap(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is None:
                continue
            slot.pid = None
            # Zone slots the dead worker held are given back to the others.
            self.stats.release_worker(slot.index, self.zones.zoned)
            self.stats.clear_gauges(slot.index)
            how = _describe(status)
            if self.stopping:
                self.log.log("notice", f"worker process {pid} {how}")
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

    def read_status(self, fd):
        slot = next((s for s in self.slots if s.status_r == fd), None)
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            if slot is not None:
                os.close(fd)
                slot.status_r = None
            return
        unpacker = msgpack.Unpacker()
        unpacker.feed(data)
        for message in unpacker:
            if slot is not None and isinstance(message, dict) and message.get("event") == "ready":
                slot.ready = True
                self.log.log("notice", f"worker process {slot.pid} is ready")

    # -- main loop ------------------------------------------------------------------------
    def loop(self):
        while True:
            fds = [self.wake_r] + [s.status_r for s in self.slots if s.status_r is not None]
            timeout = 1.0
            now = time.monotonic()
            for slot in self.slots:
                if slot.respawn_at is not None:
                    timeout = max(0.0, min(timeout, slot.respawn_at - now))
            try:
                readable, _, _ = select.select(fds, [], [], timeout)
            except InterruptedError:
                readable = []
            for fd in readable:
                if fd == self.wake_r:
                    try:
                        while os.read(self.wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                else:
                    self.read_status(fd)
            while self.sig_queue:
                sig = self.sig_queue.pop(0)
                handler = getattr(self, "handle_" + signal.Signals(sig).name[3:].lower(), None)
                if handler is not None:
                    handler()
            now = time.monotonic()
            if not self.stopping:
                for slot in self.slots:
                    if slot.pid is None and slot.respawn_at is not None and now >= slot.respawn_at:
                        self.spawn(slot)
            if self.stopping:
                alive = [s.pid for s in self.slots if s.pid is not None]
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

    def handle_quit(self):
        if self.stopping:
            return
        self.log.log("notice", "gracefully shutting down")
        self.stopping = "graceful"
        # Workers bound themselves by worker_shutdown_timeout; the master allows a
        # little more before it resorts to SIGKILL.
        self.stop_deadline = time.monotonic() + self.config.worker_shutdown_timeout + 2.0
        self._signal_workers(signal.SIGQUIT)
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
        self._signal_workers(signal.SIGTERM)

    handle_int = handle_term

    def handle_usr1(self):
        self.log.log("notice", "reopening logs")
        self.logs.reopen()
        self._signal_workers(signal.SIGUSR1)

    def handle_hup(self):
        self.log.log("warn", "reload (SIGHUP) is not supported yet by this version of fastgw; "
                             "the running configuration stays in force")

    def handle_winch(self):
        pass

    def _signal_workers(self, sig):
        for slot in self.slots:
            if slot.pid is not None:
                _kill(slot.pid, sig)


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
