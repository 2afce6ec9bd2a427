#!/usr/bin/env bash
# The fused attention kernels on the GPU machine, in one call: build, f32
# parity against the composed path in f64 (tests/test_attention_fused.c) and
# compute-sanitizer memcheck on its quick subset; the bf16 development kernel
# (dev/cuda/attention_bf16.cu): its checks and memcheck; then timings of ttt
# (fused and composed f32, dev bf16) and PyTorch SDPA (f32, bf16 flash) in one
# table. CHECKS=0 skips the f32 parity and memcheck, BENCH=0 the timings. Logs in $OUT.
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON >"$OUT/cmake.log" 2>&1 || { tail -40 "$OUT/cmake.log"; exit 1; }
cmake --build build/gpu -j "$(nproc)" --target test_attention_fused >"$OUT/build.log" 2>&1 || { grep -iE "error" "$OUT/build.log" | head -40; exit 1; }
nvcc -O3 -arch=sm_90 -std=c++17 dev/cuda/attention_bf16.cu -o build/gpu/attention_bf16 >>"$OUT/build.log" 2>&1 || { grep -iE "error" "$OUT/build.log" | head -20; exit 1; }
status=0
if [ "${CHECKS:-1}" = 1 ]; then
  echo "== fused attention parity (f32 fused vs f64 composed) =="
  ./build/gpu/test_attention_fused 2>&1 | tee "$OUT/attention_parity.txt" || status=1
  echo "== compute-sanitizer memcheck (quick subset) =="
  compute-sanitizer --tool memcheck --error-exitcode 9 ./build/gpu/test_attention_fused --quick >"$OUT/attention_memcheck.txt" 2>&1 \
    || { echo "memcheck FAILED"; status=1; }
  grep -E "ERROR SUMMARY|passed" "$OUT/attention_memcheck.txt"
fi
echo "== bf16 dev kernel: checks against float64, memcheck =="
compute-sanitizer --tool memcheck --error-exitcode 9 ./build/gpu/attention_bf16 >"$OUT/attention_bf16_memcheck.txt" 2>&1 \
  || { echo "bf16 memcheck FAILED"; status=1; }
grep -E "ERROR SUMMARY" "$OUT/attention_bf16_memcheck.txt"
if [ "${BENCH:-1}" = 1 ]; then
  echo "== timings =="
  ./build/gpu/attention_bf16 --bench >"$OUT/attention_bf16.csv" 2>&1 || status=1
  grep -E "FAIL|bf16 checks" "$OUT/attention_bf16.csv"
  ./build/gpu/test_attention_fused --bench >"$OUT/attention_engine.csv" 2>&1 || { tail -5 "$OUT/attention_engine.csv"; status=1; }
  python3 bench/gpu/attention_bench.py "$OUT/attention_engine.csv" "$OUT/attention_bf16.csv" 2>&1 | tee "$OUT/attention_table.md"
fi
exit $status
