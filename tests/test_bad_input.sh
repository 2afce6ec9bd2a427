#!/usr/bin/env bash
# Bad input everywhere (docs/reliability.md): every row of tests/bad_input.table runs `ttt ARGS`
# and must end with one of the row's exit codes and a message matching its pattern; then every
# flag that each command's --help lists is given absurd values (negative, zero, NaN, infinity,
# huge, not a number, empty) followed by an unknown flag, so nothing runs after parsing: exit 2
# and a message; and every flag that takes a value, given none: exit 2, "needs a value". Never a signal, a timeout or a
# sanitizer report (the suite runs this in its ASan + UBSan build too).
#   usage: tests/test_bad_input.sh PATH/TO/ttt tests/bad_input.table [table|sweep]   (default: both)
set -u
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
# the library handles a failed malloc (a message naming the size); ASan's default is to abort instead
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}allocator_may_return_null=1"
T=${1:?usage: test_bad_input.sh PATH/TO/ttt TABLE}
T="$(cd "$(dirname "$T")" && pwd)/$(basename "$T")"
TABLE="$(cd "$(dirname "${2:?table}")" && pwd)/$(basename "$2")"
dir=$(mktemp -d /tmp/ttt_bad_input_XXXXXX)
trap 'cd /; rm -rf "$dir"' EXIT
cd "$dir" || exit 1
fail=0 rows=0 sweeps=0
part=${3:-all}

# run ARGS (a string, eval'ed); sets rc, out (stdout + stderr); reports signals, timeouts and sanitizers
run() {
  eval "timeout -s KILL 120 \"\$T\" $1" </dev/null >run.out 2>&1
  rc=$?
  out=$(head -c 2000 run.out)
  if [ $rc -ge 124 ]; then echo "FAILED: ttt $1: killed by a signal or timed out (exit $rc): $(tail -c 600 run.out)"; fail=1; return 1; fi
  if grep -qE 'AddressSanitizer|LeakSanitizer|runtime error:|UndefinedBehaviorSanitizer' run.out; then
    echo "FAILED: ttt $1: sanitizer report:"; grep -E 'ERROR|runtime error|SUMMARY|#[0-9] ' run.out | head -12; fail=1; return 1
  fi
  return 0
}

if [ "$part" != sweep ]; then
# fixtures the rows name: a tokenizer, a shard, language-model runs (full attention, TTT-E2E),
# a state file, files that are not what they claim to be
for i in $(seq 300); do echo "line $i: the cat sat on the mat and the dog ran $((i % 7)) times."; done >corpus.txt
mkdir -p docs && split -l 30 corpus.txt docs/part_
{ "$T" tokenizer train --input corpus.txt --vocab-size 300 --out tok --quiet &&
  "$T" data prepare --tokenizer tok --out train.bin --quiet docs &&
  "$T" lm train --data train.bin --out ck --preset tiny --dim 16 --heads 2 --mlp-hidden 16 --seq-len 16 --batch 2 --steps 2 --threads 1 &&
  "$T" lm train --data train.bin --out e2e --preset tiny-e2e --dim 16 --heads 2 --mlp-hidden 16 --seq-len 16 --batch 1 \
       --window 8 --inner-chunk 4 --steps 2 --threads 1 &&
  "$T" lm generate --ckpt e2e --tokenizer tok --prompt "the cat" --tokens 2 --save-state e2e.state --threads 1; } >/dev/null 2>setup.err ||
  { echo "FAILED: fixtures: $(tail -3 setup.err)"; exit 1; }
head -c 3000 /dev/urandom >garbage.bin
: >empty.txt
printf 'not json' >bad.json
mkdir -p emptydir gdir
echo "0 1 999999 2" >ids_bad.txt
# a 200-byte checkpoint whose metadata claims a 13 G-parameter model (it must not be allocated)
python3 -c '
import json, struct
m = {"format": "ttt-lm", "step": "1", "model": "vocab=50000 dim=4096 depth=64 heads=32 mlp_hidden=11008 window=0 "
     "prime_blocks=0 prime_hidden=0 qk_norm=1 rope_theta=10000 norm_eps=1e-06"}
h = json.dumps({"__metadata__": m}).encode()
h += b" " * (-len(h) % 8)
open("huge.safetensors", "wb").write(struct.pack("<Q", len(h)) + h)'
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  head -c 100 /dev/urandom | gzip >gdir/$f.gz
done
echo "ok: fixtures"

# ---- the table ---------------------------------------------------------------------------------
while IFS= read -r line; do
  case "$line" in ''|'#'*) continue ;; esac
  codes=$(echo "${line%%::*}" | tr -d ' ')
  rest=${line#*::}
  pat=$(echo "${rest%%::*}" | sed 's/^ *//; s/ *$//')
  args=$(echo "${rest#*::}" | sed 's/^ *//')
  rows=$((rows + 1))
  t0=$(date +%s%N)
  run "$args" || continue
  [ -n "${BAD_INPUT_TIMES:-}" ] && echo "$((($(date +%s%N) - t0) / 1000000)) ms: $args" >>"$BAD_INPUT_TIMES"
  if ! echo ",$codes," | grep -q ",$rc,"; then
    echo "FAILED: ttt $args: exit $rc, wanted $codes: $(echo "$out" | tail -3)"; fail=1; continue
  fi
  if [ "$rc" != 0 ] && [ -z "$out" ]; then echo "FAILED: ttt $args: exit $rc without a message"; fail=1; continue; fi
  if [ "$pat" != "-" ] && ! echo "$out" | grep -qiE -- "$pat"; then
    echo "FAILED: ttt $args: exit $rc but no /$pat/ in: $(echo "$out" | tail -3)"; fail=1; continue
  fi
done <"$TABLE"
echo "table: $rows rows run"
fi

# ---- every flag of every command, absurd values ------------------------------------------------
[ "$part" = table ] && exit $fail
cmds=("lm train" "lm eval" "lm generate" "data prepare" "tokenizer train" "tokenizer encode" "tokenizer decode"
      "vision train" "vision eval" "serve" "needle" "demo" "gradcheck" "tasks show" "tasks check"
      "adapt train" "adapt eval" "adapt dispatch" "adapt svd")
# BAD_INPUT_FULL=1: every value below (about 2,900 runs, 10 minutes on 2 cores); by default three that
# cover the parsers' classes (negative, not a number, not numeric at all), about a third of that
if [ -n "${BAD_INPUT_FULL:-}" ]; then values=(-1 0 nan 1e999 99999999999999999999 x "''"); else values=(-1 nan x); fi
export TTT_NO_REEXEC=1 # one process per run: the passive-wait re-exec of main() doubles the process starts
for c in "${cmds[@]}"; do
  flags=$("$T" $c --help 2>&1 | grep -oE -- '--[a-z0-9][a-z0-9-]*' | grep -vx -- '--help' | sort -u)
  for f in $flags; do
    for v in "${values[@]}"; do
      sweeps=$((sweeps + 1))
      run "$c $f $v --zz-not-a-flag" || continue
      if [ $rc != 2 ] || [ -z "$out" ]; then
        echo "FAILED: ttt $c $f $v --zz-not-a-flag: exit $rc (wanted 2 and a message): $(echo "$out" | tail -2)"; fail=1
      fi
    done
    # a flag of this command that takes a value (it swallows the next argument), given none
    run "$c $f --zz-not-a-flag --zz-second" || continue
    echo "$out" | grep -q "unknown argument '--zz-second'" || continue
    sweeps=$((sweeps + 1))
    run "$c $f" || continue
    if [ $rc != 2 ] || ! echo "$out" | grep -q "needs a value"; then
      echo "FAILED: ttt $c $f (no value): exit $rc (wanted 2, needs a value): $(echo "$out" | tail -2)"; fail=1
    fi
  done
done
echo "sweep: $sweeps invocations (${#cmds[@]} commands, every flag, ${#values[@]} values, and no value)"
[ $fail = 0 ] && echo "ok: every bad input was refused with a message, no crash"
exit $fail
