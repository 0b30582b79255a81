"""The fake's ASGI app: API endpoints, routes (with and without ``/v1``), request recording."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .anthropic import anthropic_message, anthropic_stream_events, anthropic_usage
from .exchange import (
    TRANSPORT_KEY,
    Exchange,
    RawResponse,
    Serve,
    ServerState,
    send_result,
    send_stream,
)
from .log import headers_of, parse_json
from .openai import (
    DEFAULT_EMBEDDING_DIMS,
    MAX_EMBEDDING_DIMS,
    chat_completion,
    chat_stream_events,
    chat_usage,
    embedding_for,
    embedding_inputs,
    encode_embedding,
    message_item,
    openai_error,
    output_text_part,
    response_object,
    responses_stream_events,
    responses_usage,
)
from .tokens import output_text_for, output_tokens_for, prompt_tokens_for
from .wire import Json, new_id, request_id_headers

# ---------------------------------------------------------------------------
# API handlers
# ---------------------------------------------------------------------------


async def _serve_chat(ex: Exchange, body: Json, knobs: frozenset[str]) -> None:
    """``POST /v1/chat/completions``."""
    if body.get("stream") is True:
        events, drop_at = chat_stream_events(body, knobs)
        await send_stream(ex, events, drop_at, knobs, "openai")
        return
    n, prompt = output_tokens_for(body), prompt_tokens_for(body)
    obj = chat_completion(
        new_id("chatcmpl-"),
        int(time.time()),
        body.get("model"),
        output_text_for(n),
        chat_usage(prompt, n),
    )
    await send_result(ex, obj, knobs, "openai")


async def _serve_responses(ex: Exchange, body: Json, knobs: frozenset[str]) -> None:
    """``POST /v1/responses``."""
    if body.get("stream") is True:
        events, drop_at = responses_stream_events(body, knobs)
        await send_stream(ex, events, drop_at, knobs, "openai")
        return
    n, prompt = output_tokens_for(body), prompt_tokens_for(body)
    item = message_item(new_id("msg_"), "completed", [output_text_part(output_text_for(n))])
    obj = response_object(
        new_id("resp_"), int(time.time()), body, "completed", [item], responses_usage(prompt, n)
    )
    await send_result(ex, obj, knobs, "openai")


async def _serve_embeddings(ex: Exchange, body: Json, knobs: frozenset[str]) -> None:
    """``POST /v1/embeddings`` (one vector per input; float or base64)."""
    inputs = embedding_inputs(body.get("input"))
    if not inputs:
        await ex.send_json(400, openai_error(400, "'input' must be a non-empty string or array"))
        return
    dims = body.get("dimensions")
    if not (isinstance(dims, int) and 0 < dims <= MAX_EMBEDDING_DIMS):
        dims = DEFAULT_EMBEDDING_DIMS
    fmt = body.get("encoding_format")
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": encode_embedding(embedding_for(text, dims), fmt),
        }
        for i, text in enumerate(inputs)
    ]
    prompt = prompt_tokens_for(body)
    obj = {
        "object": "list",
        "data": data,
        "model": body.get("model"),
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    }
    await send_result(ex, obj, knobs, "openai")


async def _serve_messages(ex: Exchange, body: Json, knobs: frozenset[str]) -> None:
    """``POST /v1/messages`` (Anthropic)."""
    if body.get("stream") is True:
        events, drop_at = anthropic_stream_events(body, knobs)
        await send_stream(ex, events, drop_at, knobs, "anthropic")
        return
    n, prompt = output_tokens_for(body), prompt_tokens_for(body)
    content = [{"type": "text", "text": output_text_for(n)}]
    obj = anthropic_message(
        new_id("msg_"), body.get("model"), content, "end_turn", anthropic_usage(prompt, n)
    )
    await send_result(ex, obj, knobs, "anthropic")


async def _serve_count_tokens(ex: Exchange, body: Json, knobs: frozenset[str]) -> None:
    """``POST /v1/messages/count_tokens`` (Anthropic)."""
    await ex.send_json(
        200, {"input_tokens": prompt_tokens_for(body)}, request_id_headers("anthropic")
    )



# ---------------------------------------------------------------------------
# App assembly
# ---------------------------------------------------------------------------


async def _record(state: ServerState, request: Request) -> Any:
    """Read the body and record the request; returns the parsed JSON (or None)."""
    raw = await request.body()
    parsed = parse_json(raw)
    state.requests.record(
        {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": headers_of(request.scope),
            "json": parsed,
            "body": raw,
            "time": time.time(),
        }
    )
    return parsed


def _api_route(
    state: ServerState, serve: Serve, style: str
) -> Callable[[Request], Awaitable[RawResponse]]:
    """A Starlette endpoint that records, then hands over to ``serve``."""

    async def endpoint(request: Request) -> RawResponse:
        return RawResponse(state, serve, await _record(state, request), style)

    return endpoint


def _routes(state: ServerState) -> list[Route]:
    """All routes, each API path with and without the ``/v1`` prefix."""
    apis: list[tuple[str, Serve, str]] = [
        ("/chat/completions", _serve_chat, "openai"),
        ("/responses", _serve_responses, "openai"),
        ("/embeddings", _serve_embeddings, "openai"),
        ("/messages", _serve_messages, "anthropic"),
        ("/messages/count_tokens", _serve_count_tokens, "anthropic"),
    ]
    routes = [
        Route(prefix + path, _api_route(state, serve, style), methods=["POST"])
        for path, serve, style in apis
        for prefix in ("/v1", "")
    ]

    async def health(request: Request) -> RawResponse:
        await _record(state, request)
        return RawResponse(state, _serve_health, {}, "openai")

    async def not_found(request: Request) -> RawResponse:
        await _record(state, request)
        return RawResponse(state, _serve_not_found, {}, "openai")

    routes.append(Route("/health", health, methods=["GET", "HEAD"]))
    routes.append(
        Route("/{path:path}", not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"])
    )
    return routes


async def _serve_health(ex: Exchange, body: Json, knobs: frozenset[str]) -> None:
    """``GET /health``."""
    await ex.send_json(200, {"status": "ok"})


async def _serve_not_found(ex: Exchange, body: Json, knobs: frozenset[str]) -> None:
    """Unknown path: 404 with an OpenAI-style error."""
    await ex.send_json(404, openai_error(404, f"Unknown path {ex.scope.get('path')!r}"))


def _transport_of(receive: Receive) -> asyncio.Transport | None:
    """The connection's transport, found via uvicorn's bound ``receive``."""
    return getattr(getattr(receive, "__self__", None), "transport", None)


def build_app(state: ServerState) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The fake's ASGI app: Starlette routes wrapped to expose the transport."""
    app = Starlette(routes=_routes(state))

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[TRANSPORT_KEY] = _transport_of(receive)
        await app(scope, receive, send)

    return asgi

