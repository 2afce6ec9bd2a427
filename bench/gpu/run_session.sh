#!/usr/bin/env bash
# One device call for a session whose device time allows one: the checks and timings that the
# session's changes need, in priority order, each skipped once the call nears its limit (DEADLINE s).
#   1. build; gradchecks on CUDA of the new ops (gelu_grad, silu_grad) and of the mixers' cases
#   2. 125M LM training, bf16, T = 1K x 8 and 8K x 1: ttt (--timing) against torch.compile, and the
#      bf16 matmul ceiling for MFU (bench/speed/run_table.sh's lm part)
#   3. the TTT layers on CUDA against the CPU, and their timings (bench/mixers/ttt_rnn_bench)
#   4. linear attention / Gated DeltaNet / Mamba 2 on CUDA, checked and timed (bench/mixers/mixer_speed)
# Carry .debs (json-c). Logs in $OUT/session.txt.
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
DEADLINE=${DEADLINE:-560}
LOG="$OUT/session.txt"
log() { tee -a "$LOG"; }
t0=$(date +%s)
left() { echo $((DEADLINE - ($(date +%s) - t0))); }
ok_time() { [ "$(left)" -gt "$1" ] || { echo "skipped (time): $2" | log; return 1; }; }
source bench/gpu/jsonc_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | log
cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON -DTTT_MPI=OFF -DTTT_NCCL=OFF >"$OUT/cmake.log" 2>&1 \
  || { tail -30 "$OUT/cmake.log"; exit 1; }
cmake --build build/gpu -j "$(nproc)" --target ttt_cli ttt_rnn_bench mixer_speed >"$OUT/build.log" 2>&1 \
  || { grep -iE "error" "$OUT/build.log" | head -30; exit 1; }
echo "build: $(($(date +%s) - t0)) s" | log
B=./build/gpu
status=0

echo "== 1. gradchecks on CUDA (f64 finite differences, CPU parity, bf16 parity) ==" | log
for op in gelu silu gelu_grad silu_grad "linear_attention(chunked)" "gated_delta(chunked)" "gated_delta(recurrent)" "ssd(chunked)"; do
  timeout 60 $B/ttt gradcheck --device cuda --op "$op" --seeds 1 2>&1 | tail -4 | log || status=1
done

echo "== 2. 125M LM training, bf16 ==" | log
W=/tmp/session
mkdir -p $W
$B/ttt data prepare --tokenizer data/gpt2-tokenizer --out $W/ts.bin data/tinyshakespeare/ >$W/prep.log 2>&1 || cat $W/prep.log
peak=$(timeout 60 python3 -c "
import torch
a = torch.randn(8192, 8192, device='cuda', dtype=torch.bfloat16); b = torch.randn_like(a)
for _ in range(3): a @ b
torch.cuda.synchronize()
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
s.record()
for _ in range(20): a @ b
e.record(); torch.cuda.synchronize()
print(f'{2 * 8192**3 * 20 / (s.elapsed_time(e) * 1e-3) / 1e12:.1f}')")
echo "bf16 matmul ceiling (torch.matmul 8192^3): $peak TFLOP/s" | log
for shape in "1024 8" "8192 1"; do
  set -- $shape
  seq=$1 batch=$2
  ok_time 150 "LM T=$seq" || continue
  timeout 90 $B/ttt lm train --device cuda --data $W/ts.bin --preset 125m --seq-len $seq --batch $batch --steps 16 --log-every 4 \
    --save-every 1000000 --compute bf16 --timing --out $W/lm-$seq >$W/lm-$seq.log 2>&1 || { tail -3 $W/lm-$seq.log | log; status=1; }
  fpt=$(grep -oE "[0-9.e+]+ FLOPs per token" $W/lm-$seq.log | head -1 | grep -oE "^[0-9.e+]+")
  tt=$(grep -oE "[0-9]+ tok/s" $W/lm-$seq.log | tail -1 | grep -oE "[0-9]+")
  grep -E "^step 16|ms per step" $W/lm-$seq.log | tail -2 | sed "s/^/ttt T=$seq: /" | log
  line=$(PYTHONPATH=bench/lm timeout 150 python3 bench/lm/torch_lm.py bench --preset 125m --seq $seq --batch $batch --dtype bf16 \
    --compile 2>>$W/torch_err.txt | tail -1)
  tc=$(echo "$line" | grep -oE '"tokens_per_s": [0-9.]+' | grep -oE '[0-9.]+$' | cut -d. -f1)
  echo "torch.compile T=$seq: $line" | log
  awk -v a="${tt:-0}" -v c="${tc:-0}" -v f="${fpt:-0}" -v p="${peak:-0}" -v s=$seq 'BEGIN{
    printf "T=%s: ttt %d tok/s (%.1f TFLOP/s, MFU %.1f%% of the measured ceiling), torch.compile %d tok/s (MFU %.1f%%), ttt/compile %.2fx\n",
      s, a, a*f/1e12, (p > 0 ? 100*a*f/1e12/p : 0), c, (p > 0 ? 100*c*f/1e12/p : 0), (c > 0 ? a/c : 0)}' | log
done
tail -2 $W/torch_err.txt 2>/dev/null

echo "== 3. TTT layers: CUDA vs CPU, and times (D 768, 12 heads, b 16, batch 1) ==" | log
if ok_time 60 "ttt_rnn_bench"; then
  timeout 90 $B/ttt_rnn_bench --check --device cuda 2>&1 | tail -12 | log || status=1
  for k in linear mlp; do
    ok_time 40 "ttt_rnn_bench $k" || break
    timeout 60 $B/ttt_rnn_bench --device cuda --kind $k --backbone transformer --T 2048,8192 --reps 3 2>&1 | log || status=1
  done
fi

echo "== 4. linear attention / Gated DeltaNet / Mamba 2 on CUDA (B 1, H 12, d 64, chunk 64) ==" | log
for dt in bf16 f32; do
  ok_time 40 "mixer_speed $dt" || break
  timeout 90 $B/mixer_speed --device cuda --dtype $dt --check --T 2048,8192 --heads 12 --dim 64 --batch 1 --chunk 64 --reps 5 \
    2>&1 | log || status=1
done
echo "total: $(($(date +%s) - t0)) s; status $status" | log
exit $status
