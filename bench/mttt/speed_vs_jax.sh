#!/usr/bin/env bash
# Training throughput of ttt and the JAX reference on the same config, one at a
# time on an otherwise idle GPU. ttt's figure includes reading and tokenizing
# real images; the JAX bench times its jitted step on random data.
set -uo pipefail
OUT=${OUT:-gpu-out}
for cfg in "mttt-mlp 784 pixels" "attention 784 pixels"; do
  set -- $cfg
  ./build/gpu/ttt vision train --device cuda --data data/fashion-mnist --layer "$1" --inner-steps 1 --tokens "$3" \
    --dim 64 --depth 2 --heads 2 --batch 64 --epochs 1 --train-limit 3200 --test-limit 64 --out "$OUT/speed-$1" 2>&1 | tail -1
  timeout 200 python3 bench/mttt/bench_jax.py --tokens "$2" --dim 64 --depth 2 --heads 2 --batch 64 --layer "$1" \
    --inner-steps 1 --steps 10 2>&1 | tail -1
done
