#!/usr/bin/env bash
# `ttt adapt` end to end on the tiny Llama fixture (tests/fixtures/gguf/tiny_tied.gguf, CPU,
# a few seconds): the SVD cache is made once and then loaded, SVF and LoRA experts train by
# REINFORCE and are kept by validation, eval reads an expert, the three dispatch strategies
# run with their confusion matrix, and bad flags or files give a message and exit 2 or 1.
# The tiny model answers nothing right; SmolLM2's results are in docs/transformer2.md.
#   usage: tests/test_adapt_cli.sh PATH/TO/ttt SOURCE_DIR
set -u
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
T=${1:?usage: test_adapt_cli.sh PATH/TO/ttt SOURCE_DIR}
M=${2:?usage: test_adapt_cli.sh PATH/TO/ttt SOURCE_DIR}/tests/fixtures/gguf/tiny_tied.gguf
dir=$(mktemp -d /tmp/ttt_adapt_cli_XXXXXX)
trap 'rm -rf "$dir"' EXIT
fail=0
check() { if eval "$1"; then echo "ok: $2"; else echo "FAILED: $2"; fail=1; fi; }
A() { "$T" adapt "$@" --model "$M" --device cpu --svd-cache "$dir/svd.st"; }

A svd --matrices mlp >"$dir/svd.out" 2>"$dir/svd.err"
check '[ $? -eq 0 ] && grep -q "computed and cached" "$dir/svd.err" && [ -s "$dir/svd.st" ]' "svd: computed and cached"
check 'grep -q "an SVF expert has 192 parameters" "$dir/svd.out"' "svd: the SVF parameter count (2 blocks x 3 matrices x 32)"
A svd --matrices mlp >/dev/null 2>"$dir/svd2.err"
check 'grep -q "loaded from the cache" "$dir/svd2.err"' "svd: the second run loads the cache"

A train --task arith --out "$dir/arith.svf" --steps 3 --batch 4 --micro-batch 2 --val-n 4 --eval-every 1 \
  --max-new 6 --metrics "$dir/m.jsonl" >"$dir/t.out" 2>"$dir/t.err"
check '[ $? -eq 0 ] && [ -s "$dir/arith.svf" ] && grep -q "best validation accuracy" "$dir/t.out"' "train: an SVF expert"
check '[ "$(grep -c "\"reward\"" "$dir/m.jsonl")" -eq 3 ] && grep -q "\"val_acc\"" "$dir/m.jsonl"' "train: metrics per step"
A train --task arith --out "$dir/arith.svf2" --steps 3 --batch 4 --micro-batch 2 --val-n 4 --eval-every 1 \
  --max-new 6 >/dev/null 2>&1
check 'cmp -s "$dir/arith.svf" "$dir/arith.svf2"' "train: the same seed gives the same expert bytes"
A train --task facts-mc --method lora --rank 2 --out "$dir/facts.lora" --steps 2 --batch 2 --micro-batch 1 \
  --val-n 2 --kl 0.1 --max-new 4 >"$dir/l.out" 2>"$dir/l.err"
check '[ $? -eq 0 ] && grep -q "LoRA expert on facts-mc" "$dir/l.err"' "train: a LoRA expert with a KL term"
A train --task py-output --out "$dir/code.svf" --steps 1 --batch 2 --val-n 2 --max-new 4 >/dev/null 2>&1
A train --task classify --out "$dir/cls.svf" --steps 1 --batch 2 --val-n 2 --max-new 3 >/dev/null 2>&1
check '[ -s "$dir/code.svf" ] && [ -s "$dir/cls.svf" ]' "train: a code expert and a classification expert"

A eval --task arith --expert "$dir/arith.svf" --n 4 --max-new 6 >"$dir/e.out" 2>"$dir/e.err"
check '[ $? -eq 0 ] && grep -q "^arith test \[0, 4): accuracy" "$dir/e.out"' "eval with an expert"
A eval --task arith-money --n 3 --split val --show 1 >"$dir/e2.out" 2>/dev/null
check '[ $? -eq 0 ] && grep -q "^--- 0" "$dir/e2.out" && grep -q "base model" "$dir/e2.out"' "eval of the base model, --show"

E="$dir/arith.svf,$dir/code.svf"
A dispatch --strategy prompt --tasks arith-money,py-string --experts "$E" --n 3 --max-new 4 >"$dir/d1.out" 2>"$dir/d1.err"
check '[ $? -eq 0 ] && grep -q "dispatch confusion" "$dir/d1.out" && grep -q "pass 1 = " "$dir/d1.out"' "dispatch: prompt"
A dispatch --strategy classifier --classifier "$dir/cls.svf" --tasks arith-money --experts "$E" --n 2 --max-new 4 \
  >"$dir/d2.out" 2>/dev/null
check '[ $? -eq 0 ] && grep -q "^arith-money" "$dir/d2.out"' "dispatch: classification expert"
A dispatch --strategy cem --tasks facts-color --experts "$E" --n 2 --cem-pop 4 --cem-iters 2 --cem-shots 2 \
  --max-new 4 >"$dir/d3.out" 2>"$dir/d3.err"
check '[ $? -eq 0 ] && grep -q "alpha math" "$dir/d3.out" && grep -q "cem iteration 1" "$dir/d3.err"' "dispatch: CEM mixing"
A dispatch --strategy cem --cem-fitness logprob --tasks facts-color --experts "$E" --n 2 --cem-pop 4 --cem-iters 2 \
  --cem-shots 2 --max-new 4 >"$dir/d4.out" 2>"$dir/d4.err"
check '[ $? -eq 0 ] && grep -q "cem iteration 1: best -0\.[0-9]" "$dir/d4.err"' "dispatch: CEM with the log-prob fitness (accuracy 0 + 0.01 x a negative log-prob)"
A train --task arith --baseline --out "$dir/b.svf" --steps 1 --batch 2 --val-n 2 --max-new 4 >/dev/null 2>&1
check '[ $? -eq 0 ] && [ -s "$dir/b.svf" ]' "train with the mean-reward baseline"
A dispatch --strategy cem --per-matrix --tasks facts-color --experts "$E" --n 2 --cem-pop 3 --cem-iters 1 \
  --cem-shots 1 --max-new 2 >/dev/null 2>&1
check '[ $? -eq 0 ]' "dispatch: CEM with one coefficient per matrix"

usage() { "$T" adapt "$@" >/dev/null 2>"$dir/u.err"; [ $? -eq 2 ]; }
check 'usage train --model "$M" --out x && grep -q "needs --task" "$dir/u.err"' "train without --task"
check 'usage train --model "$M" --task arith-money --out x && grep -q "held-out" "$dir/u.err"' "train on a held-out family"
check 'usage eval --model "$M" --task nope && grep -q "unknown task family" "$dir/u.err"' "an unknown family"
check 'usage dispatch --model "$M" --tasks arith --experts a --strategy vote && grep -q "strategy" "$dir/u.err"' "a bad strategy"
check 'usage dispatch --model "$M" --tasks arith --experts a --strategy classifier && grep -q "needs --classifier" "$dir/u.err"' "classifier without --classifier"
check 'usage train --model "$M" --task arith --out x --method adapter && grep -q "svf or lora" "$dir/u.err"' "a bad method"
check 'usage frobnicate && grep -q "unknown subcommand" "$dir/u.err"' "an unknown subcommand"
check 'usage dispatch --model "$M" --tasks arith --experts a --strategy cem --cem-fitness loss && grep -q "accuracy or logprob" "$dir/u.err"' "a bad CEM fitness"
A eval --task arith --expert "$dir/missing.svf" --n 1 >/dev/null 2>"$dir/x.err"
check '[ $? -eq 1 ] && grep -q "missing.svf" "$dir/x.err"' "a missing expert: exit 1 naming it"
A eval --task arith --expert "$dir/svd.st" --n 1 >/dev/null 2>"$dir/x.err"
check '[ $? -eq 1 ] && grep -q "not an adapter" "$dir/x.err"' "a file that is not an expert"
"$T" adapt eval --model "$M" --device cpu --svd-cache "$dir/svd-all.st" --matrices all --task arith --expert "$dir/arith.svf" \
  --n 1 >/dev/null 2>"$dir/x.err"
check '[ $? -eq 1 ] && grep -q "adapts the .mlp. matrices" "$dir/x.err"' "an expert of other matrices"
exit $fail
