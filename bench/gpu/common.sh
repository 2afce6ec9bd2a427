# Sourced by the GPU check scripts (bench/gpu/*.sh) for what each one needs first: $OUT made (default ./gpu-out),
# DEADLINE (seconds for the whole call; the caller sets DEADLINE_DEFAULT) with t0 and left() (seconds still left),
# json-c from the carried .debs, the GPU's name, cuDNN's environment (cudnn_env.sh), and build_gpu TARGET... (the
# Release CUDA build in build/gpu; on failure it prints the errors and returns non-zero).
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
DEADLINE=${DEADLINE:-${DEADLINE_DEFAULT:-560}}
t0=$(date +%s)
left() { echo $((DEADLINE - ($(date +%s) - t0))); }
source bench/gpu/jsonc_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# the libcudnn the default attention path (TTT_CUDNN=det) opens, the same for every script (probe in the file)
source bench/gpu/cudnn_env.sh >"$OUT/cudnn_env.txt" 2>&1
echo "cuDNN: TTT_CUDNN_LIB=${TTT_CUDNN_LIB:-(unset: the loader path)}"
build_gpu() {
  # a cache from a build without json-c would keep it out (pkg-config checks once)
  if pkg-config --exists json-c && ! grep -q "JSONC_FOUND:INTERNAL=1" build/gpu/CMakeCache.txt 2>/dev/null; then
    rm -f build/gpu/CMakeCache.txt
  fi
  cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DTTT_CUDA=ON >"$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; return 1; }
  cmake --build build/gpu -j "$(nproc)" --target "$@" >"$OUT/build.log" 2>&1 ||
    { if grep -qiE "error" "$OUT/build.log"; then grep -iE "error" "$OUT/build.log" | head -30; else tail -20 "$OUT/build.log"; fi; return 1; }
  echo "build: $(($(date +%s) - t0)) s"
}
