/* Gradcheck is the registry of ops. This test fails when
 *   - a kernel entry of TTT_KERNEL_LIST (include/ttt/backend.h) that a backend
 *     here implements is run by no gradcheck case on that backend's device
 *     (counted through the TTT_PROFILE wrapper, which sees every entry, per
 *     device kind, and only the calls that did the work: an entry that
 *     answered TTT_BACKEND_DECLINED to every call left it to the composed path,
 *     and a CPU entry run by the CPU reference of a CUDA case does not count
 *     for the CUDA entry of that name), or
 *   - an op declared in include/ttt/ops.h has no gradcheck case of its name
 *     (the case name up to a '(' or '+') and is not listed below with the reason.
 * So a new op or kernel comes with its gradient check, or with a stated
 * reason why it has none. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/internal.h"
#include "ttt/gradcheck.h"
#include "ttt/runtime.h"

/* Ops without a case of their own, and why. */
static const struct {
    const char *op, *why;
} EXEMPT[] = {
    {"gt", "a comparison: no gradient"},
    {"ge", "a comparison: no gradient"},
    {"eq", "a comparison: no gradient"},
    {"sign", "piecewise constant: zero gradient (its VJP is checked inside abs)"},
    {"detach", "stops gradients by definition"},
    {"add_scalar", "checked by the case scale+shift"},
    {"transpose", "checked by the cases reshape and contiguous (it is a permute)"},
    {"cast", "changes precision, which float64 finite differences cannot see through; its VJP (the cast back) "
             "is checked by the parity16 runs and test_lm's bf16 training"},
};

/* Kernel entries no gradient runs, and why. */
static const struct {
    ttt_kernel k;
    const char *why;
} KERNEL_EXEMPT[] = {
    {TTT_K_adamw, "an optimizer update, checked against PyTorch's formulas by test_optim"},
    {TTT_K_sgd, "an optimizer update, checked against PyTorch's formulas by test_optim"},
    {TTT_K_adamw_multi, "the multi-tensor AdamW: bit-identical to adamw per tensor, checked by test_fused"},
    {TTT_K_sumsq_multi, "gradient clipping's one-pass global norm: the composed ops' bits, checked by test_fused"},
    {TTT_K_scale_multi, "gradient clipping's multi-tensor scale: unary affine's bits, checked by test_fused"},
    {TTT_K_ttt_linear_step, "TTT-Linear's decode step: in place and without a gradient (inference), checked against the composed step by test_ttt_scan and on the emulator by emu_ttt_step"},
    {TTT_K_ttt_mlp_step, "TTT-MLP's decode step: in place and without a gradient (inference), checked like ttt_linear_step"},
};

static int has_case(const char *op) {
    for (int c = 0; c < ttt_gradcheck_count(); c++) {
        const char *name = ttt_gradcheck_name(c);
        const size_t n = strcspn(name, "(+"); /* "matmul(views)", "attn_mask+softmax" */
        if (strlen(op) == n && !strncmp(name, op, n)) return 1;
    }
    return 0;
}

static void public_ops(void) {
    /* ops.h beside this file's folder: tests/../include/ttt/ops.h */
    char path[4096];
    snprintf(path, sizeof path, "%s", __FILE__);
    char *slash = strrchr(path, '/');
    if (!slash) {
        CHECK_MSG(0, "cannot locate include/ttt/ops.h from %s", __FILE__);
        return;
    }
    *slash = 0;
    slash = strrchr(path, '/');
    snprintf(slash ? slash + 1 : path, sizeof path - (size_t)(slash ? slash + 1 - path : 0), "include/ttt/ops.h");
    FILE *f = fopen(path, "r");
    CHECK_MSG(f != NULL, "cannot open %s", path);
    if (!f) return;
    char line[1024];
    int n_ops = 0;
    while (fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "ttt_tensor *ttt_");
        if (!p || line[0] == ' ' || line[0] == '/' || line[0] == '*') continue;
        p += strlen("ttt_tensor *ttt_");
        char op[128];
        size_t n = strcspn(p, "(");
        if (n == 0 || n >= sizeof op || p[n] != '(') continue;
        memcpy(op, p, n);
        op[n] = 0;
        n_ops++;
        int exempt = 0;
        for (size_t i = 0; i < sizeof EXEMPT / sizeof EXEMPT[0]; i++) exempt |= !strcmp(EXEMPT[i].op, op);
        CHECK_MSG(has_case(op) || exempt,
                  "op ttt_%s (include/ttt/ops.h) has no gradcheck case: add one to src/check/gradcheck.c, or list "
                  "it in tests/test_op_registry.c with the reason",
                  op);
        CHECK_MSG(!(has_case(op) && exempt), "op ttt_%s has a gradcheck case: drop it from the exemptions", op);
    }
    fclose(f);
    CHECK_MSG(n_ops > 40, "only %d ops found in %s", n_ops, path);
}

static int implements(const ttt_backend *be, ttt_kernel k) {
    switch (k) {
#define IMPLEMENTS(name, params, args) \
    case TTT_K_##name: return be->name != NULL;
        TTT_KERNEL_LIST(IMPLEMENTS)
#undef IMPLEMENTS
    default: return 0;
    }
}

static void kernels_on(ttt_device device) {
    const ttt_backend *be = ttt_backend_for(device);
    if (!be || ttt_device_count(device) < 1) return;
    long long before[TTT_K_COUNT], declined[TTT_K_COUNT];
    for (int k = 0; k < TTT_K_COUNT; k++) {
        before[k] = ttt__profile_ran(device, (ttt_kernel)k);
        declined[k] = ttt__profile_declined(device, (ttt_kernel)k);
    }
    for (int c = 0; c < ttt_gradcheck_count(); c++) {
        ttt_gradcheck_result r;
        CHECK_MSG(ttt_gradcheck_run_on(c, 1, device, &r) == TTT_OK, "gradcheck %s failed on %s: %s", r.name, be->name,
                  r.msg);
    }
    for (int k = 0; k < TTT_K_COUNT; k++) {
        int exempt = 0;
        for (size_t i = 0; i < sizeof KERNEL_EXEMPT / sizeof KERNEL_EXEMPT[0]; i++) exempt |= (int)KERNEL_EXEMPT[i].k == k;
        if (!implements(be, (ttt_kernel)k) || exempt) continue;
        CHECK_MSG(ttt__profile_ran(device, (ttt_kernel)k) > before[k],
                  "kernel entry %s of the %s backend is run by no gradcheck case (src/check/gradcheck.c; %lld calls "
                  "declined)",
                  ttt_kernel_name((ttt_kernel)k), be->name, ttt__profile_declined(device, (ttt_kernel)k) - declined[k]);
    }
}

int main(void) {
    /* Profiled contexts count every kernel call; set before any context exists. */
    setenv("TTT_PROFILE", "1", 1);
    /* Every fused path on, whatever the caller's environment says: the kernels behind a switch (off by default,
     * as the CUDA SSD / linear-attention core, or switched off for a comparison) are entries too, and each
     * must be gradchecked. The CUDA switches are read once per process: set before any context exists. */
    setenv("TTT_FUSED", "1", 1);            /* 0: every op composes (context.c) */
    setenv("TTT_SSD_CUDA_FUSED", "1", 1);   /* ssd_chunk_fwd / _bwd on CUDA: opt-in (ssd_chunk.cu) */
    setenv("TTT_GDN_CUDA_FUSED", "1", 1);   /* gdn_chunk_fwd / _bwd on CUDA: on for heads <= 64 by default */
    setenv("TTT_MTTT_CUDA", "1", 1);        /* the mttt_mlp_* entries on CUDA: 0 makes them decline */
    setenv("TTT_CLIP_STEP_CUDA", "1", 1);   /* clip_step / _bwd on CUDA: on by default (cuda_optim.cu) */
    public_ops();
    kernels_on(TTT_CPU);
    kernels_on(TTT_CUDA); /* where a GPU is present: the fused attention kernels too */
    TEST_MAIN_END();
}
