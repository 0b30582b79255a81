"""Prometheus metrics of the gateway (prometheus-client), one registry per app instance."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                    10, 30, 60, 120, 300)


class Metrics:
    """Counters and histograms named `gateway_*`. Units: seconds for latencies, ledger units
    (ms of AI time) for charges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("gateway_requests", "Proxied calls by operation and status",
                                ["operation", "status"], registry=r)
        self.payment_required = Counter("gateway_payment_required",
                                        "402 answers by operation", ["operation"], registry=r)
        self.charged = Counter("gateway_charged_units",
                               "Ledger units (ms of AI time) debited", ["operation"], registry=r)
        self.unbilled = Counter("gateway_unbilled_units",
                                "Ledger units not collected (clamp shortfall or store down)",
                                ["operation", "reason"], registry=r)
        self.active_holds = Gauge("gateway_active_holds", "Holds placed by this process and not "
                                  "yet settled", registry=r)
        self.upstream_latency = Histogram("gateway_upstream_seconds",
                                          "Upstream time to response head", ["upstream"],
                                          buckets=_LATENCY_BUCKETS, registry=r)
        self.overhead = Histogram("gateway_overhead_seconds",
                                  "Gateway time outside the upstream call (non-streamed calls)",
                                  ["operation"], buckets=_LATENCY_BUCKETS, registry=r)
        self.store_errors = Counter("gateway_store_errors", "Ledger store failures", ["step"],
                                    registry=r)
        self.billing_streams = Gauge("gateway_billing_streams",
                                     "Open live billing streams (SSE) in this process",
                                     registry=r)
        self.stripe_events = Counter("gateway_stripe_events", "Stripe webhook events by type "
                                     "and outcome", ["type", "outcome"], registry=r)
        self.auto_topups = Counter("gateway_auto_topups", "Auto top-up attempts by result",
                                   ["result"], registry=r)
        self._children: dict[tuple[object, ...], object] = {}
        self.upstream_errors = Counter("gateway_upstream_errors",
                                       "Upstream connection failures and timeouts",
                                       ["upstream", "kind"], registry=r)
        self.unpriced_calls = Counter("gateway_unpriced_calls",
                                      "Calls whose provider cost is unknown to the price source "
                                      "(recorded with a null cost), by provider and reason",
                                      ["provider", "reason"], registry=r)

    def child(self, metric: Counter | Histogram, *labels: str):  # type: ignore[no-untyped-def]
        """`metric.labels(*labels)`, memoized: the hot path skips prometheus-client's label
        validation and locking on every call."""
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found
