#!/usr/bin/env bash
# The language-model runs of docs/lm.md in one call on the GPU machine: build,
# 125M training speed (MFU), full attention vs sliding window trained side by
# side then evaluated by position on held-out long documents, prefill time
# (PyTorch's peer numbers: bench/lm/torch_lm.py prefill). Needs
# data/lmshards/{train,longdocs}.bin (scripts/get-corpus.sh, then copy the two
# shards there) and .debs (json-c) in the carry list.
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
W=/tmp/lmruns
mkdir -p $W
source bench/gpu/jsonc_env.sh
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON >"$W/cmake.log" 2>&1 || { tail -30 "$W/cmake.log"; exit 1; }
cmake --build build/gpu -j "$(nproc)" --target ttt_cli >"$W/build.log" 2>&1 || { grep -iE "error" "$W/build.log" | head -30; exit 1; }
T=./build/gpu/ttt
S=data/lmshards
log() { tee -a "$OUT/lm_log.txt"; }
echo "== 125M training speed (f32, alone on the GPU) ==" | log
$T lm train --device cuda --data $S/train.bin --preset 125m --seq-len 1024 --batch 8 --steps 12 --log-every 4 \
  --save-every 12 --out $W/125m-full 2>&1 | grep -E "step|lm train|done|ttt lm" | log
$T lm train --device cuda --data $S/train.bin --preset 125m --seq-len 8192 --batch 1 --window 1024 --steps 6 --log-every 2 \
  --save-every 6 --out $W/125m-swa1k 2>&1 | grep -E "step|done|ttt lm" | log
$T lm train --device cuda --data $S/train.bin --preset 125m --seq-len 1024 --batch 1 --window 8192 --steps 1 \
  --out $W/125m-swa8k 2>&1 | grep -E "ttt lm" | log
STEPS=${STEPS:-400}
echo "== curves: small preset, seq 2048, full attention vs window 256, $STEPS steps each (two processes) ==" | log
for w in 0 256; do
  timeout ${TRAIN_TIMEOUT:-270} $T lm train --device cuda --data $S/train.bin --preset small --seq-len 2048 --batch 8 \
    --steps $STEPS --lr 2e-3 --warmup 40 --window $w --log-every 25 --save-every 100 --out $W/small-w$w >$W/small-w$w.log 2>&1 &
done
wait
for w in 0 256; do tail -2 $W/small-w$w.log | log; cp $W/small-w$w/metrics.jsonl "$OUT/train_small_w$w.jsonl"; done
echo "== loss by position on held-out long documents (context 8192) ==" | log
for w in 0 256; do
  $T lm eval --device cuda --ckpt $W/small-w$w --data $S/longdocs.bin --context 8192 --out "$OUT/eval_small_w$w.jsonl" 2>&1 | log
done
echo "== prefill, 125M: ttt eval time per 1K tokens (full attention vs window 8192) ==" | log
for C in 8192 32768 131072; do
  for r in 125m-full 125m-swa8k; do
    timeout 100 $T lm eval --device cuda --ckpt $W/$r --data $S/longdocs.bin --context $C --max-docs 1 2>&1 | grep -E "all |ttt lm" | sed "s/^/$r C=$C: /" | log
  done
done
