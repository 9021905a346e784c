"""Case PUB-25: reload by SIGHUP under load, through a real fastgw and the recording probe.

Four workers, three HUPs within a second, keep-alive and new connections, and
slow responses in flight through all of them.
"""

import os
import select
import signal
import socket
import threading
import time

import pytest

from fastgw.testing.harness import wait_until
from fastgw.testing.probe import Client, Drip, Reply

SLOW_BODY = b"s" * (1024 * 1024)
# /slow takes 3 s: the head at once, then the 1 MiB body in 12 pieces 0.25 s apart (within
# the baseline's 2 s proxy_read_timeout, and in flight through the reloads).
SLOW_REPLY = Reply(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(SLOW_BODY),
                   Drip(SLOW_BODY, 0.25, len(SLOW_BODY) // 12 + 1))
GET_KA = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
GET_CLOSE = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
GET_SLOW = b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n"
DURATION = 6.0        # seconds of load
RATE = 50             # requests per second, half keep-alive, half new connections
PERSISTENT = 10       # keep-alive connections
HUPS = (0.5, 1.0, 1.5)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _closed_while_idle(c):
    """True when the server has closed (or reset) the idle connection ``c``."""
    readable, _, _ = select.select([c.sock], [], [], 0)
    if not readable:
        return False
    try:
        return c.sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class Load:
    """The PUB-25 client side; every outcome goes into ``records`` or ``failures``."""

    def __init__(self, port, t0):
        self.port, self.t0 = port, t0
        self.lock = threading.Lock()
        self.records = []       # (kind, sent_at, conn_no, status, x_gen, says_close)
        self.failures = []
        self.conn_gens = {}     # TCP connection number -> set of X-Gen values it served
        self.slow = []
        self.conn_counter = 0

    def _conn_no(self):
        with self.lock:
            self.conn_counter += 1
            return self.conn_counter

    def _record(self, kind, sent, conn_no, resp):
        gen = resp.first("X-Gen")
        with self.lock:
            self.records.append((kind, sent - self.t0, conn_no, resp.status, gen,
                                 "close" in resp.tokens("connection")))
            self.conn_gens.setdefault(conn_no, set()).add(gen)

    def _fail(self, what):
        with self.lock:
            self.failures.append(f"t={time.monotonic() - self.t0:.2f}s {what}")

    def persistent(self, slot):
        period = PERSISTENT / (RATE / 2)
        c, conn_no = None, None
        k = 0
        while True:
            at = self.t0 + slot * period / PERSISTENT + k * period
            if at > self.t0 + DURATION:
                break
            k += 1
            time.sleep(max(0.0, at - time.monotonic()))
            try:
                if c is not None and _closed_while_idle(c):
                    c.close()          # closed while idle: reconnect transparently
                    c = None
                if c is None:
                    c, conn_no = Client(self.port), self._conn_no()
                sent = c.send(GET_KA)
                resp = c.read_response(timeout=5.0)
            except Exception as exc:
                self._fail(f"keep-alive slot {slot} conn {conn_no}: {type(exc).__name__}: {exc}")
                if c is not None:
                    c.close()
                c = None
                continue
            self._record("keepalive", sent, conn_no, resp)
            if resp.status != 200 or resp.body != b"ok":
                self._fail(f"keep-alive slot {slot}: {resp!r}")
            if "close" in resp.tokens("connection"):
                closed, extra = c.wait_closed(1.0)
                if not closed or extra:
                    self._fail(f"conn {conn_no} said close but stayed open or sent {extra[:80]!r}")
                c.close()
                c = None
        if c is not None:
            c.close()

    def new_connections(self):
        period = 1.0 / (RATE / 2)
        k = 0
        while True:
            at = self.t0 + k * period
            if at > self.t0 + DURATION:
                break
            k += 1
            time.sleep(max(0.0, at - time.monotonic()))
            conn_no = self._conn_no()
            try:
                with Client(self.port) as c:
                    sent = c.send(GET_CLOSE)
                    resp = c.read_response(timeout=5.0)
            except Exception as exc:
                self._fail(f"new connection {conn_no}: {type(exc).__name__}: {exc}")
                continue
            self._record("new", sent, conn_no, resp)
            if resp.status != 200 or resp.body != b"ok":
                self._fail(f"new connection {conn_no}: {resp!r}")

    def slow_request(self):
        try:
            with Client(self.port) as c:
                c.send(GET_SLOW)
                resp = c.read_response(timeout=15.0)
        except Exception as exc:
            self._fail(f"/slow: {type(exc).__name__}: {exc}")
            return
        with self.lock:
            self.slow.append(resp)


def test_pub25_reload_under_load_drops_nothing(make_gw, probe):
    """PUB-25: SIGHUP reload under load - no dropped or truncated request.

    Sources: nginx "Controlling nginx" (HUP); nginx mailing list Nov 2013 (Maxim Dounin);
    nginx-tests http_keepalive_shutdown.t; gunicorn#3394, #2296, #2529, #2313, #3274, #1868.
    4 workers, worker_shutdown_timeout 30s; the probe serves /slow in 3 s with a 1 MiB body
    (head at once, body over 3 s).
    50 req/s of `GET /` for 6 s, half over 10 keep-alive connections, half on new
    connections; 5 `GET /slow` at t=0; SIGHUP at 0.5, 1.0, 1.5 s, after `add_header X-Gen 1`
    became `X-Gen 2` in the config file. Expected: 0 failed requests (no refusal, reset,
    empty reply or truncated body); the 5 /slow responses complete (1 MiB each); a keep-alive
    connection never serves both generations, a response saying `Connection: close` is
    followed by the close, and clients reconnect; the master PID does not change; every old
    worker exits after its last in-flight response, within the graceful timeout; requests
    accepted after the reload show `X-Gen: 2`.
    """
    probe.script(replies={"/slow": SLOW_REPLY})
    gw = make_gw(workers=4, main="worker_shutdown_timeout 30s;", location="add_header X-Gen 1;")
    master = gw.pid
    old_workers = gw.worker_pids()
    assert len(old_workers) == 4
    t0 = time.monotonic() + 0.1
    load = Load(gw.port, t0)
    threads = [threading.Thread(target=load.persistent, args=(i,), daemon=True) for i in range(PERSISTENT)]
    threads.append(threading.Thread(target=load.new_connections, daemon=True))
    threads += [threading.Thread(target=load.slow_request, daemon=True) for _ in range(5)]
    for t in threads:
        t.start()
    for i, at in enumerate(HUPS):
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        if i == 0:
            with open(gw.conf_path) as fh:
                conf = fh.read()
            with open(gw.conf_path, "w") as fh:
                fh.write(conf.replace("add_header X-Gen 1;", "add_header X-Gen 2;"))
        gw.kill(signal.SIGHUP)
    for t in threads:
        t.join(DURATION + 20)
    assert load.failures == [], f"{len(load.failures)} failed requests: {load.failures[:20]}"
    assert len(load.records) >= 0.9 * RATE * DURATION, len(load.records)
    assert len(load.slow) == 5
    for resp in load.slow:
        assert resp.status == 200 and resp.complete and resp.body == SLOW_BODY, resp
    mixed = {n: g for n, g in load.conn_gens.items() if len(g) > 1}
    assert not mixed, f"connections that served both generations: {mixed}"
    late = [r for r in load.records if r[1] >= HUPS[-1] + 1.0 and r[4] != "2"]
    assert not late, f"requests accepted after the reload without X-Gen: 2: {late[:10]}"
    assert gw.proc.poll() is None and gw.pid == master
    with open(gw.path("logs", "fastgw.pid")) as fh:
        assert int(fh.read().strip()) == master
    wait_until(lambda: not any(_alive(pid) for pid in old_workers), timeout=5.0,
               message="old workers to exit")
    assert len(gw.worker_pids()) == 4
    assert not set(gw.worker_pids()) & set(old_workers)
