"""nginx-format error logs.

A line reads as nginx's (``ngx_log_error_core``)::

    2026/11/29 08:00:00 [error] 4711#0: *12 upstream timed out ..., client: 127.0.0.1, server: , request: "GET / HTTP/1.1", upstream: "http://127.0.0.1:9001/", host: "a"

The file is opened with O_APPEND and each line is one ``os.write``, so the
master and every worker can share it without interleaving, as nginx does.
``reopen()`` serves USR1 (logrotate).
"""

import os
import sys
import time

from .files import close_log, open_log

LEVELS = ("emerg", "alert", "crit", "error", "warn", "notice", "info", "debug")
RANK = {name: i for i, name in enumerate(LEVELS)}


class ErrorLog:
    """An error log file at a minimum level.

    ``path`` is a file path or ``stderr``; ``level`` one of LEVELS (messages
    less severe are dropped before any formatting). Writing never raises: a
    log that cannot be written must not take a request down.
    """

    def __init__(self, path, level="error"):
        self.path = path
        self.level = level
        self.rank = RANK[level]
        self.fd = None
        self.open()

    def open(self):
        """Open (or create) the file for appending; ``stderr`` uses fd 2."""
        self.fd = open_log(self.path)

    def reopen(self):
        """Close and open the file again (after logrotate moved it)."""
        old = self.fd
        self.open()
        if old != self.fd:
            close_log(old)

    def close(self):
        close_log(self.fd)
        self.fd = None

    def enabled(self, level):
        """True when a message at ``level`` would be written (check before building it)."""
        return RANK[level] <= self.rank

    def log(self, level, message, conn=None, **context):
        """Write ``message`` at ``level``.

        ``conn`` is the connection number (``*N``); ``context`` keys
        (client, server, request, upstream, host) are appended in nginx's order
        and form when present.
        """
        if RANK[level] > self.rank or self.fd is None:
            return
        line = format_line(level, message, conn, context)
        try:
            os.write(self.fd, line)
        except OSError:
            pass


_CONTEXT_ORDER = ("client", "server", "request", "upstream", "host")


def format_line(level, message, conn=None, context=None):
    """One log line as bytes, newline included (see the module docstring)."""
    stamp = time.strftime("%Y/%m/%d %H:%M:%S")
    text = f"{stamp} [{level}] {os.getpid()}#0: "
    if conn is not None:
        text += f"*{conn} "
    text += message
    if context:
        for key in _CONTEXT_ORDER:
            if key in context and context[key] is not None:
                value = context[key]
                if key in ("client", "server"):
                    text += f", {key}: {value}"
                else:
                    text += f', {key}: "{value}"'
    return (text + "\n").encode("utf-8", "backslashreplace")


class Logs:
    """The set of error logs one process writes, shared by path.

    Several levels of the configuration may name the same file; one ErrorLog
    (one fd) serves each distinct path, at the most verbose level asked for
    it, and :meth:`get` returns a view filtered at the asked level.
    """

    def __init__(self):
        self._files = {}

    def get(self, path, level):
        """An ErrorLog writing to ``path`` at ``level``."""
        base = self._files.get(path)
        if base is None:
            base = self._files[path] = ErrorLog(path, level)
        elif RANK[level] > base.rank:
            base.rank, base.level = RANK[level], level
        return _LevelView(base, level)

    def reopen(self):
        for log in self._files.values():
            log.reopen()

    def close(self):
        for log in self._files.values():
            log.close()


class _LevelView:
    """An ErrorLog seen at its own level while sharing the file of another."""

    __slots__ = ("base", "level", "rank")

    def __init__(self, base, level):
        self.base, self.level, self.rank = base, level, RANK[level]

    def enabled(self, level):
        return RANK[level] <= self.rank

    def log(self, level, message, conn=None, **context):
        if RANK[level] > self.rank or self.base.fd is None:
            return
        try:
            os.write(self.base.fd, format_line(level, message, conn, context))
        except OSError:
            pass


class Throttle:
    """At most one log line per ``interval`` seconds for one kind of event.

    Overload produces the same rejection thousands of times a second; the
    error log gets the first, then one line a second saying how many were
    not written (design.md §6: an overload must not flood the disk).
    ``allow(now)`` returns ``(write, suppressed)``: whether to write a line
    now and how many were skipped since the last one.
    """

    __slots__ = ("interval", "next_at", "skipped")

    def __init__(self, interval=1.0):
        self.interval = interval
        self.next_at = 0.0
        self.skipped = 0

    def allow(self, now):
        if now < self.next_at:
            self.skipped += 1
            return False, 0
        skipped, self.skipped = self.skipped, 0
        self.next_at = now + self.interval
        return True, skipped


def emerg_to_stderr(message):
    """Print ``fastgw: [emerg] MESSAGE`` as nginx prints start-up failures."""
    sys.stderr.write(f"fastgw: [emerg] {message}\n")
    sys.stderr.flush()
