"""What every dashboard-session adapter shares: the session id format and its stored hash.

A session id is `ds_` + 32 random bytes (URL-safe base64): opaque, unguessable, and kept by the
store only as its SHA-256 hex, so a copy of the database lets nobody sign in. The CSRF token is
another 24 random bytes, useless without the cookie (issue 12, OWASP's synchronizer token).
"""

from __future__ import annotations

import hashlib
import secrets

SESSION_PREFIX = "ds_"
MAX_SESSION_ID = 64  # longer presented ids are refused without a lookup


def new_session_id() -> str:
    """A fresh session id (`ds_` + 43 URL-safe characters)."""
    return SESSION_PREFIX + secrets.token_urlsafe(32)


def new_csrf_token() -> str:
    """A fresh CSRF token (32 URL-safe characters)."""
    return secrets.token_urlsafe(24)


def session_hash(session_id: str) -> str:
    """SHA-256 hex of a session id: the only form a store keeps."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def well_formed(session_id: str) -> bool:
    """True when `session_id` could be one of ours (prefix, bounded length)."""
    return session_id.startswith(SESSION_PREFIX) and len(session_id) <= MAX_SESSION_ID
