"""Pure helpers of the forwarding step: reading the request body within its limit, and which
headers cross the gateway in each direction (RFC 9110 §7.6.1 hop-by-hop; SPEC §6: the caller's
credentials are never forwarded, the upstream's are injected; upward only allow-listed headers
pass, see policies/headers.py)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from gateway.problems import PayloadTooLarge
from policies.headers import ForwardRules

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
_NOT_FORWARDED_DOWN = HOP_BY_HOP | {
    "content-length", "date", "server", "x-request-id",
    # the upstream's cookies would land on the gateway's origin; the operator's account ids are
    # not the caller's business
    "set-cookie", "openai-organization", "openai-project", "anthropic-organization-id",
}


def declared_length(value: bytes) -> int | None:
    """A Content-Length header value as an int; None when it is not a plain number of at most
    19 digits (the server refuses a malformed one before the app runs; the counting limit of
    `read_body` / `BodyLimit` still applies either way)."""
    return int(value) if value.isdigit() and len(value) < 20 else None


class ClientDisconnected(Exception):
    """The client left before its request body was complete: nothing is forwarded or charged
    (a truncated body must never reach the upstream as if it were the request)."""


async def read_body(receive: Any, limit: int, declared: int | None) -> bytes:
    """The whole request body, at most `limit` bytes. Raises PayloadTooLarge (413) — early when
    Content-Length already says so, otherwise as soon as the limit is passed — and
    ClientDisconnected when the client leaves before the last chunk."""
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"The body is {declared} bytes; this route accepts {limit}.")
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected("the client left while sending its request body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The body passed {limit} bytes, this route's limit.")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def upstream_headers(
    raw: Iterable[tuple[bytes, bytes]],
    rules: ForwardRules,
    auth: tuple[str, str] | None,
    defaults: Sequence[tuple[str, str]],
) -> list[tuple[str, str]]:
    """Headers to send upstream: the caller's headers that `rules` allow (feature headers cut
    down to their allowed items; any the caller's `Connection` names dropped), then the policy
    defaults for headers not sent, the upstream credential, and an identity encoding so usage
    can be read. Everything else the caller sent is dropped (policies/headers.py)."""
    names, prefixes, values = rules.names, rules.prefixes, rules.values
    kept: list[tuple[str, str]] = []
    named: bytes | None = None
    for k, v in raw:
        k = k.lower()
        if k in names or k.startswith(prefixes):
            kept.append((k.decode("latin-1"), v.decode("latin-1")))
        elif k == b"connection":
            named = v.lower() if named is None else named + b"," + v.lower()
        elif k in values:
            items = rules.allowed_items(k, v)
            if items is not None:
                kept.append((k.decode("latin-1"), items))
    if named is not None:
        drop = {t.strip() for t in named.decode("latin-1").split(",")}
        kept = [(k, v) for k, v in kept if k not in drop]
    if defaults:
        present = {k for k, _ in kept}
        for name, value in defaults:
            if name not in present:
                kept.append((name, value))
    if auth is not None:
        kept.append(auth)
    kept.append(("accept-encoding", "identity"))
    return kept


def downstream_headers(upstream: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers that go to the client; its request id is kept as
    `x-upstream-request-id` (the gateway's own `x-request-id` is added by the caller). Dropped:
    hop-by-hop headers and any the upstream's `Connection` names, `set-cookie`, the operator's
    organization/project ids, and anything `x-gateway-*` (only the gateway speaks for itself)."""
    out: list[tuple[bytes, bytes]] = []
    named: set[str] = set()
    for k, v in upstream:
        name = k.lower()
        if name == "x-request-id":
            out.append((b"x-upstream-request-id", v.encode("latin-1")))
        elif name == "connection":
            named.update(t.strip().lower() for t in v.split(","))
        elif name not in _NOT_FORWARDED_DOWN and not name.startswith("x-gateway-"):
            out.append((name.encode("latin-1"), v.encode("latin-1")))
    if named:
        out = [(k, v) for k, v in out if k.decode("latin-1") not in named]
    return out
