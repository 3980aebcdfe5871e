"""The HTTP edge of a 2-process gateway: malformed requests, the Server header, clients that leave."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator

import aiohttp
import orjson
import pytest
import redis

from loadtest.processes import Process, start_gateway
from tests.conftest import TEST_REDIS_URL

MALFORMED = {
    "bad request line": b"GARBAGE\r\n\r\n",
    "header without a colon": b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nNo colon here\r\n\r\n",
    "header too long": b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Long: " + b"a" * 10_000 + b"\r\n\r\n",
    "request line too long": b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: gateway\r\n\r\n",
    "two framings": (b"POST /api/v1/sessions HTTP/1.1\r\nHost: gateway\r\nContent-Length: 5\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    "bad chunk size": (b"POST /api/v1/sessions HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"),
}


@pytest.fixture(scope="module")
def gateway(pg_dsn: str) -> Iterator[Process]:
    with redis.Redis.from_url(TEST_REDIS_URL) as client:
        client.flushdb()
    process = start_gateway(pg_dsn, TEST_REDIS_URL, workers=2, EXAMGATE_LOG_LEVEL="debug")
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log()


def port_of(gateway: Process) -> int:
    return int(gateway.url.rsplit(":", 1)[1])


async def exchange(port: int, raw: bytes, timeout_s: float = 10) -> tuple[str, dict[str, str], bytes]:
    """Send ``raw`` on a fresh connection, read until the server closes it; (status line, headers, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        answer = await asyncio.wait_for(reader.read(), timeout_s)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def assert_no_server_banner(headers: dict[str, str] | aiohttp.typedefs.LooseHeaders) -> None:
    server = {k.lower(): v for k, v in dict(headers).items()}.get("server")
    assert server is None or not re.search(r"[0-9/]", server), f"Server: {server}"


async def wait_for_log(gateway: Process, needle: str, timeout_s: float = 5) -> str:
    deadline = time.monotonic() + timeout_s
    # The gateway is another process writing a log file: there is no event to wait on, so poll.
    while needle not in gateway.log() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    return gateway.log()


async def test_malformed_requests_get_the_json_error_shape(gateway: Process) -> None:
    port = port_of(gateway)
    request_ids = set()
    for case, raw in MALFORMED.items():
        status, headers, body = await exchange(port, raw)
        assert re.match(r"HTTP/1\.[01] 400 ", status), (case, status, body)  # 1.0: the request line was not read
        assert headers.get("content-type", "").startswith("application/json"), (case, headers, body)
        error = orjson.loads(body)["error"]
        assert error["code"] == "malformed_request" and error["message"], (case, error)
        assert error["details"]["reason"], (case, error)
        assert headers.get("x-request-id"), (case, headers)
        assert headers.get("connection") == "close", (case, headers)
        assert_no_server_banner(headers)
        request_ids.add(headers["x-request-id"])
    assert len(request_ids) == len(MALFORMED)
    log = await wait_for_log(gateway, list(request_ids)[-1])
    assert "Traceback" not in log, log
    for request_id in request_ids:
        lines = [line for line in log.splitlines() if request_id in line]
        assert len(lines) == 1 and "malformed request" in lines[0], (request_id, lines)


async def test_no_response_names_the_server_software(gateway: Process) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway.url + "/") as resp:
            page = await resp.text()
            assert resp.status == 200
            assert_no_server_banner(resp.headers)
        asset = re.search(r'/static/[0-9a-f]{12}/[^"\']+', page)
        assert asset, page
        requests = [("GET", "/healthz"), ("GET", "/api/v1/exams"), ("GET", asset.group(0)), ("GET", "/nowhere"),
                    ("DELETE", "/healthz"), ("GET", "/metrics"), ("GET", "/api/v1/openapi.json")]
        for method, path in requests:
            async with http.request(method, gateway.url + path) as resp:
                await resp.read()
                assert_no_server_banner(resp.headers)
        async with http.post(gateway.url + "/api/v1/sessions", data=b"{not json",
                             headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 400
            assert_no_server_banner(resp.headers)
    _, headers, _ = await exchange(port_of(gateway), MALFORMED["bad request line"])
    assert_no_server_banner(headers)


async def test_a_client_leaving_mid_request_is_not_a_store_failure(gateway: Process) -> None:
    port = port_of(gateway)
    for path in ("/api/v1/sessions", "/api/v1/accounts", "/api/v1/payments/notify/alipay"):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"POST {path} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
                     f"Content-Length: 100\r\n\r\n{{\"user".encode())
        await writer.drain()
        await asyncio.sleep(0.3)  # the request is being handled, waiting for the rest of its body
        writer.close()
        await writer.wait_closed()
    log = await wait_for_log(gateway, "/api/v1/payments/notify/alipay: client went away")
    assert "store unavailable" not in log, log
    assert log.count("client went away") >= 3, log
    assert "Traceback" not in log, log
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway.url + "/healthz") as resp:
            assert resp.status == 200
