/* The ViT classifier around the MTTT sequence layer (see include/ttt/vit.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/engine_private.h"
#include "ttt/vit.h"

static const double LN_EPS = 1e-6; /* flax LayerNorm default, as in the official code */

/* Sizes beyond any practical use are refused, so products of them cannot overflow. */
enum { MAX_TOKENS = 1 << 24, MAX_TOKEN_DIM = 1 << 20, MAX_DIM = 1 << 16, MAX_DEPTH = 1024, MAX_RATIO = 64,
       MAX_CLASSES = 1 << 20 };

ttt_vit_config ttt_vit_config_default(int64_t token_dim, int64_t n_tokens, int64_t dim, int64_t depth, int64_t heads,
                                      ttt_seq_kind kind, ttt_mttt_learner learner) {
    ttt_vit_config c = {.token_dim = token_dim, .n_tokens = n_tokens, .dim = dim, .depth = depth, .heads = heads,
                        .mlp_ratio = 4, .classes = 10, .pos = TTT_VIT_POS_LEARNED,
                        .seq = ttt_mttt_config_default(kind, learner, dim, heads)};
    return c;
}

int ttt_vit_has_inner_loop(const ttt_vit_config *cfg) {
    return cfg && cfg->seq.kind == TTT_SEQ_MTTT && cfg->seq.learner != TTT_MTTT_KERNEL;
}

static int64_t isqrt_exact(int64_t n) { /* r with r*r == n, or -1 */
    int64_t r = (int64_t)llround(sqrt((double)n));
    for (int64_t c = r > 0 ? r - 1 : 0; c <= r + 1; c++)
        if (c * c == n) return c;
    return -1;
}

/* The ViT's own fields; the sequence layer's are checked by ttt_mttt_init. */
static int check_config(ttt_ctx *ctx, const char *fn, const ttt_vit_config *c) {
    struct {
        const char *name;
        int64_t v, lo, hi;
    } sizes[] = {
        {"token_dim", c->token_dim, 1, MAX_TOKEN_DIM}, {"n_tokens", c->n_tokens, 1, MAX_TOKENS},
        {"dim", c->dim, 1, MAX_DIM},                   {"depth", c->depth, 1, MAX_DEPTH},
        {"heads", c->heads, 1, MAX_DIM},               {"mlp_ratio", c->mlp_ratio, 1, MAX_RATIO},
        {"classes", c->classes, 2, MAX_CLASSES},
    };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (sizes[i].v < sizes[i].lo || sizes[i].v > sizes[i].hi)
            return ttt__set_error(ctx, "%s: %s = %lld must be in [%lld, %lld]", fn, sizes[i].name,
                                  (long long)sizes[i].v, (long long)sizes[i].lo, (long long)sizes[i].hi);
    if (c->dim % c->heads)
        return ttt__set_error(ctx, "%s: dim %lld is not divisible by heads %lld", fn, (long long)c->dim,
                              (long long)c->heads);
    if (c->seq.dim != 0 && c->seq.dim != c->dim)
        return ttt__set_error(ctx, "%s: seq.dim %lld differs from dim %lld (leave it 0)", fn, (long long)c->seq.dim,
                              (long long)c->dim);
    if (c->seq.heads != 0 && c->seq.heads != c->heads)
        return ttt__set_error(ctx, "%s: seq.heads %lld differs from heads %lld (leave it 0)", fn,
                              (long long)c->seq.heads, (long long)c->heads);
    if (c->pos != TTT_VIT_POS_LEARNED && c->pos != TTT_VIT_POS_SINCOS)
        return ttt__set_error(ctx, "%s: unknown position kind %d", fn, (int)c->pos);
    if (c->pos == TTT_VIT_POS_SINCOS && (isqrt_exact(c->n_tokens) < 0 || c->dim % 4))
        return ttt__set_error(ctx,
                              "%s: sin-cos positions need a square grid of tokens and dim divisible by 4 (n_tokens "
                              "%lld, dim %lld)",
                              fn, (long long)c->n_tokens, (long long)c->dim);
    return TTT_OK;
}

/* ---- initialisation --------------------------------------------------------------------- */

/* N(0, sd^2) truncated at 2 sd, by rejection: draws whole tensors from the
 * context's RNG and keeps the values inside the range, in order. */
static int init_trunc_normal(ttt_ctx *ctx, ttt_tensor *p, double sd) {
    const int64_t n = ttt_numel(p);
    double *vals = malloc(sizeof(double) * (size_t)n), *draw = malloc(sizeof(double) * (size_t)n);
    int rc = vals && draw ? TTT_OK : ttt__set_error(ctx, "vit_init: out of host memory");
    int64_t have = 0;
    for (int round = 0; rc == TTT_OK && have < n; round++) {
        if (round == 64) { /* P(|z| > 2) is 4.6%: never happens */
            rc = ttt__set_error(ctx, "vit_init: truncated-normal sampling did not finish");
            break;
        }
        ttt_mark_t m = ttt_mark(ctx);
        rc = ttt_copy_to_host(ctx, ttt_randn(ctx, TTT_F64, 1, &n, sd), draw, TTT_F64);
        ttt_release(ctx, m);
        for (int64_t i = 0; rc == TTT_OK && i < n && have < n; i++)
            if (fabs(draw[i]) <= 2 * sd) vals[have++] = draw[i];
    }
    if (rc == TTT_OK) {
        ttt_mark_t m = ttt_mark(ctx);
        rc = ttt_assign(ctx, p, ttt_from_host(ctx, TTT_F64, p->ndim, p->shape, vals));
        ttt_release(ctx, m);
    }
    free(vals);
    free(draw);
    return rc;
}

static int init_uniform(ttt_ctx *ctx, ttt_tensor *p, double lim) {
    ttt_mark_t m = ttt_mark(ctx);
    int rc = ttt_assign(ctx, p, ttt_rand(ctx, p->dtype, p->ndim, p->shape, -lim, lim));
    ttt_release(ctx, m);
    return rc;
}

/* big_vision's posemb_sincos_2d over a g x g grid (with 10000^(-j/q) frequencies). */
static int init_sincos(ttt_ctx *ctx, ttt_tensor *pos, int64_t n, int64_t D) {
    const int64_t g = isqrt_exact(n), q = D / 4;
    double *v = malloc(sizeof(double) * (size_t)(n * D));
    if (!v) return ttt__set_error(ctx, "vit_init: out of host memory");
    for (int64_t t = 0; t < n; t++) {
        const double r = (double)(t / g), c = (double)(t % g);
        for (int64_t j = 0; j < q; j++) {
            const double w = pow(10000.0, -(double)j / (double)q);
            v[t * D + j] = sin(c * w);
            v[t * D + q + j] = cos(c * w);
            v[t * D + 2 * q + j] = sin(r * w);
            v[t * D + 3 * q + j] = cos(r * w);
        }
    }
    ttt_mark_t m = ttt_mark(ctx);
    int rc = ttt_assign(ctx, pos, ttt_from_host(ctx, TTT_F64, TTT_DIMS(n, D), v));
    ttt_release(ctx, m);
    free(v);
    return rc;
}

/* ---- the named parameter list ------------------------------------------------------------- */

static int list_add(ttt_ctx *ctx, ttt_vit *m, int cap, ttt_tensor *t, int decay, const char *fmt, long long i,
                    const char *leaf) {
    if (m->n_params >= cap) return ttt__set_error(ctx, "vit_init: parameter list overflow (internal)");
    char buf[128];
    if (i < 0) snprintf(buf, sizeof buf, "%s", fmt);
    else snprintf(buf, sizeof buf, fmt, i, leaf);
    char *name = malloc(strlen(buf) + 1);
    if (!name) return ttt__set_error(ctx, "vit_init: out of host memory");
    strcpy(name, buf);
    m->params[m->n_params] = t;
    m->names[m->n_params] = name;
    m->decay[m->n_params] = decay;
    m->n_params++;
    return TTT_OK;
}

/* The sequence layer's leaf name for one of its tensors. */
static const char *seq_leaf(const ttt_mttt *l, const ttt_tensor *t) {
    const struct {
        const ttt_tensor *t;
        const char *name;
    } fields[TTT_MTTT_MAX_PARAMS] = {
        {l->psi_w, "psi_w"}, {l->psi_b, "psi_b"}, {l->phi_w, "phi_w"}, {l->phi_b, "phi_b"}, {l->g_w, "g_w"},
        {l->h_w, "h_w"},     {l->h_b, "h_b"},     {l->w1, "w1"},       {l->b1, "b1"},       {l->w2, "w2"},
        {l->b2, "b2"},       {l->ln_g, "ln_g"},   {l->ln_b, "ln_b"},
    };
    for (int i = 0; i < TTT_MTTT_MAX_PARAMS; i++)
        if (fields[i].t == t) return fields[i].name;
    return "unknown";
}

static int build_list(ttt_ctx *ctx, ttt_vit *m) {
    const int cap = 3 + (int)m->cfg.depth * (8 + TTT_MTTT_MAX_PARAMS) + 4;
    m->params = calloc((size_t)cap, sizeof *m->params);
    m->names = calloc((size_t)cap, sizeof *m->names);
    m->decay = calloc((size_t)cap, sizeof *m->decay);
    if (!m->params || !m->names || !m->decay) return ttt__set_error(ctx, "vit_init: out of host memory");
    int rc = list_add(ctx, m, cap, m->embed_w, 1, "embed.w", -1, NULL) ||
             list_add(ctx, m, cap, m->embed_b, 0, "embed.b", -1, NULL);
    if (!rc && m->cfg.pos == TTT_VIT_POS_LEARNED) rc = list_add(ctx, m, cap, m->pos, 0, "pos", -1, NULL);
    for (int64_t i = 0; !rc && i < m->cfg.depth; i++) {
        const ttt_vit_block *b = &m->blocks[i];
        ttt_tensor *sp[TTT_MTTT_MAX_PARAMS];
        int sd[TTT_MTTT_MAX_PARAMS];
        const int ns = ttt_mttt_params(&b->seq, sp, sd);
        rc = list_add(ctx, m, cap, b->norm1_g, 0, "blocks.%lld.norm1.%s", i, "g") ||
             list_add(ctx, m, cap, b->norm1_b, 0, "blocks.%lld.norm1.%s", i, "b");
        for (int j = 0; !rc && j < ns; j++)
            rc = list_add(ctx, m, cap, sp[j], sd[j], "blocks.%lld.seq.%s", i, seq_leaf(&b->seq, sp[j]));
        if (!rc)
            rc = list_add(ctx, m, cap, b->norm2_g, 0, "blocks.%lld.norm2.%s", i, "g") ||
                 list_add(ctx, m, cap, b->norm2_b, 0, "blocks.%lld.norm2.%s", i, "b") ||
                 list_add(ctx, m, cap, b->fc1_w, 1, "blocks.%lld.mlp.%s", i, "fc1.w") ||
                 list_add(ctx, m, cap, b->fc1_b, 0, "blocks.%lld.mlp.%s", i, "fc1.b") ||
                 list_add(ctx, m, cap, b->fc2_w, 1, "blocks.%lld.mlp.%s", i, "fc2.w") ||
                 list_add(ctx, m, cap, b->fc2_b, 0, "blocks.%lld.mlp.%s", i, "fc2.b");
    }
    if (!rc)
        rc = list_add(ctx, m, cap, m->norm_g, 0, "norm.g", -1, NULL) ||
             list_add(ctx, m, cap, m->norm_b, 0, "norm.b", -1, NULL) ||
             list_add(ctx, m, cap, m->head_w, 1, "head.w", -1, NULL) ||
             list_add(ctx, m, cap, m->head_b, 0, "head.b", -1, NULL);
    return rc ? TTT_ERR : TTT_OK;
}

/* ---- init / free ---------------------------------------------------------------------------- */

/* A zero-filled parameter (ttt_param fills with 0), set to `fill` if nonzero. */
static ttt_tensor *param(ttt_ctx *ctx, ttt_dtype dt, int ndim, const int64_t *shape, const char *name, double fill) {
    ttt_tensor *p = ttt_param(ctx, dt, ndim, shape, name);
    if (p && fill != 0 && ttt_fill(ctx, p, fill) != TTT_OK) return NULL;
    return p;
}

static int init_block(ttt_ctx *ctx, const ttt_vit_config *c, ttt_dtype dt, ttt_vit_block *b) {
    const int64_t D = c->dim, R = c->mlp_ratio * c->dim;
    const double xavier = sqrt(6.0 / (double)(D + R));
    if (!(b->norm1_g = param(ctx, dt, TTT_DIMS(D), "vit.norm1.g", 1)) ||
        !(b->norm1_b = param(ctx, dt, TTT_DIMS(D), "vit.norm1.b", 0)))
        return TTT_ERR;
    if (ttt_mttt_init(ctx, &b->seq, &c->seq, dt) != TTT_OK) return TTT_ERR;
    if (!(b->norm2_g = param(ctx, dt, TTT_DIMS(D), "vit.norm2.g", 1)) ||
        !(b->norm2_b = param(ctx, dt, TTT_DIMS(D), "vit.norm2.b", 0)) ||
        !(b->fc1_w = param(ctx, dt, TTT_DIMS(D, R), "vit.fc1.w", 0)) || init_uniform(ctx, b->fc1_w, xavier) ||
        !(b->fc1_b = param(ctx, dt, TTT_DIMS(R), "vit.fc1.b", 0)) ||
        !(b->fc2_w = param(ctx, dt, TTT_DIMS(R, D), "vit.fc2.w", 0)) || init_uniform(ctx, b->fc2_w, xavier) ||
        !(b->fc2_b = param(ctx, dt, TTT_DIMS(D), "vit.fc2.b", 0)))
        return TTT_ERR;
    return TTT_OK;
}

int ttt_vit_init(ttt_ctx *ctx, ttt_vit *m, const ttt_vit_config *cfg, ttt_dtype dt) {
    if (!ctx) return TTT_ERR;
    if (!m || !cfg) return ttt__set_error(ctx, "vit_init: model and config must not be NULL");
    *m = (ttt_vit){0};
    if (check_config(ctx, "vit_init", cfg) != TTT_OK) return TTT_ERR;
    if (dt != TTT_F32 && dt != TTT_F64)
        return ttt__set_error(ctx, "vit_init: parameters must be f32 or f64, not %s", ttt_dtype_name(dt));
    m->cfg = *cfg;
    m->cfg.seq.dim = cfg->dim;
    m->cfg.seq.heads = cfg->heads;
    const ttt_vit_config *c = &m->cfg;
    const int64_t D = c->dim, n = c->n_tokens;
    int rc = TTT_OK;
    m->blocks = calloc((size_t)c->depth, sizeof *m->blocks);
    if (!m->blocks) rc = ttt__set_error(ctx, "vit_init: out of host memory");
    if (!rc && (!(m->embed_w = param(ctx, dt, TTT_DIMS(c->token_dim, D), "vit.embed.w", 0)) ||
                init_trunc_normal(ctx, m->embed_w, 0.02) || !(m->embed_b = param(ctx, dt, TTT_DIMS(D), "vit.embed.b", 0))))
        rc = TTT_ERR;
    if (!rc && c->pos == TTT_VIT_POS_LEARNED &&
        (!(m->pos = param(ctx, dt, TTT_DIMS(n, D), "vit.pos", 0)) || init_trunc_normal(ctx, m->pos, 0.02)))
        rc = TTT_ERR;
    if (!rc && c->pos == TTT_VIT_POS_SINCOS &&
        (!(m->pos = ttt_persistent(ctx, dt, TTT_DIMS(n, D), "vit.pos")) || init_sincos(ctx, m->pos, n, D)))
        rc = TTT_ERR;
    for (int64_t i = 0; !rc && i < c->depth; i++) rc = init_block(ctx, c, dt, &m->blocks[i]);
    if (!rc && (!(m->norm_g = param(ctx, dt, TTT_DIMS(D), "vit.norm.g", 1)) ||
                !(m->norm_b = param(ctx, dt, TTT_DIMS(D), "vit.norm.b", 0)) ||
                !(m->head_w = param(ctx, dt, TTT_DIMS(D, c->classes), "vit.head.w", 0)) ||
                init_trunc_normal(ctx, m->head_w, 0.02) ||
                !(m->head_b = param(ctx, dt, TTT_DIMS(c->classes), "vit.head.b", 0))))
        rc = TTT_ERR;
    if (!rc) rc = build_list(ctx, m);
    if (rc) {
        ttt_vit_free(ctx, m);
        return TTT_ERR;
    }
    return TTT_OK;
}

void ttt_vit_free(ttt_ctx *ctx, ttt_vit *m) {
    if (!ctx || !m) return;
    ttt_tensor *own[] = {m->embed_w, m->embed_b, m->pos, m->norm_g, m->norm_b, m->head_w, m->head_b};
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++) ttt_persistent_free(ctx, own[i]);
    for (int64_t i = 0; m->blocks && i < m->cfg.depth; i++) {
        ttt_vit_block *b = &m->blocks[i];
        ttt_tensor *bt[] = {b->norm1_g, b->norm1_b, b->norm2_g, b->norm2_b, b->fc1_w, b->fc1_b, b->fc2_w, b->fc2_b};
        for (size_t j = 0; j < sizeof bt / sizeof bt[0]; j++) ttt_persistent_free(ctx, bt[j]);
        ttt_mttt_free(ctx, &b->seq);
    }
    for (int i = 0; m->names && i < m->n_params; i++) free(m->names[i]);
    free(m->blocks);
    free(m->params);
    free(m->names);
    free(m->decay);
    *m = (ttt_vit){0};
}

ttt_tensor *ttt_vit_param(const ttt_vit *m, const char *name) {
    for (int i = 0; m && name && i < m->n_params; i++)
        if (!strcmp(m->names[i], name)) return m->params[i];
    return NULL;
}

/* ---- forward ---------------------------------------------------------------------------------- */

/* A different SGD split per block from one per-step seed (splitmix64 of seed and block). */
static uint64_t block_seed(uint64_t seed, int64_t block) {
    uint64_t z = seed + 0x9E3779B97F4A7C15ull * (uint64_t)(block + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static ttt_tensor *linear(ttt_ctx *ctx, ttt_tensor *x, ttt_tensor *w, ttt_tensor *b) {
    return ttt_add(ctx, ttt_matmul(ctx, x, w, 0, 0), b);
}

static ttt_tensor *block_forward(ttt_ctx *ctx, const ttt_vit *m, int64_t i, ttt_tensor *x,
                                 const ttt_vit_run_opts *opts) {
    const ttt_vit_block *b = &m->blocks[i];
    ttt_mttt_run_opts so = {0};
    if (opts) {
        so.seed = block_seed(opts->seed, i);
        so.checkpoint = opts->checkpoint;
        if (opts->inner_loss && ttt_vit_has_inner_loop(&m->cfg))
            so.inner_loss = opts->inner_loss + i * (m->cfg.seq.steps + 1);
    }
    ttt_tensor *z = ttt_mttt_forward(ctx, &b->seq, ttt_layer_norm(ctx, x, b->norm1_g, b->norm1_b, LN_EPS), &so);
    x = ttt_add(ctx, x, z);
    ttt_tensor *h = ttt_layer_norm(ctx, x, b->norm2_g, b->norm2_b, LN_EPS);
    h = linear(ctx, ttt_gelu(ctx, linear(ctx, h, b->fc1_w, b->fc1_b)), b->fc2_w, b->fc2_b);
    return ttt_add(ctx, x, h);
}

ttt_tensor *ttt_vit_forward(ttt_ctx *ctx, const ttt_vit *m, ttt_tensor *tokens, const ttt_vit_run_opts *opts) {
    static const char fn[] = "vit_forward";
    if (!ctx || !tokens) return NULL;
    if (!m) return ttt__set_error(ctx, "%s: model must not be NULL", fn), NULL;
    if (check_config(ctx, fn, &m->cfg) != TTT_OK) return NULL;
    if (!m->embed_w || !m->blocks || !m->head_w || !m->pos)
        return ttt__set_error(ctx, "%s: the model is not initialised (call ttt_vit_init)", fn), NULL;
    const ttt_vit_config *c = &m->cfg;
    char s[96];
    if (tokens->ndim != 3 || tokens->shape[0] < 1 || tokens->shape[1] != c->n_tokens ||
        tokens->shape[2] != c->token_dim)
        return ttt__set_error(ctx, "%s: tokens %s must be [B, %lld, %lld] with B >= 1", fn,
                              ttt_shape_str(tokens, s, sizeof s), (long long)c->n_tokens, (long long)c->token_dim),
               NULL;
    if (tokens->dtype != m->embed_w->dtype)
        return ttt__set_error(ctx, "%s: tokens are %s but the parameters are %s", fn, ttt_dtype_name(tokens->dtype),
                              ttt_dtype_name(m->embed_w->dtype)),
               NULL;
    ttt_tensor *x = ttt_add(ctx, linear(ctx, tokens, m->embed_w, m->embed_b), m->pos);
    for (int64_t i = 0; x && i < c->depth; i++) x = block_forward(ctx, m, i, x, opts);
    static const int tokens_axis[1] = {1};
    x = ttt_mean(ctx, ttt_layer_norm(ctx, x, m->norm_g, m->norm_b, LN_EPS), 1, tokens_axis, 0);
    return linear(ctx, x, m->head_w, m->head_b);
}
