"""Rate-limit counters in this process (the `Counters` port): fixed windows on the monotonic
clock. The embedded default, and the Redis counters' fallback during an outage."""

from __future__ import annotations

import time


class InProcessCounters:
    """Counters in this process (embedded default)."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[float, int]] = {}

    async def add(self, keys: list[str], amounts: list[int], window_s: int) -> list[int]:
        now = time.monotonic()
        if len(self._values) > 200_000:
            self._values = {k: v for k, v in self._values.items() if v[0] > now}
        out = []
        for key, amount in zip(keys, amounts, strict=True):
            expires, value = self._values.get(key, (0.0, 0))
            if expires <= now:
                value = 0
                expires = now + window_s
            value += amount
            self._values[key] = (expires, value)
            out.append(value)
        return out
