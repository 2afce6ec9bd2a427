#!/usr/bin/env bash
# The main job: build ttt (Release) and run the meta-learning demo on its
# embedded synthetic tasks. Extra arguments go to `ttt demo` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j "$(nproc)" --target ttt_cli
exec ./build/release/ttt demo "$@"
