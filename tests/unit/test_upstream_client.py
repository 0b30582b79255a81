"""The upstream HTTP/1.1 client (gateway.proxy.upstream) against a scripted raw TCP server:
what it writes, how it frames and reads responses, when it reuses a connection and when it
drops one, and how failures and timeouts reach the proxy (UpstreamFailure only)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trustme

from gateway.proxy.upstream import UpstreamClient, UpstreamFailure
from policies.schema import UpstreamSpec

SPEC = UpstreamSpec(base_url="http://127.0.0.1")
OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"

# A handler gets the request head + body it read (up to the blank line and Content-Length)
# and the stream writer; it answers, or not.
Handler = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A raw HTTP/1.1 server: `handler` answers each request; `connections` counts the TCP
    connections accepted, `requests` keeps each request's bytes."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed = asyncio.Event()  # a connection ended on the server side
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + (await reader.readexactly(length) if length else b"")
                self.requests.append(request)
                await self.handler(request, writer)
                if writer.is_closing():
                    return
        finally:
            writer.close()
            self.closed.set()


def answer(response: bytes, *, close: bool = False) -> Handler:
    """A handler that writes `response` (and then closes the connection when `close`)."""
    async def handler(_request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(response)
        await writer.drain()
        if close:
            writer.close()
    return handler


@contextlib.asynccontextmanager
async def client() -> AsyncIterator[UpstreamClient]:
    c = UpstreamClient()
    try:
        yield c
    finally:
        await c.close()


async def test_requests_are_framed_and_a_kept_alive_connection_is_reused() -> None:
    async with Server(answer(OK)) as server, client() as c:
        for _ in range(3):
            resp = await c.send("POST", server.url + "/v1/chat?x=1",
                                [("content-type", "application/json"), ("x-a", "b")],
                                b'{"a":1}', SPEC)
            assert (resp.status, resp.content_type) == (200, "application/json")
            assert ("content-length", "2") in resp.headers
            assert await resp.read() == b"{}"
        assert server.connections == 1
        first = server.requests[0]
        assert first.startswith(b"POST /v1/chat?x=1 HTTP/1.1\r\n")
        port = server.url.rsplit(":", 1)[1]
        for line in (b"content-type: application/json", b"x-a: b", b"accept: */*",
                     b"host: 127.0.0.1:" + port.encode(), b"content-length: 7"):
            assert line + b"\r\n" in first
        assert first.endswith(b'\r\n\r\n{"a":1}')


async def test_the_callers_framing_headers_are_replaced_and_its_host_and_accept_kept() -> None:
    async with Server(answer(OK)) as server, client() as c:
        resp = await c.send("POST", server.url + "/", [
            ("Host", "upstream.example"), ("Accept", "text/event-stream"),
            ("Content-Length", "999"), ("Transfer-Encoding", "chunked")], b"abc", SPEC)
        await resp.read()
        head = server.requests[0].lower()
        assert head.count(b"host:") == 1 and b"host: upstream.example\r\n" in head
        assert head.count(b"accept:") == 1 and b"accept: text/event-stream\r\n" in head
        assert b"content-length: 3\r\n" in head and b"transfer-encoding" not in head


async def test_a_header_value_with_a_line_break_is_refused() -> None:
    async with Server(answer(OK)) as server, client() as c:
        with pytest.raises(ValueError):
            await c.send("POST", server.url + "/", [("x-a", "b\r\nx-evil: 1")], b"", SPEC)
        assert server.requests == []


async def test_a_chunked_body_is_decoded_read_whole_or_as_it_arrives() -> None:
    chunked = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
               b"transfer-encoding: chunked\r\n\r\n"
               b"6\r\ndata: \r\n3\r\n1\n\n\r\n0\r\n\r\n")
    async with Server(answer(chunked)) as server, client() as c:
        resp = await c.send("POST", server.url + "/", [], b"{}", SPEC)
        assert resp.content_type == "text/event-stream"
        assert await resp.read() == b"data: 1\n\n"
        resp = await c.send("POST", server.url + "/", [], b"{}", SPEC)
        assert b"".join([chunk async for chunk in resp.iter_chunks()]) == b"data: 1\n\n"
        assert server.connections == 1


async def test_a_chunked_bodys_trailer_is_not_taken_for_headers() -> None:
    trailer = (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
               b"2\r\n{}\r\n0\r\nx-trailer: 1\r\n\r\n")
    async with Server(answer(trailer)) as server, client() as c:
        resp = await c.send("POST", server.url + "/", [], b"{}", SPEC)
        assert await resp.read() == b"{}"
        assert resp.headers == [("transfer-encoding", "chunked")]


async def test_a_streamed_body_is_handed_over_before_it_ends() -> None:
    more = asyncio.Event()

    async def stream(_request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\none\r\n")
        await more.wait()
        writer.write(b"3\r\ntwo\r\n0\r\n\r\n")

    async with Server(stream) as server, client() as c:
        resp = await c.send("POST", server.url + "/", [], b"{}", SPEC)
        chunks = resp.iter_chunks()
        assert await chunks.__anext__() == b"one"
        more.set()
        assert [chunk async for chunk in chunks] == [b"two"]


async def test_a_body_ended_by_the_connection_is_whole_and_the_connection_not_reused() -> None:
    until_close = answer(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it",
                         close=True)
    async with Server(until_close) as server, client() as c:
        for _ in range(2):
            resp = await c.send("GET", server.url + "/", [], b"", SPEC)
            assert await resp.read() == b"all of it"
        assert server.connections == 2
        assert b"content-length" not in server.requests[0]  # a GET without a body


async def test_connection_close_from_the_upstream_is_honoured() -> None:
    closing = OK.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n")
    async with Server(answer(closing)) as server, client() as c:
        for _ in range(2):
            resp = await c.send("POST", server.url + "/", [], b"{}", SPEC)
            assert await resp.read() == b"{}"
        assert server.connections == 2


async def test_an_abandoned_response_drops_its_connection() -> None:
    async def half(_request: bytes, writer: asyncio.StreamWriter) -> None:
        if len(server.requests) == 1:  # the rest of this body never comes
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        else:
            writer.write(OK)
        await writer.drain()

    async with Server(half) as server, client() as c:
        resp = await c.send("POST", server.url + "/", [], b"{}", SPEC)
        resp.close()
        resp = await c.send("POST", server.url + "/", [], b"{}", SPEC)
        assert await resp.read() == b"{}"
        assert server.connections == 2


async def test_a_cut_body_is_an_upstream_failure() -> None:
    cut = answer(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", close=True)
    async with Server(cut) as server, client() as c:
        resp = await c.send("POST", server.url + "/", [], b"{}", SPEC)
        with pytest.raises(UpstreamFailure) as err:
            await resp.read()
        assert not err.value.timeout


async def test_no_answer_within_the_read_timeout_is_a_timeout() -> None:
    never = asyncio.Event()

    async def silent(_request: bytes, _writer: asyncio.StreamWriter) -> None:
        await never.wait()

    spec = UpstreamSpec(base_url="http://127.0.0.1", read_timeout_s=0.01)
    async with Server(silent) as server, client() as c:
        with pytest.raises(UpstreamFailure) as err:
            await c.send("POST", server.url + "/", [], b"{}", spec)
        assert err.value.timeout
        never.set()


async def test_an_unreachable_upstream_is_a_connection_failure() -> None:
    async with Server(answer(OK)) as server:
        url = server.url
    async with client() as c:  # the server is gone: its port refuses connections
        with pytest.raises(UpstreamFailure) as err:
            await c.send("POST", url + "/", [], b"{}", SPEC)
        assert not err.value.timeout


async def test_a_pooled_connection_the_upstream_closed_is_not_used() -> None:
    async def once(_request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(OK)
        await writer.drain()
        if len(server.requests) == 1:
            writer.close()  # closes while the client keeps the connection pooled

    async with Server(once) as server, client() as c:
        resp = await c.send("POST", server.url + "/", [], b"{}", SPEC)
        assert await resp.read() == b"{}"
        await server.closed.wait()
        for _ in range(100):  # let the loop deliver the close to the pooled connection
            if all(conn.lost for idle in c._idle.values() for conn in idle):
                break
            await asyncio.sleep(0)
        resp = await c.send("POST", server.url + "/", [], b"{}", SPEC)
        assert await resp.read() == b"{}"
        assert server.connections == 2


async def test_a_cancelled_send_drops_its_connection() -> None:
    asked, never = asyncio.Event(), asyncio.Event()

    async def slow(_request: bytes, writer: asyncio.StreamWriter) -> None:
        if len(server.requests) == 1:
            asked.set()
            await never.wait()
        writer.write(OK)
        await writer.drain()

    async with Server(slow) as server, client() as c:
        task = asyncio.ensure_future(c.send("POST", server.url + "/", [], b"{}", SPEC))
        await asked.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        never.set()
        resp = await c.send("POST", server.url + "/", [], b"{}", SPEC)
        assert server.connections == 2  # not the cancelled call's connection
        resp.close()


async def test_bytes_after_the_response_keep_it_whole_but_drop_the_connection() -> None:
    extra = OK + b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nX"
    async with Server(answer(extra)) as server, client() as c:
        resp = await c.send("POST", server.url + "/", [], b"{}", SPEC)
        assert await resp.read() == b"{}"
        assert len(resp.headers) == 2
        resp = await c.send("POST", server.url + "/", [], b"{}", SPEC)
        await resp.read()
        assert server.connections == 2


async def test_https_upstreams_are_reached_over_verified_tls() -> None:
    ca = trustme.CA()  # a throwaway certificate authority, trusted only where configured
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_tls)
    requests: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                requests.append(await reader.readuntil(b"\r\n\r\n{}"))
                writer.write(OK)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_tls)
    port = server.sockets[0].getsockname()[1]
    url = f"https://localhost:{port}/v1/x"
    try:
        trusted = ssl.create_default_context()
        ca.configure_trust(trusted)
        trusting = UpstreamClient(ssl_context=trusted)
        for _ in range(2):
            resp = await trusting.send("POST", url, [], b"{}", SPEC)
            assert (resp.status, await resp.read()) == (200, b"{}")
        await trusting.close()
        assert len(requests) == 2 and f"host: localhost:{port}\r\n".encode() in requests[0]
        default = UpstreamClient()  # the system's trust store does not know this certificate
        with pytest.raises(UpstreamFailure) as err:
            await default.send("POST", url, [], b"{}", SPEC)
        assert not err.value.timeout
        await default.close()
    finally:
        server.close()
