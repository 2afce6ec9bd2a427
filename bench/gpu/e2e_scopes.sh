#!/usr/bin/env bash
# Where the TTT-E2E step's kernels come from (issue 13): the 125M bf16 step at 8K under TTT_PROFILE=scopes (rows keyed
# by the node whose VJP queued them), the 60 largest rows by calls and by time; then the full-attention step's
# matmul rows with their first-call column (cuBLAS's setup lands in the first matmul of the process).
#   bash bench/gpu/e2e_scopes.sh        (builds build/gpu; logs in $OUT, default ./gpu-out)
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON >"$OUT/scopes_cmake.log" 2>&1 &&
  cmake --build build/gpu -j "$(nproc)" --target e2e_step >"$OUT/scopes_build.log" 2>&1 ||
  { grep -iE "error" "$OUT/scopes_build.log" | head -20; exit 1; }
TTT_PROFILE=scopes timeout 150 ./build/gpu/e2e_step --preset 125m --device cuda --compute bf16 --seq 8192 --kinds e2e --reps 1 \
  >"$OUT/e2e_scopes.txt" 2>&1 || echo "e2e_step: exit $?"
echo "-- by calls (two steps: a warm-up and the timed one)"
grep "%" "$OUT/e2e_scopes.txt" | awk '{print $(NF-4), $0}' | sort -rn | head -60 | cut -d' ' -f2- | cut -c1-125
echo "-- by time"
grep "%" "$OUT/e2e_scopes.txt" | head -30 | cut -c1-125
echo "-- the full-attention step's matmuls (first ms: the row's first call)"
TTT_PROFILE=1 timeout 60 ./build/gpu/e2e_step --preset 125m --device cuda --compute bf16 --seq 8192 --kinds fa --reps 1 2>&1 |
  grep -E "matmul|entry dtype" | head -12
