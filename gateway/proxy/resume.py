"""Resume tokens (SPEC §7): 16 random bytes, 1-hour TTL, single use, stored only as a hash,
bound to the account and to the request (method, path, body digest). Never logged.

This module holds the gateway's rules: a token's format as the edge checks it, and the binding
to one request. Issuing, storing and consuming tokens is the stores' (storage.resume_tokens,
storage.ports.ResumeTokenStore and its SQL, Redis and in-process adapters).
"""

from __future__ import annotations

import hashlib
from typing import Literal

from storage.resume_tokens import TOKEN_RE

Status = Literal["consumed", "invalid"]


def well_formed(token: str) -> bool:
    """True if `token` has the resume-token format (else the request gets a 400 problem)."""
    return bool(TOKEN_RE.match(token))


def request_binding(method: str, path: str, body: bytes) -> str:
    """Digest binding a token to one request: SHA-256 over method, path and body digest."""
    body_digest = hashlib.sha256(body).hexdigest()
    return hashlib.sha256(f"{method}\n{path}\n{body_digest}".encode()).hexdigest()
