"""Framing shared by both providers: JSON bytes, SSE events, provider-looking ids."""

from __future__ import annotations

import json
import uuid
from typing import Any

Json = dict[str, Any]
"""A JSON object (request body, response payload, recorded request)."""

SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}
"""Response headers of every SSE stream."""
JSON_TYPE = "application/json"
"""Content type of every JSON response."""


def new_id(prefix: str) -> str:
    """A fresh provider-looking id such as ``chatcmpl-…``."""
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes, as the providers send."""
    return json.dumps(obj, separators=(",", ":")).encode()


def sse_data(obj: Any) -> bytes:
    """An unnamed SSE event (``data:`` only), OpenAI Chat style."""
    return b"data: " + (obj if isinstance(obj, bytes) else dumps(obj)) + b"\n\n"


def sse_named(event: str, obj: Json) -> bytes:
    """A named SSE event (``event:`` + ``data:``), Responses / Anthropic style."""
    return b"event: " + event.encode() + b"\n" + sse_data(obj)


def request_id_headers(style: str) -> dict[str, str]:
    """Provider-looking request-id response headers (``style``: "openai" | "anthropic")."""
    rid = new_id("req_")
    return (
        {"request-id": rid, "x-request-id": rid} if style == "anthropic" else {"x-request-id": rid}
    )
