#!/usr/bin/env bash
# `ttt data prepare / info / verify` end to end on a few small files (CPU, about a
# second): folder walking and --ext, determinism, the end-of-text token, splitting
# and the length filters, --concat-dirs, empty files, folders where a file belongs,
# text that is not UTF-8, corrupt and truncated shards, exit codes. Also the one
# tokenizer flag, --tokenizer PATH, of `ttt tokenizer encode/decode` (with the old
# spellings as noted aliases) and, given SOURCE_DIR, the shipped GPT-2 files.
#   usage: tests/test_data_cli.sh PATH/TO/ttt [SOURCE_DIR]
set -u
T=${1:?usage: test_data_cli.sh PATH/TO/ttt [SOURCE_DIR]}
T="$(cd "$(dirname "$T")" && pwd)/$(basename "$T")"
SRC=${2:+$(cd "$2" && pwd)}
dir=$(mktemp -d /tmp/ttt_data_cli_XXXXXX)
trap 'rm -rf "$dir"' EXIT
cd "$dir" || exit 1
fail=0
check() { if eval "$1"; then echo "ok: $2"; else echo "FAILED: $2"; fail=1; fi; }
tokens_of() { sed -n 's/.* documents, \([0-9]*\) tokens.*/\1/p' "$1"; }

mkdir -p docs/a/p docs/b/deep
words="the cat sat on a mat while dogs ran past seven tall trees near old houses"
for i in $(seq 40); do echo "line $i: $words $((i % 7))."; done >docs/a/one.rst
for i in $(seq 25); do echo "more $i, $words."; done >docs/a/two.txt
for i in $(seq 10); do echo "deep $i $words"; done >docs/b/deep/three.rst
for i in $(seq 5); do echo "sub $i $words"; done >docs/a/p/four.rst # sorts between docs/a's files
echo "not taken" >docs/b/skip.md
cat docs/a/one.rst docs/a/two.txt >corpus.txt
"$T" tokenizer train --input corpus.txt --vocab-size 300 --out tok --quiet || { echo "FAILED: tokenizer train"; exit 1; }

check '"$T" data prepare --tokenizer tok --out s.bin --ext .rst,.txt --quiet docs >p1.txt && grep -q "wrote s.bin: 4 documents" p1.txt' "4 documents (.md skipped, subfolders walked)"
check '"$T" data prepare --tokenizer tok --out s2.bin --ext .rst,.txt --quiet docs >/dev/null && cmp -s s.bin s2.bin' "the same inputs give the same bytes"
check '"$T" data verify s.bin | grep -q "ok"' "verify"
check '"$T" data info s.bin >info.txt && grep -q "documents 4" info.txt && grep -q "2-byte tokens" info.txt && grep -q "median" info.txt' "info"
n_eot=$(tokens_of p1.txt)
check '"$T" data prepare --tokenizer tok --out n.bin --ext .rst,.txt --no-eot --quiet docs >p2.txt && [ "$(tokens_of p2.txt)" -eq $((n_eot - 4)) ]' "one end-of-text token a document (--no-eot: 4 fewer)"
check '"$T" data prepare --tokenizer tok --out x.bin --eot "<|nope|>" docs 2>err.txt; [ $? -eq 2 ] && grep -q "not in the vocabulary" err.txt' "--eot must be in the vocabulary"
check '"$T" data prepare --tokenizer tok --out sp.bin --ext .rst,.txt --split-tokens 64 --quiet docs >p3.txt && [ "$(tokens_of p3.txt)" -eq "$n_eot" ] && "$T" data info sp.bin | grep -q "max 64"' "--split-tokens cuts pieces of at most N (no token lost)"
check '"$T" data prepare --tokenizer tok --out c.bin --ext .rst,.txt --concat-dirs --quiet docs >p4.txt && grep -q "3 documents" p4.txt' "--concat-dirs: one document per folder (a subfolder between its files does not cut it)"
check '"$T" data prepare --tokenizer tok --out m.bin --ext .rst,.txt --split-tokens 64 --min-doc-tokens 64 --quiet docs >p5.txt && "$T" data info m.bin | grep -q "min 64, median 64, max 64"' "--min-doc-tokens drops short pieces"
check '"$T" data prepare --tokenizer tok --out l.bin --ext .rst --max-doc-tokens 1000 --quiet docs >p6.txt && grep -q "2 documents" p6.txt && grep -q "dropped 1 longer than 1000" p6.txt' "--max-doc-tokens drops long documents"
check '"$T" data prepare --tokenizer tok --out none.bin --min-doc-tokens 100000 --quiet docs 2>err.txt; [ $? -eq 1 ] && [ ! -e none.bin ] && [ ! -e none.bin.tmp ]' "nothing kept: exit 1, no file"
check '"$T" data prepare --tokenizer tok --out direct.bin docs/a/one.rst >/dev/null 2>prog.txt && grep -q "files" prog.txt' "a file named directly; progress on stderr"
# empty files: no document, no undefined behaviour (an empty file once passed NULL to memcpy)
mkdir -p empty mixed && : >empty/e.txt && : >mixed/a_empty.txt && cp docs/a/one.rst mixed/b.txt
check '"$T" data prepare --tokenizer tok --out e.bin --quiet empty >pe.txt 2>err.txt; [ $? -eq 1 ] && grep -q "no document to write: 1 empty" err.txt && ! grep -q "runtime error" err.txt && [ ! -e e.bin ]' "only an empty file: exit 1, says so, no file"
check '"$T" data prepare --tokenizer tok --out mx.bin --quiet mixed >pm.txt 2>err.txt && grep -q "1 documents" pm.txt && grep -q "skipped 1 empty" pm.txt && ! grep -q "runtime error" err.txt' "an empty file beside a real one is skipped and counted"
check '"$T" data prepare --tokenizer tok --out ce.bin --concat-dirs --quiet empty >/dev/null 2>err.txt; [ $? -eq 1 ] && grep -q "1 empty" err.txt' "--concat-dirs: a folder of empty files is no document"
# folders where a file belongs
mkdir -p adir emptydir
check '"$T" data prepare --tokenizer tok --out adir --quiet docs >/dev/null 2>err.txt; [ $? -eq 1 ] && grep -q "adir" err.txt && [ -d adir ] && [ ! -e adir.tmp ]' "--out names a folder: exit 1, the folder named and left alone"
check '"$T" data info adir 2>err.txt; [ $? -eq 1 ] && grep -q "adir" err.txt' "data info on a folder names it"
check '"$T" data verify adir 2>err.txt; [ $? -eq 1 ] && grep -q "adir" err.txt' "data verify on a folder names it"
check '"$T" data prepare --tokenizer tok --out y.bin emptydir 2>err.txt; [ $? -eq 1 ] && grep -q "no input files" err.txt' "an input folder with no files"
check '"$T" data prepare --tokenizer emptydir --out y.bin docs 2>err.txt; [ $? -eq 1 ] && grep -q "emptydir/vocab.json" err.txt' "a tokenizer folder without vocab.json names the file"
# text that is not UTF-8: byte-level BPE takes any bytes
printf 'caf\xe9 na\xefve \xff\xfe\x80 \xc3\x28 ok \xed\xa0\x80 end\n' >latin1.txt
check '"$T" data prepare --tokenizer tok --out u.bin --quiet latin1.txt >pu.txt 2>err.txt && grep -q "1 documents" pu.txt && [ "$(tokens_of pu.txt)" -gt 10 ] && "$T" data verify u.bin >/dev/null && ! grep -q "runtime error" err.txt' "non-UTF-8 text is tokenized"
check '"$T" tokenizer encode --tokenizer tok --input latin1.txt >u.ids && "$T" tokenizer decode --tokenizer tok --input u.ids >u.back && cmp -s latin1.txt u.back' "non-UTF-8 text decodes back to the same bytes"

# one tokenizer flag: --tokenizer PATH; --dir and --tokenizer-json still work, with a note
echo "the cat sat on a mat" >small.txt
"$T" tokenizer encode --vocab tok/vocab.json --merges tok/merges.txt --input small.txt >ids_files.txt 2>/dev/null
check '[ -s ids_files.txt ] && "$T" tokenizer encode --tokenizer tok --input small.txt >ids_flag.txt 2>err.txt && cmp -s ids_files.txt ids_flag.txt && [ ! -s err.txt ]' "tokenizer encode --tokenizer DIR, silently"
check '"$T" tokenizer encode --dir tok --input small.txt >ids_dir.txt 2>err.txt && cmp -s ids_files.txt ids_dir.txt && grep -q "deprecated; use --tokenizer tok" err.txt' "--dir DIR: same ids, a note names --tokenizer"
check '"$T" tokenizer encode --tokenizer tok --dir tok --input small.txt 2>err.txt; [ $? -eq 2 ] && grep -q "give one tokenizer" err.txt' "two tokenizers: usage error"
check '"$T" tokenizer encode --tokenizer nope --input small.txt 2>err.txt; [ $? -eq 1 ] && grep -q "nope" err.txt && grep -q "data/gpt2-tokenizer" err.txt' "a missing tokenizer is named, with where to get one"
check '"$T" tokenizer --help | grep -q -- "--tokenizer PATH"' "tokenizer help shows --tokenizer"
check '"$T" tokenizer encode --tokenizer tok </dev/null >e.ids 2>err.txt && [ "$(cat e.ids)" = "" ] && "$T" tokenizer decode --tokenizer tok <e.ids >e.back 2>>err.txt && [ ! -s e.back ] && ! grep -q "runtime error" err.txt' "empty text encodes to no ids and back"
if [ -n "$SRC" ]; then
  check 'echo "Hello world<|endoftext|>" | "$T" tokenizer encode --tokenizer "$SRC/data/gpt2-tokenizer" | grep -qx "15496 995 50256 198"' "the shipped GPT-2 files (data/gpt2-tokenizer) encode as GPT-2 does"
  check 'echo "Hello world<|endoftext|>" | "$T" tokenizer encode --tokenizer "$SRC/tests/fixtures/tokenizer/gpt2_tokenizer.json" | grep -qx "15496 995 50256 198"' "--tokenizer FILE.json: the same ids"
  check 'echo "Hello world<|endoftext|>" | "$T" tokenizer encode --tokenizer-json "$SRC/tests/fixtures/tokenizer/gpt2_tokenizer.json" 2>err.txt | grep -qx "15496 995 50256 198" && grep -q "deprecated" err.txt' "--tokenizer-json FILE: same ids, a note"
  check '"$T" data prepare --tokenizer "$SRC/data/gpt2-tokenizer" --out g.bin --quiet "$SRC/data/tinyshakespeare/input.txt" >pg.txt && grep -q "338026 tokens" pg.txt' "tinyshakespeare with the GPT-2 files: 338,025 tokens + end-of-text"
fi

# corrupt and truncated shards
cp s.bin bad.bin && printf '\x7f' | dd of=bad.bin bs=1 seek=$(($(stat -c %s s.bin) - 1)) conv=notrunc 2>/dev/null
check '"$T" data verify bad.bin 2>err.txt; [ $? -eq 1 ] && grep -q "bad.bin" err.txt' "a changed token fails verify"
head -c 100 s.bin >cut.bin
check '"$T" data info cut.bin 2>err.txt; [ $? -eq 1 ] && grep -q "cut.bin" err.txt && grep -q "truncated" err.txt' "a truncated shard is named"
check '"$T" data verify corpus.txt 2>err.txt; [ $? -eq 1 ] && grep -q "magic" err.txt' "not a shard"
# usage errors and unwritable output
check '"$T" data prepare --tokenizer tok docs 2>/dev/null; [ $? -eq 2 ]' "missing --out"
check '"$T" data prepare --tokenizer tok --out y.bin --bogus docs 2>/dev/null; [ $? -eq 2 ]' "unknown flag"
check '"$T" data prepare --tokenizer tok --out /nonexistent/y.bin docs 2>err.txt; [ $? -eq 1 ] && grep -q "cannot create" err.txt' "unwritable output fails before tokenizing"
check '"$T" data prepare --tokenizer missing --out y.bin docs 2>err.txt; [ $? -ne 0 ] && grep -q "missing" err.txt' "missing tokenizer is named"
check '"$T" data bogus 2>/dev/null; [ $? -eq 2 ]' "unknown subcommand"
check '"$T" data prepare --help | grep -q -- "--max-doc-tokens"' "help lists flags"
exit $fail
