#!/usr/bin/env bash
# TTT-E2E with each chunk's graph kept (TTT_E2E_KEEP_GRAPHS, e2e_step --keep-graphs) against the rematerialized
# step, one call: e2e_step --check with the graphs kept (the device's gradients against the CPU's f64, which
# rematerializes), then the 125M bf16 8K step both ways alternated beside full attention, eager and as CUDA graphs,
# with the arena's size (the step's temporary memory). Logs in $OUT.
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
source bench/gpu/jsonc_env.sh
nvidia-smi --query-gpu=name --format=csv,noheader
t0=$(date +%s)
cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON >"$OUT/cmake.log" 2>&1 &&
  cmake --build build/gpu -j "$(nproc)" --target e2e_step >"$OUT/build.log" 2>&1 ||
  { grep -iE error "$OUT/build.log" | head; exit 1; }
echo "build: $(($(date +%s) - t0)) s"
timeout 90 ./build/gpu/e2e_step --check --device cuda --keep-graphs 2>&1 | tail -5
E="./build/gpu/e2e_step --preset 125m --device cuda --compute bf16 --seq ${SEQ:-8192} --reps 3"
for r in 1 2; do
  timeout 60 $E --kinds fa,e2e 2>&1 | tail -2
  timeout 60 $E --kinds e2e --keep-graphs 2>&1 | tail -1
done
timeout 90 $E --kinds fa,e2e --graph 2>&1 | tail -2 | sed "s/^/[graph] /"
timeout 90 $E --kinds e2e --graph --keep-graphs 2>&1 | tail -1 | sed "s/^/[graph] /"
echo "total: $(($(date +%s) - t0)) s"
