#!/usr/bin/env bash
# The pipeline's two headline figures, measured with wrk on this machine:
#   1. POST /jobs/echo end to end, 64 keep-alive connections;
#   2. GET /now latency while 1,000 `sleep 2000` jobs are in flight.
# Starts its own stack from BIN_DIR on free ports and stops it by PID.
# Usage: bench/quick.sh [BIN_DIR] [SECONDS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../build/bin}
seconds=${2:-10}
command -v wrk >/dev/null || bash "$here/../scripts/install-deps.sh" wrk
ulimit -n "$(ulimit -Hn)"

port=$((10000 + RANDOM % 20000))
client="tcp://127.0.0.1:$((port + 1))"
worker="tcp://127.0.0.1:$((port + 2))"
slow_log=$(mktemp)
pids=()
cleanup() {
  # Front end first: with the broker gone first it would wait to re-send.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -f "$slow_log"
}
trap cleanup EXIT

"$bin/monsoon-broker" --client-endpoint "$client" --worker-endpoint "$worker" \
  --log-level warn & pids+=($!)
# Like celery -Q: one worker for fast jobs, two for slow ones. Slots bound the
# jobs a worker has in flight (no prefetch), so even no-op jobs need a few per
# core to hide the round trip. echo and sleep are async tasks: their slots
# cost no thread.
"$bin/monsoon-worker" --broker "$worker" --tasks echo --async-concurrency 8 \
  --name fast --log-level warn & pids+=($!)
for i in 1 2; do
  "$bin/monsoon-worker" --broker "$worker" --tasks sleep --async-concurrency 500 \
    --name "slow-$i" --log-level warn & pids+=($!)
done
"$bin/monsoon-frontend" --port "$port" --broker "$client" --max-connections 20000 \
  --log-level warn & pids+=($!)
url="http://127.0.0.1:$port"
for _ in $(seq 100); do
  curl -fsS -X POST "$url/jobs/echo" -d 1 >/dev/null 2>&1 && break
  sleep 0.1
done

echo "== 1. POST /jobs/echo, 64 connections, ${seconds}s"
echo "\$ wrk -t1 -c64 -d${seconds}s --latency -s bench/wrk/post_json.lua $url/jobs/echo"
wrk -t1 -c64 -d"${seconds}s" --latency -s "$here/wrk/post_json.lua" "$url/jobs/echo"

echo
echo "== 2. GET /now while 1000 'sleep 2000' jobs are in flight"
echo "\$ wrk -t1 -c1000 -d$((seconds + 4))s -s bench/wrk/post_json.lua $url/jobs/sleep -- '{\"ms\": 2000}' &"
wrk -t1 -c1000 -d"$((seconds + 4))s" --timeout 10s -s "$here/wrk/post_json.lua" \
  "$url/jobs/sleep" -- '{"ms": 2000}' > "$slow_log" &
slow=$!
for _ in $(seq 100); do
  pending=$(curl -fsS "$url/healthz" | sed -n 's/.*"pending":\([0-9]*\).*/\1/p')
  [[ "${pending:-0}" -ge 1000 ]] && break
  sleep 0.1
done
echo "pending jobs before measuring: $pending"
echo "\$ wrk -t1 -c8 -d${seconds}s --latency $url/now"
wrk -t1 -c8 -d"${seconds}s" --latency "$url/now"
wait "$slow"
echo "-- the slow load itself:"
cat "$slow_log"
