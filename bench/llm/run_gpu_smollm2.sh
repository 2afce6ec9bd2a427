#!/usr/bin/env bash
# SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to f32 at load) on the GPU machine, one call:
# build with CUDA, the tiny-fixture checks on the GPU (tests/test_llama --device cuda: logits
# vs transformers, cached decoding), the real model's logits on the GPU vs the CPU, then
# `ttt lm generate --device cuda` speed (256 tokens, greedy, --ignore-eos) and a --chat answer.
#
# The GGUF (94 MiB) is over the 64 MiB a call may carry (working tree included), so it
# travels in three calls, as parts made here with
#   scripts/get-smollm2.sh && split -b 32M models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf models/smollm2/part.
#   call 1: carry [models/smollm2/part.aa], command `true`     (the warm machine keeps ignored files)
#   call 2: carry [models/smollm2/part.ab], command `true`     (within 30 s of call 1)
#   call 3: carry [models/smollm2/part.ac, .debs], command `bash bench/llm/run_gpu_smollm2.sh`
# This script joins the parts and checks the checksum (scripts/get-smollm2.sh's).
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
D=models/smollm2
G=$D/SmolLM2-135M-Instruct.Q4_1.gguf
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ ! -f "$G" ] && [ -f "$D/part.aa" ]; then cat "$D"/part.* >"$G"; fi
echo "$SHA256  $G" | sha256sum -c || { echo "no intact $G (see the header of this script)"; exit 1; }
[ -f bench/gpu/jsonc_env.sh ] && source bench/gpu/jsonc_env.sh
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
W=/tmp/smolruns
mkdir -p $W
cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON >"$W/cmake.log" 2>&1 || { tail -30 "$W/cmake.log"; exit 1; }
cmake --build build/gpu -j "$(nproc)" --target ttt_cli llama_logits test_llama >"$W/build.log" 2>&1 ||
  { grep -iE "error" "$W/build.log" | head -30; exit 1; }
log() { tee -a "$OUT/smollm2_gpu.txt"; }
echo "== tiny fixtures on the GPU ==" | log
./build/gpu/test_llama --device cuda 2>&1 | log
echo "== SmolLM2 logits: cuda vs cpu ==" | log
P="<|im_start|>user
What is the capital of France?<|im_end|>
<|im_start|>assistant
"
./build/gpu/llama_logits "$G" --text "$P" --out $W/cpu.bin --device cpu 2>&1 | log
./build/gpu/llama_logits "$G" --text "$P" --compare $W/cpu.bin --device cuda 2>&1 | log
echo "== generate on cuda: 256 tokens, greedy ==" | log
for i in 1 2; do
  ./build/gpu/ttt lm generate --model "$G" --device cuda --prompt "The history of the city of Paris" --tokens 256 \
    --temperature 0 --ignore-eos 2>&1 >/dev/null | log
done
echo "== --chat on cuda ==" | log
./build/gpu/ttt lm generate --model "$G" --device cuda --chat "What is the capital of France?" --temperature 0 --tokens 64 2>&1 | log
echo "== the same generation on this machine's CPU ($(nproc) cores) ==" | log
./build/gpu/ttt lm generate --model "$G" --device cpu --prompt "The history of the city of Paris" --tokens 64 \
  --temperature 0 --ignore-eos 2>&1 >/dev/null | log
