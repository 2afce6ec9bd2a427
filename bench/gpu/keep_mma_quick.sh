#!/usr/bin/env bash
# The smallest GPU check of two changes, for a device call with little time left (the full versions are the keep and
# mtttmma parts of bench/gpu/pending.sh): one build; TTT-E2E with kept chunk graphs (e2e_step --check --keep-graphs,
# then the 125M bf16 8K step rematerialized and kept, beside full attention); the MTTT-MLP kernels' tensor-core path
# (test_mttt_fused with TTT_MTTT_MMA=2, memcheck of a gradcheck, the pixel ViT's images/s with =0 and =2).
# Carry .debs and data/fashion-mnist. Logs in $OUT.
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
source bench/gpu/jsonc_env.sh
nvidia-smi --query-gpu=name --format=csv,noheader
t0=$(date +%s)
cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON >"$OUT/cmake.log" 2>&1 &&
  cmake --build build/gpu -j "$(nproc)" --target e2e_step ttt_cli test_mttt_fused >"$OUT/build.log" 2>&1 ||
  { grep -iE error "$OUT/build.log" | head; exit 1; }
echo "build: $(($(date +%s) - t0)) s"
B=./build/gpu
timeout 60 $B/e2e_step --check --device cuda --keep-graphs 2>&1 | tail -5
E="$B/e2e_step --preset 125m --device cuda --compute bf16 --seq 8192 --reps 3"
timeout 40 $E --kinds fa,e2e 2>&1 | tail -2
timeout 40 $E --kinds e2e --keep-graphs 2>&1 | tail -1
echo "e2e: $(($(date +%s) - t0)) s"
TTT_MTTT_MMA=2 timeout 40 $B/test_mttt_fused >"$OUT/test_mttt_fused_mma2.txt" 2>&1
echo "TTT_MTTT_MMA=2 test_mttt_fused: exit $?; $(grep -E 'passed,' "$OUT/test_mttt_fused_mma2.txt" | tail -1)"
grep -E "CHECK failed" "$OUT/test_mttt_fused_mma2.txt" | head -5
if command -v compute-sanitizer >/dev/null; then
  TTT_MTTT_MMA=2 TTT_CUDA_POOL=0 timeout 40 compute-sanitizer --tool memcheck --error-exitcode 9 $B/ttt gradcheck \
    --device cuda --op mttt_mlp_step --seeds 1 >"$OUT/memcheck_mttt_mma.txt" 2>&1
  echo "memcheck (TTT_MTTT_MMA=2): exit $?; $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_mttt_mma.txt" | tail -1 | sed 's/^=* *//')"
fi
for mma in 0 2; do
  TTT_MTTT_MMA=$mma timeout 30 $B/ttt vision train --device cuda --data data/fashion-mnist --layer mttt-mlp --inner-steps 1 \
    --tokens pixels --dim 64 --depth 2 --heads 2 --batch 64 --epochs 1 --train-limit 3200 --test-limit 64 \
    --out /tmp/vit-mma-$RANDOM 2>&1 | grep -E "^epoch 1/1  train" | cut -c1-130 | sed "s/^/[TTT_MTTT_MMA=$mma] /"
done
echo "total: $(($(date +%s) - t0)) s"
