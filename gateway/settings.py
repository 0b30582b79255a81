"""Settings: the one module that reads the environment (STYLE: nothing else reads os.environ).

| variable | default | meaning |
| --- | --- | --- |
| GATEWAY_DATABASE_URL | sqlite:///./gateway.db | ledger store: `sqlite:///PATH` or `postgresql+asyncpg://…` |
| GATEWAY_POLICY_PATH | ./config/policies.yaml if present, else the packaged default | policy YAML file(s), comma-separated, merged in order |
| GATEWAY_REDIS_URL | (unset) | Redis for shared ephemeral state; unset = in-process |
| GATEWAY_HOST / GATEWAY_PORT | 127.0.0.1 / 8080 | where `gateway serve` listens |
| GATEWAY_PUBLIC_URL | (unset) | base of problem `type` URLs; unset = http://HOST:PORT |
| GATEWAY_MAX_BODY_BYTES | 1048576 | largest body of the billing, admin and webhook API (413) |
| GATEWAY_LOG_LEVEL | info | debug, info, warning, error |
| GATEWAY_KEY_CACHE_TTL_S | 30 | seconds an API-key lookup is cached (revocation delay) |
| GATEWAY_UNBILLED_PATH | unbilled.jsonl | spool of calls served while the store was down |
| STRIPE_SECRET_KEY / STRIPE_WEBHOOK_SECRET | (unset) | Stripe API key and webhook signing secret |
| STRIPE_API_BASE | https://api.stripe.com | Stripe API base (point at a test double such as stripe-mock) |
| GATEWAY_CHECKOUT_SUCCESS_URL / _CANCEL_URL | GATEWAY_PUBLIC_URL + /billing/… | where Checkout returns |
| GATEWAY_ADMIN_TOKEN | (unset) | bearer credential of the admin API (≥ 32 chars); unset = no admin API |
| GATEWAY_HMAC_KEYS | (unset) | server-to-server billing keys: `id:secret,id2:secret2` (secrets ≥ 32 chars) |
| GATEWAY_EVENT_HISTORY_S | 86400 | how long account events stay replayable (`Last-Event-ID`) |
| GATEWAY_STREAM_KEEPALIVE_S | 15 | seconds between keep-alive comments on the billing stream |
| GATEWAY_STREAM_POLL_S | 5 | a stream re-reads the event log at least this often (bus fallback) |
| GATEWAY_MAINTENANCE_S | 30 | period of expiry/rollover, event pruning and auto top-up retries |
| OPENAI_BASE_URL, OPENAI_API_KEY, ANTHROPIC_BASE_URL, ANTHROPIC_API_KEY | | read by the policy's upstreams (`base_url_env`, `api_key_env`) |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from policies import PACKAGED_POLICY

LOCAL_POLICY = Path("config/policies.yaml")


class SettingsError(ValueError):
    """An environment variable has an invalid value; the message names it."""


def default_policy_paths() -> tuple[Path, ...]:
    """The policy used when neither GATEWAY_POLICY_PATH nor `--config` names one:
    `./config/policies.yaml` (relative to the working directory) when it exists, else the
    default policy shipped inside the package (so an installed gateway runs from anywhere)."""
    return (LOCAL_POLICY,) if LOCAL_POLICY.is_file() else (PACKAGED_POLICY,)


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={value} is outside {low}..{high}")
    return value


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name) or default
    if not value.startswith(("http://", "https://")):
        raise SettingsError(f"{name}={value!r} is not an http(s) URL")
    return value.rstrip("/")


def _admin_token(raw: str | None) -> str | None:
    if raw is not None and len(raw) < 32:
        raise SettingsError("GATEWAY_ADMIN_TOKEN must be at least 32 characters")
    return raw


def _hmac_keys(raw: str) -> dict[str, str]:
    keys: dict[str, str] = {}
    for item in (p.strip() for p in raw.split(",") if p.strip()):
        key_id, sep, secret = item.partition(":")
        if not sep or not key_id or len(secret) < 32:
            raise SettingsError("GATEWAY_HMAC_KEYS: each entry is 'id:secret' with a secret of "
                                "at least 32 characters")
        keys[key_id] = secret
    return keys


@dataclass(frozen=True)
class Settings:
    """Validated deployment settings. Build with `Settings.from_env()`."""

    database_url: str = "sqlite:///./gateway.db"
    policy_paths: tuple[Path, ...] = field(default_factory=default_policy_paths)
    redis_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = None
    log_level: str = "info"
    key_cache_ttl_s: int = 30
    unbilled_path: Path = Path("unbilled.jsonl")
    hmac_keys: Mapping[str, str] = field(default_factory=dict, repr=False)
    admin_token: str | None = field(default=None, repr=False)
    stripe_secret_key: str | None = field(default=None, repr=False)
    stripe_webhook_secret: str | None = field(default=None, repr=False)
    stripe_api_base: str = "https://api.stripe.com"
    checkout_success_url: str = "http://localhost:8080/billing/success"
    checkout_cancel_url: str = "http://localhost:8080/billing/cancel"
    event_history_s: int = 86_400
    stream_keepalive_s: int = 15
    stream_poll_s: int = 5
    maintenance_s: int = 30
    max_body_bytes: int = 1_048_576  # billing, admin, webhooks (proxied routes: per route)
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate settings. Raises SettingsError naming the bad variable."""
        env = dict(os.environ if env is None else env)
        url = env.get("GATEWAY_DATABASE_URL") or cls.database_url
        if not (url.startswith("sqlite") or url.startswith("postgresql")):
            raise SettingsError(
                f"GATEWAY_DATABASE_URL={url!r}: expected sqlite:///PATH or postgresql+asyncpg://…"
            )
        if url.startswith("postgresql") and "+asyncpg" not in url:
            url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
        paths = tuple(
            Path(p.strip()) for p in (env.get("GATEWAY_POLICY_PATH") or "").split(",") if p.strip()
        ) or default_policy_paths()
        level = (env.get("GATEWAY_LOG_LEVEL") or "info").lower()
        if level not in {"debug", "info", "warning", "error"}:
            raise SettingsError(f"GATEWAY_LOG_LEVEL={level!r}: use debug, info, warning or error")
        redis_url = env.get("GATEWAY_REDIS_URL") or None
        if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError(f"GATEWAY_REDIS_URL={redis_url!r}: expected redis://HOST:PORT/DB")
        return cls(
            database_url=url,
            policy_paths=paths,
            redis_url=redis_url,
            host=env.get("GATEWAY_HOST") or "127.0.0.1",
            port=_int(env, "GATEWAY_PORT", 8080, 1, 65535),
            public_url=env.get("GATEWAY_PUBLIC_URL") or None,
            log_level=level,
            key_cache_ttl_s=_int(env, "GATEWAY_KEY_CACHE_TTL_S", 30, 0, 3600),
            unbilled_path=Path(env.get("GATEWAY_UNBILLED_PATH") or "unbilled.jsonl"),
            hmac_keys=_hmac_keys(env.get("GATEWAY_HMAC_KEYS", "")),
            admin_token=_admin_token(env.get("GATEWAY_ADMIN_TOKEN") or None),
            stripe_secret_key=env.get("STRIPE_SECRET_KEY") or None,
            stripe_webhook_secret=env.get("STRIPE_WEBHOOK_SECRET") or None,
            stripe_api_base=_url(env, "STRIPE_API_BASE", "https://api.stripe.com"),
            checkout_success_url=_url(env, "GATEWAY_CHECKOUT_SUCCESS_URL",
                                      (env.get("GATEWAY_PUBLIC_URL") or "http://localhost:8080")
                                      .rstrip("/") + "/billing/success"),
            checkout_cancel_url=_url(env, "GATEWAY_CHECKOUT_CANCEL_URL",
                                     (env.get("GATEWAY_PUBLIC_URL") or "http://localhost:8080")
                                     .rstrip("/") + "/billing/cancel"),
            event_history_s=_int(env, "GATEWAY_EVENT_HISTORY_S", 86_400, 60, 90 * 86_400),
            stream_keepalive_s=_int(env, "GATEWAY_STREAM_KEEPALIVE_S", 15, 1, 300),
            stream_poll_s=_int(env, "GATEWAY_STREAM_POLL_S", 5, 1, 300),
            maintenance_s=_int(env, "GATEWAY_MAINTENANCE_S", 30, 1, 3600),
            max_body_bytes=_int(env, "GATEWAY_MAX_BODY_BYTES", 1_048_576, 1024, 64 * 1_048_576),
            env=env,
        )

    def export_for_workers(self) -> None:
        """Write CLI overrides back to this process's environment so uvicorn's worker
        processes (which build their own Settings from the environment) see them."""
        os.environ["GATEWAY_POLICY_PATH"] = ",".join(str(p) for p in self.policy_paths)
        os.environ["GATEWAY_DATABASE_URL"] = self.database_url
        os.environ["GATEWAY_HOST"] = self.host
        os.environ["GATEWAY_PORT"] = str(self.port)
        os.environ["GATEWAY_UNBILLED_PATH"] = str(self.unbilled_path)

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with some fields replaced (CLI flags win over the environment)."""
        return replace(self, **changes)  # type: ignore[arg-type]
