#!/usr/bin/env bash
# Training throughput of ttt (without and with CUDA graphs) and the JAX
# reference on the same config, one at a time on an otherwise idle GPU. ttt's
# figure is its first epoch's images/s, which includes reading and tokenizing
# real images, the first steps (arena sizing, graph recording) and clipping +
# AdamW; --timing adds where a step's time goes. The JAX bench times its jitted
# step (forward, backward, clip, AdamW) on random data, after compiling.
# LAYERS="mttt-mlp" limits the layers; JAX=0 skips the JAX runs (ttt alone, e.g. again with TTT_FUSED=0).
# Precision, like with like: ttt's f32 rows (FMA, cuBLAS Sgemm without TF32) beside JAX at "highest"; then
# (TF32=0 skips them) ttt --tf32 (TF32 matmuls, split-bf16 MTTT-MLP kernels) beside JAX at "default" (XLA's TF32).
set -uo pipefail
OUT=${OUT:-gpu-out}
for layer in ${LAYERS:-mttt-mlp attention}; do
  inner=""
  [ "$layer" = mttt-mlp ] && inner="--inner-steps 1"
  runs="off on"
  [ "${TF32:-1}" = 1 ] && runs="off on tf32"
  for graph in $runs; do
    flags="--cuda-graph $graph"
    [ "$graph" = tf32 ] && flags="--cuda-graph on --tf32"
    echo "== ttt $layer, $flags"
    ./build/gpu/ttt vision train --device cuda --data data/fashion-mnist --layer "$layer" $inner \
      --tokens pixels --dim 64 --depth 2 --heads 2 --batch 64 --epochs 1 --train-limit 3200 --test-limit 64 \
      $flags --timing --out "$OUT/speed-$layer-graph-$graph" 2>&1 | tail -2
  done
  [ "${JAX:-1}" = 0 ] && continue
  precisions="highest"
  [ "${TF32:-1}" = 1 ] && precisions="highest default"
  for prec in $precisions; do
    echo "== JAX $layer, precision $prec"
    timeout 200 python3 bench/mttt/bench_jax.py --tokens 784 --dim 64 --depth 2 --heads 2 --batch 64 --layer "$layer" \
      --inner-steps 1 --steps 10 --precision "$prec" 2>&1 | tail -1
  done
done
