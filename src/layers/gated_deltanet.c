/* Gated DeltaNet (Yang, Kautz, Hatamizadeh, arXiv 2412.06464), see include/ttt/mixers.h.
 *
 * RECURRENCE (row-query layout, S [dk, dv]):
 *     S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,   o_t = q_t^T S_t
 *
 * CHUNKWISE FORM (derived here for this layout). Within a chunk of C tokens starting
 * from state S0, let G_t = sum_{s<=t} g_s (g = log alpha), gamma_t = exp(G_t) and
 * D_ts = exp(G_t - G_s) for s <= t (0 above the diagonal). Write each update as
 * S_t = alpha_t S_{t-1} + k_t u_t^T with u_t = beta_t (v_t - alpha_t S_{t-1}^T k_t).
 * Unrolling, alpha_t S_{t-1} = gamma_t S0 + sum_{s<t} D_ts k_s u_s^T, so
 *     (I + M) U = diag(beta) V - diag(beta gamma) K S0,   M_ts = beta_t (k_t . k_s) D_ts, s < t.
 * With T = (I + M)^-1 (unit lower triangular; the WY / UT-transform matrix):
 *     U = Ut - W S0,   Ut = T diag(beta) V,   W = T diag(beta gamma) K
 *     O = diag(gamma) Q S0 + (Q K^T * D) U = (diag(gamma) Q - P W) S0 + P Ut,   P = Q K^T * D
 *     S_C = gamma_C S0 + Kd^T U = (gamma_C I - Kd^T W) S0 + Kd^T Ut,   Kd_s = k_s exp(G_C - G_s)
 * Everything but S0 is computed for all chunks at once; the chunks are then linked by
 * the scan S_{c+1} = A_c S_c + B_c (A_c = gamma_C I - Kd^T W, B_c = Kd^T Ut), and the
 * outputs are one batched product with the states before each chunk.
 *
 * THE INVERSE without a triangular-solve op, by exact block doubling (wy_inverse): the
 * inverse of a unit lower triangular [[I + M11, 0], [E, I + M22]] is [[A, 0], [-D E A, D]]
 * with A, D the inverses of the diagonal blocks; starting from blocks of size 1 (the
 * identity), log2(C) levels build the inverses of blocks of size 2, 4, ..., C, each level
 * forming E from K, beta and G of the two halves. No powers of M appear (unlike a Neumann
 * series), so it is as stable as forward substitution; nothing is uploaded from the host,
 * so CUDA graphs can record it.
 * Decays enter only as exp of differences G_t - G_s <= 0 (masked before the exp), so
 * nothing overflows however strong the gate. */
#include <math.h>
#include <stdlib.h>

#include "mixers_internal.h"
#include "ttt/mixers.h"

/* beta == NULL: the decayed recurrence without the delta rule (Mamba 2's SSD, mamba2.c). */
static int check_core(ttt_ctx *ctx, const char *fn, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *beta,
                      ttt_tensor *g, ttt_tensor *s0) {
    if (!q || !k || !v || !g) return TTT_ERR;
    if (!beta) beta = g;
    char a[96], b[96], c[96], d[96], e[96];
    const int64_t *Q = q->shape;
    bool ok = q->ndim == 4 && k->ndim == 4 && v->ndim == 4 && Q[0] >= 1 && Q[1] >= 1 && Q[2] >= 1 && Q[3] >= 1 &&
              ttt_same_shape(q, k) && v->shape[0] == Q[0] && v->shape[1] == Q[1] && v->shape[2] == Q[2] &&
              v->shape[3] >= 1 && beta->ndim == 3 && g->ndim == 3 && ttt_same_shape(beta, g) &&
              beta->shape[0] == Q[0] && beta->shape[1] == Q[1] && beta->shape[2] == Q[2];
    if (!ok)
        return ttt__set_error(ctx,
                              "%s: q %s, k %s, v %s, beta %s, g %s must be [B, H, T, dk], [B, H, T, dk], "
                              "[B, H, T, dv], [B, H, T], [B, H, T]",
                              fn, ttt_shape_str(q, a, sizeof a), ttt_shape_str(k, b, sizeof b),
                              ttt_shape_str(v, c, sizeof c), ttt_shape_str(beta, d, sizeof d),
                              ttt_shape_str(g, e, sizeof e));
    if (!ttt__is_float(q->dtype) || k->dtype != q->dtype || v->dtype != q->dtype || beta->dtype != q->dtype ||
        g->dtype != q->dtype)
        return ttt__set_error(ctx, "%s: q, k, v, beta, g must share one float dtype (q is %s)", fn,
                              ttt_dtype_name(q->dtype));
    if (s0 && (s0->ndim != 4 || s0->shape[0] != Q[0] || s0->shape[1] != Q[1] || s0->shape[2] != Q[3] ||
               s0->shape[3] != v->shape[3] || !ttt__is_float(s0->dtype)))
        return ttt__set_error(ctx, "%s: state s0 %s must be [B, H, dk, dv] = [%lld, %lld, %lld, %lld]", fn,
                              ttt_shape_str(s0, a, sizeof a), (long long)Q[0], (long long)Q[1], (long long)Q[3],
                              (long long)v->shape[3]);
    return TTT_OK;
}

int ttt__mx_check_decay(ttt_ctx *ctx, const char *fn, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *beta,
                        ttt_tensor *g, ttt_tensor *s0) {
    return check_core(ctx, fn, q, k, v, beta, g, s0);
}

static ttt_dtype work_dtype(ttt_dtype dt) { return dt == TTT_BF16 ? TTT_F32 : dt; }

/* Constant masks made on the device (fill + attn_mask: no host upload, so a CUDA graph can
 * record them): the lower triangle with the diagonal, and the identity. */
static ttt_tensor *lower_ones(ttt_ctx *ctx, ttt_dtype dt, int64_t C) {
    return ttt_attn_mask(ctx, ttt_full(ctx, dt, TTT_DIMS(C, C), 1.0), 0, 0, 0.0);
}
static ttt_tensor *identity(ttt_ctx *ctx, ttt_dtype dt, int64_t n) {
    return ttt_attn_mask(ctx, ttt_full(ctx, dt, TTT_DIMS(n, n), 1.0), 1, 0, 0.0);
}

/* Rows [..., 2, s, w] of x [Z, nb * 2 s, w] split into halves: half h -> [Z, nb, s, w]. */
static ttt_tensor *half(ttt_ctx *ctx, ttt_tensor *x, int64_t nb, int64_t s, int h) {
    if (!x) return NULL; /* an earlier op failed: its message stands */
    const int64_t Z = x->shape[0], w = x->shape[x->ndim - 1];
    ttt_tensor *p = ttt_reshape(ctx, x, TTT_DIMS(Z, nb, 2, s, w));
    return ttt_reshape(ctx, ttt_slice(ctx, p, 2, h, h + 1, 1), TTT_DIMS(Z, nb, s, w));
}

/* T = (I + M)^-1 for every chunk, M_ts = beta_t (k_t . k_s) exp(G_t - G_s) for s < t, by block
 * doubling: the inverse of [[I + M11, 0], [E, I + M22]] is [[A, 0], [-D E A, D]] with
 * A = (I + M11)^-1, D = (I + M22)^-1, so the inverses of the diagonal blocks of size s give
 * those of size 2 s. K [Z, C, dk], b, G [Z, C, 1], C a power of two; returns [Z, C, C]. */
static ttt_tensor *wy_inverse(ttt_ctx *ctx, ttt_tensor *K, ttt_tensor *b, ttt_tensor *G, int64_t C) {
    if (!K || !b || !G) return NULL;
    const int64_t Z = K->shape[0];
    ttt_tensor *Tb = ttt_full(ctx, K->dtype, TTT_DIMS(Z, C, 1, 1), 1.0); /* C blocks of size 1 */
    for (int64_t s = 1; s < C && Tb; s *= 2) {
        const int64_t nb = C / (2 * s);
        ttt_tensor *K1 = half(ctx, K, nb, s, 0), *K2 = half(ctx, K, nb, s, 1);
        ttt_tensor *G1 = half(ctx, G, nb, s, 0), *G2 = half(ctx, G, nb, s, 1), *b2 = half(ctx, b, nb, s, 1);
        ttt_tensor *decay = ttt_exp(ctx, ttt_sub(ctx, G2, ttt_transpose(ctx, G1, -1, -2)));
        ttt_tensor *E = ttt_mul(ctx, ttt_mul(ctx, ttt_matmul(ctx, K2, K1, 0, 1), decay), b2); /* [Z, nb, s, s] */
        ttt_tensor *pairs = ttt_reshape(ctx, Tb, TTT_DIMS(Z, nb, 2, s, s));
        ttt_tensor *A = ttt_reshape(ctx, ttt_slice(ctx, pairs, 2, 0, 1, 1), TTT_DIMS(Z, nb, s, s));
        ttt_tensor *D = ttt_reshape(ctx, ttt_slice(ctx, pairs, 2, 1, 2, 1), TTT_DIMS(Z, nb, s, s));
        ttt_tensor *X = ttt_neg(ctx, ttt_matmul(ctx, D, ttt_matmul(ctx, E, A, 0, 0), 0, 0));
        ttt_tensor *top[2] = {A, ttt_zeros(ctx, K->dtype, TTT_DIMS(Z, nb, s, s))}, *bottom[2] = {X, D};
        ttt_tensor *rows[2] = {ttt_concat(ctx, 2, top, 3), ttt_concat(ctx, 2, bottom, 3)};
        Tb = ttt_concat(ctx, 2, rows, 2); /* [Z, nb, 2 s, 2 s] */
    }
    return Tb ? ttt_reshape(ctx, Tb, TTT_DIMS(Z, C, C)) : NULL;
}

ttt_tensor *ttt__mx_decay_chunked(ttt_ctx *ctx, const char *fn, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v,
                                  ttt_tensor *beta, ttt_tensor *g, int64_t chunk, ttt_tensor *s0, ttt_tensor **s_out) {
    if (!ctx) return NULL;
    if (check_core(ctx, fn, q, k, v, beta, g, s0) != TTT_OK || ttt__mx_check_chunk(ctx, fn, chunk) != TTT_OK)
        return NULL;
    const int64_t B = q->shape[0], H = q->shape[1], T = q->shape[2], dk = q->shape[3], dv = v->shape[3];
    const int64_t C = ttt__mx_chunk_len(chunk, T), N = (T + C - 1) / C, Tp = N * C;
    const ttt_dtype wd = work_dtype(q->dtype);
    /* padding rows (k = v = 0, beta = 0, g = 0) leave the state as it is */
#define CHUNKS(x, w) ttt_reshape(ctx, ttt__mx_pad(ctx, ttt__mx_as(ctx, x, wd), 2, Tp), TTT_DIMS(B, H, N, C, w))
    ttt_tensor *Q = CHUNKS(q, dk), *K = CHUNKS(k, dk), *V = CHUNKS(v, dv), *lg = CHUNKS(g, 1);
    ttt_tensor *b = beta ? CHUNKS(beta, 1) : NULL;
#undef CHUNKS
    ttt_tensor *G = ttt_matmul(ctx, lower_ones(ctx, wd, C), lg, 0, 0); /* cumulative log decay [.., C, 1] */
    ttt_tensor *Dl = ttt_sub(ctx, G, ttt_transpose(ctx, G, -1, -2));   /* G_t - G_s [.., C, C] */
    ttt_tensor *D = ttt_exp(ctx, ttt_attn_mask(ctx, Dl, 0, 0, -INFINITY));
    ttt_tensor *P = ttt_mul(ctx, ttt_matmul(ctx, Q, K, 0, 1), D);
    ttt_tensor *gamma = ttt_exp(ctx, G);
    ttt_tensor *GC = ttt_slice(ctx, G, 3, C - 1, C, 1); /* [.., 1, 1] */
    ttt_tensor *Kd = ttt_mul(ctx, K, ttt_exp(ctx, ttt_sub(ctx, GC, G)));
    ttt_tensor *Qe, *inner, *A, *Bm;
    if (b) {
        const int64_t Z = B * H * N;
        ttt_tensor *Tinv = wy_inverse(ctx, ttt_reshape(ctx, K, TTT_DIMS(Z, C, dk)), ttt_reshape(ctx, b, TTT_DIMS(Z, C, 1)),
                                      ttt_reshape(ctx, G, TTT_DIMS(Z, C, 1)), C);
        Tinv = Tinv ? ttt_reshape(ctx, Tinv, TTT_DIMS(B, H, N, C, C)) : NULL;
        ttt_tensor *W = ttt_matmul(ctx, Tinv, ttt_mul(ctx, K, ttt_mul(ctx, b, gamma)), 0, 0); /* [.., C, dk] */
        ttt_tensor *Ut = ttt_matmul(ctx, Tinv, ttt_mul(ctx, V, b), 0, 0);                    /* [.., C, dv] */
        Qe = ttt_sub(ctx, ttt_mul(ctx, Q, gamma), ttt_matmul(ctx, P, W, 0, 0));
        inner = ttt_matmul(ctx, P, Ut, 0, 0);
        A = ttt_sub(ctx, ttt_mul(ctx, ttt_exp(ctx, GC), identity(ctx, wd, dk)), ttt_matmul(ctx, Kd, W, 1, 0));
        Bm = ttt_matmul(ctx, Kd, Ut, 1, 0);
    } else { /* no delta rule: U = V, W = 0, and A_c = gamma_C is a scalar */
        Qe = ttt_mul(ctx, Q, gamma);
        inner = ttt_matmul(ctx, P, V, 0, 0);
        A = ttt_exp(ctx, GC);
        Bm = ttt_matmul(ctx, Kd, V, 1, 0);
    }
    ttt_tensor *S0 = s0 ? ttt__mx_as(ctx, s0, wd) : ttt_zeros(ctx, wd, TTT_DIMS(B, H, dk, dv));
    ttt_tensor *prev = NULL, *last = NULL;
    if (!A || ttt__mx_state_scan(ctx, A, Bm, S0, &prev, &last) != TTT_OK) return NULL;
    ttt_tensor *O = ttt_add(ctx, ttt_matmul(ctx, Qe, prev, 0, 0), inner);
    O = ttt_slice(ctx, ttt_reshape(ctx, O, TTT_DIMS(B, H, Tp, dv)), 2, 0, T, 1);
    if (s_out) *s_out = last;
    return ttt__mx_as(ctx, O, q->dtype);
}

ttt_tensor *ttt__mx_decay_recurrent(ttt_ctx *ctx, const char *fn, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v,
                                    ttt_tensor *beta, ttt_tensor *g, ttt_tensor *s0, ttt_tensor **s_out) {
    if (!ctx) return NULL;
    if (check_core(ctx, fn, q, k, v, beta, g, s0) != TTT_OK) return NULL;
    const int64_t B = q->shape[0], H = q->shape[1], T = q->shape[2], dk = q->shape[3], dv = v->shape[3];
    const ttt_dtype wd = work_dtype(q->dtype);
    ttt_tensor *S = s0 ? ttt__mx_as(ctx, s0, wd) : ttt_zeros(ctx, wd, TTT_DIMS(B, H, dk, dv));
    ttt_tensor **outs = ttt__meta_alloc(ctx, sizeof(ttt_tensor *) * (size_t)T);
    if (!outs) return ttt__set_error(ctx, "gated_delta_recurrent: out of host memory"), NULL;
    for (int64_t t = 0; t < T && S; t++) {
#define AT(x) ttt__mx_as(ctx, ttt_slice(ctx, x, 2, t, t + 1, 1), wd)
        ttt_tensor *qt = AT(q), *kt = AT(k), *vt = AT(v); /* [B, H, 1, d] */
        ttt_tensor *bt = beta ? ttt_reshape(ctx, AT(beta), TTT_DIMS(B, H, 1, 1)) : NULL;
        ttt_tensor *at = ttt_exp(ctx, ttt_reshape(ctx, AT(g), TTT_DIMS(B, H, 1, 1)));
#undef AT
        S = ttt_mul(ctx, S, at);                                                          /* alpha S */
        ttt_tensor *u = bt ? ttt_mul(ctx, ttt_sub(ctx, vt, ttt_matmul(ctx, kt, S, 0, 0)), bt) /* beta (v - S^T k) */
                           : vt;
        S = ttt_add(ctx, S, ttt_matmul(ctx, kt, u, 1, 0));                               /* + k u^T */
        outs[t] = ttt_matmul(ctx, qt, S, 0, 0);
    }
    if (!S) return NULL;
    if (s_out) *s_out = S;
    return ttt__mx_as(ctx, T == 1 ? outs[0] : ttt_concat(ctx, (int)T, outs, 2), q->dtype);
}

/* The composed chunkwise core: the fused op's fallback, and what its VJP differentiates under create_graph. */
static ttt_tensor *composed_core(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *beta,
                                 ttt_tensor *g, int64_t chunk, ttt_tensor *s0, ttt_tensor **s_out) {
    return ttt__mx_decay_chunked(ctx, "gated_delta_chunked", q, k, v, beta, g, chunk, s0, s_out);
}

/* One fused op (composed/gated_delta.c: the backend's gdn_chunk_fwd / gdn_chunk_bwd, the state on chip) where
 * the backend has it and the fused paths are on; the composed chunkwise form above otherwise. The block's
 * training and prefill pass come through here. */
ttt_tensor *ttt_gated_delta_chunked(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *beta,
                                    ttt_tensor *g, int64_t chunk, ttt_tensor *s0, ttt_tensor **s_out) {
    if (!ctx) return NULL;
    if (!beta) return ttt__set_error(ctx, "gated_delta_chunked: beta must not be NULL"), NULL;
    if (check_core(ctx, "gated_delta_chunked", q, k, v, beta, g, s0) != TTT_OK ||
        ttt__mx_check_chunk(ctx, "gated_delta_chunked", chunk) != TTT_OK)
        return NULL;
    int declined = 0;
    ttt_tensor *o = ttt__gated_delta_fused(ctx, q, k, v, beta, g, chunk, s0, s_out, composed_core, &declined);
    if (o || !declined) return o;
    return composed_core(ctx, q, k, v, beta, g, chunk, s0, s_out);
}

ttt_tensor *ttt_gated_delta_recurrent(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *beta,
                                      ttt_tensor *g, ttt_tensor *s0, ttt_tensor **s_out) {
    if (ctx && !beta) return ttt__set_error(ctx, "gated_delta_recurrent: beta must not be NULL"), NULL;
    return ttt__mx_decay_recurrent(ctx, "gated_delta_recurrent", q, k, v, beta, g, s0, s_out);
}

/* ---- the block ------------------------------------------------------------------------------ */

ttt_gdn_config ttt_gdn_config_default(int64_t dim, int64_t heads) {
    const int64_t d = heads > 0 ? dim / heads : 0;
    ttt_gdn_config c = {.dim = dim, .heads = heads, .head_k_dim = d, .head_v_dim = d, .conv_size = 4, .chunk = 64,
                        .norm_eps = 1e-5, .init_std = 0.02, .out_std = 0.02};
    return c;
}

static int check_config(ttt_ctx *ctx, const char *fn, const ttt_gdn_config *c) {
    if (c->dim < 1 || c->heads < 1 || c->head_k_dim < 1 || c->head_v_dim < 1 || c->conv_size < 1)
        return ttt__set_error(ctx, "%s: dim %lld, heads %lld, head_k_dim %lld, head_v_dim %lld, conv_size %lld must be >= 1",
                              fn, (long long)c->dim, (long long)c->heads, (long long)c->head_k_dim,
                              (long long)c->head_v_dim, (long long)c->conv_size);
    if (ttt__mx_check_chunk(ctx, fn, c->chunk) != TTT_OK) return TTT_ERR;
    if (!(c->norm_eps > 0) || !isfinite(c->norm_eps))
        return ttt__set_error(ctx, "%s: norm_eps %g must be positive", fn, c->norm_eps);
    if (!(c->init_std > 0) || !(c->out_std > 0) || !isfinite(c->init_std) || !isfinite(c->out_std))
        return ttt__set_error(ctx, "%s: init_std %g and out_std %g must be positive", fn, c->init_std, c->out_std);
    return TTT_OK;
}

static const char *const NAMES[TTT_GDN_PARAMS] = {
    "q_proj.weight",   "k_proj.weight",   "v_proj.weight", "a_proj.weight", "b_proj.weight",
    "A_log",           "dt_bias",         "q_conv1d.weight", "k_conv1d.weight", "v_conv1d.weight",
    "g_proj.weight",   "o_norm.weight",   "o_proj.weight"};
static const int DECAY[TTT_GDN_PARAMS] = {1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 0, 1};

/* The parameter slots in NAMES order, and each one's expected shape. */
static void slots(const ttt_gdn *l, ttt_tensor **p) {
    ttt_tensor *all[TTT_GDN_PARAMS] = {l->q_proj, l->k_proj, l->v_proj, l->a_proj, l->b_proj, l->A_log, l->dt_bias,
                                       l->q_conv, l->k_conv, l->v_conv, l->g_proj, l->o_norm, l->o_proj};
    for (int i = 0; i < TTT_GDN_PARAMS; i++) p[i] = all[i];
}
static void shapes(const ttt_gdn_config *c, int *ndim, int64_t (*shape)[2]) {
    const int64_t D = c->dim, H = c->heads, Fk = H * c->head_k_dim, Fv = H * c->head_v_dim, K = c->conv_size;
    const int64_t s[TTT_GDN_PARAMS][2] = {{Fk, D}, {Fk, D}, {Fv, D}, {H, D}, {H, D},  {H, 0},  {H, 0},
                                          {Fk, K}, {Fk, K}, {Fv, K}, {Fv, D}, {c->head_v_dim, 0}, {D, Fv}};
    for (int i = 0; i < TTT_GDN_PARAMS; i++) {
        ndim[i] = s[i][1] ? 2 : 1;
        shape[i][0] = s[i][0], shape[i][1] = s[i][1];
    }
}

int64_t ttt_gdn_param_count(const ttt_gdn_config *c) {
    if (!c || c->dim < 1 || c->heads < 1 || c->head_k_dim < 1 || c->head_v_dim < 1 || c->conv_size < 1) return 0;
    int nd[TTT_GDN_PARAMS];
    int64_t sh[TTT_GDN_PARAMS][2], n = 0;
    shapes(c, nd, sh);
    for (int i = 0; i < TTT_GDN_PARAMS; i++) n += sh[i][0] * (nd[i] == 2 ? sh[i][1] : 1);
    return n;
}

int ttt_gdn_params(const ttt_gdn *l, ttt_tensor **params, const char **names, int *decay) {
    if (!l || !params) return 0;
    ttt_tensor *all[TTT_GDN_PARAMS];
    slots(l, all);
    int n = 0;
    for (int i = 0; i < TTT_GDN_PARAMS; i++)
        if (all[i]) {
            if (names) names[n] = NAMES[i];
            if (decay) decay[n] = DECAY[i];
            params[n++] = all[i];
        }
    return n;
}

void ttt_gdn_free(ttt_ctx *ctx, ttt_gdn *l) {
    if (!ctx || !l) return;
    ttt_tensor *p[TTT_GDN_PARAMS];
    int n = ttt_gdn_params(l, p, NULL, NULL);
    for (int i = 0; i < n; i++) ttt_persistent_free(ctx, p[i]);
    *l = (ttt_gdn){.cfg = l->cfg};
}

int ttt_gdn_init(ttt_ctx *ctx, ttt_gdn *l, const ttt_gdn_config *cfg, ttt_dtype dt) {
    if (!ctx) return TTT_ERR;
    if (!l || !cfg) return ttt__set_error(ctx, "gdn_init: layer and config must not be NULL");
    *l = (ttt_gdn){.cfg = *cfg};
    if (check_config(ctx, "gdn_init", cfg) != TTT_OK) return TTT_ERR;
    if (dt != TTT_F32 && dt != TTT_F64)
        return ttt__set_error(ctx, "gdn_init: parameters must be f32 or f64, not %s", ttt_dtype_name(dt));
    int nd[TTT_GDN_PARAMS];
    int64_t sh[TTT_GDN_PARAMS][2];
    shapes(cfg, nd, sh);
    const double is = cfg->init_std, tap = 1.0 / sqrt((double)cfg->conv_size);
    ttt_tensor **p[TTT_GDN_PARAMS] = {&l->q_proj, &l->k_proj, &l->v_proj, &l->a_proj, &l->b_proj,
                                      &l->A_log,  &l->dt_bias, &l->q_conv, &l->k_conv, &l->v_conv,
                                      &l->g_proj, &l->o_norm, &l->o_proj};
    /* std, lo, hi per slot (A_log and dt_bias are transformed below) */
    const double init[TTT_GDN_PARAMS][3] = {{is, 0, 0},    {is, 0, 0},    {is, 0, 0},           {is, 0, 0},
                                            {is, 0, 0},    {0, 1, 16},    {0, log(1e-3), log(1e-1)},
                                            {0, -tap, tap}, {0, -tap, tap}, {0, -tap, tap},      {is, 0, 0},
                                            {0, 1, 1},     {cfg->out_std, 0, 0}};
    int rc = TTT_OK;
    for (int i = 0; i < TTT_GDN_PARAMS && rc == TTT_OK; i++)
        rc = ttt__mx_param(ctx, p[i], dt, nd[i], sh[i], NAMES[i], init[i][0], init[i][1], init[i][2]);
    if (rc == TTT_OK) rc = ttt__mx_init_gate(ctx, l->A_log, l->dt_bias);
    if (rc != TTT_OK) {
        ttt_gdn_free(ctx, l);
        return TTT_ERR;
    }
    return TTT_OK;
}

static int check_layer(ttt_ctx *ctx, const char *fn, const ttt_gdn *l) {
    if (!l) return ttt__set_error(ctx, "%s: layer must not be NULL", fn);
    if (check_config(ctx, fn, &l->cfg) != TTT_OK) return TTT_ERR;
    ttt_tensor *p[TTT_GDN_PARAMS];
    int nd[TTT_GDN_PARAMS];
    int64_t sh[TTT_GDN_PARAMS][2];
    slots(l, p);
    shapes(&l->cfg, nd, sh);
    for (int i = 0; i < TTT_GDN_PARAMS; i++) {
        bool ok = p[i] && p[i]->ndim == nd[i] && ttt__is_float(p[i]->dtype);
        for (int a = 0; ok && a < nd[i]; a++) ok = p[i]->shape[a] == sh[i][a];
        if (!ok) {
            char s[96];
            return ttt__set_error(ctx, "%s: parameter %s is %s; the config needs [%lld%s%lld] (call ttt_gdn_init)", fn,
                                  NAMES[i], p[i] ? ttt_shape_str(p[i], s, sizeof s) : "missing", (long long)sh[i][0],
                                  nd[i] == 2 ? ", " : "", nd[i] == 2 ? (long long)sh[i][1] : 0LL);
        }
    }
    return TTT_OK;
}

int ttt_gdn_state_init(ttt_ctx *ctx, const ttt_gdn *l, int64_t batch, ttt_gdn_state *st) {
    if (!ctx) return TTT_ERR;
    if (!st) return ttt__set_error(ctx, "gdn_state_init: state must not be NULL");
    *st = (ttt_gdn_state){0};
    if (check_layer(ctx, "gdn_state_init", l) != TTT_OK) return TTT_ERR;
    if (batch < 1) return ttt__set_error(ctx, "gdn_state_init: batch %lld must be >= 1", (long long)batch);
    const ttt_gdn_config *c = &l->cfg;
    const int64_t H = c->heads, Fk = H * c->head_k_dim, Fv = H * c->head_v_dim, K1 = c->conv_size - 1;
    const ttt_dtype dt = l->q_proj->dtype;
    st->batch = batch;
    int rc = ttt__mx_zero_state(ctx, &st->s, dt, TTT_DIMS(batch, H, c->head_k_dim, c->head_v_dim), "gdn.state.s");
    if (rc == TTT_OK && K1 > 0)
        rc = ttt__mx_zero_state(ctx, &st->conv_q, dt, TTT_DIMS(batch, K1, Fk), "gdn.state.conv_q") ||
             ttt__mx_zero_state(ctx, &st->conv_k, dt, TTT_DIMS(batch, K1, Fk), "gdn.state.conv_k") ||
             ttt__mx_zero_state(ctx, &st->conv_v, dt, TTT_DIMS(batch, K1, Fv), "gdn.state.conv_v");
    if (rc != TTT_OK) {
        ttt_gdn_state_free(ctx, st);
        return TTT_ERR;
    }
    return TTT_OK;
}

void ttt_gdn_state_free(ttt_ctx *ctx, ttt_gdn_state *st) {
    if (!ctx || !st) return;
    ttt_tensor *t[4] = {st->conv_q, st->conv_k, st->conv_v, st->s};
    for (int i = 0; i < 4; i++)
        if (t[i]) ttt_persistent_free(ctx, t[i]);
    *st = (ttt_gdn_state){0};
}

/* silu(conv(x w_proj^T)) with the state's history (when st) */
static ttt_tensor *conv_branch(ttt_ctx *ctx, ttt_tensor *x, ttt_tensor *proj, ttt_tensor *taps, ttt_tensor *hist,
                               ttt_tensor **hist_out) {
    ttt_tensor *h0 = hist ? ttt__mx_snapshot(ctx, hist, x->dtype) : NULL;
    return ttt_silu(ctx, ttt__mx_short_conv(ctx, ttt__mx_linear(ctx, x, proj), taps, h0, hist_out));
}

static ttt_tensor *block(ttt_ctx *ctx, const char *fn, const ttt_gdn *l, ttt_tensor *x, ttt_gdn_state *st,
                         int recurrent) {
    if (!ctx) return NULL;
    if (check_layer(ctx, fn, l) != TTT_OK || ttt__mx_check_x(ctx, fn, x, l->cfg.dim) != TTT_OK) return NULL;
    const ttt_gdn_config *c = &l->cfg;
    if (st && (!st->s || st->batch != x->shape[0] || (c->conv_size > 1 && (!st->conv_q || !st->conv_k || !st->conv_v))))
        return ttt__set_error(ctx, "%s: the state is for batch %lld, the input has %lld (ttt_gdn_state_init)", fn,
                              (long long)st->batch, (long long)x->shape[0]),
               NULL;
    const int64_t B = x->shape[0], T = x->shape[1], H = c->heads, dv = c->head_v_dim;
    const ttt_dtype dt = x->dtype;
    ttt_tensor *hq = NULL, *hk = NULL, *hv = NULL, *s1 = NULL;
    ttt_tensor *q = conv_branch(ctx, x, l->q_proj, l->q_conv, st ? st->conv_q : NULL, &hq);
    ttt_tensor *k = conv_branch(ctx, x, l->k_proj, l->k_conv, st ? st->conv_k : NULL, &hk);
    ttt_tensor *v = conv_branch(ctx, x, l->v_proj, l->v_conv, st ? st->conv_v : NULL, &hv);
    q = ttt_scale(ctx, ttt__mx_l2norm(ctx, ttt__mx_split_heads(ctx, q, H), 1e-6), 1.0 / sqrt((double)c->head_k_dim));
    k = ttt__mx_l2norm(ctx, ttt__mx_split_heads(ctx, k, H), 1e-6);
    v = ttt__mx_split_heads(ctx, v, H);
    static const int to_bht[3] = {0, 2, 1};
    ttt_tensor *beta = ttt_permute(ctx, ttt_sigmoid(ctx, ttt__mx_linear(ctx, x, l->b_proj)), to_bht);
    ttt_tensor *a = ttt_add(ctx, ttt__mx_linear(ctx, x, l->a_proj), ttt__mx_as(ctx, l->dt_bias, dt));
    ttt_tensor *g = ttt_mul(ctx, ttt_neg(ctx, ttt_exp(ctx, ttt__mx_as(ctx, l->A_log, dt))), ttt__mx_softplus(ctx, a));
    g = ttt_permute(ctx, g, to_bht);
    ttt_tensor *s0 = st ? ttt__mx_snapshot(ctx, st->s, st->s->dtype) : NULL;
    if (st && !s0) return NULL;
    ttt_tensor *o = NULL;
    if (recurrent && T == 1) {
        /* a decode step: the fused core with one chunk of one token is the recurrent step in one kernel
         * (where the backend has it and the fused paths are on), instead of a dozen small ops */
        int declined = 0;
        if (check_core(ctx, fn, q, k, v, beta, g, s0) != TTT_OK) return NULL;
        o = ttt__gated_delta_fused(ctx, q, k, v, beta, g, 1, s0, st ? &s1 : NULL, composed_core, &declined);
        if (!o && !declined) return NULL;
    }
    if (!o)
        o = recurrent ? ttt_gated_delta_recurrent(ctx, q, k, v, beta, g, s0, st ? &s1 : NULL)
                      : ttt_gated_delta_chunked(ctx, q, k, v, beta, g, c->chunk, s0, st ? &s1 : NULL);
    static const int to_bthd[4] = {0, 2, 1, 3};
    o = ttt_rms_norm(ctx, ttt_permute(ctx, o, to_bthd), ttt__mx_as(ctx, l->o_norm, dt), c->norm_eps); /* [B, T, H, dv] */
    ttt_tensor *gate = ttt_reshape(ctx, ttt__mx_linear(ctx, x, l->g_proj), TTT_DIMS(B, T, H, dv));
    o = ttt_reshape(ctx, ttt_mul(ctx, o, ttt_silu(ctx, gate)), TTT_DIMS(B, T, H * dv));
    ttt_tensor *y = ttt__mx_linear(ctx, o, l->o_proj);
    if (!y) return NULL;
    if (st) {
        if (ttt_assign(ctx, st->s, s1) != TTT_OK) return NULL;
        if (c->conv_size > 1 && (ttt_assign(ctx, st->conv_q, hq) != TTT_OK || ttt_assign(ctx, st->conv_k, hk) != TTT_OK ||
                                 ttt_assign(ctx, st->conv_v, hv) != TTT_OK))
            return NULL;
        st->pos += T;
    }
    return y;
}

ttt_tensor *ttt_gdn_forward(ttt_ctx *ctx, const ttt_gdn *l, ttt_tensor *x, ttt_gdn_state *st) {
    return block(ctx, "gdn_forward", l, x, st, 0);
}

ttt_tensor *ttt_gdn_decode(ttt_ctx *ctx, const ttt_gdn *l, ttt_tensor *x, ttt_gdn_state *st) {
    return block(ctx, "gdn_decode", l, x, st, 1);
}
