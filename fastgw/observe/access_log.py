"""Buffered access logs in nginx's ``combined`` format.

``combined`` is::

    $remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
    "$http_referer" "$http_user_agent"

Lines are gathered in memory and written when ``buffer`` bytes are pending,
every ``flush`` seconds (the worker's timer calls :meth:`AccessLog.flush_if_due`)
and at exit: fastgw's default is ``buffer=64k flush=1s`` (design.md §5);
``buffer=0`` writes each line at once, as nginx does without ``buffer=``.
Other formats (``log_format``) are compiled templates rendered by the proxy
with :func:`log_value` applied to each variable's value.
"""

import os
import time

from fastgw._core.http import log_escape

from .files import close_log, open_log

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class _PerSecond:
    """A time text formatted at most once per second by ``fmt(struct_time, offset)``, where
    ``offset`` is ``(sign, hours, minutes)`` from UTC."""

    def __init__(self, fmt):
        self._fmt = fmt
        self._second = -1
        self._text = b""

    def get(self, now):
        second = int(now)
        if second != self._second:
            t = time.localtime(second)
            off = abs(t.tm_gmtoff) // 60
            self._text = self._fmt(t, ("+" if t.tm_gmtoff >= 0 else "-", off // 60, off % 60)
                                   ).encode()
            self._second = second
        return self._text


# $time_local: 29/Nov/2026:08:00:00 +0000
TIME_LOCAL = _PerSecond(lambda t, o: f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
                                     f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} "
                                     f"{o[0]}{o[1]:02d}{o[2]:02d}")
# $time_iso8601: 2026-11-29T08:00:00+00:00
TIME_ISO8601 = _PerSecond(lambda t, o: f"{time.strftime('%Y-%m-%dT%H:%M:%S', t)}"
                                       f"{o[0]}{o[1]:02d}:{o[2]:02d}")


_JSON_SHORT = {0x22: b'\\"', 0x5C: b"\\\\", 0x0A: b"\\n", 0x0D: b"\\r", 0x09: b"\\t",
               0x08: b"\\b", 0x0C: b"\\f"}


def escape_json(value):
    """nginx's ``escape=json``: ``"`` and ``\\`` escaped, control bytes as ``\\uXXXX`` (or
    ``\\n`` and kin); other bytes, UTF-8 included, as they are."""
    out = bytearray()
    for byte in value:
        short = _JSON_SHORT.get(byte)
        if short is not None:
            out += short
        elif byte < 0x20 or byte == 0x7F:
            out += b"\\u%04x" % byte
        else:
            out.append(byte)
    return bytes(out)


def log_value(value, mode):
    """A variable's value as a log line shows it: ``mode`` 0 default, 1 json, 2 none."""
    if not value:
        return b"" if mode == 1 else b"-"
    if mode == 0:
        return _safe(value)
    if mode == 1:
        for byte in value:
            if byte < 0x20 or byte == 0x22 or byte == 0x5C or byte == 0x7F:
                return escape_json(value)
        return value
    return value


def _safe(value):
    if value is None:
        return b"-"
    return log_escape(value)


def combined(remote_addr, request_line, status, body_bytes_sent, referer, user_agent, now):
    """One ``combined`` line (bytes, with newline). Empty values print as ``-`` (nginx)."""
    return b'%s - - [%s] "%s" %d %d "%s" "%s"\n' % (
        remote_addr,
        TIME_LOCAL.get(now),
        _safe(request_line) if request_line else b"-",
        status,
        body_bytes_sent,
        _safe(referer) if referer else b"-",
        _safe(user_agent) if user_agent else b"-",
    )


class AccessLog:
    """One access log file with its buffer (bytes) and flush interval (seconds)."""

    def __init__(self, path, buffer=64 * 1024, flush=1.0):
        self.path = path
        self.buffer_size = buffer
        self.flush_interval = flush
        self._pending = []
        self._pending_bytes = 0
        self._oldest = None
        self.fd = None
        self.open()

    def open(self):
        self.fd = open_log(self.path)

    def reopen(self):
        """Flush, then open the path again (USR1 after logrotate)."""
        self.flush()
        old = self.fd
        self.open()
        if old != self.fd:
            close_log(old)

    def write(self, line, now):
        """Queue one line (bytes); written at once when the buffer is full or disabled."""
        self._pending.append(line)
        self._pending_bytes += len(line)
        if self._oldest is None:
            self._oldest = now
        if self._pending_bytes >= self.buffer_size:
            self.flush()

    def flush_if_due(self, now):
        """Write pending lines if the oldest has waited ``flush`` seconds."""
        if self._oldest is not None and now - self._oldest >= self.flush_interval:
            self.flush()

    def flush(self):
        """Write every pending line now."""
        if not self._pending or self.fd is None:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        self._oldest = None
        try:
            while data:
                n = os.write(self.fd, data)
                data = data[n:]
        except OSError:
            pass

    def close(self):
        self.flush()
        close_log(self.fd)
        self.fd = None
