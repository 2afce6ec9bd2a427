#!/usr/bin/env bash
# Issue 13's CPU row "more threads never slower than one": tiny LM training and
# generation with --threads 1 and with every core (--threads 0: OpenMP's choice,
# shrunk to the cores other processes leave free), alternated REPS times so a
# changing load hits both alike, with the load average beside each figure (run it
# on an idle and on a loaded machine).
#   bench/speed/cpu_threads.sh   (env: TTT=build/release/ttt, REPS=2)
set -uo pipefail
cd "$(dirname "$0")/../.."
T=${TTT:-build/release/ttt}
REPS=${REPS:-2}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
$T data prepare --tokenizer data/gpt2-tokenizer --out $W/ts.bin data/tinyshakespeare/ >/dev/null 2>&1 || { echo "data prepare failed"; exit 1; }
echo "cores: $(nproc); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq $REPS); do
  for th in 1 0; do
    rm -rf $W/lm$th
    $T lm train --data $W/ts.bin --preset tiny --seq-len 256 --batch 4 --steps 30 --log-every 10 --save-every 1000000 \
      --threads $th --out $W/lm$th >$W/train$th.log 2>&1 || { tail -2 $W/train$th.log; exit 1; }
    echo "train --threads $th: $(grep -oE "[0-9]+ tok/s" $W/train$th.log | tail -1) (last 10 steps; load $(cut -d' ' -f1 /proc/loadavg))"
  done
  for th in 1 0; do
    out=$($T lm generate --ckpt $W/lm1 --tokenizer data/gpt2-tokenizer --prompt "ROMEO:" --tokens 400 --seed 1 \
      --threads $th 2>&1 >/dev/null | grep -oE "[0-9.]+ tokens/s" | tail -1)
    echo "generate --threads $th: ${out:-?} (load $(cut -d' ' -f1 /proc/loadavg))"
  done
done
