#!/usr/bin/env bash
# Install the Debian/Ubuntu packages the build needs, if any are missing.
set -euo pipefail
packages=(build-essential cmake pkg-config libopenblas-dev zlib1g-dev libjson-c-dev libmicrohttpd-dev python3 dataset-fashion-mnist
          libopenmpi-dev openmpi-bin)  # MPI: data-parallel training (docs/data-parallel.md)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi
