/* TTT-Linear and TTT-MLP (see include/ttt/ttt_rnn.h).
 *
 * Layout: a head's tensors are [B, H, tokens, features]; the fast weights are W1 [H or B,H, d, F],
 * b1 [.., 1, F] (W2 [.., F, d], b2 [.., 1, d] for the MLP) and broadcast over the batch until the
 * first update. The inner gradients are written out (the LayerNorm + L2 backward, gelu's
 * derivative) with ops, as the official code does; the outer gradient differentiates them. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../core/engine_private.h"
#include "ttt/backend.h" /* TTT_BACKEND_DECLINED: the fused decode step left it to the composed one */
#include "ttt/ttt_rnn.h"

static const double LN_EPS = 1e-6; /* flax / torch LayerNorm eps of the official code */

static int64_t width(const ttt_rnn_config *c) { /* F: the learner's hidden width */
    const int64_t d = c->dim / c->heads;
    return c->kind == TTT_RNN_MLP ? 4 * d : d;
}

static int check_config(ttt_ctx *ctx, const char *fn, const ttt_rnn_config *c) {
    if ((int)c->kind < TTT_RNN_LINEAR || (int)c->kind > TTT_RNN_MLP)
        return ttt__set_error(ctx, "%s: unknown TTT learner %d (0 Linear, 1 MLP)", fn, (int)c->kind);
    if ((int)c->backbone < TTT_RNN_TRANSFORMER || (int)c->backbone > TTT_RNN_MAMBA)
        return ttt__set_error(ctx, "%s: unknown backbone %d (0 transformer, 1 mamba)", fn, (int)c->backbone);
    if (c->dim < 2 || c->heads < 1 || c->dim % c->heads || (c->dim / c->heads) % 2)
        return ttt__set_error(ctx, "%s: dim %lld must split into %lld heads of even size (RoPE)", fn,
                              (long long)c->dim, (long long)c->heads);
    if (c->mini_batch < 1 || c->mini_batch > 4096)
        return ttt__set_error(ctx, "%s: mini_batch %lld must be in [1, 4096]", fn, (long long)c->mini_batch);
    if (!isfinite(c->base_lr) || c->base_lr > 1e6)
        return ttt__set_error(ctx, "%s: base_lr %g must be a finite number <= 1e6", fn, c->base_lr);
    if (!(c->rope_theta > 1) || !isfinite(c->rope_theta))
        return ttt__set_error(ctx, "%s: rope_theta %g must be a finite number > 1", fn, c->rope_theta);
    return TTT_OK;
}

int64_t ttt_rnn_param_count(const ttt_rnn_config *c) {
    if (!c || c->heads < 1) return 0;
    const int64_t D = c->dim, H = c->heads, d = D / H, F = width(c), mamba = c->backbone == TTT_RNN_MAMBA;
    int64_t n = 3 * D * D + (mamba ? D * D + 2 * (TTT_RNN_CONV * D + D) : D * D); /* q v o + (g, convs | k) */
    n += H * D + H + c->mini_batch + 2 * H * d + 2 * D;                          /* lr gate, offsets, norms */
    n += H * (d * F + F);
    if (c->kind == TTT_RNN_MLP) n += H * (F * d + d);
    return n;
}

/* A persistent parameter: N(0, std^2) when std > 0, else filled with fill. */
static int add_param(ttt_ctx *ctx, ttt_rnn *l, ttt_tensor **slot, ttt_dtype dt, int ndim, const int64_t *shape,
                     const char *name, double std, double fill, int decay) {
    ttt_tensor *p = ttt_param(ctx, dt, ndim, shape, name);
    if (!p) return TTT_ERR;
    ttt_mark_t m = ttt_mark(ctx);
    int rc = std > 0 ? ttt_assign(ctx, p, ttt_randn(ctx, dt, ndim, shape, std)) : ttt_fill(ctx, p, fill);
    ttt_release(ctx, m);
    *slot = p;
    l->params[l->n_params] = p;
    l->names[l->n_params] = name;
    l->decay[l->n_params] = decay;
    l->n_params++;
    return rc;
}

int ttt_rnn_init(ttt_ctx *ctx, ttt_rnn *l, const ttt_rnn_config *cfg, ttt_dtype dt, double std, double out_std) {
    if (!ctx) return TTT_ERR;
    if (!l || !cfg) return ttt__set_error(ctx, "ttt_rnn_init: layer and config must not be NULL");
    *l = (ttt_rnn){.cfg = *cfg};
    if (check_config(ctx, "ttt_rnn_init", cfg)) return TTT_ERR;
    if (dt != TTT_F32 && dt != TTT_F64)
        return ttt__set_error(ctx, "ttt_rnn_init: parameters must be f32 or f64, not %s", ttt_dtype_name(dt));
    if (!(std > 0) || !(out_std > 0)) return ttt__set_error(ctx, "ttt_rnn_init: std and out_std must be > 0");
    if (l->cfg.base_lr <= 0) l->cfg.base_lr = cfg->kind == TTT_RNN_MLP ? 0.1 : 1.0;
    const ttt_rnn_config *c = &l->cfg;
    const int64_t D = c->dim, H = c->heads, d = D / H, F = width(c), K = TTT_RNN_CONV;
    const int mamba = c->backbone == TTT_RNN_MAMBA, mlp = c->kind == TTT_RNN_MLP;
    const double conv_std = 1.0 / sqrt((double)K);
    int rc = add_param(ctx, l, &l->q, dt, TTT_DIMS(D, D), "q_proj.weight", std, 0, 1);
    if (!rc && !mamba) rc = add_param(ctx, l, &l->k, dt, TTT_DIMS(D, D), "k_proj.weight", std, 0, 1);
    if (!rc) rc = add_param(ctx, l, &l->v, dt, TTT_DIMS(D, D), "v_proj.weight", std, 0, 1);
    if (!rc) rc = add_param(ctx, l, &l->o, dt, TTT_DIMS(D, D), "o_proj.weight", out_std, 0, 1);
    if (!rc && mamba)
        rc = add_param(ctx, l, &l->g, dt, TTT_DIMS(D, D), "g_proj.weight", std, 0, 1) ||
             add_param(ctx, l, &l->conv_q_w, dt, TTT_DIMS(D, K), "conv_q.weight", conv_std, 0, 0) ||
             add_param(ctx, l, &l->conv_q_b, dt, TTT_DIMS(D), "conv_q.bias", 0, 0, 0) ||
             add_param(ctx, l, &l->conv_k_w, dt, TTT_DIMS(D, K), "conv_k.weight", conv_std, 0, 0) ||
             add_param(ctx, l, &l->conv_k_b, dt, TTT_DIMS(D), "conv_k.bias", 0, 0, 0);
    if (!rc)
        rc = add_param(ctx, l, &l->lr_w, dt, TTT_DIMS(H, D), "ttt_lr.weight", std, 0, 0) ||
             add_param(ctx, l, &l->lr_b, dt, TTT_DIMS(H), "ttt_lr.bias", 0, 0, 0) ||
             add_param(ctx, l, &l->tok_offset, dt, TTT_DIMS(c->mini_batch), "token_idx_offset", 0, 0, 0) ||
             add_param(ctx, l, &l->ln_w, dt, TTT_DIMS(H, d), "ttt_norm.weight", 0, 1, 0) ||
             add_param(ctx, l, &l->ln_b, dt, TTT_DIMS(H, d), "ttt_norm.bias", 0, 0, 0) ||
             add_param(ctx, l, &l->w1, dt, TTT_DIMS(H, d, F), "W1", std, 0, 1) ||
             add_param(ctx, l, &l->b1, dt, TTT_DIMS(H, 1, F), "b1", 0, 0, 0);
    if (!rc && mlp)
        rc = add_param(ctx, l, &l->w2, dt, TTT_DIMS(H, F, d), "W2", out_std, 0, 1) ||
             add_param(ctx, l, &l->b2, dt, TTT_DIMS(H, 1, d), "b2", 0, 0, 0);
    if (!rc)
        rc = add_param(ctx, l, &l->post_w, dt, TTT_DIMS(D), "post_norm.weight", 0, 1, 0) ||
             add_param(ctx, l, &l->post_b, dt, TTT_DIMS(D), "post_norm.bias", 0, 0, 0);
    if (!rc) {
        double inv[4096];
        float inv32[4096];
        for (int64_t i = 0; i < c->mini_batch; i++) inv[i] = 1.0 / (double)(i + 1), inv32[i] = (float)inv[i];
        ttt_mark_t m = ttt_mark(ctx);
        rc = !(l->tok_base = ttt_persistent(ctx, dt, TTT_DIMS(c->mini_batch), "ttt_rnn.tok_base")) ||
             ttt_assign(ctx, l->tok_base, ttt_from_host(ctx, dt, TTT_DIMS(c->mini_batch),
                                                        dt == TTT_F64 ? (const void *)inv : (const void *)inv32));
        ttt_release(ctx, m);
    }
    if (rc) {
        ttt_rnn_free(ctx, l);
        return TTT_ERR;
    }
    return TTT_OK;
}

void ttt_rnn_free(ttt_ctx *ctx, ttt_rnn *l) {
    if (!ctx || !l) return;
    for (int i = 0; i < l->n_params; i++) ttt_persistent_free(ctx, l->params[i]);
    ttt_persistent_free(ctx, l->tok_base);
    *l = (ttt_rnn){0};
}

/* ---- pieces ---------------------------------------------------------------------------------- */

ttt_tensor *ttt_causal_conv(ttt_ctx *ctx, ttt_tensor *x, ttt_tensor *w, ttt_tensor *bias, ttt_tensor *tail,
                            ttt_tensor **new_tail) {
    if (new_tail) *new_tail = NULL;
    if (!ctx || !x || !w) return NULL;
    if (x->ndim != 3 || w->ndim != 2 || w->shape[0] != x->shape[2] || w->shape[1] < 1 ||
        (tail && (tail->ndim != 3 || tail->shape[0] != x->shape[0] || tail->shape[1] != w->shape[1] - 1 ||
                  tail->shape[2] != x->shape[2]))) {
        char sx[96], sw[96];
        return ttt__set_error(ctx, "causal_conv: x %s must be [B, T, C] and w %s [C, K] (tail [B, K-1, C])",
                              ttt_shape_str(x, sx, sizeof sx), ttt_shape_str(w, sw, sizeof sw)),
               NULL;
    }
    const int64_t B = x->shape[0], T = x->shape[1], C = x->shape[2], K = w->shape[1];
    ttt_tensor *xx = x;
    if (K > 1) xx = ttt_concat(ctx, 2, (ttt_tensor *const[]){tail ? tail : ttt_zeros(ctx, x->dtype, TTT_DIMS(B, K - 1, C)), x}, 1);
    ttt_tensor *y = NULL;
    for (int64_t j = 0; xx && j < K; j++) { /* tap j multiplies the input K-1-j positions back */
        ttt_tensor *term = ttt_mul(ctx, ttt_slice(ctx, xx, 1, j, j + T, 1), ttt_reshape(ctx, ttt_slice(ctx, w, 1, j, j + 1, 1), TTT_DIMS(C)));
        y = y ? ttt_add(ctx, y, term) : term;
    }
    if (bias && y) y = ttt_add(ctx, y, bias);
    if (new_tail && K > 1 && xx) *new_tail = ttt_slice(ctx, xx, 1, T, T + K - 1, 1);
    return y;
}

/* gelu (tanh approximation)'s derivative, composed so that it differentiates again */
static ttt_tensor *gelu_grad(ttt_ctx *ctx, ttt_tensor *x) {
    const double c = 0.7978845608028654, a = 0.044715; /* sqrt(2 / pi) */
    ttt_tensor *x2 = ttt_mul(ctx, x, x);
    ttt_tensor *t = ttt_tanh(ctx, ttt_scale(ctx, ttt_mul(ctx, x, ttt_add_scalar(ctx, ttt_scale(ctx, x2, a), 1.0)), c));
    ttt_tensor *sech2 = ttt_add_scalar(ctx, ttt_neg(ctx, ttt_mul(ctx, t, t)), 1.0);
    ttt_tensor *inner = ttt_scale(ctx, ttt_add_scalar(ctx, ttt_scale(ctx, x2, 3 * a), 1.0), c);
    return ttt_add(ctx, ttt_scale(ctx, ttt_add_scalar(ctx, t, 1.0), 0.5),
                   ttt_scale(ctx, ttt_mul(ctx, ttt_mul(ctx, x, sech2), inner), 0.5));
}

/* Per-head LayerNorm with gain / bias [H, d] on z [B, H, n, d]. */
static ttt_tensor *head_ln(ttt_ctx *ctx, const ttt_rnn *l, ttt_tensor *z) {
    const int64_t H = l->cfg.heads, d = l->cfg.dim / H;
    return ttt_add(ctx, ttt_mul(ctx, ttt_layer_norm(ctx, z, NULL, NULL, LN_EPS), ttt_reshape(ctx, l->ln_w, TTT_DIMS(H, 1, d))),
                   ttt_reshape(ctx, l->ln_b, TTT_DIMS(H, 1, d)));
}

/* d/dz of 1/2 || LN(z) - target ||^2, row by row. */
static ttt_tensor *ln_l2_grad(ttt_ctx *ctx, const ttt_rnn *l, ttt_tensor *z, ttt_tensor *target) {
    const int64_t H = l->cfg.heads, d = l->cfg.dim / H;
    ttt_tensor *gamma = ttt_reshape(ctx, l->ln_w, TTT_DIMS(H, 1, d));
    ttt_tensor *xh = ttt_layer_norm(ctx, z, NULL, NULL, LN_EPS);
    ttt_tensor *y = ttt_add(ctx, ttt_mul(ctx, xh, gamma), ttt_reshape(ctx, l->ln_b, TTT_DIMS(H, 1, d)));
    ttt_tensor *gx = ttt_mul(ctx, ttt_sub(ctx, y, target), gamma);
    ttt_tensor *zc = ttt_sub(ctx, z, ttt_mean(ctx, z, 1, (const int[]){-1}, 1));
    ttt_tensor *rstd = ttt_rsqrt(ctx, ttt_add_scalar(ctx, ttt_mean(ctx, ttt_mul(ctx, zc, zc), 1, (const int[]){-1}, 1), LN_EPS));
    ttt_tensor *r = ttt_sub(ctx, ttt_sub(ctx, gx, ttt_mean(ctx, gx, 1, (const int[]){-1}, 1)),
                            ttt_mul(ctx, xh, ttt_mean(ctx, ttt_mul(ctx, gx, xh), 1, (const int[]){-1}, 1)));
    return ttt_mul(ctx, r, rstd);
}

/* The inputs of a span of T tokens, per head: q, k, v [B, H, T, d] (not yet rotated: the rotation
 * depends on the position within the mini-batch) and eta [B, H, T] (without the 1/i factor). */
typedef struct {
    ttt_tensor *q, *k, *v, *eta, *tok; /* tok [b]: max(0, 1/i + offset) */
} span_inputs;

static ttt_tensor *heads(ttt_ctx *ctx, const ttt_rnn *l, ttt_tensor *y) { /* [B, T, D] -> [B, H, T, d] */
    if (!y) return NULL;
    const int64_t B = y->shape[0], T = y->shape[1], H = l->cfg.heads;
    return ttt_permute(ctx, ttt_reshape(ctx, y, TTT_DIMS(B, T, H, l->cfg.dim / H)), (const int[]){0, 2, 1, 3});
}

static int prepare(ttt_ctx *ctx, const ttt_rnn *l, ttt_tensor *x, ttt_tensor *tail, ttt_tensor **new_tail,
                   span_inputs *in) {
    const ttt_rnn_config *c = &l->cfg;
    const int64_t H = c->heads;
    ttt_tensor *q, *k;
    if (c->backbone == TTT_RNN_MAMBA) { /* q and k share a projection; each has its own causal conv */
        ttt_tensor *u = ttt_matmul(ctx, x, l->q, 0, 1);
        q = ttt_causal_conv(ctx, u, l->conv_q_w, l->conv_q_b, tail, new_tail);
        k = ttt_causal_conv(ctx, u, l->conv_k_w, l->conv_k_b, tail, NULL);
    } else {
        q = ttt_matmul(ctx, x, l->q, 0, 1);
        k = ttt_matmul(ctx, x, l->k, 0, 1);
    }
    in->q = heads(ctx, l, q);
    in->k = heads(ctx, l, k);
    in->v = heads(ctx, l, ttt_matmul(ctx, x, l->v, 0, 1));
    /* eta_t = base_lr sigmoid(x_t . w_h + b_h) / d: [B, T, H] -> [B, H, T] */
    ttt_tensor *gate = ttt_sigmoid(ctx, ttt_add(ctx, ttt_matmul(ctx, x, l->lr_w, 0, 1), l->lr_b));
    in->eta = ttt_permute(ctx, ttt_scale(ctx, gate, c->base_lr / (double)(c->dim / H)), (const int[]){0, 2, 1});
    /* tok_i = max(0, 1/i + offset_i), i = 1..b */
    in->tok = ttt_relu(ctx, ttt_add(ctx, l->tok_base, l->tok_offset));
    return in->q && in->k && in->v && in->eta && in->tok ? TTT_OK : TTT_ERR;
}

/* The fast state while a span is processed: W_0 of the mini-batch (w) and the sums G over its
 * tokens read so far (g; NULL entries: zero, which is the case at a mini-batch's start). */
typedef struct {
    ttt_tensor *w[4], *g[4];
    int64_t pos;
    /* decode: the persistent state tensors (ttt_rnn_state's w, g), which the fused step updates in place
     * while w and g still are them (g NULL: zero, which the persistent g then also is); NULL otherwise */
    ttt_tensor *pw[4], *pg[4];
} fast_state;

static int n_fast(const ttt_rnn *l) { return l->cfg.kind == TTT_RNN_MLP ? 4 : 2; }

static ttt_tensor *rows(ttt_ctx *ctx, ttt_tensor *t, int64_t t0, int64_t n) { return ttt_slice(ctx, t, 2, t0, t0 + n, 1); }

/* G += eta-weighted sums of the inner gradients of the segment: (eta * X)^T G_z and eta @ G_z. */
static ttt_tensor *acc(ttt_ctx *ctx, ttt_tensor *g, ttt_tensor *upd) { return g ? ttt_add(ctx, g, upd) : upd; }

/* One layer of f in the dual form over a segment: inputs x [B, H, n, in], the keys it was trained
 * on (the layer's inputs at W_0) [B, H, n, in], its output gradients g [B, H, n, out]:
 *   z = x W_0 + b_0 - (E o tril(x keys^T)) g - E g - tok (x G_W + G_b)   (G: the sums before the segment) */
static ttt_tensor *dual_layer(ttt_ctx *ctx, ttt_tensor *E, ttt_tensor *tok, ttt_tensor *x, ttt_tensor *keys,
                              ttt_tensor *w, ttt_tensor *b, ttt_tensor *g, ttt_tensor *gw, ttt_tensor *gb) {
    ttt_tensor *attn = ttt_mul(ctx, E, ttt_attn_mask(ctx, ttt_matmul(ctx, x, keys, 0, 1), 0, 0, 0.0));
    ttt_tensor *z = ttt_sub(ctx, ttt_add(ctx, ttt_matmul(ctx, x, w, 0, 0), b),
                            ttt_add(ctx, ttt_matmul(ctx, attn, g, 0, 0), ttt_matmul(ctx, E, g, 0, 0)));
    if (gw) z = ttt_sub(ctx, z, ttt_mul(ctx, tok, ttt_add(ctx, ttt_matmul(ctx, x, gw, 0, 0), gb)));
    return z;
}

/* One segment of n tokens inside one mini-batch, starting at offset r0 of it. dual = 1: the
 * dual form over the segment (matrix products); dual = 0: n must be 1, the primal form
 * (W_i materialized). Writes the segment's outputs [B, H, n, d] and advances s. */
static ttt_tensor *segment(ttt_ctx *ctx, const ttt_rnn *l, const span_inputs *in, int64_t t0, int64_t n, int64_t r0,
                           int dual, fast_state *s) {
    const ttt_rnn_config *c = &l->cfg;
    const int mlp = c->kind == TTT_RNN_MLP;
    const int64_t b = c->mini_batch;
    ttt_tensor *q = ttt_rope(ctx, rows(ctx, in->q, t0, n), 2, r0, c->rope_theta);
    ttt_tensor *k = ttt_rope(ctx, rows(ctx, in->k, t0, n), 2, r0, c->rope_theta);
    ttt_tensor *v = rows(ctx, in->v, t0, n);
    ttt_tensor *eta = ttt_slice(ctx, in->eta, 2, t0, t0 + n, 1);           /* [B, H, n] */
    ttt_tensor *eta_row = ttt_reshape(ctx, ttt_contiguous(ctx, eta), TTT_DIMS(eta->shape[0], eta->shape[1], 1, n));
    ttt_tensor *eta_col = ttt_transpose(ctx, eta_row, 2, 3);                 /* [B, H, n, 1] */
    ttt_tensor *tok = ttt_reshape(ctx, ttt_slice(ctx, in->tok, 0, r0, r0 + n, 1), TTT_DIMS(n, 1));
    ttt_tensor *tok_last = ttt_slice(ctx, in->tok, 0, b - 1, b, 1);          /* [1] */
    ttt_tensor *w1 = s->w[0], *b1 = s->w[1], *w2 = mlp ? s->w[2] : NULL, *b2 = mlp ? s->w[3] : NULL;
    /* inner gradients at W_0 of every token of the segment */
    ttt_tensor *z1 = ttt_add(ctx, ttt_matmul(ctx, k, w1, 0, 0), b1), *x2 = NULL, *gz2 = NULL, *gz1;
    ttt_tensor *target = ttt_sub(ctx, v, k);
    if (mlp) {
        x2 = ttt_gelu(ctx, z1);
        gz2 = ln_l2_grad(ctx, l, ttt_add(ctx, ttt_matmul(ctx, x2, w2, 0, 0), b2), target);
        gz1 = ttt_mul(ctx, ttt_matmul(ctx, gz2, w2, 0, 1), gelu_grad(ctx, z1));
    } else {
        gz1 = ln_l2_grad(ctx, l, z1, target);
    }
    /* the sums G over the mini-batch so far, this segment included */
    ttt_tensor *gsum[4] = {acc(ctx, s->g[0], ttt_matmul(ctx, ttt_mul(ctx, eta_col, k), gz1, 1, 0)),
                           acc(ctx, s->g[1], ttt_matmul(ctx, eta_row, gz1, 0, 0)), NULL, NULL};
    if (mlp) {
        gsum[2] = acc(ctx, s->g[2], ttt_matmul(ctx, ttt_mul(ctx, eta_col, x2), gz2, 1, 0));
        gsum[3] = acc(ctx, s->g[3], ttt_matmul(ctx, eta_row, gz2, 0, 0));
    }
    ttt_tensor *out;
    if (dual) {
        /* E[i, j] = tok_i eta_j for j <= i; token i's weights are W_0 - tok_i (G_prev + sum_{j<=i} eta_j grad_j) */
        ttt_tensor *E = ttt_attn_mask(ctx, ttt_mul(ctx, tok, eta_row), 0, 0, 0.0);
        ttt_tensor *zb = dual_layer(ctx, E, tok, q, k, w1, b1, gz1, s->g[0], s->g[1]);
        if (mlp) zb = dual_layer(ctx, E, tok, ttt_gelu(ctx, zb), x2, w2, b2, gz2, s->g[2], s->g[3]);
        out = ttt_add(ctx, q, head_ln(ctx, l, zb));
    } else { /* primal: W_i = W_0 - tok_i G, then f(q; W_i) */
        ttt_tensor *wi[4];
        for (int i = 0; i < n_fast(l); i++) wi[i] = ttt_sub(ctx, s->w[i], ttt_mul(ctx, ttt_reshape(ctx, tok, TTT_DIMS(1)), gsum[i]));
        ttt_tensor *zb = ttt_add(ctx, ttt_matmul(ctx, q, wi[0], 0, 0), wi[1]);
        if (mlp) zb = ttt_add(ctx, ttt_matmul(ctx, ttt_gelu(ctx, zb), wi[2], 0, 0), wi[3]);
        out = ttt_add(ctx, q, head_ln(ctx, l, zb));
    }
    if (r0 + n == b) { /* the mini-batch is complete: the next starts from W_b = W_0 - tok_b G */
        for (int i = 0; i < n_fast(l); i++) {
            s->w[i] = ttt_sub(ctx, s->w[i], ttt_mul(ctx, tok_last, gsum[i]));
            s->g[i] = NULL;
        }
    } else {
        for (int i = 0; i < n_fast(l); i++) s->g[i] = gsum[i];
    }
    s->pos += n;
    return out;
}

/* n tokens (whole mini-batches, the first at a mini-batch's start) as one fused scan (ttt__ttt_linear_scan
 * or ttt__ttt_mlp_scan: one kernel call where the backend has it; the same math as segment() in the dual
 * form, mini-batch after mini-batch). q and k are rotated at the position within the mini-batch
 * by one RoPE over [B, H, n / b, b, d]. Writes the outputs [B, H, n, d] and advances s. */
static ttt_tensor *scan_span(ttt_ctx *ctx, const ttt_rnn *l, const span_inputs *in, int64_t t0, int64_t n, fast_state *s) {
    const ttt_rnn_config *c = &l->cfg;
    const int64_t B = in->q->shape[0], H = c->heads, d = c->dim / H, b = c->mini_batch;
    ttt_tensor *qk[2] = {in->q, in->k};
    for (int i = 0; i < 2; i++) {
        ttt_tensor *blocks = ttt_reshape(ctx, rows(ctx, qk[i], t0, n), 5, (int64_t[]){B, H, n / b, b, d});
        qk[i] = ttt_reshape(ctx, ttt_rope(ctx, blocks, 3, 0, c->rope_theta), TTT_DIMS(B, H, n, d));
    }
    ttt_tensor *v = ttt_contiguous(ctx, rows(ctx, in->v, t0, n));
    ttt_tensor *eta = ttt_contiguous(ctx, ttt_slice(ctx, in->eta, 2, t0, t0 + n, 1));
    ttt_tensor *out, *w[4];
    if (!qk[0] || !qk[1] || !v || !eta) return NULL;
    if (c->kind == TTT_RNN_MLP) {
        if (ttt__ttt_mlp_scan(ctx, qk[0], qk[1], v, eta, in->tok, l->ln_w, l->ln_b, s->w, LN_EPS, &out, w)) return NULL;
    } else if (ttt__ttt_linear_scan(ctx, qk[0], qk[1], v, eta, in->tok, l->ln_w, l->ln_b, s->w[0], s->w[1], LN_EPS, &out, &w[0],
                                    &w[1])) {
        return NULL;
    }
    for (int i = 0; i < n_fast(l); i++) s->w[i] = w[i], s->g[i] = NULL;
    s->pos += n;
    return out;
}

/* One token in the primal form as one fused op on the persistent state (decode), or NULL with
 * *declined set where the op leaves it to segment() (no kernel, TTT_FUSED=0, a graph, or the state is no
 * longer the persistent one because a composed segment replaced it in this call). */
static ttt_tensor *step_inplace(ttt_ctx *ctx, const ttt_rnn *l, const span_inputs *in, int64_t t0, int64_t r0,
                                fast_state *s, int *declined) {
    *declined = 1;
    const int nw = n_fast(l);
    if (!s->pw[0]) return NULL;
    for (int i = 0; i < nw; i++)
        if (s->w[i] != s->pw[i] || (s->g[i] && s->g[i] != s->pg[i])) return NULL;
    ttt_tensor *q = ttt_rope(ctx, rows(ctx, in->q, t0, 1), 2, r0, l->cfg.rope_theta);
    ttt_tensor *k = ttt_rope(ctx, rows(ctx, in->k, t0, 1), 2, r0, l->cfg.rope_theta);
    ttt_tensor *v = rows(ctx, in->v, t0, 1), *eta = ttt_slice(ctx, in->eta, 2, t0, t0 + 1, 1), *out = NULL;
    if (!q || !k || !v || !eta) return *declined = 0, NULL;
    const int rc = nw == 4 ? ttt__ttt_mlp_step(ctx, q, k, v, eta, in->tok, l->ln_w, l->ln_b, s->pw, s->pg, r0, LN_EPS, &out)
                           : ttt__ttt_linear_step(ctx, q, k, v, eta, in->tok, l->ln_w, l->ln_b, s->pw[0], s->pw[1],
                                                  s->pg[0], s->pg[1], r0, LN_EPS, &out);
    if (rc == TTT_BACKEND_DECLINED) return NULL;
    *declined = 0;
    if (rc != TTT_OK) return NULL;
    const int complete = r0 == l->cfg.mini_batch - 1; /* the kernel stepped W and zeroed the sums */
    for (int i = 0; i < nw; i++) s->g[i] = complete ? NULL : s->pg[i];
    s->pos += 1;
    return out;
}

/* Whole mini-batches go through the fused scan unless TTT_FUSED=0 (the composed segments then: the
 * before/after switch and the reference of tests/test_ttt_scan.c). A backend with TTT-MLP's forward kernel
 * but not its backward runs it only where no graph records (composed/ttt_scan.c says why); CPU and CUDA
 * have both. */
static int use_scan(ttt_ctx *ctx, const ttt_rnn *l) { (void)l; return ttt__fused(ctx); }

/* The layer over x [B, T, D] from state s. full_dual: whole aligned mini-batches in the dual
 * form; partial_dual: the tokens of partial ones too (else token by token, primal). */
static ttt_tensor *run(ttt_ctx *ctx, const ttt_rnn *l, ttt_tensor *x, fast_state *s, ttt_tensor *tail,
                       ttt_tensor **new_tail, int full_dual, int partial_dual) {
    const ttt_rnn_config *c = &l->cfg;
    const int64_t B = x->shape[0], T = x->shape[1], D = c->dim, b = c->mini_batch;
    span_inputs in;
    if (prepare(ctx, l, x, tail, new_tail, &in)) return NULL;
    ttt_tensor **outs = ttt__meta_alloc(ctx, sizeof(ttt_tensor *) * (size_t)T);
    if (!outs) return NULL;
    int n_out = 0;
    const int scan = full_dual && use_scan(ctx, l);
    for (int64_t t = 0; t < T;) {
        const int64_t r0 = s->pos % b, left = b - r0 < T - t ? b - r0 : T - t;
        if (scan && r0 == 0 && T - t >= b) { /* every whole mini-batch from here in one op */
            const int64_t n = (T - t) / b * b;
            ttt_tensor *o = scan_span(ctx, l, &in, t, n, s);
            if (!o) return NULL;
            outs[n_out++] = o;
            t += n;
            continue;
        }
        const int whole = r0 == 0 && left == b;
        int64_t n = left;
        int dual = whole ? full_dual : partial_dual;
        if (!dual) n = 1;
        ttt_tensor *o = NULL;
        int declined = 1;
        if (!dual && !(o = step_inplace(ctx, l, &in, t, r0, s, &declined)) && !declined) return NULL;
        if (!o) o = segment(ctx, l, &in, t, n, r0, dual, s);
        if (!o) return NULL;
        outs[n_out++] = o;
        t += n;
    }
    ttt_tensor *z = n_out == 1 ? outs[0] : ttt_concat(ctx, n_out, outs, 2); /* [B, H, T, d] */
    z = ttt_reshape(ctx, ttt_permute(ctx, z, (const int[]){0, 2, 1, 3}), TTT_DIMS(B, T, D));
    z = ttt_layer_norm(ctx, z, l->post_w, l->post_b, LN_EPS);
    if (c->backbone == TTT_RNN_MAMBA) z = ttt_mul(ctx, ttt_gelu(ctx, ttt_matmul(ctx, x, l->g, 0, 1)), z);
    return ttt_matmul(ctx, z, l->o, 0, 1);
}

static int check_x(ttt_ctx *ctx, const char *fn, const ttt_rnn *l, const ttt_tensor *x) {
    if (!l || !l->q || !l->w1) return ttt__set_error(ctx, "%s: the layer is not initialised (ttt_rnn_init)", fn);
    if (x->ndim != 3 || x->shape[2] != l->cfg.dim || x->shape[0] < 1 || x->shape[1] < 1 || x->dtype != l->q->dtype) {
        char s[96];
        return ttt__set_error(ctx, "%s: x %s %s must be [B, T, %lld] of the parameters' dtype %s", fn,
                              ttt_dtype_name(x->dtype), ttt_shape_str(x, s, sizeof s), (long long)l->cfg.dim,
                              ttt_dtype_name(l->q->dtype));
    }
    return TTT_OK;
}

ttt_tensor *ttt_rnn_forward(ttt_ctx *ctx, const ttt_rnn *l, ttt_tensor *x, int primal) {
    if (!ctx || !x) return NULL;
    if (check_x(ctx, "ttt_rnn_forward", l, x)) return NULL;
    fast_state s = {.w = {l->w1, l->b1, l->w2, l->b2}};
    return run(ctx, l, x, &s, NULL, NULL, !primal, !primal);
}

/* ---- state and decode ------------------------------------------------------------------------- */

int ttt_rnn_state_init(ttt_ctx *ctx, const ttt_rnn *l, ttt_rnn_state *s, int64_t batch) {
    if (!ctx) return TTT_ERR;
    if (!s) return ttt__set_error(ctx, "ttt_rnn_state_init: state must not be NULL");
    *s = (ttt_rnn_state){0};
    if (!l || !l->w1) return ttt__set_error(ctx, "ttt_rnn_state_init: the layer is not initialised");
    if (batch < 1 || batch > (1 << 20)) return ttt__set_error(ctx, "ttt_rnn_state_init: batch %lld must be in [1, 2^20]", (long long)batch);
    s->batch = batch;
    s->n_w = n_fast(l);
    ttt_tensor *src[4] = {l->w1, l->b1, l->w2, l->b2};
    for (int i = 0; i < s->n_w; i++) {
        int64_t shape[4] = {batch, src[i]->shape[0], src[i]->shape[1], src[i]->shape[2]};
        if (!(s->w[i] = ttt_persistent(ctx, src[i]->dtype, 4, shape, "ttt_rnn.state.w")) ||
            !(s->g[i] = ttt_persistent(ctx, src[i]->dtype, 4, shape, "ttt_rnn.state.g"))) {
            ttt_rnn_state_free(ctx, s);
            return TTT_ERR;
        }
    }
    if (l->cfg.backbone == TTT_RNN_MAMBA &&
        !(s->conv_tail = ttt_persistent(ctx, l->q->dtype, TTT_DIMS(batch, TTT_RNN_CONV - 1, l->cfg.dim), "ttt_rnn.state.tail"))) {
        ttt_rnn_state_free(ctx, s);
        return TTT_ERR;
    }
    if (ttt_rnn_state_reset(ctx, l, s)) {
        ttt_rnn_state_free(ctx, s);
        return TTT_ERR;
    }
    return TTT_OK;
}

int ttt_rnn_state_reset(ttt_ctx *ctx, const ttt_rnn *l, ttt_rnn_state *s) {
    if (!ctx || !l || !s || !s->w[0]) return ctx ? ttt__set_error(ctx, "ttt_rnn_state_reset: no state") : TTT_ERR;
    ttt_tensor *src[4] = {l->w1, l->b1, l->w2, l->b2};
    ttt_mark_t m = ttt_mark(ctx);
    int rc = TTT_OK;
    for (int i = 0; !rc && i < s->n_w; i++)
        rc = ttt_assign(ctx, s->w[i], ttt_expand(ctx, src[i], 4, s->w[i]->shape)) || ttt_fill(ctx, s->g[i], 0.0);
    if (!rc && s->conv_tail) rc = ttt_fill(ctx, s->conv_tail, 0.0);
    ttt_release(ctx, m);
    s->pos = 0;
    return rc;
}

int ttt_rnn_state_copy(ttt_ctx *ctx, ttt_rnn_state *dst, const ttt_rnn_state *src) {
    if (!ctx || !dst || !src || dst->n_w != src->n_w || dst->batch != src->batch || !dst->conv_tail != !src->conv_tail)
        return ctx ? ttt__set_error(ctx, "ttt_rnn_state_copy: states of different layers or batches") : TTT_ERR;
    for (int i = 0; i < src->n_w; i++)
        if (ttt_assign(ctx, dst->w[i], src->w[i]) || ttt_assign(ctx, dst->g[i], src->g[i])) return TTT_ERR;
    if (src->conv_tail && ttt_assign(ctx, dst->conv_tail, src->conv_tail)) return TTT_ERR;
    dst->pos = src->pos;
    return TTT_OK;
}

void ttt_rnn_state_free(ttt_ctx *ctx, ttt_rnn_state *s) {
    if (!ctx || !s) return;
    for (int i = 0; i < 4; i++) {
        ttt_persistent_free(ctx, s->w[i]);
        ttt_persistent_free(ctx, s->g[i]);
    }
    ttt_persistent_free(ctx, s->conv_tail);
    *s = (ttt_rnn_state){0};
}

ttt_tensor *ttt_rnn_decode(ttt_ctx *ctx, const ttt_rnn *l, ttt_rnn_state *st, ttt_tensor *x) {
    static const char fn[] = "ttt_rnn_decode";
    if (!ctx || !x) return NULL;
    if (check_x(ctx, fn, l, x)) return NULL;
    if (!st || !st->w[0] || st->n_w != n_fast(l) || x->shape[0] != st->batch)
        return ttt__set_error(ctx, "%s: the state is not made for this layer and batch (ttt_rnn_state_init)", fn), NULL;
    ttt_no_grad_begin(ctx);
    fast_state s = {.pos = st->pos};
    const int mid = st->pos % l->cfg.mini_batch != 0; /* G is zero at a mini-batch's start */
    for (int i = 0; i < st->n_w; i++) {
        s.w[i] = s.pw[i] = st->w[i];
        s.g[i] = mid ? st->g[i] : NULL;
        s.pg[i] = st->g[i]; /* zero where mid is 0: every call leaves it zero after a complete mini-batch */
    }
    ttt_tensor *tail = NULL;
    ttt_tensor *out = run(ctx, l, x, &s, st->conv_tail, st->conv_tail ? &tail : NULL, 1, 0);
    int rc = out ? TTT_OK : TTT_ERR;
    for (int i = 0; !rc && i < st->n_w; i++) {
        if (s.w[i] != st->w[i]) rc = ttt_assign(ctx, st->w[i], s.w[i]);
        if (!rc) rc = s.g[i] ? (s.g[i] != st->g[i] ? ttt_assign(ctx, st->g[i], s.g[i]) : TTT_OK) : ttt_fill(ctx, st->g[i], 0.0);
    }
    if (!rc && tail) rc = ttt_assign(ctx, st->conv_tail, tail);
    if (!rc) st->pos = s.pos;
    ttt_no_grad_end(ctx);
    return rc ? NULL : out;
}
