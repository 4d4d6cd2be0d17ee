#!/usr/bin/env bash
# Makes sure what Strata needs to build is on this machine: a Swift 6 toolchain and the Debian
# packages listed in tools/apt-packages.txt. Installs missing packages with apt-get when run as
# root (or with passwordless sudo); otherwise says exactly what to install and fails.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if ! command -v swift >/dev/null 2>&1; then
  echo "strata: the Swift 6 toolchain is missing: install it from https://www.swift.org/install/linux/ and put 'swift' on PATH" >&2
  exit 1
fi
major="$(swift --version 2>/dev/null | sed -n 's/.*Swift version \([0-9]*\)\..*/\1/p' | head -n1)"
if [ -n "$major" ] && [ "$major" -lt 6 ]; then
  echo "strata: Swift $major found; Strata needs Swift 6 or later" >&2
  exit 1
fi

missing=()
while read -r pkg; do
  pkg="${pkg%%#*}"; pkg="$(echo "$pkg" | xargs)"
  [ -z "$pkg" ] && continue
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done < "$here/apt-packages.txt"

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "strata: missing Debian packages: ${missing[*]} — run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

# Python Kafka clients for the compatibility tests (pinned versions, from PyPI).
if [ "${1:-}" = "--compat" ]; then
  req="$here/compat/requirements.txt"
  if ! python3 -c "import confluent_kafka, kafka, aiokafka, prometheus_client, duckdb, pyarrow" 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check -r "$req" 2>&1 | grep -v "Running pip as the 'root' user" || true
    python3 -c "import confluent_kafka, kafka, aiokafka, prometheus_client, duckdb, pyarrow" 2>/dev/null || {
      echo "strata: the compatibility tests need Python packages: python3 -m pip install -r $req" >&2; exit 1; }
  fi
fi
