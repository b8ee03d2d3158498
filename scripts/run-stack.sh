#!/usr/bin/env bash
# Runs a whole Monsoon stack on 127.0.0.1 (broker, a worker pool, front end)
# until Ctrl-C or SIGTERM, then stops every process it started, by PID.
# Usage: run-stack.sh BIN_DIR [PORT] [WORKERS] [CONCURRENCY]
set -euo pipefail

bin=${1:?usage: run-stack.sh BIN_DIR [PORT] [WORKERS] [CONCURRENCY]}
port=${2:-8000}
workers=${3:-2}
concurrency=${4:-$(nproc)}
state=${MONSOON_STATE_DIR:-$(dirname "$bin")/run}
client_endpoint=${MONSOON_CLIENT_ENDPOINT:-tcp://127.0.0.1:5555}
worker_endpoint=${MONSOON_WORKER_ENDPOINT:-tcp://127.0.0.1:5556}
mkdir -p "$state"

pids=()
# Each process in its own session: Ctrl-C in the terminal signals this script
# alone, which then stops the processes with one SIGTERM each (a second stop
# signal would make them exit at once, without finishing their jobs).
start() {
  setsid "$@" &
  pids+=($!)
}
# SIGTERM to `pids`, then up to 10 s for them to finish what they hold.
terminate() {
  kill -TERM "$@" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$@" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$@" 2>/dev/null || true
}
stop() {
  trap - INT TERM EXIT
  if [[ ${#pids[@]} -gt 0 ]]; then
    echo
    echo "Stopping Monsoon (pids ${pids[*]})..."
    # The front end first (it answers what is pending while the broker is
    # still there), then the workers and the broker.
    terminate "${pids[-1]}"
    terminate "${pids[@]:0:${#pids[@]}-1}"
    wait 2>/dev/null || true
  fi
}
trap stop EXIT
trap 'exit 0' INT TERM

start "$bin/monsoon-broker" --client-endpoint "$client_endpoint" \
  --worker-endpoint "$worker_endpoint"
for i in $(seq "$workers"); do
  start "$bin/monsoon-worker" --broker "$worker_endpoint" --concurrency "$concurrency" \
    --name "worker-$i@$(hostname)" --db-path "$state/demo.sqlite3"
done
# Last: stop() relies on the front end being the last pid.
start "$bin/monsoon-frontend" --host 127.0.0.1 --port "$port" --broker "$client_endpoint"

url="http://127.0.0.1:$port"
for _ in $(seq 100); do
  curl -fsS "$url/healthz" >/dev/null 2>&1 && break
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "a Monsoon process exited during start-up; see the log above" >&2; exit 1; }
  done
  sleep 0.1
done

cat <<EOT

Monsoon is running at $url  ($workers workers x $concurrency slots; Ctrl-C stops it)

  curl $url/now
  curl -X POST $url/jobs/echo -H 'Content-Type: application/json' -d '{"hello": "monsoon"}'
  curl $url/query/3

EOT
# Ctrl-C reaches every process of the foreground group: each stops cleanly
# (exit 0) and this script then stops whatever is left. Any other exit is a
# failure worth reporting.
status=0
wait -n "${pids[@]}" || status=$?
[[ $status -eq 0 ]] && exit 0
echo "A Monsoon process exited with status $status; stopping the rest." >&2
exit 1
