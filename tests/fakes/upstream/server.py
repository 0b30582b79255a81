"""``FakeUpstream``: the fake served by uvicorn on its own thread and event loop."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .app import build_app
from .exchange import ServerState
from .log import RequestLog
from .wire import Json

STARTUP_TIMEOUT_S = 5.0
"""How long ``FakeUpstream.start`` waits for the socket to serve (seconds)."""
GRACEFUL_SHUTDOWN_S = 0.3
"""uvicorn's graceful-shutdown budget before it cancels tasks (seconds)."""


class _QuietH11Protocol(H11Protocol):
    """uvicorn's h11 protocol without access logging.

    Avoids ``Config(access_log=False)``, which reconfigures the process-wide
    ``uvicorn.access`` logger (and would silence a gateway served in-process).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.access_log = False


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (0 = any free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _port_accepts(host: str, port: int) -> bool:
    """True if a TCP connect to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class FakeUpstream:
    """The fake upstream running on its own thread + event loop.

    Attributes:
        url: ``"http://127.0.0.1:PORT"`` (no trailing slash, no ``/v1``).
        host, port: where it listens.
        requests: ``RequestLog`` of recorded request dicts (see the package docstring).
        disconnects: ``RequestLog`` of requests whose client left before the
            response was complete (see the package docstring).
        delay_ms: delay before every API response starts (milliseconds); may be
            changed at any time from any thread.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, delay_ms: float = 0) -> None:
        self.host = host
        self.port = port
        self.delay_ms = delay_ms
        self.requests = RequestLog()
        self.disconnects = RequestLog()
        self._state: ServerState | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``."""
        return f"http://{self.host}:{self.port}"

    def clear(self) -> None:
        """Forget recorded requests and disconnects."""
        self.requests.clear()
        self.disconnects.clear()

    def wait_for_requests(self, count: int, timeout_s: float = 2.0) -> list[Json]:
        """Block until ``count`` requests were recorded (timeout in seconds)."""
        return self.requests.wait_for(count, timeout_s)

    def start(self) -> FakeUpstream:
        """Bind, start serving in a background thread, wait until it accepts."""
        if self._thread is not None:
            raise RuntimeError("FakeUpstream already started")
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        self._state = ServerState(self.requests, lambda: float(self.delay_ms), self.disconnects)
        config = uvicorn.Config(
            build_app(self._state),
            host=self.host,
            port=self.port,
            http=_QuietH11Protocol,
            lifespan="off",
            log_config=None,  # leave the process's logging configuration alone
            log_level=None,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._run, args=(sock,), name=f"fake-upstream-{self.port}", daemon=True
        )
        self._thread.start()
        self._wait_started()
        return self

    def _run(self, sock: socket.socket) -> None:
        """Thread body: own event loop running uvicorn until stopped."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            assert self._server is not None
            loop.run_until_complete(self._server.serve(sockets=[sock]))
        except BaseException as exc:  # noqa: BLE001 - surfaced by start() as the cause
            self._error = exc
        finally:
            self._close_loop(loop)
            sock.close()

    @staticmethod
    def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
        """Cancel leftover tasks and close the loop."""
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    def _wait_started(self) -> None:
        """Wait until uvicorn serves and the port accepts connections."""
        assert self._server is not None and self._thread is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._server.started and _port_accepts(self.host, self.port):
                return
            if not self._thread.is_alive():
                break
            time.sleep(0.005)
        error = self._error
        self.stop()
        raise RuntimeError(f"fake upstream failed to start on {self.url}") from error

    def stop(self) -> None:
        """Stop serving: end in-flight requests, close sockets, join the thread."""
        thread, server, loop, state = self._thread, self._server, self._loop, self._state
        if thread is None or server is None:
            return
        if loop is not None and state is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(state.shutdown)
            except RuntimeError:  # loop closed meanwhile
                pass
        server.should_exit = True
        thread.join(timeout=5.0)
        self._thread = self._server = self._loop = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

