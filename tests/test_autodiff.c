/* Autodiff semantics: higher orders, gradients with respect to intermediates,
 * grad inside a forward pass, backward into parameters, no-grad, detach,
 * and rematerialization. */
#include <math.h>
#include <string.h>

#include "check.h"
#include "ttt/backend.h" /* ttt_row_stride */
#include "ttt/ttt.h"

static double item(ttt_ctx *ctx, ttt_tensor *t) { return ttt_item(ctx, t); }

/* f = x^3 summed: f' = 3x^2, f'' = 6x, f''' = 6, f'''' = 0 */
static void test_orders(ttt_ctx *ctx) {
    ttt_tensor *x = ttt_from_host(ctx, TTT_F64, TTT_DIMS(1), (double[]){1.5});
    ttt_set_requires_grad(x, 1);
    ttt_tensor *f = ttt_sum(ctx, ttt_mul(ctx, x, ttt_mul(ctx, x, x)), 0, NULL, 0);
    ttt_tensor *d1, *d2, *d3, *d4;
    CHECK(ttt_grad(ctx, 1, &f, NULL, 1, &x, &d1, 1) == TTT_OK);
    CHECK_NEAR(item(ctx, d1), 3 * 1.5 * 1.5, 1e-12);
    CHECK(ttt_grad(ctx, 1, &d1, NULL, 1, &x, &d2, 1) == TTT_OK);
    CHECK_NEAR(item(ctx, d2), 6 * 1.5, 1e-12);
    CHECK(ttt_grad(ctx, 1, &d2, NULL, 1, &x, &d3, 1) == TTT_OK);
    CHECK_NEAR(item(ctx, d3), 6, 1e-12);
    /* d3 is constant in x: its graph does not reach x, so the gradient is zero */
    if (d3->requires_grad) {
        CHECK(ttt_grad(ctx, 1, &d3, NULL, 1, &x, &d4, 0) == TTT_OK);
        CHECK_NEAR(item(ctx, d4), 0, 1e-12);
    }
    /* without create_graph the gradient has no graph */
    ttt_tensor *g;
    CHECK(ttt_grad(ctx, 1, &f, NULL, 1, &x, &g, 0) == TTT_OK);
    CHECK(!g->requires_grad);
    ttt_step_reset(ctx);
}

/* Gradient with respect to an intermediate, an unused input, and several outputs. */
static void test_intermediate(ttt_ctx *ctx) {
    ttt_tensor *x = ttt_from_host(ctx, TTT_F64, TTT_DIMS(2), (double[]){1, 2});
    ttt_set_requires_grad(x, 1);
    ttt_tensor *u = ttt_scale(ctx, x, 3.0);              /* u = 3x */
    ttt_tensor *y = ttt_sum(ctx, ttt_mul(ctx, u, u), 0, NULL, 0); /* y = sum u^2 */
    ttt_tensor *z = ttt_sum(ctx, x, 0, NULL, 0);
    ttt_tensor *unused = ttt_from_host(ctx, TTT_F64, TTT_DIMS(3), (double[]){1, 1, 1});
    ttt_set_requires_grad(unused, 1);
    ttt_tensor *ins[3] = {u, x, unused}, *gs[3];
    CHECK(ttt_grad(ctx, 1, &y, NULL, 3, ins, gs, 0) == TTT_OK);
    double gu[2], gx[2], gn[3];
    ttt_copy_to_host(ctx, gs[0], gu, TTT_F64);
    ttt_copy_to_host(ctx, gs[1], gx, TTT_F64);
    ttt_copy_to_host(ctx, gs[2], gn, TTT_F64);
    CHECK_NEAR(gu[0], 6, 1e-12); /* dy/du = 2u */
    CHECK_NEAR(gu[1], 12, 1e-12);
    CHECK_NEAR(gx[0], 18, 1e-12); /* dy/dx = 18x */
    CHECK_NEAR(gx[1], 36, 1e-12);
    CHECK(gn[0] == 0 && gn[1] == 0 && gn[2] == 0);
    /* two outputs with weights: d(2y + 5z)/dx */
    ttt_tensor *outs[2] = {y, z}, *w[2] = {ttt_scalar(ctx, TTT_F64, 2), ttt_scalar(ctx, TTT_F64, 5)}, *g;
    CHECK(ttt_grad(ctx, 2, outs, w, 1, &x, &g, 0) == TTT_OK);
    ttt_copy_to_host(ctx, g, gx, TTT_F64);
    CHECK_NEAR(gx[0], 36 + 5, 1e-12);
    CHECK_NEAR(gx[1], 72 + 5, 1e-12);
    ttt_step_reset(ctx);
}

/* An inner gradient step inside the forward pass, differentiated by the outer
 * loop: w1 = w - eta * d/dw (a w^2 / 2) = w (1 - eta a); L = w1^2 / 2;
 * dL/dw = w1 (1 - eta a); dL/da = w1 * (-eta w). */
static void test_inner_step(ttt_ctx *ctx) {
    const double w0 = 0.7, a0 = 1.3, eta = 0.2;
    ttt_tensor *w = ttt_param(ctx, TTT_F64, TTT_DIMS(1), "w"), *a = ttt_param(ctx, TTT_F64, TTT_DIMS(1), "a");
    ttt_fill(ctx, w, w0);
    ttt_fill(ctx, a, a0);
    ttt_tensor *inner = ttt_sum(ctx, ttt_scale(ctx, ttt_mul(ctx, a, ttt_mul(ctx, w, w)), 0.5), 0, NULL, 0);
    ttt_tensor *g;
    CHECK(ttt_grad(ctx, 1, &inner, NULL, 1, &w, &g, 1) == TTT_OK);
    ttt_tensor *w1 = ttt_sub(ctx, w, ttt_scale(ctx, g, eta));
    ttt_tensor *loss = ttt_sum(ctx, ttt_scale(ctx, ttt_mul(ctx, w1, w1), 0.5), 0, NULL, 0);
    ttt_tensor *ps[2] = {w, a};
    CHECK(ttt_zero_grad(ctx, 2, ps) == TTT_OK);
    CHECK(ttt_backward(ctx, loss) == TTT_OK);
    double w1v = w0 * (1 - eta * a0);
    CHECK_NEAR(item(ctx, w->grad), w1v * (1 - eta * a0), 1e-12);
    CHECK_NEAR(item(ctx, a->grad), w1v * (-eta * w0), 1e-12);
    /* backward accumulates */
    CHECK(ttt_backward(ctx, loss) == TTT_OK);
    CHECK_NEAR(item(ctx, w->grad), 2 * w1v * (1 - eta * a0), 1e-12);
    ttt_persistent_free(ctx, w);
    ttt_persistent_free(ctx, a);
    ttt_step_reset(ctx);
}

static void test_no_grad_detach(ttt_ctx *ctx) {
    ttt_tensor *p = ttt_param(ctx, TTT_F64, TTT_DIMS(3), "p");
    ttt_fill(ctx, p, 2.0);
    ttt_no_grad_begin(ctx);
    CHECK(!ttt_grad_enabled(ctx));
    ttt_tensor *y = ttt_mul(ctx, p, p);
    ttt_no_grad_end(ctx);
    CHECK(y && !y->requires_grad && !y->node);
    ttt_tensor *g;
    CHECK(ttt_grad(ctx, 1, &y, NULL, 1, &p, &g, 0) == TTT_ERR);
    CHECK(strstr(ttt_error(ctx), "no output has a graph") != NULL);
    /* detach stops the gradient: d/dp [p * detach(p)] = detach(p) = 2 */
    ttt_tensor *z = ttt_sum(ctx, ttt_mul(ctx, p, ttt_detach(ctx, p)), 0, NULL, 0);
    CHECK(ttt_grad(ctx, 1, &z, NULL, 1, &p, &g, 0) == TTT_OK);
    double gv[3];
    ttt_copy_to_host(ctx, g, gv, TTT_F64);
    CHECK_NEAR(gv[0], 2.0, 1e-12);
    /* grad mode forced on inside no-grad (what an inner loop does at evaluation) */
    ttt_no_grad_begin(ctx);
    ttt_grad_mode prev = ttt_grad_mode_set(ctx, 1);
    ttt_tensor *q = ttt_mul(ctx, p, p);
    ttt_grad_mode_restore(ctx, prev);
    CHECK(q->requires_grad);
    CHECK(!ttt_grad_enabled(ctx));
    ttt_no_grad_end(ctx);
    ttt_persistent_free(ctx, p);
    ttt_step_reset(ctx);
}

/* ---- rematerialization ---------------------------------------------------------- */

/* One inner step on W (inner loss on the fixed tokens in[2]), then a read-out
 * of the running state: out = (tanh(h W1) W1^T, W1). */
static int block(ttt_ctx *ctx, void *user, int n_in, ttt_tensor *const *in, int n_out, ttt_tensor **out) {
    (void)n_in;
    (void)n_out;
    int *calls = user;
    (*calls)++;
    ttt_tensor *z = ttt_tanh(ctx, ttt_matmul(ctx, in[2], in[1], 0, 0));
    ttt_tensor *inner = ttt_sum(ctx, ttt_mul(ctx, z, z), 0, NULL, 0);
    ttt_tensor *g;
    if (ttt_grad(ctx, 1, &inner, NULL, 1, &in[1], &g, ttt_grad_enabled(ctx)) != TTT_OK) return TTT_ERR;
    ttt_tensor *w1 = ttt_sub(ctx, in[1], ttt_scale(ctx, g, 0.1));
    out[0] = ttt_matmul(ctx, ttt_tanh(ctx, ttt_matmul(ctx, in[0], w1, 0, 0)), w1, 0, 1);
    out[1] = w1;
    return TTT_OK;
}

static int nested(ttt_ctx *ctx, void *user, int n_in, ttt_tensor *const *in, int n_out, ttt_tensor **out) {
    return ttt_checkpoint(ctx, block, user, n_in, in, n_out, out);
}

typedef enum { PLAIN, REMAT, NESTED, SUBGRAPH } remat_mode;

/* Chain of 6 blocks; returns dL/dx, dL/dW (without and with create_graph: gx0, gw0 and gx, gw), the HVP along W,
 * and the calls of the block made by the first-order backward pass (bwd_calls). */
static void chain(ttt_ctx *ctx, remat_mode mode, double *gx0, double *gw0, double *gx, double *gw, double *hvp,
                  size_t *peak, int *calls, int *bwd_calls) {
    ttt_manual_seed(ctx, 42);
    ttt_tensor *x = ttt_randn(ctx, TTT_F64, TTT_DIMS(5, 4), 1.0);
    ttt_tensor *w = ttt_randn(ctx, TTT_F64, TTT_DIMS(4, 4), 0.5);
    ttt_tensor *v = ttt_randn(ctx, TTT_F64, TTT_DIMS(4, 4), 1.0);
    ttt_set_requires_grad(x, 1);
    ttt_set_requires_grad(w, 1);
    ttt_tensor *tokens = ttt_randn(ctx, TTT_F64, TTT_DIMS(7, 4), 1.0);
    ttt_tensor *h = x, *wt = w;
    for (int i = 0; i < 6; i++) {
        ttt_tensor *in[3] = {h, wt, tokens}, *out[2];
        int rc = mode == PLAIN      ? block(ctx, calls, 3, in, 2, out)
                 : mode == SUBGRAPH ? ttt_subgraph(ctx, block, calls, 3, in, 2, out)
                                    : ttt_checkpoint(ctx, mode == REMAT ? block : nested, calls, 3, in, 2, out);
        CHECK(rc == TTT_OK);
        h = out[0];
        wt = out[1];
    }
    ttt_tensor *loss = ttt_add(ctx, ttt_sum(ctx, ttt_mul(ctx, h, h), 0, NULL, 0), ttt_sum(ctx, ttt_mul(ctx, wt, wt), 0, NULL, 0));
    *peak = ttt_arena_bytes_used(ctx);
    ttt_tensor *ins[2] = {x, w}, *g[2];
    const int before = *calls;
    CHECK(ttt_grad(ctx, 1, &loss, NULL, 2, ins, g, 0) == TTT_OK);
    *bwd_calls = *calls - before;
    ttt_copy_to_host(ctx, g[0], gx0, TTT_F64);
    ttt_copy_to_host(ctx, g[1], gw0, TTT_F64);
    CHECK(ttt_grad(ctx, 1, &loss, NULL, 2, ins, g, 1) == TTT_OK);
    ttt_copy_to_host(ctx, g[0], gx, TTT_F64);
    ttt_copy_to_host(ctx, g[1], gw, TTT_F64);
    ttt_tensor *s = ttt_sum(ctx, ttt_mul(ctx, g[1], v), 0, NULL, 0), *h2 = NULL;
    CHECK_MSG(ttt_grad(ctx, 1, &s, NULL, 1, &w, &h2, 0) == TTT_OK, "%s", ttt_error(ctx));
    if (h2) ttt_copy_to_host(ctx, h2, hvp, TTT_F64);
    ttt_step_reset(ctx);
}

static void test_remat(ttt_ctx *ctx) {
    enum { NM = 4 };
    double gx0[NM][20], gw0[NM][16], gx[NM][20], gw[NM][16], hv[NM][16];
    size_t peak[NM];
    int calls[NM] = {0}, bwd_calls[NM] = {0};
    for (int m = 0; m < NM; m++)
        chain(ctx, (remat_mode)m, gx0[m], gw0[m], gx[m], gw[m], hv[m], &peak[m], &calls[m], &bwd_calls[m]);
    for (int m = 1; m < NM; m++) {
        double err = 0;
        for (int i = 0; i < 20; i++) err = fmax(err, fmax(fabs(gx[m][i] - gx[0][i]), fabs(gx0[m][i] - gx0[0][i])));
        for (int i = 0; i < 16; i++) err = fmax(err, fmax(fabs(gw[m][i] - gw[0][i]), fabs(gw0[m][i] - gw0[0][i])));
        CHECK_MSG(err < 1e-12, "mode %d: first-order gradients differ by %g", m, err);
        err = 0;
        for (int i = 0; i < 16; i++) err = fmax(err, fabs(hv[m][i] - hv[0][i]));
        CHECK_MSG(err < 1e-10, "mode %d: second-order (HVP) differs by %g", m, err);
    }
    /* the forward pass of the checkpointed chain keeps only block outputs; the subgraphs keep everything */
    CHECK_MSG(peak[REMAT] < peak[PLAIN], "forward memory with remat %zu vs without %zu", peak[REMAT], peak[PLAIN]);
    CHECK_MSG(peak[SUBGRAPH] > peak[REMAT], "forward memory of subgraphs %zu vs remat %zu", peak[SUBGRAPH], peak[REMAT]);
    /* each block ran once forward and was recomputed in the backward; a subgraph's first-order backward pass
     * differentiates the kept graph (no call), its create_graph one runs the block again */
    CHECK_MSG(calls[REMAT] >= 12, "remat ran the block %d times", calls[REMAT]);
    CHECK_MSG(bwd_calls[REMAT] == 6, "remat's first-order backward ran the block %d times", bwd_calls[REMAT]);
    CHECK_MSG(bwd_calls[SUBGRAPH] == 0, "the subgraphs' first-order backward ran the block %d times", bwd_calls[SUBGRAPH]);
    CHECK_MSG(calls[SUBGRAPH] == 12, "subgraphs ran the block %d times (6 forward, 6 under create_graph)", calls[SUBGRAPH]);
}

/* The fused first-order cross-entropy gradient (backend cross_entropy_bwd)
 * equals the composed one that create_graph takes, ignored rows included. */
static void test_cross_entropy_fused_vjp(ttt_ctx *ctx) {
    enum { R = 5, V = 7 };
    double x[R * V], w[R];
    for (int i = 0; i < R * V; i++) x[i] = sin(1.3 * i) * 2;
    for (int i = 0; i < R; i++) w[i] = 0.5 + i;
    int32_t t[R] = {3, -100, 0, 6, 2};
    ttt_tensor *xt = ttt_from_host(ctx, TTT_F64, TTT_DIMS(R, V), x), *tt = ttt_from_host(ctx, TTT_I32, TTT_DIMS(R), t);
    ttt_tensor *wt = ttt_from_host(ctx, TTT_F64, TTT_DIMS(R), w);
    ttt_set_requires_grad(xt, 1);
    ttt_tensor *f = ttt_sum(ctx, ttt_mul(ctx, ttt_cross_entropy_rows(ctx, xt, tt, -100), wt), 0, NULL, 0);
    ttt_tensor *fused, *composed;
    CHECK(ttt_grad(ctx, 1, &f, NULL, 1, &xt, &fused, 0) == TTT_OK);    /* first order: the fused kernel */
    CHECK(ttt_grad(ctx, 1, &f, NULL, 1, &xt, &composed, 1) == TTT_OK); /* create_graph: composed */
    double a[R * V], b[R * V];
    ttt_copy_to_host(ctx, fused, a, TTT_F64);
    ttt_copy_to_host(ctx, composed, b, TTT_F64);
    double worst = 0, row1 = 0;
    for (int i = 0; i < R * V; i++) worst = fmax(worst, fabs(a[i] - b[i]));
    for (int j = 0; j < V; j++) row1 = fmax(row1, fabs(a[V + j]));
    CHECK_NEAR(worst, 0, 1e-14);
    CHECK(row1 == 0); /* the ignored row */
    /* each counted row sums to zero (softmax minus one-hot) */
    double s0 = 0;
    for (int j = 0; j < V; j++) s0 += a[j];
    CHECK_NEAR(s0, 0, 1e-14);
    ttt_step_reset(ctx);
}

/* Logits that are a column slice of wider rows (the LM head's padded logits) reach the kernels without a dense
 * copy (ttt_row_stride): the losses and the gradient equal those of the dense copy, and the padding columns get
 * zero gradient. */
static void test_cross_entropy_spaced_rows(ttt_ctx *ctx) {
    enum { B = 2, T = 3, V = 5, VP = 8 };
    double x[B * T * VP];
    for (int i = 0; i < B * T * VP; i++) x[i] = cos(0.7 * i) * 3;
    int32_t t[B * T] = {4, 0, -100, 2, 1, 3};
    ttt_tensor *xt = ttt_from_host(ctx, TTT_F64, TTT_DIMS(B, T, VP), x), *tt = ttt_from_host(ctx, TTT_I32, TTT_DIMS(B, T), t);
    ttt_set_requires_grad(xt, 1);
    ttt_tensor *view = ttt_slice(ctx, xt, 2, 0, V, 1);
    CHECK(view && ttt_row_stride(view) == VP);
    ttt_tensor *dense = ttt_contiguous(ctx, view);
    CHECK(ttt_row_stride(dense) == V);
    ttt_tensor *lv = ttt_cross_entropy_rows(ctx, view, tt, -100), *ld = ttt_cross_entropy_rows(ctx, dense, tt, -100);
    double a[B * T], b[B * T];
    ttt_copy_to_host(ctx, lv, a, TTT_F64);
    ttt_copy_to_host(ctx, ld, b, TTT_F64);
    for (int i = 0; i < B * T; i++) CHECK_MSG(a[i] == b[i], "row %d: %g vs %g", i, a[i], b[i]);
    ttt_tensor *f = ttt_sum(ctx, lv, 0, NULL, 0), *g = ttt_sum(ctx, ld, 0, NULL, 0), *gv, *gd;
    CHECK(ttt_grad(ctx, 1, &f, NULL, 1, &xt, &gv, 0) == TTT_OK && ttt_grad(ctx, 1, &g, NULL, 1, &xt, &gd, 0) == TTT_OK);
    double c[B * T * VP], d[B * T * VP];
    ttt_copy_to_host(ctx, gv, c, TTT_F64);
    ttt_copy_to_host(ctx, gd, d, TTT_F64);
    double pad = 0;
    for (int i = 0; i < B * T * VP; i++) {
        CHECK_MSG(c[i] == d[i], "gradient %d: %g vs %g", i, c[i], d[i]);
        if (i % VP >= V) pad = fmax(pad, fabs(c[i]));
    }
    CHECK(pad == 0);
    /* a transposed view is not row-spaced: it goes through a dense copy and still gives the right loss */
    ttt_tensor *tr = ttt_permute(ctx, ttt_from_host(ctx, TTT_F64, TTT_DIMS(V, 2), x), (const int[]){1, 0});
    CHECK(ttt_row_stride(tr) == -1);
    ttt_tensor *lt = ttt_cross_entropy_rows(ctx, tr, ttt_from_host(ctx, TTT_I32, TTT_DIMS(2), (int32_t[]){1, 4}), -100);
    double e[2], ref0 = 0;
    ttt_copy_to_host(ctx, lt, e, TTT_F64);
    for (int j = 0; j < V; j++) ref0 += exp(x[2 * j]); /* row 0 of the transpose: x[0], x[2], ... */
    CHECK_NEAR(e[0], log(ref0) - x[2], 1e-12);
    ttt_step_reset(ctx);
}

/* RoPE of a head permutation (what the LM rotates): read in place and written dense, equal bit for bit to
 * RoPE of the dense copy, its gradient back in the permuted input's memory order (no copy before the op
 * that wrote it) and equal to the dense run's. */
static void test_rope_permuted(ttt_ctx *ctx) {
    enum { B = 2, T = 5, H = 3, D = 4, N = B * T * H * D };
    double x[N], w[N];
    for (int i = 0; i < N; i++) x[i] = sin(0.37 * i), w[i] = cos(0.11 * i);
    ttt_tensor *xt = ttt_from_host(ctx, TTT_F64, TTT_DIMS(B, T, H, D), x);
    ttt_set_requires_grad(xt, 1);
    ttt_tensor *p = ttt_permute(ctx, xt, (const int[]){0, 2, 1, 3}), *pd = ttt_contiguous(ctx, p);
    ttt_tensor *rp = ttt_rope(ctx, p, 2, 3, 100.0), *rd = ttt_rope(ctx, pd, 2, 3, 100.0);
    CHECK(rp && rd && rp->stride[3] == 1 && rp->stride[2] == D && rp->stride[1] == T * D); /* dense [B, H, T, D] */
    double a[N], b[N];
    ttt_copy_to_host(ctx, rp, a, TTT_F64);
    ttt_copy_to_host(ctx, rd, b, TTT_F64);
    for (int i = 0; i < N; i++) CHECK_MSG(a[i] == b[i], "rope %d: %g vs %g", i, a[i], b[i]);
    ttt_tensor *wt = ttt_from_host(ctx, TTT_F64, TTT_DIMS(B, H, T, D), w);
    ttt_tensor *f = ttt_sum(ctx, ttt_mul(ctx, rp, wt), 0, NULL, 0), *g = ttt_sum(ctx, ttt_mul(ctx, rd, wt), 0, NULL, 0);
    ttt_tensor *gp, *gd;
    CHECK(ttt_grad(ctx, 1, &f, NULL, 1, &xt, &gp, 0) == TTT_OK && ttt_grad(ctx, 1, &g, NULL, 1, &xt, &gd, 0) == TTT_OK);
    ttt_copy_to_host(ctx, gp, a, TTT_F64);
    ttt_copy_to_host(ctx, gd, b, TTT_F64);
    for (int i = 0; i < N; i++) CHECK_MSG(a[i] == b[i], "gradient %d: %g vs %g", i, a[i], b[i]);
    ttt_step_reset(ctx);
}

/* sum_to over axes of size 1 is a reshape (no reduction kernel): the values of a permuted, non-contiguous
 * [1, 3, 4] view summed to [3, 4] are its own, the gradient of an expand [3, 4] -> [1, 3, 4] comes back
 * through it, and a real sum (axis of size 2) still adds. */
static void test_sum_to_ones(ttt_ctx *ctx) {
    double x[12], w[12], a[12], b[12];
    for (int i = 0; i < 12; i++) x[i] = 0.5 * i - 2, w[i] = cos(0.3 * i);
    ttt_tensor *xt = ttt_from_host(ctx, TTT_F64, TTT_DIMS(1, 4, 3), x);
    ttt_tensor *p = ttt_permute(ctx, xt, (const int[]){0, 2, 1}); /* [1, 3, 4], strided */
    ttt_tensor *s = ttt_sum_to(ctx, p, 2, (const int64_t[]){3, 4});
    CHECK(s && s->ndim == 2 && s->shape[0] == 3 && s->shape[1] == 4);
    ttt_copy_to_host(ctx, s, a, TTT_F64);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) CHECK_MSG(a[i * 4 + j] == x[j * 3 + i], "sum_to (%d, %d): %g", i, j, a[i * 4 + j]);
    ttt_tensor *v = ttt_from_host(ctx, TTT_F64, TTT_DIMS(3, 4), w), *gv;
    ttt_set_requires_grad(v, 1);
    ttt_tensor *e = ttt_expand(ctx, v, TTT_DIMS(1, 3, 4));
    ttt_tensor *f = ttt_sum(ctx, ttt_mul(ctx, e, ttt_from_host(ctx, TTT_F64, TTT_DIMS(1, 3, 4), x)), 0, NULL, 0);
    CHECK(f && ttt_grad(ctx, 1, &f, NULL, 1, &v, &gv, 0) == TTT_OK);
    ttt_copy_to_host(ctx, gv, b, TTT_F64);
    for (int i = 0; i < 12; i++) CHECK_MSG(b[i] == x[i], "expand's gradient %d: %g", i, b[i]);
    ttt_tensor *two = ttt_sum_to(ctx, ttt_from_host(ctx, TTT_F64, TTT_DIMS(2, 6), x), 1, (const int64_t[]){6});
    ttt_copy_to_host(ctx, two, a, TTT_F64);
    for (int j = 0; j < 6; j++) CHECK(a[j] == x[j] + x[6 + j]);
    ttt_step_reset(ctx);
}

/* Gradients of many slices of one tensor are gathered into one concat (autodiff/grad.c):
 * the values, zero gaps, overlapping slices, a slice on another axis and the second order
 * stay exact, and the backward of N slices takes O(size) memory, not O(N x size). */
static void test_slice_gradients(ttt_ctx *ctx) {
    enum { R = 3, C = 20 };
    double x[R * C];
    for (int i = 0; i < R * C; i++) x[i] = 0.1 * i - 2;
    ttt_tensor *xt = ttt_from_host(ctx, TTT_F64, TTT_DIMS(R, C), x);
    ttt_set_requires_grad(xt, 1);
    /* f = sum_c (c + 1) * sum x[:, 4c : 4c + 4]^3 over c < 4 (columns 16..19 unused: a gap)
     *   + sum x[:, 2 : 7]^2 (overlaps the chunks) + sum x[1 : 2, :] (another axis) */
    ttt_tensor *f = NULL;
    for (int c = 0; c < 4; c++) {
        ttt_tensor *s = ttt_slice(ctx, xt, 1, 4 * c, 4 * c + 4, 1);
        ttt_tensor *term = ttt_scale(ctx, ttt_sum(ctx, ttt_mul(ctx, s, ttt_mul(ctx, s, s)), 0, NULL, 0), c + 1.0);
        f = f ? ttt_add(ctx, f, term) : term;
    }
    ttt_tensor *o = ttt_slice(ctx, xt, 1, 2, 7, 1);
    f = ttt_add(ctx, f, ttt_sum(ctx, ttt_mul(ctx, o, o), 0, NULL, 0));
    f = ttt_add(ctx, f, ttt_sum(ctx, ttt_slice(ctx, xt, 0, 1, 2, 1), 0, NULL, 0));
    ttt_tensor *g, *h;
    CHECK(ttt_grad(ctx, 1, &f, NULL, 1, &xt, &g, 1) == TTT_OK);
    ttt_tensor *gs = ttt_sum(ctx, g, 0, NULL, 0); /* d/dx of sum(df/dx): the diagonal of the Hessian */
    CHECK(ttt_grad(ctx, 1, &gs, NULL, 1, &xt, &h, 0) == TTT_OK);
    double gv[R * C], hv[R * C], worst_g = 0, worst_h = 0;
    ttt_copy_to_host(ctx, g, gv, TTT_F64);
    ttt_copy_to_host(ctx, h, hv, TTT_F64);
    for (int r = 0; r < R; r++)
        for (int j = 0; j < C; j++) {
            const double v = x[r * C + j], w = j < 16 ? j / 4 + 1.0 : 0.0, in_o = j >= 2 && j < 7;
            const double eg = 3 * w * v * v + 2 * in_o * v + (r == 1), eh = 6 * w * v + 2 * in_o;
            worst_g = fmax(worst_g, fabs(gv[r * C + j] - eg));
            worst_h = fmax(worst_h, fabs(hv[r * C + j] - eh));
        }
    CHECK_NEAR(worst_g, 0, 1e-12);
    CHECK_NEAR(worst_h, 0, 1e-12);
    ttt_step_reset(ctx);

    /* memory: N one-column slices of a [64, N] tensor */
    enum { N = 256 };
    ttt_tensor *big = ttt_zeros(ctx, TTT_F64, TTT_DIMS(64, N));
    ttt_set_requires_grad(big, 1);
    ttt_tensor *L = NULL;
    for (int c = 0; c < N; c++) {
        ttt_tensor *t = ttt_sum(ctx, ttt_slice(ctx, big, 1, c, c + 1, 1), 0, NULL, 0);
        L = L ? ttt_add(ctx, L, t) : t;
    }
    const size_t before = ttt_arena_bytes_used(ctx), full = 64 * N * sizeof(double);
    ttt_tensor *gb;
    CHECK(ttt_grad(ctx, 1, &L, NULL, 1, &big, &gb, 0) == TTT_OK);
    const size_t used = ttt_arena_bytes_used(ctx) - before;
    CHECK_MSG(used < 8 * full, "the backward of %d slices took %zu bytes, %.1f times the tensor", N, used,
              (double)used / (double)full);
    CHECK_NEAR(ttt_item(ctx, ttt_sum(ctx, gb, 0, NULL, 0)), 64.0 * N, 1e-9);
    ttt_step_reset(ctx);
}

int main(void) {
    ttt_ctx *ctx = ttt_ctx_new(NULL);
    CHECK(ctx != NULL);
    test_orders(ctx);
    test_intermediate(ctx);
    test_inner_step(ctx);
    test_no_grad_detach(ctx);
    test_cross_entropy_fused_vjp(ctx);
    test_cross_entropy_spaced_rows(ctx);
    test_rope_permuted(ctx);
    test_remat(ctx);
    test_slice_gradients(ctx);
    test_sum_to_ones(ctx);
    ttt_ctx_free(ctx);
    TEST_MAIN_END();
}
