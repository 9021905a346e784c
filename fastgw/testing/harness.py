"""Helpers the functional tests (and the benchmarks) share: run fastgw for real.

:class:`Gateway` writes a configuration into a fresh prefix, starts
``python -m fastgw -p PREFIX`` as a subprocess, waits until every worker has
reported ready (the master logs ``worker process PID is ready`` at
``notice``), and stops it. :func:`raw_request` speaks raw bytes over a socket,
which is what tests of framing need. Everything is bounded in time and talks
to 127.0.0.1 only.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time


def free_port():
    """A TCP port on 127.0.0.1 that is free now (int)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout=10.0, interval=0.02, message="condition"):
    """Poll ``predicate()`` until it is truthy; return its value or raise TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def children(pid):
    """Pids of the direct children of ``pid`` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry))
    return sorted(out)


class Gateway:
    """A fastgw instance under test.

    ``conf`` is the configuration text; ``{port}`` in it is replaced by
    :attr:`port` (a free port unless given) and ``{prefix}`` by the prefix.
    ``workers`` is how many workers to wait for. The master's stdout and
    stderr go to ``PREFIX/fastgw.out``.
    """

    def __init__(self, conf, prefix, port=None, workers=None, extra_args=()):
        self.prefix = str(prefix)
        self.port = port or free_port()
        self.conf = conf.replace("{port}", str(self.port)).replace("{prefix}", self.prefix)
        m = re.search(r"^\s*worker_processes\s+(\d+)\s*;", self.conf, re.M)
        self.workers = workers or (int(m.group(1)) if m else 1)
        self.extra_args = list(extra_args)
        self.proc = None
        os.makedirs(os.path.join(self.prefix, "conf"), exist_ok=True)
        self.conf_path = os.path.join(self.prefix, "conf", "fastgw.conf")
        with open(self.conf_path, "w") as fh:
            fh.write(self.conf)

    @property
    def pid(self):
        return self.proc.pid

    def start(self, wait=True, timeout=20.0):
        """Start the master; with ``wait``, return once every worker is ready."""
        self._out = open(os.path.join(self.prefix, "fastgw.out"), "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastgw", "-p", self.prefix] + self.extra_args,
            stdin=subprocess.DEVNULL, stdout=self._out, stderr=subprocess.STDOUT,
            cwd=self.prefix,
        )
        if wait:
            self.wait_ready(self.workers, timeout)
        return self

    def wait_ready(self, count, timeout=20.0, since=0):
        """Wait until ``count`` workers have logged ready (after ``since`` earlier ready lines)."""
        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"fastgw exited with {self.proc.returncode}: {self.output()}")
            return self.error_log().count(" is ready") >= since + count
        wait_until(ready, timeout, message=f"{count} fastgw workers to be ready")

    def worker_pids(self):
        return children(self.proc.pid)

    def kill(self, sig):
        os.kill(self.proc.pid, sig)

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        """Stop the master with ``sig`` and wait (then SIGKILL); returns its exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        pids = self.worker_pids()
        try:
            self.proc.send_signal(sig)
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._out.close()
        return self.proc.returncode

    def path(self, *parts):
        return os.path.join(self.prefix, *parts)

    def _read(self, *parts):
        try:
            with open(self.path(*parts), encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except FileNotFoundError:
            return ""

    def error_log(self):
        return self._read("logs", "error.log")

    def access_log(self):
        return self._read("logs", "access.log")

    def output(self):
        return self._read("fastgw.out")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def raw_request(port, data, timeout=5.0, read_until_close=True, host="127.0.0.1"):
    """Send ``data`` (bytes) on a new connection and return all bytes read.

    Reads until the server closes or ``timeout`` seconds pass without data.
    """
    with socket.create_connection((host, port), timeout=timeout) as s:
        if data:
            s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
            if not read_until_close and b"\r\n\r\n" in out:
                break
        return out


def parse_responses(data):
    """Split raw bytes into ``[(status, headers_dict_lowercase, body)]``; handles CL and chunked."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError(f"incomplete response head: {data[:200]!r}")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.setdefault(name.strip().lower().decode(), value.strip().decode("latin-1"))
        if "content-length" in headers:
            n = int(headers["content-length"])
            body, data = rest[:n], rest[n:]
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line, 16)
                if size == 0:
                    _, _, rest = rest.partition(b"\r\n")
                    break
                body += rest[:size]
                rest = rest[size + 2:]
            data = rest
        elif status in (204, 304) or 100 <= status < 200:
            body, data = b"", rest
        else:
            body, data = rest, b""
        out.append((status, headers, body))
    return out
