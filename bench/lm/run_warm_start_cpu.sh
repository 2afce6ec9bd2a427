#!/usr/bin/env bash
# Warm start vs scratch (docs/results-e2e.md): the full-attention model of
# run_e2e_cpu.sh becomes TTT-E2E (window 256, a prime MLP in its last block,
# b 128, its architecture otherwise kept) and is meta-trained on more tokens;
# the same TTT-E2E architecture trained from scratch sees the same added tokens.
# Then loss by position on the held-out documents for both.
#   usage: bench/lm/run_warm_start_cpu.sh [RUNS=runs/e2e-cpu]  (env: STEPS, TTT, DATA)
set -uo pipefail
cd "$(dirname "$0")/../.."
R=${1:-runs/e2e-cpu}
DATA=${DATA:-data/lm4k}
T=${TTT:-build/release/ttt}
STEPS=${STEPS:-40}
E2E="--window 256 --prime-blocks 1 --inner-chunk 128 --inner-clip 1"
COMMON="--data $DATA/train.bin --seq-len 2048 --batch 2 --steps $STEPS --lr 3e-3 --warmup 4 --log-every 5 --save-every 10
  --seed 2 --threads 1"
$T lm train $COMMON --init-from "$R/fa" $E2E --out "$R/warm" >"$R/warm.train.log" 2>&1 &
$T lm train $COMMON --preset tiny-fa --dim 64 --depth 4 --heads 4 --mlp-hidden 172 $E2E --out "$R/scratch" \
  >"$R/scratch.train.log" 2>&1 &
wait
for m in warm scratch; do
  $T lm eval --ckpt "$R/$m" --data $DATA/longdocs.bin --context 8192 --max-docs 8 --threads 1 --out "$R/eval_$m.jsonl" \
    >"$R/eval_$m.txt" 2>&1 &
done
wait
tail -n 4 "$R"/eval_warm.txt "$R"/eval_scratch.txt
