#!/usr/bin/env bash
# cuDNN's backward cut to fit the workspace cap (attention_cudnn.cu bwd_cut, TTT_CUDNN_CUT=1; docs/cudnn.md), in one
# device call: build; test_attention_cudnn (check_cut: a backward over the cap in groups of heads and in blocks of
# queries, det and mode 1, against the same call whole, and twice for the same bits; every other check too); then,
# while DEADLINE (seconds, default 540) allows, causal bf16 attention 2K..128K, d 64 / 128, forward and forward +
# backward with TTT_CUDNN=det TTT_CUDNN_CUT=1 against SDPA flash (bench/gpu/run_attention.sh, no harness).
# Logs in $OUT (default ./gpu-out).
set -uo pipefail
DEADLINE_DEFAULT=540
source bench/gpu/common.sh
build_gpu test_attention_cudnn test_attention_fused || exit 1
status=0
TTT_CUDNN_VERBOSE=0 timeout 150 ./build/gpu/test_attention_cudnn >"$OUT/cudnn_checks.txt" 2>&1
rc=$?
echo "test_attention_cudnn: exit $rc (77: skipped), $(left) s left"
grep -E "^FAIL|cut into|passed|failed" "$OUT/cudnn_checks.txt" | head -30
[ "$rc" != 0 ] && status=1
if [ "$(left)" -gt 120 ]; then
  TTT_CUDNN=det TTT_CUDNN_CUT=1 CHECKS=0 F32=0 HARNESS=0 OUT=$OUT/attn timeout $(($(left) - 10)) bash bench/gpu/run_attention.sh 2>&1 |
    tail -45 || status=1
fi
echo "total: $(($(date +%s) - t0)) s"
exit $status
