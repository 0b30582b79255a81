"""What the fake records: the lock-guarded request log and the request-dict fields."""

from __future__ import annotations

import json
import threading
from typing import Any

from starlette.types import Scope

from .wire import Json


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


def headers_of(scope: Scope) -> dict[str, str]:
    """Request headers as a dict with lower-cased names (repeats joined by ", ")."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def parse_json(raw: bytes) -> Any:
    """Parsed JSON of a body, or None if empty / not JSON."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None
