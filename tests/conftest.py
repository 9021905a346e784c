"""Shared fixtures: a real sample upstream and real fastgw processes on 127.0.0.1."""

import pytest

from fastgw.testing.backend import start_backend, stop_backend
from fastgw.testing.harness import Gateway

BASE_CONF = """
worker_processes {workers};
error_log logs/error.log notice;
events {{ worker_connections 1024; }}
http {{
    upstream app {{
        server 127.0.0.1:{backend};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{{port}};
        location / {{
            proxy_pass http://app;
            proxy_connect_timeout 1s;
            proxy_read_timeout 2s;
        }}
        {extra}
    }}
    {http_extra}
}}
"""


@pytest.fixture
def backend():
    """A sample upstream on a free port: ``(process, port)``."""
    proc, port = start_backend(0)
    yield port
    stop_backend(proc)


@pytest.fixture
def make_backend():
    """Start more sample upstreams: ``make_backend(*args) -> port``."""
    procs = []

    def make(*args):
        proc, port = start_backend(0, *args)
        procs.append(proc)
        return port

    yield make
    for proc in procs:
        stop_backend(proc)


@pytest.fixture
def gateway(tmp_path):
    """Start fastgw on a configuration: ``gateway(conf_text, workers=None) -> Gateway``."""
    started = []

    def make(conf, workers=None, **kwargs):
        gw = Gateway(conf, tmp_path / f"gw{len(started)}", workers=workers, **kwargs)
        started.append(gw)
        return gw.start()

    yield make
    for gw in started:
        gw.stop()


@pytest.fixture
def base_gateway(gateway, backend):
    """fastgw with one worker in front of one sample upstream (keepalive 16)."""

    def make(extra="", http_extra="", workers=1):
        return gateway(BASE_CONF.format(workers=workers, backend=backend, extra=extra,
                                        http_extra=http_extra))

    return make


class RedisServer:
    """A throwaway redis-server on a free loopback port (no persistence)."""

    def __init__(self):
        import shutil
        import subprocess

        from fastgw.testing.harness import free_port

        exe = shutil.which("redis-server")
        if exe is None:
            # .ci/run installs it; a developer machine may lack it.
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--enable-debug-command", "local"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait()

    def wait(self):
        import socket

        from fastgw.testing.harness import wait_until

        def pong():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    return s.recv(16).startswith(b"+PONG")
            except OSError:
                return False
        wait_until(pong, timeout=10, message="redis-server")

    def command(self, *args):
        """One command in RESP; returns the raw reply."""
        import socket

        out = b"*%d\r\n" % len(args) + b"".join(
            b"$%d\r\n%s\r\n" % (len(a), a) for a in (x.encode() if isinstance(x, str) else x
                                                     for x in args))
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(out)
            return s.recv(65536)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def redis_server():
    server = RedisServer()
    yield server
    server.stop()
