#!/usr/bin/env bash
# The CPU comparison of sequence mixers in docs/results-mixers.md: full attention, SWA,
# TTT-Linear, TTT-MLP (mamba backbone, as the TTT paper's main results) and TTT-KVB (TTT-MLP
# after SWA), linear attention, Gated DeltaNet and Mamba 2 (docs/mixers.md), and TTT-E2E
# (docs/results-e2e.md: SWA in every block, the last block's prime MLP learning at test time),
# D 64 x 4 blocks, on the same tokens (--seed 1: the same batches) of the corpus
# of bench/lm/run_e2e_cpu.sh, then loss by position on its held-out long documents.
# Short runs (minutes each on one thread), meant for a shared CPU machine.
#   usage: bench/mixers/run_mixers_cpu.sh [OUT=runs/mixers-cpu]
#   env: DATA (default data/lm4k: train.bin, longdocs.bin; see docs/results-e2e.md), STEPS (60),
#        SEQ (512), WINDOW (128), CONTEXT (2048), DOCS (4), THREADS (1), TTT (build/release/ttt)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/mixers-cpu}
DATA=${DATA:-data/lm4k}
STEPS=${STEPS:-60}
SEQ=${SEQ:-512}
WINDOW=${WINDOW:-128}
THREADS=${THREADS:-1}
T=${TTT:-build/release/ttt}
mkdir -p "$OUT"
COMMON="--data $DATA/train.bin --preset tiny --dim 64 --depth 4 --heads 4 --mlp-hidden 172 --seq-len $SEQ --batch 2
  --steps $STEPS --lr 3e-3 --warmup $((STEPS / 10)) --log-every 5 --save-every 20 --seed 1 --threads $THREADS"
train() { # name, flags...
  local name=$1; shift
  local resume=""
  [ -f "$OUT/$name/model.safetensors" ] && resume=--resume
  nice $T lm train $COMMON "$@" --out "$OUT/$name" $resume >"$OUT/$name.train.log" 2>&1
  echo "$name: $(tail -1 "$OUT/$name.train.log")"
}
train fa &
train swa --window $WINDOW &
train ttt-linear --mixer ttt-linear --ttt-backbone mamba &
train ttt-mlp --mixer ttt-mlp --ttt-backbone mamba &
train ttt-kvb --mixer ttt-kvb --window $WINDOW &
wait
train linear-attention --mixer linear-attention &
train gated-deltanet --mixer gated-deltanet &
train mamba2 --mixer mamba2 &
# TTT-E2E: the later --preset wins over COMMON's (window, prime MLP, b, inner clip 1); SwiGLU 138 so the
# parameter count matches the others (461,504), and RoPE theta 1e4 as preset tiny (tiny-e2e has 5e5)
train e2e --preset tiny-e2e --mlp-hidden 138 --prime-hidden 138 --prime-blocks 1 --window $WINDOW \
  --inner-chunk 128 --rope-theta 10000 &
wait
for m in fa swa ttt-linear ttt-mlp ttt-kvb linear-attention gated-deltanet mamba2 e2e; do
  nice $T lm eval --ckpt "$OUT/$m" --data $DATA/longdocs.bin --context ${CONTEXT:-2048} --max-docs ${DOCS:-4} \
    --threads $THREADS --out "$OUT/eval_$m.jsonl" >"$OUT/eval_$m.txt" 2>"$OUT/eval_$m.err" &
done
wait
tail -n 12 "$OUT"/eval_*.txt
