"""`fastgw top --once` against a running instance (issue 8)."""

import http.client
import re
import subprocess
import sys


def conf(backend):
    return f"""
        worker_processes 2;
        error_log logs/error.log info;
        events {{ worker_connections 256; }}
        http {{
            access_log off;
            upstream app {{ server 127.0.0.1:{backend}; zone app; keepalive 4; }}
            server {{
                listen 127.0.0.1:{{port}};
                location / {{ proxy_pass http://app; }}
                location = /metrics {{ metrics; }}
            }}
        }}"""


def get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path, headers={"Connection": "close"})
    status = c.getresponse().status
    c.close()
    return status


def top(*args):
    return subprocess.run([sys.executable, "-m", "fastgw", "top", "--once", *args],
                          capture_output=True, text=True, timeout=30, cwd="/")


def row(out, first):
    """The cells of the table row starting with ``first``."""
    for line in out.splitlines():
        cells = [c.strip() for c in re.split(r"[│|]", line) if c.strip()]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{out}")


def test_top_once_shows_the_figures_of_a_running_instance(gateway, backend):
    gw = gateway(conf(backend))
    assert [get(gw.port, "/") for _ in range(10)] == [200] * 10
    assert [get(gw.port, "/?status=404") for _ in range(2)] == [404] * 2
    # Found through the configuration (-p), as an operator would run it.
    result = top("-p", gw.prefix, "--interval", "0.3")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"http://127.0.0.1:{gw.port}/metrics" in out
    # 10 + the first of top's two scrapes; both workers' counts summed.
    assert row(out, "2xx")[1] == "11"
    assert row(out, "4xx")[1] == "2"
    assert row(out, "app")[1:] == ["0", f"127.0.0.1:{backend}", "up", "0"]
    assert row(out, "0")[1] == "yes" and row(out, "1")[1] == "yes"
    # connections and req/s per worker
    assert len(row(out, "0")) == 4 and float(row(out, "1")[3]) >= 0
    assert re.search(r"p50 \d+\.\d ms", out) and re.search(r"p99 \d+\.\d ms", out)


def test_top_says_what_is_wrong_when_it_cannot_read(tmp_path):
    result = top("--url", "http://127.0.0.1:9/metrics")
    assert result.returncode == 1 and "cannot read http://127.0.0.1:9/metrics" in result.stderr
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "fastgw.conf").write_text(
        "events {}\nhttp { server { listen 127.0.0.1:8999; location / { return 200; } } }\n")
    result = top("-p", str(tmp_path))
    assert result.returncode == 1 and "no location with `metrics`" in result.stderr


def test_the_metrics_page_is_found_by_path_and_server_name(tmp_path):
    from fastgw.config.loader import load
    from fastgw.observe.top import metrics_url

    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "fastgw.conf").write_text("""
        events {}
        http {
            server { listen 127.0.0.1:8990; location / { return 200; }
                     location ~ ^/m$ { metrics; } }
            server { listen 127.0.0.1:8990; server_name *.x admin; location = /metrics { metrics; } }
        }""")
    # The regex location has no single path; the name-based server needs its Host.
    assert metrics_url(load("conf/fastgw.conf", str(tmp_path))) == \
        ("http://127.0.0.1:8990/metrics", "admin")


def test_top_reaches_a_name_based_metrics_server(gateway, backend):
    gw = gateway(conf(backend).replace(
        "location = /metrics { metrics; }",
        "location = /metrics { return 200 'not here'; }\n"
        "            }\n"
        "            server {\n"
        "                listen 127.0.0.1:{port};\n"
        "                server_name admin;\n"
        "                location = /metrics { metrics; }"))
    assert get(gw.port, "/") == 200
    result = top("-p", gw.prefix, "--interval", "0.2")
    assert result.returncode == 0, result.stderr
    assert row(result.stdout, "2xx")[1] == "2"  # the request and top's first scrape
    bad = top("--url", f"http://127.0.0.1:{gw.port}/metrics")  # the default server's page
    assert bad.returncode == 1 and "not fastgw's metrics page" in bad.stderr
