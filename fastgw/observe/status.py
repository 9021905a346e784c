"""The ``stub_status`` and ``metrics`` pages, rendered from the shared counters.

``stub_status`` is nginx's format byte for byte (ngx_http_stub_status_module),
so existing exporters and dashboards read it unchanged. ``metrics`` is the
Prometheus text exposition (design.md §7), rendered by prometheus_client from
a collector that reads the counters of every worker at scrape time.
"""

import time

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from fastgw._core.counters import BUCKETS, REASONS

# A worker whose heartbeat is older than this (seconds) counts as down.
HEARTBEAT_STALE = 3.0


def stub_status(snapshot):
    """nginx's stub_status text (bytes) for a counters snapshot."""
    s = snapshot
    return (
        f"Active connections: {s['active']} \n"
        f"server accepts handled requests\n"
        f" {s['accepted']} {s['handled']} {s['requests']} \n"
        f"Reading: {s['reading']} Writing: {s['writing']} Waiting: {s['waiting']} \n"
    ).encode()

PEER_STATES = ("up", "failed", "unhealthy", "down")
LIMIT_OUTCOMES = {"req": ("passed", "delayed", "rejected", "delayed_dry_run", "rejected_dry_run"),
                  "conn": ("passed", "rejected", "rejected_dry_run")}


class _Collector:
    def __init__(self, stats, zones):
        self.stats = stats
        self.zones = zones

    def collect(self):
        s = self.zones.snapshot()
        g = GaugeMetricFamily("fastgw_connections_active", "Client connections open now.")
        g.add_metric([], s["active"])
        yield g
        g = GaugeMetricFamily("fastgw_connections", "Client connections by state.", labels=["state"])
        for state in ("reading", "writing", "waiting"):
            g.add_metric([state], s[state])
        yield g
        c = CounterMetricFamily("fastgw_connections_accepted", "Client connections accepted.")
        c.add_metric([], s["accepted"])
        yield c
        c = CounterMetricFamily("fastgw_connections_handled",
                                "Client connections handled (accepted minus refused).")
        c.add_metric([], s["handled"])
        yield c
        c = CounterMetricFamily("fastgw_requests", "Responses by status code.", labels=["status"])
        for code, n in sorted(s["status"].items()):
            c.add_metric([str(code)], n)
        yield c
        c = CounterMetricFamily("fastgw_requests_rejected",
                                "Requests rejected by overload control, by reason.", labels=["reason"])
        for reason in REASONS:
            c.add_metric([reason], s["rejected"][reason])
        yield c
        depth = GaugeMetricFamily("fastgw_upstream_queue_depth",
                                  "Requests waiting for an upstream peer.", labels=["upstream"])
        active = GaugeMetricFamily("fastgw_upstream_active", "Requests in flight to a peer.",
                                   labels=["upstream", "peer"])
        hists = {
            "response": HistogramMetricFamily(
                "fastgw_upstream_response_seconds", "Upstream response time, from sending the "
                "request to the end of the response (each try).", labels=["upstream"]),
            "request": HistogramMetricFamily(
                "fastgw_upstream_request_seconds", "Request time of requests proxied to the "
                "upstream, from their first byte to the end of the response.",
                labels=["upstream"]),
            "queue": HistogramMetricFamily(
                "fastgw_upstream_queue_wait_seconds", "Time requests waited in the upstream's "
                "queue (served or timed out).", labels=["upstream"]),
        }
        for name, peers, up in zip(self.zones.upstreams, self.zones.peers, s["upstreams"]):
            depth.add_metric([name], up["queue_depth"])
            for peer, n in zip(peers, up["peer_active"]):
                active.add_metric([name, peer], n)
            for kind, family in hists.items():
                h = up[kind]
                cumulative, buckets = 0, []
                for bound, n in zip(BUCKETS, h["buckets"]):
                    cumulative += n
                    buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
                family.add_metric([name], buckets, h["sum_seconds"])
        yield depth
        yield active
        yield from hists.values()
        state = GaugeMetricFamily("fastgw_upstream_peer_state",
                                  "1 for a peer's current state (up, failed: max_fails within "
                                  "fail_timeout, unhealthy: active health check, down: "
                                  "configured); upstreams with a zone only.",
                                  labels=["upstream", "peer", "state"])
        for u in self.zones.zoned:
            for peer, now in zip(self.zones.peers[u], self.zones.peer_states(u)):
                for name in PEER_STATES:
                    state.add_metric([self.zones.upstreams[u], peer, name], 1 if now == name else 0)
        yield state
        families = {
            "req": CounterMetricFamily(
                "fastgw_limit_req_requests", "limit_req outcomes by zone (counted on the zone "
                "that decided: the one that rejected or delayed most, else the last).",
                labels=["zone", "outcome"]),
            "conn": CounterMetricFamily(
                "fastgw_limit_conn_requests", "limit_conn outcomes by zone.",
                labels=["zone", "outcome"]),
        }
        for name, table in sorted(self.zones.limit_tables.items()):
            kind = self.zones.limit_specs[name].kind
            counts = table.stats()
            for outcome in LIMIT_OUTCOMES[kind]:
                families[kind].add_metric([name, outcome], counts[outcome])
        yield from families.values()
        up = GaugeMetricFamily("fastgw_worker_up", "1 while the worker slot has a live worker.",
                               labels=["worker"])
        conns = GaugeMetricFamily("fastgw_worker_connections",
                                  "Client connections open in the worker slot's worker.",
                                  labels=["worker"])
        reqs = CounterMetricFamily("fastgw_worker_requests",
                                   "Requests the worker slot's current worker has begun.",
                                   labels=["worker"])
        now_ms = time.time() * 1000
        for i, w in enumerate(s["workers"]):
            alive = w["up"] and now_ms - w["heartbeat_ms"] < HEARTBEAT_STALE * 1000
            up.add_metric([str(i)], 1 if alive else 0)
            conns.add_metric([str(i)], w.get("active", 0))
            reqs.add_metric([str(i)], w.get("requests", 0))
        yield up
        yield conns
        yield reqs


def metrics_renderer(stats, zones):
    """A function returning the Prometheus exposition (bytes) of the current counters."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(stats, zones))
    return lambda: generate_latest(registry)


PROMETHEUS_CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
