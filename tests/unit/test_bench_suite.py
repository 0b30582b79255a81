"""bench/suite.sh's pure parts: counting round trips in a PostgreSQL log and a Redis MONITOR
capture (bench/roundtrips.py), and the headline table's comparisons (bench/suite_report.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import roundtrips
import suite_report

PG_LOG = """\
2026-11-29 14:09:39.589 UTC [10826] postgres@h_bench_x LOG:  statement: BEGIN;
2026-11-29 14:09:39.594 UTC [10826] postgres@h_bench_x LOG:  execute __asyncpg_stmt_1__: SELECT 1
2026-11-29 14:09:39.594 UTC [10826] postgres@h_bench_x DETAIL:  parameters: $1 = '1'
2026-11-29 14:09:39.594 UTC [10826] postgres@h_bench_x LOG:  execute <unnamed>: WITH a AS (
\t  SELECT 1) UPDATE t SET v = 1
2026-11-29 14:09:39.594 UTC [10826] postgres@h_bench_x LOG:  statement: COMMIT;
2026-11-29 14:09:39.595 UTC [10900] postgres@test LOG:  statement: SELECT 2
2026-11-29 14:09:39.595 UTC [10901] postgres@h_bench_x_y LOG:  statement: SELECT 3
2026-11-29 14:09:39.596 UTC [10826] postgres@h_bench_x ERROR:  relation "nope" does not exist
"""


def test_pg_counts_each_logged_statement_of_the_database_once() -> None:
    counts = roundtrips.pg_statements(PG_LOG.splitlines(), "h_bench_x")
    assert counts == {"BEGIN": 1, "SELECT": 1, "WITH": 1, "COMMIT": 1}


def test_pg_ignores_other_databases_with_a_common_prefix() -> None:
    assert roundtrips.pg_statements(PG_LOG.splitlines(), "h_bench_x_y") == {"SELECT": 1}


def test_redis_counts_client_commands_of_one_db_not_those_run_inside_scripts() -> None:
    lines = ['1795961375.240552 [13 127.0.0.1:45944] "SELECT" "13"',
             '1795961375.240812 [13 127.0.0.1:45944] "get" "foo"',
             '1795961375.264265 [13 127.0.0.1:45958] "evalsha" "abc" "0"',
             '1795961375.264318 [13 lua] "get" "foo"',
             '1795961375.264400 [0 127.0.0.1:40000] "get" "other"',
             "OK"]
    assert roundtrips.redis_commands(lines, 13) == {"SELECT": 1, "GET": 1, "EVALSHA": 1}


def test_twins_name_the_setups_a_row_is_compared_with() -> None:
    assert suite_report.sqlite_twin("new-pg-a100-w2") == "new-sqlite-a100-w2"
    assert suite_report.sqlite_twin("new-sqlite-a1") == "new-sqlite-a1"
    assert suite_report.one_worker_twin("base-pg-a1-w2") == "base-pg-a1"
    assert suite_report.one_worker_twin("base-pg-a1") is None


def _rec(target: str, test: str, kind: str, **kw: object) -> dict[str, object]:
    return {"target": target, "test": test, "kind": kind, "round": 1, "workers": 1, **kw}


def test_figures_compare_with_direct_portkey_sqlite_and_one_worker() -> None:
    recs = [
        _rec("direct", "lat_c1", "direct", p50_ms=0.1, p99_ms=0.3),
        _rec("direct", "load_c16", "direct", rps=10000.0),
        _rec("direct", "stream_c1", "direct", ttfb_p50_ms=1.0, n_ok=10),
        _rec("portkey", "lat_c1", "peer", p50_ms=1.1),
        _rec("portkey", "load_c16", "peer", rps=1000.0, gw_cpu_us_per_req=900.0),
        _rec("new-sqlite-a1", "lat_c1", "gateway", p50_ms=2.1),
        _rec("new-sqlite-a1", "load_c16", "gateway", rps=500.0, gw_cpu_us_per_req=1000.0),
        _rec("new-sqlite-a1", "stream_c1", "gateway", ttfb_p50_ms=3.5, n_ok=10),
        _rec("new-pg-a1", "lat_c1", "gateway", p50_ms=3.1),
        _rec("new-pg-a1", "load_c16", "gateway", rps=400.0, gw_cpu_us_per_req=1200.0,
             err_status=2),
        _rec("new-pg-a1", "load_c16", "gateway", rps=300.0, gw_cpu_us_per_req=1400.0, round=2),
        _rec("new-pg-a1-w2", "load_c16", "gateway", rps=600.0, gw_cpu_us_per_req=1365.0,
             workers=2),
        _rec("new-pg-a1", "roundtrips", "gateway", pg_per_call=9.0, redis_per_call=1.0,
             pg_by_kind={"BEGIN": 100}),
    ]
    order, out = suite_report.figures(recs)
    assert order[:2] == ["direct", "portkey"]
    pg, sq = out["new-pg-a1"], out["new-sqlite-a1"]
    assert abs(pg["added_p50_ms"] - 3.0) < 1e-9
    assert pg["rps"] == 350.0 and abs(pg["rps_vs_portkey"] - 0.35) < 1e-9
    assert abs(pg["cpu_vs_sqlite"] - 1.3) < 1e-9 and sq["cpu_vs_sqlite"] == 1.0
    assert abs(sq["ttfb_added_ms"] - 2.5) < 1e-9
    assert pg["pg_per_call"] == 9.0 and pg["errors"] == 2
    assert abs(out["new-pg-a1-w2"]["cpu_vs_1_worker"] - 1.05) < 1e-9
    assert out["portkey"]["rps_vs_portkey"] is None
    text = suite_report.table(order, out)
    assert "| new-pg-a1 | 3.100 |" in text and "1.30×" in text
    assert any("within the 1.10× budget" in n for n in suite_report.notes(order, out))
