"""The upstream client: the one place where the proxy does network I/O to upstreams.

A small HTTP/1.1 client on asyncio transports and the httptools response parser (issue 13:
aiohttp's client cost ~100 µs of gateway CPU per proxied call, a fifth of it; this one does the
same work in a fraction). It does only what the proxy needs: one request at a time per pooled
keep-alive connection (plain TCP or TLS), a request written in one `write`, the response head
awaited, the body read whole or as it arrives (chunked transfer coding decoded, never
decompressed: the proxy asks for `identity`), connect/read/total timeouts, no redirects, no
cookies, no proxies from the environment. Errors reach the proxy only as `UpstreamFailure`.

Connections are pooled per (scheme, host, port), last in first out; one goes back to the pool
when its response was read to its end and both sides keep it alive, and is dropped when its
response is abandoned, broken, timed out, or it sat idle for more than IDLE_S (an upstream
closing an idle connection must not cost a call). A request is never retried: a POST that
reached the upstream may have done (billable) work.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

from policies.schema import UpstreamSpec

IDLE_S = 15.0  # a pooled connection idle longer than this is closed, not reused
MAX_IDLE_PER_ORIGIN = 256  # idle connections kept per (scheme, host, port)
HIGH_WATER = 256 * 1024  # unread body bytes at which reading from the upstream pauses
# Methods sent without `Content-Length: 0` when they carry no body (as aiohttp did)
_NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "CONNECT", "TRACE"})


class UpstreamFailure(Exception):
    """The upstream could not be reached, broke the connection, or timed out.

    `timeout` tells a timeout (→ 504) from a connection failure (→ 502).
    """

    def __init__(self, message: str, *, timeout: bool) -> None:
        super().__init__(message)
        self.timeout = timeout


_Origin = tuple[str, str, int]  # (scheme, host, port)


class _Connection(asyncio.Protocol):
    """One keep-alive connection to an upstream and the response being read on it.

    Body bytes are kept in `chunks` (chunked coding already decoded) until the reader takes
    them; the reader waits on `waiter`, woken by the parser callbacks or the connection's end.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.lost = False
        self.error: BaseException | None = None  # why the connection failed mid-response
        self.waiter: asyncio.Future[None] | None = None
        self.idle = False  # pooled, between two requests: any byte arriving now is an error
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.headers: list[tuple[str, str]] = []
        self.status = 0
        self.head_done = False
        self.done = False
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.paused = False
        self.reuse = True

    # ---- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.idle:  # e.g. a 408 before closing: this connection is not reusable
            self.abort()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ConnectionError("the upstream switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"malformed response: {exc}"))

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost ends the response

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.head_done and not self.done and exc is None and self._until_close():
            self.done = True  # a body delimited by the connection's end ended normally
        elif not self.done and self.error is None:
            self.error = exc or ConnectionError("the upstream closed the connection")
        self._wake()

    # ---- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.done:  # bytes after the response's end: the connection is not reusable
            raise ConnectionError("the upstream sent more than one response")

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.head_done:  # after the head: a chunked body's trailer, dropped
            self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if 100 <= self.status < 200 and self.status != 101:
            self.headers = []  # an interim response (100 Continue …): the real one follows
            return
        self.head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered >= HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.head_done:
            return  # the end of an interim response
        self.done = True
        self.reuse = self.reuse and self.parser.should_keep_alive()  # only valid right now
        self._wake()

    # ---- helpers ---------------------------------------------------------------------------

    def _until_close(self) -> bool:
        """True when the response has neither Content-Length nor chunked coding: its body
        ends with the connection."""
        for k, v in self.headers:
            name = k.lower()
            if name == "content-length" or (name == "transfer-encoding"
                                             and "chunked" in v.lower()):
                return False
        return True

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.abort()
        self._wake()

    def abort(self) -> None:
        """Drop the connection (never reused)."""
        self.lost = True
        if self.transport is not None:
            self.transport.abort()

    def reusable(self) -> bool:
        """True when the response arrived whole and both sides keep the connection alive."""
        return self.done and self.reuse and not self.lost and self.error is None

    async def wait(self, deadline: float, read_timeout: float) -> None:
        """Wait for the parser (or the connection's end) to report progress. Raises
        TimeoutError after `read_timeout` s without progress or at `deadline` (loop time)."""
        loop = self.loop
        waiter = self.waiter = loop.create_future()
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        timer = loop.call_at(min(loop.time() + read_timeout, deadline), _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self.waiter = None


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def _request_bytes(method: str, target: str, host_line: bytes,
                   headers: list[tuple[str, str]], body: bytes) -> bytes:
    """The request as written on the wire: request line, `headers` (their own framing headers
    dropped), `Host` and `Accept` unless given, `Content-Length`, the body. Raises ValueError
    for a header value with a line break (it would split the request)."""
    head = [f"{method} {target} HTTP/1.1\r\n".encode("latin-1")]
    seen_host = seen_accept = False
    for k, v in headers:
        lk = k.lower()
        if lk == "host":
            seen_host = True
        elif lk == "accept":
            seen_accept = True
        elif lk == "content-length" or lk == "transfer-encoding":
            continue  # framed here, from the body
        if "\n" in v or "\r" in v:
            raise ValueError(f"header {k!r}: newline or carriage return in its value")
        head.append(f"{k}: {v}\r\n".encode("latin-1"))
    if not seen_host:
        head.append(host_line)
    if not seen_accept:
        head.append(b"accept: */*\r\n")
    if body or method not in _NO_BODY_METHODS:
        head.append(b"content-length: %d\r\n" % len(body))
    head.append(b"\r\n")
    if body:
        head.append(body)
    return b"".join(head)


@dataclass
class UpstreamResponse:
    """An upstream response whose body is read with `read()` or `iter_chunks()`."""

    status: int
    headers: list[tuple[str, str]]
    content_type: str
    _conn: _Connection | None  # None once released to the pool or dropped
    _client: UpstreamClient
    _origin: _Origin
    _deadline: float  # loop time: the route's total timeout
    _read_timeout: float

    async def _next(self) -> bytes:
        """The body bytes that arrived since the last call, waiting for some; b"" at the end.
        Raises UpstreamFailure."""
        conn = self._conn
        if conn is None:
            return b""
        while not conn.chunks:
            if conn.done:
                self.close()
                return b""
            if conn.error is not None or conn.lost:
                self.close()
                raise UpstreamFailure(f"upstream broke the response: {conn.error}",
                                      timeout=False)
            try:
                await conn.wait(self._deadline, self._read_timeout)
            except TimeoutError as exc:
                self.close()
                raise UpstreamFailure("upstream read timed out", timeout=True) from exc
            except BaseException:
                self.close()  # cancelled mid-body: the connection is not reusable
                raise
        chunks = conn.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        conn.chunks = []
        conn.buffered = 0
        return data

    async def read(self) -> bytes:
        """The whole body. Raises UpstreamFailure."""
        parts: list[bytes] = []
        while True:
            data = await self._next()
            if not data:
                return parts[0] if len(parts) == 1 else b"".join(parts)
            parts.append(data)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body chunks as they arrive. Raises UpstreamFailure."""
        while True:
            data = await self._next()
            if not data:
                return
            yield data

    def close(self) -> None:
        """Release the connection to the pool when its response arrived whole (read or not)
        and both sides keep it alive; else drop it. Idempotent."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if conn.reusable():
            self._client._put_back(self._origin, conn)
        else:
            conn.abort()


class UpstreamClient:
    """Pooled HTTP/1.1 client to every upstream. Create inside a running loop;
    `await close()`."""

    def __init__(self, *, limit: int = 512, ssl_context: ssl.SSLContext | None = None) -> None:
        """`limit`: idle connections kept per origin at most (MAX_IDLE_PER_ORIGIN when
        larger); `ssl_context`: TLS of https upstreams (default: certificates verified
        against the system's trust store, `ssl.create_default_context()`)."""
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._max_idle = min(limit, MAX_IDLE_PER_ORIGIN)
        self._ssl = ssl_context
        self._urls: dict[str, tuple[_Origin, bytes]] = {}  # scheme://host:port -> parsed
        self._closed = False

    def _parse(self, url: str) -> tuple[_Origin, bytes, str]:
        """(origin, `Host` header line, request target) of an absolute http(s) URL. Raises
        UpstreamFailure for another scheme."""
        cut = url.find("/", url.find("//") + 2)
        base, target = (url, "/") if cut < 0 else (url[:cut], url[cut:])
        parsed = self._urls.get(base)
        if parsed is None:
            parts = urlsplit(base)
            scheme = parts.scheme.lower()
            if scheme not in ("http", "https") or not parts.hostname:
                raise UpstreamFailure(f"upstream unreachable: unsupported URL {base!r}",
                                      timeout=False)
            default = 443 if scheme == "https" else 80
            port = parts.port or default
            host = parts.hostname
            shown = f"[{host}]" if ":" in host else host
            host_header = shown if port == default else f"{shown}:{port}"
            parsed = ((scheme, host, port), b"host: " + host_header.encode("idna") + b"\r\n")
            if len(self._urls) < 1024:
                self._urls[base] = parsed
        return parsed[0], parsed[1], target

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def _pooled(self, origin: _Origin, now: float) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if not conn.lost and now - conn.idle_since <= IDLE_S:
                conn.idle = False
                return conn
            conn.abort()
        return None

    def _put_back(self, origin: _Origin, conn: _Connection) -> None:
        if self._closed:
            conn.abort()
            return
        conn._reset()
        conn.idle = True
        conn.idle_since = conn.loop.time()
        idle = self._idle.setdefault(origin, [])
        if len(idle) >= self._max_idle:
            idle.pop(0).abort()  # the longest idle one
        idle.append(conn)

    async def _connect(self, origin: _Origin, timeout: float,
                       loop: asyncio.AbstractEventLoop) -> _Connection:
        scheme, host, port = origin
        ctx = self._ssl_context() if scheme == "https" else None
        _transport, conn = await asyncio.wait_for(loop.create_connection(
            lambda: _Connection(loop), host, port, ssl=ctx,
            server_hostname=host if ctx is not None else None), timeout)
        return conn

    async def send(
        self, method: str, url: str, headers: list[tuple[str, str]], body: bytes,
        spec: UpstreamSpec,
    ) -> UpstreamResponse:
        """Send the request; returns once the response head arrived. Raises UpstreamFailure,
        or ValueError for a header value with a line break. Headers are sent as given, plus
        `Host`, `Content-Length` (when there is a body or the method carries one) and
        `Accept: */*` when absent."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadline = now + spec.total_timeout_s
        origin, host_line, target = self._parse(url)
        request = _request_bytes(method, target, host_line, headers, body)
        conn = self._pooled(origin, now)
        if conn is None:
            try:
                conn = await self._connect(
                    origin, min(spec.connect_timeout_s, spec.total_timeout_s), loop)
            except TimeoutError as exc:
                raise UpstreamFailure("upstream did not answer in time", timeout=True) from exc
            except OSError as exc:
                raise UpstreamFailure(f"upstream unreachable: {exc}", timeout=False) from exc
        try:
            assert conn.transport is not None
            conn.transport.write(request)
            while not conn.head_done:
                if conn.error is not None or conn.lost:
                    raise UpstreamFailure(f"upstream unreachable: {conn.error or 'closed'}",
                                          timeout=False)
                await conn.wait(deadline, spec.read_timeout_s)
        except TimeoutError as exc:
            conn.abort()
            raise UpstreamFailure("upstream did not answer in time", timeout=True) from exc
        except BaseException:
            conn.abort()  # cancelled (the client left) or failed: never reused
            raise
        content_type = ""
        for k, v in conn.headers:
            if len(k) == 12 and k.lower() == "content-type":
                content_type = v
                break
        if method == "HEAD":  # no body follows, whatever the head says; not reused (the
            conn.done = True  # parser would read the next response's bytes as this body)
            conn.reuse = False
        return UpstreamResponse(conn.status, conn.headers, content_type, conn, self, origin,
                                deadline, spec.read_timeout_s)

    async def close(self) -> None:
        """Close every pooled connection; later releases close theirs."""
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
        self._idle.clear()
