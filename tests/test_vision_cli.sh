#!/usr/bin/env bash
# ttt vision train on the training runner, end to end on a small slice of
# Fashion-MNIST (CPU, seconds): the same command twice gives the same bytes; a
# run stopped by SIGINT (inside an epoch or at its end) writes a checkpoint,
# exits 130 and resumes to the uninterrupted run's checkpoint and metrics lines
# (timings aside); other flags refuse to resume; a failed start leaves no folder.
#   usage: tests/test_vision_cli.sh PATH/TO/ttt
set -u
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
T=${1:?usage: test_vision_cli.sh PATH/TO/ttt}
T="$(cd "$(dirname "$T")" && pwd)/$(basename "$T")"
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "skipped: Fashion-MNIST is not installed (scripts/install-deps.sh)"
  exit 0
fi
dir=$(mktemp -d /tmp/ttt_vision_cli_XXXXXX)
trap 'rm -rf "$dir"' EXIT
cd "$dir" || exit 1
fail=0
check() { if eval "$1"; then echo "ok: $2"; else echo "FAILED: $2"; fail=1; fi; }
settled() { sed 's/, "images_per_s.*//' "$1"; }
V="--train-limit 600 --test-limit 100 --epochs 3 --batch 64 --dim 16 --depth 1 --heads 2 --threads 1"

check '"$T" vision train $V --out A >A.out 2>A.err && [ "$(wc -l <A/metrics.jsonl)" -eq 3 ]' "train 3 epochs: a metrics line each"
check '"$T" vision train $V --out A2 >/dev/null 2>&1 && cmp -s A/checkpoint.safetensors A2/checkpoint.safetensors' \
  "the same command twice: identical checkpoints"
# SIGINT after the first step (inside epoch 1) and after the first checkpoint (epoch 2);
# each resumes to A's bytes. (Before the handler is installed, a background job ignores SIGINT.)
for when in 'grep -q "step 1/" B.err' '[ -f B/checkpoint.safetensors ]'; do
  rm -rf B
  "$T" vision train $V --out B >/dev/null 2>B.err &
  pid=$!
  for i in $(seq 1000); do eval "$when" && break; sleep 0.01; done
  kill -INT $pid 2>/dev/null
  wait $pid
  code=$?
  check '[ $code -eq 130 ] && grep -q "stopped at step .* --resume" B.err' "SIGINT once $when: checkpoint, exit 130 (exit $code)"
  check '"$T" vision train $V --out B --resume >/dev/null 2>&1 && cmp -s A/checkpoint.safetensors B/checkpoint.safetensors' \
    "resumed checkpoint is byte-identical to the uninterrupted run's"
  check 'diff <(settled A/metrics.jsonl) <(settled B/metrics.jsonl)' "and its metrics lines (timings aside)"
done
check '"$T" vision train $V --out A --resume --lr 0.002 >/dev/null 2>err.txt; [ $? -eq 2 ] && grep -q "lr .*checkpoint 0.001, now 0.002" err.txt' \
  "resume with another --lr is refused, naming it"
check '"$T" vision train $V --out A >/dev/null 2>err.txt; [ $? -eq 2 ] && grep -q "already holds a run" err.txt' "an existing run is not overwritten"
check '"$T" vision train $V --out Z --data nowhere >/dev/null 2>&1; [ $? -eq 1 ] && [ ! -e Z ]' "a failed start leaves no folder"
check '"$T" vision eval --out A --test-limit 100 --threads 1 | grep -q "(epoch 3)"' "eval reads the run"
exit $fail
