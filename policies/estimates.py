"""Estimates: how many ledger units to hold before a call (SPEC §5)."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from policies.meters import Meter, Usage
from policies.schema import FixedEstimate, LearnedEstimate, RequestEstimate

BYTES_PER_TOKEN = 4  # rough prompt-size heuristic for hold estimates only; never billed
_OUTPUT_LIMIT_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def requested_output_tokens(body: Any, default: int) -> int:
    """The output-token ceiling the request asks for, else `default` (seeds: from `max_tokens`)."""
    if isinstance(body, dict):
        for name in _OUTPUT_LIMIT_FIELDS:
            value = body.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return default


class Estimator:
    """A compiled estimate for one route.

    `estimate(model, body, body_bytes)` returns the ledger units to hold; `observe(units)`
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

    def estimate(self, model: str | None, body: Any, body_bytes: int) -> int:
        """Ledger units to hold. Raises UnpricedModel for an unpriced model (request estimates)."""
        spec = self.spec
        if isinstance(spec, FixedEstimate):
            return spec.units
        if isinstance(spec, RequestEstimate):
            usage = Usage(
                input_tokens=body_bytes // BYTES_PER_TOKEN,
                output_tokens=requested_output_tokens(body, spec.default_max_tokens),
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
