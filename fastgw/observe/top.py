"""``fastgw top``: a live terminal view of a running instance, read from its ``metrics`` page.

What an operator opens first during an incident: requests per second and the
status mix, p50/p99 request time, per upstream its queue depth, requests in
flight and peers' state, rejections by reason, and which workers are alive.
Rates and percentiles are computed between two scrapes ``interval`` seconds
apart (percentiles from the ``fastgw_upstream_request_seconds`` histogram, as
Prometheus's histogram_quantile does: linear within the bucket).

The page is found in the configuration (the first ``location`` with
``metrics``, on its server's first ``listen``) or given with ``--url``.
"""

import time
import urllib.request
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families


class Sample:
    """One scrape: ``values[name]`` is a list of ``(labels dict, value)``; ``at`` in seconds."""

    def __init__(self, text, at):
        self.at = at
        self.values = defaultdict(list)
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self.values[s.name].append((s.labels, s.value))

    def total(self, name, **match):
        """Sum of ``name`` over samples whose labels include ``match``."""
        return sum(v for labels, v in self.values.get(name, ())
                   if all(labels.get(k) == x for k, x in match.items()))

    def by(self, name, key, **match):
        """``{label value: summed value}`` of ``name`` grouped by label ``key``."""
        out = defaultdict(float)
        for labels, v in self.values.get(name, ()):
            if all(labels.get(k) == x for k, x in match.items()):
                out[labels.get(key)] += v
        return dict(out)


def scrape(url, timeout=5.0, host=None):
    """Fetch and parse the metrics page at ``url``, sent with ``Host: host`` when given.

    Raises OSError when unreachable, ValueError when the page is not Prometheus text
    with fastgw's metrics.
    """
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        text = resp.read().decode("utf-8", "replace")
    try:
        sample = Sample(text, time.monotonic())
    except ValueError as exc:
        raise ValueError(f"{url} is not fastgw's metrics page ({exc})") from None
    if "fastgw_worker_up" not in sample.values:
        raise ValueError(f"{url} is not fastgw's metrics page")
    return sample


def quantile(q, buckets):
    """``q`` (0..1) of a cumulative histogram ``[(upper bound, count)]`` sorted by bound;
    None without observations. Linear within a bucket (Prometheus's histogram_quantile)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def _buckets(sample, name, before=None):
    """Cumulative buckets of histogram ``name`` summed over upstreams, minus ``before``'s."""
    acc = defaultdict(float)
    for labels, v in sample.values.get(name + "_bucket", ()):
        acc[float(labels["le"])] += v
    if before is not None:
        for labels, v in before.values.get(name + "_bucket", ()):
            acc[float(labels["le"])] -= v
    return sorted(acc.items())


def summary(before, after):
    """The figures ``top`` shows, from two scrapes (``before`` may equal ``after``: rates 0).

    Returns a dict: ``rps``, ``requests`` (total), ``status`` ({"2xx": n, ...} totals),
    ``status_rate`` (per second), ``p50``/``p99`` (seconds or None, over the interval or,
    with no traffic in it, since start), ``rejected`` ({reason: total}), ``upstreams``
    ({name: {"queue", "active", "peers": {addr: (state, in flight)}}}), ``workers``
    ({slot: (up, connections, req/s)}), ``connections`` (active).
    """
    span = max(after.at - before.at, 1e-9)
    status, status_rate = defaultdict(float), defaultdict(float)
    for code, n in after.by("fastgw_requests_total", "status").items():
        cls = f"{code[0]}xx"
        status[cls] += n
        status_rate[cls] += (n - before.total("fastgw_requests_total", status=code)) / span
    requests = sum(status.values())
    rps = sum(status_rate.values()) if after is not before else 0.0
    hist = _buckets(after, "fastgw_upstream_request_seconds", before)
    if not hist or hist[-1][1] <= 0:
        hist = _buckets(after, "fastgw_upstream_request_seconds")
    upstreams = {}
    for name, depth in after.by("fastgw_upstream_queue_depth", "upstream").items():
        peers = {}
        for peer, n in after.by("fastgw_upstream_active", "peer", upstream=name).items():
            state = "-"
            for labels, v in after.values.get("fastgw_upstream_peer_state", ()):
                if labels.get("upstream") == name and labels.get("peer") == peer and v == 1:
                    state = labels["state"]
            peers[peer] = (state, int(n))
        upstreams[name] = {"queue": int(depth), "active": sum(n for _, n in peers.values()),
                           "peers": peers}
    return {
        "rps": rps, "requests": int(requests), "status": {k: int(v) for k, v in status.items()},
        "status_rate": dict(status_rate),
        "p50": quantile(0.5, hist), "p99": quantile(0.99, hist),
        "rejected": {k: int(v) for k, v in
                     after.by("fastgw_requests_rejected_total", "reason").items()},
        "upstreams": upstreams,
        "workers": {k: (int(v), int(after.total("fastgw_worker_connections", worker=k)),
                        (after.total("fastgw_worker_requests_total", worker=k)
                         - before.total("fastgw_worker_requests_total", worker=k)) / span)
                    for k, v in after.by("fastgw_worker_up", "worker").items()},
        "connections": int(after.total("fastgw_connections_active")),
    }


def _ms(seconds):
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def render(s, url):
    """The rich renderable for a summary ``s``."""
    from rich.console import Group
    from rich.table import Table

    head = Table.grid(padding=(0, 3))
    head.add_row(f"[b]fastgw top[/b]  {url}",
                 f"[b]{s['rps']:.1f}[/b] req/s", f"{s['requests']} requests",
                 f"{s['connections']} connections", f"p50 {_ms(s['p50'])}",
                 f"p99 {_ms(s['p99'])}")
    mix = Table(title="status", title_justify="left", expand=False)
    for col in ("class", "total", "per s"):
        mix.add_column(col, justify="right")
    for cls in sorted(s["status"]):
        mix.add_row(cls, str(s["status"][cls]), f"{s['status_rate'].get(cls, 0.0):.1f}")
    rej = Table(title="rejections", title_justify="left")
    rej.add_column("reason")
    rej.add_column("total", justify="right")
    for reason, n in sorted(s["rejected"].items()):
        rej.add_row(reason, str(n))
    ups = Table(title="upstreams", title_justify="left")
    for col in ("upstream", "queue", "peer", "state", "in flight"):
        ups.add_column(col)
    for name, u in sorted(s["upstreams"].items()):
        first = True
        for peer, (state, n) in u["peers"].items():
            style = {"up": "green", "failed": "red", "unhealthy": "red", "down": "dim"}.get(state, "")
            ups.add_row(name if first else "", str(u["queue"]) if first else "", peer,
                        f"[{style}]{state}[/{style}]" if style else state, str(n))
            first = False
    workers = Table(title="workers", title_justify="left")
    for col in ("worker", "up", "connections", "req/s"):
        workers.add_column(col)
    for slot, (up, conns, rate) in sorted(s["workers"].items(), key=lambda kv: int(kv[0])):
        workers.add_row(slot, "[green]yes[/green]" if up else "[red]no[/red]", str(conns),
                        f"{rate:.1f}")
    return Group(head, mix, rej, ups, workers)


def run(url, interval=1.0, once=False, width=None, host=None):
    """Show the view: refresh every ``interval`` seconds until ^C, or print it once
    (plain text, two scrapes ``interval`` apart) with ``once``; ``host``: the Host header
    the page needs (a name-based server). Returns an exit status."""
    from rich.console import Console
    from rich.live import Live

    console = Console(width=width) if not once else Console(width=width or 120,
                                                            force_terminal=False,
                                                            color_system=None)
    before = scrape(url, host=host)
    if once:
        time.sleep(interval)
        console.print(render(summary(before, scrape(url, host=host)), url))
        return 0
    with Live(render(summary(before, before), url), console=console,
              refresh_per_second=4) as live:
        try:
            while True:
                time.sleep(interval)
                after = scrape(url, host=host)
                live.update(render(summary(before, after), url))
                before = after
        except KeyboardInterrupt:
            return 0


def metrics_url(config):
    """``(http://HOST:PORT/PATH, Host header or None)`` of the first exact or prefix
    ``metrics`` location in ``config`` (a regex one has no single path), or None.

    The Host header is the server's first plain name, so that a name-based server is
    reached whichever server is the default one for the address.
    """
    for server in config.http.servers:
        for loc in server.locations:
            if (loc.status_page == "metrics" and server.listens
                    and loc.modifier in ("", "=", "^~") and loc.pattern.startswith("/")):
                names = [n for n in server.names if n and not n.startswith(("~", "*", "."))
                         and "*" not in n]
                listen = server.listens[0]
                host = listen.host
                if host in ("", "*", "0.0.0.0"):
                    host = "127.0.0.1"
                elif host in ("::", "[::]"):
                    host = "[::1]"
                elif ":" in host and not host.startswith("["):
                    host = f"[{host}]"
                return f"http://{host}:{listen.port}{loc.pattern}", (names[0] if names else None)
    return None
