#!/usr/bin/env bash
# The short GPU check after a change to the bf16 attention kernels, in one device call: build; the engine's parity
# subset (test_attention_fused --quick: fused bf16 and f32 against the composed path in f64); forward + backward at
# 8K and 32K, d 64 and 128, against SDPA flash; then, while DEADLINE (seconds, default 330) allows: instructions and
# tensor-pipe time of the kernels (ncu, d 64, 8K), the whole table 2K..128K (bench/gpu/run_attention.sh's), and the
# 125M LM step at T 8K against torch.compile.
# Carry .debs (json-c, for `ttt data prepare`). Logs in $OUT (default ./gpu-out).
set -uo pipefail
export TTT_CUDNN=${TTT_CUDNN:-0} # the LM runs on our own attention kernels, which this script is about (test_attention_fused turns cuDNN off itself)
DEADLINE_DEFAULT=330
source bench/gpu/common.sh
build_gpu test_attention_fused ttt_cli || exit 1
status=0
timeout 120 ./build/gpu/test_attention_fused --quick >"$OUT/parity_quick.txt" 2>&1 || status=1
echo "parity (--quick): exit $status; $(tail -1 "$OUT/parity_quick.txt")"
grep -E "FAIL" "$OUT/parity_quick.txt" | head -10
# first a short table: forward + backward at 8K and 32K, d 64 and 128, ttt beside SDPA flash
for shape in "8192 64" "32768 64" "8192 128" "32768 128"; do
  set -- $shape
  ttt=$(./build/gpu/test_attention_fused --bench-one "$1" "$2" | grep -oE "[0-9.]+$")
  sdpa=$(python3 -c "
import sys, torch
sys.path.insert(0, 'bench/gpu')
from attention_bench import sdpa_times
from torch.nn.attention import SDPBackend
print(f'{sdpa_times(1, 12, $1, $2, torch.bfloat16, SDPBackend.FLASH_ATTENTION)[1]:.3f}')")
  awk -v t="$1" -v d="$2" -v a="$ttt" -v b="$sdpa" \
    'BEGIN{printf "fwd+bwd T %s d %s: ttt %s ms, SDPA flash %s ms, ratio %.2fx\n", t, d, a, b, (a > 0 ? b / a : 0)}'
done
if [ "$(left)" -gt 45 ]; then # instructions and tensor-pipe time of ttt's kernels at d 64, 8K (bench/gpu/ncu_attention.sh has more)
  timeout "$(left)" ncu --kernel-name-base demangled --kernel-name regex:attnbf:: --launch-skip 12 --launch-count 4 \
    --section SpeedOfLight --metrics smsp__inst_executed.sum,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active \
    --print-units base ./build/gpu/test_attention_fused --bench-one 8192 64 >"$OUT/ncu_8192_64.txt" 2>&1
  python3 bench/gpu/ncu_summary.py "$OUT/ncu_8192_64.txt"
fi
if [ "$(left)" -gt 150 ]; then # the whole table, 2K..128K
  CHECKS=0 F32=0 HARNESS=0 OUT=$OUT/attn timeout "$(left)" bash bench/gpu/run_attention.sh 2>&1 | grep -E "^\||ratio|d = " || status=1
fi
if [ "$(left)" -gt 100 ]; then
  W=/tmp/attn-quick-lm
  mkdir -p $W
  ./build/gpu/ttt data prepare --tokenizer data/gpt2-tokenizer --out $W/ts.bin data/tinyshakespeare/ >$W/prep.log 2>&1 || tail -3 $W/prep.log
  ./build/gpu/ttt lm train --device cuda --data $W/ts.bin --preset 125m --seq-len 8192 --batch 1 --steps 16 --log-every 4 \
    --save-every 1000000 --compute bf16 --timing --out $W/lm >$W/lm.log 2>&1 || status=1
  grep -E "^step 16|ms per step" $W/lm.log | tail -2 | sed "s/^/ttt T=8192: /"
  [ "$(left)" -gt 60 ] && PYTHONPATH=bench/lm timeout "$(left)" python3 bench/lm/torch_lm.py bench --preset 125m --seq 8192 \
    --batch 1 --dtype bf16 --compile 2>/dev/null | tail -1 | sed "s/^/torch.compile T=8192: /"
fi
echo "total: $(($(date +%s) - t0)) s"
exit $status
