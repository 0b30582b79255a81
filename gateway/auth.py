"""Caller authentication: API key → account (SPEC §6). Keys arrive as `Authorization: Bearer`
or `X-API-Key`; they are looked up by SHA-256 and cached for a short TTL so the hot path does
no database read per call (a revoked key stops working within the TTL).

During a store outage a known key keeps working from its last good lookup (for up to
`STALE_S`), so routes with fail mode `allow` keep serving; unknown keys get the 503.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from storage.engine.budgets import Limits
from storage.ids import hash_key
from storage.ports import Accounts, StoreUnavailable

STALE_S = 3600.0  # how long a known key is trusted from cache while the store is unreachable
_NEGATIVE_TTL_S = 5.0


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated account, its plan key, and `key_id` (a prefix of the key's SHA-256,
    safe to use in counters and logs); `api_key_id` is the stored key's id (`key_…`, on usage
    records) and `limits` its spending limits (ledger units; as of the cached lookup)."""

    account_id: str
    plan_key: str
    key_id: str = ""
    api_key_id: str | None = None
    limits: Limits = field(default_factory=Limits)


def key_from_headers(authorization: bytes | None, x_api_key: bytes | None) -> str | None:
    """The presented API key, or None. `Authorization: Bearer K` wins over `X-API-Key: K`."""
    if authorization:
        scheme, _, value = authorization.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    if x_api_key:
        value = x_api_key.decode("latin-1").strip()
        return value or None
    return None


class KeyCache:
    """Resolves API keys through the store (`Accounts`) with a TTL cache (`ttl_s` seconds;
    0 = look up every call while the store is up).

    Unknown keys are cached too (for at most 5 s) so a flood of bad keys does not reach the
    database. Raises StoreUnavailable when the store is down and the key has no positive entry
    younger than STALE_S.
    """

    def __init__(self, accounts: Accounts, ttl_s: float) -> None:
        self._accounts = accounts
        self._ttl = ttl_s
        # digest -> (fresh until, usable-when-store-down until, caller or None)
        self._cache: dict[str, tuple[float, float, Caller | None]] = {}

    async def resolve(self, key: str) -> Caller | None:
        digest = hash_key(key)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[2]
        try:
            row = await self._accounts.resolve_key_hash(digest)
        except StoreUnavailable:
            if hit is not None and hit[2] is not None and hit[1] > now:
                return hit[2]
            raise
        caller = None if row is None else Caller(row.account_id, row.plan_key, digest[:16],
                                                 row.key_id, row.limits)
        if len(self._cache) > 100_000:
            self._cache.clear()
        fresh = self._ttl if caller else min(self._ttl, _NEGATIVE_TTL_S)
        self._cache[digest] = (now + fresh, now + STALE_S if caller else now, caller)
        return caller

    def forget(self, account_id: str | None = None) -> None:
        """Drop cached entries (all, or one account's) — after revoking keys or changing plans."""
        if account_id is None:
            self._cache.clear()
            return
        for k in [k for k, (_, _, c) in self._cache.items() if c and c.account_id == account_id]:
            del self._cache[k]
