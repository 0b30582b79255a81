"""Apply the Alembic migrations programmatically (used by `gateway serve` and `gateway migrate`)."""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config

from storage.drivers import require_for_database
from storage.sql.engine import sync_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Alembic's `context` and `op` are process-wide proxies: two migrations running at once in
# one process (e.g. a test preparing a database in a thread) would cross-wire. One at a time.
_ALEMBIC = threading.Lock()


def alembic_config(url: str) -> Config:
    """An Alembic Config for the database at `url` (sqlite:// or postgresql+asyncpg://)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", sync_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str) -> None:
    """Bring the database at `url` to the newest schema. Idempotent. Raises
    storage.drivers.MissingDriver when the URL's driver is not installed."""
    require_for_database(url)
    _ensure_sqlite_dir(url)
    with _ALEMBIC:
        command.upgrade(alembic_config(url), "head")


def _ensure_sqlite_dir(url: str) -> None:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
        Path(u.database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
