#!/usr/bin/env bash
# Data-parallel training on the GPU machine, in one call (docs/data-parallel.md):
#   bash bench/dp/run_gpu_dp.sh          carry: .debs-mpi (Open MPI, bench/dp/fetch_mpi_debs.sh)
#                                        and .debs (json-c, bench/gpu/jsonc_env.sh)
# Builds with CUDA, MPI and NCCL (a system NCCL, .deps/nccl, or PyTorch's nvidia/nccl), then on
# a tiny LM compares the losses and checkpoint bytes of
#   - the plain one-process run (--batch 4 --grad-accum 2),
#   - 1 rank under mpirun (the same command),
#   - 2 ranks sharing one GPU (one micro-batch each; NCCL refuses two ranks on one GPU, so
#     --dp-transport auto falls back to MPI through host memory, and --dp-transport nccl
#     must fail with a message saying so),
#   - with 2 GPUs or more: 2 ranks on 2 GPUs over NCCL, and the same for TTT-E2E,
# then measures the all-reduce (1..256 MiB) of every transport available.
# Logs and JSON lines go to $OUT (default gpu-out); a summary to stdout.
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
source bench/gpu/jsonc_env.sh
source bench/dp/mpi_env.sh
command -v mpirun >/dev/null || { echo "no mpirun and no .debs-mpi to unpack (bench/dp/fetch_mpi_debs.sh; carry .debs-mpi)"; exit 1; }
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_rmaps_base_oversubscribe=1
MPI=(mpirun --allow-run-as-root --oversubscribe)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
NGPU=$(nvidia-smi -L | wc -l)
mpirun --version | head -1

# NCCL: headers and library under one root for cmake (-DNCCL_ROOT)
nccl_root=""
for d in "${NCCL_ROOT:-}" .deps/nccl /usr/local/cuda /usr \
         "$(python3 -c 'import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__))' 2>/dev/null)"; do
  [ -n "$d" ] && [ -f "$d/include/nccl.h" ] && ls "$d"/lib*/libnccl.so* >/dev/null 2>&1 && { nccl_root=$d; break; }
done
if [ -n "$nccl_root" ]; then # a root with lib/libnccl.so (wheels ship only libnccl.so.2)
  rm -rf /tmp/nccl-root && mkdir -p /tmp/nccl-root/lib
  ln -s "$(cd "$nccl_root" && pwd)/include" /tmp/nccl-root/include
  so=$(ls "$nccl_root"/lib*/libnccl.so.2* "$nccl_root"/lib*/x86_64-linux-gnu/libnccl.so.2* 2>/dev/null | head -1)
  ln -s "$(cd "$(dirname "$so")" && pwd)/$(basename "$so")" /tmp/nccl-root/lib/libnccl.so
  export LD_LIBRARY_PATH="$(dirname "$(readlink -f "$so")")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "NCCL: $nccl_root ($(basename "$(readlink -f "$so")"))"
else
  echo "NCCL: none found (the GPU runs use MPI through host memory)"
fi
cmake -S . -B build/gpu-dp -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON -DTTT_MPI=ON -DTTT_NCCL=AUTO \
  ${nccl_root:+-DNCCL_ROOT=/tmp/nccl-root} >"$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
grep -E "ttt: (data-parallel|NCCL)" "$OUT/cmake.log"
cmake --build build/gpu-dp -j "$(nproc)" --target ttt_cli dp_allreduce >"$OUT/build.log" 2>&1 \
  || { grep -iE "error" "$OUT/build.log" | head -30; exit 1; }
T=$(pwd)/build/gpu-dp/ttt
AR=$(pwd)/build/gpu-dp/dp_allreduce
status=0
check() { if eval "$1"; then echo "ok: $2"; else echo "FAILED: $2"; status=1; fi; }
losses() { sed 's/.*"loss": \([^,]*\),.*/\1/' "$1" | tr '\n' ' '; }

# a tiny corpus (the CPU tests' kind), tokenizer and shard
work=$(mktemp -d /tmp/ttt_dp_gpu_XXXXXX)
for i in $(seq 3000); do echo "line $i: the cat sat on the mat and the dog ran $((i % 7)) times past $((i % 13)) trees."; done >"$work/corpus.txt"
mkdir -p "$work/docs" && split -l 300 "$work/corpus.txt" "$work/docs/part_"
"$T" tokenizer train --input "$work/corpus.txt" --vocab-size 300 --out "$work/tok" --quiet
"$T" data prepare --tokenizer "$work/tok" --out "$work/train.bin" --quiet "$work/docs" >/dev/null
cd "$work"

F="--data train.bin --device cuda --preset tiny --seq-len 64 --batch 4 --steps 30 --log-every 1 --save-every 10 --lr 2e-3"
echo "== tiny LM on the GPU: plain, 1 rank, 2 ranks (global batch 8 in every run) =="
check '"$T" lm train $F --grad-accum 2 --out plain >"$OUT/plain.log" 2>&1' "plain one-process run"
check '"${MPI[@]}" -np 1 "$T" lm train $F --grad-accum 2 --out r1 >"$OUT/r1.log" 2>&1 && cmp -s plain/model.safetensors r1/model.safetensors' \
      "1 rank under mpirun: the plain run's bytes"
"${MPI[@]}" -np 2 "$T" lm train $F --out r2 >"$OUT/r2_one_gpu.log" 2>&1 || { echo "FAILED: 2 ranks"; status=1; }
grep -m1 "data-parallel:" "$OUT/r2_one_gpu.log"
echo "plain losses: $(losses plain/metrics.jsonl)" | cut -c1-200
echo "2-rank losses: $(losses r2/metrics.jsonl)" | cut -c1-200
check 'cmp -s plain/model.safetensors r2/model.safetensors' "2 ranks$([ "$NGPU" -lt 2 ] && echo " on one GPU"): the plain run's checkpoint bytes"
check '[ "$(losses plain/metrics.jsonl)" = "$(losses r2/metrics.jsonl)" ]' "2 ranks: the plain run's losses"
if [ "$NGPU" -lt 2 ]; then
  "${MPI[@]}" -np 2 "$T" lm train $F --dp-transport nccl --out r2n >"$OUT/r2_nccl_one_gpu.log" 2>&1
  echo "--dp-transport nccl with 2 ranks on one GPU (expected to be refused): exit $?"
  grep -m2 "ttt lm train" "$OUT/r2_nccl_one_gpu.log"
else
  check '"${MPI[@]}" -np 2 "$T" lm train $F --dp-transport nccl --out r2n >"$OUT/r2_nccl.log" 2>&1 && cmp -s plain/model.safetensors r2n/model.safetensors' \
        "2 ranks on 2 GPUs over NCCL: the plain run's bytes"
  grep -m1 "data-parallel:" "$OUT/r2_nccl.log"
  E="--data train.bin --device cuda --preset tiny-e2e --dim 64 --heads 4 --mlp-hidden 96 --depth 2 --window 32 --inner-chunk 32 --seq-len 128 --batch 2 --steps 6 --log-every 1"
  check '"$T" lm train $E --grad-accum 2 --out e1 >"$OUT/e2e_plain.log" 2>&1 && "${MPI[@]}" -np 2 "$T" lm train $E --out e2 >"$OUT/e2e_r2.log" 2>&1 && cmp -s e1/model.safetensors e2/model.safetensors' \
        "TTT-E2E, 2 ranks on 2 GPUs: the plain run's bytes"
  S="--data train.bin --device cuda --preset small --seq-len 256 --batch 8 --steps 20 --log-every 10 --compute bf16"
  "$T" lm train $S --grad-accum 2 --out s1 >"$OUT/small_plain.log" 2>&1
  "${MPI[@]}" -np 2 "$T" lm train $S --out s2 >"$OUT/small_r2.log" 2>&1
  echo "small preset, bf16, 8 x 256 tokens per micro-batch, 2 per step: plain vs 2 GPUs:"
  grep -h "^done" "$OUT/small_plain.log" "$OUT/small_r2.log"
fi

echo "== all-reduce (f32, ordered reduce-scatter + all-gather), algbw and busbw in GB/s =="
"${MPI[@]}" -np 2 "$AR" --device cpu --iters 5 >"$OUT/allreduce_cpu_mpi.jsonl" 2>&1 || status=1
"${MPI[@]}" -np 2 "$AR" --device cuda --transport mpi --iters 5 >"$OUT/allreduce_cuda_mpi_staged.jsonl" 2>&1 || status=1
[ "$NGPU" -ge 2 ] && { "${MPI[@]}" -np "$NGPU" "$AR" --device cuda --transport nccl --iters 20 >"$OUT/allreduce_cuda_nccl.jsonl" 2>&1 || status=1; }
for f in "$OUT"/allreduce_*.jsonl; do echo "-- $(basename "$f")"; cat "$f"; done
cd / && rm -rf "$work"
exit $status
