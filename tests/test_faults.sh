#!/usr/bin/env bash
# Faults a user's machine deals out (docs/reliability.md), against the ttt program:
#   kill-lm N, kill-vision N   SIGKILL at a random moment of `ttt lm train` / `ttt vision train`,
#                              N times; every time, resuming ends byte-identical to an uninterrupted
#                              run (or, killed before the first checkpoint, --resume refuses with a
#                              message and a fresh start gets there), and a checkpoint that
#                              existed before the kill is still there and loads
#   kill-data N, kill-tokenizer N   SIGKILL during `ttt data prepare` / `ttt tokenizer train`:
#                              the output is the previous one, absent, or complete and identical
#                              to an uninterrupted run's; never a torn file
#   disk-full                  outputs on a small tmpfs (mounted in a private mount namespace,
#                              unshare -m): a message and exit 1, the previous files intact
#   read-only                  outputs in a read-only bind mount (root ignores permission bits,
#                              not a read-only mount): a message, the previous files intact
#   corrupt                    damaged checkpoints at resume: refused, naming the tensor or field
#   gpu-oom                    a model too large for the GPU: a message with the sizes, exit 1
#                              (skipped without a GPU)
# Random moments come from FAULT_SEED (default 1), printed with each trial.
#   usage: tests/test_faults.sh PATH/TO/ttt WHAT [N]
set -u
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
T=${1:?usage: test_faults.sh PATH/TO/ttt WHAT [N]}
T="$(cd "$(dirname "$T")" && pwd)/$(basename "$T")"
what=${2:?usage: test_faults.sh PATH/TO/ttt WHAT [N]}
N=${3:-5}
RANDOM=${FAULT_SEED:-1}
dir=$(mktemp -d /tmp/ttt_faults_XXXXXX)
trap 'cd /; rm -rf "$dir"' EXIT
cd "$dir" || exit 1
fail=0
check() { if eval "$1"; then echo "ok: $2"; else echo "FAILED: $2"; fail=1; fi; }
settled() { sed 's/, "\(tokens\|images\)_per_s.*//' "$1"; }
# a delay in [0, ms) milliseconds, as seconds for sleep
delay() { local d=$((RANDOM * 32768 + RANDOM)); d=$((d % $1)); printf '%d.%03d' $((d / 1000)) $((d % 1000)); }
# runs "$@" in the background, kills it with SIGKILL after $1 seconds (unless it ended); sets killed=1 if it was
kill_after() {
  local s=$1; shift
  "$@" >/dev/null 2>&1 &
  local pid=$!
  sleep "$s"
  if kill -9 $pid 2>/dev/null; then killed=1; else killed=0; fi
  wait $pid 2>/dev/null
}
# exit status and message of a command that must fail: code, and a pattern its stderr must hold
refuses() {
  local code=$1 pat=$2; shift 2
  "$@" >/dev/null 2>err.txt
  local rc=$?
  [ $rc -eq "$code" ] && grep -q -- "$pat" err.txt || { echo "  exit $rc, stderr: $(head -c 600 err.txt)"; return 1; }
}

lm_setup() {
  python3 - <<'PY' 2>/dev/null || for i in $(seq 600); do echo "line $i: the cat sat on the mat and the dog ran $((i % 7)) times."; done >corpus.txt
import random
random.seed(1)
words = "the cat sat on a mat while dogs ran past seven tall trees near old houses".split()
with open("corpus.txt", "w") as f:
    for i in range(600):
        f.write(" ".join(random.choice(words) for _ in range(12)) + ".\n")
PY
  mkdir -p docs && split -l 60 corpus.txt docs/part_
  "$T" tokenizer train --input corpus.txt --vocab-size 300 --out tok --quiet &&
    "$T" data prepare --tokenizer tok --out train.bin --quiet docs >/dev/null || { echo "FAILED: setup"; exit 1; }
}
LM="--data train.bin --preset tiny --dim 32 --heads 2 --mlp-hidden 48 --seq-len 32 --batch 2 --lr 2e-3 --threads 1"
ckpt_step() { "$T" lm eval --ckpt "$1" --data train.bin --context 16 --max-docs 1 2>/dev/null | sed -n '1s/.*: step \([0-9]*\),.*/\1/p'; }

# one trainer's kill trials: $1 lm|vision
kill_trainer() {
  local kind=$1 cmd ck ms
  if [ "$kind" = lm ]; then
    lm_setup
    cmd="$T lm train $LM --steps 200 --save-every 7 --log-every 5"
    ck=model.safetensors
    loads() { [ -n "$(ckpt_step "$1")" ]; }
  else
    [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || { echo "skipped: Fashion-MNIST is not installed"; exit 0; }
    cmd="$T vision train --train-limit 128 --test-limit 32 --epochs 4 --batch 32 --dim 16 --depth 1 --heads 2 --threads 1"
    ck=checkpoint.safetensors
    loads() { "$T" vision eval --out "$1" --test-limit 16 --threads 1 >/dev/null 2>&1; }
  fi
  local t0=$(date +%s%N)
  $cmd --out R >/dev/null 2>&1 || { echo "FAILED: the uninterrupted run"; exit 1; }
  ms=$((($(date +%s%N) - t0) / 1000000 + 50))
  echo "uninterrupted run: $((ms - 50)) ms; kills land in [0, $ms) ms"
  local refused=0 resumed=0
  for trial in $(seq "$N"); do
    rm -rf K
    local d=$(delay $ms) existed=0
    [ "$trial" = 1 ] && d=0.005  # the first kill lands before any checkpoint: --resume must refuse
    $cmd --out K >/dev/null 2>&1 &
    local pid=$!
    sleep "$d"
    [ -f K/$ck ] && existed=1
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null
    local msg="trial $trial: killed at ${d}s"
    if [ $existed = 1 ] && ! { [ -f K/$ck ] && loads K; }; then
      echo "FAILED: $msg: the checkpoint that existed before the kill is gone or does not load"; fail=1; continue
    fi
    # a second kill, during the resume, every other trial
    if [ $((trial % 2)) = 0 ] && [ -f K/$ck ]; then
      local d2=$(delay $((ms / 2)))
      msg="$msg, again at ${d2}s of the resume"
      $cmd --out K --resume >/dev/null 2>&1 &
      pid=$!
      sleep "$d2"
      kill -9 $pid 2>/dev/null
      wait $pid 2>/dev/null
      { [ -f K/$ck ] && loads K; } || { echo "FAILED: $msg: the checkpoint is gone or does not load"; fail=1; continue; }
    fi
    if [ -f K/$ck ]; then
      $cmd --out K --resume >/dev/null 2>K.err || { echo "FAILED: $msg: resume: $(tail -2 K.err)"; fail=1; continue; }
      resumed=$((resumed + 1))
    else
      # killed before the first checkpoint: --resume refuses, naming the file; a fresh start works
      refuses 1 "K/$ck" $cmd --out K --resume || { echo "FAILED: $msg: --resume without a checkpoint"; fail=1; continue; }
      $cmd --out K >/dev/null 2>K.err || { echo "FAILED: $msg: fresh start: $(tail -2 K.err)"; fail=1; continue; }
      refused=$((refused + 1))
    fi
    if cmp -s R/$ck K/$ck && diff <(settled R/metrics.jsonl) <(settled K/metrics.jsonl) >/dev/null; then
      echo "ok: $msg: ends byte-identical to the uninterrupted run"
    else
      echo "FAILED: $msg: the resumed run differs from the uninterrupted one"; fail=1
    fi
  done
  echo "$kind: $N kills: $resumed resumed from a checkpoint, $refused before the first checkpoint (refused, then restarted)"
}

# SIGKILL during a command that writes output files: $1 name, $2 command (writes $3...), reference in ref/
kill_writer() {
  local name=$1 cmd=$2; shift 2
  local files=("$@") t0 ms
  rm -rf ref
  t0=$(date +%s%N)
  eval "$cmd" >/dev/null 2>&1 || { echo "FAILED: $name: the uninterrupted run"; exit 1; }
  ms=$((($(date +%s%N) - t0) / 1000000 + 20))
  mkdir -p ref && for f in "${files[@]}"; do mkdir -p "ref/$(dirname "$f")" && mv "$f" "ref/$f"; done
  echo "$name: uninterrupted run $((ms - 20)) ms; kills land in [0, $ms) ms"
  local complete=0 absent=0 old=0
  for trial in $(seq "$N"); do
    # every other trial starts over an older output, which must survive a kill intact
    local with_old=$((trial % 2))
    for f in "${files[@]}"; do rm -f "$f" "$f.tmp"; [ $with_old = 1 ] && mkdir -p "$(dirname "$f")" && echo "old $f" >"$f"; done
    # half the kills land in the last fifth of the run, where the files are written
    local d
    if [ $((trial % 4)) -ge 2 ]; then d=$(delay $((ms / 5))); d=$(awk -v a="$d" -v m="$ms" 'BEGIN { printf "%.3f", a + 0.8 * m / 1000 }'); else d=$(delay $ms); fi
    eval "exec $cmd" >/dev/null 2>&1 &  # exec: the kill must reach ttt itself, not a subshell
    local pid=$!
    sleep "$d"
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null
    local state="" bad=0
    for f in "${files[@]}"; do
      if [ ! -e "$f" ]; then state="$state absent"
      elif cmp -s "$f" "ref/$f"; then state="$state new"
      elif [ "$(cat "$f")" = "old $f" ]; then state="$state old"
      else state="$state TORN"; bad=1; [ -n "${FAULT_KEEP:-}" ] && cp "$f" "$FAULT_KEEP.$(basename "$f")" && ls -la "$(dirname "$f")" >"$FAULT_KEEP.ls"; fi
    done
    # several files: all of one kind (a mix of new and old would be a tokenizer that never existed)
    local kinds=$(echo $state | tr ' ' '\n' | sort -u | wc -l)
    if [ $bad = 1 ] || [ "$kinds" -gt 1 ]; then
      echo "FAILED: $name trial $trial: killed at ${d}s: outputs${state}"; fail=1
    else
      echo "ok: $name trial $trial: killed at ${d}s: outputs${state}"
      case $state in *new*) complete=$((complete + 1)) ;; *old*) old=$((old + 1)) ;; *) absent=$((absent + 1)) ;; esac
    fi
    # and the next run over what the kill left (a stale .tmp included) completes
    for f in "${files[@]}"; do rm -f "$f"; done
    eval "$cmd" >/dev/null 2>&1 && for f in "${files[@]}"; do cmp -s "$f" "ref/$f" || { echo "FAILED: $name trial $trial: the rerun differs"; fail=1; }; done
  done
  echo "$name: $N kills: $complete complete, $old previous output intact, $absent absent"
}

big_corpus() {
  # about 6 MB in 60 files: long enough to be killed in the middle
  python3 - <<'PY'
import os, random
random.seed(2)
words = ("the cat sat on a mat while dogs ran past seven tall trees near old houses and "
         "rivers under bright stars where nobody had ever counted them before").split()
os.makedirs("big", exist_ok=True)
for i in range(60):
    with open(f"big/f{i:03d}.txt", "w") as f:
        for _ in range(1000):
            f.write(" ".join(random.choice(words) for _ in range(16)) + ".\n")
PY
  cat big/*.txt >big.txt
}

# ---- full disk and read-only folders, in a private mount namespace ----------------------------------
in_mount_ns() {  # runs this script's $1 step in a private mount namespace (root, unshare); 77 = cannot
  if [ "$(id -u)" != 0 ] || ! unshare -m true 2>/dev/null; then return 77; fi
  unshare -m bash "$SELF" "$T" "$1" "$N" "$dir"
}

fill() { dd if=/dev/zero of="$1/filler" bs=4k >/dev/null 2>&1; }  # until the disk is full

disk_full_inner() {
  lm_setup
  mkdir -p small
  mount -t tmpfs -o size=600k tmpfs small || exit 77
  # one checkpoint (338 KB) fits, a second beside it does not: the save of step 6 fails
  refuses 1 "No space left on device" "$T" lm train $LM --steps 12 --save-every 3 --out small/run ||
    { echo "FAILED: lm train on a full disk"; fail=1; }
  check '[ "$(ckpt_step small/run)" = 3 ] && [ ! -e small/run/model.safetensors.tmp ]' \
    "lm train on a full disk: a message naming the file, the last checkpoint (step 3) intact, no .tmp left"
  cp -r small/run roomy && check '"$T" lm train $LM --steps 12 --save-every 3 --out roomy --resume >/dev/null 2>&1 && "$T" lm train $LM --steps 12 --save-every 3 --out ref >/dev/null 2>&1 && cmp -s roomy/model.safetensors ref/model.safetensors' \
    "and, given room, it resumes to the uninterrupted run's bytes"
  rm -rf small/run
  # a shard: the old one stays
  echo "old shard" >small/train.bin
  head -c 400000 /dev/zero >small/filler
  big_corpus
  refuses 1 "No space left on device" "$T" data prepare --tokenizer tok --out small/train.bin --quiet big ||
    { echo "FAILED: data prepare on a full disk"; fail=1; }
  check '[ "$(cat small/train.bin)" = "old shard" ] && [ ! -e small/train.bin.tmp ]' "data prepare on a full disk: message, the old shard intact, no .tmp left"
  rm -f small/filler small/train.bin
  # a tokenizer: the old files stay
  mkdir -p small/tok && echo old >small/tok/vocab.json && echo old >small/tok/merges.txt
  fill small
  refuses 1 "No space left on device" "$T" tokenizer train --input big.txt --vocab-size 400 --out small/tok --quiet ||
    { echo "FAILED: tokenizer train on a full disk"; fail=1; }
  check '[ "$(cat small/tok/vocab.json small/tok/merges.txt)" = "$(printf "old\nold")" ] && [ -z "$(ls small/tok | grep tmp)" ]' \
    "tokenizer train on a full disk: message, the old files intact, no .tmp left"
  rm -rf small/filler small/tok
  # metrics.jsonl cannot grow (the disk filled up after the run started): message, checkpoint intact
  "$T" lm train $LM --steps 40 --save-every 6 --log-every 1 --stop-at 6 --out small/m >/dev/null 2>&1
  fill small
  refuses 1 "small/m" "$T" lm train $LM --steps 40 --save-every 6 --log-every 1 --out small/m --resume ||
    { echo "FAILED: resume on a full disk"; fail=1; }
  check '[ "$(ckpt_step small/m)" = 6 ]' "resume on a full disk: a message ($(head -c 200 err.txt)), the checkpoint (step 6) intact"
  if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    rm -rf small/* && fill small
    refuses 1 "No space left on device" "$T" vision train --train-limit 64 --test-limit 16 --epochs 2 --batch 32 --dim 16 --depth 1 --heads 2 --threads 1 --out small/v &&
      echo "ok: vision train on a full disk: $(head -c 200 err.txt)" || { echo "FAILED: vision train on a full disk"; fail=1; }
  fi
  umount small
  exit $fail
}

read_only_inner() {
  lm_setup
  mkdir -p ro/tok ro/run && cp tok/* ro/tok/
  "$T" lm train $LM --steps 12 --save-every 3 --stop-at 6 --out ro/run >/dev/null 2>&1
  cp ro/run/model.safetensors before.safetensors
  mount --bind ro ro && mount -o remount,ro,bind ro || exit 77
  refuses 1 "Read-only file system" "$T" lm train $LM --steps 6 --out ro/new || { echo "FAILED: lm train into a read-only folder"; fail=1; }
  check '[ ! -e ro/new ]' "lm train into a read-only folder: message, nothing made"
  refuses 1 "ro/run" "$T" lm train $LM --steps 12 --save-every 3 --out ro/run --resume || { echo "FAILED: resume in a read-only folder"; fail=1; }
  check 'cmp -s ro/run/model.safetensors before.safetensors' "resume in a read-only folder: message, checkpoint unchanged"
  refuses 1 "Read-only file system" "$T" data prepare --tokenizer tok --out ro/train.bin --quiet docs || { echo "FAILED: data prepare"; fail=1; }
  check '[ ! -e ro/train.bin ]' "data prepare into a read-only folder: message, no file"
  refuses 1 "Read-only file system" "$T" tokenizer train --input corpus.txt --vocab-size 300 --out ro/tok --quiet || { echo "FAILED: tokenizer train"; fail=1; }
  check 'cmp -s ro/tok/vocab.json tok/vocab.json && cmp -s ro/tok/merges.txt tok/merges.txt' "tokenizer train into a read-only folder: message, old files intact"
  refuses 1 "ro/ev.jsonl" "$T" lm eval --ckpt ro/run --data train.bin --context 16 --max-docs 1 --out ro/ev.jsonl && echo "ok: lm eval --out into a read-only folder: $(head -c 200 err.txt)" || { echo "FAILED: lm eval --out"; fail=1; }
  if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    refuses 1 "Read-only file system" "$T" vision train --train-limit 64 --test-limit 16 --epochs 1 --batch 32 --dim 16 --depth 1 --heads 2 --threads 1 --out ro/v &&
      echo "ok: vision train into a read-only folder: $(head -c 200 err.txt)" || { echo "FAILED: vision train into a read-only folder"; fail=1; }
  fi
  umount ro
  exit $fail
}

# ---- damaged checkpoints at resume -----------------------------------------------------------------
corrupt() {
  lm_setup
  local F="$LM --steps 12 --save-every 3 --log-every 3"
  "$T" lm train $F --stop-at 6 --out good >/dev/null 2>&1 || { echo "FAILED: setup run"; exit 1; }
  local ck=good/model.safetensors hl
  hl=$(python3 -c "import struct,sys; print(struct.unpack('<Q', open('$ck','rb').read(8))[0])")
  damaged() {  # $1 name, $2 python statement on bytearray b (header length hl); a copy of the run as $1/
    rm -rf "$1" && cp -r good "$1"
    python3 - "$1/model.safetensors" "$hl" "$2" <<'PY'
import json, struct, sys
path, hl, stmt = sys.argv[1], int(sys.argv[2]), sys.argv[3]
b = bytearray(open(path, "rb").read())
h = json.loads(b[8:8 + hl])
def off(name): return 8 + hl + h[name]["data_offsets"][0]
exec(stmt)
open(path, "wb").write(b)
PY
  }
  damaged trunc 'del b[len(b) - 1000:]'
  refuses 1 "model.norm.weight\|truncat\|beyond\|past the end" "$T" lm train $F --out trunc --resume && echo "ok: truncated checkpoint refused: $(head -c 300 err.txt)" || { echo "FAILED: truncated"; fail=1; }
  damaged nan 'b[off("model.norm.weight"):off("model.norm.weight") + 4] = struct.pack("<f", float("nan"))'
  refuses 1 "model.norm.weight" "$T" lm train $F --out nan --resume && echo "ok: NaN in a tensor refused, naming it: $(head -c 300 err.txt)" || { echo "FAILED: NaN"; fail=1; }
  damaged flip 'b[off("model.norm.weight") + 1] ^= 0x10'
  refuses 1 "model.norm.weight" "$T" lm train $F --out flip --resume && echo "ok: a flipped bit in a tensor refused, naming it: $(head -c 300 err.txt)" || { echo "FAILED: flipped bit"; fail=1; }
  damaged header 'b[8 + hl // 2] = ord("\x01")'
  refuses 1 "header" "$T" lm train $F --out header --resume && echo "ok: damaged header refused: $(head -c 300 err.txt)" || { echo "FAILED: header"; fail=1; }
  damaged step 'i = b.find(b"\"step\":\""); b[i + 8] = ord("x")'
  refuses 1 "step" "$T" lm train $F --out step --resume && echo "ok: damaged step field refused: $(head -c 300 err.txt)" || { echo "FAILED: step"; fail=1; }
  damaged shape 'i = b.find(b"[32]"); b[i + 1:i + 3] = b"23"'
  refuses 1 "shape" "$T" lm train $F --out shape --resume && echo "ok: a tensor's shape changed, refused: $(head -c 300 err.txt)" || { echo "FAILED: shape"; fail=1; }
  damaged empty 'del b[:]'
  refuses 1 "model.safetensors" "$T" lm train $F --out empty --resume && echo "ok: an empty checkpoint refused: $(head -c 300 err.txt)" || { echo "FAILED: empty"; fail=1; }
  check 'cmp -s good/model.safetensors good/model.safetensors && "$T" lm train $F --out good --resume >/dev/null 2>&1' "the undamaged copy still resumes"
}

gpu_oom() {
  lm_setup
  # a small model (67M parameters) on 2^20 sequences of 32 tokens: one [2^20, 32, 4096] f32 activation is
  # 550 GB, more than any GPU holds, refused at its allocation (a model of many GPU-sized weights spent
  # minutes initializing 80 GB before it failed)
  "$T" lm train --data train.bin --out big --dim 4096 --depth 1 --heads 32 --mlp-hidden 8 --seq-len 32 --batch 1048576 \
    --steps 1 --device cuda >/dev/null 2>err.txt
  local rc=$?
  if grep -qiE "no backend for it|no cuda device|no gpu|cannot run on cuda" err.txt; then
    echo "skipped: no GPU here ($(head -c 200 err.txt))"; exit 0
  fi
  # the error (the last line, after the start-up line) names memory and the size asked for
  check '[ $rc -eq 1 ] && tail -n 1 err.txt | grep -iE "memory" | grep -qE "[0-9]{6,}"' \
    "a batch too large for the GPU: exit 1 and a message with sizes (exit $rc: $(tail -n 1 err.txt | head -c 400))"
  check '[ ! -e big/model.safetensors ]' "and no checkpoint"
}

case $what in
  kill-lm) kill_trainer lm ;;
  kill-vision) kill_trainer vision ;;
  kill-data)
    lm_setup && big_corpus
    kill_writer "data prepare" '"$T" data prepare --tokenizer tok --out train_big.bin --quiet big' train_big.bin ;;
  kill-tokenizer)
    big_corpus
    kill_writer "tokenizer train" '"$T" tokenizer train --input big.txt --vocab-size 400 --out out --quiet' out/vocab.json out/merges.txt ;;
  disk-full|read-only)
    in_mount_ns "$what-inner"
    rc=$?
    [ $rc = 77 ] && { echo "skipped: cannot mount here (needs root and unshare -m)"; exit 0; }
    exit $rc ;;
  disk-full-inner) cd "$4" && disk_full_inner ;;
  read-only-inner) cd "$4" && read_only_inner ;;
  corrupt) corrupt ;;
  gpu-oom) gpu_oom ;;
  *) echo "unknown fault '$what'"; exit 2 ;;
esac
exit $fail
