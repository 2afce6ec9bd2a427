#!/usr/bin/env bash
# The double backward of causal attention on the GPU machine, in one call
# (docs/benchmarks.md, "Attention double backward"): build; checks (second-order
# gradients against float64 finite differences on the GPU, then against PyTorch's
# float64 math backend through a fixture); then forward + first backward
# (create_graph) + double backward timed in ttt (bench/gpu/attn_double_backward.c)
# and in PyTorch with SDPA forced to the MATH backend
# (bench/gpu/torch_double_backward.py), same sizes, same GPU; one table.
#   TS      sequence lengths (default "1024 2048 4096 8192"); H = 12, d = 64, B = 1
#   REPS    timed repetitions per size (default 10, after 2 warmups)
#   TTT_DTYPES    ttt dtypes (default f32; bf16 also runs, through the composed path in f32)
#   TORCH_DTYPES  PyTorch dtypes (default "f32 bf16")
#   CHECKS=0 skips the checks, BENCH=0 the timings.
# Logs and csv in $OUT (or ./gpu-out); the fixture lands in $OUT/attn_double_backward_torch.safetensors
# (copy it to tests/fixtures/ to have ctest compare the CPU with it).
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
TS=${TS:-"1024 2048 4096 8192"}
REPS=${REPS:-10}
TTT_DTYPES=${TTT_DTYPES:-f32}
TORCH_DTYPES=${TORCH_DTYPES:-"f32 bf16"}
H=12 D=64 B=1
source bench/gpu/jsonc_env.sh # json-c (the fixture reader) from .debs when the machine lacks it
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# a cache from a build without json-c would keep it out (pkg-config checks once)
if pkg-config --exists json-c && ! grep -q "JSONC_FOUND:INTERNAL=1" build/gpu/CMakeCache.txt 2>/dev/null; then rm -f build/gpu/CMakeCache.txt; fi
cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON >"$OUT/cmake.log" 2>&1 || { tail -40 "$OUT/cmake.log"; exit 1; }
cmake --build build/gpu -j16 --target attn_double_backward >"$OUT/build.log" 2>&1 \
  || { grep -iE "error" "$OUT/build.log" | head -40; exit 1; }
BIN=./build/gpu/attn_double_backward
PY=bench/gpu/torch_double_backward.py
FIX="$OUT/attn_double_backward_torch.safetensors"
status=0

if [ "${CHECKS:-1}" = 1 ]; then
  echo "== second order vs float64 finite differences, on the GPU (f64; then f32 against f64) =="
  $BIN --device cuda --check >"$OUT/check_cuda.txt" 2>&1 || { echo "check FAILED"; status=1; }
  cat "$OUT/check_cuda.txt"
  echo "== PyTorch float64 fixture (SDPA math backend), then ttt against it on cuda and cpu =="
  if python3 $PY --check "$FIX" >"$OUT/torch_check.txt" 2>&1; then
    cat "$OUT/torch_check.txt"
    for dev in cuda cpu; do
      $BIN --device $dev --fixture "$FIX" >"$OUT/fixture_$dev.txt" 2>&1 || { echo "fixture on $dev FAILED"; status=1; }
      cat "$OUT/fixture_$dev.txt"
    done
  else
    echo "torch --check FAILED"; tail -20 "$OUT/torch_check.txt"; status=1
  fi
fi

if [ "${BENCH:-1}" = 1 ]; then
  echo "== timings: forward + first backward (create_graph) + double backward, H $H d $D B $B, reps $REPS =="
  : >"$OUT/ttt.csv"
  : >"$OUT/torch.csv"
  for T in $TS; do
    for dt in $TTT_DTYPES; do
      timeout 240 $BIN --device cuda --dtype $dt --T $T --heads $H --dim $D --batch $B --window 0 --reps $REPS --no-header \
        >>"$OUT/ttt.csv" 2>>"$OUT/ttt_err.txt" \
        || { echo "ttt $dt T $T failed (rc $?): $(tail -1 "$OUT/ttt_err.txt")"; status=1; }
    done
    tail -n "$(echo $TTT_DTYPES | wc -w)" "$OUT/ttt.csv"
    # one process per T: an out-of-memory at one T (printed as OOM) leaves the next a clean GPU
    timeout 300 python3 $PY --T $T --heads $H --dim $D --batch $B --window 0 --dtypes $TORCH_DTYPES --reps $REPS --no-header \
      >>"$OUT/torch.csv" 2>>"$OUT/torch_err.txt" \
      || { echo "torch T $T failed (rc $?): $(tail -1 "$OUT/torch_err.txt")"; status=1; }
    grep -E "^csv,torch-math,[a-z0-9]+,cuda,$B,$H,$T," "$OUT/torch.csv"
  done
  grep -m1 "^# device" "$OUT/torch.csv"
  echo "== table =="
  python3 $PY --table "$OUT/ttt.csv" "$OUT/torch.csv" | tee "$OUT/double_backward_table.md"
fi
exit $status
