/* Mamba 2 (Dao, Gu, "Transformers are SSMs", arXiv 2405.21060), see include/ttt/mixers.h.
 *
 * The SSD recurrence S_t = exp(dt_t A) S_{t-1} + B_t (dt_t x_t)^T, y_t = C_t^T S_t + D x_t is
 * the gated delta rule's decayed recurrence without the delta term, so its chunkwise and
 * recurrent forms are gated_deltanet.c's with beta = NULL (no triangular inverse: within a
 * chunk O = (diag(gamma) C) S0 + (C B^T * decay) V). This file is the block around it. */
#include <math.h>

#include "mixers_internal.h"
#include "ttt/mixers.h"

/* The composed chunkwise core: the fused op's fallback, and what its VJP differentiates under create_graph. */
static ttt_tensor *composed_core(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *g,
                                 int64_t chunk, ttt_tensor *s0, ttt_tensor **s_out) {
    return ttt__mx_decay_chunked(ctx, "ssd_chunked", q, k, v, NULL, g, chunk, s0, s_out);
}

/* One fused op (composed/ssd.c: the backend's ssd_chunk_fwd / ssd_chunk_bwd) where the backend has it and the
 * fused paths are on; the composed chunkwise form otherwise. */
ttt_tensor *ttt_ssd_chunked(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *g, int64_t chunk,
                            ttt_tensor *s0, ttt_tensor **s_out) {
    if (!ctx) return NULL;
    if (ttt__mx_check_decay(ctx, "ssd_chunked", q, k, v, NULL, g, s0) != TTT_OK ||
        ttt__mx_check_chunk(ctx, "ssd_chunked", chunk) != TTT_OK)
        return NULL;
    int declined = 0;
    ttt_tensor *o = ttt__ssd_fused(ctx, q, k, v, g, chunk, s0, s_out, composed_core, &declined);
    if (o || !declined) return o;
    return composed_core(ctx, q, k, v, g, chunk, s0, s_out);
}

ttt_tensor *ttt_ssd_recurrent(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *g, ttt_tensor *s0,
                              ttt_tensor **s_out) {
    return ttt__mx_decay_recurrent(ctx, "ssd_recurrent", q, k, v, NULL, g, s0, s_out);
}

ttt_mamba2_config ttt_mamba2_config_default(int64_t dim) {
    ttt_mamba2_config c = {.dim = dim, .d_state = 64, .expand = 2, .head_dim = 2 * dim < 64 ? 2 * dim : 64,
                           .groups = 1, .conv_size = 4, .chunk = 64, .norm_eps = 1e-5, .init_std = 0.02,
                           .out_std = 0.02};
    return c;
}

typedef struct {
    int64_t Di, H, GN, conv_dim, proj;
} widths;

static widths widths_of(const ttt_mamba2_config *c) {
    widths w = {.Di = c->expand * c->dim, .GN = c->groups * c->d_state};
    w.H = c->head_dim > 0 ? w.Di / c->head_dim : 0;
    w.conv_dim = w.Di + 2 * w.GN;
    w.proj = 2 * w.Di + 2 * w.GN + w.H;
    return w;
}

static int check_config(ttt_ctx *ctx, const char *fn, const ttt_mamba2_config *c) {
    if (c->dim < 1 || c->d_state < 1 || c->expand < 1 || c->head_dim < 1 || c->groups < 1 || c->conv_size < 1)
        return ttt__set_error(ctx, "%s: dim %lld, d_state %lld, expand %lld, head_dim %lld, groups %lld, conv_size %lld "
                                   "must be >= 1",
                              fn, (long long)c->dim, (long long)c->d_state, (long long)c->expand,
                              (long long)c->head_dim, (long long)c->groups, (long long)c->conv_size);
    const widths w = widths_of(c);
    if (w.Di % c->head_dim || w.H % c->groups)
        return ttt__set_error(ctx, "%s: the inner width %lld must split into heads of %lld, and the %lld heads into %lld "
                                   "groups",
                              fn, (long long)w.Di, (long long)c->head_dim, (long long)w.H, (long long)c->groups);
    if (ttt__mx_check_chunk(ctx, fn, c->chunk) != TTT_OK) return TTT_ERR;
    if (!(c->norm_eps > 0) || !isfinite(c->norm_eps))
        return ttt__set_error(ctx, "%s: norm_eps %g must be positive", fn, c->norm_eps);
    if (!(c->init_std > 0) || !(c->out_std > 0) || !isfinite(c->init_std) || !isfinite(c->out_std))
        return ttt__set_error(ctx, "%s: init_std %g and out_std %g must be positive", fn, c->init_std, c->out_std);
    return TTT_OK;
}

static const char *const NAMES[TTT_MAMBA2_PARAMS] = {"in_proj.weight", "conv1d.weight", "conv1d.bias", "dt_bias",
                                                     "A_log",          "D",             "norm.weight", "out_proj.weight"};
static const int DECAY[TTT_MAMBA2_PARAMS] = {1, 0, 0, 0, 0, 0, 0, 1};

static void slots(const ttt_mamba2 *l, ttt_tensor **p) {
    ttt_tensor *all[TTT_MAMBA2_PARAMS] = {l->in_proj, l->conv_w, l->conv_b, l->dt_bias,
                                          l->A_log,   l->D,      l->norm,   l->out_proj};
    for (int i = 0; i < TTT_MAMBA2_PARAMS; i++) p[i] = all[i];
}

static void shapes(const ttt_mamba2_config *c, int *ndim, int64_t (*shape)[2]) {
    const widths w = widths_of(c);
    const int64_t s[TTT_MAMBA2_PARAMS][2] = {{w.proj, c->dim}, {w.conv_dim, c->conv_size}, {w.conv_dim, 0}, {w.H, 0},
                                             {w.H, 0},         {w.H, 0},                   {w.Di, 0},       {c->dim, w.Di}};
    for (int i = 0; i < TTT_MAMBA2_PARAMS; i++) {
        ndim[i] = s[i][1] ? 2 : 1;
        shape[i][0] = s[i][0], shape[i][1] = s[i][1];
    }
}

int64_t ttt_mamba2_param_count(const ttt_mamba2_config *c) {
    if (!c || c->dim < 1 || c->d_state < 1 || c->expand < 1 || c->head_dim < 1 || c->groups < 1 || c->conv_size < 1 ||
        (c->expand * c->dim) % c->head_dim)
        return 0;
    int nd[TTT_MAMBA2_PARAMS];
    int64_t sh[TTT_MAMBA2_PARAMS][2], n = 0;
    shapes(c, nd, sh);
    for (int i = 0; i < TTT_MAMBA2_PARAMS; i++) n += sh[i][0] * (nd[i] == 2 ? sh[i][1] : 1);
    return n;
}

int ttt_mamba2_params(const ttt_mamba2 *l, ttt_tensor **params, const char **names, int *decay) {
    if (!l || !params) return 0;
    ttt_tensor *all[TTT_MAMBA2_PARAMS];
    slots(l, all);
    int n = 0;
    for (int i = 0; i < TTT_MAMBA2_PARAMS; i++)
        if (all[i]) {
            if (names) names[n] = NAMES[i];
            if (decay) decay[n] = DECAY[i];
            params[n++] = all[i];
        }
    return n;
}

void ttt_mamba2_free(ttt_ctx *ctx, ttt_mamba2 *l) {
    if (!ctx || !l) return;
    ttt_tensor *p[TTT_MAMBA2_PARAMS];
    int n = ttt_mamba2_params(l, p, NULL, NULL);
    for (int i = 0; i < n; i++) ttt_persistent_free(ctx, p[i]);
    *l = (ttt_mamba2){.cfg = l->cfg};
}

int ttt_mamba2_init(ttt_ctx *ctx, ttt_mamba2 *l, const ttt_mamba2_config *cfg, ttt_dtype dt) {
    if (!ctx) return TTT_ERR;
    if (!l || !cfg) return ttt__set_error(ctx, "mamba2_init: layer and config must not be NULL");
    *l = (ttt_mamba2){.cfg = *cfg};
    if (check_config(ctx, "mamba2_init", cfg) != TTT_OK) return TTT_ERR;
    if (dt != TTT_F32 && dt != TTT_F64)
        return ttt__set_error(ctx, "mamba2_init: parameters must be f32 or f64, not %s", ttt_dtype_name(dt));
    int nd[TTT_MAMBA2_PARAMS];
    int64_t sh[TTT_MAMBA2_PARAMS][2];
    shapes(cfg, nd, sh);
    const double tap = 1.0 / sqrt((double)cfg->conv_size);
    ttt_tensor **p[TTT_MAMBA2_PARAMS] = {&l->in_proj, &l->conv_w, &l->conv_b, &l->dt_bias,
                                         &l->A_log,   &l->D,      &l->norm,   &l->out_proj};
    const double init[TTT_MAMBA2_PARAMS][3] = {{cfg->init_std, 0, 0}, {0, -tap, tap}, {0, -tap, tap},
                                               {0, log(1e-3), log(1e-1)}, {0, 1, 16}, {0, 1, 1},
                                               {0, 1, 1},             {cfg->out_std, 0, 0}};
    int rc = TTT_OK;
    for (int i = 0; i < TTT_MAMBA2_PARAMS && rc == TTT_OK; i++)
        rc = ttt__mx_param(ctx, p[i], dt, nd[i], sh[i], NAMES[i], init[i][0], init[i][1], init[i][2]);
    if (rc == TTT_OK) rc = ttt__mx_init_gate(ctx, l->A_log, l->dt_bias);
    if (rc != TTT_OK) {
        ttt_mamba2_free(ctx, l);
        return TTT_ERR;
    }
    return TTT_OK;
}

static int check_layer(ttt_ctx *ctx, const char *fn, const ttt_mamba2 *l) {
    if (!l) return ttt__set_error(ctx, "%s: layer must not be NULL", fn);
    if (check_config(ctx, fn, &l->cfg) != TTT_OK) return TTT_ERR;
    ttt_tensor *p[TTT_MAMBA2_PARAMS];
    int nd[TTT_MAMBA2_PARAMS];
    int64_t sh[TTT_MAMBA2_PARAMS][2];
    slots(l, p);
    shapes(&l->cfg, nd, sh);
    for (int i = 0; i < TTT_MAMBA2_PARAMS; i++) {
        bool ok = p[i] && p[i]->ndim == nd[i] && ttt__is_float(p[i]->dtype);
        for (int a = 0; ok && a < nd[i]; a++) ok = p[i]->shape[a] == sh[i][a];
        if (!ok)
            return ttt__set_error(ctx, "%s: parameter %s is missing or has the wrong shape for the config (call "
                                       "ttt_mamba2_init)",
                                  fn, NAMES[i]);
    }
    return TTT_OK;
}

int ttt_mamba2_state_init(ttt_ctx *ctx, const ttt_mamba2 *l, int64_t batch, ttt_mamba2_state *st) {
    if (!ctx) return TTT_ERR;
    if (!st) return ttt__set_error(ctx, "mamba2_state_init: state must not be NULL");
    *st = (ttt_mamba2_state){0};
    if (check_layer(ctx, "mamba2_state_init", l) != TTT_OK) return TTT_ERR;
    if (batch < 1) return ttt__set_error(ctx, "mamba2_state_init: batch %lld must be >= 1", (long long)batch);
    const widths w = widths_of(&l->cfg);
    const ttt_dtype dt = l->in_proj->dtype;
    st->batch = batch;
    int rc = ttt__mx_zero_state(ctx, &st->s, dt, TTT_DIMS(batch, w.H, l->cfg.d_state, l->cfg.head_dim), "mamba2.state.s");
    if (rc == TTT_OK && l->cfg.conv_size > 1)
        rc = ttt__mx_zero_state(ctx, &st->conv, dt, TTT_DIMS(batch, l->cfg.conv_size - 1, w.conv_dim),
                                "mamba2.state.conv");
    if (rc != TTT_OK) {
        ttt_mamba2_state_free(ctx, st);
        return TTT_ERR;
    }
    return TTT_OK;
}

void ttt_mamba2_state_free(ttt_ctx *ctx, ttt_mamba2_state *st) {
    if (!ctx || !st) return;
    if (st->conv) ttt_persistent_free(ctx, st->conv);
    if (st->s) ttt_persistent_free(ctx, st->s);
    *st = (ttt_mamba2_state){0};
}

/* [B, T, G N] -> [B, H, T, N]: head h reads group h / (H / G) */
static ttt_tensor *group_heads(ttt_ctx *ctx, ttt_tensor *t, int64_t G, int64_t H) {
    if (!t) return NULL; /* an earlier op failed (out of memory): its message stands */
    const int64_t B = t->shape[0], T = t->shape[1], N = t->shape[2] / G;
    ttt_tensor *g = ttt_reshape(ctx, ttt__mx_split_heads(ctx, t, G), TTT_DIMS(B, G, 1, T, N));
    return ttt_reshape(ctx, ttt_expand(ctx, g, TTT_DIMS(B, G, H / G, T, N)), TTT_DIMS(B, H, T, N));
}

static ttt_tensor *block(ttt_ctx *ctx, const char *fn, const ttt_mamba2 *l, ttt_tensor *x, ttt_mamba2_state *st,
                         int recurrent) {
    if (!ctx) return NULL;
    if (check_layer(ctx, fn, l) != TTT_OK || ttt__mx_check_x(ctx, fn, x, l->cfg.dim) != TTT_OK) return NULL;
    const ttt_mamba2_config *c = &l->cfg;
    if (st && (!st->s || st->batch != x->shape[0] || (c->conv_size > 1 && !st->conv)))
        return ttt__set_error(ctx, "%s: the state is for batch %lld, the input has %lld (ttt_mamba2_state_init)", fn,
                              (long long)st->batch, (long long)x->shape[0]),
               NULL;
    const widths w = widths_of(c);
    const int64_t B = x->shape[0], T = x->shape[1], G = c->groups;
    const ttt_dtype dt = x->dtype;
    ttt_tensor *zxbcdt = ttt__mx_linear(ctx, x, l->in_proj);
    ttt_tensor *z = ttt_slice(ctx, zxbcdt, 2, 0, w.Di, 1);
    ttt_tensor *xbc = ttt_slice(ctx, zxbcdt, 2, w.Di, w.Di + w.conv_dim, 1);
    ttt_tensor *dts = ttt_slice(ctx, zxbcdt, 2, w.Di + w.conv_dim, w.proj, 1); /* [B, T, H] */
    dts = ttt__mx_softplus(ctx, ttt_add(ctx, dts, ttt__mx_as(ctx, l->dt_bias, dt)));
    ttt_tensor *hist = st && st->conv ? ttt__mx_snapshot(ctx, st->conv, dt) : NULL, *hist_out = NULL;
    xbc = ttt__mx_short_conv(ctx, xbc, l->conv_w, hist, &hist_out);
    xbc = ttt_silu(ctx, ttt_add(ctx, xbc, ttt__mx_as(ctx, l->conv_b, dt)));
    ttt_tensor *xs = ttt__mx_split_heads(ctx, ttt_slice(ctx, xbc, 2, 0, w.Di, 1), w.H); /* [B, H, T, P] */
    ttt_tensor *k = group_heads(ctx, ttt_slice(ctx, xbc, 2, w.Di, w.Di + w.GN, 1), G, w.H);
    ttt_tensor *q = group_heads(ctx, ttt_slice(ctx, xbc, 2, w.Di + w.GN, w.conv_dim, 1), G, w.H);
    static const int to_bht[3] = {0, 2, 1};
    ttt_tensor *dth = ttt_permute(ctx, dts, to_bht); /* [B, H, T] */
    ttt_tensor *v = ttt_mul(ctx, xs, ttt_reshape(ctx, dth, TTT_DIMS(B, w.H, T, 1)));
    ttt_tensor *A = ttt_neg(ctx, ttt_exp(ctx, ttt__mx_as(ctx, l->A_log, dt))); /* [H] */
    ttt_tensor *g = ttt_mul(ctx, dth, ttt_reshape(ctx, A, TTT_DIMS(w.H, 1)));
    ttt_tensor *s0 = st ? ttt__mx_snapshot(ctx, st->s, st->s->dtype) : NULL, *s1 = NULL;
    if (st && !s0) return NULL;
    ttt_tensor *y = recurrent ? ttt_ssd_recurrent(ctx, q, k, v, g, s0, st ? &s1 : NULL)
                              : ttt_ssd_chunked(ctx, q, k, v, g, c->chunk, s0, st ? &s1 : NULL);
    y = ttt_add(ctx, y, ttt_mul(ctx, xs, ttt_reshape(ctx, ttt__mx_as(ctx, l->D, dt), TTT_DIMS(w.H, 1, 1))));
    y = ttt_mul(ctx, ttt__mx_merge_heads(ctx, y), ttt_silu(ctx, z)); /* [B, T, Di] */
    y = ttt_reshape(ctx, ttt_rms_norm(ctx, ttt_reshape(ctx, y, TTT_DIMS(B, T, G, w.Di / G)), NULL, c->norm_eps),
                    TTT_DIMS(B, T, w.Di));
    y = ttt__mx_linear(ctx, ttt_mul(ctx, y, ttt__mx_as(ctx, l->norm, dt)), l->out_proj);
    if (!y) return NULL;
    if (st) {
        if (ttt_assign(ctx, st->s, s1) != TTT_OK) return NULL;
        if (st->conv && ttt_assign(ctx, st->conv, hist_out) != TTT_OK) return NULL;
        st->pos += T;
    }
    return y;
}

ttt_tensor *ttt_mamba2_forward(ttt_ctx *ctx, const ttt_mamba2 *l, ttt_tensor *x, ttt_mamba2_state *st) {
    return block(ctx, "mamba2_forward", l, x, st, 0);
}

ttt_tensor *ttt_mamba2_decode(ttt_ctx *ctx, const ttt_mamba2 *l, ttt_tensor *x, ttt_mamba2_state *st) {
    return block(ctx, "mamba2_decode", l, x, st, 1);
}
