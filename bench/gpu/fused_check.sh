#!/usr/bin/env bash
# One GPU call for the fused paths of the training step (issue 13; docs/benchmarks.md, "Fused
# training-step paths"): the multi-tensor AdamW, clipping's one-pass global norm, ttt_swiglu and the
# norms with their weight in one kernel (norm_affine).
#   1. build with CUDA (the targets below only)
#   2. test_fused on the GPU: multi-tensor AdamW / clipping bit for bit against the per-tensor and
#      composed paths (f32, f64, bf16), SwiGLU fused against composed, a tiny LM's steps with the
#      fused paths on and off (f32: the same bits; bf16: within rounding), two fused runs alike
#   3. ttt gradcheck --device cuda --op swiglu / rms_norm / layer_norm (f64 finite differences, CPU parity,
#      f32 and bf16)
#   4. the 125M LM, bf16, T = 1K x 8: TTT_FUSED=0 (the paths before: per-tensor AdamW, per-parameter
#      norms, silu + mul, norm + mul) against the fused paths, alternated twice: tok/s, the clip and optimizer
#      phases (--timing), then TTT_PROFILE=1 kernel-entry calls per step for both
#   5. while time is left (the whole call stays under 8 minutes): compute-sanitizer memcheck of the
#      new kernels, test_op_registry on the GPU, torch.compile's tok/s in the same call
# Run from the repository root: bash bench/gpu/fused_check.sh   (logs and the summary in $OUT,
# default ./gpu-out/fused; needs no network; json-c from .debs when carried, as the other scripts)
set -uo pipefail
OUT=${OUT:-gpu-out}/fused
mkdir -p "$OUT"
W=/tmp/ttt-fused-check
mkdir -p $W
LOG="$OUT/summary.txt"
: >"$LOG"
log() { tee -a "$LOG"; }
T0=$(date +%s)
DEADLINE=${DEADLINE:-450} # seconds for the whole call (the device limit is 600 per command)
elapsed() { echo $(($(date +%s) - T0)); }
left() { echo $((DEADLINE - $(elapsed))); }
# run_for MAX CMD...: CMD under a timeout of MAX seconds or what is left, whichever is less
run_for() {
  local max=$1 l
  shift
  l=$(left)
  [ "$l" -gt "$max" ] && l=$max
  [ "$l" -lt 5 ] && { echo "(skipped: out of time)"; return 124; }
  timeout "$l" "$@"
}
source bench/gpu/jsonc_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | log
cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON >"$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
cmake --build build/gpu -j "$(nproc)" --target ttt_cli test_fused test_op_registry test_adapter >"$OUT/build.log" 2>&1 ||
  { grep -iE "error" "$OUT/build.log" | head -40; exit 1; }
echo "build: $(elapsed) s" | log
B=./build/gpu
status=0

echo "== test_fused (CPU, then GPU) ==" | log
if ! run_for 150 $B/test_fused >"$OUT/test_fused.txt" 2>&1; then echo "test_fused FAILED" | log; status=1; fi
grep -E "^(swiglu|norm|adamw|lm) (cpu|cuda)|^(cpu|cuda):|CHECK failed|passed," "$OUT/test_fused.txt" | head -40 | log

echo "== test_adapter (its cuSOLVER SVD against LAPACK runs only here, with a GPU) ==" | log
if ! run_for 90 $B/test_adapter >"$OUT/test_adapter.txt" 2>&1; then echo "test_adapter FAILED" | log; status=1; fi
grep -iE "cuda|cusolver|CHECK failed|passed" "$OUT/test_adapter.txt" | head -12 | log

echo "== gradcheck --device cuda: swiglu, rms_norm, layer_norm (3 seeds each) ==" | log
for op in swiglu rms_norm layer_norm; do
  run_for 60 $B/ttt gradcheck --device cuda --op $op --seeds 3 >"$OUT/gradcheck_$op.txt" 2>&1 || { echo "gradcheck $op FAILED" | log; status=1; }
  grep -E "^$op |passed" "$OUT/gradcheck_$op.txt" | log
done

echo "== 125M LM, bf16, T = 1024 x 8, 16 steps: fused paths off (TTT_FUSED=0) and on, alternated ==" | log
[ -f $W/ts.bin ] || $B/ttt data prepare --tokenizer data/gpt2-tokenizer --out $W/ts.bin data/tinyshakespeare/ >$W/prep.log 2>&1 ||
  { cat $W/prep.log; exit 1; }
declare -A TPS
for round in 1 2; do
  for f in 0 1; do
    name=fused$f-$round
    run_for 90 env TTT_FUSED=$f $B/ttt lm train --device cuda --data $W/ts.bin --preset 125m --seq-len 1024 --batch 8 --steps 16 \
      --log-every 4 --save-every 1000000 --compute bf16 --timing --out $W/lm-$name >"$OUT/lm-$name.log" 2>&1 || status=1
    TPS[$name]=$(grep -oE "[0-9]+ tok/s" "$OUT/lm-$name.log" | tail -1 | grep -oE "[0-9]+")
    echo "TTT_FUSED=$f round $round: ${TPS[$name]:-n/a} tok/s (last window); $(grep -E '^step 16' "$OUT/lm-$name.log" | head -1)" | log
    grep -E "ms per step" "$OUT/lm-$name.log" | tail -1 | sed "s/^ */    /" | log
  done
done
avg() { awk -v a="${TPS[$1-1]:-}" -v b="${TPS[$1-2]:-}" 'BEGIN{ if (a == "" || b == "") print ""; else printf "%.0f", (a + b) / 2 }'; }
OFF=$(avg fused0) ON=$(avg fused1)
[ -n "$OFF" ] && [ -n "$ON" ] && awk -v a="$OFF" -v b="$ON" \
  'BEGIN{printf "tok/s, mean of two runs: fused off %d, on %d: %.3fx\n", a, b, b / a}' | log
# the fused runs' losses, the same seed and data: two runs must print the same numbers (determinism)
l1=$(grep -E '^step 16' "$OUT/lm-fused1-1.log" | grep -oE "loss [0-9.]+") l2=$(grep -E '^step 16' "$OUT/lm-fused1-2.log" | grep -oE "loss [0-9.]+")
[ -n "$l1" ] && { [ "$l1" = "$l2" ] && echo "fused runs 1 and 2: step 16 $l1 in both" || echo "fused runs DIFFER: $l1 / $l2"; } | log

echo "== TTT_PROFILE=1, 4 steps, no CUDA graph: kernel-entry calls per step (each entry synchronizes) ==" | log
for f in 0 1; do
  run_for 90 env TTT_FUSED=$f TTT_PROFILE=1 $B/ttt lm train --device cuda --data $W/ts.bin --preset 125m --seq-len 1024 --batch 8 \
    --steps 4 --log-every 4 --save-every 1000000 --compute bf16 --cuda-graph off --out $W/lm-prof$f >"$OUT/profile-fused$f.log" 2>&1 ||
    status=1
  # rows: name [label] dtype calls total_ms us/call share first_ms
  awk -v f=$f '/^== TTT_PROFILE/ {on = 1; next} on && NF >= 6 && $(NF-4) ~ /^[0-9]+$/ {
      n = $(NF-4); total += n; ms += $(NF-3)
      if ($1 ~ /^(adamw|adamw_multi|sgd|sumsq_multi|scale_multi|swiglu|swiglu_bwd|norm:rms|norm_bwd:rms|norm_affine:rms|norm_affine_bwd:rms|reduce:sum|unary:silu|unary:silu_grad|unary:affine|binary:mul|binary:add|copy:convert|copy)$/)
        rows = rows sprintf("    %-24s %-5s %6.1f calls/step\n", $1, $(NF-5), n / 4) }
    END { printf "TTT_FUSED=%d: %.0f kernel-entry calls per step (%.0f ms per step profiled)\n%s", f, total / 4, ms / 4, rows }' \
    "$OUT/profile-fused$f.log" | log
done

if command -v compute-sanitizer >/dev/null; then
  echo "== compute-sanitizer memcheck: swiglu, rms_norm (gradcheck) and test_fused --no-lm ==" | log
  for op in swiglu rms_norm; do
    if ! run_for 45 env TTT_CUDA_POOL=0 compute-sanitizer --tool memcheck --error-exitcode 9 $B/ttt gradcheck --device cuda --seeds 1 \
      --op $op >"$OUT/memcheck_$op.txt" 2>&1; then echo "memcheck FAILED (or out of time) on $op" | log; status=1; fi
  done
  if ! run_for 120 env TTT_CUDA_POOL=0 compute-sanitizer --tool memcheck --error-exitcode 9 $B/test_fused --no-lm \
    >"$OUT/memcheck_test_fused.txt" 2>&1; then echo "memcheck FAILED (or out of time) on test_fused" | log; status=1; fi
  grep -hE "ERROR SUMMARY" "$OUT"/memcheck_*.txt | sort | uniq -c | log
fi

echo "== test_op_registry (every gradcheck case on the CPU and the GPU; swiglu's kernels must run) ==" | log
if ! run_for 150 $B/test_op_registry >"$OUT/op_registry.txt" 2>&1; then echo "test_op_registry FAILED (or out of time)" | log; status=1; fi
grep -E "CHECK failed|passed," "$OUT/op_registry.txt" | head -10 | log

if [ "$(left)" -gt 150 ] && python3 -c "import torch" 2>/dev/null; then
  echo "== torch.compile, the same model and shape (bench/lm/torch_lm.py) ==" | log
  line=$(run_for 200 env PYTHONPATH=bench/lm python3 bench/lm/torch_lm.py bench --preset 125m --seq 1024 --batch 8 --dtype bf16 --compile \
    2>>"$OUT/torch_err.txt" | tail -1)
  echo "torch.compile: $line" | log
  tc=$(echo "$line" | grep -oE '"tokens_per_s": [0-9.]+' | grep -oE '[0-9.]+$' | cut -d. -f1)
  [ -n "$tc" ] && [ -n "$OFF" ] && [ -n "$ON" ] && awk -v a="$OFF" -v b="$ON" -v c="$tc" \
    'BEGIN{printf "against torch.compile %d tok/s: fused off %.2fx, on %.2fx\n", c, a / c, b / c}' | log
else
  echo "(torch.compile skipped: $(left) s left or no torch)" | log
fi
echo "total: $(elapsed) s, status $status" | log
exit $status
