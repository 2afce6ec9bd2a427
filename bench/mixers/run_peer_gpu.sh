#!/usr/bin/env bash
# The mixer kernels against their peers on one GPU, in one device call (issue 14, item 4; the goal
# is ttt >= 1.5x faster at 8K and 32K):
#   ttt mixer_speed gated_delta / linear_attn (bf16, f32)  vs  flash-linear-attention's Triton
#       chunk_gated_delta_rule / chunk_linear_attn, the same inputs and gates
#   ttt_rnn_bench TTT-Linear / TTT-MLP layer (f32, D 768, 12 heads, b 16, transformer backbone)
#       vs  the official PyTorch layer (ttt-lm-pytorch's TTTLinear / TTTMLP), the same sizes
#   fla's chunk_ttt_linear / fused_chunk_ttt_linear (bf16) are timed beside them: the core only,
#       without projections, so they pair with ttt's layer only loosely (the table says so)
#   ttt mixer_speed ttt_linear_core (bf16, f32: TTT-Linear's fused scan alone, on the inputs fla's
#       chunk_ttt_linear takes)  vs  fla's chunk_ttt_linear, like for like (same dtype, T)
# Prints one table of ms and ratios (peer ms / ttt ms: > 1 means ttt is faster) and keeps the csv.
#
# Set up here, once (nothing is committed; both folders are git-ignored):
#   mkdir -p .whl && python3 -m pip download --no-deps -d .whl flash-linear-attention==0.6.0 fla-core==0.6.0
#   mkdir -p .peer && git -C /path/to/ttt-lm-pytorch show HEAD:ttt.py > .peer/ttt-lm-pytorch/ttt.py
# then run with carry [".whl", ".peer", ".debs"]:  bash bench/mixers/run_peer_gpu.sh
# Env: OUT (default gpu-out), TS (default 2048,8192,32768), LAYER_TS (default 2048,8192), DEADLINE (s, 540),
# PEERS (default "fla_ttt official fla_gdn fla_la": which peers run), CORES (default "gated_delta
# ttt_linear_core linear_attn": ttt's cores timed) and CORE_DTYPES (default "bf16 f32").
set -uo pipefail
OUT=${OUT:-gpu-out}/peer
mkdir -p "$OUT"
LOG="$OUT/peer.txt"
: >"$LOG"
log() { tee -a "$LOG"; }
T0=$(date +%s)
DEADLINE=${DEADLINE:-540}
left() { echo $((DEADLINE - ($(date +%s) - T0))); }
run_for() { # run_for MAX CMD...: under a timeout of MAX s or what is left
  local max=$1 l
  shift
  l=$(left)
  [ "$l" -gt "$max" ] && l=$max
  [ "$l" -lt 5 ] && { echo "# skipped (out of time): $*"; return 124; }
  timeout "$l" "$@"
}
TS=${TS:-2048,8192,32768}
LAYER_TS=${LAYER_TS:-2048,8192}
source bench/gpu/jsonc_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | log
if ls .whl/fla_core-*.whl .whl/flash_linear_attention-*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/fla_core-*.whl .whl/flash_linear_attention-*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
else
  echo "# no fla wheels in .whl: the fla rows will say they failed" | log
fi
cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON >"$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
cmake --build build/gpu -j "$(nproc)" --target mixer_speed ttt_rnn_bench >"$OUT/build.log" 2>&1 ||
  { grep -iE "error" "$OUT/build.log" | head -30; exit 1; }
echo "build: $(($(date +%s) - T0)) s" | log
B=./build/gpu
CSV="$OUT/rows.csv"
: >"$CSV"
# In the order of what the issue's goal needs, since the later peers may run out of time: ttt's cores, fla's TTT
# ops (the 1.5x goal), the layers against the official PyTorch ones, fla's Gated DeltaNet, then fla's linear
# attention (which has not finished autotuning within its slot on any call so far).
# peer NAME ARGS...: one process per peer, so one that hangs in autotuning loses its own rows only
peer() {
  local name=$1
  shift
  run_for ${PEER_S:-100} env PYTHONUNBUFFERED=1 python3 bench/mixers/peer_speed.py "$@" 2>&1 | tee -a "$OUT/peer_speed.txt" |
    grep "^csv," >>"$CSV"
  local st=${PIPESTATUS[0]}
  [ "$st" -ne 0 ] && { echo "# $name: exit status $st; its last lines:"; grep -v "^csv," "$OUT/peer_speed.txt" | tail -4; } | log
  return 0
}
for dt in ${CORE_DTYPES:-bf16 f32}; do
  for impl in ${CORES:-gated_delta ttt_linear_core linear_attn}; do
    run_for 120 $B/mixer_speed --device cuda --dtype $dt --impl $impl --T "$TS" --heads 12 --dim 64 --batch 1 --chunk 64 \
      --reps 5 2>&1 | tee -a "$OUT/ttt_mixer_speed.txt" | grep "^csv," >>"$CSV"
  done
done
has_peer() { case " ${PEERS:-fla_ttt official fla_gdn fla_la} " in *" $1 "*) return 0 ;; esac; return 1; }
has_peer fla_ttt && for impl in fla_ttt_linear fla_ttt_linear_fused; do
  peer $impl --dtype bf16 --impl $impl --T "$TS" --reps 5
done
has_peer official && for kind in linear mlp; do
  run_for 150 $B/ttt_rnn_bench --device cuda --kind $kind --backbone transformer --T "$LAYER_TS" --reps 3 2>&1 |
    tee -a "$OUT/ttt_rnn_bench.txt" | grep "^csv," >>"$CSV"
done
has_peer official && peer official --dtype f32 --impl official_ttt_linear,official_ttt_mlp --T "$LAYER_TS" --reps 3 \
  --official .peer/ttt-lm-pytorch/ttt.py
has_peer fla_gdn && for dt in bf16 f32; do
  peer "fla_gated_delta $dt" --dtype $dt --impl fla_gated_delta --T "$TS" --reps 5
done
has_peer fla_la && for dt in bf16 f32; do
  peer "fla_linear_attn $dt" --dtype $dt --impl fla_linear_attn --T "$TS" --reps 5
done
grep -h "^#" "$OUT"/peer_speed.txt | grep -v ": running$" | sort -u | log
# the table: each ttt row beside its peer (same dtype, T); ratio = peer ms / ttt ms
python3 - "$CSV" <<'EOF' | log
import csv, sys
rows = {}
for r in csv.reader(open(sys.argv[1])):
    if len(r) >= 12 and r[0] == "csv" and r[1] != "impl":  # mixer_speed may add a "fused" column
        rows[(r[1], r[2], int(r[6]))] = (float(r[9]), float(r[10]))
pairs = [("gated_delta", "fla_gated_delta"), ("linear_attn", "fla_linear_attn"),
         ("ttt_linear_layer", "official_ttt_linear"), ("ttt_mlp_layer", "official_ttt_mlp"),
         ("ttt_linear_core", "fla_ttt_linear"), ("ttt_linear_core", "fla_ttt_linear_fused"),
         ("ttt_linear_layer", "fla_ttt_linear"), ("ttt_linear_layer", "fla_ttt_linear_fused")]
print("| ttt | peer | dtype | T | ttt fwd / fwd+bwd ms | peer fwd / fwd+bwd ms | ratio fwd | ratio fwd+bwd |")
print("|---|---|---|---|---|---|---|---|")
for ours, peer in pairs:
    for (impl, dt, T), (f, b) in sorted(rows.items()):
        if impl != ours:
            continue
        loose = ours == "ttt_linear_layer" and peer.startswith("fla_ttt")  # a layer against a core
        for pdt in ([dt] if not loose else ["bf16"]):
            p = rows.get((peer, pdt, T))
            if p:
                note = " (peer: core only, bf16)" if loose else ""
                rb = f"{p[1] / b:.2f}x" if p[1] == p[1] else "n/a"
                print(f"| {ours} | {peer}{note} | {dt} | {T} | {f:.3f} / {b:.3f} | {p[0]:.3f} / {p[1]:.3f} | "
                      f"{p[0] / f:.2f}x | {rb} |")
EOF
echo "total: $(($(date +%s) - T0)) s" | log
