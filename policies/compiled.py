"""The compiled policy the request path reads: routes matched in O(1) for fixed paths,
upstream credentials resolved once, plans converted to ledger units. Never YAML per request."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from policies.estimates import Estimator
from policies.headers import compile_rules
from policies.loader import (
    Loc,
    PolicyError,
    PolicyIssue,
    dotted,
    origin_of,
    read_documents,
    validate_document,
)
from policies.meters import Meter
from policies.provider_prices import DEFAULT_PROVIDERS
from policies.schema import PlanSpec, PolicyDocument, RouteSpec, UpstreamSpec
from policies.unit_checks import unit_issues
from policies.units import TIME, UnitKind, UnitOfAccount
from storage.clock import MS_PER_MINUTE


@dataclass(frozen=True)
class Upstream:
    """A resolved upstream: final base URL and the auth header to inject (None for `none`)."""

    name: str
    base_url: str
    strip_prefix: str
    auth_header: tuple[str, str] | None
    extra_headers: tuple[tuple[str, str], ...]
    spec: UpstreamSpec

    def url_for(self, path: str, query: str) -> str:
        """Upstream URL for gateway `path` (+ raw `query`, without '?')."""
        if self.strip_prefix and path.startswith(self.strip_prefix):
            path = path[len(self.strip_prefix):] or "/"
        return self.base_url + path + ("?" + query if query else "")


@dataclass(frozen=True)
class Plan:
    """A plan in ledger units (ms, micro-units or tokens: the policy's unit): daily bonus,
    monthly bonus cap (None = uncapped), welcome bonus, included per period, rollover cap."""

    key: str
    daily_bonus: int
    monthly_bonus_cap: int | None
    welcome_bonus: int
    included: int
    rollover_cap: int

    @classmethod
    def from_spec(cls, key: str, spec: PlanSpec, unit: UnitOfAccount = TIME) -> Plan:
        """`spec` converted to ledger units: `*_minutes` for time, the unit amounts otherwise
        (policies.unit_checks rejects a plan mixing them)."""
        if unit.kind is not UnitKind.TIME:
            def amount(value: Decimal | None) -> int:
                return 0 if value is None else unit.from_api(value)
            return cls(key=key, daily_bonus=amount(spec.daily_bonus),
                       monthly_bonus_cap=None if spec.monthly_bonus_cap is None
                       else amount(spec.monthly_bonus_cap),
                       welcome_bonus=amount(spec.welcome_bonus), included=amount(spec.included),
                       rollover_cap=amount(spec.rollover_cap))
        cap = spec.monthly_bonus_cap_minutes
        return cls(
            key=key,
            daily_bonus=spec.daily_bonus_minutes * MS_PER_MINUTE,
            monthly_bonus_cap=None if cap is None else cap * MS_PER_MINUTE,
            welcome_bonus=spec.welcome_bonus_minutes * MS_PER_MINUTE,
            included=spec.included_minutes * MS_PER_MINUTE,
            rollover_cap=spec.rollover_cap_minutes * MS_PER_MINUTE,
        )


@dataclass
class Route:
    """A compiled route. `hold_ttl_s` = upstream total timeout + hold margin (seconds);
    `rate_limited` / `counts_tokens` say whether the route has any limit / a token limit;
    `forward` is the allow-list of caller headers sent upstream (policies/headers.py)."""

    spec: RouteSpec
    upstream: Upstream
    meter: Meter
    estimator: Estimator
    hold_ttl_s: float
    pattern: re.Pattern[str] | None = None

    @property
    def operation(self) -> str:
        return self.spec.operation

    def __post_init__(self) -> None:
        limits = self.spec.rate_limits
        # decided once here so the request path skips limiters on unlimited routes
        self.rate_limited = any((limits.per_key.requests_per_minute,
                                 limits.per_key.tokens_per_minute,
                                 limits.per_account.requests_per_minute,
                                 limits.per_account.tokens_per_minute))
        self.counts_tokens = bool(limits.per_key.tokens_per_minute
                                  or limits.per_account.tokens_per_minute)
        up = self.upstream.spec
        self.forward = compile_rules(self.spec.protocol, up.forward_headers,
                                     up.forward_header_values)

    def upstream_url(self, path: str, query: str) -> str:
        """Where this call goes: `upstream_path` when set, else the gateway path."""
        return self.upstream.url_for(self.spec.upstream_path or path, query)


@dataclass
class Policy:
    """The whole compiled policy. `match(method, path)` → Route | None; `plans` by key."""

    document: PolicyDocument
    routes: list[Route]
    plans: dict[str, Plan]
    sources: tuple[str, ...]
    unit: UnitOfAccount = TIME
    _exact: dict[tuple[str, str], Route] = field(default_factory=dict)
    _patterns: list[Route] = field(default_factory=list)
    _paths: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        for route in self.routes:
            if route.pattern is None:
                self._exact[(route.spec.method, route.spec.path)] = route
                self._paths.add(route.spec.path)
            else:
                self._patterns.append(route)

    def match(self, method: str, path: str) -> Route | None:
        """The route for `method` `path`, exact paths first, then patterns in file order."""
        route = self._exact.get((method, path))
        if route is not None:
            return route
        for route in self._patterns:
            if route.spec.method == method and route.pattern is not None and route.pattern.match(
                path
            ):
                return route
        return None

    def path_known(self, path: str) -> bool:
        """True if some route serves `path` with any method (405 rather than 404)."""
        if path in self._paths:
            return True
        return any(r.pattern is not None and r.pattern.match(path) for r in self._patterns)

    @property
    def catalog_version(self) -> str:
        return self.document.catalog.version


def price_provider_of(spec: UpstreamSpec, protocol: str) -> str | None:
    """The genai-prices provider id a route's calls are priced with: the upstream's
    `price_provider`, else its protocol's provider (None for `plain`: no default)."""
    return spec.price_provider or DEFAULT_PROVIDERS.get(protocol)


def _path_regex(path: str) -> re.Pattern[str] | None:
    if "{" not in path:
        return None
    out = "^"
    for part in re.split(r"(\{[a-zA-Z_][a-zA-Z0-9_]*\})", path):
        out += "[^/]+" if part.startswith("{") else re.escape(part)
    return re.compile(out + "$")


def reference_issues(
    data: Mapping[str, Any],
    env: Mapping[str, str],
    origins: Mapping[Loc, tuple[str, int]] | None = None,
    default_file: str = "<policy>",
) -> list[PolicyIssue]:
    """The cross-reference problems of a policy as plain data (merged YAML, valid or not, or a
    validated document's `model_dump()`): default plan and subscription plans that are not keys
    of `plans`, routes naming an unknown upstream or declared twice (method + path), and
    `base_url_env` variables set in `env` to something that is not an http(s) URL.

    Parts with the wrong shape are skipped: the schema reports them, so an invalid document
    still gets its reference errors in the same pass."""
    origins = origins or {}
    issues: list[PolicyIssue] = []

    def problem(loc: Loc, message: str) -> None:
        file, line = origin_of(loc, origins, default_file)
        issues.append(PolicyIssue(file, line, dotted(loc), message))

    plans, upstreams = data.get("plans"), data.get("upstreams", {})
    if isinstance(plans, dict):
        default_plan = data.get("default_plan", "free")
        if isinstance(default_plan, str) and default_plan not in plans:
            problem(("default_plan",), f"'{default_plan}' is not a key of plans")
        catalog = data.get("catalog")
        subs = catalog.get("subscriptions") if isinstance(catalog, dict) else None
        for i, sub in enumerate(subs if isinstance(subs, list) else []):
            plan = sub.get("plan") if isinstance(sub, dict) else None
            if isinstance(plan, str) and plan not in plans:
                problem(("catalog", "subscriptions", i, "plan"), f"unknown plan '{plan}'")
    for name, spec in (upstreams.items() if isinstance(upstreams, dict) else ()):
        var = spec.get("base_url_env") if isinstance(spec, dict) else None
        if isinstance(var, str) and env.get(var):
            base = env[var].rstrip("/")
            if not re.match(r"^https?://[^\s/]+", base):
                problem(("upstreams", name, "base_url_env"),
                        f"{var}={base!r} is not an http(s) URL")
    routes = data.get("routes", [])
    seen: set[tuple[str, str]] = set()
    for i, route in enumerate(routes if isinstance(routes, list) else []):
        if not isinstance(route, dict):
            continue
        method, path = route.get("method", "POST"), route.get("path")
        if isinstance(method, str) and isinstance(path, str):
            if (method.upper(), path) in seen:
                problem(("routes", i, "path"), f"{method.upper()} {path} is declared twice")
            seen.add((method.upper(), path))
        upstream = route.get("upstream")
        if isinstance(upstream, str) and isinstance(upstreams, dict) and upstream not in upstreams:
            problem(("routes", i, "upstream"), f"unknown upstream '{upstream}'")
    return issues


def compile_policy(
    doc: PolicyDocument,
    env: Mapping[str, str],
    origins: Mapping[Loc, tuple[str, int]] | None = None,
    sources: Sequence[str] = (),
) -> Policy:
    """Compile a validated document. Raises PolicyError for unresolvable references
    (see `reference_issues`)."""
    default_file = sources[-1] if sources else "<policy>"
    dumped = doc.model_dump()
    issues = reference_issues(dumped, env, origins, default_file)
    issues += unit_issues(dumped, origins, default_file)
    if issues:
        raise PolicyError(issues)

    upstreams: dict[str, Upstream] = {}
    for name, spec in doc.upstreams.items():
        base = spec.base_url
        if spec.base_url_env and env.get(spec.base_url_env):
            base = env[spec.base_url_env].rstrip("/")
        auth: tuple[str, str] | None = None
        if spec.auth != "none":
            key = env.get(spec.api_key_env, "") if spec.api_key_env else ""
            value = f"Bearer {key}" if spec.auth == "bearer" else key
            auth = ("authorization", value) if spec.auth == "bearer" else ("x-api-key", value)
            if not key:
                auth = None  # unset credential: forward without one (local/offline upstreams)
        upstreams[name] = Upstream(
            name=name,
            base_url=base,
            strip_prefix=spec.strip_prefix,
            auth_header=auth,
            extra_headers=tuple((k.lower(), v) for k, v in spec.headers.items()),
            spec=spec,
        )

    unit = doc.unit.compile()
    routes: list[Route] = []
    for route in doc.routes:
        upstream = upstreams[route.upstream]
        meter = Meter(route.meter, unit, price_provider_of(upstream.spec, route.protocol))
        routes.append(
            Route(
                spec=route,
                upstream=upstream,
                meter=meter,
                estimator=Estimator(route.estimate, meter),
                hold_ttl_s=upstream.spec.total_timeout_s + doc.holds.ttl_margin_s,
                pattern=_path_regex(route.path),
            )
        )
    plans = {k: Plan.from_spec(k, v, unit) for k, v in doc.plans.items()}
    return Policy(document=doc, routes=routes, plans=plans, sources=tuple(sources), unit=unit)


def load_policy(paths: Sequence[Path | str], env: Mapping[str, str]) -> Policy:
    """Read, validate and compile policy files. Raises PolicyError listing every problem in one
    pass — YAML, schema and cross-reference errors together — each with file, line and field,
    in file and line order."""
    files = [Path(p) for p in paths]
    sources = [str(p) for p in files]
    data, origins, read_issues = read_documents(files)
    try:
        doc = validate_document(data, origins, files, read_issues)
    except PolicyError as exc:
        issues = (exc.issues + reference_issues(data, env, origins, sources[-1])
                  + unit_issues(data, origins, sources[-1]))
        order = {name: i for i, name in enumerate(sources)}
        issues.sort(key=lambda i: (order.get(i.file, len(order)), i.line))
        raise PolicyError(issues) from None
    return compile_policy(doc, env, origins, sources)
