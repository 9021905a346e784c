"""Memory per idle keep-alive client connection: fastgw vs nginx, one worker each.

    python benchmarks/memory/idle.py [--connections 10000] [--targets fastgw,nginx]

For each proxy: start it with one worker answering `return 200` locally (no
upstream: only client connections are measured), read the worker's RSS, open
N connections that each make one keep-alive request and then stay idle, read
the RSS again, and report (after - before) / N in bytes per connection, plus
the ratio fastgw/nginx. Both get `keepalive_timeout 300s` so that nothing is
closed while measuring. The target ``uvloop`` (bare_uvloop.py: uvloop's transport
and a protocol holding only it) is the floor under any uvloop server. The client raises its own open-file limit to the hard
limit; N is capped to fit it.

Run it as root (nginx's worker switches to `nobody`) from the repository root
with the Python where fastgw is installed. Results are printed and saved as
JSON under benchmarks/results/.
"""

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fastgw.testing.harness import children, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]

CONF = """
worker_processes 1;
{extra_main}
error_log {prefix}/logs/error.log error;
pid {prefix}/logs/pid;
events {{ worker_connections {wc}; }}
http {{
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "ok"; }}
    }}
}}
"""


def rss_bytes(pid):
    """Resident set size of a process, bytes (from /proc)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def wait_port(port, timeout=15.0):
    def answers():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False
    wait_until(answers, timeout, message=f"an answer on port {port}")


def start(target, prefix, port, n):
    """Start ``target`` in ``prefix``: (master Popen, worker pid)."""
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    (prefix / "conf").mkdir(exist_ok=True)
    nofile = n * 2 + 1000
    extra = f"worker_rlimit_nofile {nofile};"
    conf = CONF.format(prefix=prefix, port=port, wc=n + 500, extra_main=extra)
    if target == "uvloop":
        proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("bare_uvloop.py")),
                                 str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)
        return proc, proc.pid
    if target == "nginx":
        path = prefix / "conf" / "nginx.conf"
        path.write_text("daemon off;\n" + conf)
        proc = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(prefix),
                                 "-c", str(path)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    else:
        path = prefix / "conf" / "fastgw.conf"
        path.write_text(conf)
        proc = subprocess.Popen([sys.executable, "-m", "fastgw", "-p", str(prefix)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")
    wait_port(port)
    deadline = time.monotonic() + 10
    while not children(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc, children(proc.pid)[0]


def open_idle(port, n):
    """N connections, one keep-alive request each, left open: the sockets."""
    socks = []
    req = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(req)
        data = b""
        while b"ok" not in data:
            chunk = s.recv(4096)
            if not chunk:
                raise RuntimeError("connection closed before the response")
            data += chunk
        socks.append(s)
    return socks


def measure(target, n):
    prefix = Path(tempfile.mkdtemp(prefix=f"fastgw-mem-{target}-"))
    port = free_port()
    proc, worker = start(target, prefix, port, n)
    try:
        # Warm the worker (first requests allocate caches) before the baseline.
        for s in open_idle(port, 50):
            s.close()
        time.sleep(0.5)
        before = rss_bytes(worker)
        t0 = time.monotonic()
        socks = open_idle(port, n)
        opened = time.monotonic() - t0
        time.sleep(1.0)
        after = rss_bytes(worker)
        for s in socks:
            s.close()
        return {"target": target, "connections": n, "rss_before": before, "rss_after": after,
                "bytes_per_connection": (after - before) / n, "open_seconds": opened}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(prefix, ignore_errors=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--connections", type=int, default=10000)
    p.add_argument("--targets", default="fastgw,nginx",
                   help="comma list out of fastgw, nginx, uvloop (the bare uvloop floor)")
    p.add_argument("--output", default=None, help="JSON path (default benchmarks/results/)")
    args = p.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    n = min(args.connections, hard - 200)
    if n < args.connections:
        print(f"open-file limit {hard}: measuring {n} connections")
    results = [measure(t, n) for t in args.targets.split(",")]
    print(f"{'target':8} {'connections':>11} {'RSS before':>12} {'RSS after':>12} {'bytes/conn':>11}")
    for r in results:
        print(f"{r['target']:8} {r['connections']:>11} {r['rss_before'] / 1e6:>10.1f}MB "
              f"{r['rss_after'] / 1e6:>10.1f}MB {r['bytes_per_connection']:>11.0f}")
    by = {r["target"]: r for r in results}
    if "fastgw" in by and "nginx" in by and by["nginx"]["bytes_per_connection"] > 0:
        ratio = by["fastgw"]["bytes_per_connection"] / by["nginx"]["bytes_per_connection"]
        print(f"fastgw/nginx bytes per idle connection: {ratio:.2f}x")
        if "uvloop" in by:
            floor = by["uvloop"]["bytes_per_connection"]
            print(f"uvloop floor/nginx: {floor / by['nginx']['bytes_per_connection']:.2f}x; "
                  f"fastgw above the floor: {by['fastgw']['bytes_per_connection'] - floor:.0f} B")
    out = Path(args.output) if args.output else (
        ROOT / "benchmarks" / "results" / f"memory-{time.strftime('%Y%m%d-%H%M%S')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
