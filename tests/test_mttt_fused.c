/* The fused MTTT-MLP inner step (src/composed/mttt_step.c, the CPU kernels in src/backends/cpu/cpu_mttt.c, the
 * CUDA kernels in src/backends/cuda/mttt_step.cu) against the composed ops, on the CPU:
 *   - the op: the four updated weights and the loss, and the gradients of ALL inputs (w1, b1, w2, b2, k, xt,
 *     gh, lng, lnb) of a loss on every output equal the composed form's, f64 to 1e-10 and f32 to 1e-4
 *     relative, over shapes with m not a multiple of anything, d 4..32, several B x H, with and without the
 *     LN, xt shared by the heads and per head, W expanded from [H, ..] and per pair; cotangents on the
 *     weights only and on the loss only;
 *   - the backward kernel against central differences of the fused forward (f64), and the second order
 *     (create_graph through the fused node: the composed recomputation) against the composed form's;
 *   - the MTTT-MLP layer fused (TTT_FUSED on) against composed (off): outputs and the gradients of every
 *     parameter and x for T = 1, 2, SGD, checkpointed steps, no decoder LN, f32; evaluation (no graph) and
 *     the inner-loss bookkeeping (the final loss by the forward kernel without the step);
 *   - the read-out gelu(q W1 + b1) W2 + b2 (ttt__mttt_mlp_apply): output and all gradients against the ops;
 *   - the ViT classifier's loss and parameter gradients fused against composed (T = 2, GD and SGD);
 *   - bad shapes and dtypes give messages naming the argument;
 * and where a GPU is present, all but the last again on a CUDA context (its kernels against the composed ops
 * there), then the CUDA kernels against the CPU kernels on the same inputs (W', the loss, all gradients, the
 * loss alone, the read-out and its gradients; f64 to 1e-11, f32 to 2e-4; also at the ViT's m 784, d 32,
 * D 64) and two CUDA runs bit for bit; the f32 ones again on a tf32 context (the split-bf16 tensor-core
 * kernels, within the same 2e-4). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/internal.h"
#include "ttt/ttt.h"
#include "ttt/vit.h"

static double max_abs(ttt_ctx *ctx, const ttt_tensor *t) {
    const int64_t n = ttt_numel(t);
    double *h = malloc(sizeof(double) * (size_t)(n ? n : 1)), m = 0;
    ttt_copy_to_host(ctx, t, h, TTT_F64);
    for (int64_t i = 0; i < n; i++) m = fabs(h[i]) > m || h[i] != h[i] ? fabs(h[i]) : m;
    free(h);
    return m;
}

/* max |a - b| / max(1e-3, max |b|) (NaN when either is missing or the sizes differ) */
static double rel_diff(ttt_ctx *ctx, ttt_tensor *a, ttt_tensor *b) {
    if (!a || !b || ttt_numel(a) != ttt_numel(b)) return NAN;
    ttt_mark_t m = ttt_mark(ctx);
    ttt_no_grad_begin(ctx);
    const double s = max_abs(ctx, b),
                 d = max_abs(ctx, ttt_sub(ctx, ttt_cast(ctx, a, TTT_F64), ttt_cast(ctx, b, TTT_F64)));
    ttt_no_grad_end(ctx);
    ttt_release(ctx, m);
    return d / (s > 1e-3 ? s : 1e-3);
}

/* Does the graph behind t hold a node of this op? */
static int has_op(const ttt_tensor *t, const char *op) {
    enum { MAXN = 1 << 14 };
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

/* ---- the op ------------------------------------------------------------------------------------------ */

enum { NIN = 9 };
static const char *NAMES[NIN] = {"w1", "b1", "w2", "b2", "k", "xt", "gh", "lng", "lnb"};

typedef struct {
    int64_t B, H, m, d, D;
    int ln, xt_heads, w_shared;
} op_cfg;

static ttt_tensor *rand_param(ttt_ctx *ctx, int nd, const int64_t *shape, double mean, double sd) {
    ttt_tensor *p = ttt_persistent(ctx, TTT_F64, nd, shape, "x");
    ttt_mark_t m = ttt_mark(ctx);
    ttt_assign(ctx, p, ttt_add_scalar(ctx, ttt_randn(ctx, TTT_F64, nd, shape, sd), mean));
    ttt_release(ctx, m);
    return p;
}

/* The base tensors (persistent f64): the weights [H, ..] (shared) or [B, H, ..], k as [B, m, H, d] and gh as
 * [D, H, d] (the op gets permuted views of them, as from the layer), xt, lng, lnb. */
static int make_inputs(ttt_ctx *ctx, const op_cfg *c, ttt_tensor **x) {
    const int64_t B = c->B, H = c->H, m = c->m, d = c->d, D = c->D, F = 4 * d;
    const int64_t rc[4][2] = {{d, F}, {1, F}, {F, d}, {1, d}};
    const double sd[4] = {0.6 / sqrt((double)d), 0.3, 0.6 / sqrt((double)F), 0.3};
    for (int i = 0; i < 4; i++) {
        const int64_t shape[4] = {B, H, rc[i][0], rc[i][1]};
        x[i] = c->w_shared ? rand_param(ctx, 3, shape + 1, 0, sd[i]) : rand_param(ctx, 4, shape, 0, sd[i]);
    }
    x[4] = rand_param(ctx, TTT_DIMS(B, m, H, d), 0, 1.0);
    x[5] = rand_param(ctx, TTT_DIMS(B, c->xt_heads ? H : 1, m, D), 0, 1.0);
    x[6] = rand_param(ctx, TTT_DIMS(D, H, d), 0, 1.0 / sqrt((double)d));
    x[7] = c->ln ? rand_param(ctx, TTT_DIMS(H, 1, D), 1.0, 0.3) : NULL;
    x[8] = c->ln ? rand_param(ctx, TTT_DIMS(H, 1, D), 0, 0.3) : NULL;
    return c->ln ? NIN : 7;
}

/* The weights of the outer loss: r[0..3] for W' ([B, H, ..]), r[4] the loss's */
static void make_loss_weights(ttt_ctx *ctx, const op_cfg *c, ttt_tensor **r) {
    const int64_t B = c->B, H = c->H, d = c->d, F = 4 * d;
    const int64_t rc[4][2] = {{d, F}, {1, F}, {F, d}, {1, d}};
    for (int i = 0; i < 4; i++) r[i] = rand_param(ctx, TTT_DIMS(B, H, rc[i][0], rc[i][1]), 0, 1.0);
    r[4] = rand_param(ctx, TTT_DIMS(1), 0.7, 0.0);
}

static const double ETA = 0.8, EPS = 1e-6;

/* W' and the loss, fused or composed, from leaves cast to dt (the op gets views of them); grads != NULL:
 * also the gradients of L = sum_i <W'_i, r_i> [use & 1] + r_4 loss [use & 2] in every leaf
 * (create: differentiable). */
static int run_op(ttt_ctx *ctx, const op_cfg *c, ttt_tensor *const *x64, int n, ttt_dtype dt, int fused, int use,
                  ttt_tensor *const *r, ttt_tensor **res, ttt_tensor **grads, int create, ttt_tensor **L_out,
                  int direct) {
    const int64_t B = c->B, H = c->H, m = c->m, d = c->d, F = 4 * d;
    static const int perm[4] = {0, 2, 1, 3}, perm3[3] = {1, 0, 2};
    ttt_tensor *x[NIN] = {0}, *w[4];
    for (int i = 0; i < n; i++) {
        if (direct) { /* the caller's leaves */
            x[i] = x64[i];
            continue;
        }
        x[i] = ttt_cast(ctx, ttt_detach(ctx, x64[i]), dt);
        ttt_set_requires_grad(x[i], grads != NULL);
    }
    const int64_t rc[4][2] = {{d, F}, {1, F}, {F, d}, {1, d}};
    for (int i = 0; i < 4; i++) w[i] = c->w_shared ? ttt_expand(ctx, x[i], TTT_DIMS(B, H, rc[i][0], rc[i][1])) : x[i];
    ttt_tensor *k = ttt_permute(ctx, x[4], perm), *gh = ttt_permute(ctx, x[6], perm3);
    (void)m;
    int rc_ = fused ? ttt__mttt_mlp_step(ctx, w, k, x[5], gh, x[7], x[8], ETA, EPS, res, &res[4])
                    : ttt__mttt_mlp_step_composed(ctx, w, k, x[5], gh, x[7], x[8], ETA, EPS, res, &res[4]);
    if (rc_) return rc_;
    if (!grads && !L_out) return TTT_OK;
    ttt_tensor *L = NULL;
    for (int i = 0; i < 5; i++) {
        if (!((i < 4 ? 1 : 2) & use)) continue;
        ttt_tensor *ri = ttt_cast(ctx, r[i], dt);
        ttt_tensor *t = i < 4 ? ttt_sum(ctx, ttt_mul(ctx, res[i], ri), 0, NULL, 0)
                              : ttt_mul(ctx, res[4], ttt_reshape(ctx, ri, 0, NULL));
        L = L ? ttt_add(ctx, L, t) : t;
    }
    if (L_out) *L_out = L;
    if (!grads) return TTT_OK;
    if (fused) CHECK(has_op(L, "mttt_mlp_step"));
    return ttt_grad(ctx, 1, &L, NULL, n, x, grads, create);
}

static void free_all(ttt_ctx *ctx, ttt_tensor **t, int n) {
    for (int i = 0; i < n; i++)
        if (t[i]) ttt_persistent_free(ctx, t[i]), t[i] = NULL;
}

static void test_op(ttt_ctx *ctx, const op_cfg *c, ttt_dtype dt, int use) {
    ttt_tensor *x[NIN] = {0}, *r[5], *ra[5], *rb[5], *ga[NIN], *gb[NIN];
    const int n = make_inputs(ctx, c, x);
    make_loss_weights(ctx, c, r);
    ttt_step_reset(ctx);
    const double tol = dt == TTT_F64 ? 1e-10 : 1e-4;
    /* the forward kernel (no graph) */
    ttt_no_grad_begin(ctx);
    const long long calls = ttt__profile_calls(TTT_K_mttt_mlp_step);
    CHECK_MSG(run_op(ctx, c, x, n, dt, 1, use, r, ra, NULL, 0, NULL, 0) == TTT_OK, "%s", ttt_error(ctx));
    CHECK(ttt__profile_calls(TTT_K_mttt_mlp_step) == calls + 1);
    CHECK_MSG(run_op(ctx, c, x, n, dt, 0, use, r, rb, NULL, 0, NULL, 0) == TTT_OK, "%s", ttt_error(ctx));
    double worst_out = 0, worst_g = 0;
    for (int i = 0; i < 5; i++) {
        const double e = rel_diff(ctx, ra[i], rb[i]);
        CHECK_MSG(e <= tol, "%s output %d differs by %.2e", ttt_dtype_name(dt), i, e);
        worst_out = e > worst_out || e != e ? e : worst_out;
    }
    ttt_no_grad_end(ctx);
    /* the gradients of every input: the backward kernel against the composed form's second order */
    const long long bwd_calls = ttt__profile_calls(TTT_K_mttt_mlp_step_bwd);
    CHECK_MSG(run_op(ctx, c, x, n, dt, 1, use, r, ra, ga, 0, NULL, 0) == TTT_OK, "%s", ttt_error(ctx));
    CHECK(ttt__profile_calls(TTT_K_mttt_mlp_step_bwd) == bwd_calls + 1);
    CHECK_MSG(run_op(ctx, c, x, n, dt, 0, use, r, rb, gb, 0, NULL, 0) == TTT_OK, "%s", ttt_error(ctx));
    for (int i = 0; i < n; i++) {
        const double e = rel_diff(ctx, ga[i], gb[i]);
        CHECK_MSG(e <= tol && ga[i] && ga[i]->ndim == x[i]->ndim, "%s gradient of %s differs by %.2e", ttt_dtype_name(dt),
                  NAMES[i], e);
        worst_g = e > worst_g || e != e ? e : worst_g;
    }
    printf("op %s B%lld H%lld m%lld d%lld D%lld %s, xt %s, W %s, cotangents on %s: outputs %.1e, gradients %.1e\n",
           ttt_dtype_name(dt), (long long)c->B, (long long)c->H, (long long)c->m, (long long)c->d, (long long)c->D,
           c->ln ? "LN" : "no LN", c->xt_heads ? "per head" : "shared", c->w_shared ? "expanded" : "per pair",
           use == 3 ? "W' and loss" : use == 1 ? "W' only" : "loss only", worst_out, worst_g);
    ttt_step_reset(ctx);
    free_all(ctx, x, n);
    free_all(ctx, r, 5);
}

/* <grad L, w> from the backward kernel against central differences (Richardson) of L through the fused
 * forward along a random direction w of every input, f64; the Hessian-vector product through the fused
 * node (create_graph) against the composed form's. */
static void test_fd(ttt_ctx *ctx, const op_cfg *c) {
    ttt_tensor *x[NIN] = {0}, *w[NIN] = {0}, *u[NIN] = {0}, *r[5], *res[5], *g[NIN], *xs[NIN], *L;
    const int n = make_inputs(ctx, c, x);
    make_loss_weights(ctx, c, r);
    for (int i = 0; i < n; i++) {
        w[i] = rand_param(ctx, x[i]->ndim, x[i]->shape, 0, 1.0);
        u[i] = rand_param(ctx, x[i]->ndim, x[i]->shape, 0, 1.0);
    }
    const double h = 1e-4, steps[4] = {-h, h, -h / 2, h / 2};
    double f[4] = {0};
    for (int side = 0; side < 4; side++) {
        ttt_step_reset(ctx);
        ttt_no_grad_begin(ctx);
        for (int i = 0; i < n; i++) xs[i] = ttt_add(ctx, x[i], ttt_scale(ctx, w[i], steps[side]));
        CHECK(run_op(ctx, c, xs, n, TTT_F64, 1, 3, r, res, NULL, 0, &L, 1) == TTT_OK);
        f[side] = L ? ttt_item(ctx, L) : NAN;
        ttt_no_grad_end(ctx);
    }
    const double d1 = (f[1] - f[0]) / (2 * h), d2 = (f[3] - f[2]) / h, fd = (4 * d2 - d1) / 3;
    double gw = 0, hv[2] = {0, 0};
    for (int fused = 1; fused >= 0; fused--) {
        ttt_step_reset(ctx);
        ttt_tensor *xl[NIN], *hg[NIN];
        for (int i = 0; i < n; i++) {
            xl[i] = ttt_detach(ctx, x[i]);
            ttt_set_requires_grad(xl[i], 1);
        }
        CHECK(run_op(ctx, c, xl, n, TTT_F64, fused, 3, r, res, g, 1, &L, 1) == TTT_OK);
        ttt_tensor *gu = NULL;
        double gwi = 0;
        for (int i = 0; i < n; i++) {
            ttt_tensor *t = ttt_sum(ctx, ttt_mul(ctx, g[i], u[i]), 0, NULL, 0);
            gu = gu ? ttt_add(ctx, gu, t) : t;
            gwi += ttt_item(ctx, ttt_sum(ctx, ttt_mul(ctx, g[i], w[i]), 0, NULL, 0));
        }
        if (fused) gw = gwi;
        CHECK_MSG(gu && ttt_grad(ctx, 1, &gu, NULL, n, xl, hg, 0) == TTT_OK, "%s", ttt_error(ctx));
        for (int i = 0; i < n; i++) hv[fused] += ttt_item(ctx, ttt_sum(ctx, ttt_mul(ctx, hg[i], w[i]), 0, NULL, 0));
    }
    printf("finite differences (f64, %s): <dL, w> %.12g vs %.12g; second order fused %.12g vs composed %.12g\n",
           c->ln ? "LN" : "no LN", gw, fd, hv[1], hv[0]);
    CHECK_MSG(fabs(gw - fd) <= 1e-7 * (1 + fabs(fd)), "%.12g vs %.12g", gw, fd);
    CHECK_MSG(fabs(hv[1] - hv[0]) <= 1e-10 * (1 + fabs(hv[0])), "%.12g vs %.12g", hv[1], hv[0]);
    ttt_step_reset(ctx);
    free_all(ctx, x, n), free_all(ctx, w, n), free_all(ctx, u, n), free_all(ctx, r, 5);
}

static void test_errors(ttt_ctx *ctx) {
    const op_cfg c = {.B = 2, .H = 2, .m = 5, .d = 4, .D = 6, .ln = 1, .xt_heads = 0, .w_shared = 0};
    ttt_tensor *x[NIN] = {0}, *o[4], *loss;
    const int n = make_inputs(ctx, &c, x);
    static const int perm[4] = {0, 2, 1, 3}, perm3[3] = {1, 0, 2};
    ttt_tensor *k = ttt_permute(ctx, x[4], perm), *gh = ttt_permute(ctx, x[6], perm3);
    ttt_tensor *w[4] = {x[0], x[1], x[2], x[3]};
    CHECK_MSG(ttt__mttt_mlp_step(ctx, w, k, x[5], gh, x[7], x[8], ETA, EPS, o, &loss) == TTT_OK, "%s", ttt_error(ctx));
    ttt_tensor *bad_w[4] = {x[0], x[1], x[0], x[3]}; /* W2 given W1's shape */
    CHECK(ttt__mttt_mlp_step(ctx, bad_w, k, x[5], gh, x[7], x[8], ETA, EPS, o, &loss) == TTT_ERR &&
          strstr(ttt_error(ctx), "mttt_mlp_step: w2"));
    ttt_tensor *null_w[4] = {x[0], x[1], x[2], NULL};
    CHECK(ttt__mttt_mlp_step(ctx, null_w, k, x[5], gh, x[7], x[8], ETA, EPS, o, &loss) == TTT_ERR &&
          strstr(ttt_error(ctx), "b2 is NULL"));
    CHECK(ttt__mttt_mlp_step(ctx, w, x[4], x[5], gh, x[7], x[8], ETA, EPS, o, &loss) == TTT_ERR &&
          strstr(ttt_error(ctx), "mttt_mlp_step: w1")); /* k [B, m, H, d] unpermuted: d of W1 no longer fits */
    CHECK(ttt__mttt_mlp_step(ctx, w, k, x[5], x[6], x[7], x[8], ETA, EPS, o, &loss) == TTT_ERR &&
          strstr(ttt_error(ctx), "mttt_mlp_step: gh"));
    CHECK(ttt__mttt_mlp_step(ctx, w, k, ttt_slice(ctx, x[5], 2, 0, 4, 1), gh, x[7], x[8], ETA, EPS, o, &loss) == TTT_ERR &&
          strstr(ttt_error(ctx), "mttt_mlp_step: xt"));
    CHECK(ttt__mttt_mlp_step(ctx, w, k, x[5], gh, x[7], NULL, ETA, EPS, o, &loss) == TTT_ERR &&
          strstr(ttt_error(ctx), "lng and lnb"));
    CHECK(ttt__mttt_mlp_step(ctx, w, k, x[5], gh, x[7], x[7], ETA, -1, o, &loss) == TTT_ERR && strstr(ttt_error(ctx), "eps"));
    CHECK(ttt__mttt_mlp_step(ctx, w, k, x[5], gh, x[7], x[8], NAN, EPS, o, &loss) == TTT_ERR && strstr(ttt_error(ctx), "eta"));
    ttt_tensor *k32 = ttt_cast(ctx, k, TTT_F32);
    CHECK(ttt__mttt_mlp_step(ctx, w, k32, x[5], gh, x[7], x[8], ETA, EPS, o, &loss) == TTT_ERR &&
          strstr(ttt_error(ctx), "mttt_mlp_step: w1 f64"));
    ttt_tensor *kbf = ttt_cast(ctx, k, TTT_BF16);
    CHECK(ttt__mttt_mlp_step(ctx, w, kbf, x[5], gh, x[7], x[8], ETA, EPS, o, &loss) == TTT_ERR &&
          strstr(ttt_error(ctx), "mttt_mlp_step: k bf16"));
    CHECK(ttt__mttt_mlp_step(ctx, w, k, x[5], gh, x[7], x[8], ETA, EPS, NULL, &loss) == TTT_ERR);
    ttt_step_reset(ctx);
    free_all(ctx, x, n);
}

/* The read-out gelu(q W1 + b1) W2 + b2 (ttt__mttt_mlp_apply): the kernels against the composed ops, output and
 * the gradients of the weights (expanded or per pair) and q. */
static void test_apply(ttt_ctx *ctx, const op_cfg *c, ttt_dtype dt) {
    ttt_tensor *x[NIN] = {0}, *res[2] = {NULL, NULL}, *g[2][5] = {{NULL}};
    const int n = make_inputs(ctx, c, x);
    ttt_tensor *r = rand_param(ctx, TTT_DIMS(c->B, c->H, c->m, c->d), 0, 1.0);
    ttt_step_reset(ctx);
    const int64_t B = c->B, H = c->H, d = c->d, F = 4 * d;
    const int64_t rc[4][2] = {{d, F}, {1, F}, {F, d}, {1, d}};
    static const int perm[4] = {0, 2, 1, 3};
    const long long calls = ttt__profile_calls(TTT_K_mttt_mlp_apply), bwd = ttt__profile_calls(TTT_K_mttt_mlp_apply_bwd);
    for (int fused = 1; fused >= 0; fused--) {
        ttt_tensor *leaf[5], *w[4];
        for (int i = 0; i < 5; i++) {
            leaf[i] = ttt_cast(ctx, ttt_detach(ctx, x[i]), dt);
            ttt_set_requires_grad(leaf[i], 1);
        }
        for (int i = 0; i < 4; i++) w[i] = c->w_shared ? ttt_expand(ctx, leaf[i], TTT_DIMS(B, H, rc[i][0], rc[i][1])) : leaf[i];
        ttt_tensor *q = ttt_permute(ctx, leaf[4], perm);
        res[fused] = fused ? ttt__mttt_mlp_apply(ctx, w, q) : ttt__mttt_mlp_apply_composed(ctx, w, q);
        if (fused) CHECK(has_op(res[fused], "mttt_mlp_apply"));
        ttt_tensor *L = ttt_sum(ctx, ttt_mul(ctx, res[fused], ttt_cast(ctx, r, dt)), 0, NULL, 0);
        CHECK_MSG(L && ttt_grad(ctx, 1, &L, NULL, 5, leaf, g[fused], 0) == TTT_OK, "%s", ttt_error(ctx));
    }
    CHECK(ttt__profile_calls(TTT_K_mttt_mlp_apply) == calls + 1 && ttt__profile_calls(TTT_K_mttt_mlp_apply_bwd) == bwd + 1);
    const double tol = dt == TTT_F64 ? 1e-10 : 1e-4;
    double worst = rel_diff(ctx, res[1], res[0]);
    CHECK_MSG(worst <= tol, "apply %s: outputs differ by %.2e", ttt_dtype_name(dt), worst);
    for (int i = 0; i < 5; i++) {
        const double e = rel_diff(ctx, g[1][i], g[0][i]);
        CHECK_MSG(e <= tol, "apply %s: gradient of %s differs by %.2e", ttt_dtype_name(dt), i < 4 ? NAMES[i] : "q", e);
        worst = e > worst || e != e ? e : worst;
    }
    printf("read-out %s B%lld H%lld n%lld d%lld W %s: output and gradients %.1e\n", ttt_dtype_name(dt), (long long)B,
           (long long)H, (long long)c->m, (long long)d, c->w_shared ? "expanded" : "per pair", worst);
    ttt_step_reset(ctx);
    free_all(ctx, x, n);
    ttt_persistent_free(ctx, r);
}

/* ---- the layer and the ViT ------------------------------------------------------------------------ */

typedef struct {
    int n;
    ttt_tensor *out, *g[TTT_MTTT_MAX_PARAMS + 1];
} layer_run;

/* out and the gradients of sum(R tanh(out)) in every parameter and x (persistent copies, f64) */
static int run_layer(ttt_ctx *ctx, const ttt_mttt *l, ttt_tensor *x64, ttt_tensor *r64, ttt_dtype dt,
                     const ttt_mttt_run_opts *o, layer_run *res) {
    ttt_tensor *in[TTT_MTTT_MAX_PARAMS + 1], *g[TTT_MTTT_MAX_PARAMS + 1];
    const int np = ttt_mttt_params(l, in, NULL);
    ttt_tensor *x = ttt_cast(ctx, ttt_detach(ctx, x64), dt);
    ttt_set_requires_grad(x, 1);
    in[np] = x;
    ttt_tensor *out = ttt_mttt_forward(ctx, l, x, o);
    ttt_tensor *L = out ? ttt_sum(ctx, ttt_mul(ctx, ttt_cast(ctx, r64, dt), ttt_tanh(ctx, out)), 0, NULL, 0) : NULL;
    if (!L || ttt_grad(ctx, 1, &L, NULL, np + 1, in, g, 0) != TTT_OK) {
        fprintf(stderr, "run_layer: %s\n", ttt_error(ctx));
        return TTT_ERR;
    }
    res->n = np + 1;
    res->out = ttt_persistent(ctx, TTT_F64, out->ndim, out->shape, "out");
    ttt_assign(ctx, res->out, ttt_cast(ctx, out, TTT_F64));
    for (int i = 0; i <= np; i++) {
        res->g[i] = ttt_persistent(ctx, TTT_F64, g[i]->ndim, g[i]->shape, "g");
        ttt_assign(ctx, res->g[i], ttt_cast(ctx, g[i], TTT_F64));
    }
    ttt_step_reset(ctx);
    return TTT_OK;
}

static void layer_run_free(ttt_ctx *ctx, layer_run *r) {
    if (r->out) ttt_persistent_free(ctx, r->out);
    for (int i = 0; i < r->n; i++) ttt_persistent_free(ctx, r->g[i]);
    memset(r, 0, sizeof *r);
}

static void test_layer(ttt_ctx *ctx) {
    const int64_t B = 2, n = 7, D = 8, H = 2;
    const struct {
        int steps, sgd, checkpoint, no_ln;
        ttt_dtype dt;
        const char *name;
    } cases[] = {
        {1, 0, 0, 0, TTT_F64, "T=1 GD"},        {2, 0, 0, 0, TTT_F64, "T=2 GD"},
        {2, 1, 0, 0, TTT_F64, "T=2 SGD (m 4, 3)"}, {3, 1, 1, 0, TTT_F64, "T=3 SGD checkpointed"},
        {2, 0, 1, 0, TTT_F64, "T=2 GD checkpointed"}, {1, 0, 0, 1, TTT_F64, "T=1 GD no decoder LN"},
        {2, 0, 0, 0, TTT_F32, "T=2 GD f32"},
    };
    ttt_tensor *x = rand_param(ctx, TTT_DIMS(B, n, D), 0, 1.0), *r = rand_param(ctx, TTT_DIMS(B, n, D), 0, 1.0);
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        ttt_mttt_config cfg = ttt_mttt_config_default(TTT_SEQ_MTTT, TTT_MTTT_MLP, D, H);
        cfg.steps = cases[ci].steps, cfg.sgd = cases[ci].sgd, cfg.no_decoder_ln = cases[ci].no_ln, cfg.eta = 0.7;
        ttt_mttt l;
        const ttt_dtype dt = cases[ci].dt;
        CHECK_MSG(ttt_mttt_init(ctx, &l, &cfg, dt) == TTT_OK, "%s", ttt_error(ctx));
        double il[2][TTT_MTTT_MAX_STEPS + 1];
        layer_run a = {0}, b = {0};
        const long long bwd = ttt__profile_calls(TTT_K_mttt_mlp_step_bwd);
        for (int fused = 1; fused >= 0; fused--) {
            ttt__set_fused(ctx, fused);
            const ttt_mttt_run_opts o = {.seed = 9, .checkpoint = cases[ci].checkpoint, .inner_loss = il[fused]};
            CHECK(run_layer(ctx, &l, x, r, dt, &o, fused ? &a : &b) == TTT_OK);
        }
        ttt__set_fused(ctx, 1);
        CHECK_MSG(ttt__profile_calls(TTT_K_mttt_mlp_step_bwd) >= bwd + cfg.steps, "%s: the fused backward did not run",
                  cases[ci].name);
        const double tol = dt == TTT_F64 ? 1e-10 : 1e-4;
        double worst = rel_diff(ctx, a.out, b.out);
        CHECK_MSG(worst <= tol, "%s: outputs differ by %.2e", cases[ci].name, worst);
        for (int i = 0; i < a.n && i < b.n; i++) {
            const double e = rel_diff(ctx, a.g[i], b.g[i]);
            CHECK_MSG(e <= tol, "%s: gradient %d differs by %.2e", cases[ci].name, i, e);
            worst = e > worst || e != e ? e : worst;
        }
        double worst_il = 0;
        for (int t = 0; t <= cfg.steps; t++) worst_il = fmax(worst_il, fabs(il[1][t] - il[0][t]) / fmax(1e-3, fabs(il[0][t])));
        CHECK_MSG(worst_il <= tol, "%s: inner losses %.2e apart", cases[ci].name, worst_il);
        printf("layer %-28s fused vs composed: outputs and all gradients %.1e, inner losses %.1e\n", cases[ci].name,
               worst, worst_il);
        layer_run_free(ctx, &a), layer_run_free(ctx, &b);
        /* evaluation: no graph recorded, the inner loop still adapts */
        double ev[2], eil[2][TTT_MTTT_MAX_STEPS + 1];
        for (int fused = 1; fused >= 0; fused--) {
            ttt__set_fused(ctx, fused);
            ttt_no_grad_begin(ctx);
            const long long fwd = ttt__profile_calls(TTT_K_mttt_mlp_step);
            ttt_tensor *out = ttt_mttt_forward(ctx, &l, ttt_cast(ctx, x, dt),
                                               &(ttt_mttt_run_opts){.seed = 9, .inner_loss = eil[fused]});
            /* T steps and the final inner loss (the kernel without the step) */
            CHECK_MSG(ttt__profile_calls(TTT_K_mttt_mlp_step) - fwd == (fused ? cfg.steps + 1 : 0), "%s: %lld kernel calls",
                      cases[ci].name, ttt__profile_calls(TTT_K_mttt_mlp_step) - fwd);
            ev[fused] = out ? ttt_item(ctx, ttt_sum(ctx, ttt_mul(ctx, out, out), 0, NULL, 0)) : NAN;
            ttt_no_grad_end(ctx);
            ttt_step_reset(ctx);
        }
        ttt__set_fused(ctx, 1);
        CHECK_MSG(fabs(ev[1] - ev[0]) <= tol * fabs(ev[0]), "%s evaluation: %.12g vs %.12g", cases[ci].name, ev[1], ev[0]);
        for (int t = 0; t <= cfg.steps; t++)
            CHECK_MSG(fabs(eil[1][t] - eil[0][t]) <= tol * fabs(eil[0][t]), "%s evaluation inner loss %d: %.12g vs %.12g",
                      cases[ci].name, t, eil[1][t], eil[0][t]);
        ttt_mttt_free(ctx, &l);
    }
    ttt_persistent_free(ctx, x), ttt_persistent_free(ctx, r);
}

static void test_vit(ttt_device dev, int sgd) {
    enum { VB = 3, VN = 5, VF = 4, VD = 8 };
    ttt_ctx *ctx = ttt_ctx_new(&(ttt_ctx_config){.device = dev, .seed = 11, .threads = 2});
    ttt_vit m;
    ttt_vit_config c = ttt_vit_config_default(VF, VN, VD, 2, 2, TTT_SEQ_MTTT, TTT_MTTT_MLP);
    c.classes = 3, c.seq.steps = 2, c.seq.sgd = sgd, c.seq.eta = 0.5;
    CHECK(ttt_vit_init(ctx, &m, &c, TTT_F64) == TTT_OK);
    double xs[VB * VN * VF];
    int32_t ys[VB] = {2, 0, 1};
    for (int i = 0; i < VB * VN * VF; i++) xs[i] = cos(0.9 * i + 0.3);
    double loss[2];
    ttt_tensor **g[2];
    for (int fused = 1; fused >= 0; fused--) {
        ttt__set_fused(ctx, fused);
        CHECK(ttt_zero_grad(ctx, m.n_params, m.params) == TTT_OK);
        ttt_tensor *x = ttt_from_host(ctx, TTT_F64, TTT_DIMS(VB, VN, VF), xs);
        ttt_tensor *y = ttt_from_host(ctx, TTT_I32, TTT_DIMS(VB), ys);
        ttt_tensor *l = ttt_cross_entropy(ctx, ttt_vit_forward(ctx, &m, x, &(ttt_vit_run_opts){.seed = 5}), y, -100);
        CHECK_MSG(l && ttt_backward(ctx, l) == TTT_OK, "%s", ttt_error(ctx));
        loss[fused] = l ? ttt_item(ctx, l) : NAN;
        ttt_step_reset(ctx);
        g[fused] = calloc((size_t)m.n_params, sizeof(ttt_tensor *));
        for (int i = 0; i < m.n_params; i++) {
            g[fused][i] = ttt_persistent(ctx, TTT_F64, m.params[i]->ndim, m.params[i]->shape, "g");
            ttt_assign(ctx, g[fused][i], m.params[i]->grad);
        }
    }
    ttt__set_fused(ctx, 1);
    double worst = fabs(loss[1] - loss[0]) / fabs(loss[0]);
    for (int i = 0; i < m.n_params; i++) {
        const double e = rel_diff(ctx, g[1][i], g[0][i]);
        CHECK_MSG(e <= 1e-10, "ViT %s: gradient of %s differs by %.2e", sgd ? "SGD" : "GD", m.names[i], e);
        worst = e > worst || e != e ? e : worst;
        ttt_persistent_free(ctx, g[0][i]), ttt_persistent_free(ctx, g[1][i]);
    }
    CHECK(worst <= 1e-10);
    printf("ViT T=2 %s on %s: loss and all %d parameter gradients fused vs composed %.1e\n", sgd ? "SGD" : "GD",
           dev == TTT_CUDA ? "cuda" : "cpu", m.n_params, worst);
    free(g[0]), free(g[1]);
    ttt_vit_free(ctx, &m);
    ttt_ctx_free(ctx);
}

/* ---- CUDA (where a GPU is present) ---------------------------------------------------------------------- */

/* t's values as doubles on the host (malloc'd) */
static double *host(ttt_ctx *ctx, const ttt_tensor *t) {
    const int64_t n = t ? ttt_numel(t) : 0;
    double *h = malloc(sizeof(double) * (size_t)(n ? n : 1));
    if (t && ttt_copy_to_host(ctx, t, h, TTT_F64) != TTT_OK) h[0] = NAN;
    return h;
}

/* a persistent f64 copy on ctx of src's tensor t */
static ttt_tensor *clone_to(ttt_ctx *ctx, ttt_ctx *src, ttt_tensor *t) {
    double *h = host(src, t);
    ttt_tensor *p = ttt_persistent(ctx, TTT_F64, t->ndim, t->shape, "x");
    ttt_mark_t m = ttt_mark(ctx);
    ttt_assign(ctx, p, ttt_from_host(ctx, TTT_F64, t->ndim, t->shape, h));
    ttt_release(ctx, m);
    free(h);
    return p;
}

/* max |a - b| / max(1e-3, max |b|) of host arrays */
static double rel_host(const double *a, const double *b, int64_t n) {
    double d = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        const double x = fabs(a[i] - b[i]);
        d = x > d || x != x ? x : d;
        s = fabs(b[i]) > s ? fabs(b[i]) : s;
    }
    return d / (s > 1e-3 ? s : 1e-3);
}

/* The op through the CUDA kernels against the CPU kernels on the same inputs: W', the loss and the gradients
 * of every input (cotangents on W' and the loss), the loss alone (no step), the read-out and its gradients;
 * and a second CUDA run must give the same bits (the kernels sum in a fixed order). */
/* The f32 tolerance of the CUDA kernels against the CPU's: 2e-4 for the FMA tiles and split-bf16 (~2^-16 a
 * product); with TF32 mma (TTT_MTTT_MMA=3 in a context that allows TF32, =4 in any), 1.5e-2, as the host
 * emulator's test (dev/cuda/mttt_step_emu_test.cpp: worst seen 6.3e-3). */
static int g_gpu_tf32; /* the CUDA context under test allows TF32 (test_cuda's second part) */
static double tc_tf32_tol(void) {
    const char *e = getenv("TTT_MTTT_MMA");
    return e && ((!strcmp(e, "3") && g_gpu_tf32) || !strcmp(e, "4")) ? 1.5e-2 : 2e-4;
}

static void test_cuda_vs_cpu(ttt_ctx *cpu, ttt_ctx *gpu, const op_cfg *c, ttt_dtype dt) {
    ttt_tensor *xc[NIN] = {0}, *rc[5], *xg[NIN] = {0}, *rg[5];
    const int n = make_inputs(cpu, c, xc);
    make_loss_weights(cpu, c, rc);
    for (int i = 0; i < n; i++) xg[i] = clone_to(gpu, cpu, xc[i]);
    for (int i = 0; i < 5; i++) rg[i] = clone_to(gpu, cpu, rc[i]);
    ttt_ctx *cx[3] = {cpu, gpu, gpu};
    ttt_tensor **xs[3] = {xc, xg, xg}, **rs[3] = {rc, rg, rg};
    double *h[3][NIN + 5 + 1 + 6] = {{0}};
    int64_t len[NIN + 5 + 1 + 6] = {0};
    const long long fwd = ttt__profile_calls(TTT_K_mttt_mlp_step), bwd = ttt__profile_calls(TTT_K_mttt_mlp_step_bwd);
    const int64_t B = c->B, H = c->H, d = c->d, F = 4 * d;
    const int64_t rcs[4][2] = {{d, F}, {1, F}, {F, d}, {1, d}};
    static const int perm[4] = {0, 2, 1, 3}, perm3[3] = {1, 0, 2};
    for (int run = 0; run < 3; run++) {
        ttt_ctx *ctx = cx[run];
        ttt_step_reset(ctx);
        ttt_tensor *res[5], *g[NIN];
        CHECK_MSG(run_op(ctx, c, xs[run], n, dt, 1, 3, rs[run], res, g, 0, NULL, 0) == TTT_OK, "%s", ttt_error(ctx));
        for (int i = 0; i < 5; i++) h[run][i] = host(ctx, res[i]), len[i] = ttt_numel(res[i]);
        for (int i = 0; i < n; i++) h[run][5 + i] = host(ctx, g[i]), len[5 + i] = ttt_numel(g[i]);
        /* the loss alone (the forward kernel without the step) and the read-out, no graph for the loss */
        ttt_tensor *w[4], *leaf[5], *ga[5];
        for (int i = 0; i < 5; i++) {
            leaf[i] = ttt_cast(ctx, ttt_detach(ctx, xs[run][i]), dt);
            ttt_set_requires_grad(leaf[i], 1);
        }
        for (int i = 0; i < 4; i++) w[i] = c->w_shared ? ttt_expand(ctx, leaf[i], TTT_DIMS(B, H, rcs[i][0], rcs[i][1])) : leaf[i];
        ttt_tensor *k = ttt_permute(ctx, leaf[4], perm), *gh = ttt_permute(ctx, ttt_cast(ctx, xs[run][6], dt), perm3);
        ttt_tensor *xt = ttt_cast(ctx, xs[run][5], dt);
        ttt_tensor *lng = n > 7 ? ttt_cast(ctx, xs[run][7], dt) : NULL, *lnb = n > 7 ? ttt_cast(ctx, xs[run][8], dt) : NULL;
        ttt_no_grad_begin(ctx);
        ttt_tensor *l = ttt__mttt_mlp_loss(ctx, w, k, xt, gh, lng, lnb, EPS);
        ttt_no_grad_end(ctx);
        h[run][NIN + 5] = host(ctx, l), len[NIN + 5] = 1;
        ttt_tensor *o = ttt__mttt_mlp_apply(ctx, w, k);
        ttt_tensor *L = o ? ttt_sum(ctx, ttt_mul(ctx, o, ttt_tanh(ctx, o)), 0, NULL, 0) : NULL;
        CHECK_MSG(L && ttt_grad(ctx, 1, &L, NULL, 5, leaf, ga, 0) == TTT_OK, "%s", ttt_error(ctx));
        h[run][NIN + 6] = host(ctx, o), len[NIN + 6] = o ? ttt_numel(o) : 0;
        for (int i = 0; i < 5; i++) h[run][NIN + 7 + i] = host(ctx, ga[i]), len[NIN + 7 + i] = ga[i] ? ttt_numel(ga[i]) : 0;
        ttt_step_reset(ctx);
    }
    CHECK_MSG(ttt__profile_calls(TTT_K_mttt_mlp_step) >= fwd + 6 && ttt__profile_calls(TTT_K_mttt_mlp_step_bwd) >= bwd + 3,
              "the fused kernels did not run");
    const double tol = dt == TTT_F64 ? 1e-11 : tc_tf32_tol();
    double worst = 0;
    int same = 1;
    for (int i = 0; i < NIN + 12; i++) {
        if (i >= 5 + n && i < 5 + NIN) continue; /* no LN: no lng, lnb */
        const double e = rel_host(h[1][i], h[0][i], len[i]);
        CHECK_MSG(e <= tol, "cuda vs cpu %s: output %d differs by %.2e", ttt_dtype_name(dt), i, e);
        worst = e > worst || e != e ? e : worst;
        same &= !memcmp(h[1][i], h[2][i], sizeof(double) * (size_t)len[i]);
    }
    CHECK_MSG(same, "two CUDA runs differ");
    printf("cuda vs cpu %s B%lld H%lld m%lld d%lld D%lld %s, W %s: step, gradients, loss alone, read-out %.1e; "
           "two CUDA runs %s\n", ttt_dtype_name(dt), (long long)B, (long long)H, (long long)c->m, (long long)d,
           (long long)c->D, c->ln ? "LN" : "no LN", c->w_shared ? "expanded" : "per pair", worst,
           same ? "bit-identical" : "DIFFER");
    for (int r = 0; r < 3; r++)
        for (int i = 0; i < NIN + 12; i++) free(h[r][i]);
    free_all(cpu, xc, n), free_all(cpu, rc, 5), free_all(gpu, xg, n), free_all(gpu, rg, 5);
}

/* Everything above again on a CUDA context (its kernels against the composed ops there), then the
 * CUDA kernels against the CPU's, including the ViT's shape (m 784, d 32, D 64). */
static void test_cuda(const op_cfg *shapes, int n_shapes) {
    if (ttt_device_count(TTT_CUDA) < 1) {
        printf("cuda: no GPU here, skipped\n");
        return;
    }
    ttt_ctx *cpu = ttt_ctx_new(&(ttt_ctx_config){.device = TTT_CPU, .seed = 3, .threads = 2});
    ttt_ctx *gpu = ttt_ctx_new(&(ttt_ctx_config){.device = TTT_CUDA, .seed = 7, .arena_bytes = (size_t)1 << 30});
    CHECK_MSG(cpu && gpu, "contexts: %s", ttt_runtime_error());
    if (!cpu || !gpu) return;
    for (int i = 0; i < n_shapes; i++) {
        test_op(gpu, &shapes[i], TTT_F64, 3);
        test_op(gpu, &shapes[i], TTT_F32, 3);
        test_cuda_vs_cpu(cpu, gpu, &shapes[i], TTT_F64);
        test_cuda_vs_cpu(cpu, gpu, &shapes[i], TTT_F32);
    }
    test_op(gpu, &shapes[0], TTT_F64, 1);
    test_op(gpu, &shapes[1], TTT_F64, 2);
    for (int i = 0; i + 1 < n_shapes; i += 2) {
        test_apply(gpu, &shapes[i], TTT_F64);
        test_apply(gpu, &shapes[i + 1], TTT_F32);
    }
    test_fd(gpu, &shapes[0]);
    test_fd(gpu, &shapes[1]);
    test_layer(gpu);
    const op_cfg vit = {.B = 4, .H = 2, .m = 784, .d = 32, .D = 64, .ln = 1, .xt_heads = 0, .w_shared = 1};
    test_cuda_vs_cpu(cpu, gpu, &vit, TTT_F32);
    test_cuda_vs_cpu(cpu, gpu, &vit, TTT_F64);
    /* a context that allows f32 on the tensor cores (.tf32): mttt_step.cu's split-bf16 kernels (mm_tc, ~2^-16
     * relative; the default in such contexts, TTT_MTTT_MMA=0 keeps the FMA tiles) within the same tolerance, and two
     * runs bit for bit; the
     * ViT's shape and two of odd sizes (the tiles' clamped edges) */
    ttt_ctx *gtc = ttt_ctx_new(&(ttt_ctx_config){.device = TTT_CUDA, .seed = 7, .arena_bytes = (size_t)1 << 30, .tf32 = 1});
    CHECK_MSG(gtc != NULL, "tf32 context: %s", ttt_runtime_error());
    if (gtc) {
        printf("tf32 context (f32 on the tensor cores unless TTT_MTTT_MMA=0; TF32 mma with =3):\n");
        g_gpu_tf32 = 1;
        test_cuda_vs_cpu(cpu, gtc, &vit, TTT_F32);
        test_cuda_vs_cpu(cpu, gtc, &shapes[2], TTT_F32);
        test_cuda_vs_cpu(cpu, gtc, &shapes[5], TTT_F32);
        g_gpu_tf32 = 0;
        ttt_ctx_free(gtc);
    }
    ttt_ctx_free(gpu);
    ttt_ctx_free(cpu);
    test_vit(TTT_CUDA, 0);
    test_vit(TTT_CUDA, 1);
}

int main(void) {
    setenv("TTT_PROFILE", "1", 1); /* kernel calls are counted (the fused kernels ran) */
    ttt_ctx *ctx = ttt_ctx_new(&(ttt_ctx_config){.device = TTT_CPU, .seed = 7, .threads = 2});
    test_errors(ctx);
    const op_cfg shapes[] = {
        {.B = 2, .H = 2, .m = 7, .d = 4, .D = 8, .ln = 1, .xt_heads = 0, .w_shared = 1},
        {.B = 3, .H = 1, .m = 5, .d = 4, .D = 6, .ln = 0, .xt_heads = 0, .w_shared = 0},
        {.B = 1, .H = 3, .m = 11, .d = 8, .D = 24, .ln = 1, .xt_heads = 1, .w_shared = 0},
        {.B = 2, .H = 2, .m = 13, .d = 16, .D = 32, .ln = 1, .xt_heads = 0, .w_shared = 1},
        {.B = 2, .H = 2, .m = 49, .d = 32, .D = 64, .ln = 1, .xt_heads = 1, .w_shared = 1},
        {.B = 1, .H = 2, .m = 3, .d = 6, .D = 5, .ln = 0, .xt_heads = 1, .w_shared = 1},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        test_op(ctx, &shapes[i], TTT_F64, 3);
        test_op(ctx, &shapes[i], TTT_F32, 3);
    }
    test_op(ctx, &shapes[0], TTT_F64, 1);
    test_op(ctx, &shapes[0], TTT_F64, 2);
    test_op(ctx, &shapes[1], TTT_F64, 2);
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i += 2) {
        test_apply(ctx, &shapes[i], TTT_F64);
        test_apply(ctx, &shapes[i + 1], TTT_F32);
    }
    test_fd(ctx, &shapes[0]);
    test_fd(ctx, &shapes[1]);
    test_fd(ctx, &shapes[5]);
    test_layer(ctx);
    ttt_ctx_free(ctx);
    test_vit(TTT_CPU, 0);
    test_vit(TTT_CPU, 1);
    test_cuda(shapes, (int)(sizeof shapes / sizeof *shapes));
    TEST_MAIN_END();
}
