# Shell helpers shared by bench/run.sh and bench/suite.sh (sourced, not run).
# Processes started with `start` or `run_bg` run in their own process group and are recorded
# in PIDS; `cleanup` (installed by `install_cleanup`) stops every group still recorded on exit,
# Ctrl-C or failure, then runs the caller's `on_exit` hook if it defines one.

log() { echo "# $*" >&2; }
die() { echo "bench: $*" >&2; exit 1; }

PIDS=()
cleanup() {
  local rc=$? pid
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do
    for _ in $(seq 50); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  if declare -F on_exit >/dev/null; then on_exit || true; fi
  exit "$rc"
}
install_cleanup() {
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

forget_pid() {  # PID: no longer ours to stop (it ended)
  local p keep=()
  for p in "${PIDS[@]+"${PIDS[@]}"}"; do [[ "$p" == "$1" ]] || keep+=("$p"); done
  PIDS=("${keep[@]+"${keep[@]}"}")
}

stop_group() {  # PID [SECONDS]: TERM its process group, wait (graceful shutdown), then KILL
  local pid="$1" secs="${2:-15}"
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq $((secs * 10))); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  forget_pid "$pid"
}

free_port() {  # the wanted port if nothing listens on it, else any free one
  "$PY" - "$1" <<'PYEOF'
import socket, sys
want = int(sys.argv[1])
for port in (want, 0):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        print(s.getsockname()[1]); break
    except OSError:
        pass
    finally:
        s.close()
PYEOF
}

wait_http() {  # URL SECONDS PID NAME LOG: 0 once URL answers 2xx; else 1, with the log's tail
  local url="$1" secs="$2" pid="$3" name="$4" logf="$5"
  for _ in $(seq $((secs * 10))); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "--- $name exited; last lines of its log:" >&2; tail -n 40 "$logf" >&2
      echo "bench: $name did not start" >&2; return 1
    fi
    curl -sf -m 1 -o /dev/null "$url" && return 0
    sleep 0.1
  done
  echo "--- last lines of the $name log:" >&2; tail -n 40 "$logf" >&2
  echo "bench: $name not healthy at $url after ${secs}s" >&2; return 1
}

start() {  # NAME CPUS LOG CMD... -> sets STARTED_PID; own process group, so cleanup gets children
  local name="$1" cpus="$2" logf="$3"; shift 3
  setsid taskset -c "$cpus" "$@" >"$logf" 2>&1 </dev/null &
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
}

run_bg() {  # CMD... : in its own process group (so cleanup can stop it and its wrk at once),
  local pid rc=0  # waited for in the background so INT/TERM traps act at once
  setsid "$@" >&2 </dev/null &
  pid=$!; PIDS+=("$pid")
  wait "$pid" || rc=$?
  forget_pid "$pid"
  return "$rc"
}

bench_venv() {  # make sure $BENCH_VENV has the upstream's and clients' packages; sets PY
  PY="$BENCH_VENV/bin/python"
  if ! "$PY" -c 'import httpx, httptools, uvloop, orjson' 2>/dev/null; then
    log "setting up $BENCH_VENV (httpx httptools uvloop orjson)"
    [[ -x "$PY" ]] || python3 -m venv "$BENCH_VENV" \
      || die "cannot create $BENCH_VENV (apt-get install -y python3-venv ?)"
    timeout 300 "$BENCH_VENV/bin/pip" install -q httpx httptools uvloop orjson >&2 \
      || die "pip install into $BENCH_VENV failed"
    "$PY" -c 'import httpx, httptools, uvloop, orjson' || die "$BENCH_VENV is unusable"
  fi
  export PY
}

need() {  # TOOL PACKAGE: stop with an install hint when a command is missing
  command -v "$1" >/dev/null || die "$1 not found. Install it:  apt-get update && apt-get install -y $2"
}
