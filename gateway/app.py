"""The app factory and the one wiring point: `create_app(settings)` returns the ASGI app.

Requests whose method and path match a policy route go straight to the proxy (no framework
routing on the hot path); everything else — ops endpoints, problem docs — is a small Starlette
app. Clients (DB engine, upstream pool) are created in the lifespan and closed there.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import html
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute
from starlette.routing import Route as WebRoute

from gateway.api.admin import ADMIN_ROUTES
from gateway.api.admin_budgets import ADMIN_BUDGET_ROUTES
from gateway.api.alerts import ALERT_ROUTES
from gateway.api.auto_topup import AUTO_TOPUP_ROUTES, AutoTopUps
from gateway.api.billing import BILLING_ROUTES
from gateway.api.billing_account import BILLING_ACCOUNT_ROUTES
from gateway.api.console import CONSOLE_ROUTES
from gateway.api.costs import COSTS_ROUTES
from gateway.api.credits import CREDIT_ROUTES
from gateway.api.invoices import INVOICE_ROUTES
from gateway.api.meta import META_ROUTES
from gateway.api.models import MODELS_ROUTES
from gateway.api.openapi import openapi_route
from gateway.api.payment_methods import PAYMENT_METHOD_ROUTES
from gateway.api.payments import PAYMENTS_ROUTES, stripe_client
from gateway.api.reconcile import RECONCILE_ROUTES
from gateway.api.stream import STREAM_ROUTES
from gateway.api.stripe_calls import StripeCustomers
from gateway.api.subscriptions import SUBSCRIPTION_ROUTES
from gateway.api.webhook_endpoints import WEBHOOK_ENDPOINT_ROUTES
from gateway.auth import KeyCache
from gateway.billing_switch import BillingSwitch
from gateway.body_limit import BodyLimit
from gateway.dashboard.pages import DASHBOARD_ROUTES
from gateway.dashboard.session_auth import attach_session
from gateway.event_bus import EventBus as InProcessEventBus
from gateway.maintenance import maintain
from gateway.metrics import Metrics
from gateway.problems import (
    BadRequest,
    GatewayError,
    MethodNotAllowed,
    NotFound,
    StoreUnavailableProblem,
    base_url_for,
    problem_types,
    render,
    send_problem,
)
from gateway.proxy.costs import warm_prices
from gateway.proxy.pipeline import Proxy, new_request_id
from gateway.proxy.upstream import UpstreamClient
from gateway.rate_limits import RateLimiter, RedisCounters
from gateway.services import Services
from gateway.settings import Settings
from gateway.tracing import start_tracing
from gateway.tracing_config import TracingConfig, tracing_config
from gateway.unbilled import UnbilledSpool
from gateway.webhooks import deliver_webhooks
from policies.alerts import alert_rules
from policies.compiled import Policy, load_policy
from policies.loader import PolicyError
from storage.drivers import require_for_redis
from storage.memory.billing_records import MemoryBillingRecords
from storage.memory.console import MemoryConsole
from storage.memory.counters import InProcessCounters
from storage.memory.ledger import MemoryLedger
from storage.memory.nonces import InProcessNonces
from storage.memory.notifications import MemoryAlerts, MemoryWebhooks
from storage.memory.payments import MemoryPayments
from storage.memory.resume_tokens import InProcessResumeTokens
from storage.memory.sessions import MemorySessions
from storage.ports import (
    Alerts,
    BillingRecords,
    ConsoleQueries,
    Counters,
    DashboardSessions,
    EventBus,
    NonceStore,
    Payments,
    ResumeTokenStore,
    StoreUnavailable,
    UnknownAccount,
    Webhooks,
)
from storage.sql.billing_records import SqlBillingRecords
from storage.sql.console import SqlConsole
from storage.sql.ledger import SqlLedger
from storage.sql.nonces import SqlNonces
from storage.sql.notifications import SqlAlerts, SqlWebhooks
from storage.sql.payments import SqlPayments
from storage.sql.resume_tokens import SqlResumeTokens
from storage.sql.sessions import SqlSessions

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger("gateway.app")
POLICY_POLL_S = 2.0
MEMORY_URL = "memory://"  # the store in this process (storage/memory): tests, demos


class Gateway:
    """The ASGI app: dispatches policy routes to the proxy, the rest to Starlette."""

    def __init__(self, settings: Settings, policy: Policy | None = None, *,
                 span_exporter: SpanExporter | None = None) -> None:
        """`span_exporter` (tests): trace every proxied call to it, whatever OTEL_* say.
        Raises SettingsError on an invalid OTEL_* value (gateway.tracing_config)."""
        self.settings = settings
        self.tracing = tracing_config(settings.env)
        if span_exporter is not None and self.tracing is None:
            self.tracing = TracingConfig(exporters=())
        self._span_exporter = span_exporter
        self.services: Services | None = None
        self._initial_policy = policy
        self.base_url = base_url_for(settings)
        self.web = Starlette(routes=_web_routes(self), lifespan=self._lifespan)
        self.web.add_exception_handler(GatewayError, self._problem)  # type: ignore[arg-type]
        self.web.add_exception_handler(StoreUnavailable, self._store_unavailable)
        self.web.add_exception_handler(UnknownAccount, self._unknown_account)
        self.web.add_exception_handler(404, self._not_found)
        self.web.add_exception_handler(405, self._not_allowed)
        # Starlette's ServerErrorMiddleware calls this for any other exception (instead of its
        # plain-text 500) when the response has not started.
        self.web.add_exception_handler(Exception, self._internal_error)
        self._web = BillingSwitch(
            BodyLimit(self.web, max_bytes=settings.max_body_bytes, base_url=self.base_url),
            enabled=settings.billing_enabled, base_url=self.base_url)
        self.proxy: Proxy | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.services is not None:
            route = self.services.policy.match(scope["method"], scope["path"])
            if route is not None:
                assert self.proxy is not None
                tracing = self.services.tracing
                if tracing is None:
                    await self.proxy(scope, receive, send, route)
                else:
                    await tracing.call(self.proxy, scope, receive, send, route)
                return
        if scope["type"] == "http" and _has_nul(scope):
            # PostgreSQL cannot store U+0000 in text: refuse it before any handler can pass it
            # to the store (as a 400 on every store, so SQLite and PostgreSQL answer alike).
            await send_problem(send, BadRequest(
                "The path and query must not contain the NUL character (%00)."), self.base_url)
            return
        if scope["type"] == "http" and self.services is not None \
                and self.services.sessions is not None:
            await attach_session(scope, self.services.sessions)  # never on the proxy's path
        await self._web(scope, receive, send)

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[dict[str, Any]]:
        """Build the services, start the background tasks; yield the lifespan state the server
        copies into every request (`request.state.services`, read by the API handlers through
        gateway.api.edge.services_for); close everything on shutdown."""
        services = await build_services(self.settings, self._initial_policy)
        if not self.settings.public_url and self.settings.host in ("0.0.0.0", "::", ""):
            log.warning("GATEWAY_PUBLIC_URL is unset and the gateway listens on a wildcard "
                        "address: problem type URLs will name it; set GATEWAY_PUBLIC_URL to the "
                        "address clients reach", extra={"host": self.settings.host})
        if self.tracing is not None:  # one tracer provider per process (each worker's lifespan)
            services.tracing = start_tracing(self.tracing, self._span_exporter)
        self.services = services
        _tune_gc()
        self.proxy = Proxy(services)
        await warm_prices(services.policy)
        await services.bus.start()
        tasks = [asyncio.ensure_future(_watch_policy(services)),
                 asyncio.ensure_future(_renew_leases(services)),
                 asyncio.ensure_future(maintain(services)),
                 asyncio.ensure_future(deliver_webhooks(services))]
        try:
            yield {"services": services}
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await services.topups.close()
            await services.bus.close()
            await services.upstream.close()
            await services.ledger.close()
            if services.tracing is not None:
                await services.tracing.shutdown()
            close = getattr(services.resume, "close", None)
            if close is not None:
                await close()
            self.services = None

    async def _problem(self, request: Request, exc: GatewayError) -> Response:
        status, headers, body = render(exc, self.base_url)
        return Response(body, status_code=status, headers={k.decode(): v.decode()
                                                            for k, v in headers})

    async def _store_unavailable(self, request: Request, exc: Exception) -> Response:
        """The one answer of the billing and admin API to a store failure (StoreUnavailable
        raised by any handler): the `503 store-unavailable` problem, counted."""
        if self.services is not None:
            self.services.metrics.store_errors.labels("web").inc()
        return await self._problem(request, StoreUnavailableProblem(
            "The billing store is unreachable; retry shortly."))

    async def _unknown_account(self, request: Request, exc: Exception) -> Response:
        """The one answer of the billing and admin API to an account the store does not know
        (UnknownAccount raised by any handler): the `404 not-found` problem."""
        return await self._problem(request, NotFound(f"No account {str(exc)!r}."))

    async def _internal_error(self, request: Request, exc: Exception) -> Response:
        """Any unexpected exception: logged with a new request id, answered as the
        `500 internal-error` problem carrying that id (never its text or traceback)."""
        request_id = new_request_id()
        log.error("unexpected error", exc_info=exc, extra={
            "request_id": request_id, "method": request.method, "path": request.url.path})
        status, headers, body = render(
            GatewayError(f"An unexpected error occurred; it was logged with request id "
                         f"{request_id}.", request_id=request_id), self.base_url,
            f"urn:op:{request_id}",
            [(b"x-request-id", request_id.encode())])
        return Response(body, status_code=status, headers={k.decode(): v.decode()
                                                            for k, v in headers})

    async def _not_found(self, request: Request, _exc: Exception) -> Response:
        s = self.services
        if s is not None and s.policy.path_known(request.url.path):
            return await self._problem(request, MethodNotAllowed(
                f"{request.method} is not routed for {request.url.path}."))
        return await self._problem(request, NotFound(
            f"No route for {request.method} {request.url.path}."))

    async def _not_allowed(self, request: Request, _exc: Exception) -> Response:
        return await self._problem(request, MethodNotAllowed(
            f"{request.method} is not allowed on {request.url.path}."))


def prefers_html(accept: str) -> bool:
    """True when an `Accept` header ranks text/html above application/json (RFC 9110 §12.5.1:
    the most specific matching range gives each its q). A tie, or no header, means JSON."""
    ranges: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(1.0, max(0.0, float(value)))
                except ValueError:
                    q = 0.0
        if media:
            ranges.setdefault(media.lower(), q)

    def quality(kind: str) -> float:
        for media in (kind, kind.split("/")[0] + "/*", "*/*"):
            if media in ranges:
                return ranges[media]
        return 0.0

    return quality("text/html") > quality("application/json")


def problem_page(doc: dict[str, Any]) -> str:
    """A small standalone HTML page of a problem type's documentation (every value escaped)."""
    e = {k: html.escape(str(v), quote=True) for k, v in doc.items()}
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{e['status']} {e['title']}</title></head><body>\n"
        f"<h1>{e['title']}</h1>\n<dl><dt>type</dt><dd><code>{e['type']}</code></dd>\n"
        f"<dt>status</dt><dd>{e['status']}</dd></dl>\n<p>{e['description']}</p>\n"
        "<p>Errors of this gateway are RFC 9457 problem documents "
        "(<code>application/problem+json</code>) whose <code>type</code> is this page.</p>\n"
        "</body></html>\n")


def _has_nul(scope: dict[str, Any]) -> bool:
    """True when the decoded path or the raw query string holds a NUL (`%00`, or raw)."""
    query = scope.get("query_string", b"")
    return "\x00" in scope["path"] or b"%00" in query or b"\x00" in query


def _tune_gc() -> None:
    """Move everything allocated at start-up (modules, policy, pools) out of the collector's
    reach and collect the young generation less often: measured on the bench, the full
    collections over start-up objects were the gateway's p99 (≈45 ms → ≈12 ms at 16
    connections). Cycles are still collected; only their cadence changes."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


async def build_services(settings: Settings, policy: Policy | None = None) -> Services:
    """Create every client and store (inside the running loop): the SQL adapters, or the
    in-memory ones for a `memory://` database URL. Raises PolicyError, or
    storage.drivers.MissingDriver when a configured store's driver is not installed."""
    policy = policy or load_policy(settings.policy_paths, settings.env)
    lease_s = policy.document.holds.lease_s
    ledger: MemoryLedger | SqlLedger
    payments: Payments
    resume: ResumeTokenStore
    nonces: NonceStore
    records: BillingRecords
    sessions: DashboardSessions
    console: ConsoleQueries
    alerts: Alerts
    webhooks: Webhooks
    if settings.database_url.startswith(MEMORY_URL):  # one process, nothing persisted
        ledger = MemoryLedger(lease_s=lease_s)
        payments = MemoryPayments(ledger)
        records = MemoryBillingRecords(ledger)
        alerts, webhooks = MemoryAlerts(ledger), MemoryWebhooks(ledger)
        resume = InProcessResumeTokens()
        nonces = InProcessNonces(ledger.store)
        sessions = MemorySessions(ledger.store)
        console = MemoryConsole(ledger.store)
    else:
        ledger = SqlLedger(settings.database_url, lease_s=lease_s,
                           pool_size=settings.db_pool_size)
        payments = SqlPayments(ledger)
        records = SqlBillingRecords(ledger)
        alerts, webhooks = SqlAlerts(ledger), SqlWebhooks(ledger)
        resume = SqlResumeTokens(ledger.runner)
        # HMAC nonces live in the SQL store only, Redis or not: one source of truth, so a
        # nonce is accepted once across Redis outages (README "Billing API"). Billing requests
        # need the SQL store anyway, and nonces are not on the proxy's hot path.
        nonces = SqlNonces(ledger.runner)
        sessions = SqlSessions(ledger.runner)
        console = SqlConsole(ledger.runner)
    metrics = Metrics()
    counters: Counters = InProcessCounters()
    bus: EventBus = InProcessEventBus()
    if settings.redis_url:
        require_for_redis(settings.redis_url)  # MissingDriver names the extra to install
        from redis.asyncio import Redis
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.retry import Retry

        from gateway.event_bus import RedisEventBus
        from storage.redis_state import Breaker, RedisResumeTokens

        # Short timeouts (a frozen Redis must not stall calls) and one immediate retry on a
        # broken connection (a restarted Redis leaves stale pooled connections behind).
        client = Redis.from_url(settings.redis_url, socket_timeout=0.25,
                                socket_connect_timeout=0.25, retry=Retry(NoBackoff(), 1),
                                retry_on_error=[RedisConnectionError])
        breaker = Breaker()
        resume = RedisResumeTokens(
            client, on_error=lambda step: metrics.store_errors.labels("redis_" + step).inc(),
            breaker=breaker)
        counters = RedisCounters(
            client, on_error=lambda: metrics.store_errors.labels("redis_rate_limits").inc(),
            breaker=breaker)
        bus = RedisEventBus(
            client, Breaker(),
            on_error=lambda step: metrics.store_errors.labels("redis_events_" + step).inc())
    ledger.on_commit = bus.publish
    alerts.alert_rules = alert_rules(policy)
    services = Services(
        settings=settings,
        policy=policy,
        ledger=ledger,
        accounts=ledger,
        payments=payments,
        event_log=ledger,
        keys=KeyCache(ledger, settings.key_cache_ttl_s),
        resume=resume,
        upstream=UpstreamClient(),
        metrics=metrics,
        limiter=RateLimiter(counters),
        unbilled=UnbilledSpool(settings.unbilled_path),
        nonces=nonces,
        bus=bus,
        stripe=stripe_client(settings),
        records=records,
        sessions=sessions,
        console=console,
        alerts=alerts,
        webhooks=webhooks,
    )
    services.topups = AutoTopUps(services)
    services.customers = StripeCustomers(services)
    return services


def create_app(settings: Settings | None = None, policy: Policy | None = None) -> Gateway:
    """The ASGI application for `settings` (default: from the environment)."""
    return Gateway(settings or Settings.from_env(), policy)


async def _watch_policy(services: Services) -> None:
    """Reload policy files when they change; keep the last good policy if the new one is
    invalid (the error is logged and shown in /readyz)."""
    paths = services.settings.policy_paths

    def stamp() -> tuple[float, ...]:
        out = []
        for p in paths:
            try:
                out.append(p.stat().st_mtime)
            except OSError:
                out.append(-1.0)
        return tuple(out)

    last = stamp()
    while True:
        await asyncio.sleep(POLICY_POLL_S)
        now = stamp()
        if now == last:
            continue
        last = now
        try:
            services.policy = load_policy(paths, services.settings.env)
            services.ledger.lease_s = services.policy.document.holds.lease_s
            if services.alerts is not None:
                services.alerts.alert_rules = alert_rules(services.policy)
            services.policy_error = None
            log.info("policy reloaded", extra={"files": [str(p) for p in paths]})
        except PolicyError as exc:
            services.policy_error = str(exc)
            log.error("policy reload failed; keeping the last good policy",
                      extra={"error": str(exc)})


async def _renew_leases(services: Services) -> None:
    """Keep this process's in-flight holds alive (SPEC §3: a crashed gateway never strands
    balance — its holds simply stop being renewed and lapse within one lease)."""
    while True:
        await asyncio.sleep(services.ledger.lease_s / 3)
        try:
            await services.ledger.renew_leases()
        except StoreUnavailable:
            services.metrics.store_errors.labels("renew_leases").inc()
            log.warning("could not renew hold leases: store unavailable")
        except Exception:  # this loop must outlive any one failure: if it died,
            # this process's live holds would lapse and their balance become spendable again
            services.metrics.store_errors.labels("renew_leases").inc()
            log.exception("could not renew hold leases; retrying next tick")


def _web_routes(gw: Gateway) -> list[BaseRoute]:
    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> Response:
        s = gw.services
        checks: dict[str, str] = {}
        ok = s is not None
        if s is not None:
            try:
                await s.ledger.ping()
                checks["database"] = "ok"
            except StoreUnavailable as exc:
                checks["database"] = f"unreachable: {exc}"
                ok = False
            ping = getattr(s.resume, "ping", None)
            if ping is not None:
                try:
                    await ping()
                    checks["redis"] = "ok"
                except Exception as exc:  # noqa: BLE001 - any redis error: degraded
                    # Redis carries no money: calls keep working (tokens and counters fall
                    # back per process), so a Redis outage must not pull every replica out.
                    checks["redis"] = (f"degraded: unreachable ({exc}); resume tokens and "
                                       "rate limits are per process until it returns")
            checks["policy"] = "ok" if s.policy_error is None else (
                "serving last good policy; reload failed: " + s.policy_error)
        return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks},
                            status_code=200 if ok else 503)

    async def metrics(_request: Request) -> Response:
        s = gw.services
        if s is None:
            return PlainTextResponse("starting", status_code=503)
        return Response(generate_latest(s.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def problem_doc(request: Request) -> Response:
        """The documentation a problem `type` URL dereferences to (RFC 9457 §3.1.1): JSON by
        default, an HTML page when the client prefers text/html (a browser)."""
        slug = request.path_params["slug"]
        cls = problem_types().get(slug)
        if cls is None:
            raise NotFound(f"No problem type {slug!r}.")
        doc = {"type": gw.base_url + slug, "slug": slug, "title": cls.title,
               "status": cls.status, "description": " ".join((cls.__doc__ or cls.title).split())}
        headers = {"cache-control": "public, max-age=3600", "vary": "accept"}
        if prefers_html(request.headers.get("accept", "")):
            return Response(problem_page(doc), media_type="text/html; charset=utf-8",
                            headers={**headers, "content-security-policy": "default-src 'none'"})
        return JSONResponse(doc, headers=headers)

    return [
        *BILLING_ROUTES,
        *COSTS_ROUTES,
        *ADMIN_ROUTES,
        *ALERT_ROUTES,
        *WEBHOOK_ENDPOINT_ROUTES,
        *ADMIN_BUDGET_ROUTES,
        *PAYMENTS_ROUTES,
        *STREAM_ROUTES,
        *AUTO_TOPUP_ROUTES,
        *INVOICE_ROUTES,
        *RECONCILE_ROUTES,
        *MODELS_ROUTES,
        *META_ROUTES,
        *BILLING_ACCOUNT_ROUTES,
        *PAYMENT_METHOD_ROUTES,
        *SUBSCRIPTION_ROUTES,
        *CREDIT_ROUTES,
        *CONSOLE_ROUTES,
        *DASHBOARD_ROUTES,
        openapi_route(),
        WebRoute("/healthz", healthz),
        WebRoute("/readyz", readyz),
        WebRoute("/metrics", metrics),
        WebRoute("/problems/{slug}", problem_doc),
    ]
