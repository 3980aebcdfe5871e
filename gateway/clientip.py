"""The client's address: the socket peer, or X-Forwarded-For only when the peer is a trusted proxy."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

from aiohttp import web

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientIp:
    """Resolves client addresses for one set of trusted proxies."""

    def __init__(self, trusted: Iterable[str]) -> None:
        self._trusted: tuple[IpNetwork, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in trusted)
        self.is_trusted = lru_cache(maxsize=4096)(self._is_trusted)

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)

    def of(self, request: web.Request) -> str:
        """The address rate limits key on."""
        peer = request.remote or "unknown"
        if not self._trusted or not self.is_trusted(peer):
            return peer
        # A client's own X-Forwarded-For line comes first and a proxy may add its hop as a second line
        # (HAProxy's option forwardfor does): the lines in order are one list.
        forwarded = ",".join(request.headers.getall("X-Forwarded-For", ()))
        if not forwarded:
            return peer
        # Walk from the nearest hop outwards; the first address no trusted proxy vouches for is the client.
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self.is_trusted(hop):
                return hop if _is_ip(hop) else peer
        return hops[0] if hops and _is_ip(hops[0]) else peer


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
