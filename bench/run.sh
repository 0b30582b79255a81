#!/usr/bin/env bash
# What the gateway costs, in one run: the fake upstream measured directly and through the gateway
# (metering on: real account, key, balance, holds and settlement), then a Markdown table of the
# gateway's figures as differences and ratios against `direct` from the same run.
#
#   bench/run.sh                 # direct + gateway (needs `gateway` installed: pip install -e .)
#   bench/run.sh --direct-only   # the upstream alone (checks the harness, no gateway needed)
#
# Pinning (2 cores): upstream + load generators on CPU 0, the gateway alone on CPU 1.
# Everything on 127.0.0.1; every step bounded in time; background processes killed on exit.
# Stdout: the table. Stderr: progress. Files: bench/results/RUN_ID.{jsonl,summary.jsonl,md}.
#
# Knobs (environment):
#   LAT_D=10 LOAD_D=15     seconds of the wrk 1-connection and 16-connection tests
#   ROUNDS=1               rounds; targets alternate order each round; medians reported
#   WORKERS=1              gateway worker processes; >1 pins the gateway to CPUs 0,1, where it
#                          shares CPU 0 with the upstream and the load generator
#   GATEWAY_CMD            default: `gateway` on PATH, else /tmp/gw-venv/bin/gateway
#                          (may hold arguments, e.g. "/tmp/gw-venv/bin/python -m gateway.cli")
#   DATABASE_URL           gateway database (default: a fresh SQLite file in a temp dir), e.g.
#                          postgresql+asyncpg://user:pw@127.0.0.1:5432/bench
#   DB_SETUP               optional shell command run before the account is created (e.g. to
#                          create or reset the database named by $GATEWAY_DATABASE_URL)
#   EXTRA_ENV              extra "NAME=value ..." for every gateway command (split on spaces)
#   UPSTREAM_PORT=18000 GATEWAY_PORT=8080   (a free port is picked if the default is taken)
#   BENCH_VENV=/tmp/bench-venv   venv with httpx httptools uvloop orjson (created if missing)
#   GRANT_MINUTES=10000000 KEEP_TMP=0 (1 keeps the temp dir with logs and the SQLite file)
#   measure.sh's own knobs pass through: SKIP, WARM_D, STREAM_D, LOAD_C, PACED_N, BODY_FILE, …
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"

MODE=full
for arg in "$@"; do
  case "$arg" in
    --direct-only) MODE=direct ;;
    -h|--help) awk 'NR>1 && /^set -euo/{exit} NR>1' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

export LAT_D="${LAT_D:-10}" LOAD_D="${LOAD_D:-15}"
ROUNDS="${ROUNDS:-1}"; WORKERS="${WORKERS:-1}"
BENCH_VENV="${BENCH_VENV:-/tmp/bench-venv}"
GRANT_MINUTES="${GRANT_MINUTES:-10000000}"
EXTRA_ENV="${EXTRA_ENV:-}"
UPSTREAM_CPUS="${UPSTREAM_CPUS:-0}"
export LOADGEN_CPUS="${LOADGEN_CPUS:-0}"
if [[ "$WORKERS" -gt 1 ]]; then GATEWAY_CPUS="${GATEWAY_CPUS:-0,1}"; else GATEWAY_CPUS="${GATEWAY_CPUS:-1}"; fi

# shellcheck source=lib.sh
. "$HERE/lib.sh"   # log, die, start, run_bg, cleanup on exit, …

# ---- prerequisites -----------------------------------------------------------
need wrk wrk; need curl curl; need taskset util-linux; need setsid util-linux
NCPU="$(nproc)"
if [[ "$NCPU" -lt 2 ]]; then
  log "WARNING: only $NCPU CPU: everything pinned to CPU 0, the gateway shares it with the load"
  UPSTREAM_CPUS=0; LOADGEN_CPUS=0; GATEWAY_CPUS=0
fi

bench_venv

GW=()
if [[ "$MODE" == full ]]; then
  if [[ -n "${GATEWAY_CMD:-}" ]]; then read -r -a GW <<<"$GATEWAY_CMD"
  elif command -v gateway >/dev/null; then GW=(gateway)
  elif [[ -x /tmp/gw-venv/bin/gateway ]]; then GW=(/tmp/gw-venv/bin/gateway)
  else die "no gateway command: pip install -e $REPO (or set GATEWAY_CMD; or run with --direct-only)"
  fi
  timeout 30 "${GW[@]}" --help >/dev/null 2>&1 || die "'${GW[*]} --help' fails: is the gateway installed?"
fi

# ---- processes, cleanup --------------------------------------------------------
TMP="$(mktemp -d /tmp/bench.XXXXXX)"
on_exit() { if [[ "${KEEP_TMP:-0}" == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi; }
install_cleanup


RUN_ID="$(date +%Y%m%d-%H%M%S)"
RES="$HERE/results"; mkdir -p "$RES"
OUT="$RES/$RUN_ID.jsonl"

UPSTREAM_PORT="$(free_port "${UPSTREAM_PORT:-18000}")"
start upstream "$UPSTREAM_CPUS" "$TMP/upstream.log" "$PY" "$HERE/upstream.py" --port "$UPSTREAM_PORT"
UP_PID=$STARTED_PID
wait_http "http://127.0.0.1:$UPSTREAM_PORT/health" 10 "$UP_PID" upstream "$TMP/upstream.log" || exit 1
log "upstream on 127.0.0.1:$UPSTREAM_PORT pid=$UP_PID cpu=$UPSTREAM_CPUS"

DB_KIND=none
if [[ "$MODE" == full ]]; then
  DB_URL="${DATABASE_URL:-sqlite:///$TMP/gw.db}"
  DB_KIND="${DB_URL%%:*}"; DB_KIND="${DB_KIND%%+*}"
  GATEWAY_PORT="$(free_port "${GATEWAY_PORT:-8080}")"
  read -r -a EXTRA <<<"$EXTRA_ENV"
  GW_ENV=(GATEWAY_DATABASE_URL="$DB_URL" GATEWAY_POLICY_PATH="$HERE/policies.yaml"
          OPENAI_BASE_URL="http://127.0.0.1:$UPSTREAM_PORT/v1" OPENAI_API_KEY=sk-bench-upstream
          GATEWAY_LOG_LEVEL=warning "${EXTRA[@]+"${EXTRA[@]}"}")
  gw() {  # a one-shot gateway CLI command: its stdout's last non-empty line
    local o
    o="$(cd "$TMP" && timeout 60 env "${GW_ENV[@]}" "${GW[@]}" "$@" 2>"$TMP/cli.err")" \
      || { cat "$TMP/cli.err" >&2; die "'gateway $*' failed"; }
    printf '%s\n' "$o" | awk 'NF{l=$0} END{gsub(/^[ \t]+|[ \t]+$/, "", l); print l}'
  }
  if [[ -n "${DB_SETUP:-}" ]]; then
    log "DB_SETUP: $DB_SETUP"
    timeout 120 env "${GW_ENV[@]}" bash -c "$DB_SETUP" >&2 || die "DB_SETUP failed"
  fi
  ACCOUNT="$(gw accounts create --plan payg)"; [[ -n "$ACCOUNT" ]] || die "no account id printed"
  KEY="$(gw keys create "$ACCOUNT")"; [[ -n "$KEY" ]] || die "no API key printed"
  gw grant "$ACCOUNT" --minutes "$GRANT_MINUTES" --source gift >/dev/null
  log "account $ACCOUNT (key ${KEY:0:6}…), granted $GRANT_MINUTES min; db=$DB_KIND"
  SERVE=(serve --host 127.0.0.1 --port "$GATEWAY_PORT")
  [[ "$WORKERS" == 1 ]] || SERVE+=(--workers "$WORKERS")
  # cd: a relative sqlite path or stray files land in the temp dir, not the repo
  start gateway "$GATEWAY_CPUS" "$TMP/gateway.log" \
    bash -c 'cd "$1" && shift && exec "$@"' _ "$TMP" env "${GW_ENV[@]}" "${GW[@]}" "${SERVE[@]}"
  GW_PID=$STARTED_PID
  wait_http "http://127.0.0.1:$GATEWAY_PORT/healthz" 60 "$GW_PID" gateway "$TMP/gateway.log" || exit 1
  log "gateway on 127.0.0.1:$GATEWAY_PORT pid=$GW_PID cpu=$GATEWAY_CPUS workers=$WORKERS"
fi

COMMIT="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo none)"
BENCH_META="$("$PY" -c 'import json,sys; a=sys.argv[1:]; print(json.dumps({"run_id":a[0],"commit":a[1],"workers":int(a[2]),"db":a[3],"lat_d":int(a[4]),"load_d":int(a[5]),"cpus":int(a[6]),"gateway_cpus":a[7]}))' \
  "$RUN_ID" "$COMMIT" "$WORKERS" "$DB_KIND" "$LAT_D" "$LOAD_D" "$NCPU" "$GATEWAY_CPUS")"
export BENCH_META

# ---- measure -------------------------------------------------------------------
FAILED=()
measure() {  # TARGET ROUND
  local t="$1" r="$2"
  log "=== round $r: $t"
  if [[ "$t" == direct ]]; then
    API_KEY=sk-bench run_bg "$HERE/measure.sh" -u "http://127.0.0.1:$UPSTREAM_PORT/v1" -n direct \
      -o "$OUT" -r "$r" || FAILED+=("direct/r$r")
  else
    API_KEY="$KEY" run_bg "$HERE/measure.sh" -u "http://127.0.0.1:$GATEWAY_PORT/v1" -n gateway \
      -p "$GW_PID" -o "$OUT" -r "$r" || FAILED+=("gateway/r$r")
    if ! kill -0 "$GW_PID" 2>/dev/null; then
      echo "--- gateway died; last lines of its log:" >&2; tail -n 40 "$TMP/gateway.log" >&2
      FAILED+=("gateway-died"); return 1
    fi
  fi
}
for r in $(seq "$ROUNDS"); do
  if [[ "$MODE" == direct ]]; then order=(direct)
  elif (( r % 2 )); then order=(direct gateway)
  else order=(gateway direct)
  fi
  for t in "${order[@]}"; do measure "$t" "$r" || break 2; done
done

if [[ "$MODE" == full ]]; then  # proof that metering ran: the bench account's balance went down
  (cd "$TMP" && timeout 60 env "${GW_ENV[@]}" "${GW[@]}" balance "$ACCOUNT" 2>&1 | head -n 3 \
    | sed 's/^/# after the run: /' >&2) || true
fi
if [[ "$MODE" == full && -s "$TMP/gateway.log" ]]; then
  cp "$TMP/gateway.log" "$RES/$RUN_ID.gateway.log"
  n="$(grep -ciE 'error|traceback' "$TMP/gateway.log" || true)"
  [[ "$n" == 0 ]] || log "gateway log has $n error/traceback lines: $RES/$RUN_ID.gateway.log"
fi

# ---- report --------------------------------------------------------------------
[[ -s "$OUT" ]] || die "no results (failed: ${FAILED[*]-})"
{
  "$PY" "$HERE/report.py" "$OUT" --json-out "$RES/$RUN_ID.summary.jsonl"
} | tee "$RES/$RUN_ID.md"
{ echo; echo "## Details (summarize.py)"; echo; "$PY" "$HERE/summarize.py" "$OUT"; } >>"$RES/$RUN_ID.md"
log "raw: $OUT  figures: $RES/$RUN_ID.summary.jsonl  tables: $RES/$RUN_ID.md"
if [[ ${#FAILED[@]} -gt 0 ]]; then die "failed: ${FAILED[*]}"; fi
