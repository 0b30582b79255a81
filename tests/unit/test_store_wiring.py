"""The one wiring point picks the store's adapters (gateway.app.build_services): a `memory://`
database URL runs the whole gateway on the in-process store (storage/memory), through the same
ports the SQL store serves."""

from __future__ import annotations

from pathlib import Path

from gateway.app import MEMORY_URL, build_services
from gateway.settings import Settings
from storage.engine.buckets import Source
from storage.memory.ledger import MemoryLedger
from storage.ports import Admission, CallRecord


async def test_a_memory_url_wires_every_port_to_the_in_process_store(tmp_path: Path) -> None:
    unused = tmp_path / "unused.db"
    settings = Settings.from_env({"GATEWAY_DATABASE_URL": f"sqlite:///{unused}",
                                  "GATEWAY_UNBILLED_PATH": str(tmp_path / "unbilled.jsonl")})
    # GATEWAY_DATABASE_URL does not accept memory:// (the CLI would migrate and serve workers);
    # the wiring takes it from settings made in process.
    s = await build_services(settings.model_copy(update={"database_url": MEMORY_URL}))
    try:
        assert isinstance(s.ledger, MemoryLedger)
        assert s.accounts is s.ledger and s.event_log is s.ledger
        plan = s.policy.plans[s.policy.document.default_plan]
        account = await s.accounts.create_account(plan)
        _key_id, key = await s.accounts.create_api_key(account)
        caller = await s.keys.resolve(key)
        assert caller is not None and caller.account_id == account

        await s.ledger.grant(account, Source.GIFT, 60_000, "gift", None, "gift")
        held = await s.ledger.admit(account, 10_000, "chat", 60, plan, request_id="req_w1")
        assert isinstance(held, Admission)
        done = await s.ledger.settle(held.hold_id, CallRecord("req_w1", account, "chat", None,
                                                              200, 5), 4_000, "clamp")
        assert done.charged == 4_000
        assert done.remaining == (await s.ledger.balance(account)).available

        published: list[object] = []
        s.bus.publish = published.extend  # type: ignore[method-assign]
        s.event_log.on_commit = s.bus.publish
        await s.ledger.grant(account, Source.GIFT, 1_000, "gift-2", None, "gift")
        assert published  # committed events reach the fan-out
        position = await s.event_log.stream_position(account)
        assert position is not None and position[0] > 0
        assert await s.payments.topup_settings(account) is None
        assert await s.nonces.remember("k1:nonce-abcdefghijklmnop", 600) is True
        assert await s.nonces.remember("k1:nonce-abcdefghijklmnop", 600) is False
    finally:
        await s.topups.close()
        await s.upstream.close()
        await s.ledger.close()
    assert not unused.exists()  # nothing went to a database
