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

Modules
-------
``tokens``     deterministic usage (the rules above), pure
``knobs``      knob parsing and pacing, pure
``wire``       JSON bytes, SSE framing, provider-looking ids
``openai``     Chat Completions / Responses / embeddings payloads and SSE streams
``anthropic``  Messages payloads and SSE stream
``log``        ``RequestLog`` and what a recorded request holds
``exchange``   one HTTP exchange over raw ASGI: knobs, pacing, resets, disconnects
``app``        the Starlette routes and endpoints
``server``     ``FakeUpstream``: uvicorn on its own thread and loop
``__main__``   the command line
"""

from __future__ import annotations

from .knobs import KNOBS, knobs_for
from .log import RequestLog
from .openai import embedding_for
from .server import FakeUpstream
from .tokens import (
    DEFAULT_OUTPUT_TOKENS,
    MAX_OUTPUT_TOKENS,
    output_text_for,
    output_tokens_for,
    prompt_text_for,
    prompt_tokens_for,
)

__all__ = [
    "DEFAULT_OUTPUT_TOKENS",
    "KNOBS",
    "MAX_OUTPUT_TOKENS",
    "FakeUpstream",
    "RequestLog",
    "embedding_for",
    "knobs_for",
    "output_text_for",
    "output_tokens_for",
    "prompt_text_for",
    "prompt_tokens_for",
]
