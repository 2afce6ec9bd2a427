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
#include "ttt/mixers.h"
#include "ttt/ops.h"
#include "ttt/ttt_rnn.h"
#include "lm_internal.h"

/* Sizes beyond any practical use are refused, so products of them cannot overflow. */
enum { MAX_VOCAB = 1 << 24, MAX_DIM = 1 << 16, MAX_DEPTH = 1024, MAX_HIDDEN = 1 << 20 };
static const int64_t MAX_WINDOW = (int64_t)1 << 40;
/* Logits are formed for about this many elements at a time (64 MB in f32). */
static const double LOGIT_KEEP_BYTES = (double)(1 << 30); /* training: up to 1 GiB of logits kept, not recomputed */
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
    if (*kind && strcmp(kind, "fa") && strcmp(kind, "swa") && strcmp(kind, "e2e") && strcmp(kind, "kvb"))
        return ttt__errbuf(err, err_len, "lm_preset: unknown preset '%s' (a size: tiny, small, 125m, 350m, 760m; "
                           "optionally -fa, -swa, -e2e or -kvb)", name);
    for (size_t i = 0; i < sizeof PRESETS / sizeof PRESETS[0]; i++) {
        if (strlen(PRESETS[i].name) != base_len || strncmp(name, PRESETS[i].name, base_len)) continue;
        *out = (ttt_lm_config){.vocab = vocab, .dim = PRESETS[i].dim, .depth = PRESETS[i].depth,
                               .heads = PRESETS[i].heads, .mlp_hidden = PRESETS[i].hidden, .qk_norm = 1,
                               .rope_theta = 10000.0, .norm_eps = 1e-6, .init_std = 0.02, .ttt_mini_batch = 16};
        if (*kind) out->rope_theta = 500000.0;
        if (!strcmp(kind, "swa") || !strcmp(kind, "e2e") || !strcmp(kind, "kvb")) out->window = PRESETS[i].window;
        if (!strcmp(kind, "kvb")) out->mixer = TTT_LM_MIXER_TTT_KVB;
        if (!strcmp(kind, "e2e")) {
            out->prime_blocks = out->depth / 4 > 0 ? out->depth / 4 : 1;
            out->mlp_hidden = out->prime_hidden = PRESETS[i].e2e_hidden;
            out->inner_chunk = PRESETS[i].e2e_chunk;
            out->inner_clip = 1.0;
        }
        return TTT_OK;
    }
    return ttt__errbuf(err, err_len, "lm_preset: unknown preset '%s' (a size: tiny, small, 125m, 350m, 760m; "
                       "optionally -fa, -swa, -e2e or -kvb)", name);
}

static int64_t prime_width(const ttt_lm_config *c) { return c->prime_hidden > 0 ? c->prime_hidden : c->mlp_hidden; }

static ttt_rnn_config rnn_config(const ttt_lm_config *c);
static int has_attention(const ttt_lm_config *c) {
    return c->mixer == TTT_LM_MIXER_ATTENTION || c->mixer == TTT_LM_MIXER_TTT_KVB;
}
static int has_ttt(const ttt_lm_config *c) {
    return c->mixer == TTT_LM_MIXER_TTT_LINEAR || c->mixer == TTT_LM_MIXER_TTT_MLP || c->mixer == TTT_LM_MIXER_TTT_KVB;
}
/* The linear-time mixers (include/ttt/mixers.h), configured from the LM's width, heads and init. */
static ttt_linattn_config linattn_config(const ttt_lm_config *c) {
    ttt_linattn_config lc = ttt_linattn_config_default(c->dim, c->heads);
    lc.init_std = c->init_std, lc.out_std = c->init_std / sqrt(2.0 * (double)c->depth);
    return lc;
}
static ttt_gdn_config gdn_config(const ttt_lm_config *c) {
    ttt_gdn_config gc = ttt_gdn_config_default(c->dim, c->heads);
    gc.init_std = c->init_std, gc.out_std = c->init_std / sqrt(2.0 * (double)c->depth);
    return gc;
}
/* Mamba 2 with expand 2 and H = the LM's heads (head size 2 D / H), N = 64 */
static ttt_mamba2_config mamba2_config(const ttt_lm_config *c) {
    ttt_mamba2_config mc = ttt_mamba2_config_default(c->dim);
    mc.head_dim = c->heads > 0 ? 2 * c->dim / c->heads : 1;
    mc.init_std = c->init_std, mc.out_std = c->init_std / sqrt(2.0 * (double)c->depth);
    return mc;
}
static int has_conv(const ttt_lm_config *c) { return c->mixer != TTT_LM_MIXER_TTT_KVB && has_ttt(c) && c->ttt_backbone == TTT_RNN_MAMBA; }

int64_t ttt_lm_param_count(const ttt_lm_config *c) {
    if (!c) return 0;
    /* beyond the limits ttt_lm_init enforces the products below could overflow: no count */
    if (c->vocab < 0 || c->vocab > MAX_VOCAB || c->dim < 0 || c->dim > MAX_DIM || c->depth < 0 || c->depth > MAX_DEPTH ||
        c->heads < 0 || c->mlp_hidden < 0 || c->mlp_hidden > MAX_HIDDEN || c->prime_blocks < 0 ||
        c->prime_blocks > MAX_DEPTH || c->prime_hidden < 0 || c->prime_hidden > MAX_HIDDEN)
        return -1;
    const int64_t D = c->dim, hd = c->heads > 0 ? D / c->heads : 0;
    int64_t block = 4 * D + 3 * D * c->mlp_hidden;
    if (has_attention(c)) block += 4 * D * D + (c->qk_norm ? 2 * hd : 0);
    if (has_ttt(c)) {
        const ttt_rnn_config rc = rnn_config(c);
        block += ttt_rnn_param_count(&rc) + (c->mixer == TTT_LM_MIXER_TTT_KVB ? 2 * D : 0);
    }
    if (has_conv(c)) block += D + TTT_RNN_CONV * D + D;
    const ttt_linattn_config lc = linattn_config(c);
    const ttt_gdn_config gc = gdn_config(c);
    const ttt_mamba2_config mc = mamba2_config(c);
    if (c->mixer == TTT_LM_MIXER_LINEAR_ATTENTION) block += ttt_linattn_param_count(&lc);
    if (c->mixer == TTT_LM_MIXER_GATED_DELTANET) block += ttt_gdn_param_count(&gc);
    if (c->mixer == TTT_LM_MIXER_MAMBA2) block += ttt_mamba2_param_count(&mc);
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
    if (!ttt_lm_mixer_name(c->mixer)) return ttt__set_error(ctx, "%s: unknown mixer %d", fn, c->mixer);
    if (c->ttt_backbone != TTT_RNN_TRANSFORMER && c->ttt_backbone != TTT_RNN_MAMBA)
        return ttt__set_error(ctx, "%s: ttt_backbone %d must be 0 (transformer) or 1 (mamba)", fn, c->ttt_backbone);
    if (has_ttt(c) && (c->ttt_mini_batch < 1 || c->ttt_mini_batch > 4096))
        return ttt__set_error(ctx, "%s: ttt_mini_batch %lld must be in [1, 4096]", fn, (long long)c->ttt_mini_batch);
    if (!(c->ttt_base_lr >= 0) || !isfinite(c->ttt_base_lr))
        return ttt__set_error(ctx, "%s: ttt_base_lr %g must be a finite number >= 0", fn, c->ttt_base_lr);
    if (c->mixer == TTT_LM_MIXER_TTT_KVB && c->window < 1)
        return ttt__set_error(ctx, "%s: the ttt-kvb mixer runs TTT-MLP alongside sliding-window attention: it needs "
                              "a window (have %lld)", fn, (long long)c->window);
    if (c->mixer != TTT_LM_MIXER_ATTENTION && c->inner_chunk > 0)
        return ttt__set_error(ctx, "%s: TTT-E2E (inner_chunk %lld) runs on the attention mixer, not %s", fn,
                              (long long)c->inner_chunk, ttt_lm_mixer_name(c->mixer));
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

static int list_add_named(ttt_ctx *ctx, ttt_lm *m, int cap, ttt_tensor *t, int decay, const char *name) {
    if (!t) return TTT_OK; /* an absent optional tensor (no qk_norm, no prime MLP) */
    if (m->n_params >= cap) return ttt__set_error(ctx, "lm_init: parameter list overflow (internal)");
    if (!(m->names[m->n_params] = malloc(strlen(name) + 1))) return ttt__set_error(ctx, "lm_init: out of host memory");
    strcpy(m->names[m->n_params], name);
    m->params[m->n_params] = t;
    m->decay[m->n_params] = decay;
    m->n_params++;
    return TTT_OK;
}

static int list_add(ttt_ctx *ctx, ttt_lm *m, int cap, ttt_tensor *t, int decay, const char *fmt, long long i) {
    char buf[160];
    snprintf(buf, sizeof buf, fmt, i);
    return list_add_named(ctx, m, cap, t, decay, buf);
}

static int build_list(ttt_ctx *ctx, ttt_lm *m) {
    const int cap = 2 + (int)m->cfg.depth * (18 + 40);
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
        for (int j = 0; j < b->n_extra; j++) /* other mixers' tensors, named when registered */
            if (list_add_named(ctx, m, cap, b->extra[j], b->extra_decay[j], b->extra_names[j])) return TTT_ERR;
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

/* ---- the TTT mixers' parameters --------------------------------------------------------------- */

static ttt_rnn_config rnn_config(const ttt_lm_config *c) {
    const int kvb = c->mixer == TTT_LM_MIXER_TTT_KVB;
    return (ttt_rnn_config){.kind = c->mixer == TTT_LM_MIXER_TTT_LINEAR ? TTT_RNN_LINEAR : TTT_RNN_MLP,
                            .backbone = kvb ? TTT_RNN_TRANSFORMER : (ttt_rnn_backbone)c->ttt_backbone,
                            .dim = c->dim, .heads = c->heads, .mini_batch = c->ttt_mini_batch,
                            .base_lr = c->ttt_base_lr, .rope_theta = c->rope_theta};
}

/* Registers a mixer's tensor under its full name (model.layers.i.<suffix>). */
static int extra_add(ttt_ctx *ctx, ttt_lm_block *b, int64_t i, ttt_tensor *t, const char *suffix, int decay) {
    if (!t) return TTT_ERR;
    if (b->n_extra >= (int)(sizeof b->extra / sizeof b->extra[0]))
        return ttt__set_error(ctx, "lm_init: too many mixer tensors in block %lld (internal)", (long long)i);
    snprintf(b->extra_names[b->n_extra], sizeof b->extra_names[0], "model.layers.%lld.%s", (long long)i, suffix);
    b->extra[b->n_extra] = t;
    b->extra_decay[b->n_extra++] = decay;
    return TTT_OK;
}

static int init_ttt_mixer(ttt_ctx *ctx, const ttt_lm_config *c, ttt_dtype dt, int64_t i, ttt_lm_block *b) {
    if (!has_ttt(c)) return TTT_OK;
    const int64_t D = c->dim;
    const double std = c->init_std, out_std = c->init_std / sqrt(2.0 * (double)c->depth);
    if (has_conv(c) && (extra_add(ctx, b, i, param(ctx, dt, TTT_DIMS(D), "lm.conv_norm", 1, 0), "conv_layernorm.weight", 0) ||
                        extra_add(ctx, b, i, param(ctx, dt, TTT_DIMS(D, TTT_RNN_CONV), "lm.conv", 0, 1.0 / sqrt((double)TTT_RNN_CONV)), "conv.weight", 0) ||
                        extra_add(ctx, b, i, param(ctx, dt, TTT_DIMS(D), "lm.conv_bias", 0, 0), "conv.bias", 0)))
        return TTT_ERR;
    if (c->mixer == TTT_LM_MIXER_TTT_KVB &&
        (extra_add(ctx, b, i, param(ctx, dt, TTT_DIMS(D), "lm.pre_ttt_norm", 1, 0), "pre_ttt_layernorm.weight", 0) ||
         extra_add(ctx, b, i, param(ctx, dt, TTT_DIMS(D), "lm.post_ttt_norm", 1, 0), "post_ttt_layernorm.weight", 0)))
        return TTT_ERR;
    if (!(b->ttt = calloc(1, sizeof *b->ttt))) return ttt__set_error(ctx, "lm_init: out of host memory");
    const ttt_rnn_config rc = rnn_config(c);
    if (ttt_rnn_init(ctx, b->ttt, &rc, dt, std, out_std)) return TTT_ERR;
    for (int j = 0; j < b->ttt->n_params; j++) {
        char suffix[64];
        snprintf(suffix, sizeof suffix, "ttt.%s", b->ttt->names[j]);
        if (extra_add(ctx, b, i, b->ttt->params[j], suffix, b->ttt->decay[j])) return TTT_ERR;
    }
    return TTT_OK;
}

/* A mixer tensor of block b by its suffix (NULL: absent). */
static ttt_tensor *extra(const ttt_lm_block *b, const char *suffix) {
    for (int j = 0; j < b->n_extra; j++) {
        const char *n = strchr(b->extra_names[j] + strlen("model.layers."), '.');
        if (n && !strcmp(n + 1, suffix)) return b->extra[j];
    }
    return NULL;
}

static int init_attention(ttt_ctx *ctx, const ttt_lm_config *c, ttt_dtype dt, int64_t i, ttt_lm_block *b) {
    (void)i;
    const int64_t D = c->dim, hd = D / c->heads;
    const double std = c->init_std, out_std = c->init_std / sqrt(2.0 * (double)c->depth);
    if (!(b->q = param(ctx, dt, TTT_DIMS(D, D), "lm.q", 0, std)) || !(b->k = param(ctx, dt, TTT_DIMS(D, D), "lm.k", 0, std)) ||
        !(b->v = param(ctx, dt, TTT_DIMS(D, D), "lm.v", 0, std)) || !(b->o = param(ctx, dt, TTT_DIMS(D, D), "lm.o", 0, out_std)))
        return TTT_ERR;
    if (c->qk_norm && (!(b->q_norm = param(ctx, dt, TTT_DIMS(hd), "lm.q_norm", 1, 0)) ||
                       !(b->k_norm = param(ctx, dt, TTT_DIMS(hd), "lm.k_norm", 1, 0))))
        return TTT_ERR;
    return TTT_OK;
}

static int init_kvb(ttt_ctx *ctx, const ttt_lm_config *c, ttt_dtype dt, int64_t i, ttt_lm_block *b) {
    return init_attention(ctx, c, dt, i, b) || init_ttt_mixer(ctx, c, dt, i, b) ? TTT_ERR : TTT_OK;
}

/* A linear-time mixer's layer (made by the mixer's init) registered under model.layers.i.<prefix>.* */
static int register_layer(ttt_ctx *ctx, ttt_lm_block *b, int64_t i, const char *prefix, int n, ttt_tensor *const *p,
                          const char *const *names, const int *decay) {
    for (int j = 0; j < n; j++) {
        char suffix[64];
        snprintf(suffix, sizeof suffix, "%s.%s", prefix, names[j]);
        if (extra_add(ctx, b, i, p[j], suffix, decay[j])) return TTT_ERR;
    }
    return TTT_OK;
}

static int init_linear_mixer(ttt_ctx *ctx, const ttt_lm_config *c, ttt_dtype dt, int64_t i, ttt_lm_block *b) {
    ttt_tensor *p[TTT_GDN_PARAMS];
    const char *names[TTT_GDN_PARAMS];
    int decay[TTT_GDN_PARAMS], n;
    if (c->mixer == TTT_LM_MIXER_LINEAR_ATTENTION) {
        const ttt_linattn_config lc = linattn_config(c);
        if (!(b->linattn = calloc(1, sizeof *b->linattn))) return ttt__set_error(ctx, "lm_init: out of host memory");
        if (ttt_linattn_init(ctx, b->linattn, &lc, dt)) return TTT_ERR;
        n = ttt_linattn_params(b->linattn, p, names, decay);
        return register_layer(ctx, b, i, "linear_attn", n, p, names, decay);
    }
    if (c->mixer == TTT_LM_MIXER_GATED_DELTANET) {
        const ttt_gdn_config gc = gdn_config(c);
        if (!(b->gdn = calloc(1, sizeof *b->gdn))) return ttt__set_error(ctx, "lm_init: out of host memory");
        if (ttt_gdn_init(ctx, b->gdn, &gc, dt)) return TTT_ERR;
        n = ttt_gdn_params(b->gdn, p, names, decay);
        return register_layer(ctx, b, i, "gdn", n, p, names, decay);
    }
    const ttt_mamba2_config mc = mamba2_config(c);
    if (!(b->mamba2 = calloc(1, sizeof *b->mamba2))) return ttt__set_error(ctx, "lm_init: out of host memory");
    if (ttt_mamba2_init(ctx, b->mamba2, &mc, dt)) return TTT_ERR;
    n = ttt_mamba2_params(b->mamba2, p, names, decay);
    return register_layer(ctx, b, i, "mamba2", n, p, names, decay);
}

/* The sequence mixers, by config id (ttt_lm_config.mixer); the table is after the forward and
 * decode functions. A mixer makes its parameters (init: attention's in the block's fields,
 * others registered with extra_add), maps the residual stream x [B, T, D] to x after its
 * sublayer(s) (forward, from position pos0), and does the same for new tokens after a cache's
 * positions (decode, with its state in the cache: allocated by cache_init, NULL: none). */
typedef struct {
    const char *name;
    int (*init)(ttt_ctx *ctx, const ttt_lm_config *c, ttt_dtype dt, int64_t i, ttt_lm_block *b);
    ttt_tensor *(*forward)(ttt_ctx *ctx, const ttt_lm *m, const ttt_lm_block *b, ttt_tensor *x, int64_t pos0);
    ttt_tensor *(*decode)(ttt_ctx *ctx, const ttt_lm *m, const ttt_lm_block *b, ttt_lm_cache *c, int64_t i,
                          ttt_tensor *x, int64_t p0);
} lm_mixer;
static const lm_mixer *mixer_of(int id);

static int init_block(ttt_ctx *ctx, const ttt_lm_config *c, ttt_dtype dt, int64_t i, ttt_lm_block *b) {
    const int64_t D = c->dim;
    const double std = c->init_std, out_std = c->init_std / sqrt(2.0 * (double)c->depth);
    if (!(b->input_norm = param(ctx, dt, TTT_DIMS(D), "lm.input_norm", 1, 0))) return TTT_ERR;
    if (mixer_of(c->mixer)->init(ctx, c, dt, i, b)) return TTT_ERR;
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
        for (int j = 0; j < b->n_extra; j++) ttt_persistent_free(ctx, b->extra[j]); /* the TTT layer's included */
        if (b->ttt) ttt_persistent_free(ctx, b->ttt->tok_base);
        free(b->ttt);
        free(b->linattn), free(b->gdn), free(b->mamba2); /* their tensors are among the extras */
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
    /* the gate silu(h Wg) * (h Wu) in one fused pass forward and one backward (ttt_swiglu) */
    return linear(ctx, ttt_swiglu(ctx, linear(ctx, h, W(ctx, m, gate)), linear(ctx, h, W(ctx, m, up))),
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
    x = ttt_permute(ctx, x, (const int[]){0, 2, 1, 3});
    /* rotated after the permutation: RoPE reads the permuted view and writes [B, H, T, hd] densely (what
     * attention takes, so no copy), and its gradient comes back in the projection's layout */
    return rotate ? ttt_rope(ctx, x, 2, pos0, c->rope_theta) : x;
}

/* [B, H, T, hd] -> [B, T, D] */
static ttt_tensor *merge_heads(ttt_ctx *ctx, const ttt_lm_config *c, ttt_tensor *o) {
    if (!o) return NULL;
    const int64_t B = o->shape[0], T = o->shape[2];
    return ttt_reshape(ctx, ttt_contiguous(ctx, ttt_permute(ctx, o, (const int[]){0, 2, 1, 3})), TTT_DIMS(B, T, c->dim));
}

/* x + rms(o Wo^T; post_attention_layernorm) for attention's output o [B, H, T, hd]. */
static ttt_tensor *attn_residual(ttt_ctx *ctx, const ttt_lm *m, const ttt_lm_block *b, ttt_tensor *x, ttt_tensor *o) {
    ttt_tensor *a = linear(ctx, merge_heads(ctx, &m->cfg, o), W(ctx, m, b->o));
    return ttt_add(ctx, x, ttt_rms_norm(ctx, a, W(ctx, m, b->post_attn_norm), m->cfg.norm_eps));
}

/* The MLP sublayers of block b (the prime MLP, if any, then the static one). */
static ttt_tensor *mlp_rest(ttt_ctx *ctx, const ttt_lm *m, const ttt_lm_block *b, ttt_tensor *x) {
    if (b->prime_gate)
        x = mlp_sublayer(ctx, m, x, b->pre_prime_norm, b->prime_gate, b->prime_up, b->prime_down, b->post_prime_norm);
    return mlp_sublayer(ctx, m, x, b->pre_mlp_norm, b->gate, b->up, b->down, b->post_mlp_norm);
}

ttt_tensor *ttt__lm_block_rest(ttt_ctx *ctx, const ttt_lm *m, const ttt_lm_block *b, ttt_tensor *x, ttt_tensor *o) {
    return mlp_rest(ctx, m, b, attn_residual(ctx, m, b, x, o));
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

static ttt_tensor *attention_forward(ttt_ctx *ctx, const ttt_lm *m, const ttt_lm_block *b, ttt_tensor *x, int64_t pos0) {
    const ttt_lm_config *c = &m->cfg;
    ttt_tensor *h = ttt_rms_norm(ctx, x, W(ctx, m, b->input_norm), c->norm_eps);
    ttt_tensor *q = ttt__lm_heads(ctx, m, h, b->q, b->q_norm, 1, pos0), *k = ttt__lm_heads(ctx, m, h, b->k, b->k_norm, 1, pos0);
    ttt_tensor *v = ttt__lm_heads(ctx, m, h, b->v, NULL, 0, pos0);
    return attn_residual(ctx, m, b, x, ttt_attention(ctx, q, k, v, 1, c->window, 0.0));
}

/* x + rms(ttt(rms(x; pre)); post): the TTT layer runs in the parameters' dtype (f32 under bf16
 * compute). state NULL: the forward pass from W_0 (position 0); else decode with that state. */
static ttt_tensor *ttt_sublayer(ttt_ctx *ctx, const ttt_lm *m, const ttt_lm_block *b, ttt_tensor *x, ttt_tensor *pre,
                                ttt_tensor *post, ttt_rnn_state *state) {
    const double eps = m->cfg.norm_eps;
    ttt_tensor *h = ttt_rms_norm(ctx, x, W(ctx, m, pre), eps);
    if (h && h->dtype != b->ttt->q->dtype) h = ttt_cast(ctx, h, b->ttt->q->dtype);
    ttt_tensor *y = state ? ttt_rnn_decode(ctx, b->ttt, state, h) : ttt_rnn_forward(ctx, b->ttt, h, 0);
    if (y && x && y->dtype != x->dtype) y = ttt_cast(ctx, y, x->dtype);
    return ttt_add(ctx, x, ttt_rms_norm(ctx, y, W(ctx, m, post), eps));
}

/* The mamba backbone's sublayer before the TTT layer: x + conv(rms(x; conv_layernorm)). */
static ttt_tensor *conv_sublayer(ttt_ctx *ctx, const ttt_lm *m, const ttt_lm_block *b, ttt_tensor *x, ttt_tensor *tail,
                                 ttt_tensor **new_tail) {
    ttt_tensor *h = ttt_rms_norm(ctx, x, W(ctx, m, extra(b, "conv_layernorm.weight")), m->cfg.norm_eps);
    return ttt_add(ctx, x, ttt_causal_conv(ctx, h, W(ctx, m, extra(b, "conv.weight")), W(ctx, m, extra(b, "conv.bias")),
                                           tail, new_tail));
}

static ttt_tensor *ttt_forward(ttt_ctx *ctx, const ttt_lm *m, const ttt_lm_block *b, ttt_tensor *x, int64_t pos0) {
    (void)pos0; /* the TTT layer's RoPE positions are within its mini-batches; training reads from position 0 */
    if (has_conv(&m->cfg)) x = conv_sublayer(ctx, m, b, x, NULL, NULL);
    return ttt_sublayer(ctx, m, b, x, b->input_norm, b->post_attn_norm, NULL);
}

static ttt_tensor *kvb_forward(ttt_ctx *ctx, const ttt_lm *m, const ttt_lm_block *b, ttt_tensor *x, int64_t pos0) {
    x = attention_forward(ctx, m, b, x, pos0);
    return ttt_sublayer(ctx, m, b, x, extra(b, "pre_ttt_layernorm.weight"), extra(b, "post_ttt_layernorm.weight"), NULL);
}

/* A linear-time mixer's sublayer: x + rms(mixer(rms(x; input_layernorm)); post_attention_layernorm).
 * With a cache (decode) the block's state in it is read and advanced: one token through the
 * recurrent form, a longer piece through the chunkwise form (both exact). */
static ttt_tensor *linear_mixer_sublayer(ttt_ctx *ctx, const ttt_lm *m, const ttt_lm_block *b, ttt_tensor *x,
                                         ttt_lm_cache *c, int64_t i) {
    const double eps = m->cfg.norm_eps;
    ttt_tensor *h = ttt_rms_norm(ctx, x, W(ctx, m, b->input_norm), eps), *y;
    if (!h) return NULL;
    const int one = h->shape[1] == 1;
    if (b->linattn) {
        ttt_linattn_state *st = c ? &c->linattn[i] : NULL;
        y = st && one ? ttt_linattn_decode(ctx, b->linattn, h, st) : ttt_linattn_forward(ctx, b->linattn, h, st);
    } else if (b->gdn) {
        ttt_gdn_state *st = c ? &c->gdn[i] : NULL;
        y = st && one ? ttt_gdn_decode(ctx, b->gdn, h, st) : ttt_gdn_forward(ctx, b->gdn, h, st);
    } else {
        ttt_mamba2_state *st = c ? &c->mamba2[i] : NULL;
        y = st && one ? ttt_mamba2_decode(ctx, b->mamba2, h, st) : ttt_mamba2_forward(ctx, b->mamba2, h, st);
    }
    return ttt_add(ctx, x, ttt_rms_norm(ctx, y, W(ctx, m, b->post_attn_norm), eps));
}

static ttt_tensor *linear_mixer_forward(ttt_ctx *ctx, const ttt_lm *m, const ttt_lm_block *b, ttt_tensor *x,
                                        int64_t pos0) {
    (void)pos0; /* no positions: the recurrence orders the tokens */
    return linear_mixer_sublayer(ctx, m, b, x, NULL, 0);
}

static ttt_tensor *forward_block(ttt_ctx *ctx, const ttt_lm *m, int64_t i, ttt_tensor *x, const void *user) {
    const ttt_lm_block *b = &m->blocks[i];
    return mlp_rest(ctx, m, b, mixer_of(m->cfg.mixer)->forward(ctx, m, b, x, *(const int64_t *)user));
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
    /* bf16 logits go to the loss as they are (it reads them and sums in f32), so no f32 copy of them is made
     * (TTT_FUSED=0: the f32 copy, as before) */
    if (logits && logits->dtype != a->loss_dt &&
        !(ttt__fused(ctx) && logits->dtype == TTT_BF16 && a->loss_dt == TTT_F32))
        logits = ttt_cast(ctx, logits, a->loss_dt);
    out[0] = ttt_cross_entropy_rows(ctx, logits, a->targets, -100);
    return out[0] ? TTT_OK : TTT_ERR;
}

/* The head in the compute dtype with, on CUDA, zero rows up to a multiple of 64: a logits row of V = 50257
 * elements is not 16-byte aligned, and cuBLAS then leaves the tensor-core kernels for ones several times slower
 * (callers slice the padding logits off before the loss; the CPU's BLAS has no such cliff). Its gradient goes
 * back to the master through one cast. */
ttt_tensor *ttt__lm_head_weight(ttt_ctx *ctx, const ttt_lm *m) {
    const int64_t V = m->cfg.vocab, V_pad = ttt_ctx_device(ctx) == TTT_CUDA ? (V + 63) / 64 * 64 : V;
    ttt_tensor *head = W(ctx, m, m->embed);
    if (head && V_pad != V)
        head = ttt_concat(ctx, 2, (ttt_tensor *[]){head, ttt_zeros(ctx, head->dtype, TTT_DIMS(V_pad - V, m->cfg.dim))}, 0);
    return head;
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
    const int record = ttt__recording(ctx, 1, &h);
    const ttt_dtype loss_dt = m->embed->dtype; /* the loss is not computed in bf16 */
    /* Training keeps all the logits for the backward pass, in one chunk, when they are small (the 125M step at
     * 8K tokens: 0.8 GB of bf16): rematerializing them costs a second head product and passes over [rows, V].
     * (TTT_FUSED=0: rematerialized chunks, as before) */
    const int keep = chunk == 0 && record && ttt__fused(ctx) &&
                     (double)B * (double)T * (double)(V + 63) * (double)ttt_dtype_size(m->compute) <= LOGIT_KEEP_BYTES;
    if (keep) chunk = T;
    if (chunk == 0) chunk = LOGIT_CHUNK / (B * V) > 1 ? LOGIT_CHUNK / (B * V) : 1;
    if (chunk > T) chunk = T;
    const int64_t n_chunks = (T + chunk - 1) / chunk;
    ttt_tensor *head = ttt__lm_head_weight(ctx, m); /* cast once outside the rematerialized chunks */
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
        if (record && !keep) {
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
    if (!has_attention(mc)) max_len = 1; /* no keys to keep */
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
    c->rnn = calloc((size_t)mc->depth, sizeof *c->rnn);
    c->conv_tail = calloc((size_t)mc->depth, sizeof *c->conv_tail);
    c->linattn = calloc((size_t)mc->depth, sizeof *c->linattn);
    c->gdn = calloc((size_t)mc->depth, sizeof *c->gdn);
    c->mamba2 = calloc((size_t)mc->depth, sizeof *c->mamba2);
    if (!c->k || !c->v || !c->rnn || !c->conv_tail || !c->linattn || !c->gdn || !c->mamba2) {
        ttt_lm_cache_free(ctx, c);
        return ttt__set_error(ctx, "%s: out of host memory", fn);
    }
    c->k_depth = mc->depth;
    for (int64_t i = 0; i < mc->depth; i++) {
        const int64_t shape[4] = {batch, mc->heads, c->capacity, mc->dim / mc->heads};
        const ttt_lm_block *b = &m->blocks[i];
        if ((b->q && (!(c->k[i] = ttt_persistent(ctx, m->compute, 4, shape, "lm.cache.k")) ||
                      !(c->v[i] = ttt_persistent(ctx, m->compute, 4, shape, "lm.cache.v")))) ||
            (b->ttt && ttt_rnn_state_init(ctx, b->ttt, &c->rnn[i], batch)) ||
            (b->linattn && ttt_linattn_state_init(ctx, b->linattn, batch, &c->linattn[i])) ||
            (b->gdn && ttt_gdn_state_init(ctx, b->gdn, batch, &c->gdn[i])) ||
            (b->mamba2 && ttt_mamba2_state_init(ctx, b->mamba2, batch, &c->mamba2[i])) ||
            (has_conv(mc) && !(c->conv_tail[i] = ttt_persistent(ctx, m->compute, TTT_DIMS(batch, TTT_RNN_CONV - 1, mc->dim),
                                                                "lm.cache.conv")))) {
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
        if (c->rnn) ttt_rnn_state_free(ctx, &c->rnn[i]);
        if (c->conv_tail) ttt_persistent_free(ctx, c->conv_tail[i]);
        if (c->linattn) ttt_linattn_state_free(ctx, &c->linattn[i]);
        if (c->gdn) ttt_gdn_state_free(ctx, &c->gdn[i]);
        if (c->mamba2) ttt_mamba2_state_free(ctx, &c->mamba2[i]);
    }
    free(c->k);
    free(c->v);
    free(c->rnn);
    free(c->conv_tail);
    free(c->linattn), free(c->gdn), free(c->mamba2);
    *c = (ttt_lm_cache){0};
}

/* Block i's linear-time mixer state in cache c: its tensors (up to 4, NULL-padded) and its token count. */
static int64_t *linear_state(const ttt_lm_cache *c, int64_t i, ttt_tensor **t) {
    t[0] = t[1] = t[2] = t[3] = NULL;
    if (c->linattn && c->linattn[i].s) {
        t[0] = c->linattn[i].s, t[1] = c->linattn[i].z;
        return &c->linattn[i].pos;
    }
    if (c->gdn && c->gdn[i].s) {
        t[0] = c->gdn[i].s, t[1] = c->gdn[i].conv_q, t[2] = c->gdn[i].conv_k, t[3] = c->gdn[i].conv_v;
        return &c->gdn[i].pos;
    }
    if (c->mamba2 && c->mamba2[i].s) {
        t[0] = c->mamba2[i].s, t[1] = c->mamba2[i].conv;
        return &c->mamba2[i].pos;
    }
    return NULL;
}

int ttt__lm_cache_copy(ttt_ctx *ctx, ttt_lm_cache *dst, const ttt_lm_cache *src) {
    if (src->k_depth != dst->k_depth || src->capacity != dst->capacity || src->batch != dst->batch || !src->k || !dst->k)
        return ttt__set_error(ctx, "lm_reader_copy: readers of other shapes (batch, capacity or depth)");
    for (int64_t i = 0; i < src->k_depth; i++) {
        if (!src->k[i] != !dst->k[i] || !src->conv_tail[i] != !dst->conv_tail[i])
            return ttt__set_error(ctx, "lm_reader_copy: readers of different models");
        if ((src->k[i] && (ttt_assign(ctx, dst->k[i], src->k[i]) || ttt_assign(ctx, dst->v[i], src->v[i]))) ||
            (src->conv_tail[i] && ttt_assign(ctx, dst->conv_tail[i], src->conv_tail[i])) ||
            (src->rnn[i].w[0] && ttt_rnn_state_copy(ctx, &dst->rnn[i], &src->rnn[i])))
            return TTT_ERR;
        ttt_tensor *ts[4], *td[4];
        int64_t *ps = linear_state(src, i, ts), *pd = linear_state(dst, i, td);
        if (!ps != !pd) return ttt__set_error(ctx, "lm_reader_copy: readers of different models");
        for (int j = 0; ps && j < 4; j++)
            if (ts[j] && (!td[j] || ttt_assign(ctx, td[j], ts[j]))) return TTT_ERR;
        if (ps) *pd = *ps;
    }
    dst->len = src->len;
    return TTT_OK;
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

static ttt_tensor *attention_decode(ttt_ctx *ctx, const ttt_lm *m, const ttt_lm_block *b, ttt_lm_cache *c, int64_t i,
                                    ttt_tensor *x, int64_t p0) {
    const ttt_lm_config *mc = &m->cfg;
    const int64_t T = x->shape[1];
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
    return attn_residual(ctx, m, b, x, o);
}

static ttt_tensor *ttt_decode(ttt_ctx *ctx, const ttt_lm *m, const ttt_lm_block *b, ttt_lm_cache *c, int64_t i,
                              ttt_tensor *x, int64_t p0) {
    (void)p0;
    if (has_conv(&m->cfg)) {
        ttt_tensor *tail = NULL;
        x = conv_sublayer(ctx, m, b, x, c->conv_tail[i], &tail);
        if (!x || ttt_assign(ctx, c->conv_tail[i], tail)) return NULL;
    }
    return ttt_sublayer(ctx, m, b, x, b->input_norm, b->post_attn_norm, &c->rnn[i]);
}

static ttt_tensor *kvb_decode(ttt_ctx *ctx, const ttt_lm *m, const ttt_lm_block *b, ttt_lm_cache *c, int64_t i,
                              ttt_tensor *x, int64_t p0) {
    x = attention_decode(ctx, m, b, c, i, x, p0);
    return x ? ttt_sublayer(ctx, m, b, x, extra(b, "pre_ttt_layernorm.weight"), extra(b, "post_ttt_layernorm.weight"),
                            &c->rnn[i])
             : NULL;
}

static ttt_tensor *linear_mixer_decode(ttt_ctx *ctx, const ttt_lm *m, const ttt_lm_block *b, ttt_lm_cache *c,
                                       int64_t i, ttt_tensor *x, int64_t p0) {
    (void)p0;
    return linear_mixer_sublayer(ctx, m, b, x, c, i);
}

static const lm_mixer MIXERS[] = {
    [TTT_LM_MIXER_ATTENTION] = {"attention", init_attention, attention_forward, attention_decode},
    [TTT_LM_MIXER_TTT_LINEAR] = {"ttt-linear", init_ttt_mixer, ttt_forward, ttt_decode},
    [TTT_LM_MIXER_TTT_MLP] = {"ttt-mlp", init_ttt_mixer, ttt_forward, ttt_decode},
    [TTT_LM_MIXER_TTT_KVB] = {"ttt-kvb", init_kvb, kvb_forward, kvb_decode},
    [TTT_LM_MIXER_LINEAR_ATTENTION] = {"linear-attention", init_linear_mixer, linear_mixer_forward, linear_mixer_decode},
    [TTT_LM_MIXER_GATED_DELTANET] = {"gated-deltanet", init_linear_mixer, linear_mixer_forward, linear_mixer_decode},
    [TTT_LM_MIXER_MAMBA2] = {"mamba2", init_linear_mixer, linear_mixer_forward, linear_mixer_decode},
};
enum { N_MIXERS = (int)(sizeof MIXERS / sizeof MIXERS[0]) };

static const lm_mixer *mixer_of(int id) { return id >= 0 && id < N_MIXERS ? &MIXERS[id] : &MIXERS[0]; }

const char *ttt_lm_mixer_name(int id) { return id >= 0 && id < N_MIXERS ? MIXERS[id].name : NULL; }

int ttt_lm_mixer_parse(const char *name) {
    for (int i = 0; name && i < N_MIXERS; i++)
        if (!strcmp(name, MIXERS[i].name)) return i;
    return -1;
}

static ttt_tensor *decode_block(ttt_ctx *ctx, const ttt_lm *m, int64_t i, ttt_tensor *x, const void *user) {
    const decode_args *a = user;
    const ttt_lm_block *b = a->blocks ? &a->blocks[i] : &m->blocks[i];
    return mlp_rest(ctx, m, b, mixer_of(m->cfg.mixer)->decode(ctx, m, b, a->cache, i, x, a->p0));
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
    for (int64_t i = 0; c->len == 0 && i < c->k_depth; i++) { /* a fresh read: the TTT layers start from W_0 */
        if ((m->blocks[i].ttt && ttt_rnn_state_reset(ctx, m->blocks[i].ttt, &c->rnn[i])) ||
            (c->conv_tail[i] && ttt_fill(ctx, c->conv_tail[i], 0.0)))
            return NULL;
        ttt_tensor *ts[4]; /* and the linear-time mixers from a zero state */
        int64_t *pos = linear_state(c, i, ts);
        for (int j = 0; pos && j < 4; j++)
            if (ts[j] && ttt_fill(ctx, ts[j], 0.0)) return NULL;
        if (pos) *pos = 0;
    }
    ttt_tensor *out =
        ttt_lm_logits(ctx, m, run_blocks(ctx, m, ttt_embedding(ctx, W(ctx, m, m->embed), ids), decode_block, &a));
    if (out) c->len += ids->shape[1];
    return out;
}

ttt_tensor *ttt_lm_decode(ttt_ctx *ctx, const ttt_lm *m, ttt_lm_cache *c, ttt_tensor *ids) {
    static const char fn[] = "lm_decode";
    if (!ctx || !ids) return NULL;
    if (check_model(ctx, fn, m) || check_ids(ctx, fn, "ids", ids)) return NULL;
    if (!c || !c->k || !c->v || !c->rnn || c->k_depth != m->cfg.depth || c->capacity < 1)
        return ttt__set_error(ctx, "%s: the cache is not initialised for this model (ttt_lm_cache_init)", fn), NULL;
    const int64_t B = ids->shape[0], T = ids->shape[1];
    const ttt_lm_config *mc = &m->cfg;
    const int64_t want_cap = mc->window > 1 ? mc->window - 1 : 1;
    const int attn = has_attention(mc);
    ttt_tensor *lin[4];
    const int lin_ok = c->linattn && c->gdn && c->mamba2 && !c->linattn[0].s == !m->blocks[0].linattn &&
                       !c->gdn[0].s == !m->blocks[0].gdn && !c->mamba2[0].s == !m->blocks[0].mamba2 &&
                       (!linear_state(c, 0, lin) || lin[0]->shape[0] == c->batch);
    if (!c->k[0] != !attn || !c->rnn[0].w[0] != !m->blocks[0].ttt || !lin_ok ||
        (attn && (c->k[0]->shape[1] != mc->heads || c->k[0]->shape[3] != mc->dim / mc->heads ||
                  c->k[0]->dtype != m->compute || (mc->window > 0 && c->capacity != want_cap))))
        return ttt__set_error(ctx, "%s: the cache was made for another model (ttt_lm_cache_init)", fn), NULL;
    if (B != c->batch)
        return ttt__set_error(ctx, "%s: ids have batch %lld but the cache was made for %lld", fn, (long long)B,
                              (long long)c->batch),
               NULL;
    if (attn && mc->window == 0 && c->len + T > c->capacity)
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
    char theta[32], eps[32], std[32], clip[32], blr[32];
    ttt_format_double(blr, sizeof blr, c->ttt_base_lr);
    ttt_format_double(theta, sizeof theta, c->rope_theta);
    ttt_format_double(eps, sizeof eps, c->norm_eps);
    ttt_format_double(std, sizeof std, c->init_std);
    ttt_format_double(clip, sizeof clip, c->inner_clip);
    const int w = snprintf(buf, n,
                           "vocab=%lld dim=%lld depth=%lld heads=%lld mlp_hidden=%lld window=%lld prime_blocks=%lld "
                           "prime_hidden=%lld qk_norm=%d rope_theta=%s norm_eps=%s init_std=%s inner_chunk=%lld "
                           "inner_clip=%s mixer=%s ttt_backbone=%s ttt_mini_batch=%lld ttt_base_lr=%s",
                           (long long)c->vocab, (long long)c->dim, (long long)c->depth, (long long)c->heads,
                           (long long)c->mlp_hidden, (long long)c->window, (long long)c->prime_blocks,
                           (long long)c->prime_hidden, c->qk_norm, theta, eps, std, (long long)c->inner_chunk, clip,
                           ttt_lm_mixer_name(c->mixer) ? ttt_lm_mixer_name(c->mixer) : "?",
                           c->ttt_backbone == TTT_RNN_MAMBA ? "mamba" : "transformer", (long long)c->ttt_mini_batch, blr);
    return w > 0 && (size_t)w < n ? TTT_OK : TTT_ERR;
}

int ttt_lm_config_parse(const char *s, ttt_lm_config *c, char *err, size_t err_len) {
    if (!s || !c) return ttt__errbuf(err, err_len, "lm_config_parse: string and config must not be NULL");
    ttt_lm_preset("tiny", 0, c, NULL, 0); /* defaults of the optional keys */
    static const char *const ints[] = {"vocab",        "dim",   "depth",      "heads",      "mlp_hidden",
                                       "window",       "prime_blocks", "prime_hidden", "qk_norm", "inner_chunk",
                                       "ttt_mini_batch"};
    int64_t q = 1, *iout[] = {&c->vocab, &c->dim, &c->depth, &c->heads, &c->mlp_hidden,
                              &c->window, &c->prime_blocks, &c->prime_hidden, &q, &c->inner_chunk, &c->ttt_mini_batch};
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
    /* the mixer: older checkpoints predate the choice (attention) */
    if (ttt_kv_get(s, "mixer", v, sizeof v) && (c->mixer = ttt_lm_mixer_parse(v)) < 0)
        return ttt__errbuf(err, err_len, "model config: unknown mixer '%s'", v);
    if (ttt_kv_get(s, "ttt_backbone", v, sizeof v)) {
        if (strcmp(v, "transformer") && strcmp(v, "mamba"))
            return ttt__errbuf(err, err_len, "model config: bad ttt_backbone '%s'", v);
        c->ttt_backbone = !strcmp(v, "mamba") ? TTT_RNN_MAMBA : TTT_RNN_TRANSFORMER;
    }
    static const char *const dbls[] = {"rope_theta", "norm_eps", "init_std", "inner_clip", "ttt_base_lr"};
    double *dout[] = {&c->rope_theta, &c->norm_eps, &c->init_std, &c->inner_clip, &c->ttt_base_lr};
    for (size_t i = 0; i < 5; i++) {
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
