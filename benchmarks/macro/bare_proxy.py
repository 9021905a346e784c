"""The floor under fastgw's CPU per request: a bare uvloop + httptools reverse proxy.

    python benchmarks/macro/bare_proxy.py LISTEN_PORT UPSTREAM_PORT

What the issue's reference table calls "a 60-line uvloop + httptools proxy, no
features": one process, uvloop, each client connection parsed by httptools and
paired with its own keep-alive upstream connection; a request goes upstream as
its method, URL and headers (no rewriting beyond that), the response's bytes are
relayed as they arrive, and its end is found by a second httptools parser. No
routing, limits, timeouts, logging, pipelining or error handling: bench.py runs
it as the target ``bare`` to show what uvloop and httptools alone cost per
request, next to fastgw and nginx in the same run. It is a measuring stick,
not a proxy to use.
"""

import asyncio
import sys

import httptools
import uvloop


class Upstream(asyncio.Protocol):
    """The client's own upstream connection: relays response bytes to the client."""

    def __init__(self, client):
        self.client = client
        self.parser = httptools.HttpResponseParser(self)
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.client.upstream_ready()

    def data_received(self, data):
        self.client.transport.write(data)
        self.parser.feed_data(data)

    def on_message_complete(self):
        self.client.response_done()

    def connection_lost(self, exc):
        self.client.transport.close()


class Client(asyncio.Protocol):
    """One client connection: parse a request, send it on, wait for its response."""

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.parser = httptools.HttpRequestParser(self)
        self.upstream = None
        self.waiting = None
        self.transport = None
        self.url = b""
        self.headers = []

    def connection_made(self, transport):
        self.transport = transport
        self.upstream = Upstream(self)
        asyncio.get_running_loop().create_task(asyncio.get_running_loop().create_connection(
            lambda: self.upstream, "127.0.0.1", self.upstream_port))

    def data_received(self, data):
        self.parser.feed_data(data)

    def on_url(self, url):
        self.url = url

    def on_header(self, name, value):
        if name.lower() != b"host":
            self.headers.append(b"%s: %s\r\n" % (name, value))

    def on_message_complete(self):
        head = (self.parser.get_method() + b" " + self.url + b" HTTP/1.1\r\nHost: upstream\r\n"
                + b"".join(self.headers) + b"\r\n")
        self.headers = []
        if self.upstream.transport is None:
            self.waiting = head
        else:
            self.upstream.transport.write(head)

    def upstream_ready(self):
        if self.waiting is not None:
            self.upstream.transport.write(self.waiting)
            self.waiting = None

    def response_done(self):
        pass

    def connection_lost(self, exc):
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()


async def serve(port, upstream_port):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(upstream_port), "127.0.0.1", port,
                                      backlog=4096, reuse_port=True)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.install()
    asyncio.run(serve(int(sys.argv[1]), int(sys.argv[2])))
