#!/usr/bin/env bash
# The one-kernel bf16 attention backward (attnbf::bwd1, TTT_ATTN_BWD1=1; dev/cuda/README.md) on a GPU, in one
# device call: the dev harness's checks of every configuration against float64 (bwd1 also bit for bit over 5 more
# runs) and its timings (bwd1 beside the launchers' dkdv + dq); compute-sanitizer memcheck / racecheck / synccheck on
# the harness's small case; the engine's parity test with TTT_ATTN_BWD1=1 (and memcheck of its quick subset);
# then, in the same call, the engine against SDPA flash with and without it (bench/gpu/attention_bench.py) and the
# 125M LM step at T 1K x 8 and 8K x 1 with and without it. In priority order (the harness, parity, the LM at 8K,
# memcheck, the tables, racecheck / synccheck, the LM at 1K): a part is skipped when too little of DEADLINE is left.
# Carry .debs (json-c, for `ttt data prepare`). Logs in $OUT (default ./gpu-out).
#   bash bench/gpu/bwd1_check.sh        DEADLINE=560 (seconds; later parts are skipped past it)
set -uo pipefail
export TTT_CUDNN=${TTT_CUDNN:-0} # the LM runs on our own attention kernels, which this script is about (test_attention_fused turns cuDNN off itself)
DEADLINE_DEFAULT=560
source bench/gpu/common.sh
B=./build/gpu
mkdir -p $B
nvcc -O3 -arch=sm_90 -std=c++17 -I src/backends/cuda -I dev/cuda dev/cuda/attention_bf16.cu -o $B/attention_bf16 \
  >"$OUT/nvcc.log" 2>&1 &
nvpid=$!
build_gpu ttt_cli test_attention_fused || exit 1
wait $nvpid || { grep -iE "error" "$OUT/nvcc.log" | head -20; exit 1; }

echo "== dev harness: checks, then timings (bwd rows) =="
timeout 200 $B/attention_bf16 --bench >"$OUT/attention_bf16.csv" 2>&1
echo "exit $?"
grep -E "FAIL|bit|bf16 checks" "$OUT/attention_bf16.csv" | head -20
grep -E "bwd1|dkdv\+dq|delta" "$OUT/attention_bf16.csv" | head -40

echo "== engine parity with TTT_ATTN_BWD1=1 =="
TTT_ATTN_BWD1=1 timeout 120 $B/test_attention_fused >"$OUT/parity_bwd1.txt" 2>&1
echo "exit $?; $(tail -1 "$OUT/parity_bwd1.txt")"
grep -E "FAIL|CHECK" "$OUT/parity_bwd1.txt" | head -10
if [ "$(left)" -gt 300 ]; then
  TTT_ATTN_BWD1=1 timeout 90 compute-sanitizer --tool memcheck --error-exitcode 9 $B/test_attention_fused --quick \
    >"$OUT/memcheck_engine_bwd1.txt" 2>&1
  echo "memcheck (TTT_ATTN_BWD1=1 test_attention_fused --quick): exit $?; $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_engine_bwd1.txt")"
fi

echo "== 125M LM, bf16, with and without TTT_ATTN_BWD1=1 =="
W=/tmp/bwd1-lm
mkdir -p $W
$B/ttt data prepare --tokenizer data/gpt2-tokenizer --out $W/ts.bin data/tinyshakespeare/ >$W/prep.log 2>&1 || tail -3 $W/prep.log
# lm_runs SEQ BATCH MIN_LEFT: the step alternated without and with bwd1, twice, while MIN_LEFT seconds remain
lm_runs() {
  for bwd1 in 0 1 0 1; do
    [ "$(left)" -lt "$3" ] && { echo "skip T=$1 TTT_ATTN_BWD1=$bwd1 ($(left) s left)"; continue; }
    TTT_ATTN_BWD1=$bwd1 timeout 60 $B/ttt lm train --device cuda --data $W/ts.bin --preset 125m --seq-len $1 --batch $2 \
      --steps 12 --log-every 4 --save-every 1000000 --compute bf16 --timing --out $W/lm-$1-$bwd1-$RANDOM >$W/lm.log 2>&1 ||
      tail -3 $W/lm.log
    echo "T=$1 TTT_ATTN_BWD1=$bwd1: $(grep -oE "[0-9]+ tok/s" $W/lm.log | tail -1); $(grep -E "ms per step" $W/lm.log | tail -1 | grep -oE "forward\+backward [0-9.]+")"
  done
}
lm_runs 8192 1 40
for tool in memcheck; do
  [ "$(left)" -lt 120 ] && { echo "skip $tool ($(left) s left)"; continue; }
  timeout 90 compute-sanitizer --tool $tool --error-exitcode 9 $B/attention_bf16 --small >"$OUT/${tool}_small.txt" 2>&1
  echo "$tool (harness --small): exit $?; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/${tool}_small.txt" | head -1)"
done

echo "== the engine against SDPA flash, two-kernel backward, then TTT_ATTN_BWD1=1 =="
for bwd1 in 0 1; do
  [ "$(left)" -lt 150 ] && { echo "skip the table with TTT_ATTN_BWD1=$bwd1 ($(left) s left)"; continue; }
  TTT_ATTN_BWD1=$bwd1 timeout 150 $B/test_attention_fused --bench-bf16 >"$OUT/engine_bwd1_$bwd1.csv" 2>&1 ||
    tail -3 "$OUT/engine_bwd1_$bwd1.csv"
  timeout 150 python3 bench/gpu/attention_bench.py "$OUT/engine_bwd1_$bwd1.csv" >"$OUT/table_bwd1_$bwd1.md" 2>&1
  echo "-- TTT_ATTN_BWD1=$bwd1"
  grep -E "^\| [0-9]+ \| (ttt|SDPA)" "$OUT/table_bwd1_$bwd1.md" | grep -vE "f32" | tail -24
done

for tool in racecheck synccheck; do
  [ "$(left)" -lt 100 ] && { echo "skip $tool ($(left) s left)"; continue; }
  timeout 90 compute-sanitizer --tool $tool --error-exitcode 9 $B/attention_bf16 --small >"$OUT/${tool}_small.txt" 2>&1
  echo "$tool (harness --small): exit $?; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/${tool}_small.txt" | head -1)"
done

lm_runs 1024 8 30
echo "total $(($(date +%s) - t0)) s"
