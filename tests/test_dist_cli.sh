#!/usr/bin/env bash
# Data-parallel `ttt lm train` under mpirun on the CPU (docs/data-parallel.md), in seconds:
#  - 2 ranks with one micro-batch each give the bytes of 1 rank with --grad-accum 2 (the
#    same global batch): the gradient sum is rank 0's + rank 1's, as the one process adds
#    micro-batch 0's and 1's; the checkpoints are compared byte for byte, the losses too;
#    also through host copies, and 3 ranks against --grad-accum 3 (uneven chunks);
#  - 2 ranks x 2 micro-batches against 1 rank x 4: the sums go in another order (and the
#    clipping norm), so the losses agree to a tolerance (1e-6 relative; 2e-8 seen);
#  - TTT-E2E meta-training (second order through the inner loop) the same way, bit for bit;
#  - resume from 2 ranks onto 1 and from 1 onto 2: the same bytes as an uninterrupted run;
#  - a rank killed (SIGKILL) ends the job with a message naming it; a rank that hangs
#    (SIGSTOP) ends it within --dp-timeout, named by the waiting rank; the last checkpoint
#    survives and loads.
# Skips (exit 77) only when mpirun is missing or ttt was built without MPI.
#   usage: tests/test_dist_cli.sh PATH/TO/ttt
set -u
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
# containers often forbid the cross-memory attach of Open MPI's shared-memory transport
export OMPI_MCA_btl_vader_single_copy_mechanism=none
T=${1:?usage: test_dist_cli.sh PATH/TO/ttt}
T="$(cd "$(dirname "$T")" && pwd)/$(basename "$T")"
if ! command -v mpirun >/dev/null; then
    echo "SKIPPED: mpirun not found (scripts/install-deps.sh installs openmpi-bin and libopenmpi-dev)"
    exit 77
fi
# Open MPI keeps memory to the end of the process in plugins it unloads there, which
# LeakSanitizer reports without a stack to suppress by: the ranks run without leak checks
# (AddressSanitizer's other checks stay on); the one-process runs keep them
MPIRUN=(env "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" mpirun --oversubscribe)
[ "$(id -u)" = 0 ] && MPIRUN+=(--allow-run-as-root)
MPI=("${MPIRUN[@]}" -np 2)
dir=$(mktemp -d /tmp/ttt_dist_cli_XXXXXX)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
fail=0
check() { if eval "$1"; then echo "ok: $2"; else echo "FAILED: $2"; fail=1; fi; }
losses() { sed 's/.*"loss": \([^,]*\),.*/\1/' "$1"; }
ckpt_step() { "$T" lm eval --ckpt "$1" --data train.bin --context 16 --max-docs 1 2>/dev/null | sed -n '1s/.*: step \([0-9]*\),.*/\1/p'; }

for i in $(seq 600); do echo "line $i: the cat sat on the mat and the dog ran $((i % 7)) times past $((i % 13)) trees."; done >corpus.txt
mkdir -p docs && split -l 60 corpus.txt docs/part_
"$T" tokenizer train --input corpus.txt --vocab-size 300 --out tok --quiet || { echo "FAILED: tokenizer train"; exit 1; }
"$T" data prepare --tokenizer tok --out train.bin --quiet docs >/dev/null || { echo "FAILED: data prepare"; exit 1; }

M="--preset tiny --dim 32 --heads 2 --mlp-hidden 48 --seq-len 32"
F="--data train.bin $M --steps 8 --log-every 1 --lr 2e-3 --threads 1"
"${MPI[@]}" "$T" lm train $F --batch 2 --clip 0 --out D2 >D2.log 2>&1
if grep -q "built without MPI" D2.log; then
    echo "SKIPPED: this ttt was built without MPI (install libopenmpi-dev and rebuild)"
    exit 77
fi
check 'grep -q "data-parallel: 2 ranks" D2.log && [ "$(ckpt_step D2)" = 8 ]' "2 ranks train 8 steps"
check '"$T" lm train $F --batch 2 --grad-accum 2 --clip 0 --out D1 2>/dev/null' "1 rank, --grad-accum 2"
check 'cmp -s D1/model.safetensors D2/model.safetensors && diff <(losses D1/metrics.jsonl) <(losses D2/metrics.jsonl)' \
      "2 ranks = 1 rank with the same global batch: checkpoint bytes and losses identical"
check 'TTT_DIST_STAGE=1 "${MPI[@]}" "$T" lm train $F --batch 2 --clip 0 --dp-bucket-mb 0.01 --out S2 >/dev/null 2>&1 && cmp -s D1/model.safetensors S2/model.safetensors' \
      "the same through host copies (a GPU without NCCL) and 0.01 MiB buckets: the same bytes"
check '"${MPIRUN[@]}" -np 3 "$T" lm train $F --batch 2 --clip 0 --dp-bucket-mb 0.01 --out D3 >/dev/null 2>&1 && "$T" lm train $F --batch 2 --grad-accum 3 --clip 0 --out D13 2>/dev/null && cmp -s D13/model.safetensors D3/model.safetensors' \
      "3 ranks (uneven chunks of 11 buckets) = 1 rank with --grad-accum 3, byte for byte"
# two micro-batches per rank: (g0 + g1) + (g2 + g3) against ((g0 + g1) + g2) + g3, and clipping
# on a norm summed in another order: not the same bits, the same losses to a tolerance
check '"${MPI[@]}" "$T" lm train $F --batch 2 --grad-accum 2 --out C2 >/dev/null 2>&1 && "$T" lm train $F --batch 2 --grad-accum 4 --out C1 2>/dev/null' \
      "2 ranks x --grad-accum 2 and 1 rank x --grad-accum 4, with clipping"
check 'paste <(losses C1/metrics.jsonl) <(losses C2/metrics.jsonl) | awk '"'"'{d = $1 - $2; if (d < 0) d = -d; if (d > 1e-6 * $1) bad = 1} END {exit bad}'"'"'' \
      "their losses agree to 1e-6 relative over 8 steps"

E="--data train.bin --preset tiny-e2e --dim 32 --heads 2 --mlp-hidden 40 --depth 2 --window 24 --inner-chunk 16 --seq-len 64 --batch 1 --steps 4 --log-every 1 --lr 3e-3 --eta-warmup 2 --clip 0 --threads 1"
check '"${MPI[@]}" "$T" lm train $E --out E2 >/dev/null 2>&1 && "$T" lm train $E --grad-accum 2 --out E1 2>/dev/null && cmp -s E1/model.safetensors E2/model.safetensors' \
      "TTT-E2E meta-training: 2 ranks = 1 rank with --grad-accum 2, byte for byte"

# resume across rank counts: --global-batch keeps the run's batch whatever the ranks
# (--clip 0: a clipped step's scale comes from a norm summed in another order, see above)
G="$F --batch 2 --global-batch 4 --steps 12 --save-every 3 --clip 0"
check '"$T" lm train $G --out L 2>/dev/null' "the uninterrupted run (1 rank, 12 steps)"
check '"${MPI[@]}" "$T" lm train $G --out P --stop-at 5 >/dev/null 2>&1 && "$T" lm train $G --out P --resume 2>/dev/null && cmp -s L/model.safetensors P/model.safetensors' \
      "2 ranks to step 5, resumed on 1 rank: the same bytes"
check '"$T" lm train $G --out Q --stop-at 7 2>/dev/null && "${MPI[@]}" "$T" lm train $G --out Q --resume >Q.log 2>&1 && grep -q "resumed Q/model.safetensors at step 7" Q.log && cmp -s L/model.safetensors Q/model.safetensors' \
      "1 rank to step 7, resumed on 2 ranks: the same bytes"
check '! "${MPI[@]}" "$T" lm train $F --batch 2 --global-batch 6 --out X >X.log 2>&1 && grep -q "not a multiple of --batch 2 x 2 ranks" X.log' \
      "a global batch that does not split is refused"

# failures: the job ends, the rank is named, the last checkpoint loads
long="--data train.bin $M --batch 2 --steps 1000000 --log-every 10 --save-every 20 --threads 1 --dp-timeout 2"
rank1_pid() { # the child of mpirun $1 that is rank 1
    for p in $(pgrep -P "$1"); do
        tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -q '^OMPI_COMM_WORLD_RANK=1$' && { echo "$p"; return; }
    done
}
for sig in KILL STOP; do
    "${MPI[@]}" "$T" lm train $long --out F$sig >F$sig.log 2>&1 &
    mp=$!
    for _ in $(seq 100); do [ -s F$sig/model.safetensors ] && break; sleep 0.1; done
    p=$(rank1_pid $mp)
    [ -n "$p" ] && kill -$sig "$p"
    t0=$SECONDS
    for _ in $(seq 600); do kill -0 $mp 2>/dev/null || break; sleep 0.1; done # at most 60 s
    kill -9 $mp 2>/dev/null
    wait $mp
    rc=$?
    [ -n "$p" ] && kill -9 "$p" 2>/dev/null
    check '[ -n "$p" ] && [ $rc -ne 0 ] && [ $((SECONDS - t0)) -lt 30 ]' "SIG$sig of rank 1: the job ends (exit $rc after $((SECONDS - t0)) s)"
    if [ $sig = KILL ]; then
        check 'grep -q "process rank 1 .*exited on signal 9" F$sig.log || grep -q "rank 1 sent nothing" F$sig.log' "SIGKILL: a message names rank 1"
    else
        check 'grep -q "rank 0: step [0-9]*: .*rank 1 \(sent\|took\) nothing for 2 s" F$sig.log' "SIGSTOP: rank 0 names the hung rank 1 after --dp-timeout"
    fi
    check '[ -n "$(ckpt_step F$sig)" ]' "SIG$sig: the last checkpoint (step $(ckpt_step F$sig)) survives and loads"
done
[ $fail = 0 ] || { for f in *.log; do echo "== $f"; grep -v "^step" "$f" | tail -20; done; }
exit $fail
