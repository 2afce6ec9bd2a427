/* The MTTT sequence layer and its attention baselines (see include/ttt/mttt.h).
 *
 * Everything is batched over (example, head): a head's tensors are
 * [B, H, tokens, features], the fast weights W are [B, H, ...], and the inner
 * loss that is differentiated is the SUM over (b, h) of each example's own
 * loss. The examples do not interact, so d(sum)/dW[b, h] is exactly the
 * gradient of example (b, h)'s loss, with its own 1/(2m) scaling. */
#include <math.h>
#include <stdint.h>

#include "../core/engine_private.h"
#include "ttt/graph.h"
#include "ttt/mttt.h"

static const double LN_EPS = 1e-6; /* flax LayerNorm default, as in the official code */

ttt_mttt_config ttt_mttt_config_default(ttt_seq_kind kind, ttt_mttt_learner learner, int64_t dim, int64_t heads) {
    ttt_mttt_config c = {.kind = kind, .learner = learner, .feature = TTT_FEAT_IDENTITY, .dim = dim, .heads = heads,
                         .steps = 1, .eta = 1.0, .sgd = 0, .no_decoder_ln = 0};
    return c;
}

static bool has_inner_loop(const ttt_mttt_config *c) {
    return c->kind == TTT_SEQ_MTTT && c->learner != TTT_MTTT_KERNEL;
}

static bool has_mlp(const ttt_mttt_config *c) {
    return c->kind == TTT_SEQ_MTTT && c->learner == TTT_MTTT_MLP;
}

static bool has_ln(const ttt_mttt_config *c) {
    return has_mlp(c) && !c->no_decoder_ln;
}

static int check_config(ttt_ctx *ctx, const char *fn, const ttt_mttt_config *c) {
    if ((int)c->kind < TTT_SEQ_MTTT || (int)c->kind > TTT_SEQ_LINEAR_ATTENTION)
        return ttt__set_error(ctx, "%s: unknown layer kind %d", fn, (int)c->kind);
    if (c->kind == TTT_SEQ_MTTT && ((int)c->learner < TTT_MTTT_LINEAR || (int)c->learner > TTT_MTTT_MLP))
        return ttt__set_error(ctx, "%s: unknown MTTT learner %d", fn, (int)c->learner);
    if (c->kind == TTT_SEQ_LINEAR_ATTENTION &&
        ((int)c->feature < TTT_FEAT_IDENTITY || (int)c->feature > TTT_FEAT_ELU1))
        return ttt__set_error(ctx, "%s: unknown linear-attention feature map %d", fn, (int)c->feature);
    if (c->dim <= 0 || c->heads <= 0)
        return ttt__set_error(ctx, "%s: width D=%lld and heads H=%lld must be positive", fn, (long long)c->dim,
                              (long long)c->heads);
    if (c->dim % c->heads)
        return ttt__set_error(ctx, "%s: width D=%lld is not divisible by the number of heads H=%lld", fn,
                              (long long)c->dim, (long long)c->heads);
    if (c->steps < 0 || c->steps > TTT_MTTT_MAX_STEPS)
        return ttt__set_error(ctx, "%s: inner steps T=%d must be in 0..%d", fn, c->steps, TTT_MTTT_MAX_STEPS);
    if (!isfinite(c->eta)) return ttt__set_error(ctx, "%s: inner learning rate eta=%g must be finite", fn, c->eta);
    if (c->sgd != 0 && c->sgd != 1) return ttt__set_error(ctx, "%s: sgd=%d must be 0 or 1", fn, c->sgd);
    return TTT_OK;
}

/* ---- parameters --------------------------------------------------------------------------- */

/* lim > 0: U(-lim, lim); otherwise every entry = fill. */
static int new_param(ttt_ctx *ctx, ttt_tensor **p, ttt_dtype dt, int ndim, const int64_t *shape, const char *name,
                     double lim, double fill) {
    *p = ttt_param(ctx, dt, ndim, shape, name);
    if (!*p) return TTT_ERR;
    if (lim <= 0) return ttt_fill(ctx, *p, fill);
    ttt_mark_t m = ttt_mark(ctx);
    int rc = ttt_assign(ctx, *p, ttt_rand(ctx, dt, ndim, shape, -lim, lim));
    ttt_release(ctx, m);
    return rc;
}

int ttt_mttt_init(ttt_ctx *ctx, ttt_mttt *l, const ttt_mttt_config *cfg, ttt_dtype dt) {
    if (!ctx) return TTT_ERR;
    if (!l || !cfg) return ttt__set_error(ctx, "mttt_init: layer and config must not be NULL");
    *l = (ttt_mttt){.cfg = *cfg};
    if (check_config(ctx, "mttt_init", cfg) != TTT_OK) return TTT_ERR;
    if (dt != TTT_F32 && dt != TTT_F64)
        return ttt__set_error(ctx, "mttt_init: parameters must be f32 or f64, not %s", ttt_dtype_name(dt));
    const int64_t D = cfg->dim, H = cfg->heads, d = D / H;
    const double proj = sqrt(3.0 / (double)D), xavier = sqrt(6.0 / (double)(d + 4 * d));
    int rc = new_param(ctx, &l->psi_w, dt, TTT_DIMS(D, D), "mttt.psi_w", proj, 0) ||
             new_param(ctx, &l->psi_b, dt, TTT_DIMS(D), "mttt.psi_b", 0, 0) ||
             new_param(ctx, &l->phi_w, dt, TTT_DIMS(D, D), "mttt.phi_w", proj, 0) ||
             new_param(ctx, &l->phi_b, dt, TTT_DIMS(D), "mttt.phi_b", 0, 0) ||
             new_param(ctx, &l->g_w, dt, TTT_DIMS(D, D), "mttt.g_w", proj, 0) ||
             new_param(ctx, &l->h_w, dt, TTT_DIMS(D, D), "mttt.h_w", proj, 0) ||
             new_param(ctx, &l->h_b, dt, TTT_DIMS(D), "mttt.h_b", 0, 0);
    if (!rc && has_mlp(cfg))
        rc = new_param(ctx, &l->w1, dt, TTT_DIMS(H, d, 4 * d), "mttt.w1", xavier, 0) ||
             new_param(ctx, &l->b1, dt, TTT_DIMS(H, 4 * d), "mttt.b1", 0, 0) ||
             new_param(ctx, &l->w2, dt, TTT_DIMS(H, 4 * d, d), "mttt.w2", xavier, 0) ||
             new_param(ctx, &l->b2, dt, TTT_DIMS(H, d), "mttt.b2", 0, 0);
    if (!rc && has_ln(cfg))
        rc = new_param(ctx, &l->ln_g, dt, TTT_DIMS(H, D), "mttt.ln_g", 0, 1) ||
             new_param(ctx, &l->ln_b, dt, TTT_DIMS(H, D), "mttt.ln_b", 0, 0);
    if (rc) {
        ttt_mttt_free(ctx, l);
        return TTT_ERR;
    }
    return TTT_OK;
}

int ttt_mttt_params(const ttt_mttt *l, ttt_tensor **params, int *decay) {
    if (!l || !params) return 0;
    ttt_tensor *all[TTT_MTTT_MAX_PARAMS] = {l->psi_w, l->psi_b, l->phi_w, l->phi_b, l->g_w, l->h_w, l->h_b,
                                            l->w1,    l->b1,    l->w2,    l->b2,    l->ln_g, l->ln_b};
    const int is_matrix[TTT_MTTT_MAX_PARAMS] = {1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 0, 0};
    int n = 0;
    for (int i = 0; i < TTT_MTTT_MAX_PARAMS; i++)
        if (all[i]) {
            if (decay) decay[n] = is_matrix[i];
            params[n++] = all[i];
        }
    return n;
}

void ttt_mttt_free(ttt_ctx *ctx, ttt_mttt *l) {
    if (!ctx || !l) return;
    ttt_tensor *p[TTT_MTTT_MAX_PARAMS];
    int n = ttt_mttt_params(l, p, NULL);
    for (int i = 0; i < n; i++) ttt_persistent_free(ctx, p[i]);
    ttt_mttt_config cfg = l->cfg;
    *l = (ttt_mttt){.cfg = cfg};
}

/* A layer struct is public and may have been edited: check it again per call. */
static int check_layer(ttt_ctx *ctx, const char *fn, const ttt_mttt *l) {
    if (check_config(ctx, fn, &l->cfg) != TTT_OK) return TTT_ERR;
    const int64_t D = l->cfg.dim, H = l->cfg.heads, d = D / H;
    struct {
        const ttt_tensor *t;
        const char *name;
        int ndim;
        int64_t shape[3];
        bool needed;
    } want[TTT_MTTT_MAX_PARAMS] = {
        {l->psi_w, "psi_w", 2, {D, D}, true},        {l->psi_b, "psi_b", 1, {D}, true},
        {l->phi_w, "phi_w", 2, {D, D}, true},        {l->phi_b, "phi_b", 1, {D}, true},
        {l->g_w, "g_w", 2, {D, D}, true},            {l->h_w, "h_w", 2, {D, D}, true},
        {l->h_b, "h_b", 1, {D}, true},               {l->w1, "w1", 3, {H, d, 4 * d}, has_mlp(&l->cfg)},
        {l->b1, "b1", 2, {H, 4 * d}, has_mlp(&l->cfg)}, {l->w2, "w2", 3, {H, 4 * d, d}, has_mlp(&l->cfg)},
        {l->b2, "b2", 2, {H, d}, has_mlp(&l->cfg)},  {l->ln_g, "ln_g", 2, {H, D}, has_ln(&l->cfg)},
        {l->ln_b, "ln_b", 2, {H, D}, has_ln(&l->cfg)},
    };
    for (int i = 0; i < TTT_MTTT_MAX_PARAMS; i++) {
        const ttt_tensor *t = want[i].t;
        if (!want[i].needed) continue;
        if (!t) return ttt__set_error(ctx, "%s: parameter %s is missing (call ttt_mttt_init)", fn, want[i].name);
        bool ok = t->ndim == want[i].ndim && t->dtype == l->psi_w->dtype;
        for (int a = 0; ok && a < t->ndim; a++) ok = t->shape[a] == want[i].shape[a];
        if (!ok) {
            char s[96];
            return ttt__set_error(ctx, "%s: parameter %s is %s %s; the config (D=%lld, H=%lld) needs another shape",
                                  fn, want[i].name, ttt_dtype_name(t->dtype), ttt_shape_str(t, s, sizeof s),
                                  (long long)D, (long long)H);
        }
    }
    return TTT_OK;
}

static int check_input(ttt_ctx *ctx, const char *fn, const ttt_mttt *l, const ttt_tensor *x) {
    char s[96];
    if (x->ndim != 3 || x->shape[2] != l->cfg.dim || x->shape[1] < 1 || x->shape[0] < 1)
        return ttt__set_error(ctx, "%s: input %s must be [B, n, %lld] with B, n >= 1", fn,
                              ttt_shape_str(x, s, sizeof s), (long long)l->cfg.dim);
    if (x->dtype != l->psi_w->dtype)
        return ttt__set_error(ctx, "%s: input is %s but the parameters are %s", fn, ttt_dtype_name(x->dtype),
                              ttt_dtype_name(l->psi_w->dtype));
    if (x->shape[0] * l->cfg.heads * x->shape[1] > INT32_MAX)
        return ttt__set_error(ctx, "%s: B*H*n = %lld tokens is too many (the SGD index is int32)", fn,
                              (long long)(x->shape[0] * l->cfg.heads * x->shape[1]));
    if (has_inner_loop(&l->cfg) && l->cfg.sgd && l->cfg.steps > x->shape[1])
        return ttt__set_error(ctx, "%s: SGD splits n=%lld tokens into T=%d mini-batches; it needs n >= T", fn,
                              (long long)x->shape[1], l->cfg.steps);
    return TTT_OK;
}

/* ---- projections ---------------------------------------------------------------------------- */

typedef struct {
    int64_t B, n, D, H, d;
    ttt_tensor *x4;         /* the reconstruction target, x as [B, 1, n, D] (same for every head) */
    ttt_tensor *q, *k, *v;  /* [B, H, n, d]; v only where a kind needs it */
    ttt_tensor *gh;         /* decoder weights per head, [H, D, d]: g_j(u) = u gh[j]^T */
    ttt_tensor *lng, *lnb;  /* decoder LN affine per head, [H, 1, D], or NULL */
} heads_t;

/* [B, n, D] -> [B, H, n, d] */
static ttt_tensor *split_heads(ttt_ctx *ctx, const heads_t *p, ttt_tensor *t) {
    static const int perm[4] = {0, 2, 1, 3};
    return ttt_permute(ctx, ttt_reshape(ctx, t, TTT_DIMS(p->B, p->n, p->H, p->d)), perm);
}

/* [B, H, n, d] -> [B, n, D] */
static ttt_tensor *merge_heads(ttt_ctx *ctx, const heads_t *p, ttt_tensor *t) {
    static const int perm[4] = {0, 2, 1, 3};
    return ttt_reshape(ctx, ttt_permute(ctx, t, perm), TTT_DIMS(p->B, p->n, p->D));
}

static ttt_tensor *affine(ttt_ctx *ctx, ttt_tensor *x, ttt_tensor *w, ttt_tensor *b) {
    ttt_tensor *y = ttt_matmul(ctx, x, w, 0, 0);
    return b ? ttt_add(ctx, y, b) : y;
}

static int project(ttt_ctx *ctx, const ttt_mttt *l, ttt_tensor *x, bool need_v, heads_t *p) {
    *p = (heads_t){.B = x->shape[0], .n = x->shape[1], .D = l->cfg.dim, .H = l->cfg.heads};
    p->d = p->D / p->H;
    p->x4 = ttt_reshape(ctx, x, TTT_DIMS(p->B, 1, p->n, p->D));
    p->q = split_heads(ctx, p, affine(ctx, x, l->psi_w, l->psi_b));
    p->k = split_heads(ctx, p, affine(ctx, x, l->phi_w, l->phi_b));
    p->v = need_v ? split_heads(ctx, p, ttt_matmul(ctx, x, l->g_w, 0, 0)) : NULL;
    static const int perm[3] = {1, 0, 2};
    p->gh = ttt_permute(ctx, ttt_reshape(ctx, l->g_w, TTT_DIMS(p->D, p->H, p->d)), perm);
    if (l->ln_g) {
        p->lng = ttt_reshape(ctx, l->ln_g, TTT_DIMS(p->H, 1, p->D));
        p->lnb = ttt_reshape(ctx, l->ln_b, TTT_DIMS(p->H, 1, p->D));
        if (!p->lng || !p->lnb) return TTT_ERR;
    }
    return p->x4 && p->q && p->k && p->gh && (p->v || !need_v) ? TTT_OK : TTT_ERR;
}

/* ---- the learners ----------------------------------------------------------------------------- */

static int n_weights(ttt_mttt_learner learner) {
    return learner == TTT_MTTT_MLP ? 4 : 1;
}

/* f(u; W) for u [B, H, m, d]. */
static ttt_tensor *learner_apply(ttt_ctx *ctx, ttt_mttt_learner learner, ttt_tensor *const *w, ttt_tensor *u) {
    if (learner == TTT_MTTT_LINEAR) return ttt_matmul(ctx, u, w[0], 0, 0);
    if (w[0] && w[0]->ndim == 4) return ttt__mttt_mlp_apply(ctx, w, u); /* one kernel, else these same ops */
    ttt_tensor *a = ttt_gelu(ctx, ttt_add(ctx, ttt_matmul(ctx, u, w[0], 0, 0), w[1]));
    return ttt_add(ctx, ttt_matmul(ctx, a, w[2], 0, 0), w[3]);
}

/* sum over (b, h) of 1/(2m) sum_i || dec(f(k_i; W)) - x_i ||^2 over m tokens.
 * xt is [B, 1, m, D] (batch GD) or [B, H, m, D] (SGD: each head its own tokens). */
static ttt_tensor *recon_loss(ttt_ctx *ctx, ttt_mttt_learner learner, ttt_tensor *const *w, ttt_tensor *k,
                              ttt_tensor *xt, ttt_tensor *gh, ttt_tensor *lng, ttt_tensor *lnb) {
    if (!k) return NULL;
    if (learner == TTT_MTTT_MLP && w[0] && w[0]->ndim == 4) /* one kernel where no graph records */
        return ttt__mttt_mlp_loss(ctx, w, k, xt, gh, lng, lnb, LN_EPS);
    int64_t m = k->shape[2];
    ttt_tensor *dec = ttt_matmul(ctx, learner_apply(ctx, learner, w, k), gh, 0, 1);
    if (lng) dec = ttt_add(ctx, ttt_mul(ctx, ttt_layer_norm(ctx, dec, NULL, NULL, LN_EPS), lng), lnb);
    ttt_tensor *r = ttt_sub(ctx, dec, xt);
    return ttt_scale(ctx, ttt_sum(ctx, ttt_mul(ctx, r, r), 0, NULL, 0), 0.5 / (double)m);
}

/* One inner step as a pure function of its inputs, so that it can be
 * checkpointed: in = (W[0..nw), k, xt, gh[, lng, lnb]); out = (W'[0..nw), loss
 * before the step). The arguments live in the step arena because the backward
 * pass of a checkpoint calls the step again. */
typedef struct {
    ttt_mttt_learner learner;
    int nw;
    bool ln;
    double eta;
} step_args;

static int inner_step(ttt_ctx *ctx, void *user, int n_in, ttt_tensor *const *in, int n_out, ttt_tensor **out) {
    (void)n_in;
    (void)n_out;
    const step_args *a = user;
    const int nw = a->nw;
    if (a->learner == TTT_MTTT_MLP) /* one op: fused kernels where the backend has them, else these same ops */
        return ttt__mttt_mlp_step(ctx, in, in[nw], in[nw + 1], in[nw + 2], a->ln ? in[nw + 3] : NULL,
                                  a->ln ? in[nw + 4] : NULL, a->eta, LN_EPS, out, &out[nw]);
    ttt_tensor *g[4];
    /* The inner loss always needs a graph to W; the outer loop differentiates
     * through the step only if it is recording. */
    int create_graph = ttt_grad_enabled(ctx);
    ttt_grad_mode prev = ttt_grad_mode_set(ctx, 1);
    ttt_tensor *loss = recon_loss(ctx, a->learner, in, in[nw], in[nw + 1], in[nw + 2], a->ln ? in[nw + 3] : NULL,
                                  a->ln ? in[nw + 4] : NULL);
    int rc = loss ? ttt_grad(ctx, 1, &loss, NULL, nw, in, g, create_graph) : TTT_ERR;
    ttt_grad_mode_restore(ctx, prev);
    if (rc != TTT_OK) return TTT_ERR;
    for (int i = 0; i < nw; i++)
        if (!(out[i] = ttt_sub(ctx, in[i], ttt_scale(ctx, g[i], a->eta)))) return TTT_ERR;
    out[nw] = loss;
    return TTT_OK;
}

/* Evaluation: the weights must still be leaves that ttt_grad can reach. */
static int as_inner_leaves(ttt_ctx *ctx, int nw, ttt_tensor **w) {
    for (int i = 0; i < nw; i++) {
        if (!(w[i] = ttt_detach(ctx, w[i]))) return TTT_ERR;
        ttt_set_requires_grad(w[i], 1);
    }
    return TTT_OK;
}

/* W_0 per (example, head): views of the shared W_0 (gradients sum back into it),
 * or zeros for the linear learner. */
static int initial_state(ttt_ctx *ctx, const ttt_mttt *l, const heads_t *p, ttt_tensor **w) {
    const int64_t B = p->B, H = p->H, d = p->d;
    if (l->cfg.learner == TTT_MTTT_LINEAR) {
        w[0] = ttt_zeros(ctx, l->psi_w->dtype, TTT_DIMS(B, H, d, d));
        ttt_set_requires_grad(w[0], 1);
        return w[0] ? TTT_OK : TTT_ERR;
    }
    w[0] = ttt_expand(ctx, l->w1, TTT_DIMS(B, H, d, 4 * d));
    w[1] = ttt_expand(ctx, ttt_reshape(ctx, l->b1, TTT_DIMS(H, 1, 4 * d)), TTT_DIMS(B, H, 1, 4 * d));
    w[2] = ttt_expand(ctx, l->w2, TTT_DIMS(B, H, 4 * d, d));
    w[3] = ttt_expand(ctx, ttt_reshape(ctx, l->b2, TTT_DIMS(H, 1, d)), TTT_DIMS(B, H, 1, d));
    return w[0] && w[1] && w[2] && w[3] ? TTT_OK : TTT_ERR;
}

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void ttt_mttt_sgd_order(uint64_t seed, int64_t batch, int64_t heads, int64_t n, int32_t *order) {
    if (!order) return;
    for (int64_t e = 0; e < batch * heads; e++) {
        /* one independent stream per (example, head) */
        uint64_t s = seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(e + 1));
        int32_t *o = order + e * n;
        for (int64_t i = 0; i < n; i++) o[i] = (int32_t)i;
        for (int64_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
            int64_t j = (int64_t)((double)(splitmix64(&s) >> 11) * 0x1.0p-53 * (double)(i + 1));
            if (j > i) j = i;
            int32_t t = o[i];
            o[i] = o[j];
            o[j] = t;
        }
    }
}

/* k [B, H, n, d] and the targets [B, H, n, D] with each (b, h)'s tokens in its
 * SGD order: gathers of flattened rows (ttt_embedding, whose VJP scatter-adds). */
static int sgd_gather(ttt_ctx *ctx, const heads_t *p, ttt_tensor *x, uint64_t seed, ttt_tensor **kp,
                      ttt_tensor **xp) {
    const int64_t B = p->B, H = p->H, n = p->n, rows = B * H * n;
    int32_t *order = ttt__meta_alloc(ctx, 3 * sizeof(int32_t) * (size_t)rows);
    if (!order) return TTT_ERR;
    int32_t *ids_k = order + rows, *ids_x = order + 2 * rows;
    ttt_mttt_sgd_order(seed, B, H, n, order);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < n; i++) {
                int64_t r = (b * H + h) * n + i;
                ids_k[r] = (int32_t)((b * H + h) * n + order[r]);
                ids_x[r] = (int32_t)(b * n + order[r]);
            }
    ttt_tensor *tk = ttt_from_host(ctx, TTT_I32, TTT_DIMS(B, H, n), ids_k);
    ttt_tensor *tx = ttt_from_host(ctx, TTT_I32, TTT_DIMS(B, H, n), ids_x);
    *kp = ttt_embedding(ctx, ttt_reshape(ctx, p->k, TTT_DIMS(rows, p->d)), tk);
    *xp = ttt_embedding(ctx, ttt_reshape(ctx, x, TTT_DIMS(B * n, p->D)), tx);
    return *kp && *xp ? TTT_OK : TTT_ERR;
}

static int adapt(ttt_ctx *ctx, const ttt_mttt *l, const heads_t *p, ttt_tensor *x, const ttt_mttt_run_opts *opts,
                 ttt_tensor **w) {
    const ttt_mttt_config *c = &l->cfg;
    const int nw = n_weights(c->learner), T = c->steps;
    const bool outer = ttt_grad_enabled(ctx);
    double *inner_loss = opts ? opts->inner_loss : NULL;
    if (initial_state(ctx, l, p, w) != TTT_OK) return TTT_ERR;
    if (!outer && as_inner_leaves(ctx, nw, w) != TTT_OK) return TTT_ERR;

    ttt_tensor *kp = p->k, *xp = p->x4;
    if (c->sgd && T > 0 && sgd_gather(ctx, p, x, opts ? opts->seed : 0, &kp, &xp) != TTT_OK) return TTT_ERR;
    step_args *args = ttt__meta_alloc(ctx, sizeof *args);
    if (!args) return TTT_ERR;
    *args = (step_args){.learner = c->learner, .nw = nw, .ln = p->lng != NULL, .eta = c->eta};
    const int64_t base = p->n / (T ? T : 1), extra = p->n % (T ? T : 1);
    for (int t = 0; t < T; t++) {
        ttt_tensor *ks = kp, *xs = xp;
        if (c->sgd) {
            /* mini-batch t: the first n mod T mini-batches take one token more */
            int64_t start = t * base + (t < extra ? t : extra), m = base + (t < extra);
            ks = ttt_slice(ctx, kp, 2, start, start + m, 1);
            xs = ttt_slice(ctx, xp, 2, start, start + m, 1);
        }
        ttt_tensor *in[9], *out[5];
        int n_in = 0;
        for (int i = 0; i < nw; i++) in[n_in++] = w[i];
        in[n_in++] = ks;
        in[n_in++] = xs;
        in[n_in++] = p->gh;
        if (p->lng) {
            in[n_in++] = p->lng;
            in[n_in++] = p->lnb;
        }
        for (int i = 0; i < n_in; i++)
            if (!in[i]) return TTT_ERR;
        int rc = opts && opts->checkpoint ? ttt_checkpoint(ctx, inner_step, args, n_in, in, nw + 1, out)
                                          : inner_step(ctx, args, n_in, in, nw + 1, out);
        if (rc != TTT_OK) return TTT_ERR;
        /* ttt_item_into: also when the step is recorded as a graph (read after each replay) */
        if (inner_loss && ttt_item_into(ctx, out[nw], 1.0 / (double)(p->B * p->H), &inner_loss[t]) != TTT_OK)
            return TTT_ERR;
        for (int i = 0; i < nw; i++) w[i] = out[i];
        if (!outer && as_inner_leaves(ctx, nw, w) != TTT_OK) return TTT_ERR;
    }
    if (inner_loss) {
        ttt_no_grad_begin(ctx);
        ttt_tensor *final = recon_loss(ctx, c->learner, w, p->k, p->x4, p->gh, p->lng, p->lnb);
        int rc = final ? ttt_item_into(ctx, final, 1.0 / (double)(p->B * p->H), &inner_loss[T]) : TTT_ERR;
        ttt_no_grad_end(ctx);
        if (rc != TTT_OK) return TTT_ERR;
    }
    return TTT_OK;
}

/* ---- read-outs ---------------------------------------------------------------------------------- */

/* The kernel learner, written as the estimator it is (not via ttt_softmax, so
 * that its equality with attention is a real check). */
static ttt_tensor *nadaraya_watson(ttt_ctx *ctx, const heads_t *p) {
    static const int last[1] = {-1};
    ttt_tensor *k = ttt_scale(ctx, p->k, 1.0 / sqrt((double)p->d)); /* the documented 1/sqrt(d) convention */
    ttt_tensor *s = ttt_matmul(ctx, p->q, k, 0, 1);                  /* k_j . q_i  [B, H, n, n] */
    /* exp(s - max) for range: the shift cancels between numerator and
     * denominator, so it is a constant and needs no gradient */
    ttt_tensor *mx = ttt_max(ctx, s, 1, last, 1);
    ttt_tensor *e = mx ? ttt_exp(ctx, ttt_sub(ctx, s, ttt_detach(ctx, mx))) : NULL;
    return ttt_div(ctx, ttt_matmul(ctx, e, p->v, 0, 0), ttt_sum(ctx, e, 1, last, 1));
}

static ttt_tensor *softmax_attention(ttt_ctx *ctx, const heads_t *p) {
    ttt_tensor *s = ttt_scale(ctx, ttt_matmul(ctx, p->q, p->k, 0, 1), 1.0 / sqrt((double)p->d));
    return ttt_matmul(ctx, ttt_softmax(ctx, s), p->v, 0, 0);
}

static ttt_tensor *linear_attention(ttt_ctx *ctx, const heads_t *p, ttt_feature_map feature) {
    if (feature == TTT_FEAT_IDENTITY) {
        ttt_tensor *kv = ttt_matmul(ctx, p->k, p->v, 1, 0); /* sum_j k_j^T v_j  [B, H, d, d] */
        return ttt_scale(ctx, ttt_matmul(ctx, p->q, kv, 0, 0), 1.0 / (double)p->n);
    }
    static const int tokens[1] = {2};
    ttt_tensor *q = ttt_elu1(ctx, p->q), *k = ttt_elu1(ctx, p->k);
    ttt_tensor *num = ttt_matmul(ctx, q, ttt_matmul(ctx, k, p->v, 1, 0), 0, 0);
    ttt_tensor *den = ttt_matmul(ctx, q, ttt_sum(ctx, k, 1, tokens, 1), 0, 1); /* phi(q_i) . sum_j phi(k_j) */
    return ttt_div(ctx, num, den);
}

ttt_tensor *ttt_mttt_forward(ttt_ctx *ctx, const ttt_mttt *l, ttt_tensor *x, const ttt_mttt_run_opts *opts) {
    if (!ctx || !x) return NULL;
    if (!l) return ttt__set_error(ctx, "mttt_forward: layer must not be NULL"), NULL;
    if (check_layer(ctx, "mttt_forward", l) != TTT_OK || check_input(ctx, "mttt_forward", l, x) != TTT_OK)
        return NULL;
    const ttt_mttt_config *c = &l->cfg;
    bool need_v = !has_inner_loop(c);
    heads_t p;
    if (project(ctx, l, x, need_v, &p) != TTT_OK) return NULL;
    ttt_tensor *z = NULL;
    if (c->kind == TTT_SEQ_ATTENTION) z = softmax_attention(ctx, &p);
    else if (c->kind == TTT_SEQ_LINEAR_ATTENTION) z = linear_attention(ctx, &p, c->feature);
    else if (c->learner == TTT_MTTT_KERNEL) z = nadaraya_watson(ctx, &p);
    else {
        ttt_tensor *w[4];
        if (adapt(ctx, l, &p, x, opts, w) != TTT_OK) return NULL;
        z = learner_apply(ctx, c->learner, w, p.q);
    }
    return affine(ctx, merge_heads(ctx, &p, z), l->h_w, l->h_b);
}

int ttt_mttt_adapt(ttt_ctx *ctx, const ttt_mttt *l, ttt_tensor *x, const ttt_mttt_run_opts *opts,
                   ttt_mttt_state *state) {
    if (!ctx) return TTT_ERR;
    if (!l || !x || !state) return ttt__set_error(ctx, "mttt_adapt: layer, input and state must not be NULL");
    if (check_layer(ctx, "mttt_adapt", l) != TTT_OK || check_input(ctx, "mttt_adapt", l, x) != TTT_OK)
        return TTT_ERR;
    if (!has_inner_loop(&l->cfg))
        return ttt__set_error(ctx, "mttt_adapt: only the MTTT LINEAR and MLP learners have weights to adapt");
    heads_t p;
    *state = (ttt_mttt_state){.n = n_weights(l->cfg.learner)};
    if (project(ctx, l, x, false, &p) != TTT_OK) return TTT_ERR;
    return adapt(ctx, l, &p, x, opts, state->w);
}

ttt_tensor *ttt_mttt_inner_loss(ttt_ctx *ctx, const ttt_mttt *l, ttt_tensor *x, const ttt_mttt_state *state) {
    if (!ctx || !x) return NULL;
    if (!l || !state) return ttt__set_error(ctx, "mttt_inner_loss: layer and state must not be NULL"), NULL;
    if (check_layer(ctx, "mttt_inner_loss", l) != TTT_OK || check_input(ctx, "mttt_inner_loss", l, x) != TTT_OK)
        return NULL;
    if (!has_inner_loop(&l->cfg) || state->n != n_weights(l->cfg.learner))
        return ttt__set_error(ctx, "mttt_inner_loss: the state (%d tensors) does not fit this layer's learner",
                              state->n),
               NULL;
    for (int i = 0; i < state->n; i++)
        if (!state->w[i]) return NULL;
    heads_t p;
    if (project(ctx, l, x, false, &p) != TTT_OK) return NULL;
    ttt_tensor *loss = recon_loss(ctx, l->cfg.learner, state->w, p.k, p.x4, p.gh, p.lng, p.lnb);
    return ttt_scale(ctx, loss, 1.0 / (double)(p.B * p.H));
}
