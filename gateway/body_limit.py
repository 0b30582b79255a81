"""A size limit on request bodies, enforced while reading (billing, admin and webhook API).

Pure ASGI middleware (STYLE: a plain class like starlette's `TrustedHostMiddleware`) around the
Starlette part of the app; the proxied routes keep their per-route `max_body_bytes`
(gateway.proxy.forwarding.read_body). A declared `Content-Length` over the limit is answered
`413 payload-too-large` before anything is read. Otherwise `receive` is wrapped: it counts the
bytes as they arrive (chunked bodies included) and raises PayloadTooLarge the moment the limit
is passed, which the app's problem handler answers — so no handler ever holds more than
`max_bytes` of a body, whatever the client sends. The 413 says `Connection: close`: the server
stops reading instead of draining the rest of the body to find a next request.
"""

from __future__ import annotations

from typing import Any

from gateway.problems import PayloadTooLarge, send_problem
from gateway.proxy.forwarding import declared_length

Scope = dict[str, Any]
Message = dict[str, Any]


class BodyLimit:
    """`BodyLimit(app, max_bytes=N, base_url=…)`: HTTP requests whose body passes `max_bytes`
    (> 0) get a 413 problem (`base_url` prefixes its `type`); other scopes pass through."""

    def __init__(self, app: Any, *, max_bytes: int, base_url: str) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes
        self.base_url = base_url

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared = _content_length(scope["headers"])
        if declared is not None and declared > limit:
            await send_problem(send, PayloadTooLarge(
                f"The body is {declared} bytes; this endpoint accepts at most {limit}."),
                self.base_url)
            return
        size = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal size
            message: Message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:
                    raise PayloadTooLarge(f"The body passed {limit} bytes, this endpoint's "
                                          "limit.")
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except PayloadTooLarge as exc:
            # The app's handler answers it; this is for an app that let it through unanswered.
            if started:
                raise
            await send_problem(send, exc, self.base_url)


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The declared Content-Length (None when absent or not a plain number: the server
    rejects a malformed one before the app runs, and the counting limit still applies)."""
    for key, value in headers:
        if key == b"content-length":
            return declared_length(value)
    return None
