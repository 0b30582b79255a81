"""Ids and key hashes: random ids for rows people see, sequential ids for hot-path rows, and the
one-way hash API keys are stored under."""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets


def new_id(prefix: str) -> str:
    """A random id like `acct_3kPq…` (96 random bits, URL-safe)."""
    return f"{prefix}_{secrets.token_urlsafe(12)}"


_PROCESS_TAG = secrets.token_hex(6)
_sequence = itertools.count(1)


def _new_process_tag() -> None:
    global _PROCESS_TAG, _sequence
    _PROCESS_TAG = secrets.token_hex(6)
    _sequence = itertools.count(1)


os.register_at_fork(after_in_child=_new_process_tag)  # forked workers must not reuse ids


def new_sequential_id(prefix: str) -> str:
    """A unique, non-secret id for hot-path rows (holds, requests): a random per-process tag
    plus a counter, e.g. `hold_3f9a0c1b2d4e_1a2b`. Unique across processes without a syscall
    per id (ids of accounts, keys and buckets stay fully random: `new_id`)."""
    return f"{prefix}_{_PROCESS_TAG}{next(_sequence):x}"


def hash_key(key: str) -> str:
    """SHA-256 hex of an API key: keys are stored only hashed (they are high-entropy, so a
    plain hash suffices; no password KDF is needed)."""
    return hashlib.sha256(key.encode()).hexdigest()
