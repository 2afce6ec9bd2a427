#!/usr/bin/env bash
# On the GPU machine: the PyTorch reference fixture for tests/test_lm.c, then
# the PyTorch peer's training speed for the 125M model (eager and
# torch.compile; bf16 autocast and f32) at 1K and 8K context. Logs to $OUT.
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=bench/lm${PYTHONPATH:+:$PYTHONPATH}
python3 bench/lm/make_fixture.py --out "$OUT" || exit 1
nvidia-smi --query-gpu=name --format=csv,noheader
for args in "--seq 1024 --batch 8 --dtype f32" "--seq 1024 --batch 8 --dtype bf16" "--seq 1024 --batch 8 --dtype bf16 --compile" \
            "--seq 8192 --batch 1 --dtype f32" "--seq 8192 --batch 1 --dtype bf16" "--seq 8192 --batch 1 --dtype bf16 --compile"; do
  timeout 240 python3 bench/lm/torch_lm.py bench --preset 125m $args 2>>"$OUT/torch_err.txt" | tee -a "$OUT/torch_peer.jsonl"
done
tail -5 "$OUT/torch_err.txt"
