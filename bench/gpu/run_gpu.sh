#!/usr/bin/env bash
# One call on the GPU machine (see docs/benchmarks.md): build with CUDA, run the
# float64 gradient checks on the GPU (finite differences and CPU parity),
# compute-sanitizer memcheck on a subset, then the benchmarks and the PyTorch
# peer. Logs go to $OUT (or ./gpu-out).
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON >"$OUT/cmake.log" 2>&1 || { tail -40 "$OUT/cmake.log"; exit 1; }
cmake --build build/gpu -j "$(nproc)" >"$OUT/build.log" 2>&1 || { grep -iE "error" "$OUT/build.log" | head -40; exit 1; }
status=0
echo "== gradcheck on cuda (f64, 3 seeds) =="
./build/gpu/ttt gradcheck --device cuda --seeds 3 >"$OUT/gradcheck_cuda.txt" 2>&1 || status=1
grep -E "FAIL|error|passed" "$OUT/gradcheck_cuda.txt" | tail -15
echo "== compute-sanitizer memcheck =="
for op in matmul 'matmul(views)' sum max softmax log_softmax layer_norm rms_norm cross_entropy embedding \
          scatter_add_rows rope 'attn_mask+softmax' where concat slice_scatter 'checkpoint(inner_grad_step)'; do
  compute-sanitizer --tool memcheck --error-exitcode 9 ./build/gpu/ttt gradcheck --device cuda --seeds 1 --op "$op" \
    >>"$OUT/memcheck.txt" 2>&1 || { echo "memcheck FAILED on $op"; status=1; }
done
grep -E "ERROR SUMMARY" "$OUT/memcheck.txt" | sort | uniq -c
echo "== fused attention: f32 parity with the composed path in f64, memcheck (bench/gpu/run_attention.sh times it) =="
./build/gpu/test_attention_fused >"$OUT/attention_parity.txt" 2>&1 || { echo "attention parity FAILED"; status=1; }
grep -E "FAIL|second order|passed" "$OUT/attention_parity.txt" | tail -8
compute-sanitizer --tool memcheck --error-exitcode 9 ./build/gpu/test_attention_fused --quick >"$OUT/attention_memcheck.txt" 2>&1 \
  || { echo "memcheck FAILED on test_attention_fused"; status=1; }
grep -E "ERROR SUMMARY" "$OUT/attention_memcheck.txt"
echo "== bench_cuda =="
./build/gpu/bench_cuda 2>&1 | tee "$OUT/bench_cuda.txt"
echo "== torch peer =="
python3 bench/gpu/torch_peer.py 2>&1 | tee "$OUT/torch_peer.txt"
exit $status
