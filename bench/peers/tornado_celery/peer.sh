#!/usr/bin/env bash
# The Tornado + Celery + RabbitMQ peer of Monsoon's benchmark (see README.md).
#
#   peer.sh start <state_dir> <http_port> [--pool threads|prefork|solo]
#       [--concurrency N] [--workers N] [--slow-concurrency N] [--prefetch N]
#       [--delivery transient|persistent] [--loop asyncio|uvloop]
#   peer.sh stop <state_dir>      stops only the processes `start` recorded
#   peer.sh pids <state_dir>      their PIDs and their live descendants
#   peer.sh versions              the versions the peer runs
#   peer.sh deps                  installs its Debian packages if missing
#
# Defaults: --pool threads --concurrency 100 (prefork: the number of cores)
# --workers 1 --prefetch 0 (worker_prefetch_multiplier; 0 = no limit)
# --slow-concurrency 0 (N > 0: `sleep` jobs get their own queue and one more
# worker, a threads pool of N; the other workers serve the rest)
# --delivery transient --loop asyncio. Must run as root (RabbitMQ runs as
# user rabbitmq). The HTTP port is the caller's; every other port is a free
# one picked at start and written to <state_dir>/ports.
#
# `start` runs, each in its own session (process group) and as a child of no
# shell that outlives it:
#   1. a private epmd on a free loopback port (ERL_EPMD_PORT), as user rabbitmq;
#   2. rabbitmq-server in the foreground as user rabbitmq, listening on
#      127.0.0.1 only, with a unique node name, free AMQP and distribution
#      ports, and every file (mnesia, logs, config, cookie) under the state dir;
#   3. N `celery worker` processes (stock Celery worker, tasks.py);
#   4. the Tornado app (app.py) on 127.0.0.1:<http_port>.
# It waits for each stage with a deadline and records "<name> <pid> <starttime>"
# lines in <state_dir>/pids; `stop` signals only those process groups (TERM,
# then KILL after a deadline), checking each PID's start time first so that a
# reused PID is never signalled.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
python=/usr/bin/python3
rabbitmq_bin=/usr/lib/rabbitmq/bin

usage() {
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

starting=''  # the state dir while `start` runs: a failed start stops what it started

die() {
  echo "peer.sh: $*" >&2
  exit 1
}

on_exit() {
  if [[ -n $starting ]]; then
    echo "peer.sh: start failed: stopping what it started" >&2
    cmd_stop "$starting"
  fi
}
trap on_exit EXIT

# A TCP port that is free on 127.0.0.1 right now.
free_port() {
  "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Field 22 of /proc/<pid>/stat: the process's start time, in clock ticks.
# Fails when the process is gone or a zombie (dead, waiting to be reaped).
start_time() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }  # the command name may hold spaces: skip past it
  # shellcheck disable=SC2086
  set -- $stat
  [[ $1 != Z ]] || return 1
  echo "${20}"
}

record() {  # record <state_dir> <name> <pid>
  local started
  started=$(start_time "$3") || die "$2 (pid $3) exited at once; see $1/logs"
  echo "$2 $3 $started" >> "$1/pids"
}

# Polls "$@" every 0.1 s until it succeeds or <seconds> pass; gives up at
# once if a process recorded in <state_dir>/pids has exited.
wait_for() {  # wait_for <state_dir> <seconds> <command...>
  local pids_file=$1/pids deadline=$((SECONDS + $2)) name pid started
  shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    while read -r name pid started; do
      if [[ $(start_time "$pid") != "$started" ]]; then
        echo "peer.sh: $name (pid $pid) exited" >&2
        return 1
      fi
    done < "$pids_file"
    sleep 0.1
  done
}

# Is the recorded process group <pid> (started at <started>) still ours?
# True when its leader is alive with the same start time, or when the leader
# is gone but members of its group remain (they are its descendants).
group_alive() {  # group_alive <pid> <started>
  local now
  if now=$(start_time "$1"); then
    # An explicit status: a bare `return` in an EXIT trap would return the
    # status of the command that made the script exit.
    if [[ $now == "$2" ]]; then return 0; fi
    return 1
  fi
  pgrep -g "$1" >/dev/null 2>&1
}

cmd_versions() {
  local rabbit erlang
  rabbit=$(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null || echo '?')
  erlang=$(dpkg-query -W -f '${Version}' erlang-base 2>/dev/null || echo '?')
  "$python" - "$rabbit" "$erlang" <<'EOF'
import platform, sys
import amqp, billiard, celery, kombu, tornado
print(f"python {platform.python_version()}")
print(f"tornado {tornado.version}")
print(f"celery {celery.__version__}")
print(f"kombu {kombu.__version__}")
print(f"py-amqp {amqp.__version__}")
print(f"billiard {billiard.__version__}")
print(f"rabbitmq-server {sys.argv[1]} (Debian package)")
print(f"erlang {sys.argv[2]} (Debian package)")
EOF
}

# The live processes of the recorded group <pid> and all their descendants,
# one "<pid> <start time>" a line. Descendants matter: erl_child_setup and
# inet_gethost call setsid(), so they leave beam.smp's group.
group_tree() {  # group_tree <pid>
  ps -e -o pid= -o ppid= -o pgid= | awk -v g="$1" '
    { parent[$1] = $2; if ($3 == g) tree[$1] = 1 }
    END {
      do {
        grown = 0
        for (p in parent) if (!(p in tree) && (parent[p] in tree)) { tree[p] = 1; grown = 1 }
      } while (grown)
      for (p in tree) print p
    }' | while read -r p; do
    if t=$(start_time "$p"); then echo "$p $t"; fi
  done
}

# True while any "<pid> <start time>" of the list still runs.
tree_alive() {  # tree_alive <list>
  local p t
  while read -r p t; do
    [[ -n $p ]] || continue
    if [[ $(start_time "$p" 2>/dev/null) == "$t" ]]; then return 0; fi
  done <<< "$1"
  return 1
}

cmd_pids() {
  local state=$1 name pid started
  [[ -f $state/pids ]] || return 0
  while read -r name pid started; do
    group_alive "$pid" "$started" || continue
    group_tree "$pid" | cut -d' ' -f1
  done < "$state/pids" | sort -nu
}

cmd_stop() {
  local state=$1 name pid started deadline tree p t
  [[ -f $state/pids ]] || return 0
  local -a groups=() names=()
  while read -r name pid started; do
    group_alive "$pid" "$started" || continue
    groups+=("$pid")
    names+=("$name")
  done < "$state/pids"
  # Stop in reverse start order: the web app, the workers, RabbitMQ, epmd.
  local i
  for ((i = ${#groups[@]} - 1; i >= 0; i--)); do
    pid=${groups[i]}
    tree=$(group_tree "$pid")
    kill -TERM -- "-$pid" 2>/dev/null || true
    deadline=$((SECONDS + 15))
    while tree_alive "$tree" && ((SECONDS < deadline)); do
      sleep 0.1
    done
    if tree_alive "$tree"; then
      echo "peer.sh: ${names[i]} (group $pid) ignored TERM for 15 s: KILL" >&2
      kill -KILL -- "-$pid" 2>/dev/null || true
      while read -r p t; do  # descendants outside the group
        if [[ $(start_time "$p" 2>/dev/null) == "$t" ]]; then kill -KILL "$p" 2>/dev/null || true; fi
      done <<< "$tree"
    fi
  done
  rm -f "$state/pids"
}

cmd_start() {
  local state=$1 http_port=$2
  shift 2
  local pool=threads concurrency='' workers=1 prefetch=0 delivery=transient loop=asyncio
  local slow_concurrency=0
  while (($#)); do
    case $1 in
      --pool) pool=$2; shift 2 ;;
      --concurrency) concurrency=$2; shift 2 ;;
      --workers) workers=$2; shift 2 ;;
      --slow-concurrency) slow_concurrency=$2; shift 2 ;;
      --prefetch) prefetch=$2; shift 2 ;;
      --delivery) delivery=$2; shift 2 ;;
      --loop) loop=$2; shift 2 ;;
      *) usage ;;
    esac
  done
  case $pool in
    prefork) concurrency=${concurrency:-$(nproc)} ;;
    threads) concurrency=${concurrency:-100} ;;
    solo) concurrency=1 ;;
    *) die "unknown pool '$pool'" ;;
  esac
  [[ $(id -u) == 0 ]] || die "must run as root (RabbitMQ runs as user rabbitmq)"
  id rabbitmq >/dev/null 2>&1 || die "no user rabbitmq: install rabbitmq-server"

  # Thousands of keep-alive connections need descriptors (the soft limit may
  # be 1024); every process below inherits this.
  ulimit -n "$(ulimit -Hn)"
  mkdir -p "$state"
  state=$(cd "$state" && pwd)
  [[ -f $state/pids ]] && cmd_stop "$state"
  starting=$state
  local rabbit_dir=$state/rabbitmq logs=$state/logs
  mkdir -p "$rabbit_dir/home" "$rabbit_dir/mnesia" "$rabbit_dir/log" \
    "$rabbit_dir/plugins-expand" "$logs"
  chown -R rabbitmq:rabbitmq "$rabbit_dir"
  chmod 700 "$rabbit_dir/home"

  local amqp_port dist_port epmd_port node
  amqp_port=$(free_port)
  dist_port=$(free_port)
  epmd_port=$(free_port)
  # Unique per state dir; a fresh broker (empty mnesia) on every start.
  node="tornado-celery-$(printf '%s' "$state" | md5sum | cut -c1-12)@localhost"
  rm -rf "${rabbit_dir:?}/mnesia"/* "${rabbit_dir:?}/log"/*
  cat > "$state/ports" <<EOF
http $http_port
amqp $amqp_port
dist $dist_port
epmd $epmd_port
node $node
EOF

  # Only the settings below: no system-wide config, env file or plugins.
  cat > "$rabbit_dir/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$amqp_port
loopback_users.guest = true
log.file.level = warning
log.console = false
EOF
  echo '[].' > "$rabbit_dir/enabled_plugins"
  : > "$rabbit_dir/rabbitmq-env.conf"
  chown rabbitmq:rabbitmq "$rabbit_dir"/rabbitmq.conf "$rabbit_dir"/enabled_plugins \
    "$rabbit_dir"/rabbitmq-env.conf

  local -a as_rabbitmq=(setpriv --reuid rabbitmq --regid rabbitmq --init-groups)
  local -a rabbit_env=(
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 LC_ALL=C.UTF-8
    HOME="$rabbit_dir/home"
    ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT="$epmd_port"
    RABBITMQ_CONF_ENV_FILE="$rabbit_dir/rabbitmq-env.conf"
    RABBITMQ_CONFIG_FILE="$rabbit_dir/rabbitmq.conf"
    RABBITMQ_ADVANCED_CONFIG_FILE="$rabbit_dir/advanced.config"
    RABBITMQ_ENABLED_PLUGINS_FILE="$rabbit_dir/enabled_plugins"
    RABBITMQ_PLUGINS_EXPAND_DIR="$rabbit_dir/plugins-expand"
    RABBITMQ_MNESIA_BASE="$rabbit_dir/mnesia"
    RABBITMQ_LOG_BASE="$rabbit_dir/log"
    RABBITMQ_PID_FILE="$rabbit_dir/rabbit.pid"
    RABBITMQ_NODENAME="$node" RABBITMQ_USE_LONGNAME=false
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$amqp_port"
    RABBITMQ_DIST_PORT="$dist_port"
    # Erlang distribution (needed by RabbitMQ itself) on loopback only.
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    # Idle schedulers must not spin: the cores are shared with Python. (This
    # is RabbitMQ's default; stated so that it stays so.)
    RABBITMQ_SCHEDULER_BUSY_WAIT_THRESHOLD=none
  )

  # 1. A private epmd in the foreground (its own group), so that Erlang
  # starts no daemon of its own and a system epmd is never touched.
  setsid "${rabbit_env[@]}" "${as_rabbitmq[@]}" \
    epmd -address 127.0.0.1 -port "$epmd_port" \
    > "$logs/epmd.log" 2>&1 < /dev/null &
  record "$state" epmd $!
  wait_for "$state" 10 env ERL_EPMD_PORT="$epmd_port" epmd -names ||
    die "epmd did not answer on port $epmd_port (10 s deadline)"

  # 2. RabbitMQ, in the foreground.
  setsid "${rabbit_env[@]}" "${as_rabbitmq[@]}" "$rabbitmq_bin/rabbitmq-server" \
    > "$logs/rabbitmq.log" 2>&1 < /dev/null &
  record "$state" rabbitmq $!
  export PEER_BROKER_URL="amqp://guest:guest@127.0.0.1:$amqp_port//"
  export PEER_DB_PATH=${PEER_DB_PATH:-$state/demo.sqlite3}
  export PEER_PREFETCH=$prefetch PEER_DELIVERY=$delivery
  export PEER_SLOW_QUEUE=$((slow_concurrency > 0 ? 1 : 0))
  export PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$here"
  wait_for "$state" 60 "$python" -c "
import amqp, os
c = amqp.Connection('127.0.0.1:$amqp_port', connect_timeout=1)
c.connect()
c.close()" || die "RabbitMQ did not accept AMQP connections (60 s deadline); see $logs/rabbitmq.log"

  # 3. The Celery workers (stock `celery worker`).
  local -a common=(--loglevel WARNING --without-gossip --without-mingle --without-heartbeat)
  local i
  for ((i = 1; i <= workers; i++)); do
    setsid "$python" -m celery -A tasks worker --queues celery --pool "$pool" \
      --concurrency "$concurrency" "${common[@]}" --hostname "w$i@${node%@*}" \
      > "$logs/worker-$i.log" 2>&1 < /dev/null &
    record "$state" "worker-$i" $!
  done
  if ((slow_concurrency > 0)); then
    setsid "$python" -m celery -A tasks worker --queues slow --pool threads \
      --concurrency "$slow_concurrency" "${common[@]}" --hostname "slow@${node%@*}" \
      > "$logs/worker-slow.log" 2>&1 < /dev/null &
    record "$state" worker-slow $!
  fi

  # 4. The Tornado app; it exits if it cannot reach RabbitMQ.
  local -a app_args=()
  [[ $loop == uvloop ]] && app_args+=(--uvloop)
  setsid "$python" "$here/app.py" --port "$http_port" "${app_args[@]}" \
    > "$logs/app.log" 2>&1 < /dev/null &
  record "$state" app $!

  # Ready when a job makes the round trip through a worker.
  wait_for "$state" 60 curl -fsS -m 2 -X POST -d '{"ready": true}' \
    "http://127.0.0.1:$http_port/jobs/echo" ||
    die "the peer did not answer /jobs/echo (60 s deadline); see $logs"
  starting=''
  echo "peer up: http://127.0.0.1:$http_port (pool $pool, concurrency $concurrency, workers $workers, slow-concurrency $slow_concurrency, prefetch $prefetch, $delivery, $loop)"
}

(($# >= 1)) || usage
case $1 in
  start) (($# >= 3)) || usage; cmd_start "${@:2}" ;;
  stop) (($# == 2)) || usage; cmd_stop "$2" ;;
  pids) (($# == 2)) || usage; cmd_pids "$2" ;;
  versions) cmd_versions ;;
  deps) bash "$here/../../../scripts/install-deps.sh" rabbitmq-server \
          python3-celery python3-kombu python3-amqp python3-tornado util-linux ;;
  *) usage ;;
esac
