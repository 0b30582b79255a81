"""Optional driver packages: PostgreSQL (asyncpg, extra `postgres`) and Redis (redis, extra
`redis`). A configured store whose driver is not installed is a configuration error that names
the extra to install, never a "database unreachable"."""

from __future__ import annotations

import importlib

from sqlalchemy.engine import make_url

PACKAGE = "ai-metering-gateway"


class MissingDriver(Exception):
    """A configured store needs a driver package that is not installed; the message says which
    `pip install 'ai-metering-gateway[EXTRA]'` provides it."""


def require(module: str, extra: str, needed_by: str) -> None:
    """Import `module` or raise MissingDriver naming `needed_by` (e.g. the setting) and the
    extra that installs it."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise MissingDriver(
            f"{needed_by} needs the {module!r} package, which is not installed ({exc}): "
            f"pip install '{PACKAGE}[{extra}]'") from None


def require_for_database(url: str) -> None:
    """Raise MissingDriver when `url` is a PostgreSQL URL and asyncpg is not installed
    (SQLite needs nothing beyond the standard library)."""
    if make_url(url).get_backend_name() == "postgresql":
        require("asyncpg", "postgres", "GATEWAY_DATABASE_URL (PostgreSQL)")


def require_for_redis(redis_url: str | None) -> None:
    """Raise MissingDriver when a Redis URL is configured and redis-py is not installed."""
    if redis_url:
        require("redis", "redis", "GATEWAY_REDIS_URL")
