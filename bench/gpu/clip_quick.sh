#!/usr/bin/env bash
# The smallest GPU check of ttt_clip_step's CUDA kernels (on by default since their first GPU run, 2026-12-07;
# TTT_CLIP_STEP_CUDA=0 turns them off) and of the split-key dQ store, for a device call with little time left: one build, gradcheck on CUDA, test_fused's kernel checks, the
# TTT-E2E step's check against the CPU, the 8K step with the kernels off and on (same binary), and
# test_attention_fused --quick with 3 key shares forced. Logs in $OUT.
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
source bench/gpu/jsonc_env.sh
nvidia-smi --query-gpu=name --format=csv,noheader
t0=$(date +%s)
cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON >"$OUT/cmake.log" 2>&1 &&
  cmake --build build/gpu -j "$(nproc)" --target ttt_cli test_fused e2e_step test_attention_fused >"$OUT/build.log" 2>&1 ||
  { grep -iE error "$OUT/build.log" | head; exit 1; }
echo "build: $(($(date +%s) - t0)) s"
export TTT_CLIP_STEP_CUDA=1
for op in clip_step "clip_step(no clip)"; do timeout 40 ./build/gpu/ttt gradcheck --device cuda --op "$op" --seeds 3 2>&1 | tail -1; done
timeout 60 ./build/gpu/test_fused --no-lm 2>&1 | grep -E "CHECK failed|passed," | head -5
timeout 60 ./build/gpu/e2e_step --check --device cuda 2>&1 | tail -1
for c in 0 1 0 1; do
  TTT_CLIP_STEP_CUDA=$c timeout 40 ./build/gpu/e2e_step --preset 125m --device cuda --compute bf16 --seq 8192 --kinds fa,e2e \
    --reps 3 2>&1 | tail -2 | sed "s/^/[TTT_CLIP_STEP_CUDA=$c] /"
done
TTT_ATTN_SPLIT=3 timeout 40 ./build/gpu/test_attention_fused --quick 2>&1 | tail -1 | sed "s/^/[TTT_ATTN_SPLIT=3] /"
echo "total: $(($(date +%s) - t0)) s"
