#!/usr/bin/env bash
# The GPU checks and timings that code in this tree still waits for, in priority order, in one device
# call that stays under its 10 minutes (DEADLINE seconds, default 570; a part that would start with less
# than its minimum left is skipped and said so). Each part can also run alone:
#   scan2   TTT-Linear's low-latency scan kernels (TTT_SCAN_V2=1, src/backends/cuda/ttt_scan2.cuh, d 64, b 16):
#           the layer against the CPU in f64 at their shape, gradcheck, the core against f64 in bf16 / f32 --tf32 /
#           f32, compute-sanitizer (memcheck, racecheck, synccheck) on a small case, then the core timed old
#           against new (bf16, f32 --tf32, f32) at T 2K, 8K, 32K
#   cudnn   bench/gpu/run_cudnn_attention.sh (CHECKS=1 BENCH=1 FUSED=0): the cuDNN path of bf16 attention
#           against our kernels and float64, then timed beside our kernels and SDPA (docs/cudnn.md)
#   ttt     the TTT kernels not yet run on a GPU: TTT-MLP's fused scan (ttt_mlp_scan.cu), the decode steps
#           (ttt_step.cu), the split TTT-Linear forward (TTT_SCAN_SPLIT=1): checks against the CPU in f64,
#           gradcheck, memcheck, then times against TTT_FUSED=0 / the one-kernel forward
#   cudnn_first  test_attention_cudnn with TTT_CUDNN_PICK=first (the heuristics' first backward engine)
#   lm      the 125M LM step, bf16, T 1K x 8: our attention kernels, then cuDNN's (TTT_CUDNN=1), then torch.compile
#   lmprof  where the 125M bf16 step goes: ttt's TTT_PROFILE=1 table beside torch.compile's profiler table
#   peer    bench/mixers/run_peer_gpu.sh PEERS=fla_ttt: ttt's TTT-Linear core (one-kernel and split forward)
#           against fla's chunk_ttt_linear / fused_chunk_ttt_linear at T 2K, 8K, 32K
#   gc      gradcheck on CUDA of cross_entropy(_rows) (f32 losses of bf16 logits) and both TTT scans
#   lmtab   the 125M LM at T 1K x 8 and 8K x 1: our attention, cuDNN's in the graphs, torch.compile
#   mixers  bench/mixers/run_mixers_gpu.sh (carry data/lm/train.bin, data/lm/longdocs.bin)
#   vit     the GPU MTTT-MLP ViT against JAX (bench/mttt/speed_vs_jax.sh), then its TTT_PROFILE=1 table
#   ttt_gc  gradcheck of TTT-MLP's CUDA scan alone (orders 1 and 2; the bf16 parity run skipped by design)
#   official  the TTT layers against the official PyTorch ones (run_peer_gpu.sh PEERS=official)
#   so2     the RMS norm's and SwiGLU's second-order kernels on CUDA: test_fused, gradcheck, memcheck
#   vsf32   attn_double_backward --vs-f32 (bf16 kernels, then TTT_ATTN_BWD2_BF16=0), and the full-attention step's matmul rows
#   e2eprof the TTT-E2E step's TTT_PROFILE=1 table (125M, bf16, 8K), then its time beside the full-attention step,
#           then with TTT_BWD_NODES=0 (norms, SwiGLU and the cross-entropy composed under create_graph, as before
#           2026-12-06's fifth session), then both steps as replayed CUDA graphs (e2e_step --graph)
#   e2eab   the TTT-E2E step, this tree against a baseline (this tree with the files under .ab/ put back at their
#           paths, e.g. git show main:src/models/lm_e2e.c > .ab/src/models/lm_e2e.c; carry .ab): both built side by
#           side, e2e_step --check on this tree, then the 8K bf16 step timed base, this, base, this, then this tree's
#           steps with TTT_CUDNN=1 (AB_EXTRA: more targets to build in this tree)
#   split   bf16 attention with split keys (attention.cu key_shares, not yet run on a GPU): test_attention_fused
#           (bf16 parity against f64 incl. chunk shapes), again --quick with TTT_ATTN_SPLIT=3 forced and under memcheck,
#           then --bench-chunks (TTT-E2E's chunk shapes) and the E2E step with TTT_ATTN_SPLIT=0 and without
#   mtttplan  the MTTT-MLP kernels' plans under smaller shared-memory caps (TTT_MTTT_SMEM_KB: weights in global
#           memory, shorter tiles, more blocks an SM): test_mttt_fused under each cap, then the ViT's images/s and
#           the kernels' TTT_PROFILE rows per cap (carry data/fashion-mnist)
#   mtttmma the MTTT-MLP kernels' f32 products on the tensor cores (split-bf16, mttt_step.cuh's TC kernels; not yet run
#           on a GPU) against the FMA tiles: test_mttt_fused with TTT_MTTT_MMA=2 (everywhere) and =0 (never; its tf32
#           context then checks the FMA tiles; unset, the path follows the context's tf32), memcheck / racecheck / synccheck of a gradcheck with =2, then the ViT's
#           images/s alternated =0, =2, =0, =2 and the kernels' TTT_PROFILE rows under each (carry data/fashion-mnist)
#   clip    ttt_clip_step's CUDA kernels (TTT-E2E's inner update; first run on an H100 2026-12-07): gradcheck on CUDA (orders 1
#           and 2, parity against the CPU), test_fused on a CUDA context, memcheck on one gradcheck seed
#   keep    bench/gpu/keep_graphs.sh: the TTT-E2E step with each chunk's graph kept (--keep-graphs) against the
#           rematerialized one, with e2e_step --check --keep-graphs
#   fwdvar  dev/cuda/attention_bf16.cu (nvcc, started in the background at the top) checks, then --bench: every
#           kernel configuration of dev/cuda/attention_bf16_variants.h timed (the forward's Q-reload / late-V options)
#   table   bench/speed/run_table.sh with PARTS=$TABLE_PARTS (default "e2e dbwd")
#   mttt    the MTTT-MLP step's CUDA kernels (src/backends/cuda/mttt_step.cu), not yet run on a GPU: gradcheck of
#           mttt_mlp_step / mttt_mlp_apply on CUDA, test_mttt_fused (its checks on CUDA, the CUDA kernels against
#           the CPU's, two runs bit for bit), memcheck, then the ViT against JAX with them and with TTT_FUSED=0
#           (before / after) and TTT_PROFILE=1's rows of the step. Carry data/fashion-mnist. About 150 s after (timeouts cap it at 330)
#           the build: PARTS=mttt bash bench/gpu/pending.sh
# Earlier parts (fused, scan, gdn: the run of 2026-12-06 in docs/results-mixers.md) stay available by name.
# Carry [".debs", ".whl", ".peer"] (see run_peer_gpu.sh for .whl and .peer). All logs come back as one
# archive, $OUT/logs.tgz (the device returns at most 8 files).
#   usage: bash bench/gpu/pending.sh            PARTS="ttt peer" bash bench/gpu/pending.sh
set -uo pipefail
export OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export T0=$(date +%s)
DEADLINE=${DEADLINE:-570}
PARTS=${PARTS:-"cudnn ttt peer"}
left() { echo $((DEADLINE - ($(date +%s) - T0))); }
# part NAME MIN MAX CMD...: CMD under a timeout of MAX s or what is left, skipped below MIN s
part() {
  local name=$1 min=$2 max=$3 l
  shift 3
  case " $PARTS " in *" $name "*) ;; *) return 0 ;; esac
  l=$(left)
  if [ "$l" -lt "$min" ]; then
    echo "== $name: skipped, $l s left (needs $min) =="
    return 0
  fi
  [ "$l" -gt "$max" ] && l=$max
  echo "== $name (up to $l s) =="
  timeout "$l" "$@" 2>&1 | tee "$OUT/part_$name.txt" | tail -${TAIL:-60}
  echo "== $name: exit ${PIPESTATUS[0]}, $(($(date +%s) - T0)) s so far =="
}
source bench/gpu/jsonc_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# fwdvar's harness is one translation unit of many kernels: it compiles while the other parts run
case " $PARTS " in *" fwdvar "*)
  rm -f /tmp/attention_bf16.rc
  (nvcc -O3 -arch=sm_90 -std=c++17 -I src/backends/cuda -I dev/cuda dev/cuda/attention_bf16.cu -o /tmp/attention_bf16 \
    >"$OUT/fwdvar_nvcc.log" 2>&1; echo $? >/tmp/attention_bf16.rc) & ;; esac
build() {
  cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON >"$OUT/pending_cmake.log" 2>&1 &&
    cmake --build build/gpu -j "$(nproc)" --target "$@" >"$OUT/pending_build.log" 2>&1 ||
    { grep -iE "error" "$OUT/pending_build.log" | head -20; return 1; }
}
fused_part() {
  build ttt_cli test_fused || return 1
  ./build/gpu/test_fused --no-lm 2>&1 | grep -E "CHECK failed|passed,|norm cuda"
  for f in 1 0; do
    TTT_FUSED=$f ./build/gpu/ttt gradcheck --device cuda --op layer_norm --seeds 3 2>&1 | sed "s/^/[TTT_FUSED=$f] /"
  done
}
ttt_part() {
  build ttt_cli ttt_rnn_bench mixer_speed || return 1
  local B=./build/gpu
  echo "-- CUDA vs CPU f64: both layers (the fused scans on CUDA), their gradients and token-by-token decode (the fused steps)"
  $B/ttt_rnn_bench --check --device cuda 2>&1
  TTT_SCAN_SPLIT=1 $B/ttt_rnn_bench --check --device cuda 2>&1 | sed "s/^/[TTT_SCAN_SPLIT=1] /"
  $B/ttt_rnn_bench --check --device cuda --dim 256 --heads 2 2>&1 | sed "s/^/[d 128] /"
  echo "-- gradcheck on CUDA (orders 1 and 2, f64 / f32 / bf16 parity)"
  $B/ttt gradcheck --device cuda --op ttt_mlp_scan --seeds 3 2>&1 | tail -5
  echo "-- TTT-MLP layer, D 768, 12 heads (d 64, F 256), b 16, B 1, f32: fused, then TTT_FUSED=0"
  for fused in 1 0; do
    TTT_FUSED=$fused timeout 100 $B/ttt_rnn_bench --device cuda --kind mlp --T 2048,8192 --reps 3 2>&1 | grep -v "^csv" |
      sed "s/^/[TTT_FUSED=$fused] /"
  done
  echo "-- decode one token at a time, D 768, 12 heads, B 1, f32: fused step, then TTT_FUSED=0"
  for kind in linear mlp; do
    for fused in 1 0; do
      TTT_FUSED=$fused timeout 60 $B/ttt_rnn_bench --device cuda --kind $kind --decode 300 2>&1 | sed "s/^/[TTT_FUSED=$fused] /"
    done
  done
  echo "-- TTT-Linear's core (B 1, H 12, d 64, b 16, f32): one-kernel forward, then the split forward"
  for split in 0 1; do
    TTT_SCAN_SPLIT=$split timeout 90 $B/mixer_speed --device cuda --dtype f32 --impl ttt_linear_core --T 2048,8192,32768 \
      --heads 12 --dim 64 --batch 1 --reps 5 2>&1 | grep "^csv,ttt" | sed "s/^/[TTT_SCAN_SPLIT=$split] /"
  done
  echo "-- the layer (transformer, D 768, 12 heads, T 2K, 8K): split forward"
  TTT_SCAN_SPLIT=1 timeout 60 $B/ttt_rnn_bench --device cuda --kind linear --T 2048,8192 --reps 5 2>&1 | grep -v "^csv" |
    sed "s/^/[TTT_SCAN_SPLIT=1] /"
  if command -v compute-sanitizer >/dev/null; then
    echo "-- memcheck: the MLP scan's gradcheck (one seed), the decode steps (d 128)"
    TTT_CUDA_POOL=0 timeout 60 compute-sanitizer --tool memcheck --error-exitcode 9 $B/ttt gradcheck --device cuda \
      --op ttt_mlp_scan --seeds 1 >"$OUT/memcheck_mlp_scan.txt" 2>&1 # (timeout 124: not finished)
    echo "mlp scan: exit $?; $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_mlp_scan.txt" | tail -1 | sed 's/^=* *//')"
    for kind in linear mlp; do
      TTT_CUDA_POOL=0 timeout 30 compute-sanitizer --tool memcheck --error-exitcode 9 $B/ttt_rnn_bench --device cuda \
        --kind $kind --decode 20 --dim 256 --heads 2 >"$OUT/memcheck_decode_$kind.txt" 2>&1
      echo "decode $kind: exit $?; $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_decode_$kind.txt" | tail -1 | sed 's/^=* *//')"
    done
  fi
}
# TTT_SCAN_V2's kernels need d 64 and b 16 and run where the scan's products go on the tensor cores (bf16 data,
# --tf32, or TTT_SCAN_MMA=2 for f32 data), so the checks below name that shape; the default shapes of
# ttt_rnn_bench --check (d 16) and of the gradcheck case (d 4) still run the old kernels (with the switch on, as
# a check that it leaves them alone).
scan2_part() {
  build ttt_cli ttt_rnn_bench mixer_speed || return 1
  local B=./build/gpu V="env TTT_SCAN_V2=1"
  echo "-- the layer at d 64, b 16 (D 256, 4 heads, T 55) against the CPU in f64: output, every gradient, decode"
  $V TTT_SCAN_MMA=2 timeout 40 $B/ttt_rnn_bench --check --device cuda --dim 256 --heads 4 --mini-batch 16 2>&1 | sed "s/^/[v2, f32 on the tensor cores] /"
  $V timeout 40 $B/ttt_rnn_bench --check --device cuda --dim 256 --heads 4 --mini-batch 16 2>&1 | sed "s/^/[v2 on, f32 data: old kernels] /"
  $V timeout 30 $B/ttt_rnn_bench --check --device cuda 2>&1 | sed "s/^/[v2 on, default shape] /"
  echo "-- gradcheck (d 4: the old kernels)"
  $V timeout 40 $B/ttt gradcheck --device cuda --op ttt_linear_scan --seeds 3 2>&1 | tail -5
  echo "-- the core against f64 on the device (out, dq, dk; d 16 and 64)"
  for dt in "bf16" "f32 --tf32" "f32"; do
    $V timeout 40 $B/mixer_speed --check --device cuda --dtype $dt --impl ttt_linear_core --T 256 --heads 2 --reps 1 2>&1 |
      grep -E "^check|FAIL" | sed "s/^/[v2, $dt] /"
  done
  if command -v compute-sanitizer >/dev/null; then
    echo "-- compute-sanitizer on the core, bf16, T 256, 2 heads (forward and backward, the v2 kernels)"
    for tool in memcheck racecheck synccheck; do
      $V TTT_CUDA_POOL=0 timeout 40 compute-sanitizer --tool $tool --error-exitcode 9 $B/mixer_speed --device cuda --dtype bf16 \
        --impl ttt_linear_core --T 256 --heads 2 --reps 1 >"$OUT/scan2_$tool.txt" 2>&1
      echo "$tool: exit $?; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/scan2_$tool.txt" | tail -1 | sed 's/^=* *//')"
    done
  fi
  echo "-- the core (B 1, H 12, d 64, b 16), old (TTT_SCAN_V2=0) against new (TTT_SCAN_V2=1); f32 without --tf32 keeps"
  echo "   the old kernels either way (f32 data), so its v2 row shows the device flag's cost"
  for dt in "bf16" "f32 --tf32" "f32"; do
    for v2 in 0 1; do
      TTT_SCAN_V2=$v2 timeout 60 $B/mixer_speed --device cuda --dtype $dt --impl ttt_linear_core --T 2048,8192,32768 \
        --heads 12 --dim 64 --batch 1 --reps 5 2>&1 | grep -E "^csv,ttt|rror" | sed "s/^/[TTT_SCAN_V2=$v2, $dt] /"
    done
  done
}
# cuDNN's backward again with the engine the heuristics list first (TTT_CUDNN_PICK=first: engine 6 on cuDNN
# 9.19, a T x T workspace) instead of the least-workspace one, after the delta fix
cudnn_first_part() {
  TTT_CUDNN_PICK=first TTT_CUDNN_VERBOSE=1 timeout 100 ./build/gpu/test_attention_cudnn 2>&1 | grep -E "FAIL|passed|plan for backward" | head -20
}
# the 125M LM step (bf16, T 1K x 8, 16 steps) with our attention kernels and with cuDNN's, then torch.compile
lm_part() {
  build ttt_cli || return 1
  local B=./build/gpu W=/tmp/ttt-lm
  mkdir -p $W
  $B/ttt data prepare --tokenizer data/gpt2-tokenizer --out $W/ts.bin data/tinyshakespeare/ >$W/prep.log 2>&1 || { cat $W/prep.log; return 1; }
  for c in 0 1 0 1; do
    TTT_CUDNN=$c timeout 60 $B/ttt lm train --device cuda --data $W/ts.bin --preset 125m --seq-len 1024 --batch 8 --steps 16 \
      --log-every 4 --save-every 1000000 --compute bf16 --timing --out $W/lm-$c-$RANDOM >$W/lm.log 2>&1
    echo "TTT_CUDNN=$c: $(grep -oE "[0-9]+ tok/s" $W/lm.log | tail -1) (last window); $(grep -E '^step 16' $W/lm.log | head -1 | cut -c1-80)"
    grep -E "ms per step" $W/lm.log | tail -1
  done
  PYTHONPATH=bench/lm timeout 150 python3 bench/lm/torch_lm.py bench --preset 125m --seq 1024 --batch 8 --dtype bf16 --compile 2>/dev/null | tail -1
}
# where the 125M bf16 step goes (T 1K x 8): ttt's TTT_PROFILE=1 table (every kernel entry synchronizes: each row is
# device time plus about one launch and sync) beside torch.compile's profiler table (device time per kernel)
lmprof_part() {
  build ttt_cli || return 1
  local B=./build/gpu W=/tmp/ttt-lm
  mkdir -p $W
  [ -f $W/ts.bin ] || $B/ttt data prepare --tokenizer data/gpt2-tokenizer --out $W/ts.bin data/tinyshakespeare/ >$W/prep.log 2>&1 ||
    { cat $W/prep.log; return 1; }
  for op in cross_entropy cross_entropy_rows; do
    timeout 60 $B/ttt gradcheck --device cuda --op $op --seeds 3 2>&1 | tail -2
  done
  for f in 1 0 1; do
    TTT_FUSED=$f timeout 60 $B/ttt lm train --device cuda --data $W/ts.bin --preset 125m --seq-len 1024 --batch 8 --steps 16 \
      --log-every 4 --save-every 1000000 --compute bf16 --timing --out $W/lm-f$f-$RANDOM >$W/lmf.log 2>&1
    echo "TTT_FUSED=$f: $(grep -oE "[0-9]+ tok/s" $W/lmf.log | tail -1) (last window); $(grep -E '^step 16' $W/lmf.log | cut -c1-60)"
    grep -E "ms per step" $W/lmf.log | tail -1
  done
  TTT_CUDNN=${TTT_CUDNN:-0} TTT_PROFILE=1 timeout 90 $B/ttt lm train --device cuda --data $W/ts.bin --preset 125m --seq-len 1024 \
    --batch 8 --steps 12 --log-every 4 --save-every 1000000 --compute bf16 --cuda-graph off --out $W/lm-prof-$RANDOM 2>&1 |
    grep -vE "^step" | head -90
  PYTHONPATH=bench/lm timeout 200 python3 bench/lm/torch_lm.py bench --preset 125m --seq 1024 --batch 8 --dtype bf16 --compile \
    --profile 4 2>&1 | grep -vE "Warning|warn" | tail -50
}
# the GPU MTTT-MLP ViT (pixels, D 64, depth 2, batch 64) against jitted JAX, then where its step goes
# (TTT_PROFILE=1). Carry data/fashion-mnist (a copy of /usr/share/datasets/fashion-mnist).
vit_part() {
  build ttt_cli || return 1
  LAYERS=mttt-mlp timeout 200 bash bench/mttt/speed_vs_jax.sh
  TTT_PROFILE=1 timeout 60 ./build/gpu/ttt vision train --device cuda --data data/fashion-mnist --layer mttt-mlp --inner-steps 1 \
    --tokens pixels --dim 64 --depth 2 --heads 2 --batch 64 --epochs 1 --train-limit 1280 --test-limit 64 --cuda-graph off \
    --out /tmp/vit-prof-$RANDOM 2>&1 | grep -vE "^(step|epoch)" | head -60
}
# the 125M LM step (bf16) at T 1K x 8 and 8K x 1: our attention kernels, cuDNN's inside the graphs
# (TTT_CUDNN=1 TTT_CUDNN_GRAPHS=1), then torch.compile at the same shape
lmtab_part() {
  build ttt_cli || return 1
  local B=./build/gpu W=/tmp/ttt-lm
  mkdir -p $W
  [ -f $W/ts.bin ] || $B/ttt data prepare --tokenizer data/gpt2-tokenizer --out $W/ts.bin data/tinyshakespeare/ >$W/prep.log 2>&1
  for shape in "1024 8" "8192 1"; do
    set -- $shape
    for c in 0 1 0; do
      TTT_CUDNN=$c TTT_CUDNN_GRAPHS=$c timeout 80 $B/ttt lm train --device cuda --data $W/ts.bin --preset 125m --seq-len $1 \
        --batch $2 --steps 16 --log-every 4 --save-every 1000000 --compute bf16 --timing --out $W/lm-$RANDOM >$W/lmt.log 2>&1
      echo "T $1 x $2, TTT_CUDNN=$c: $(grep -oE "[0-9]+ tok/s" $W/lmt.log | tail -1) (last window); $(grep -E '^step 16' $W/lmt.log | cut -c1-60)"
      grep -E "ms per step|error" $W/lmt.log | tail -1
    done
    PYTHONPATH=bench/lm timeout 150 python3 bench/lm/torch_lm.py bench --preset 125m --seq $1 --batch $2 --dtype bf16 --compile \
      2>/dev/null | tail -1
  done
}
gc_part() {
  build ttt_cli || return 1
  for op in matmul_k1 matmul cross_entropy rope embedding; do
    timeout 60 ./build/gpu/ttt gradcheck --device cuda --op $op --seeds 3 2>&1 | tail -1 | sed "s/^/$op: /"
  done
  cmake --build build/gpu -j "$(nproc)" --target test_op_registry >/dev/null 2>&1 &&
    timeout 120 ./build/gpu/test_op_registry 2>&1 | grep -iE "fail|passed," | tail -12
}
# the MTTT-MLP step's CUDA kernels (mttt_step.cu): checks, then the ViT before / after (see the header)
mttt_part() {
  export TTT_MTTT_CUDA=1
  build ttt_cli test_mttt_fused || return 1
  local B=./build/gpu
  echo "-- gradcheck on CUDA (order 1 through the backward kernels, order 2 composed; parity against the CPU)"
  for op in mttt_mlp_step mttt_mlp_apply; do
    timeout 30 $B/ttt gradcheck --device cuda --op $op --seeds 3 2>&1 | tail -4
  done
  echo "-- test_mttt_fused: its checks on a CUDA context, the CUDA kernels against the CPU's (f64 1e-11, f32 2e-4), bits"
  timeout 60 $B/test_mttt_fused >"$OUT/test_mttt_fused.txt" 2>&1
  echo "test_mttt_fused: exit $?"
  grep -E "CHECK failed|FAIL|cuda vs cpu|on cuda|passed," "$OUT/test_mttt_fused.txt" | head -40
  if command -v compute-sanitizer >/dev/null; then
    echo "-- memcheck: gradcheck of the step and the read-out, one seed (tiny shapes, f64 and f32)"
    for op in mttt_mlp_step mttt_mlp_apply; do
      TTT_CUDA_POOL=0 timeout 40 compute-sanitizer --tool memcheck --error-exitcode 9 $B/ttt gradcheck --device cuda \
        --op $op --seeds 1 >"$OUT/memcheck_$op.txt" 2>&1 # (timeout 124: not finished)
      echo "$op: exit $?; $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_$op.txt" | tail -1 | sed 's/^=* *//')"
    done
  fi
  echo "-- the ViT (pixels, D 64, depth 2, heads 2, batch 64) against JAX: the fused kernels, then TTT_FUSED=0"
  LAYERS=mttt-mlp timeout 120 bash bench/mttt/speed_vs_jax.sh
  TTT_FUSED=0 JAX=0 LAYERS=mttt-mlp timeout 45 bash bench/mttt/speed_vs_jax.sh 2>&1 | sed "s/^/[TTT_FUSED=0] /"
  echo "-- TTT_PROFILE=1: where the fused step goes (each entry synchronized)"
  TTT_PROFILE=1 timeout 30 $B/ttt vision train --device cuda --data data/fashion-mnist --layer mttt-mlp --inner-steps 1 \
    --tokens pixels --dim 64 --depth 2 --heads 2 --batch 64 --epochs 1 --train-limit 640 --test-limit 64 --cuda-graph off \
    --out /tmp/vit-mttt-prof-$RANDOM 2>&1 | grep -vE "^(step|epoch)" | head -30
}
# the checks left from 2026-12-06 (fourth session): the --vs-f32 harness with the bf16 double-backward kernels and
# with the composed fallback, then the prefix's 8192-row projections in the full-attention step's profile (are they
# slow there too?)
vsf32_part() {
  build attn_double_backward e2e_step || return 1
  timeout 60 ./build/gpu/attn_double_backward --device cuda --vs-f32 2>&1 | tail -12
  TTT_ATTN_BWD2_BF16=0 timeout 90 ./build/gpu/attn_double_backward --device cuda --vs-f32 2>&1 | tail -12 | sed "s/^/[composed] /"
  TTT_PROFILE=1 timeout 60 ./build/gpu/e2e_step --preset 125m --device cuda --compute bf16 --seq 8192 --kinds fa --reps 1 2>&1 |
    grep -E "matmul|total|entries" | head -24
}
# e2eab: see the list at the top
e2eab_part() {
  [ -d .ab ] || { echo "e2eab: no .ab/ folder (the baseline's files)"; return 1; }
  rm -rf /tmp/abbase && mkdir -p /tmp/abbase
  tar --exclude=./build --exclude=./.git --exclude=./data --exclude=./.peer --exclude=./.whl --exclude=./.ab --exclude="./$OUT" -cf - . | tar -xf - -C /tmp/abbase
  (cd .ab && find . -type f) | while read -r f; do cp ".ab/$f" "/tmp/abbase/$f"; echo "baseline: $f"; done
  local j=$(( $(nproc) / 2 ))
  (cmake -S /tmp/abbase -B /tmp/abbase/build -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON >"$OUT/ab_base_cmake.log" 2>&1 &&
    cmake --build /tmp/abbase/build -j $j --target e2e_step >"$OUT/ab_base_build.log" 2>&1) &
  local base_pid=$!
  cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON >"$OUT/pending_cmake.log" 2>&1 &&
    cmake --build build/gpu -j $j --target e2e_step ${AB_EXTRA:-} >"$OUT/pending_build.log" 2>&1 || { grep -iE error "$OUT/pending_build.log" | head; return 1; }
  wait $base_pid || { grep -iE error "$OUT/ab_base_build.log" | head; return 1; }
  echo "built: $(($(date +%s) - T0)) s"
  timeout 90 ./build/gpu/e2e_step --check --device cuda 2>&1 | tail -8
  for r in 1 2; do
    for b in /tmp/abbase/build ./build/gpu; do
      echo "-- $b"
      timeout 60 $b/e2e_step --preset 125m --device cuda --compute bf16 --seq 8192 --kinds fa,e2e --reps 3 2>&1 | tail -2
    done
  done
  echo "-- this tree, both steps with cuDNN's attention where it takes the shape (TTT_CUDNN=1)"
  TTT_CUDNN=1 timeout 90 ./build/gpu/e2e_step --preset 125m --device cuda --compute bf16 --seq 8192 --kinds fa,e2e --reps 3 2>&1 |
    tail -3
}
# split: see the list at the top
split_part() {
  build test_attention_fused e2e_step || return 1
  timeout 120 ./build/gpu/test_attention_fused 2>&1 | tail -4
  TTT_ATTN_SPLIT=3 timeout 60 ./build/gpu/test_attention_fused --quick 2>&1 | tail -2 | sed "s/^/[TTT_ATTN_SPLIT=3] /"
  if command -v compute-sanitizer >/dev/null; then
    TTT_ATTN_SPLIT=3 TTT_CUDA_POOL=0 timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 \
      ./build/gpu/test_attention_fused --quick >"$OUT/memcheck_split.txt" 2>&1
    echo "memcheck (split forced): exit $?; $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_split.txt" | tail -1 | sed 's/^=* *//')"
  fi
  for sp in 0 ""; do
    TTT_ATTN_SPLIT=$sp timeout 60 ./build/gpu/test_attention_fused --bench-chunks 2>&1 | sed "s/^/[TTT_ATTN_SPLIT=${sp:-auto}] /"
  done
  for sp in 0 "" 0 ""; do
    TTT_ATTN_SPLIT=$sp timeout 60 ./build/gpu/e2e_step --preset 125m --device cuda --compute bf16 --seq 8192 --kinds fa,e2e \
      --reps 3 2>&1 | tail -2 | sed "s/^/[TTT_ATTN_SPLIT=${sp:-auto}] /"
  done
}
# mtttplan: see the list at the top
mtttplan_part() {
  build ttt_cli test_mttt_fused || return 1
  local B=./build/gpu
  for kb in "" 110 50 30; do
    echo "-- TTT_MTTT_SMEM_KB=${kb:-default}"
    TTT_MTTT_SMEM_KB=$kb timeout 60 $B/test_mttt_fused >"$OUT/test_mttt_fused_$kb.txt" 2>&1
    echo "test_mttt_fused: exit $?; $(grep -E 'passed,' "$OUT/test_mttt_fused_$kb.txt" | tail -1)"
    TTT_MTTT_SMEM_KB=$kb timeout 40 $B/ttt vision train --device cuda --data data/fashion-mnist --layer mttt-mlp --inner-steps 1 \
      --tokens pixels --dim 64 --depth 2 --heads 2 --batch 64 --epochs 1 --train-limit 3200 --test-limit 64 \
      --out /tmp/vit-plan-$RANDOM 2>&1 | grep -E "^epoch" | cut -c1-120
    TTT_MTTT_SMEM_KB=$kb TTT_PROFILE=1 timeout 40 $B/ttt vision train --device cuda --data data/fashion-mnist --layer mttt-mlp \
      --inner-steps 1 --tokens pixels --dim 64 --depth 2 --heads 2 --batch 64 --epochs 1 --train-limit 640 --test-limit 64 \
      --cuda-graph off --out /tmp/vit-plan-$RANDOM 2>&1 | grep -E "mttt_mlp" | cut -c1-110
  done
}
# fwdvar: see the list at the top (nvcc started at the top)
fwdvar_part() {
  while [ ! -f /tmp/attention_bf16.rc ]; do sleep 2; done
  [ "$(cat /tmp/attention_bf16.rc)" = 0 ] || { tail -20 "$OUT/fwdvar_nvcc.log"; return 1; }
  /tmp/attention_bf16 --bench >"$OUT/attention_bf16.csv" 2>&1
  echo "attention_bf16 --bench: exit $?"
  grep -vE '^csv' "$OUT/attention_bf16.csv" | head -60
  grep -E 'fwd' "$OUT/attention_bf16.csv" | cut -d, -f2,6,7,9
}
# mtttmma: see the list at the top
mtttmma_part() {
  build ttt_cli test_mttt_fused || return 1
  local B=./build/gpu mma tool
  local VIT="vision train --device cuda --data data/fashion-mnist --layer mttt-mlp --inner-steps 1 --tokens pixels --dim 64
    --depth 2 --heads 2 --batch 64 --epochs 1 --test-limit 64"
  for mma in 2 0; do
    TTT_MTTT_MMA=$mma timeout 60 $B/test_mttt_fused >"$OUT/test_mttt_fused_mma$mma.txt" 2>&1
    echo "TTT_MTTT_MMA=$mma test_mttt_fused: exit $?"
    grep -E "CHECK failed|FAIL|cuda vs cpu f32|tf32|passed," "$OUT/test_mttt_fused_mma$mma.txt" | head -20 | sed "s/^/[$mma] /"
  done
  if command -v compute-sanitizer >/dev/null; then
    for tool in memcheck racecheck synccheck; do
      TTT_MTTT_MMA=2 TTT_CUDA_POOL=0 timeout 60 compute-sanitizer --tool $tool --error-exitcode 9 $B/ttt gradcheck \
        --device cuda --op mttt_mlp_step --seeds 1 >"$OUT/${tool}_mttt_mma.txt" 2>&1
      echo "$tool (TTT_MTTT_MMA=2, gradcheck mttt_mlp_step): exit $?; $(grep -E 'ERROR SUMMARY' "$OUT/${tool}_mttt_mma.txt" |
        tail -1 | sed 's/^=* *//')"
    done
  fi
  for mma in 0 2 0 2; do
    TTT_MTTT_MMA=$mma timeout 40 $B/ttt $VIT --train-limit 3200 --out /tmp/vit-mma-$RANDOM 2>&1 | grep -E "^epoch" |
      cut -c1-120 | sed "s/^/[TTT_MTTT_MMA=$mma] /"
  done
  for mma in 0 2; do
    TTT_MTTT_MMA=$mma TTT_PROFILE=1 timeout 40 $B/ttt $VIT --train-limit 640 --cuda-graph off --out /tmp/vit-mma-$RANDOM 2>&1 |
      grep -E "mttt_mlp" | cut -c1-110 | sed "s/^/[TTT_MTTT_MMA=$mma] /"
  done
}
# clip: see the list at the top
clip_part() {
  build ttt_cli test_fused || return 1
  for op in clip_step "clip_step(no clip)"; do
    timeout 60 ./build/gpu/ttt gradcheck --device cuda --op "$op" --seeds 3 2>&1 | tail -2
  done
  timeout 90 ./build/gpu/test_fused --no-lm 2>&1 | grep -E "CHECK failed|passed,|clip" | head -12
  if command -v compute-sanitizer >/dev/null; then
    TTT_CUDA_POOL=0 timeout 60 compute-sanitizer --tool memcheck --error-exitcode 9 ./build/gpu/ttt gradcheck --device cuda \
      --op clip_step --seeds 1 >"$OUT/memcheck_clip.txt" 2>&1
    echo "memcheck clip_step: exit $?; $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_clip.txt" | tail -1 | sed 's/^=* *//')"
  fi
}
# where the TTT-E2E meta-training step goes (125M, bf16, 8K): its TTT_PROFILE=1 table, then the step's time beside
# the full-attention step's (e2e_step, no profiling)
e2eprof_part() {
  cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON >"$OUT/pending_cmake.log" 2>&1 &&
    cmake --build build/gpu -j "$(nproc)" --target e2e_step >"$OUT/pending_build.log" 2>&1 || return 1
  TTT_PROFILE=1 timeout 120 ./build/gpu/e2e_step --preset 125m --device cuda --compute bf16 --seq 8192 --kinds e2e --reps 1 2>&1 |
    head -70
  timeout 120 ./build/gpu/e2e_step --preset 125m --device cuda --compute bf16 --seq 8192 --kinds fa,e2e --reps 3 2>&1
  TTT_BWD_NODES=0 timeout 100 ./build/gpu/e2e_step --preset 125m --device cuda --compute bf16 --seq 8192 --kinds e2e --reps 3 \
    2>&1 | tail -1 | sed "s/^/[TTT_BWD_NODES=0] /"
  echo "-- the same steps recorded once as CUDA graphs and replayed (no host launch work)"
  timeout 150 ./build/gpu/e2e_step --preset 125m --device cuda --compute bf16 --seq 8192 --kinds fa,e2e --reps 3 --graph 2>&1
}
# the recorded backward nodes of the RMS norm and SwiGLU and their second-order kernels (second_order.cuh) on CUDA:
# test_fused (orders 2 and 3 against the composed graph, f64; the fused first order in every dtype), gradcheck
# (f64, f32 and bf16 parity against the CPU), memcheck on one gradcheck seed
so2_part() {
  build ttt_cli test_fused || return 1
  timeout 60 ./build/gpu/test_fused --no-lm 2>&1 | grep -E "CHECK failed|passed,|orders 2 and 3"
  for op in rms_norm "rms_norm(no affine)" swiglu; do
    timeout 60 ./build/gpu/ttt gradcheck --device cuda --op "$op" --seeds 3 2>&1 | tail -2
  done
  if command -v compute-sanitizer >/dev/null; then
    for op in rms_norm swiglu; do
      TTT_CUDA_POOL=0 timeout 60 compute-sanitizer --tool memcheck --error-exitcode 9 ./build/gpu/ttt gradcheck --device cuda \
        --op $op --seeds 1 >"$OUT/memcheck_so2_$op.txt" 2>&1
      echo "memcheck $op: exit $?; $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_so2_$op.txt" | tail -1 | sed 's/^=* *//')"
    done
  fi
}
export -f fwdvar_part mtttmma_part clip_part mtttplan_part split_part e2eab_part so2_part vsf32_part e2eprof_part vit_part lmtab_part gc_part lmprof_part build fused_part ttt_part cudnn_first_part lm_part scan2_part mttt_part
part cudnn 150 300 env CHECKS=1 BENCH=1 FUSED=${CUDNN_FUSED:-0} bash bench/gpu/run_cudnn_attention.sh
part cudnn_first 20 100 bash -c cudnn_first_part
part lm 100 240 bash -c lm_part
part lmprof 100 300 bash -c lmprof_part
part ttt 100 180 bash -c ttt_part
part gc 30 90 bash -c gc_part
part mttt 60 200 bash -c mttt_part
part scan2 100 240 bash -c scan2_part
part lmtab 60 260 bash -c lmtab_part
part mixers 120 520 env DEADLINE=$(( $(left) - 15 )) bash bench/mixers/run_mixers_gpu.sh
part vit 60 200 bash -c vit_part
part ttt_gc 30 90 bash -c 'build ttt_cli && ./build/gpu/ttt gradcheck --device cuda --op ttt_mlp_scan --seeds 3 2>&1 | tail -6'
part official 60 200 env DEADLINE=195 PEERS=official CORES=" " CORE_DTYPES=" " bash bench/mixers/run_peer_gpu.sh
part so2 40 150 bash -c so2_part
part vsf32 60 200 bash -c vsf32_part
part e2eab 120 450 bash -c e2eab_part
part split 60 400 bash -c split_part
part keep 60 240 bash bench/gpu/keep_graphs.sh
part clip 40 150 bash -c clip_part
part mtttplan 60 300 bash -c mtttplan_part
part mtttmma 60 300 bash -c mtttmma_part
part fwdvar 60 330 bash -c fwdvar_part
part e2eprof 60 330 bash -c e2eprof_part
part table 100 330 env PARTS="${TABLE_PARTS:-e2e dbwd}" bash bench/speed/run_table.sh
part peer 60 120 env DEADLINE=115 PEERS=fla_ttt CORES=ttt_linear_core CORE_DTYPES="bf16 f32" bash bench/mixers/run_peer_gpu.sh
part fused 60 120 bash -c fused_part
part scan 120 240 bash bench/mixers/run_scan_gpu.sh
part gdn 90 180 env PARTS=fused bash bench/mixers/run_linear_gpu.sh
echo "total $(($(date +%s) - T0)) s"
# The device returns at most 8 files from $OUT: everything travels back as one archive.
(cd "$OUT" && tar czf /tmp/pending_logs.tgz --exclude=logs.tgz . && find . -mindepth 1 -delete && mv /tmp/pending_logs.tgz logs.tgz)
