"""Local fake LLM upstream speaking the OpenAI and Anthropic wire formats.

A Starlette app served by uvicorn (HTTP/1.1, h11) on a real 127.0.0.1 socket.
It is faithful enough for the official ``openai`` and ``anthropic`` Python SDKs
and is used by end-to-end tests and for trying the gateway offline.

Use from pytest::

    with FakeUpstream() as up:            # background thread, free port
        client = openai.OpenAI(base_url=up.url + "/v1", api_key="test")
        ...
        assert up.requests[-1]["headers"]["authorization"] == "Bearer test"

Run in the foreground::

    python -m tests.fakes.upstream --port 9000

Endpoints (each also served without the ``/v1`` prefix)
--------------------------------------------------------
``POST /v1/chat/completions``  OpenAI Chat Completions (JSON or SSE stream)
``POST /v1/responses``         OpenAI Responses API (JSON or SSE stream)
``POST /v1/embeddings``        OpenAI embeddings (``encoding_format`` float|base64)
``POST /v1/messages``          Anthropic Messages (JSON or SSE stream)
``POST /v1/messages/count_tokens``  Anthropic token counting
``GET  /health``               200 ``{"status": "ok"}``
anything else                  404 (OpenAI-style error JSON), still recorded

Deterministic usage (tokens)
----------------------------
Prompt / input tokens (``prompt_tokens_for(body)``)::

    10 + len(prompt_text_for(body)) // 4

where ``len`` counts Unicode code points and ``prompt_text_for`` concatenates,
in this order:

* Anthropic ``system`` (a string, or the ``text`` of its ``type: "text"`` blocks);
* Responses ``instructions`` (if a string);
* for every entry of ``messages``: its ``content`` if a string, else the
  ``text`` of its parts whose ``type`` is ``text``, ``input_text`` or
  ``output_text`` (images, tool calls etc. count 0);
* ``input``: a string; or a list whose string items count as-is and whose
  dict items (Responses input items) count via their ``content`` as above.
  Token-array inputs (lists of ints) count 0 characters.

Output / completion tokens (``output_tokens_for(body)``) = number of content
chunks N = the first integer found among ``max_output_tokens`` (Responses),
``max_completion_tokens``, ``max_tokens`` (Chat / Anthropic), clamped to
[0, 200]; 20 if none is given. The generated text is ``" tok" * N``
(``output_text_for(N)``); streams carry one ``" tok"`` per content chunk.
Totals are prompt + output. Embeddings report ``prompt_tokens`` =
``total_tokens`` = ``prompt_tokens_for(body)``. Cached / reasoning / cache
creation token counts are always 0.

Knobs
-----
Chosen by hyphen-separated suffixes of the request's ``model`` (they pass
through a gateway untouched, may be combined, e.g. ``gpt-4o-slow-nousage``):

``-paced``     5 ms between SSE events.
``-slow``      50 ms between SSE events.
``-hang``      never answer (waits up to 1 h; ends at server stop or when the
               client disconnects, then the connection is reset).
``-fail500``   HTTP 500 with an error JSON (OpenAI ``{"error": {message, type,
               param, code}}``; Anthropic ``{"type": "error", "error": {type,
               message}}`` on ``/v1/messages``).
``-fail429``   HTTP 429, same shapes.
``-reset``     no response: the TCP connection is reset (RST via SO_LINGER 0).
``-midreset``  a stream sends about half of its content chunks, then the
               connection is closed without finishing the chunked body;
               a JSON response sends half of its ``content-length`` bytes.
``-nousage``   streaming responses carry no usage: Chat never sends the usage
               chunk (and no ``"usage"`` keys); Responses ``response.completed``
               has ``"usage": null``; Anthropic ``message_start.message`` and
               ``message_delta`` omit ``usage`` (so the anthropic SDK's stream
               helpers cannot accumulate it). Non-stream responses keep usage.
``-usagedelta`` a Chat stream's usage chunk (when asked for) has one choice
               with an empty delta instead of ``choices: []`` (as some
               OpenAI-compatible servers send it).
``-usagefinish`` a Chat stream's usage (when asked for) rides on the
               ``finish_reason`` chunk; there is no separate usage chunk.

Precedence when several are given: hang > reset > fail500 > fail429; pacing,
``-midreset``, ``-nousage`` (over ``-usagedelta`` / ``-usagefinish``) then
shape the successful answer.

Per server: ``up.delay_ms`` (milliseconds, default 0) is slept before any API
response starts (not for ``/health``).

Every request is recorded in ``up.requests`` *before* any knob or delay is
applied, as a dict: ``method``, ``path``, ``query`` (raw query string),
``headers`` (lower-cased names; repeated headers joined with ", "), ``json``
(parsed body or None), ``body`` (raw bytes), ``time`` (``time.time()`` at
receipt, seconds).

A client that goes away before its response is complete (the connection
closed or reset by the client, not by a knob) is recorded in
``up.disconnects`` as ``{"method", "path", "model", "time"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = [
    "DEFAULT_OUTPUT_TOKENS",
    "FakeUpstream",
    "KNOBS",
    "MAX_OUTPUT_TOKENS",
    "RequestLog",
    "embedding_for",
    "knobs_for",
    "output_text_for",
    "output_tokens_for",
    "prompt_text_for",
    "prompt_tokens_for",
]

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

KNOBS: frozenset[str] = frozenset(
    {"paced", "slow", "hang", "fail500", "fail429", "reset", "midreset", "nousage",
     "usagedelta", "usagefinish"}
)
PROMPT_BASE_TOKENS = 10
"""Fixed prompt-token overhead added to every request (tokens)."""
CHARS_PER_TOKEN = 4
"""Characters of prompt text per prompt token (integer division)."""
DEFAULT_OUTPUT_TOKENS = 20
"""Output tokens when the request gives no max-tokens field (tokens)."""
MAX_OUTPUT_TOKENS = 200
"""Cap on output tokens (tokens)."""
WORD = " tok"
"""Text of one content chunk (= one output token)."""
PACED_INTERVAL_S = 0.005
"""Gap between SSE events for ``-paced`` (seconds)."""
SLOW_INTERVAL_S = 0.05
"""Gap between SSE events for ``-slow`` (seconds)."""
HANG_S = 3600.0
"""How long ``-hang`` waits before giving up (seconds)."""
DEFAULT_EMBEDDING_DIMS = 8
"""Embedding length when ``dimensions`` is not given (floats)."""
MAX_EMBEDDING_DIMS = 4096
"""Largest accepted ``dimensions`` (floats)."""
STARTUP_TIMEOUT_S = 5.0
"""How long ``FakeUpstream.start`` waits for the socket to serve (seconds)."""
GRACEFUL_SHUTDOWN_S = 0.3
"""uvicorn's graceful-shutdown budget before it cancels tasks (seconds)."""

_TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})
_TRANSPORT_KEY = "fake_upstream.transport"
_SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}
_JSON_TYPE = "application/json"

Json = dict[str, Any]

# ---------------------------------------------------------------------------
# Deterministic accounting (pure functions, importable by tests)
# ---------------------------------------------------------------------------


def _texts_of_content(content: Any) -> list[str]:
    """Text pieces of a message ``content``: a string or a list of typed parts."""
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    return [
        part["text"]
        for part in content
        if isinstance(part, dict)
        and part.get("type") in _TEXT_PART_TYPES
        and isinstance(part.get("text"), str)
    ]


def _texts_of_input(value: Any) -> list[str]:
    """Text pieces of an OpenAI ``input`` (Responses items or embedding strings)."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        return []
    pieces: list[str] = []
    for item in value:
        if isinstance(item, str):
            pieces.append(item)
        elif isinstance(item, dict):
            pieces.extend(_texts_of_content(item.get("content")))
    return pieces


def prompt_text_for(body: Json) -> str:
    """All prompt text of a request body that counts toward prompt tokens.

    See the module docstring for exactly which fields are included.
    """
    pieces = _texts_of_content(body.get("system"))
    if isinstance(body.get("instructions"), str):
        pieces.append(body["instructions"])
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            pieces.extend(_texts_of_content(message.get("content")))
    pieces.extend(_texts_of_input(body.get("input")))
    return "".join(pieces)


def prompt_tokens_for(body: Json) -> int:
    """Prompt/input tokens the fake reports: ``10 + len(prompt_text_for(body)) // 4``."""
    return PROMPT_BASE_TOKENS + len(prompt_text_for(body)) // CHARS_PER_TOKEN


def output_tokens_for(body: Json) -> int:
    """Output tokens (= content chunks) the fake generates for a request body.

    First integer among ``max_output_tokens``, ``max_completion_tokens``,
    ``max_tokens``, clamped to [0, 200]; otherwise 20.
    """
    for key in ("max_output_tokens", "max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return max(0, min(value, MAX_OUTPUT_TOKENS))
    return DEFAULT_OUTPUT_TOKENS


def output_text_for(n_tokens: int) -> str:
    """The full generated text for ``n_tokens`` output tokens."""
    return WORD * n_tokens


def knobs_for(model: Any) -> frozenset[str]:
    """Knobs named by trailing ``-knob`` segments of a model string."""
    if not isinstance(model, str):
        return frozenset()
    found: set[str] = set()
    segments = model.split("-")
    while len(segments) > 1 and segments[-1] in KNOBS:
        found.add(segments.pop())
    return frozenset(found)


def _interval_s(knobs: frozenset[str]) -> float:
    """Gap between SSE events for these knobs (seconds)."""
    if "slow" in knobs:
        return SLOW_INTERVAL_S
    if "paced" in knobs:
        return PACED_INTERVAL_S
    return 0.0


def _half(n: int) -> int:
    """How many of ``n`` content chunks a ``-midreset`` stream sends."""
    return min(n, max(1, n // 2))


def embedding_for(text: str, dims: int) -> list[float]:
    """Deterministic embedding of ``text``: ``dims`` floats in [-1, 1).

    Values are multiples of 1/128, so they survive float32 (base64) exactly.
    """
    values: list[float] = []
    counter = 0
    while len(values) < dims:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        values.extend((byte - 128) / 128 for byte in digest)
        counter += 1
    return values[:dims]


def _embedding_inputs(value: Any) -> list[str]:
    """One string key per embedding input (token arrays are JSON-encoded)."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        return []
    if value and all(isinstance(x, int) for x in value):
        return [json.dumps(value)]
    return [x if isinstance(x, str) else json.dumps(x) for x in value]


def _encode_embedding(vector: list[float], encoding_format: Any) -> list[float] | str:
    """The vector as JSON floats, or base64 of little-endian float32 if asked."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


# ---------------------------------------------------------------------------
# Wire payloads
# ---------------------------------------------------------------------------


def _new_id(prefix: str) -> str:
    """A fresh provider-looking id such as ``chatcmpl-…``."""
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def _dumps(obj: Any) -> bytes:
    """Compact JSON bytes, as the providers send."""
    return json.dumps(obj, separators=(",", ":")).encode()


def _sse_data(obj: Any) -> bytes:
    """An unnamed SSE event (``data:`` only), OpenAI Chat style."""
    return b"data: " + (obj if isinstance(obj, bytes) else _dumps(obj)) + b"\n\n"


def _sse_named(event: str, obj: Json) -> bytes:
    """A named SSE event (``event:`` + ``data:``), Responses / Anthropic style."""
    return b"event: " + event.encode() + b"\n" + _sse_data(obj)


def _openai_error(status: int, message: str) -> Json:
    """OpenAI-style error body for an HTTP status."""
    kinds = {
        400: ("invalid_request_error", None),
        404: ("invalid_request_error", "unknown_url"),
        429: ("requests", "rate_limit_exceeded"),
        500: ("server_error", "internal_error"),
    }
    err_type, code = kinds.get(status, ("server_error", None))
    return {"error": {"message": message, "type": err_type, "param": None, "code": code}}


def _anthropic_error(status: int, message: str) -> Json:
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
        "request_id": _new_id("req_"),
    }


def _chat_usage(prompt: int, completion: int) -> Json:
    """Chat Completions ``usage`` object (tokens)."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _chat_completion(cid: str, created: int, model: str, text: str, usage: Json) -> Json:
    """Non-stream ``chat.completion`` object."""
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": text,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": usage,
        "system_fingerprint": "fp_fake",
    }


def _chat_chunk(
    cid: str, created: int, model: str, delta: Json | None, finish: str | None, null_usage: bool
) -> Json:
    """One ``chat.completion.chunk``; ``delta=None`` gives ``choices: []``."""
    chunk: Json = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if null_usage:
        chunk["usage"] = None
    return chunk


def _responses_usage(input_tokens: int, output_tokens: int) -> Json:
    """Responses API ``usage`` object (tokens)."""
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def _output_text_part(text: str) -> Json:
    """A Responses ``output_text`` content part."""
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(item_id: str, status: str, parts: list[Json]) -> Json:
    """A Responses output item of type ``message``."""
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": parts,
    }


def _response_object(
    rid: str, created: int, body: Json, status: str, output: list[Json], usage: Json | None
) -> Json:
    """A Responses API ``response`` object."""
    return {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body.get("model"),
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }


def _anthropic_usage(input_tokens: int, output_tokens: int) -> Json:
    """Anthropic ``usage`` object (tokens)."""
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _anthropic_message(
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


# ---------------------------------------------------------------------------
# SSE event sequences: (events, index at which -midreset drops the connection)
# ---------------------------------------------------------------------------


def _chat_stream_events(body: Json, knobs: frozenset[str]) -> tuple[list[bytes], int]:
    """Chat Completions SSE: role, N words, finish, [usage], ``[DONE]``."""
    cid, created, model = _new_id("chatcmpl-"), int(time.time()), body.get("model")
    n, prompt = output_tokens_for(body), prompt_tokens_for(body)
    options = body.get("stream_options")
    with_usage = (
        isinstance(options, dict)
        and options.get("include_usage") is True
        and "nousage" not in knobs
    )

    def chunk(delta: Json | None, finish: str | None = None) -> bytes:
        return _sse_data(_chat_chunk(cid, created, model, delta, finish, with_usage))

    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"content": WORD}) for _ in range(n)]
    if with_usage and "usagefinish" in knobs:
        finish = _chat_chunk(cid, created, model, {}, "stop", False)
        finish["usage"] = _chat_usage(prompt, n)
        events.append(_sse_data(finish))
    else:
        events.append(chunk({}, "stop"))
    if with_usage and "usagefinish" not in knobs:
        delta = {} if "usagedelta" in knobs else None
        final = _chat_chunk(cid, created, model, delta, None, False)
        final["usage"] = _chat_usage(prompt, n)
        events.append(_sse_data(final))
    events.append(_sse_data(b"[DONE]"))
    return events, 1 + _half(n)


def _responses_stream_events(body: Json, knobs: frozenset[str]) -> tuple[list[bytes], int]:
    """Responses API SSE, from ``response.created`` to ``response.completed``."""
    rid, item_id, created = _new_id("resp_"), _new_id("msg_"), int(time.time())
    n, prompt = output_tokens_for(body), prompt_tokens_for(body)
    text = output_text_for(n)
    usage = None if "nousage" in knobs else _responses_usage(prompt, n)
    done_item = _message_item(item_id, "completed", [_output_text_part(text)])
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    payloads: list[Json] = [
        {
            "type": "response.created",
            "response": _response_object(rid, created, body, "in_progress", [], None),
        },
        {
            "type": "response.in_progress",
            "response": _response_object(rid, created, body, "in_progress", [], None),
        },
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": _message_item(item_id, "in_progress", []),
        },
        {"type": "response.content_part.added", **where, "part": _output_text_part("")},
    ]
    payloads += [
        {"type": "response.output_text.delta", **where, "delta": WORD, "logprobs": []}
        for _ in range(n)
    ]
    payloads += [
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": _output_text_part(text)},
        {"type": "response.output_item.done", "output_index": 0, "item": done_item},
        {
            "type": "response.completed",
            "response": _response_object(rid, created, body, "completed", [done_item], usage),
        },
    ]
    events = [
        _sse_named(p["type"], {**p, "sequence_number": seq}) for seq, p in enumerate(payloads)
    ]
    return events, 4 + _half(n)


def _anthropic_stream_events(body: Json, knobs: frozenset[str]) -> tuple[list[bytes], int]:
    """Anthropic Messages SSE, from ``message_start`` to ``message_stop``."""
    mid, model = _new_id("msg_"), body.get("model")
    n, prompt = output_tokens_for(body), prompt_tokens_for(body)
    with_usage = "nousage" not in knobs
    start_usage = _anthropic_usage(prompt, 1) if with_usage else None
    message_delta: Json = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
    }
    if with_usage:
        message_delta["usage"] = {"output_tokens": n}
    payloads: list[Json] = [
        {"type": "message_start", "message": _anthropic_message(mid, model, [], None, start_usage)},
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
    return [_sse_named(p["type"], p) for p in payloads], 3 + _half(n)


# ---------------------------------------------------------------------------
# Request log
# ---------------------------------------------------------------------------


class RequestLog(list[Json]):
    """A list of recorded request dicts whose mutations are lock-guarded.

    Read it like a list (``len``, indexing, iteration); ``snapshot()`` gives a
    consistent copy and ``wait_for(n, timeout_s)`` blocks until ``n`` exist.
    """

    def __init__(self) -> None:
        super().__init__()
        self._cond = threading.Condition()

    def record(self, entry: Json) -> None:
        """Append one request record and wake waiters."""
        with self._cond:
            super().append(entry)
            self._cond.notify_all()

    def clear(self) -> None:
        """Forget all recorded requests."""
        with self._cond:
            super().clear()

    def snapshot(self) -> list[Json]:
        """A copy of the records taken under the lock."""
        with self._cond:
            return list(self)

    def wait_for(self, count: int, timeout_s: float = 2.0) -> list[Json]:
        """Wait up to ``timeout_s`` seconds for ``count`` records; return a snapshot.

        Raises ``TimeoutError`` if fewer than ``count`` arrived in time.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: len(self) >= count, timeout=timeout_s):
                raise TimeoutError(f"expected {count} upstream requests, got {len(self)}")
            return list(self)


def _headers_of(scope: Scope) -> dict[str, str]:
    """Request headers as a dict with lower-cased names (repeats joined by ", ")."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def _parse_json(raw: bytes) -> Any:
    """Parsed JSON of a body, or None if empty / not JSON."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


# ---------------------------------------------------------------------------
# Per-request connection control
# ---------------------------------------------------------------------------


class _ServerState:
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


class _Exchange:
    """One HTTP exchange driven over raw ASGI, with abrupt-close helpers."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, stopped: asyncio.Event) -> None:
        self.scope, self.receive, self.send = scope, receive, send
        self.stopped = stopped
        self.gone = asyncio.Event()
        self.transport: asyncio.Transport | None = scope.get(_TRANSPORT_KEY)
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
        data = _dumps(obj)
        all_headers = {
            "content-type": _JSON_TYPE,
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


Serve = Callable[["_Exchange", Json, frozenset[str]], Awaitable[None]]


class _RawResponse:
    """ASGI callable returned by endpoints: runs knobs, then the API handler."""

    def __init__(self, state: _ServerState, serve: Serve, body: Any, style: str) -> None:
        self.state, self.serve, self.body, self.style = state, serve, body, style

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stopped = asyncio.Event()
        if self.state.closing:
            stopped.set()
        self.state.live.add(stopped)
        ex = _Exchange(scope, receive, send, stopped)
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

    async def _run(self, ex: _Exchange) -> None:
        if not isinstance(self.body, dict):
            await ex.send_json(400, _error(self.style, 400, "request body must be a JSON object"))
            return
        knobs = knobs_for(self.body.get("model"))
        if await _apply_knobs(ex, self.state, knobs, self.style):
            await self.serve(ex, self.body, knobs)


def _error(style: str, status: int, message: str) -> Json:
    """Error body in the endpoint's provider style."""
    return (
        _anthropic_error(status, message)
        if style == "anthropic"
        else _openai_error(status, message)
    )


def _request_id_headers(style: str) -> dict[str, str]:
    """Provider-looking request-id response headers."""
    rid = _new_id("req_")
    return (
        {"request-id": rid, "x-request-id": rid} if style == "anthropic" else {"x-request-id": rid}
    )


async def _apply_knobs(
    ex: _Exchange, state: _ServerState, knobs: frozenset[str], style: str
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
            await ex.send_json(status, _error(style, status, message), _request_id_headers(style))
            return False
    return True


async def _send_result(ex: _Exchange, obj: Json, knobs: frozenset[str], style: str) -> None:
    """Send a non-stream JSON result, or half of it then FIN for ``-midreset``."""
    headers = _request_id_headers(style)
    if "midreset" not in knobs:
        await ex.send_json(200, obj, headers)
        return
    data = _dumps(obj)
    await ex.start(200, {"content-type": _JSON_TYPE, "content-length": str(len(data)), **headers})
    await ex.write(data[: len(data) // 2])
    await ex.drop()


async def _send_stream(
    ex: _Exchange, events: list[bytes], drop_at: int, knobs: frozenset[str], style: str
) -> None:
    """Send SSE events with the knobs' pacing; FIN at ``drop_at`` for ``-midreset``."""
    interval = _interval_s(knobs)
    await ex.start(200, {**_SSE_HEADERS, **_request_id_headers(style)})
    for index, event in enumerate(events):
        if "midreset" in knobs and index == drop_at:
            await ex.drop()
            return
        if index and not await ex.pause(interval):
            await ex.reset()
            return
        await ex.write(event)
    await ex.finish()


# ---------------------------------------------------------------------------
# API handlers
# ---------------------------------------------------------------------------


async def _serve_chat(ex: _Exchange, body: Json, knobs: frozenset[str]) -> None:
    """``POST /v1/chat/completions``."""
    if body.get("stream") is True:
        events, drop_at = _chat_stream_events(body, knobs)
        await _send_stream(ex, events, drop_at, knobs, "openai")
        return
    n, prompt = output_tokens_for(body), prompt_tokens_for(body)
    obj = _chat_completion(
        _new_id("chatcmpl-"),
        int(time.time()),
        body.get("model"),
        output_text_for(n),
        _chat_usage(prompt, n),
    )
    await _send_result(ex, obj, knobs, "openai")


async def _serve_responses(ex: _Exchange, body: Json, knobs: frozenset[str]) -> None:
    """``POST /v1/responses``."""
    if body.get("stream") is True:
        events, drop_at = _responses_stream_events(body, knobs)
        await _send_stream(ex, events, drop_at, knobs, "openai")
        return
    n, prompt = output_tokens_for(body), prompt_tokens_for(body)
    item = _message_item(_new_id("msg_"), "completed", [_output_text_part(output_text_for(n))])
    obj = _response_object(
        _new_id("resp_"), int(time.time()), body, "completed", [item], _responses_usage(prompt, n)
    )
    await _send_result(ex, obj, knobs, "openai")


async def _serve_embeddings(ex: _Exchange, body: Json, knobs: frozenset[str]) -> None:
    """``POST /v1/embeddings`` (one vector per input; float or base64)."""
    inputs = _embedding_inputs(body.get("input"))
    if not inputs:
        await ex.send_json(400, _openai_error(400, "'input' must be a non-empty string or array"))
        return
    dims = body.get("dimensions")
    if not (isinstance(dims, int) and 0 < dims <= MAX_EMBEDDING_DIMS):
        dims = DEFAULT_EMBEDDING_DIMS
    fmt = body.get("encoding_format")
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": _encode_embedding(embedding_for(text, dims), fmt),
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
    await _send_result(ex, obj, knobs, "openai")


async def _serve_messages(ex: _Exchange, body: Json, knobs: frozenset[str]) -> None:
    """``POST /v1/messages`` (Anthropic)."""
    if body.get("stream") is True:
        events, drop_at = _anthropic_stream_events(body, knobs)
        await _send_stream(ex, events, drop_at, knobs, "anthropic")
        return
    n, prompt = output_tokens_for(body), prompt_tokens_for(body)
    content = [{"type": "text", "text": output_text_for(n)}]
    obj = _anthropic_message(
        _new_id("msg_"), body.get("model"), content, "end_turn", _anthropic_usage(prompt, n)
    )
    await _send_result(ex, obj, knobs, "anthropic")


async def _serve_count_tokens(ex: _Exchange, body: Json, knobs: frozenset[str]) -> None:
    """``POST /v1/messages/count_tokens`` (Anthropic)."""
    await ex.send_json(
        200, {"input_tokens": prompt_tokens_for(body)}, _request_id_headers("anthropic")
    )


# ---------------------------------------------------------------------------
# App assembly
# ---------------------------------------------------------------------------


async def _record(state: _ServerState, request: Request) -> Any:
    """Read the body and record the request; returns the parsed JSON (or None)."""
    raw = await request.body()
    parsed = _parse_json(raw)
    state.requests.record(
        {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": _headers_of(request.scope),
            "json": parsed,
            "body": raw,
            "time": time.time(),
        }
    )
    return parsed


def _api_route(
    state: _ServerState, serve: Serve, style: str
) -> Callable[[Request], Awaitable[_RawResponse]]:
    """A Starlette endpoint that records, then hands over to ``serve``."""

    async def endpoint(request: Request) -> _RawResponse:
        return _RawResponse(state, serve, await _record(state, request), style)

    return endpoint


def _routes(state: _ServerState) -> list[Route]:
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

    async def health(request: Request) -> _RawResponse:
        await _record(state, request)
        return _RawResponse(state, _serve_health, {}, "openai")

    async def not_found(request: Request) -> _RawResponse:
        await _record(state, request)
        return _RawResponse(state, _serve_not_found, {}, "openai")

    routes.append(Route("/health", health, methods=["GET", "HEAD"]))
    routes.append(
        Route("/{path:path}", not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"])
    )
    return routes


async def _serve_health(ex: _Exchange, body: Json, knobs: frozenset[str]) -> None:
    """``GET /health``."""
    await ex.send_json(200, {"status": "ok"})


async def _serve_not_found(ex: _Exchange, body: Json, knobs: frozenset[str]) -> None:
    """Unknown path: 404 with an OpenAI-style error."""
    await ex.send_json(404, _openai_error(404, f"Unknown path {ex.scope.get('path')!r}"))


def _transport_of(receive: Receive) -> asyncio.Transport | None:
    """The connection's transport, found via uvicorn's bound ``receive``."""
    return getattr(getattr(receive, "__self__", None), "transport", None)


def _build_app(state: _ServerState) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The fake's ASGI app: Starlette routes wrapped to expose the transport."""
    app = Starlette(routes=_routes(state))

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[_TRANSPORT_KEY] = _transport_of(receive)
        await app(scope, receive, send)

    return asgi


# ---------------------------------------------------------------------------
# Server runner
# ---------------------------------------------------------------------------


class _QuietH11Protocol(H11Protocol):
    """uvicorn's h11 protocol without access logging.

    Avoids ``Config(access_log=False)``, which reconfigures the process-wide
    ``uvicorn.access`` logger (and would silence a gateway served in-process).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.access_log = False


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (0 = any free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _port_accepts(host: str, port: int) -> bool:
    """True if a TCP connect to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class FakeUpstream:
    """The fake upstream running on its own thread + event loop.

    Attributes:
        url: ``"http://127.0.0.1:PORT"`` (no trailing slash, no ``/v1``).
        host, port: where it listens.
        requests: ``RequestLog`` of recorded request dicts (see module docstring).
        disconnects: ``RequestLog`` of requests whose client left before the
            response was complete (see module docstring).
        delay_ms: delay before every API response starts (milliseconds); may be
            changed at any time from any thread.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, delay_ms: float = 0) -> None:
        self.host = host
        self.port = port
        self.delay_ms = delay_ms
        self.requests = RequestLog()
        self.disconnects = RequestLog()
        self._state: _ServerState | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``."""
        return f"http://{self.host}:{self.port}"

    def clear(self) -> None:
        """Forget recorded requests and disconnects."""
        self.requests.clear()
        self.disconnects.clear()

    def wait_for_requests(self, count: int, timeout_s: float = 2.0) -> list[Json]:
        """Block until ``count`` requests were recorded (timeout in seconds)."""
        return self.requests.wait_for(count, timeout_s)

    def start(self) -> FakeUpstream:
        """Bind, start serving in a background thread, wait until it accepts."""
        if self._thread is not None:
            raise RuntimeError("FakeUpstream already started")
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        self._state = _ServerState(self.requests, lambda: float(self.delay_ms), self.disconnects)
        config = uvicorn.Config(
            _build_app(self._state),
            host=self.host,
            port=self.port,
            http=_QuietH11Protocol,
            lifespan="off",
            log_config=None,  # leave the process's logging configuration alone
            log_level=None,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._run, args=(sock,), name=f"fake-upstream-{self.port}", daemon=True
        )
        self._thread.start()
        self._wait_started()
        return self

    def _run(self, sock: socket.socket) -> None:
        """Thread body: own event loop running uvicorn until stopped."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            assert self._server is not None
            loop.run_until_complete(self._server.serve(sockets=[sock]))
        except BaseException as exc:  # surfaced by start() as the failure cause
            self._error = exc
        finally:
            self._close_loop(loop)
            sock.close()

    @staticmethod
    def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
        """Cancel leftover tasks and close the loop."""
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    def _wait_started(self) -> None:
        """Wait until uvicorn serves and the port accepts connections."""
        assert self._server is not None and self._thread is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._server.started and _port_accepts(self.host, self.port):
                return
            if not self._thread.is_alive():
                break
            time.sleep(0.005)
        error = self._error
        self.stop()
        raise RuntimeError(f"fake upstream failed to start on {self.url}") from error

    def stop(self) -> None:
        """Stop serving: end in-flight requests, close sockets, join the thread."""
        thread, server, loop, state = self._thread, self._server, self._loop, self._state
        if thread is None or server is None:
            return
        if loop is not None and state is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(state.shutdown)
            except RuntimeError:  # loop closed meanwhile
                pass
        server.should_exit = True
        thread.join(timeout=5.0)
        self._thread = self._server = self._loop = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def _parse_args(argv: Iterable[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.upstream",
        description="Fake OpenAI/Anthropic upstream (see module docstring for knobs).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=9000, help="TCP port, 0 = any free port (default 9000)"
    )
    parser.add_argument(
        "--delay-ms", type=float, default=0, help="delay before each API response (ms)"
    )
    return parser.parse_args(list(argv) if argv is not None else None)


def main(argv: Iterable[str] | None = None) -> int:
    """Run the fake in the foreground until Ctrl-C / SIGTERM; prints its URL."""
    args = _parse_args(argv)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    with FakeUpstream(host=args.host, port=args.port, delay_ms=args.delay_ms) as up:
        print(up.url, flush=True)
        print(
            f"fake upstream: OpenAI base_url={up.url}/v1  Anthropic base_url={up.url}"
            "  (Ctrl-C to stop)",
            file=sys.stderr,
            flush=True,
        )
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
