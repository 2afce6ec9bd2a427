#!/usr/bin/env bash
# The linear-time mixers on a GPU, in one device call (docs/mixers.md):
#   1. build (CUDA on) ttt and mixer_speed
#   2. ttt gradcheck --device cuda on the mixer cores: orders 1 and 2 against finite
#      differences on the GPU, and GPU-vs-CPU parity in f64, f32 and bf16
#   3. mixer_speed --check on cuda (chunkwise == recurrent in f64, f32/bf16 vs f64), then the
#      timing table: forward and forward + backward at T = 2K and 8K, B = 1, H = 12, d = 64,
#      in f32 and bf16, against causal attention (ttt_attention's fused kernels)
#   3b. (part "fused") the chunk-parallel fused Gated DeltaNet core (src/backends/cuda/gdn_chunk.cu; on by
#      default for heads up to 64 wide; this part exports TTT_GDN_CUDA_FUSED=1, which forces it for d = 128 too): gradcheck of the core on the device with
#      the fused kernels on (its f32 GPU-vs-CPU parity runs them, forward and backward, the bf16 one the forward) and with
#      TTT_FUSED=0; then against the composed core in the same run (mixer_speed --fused both: a second
#      context made with TTT_FUSED=0; --check compares the f32 / bf16 output with f64), core and block,
#      f32 and bf16, T = 2K and 8K, d = 64, then d = 128. docs/mixers.md has the expected times
#      (not yet measured) and the FLOP / byte estimate to compare with. The variable stays exported, so
#      step 4 (when it runs in the same call) trains the gated-deltanet LM through these kernels too,
#      under CUDA graphs. Then the same for the fused SSD / linear-attention core
#      (src/backends/cuda/ssd_chunk.cu; off unless TTT_SSD_CUDA_FUSED=1, exported here too): gradcheck of
#      ssd(chunked) and linear_attention(chunked) on the device, mixer_speed --fused both for ssd,
#      linear_attn and their blocks (f32 and bf16, T 2K and 8K, d = 64), so step 4's linear-attention
#      and mamba2 LMs also run through them
#   4. the 125M LM with each mixer (--mixer attention | linear-attention | gated-deltanet | mamba2),
#      bf16 mixed precision, CUDA graphs on (the mixers must record), T = 2048, batch 4, 8 steps:
#      tokens/s and the loss (tinyshakespeare shards made here)
# Usage: bash bench/mixers/run_linear_gpu.sh        (logs and the csv in $OUT, default ./gpu-out)
# PARTS="check speed fused lm" (the default) picks steps 2, 3, 3b, 4; the build (build/gpu) is reused by a
# later call on the same machine, so the parts can be split over calls of 10 minutes.
# Carry .debs (json-c, see bench/gpu/jsonc_env.sh): step 4's `ttt data prepare` reads the GPT-2
# tokenizer with it; without it steps 1-3 still run and step 4 reports the failure.
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
LOG="$OUT/mixers_gpu.txt"
log() { tee -a "$LOG"; }
source bench/gpu/jsonc_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | log
t0=$(date +%s)
cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON >"$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
cmake --build build/gpu -j "$(nproc)" --target ttt_cli mixer_speed >"$OUT/build.log" 2>&1 \
  || { grep -iE "error" "$OUT/build.log" | head -30; exit 1; }
echo "build: $(($(date +%s) - t0)) s" | log
B=./build/gpu
status=0
PARTS=${PARTS:-"check speed fused lm"}
has() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
has check && for op in "linear_attention(chunked)" "gated_delta(chunked)" "gated_delta(recurrent)" "ssd(chunked)"; do
  $B/ttt gradcheck --device cuda --op "$op" --seeds 3 2>&1 | log || status=1
done
has speed && for dt in f32 bf16; do
  $B/mixer_speed --device cuda --dtype $dt --check --T ${TS:-2048,8192} --heads 12 --dim 64 --batch 1 --chunk 64 --reps 5 \
    2>&1 | log || status=1
done
if has fused; then
  export TTT_GDN_CUDA_FUSED=1 # forces the kernels for the d = 128 row too (by default they serve d <= 64 only)
  $B/ttt gradcheck --device cuda --op "gated_delta(chunked)" --seeds 3 2>&1 | sed 's/^/TTT_GDN_CUDA_FUSED=1 /' | log || status=1
  TTT_FUSED=0 $B/ttt gradcheck --device cuda --op "gated_delta(chunked)" --seeds 3 2>&1 | sed 's/^/TTT_FUSED=0 /' | log || status=1
  for dt in f32 bf16; do
    for impl in gated_delta gdn_block; do
      $B/mixer_speed --device cuda --dtype $dt --check --fused both --impl $impl --T ${TS:-2048,8192} --heads 12 \
        --dim 64 --batch 1 --chunk 64 --reps 5 2>&1 | log || status=1
    done
  done
  $B/mixer_speed --device cuda --dtype f32 --fused both --impl gated_delta --T 2048 --heads 12 --dim 128 --batch 1 \
    --chunk 64 --reps 5 2>&1 | log || status=1
  export TTT_SSD_CUDA_FUSED=1 # the SSD / linear-attention kernels: off by default until measured
  for op in "ssd(chunked)" "linear_attention(chunked)"; do
    $B/ttt gradcheck --device cuda --op "$op" --seeds 3 2>&1 | sed 's/^/TTT_SSD_CUDA_FUSED=1 /' | log || status=1
  done
  for dt in f32 bf16; do
    for impl in ssd linear_attn mamba2_block linattn_block; do
      $B/mixer_speed --device cuda --dtype $dt --check --fused both --impl $impl --T ${TS:-2048,8192} --heads 12 \
        --dim 64 --batch 1 --chunk 64 --reps 5 2>&1 | log || status=1
    done
  done
fi
if has lm; then
  $B/ttt data prepare --tokenizer data/gpt2-tokenizer --out "$OUT/ts.bin" data/tinyshakespeare/ >"$OUT/prep.log" 2>&1 \
    || { tail -3 "$OUT/prep.log" | log; status=1; }
fi
[ -f "$OUT/ts.bin" ] && for mx in attention linear-attention gated-deltanet mamba2; do
  timeout 100 $B/ttt lm train --device cuda --data "$OUT/ts.bin" --preset 125m --mixer $mx --seq-len 2048 --batch 4 --steps 8 \
    --log-every 4 --save-every 1000000 --compute bf16 --cuda-graph on --out "$OUT/lm-$mx" >"$OUT/lm-$mx.log" 2>&1 || status=1
  echo "lm $mx: $(grep -E "^step 8/|graph|error|Error" "$OUT/lm-$mx.log" | tr '\n' ' ')" | log
  rm -rf "$OUT/lm-$mx"
done
rm -f "$OUT/ts.bin"
grep "^csv," "$LOG" | sort -u > "$OUT/mixers_gpu.csv"
echo "status $status" | log
exit $status
