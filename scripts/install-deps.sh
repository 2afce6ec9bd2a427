#!/usr/bin/env bash
# Install the Debian/Ubuntu packages the build needs, if any are missing.
set -euo pipefail
# clang: the fuzz targets (scripts/fuzz.sh, a short pass in scripts/test.sh); its libFuzzer
# runtime (libclang_rt.fuzzer) is in libclang-rt-N-dev, only recommended by clang, added below.
# MPI: data-parallel training (docs/data-parallel.md)
packages=(build-essential cmake pkg-config libopenblas-dev zlib1g-dev libjson-c-dev libmicrohttpd-dev python3 dataset-fashion-mnist
          clang libopenmpi-dev openmpi-bin)
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
# libFuzzer for the installed clang (Debian names it by clang's major version)
if command -v clang >/dev/null; then
  v=$(clang -dumpversion | cut -d. -f1)
  rt=libclang-rt-$v-dev
  if ! dpkg-query -W -f='${Status}' "$rt" 2>/dev/null | grep -q "install ok installed" &&
     ! ls /usr/lib/llvm-"$v"/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
    echo "installing: $rt"
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$rt" || echo "install-deps: $rt is not available; the fuzz targets will not build" >&2
  fi
fi
