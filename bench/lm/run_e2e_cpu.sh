#!/usr/bin/env bash
# The CPU experiment of docs/results-e2e.md: full attention, sliding window and
# TTT-E2E, D 64 x 4 blocks (TTT-E2E: the last block learns at test time), on the
# same tokens (--seed 1: the same batches), context 2048 with a window of 256,
# then loss by position on held-out long documents read to 8192 tokens, and
# passkey retrieval. Runs resume (--resume) if interrupted: rerun the script.
#   usage: bench/lm/run_e2e_cpu.sh [OUT=runs/e2e-cpu]   (env: STEPS, THREADS, DATA=data/lm4k)
# DATA holds train.bin, longdocs.bin and tokenizer/ (a 4096-token BPE: the
# tiny models spend their time on the head otherwise): see docs/results-e2e.md.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/e2e-cpu}
DATA=${DATA:-data/lm4k}
STEPS=${STEPS:-150}
THREADS=${THREADS:-1}
T=${TTT:-build/release/ttt}
mkdir -p "$OUT"
COMMON="--data $DATA/train.bin --dim 64 --depth 4 --heads 4 --seq-len 2048 --batch ${BATCH:-2} --steps $STEPS --lr 3e-3
  --warmup $((STEPS / 10)) --log-every 5 --save-every 10 --seed 1 --threads $THREADS"
train() { # name, flags...
  local name=$1; shift
  local resume=""
  [ -f "$OUT/$name/model.safetensors" ] && resume=--resume
  $T lm train $COMMON "$@" --out "$OUT/$name" $resume >"$OUT/$name.train.log" 2>&1
  echo "$name: $(tail -1 "$OUT/$name.train.log")"
}
train fa --preset tiny-fa --mlp-hidden 172 &
train swa --preset tiny-swa --mlp-hidden 172 --window 256 &
train e2e --preset tiny-e2e --mlp-hidden 138 --prime-hidden 138 --prime-blocks 1 --window 256 --inner-chunk 128 &
wait
for m in fa swa e2e; do
  $T lm eval --ckpt "$OUT/$m" --data $DATA/longdocs.bin --context 8192 --max-docs ${DOCS:-8} --threads $THREADS \
    --out "$OUT/eval_$m.jsonl" >"$OUT/eval_$m.txt" 2>"$OUT/eval_$m.err" &
done
$T lm eval --ckpt "$OUT/e2e" --data $DATA/longdocs.bin --context 8192 --max-docs ${DOCS:-8} --eta 0 --threads $THREADS \
  --out "$OUT/eval_e2e_eta0.jsonl" >"$OUT/eval_e2e_eta0.txt" 2>&1 &
wait
tail -n 3 "$OUT"/eval_*.txt
$T needle --ckpt "$OUT/fa" --ckpt "$OUT/swa" --ckpt "$OUT/e2e" --label "full attention" --label "SWA 256" --label "TTT-E2E" \
  --tokenizer $DATA/tokenizer --data $DATA/longdocs.bin --lengths 512,1024,2048,4096 --depths 0,0.25,0.5,0.75,1 \
  --trials ${TRIALS:-4} --candidates 10 --threads $THREADS --out "$OUT/needle.jsonl" | tee "$OUT/needle.txt"
