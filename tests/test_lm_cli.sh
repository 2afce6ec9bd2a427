#!/usr/bin/env bash
# The language-model commands end to end on a tiny corpus (CPU, seconds):
# tokenizer -> shard -> train; resume is bit-exact (an interrupted run resumed
# ends with the same checkpoint bytes and metrics as an uninterrupted one);
# a run killed with SIGKILL resumes from its last checkpoint; eval and generate
# run; bad input gives messages and exit codes.
#   usage: tests/test_lm_cli.sh PATH/TO/ttt
set -u
T=${1:?usage: test_lm_cli.sh PATH/TO/ttt}
T="$(cd "$(dirname "$T")" && pwd)/$(basename "$T")"
dir=$(mktemp -d /tmp/ttt_lm_cli_XXXXXX)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
fail=0
check() { if eval "$1"; then echo "ok: $2"; else echo "FAILED: $2"; fail=1; fi; }

# a small corpus with structure to learn
python3 - <<'PY' 2>/dev/null || for i in $(seq 400); do echo "line $i: the cat sat on the mat and the dog ran $((i % 7)) times."; done >corpus.txt
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
check '"$T" data verify train.bin >/dev/null' "data verify"

F="--data train.bin --preset tiny --dim 32 --heads 2 --mlp-hidden 48 --seq-len 32 --batch 4 --steps 24 --save-every 6 --log-every 3 --lr 2e-3 --threads 1"
check '"$T" lm train $F --out A 2>/dev/null' "train 24 steps"
check '"$T" lm train $F --out B --steps 24 2>/dev/null && "$T" lm train $F --out B --resume 2>/dev/null' "train again, then resume a finished run (no-op)"
# the same run, killed (SIGKILL) once its first checkpoint exists, then resumed
"$T" lm train $F --out C 2>/dev/null &
pid=$!
for i in $(seq 200); do [ -f C/model.safetensors ] && break; sleep 0.02; done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
step=$(python3 -c "import json,struct;f=open('C/model.safetensors','rb');n=struct.unpack('<Q',f.read(8))[0];print(json.loads(f.read(n))['__metadata__']['step'])" 2>/dev/null || echo '?')
echo "killed at checkpoint step $step"
check '"$T" lm train $F --out C --resume 2>C.log && grep -q "resumed" C.log' "resume after SIGKILL"
check 'cmp -s A/model.safetensors C/model.safetensors' "resumed checkpoint is byte-identical to the uninterrupted run's"
check 'diff <(sed "s/, \"tokens_per_s.*//" A/metrics.jsonl) <(sed "s/, \"tokens_per_s.*//" C/metrics.jsonl)' "metrics of the resumed run match (timings aside)"
check '"$T" lm train $F --out C --resume --lr 1e-3 2>err.txt; [ $? -eq 2 ] && grep -q "different flags" err.txt' "resume with other flags is refused"
check '"$T" lm train $F --out A 2>err.txt; [ $? -eq 2 ] && grep -q "exists" err.txt' "an existing run is not overwritten without --resume"
check '"$T" lm train $F --out W --window 8 --prime-blocks 1 2>/dev/null' "train with a sliding window and a prime MLP"
check '"$T" lm eval --ckpt W --data train.bin --context 64 --out ev.jsonl >ev.txt && grep -q summary ev.jsonl && grep -q perplexity ev.txt' "eval by position"
check '"$T" lm generate --ckpt W --tokenizer tok --prompt "the cat" --tokens 20 --seed 1 >g1.txt 2>/dev/null && "$T" lm generate --ckpt W --tokenizer tok --prompt "the cat" --tokens 20 --seed 1 >g2.txt 2>/dev/null && cmp -s g1.txt g2.txt' "generate is deterministic for a seed (ring-buffer cache)"
check '"$T" lm generate --ckpt A --tokenizer tok --prompt "the cat" --tokens 10 --temperature 0 >/dev/null 2>&1' "greedy generation, full attention"
# bad input
check '"$T" lm train --data missing.bin --out X 2>err.txt; [ $? -eq 1 ] && grep -q "missing.bin" err.txt' "missing shard is named"
check '"$T" lm train --data train.bin --out X --batch 0 2>err.txt; [ $? -eq 2 ] && grep -q "batch" err.txt' "bad flag value"
check '"$T" lm train --data train.bin --out X --heads 5 2>err.txt; [ $? -eq 2 ] && grep -q "heads" err.txt' "bad model config"
check '"$T" lm eval --ckpt train.bin --data train.bin 2>err.txt; [ $? -ne 0 ] && grep -q "train.bin" err.txt' "not a checkpoint"
check '"$T" lm bogus 2>/dev/null; [ $? -eq 2 ]' "unknown subcommand"
check '"$T" lm train --help | grep -q -- "--grad-accum"' "help lists flags"
exit $fail
