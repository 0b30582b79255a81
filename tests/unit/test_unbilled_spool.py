"""The unbilled spool round-trips call records and rejects damaged lines by number."""

from __future__ import annotations

import pytest

from gateway.unbilled import UnbilledSpool
from storage.ports import CallRecord


def test_spooled_calls_read_back_in_order(tmp_path):
    spool = UnbilledSpool(tmp_path / "u.jsonl")
    a = CallRecord("req_a", "acct_1", "chat", "gpt", 200, 12, 5, 7, streamed=True)
    b = CallRecord("req_b", "acct_2", "messages", None, None, 3, outcome="upstream_timeout")
    spool.append(a, 19, "clamp", 1, "hold_x")
    spool.append(b, 0, "overdraft", 2)
    assert list(spool.entries()) == [(a, 19, "clamp", "hold_x"), (b, 0, "overdraft", None)]


def test_a_damaged_line_is_named(tmp_path):
    path = tmp_path / "u.jsonl"
    spool = UnbilledSpool(path)
    spool.append(CallRecord("req_a", "acct_1", "chat", None, 200, 1), 1, "clamp", 1)
    with path.open("a") as f:
        f.write("{not json\n")
    with pytest.raises(ValueError, match=r"u\.jsonl:2"):
        list(spool.entries())
