#!/usr/bin/env bash
# Echo throughput with a broker process and without one (the front end
# hosting the dispatcher, monsoon-frontend --worker-endpoint), in alternating
# rounds on this machine, so that both see the same noise. Each round starts
# fresh processes on free ports: one echo worker with 8 async slots (as
# bench/quick.sh), a front end with one I/O thread and, in the broker
# topology, a broker; then wrk -t1 -c64 on POST /jobs/echo. Per round it
# prints requests/s, p50 and p99 (wrk --latency) and the CPU time the
# stack's processes spent per request (utime + stime from /proc, which moves
# less with the machine's other load than throughput does).
# Usage: bench/topologies.sh [BIN_DIR] [SECONDS] [ROUNDS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../build/bin}
seconds=${2:-10}
rounds=${3:-3}
command -v wrk >/dev/null || bash "$here/../scripts/install-deps.sh" wrk
ticks=$(getconf CLK_TCK)

pids=()
stop_stack() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap stop_stack EXIT

# CPU ticks (user + system) the stack's processes have used so far.
cpu_ticks() {
  local pid total=0 fields
  for pid in "${pids[@]}"; do
    read -ra fields < <(sed 's/^.*) //' "/proc/$pid/stat")
    # After "pid (comm) ": field 14 (utime) is index 11, stime index 12.
    total=$((total + fields[11] + fields[12]))
  done
  echo "$total"
}

# A TCP port on 127.0.0.1 that was free a moment ago.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# One round of TOPOLOGY (broker or brokerless): prints one result line.
round() {
  local topology=$1 port client worker url out before after requests up=false
  port=$(free_port)
  client="tcp://127.0.0.1:$(free_port)"
  worker="tcp://127.0.0.1:$(free_port)"
  url="http://127.0.0.1:$port"
  if [[ $topology == broker ]]; then
    "$bin/monsoon-broker" --client-endpoint "$client" --worker-endpoint "$worker" \
      --log-level warn & pids+=($!)
    "$bin/monsoon-frontend" --port "$port" --broker "$client" --log-level warn & pids+=($!)
  else
    "$bin/monsoon-frontend" --port "$port" --worker-endpoint "$worker" \
      --log-level warn & pids+=($!)
  fi
  "$bin/monsoon-worker" --broker "$worker" --tasks echo --async-concurrency 8 \
    --name echo --log-level warn & pids+=($!)
  for _ in $(seq 100); do
    curl -fsS -X POST "$url/jobs/echo" -d 1 >/dev/null 2>&1 && up=true && break
    sleep 0.1
  done
  if ! $up; then
    echo "the $topology stack did not answer an echo job in 10 s" >&2
    exit 1
  fi
  # One second of warm-up, not counted.
  wrk -t1 -c64 -d1s -s "$here/wrk/post_json.lua" "$url/jobs/echo" >/dev/null
  before=$(cpu_ticks)
  out=$(wrk -t1 -c64 -d"${seconds}s" --latency -s "$here/wrk/post_json.lua" \
    "$url/jobs/echo")
  after=$(cpu_ticks)
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  printf '%-10s %10s req/s  p50 %8s  p99 %8s  non-2xx %s  %s us CPU/request\n' \
    "$topology" "$(awk '/^Requests\/sec/ {print $2}' <<<"$out")" \
    "$(awk '$1 == "50%" {print $2}' <<<"$out")" \
    "$(awk '$1 == "99%" {print $2}' <<<"$out")" \
    "$(awk '/Non-2xx/ {print $NF; f=1} END {if (!f) print 0}' <<<"$out")" \
    "$(((after - before) * 1000000 / ticks / requests))"
  stop_stack
}

echo "\$ wrk -t1 -c64 -d${seconds}s --latency -s bench/wrk/post_json.lua URL/jobs/echo"
for r in $(seq "$rounds"); do
  echo "-- round $r of $rounds"
  round broker
  round brokerless
done
