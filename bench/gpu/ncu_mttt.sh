#!/usr/bin/env bash
# Where the MTTT-MLP kernels of the GPU ViT spend their time (the pixel ViT of bench/mttt/speed_vs_jax.sh, --tf32, so
# the kernels' tensor-core instances run), by Nsight Compute, in one device call: the speed-of-light, occupancy and
# warp-state sections of mttt::step_bwd, step_fwd, apply_fwd and apply_bwd (one launch each, after the first step),
# then step_bwd's source page (stall samples per SASS instruction, summed by opcode by bench/gpu/ncu_stalls.py).
# The step_bwd kernel runs at about 6 TFLOP/s (2.1 ms a call, 13.2 GFLOP at the ViT's head; docs/benchmarks.md):
# this says whether the barriers, the LN rows' double-precision reductions, the operand splitting or the products
# are what it waits on. Carry data/fashion-mnist. Logs in $OUT (default ./gpu-out).
#   bash bench/gpu/ncu_mttt.sh
set -uo pipefail
source bench/gpu/common.sh
build_gpu ttt_cli || exit 1
vit() { # a few training steps of the pixel ViT, graphs off (ncu profiles kernels, not graph replays)
  ./build/gpu/ttt vision train --device cuda --data data/fashion-mnist --layer mttt-mlp --inner-steps 1 --tokens pixels \
    --dim 64 --depth 2 --heads 2 --batch 64 --epochs 1 --train-limit 256 --test-limit 64 --cuda-graph off --tf32 \
    --out /tmp/ncu-vit-$RANDOM
}
timeout 240 ncu --kernel-name-base demangled --kernel-name 'regex:mttt::(step_bwd|step_fwd|apply_fwd|apply_bwd)<' \
  --launch-skip 8 --launch-count 8 --section SpeedOfLight --section Occupancy --section WarpStateStats \
  --section LaunchStats --print-units base vit >"$OUT/ncu_mttt.txt" 2>&1
echo "sections: ncu exit $?"
grep -E "mttt::|Duration|Compute \(SM\) Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Warp Cycles Per Issued|Stall" \
  "$OUT/ncu_mttt.txt" | head -80
timeout 200 ncu --kernel-name-base demangled --kernel-name 'regex:mttt::step_bwd<' --launch-skip 2 --launch-count 1 \
  --section SourceCounters --section WarpStateStats --page source --print-source sass --csv vit \
  >"$OUT/src_step_bwd.csv" 2>"$OUT/src_step_bwd.err"
echo "source page: ncu exit $?, $(wc -l <"$OUT/src_step_bwd.csv") lines"
python3 bench/gpu/ncu_stalls.py "$OUT/src_step_bwd.csv" | tee "$OUT/stalls_step_bwd.txt" | head -60
gzip -f "$OUT/src_step_bwd.csv"
echo "total: $(($(date +%s) - t0)) s"
