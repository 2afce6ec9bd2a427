#!/usr/bin/env bash
# The language-model commands end to end on a tiny corpus (CPU, seconds):
# tokenizer -> shard -> train. Resume is bit-exact: a run stopped at step N and
# resumed to 2N ends with the same checkpoint bytes and metrics lines as a run
# of 2N steps; a run killed with SIGKILL resumes from its last checkpoint and
# also ends identical. Then eval and generate, and bad input: messages and exit
# codes (2 usage, 1 runtime).
#   usage: tests/test_lm_cli.sh PATH/TO/ttt
set -u
# one thread: ctest runs tests side by side on CI's two cores, and spinning
# OpenMP threads on shared cores are many times slower
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
T=${1:?usage: test_lm_cli.sh PATH/TO/ttt}
T="$(cd "$(dirname "$T")" && pwd)/$(basename "$T")"
dir=$(mktemp -d /tmp/ttt_lm_cli_XXXXXX)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
fail=0
check() { if eval "$1"; then echo "ok: $2"; else echo "FAILED: $2"; fail=1; fi; }
# metrics lines without their timings (everything from tokens_per_s on)
settled() { sed 's/, "tokens_per_s.*//' "$1"; }
# the step of a checkpoint, from eval's first line ("checkpoint X: step N, ...")
ckpt_step() { "$T" lm eval --ckpt "$1" --data train.bin --context 16 --max-docs 1 2>/dev/null | sed -n '1s/.*: step \([0-9]*\),.*/\1/p'; }

# a small corpus with structure to learn, ten files = ten documents
python3 - <<'PY' 2>/dev/null || for i in $(seq 600); do echo "line $i: the cat sat on the mat and the dog ran $((i % 7)) times."; done >corpus.txt
import random
random.seed(1)
words = "the cat sat on a mat while dogs ran past seven tall trees near old houses".split()
with open("corpus.txt", "w") as f:
    for i in range(600):
        f.write(" ".join(random.choice(words) for _ in range(12)) + ".\n")
PY
mkdir -p docs && split -l 60 corpus.txt docs/part_
"$T" tokenizer train --input corpus.txt --vocab-size 300 --out tok --quiet || { echo "FAILED: tokenizer train"; exit 1; }
check '"$T" data prepare --tokenizer tok --out train.bin --quiet docs >prep.txt' "data prepare"
check 'grep -q "10 documents" prep.txt' "one document per file"

# ---- training and exact resume
F="--data train.bin --val train.bin --eval-every 8 --preset tiny --dim 32 --heads 2 --mlp-hidden 48 --seq-len 32 --batch 2 --grad-accum 2 --steps 24 --save-every 5 --log-every 3 --lr 2e-3 --threads 1"
check '"$T" lm train $F --out A 2>A.log' "train 24 steps (grad accumulation, validation)"
check 'grep -q "val_loss" A/metrics.jsonl && [ "$(wc -l <A/metrics.jsonl)" -eq 10 ]' "metrics: a line every 3 steps and at each evaluation (8, 16)"
check '"$T" lm train $F --out A2 2>/dev/null && cmp -s A/model.safetensors A2/model.safetensors && diff <(settled A/metrics.jsonl) <(settled A2/metrics.jsonl)' \
  "the same command twice: identical checkpoint and metrics (timings aside)"
check '"$T" lm train $F --out B --stop-at 13 2>/dev/null && [ "$(ckpt_step B)" = 13 ]' "--stop-at 13 leaves a checkpoint at step 13"
check '"$T" lm train $F --out B --resume 2>B.log && grep -q "resumed B/model.safetensors at step 13" B.log' "resume it to step 24"
check 'cmp -s A/model.safetensors B/model.safetensors' "stopped + resumed checkpoint is byte-identical to the uninterrupted run's"
check 'diff <(settled A/metrics.jsonl) <(settled B/metrics.jsonl)' "and so are its metrics lines (timings aside)"
check '"$T" lm train $F --out B --resume 2>B2.log && grep -q "nothing to do" B2.log && cmp -s A/model.safetensors B/model.safetensors' \
  "resuming a finished run changes nothing"

# a real kill: SIGKILL once the first checkpoint exists, then resume
K="$F --steps 120 --save-every 7 --log-every 10"
check '"$T" lm train $K --out L 2>/dev/null' "train 120 steps (the uninterrupted run)"
"$T" lm train $K --out C 2>/dev/null &
pid=$!
for i in $(seq 500); do [ -f C/model.safetensors ] && break; sleep 0.01; done
kill -9 $pid 2>/dev/null
wait $pid 2>/dev/null
killed_at=$(ckpt_step C)
echo "killed with a checkpoint at step ${killed_at:-none}"
check '[ -n "$killed_at" ] && [ "$killed_at" -lt 120 ]' "the run was killed before its end"
check '"$T" lm train $K --out C --resume 2>C.log && grep -q "resumed" C.log && [ "$(ckpt_step C)" = 120 ]' "the killed run resumes and finishes"
check 'cmp -s L/model.safetensors C/model.safetensors' "killed + resumed checkpoint is byte-identical to the uninterrupted run's"
check 'diff <(settled L/metrics.jsonl) <(settled C/metrics.jsonl)' "and its metrics lines too (lines past the checkpoint were dropped)"

# SIGINT (or SIGTERM): the step in flight finishes, a checkpoint is written, exit 130 with how to resume
"$T" lm train $K --out S 2>S.log &
pid=$!
for i in $(seq 500); do [ -f S/model.safetensors ] && break; sleep 0.01; done
kill -INT $pid 2>/dev/null
wait $pid
code=$?
check '[ $code -eq 130 ] && grep -q "stopped at step .* --resume" S.log' "SIGINT: a checkpoint, exit 130 and how to resume (exit $code)"
check '"$T" lm train $K --out S --resume 2>/dev/null && cmp -s L/model.safetensors S/model.safetensors && diff <(settled L/metrics.jsonl) <(settled S/metrics.jsonl)' \
  "interrupted + resumed checkpoint and metrics are byte-identical to the uninterrupted run's"
check '"$T" lm train $F --out B --resume --lr 1e-3 2>err.txt; [ $? -eq 2 ] && grep -q "lr .*checkpoint 0.002, now 0.001" err.txt' \
  "resume with other flags is refused, naming the setting"
check '"$T" lm train $F --out A 2>err.txt; [ $? -eq 2 ] && grep -q "exists" err.txt' "an existing run is not overwritten without --resume"
check '"$T" lm train $F --out W --window 8 --prime-blocks 1 2>/dev/null' "train with a sliding window and a prime MLP"

# ---- eval
check '"$T" lm eval --ckpt W --data train.bin --max-docs 4 --out ev.jsonl >ev.txt' "eval by position (each document to its largest bucket edge)"
check 'grep -q "^\[512, 1024) *4 *2048 " ev.txt && grep -q perplexity ev.txt' "power-of-two buckets; 4 documents reach 1024"
check '[ "$(grep -c bucket_start ev.jsonl)" -eq 11 ] && tail -1 ev.jsonl | grep -q "\"summary\": true, \"documents\": 4, .*\"tokens\": 4096"' \
  "JSONL: 11 bucket rows, then the summary"
check '"$T" lm eval --ckpt W/model.safetensors --data train.bin --context 100 --buckets 10,50,200 --max-docs 3 >ev2.txt && grep -q "^\[50, 100) *3 *150 " ev2.txt' \
  "--context cuts the last bucket, --buckets and --max-docs"
check '"$T" lm eval --ckpt W --data train.bin --context 5000 2>err.txt; [ $? -eq 1 ] && grep -q "lower it" err.txt' "a context longer than every document"

# ---- generate (window 8: the ring buffer of 7 wraps many times in 40 tokens)
G='--ckpt W --tokenizer tok --prompt "the cat" --tokens 40'
check '"$T" lm generate '"$G"' --seed 3 >g1.txt 2>g.log && "$T" lm generate '"$G"' --seed 3 >g2.txt 2>/dev/null && cmp -s g1.txt g2.txt' \
  "generate is deterministic for a seed (ring-buffer cache)"
check 'grep -q "generated 40 tokens" g.log && grep -q "ring buffer" g.log && [ "$(head -c 7 g1.txt)" = "the cat" ]' "it prints the prompt, the text, then the speed"
check '"$T" lm generate '"$G"' --seed 4 --top-k 5 --top-p 0.9 >g3.txt 2>/dev/null && ! cmp -s g1.txt g3.txt' "another seed, top-k and top-p: other text"
check '"$T" lm generate --ckpt A --tokenizer tok --prompt "the cat" --tokens 10 --temperature 0 >/dev/null 2>&1' "greedy, full attention"

# ---- bad input: exit code and a message naming the problem
bad() { # expected-code pattern args...
  local want=$1 pat=$2
  shift 2
  "$T" "$@" >/dev/null 2>err.txt
  local got=$?
  if [ $got -eq "$want" ] && grep -q -- "$pat" err.txt; then echo "ok: $* -> $got"; else
    echo "FAILED: $* -> exit $got (want $want, message matching '$pat'): $(cat err.txt)"; fail=1; fi
}
bad 2 "unknown subcommand" lm bogus
bad 2 "needs --data" lm train --data train.bin
bad 2 "batch" lm train --data train.bin --out X --batch 0
bad 2 "heads" lm train --data train.bin --out X --heads 5
bad 2 "preset" lm train --data train.bin --out X --preset huge
bad 2 "warmup" lm train --data train.bin --out X --steps 10 --warmup 20
bad 2 "stop-at" lm train --data train.bin --out X --steps 10 --stop-at 10
bad 2 "device" lm train --data train.bin --out X --device tpu
bad 2 "needs a value" lm train --data train.bin --out X --lr
bad 2 "flag of ttt lm eval" lm train --data train.bin --out X --context 5
bad 2 "flag of ttt lm train" lm eval --ckpt A --data train.bin --steps 5
bad 2 "unknown argument" lm eval --ckpt A --data train.bin extra
bad 2 "buckets" lm eval --ckpt A --data train.bin --buckets 5,3
bad 2 "dtype" lm eval --ckpt A --data train.bin --dtype f16
bad 2 "empty" lm generate --ckpt A --tokenizer tok --prompt ""
bad 2 "top-p" lm generate --ckpt A --tokenizer tok --prompt hi --top-p 0
bad 1 "missing.bin" lm train --data missing.bin --out X
bad 1 "fewer than --seq-len" lm train --data train.bin --out X --seq-len 20000
bad 1 "X/model.safetensors" lm train --data train.bin --out X --resume
bad 1 "nope" lm eval --ckpt nope --data train.bin
bad 1 "train.bin" lm eval --ckpt train.bin --data train.bin
bad 1 "nope" lm eval --ckpt A --data nope
bad 1 "cannot write nodir/ev.jsonl" lm eval --ckpt A --data train.bin --out nodir/ev.jsonl
bad 2 "tokenizer" lm generate --ckpt A --tokenizer nope --prompt hi

# ---- every flag is documented in its subcommand's --help
help_has() { # sub flags...
  local sub=$1
  shift
  "$T" lm "$sub" --help >help.txt || { echo "FAILED: lm $sub --help"; fail=1; return; }
  for f in "$@"; do grep -q -- "$f " help.txt || { echo "FAILED: lm $sub --help lacks $f"; fail=1; }; done
}
help_has train --data --val --out --resume --stop-at --save-every --log-every --eval-every --eval-batches --preset --dim \
  --depth --heads --mlp-hidden --window --prime-blocks --prime-hidden --rope-theta --seq-len --batch --grad-accum --steps \
  --lr --min-lr --warmup --weight-decay --beta2 --clip --seed --dtype --peak-tflops --peak-tflops-f32 --device --threads
# ---- the other sequence mixers: train a few steps, eval (the mixer comes from the checkpoint), generate
M="--data train.bin --preset tiny --dim 32 --heads 2 --mlp-hidden 48 --seq-len 32 --batch 2 --steps 4 --save-every 4 --log-every 2 --lr 2e-3 --threads 1"
for mx in "ttt-linear" "ttt-mlp" "ttt-linear --ttt-backbone mamba" "ttt-kvb --window 8" "linear-attention" "gated-deltanet" "mamba2"; do
  n=$(echo "$mx" | tr ' ' '_')
  check '"$T" lm train $M --mixer $mx --out "mx_$n" 2>"mx_$n.log" && grep -q "mixer=${mx%% *}" "mx_$n.log"' "train 4 steps, --mixer $mx"
  check '"$T" lm eval --ckpt "mx_$n" --data train.bin --context 40 --max-docs 2 >"mx_$n.ev" && grep -q "mixer ${mx%% *}" "mx_$n.ev"' "eval --mixer $mx from its checkpoint"
  check '"$T" lm generate --ckpt "mx_$n" --tokenizer tok --prompt "the cat" --tokens 20 --seed 2 >"mx_$n.gen" 2>/dev/null && [ -s "mx_$n.gen" ]' "generate, --mixer $mx"
done
bad 2 "--mixer rwkv: unknown" lm train $M --mixer rwkv --out X
bad 2 "give --window" lm train $M --mixer ttt-kvb --out X
help_has train --mixer --ttt-backbone --ttt-mini-batch --ttt-base-lr
help_has eval --ckpt --data --buckets --context --max-docs --out --dtype --device --threads
help_has generate --ckpt --tokenizer --prompt --tokens --temperature --top-k --top-p --seed --dtype --device --threads
exit $fail
