#!/usr/bin/env bash
# NCCL for the data-parallel GPU transport (docs/data-parallel.md), when the system has none:
# NVIDIA's PyPI wheel (nvidia-nccl-cu12 or -cu13, matching nvcc's CUDA major version) unpacked
# into .deps/nccl (git-ignored): include/nccl.h and lib/libnccl.so(.2). cmake finds it there
# (-DTTT_NCCL=AUTO|ON). The library is about 200 MB: too big to carry to a GPU machine; there,
# bench/dp/run_gpu_dp.sh looks for a system NCCL or PyTorch's nvidia/nccl instead.
#   usage: scripts/get-nccl.sh [cu12|cu13]   (default: from nvcc --version)
set -euo pipefail
cd "$(dirname "$0")/.."
flavour=${1:-}
if [ -z "$flavour" ]; then
  major=$(nvcc --version 2>/dev/null | sed -n 's/.*release \([0-9]*\)\..*/\1/p')
  [ -n "$major" ] || { echo "get-nccl.sh: no nvcc; name the CUDA flavour: scripts/get-nccl.sh cu12|cu13" >&2; exit 2; }
  flavour=cu$major
fi
dest=.deps/nccl
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "nvidia-nccl-$flavour"
wheel=$(ls "$tmp"/*.whl)
rm -rf "$dest" && mkdir -p "$dest"
python3 - "$wheel" "$dest" <<'PY'
import sys, zipfile, os, shutil
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        for sub in ("include", "lib"):
            key = "/nccl/%s/" % sub
            if key in name and not name.endswith("/"):
                out = os.path.join(dest, sub, name.split(key, 1)[1])
                break
        else:
            continue
        if True:
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(name) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
PY
[ -e "$dest/lib/libnccl.so" ] || ln -s libnccl.so.2 "$dest/lib/libnccl.so"
echo "NCCL from $(basename "$wheel") in $dest:"; ls -l "$dest/include" "$dest/lib"
