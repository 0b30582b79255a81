#!/usr/bin/env python3
"""Count what a measured window of calls sent to PostgreSQL and Redis (suite.sh's round trips).

    roundtrips.py size FILE                                  -> the file's size in bytes (an offset)
    roundtrips.py pg FILE --db NAME --from OFFSET [--to OFFSET]
    roundtrips.py redis FILE --db N                          -> a `redis-cli monitor` capture

PostgreSQL: with `log_statement = 'all'` on the database (suite.sh sets it with `ALTER DATABASE`
on its scratch database only), the server logs one line per statement it executes: `LOG:
statement: …` for a simple query (BEGIN, COMMIT, …) and `LOG:  execute <name>: …` for an
extended-protocol execution (asyncpg's prepared statements). Each such line is one client round
trip (a Parse of a statement not yet prepared is one more, not logged: after warm-up the
statement caches make those rare). Lines are taken only from the log's part between the two
offsets and only when the prefix names the database: the server's `log_line_prefix` must show
`user@database` (Debian's default `%m [%p] %q%u@%d `).

Redis: `redis-cli monitor` prints one line per command, `<time> [<db> <client>] "CMD" …`; only
lines of db N count.

Prints one JSON object: {"total": n, "by_kind": {"BEGIN": …, "SELECT": …, …}}.
"""
from __future__ import annotations

import argparse
import json
import os
import re
from collections import Counter
from collections.abc import Iterable

# '2026-11-29 14:06:00.123 UTC [1234] postgres@db LOG:  statement: BEGIN'
# '… postgres@db LOG:  execute __asyncpg_stmt_3__: SELECT …' ; 'execute <unnamed>: …'
_PG = re.compile(r"\[\d+\] (?:\S*)@(?P<db>\S+) LOG:  (?:statement|execute [^:]*): *(?P<sql>.*)$")
# '1764425000.123456 [13 127.0.0.1:43210] "EVALSHA" "…"' ; '[13 lua] "GET" …' inside scripts
_REDIS = re.compile(r'^\d+\.\d+ \[(?P<db>\d+) (?P<client>\S+)\] "(?P<cmd>[^"]*)"')


def _kind(sql: str) -> str:
    word = sql.lstrip("( ").split(None, 1)[0].upper() if sql.strip() else "?"
    return word.rstrip(";")


def pg_statements(lines: Iterable[str], db: str) -> Counter[str]:
    """Statements logged for database `db`, by first SQL word (BEGIN, SELECT, INSERT, …)."""
    out: Counter[str] = Counter()
    for line in lines:
        m = _PG.search(line)
        if m and m.group("db") == db:
            out[_kind(m.group("sql"))] += 1
    return out


def redis_commands(lines: Iterable[str], db: int) -> Counter[str]:
    """Commands a client sent to Redis db `db`, by command name. Commands run inside a Lua
    script (client `lua`) are not round trips: they are left out."""
    out: Counter[str] = Counter()
    for line in lines:
        m = _REDIS.match(line)
        if m and int(m.group("db")) == db and m.group("client") != "lua":
            out[m.group("cmd").upper()] += 1
    return out


def _read(path: str, start: int, end: int | None) -> list[str]:
    with open(path, "rb") as fh:
        fh.seek(start)
        data = fh.read() if end is None else fh.read(max(0, end - start))
    return data.decode("utf-8", "replace").splitlines()


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("size")
    s.add_argument("file")
    p = sub.add_parser("pg")
    p.add_argument("file")
    p.add_argument("--db", required=True)
    p.add_argument("--from", dest="start", type=int, default=0)
    p.add_argument("--to", dest="end", type=int)
    r = sub.add_parser("redis")
    r.add_argument("file")
    r.add_argument("--db", type=int, required=True)
    a = ap.parse_args()
    if a.cmd == "size":
        print(os.path.getsize(a.file))
        return
    if a.cmd == "pg":
        counts = pg_statements(_read(a.file, a.start, a.end), a.db)
    else:
        counts = redis_commands(_read(a.file, 0, None), a.db)
    print(json.dumps({"total": sum(counts.values()), "by_kind": dict(counts.most_common())}))


if __name__ == "__main__":
    main()
