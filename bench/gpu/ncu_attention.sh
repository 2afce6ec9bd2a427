#!/usr/bin/env bash
# Where the bf16 attention kernels lose to FlashAttention-2 (PyTorch SDPA flash), by Nsight Compute, in one device
# call: for each shape (B 1, H 12, causal; SHAPES, default "8192:64 8192:128") the last of 4 forward + backward runs
# of ttt's kernels (fwd, delta, bwd_dkdv, bwd_dq) and of SDPA flash's (flash_fwd, dot_do_o, the backward, convert_dq),
# then (BWD1=1, the default) ttt's one-kernel backward (TTT_ATTN_BWD1=1) at the first shape. Sections: speed of light,
# occupancy, launch statistics, warp states (stall reasons), compute workload, scheduler; plus shared-memory bank
# conflicts and the tensor pipe's active cycles. ncu locks the clocks at base: read ratios, not absolute times.
# Logs in $OUT (default ./gpu-out): ncu_<who>_<T>_<d>.txt and a summary table ncu_summary.txt.
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
SHAPES=${SHAPES:-"8192:64 8192:128"}
t0=$(date +%s)
cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON >"$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
cmake --build build/gpu -j "$(nproc)" --target test_attention_fused >"$OUT/build.log" 2>&1 ||
  { grep -iE "error" "$OUT/build.log" | head -30; exit 1; }
echo "build: $(($(date +%s) - t0)) s"
SECTIONS="--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
  --section ComputeWorkloadAnalysis --section SchedulerStats"
M1="l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum"
M2="sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum"
M3="l1tex__data_pipe_lsu_wavefronts_mem_shared.sum"
M4="regex:^smsp__average_warps?_issue_stalled_.*_per_issue_active\.ratio$"
# each metric list is kept only where ncu takes it (a name it lacks fails the whole run)
METRICS=""
for m in "$M1" "$M2" "$M3" "$M4"; do
  if timeout 60 ncu --kernel-name-base demangled --kernel-name regex:attnbf:: --launch-count 1 --metrics "$m" \
    ./build/gpu/test_attention_fused --bench-one 256 64 >"$OUT/ncu_probe.txt" 2>&1 && ! grep -q "==ERROR==" "$OUT/ncu_probe.txt"; then
    METRICS="${METRICS:+$METRICS,}$m"
  else
    echo "ncu does not take --metrics $m: $(grep -m1 ERROR "$OUT/ncu_probe.txt")"
  fi
done
[ -n "$METRICS" ] && METRICS="--metrics $METRICS"
# profile WHO T D KERNEL_REGEX SKIP COUNT CMD...: the COUNT launches after SKIP matching ones
profile() {
  local who=$1 t=$2 d=$3 re=$4 skip=$5 count=$6
  shift 6
  timeout 200 ncu --kernel-name-base demangled --kernel-name "regex:$re" --launch-skip "$skip" --launch-count "$count" $SECTIONS $METRICS \
    --print-units base "$@" >"$OUT/ncu_${who}_${t}_${d}.txt" 2>&1
  echo "$who T $t d $d: ncu exit $?, $(grep -c '^  [a-zA-Z_].*(' "$OUT/ncu_${who}_${t}_${d}.txt") kernels"
}
first=1
for shape in $SHAPES; do
  t=${shape%%:*} d=${shape##*:}
  # ttt: 4 runs (a warm-up, 3 timed) of fwd, delta, bwd_dkdv, bwd_dq (+ dq_combine when keys are split): the last run
  profile ttt "$t" "$d" 'attnbf::' 12 5 ./build/gpu/test_attention_fused --bench-one "$t" "$d"
  profile sdpa "$t" "$d" 'flash' 12 4 python3 bench/gpu/sdpa_one.py "$t" "$d"
  if [ "$first" = 1 ] && [ "${BWD1:-1}" = 1 ]; then
    TTT_ATTN_BWD1=1 profile ttt-bwd1 "$t" "$d" 'attnbf::' 9 3 ./build/gpu/test_attention_fused --bench-one "$t" "$d"
  fi
  first=0
done
python3 bench/gpu/ncu_summary.py "$OUT"/ncu_*.txt | tee "$OUT/ncu_summary.txt"
echo "total: $(($(date +%s) - t0)) s"
