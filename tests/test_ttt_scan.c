/* The fused TTT-Linear scan (src/composed/ttt_scan.c, the CPU kernels in src/backends/cpu/cpu_ttt_scan.c)
 * against the composed ops, on the CPU:
 *   - the op: outputs, final state and the gradients of every input (q, k, v, eta, tok, ln_w, ln_b, w0,
 *     b0; w0 shared by the batch or per sequence; with and without a gradient of the final state) equal the
 *     composed form's, f64 to 1e-12 and f32 to 1e-5 relative; second order (create_graph through the fused
 *     node) equals the composed Hessian-vector product;
 *   - central finite differences of the fused op's gradient, f64;
 *   - bf16 inputs (all of them, or q, k, v, eta with f32 parameters): computed in f32, out in bf16, the
 *     gradients of both orders within bf16's rounding of the composed op's in f64;
 *   - the layer (TTT-Linear, both backbones): fused (TTT_FUSED on) against composed (off), outputs and the
 *     gradients of every parameter and x, T a multiple of the mini-batch and not (the tail composed);
 *   - decode after a fused prefill, in pieces that start and end mid-mini-batch, equals the all-composed
 *     forward, and its state equals the composed decode's;
 *   - bad arguments give messages naming the problem;
 *   - TTT-MLP's scan (src/composed/ttt_scan.c's MLP section) the same way: outputs, final weights and the
 *     gradients of all eleven inputs against the composed form (f64 1e-12, f32 1e-5), second order, finite
 *     differences, the layer on both backbones with tails, decode after a fused prefill. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/internal.h"
#include "ttt/ttt.h"

static double max_abs(ttt_ctx *ctx, const ttt_tensor *t) {
    const int64_t n = ttt_numel(t);
    double *h = malloc(sizeof(double) * (size_t)(n ? n : 1)), m = 0;
    ttt_copy_to_host(ctx, t, h, TTT_F64);
    for (int64_t i = 0; i < n; i++) m = fabs(h[i]) > m ? fabs(h[i]) : m;
    free(h);
    return m;
}

/* max |a - b| / max(1e-3, max |b|) (NaN when either is missing or the shapes differ) */
static double rel_diff(ttt_ctx *ctx, ttt_tensor *a, ttt_tensor *b) {
    if (!a || !b || a->ndim != b->ndim || ttt_numel(a) != ttt_numel(b)) return NAN;
    ttt_mark_t m = ttt_mark(ctx);
    ttt_no_grad_begin(ctx);
    const double s = max_abs(ctx, b), d = max_abs(ctx, ttt_sub(ctx, a, b));
    ttt_no_grad_end(ctx);
    ttt_release(ctx, m);
    return d / (s > 1e-3 ? s : 1e-3);
}

/* Does the graph behind t hold a node of this op? */
static int has_op(const ttt_tensor *t, const char *op) {
    enum { MAXN = 1 << 16 };
    static const ttt_node *seen[MAXN], *stack[MAXN];
    int n_seen = 0, top = 0;
    if (t && t->node) stack[top++] = t->node;
    while (top) {
        const ttt_node *nd = stack[--top];
        int dup = 0;
        for (int i = 0; i < n_seen && !dup; i++) dup = seen[i] == nd;
        if (dup) continue;
        if (!strcmp(nd->op, op)) return 1;
        if (n_seen < MAXN) seen[n_seen++] = nd;
        for (int i = 0; i < nd->n_in; i++)
            if (nd->in[i] && nd->in[i]->node && top < MAXN) stack[top++] = nd->in[i]->node;
    }
    return 0;
}

enum { NIN = 9 };
static const char *NAMES[NIN] = {"q", "k", "v", "eta", "tok", "ln_w", "ln_b", "w0", "b0"};

typedef struct {
    int64_t B, H, T, d, bs;
    int batched_w0;
} shape_cfg;

/* Random inputs as persistent f64 tensors (eta > 0 and small like the layer's, tok around 1/i). */
static void make_inputs(ttt_ctx *ctx, const shape_cfg *c, ttt_tensor **x) {
    const int64_t B = c->B, H = c->H, T = c->T, d = c->d, bs = c->bs;
    int64_t shapes[NIN][5] = {{B, H, T, d}, {B, H, T, d}, {B, H, T, d}, {B, H, T}, {bs}, {H, d}, {H, d},
                              {B, H, d, d}, {B, H, 1, d}};
    int nd[NIN] = {4, 4, 4, 3, 1, 2, 2, 4, 4};
    if (!c->batched_w0) {
        nd[7] = nd[8] = 3;
        memmove(shapes[7], shapes[7] + 1, 3 * sizeof(int64_t));
        memmove(shapes[8], shapes[8] + 1, 3 * sizeof(int64_t));
    }
    for (int i = 0; i < NIN; i++) {
        x[i] = ttt_param(ctx, TTT_F64, nd[i], shapes[i], NAMES[i]);
        ttt_mark_t m = ttt_mark(ctx);
        ttt_tensor *r = ttt_randn(ctx, TTT_F64, nd[i], shapes[i], i == 7 ? 0.3 : 1.0);
        if (i == 3) r = ttt_scale(ctx, ttt_sigmoid(ctx, r), 1.0 / (double)d);
        if (i == 4) {
            double inv[64];
            for (int64_t j = 0; j < bs; j++) inv[j] = 1.0 / (double)(j + 1);
            r = ttt_add(ctx, ttt_scale(ctx, r, 0.05), ttt_from_host(ctx, TTT_F64, TTT_DIMS(bs), inv));
        }
        if (i == 5) r = ttt_add_scalar(ctx, ttt_scale(ctx, r, 0.3), 1.0);
        if (i == 6 || i == 8) r = ttt_scale(ctx, r, 0.3);
        ttt_assign(ctx, x[i], r);
        ttt_release(ctx, m);
    }
}

/* out, w_final, b_final and the gradients of L = <out, r0> + <wf, r1> + <bf, r2> (use_state: with the
 * last two terms) in every input, cast to dt and back, fused or composed. */
static int run_op(ttt_ctx *ctx, ttt_tensor *const *x64, ttt_dtype dt, int fused, int use_state, ttt_tensor *const *r,
                  ttt_tensor **res, ttt_tensor **grads) {
    ttt_tensor *x[NIN];
    for (int i = 0; i < NIN; i++) {
        x[i] = ttt_cast(ctx, ttt_detach(ctx, x64[i]), dt);
        ttt_set_requires_grad(x[i], 1);
    }
    int rc = fused ? ttt__ttt_linear_scan(ctx, x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], x[8], 1e-6, &res[0], &res[1], &res[2])
                   : ttt__ttt_linear_scan_composed(ctx, x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], x[8], 1e-6, &res[0],
                                                   &res[1], &res[2]);
    if (rc) return rc;
    if (fused) CHECK(has_op(res[0], "ttt_linear_scan"));
    ttt_tensor *L = NULL;
    for (int i = 0; i < (use_state ? 3 : 1); i++) {
        ttt_tensor *t = ttt_sum(ctx, ttt_mul(ctx, res[i], ttt_cast(ctx, r[i], dt)), 0, NULL, 0);
        L = L ? ttt_add(ctx, L, t) : t;
    }
    return ttt_grad(ctx, 1, &L, NULL, NIN, x, grads, 0);
}

static void test_op(ttt_ctx *ctx, const shape_cfg *c, ttt_dtype dt, int use_state) {
    ttt_tensor *x[NIN];
    make_inputs(ctx, c, x);
    ttt_tensor *r[3] = {ttt_persistent(ctx, TTT_F64, TTT_DIMS(c->B, c->H, c->T, c->d), "r0"),
                        ttt_persistent(ctx, TTT_F64, TTT_DIMS(c->B, c->H, c->d, c->d), "r1"),
                        ttt_persistent(ctx, TTT_F64, TTT_DIMS(c->B, c->H, 1, c->d), "r2")};
    for (int i = 0; i < 3; i++) ttt_assign(ctx, r[i], ttt_randn(ctx, TTT_F64, r[i]->ndim, r[i]->shape, 1.0));
    ttt_step_reset(ctx);
    ttt_tensor *ra[3], *ga[NIN], *rb[3], *gb[NIN];
    CHECK_MSG(run_op(ctx, x, dt, 1, use_state, r, ra, ga) == TTT_OK, "%s", ttt_error(ctx));
    CHECK_MSG(run_op(ctx, x, dt, 0, use_state, r, rb, gb) == TTT_OK, "%s", ttt_error(ctx));
    const double tol = dt == TTT_F64 ? 1e-12 : 1e-5;
    double worst_out = 0, worst_g = 0;
    for (int i = 0; i < 3; i++) {
        const double e = rel_diff(ctx, ra[i], rb[i]);
        CHECK_MSG(e <= tol, "%s output %d differs by %.2e", ttt_dtype_name(dt), i, e);
        worst_out = e > worst_out || e != e ? e : worst_out;
    }
    for (int i = 0; i < NIN; i++) {
        const double e = rel_diff(ctx, ga[i], gb[i]);
        CHECK_MSG(e <= tol && ga[i]->ndim == x[i]->ndim, "%s grad %s differs by %.2e", ttt_dtype_name(dt), NAMES[i], e);
        worst_g = e > worst_g || e != e ? e : worst_g;
    }
    printf("op %s B%lld H%lld T%lld d%lld bs%lld w0 %s, %s: outputs %.2e, gradients %.2e (relative)\n",
           ttt_dtype_name(dt), (long long)c->B, (long long)c->H, (long long)c->T, (long long)c->d, (long long)c->bs,
           c->batched_w0 ? "per sequence" : "shared", use_state ? "loss on out and the final state" : "loss on out",
           worst_out, worst_g);
    ttt_step_reset(ctx);
    for (int i = 0; i < NIN; i++) ttt_persistent_free(ctx, x[i]);
    for (int i = 0; i < 3; i++) ttt_persistent_free(ctx, r[i]);
}

/* Central differences of L along a random direction w of every input, against <grad L, w>; and the
 * Hessian-vector product through the fused node (create_graph: the composed recomputation) against
 * the composed op's. */
static void test_fd_and_second_order(ttt_ctx *ctx) {
    const shape_cfg c = {.B = 2, .H = 2, .T = 32, .d = 4, .bs = 8, .batched_w0 = 0};
    ttt_tensor *x[NIN], *w[NIN], *u[NIN];
    make_inputs(ctx, &c, x);
    for (int i = 0; i < NIN; i++) {
        w[i] = ttt_persistent(ctx, TTT_F64, x[i]->ndim, x[i]->shape, "w");
        u[i] = ttt_persistent(ctx, TTT_F64, x[i]->ndim, x[i]->shape, "u");
        ttt_assign(ctx, w[i], ttt_randn(ctx, TTT_F64, x[i]->ndim, x[i]->shape, 1.0));
        ttt_assign(ctx, u[i], ttt_randn(ctx, TTT_F64, x[i]->ndim, x[i]->shape, 1.0));
    }
    ttt_tensor *r[3] = {ttt_persistent(ctx, TTT_F64, TTT_DIMS(c.B, c.H, c.T, c.d), "r0"),
                        ttt_persistent(ctx, TTT_F64, TTT_DIMS(c.B, c.H, c.d, c.d), "r1"),
                        ttt_persistent(ctx, TTT_F64, TTT_DIMS(c.B, c.H, 1, c.d), "r2")};
    for (int i = 0; i < 3; i++) ttt_assign(ctx, r[i], ttt_randn(ctx, TTT_F64, r[i]->ndim, r[i]->shape, 1.0));
    /* central differences at h and h / 2, Richardson-extrapolated (error O(h^4)) */
    const double h = 1e-5, steps[4] = {-h, h, -h / 2, h / 2};
    double f[4];
    for (int side = 0; side < 4; side++) {
        ttt_step_reset(ctx);
        ttt_no_grad_begin(ctx);
        ttt_tensor *xs[NIN], *res[3];
        for (int i = 0; i < NIN; i++) xs[i] = ttt_add(ctx, x[i], ttt_scale(ctx, w[i], steps[side]));
        CHECK(ttt__ttt_linear_scan(ctx, xs[0], xs[1], xs[2], xs[3], xs[4], xs[5], xs[6], xs[7], xs[8], 1e-6, &res[0], &res[1],
                                   &res[2]) == TTT_OK);
        double s = 0;
        for (int i = 0; i < 3; i++) s += ttt_item(ctx, ttt_sum(ctx, ttt_mul(ctx, res[i], r[i]), 0, NULL, 0));
        f[side] = s;
        ttt_no_grad_end(ctx);
    }
    const double d1 = (f[1] - f[0]) / (2 * h), d2 = (f[3] - f[2]) / h, fd = (4 * d2 - d1) / 3;
    double hv[2] = {0, 0}, gw = 0;
    for (int fused = 1; fused >= 0; fused--) {
        ttt_step_reset(ctx);
        ttt_tensor *res[3], *g[NIN], *hg[NIN];
        int rc = fused ? ttt__ttt_linear_scan(ctx, x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], x[8], 1e-6, &res[0], &res[1], &res[2])
                       : ttt__ttt_linear_scan_composed(ctx, x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], x[8], 1e-6, &res[0],
                                                       &res[1], &res[2]);
        CHECK(rc == TTT_OK);
        if (rc) return;
        ttt_tensor *L = NULL;
        for (int i = 0; i < 3; i++) {
            ttt_tensor *t = ttt_sum(ctx, ttt_mul(ctx, res[i], r[i]), 0, NULL, 0);
            L = L ? ttt_add(ctx, L, t) : t;
        }
        CHECK(ttt_grad(ctx, 1, &L, NULL, NIN, x, g, 1) == TTT_OK);
        ttt_tensor *gu = NULL;
        double gwi = 0;
        for (int i = 0; i < NIN; i++) {
            ttt_tensor *t = ttt_sum(ctx, ttt_mul(ctx, g[i], u[i]), 0, NULL, 0);
            gu = gu ? ttt_add(ctx, gu, t) : t;
            gwi += ttt_item(ctx, ttt_sum(ctx, ttt_mul(ctx, g[i], w[i]), 0, NULL, 0));
        }
        if (fused) gw = gwi;
        CHECK_MSG(ttt_grad(ctx, 1, &gu, NULL, NIN, x, hg, 0) == TTT_OK, "%s", ttt_error(ctx));
        for (int i = 0; i < NIN; i++) hv[fused] += ttt_item(ctx, ttt_sum(ctx, ttt_mul(ctx, hg[i], w[i]), 0, NULL, 0));
    }
    printf("finite differences (f64, fused): <dL, w> %.12g vs %.12g; second order fused %.12g vs composed %.12g\n", gw, fd,
           hv[1], hv[0]);
    CHECK(fabs(gw - fd) <= 1e-8 * (1 + fabs(fd)));
    CHECK(fabs(hv[1] - hv[0]) <= 1e-10 * (1 + fabs(hv[0])));
    ttt_step_reset(ctx);
    for (int i = 0; i < NIN; i++) ttt_persistent_free(ctx, x[i]), ttt_persistent_free(ctx, w[i]), ttt_persistent_free(ctx, u[i]);
    for (int i = 0; i < 3; i++) ttt_persistent_free(ctx, r[i]);
}

/* bf16 inputs (what `ttt gradcheck`'s bf16 parity run passes: every input bf16; or the parameters in f32):
 * out in bf16, the state in f32, first- and second-order gradients against the composed op in f64 on the
 * same bf16 values, within bf16's rounding (the op computes in f32; the CPU has no bf16 arithmetic, so the
 * loss is taken in f64 on casts, which gradcheck's bf16 run takes in bf16 on the device). */
static ttt_dtype in_dtype(int i, int params_f32) { return i >= 4 && params_f32 ? TTT_F32 : TTT_BF16; }

static void test_bf16(ttt_ctx *ctx, const shape_cfg *c, int params_f32) {
    ttt_tensor *x[NIN], *u[NIN], *r[3];
    make_inputs(ctx, c, x);
    for (int i = 0; i < NIN; i++) {
        u[i] = ttt_persistent(ctx, TTT_F64, x[i]->ndim, x[i]->shape, "u");
        ttt_assign(ctx, u[i], ttt_randn(ctx, TTT_F64, x[i]->ndim, x[i]->shape, 1.0));
    }
    const int64_t rs[3][4] = {{c->B, c->H, c->T, c->d}, {c->B, c->H, c->d, c->d}, {c->B, c->H, 1, c->d}};
    for (int i = 0; i < 3; i++) {
        r[i] = ttt_persistent(ctx, TTT_F64, 4, rs[i], "r");
        ttt_assign(ctx, r[i], ttt_randn(ctx, TTT_F64, 4, rs[i], 1.0));
    }
    ttt_step_reset(ctx);
    ttt_tensor *res[2][3], *g[2][NIN], *hv[2][NIN];
    for (int ref = 0; ref < 2; ref++) {
        ttt_tensor *in[NIN];
        for (int i = 0; i < NIN; i++) {
            const ttt_dtype dt = in_dtype(i, params_f32);
            ttt_tensor *xi = ttt_cast(ctx, ttt_detach(ctx, x[i]), dt);
            in[i] = ref ? ttt_cast(ctx, xi, TTT_F64) : xi; /* the reference: the same values in f64 */
            ttt_set_requires_grad(in[i], 1);
        }
        int rc = ref ? ttt__ttt_linear_scan_composed(ctx, in[0], in[1], in[2], in[3], in[4], in[5], in[6], in[7], in[8], 1e-6,
                                                     &res[ref][0], &res[ref][1], &res[ref][2])
                     : ttt__ttt_linear_scan(ctx, in[0], in[1], in[2], in[3], in[4], in[5], in[6], in[7], in[8], 1e-6,
                                            &res[ref][0], &res[ref][1], &res[ref][2]);
        CHECK_MSG(rc == TTT_OK, "bf16: %s", ttt_error(ctx));
        if (rc) return;
        if (!ref) {
            CHECK(res[0][0]->dtype == TTT_BF16 && res[0][1]->dtype == TTT_F32 && res[0][2]->dtype == TTT_F32);
            CHECK(has_op(res[0][0], "ttt_linear_scan"));
        }
        ttt_tensor *L = NULL, *gu = NULL;
        for (int i = 0; i < 3; i++) {
            ttt_tensor *t = ttt_sum(ctx, ttt_mul(ctx, ttt_cast(ctx, res[ref][i], TTT_F64), r[i]), 0, NULL, 0);
            L = L ? ttt_add(ctx, L, t) : t;
        }
        CHECK_MSG(ttt_grad(ctx, 1, &L, NULL, NIN, in, g[ref], 1) == TTT_OK, "%s", ttt_error(ctx));
        for (int i = 0; i < NIN; i++) {
            ttt_tensor *t = ttt_sum(ctx, ttt_mul(ctx, ttt_cast(ctx, g[ref][i], TTT_F64), u[i]), 0, NULL, 0);
            gu = gu ? ttt_add(ctx, gu, t) : t;
        }
        CHECK_MSG(ttt_grad(ctx, 1, &gu, NULL, NIN, in, hv[ref], 0) == TTT_OK, "%s", ttt_error(ctx));
    }
    /* bf16's unit roundoff is 2^-8: out and the gradients are rounded to it once, after f32 arithmetic */
    const double tol = 3e-2;
    double worst[3] = {0, 0, 0};
    for (int i = 0; i < 3; i++) worst[0] = fmax(worst[0], rel_diff(ctx, ttt_cast(ctx, res[0][i], TTT_F64), res[1][i]));
    for (int i = 0; i < NIN; i++) {
        const double e1 = rel_diff(ctx, ttt_cast(ctx, g[0][i], TTT_F64), g[1][i]);
        const double e2 = rel_diff(ctx, ttt_cast(ctx, hv[0][i], TTT_F64), hv[1][i]);
        CHECK_MSG(e1 <= tol && e2 <= tol && g[0][i]->dtype == in_dtype(i, params_f32), "bf16 grad %s: %.2e, second order %.2e",
                  NAMES[i], e1, e2);
        worst[1] = fmax(worst[1], e1), worst[2] = fmax(worst[2], e2);
    }
    CHECK_MSG(worst[0] <= tol, "bf16 outputs differ by %.2e", worst[0]);
    printf("op bf16 (parameters %s) B%lld H%lld T%lld d%lld bs%lld: outputs %.2e, gradients %.2e, second order %.2e "
           "(relative to f64 on the same values)\n",
           params_f32 ? "f32" : "bf16", (long long)c->B, (long long)c->H, (long long)c->T, (long long)c->d, (long long)c->bs,
           worst[0], worst[1], worst[2]);
    ttt_step_reset(ctx);
    for (int i = 0; i < NIN; i++) ttt_persistent_free(ctx, x[i]), ttt_persistent_free(ctx, u[i]);
    for (int i = 0; i < 3; i++) ttt_persistent_free(ctx, r[i]);
}

/* ---- the layer ------------------------------------------------------------------------------------ */

static void randomize(ttt_ctx *ctx, ttt_rnn *l) {
    for (int i = 0; i < l->n_params; i++) {
        ttt_tensor *p = l->params[i];
        const double sc = !strcmp(l->names[i], "token_idx_offset") ? 0.05 : 0.4;
        ttt_mark_t m = ttt_mark(ctx);
        ttt_tensor *r = ttt_randn(ctx, p->dtype, p->ndim, p->shape, sc);
        if (strstr(l->names[i], "norm.weight")) r = ttt_add_scalar(ctx, r, 1.0);
        ttt_assign(ctx, p, r);
        ttt_release(ctx, m);
    }
}

static ttt_rnn_config config(int kind, int backbone, int64_t b) {
    return (ttt_rnn_config){.kind = kind, .backbone = backbone, .dim = 8, .heads = 2, .mini_batch = b,
                            .base_lr = 0, .rope_theta = 10000.0};
}

static void test_layer(ttt_ctx *ctx, int kind, int backbone, ttt_dtype dt, int64_t T) {
    ttt_rnn_config c = config(kind, backbone, 8);
    const int mlp = kind == TTT_RNN_MLP;
    ttt_rnn l;
    CHECK(ttt_rnn_init(ctx, &l, &c, dt, 0.02, 0.02) == TTT_OK);
    randomize(ctx, &l);
    const int64_t B = 2;
    ttt_tensor *x = ttt_persistent(ctx, dt, TTT_DIMS(B, T, c.dim), "x"), *r = ttt_persistent(ctx, dt, TTT_DIMS(B, T, c.dim), "r");
    ttt_assign(ctx, x, ttt_randn(ctx, dt, TTT_DIMS(B, T, c.dim), 1.0));
    ttt_assign(ctx, r, ttt_randn(ctx, dt, TTT_DIMS(B, T, c.dim), 1.0));
    ttt_tensor *y[2], *g[2][TTT_RNN_MAX_PARAMS + 1];
    for (int fused = 0; fused < 2; fused++) {
        ttt__set_fused(ctx, fused);
        ttt_tensor *xl = ttt_detach(ctx, x);
        ttt_set_requires_grad(xl, 1);
        y[fused] = ttt_rnn_forward(ctx, &l, xl, 0);
        CHECK_MSG(y[fused] != NULL, "%s", ttt_error(ctx));
        if (!y[fused]) return;
        CHECK(has_op(y[fused], mlp ? "ttt_mlp_scan" : "ttt_linear_scan") == fused);
        ttt_tensor *ins[TTT_RNN_MAX_PARAMS + 1];
        for (int i = 0; i < l.n_params; i++) ins[i] = l.params[i];
        ins[l.n_params] = xl;
        ttt_tensor *L = ttt_sum(ctx, ttt_mul(ctx, y[fused], r), 0, NULL, 0);
        CHECK(ttt_grad(ctx, 1, &L, NULL, l.n_params + 1, ins, g[fused], 0) == TTT_OK);
    }
    ttt__set_fused(ctx, 1);
    const double tol = dt == TTT_F64 ? 1e-12 : 1e-5;
    /* a gradient sums over every token and head, in an order that depends on the CPU's vector width (fused kernels)
     * and differs from the composed ops': in f32 token_idx_offset's came out 1.03e-5 apart on an AVX-512 Xeon */
    const double tol_g = dt == TTT_F64 ? 1e-12 : 4e-5;
    const double ey = rel_diff(ctx, y[1], y[0]);
    double eg = 0;
    CHECK_MSG(ey <= tol, "output differs by %.2e", ey);
    for (int i = 0; i <= l.n_params; i++) {
        const double e = rel_diff(ctx, g[1][i], g[0][i]);
        CHECK_MSG(e <= tol_g, "%s T %lld: grad %s differs by %.2e", ttt_dtype_name(dt), (long long)T,
                  i < l.n_params ? l.names[i] : "x", e);
        eg = e > eg || e != e ? e : eg;
    }
    /* without a graph: the forward kernels of both scans */
    ttt_tensor *yn[2];
    ttt_no_grad_begin(ctx);
    const long long calls = ttt__profile_calls(mlp ? TTT_K_ttt_mlp_scan : TTT_K_ttt_linear_scan);
    for (int fused = 0; fused < 2; fused++) {
        ttt__set_fused(ctx, fused);
        yn[fused] = ttt_rnn_forward(ctx, &l, x, 0);
        CHECK_MSG(yn[fused] != NULL, "%s", ttt_error(ctx));
    }
    ttt__set_fused(ctx, 1);
    CHECK(ttt__profile_calls(mlp ? TTT_K_ttt_mlp_scan : TTT_K_ttt_linear_scan) == calls + 1);
    const double en = rel_diff(ctx, yn[1], yn[0]);
    CHECK_MSG(en <= tol, "output without a graph differs by %.2e", en);
    ttt_no_grad_end(ctx);
    printf("layer %s %s %s T %lld (b 8): fused vs composed: output %.2e (no graph %.2e), gradients %.2e (relative)\n",
           mlp ? "MLP" : "Linear", backbone ? "mamba" : "transformer", ttt_dtype_name(dt), (long long)T, ey, en, eg);
    ttt_step_reset(ctx);
    ttt_persistent_free(ctx, x), ttt_persistent_free(ctx, r);
    ttt_rnn_free(ctx, &l);
}

/* prefill + decode in pieces with the fused scan == the all-composed forward; the states agree */
static void test_decode(ttt_ctx *ctx, int kind, int backbone) {
    ttt_rnn_config c = config(kind, backbone, 8);
    ttt_rnn l;
    CHECK(ttt_rnn_init(ctx, &l, &c, TTT_F64, 0.02, 0.02) == TTT_OK);
    randomize(ctx, &l);
    const int64_t B = 2, T = 45;
    ttt_tensor *x = ttt_persistent(ctx, TTT_F64, TTT_DIMS(B, T, c.dim), "x");
    ttt_assign(ctx, x, ttt_randn(ctx, TTT_F64, TTT_DIMS(B, T, c.dim), 1.0));
    ttt__set_fused(ctx, 0);
    ttt_tensor *y = ttt_rnn_forward(ctx, &l, x, 0);
    ttt_rnn_state s[2];
    static const int64_t pieces[] = {20, 3, 17, 5}; /* 16 fused + 4; 3; 1 + 16 fused; 5 */
    for (int fused = 0; fused < 2; fused++) {
        ttt__set_fused(ctx, fused);
        const ttt_kernel step_k = kind == TTT_RNN_MLP ? TTT_K_ttt_mlp_step : TTT_K_ttt_linear_step;
        const long long steps = ttt__profile_calls(step_k);
        CHECK(ttt_rnn_state_init(ctx, &l, &s[fused], B) == TTT_OK);
        double worst = 0;
        int64_t t = 0;
        for (int j = 0; j < 4; j++) {
            ttt_tensor *xs = ttt_contiguous(ctx, ttt_slice(ctx, x, 1, t, t + pieces[j], 1));
            ttt_tensor *ys = ttt_rnn_decode(ctx, &l, &s[fused], xs);
            CHECK_MSG(ys != NULL, "%s", ttt_error(ctx));
            if (!ys) return;
            const double e = rel_diff(ctx, ys, ttt_slice(ctx, y, 1, t, t + pieces[j], 1));
            worst = e > worst ? e : worst;
            t += pieces[j];
        }
        CHECK(t == T && s[fused].pos == T);
        /* the fused decode step took the tokens decoded one by one on the persistent state (3; 1; 5): the 4
         * after the first piece's fused prefill follow its result, a new tensor, through the composed step */
        const long long want = fused ? 9 : 0;
        CHECK_MSG(ttt__profile_calls(step_k) - steps == want, "%lld decode-step kernel calls, want %lld",
                  ttt__profile_calls(step_k) - steps, want);
        printf("decode %s %s (%s): max diff to the composed forward %.2e\n", kind ? "MLP" : "Linear",
               backbone ? "mamba" : "transformer", fused ? "fused prefill" : "composed", worst);
        CHECK(worst < 1e-12);
    }
    double es = 0;
    for (int i = 0; i < s[0].n_w; i++) {
        const double e1 = rel_diff(ctx, s[1].w[i], s[0].w[i]), e2 = rel_diff(ctx, s[1].g[i], s[0].g[i]);
        es = e1 > es ? e1 : es;
        es = e2 > es ? e2 : es;
    }
    printf("decode %s %s: state after fused prefill vs composed %.2e\n", kind ? "MLP" : "Linear",
           backbone ? "mamba" : "transformer", es);
    CHECK(es < 1e-12);
    ttt__set_fused(ctx, 1);
    ttt_rnn_state_free(ctx, &s[0]), ttt_rnn_state_free(ctx, &s[1]);
    ttt_persistent_free(ctx, x);
    ttt_rnn_free(ctx, &l);
    ttt_step_reset(ctx);
}

/* TTT-Linear / TTT-MLP decoded token by token in f32 (the fused step on the persistent state, across three
 * mini-batches and a partial one) == the composed steps, outputs and state; then the op's refusals. */
static void test_step(ttt_ctx *ctx, int kind, int backbone) {
    ttt_rnn_config c = config(kind, backbone, 8);
    c.dim = 64, c.heads = 2; /* d 32: enough work for the kernel's thread team */
    ttt_rnn l;
    CHECK(ttt_rnn_init(ctx, &l, &c, TTT_F32, 0.02, 0.02) == TTT_OK);
    randomize(ctx, &l);
    const int64_t B = 3, T = 29;
    ttt_tensor *x = ttt_persistent(ctx, TTT_F32, TTT_DIMS(B, T, c.dim), "x");
    ttt_assign(ctx, x, ttt_randn(ctx, TTT_F32, TTT_DIMS(B, T, c.dim), 1.0));
    ttt_rnn_state s[2];
    ttt_tensor *y[2][29];
    ttt_no_grad_begin(ctx);
    for (int fused = 0; fused < 2; fused++) {
        ttt__set_fused(ctx, fused);
        CHECK(ttt_rnn_state_init(ctx, &l, &s[fused], B) == TTT_OK);
        for (int64_t t = 0; t < T; t++) {
            y[fused][t] = ttt_rnn_decode(ctx, &l, &s[fused], ttt_contiguous(ctx, ttt_slice(ctx, x, 1, t, t + 1, 1)));
            CHECK_MSG(y[fused][t] != NULL, "%s", ttt_error(ctx));
            if (!y[fused][t]) return;
        }
    }
    ttt__set_fused(ctx, 1);
    double ey = 0, es = 0;
    for (int64_t t = 0; t < T; t++) {
        const double e = rel_diff(ctx, y[1][t], y[0][t]);
        ey = e > ey || e != e ? e : ey;
    }
    for (int i = 0; i < s[0].n_w; i++) {
        const double e1 = rel_diff(ctx, s[1].w[i], s[0].w[i]), e2 = rel_diff(ctx, s[1].g[i], s[0].g[i]);
        es = e1 > es || e1 != e1 ? e1 : es;
        es = e2 > es || e2 != e2 ? e2 : es;
    }
    printf("decode step %s %s f32, %lld tokens one by one: fused vs composed output %.2e, state %.2e\n",
           kind == TTT_RNN_MLP ? "MLP" : "Linear", backbone ? "mamba" : "transformer", (long long)T, ey, es);
    CHECK_MSG(ey <= 1e-5 && es <= 1e-5, "fused decode step differs: output %.2e, state %.2e", ey, es);
    ttt_no_grad_end(ctx);

    if (kind == TTT_RNN_MLP) { /* refusals: each names the argument */
        const int64_t H = 2, d = 32, F = 128, bs = 8;
        ttt_tensor *q = ttt_zeros(ctx, TTT_F32, TTT_DIMS(B, H, 1, d)), *eta = ttt_zeros(ctx, TTT_F32, TTT_DIMS(B, H, 1));
        ttt_tensor *tok = ttt_zeros(ctx, TTT_F32, TTT_DIMS(bs)), *lw = ttt_zeros(ctx, TTT_F32, TTT_DIMS(H, d));
        ttt_tensor *w[4] = {ttt_zeros(ctx, TTT_F32, TTT_DIMS(B, H, d, F)), ttt_zeros(ctx, TTT_F32, TTT_DIMS(B, H, 1, F)),
                            ttt_zeros(ctx, TTT_F32, TTT_DIMS(B, H, F, d)), ttt_zeros(ctx, TTT_F32, TTT_DIMS(B, H, 1, d))};
        ttt_tensor *g[4] = {w[0], w[1], w[2], w[3]}, *bad_g[4] = {w[0], w[0], w[2], w[3]}, *out = NULL;
        CHECK(ttt__ttt_mlp_step(ctx, q, q, q, eta, tok, lw, lw, w, g, 7, 1e-6, &out) == TTT_OK && out);
        CHECK(ttt__ttt_mlp_step(ctx, q, q, q, eta, tok, lw, lw, w, bad_g, 0, 1e-6, &out) == TTT_ERR &&
              strstr(ttt_error(ctx), "gb1 f32"));
        CHECK(ttt__ttt_mlp_step(ctx, q, q, q, eta, tok, lw, lw, w, g, -1, 1e-6, &out) == TTT_ERR &&
              strstr(ttt_error(ctx), "outside the mini-batch"));
        CHECK(ttt__ttt_mlp_step(ctx, q, q, q, eta, tok, lw, lw, w, g, 0, -1.0, &out) == TTT_ERR && strstr(ttt_error(ctx), "eps"));
        ttt_rnn_state_free(ctx, &s[0]), ttt_rnn_state_free(ctx, &s[1]);
        ttt_persistent_free(ctx, x);
        ttt_rnn_free(ctx, &l);
        ttt_step_reset(ctx);
        return;
    }
    /* refusals: each names the argument */
    const int64_t H = 2, d = 32, bs = 8;
    ttt_tensor *q = ttt_zeros(ctx, TTT_F32, TTT_DIMS(B, H, 1, d)), *eta = ttt_zeros(ctx, TTT_F32, TTT_DIMS(B, H, 1));
    ttt_tensor *tok = ttt_zeros(ctx, TTT_F32, TTT_DIMS(bs)), *lw = ttt_zeros(ctx, TTT_F32, TTT_DIMS(H, d));
    ttt_tensor *w = ttt_zeros(ctx, TTT_F32, TTT_DIMS(B, H, d, d)), *cb = ttt_zeros(ctx, TTT_F32, TTT_DIMS(B, H, 1, d));
    ttt_tensor *out = NULL;
    CHECK(ttt__ttt_linear_step(ctx, q, q, q, eta, tok, lw, lw, w, cb, w, cb, 3, 1e-6, &out) == TTT_OK && out);
    CHECK(ttt__ttt_linear_step(ctx, q, q, q, eta, tok, lw, lw, w, cb, w, cb, bs, 1e-6, &out) == TTT_ERR &&
          strstr(ttt_error(ctx), "outside the mini-batch"));
    CHECK(ttt__ttt_linear_step(ctx, q, q, q, eta, tok, lw, lw, cb, cb, w, cb, 0, 1e-6, &out) == TTT_ERR &&
          strstr(ttt_error(ctx), "w f32"));
    CHECK(ttt__ttt_linear_step(ctx, q, q, eta, eta, tok, lw, lw, w, cb, w, cb, 0, 1e-6, &out) == TTT_ERR &&
          strstr(ttt_error(ctx), "v f32"));
    CHECK(ttt__ttt_linear_step(ctx, q, q, q, eta, tok, lw, lw, ttt_transpose(ctx, w, 2, 3), cb, w, cb, 0, 1e-6, &out) ==
              TTT_ERR &&
          strstr(ttt_error(ctx), "dense"));
    ttt__set_fused(ctx, 0);
    CHECK(ttt__ttt_linear_step(ctx, q, q, q, eta, tok, lw, lw, w, cb, w, cb, 0, 1e-6, &out) == TTT_BACKEND_DECLINED);
    ttt__set_fused(ctx, 1);
    ttt_rnn_state_free(ctx, &s[0]), ttt_rnn_state_free(ctx, &s[1]);
    ttt_persistent_free(ctx, x);
    ttt_rnn_free(ctx, &l);
    ttt_step_reset(ctx);
}

static void test_errors(ttt_ctx *ctx) {
    const shape_cfg c = {.B = 1, .H = 2, .T = 12, .d = 4, .bs = 8};
    ttt_tensor *x[NIN], *o, *w, *b;
    make_inputs(ctx, &c, x);
    CHECK(ttt__ttt_linear_scan(ctx, x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], x[8], 1e-6, &o, &w, &b) == TTT_ERR &&
          strstr(ttt_error(ctx), "multiple of the mini-batch"));
    ttt_tensor *k32 = ttt_cast(ctx, x[1], TTT_F32);
    CHECK(ttt__ttt_linear_scan(ctx, x[0], k32, x[2], x[3], x[4], x[5], x[6], x[7], x[8], 1e-6, &o, &w, &b) == TTT_ERR &&
          strstr(ttt_error(ctx), "k f32"));
    CHECK(ttt__ttt_linear_scan(ctx, x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[5], x[8], 1e-6, &o, &w, &b) == TTT_ERR &&
          strstr(ttt_error(ctx), "w0"));
    CHECK(ttt__ttt_linear_scan(ctx, x[0], x[1], x[2], NULL, x[4], x[5], x[6], x[7], x[8], 1e-6, &o, &w, &b) == TTT_ERR &&
          strstr(ttt_error(ctx), "eta is NULL"));
    ttt_tensor *h[4];
    for (int i = 0; i < 4; i++) h[i] = ttt_cast(ctx, x[i], TTT_BF16);
    CHECK(ttt__ttt_linear_scan(ctx, h[0], h[1], h[2], h[3], x[4], x[5], x[6], x[7], x[8], 1e-6, &o, &w, &b) == TTT_ERR &&
          strstr(ttt_error(ctx), "tok f64") && strstr(ttt_error(ctx), "bf16 or f32"));
    ttt_step_reset(ctx);
    for (int i = 0; i < NIN; i++) ttt_persistent_free(ctx, x[i]);
}

/* ---- TTT-MLP's scan ------------------------------------------------------------------------------- */

enum { NIN_MLP = 11 };
static const char *MLP_NAMES[NIN_MLP] = {"q", "k", "v", "eta", "tok", "ln_w", "ln_b", "w1", "b1", "w2", "b2"};

/* make_inputs' q .. ln_b, then W1 [.., d, 4d], b1, W2 [.., 4d, d], b2 (per sequence or shared) */
static void make_mlp_inputs(ttt_ctx *ctx, const shape_cfg *c, ttt_tensor **x) {
    make_inputs(ctx, c, x);
    ttt_persistent_free(ctx, x[7]), ttt_persistent_free(ctx, x[8]);
    const int64_t B = c->B, H = c->H, d = c->d, F = 4 * d;
    const int64_t rc[4][2] = {{d, F}, {1, F}, {F, d}, {1, d}};
    for (int i = 0; i < 4; i++) {
        const int64_t shape[4] = {B, H, rc[i][0], rc[i][1]};
        const int nd = c->batched_w0 ? 4 : 3;
        const int64_t *sh = c->batched_w0 ? shape : shape + 1;
        x[7 + i] = ttt_param(ctx, TTT_F64, nd, sh, MLP_NAMES[7 + i]);
        ttt_mark_t m = ttt_mark(ctx);
        ttt_assign(ctx, x[7 + i], ttt_randn(ctx, TTT_F64, nd, sh, i % 2 ? 0.3 : 0.5 / sqrt((double)rc[i][0])));
        ttt_release(ctx, m);
    }
}

/* out and the final weights, fused or composed, cast to dt; grads != NULL: also the gradients of
 * L = <out, r0> (+ <w_final, r1..r4> with use_state) in every input (create: differentiable). */
static int run_mlp(ttt_ctx *ctx, ttt_tensor *const *x64, ttt_dtype dt, int fused, int use_state, ttt_tensor *const *r,
                   ttt_tensor **res, ttt_tensor **grads, int create) {
    ttt_tensor *x[NIN_MLP];
    for (int i = 0; i < NIN_MLP; i++) {
        x[i] = ttt_cast(ctx, ttt_detach(ctx, x64[i]), dt);
        ttt_set_requires_grad(x[i], grads != NULL);
    }
    int rc = fused ? ttt__ttt_mlp_scan(ctx, x[0], x[1], x[2], x[3], x[4], x[5], x[6], x + 7, 1e-6, &res[0], res + 1)
                   : ttt__ttt_mlp_scan_composed(ctx, x[0], x[1], x[2], x[3], x[4], x[5], x[6], x + 7, 1e-6, &res[0], res + 1);
    if (rc || !grads) return rc;
    if (fused) CHECK(has_op(res[0], "ttt_mlp_scan"));
    ttt_tensor *L = NULL;
    for (int i = 0; i < (use_state ? 5 : 1); i++) {
        ttt_tensor *t = ttt_sum(ctx, ttt_mul(ctx, res[i], ttt_cast(ctx, ttt_reshape(ctx, r[i], res[i]->ndim, res[i]->shape), dt)), 0, NULL, 0);
        L = L ? ttt_add(ctx, L, t) : t;
    }
    return ttt_grad(ctx, 1, &L, NULL, NIN_MLP, x, grads, create);
}

static void make_mlp_weights_of_loss(ttt_ctx *ctx, const shape_cfg *c, ttt_tensor **r) {
    const int64_t B = c->B, H = c->H, T = c->T, d = c->d, F = 4 * d;
    const int64_t shapes[5][4] = {{B, H, T, d}, {B, H, d, F}, {B, H, 1, F}, {B, H, F, d}, {B, H, 1, d}};
    for (int i = 0; i < 5; i++) {
        r[i] = ttt_persistent(ctx, TTT_F64, 4, shapes[i], "r");
        ttt_assign(ctx, r[i], ttt_randn(ctx, TTT_F64, 4, shapes[i], 1.0));
    }
}

/* the kernel's forward (no graph) against the composed form; then the op's gradients with a graph (the
 * backward kernel), the loss on out or on out and the final weights */
static void test_mlp_op(ttt_ctx *ctx, const shape_cfg *c, ttt_dtype dt, int use_state) {
    ttt_tensor *x[NIN_MLP], *r[5], *ra[5], *rb[5], *ga[NIN_MLP], *gb[NIN_MLP];
    make_mlp_inputs(ctx, c, x);
    make_mlp_weights_of_loss(ctx, c, r);
    ttt_step_reset(ctx);
    /* f32 at d 4: the inner LayerNorm over 4 features amplifies rounding, and the two paths round in different
     * orders (the composed one through BLAS, whose kernels differ by CPU): 9.6e-5 on an AVX2 EPYC against
     * < 1e-5 on an AVX-512 Xeon, while f64 agrees to 1e-12 on both */
    const double tol = dt == TTT_F64 ? 1e-12 : c->d <= 4 ? 3e-4 : 1e-5;
    ttt_no_grad_begin(ctx);
    const long long calls = ttt__profile_calls(TTT_K_ttt_mlp_scan);
    CHECK_MSG(run_mlp(ctx, x, dt, 1, use_state, r, ra, NULL, 0) == TTT_OK, "%s", ttt_error(ctx));
    CHECK(ttt__profile_calls(TTT_K_ttt_mlp_scan) == calls + 1);
    CHECK_MSG(run_mlp(ctx, x, dt, 0, use_state, r, rb, NULL, 0) == TTT_OK, "%s", ttt_error(ctx));
    double worst_out = 0, worst_g = 0;
    for (int i = 0; i < 5; i++) {
        const double e = rel_diff(ctx, ra[i], rb[i]);
        CHECK_MSG(e <= tol, "%s MLP output %d differs by %.2e", ttt_dtype_name(dt), i, e);
        worst_out = e > worst_out || e != e ? e : worst_out;
    }
    ttt_no_grad_end(ctx);
    const long long bwd_calls = ttt__profile_calls(TTT_K_ttt_mlp_scan_bwd);
    CHECK_MSG(run_mlp(ctx, x, dt, 1, use_state, r, ra, ga, 0) == TTT_OK, "%s", ttt_error(ctx));
    CHECK(ttt__profile_calls(TTT_K_ttt_mlp_scan_bwd) == bwd_calls + 1);
    CHECK_MSG(run_mlp(ctx, x, dt, 0, use_state, r, rb, gb, 0) == TTT_OK, "%s", ttt_error(ctx));
    for (int i = 0; i < NIN_MLP; i++) {
        const double e = rel_diff(ctx, ga[i], gb[i]);
        CHECK_MSG(e <= tol && ga[i]->ndim == x[i]->ndim, "%s MLP grad %s differs by %.2e", ttt_dtype_name(dt), MLP_NAMES[i], e);
        worst_g = e > worst_g || e != e ? e : worst_g;
    }
    printf("mlp op %s B%lld H%lld T%lld d%lld bs%lld weights %s, %s: outputs %.2e, gradients %.2e (relative)\n",
           ttt_dtype_name(dt), (long long)c->B, (long long)c->H, (long long)c->T, (long long)c->d, (long long)c->bs,
           c->batched_w0 ? "per sequence" : "shared", use_state ? "loss on out and the final weights" : "loss on out",
           worst_out, worst_g);
    ttt_step_reset(ctx);
    for (int i = 0; i < NIN_MLP; i++) ttt_persistent_free(ctx, x[i]);
    for (int i = 0; i < 5; i++) ttt_persistent_free(ctx, r[i]);
}

/* Central differences of L (the kernel's forward, no graph) along a random direction w of every input,
 * against <grad L, w> (the backward kernel), f64; the Hessian-vector product through the fused node against
 * the composed form's. */
static void test_mlp_fd(ttt_ctx *ctx) {
    const shape_cfg c = {.B = 2, .H = 2, .T = 16, .d = 4, .bs = 8, .batched_w0 = 1};
    ttt_tensor *x[NIN_MLP], *w[NIN_MLP], *u[NIN_MLP], *r[5], *res[5], *g[NIN_MLP];
    make_mlp_inputs(ctx, &c, x);
    make_mlp_weights_of_loss(ctx, &c, r);
    for (int i = 0; i < NIN_MLP; i++) {
        w[i] = ttt_persistent(ctx, TTT_F64, x[i]->ndim, x[i]->shape, "w");
        u[i] = ttt_persistent(ctx, TTT_F64, x[i]->ndim, x[i]->shape, "u");
        ttt_assign(ctx, w[i], ttt_randn(ctx, TTT_F64, x[i]->ndim, x[i]->shape, 1.0));
        ttt_assign(ctx, u[i], ttt_randn(ctx, TTT_F64, x[i]->ndim, x[i]->shape, 1.0));
    }
    const double h = 1e-5, steps[4] = {-h, h, -h / 2, h / 2};
    double f[4];
    for (int side = 0; side < 4; side++) {
        ttt_step_reset(ctx);
        ttt_no_grad_begin(ctx);
        ttt_tensor *xs[NIN_MLP];
        for (int i = 0; i < NIN_MLP; i++) xs[i] = ttt_add(ctx, x[i], ttt_scale(ctx, w[i], steps[side]));
        CHECK(run_mlp(ctx, xs, TTT_F64, 1, 1, r, res, NULL, 0) == TTT_OK);
        double s = 0;
        for (int i = 0; i < 5; i++)
            s += ttt_item(ctx, ttt_sum(ctx, ttt_mul(ctx, res[i], ttt_reshape(ctx, r[i], res[i]->ndim, res[i]->shape)), 0, NULL, 0));
        f[side] = s;
        ttt_no_grad_end(ctx);
    }
    const double d1 = (f[1] - f[0]) / (2 * h), d2 = (f[3] - f[2]) / h, fd = (4 * d2 - d1) / 3;
    /* <grad L, w> by the backward kernel; the Hessian-vector product along w through the fused node
     * (create_graph: the composed recomputation) and through the composed form */
    double gw = 0, hv[2] = {0, 0};
    for (int fused = 1; fused >= 0; fused--) {
        ttt_step_reset(ctx);
        ttt_tensor *hg[NIN_MLP];
        int rc = fused ? ttt__ttt_mlp_scan(ctx, x[0], x[1], x[2], x[3], x[4], x[5], x[6], x + 7, 1e-6, &res[0], res + 1)
                       : ttt__ttt_mlp_scan_composed(ctx, x[0], x[1], x[2], x[3], x[4], x[5], x[6], x + 7, 1e-6, &res[0], res + 1);
        CHECK(rc == TTT_OK);
        if (rc) return;
        CHECK(has_op(res[0], "ttt_mlp_scan") == fused);
        ttt_tensor *L = NULL;
        for (int i = 0; i < 5; i++) {
            ttt_tensor *t = ttt_sum(ctx, ttt_mul(ctx, res[i], ttt_reshape(ctx, r[i], res[i]->ndim, res[i]->shape)), 0, NULL, 0);
            L = L ? ttt_add(ctx, L, t) : t;
        }
        CHECK(ttt_grad(ctx, 1, &L, NULL, NIN_MLP, x, g, 1) == TTT_OK);
        ttt_tensor *gu = NULL;
        double gwi = 0;
        for (int i = 0; i < NIN_MLP; i++) {
            ttt_tensor *t = ttt_sum(ctx, ttt_mul(ctx, g[i], u[i]), 0, NULL, 0);
            gu = gu ? ttt_add(ctx, gu, t) : t;
            gwi += ttt_item(ctx, ttt_sum(ctx, ttt_mul(ctx, g[i], w[i]), 0, NULL, 0));
        }
        if (fused) gw = gwi;
        CHECK_MSG(ttt_grad(ctx, 1, &gu, NULL, NIN_MLP, x, hg, 0) == TTT_OK, "%s", ttt_error(ctx));
        for (int i = 0; i < NIN_MLP; i++) hv[fused] += ttt_item(ctx, ttt_sum(ctx, ttt_mul(ctx, hg[i], w[i]), 0, NULL, 0));
    }
    printf("mlp second order (f64): fused %.12g vs composed %.12g\n", hv[1], hv[0]);
    CHECK(fabs(hv[1] - hv[0]) <= 1e-10 * (1 + fabs(hv[0])));
    printf("mlp finite differences (f64, kernel forward): <dL, w> %.12g vs %.12g\n", gw, fd);
    CHECK(fabs(gw - fd) <= 1e-8 * (1 + fabs(fd)));
    ttt_step_reset(ctx);
    for (int i = 0; i < NIN_MLP; i++) ttt_persistent_free(ctx, x[i]), ttt_persistent_free(ctx, w[i]), ttt_persistent_free(ctx, u[i]);
    for (int i = 0; i < 5; i++) ttt_persistent_free(ctx, r[i]);
}

static void test_mlp_errors(ttt_ctx *ctx) {
    const shape_cfg c = {.B = 1, .H = 2, .T = 16, .d = 4, .bs = 8};
    ttt_tensor *x[NIN_MLP], *o, *w[4];
    make_mlp_inputs(ctx, &c, x);
    ttt_tensor *ws[4] = {x[7], x[8], x[7], x[10]}; /* W2 given W1's shape */
    CHECK(ttt__ttt_mlp_scan(ctx, x[0], x[1], x[2], x[3], x[4], x[5], x[6], ws, 1e-6, &o, w) == TTT_ERR &&
          strstr(ttt_error(ctx), "ttt_mlp_scan: w2"));
    ttt_tensor *ts[4] = {x[7], x[8], x[9], NULL};
    CHECK(ttt__ttt_mlp_scan(ctx, x[0], x[1], x[2], x[3], x[4], x[5], x[6], ts, 1e-6, &o, w) == TTT_ERR &&
          strstr(ttt_error(ctx), "b2 is NULL"));
    CHECK(ttt__ttt_mlp_scan(ctx, x[0], x[1], x[2], x[3], x[4], x[5], x[6], x + 7, -1, &o, w) == TTT_ERR &&
          strstr(ttt_error(ctx), "eps"));
    ttt_tensor *q12 = ttt_slice(ctx, x[0], 2, 0, 12, 1), *k12 = ttt_slice(ctx, x[1], 2, 0, 12, 1);
    ttt_tensor *v12 = ttt_slice(ctx, x[2], 2, 0, 12, 1), *e12 = ttt_slice(ctx, x[3], 2, 0, 12, 1);
    CHECK(ttt__ttt_mlp_scan(ctx, q12, k12, v12, e12, x[4], x[5], x[6], x + 7, 1e-6, &o, w) == TTT_ERR &&
          strstr(ttt_error(ctx), "multiple of the mini-batch"));
    ttt_step_reset(ctx);
    for (int i = 0; i < NIN_MLP; i++) ttt_persistent_free(ctx, x[i]);
}

int main(void) {
    setenv("TTT_PROFILE", "1", 1); /* kernel calls are counted (the fused forwards ran) */
    ttt_ctx *ctx = ttt_ctx_new(&(ttt_ctx_config){.device = TTT_CPU, .seed = 11, .threads = 2});
    test_errors(ctx);
    const shape_cfg shapes[] = {{.B = 2, .H = 2, .T = 32, .d = 4, .bs = 8, .batched_w0 = 0},
                                {.B = 2, .H = 3, .T = 32, .d = 6, .bs = 16, .batched_w0 = 1},
                                {.B = 1, .H = 2, .T = 8, .d = 8, .bs = 8, .batched_w0 = 0},
                                /* enough work for a team of two threads in the CPU kernels */
                                {.B = 2, .H = 2, .T = 64, .d = 32, .bs = 16, .batched_w0 = 1}};
    for (int si = 0; si < 4; si++)
        for (int use_state = 0; use_state < 2; use_state++) {
            test_op(ctx, &shapes[si], TTT_F64, use_state);
            test_op(ctx, &shapes[si], TTT_F32, use_state);
        }
    test_fd_and_second_order(ctx);
    test_bf16(ctx, &shapes[0], 0);
    test_bf16(ctx, &shapes[1], 1);
    for (int kind = TTT_RNN_LINEAR; kind <= TTT_RNN_MLP; kind++)
        for (int bb = 0; bb < 2; bb++) {
            test_layer(ctx, kind, bb, TTT_F64, 32);
            test_layer(ctx, kind, bb, TTT_F64, 37);
            test_layer(ctx, kind, bb, TTT_F32, 37);
            test_decode(ctx, kind, bb);
        }
    for (int kind = TTT_RNN_LINEAR; kind <= TTT_RNN_MLP; kind++) {
        test_step(ctx, kind, 0);
        test_step(ctx, kind, 1);
    }
    test_mlp_errors(ctx);
    for (int si = 0; si < 4; si++)
        for (int use_state = 0; use_state < 2; use_state++) {
            test_mlp_op(ctx, &shapes[si], TTT_F64, use_state);
            test_mlp_op(ctx, &shapes[si], TTT_F32, use_state);
        }
    test_mlp_fd(ctx);
    ttt_ctx_free(ctx);
    TEST_MAIN_END();
}
