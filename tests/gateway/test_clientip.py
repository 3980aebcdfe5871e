"""Client addresses: X-Forwarded-For is believed only from trusted proxies."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from gateway.clientip import ClientIp

pytestmark = pytest.mark.unit


def request_from(peer: str, forwarded: str | None = None) -> object:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    request = make_mocked_request("GET", "/", headers=headers)
    return request.clone(remote=peer)


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded", "expected"),
    [
        ((), "203.0.113.9", "1.2.3.4", "203.0.113.9"),  # nobody trusted: the header is ignored
        (("10.0.0.0/8",), "203.0.113.9", "1.2.3.4", "203.0.113.9"),  # untrusted peer forges the header
        (("10.0.0.0/8",), "10.1.2.3", "198.51.100.7", "198.51.100.7"),  # proxy says who the client is
        (("10.0.0.0/8",), "10.1.2.3", "6.6.6.6, 198.51.100.7", "198.51.100.7"),  # client-sent prefix ignored
        (("10.0.0.0/8",), "10.1.2.3", "198.51.100.7, 10.9.9.9", "198.51.100.7"),  # chain of trusted proxies
        (("10.0.0.0/8",), "10.1.2.3", "not-an-ip", "10.1.2.3"),  # garbage: fall back to the peer
        (("10.0.0.0/8",), "10.1.2.3", None, "10.1.2.3"),
        (("::1",), "::1", "2001:db8::5", "2001:db8::5"),
    ],
)
def test_client_address(trusted: tuple[str, ...], peer: str, forwarded: str | None, expected: str) -> None:
    assert ClientIp(trusted).of(request_from(peer, forwarded)) == expected  # type: ignore[arg-type]


def test_every_x_forwarded_for_line_counts_in_order() -> None:
    """A proxy that adds its hop as a line of its own (HAProxy) does not let the client's first line speak."""
    from multidict import CIMultiDict

    headers = CIMultiDict([("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "198.51.100.7")])
    request = make_mocked_request("GET", "/", headers=headers).clone(remote="10.1.2.3")
    assert ClientIp(("10.0.0.0/8",)).of(request) == "198.51.100.7"
    assert ClientIp(()).of(request) == "10.1.2.3"
