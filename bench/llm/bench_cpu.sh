#!/usr/bin/env bash
# Decoding speed on this machine's CPU: ttt (weights dequantized to f32) against llama.cpp
# (llama-cpp-python: its own Q4_1 kernels) on the same GGUF, the same prompt, the same
# thread count, greedy, the same number of generated tokens. Each runs twice, alternating;
# the machine's load average is printed before each run (shared machines are noisy).
#   bench/llm/bench_cpu.sh [THREADS] [TOKENS] [PYTHON]
#   THREADS default 2, TOKENS default 128, PYTHON with llama-cpp-python (default /tmp/torchenv/bin/python)
# llama-cpp-python builds llama.cpp from source; on this machine a native build (AVX-512 + AMX)
# crashed in its first eval, so it was built without AMX:
#   CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF \
#     -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF" pip install llama-cpp-python==0.3.36
# (LLAMA_CPP_LIB_PATH can point the package at another build's libllama.so.)
set -uo pipefail
cd "$(dirname "$0")/../.."
TH=${1:-2}
N=${2:-128}
PY=${3:-/tmp/torchenv/bin/python}
G=models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
T=${TTT:-build/release/ttt}
[ -f "$G" ] || { echo "no $G: run scripts/get-smollm2.sh"; exit 1; }
[ -x "$T" ] || { echo "no $T (TTT=path/to/ttt)"; exit 1; }
P="The history of the city of Paris"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; threads $TH; $N tokens"
for round in 1 2; do
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  OMP_NUM_THREADS=$TH "$T" lm generate --model "$G" --device cpu --threads "$TH" --prompt "$P" --tokens "$N" \
    --temperature 0 --ignore-eos 2>&1 >/dev/null | sed -n 's/^prompt: \(.*\)/ttt        \1/p'
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  "$PY" - "$G" "$TH" "$N" "$P" <<'PY'
import sys, time
from llama_cpp import Llama
g, th, n, p = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
llm = Llama(model_path=g, n_threads=th, n_threads_batch=th, n_ctx=512, verbose=False)
toks = llm.tokenize(p.encode(), add_bos=False)
t0 = time.perf_counter()
made, t1 = 0, None
for tok in llm.generate(toks, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
    made += 1
    if made == 1:
        t1 = time.perf_counter()  # the prompt and the first token
    if made == n:
        break
t2 = time.perf_counter()
print(f"llama.cpp  {len(toks)} tokens + first token in {t1 - t0:.3f} s; generated {n - 1} more tokens in {t2 - t1:.3f} s "
      f"({(n - 1) / (t2 - t1):.1f} tokens/s)")
PY
done
