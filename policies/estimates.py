"""Estimates: how many ledger units to hold before a call (SPEC §5)."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from policies.meters import Meter, Usage
from policies.schema import FixedEstimate, LearnedEstimate, RequestEstimate

BYTES_PER_TOKEN = 4  # rough prompt-size heuristic for hold estimates only; never billed

# The output-limit fields each provider reads, by route protocol (provider API references):
# Chat Completions `max_tokens` (deprecated) and `max_completion_tokens`; Responses
# `max_output_tokens`; Anthropic Messages `max_tokens`. `plain` is an API of unknown shape:
# every known name counts. Embeddings produce no output.
OUTPUT_LIMIT_FIELDS: dict[str, tuple[str, ...]] = {
    "openai_chat": ("max_tokens", "max_completion_tokens"),
    "openai_responses": ("max_output_tokens",),
    "anthropic_messages": ("max_tokens",),
    "openai_embeddings": (),
    "plain": ("max_tokens", "max_completion_tokens", "max_output_tokens"),
}
KNOWN_OUTPUT_LIMIT_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
MAX_OUTPUT_LIMIT = 2**31 - 1  # tokens; no model comes near it, so anything above is a mistake


class InvalidOutputLimit(ValueError):
    """An output-limit field of the request body is not an integer from 1 to 2³¹−1 (a bool, a
    float such as 1.5 or 1e30, a string, zero, a negative or a larger number). `field` names
    it; the proxy answers 400 bad-request."""

    def __init__(self, field: str, value: Any) -> None:
        self.field = field
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "…"
        super().__init__(f"{field} must be an integer from 1 to {MAX_OUTPUT_LIMIT}; got {shown}.")


def output_limit(protocol: str, body: Any) -> int | None:
    """The output-token limit to estimate a call by: the largest output-limit field present in
    `body` (tokens), None when it sets none (absent or null) or the protocol has no output.

    Generous on purpose: on every protocol with output, every known field is read, not only the
    provider's own (OUTPUT_LIMIT_FIELDS) — OpenAI-compatible servers differ in which one they
    honour, and the largest is the most an upstream may produce. Raises InvalidOutputLimit
    (naming the field) for a present field that is not an integer in [1, 2³¹−1] — except on
    `plain` routes, whose API is not known to mean an output limit by it: there such a value is
    ignored."""
    if not OUTPUT_LIMIT_FIELDS.get(protocol) or not isinstance(body, dict):
        return None
    found: int | None = None
    for name in KNOWN_OUTPUT_LIMIT_FIELDS:
        value = body.get(name)
        if value is None:  # absent, or JSON null: the provider's default applies
            continue
        if type(value) is not int or not 0 < value <= MAX_OUTPUT_LIMIT:
            if protocol == "plain":  # an API of unknown shape may mean something else by it
                continue
            raise InvalidOutputLimit(name, value)
        if found is None or value > found:
            found = value
    return found


class Estimator:
    """A compiled estimate for one route.

    `estimate(model, output_limit, body_bytes)` returns the ledger units to hold (`output_limit`:
    the request's output-token limit from `output_limit()`, None when it set none); `observe(units)`
    feeds the actual cost of a finished call (used by `learned`). `stats()` tells the sample size
    and confidence shown to clients. Thread-safe.
    """

    def __init__(
        self, spec: FixedEstimate | RequestEstimate | LearnedEstimate, meter: Meter
    ) -> None:
        self.spec = spec
        self.meter = meter
        self._lock = threading.Lock()
        window = spec.window if isinstance(spec, LearnedEstimate) else 1
        self._samples: deque[int] = deque(maxlen=window)
        self._learned: int | None = None

    def estimate(self, model: str | None, limit: int | None, body_bytes: int) -> int:
        """Ledger units to hold: input ≈ `body_bytes` / 4 tokens plus `limit` output tokens
        (else `default_max_tokens`) for request estimates. Raises UnpricedModel for an unpriced
        model (request estimates)."""
        spec = self.spec
        if isinstance(spec, FixedEstimate):
            return spec.units
        if isinstance(spec, RequestEstimate):
            usage = Usage(
                input_tokens=body_bytes // BYTES_PER_TOKEN,
                output_tokens=spec.default_max_tokens if limit is None else limit,
            )
            return self.meter.cost(model, usage, 0)
        return self._learned if self._learned is not None else spec.default

    def preflight(self) -> int | None:
        """Units to expect for one call when no request is at hand (batch preflight): the
        fixed or learned figure; None for request-based estimates (they need the request)."""
        spec = self.spec
        if isinstance(spec, FixedEstimate):
            return spec.units
        if isinstance(spec, LearnedEstimate):
            return self._learned if self._learned is not None else spec.default
        return None

    def observe(self, units: int) -> None:
        """Record the actual cost (ledger units) of a finished call of this route."""
        spec = self.spec
        if not isinstance(spec, LearnedEstimate):
            return
        with self._lock:
            self._samples.append(units)
            if len(self._samples) >= spec.min_samples:
                ordered = sorted(self._samples)
                rank = max(0, -(-len(ordered) * spec.percentile // 100) - 1)
                self._learned = ordered[rank]

    def stats(self) -> dict[str, Any]:
        """{"kind", "samples", "confidence": "high"|"medium"|"low"|"fixed"}."""
        spec = self.spec
        if not isinstance(spec, LearnedEstimate):
            return {"kind": spec.type, "samples": 0, "confidence": "fixed"}
        n = len(self._samples)
        confidence = "high" if n >= spec.window // 2 and n >= spec.min_samples else (
            "medium" if n >= spec.min_samples else "low")
        return {"kind": spec.type, "samples": n, "confidence": confidence}
