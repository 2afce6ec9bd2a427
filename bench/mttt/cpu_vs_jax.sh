#!/usr/bin/env bash
# Issue 13's CPU row: ttt's MTTT-MLP and attention ViTs (patch4 tokens: 49 x 16, D 64, depth 2, 2 heads,
# batch 64, one inner step) against the JAX reference (bench/mttt/bench_jax.py, jitted, JAX_PLATFORMS=cpu)
# on this machine's CPU, back to back in one run. Like with like: both figures are training steps per
# second after warm-up (ttt: its --timing step time over the first epoch's steps, data loading excluded;
# JAX: the median timed step after compiling), converted to images/s.
#   bench/mttt/cpu_vs_jax.sh   (env: PY=python with jax, TTT=build/release/ttt, STEPS=20)
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python3}
T=${TTT:-build/release/ttt}
STEPS=${STEPS:-20}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
echo "cores: $(nproc); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for layer in mttt-mlp attention; do
  inner=""
  [ $layer = mttt-mlp ] && inner="--inner-steps 1"
  $T vision train --device cpu --layer $layer $inner --tokens patch4 --dim 64 --depth 2 --heads 2 --batch 64 --epochs 1 \
    --train-limit $((64 * STEPS)) --test-limit 64 --timing --out $W/$layer >$W/$layer.log 2>&1 || { tail -3 $W/$layer.log; exit 1; }
  ms=$(grep "ms per training step" $W/$layer.log | tail -1 | sed 's/.*)://' | grep -oE "[0-9]+\.[0-9]+" | awk 'NR > 1 {s += $1} END {print s}')
  ttt_ips=$(awk -v m="$ms" 'BEGIN{printf "%.1f", 64000 / m}')
  jl=$(JAX_PLATFORMS=cpu $PY bench/mttt/bench_jax.py --tokens 49 --dim 64 --depth 2 --heads 2 --batch 64 --layer $layer \
    --inner-steps 1 --steps 10 2>/dev/null | tail -1)
  jax_ms=$(echo "$jl" | grep -oE '"step_ms_median": [0-9.]+' | grep -oE '[0-9.]+$')
  jax_ips=$(echo "$jl" | grep -oE '"images_per_s": [0-9.]+' | grep -oE '[0-9.]+$')
  echo "$layer: ttt ${ms} ms/step (${ttt_ips} img/s, data loading excluded)  JAX ${jax_ms:-?} ms/step (${jax_ips:-?} img/s)  ttt/JAX $(awk -v a="$ttt_ips" -v b="${jax_ips:-0}" 'BEGIN{if (b > 0) printf "%.2fx", a / b; else print "n/a"}')  (load $(cut -d' ' -f1 /proc/loadavg))"
done
