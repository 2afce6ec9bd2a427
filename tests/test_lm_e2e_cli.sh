#!/usr/bin/env bash
# TTT-E2E through the ttt lm commands on a tiny corpus (CPU, seconds): train
# second order with the eta ramp, stop + resume byte-identical to an
# uninterrupted run, first order differs, eval by position with --eta 1 and
# --eta 0, warm start from a plain model, generate with state files
# (continuing after --state equals reading the document and question in one
# go), needle, and bad flags refused with a message.
#   usage: tests/test_lm_e2e_cli.sh PATH/TO/ttt
set -u
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
T=${1:?usage: test_lm_e2e_cli.sh PATH/TO/ttt}
T="$(cd "$(dirname "$T")" && pwd)/$(basename "$T")"
dir=$(mktemp -d /tmp/ttt_e2e_cli_XXXXXX)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
fail=0
check() { if eval "$1"; then echo "ok: $2"; else echo "FAILED: $2"; fail=1; fi; }
settled() { sed 's/, "tokens_per_s.*//' "$1"; }

python3 - <<'PY' 2>/dev/null || for i in $(seq 900); do echo "line $i: the cat sat on the mat and the dog ran $((i % 7)) times."; done >corpus.txt
import random
random.seed(2)
words = "the cat sat on a mat while dogs ran past seven tall trees near old houses".split()
with open("corpus.txt", "w") as f:
    for i in range(900):
        f.write(" ".join(random.choice(words) for _ in range(12)) + ".\n")
PY
mkdir -p docs && split -l 300 corpus.txt docs/part_
"$T" tokenizer train --input corpus.txt --vocab-size 300 --out tok --quiet || { echo "FAILED: tokenizer train"; exit 1; }
check '"$T" data prepare --tokenizer tok --out train.bin --quiet docs >/dev/null' "data prepare"

M="--preset tiny-e2e --dim 32 --heads 2 --mlp-hidden 40 --depth 2 --window 24 --inner-chunk 16 --seq-len 64"
F="--data train.bin $M --batch 2 --steps 10 --save-every 4 --log-every 2 --lr 3e-3 --eta-warmup 5 --threads 1"
check '"$T" lm train $F --out A 2>A.log' "train TTT-E2E 10 steps (second order, eta ramp over 5 steps)"
check 'grep -q "TTT\|inner_chunk=16" A.log && grep -q "\"eta\": 0.46" A/metrics.jsonl && grep -q "\"eta\": 1," A/metrics.jsonl' \
  "metrics carry the inner learning rate's ramp (0.46 after step 2, 1 from step 5)"
check 'grep -q "chunk_first" A/metrics.jsonl' "metrics carry the first and last chunk losses"
check '"$T" lm train $F --out B --stop-at 6 2>/dev/null && "$T" lm train $F --out B --resume 2>/dev/null' "stop at 6, resume to 10"
check 'cmp -s A/model.safetensors B/model.safetensors && diff <(settled A/metrics.jsonl) <(settled B/metrics.jsonl)' \
  "stopped + resumed TTT-E2E run is byte-identical to the uninterrupted one"
check '"$T" lm train $F --keep-graphs --out KG 2>/dev/null && cmp -s A/model.safetensors KG/model.safetensors' \
  "--keep-graphs (no rematerialization) trains to the same weights, byte for byte"
check '"$T" lm train $F --first-order --out FO 2>/dev/null && ! cmp -s A/model.safetensors FO/model.safetensors' \
  "first order trains to other weights"
check '! "$T" lm train $F --first-order --out B --resume 2>res.err && grep -q "first_order" res.err' \
  "resuming with another inner-loop order is refused, naming the setting"

# eval: loss by position, with and without learning while reading
check '"$T" lm eval --ckpt A --data train.bin --context 128 --out e1.jsonl >e1.txt 2>/dev/null' "eval (eta 1)"
check '"$T" lm eval --ckpt A --data train.bin --context 128 --eta 0 --out e0.jsonl >e0.txt 2>/dev/null' "eval --eta 0"
check 'grep -q "TTT-E2E" e1.txt && grep -q "\"e2e\": 1" e1.jsonl' "eval says it is TTT-E2E"
check '[ "$(tail -1 e1.jsonl | sed "s/.*mean_loss\": \([0-9.]*\).*/\1/")" != "$(tail -1 e0.jsonl | sed "s/.*mean_loss\": \([0-9.]*\).*/\1/")" ]' \
  "learning while reading changes the loss"

# warm start: a plain SWA model becomes TTT-E2E, and starts as the same function (prime down projections zero)
P="--data train.bin --preset tiny-swa --dim 32 --heads 2 --mlp-hidden 40 --depth 2 --window 24 --seq-len 64 --batch 2 --threads 1"
check '"$T" lm train $P --steps 4 --out S 2>/dev/null' "train a plain SWA model"
check '"$T" lm train --data train.bin --init-from S --prime-blocks 1 --inner-chunk 16 --seq-len 64 --batch 2 --steps 2 --threads 1 --out W 2>W.log' \
  "warm start it as TTT-E2E"
check 'grep -q "warm start from S: .* 1 new prime down projections zeroed" W.log' "warm start copies the source and zeroes the new prime outputs"
check '"$T" lm train --data train.bin --init-from S --prime-blocks 1 --inner-chunk 16 --seq-len 64 --batch 2 --steps 1 --threads 1 --lr 0 --out W0 2>/dev/null && "$T" lm eval --ckpt W0 --data train.bin --context 64 --eta 0 --out w0.jsonl >/dev/null 2>&1 && "$T" lm eval --ckpt S --data train.bin --context 64 --out s.jsonl >/dev/null 2>&1 && [ "$(tail -1 w0.jsonl | sed "s/.*mean_loss\": \([0-9.]*\).*/\1/")" = "$(tail -1 s.jsonl | sed "s/.*mean_loss\": \([0-9.]*\).*/\1/")" ]' \
  "warm-started model with eta 0 and lr 0 scores exactly as its source"

# generate with state files: a document read once, asked later
DOC="$(head -c 600 corpus.txt)"
check '"$T" lm generate --ckpt A --tokenizer tok --prompt "$DOC" --save-state doc.state --tokens 0 --threads 1 >/dev/null 2>g0.err' \
  "read a document and save the state"
check '"$T" lm generate --ckpt A --tokenizer tok --state doc.state --prompt " the cat" --tokens 20 --temperature 0 --threads 1 >g1.txt 2>g1.err' \
  "continue from the state file"
check '"$T" lm generate --ckpt A --tokenizer tok --prompt "$DOC the cat" --tokens 20 --temperature 0 --threads 1 >g2.txt 2>/dev/null' \
  "the same text in one go"
check '[ "$(tail -c 60 g1.txt)" = "$(tail -c 60 g2.txt)" ] && grep -q "inner steps" g1.err' \
  "generation after a restore equals generation without the interruption"
check '! "$T" lm generate --ckpt FO --tokenizer tok --state doc.state --prompt " the" --tokens 2 --threads 1 >/dev/null 2>bad.err && grep -q "another model" bad.err' \
  "a state file of another model is refused"
head -c 1000 doc.state >trunc.state
check '! "$T" lm generate --ckpt A --tokenizer tok --state trunc.state --prompt " the" --tokens 2 --threads 1 >/dev/null 2>tr.err && grep -qi "trunc\|past\|short" tr.err' \
  "a truncated state file is refused"
check '! "$T" lm generate --ckpt S --tokenizer tok --save-state x.state --prompt " the" --tokens 2 --threads 1 >/dev/null 2>ns.err && grep -q "TTT-E2E" ns.err' \
  "state files are refused for a model that does not learn at test time"

# needle: every model kind reads the same haystacks
check '"$T" needle --ckpt A --ckpt S --label e2e --label swa --tokenizer tok --data train.bin --lengths 96,128 --depths 0,1 --trials 1 --candidates 3 --threads 1 --out n.jsonl >n.txt 2>/dev/null' \
  "needle over a TTT-E2E and an SWA model"
check '[ "$(wc -l <n.jsonl)" -eq 8 ] && grep -q "\"e2e\": 1" n.jsonl && grep -q "rank accuracy" n.txt' "needle: a row per model, length and depth"

# bad input: a message and exit code 2
bad() { # args: expected-text, flags...
  local want=$1; shift
  if "$T" "$@" >/dev/null 2>err.txt; then echo "FAILED: accepted: $*"; fail=1
  elif ! grep -q -- "$want" err.txt; then echo "FAILED: '$*': message lacks '$want': $(cat err.txt)"; fail=1
  else echo "ok: refused: $*"; fi
}
bad "multiple of the inner chunk" lm train --data train.bin $M --seq-len 60 --out X
bad "needs --prime-blocks" lm train --data train.bin --preset tiny --inner-chunk 16 --out X
bad "unknown preset" lm train --data train.bin --preset 125m-xyz --out X
bad "expected a number" lm train --data train.bin $M --eta abc --out X
bad "expected an integer" lm train --data train.bin $M --inner-chunk -3 --out X
bad "one file" lm generate --ckpt A --tokenizer tok --prompt x --state a --save-state a
bad "required" needle --ckpt A
check '[ ! -e X ]' "failed runs leave no output folder"

[ $fail -eq 0 ] && echo "all TTT-E2E CLI checks passed" || echo "some TTT-E2E CLI checks FAILED"
exit $fail
