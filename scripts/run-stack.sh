#!/usr/bin/env bash
# Runs a whole Monsoon stack on 127.0.0.1 (broker, a worker pool, front end)
# until a stop signal, then stops every process it started, by PID, and exits
# only when none of them is left. TOPOLOGY brokerless runs no broker: the
# front end hosts the dispatcher (--worker-endpoint) and the workers connect
# to it (README, "Topologies").
# Usage: run-stack.sh BIN_DIR [PORT] [WORKERS] [CONCURRENCY] [TOPOLOGY]
#
# How it stops (the README's "Quick start" says the same):
# - The first SIGINT (Ctrl-C), SIGTERM or SIGHUP drains the stack: SIGTERM to
#   the front end, which answers what is pending while the broker and the
#   workers are still there; then SIGTERM to the workers, which finish their
#   jobs (up to their --drain-timeout-ms), and the broker (brokerless: the
#   front end's dispatcher stops with it, once it answered). Whatever is still
#   running $stop_timeout seconds after its SIGTERM gets SIGKILL.
# - A SIGINT while stopping (a second Ctrl-C) SIGKILLs every process left.
# - More SIGTERMs and SIGHUPs change nothing: one request to stop often comes
#   several times. GNU make forwards the SIGTERM it gets to this script, so
#   `kill -TERM -- -PGID` of `make run` (systemd, timeout, CI runners,
#   container runtimes) arrives here twice; closing a terminal sends SIGHUP
#   from the kernel and from the shell. SIGINT is the one that escalates.
# - A process that exits on its own stops the rest the same way (exit 1).
# - If this script is killed (SIGKILL), the kernel sends each process SIGTERM
#   (PR_SET_PDEATHSIG, set by setpriv before it runs the program), and each
#   stops on its own, all at once; one already stopping exits at once. (One
#   being started at that very instant may miss it: setpriv cannot check.)
# After a stop signal the script ends by that same signal (the trap reset), as
# a program without handlers would, so its caller sees how it ended.
set -uo pipefail

bin=${1:?usage: run-stack.sh BIN_DIR [PORT] [WORKERS] [CONCURRENCY] [TOPOLOGY]}
port=${2:-8000}
workers=${3:-2}
concurrency=${4:-$(nproc)}
topology=${5:-broker}
if [[ $topology != broker && $topology != brokerless ]]; then
  printf 'TOPOLOGY is broker or brokerless, not %s\n' "$topology" >&2
  exit 2
fi
state=${MONSOON_STATE_DIR:-$(dirname "$bin")/run}
client_endpoint=${MONSOON_CLIENT_ENDPOINT:-tcp://127.0.0.1:5555}
worker_endpoint=${MONSOON_WORKER_ENDPOINT:-tcp://127.0.0.1:5556}
# Every process reads MONSOON_<OPTION> variables (README, "Configuration"):
# these two would also reach the front end, for which MONSOON_WORKER_ENDPOINT
# means hosting the dispatcher. They are given as flags below instead.
unset MONSOON_CLIENT_ENDPOINT MONSOON_WORKER_ENDPOINT
# A worker drains for up to 10 s (--drain-timeout-ms), then gives cancelled
# tasks 5 s more: SIGKILL only after both.
stop_timeout=17
mkdir -p "$state" || exit 1

# Writing to a closed terminal (after SIGHUP) or to a pipe whose reader is
# gone (`make run | tee log`, and Ctrl-C ended tee) must not end the script
# before it has stopped the stack: SIGPIPE is ignored, and messages ignore
# write errors.
trap '' PIPE
say() { printf '%s\n' "$@" 2>/dev/null || true; }
warn() { printf '%s\n' "$@" >&2 2>/dev/null || true; }

# The script never blocks in `wait`: bash 5.2 can lose the status of a child
# that exits just as a trapped signal interrupts `wait`, and then waits
# forever. It polls instead: `read -t` on a pipe nobody writes to is a sleep
# without a child process, and bash reaps its children on its own, so a PID
# that `kill -0` no longer finds has exited (and `wait PID` returns at once).
exec {never}<> <(:)
pause() { read -r -t "$1" -u "$never" _; }

pids=()               # every process started, in order (the front end last)
declare -A what=()    # pid -> program name, for messages
declare -A status=()  # pid -> exit status, once it exited
frontend=
stop_signal=          # the first stop signal, once one came
stopping=             # set once the stop began, for whatever reason

# Each process in its own session: Ctrl-C in the terminal signals make and
# this script only, and each process gets exactly one SIGTERM from stop()
# (a second stop signal makes a Monsoon process exit at once, without
# finishing its jobs). setpriv --pdeathsig: see above.
start() {
  setsid setpriv --pdeathsig TERM -- "$@" {never}<&- &
  pids+=($!)
  what[$!]=${1##*/}
}

# Records the exit status of the processes that exited. A process is
# signalled only while it has none, so not once bash reaped it and its PID
# may belong to another process.
reap() {
  local pid code
  for pid in "${pids[@]}"; do
    [[ -v "status[$pid]" ]] && continue
    kill -0 "$pid" 2>/dev/null && continue
    wait "$pid" 2>/dev/null
    code=$?
    # A trap (a second Ctrl-C) may have recorded it meanwhile.
    [[ -v "status[$pid]" ]] || status[$pid]=$code
  done
}

# Sets the array named $1 to those of the PIDs that follow (all by default)
# with no exit status.
find_alive() {
  local -n alive_out=$1
  shift
  (($#)) || set -- "${pids[@]}"
  alive_out=()
  local pid
  for pid in "$@"; do
    [[ -v "status[$pid]" ]] || alive_out+=("$pid")
  done
}

# Traps only take note, except that a second Ctrl-C kills at once; the main
# flow and stop() poll stop_signal.
on_signal() {
  local alive
  if [[ -z $stop_signal && -z $stopping ]]; then
    stop_signal=$1
  elif [[ $1 == INT ]]; then
    reap
    find_alive alive
    if [[ ${#alive[@]} -gt 0 ]]; then
      say "Second Ctrl-C: killing Monsoon (pids ${alive[*]})..."
      kill -KILL "${alive[@]}" 2>/dev/null
    fi
  fi
}
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'on_signal HUP' HUP

# SIGTERM to the given processes, and SIGKILL to those still running
# $stop_timeout seconds later; returns when none of them is left.
stop_group() {
  local deadline=$((SECONDS + stop_timeout)) killed=false alive
  reap
  find_alive alive "$@"
  [[ ${#alive[@]} -gt 0 ]] && kill -TERM "${alive[@]}" 2>/dev/null
  while [[ ${#alive[@]} -gt 0 ]]; do
    if ! $killed && ((SECONDS >= deadline)); then
      warn "Still running ${stop_timeout} s after SIGTERM: killing pids ${alive[*]}."
      kill -KILL "${alive[@]}" 2>/dev/null
      killed=true
    fi
    pause 0.05
    reap
    find_alive alive "$@"
  done
}

# The front end first (it answers what is pending while the broker is still
# there), then the workers (their last DONEs still reach the broker), then
# the broker (the first process started) and whatever else is left.
# Brokerless, the front end is the first process started, and the workers
# follow it.
stop() {
  local alive
  reap
  find_alive alive
  [[ ${#alive[@]} -eq 0 ]] && return
  say "" "Stopping Monsoon (pids ${alive[*]})..."
  [[ -n $frontend ]] && stop_group "$frontend"
  ((${#pids[@]} > 1)) && stop_group "${pids[@]:1}"
  stop_group "${pids[@]}"
}

finish() {
  local code=$?
  stopping=1
  stop
  if [[ -n $stop_signal ]]; then
    trap - "$stop_signal"
    kill -s "$stop_signal" $$
  fi
  exit "$code"
}
trap finish EXIT

start_workers() {
  local i
  for i in $(seq "$workers"); do
    [[ -n $stop_signal ]] && exit 0
    start "$bin/monsoon-worker" --broker "$worker_endpoint" --concurrency "$concurrency" \
      --name "worker-$i@$(hostname)" --db-path "$state/demo.sqlite3"
  done
  if [[ -n $stop_signal ]]; then exit 0; fi
}

if [[ $topology == broker ]]; then
  start "$bin/monsoon-broker" --client-endpoint "$client_endpoint" \
    --worker-endpoint "$worker_endpoint"
  start_workers
  start "$bin/monsoon-frontend" --host 127.0.0.1 --port "$port" --broker "$client_endpoint"
  frontend=${pids[-1]}
  shape="$workers workers x $concurrency slots"
else
  start "$bin/monsoon-frontend" --host 127.0.0.1 --port "$port" \
    --worker-endpoint "$worker_endpoint"
  frontend=${pids[-1]}
  start_workers
  shape="brokerless: $workers workers x $concurrency slots on $worker_endpoint"
fi

# A process that exited names itself and ends the script (which stops the rest).
check_running() {
  reap
  [[ ${#status[@]} -eq 0 ]] && return
  local pid
  for pid in "${pids[@]}"; do
    [[ -v "status[$pid]" ]] &&
      warn "${what[$pid]} (pid $pid) exited with status ${status[$pid]} $1; stopping the rest."
  done
  exit 1
}

url="http://127.0.0.1:$port"
deadline=$((SECONDS + 10))
while [[ -z $stop_signal ]] && ((SECONDS < deadline)); do
  curl -fsS --max-time 1 "$url/healthz" >/dev/null 2>&1 && break
  check_running "during start-up (see the log above)"
  pause 0.1
done

[[ -n $stop_signal ]] || say "" \
  "Monsoon is running at $url  ($shape; Ctrl-C stops it)" \
  "" \
  "  curl $url/now" \
  "  curl -X POST $url/jobs/echo -H 'Content-Type: application/json' -d '{\"hello\": \"monsoon\"}'" \
  "  curl $url/query/3" \
  ""

# Until a stop signal, or a process exits on its own. When make leads the
# session (`ssh -t host make run`, `tmux new make run`) closing the terminal
# sends SIGHUP to make alone, which does not pass it on: the terminal going
# away (/dev/tty no longer opens) counts as that SIGHUP.
{ : </dev/tty; } 2>/dev/null && had_tty=true || had_tty=false
while [[ -z $stop_signal ]]; do
  check_running "on its own"
  if $had_tty && ! { : </dev/tty; } 2>/dev/null; then
    on_signal HUP
    break
  fi
  pause 0.2
done
exit 0
