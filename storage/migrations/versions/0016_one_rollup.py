"""one rollup upsert per settlement (issue 10, "the proxy path gains no measurable cost"):
`cost_daily` and the key scope of `spend_daily` folded into `usage_daily`, keyed (account,
UTC day, operation, provider, model, key id) with '' for none, carrying calls, late, charged,
unpriced, prompt/completion tokens and cost (USD micro-units); see storage/sql/tables.py.
`spend_daily` keeps the end users' spend. `gw_settle` (PostgreSQL) writes the new rollup; only
its rollup statements change.

History is rebuilt exactly: the new rows are the settled usage records grouped by their day
(`created_at_ms`, the settlement's time: the day every rollup used), so costs and key spend
are those cost_daily and spend_daily held (all three are written by the same settlement from
the same values, and a settled record is never deleted). Usage calls and charges per (account,
day, operation) are then made to equal the old usage_daily's by a correction row (provider,
model, key ''): the records cannot tell a call the lease sweep counted on an earlier day (an
interrupted call settled late). The downgrade rebuilds the three old tables from the new one
(exact: they are sums of it) and restores 0015's gw_settle.

Revision ID: 0016_one_rollup
Revises: 0015_pg_functions
Create Date: 2026-11-29
"""
import importlib

import sqlalchemy as sa
from alembic import op

revision = "0016_one_rollup"
down_revision = "0015_pg_functions"
branch_labels = None
depends_on = None

_DAY_MS = 86_400_000
_KEYS = ("account_id", "day_ms", "operation", "provider", "model", "key_id")
_SUMS = ("calls", "late", "charged", "unpriced", "prompt_tokens", "completion_tokens", "cost")
_NEW_COLUMNS = ", ".join(_KEYS + _SUMS)

# Settlement as in 0015, its closing rollup statements replaced by the one upsert.
GW_SETTLE = """
CREATE OR REPLACE FUNCTION gw_settle(
    p_account text, p_hold_id text, p_request_id text, p_charge bigint, p_overdraft boolean,
    p_at bigint, p_day bigint, p_operation text, p_model text, p_upstream_status integer,
    p_duration_ms integer, p_input_tokens integer, p_output_tokens integer,
    p_cached_tokens integer, p_reasoning_tokens integer, p_estimated bigint,
    p_usage_source text, p_streamed boolean, p_outcome text, p_provider text, p_key_id text,
    p_end_user text, p_cache_write_tokens integer, p_prompt_cost bigint,
    p_completion_cost bigint, p_total_cost bigint, p_cost_reason text, p_price_version text,
    p_entry_type text, p_reason text, p_meta text, p_spend_scopes text[],
    p_spend_ids text[],
    OUT r_found boolean, OUT r_replayed boolean, OUT r_charged bigint, OUT r_unbilled bigint,
    OUT r_debt bigint, OUT r_seq bigint, OUT r_held bigint, OUT r_spendable bigint,
    OUT r_sources text[], OUT r_remaining bigint[], OUT r_topup_threshold bigint,
    OUT r_plan_key text, OUT r_low_threshold bigint, OUT r_alert text)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_debt bigint;
    v_state text;
    v_opened boolean;
    v_left bigint;
    v_take bigint;
    v_ids text[] := '{}';
    v_amounts bigint[] := '{}';
    v_entry bigint;
    v_meta text;
    b record;
BEGIN
    UPDATE accounts a SET event_seq = a.event_seq + 1 WHERE a.id = p_account
    RETURNING a.debt, a.event_seq, a.auto_topup_threshold, a.plan_key,
              a.low_balance_threshold, a.balance_alert
         INTO v_debt, r_seq, r_topup_threshold, r_plan_key, r_low_threshold, r_alert;
    r_found := FOUND;
    r_replayed := false;
    IF NOT r_found THEN
        RETURN;
    END IF;
    IF p_hold_id IS NOT NULL THEN
        DELETE FROM holds WHERE id = p_hold_id;
    END IF;
    SELECT u.outcome INTO v_state FROM usage_records u WHERE u.id = p_request_id FOR UPDATE;
    v_opened := FOUND;
    IF v_opened AND v_state NOT IN ('in_flight', 'interrupted') THEN
        r_replayed := true;
        RETURN;
    END IF;

    v_left := p_charge;
    r_sources := '{}';
    r_remaining := '{}';
    r_spendable := 0;
    FOR b IN
        SELECT k.id, k.source, k.remaining FROM buckets k
         WHERE k.account_id = p_account AND k.remaining > 0
           AND (k.expires_at_ms IS NULL OR k.expires_at_ms > p_at)
         ORDER BY (k.source <> 'daily'), k.expires_at_ms ASC NULLS LAST, k.remaining,
                  k.created_at_ms, k.id COLLATE "C"
    LOOP
        v_take := LEAST(v_left, b.remaining);
        IF v_take > 0 THEN
            UPDATE buckets SET remaining = remaining - v_take WHERE id = b.id;
            v_ids := v_ids || b.id::text;
            v_amounts := v_amounts || v_take;
            v_left := v_left - v_take;
        END IF;
        r_sources := r_sources || b.source::text;
        r_remaining := r_remaining || (b.remaining - v_take);
        r_spendable := r_spendable + b.remaining - v_take;
    END LOOP;

    IF p_overdraft THEN
        r_charged := p_charge;
        r_unbilled := 0;
        r_debt := v_debt + v_left;
    ELSE
        r_charged := p_charge - v_left;
        r_unbilled := v_left;
        r_debt := v_debt;
    END IF;
    IF r_debt <> v_debt THEN
        UPDATE accounts SET debt = r_debt WHERE id = p_account;
    END IF;
    IF r_charged <> 0 THEN
        v_meta := p_meta;
        IF v_left > 0 THEN
            v_meta := left(p_meta, -1) || ',"shortfall":' || v_left || ',"shortfall_rule":"'
                      || CASE WHEN p_overdraft THEN 'overdraft' ELSE 'clamp' END || '"}';
        END IF;
        INSERT INTO ledger_entries (account_id, event_type, delta, idempotency_key, reason,
                                    metadata_json, created_at_ms)
        VALUES (p_account, p_entry_type, -r_charged, 'call:' || p_request_id, p_reason,
                v_meta, p_at)
        RETURNING id INTO v_entry;
        FOR i IN 1 .. COALESCE(array_length(v_ids, 1), 0) LOOP
            INSERT INTO allocations (entry_id, bucket_id, amount)
            VALUES (v_entry, v_ids[i], v_amounts[i]);
        END LOOP;
    END IF;
    SELECT COALESCE(SUM(h.amount), 0) INTO r_held FROM holds h
     WHERE h.account_id = p_account AND h.expires_at_ms > p_at;

    IF v_opened THEN
        UPDATE usage_records SET operation = p_operation, model = p_model,
            upstream_status = p_upstream_status, duration_ms = p_duration_ms,
            input_tokens = p_input_tokens, output_tokens = p_output_tokens,
            cached_tokens = p_cached_tokens, reasoning_tokens = p_reasoning_tokens,
            estimated = p_estimated, charged = r_charged, unbilled = r_unbilled,
            usage_source = p_usage_source, streamed = p_streamed, outcome = p_outcome,
            created_at_ms = p_at, provider = p_provider, key_id = p_key_id,
            end_user = p_end_user, cache_write_tokens = p_cache_write_tokens,
            prompt_cost = p_prompt_cost, completion_cost = p_completion_cost,
            total_cost = p_total_cost, cost_reason = p_cost_reason,
            price_version = p_price_version
         WHERE id = p_request_id;
    ELSE
        INSERT INTO usage_records (id, account_id, operation, model, upstream_status,
            duration_ms, input_tokens, output_tokens, cached_tokens, reasoning_tokens,
            estimated, charged, unbilled, usage_source, streamed, outcome, created_at_ms,
            provider, key_id, end_user, cache_write_tokens, prompt_cost, completion_cost,
            total_cost, cost_reason, price_version)
        VALUES (p_request_id, p_account, p_operation, p_model, p_upstream_status,
            p_duration_ms, p_input_tokens, p_output_tokens, p_cached_tokens,
            p_reasoning_tokens, p_estimated, r_charged, r_unbilled, p_usage_source,
            p_streamed, p_outcome, p_at, p_provider, p_key_id, p_end_user,
            p_cache_write_tokens, p_prompt_cost, p_completion_cost, p_total_cost,
            p_cost_reason, p_price_version);
    END IF;
    -- the one rollup upsert (migration 0016): usage, cost and key spend. A call the lease
    -- sweep closed as interrupted was counted then: its settlement counts in `late`.
    INSERT INTO usage_daily (account_id, day_ms, operation, provider, model, key_id, calls,
                             late, charged, unpriced, prompt_tokens, completion_tokens, cost)
    VALUES (p_account, p_day, p_operation, COALESCE(p_provider, ''), COALESCE(p_model, ''),
            COALESCE(p_key_id, ''), CASE WHEN v_state = 'interrupted' THEN 0 ELSE 1 END,
            CASE WHEN v_state = 'interrupted' THEN 1 ELSE 0 END, r_charged,
            CASE WHEN p_provider IS NOT NULL AND p_total_cost IS NULL THEN 1 ELSE 0 END,
            p_input_tokens, p_output_tokens, COALESCE(p_total_cost, 0))
    ON CONFLICT (account_id, day_ms, operation, provider, model, key_id) DO UPDATE SET
        calls = usage_daily.calls + excluded.calls, late = usage_daily.late + excluded.late,
        charged = usage_daily.charged + excluded.charged,
        unpriced = usage_daily.unpriced + excluded.unpriced,
        prompt_tokens = usage_daily.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = usage_daily.completion_tokens + excluded.completion_tokens,
        cost = usage_daily.cost + excluded.cost;
    -- end-user spend (the only scopes storage.sql.hot_path_pg.settle_params passes now)
    IF r_charged <> 0 THEN
        FOR i IN 1 .. COALESCE(array_length(p_spend_ids, 1), 0) LOOP
            INSERT INTO spend_daily (scope, scope_id, day_ms, charged)
            VALUES (p_spend_scopes[i], p_spend_ids[i], p_day, r_charged)
            ON CONFLICT (scope, scope_id, day_ms)
            DO UPDATE SET charged = spend_daily.charged + excluded.charged;
        END LOOP;
    END IF;
END
$fn$
"""


def _new_rollup() -> None:
    op.create_table(
        "usage_daily",
        sa.Column("account_id", sa.String(length=40), primary_key=True),
        sa.Column("day_ms", sa.BigInteger(), primary_key=True),
        sa.Column("operation", sa.String(length=64), primary_key=True),
        sa.Column("provider", sa.String(length=64), primary_key=True),
        sa.Column("model", sa.String(length=200), primary_key=True),
        sa.Column("key_id", sa.String(length=40), primary_key=True),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in _SUMS),
    )
    op.create_index("ix_usage_daily_day", "usage_daily", ["day_ms"])
    op.create_index("ix_usage_daily_key", "usage_daily", ["key_id", "day_ms"])


def _old_rollup() -> None:
    op.create_table(
        "usage_daily",
        sa.Column("account_id", sa.String(length=40), primary_key=True),
        sa.Column("day_ms", sa.BigInteger(), primary_key=True),
        sa.Column("operation", sa.String(length=64), primary_key=True),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("charged", sa.BigInteger(), nullable=False),
    )


def _set_aside(name: str) -> None:
    """Rename usage_daily to `name` (its primary key's name too, on PostgreSQL, so the new
    table can take it)."""
    op.rename_table("usage_daily", name)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE {name} RENAME CONSTRAINT usage_daily_pkey TO {name}_pkey")


def upgrade() -> None:
    _set_aside("usage_daily_0015")
    _new_rollup()
    op.execute(
        f"INSERT INTO usage_daily ({_NEW_COLUMNS})"
        f" SELECT account_id, (created_at_ms / {_DAY_MS}) * {_DAY_MS}, operation,"
        " COALESCE(provider, ''), COALESCE(model, ''), COALESCE(key_id, ''), COUNT(*), 0,"
        " SUM(charged),"
        " SUM(CASE WHEN provider IS NOT NULL AND total_cost IS NULL THEN 1 ELSE 0 END),"
        " SUM(input_tokens), SUM(output_tokens), SUM(COALESCE(total_cost, 0))"
        " FROM usage_records WHERE outcome <> 'in_flight'"
        f" GROUP BY account_id, (created_at_ms / {_DAY_MS}) * {_DAY_MS}, operation,"
        " COALESCE(provider, ''), COALESCE(model, ''), COALESCE(key_id, '')")
    bind = op.get_bind()
    residue = bind.execute(sa.text(
        "SELECT account_id, day_ms, operation, SUM(calls), SUM(charged) FROM ("
        " SELECT account_id, day_ms, operation, calls, charged FROM usage_daily_0015"
        " UNION ALL"
        " SELECT account_id, day_ms, operation, -calls, -charged FROM usage_daily) d"
        " GROUP BY account_id, day_ms, operation"
        " HAVING SUM(calls) <> 0 OR SUM(charged) <> 0")).all()
    for account_id, day_ms, operation, calls, charged in residue:
        bind.execute(sa.text(
            f"INSERT INTO usage_daily ({_NEW_COLUMNS})"
            " VALUES (:a, :d, :o, '', '', '', :calls, 0, :charged, 0, 0, 0, 0)"
            " ON CONFLICT (account_id, day_ms, operation, provider, model, key_id)"
            " DO UPDATE SET calls = usage_daily.calls + excluded.calls,"
            " charged = usage_daily.charged + excluded.charged"),
            {"a": account_id, "d": int(day_ms), "o": operation, "calls": int(calls),
             "charged": int(charged)})
    op.drop_table("usage_daily_0015")
    op.drop_index("ix_cost_daily_day", table_name="cost_daily")
    op.drop_table("cost_daily")
    op.execute("DELETE FROM spend_daily WHERE scope = 'key'")
    if bind.dialect.name == "postgresql":
        op.execute(GW_SETTLE)


def downgrade() -> None:
    op.create_table(
        "cost_daily",
        sa.Column("account_id", sa.String(length=40), primary_key=True),
        sa.Column("day_ms", sa.BigInteger(), primary_key=True),
        sa.Column("provider", sa.String(length=64), primary_key=True),
        sa.Column("model", sa.String(length=200), primary_key=True),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("unpriced", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost", sa.BigInteger(), nullable=False),
        sa.Column("charged", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_cost_daily_day", "cost_daily", ["day_ms"])
    op.execute(
        "INSERT INTO cost_daily (account_id, day_ms, provider, model, calls, unpriced,"
        " prompt_tokens, completion_tokens, cost, charged)"
        " SELECT account_id, day_ms, provider, model, SUM(calls + late), SUM(unpriced),"
        " SUM(prompt_tokens), SUM(completion_tokens), SUM(cost), SUM(charged)"
        " FROM usage_daily WHERE provider <> ''"
        " GROUP BY account_id, day_ms, provider, model")
    op.execute(
        "INSERT INTO spend_daily (scope, scope_id, day_ms, charged)"
        " SELECT 'key', key_id, day_ms, SUM(charged) FROM usage_daily WHERE key_id <> ''"
        " GROUP BY key_id, day_ms HAVING SUM(charged) <> 0")
    op.drop_index("ix_usage_daily_key", table_name="usage_daily")
    op.drop_index("ix_usage_daily_day", table_name="usage_daily")
    _set_aside("usage_daily_0016")
    _old_rollup()
    op.execute(
        "INSERT INTO usage_daily (account_id, day_ms, operation, calls, charged)"
        " SELECT account_id, day_ms, operation, SUM(calls), SUM(charged)"
        " FROM usage_daily_0016 GROUP BY account_id, day_ms, operation")
    op.drop_table("usage_daily_0016")
    if op.get_bind().dialect.name == "postgresql":
        # gw_settle as 0015 wrote it (a module name that starts with a digit cannot be
        # imported with an import statement)
        previous = importlib.import_module("storage.migrations.versions.0015_pg_functions")
        op.execute(previous.GW_SETTLE)
