#!/usr/bin/env bash
# `ttt serve` end to end on loopback (CPU, well under a minute): a tiny model
# trained for 2 steps with the GPT-2 tokenizer and a tiny TTT-E2E checkpoint,
# each served on a free port; tests/serve_client.py (Python 3 stdlib) checks
# completions (plain, streamed, greedy and seeded determinism), sessions (asked
# twice, against the document + prompt read at once), state files (save, load,
# truncated and foreign files refused), every bad request's 4xx and message,
# then a load test: concurrent clients, no request lost, RSS flat. Each server
# is stopped with SIGTERM and must exit 0 (under ASan: with no leak).
#   usage: tests/test_serve.sh PATH/TO/ttt PATH/TO/serve_make_e2e [python3]
set -u
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
# ASan's quarantine holds freed memory back on purpose (up to 256 MB), which the
# load test's RSS check would read as growth; a small one keeps that check
# meaningful under the sanitizers. LeakSanitizer still checks every exit.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=8"
T=${1:?usage: test_serve.sh PATH/TO/ttt PATH/TO/serve_make_e2e [python3]}
MAKE_E2E=${2:?usage: test_serve.sh PATH/TO/ttt PATH/TO/serve_make_e2e [python3]}
PY=${3:-python3}
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
T="$(cd "$(dirname "$T")" && pwd)/$(basename "$T")"
MAKE_E2E="$(cd "$(dirname "$MAKE_E2E")" && pwd)/$(basename "$MAKE_E2E")"
CLIENT="$here/serve_client.py"
dir=$(mktemp -d /tmp/ttt_serve_XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  rm -rf "$dir"
}
trap cleanup EXIT
cd "$dir"
fail=0
check() { if eval "$1"; then echo "ok: $2"; else echo "FAILED: $2"; fail=1; fi; }

# the GPT-2 tokenizer: in the repository once it is there, else beside it
tok=""
for t in "$root/data/gpt2-tokenizer" "$root/../shared/data/gpt2-tokenizer"; do
  [ -f "$t/vocab.json" ] && [ -f "$t/merges.txt" ] && { tok="$t"; break; }
done
if [ -z "$tok" ]; then
  echo "no GPT-2 tokenizer in data/gpt2-tokenizer or ../shared/data/gpt2-tokenizer: training a small one instead"
fi

python3 - <<'PY' 2>/dev/null || for i in $(seq 300); do echo "line $i: the cat sat on the mat and the dog ran $((i % 7)) times."; done >corpus.txt
import random
random.seed(1)
words = "the cat sat on a mat while dogs ran past seven tall trees near old houses".split()
with open("corpus.txt", "w") as f:
    for i in range(300):
        f.write(" ".join(random.choice(words) for _ in range(12)) + ".\n")
PY
mkdir -p docs && split -l 60 corpus.txt docs/part_
if [ -z "$tok" ]; then
  "$T" tokenizer train --input corpus.txt --vocab-size 300 --out tok --quiet || { echo "FAILED: tokenizer train"; exit 1; }
  tok="$dir/tok"
fi
check '"$T" data prepare --tokenizer "$tok" --out train.bin --quiet docs >/dev/null' "data prepare"
check '"$T" lm train --data train.bin --out A --preset tiny --steps 2 --seq-len 32 --batch 2 --threads 1 2>train.log' \
  "train a tiny full-attention model for 2 steps"
vocab=$(sed -n 's/.*vocabulary \([0-9]*\).*/\1/p' <("$T" data prepare --tokenizer "$tok" --out v.bin --quiet docs))
# a tiny TTT-E2E model (window 16, inner chunk 8): from `ttt lm train` once it takes
# --inner-chunk, else (and if that fails) from a helper that writes random weights
e2e_from=""
if "$T" lm train --help 2>/dev/null | grep -q -- "--inner-chunk"; then
  "$T" lm train --data train.bin --out EA --preset tiny-e2e --dim 32 --heads 2 --mlp-hidden 48 --prime-hidden 48 \
    --window 16 --inner-chunk 8 --steps 2 --seq-len 32 --batch 2 --threads 1 2>e2e_train.log &&
    cp EA/model.safetensors E.safetensors && e2e_from="ttt lm train"
  [ -n "$e2e_from" ] || echo "note: ttt lm train --preset tiny-e2e failed ($(tail -1 e2e_train.log)); using the helper"
else
  echo "note: ttt lm train takes no --inner-chunk yet (no TTT-E2E training): a helper writes the E2E checkpoint"
fi
if [ -z "$e2e_from" ]; then
  check '"$MAKE_E2E" E.safetensors "$vocab"' "a tiny TTT-E2E checkpoint from the helper (random weights)"
else
  echo "ok: a tiny TTT-E2E model trained for 2 steps by ttt lm train"
fi

# start SERVE_ARGS...: a server on a free port; sets port and pid
start() {
  local log=$1
  shift
  # timeout: a server left behind by a broken test still ends
  timeout -s KILL 600 "$T" serve --port 0 --threads 1 "$@" 2>"$log" &
  pid=$!
  pids+=("$pid")
  port=""
  for _ in $(seq 600); do
    port=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log")
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$port" ] || { echo "FAILED: ttt serve $* did not start: $(cat "$log")"; fail=1; return 1; }
  # the server itself, not timeout(1): RSS is its own
  spid=$(pgrep -P "$pid" -x ttt 2>/dev/null || awk '{print $1}' "/proc/$pid/task/$pid/children" 2>/dev/null)
  [ -n "$spid" ] || spid=$pid # timeout(1) passes SIGTERM on, but then the RSS read is its own
  echo "ttt serve $* on port $port (pid $spid)"
}

# stop LOG: SIGTERM, then it must exit 0 with its message
stop() {
  local log=$1 rc=0
  [ "${2:-}" = signalled ] || kill -TERM "$spid"
  wait "$pid" || rc=$?
  check '[ $rc -eq 0 ] && grep -q "SIGTERM: stopping" "$log" && grep -q "stopped after" "$log"' \
    "SIGTERM: the server finishes, frees everything and exits 0 (got $rc)"
  [ $rc -eq 0 ] || tail -30 "$log"
}

# ---- a full-attention model: endpoints, sessions, bad requests, then the load test
if start plain.log --ckpt A --tokenizer "$tok" --max-context 256 --max-tokens 32 --max-body 4096 --max-sessions 3; then
  "$PY" "$CLIENT" plain "$port" || fail=1
  "$PY" "$CLIENT" load "$port" "$spid" || fail=1
  stop plain.log
fi

# ---- a TTT-E2E model: sessions that learn, state files
mkdir -p states
if start e2e.log --ckpt E.safetensors --tokenizer "$tok" --state-dir states; then
  "$PY" "$CLIENT" e2e "$port" states || fail=1
  # SIGTERM (sent by the client) while a stream is in flight: the stream still completes
  "$PY" "$CLIENT" shutdown "$port" "$spid" | tee shutdown.txt
  [ "${PIPESTATUS[0]}" -eq 0 ] || fail=1
  stop e2e.log signalled
  if grep -q "finishing 1 request(s) in flight" e2e.log; then
    echo "ok: the server said it was finishing the stream"
  elif grep -q "stream tokens: 200" shutdown.txt; then
    echo "FAILED: a 200-token stream was not in flight when SIGTERM came: $(grep finishing e2e.log)"
    fail=1
  else
    echo "note: the model ended its stream early (<|endoftext|>), maybe before SIGTERM landed: $(grep finishing e2e.log)"
  fi
fi
check '[ -z "$(find "$dir" -name "escape*")" ]' "no state file outside --state-dir"

# ---- another model (same shapes, other weights) refuses the first one's state file
check '"$MAKE_E2E" E2.safetensors "$vocab" 8' "a second TTT-E2E checkpoint (another seed)"
if start e2e2.log --ckpt E2.safetensors --tokenizer "$tok" --state-dir states --quiet; then
  "$PY" - "$port" <<'PY' || fail=1
import http.client, json, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=120)
c.request("POST", "/v1/sessions/load", body=json.dumps({"name": "doc-1.v2"}))
r = c.getresponse()
msg = json.loads(r.read())["error"]["message"]
ok = r.status == 400 and "refused" in msg and "model" in msg
print(("ok: " if ok else "FAILED: ") + f"another model's state file -> {r.status} {msg!r}")
sys.exit(0 if ok else 1)
PY
  stop e2e2.log
fi

# ---- flags: bad values get a message and exit 2; a missing checkpoint exits 1
bad() { # expected-code pattern args...
  local want=$1 pat=$2
  shift 2
  timeout 60 "$T" serve "$@" >/dev/null 2>err.txt
  local got=$?
  if [ $got -eq "$want" ] && grep -q -- "$pat" err.txt; then echo "ok: serve $* -> $got"; else
    echo "FAILED: serve $* -> exit $got (want $want, message matching '$pat'): $(cat err.txt)"; fail=1; fi
}
bad 2 "needs --ckpt" --tokenizer "$tok"
bad 2 "needs --ckpt" --ckpt A
bad 2 "port" --ckpt A --tokenizer "$tok" --port 70000
bad 2 "port" --ckpt A --tokenizer "$tok" --port abc
bad 2 "max-tokens" --ckpt A --tokenizer "$tok" --max-tokens 0
bad 2 "max-body" --ckpt A --tokenizer "$tok" --max-body 10
bad 2 "max-sessions" --ckpt A --tokenizer "$tok" --max-sessions -1
bad 2 "max-context" --ckpt A --tokenizer "$tok" --max-context 0
bad 2 "threads" --ckpt A --tokenizer "$tok" --threads -2
bad 2 "device" --ckpt A --tokenizer "$tok" --device tpu
bad 2 "eta" --ckpt A --tokenizer "$tok" --eta -1
bad 2 "host" --ckpt A --tokenizer "$tok" --host not-an-address
bad 2 "needs a value" --ckpt A --tokenizer "$tok" --port
bad 2 "unknown argument" --ckpt A --tokenizer "$tok" --bogus
bad 1 "nope" --ckpt nope --tokenizer "$tok" --port 0
bad 1 "train.bin" --ckpt train.bin --tokenizer "$tok" --port 0
bad 2 "tokenizer" --ckpt A --tokenizer nope --port 0
bad 1 "state-dir" --ckpt A --tokenizer "$tok" --state-dir train.bin/x
"$T" serve --help >help.txt || { echo "FAILED: serve --help"; fail=1; }
for f in --ckpt --tokenizer --host --port --device --threads --max-tokens --max-context --max-body --max-sessions \
  --state-dir --eta --quiet; do
  grep -q -- "$f " help.txt || { echo "FAILED: serve --help lacks $f"; fail=1; }
done
exit $fail
