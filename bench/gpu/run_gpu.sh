#!/usr/bin/env bash
# One call on the GPU machine (see docs/benchmarks.md): build with CUDA, run the
# float64 gradient checks on the GPU (finite differences and CPU parity),
# compute-sanitizer memcheck on a subset, then the benchmarks and the PyTorch
# peer. Logs go to $OUT (or ./gpu-out).
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
source bench/gpu/jsonc_env.sh # json-c (checkpoints) from .debs when the machine lacks it
source bench/gpu/cudnn_env.sh >"$OUT/cudnn_env.txt" 2>&1 # the libcudnn of the default attention path (TTT_CUDNN=det)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# a cache from a build without json-c would keep it out (pkg-config checks once)
if pkg-config --exists json-c && ! grep -q "JSONC_FOUND:INTERNAL=1" build/gpu/CMakeCache.txt 2>/dev/null; then rm -f build/gpu/CMakeCache.txt; fi
cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON >"$OUT/cmake.log" 2>&1 || { tail -40 "$OUT/cmake.log"; exit 1; }
cmake --build build/gpu -j "$(nproc)" >"$OUT/build.log" 2>&1 || { grep -iE "error" "$OUT/build.log" | head -40; exit 1; }
status=0
# SECTIONS picks parts (default all): grad mem attn lm bench torch
SECTIONS=" ${SECTIONS:-grad mem attn lm bench torch} "
want() { [[ "$SECTIONS" == *" $1 "* ]]; }
if want grad; then
echo "== gradcheck on cuda (f64, 3 seeds) =="
./build/gpu/ttt gradcheck --device cuda --seeds 3 >"$OUT/gradcheck_cuda.txt" 2>&1 || status=1
grep -E "FAIL|error|passed" "$OUT/gradcheck_cuda.txt" | tail -15
fi
if want mem; then
echo "== compute-sanitizer memcheck (TTT_CUDA_POOL=0: each allocation its own, so overruns are seen) =="
for op in matmul 'matmul(views)' sum max softmax log_softmax layer_norm rms_norm cross_entropy embedding \
          scatter_add_rows rope 'attn_mask+softmax' where concat slice_scatter 'checkpoint(inner_grad_step)'; do
  TTT_CUDA_POOL=0 compute-sanitizer --tool memcheck --error-exitcode 9 ./build/gpu/ttt gradcheck --device cuda --seeds 1 --op "$op" \
    >>"$OUT/memcheck.txt" 2>&1 || { echo "memcheck FAILED on $op"; status=1; }
done
grep -E "ERROR SUMMARY" "$OUT/memcheck.txt" | sort | uniq -c
fi
if want attn; then
echo "== fused attention: f32 parity with the composed path in f64, memcheck (bench/gpu/run_attention.sh times it) =="
./build/gpu/test_attention_fused >"$OUT/attention_parity.txt" 2>&1 || { echo "attention parity FAILED"; status=1; }
grep -E "FAIL|second order|passed" "$OUT/attention_parity.txt" | tail -8
TTT_CUDA_POOL=0 compute-sanitizer --tool memcheck --error-exitcode 9 ./build/gpu/test_attention_fused --quick >"$OUT/attention_memcheck.txt" 2>&1 \
  || { echo "memcheck FAILED on test_attention_fused"; status=1; }
grep -E "ERROR SUMMARY" "$OUT/attention_memcheck.txt"
echo "== device memory pool: reuse and no driver allocation in steady state =="
./build/gpu/test_cuda_memory >"$OUT/cuda_memory.txt" 2>&1 || { echo "test_cuda_memory FAILED"; status=1; }
tail -n 2 "$OUT/cuda_memory.txt"
echo "== fused double backward (f32) against the composed f64 path, second and third order; memcheck =="
./build/gpu/test_attention_bwd2 >"$OUT/attention_bwd2.txt" 2>&1 || { echo "double backward FAILED"; status=1; }
grep -E "^B |FAIL|passed" "$OUT/attention_bwd2.txt"
TTT_CUDA_POOL=0 compute-sanitizer --tool memcheck --error-exitcode 9 ./build/gpu/test_attention_bwd2 >"$OUT/attention_bwd2_memcheck.txt" 2>&1 \
  || { echo "memcheck FAILED on test_attention_bwd2"; status=1; }
grep -E "ERROR SUMMARY" "$OUT/attention_bwd2_memcheck.txt"
fi
if want lm; then
echo "== language model on the GPU: mixed precision (test_lm), bit-identical reruns and resume =="
./build/gpu/test_lm >"$OUT/test_lm.txt" 2>&1 || { echo "test_lm FAILED"; status=1; }
grep -E "mixed precision|FAIL|passed" "$OUT/test_lm.txt" | tail -6
if [ -f data/lmshards/train.bin ]; then
  D=/tmp/ttt-determinism; rm -rf $D; mkdir -p $D
  common="--device cuda --data data/lmshards/train.bin --preset tiny --seq-len 256 --batch 8 --steps 20 --log-every 10 --save-every 20"
  for c in f32 bf16; do
    ./build/gpu/ttt lm train $common --compute $c --out $D/a-$c >$D/a-$c.log 2>&1
    ./build/gpu/ttt lm train $common --compute $c --out $D/b-$c >$D/b-$c.log 2>&1
    ./build/gpu/ttt lm train $common --compute $c --out $D/r-$c --stop-at 10 >$D/r-$c.log 2>&1
    ./build/gpu/ttt lm train $common --compute $c --out $D/r-$c --resume >>$D/r-$c.log 2>&1
    for other in b r; do
      [ $other = b ] && grep -h "device memory" $D/a-$c.log
      if cmp -s $D/a-$c/model.safetensors $D/$other-$c/model.safetensors; then
        echo "compute $c: run a and run $other (b: a second run, r: stopped at 10 and resumed) give byte-identical checkpoints"
      else
        echo "compute $c: run a and run $other: checkpoints DIFFER (or a run failed)"; tail -n 3 $D/$other-$c.log; status=1
      fi
    done
  done
else
  echo "(no data/lmshards/train.bin in the carry list: determinism check skipped)"
fi
fi
if want bench; then
echo "== bench_cuda =="
./build/gpu/bench_cuda 2>&1 | tee "$OUT/bench_cuda.txt"
fi
if want torch; then
echo "== torch peer =="
python3 bench/gpu/torch_peer.py 2>&1 | tee "$OUT/torch_peer.txt"
fi
exit $status
