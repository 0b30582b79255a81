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
| STRIPE_PUBLISHABLE_KEY | (unset) | Stripe's publishable key, handed to frontends by `GET /v1/billing/config` |
| GATEWAY_BILLING_ENABLED | true | false: every `/v1/billing/*` path but the Stripe webhook answers 503 `billing-disabled` (the proxy keeps metering) |
| GATEWAY_PORTAL_RETURN_URL | GATEWAY_PUBLIC_URL + /billing | where Stripe's customer portal sends the customer back |
| GATEWAY_CHECKOUT_INVOICES | false | `true`: Checkout creates a Stripe invoice for one-time purchases (Stripe charges for it) |
| GATEWAY_ADMIN_TOKEN | (unset) | bearer credential of the admin API (≥ 32 chars); unset = no admin API |
| GATEWAY_HMAC_KEYS | (unset) | server-to-server billing keys: `id:secret,id2:secret2` (secrets ≥ 32 chars) |
| GATEWAY_EVENT_HISTORY_S | 86400 | how long account events stay replayable (`Last-Event-ID`) |
| GATEWAY_STREAM_KEEPALIVE_S | 15 | seconds between keep-alive comments on the billing stream |
| GATEWAY_STREAM_POLL_S | 5 | a stream re-reads the event log at least this often (bus fallback) |
| GATEWAY_MAINTENANCE_S | 30 | period of expiry/rollover, event pruning and auto top-up retries |
| GATEWAY_WEBHOOK_BACKOFF_BASE_MS | 5000 | outgoing webhooks: wait after the first failed attempt (doubles per attempt) |
| GATEWAY_WEBHOOK_BACKOFF_CAP_MS | 7200000 | outgoing webhooks: longest wait between attempts |
| GATEWAY_WEBHOOK_RETRY_WINDOW_S | 86400 | outgoing webhooks: retried until an attempt fails this long after the event (≥ 24 h) |
| GATEWAY_WEBHOOK_POLL_MS | 1000 | outgoing webhooks: how often the delivery worker looks for due deliveries |
| GATEWAY_WEBHOOK_TIMEOUT_S | 10 | outgoing webhooks: one attempt's timeout |
| GATEWAY_PAYMENT_CHALLENGE | false | add a `WWW-Authenticate: Payment` challenge to the 402 |
| GATEWAY_PAYMENT_CHALLENGE_SECRET | (random per process) | HMAC key binding the challenge `id` (≥ 32 chars; set it so every replica's ids verify alike) |
| OPENAI_BASE_URL, OPENAI_API_KEY, ANTHROPIC_BASE_URL, ANTHROPIC_API_KEY | | read by the policy's upstreams (`base_url_env`, `api_key_env`) |
| OTEL_TRACES_EXPORTER, OTEL_EXPORTER_OTLP_ENDPOINT, … | (unset: off) | OpenTelemetry tracing, read from `Settings.env` by gateway/tracing_config.py |
"""  # noqa: E501 - a Markdown table

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import annotated_types
from pydantic import (
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from policies import PACKAGED_POLICY
from storage.clock import SECONDS_PER_DAY
from storage.sql.engine import PG_POOL_SIZE

LOCAL_POLICY = Path("config/policies.yaml")
LOG_LEVELS = ("debug", "info", "warning", "error")
_MIB = 1_048_576


class SettingsError(ValueError):
    """An environment variable has an invalid value; the message names it."""


def default_policy_paths() -> tuple[Path, ...]:
    """The policy used when neither GATEWAY_POLICY_PATH nor `--config` names one:
    `./config/policies.yaml` (relative to the working directory) when it exists, else the
    default policy shipped inside the package (so an installed gateway runs from anywhere)."""
    return (LOCAL_POLICY,) if LOCAL_POLICY.is_file() else (PACKAGED_POLICY,)


class _EnvMapping(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of `os.environ`, so
    `Settings.from_env(mapping)` reads exactly that mapping. Only the fields' variables
    (`validation_alias`) are read, never bare field names; empty values count as unset."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._variables = {str(f.validation_alias) for f in settings_cls.model_fields.values()}
        self._env = env
        super().__init__(settings_cls, case_sensitive=True, env_ignore_empty=True)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name: value for name, value in self._env.items()
                if name in self._variables and value != ""}


class Settings(BaseSettings):
    """Validated deployment settings (frozen). `Settings.from_env()` reads the environment: each
    field's `validation_alias` is its variable (table above). `Settings(field=value, …)` builds
    from explicit values and the defaults only, never from `os.environ` (tests, CLI overrides).
    Invalid values raise SettingsError naming the variable."""

    model_config = SettingsConfigDict(
        frozen=True, extra="forbid", case_sensitive=True, env_ignore_empty=True,
        validate_by_name=True, validate_by_alias=True,
    )

    database_url: str = Field("sqlite:///./gateway.db", validation_alias="GATEWAY_DATABASE_URL")
    # PostgreSQL connections each process keeps (no overflow): processes × this ≤ the server's
    # max_connections (100 by default) minus what else connects; ignored on SQLite.
    db_pool_size: int = Field(PG_POOL_SIZE, ge=1, le=500, validation_alias="GATEWAY_DB_POOL_SIZE")
    policy_paths: Annotated[tuple[Path, ...], NoDecode] = Field(
        default_factory=default_policy_paths, validation_alias="GATEWAY_POLICY_PATH")
    redis_url: str | None = Field(None, validation_alias="GATEWAY_REDIS_URL")
    host: str = Field("127.0.0.1", validation_alias="GATEWAY_HOST")
    port: int = Field(8080, ge=1, le=65535, validation_alias="GATEWAY_PORT")
    public_url: str | None = Field(None, validation_alias="GATEWAY_PUBLIC_URL")
    log_level: str = Field("info", validation_alias="GATEWAY_LOG_LEVEL")
    key_cache_ttl_s: int = Field(30, ge=0, le=3600, validation_alias="GATEWAY_KEY_CACHE_TTL_S")
    unbilled_path: Path = Field(Path("unbilled.jsonl"), validation_alias="GATEWAY_UNBILLED_PATH")
    hmac_keys: Annotated[Mapping[str, str], NoDecode] = Field(
        default_factory=dict, repr=False, validation_alias="GATEWAY_HMAC_KEYS")
    admin_token: str | None = Field(None, repr=False, validation_alias="GATEWAY_ADMIN_TOKEN")
    stripe_secret_key: str | None = Field(None, repr=False, validation_alias="STRIPE_SECRET_KEY")
    stripe_webhook_secret: str | None = Field(None, repr=False,
                                              validation_alias="STRIPE_WEBHOOK_SECRET")
    stripe_api_base: str = Field("https://api.stripe.com", validation_alias="STRIPE_API_BASE")
    # unset: GATEWAY_PUBLIC_URL (else http://localhost:8080) + /billing/success | /billing/cancel
    checkout_success_url: str = Field("", validation_alias="GATEWAY_CHECKOUT_SUCCESS_URL")
    checkout_cancel_url: str = Field("", validation_alias="GATEWAY_CHECKOUT_CANCEL_URL")
    stripe_publishable_key: str | None = Field(None, validation_alias="STRIPE_PUBLISHABLE_KEY")
    # the billing API's kill-switch (the proxy and the Stripe webhook keep working)
    billing_enabled: bool = Field(True, validation_alias="GATEWAY_BILLING_ENABLED")
    # unset: GATEWAY_PUBLIC_URL (else http://localhost:8080) + /billing
    portal_return_url: str = Field("", validation_alias="GATEWAY_PORTAL_RETURN_URL")
    # Stripe charges per invoice it creates: the operator opts in (issue 11 item 5)
    checkout_invoices: bool = Field(False, validation_alias="GATEWAY_CHECKOUT_INVOICES")
    event_history_s: int = Field(SECONDS_PER_DAY, ge=60, le=90 * SECONDS_PER_DAY,
                                 validation_alias="GATEWAY_EVENT_HISTORY_S")
    stream_keepalive_s: int = Field(15, ge=1, le=300,
                                    validation_alias="GATEWAY_STREAM_KEEPALIVE_S")
    stream_poll_s: int = Field(5, ge=1, le=300, validation_alias="GATEWAY_STREAM_POLL_S")
    maintenance_s: int = Field(30, ge=1, le=3600, validation_alias="GATEWAY_MAINTENANCE_S")
    webhook_backoff_base_ms: int = Field(5_000, ge=10, le=3_600_000,
                                         validation_alias="GATEWAY_WEBHOOK_BACKOFF_BASE_MS")
    webhook_backoff_cap_ms: int = Field(7_200_000, ge=10, le=86_400_000,
                                        validation_alias="GATEWAY_WEBHOOK_BACKOFF_CAP_MS")
    webhook_retry_window_s: int = Field(SECONDS_PER_DAY, ge=SECONDS_PER_DAY,
                                        le=30 * SECONDS_PER_DAY,
                                        validation_alias="GATEWAY_WEBHOOK_RETRY_WINDOW_S")
    webhook_poll_ms: int = Field(1_000, ge=10, le=60_000,
                                 validation_alias="GATEWAY_WEBHOOK_POLL_MS")
    webhook_timeout_s: int = Field(10, ge=1, le=60, validation_alias="GATEWAY_WEBHOOK_TIMEOUT_S")
    payment_challenge: bool = Field(False, validation_alias="GATEWAY_PAYMENT_CHALLENGE")
    # Unset: a random key per process (a challenge id then verifies on the process that made it).
    payment_challenge_secret: str | None = Field(
        None, repr=False, validation_alias="GATEWAY_PAYMENT_CHALLENGE_SECRET")
    # billing, admin, webhooks (proxied routes: per route)
    max_body_bytes: int = Field(_MIB, ge=1024, le=64 * _MIB,
                                validation_alias="GATEWAY_MAX_BODY_BYTES")

    # The whole environment the settings were read from: the policy's upstreams look their
    # `base_url_env` / `api_key_env` variables up in it (policies.compiled.load_policy).
    _env: Mapping[str, str] = PrivateAttr(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Explicit values only: the environment comes in through `from_env` alone."""
        return (init_settings,)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate settings from `env` (default: `os.environ`); an empty value counts
        as unset. Raises SettingsError naming each bad variable."""
        env = dict(os.environ if env is None else env)
        settings = cls._validated(_EnvMapping(cls, env)())
        settings._env = env
        return settings

    @property
    def env(self) -> Mapping[str, str]:
        """The environment these settings were read from ({} when built from explicit values)."""
        return self._env

    def export_for_workers(self) -> None:
        """Write CLI overrides back to this process's environment so uvicorn's worker
        processes (which build their own Settings from the environment) see them."""
        os.environ["GATEWAY_POLICY_PATH"] = ",".join(str(p) for p in self.policy_paths)
        os.environ["GATEWAY_DATABASE_URL"] = self.database_url
        os.environ["GATEWAY_HOST"] = self.host
        os.environ["GATEWAY_PORT"] = str(self.port)
        os.environ["GATEWAY_UNBILLED_PATH"] = str(self.unbilled_path)

    def with_overrides(self, **changes: Any) -> Settings:
        """A validated copy with some fields replaced (CLI flags win over the environment).
        Raises SettingsError on an invalid value."""
        settings = self._validated({**self.model_dump(), **changes})
        settings._env = self._env
        return settings

    @classmethod
    def _validated(cls, values: Mapping[str, Any]) -> Settings:
        try:
            return cls(**values)
        except ValidationError as exc:
            raise SettingsError("; ".join(_message(cls, e) for e in exc.errors())) from None

    @model_validator(mode="before")
    @classmethod
    def _derived_defaults(cls, data: Any) -> Any:
        """Key the values by field name and derive the unset Checkout URLs from the public URL."""
        if not isinstance(data, dict):
            return data
        data = {_FIELD_OF.get(key, key): value for key, value in data.items()}
        base = (data.get("public_url") or "http://localhost:8080").rstrip("/")
        for name, page in (("checkout_success_url", "/success"), ("checkout_cancel_url", "/cancel"),
                           ("portal_return_url", "")):
            data[name] = data.get(name) or f"{base}/billing{page}"
        return data

    @field_validator("port", "key_cache_ttl_s", "event_history_s", "stream_keepalive_s",
                     "stream_poll_s", "maintenance_s", "max_body_bytes", "webhook_backoff_base_ms",
                     "webhook_backoff_cap_ms", "webhook_retry_window_s", "webhook_poll_ms",
                     "webhook_timeout_s", mode="before")
    @classmethod
    def _integer(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise SettingsError(f"{_var_of(info)}={value!r} is not an integer") from None
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, url: str) -> str:
        if not (url.startswith("sqlite") or url.startswith("postgresql")):
            raise SettingsError(
                f"GATEWAY_DATABASE_URL={url!r}: expected sqlite:///PATH or postgresql+asyncpg://…"
            )
        if url.startswith("postgresql") and "+asyncpg" not in url:
            url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
        return url

    @field_validator("policy_paths", mode="before")
    @classmethod
    def _policy_paths(cls, value: Any) -> Any:
        if isinstance(value, str):  # comma-separated, merged in order
            return tuple(Path(p.strip()) for p in value.split(",") if p.strip()) \
                or default_policy_paths()
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, value: Any) -> Any:
        level = str(value).lower()
        if level not in LOG_LEVELS:
            raise SettingsError(f"GATEWAY_LOG_LEVEL={level!r}: use debug, info, warning or error")
        return level

    @field_validator("billing_enabled", mode="before")
    @classmethod
    def _boolean(cls, value: Any) -> Any:
        if isinstance(value, str):
            word = value.strip().lower()
            if word not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise SettingsError(f"GATEWAY_BILLING_ENABLED={value!r}: use true or false")
            return word in ("true", "1", "yes", "on")
        return value

    @field_validator("stripe_publishable_key")
    @classmethod
    def _publishable_key(cls, key: str | None) -> str | None:
        if key and not key.startswith("pk_"):
            raise SettingsError("STRIPE_PUBLISHABLE_KEY must be a publishable key (pk_…)")
        return key or None

    @field_validator("redis_url", "public_url", "admin_token", "stripe_secret_key",
                     "stripe_webhook_secret", "stripe_publishable_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return value or None

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, url: str | None) -> str | None:
        if url and not url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError(f"GATEWAY_REDIS_URL={url!r}: expected redis://HOST:PORT/DB")
        return url

    @field_validator("admin_token")
    @classmethod
    def _admin_token(cls, token: str | None) -> str | None:
        if token is not None and len(token) < 32:
            raise SettingsError("GATEWAY_ADMIN_TOKEN must be at least 32 characters")
        return token

    @field_validator("payment_challenge_secret")
    @classmethod
    def _challenge_secret(cls, secret: str | None) -> str | None:
        if secret is not None and len(secret) < 32:
            raise SettingsError("GATEWAY_PAYMENT_CHALLENGE_SECRET must be at least 32 characters")
        return secret

    @field_validator("hmac_keys", mode="before")
    @classmethod
    def _hmac_keys(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        keys: dict[str, str] = {}
        for item in (p.strip() for p in value.split(",") if p.strip()):
            key_id, sep, secret = item.partition(":")
            if not sep or not key_id or len(secret) < 32:
                raise SettingsError("GATEWAY_HMAC_KEYS: each entry is 'id:secret' with a secret "
                                    "of at least 32 characters")
            keys[key_id] = secret
        return keys

    @field_validator("stripe_api_base", "checkout_success_url", "checkout_cancel_url",
                     "portal_return_url")
    @classmethod
    def _http_url(cls, value: str, info: ValidationInfo) -> str:
        if not value.startswith(("http://", "https://")):
            raise SettingsError(f"{_var_of(info)}={value!r} is not an http(s) URL")
        return value.rstrip("/")


_FIELD_OF = {str(f.validation_alias): name for name, f in Settings.model_fields.items()}
_VAR_OF = {name: alias for alias, name in _FIELD_OF.items()}


def _var_of(info: ValidationInfo) -> str:
    return _VAR_OF[str(info.field_name)]


def _message(cls: type[Settings], error: ErrorDetails) -> str:
    """One ValidationError entry as the SettingsError text: the validators' own message, or
    `VAR=value is outside LOW..HIGH` for a bound of `Field(ge=…, le=…)`."""
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, SettingsError):
        return str(cause)
    name = str(error["loc"][0]) if error["loc"] else ""
    var = _VAR_OF.get(name, name)
    if error["type"] in {"greater_than_equal", "less_than_equal"}:
        bounds = {type(m): m for m in cls.model_fields[name].metadata}
        low, high = bounds[annotated_types.Ge].ge, bounds[annotated_types.Le].le
        return f"{var}={error['input']} is outside {low}..{high}"
    return f"{var}={error['input']!r}: {error['msg']}"
