"""The `gateway` command: serve, migrate, policies check, accounts, keys, grant, balance, usage.

Every command exits 0 on success and non-zero with a one-line error on stderr otherwise
(2 for bad input, 1 for a failure of the store).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from gateway.balance_view import enhanced_balance
from gateway.payment_required import iso_utc
from gateway.settings import Settings, SettingsError
from policies.compiled import Policy, load_policy
from policies.loader import PolicyError
from storage.buckets import Source
from storage.ports import StoreUnavailable, UnknownAccount
from storage.sql.ledger import SqlLedger, now_ms

MAX_GRANT_MINUTES = 10_000_000


class CliError(Exception):
    """A user-facing failure: printed as `gateway: error: …`, exit code `code`."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gateway", description="Metering gateway for AI endpoints.")
    p.add_argument("--config", action="append", metavar="PATH",
                   help="policy YAML file (repeatable; default GATEWAY_POLICY_PATH or "
                        "config/policies.yaml)")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway (applies migrations first)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--config", action="append", metavar="PATH", dest="serve_config")
    serve.add_argument("--workers", type=int, default=1)

    sub.add_parser("migrate", help="apply database migrations and exit")
    sub.add_parser("reconcile", help="settle calls spooled while the store was unreachable "
                                     "(GATEWAY_UNBILLED_PATH)")

    pol = sub.add_parser("policies", help="policy tools").add_subparsers(dest="policies_cmd",
                                                                          required=True)
    check = pol.add_parser("check", help="validate policy files without serving")
    check.add_argument("paths", nargs="+", metavar="PATH")

    acc = sub.add_parser("accounts", help="accounts").add_subparsers(dest="accounts_cmd",
                                                                      required=True)
    create = acc.add_parser("create", help="create an account; prints its id")
    create.add_argument("--plan", help="plan key (default: the policy's default_plan)")

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys_cmd", required=True)
    kc = keys.add_parser("create", help="create an API key; prints it once")
    kc.add_argument("account_id")
    kr = keys.add_parser("revoke", help="revoke an API key by its id")
    kr.add_argument("key_id")

    grant = sub.add_parser("grant", help="credit AI time to an account")
    grant.add_argument("account_id")
    amount = grant.add_mutually_exclusive_group(required=True)
    amount.add_argument("--minutes", type=int)
    amount.add_argument("--seconds", type=int)
    grant.add_argument("--source", choices=["gift", "package"], default="gift")
    grant.add_argument("--reason", default="operator grant")

    bal = sub.add_parser("balance", help="show an account's balance (EnhancedBalance)")
    bal.add_argument("account_id")
    bal.add_argument("--json", action="store_true")

    usage = sub.add_parser("usage", help="show an account's usage records (in flight, settled, "
                                          "interrupted), newest first")
    usage.add_argument("account_id")
    usage.add_argument("--json", action="store_true")
    usage.add_argument("--limit", type=int, default=20)
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
    from storage import migrate

    try:
        migrate.upgrade(settings.database_url)
    except Exception as exc:  # alembic/driver errors: report, never a traceback
        raise StoreUnavailable(str(exc).splitlines()[0]) from exc
    if cmd == "migrate":
        print("database is at the newest schema")
        return 0
    policy = load_policy(settings.policy_paths, settings.env)
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
    import uvicorn

    from storage import migrate

    if args.host:
        settings = settings.with_overrides(host=args.host)
    if args.port is not None:
        if not 1 <= args.port <= 65535:
            raise CliError(f"--port {args.port} is outside 1..65535")
        settings = settings.with_overrides(port=args.port)
    if args.workers < 1:
        raise CliError("--workers must be >= 1")
    policy = load_policy(settings.policy_paths, settings.env)  # fail fast on a bad policy
    try:
        migrate.upgrade(settings.database_url)
    except Exception as exc:
        raise StoreUnavailable(str(exc).splitlines()[0]) from exc
    from gateway.logs import configure_logging

    configure_logging(settings.log_level)
    common: dict[str, Any] = dict(host=settings.host, port=settings.port, log_config=None,
                                  access_log=False, log_level=settings.log_level,
                                  loop="uvloop", http="httptools", lifespan="on",
                                  proxy_headers=False, server_header=False,
                                  timeout_graceful_shutdown=10)
    print(f"gateway: serving {len(policy.routes)} routes on http://{settings.host}:"
          f"{settings.port} (database {_redact(settings.database_url)}, policy "
          f"{', '.join(str(p) for p in settings.policy_paths)})", file=sys.stderr)
    if args.workers == 1:
        from gateway.app import create_app

        uvicorn.run(create_app(settings, policy), **common)  # type: ignore[arg-type]
    else:
        settings.export_for_workers()
        uvicorn.run("gateway.app:create_app", factory=True, workers=args.workers, **common)
    return 0


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


async def _accounts(args: argparse.Namespace, ledger: SqlLedger, policy: Policy) -> int:
    account_id = await ledger.create_account(_plan(policy, args.plan))
    print(account_id)
    return 0


async def _keys(args: argparse.Namespace, ledger: SqlLedger, policy: Policy) -> int:
    if args.keys_cmd == "create":
        try:
            key_id, key = await ledger.create_api_key(args.account_id)
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


async def _grant(args: argparse.Namespace, ledger: SqlLedger, policy: Policy) -> int:
    units = args.minutes * 60_000 if args.minutes is not None else args.seconds * 1000
    shown = f"{args.minutes} min" if args.minutes is not None else f"{args.seconds} s"
    if units <= 0:
        raise CliError("the amount must be a positive number")
    if units > MAX_GRANT_MINUTES * 60_000:
        raise CliError(f"the amount is over {MAX_GRANT_MINUTES} minutes")
    source = Source(args.source)
    expires = None
    if source is Source.PACKAGE:
        expires = now_ms() + policy.document.catalog.package_expiry_days * 86_400_000
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
    doc = enhanced_balance(snap, policy.plans.get(snap.plan_key), policy.catalog_version)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    t = doc["totals"]
    print(f"account {snap.account_id} (plan {snap.plan_key})")
    print(f"  available {t['available_seconds']} s  (total {t['total_seconds']} s: paid "
          f"{t['paid_seconds']} s, bonus {t['bonus_seconds']} s; held {t['held_seconds']} s; "
          f"debt {t['debt_seconds']} s)")
    for b in snap.buckets:
        exp = iso_utc(b.expires_at_ms) if b.expires_at_ms else "never"
        print(f"  {b.source:<12} {b.remaining / 1000:>12.3f} s  expires {exp}")
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
    for r in rows:
        unbilled = f" unbilled {r['unbilled']} ms" if r["unbilled"] else ""
        print(f"{r['created_at']}  {r['id']}  {r['operation']:<11} {r['model'] or '-':<22} "
              f"status {r['upstream_status'] or '-':<4} {r['duration_ms']:>6} ms  in "
              f"{r['input_tokens']:>6} out {r['output_tokens']:>6}  charged {r['charged']:>8} ms"
              f"{unbilled} ({r['usage_source']}, {r['outcome']})")
    if not rows:
        print("no usage yet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
