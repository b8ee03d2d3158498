#!/usr/bin/env bash
# Separate network hosts on one machine, for running Monsoon as if on several:
# a Linux network namespace per host, each with its own network stack
# (interfaces, addresses, ports, loopback), all joined by a bridge.
#
# Usage (as root):
#   netns-cluster.sh up                 create the hosts and the network
#   netns-cluster.sh down               stop what runs on them, remove them all
#   netns-cluster.sh exec HOST CMD...   run CMD on HOST (in its namespace)
#   netns-cluster.sh status             what exists, addresses, process counts
#   netns-cluster.sh addr [HOST]        HOST's address (all: "HOST ADDRESS")
#
# The hosts are broker1, broker2, front, work1 and work2. Host H is the
# namespace ${MNS_PREFIX}H, its interface eth0 has the address listed below
# on MNS_SUBNET, and its lo is up. The bridge br0 lives in a namespace of its
# own, ${MNS_PREFIX}net, with one veth port per host: nothing is added to the
# machine's own network namespace, so its network is untouched and, without
# a route there, the hosts cannot reach it nor it them. Two clusters with
# different prefixes never meet, even on the same subnet.
#
# Environment:
#   MNS_PREFIX  namespace name prefix (default "mns-"; letters, digits, . _ -)
#   MNS_SUBNET  an IPv4 /24 written a.b.c.0/24 (default 10.77.0.0/24); the
#               hosts get a.b.c.11 (broker1), .12 (broker2), .21 (front),
#               .31 (work1) and .32 (work2)
#
# Exit status: 0 on success; 1 on a usage error or when up finds a namespace
# of its own name already there; 77 when this machine cannot create network
# namespaces, veth pairs or bridges (not root, or the kernel refuses), which
# tests report as a skip. status exits 0 when the cluster is up, 3 when none
# of it exists and 1 when only part of it does.
#
# up either creates everything or, on any failure, removes what it created.
# down is idempotent: it sends SIGTERM to every process still running in the
# cluster's namespaces (by PID, as `ip netns pids` lists them), SIGKILL to
# those left after 5 s, then deletes the namespaces, which removes their
# interfaces and the bridge with them. exec replaces itself with CMD (through
# `ip netns exec`), so CMD keeps the PID of the exec call and gets its
# signals directly.
set -uo pipefail

readonly hosts=(broker1 broker2 front work1 work2)
declare -rA host_octet=([broker1]=11 [broker2]=12 [front]=21 [work1]=31 [work2]=32)
readonly bridge=br0
prefix=${MNS_PREFIX:-mns-}
subnet=${MNS_SUBNET:-10.77.0.0/24}

usage() {
  echo "usage: $0 up | down | exec HOST CMD... | status | addr [HOST]" >&2
  echo "hosts: ${hosts[*]}" >&2
  exit 1
}
die() { echo "netns-cluster: $*" >&2; exit 1; }
# This machine cannot do it: 77, which tests map to a skip.
unsupported() { echo "netns-cluster: this machine cannot run the cluster: $*" >&2; exit 77; }

[[ $prefix =~ ^[A-Za-z0-9._-]{1,64}$ ]] ||
  die "MNS_PREFIX='$prefix': use 1 to 64 letters, digits, '.', '_' or '-'"
if [[ $subnet =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.0/24$ ]] &&
   ((BASH_REMATCH[1] <= 255 && BASH_REMATCH[2] <= 255 && BASH_REMATCH[3] <= 255)); then
  base="$((10#${BASH_REMATCH[1]})).$((10#${BASH_REMATCH[2]})).$((10#${BASH_REMATCH[3]}))"
else
  die "MNS_SUBNET='$subnet': give an IPv4 /24 as a.b.c.0/24"
fi

netns() { echo "${prefix}$1"; }         # host -> namespace name
address() { echo "$base.${host_octet[$1]}"; }
is_host() { [[ -v "host_octet[$1]" ]]; }
exists() { [[ -e /run/netns/$1 ]]; }
all_namespaces() { local h; for h in "${hosts[@]}"; do netns "$h"; done; netns net; }

require_root() {
  [[ $(id -u) -eq 0 ]] || unsupported "$1 needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN); run it with sudo"
}

require_ip() {
  command -v ip >/dev/null && return
  echo "netns-cluster: iproute2 is missing; installing it" >&2
  bash "$(dirname "$0")/install-deps.sh" iproute2 || die "could not install iproute2"
}

# Runs a command; on failure removes what up created and exits: 77 when the
# machine refuses (`kind` "kernel": a step that needs a kernel feature, or any
# step refused for lack of privilege), else 1.
step() {
  local kind=$1 output
  shift
  output=$("$@" 2>&1) && return 0
  remove_all >/dev/null 2>&1
  if [[ $kind == kernel || $output == *"Operation not permitted"* ||
        $output == *"Permission denied"* ]]; then
    unsupported "'$*' failed: $output"
  fi
  die "'$*' failed: $output (removed what up had created)"
}

# Polls until `ip -n NS link show DEV` reports the link up, for 5 s at most.
await_link_up() {
  local ns=$1 dev=$2 deadline=$((SECONDS + 5))
  until [[ $(ip -n "$ns" -o link show "$dev" 2>/dev/null) == *"state UP"* ]]; do
    ((SECONDS < deadline)) || return 1
    sleep 0.02
  done
}

up() {
  require_root up
  require_ip
  local ns h
  for ns in $(all_namespaces); do
    exists "$ns" && die "namespace $ns already exists: run 'MNS_PREFIX=$prefix $0 down' first"
  done
  local net
  net=$(netns net)
  step kernel ip netns add "$net"
  step other ip -n "$net" link set lo up
  step kernel ip -n "$net" link add "$bridge" type bridge stp_state 0
  step other ip -n "$net" link set "$bridge" up
  for h in "${hosts[@]}"; do
    ns=$(netns "$h")
    step kernel ip netns add "$ns"
    step other ip -n "$ns" link set lo up
    # Created in the bridge's namespace with its peer straight in the host's:
    # no interface ever appears in the machine's own namespace.
    step kernel ip -n "$net" link add "v-$h" type veth peer name eth0 netns "$ns"
    step other ip -n "$net" link set "v-$h" master "$bridge" up
    step other ip -n "$ns" addr add "$(address "$h")/24" dev eth0
    step other ip -n "$ns" link set eth0 up
  done
  for h in "${hosts[@]}"; do
    step other await_link_up "$(netns "$h")" eth0
  done
  echo "cluster ${prefix}* is up on $base.0/24:"
  for h in "${hosts[@]}"; do printf '  %-8s %-16s %s\n' "$h" "$(address "$h")" "$(netns "$h")"; done
}

# Stops the processes in the cluster's namespaces, then deletes them.
remove_all() {
  local ns pid pids=() deadline
  for ns in $(all_namespaces); do
    # shellcheck disable=SC2207 # PIDs: digits only
    exists "$ns" && pids+=($(ip netns pids "$ns" 2>/dev/null))
  done
  if ((${#pids[@]} > 0)); then
    echo "stopping ${#pids[@]} process(es) still running in the cluster: ${pids[*]}"
    kill -TERM "${pids[@]}" 2>/dev/null
    deadline=$((SECONDS + 5))
    for pid in "${pids[@]}"; do
      while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
    done
    for pid in "${pids[@]}"; do
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    done
  fi
  local removed=0
  for ns in $(all_namespaces); do
    if exists "$ns"; then
      ip netns del "$ns" || echo "netns-cluster: could not delete $ns" >&2
      removed=$((removed + 1))
    fi
  done
  echo "removed $removed namespace(s) of cluster ${prefix}*"
}

down() {
  require_root down
  require_ip
  local ns
  remove_all
  for ns in $(all_namespaces); do
    exists "$ns" && die "$ns is still there"
  done
  return 0
}

run_on() {
  (($# >= 2)) || usage
  local h=$1
  shift
  is_host "$h" || die "unknown host '$h' (hosts: ${hosts[*]})"
  require_root exec
  require_ip
  exists "$(netns "$h")" || die "host $h ($(netns "$h")) does not exist: run 'MNS_PREFIX=$prefix $0 up' first"
  exec ip netns exec "$(netns "$h")" "$@"
}

status() {
  require_root status
  require_ip
  local h ns present=0 total=0 state
  local net
  net=$(netns net)
  total=$((total + 1))
  if exists "$net"; then
    present=$((present + 1))
    printf '%-20s bridge %s with %s port(s)\n' "$net" "$bridge" \
      "$(ip -n "$net" -o link show master "$bridge" 2>/dev/null | wc -l)"
  else
    printf '%-20s missing\n' "$net"
  fi
  for h in "${hosts[@]}"; do
    ns=$(netns "$h")
    total=$((total + 1))
    if exists "$ns"; then
      present=$((present + 1))
      state=$(ip -n "$ns" -o -4 addr show dev eth0 2>/dev/null | awk '{print $4}')
      printf '%-20s %-8s eth0 %-18s %s process(es)\n' "$ns" "$h" "${state:-no address}" \
        "$(ip netns pids "$ns" 2>/dev/null | wc -l)"
    else
      printf '%-20s %-8s missing\n' "$ns" "$h"
    fi
  done
  ((present == total)) && { echo "cluster ${prefix}* is up"; return 0; }
  ((present == 0)) && { echo "cluster ${prefix}* is down"; return 3; }
  echo "cluster ${prefix}* is partly there: run down, then up"
  return 1
}

addr() {
  local h
  if (($# == 0)); then
    for h in "${hosts[@]}"; do echo "$h $(address "$h")"; done
    return 0
  fi
  is_host "$1" || die "unknown host '$1' (hosts: ${hosts[*]})"
  address "$1"
}

(($# >= 1)) || usage
command=$1
shift
case $command in
  up) (($# == 0)) || usage; up ;;
  down) (($# == 0)) || usage; down ;;
  exec) run_on "$@" ;;
  status) (($# == 0)) || usage; status ;;
  addr) (($# <= 1)) || usage; addr "$@" ;;
  *) usage ;;
esac
