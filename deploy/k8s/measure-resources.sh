#!/usr/bin/env bash
# Measures what the resource requests in deploy/k8s are sized from: each process's resident memory
# (VmRSS now, VmHWM = peak) and CPU time, idle and under a light load, against a scratch database
# and a Redis namespace of its own (both removed at the end).
#
#   deploy/k8s/measure-resources.sh [BIN_DIR]     (default: target/release, built if missing)
#
# Needs Postgres and Redis at DATABASE_URL / REDIS_URL (scripts/dev's defaults). Load: SUBSCRIBERS
# (default 5000) emails of one weekly run through the outbox with no send-rate limit, and
# REQUESTS (default 3000) API requests, 8 at a time, while the run goes on.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"
cd "$ROOT"

BIN_DIR="${1:-target/release}"
SUBSCRIBERS="${SUBSCRIBERS:-5000}"
REQUESTS="${REQUESTS:-3000}"
IDLE_SECS="${IDLE_SECS:-30}"
if [[ ! -x "$BIN_DIR/levelup-worker" ]]; then
  say "building release binaries"
  cargo build --locked --release --bins
fi

SCRATCH="levelup_measure_$$"
BASE_URL="${DATABASE_URL%/*}"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if command -v redis-cli >/dev/null; then
    redis-cli -u "$REDIS_URL" --scan --pattern "k8s-measure-$$*" | xargs -r redis-cli -u "$REDIS_URL" del >/dev/null
  fi
  psql "$BASE_URL/postgres" -qc "DROP DATABASE IF EXISTS $SCRATCH WITH (FORCE)" >/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
API_PORT="$(free_port)"
export DATABASE_URL="$BASE_URL/$SCRATCH" LEVELUP_REDIS_NAMESPACE="k8s-measure-$$" LEVELUP_LOG=warn \
  LEVELUP_API_BIND="127.0.0.1:$API_PORT" LEVELUP_MAIL_TRANSPORT=outbox LEVELUP_OUTBOX_DIR="$WORK/outbox" \
  LEVELUP_SES_MAX_SEND_RATE=0 LEVELUP_ADMIN_API_KEY=measure-admin-key-0123456789 \
  LEVELUP_TOKEN_KEYS=k1:measure-token-signing-key-0123456789abcdef LEVELUP_API_RATE_PER_SECOND=100000 \
  LEVELUP_API_BURST=100000 LEVELUP_SCHEDULE_CRON="0 0 9 1 1 *"
# (A yearly schedule, so the scheduler does not catch up this week's run by itself while idle.)
WEEK="$(date -u +%G-W%V)"

"$BIN_DIR/levelup-api" migrate >/dev/null
"$BIN_DIR/levelup-api" seed-demo >/dev/null
psql "$DATABASE_URL" -qc "INSERT INTO subscribers (email) SELECT 'measure' || g || '@example.com' FROM generate_series(1, $SUBSCRIBERS) g" >/dev/null

start() { # name, command...
  local name="$1"; shift
  LEVELUP_METRICS_BIND="127.0.0.1:$(free_port)" "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=("$!"); eval "PID_$name=$!"
}
start api "$BIN_DIR/levelup-api" serve
start worker "$BIN_DIR/levelup-worker"
start scheduler "$BIN_DIR/levelup-scheduler" run
wait_until 30 "the API" curl -fsS "http://127.0.0.1:$API_PORT/readyz"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }
HZ="$(getconf CLK_TCK)"
declare -A T0
snapshot_cpu() { for p in api worker scheduler; do T0[$p]="$(ticks "$(eval echo \$PID_$p)")"; done; }
report() { # phase, seconds
  for p in api worker scheduler; do
    local pid; pid="$(eval echo \$PID_$p)"
    printf '%-6s %-9s RSS %6d KiB  peak %6d KiB  CPU %6.3f cores (%.2f s over %d s)\n' "$1" "$p" \
      "$(kib "$pid" VmRSS)" "$(kib "$pid" VmHWM)" \
      "$(echo "($(ticks "$pid") - ${T0[$p]}) / $HZ / $2" | bc -l)" \
      "$(echo "($(ticks "$pid") - ${T0[$p]}) / $HZ" | bc -l)" "$2"
  done
}

say "idle for $IDLE_SECS s"
snapshot_cpu; sleep "$IDLE_SECS"; report idle "$IDLE_SECS"

say "load: a weekly run of $SUBSCRIBERS + 12 subscribers, $REQUESTS API requests"
snapshot_cpu; START=$SECONDS
"$BIN_DIR/levelup-scheduler" trigger "$WEEK" >/dev/null
seq "$REQUESTS" | xargs -P 8 -I{} sh -c '
  case $(({} % 3)) in
    0) curl -fsS -o /dev/null "$0/readyz" ;;
    1) curl -fsS -o /dev/null "$0/v1/admin/runs/$2" -H "Authorization: Bearer $1" ;;
    2) curl -fsS -o /dev/null "$0/healthz" ;;
  esac' "http://127.0.0.1:$API_PORT" "$LEVELUP_ADMIN_API_KEY" "$WEEK"
run_completed() { [[ "$(psql "$DATABASE_URL" -tAc "SELECT status FROM weekly_runs WHERE week = '$WEEK'")" == completed ]]; }
wait_until 600 "the run to complete" run_completed
report load "$((SECONDS - START))"
echo "load: $(ls "$WORK/outbox" | wc -l) emails in $((SECONDS - START)) s; $REQUESTS requests"
