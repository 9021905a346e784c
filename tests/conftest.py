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
