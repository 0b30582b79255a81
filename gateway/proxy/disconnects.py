"""Noticing a client that leaves while the gateway waits for a non-streamed upstream answer.

The request body has been read by then, so the next ASGI message is `http.disconnect`. One small
watcher task awaits it; while the proxy is inside `guard(...)` (awaiting the upstream) a
disconnect cancels the proxy's own task there, so the upstream request is abandoned at once
instead of running — with its hold renewed — until the read timeout. Outside `guard` a
disconnect only sets `left` (the settlement that follows must never be cut short).

The watcher starts only once a call has waited `WATCH_AFTER_S` for its upstream: measured on a
micro-benchmark, a watcher task per call adds ≈13–19 µs, the timer that defers it ≈3–6 µs
(uvloop / asyncio; a metered call costs ≈430 µs of CPU), and calls that answer sooner gain
nothing from noticing a disconnect before their answer. A client leaving a slow call is noticed
at most `WATCH_AFTER_S` late.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")
WATCH_AFTER_S = 0.25  # seconds a call waits for its upstream before its client is watched


class DisconnectWatch:
    """Watch `receive` for `http.disconnect` on behalf of the current task. Create it inside
    the task that awaits the upstream; `close()` when done (idempotent).

    After a `CancelledError` out of `guard`, `caused_cancel()` tells whether this watch cancelled
    the task (the client left) — and if so takes the cancellation back — or something else did
    (shutdown), in which case it must propagate.
    """

    __slots__ = ("_armed", "_fired", "_receive", "_task", "_timer", "_watcher", "left")

    def __init__(self, receive: Any, after_s: float = WATCH_AFTER_S) -> None:
        self._task = asyncio.current_task()
        self._receive = receive
        self._armed = False
        self._fired = False
        self.left = False
        self._watcher: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            after_s, self._start)

    def _start(self) -> None:
        self._timer = None
        self._watcher = asyncio.ensure_future(self._watch(self._receive))

    async def _watch(self, receive: Any) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.left = True
        if self._armed and self._task is not None:
            self._fired = True
            self._task.cancel()

    async def guard(self, awaitable: Awaitable[T]) -> T:
        """Await `awaitable`; a client disconnect meanwhile cancels it (CancelledError)."""
        self._armed = True
        try:
            return await awaitable
        finally:
            self._armed = False

    def caused_cancel(self) -> bool:
        """True when the pending cancellation came from a client disconnect; the task is then
        uncancelled and may go on (to settle). False: re-raise the CancelledError."""
        if not self._fired or self._task is None:
            return False
        self._fired = False
        return self._task.uncancel() == 0

    def close(self) -> None:
        """Stop watching."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
