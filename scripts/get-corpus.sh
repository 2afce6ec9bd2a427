#!/usr/bin/env bash
# Language-model corpora from a Debian package and the repository's data/, as token
# shards (docs/shards.md). Installs linux-source-6.1 if missing (about 139 MB),
# extracts its Documentation/ into OUT, then writes with the GPT-2 tokenizer:
#   OUT/longdocs.bin  held-out long documents: one document per folder (its own
#                     .rst files concatenated in sorted order, subfolders are
#                     documents of their own) under Documentation/{admin-guide,
#                     driver-api,filesystems,networking,virt}, kept if >= 32768
#                     tokens. Only 13 single .rst files reach 32K GPT-2 tokens,
#                     hence the folders.
#   OUT/train.bin     training text: every other Documentation file (.rst, .txt;
#                     pieces of at most 65536 tokens) and tinyshakespeare
# The two sets share no file. Takes about ten seconds after the download.
# The GPT-2 tokenizer and tinyshakespeare ship in data/ (see their README.md files).
# TOKENIZER=none trains a 16384-token BPE tokenizer on the training files into
# OUT/tokenizer and uses it instead.
# usage: scripts/get-corpus.sh [OUT=data/lm] [TOKENIZER=data/gpt2-tokenizer|none]
#   env: TTT=path/to/ttt (default: BUILD/ttt, brought up to date first),
#        BUILD=build folder (default build/release), SHAKESPEARE=path/to/input.txt
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-data/lm}
TOK=${2:-data/gpt2-tokenizer}
SHAKE=${SHAKESPEARE:-data/tinyshakespeare/input.txt}
BUILD=${BUILD:-build/release}
TAR=/usr/src/linux-source-6.1.tar.xz
# the files this needs besides the package, checked before the download
if [ ! -f "$SHAKE" ]; then
  echo "get-corpus: missing $SHAKE (tinyshakespeare ships in data/tinyshakespeare/input.txt; git checkout -- data/ restores it)" >&2
  exit 1
fi
if [ "$TOK" != none ]; then
  for f in vocab.json merges.txt; do
    if [ ! -f "$TOK/$f" ]; then
      echo "get-corpus: missing $TOK/$f (the GPT-2 tokenizer ships in data/gpt2-tokenizer; git checkout -- data/ restores it, or pass TOKENIZER=none to train one)" >&2
      exit 1
    fi
  done
fi
if [ ! -f "$TAR" ]; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get install -y -q linux-source-6.1
fi
if [ -n "${TTT:-}" ]; then
  T=$TTT
else # an old binary may predate `ttt data`
  [ -f "$BUILD/CMakeCache.txt" ] || cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD" -j "$(nproc)" --target ttt_cli >/dev/null
  T=$BUILD/ttt
fi
mkdir -p "$OUT"
D="$OUT/linux-source-6.1/Documentation"
[ -d "$D" ] || tar -xJf "$TAR" -C "$OUT" --wildcards 'linux-source-6.1/Documentation/*'
HELD="admin-guide driver-api filesystems networking virt"
# training inputs: links to every top-level entry of Documentation except the held-out folders
rm -rf "$OUT/train_src" && mkdir -p "$OUT/train_src"
for d in "$D"/*; do
  case " $HELD " in *" $(basename "$d") "*) ;; *) ln -sfn "$(cd "$(dirname "$d")" && pwd)/$(basename "$d")" "$OUT/train_src/";; esac
done
inputs=("$OUT/train_src" "$SHAKE")
if [ "$TOK" = none ]; then
  echo "get-corpus: training a 16384-token tokenizer on the training files into $OUT/tokenizer" >&2
  TOK="$OUT/tokenizer"
  find -L "${inputs[@]}" -type f \( -name '*.rst' -o -name '*.txt' \) | LC_ALL=C sort | xargs -d '\n' cat >"$OUT/tokenizer-text.txt"
  "$T" tokenizer train --input "$OUT/tokenizer-text.txt" --vocab-size 16384 --out "$TOK" --quiet
  rm -f "$OUT/tokenizer-text.txt"
fi
held_dirs=()
for h in $HELD; do held_dirs+=("$D/$h"); done
"$T" data prepare --tokenizer "$TOK" --out "$OUT/longdocs.bin" --concat-dirs --min-doc-tokens 32768 --ext .rst --quiet "${held_dirs[@]}"
"$T" data prepare --tokenizer "$TOK" --out "$OUT/train.bin" --ext .rst,.txt --split-tokens 65536 --quiet "${inputs[@]}"
"$T" data info "$OUT/longdocs.bin"
"$T" data info "$OUT/train.bin"
