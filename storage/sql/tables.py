"""Table definitions of the SQL ledger. Amounts are integer ledger units (ms of AI time);
times are integer UTC epoch milliseconds (`*_ms`), identical on SQLite and PostgreSQL.

The Alembic migrations in storage/migrations create exactly these tables.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData()

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("plan_key", String(64), nullable=False),
    Column("subscription_status", String(32), nullable=False, server_default="none"),
    Column("debt", BigInteger, nullable=False, server_default="0"),
    Column("created_at_ms", BigInteger, nullable=False),
    # per-account sequence of the live event stream (account_events.seq)
    Column("event_seq", BigInteger, nullable=False, server_default="0"),
    Column("stripe_customer_id", String(255), nullable=True),
    Column("stripe_subscription_id", String(255), nullable=True),
    Column("subscription_key", String(64), nullable=True),
    # Stripe `created` (ms) of the newest subscription event applied: older ones never
    # overwrite status or plan (webhooks arrive out of order)
    Column("subscription_event_at_ms", BigInteger, nullable=False, server_default="0"),
    Column("pending_plan_key", String(64), nullable=True),  # scheduled downgrade
    Column("pending_effective_at_ms", BigInteger, nullable=True),
    # copy of auto_topups.threshold while enabled, read with the row lock at settlement
    Column("auto_topup_threshold", BigInteger, nullable=True),
    # the Stripe payment method auto top-up charges when its settings name none
    Column("default_payment_method_id", String(255), nullable=True),
    # low-balance alerts (storage.engine.alerts): the account's own threshold (NULL = its
    # plan's default) and where its balance stands against it, read with the row lock
    Column("low_balance_threshold", BigInteger, nullable=True),
    Column("balance_alert", String(16), nullable=False, server_default="ok"),
    CheckConstraint("debt >= 0", name="ck_accounts_debt_nonneg"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("revoked_at_ms", BigInteger, nullable=True),
    Column("limit_day", BigInteger, nullable=True),  # ledger units per UTC day; null = none
    Column("limit_month", BigInteger, nullable=True),  # ledger units per UTC month
)

buckets = Table(
    "buckets",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("source", String(16), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("remaining", BigInteger, nullable=False),
    Column("expires_at_ms", BigInteger, nullable=True),
    Column("created_at_ms", BigInteger, nullable=False),
    CheckConstraint("remaining >= 0", name="ck_buckets_remaining_nonneg"),
    CheckConstraint("amount > 0", name="ck_buckets_amount_pos"),
    Index("ix_buckets_account_remaining", "account_id", "remaining"),
    Index("ix_buckets_expiring", "expires_at_ms", sqlite_where=text("remaining > 0"),
          postgresql_where=text("remaining > 0")),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", Integer().with_variant(BigInteger, "postgresql"), primary_key=True,
           autoincrement=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("delta", BigInteger, nullable=False),
    Column("idempotency_key", String(200), nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Column("metadata_json", Text, nullable=True),
    Column("created_at_ms", BigInteger, nullable=False),
    UniqueConstraint("account_id", "idempotency_key", name="uq_ledger_account_key"),
    Index("ix_ledger_account_type_time", "account_id", "event_type", "created_at_ms"),
    Index("ix_ledger_account_id", "account_id", "id"),
)

allocations = Table(
    "allocations",
    metadata,
    Column("id", Integer().with_variant(BigInteger, "postgresql"), primary_key=True,
           autoincrement=True),
    Column("entry_id", BigInteger, ForeignKey("ledger_entries.id"), nullable=False),
    Column("bucket_id", String(40), ForeignKey("buckets.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Index("ix_allocations_entry", "entry_id"),
)

holds = Table(
    "holds",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("operation", String(64), nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("expires_at_ms", BigInteger, nullable=False),
    # the call whose usage record (outcome `in_flight`) this hold guards; NULL: none
    Column("request_id", String(40), nullable=True),
    Column("key_id", String(40), nullable=True),  # the API key whose budget the hold counts in
    Column("end_user", String(256), nullable=True),
    CheckConstraint("amount >= 0", name="ck_holds_amount_nonneg"),
    Index("ix_holds_account_expiry", "account_id", "expires_at_ms"),
)

usage_records = Table(
    "usage_records",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("operation", String(64), nullable=False),
    Column("model", String(200), nullable=True),
    Column("upstream_status", Integer, nullable=True),
    Column("duration_ms", Integer, nullable=False),
    Column("input_tokens", Integer, nullable=False, server_default="0"),
    Column("output_tokens", Integer, nullable=False, server_default="0"),
    Column("cached_tokens", Integer, nullable=False, server_default="0"),
    Column("reasoning_tokens", Integer, nullable=False, server_default="0"),
    Column("estimated", BigInteger, nullable=False, server_default="0"),
    Column("charged", BigInteger, nullable=False, server_default="0"),
    Column("unbilled", BigInteger, nullable=False, server_default="0"),
    Column("usage_source", String(16), nullable=False),
    Column("streamed", Boolean, nullable=False, server_default="0"),
    Column("outcome", String(32), nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    # provider cost (issue 10): USD micro-units, null with `cost_reason` when unpriced
    Column("provider", String(64), nullable=True),
    Column("key_id", String(40), nullable=True),
    Column("end_user", String(256), nullable=True),
    Column("cache_write_tokens", Integer, nullable=False, server_default="0"),
    Column("prompt_cost", BigInteger, nullable=True),
    Column("completion_cost", BigInteger, nullable=True),
    Column("total_cost", BigInteger, nullable=True),
    Column("cost_reason", String(32), nullable=True),
    Column("price_version", String(32), nullable=True),
    Index("ix_usage_account_time", "account_id", "created_at_ms"),
)

resume_tokens = Table(
    "resume_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("account_id", String(40), nullable=False),
    Column("binding", String(64), nullable=False),
    Column("operation_id", String(64), nullable=False),
    Column("expires_at_ms", BigInteger, nullable=False),
    Index("ix_resume_tokens_expiry", "expires_at_ms"),
)

hmac_nonces = Table(
    "hmac_nonces",
    metadata,
    Column("nonce_key", String(200), primary_key=True),
    Column("expires_at_ms", BigInteger, nullable=False),
    Index("ix_hmac_nonces_expiry", "expires_at_ms"),
)

purchases = Table(
    "purchases",
    metadata,
    Column("session_id", String(255), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("package_key", String(64), nullable=False),
    Column("minutes", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("unit_amount_cents", BigInteger, nullable=False),
    Column("operation_id", String(64), nullable=True),
    Column("status", String(16), nullable=False),
    Column("units", BigInteger, nullable=True),  # ledger units granted; null: minutes (0007)
    Column("created_at_ms", BigInteger, nullable=False),
    Column("kind", String(16), nullable=False, server_default="checkout"),  # or auto_topup
    Column("payment_intent_id", String(255), nullable=True),
    Column("bucket_id", String(40), nullable=True),  # the bucket its credit created
    Column("refunded_cents", BigInteger, nullable=False, server_default="0"),
    Column("clawed_back", BigInteger, nullable=False, server_default="0"),  # ledger units
    Index("ix_purchases_account", "account_id", "created_at_ms"),
    Index("ix_purchases_payment_intent", "payment_intent_id"),
)

stripe_events = Table(
    "stripe_events",
    metadata,
    Column("event_id", String(255), primary_key=True),
    Column("event_type", String(100), nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("processed_at_ms", BigInteger, nullable=False),
)

account_events = Table(
    "account_events",
    metadata,
    Column("account_id", String(40), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("event_type", String(32), nullable=False),
    Column("data_json", Text, nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    Index("ix_account_events_time", "created_at_ms"),
)

# The one daily rollup (issue 10: one upsert per settlement): a row per (account, UTC day,
# operation, provider, model, API key), '' for none. `calls` counts a call once, when it
# settles or the lease sweep closes it as interrupted; `late` counts the settlements of calls
# the sweep had already counted (their `calls` is 0), so calls + late = settlements (what cost
# summaries count). Usage analytics read calls and charged (ledger units); cost summaries the
# rows with a provider: `unpriced` the calls the price source did not know, tokens, `cost`
# (USD micro-units of the priced calls); key budgets Σ charged of the key's rows.
usage_daily = Table(
    "usage_daily",
    metadata,
    Column("account_id", String(40), primary_key=True),
    Column("day_ms", BigInteger, primary_key=True),  # UTC midnight, epoch ms
    Column("operation", String(64), primary_key=True),
    Column("provider", String(64), primary_key=True),
    Column("model", String(200), primary_key=True),
    Column("key_id", String(40), primary_key=True),
    Column("calls", BigInteger, nullable=False),
    Column("late", BigInteger, nullable=False),
    Column("charged", BigInteger, nullable=False),
    Column("unpriced", BigInteger, nullable=False),
    Column("prompt_tokens", BigInteger, nullable=False),
    Column("completion_tokens", BigInteger, nullable=False),
    Column("cost", BigInteger, nullable=False),
    Index("ix_usage_daily_day", "day_ms"),
    # a key's spend this day / month (storage/sql/budgets.py), however many keys its account has
    Index("ix_usage_daily_key", "key_id", "day_ms"),
)

# Budgets: ledger units charged per UTC day to an end user (`scope` 'user', scope_id
# '<account id>/<end user>'); a key's spend is read from usage_daily.
spend_daily = Table(
    "spend_daily",
    metadata,
    Column("scope", String(8), primary_key=True),
    Column("scope_id", String(300), primary_key=True),
    Column("day_ms", BigInteger, primary_key=True),
    Column("charged", BigInteger, nullable=False),
)

pending_refunds = Table(
    "pending_refunds",
    metadata,
    Column("payment_intent_id", String(255), primary_key=True),
    Column("charge_id", String(255), nullable=False),
    Column("amount_cents", BigInteger, nullable=False),
    Column("refunded_cents", BigInteger, nullable=False),
    Column("received_at_ms", BigInteger, nullable=False),
)

auto_topups = Table(
    "auto_topups",
    metadata,
    Column("account_id", String(40), ForeignKey("accounts.id"), primary_key=True),
    Column("enabled", Boolean, nullable=False),
    Column("threshold", BigInteger, nullable=False),
    Column("package_key", String(64), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("stripe_customer_id", String(255), nullable=True),
    Column("payment_method_id", String(255), nullable=True),
    Column("pending_attempt", String(64), nullable=True),
    Column("pending_since_ms", BigInteger, nullable=True),
    Column("attempts", BigInteger, nullable=False, server_default="0"),
    Column("failures", BigInteger, nullable=False, server_default="0"),
    Column("next_attempt_at_ms", BigInteger, nullable=False, server_default="0"),
    Column("last_error", Text, nullable=True),
    Column("updated_at_ms", BigInteger, nullable=False),
)

# Stripe invoices mirrored from webhooks (issue 11 item 5): amounts in minor units (cents),
# `version_*` the order of Stripe states (storage.engine.invoices.version_of)
invoices = Table(
    "invoices",
    metadata,
    Column("invoice_id", String(255), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("number", String(64), nullable=True),
    Column("status", String(16), nullable=False),
    Column("stripe_status", String(16), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("subtotal_cents", BigInteger, nullable=False),
    Column("tax_cents", BigInteger, nullable=False),
    Column("discount_cents", BigInteger, nullable=False),
    Column("total_cents", BigInteger, nullable=False),
    Column("credits_applied_cents", BigInteger, nullable=False),
    Column("amount_due_cents", BigInteger, nullable=False),
    Column("amount_paid_cents", BigInteger, nullable=False),
    Column("period_start_ms", BigInteger, nullable=True),
    Column("period_end_ms", BigInteger, nullable=True),
    Column("description", Text, nullable=True),
    Column("due_date_ms", BigInteger, nullable=True),
    Column("finalized_at_ms", BigInteger, nullable=True),
    Column("paid_at_ms", BigInteger, nullable=True),
    Column("hosted_invoice_url", Text, nullable=True),
    Column("invoice_pdf", Text, nullable=True),
    Column("subscription_id", String(255), nullable=True),
    Column("billing_reason", String(64), nullable=True),
    Column("lines_json", Text, nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("version_rank", Integer, nullable=False),
    Column("version_at_ms", BigInteger, nullable=False),
    Column("version_attempts", Integer, nullable=False),
    Column("version_event_ms", BigInteger, nullable=False),
    Index("ix_invoices_account_created", "account_id", "created_at_ms", "invoice_id"),
)

# Reconciliation reports of the ledger against Stripe (issue 11 item 6)
reconciliation_reports = Table(
    "reconciliation_reports",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("from_ms", BigInteger, nullable=False),
    Column("to_ms", BigInteger, nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("applied", Boolean, nullable=False),
    Column("document_json", Text, nullable=False),
)

# Stripe-keyed credits by key and by time, for reconciliation; partial, so the entries the
# request path writes (settlements, bonuses) never touch them
_STRIPE_KEYED = "substr(idempotency_key, 1, 7) = 'stripe_'"  # storage.invoice_rows
Index("ix_ledger_stripe_key", ledger_entries.c.idempotency_key,
      sqlite_where=text(_STRIPE_KEYED), postgresql_where=text(_STRIPE_KEYED))
Index("ix_ledger_stripe_time", ledger_entries.c.created_at_ms,
      sqlite_where=text(_STRIPE_KEYED), postgresql_where=text(_STRIPE_KEYED))

dashboard_sessions = Table(
    "dashboard_sessions",
    metadata,
    Column("session_hash", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("account_id", String(40), nullable=True),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("expires_at_ms", BigInteger, nullable=False),
    Column("key_id", String(40), nullable=True),  # the API key it was opened with (account)
    Index("ix_dashboard_sessions_expiry", "expires_at_ms"),
)

# ---- outgoing webhooks (storage.sql.outbox): endpoints, the outbox, delivery attempts ---------

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("url", Text, nullable=False),
    Column("event_types_json", Text, nullable=False),
    Column("description", Text, nullable=True),
    Column("secret", String(100), nullable=False),  # whsec_…: signs deliveries; never shown again
    Column("created_at_ms", BigInteger, nullable=False),
)

# One row per (event, endpoint subscribed to its type), written in the event's transaction.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("message_id", String(40), nullable=False),  # the stable `webhook-id`
    Column("endpoint_id", String(40), ForeignKey("webhook_endpoints.id"), nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("payload_json", Text, nullable=False),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at_ms", BigInteger, nullable=False),
    Column("lease_until_ms", BigInteger, nullable=False, server_default="0"),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("delivered_at_ms", BigInteger, nullable=True),
    UniqueConstraint("message_id", "endpoint_id", name="uq_webhook_deliveries_message"),
    Index("ix_webhook_deliveries_due", "next_attempt_at_ms",
          sqlite_where=text("status = 'pending'"), postgresql_where=text("status = 'pending'")),
    Index("ix_webhook_deliveries_endpoint", "endpoint_id", "created_at_ms"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", Integer().with_variant(BigInteger(), "postgresql"), primary_key=True,
           autoincrement=True),
    Column("delivery_id", String(40), ForeignKey("webhook_deliveries.id"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("at_ms", BigInteger, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("duration_ms", BigInteger, nullable=False),
    Index("ix_webhook_attempts_delivery", "delivery_id", "attempt"),
)
