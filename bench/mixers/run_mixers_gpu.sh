#!/usr/bin/env bash
# SPEC §3's mixer comparison at GPU scale (issue 14, item 5): every mixer of docs/results-mixers.md in the
# 125M LM (D 768, 12 blocks, 12 heads), trained on the same tokens (--seed 1: the same batches) of the Linux
# documentation corpus (scripts/get-corpus.sh, GPT-2 tokens), then loss by position on its held-out long
# documents read to CONTEXT tokens. Runs are short (minutes of one GPU), so this is the pipeline at 125M and
# an early-training comparison, not the paper's trained models.
#   usage (on the GPU machine, from the repository root):  bash bench/mixers/run_mixers_gpu.sh
# Needs data/lm/train.bin and data/lm/longdocs.bin (BUILD=build/rel bash scripts/get-corpus.sh data/lm here,
# then carry ["data/lm/train.bin", "data/lm/longdocs.bin", ".debs"]).
# Env: OUT (gpu-out), STEPS (60), CHUNK (TTT-E2E's inner chunk, 512), SEQ (2048), BATCH (4), WINDOW (SWA / TTT-KVB window, 512), CONTEXT (8192),
#      DOCS (4), MIXERS (all eight), PAR (runs at once on the GPU, 2), TRAIN_S (time limit per run, 300),
#      DEADLINE (s, 560: training stops being started past it, evaluation gets what is left).
# A run stopped by its time limit keeps its last checkpoint (every 10 steps); the table says at which step.
set -uo pipefail
OUT=${OUT:-gpu-out}/mixers
mkdir -p "$OUT"
T0=$(date +%s)
DEADLINE=${DEADLINE:-560}
STEPS=${STEPS:-60} SEQ=${SEQ:-2048} BATCH=${BATCH:-4} WINDOW=${WINDOW:-512} CONTEXT=${CONTEXT:-8192} DOCS=${DOCS:-4}
MIXERS=${MIXERS:-"ttt-mlp ttt-kvb mamba2 gated-deltanet ttt-linear linear-attention e2e fa swa"}
PAR=${PAR:-2} # 4 at once ran out of the H100's memory at these sizes (2026-12-06)
S=data/lm
W=/tmp/mixers-gpu
mkdir -p $W
log() { tee -a "$OUT/mixers.txt"; }
for f in $S/train.bin $S/longdocs.bin; do
  [ -f $f ] || { echo "run_mixers_gpu: missing $f (see the header of this script)" >&2; exit 1; }
done
source bench/gpu/jsonc_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | log
cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON >"$W/cmake.log" 2>&1 || { tail -30 "$W/cmake.log"; exit 1; }
cmake --build build/gpu -j "$(nproc)" --target ttt_cli >"$W/build.log" 2>&1 || { grep -iE "error" "$W/build.log" | head -30; exit 1; }
echo "build: $(($(date +%s) - T0)) s" | log
B=./build/gpu/ttt
flags() {
  case $1 in
    fa) ;;
    swa) echo "--window $WINDOW" ;;
    ttt-linear | ttt-mlp) echo "--mixer $1 --ttt-backbone mamba" ;;
    ttt-kvb) echo "--mixer ttt-kvb --window $WINDOW" ;;
    # TTT-E2E: SWA, the last quarter of the blocks learning at test time (every MLP narrowed to 1664 so the
    # parameter count matches), inner chunk 512 (4 inner steps per 2048-token sequence), RoPE theta as the others
    e2e) echo "--preset 125m-e2e --window $WINDOW --inner-chunk ${CHUNK:-512} --rope-theta 10000" ;;
    *) echo "--mixer $1" ;;
  esac
}
train() { # the run in $W/$1, its log beside it
  local m=$1 l=$((DEADLINE - ($(date +%s) - T0) - 60))
  [ "$l" -gt "${TRAIN_S:-300}" ] && l=${TRAIN_S:-300}
  [ "$l" -lt 20 ] && { echo "$m: not started (out of time)" | log; return; }
  # shellcheck disable=SC2046
  timeout "$l" $B lm train --device cuda --compute bf16 --data $S/train.bin --preset 125m --seq-len $SEQ --batch $BATCH \
    --steps $STEPS --lr 1e-3 --warmup $((STEPS / 10)) --log-every 5 --save-every 10 --seed 1 $(flags $m) \
    --out $W/$m >$W/$m.train.log 2>&1
  local rc=$?
  echo "$m: exit $rc; $(grep -E '^step' $W/$m.train.log | tail -1 | cut -c1-110)" | log
  [ $rc -ne 0 ] && grep -vE '^step' $W/$m.train.log | tail -4 | sed "s/^/  $m: /" | log
}
n=0
for m in $MIXERS; do
  train $m &
  n=$((n + 1))
  [ $((n % PAR)) -eq 0 ] && wait
done
wait
echo "training done: $(($(date +%s) - T0)) s" | log
for m in $MIXERS; do
  [ -f $W/$m/model.safetensors ] || { echo "$m: no checkpoint" | log; continue; }
  l=$((DEADLINE - ($(date +%s) - T0)))
  [ "$l" -lt 10 ] && { echo "$m: not evaluated (out of time)" | log; continue; }
  [ "$l" -gt 90 ] && l=90
  timeout $l $B lm eval --device cuda --compute bf16 --ckpt $W/$m --data $S/longdocs.bin --context $CONTEXT --max-docs $DOCS \
    --out "$OUT/eval_$m.jsonl" >"$W/eval_$m.txt" 2>&1
  echo "$m eval: exit $?; $(grep -E '^all' $W/eval_$m.txt | head -1)" | log
  cp $W/$m/metrics.jsonl "$OUT/train_$m.jsonl" 2>/dev/null
done
# one table: loss by position bucket, a column per mixer
python3 - "$OUT" $MIXERS <<'EOF' | log
import json, os, sys
out, mixers = sys.argv[1], sys.argv[2:]
cols, rows = [], {}
for m in mixers:
    p = os.path.join(out, f"eval_{m}.jsonl")
    if not os.path.exists(p):
        continue
    cols.append(m)
    for line in open(p):
        r = json.loads(line)
        key = "all positions" if r.get("summary") else f"[{r['bucket_start']}, {r['bucket_end']})"
        rows.setdefault(key, {})[m] = r.get("mean_loss", r.get("loss"))
print("| positions | " + " | ".join(cols) + " |")
print("|---" * (len(cols) + 1) + "|")
for k, v in rows.items():
    print(f"| {k} | " + " | ".join(f"{v[c]:.4f}" if isinstance(v.get(c), float) else "-" for c in cols) + " |")
EOF
echo "total: $(($(date +%s) - T0)) s" | log
