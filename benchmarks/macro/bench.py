#!/usr/bin/env python3
"""Macro benchmark: fastgw vs nginx as a reverse proxy, measured with wrk.

In one run, on loopback (127.0.0.1) only, it measures

  direct  wrk -> upstream
  fastgw  wrk -> fastgw -> upstream
  nginx   wrk -> nginx  -> upstream

with the same worker count and an equivalent configuration for both proxies
(upstream keepalive 64, access_log off, worker_connections 4096), and prints,
for every target and concurrency, the median over the rounds of: req/s, p50
and p99 latency, errors (non-2xx/3xx responses + socket errors), proxy CPU
microseconds per request, the TCP connections the upstream accepted during the
run (upstream conns opened: from the upstream nginx's stub_status), and the
ratios fastgw/nginx.  Everything (raw
per-round numbers, medians, machine, command line) is saved as JSON under
benchmarks/results/ (git-ignored), with a timestamped name.

The upstream is, by default, an nginx with 1 worker answering `return 200`
with a body of --body-size bytes; `--upstream backend` uses fastgw's sample
upstream (python -m fastgw.testing.backend) instead.

By default (2+ CPUs) wrk and the upstream are pinned to CPU 0 and the proxy
under test (all its processes) to CPU 1 with taskset; --no-pin disables it,
--load-cpus / --proxy-cpus / --upstream-cpus choose other CPU lists.

Runs are interleaved: for each concurrency, rounds of direct, fastgw, nginx,
direct, fastgw, nginx, ...; each measured run is preceded by a short warm-up.

Usage (as root, from the repository root):

  python benchmarks/macro/bench.py                        # 3 rounds x 10 s, 50 conns
  python benchmarks/macro/bench.py --duration 3 --rounds 1  # quick smoke run
  python benchmarks/macro/bench.py --connections 50,200,1000 --body-size 4096 --plot
  python benchmarks/macro/bench.py --connections 50,200,1000 --body-sizes 100,4096,65536 \\
      --targets fastgw,nginx --plot      # issue 9's matrix: one run per body size
  python benchmarks/macro/bench.py --workers 8 --proxy-cpus 1-8 --load-cpus 9-15
  python benchmarks/macro/bench.py --upstream backend --targets fastgw,nginx

wrk and nginx are installed with apt-get when missing (--no-install to
refuse).  fastgw is skipped with a message when it is not installed or does
not start, so the script still measures direct and nginx.  See
benchmarks/README.md for how to read the output.
"""
from __future__ import annotations

import argparse
import atexit
import datetime as _dt
import http.client
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"
ALL_TARGETS = ("direct", "fastgw", "nginx", "haproxy", "fastgw-limits", "fastgw-queue", "bare")
# haproxy joins the default run when it is installed (it is never installed for you).
DEFAULT_TARGETS = ("direct", "fastgw", "nginx") + (("haproxy",) if shutil.which("haproxy") else ())
PROXIES = ("fastgw", "nginx", "haproxy", "fastgw-limits", "fastgw-queue", "bare")
# bare: bare_proxy.py, uvloop + httptools and nothing else (the issue's "60-line
# proxy"): the floor under any uvloop proxy, measured in the same run.
# fastgw-queue: fastgw with `max_conns` and a `queue` on its peer (overload control), so
# that at high concurrency it keeps a bounded set of upstream connections busy.
QUEUE_MAX_CONNS = 64
QUEUE_LEN = 4096
# fastgw-limits: fastgw with a limit_req and a limit_conn that admit everything, to
# measure what the shared-memory checks cost per request.
LIMITS_HTTP = ("limit_req_zone $binary_remote_addr zone=bench:1m rate=100000000r/s;\n"
               "    limit_conn_zone $binary_remote_addr zone=benchc:1m;")
LIMITS_LOCATION = "limit_req zone=bench burst=1000000 nodelay; limit_conn benchc 65535; "
# where the nginx upstream answers stub_status (its "accepts" counter)
STUB_STATUS_PATH = "/__stub_status"
RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
REPO_ROOT = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")
STOP_GRACE_S = 10.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# helpers: ports, cpu lists, /proc


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def parse_cpu_list(text: str) -> list[int]:
    """'0', '1-8', '0,2,4-6' -> sorted list of ints."""
    cpus: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, sep, hi = part.partition("-")
        if sep:
            cpus.update(range(int(lo), int(hi) + 1))
        else:
            cpus.add(int(lo))
    return sorted(cpus)


def parse_int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}")
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"need positive integers: {text!r}")
    return values


def read_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat from field 3 (state) on; None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'
    return data[data.rindex(")") + 2:].split()


def children_of(pid: int) -> list[int]:
    """Direct children of pid: /proc/PID/task/*/children when the kernel has
    it (CONFIG_PROC_CHILDREN), else a walk over /proc comparing ppid."""
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    have_children_file = False
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                have_children_file = True
                kids.extend(int(x) for x in f.read().split())
        except OSError:
            pass
    if have_children_file:
        return kids
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = read_stat(int(name))
        if st is not None and int(st[1]) == pid:  # field 4: ppid
            kids.append(int(name))
    return kids


def process_tree(root: int) -> list[int]:
    seen, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        todo.extend(children_of(pid))
    return seen


def tree_cpu_seconds(root: int) -> float:
    """utime+stime of root and all its descendants, plus cutime+cstime (CPU
    of children that already exited and were reaped, e.g. a respawned
    worker), in seconds.  Fields 14-17 of /proc/PID/stat."""
    ticks = 0
    for pid in process_tree(root):
        st = read_stat(pid)
        if st is None:
            continue
        # field n is st[n - 3]
        ticks += int(st[11]) + int(st[12]) + int(st[13]) + int(st[14])
    return ticks / CLK_TCK


def read_proc_stat_cpus() -> dict[int, tuple[int, int]]:
    """cpu -> (busy ticks, total ticks) from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            name, *vals = line.split()
            v = [int(x) for x in vals]
            idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
            total = sum(v[:8])  # guest time is already in user
            out[int(name[3:])] = (total - idle, total)
    return out


def busy_percent(before, after, cpus: list[int]) -> float | None:
    if not cpus:
        return None
    busy = total = 0
    for c in cpus:
        if c in before and c in after:
            busy += after[c][0] - before[c][0]
            total += after[c][1] - before[c][1]
    return round(100.0 * busy / total, 1) if total else None


# --------------------------------------------------------------------------
# managed processes


class Managed:
    """A process we started, in its own session/process group, with its
    stdout+stderr in a log file.  stop(): signal (SIGQUIT by default) to the
    master, wait STOP_GRACE_S, then SIGKILL to the whole process group."""

    registry: list["Managed"] = []

    def __init__(self, name: str, argv: list[str], logfile: Path,
                 stop_signal=signal.SIGQUIT, cwd=None, env=None):
        self.name = name
        self.argv = argv
        self.logfile = logfile
        self.stop_signal = stop_signal
        self._log = open(logfile, "wb")
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd, env=env)
        self.pid = self.proc.pid
        Managed.registry.append(self)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 25) -> str:
        try:
            lines = self.logfile.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        t0 = time.monotonic()
        if self.alive():
            try:
                os.kill(self.pid, self.stop_signal)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                log(f"  {self.name}: still running {STOP_GRACE_S:.0f} s after "
                    f"{signal.Signals(self.stop_signal).name}, SIGKILL")
        # the group holds the workers too; kill whatever is left of it
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()
        took = time.monotonic() - t0
        if took > 2:
            log(f"  {self.name}: took {took:.1f} s to stop")
        if self in Managed.registry:
            Managed.registry.remove(self)

    @classmethod
    def stop_all(cls) -> None:
        for m in reversed(list(cls.registry)):
            try:
                m.stop()
            except Exception as exc:  # keep stopping the others
                log(f"  stopping {m.name}: {exc!r}")


def _on_signal(signum, _frame):
    # SIGTERM/SIGHUP are handled like Ctrl-C: the finally blocks stop the
    # servers and what was measured so far is saved
    raise KeyboardInterrupt(signal.Signals(signum).name)


# --------------------------------------------------------------------------
# tools


def ensure_tools(no_install: bool) -> None:
    missing = [t for t in ("wrk", "nginx") if shutil.which(t) is None]
    if not missing:
        return
    if no_install:
        sys.exit(f"missing {', '.join(missing)} (and --no-install given)")
    if os.geteuid() != 0:
        sys.exit(f"missing {', '.join(missing)}: run as root to apt-get them, "
                 f"or install them yourself")
    log(f"installing {' '.join(missing)} with apt-get ...")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q"] + missing
    rc = subprocess.run(cmd, env=env, timeout=600).returncode
    if rc != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, timeout=600)
        subprocess.run(cmd, env=env, timeout=600, check=True)
    # apt may start the packaged nginx service; we never use it
    still = [t for t in ("wrk", "nginx") if shutil.which(t) is None]
    if still:
        sys.exit(f"still missing after apt-get: {', '.join(still)}")


def cmd_output(argv: list[str], timeout: float = 15) -> tuple[int, str]:
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        return p.returncode, p.stdout.decode(errors="replace").strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return -1, repr(exc)


def find_fastgw(explicit: str | None) -> tuple[list[str] | None, str]:
    """Command prefix for fastgw, and its version line or why not."""
    candidates = []
    if explicit:
        candidates.append(shlex.split(explicit))
    else:
        # on PATH, then next to this Python (a venv not activated), then -m
        for exe in (shutil.which("fastgw"),
                    shutil.which("fastgw", path=os.path.dirname(sys.executable))):
            if exe and [exe] not in candidates:
                candidates.append([exe])
        candidates.append([sys.executable, "-m", "fastgw"])
    reasons = []
    for cand in candidates:
        rc, out = cmd_output(cand + ["-v"])
        if rc == 0:
            return cand, out.splitlines()[-1] if out else "?"
        last = out.splitlines()[-1] if out else ""
        reasons.append(f"`{' '.join(cand)} -v` exited {rc}: {last}")
    return None, "; ".join(reasons) or "not found"


def machine_info(fastgw_version: str | None) -> dict:
    info = {
        "nproc": os.cpu_count(),
        "cpus_allowed": sorted(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "uname": " ".join(platform.uname()),
        "python": sys.version.split()[0],
        "nginx_version": cmd_output(["nginx", "-v"])[1],
        "wrk_version": cmd_output(["wrk", "-v"])[1].splitlines()[0],
        "fastgw_version": fastgw_version,
        "hostname": socket.gethostname(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            models = [l.split(":", 1)[1].strip() for l in f
                      if l.startswith("model name")]
        info["cpu_model"] = models[0] if models else None
    except OSError:
        pass
    try:
        info["loadavg_at_start"] = os.getloadavg()
    except OSError:
        pass
    rc, head = cmd_output(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"])
    info["git_commit"] = head if rc == 0 else None
    rc, dirty = cmd_output(["git", "-C", str(REPO_ROOT), "status",
                            "--porcelain", "--untracked-files=no"])
    info["git_dirty"] = (bool(dirty) if rc == 0 and info["git_commit"]
                         else None)
    return info


# --------------------------------------------------------------------------
# configurations

NGINX_COMMON = """\
pid {prefix}/logs/nginx.pid;
lock_file {prefix}/logs/nginx.lock;
error_log {prefix}/logs/error.log error;
worker_processes {workers};
events {{ worker_connections 4096; }}
"""

NGINX_TEMP_PATHS = """\
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
"""


def nginx_body_directives(body_size: int) -> tuple[str, str]:
    """(set directives, return argument) producing exactly body_size bytes.

    A single nginx config token is limited to ~4 KiB (NGX_CONF_BUFFER), so a
    64 KiB literal does not parse; the body is built from a 1 KiB variable
    repeated, which `return` concatenates per request."""
    chunk = 1024
    n, rest = divmod(body_size, chunk)
    sets = ""
    parts = []
    if n:
        sets = f'        set $bench_chunk "{"x" * chunk}";\n'
        parts.append("${bench_chunk}" * n)
    if rest:
        parts.append("x" * rest)
    return sets, '"' + "".join(parts) + '"'


def upstream_nginx_conf(prefix: Path, port: int, body_size: int,
                        workers: int) -> str:
    sets, body = nginx_body_directives(body_size)
    return (NGINX_COMMON.format(prefix=prefix, workers=workers) + f"""\
http {{
    access_log off;
{NGINX_TEMP_PATHS.format(prefix=prefix)}\
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    server {{
        listen {HOST}:{port} backlog=4096;
        default_type text/plain;
        location / {{
{sets}\
            return 200 {body};
        }}
        # read by the benchmark before and after each run: "accepts" counts the
        # TCP connections opened to the upstream (upstream_accepts)
        location = {STUB_STATUS_PATH} {{
            stub_status;
        }}
    }}
}}
""")


def proxy_nginx_conf(prefix: Path, port: int, upstream_port: int,
                     workers: int) -> str:
    return (NGINX_COMMON.format(prefix=prefix, workers=workers) + f"""\
http {{
    access_log off;
{NGINX_TEMP_PATHS.format(prefix=prefix)}\
    upstream app {{ server {HOST}:{upstream_port}; keepalive 64; }}
    server {{
        listen {HOST}:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""")


def proxy_haproxy_conf(port: int, upstream_port: int, workers: int) -> str:
    """HAProxy as the issue's reference table runs it: `nbthread` = workers, upstream
    keep-alive connections reused across clients (`http-reuse always`), no logging."""
    return f"""\
global
    nbthread {workers}
    maxconn 9000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    http-reuse always
frontend bench
    bind {HOST}:{port}
    default_backend app
backend app
    server app {HOST}:{upstream_port}
"""


def fastgw_conf(port: int, upstream_port: int, workers: int, limits: bool = False,
                queue: bool = False) -> str:
    peer = (f"server {HOST}:{upstream_port} max_conns={QUEUE_MAX_CONNS}; "
            f"queue {QUEUE_LEN} timeout=10s;" if queue else f"server {HOST}:{upstream_port};")
    return f"""\
worker_processes {workers};
error_log logs/error.log error;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    {LIMITS_HTTP if limits else ""}
    upstream app {{ {peer} keepalive 64; }}
    server {{
        listen {HOST}:{port};
        location / {{ {LIMITS_LOCATION if limits else ""}proxy_pass http://app; }}
    }}
}}
"""


def make_prefix(root: Path, name: str) -> Path:
    prefix = root / name
    for sub in ("conf", "logs", "tmp"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    return prefix


def taskset(cpus: list[int] | None) -> list[str]:
    if not cpus:
        return []
    return ["taskset", "-c", ",".join(map(str, cpus))]


# --------------------------------------------------------------------------
# readiness


def http_get(port: int, timeout: float = 2.0) -> tuple[int, int]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, len(body)
    finally:
        conn.close()


def wait_ready(proc: Managed, port: int, timeout: float,
               log_marker: str | None = None) -> tuple[int, int]:
    """Wait until proc answers GET / on port (and, if given, log_marker is in
    its log).  Returns (status, body length); raises RuntimeError."""
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with status "
                               f"{proc.proc.returncode}")
        if log_marker is not None:
            try:
                if log_marker not in proc.logfile.read_text(errors="replace"):
                    time.sleep(0.1)
                    continue
            except OSError:
                pass
        try:
            return http_get(port)
        except (OSError, http.client.HTTPException) as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready on port {port} after "
                       f"{timeout:.0f} s ({last})")


def upstream_accepts(kind: str, port: int) -> int | None:
    """TCP connections the upstream has accepted so far, the one that asks
    included: nginx's stub_status "accepts", or the sample backend's
    /__stats "connections_total".  None if it cannot be read."""
    path = STUB_STATUS_PATH if kind == "nginx" else "/__stats"
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}",
                                    timeout=2) as resp:
            text = resp.read().decode("ascii", "replace")
    except OSError:
        return None
    if kind == "nginx":
        # Active connections: 3
        # server accepts handled requests
        #  17 17 120
        m = re.search(r"server accepts handled requests\s+(\d+)", text)
        return int(m.group(1)) if m else None
    try:
        return int(json.loads(text)["connections_total"])
    except (ValueError, KeyError, TypeError):
        return None


# --------------------------------------------------------------------------
# wrk

_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_RE_DIST = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$",
                      re.M)
_RE_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_RE_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.M)
_RE_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_RE_SOCKERR = re.compile(r"Socket errors: connect (\d+), read (\d+), "
                         r"write (\d+), timeout (\d+)")


def parse_wrk(text: str) -> dict:
    """Numbers out of `wrk --latency` output; latencies in milliseconds."""
    out: dict = {}
    m = _RE_RPS.search(text)
    if not m:
        raise ValueError("no 'Requests/sec:' line in wrk output")
    out["rps"] = float(m.group(1))
    m = _RE_TOTAL.search(text)
    if m:
        out["requests"] = int(m.group(1))
        out["elapsed_s"] = float(m.group(2)) * _UNITS_MS[m.group(3)] / 1e3
    for pct, val, unit in _RE_DIST.findall(text):
        out[f"p{pct}_ms"] = float(val) * _UNITS_MS[unit]
    m = _RE_NON2XX.search(text)
    out["non2xx"] = int(m.group(1)) if m else 0
    m = _RE_SOCKERR.search(text)
    sock = [int(x) for x in m.groups()] if m else [0, 0, 0, 0]
    out["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"),
                                    sock))
    out["errors"] = out["non2xx"] + sum(sock)
    # wrk's Requests/sec counts every response, 4xx/5xx included (a proxy
    # shedding load with fast 503s looks fast): ok_rps counts the others
    if out.get("requests") and out.get("elapsed_s"):
        ok = max(0, out["requests"] - out["non2xx"])
        out["ok_rps"] = ok / out["elapsed_s"]
    return out


def run_wrk(args, port: int, conns: int, duration: int,
            load_cpus: list[int] | None) -> tuple[dict, str]:
    threads = max(1, min(args.threads, conns))
    argv = taskset(load_cpus) + [
        "wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency",
        "--timeout", f"{args.wrk_timeout}s", f"http://{HOST}:{port}/"]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL, timeout=duration + 60)
    text = p.stdout.decode(errors="replace")
    if p.returncode != 0:
        raise RuntimeError(f"wrk exited {p.returncode}: {text.strip()[-500:]}")
    return parse_wrk(text), text


# --------------------------------------------------------------------------
# the benchmark


def start_upstream(args, root: Path, load_cpus) -> tuple[Managed, int, dict]:
    port = free_port()
    ucpus = args.upstream_cpus_list if args.upstream_cpus_list is not None \
        else load_cpus
    if args.upstream == "nginx":
        prefix = make_prefix(root, "upstream")
        conf = prefix / "conf" / "nginx.conf"
        conf.write_text(upstream_nginx_conf(prefix, port, args.body_size,
                                            args.upstream_workers))
        argv = taskset(ucpus) + [
            "nginx", "-p", f"{prefix}/", "-e", f"{prefix}/logs/error.log",
            "-c", str(conf), "-g", "daemon off;"]
        proc = Managed("upstream nginx", argv, prefix / "logs" / "stdout.log")
        marker = None
    else:
        argv = taskset(ucpus) + [
            sys.executable, "-m", "fastgw.testing.backend", "--host", HOST,
            "--port", str(port), "--body-size", str(args.body_size),
            "--quiet"]
        logfile = root / "backend.log"
        proc = Managed("upstream backend", argv, logfile,
                       stop_signal=signal.SIGTERM, cwd=str(REPO_ROOT))
        marker = "listening on"
    try:
        status, length = wait_ready(proc, port, args.start_timeout, marker)
    except RuntimeError as exc:
        tail = proc.log_tail()
        proc.stop()
        raise SystemExit(f"upstream failed to start: {exc}\n"
                         f"  command: {shlex.join(argv)}\n{tail}")
    info = {"kind": args.upstream, "port": port, "argv": argv,
            "cpus": ucpus, "check_status": status, "check_body_len": length}
    if status != 200 or length != args.body_size:
        log(f"WARNING: upstream answered {status} with {length} bytes "
            f"(expected 200 with {args.body_size})")
    return proc, port, info


def start_proxy(name: str, args, root: Path, upstream_port: int,
                proxy_cpus, fastgw_cmd) -> tuple[Managed, int, dict]:
    port = free_port()
    prefix = make_prefix(root, name)
    if name == "nginx":
        conf = prefix / "conf" / "nginx.conf"
        conf.write_text(proxy_nginx_conf(prefix, port, upstream_port,
                                         args.workers))
        argv = taskset(proxy_cpus) + [
            "nginx", "-p", f"{prefix}/", "-e", f"{prefix}/logs/error.log",
            "-c", str(conf), "-g", "daemon off;"]
    elif name == "haproxy":
        conf = prefix / "conf" / "haproxy.cfg"
        conf.write_text(proxy_haproxy_conf(port, upstream_port, args.workers))
        argv = taskset(proxy_cpus) + [shutil.which("haproxy") or "haproxy", "-db", "-f", str(conf)]
    elif name == "bare":
        conf = Path(__file__).with_name("bare_proxy.py")
        argv = taskset(proxy_cpus) + [sys.executable, str(conf), str(port), str(upstream_port)]
    else:
        conf = prefix / "conf" / "fastgw.conf"
        conf.write_text(fastgw_conf(port, upstream_port, args.workers,
                                    limits=name == "fastgw-limits",
                                    queue=name == "fastgw-queue"))
        argv = taskset(proxy_cpus) + fastgw_cmd + [
            "-p", str(prefix), "-c", str(conf)]
    proc = Managed(name, argv, prefix / "logs" / "stdout.log")
    try:
        status, length = wait_ready(proc, port, args.start_timeout)
    except RuntimeError as exc:
        tail = proc.log_tail()
        err = ""
        errlog = prefix / "logs" / "error.log"
        if errlog.exists():
            err = "\n".join(errlog.read_text(errors="replace")
                            .splitlines()[-15:])
        proc.stop()
        raise RuntimeError(f"{exc}\n  command: {shlex.join(argv)}\n"
                           f"  output:\n{tail}\n  error.log:\n{err}")
    if status != 200 or length != args.body_size:
        log(f"WARNING: {name} answered {status} with {length} bytes "
            f"(expected 200 with {args.body_size})")
    # let the workers come up before counting processes
    time.sleep(0.3)
    nprocs = len(process_tree(proc.pid))
    info = {"port": port, "argv": argv, "conf": conf.read_text(),
            "cpus": proxy_cpus, "check_status": status,
            "check_body_len": length, "processes_at_start": nprocs}
    return proc, port, info


def measure(args, target: str, port: int, conns: int, proxy: Managed | None,
            upstream: Managed, up_port: int, load_cpus, proxy_cpus) -> dict:
    if args.warmup > 0:
        run_wrk(args, port, conns, args.warmup, load_cpus)
    accepts0 = upstream_accepts(args.upstream, up_port)
    others = [m for m in Managed.registry if m is not upstream
              and m is not proxy]
    cpus_before = read_proc_stat_cpus()
    ru0 = (resource.getrusage(resource.RUSAGE_CHILDREN),
           resource.getrusage(resource.RUSAGE_SELF))
    up0 = tree_cpu_seconds(upstream.pid)
    px0 = tree_cpu_seconds(proxy.pid) if proxy else None
    ot0 = sum(tree_cpu_seconds(m.pid) for m in others)
    t0 = time.monotonic()
    res, text = run_wrk(args, port, conns, args.duration, load_cpus)
    wall = time.monotonic() - t0
    accepts1 = upstream_accepts(args.upstream, up_port)
    up1 = tree_cpu_seconds(upstream.pid)
    px1 = tree_cpu_seconds(proxy.pid) if proxy else None
    ot1 = sum(tree_cpu_seconds(m.pid) for m in others)
    ru1 = (resource.getrusage(resource.RUSAGE_CHILDREN),
           resource.getrusage(resource.RUSAGE_SELF))
    cpus_after = read_proc_stat_cpus()
    # wrk is the only child reaped meanwhile: RUSAGE_CHILDREN grew by its CPU
    wrk_cpu = sum(getattr(ru1[0], f) - getattr(ru0[0], f)
                  for f in ("ru_utime", "ru_stime"))
    self_cpu = sum(getattr(ru1[1], f) - getattr(ru0[1], f)
                   for f in ("ru_utime", "ru_stime"))
    busy_s = sum((cpus_after[c][0] - cpus_before[c][0])
                 for c in cpus_after if c in cpus_before) / CLK_TCK
    ours = wrk_cpu + self_cpu + (up1 - up0) + (ot1 - ot0) + \
        ((px1 - px0) if proxy else 0.0)
    res["wrk_cpu_s"] = round(wrk_cpu, 4)
    # CPU time the machine spent outside the processes of this benchmark
    # (other users' load, ksoftirqd, ...), in % of all CPUs over the run
    res["other_cpu_pct"] = round(max(0.0, busy_s - ours) * 100.0
                                 / (wall * len(cpus_after)), 1)
    nreq = res.get("requests") or 0
    res["upstream_cpu_s"] = round(up1 - up0, 4)
    res["upstream_us_per_req"] = (up1 - up0) * 1e6 / nreq if nreq else None
    if proxy:
        res["proxy_cpu_s"] = round(px1 - px0, 4)
        res["proxy_us_per_req"] = (px1 - px0) * 1e6 / nreq if nreq else None
        res["proxy_processes"] = len(process_tree(proxy.pid))
    else:
        res["proxy_cpu_s"] = res["proxy_us_per_req"] = None
    # connections the upstream accepted during the measured run, from the
    # proxy (or, for direct, from wrk); the second read's own connection is
    # not counted.  Connections the proxy still holds from the warm-up are
    # reused without being counted.
    if accepts0 is not None and accepts1 is not None:
        res["upstream_conns_opened"] = max(0, accepts1 - accepts0 - 1)
    else:
        res["upstream_conns_opened"] = None
    res["wall_s"] = round(wall, 3)
    if load_cpus:
        res["load_cpu_busy_pct"] = busy_percent(cpus_before, cpus_after,
                                                load_cpus)
    if proxy_cpus:
        res["proxy_cpu_busy_pct"] = busy_percent(cpus_before, cpus_after,
                                                 proxy_cpus)
    res["all_cpu_busy_pct"] = busy_percent(cpus_before, cpus_after,
                                           sorted(cpus_after))
    if args.save_wrk_output:
        res["wrk_output"] = text
    return res


METRICS = ("rps", "ok_rps", "p50_ms", "p99_ms", "errors", "proxy_us_per_req",
           "upstream_us_per_req", "upstream_conns_opened", "load_cpu_busy_pct",
           "proxy_cpu_busy_pct", "other_cpu_pct")


def median_of(runs: list[dict]) -> dict:
    med = {}
    for key in METRICS:
        vals = [r[key] for r in runs if r.get(key) is not None]
        med[key] = statistics.median(vals) if vals else None
    rps = [r["rps"] for r in runs]
    med["rps_spread_pct"] = (100.0 * (max(rps) - min(rps)) / med["rps"]
                             if len(rps) > 1 and med["rps"] else 0.0)
    med["errors_total"] = sum(r["errors"] for r in runs)
    med["rounds"] = len(runs)
    return med


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


# --------------------------------------------------------------------------
# output


def fmt(v, spec: str, dash: str = "-") -> str:
    return dash if v is None else format(v, spec)


def print_table(medians: dict, ratios: dict, targets: list[str],
                conns_list: list[int], pinned: bool) -> None:
    head = (f"{'conns':>6}  {'target':<13} {'req/s':>10} {'±%':>5} "
            f"{'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
            f"{'proxy us/req':>12} {'upstr us/req':>12} {'upstr conns':>11}")
    if pinned:
        head += f" {'busy% load/proxy':>17}"
    print()
    print(head)
    print("-" * len(head))
    for c in conns_list:
        for t in targets:
            m = medians.get(str(c), {}).get(t)
            if m is None:
                continue
            line = (f"{c:>6}  {t:<13} {fmt(m['rps'], ',.0f'):>10} "
                    f"{fmt(m['rps_spread_pct'], '.1f'):>5} "
                    f"{fmt(m['p50_ms'], '.3f'):>8} "
                    f"{fmt(m['p99_ms'], '.3f'):>8} "
                    f"{m['errors_total']:>7} "
                    f"{fmt(m['proxy_us_per_req'], '.1f'):>12} "
                    f"{fmt(m['upstream_us_per_req'], '.1f'):>12} "
                    f"{fmt(m['upstream_conns_opened'], ',.0f'):>11}")
            if pinned:
                bl = fmt(m["load_cpu_busy_pct"], ".0f")
                bp = fmt(m["proxy_cpu_busy_pct"], ".0f")
                line += f" {bl + '/' + bp:>17}"
            print(line)
        r = ratios.get(str(c)) or {}
        for label, q in (("fastgw/nginx", r if "rps" in r else None),
                         ("queue/nginx", r.get("queue_over_nginx")),
                         ("haproxy/nginx", r.get("haproxy_over_nginx")),
                         ("bare/nginx", r.get("bare_over_nginx")),
                         ("limits/fastgw", r.get("limits"))):
            if q:
                print(f"{'':>6}  {label:<13} {fmt(q['rps'], '.2f'):>9}x "
                      f"{'':>5} {fmt(q['p50_ms'], '.2f'):>7}x "
                      f"{fmt(q['p99_ms'], '.2f'):>7}x {'':>7} "
                      f"{fmt(q['proxy_us_per_req'], '.2f'):>11}x")
        print()


def plot(path: Path, medians: dict, targets: list[str],
         conns_list: list[int]) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for t in targets:
        xs, rps, us = [], [], []
        for c in conns_list:
            m = medians.get(str(c), {}).get(t)
            if m is None:
                continue
            xs.append(c)
            rps.append(m["rps"])
            us.append(m["proxy_us_per_req"] if t != "direct"
                      else m["upstream_us_per_req"])
        if not xs:
            continue
        ax1.plot(xs, rps, marker="o", label=t)
        label = t if t != "direct" else "direct (upstream CPU)"
        ax2.plot(xs, us, marker="o", label=label,
                 linestyle="--" if t == "direct" else "-")
    for ax, title in ((ax1, "requests/s (median)"),
                      (ax2, "CPU us per request (median)")):
        ax.set_xlabel("connections")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
        if len(conns_list) > 1:
            ax.set_xscale("log")
            ax.set_xticks(conns_list)
            ax.set_xticklabels([str(c) for c in conns_list])
            ax.minorticks_off()
        ax.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------
# main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="See benchmarks/README.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                   help="comma list out of " + ",".join(ALL_TARGETS) + ", in run order")
    p.add_argument("--upstream", choices=("nginx", "backend"), default="nginx",
                   help="nginx `return 200`, or python -m fastgw.testing.backend")
    p.add_argument("--body-size", type=int, default=100,
                   help="response body bytes of the upstream")
    p.add_argument("--workers", type=int, default=1,
                   help="worker_processes of both proxies")
    p.add_argument("--upstream-workers", type=int, default=1,
                   help="worker_processes of the nginx upstream")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=10,
                   help="seconds per measured wrk run")
    p.add_argument("--warmup", type=int, default=1,
                   help="seconds of wrk before each measured run (0: none)")
    p.add_argument("--connections", type=parse_int_list, default=[50],
                   help="wrk -c, a comma list like 50,200,1000")
    p.add_argument("--threads", type=int, default=1, help="wrk -t")
    p.add_argument("--wrk-timeout", type=int, default=2,
                   help="wrk --timeout seconds (slower responses are errors)")
    p.add_argument("--no-pin", action="store_true",
                   help="do not pin processes to CPUs with taskset")
    p.add_argument("--load-cpus", default=None,
                   help="CPUs for wrk (and the upstream), e.g. 0 or 9-15")
    p.add_argument("--proxy-cpus", default=None,
                   help="CPUs for the proxy under test, e.g. 1 or 1-8")
    p.add_argument("--upstream-cpus", default=None,
                   help="CPUs for the upstream (default: the load CPUs)")
    p.add_argument("--fastgw-cmd", default=None,
                   help="command for fastgw (default: `fastgw` on PATH, "
                        "else `python -m fastgw`)")
    p.add_argument("--start-timeout", type=float, default=15.0,
                   help="seconds to wait for a server to answer")
    p.add_argument("--output", type=Path, default=None,
                   help="JSON path (default benchmarks/results/"
                        "macro-TIMESTAMP.json)")
    p.add_argument("--plot", action="store_true",
                   help="also write a PNG next to the JSON (needs matplotlib)")
    p.add_argument("--save-wrk-output", action="store_true",
                   help="keep wrk's raw text for every run in the JSON")
    p.add_argument("--keep-tmp", action="store_true",
                   help="keep the temporary prefixes (confs, logs)")
    p.add_argument("--no-install", action="store_true",
                   help="never apt-get wrk/nginx")
    return p


def resolve_cpus(args) -> tuple[list[int] | None, list[int] | None, bool]:
    allowed = sorted(os.sched_getaffinity(0))
    args.upstream_cpus_list = None
    if args.no_pin:
        return None, None, False
    if shutil.which("taskset") is None:
        log("taskset not found: running unpinned")
        return None, None, False
    if args.load_cpus is None and args.proxy_cpus is None and len(allowed) < 2:
        log("fewer than 2 CPUs available: running unpinned")
        return None, None, False
    load = parse_cpu_list(args.load_cpus) if args.load_cpus else [allowed[0]]
    proxy = (parse_cpu_list(args.proxy_cpus) if args.proxy_cpus
             else [c for c in allowed if c not in load][:1] or [allowed[-1]])
    if args.upstream_cpus:
        args.upstream_cpus_list = parse_cpu_list(args.upstream_cpus)
    for name, cpus in (("load", load), ("proxy", proxy),
                       ("upstream", args.upstream_cpus_list or [])):
        bad = [c for c in cpus if c not in allowed]
        if bad:
            sys.exit(f"--{name}-cpus: CPUs {bad} not available "
                     f"(allowed: {allowed})")
    if set(load) & set(proxy):
        log(f"WARNING: load CPUs {load} and proxy CPUs {proxy} overlap")
    if args.workers > len(proxy):
        log(f"note: {args.workers} proxy workers share {len(proxy)} CPU(s)")
    return load, proxy, True


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    bad = [t for t in targets if t not in ALL_TARGETS]
    if bad or not targets:
        sys.exit(f"--targets: unknown {bad}; choose from {ALL_TARGETS}")
    if args.body_size < 0 or args.rounds < 1 or args.duration < 1:
        sys.exit("--body-size >= 0, --rounds >= 1, --duration >= 1")
    if args.workers < 1 or args.threads < 1:
        sys.exit("--workers and --threads must be >= 1")

    # Ctrl-C even when started in the background (where SIGINT is ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    atexit.register(Managed.stop_all)

    # wrk and the servers need a descriptor per connection (x2 for proxies)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            pass
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if max(args.connections) * 2 + 100 > nofile:
        log(f"WARNING: RLIMIT_NOFILE {nofile} is low for "
            f"{max(args.connections)} connections")

    ensure_tools(args.no_install)
    load_cpus, proxy_cpus, pinned = resolve_cpus(args)

    fastgw_cmd, fastgw_version = None, None
    skipped: dict[str, str] = {}
    if any(t.startswith("fastgw") for t in targets):
        fastgw_cmd, why = find_fastgw(args.fastgw_cmd)
        if fastgw_cmd is None:
            for t in ("fastgw", "fastgw-limits", "fastgw-queue"):
                skipped[t] = f"not runnable: {why}"
            log(f"SKIP fastgw: {why}")
        else:
            fastgw_version = why

    started = _dt.datetime.now()
    stamp = started.strftime("%Y%m%d-%H%M%S")
    out_json = args.output or RESULTS_DIR / f"macro-{stamp}.json"
    root = Path(tempfile.mkdtemp(prefix="fastgw-bench-"))
    # nginx workers run as nobody when started by root: let them in
    os.chmod(root, 0o755)

    runs: dict[str, dict[str, list[dict]]] = {}
    medians: dict[str, dict[str, dict]] = {}
    ratios: dict[str, dict] = {}
    setup: dict = {}
    interrupted = False
    try:
        upstream, up_port, setup["upstream"] = start_upstream(
            args, root, load_cpus)
        log(f"upstream ({args.upstream}) on {HOST}:{up_port}, "
            f"body {args.body_size} B")

        servers: dict[str, tuple[Managed | None, int]] = {}
        for t in targets:
            if t == "direct":
                servers[t] = (None, up_port)
            elif t in skipped:
                continue
            else:
                try:
                    proc, port, setup[t] = start_proxy(
                        t, args, root, up_port, proxy_cpus, fastgw_cmd)
                except RuntimeError as exc:
                    skipped[t] = f"failed to start: {exc}"
                    log(f"SKIP {t}: failed to start: {exc}")
                    continue
                servers[t] = (proc, port)
                log(f"{t} on {HOST}:{port} ({setup[t]['processes_at_start']} "
                    f"processes, pid {proc.pid})")
        active = [t for t in targets if t in servers]
        if not active:
            raise SystemExit("nothing to measure")

        per_run = args.duration + args.warmup + 0.5
        total = per_run * len(active) * args.rounds * len(args.connections)
        log(f"pinning: load/upstream {load_cpus} proxy {proxy_cpus}" if pinned
            else "pinning: off")
        log(f"{len(active)} targets x {args.rounds} rounds x "
            f"{len(args.connections)} concurrencies, ~{total:.0f} s")

        for conns in args.connections:
            key = str(conns)
            runs[key] = {t: [] for t in active}
            for rnd in range(1, args.rounds + 1):
                for t in list(active):
                    proc, port = servers[t]
                    if proc is not None and not proc.alive():
                        log(f"  {t} died (status {proc.proc.returncode}); "
                            f"dropping it\n{proc.log_tail()}")
                        skipped[t] = "died during the benchmark"
                        active.remove(t)
                        continue
                    try:
                        res = measure(args, t, port, conns, proc, upstream,
                                      up_port, load_cpus, proxy_cpus)
                    except (RuntimeError, ValueError,
                            subprocess.TimeoutExpired) as exc:
                        log(f"  c={conns} round {rnd} {t}: FAILED {exc}")
                        continue
                    res["round"] = rnd
                    runs[key][t].append(res)
                    us = res.get("proxy_us_per_req")
                    opened = res.get("upstream_conns_opened")
                    log(f"  c={conns:<5} round {rnd} {t:<7} "
                        f"{res['rps']:>10,.0f} req/s  "
                        f"p50 {res.get('p50_ms', float('nan')):.3f} ms  "
                        f"p99 {res.get('p99_ms', float('nan')):.3f} ms  "
                        f"err {res['errors']}"
                        + (f"  {us:.1f} us/req" if us else "")
                        + (f"  {opened:,} upstream conns opened"
                           if opened is not None else ""))
    except KeyboardInterrupt as exc:
        interrupted = True
        log(f"\ninterrupted{' by ' + str(exc) if str(exc) else ''}: "
            f"stopping servers, saving what was measured")
    finally:
        log("stopping servers ...")
        Managed.stop_all()
        if args.keep_tmp:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    # medians over the rounds done (all of them unless interrupted)
    for key, per_target in runs.items():
        med = {t: median_of(rs) for t, rs in per_target.items() if rs}
        if not med:
            continue
        medians[key] = med
        f, n = med.get("fastgw"), med.get("nginx")
        if f and n:
            ratios[key] = {k: ratio(f[k], n[k]) for k in
                           ("rps", "p50_ms", "p99_ms", "proxy_us_per_req")}
        fq = med.get("fastgw-queue")
        if fq and n:
            ratios.setdefault(key, {})["queue_over_nginx"] = {
                k: ratio(fq[k], n[k]) for k in ("rps", "p50_ms", "p99_ms", "proxy_us_per_req")}
        fh = med.get("haproxy")
        if fh and n:
            ratios.setdefault(key, {})["haproxy_over_nginx"] = {
                k: ratio(fh[k], n[k]) for k in ("rps", "p50_ms", "p99_ms", "proxy_us_per_req")}
        fb = med.get("bare")
        if fb and n:
            ratios.setdefault(key, {})["bare_over_nginx"] = {
                k: ratio(fb[k], n[k]) for k in ("rps", "p50_ms", "p99_ms", "proxy_us_per_req")}
        fl = med.get("fastgw-limits")
        if f and fl:
            ratios.setdefault(key, {})["limits"] = {
                k: ratio(fl[k], f[k]) for k in ("rps", "p50_ms", "p99_ms", "proxy_us_per_req")}
    if not medians:
        log("no measurement completed")
        return 130 if interrupted else 1

    result = {
        "benchmark": "macro",
        "started": started.isoformat(timespec="seconds"),
        "finished": _dt.datetime.now().isoformat(timespec="seconds"),
        "interrupted": interrupted,
        "command_line": shlex.join([sys.executable] + sys.argv),
        "args": {k: (str(v) if isinstance(v, Path) else v)
                 for k, v in vars(args).items()},
        "machine": machine_info(fastgw_version),
        "pinning": {"enabled": pinned, "load_cpus": load_cpus,
                    "proxy_cpus": proxy_cpus,
                    "upstream_cpus": setup.get("upstream", {}).get("cpus")},
        "setup": setup,
        "skipped": skipped,
        "units": {"rps": "requests/s", "p50_ms": "ms", "p99_ms": "ms",
                  "proxy_us_per_req": "CPU microseconds (user+sys) of all "
                  "proxy processes per completed request",
                  "errors": "non-2xx/3xx responses + socket errors "
                  "(connect, read, write, timeout)",
                  "upstream_conns_opened": "TCP connections the upstream "
                  "accepted during the measured run (nginx stub_status "
                  "accepts, or the backend's connections_total)"},
        "runs": runs,
        "medians": medians,
        "ratios_fastgw_over_nginx": ratios,
    }
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=2) + "\n")

    shown = [t for t in targets if any(t in m for m in medians.values())]
    print_table(medians, ratios, shown, args.connections, pinned)
    for t, why in skipped.items():
        print(f"skipped {t}: {why.splitlines()[0]}")
    noisy = [r for per_t in runs.values() for rs in per_t.values()
             for r in rs if (r.get("other_cpu_pct") or 0) > 5]
    if noisy:
        worst = max(r["other_cpu_pct"] for r in noisy)
        print(f"WARNING: {len(noisy)} runs saw more than 5% of the CPUs busy "
              f"outside the benchmark (up to {worst:.0f}%): something else is "
              f"running on this machine, the numbers are noisy "
              f"(other_cpu_pct in the JSON)")
    if any(m["errors_total"] for mm in medians.values() for m in mm.values()):
        print("WARNING: some runs had errors (see 'errors' in the JSON runs)")
    print(f"results: {out_json}")
    if args.plot:
        png = out_json.with_suffix(".png")
        if plot(png, medians, shown, args.connections):
            print(f"plot:    {png}")
    return 130 if interrupted else 0


def matrix(argv=None) -> int:
    """``--body-sizes 100,4096,65536``: the whole benchmark once per body size (each a
    normal run with its own upstream, JSON and, with --plot, PNG), then one table of the
    fastgw/nginx ratios by body size and concurrency, saved as macro-STAMP-matrix.json."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--body-sizes", required=True)
    pre.add_argument("--output", default=None)
    known, rest = pre.parse_known_args(argv)
    try:
        sizes = [int(x) for x in known.body_sizes.split(",") if x.strip()]
    except ValueError:
        sys.exit("--body-sizes: a comma list of byte counts, e.g. 100,4096,65536")
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(known.output) if known.output else RESULTS_DIR / f"macro-{stamp}.json"
    per_size = {}
    for size in sizes:
        log(f"== body {size} B")
        out = base.with_name(f"{base.stem}-{size}B.json")
        rc = main(rest + ["--body-size", str(size), "--output", str(out)])
        if out.exists():
            per_size[str(size)] = json.loads(out.read_text())
        if rc == 130:
            break
    if not per_size:
        return 1
    print()
    print("fastgw/nginx by body size and concurrency (req/s: higher is better for "
          "fastgw; p50, p99, us/req: lower is)")
    print(f"{'body':>8} {'conns':>6} {'req/s':>8} {'p50':>8} {'p99':>8} {'us/req':>8}")
    table = {}
    for size, result in per_size.items():
        for conns, r in result["ratios_fastgw_over_nginx"].items():
            table.setdefault(size, {})[conns] = {k: r.get(k) for k in
                                                 ("rps", "p50_ms", "p99_ms", "proxy_us_per_req")}

            def fmt(v):
                return f"{v:.2f}x" if isinstance(v, (int, float)) else "-"
            print(f"{size:>7}B {conns:>6} {fmt(r.get('rps')):>8} {fmt(r.get('p50_ms')):>8} "
                  f"{fmt(r.get('p99_ms')):>8} {fmt(r.get('proxy_us_per_req')):>8}")
    out = base.with_name(f"{base.stem}-matrix.json")
    out.write_text(json.dumps({"benchmark": "macro-matrix", "body_sizes": sizes,
                               "ratios_fastgw_over_nginx": table,
                               "runs": {s: str(base.with_name(f"{base.stem}-{s}B.json"))
                                        for s in per_size}}, indent=2) + "\n")
    print(f"matrix:  {out}")
    return 0


if __name__ == "__main__":
    sys.exit(matrix() if any(a.startswith("--body-sizes") for a in sys.argv[1:]) else main())
