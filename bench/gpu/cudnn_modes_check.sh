#!/usr/bin/env bash
# The cuDNN modes that keep a run's bits (docs/cudnn.md) on a GPU, in one device call: TTT_CUDNN=fwd (cuDNN's
# forward, our backward) and TTT_CUDNN=det (cuDNN's forward and its backward in the deterministic form). Where
# cuDNN is; build; test_attention_cudnn (every check, check_repeat among them: the forward repeats its bits, fwd's
# backward is ours bit for bit, det's repeats its bits and agrees with ours, ttt_attention + ttt_grad give the
# same bits twice; whether the default backward repeats is printed); the engine's attention parity with each
# (test_attention_fused: fused bf16 against the composed path in f64); then, while DEADLINE (seconds, default
# 540) allows, the table: causal bf16, B 1, H 12, d 64 / 128, T 2K..32K, forward and forward + backward, cuDNN
# both ways, det, fwd, our kernels, SDPA flash and SDPA's cuDNN backend. The LM with it: PARTS="lm lmcudnn" EAGER=0 bash bench/speed/run_table.sh (a second call).
# Logs in $OUT (default ./gpu-out).
set -uo pipefail
DEADLINE_DEFAULT=540
source bench/gpu/common.sh
cat "$OUT/cudnn_env.txt"
build_gpu test_attention_cudnn test_attention_fused || exit 1
grep -E "ttt: cuDNN" "$OUT/cmake.log"
status=0
CUDNN_LOGERR_DBG=1 CUDNN_LOGDEST_DBG="$OUT/cudnn_errors.log" TTT_CUDNN_VERBOSE=1 timeout 200 ./build/gpu/test_attention_cudnn \
  >"$OUT/cudnn_checks.txt" 2>&1
rc=$?
echo "test_attention_cudnn: exit $rc (77: skipped)"
grep -E "^(FAIL|ok   (second|declined))|^#|SKIP|passed|failed" "$OUT/cudnn_checks.txt" | head -30
[ "$rc" != 0 ] && status=1
[ -s "$OUT/cudnn_errors.log" ] && { echo "cuDNN logged errors, first lines:"; head -10 "$OUT/cudnn_errors.log"; }
grep -E "^(ok  |FAIL) (forward-only|deterministic|default)" "$OUT/cudnn_checks.txt"
for mode in fwd det; do
  TTT_CUDNN=$mode timeout 100 ./build/gpu/test_attention_fused --quick >"$OUT/fused_cudnn_$mode.txt" 2>&1 || status=1
  echo "test_attention_fused --quick with TTT_CUDNN=$mode: $(grep -cE '^FAIL' "$OUT/fused_cudnn_$mode.txt") FAIL lines; $(tail -1 "$OUT/fused_cudnn_$mode.txt")"
  grep -E "^FAIL" "$OUT/fused_cudnn_$mode.txt" | head -5
done
if [ "$(left)" -gt 200 ]; then
  # a cap for the T x T workspaces of cuDNN's backwards (the deterministic one: 6 bytes an element, 19 GB at 16K)
  TTT_CUDNN_WS_MAX=24576 TTT_CUDNN_VERBOSE=1 timeout $(($(left) - 60)) ./build/gpu/test_attention_cudnn --bench >"$OUT/cudnn_engine.csv" \
    2>"$OUT/cudnn_bench_stderr.txt" || status=1
  grep -E "^#" "$OUT/cudnn_engine.csv"
  timeout "$(left)" python3 bench/gpu/cudnn_attention_bench.py "$OUT/cudnn_engine.csv" 2>&1 | tee "$OUT/cudnn_table.md"
fi
echo "total: $(($(date +%s) - t0)) s"
exit $status
