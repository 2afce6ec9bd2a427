/* Causal linear attention (Katharopoulos et al. 2020), see include/ttt/mixers.h.
 *
 * The normaliser z_t = sum_{s<=t} k_s rides along as one more value column: with
 * v' = [v, 1] the state S' = [S, z] obeys the same recurrence, and q^T S' gives the
 * numerator and the denominator together.
 *
 * Chunkwise form, for chunk c with rows Q, K, V' (C tokens) and S'_c the state before it:
 *     O'_c = Q S'_c + (Q K^T masked to s <= t) V'          (within the chunk: a small attention)
 *     S'_{c+1} = S'_c + K^T V'                               (the chunk-state scan)
 * The intra-chunk products run for all chunks at once; only the scan is sequential. */
#include <math.h>

#include "mixers_internal.h"
#include "ttt/mixers.h"

/* q, k [B, H, T, dk], v [B, H, T, dv], s0 [B, H, dk, dv], z0 [B, H, dk] (or NULL). */
static int check_core(ttt_ctx *ctx, const char *fn, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *s0,
                      ttt_tensor *z0, double eps) {
    if (!q || !k || !v) return TTT_ERR;
    char a[96], b[96], c[96];
    const int64_t *Q = q->shape;
    bool ok = q->ndim == 4 && k->ndim == 4 && v->ndim == 4 && Q[0] >= 1 && Q[1] >= 1 && Q[2] >= 1 && Q[3] >= 1 &&
              ttt_same_shape(q, k) && v->shape[0] == Q[0] && v->shape[1] == Q[1] && v->shape[2] == Q[2] &&
              v->shape[3] >= 1;
    if (!ok)
        return ttt__set_error(ctx, "%s: q %s, k %s, v %s must be [B, H, T, dk], [B, H, T, dk], [B, H, T, dv]", fn,
                              ttt_shape_str(q, a, sizeof a), ttt_shape_str(k, b, sizeof b), ttt_shape_str(v, c, sizeof c));
    if (!ttt__is_float(q->dtype) || k->dtype != q->dtype || v->dtype != q->dtype)
        return ttt__set_error(ctx, "%s: q, k, v must share one float dtype (%s, %s, %s)", fn, ttt_dtype_name(q->dtype),
                              ttt_dtype_name(k->dtype), ttt_dtype_name(v->dtype));
    if (s0 && (s0->ndim != 4 || s0->shape[0] != Q[0] || s0->shape[1] != Q[1] || s0->shape[2] != Q[3] ||
               s0->shape[3] != v->shape[3] || !ttt__is_float(s0->dtype)))
        return ttt__set_error(ctx, "%s: state s0 %s must be [B, H, dk, dv] = [%lld, %lld, %lld, %lld]", fn,
                              ttt_shape_str(s0, a, sizeof a), (long long)Q[0], (long long)Q[1], (long long)Q[3],
                              (long long)v->shape[3]);
    if (z0 && (z0->ndim != 3 || z0->shape[0] != Q[0] || z0->shape[1] != Q[1] || z0->shape[2] != Q[3] ||
               !ttt__is_float(z0->dtype)))
        return ttt__set_error(ctx, "%s: normaliser z0 %s must be [B, H, dk] = [%lld, %lld, %lld]", fn,
                              ttt_shape_str(z0, a, sizeof a), (long long)Q[0], (long long)Q[1], (long long)Q[3]);
    if ((s0 == NULL) != (z0 == NULL)) return ttt__set_error(ctx, "%s: give both s0 and z0, or neither", fn);
    if (!(eps >= 0) || !isfinite(eps)) return ttt__set_error(ctx, "%s: eps %g must be finite and >= 0", fn, eps);
    return TTT_OK;
}

/* The joint state [S, z] [B, H, dk, dv + 1] in dtype wd (zeros when s0 is NULL). */
static ttt_tensor *joint_state(ttt_ctx *ctx, ttt_tensor *s0, ttt_tensor *z0, int64_t B, int64_t H, int64_t dk,
                               int64_t dv, ttt_dtype wd) {
    if (!s0) return ttt_zeros(ctx, wd, TTT_DIMS(B, H, dk, dv + 1));
    ttt_tensor *parts[2] = {ttt__mx_as(ctx, s0, wd), ttt_reshape(ctx, ttt__mx_as(ctx, z0, wd), TTT_DIMS(B, H, dk, 1))};
    return ttt_concat(ctx, 2, parts, 3);
}

/* Splits [.., dv + 1] into the state S and normaliser z of the public API. */
static void split_state(ttt_ctx *ctx, ttt_tensor *sz, int64_t dv, ttt_tensor **s_out, ttt_tensor **z_out) {
    if (s_out) *s_out = ttt_slice(ctx, sz, 3, 0, dv, 1);
    if (z_out)
        *z_out = sz ? ttt_reshape(ctx, ttt_slice(ctx, sz, 3, dv, dv + 1, 1), TTT_DIMS(sz->shape[0], sz->shape[1], sz->shape[2]))
                    : NULL;
}

/* o = numerator / (denominator + eps) from q^T S' [..., dv + 1], cast back to out_dt. */
static ttt_tensor *normalise(ttt_ctx *ctx, ttt_tensor *o1, int64_t dv, double eps, ttt_dtype out_dt) {
    ttt_tensor *num = ttt_slice(ctx, o1, -1, 0, dv, 1), *den = ttt_slice(ctx, o1, -1, dv, dv + 1, 1);
    return ttt__mx_as(ctx, ttt_div(ctx, num, ttt_add_scalar(ctx, den, eps)), out_dt);
}

static ttt_tensor *with_ones(ttt_ctx *ctx, ttt_tensor *v) {
    if (!v) return NULL; /* an earlier op failed: its message stands */
    ttt_tensor *parts[2] = {v, ttt_full(ctx, v->dtype, TTT_DIMS(v->shape[0], v->shape[1], v->shape[2], 1), 1.0)};
    return ttt_concat(ctx, 2, parts, 3);
}

/* bf16 computes in f32 (see mixers.h); f32 and f64 as they are. */
static ttt_dtype work_dtype(ttt_dtype dt) { return dt == TTT_BF16 ? TTT_F32 : dt; }

/* The composed chunkwise core on v' = [v, 1] and S' = [S, z] (g is NULL: no decay): the fused op's fallback,
 * and what its VJP differentiates under create_graph. Returns q^T S' [B, H, T, dv + 1] in the work dtype. */
static ttt_tensor *composed_core(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v1, ttt_tensor *g,
                                 int64_t chunk, ttt_tensor *sz0, ttt_tensor **sz_out) {
    (void)g;
    const int64_t B = q->shape[0], H = q->shape[1], T = q->shape[2], dk = q->shape[3], dv1 = v1->shape[3];
    const int64_t C = ttt__mx_chunk_len(chunk, T), N = (T + C - 1) / C, Tp = N * C;
    const ttt_dtype wd = v1->dtype;
    if (!sz0) sz0 = ttt_zeros(ctx, wd, TTT_DIMS(B, H, dk, dv1)); /* the fused op's VJP passes no zero state */
    /* zero rows past T add nothing to the state (k = 0) and their outputs are dropped */
    ttt_tensor *qc = ttt_reshape(ctx, ttt__mx_pad(ctx, ttt__mx_as(ctx, q, wd), 2, Tp), TTT_DIMS(B, H, N, C, dk));
    ttt_tensor *kc = ttt_reshape(ctx, ttt__mx_pad(ctx, ttt__mx_as(ctx, k, wd), 2, Tp), TTT_DIMS(B, H, N, C, dk));
    ttt_tensor *vc = ttt_reshape(ctx, ttt__mx_pad(ctx, v1, 2, Tp), TTT_DIMS(B, H, N, C, dv1));
    ttt_tensor *P = ttt_attn_mask(ctx, ttt_matmul(ctx, qc, kc, 0, 1), 0, 0, 0.0); /* [B, H, N, C, C] */
    ttt_tensor *inner = ttt_matmul(ctx, P, vc, 0, 0);
    ttt_tensor *prev = NULL, *last = NULL;
    if (ttt__mx_state_scan(ctx, NULL, ttt_matmul(ctx, kc, vc, 1, 0), sz0, &prev, &last) != TTT_OK) return NULL;
    ttt_tensor *o1 = ttt_add(ctx, ttt_matmul(ctx, qc, prev, 0, 0), inner);
    if (sz_out) *sz_out = last;
    return ttt_slice(ctx, ttt_reshape(ctx, o1, TTT_DIMS(B, H, Tp, dv1)), 2, 0, T, 1);
}

/* The core q^T [S, z] runs as the fused decayed recurrence without gates (composed/ssd.c: the normaliser is
 * the state column of a value that is always 1) where the backend has it and the fused paths are on; the
 * composed chunkwise form otherwise. The division by q . z + eps is composed either way. */
ttt_tensor *ttt_linear_attention_chunked(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, int64_t chunk,
                                         double eps, ttt_tensor *s0, ttt_tensor *z0, ttt_tensor **s_out,
                                         ttt_tensor **z_out) {
    if (!ctx) return NULL;
    if (check_core(ctx, "linear_attention_chunked", q, k, v, s0, z0, eps) != TTT_OK ||
        ttt__mx_check_chunk(ctx, "linear_attention_chunked", chunk) != TTT_OK)
        return NULL;
    const int64_t B = q->shape[0], H = q->shape[1], dk = q->shape[3], dv = v->shape[3];
    const ttt_dtype wd = work_dtype(q->dtype), out_dt = q->dtype;
    ttt_tensor *sz0 = joint_state(ctx, s0, z0, B, H, dk, dv, wd);
    ttt_tensor *v1 = with_ones(ctx, ttt__mx_as(ctx, v, wd));
    q = ttt__mx_as(ctx, q, wd), k = ttt__mx_as(ctx, k, wd); /* so the core returns q^T S' in wd, bf16 included */
    if (!sz0 || !v1 || !q || !k) return NULL;
    ttt_tensor *last = NULL;
    int declined = 0;
    /* the fused op takes s0 NULL as zeros; the joint state is all zeros exactly when s0 is NULL */
    ttt_tensor *o1 = ttt__ssd_fused(ctx, q, k, v1, NULL, chunk, s0 ? sz0 : NULL, &last, composed_core, &declined);
    if (!o1 && declined) o1 = composed_core(ctx, q, k, v1, NULL, chunk, sz0, &last);
    if (!o1) return NULL;
    split_state(ctx, last, dv, s_out, z_out);
    return normalise(ctx, o1, dv, eps, out_dt);
}

ttt_tensor *ttt_linear_attention_recurrent(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, double eps,
                                           ttt_tensor *s0, ttt_tensor *z0, ttt_tensor **s_out, ttt_tensor **z_out) {
    if (!ctx) return NULL;
    if (check_core(ctx, "linear_attention_recurrent", q, k, v, s0, z0, eps) != TTT_OK) return NULL;
    const int64_t B = q->shape[0], H = q->shape[1], T = q->shape[2], dk = q->shape[3], dv = v->shape[3];
    const ttt_dtype wd = work_dtype(q->dtype);
    ttt_tensor *S = joint_state(ctx, s0, z0, B, H, dk, dv, wd);
    ttt_tensor *v1 = with_ones(ctx, ttt__mx_as(ctx, v, wd));
    ttt_tensor **outs = ttt__meta_alloc(ctx, sizeof(ttt_tensor *) * (size_t)T);
    if (!outs) return ttt__set_error(ctx, "linear_attention_recurrent: out of host memory"), NULL;
    for (int64_t t = 0; t < T && S; t++) {
        ttt_tensor *qt = ttt__mx_as(ctx, ttt_slice(ctx, q, 2, t, t + 1, 1), wd); /* [B, H, 1, dk] */
        ttt_tensor *kt = ttt__mx_as(ctx, ttt_slice(ctx, k, 2, t, t + 1, 1), wd);
        S = ttt_add(ctx, S, ttt_matmul(ctx, kt, ttt_slice(ctx, v1, 2, t, t + 1, 1), 1, 0)); /* S' += k v'^T */
        outs[t] = ttt_matmul(ctx, qt, S, 0, 0);                                               /* q^T S' */
    }
    if (!S) return NULL;
    ttt_tensor *o1 = T == 1 ? outs[0] : ttt_concat(ctx, (int)T, outs, 2);
    split_state(ctx, S, dv, s_out, z_out);
    return normalise(ctx, o1, dv, eps, q->dtype);
}

/* ---- the block ------------------------------------------------------------------------------ */

ttt_linattn_config ttt_linattn_config_default(int64_t dim, int64_t heads) {
    ttt_linattn_config c = {.dim = dim, .heads = heads, .head_dim = heads > 0 ? dim / heads : 0, .chunk = 64,
                            .eps = 1e-6, .init_std = 0.02, .out_std = 0.02};
    return c;
}

static int check_config(ttt_ctx *ctx, const char *fn, const ttt_linattn_config *c) {
    if (c->dim < 1 || c->heads < 1 || c->head_dim < 1)
        return ttt__set_error(ctx, "%s: dim %lld, heads %lld and head_dim %lld must be >= 1", fn, (long long)c->dim,
                              (long long)c->heads, (long long)c->head_dim);
    if (ttt__mx_check_chunk(ctx, fn, c->chunk) != TTT_OK) return TTT_ERR;
    if (!(c->eps >= 0) || !isfinite(c->eps)) return ttt__set_error(ctx, "%s: eps %g must be finite and >= 0", fn, c->eps);
    if (!(c->init_std > 0) || !(c->out_std > 0) || !isfinite(c->init_std) || !isfinite(c->out_std))
        return ttt__set_error(ctx, "%s: init_std %g and out_std %g must be positive", fn, c->init_std, c->out_std);
    return TTT_OK;
}

static const char *const NAMES[TTT_LINATTN_PARAMS] = {"q_proj.weight", "k_proj.weight", "v_proj.weight",
                                                      "o_proj.weight"};

int ttt_linattn_params(const ttt_linattn *l, ttt_tensor **params, const char **names, int *decay) {
    if (!l || !params) return 0;
    ttt_tensor *all[TTT_LINATTN_PARAMS] = {l->q_proj, l->k_proj, l->v_proj, l->o_proj};
    int n = 0;
    for (int i = 0; i < TTT_LINATTN_PARAMS; i++)
        if (all[i]) {
            if (names) names[n] = NAMES[i];
            if (decay) decay[n] = 1;
            params[n++] = all[i];
        }
    return n;
}

int64_t ttt_linattn_param_count(const ttt_linattn_config *c) {
    if (!c || c->dim < 1 || c->heads < 1 || c->head_dim < 1) return 0;
    return 4 * c->dim * c->heads * c->head_dim;
}

int ttt_linattn_init(ttt_ctx *ctx, ttt_linattn *l, const ttt_linattn_config *cfg, ttt_dtype dt) {
    if (!ctx) return TTT_ERR;
    if (!l || !cfg) return ttt__set_error(ctx, "linattn_init: layer and config must not be NULL");
    *l = (ttt_linattn){.cfg = *cfg};
    if (check_config(ctx, "linattn_init", cfg) != TTT_OK) return TTT_ERR;
    if (dt != TTT_F32 && dt != TTT_F64)
        return ttt__set_error(ctx, "linattn_init: parameters must be f32 or f64, not %s", ttt_dtype_name(dt));
    const int64_t D = cfg->dim, F = cfg->heads * cfg->head_dim;
    int rc = ttt__mx_param(ctx, &l->q_proj, dt, TTT_DIMS(F, D), NAMES[0], cfg->init_std, 0, 0) ||
             ttt__mx_param(ctx, &l->k_proj, dt, TTT_DIMS(F, D), NAMES[1], cfg->init_std, 0, 0) ||
             ttt__mx_param(ctx, &l->v_proj, dt, TTT_DIMS(F, D), NAMES[2], cfg->init_std, 0, 0) ||
             ttt__mx_param(ctx, &l->o_proj, dt, TTT_DIMS(D, F), NAMES[3], cfg->out_std, 0, 0);
    if (rc) {
        ttt_linattn_free(ctx, l);
        return TTT_ERR;
    }
    return TTT_OK;
}

void ttt_linattn_free(ttt_ctx *ctx, ttt_linattn *l) {
    if (!ctx || !l) return;
    ttt_tensor *p[TTT_LINATTN_PARAMS];
    int n = ttt_linattn_params(l, p, NULL, NULL);
    for (int i = 0; i < n; i++) ttt_persistent_free(ctx, p[i]);
    *l = (ttt_linattn){.cfg = l->cfg};
}

/* The struct is public: check its tensors against the config on every call. */
static int check_layer(ttt_ctx *ctx, const char *fn, const ttt_linattn *l) {
    if (!l) return ttt__set_error(ctx, "%s: layer must not be NULL", fn);
    if (check_config(ctx, fn, &l->cfg) != TTT_OK) return TTT_ERR;
    const int64_t D = l->cfg.dim, F = l->cfg.heads * l->cfg.head_dim;
    const ttt_tensor *p[TTT_LINATTN_PARAMS] = {l->q_proj, l->k_proj, l->v_proj, l->o_proj};
    for (int i = 0; i < TTT_LINATTN_PARAMS; i++) {
        const int64_t r = i < 3 ? F : D, c = i < 3 ? D : F;
        if (!p[i] || p[i]->ndim != 2 || p[i]->shape[0] != r || p[i]->shape[1] != c)
            return ttt__set_error(ctx, "%s: parameter %s is missing or not [%lld, %lld] (call ttt_linattn_init)", fn,
                                  NAMES[i], (long long)r, (long long)c);
    }
    return TTT_OK;
}

int ttt_linattn_state_init(ttt_ctx *ctx, const ttt_linattn *l, int64_t batch, ttt_linattn_state *st) {
    if (!ctx) return TTT_ERR;
    if (!st) return ttt__set_error(ctx, "linattn_state_init: state must not be NULL");
    *st = (ttt_linattn_state){0};
    if (check_layer(ctx, "linattn_state_init", l) != TTT_OK) return TTT_ERR;
    if (batch < 1) return ttt__set_error(ctx, "linattn_state_init: batch %lld must be >= 1", (long long)batch);
    const int64_t H = l->cfg.heads, d = l->cfg.head_dim;
    const ttt_dtype dt = l->q_proj->dtype;
    st->batch = batch;
    if (ttt__mx_zero_state(ctx, &st->s, dt, TTT_DIMS(batch, H, d, d), "linattn.state.s") != TTT_OK ||
        ttt__mx_zero_state(ctx, &st->z, dt, TTT_DIMS(batch, H, d), "linattn.state.z") != TTT_OK) {
        ttt_linattn_state_free(ctx, st);
        return TTT_ERR;
    }
    return TTT_OK;
}

void ttt_linattn_state_free(ttt_ctx *ctx, ttt_linattn_state *st) {
    if (!ctx || !st) return;
    if (st->s) ttt_persistent_free(ctx, st->s);
    if (st->z) ttt_persistent_free(ctx, st->z);
    *st = (ttt_linattn_state){0};
}

static ttt_tensor *block(ttt_ctx *ctx, const char *fn, const ttt_linattn *l, ttt_tensor *x, ttt_linattn_state *st,
                         int recurrent) {
    if (!ctx) return NULL;
    if (check_layer(ctx, fn, l) != TTT_OK || ttt__mx_check_x(ctx, fn, x, l->cfg.dim) != TTT_OK) return NULL;
    if (st && (!st->s || !st->z || st->batch != x->shape[0]))
        return ttt__set_error(ctx, "%s: the state is for batch %lld, the input has %lld (ttt_linattn_state_init)", fn,
                              (long long)st->batch, (long long)x->shape[0]),
               NULL;
    const int64_t H = l->cfg.heads;
    ttt_tensor *q = ttt_elu1(ctx, ttt__mx_split_heads(ctx, ttt__mx_linear(ctx, x, l->q_proj), H));
    ttt_tensor *k = ttt_elu1(ctx, ttt__mx_split_heads(ctx, ttt__mx_linear(ctx, x, l->k_proj), H));
    ttt_tensor *v = ttt__mx_split_heads(ctx, ttt__mx_linear(ctx, x, l->v_proj), H);
    ttt_tensor *s0 = NULL, *z0 = NULL, *s1 = NULL, *z1 = NULL;
    if (st) {
        s0 = ttt__mx_snapshot(ctx, st->s, st->s->dtype);
        z0 = ttt__mx_snapshot(ctx, st->z, st->z->dtype);
        if (!s0 || !z0) return NULL;
    }
    ttt_tensor *o = recurrent ? ttt_linear_attention_recurrent(ctx, q, k, v, l->cfg.eps, s0, z0, st ? &s1 : NULL,
                                                               st ? &z1 : NULL)
                              : ttt_linear_attention_chunked(ctx, q, k, v, l->cfg.chunk, l->cfg.eps, s0, z0,
                                                             st ? &s1 : NULL, st ? &z1 : NULL);
    ttt_tensor *y = ttt__mx_linear(ctx, ttt__mx_merge_heads(ctx, o), l->o_proj);
    if (!y) return NULL;
    if (st) {
        if (ttt_assign(ctx, st->s, s1) != TTT_OK || ttt_assign(ctx, st->z, z1) != TTT_OK) return NULL;
        st->pos += x->shape[1];
    }
    return y;
}

ttt_tensor *ttt_linattn_forward(ttt_ctx *ctx, const ttt_linattn *l, ttt_tensor *x, ttt_linattn_state *st) {
    return block(ctx, "linattn_forward", l, x, st, 0);
}

ttt_tensor *ttt_linattn_decode(ttt_ctx *ctx, const ttt_linattn *l, ttt_tensor *x, ttt_linattn_state *st) {
    return block(ctx, "linattn_decode", l, x, st, 1);
}
