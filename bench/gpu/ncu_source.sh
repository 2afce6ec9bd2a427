#!/usr/bin/env bash
# Where in the code the bf16 attention kernels stall, by Nsight Compute's source counters (warp stall sampling per
# SASS instruction), in one device call: ttt's fwd and bwd_dkdv and bwd_dq (B 1, H 12, causal, T and D below, the last
# of 4 runs), then SDPA flash's forward and backward for the same shape. One CSV per kernel of the source page;
# bench/gpu/ncu_stalls.py sums them by opcode and lists the instructions with the most samples.
#   T=8192 D=64 bash bench/gpu/ncu_source.sh         logs in $OUT (default ./gpu-out)
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
T=${T:-8192} D=${D:-64}
t0=$(date +%s)
cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON >"$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
cmake --build build/gpu -j "$(nproc)" --target test_attention_fused >"$OUT/build.log" 2>&1 ||
  { grep -iE "error" "$OUT/build.log" | head -30; exit 1; }
echo "build: $(($(date +%s) - t0)) s"
# source WHO REGEX SKIP CMD...: the source page (SASS, CSV) of the first launch after SKIP matching ones
source_page() {
  local who=$1 re=$2 skip=$3
  shift 3
  timeout 150 ncu --kernel-name-base demangled --kernel-name "regex:$re" --launch-skip "$skip" --launch-count 1 \
    --section SourceCounters --section WarpStateStats --page source --print-source sass --csv "$@" \
    >"$OUT/src_$who.csv" 2>"$OUT/src_$who.err"
  echo "$who: ncu exit $?, $(wc -l <"$OUT/src_$who.csv") lines; $(grep -m1 -i error "$OUT/src_$who.err")"
}
source_page ttt_fwd 'attnbf::fwd<' 3 ./build/gpu/test_attention_fused --bench-one "$T" "$D"
source_page ttt_dkdv 'attnbf::bwd_dkdv<' 3 ./build/gpu/test_attention_fused --bench-one "$T" "$D"
source_page ttt_dq 'attnbf::bwd_dq<' 3 ./build/gpu/test_attention_fused --bench-one "$T" "$D"
source_page sdpa_fwd 'flash_fwd_kernel' 3 python3 bench/gpu/sdpa_one.py "$T" "$D"
source_page sdpa_bwd 'flash_bwd_dq_dk_dv' 3 python3 bench/gpu/sdpa_one.py "$T" "$D"
python3 bench/gpu/ncu_stalls.py "$OUT"/src_*.csv | tee "$OUT/stalls.txt"
tar czf "$OUT/src.tgz" -C "$OUT" $(cd "$OUT" && ls src_*.csv) && rm -f "$OUT"/src_*.csv "$OUT"/src_*.err
echo "total: $(($(date +%s) - t0)) s"
