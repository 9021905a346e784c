"""The floor under fastgw's memory per connection: a bare uvloop HTTP server.

    python benchmarks/memory/bare_uvloop.py PORT

One process, uvloop's own accept (create_server), a protocol that keeps nothing
but its transport and answers every read with a fixed keep-alive ``200 ok``. What
an idle connection costs here is what uvloop's transport (with its libuv handle)
costs, before any gateway state: idle.py measures it as the target ``uvloop``.
It is a measuring stick, not a server: it does not parse what it reads.
"""

import asyncio
import resource
import sys

import uvloop

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


class Answer(asyncio.Protocol):
    """Answers each read with RESPONSE; holds only its transport."""

    __slots__ = ("transport",)

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(RESPONSE)


async def serve(port):
    server = await asyncio.get_running_loop().create_server(Answer, "127.0.0.1", port,
                                                            backlog=4096)
    await server.serve_forever()


if __name__ == "__main__":
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    uvloop.install()
    asyncio.run(serve(int(sys.argv[1])))
