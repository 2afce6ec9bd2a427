#!/usr/bin/env bash
# Transformer-squared on SmolLM2-135M-Instruct on the GPU machine (docs/transformer2.md):
# SVF experts and the LoRA baseline trained by REINFORCE on the three training families,
# a classification expert, their test accuracies, and two-pass dispatch on the held-out
# families with each strategy. Everything is written under $OUT (logs, metrics, results).
#
# The model (94 MiB) is over the 64 MiB a call may carry, so it travels in three parts
# (as for bench/llm/run_gpu_smollm2.sh):
#   scripts/get-smollm2.sh && split -b 32M models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf models/smollm2/part.
#   call 1: carry [models/smollm2/part.aa], `true`;  call 2: carry [models/smollm2/part.ab], `true`
#   call 3: carry [models/smollm2/part.ac, .debs], `PART=train bash bench/t2/run_gpu.sh`
#   call 4 (same warm machine): `PART=eval bash bench/t2/run_gpu.sh`
# PART=train: build, the GPU checks of the adapters (tests/test_adapter: cuSOLVER vs LAPACK),
#             the experts (kept in runs/t2 on the machine and copied to $OUT);
# PART=eval:  base / SVF / LoRA test accuracy per family, dispatch with prompt, classifier, CEM.
# STEPS, BATCH, N (test examples), VAL_N, DISPATCH_N, CEM_POP, CEM_ITERS, CEM_SHOTS scale it; the
# defaults fit two calls of under 10 minutes. The CPU version (small sizes, this machine):
#   DEVICE=cpu T=build/release/ttt STEPS=10 BATCH=8 VAL_N=16 N=50 DISPATCH_N=20 CEM_POP=8 CEM_ITERS=3 \
#   CEM_SHOTS=5 PART=all bash bench/t2/run_gpu.sh
set -uo pipefail
OUT=${OUT:-gpu-out}
PART=${PART:-train}
STEPS=${STEPS:-30}
BATCH=${BATCH:-16}
N=${N:-100}
VAL_N=${VAL_N:-64}
DISPATCH_N=${DISPATCH_N:-50}
CEM_POP=${CEM_POP:-32}
CEM_SHOTS=${CEM_SHOTS:-10}
DEVICE=${DEVICE:-cuda}
LORA_LR=${LORA_LR:-5e-4}   # LoRA at SVF's 2e-3 collapsed on the CPU (arith: validation 0.19 -> 0, log-prob -1 -> -4)
EXPERT_SECONDS=${EXPERT_SECONDS:-0}   # > 0: each expert's training stops before this (train --time-limit)
mkdir -p "$OUT" runs/t2
D=models/smollm2
G=$D/SmolLM2-135M-Instruct.Q4_1.gguf
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ ! -f "$G" ] && [ -f "$D/part.aa" ]; then cat "$D"/part.* >"$G"; fi
echo "$SHA256  $G" | sha256sum -c --quiet || { echo "no intact $G (see the header of this script)"; exit 1; }
[ -f bench/gpu/jsonc_env.sh ] && source bench/gpu/jsonc_env.sh
log() { tee -a "$OUT/t2_$PART.txt"; }
T=${T:-build/gpu/ttt}
if [ "$DEVICE" = cuda ] && { [ ! -x "$T" ] || [ "$PART" = train ]; }; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | log
  t0=$(date +%s)
  cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON >"$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
  cmake --build build/gpu -j "$(nproc)" --target ttt_cli test_adapter >"$OUT/build.log" 2>&1 ||
    { grep -iE "error" "$OUT/build.log" | head -30; exit 1; }
  echo "build: $(( $(date +%s) - t0 )) s" | log
fi
A() { "$T" adapt "$@" --model "$G" --device "$DEVICE"; }
if [ "$PART" = train ] || [ "$PART" = all ]; then
  if [ "$DEVICE" = cuda ]; then
    echo "== test_adapter on the GPU (cuSOLVER SVD vs LAPACK, SVF logits CUDA vs CPU) ==" | log
    ./build/gpu/test_adapter 2>&1 | tail -5 | log
  fi
  echo "== SVD of the MLP matrices ==" | log
  A svd 2>&1 | log
  for fam in arith py-output facts-mc; do
    for method in svf lora; do
      echo "== $method expert: $fam ($STEPS steps, batch $BATCH) ==" | log
      lr=2e-3; [ "$method" = lora ] && lr=$LORA_LR
      A train --task "$fam" --method "$method" --lr "$lr" --out "runs/t2/$fam.$method" --steps "$STEPS" --batch "$BATCH" \
        --micro-batch "$BATCH" --val-n "$VAL_N" --eval-every 5 --time-limit "$EXPERT_SECONDS" --metrics "$OUT/train_$fam.$method.jsonl" 2>&1 |
        grep -v "^step [0-9]*/[0-9]*: .*generating)$" | log
    done
  done
  echo "== classification expert ($STEPS steps) ==" | log
  A train --task classify --out runs/t2/classify.svf --steps "$STEPS" --batch "$BATCH" --micro-batch "$BATCH" \
    --val-n "$VAL_N" --eval-every 5 --max-new 8 --time-limit "$EXPERT_SECONDS" --metrics "$OUT/train_classify.svf.jsonl" 2>&1 |
    grep -v "^step [0-9]*/[0-9]*: .*generating)$" | log
  cp runs/t2/*.svf "$OUT/" 2>/dev/null
fi
if [ "$PART" = eval ] || [ "$PART" = all ]; then
  echo "== test accuracy, $N examples per family (greedy) ==" | log
  for fam in arith py-output facts-mc; do
    A eval --task "$fam" --n "$N" 2>/dev/null | log
    A eval --task "$fam" --n "$N" --expert "runs/t2/$fam.svf" 2>/dev/null | log
    A eval --task "$fam" --n "$N" --expert "runs/t2/$fam.lora" 2>/dev/null | log
  done
  for fam in arith-money py-string facts-color; do A eval --task "$fam" --n "$N" 2>/dev/null | log; done
  E=runs/t2/arith.svf,runs/t2/py-output.svf,runs/t2/facts-mc.svf
  H=arith-money,py-string,facts-color
  echo "== dispatch on the held-out families: prompt ==" | log
  A dispatch --strategy prompt --tasks "$H" --experts "$E" --n "$DISPATCH_N" 2>&1 | grep -v "^expert\|^models\|^SVD" | log
  echo "== dispatch: classification expert ==" | log
  A dispatch --strategy classifier --classifier runs/t2/classify.svf --tasks "$H" --experts "$E" --n "$DISPATCH_N" 2>&1 |
    grep -v "^expert\|^models\|^SVD" | log
  echo "== dispatch: CEM few-shot mixing (population 32, elite 20%, 10 shots) ==" | log
  A dispatch --strategy cem --tasks "$H" --experts "$E" --n "$DISPATCH_N" --cem-pop "$CEM_POP" --cem-shots "$CEM_SHOTS" --cem-iters "${CEM_ITERS:-6}" 2>&1 |
    grep -v "^expert\|^models\|^SVD" | log
  echo "== dispatch on the training families' test splits: prompt ==" | log
  A dispatch --strategy prompt --tasks arith,py-output,facts-mc --experts "$E" --n "$DISPATCH_N" 2>&1 | grep -v "^expert\|^models\|^SVD" | log
fi
