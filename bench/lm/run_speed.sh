#!/usr/bin/env bash
# On the GPU machine, one call: 125M language-model training speed of ttt in
# f32, f32 with TF32 matmuls and bf16 mixed precision, then the PyTorch peer
# (bench/lm/torch_lm.py bench: f32 eager, bf16 autocast eager, bf16
# torch.compile) in the same call, and a table of tokens/s with ratios. Needs
# data/lmshards/train.bin and .debs (json-c) in the carry list. Logs to $OUT.
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
W=/tmp/ttt-speed
rm -rf $W && mkdir -p $W
source bench/gpu/jsonc_env.sh
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/speed.txt"
if [ ! -x build/gpu/ttt ]; then
  cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON >"$W/cmake.log" 2>&1 || { tail -30 "$W/cmake.log"; exit 1; }
  cmake --build build/gpu -j "$(nproc)" --target ttt_cli >"$W/build.log" 2>&1 || { grep -iE "error" "$W/build.log" | head; exit 1; }
fi
SEQ=${SEQ:-1024} BATCH=${BATCH:-8} STEPS=${STEPS:-16}
declare -A TPS
for mode in "f32:" "tf32:--tf32" "bf16:--compute bf16"; do
  name=${mode%%:*} flags=${mode#*:}
  ./build/gpu/ttt lm train --device cuda --data data/lmshards/train.bin --preset 125m --seq-len $SEQ --batch $BATCH \
    --steps $STEPS --log-every 4 --save-every 1000000 --out $W/$name $flags >$W/$name.log 2>&1
  # the last logged window (steps after warm-up)
  TPS[ttt-$name]=$(grep -oE "[0-9]+ tok/s" $W/$name.log | tail -1 | grep -oE "[0-9]+")
  grep -E "^step|lm train|error" $W/$name.log | sed "s/^/ttt $name: /" | tee -a "$OUT/speed.txt"
done
export PYTHONPATH=bench/lm${PYTHONPATH:+:$PYTHONPATH}
for mode in "f32:--dtype f32" "bf16:--dtype bf16" "bf16-compile:--dtype bf16 --compile"; do
  name=${mode%%:*} flags=${mode#*:}
  line=$(timeout 240 python3 bench/lm/torch_lm.py bench --preset 125m --seq $SEQ --batch $BATCH $flags 2>>$W/torch_err.txt | tail -1)
  echo "torch $name: $line" | tee -a "$OUT/speed.txt"
  TPS[torch-$name]=$(echo "$line" | grep -oE '"tokens_per_s": [0-9.]+' | grep -oE '[0-9.]+$' | cut -d. -f1)
done
tail -3 $W/torch_err.txt
echo "== 125M training, seq $SEQ x batch $BATCH, tokens/s (same call, same GPU) ==" | tee -a "$OUT/speed.txt"
for k in ttt-f32 ttt-tf32 ttt-bf16 torch-f32 torch-bf16 torch-bf16-compile; do
  printf "%-22s %10s\n" "$k" "${TPS[$k]:-n/a}" | tee -a "$OUT/speed.txt"
done
r() { [ -n "${TPS[$1]:-}" ] && [ -n "${TPS[$2]:-}" ] && awk -v a="${TPS[$1]}" -v b="${TPS[$2]}" 'BEGIN{printf "%.2f", a/b}' || echo n/a; }
echo "ratios: ttt-bf16/torch-bf16 $(r ttt-bf16 torch-bf16)  ttt-bf16/torch-bf16-compile $(r ttt-bf16 torch-bf16-compile)  ttt-f32/torch-f32 $(r ttt-f32 torch-f32)  ttt-bf16/ttt-f32 $(r ttt-bf16 ttt-f32)" | tee -a "$OUT/speed.txt"
