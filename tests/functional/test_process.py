"""The process model through real processes: workers, sockets, signals, respawn, the CLI."""

import http.client
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from fastgw.testing.harness import Gateway, children, free_port, wait_until

CONF = """
worker_processes {workers};
error_log logs/error.log notice;
worker_shutdown_timeout 10s;
events {{ worker_connections 512; }}
http {{
    upstream app {{ server 127.0.0.1:{backend}; keepalive 8; }}
    server {{
        listen 127.0.0.1:{{port}};
        location / {{ proxy_pass http://app; }}
    }}
}}
"""


def get(port, path="/", timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def cmdline(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return fh.read().replace(b"\0", b" ").decode().strip()


def listening_inodes(pid):
    """Socket inodes of ``pid`` that are in the LISTEN state on 127.0.0.1."""
    fds = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            fds.add(target[8:-1])
    listening = set()
    with open(f"/proc/{pid}/net/tcp") as fh:
        for line in fh.readlines()[1:]:
            parts = line.split()
            if parts[3] == "0A":  # TCP_LISTEN
                listening.add(parts[9])
    return fds & listening


def test_workers_titles_and_a_socket_each(gateway, backend):
    gw = gateway(CONF.format(workers=2, backend=backend))
    workers = gw.worker_pids()
    assert len(workers) == 2
    assert cmdline(gw.pid).startswith("fastgw: master process")
    assert all(cmdline(pid) == "fastgw: worker process" for pid in workers)
    # One SO_REUSEPORT listening socket per worker slot: each worker holds its own.
    sockets = [listening_inodes(pid) for pid in workers]
    assert all(len(s) == 1 for s in sockets)
    assert sockets[0] != sockets[1]
    assert len(listening_inodes(gw.pid)) == 2
    with open(gw.path("logs", "fastgw.pid")) as fh:
        assert int(fh.read()) == gw.pid
    for _ in range(10):
        assert get(gw.port)[0] == 200


def test_quit_finishes_in_flight_request(gateway, backend):
    gw = gateway(CONF.format(workers=1, backend=backend))
    result = {}

    def slow():
        result["response"] = get(gw.port, "/?latency=1500&size=5")

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.5)
    gw.kill(signal.SIGQUIT)
    t.join(10)
    assert result["response"] == (200, b"xxxxx")
    assert gw.proc.wait(10) == 0
    assert not os.path.exists(gw.path("logs", "fastgw.pid"))
    assert "gracefully shutting down" in gw.error_log()


def test_killed_worker_is_replaced_on_the_same_socket(gateway, backend):
    gw = gateway(CONF.format(workers=2, backend=backend))
    before = gw.worker_pids()
    sockets_before = set().union(*(listening_inodes(p) for p in before))
    os.kill(before[0], signal.SIGKILL)
    t0 = time.monotonic()
    after = wait_until(lambda: (lambda p: p if len(p) == 2 and before[0] not in p else None)(gw.worker_pids()),
                       timeout=5, message="a replacement worker")
    assert time.monotonic() - t0 < 1.5  # "within a second", with a margin for this machine
    assert before[1] in after
    gw.wait_ready(1, since=2)
    sockets_after = set().union(*(listening_inodes(p) for p in after))
    assert sockets_after == sockets_before
    assert f"worker process {before[0]} exited on signal 9" in gw.error_log()
    for _ in range(20):
        assert get(gw.port)[0] == 200


def test_term_stops_fast(gateway, backend):
    gw = gateway(CONF.format(workers=2, backend=backend))
    workers = gw.worker_pids()
    t0 = time.monotonic()
    gw.kill(signal.SIGTERM)
    assert gw.proc.wait(10) == 0
    assert time.monotonic() - t0 < 3.0
    assert all(not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
               for pid in workers)


def run_cli(*args, cwd="/", timeout=30):
    # From "/" by default: `python -m` puts the cwd first on sys.path, and a source
    # tree there (the repository root) would shadow the installed, compiled fastgw.
    return subprocess.run([sys.executable, "-m", "fastgw", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL)


def test_signal_through_pid_file(gateway, backend, tmp_path):
    gw = gateway(CONF.format(workers=1, backend=backend))
    out = run_cli("-p", gw.prefix, "-s", "quit")
    assert out.returncode == 0, out.stderr
    assert gw.proc.wait(10) == 0
    out = run_cli("-p", gw.prefix, "-s", "stop")
    assert out.returncode == 1
    assert "[error] open()" in out.stderr and "fastgw.pid" in out.stderr


def test_second_instance_on_the_same_port_fails(gateway, backend, tmp_path):
    gw = gateway(CONF.format(workers=1, backend=backend))
    other = Gateway(CONF.format(workers=1, backend=backend), tmp_path / "other", port=gw.port)
    other.start(wait=False)
    assert other.proc.wait(10) == 1
    assert f"bind() to 127.0.0.1:{gw.port} failed (98: Address already in use)" in other.output()
    assert get(gw.port)[0] == 200


def test_test_flag_good_and_bad(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "fastgw.conf").write_text("events {}\nhttp { server { listen 127.0.0.1:1; } }\n")
    out = run_cli("-p", str(tmp_path), "-t")
    assert out.returncode == 0
    path = str(conf / "fastgw.conf")
    assert f"fastgw: the configuration file {path} syntax is ok" in out.stderr
    assert f"fastgw: configuration file {path} test is successful" in out.stderr
    out = run_cli("-p", str(tmp_path), "-t", "-q")
    assert out.returncode == 0 and out.stderr == ""
    (conf / "inc.conf").write_text("upstream u {\n    server 127.0.0.1:1 wight=2;\n}\n")
    (conf / "fastgw.conf").write_text(
        "events {}\nhttp {\n    include inc.conf;\n    server { listen 127.0.0.1:1;\n"
        "        location / { proxy_pas http://u; }\n    }\n}\n")
    out = run_cli("-p", str(tmp_path), "-t")
    assert out.returncode == 1
    assert f'fastgw: [emerg] invalid parameter "wight=2" in {conf / "inc.conf"}:2' in out.stderr
    assert f'fastgw: [emerg] unknown directive "proxy_pas" in {path}:5' in out.stderr
    assert f"fastgw: configuration file {path} test failed" in out.stderr


def test_dump_and_g_flag(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "fastgw.conf").write_text("events {}\nhttp { include extra.conf; }\n")
    (conf / "extra.conf").write_text("server { listen 127.0.0.1:1; }\n")
    out = run_cli("-p", str(tmp_path), "-T", "-g", "worker_processes 3;")
    assert out.returncode == 0
    assert f"# configuration file {conf / 'fastgw.conf'}:" in out.stdout
    assert f"# configuration file {conf / 'extra.conf'}:" in out.stdout
    assert "server { listen 127.0.0.1:1; }" in out.stdout
    out = run_cli("-p", str(tmp_path), "-t", "-g", "worker_processes x;")
    assert out.returncode == 1
    assert "in command line" in out.stderr and "in command line:" not in out.stderr


def test_start_with_bad_config_fails_with_file_and_line(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "fastgw.conf").write_text("events {}\nhttp {\n  server { listen 127.0.0.1:1 }\n}\n")
    out = run_cli("-p", str(tmp_path))
    assert out.returncode == 1
    assert f'fastgw: [emerg] unexpected "}}" in {conf / "fastgw.conf"}:3' in out.stderr
    assert not (tmp_path / "logs" / "fastgw.pid").exists()


def test_version_flags():
    out = run_cli("-v")
    assert out.returncode == 0 and out.stderr.startswith("fastgw version: fastgw/")
    out = run_cli("-V")
    assert out.returncode == 0
    assert "compiled: balancer, counters, http, limits, pool, proxy, queue, router" in out.stderr
    assert "uvloop" in out.stderr and "llhttp 9.4.3 (vendored" in out.stderr


def test_quit_refuses_new_connections_at_once(gateway, backend):
    import socket as _socket
    gw = gateway(CONF.format(workers=1, backend=backend))
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", get(gw.port, "/?latency=1500")))
    t.start()
    time.sleep(0.5)
    gw.kill(signal.SIGQUIT)
    time.sleep(0.3)
    t0 = time.monotonic()
    with pytest.raises(OSError):
        with _socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            if not s.recv(100):
                raise ConnectionResetError("closed without an answer")
    assert time.monotonic() - t0 < 0.5
    t.join(10)
    assert result["r"][0] == 200


def test_wildcard_and_specific_listen_on_one_port(gateway):
    port = free_port()
    gw = gateway(f"""
        events {{ }}
        error_log logs/error.log notice;
        http {{
            server {{ listen {port}; location / {{ return 200 "wildcard"; }} }}
            server {{ listen 127.0.0.1:{port}; location / {{ return 200 "loopback"; }} }}
        }}""", port=port)
    assert get(port)[1] == b"loopback"


def test_unwritable_log_is_an_emerg_at_test_and_start(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "fastgw.conf").write_text(
        "events {}\nhttp { access_log /proc/no/such.log; server { listen 127.0.0.1:1; } }\n")
    for args in (("-t",), ()):
        out = run_cli("-p", str(tmp_path), *args)
        assert out.returncode == 1
        assert 'fastgw: [emerg] open() "/proc/no/such.log" failed (2: No such file or directory)' in out.stderr
        assert "Traceback" not in out.stderr
