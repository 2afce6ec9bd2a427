/* The fused paths of the training step (issue 13) against the paths they
 * replace, on the CPU and, where a GPU is present, on CUDA:
 *   - the multi-tensor AdamW (adamw_multi) gives the bits of adamw per tensor;
 *   - gradient clipping's one-pass global norm (sumsq_multi) and its
 *     multi-tensor scale (scale_multi) give the bits of the composed ops
 *     (mul, sum, cast, add per parameter; unary affine per parameter);
 *   - ttt_swiglu's forward and fused first-order backward give the bits of
 *     ttt_mul(ttt_silu(a), b) in f32 and f64 (bf16: within bf16 rounding of
 *     the f32 values), and its second order matches the composed graph's;
 *   - RMS and layer norm with a weight (norm_affine, norm_affine_bwd) give the
 *     bits of the norm followed by a mul, in every dtype, forward and first
 *     order; the second order matches the composed graph's;
 *   - a tiny LM's training steps (SwiGLU, norms, clipping, AdamW) with the fused
 *     paths on and off (TTT_FUSED=0) give the same bits in f32;
 *   - TTT-E2E's clipped inner step (ttt_clip_step, one kernel each way) against its composed ops in f64 and f32:
 *     outputs, first order (the backward kernel), second order (the VJP in ops); clipping on some sequences and
 *     not others, off, on all, a tie at the clip, an all-zero sequence, one tensor and several, a cotangent left
 *     NULL, several chunks per sequence; argument errors;
 *   - under create_graph the RMS norm, SwiGLU and the cross-entropy record their first-order kernel as a node
 *     (second order: a kernel; third: a composed formula): orders 2 and 3 match the composed graph's in f64.
 * With TTT_PROFILE=1 (set here) it also counts the kernel entries: one
 * adamw_multi call per step instead of one adamw per parameter. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/internal.h"
#include "ttt/autodiff.h"
#include "ttt/lm.h"
#include "ttt/ops.h"
#include "ttt/optim.h"
#include "ttt/runtime.h"

static uint64_t g_rng = 0x1234567887654321ull;
static double rnorm(void) {
    double s = 0;
    for (int i = 0; i < 4; i++) { /* a sum of uniforms: roughly normal, and cheap */
        g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
        s += (double)(g_rng >> 11) * (1.0 / 9007199254740992.0) - 0.5;
    }
    return s * 1.7;
}

static ttt_tensor *randt(ttt_ctx *ctx, ttt_dtype dt, int ndim, const int64_t *shape, double scale) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    double *v = malloc(sizeof(double) * (size_t)(n + 1));
    for (int64_t i = 0; i < n; i++) v[i] = scale * rnorm();
    ttt_tensor *t = ttt_cast(ctx, ttt_from_host(ctx, TTT_F64, ndim, shape, v), dt);
    free(v);
    return t;
}

/* The values of t widened to f64 (exact for f32 and bf16), for bitwise comparisons. */
static double *values(ttt_ctx *ctx, const ttt_tensor *t) {
    double *v = malloc(sizeof(double) * (size_t)(ttt_numel(t) + 1));
    if (ttt_copy_to_host(ctx, t, v, TTT_F64) != TTT_OK) {
        free(v);
        return NULL;
    }
    return v;
}

static int same_bits(ttt_ctx *ctx, const ttt_tensor *a, const ttt_tensor *b) {
    if (!a || !b || ttt_numel(a) != ttt_numel(b)) return 0;
    double *x = values(ctx, a), *y = values(ctx, b);
    int same = x && y && !memcmp(x, y, sizeof(double) * (size_t)ttt_numel(a));
    free(x), free(y);
    return same;
}

/* max |a - b| / max |b| */
static double rel_diff(ttt_ctx *ctx, const ttt_tensor *a, const ttt_tensor *b) {
    double *x = values(ctx, a), *y = values(ctx, b), worst = 0, scale = 0;
    for (int64_t i = 0; x && y && i < ttt_numel(a); i++) {
        worst = fmax(worst, fabs(x[i] - y[i]));
        scale = fmax(scale, fabs(y[i]));
    }
    int ok = x && y;
    free(x), free(y);
    return ok ? worst / (scale + 1e-300) : INFINITY;
}

static const char *DEV[] = {"cpu", "cuda"};

/* ---- SwiGLU: fused against composed ------------------------------------------------------------------- */

/* y = swiglu(a, b), loss = sum(y * r); grads of a, b, and a second-order term, with the fused paths on or off */
typedef struct {
    ttt_tensor *y, *ga, *gb, *ha, *hb;
} swiglu_out;

static int swiglu_run(ttt_ctx *ctx, ttt_tensor *a, ttt_tensor *b, ttt_tensor *r, ttt_tensor *u, int fused, int order2,
                      swiglu_out *o) {
    ttt__set_fused(ctx, fused);
    ttt_set_requires_grad(a, 1);
    ttt_set_requires_grad(b, 1);
    ttt_tensor *ins[2] = {a, b}, *g[2], *h[2];
    o->y = ttt_swiglu(ctx, a, b);
    ttt_tensor *loss = o->y ? ttt_sum(ctx, ttt_mul(ctx, o->y, r), 0, NULL, 0) : NULL;
    /* first order without create_graph: the fused backward kernel when fused */
    if (!loss || ttt_grad(ctx, 1, &loss, NULL, 2, ins, g, 0) != TTT_OK) return TTT_ERR;
    o->ga = g[0], o->gb = g[1];
    o->ha = o->hb = NULL;
    if (order2) { /* create_graph: the composed VJP, then <grad, u> differentiated again */
        ttt_tensor *gg[2];
        if (ttt_grad(ctx, 1, &loss, NULL, 2, ins, gg, 1) != TTT_OK) return TTT_ERR;
        ttt_tensor *s = ttt_add(ctx, ttt_sum(ctx, ttt_mul(ctx, gg[0], u), 0, NULL, 0),
                                ttt_sum(ctx, ttt_mul(ctx, gg[1], r), 0, NULL, 0));
        if (!s || ttt_grad(ctx, 1, &s, NULL, 2, ins, h, 0) != TTT_OK) return TTT_ERR;
        o->ha = h[0], o->hb = h[1];
    }
    ttt__set_fused(ctx, 1);
    return TTT_OK;
}

static void test_swiglu(ttt_ctx *ctx, ttt_device dev, ttt_dtype dt) {
    /* odd sizes, a size that splits into threads / vectors, and a view whose data starts one element in */
    const int64_t shapes[][2] = {{7, 13}, {64, 1000}, {9, 13}};
    for (int si = 0; si < 3; si++) {
        const ttt_mark_t mark = ttt_mark(ctx);
        ttt_tensor *a = randt(ctx, dt, 2, shapes[si], 2.0), *b = randt(ctx, dt, 2, shapes[si], 1.0);
        ttt_tensor *r = randt(ctx, dt, 2, shapes[si], 1.0), *u = randt(ctx, dt, 2, shapes[si], 1.0);
        if (si == 2) { /* rows 1..: dense views at an odd element offset (no 16-byte alignment) */
            a = ttt_slice(ctx, a, 0, 1, 9, 1), b = ttt_slice(ctx, b, 0, 1, 9, 1);
            r = ttt_slice(ctx, r, 0, 1, 9, 1), u = ttt_slice(ctx, u, 0, 1, 9, 1);
        }
        swiglu_out f, c;
        const int order2 = dt != TTT_BF16 && si != 1;
        int rc = swiglu_run(ctx, a, b, r, u, 1, order2, &f);
        if (rc == TTT_OK) rc = swiglu_run(ctx, a, b, r, u, 0, order2, &c);
        CHECK_MSG(rc == TTT_OK, "swiglu %s %s: %s", DEV[dev], ttt_dtype_name(dt), ttt_error(ctx));
        if (rc != TTT_OK) {
            ttt_release(ctx, mark);
            continue;
        }
        if (dt == TTT_BF16) {
            /* bf16 rounds once where the composed ops round twice: compare both with an f32 reference */
            ttt_tensor *a32 = ttt_detach(ctx, ttt_cast(ctx, a, TTT_F32)), *b32 = ttt_detach(ctx, ttt_cast(ctx, b, TTT_F32));
            swiglu_out ref;
            rc = swiglu_run(ctx, a32, b32, ttt_cast(ctx, r, TTT_F32), ttt_cast(ctx, u, TTT_F32), 0, 0, &ref);
            CHECK(rc == TTT_OK);
            if (rc == TTT_OK) {
                const double ey = rel_diff(ctx, f.y, ref.y), ea = rel_diff(ctx, f.ga, ref.ga), eb = rel_diff(ctx, f.gb, ref.gb);
                const double cy = rel_diff(ctx, c.y, ref.y), ca = rel_diff(ctx, c.ga, ref.ga), cb = rel_diff(ctx, c.gb, ref.gb);
                printf("swiglu %s bf16 [%lld,%lld]: fused vs f32 %.2g %.2g %.2g, composed vs f32 %.2g %.2g %.2g (y, da, db)\n",
                       DEV[dev], (long long)shapes[si][0], (long long)shapes[si][1], ey, ea, eb, cy, ca, cb);
                CHECK_MSG(ey <= 8e-3 && ea <= 8e-3 && eb <= 8e-3, "bf16 fused %g %g %g", ey, ea, eb);
            }
        } else {
            CHECK_MSG(same_bits(ctx, f.y, c.y), "swiglu %s %s [%lld,%lld]: forward differs from silu(a) * b", DEV[dev],
                      ttt_dtype_name(dt), (long long)shapes[si][0], (long long)shapes[si][1]);
            CHECK_MSG(same_bits(ctx, f.ga, c.ga) && same_bits(ctx, f.gb, c.gb),
                      "swiglu %s %s [%lld,%lld]: fused backward differs from the composed one (da %g, db %g)", DEV[dev],
                      ttt_dtype_name(dt), (long long)shapes[si][0], (long long)shapes[si][1], rel_diff(ctx, f.ga, c.ga),
                      rel_diff(ctx, f.gb, c.gb));
            if (order2) {
                const double e = fmax(rel_diff(ctx, f.ha, c.ha), rel_diff(ctx, f.hb, c.hb));
                CHECK_MSG(e <= (dt == TTT_F64 ? 1e-13 : 1e-5), "swiglu %s %s second order: %g", DEV[dev], ttt_dtype_name(dt), e);
            }
        }
        ttt_release(ctx, mark);
    }
    /* errors name the problem */
    ttt_tensor *x = ttt_zeros(ctx, dt, TTT_DIMS(2, 3)), *y = ttt_zeros(ctx, dt, TTT_DIMS(3));
    CHECK(ttt_swiglu(ctx, x, y) == NULL && strstr(ttt_error(ctx), "swiglu") && strstr(ttt_error(ctx), "one shape"));
    ttt_step_reset(ctx);
}

/* ---- the norm times its weight (norm_affine): fused against norm, then mul ------------------------------------ */

static int norm_run(ttt_ctx *ctx, int layer, ttt_tensor *x, ttt_tensor *w, ttt_tensor *r, int fused, int order2, swiglu_out *o) {
    ttt__set_fused(ctx, fused);
    ttt_set_requires_grad(x, 1);
    ttt_set_requires_grad(w, 1);
    ttt_tensor *ins[2] = {x, w}, *g[2], *h[2];
    o->y = layer ? ttt_layer_norm(ctx, x, w, NULL, 1e-5) : ttt_rms_norm(ctx, x, w, 1e-6);
    ttt_tensor *loss = o->y ? ttt_sum(ctx, ttt_mul(ctx, o->y, r), 0, NULL, 0) : NULL;
    if (!loss || ttt_grad(ctx, 1, &loss, NULL, 2, ins, g, 0) != TTT_OK) return TTT_ERR;
    o->ga = g[0], o->gb = g[1];
    o->ha = o->hb = NULL;
    if (order2) {
        ttt_tensor *gg[2];
        if (ttt_grad(ctx, 1, &loss, NULL, 2, ins, gg, 1) != TTT_OK) return TTT_ERR;
        ttt_tensor *s = ttt_add(ctx, ttt_sum(ctx, ttt_mul(ctx, gg[0], ttt_detach(ctx, r)), 0, NULL, 0),
                                ttt_sum(ctx, ttt_mul(ctx, gg[1], gg[1]), 0, NULL, 0));
        if (!s || ttt_grad(ctx, 1, &s, NULL, 2, ins, h, 0) != TTT_OK) return TTT_ERR;
        o->ha = h[0], o->hb = h[1];
    }
    ttt__set_fused(ctx, 1);
    return TTT_OK;
}

static void test_norm_affine(ttt_ctx *ctx, ttt_device dev, ttt_dtype dt) {
    /* odd rows, the LM's width, rows past the GPU's warp-per-row limit (4096), QK-norm's [B, T, H, hd] */
    const int64_t shapes[][4] = {{5, 7, 0, 0}, {64, 768, 0, 0}, {3, 5000, 0, 0}, {2, 3, 4, 64}};
    for (int layer = 0; layer < 2; layer++)
        for (int si = 0; si < 4; si++) {
            const ttt_mark_t mark = ttt_mark(ctx);
            const int nd = shapes[si][2] ? 4 : 2;
            const int64_t D = shapes[si][nd - 1];
            ttt_tensor *x = randt(ctx, dt, nd, shapes[si], 1.5), *r = randt(ctx, dt, nd, shapes[si], 1.0);
            ttt_tensor *w = randt(ctx, dt, 1, &D, 1.0);
            swiglu_out f, c;
            const int order2 = dt != TTT_BF16 && si != 2;
            int rc = norm_run(ctx, layer, x, w, r, 1, order2, &f);
            if (rc == TTT_OK) rc = norm_run(ctx, layer, x, w, r, 0, order2, &c);
            CHECK_MSG(rc == TTT_OK, "norm %s %s: %s", DEV[dev], ttt_dtype_name(dt), ttt_error(ctx));
            if (rc == TTT_OK) {
                /* every dtype, bf16 too: the fused kernels round where norm and mul round */
                CHECK_MSG(same_bits(ctx, f.y, c.y), "%s_norm %s %s shape %d: forward differs from norm then mul (%g)",
                          layer ? "layer" : "rms", DEV[dev], ttt_dtype_name(dt), si, rel_diff(ctx, f.y, c.y));
                CHECK_MSG(same_bits(ctx, f.ga, c.ga) && same_bits(ctx, f.gb, c.gb),
                          "%s_norm %s %s shape %d: fused backward differs from the composed one (dx %g, dgamma %g)",
                          layer ? "layer" : "rms", DEV[dev], ttt_dtype_name(dt), si, rel_diff(ctx, f.ga, c.ga),
                          rel_diff(ctx, f.gb, c.gb));
                if (order2) {
                    const double e = fmax(rel_diff(ctx, f.ha, c.ha), rel_diff(ctx, f.hb, c.hb));
                    CHECK_MSG(e <= (dt == TTT_F64 ? 1e-12 : 1e-4), "%s_norm %s %s second order: %g", layer ? "layer" : "rms",
                              DEV[dev], ttt_dtype_name(dt), e);
                }
            }
            ttt_release(ctx, mark);
        }
    printf("norm %s %s: rms and layer norm with a weight, fused vs composed, 4 shapes checked\n", DEV[dev], ttt_dtype_name(dt));
    ttt_step_reset(ctx);
}

/* ---- second and third order: the recorded backward nodes against the composed graph ---------------------------
 * Under create_graph the RMS norm and SwiGLU record their fused first-order kernel as a node whose VJP is the
 * backend's second order (norm_bwd2, swiglu_bwd2) with grad mode off, and a composed formula with it on. The
 * Hessian-vector product taken without create_graph runs the kernel; taken with create_graph it runs the formula,
 * and differentiating that once more gives a third order. All three against TTT_FUSED=0's composed graph. */
typedef ttt_tensor *(*fn2)(ttt_ctx *ctx, ttt_tensor *const *in);
static ttt_tensor *f_rms(ttt_ctx *ctx, ttt_tensor *const *in) { return ttt_rms_norm(ctx, in[0], in[1], 1e-6); }
static ttt_tensor *f_rms_plain(ttt_ctx *ctx, ttt_tensor *const *in) {
    return ttt_mul(ctx, ttt_rms_norm(ctx, in[0], NULL, 1e-6), in[1]);
}
static ttt_tensor *f_swiglu(ttt_ctx *ctx, ttt_tensor *const *in) { return ttt_swiglu(ctx, in[0], in[1]); }
static ttt_tensor *g_targets; /* f_ce's targets: one row ignored */
static ttt_tensor *f_ce(ttt_ctx *ctx, ttt_tensor *const *in) { /* per-row losses weighted by in[1] [rows] */
    return ttt_mul(ctx, ttt_cross_entropy_rows(ctx, in[0], g_targets, -100), in[1]);
}

/* out[0..1]: the HVP without create_graph; out[2..3]: with it; out[4..5]: the third order along u2 */
static int orders_run(ttt_ctx *ctx, fn2 f, ttt_tensor *const *in, ttt_tensor *r, ttt_tensor *const *u1,
                      ttt_tensor *const *u2, int fused, ttt_tensor **out) {
    ttt__set_fused(ctx, fused);
    ttt_tensor *ins[2] = {in[0], in[1]}, *g[2], *h[2];
    for (int i = 0; i < 2; i++) ttt_set_requires_grad(ins[i], 1);
    ttt_tensor *y = f(ctx, ins), *loss = y ? ttt_sum(ctx, ttt_mul(ctx, y, r), 0, NULL, 0) : NULL;
    int rc = loss ? ttt_grad(ctx, 1, &loss, NULL, 2, ins, g, 1) : TTT_ERR;
    ttt_tensor *s = rc ? NULL : ttt_add(ctx, ttt_sum(ctx, ttt_mul(ctx, g[0], u1[0]), 0, NULL, 0),
                                        ttt_sum(ctx, ttt_mul(ctx, g[1], u1[1]), 0, NULL, 0));
    if (!s || ttt_grad(ctx, 1, &s, NULL, 2, ins, out, 0) != TTT_OK || ttt_grad(ctx, 1, &s, NULL, 2, ins, h, 1) != TTT_OK)
        rc = TTT_ERR;
    out[2] = rc ? NULL : h[0], out[3] = rc ? NULL : h[1];
    ttt_tensor *t = rc ? NULL : ttt_add(ctx, ttt_sum(ctx, ttt_mul(ctx, h[0], u2[0]), 0, NULL, 0),
                                        ttt_sum(ctx, ttt_mul(ctx, h[1], u2[1]), 0, NULL, 0));
    if (!t || ttt_grad(ctx, 1, &t, NULL, 2, ins, out + 4, 0) != TTT_OK) rc = TTT_ERR;
    ttt__set_fused(ctx, 1);
    return rc;
}

static void test_higher_orders(ttt_ctx *ctx, ttt_device dev) {
    static const struct {
        const char *name;
        fn2 f;
        int vector_b; /* in[1] is a [D] weight; 2: a [rows] weight of the cross-entropy's rows */
    } cases[] = {{"rms_norm", f_rms, 1}, {"rms_norm(no weight)", f_rms_plain, 0}, {"swiglu", f_swiglu, 0},
                 {"cross_entropy_rows", f_ce, 2}};
    static const ttt_kernel kernels[] = {TTT_K_norm_bwd2, TTT_K_norm_bwd2, TTT_K_swiglu_bwd2, TTT_K_cross_entropy_bwd2};
    const int64_t shapes[][2] = {{5, 7}, {33, 96}};
    int64_t kernel_calls[3] = {0, 0, 0};
    for (int c = 0; c < 4; c++)
        for (int si = 0; si < 2; si++) {
            const ttt_mark_t mark = ttt_mark(ctx);
            const int64_t D = shapes[si][1];
            const int nb = cases[c].vector_b ? 1 : 2;
            const int64_t *sb = cases[c].vector_b == 2 ? shapes[si] : cases[c].vector_b ? &D : shapes[si];
            int32_t ids[40];
            for (int i = 0; i < shapes[si][0]; i++) ids[i] = i == 1 ? -100 : (int32_t)((i * 7 + 3) % D);
            g_targets = ttt_from_host(ctx, TTT_I32, 1, shapes[si], ids);
            ttt_tensor *in[2] = {randt(ctx, TTT_F64, 2, shapes[si], 1.5), randt(ctx, TTT_F64, nb, sb, 1.0)};
            ttt_tensor *r = randt(ctx, TTT_F64, cases[c].vector_b == 2 ? 1 : 2, shapes[si], 1.0); /* y's shape */
            ttt_tensor *u1[2] = {randt(ctx, TTT_F64, 2, shapes[si], 1.0), randt(ctx, TTT_F64, nb, sb, 1.0)};
            ttt_tensor *u2[2] = {randt(ctx, TTT_F64, 2, shapes[si], 1.0), randt(ctx, TTT_F64, nb, sb, 1.0)};
            ttt_tensor *f[6], *k[6];
            const ttt_kernel kk = kernels[c];
            const long long before = ttt__profile_ran(dev, kk);
            int rc = orders_run(ctx, cases[c].f, in, r, u1, u2, 1, f);
            kernel_calls[c < 2 ? 0 : c - 1] += ttt__profile_ran(dev, kk) - before;
            if (rc == TTT_OK) rc = orders_run(ctx, cases[c].f, in, r, u1, u2, 0, k);
            CHECK_MSG(rc == TTT_OK, "%s %s: %s", cases[c].name, DEV[dev], ttt_error(ctx));
            for (int i = 0; rc == TTT_OK && i < 6; i++) {
                const double e = rel_diff(ctx, f[i], k[i]);
                CHECK_MSG(e <= 1e-12, "%s %s [%lld,%lld]: %s order, input %d: %g from the composed graph", cases[c].name,
                          DEV[dev], (long long)shapes[si][0], (long long)D,
                          i < 2 ? "second (kernel)" : i < 4 ? "second (formula)" : "third", i % 2, e);
            }
            ttt_release(ctx, mark);
        }
    /* the kernels did run (one HVP per shape without create_graph) */
    CHECK_MSG(kernel_calls[0] >= 4 && kernel_calls[1] >= 2 && kernel_calls[2] >= 2,
              "norm_bwd2 ran %lld times, swiglu_bwd2 %lld, cross_entropy_bwd2 %lld", (long long)kernel_calls[0],
              (long long)kernel_calls[1], (long long)kernel_calls[2]);
    printf("orders 2 and 3 %s f64: rms_norm, swiglu, cross_entropy_rows, recorded backward nodes vs composed (norm_bwd2 "
           "%lld calls, swiglu_bwd2 %lld, cross_entropy_bwd2 %lld)\n", DEV[dev], (long long)kernel_calls[0],
           (long long)kernel_calls[1], (long long)kernel_calls[2]);
    ttt_step_reset(ctx);
}

/* ---- the optimizer and clipping: multi-tensor against per-tensor ---------------------------------------------- */

enum { NP = 150 }; /* more than one launch's table on CUDA (64 for AdamW, 96 for the sum of squares) */

static int64_t param_size(int i) { return i == 7 ? 300 * 701 : i % 7 == 0 ? 1 : (i * 37) % 500 + 1; }

/* n parameters of dtype dt, the same values in set A and set B */
static void make_params(ttt_ctx *ctx, ttt_dtype dt, ttt_tensor **A, ttt_tensor **B) {
    for (int i = 0; i < NP; i++) {
        const int64_t n = param_size(i);
        A[i] = ttt_param(ctx, dt, TTT_DIMS(n), "a");
        B[i] = ttt_param(ctx, dt, TTT_DIMS(n), "b");
        ttt_tensor *v = randt(ctx, dt, 1, &n, 1.0);
        ttt_assign(ctx, A[i], v);
        ttt_assign(ctx, B[i], v);
    }
    ttt_step_reset(ctx);
}

/* the same random gradients in A and B (those with one) */
static void set_grads(ttt_ctx *ctx, ttt_tensor **A, ttt_tensor **B, double scale) {
    for (int i = 0; i < NP; i++) {
        if (!A[i]->grad) continue;
        const int64_t n = ttt_numel(A[i]);
        ttt_tensor *g = randt(ctx, A[i]->dtype, 1, &n, scale * (1 + i % 5));
        ttt_assign(ctx, A[i]->grad, g);
        ttt_assign(ctx, B[i]->grad, g);
    }
    ttt_step_reset(ctx);
}

static int all_same(ttt_ctx *ctx, ttt_tensor *const *A, ttt_tensor *const *B, int n) {
    for (int i = 0; i < n; i++)
        if ((A[i] == NULL) != (B[i] == NULL) || (A[i] && !same_bits(ctx, A[i], B[i]))) return 0;
    return 1;
}

static void test_optimizer(ttt_ctx *ctx, ttt_device dev, ttt_dtype dt) {
    ttt_tensor *A[NP], *B[NP];
    make_params(ctx, dt, A, B);
    /* parameters 5, 16, 27, ... never get a gradient (skipped by the optimizer) */
    ttt_tensor *ga[NP], *gb[NP];
    int k = 0;
    for (int i = 0; i < NP; i++)
        if (i % 11 != 5) ga[k] = A[i], gb[k++] = B[i];
    CHECK(ttt_zero_grad(ctx, k, ga) == TTT_OK && ttt_zero_grad(ctx, k, gb) == TTT_OK);
    int decay[NP];
    for (int i = 0; i < NP; i++) decay[i] = i % 3 != 0;
    const ttt_optim_config oc = {.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
    ttt_optimizer *oa = ttt_adamw_new(ctx, NP, A, decay, &oc), *ob = ttt_adamw_new(ctx, NP, B, decay, &oc);
    CHECK(oa && ob);
    if (!oa || !ob) return;
    const long long multi0 = ttt__profile_calls(TTT_K_adamw_multi), single0 = ttt__profile_calls(TTT_K_adamw);
    for (int s = 0; s < 3; s++) {
        set_grads(ctx, A, B, 0.5);
        /* clipping: the norm and the scaled gradients */
        double na = 0, nb = 0;
        const double max_norm = s == 1 ? 1e6 : 5.0; /* step 1 does not clip */
        ttt__set_fused(ctx, 1);
        CHECK(ttt_clip_grad_norm(ctx, NP, A, max_norm, &na) == TTT_OK);
        ttt__set_fused(ctx, 0);
        CHECK(ttt_clip_grad_norm(ctx, NP, B, max_norm, &nb) == TTT_OK);
        CHECK_MSG(!memcmp(&na, &nb, sizeof na), "clip %s %s step %d: norm %.17g (fused) vs %.17g (composed)", DEV[dev],
                  ttt_dtype_name(dt), s, na, nb);
        CHECK_MSG(na > 5.0, "step %d: the gradients' norm %g should exceed the clipping threshold", s, na);
        ttt_tensor *GA[NP], *GB[NP];
        for (int i = 0; i < NP; i++) GA[i] = A[i]->grad, GB[i] = B[i]->grad;
        CHECK_MSG(all_same(ctx, GA, GB, NP), "clip %s %s step %d: clipped gradients differ", DEV[dev], ttt_dtype_name(dt), s);
        /* AdamW */
        ttt__set_fused(ctx, 1);
        CHECK(ttt_optimizer_step(oa, -1) == TTT_OK);
        ttt__set_fused(ctx, 0);
        CHECK(ttt_optimizer_step(ob, -1) == TTT_OK);
        ttt__set_fused(ctx, 1);
        CHECK_MSG(all_same(ctx, A, B, NP), "adamw %s %s step %d: parameters differ between multi-tensor and per-tensor",
                  DEV[dev], ttt_dtype_name(dt), s);
        int ns;
        ttt_tensor *const *sa = ttt_optimizer_state(oa, &ns), *const *sb = ttt_optimizer_state(ob, &ns);
        CHECK_MSG(all_same(ctx, sa, sb, ns), "adamw %s %s step %d: moments differ", DEV[dev], ttt_dtype_name(dt), s);
    }
    if (ttt__profile_enabled()) {
        const long long multi = ttt__profile_calls(TTT_K_adamw_multi) - multi0;
        const long long single = ttt__profile_calls(TTT_K_adamw) - single0;
        printf("adamw %s %s: 3 steps of %d parameters (%d with gradients): %lld adamw_multi calls (fused), %lld adamw "
               "calls (per tensor)\n",
               DEV[dev], ttt_dtype_name(dt), NP, k, multi, single);
        CHECK_MSG(multi == 3 && single == 3LL * k, "adamw_multi %lld, adamw %lld", multi, single);
    }
    ttt_optimizer_free(oa);
    ttt_optimizer_free(ob);
    for (int i = 0; i < NP; i++) ttt_persistent_free(ctx, A[i]), ttt_persistent_free(ctx, B[i]);
}

/* A non-finite gradient gives a non-finite norm on both paths; an empty list gives 0. */
static void test_clip_edges(ttt_ctx *ctx) {
    ttt_clear_error(ctx); /* a NaN norm with a message recorded reads as a failed call */
    ttt_tensor *p[2] = {ttt_param(ctx, TTT_F32, TTT_DIMS(5), "p0"), ttt_param(ctx, TTT_F32, TTT_DIMS(3), "p1")};
    ttt_zero_grad(ctx, 2, p);
    ttt_assign(ctx, p[1]->grad, ttt_from_host(ctx, TTT_F64, TTT_DIMS(3), (double[]){1, NAN, 2}));
    for (int fused = 1; fused >= 0; fused--) {
        double norm = 0;
        ttt__set_fused(ctx, fused);
        CHECK(ttt_clip_grad_norm(ctx, 2, p, 1.0, &norm) == TTT_OK && isnan(norm));
        CHECK(ttt_clip_grad_norm(ctx, 0, NULL, 1.0, &norm) == TTT_OK && norm == 0);
    }
    ttt__set_fused(ctx, 1);
    ttt_persistent_free(ctx, p[0]), ttt_persistent_free(ctx, p[1]);
    ttt_step_reset(ctx);
}

/* ---- TTT-E2E's clipped inner step (ttt_clip_step): the kernels against the composed ops -------------------------- */

enum { CLIP_N = 3 };
typedef struct {
    ttt_tensor *out[CLIP_N], *grad[2 * CLIP_N], *hess[2 * CLIP_N];
} clip_out;

/* out = clip_step(w, g), loss = sum over the outputs in `used` of <out_i, r_i>; the gradients of w and g without
 * create_graph (the fused backward kernel when fused) and, order2, the gradient of <grad, u> after a create_graph
 * pass (the VJP in ops). The fused run must call each kernel once, the composed run neither. */
static int clip_run(ttt_ctx *ctx, int n, ttt_tensor **w, ttt_tensor **g, ttt_tensor **r, ttt_tensor **u, unsigned used,
                    double eta, double clip, int fused, int order2, clip_out *o) {
    const long long f0 = ttt__profile_calls(TTT_K_clip_step), b0 = ttt__profile_calls(TTT_K_clip_step_bwd);
    ttt__set_fused(ctx, fused);
    ttt_tensor *ins[2 * CLIP_N], *loss = NULL;
    for (int i = 0; i < n; i++) {
        ttt_set_requires_grad(w[i], 1), ttt_set_requires_grad(g[i], 1);
        ins[i] = w[i], ins[n + i] = g[i];
    }
    int rc = ttt_clip_step(ctx, n, w, g, eta, clip, o->out);
    for (int i = 0; i < n && rc == TTT_OK; i++) {
        if (!(used >> i & 1)) continue;
        ttt_tensor *t = ttt_sum(ctx, ttt_mul(ctx, o->out[i], r[i]), 0, NULL, 0);
        loss = loss ? ttt_add(ctx, loss, t) : t;
    }
    if (rc == TTT_OK && (!loss || ttt_grad(ctx, 1, &loss, NULL, 2 * n, ins, o->grad, 0) != TTT_OK)) rc = TTT_ERR;
    const long long f1 = ttt__profile_calls(TTT_K_clip_step), b1 = ttt__profile_calls(TTT_K_clip_step_bwd);
    if (rc == TTT_OK && order2) {
        ttt_tensor *gg[2 * CLIP_N], *sum = NULL;
        rc = ttt_grad(ctx, 1, &loss, NULL, 2 * n, ins, gg, 1);
        for (int i = 0; i < 2 * n && rc == TTT_OK; i++) {
            ttt_tensor *t = ttt_sum(ctx, ttt_mul(ctx, gg[i], u[i % n]), 0, NULL, 0);
            sum = sum ? ttt_add(ctx, sum, t) : t;
        }
        if (rc == TTT_OK && !sum) rc = TTT_ERR;
        else if (rc == TTT_OK && sum->requires_grad) rc = ttt_grad(ctx, 1, &sum, NULL, 2 * n, ins, o->hess, 0);
        else /* no clip: the gradient is linear in the cotangents, constant */
            for (int i = 0; i < 2 * n && rc == TTT_OK; i++) rc = (o->hess[i] = ttt_zeros_like(ctx, ins[i])) ? TTT_OK : TTT_ERR;
    }
    ttt__set_fused(ctx, 1);
    CHECK_MSG(rc != TTT_OK || (fused ? f1 - f0 == 1 && b1 - b0 == 1 : f1 == f0 && b1 == b0),
              "clip_step (fused %d): %lld forward and %lld backward kernel calls", fused, f1 - f0, b1 - b0);
    return rc;
}

/* A [B, ...] tensor of normal draws times scale[b] on sequence b (host: its values) */
static ttt_tensor *clip_tensor(ttt_ctx *ctx, ttt_dtype dt, int ndim, const int64_t *shape, const double *scale,
                               double *host) {
    int64_t k = 1;
    for (int d = 0; d < ndim; d++) k *= shape[d];
    for (int64_t j = 0; j < k; j++) host[j] = rnorm() * scale[j / (k / shape[0])];
    return ttt_cast(ctx, ttt_from_host(ctx, TTT_F64, ndim, shape, host), dt);
}

static void test_clip_step(ttt_ctx *ctx, ttt_device dev, ttt_dtype dt) {
    /* the shapes of each case (B = 2 sequences), the outputs its loss reads, its clip: 0 sequence 0 clipped and 1
     * not, 1 off (clip 0), 2 neither binds, 3 both bind, 4 sequence 0 exactly at the clip (a tie: clipped, as the
     * composed ops' ttt_maximum has it), 5 sequence 1's g all zero */
    static const struct {
        int n, ndim[CLIP_N];
        int64_t shape[CLIP_N][4];
        unsigned used;
        int mode, expand_w0;
    } cases[] = {
        {1, {3}, {{2, 7, 13}}, 1, 0, 0},
        {3, {3, 2, 4}, {{2, 5, 3}, {2, 17}, {2, 3, 4, 5}}, 5, 0, 1}, /* out 1 unread: its cotangent is NULL */
        {3, {3, 2, 4}, {{2, 5, 3}, {2, 17}, {2, 3, 4, 5}}, 7, 1, 0},
        {3, {3, 2, 4}, {{2, 5, 3}, {2, 17}, {2, 3, 4, 5}}, 7, 2, 1},
        {3, {3, 2, 4}, {{2, 5, 3}, {2, 17}, {2, 3, 4, 5}}, 6, 3, 0},
        {2, {3, 2}, {{2, 130, 131}, {2, 40000}}, 3, 0, 0}, /* two and three chunks per sequence */
        {2, {2, 3}, {{2, 1}, {2, 1, 2}}, 3, 4, 0},
        {2, {3, 1}, {{2, 4, 3}, {2}}, 3, 5, 0},
    };
    const double eta = 0.7;
    const double tol1 = dt == TTT_F64 ? 1e-12 : 2e-5, tol2 = dt == TTT_F64 ? 1e-10 : 1e-4;
    double worst[3] = {0, 0, 0};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const ttt_mark_t mark = ttt_mark(ctx);
        const int n = cases[ci].n, mode = cases[ci].mode;
        const double seq_scale[2] = {1.0, mode == 0 ? 0.05 : mode == 5 ? 0.0 : 1.0};
        const double ones[2] = {1.0, 1.0};
        ttt_tensor *w[CLIP_N], *g[CLIP_N], *r[CLIP_N], *u[CLIP_N];
        double sq[2] = {0, 0}, *gh[CLIP_N] = {0}, *rh[CLIP_N] = {0};
        for (int i = 0; i < n; i++) {
            const int nd = cases[ci].ndim[i];
            const int64_t *sh = cases[ci].shape[i];
            int64_t k = 1;
            for (int d = 0; d < nd; d++) k *= sh[d];
            double *wh = malloc(sizeof(double) * (size_t)k);
            gh[i] = malloc(sizeof(double) * (size_t)k), rh[i] = malloc(sizeof(double) * (size_t)k);
            w[i] = clip_tensor(ctx, dt, nd, sh, ones, wh);
            if (cases[ci].expand_w0 && i == 0) { /* TTT-E2E's W_0: one weight expanded over the sequences */
                int64_t one[4] = {1, sh[1], sh[2], sh[3]};
                w[i] = ttt_expand(ctx, clip_tensor(ctx, dt, nd, one, ones, wh), nd, sh);
            }
            g[i] = clip_tensor(ctx, dt, nd, sh, seq_scale, gh[i]);
            if (mode == 4) { /* |g| = 5 exactly on sequence 0 (3 and 4), 1 on sequence 1 (0.6 and 0.8) */
                for (int64_t j = 0; j < k; j++) gh[i][j] = 0;
                gh[i][0] = i ? 4.0 : 3.0, gh[i][k / 2] = i ? 0.8 : 0.6;
                g[i] = ttt_cast(ctx, ttt_from_host(ctx, TTT_F64, nd, sh, gh[i]), dt);
            }
            r[i] = clip_tensor(ctx, dt, nd, sh, ones, rh[i]);
            u[i] = clip_tensor(ctx, dt, nd, sh, ones, wh);
            for (int64_t j = 0; j < k; j++) sq[j / (k / 2)] += gh[i][j] * gh[i][j];
            free(wh);
        }
        const double n0 = sqrt(sq[0]), n1 = sqrt(sq[1]);
        const double clip = mode == 0 ? sqrt(n0 * n1) : mode == 1 ? 0.0 : mode == 2 ? 2.0 * fmax(n0, n1)
                          : mode == 3 ? 0.5 * fmin(n0, n1) : mode == 4 ? 5.0 : 0.5 * n0;
        const int order2 = dev == TTT_CPU || dt == TTT_F64;
        clip_out f, c;
        int rc = clip_run(ctx, n, w, g, r, u, cases[ci].used, eta, clip, 1, order2, &f);
        if (rc == TTT_OK) rc = clip_run(ctx, n, w, g, r, u, cases[ci].used, eta, clip, 0, order2 && mode != 5, &c);
        CHECK_MSG(rc == TTT_OK, "clip_step %s %s case %zu: %s", DEV[dev], ttt_dtype_name(dt), ci, ttt_error(ctx));
        if (rc == TTT_OK && mode == 5) {
            /* an all-zero sequence: the composed ops' sqrt has no derivative at 0 (NaN); the kernels give the
             * unclipped step's -eta dout there, and the clipped formula on sequence 0 */
            for (int i = 0; i < n; i++) {
                double *dg = values(ctx, f.grad[n + i]);
                const int64_t k = ttt_numel(g[i]);
                double worst = 0;
                for (int64_t j = k / 2; dg && j < k; j++) worst = fmax(worst, fabs(dg[j] + eta * rh[i][j]));
                CHECK_MSG(dg && worst <= tol1, "clip_step %s %s: zero sequence, tensor %d: dg off by %g", DEV[dev],
                          ttt_dtype_name(dt), i, worst);
                free(dg);
                double e = 0, *a = values(ctx, f.grad[n + i]), *b = values(ctx, c.grad[n + i]);
                for (int64_t j = 0; a && b && j < k / 2; j++) e = fmax(e, fabs(a[j] - b[j]) / (fabs(b[j]) + 1e-3));
                CHECK_MSG(a && b && e <= tol1, "clip_step %s %s: zero sequence, tensor %d: sequence 0 differs by %g",
                          DEV[dev], ttt_dtype_name(dt), i, e);
                free(a), free(b);
            }
        } else if (rc == TTT_OK) {
            double eo = 0, e1 = 0, e2 = 0;
            for (int i = 0; i < n; i++) eo = fmax(eo, rel_diff(ctx, f.out[i], c.out[i]));
            for (int i = 0; i < 2 * n; i++) e1 = fmax(e1, rel_diff(ctx, f.grad[i], c.grad[i]));
            for (int i = 0; i < 2 * n && order2; i++) e2 = fmax(e2, rel_diff(ctx, f.hess[i], c.hess[i]));
            CHECK_MSG(eo <= tol1 && e1 <= tol1 && e2 <= tol2,
                      "clip_step %s %s case %zu (N %g %g, clip %g): out %g, first order %g, second order %g", DEV[dev],
                      ttt_dtype_name(dt), ci, n0, n1, clip, eo, e1, e2);
            worst[0] = fmax(worst[0], eo), worst[1] = fmax(worst[1], e1), worst[2] = fmax(worst[2], e2);
        }
        for (int i = 0; i < n; i++) free(gh[i]), free(rh[i]);
        ttt_release(ctx, mark);
    }
    printf("clip_step %s %s: %zu cases, kernels vs composed ops: out %.2g, first order %.2g, second order %.2g\n",
           DEV[dev], ttt_dtype_name(dt), sizeof cases / sizeof cases[0], worst[0], worst[1], worst[2]);
    /* arguments are checked, with messages */
    ttt_tensor *a = ttt_zeros(ctx, dt, TTT_DIMS(2, 3)), *b = ttt_zeros(ctx, dt, TTT_DIMS(3, 3)), *o[2];
    ttt_tensor *s0 = ttt_scalar(ctx, dt, 1.0), *d = ttt_zeros(ctx, dt == TTT_F64 ? TTT_F32 : TTT_F64, TTT_DIMS(2, 3));
    ttt_tensor *ww[2] = {a, a}, *gb[2] = {a, b}, *gs[2] = {s0, s0}, *gd[2] = {a, d}, *ga[2] = {a, a};
    ttt_tensor *gt[2] = {a, ttt_zeros(ctx, dt, TTT_DIMS(2, 4))};
    CHECK(ttt_clip_step(ctx, 0, ww, ga, eta, 1.0, o) == TTT_ERR && strstr(ttt_error(ctx), "n 0"));
    CHECK(ttt_clip_step(ctx, 1, NULL, ga, eta, 1.0, o) == TTT_ERR && strstr(ttt_error(ctx), "NULL"));
    CHECK(ttt_clip_step(ctx, 2, ww, gb, eta, 1.0, o) == TTT_ERR && strstr(ttt_error(ctx), "sequences") && !o[0] && !o[1]);
    CHECK(ttt_clip_step(ctx, 2, gs, gs, eta, 1.0, o) == TTT_ERR && strstr(ttt_error(ctx), "scalar"));
    CHECK(ttt_clip_step(ctx, 2, ww, gd, eta, 1.0, o) == TTT_ERR && strstr(ttt_error(ctx), "one dtype"));
    CHECK(ttt_clip_step(ctx, 2, ww, gt, eta, 1.0, o) == TTT_ERR && strstr(ttt_error(ctx), "one shape"));
    CHECK(ttt_clip_step(ctx, 2, ww, ga, NAN, 1.0, o) == TTT_ERR && strstr(ttt_error(ctx), "eta"));
    CHECK(ttt_clip_step(ctx, 2, ww, ga, eta, INFINITY, o) == TTT_ERR && strstr(ttt_error(ctx), "clip inf"));
    ttt_tensor *gn[2] = {a, NULL};
    ttt_clear_error(ctx);
    CHECK(ttt_clip_step(ctx, 2, ww, gn, eta, 1.0, o) == TTT_ERR && !ttt_error(ctx)[0]); /* an earlier failure's NULL */
    ttt_step_reset(ctx);
}

/* ---- a tiny LM: training steps with the fused paths on and off ---------------------------------------------- */

static int lm_steps(ttt_device dev, int fused, ttt_dtype compute, int steps, double *losses, double **params, int64_t *np) {
    ttt_ctx_config cfg = {.device = dev, .seed = 11, .threads = 2};
    ttt_ctx *ctx = ttt_ctx_new(&cfg);
    if (!ctx) return TTT_ERR;
    ttt__set_fused(ctx, fused);
    ttt_lm_config c;
    ttt_lm m;
    ttt_lm_preset("tiny", 61, &c, NULL, 0);
    c.dim = 32, c.depth = 2, c.heads = 2, c.mlp_hidden = 80;
    int rc = ttt_lm_init(ctx, &m, &c, TTT_F32);
    if (rc == TTT_OK && compute == TTT_BF16) rc = ttt_lm_set_compute(ctx, &m, TTT_BF16);
    const ttt_optim_config oc = {.lr = 3e-3, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
    ttt_optimizer *opt = rc == TTT_OK ? ttt_adamw_new(ctx, m.n_params, m.params, m.decay, &oc) : NULL;
    enum { B = 2, T = 24 };
    int32_t ids[B * T], tg[B * T];
    for (int s = 0; s < steps && opt; s++) {
        for (int i = 0; i < B * T; i++)
            ids[i] = (int32_t)((i * 7 + 3 * s) % c.vocab), tg[i] = (int32_t)((i * 11 + 5 + s) % c.vocab);
        ttt_zero_grad(ctx, m.n_params, m.params);
        ttt_tensor *l = ttt_lm_loss(ctx, &m, ttt_from_host(ctx, TTT_I32, TTT_DIMS(B, T), ids),
                                    ttt_from_host(ctx, TTT_I32, TTT_DIMS(B, T), tg), NULL);
        double norm;
        if (!l || ttt_backward(ctx, l) != TTT_OK || ttt_clip_grad_norm(ctx, m.n_params, m.params, 0.5, &norm) != TTT_OK ||
            ttt_optimizer_step(opt, -1) != TTT_OK) {
            rc = TTT_ERR;
            break;
        }
        losses[s] = ttt_item(ctx, l);
        ttt_step_reset(ctx);
    }
    if (!opt) rc = TTT_ERR;
    if (rc != TTT_OK) fprintf(stderr, "lm_steps: %s\n", ttt_error(ctx));
    *np = 0;
    for (int i = 0; rc == TTT_OK && i < m.n_params; i++) *np += ttt_numel(m.params[i]);
    *params = rc == TTT_OK ? malloc(sizeof(double) * (size_t)*np) : NULL;
    for (int i = 0, at = 0; *params && i < m.n_params; at += (int)ttt_numel(m.params[i]), i++)
        ttt_copy_to_host(ctx, m.params[i], *params + at, TTT_F64);
    ttt_optimizer_free(opt);
    ttt_lm_free(ctx, &m);
    ttt_ctx_free(ctx);
    return rc;
}

static void test_lm(ttt_device dev, ttt_dtype compute) {
    enum { S = 3 };
    double lf[S], lc[S], lf2[S], *pf = NULL, *pc = NULL, *pf2 = NULL;
    int64_t nf = 0, nc = 0, nf2 = 0;
    const int ok = lm_steps(dev, 1, compute, S, lf, &pf, &nf) == TTT_OK && lm_steps(dev, 0, compute, S, lc, &pc, &nc) == TTT_OK &&
                   lm_steps(dev, 1, compute, S, lf2, &pf2, &nf2) == TTT_OK;
    CHECK_MSG(ok, "lm %s: a run failed", DEV[dev]);
    if (ok) {
        printf("lm %s %s: losses fused %.9g %.9g %.9g, composed %.9g %.9g %.9g\n", DEV[dev], ttt_dtype_name(compute),
               lf[0], lf[1], lf[2], lc[0], lc[1], lc[2]);
        CHECK_MSG(!memcmp(lf, lf2, sizeof lf) && nf == nf2 && !memcmp(pf, pf2, sizeof(double) * (size_t)nf),
                  "lm %s %s: two fused runs differ", DEV[dev], ttt_dtype_name(compute));
        if (compute == TTT_BF16) { /* the fused SwiGLU rounds bf16 once where the composed ops round twice */
            for (int s = 0; s < S; s++) CHECK_MSG(fabs(lf[s] - lc[s]) <= 1e-2 * fabs(lc[s]), "step %d: %g vs %g", s, lf[s], lc[s]);
        } else {
            CHECK_MSG(!memcmp(lf, lc, sizeof lf), "lm %s f32: losses differ with the fused paths off", DEV[dev]);
            CHECK_MSG(nf == nc && !memcmp(pf, pc, sizeof(double) * (size_t)nf),
                      "lm %s f32: parameters after %d steps differ with the fused paths off", DEV[dev], S);
        }
    }
    free(pf), free(pc), free(pf2);
}

int main(int argc, char **argv) {
    /* --no-lm: the kernels' checks only (for compute-sanitizer, where the LM runs take long) */
    const int no_lm = argc > 1 && !strcmp(argv[1], "--no-lm");
    setenv("TTT_PROFILE", "1", 1); /* count the kernel entries (before any context exists) */
    setenv("TTT_CLIP_STEP_CUDA", "1", 1); /* clip_step's CUDA kernels (on by default; an outside =0 would skip them) */
    /* TTT_FUSED=0 at creation turns the fused paths off */
    setenv("TTT_FUSED", "0", 1);
    ttt_ctx *off = ttt_ctx_new(NULL);
    CHECK(off && !ttt__fused(off) && !ttt__multi_tensor(off));
    ttt_ctx_free(off);
    unsetenv("TTT_FUSED");
    for (int d = 0; d < 2; d++) {
        const ttt_device dev = d ? TTT_CUDA : TTT_CPU;
        if (ttt_device_count(dev) < 1) {
            printf("%s: no device, skipped\n", DEV[d]);
            continue;
        }
        ttt_ctx_config cfg = {.device = dev, .threads = 2};
        ttt_ctx *ctx = ttt_ctx_new(&cfg);
        CHECK(ctx && ttt__fused(ctx) && ttt__multi_tensor(ctx));
        if (!ctx) continue;
        const ttt_dtype dts[] = {TTT_F32, TTT_F64, TTT_BF16};
        for (int k = 0; k < (d ? 3 : 2); k++) {
            test_swiglu(ctx, dev, dts[k]);
            test_norm_affine(ctx, dev, dts[k]);
            test_optimizer(ctx, dev, dts[k]);
        }
        for (int k = 0; k < 2; k++) test_clip_step(ctx, dev, dts[k]); /* bf16 is composed (the kernels decline it) */
        test_clip_edges(ctx);
        test_higher_orders(ctx, dev);
        ttt_ctx_free(ctx);
        if (no_lm) continue;
        test_lm(dev, TTT_F32);
        if (d) test_lm(dev, TTT_BF16);
    }
    TEST_MAIN_END();
}
