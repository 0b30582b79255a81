"""A client that leaves while its call waits for the upstream cancels that wait (SPEC §6: the
call is then settled and its hold released), and nothing else: not the settlement, not a
cancellation that came from elsewhere (shutdown)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.proxy.disconnects import DisconnectWatch


class Client:
    """An ASGI `receive` after the body was read: blocks until the client leaves."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()
        self.receiving = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        self.receiving.set()
        await self.gone.wait()
        return {"type": "http.disconnect"}


async def test_a_disconnect_while_waiting_for_the_upstream_cancels_the_wait() -> None:
    client, upstream_answered = Client(), asyncio.Event()

    async def leave() -> None:
        await client.receiving.wait()
        client.gone.set()

    leaving = asyncio.ensure_future(leave())
    watch = DisconnectWatch(client.receive, after_s=0)
    with pytest.raises(asyncio.CancelledError):
        await watch.guard(upstream_answered.wait())
    assert watch.caused_cancel()  # taken back: the task may go on to settle
    assert watch.left
    assert await asyncio.sleep(0, "settled") == "settled"  # not cancelled again
    watch.close()
    await leaving


async def test_a_disconnect_outside_the_wait_only_marks_the_client_gone() -> None:
    client = Client()
    watch = DisconnectWatch(client.receive, after_s=0)
    await client.receiving.wait()
    client.gone.set()
    while not watch.left:
        await asyncio.sleep(0)
    assert await watch.guard(asyncio.sleep(0, "answer")) == "answer"  # nothing cancelled
    assert not watch.caused_cancel()
    watch.close()


async def test_a_cancellation_from_elsewhere_is_not_taken_back() -> None:
    client = Client()
    started = asyncio.Event()

    async def call() -> None:
        watch = DisconnectWatch(client.receive, after_s=0)
        try:
            started.set()
            await watch.guard(asyncio.Event().wait())
        except asyncio.CancelledError:
            assert not watch.caused_cancel()
            raise
        finally:
            watch.close()

    task = asyncio.ensure_future(call())
    await started.wait()
    task.cancel()  # a shutdown, say
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_call_answered_before_the_delay_never_starts_a_watcher() -> None:
    client = Client()
    watch = DisconnectWatch(client.receive, after_s=60)
    assert await watch.guard(asyncio.sleep(0, "fast")) == "fast"
    watch.close()
    await asyncio.sleep(0)
    assert not client.receiving.is_set()
