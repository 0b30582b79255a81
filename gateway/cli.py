"""The `gateway` command: serve, migrate, policies check, accounts, keys, grant, balance, usage.

Every command exits 0 on success and non-zero with a one-line error on stderr otherwise
(2 for bad input or configuration — a missing driver extra included —, 1 for a failure of the
store or a listen address that is taken).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import inspect
import json
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import gateway
from gateway.balance_view import balance_document
from gateway.budgets import limits_from_api, limits_to_api
from gateway.settings import Settings, SettingsError
from gateway.tracing import require_sdk
from gateway.tracing_config import tracing_config
from policies import PACKAGED_POLICY
from policies.compiled import Policy, load_policy
from policies.loader import PolicyError
from policies.units import UnitKind, UnitOfAccount
from storage.clock import MS_PER_DAY, MS_PER_MINUTE, MS_PER_SECOND, iso_utc, now_ms
from storage.drivers import MissingDriver, require_for_database, require_for_redis
from storage.engine.buckets import Source
from storage.ports import StoreUnavailable, UnknownAccount
from storage.sql.engine import is_sqlite
from storage.sql.ledger import SqlLedger

MAX_GRANT_MINUTES = 10_000_000
MAX_GRANT_AMOUNT = 10_000_000  # currency units: one grant of at most ten million (e.g. USD)
MAX_GRANT_TOKENS = 10**12


class CliError(Exception):
    """A user-facing failure: printed as `gateway: error: …`, exit code `code`."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


CONFIG_HELP = ("policy YAML file (repeatable; files merge in order); default: "
               "GATEWAY_POLICY_PATH, else ./config/policies.yaml if it exists, else the "
               "policy packaged with the gateway")


def _parser() -> argparse.ArgumentParser:
    """The argument parser. Every option's help states its default (tests check this)."""
    p = argparse.ArgumentParser(prog="gateway", description="Metering gateway for AI endpoints.")
    p.add_argument("--version", action="version", version=f"%(prog)s {gateway.__version__}")
    p.add_argument("--config", action="append", metavar="PATH", help=CONFIG_HELP)
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway (applies migrations first)")
    serve.add_argument("--host", help="address to listen on; default: GATEWAY_HOST, else "
                                      "127.0.0.1")
    serve.add_argument("--port", type=int, help="TCP port to listen on (1..65535); default: "
                                                "GATEWAY_PORT, else 8080")
    serve.add_argument("--config", action="append", metavar="PATH", dest="serve_config",
                       help=CONFIG_HELP)
    serve.add_argument("--workers", type=int, default=1,
                       help="worker processes sharing the socket (default: %(default)s)")

    sub.add_parser("migrate", help="apply database migrations and exit")
    rec = sub.add_parser("reconcile", help="settle calls spooled while the store was "
                                           "unreachable (GATEWAY_UNBILLED_PATH); with --stripe, "
                                           "compare the ledger's credits with Stripe instead")
    rec.add_argument("--stripe", action="store_true",
                     help="reconcile the ledger with Stripe's paid invoices, charges and "
                          "refunds of --from/--to; the report is stored (default: off)")
    rec.add_argument("--from", dest="from_", metavar="WHEN",
                     help="start of the period, RFC 3339 or YYYY-MM-DD (UTC); required with "
                          "--stripe (default: none)")
    rec.add_argument("--to", metavar="WHEN", help="end of the period, exclusive; required with "
                                                   "--stripe (default: none)")
    rec.add_argument("--apply", action="store_true",
                     help="credit what Stripe was paid and the ledger never credited "
                          "(idempotent by the Stripe object id); the rest is only reported "
                          "(default: report only)")
    rec.add_argument("--json", action="store_true", help="print the whole report as JSON "
                                                         "(default: a summary)")

    pol = sub.add_parser("policies", help="policy tools").add_subparsers(dest="policies_cmd",
                                                                          required=True)
    check = pol.add_parser("check", help="validate policy files without serving; reports "
                                         "every error")
    check.add_argument("paths", nargs="+", metavar="PATH", help="policy files, merged in order")

    acc = sub.add_parser("accounts", help="accounts").add_subparsers(dest="accounts_cmd",
                                                                      required=True)
    create = acc.add_parser("create", help="create an account; prints its id")
    create.add_argument("--plan", help="plan key (default: the policy's default_plan)")

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys_cmd", required=True)
    kc = keys.add_parser("create", help="create an API key; prints it once")
    kc.add_argument("account_id", help="the account the key acts for")
    for parser in (kc, kl := keys.add_parser("limits", help="change an API key's limits")):
        parser.add_argument("--limit-day", help="spending limit per UTC day, in the unit "
                                                "(default: none)")
        parser.add_argument("--limit-month", help="spending limit per UTC month, in the unit "
                                                  "(default: none)")
    kl.add_argument("key_id", help="the key's id (printed by `keys create`)")
    kr = keys.add_parser("revoke", help="revoke an API key by its id")
    kr.add_argument("key_id", help="the key's id (printed by `keys create`)")

    grant = sub.add_parser("grant", help="credit an account in the policy's unit")
    grant.add_argument("account_id", help="the account to credit")
    amount = grant.add_mutually_exclusive_group(required=True)
    amount.add_argument("--minutes", type=int,
                        help="amount in minutes (required in time deployments: this or "
                             "--seconds)")
    amount.add_argument("--seconds", type=int,
                        help="amount in seconds (required in time deployments: this or "
                             "--minutes)")
    amount.add_argument("--amount", help="decimal amount of the currency, e.g. 5.00 "
                                         "(required in currency deployments)")
    amount.add_argument("--tokens", type=int,
                        help="amount in tokens (required in tokens deployments)")
    grant.add_argument("--source", choices=["gift", "package"], default="gift",
                       help="bucket kind; a package expires after the catalog's "
                            "package_expiry_days (default: %(default)s)")
    grant.add_argument("--reason", default="operator grant",
                       help="note kept on the ledger entry (default: %(default)s)")

    bal = sub.add_parser("balance", help="show an account's balance (EnhancedBalance)")
    bal.add_argument("account_id", help="the account")
    bal.add_argument("--json", action="store_true",
                     help="print the EnhancedBalance JSON document (default: a text summary)")

    usage = sub.add_parser("usage", help="show an account's usage records (in flight, settled, "
                                          "interrupted), newest first")
    usage.add_argument("account_id", help="the account")
    usage.add_argument("--json", action="store_true",
                       help="print the records as JSON (default: one text line each)")
    usage.add_argument("--limit", type=int, default=20,
                       help="how many records, 1..10000 (default: %(default)s)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `gateway` console script. Returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        configs = (args.config or []) + (getattr(args, "serve_config", None) or [])
        if configs:
            settings = settings.with_overrides(policy_paths=tuple(Path(c) for c in configs))
        return _dispatch(args, settings)
    except CliError as exc:
        print(f"gateway: error: {exc}", file=sys.stderr)
        return exc.code
    except SettingsError as exc:
        print(f"gateway: error: {exc}", file=sys.stderr)
        return 2
    except MissingDriver as exc:
        print(f"gateway: error: {exc}", file=sys.stderr)
        return 2
    except PolicyError as exc:
        print("gateway: error: invalid policy:", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return 2
    except StoreUnavailable as exc:
        print(f"gateway: error: database unreachable: {exc}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    cmd = args.command
    if cmd == "policies":
        return _policies_check([Path(p) for p in args.paths], settings)
    if cmd == "serve":
        return _serve(args, settings)
    require_for_database(settings.database_url)
    if cmd == "migrate":
        print(f"gateway: database {_redact(settings.database_url)}", file=sys.stderr)
        _migrate(settings)
        print("database is at the newest schema")
        return 0
    policy = load_policy(settings.policy_paths, settings.env)
    print(f"gateway: {_loaded(settings)}", file=sys.stderr)
    _migrate(settings)
    if cmd == "reconcile" and args.stripe:
        return _reconcile_stripe(args, settings, policy)
    if cmd == "reconcile" and (args.from_ or args.to or args.apply):
        raise CliError("--from, --to and --apply go with --stripe")
    handler = {"accounts": _accounts, "keys": _keys, "grant": _grant, "balance": _balance,
               "usage": _usage, "reconcile": _reconcile(settings)}[cmd]
    return _with_ledger(settings, lambda ledger: handler(args, ledger, policy))


def _with_ledger(settings: Settings, fn: Callable[[SqlLedger], Awaitable[int]]) -> int:
    async def run() -> int:
        ledger = SqlLedger(settings.database_url)
        try:
            return await fn(ledger)
        finally:
            await ledger.close()

    return asyncio.run(run())


def _policies_check(paths: list[Path], settings: Settings) -> int:
    policy = load_policy(paths, settings.env)
    print(f"ok: {len(policy.routes)} routes, {len(policy.plans)} plans, catalog "
          f"{policy.catalog_version} ({', '.join(str(p) for p in paths)})")
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    if args.host:
        settings = settings.with_overrides(host=args.host)
    if args.port is not None:
        if not 1 <= args.port <= 65535:
            raise CliError(f"--port {args.port} is outside 1..65535")
        settings = settings.with_overrides(port=args.port)
    if args.workers < 1:
        raise CliError("--workers must be >= 1")
    require_for_database(settings.database_url)
    require_for_redis(settings.redis_url)
    policy = load_policy(settings.policy_paths, settings.env)  # fail fast on a bad policy
    tracing = tracing_config(settings.env)  # likewise on a bad OTEL_* value (SettingsError)
    if tracing is not None:
        require_sdk(tracing)
    # Bind before migrating or announcing anything: a taken port is one error line, not a
    # start-up banner followed by a server log. uvicorn (and each worker) serves this socket.
    sock = _listen(settings.host, settings.port)
    try:
        _migrate(settings)
        return _run(args, settings, policy, sock)
    finally:
        sock.close()


def _run(args: argparse.Namespace, settings: Settings, policy: Policy,
         sock: socket.socket) -> int:
    import uvicorn

    from gateway.logs import configure_logging

    configure_logging(settings.log_level)
    config_args: dict[str, Any] = dict(host=settings.host, port=settings.port, log_config=None,
                                       access_log=False, log_level=settings.log_level,
                                       loop="uvloop", http="httptools", lifespan="on",
                                       proxy_headers=False, server_header=False,
                                       timeout_graceful_shutdown=10)
    print(f"gateway: serving {len(policy.routes)} routes on "
          f"http://{_origin(settings.host, settings.port)} ({_loaded(settings)})",
          file=sys.stderr)
    if args.workers > 1 and is_sqlite(settings.database_url):
        print(f"gateway: warning: {args.workers} workers share one SQLite file, which has one "
              "writer at a time: the workers take its write lock in turn, and handing it over "
              "costs CPU per call; to use more cores, use PostgreSQL (README, production: Cores)",
              file=sys.stderr)
    if args.workers == 1:
        from gateway.app import create_app

        app = create_app(settings, policy)
        server = uvicorn.Server(uvicorn.Config(app, **config_args))
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C once stopped
            server.run(sockets=[sock])
        return 0 if server.started else 3  # 3: the app failed to start (uvicorn's code)
    settings.export_for_workers()
    _supervise(uvicorn.Config("gateway.app:create_app", factory=True, workers=args.workers,
                              **config_args), sock)
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port, as uvicorn would bind it (SO_REUSEADDR, IPv6 for a host
    with ':'). Raises CliError: exit 1 when the port is taken, 2 when the address cannot be
    used here (unknown host, not a local address, a privileged port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        code = 1 if exc.errno == errno.EADDRINUSE else 2
        raise CliError(f"cannot listen on {_origin(host, port)}: {reason}", code) from None
    sock.set_inheritable(True)
    return sock


def _origin(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _supervise(config: Any, sock: socket.socket) -> None:
    """Run uvicorn's multiprocess supervisor: `config.workers` processes serving `sock`."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    if "target" in inspect.signature(Multiprocess).parameters:  # uvicorn before the rewrite
        run_worker: Any = uvicorn.Server(config).run
        supervisor = Multiprocess(config, target=run_worker, sockets=[sock])  # type: ignore
    else:
        supervisor = Multiprocess(config, sockets=[sock])
    with contextlib.suppress(KeyboardInterrupt):
        supervisor.run()


def _migrate(settings: Settings) -> None:
    from storage import migrate

    try:
        migrate.upgrade(settings.database_url)
    except MissingDriver:
        raise
    except Exception as exc:  # alembic/driver errors: report, never a traceback
        raise StoreUnavailable(str(exc).splitlines()[0]) from exc


def _loaded(settings: Settings) -> str:
    """`database URL (password hidden), policy FILES` for the start-up line."""
    paths = settings.policy_paths
    shown = ", ".join(str(p) for p in paths)
    if paths == (PACKAGED_POLICY,):
        shown += " (the packaged default)"
    return f"database {_redact(settings.database_url)}, policy {shown}"


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _plan(policy: Policy, key: str | None) -> Any:
    key = key or policy.document.default_plan
    plan = policy.plans.get(key)
    if plan is None:
        raise CliError(f"unknown plan {key!r}; the policy has: {', '.join(sorted(policy.plans))}")
    return plan


def _reconcile(settings: Settings) -> Callable[..., Awaitable[int]]:
    async def run(args: argparse.Namespace, ledger: SqlLedger, policy: Policy) -> int:
        from gateway.unbilled import UnbilledSpool

        source = settings.unbilled_path
        if not source.exists():
            print(f"nothing to reconcile in {source}")
            return 0
        # Move the spool aside first: a running gateway keeps appending to a new file.
        work = source.with_name(source.name + f".reconciling-{now_ms()}")
        source.rename(work)
        try:
            entries = list(UnbilledSpool(work).entries())
        except ValueError as exc:
            raise CliError(f"{exc}; fix or remove that line and run with "
                           f"GATEWAY_UNBILLED_PATH={work}") from None
        settled = replayed = units = 0
        try:
            for record, charge, rule, hold_id in entries:
                result = await ledger.settle(hold_id, record, charge, rule)  # type: ignore[arg-type]
                if result.replayed:
                    replayed += 1
                else:
                    settled += 1
                    units += result.charged
        except StoreUnavailable:
            raise CliError(f"store unreachable mid-way; settled entries are kept (settling is "
                           f"idempotent): run again with GATEWAY_UNBILLED_PATH={work}", 1) from None
        except UnknownAccount as exc:
            raise CliError(f"spool names unknown account {exc}; fix {work} and run again "
                           f"with GATEWAY_UNBILLED_PATH={work}") from None
        done = work.with_name(source.name + f".reconciled-{now_ms()}")
        work.rename(done)
        print(f"reconciled {settled} calls ({units} ms charged), {replayed} already settled; "
              f"spool kept as {done}")
        return 0

    return run


def _reconcile_stripe(args: argparse.Namespace, settings: Settings, policy: Policy) -> int:
    from gateway.invoicing.reconcile import ReconcileError
    from gateway.invoicing.reconcile_cli import period_of, reconcile_stripe, summary

    if not settings.stripe_secret_key:
        raise CliError("set STRIPE_SECRET_KEY to reconcile with Stripe")
    try:
        start, end = period_of(args.from_, args.to)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        report = asyncio.run(reconcile_stripe(settings, policy, start, end, args.apply))
    except ReconcileError as exc:
        raise CliError(str(exc), 1) from None
    print(json.dumps(report, indent=2) if args.json else summary(report))
    return 0


async def _accounts(args: argparse.Namespace, ledger: SqlLedger, policy: Policy) -> int:
    account_id = await ledger.create_account(_plan(policy, args.plan))
    print(account_id)
    return 0


async def _keys(args: argparse.Namespace, ledger: SqlLedger, policy: Policy) -> int:
    limits = None
    if args.keys_cmd in ("create", "limits"):
        try:
            limits = limits_from_api(policy.unit, args.limit_day, args.limit_month)
        except ValueError as exc:
            raise CliError(str(exc).replace("limit_", "--limit-")) from None
    if args.keys_cmd == "limits":
        assert limits is not None
        if await ledger.set_key_limits(args.key_id, limits) is None:
            raise CliError(f"no active key with id {args.key_id!r}")
        print(f"limits of {args.key_id}: {limits_to_api(policy.unit, limits)}")
        return 0
    if args.keys_cmd == "create":
        try:
            key_id, key = await ledger.create_api_key(args.account_id, limits)
        except UnknownAccount:
            raise CliError(f"no account {args.account_id!r}") from None
        print(key)
        print(f"(key id {key_id}; the key is shown once and stored only as a hash)",
              file=sys.stderr)
        return 0
    if not await ledger.revoke_api_key(args.key_id):
        raise CliError(f"no active key with id {args.key_id!r}")
    print(f"revoked {args.key_id}")
    return 0


def grant_units(args: argparse.Namespace, unit: UnitOfAccount) -> tuple[int, str]:
    """(ledger units, amount as shown) of `gateway grant`'s amount option: --minutes/--seconds
    in time deployments, --amount (decimal currency) or --tokens in the others. Raises
    CliError for an option of another unit, a non-positive, malformed or too large amount."""
    if unit.kind is UnitKind.TIME and (args.minutes is not None or args.seconds is not None):
        units = (args.minutes * MS_PER_MINUTE if args.minutes is not None
                 else args.seconds * MS_PER_SECOND)
        shown = f"{args.minutes} min" if args.minutes is not None else f"{args.seconds} s"
        limit = MAX_GRANT_MINUTES * MS_PER_MINUTE
    elif unit.kind is UnitKind.CURRENCY and args.amount is not None:
        try:
            units = unit.from_api(args.amount)
        except ValueError as exc:
            raise CliError(f"--amount: {exc}") from None
        shown, limit = f"{unit.to_text(units)} {unit.api_name}", unit.from_api(MAX_GRANT_AMOUNT)
    elif unit.kind is UnitKind.TOKENS and args.tokens is not None:
        units, shown, limit = args.tokens, f"{args.tokens} tokens", MAX_GRANT_TOKENS
    else:
        want = {UnitKind.TIME: "--minutes or --seconds", UnitKind.CURRENCY: "--amount",
                UnitKind.TOKENS: "--tokens"}[unit.kind]
        raise CliError(f"the policy counts {unit.api_name}: give {want}")
    if units <= 0:
        raise CliError("the amount must be a positive number")
    if units > limit:
        raise CliError(f"the amount is over {unit.to_text(limit)} {unit.api_name}"
                       if unit.kind is not UnitKind.TIME
                       else f"the amount is over {MAX_GRANT_MINUTES} minutes")
    return units, shown


async def _grant(args: argparse.Namespace, ledger: SqlLedger, policy: Policy) -> int:
    units, shown = grant_units(args, policy.unit)
    source = Source(args.source)
    expires = None
    if source is Source.PACKAGE:
        expires = now_ms() + policy.document.catalog.package_expiry_days * MS_PER_DAY
    import secrets

    try:
        result = await ledger.grant(args.account_id, source, units,
                                    f"cli_grant:{secrets.token_hex(8)}", expires, args.reason)
    except UnknownAccount:
        raise CliError(f"no account {args.account_id!r}") from None
    until = f", expires {iso_utc(expires)}" if expires else ""
    print(f"granted {shown} ({source.value}{until}) to {args.account_id}: bucket "
          f"{result.bucket_id}")
    return 0


async def _balance(args: argparse.Namespace, ledger: SqlLedger, policy: Policy) -> int:
    try:
        snap = await ledger.balance(args.account_id)
    except UnknownAccount:
        raise CliError(f"no account {args.account_id!r}") from None
    unit = policy.unit
    doc = balance_document(snap, policy.plans.get(snap.plan_key), policy.catalog_version, unit)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    t = doc["totals"]
    if unit.kind is not UnitKind.TIME:
        name = unit.api_name
        print(f"account {snap.account_id} (plan {snap.plan_key})")
        print(f"  available {t['available']} {name}  (total {t['total']} {name}: paid "
              f"{t['paid']}, bonus {t['bonus']}; held {t['held']}; debt {t['debt']})")
        for b in snap.buckets:
            exp = iso_utc(b.expires_at_ms) if b.expires_at_ms else "never"
            print(f"  {b.source:<12} {unit.to_text(b.remaining):>14} {name}  expires {exp}")
        return 0
    print(f"account {snap.account_id} (plan {snap.plan_key})")
    print(f"  available {t['available_seconds']} s  (total {t['total_seconds']} s: paid "
          f"{t['paid_seconds']} s, bonus {t['bonus_seconds']} s; held {t['held_seconds']} s; "
          f"debt {t['debt_seconds']} s)")
    for b in snap.buckets:
        exp = iso_utc(b.expires_at_ms) if b.expires_at_ms else "never"
        print(f"  {b.source:<12} {b.remaining / MS_PER_SECOND:>12.3f} s  expires {exp}")
    return 0


async def _usage(args: argparse.Namespace, ledger: SqlLedger, policy: Policy) -> int:
    if not 1 <= args.limit <= 10_000:
        raise CliError("--limit must be within 1..10000")
    if not await ledger.account_exists(args.account_id):
        raise CliError(f"no account {args.account_id!r}")
    rows = await ledger.usage(args.account_id, args.limit)
    for r in rows:
        r["created_at"] = iso_utc(r.pop("created_at_ms"))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    unit = policy.unit

    def amount(units: int) -> str:  # ms as before for time; the unit's decimals otherwise
        if unit.kind is UnitKind.TIME:
            return f"{units:>8} ms"
        return f"{unit.to_text(units):>10} {unit.api_name}"

    for r in rows:
        unbilled = f" unbilled {amount(r['unbilled']).strip()}" if r["unbilled"] else ""
        print(f"{r['created_at']}  {r['id']}  {r['operation']:<11} {r['model'] or '-':<22} "
              f"status {r['upstream_status'] or '-':<4} {r['duration_ms']:>6} ms  in "
              f"{r['input_tokens']:>6} out {r['output_tokens']:>6}  charged "
              f"{amount(r['charged'])}{unbilled} ({r['usage_source']}, {r['outcome']})")
    if not rows:
        print("no usage yet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
