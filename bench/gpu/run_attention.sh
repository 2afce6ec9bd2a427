#!/usr/bin/env bash
# The fused attention kernels on the GPU machine, in one call: build; parity of
# the fused paths (f32, and bf16 on the tensor cores) against the composed path
# in f64 (tests/test_attention_fused.c) and compute-sanitizer memcheck on its
# quick subset; the bf16 kernels alone (dev/cuda/attention_bf16.cu): their
# checks of every configuration against float64, and memcheck on a small case;
# then timings of ttt (fused and composed f32, fused bf16, the bf16 kernels one
# by one) and PyTorch SDPA (f32, bf16 flash) in one table.
#   CHECKS=0    skips the parity tests and memcheck
#   BENCH=0     skips the timings
#   F32=0       times ttt's bf16 path only (test_attention_fused --bench-bf16)
#   MEMCHECK=0  skips compute-sanitizer (run last; MEMCHECK_S caps each run, seconds)
#   HARNESS=0   skips the dev harness (its build, checks and per-kernel timings): the engine against SDPA only
# Logs in $OUT.
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON >"$OUT/cmake.log" 2>&1 || { tail -40 "$OUT/cmake.log"; exit 1; }
cmake --build build/gpu -j "$(nproc)" --target test_attention_fused >"$OUT/build.log" 2>&1 || { grep -iE "error" "$OUT/build.log" | head -40; exit 1; }
HARNESS=${HARNESS:-1}
[ "$HARNESS" = 0 ] || nvcc -O3 -arch=sm_90 -std=c++17 -I src/backends/cuda -I dev/cuda dev/cuda/attention_bf16.cu -o build/gpu/attention_bf16 \
  >>"$OUT/build.log" 2>&1 || { grep -iE "error" "$OUT/build.log" | head -20; exit 1; }
status=0
if [ "${CHECKS:-1}" = 1 ]; then
  echo "== fused attention parity (f32 and bf16 fused vs f64 composed) =="
  ./build/gpu/test_attention_fused 2>&1 | tee "$OUT/attention_parity.txt" || status=1
fi
if [ "${BENCH:-1}" = 1 ]; then
  if [ "$HARNESS" = 1 ]; then
    echo "== bf16 kernels: checks of every configuration against float64, then timings =="
    ./build/gpu/attention_bf16 --bench >"$OUT/attention_bf16.csv" 2>&1 || status=1
    grep -E "FAIL|bf16 checks" "$OUT/attention_bf16.csv"
  else
    : >"$OUT/attention_bf16.csv"
  fi
  echo "== timings =="
  mode=--bench
  [ "${F32:-1}" = 0 ] && mode=--bench-bf16
  ./build/gpu/test_attention_fused $mode >"$OUT/attention_engine.csv" 2>&1 || { tail -5 "$OUT/attention_engine.csv"; status=1; }
  python3 bench/gpu/attention_bench.py "$OUT/attention_engine.csv" "$OUT/attention_bf16.csv" 2>&1 | tee "$OUT/attention_table.md"
fi
if [ "${CHECKS:-1}" = 1 ] && [ "${MEMCHECK:-1}" = 1 ] && [ "$HARNESS" = 1 ]; then
  echo "== compute-sanitizer memcheck: the bf16 kernels on a small case, then test_attention_fused --quick =="
  timeout "${MEMCHECK_S:-900}" compute-sanitizer --tool memcheck --error-exitcode 9 ./build/gpu/attention_bf16 --small \
    >"$OUT/attention_bf16_memcheck.txt" 2>&1 || { echo "bf16 memcheck FAILED (or timed out)"; status=1; }
  grep -E "ERROR SUMMARY" "$OUT/attention_bf16_memcheck.txt"
  timeout "${MEMCHECK_S:-900}" compute-sanitizer --tool memcheck --error-exitcode 9 ./build/gpu/test_attention_fused --quick \
    >"$OUT/attention_memcheck.txt" 2>&1 || { echo "memcheck FAILED (or timed out)"; status=1; }
  grep -E "ERROR SUMMARY|passed" "$OUT/attention_memcheck.txt"
fi
exit $status
