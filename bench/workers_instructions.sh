#!/usr/bin/env bash
# Instructions per proxied call with 1 and with N workers (issue 13 item 4), on PostgreSQL +
# Redis with ACCOUNTS accounts: CPU time per call of several processes sharing a core also
# counts what the sharing costs (caches refilled after each switch); instructions do not, and
# callgrind counts them the same whatever else the machine does.
#
#   bench/workers_instructions.sh                    # WORKERS="1 2" N=600 ACCOUNTS=100, ~6 min
#
# Each turn: `gateway serve --workers W` under `valgrind --tool=callgrind --trace-children=yes`
# (the supervisor and every worker), WARM calls, counters zeroed (`callgrind_control -z`), then
# exactly N calls 16 at a time (rt_calls.py, keys round-robin, every answer checked), then every
# process's instruction count (`callgrind_control -e Ir`) summed over the process group and
# divided by N. Prints one line per worker count and each count's ratio to the first.
#
# env: GATEWAY_CMD (default: `gateway` on PATH), WORKERS, N, WARM (600), ACCOUNTS, CONC (16),
# PG_ADMIN_URL, PG_DB (h_bench_ir, dropped on exit), REDIS_DB (13, flushed), BENCH_VENV.
# Needs valgrind (apt-get install -y valgrind), psql, redis-cli.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/lib.sh"
BENCH_VENV="${BENCH_VENV:-/tmp/bench-venv}"; bench_venv
GATEWAY_CMD="${GATEWAY_CMD:-$(command -v gateway || true)}"
[[ -x "$GATEWAY_CMD" ]] || die "no gateway command: set GATEWAY_CMD"
GW_PY="$(dirname "$GATEWAY_CMD")/python"
WORKERS=(${WORKERS:-1 2}); N="${N:-600}"; WARM="${WARM:-600}"; ACCOUNTS="${ACCOUNTS:-100}"
CONC="${CONC:-16}"
PG_ADMIN_URL="${PG_ADMIN_URL:-postgresql://postgres@127.0.0.1:5432/test}"
PG_DB="${PG_DB:-h_bench_ir}"; REDIS_DB="${REDIS_DB:-13}"
need valgrind valgrind; need callgrind_control valgrind; need psql postgresql-client
need redis-cli redis-tools

TMP="$(mktemp -d /tmp/bench-ir.XXXXXX)"
on_exit() {
  psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
install_cleanup
echo '{"model":"fake-model","messages":[{"role":"user","content":"Write one short sentence about benchmarking reverse proxies."}],"max_tokens":64}' >"$TMP/body.json"
UPSTREAM_PORT="$(free_port 18000)"; PORT="$(free_port 8080)"
start upstream 0-64 "$TMP/upstream.log" "$PY" "$HERE/upstream.py" --port "$UPSTREAM_PORT"
wait_http "http://127.0.0.1:$UPSTREAM_PORT/health" 10 "$STARTED_PID" upstream "$TMP/upstream.log"
PGOPTIONS="--client-min-messages=warning" psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null
psql "$PG_ADMIN_URL" -qc "CREATE DATABASE $PG_DB" >/dev/null
TOKEN="bench-admin-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
ENV=(GATEWAY_DATABASE_URL="postgresql+asyncpg://${PG_ADMIN_URL#postgresql://}"
     GATEWAY_REDIS_URL="redis://127.0.0.1:6379/$REDIS_DB" GATEWAY_POLICY_PATH="$HERE/policies.yaml"
     OPENAI_BASE_URL="http://127.0.0.1:$UPSTREAM_PORT/v1" OPENAI_API_KEY=sk-bench-upstream
     GATEWAY_LOG_LEVEL=warning GATEWAY_ADMIN_TOKEN="$TOKEN")
ENV[0]="${ENV[0]%/*}/$PG_DB"
SERVE=(serve --host 127.0.0.1 --port "$PORT")
CALLS=("$PY" "$HERE/rt_calls.py" --base "http://127.0.0.1:$PORT/v1" --keys-file "$TMP/keys.txt"
       --body-file "$TMP/body.json" --concurrency "$CONC")

# the accounts, through a gateway running natively (the admin API; valgrind would take minutes)
start setup 0-64 "$TMP/setup.log" env "${ENV[@]}" "$GATEWAY_CMD" "${SERVE[@]}"
wait_http "http://127.0.0.1:$PORT/healthz" 90 "$STARTED_PID" gateway "$TMP/setup.log"
timeout 120 "$PY" "$HERE/accounts.py" --url "http://127.0.0.1:$PORT" --token "$TOKEN" \
  --n "$ACCOUNTS" >"$TMP/keys.txt"
stop_group "$STARTED_PID" 20

declare -A IR
for w in "${WORKERS[@]}"; do
  log "workers=$w: starting under callgrind (a minute or more)"
  redis-cli -n "$REDIS_DB" flushdb >/dev/null
  psql "${PG_ADMIN_URL%/*}/$PG_DB" -qc "VACUUM ANALYZE" >/dev/null
  # serve_slow_workers.py: the CLI with uvicorn's worker health-check timeout raised, since a
  # worker under valgrind answers the supervisor's pings too slowly for the default 5 s
  start "gw-w$w" 0-64 "$TMP/gw-w$w.log" env "${ENV[@]}" valgrind --tool=callgrind \
    --trace-children=yes --callgrind-out-file="$TMP/cg-w$w.%p.out" \
    "$GW_PY" "$HERE/serve_slow_workers.py" "${SERVE[@]}" --workers "$w"
  gw=$STARTED_PID
  wait_http "http://127.0.0.1:$PORT/healthz" 900 "$gw" "gw-w$w" "$TMP/gw-w$w.log"
  # WARM calls: every worker has loaded its code paths and cached the keys it serves
  timeout 1800 "${CALLS[@]}" --n "$WARM" >/dev/null
  pids="$(pgrep -g "$gw" | tr '\n' ' ')"
  # shellcheck disable=SC2086
  callgrind_control -z $pids >/dev/null 2>&1
  timeout 1800 "${CALLS[@]}" --n "$N" >/dev/null
  # shellcheck disable=SC2086
  callgrind_control -e Ir $pids >"$TMP/ir-w$w.txt" 2>&1
  IR[$w]="$("$PY" - "$TMP/ir-w$w.txt" <<'PYEOF'
import re, sys
# `callgrind_control -e Ir` prints, per process, "Th N   1,234,567" per thread
print(sum(int(m.replace(",", "")) for m in re.findall(r"^\s*Th\s+\d+\s+([\d,]+)\s*$",
                                                       open(sys.argv[1]).read(), re.M)))
PYEOF
)"
  stop_group "$gw" 60
done

first="${WORKERS[0]}"
for w in "${WORKERS[@]}"; do
  "$PY" -c 'import sys; w, ir, n, base = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
print(f"workers={w}: {ir / n / 1e6:.3f} M instructions per call ({ir:,} over {n} calls), "
      f"{ir / base:.3f}x of workers={sys.argv[5]}")' "$w" "${IR[$w]}" "$N" "${IR[$first]}" "$first"
done
