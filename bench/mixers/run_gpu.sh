#!/usr/bin/env bash
# TTT-Linear / TTT-MLP on the GPU machine, one call: a CUDA build; the layer's tests (CPU
# contexts in that build); the layer on CUDA against the CPU in f64 and f32 (output and every
# gradient, each learner and backbone); forward and forward + backward times of the layer at
# 125M width (D 768, 12 heads, b 16) for T = 2K and 8K; a few training steps of a small LM with
# each TTT mixer on CUDA. Needs .debs (json-c) in the carry list (bench/gpu/jsonc_env.sh).
#   usage: bash bench/mixers/run_gpu.sh        (env OUT, default gpu-out)
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
source bench/gpu/jsonc_env.sh
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/mixers_gpu.txt"
cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON >/tmp/mx_cmake.log 2>&1 || { tail -30 /tmp/mx_cmake.log; exit 1; }
cmake --build build/gpu -j "$(nproc)" --target ttt_cli ttt_rnn_bench test_ttt_rnn test_lm >/tmp/mx_build.log 2>&1 ||
  { grep -iE "error" /tmp/mx_build.log | head -30; exit 1; }
log() { tee -a "$OUT/mixers_gpu.txt"; }
echo "== tests (CPU contexts of the CUDA build) ==" | log
./build/gpu/test_ttt_rnn 2>&1 | tail -1 | log
./build/gpu/test_lm 2>&1 | tail -1 | log
echo "== CUDA vs CPU parity ==" | log
./build/gpu/ttt_rnn_bench --check --device cuda 2>&1 | log
echo "== forward / forward + backward time, D 768, 12 heads, b 16, batch 1 ==" | log
for k in linear mlp; do
  for bb in transformer mamba; do
    timeout 240 ./build/gpu/ttt_rnn_bench --device cuda --kind $k --backbone $bb --T 2048,8192 --reps 3 2>&1 | log
  done
done
echo "== LM training steps on CUDA with each TTT mixer (small preset, seq 2048, batch 4) ==" | log
S=/tmp/mx_shard
mkdir -p $S
python3 -c "
import random
random.seed(1)
w='the cat sat on a mat while dogs ran past seven tall trees near old houses'.split()
open('$S/c.txt','w').write('\n'.join(' '.join(random.choice(w) for _ in range(12)) for _ in range(20000)))"
./build/gpu/ttt tokenizer train --input $S/c.txt --vocab-size 300 --out $S/tok --quiet &&
  ./build/gpu/ttt data prepare --tokenizer $S/tok --out $S/train.bin --quiet $S/c.txt >/dev/null
for mx in "attention" "ttt-linear" "ttt-mlp" "ttt-linear --ttt-backbone mamba" "ttt-kvb --window 512"; do
  timeout 200 ./build/gpu/ttt lm train --device cuda --data $S/train.bin --preset small --seq-len 2048 --batch 4 --steps 6 \
    --log-every 2 --save-every 6 --mixer $mx --out /tmp/mx_$RANDOM 2>&1 | grep -E "^step|parameters|done" | tail -3 |
    sed "s/^/[$mx] /" | log
done
