"""Overload benchmark: what a saturated upstream looks like behind fastgw and behind nginx.

    python benchmarks/overload/run.py [--latency 20] [--slots 8] [--loads 1,2,5,10]
                                      [--duration 10] [--queue 64] [--queue-timeout 1s]

The sample upstream (fastgw.testing.backend) serves ``--slots`` requests at
once, each taking ``--latency`` ms: its capacity is slots / latency (8 / 20 ms
= 400 req/s). Requests arrive open-loop (Poisson, independent of responses,
as real clients do) at 1x, 2x, 5x and 10x that capacity, each with a 10 s
deadline, against:

- fastgw: ``server ... max_conns=SLOTS`` + ``queue N timeout=T``, 1 worker;
- nginx: ``server ... max_conns=SLOTS`` (its closest: no queue in nginx OSS), 1 worker.

For each: offered and answered rates, goodput (2xx/s), p50/p99 latency of
the 2xx, p99 latency of the rejections, the statuses, and how many requests
got no answer within the deadline. Prints a table, saves JSON (and a PNG when
matplotlib is importable) under benchmarks/results/. Loopback only; every
process it starts is stopped at the end.

``--client wrk`` runs the same comparison closed-loop with wrk instead: at
load k, k x SLOTS connections each send their next request as soon as the
last is answered, and a Lua script (count_statuses.lua) counts the statuses.
It is the figure most people know how to reproduce, but a rejected client
comes back at once, so the offered load depends on how fast the proxy
rejects, and wrk's latency percentiles cover all answers, not the 2xx alone;
the default open-loop client has neither bias.
"""

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "results"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(p / 100 * (len(values) - 1)))))
    return values[k]


# -- the load generator ----------------------------------------------------------------------

class _Client(asyncio.Protocol):
    """One keep-alive client connection, one request at a time (kept lean: the
    generator shares two cores with the proxy and the upstream)."""

    def __init__(self, pool):
        self.pool = pool
        self.transport = None
        self.buf = b""
        self.done = None
        self.status = None

    def connection_made(self, transport):
        self.transport = transport

    def send(self, request, done):
        self.done = done
        self.buf = b""
        self.transport.write(request)

    def data_received(self, data):
        self.buf += data
        head_end = self.buf.find(b"\r\n\r\n")
        if head_end < 0 or self.done is None:
            return
        head = self.buf[:head_end]
        length, close = 0, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and b"close" in value.lower():
                close = True
        if len(self.buf) < head_end + 4 + length:
            return
        done, self.done = self.done, None
        if close:
            self.transport.close()
        else:
            self.pool.idle.append(self)
        done(int(head.split(b" ", 2)[1]))

    def connection_lost(self, exc):
        if self.done is not None:
            done, self.done = self.done, None
            done(None)


class Pool:
    """Keep-alive client connections to one port."""

    def __init__(self, port):
        self.port = port
        self.idle = []


async def offer(port, rate, duration, timeout=10.0):
    """Poisson arrivals at ``rate``/s for ``duration`` s; returns [(status or None, seconds)]."""
    loop = asyncio.get_running_loop()
    pool = Pool(port)
    results = []
    pending = [0]
    finished = loop.create_future()
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"

    def complete(t0, timer, status):
        timer.cancel()
        # perf_counter: uvloop's loop.time() has a millisecond resolution.
        results.append((status, time.perf_counter() - t0))
        pending[0] -= 1
        if pending[0] == 0 and stopped[0] and not finished.done():
            finished.set_result(None)

    async def one(t0):
        client = None
        while pool.idle:
            candidate = pool.idle.pop()
            if not candidate.transport.is_closing():
                client = candidate
                break
        if client is None:
            try:
                _, client = await loop.create_connection(lambda: _Client(pool), "127.0.0.1", port)
            except OSError:
                complete(t0, loop.call_later(0, lambda: None), None)
                return
        box = []

        def expire():
            if client.done is not None:
                client.done = None
                client.transport.abort()
                complete(t0, timer, None)

        timer = loop.call_later(timeout, expire)
        client.send(request, lambda status: complete(t0, timer, status))

    stopped = [False]
    start = loop.time()
    next_at = start
    while next_at - start < duration:
        now = loop.time()
        if next_at > now:
            await asyncio.sleep(next_at - now)
        pending[0] += 1
        loop.create_task(one(time.perf_counter()))
        next_at += random.expovariate(rate)
    stopped[0] = True
    if pending[0]:
        await finished
    return results


def summarise(results, duration):
    ok = [t for s, t in results if s is not None and 200 <= s < 300]
    rejected = [t for s, t in results if s is not None and not 200 <= s < 300]
    statuses = {}
    for s, _ in results:
        statuses[str(s)] = statuses.get(str(s), 0) + 1
    ms = lambda v: None if v is None else round(v * 1000, 2)  # noqa: E731
    return {
        "requests": len(results),
        "offered_rps": round(len(results) / duration, 1),
        "goodput_rps": round(len(ok) / duration, 1),
        "ok_p50_ms": ms(percentile(ok, 50)),
        "ok_p99_ms": ms(percentile(ok, 99)),
        "rejected": len(rejected),
        "rejected_p99_ms": ms(percentile(rejected, 99)),
        "no_answer": statuses.get("None", 0),
        "statuses": statuses,
    }


LUA = Path(__file__).resolve().parent / "count_statuses.lua"


def offer_wrk(port, connections, duration, timeout=10.0):
    """wrk closed-loop with ``connections``; returns a summary like ``summarise``'s."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", f"--timeout={timeout:g}s",
         "-s", str(LUA), f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=duration + timeout + 30).stdout
    fields = {}
    for line in out.splitlines():
        if line.startswith(("STATUSES", "LATENCY_US", "ERRORS")):
            tag, *pairs = line.split()
            fields[tag] = dict(p.split("=") for p in pairs)
    statuses = {k: int(v) for k, v in fields.get("STATUSES", {}).items()}
    errors = {k: int(v) for k, v in fields.get("ERRORS", {}).items()}
    lat = {k: int(v) for k, v in fields.get("LATENCY_US", {}).items()}
    ok = sum(v for k, v in statuses.items() if k.startswith("2"))
    rejected = sum(v for k, v in statuses.items() if not k.startswith("2"))
    no_answer = errors.get("timeout", 0) + errors.get("read", 0) + errors.get("connect", 0)
    if no_answer:
        statuses["None"] = no_answer
    return {
        "requests": ok + rejected + no_answer,
        "offered_rps": round((ok + rejected + no_answer) / duration, 1),
        "goodput_rps": round(ok / duration, 1),
        # wrk times every answer together; these are not the 2xx alone.
        "all_p50_ms": lat.get("p50", 0) / 1000,
        "all_p99_ms": lat.get("p99", 0) / 1000,
        "ok_p50_ms": None,
        "ok_p99_ms": None,
        "rejected": rejected,
        "rejected_p99_ms": None,
        "no_answer": no_answer,
        "statuses": statuses,
        "connections": connections,
    }


# -- the servers -------------------------------------------------------------------------------

def fastgw_conf(port, up, slots, queue, queue_timeout):
    return f"""worker_processes 1;
error_log logs/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    upstream app {{
        server 127.0.0.1:{up} max_conns={slots};
        queue {queue} timeout={queue_timeout};
        keepalive {slots * 2};
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass http://app; proxy_read_timeout 30s; }}
    }}
}}
"""


def nginx_conf(prefix, port, up, slots):
    return f"""worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {prefix}; proxy_temp_path {prefix}; fastcgi_temp_path {prefix};
    uwsgi_temp_path {prefix}; scgi_temp_path {prefix};
    upstream app {{
        server 127.0.0.1:{up} max_conns={slots};
        keepalive {slots * 2};
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout 30s;
        }}
    }}
}}
"""


def start(argv, **kw):
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, **kw)


def stop(proc):
    if proc and proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _run(coro):
    try:
        import uvloop
        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=int, default=20, help="upstream latency, ms")
    ap.add_argument("--slots", type=int, default=8, help="requests the upstream serves at once")
    ap.add_argument("--loads", default="1,2,5,10", help="offered load, multiples of capacity")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    ap.add_argument("--queue", type=int, default=64, help="fastgw queue size")
    ap.add_argument("--queue-timeout", default="1s", help="fastgw queue timeout")
    ap.add_argument("--targets", default="fastgw,nginx")
    ap.add_argument("--client", choices=("open", "wrk"), default="open",
                    help="open-loop Poisson arrivals (default) or wrk closed-loop")
    args = ap.parse_args(argv)
    loads = [float(x) for x in args.loads.split(",")]
    capacity = args.slots / (args.latency / 1000)
    targets = args.targets.split(",")
    if args.client == "wrk" and not shutil.which("wrk"):
        sys.exit("--client wrk: wrk not found (apt-get install wrk)")
    if "nginx" in targets and not shutil.which("nginx"):
        if os.geteuid() == 0:
            subprocess.run(["apt-get", "install", "-y", "-qq", "nginx"], check=False,
                           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
                           stdout=subprocess.DEVNULL)
        if not shutil.which("nginx"):
            print("nginx not found: skipping it")
            targets.remove("nginx")
    tmp = Path(tempfile.mkdtemp(prefix="fastgw-overload-"))
    procs = []
    report = {"capacity_rps": capacity, "args": vars(args), "runs": {}}
    try:
        up = free_port()
        procs.append(start([sys.executable, "-m", "fastgw.testing.backend", "--port", str(up),
                            "--latency", f"{args.latency}ms", "--concurrency", str(args.slots),
                            "--quiet"], cwd="/"))
        wait_port(up)
        ports = {}
        if "fastgw" in targets:
            ports["fastgw"] = free_port()
            (tmp / "fastgw" / "conf").mkdir(parents=True)
            (tmp / "fastgw" / "conf" / "fastgw.conf").write_text(
                fastgw_conf(ports["fastgw"], up, args.slots, args.queue, args.queue_timeout))
            procs.append(start([sys.executable, "-m", "fastgw", "-p", str(tmp / "fastgw")], cwd="/"))
        if "nginx" in targets:
            ports["nginx"] = free_port()
            (tmp / "nginx").mkdir()
            os.chmod(tmp, 0o755)
            conf = tmp / "nginx" / "nginx.conf"
            conf.write_text(nginx_conf(tmp / "nginx", ports["nginx"], up, args.slots))
            procs.append(start(["nginx", "-p", str(tmp / "nginx"), "-c", str(conf)]))
        for port in ports.values():
            wait_port(port)
        time.sleep(1.0)
        for m in loads:
            for name, port in ports.items():
                if args.client == "wrk":
                    summary = offer_wrk(port, max(1, round(m * args.slots)), args.duration)
                else:
                    summary = summarise(_run(offer(port, m * capacity, args.duration)),
                                        args.duration)
                report["runs"].setdefault(name, {})[str(m)] = summary
                if args.client == "wrk":
                    print(f"{name:7s} {m:4.0f}x ({summary['connections']} connections) "
                          f"answered {summary['offered_rps']:8.1f}/s  goodput "
                          f"{summary['goodput_rps']:7.1f}/s  all p50 {summary['all_p50_ms']} ms "
                          f"p99 {summary['all_p99_ms']} ms  {summary['statuses']}", flush=True)
                    time.sleep(2.0)
                    continue
                print(f"{name:7s} {m:4.0f}x offered {summary['offered_rps']:8.1f}/s  goodput "
                      f"{summary['goodput_rps']:7.1f}/s  ok p50 {summary['ok_p50_ms']} ms p99 "
                      f"{summary['ok_p99_ms']} ms  rejected {summary['rejected']} (p99 "
                      f"{summary['rejected_p99_ms']} ms)  no answer {summary['no_answer']}  "
                      f"{summary['statuses']}", flush=True)
                time.sleep(2.0)  # let the upstream and the queues drain
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)

    # wrk cannot time answers by status: its columns are over all answers.
    p50, p99 = ("all_p50_ms", "all_p99_ms") if args.client == "wrk" else ("ok_p50_ms", "ok_p99_ms")
    print(f"\nupstream capacity {capacity:.0f} req/s ({args.slots} slots x {args.latency} ms), "
          f"client: {args.client}")
    print(f"{'load':>5} {'target':8} {'goodput/s':>10} {'% cap':>6} {p50[:-3].replace('_', ' '):>8} "
          f"{p99[:-3].replace('_', ' '):>8} {'rej p99':>8} {'rejected':>9} {'no answer':>9}")
    for m in loads:
        for name in ports:
            r = report["runs"][name][str(m)]
            print(f"{m:4.0f}x {name:8} {r['goodput_rps']:10.1f} {100 * r['goodput_rps'] / capacity:5.0f}% "
                  f"{r[p50] or '-':>8} {r[p99] or '-':>8} {r['rejected_p99_ms'] or '-':>8} "
                  f"{r['rejected']:9d} {r['no_answer']:9d}")
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"overload-{args.client}-{stamp}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"results: {out}")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return 0
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for name in ports:
        runs = report["runs"][name]
        a.plot(loads, [runs[str(m)]["goodput_rps"] for m in loads], marker="o", label=name)
        b.plot(loads, [runs[str(m)][p99] or 0 for m in loads], marker="o", label=name)
    a.axhline(capacity, color="grey", linestyle="--", label="capacity")
    a.set(xlabel="offered load (x capacity)", ylabel="goodput (2xx/s)", title="goodput")
    b.set(xlabel="offered load (x capacity)", ylabel=f"{p99[:-3].replace('_', ' ')} (ms)",
          title="latency of admitted" if args.client == "open" else "latency of all answers")
    a.legend()
    b.legend()
    fig.tight_layout()
    png = RESULTS / f"overload-{args.client}-{stamp}.png"
    fig.savefig(png)
    print(f"plot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
