/* TTT-Linear's inner loop over whole mini-batches as one op (engine_private.h: ttt__ttt_linear_scan).
 *
 * Per (batch, head), with head size d, mini-batch size bs, W [d, d] and bias c [1, d] starting at w0,
 * b0, for each mini-batch of rows Q, K (rotated), V [bs, d], eta e [bs], tok [bs]:
 *   z1 = K W + c;  G = d/dz1 of 1/2 || LN(z1) gam + bet - (V - K) ||^2, row by row
 *   E[i, j] = tok_i e_j for j <= i (else 0);  zq = Q W + c - (E o tril(Q K^T)) G - E G
 *   out = Q + LN(zq) gam + bet
 *   W <- W - tok_bs (e o K)^T G;  c <- c - tok_bs e^T G
 * which is src/layers/ttt_rnn.c's segment() in the dual form on a whole mini-batch (G_prev = 0),
 * with LN's eps given. Outputs: out [B, H, T, d] and the state after the last mini-batch.
 *
 * Where the backend has the kernels (backend.h: ttt_linear_scan, ttt_linear_scan_bwd), the forward
 * is one call that keeps W and c on chip, and the node keeps the inputs and the state at the start
 * of every mini-batch (N = T / bs states of d (d + 1) values per (batch, head), which is what the
 * composed graph keeps of W too; recomputing them backwards, W_n = W_{n+1} + tok (e o K)^T G, would
 * compound rounding over thousands of mini-batches). The VJP is one reverse-scan call: each
 * mini-batch's forward recomputed from its stored state, then its gradients. When the gradient
 * must itself be differentiable (grad mode on during the VJP: create_graph), the VJP recomputes the
 * composed form below on the node's inputs and differentiates that, as fused attention does, so
 * every order is exact; the fused backward has no VJP of its own and is never recorded. Where the
 * backend has no kernel or declines (dtype, head size), or the context is unfused (TTT_FUSED=0), the
 * op is the composed form. bf16 inputs are
 * computed in f32 (cast on the way in, out cast back to bf16, the final state left in f32), as the
 * Gated DeltaNet core does. */
#include <stdio.h>

#include "core/internal.h"

static const int LAST[1] = {-1};

enum { N_IN = 9 };

/* d/dz of 1/2 || LN(z) gam + bet - target ||^2, row by row (the layer's ln_l2_grad) */
static ttt_tensor *ln_l2_grad(ttt_ctx *ctx, ttt_tensor *gamma, ttt_tensor *beta, ttt_tensor *z, ttt_tensor *target,
                              double eps) {
    ttt_tensor *xh = ttt_layer_norm(ctx, z, NULL, NULL, eps);
    ttt_tensor *y = ttt_add(ctx, ttt_mul(ctx, xh, gamma), beta);
    ttt_tensor *gx = ttt_mul(ctx, ttt_sub(ctx, y, target), gamma);
    ttt_tensor *zc = ttt_sub(ctx, z, ttt_mean(ctx, z, 1, LAST, 1));
    ttt_tensor *rstd = ttt_rsqrt(ctx, ttt_add_scalar(ctx, ttt_mean(ctx, ttt_mul(ctx, zc, zc), 1, LAST, 1), eps));
    ttt_tensor *r = ttt_sub(ctx, ttt_sub(ctx, gx, ttt_mean(ctx, gx, 1, LAST, 1)),
                            ttt_mul(ctx, xh, ttt_mean(ctx, ttt_mul(ctx, gx, xh), 1, LAST, 1)));
    return ttt_mul(ctx, r, rstd);
}

/* One layer of the dual form on a whole mini-batch (no gradient sums before it): with E[i, j] = tok_i eta_j
 * (j <= i), the layer's input x [.., bs, in], the inputs it was trained on (keys) and its output
 * gradients g [.., bs, out] there:  z = x w + c - (E o tril(x keys^T)) g - E g */
static ttt_tensor *dual_z(ttt_ctx *ctx, ttt_tensor *E, ttt_tensor *x, ttt_tensor *keys, ttt_tensor *w, ttt_tensor *c,
                          ttt_tensor *g) {
    ttt_tensor *attn = ttt_mul(ctx, E, ttt_attn_mask(ctx, ttt_matmul(ctx, x, keys, 0, 1), 0, 0, 0.0));
    return ttt_sub(ctx, ttt_add(ctx, ttt_matmul(ctx, x, w, 0, 0), c),
                   ttt_add(ctx, ttt_matmul(ctx, attn, g, 0, 0), ttt_matmul(ctx, E, g, 0, 0)));
}

/* The mini-batch's update of one layer's weights: w -= tok_bs (eta o keys)^T g, c -= tok_bs eta^T g */
static void step_weights(ttt_ctx *ctx, ttt_tensor *tok_last, ttt_tensor *eta_row, ttt_tensor *eta_col, ttt_tensor *keys,
                         ttt_tensor *g, ttt_tensor **w, ttt_tensor **c) {
    ttt_tensor *gw = ttt_matmul(ctx, ttt_mul(ctx, eta_col, keys), g, 1, 0), *gb = ttt_matmul(ctx, eta_row, g, 0, 0);
    *w = ttt_sub(ctx, *w, ttt_mul(ctx, tok_last, gw));
    *c = ttt_sub(ctx, *c, ttt_mul(ctx, tok_last, gb));
}

int ttt__ttt_linear_scan_composed(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *eta,
                                  ttt_tensor *tok, ttt_tensor *ln_w, ttt_tensor *ln_b, ttt_tensor *w0, ttt_tensor *b0,
                                  double eps, ttt_tensor **out, ttt_tensor **w_final, ttt_tensor **b_final) {
    const int64_t B = q->shape[0], H = q->shape[1], T = q->shape[2], d = q->shape[3], bs = ttt_numel(tok);
    ttt_tensor *gamma = ttt_reshape(ctx, ln_w, TTT_DIMS(H, 1, d)), *beta = ttt_reshape(ctx, ln_b, TTT_DIMS(H, 1, d));
    ttt_tensor *tok_col = ttt_reshape(ctx, tok, TTT_DIMS(bs, 1));
    ttt_tensor *tok_last = ttt_slice(ctx, tok, 0, bs - 1, bs, 1);
    const int64_t N = T / bs;
    ttt_tensor **outs = ttt__meta_alloc(ctx, sizeof(ttt_tensor *) * (size_t)N);
    if (!outs || !gamma || !beta || !tok_col || !tok_last) return TTT_ERR;
    ttt_tensor *w = w0, *c = b0;
    for (int64_t n = 0; n < N; n++) {
        const int64_t t0 = n * bs;
        ttt_tensor *qn = ttt_slice(ctx, q, 2, t0, t0 + bs, 1), *kn = ttt_slice(ctx, k, 2, t0, t0 + bs, 1);
        ttt_tensor *vn = ttt_slice(ctx, v, 2, t0, t0 + bs, 1);
        ttt_tensor *eta_row = ttt_reshape(ctx, ttt_contiguous(ctx, ttt_slice(ctx, eta, 2, t0, t0 + bs, 1)), TTT_DIMS(B, H, 1, bs));
        ttt_tensor *eta_col = ttt_transpose(ctx, eta_row, 2, 3);
        ttt_tensor *z1 = ttt_add(ctx, ttt_matmul(ctx, kn, w, 0, 0), c);
        ttt_tensor *g = ln_l2_grad(ctx, gamma, beta, z1, ttt_sub(ctx, vn, kn), eps);
        ttt_tensor *E = ttt_attn_mask(ctx, ttt_mul(ctx, tok_col, eta_row), 0, 0, 0.0);
        ttt_tensor *zq = dual_z(ctx, E, qn, kn, w, c, g);
        outs[n] = ttt_add(ctx, qn, ttt_add(ctx, ttt_mul(ctx, ttt_layer_norm(ctx, zq, NULL, NULL, eps), gamma), beta));
        step_weights(ctx, tok_last, eta_row, eta_col, kn, g, &w, &c);
        if (!outs[n] || !w || !c) return TTT_ERR;
    }
    *out = N == 1 ? outs[0] : ttt_concat(ctx, (int)N, outs, 2);
    *w_final = w;
    *b_final = c;
    return *out ? TTT_OK : TTT_ERR;
}

/* node: in = q, k, v, eta, tok, ln_w, ln_b, w0, b0 (q..eta dense); out = out, w_final, b_final;
 * pattr = the states at the mini-batches' starts; fattr[0] = eps */
static int scan_vjp(ttt_ctx *ctx, ttt_node *nd, ttt_tensor *const *gout, const bool *needs, ttt_tensor **gin) {
    ttt_tensor *const *in = nd->in;
    const double eps = nd->fattr[0];
    if (!gout[0] && !gout[1] && !gout[2]) {
        for (int i = 0; i < N_IN; i++)
            if (needs[i] && !(gin[i] = ttt_zeros_like(ctx, in[i]))) return TTT_ERR;
        return TTT_OK;
    }
    if (ttt_grad_enabled(ctx)) {
        /* create_graph: differentiate the composed form, recomputed on the same inputs */
        ttt_tensor *o[3], *outs[3], *gs[3], *targets[N_IN], *grads[N_IN];
        if (ttt__ttt_linear_scan_composed(ctx, in[0], in[1], in[2], in[3], in[4], in[5], in[6], in[7], in[8], eps, &o[0],
                                          &o[1], &o[2]))
            return TTT_ERR;
        int n_out = 0, n = 0;
        for (int i = 0; i < 3; i++)
            if (gout[i]) outs[n_out] = o[i], gs[n_out++] = gout[i];
        for (int i = 0; i < N_IN; i++)
            if (needs[i]) targets[n++] = in[i];
        if (n && ttt__grad(ctx, n_out, outs, gs, n, targets, grads, true, true) != TTT_OK) return TTT_ERR;
        for (int i = 0, j = 0; i < N_IN; i++)
            if (needs[i]) gin[i] = grads[j++];
        return TTT_OK;
    }
    ttt_tensor *q = in[0], *tok = in[4], *w0 = in[7], *b0 = in[8];
    const int64_t B = q->shape[0], H = q->shape[1], d = q->shape[3], bs = ttt_numel(tok);
    const ttt_dtype dt = q->dtype;
    ttt_tensor *dout = gout[0] ? ttt__dense(ctx, gout[0]) : ttt_zeros_like(ctx, nd->out[0]);
    ttt_tensor *dwf = gout[1] ? ttt__dense(ctx, gout[1]) : NULL, *dbf = gout[2] ? ttt__dense(ctx, gout[2]) : NULL;
    ttt_tensor *g[N_IN] = {ttt__new_like(ctx, q), ttt__new_like(ctx, in[1]), ttt__new_like(ctx, in[2]),
                           ttt__new_like(ctx, in[3]), ttt_new(ctx, dt, TTT_DIMS(B, H, bs)), ttt_new(ctx, dt, TTT_DIMS(B, H, d)),
                           ttt_new(ctx, dt, TTT_DIMS(B, H, d)), ttt_new(ctx, dt, TTT_DIMS(B, H, d, d)),
                           ttt_new(ctx, dt, TTT_DIMS(B, H, 1, d))};
    for (int i = 0; i < N_IN; i++)
        if (!g[i]) return TTT_ERR;
    if (!dout || (gout[1] && !dwf) || (gout[2] && !dbf)) return TTT_ERR;
    const int rc = ctx->be->ttt_linear_scan_bwd(ctx->bs, g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], dout, dwf, dbf,
                                                q, in[1], in[2], in[3], tok, in[5], in[6], nd->pattr[0], nd->pattr[1], eps);
    if (rc != TTT_OK) {
        if (rc == TTT_BACKEND_DECLINED) ttt_backend_error("the backward kernel declined what the forward took");
        return ttt__backend_failed(ctx, "ttt_linear_scan (backward)");
    }
    /* the per-(batch, head) partial sums of what the batch (and the heads, for tok) shared */
    for (int i = 0; i < 4; i++) gin[i] = needs[i] ? g[i] : NULL;
    ttt_tensor *shared[5] = {tok, in[5], in[6], w0, b0};
    for (int i = 4; i < N_IN; i++) {
        if (!needs[i]) continue;
        ttt_tensor *p = shared[i - 4];
        if (!(gin[i] = ttt_sum_to(ctx, g[i], p->ndim, p->shape))) return TTT_ERR;
    }
    return TTT_OK;
}

static int bad(ttt_ctx *ctx, const char *op, const char *what, const ttt_tensor *t, const char *want) {
    char s[96];
    return ttt__set_error(ctx, "%s: %s %s %s must be %s", op, what, ttt_dtype_name(t->dtype), ttt_shape_str(t, s, sizeof s),
                          want);
}

static bool has_shape(const ttt_tensor *t, ttt_dtype dt, int ndim, const int64_t *shape) {
    if (t->dtype != dt || t->ndim != ndim) return false;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i]) return false;
    return true;
}

/* t has shape (ndim, shape) and q's dtype, or f32 where q is bf16 (the parameters and the state of a bf16
 * run may be kept in f32; the op computes bf16 in f32 anyway) */
static bool has_param_shape(const ttt_tensor *t, ttt_dtype dt, int ndim, const int64_t *shape) {
    return has_shape(t, dt, ndim, shape) || (dt == TTT_BF16 && has_shape(t, TTT_F32, ndim, shape));
}

/* The inputs both scans share: x[0..6] = q, k, v, eta, tok, ln_w, ln_b (then the fast weights, names[7..n)). */
static int check_common(ttt_ctx *ctx, const char *op, int n, const char *const *names, ttt_tensor *const *x) {
    for (int i = 0; i < n; i++)
        if (!x[i]) return ttt__set_error(ctx, "%s: %s is NULL", op, names[i]);
    ttt_tensor *q = x[0];
    if (q->ndim != 4 || (q->dtype != TTT_F32 && q->dtype != TTT_F64 && q->dtype != TTT_BF16))
        return bad(ctx, op, "q", q, "f32, f64 or bf16 [B, H, T, d]");
    const ttt_dtype dt = q->dtype;
    const int64_t H = q->shape[1], d = q->shape[3];
    if (!has_shape(x[1], dt, 4, q->shape)) return bad(ctx, op, "k", x[1], "q's dtype and shape");
    if (!has_shape(x[2], dt, 4, q->shape)) return bad(ctx, op, "v", x[2], "q's dtype and shape");
    if (!has_shape(x[3], dt, 3, q->shape)) return bad(ctx, op, "eta", x[3], "of q's dtype and [B, H, T]");
    const int64_t bs = x[4]->ndim == 1 ? x[4]->shape[0] : 0;
    const int bf = dt == TTT_BF16; /* a bf16 run may keep its parameters in f32 */
    if (bs < 1 || !has_param_shape(x[4], dt, 1, x[4]->shape))
        return bad(ctx, op, "tok", x[4], bf ? "a vector [bs] of bf16 or f32" : "a vector [bs] of q's dtype");
    if (!has_param_shape(x[5], dt, TTT_DIMS(H, d)))
        return bad(ctx, op, "ln_w", x[5], bf ? "of bf16 or f32 and [H, d]" : "of q's dtype and [H, d]");
    if (!has_param_shape(x[6], dt, TTT_DIMS(H, d)))
        return bad(ctx, op, "ln_b", x[6], bf ? "of bf16 or f32 and [H, d]" : "of q's dtype and [H, d]");
    for (int i = 1; i < n; i++)
        if (x[i]->device != q->device) return ttt__set_error(ctx, "%s: %s is on another device than q", op, names[i]);
    return TTT_OK;
}

/* Whole mini-batches only (the layer composes partial ones). */
static int check_mini_batches(ttt_ctx *ctx, const char *op, const ttt_tensor *q, const ttt_tensor *tok) {
    const int64_t T = q->shape[2], bs = tok->shape[0];
    if (T < bs || T % bs)
        return ttt__set_error(ctx, "%s: T %lld must be a positive multiple of the mini-batch %lld", op, (long long)T,
                              (long long)bs);
    return TTT_OK;
}

/* A fast weight of q's dtype (or f32 for bf16 q) and shape [H, r, c], or [B, H, r, c] (per sequence). */
static bool is_fast_weight(const ttt_tensor *t, const ttt_tensor *q, int64_t r, int64_t c) {
    const int64_t B = q->shape[0], H = q->shape[1];
    return has_param_shape(t, q->dtype, TTT_DIMS(H, r, c)) || has_param_shape(t, q->dtype, TTT_DIMS(B, H, r, c));
}

static int check(ttt_ctx *ctx, ttt_tensor *const *x) {
    static const char *names[N_IN] = {"q", "k", "v", "eta", "tok", "ln_w", "ln_b", "w0", "b0"};
    if (check_common(ctx, "ttt_linear_scan", N_IN, names, x)) return TTT_ERR;
    const int64_t d = x[0]->shape[3];
    if (!is_fast_weight(x[7], x[0], d, d))
        return bad(ctx, "ttt_linear_scan", "w0", x[7], "of q's dtype and [H, d, d] or [B, H, d, d]");
    if (!is_fast_weight(x[8], x[0], 1, d))
        return bad(ctx, "ttt_linear_scan", "b0", x[8], "of q's dtype and [H, 1, d] or [B, H, 1, d]");
    return check_mini_batches(ctx, "ttt_linear_scan", x[0], x[4]);
}

/* The kernel's forward, or TTT_BACKEND_DECLINED with nothing left allocated. */
static int fused(ttt_ctx *ctx, ttt_tensor *const *x, double eps, ttt_tensor **out, ttt_tensor **w_final,
                 ttt_tensor **b_final) {
    const ttt_mark_t mark = ttt_mark(ctx);
    const int record = ttt__recording(ctx, N_IN, x);
    ttt_tensor *in[N_IN];
    for (int i = 0; i < N_IN; i++)
        if (!(in[i] = ttt_contiguous(ctx, x[i]))) return TTT_ERR;
    ttt_tensor *q = in[0];
    const int64_t B = q->shape[0], H = q->shape[1], T = q->shape[2], d = q->shape[3], N = T / ttt_numel(in[4]);
    const ttt_dtype dt = q->dtype;
    ttt_tensor *o[3] = {ttt__new_like(ctx, q), ttt_new(ctx, dt, TTT_DIMS(B, H, d, d)), ttt_new(ctx, dt, TTT_DIMS(B, H, 1, d))};
    ttt_tensor *ws = record ? ttt_new(ctx, dt, 5, (int64_t[]){B, H, N, d, d}) : NULL;
    ttt_tensor *bst = record ? ttt_new(ctx, dt, TTT_DIMS(B, H, N, d)) : NULL;
    if (!o[0] || !o[1] || !o[2] || (record && (!ws || !bst))) return TTT_ERR;
    const int rc = ctx->be->ttt_linear_scan(ctx->bs, o[0], o[1], o[2], ws, bst, q, in[1], in[2], in[3], in[4], in[5], in[6],
                                            in[7], in[8], eps);
    if (rc == TTT_BACKEND_DECLINED) {
        ttt_release(ctx, mark);
        return TTT_BACKEND_DECLINED;
    }
    if (rc != TTT_OK) return ttt__backend_failed(ctx, "ttt_linear_scan");
    if (record) {
        ttt_node *nd = ttt__record(ctx, "ttt_linear_scan", scan_vjp, N_IN, in, 3, o);
        if (!nd) return TTT_ERR;
        nd->pattr[0] = ws;
        nd->pattr[1] = bst;
        nd->fattr[0] = eps;
    }
    *out = o[0], *w_final = o[1], *b_final = o[2];
    return TTT_OK;
}

int ttt__ttt_linear_scan(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *eta, ttt_tensor *tok,
                         ttt_tensor *ln_w, ttt_tensor *ln_b, ttt_tensor *w0, ttt_tensor *b0, double eps, ttt_tensor **out,
                         ttt_tensor **w_final, ttt_tensor **b_final) {
    if (!ctx) return TTT_ERR;
    if (!out || !w_final || !b_final) return ttt__set_error(ctx, "ttt_linear_scan: NULL result pointer");
    *out = *w_final = *b_final = NULL;
    ttt_tensor *x[N_IN] = {q, k, v, eta, tok, ln_w, ln_b, w0, b0};
    if (check(ctx, x)) return TTT_ERR;
    if (!(eps >= 0)) return ttt__set_error(ctx, "ttt_linear_scan: eps %g must be >= 0", eps);
    if (q->dtype == TTT_BF16) {
        /* bf16 runs compute in f32, the fast weights included (a bf16 W would lose the small updates of
         * every mini-batch): the inputs are cast (differentiably: their gradients come back as bf16),
         * out is cast back to bf16, the final state stays f32. The node recorded below holds the f32
         * copies, so its create_graph route recomputes the composed form in f32 too. */
        for (int i = 0; i < N_IN; i++)
            if (x[i]->dtype == TTT_BF16 && !(x[i] = ttt_cast(ctx, x[i], TTT_F32))) return TTT_ERR;
        ttt_tensor *o;
        if (ttt__ttt_linear_scan(ctx, x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], x[8], eps, &o, w_final, b_final))
            return TTT_ERR;
        return (*out = ttt_cast(ctx, o, TTT_BF16)) ? TTT_OK : TTT_ERR;
    }
    if (ttt__fused(ctx) && ctx->be->ttt_linear_scan && ctx->be->ttt_linear_scan_bwd) { /* TTT_FUSED=0: composed */
        const int rc = fused(ctx, x, eps, out, w_final, b_final);
        if (rc != TTT_BACKEND_DECLINED) return rc;
    }
    return ttt__ttt_linear_scan_composed(ctx, q, k, v, eta, tok, ln_w, ln_b, w0, b0, eps, out, w_final, b_final);
}

/* ---- TTT-MLP (engine_private.h: ttt__ttt_mlp_scan) ---------------------------------------------------
 *
 * Per (batch, head), fast weights W1 [d, F], b1 [1, F], W2 [F, d], b2 [1, d] (F = 4d in the layer), for
 * each mini-batch of rows Q, K (rotated), V [bs, d], eta e [bs], tok [bs]:
 *   z1 = K W1 + b1;  x2 = gelu(z1);  G2 = d/dz2 of 1/2 || LN(x2 W2 + b2) gam + bet - (V - K) ||^2
 *   G1 = (G2 W2^T) o gelu'(z1)
 *   zb1 = Q W1 + b1 - (E o tril(Q K^T)) G1 - E G1          (E[i, j] = tok_i e_j, j <= i)
 *   zb2 = gelu(zb1) W2 + b2 - (E o tril(gelu(zb1) x2^T)) G2 - E G2
 *   out = Q + LN(zb2) gam + bet
 *   W1 -= tok_bs (e o K)^T G1, b1 -= tok_bs e^T G1, W2 -= tok_bs (e o x2)^T G2, b2 -= tok_bs e^T G2
 * which is ttt_rnn.c's segment() for the MLP in the dual form on whole mini-batches.
 *
 * As for TTT-Linear: where the backend has the kernels (backend.h: ttt_mlp_scan, ttt_mlp_scan_bwd) the
 * forward is one call that keeps the weights on chip, and when a graph records it also keeps the weights at
 * every mini-batch's start (N (2 d F + F + d) values per (batch, head), what the composed graph keeps of
 * them too); the VJP is one reverse-scan call over them, and under create_graph differentiates the composed
 * form recomputed, so every order is exact. A backend with the forward only runs it where no graph records
 * (a node whose VJP recomputed the composed form would cost the composed forward on top of the fused one). */

enum { N_MLP_IN = 11 };

int ttt__ttt_mlp_scan_composed(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *eta, ttt_tensor *tok,
                               ttt_tensor *ln_w, ttt_tensor *ln_b, ttt_tensor *const *w0, double eps, ttt_tensor **out,
                               ttt_tensor **w_final) {
    const int64_t B = q->shape[0], H = q->shape[1], T = q->shape[2], d = q->shape[3], bs = ttt_numel(tok);
    ttt_tensor *gamma = ttt_reshape(ctx, ln_w, TTT_DIMS(H, 1, d)), *beta = ttt_reshape(ctx, ln_b, TTT_DIMS(H, 1, d));
    ttt_tensor *tok_col = ttt_reshape(ctx, tok, TTT_DIMS(bs, 1));
    ttt_tensor *tok_last = ttt_slice(ctx, tok, 0, bs - 1, bs, 1);
    const int64_t N = T / bs;
    ttt_tensor **outs = ttt__meta_alloc(ctx, sizeof(ttt_tensor *) * (size_t)N);
    if (!outs || !gamma || !beta || !tok_col || !tok_last) return TTT_ERR;
    ttt_tensor *w1 = w0[0], *b1 = w0[1], *w2 = w0[2], *b2 = w0[3];
    for (int64_t n = 0; n < N; n++) {
        const int64_t t0 = n * bs;
        ttt_tensor *qn = ttt_slice(ctx, q, 2, t0, t0 + bs, 1), *kn = ttt_slice(ctx, k, 2, t0, t0 + bs, 1);
        ttt_tensor *vn = ttt_slice(ctx, v, 2, t0, t0 + bs, 1);
        ttt_tensor *eta_row = ttt_reshape(ctx, ttt_contiguous(ctx, ttt_slice(ctx, eta, 2, t0, t0 + bs, 1)), TTT_DIMS(B, H, 1, bs));
        ttt_tensor *eta_col = ttt_transpose(ctx, eta_row, 2, 3);
        ttt_tensor *z1 = ttt_add(ctx, ttt_matmul(ctx, kn, w1, 0, 0), b1), *x2 = ttt_gelu(ctx, z1);
        ttt_tensor *g2 = ln_l2_grad(ctx, gamma, beta, ttt_add(ctx, ttt_matmul(ctx, x2, w2, 0, 0), b2), ttt_sub(ctx, vn, kn), eps);
        ttt_tensor *g1 = ttt_mul(ctx, ttt_matmul(ctx, g2, w2, 0, 1), ttt_gelu_grad(ctx, z1));
        ttt_tensor *E = ttt_attn_mask(ctx, ttt_mul(ctx, tok_col, eta_row), 0, 0, 0.0);
        ttt_tensor *zb = dual_z(ctx, E, qn, kn, w1, b1, g1);
        zb = dual_z(ctx, E, ttt_gelu(ctx, zb), x2, w2, b2, g2);
        outs[n] = ttt_add(ctx, qn, ttt_add(ctx, ttt_mul(ctx, ttt_layer_norm(ctx, zb, NULL, NULL, eps), gamma), beta));
        step_weights(ctx, tok_last, eta_row, eta_col, kn, g1, &w1, &b1);
        step_weights(ctx, tok_last, eta_row, eta_col, x2, g2, &w2, &b2);
        if (!outs[n] || !w1 || !b1 || !w2 || !b2) return TTT_ERR;
    }
    *out = N == 1 ? outs[0] : ttt_concat(ctx, (int)N, outs, 2);
    w_final[0] = w1, w_final[1] = b1, w_final[2] = w2, w_final[3] = b2;
    return *out ? TTT_OK : TTT_ERR;
}

static int check_mlp(ttt_ctx *ctx, ttt_tensor *const *x) {
    static const char *names[N_MLP_IN] = {"q", "k", "v", "eta", "tok", "ln_w", "ln_b", "w1", "b1", "w2", "b2"};
    static const char op[] = "ttt_mlp_scan";
    if (check_common(ctx, op, N_MLP_IN, names, x)) return TTT_ERR;
    if (x[0]->dtype == TTT_BF16) return bad(ctx, op, "q", x[0], "f32 or f64 (the MLP scan has no bf16 path)");
    const int64_t d = x[0]->shape[3], F = x[7]->ndim >= 3 ? x[7]->shape[x[7]->ndim - 1] : 0;
    if (F < 1 || !is_fast_weight(x[7], x[0], d, F)) return bad(ctx, op, "w1", x[7], "of q's dtype and [H, d, F] or [B, H, d, F]");
    if (!is_fast_weight(x[8], x[0], 1, F)) return bad(ctx, op, "b1", x[8], "of q's dtype and [H, 1, F] or [B, H, 1, F]");
    if (!is_fast_weight(x[9], x[0], F, d)) return bad(ctx, op, "w2", x[9], "of q's dtype and [H, F, d] or [B, H, F, d]");
    if (!is_fast_weight(x[10], x[0], 1, d)) return bad(ctx, op, "b2", x[10], "of q's dtype and [H, 1, d] or [B, H, 1, d]");
    return check_mini_batches(ctx, op, x[0], x[4]);
}

/* node: in = q, k, v, eta, tok, ln_w, ln_b, w1, b1, w2, b2 (q..eta dense); out = out, the four final weights;
 * pattr[0] = the weights at the mini-batches' starts; fattr[0] = eps */
static int mlp_scan_vjp(ttt_ctx *ctx, ttt_node *nd, ttt_tensor *const *gout, const bool *needs, ttt_tensor **gin) {
    ttt_tensor *const *in = nd->in;
    const double eps = nd->fattr[0];
    int any = 0;
    for (int i = 0; i < 5; i++) any |= gout[i] != NULL;
    if (!any) {
        for (int i = 0; i < N_MLP_IN; i++)
            if (needs[i] && !(gin[i] = ttt_zeros_like(ctx, in[i]))) return TTT_ERR;
        return TTT_OK;
    }
    if (ttt_grad_enabled(ctx)) {
        /* create_graph: differentiate the composed form, recomputed on the same inputs */
        ttt_tensor *o[5], *outs[5], *gs[5], *targets[N_MLP_IN], *grads[N_MLP_IN];
        if (ttt__ttt_mlp_scan_composed(ctx, in[0], in[1], in[2], in[3], in[4], in[5], in[6], in + 7, eps, &o[0], o + 1))
            return TTT_ERR;
        int n_out = 0, n = 0;
        for (int i = 0; i < 5; i++)
            if (gout[i]) outs[n_out] = o[i], gs[n_out++] = gout[i];
        for (int i = 0; i < N_MLP_IN; i++)
            if (needs[i]) targets[n++] = in[i];
        if (n && ttt__grad(ctx, n_out, outs, gs, n, targets, grads, true, true) != TTT_OK) return TTT_ERR;
        for (int i = 0, j = 0; i < N_MLP_IN; i++)
            if (needs[i]) gin[i] = grads[j++];
        return TTT_OK;
    }
    ttt_tensor *q = in[0], *tok = in[4];
    const int64_t B = q->shape[0], H = q->shape[1], d = q->shape[3], bs = ttt_numel(tok), F = nd->out[1]->shape[3];
    const ttt_dtype dt = q->dtype;
    ttt_tensor *dout = gout[0] ? ttt__dense(ctx, gout[0]) : ttt_zeros_like(ctx, nd->out[0]), *dfin[4];
    if (!dout) return TTT_ERR;
    for (int i = 0; i < 4; i++)
        if (gout[i + 1] && !(dfin[i] = ttt__dense(ctx, gout[i + 1]))) return TTT_ERR;
        else if (!gout[i + 1]) dfin[i] = NULL;
    ttt_tensor *g[N_MLP_IN] = {ttt__new_like(ctx, q), ttt__new_like(ctx, in[1]), ttt__new_like(ctx, in[2]),
                               ttt__new_like(ctx, in[3]), ttt_new(ctx, dt, TTT_DIMS(B, H, bs)), ttt_new(ctx, dt, TTT_DIMS(B, H, d)),
                               ttt_new(ctx, dt, TTT_DIMS(B, H, d)), ttt_new(ctx, dt, TTT_DIMS(B, H, d, F)),
                               ttt_new(ctx, dt, TTT_DIMS(B, H, 1, F)), ttt_new(ctx, dt, TTT_DIMS(B, H, F, d)),
                               ttt_new(ctx, dt, TTT_DIMS(B, H, 1, d))};
    for (int i = 0; i < N_MLP_IN; i++)
        if (!g[i]) return TTT_ERR;
    const int rc = ctx->be->ttt_mlp_scan_bwd(ctx->bs, g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9], g[10], dout,
                                             dfin[0], dfin[1], dfin[2], dfin[3], q, in[1], in[2], in[3], tok, in[5], in[6],
                                             nd->pattr[0], eps);
    if (rc != TTT_OK) {
        if (rc == TTT_BACKEND_DECLINED) ttt_backend_error("the backward kernel declined what the forward took");
        return ttt__backend_failed(ctx, "ttt_mlp_scan (backward)");
    }
    /* the per-(batch, head) partial sums of what the batch (and the heads, for tok) shared */
    for (int i = 0; i < 4; i++) gin[i] = needs[i] ? g[i] : NULL;
    for (int i = 4; i < N_MLP_IN; i++) {
        if (!needs[i]) continue;
        if (!(gin[i] = ttt_sum_to(ctx, g[i], in[i]->ndim, in[i]->shape))) return TTT_ERR;
    }
    return TTT_OK;
}

/* The kernel's forward, recorded with the weights at every mini-batch's start where a graph records (the
 * backward kernel then exists), or TTT_BACKEND_DECLINED with nothing left allocated. */
static int mlp_fused(ttt_ctx *ctx, ttt_tensor *const *x, int record, double eps, ttt_tensor **out, ttt_tensor **w_final) {
    const ttt_mark_t mark = ttt_mark(ctx);
    ttt_tensor *in[N_MLP_IN];
    for (int i = 0; i < N_MLP_IN; i++)
        if (!(in[i] = ttt_contiguous(ctx, x[i]))) return TTT_ERR;
    ttt_tensor *q = in[0];
    const int64_t B = q->shape[0], H = q->shape[1], T = q->shape[2], d = q->shape[3], F = in[7]->shape[in[7]->ndim - 1];
    const int64_t N = T / ttt_numel(in[4]);
    const ttt_dtype dt = q->dtype;
    ttt_tensor *o[5] = {ttt__new_like(ctx, q), ttt_new(ctx, dt, TTT_DIMS(B, H, d, F)), ttt_new(ctx, dt, TTT_DIMS(B, H, 1, F)),
                        ttt_new(ctx, dt, TTT_DIMS(B, H, F, d)), ttt_new(ctx, dt, TTT_DIMS(B, H, 1, d))};
    ttt_tensor *st = record ? ttt_new(ctx, dt, TTT_DIMS(B, H, N, 2 * d * F + F + d)) : NULL;
    for (int i = 0; i < 5; i++)
        if (!o[i]) return TTT_ERR;
    if (record && !st) return TTT_ERR;
    const int rc = ctx->be->ttt_mlp_scan(ctx->bs, o[0], o[1], o[2], o[3], o[4], st, q, in[1], in[2], in[3], in[4], in[5], in[6],
                                         in[7], in[8], in[9], in[10], eps);
    if (rc == TTT_BACKEND_DECLINED) {
        ttt_release(ctx, mark);
        return TTT_BACKEND_DECLINED;
    }
    if (rc != TTT_OK) return ttt__backend_failed(ctx, "ttt_mlp_scan");
    if (record) {
        ttt_node *nd = ttt__record(ctx, "ttt_mlp_scan", mlp_scan_vjp, N_MLP_IN, in, 5, o);
        if (!nd) return TTT_ERR;
        nd->pattr[0] = st;
        nd->fattr[0] = eps;
    }
    *out = o[0];
    for (int i = 0; i < 4; i++) w_final[i] = o[i + 1];
    return TTT_OK;
}

int ttt__ttt_mlp_scan(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *eta, ttt_tensor *tok,
                      ttt_tensor *ln_w, ttt_tensor *ln_b, ttt_tensor *const *w0, double eps, ttt_tensor **out,
                      ttt_tensor **w_final) {
    if (!ctx) return TTT_ERR;
    if (!out || !w_final || !w0) return ttt__set_error(ctx, "ttt_mlp_scan: NULL result or weight pointer");
    *out = w_final[0] = w_final[1] = w_final[2] = w_final[3] = NULL;
    ttt_tensor *x[N_MLP_IN] = {q, k, v, eta, tok, ln_w, ln_b, w0[0], w0[1], w0[2], w0[3]};
    if (check_mlp(ctx, x)) return TTT_ERR;
    if (!(eps >= 0)) return ttt__set_error(ctx, "ttt_mlp_scan: eps %g must be >= 0", eps);
    const int record = ttt__recording(ctx, N_MLP_IN, x);
    if (ctx->be->ttt_mlp_scan && (!record || ctx->be->ttt_mlp_scan_bwd)) {
        const int rc = mlp_fused(ctx, x, record, eps, out, w_final);
        if (rc != TTT_BACKEND_DECLINED) return rc;
    }
    return ttt__ttt_mlp_scan_composed(ctx, q, k, v, eta, tok, ln_w, ln_b, w0, eps, out, w_final);
}
