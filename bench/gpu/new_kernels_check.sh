#!/usr/bin/env bash
# The twelfth session's two kernel changes on a GPU, in one device call: the few-rows column sum (k_red_cols_few in
# reduce_kernels.cuh) and the MTTT-MLP kernels on TF32 mma (TTT_MTTT_MMA=3 / 4, mttt_step.cuh's TC 2). Build; the
# sums and maxima against the CPU in float64 (ttt gradcheck --op sum / max) and memcheck of them; test_mttt_fused
# with TTT_MTTT_MMA=3 (the kernels against the CPU's within TF32's tolerance in a TF32 context, two runs bit for
# bit); memcheck, racecheck and synccheck of the MTTT kernels on TF32 (TTT_MTTT_MMA=4, gradcheck's shapes; only
# the error summaries count there, the gradcheck's split-bf16 tolerance does not apply); then, while DEADLINE
# (seconds, default 540) allows, the pixel ViT under --tf32 with split-bf16 and with TF32 mma, alternated, and
# bench/gpu/vit_profile.sh. Carry data/fashion-mnist. Logs in $OUT (default ./gpu-out).
set -uo pipefail
DEADLINE_DEFAULT=540
source bench/gpu/common.sh
build_gpu ttt_cli test_mttt_fused || exit 1
B=./build/gpu
status=0
for op in sum max; do
  timeout 60 $B/ttt gradcheck --device cuda --seeds 2 --op $op >"$OUT/gradcheck_$op.txt" 2>&1 || status=1
  echo "gradcheck --op $op: $(grep -E 'passed|FAIL' "$OUT/gradcheck_$op.txt" | tail -1)"
  TTT_CUDA_POOL=0 timeout 90 compute-sanitizer --tool memcheck --error-exitcode 9 $B/ttt gradcheck --device cuda --seeds 1 \
    --op $op >"$OUT/memcheck_$op.txt" 2>&1
  echo "memcheck gradcheck --op $op: exit $?; $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_$op.txt" | tail -1 | sed 's/^=* *//')"
done
TTT_MTTT_MMA=3 timeout 120 $B/test_mttt_fused >"$OUT/test_mttt_fused_tf32.txt" 2>&1 || status=1
echo "TTT_MTTT_MMA=3 test_mttt_fused: $(tail -1 "$OUT/test_mttt_fused_tf32.txt")"
grep -E "CHECK failed|FAIL|tf32|cuda vs cpu f32" "$OUT/test_mttt_fused_tf32.txt" | head -12
for tool in memcheck racecheck synccheck; do
  [ "$(left)" -lt 200 ] && break
  TTT_MTTT_MMA=4 TTT_CUDA_POOL=0 timeout 90 compute-sanitizer --tool $tool --error-exitcode 9 $B/ttt gradcheck \
    --device cuda --op mttt_mlp_step --seeds 1 >"$OUT/${tool}_mttt_tf32.txt" 2>&1
  echo "$tool (TTT_MTTT_MMA=4, gradcheck mttt_mlp_step): $(grep -E 'ERROR SUMMARY' "$OUT/${tool}_mttt_tf32.txt" | tail -1 | sed 's/^=* *//')"
done
VIT="vision train --device cuda --data data/fashion-mnist --layer mttt-mlp --inner-steps 1 --tokens pixels --dim 64
  --depth 2 --heads 2 --batch 64 --epochs 1 --test-limit 64 --tf32"
for mma in 1 3 1 3; do
  [ "$(left)" -lt 150 ] && break
  TTT_MTTT_MMA=$mma timeout 60 $B/ttt $VIT --train-limit 3200 --out /tmp/vit-tf32-$RANDOM 2>&1 | grep -E "train loss" |
    cut -c1-140 | sed "s/^/[--tf32, TTT_MTTT_MMA=$mma] /"
done
if [ "$(left)" -gt 150 ]; then
  timeout $(($(left) - 20)) bash bench/gpu/vit_profile.sh 2>&1 | grep -E "^==|img/s|mttt_mlp|reduce:sum|unprofiled" | head -60
fi
echo "total: $(($(date +%s) - t0)) s"
exit $status
