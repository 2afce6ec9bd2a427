#!/usr/bin/env bash
# The GPU checks and timings that code in this tree still waits for, in priority order, in one device
# call that stays under its 10 minutes (DEADLINE seconds, default 560; a part that would start with less
# than its minimum left is skipped and said so). Each part is a script of its own that can also run alone:
#   fused   the fused layer-norm backward bit for bit against the composed one after the FMA fix
#           (tests/test_fused.c --no-lm), and gradcheck layer_norm with TTT_FUSED=1 and 0 (docs/benchmarks.md)
#   scan    bench/mixers/run_scan_gpu.sh: the TTT-Linear scan's checks on CUDA (bf16 run included),
#           compute-sanitizer, the layer and the core (mixer_speed ttt_linear_core) fused vs composed
#   gdn     bench/mixers/run_linear_gpu.sh part "fused" (it sets TTT_GDN_CUDA_FUSED=1 and TTT_SSD_CUDA_FUSED=1): the chunk-parallel
#           Gated DeltaNet and SSD / linear-attention kernels against the composed cores (checks and times)
#   peer    bench/mixers/run_peer_gpu.sh: ttt against fla and the official PyTorch TTT layers
# Carry [".debs", ".whl", ".peer"] (see run_peer_gpu.sh for .whl and .peer). Logs under $OUT.
#   usage: bash bench/gpu/pending.sh            PARTS="fused scan" bash bench/gpu/pending.sh
set -uo pipefail
export OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
T0=$(date +%s)
DEADLINE=${DEADLINE:-560}
PARTS=${PARTS:-"fused scan gdn peer"}
left() { echo $((DEADLINE - ($(date +%s) - T0))); }
# part NAME MIN MAX CMD...: CMD under a timeout of MAX s or what is left, skipped below MIN s
part() {
  local name=$1 min=$2 max=$3 l
  shift 3
  case " $PARTS " in *" $name "*) ;; *) return 0 ;; esac
  l=$(left)
  if [ "$l" -lt "$min" ]; then
    echo "== $name: skipped, $l s left (needs $min) =="
    return 0
  fi
  [ "$l" -gt "$max" ] && l=$max
  echo "== $name (up to $l s) =="
  timeout "$l" "$@" 2>&1 | tail -${TAIL:-40}
  echo "== $name: exit ${PIPESTATUS[0]}, $(($(date +%s) - T0)) s so far =="
}
source bench/gpu/jsonc_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fused_part() {
  cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON >/dev/null 2>&1 &&
    cmake --build build/gpu -j "$(nproc)" --target ttt_cli test_fused >"$OUT/pending_build.log" 2>&1 ||
    { grep -iE "error" "$OUT/pending_build.log" | head -20; return 1; }
  ./build/gpu/test_fused --no-lm 2>&1 | grep -E "CHECK failed|passed,|norm cuda"
  for f in 1 0; do
    TTT_FUSED=$f ./build/gpu/ttt gradcheck --device cuda --op layer_norm --seeds 3 2>&1 | sed "s/^/[TTT_FUSED=$f] /"
  done
}
export -f fused_part
part fused 60 120 bash -c fused_part
part scan 120 240 bash bench/mixers/run_scan_gpu.sh
part gdn 90 180 env PARTS=fused bash bench/mixers/run_linear_gpu.sh
part peer 120 240 env DEADLINE=230 bash bench/mixers/run_peer_gpu.sh
echo "total $(($(date +%s) - T0)) s"
# The device returns at most 8 files from $OUT: everything travels back as one archive.
(cd "$OUT" && tar czf /tmp/pending_logs.tgz --exclude=logs.tgz . && find . -mindepth 1 -delete && mv /tmp/pending_logs.tgz logs.tgz)
