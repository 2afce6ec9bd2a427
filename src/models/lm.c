/* The decoder-only Transformer language model (see include/ttt/lm.h). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../core/engine_private.h"
#include "ttt/autodiff.h"
#include "ttt/checkpoint.h"
#include "ttt/train.h" /* ttt_kv_get, ttt_format_double: the stored-config helpers */
#include "ttt/lm.h"
#include "ttt/ops.h"
#include "lm_internal.h"

/* Sizes beyond any practical use are refused, so products of them cannot overflow. */
enum { MAX_VOCAB = 1 << 24, MAX_DIM = 1 << 16, MAX_DEPTH = 1024, MAX_HIDDEN = 1 << 20 };
static const int64_t MAX_WINDOW = (int64_t)1 << 40;
/* Logits are formed for about this many elements at a time (64 MB in f32). */
static const int64_t LOGIT_CHUNK = (int64_t)1 << 26; /* 256 MiB of f32 logits: head matmuls of ~1K rows run near the bf16 peak */
/* Cached decoding runs a long prompt in pieces of at most this many tokens. */
static const int64_t DECODE_CHUNK = 512;

static const struct {
    const char *name;
    int64_t dim, depth, heads, hidden;
    int64_t window;      /* -swa and -e2e */
    int64_t e2e_hidden;  /* every MLP's width in -e2e, for the baseline's parameter count */
    int64_t e2e_chunk;   /* b */
} PRESETS[] = {
    {"tiny", 64, 2, 4, 172, 256, 116, 128},
    {"small", 256, 4, 4, 688, 256, 552, 128},
    {"125m", 768, 12, 12, 2048, 8192, 1664, 1024},
    {"350m", 1024, 24, 16, 2816, 8192, 2304, 1024},
    {"760m", 1536, 24, 16, 4096, 8192, 3328, 1024},
};

int ttt_lm_preset(const char *name, int64_t vocab, ttt_lm_config *out, char *err, size_t err_len) {
    if (!name || !out) return ttt__errbuf(err, err_len, "lm_preset: name and output must not be NULL");
    const char *dash = strrchr(name, '-');
    const size_t base_len = dash ? (size_t)(dash - name) : strlen(name);
    const char *kind = dash ? dash + 1 : "";
    if (*kind && strcmp(kind, "fa") && strcmp(kind, "swa") && strcmp(kind, "e2e"))
        return ttt__errbuf(err, err_len, "lm_preset: unknown preset '%s' (a size: tiny, small, 125m, 350m, 760m; "
                           "optionally -fa, -swa or -e2e)", name);
    for (size_t i = 0; i < sizeof PRESETS / sizeof PRESETS[0]; i++) {
        if (strlen(PRESETS[i].name) != base_len || strncmp(name, PRESETS[i].name, base_len)) continue;
        *out = (ttt_lm_config){.vocab = vocab, .dim = PRESETS[i].dim, .depth = PRESETS[i].depth,
                               .heads = PRESETS[i].heads, .mlp_hidden = PRESETS[i].hidden, .qk_norm = 1,
                               .rope_theta = 10000.0, .norm_eps = 1e-6, .init_std = 0.02};
        if (*kind) out->rope_theta = 500000.0;
        if (!strcmp(kind, "swa") || !strcmp(kind, "e2e")) out->window = PRESETS[i].window;
        if (!strcmp(kind, "e2e")) {
            out->prime_blocks = out->depth / 4 > 0 ? out->depth / 4 : 1;
            out->mlp_hidden = out->prime_hidden = PRESETS[i].e2e_hidden;
            out->inner_chunk = PRESETS[i].e2e_chunk;
            out->inner_clip = 1.0;
        }
        return TTT_OK;
    }
    return ttt__errbuf(err, err_len, "lm_preset: unknown preset '%s' (a size: tiny, small, 125m, 350m, 760m; "
                       "optionally -fa, -swa or -e2e)", name);
}

static int64_t prime_width(const ttt_lm_config *c) { return c->prime_hidden > 0 ? c->prime_hidden : c->mlp_hidden; }

int64_t ttt_lm_param_count(const ttt_lm_config *c) {
    if (!c) return 0;
    /* beyond the limits ttt_lm_init enforces the products below could overflow: no count */
    if (c->vocab < 0 || c->vocab > MAX_VOCAB || c->dim < 0 || c->dim > MAX_DIM || c->depth < 0 || c->depth > MAX_DEPTH ||
        c->heads < 0 || c->mlp_hidden < 0 || c->mlp_hidden > MAX_HIDDEN || c->prime_blocks < 0 ||
        c->prime_blocks > MAX_DEPTH || c->prime_hidden < 0 || c->prime_hidden > MAX_HIDDEN)
        return -1;
    const int64_t D = c->dim, hd = c->heads > 0 ? D / c->heads : 0;
    int64_t block = 4 * D + 4 * D * D + 3 * D * c->mlp_hidden + (c->qk_norm ? 2 * hd : 0);
    return c->vocab * D + c->depth * block + c->prime_blocks * (2 * D + 3 * D * prime_width(c)) + D;
}

static int check_config(ttt_ctx *ctx, const char *fn, const ttt_lm_config *c) {
    struct {
        const char *name;
        int64_t v, lo, hi;
    } sizes[] = {
        {"vocab", c->vocab, 2, MAX_VOCAB},          {"dim", c->dim, 2, MAX_DIM},
        {"depth", c->depth, 1, MAX_DEPTH},          {"heads", c->heads, 1, MAX_DIM},
        {"mlp_hidden", c->mlp_hidden, 1, MAX_HIDDEN}, {"window", c->window, 0, MAX_WINDOW},
        {"prime_blocks", c->prime_blocks, 0, c->depth}, {"prime_hidden", c->prime_hidden, 0, MAX_HIDDEN},
    };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (sizes[i].v < sizes[i].lo || sizes[i].v > sizes[i].hi)
            return ttt__set_error(ctx, "%s: %s = %lld must be in [%lld, %lld]", fn, sizes[i].name,
                                  (long long)sizes[i].v, (long long)sizes[i].lo, (long long)sizes[i].hi);
    if (c->dim % c->heads || (c->dim / c->heads) % 2)
        return ttt__set_error(ctx, "%s: dim %lld must split into %lld heads of even size (RoPE)", fn,
                              (long long)c->dim, (long long)c->heads);
    if (!(c->rope_theta > 1) || !isfinite(c->rope_theta))
        return ttt__set_error(ctx, "%s: rope_theta %g must be a finite number > 1", fn, c->rope_theta);
    if (!(c->norm_eps > 0) || !(c->norm_eps < 1))
        return ttt__set_error(ctx, "%s: norm_eps %g must be in (0, 1)", fn, c->norm_eps);
    if (!(c->init_std > 0) || !(c->init_std < 10))
        return ttt__set_error(ctx, "%s: init_std %g must be in (0, 10)", fn, c->init_std);
    if (c->qk_norm != 0 && c->qk_norm != 1) return ttt__set_error(ctx, "%s: qk_norm must be 0 or 1", fn);
    if (c->inner_chunk < 0 || c->inner_chunk > MAX_WINDOW)
        return ttt__set_error(ctx, "%s: inner_chunk %lld must be in [0, 2^40]", fn, (long long)c->inner_chunk);
    if (!(c->inner_clip >= 0) || !isfinite(c->inner_clip))
        return ttt__set_error(ctx, "%s: inner_clip %g must be a finite number >= 0", fn, c->inner_clip);
    if (c->inner_chunk > 0 && (c->prime_blocks < 1 || c->window < 2))
        return ttt__set_error(ctx, "%s: test-time training (inner_chunk %lld) needs prime blocks (prime_blocks %lld) "
                              "and a sliding window of at least 2 (window %lld)", fn, (long long)c->inner_chunk,
                              (long long)c->prime_blocks, (long long)c->window);
    return TTT_OK;
}

/* ---- parameters ----------------------------------------------------------------------------- */

/* A persistent parameter: filled with `fill` when std == 0, else N(0, std^2). */
static ttt_tensor *param(ttt_ctx *ctx, ttt_dtype dt, int ndim, const int64_t *shape, const char *name, double fill,
                         double std) {
    ttt_tensor *p = ttt_param(ctx, dt, ndim, shape, name);
    if (!p) return NULL;
    ttt_mark_t m = ttt_mark(ctx);
    int rc = std > 0 ? ttt_assign(ctx, p, ttt_randn(ctx, dt, ndim, shape, std)) : ttt_fill(ctx, p, fill);
    ttt_release(ctx, m);
    return rc == TTT_OK ? p : NULL;
}

static int list_add(ttt_ctx *ctx, ttt_lm *m, int cap, ttt_tensor *t, int decay, const char *fmt, long long i) {
    if (!t) return TTT_OK; /* an absent optional tensor (no qk_norm, no prime MLP) */
    if (m->n_params >= cap) return ttt__set_error(ctx, "lm_init: parameter list overflow (internal)");
    char buf[160];
    snprintf(buf, sizeof buf, fmt, i);
    if (!(m->names[m->n_params] = malloc(strlen(buf) + 1))) return ttt__set_error(ctx, "lm_init: out of host memory");
    strcpy(m->names[m->n_params], buf);
    m->params[m->n_params] = t;
    m->decay[m->n_params] = decay;
    m->n_params++;
    return TTT_OK;
}

static int build_list(ttt_ctx *ctx, ttt_lm *m) {
    const int cap = 2 + (int)m->cfg.depth * 18;
    m->params = calloc((size_t)cap, sizeof *m->params);
    m->names = calloc((size_t)cap, sizeof *m->names);
    m->decay = calloc((size_t)cap, sizeof *m->decay);
    if (!m->params || !m->names || !m->decay) return ttt__set_error(ctx, "lm_init: out of host memory");
    if (list_add(ctx, m, cap, m->embed, 1, "model.embed_tokens.weight", 0)) return TTT_ERR;
    for (int64_t i = 0; i < m->cfg.depth; i++) {
        const ttt_lm_block *b = &m->blocks[i];
        const struct {
            ttt_tensor *t;
            int decay;
            const char *fmt;
        } items[] = {
            {b->input_norm, 0, "model.layers.%lld.input_layernorm.weight"},
            {b->q, 1, "model.layers.%lld.self_attn.q_proj.weight"},
            {b->k, 1, "model.layers.%lld.self_attn.k_proj.weight"},
            {b->v, 1, "model.layers.%lld.self_attn.v_proj.weight"},
            {b->o, 1, "model.layers.%lld.self_attn.o_proj.weight"},
            {b->q_norm, 0, "model.layers.%lld.self_attn.q_norm.weight"},
            {b->k_norm, 0, "model.layers.%lld.self_attn.k_norm.weight"},
            {b->post_attn_norm, 0, "model.layers.%lld.post_attention_layernorm.weight"},
            {b->pre_prime_norm, 0, "model.layers.%lld.pre_prime_layernorm.weight"},
            {b->prime_gate, 1, "model.layers.%lld.prime_mlp.gate_proj.weight"},
            {b->prime_up, 1, "model.layers.%lld.prime_mlp.up_proj.weight"},
            {b->prime_down, 1, "model.layers.%lld.prime_mlp.down_proj.weight"},
            {b->post_prime_norm, 0, "model.layers.%lld.post_prime_layernorm.weight"},
            {b->pre_mlp_norm, 0, "model.layers.%lld.pre_feedforward_layernorm.weight"},
            {b->gate, 1, "model.layers.%lld.mlp.gate_proj.weight"},
            {b->up, 1, "model.layers.%lld.mlp.up_proj.weight"},
            {b->down, 1, "model.layers.%lld.mlp.down_proj.weight"},
            {b->post_mlp_norm, 0, "model.layers.%lld.post_feedforward_layernorm.weight"},
        };
        for (size_t j = 0; j < sizeof items / sizeof items[0]; j++)
            if (list_add(ctx, m, cap, items[j].t, items[j].decay, items[j].fmt, (long long)i)) return TTT_ERR;
    }
    return list_add(ctx, m, cap, m->norm, 0, "model.norm.weight", 0);
}

/* A SwiGLU MLP's three maps: gate, up [F, D], down [D, F]. */
static int init_swiglu(ttt_ctx *ctx, ttt_dtype dt, int64_t D, int64_t F, double std, double out_std, ttt_tensor **gate,
                       ttt_tensor **up, ttt_tensor **down) {
    return (*gate = param(ctx, dt, TTT_DIMS(F, D), "lm.gate", 0, std)) &&
                   (*up = param(ctx, dt, TTT_DIMS(F, D), "lm.up", 0, std)) &&
                   (*down = param(ctx, dt, TTT_DIMS(D, F), "lm.down", 0, out_std))
               ? TTT_OK
               : TTT_ERR;
}

static int init_block(ttt_ctx *ctx, const ttt_lm_config *c, ttt_dtype dt, int64_t i, ttt_lm_block *b) {
    const int64_t D = c->dim, hd = D / c->heads;
    const double std = c->init_std, out_std = c->init_std / sqrt(2.0 * (double)c->depth);
    if (!(b->input_norm = param(ctx, dt, TTT_DIMS(D), "lm.input_norm", 1, 0)) ||
        !(b->q = param(ctx, dt, TTT_DIMS(D, D), "lm.q", 0, std)) ||
        !(b->k = param(ctx, dt, TTT_DIMS(D, D), "lm.k", 0, std)) ||
        !(b->v = param(ctx, dt, TTT_DIMS(D, D), "lm.v", 0, std)) ||
        !(b->o = param(ctx, dt, TTT_DIMS(D, D), "lm.o", 0, out_std)))
        return TTT_ERR;
    if (c->qk_norm && (!(b->q_norm = param(ctx, dt, TTT_DIMS(hd), "lm.q_norm", 1, 0)) ||
                       !(b->k_norm = param(ctx, dt, TTT_DIMS(hd), "lm.k_norm", 1, 0))))
        return TTT_ERR;
    if (!(b->post_attn_norm = param(ctx, dt, TTT_DIMS(D), "lm.post_attn_norm", 1, 0))) return TTT_ERR;
    if (i >= c->depth - c->prime_blocks &&
        (!(b->pre_prime_norm = param(ctx, dt, TTT_DIMS(D), "lm.pre_prime_norm", 1, 0)) ||
         init_swiglu(ctx, dt, D, prime_width(c), std, out_std, &b->prime_gate, &b->prime_up, &b->prime_down) ||
         !(b->post_prime_norm = param(ctx, dt, TTT_DIMS(D), "lm.post_prime_norm", 1, 0))))
        return TTT_ERR;
    if (!(b->pre_mlp_norm = param(ctx, dt, TTT_DIMS(D), "lm.pre_mlp_norm", 1, 0)) ||
        init_swiglu(ctx, dt, D, c->mlp_hidden, std, out_std, &b->gate, &b->up, &b->down) ||
        !(b->post_mlp_norm = param(ctx, dt, TTT_DIMS(D), "lm.post_mlp_norm", 1, 0)))
        return TTT_ERR;
    return TTT_OK;
}

int ttt_lm_init(ttt_ctx *ctx, ttt_lm *m, const ttt_lm_config *cfg, ttt_dtype dt) {
    if (!ctx) return TTT_ERR;
    if (!m || !cfg) return ttt__set_error(ctx, "lm_init: model and config must not be NULL");
    *m = (ttt_lm){0};
    if (check_config(ctx, "lm_init", cfg) != TTT_OK) return TTT_ERR;
    if (dt != TTT_F32 && dt != TTT_F64)
        return ttt__set_error(ctx, "lm_init: parameters must be f32 or f64, not %s", ttt_dtype_name(dt));
    m->cfg = *cfg;
    m->compute = dt;
    const ttt_lm_config *c = &m->cfg;
    int rc = TTT_OK;
    if (!(m->blocks = calloc((size_t)c->depth, sizeof *m->blocks))) rc = ttt__set_error(ctx, "lm_init: out of host memory");
    if (!rc && !(m->embed = param(ctx, dt, TTT_DIMS(c->vocab, c->dim), "lm.embed", 0, c->init_std))) rc = TTT_ERR;
    for (int64_t i = 0; !rc && i < c->depth; i++) rc = init_block(ctx, c, dt, i, &m->blocks[i]);
    if (!rc && !(m->norm = param(ctx, dt, TTT_DIMS(c->dim), "lm.norm", 1, 0))) rc = TTT_ERR;
    if (!rc) rc = build_list(ctx, m);
    if (rc) {
        ttt_lm_free(ctx, m);
        return TTT_ERR;
    }
    return TTT_OK;
}

void ttt_lm_free(ttt_ctx *ctx, ttt_lm *m) {
    if (!ctx || !m) return;
    ttt_persistent_free(ctx, m->embed);
    ttt_persistent_free(ctx, m->norm);
    for (int64_t i = 0; m->blocks && i < m->cfg.depth; i++) {
        ttt_lm_block *b = &m->blocks[i];
        ttt_tensor *bt[] = {b->input_norm, b->q, b->k, b->v, b->o, b->q_norm, b->k_norm, b->post_attn_norm,
                            b->pre_prime_norm, b->prime_gate, b->prime_up, b->prime_down, b->post_prime_norm,
                            b->pre_mlp_norm, b->gate, b->up, b->down, b->post_mlp_norm};
        for (size_t j = 0; j < sizeof bt / sizeof bt[0]; j++) ttt_persistent_free(ctx, bt[j]);
    }
    for (int i = 0; m->names && i < m->n_params; i++) free(m->names[i]);
    free(m->blocks);
    free(m->params);
    free(m->names);
    free(m->decay);
    *m = (ttt_lm){0};
}

ttt_tensor *ttt_lm_param(const ttt_lm *m, const char *name) {
    for (int i = 0; m && name && i < m->n_params; i++)
        if (!strcmp(m->names[i], name)) return m->params[i];
    return NULL;
}

/* ---- forward -------------------------------------------------------------------------------- */

static ttt_tensor *linear(ttt_ctx *ctx, ttt_tensor *x, ttt_tensor *w) { return ttt_matmul(ctx, x, w, 0, 1); }

#define check_model ttt__lm_check_model

int ttt_lm_set_compute(ttt_ctx *ctx, ttt_lm *m, ttt_dtype dt) {
    if (!ctx) return TTT_ERR;
    if (check_model(ctx, "lm_set_compute", m)) return TTT_ERR;
    if (dt != TTT_BF16 && dt != m->embed->dtype)
        return ttt__set_error(ctx, "lm_set_compute: compute dtype %s must be bf16 or the parameters' %s",
                              ttt_dtype_name(dt), ttt_dtype_name(m->embed->dtype));
    if (dt == TTT_BF16 && ttt_ctx_device(ctx) != TTT_CUDA)
        return ttt__set_error(ctx, "lm_set_compute: bf16 compute needs a CUDA context (the CPU kernels are f32/f64)");
    m->compute = dt;
    return TTT_OK;
}

/* A weight (or any tensor) in the compute dtype: cast where it is used, so
 * its gradient returns to the master copy through the cast, in its dtype. */
ttt_tensor *ttt__lm_w(ttt_ctx *ctx, const ttt_lm *m, ttt_tensor *p) {
    return p && p->dtype != m->compute ? ttt_cast(ctx, p, m->compute) : p;
}
#define W ttt__lm_w

static ttt_tensor *swiglu(ttt_ctx *ctx, const ttt_lm *m, ttt_tensor *h, ttt_tensor *gate, ttt_tensor *up,
                          ttt_tensor *down) {
    return linear(ctx, ttt_mul(ctx, ttt_silu(ctx, linear(ctx, h, W(ctx, m, gate))), linear(ctx, h, W(ctx, m, up))),
                  W(ctx, m, down));
}

/* x + rms(f(rms(x; pre)); post) for an MLP sublayer. */
static ttt_tensor *mlp_sublayer(ttt_ctx *ctx, const ttt_lm *m, ttt_tensor *x, ttt_tensor *pre, ttt_tensor *gate,
                                ttt_tensor *up, ttt_tensor *down, ttt_tensor *post) {
    const double eps = m->cfg.norm_eps;
    ttt_tensor *h = swiglu(ctx, m, ttt_rms_norm(ctx, x, W(ctx, m, pre), eps), gate, up, down);
    return ttt_add(ctx, x, ttt_rms_norm(ctx, h, W(ctx, m, post), eps));
}

/* One of q, k, v as [B, H, T, hd]: projected, split into heads, (q, k) normed and rotated. */
ttt_tensor *ttt__lm_heads(ttt_ctx *ctx, const ttt_lm *m, ttt_tensor *h, ttt_tensor *w, ttt_tensor *norm, int rotate,
                         int64_t pos0) {
    if (!h) return NULL;
    const ttt_lm_config *c = &m->cfg;
    const int64_t B = h->shape[0], T = h->shape[1];
    ttt_tensor *x = ttt_reshape(ctx, linear(ctx, h, W(ctx, m, w)), TTT_DIMS(B, T, c->heads, c->dim / c->heads));
    if (norm) x = ttt_rms_norm(ctx, x, W(ctx, m, norm), c->norm_eps);
    if (rotate) x = ttt_rope(ctx, x, 1, pos0, c->rope_theta);
    return ttt_permute(ctx, x, (const int[]){0, 2, 1, 3});
}

/* [B, H, T, hd] -> [B, T, D] */
static ttt_tensor *merge_heads(ttt_ctx *ctx, const ttt_lm_config *c, ttt_tensor *o) {
    if (!o) return NULL;
    const int64_t B = o->shape[0], T = o->shape[2];
    return ttt_reshape(ctx, ttt_contiguous(ctx, ttt_permute(ctx, o, (const int[]){0, 2, 1, 3})), TTT_DIMS(B, T, c->dim));
}

/* Everything of block b after attention produced o [B, H, T, hd]. */
ttt_tensor *ttt__lm_block_rest(ttt_ctx *ctx, const ttt_lm *m, const ttt_lm_block *b, ttt_tensor *x, ttt_tensor *o) {
    ttt_tensor *a = linear(ctx, merge_heads(ctx, &m->cfg, o), W(ctx, m, b->o));
    x = ttt_add(ctx, x, ttt_rms_norm(ctx, a, W(ctx, m, b->post_attn_norm), m->cfg.norm_eps));
    if (b->prime_gate)
        x = mlp_sublayer(ctx, m, x, b->pre_prime_norm, b->prime_gate, b->prime_up, b->prime_down, b->post_prime_norm);
    return mlp_sublayer(ctx, m, x, b->pre_mlp_norm, b->gate, b->up, b->down, b->post_mlp_norm);
}

/* One block of a pass over the blocks: x [B, T, D] -> block i's output. */
typedef ttt_tensor *(*block_step)(ttt_ctx *ctx, const ttt_lm *m, int64_t i, ttt_tensor *x, const void *user);

/* Runs every block over x and returns the final hidden states rms(x; norm).
 * When nothing is recorded (no-grad, or nothing requires grad), each block's
 * temporaries are released once its output is copied into one of two
 * buffers, so memory stays one block deep (long-context evaluation, decoding). */
static ttt_tensor *run_range(ttt_ctx *ctx, const ttt_lm *m, ttt_tensor *x, int64_t i0, int64_t i1, block_step step,
                             const void *user) {
    if (!x) return NULL;
    /* The parameters count too: with a frozen embedding x has no graph, yet the blocks' weights may need one. */
    const int record = ttt__recording(ctx, 1, &x) || ttt__recording(ctx, m->n_params, m->params);
    ttt_tensor *buf[2] = {NULL, NULL};
    if (!record && !((buf[0] = ttt_new(ctx, x->dtype, 3, x->shape)) && (buf[1] = ttt_new(ctx, x->dtype, 3, x->shape))))
        return NULL;
    for (int64_t i = i0; x && i < i1; i++) {
        if (record) {
            x = step(ctx, m, i, x, user);
            continue;
        }
        ttt_tensor *dst = buf[i % 2];
        const ttt_mark_t mark = ttt_mark(ctx);
        ttt_tensor *y = step(ctx, m, i, x, user);
        if (!y || ttt__copy_into(ctx, dst, 0, 0, 1, y) != TTT_OK) return NULL;
        ttt_release(ctx, mark);
        x = dst;
    }
    return x;
}

static ttt_tensor *run_blocks(ttt_ctx *ctx, const ttt_lm *m, ttt_tensor *x, block_step step, const void *user) {
    return ttt_rms_norm(ctx, run_range(ctx, m, x, 0, m->cfg.depth, step, user), W(ctx, m, m->norm), m->cfg.norm_eps);
}

static ttt_tensor *forward_block(ttt_ctx *ctx, const ttt_lm *m, int64_t i, ttt_tensor *x, const void *user) {
    const ttt_lm_config *c = &m->cfg;
    const ttt_lm_block *b = &m->blocks[i];
    const int64_t pos0 = *(const int64_t *)user;
    ttt_tensor *h = ttt_rms_norm(ctx, x, W(ctx, m, b->input_norm), c->norm_eps);
    ttt_tensor *q = ttt__lm_heads(ctx, m, h, b->q, b->q_norm, 1, pos0), *k = ttt__lm_heads(ctx, m, h, b->k, b->k_norm, 1, pos0);
    ttt_tensor *v = ttt__lm_heads(ctx, m, h, b->v, NULL, 0, pos0);
    return ttt__lm_block_rest(ctx, m, b, x, ttt_attention(ctx, q, k, v, 1, c->window, 0.0));
}

int ttt__lm_check_model(ttt_ctx *ctx, const char *fn, const ttt_lm *m) {
    if (!m) return ttt__set_error(ctx, "%s: model must not be NULL", fn);
    if (!m->embed || !m->blocks || !m->norm)
        return ttt__set_error(ctx, "%s: the model is not initialised (call ttt_lm_init)", fn);
    return TTT_OK;
}

static int check_ids(ttt_ctx *ctx, const char *fn, const char *what, const ttt_tensor *ids) {
    char s[96];
    if (ids->dtype != TTT_I32 || ids->ndim != 2 || ids->shape[0] < 1 || ids->shape[1] < 1)
        return ttt__set_error(ctx, "%s: %s %s %s must be i32 [B, T] with B, T >= 1", fn, what,
                              ttt_dtype_name(ids->dtype), ttt_shape_str(ids, s, sizeof s));
    return TTT_OK;
}

ttt_tensor *ttt_lm_hidden(ttt_ctx *ctx, const ttt_lm *m, ttt_tensor *ids, int64_t pos0) {
    static const char fn[] = "lm_hidden";
    if (!ctx || !ids) return NULL;
    if (check_model(ctx, fn, m) || check_ids(ctx, fn, "ids", ids)) return NULL;
    if (pos0 < 0) return ttt__set_error(ctx, "%s: pos0 %lld must be >= 0", fn, (long long)pos0), NULL;
    return run_blocks(ctx, m, ttt_embedding(ctx, W(ctx, m, m->embed), ids), forward_block, &pos0);
}

int ttt__lm_check_pair(ttt_ctx *ctx, const char *fn, const ttt_tensor *ids, const ttt_tensor *targets) {
    if (check_ids(ctx, fn, "ids", ids) || check_ids(ctx, fn, "targets", targets)) return TTT_ERR;
    if (targets->shape[0] != ids->shape[0] || targets->shape[1] != ids->shape[1]) {
        char si[96], st[96];
        return ttt__set_error(ctx, "%s: targets %s and ids %s differ in shape", fn,
                              ttt_shape_str(targets, st, sizeof st), ttt_shape_str(ids, si, sizeof si));
    }
    return TTT_OK;
}

ttt_tensor *ttt__lm_prefix(ttt_ctx *ctx, const ttt_lm *m, ttt_tensor *ids, int64_t n_blocks) {
    int64_t pos0 = 0;
    return run_range(ctx, m, ttt_embedding(ctx, W(ctx, m, m->embed), ids), 0, n_blocks, forward_block, &pos0);
}

ttt_tensor *ttt_lm_logits(ttt_ctx *ctx, const ttt_lm *m, ttt_tensor *hidden) {
    if (!ctx || !hidden) return NULL;
    if (check_model(ctx, "lm_logits", m)) return NULL;
    if (hidden->ndim < 1 || hidden->shape[hidden->ndim - 1] != m->cfg.dim) {
        char s[96];
        return ttt__set_error(ctx, "lm_logits: hidden %s must end in dim %lld", ttt_shape_str(hidden, s, sizeof s),
                              (long long)m->cfg.dim),
               NULL;
    }
    /* computed in the compute dtype, returned in the parameters' (the loss's) */
    ttt_tensor *logits = linear(ctx, W(ctx, m, hidden), W(ctx, m, m->embed));
    return logits && logits->dtype != m->embed->dtype ? ttt_cast(ctx, logits, m->embed->dtype) : logits;
}

/* One chunk of positions: per-token losses of hidden [B, t, D] against
 * targets [B, t], through the tied head. Rematerialized in training so the
 * backward pass holds one chunk's logits at a time, not [B, T, V]. */
typedef struct {
    ttt_tensor *targets;
    ttt_dtype loss_dt;
    int64_t vocab; /* the head may have padding rows past it */
} chunk_args;

static int chunk_loss_fn(ttt_ctx *ctx, void *user, int n_in, ttt_tensor *const *in, int n_out, ttt_tensor **out) {
    (void)n_in, (void)n_out;
    const chunk_args *a = user;
    ttt_tensor *logits = ttt_matmul(ctx, in[0], in[1], 0, 1);
    if (logits && logits->shape[logits->ndim - 1] != a->vocab) logits = ttt_slice(ctx, logits, -1, 0, a->vocab, 1);
    if (logits && logits->dtype != a->loss_dt) logits = ttt_cast(ctx, logits, a->loss_dt);
    out[0] = ttt_cross_entropy_rows(ctx, logits, a->targets, -100);
    return out[0] ? TTT_OK : TTT_ERR;
}

ttt_tensor *ttt_lm_loss_chunked(ttt_ctx *ctx, const ttt_lm *m, ttt_tensor *ids, ttt_tensor *targets,
                                ttt_tensor **per_token, int64_t chunk) {
    static const char fn[] = "lm_loss";
    if (per_token) *per_token = NULL;
    if (!ctx || !ids || !targets) return NULL;
    if (check_model(ctx, fn, m) || ttt__lm_check_pair(ctx, fn, ids, targets)) return NULL;
    if (ttt_lm_is_e2e(m)) return ttt_lm_e2e_loss(ctx, m, ids, targets, 1.0, 0, per_token, NULL);
    if (chunk < 0) return ttt__set_error(ctx, "%s: chunk %lld must be >= 0", fn, (long long)chunk), NULL;
    const int64_t B = ids->shape[0], T = ids->shape[1], V = m->cfg.vocab;
    ttt_tensor *h = ttt_lm_hidden(ctx, m, ids, 0);
    if (!h) return NULL;
    if (chunk == 0) chunk = LOGIT_CHUNK / (B * V) > 1 ? LOGIT_CHUNK / (B * V) : 1;
    if (chunk > T) chunk = T;
    const int64_t n_chunks = (T + chunk - 1) / chunk;
    const int record = ttt__recording(ctx, 1, &h);
    const ttt_dtype loss_dt = m->embed->dtype; /* the loss is not computed in bf16 */
    /* The head in the compute dtype, cast once outside the rematerialized
     * chunks, with zero rows up to a multiple of 64: a logits row of V = 50257
     * elements is not 16-byte aligned, and cuBLAS then leaves the tensor-core
     * kernels for ones several times slower (the padding logits are sliced off
     * before the loss). */
    const int64_t V_pad = ttt_ctx_device(ctx) == TTT_CUDA ? (V + 63) / 64 * 64 : V; /* the CPU's BLAS has no such cliff */
    ttt_tensor *head = W(ctx, m, m->embed);
    if (head && V_pad != V)
        head = ttt_concat(ctx, 2, (ttt_tensor *[]){head, ttt_zeros(ctx, head->dtype, TTT_DIMS(V_pad - V, m->cfg.dim))}, 0);
    if (!head) return NULL;
    ttt_tensor *rows = NULL, **parts = NULL;
    if (record) parts = ttt__meta_alloc(ctx, sizeof(ttt_tensor *) * (size_t)n_chunks);
    else rows = ttt_new(ctx, loss_dt, TTT_DIMS(B, T));
    if (!parts && !rows) return NULL;
    for (int64_t j = 0; j < n_chunks; j++) {
        const int64_t t0 = j * chunk, t1 = t0 + chunk < T ? t0 + chunk : T;
        const ttt_mark_t mark = ttt_mark(ctx);
        ttt_tensor *hs = n_chunks == 1 ? h : ttt_slice(ctx, h, 1, t0, t1, 1);
        ttt_tensor *ts = n_chunks == 1 ? targets : ttt_slice(ctx, targets, 1, t0, t1, 1);
        ttt_tensor *r = NULL;
        if (record) {
            chunk_args *a = ttt__meta_alloc(ctx, sizeof *a); /* lives until the backward pass (step arena) */
            if (!a) return NULL;
            *a = (chunk_args){ts, loss_dt, V};
            if (ttt_checkpoint(ctx, chunk_loss_fn, a, 2, (ttt_tensor *const[]){hs, head}, 1, &r) != TTT_OK)
                return NULL;
        } else {
            chunk_args a = {ts, loss_dt, V};
            if (chunk_loss_fn(ctx, &a, 2, (ttt_tensor *const[]){hs, head}, 1, &r) != TTT_OK) return NULL;
        }
        if (!r) return NULL;
        if (record) parts[j] = r;
        else {
            if (ttt__copy_into(ctx, rows, 1, t0, 1, r) != TTT_OK) return NULL;
            ttt_release(ctx, mark);
        }
    }
    if (record) rows = n_chunks == 1 ? parts[0] : ttt_concat(ctx, (int)n_chunks, parts, 1);
    if (per_token) *per_token = rows;
    /* The mean is over the targets that count (ignore_index is the only negative one the rows accept); the count
     * is formed on the device, so the loss needs no host read (CUDA graphs, no sync per micro-batch). */
    ttt_tensor *counted = ttt_sum(ctx, ttt_ge(ctx, ttt_cast(ctx, targets, loss_dt), ttt_scalar(ctx, loss_dt, 0.0)),
                                  0, NULL, 0);
    return ttt_div(ctx, ttt_sum(ctx, rows, 0, NULL, 0), ttt_clamp(ctx, counted, 1.0, (double)(B * T)));
}

ttt_tensor *ttt_lm_loss(ttt_ctx *ctx, const ttt_lm *m, ttt_tensor *ids, ttt_tensor *targets, ttt_tensor **per_token) {
    return ttt_lm_loss_chunked(ctx, m, ids, targets, per_token, 0);
}

/* ---- KV cache ---------------------------------------------------------------------------------- */

int ttt_lm_cache_init(ttt_ctx *ctx, const ttt_lm *m, ttt_lm_cache *c, int64_t batch, int64_t max_len) {
    if (!ctx) return TTT_ERR;
    if (!c) return ttt__set_error(ctx, "lm_cache_init: cache must not be NULL");
    *c = (ttt_lm_cache){0};
    if (check_model(ctx, "lm_cache_init", m)) return TTT_ERR;
    const ttt_lm_config *mc = &m->cfg;
    if (mc->window == 0 && (max_len < 1 || max_len > MAX_WINDOW))
        return ttt__set_error(ctx, "lm_cache_init: max_len %lld must be in [1, 2^40] for full attention",
                              (long long)max_len);
    return ttt__lm_cache_init(ctx, m, c, batch, mc->window > 0 ? (mc->window > 1 ? mc->window - 1 : 1) : max_len);
}

int ttt__lm_cache_init(ttt_ctx *ctx, const ttt_lm *m, ttt_lm_cache *c, int64_t batch, int64_t capacity) {
    static const char fn[] = "lm_cache_init";
    *c = (ttt_lm_cache){0};
    const ttt_lm_config *mc = &m->cfg;
    if (batch < 1 || batch > (1 << 20)) return ttt__set_error(ctx, "%s: batch %lld must be in [1, 2^20]", fn, (long long)batch);
    c->batch = batch;
    c->capacity = capacity;
    c->k = calloc((size_t)mc->depth, sizeof *c->k);
    c->v = calloc((size_t)mc->depth, sizeof *c->v);
    if (!c->k || !c->v) {
        ttt_lm_cache_free(ctx, c);
        return ttt__set_error(ctx, "%s: out of host memory", fn);
    }
    c->k_depth = mc->depth;
    for (int64_t i = 0; i < mc->depth; i++) {
        const int64_t shape[4] = {batch, mc->heads, c->capacity, mc->dim / mc->heads};
        if (!(c->k[i] = ttt_persistent(ctx, m->compute, 4, shape, "lm.cache.k")) ||
            !(c->v[i] = ttt_persistent(ctx, m->compute, 4, shape, "lm.cache.v"))) {
            ttt_lm_cache_free(ctx, c);
            return TTT_ERR;
        }
    }
    return TTT_OK;
}

void ttt_lm_cache_free(ttt_ctx *ctx, ttt_lm_cache *c) {
    if (!ctx || !c) return;
    for (int64_t i = 0; i < c->k_depth; i++) {
        if (c->k) ttt_persistent_free(ctx, c->k[i]);
        if (c->v) ttt_persistent_free(ctx, c->v[i]);
    }
    free(c->k);
    free(c->v);
    *c = (ttt_lm_cache){0};
}

void ttt_lm_cache_reset(ttt_lm_cache *c) {
    if (c) c->len = 0;
}

typedef struct {
    ttt_lm_cache *cache;
    int64_t p0;                 /* position of the first new token */
    const ttt_lm_block *blocks; /* NULL: the model's (TTT-E2E passes its blocks with adapted prime weights) */
} decode_args;

/* Window: the ring's cached keys (or values) that the new tokens may see, in
 * position order, followed by the new ones kv [B, H, T, hd]. The ring holds
 * positions max(0, p0 - capacity) .. p0 - 1 at slot = position mod capacity;
 * once it has wrapped, the oldest sits at slot p0 mod capacity, so two slices
 * put them back in order. In order, ttt_attention's causal convention (the
 * queries are the last T keys) and its window do all the masking. */
static ttt_tensor *ring_in_order(ttt_ctx *ctx, const ttt_lm_cache *c, ttt_tensor *ring, int64_t p0, ttt_tensor *kv) {
    const int64_t cap = c->capacity, oldest = p0 <= cap ? 0 : p0 % cap, n_old = p0 <= cap ? p0 : cap;
    if (n_old == 0) return kv;
    if (oldest == 0) return ttt_concat(ctx, 2, (ttt_tensor *const[]){ttt_slice(ctx, ring, 2, 0, n_old, 1), kv}, 2);
    ttt_tensor *parts[3] = {ttt_slice(ctx, ring, 2, oldest, cap, 1), ttt_slice(ctx, ring, 2, 0, oldest, 1), kv};
    return ttt_concat(ctx, 3, parts, 2);
}

/* Writes the last capacity of the new keys (or values) kv [B, H, T, hd], at
 * positions p0 .. p0 + T - 1, into the ring: runs of consecutive slots. */
static int ring_store(ttt_ctx *ctx, const ttt_lm_cache *c, ttt_tensor *ring, int64_t p0, ttt_tensor *kv) {
    const int64_t T = kv->shape[2], cap = c->capacity;
    for (int64_t t = T > cap ? T - cap : 0; t < T;) {
        const int64_t slot = (p0 + t) % cap, n = T - t < cap - slot ? T - t : cap - slot;
        ttt_tensor *part = ttt_slice(ctx, kv, 2, t, t + n, 1);
        if (!part || ttt__copy_into(ctx, ring, 2, slot, 1, part) != TTT_OK) return TTT_ERR;
        t += n;
    }
    return TTT_OK;
}

static ttt_tensor *decode_block(ttt_ctx *ctx, const ttt_lm *m, int64_t i, ttt_tensor *x, const void *user) {
    const decode_args *a = user;
    const ttt_lm_config *mc = &m->cfg;
    const ttt_lm_block *b = a->blocks ? &a->blocks[i] : &m->blocks[i];
    ttt_lm_cache *c = a->cache;
    const int64_t p0 = a->p0, T = x->shape[1];
    ttt_tensor *h = ttt_rms_norm(ctx, x, W(ctx, m, b->input_norm), mc->norm_eps);
    ttt_tensor *q = ttt__lm_heads(ctx, m, h, b->q, b->q_norm, 1, p0), *k = ttt__lm_heads(ctx, m, h, b->k, b->k_norm, 1, p0);
    ttt_tensor *v = ttt__lm_heads(ctx, m, h, b->v, NULL, 0, p0);
    if (!q || !k || !v) return NULL;
    ttt_tensor *o;
    if (mc->window == 0) { /* slot = position: write the new keys, then attend over a view of the cache */
        if (ttt__copy_into(ctx, c->k[i], 2, p0, 1, k) || ttt__copy_into(ctx, c->v[i], 2, p0, 1, v)) return NULL;
        o = ttt_attention(ctx, q, ttt_slice(ctx, c->k[i], 2, 0, p0 + T, 1), ttt_slice(ctx, c->v[i], 2, 0, p0 + T, 1),
                          1, 0, 0.0);
    } else { /* read the ring before writing it: the slots about to be overwritten are still visible */
        o = ttt_attention(ctx, q, ring_in_order(ctx, c, c->k[i], p0, k), ring_in_order(ctx, c, c->v[i], p0, v), 1,
                          mc->window, 0.0);
        if (!o || ring_store(ctx, c, c->k[i], p0, k) || ring_store(ctx, c, c->v[i], p0, v)) return NULL;
    }
    return ttt__lm_block_rest(ctx, m, b, x, o);
}

ttt_tensor *ttt__lm_decode_range(ttt_ctx *ctx, const ttt_lm *m, ttt_lm_cache *c, const ttt_lm_block *blocks,
                                 ttt_tensor *x, int64_t i0, int64_t i1) {
    const decode_args a = {c, c->len, blocks};
    return run_range(ctx, m, x, i0, i1, decode_block, &a);
}

ttt_tensor *ttt__lm_ring_range(ttt_ctx *ctx, const ttt_lm_cache *c, ttt_tensor *ring, int64_t p, int64_t n) {
    const int64_t cap = c->capacity, s0 = p % cap;
    if (n <= 0 || n > cap || p < 0 || p + n > c->len || c->len - p > cap)
        return ttt__set_error(ctx, "lm ring: positions [%lld, %lld) are not held (len %lld, capacity %lld) (internal)",
                              (long long)p, (long long)(p + n), (long long)c->len, (long long)cap),
               NULL;
    if (s0 + n <= cap) return ttt_slice(ctx, ring, 2, s0, s0 + n, 1);
    return ttt_concat(ctx, 2, (ttt_tensor *const[]){ttt_slice(ctx, ring, 2, s0, cap, 1), ttt_slice(ctx, ring, 2, 0, s0 + n - cap, 1)}, 2);
}

ttt_tensor *ttt__lm_embed(ttt_ctx *ctx, const ttt_lm *m, ttt_tensor *ids) {
    return ttt_embedding(ctx, W(ctx, m, m->embed), ids);
}

ttt_tensor *ttt__lm_head(ttt_ctx *ctx, const ttt_lm *m, ttt_tensor *x) {
    return ttt_lm_logits(ctx, m, ttt_rms_norm(ctx, x, W(ctx, m, m->norm), m->cfg.norm_eps));
}

/* Logits of ids [B, T <= DECODE_CHUNK] after the cached positions; advances the cache. */
static ttt_tensor *decode_piece(ttt_ctx *ctx, const ttt_lm *m, ttt_lm_cache *c, ttt_tensor *ids) {
    const decode_args a = {c, c->len, NULL};
    ttt_tensor *out =
        ttt_lm_logits(ctx, m, run_blocks(ctx, m, ttt_embedding(ctx, W(ctx, m, m->embed), ids), decode_block, &a));
    if (out) c->len += ids->shape[1];
    return out;
}

ttt_tensor *ttt_lm_decode(ttt_ctx *ctx, const ttt_lm *m, ttt_lm_cache *c, ttt_tensor *ids) {
    static const char fn[] = "lm_decode";
    if (!ctx || !ids) return NULL;
    if (check_model(ctx, fn, m) || check_ids(ctx, fn, "ids", ids)) return NULL;
    if (!c || !c->k || !c->v || c->k_depth != m->cfg.depth || c->capacity < 1 || !c->k[0])
        return ttt__set_error(ctx, "%s: the cache is not initialised for this model (ttt_lm_cache_init)", fn), NULL;
    const int64_t B = ids->shape[0], T = ids->shape[1];
    const ttt_lm_config *mc = &m->cfg;
    const int64_t want_cap = mc->window > 1 ? mc->window - 1 : 1;
    if (c->k[0]->shape[1] != mc->heads || c->k[0]->shape[3] != mc->dim / mc->heads ||
        c->k[0]->dtype != m->compute || (mc->window > 0 && c->capacity != want_cap))
        return ttt__set_error(ctx, "%s: the cache was made for another model (ttt_lm_cache_init)", fn), NULL;
    if (B != c->batch)
        return ttt__set_error(ctx, "%s: ids have batch %lld but the cache was made for %lld", fn, (long long)B,
                              (long long)c->batch),
               NULL;
    if (mc->window == 0 && c->len + T > c->capacity)
        return ttt__set_error(ctx, "%s: %lld cached + %lld new tokens exceed the cache's capacity %lld", fn,
                              (long long)c->len, (long long)T, (long long)c->capacity),
               NULL;
    ttt_no_grad_begin(ctx);
    ttt_tensor *out = NULL;
    if (T <= DECODE_CHUNK) out = decode_piece(ctx, m, c, ids);
    else { /* a long prompt in pieces: each piece's temporaries are released once its logits are copied out */
        out = ttt_new(ctx, m->embed->dtype, TTT_DIMS(B, T, m->cfg.vocab));
        for (int64_t t0 = 0; out && t0 < T; t0 += DECODE_CHUNK) {
            const int64_t t1 = t0 + DECODE_CHUNK < T ? t0 + DECODE_CHUNK : T;
            const ttt_mark_t mark = ttt_mark(ctx);
            ttt_tensor *lg = decode_piece(ctx, m, c, ttt_contiguous(ctx, ttt_slice(ctx, ids, 1, t0, t1, 1)));
            if (!lg || ttt__copy_into(ctx, out, 1, t0, 1, lg) != TTT_OK) out = NULL;
            ttt_release(ctx, mark);
        }
    }
    ttt_no_grad_end(ctx);
    return out;
}

/* ---- the config as a string, and loading a checkpoint --------------------------------------------- */

int ttt_lm_config_format(const ttt_lm_config *c, char *buf, size_t n) {
    if (!c || !buf || n == 0) return TTT_ERR;
    char theta[32], eps[32], std[32], clip[32];
    ttt_format_double(theta, sizeof theta, c->rope_theta);
    ttt_format_double(eps, sizeof eps, c->norm_eps);
    ttt_format_double(std, sizeof std, c->init_std);
    ttt_format_double(clip, sizeof clip, c->inner_clip);
    const int w = snprintf(buf, n,
                           "vocab=%lld dim=%lld depth=%lld heads=%lld mlp_hidden=%lld window=%lld prime_blocks=%lld "
                           "prime_hidden=%lld qk_norm=%d rope_theta=%s norm_eps=%s init_std=%s inner_chunk=%lld "
                           "inner_clip=%s",
                           (long long)c->vocab, (long long)c->dim, (long long)c->depth, (long long)c->heads,
                           (long long)c->mlp_hidden, (long long)c->window, (long long)c->prime_blocks,
                           (long long)c->prime_hidden, c->qk_norm, theta, eps, std, (long long)c->inner_chunk, clip);
    return w > 0 && (size_t)w < n ? TTT_OK : TTT_ERR;
}

int ttt_lm_config_parse(const char *s, ttt_lm_config *c, char *err, size_t err_len) {
    if (!s || !c) return ttt__errbuf(err, err_len, "lm_config_parse: string and config must not be NULL");
    ttt_lm_preset("tiny", 0, c, NULL, 0); /* defaults of the optional keys */
    static const char *const ints[] = {"vocab",        "dim",   "depth",      "heads",      "mlp_hidden",
                                       "window",       "prime_blocks", "prime_hidden", "qk_norm", "inner_chunk"};
    int64_t q = 1, *iout[] = {&c->vocab, &c->dim, &c->depth, &c->heads, &c->mlp_hidden,
                              &c->window, &c->prime_blocks, &c->prime_hidden, &q, &c->inner_chunk};
    const int optional_from = 9; /* inner_chunk: older checkpoints predate TTT-E2E */
    char v[64], *end;
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        if (!ttt_kv_get(s, ints[i], v, sizeof v)) {
            if ((int)i >= optional_from) continue;
            return ttt__errbuf(err, err_len, "model config: missing %s", ints[i]);
        }
        errno = 0;
        const long long x = strtoll(v, &end, 10);
        if (x < 0 || errno || *end || end == v) return ttt__errbuf(err, err_len, "model config: bad %s '%s'", ints[i], v);
        *iout[i] = x;
    }
    c->qk_norm = q == 1;
    static const char *const dbls[] = {"rope_theta", "norm_eps", "init_std", "inner_clip"};
    double *dout[] = {&c->rope_theta, &c->norm_eps, &c->init_std, &c->inner_clip};
    for (size_t i = 0; i < 4; i++) {
        if (!ttt_kv_get(s, dbls[i], v, sizeof v)) {
            if (i >= 2) continue; /* init_std only initialises; inner_clip is newer */
            return ttt__errbuf(err, err_len, "model config: missing %s", dbls[i]);
        }
        const double x = strtod(v, &end);
        if (!isfinite(x) || *end || end == v) return ttt__errbuf(err, err_len, "model config: bad %s '%s'", dbls[i], v);
        *dout[i] = x;
    }
    return TTT_OK;
}

int ttt_lm_load(ttt_ctx *ctx, const char *path, int dtype, ttt_lm *m, int64_t *step, char *err, size_t err_len) {
    if (m) *m = (ttt_lm){0};
    if (step) *step = -1;
    if (!ctx || !path || !m) return ttt__errbuf(err, err_len, "lm_load: context, path and model must not be NULL");
    /* a run directory holds its checkpoint as model.safetensors */
    char file[4200];
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) snprintf(file, sizeof file, "%s/model.safetensors", path);
    else snprintf(file, sizeof file, "%s", path);
    char *json = NULL, buf[2048];
    if (ttt_load_safetensors(ctx, file, 0, NULL, &json) != TTT_OK) return ttt__errbuf(err, err_len, "%s", ttt_error(ctx));
    int rc = TTT_OK;
    if (!json || ttt_metadata_get(json, "format", buf, sizeof buf) != TTT_OK || strcmp(buf, "ttt-lm"))
        rc = ttt__errbuf(err, err_len, "%s is not a ttt lm checkpoint (no format=ttt-lm metadata)", file);
    ttt_lm_config c;
    char e[200];
    if (rc == TTT_OK && (ttt_metadata_get(json, "model", buf, sizeof buf) != TTT_OK ||
                         ttt_lm_config_parse(buf, &c, e, sizeof e) != TTT_OK))
        rc = ttt__errbuf(err, err_len, "%s: model metadata: %s", file, e[0] ? e : "missing");
    ttt_dtype dt = TTT_F32;
    if (rc == TTT_OK && dtype < 0 && ttt_metadata_get(json, "train", buf, sizeof buf) == TTT_OK) {
        char d[16];
        if (ttt_kv_get(buf, "dtype", d, sizeof d) && !strcmp(d, "f64")) dt = TTT_F64;
    } else if (dtype >= 0) dt = (ttt_dtype)dtype;
    if (rc == TTT_OK && step && ttt_metadata_get(json, "step", buf, sizeof buf) == TTT_OK) *step = atoll(buf);
    free(json);
    if (rc != TTT_OK) return rc;
    /* the config is the file's word: a small file claiming a huge model must not allocate it first
       (every parameter takes at least 2 bytes in the file, bf16) */
    const int64_t np = ttt_lm_param_count(&c);
    if (stat(file, &st) == 0 && np >= 0 && (uint64_t)np > (uint64_t)st.st_size / 2)
        return ttt__errbuf(err, err_len, "%s: its model metadata describes %lld parameters, more than the file's %lld "
                           "bytes can hold: a damaged or foreign file", file, (long long)np, (long long)st.st_size);
    if (ttt_lm_init(ctx, m, &c, dt) != TTT_OK) return ttt__errbuf(err, err_len, "%s: %s", file, ttt_error(ctx));
    ttt_named_tensor *nt = calloc((size_t)m->n_params, sizeof *nt);
    if (!nt) rc = ttt__errbuf(err, err_len, "lm_load: out of host memory");
    for (int i = 0; rc == TTT_OK && i < m->n_params; i++) nt[i] = (ttt_named_tensor){m->names[i], m->params[i]};
    if (rc == TTT_OK && ttt_load_safetensors(ctx, file, m->n_params, nt, NULL) != TTT_OK)
        rc = ttt__errbuf(err, err_len, "%s", ttt_error(ctx));
    free(nt);
    if (rc != TTT_OK) ttt_lm_free(ctx, m);
    return rc;
}
