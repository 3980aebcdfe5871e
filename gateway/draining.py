"""Leaving a load balancer's rotation on SIGTERM before the listening socket closes.

Behind a balancer, a process that stopped listening at once would refuse the connections the
balancer still sends it until its health check notices. So with ``drain_s`` set, SIGTERM first
marks the process *draining* for ``drain_s`` seconds: ``/readyz`` answers 503 ``draining`` (the
balancer's check takes the host out of rotation) while every request still gets its answer, each
with ``Connection: close`` (no kept-alive connection is left for the balancer to reuse just as it
closes). Only then does the process stop listening and finish what is in flight
(``shutdown_timeout_s``), as it does at once when ``drain_s`` is 0.
"""

from __future__ import annotations

from aiohttp import web

__all__ = ["DRAINING", "Drain", "setup"]


class Drain:
    """Whether this process has been told to stop (SIGTERM) and is leaving the rotation."""

    __slots__ = ("started",)

    def __init__(self) -> None:
        self.started = False

    def begin(self) -> None:
        """From now on ``/readyz`` answers 503 and every response closes its connection."""
        self.started = True


DRAINING: web.AppKey[Drain] = web.AppKey("draining", Drain)


async def _close_while_draining(request: web.Request, response: web.StreamResponse) -> None:
    if request.app[DRAINING].started:
        response.force_close()
        response.headers["Connection"] = "close"


def setup(app: web.Application, drain_s: float) -> Drain:
    """Give ``app`` its drain state; with a drain window, responses close their connections once it starts."""
    drain = app[DRAINING] = Drain()
    if drain_s > 0:  # a signal handler per response costs only where a balancer needs it
        app.on_response_prepare.append(_close_while_draining)
    return drain
