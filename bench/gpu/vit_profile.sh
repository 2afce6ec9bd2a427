#!/usr/bin/env bash
# Where the GPU MTTT-MLP ViT's step goes (pixels, D 64, depth 2, heads 2, batch 64: bench/mttt/speed_vs_jax.sh's
# shape), under TTT_PROFILE=scopes (every kernel entry synchronizes; rows keyed by the VJP that queued them): with
# the fused MTTT-MLP kernels (mttt_step.cu) and with TTT_FUSED=0 (the inner step composed of primitive ops: cuBLAS
# products and one pass per elementwise op), f32 and --tf32, and the fused kernels with TF32 mma under --tf32
# (TTT_MTTT_MMA=3) where the default takes split-bf16. Answers whether the composed step's products alone are
# cheaper than the fused kernels (which run at 5-6 TFLOP/s), and what TF32 gains. Carry data/fashion-mnist. Logs in
# $OUT.
#   bash bench/gpu/vit_profile.sh
set -uo pipefail
source bench/gpu/common.sh
build_gpu ttt_cli || exit 1
for fused in 1 0; do
  for prec in f32 tf32 tf32native; do
    flag="" mma=1
    [ $prec != f32 ] && flag=--tf32
    [ $prec = tf32native ] && mma=3 # the MTTT kernels on TF32 mma (one product where split-bf16 takes three)
    [ $prec = tf32native ] && [ $fused = 0 ] && continue # the composed step has no MTTT kernels
    TTT_MTTT_MMA=$mma TTT_FUSED=$fused TTT_PROFILE=scopes timeout 120 ./build/gpu/ttt vision train --device cuda --data data/fashion-mnist \
      --layer mttt-mlp --inner-steps 1 --tokens pixels --dim 64 --depth 2 --heads 2 --batch 64 --epochs 1 \
      --train-limit 1280 --test-limit 64 --cuda-graph off $flag --out /tmp/vit-prof-$RANDOM >"$OUT/vit_prof_fused${fused}_$prec.txt" 2>&1
    echo "== TTT_FUSED=$fused $prec (20 steps): exit $?"
    grep -E "img/s|TTT_PROFILE" "$OUT/vit_prof_fused${fused}_$prec.txt" | tail -2
    grep -E "^[a-z_]+ > |^entry" "$OUT/vit_prof_fused${fused}_$prec.txt" | head -25
    TTT_MTTT_MMA=$mma TTT_FUSED=$fused timeout 120 ./build/gpu/ttt vision train --device cuda --data data/fashion-mnist --layer mttt-mlp \
      --inner-steps 1 --tokens pixels --dim 64 --depth 2 --heads 2 --batch 64 --epochs 1 --train-limit 3200 --test-limit 64 \
      --cuda-graph on $flag --out /tmp/vit-speed-$RANDOM 2>&1 | grep -E "train loss" | sed "s/^/unprofiled, graphs on: /"
  done
done
echo "total $(($(date +%s) - t0)) s"
