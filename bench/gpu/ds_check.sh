#!/usr/bin/env bash
# The stored-dS backward (TTT_ATTN_DS=1: attnbf::bwd_dkdv_ds writes dS, attnbf::bwd_dq_ds computes dQ from it with
# one tile product instead of three) on a GPU, in one device call: build; the engine's parity test with it (fused
# bf16 against the composed path in f64), again under caps that split the heads into groups, and memcheck of its
# quick subset; forward + backward at 8K, 16K (four groups of heads) and 32K (twelve) at d 64 and 8K at d 128,
# without it, with it, and SDPA flash; the kernels under ncu at d 64 8K; the 125M LM step at T 8K without and with
# it, alternated, and torch.compile; then, while DEADLINE (seconds, default 400) allows, the dev harness
# (dev/cuda/attention_bf16.cu --bench: the stored-dS kernels alone, dQ in two shapes, how many dQ elements differ
# from the two-kernel path's) and the whole 2K..128K table with it. Carry .debs (json-c, for `ttt data prepare`).
# Logs in $OUT (default ./gpu-out).
set -uo pipefail
export TTT_CUDNN=${TTT_CUDNN:-0} # the LM runs on our own attention kernels, which this script is about (test_attention_fused turns cuDNN off itself)
DEADLINE_DEFAULT=400
source bench/gpu/common.sh
build_gpu test_attention_fused ttt_cli || exit 1
status=0
TTT_ATTN_DS=1 timeout 150 ./build/gpu/test_attention_fused >"$OUT/parity_ds.txt" 2>&1 || status=1
echo "parity with TTT_ATTN_DS=1: exit $status; $(tail -1 "$OUT/parity_ds.txt")"
grep -E "FAIL" "$OUT/parity_ds.txt" | head -10
for mb in 0.03 0.1 0.4; do # caps that split the test's heads into groups (or decline where one head does not fit)
  TTT_ATTN_DS=1 TTT_ATTN_DS_MB=$mb timeout 60 ./build/gpu/test_attention_fused --quick >"$OUT/parity_ds_$mb.txt" 2>&1 || status=1
  echo "parity --quick with TTT_ATTN_DS=1 TTT_ATTN_DS_MB=$mb: $(tail -1 "$OUT/parity_ds_$mb.txt")"
done
TTT_ATTN_DS=1 timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 ./build/gpu/test_attention_fused --quick \
  >"$OUT/memcheck_ds.txt" 2>&1
echo "memcheck (TTT_ATTN_DS=1 --quick): exit $?; $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_ds.txt")"
# forward + backward: two-kernel backward, stored dS (default cap: 8K one group, 16K four groups of 3 heads; 32K
# with a 2 GiB cap, twelve groups of one), SDPA flash
for shape in "8192 64 1024" "16384 64 1024" "32768 64 2048" "8192 128 1024"; do
  set -- $shape
  a=$(./build/gpu/test_attention_fused --bench-one "$1" "$2" | grep -oE "[0-9.]+$")
  b=$(TTT_ATTN_DS=1 TTT_ATTN_DS_MB=$3 ./build/gpu/test_attention_fused --bench-one "$1" "$2" | grep -oE "[0-9.]+$")
  a2=$(./build/gpu/test_attention_fused --bench-one "$1" "$2" | grep -oE "[0-9.]+$")
  sdpa=$(python3 -c "
import sys, torch
sys.path.insert(0, 'bench/gpu')
from attention_bench import sdpa_times
from torch.nn.attention import SDPBackend
print(f'{sdpa_times(1, 12, $1, $2, torch.bfloat16, SDPBackend.FLASH_ATTENTION)[1]:.3f}')")
  awk -v t="$1" -v d="$2" -v a="$a" -v a2="$a2" -v b="$b" -v s="$sdpa" 'BEGIN{printf "fwd+bwd T %s d %s: two-kernel %s / %s ms, stored dS %s ms, SDPA flash %s ms; ratios to SDPA %.2fx / %.2fx\n", t, d, a, a2, b, s, (a > 0 ? s / a : 0), (b > 0 ? s / b : 0)}'
done
if [ "$(left)" -gt 200 ]; then # time per kernel, d 64 8K (ncu locks the clocks)
  TTT_ATTN_DS=1 timeout 90 ncu --kernel-name-base demangled --kernel-name regex:attnbf:: --launch-skip 12 --launch-count 4 \
    --section SpeedOfLight --metrics smsp__inst_executed.sum,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active \
    --print-units base ./build/gpu/test_attention_fused --bench-one 8192 64 >"$OUT/ncu_ds_8192_64.txt" 2>&1
  python3 bench/gpu/ncu_summary.py "$OUT/ncu_ds_8192_64.txt"
fi
if [ "$(left)" -gt 120 ]; then
  W=/tmp/ds-lm
  mkdir -p $W
  ./build/gpu/ttt data prepare --tokenizer data/gpt2-tokenizer --out $W/ts.bin data/tinyshakespeare/ >$W/prep.log 2>&1 || tail -3 $W/prep.log
  for ds in 0 1 0 1; do
    [ "$(left)" -lt 60 ] && break
    TTT_ATTN_DS=$ds timeout 60 ./build/gpu/ttt lm train --device cuda --data $W/ts.bin --preset 125m --seq-len 8192 --batch 1 \
      --steps 16 --log-every 4 --save-every 1000000 --compute bf16 --timing --out $W/lm-$ds-$RANDOM >$W/lm.log 2>&1 || status=1
    echo "T=8192 TTT_ATTN_DS=$ds: $(grep -oE "[0-9]+ tok/s" $W/lm.log | tail -1); $(grep -E "ms per step" $W/lm.log | tail -1)"
  done
  [ "$(left)" -gt 60 ] && PYTHONPATH=bench/lm timeout "$(left)" python3 bench/lm/torch_lm.py bench --preset 125m --seq 8192 \
    --batch 1 --dtype bf16 --compile 2>/dev/null | tail -1 | sed "s/^/torch.compile T=8192: /"
fi
if [ "$(left)" -gt 100 ]; then # the dev harness: every kernel configuration and the stored-dS kernels alone, timed
  nvcc -O3 -arch=sm_90 -std=c++17 -I src/backends/cuda -I dev/cuda dev/cuda/attention_bf16.cu -o build/gpu/attention_bf16 \
    >"$OUT/nvcc.log" 2>&1 && timeout "$(left)" ./build/gpu/attention_bf16 --bench >"$OUT/harness.csv" 2>&1
  grep -E "FAIL|checks|stored dS|bf16dev:(ds|dkdv\+dq)" "$OUT/harness.csv" | head -40
fi
if [ "$(left)" -gt 150 ]; then # the whole table, 2K..128K, with stored dS where it fits the default 1 GiB
  TTT_ATTN_DS=1 CHECKS=0 F32=0 HARNESS=0 OUT=$OUT/attn timeout "$(left)" bash bench/gpu/run_attention.sh 2>&1 |
    grep -E "^\||ratio|d = " || status=1
fi
echo "total: $(($(date +%s) - t0)) s"
exit $status
