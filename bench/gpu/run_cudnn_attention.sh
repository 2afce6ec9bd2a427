#!/usr/bin/env bash
# The cuDNN path of ttt's bf16 attention (docs/cudnn.md) on the GPU machine, in one call (about 5-8 minutes):
#   1. probe: where cuDNN's headers and libraries are on this machine (CUDA toolkit, PyTorch's pip wheel);
#   2. build test_attention_cudnn and test_attention_fused (CMake finds cudnn_graph.h in the toolkit or in the
#      nvidia.cudnn package; the binary opens libcudnn at run time);
#   3. checks: test_attention_cudnn (cuDNN against our kernels and float64, crossed forward / backward, declined
#      shapes, second order);
#   4. timings: ttt via cuDNN, ttt's own kernels, PyTorch SDPA flash (and SDPA's cuDNN backend), causal bf16,
#      B = 1, H = 12, d 64 / 128, T 2K-32K, fwd and fwd+bwd, as one markdown table;
#   5. test_attention_fused's whole GPU suite with TTT_CUDNN=1.
#   CHECKS=0 skips 3 and 5, BENCH=0 skips 4, FUSED=0 skips 5. Each step has a timeout (the call's limit is 10
#   minutes); the step lines print the seconds spent so far. Logs in $OUT.
# Where the machine has a libcudnn but no headers, copy cuDNN 9's headers into .deps/cudnn/include here
# (git-ignored; e.g. cp /usr/local/cuda/include/cudnn*.h) and carry .deps/cudnn: CMake looks there last.
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

source bench/gpu/cudnn_env.sh # the probe, TTT_CUDNN_LIB and NVRTC

echo "== build =="
cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON >"$OUT/cmake.log" 2>&1 || { tail -40 "$OUT/cmake.log"; exit 1; }
grep -E "ttt: cuDNN" "$OUT/cmake.log"
cmake --build build/gpu -j "$(nproc)" --target test_attention_cudnn test_attention_fused >"$OUT/build.log" 2>&1 ||
  { grep -iE "error" "$OUT/build.log" | head -40; exit 1; }
status=0
t0=$SECONDS
step() { echo "== $1 (at ${SECONDS}s; build done at ${t0}s) =="; }
if [ "${CHECKS:-1}" = 1 ]; then
  step "test_attention_cudnn (TTT_CUDNN_VERBOSE=1)"
  # cuDNN's own error log (errors only; CUDNN_LOGWARN_DBG=1 would add every engine's refusal reasons)
  CUDNN_LOGERR_DBG=1 CUDNN_LOGDEST_DBG="$OUT/cudnn_errors.log" TTT_CUDNN_VERBOSE=1 timeout 200 \
    ./build/gpu/test_attention_cudnn 2>&1 | tee "$OUT/cudnn_checks.txt"
  rc=${PIPESTATUS[0]}
  [ "$rc" = 77 ] && echo "(skipped: see the SKIP line)"
  [ "$rc" != 0 ] && [ "$rc" != 77 ] && status=1
  [ -s "$OUT/cudnn_errors.log" ] && { echo "cuDNN logged errors ($OUT/cudnn_errors.log), first lines:"; head -20 "$OUT/cudnn_errors.log"; }
fi
if [ "${BENCH:-1}" = 1 ]; then
  step "timings"
  TTT_CUDNN_VERBOSE=1 timeout 150 ./build/gpu/test_attention_cudnn --bench >"$OUT/cudnn_engine.csv" 2>"$OUT/cudnn_bench_stderr.txt" ||
    { tail -5 "$OUT/cudnn_engine.csv" "$OUT/cudnn_bench_stderr.txt"; status=1; }
  grep -E "^#" "$OUT/cudnn_engine.csv"
  timeout 150 python3 bench/gpu/cudnn_attention_bench.py "$OUT/cudnn_engine.csv" 2>&1 | tee "$OUT/cudnn_table.md"
fi
# last, as the least needed: our whole fused-attention suite with cuDNN on
if [ "${CHECKS:-1}" = 1 ] && [ "${FUSED:-1}" = 1 ]; then
  step "test_attention_fused with TTT_CUDNN=1 (its bf16 shapes without a window go through cuDNN)"
  TTT_CUDNN=1 timeout 150 ./build/gpu/test_attention_fused >"$OUT/fused_with_cudnn.txt" 2>&1 || status=1
  grep -E "FAIL|passed" "$OUT/fused_with_cudnn.txt"
fi
echo "== done at ${SECONDS}s, status $status =="
exit $status
