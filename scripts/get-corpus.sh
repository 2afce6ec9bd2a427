#!/usr/bin/env bash
# Language-model corpora from Debian packages and ../shared/data, as token
# shards (docs/shards.md). Installs linux-source-6.1 if missing (about 139 MB),
# extracts its Documentation/ into OUT, then writes with the GPT-2 tokenizer:
#   OUT/longdocs.bin  held-out long documents: one document per folder of
#                     Documentation/{filesystems,networking,admin-guide,driver-api}
#                     (the folder's .rst files concatenated), kept if >= 32768 tokens
#   OUT/train.bin     training text: every other Documentation folder's .rst/.txt
#                     files (pieces of at most 65536 tokens) and tinyshakespeare
# usage: scripts/get-corpus.sh [OUT=data/lm] [TOKENIZER=../shared/data/gpt2-tokenizer]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-data/lm}
TOK=${2:-../shared/data/gpt2-tokenizer}
SHAKE=${SHAKESPEARE:-../shared/data/tinyshakespeare/input.txt}
[ -f "$TOK/vocab.json" ] || { echo "get-corpus: no GPT-2 tokenizer at $TOK (vocab.json + merges.txt)" >&2; exit 1; }
TAR=/usr/src/linux-source-6.1.tar.xz
if [ ! -f "$TAR" ]; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get install -y -q linux-source-6.1
fi
[ -x build/release/ttt ] || { cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release >/dev/null && cmake --build build/release -j "$(nproc)" --target ttt_cli; }
T=build/release/ttt
mkdir -p "$OUT"
D="$OUT/linux-source-6.1/Documentation"
[ -d "$D" ] || tar -xJf "$TAR" -C "$OUT" --wildcards 'linux-source-6.1/Documentation/*'
HELD="filesystems networking admin-guide driver-api"
$T data prepare --tokenizer "$TOK" --out "$OUT/longdocs.bin" --concat-dirs --min-doc-tokens 32768 --ext .rst --quiet \
  $(for h in $HELD; do echo "$D/$h"; done)
rm -rf "$OUT/train_src" && mkdir -p "$OUT/train_src"
for d in "$D"/*; do
  case " $HELD " in *" $(basename "$d") "*) ;; *) ln -sfn "$(cd "$(dirname "$d")" && pwd)/$(basename "$d")" "$OUT/train_src/";; esac
done
inputs=("$OUT/train_src")
[ -f "$SHAKE" ] && inputs+=("$SHAKE")
$T data prepare --tokenizer "$TOK" --out "$OUT/train.bin" --ext .rst,.txt --split-tokens 65536 --quiet "${inputs[@]}"
$T data info "$OUT/longdocs.bin"
$T data info "$OUT/train.bin"
