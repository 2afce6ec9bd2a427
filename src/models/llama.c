/* Pretrained Llama-family models from GGUF files and Hugging Face folders
 * (see include/ttt/llama.h, docs/llama.md). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../core/engine_private.h"
#include "ttt/checkpoint.h"
#include "ttt/fileio.h"
#include "ttt/gguf.h"
#include "ttt/llama.h"
#include "ttt/ops.h"

#ifdef TTT_HAVE_JSONC
#include <json-c/json.h>
#endif

enum { MAX_VOCAB = 1 << 24, MAX_DIM = 1 << 16, MAX_DEPTH = 1024, MAX_HIDDEN = 1 << 20 };
/* A long prompt is decoded in pieces of at most this many tokens. */
static const int64_t DECODE_CHUNK = 512;

static int check_config(const ttt_llama_config *c, const char *where, char *err, size_t err_len) {
    const struct {
        const char *name;
        int64_t v, lo, hi;
    } sizes[] = {
        {"vocab", c->vocab, 2, MAX_VOCAB},       {"dim", c->dim, 2, MAX_DIM},     {"depth", c->depth, 1, MAX_DEPTH},
        {"heads", c->heads, 1, MAX_DIM},         {"kv_heads", c->kv_heads, 1, MAX_DIM},
        {"head_dim", c->head_dim, 2, MAX_DIM},   {"mlp_hidden", c->mlp_hidden, 1, MAX_HIDDEN},
        {"window", c->window, 0, INT64_MAX / 4}, {"context", c->context, 0, INT64_MAX / 4},
    };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (sizes[i].v < sizes[i].lo || sizes[i].v > sizes[i].hi)
            return ttt__errbuf(err, err_len, "%s: %s = %lld must be in [%lld, %lld]", where, sizes[i].name,
                               (long long)sizes[i].v, (long long)sizes[i].lo, (long long)sizes[i].hi);
    if (c->heads % c->kv_heads)
        return ttt__errbuf(err, err_len, "%s: %lld query heads do not split evenly over %lld key/value heads", where,
                           (long long)c->heads, (long long)c->kv_heads);
    if (c->head_dim % 2) return ttt__errbuf(err, err_len, "%s: head_dim %lld must be even (RoPE)", where, (long long)c->head_dim);
    if (c->heads * c->head_dim > (int64_t)MAX_DIM * 4)
        return ttt__errbuf(err, err_len, "%s: heads x head_dim is too large", where);
    if (!(c->rope_theta > 1) || !isfinite(c->rope_theta))
        return ttt__errbuf(err, err_len, "%s: rope_theta %g must be a finite number > 1", where, c->rope_theta);
    if (!(c->norm_eps > 0) || !(c->norm_eps < 1))
        return ttt__errbuf(err, err_len, "%s: the RMSNorm eps %g must be in (0, 1)", where, c->norm_eps);
    if (c->rope_scaling != TTT_ROPE_NONE && c->rope_scaling != TTT_ROPE_FACTORS &&
        (!(c->rope_factor > 0) || !isfinite(c->rope_factor)))
        return ttt__errbuf(err, err_len, "%s: rope scaling factor %g must be a finite number > 0", where, c->rope_factor);
    if (c->rope_scaling == TTT_ROPE_LLAMA3 &&
        (!(c->rope_high_freq_factor > c->rope_low_freq_factor) || !(c->rope_low_freq_factor > 0) ||
         c->rope_original_context < 1))
        return ttt__errbuf(err, err_len, "%s: llama3 rope scaling needs high_freq_factor > low_freq_factor > 0 and "
                           "original_max_position_embeddings >= 1", where);
    return TTT_OK;
}

/* The rotary frequencies after scaling (Hugging Face's formulas); NULL in *out when unscaled. */
static int make_inv_freq(ttt_llama *m, const float *factors, char *err, size_t err_len) {
    const ttt_llama_config *c = &m->cfg;
    if (c->rope_scaling == TTT_ROPE_NONE) return TTT_OK;
    const int64_t half = c->head_dim / 2;
    if (!(m->inv_freq = malloc(sizeof(double) * (size_t)half))) return ttt__errbuf(err, err_len, "llama: out of memory");
    for (int64_t i = 0; i < half; i++) {
        double f = pow(c->rope_theta, -2.0 * (double)i / (double)c->head_dim);
        if (c->rope_scaling == TTT_ROPE_LINEAR) f /= c->rope_factor;
        else if (c->rope_scaling == TTT_ROPE_FACTORS) f /= factors[i];
        else { /* llama3: long wavelengths slowed by factor, short ones kept, a smooth blend between */
            const double wavelen = 2 * 3.14159265358979323846 / f, orig = (double)c->rope_original_context;
            const double low = orig / c->rope_low_freq_factor, high = orig / c->rope_high_freq_factor;
            if (wavelen > low) f /= c->rope_factor;
            else if (wavelen >= high) {
                const double s = (orig / wavelen - c->rope_low_freq_factor) /
                                 (c->rope_high_freq_factor - c->rope_low_freq_factor);
                f = (1 - s) * f / c->rope_factor + s * f;
            }
        }
        m->inv_freq[i] = f;
    }
    return TTT_OK;
}

/* ---- parameters ---- */

static int alloc_params(ttt_ctx *ctx, ttt_llama *m, char *err, size_t err_len) {
    const ttt_llama_config *c = &m->cfg;
    const int64_t D = c->dim, Q = c->heads * c->head_dim, KV = c->kv_heads * c->head_dim, F = c->mlp_hidden;
    if (!(m->blocks = calloc((size_t)c->depth, sizeof *m->blocks))) return ttt__errbuf(err, err_len, "llama: out of memory");
#define P(dst, name, ...)                                                                   \
    if (!((dst) = ttt_persistent(ctx, TTT_F32, TTT_DIMS(__VA_ARGS__), name)))               \
        return ttt__errbuf(err, err_len, "llama: cannot allocate %s: %s", name, ttt_error(ctx));
    P(m->embed, "model.embed_tokens.weight", c->vocab, D);
    P(m->norm, "model.norm.weight", D);
    if (c->tied) m->head = m->embed;
    else {
        P(m->head, "lm_head.weight", c->vocab, D);
    }
    for (int64_t i = 0; i < c->depth; i++) {
        ttt_llama_block *b = &m->blocks[i];
        P(b->attn_norm, "attn_norm", D);
        P(b->q, "q_proj", Q, D);
        P(b->k, "k_proj", KV, D);
        P(b->v, "v_proj", KV, D);
        P(b->o, "o_proj", D, Q);
        if (c->qkv_bias) {
            P(b->q_bias, "q_bias", Q);
            P(b->k_bias, "k_bias", KV);
            P(b->v_bias, "v_bias", KV);
        }
        P(b->mlp_norm, "mlp_norm", D);
        P(b->gate, "gate_proj", F, D);
        P(b->up, "up_proj", F, D);
        P(b->down, "down_proj", D, F);
    }
#undef P
    return TTT_OK;
}

void ttt_llama_free(ttt_ctx *ctx, ttt_llama *m) {
    if (!ctx || !m) return;
    if (m->is_view) { /* an adapter view: the rest belongs to its base model */
        for (int i = 0; i < m->n_view_owned; i++) ttt_persistent_free(ctx, m->view_owned[i]);
        free(m->view_owned);
        free(m->blocks);
        *m = (ttt_llama){0};
        return;
    }
    for (int64_t i = 0; m->blocks && i < m->cfg.depth; i++) {
        ttt_llama_block *b = &m->blocks[i];
        ttt_tensor *ts[] = {b->attn_norm, b->q, b->k, b->v, b->o, b->q_bias, b->k_bias, b->v_bias,
                            b->mlp_norm, b->gate, b->up, b->down};
        for (size_t j = 0; j < sizeof ts / sizeof ts[0]; j++) ttt_persistent_free(ctx, ts[j]);
    }
    if (m->head != m->embed) ttt_persistent_free(ctx, m->head);
    ttt_persistent_free(ctx, m->embed);
    ttt_persistent_free(ctx, m->norm);
    free(m->blocks);
    free(m->inv_freq);
    free(m->chat_template);
    ttt_tokenizer_free(m->tok);
    *m = (ttt_llama){0};
}

int64_t ttt_llama_param_count(const ttt_llama *m) {
    if (!m || !m->embed) return 0;
    int64_t n = ttt_numel(m->embed) + ttt_numel(m->norm) + (m->head != m->embed ? ttt_numel(m->head) : 0);
    for (int64_t i = 0; i < m->cfg.depth; i++) {
        const ttt_llama_block *b = &m->blocks[i];
        const ttt_tensor *ts[] = {b->attn_norm, b->q, b->k, b->v, b->o, b->q_bias, b->k_bias, b->v_bias,
                                  b->mlp_norm, b->gate, b->up, b->down};
        for (size_t j = 0; j < sizeof ts / sizeof ts[0]; j++) n += ts[j] ? ttt_numel(ts[j]) : 0;
    }
    return n;
}

/* ---- GGUF ---- */

/* GGUF's Wq / Wk rows of each head are (pair j, element s) -> row 2j + s, for
 * llama.cpp's rotary pairs (2j, 2j + 1); Hugging Face's are s * hd/2 + j. */
static void unpermute_rows(float *w, int64_t heads, int64_t hd, int64_t cols, float *tmp) {
    for (int64_t h = 0; h < heads; h++) {
        float *hw = w + h * hd * cols;
        memcpy(tmp, hw, sizeof(float) * (size_t)(hd * cols));
        for (int64_t j = 0; j < hd / 2; j++)
            for (int64_t s = 0; s < 2; s++)
                memcpy(hw + (s * (hd / 2) + j) * cols, tmp + (2 * j + s) * cols, sizeof(float) * (size_t)cols);
    }
}

static int gguf_tensor_into(ttt_ctx *ctx, const ttt_gguf *g, const char *name, ttt_tensor *dst, int64_t unpermute_heads,
                            int64_t hd, char *err, size_t err_len) {
    const ttt_gguf_tensor *t = ttt_gguf_tensor_find(g, name);
    if (!t) return ttt__errbuf(err, err_len, "%s: no tensor '%s'", g->path, name);
    /* ggml's ne is the reverse of the row-major shape */
    int nd = 0;
    int64_t shape[4];
    for (int i = t->ndim - 1; i >= 0; i--) shape[nd++] = t->ne[i];
    while (nd > dst->ndim && shape[0] == 1) memmove(shape, shape + 1, sizeof(int64_t) * (size_t)--nd);
    int ok = nd == dst->ndim;
    for (int i = 0; ok && i < nd; i++) ok = shape[i] == dst->shape[i];
    if (!ok) {
        char want[96];
        return ttt__errbuf(err, err_len, "%s: tensor '%s' has ne [%lld, %lld, %lld, %lld], expected shape %s", g->path,
                           name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3],
                           ttt_shape_str(dst, want, sizeof want));
    }
    const int64_t n = ttt_numel(dst);
    float *buf = malloc(sizeof(float) * (size_t)n), *tmp = NULL;
    if (!buf) return ttt__errbuf(err, err_len, "llama: out of memory for '%s'", name);
    int rc = ttt_gguf_tensor_f32(t, buf, err, err_len);
    if (rc == TTT_OK && unpermute_heads > 0) {
        const int64_t cols = dst->shape[dst->ndim - 1];
        if (!(tmp = malloc(sizeof(float) * (size_t)(hd * cols)))) rc = ttt__errbuf(err, err_len, "llama: out of memory");
        else unpermute_rows(buf, unpermute_heads, hd, dst->ndim == 2 ? cols : 1, tmp);
    }
    if (rc == TTT_OK && ttt__upload(ctx, "llama_load", dst, buf, sizeof(float) * (size_t)n) != TTT_OK)
        rc = ttt__errbuf(err, err_len, "%s", ttt_error(ctx));
    free(buf);
    free(tmp);
    return rc;
}

static int gguf_int(const ttt_gguf *g, const char *arch, const char *key, int64_t *out, int64_t def, char *err,
                    size_t err_len) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    if (!ttt_gguf_find(g, k)) {
        if (def < 0) return ttt__errbuf(err, err_len, "%s: no metadata key '%s'", g->path, k);
        *out = def;
        return TTT_OK;
    }
    return ttt_gguf_get_int(g, k, out, err, err_len);
}

static int gguf_float(const ttt_gguf *g, const char *arch, const char *key, double *out, double def, char *err,
                      size_t err_len) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    if (!ttt_gguf_find(g, k)) {
        if (def < 0) return ttt__errbuf(err, err_len, "%s: no metadata key '%s'", g->path, k);
        *out = def;
        return TTT_OK;
    }
    return ttt_gguf_get_float(g, k, out, err, err_len);
}

static int load_gguf(ttt_ctx *ctx, const char *path, ttt_llama *m, char *err, size_t err_len) {
    ttt_gguf *g = NULL;
    if (ttt_gguf_open(path, &g, err, err_len)) return TTT_ERR;
    int rc = TTT_ERR;
    ttt_llama_config *c = &m->cfg;
    const char *s;
    size_t sl;
    float *factors = NULL;
    if (ttt_gguf_get_str(g, "general.architecture", &s, &sl, err, err_len)) goto done;
    if (sl != 5 || memcmp(s, "llama", 5)) {
        ttt__errbuf(err, err_len, "%s: architecture '%.*s' is not supported (GGUF: llama; Mistral and SmolLM2 are "
                    "stored as llama)", path, (int)(sl > 32 ? 32 : sl), s);
        goto done;
    }
    snprintf(c->arch, sizeof c->arch, "llama");
    const char *a = "llama";
    int64_t rope_dims = 0;
    if (gguf_int(g, a, "block_count", &c->depth, -1, err, err_len) ||
        gguf_int(g, a, "embedding_length", &c->dim, -1, err, err_len) ||
        gguf_int(g, a, "feed_forward_length", &c->mlp_hidden, -1, err, err_len) ||
        gguf_int(g, a, "attention.head_count", &c->heads, -1, err, err_len) ||
        gguf_int(g, a, "context_length", &c->context, 0, err, err_len) ||
        gguf_float(g, a, "rope.freq_base", &c->rope_theta, 10000.0, err, err_len) ||
        gguf_float(g, a, "attention.layer_norm_rms_epsilon", &c->norm_eps, -1, err, err_len))
        goto done;
    if (c->heads < 1) {
        ttt__errbuf(err, err_len, "%s: attention.head_count %lld must be >= 1", path, (long long)c->heads);
        goto done;
    }
    if (gguf_int(g, a, "attention.head_count_kv", &c->kv_heads, c->heads, err, err_len) ||
        gguf_int(g, a, "attention.key_length", &c->head_dim, c->dim / c->heads, err, err_len) ||
        gguf_int(g, a, "rope.dimension_count", &rope_dims, c->head_dim, err, err_len))
        goto done;
    if (rope_dims != c->head_dim) {
        ttt__errbuf(err, err_len, "%s: partial RoPE (rope.dimension_count %lld of head_dim %lld) is not supported", path,
                    (long long)rope_dims, (long long)c->head_dim);
        goto done;
    }
    const ttt_gguf_tensor *emb = ttt_gguf_tensor_find(g, "token_embd.weight");
    if (!emb || emb->ndim != 2) {
        ttt__errbuf(err, err_len, "%s: no 2-d tensor token_embd.weight", path);
        goto done;
    }
    c->vocab = emb->ne[1];
    c->tied = ttt_gguf_tensor_find(g, "output.weight") == NULL;
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", a);
    if (ttt_gguf_find(g, key)) {
        if (ttt_gguf_get_str(g, key, &s, &sl, err, err_len)) goto done;
        if (sl == 6 && !memcmp(s, "linear", 6)) {
            c->rope_scaling = TTT_ROPE_LINEAR;
            if (gguf_float(g, a, "rope.scaling.factor", &c->rope_factor, -1, err, err_len)) goto done;
        } else if (!(sl == 4 && !memcmp(s, "none", 4))) {
            ttt__errbuf(err, err_len, "%s: rope scaling '%.*s' is not supported (none, linear, or a rope_freqs tensor)",
                        path, (int)(sl > 32 ? 32 : sl), s);
            goto done;
        }
    }
    const ttt_gguf_tensor *rf = ttt_gguf_tensor_find(g, "rope_freqs.weight");
    if (rf) { /* Llama 3.1's scaling, stored by llama.cpp as one divisor per frequency */
        if (c->rope_scaling == TTT_ROPE_LINEAR) {
            ttt__errbuf(err, err_len, "%s: both linear rope scaling and rope_freqs.weight", path);
            goto done;
        }
        if (ttt_gguf_tensor_numel(rf) != c->head_dim / 2 || !(factors = malloc(sizeof(float) * (size_t)(c->head_dim / 2))) ||
            ttt_gguf_tensor_f32(rf, factors, err, err_len)) {
            if (!err || !err[0] || ttt_gguf_tensor_numel(rf) != c->head_dim / 2)
                ttt__errbuf(err, err_len, "%s: rope_freqs.weight must hold head_dim / 2 = %lld factors", path,
                            (long long)(c->head_dim / 2));
            goto done;
        }
        for (int64_t i = 0; i < c->head_dim / 2; i++)
            if (!(factors[i] > 0) || !isfinite(factors[i])) {
                ttt__errbuf(err, err_len, "%s: rope_freqs.weight[%lld] = %g must be > 0", path, (long long)i, factors[i]);
                goto done;
            }
        c->rope_scaling = TTT_ROPE_FACTORS;
    }
    if (check_config(c, path, err, err_len) || make_inv_freq(m, factors, err, err_len) ||
        alloc_params(ctx, m, err, err_len))
        goto done;
    if (gguf_tensor_into(ctx, g, "token_embd.weight", m->embed, 0, 0, err, err_len) ||
        gguf_tensor_into(ctx, g, "output_norm.weight", m->norm, 0, 0, err, err_len) ||
        (!c->tied && gguf_tensor_into(ctx, g, "output.weight", m->head, 0, 0, err, err_len)))
        goto done;
    for (int64_t i = 0; i < c->depth; i++) {
        ttt_llama_block *b = &m->blocks[i];
        const struct {
            const char *name;
            ttt_tensor *t;
            int64_t unpermute;
        } items[] = {
            {"attn_norm.weight", b->attn_norm, 0}, {"attn_q.weight", b->q, c->heads},  {"attn_k.weight", b->k, c->kv_heads},
            {"attn_v.weight", b->v, 0},            {"attn_output.weight", b->o, 0},   {"ffn_norm.weight", b->mlp_norm, 0},
            {"ffn_gate.weight", b->gate, 0},       {"ffn_up.weight", b->up, 0},       {"ffn_down.weight", b->down, 0},
        };
        for (size_t j = 0; j < sizeof items / sizeof items[0]; j++) {
            char name[96];
            snprintf(name, sizeof name, "blk.%lld.%s", (long long)i, items[j].name);
            if (gguf_tensor_into(ctx, g, name, items[j].t, items[j].unpermute, c->head_dim, err, err_len)) goto done;
        }
    }
    /* the tokenizer and the chat template */
    if (ttt_tokenizer_load_gguf(g, &m->tok, err, err_len)) goto done;
    int64_t v;
    m->bos = m->eos = m->eot = -1;
    if (ttt_gguf_find(g, "tokenizer.ggml.bos_token_id") && ttt_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &v, err, err_len) == TTT_OK)
        m->bos = (int32_t)v;
    if (ttt_gguf_find(g, "tokenizer.ggml.eos_token_id") && ttt_gguf_get_int(g, "tokenizer.ggml.eos_token_id", &v, err, err_len) == TTT_OK)
        m->eos = (int32_t)v;
    if (ttt_gguf_find(g, "tokenizer.ggml.add_bos_token") && ttt_gguf_get_int(g, "tokenizer.ggml.add_bos_token", &v, err, err_len) == TTT_OK)
        m->add_bos = v != 0;
    if (ttt_gguf_find(g, "tokenizer.chat_template") && ttt_gguf_get_str(g, "tokenizer.chat_template", &s, &sl, err, err_len) == TTT_OK) {
        if (!(m->chat_template = malloc(sl + 1))) {
            ttt__errbuf(err, err_len, "llama: out of memory");
            goto done;
        }
        memcpy(m->chat_template, s, sl);
        m->chat_template[sl] = 0;
    }
    snprintf(m->source, sizeof m->source, "gguf");
    rc = TTT_OK;
done:
    free(factors);
    ttt_gguf_close(g);
    return rc;
}

/* ---- Hugging Face folders ---- */

#ifdef TTT_HAVE_JSONC
static int read_json(const char *path, json_object **out, char *err, size_t err_len) {
    char *data = NULL;
    size_t len = 0;
    *out = NULL;
    if (ttt_read_file(path, &data, &len, err, err_len)) return TTT_ERR;
    json_tokener *tk = json_tokener_new();
    json_object *o = tk ? json_tokener_parse_ex(tk, data, (int)(len > INT32_MAX ? INT32_MAX : len)) : NULL;
    const int ok = o && json_tokener_get_error(tk) == json_tokener_success && json_object_is_type(o, json_type_object);
    if (tk) json_tokener_free(tk);
    free(data);
    if (!ok) {
        json_object_put(o);
        return ttt__errbuf(err, err_len, "%s: not a valid JSON object", path);
    }
    *out = o;
    return TTT_OK;
}

static json_object *jget(json_object *o, const char *key) {
    json_object *v = NULL;
    return o && json_object_object_get_ex(o, key, &v) && !json_object_is_type(v, json_type_null) ? v : NULL;
}

static int jint(json_object *o, const char *key, int64_t *out, int64_t def, const char *where, char *err, size_t err_len) {
    json_object *v = jget(o, key);
    if (!v) {
        if (def < 0) return ttt__errbuf(err, err_len, "%s: missing \"%s\"", where, key);
        *out = def;
        return TTT_OK;
    }
    if (!json_object_is_type(v, json_type_int)) return ttt__errbuf(err, err_len, "%s: \"%s\" is not an integer", where, key);
    *out = json_object_get_int64(v);
    return TTT_OK;
}

static int jnum(json_object *o, const char *key, double *out, double def, const char *where, char *err, size_t err_len) {
    json_object *v = jget(o, key);
    if (!v) {
        if (def < 0) return ttt__errbuf(err, err_len, "%s: missing \"%s\"", where, key);
        *out = def;
        return TTT_OK;
    }
    if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double))
        return ttt__errbuf(err, err_len, "%s: \"%s\" is not a number", where, key);
    *out = json_object_get_double(v);
    return TTT_OK;
}

/* A special token named in tokenizer_config.json: a string or {"content": ...}. */
static int32_t special_id(const ttt_tokenizer *tok, json_object *v) {
    if (v && json_object_is_type(v, json_type_object)) v = jget(v, "content");
    if (!v || !json_object_is_type(v, json_type_string)) return -1;
    return ttt_tokenizer_piece_id(tok, json_object_get_string(v), (size_t)json_object_get_string_len(v));
}

static int hf_config(const char *dir, ttt_llama_config *c, json_object **cfg_out, char *err, size_t err_len) {
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_object *j;
    if (read_json(path, &j, err, err_len)) return TTT_ERR;
    *cfg_out = j;
    json_object *mt = jget(j, "model_type");
    const char *type = mt && json_object_is_type(mt, json_type_string) ? json_object_get_string(mt) : "";
    if (strcmp(type, "llama") && strcmp(type, "mistral") && strcmp(type, "qwen2"))
        return ttt__errbuf(err, err_len, "%s: model_type \"%s\" is not supported (llama, mistral, qwen2)", path, type);
    snprintf(c->arch, sizeof c->arch, "%s", type);
    if (jint(j, "vocab_size", &c->vocab, -1, path, err, err_len) || jint(j, "hidden_size", &c->dim, -1, path, err, err_len) ||
        jint(j, "num_hidden_layers", &c->depth, -1, path, err, err_len) ||
        jint(j, "num_attention_heads", &c->heads, -1, path, err, err_len) ||
        jint(j, "intermediate_size", &c->mlp_hidden, -1, path, err, err_len) ||
        jint(j, "max_position_embeddings", &c->context, 0, path, err, err_len) ||
        jnum(j, "rms_norm_eps", &c->norm_eps, 1e-6, path, err, err_len))
        return TTT_ERR;
    if (c->heads < 1) return ttt__errbuf(err, err_len, "%s: num_attention_heads must be >= 1", path);
    if (jint(j, "num_key_value_heads", &c->kv_heads, c->heads, path, err, err_len) ||
        jint(j, "head_dim", &c->head_dim, c->dim / c->heads, path, err, err_len))
        return TTT_ERR;
    json_object *tie = jget(j, "tie_word_embeddings");
    c->tied = tie ? json_object_get_boolean(tie) : 0;
    json_object *ab = jget(j, "attention_bias");
    c->qkv_bias = !strcmp(type, "qwen2") || (ab && json_object_get_boolean(ab));
    if (!strcmp(type, "mistral") && jint(j, "sliding_window", &c->window, 0, path, err, err_len)) return TTT_ERR;
    json_object *usw = jget(j, "use_sliding_window");
    if (!strcmp(type, "qwen2") && usw && json_object_get_boolean(usw))
        return ttt__errbuf(err, err_len, "%s: Qwen2 with use_sliding_window true is not supported", path);
    /* rope: transformers < 5 writes rope_theta and rope_scaling, 5 writes rope_parameters */
    json_object *rp = jget(j, "rope_parameters"), *rs = rp ? rp : jget(j, "rope_scaling");
    if (jnum(rp && jget(rp, "rope_theta") ? rp : j, "rope_theta", &c->rope_theta, 10000.0, path, err, err_len))
        return TTT_ERR;
    if (rs) {
        json_object *ty = jget(rs, "rope_type");
        if (!ty) ty = jget(rs, "type");
        const char *t = ty && json_object_is_type(ty, json_type_string) ? json_object_get_string(ty) : "default";
        if (!strcmp(t, "linear")) {
            c->rope_scaling = TTT_ROPE_LINEAR;
            if (jnum(rs, "factor", &c->rope_factor, -1, path, err, err_len)) return TTT_ERR;
        } else if (!strcmp(t, "llama3")) {
            c->rope_scaling = TTT_ROPE_LLAMA3;
            if (jnum(rs, "factor", &c->rope_factor, -1, path, err, err_len) ||
                jnum(rs, "low_freq_factor", &c->rope_low_freq_factor, -1, path, err, err_len) ||
                jnum(rs, "high_freq_factor", &c->rope_high_freq_factor, -1, path, err, err_len) ||
                jint(rs, "original_max_position_embeddings", &c->rope_original_context, -1, path, err, err_len))
                return TTT_ERR;
        } else if (strcmp(t, "default"))
            return ttt__errbuf(err, err_len, "%s: rope scaling \"%s\" is not supported (default, linear, llama3)", path, t);
    }
    return check_config(c, path, err, err_len);
}

/* The tensors of the model by their Hugging Face names. */
static int hf_named(const ttt_llama *m, ttt_named_tensor **out, int *n_out) {
    const int cap = 3 + (int)m->cfg.depth * 12;
    ttt_named_tensor *nt = calloc((size_t)cap, sizeof *nt);
    char **names = calloc((size_t)cap, sizeof *names);
    if (!nt || !names) return free(nt), free(names), TTT_ERR;
    int n = 0;
#define ADD(t, ...)                                                   \
    do {                                                              \
        if (t) {                                                      \
            char buf[128];                                            \
            snprintf(buf, sizeof buf, __VA_ARGS__);                   \
            names[n] = strdup(buf);                                   \
            nt[n] = (ttt_named_tensor){names[n], (t)};                \
            n++;                                                      \
        }                                                             \
    } while (0)
    ADD(m->embed, "model.embed_tokens.weight");
    ADD(m->norm, "model.norm.weight");
    if (!m->cfg.tied) ADD(m->head, "lm_head.weight");
    for (int64_t i = 0; i < m->cfg.depth; i++) {
        const ttt_llama_block *b = &m->blocks[i];
        const long long L = (long long)i;
        ADD(b->attn_norm, "model.layers.%lld.input_layernorm.weight", L);
        ADD(b->q, "model.layers.%lld.self_attn.q_proj.weight", L);
        ADD(b->k, "model.layers.%lld.self_attn.k_proj.weight", L);
        ADD(b->v, "model.layers.%lld.self_attn.v_proj.weight", L);
        ADD(b->q_bias, "model.layers.%lld.self_attn.q_proj.bias", L);
        ADD(b->k_bias, "model.layers.%lld.self_attn.k_proj.bias", L);
        ADD(b->v_bias, "model.layers.%lld.self_attn.v_proj.bias", L);
        ADD(b->o, "model.layers.%lld.self_attn.o_proj.weight", L);
        ADD(b->mlp_norm, "model.layers.%lld.post_attention_layernorm.weight", L);
        ADD(b->gate, "model.layers.%lld.mlp.gate_proj.weight", L);
        ADD(b->up, "model.layers.%lld.mlp.up_proj.weight", L);
        ADD(b->down, "model.layers.%lld.mlp.down_proj.weight", L);
    }
#undef ADD
    for (int i = 0; i < n; i++)
        if (!names[i]) return TTT_ERR;
    free(names); /* the strings stay, owned by nt (freed by free_named) */
    *out = nt;
    *n_out = n;
    return TTT_OK;
}

static void free_named(ttt_named_tensor *nt, int n) {
    for (int i = 0; nt && i < n; i++) free((char *)nt[i].name);
    free(nt);
}

/* Loads the weights: model.safetensors, or the shards an index names. */
static int hf_weights(ttt_ctx *ctx, const char *dir, ttt_llama *m, char *err, size_t err_len) {
    ttt_named_tensor *nt = NULL;
    int n = 0, rc = TTT_ERR;
    if (hf_named(m, &nt, &n)) return ttt__errbuf(err, err_len, "llama: out of memory");
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    struct stat st;
    if (stat(path, &st) == 0) {
        if (ttt_load_safetensors(ctx, path, n, nt, NULL) == TTT_OK) rc = TTT_OK;
        else ttt__errbuf(err, err_len, "%s", ttt_error(ctx));
        free_named(nt, n);
        return rc;
    }
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    json_object *idx = NULL;
    if (read_json(path, &idx, err, err_len)) {
        ttt__errbuf(err, err_len, "%s: neither model.safetensors nor model.safetensors.index.json", dir);
        free_named(nt, n);
        return TTT_ERR;
    }
    json_object *wm = jget(idx, "weight_map");
    ttt_named_tensor *part = calloc((size_t)n, sizeof *part);
    char *done = calloc((size_t)n, 1);
    if (!wm || !json_object_is_type(wm, json_type_object) || !part || !done) {
        ttt__errbuf(err, err_len, "%s: no weight_map object", path);
        goto out;
    }
    for (int i = 0; i < n; i++) {
        json_object *f = jget(wm, nt[i].name);
        if (!f || !json_object_is_type(f, json_type_string)) {
            ttt__errbuf(err, err_len, "%s: the weight_map does not name %s", path, nt[i].name);
            goto out;
        }
    }
    for (int i = 0; i < n; i++) { /* one load per shard file, with the tensors it holds */
        if (done[i]) continue;
        const char *file = json_object_get_string(jget(wm, nt[i].name));
        if (strchr(file, '/')) {
            ttt__errbuf(err, err_len, "%s: shard name \"%s\" has a '/'", path, file);
            goto out;
        }
        int k = 0;
        for (int j = i; j < n; j++)
            if (!done[j] && !strcmp(json_object_get_string(jget(wm, nt[j].name)), file)) part[k++] = nt[j], done[j] = 1;
        char shard[4200];
        snprintf(shard, sizeof shard, "%s/%s", dir, file);
        if (ttt_load_safetensors(ctx, shard, k, part, NULL) != TTT_OK) {
            ttt__errbuf(err, err_len, "%s", ttt_error(ctx));
            goto out;
        }
    }
    rc = TTT_OK;
out:
    free(part);
    free(done);
    json_object_put(idx);
    free_named(nt, n);
    return rc;
}

static int load_hf(ttt_ctx *ctx, const char *dir, ttt_llama *m, char *err, size_t err_len) {
    json_object *cfg = NULL, *tc = NULL;
    int rc = TTT_ERR;
    if (hf_config(dir, &m->cfg, &cfg, err, err_len) || make_inv_freq(m, NULL, err, err_len) ||
        alloc_params(ctx, m, err, err_len) || hf_weights(ctx, dir, m, err, err_len))
        goto done;
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (ttt_tokenizer_load_json(path, &m->tok, err, err_len)) goto done;
    m->bos = m->eos = m->eot = -1;
    int64_t v = 0;
    if (jget(cfg, "bos_token_id") && jint(cfg, "bos_token_id", &v, 0, dir, err, err_len) == TTT_OK) m->bos = (int32_t)v;
    if (jget(cfg, "eos_token_id") && jint(cfg, "eos_token_id", &v, 0, dir, NULL, 0) == TTT_OK) m->eos = (int32_t)v;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    struct stat st;
    if (stat(path, &st) == 0) {
        if (read_json(path, &tc, err, err_len)) goto done;
        int32_t id;
        if ((id = special_id(m->tok, jget(tc, "bos_token"))) >= 0) m->bos = id;
        if ((id = special_id(m->tok, jget(tc, "eos_token"))) >= 0) m->eos = id;
        json_object *ab = jget(tc, "add_bos_token");
        m->add_bos = ab ? json_object_get_boolean(ab) : 0;
        json_object *ct = jget(tc, "chat_template");
        if (ct && json_object_is_type(ct, json_type_string) && !(m->chat_template = strdup(json_object_get_string(ct)))) {
            ttt__errbuf(err, err_len, "llama: out of memory");
            goto done;
        }
    }
    snprintf(m->source, sizeof m->source, "hf");
    rc = TTT_OK;
done:
    json_object_put(cfg);
    json_object_put(tc);
    return rc;
}
#else
static int load_hf(ttt_ctx *ctx, const char *dir, ttt_llama *m, char *err, size_t err_len) {
    (void)ctx, (void)m;
    return ttt__errbuf(err, err_len, "%s: reading Hugging Face folders needs json-c (install libjson-c-dev, rebuild)", dir);
}
#endif

int ttt_llama_load(ttt_ctx *ctx, const char *path, ttt_llama *m, char *err, size_t err_len) {
    if (m) *m = (ttt_llama){0};
    if (!ctx || !path || !m) return ttt__errbuf(err, err_len, "llama_load: context, path and model must not be NULL");
    struct stat st;
    if (stat(path, &st) != 0) return ttt__errbuf(err, err_len, "cannot open %s: no such file or folder", path);
    const int rc = S_ISDIR(st.st_mode) ? load_hf(ctx, path, m, err, err_len) : load_gguf(ctx, path, m, err, err_len);
    if (rc != TTT_OK) {
        ttt_llama_free(ctx, m);
        return TTT_ERR;
    }
    if (m->chat_template && strstr(m->chat_template, "<|im_end|>"))
        m->eot = ttt_tokenizer_piece_id(m->tok, "<|im_end|>", 10);
    if (ttt_tokenizer_vocab_size(m->tok) > m->cfg.vocab) {
        ttt__errbuf(err, err_len, "%s: the tokenizer has %d tokens, the model's vocabulary %lld", path,
                    ttt_tokenizer_vocab_size(m->tok), (long long)m->cfg.vocab);
        ttt_llama_free(ctx, m);
        return TTT_ERR;
    }
    return TTT_OK;
}

/* ---- forward ---- */

static ttt_tensor *linear(ttt_ctx *ctx, ttt_tensor *x, ttt_tensor *w, ttt_tensor *bias) {
    ttt_tensor *y = ttt_matmul(ctx, x, w, 0, 1);
    return bias ? ttt_add(ctx, y, bias) : y;
}

/* RoPE on x [B, T, heads, hd] at positions pos0 + t: the engine's op when the
 * frequencies are theta's, else x cos + rotate_half(x) sin from host tables. */
static ttt_tensor *rope(ttt_ctx *ctx, const ttt_llama *m, ttt_tensor *x, int64_t pos0) {
    if (!x) return NULL;
    if (!m->inv_freq) return ttt_rope(ctx, x, 1, pos0, m->cfg.rope_theta);
    const int64_t T = x->shape[1], half = m->cfg.head_dim / 2;
    float *cs = malloc(sizeof(float) * (size_t)(2 * T * half));
    if (!cs) return ttt__set_error(ctx, "llama rope: out of host memory"), NULL;
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < half; i++) {
            const double ang = (double)(pos0 + t) * m->inv_freq[i];
            cs[t * half + i] = (float)cos(ang);
            cs[T * half + t * half + i] = (float)sin(ang);
        }
    ttt_tensor *cosv = ttt_from_host(ctx, TTT_F32, TTT_DIMS(T, 1, half), cs);
    ttt_tensor *sinv = ttt_from_host(ctx, TTT_F32, TTT_DIMS(T, 1, half), cs + T * half);
    free(cs);
    ttt_tensor *x1 = ttt_slice(ctx, x, 3, 0, half, 1), *x2 = ttt_slice(ctx, x, 3, half, 2 * half, 1);
    ttt_tensor *parts[2] = {ttt_sub(ctx, ttt_mul(ctx, x1, cosv), ttt_mul(ctx, x2, sinv)),
                            ttt_add(ctx, ttt_mul(ctx, x2, cosv), ttt_mul(ctx, x1, sinv))};
    return ttt_concat(ctx, 2, parts, 3);
}

/* [B, T, n*hd] -> [B, n, T, hd] */
static ttt_tensor *heads_first(ttt_ctx *ctx, ttt_tensor *x, int64_t n, int64_t hd) {
    if (!x) return NULL;
    return ttt_permute(ctx, ttt_reshape(ctx, x, TTT_DIMS(x->shape[0], x->shape[1], n, hd)), (const int[]){0, 2, 1, 3});
}

/* Grouped-query attention: q [B, H, T, hd], k, v [B, Hkv, Tk, hd] -> [B, T, H * hd]. */
static ttt_tensor *gqa(ttt_ctx *ctx, const ttt_llama *m, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v) {
    if (!q || !k || !v) return NULL;
    const ttt_llama_config *c = &m->cfg;
    const int64_t B = q->shape[0], T = q->shape[2], Tk = k->shape[2], G = c->heads / c->kv_heads, hd = c->head_dim;
    ttt_tensor *o;
    if (G == 1) o = ttt_attention(ctx, q, k, v, 1, c->window, 0.0);
    else {
        const int64_t kshape[5] = {B, c->kv_heads, G, Tk, hd};
        ttt_tensor *q5 = ttt_reshape(ctx, ttt_contiguous(ctx, q), TTT_DIMS(B, c->kv_heads, G, T, hd));
        ttt_tensor *k5 = ttt_expand(ctx, ttt_reshape(ctx, k, TTT_DIMS(B, c->kv_heads, 1, Tk, hd)), 5, kshape);
        ttt_tensor *v5 = ttt_expand(ctx, ttt_reshape(ctx, v, TTT_DIMS(B, c->kv_heads, 1, Tk, hd)), 5, kshape);
        o = ttt_reshape(ctx, ttt_attention(ctx, q5, k5, v5, 1, c->window, 0.0), TTT_DIMS(B, c->heads, T, hd));
    }
    if (!o) return NULL;
    return ttt_reshape(ctx, ttt_contiguous(ctx, ttt_permute(ctx, o, (const int[]){0, 2, 1, 3})),
                       TTT_DIMS(B, T, c->heads * hd));
}

/* One block over x [B, T, D] at positions pos0..; with a cache, the new keys
 * and values are written at pos0 and attention reads every cached position. */
static ttt_tensor *block(ttt_ctx *ctx, const ttt_llama *m, int64_t i, ttt_tensor *x, int64_t pos0, ttt_lm_cache *cache) {
    const ttt_llama_config *c = &m->cfg;
    const ttt_llama_block *b = &m->blocks[i];
    const int64_t B = x->shape[0], T = x->shape[1], hd = c->head_dim;
    ttt_tensor *h = ttt_rms_norm(ctx, x, b->attn_norm, c->norm_eps);
    ttt_tensor *q = linear(ctx, h, b->q, b->q_bias), *k = linear(ctx, h, b->k, b->k_bias), *v = linear(ctx, h, b->v, b->v_bias);
    if (!q || !k || !v) return NULL;
    q = rope(ctx, m, ttt_reshape(ctx, q, TTT_DIMS(B, T, c->heads, hd)), pos0);
    k = rope(ctx, m, ttt_reshape(ctx, k, TTT_DIMS(B, T, c->kv_heads, hd)), pos0);
    q = q ? ttt_permute(ctx, q, (const int[]){0, 2, 1, 3}) : NULL;
    k = k ? ttt_permute(ctx, k, (const int[]){0, 2, 1, 3}) : NULL;
    v = heads_first(ctx, v, c->kv_heads, hd);
    if (!q || !k || !v) return NULL;
    if (cache) {
        if (ttt__copy_into(ctx, cache->k[i], 2, pos0, 1, k) || ttt__copy_into(ctx, cache->v[i], 2, pos0, 1, v)) return NULL;
        k = ttt_slice(ctx, cache->k[i], 2, 0, pos0 + T, 1);
        v = ttt_slice(ctx, cache->v[i], 2, 0, pos0 + T, 1);
    }
    x = ttt_add(ctx, x, linear(ctx, gqa(ctx, m, q, k, v), b->o, NULL));
    h = ttt_rms_norm(ctx, x, b->mlp_norm, c->norm_eps);
    ttt_tensor *f = ttt_swiglu(ctx, linear(ctx, h, b->gate, NULL), linear(ctx, h, b->up, NULL));
    return ttt_add(ctx, x, linear(ctx, f, b->down, NULL));
}

/* Embedding, blocks, norm, head. Without a graph each block's temporaries are
 * released once its output is copied out, so memory stays one block deep. */
static ttt_tensor *run(ttt_ctx *ctx, const ttt_llama *m, ttt_tensor *ids, int64_t pos0, ttt_lm_cache *cache) {
    ttt_tensor *x = ttt_embedding(ctx, m->embed, ids);
    if (!x) return NULL;
    ttt_tensor *all[] = {m->embed, m->head, m->norm};
    int record = ttt__recording(ctx, 3, all) || ttt__recording(ctx, 1, &x);
    for (int64_t i = 0; !record && i < m->cfg.depth; i++) { /* an adapter's matrices may carry a graph */
        const ttt_llama_block *b = &m->blocks[i];
        ttt_tensor *w[] = {b->q, b->k, b->v, b->o, b->gate, b->up, b->down};
        record = ttt__recording(ctx, 7, w);
    }
    ttt_tensor *buf[2] = {NULL, NULL};
    if (!record && !((buf[0] = ttt_new(ctx, TTT_F32, 3, x->shape)) && (buf[1] = ttt_new(ctx, TTT_F32, 3, x->shape))))
        return NULL;
    for (int64_t i = 0; x && i < m->cfg.depth; i++) {
        if (record) {
            x = block(ctx, m, i, x, pos0, cache);
            continue;
        }
        const ttt_mark_t mark = ttt_mark(ctx);
        ttt_tensor *y = block(ctx, m, i, x, pos0, cache);
        if (!y || ttt__copy_into(ctx, buf[i % 2], 0, 0, 1, y) != TTT_OK) return NULL;
        ttt_release(ctx, mark);
        x = buf[i % 2];
    }
    return ttt_matmul(ctx, ttt_rms_norm(ctx, x, m->norm, m->cfg.norm_eps), m->head, 0, 1);
}

static int check_ids(ttt_ctx *ctx, const char *fn, const ttt_llama *m, const ttt_tensor *ids) {
    if (!m || !m->embed || !m->blocks) return ttt__set_error(ctx, "%s: the model is not loaded", fn);
    char s[96];
    if (ids->dtype != TTT_I32 || ids->ndim != 2 || ids->shape[0] < 1 || ids->shape[1] < 1)
        return ttt__set_error(ctx, "%s: ids %s %s must be i32 [B, T] with B, T >= 1", fn, ttt_dtype_name(ids->dtype),
                              ttt_shape_str(ids, s, sizeof s));
    return TTT_OK;
}

ttt_tensor *ttt_llama_forward(ttt_ctx *ctx, const ttt_llama *m, ttt_tensor *ids, int64_t pos0) {
    if (!ctx || !ids) return NULL;
    if (check_ids(ctx, "llama_forward", m, ids)) return NULL;
    if (pos0 < 0) return ttt__set_error(ctx, "llama_forward: pos0 %lld must be >= 0", (long long)pos0), NULL;
    return run(ctx, m, ids, pos0, NULL);
}

int ttt_llama_cache_init(ttt_ctx *ctx, const ttt_llama *m, ttt_lm_cache *c, int64_t batch, int64_t max_len) {
    if (!ctx) return TTT_ERR;
    if (!c) return ttt__set_error(ctx, "llama_cache_init: cache must not be NULL");
    *c = (ttt_lm_cache){0};
    if (!m || !m->blocks) return ttt__set_error(ctx, "llama_cache_init: the model is not loaded");
    if (batch < 1 || batch > (1 << 20) || max_len < 1 || max_len > ((int64_t)1 << 32))
        return ttt__set_error(ctx, "llama_cache_init: batch %lld must be in [1, 2^20] and max_len %lld in [1, 2^32]",
                              (long long)batch, (long long)max_len);
    c->batch = batch;
    c->capacity = max_len;
    c->k = calloc((size_t)m->cfg.depth, sizeof *c->k);
    c->v = calloc((size_t)m->cfg.depth, sizeof *c->v);
    if (!c->k || !c->v) {
        ttt_lm_cache_free(ctx, c);
        return ttt__set_error(ctx, "llama_cache_init: out of host memory");
    }
    c->k_depth = m->cfg.depth;
    for (int64_t i = 0; i < m->cfg.depth; i++) {
        const int64_t shape[4] = {batch, m->cfg.kv_heads, max_len, m->cfg.head_dim};
        if (!(c->k[i] = ttt_persistent(ctx, TTT_F32, 4, shape, "llama.cache.k")) ||
            !(c->v[i] = ttt_persistent(ctx, TTT_F32, 4, shape, "llama.cache.v"))) {
            ttt_lm_cache_free(ctx, c);
            return TTT_ERR;
        }
    }
    return TTT_OK;
}

ttt_tensor *ttt_llama_decode(ttt_ctx *ctx, const ttt_llama *m, ttt_lm_cache *c, ttt_tensor *ids) {
    static const char fn[] = "llama_decode";
    if (!ctx || !ids) return NULL;
    if (check_ids(ctx, fn, m, ids)) return NULL;
    if (!c || !c->k || c->k_depth != m->cfg.depth || !c->k[0] || c->k[0]->shape[1] != m->cfg.kv_heads ||
        c->k[0]->shape[3] != m->cfg.head_dim)
        return ttt__set_error(ctx, "%s: the cache is not initialised for this model (ttt_llama_cache_init)", fn), NULL;
    const int64_t B = ids->shape[0], T = ids->shape[1];
    if (B != c->batch)
        return ttt__set_error(ctx, "%s: ids have batch %lld, the cache %lld", fn, (long long)B, (long long)c->batch), NULL;
    if (c->len + T > c->capacity)
        return ttt__set_error(ctx, "%s: %lld cached + %lld new tokens exceed the cache's %lld positions", fn,
                              (long long)c->len, (long long)T, (long long)c->capacity),
               NULL;
    ttt_no_grad_begin(ctx);
    ttt_tensor *out = T <= DECODE_CHUNK ? NULL : ttt_new(ctx, TTT_F32, TTT_DIMS(B, T, m->cfg.vocab));
    for (int64_t t0 = 0; t0 < T; t0 += DECODE_CHUNK) {
        const int64_t t1 = t0 + DECODE_CHUNK < T ? t0 + DECODE_CHUNK : T;
        const ttt_mark_t mark = ttt_mark(ctx);
        ttt_tensor *piece = T <= DECODE_CHUNK ? ids : ttt_contiguous(ctx, ttt_slice(ctx, ids, 1, t0, t1, 1));
        ttt_tensor *lg = run(ctx, m, piece, c->len, c);
        if (!lg) {
            out = NULL;
            break;
        }
        c->len += t1 - t0;
        if (T <= DECODE_CHUNK) {
            out = lg;
            break;
        }
        if (!out || ttt__copy_into(ctx, out, 1, t0, 1, lg) != TTT_OK) {
            out = NULL;
            break;
        }
        ttt_release(ctx, mark);
    }
    ttt_no_grad_end(ctx);
    return out;
}

/* ---- chat template ---- */

static int check_chatml(const ttt_llama *m, char *err, size_t err_len) {
    const char *t = m->chat_template;
    if (!t) return ttt__errbuf(err, err_len, "the model has no chat template");
    if (!strstr(t, "<|im_start|>") || !strstr(t, "<|im_end|>"))
        return ttt__errbuf(err, err_len, "the chat template is not of the ChatML family (<|im_start|>role ... "
                           "<|im_end|>); ttt renders only those");
    return TTT_OK;
}

int ttt_llama_chat_next(const ttt_llama *m, const char *user, char **out, char *err, size_t err_len) {
    if (!m || !user || !out) return ttt__errbuf(err, err_len, "llama_chat_next: NULL argument");
    *out = NULL;
    if (check_chatml(m, err, err_len)) return TTT_ERR;
    const size_t need = strlen(user) + 96;
    if (!(*out = malloc(need))) return ttt__errbuf(err, err_len, "out of memory");
    snprintf(*out, need, "<|im_end|>\n<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n", user);
    return TTT_OK;
}

int ttt_llama_chat_prompt(const ttt_llama *m, const char *system, const char *user, char **out, char *err,
                          size_t err_len) {
    if (!m || !user || !out) return ttt__errbuf(err, err_len, "llama_chat_prompt: NULL argument");
    *out = NULL;
    if (check_chatml(m, err, err_len)) return TTT_ERR;
    const char *t = m->chat_template;
    /* the default system message: the first literal '<|im_start|>system\n...<|im_end|>' in the
     * template (Qwen2's first one joins the user's system message: not a literal) */
    char *def = NULL;
    for (const char *p = strstr(t, "<|im_start|>system"); !system && !def && p; p = strstr(p, "<|im_start|>system")) {
        p += strlen("<|im_start|>system");
        if (p[0] == '\\' && p[1] == 'n') p += 2;
        else if (p[0] == '\n') p += 1;
        const char *e = strstr(p, "<|im_end|>"), *q = p;
        int literal = e != NULL;
        for (; literal && q < e; q++)
            if (*q == '\'' || *q == '"' || *q == '{' || *q == '}') literal = 0; /* not a plain literal (a variable) */
        if (literal && e > p) {
            if (!(def = malloc((size_t)(e - p) + 1))) return ttt__errbuf(err, err_len, "out of memory");
            size_t n = 0;
            for (q = p; q < e; q++) {
                if (q[0] == '\\' && q + 1 < e && q[1] == 'n') def[n++] = '\n', q++;
                else def[n++] = *q;
            }
            def[n] = 0;
        }
    }
    const char *sys = system ? system : def;
    const size_t need = (sys ? strlen(sys) : 0) + strlen(user) + 128;
    char *s = malloc(need);
    if (!s) {
        free(def);
        return ttt__errbuf(err, err_len, "out of memory");
    }
    size_t n = 0;
    if (sys) n += (size_t)snprintf(s + n, need - n, "<|im_start|>system\n%s<|im_end|>\n", sys);
    snprintf(s + n, need - n, "<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n", user);
    free(def);
    *out = s;
    return TTT_OK;
}
