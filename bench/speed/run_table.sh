#!/usr/bin/env bash
# The speed table of docs/benchmarks.md ("Speed against the peers"), in one device call:
# each row is ttt beside its peer on the same GPU in the same call.
#   lm       125M dense LM training, bf16, T = 1K (batch 8) and T = 8K (batch 1): ttt against
#            PyTorch eager and torch.compile (bench/lm/torch_lm.py), MFU against the bf16 matmul
#            ceiling measured here (torch.matmul 8192^3)
#   lmcudnn  the lm part's ttt runs (the default, det) again in every cuDNN mode (TTT_CUDNN_GRAPHS=1; =0 our kernels,
#            =1 forward and backward, =fwd its forward with our backward, =det its forward and deterministic backward; two runs of each of
#            the last two must give the same checkpoint bytes; opt-in: docs/cudnn.md); after lm, for the ratios
#            to torch.compile
#   profile  TTT_PROFILE=1 over 12 steps of the 1K run: where the step goes, by kernel
#   attn     causal attention, bf16, d = 64 and 128, 2K..128K, forward and forward + backward,
#            against SDPA flash; sliding window 8K per token (bench/gpu/run_attention.sh)
#   e2e      TTT-E2E meta-training step at 8K against the full-attention step (bench/lm/e2e_step), eager and
#            replayed as CUDA graphs (--graph), and e2e_step --check (the step's gradients against the CPU in f64)
#   e2ecudnn the e2e part's two steps again with TTT_CUDNN=fwd and =det (cuDNN's attention, bit-repeatable modes)
#   dbwd     attention double backward at 8K, bf16 and f32 (bench/gpu/run_double_backward.sh), then the
#            bf16 kernels against the path before them and the first-order fwd + bwd at 2K and 8K (BF16=1)
#   vit      the GPU MTTT-MLP ViT (pixels) against jitted JAX (bench/mttt/speed_vs_jax.sh; carry data/fashion-mnist)
# PARTS="lm profile attn e2e dbwd" (the default; add vit) picks them. Carry .debs (json-c) for dbwd.
# Shorter runs: EAGER=0 skips PyTorch eager (the goal's peer is torch.compile); HARNESS=0 skips the attention
# dev harness (its per-kernel timings; the engine-vs-SDPA table stays); DBWD2=0 skips the bf16 double backward's
# before/after comparison (the goal's rows stay).
# Logs and tables in $OUT (default ./gpu-out).
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
PARTS=${PARTS:-"lm profile attn e2e dbwd"}
W=/tmp/ttt-speed-table
mkdir -p $W
LOG="$OUT/speed_table.txt"
log() { tee -a "$LOG"; }
has() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
source bench/gpu/jsonc_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | log
# cuDNN's environment once, for every part: the default attention path (TTT_CUDNN=det) opens this libcudnn
source bench/gpu/cudnn_env.sh >"$W/cudnn_env.txt" 2>&1
grep -E "TTT_CUDNN_LIB|^torch" "$W/cudnn_env.txt" | log
t0=$(date +%s)
cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON >"$W/cmake.log" 2>&1 || { tail -30 "$W/cmake.log"; exit 1; }
cmake --build build/gpu -j "$(nproc)" --target ttt_cli test_attention_fused e2e_step attn_double_backward \
  >"$W/build.log" 2>&1 || { grep -iE "error" "$W/build.log" | head -30; exit 1; }
echo "build: $(($(date +%s) - t0)) s" | log
B=./build/gpu
status=0

if has lm || has lmcudnn || has profile; then
  [ -f $W/ts.bin ] || $B/ttt data prepare --tokenizer data/gpt2-tokenizer --out $W/ts.bin data/tinyshakespeare/ >$W/prep.log 2>&1 \
    || { cat $W/prep.log; exit 1; }
fi

if has lm; then
  peak=$(python3 -c "
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
  declare -A TPS
  for shape in "1024 8" "8192 1"; do
    set -- $shape
    seq=$1 batch=$2
    $B/ttt lm train --device cuda --data $W/ts.bin --preset 125m --seq-len $seq --batch $batch --steps 16 --log-every 4 \
      --save-every 1000000 --compute bf16 --timing --out $W/lm-$seq >$W/lm-$seq.log 2>&1 || { tail -3 $W/lm-$seq.log; status=1; }
    TPS[ttt-$seq]=$(grep -oE "[0-9]+ tok/s" $W/lm-$seq.log | tail -1 | grep -oE "[0-9]+")
    grep -E "^step 16|ms per step|graph|error" $W/lm-$seq.log | tail -4 | sed "s/^/ttt T=$seq: /" | log
    modes="eager: compile:--compile"
    [ "${EAGER:-1}" = 0 ] && modes="compile:--compile"
    for mode in $modes; do
      name=${mode%%:*} flags=${mode#*:}
      line=$(PYTHONPATH=bench/lm timeout 240 python3 bench/lm/torch_lm.py bench --preset 125m --seq $seq --batch $batch \
        --dtype bf16 $flags 2>>$W/torch_err.txt | tail -1)
      echo "torch $name T=$seq: $line" | log
      TPS[torch-$name-$seq]=$(echo "$line" | grep -oE '"tokens_per_s": [0-9.]+' | grep -oE '[0-9.]+$' | cut -d. -f1)
    done
  done
  tail -3 $W/torch_err.txt
  # model FLOPs per token as ttt lm train prints them (6 N + attention)
  echo "== 125M training, bf16, tokens/s (same call, same GPU); MFU = model TFLOP/s / matmul ceiling ==" | log
  for seq in 1024 8192; do
    fpt=$(grep -oE "[0-9.e+]+ FLOPs per token" $W/lm-$seq.log | head -1 | grep -oE "^[0-9.e+]+")
    for k in ttt-$seq torch-eager-$seq torch-compile-$seq; do
      v=${TPS[$k]:-}
      mfu=$( [ -n "$v" ] && [ -n "$fpt" ] && awk -v t="$v" -v f="$fpt" -v p="$peak" 'BEGIN{printf "%.1f TFLOP/s, MFU %.1f%%", t*f/1e12, 100*t*f/1e12/p}' || echo "-")
      printf "%-22s %10s tok/s  %s\n" "$k" "${v:-n/a}" "$mfu" | log
    done
    a=${TPS[ttt-$seq]:-} c=${TPS[torch-compile-$seq]:-} e=${TPS[torch-eager-$seq]:-}
    [ -n "$a" ] && [ -n "$c" ] && [ -n "$e" ] && awk -v a=$a -v c=$c -v e=$e -v s=$seq \
      'BEGIN{printf "T=%s: ttt / torch.compile %.2fx, ttt / eager %.2fx\n", s, a/c, a/e}' | log
  done
fi

if has lmcudnn; then
  # the deterministic backward keeps two T x T matrices a head (6 bytes an element: 4.8 GB at 8K, 12 heads)
  export TTT_CUDNN_WS_MAX=${TTT_CUDNN_WS_MAX:-16384}
  echo "== 125M training, bf16, with cuDNN's attention (TTT_CUDNN_GRAPHS=1, TTT_CUDNN_WS_MAX=$TTT_CUDNN_WS_MAX):" \
    "TTT_CUDNN=0 our kernels, =1 forward and backward (not bit-repeatable), =fwd its forward and our backward," \
    "=det (the default) its forward and its deterministic backward ==" | log
  for mode in 0 1 fwd det; do
    for shape in "1024 8" "8192 1"; do
      set -- $shape
      TTT_CUDNN=$mode TTT_CUDNN_GRAPHS=1 $B/ttt lm train --device cuda --data $W/ts.bin --preset 125m --seq-len $1 --batch $2 \
        --steps 16 --log-every 4 --save-every 1000000 --compute bf16 --timing --out $W/lmc-$mode-$1 >$W/lmc-$mode-$1.log 2>&1 || status=1
      grep -E "^step 16|ms per step|cudnn|cuDNN|error" $W/lmc-$mode-$1.log | tail -4 | sed "s/^/ttt TTT_CUDNN=$mode T=$1: /" | log
      v=$(grep -oE "[0-9]+ tok/s" $W/lmc-$mode-$1.log | tail -1 | grep -oE "[0-9]+")
      c=${TPS[torch-compile-$1]:-}
      [ -n "$v" ] && [ -n "$c" ] && awk -v a=$v -v c=$c -v s=$1 -v m=$mode \
        'BEGIN{printf "T=%s TTT_CUDNN=%s: %d tok/s, / torch.compile %.2fx\n", s, m, a, a/c}' | log
    done
  done
  # fwd and det must keep a run's bits: a second run of the T 1K case, checkpoints compared byte for byte
  for mode in fwd det; do
    TTT_CUDNN=$mode TTT_CUDNN_GRAPHS=1 $B/ttt lm train --device cuda --data $W/ts.bin --preset 125m --seq-len 1024 --batch 8 \
      --steps 16 --log-every 4 --save-every 1000000 --compute bf16 --out $W/lmc-$mode-1024-b >$W/lmc-$mode-1024-b.log 2>&1 || status=1
    if cmp -s $W/lmc-$mode-1024/model.safetensors $W/lmc-$mode-1024-b/model.safetensors; then
      echo "TTT_CUDNN=$mode: two runs give byte-identical checkpoints" | log
    else
      echo "TTT_CUDNN=$mode: two runs' checkpoints DIFFER (or a run failed)" | log
      status=1
    fi
  done
fi

if has profile; then
  echo "== TTT_PROFILE=1, 125M bf16, T=1024 x 8, 12 steps (kernel entries synchronize: totals are an upper bound) ==" | log
  TTT_PROFILE=1 $B/ttt lm train --device cuda --data $W/ts.bin --preset 125m --seq-len 1024 --batch 8 --steps 12 \
    --log-every 4 --save-every 1000000 --compute bf16 --cuda-graph off --out $W/lm-prof >$W/prof.log 2>&1 || status=1
  grep -vE "^step" $W/prof.log | head -70 | log
fi

if has attn; then
  echo "== attention (bench/gpu/run_attention.sh, bf16 only) ==" | log
  # the default path (cuDNN's det where it takes the call); test_attention_fused times our kernels unless told
  TTT_CUDNN=${TTT_CUDNN:-det} CHECKS=0 F32=0 HARNESS=${HARNESS:-1} OUT=$OUT/attn timeout 420 bash bench/gpu/run_attention.sh 2>&1 | tail -60 | log || status=1
fi

if has e2e; then
  echo "== TTT-E2E step vs full attention, 125M, bf16, T=8K ==" | log
  timeout 200 $B/e2e_step --preset 125m --device cuda --compute bf16 --seq 8192 --kinds fa,swa,e2e --reps 3 2>&1 | log || status=1
  timeout 150 $B/e2e_step --preset 125m --device cuda --compute bf16 --seq 8192 --kinds fa,e2e --reps 3 --graph 2>&1 |
    tail -2 | sed "s/^/[graph] /" | log || status=1
  timeout 60 $B/e2e_step --check --device cuda 2>&1 | log || status=1
fi

if has e2ecudnn; then # both steps with cuDNN's attention in the modes that keep a run's bits (docs/cudnn.md)
  for mode in fwd det; do
    echo "== TTT-E2E step vs full attention, 125M, bf16, T=8K, TTT_CUDNN=$mode ==" | log
    TTT_CUDNN=$mode TTT_CUDNN_WS_MAX=${TTT_CUDNN_WS_MAX:-16384} timeout 200 $B/e2e_step --preset 125m --device cuda \
      --compute bf16 --seq 8192 --kinds fa,e2e --reps 3 2>&1 | log || status=1
  done
fi

if has vit; then
  echo "== MTTT-MLP ViT, pixels, against jitted JAX (bench/mttt/speed_vs_jax.sh) ==" | log
  LAYERS=mttt-mlp timeout 240 bash bench/mttt/speed_vs_jax.sh 2>&1 | tail -20 | log || status=1
fi

if has dbwd; then
  echo "== attention double backward, T=8K (bench/gpu/run_double_backward.sh) ==" | log
  TS=8192 REPS=5 CHECKS=0 TTT_DTYPES="f32 bf16" OUT=$OUT/dbwd timeout 400 bash bench/gpu/run_double_backward.sh 2>&1 | tail -25 | log || status=1
  if [ "${DBWD2:-1}" = 1 ]; then
    echo "== bf16 double backward: kernels vs TTT_ATTN_BWD2_BF16=0 vs the first-order fwd + bwd, 2K and 8K ==" | log
    REPS=5 CHECKS=0 BENCH=0 BF16=1 MEMCHECK=0 OUT=$OUT/dbwd-bf16 timeout 400 bash bench/gpu/run_double_backward.sh 2>&1 | tail -40 | log || status=1
  fi
fi
echo "total: $(($(date +%s) - t0)) s" | log
exit $status
