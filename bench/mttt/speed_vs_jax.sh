#!/usr/bin/env bash
# Training throughput of ttt (without and with CUDA graphs) and the JAX
# reference on the same config, one at a time on an otherwise idle GPU. ttt's
# figure is its first epoch's images/s, which includes reading and tokenizing
# real images, the first steps (arena sizing, graph recording) and clipping +
# AdamW; --timing adds where a step's time goes. The JAX bench times its jitted
# step (forward, backward, clip, AdamW) on random data, after compiling.
# LAYERS="mttt-mlp" limits the layers; JAX=0 skips the JAX runs (ttt alone, e.g. again with TTT_FUSED=0).
set -uo pipefail
OUT=${OUT:-gpu-out}
for layer in ${LAYERS:-mttt-mlp attention}; do
  inner=""
  [ "$layer" = mttt-mlp ] && inner="--inner-steps 1"
  for graph in off on; do
    echo "== ttt $layer, --cuda-graph $graph"
    ./build/gpu/ttt vision train --device cuda --data data/fashion-mnist --layer "$layer" $inner \
      --tokens pixels --dim 64 --depth 2 --heads 2 --batch 64 --epochs 1 --train-limit 3200 --test-limit 64 \
      --cuda-graph "$graph" --timing --out "$OUT/speed-$layer-graph-$graph" 2>&1 | tail -2
  done
  [ "${JAX:-1}" = 0 ] && continue
  echo "== JAX $layer"
  timeout 200 python3 bench/mttt/bench_jax.py --tokens 784 --dim 64 --depth 2 --heads 2 --batch 64 --layer "$layer" \
    --inner-steps 1 --steps 10 2>&1 | tail -1
done
