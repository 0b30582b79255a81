"""Anthropic wire formats: Messages payloads, errors and the SSE stream.

Pure builders; the endpoints that send them live in ``app.py``.
"""

from __future__ import annotations

from typing import Any

from .knobs import half
from .tokens import WORD, output_tokens_for, prompt_tokens_for
from .wire import Json, new_id, sse_named


def anthropic_error(status: int, message: str) -> Json:
    """Anthropic-style error body for an HTTP status."""
    kinds = {
        400: "invalid_request_error",
        404: "not_found_error",
        429: "rate_limit_error",
        500: "api_error",
    }
    return {
        "type": "error",
        "error": {"type": kinds.get(status, "api_error"), "message": message},
        "request_id": new_id("req_"),
    }


def anthropic_usage(input_tokens: int, output_tokens: int) -> Json:
    """Anthropic ``usage`` object (tokens)."""
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def anthropic_message(
    mid: str, model: Any, content: list[Json], stop_reason: str | None, usage: Json | None
) -> Json:
    """An Anthropic ``message`` object (``usage=None`` omits the key)."""
    message: Json = {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
    }
    if usage is not None:
        message["usage"] = usage
    return message


def anthropic_stream_events(body: Json, knobs: frozenset[str]) -> tuple[list[bytes], int]:
    """Anthropic Messages SSE, from ``message_start`` to ``message_stop``."""
    mid, model = new_id("msg_"), body.get("model")
    n, prompt = output_tokens_for(body), prompt_tokens_for(body)
    with_usage = "nousage" not in knobs
    start_usage = anthropic_usage(prompt, 1) if with_usage else None
    message_delta: Json = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
    }
    if with_usage:
        message_delta["usage"] = {"output_tokens": n}
    payloads: list[Json] = [
        {"type": "message_start", "message": anthropic_message(mid, model, [], None, start_usage)},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
    ]
    payloads += [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": WORD}}
        for _ in range(n)
    ]
    payloads += [
        {"type": "content_block_stop", "index": 0},
        message_delta,
        {"type": "message_stop"},
    ]
    return [sse_named(p["type"], p) for p in payloads], 3 + half(n)

