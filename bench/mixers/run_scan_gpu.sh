#!/usr/bin/env bash
# The fused TTT-Linear and TTT-MLP scans (src/backends/cuda/ttt_scan.cu, ttt_mlp_scan.cu) on the GPU
# machine, one call (its TTT-Linear part first run on an H100 on 2026-12-06: docs/results-mixers.md; the
# TTT-MLP kernels were checked on the host emulator only, dev/cuda/ttt_mlp_scan_emu_test.cpp). What it does:
#   1. a CUDA build; test_ttt_scan and test_ttt_rnn (CPU contexts of that build);
#   2. checks on CUDA: the layer (both learners and backbones, fused TTT-Linear and TTT-MLP in f32, composed in f64)
#      against the CPU in f64, at head size 16 (the default) and 128 (D 256, 2 heads: W in shared memory
#      beside the backward's buffers, 221 KB; TTT-MLP there is d 128, F 512: its forward's buffers in shared
#      memory, the weights in global, mode 1) and D 768, 2 heads (TTT-MLP d 384, F 1536: the backward's
#      buffers in global memory too, mode 0); gradcheck of both ops on CUDA (orders 1 and 2; parity32 is
#      the f32 kernels against the CPU in f64, parity16 the bf16 run); mixer_speed --check, the op in bf16,
#      f32 --tf32 (both on the tensor cores) and f32 against f64 on the same values;
#   3. compute-sanitizer (memcheck with the pool off, racecheck, synccheck) on each op's gradcheck on CUDA,
#      one seed (each tool's ERROR / RACECHECK SUMMARY line printed);
#   4. times: ttt_rnn_bench, TTT-Linear, D 768, 12 heads (d 64), b 16, both backbones, T 2K and 8K,
#      fused against TTT_FUSED=0 (the composed ops) in the same call on the same GPU; then decode one token
#      at a time (--decode 300: TTT-Linear's fused decode step against the composed one; TTT-MLP's is
#      composed either way) and memcheck on the decode step at d 128 (step 2's --check compares decode on
#      CUDA with the CPU in f64 too);
#   5. times of the op alone (mixer_speed --impl ttt_linear_core: fla's chunk_ttt_linear's inputs, B 1,
#      H 12, d 64, mini-batch 16), f32 and bf16, T 2K, 8K and 32K (run_peer_gpu.sh pairs it with fla),
#      f32 with FMAs and with --tf32 (its products with W on the tensor cores), bf16 on the tensor cores
#      (their default for bf16 inputs) and with TTT_SCAN_MMA=0 (FMAs); the layer's check again with
#      TTT_SCAN_MMA=0 (it runs f32, so FMAs either way unless a context asks for tf32);
#   6. times: ttt_rnn_bench, TTT-MLP, D 768, 12 heads (d 64, F 256), b 16, transformer backbone, T 2K and
#      8K, fused (forward: weights and buffers in shared memory; backward: buffers) against TTT_FUSED=0.
# Needs .debs (json-c) in the carry list (bench/gpu/jsonc_env.sh), like run_gpu.sh.
#   usage: bash bench/mixers/run_scan_gpu.sh        (env OUT, default gpu-out)
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
source bench/gpu/jsonc_env.sh
log() { tee -a "$OUT/ttt_scan_gpu.txt"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | log
cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON >/tmp/scan_cmake.log 2>&1 || { tail -30 /tmp/scan_cmake.log; exit 1; }
cmake --build build/gpu -j "$(nproc)" --target ttt_cli ttt_rnn_bench mixer_speed test_ttt_scan test_ttt_rnn >/tmp/scan_build.log 2>&1 ||
  { grep -iE "error" /tmp/scan_build.log | head -30; exit 1; }
echo "== tests (CPU contexts of the CUDA build) ==" | log
./build/gpu/test_ttt_scan 2>&1 | tail -1 | log
./build/gpu/test_ttt_rnn 2>&1 | tail -1 | log
echo "== CUDA vs CPU f64: the layer's output and every gradient ==" | log
./build/gpu/ttt_rnn_bench --check --device cuda 2>&1 | log
./build/gpu/ttt_rnn_bench --check --device cuda --dim 256 --heads 2 2>&1 | log
./build/gpu/ttt_rnn_bench --check --device cuda --dim 768 --heads 2 2>&1 | log
for op in ttt_linear_scan ttt_mlp_scan; do
  ./build/gpu/ttt gradcheck --device cuda --op $op --seeds 5 2>&1 | tail -7 | log
done
echo "== the op against f64 on the same values (mixer_speed --check: out, dq, dk; d 16, six mini-batches) ==" | log
echo "   bf16 and f32 --tf32 run the kernels' tensor-core products, f32 their FMAs" | log
for run in "bf16" "f32 --tf32" "f32"; do
  ./build/gpu/mixer_speed --device cuda --check --dtype $run --impl none --T 96 2>&1 | grep "check $(echo $run | cut -d' ' -f1) vs f64" |
    sed "s/^/[$run] /" | log
done
echo "== compute-sanitizer ==" | log
if command -v compute-sanitizer >/dev/null; then
  # the op's gradcheck on CUDA (f64 composed, the f32 kernels, the bf16 run through them), one seed: it
  # passes without the sanitizer (above), so a nonzero exit here is the tool's (--error-exitcode 9) or a
  # check broken under it. Each tool's summary line is printed as the tool wrote it; the reports, if any,
  # are kept in $OUT.
  for op in ttt_linear_scan ttt_mlp_scan; do
    for tool in memcheck racecheck synccheck; do
      rep="$OUT/sanitizer_${op}_$tool.txt"
      TTT_CUDA_POOL=0 timeout 300 compute-sanitizer --tool $tool --error-exitcode 9 \
        ./build/gpu/ttt gradcheck --device cuda --op $op --seeds 1 >"$rep" 2>&1
      rc=$?
      summary=$(grep -E '(ERROR|RACECHECK) SUMMARY' "$rep" | tail -1 | sed 's/^=* *//')
      echo "$op $tool: exit $rc; ${summary:-no summary line (see $rep)}" | log
    done
  done
else
  echo "compute-sanitizer not found" | log
fi
echo "== forward / forward + backward, TTT-Linear, D 768, 12 heads, b 16, batch 1: fused, then TTT_FUSED=0 ==" | log
for bb in transformer mamba; do
  for fused in 1 0; do
    TTT_FUSED=$fused timeout 240 ./build/gpu/ttt_rnn_bench --device cuda --kind linear --backbone $bb --T 2048,8192 --reps 5 2>&1 |
      sed "s/^/[TTT_FUSED=$fused] /" | log
  done
done
echo "== decode, one token at a time (TTT-Linear: the fused decode step, src/backends/cuda/ttt_step.cu), then TTT_FUSED=0 ==" | log
for kind in linear mlp; do
  for fused in 1 0; do
    TTT_FUSED=$fused timeout 60 ./build/gpu/ttt_rnn_bench --device cuda --kind $kind --decode 300 2>&1 | sed "s/^/[TTT_FUSED=$fused] /" | log
  done
done
if command -v compute-sanitizer >/dev/null; then
  TTT_CUDA_POOL=0 timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 ./build/gpu/ttt_rnn_bench --device cuda \
    --decode 20 --dim 256 --heads 2 >"$OUT/sanitizer_decode.txt" 2>&1
  echo "memcheck, decode step (d 128): exit $?; $(grep -E 'ERROR SUMMARY' "$OUT/sanitizer_decode.txt" | tail -1 | sed 's/^=* *//')" | log
fi
echo "== the op alone (ttt_linear_core: q, k, v, eta, LN gain / bias, W0, b0; B 1, H 12, d 64, b 16) ==" | log
echo "   f32 (FMAs), f32 --tf32 (its products with W on the tensor cores), bf16 (tensor cores), bf16 TTT_SCAN_MMA=0 (FMAs)" | log
for run in "f32" "f32 --tf32" "bf16" "bf16 TTT_SCAN_MMA=0"; do
  set -- $run
  dt=$1 flag=${2:-}
  mma=1; [ "$flag" = "TTT_SCAN_MMA=0" ] && { mma=0; flag=; }
  TTT_SCAN_MMA=$mma timeout 240 ./build/gpu/mixer_speed --device cuda --dtype $dt --impl ttt_linear_core $flag \
    --T 2048,8192,32768 --heads 12 --dim 64 --batch 1 --reps 5 2>&1 | grep -v "^# device" | sed "s/^/[$run] /" | log
done
echo "== forward / forward + backward, TTT-MLP, D 768, 12 heads (d 64, F 256), b 16, batch 1: fused, then TTT_FUSED=0 ==" | log
for fused in 1 0; do
  TTT_FUSED=$fused timeout 300 ./build/gpu/ttt_rnn_bench --device cuda --kind mlp --backbone transformer --T 2048,8192 --reps 3 2>&1 |
    sed "s/^/[TTT_FUSED=$fused] /" | log
done
