"""request path in one round trip each on PostgreSQL (issue 13 item 1): `gw_admit` and
`gw_settle`, PL/pgSQL functions that run an admission and a settlement as one statement
(autocommit) instead of ~5 and ~12 round trips. No-op on SQLite.

They are the one sanctioned copy of money rules outside storage/engine/: the availability
check (storage.engine.availability.Funds.covers) and the greedy burn-down
(storage.engine.burn_down.priority_key / settle_debit). tests/integration/test_pg_functions.py
holds them to the engine with a property test. PL/pgSQL, not one CTE statement: under READ
COMMITTED a statement's subqueries all read the snapshot taken before its `FOR UPDATE` waited,
so a hold committed meanwhile would be missed (overspend); each statement inside a function
takes a fresh snapshot, after the account row is locked.

Revision ID: 0015_pg_functions
Revises: 0014_session_key
Create Date: 2026-11-29
"""
from alembic import op

revision = "0015_pg_functions"
down_revision = "0014_session_key"
branch_labels = None
depends_on = None

# Admission: the account row locked, the funds summed with the filters of
# storage.sql.hot_path._FUNDS, the hold placed (and the call's usage record opened, outcome
# `in_flight`) when amount ≤ spendable − held − debt. Returns the sums read before the hold;
# `r_found` False: no such account. A hold with `p_hold_id` already present (a retried call
# whose first try committed but whose reply was lost) is reported admitted again, unchanged.
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
    SELECT a.debt INTO r_debt FROM accounts a WHERE a.id = p_account FOR UPDATE;
    r_found := FOUND;
    IF NOT r_found THEN
        r_admitted := false;
        RETURN;
    END IF;
    SELECT COALESCE(SUM(b.remaining), 0) INTO r_spendable FROM buckets b
     WHERE b.account_id = p_account AND b.remaining > 0
       AND (b.expires_at_ms IS NULL OR b.expires_at_ms > p_at);
    SELECT COALESCE(SUM(h.amount), 0) INTO r_held FROM holds h
     WHERE h.account_id = p_account AND h.expires_at_ms > p_at;
    SELECT COALESCE(SUM(b.remaining), 0) INTO r_daily FROM buckets b
     WHERE b.account_id = p_account AND b.remaining > 0 AND b.source = 'daily'
       AND b.expires_at_ms > p_at;
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

# Settlement of a call without key or end-user limits: storage.sql.hot_path.settle followed by
# storage.sql.budgets.record_settled, in that order, under the account lock taken by the
# event-sequence bump. `r_found` False: no such account (nothing written); `r_replayed`: the
# call was settled before (the hold is still released, the sequence still bumped, as there).
# Burn order: storage.engine.burn_down.priority_key (daily first, then earliest expiry,
# never-expiring last, then smallest remaining, creation time, id in code-point order).
# `p_meta` is the ledger entry's metadata JSON without the shortfall fields, which are appended
# here exactly as json.dumps(separators=(",", ":")) writes them. Returns the balance after the
# debit: per live bucket (burn order) its source and remaining, and their sum, live holds and
# debt; the event sequence number of the balance.updated event; the alert inputs read under
# the lock (plan, own threshold, alert state) and the auto top-up threshold.
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
    -- a call the lease sweep closed as interrupted was counted then: only its charge is added
    INSERT INTO usage_daily (account_id, day_ms, operation, calls, charged)
    VALUES (p_account, p_day, p_operation,
            CASE WHEN v_state = 'interrupted' THEN 0 ELSE 1 END, r_charged)
    ON CONFLICT (account_id, day_ms, operation)
    DO UPDATE SET calls = usage_daily.calls + excluded.calls,
                  charged = usage_daily.charged + excluded.charged;

    IF p_provider IS NOT NULL THEN
        INSERT INTO cost_daily (account_id, day_ms, provider, model, calls, unpriced,
                                prompt_tokens, completion_tokens, cost, charged)
        VALUES (p_account, p_day, p_provider, COALESCE(p_model, ''), 1,
                CASE WHEN p_total_cost IS NULL THEN 1 ELSE 0 END, p_input_tokens,
                p_output_tokens, COALESCE(p_total_cost, 0), r_charged)
        ON CONFLICT (account_id, day_ms, provider, model) DO UPDATE SET
            calls = cost_daily.calls + 1, unpriced = cost_daily.unpriced + excluded.unpriced,
            prompt_tokens = cost_daily.prompt_tokens + excluded.prompt_tokens,
            completion_tokens = cost_daily.completion_tokens + excluded.completion_tokens,
            cost = cost_daily.cost + excluded.cost,
            charged = cost_daily.charged + excluded.charged;
    END IF;
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


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(GW_ADMIT)
    op.execute(GW_SETTLE)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION IF EXISTS gw_settle")
    op.execute("DROP FUNCTION IF EXISTS gw_admit")
