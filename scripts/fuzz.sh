#!/usr/bin/env bash
# Run the fuzz targets (fuzz/*.c, docs/reliability.md) with libFuzzer.
#   scripts/fuzz.sh [--time SECONDS] [--long] [TARGET ...]
# Builds build/fuzz (clang, -DTTT_FUZZ=ON: ASan + UBSan + libFuzzer) if needed,
# then runs each target (default: all) one after the other for SECONDS (default
# 4) at nice 19, from a working corpus build/fuzz/corpus/TARGET seeded with
# fuzz/corpus/TARGET. Crashes are written to build/fuzz/artifacts/TARGET/; a
# crash makes the script fail (the short pass of scripts/test.sh). With --long,
# libFuzzer keeps going after a crash (-fork=1 -ignore_crashes=1 ...) so the
# whole time is spent and every distinct crash is kept; the log
# (build/fuzz/logs/TARGET.log) ends with the execution count.
# A crash, once fixed, goes to fuzz/regressions/TARGET/ (ctest replays it).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=4
long=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --time) secs="$2"; shift 2 ;;
    --long) long=1; shift ;;
    -h|--help) sed -n 2,13p "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
all=(safetensors checkpoint lm_config shards idx tokenizer_gpt2 tokenizer_json e2e_state)
[ -f include/ttt/gguf.h ] && all+=(gguf)  # the GGUF reader, once merged
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
command -v clang >/dev/null || { echo "fuzz.sh: clang is not installed (scripts/install-deps.sh installs it)" >&2; exit 2; }
dir=build/fuzz
if [ ! -f "$dir/CMakeCache.txt" ]; then
  CC=clang cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTTT_CUDA=OFF -DTTT_FUZZ=ON >/dev/null
fi
cmake --build "$dir" -j "$(nproc)" --target $(printf 'fuzz_%s ' "${targets[@]}") >/dev/null
mkdir -p "$dir/logs"
failed=0
for t in "${targets[@]}"; do
  corpus=$dir/corpus/$t art=$dir/artifacts/$t
  mkdir -p "$corpus" "$art"
  cp -n fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null || true
  before=$(find "$art" -type f | wc -l)
  opts=(-max_total_time="$secs" -timeout=20 -rss_limit_mb=3072 -malloc_limit_mb=2048 -artifact_prefix="$art/"
        -print_final_stats=1)
  [ $long = 1 ] && opts+=(-fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1)
  # TMPDIR: the targets' temporary files (one folder per process, removed at exit)
  set +e
  OMP_NUM_THREADS=1 ASAN_OPTIONS=detect_leaks=1 nice -n 19 "$dir/fuzz/fuzz_$t" "${opts[@]}" "$corpus" \
    >"$dir/logs/$t.log" 2>&1
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/logs/$t.log" | tail -1)
  [ -n "$execs" ] || execs=$(grep -Eo '^#[0-9]+' "$dir/logs/$t.log" | tail -1 | tr -d '#')
  crashes=$(( $(find "$art" -type f | wc -l) - before ))
  printf 'fuzz %-15s %4ss  rc %d  executions %s  corpus %s files  new crashes %s\n' "$t" "$secs" "$rc" "${execs:-?}" \
    "$(find "$corpus" -type f | wc -l)" "$crashes"
  if [ $rc -ne 0 ] || { [ $long = 0 ] && [ "$crashes" -gt 0 ]; }; then
    failed=1
    grep -E 'ERROR|SUMMARY|runtime error|==[0-9]+==' "$dir/logs/$t.log" | head -5 >&2 || true
  fi
done
exit $failed
