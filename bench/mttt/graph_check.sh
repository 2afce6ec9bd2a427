#!/usr/bin/env bash
# CUDA graphs must not change training: the same run with --cuda-graph off and
# on (same seed) must write the same metrics (timings aside) and a byte-identical
# checkpoint (parameters + AdamW state after every step). Runs on the GPU
# machine after a CUDA build in build/gpu; data in data/fashion-mnist.
set -uo pipefail
OUT=${OUT:-gpu-out}/graph-check
TTT=${TTT:-./build/gpu/ttt}
rm -rf "$OUT"
mkdir -p "$OUT"
status=0
# name | flags: 20+ steps; graphs record at the third full batch, replay across
# the epoch boundary (evaluation in between); the second case ends each epoch
# with a smaller batch (runs without the graph) and rematerializes inner steps.
while IFS='|' read -r name flags; do
  for g in off on; do
    $TTT vision train --device cuda --data data/fashion-mnist --cuda-graph $g --seed 7 --epochs 2 $flags \
      --out "$OUT/$name-$g" >"$OUT/$name-$g.log" 2>&1 || { echo "$name --cuda-graph $g failed:"; tail -5 "$OUT/$name-$g.log"; status=1; }
  done
  python3 - "$OUT/$name-off" "$OUT/$name-on" "$name" <<'PY' || status=1
import json, sys
a, b, name = sys.argv[1:4]
timing = {"images_per_s", "seconds", "eval_seconds"}
la = [json.loads(l) for l in open(a + "/metrics.jsonl")]
lb = [json.loads(l) for l in open(b + "/metrics.jsonl")]
same_ckpt = open(a + "/checkpoint.safetensors", "rb").read() == open(b + "/checkpoint.safetensors", "rb").read()
diff = [(k, x[k], y[k]) for x, y in zip(la, lb) for k in x if k not in timing and x[k] != y[k]]
ok = len(la) == len(lb) == 2 and not diff and same_ckpt
print(f"{name}: {'bit-identical' if ok else 'DIFFERENT'}: metrics of {len(la)} epochs "
      f"{'equal' if not diff else diff[:4]}, checkpoint {'identical' if same_ckpt else 'differs'}; "
      f"train loss {la[-1]['train_loss']:.6f}, test loss {la[-1]['test_loss']:.6f}, inner {la[-1]['train_inner_loss']}")
sys.exit(0 if ok else 1)
PY
done <<'CASES'
mttt-mlp-pixels|--layer mttt-mlp --tokens pixels --dim 64 --depth 2 --heads 2 --batch 64 --train-limit 640 --test-limit 256
mttt-mlp-T2-remat|--layer mttt-mlp --inner-steps 2 --checkpoint --tokens patch4 --batch 32 --train-limit 350 --test-limit 256
attention-patch4|--layer attention --tokens patch4 --batch 32 --train-limit 320 --test-limit 256
CASES
grep -h "CUDA graphs\|ms per training step" "$OUT"/*-on.log | sort | uniq -c | head -8
exit $status
