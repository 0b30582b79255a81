"""Reading token usage from upstream responses, JSON and SSE (SPEC §6; provider docs).

- OpenAI Chat Completions: `usage.prompt_tokens`, `completion_tokens`,
  `prompt_tokens_details.cached_tokens`, `completion_tokens_details.reasoning_tokens`; in streams
  only in the final chunk when `stream_options.include_usage` is set (that chunk has `choices: []`).
- OpenAI Responses: `usage.input_tokens`, `output_tokens`, `input_tokens_details.cached_tokens`,
  `output_tokens_details.reasoning_tokens`; in streams inside the `response.completed` event.
- OpenAI Embeddings: `usage.prompt_tokens`.
- Anthropic Messages: `usage.input_tokens` (+ `cache_read_input_tokens`,
  `cache_creation_input_tokens`), `output_tokens`; in streams `message_start.message.usage`,
  then `message_delta.usage` whose counts are cumulative.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from policies.meters import Usage
from policies.provider_prices import TokenUsage

# A chat chunk carries output when its delta has non-empty text, a refusal, or tool calls; the
# role-only first chunk and the empty finish chunk carry none. Byte patterns, not a JSON parse
# per event: this runs for every event of every stream.
_CHAT_OUTPUT = re.compile(rb'"(?:content|refusal)":\s*"[^"]|"tool_calls":\s*\[')


def _int(d: Any, *path: str) -> int:
    for part in path:
        if not isinstance(d, dict):
            return 0
        d = d.get(part)
    return d if isinstance(d, int) and not isinstance(d, bool) and d >= 0 else 0


def tokens_from_openai_chat(u: Any) -> TokenUsage:
    """Token usage of a Chat Completions `usage` object (also Embeddings: no completion tokens)."""
    return TokenUsage(
        input_tokens=_int(u, "prompt_tokens"),
        cached_input_tokens=_int(u, "prompt_tokens_details", "cached_tokens"),
        output_tokens=_int(u, "completion_tokens"),
        reasoning_tokens=_int(u, "completion_tokens_details", "reasoning_tokens"),
    )


def tokens_from_openai_responses(u: Any) -> TokenUsage:
    """Token usage of a Responses API `usage` object."""
    return TokenUsage(
        input_tokens=_int(u, "input_tokens"),
        cached_input_tokens=_int(u, "input_tokens_details", "cached_tokens"),
        output_tokens=_int(u, "output_tokens"),
        reasoning_tokens=_int(u, "output_tokens_details", "reasoning_tokens"),
    )


def tokens_from_anthropic(u: Any) -> TokenUsage:
    """Token usage of an Anthropic `usage` object: input counts cache reads and cache writes
    (Anthropic reports them apart from `input_tokens`)."""
    read = _int(u, "cache_read_input_tokens")
    write = _int(u, "cache_creation_input_tokens")
    return TokenUsage(
        input_tokens=_int(u, "input_tokens") + read + write,
        cached_input_tokens=read,
        cache_write_tokens=write,
        output_tokens=_int(u, "output_tokens"),
    )


def as_usage(t: TokenUsage) -> Usage:
    """The meters' `Usage` of a `TokenUsage` (cache writes stay counted in the input, and are
    told apart for provider prices)."""
    return Usage(input_tokens=t.input_tokens, output_tokens=t.output_tokens,
                 cached_tokens=t.cached_input_tokens, reasoning_tokens=t.reasoning_tokens,
                 cache_write_tokens=t.cache_write_tokens)


def usage_from_openai_chat(u: Any) -> Usage:
    """Usage of a Chat Completions `usage` object (also Embeddings: no completion tokens)."""
    return as_usage(tokens_from_openai_chat(u))


def usage_from_openai_responses(u: Any) -> Usage:
    """Usage of a Responses API `usage` object."""
    return as_usage(tokens_from_openai_responses(u))


def usage_from_anthropic(u: Any) -> Usage:
    """Usage of an Anthropic `usage` object; cache reads and writes count as input tokens."""
    return as_usage(tokens_from_anthropic(u))


_READERS = {
    "openai_chat": tokens_from_openai_chat,
    "openai_embeddings": tokens_from_openai_chat,
    "openai_responses": tokens_from_openai_responses,
    "anthropic_messages": tokens_from_anthropic,
}


def token_usage_from_json(protocol: str, body: bytes) -> TokenUsage | None:
    """Token usage of a complete JSON response body, or None when it carries none (or the
    protocol reports no usage)."""
    reader = _READERS.get(protocol)
    if reader is None:
        return None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("usage"), dict):
        return None
    return reader(doc["usage"])


def usage_from_json(protocol: str, body: bytes) -> Usage | None:
    """Usage of a complete JSON response body, or None when it carries none."""
    t = token_usage_from_json(protocol, body)
    return None if t is None else as_usage(t)


class StreamMeter:
    """Incremental reader of one SSE response: feed it whole events, read `usage` at the end.

    `events_seen` counts content events (≈ one token each for OpenAI and Anthropic deltas): it
    is the basis of the partial charge when a stream is cut or the client disconnects before the
    upstream reports usage. `tokens` is the same usage with every class the price source prices
    (cache writes included); `usage` is its meters' view. `feed(event)` tells a chat-completions
    chunk carrying `usage`, which the gateway rewrites with `without_usage` when the client did
    not ask for it.
    """

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self.tokens: TokenUsage | None = None
        self.input_tokens = 0  # Anthropic's message_start input, known before the end
        self.content_events = 0
        self._delta_seen = False

    @property
    def usage(self) -> Usage | None:
        """The usage read so far (None until the upstream reported some)."""
        return None if self.tokens is None else as_usage(self.tokens)

    def feed(self, event: bytes) -> bool:
        """Read one SSE event (bytes, with or without its blank-line terminator).

        Returns True when the event is a chat-completions chunk carrying a `usage` object —
        the choices-less usage chunk, or usage put on a chunk with choices (some
        OpenAI-compatible upstreams do).
        """
        # Content events (the many) are counted inline; only the few events that may carry
        # usage are parsed, in the helpers below.
        p = self.protocol
        if p == "openai_chat":
            if b'"usage":{' in event or b'"usage": {' in event:
                return self._chat_usage(event)
            if _CHAT_OUTPUT.search(event):
                self.content_events += 1
            return False
        if p == "anthropic_messages":
            if b"message_start" in event or b"message_delta" in event:
                self._anthropic_usage(event)
            elif b"content_block_delta" in event:
                self.content_events += 1
            return False
        if p == "openai_responses":
            if b"response.completed" in event or b"response.incomplete" in event:
                self._responses_usage(event)
            elif b".delta" in event:
                self.content_events += 1
            return False
        return False

    def _chat_usage(self, event: bytes) -> bool:
        doc = _data_json(event)
        if isinstance(doc, dict) and isinstance(doc.get("usage"), dict):
            self.tokens = tokens_from_openai_chat(doc["usage"])
            return True
        return False

    def _anthropic_usage(self, event: bytes) -> None:
        doc = _data_json(event)
        if isinstance(doc, dict):
            if doc.get("type") == "message_start":
                u = tokens_from_anthropic((doc.get("message") or {}).get("usage"))
                self.input_tokens = u.input_tokens
                self.tokens = u
            elif doc.get("type") == "message_delta" and isinstance(doc.get("usage"), dict):
                self._anthropic_delta(doc["usage"])

    def _responses_usage(self, event: bytes) -> None:
        doc = _data_json(event)
        if isinstance(doc, dict):
            resp = doc.get("response")
            if isinstance(resp, dict) and isinstance(resp.get("usage"), dict):
                self.tokens = tokens_from_openai_responses(resp["usage"])

    def _anthropic_delta(self, u: dict[str, Any]) -> None:
        # message_delta usage is cumulative; input fields appear there only sometimes.
        self._delta_seen = True
        base = self.tokens or TokenUsage()
        has_input = any(k in u for k in ("input_tokens", "cache_read_input_tokens",
                                          "cache_creation_input_tokens"))
        full = tokens_from_anthropic(u)
        self.tokens = full if has_input else TokenUsage(
            input_tokens=base.input_tokens, cached_input_tokens=base.cached_input_tokens,
            cache_write_tokens=base.cache_write_tokens, output_tokens=full.output_tokens)

    @property
    def final_usage_seen(self) -> bool:
        """True once the upstream reported the stream's final usage."""
        if self.protocol == "anthropic_messages":
            return self.tokens is not None and self._delta_seen
        return self.tokens is not None


def _data_json(event: bytes) -> Any:
    data = b""
    for line in event.split(b"\n"):
        line = line.rstrip(b"\r")
        if line.startswith(b"data:"):
            chunk = line[5:]
            if chunk.startswith(b" "):
                chunk = chunk[1:]
            data = data + b"\n" + chunk if data else chunk
    if not data or data == b"[DONE]":
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


_EMPTY_CHOICE_KEYS = frozenset({"index", "delta", "logprobs", "finish_reason"})


def _empty_choice(choice: Any) -> bool:
    """A choice that says nothing: an empty delta, no finish reason, no logprobs."""
    return (isinstance(choice, dict) and choice.keys() <= _EMPTY_CHOICE_KEYS
            and not choice.get("delta") and choice.get("finish_reason") is None
            and choice.get("logprobs") is None)


def without_usage(event: bytes) -> bytes | None:
    """A chat-completions chunk event (with its terminator) minus its `usage` object, for a
    client that did not ask for usage (stream_options.include_usage not true).

    Returns None — drop the event — when nothing else is left: no choices, or only choices with
    an empty delta and no finish reason. A chunk that still says something (content, a finish
    reason, …) is kept, re-encoded without `usage`; other SSE fields of the event are kept.
    An event that is not a JSON chunk with a `usage` object is returned unchanged."""
    doc = _data_json(event)
    if not isinstance(doc, dict) or not isinstance(doc.get("usage"), dict):
        return event  # `"usage": null` carries nothing: left as the upstream sent it
    del doc["usage"]
    choices = doc.get("choices")
    if not choices or (isinstance(choices, list) and all(_empty_choice(c) for c in choices)):
        return None
    crlf = event.endswith(b"\r\n\r\n")
    lines = [line for line in event.split(b"\n")
             if line.rstrip(b"\r") and not line.startswith(b"data:")]
    lines.append(b"data: " + orjson.dumps(doc) + (b"\r" if crlf else b""))
    return b"\n".join(lines) + (b"\n\r\n" if crlf else b"\n\n")


def split_events(buffer: bytearray) -> list[bytes]:
    """Remove and return the complete SSE events (each with its terminator) at the head of
    `buffer`; a partial event stays in it. Accepts LF and CRLF line endings.

    One pass: each terminator is searched from the end of the previous event (the first CRLF
    one is remembered until passed), and the buffer is cut once, not once per event."""
    out: list[bytes] = []
    start = 0
    crlf = buffer.find(b"\r\n\r\n")
    while True:
        lf = buffer.find(b"\n\n", start)
        if 0 <= crlf < start:
            crlf = buffer.find(b"\r\n\r\n", start)
        if lf < 0 and crlf < 0:
            break
        end = crlf + 4 if crlf >= 0 and (lf < 0 or crlf < lf) else lf + 2
        out.append(bytes(buffer[start:end]))
        start = end
    if start:
        del buffer[:start]
    return out
