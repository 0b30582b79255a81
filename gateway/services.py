"""The services one running gateway holds, created in the app's lifespan and closed there
(STYLE: no module-level singletons). `policy` is swapped atomically on reload."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.auth import KeyCache
from gateway.event_bus import EventBus as InProcessEventBus
from gateway.metrics import Metrics
from gateway.proxy.upstream import UpstreamClient
from gateway.rate_limits import RateLimiter
from gateway.settings import Settings
from gateway.unbilled import UnbilledSpool
from policies.compiled import Policy
from storage.ports import (
    Accounts,
    Alerts,
    BillingRecords,
    ConsoleQueries,
    DashboardSessions,
    EventBus,
    EventLog,
    Ledger,
    NonceStore,
    Payments,
    ResumeTokenStore,
    Webhooks,
)

if TYPE_CHECKING:
    from gateway.tracing import CallTracing


@dataclass
class Services:
    """Everything the request path needs; built by `gateway.app.build_services`. The store
    is reached only through the ports (storage.ports): one adapter may serve several."""

    settings: Settings
    policy: Policy
    ledger: Ledger
    accounts: Accounts
    payments: Payments
    event_log: EventLog
    keys: KeyCache
    resume: ResumeTokenStore
    upstream: UpstreamClient
    metrics: Metrics
    limiter: RateLimiter
    unbilled: UnbilledSpool
    nonces: NonceStore
    bus: EventBus = field(default_factory=InProcessEventBus)
    stripe: Any = None  # stripe.StripeClient when STRIPE_SECRET_KEY is set
    topups: Any = None  # gateway.api.auto_topup.AutoTopUps, set by build_services
    customers: Any = None  # gateway.api.stripe_calls.StripeCustomers, set by build_services
    records: BillingRecords | None = None  # invoices, statements, reconciliation
    alerts: Alerts | None = None  # low-balance alert settings, set by build_services
    webhooks: Webhooks | None = None  # outgoing webhook endpoints and outbox, likewise
    policy_error: str | None = None
    tracing: CallTracing | None = None  # OpenTelemetry spans (gateway.tracing); None = off
    sessions: DashboardSessions | None = None  # dashboard sessions (issue 12)
    console: ConsoleQueries | None = None  # the console's cross-account reads (issue 12)
    background: list[object] = field(default_factory=list)
