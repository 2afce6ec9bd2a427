#!/usr/bin/env bash
# TTT-E2E on the GPU machine, in parts that fit one device call each
# (docs/results-e2e.md and docs/results-e2e-inference.md quote the output):
#   PART=check   build; backend instances on the GPU; TTT-E2E loss and outer
#                gradients on CUDA (f32 and bf16) against the CPU in float64
#   PART=step    one training step (forward + backward) of full attention, SWA and
#                TTT-E2E (second and first order) at 125M: time and peak memory
#                at 2K, 8K, 32K
#   PART=demo    train the small TTT-E2E model that scripts/demo.sh ships
#                (models/e2e-demo: Linux Documentation only, 4096-token BPE; needs
#                data/lm4k/linux.bin and data/lm4k/tokenizer in the carry list)
#   PART=more    the step arena at 2K/8K/32K, full attention's prefill at 128K,
#                the 760M-shaped inference rows (what PART=infer's time limit cut)
#   PART=infer   prefill s/1K, decode tok/s and memory at 8K..128K (1M for SWA
#                and TTT-E2E), 125M- and 760M-shaped, with PyTorch's full-attention
#                prefill beside it
# Needs .debs (json-c) in the carry list: see bench/gpu/jsonc_env.sh.
#   usage: PART=check|step|infer bash bench/lm/run_e2e_gpu.sh
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
source bench/gpu/jsonc_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/e2e_gpu.txt"
if pkg-config --exists json-c && ! grep -q "JSONC_FOUND:INTERNAL=1" build/gpu/CMakeCache.txt 2>/dev/null; then rm -f build/gpu/CMakeCache.txt; fi
cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON >"$OUT/cmake.log" 2>&1 || { tail -40 "$OUT/cmake.log"; exit 1; }
t0=$(date +%s)
cmake --build build/gpu -j "$(nproc)" --target ttt_cli e2e_step e2e_infer test_backend_instances test_attention_fused \
  >"$OUT/build.log" 2>&1 || { grep -iE "error" "$OUT/build.log" | head -40; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
B=./build/gpu
log() { tee -a "$OUT/e2e_gpu.txt"; }
status=0
case "${PART:-check}" in
check)
  echo "== backend instances on the GPU (two contexts on one device, TF32 per context) ==" | log
  $B/test_backend_instances 2>&1 | tail -4 | log || status=1
  echo "== fused attention parity (quick) ==" | log
  $B/test_attention_fused --quick 2>&1 | tail -2 | log || status=1
  echo "== TTT-E2E on CUDA against the CPU in float64 ==" | log
  $B/e2e_step --check --device cuda 2>&1 | log || status=1
  echo "== gradcheck on cuda, 1 seed ==" | log
  timeout 240 $B/ttt gradcheck --device cuda --seeds 1 >"$OUT/gradcheck_cuda.txt" 2>&1 || status=1
  tail -n 2 "$OUT/gradcheck_cuda.txt" | log
  ;;
step)
  echo "== one training step, 125M, bf16 compute, batch 1 ==" | log
  timeout 200 $B/e2e_step --preset 125m --device cuda --compute bf16 --seq 2048,8192 --reps 3 2>&1 | log || status=1
  timeout 100 $B/e2e_step --preset 125m --device cuda --compute bf16 --seq 8192 --kinds e2e --first-order --reps 3 2>&1 | log || status=1
  timeout 200 $B/e2e_step --preset 125m --device cuda --compute bf16 --seq 32768 --kinds fa,swa,e2e --reps 1 2>&1 | log || status=1
  ;;
demo)
  echo "== the demo model (resumes if $OUT/demo-model exists from an earlier call) ==" | log
  DEMO_FLAGS="--data data/lm4k/linux.bin --preset tiny-e2e --dim 64 --depth 4 --heads 4 --mlp-hidden 138 --prime-hidden 138
    --prime-blocks 1 --window 256 --inner-chunk 128 --seq-len 2048 --batch 8 --steps ${DEMO_STEPS:-200} --lr 3e-3 --warmup 20
    --log-every 10 --save-every 20 --seed 1"
  resume=""; [ -f "$OUT/demo-model/model.safetensors" ] && resume=--resume
  timeout ${DEMO_TIMEOUT:-300} $B/ttt lm train --device cuda $DEMO_FLAGS --out "$OUT/demo-model" $resume 2>&1 | tail -n 4 | log
  echo "command: ttt lm train --device cuda $(echo $DEMO_FLAGS) --out models/e2e-demo" >"$OUT/demo-model/COMMAND"
  ;;
infer)
  echo "== prefill and decode, 125M, bf16 compute ==" | log
  # 1024 decoded tokens: one inner step of TTT-E2E's (b = 1024), as in a long generation
  timeout 200 $B/e2e_infer --preset 125m --device cuda --compute bf16 --ctx 8192,32768,131072 --decode 1024 2>&1 | log || status=1
  timeout 120 $B/e2e_infer --preset 125m --device cuda --compute bf16 --ctx 1048576 --kinds swa,e2e --decode 1024 2>&1 | log || status=1
  echo "== PyTorch full attention prefill (SDPA, bf16), same shapes ==" | log
  for C in 8192 32768 131072; do
    timeout 40 python3 bench/lm/torch_lm.py prefill --preset 125m --seq $C --dtype bf16 2>&1 | tail -n 1 | log
  done
  echo "== 760M-shaped ==" | log
  timeout 100 $B/e2e_infer --preset 760m --device cuda --compute bf16 --ctx 8192,32768 --decode 1024 2>&1 | log || status=1
  ;;
more)
  echo "== step memory (the step arena) at 2K, 8K, 32K; full-attention prefill at 128K; 760M-shaped ==" | log
  timeout 90 $B/e2e_step --preset 125m --device cuda --compute bf16 --seq 2048,8192,32768 --reps 1 2>&1 | log || status=1
  timeout 80 $B/e2e_infer --preset 125m --device cuda --compute bf16 --ctx 131072 --kinds fa --decode 64 2>&1 | log || status=1
  timeout 90 $B/e2e_infer --preset 760m --device cuda --compute bf16 --ctx 8192,32768 --decode 256 2>&1 | log || status=1
  ;;
esac
exit $status
