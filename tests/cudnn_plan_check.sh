#!/usr/bin/env bash
# ctest cudnn_plan_check: dev/cuda/cudnn_plan_check (do cuDNN's fused attention engines accept our graphs, on an
# H100 described by device properties) on a machine without a GPU. cuDNN's engines look for the driver before
# they check a graph, so where no libcuda.so.1 is installed the loader is pointed at the toolkit's stub.
# usage: cudnn_plan_check.sh BINARY CUDA_LIBRARY_DIR [CUDNN_LIBRARY_DIR [ARGS...]] (ARGS: --variants, --plan)
set -u
bin=$1 cudalib=$2 cudnnlib=${3:-}
shift $(($# < 3 ? $# : 3))
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
path="$cudalib${cudnnlib:+:$cudnnlib}"
if ! ldconfig -p 2>/dev/null | grep -q "libcuda\.so\.1 "; then
  stub="$cudalib/stubs/libcuda.so"
  [ -e "$stub" ] || { echo "SKIP: no libcuda.so.1 and no stub at $stub"; exit 77; }
  ln -s "$stub" "$tmp/libcuda.so.1"
  path="$tmp:$path"
fi
LD_LIBRARY_PATH="$path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$bin" "$@"
