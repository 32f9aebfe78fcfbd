#!/usr/bin/env bash
# Installs the Debian packages dsv4 builds and tests with. Idempotent: apt-get skips what is present.
set -euo pipefail
PKGS=(build-essential cmake pkg-config git python3
      libhwy-dev libpcre2-dev nlohmann-json3-dev libcpp-httplib-dev libcli11-dev
      libgtest-dev libgmock-dev libbenchmark-dev clang-format)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
