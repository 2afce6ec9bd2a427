#!/usr/bin/env bash
# `ttt lm generate --model` and `ttt chat` end to end on the tiny fixtures (tests/fixtures/gguf, CPU,
# about a second): a GGUF file and a Hugging Face folder holding the same weights give
# the same greedy text, --chat wraps the question in the chat template, and bad flags
# and files give a message and exit code 2 (usage) or 1 (runtime).
#   usage: tests/test_llama_cli.sh PATH/TO/ttt SOURCE_DIR
set -u
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
T=${1:?usage: test_llama_cli.sh PATH/TO/ttt SOURCE_DIR}
F=${2:?usage: test_llama_cli.sh PATH/TO/ttt SOURCE_DIR}/tests/fixtures/gguf
dir=$(mktemp -d /tmp/ttt_llama_cli_XXXXXX)
trap 'rm -rf "$dir"' EXIT
fail=0
check() { if eval "$1"; then echo "ok: $2"; else echo "FAILED: $2"; fail=1; fi; }

gen() { "$T" lm generate --device cpu --temperature 0 "$@"; }
gen --model "$F/tiny_untied.gguf" --prompt "First Citizen" --tokens 12 >"$dir/a" 2>"$dir/a.err"
check '[ $? -eq 0 ] && head -c 13 "$dir/a" | grep -q "First Citizen"' "generate from a GGUF file"
check 'grep -q "generated .* tokens/s" "$dir/a.err"' "prints the speed"
gen --model "$F/tiny_untied_hf" --prompt "First Citizen" --tokens 12 >"$dir/b" 2>"$dir/b.err"
check '[ $? -eq 0 ] && cmp -s "$dir/a" "$dir/b"' "the HF folder of the same weights gives the same greedy text"
gen --model "$F/tiny_tied.gguf" --chat "Hi there" --tokens 8 --show-ids >"$dir/c" 2>"$dir/c.err"
check '[ $? -eq 0 ] && grep -q "prompt ids: 1 " "$dir/c.err"' "--chat starts with <|im_start|> (id 1)"
"$T" lm generate --model "$F/tiny_tied.gguf" --chat "Hi there" --tokens 8 --temperature 0.9 --seed 7 >"$dir/d1" 2>/dev/null
"$T" lm generate --model "$F/tiny_tied.gguf" --chat "Hi there" --tokens 8 --temperature 0.9 --seed 7 >"$dir/d2" 2>/dev/null
check 'cmp -s "$dir/d1" "$dir/d2"' "sampling repeats with a seed"

printf 'Hi there\nAnd then?\n' | "$T" chat --model "$F/tiny_tied.gguf" --device cpu --temperature 0 --tokens 6 >"$dir/e" 2>"$dir/e.err"
check '[ $? -eq 0 ] && [ "$(wc -l <"$dir/e")" -eq 2 ]' "ttt chat: two turns, two answers"
"$T" chat --device cpu >/dev/null 2>"$dir/e.err"
check '[ $? -eq 2 ] && grep -q "needs --model" "$dir/e.err"' "ttt chat without --model"

usage() { "$T" lm generate "$@" >/dev/null 2>"$dir/u.err"; [ $? -eq 2 ]; }
check 'usage --model "$F/tiny_tied.gguf" --prompt a --chat b && grep -q "one of --prompt" "$dir/u.err"' "--prompt and --chat together"
check 'usage --model "$F/tiny_tied.gguf" --prompt a --tokenizer x && grep -q "own tokenizer" "$dir/u.err"' "--model with --tokenizer"
check 'usage --chat hi --ckpt x --tokenizer y && grep -q "go with --model" "$dir/u.err"' "--chat without --model"
"$T" lm generate --model "$dir/missing.gguf" --prompt a >/dev/null 2>"$dir/m.err"
check '[ $? -eq 1 ] && grep -q "cannot open" "$dir/m.err"' "a missing model: exit 1 with a message"
head -c 1000 "$F/tiny_tied.gguf" >"$dir/cut.gguf"
"$T" lm generate --model "$dir/cut.gguf" --prompt a >/dev/null 2>"$dir/t.err"
check '[ $? -eq 1 ] && grep -q "cut.gguf: .*(at byte [0-9]* of 1000)" "$dir/t.err"' "a truncated GGUF: exit 1 naming the problem"
exit $fail
