"""Bring up the shipped configuration in front of the sample upstream, for a first look.

    python -m fastgw.testing.demo [--prefix DIR]

Starts ``python -m fastgw.testing.backend --port 9001`` and
``fastgw -p PREFIX`` (``conf/fastgw.conf`` under the prefix, the current
directory by default), sends a few requests through the gateway and prints
them, then keeps both running until Ctrl-C (or SIGTERM), and stops them.
"""

import argparse
import http.client
import os
import signal
import subprocess
import sys
import time
import urllib.request

from fastgw.testing.backend import start_backend, stop_backend
from fastgw.testing.harness import wait_until


def _show(port, path, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    print(f"GET {path} -> {resp.status} {resp.reason}, {len(body)} bytes, "
          f"served by upstream port {resp.getheader('X-Backend-Port', '-')}: "
          f"{body[:60]!r}{'...' if len(body) > 60 else ''}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", default=os.getcwd(), help="fastgw prefix (holds conf/fastgw.conf)")
    parser.add_argument("--upstream-port", type=int, default=9001,
                        help="port of the sample upstream (the shipped conf proxies to 9001)")
    args = parser.parse_args(argv)

    conf = os.path.join(args.prefix, "conf", "fastgw.conf")
    if not os.path.exists(conf):
        sys.exit(f"no {conf}: run this from the repository root or pass --prefix")
    from fastgw.config.loader import load

    # The gateway's port is whatever the configuration listens on.
    args.port = load(conf, args.prefix).listens()[0].port
    backend, _ = start_backend(args.upstream_port, "--latency", "0")
    print(f"sample upstream listening on 127.0.0.1:{args.upstream_port}")
    # Run from "/" so that the installed fastgw (with its compiled hot path) is
    # imported, not the source tree that `python -m` would find in the cwd.
    gw = subprocess.Popen([sys.executable, "-m", "fastgw", "-p", os.path.abspath(args.prefix)],
                          cwd="/")
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    try:
        def up():
            if gw.poll() is not None:
                raise SystemExit(f"fastgw exited with status {gw.returncode}")
            try:
                _show_quiet(args.port)
                return True
            except OSError:
                return False
        wait_until(up, timeout=20, interval=0.1, message="fastgw to answer")
        print(f"fastgw (pid {gw.pid}) is proxying 127.0.0.1:{args.port} -> 127.0.0.1:{args.upstream_port}\n")
        _show(args.port, "/")
        _show(args.port, "/hello?size=20")
        _show(args.port, "/api/users?size=12")
        _show(args.port, "/healthz")
        print(f"\nGET /stub_status (nginx's format, summed over workers):")
        with urllib.request.urlopen(f"http://127.0.0.1:{args.port}/stub_status", timeout=10) as resp:
            print("    " + resp.read().decode().rstrip().replace("\n", "\n    "))
        print(f"\ntry: curl -i http://127.0.0.1:{args.port}/   |   wrk -t1 -c50 -d5s http://127.0.0.1:{args.port}/")
        print(f"     curl http://127.0.0.1:{args.port}/metrics   (Prometheus)")
        print(f"logs: {os.path.join(args.prefix, 'logs')}/   stop: Ctrl-C\n")
        while not stop and gw.poll() is None:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        # Ctrl-C reaches the whole process group (fastgw stops fast on its own);
        # a second one must not leave the sample upstream behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if gw.poll() is None:
            gw.send_signal(signal.SIGQUIT)
            try:
                gw.wait(35)
            except subprocess.TimeoutExpired:
                gw.kill()
        stop_backend(backend)
        print("stopped")


def _show_quiet(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    conn.request("GET", "/healthz")
    conn.getresponse().read()
    conn.close()


if __name__ == "__main__":
    main()
