"""``python -m benchmarks.echo_server PORT``: an HTTP server that does nothing, to find wrk's ceiling.

Answers every request on a keep-alive connection with the same fixed 200. It reads no more
of a request than the blank line ending its headers (wrk's GETs have no body).
"""

from __future__ import annotations

import asyncio
import sys

import uvloop

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nContent-Type: application/json\r\n\r\n{\"ok\":true}"


class Echo(asyncio.Protocol):
    """One connection: a fixed answer per request seen."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        data = self.pending + data
        count = data.count(b"\r\n\r\n")
        self.pending = data[data.rfind(b"\r\n\r\n") + 4:] if count else data
        if count:
            self.transport.write(RESPONSE * count)  # type: ignore[attr-defined]


async def serve(port: int) -> None:
    """Serve on 127.0.0.1:``port`` until killed."""
    server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
