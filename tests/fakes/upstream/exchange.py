"""One HTTP exchange driven over raw ASGI: knobs, pacing, abrupt closes, disconnect recording."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import Receive, Scope, Send

from .anthropic import anthropic_error
from .knobs import HANG_S, interval_s, knobs_for
from .log import RequestLog
from .openai import openai_error
from .wire import JSON_TYPE, SSE_HEADERS, Json, dumps, request_id_headers

TRANSPORT_KEY = "fake_upstream.transport"
"""Scope key under which ``app.build_app`` exposes the connection's asyncio transport."""


class ServerState:
    """State shared by the app's handlers; lives on the server's event loop."""

    def __init__(
        self, requests: RequestLog, delay_ms: Callable[[], float], disconnects: RequestLog
    ) -> None:
        self.requests = requests
        self.disconnects = disconnects
        self.delay_ms = delay_ms
        self.closing = False
        self.live: set[asyncio.Event] = set()

    def shutdown(self) -> None:
        """Stop every in-flight exchange (call on the server loop)."""
        self.closing = True
        for stopped in list(self.live):
            stopped.set()


class Exchange:
    """One HTTP exchange driven over raw ASGI, with abrupt-close helpers."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, stopped: asyncio.Event) -> None:
        self.scope, self.receive, self.send = scope, receive, send
        self.stopped = stopped
        self.gone = asyncio.Event()
        self.transport: asyncio.Transport | None = scope.get(TRANSPORT_KEY)
        self.complete = False  # the whole response was sent
        self.aborted = False  # the fake itself closed or reset the connection

    @property
    def client_left(self) -> bool:
        """True when the client went away before the response was complete."""
        return self.gone.is_set() and not self.complete and not self.aborted

    async def watch_disconnect(self) -> None:
        """Set ``gone`` and ``stopped`` once uvicorn reports ``http.disconnect``.

        (uvicorn also reports it once the response is complete.)
        """
        while (await self.receive())["type"] != "http.disconnect":
            pass
        self.gone.set()
        self.stopped.set()

    async def pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` (s); False if stopped (shutdown/disconnect) meanwhile."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return not self.stopped.is_set()
        try:
            await asyncio.wait_for(self.stopped.wait(), seconds)
        except TimeoutError:
            return True
        return False

    async def start(self, status: int, headers: dict[str, str]) -> None:
        """Send the status line and headers."""
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        await self.send({"type": "http.response.start", "status": status, "headers": raw})

    async def write(self, data: bytes) -> None:
        """Send a body piece, more to follow."""
        await self.send({"type": "http.response.body", "body": data, "more_body": True})

    async def finish(self) -> None:
        """End the body."""
        self.complete = True
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})

    async def send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        """A complete JSON response."""
        data = dumps(obj)
        all_headers = {
            "content-type": JSON_TYPE,
            "content-length": str(len(data)),
            **(headers or {}),
        }
        await self.start(status, all_headers)
        self.complete = True
        await self.send({"type": "http.response.body", "body": data, "more_body": False})

    async def reset(self) -> None:
        """Abort the TCP connection with RST, discarding anything unsent."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.aborted = not self.gone.is_set()
        sock = transport.get_extra_info("socket")
        try:
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        transport.abort()
        await self._await_gone()

    async def drop(self) -> None:
        """Close the TCP connection (FIN) after flushing what was already sent."""
        if self.transport is not None and not self.transport.is_closing():
            self.aborted = not self.gone.is_set()
            self.transport.close()
        await self._await_gone()

    async def _await_gone(self, timeout_s: float = 1.0) -> None:
        """Let uvicorn notice the lost connection before the app returns (s)."""
        try:
            await asyncio.wait_for(self.gone.wait(), timeout_s)
        except TimeoutError:
            pass


Serve = Callable[["Exchange", Json, frozenset[str]], Awaitable[None]]


class RawResponse:
    """ASGI callable returned by endpoints: runs knobs, then the API handler."""

    def __init__(self, state: ServerState, serve: Serve, body: Any, style: str) -> None:
        self.state, self.serve, self.body, self.style = state, serve, body, style

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stopped = asyncio.Event()
        if self.state.closing:
            stopped.set()
        self.state.live.add(stopped)
        ex = Exchange(scope, receive, send, stopped)
        watcher = asyncio.ensure_future(ex.watch_disconnect())
        try:
            await self._run(ex)
        finally:
            watcher.cancel()
            self.state.live.discard(stopped)
            if ex.client_left and not self.state.closing:
                self.state.disconnects.record({
                    "method": scope.get("method"), "path": scope.get("path"),
                    "model": self.body.get("model") if isinstance(self.body, dict) else None,
                    "time": time.time()})

    async def _run(self, ex: Exchange) -> None:
        if not isinstance(self.body, dict):
            await ex.send_json(400, _error(self.style, 400, "request body must be a JSON object"))
            return
        knobs = knobs_for(self.body.get("model"))
        if await apply_knobs(ex, self.state, knobs, self.style):
            await self.serve(ex, self.body, knobs)


def _error(style: str, status: int, message: str) -> Json:
    """Error body in the endpoint's provider style."""
    return (
        anthropic_error(status, message)
        if style == "anthropic"
        else openai_error(status, message)
    )


async def apply_knobs(
    ex: Exchange, state: ServerState, knobs: frozenset[str], style: str
) -> bool:
    """Apply delay / hang / reset / failure knobs; True if the API should answer."""
    if not await ex.pause(state.delay_ms() / 1000.0):
        await ex.reset()
        return False
    if "hang" in knobs:
        await ex.pause(HANG_S)
        await ex.reset()
        return False
    if "reset" in knobs:
        await ex.reset()
        return False
    for status in (500, 429):
        if f"fail{status}" in knobs:
            message = f"fake upstream: injected HTTP {status} (-fail{status})"
            await ex.send_json(status, _error(style, status, message), request_id_headers(style))
            return False
    return True


async def send_result(ex: Exchange, obj: Json, knobs: frozenset[str], style: str) -> None:
    """Send a non-stream JSON result, or half of it then FIN for ``-midreset``."""
    headers = request_id_headers(style)
    if "midreset" not in knobs:
        await ex.send_json(200, obj, headers)
        return
    data = dumps(obj)
    await ex.start(200, {"content-type": JSON_TYPE, "content-length": str(len(data)), **headers})
    await ex.write(data[: len(data) // 2])
    await ex.drop()


async def send_stream(
    ex: Exchange, events: list[bytes], drop_at: int, knobs: frozenset[str], style: str
) -> None:
    """Send SSE events with the knobs' pacing; FIN at ``drop_at`` for ``-midreset``."""
    interval = interval_s(knobs)
    await ex.start(200, {**SSE_HEADERS, **request_id_headers(style)})
    for index, event in enumerate(events):
        if "midreset" in knobs and index == drop_at:
            await ex.drop()
            return
        if index and not await ex.pause(interval):
            await ex.reset()
            return
        await ex.write(event)
    await ex.finish()

