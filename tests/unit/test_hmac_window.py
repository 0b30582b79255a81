"""HMAC request signatures (SPEC §8): the ±300 s timestamp window, checked on `verify` with the
server's clock injected so the boundary is exact (an e2e test against the wall clock cannot sit
on it: a loaded machine moves the clock between signing and checking)."""

from __future__ import annotations

import pytest

from gateway.hmac_auth import WINDOW_S, header_for, verify
from gateway.problems import Unauthorized

SECRET = "s" * 40
KEYS = {"k1": SECRET}
NOW = 1_750_000_000.25  # the server's clock (seconds, with a fraction as in time.time())


class SeenNonces:
    """In-memory NonceStore: remembers every key (ttl ignored: the test's clock never moves)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    async def remember(self, key: str, ttl_s: int) -> bool:
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


async def _verify_at(ts: int, nonce: str) -> str:
    header = header_for("k1", SECRET, "GET", "/v1/billing/balance/a", "", b"", nonce, ts)
    return await verify(header, KEYS, SeenNonces(), "GET", "/v1/billing/balance/a", "", b"",
                        now=NOW)


@pytest.mark.parametrize("skew", [-WINDOW_S + 1, 0, WINDOW_S - 1])
async def test_a_timestamp_within_300_seconds_of_the_server_clock_is_accepted(skew: int) -> None:
    assert await _verify_at(int(NOW) + skew, f"nonce-inside-window-{skew + WINDOW_S}") == "k1"


async def test_the_window_ends_300_seconds_either_side_of_the_server_clock() -> None:
    # int(NOW) - 300 is 300.25 s behind; int(NOW) + 300 is 299.75 s ahead
    with pytest.raises(Unauthorized, match="±300 s"):
        await _verify_at(int(NOW) - WINDOW_S, "nonce-behind-by-300")
    assert await _verify_at(int(NOW) + WINDOW_S, "nonce-ahead-by-300") == "k1"
    with pytest.raises(Unauthorized, match="±300 s"):
        await _verify_at(int(NOW) + WINDOW_S + 1, "nonce-ahead-by-301")


async def test_a_reused_nonce_is_refused_inside_the_window() -> None:
    nonces = SeenNonces()
    header = header_for("k1", SECRET, "GET", "/p", "", b"", "nonce-used-twice", int(NOW))
    assert await verify(header, KEYS, nonces, "GET", "/p", "", b"", now=NOW) == "k1"
    with pytest.raises(Unauthorized, match="already used"):
        await verify(header, KEYS, nonces, "GET", "/p", "", b"", now=NOW)
