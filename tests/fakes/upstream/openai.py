"""OpenAI wire formats: Chat Completions, Responses and embeddings payloads and SSE streams.

Pure builders; the endpoints that send them live in ``app.py``. Every stream builder
returns ``(events, drop_at)``: the SSE events in order and the index at which
``-midreset`` drops the connection.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import time
from typing import Any

from .knobs import half
from .tokens import WORD, output_text_for, output_tokens_for, prompt_tokens_for
from .wire import Json, new_id, sse_data, sse_named

DEFAULT_EMBEDDING_DIMS = 8
"""Embedding length when ``dimensions`` is not given (floats)."""
MAX_EMBEDDING_DIMS = 4096
"""Largest accepted ``dimensions`` (floats)."""


def openai_error(status: int, message: str) -> Json:
    """OpenAI-style error body for an HTTP status."""
    kinds = {
        400: ("invalid_request_error", None),
        404: ("invalid_request_error", "unknown_url"),
        429: ("requests", "rate_limit_exceeded"),
        500: ("server_error", "internal_error"),
    }
    err_type, code = kinds.get(status, ("server_error", None))
    return {"error": {"message": message, "type": err_type, "param": None, "code": code}}


def chat_usage(prompt: int, completion: int) -> Json:
    """Chat Completions ``usage`` object (tokens)."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def chat_completion(cid: str, created: int, model: str, text: str, usage: Json) -> Json:
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


def responses_usage(input_tokens: int, output_tokens: int) -> Json:
    """Responses API ``usage`` object (tokens)."""
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def output_text_part(text: str) -> Json:
    """A Responses ``output_text`` content part."""
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, status: str, parts: list[Json]) -> Json:
    """A Responses output item of type ``message``."""
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": parts,
    }


def response_object(
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



# ---------------------------------------------------------------------------
# SSE event sequences: (events, index at which -midreset drops the connection)
# ---------------------------------------------------------------------------


def chat_stream_events(body: Json, knobs: frozenset[str]) -> tuple[list[bytes], int]:
    """Chat Completions SSE: role, N words, finish, [usage], ``[DONE]``."""
    cid, created, model = new_id("chatcmpl-"), int(time.time()), body.get("model")
    n, prompt = output_tokens_for(body), prompt_tokens_for(body)
    options = body.get("stream_options")
    with_usage = (
        isinstance(options, dict)
        and options.get("include_usage") is True
        and "nousage" not in knobs
    )

    def chunk(delta: Json | None, finish: str | None = None) -> bytes:
        return sse_data(_chat_chunk(cid, created, model, delta, finish, with_usage))

    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"content": WORD}) for _ in range(n)]
    if with_usage and "usagefinish" in knobs:
        finish = _chat_chunk(cid, created, model, {}, "stop", False)
        finish["usage"] = chat_usage(prompt, n)
        events.append(sse_data(finish))
    else:
        events.append(chunk({}, "stop"))
    if with_usage and "usagefinish" not in knobs:
        delta = {} if "usagedelta" in knobs else None
        final = _chat_chunk(cid, created, model, delta, None, False)
        final["usage"] = chat_usage(prompt, n)
        events.append(sse_data(final))
    events.append(sse_data(b"[DONE]"))
    return events, 1 + half(n)


def responses_stream_events(body: Json, knobs: frozenset[str]) -> tuple[list[bytes], int]:
    """Responses API SSE, from ``response.created`` to ``response.completed``."""
    rid, item_id, created = new_id("resp_"), new_id("msg_"), int(time.time())
    n, prompt = output_tokens_for(body), prompt_tokens_for(body)
    text = output_text_for(n)
    usage = None if "nousage" in knobs else responses_usage(prompt, n)
    done_item = message_item(item_id, "completed", [output_text_part(text)])
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    payloads: list[Json] = [
        {
            "type": "response.created",
            "response": response_object(rid, created, body, "in_progress", [], None),
        },
        {
            "type": "response.in_progress",
            "response": response_object(rid, created, body, "in_progress", [], None),
        },
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": message_item(item_id, "in_progress", []),
        },
        {"type": "response.content_part.added", **where, "part": output_text_part("")},
    ]
    payloads += [
        {"type": "response.output_text.delta", **where, "delta": WORD, "logprobs": []}
        for _ in range(n)
    ]
    payloads += [
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": output_text_part(text)},
        {"type": "response.output_item.done", "output_index": 0, "item": done_item},
        {
            "type": "response.completed",
            "response": response_object(rid, created, body, "completed", [done_item], usage),
        },
    ]
    events = [
        sse_named(p["type"], {**p, "sequence_number": seq}) for seq, p in enumerate(payloads)
    ]
    return events, 4 + half(n)



# ---------------------------------------------------------------------------
# Embeddings
# ---------------------------------------------------------------------------


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


def embedding_inputs(value: Any) -> list[str]:
    """One string key per embedding input (token arrays are JSON-encoded)."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        return []
    if value and all(isinstance(x, int) for x in value):
        return [json.dumps(value)]
    return [x if isinstance(x, str) else json.dumps(x) for x in value]


def encode_embedding(vector: list[float], encoding_format: Any) -> list[float] | str:
    """The vector as JSON floats, or base64 of little-endian float32 if asked."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector

