#!/usr/bin/env bash
# Benchmark one OpenAI-compatible gateway (or the upstream itself) at BASE_URL.
# (Copied from shared/bench/run.sh; bench/run.sh drives it once per target and round.
#  Changes: shorter default WARM_D/STREAM_D, BENCH_META merged into every line.)
#
#   ./measure.sh -u http://127.0.0.1:8080/v1 -n gateway [-m MODEL] [-H "Name: value"]...
#            [-p GATEWAY_PID] [-o results/out.jsonl] [-r ROUND]
#
# Tests (every one bounded in time and/or count):
#   preflight   one non-streaming + one streaming request, validated (usage, [DONE])
#   warmup      wrk, LOAD_C connections, WARM_D s (discarded)
#   lat_c1      wrk, 1 connection,  LAT_D s   -> per-request latency without queueing
#   load_c16    wrk, LOAD_C conns,  LOAD_D s  -> throughput + latency under load
#   stream_c1   httpx client, streamed requests 1 at a time -> TTFB / total
#   stream_c16  raw client,   streamed requests STREAM_LOAD_C at a time
#               (each: STREAM_N / STREAM_LOAD_N requests or STREAM_D s, whichever first)
#   stream_paced httpx client, PACED_N streams of model "$MODEL-paced" (upstream waits
#               5 ms between chunks): TTFB must stay far below total, else the
#               gateway buffers the stream
# Each test appends one JSON line to the output file (and prints it).
# Load generators run pinned to LOADGEN_CPUS (default: CPU 0) with taskset.
# With -p, the CPU time of that PID and its descendants is recorded per test.
# `timeout --foreground`: the load generators stay in this script's process group, so stopping
# the group (run.sh / suite.sh on exit or Ctrl-C) stops them too.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

BASE=""; NAME="target"; MODEL="${MODEL:-fake-model}"; PID=""; OUT=""; ROUND="${ROUND:-0}"
HEADERS=()
while getopts "u:n:m:H:p:o:r:h" opt; do
  case $opt in
    u) BASE="${OPTARG%/}" ;; n) NAME="$OPTARG" ;; m) MODEL="$OPTARG" ;;
    H) HEADERS+=("$OPTARG") ;; p) PID="$OPTARG" ;; o) OUT="$OPTARG" ;; r) ROUND="$OPTARG" ;;
    *) awk 'NR>1 && /^set -euo/{exit} NR>1' "$0"; exit 2 ;;
  esac
done
[[ -n "$BASE" ]] || { awk 'NR>1 && /^set -euo/{exit} NR>1' "$0"; exit 2; }
case "$BASE" in
  http://127.0.0.1:*|http://localhost:*|http://\[::1\]:*) ;;
  *) echo "refusing non-loopback target: $BASE" >&2; exit 2 ;;
esac

PY="${PY:-python3}"
LOADGEN_CPUS="${LOADGEN_CPUS:-0}"
LAT_D="${LAT_D:-10}"; LOAD_C="${LOAD_C:-16}"; LOAD_D="${LOAD_D:-20}"; WARM_D="${WARM_D:-2}"
STREAM_N="${STREAM_N:-2000}"; STREAM_LOAD_N="${STREAM_LOAD_N:-20000}"; STREAM_LOAD_C="${STREAM_LOAD_C:-16}"
STREAM_D="${STREAM_D:-5}"   # each streaming test stops after STREAM_N requests or STREAM_D s, whichever first
STREAM_DEADLINE="${STREAM_DEADLINE:-90}"
STREAM_ENGINE="${STREAM_ENGINE:-httpx}"; STREAM_LOAD_ENGINE="${STREAM_LOAD_ENGINE:-raw}"
PACED_N="${PACED_N:-30}"; PACED_MODEL="${PACED_MODEL:-$MODEL-paced}"
SKIP="${SKIP:-}"   # e.g. SKIP="stream_c16 lat_c1"
OUT="${OUT:-$HERE/results/$(date +%Y%m%d-%H%M%S)-$NAME.jsonl}"
mkdir -p "$(dirname "$OUT")"
TMP="$(mktemp -d /tmp/benchrun.XXXXXX)"
trap 'rm -rf "$TMP"' EXIT

URL="$BASE/chat/completions"
BODY_FILE="${BODY_FILE:-$TMP/body.json}"
if [[ ! -s "$BODY_FILE" ]]; then
  cat > "$BODY_FILE" <<EOF
{"model":"$MODEL","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write one short sentence about benchmarking reverse proxies for LLM APIs."}],"max_tokens":64,"temperature":0.7}
EOF
fi
export BODY_FILE

WRK_H=(); CURL_H=(); PY_H=()
for h in "${HEADERS[@]+"${HEADERS[@]}"}"; do WRK_H+=(-H "$h"); CURL_H+=(-H "$h"); PY_H+=(-H "$h"); done
PIN=(taskset -c "$LOADGEN_CPUS")

emit() {  # emit TEST JSON_METRICS [CPU_JSON]
  local cpu="${3:-}"; [[ -n "$cpu" ]] || cpu='{}'
  "$PY" - "$NAME" "$ROUND" "$1" "$2" "$cpu" "$BASE" "${BENCH_META:-}" <<'EOF' | tee -a "$OUT"
import json, sys
name, rnd, test, m, cpu, base, meta = sys.argv[1:8]
d = {"target": name, "round": int(rnd), "test": test, "base": base}
d.update(json.loads(m)); d.update(json.loads(cpu))
if meta:
    d.update({k: v for k, v in json.loads(meta).items() if k not in d})
print(json.dumps(d))
EOF
}

snap() { "$PY" "$HERE/procstat.py" snap "$PID" > "$1"; }

# ---- preflight -------------------------------------------------------------
echo "# preflight $NAME -> $URL" >&2
resp="$(curl -sS -m 10 -X POST "$URL" -H 'content-type: application/json' \
        -H "authorization: Bearer ${API_KEY:-sk-bench}" "${CURL_H[@]+"${CURL_H[@]}"}" --data-binary @"$BODY_FILE")" \
  || { echo "preflight: request failed" >&2; exit 1; }
echo "$resp" | "$PY" -c '
import json, sys
r = json.load(sys.stdin)
u = r.get("usage") or {}
assert r["choices"][0]["message"]["content"], "no content"
assert u.get("total_tokens"), "no usage.total_tokens"
print("# preflight non-stream ok: usage=%s" % json.dumps(u), file=sys.stderr)
' || { echo "preflight: bad non-streaming response: ${resp:0:400}" >&2; exit 1; }
pf="$(timeout --foreground 30 "${PIN[@]}" "$PY" "$HERE/stream_client.py" --base "$BASE" --model "$MODEL" \
      --n 1 --warmup 0 --deadline 20 "${PY_H[@]+"${PY_H[@]}"}" --body-file "$BODY_FILE" | grep '^STREAMJSON' | cut -d' ' -f2-)"
echo "$pf" | "$PY" -c '
import json, sys
r = json.load(sys.stdin)
assert r["n_ok"] == 1 and r["done_frac"] == 1 and r["usage_frac"] == 1, r
print("# preflight stream ok: events=%s usage+[DONE] seen" % r["events_per_stream"], file=sys.stderr)
' || { echo "preflight: bad streaming response: $pf" >&2; exit 1; }

# ---- wrk tests ---------------------------------------------------------------
wrk_test() {  # TEST CONNS SECS
  local test="$1" c="$2" d="$3" raw j
  snap "$TMP/a.json"
  raw="$(timeout --foreground $((d + 20)) "${PIN[@]}" wrk -t1 -c"$c" -d"${d}s" --timeout 10s \
         -s "$HERE/post.lua" "${WRK_H[@]+"${WRK_H[@]}"}" "$URL" 2>&1)" || true
  snap "$TMP/b.json"
  j="$(echo "$raw" | grep '^WRKJSON' | cut -d' ' -f2-)"
  if [[ -z "$j" ]]; then echo "wrk failed: $raw" >&2; return 1; fi
  local reqs; reqs="$(echo "$j" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["requests"])')"
  emit "$test" "$j" "$("$PY" "$HERE/procstat.py" diff "$TMP/a.json" "$TMP/b.json" "$reqs")"
}

skip() { [[ " $SKIP " == *" $1 "* ]]; }

echo "# warmup ${WARM_D}s c=$LOAD_C" >&2
timeout --foreground $((WARM_D + 20)) "${PIN[@]}" wrk -t1 -c"$LOAD_C" -d"${WARM_D}s" --timeout 10s \
  -s "$HERE/post.lua" "${WRK_H[@]+"${WRK_H[@]}"}" "$URL" >/dev/null 2>&1 || true

skip lat_c1   || wrk_test lat_c1 1 "$LAT_D"
skip load_c16 || wrk_test "load_c$LOAD_C" "$LOAD_C" "$LOAD_D"

# ---- streaming tests -------------------------------------------------------
stream_test() {  # TEST N C ENGINE DURATION [MODEL]
  local test="$1" n="$2" c="$3" eng="$4" dur="$5" model="${6:-$MODEL}" j
  j="$(timeout --foreground $((STREAM_DEADLINE + 30)) "${PIN[@]}" "$PY" "$HERE/stream_client.py" --base "$BASE" \
        --model "$model" --n "$n" -c "$c" --warmup $((c * 5)) --deadline "$STREAM_DEADLINE" --engine "$eng" --cpu-pid "${PID:-0}" --duration "$dur" \
        "${PY_H[@]+"${PY_H[@]}"}" --body-file "$BODY_FILE" | grep '^STREAMJSON' | cut -d' ' -f2-)" || true
  if [[ -z "$j" ]]; then echo "stream client failed" >&2; return 1; fi
  emit "$test" "$j"
}
skip stream_c1  || stream_test stream_c1 "$STREAM_N" 1 "$STREAM_ENGINE" "$STREAM_D"
skip stream_c16 || stream_test "stream_c$STREAM_LOAD_C" "$STREAM_LOAD_N" "$STREAM_LOAD_C" "$STREAM_LOAD_ENGINE" "$STREAM_D"
skip stream_paced || stream_test stream_paced "$PACED_N" 1 "$STREAM_ENGINE" 0 "$PACED_MODEL"
echo "# results appended to $OUT" >&2
