#!/usr/bin/env bash
# The whole comparison in one run: the fake upstream directly, Portkey (a pass-through peer),
# and each gateway command on SQLite and on PostgreSQL + Redis, with one hot account and with
# many accounts; rounds alternate the order; then PostgreSQL round trips and Redis commands per
# call, counted over exactly RT_N sequential calls. Prints one Markdown table (suite_report.py).
#
#   bench/suite.sh
#   GATEWAY_CMDS="new=/work/main/.venv/bin/gateway base=/tmp/base-venv/bin/gateway" bench/suite.sh
#   WORKERS="1 2" PEERS= RT_N=0 SHARED_CPUS=1 bench/suite.sh   # CPU per call, 1 vs 2 workers
#
# Each gateway is started before its turn and stopped after it (an idle gateway never shares the
# measured one's core); its database is set up once (SQLite file, or a scratch PostgreSQL
# database dropped on exit) and its accounts created once through the admin API.
# Pinning (2 cores): upstream + load generators on CPU 0, the measured gateway or peer alone on
# CPU 1 (WORKERS>1: CPUs 0,1). Everything on 127.0.0.1; every step bounded in time; every
# background process stopped on exit. Stdout: the table. Stderr: progress.
# Files: bench/results/RUN_ID.{jsonl,summary.jsonl,md}, RUN_ID.logs/ (gateway and peer logs).
#
# Knobs (environment):
#   GATEWAY_CMDS="LABEL=CMD ..."   gateway CLIs to compare (CMD: a path without spaces);
#                                  default: gw=`gateway` on PATH
#   STORES="sqlite pg"             pg = PostgreSQL (scratch database) + Redis (db REDIS_DB)
#   ACCOUNTS="1 100"               accounts per gateway setup: 1 = every call on one hot account;
#                                  N = N accounts, one key each, wrk spreads calls over the keys
#   WORKERS="1"                    `gateway serve --workers N` (a list measures each)
#   PEERS="portkey"                peers measured beside direct (empty: none); Portkey is
#                                  started from PORTKEY_DIR=/tmp/portkey (see README);
#                                  PEER_WARM_D=5 s of warm-up (Node's JIT) instead of WARM_D
#   ROUNDS=2 LAT_D=6 LOAD_D=8      rounds; seconds of the 1- and 16-connection wrk tests
#   SKIP_MANY="stream_c1 stream_c16 stream_paced"   measure.sh tests skipped with N>1 accounts
#   SKIP_OTHER=""                  tests skipped for every gateway label but the first
#   RT_N=50 RT_WARM=20             round-trip window: counted calls; warm-up calls before it
#                                  (RT_WARM + one per account, so every key is cached); RT_N=0: none
#   PG_ADMIN_URL=postgresql://postgres@127.0.0.1:5432/test   where scratch databases are made
#   PG_DB_PREFIX=h_bench  PG_LOG=/var/log/postgresql/postgresql-15-main.log
#   REDIS_HOST=127.0.0.1 REDIS_PORT=6379 REDIS_DB=13   (flushed before every gateway start)
#   SOLO_CPUS=1 SHARED_CPUS=0,1    CPUs of a one-worker / several-worker gateway (SHARED_CPUS=1:
#                                  all workers beside the same neighbours as one worker)
#   EXTRA_ENV="NAME=value ..."     added to every gateway's environment
#   BENCH_VENV=/tmp/bench-venv KEEP_TMP=0   and measure.sh's own knobs (SKIP, WARM_D, STREAM_D …)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
# shellcheck source=lib.sh
. "$HERE/lib.sh"
case "${1:-}" in
  -h|--help) awk 'NR>1 && /^set -euo/{exit} NR>1' "$0"; exit 0 ;;
  "") ;;
  *) die "unknown argument: $1 (try --help)" ;;
esac

export LAT_D="${LAT_D:-6}" LOAD_D="${LOAD_D:-8}"
ROUNDS="${ROUNDS:-2}"
read -r -a STORES <<<"${STORES:-sqlite pg}"
read -r -a ACCOUNTS <<<"${ACCOUNTS:-1 100}"
read -r -a WORKERS <<<"${WORKERS:-1}"
read -r -a PEERS <<<"${PEERS-portkey}"
read -r -a EXTRA <<<"${EXTRA_ENV:-}"
SKIP_MANY="${SKIP_MANY-stream_c1 stream_c16 stream_paced}"; SKIP_OTHER="${SKIP_OTHER:-}"
RT_N="${RT_N:-50}"; RT_WARM="${RT_WARM:-20}"
PG_ADMIN_URL="${PG_ADMIN_URL:-postgresql://postgres@127.0.0.1:5432/test}"
PG_DB_PREFIX="${PG_DB_PREFIX:-h_bench}"
PG_LOG="${PG_LOG:-/var/log/postgresql/postgresql-15-main.log}"
REDIS_HOST="${REDIS_HOST:-127.0.0.1}"; REDIS_PORT="${REDIS_PORT:-6379}"; REDIS_DB="${REDIS_DB:-13}"
PORTKEY_DIR="${PORTKEY_DIR:-/tmp/portkey}"; PEER_WARM_D="${PEER_WARM_D:-5}"
BENCH_VENV="${BENCH_VENV:-/tmp/bench-venv}"
GRANT_MINUTES="${GRANT_MINUTES:-10000000}"
export LOADGEN_CPUS="${LOADGEN_CPUS:-0}"
UPSTREAM_CPUS="${UPSTREAM_CPUS:-0}"; SOLO_CPUS="${SOLO_CPUS:-1}"; SHARED_CPUS="${SHARED_CPUS:-0,1}"

# ---- prerequisites -----------------------------------------------------------
need wrk wrk; need curl curl; need taskset util-linux; need setsid util-linux
[[ "$(nproc)" -ge 2 ]] || die "needs 2 CPUs (upstream + load generator on CPU 0, gateway on CPU 1)"
if [[ " ${STORES[*]} " == *" pg "* ]]; then
  need psql postgresql-client; need redis-cli redis-tools
  psql "$PG_ADMIN_URL" -Atqc 'SELECT 1' >/dev/null || die "PostgreSQL not reachable at $PG_ADMIN_URL"
  redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping >/dev/null || die "Redis not reachable"
  [[ -r "$PG_LOG" ]] || die "cannot read the PostgreSQL log $PG_LOG (set PG_LOG)"
  [[ "$(psql "$PG_ADMIN_URL" -Atc 'SHOW log_line_prefix')" == *"%d"* ]] \
    || die "log_line_prefix lacks %d (the database name): round trips cannot be attributed"
fi
if [[ " ${PEERS[*]-} " == *" portkey "* ]]; then
  need node nodejs
  [[ -f "$PORTKEY_DIR/node_modules/@portkey-ai/gateway/build/start-server.js" ]] \
    || die "Portkey not installed in $PORTKEY_DIR (see bench/README.md), or run with PEERS="
fi
bench_venv

LABELS=(); declare -A CMD
for spec in ${GATEWAY_CMDS:-gw=$(command -v gateway || echo gateway)}; do
  [[ "$spec" == *=* ]] || die "GATEWAY_CMDS: '$spec' is not LABEL=CMD"
  label="${spec%%=*}"; CMD[$label]="${spec#*=}"; LABELS+=("$label")
  [[ "$label" =~ ^[a-z0-9]+$ ]] || die "GATEWAY_CMDS: label '$label': use [a-z0-9]"
  timeout 60 "${CMD[$label]}" --help >/dev/null 2>&1 || die "'${CMD[$label]} --help' fails"
  if [[ " ${STORES[*]} " == *" pg "* ]]; then  # the drivers of the PostgreSQL + Redis setups
    "$(dirname "${CMD[$label]}")/python" -c 'import asyncpg, redis' 2>/dev/null || die \
      "$label: no asyncpg/redis beside ${CMD[$label]}: $(dirname "${CMD[$label]}")/pip install asyncpg redis"
  fi
done

# ---- state, cleanup ---------------------------------------------------------------
TMP="$(mktemp -d /tmp/bench-suite.XXXXXX)"
PG_DBS=()
on_exit() {
  local db
  for db in "${PG_DBS[@]+"${PG_DBS[@]}"}"; do
    psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
  [[ ${#PG_DBS[@]} -eq 0 ]] || redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" -n "$REDIS_DB" flushdb >/dev/null 2>&1 || true
  if [[ "${KEEP_TMP:-0}" == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
install_cleanup

RUN_ID="$(date +%Y%m%d-%H%M%S)"
RES="$HERE/results"; LOGS="$RES/$RUN_ID.logs"; mkdir -p "$LOGS"
OUT="$RES/$RUN_ID.jsonl"
ADMIN_TOKEN="bench-admin-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
export BODY_FILE="$TMP/body.json"   # measure.sh's default request, shared with rt_calls.py
cat >"$BODY_FILE" <<'EOF'
{"model":"fake-model","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write one short sentence about benchmarking reverse proxies for LLM APIs."}],"max_tokens":64,"temperature":0.7}
EOF

UPSTREAM_PORT="$(free_port "${UPSTREAM_PORT:-18000}")"
start upstream "$UPSTREAM_CPUS" "$LOGS/upstream.log" "$PY" "$HERE/upstream.py" --port "$UPSTREAM_PORT"
wait_http "http://127.0.0.1:$UPSTREAM_PORT/health" 10 "$STARTED_PID" upstream "$LOGS/upstream.log" || exit 1
GATEWAY_PORT="$(free_port "${GATEWAY_PORT:-8080}")"
PORTKEY_PORT="$(free_port "${PORTKEY_PORT:-8787}")"
log "upstream :$UPSTREAM_PORT, gateways :$GATEWAY_PORT, portkey :$PORTKEY_PORT; run $RUN_ID"

commit_of() {  # CMD: the git commit of the gateway package that CMD runs (best effort; from /, so
  local dir   # a `gateway` folder in the current directory is not the one imported)
  dir="$(cd / && "$(dirname "$1")/python" -c 'import gateway, os; print(os.path.dirname(gateway.__file__))' 2>/dev/null)" \
    && git -C "$dir" rev-parse --short HEAD 2>/dev/null || echo unknown
}

# ---- the gateway setups: LABEL-STORE-aN[-wW] ----------------------------------------
CONFIGS=(); declare -A C_LABEL C_STORE C_N C_W C_URL C_PGDB C_READY C_COMMIT C_BROKEN
for label in "${LABELS[@]}"; do
  commit="$(commit_of "${CMD[$label]}")"
  for store in "${STORES[@]}"; do
    [[ "$store" == sqlite || "$store" == pg ]] || die "STORES: unknown store '$store'"
    for n in "${ACCOUNTS[@]}"; do
      for w in "${WORKERS[@]}"; do
        name="$label-$store-a$n"; [[ "$w" == 1 ]] || name+="-w$w"
        CONFIGS+=("$name"); C_LABEL[$name]=$label; C_STORE[$name]=$store; C_N[$name]=$n
        C_W[$name]=$w; C_READY[$name]=0; C_COMMIT[$name]=$commit; C_BROKEN[$name]=0
        mkdir -p "$TMP/$name"
        if [[ "$store" == sqlite ]]; then
          C_URL[$name]="sqlite:///$TMP/$name/gw.db"
        else
          db="${PG_DB_PREFIX}_${name//-/_}"
          C_PGDB[$name]=$db
          C_URL[$name]="postgresql+asyncpg://${PG_ADMIN_URL#postgresql://}"
          C_URL[$name]="${C_URL[$name]%/*}/$db"
        fi
      done
    done
  done
done
TARGETS=(direct "${PEERS[@]+"${PEERS[@]}"}" "${CONFIGS[@]}")
log "targets: ${TARGETS[*]}"

meta() {  # TARGET KIND [CONFIG]: BENCH_META for measure.sh (merged into every result line)
  local c="${3:-}"
  "$PY" -c 'import json,sys; a=sys.argv[1:]; print(json.dumps({"run_id":a[0],"kind":a[1],
    "label":a[2] or None,"db":a[3] or "none","accounts":int(a[4] or 0),"workers":int(a[5] or 1),
    "commit":a[6] or None,"lat_d":int(a[7]),"load_d":int(a[8])}))' \
    "$RUN_ID" "$2" "${c:+${C_LABEL[$c]}}" "${c:+${C_STORE[$c]}}" "${c:+${C_N[$c]}}" \
    "${c:+${C_W[$c]}}" "${c:+${C_COMMIT[$c]}}" "$LAT_D" "$LOAD_D"
}

gw_start() {  # CONFIG -> GW_PID; the first time also creates the database and the accounts.
  # Returns 1 (gateway stopped, the setup marked broken: later turns skip it) when it fails.
  local c="$1" cpus="$SOLO_CPUS" env serve
  env=(GATEWAY_DATABASE_URL="${C_URL[$c]}" GATEWAY_POLICY_PATH="$HERE/policies.yaml"
       OPENAI_BASE_URL="http://127.0.0.1:$UPSTREAM_PORT/v1" OPENAI_API_KEY=sk-bench-upstream
       GATEWAY_LOG_LEVEL=warning GATEWAY_ADMIN_TOKEN="$ADMIN_TOKEN")
  if [[ "${C_STORE[$c]}" == pg ]]; then
    env+=(GATEWAY_REDIS_URL="redis://$REDIS_HOST:$REDIS_PORT/$REDIS_DB")
    timeout 10 redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" -n "$REDIS_DB" flushdb >/dev/null \
      || die "cannot flush Redis db $REDIS_DB"
    if [[ "${C_READY[$c]}" == 0 ]]; then
      PG_DBS+=("${C_PGDB[$c]}")
      psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS ${C_PGDB[$c]} WITH (FORCE)" >/dev/null
      psql "$PG_ADMIN_URL" -qc "CREATE DATABASE ${C_PGDB[$c]}" >/dev/null
    else
      # Every turn starts from vacuumed tables, as autovacuum keeps them in production (a server
      # with autovacuum off, like this machine's, otherwise carries the previous turns' dead
      # hold and usage rows: PostgreSQL's requests/s fell 5x after 40k calls without it).
      psql "${PG_ADMIN_URL%/*}/${C_PGDB[$c]}" -qc "VACUUM ANALYZE" >/dev/null
    fi
  fi
  env+=("${EXTRA[@]+"${EXTRA[@]}"}")
  serve=(serve --host 127.0.0.1 --port "$GATEWAY_PORT")
  if [[ "${C_W[$c]}" != 1 ]]; then serve+=(--workers "${C_W[$c]}"); cpus="$SHARED_CPUS"; fi
  # cd: stray files land in the setup's temp dir, not the repository
  start "$c" "$cpus" "$TMP/$c/gateway.log" \
    bash -c 'cd "$1" && shift && exec "$@"' _ "$TMP/$c" env "${env[@]}" "${CMD[${C_LABEL[$c]}]}" "${serve[@]}"
  GW_PID=$STARTED_PID
  if ! wait_http "http://127.0.0.1:$GATEWAY_PORT/healthz" 90 "$GW_PID" "$c" "$TMP/$c/gateway.log"; then
    gw_stop "$c"; C_BROKEN[$c]=1; FAILED+=("$c/start"); return 1
  fi
  if [[ "${C_READY[$c]}" == 0 ]]; then
    if ! timeout 120 "$PY" "$HERE/accounts.py" --url "http://127.0.0.1:$GATEWAY_PORT" \
        --token "$ADMIN_TOKEN" --n "${C_N[$c]}" --minutes "$GRANT_MINUTES" >"$TMP/$c/keys.txt"; then
      gw_stop "$c"; C_BROKEN[$c]=1; FAILED+=("$c/accounts"); return 1
    fi
    C_READY[$c]=1
    log "$c: ${C_N[$c]} accounts, keys in $TMP/$c/keys.txt"
  fi
}

gw_stop() {  # CONFIG: stop the gateway, keep its log
  stop_group "$GW_PID" 20
  cat "$TMP/$1/gateway.log" >>"$LOGS/$1.log" 2>/dev/null || true
}

FAILED=()
turn() {  # TARGET ROUND: one measure.sh run against the target
  local t="$1" r="$2" skip="${SKIP:-}"
  log "=== round $r: $t ($(date -u +%T))"
  case "$t" in
    direct)
      BENCH_META="$(meta direct direct)" API_KEY=sk-bench run_bg "$HERE/measure.sh" \
        -u "http://127.0.0.1:$UPSTREAM_PORT/v1" -n direct -o "$OUT" -r "$r" || FAILED+=("$t/r$r") ;;
    portkey)
      start portkey "$SOLO_CPUS" "$TMP/portkey.log" bash -c 'cd "$1" && shift && exec "$@"' _ \
        "$PORTKEY_DIR/node_modules/@portkey-ai/gateway" env NODE_ENV=production \
        node --require "$HERE/peers/loopback-only.cjs" build/start-server.js \
        --port="$PORTKEY_PORT" --headless
      local pk=$STARTED_PID
      wait_http "http://127.0.0.1:$PORTKEY_PORT/" 60 "$pk" portkey "$TMP/portkey.log" &&
      BENCH_META="$(meta portkey peer)" API_KEY=sk-bench WARM_D="$PEER_WARM_D" run_bg "$HERE/measure.sh" \
        -u "http://127.0.0.1:$PORTKEY_PORT/v1" -n portkey -p "$pk" -o "$OUT" -r "$r" \
        -H 'x-portkey-provider: openai' -H "x-portkey-custom-host: http://127.0.0.1:$UPSTREAM_PORT/v1" \
        || FAILED+=("$t/r$r")
      stop_group "$pk" 10
      cat "$TMP/portkey.log" >>"$LOGS/portkey.log" ;;
    *)
      [[ "${C_BROKEN[$t]}" == 0 ]] || { log "skipped: $t failed before"; return 0; }
      gw_start "$t" || return 0
      [[ "${C_N[$t]}" == 1 ]] || skip+=" $SKIP_MANY"
      [[ "${C_LABEL[$t]}" == "${LABELS[0]}" ]] || skip+=" $SKIP_OTHER"
      BENCH_META="$(meta "$t" gateway "$t")" API_KEY="$(head -n 1 "$TMP/$t/keys.txt")" \
        KEYS_FILE="$TMP/$t/keys.txt" SKIP="$skip" run_bg "$HERE/measure.sh" \
        -u "http://127.0.0.1:$GATEWAY_PORT/v1" -n "$t" -p "$GW_PID" -o "$OUT" -r "$r" \
        || FAILED+=("$t/r$r")
      kill -0 "$GW_PID" 2>/dev/null || { FAILED+=("$t/r$r-died"); tail -n 30 "$TMP/$t/gateway.log" >&2; }
      gw_stop "$t" ;;
  esac
}

count_pg() { "$PY" "$HERE/roundtrips.py" pg "$PG_LOG" --db "$1" --from "$2" --to "$3"; }
window() {  # CONFIG CMD... : run CMD while capturing Redis's MONITOR and the PG log's growth;
  local c="$1" mon o0 o1; shift   # sets W_PG and W_REDIS (JSON counts)
  mon="$TMP/$c/monitor.txt"
  setsid timeout 300 redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" monitor >"$mon" 2>/dev/null </dev/null &
  local mpid=$!; PIDS+=("$mpid"); sleep 0.3
  o0="$("$PY" "$HERE/roundtrips.py" size "$PG_LOG")"
  "$@" >"$TMP/$c/window.out"
  sleep 1  # settlement may finish just after the answer; PostgreSQL writes its log at once
  o1="$("$PY" "$HERE/roundtrips.py" size "$PG_LOG")"
  stop_group "$mpid" 2
  W_PG="$(count_pg "${C_PGDB[$c]}" "$o0" "$o1")"
  W_REDIS="$("$PY" "$HERE/roundtrips.py" redis "$mon" --db "$REDIS_DB")"
}
roundtrips() {  # CONFIG: statements and Redis commands per call over exactly RT_N calls
  local c="$1" db="${C_PGDB[$1]}" calls idle_s
  log "=== round trips: $c ($RT_N calls)"
  [[ "${C_BROKEN[$c]}" == 0 ]] || return 0
  psql "$PG_ADMIN_URL" -qc "ALTER DATABASE $db SET log_statement = 'all'" >/dev/null
  gw_start "$c" || return 0   # new connections: they take the setting
  local rt=("$PY" "$HERE/rt_calls.py" --base "http://127.0.0.1:$GATEWAY_PORT/v1"
            --keys-file "$TMP/$c/keys.txt" --body-file "$BODY_FILE")
  # warm-up: every key once (its key-cache entry, as under wrk's steady round-robin) + RT_WARM
  if timeout 120 "${rt[@]}" --n $((RT_WARM + C_N[$c])) >/dev/null; then
    window "$c" timeout 300 "${rt[@]}" --n "$RT_N"
    local calls_pg="$W_PG" calls_redis="$W_REDIS"
    # as long again with no calls: what the gateway's background work sends meanwhile
    idle_s="$("$PY" -c 'import json,sys; print(json.load(sys.stdin)["seconds"])' <"$TMP/$c/window.out")"
    window "$c" sleep "$idle_s"
    "$PY" - "$c" "$RT_N" "$calls_pg" "$calls_redis" "$W_PG" "$W_REDIS" "$idle_s" "$(meta "$c" gateway "$c")" \
      <<'PYEOF' | tee -a "$OUT" >&2
import json, sys
c, n, pg, redis, pg_idle, redis_idle, idle_s, meta = sys.argv[1:9]
n, pg, redis, pg_idle, redis_idle = int(n), *(json.loads(x) for x in (pg, redis, pg_idle, redis_idle))
# per call: the window's count less the equally long idle window's (background work)
print(json.dumps({"target": c, "round": 0, "test": "roundtrips", "calls": n,
                  "pg_per_call": max(0, pg["total"] - pg_idle["total"]) / n,
                  "redis_per_call": max(0, redis["total"] - redis_idle["total"]) / n,
                  "pg_window": pg["total"], "pg_idle": pg_idle["total"], "pg_by_kind": pg["by_kind"],
                  "redis_window": redis["total"], "redis_idle": redis_idle["total"],
                  "redis_by_kind": redis["by_kind"], "idle_s": float(idle_s), **json.loads(meta)}))
PYEOF
  else
    FAILED+=("$c/roundtrips")
  fi
  gw_stop "$c"
  psql "$PG_ADMIN_URL" -qc "ALTER DATABASE $db RESET log_statement" >/dev/null
}

# ---- run ---------------------------------------------------------------------------
n=${#TARGETS[@]}
for ((r = 1; r <= ROUNDS; r++)); do
  for ((i = 0; i < n; i++)); do
    turn "${TARGETS[$(( (i + r - 1) % n ))]}" "$r"
  done
done
for c in "${CONFIGS[@]}"; do
  if [[ "${C_STORE[$c]}" == pg && "$RT_N" -gt 0 ]]; then roundtrips "$c"; fi
done

# ---- report --------------------------------------------------------------------
[[ -s "$OUT" ]] || die "no results (failed: ${FAILED[*]-})"
"$PY" "$HERE/suite_report.py" "$OUT" --json-out "$RES/$RUN_ID.summary.jsonl" | tee "$RES/$RUN_ID.md"
{ echo; echo "## Details (summarize.py)"; echo; "$PY" "$HERE/summarize.py" "$OUT"; } >>"$RES/$RUN_ID.md"
n_err="$(cat "$LOGS"/*.log 2>/dev/null | grep -ciE 'error|traceback' || true)"
[[ "$n_err" == 0 ]] || log "$n_err error/traceback lines in $LOGS"
log "raw: $OUT  figures: $RES/$RUN_ID.summary.jsonl  tables: $RES/$RUN_ID.md"
[[ ${#FAILED[@]} -eq 0 ]] || die "failed: ${FAILED[*]}"
