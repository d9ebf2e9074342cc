#!/usr/bin/env bash
# Installs what vnet's demo, tests and benchmarks need on a Debian machine that has only
# the Rust toolchain. Idempotent: installs only what is missing. Needs root.
set -euo pipefail

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v tc >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v jq >/dev/null || need+=(jq)
command -v ethtool >/dev/null || need+=(ethtool)
command -v xxd >/dev/null || need+=(xxd)
command -v tincd >/dev/null || need+=(tinc)
# The lab's own tests run a fake vnetd written in Python.
[ -x /usr/bin/python3 ] || need+=(python3)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing ${need[*]}; run as root to install them" >&2
    exit 1
  fi
  echo "install-deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # iperf3 asks whether to start a daemon; the answer is no.
  echo "iperf3 iperf3/start_daemon boolean false" | debconf-set-selections 2>/dev/null || true
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
