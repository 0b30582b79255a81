"""Resume tokens (SPEC §7): 16 random bytes, 1-hour TTL, single use, stored only as a hash,
bound to the account and to the request (method, path, body digest). Never logged.

`InProcessResumeTokens` is the embedded default: a dict in this process (asyncio runs one
coroutine at a time, so check-and-mark in `consume` is atomic). A Redis-backed store with the same
methods carries them across processes.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Literal, Protocol

TOKEN_PREFIX = "rt_"
TOKEN_RE = re.compile(r"^rt_[A-Za-z0-9_-]{22}$")
TTL_S = 3600
Status = Literal["consumed", "invalid"]


def new_token() -> str:
    """`rt_` + base64url (no padding) of 16 bytes from the OS CSPRNG."""
    return TOKEN_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()


def well_formed(token: str) -> bool:
    """True if `token` has the resume-token format (else the request gets a 400 problem)."""
    return bool(TOKEN_RE.match(token))


def token_hash(token: str) -> str:
    """SHA-256 hex of the token: the only form that is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def request_binding(method: str, path: str, body: bytes) -> str:
    """Digest binding a token to one request: SHA-256 over method, path and body digest."""
    body_digest = hashlib.sha256(body).hexdigest()
    return hashlib.sha256(f"{method}\n{path}\n{body_digest}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What a token is bound to. `expires_at_ms` is UTC epoch ms."""

    account_id: str
    binding: str
    operation_id: str
    expires_at_ms: int


class ResumeTokens(Protocol):
    """Store of resume tokens; implementations must make `consume` atomic (at most once)."""

    async def issue(self, account_id: str, binding: str, operation_id: str) -> tuple[str, int]:
        """Create a token; returns (token, expires_at_ms)."""
        ...

    async def lookup(self, token: str) -> TokenRecord | None:
        """The live, unused record of `token`, or None (unknown, expired or used)."""
        ...

    async def consume(self, token: str) -> bool:
        """Mark the token used; True only for the single caller that consumed it."""
        ...


class InProcessResumeTokens:
    """In-process resume-token store (embedded default). Expired entries are swept lazily."""

    def __init__(self, ttl_s: int = TTL_S) -> None:
        self.ttl_ms = ttl_s * 1000
        self._live: dict[str, TokenRecord] = {}
        self._last_sweep = 0.0

    async def issue(self, account_id: str, binding: str, operation_id: str) -> tuple[str, int]:
        self._sweep()
        token = new_token()
        expires = time.time_ns() // 1_000_000 + self.ttl_ms
        self._live[token_hash(token)] = TokenRecord(account_id, binding, operation_id, expires)
        return token, expires

    async def lookup(self, token: str) -> TokenRecord | None:
        record = self._live.get(token_hash(token))
        if record is None or record.expires_at_ms <= time.time_ns() // 1_000_000:
            return None
        return record

    async def consume(self, token: str) -> bool:
        record = self._live.pop(token_hash(token), None)
        return record is not None and record.expires_at_ms > time.time_ns() // 1_000_000

    def _sweep(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep < 60:
            return
        self._last_sweep = now
        cutoff = time.time_ns() // 1_000_000
        for h in [h for h, r in self._live.items() if r.expires_at_ms <= cutoff]:
            del self._live[h]
