#!/usr/bin/env bash
# MTTT on Fashion-MNIST on one GPU, in one device call (docs/results-mttt.md).
# Builds ttt with CUDA, copies the dataset from the repo's git-ignored data/
# folder (the GPU machine has no package registry), then runs the configs given
# as "name|flags" lines on stdin, several processes at a time (small models are
# launch-bound, so concurrent processes share the GPU well). Each run writes
# $OUT/<name>/metrics.jsonl; a summary table is printed at the end.
#   usage: bash bench/mttt/run_gpu_experiments.sh PARALLEL COMMON_FLAGS < configs
set -uo pipefail
OUT=${OUT:-gpu-out}
PAR=${1:-4}
COMMON=${2:-}
mkdir -p "$OUT"
cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON >"$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
cmake --build build/gpu -j "$(nproc)" --target ttt_cli >"$OUT/build.log" 2>&1 || { grep -iE "error" "$OUT/build.log" | head -30; exit 1; }
DATA=data/fashion-mnist
[ -f "$DATA/train-images-idx3-ubyte.gz" ] || { echo "missing $DATA (carry it)"; exit 1; }
# Runs live in $OUT/runs/<name> (checkpoints stay there); RUN_TIMEOUT bounds each
# run so the call returns whatever epochs finished.
run_one() {
  local name=$1; shift
  local dir="$OUT/runs/$name"
  mkdir -p "$dir"
  timeout "${RUN_TIMEOUT:-3600}" ./build/gpu/ttt vision train --device cuda --data "$DATA" --out "$dir" "$@" \
    >"$dir/log.txt" 2>&1
  echo "$name rc=$? $(tail -1 "$dir/log.txt")"
}
export -f run_one
export OUT DATA RUN_TIMEOUT
while IFS='|' read -r name flags; do
  [ -z "$name" ] && continue
  echo "$name $flags${COMMON:+ $COMMON}"
done | xargs -P "$PAR" -L 1 bash -c 'run_one "$@"' _
echo "== summary (last epoch) =="
: >"$OUT/all_metrics.jsonl"
for f in "$OUT"/runs/*/metrics.jsonl; do
  name=$(basename "$(dirname "$f")")
  sed "s/^{/{\"run\": \"$name\", /" "$f" >>"$OUT/all_metrics.jsonl"
  python3 - "$f" <<'PY'
import json, sys, os
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
if lines:
    m = lines[-1]
    il = m.get("inner_loss") or []
    print(f"{os.path.basename(os.path.dirname(sys.argv[1])):<14} ep {m['epoch']:>2} test_acc {100*m['test_acc']:6.2f}  "
          f"train_loss {m['train_loss']:.4f}  img/s {m['images_per_s']:8.0f}  inner {' '.join(f'{x:.3f}' for x in il)}")
PY
done
