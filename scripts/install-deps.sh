#!/usr/bin/env bash
# Installs the Debian 12 packages Monsoon needs to build, test and run, and
# nothing else. Idempotent: packages already present are not touched, and a
# machine that has everything does not need network access or root.
set -euo pipefail

packages=(
  build-essential cmake make pkg-config curl
  systemd  # systemd-analyze: the test of docs/deployment.md's unit files
  libzmq3-dev cppzmq-dev libmsgpack-cxx-dev libboost-dev
  nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev
  libsqlite3-dev libssl-dev libcpp-httplib-dev catch2
  iproute2  # scripts/netns-cluster.sh and its test
  "$@"
)

missing=()
for package in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$package")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "Installing missing packages: ${missing[*]}"
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
