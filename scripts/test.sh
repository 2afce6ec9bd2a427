#!/usr/bin/env bash
# Build and run the whole test suite: a Release build, then an
# AddressSanitizer + UBSan (+ LeakSanitizer) build, then (with clang) a short pass of every
# fuzz target (scripts/fuzz.sh, a few seconds each). Installs what is missing.
# Needs nothing beside the repository (data files are in data/).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
jobs=$(nproc)
for kind in release sanitize; do
  dir=build/$kind
  if [ $kind = release ]; then
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release -DTTT_WERROR=ON >/dev/null
  else
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTTT_SANITIZE=ON -DTTT_WERROR=ON >/dev/null
  fi
  cmake --build "$dir" -j "$jobs"
  echo "== tests ($kind build) =="
  # one thread per test keeps the sanitizer runs fast and deterministic; the tests labelled
  # "slow" (the emulator's full kernel sweep) stay out: ctest --test-dir DIR -L slow runs them
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} ASAN_OPTIONS=detect_leaks=1 \
    ctest --test-dir "$dir" --output-on-failure -j "$jobs" -LE slow
done
# The fuzz targets for a few seconds each (their seeds and regression inputs were replayed by
# ctest above, in both builds). FUZZ_SECONDS=0 skips this.
if [ "${FUZZ_SECONDS:-3}" != 0 ] && command -v clang >/dev/null; then
  echo "== fuzz (libFuzzer, ${FUZZ_SECONDS:-3} s per target) =="
  ./scripts/fuzz.sh --time "${FUZZ_SECONDS:-3}"
fi
