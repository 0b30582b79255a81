"""Deterministic accounting: prompt and output tokens of a request body (pure functions).

The rules are stated in the package docstring (``tests.fakes.upstream``).
"""

from __future__ import annotations

from typing import Any

from .wire import Json

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

_TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})


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

    See the package docstring for exactly which fields are included.
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
