"""Server-to-server request signatures for the billing API (SPEC §8).

Header: `X-HMAC-Signature: keyId=<id>, ts=<unix seconds>, nonce=<16–64 url-safe chars>,
sig=<hex HMAC-SHA256>` over the canonical string

    METHOD \\n PATH \\n SORTED_QUERY \\n SHA256_HEX(BODY) \\n TS \\n NONCE

where SORTED_QUERY is the query's `name=value` pairs (as sent, percent-encoded) sorted and joined
with `&`. The timestamp must be within ±300 s of the gateway's clock; a nonce is accepted once per
key (remembered for the window in the SQL store only, never in Redis, so a Redis outage cannot
let a replay through); signatures are compared in constant time; several keys may be valid at
once (`GATEWAY_HMAC_KEYS=id1:secret1,id2:secret2`), so keys rotate by adding the new id, moving
callers over, then removing the old one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping

from gateway.problems import Unauthorized
from storage.ports import NonceStore

WINDOW_S = 300
_PART = re.compile(r"\s*([A-Za-z]+)=([^,\s]+)\s*")
_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def canonical(method: str, path: str, query: str, body: bytes, ts: str, nonce: str) -> bytes:
    """The signed string (see the module docstring)."""
    pairs = sorted(p for p in query.split("&") if p) if query else []
    return "\n".join([method.upper(), path, "&".join(pairs), hashlib.sha256(body).hexdigest(),
                      ts, nonce]).encode()


def sign(secret: str, method: str, path: str, query: str, body: bytes, ts: str,
         nonce: str) -> str:
    """Hex HMAC-SHA256 of the canonical string (what a caller computes)."""
    return hmac.new(secret.encode(), canonical(method, path, query, body, ts, nonce),
                    hashlib.sha256).hexdigest()


def header_for(key_id: str, secret: str, method: str, path: str, query: str, body: bytes,
               nonce: str, ts: int | None = None) -> str:
    """A complete `X-HMAC-Signature` value (for callers and tests)."""
    t = str(int(time.time()) if ts is None else ts)
    return (f"keyId={key_id}, ts={t}, nonce={nonce}, "
            f"sig={sign(secret, method, path, query, body, t, nonce)}")


async def verify(
    header: str, keys: Mapping[str, str], nonces: NonceStore, method: str, path: str,
    query: str, body: bytes, now: float | None = None,
) -> str:
    """Check a signature header; returns the key id. Raises Unauthorized (401) with a reason:
    malformed header, unknown key, timestamp outside ±300 s, bad signature, reused nonce."""
    parts = {m[1]: m[2] for m in (_PART.fullmatch(p) for p in header.split(",")) if m}
    key_id, ts, nonce, sig = (parts.get(k) for k in ("keyId", "ts", "nonce", "sig"))
    if not (key_id and ts and nonce and sig) or not ts.isdigit() or not _NONCE.match(nonce):
        raise Unauthorized("X-HMAC-Signature must be 'keyId=…, ts=…, nonce=…, sig=…'.")
    secret = keys.get(key_id)
    if secret is None:
        raise Unauthorized("Unknown HMAC key id.")
    clock = time.time() if now is None else now
    if abs(clock - int(ts)) > WINDOW_S:
        raise Unauthorized(f"Signature timestamp is outside ±{WINDOW_S} s of the server clock.")
    expected = sign(secret, method, path, query, body, ts, nonce)
    if not hmac.compare_digest(expected, sig.lower()):
        raise Unauthorized("Bad HMAC signature.")
    if not await nonces.remember(f"{key_id}:{nonce}", 2 * WINDOW_S):
        raise Unauthorized("This nonce was already used.")
    return key_id
