#!/usr/bin/env bash
# A GPU job longer than one device call (10 minutes), spread over consecutive calls on the same warm machine:
# the job runs in its own process session (it outlives the call that started it) and writes under
# /tmp/ttt-bg/out; each call waits up to N seconds for it and copies what it has written so far into $OUT.
#   bash bench/gpu/background.sh start 'PARTS="lm attn" OUT=/tmp/ttt-bg/out bash bench/speed/run_table.sh'
#   bash bench/gpu/background.sh wait 560      # in this call and, at once, in the next ones until it says done
# The next call must come within the machine's warm time (30 s); otherwise the machine, and the job, are gone.
set -uo pipefail
BG=/tmp/ttt-bg
OUT=${OUT:-gpu-out}
case "${1:-}" in
  start)
    [ -n "${2:-}" ] || { echo "usage: background.sh start COMMAND" >&2; exit 2; }
    if [ -f $BG/pid ] && kill -0 "$(cat $BG/pid)" 2>/dev/null; then
      echo "background.sh: a job is already running (pid $(cat $BG/pid))" >&2; exit 2
    fi
    rm -rf $BG && mkdir -p $BG/out
    echo "$2" >$BG/command
    setsid bash -c "$2; echo \$? >$BG/rc" >$BG/log 2>&1 </dev/null &
    echo $! >$BG/pid
    echo "background.sh: started pid $(cat $BG/pid): $2"
    ;;
  wait)
    limit=${2:-560}
    [ -f $BG/pid ] || { echo "background.sh: no job here (a fresh machine? the last one went back)"; exit 3; }
    t0=$(date +%s)
    while [ ! -f $BG/rc ] && [ $(($(date +%s) - t0)) -lt "$limit" ]; do sleep 5; done
    mkdir -p "$OUT" && cp -r $BG/out/. "$OUT"/ 2>/dev/null
    cp $BG/log "$OUT/background.log"
    if [ -f $BG/rc ]; then
      echo "background.sh: done, rc $(cat $BG/rc)"; tail -c 9000 $BG/log; exit "$(cat $BG/rc)"
    fi
    echo "background.sh: still running after ${limit} s; call wait again now"; tail -c 3000 $BG/log; exit 0
    ;;
  *) echo "usage: background.sh start COMMAND | wait [SECONDS]" >&2; exit 2 ;;
esac
