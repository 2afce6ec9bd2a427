#!/usr/bin/env bash
# Training cost against sequence length (49 -> 784 -> 3136 tokens) for MTTT-MLP
# (linear in n) and softmax attention (quadratic), ttt and the JAX reference,
# one run at a time on an otherwise idle GPU. Same model: D=64, depth 2, 2 heads, batch 16.
set -uo pipefail
OUT=${OUT:-gpu-out}
cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON >"$OUT/cmake.log" 2>&1 &&
  cmake --build build/gpu -j "$(nproc)" --target ttt_cli >"$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; exit 1; }
M="--dim 64 --depth 2 --heads 2 --batch 16 --epochs 1 --train-limit 640 --test-limit 16"
for tok in "patch4" "pixels" "pixels --upsample 2"; do
  for layer in "mttt-mlp --inner-steps 1" "attention"; do
    name=$(echo "$layer-$tok" | tr ' ' '_')
    line=$(timeout 240 ./build/gpu/ttt vision train --device cuda --data data/fashion-mnist --layer $layer --tokens $tok $M \
      --out "$OUT/runs/$name" 2>&1 | tail -1)
    echo "ttt $layer | $tok | $line"
  done
done
timeout 300 python3 bench/mttt/bench_jax.py --tokens 49,784,3136 --layer mttt-mlp,attention --batch 16 --dim 64 --depth 2 \
  --heads 2 --inner-steps 1 --steps 5 2>&1 | python3 -c '
import json, sys
for l in sys.stdin:
    try: m = json.loads(l)
    except Exception: print(l.rstrip()); continue
    print("jax", m.get("layer"), m.get("tokens"), "img/s", m.get("images_per_s"), "peak GiB", m.get("peak_gib"), m.get("error", ""))'
