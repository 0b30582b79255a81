"""Real processes for the production-path tests.

- `GatewayProcess`: `python -m gateway.cli serve` in its own process group (so teardown, and the
  `kill -9` of the fault tests, reach every process it started, uvicorn workers included);
- fresh databases on the shared PostgreSQL (`create_database` / `drop_database`);
- `PgCluster`: a throwaway PostgreSQL cluster (initdb + pg_ctl in a temp dir, on a free port)
  that a test may stop and start again;
- `RedisServer`: a throwaway `redis-server` on a free port that a test may kill and restart;
- `write_policy`: the e2e test policy (tests/e2e/policies.yaml: 1 unit per input token, 2 per
  output token, hold = len(body)//4 + 2*max_tokens) with short hold leases, chosen upstream
  timeouts and three extra routes (see `write_policy`).

Real services are skipped with a "not reachable … real-service tests did not run" message, except
under `CI` or `GATEWAY_REQUIRE_SERVICES=1`, where they fail (tests/integration/conftest.py's rule).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy.engine import make_url

from policies.compiled import load_policy
from storage import migrate
from tests.support import LedgerHandle, free_port, service_unavailable

REPO = Path(__file__).resolve().parents[2]
E2E_POLICY = REPO / "tests" / "e2e" / "policies.yaml"
PG_ADMIN_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL") or \
    "postgresql://postgres@127.0.0.1:5432/test"
REDIS_BASE = os.environ.get("GATEWAY_TEST_REDIS_URL") or "redis://127.0.0.1:6379/0"
REDIS_DB = 11  # the shared Redis's database these tests use (flushed before and after)
PROBLEM_CT = "application/problem+json"
# x-request-id = req_ + 12 hex chars of per-process tag + a hex counter (storage.sql.ledger)
REQUEST_ID_RE = re.compile(r"^req_([0-9a-f]{12})([0-9a-f]+)$")
UPSTREAM_KEY = "sk-upstream-openai"


# ---- the skip-vs-fail rule -------------------------------------------------------------------

def unavailable(message: str) -> None:
    """Skip (or, under CI / GATEWAY_REQUIRE_SERVICES=1, fail) because a real service is missing."""
    service_unavailable(message)


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _pg_execute(admin_url: str, *sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_asyncpg_dsn(admin_url), timeout=5)
    try:
        for statement in sql:
            await conn.execute(statement)
    finally:
        await conn.close()


_reachable: dict[str, str | None] = {}


def require_postgres(admin_url: str = PG_ADMIN_URL) -> None:
    if admin_url not in _reachable:
        try:
            asyncio.run(_pg_execute(admin_url, "SELECT 1"))
            _reachable[admin_url] = None
        except Exception as exc:  # noqa: BLE001 - anything means "not reachable"
            _reachable[admin_url] = f"{type(exc).__name__}: {exc}"
    if _reachable[admin_url] is not None:
        unavailable(f"PostgreSQL not reachable at {_shown(admin_url)} ({_reachable[admin_url]})")


def require_redis(url: str = REDIS_BASE) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001
        unavailable(f"Redis not reachable at {url} ({exc})")
    finally:
        client.close()


def shared_redis_url() -> str:
    """The shared Redis, on database REDIS_DB (flushed)."""
    import redis

    url = make_url_redis(REDIS_BASE, REDIS_DB)
    require_redis(url)
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
    return url


def make_url_redis(base: str, db: int) -> str:
    m = re.match(r"^(rediss?://[^/]+)(/\d*)?$", base)
    assert m, base
    return f"{m.group(1)}/{db}"


def flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        with contextlib.suppress(Exception):  # best effort at teardown
            client.flushdb()
    finally:
        client.close()


# ---- databases on the shared PostgreSQL -------------------------------------------------------

def database_url(admin_url: str, name: str) -> str:
    return make_url(admin_url).set(drivername="postgresql+asyncpg", database=name) \
        .render_as_string(hide_password=False)


def create_database(admin_url: str = PG_ADMIN_URL, migrated: bool = True) -> tuple[str, str]:
    """A new database `gw_prod_<hex>` (migrated unless told not to): (name, asyncpg URL)."""
    require_postgres(admin_url)
    name = "gw_prod_" + secrets.token_hex(6)
    asyncio.run(_pg_execute(admin_url, f'CREATE DATABASE "{name}"'))
    url = database_url(admin_url, name)
    if migrated:
        migrate.upgrade(url)
    return name, url


def drop_database(name: str, admin_url: str = PG_ADMIN_URL) -> None:
    asyncio.run(_pg_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# ---- the policy ------------------------------------------------------------------------------

FIXED_UNITS = 1000  # price and hold of the `chat_fixed` route


def write_policy(directory: Path, *, lease_s: int = 3, read_timeout_s: float = 2.0,
                 total_timeout_s: float = 600.0, connect_timeout_s: float = 2.0,
                 name: str = "policy.yaml") -> Path:
    """tests/e2e/policies.yaml with `holds.lease_s`, the upstreams' timeouts, and routes:

    - `chat` POST /v1/chat/completions: as in the e2e policy (fail mode deny), plus a generous
      per-account rate limit (so every call also touches the rate-limit counters);
    - `chat_allow` POST /v1/allow/chat/completions → upstream /v1/chat/completions, same meter,
      fail mode allow;
    - `chat_fixed` POST /v1/fixed/chat/completions → upstream /v1/chat/completions, a fixed meter
      and a fixed estimate of FIXED_UNITS (charge == hold, so settling frees nothing).
    """
    doc: dict[str, Any] = yaml.safe_load(E2E_POLICY.read_text())
    doc["holds"] = {"lease_s": lease_s}
    for upstream in doc["upstreams"].values():
        upstream.update(total_timeout_s=total_timeout_s, read_timeout_s=read_timeout_s,
                        connect_timeout_s=connect_timeout_s)
    chat = next(r for r in doc["routes"] if r["operation"] == "chat")
    chat["rate_limits"] = {"per_account": {"requests_per_minute": 1_000_000}}
    doc["routes"].append({**chat, "operation": "chat_allow",
                          "path": "/v1/allow/chat/completions",
                          "upstream_path": "/v1/chat/completions", "fail_mode": "allow"})
    doc["routes"].append({
        "operation": "chat_fixed", "path": "/v1/fixed/chat/completions",
        "upstream": "openai", "upstream_path": "/v1/chat/completions",
        "protocol": "openai_chat", "meter": {"type": "fixed", "units": FIXED_UNITS},
        "estimate": {"type": "fixed", "units": FIXED_UNITS}})
    path = directory / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def ledger_for(url: str, policy: Path) -> LedgerHandle:
    return LedgerHandle(url, load_policy([policy], {}).plans)


# ---- gateway processes -----------------------------------------------------------------------

def upstream_env(upstream_url: str) -> dict[str, str]:
    return {"OPENAI_BASE_URL": upstream_url + "/v1", "OPENAI_API_KEY": UPSTREAM_KEY,
            "ANTHROPIC_BASE_URL": upstream_url, "ANTHROPIC_API_KEY": "sk-upstream-anthropic"}


def base_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any gateway/upstream setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GATEWAY_", "OPENAI_", "ANTHROPIC_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update({"GATEWAY_LOG_LEVEL": "warning", "GATEWAY_KEY_CACHE_TTL_S": "0"})
    env.update(extra)
    return env


@dataclass
class GatewayProcess:
    """One `gateway serve` (its own process group: `stop`/`kill9` reach its workers too)."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    env: dict[str, str]
    _log: Any = field(repr=False, default=None)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_healthy(self, timeout_s: float = 40.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if not self.alive():
                raise RuntimeError(f"gateway on port {self.port} exited with "
                                   f"{self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                r = httpx.get(self.url + "/healthz", timeout=1.0)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway on port {self.port} not healthy after {timeout_s} s"
                                   f":\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def kill9(self) -> None:
        """`kill -9` of the whole process group; returns when the leader is reaped."""
        self._signal_group(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.alive():
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=12)
            except subprocess.TimeoutExpired:
                pass
        # whatever is left of the group (workers of a killed parent, a hung leader)
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        wait_until(lambda: not self.group_alive(), timeout_s=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def group_alive(self) -> bool:
        """True while any process of the group exists (orphaned workers are reaped by init)."""
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def spawn_gateway(policy: Path, env: Mapping[str, str], log_dir: Path, *, workers: int = 1,
                  port: int | None = None) -> GatewayProcess:
    port = port or free_port()
    log_path = log_dir / f"gateway-{port}-{secrets.token_hex(3)}.log"
    full_env = base_env({"GATEWAY_UNBILLED_PATH": str(log_dir / f"unbilled-{port}.jsonl"),
                         **env})
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--host", "127.0.0.1", "--port",
         str(port), "--config", str(policy), "--workers", str(workers)],
        cwd=log_dir, env=full_env, stdin=subprocess.DEVNULL, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True)
    return GatewayProcess(proc=proc, port=port, log_path=log_path, env=full_env, _log=log)


class Gateways:
    """Starts gateway processes and stops every one of them at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[GatewayProcess] = []

    def start(self, n: int, policy: Path, env: Mapping[str, str], *, workers: int = 1,
              wait: bool = True) -> list[GatewayProcess]:
        procs = [spawn_gateway(policy, env, self.log_dir, workers=workers) for _ in range(n)]
        self.started.extend(procs)
        if wait:
            for p in procs:
                p.wait_healthy()
        return procs

    def stop_all(self) -> None:
        for p in self.started:
            p.stop()


def run_cli(args: Iterable[str], env: Mapping[str, str], cwd: Path,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -m gateway.cli ARGS` with `env` (on top of base_env)."""
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], check=False, cwd=cwd,
                          env=base_env(env), capture_output=True, text=True, timeout=timeout)


# ---- throwaway PostgreSQL cluster --------------------------------------------------------------

def _pg_bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                        key=lambda p: int(re.findall(r"/(\d+)/bin", p)[0]), reverse=True)
    for path in ([found] if found else []) + candidates:
        bindir = Path(path).resolve().parent
        if (bindir / "initdb").exists():
            return bindir
    return None


class PgCluster:
    """A PostgreSQL cluster of its own in a temp dir, on a free port; `stop()` makes the store
    unreachable (immediate shutdown: every connection dies, new ones are refused), `start()`
    brings it back on the same port with the same data."""

    def __init__(self) -> None:
        bindir = _pg_bindir()
        if bindir is None:
            unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found")
        assert bindir is not None
        self.bindir = bindir
        self.as_postgres: list[str] = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is None:
                unavailable("running as root without `runuser` to start PostgreSQL as postgres")
            try:
                import pwd

                pw = pwd.getpwnam("postgres")
            except KeyError:
                unavailable("running as root and there is no `postgres` user for initdb")
            self.as_postgres = [str(runuser), "-u", "postgres", "--"]
        self.dir = Path(tempfile.mkdtemp(prefix="gw-prod-pg-"))
        if self.as_postgres:
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.data = self.dir / "data"
        self.port = free_port()
        self.running = False
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8", "--locale=C")

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        cmd = [*self.as_postgres, str(self.bindir / tool), *args]
        done = subprocess.run(cmd, check=False, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stdout}\n{done.stderr}")

    def start(self) -> None:
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c max_connections=60")
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.dir / "server.log"),
                  "-w", "-t", "30", "start")
        self.running = True

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")
        self.running = False

    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def create_database(self, name: str = "gateway") -> str:
        asyncio.run(_pg_execute(self.admin_url(), f'CREATE DATABASE "{name}"'))
        url = database_url(self.admin_url(), name)
        migrate.upgrade(url)
        return url

    def destroy(self) -> None:
        if self.running:
            with contextlib.suppress(Exception):
                self.stop()
        # a postmaster that pg_ctl could not stop: kill it by the pid in its pid file
        pidfile = self.data / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, ProcessLookupError):
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- throwaway Redis -------------------------------------------------------------------------

class RedisServer:
    """`redis-server` of its own on a free port (no persistence), run as a child process."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server binary not found")
        self.binary = str(binary)
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="gw-prod-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", str(self.dir),
             "--loglevel", "warning"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: Redis is gone at once (connections reset, new ones refused)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def destroy(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- HTTP helpers ----------------------------------------------------------------------------

def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}", "content-type": "application/json"}


def tag_of(request_id: str) -> str:
    m = REQUEST_ID_RE.match(request_id)
    assert m, request_id
    return m.group(1)


def assert_problem(resp: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert resp.headers["content-type"].startswith(PROBLEM_CT), resp.headers
    doc = resp.json()
    assert doc["type"].endswith("/problems/" + slug), doc
    assert doc["status"] == status, doc
    return doc


def wait_until(predicate: Any, timeout_s: float, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval_s)
