"""Active health checks: ``health_check`` in an upstream that has a ``zone``.

One worker (slot 0 of the running generation) checks every peer of such an
upstream each ``interval``: it connects, sends ``GET uri HTTP/1.1`` with
``Connection: close`` and reads the status line. A check fails when the
connection is refused or reset, when no status line arrives within the
interval (at most 5 seconds), or when the status is outside ``match``. The
verdict lives in the zone (fastgw._core.balancer.Peer.health_report), so every
worker's balancer skips a peer that failed ``fails`` checks in a row until it
passes ``passes`` in a row.

This is the cold path: one small request per peer and interval, written as
plain asyncio.

NGINX Plus differs in form: its ``health_check`` sits in a location (so that
the check uses that location's proxy settings) and ``match=NAME`` names a
``match {}`` block. fastgw's sits in the upstream and ``match`` is a status
range; the checks use the peer's address as Host.
"""

import asyncio

# Longest wait for a check's connection and status line, seconds.
MAX_CHECK_TIME = 5.0


async def probe(host, port, uri, timeout, match):
    """One check of ``host:port``: ``(ok, reason)``; ``timeout`` in seconds, ``match`` an
    inclusive ``(low, high)`` status range. Never raises for network errors."""
    conn = []
    try:
        line = await asyncio.wait_for(_status_line(host, port, uri, conn), timeout)
    except asyncio.TimeoutError:
        return False, f"timed out after {timeout:g}s"
    except OSError as exc:
        return False, f"{exc.strerror or exc} ({exc.errno})" if exc.errno else str(exc)
    except (ValueError, asyncio.IncompleteReadError) as exc:
        # A status line longer than the stream's 64 KiB limit, or a broken one.
        return False, f"invalid response ({exc.__class__.__name__})"
    finally:
        for writer in conn:
            writer.close()
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        return False, "no valid status line" if line else "connection closed without a response"
    status = int(parts[1])
    if match[0] <= status <= match[1]:
        return True, f"status {status}"
    return False, f"status {status} outside {match[0]}-{match[1]}"


async def _status_line(host, port, uri, conn):
    reader, writer = await asyncio.open_connection(host, port)
    conn.append(writer)
    hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    writer.write(f"GET {uri} HTTP/1.1\r\nHost: {hostport}\r\n"
                 f"User-Agent: fastgw-health-check\r\nConnection: close\r\n\r\n"
                 .encode("latin-1"))
    return await reader.readline()


class HealthChecks:
    """The checker of one worker: a task per checked upstream.

    ``pools``: upstream name -> UpstreamPool (its balancer's peers carry the
    zone cells); ``upstreams``: name -> fastgw.config.model.Upstream;
    ``error_log``: where state changes are logged (warn when a peer goes out,
    notice when it comes back).
    """

    def __init__(self, loop, upstreams, pools, error_log):
        self.loop = loop
        self.upstreams = upstreams
        self.pools = pools
        self.error_log = error_log
        self.tasks = []

    def start(self):
        """Start checking; forget the verdicts of zoned upstreams that no longer check
        (a reload that removed ``health_check`` must not leave peers out for ever)."""
        for name, up in self.upstreams.items():
            pool = self.pools[name]
            if up.health_check is None:
                if up.zone:
                    for peer in pool.balancer.peers:
                        peer.clear_health()
                continue
            self.tasks.append(self.loop.create_task(self._run(name, pool, up.health_check)))

    def stop(self):
        """Cancel the checks (the worker is stopping)."""
        for task in self.tasks:
            task.cancel()
        self.tasks = []

    async def _run(self, name, pool, spec):
        timeout = min(spec.interval, MAX_CHECK_TIME)
        peers = [p for p in pool.balancer.peers if not p.down]
        while True:
            started = self.loop.time()
            results = await asyncio.gather(*(self._check(name, peer, spec, timeout)
                                             for peer in peers), return_exceptions=True)
            for peer, result in zip(peers, results):
                # A bug must not end the checks of the whole upstream: count it as a
                # failed check and say so.
                if isinstance(result, Exception):
                    peer.health_report(False, spec.fails, spec.passes)
                    self.error_log.log("alert", f'health check of peer {peer.address} of '
                                                f'upstream "{name}" failed: {result!r}')
            await asyncio.sleep(max(0.0, spec.interval - (self.loop.time() - started)))

    async def _check(self, name, peer, spec, timeout):
        ok, reason = await probe(peer.host, peer.port, spec.uri, timeout, spec.match)
        change = peer.health_report(ok, spec.fails, spec.passes)
        if change == "down" and self.error_log.enabled("warn"):
            self.error_log.log("warn", f'peer {peer.address} of upstream "{name}" is unhealthy: '
                                       f'{reason} (GET {spec.uri}, {spec.fails} failed check(s) '
                                       f'in a row)')
        elif change == "up" and self.error_log.enabled("notice"):
            self.error_log.log("notice", f'peer {peer.address} of upstream "{name}" is healthy '
                                         f'again ({spec.passes} passed check(s) in a row)')
