"""limit_req across gateway instances: the bucket of a zone lives in Redis.

``limit_req_zone KEY zone=NAME:SIZE rate=R redis=HOST:PORT [redis_timeout=T]
[redis_fail=open|closed]``: every check runs one server-side Lua script (EVALSHA)
that applies nginx's leaky bucket (ngx_http_limit_req_lookup: excess in
milli-requests, the same clock-step rule) to a hash in Redis, with Redis's own
clock (TIME), so that any number of fastgw instances share one limit exactly:
the script runs atomically, each request is charged once.

Each worker has its own connection pool (redis-py's asyncio client, made in the
worker after fork); a check never blocks the loop. When Redis does not answer
within ``redis_timeout`` (default 100ms) or the connection fails, the zone falls
back to its local shared-memory table (``redis_fail=open``, the default: the
limit then holds per instance) or the request gets 503 (``closed``); either way
the error log says so at most once every 10 seconds per zone and worker.

A key's hash expires once its bucket would have drained, plus a minute.
"""

import asyncio

from fastgw.observe.error_log import Throttle

# KEYS[1] the bucket; ARGV: rate (milli-requests/s), burst (milli-requests).
# Returns {busy (0|1), excess}.
SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'e', 'l')
local excess = 0
local last = now
if state[1] then
    local e = tonumber(state[1])
    local l = tonumber(state[2])
    local ms = now - l
    if ms < -60000 then ms = 1 elseif ms < 0 then ms = 0 end
    excess = e - math.floor(rate * ms / 1000) + 1000
    if excess < 0 then excess = 0 end
    if excess > burst then return {1, excess} end
    if ms == 0 then last = l end
end
redis.call('HSET', KEYS[1], 'e', excess, 'l', last)
redis.call('PEXPIRE', KEYS[1], math.floor((excess + 1000) * 1000 / rate) + 60000)
return {0, excess}
"""

FAILURE_LOG_INTERVAL = 10.0


class RedisBucket:
    """The Redis side of one limit_req zone in one worker.

    ``check(key, rate, burst)`` returns ``(busy, excess)`` (excess in
    milli-requests), or None when Redis failed or was too slow; the caller
    then applies ``fail_open``.
    """

    def __init__(self, zone, host, port, timeout, fail_open, error_log):
        self.zone = zone
        self.host, self.port = host, port
        self.timeout = timeout
        self.fail_open = fail_open
        self.error_log = error_log
        self.prefix = b"fastgw:limit_req:" + zone.encode() + b":"
        self.throttle = Throttle(FAILURE_LOG_INTERVAL)
        self._client = None
        self._script = None

    def _connect(self):
        import redis.asyncio as aioredis

        self._client = aioredis.Redis(host=self.host, port=self.port,
                                      socket_timeout=self.timeout,
                                      socket_connect_timeout=self.timeout,
                                      max_connections=64)
        self._script = self._client.register_script(SCRIPT)

    async def check(self, key, rate, burst):
        if self._client is None:
            self._connect()
        try:
            busy, excess = await asyncio.wait_for(
                self._script(keys=[self.prefix + key], args=[rate, burst]), self.timeout)
            return bool(busy), int(excess)
        except Exception as exc:  # noqa: BLE001 - any failure means "Redis did not answer"
            self._failed(exc)
            return None

    def _failed(self, exc):
        loop = asyncio.get_running_loop()
        write, skipped = self.throttle.allow(loop.time())
        if write and self.error_log.enabled("error"):
            what = "using the local zone" if self.fail_open else "rejecting requests (503)"
            more = f" ({skipped} more failures)" if skipped else ""
            reason = type(exc).__name__ + (f": {exc}" if str(exc) else "")
            self.error_log.log("error", f'limit_req zone "{self.zone}": redis {self.host}:'
                                        f"{self.port} failed ({reason}), {what}{more}")

    async def close(self):
        if self._client is not None:
            await self._client.aclose()
