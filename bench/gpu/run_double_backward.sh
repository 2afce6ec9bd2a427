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
#   BF16=1 adds the bf16 double backward's before/after (attention_bwd2_bf16.cuh, issue 13's goal: the
#     whole at most 4x the first-order forward + backward): the check of bf16 against f32 on the GPU
#     (attn_double_backward --vs-f32, with the bf16 kernels, then with TTT_ATTN_BWD2_BF16=0), the engine
#     test against the composed f64 path (tests/test_attention_bwd2.c, f32 and bf16) and under memcheck, then at
#     each of BF16_TS (default "2048 8192") forward + backward bf16 (the baseline), forward + backward +
#     double backward in bf16 with the kernels, in bf16 with TTT_ATTN_BWD2_BF16=0 (the path before them:
#     the composed attention recomputed in f32), and in f32 (the f32 kernels, beside the f32 forward + backward:
#     the goal's f32 ratio); one table. No PyTorch.
#     MEMCHECK=0 skips the memcheck run.
#     Alone: CHECKS=0 BENCH=0 BF16=1 bash bench/gpu/run_double_backward.sh
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
targets=attn_double_backward
[ "${BF16:-0}" = 1 ] && targets="$targets test_attention_bwd2"
cmake --build build/gpu -j16 --target $targets >"$OUT/build.log" 2>&1 \
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
if [ "${BF16:-0}" = 1 ]; then
  echo "== bf16 double backward: bf16 against f32 on the GPU, the bf16 kernels, then TTT_ATTN_BWD2_BF16=0 =="
  $BIN --device cuda --vs-f32 >"$OUT/vs_f32.txt" 2>&1 || { echo "vs-f32 (bf16 kernels) FAILED"; status=1; }
  cat "$OUT/vs_f32.txt"
  TTT_ATTN_BWD2_BF16=0 $BIN --device cuda --vs-f32 >"$OUT/vs_f32_composed.txt" 2>&1 \
    || { echo "vs-f32 (composed) FAILED"; status=1; }
  cat "$OUT/vs_f32_composed.txt"
  echo "== tests/test_attention_bwd2 (second order through the fused kernels, f32 and bf16, against composed f64), then memcheck =="
  ./build/gpu/test_attention_bwd2 >"$OUT/test_attention_bwd2.txt" 2>&1 || { echo "test_attention_bwd2 FAILED"; status=1; }
  grep -E "^B |FAIL|passed" "$OUT/test_attention_bwd2.txt"
  # the composed fallback (bwd2_composed: what every bf16 double backward ran before the kernels, and what
  # shapes they decline still run), inside a plain backward
  TTT_ATTN_BWD2_BF16=0 ./build/gpu/test_attention_bwd2 >"$OUT/test_attention_bwd2_composed.txt" 2>&1 ||
    { echo "test_attention_bwd2 with TTT_ATTN_BWD2_BF16=0 FAILED"; status=1; }
  grep -E "bf16|FAIL|passed" "$OUT/test_attention_bwd2_composed.txt" | sed "s/^/[TTT_ATTN_BWD2_BF16=0] /"
  [ "${MEMCHECK:-1}" = 1 ] && { TTT_CUDA_POOL=0 timeout 300 compute-sanitizer --tool memcheck --error-exitcode 9 ./build/gpu/test_attention_bwd2 \
    >"$OUT/test_attention_bwd2_memcheck.txt" 2>&1 || { echo "memcheck FAILED on test_attention_bwd2"; status=1; }
    grep -E "ERROR SUMMARY" "$OUT/test_attention_bwd2_memcheck.txt"; }
  echo "== bf16 double backward timings, H $H d $D B $B, reps $REPS (ms: median, whole forward [+ backward [+ double backward]]) =="
  CSV="$OUT/bf16_dbwd.csv"
  : >"$CSV"
  for T in ${BF16_TS:-2048 8192}; do
    common="--device cuda --T $T --heads $H --dim $D --batch $B --window 0 --reps $REPS --no-header"
    timeout 120 $BIN $common --dtype bf16 --first-order --label fwdbwd-bf16 >>"$CSV" 2>>"$OUT/bf16_err.txt" || status=1
    timeout 240 $BIN $common --dtype bf16 --label dbwd-bf16-kernels >>"$CSV" 2>>"$OUT/bf16_err.txt" || status=1
    TTT_ATTN_BWD2_BF16=0 timeout 240 $BIN $common --dtype bf16 --label dbwd-bf16-composed >>"$CSV" 2>>"$OUT/bf16_err.txt" || status=1
    timeout 120 $BIN $common --dtype f32 --first-order --label fwdbwd-f32 >>"$CSV" 2>>"$OUT/bf16_err.txt" || status=1
    timeout 240 $BIN $common --dtype f32 --label dbwd-f32-kernels >>"$CSV" 2>>"$OUT/bf16_err.txt" || status=1
    grep -E ",$T," "$CSV"
  done
  [ -s "$OUT/bf16_err.txt" ] && tail -5 "$OUT/bf16_err.txt"
  nvidia-smi --query-gpu=name --format=csv,noheader
  echo "| T | fwd+bwd bf16 ms | dbwd bf16, kernels ms (x fwd+bwd) | dbwd bf16, composed ms (x fwd+bwd) | fwd+bwd f32 ms | dbwd f32 ms (x f32 fwd+bwd) | composed / kernels |"
  echo "|---|---|---|---|---|---|---|"
  awk -F, '{ ms[$7 "," $2] = $10; if (!($7 in seen)) { seen[$7] = 1; order[n++] = $7 } }
    END { for (i = 0; i < n; i++) { t = order[i]; f = ms[t ",fwdbwd-bf16"]; k = ms[t ",dbwd-bf16-kernels"];
            c = ms[t ",dbwd-bf16-composed"]; x = ms[t ",dbwd-f32-kernels"]; f32 = ms[t ",fwdbwd-f32"];
            printf "| %s | %s | %s (%.2fx) | %s (%.2fx) | %s | %s (%.2fx) | %.2fx |\n", t, f, k, (f > 0 ? k / f : 0), c,
                   (f > 0 ? c / f : 0), f32, x, (f32 > 0 ? x / f32 : 0), (k > 0 ? c / k : 0) } }' "$CSV" | tee "$OUT/bf16_dbwd_table.md"
fi
exit $status
