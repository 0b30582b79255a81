"""the admission's commit does not wait for the WAL flush, and reads its funds in one statement
fewer (issue 13: PostgreSQL latency added per call)

Measured on this VM (one connection, admit + settle in a loop): the two functions' own server
time is ~0.13-0.23 ms (gw_admit) and ~0.26-0.48 ms (gw_settle); each autocommit statement then
waits for its commit's WAL flush (fdatasync), 0.1 ms on an idle disk and 0.5-1.5 ms when other
work shares it — the larger part of a call's store latency, paid twice per call. So:

- `gw_admit` sets `synchronous_commit = off` for its own transaction (`set_config(..., true)`
  inside the body: a `SET` clause on the function would be undone before the commit). The hold
  and the opened usage record are visible to every other session at once, as before (an
  asynchronous commit only defers the flush, by at most 3 × wal_writer_delay), so admission
  control across connections and processes is unchanged. What is given up: after a crash of
  the PostgreSQL server or its host — not of the gateway — admissions committed in the last
  few hundred ms may be missing. That loses no money: their calls' settlements (synchronous)
  charge as usual (gw_settle needs neither the hold nor the opened record), and a synchronous
  commit flushes every earlier WAL record, so once any later settlement has committed those
  admissions are durable too. Meanwhile their funds were not reserved, the exposure a lease
  sweep already has. The embedded SQLite store already commits everything this way
  (WAL, synchronous=NORMAL: durable across a process crash, not a power loss).
- The live and daily bucket sums are one statement (FILTER) instead of two.

`gw_settle` is unchanged: per-statement server times (auto_explain) show no dominant statement,
and its candidate trims measured within noise (allocations in one INSERT: +1 %; not moving the
usage record's created_at_ms, which would make its UPDATE HOT: −2 %) — not worth the semantic
change. Its commit stays synchronous: it is the charge.

Revision ID: 0017_pg_fast
Revises: 0016_one_rollup
Create Date: 2026-11-29
"""
import importlib

from alembic import op

revision = "0017_pg_fast"
down_revision = "0016_one_rollup"
branch_labels = None
depends_on = None

# storage/migrations/versions/0015_pg_functions.py GW_ADMIT but for the two changes above; the
# returned sums and the decision are the same (tests/integration/test_pg_functions.py).
GW_ADMIT = """
CREATE OR REPLACE FUNCTION gw_admit(
    p_account text, p_amount bigint, p_at bigint, p_hold_id text, p_operation text,
    p_expires bigint, p_request_id text, p_model text, p_streamed boolean, p_key_id text,
    p_end_user text,
    OUT r_found boolean, OUT r_admitted boolean, OUT r_spendable bigint, OUT r_held bigint,
    OUT r_daily bigint, OUT r_debt bigint)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_own bigint;
BEGIN
    -- the commit of the transaction running this does not wait for its WAL flush (see 0017)
    PERFORM set_config('synchronous_commit', 'off', true);
    SELECT a.debt INTO r_debt FROM accounts a WHERE a.id = p_account FOR UPDATE;
    r_found := FOUND;
    IF NOT r_found THEN
        r_admitted := false;
        RETURN;
    END IF;
    SELECT COALESCE(SUM(b.remaining), 0),
           COALESCE(SUM(b.remaining) FILTER (WHERE b.source = 'daily'
                                              AND b.expires_at_ms > p_at), 0)
      INTO r_spendable, r_daily FROM buckets b
     WHERE b.account_id = p_account AND b.remaining > 0
       AND (b.expires_at_ms IS NULL OR b.expires_at_ms > p_at);
    SELECT COALESCE(SUM(h.amount), 0) INTO r_held FROM holds h
     WHERE h.account_id = p_account AND h.expires_at_ms > p_at;
    SELECT h.amount INTO v_own FROM holds h WHERE h.id = p_hold_id AND h.expires_at_ms > p_at;
    IF FOUND THEN
        r_held := r_held - v_own;
        r_admitted := true;
        RETURN;
    END IF;
    r_admitted := p_amount <= r_spendable - r_held - r_debt;
    IF r_admitted THEN
        INSERT INTO holds (id, account_id, amount, operation, created_at_ms, expires_at_ms,
                           request_id, key_id, end_user)
        VALUES (p_hold_id, p_account, p_amount, p_operation, p_at, p_expires, p_request_id,
                p_key_id, p_end_user);
        IF p_request_id IS NOT NULL THEN
            INSERT INTO usage_records (id, account_id, operation, model, duration_ms,
                                       estimated, usage_source, streamed, outcome,
                                       created_at_ms, key_id, end_user)
            VALUES (p_request_id, p_account, p_operation, p_model, 0, p_amount, 'none',
                    p_streamed, 'in_flight', p_at, p_key_id, p_end_user);
        END IF;
    END IF;
END
$fn$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(GW_ADMIT)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # gw_admit as 0015 wrote it (the last revision before this one to change it; a module
    # name that starts with a digit cannot be imported with an import statement)
    first = importlib.import_module("storage.migrations.versions.0015_pg_functions")
    op.execute(first.GW_ADMIT)
