"""Resume tokens as every store keeps them (SPEC §7): `rt_` + 16 random bytes, a 1-hour TTL, and
only the SHA-256 of a token stored. The stores are `storage.sql.resume_tokens` (shared default),
`storage.redis_state` (with Redis) and `storage.memory.resume_tokens` (in process); the rule
binding a token to one request is the gateway's (`gateway.proxy.resume`)."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

TOKEN_PREFIX = "rt_"
TOKEN_RE = re.compile(r"^rt_[A-Za-z0-9_-]{22}$")
TTL_S = 3600


def new_token() -> str:
    """`rt_` + base64url (no padding) of 16 bytes from the OS CSPRNG."""
    return TOKEN_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()


def token_hash(token: str) -> str:
    """SHA-256 hex of the token: the only form that is stored."""
    return hashlib.sha256(token.encode()).hexdigest()
