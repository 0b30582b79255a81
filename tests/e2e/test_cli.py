"""The `gateway` command as an operator runs it: installed, from any directory, with one-line
errors (`gateway: error: …`) and documented exit codes (2 configuration, 1 store or taken port).

Every command runs as a real process (`python -m gateway.cli`) in a temporary directory outside
the repository, with no GATEWAY_* variable but the ones a test sets.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest

import gateway
from gateway.cli import _parser
from policies import PACKAGED_POLICY
from tests.support import free_port

REPO = Path(__file__).resolve().parents[2]


def _env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GATEWAY_", "OPENAI_", "ANTHROPIC_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["GATEWAY_LOG_LEVEL"] = "warning"
    env.update(extra)
    return env


def gateway_cli(cwd: Path, *args: str, env: Mapping[str, str] | None = None,
                missing: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `gateway ARGS` in `cwd`; `missing` names a module made unimportable first (an
    optional driver that is not installed)."""
    if missing is None:
        command = [sys.executable, "-m", "gateway.cli", *args]
    else:
        boot = (f"import sys; sys.modules[{missing!r}] = None; "
                "from gateway.cli import main; sys.exit(main())")
        command = [sys.executable, "-c", boot, *args]
    return subprocess.run(command, cwd=cwd, env=_env(env or {}), capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A working directory outside the repository (no ./config/policies.yaml)."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    assert not (work / "config").exists() and REPO not in work.parents
    return work


@pytest.fixture
def serve(outside: Path) -> Iterator[list[subprocess.Popen[str]]]:
    """Started `gateway serve` processes, stopped (SIGTERM, then SIGKILL) at teardown."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def wait_healthy(proc: subprocess.Popen[str], url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"gateway at {url} not healthy (exit code {proc.poll()})")


# ---- item: installed, it works from any directory -------------------------------------------


def test_operator_commands_outside_the_repository_use_the_packaged_policy(outside: Path) -> None:
    created = gateway_cli(outside, "accounts", "create")
    assert created.returncode == 0, created.stderr
    account = created.stdout.strip()
    granted = gateway_cli(outside, "grant", account, "--minutes", "5")
    assert granted.returncode == 0, granted.stderr
    assert f"granted 5 min (gift) to {account}" in granted.stdout
    said = granted.stderr.strip().splitlines()
    assert said == [f"gateway: database sqlite:///./gateway.db, policy {PACKAGED_POLICY} "
                    "(the packaged default)"]
    assert (outside / "gateway.db").exists()


def test_serve_outside_the_repository_announces_policy_and_database(
    outside: Path, serve: list[subprocess.Popen[str]]
) -> None:
    port = free_port()
    with (outside / "serve.log").open("w") as log:
        serve.append(subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)], cwd=outside,
            env=_env({}), stdout=subprocess.DEVNULL, stderr=log, text=True))
    wait_healthy(serve[0], f"http://127.0.0.1:{port}")
    first = (outside / "serve.log").read_text().splitlines()[0]
    assert first == (f"gateway: serving 5 routes on http://127.0.0.1:{port} (database "
                     f"sqlite:///./gateway.db, policy {PACKAGED_POLICY} (the packaged default))")


def test_a_local_config_policies_yaml_wins_over_the_packaged_default(outside: Path) -> None:
    (outside / "config").mkdir()
    local = outside / "config" / "policies.yaml"
    local.write_text(PACKAGED_POLICY.read_text().replace("default_plan: free",
                                                         "default_plan: payg"))
    created = gateway_cli(outside, "accounts", "create")
    assert created.returncode == 0, created.stderr
    assert created.stderr.strip().endswith("policy config/policies.yaml")
    shown = gateway_cli(outside, "balance", created.stdout.strip())
    assert "(plan payg)" in shown.stdout, shown.stdout + shown.stderr


def test_the_start_up_line_hides_the_database_password(outside: Path) -> None:
    url = "postgresql+asyncpg://metering:hunter2-secret@127.0.0.1:1/nowhere"
    result = gateway_cli(outside, "migrate", env={"GATEWAY_DATABASE_URL": url})
    assert result.returncode == 1  # port 1: nothing listens, the store is unreachable
    assert "hunter2" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "gateway: database postgresql+asyncpg://metering:***@127.0.0.1:1/nowhere"
    assert lines[1].startswith("gateway: error: database unreachable: ")


# ---- item: a taken port ----------------------------------------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_taken_port_is_one_error_line_and_exit_1(outside: Path, workers: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = gateway_cli(outside, "serve", "--port", str(port), "--workers", workers)
    assert result.returncode == 1
    assert result.stderr == (f"gateway: error: cannot listen on 127.0.0.1:{port}: "
                             "Address already in use\n")
    assert result.stdout == ""
    assert not (outside / "gateway.db").exists()  # nothing was migrated for a server never run


@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_stops_serve_with_exit_0_and_no_traceback(
    outside: Path, serve: list[subprocess.Popen[str]], workers: str
) -> None:
    port = free_port()
    with (outside / "serve.log").open("w") as log:
        serve.append(subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), "--workers",
             workers], cwd=outside, env=_env({}), stdout=subprocess.DEVNULL, stderr=log,
            text=True))
    wait_healthy(serve[0], f"http://127.0.0.1:{port}")
    serve[0].send_signal(signal.SIGINT)
    assert serve[0].wait(timeout=20) == 0
    assert "Traceback" not in (outside / "serve.log").read_text()


# ---- item: a missing optional driver ---------------------------------------------------------


@pytest.mark.parametrize("command", [["migrate"], ["accounts", "create"], ["serve"]])
def test_a_missing_asyncpg_names_the_postgres_extra(outside: Path, command: list[str]) -> None:
    env = {"GATEWAY_DATABASE_URL": "postgresql+asyncpg://u:p@127.0.0.1:1/db"}
    result = gateway_cli(outside, *command, env=env, missing="asyncpg")
    assert result.returncode == 2, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("gateway: error: GATEWAY_DATABASE_URL (PostgreSQL) needs the "
                            "'asyncpg' package")
    assert error.endswith("pip install 'ai-metering-gateway[postgres]'")
    assert "unreachable" not in result.stderr and "Traceback" not in result.stderr


def test_a_missing_redis_names_the_redis_extra(outside: Path) -> None:
    env = {"GATEWAY_REDIS_URL": "redis://127.0.0.1:1/0"}
    result = gateway_cli(outside, "serve", "--port", str(free_port()), env=env,
                         missing="redis")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("gateway: error: GATEWAY_REDIS_URL needs the 'redis' "
                                    "package")
    assert result.stderr.strip().endswith("pip install 'ai-metering-gateway[redis]'")
    assert len(result.stderr.splitlines()) == 1


async def test_build_services_without_redis_installed_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.app import build_services
    from gateway.settings import Settings
    from storage.drivers import MissingDriver

    monkeypatch.setitem(sys.modules, "redis", None)
    settings = Settings.from_env({"GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'g.db'}",
                                  "GATEWAY_REDIS_URL": "redis://127.0.0.1:1/0"})
    with pytest.raises(MissingDriver, match=r"pip install 'ai-metering-gateway\[redis\]'"):
        await build_services(settings)


# ---- item: policies check reports everything at once ----------------------------------------


def test_policies_check_reports_schema_and_reference_errors_in_one_pass(outside: Path) -> None:
    bad = outside / "four.yaml"
    bad.write_text("""\
default_plan: gold
plans:
  free:
    daily_bonus_minutes: -1
catalog:
  version: "v1"
upstreams:
  up:
    base_url: https://up.example.com
routes:
  - operation: chat
    path: /v1/chat
    upstream: nowhere
    meter: { type: fixed, units: 1 }
    estimate: { type: fixed, units: -5 }
""")
    result = gateway_cli(outside, "policies", "check", str(bad))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "gateway: error: invalid policy:",
        f"  {bad}:1: default_plan: 'gold' is not a key of plans",
        f"  {bad}:4: plans.free.daily_bonus_minutes: Input should be greater than or equal to 0",
        f"  {bad}:13: routes[0].upstream: unknown upstream 'nowhere'",
        f"  {bad}:15: routes[0].estimate.units: Input should be greater than or equal to 0",
    ]


# ---- item: --version and help ----------------------------------------------------------------


def test_version_prints_the_package_version(outside: Path) -> None:
    result = gateway_cli(outside, "--version")
    assert result.returncode == 0
    assert result.stdout == f"gateway {gateway.__version__}\n"


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_option_has_help_that_states_its_default() -> None:
    checked = 0
    for parser in _parsers(_parser()):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction,
                                   argparse._SubParsersAction)):
                continue
            name = "/".join(action.option_strings) or action.dest
            assert action.help, f"{parser.prog} {name} has no help"
            shown = parser._get_formatter()._expand_help(action)
            if action.default not in (None, False, argparse.SUPPRESS):
                assert str(action.default) in shown, f"{parser.prog} {name}: {shown!r}"
            if action.option_strings and action.default is None:  # default or required?
                assert "default" in shown or "required" in shown, f"{parser.prog} {name}"
            checked += 1
    assert checked >= 15
