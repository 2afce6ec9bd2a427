/* Transformer-squared's adapters on a pretrained model (include/ttt/adapter.h):
 * the matrices they adapt and their SVD cache, SVF experts and LoRA, their
 * files, views of the model with W' in place of W, and REINFORCE's loss. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/engine_private.h"
#include "ttt/adapter.h"
#include "ttt/checkpoint.h"
#include "ttt/fileio.h"

static const char *const SLOT_NAMES[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                          "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

static ttt_tensor **slot_of(ttt_llama_block *b, int slot) {
    ttt_tensor **f[7] = {&b->q, &b->k, &b->v, &b->o, &b->gate, &b->up, &b->down};
    return f[slot];
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- the adapted matrices ---- */

void ttt_adapted_set_free(ttt_ctx *ctx, ttt_adapted_set *set) {
    if (!set) return;
    for (int i = 0; i < set->n; i++) {
        if (set->names) free(set->names[i]);
        if (ctx && set->u) ttt_persistent_free(ctx, set->u[i]);
        if (ctx && set->s) ttt_persistent_free(ctx, set->s[i]);
        if (ctx && set->vt) ttt_persistent_free(ctx, set->vt[i]);
    }
    free(set->names), free(set->w), free(set->block), free(set->slot), free(set->u), free(set->s), free(set->vt);
    *set = (ttt_adapted_set){0};
}

/* FNV-1a of each matrix's f32 values, in order: which model (and which matrices) a file belongs to. */
static int fingerprint(ttt_ctx *ctx, ttt_adapted_set *set, char *err, size_t err_len) {
    uint64_t h = TTT_FNV_SEED;
    float *buf = NULL;
    size_t cap = 0;
    for (int i = 0; i < set->n; i++) {
        const size_t n = (size_t)ttt_numel(set->w[i]);
        if (n > cap) {
            free(buf);
            if (!(buf = malloc(sizeof(float) * n))) return ttt__errbuf(err, err_len, "adapter: out of host memory");
            cap = n;
        }
        if (ttt_copy_to_host(ctx, set->w[i], buf, TTT_F32) != TTT_OK) {
            free(buf);
            return ttt__errbuf(err, err_len, "adapter: reading %s: %s", set->names[i], ttt_error(ctx));
        }
        h = ttt__fnv1a(h, set->names[i], strlen(set->names[i]));
        h = ttt__fnv1a(h, buf, sizeof(float) * n);
    }
    free(buf);
    set->fingerprint = h;
    return TTT_OK;
}

int ttt_adapted_set_init(ttt_ctx *ctx, const ttt_llama *m, int which, ttt_adapted_set *set, char *err,
                         size_t err_len) {
    if (!set) return ttt__errbuf(err, err_len, "adapter: set must not be NULL");
    *set = (ttt_adapted_set){0};
    if (!ctx || !m || !m->blocks) return ttt__errbuf(err, err_len, "adapter: the model is not loaded");
    if (which < 1 || which > (TTT_ADAPT_ATTN | TTT_ADAPT_MLP))
        return ttt__errbuf(err, err_len, "adapter: matrices %d must be attention (1), mlp (2) or both (3)", which);
    const int per = ((which & TTT_ADAPT_ATTN) ? 4 : 0) + ((which & TTT_ADAPT_MLP) ? 3 : 0);
    const int64_t n = m->cfg.depth * per;
    if (n > (1 << 20)) return ttt__errbuf(err, err_len, "adapter: %lld matrices are too many", (long long)n);
    set->which = which;
    set->names = calloc((size_t)n, sizeof *set->names);
    set->w = calloc((size_t)n, sizeof *set->w);
    set->block = calloc((size_t)n, sizeof *set->block);
    set->slot = calloc((size_t)n, sizeof *set->slot);
    if (!set->names || !set->w || !set->block || !set->slot) {
        ttt_adapted_set_free(ctx, set);
        return ttt__errbuf(err, err_len, "adapter: out of host memory");
    }
    for (int64_t b = 0; b < m->cfg.depth; b++)
        for (int slot = 0; slot < 7; slot++) {
            if (!(which & (slot < 4 ? TTT_ADAPT_ATTN : TTT_ADAPT_MLP))) continue;
            const int i = set->n;
            char name[96];
            snprintf(name, sizeof name, "model.layers.%lld.%s.weight", (long long)b, SLOT_NAMES[slot]);
            set->n++;
            if (!(set->names[i] = strdup(name))) {
                ttt_adapted_set_free(ctx, set);
                return ttt__errbuf(err, err_len, "adapter: out of host memory");
            }
            set->w[i] = *slot_of(&m->blocks[b], slot);
            set->block[i] = b;
            set->slot[i] = slot;
        }
    if (fingerprint(ctx, set, err, err_len) != TTT_OK) {
        ttt_adapted_set_free(ctx, set);
        return TTT_ERR;
    }
    return TTT_OK;
}

static int64_t rank_of(const ttt_tensor *w) { return w->shape[0] < w->shape[1] ? w->shape[0] : w->shape[1]; }

static int alloc_svd(ttt_ctx *ctx, ttt_adapted_set *set, char *err, size_t err_len) {
    set->u = calloc((size_t)set->n, sizeof *set->u);
    set->s = calloc((size_t)set->n, sizeof *set->s);
    set->vt = calloc((size_t)set->n, sizeof *set->vt);
    if (!set->u || !set->s || !set->vt) return ttt__errbuf(err, err_len, "svd: out of host memory");
    for (int i = 0; i < set->n; i++) {
        const int64_t rows = set->w[i]->shape[0], cols = set->w[i]->shape[1], r = rank_of(set->w[i]);
        if (!(set->u[i] = ttt_persistent(ctx, TTT_F32, TTT_DIMS(rows, r), "svd.u")) ||
            !(set->s[i] = ttt_persistent(ctx, TTT_F32, TTT_DIMS(r), "svd.s")) ||
            !(set->vt[i] = ttt_persistent(ctx, TTT_F32, TTT_DIMS(r, cols), "svd.vt")))
            return ttt__errbuf(err, err_len, "svd: cannot allocate the factors of %s: %s", set->names[i], ttt_error(ctx));
    }
    return TTT_OK;
}

static void drop_svd(ttt_ctx *ctx, ttt_adapted_set *set) {
    for (int i = 0; set->u && i < set->n; i++) {
        ttt_persistent_free(ctx, set->u[i]);
        ttt_persistent_free(ctx, set->s[i]);
        ttt_persistent_free(ctx, set->vt[i]);
    }
    free(set->u), free(set->s), free(set->vt);
    set->u = set->s = set->vt = NULL;
}

/* Tensor names in files: NAME.u / .s / .vt for the SVD, svf.NAME / lora_a.NAME / lora_b.NAME for adapters. */
static int named_list(const ttt_adapted_set *set, int per, const char *const *suffix_or_prefix, int prefix,
                      ttt_tensor **const *tensors, ttt_named_tensor **out, char ***names_out) {
    const int total = set->n * per;
    ttt_named_tensor *nt = calloc((size_t)total, sizeof *nt);
    char **names = calloc((size_t)total, sizeof *names);
    if (!nt || !names) {
        free(nt), free(names);
        return TTT_ERR;
    }
    for (int i = 0; i < set->n; i++)
        for (int j = 0; j < per; j++) {
            const size_t len = strlen(set->names[i]) + strlen(suffix_or_prefix[j]) + 2;
            char *s = malloc(len);
            if (!s) {
                for (int k = 0; k < total; k++) free(names[k]);
                free(nt), free(names);
                return TTT_ERR;
            }
            if (prefix) snprintf(s, len, "%s%s", suffix_or_prefix[j], set->names[i]);
            else snprintf(s, len, "%s%s", set->names[i], suffix_or_prefix[j]);
            names[i * per + j] = s;
            nt[i * per + j] = (ttt_named_tensor){s, tensors[j][i]};
        }
    *out = nt;
    *names_out = names;
    return TTT_OK;
}

static void free_named(ttt_named_tensor *nt, char **names, int total) {
    for (int k = 0; names && k < total; k++) free(names[k]);
    free(names);
    free(nt);
}

static void hex64(uint64_t v, char out[17]) { snprintf(out, 17, "%016llx", (unsigned long long)v); }

static const char *which_name(int which) {
    return which == TTT_ADAPT_ATTN ? "attn" : which == TTT_ADAPT_MLP ? "mlp" : "all";
}

/* Loads the SVD from path if it is this set's; 1 loaded, 0 not (note says why). */
static int svd_load(ttt_ctx *ctx, ttt_adapted_set *set, const char *path, char *err, size_t err_len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(set->cache_note, sizeof set->cache_note, "computed (no cache file yet)");
        return 0;
    }
    fclose(f);
    static const char *const sfx[3] = {".u", ".s", ".vt"};
    ttt_tensor **const ts[3] = {set->u, set->s, set->vt};
    ttt_named_tensor *nt = NULL;
    char **names = NULL, *meta = NULL, fp[17], want[17];
    if (named_list(set, 3, sfx, 0, ts, &nt, &names) != TTT_OK) return ttt__errbuf(err, err_len, "svd: out of memory"), -1;
    const int rc = ttt_load_safetensors(ctx, path, set->n * 3, nt, &meta);
    free_named(nt, names, set->n * 3);
    hex64(set->fingerprint, want);
    if (rc != TTT_OK) snprintf(set->cache_note, sizeof set->cache_note, "recomputed (the cache did not load: %.180s)", ttt_error(ctx));
    else if (!meta || ttt_metadata_get(meta, "svd.fingerprint", fp, sizeof fp) != TTT_OK || strcmp(fp, want))
        snprintf(set->cache_note, sizeof set->cache_note, "recomputed (the cache belongs to other weights)");
    else snprintf(set->cache_note, sizeof set->cache_note, "loaded from the cache");
    free(meta);
    return rc == TTT_OK && !strncmp(set->cache_note, "loaded", 6);
}

int ttt_svd_compute(ttt_ctx *ctx, ttt_adapted_set *set, const char *cache_path, char *err, size_t err_len) {
    if (!ctx || !set || !set->n) return ttt__errbuf(err, err_len, "svd: the adapted set is empty (ttt_adapted_set_init)");
    drop_svd(ctx, set);
    set->seconds = 0;
    if (alloc_svd(ctx, set, err, err_len) != TTT_OK) {
        drop_svd(ctx, set);
        return TTT_ERR;
    }
    snprintf(set->cache_note, sizeof set->cache_note, "computed (no cache file given)");
    if (cache_path) {
        const int got = svd_load(ctx, set, cache_path, err, err_len);
        if (got < 0) {
            drop_svd(ctx, set);
            return TTT_ERR;
        }
        if (got) return TTT_OK;
    }
    const double t0 = now();
    for (int i = 0; i < set->n; i++) {
        const ttt_mark_t mark = ttt_mark(ctx);
        ttt_tensor *u, *s, *vt;
        if (ttt__svd(ctx, set->w[i], &u, &s, &vt) != TTT_OK || ttt__copy_into(ctx, set->u[i], 0, 0, 1, u) ||
            ttt__copy_into(ctx, set->s[i], 0, 0, 1, s) || ttt__copy_into(ctx, set->vt[i], 0, 0, 1, vt)) {
            ttt__errbuf(err, err_len, "svd of %s: %s", set->names[i], ttt_error(ctx));
            ttt_release(ctx, mark);
            drop_svd(ctx, set);
            return TTT_ERR;
        }
        ttt_release(ctx, mark);
    }
    set->seconds = now() - t0;
    if (!cache_path) return TTT_OK;
    static const char *const sfx[3] = {".u", ".s", ".vt"};
    ttt_tensor **const ts[3] = {set->u, set->s, set->vt};
    ttt_named_tensor *nt = NULL;
    char **names = NULL, fp[17];
    if (named_list(set, 3, sfx, 0, ts, &nt, &names) != TTT_OK) return ttt__errbuf(err, err_len, "svd: out of memory");
    hex64(set->fingerprint, fp);
    const char *meta[] = {"svd.fingerprint", fp, "svd.matrices", which_name(set->which), "svd.format", "1", NULL};
    const int rc = ttt_save_safetensors(ctx, cache_path, set->n * 3, nt, meta);
    free_named(nt, names, set->n * 3);
    /* the note keeps why the cache was not used, and says whether it is written now */
    if (!strncmp(set->cache_note, "computed (no cache file yet)", 28)) snprintf(set->cache_note, sizeof set->cache_note, "computed");
    const size_t at = strnlen(set->cache_note, sizeof set->cache_note);
    if (rc != TTT_OK) /* the factors are good; only the cache is missing */
        snprintf(set->cache_note + at, sizeof set->cache_note - at, "; the cache could not be written: %.120s", ttt_error(ctx));
    else snprintf(set->cache_note + at, sizeof set->cache_note - at, " and cached");
    return TTT_OK;
}

/* ---- adapters ---- */

void ttt_adapter_free(ttt_ctx *ctx, ttt_adapter *ad) {
    if (!ad) return;
    for (int i = 0; ctx && i < ad->n; i++) {
        if (ad->z) ttt_persistent_free(ctx, ad->z[i]);
        if (ad->a) ttt_persistent_free(ctx, ad->a[i]);
        if (ad->b) ttt_persistent_free(ctx, ad->b[i]);
    }
    free(ad->z), free(ad->a), free(ad->b);
    *ad = (ttt_adapter){0};
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double normal(uint64_t *s) { /* Box-Muller */
    const double u1 = ((splitmix(s) >> 11) + 0.5) * 0x1.0p-53, u2 = (splitmix(s) >> 11) * 0x1.0p-53;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* A parameter tensor filled with mean + std * N(0, 1) from rng. */
static ttt_tensor *param_normal(ttt_ctx *ctx, int64_t rows, int64_t cols, double mean, double std, uint64_t *rng,
                                const char *name) {
    const int nd = rows ? 2 : 1;
    const int64_t shape[2] = {rows ? rows : cols, cols};
    const int64_t n = (rows ? rows : 1) * cols;
    float *v = malloc(sizeof(float) * (size_t)n);
    if (!v) return ttt__set_error(ctx, "adapter: out of host memory"), NULL;
    for (int64_t i = 0; i < n; i++) v[i] = (float)(mean + (std ? std * normal(rng) : 0.0));
    ttt_tensor *p = ttt_param(ctx, TTT_F32, nd, shape, name);
    if (p && ttt__upload(ctx, name, p, v, sizeof(float) * (size_t)n) != TTT_OK) {
        ttt_persistent_free(ctx, p);
        p = NULL;
    }
    free(v);
    return p;
}

static int adapter_alloc(ttt_ctx *ctx, const ttt_adapted_set *set, ttt_adapter_kind kind, int64_t rank, double alpha,
                         uint64_t seed, int fill, ttt_adapter *ad, char *err, size_t err_len) {
    *ad = (ttt_adapter){.kind = kind, .which = set->which, .n = set->n, .rank = rank, .alpha = alpha};
    uint64_t rng = seed ^ 0x5DEECE66Dull;
    if (kind == TTT_ADAPTER_SVF) {
        if (!(ad->z = calloc((size_t)set->n, sizeof *ad->z))) return ttt__errbuf(err, err_len, "adapter: out of host memory");
        for (int i = 0; i < set->n; i++)
            if (!(ad->z[i] = param_normal(ctx, 0, rank_of(set->w[i]), 0.1, fill ? 0.01 : 0.0, &rng, "svf.z")))
                return ttt__errbuf(err, err_len, "adapter: %s", ttt_error(ctx));
        return TTT_OK;
    }
    if (!(ad->a = calloc((size_t)set->n, sizeof *ad->a)) || !(ad->b = calloc((size_t)set->n, sizeof *ad->b)))
        return ttt__errbuf(err, err_len, "adapter: out of host memory");
    for (int i = 0; i < set->n; i++) {
        const int64_t rows = set->w[i]->shape[0], cols = set->w[i]->shape[1];
        if (!(ad->a[i] = param_normal(ctx, rank, cols, 0.0, fill ? 1.0 / sqrt((double)cols) : 0.0, &rng, "lora.a")) ||
            !(ad->b[i] = param_normal(ctx, rows, rank, 0.0, 0.0, &rng, "lora.b")))
            return ttt__errbuf(err, err_len, "adapter: %s", ttt_error(ctx));
    }
    return TTT_OK;
}

int ttt_adapter_new(ttt_ctx *ctx, const ttt_adapted_set *set, ttt_adapter_kind kind, int64_t rank, double alpha,
                    uint64_t seed, ttt_adapter *ad, char *err, size_t err_len) {
    if (!ad) return ttt__errbuf(err, err_len, "adapter: ad must not be NULL");
    *ad = (ttt_adapter){0};
    if (!ctx || !set || !set->n) return ttt__errbuf(err, err_len, "adapter: the adapted set is empty");
    if (kind == TTT_ADAPTER_SVF && !set->u)
        return ttt__errbuf(err, err_len, "adapter: SVF needs the set's SVD (ttt_svd_compute)");
    if (kind == TTT_ADAPTER_LORA && (rank < 1 || rank > 4096 || !(alpha > 0) || !isfinite(alpha)))
        return ttt__errbuf(err, err_len, "adapter: LoRA rank %lld must be in [1, 4096] and alpha %g > 0",
                           (long long)rank, alpha);
    if (kind != TTT_ADAPTER_SVF && kind != TTT_ADAPTER_LORA) return ttt__errbuf(err, err_len, "adapter: unknown kind %d", (int)kind);
    if (adapter_alloc(ctx, set, kind, kind == TTT_ADAPTER_LORA ? rank : 0, kind == TTT_ADAPTER_LORA ? alpha : 0, seed,
                      1, ad, err, err_len) != TTT_OK) {
        ttt_adapter_free(ctx, ad);
        return TTT_ERR;
    }
    return TTT_OK;
}

int ttt_adapter_params(const ttt_adapter *ad, ttt_tensor ***params, int *n) {
    *params = NULL;
    *n = 0;
    if (!ad || !ad->n) return TTT_ERR;
    const int per = ad->kind == TTT_ADAPTER_SVF ? 1 : 2;
    ttt_tensor **p = malloc(sizeof *p * (size_t)(ad->n * per));
    if (!p) return TTT_ERR;
    for (int i = 0; i < ad->n; i++) {
        if (per == 1) p[i] = ad->z[i];
        else p[2 * i] = ad->a[i], p[2 * i + 1] = ad->b[i];
    }
    *params = p;
    *n = ad->n * per;
    return TTT_OK;
}

int64_t ttt_adapter_param_count(const ttt_adapter *ad) {
    int64_t c = 0;
    for (int i = 0; ad && i < ad->n; i++)
        c += ad->kind == TTT_ADAPTER_SVF ? ttt_numel(ad->z[i]) : ttt_numel(ad->a[i]) + ttt_numel(ad->b[i]);
    return c;
}

int ttt_adapter_mix(ttt_ctx *ctx, int k, const ttt_adapter *const *experts, const double *alpha, int per_matrix,
                    ttt_adapter *out, char *err, size_t err_len) {
    if (!out) return ttt__errbuf(err, err_len, "adapter_mix: out must not be NULL");
    *out = (ttt_adapter){0};
    if (!ctx || k < 1 || !experts || !alpha) return ttt__errbuf(err, err_len, "adapter_mix: needs k >= 1 experts and their coefficients");
    const ttt_adapter *e0 = experts[0];
    for (int j = 0; j < k; j++)
        if (!experts[j] || experts[j]->kind != TTT_ADAPTER_SVF || experts[j]->n != e0->n || experts[j]->which != e0->which)
            return ttt__errbuf(err, err_len, "adapter_mix: expert %d is not an SVF expert of the same matrices as expert 0", j);
    for (int j = 0; j < k * (per_matrix ? e0->n : 1); j++)
        if (!isfinite(alpha[j])) return ttt__errbuf(err, err_len, "adapter_mix: coefficient %d is not finite", j);
    out->kind = TTT_ADAPTER_SVF;
    out->which = e0->which;
    out->n = e0->n;
    if (!(out->z = calloc((size_t)e0->n, sizeof *out->z))) return ttt__errbuf(err, err_len, "adapter_mix: out of host memory");
    float *acc = NULL, *buf = NULL;
    int rc = TTT_OK;
    for (int i = 0; rc == TTT_OK && i < e0->n; i++) {
        const int64_t r = ttt_numel(e0->z[i]);
        free(acc), free(buf);
        acc = calloc((size_t)r, sizeof *acc);
        buf = malloc(sizeof *buf * (size_t)r);
        if (!acc || !buf) {
            rc = ttt__errbuf(err, err_len, "adapter_mix: out of host memory");
            break;
        }
        for (int j = 0; j < k; j++) {
            if (ttt_numel(experts[j]->z[i]) != r || ttt_copy_to_host(ctx, experts[j]->z[i], buf, TTT_F32) != TTT_OK) {
                rc = ttt__errbuf(err, err_len, "adapter_mix: expert %d matrix %d: %s", j, i,
                                 ttt_numel(experts[j]->z[i]) != r ? "another length" : ttt_error(ctx));
                break;
            }
            const double a = per_matrix ? alpha[j * e0->n + i] : alpha[j];
            for (int64_t t = 0; t < r; t++) acc[t] += (float)(a * buf[t]);
        }
        if (rc == TTT_OK && (!(out->z[i] = ttt_param(ctx, TTT_F32, TTT_DIMS(r), "svf.z")) ||
                             ttt__upload(ctx, "adapter_mix", out->z[i], acc, sizeof(float) * (size_t)r) != TTT_OK))
            rc = ttt__errbuf(err, err_len, "adapter_mix: %s", ttt_error(ctx));
    }
    free(acc), free(buf);
    if (rc != TTT_OK) ttt_adapter_free(ctx, out);
    return rc;
}

/* ---- files ---- */

static int adapter_named(const ttt_adapter *ad, const ttt_adapted_set *set, ttt_named_tensor **nt, char ***names,
                         int *total) {
    if (ad->kind == TTT_ADAPTER_SVF) {
        static const char *const pre[1] = {"svf."};
        ttt_tensor **const ts[1] = {ad->z};
        *total = set->n;
        return named_list(set, 1, pre, 1, ts, nt, names);
    }
    static const char *const pre[2] = {"lora_a.", "lora_b."};
    ttt_tensor **const ts[2] = {ad->a, ad->b};
    *total = set->n * 2;
    return named_list(set, 2, pre, 1, ts, nt, names);
}

int ttt_adapter_save(ttt_ctx *ctx, const char *path, const ttt_adapter *ad, const ttt_adapted_set *set,
                     const char *const *extra_metadata, char *err, size_t err_len) {
    if (!ctx || !path || !ad || !set || !ad->n) return ttt__errbuf(err, err_len, "adapter_save: nothing to save");
    if (ad->n != set->n || ad->which != set->which)
        return ttt__errbuf(err, err_len, "adapter_save: the adapter was made for other matrices than the set's");
    char fp[17], rank[24], alpha[32], params[24];
    hex64(set->fingerprint, fp);
    snprintf(rank, sizeof rank, "%lld", (long long)ad->rank);
    snprintf(alpha, sizeof alpha, "%.17g", ad->alpha);
    snprintf(params, sizeof params, "%lld", (long long)ttt_adapter_param_count(ad));
    const char *meta[64] = {"adapter.kind", ad->kind == TTT_ADAPTER_SVF ? "svf" : "lora", "adapter.matrices",
                            which_name(ad->which), "adapter.rank", rank, "adapter.alpha", alpha,
                            "adapter.base_fingerprint", fp, "adapter.params", params, "adapter.format", "1"};
    int nm = 14;
    for (int i = 0; extra_metadata && extra_metadata[i] && extra_metadata[i + 1]; i += 2) {
        if (nm + 2 >= 63) return ttt__errbuf(err, err_len, "adapter_save: too many metadata entries");
        if (!strncmp(extra_metadata[i], "adapter.", 8))
            return ttt__errbuf(err, err_len, "adapter_save: metadata key '%s' is reserved", extra_metadata[i]);
        meta[nm++] = extra_metadata[i];
        meta[nm++] = extra_metadata[i + 1];
    }
    meta[nm] = NULL;
    ttt_named_tensor *nt = NULL;
    char **names = NULL;
    int total = 0;
    if (adapter_named(ad, set, &nt, &names, &total) != TTT_OK) return ttt__errbuf(err, err_len, "adapter_save: out of memory");
    const int rc = ttt_save_safetensors(ctx, path, total, nt, meta);
    free_named(nt, names, total);
    if (rc != TTT_OK) return ttt__errbuf(err, err_len, "%s", ttt_error(ctx));
    return TTT_OK;
}

int ttt_adapter_load(ttt_ctx *ctx, const char *path, const ttt_adapted_set *set, ttt_adapter *ad,
                     char **metadata_json, char *err, size_t err_len) {
    if (metadata_json) *metadata_json = NULL;
    if (!ad) return ttt__errbuf(err, err_len, "adapter_load: ad must not be NULL");
    *ad = (ttt_adapter){0};
    if (!ctx || !path || !set || !set->n) return ttt__errbuf(err, err_len, "adapter_load: needs a path and an adapted set");
    char *meta = NULL, kind[16], which[16], rank[24], alpha[32], fp[17], want[17];
    if (ttt_load_safetensors(ctx, path, 0, NULL, &meta) != TTT_OK)
        return ttt__errbuf(err, err_len, "%s", ttt_error(ctx));
    int rc = TTT_ERR;
    hex64(set->fingerprint, want);
    if (!meta || ttt_metadata_get(meta, "adapter.kind", kind, sizeof kind) ||
        ttt_metadata_get(meta, "adapter.matrices", which, sizeof which) ||
        ttt_metadata_get(meta, "adapter.rank", rank, sizeof rank) || ttt_metadata_get(meta, "adapter.alpha", alpha, sizeof alpha) ||
        ttt_metadata_get(meta, "adapter.base_fingerprint", fp, sizeof fp))
        ttt__errbuf(err, err_len, "%s: not an adapter file (no adapter.* metadata)", path);
    else if (strcmp(kind, "svf") && strcmp(kind, "lora"))
        ttt__errbuf(err, err_len, "%s: unknown adapter kind '%s'", path, kind);
    else if (strcmp(which, which_name(set->which)))
        ttt__errbuf(err, err_len, "%s: the adapter adapts the '%s' matrices, the set '%s'", path, which, which_name(set->which));
    else if (strcmp(fp, want))
        ttt__errbuf(err, err_len, "%s: the adapter was trained on another model (fingerprint %s, this model %s)", path, fp, want);
    else {
        const ttt_adapter_kind k = !strcmp(kind, "svf") ? TTT_ADAPTER_SVF : TTT_ADAPTER_LORA;
        char *end = NULL;
        const long long r = strtoll(rank, &end, 10);
        const double a = strtod(alpha, NULL);
        if (k == TTT_ADAPTER_LORA && (r < 1 || r > 4096 || !(a > 0) || !isfinite(a)))
            ttt__errbuf(err, err_len, "%s: LoRA rank '%s' or alpha '%s' out of range", path, rank, alpha);
        else if (adapter_alloc(ctx, set, k, k == TTT_ADAPTER_LORA ? r : 0, k == TTT_ADAPTER_LORA ? a : 0, 0, 0, ad, err,
                               err_len) == TTT_OK) {
            ttt_named_tensor *nt = NULL;
            char **names = NULL;
            int total = 0;
            if (adapter_named(ad, set, &nt, &names, &total) != TTT_OK) ttt__errbuf(err, err_len, "adapter_load: out of memory");
            else if (ttt_load_safetensors(ctx, path, total, nt, NULL) != TTT_OK) ttt__errbuf(err, err_len, "%s", ttt_error(ctx));
            else rc = TTT_OK;
            free_named(nt, names, total);
        }
    }
    if (rc != TTT_OK) ttt_adapter_free(ctx, ad);
    if (rc == TTT_OK && metadata_json) *metadata_json = meta;
    else free(meta);
    return rc;
}

/* ---- views ---- */

/* W' of matrix i as a step tensor (a graph in the adapter's parameters when grad mode is on). */
static ttt_tensor *adapted_matrix(ttt_ctx *ctx, const ttt_adapted_set *set, const ttt_adapter *ad, int i) {
    if (ad->kind == TTT_ADAPTER_LORA)
        return ttt_add(ctx, set->w[i], ttt_scale(ctx, ttt_matmul(ctx, ad->b[i], ad->a[i], 0, 0), ad->alpha / (double)ad->rank));
    /* W' = U diag(s m) V^T (sum s / sum s m), m = sigmoid(z): scale the columns of U, one product */
    ttt_tensor *sm = ttt_mul(ctx, set->s[i], ttt_sigmoid(ctx, ad->z[i]));
    ttt_tensor *ratio = ttt_div(ctx, ttt_sum(ctx, set->s[i], 0, NULL, 0), ttt_sum(ctx, sm, 0, NULL, 0));
    ttt_tensor *scale = ttt_mul(ctx, sm, ratio);
    return ttt_matmul(ctx, ttt_mul(ctx, set->u[i], scale), set->vt[i], 0, 0);
}

static int view_begin(const ttt_llama *base, ttt_llama *view) {
    *view = *base;
    view->is_view = 1;
    view->n_view_owned = 0;
    view->view_owned = NULL;
    view->blocks = malloc(sizeof *view->blocks * (size_t)base->cfg.depth);
    if (!view->blocks) return TTT_ERR;
    memcpy(view->blocks, base->blocks, sizeof *view->blocks * (size_t)base->cfg.depth);
    return TTT_OK;
}

static int check_view_args(ttt_ctx *ctx, const ttt_llama *base, const ttt_adapted_set *set, const ttt_adapter *ad) {
    if (!base || !base->blocks || base->is_view) return ttt__set_error(ctx, "adapter_view: the base model is not loaded");
    if (!ad) return TTT_OK;
    if (!set || ad->n != set->n || ad->which != set->which)
        return ttt__set_error(ctx, "adapter_view: the adapter was made for other matrices than the set's");
    if (ad->kind == TTT_ADAPTER_SVF && !set->u) return ttt__set_error(ctx, "adapter_view: SVF needs the set's SVD");
    for (int i = 0; i < set->n; i++)
        if (*slot_of(&base->blocks[set->block[i]], set->slot[i]) != set->w[i])
            return ttt__set_error(ctx, "adapter_view: the set belongs to another model");
    return TTT_OK;
}

int ttt_adapter_view(ttt_ctx *ctx, const ttt_llama *base, const ttt_adapted_set *set, const ttt_adapter *ad,
                     ttt_llama *view) {
    if (!ctx || !view) return TTT_ERR;
    *view = (ttt_llama){0};
    if (check_view_args(ctx, base, set, ad)) return TTT_ERR;
    if (view_begin(base, view) != TTT_OK) return ttt__set_error(ctx, "adapter_view: out of host memory");
    for (int i = 0; ad && i < set->n; i++) {
        ttt_tensor *w = adapted_matrix(ctx, set, ad, i);
        if (!w) {
            ttt_llama_free(ctx, view);
            return TTT_ERR;
        }
        *slot_of(&view->blocks[set->block[i]], set->slot[i]) = w;
    }
    return TTT_OK;
}

int ttt_adapter_view_materialize(ttt_ctx *ctx, const ttt_llama *base, const ttt_adapted_set *set,
                                 const ttt_adapter *ad, ttt_llama *view) {
    if (!ctx || !view) return TTT_ERR;
    *view = (ttt_llama){0};
    if (check_view_args(ctx, base, set, ad)) return TTT_ERR;
    if (view_begin(base, view) != TTT_OK) return ttt__set_error(ctx, "adapter_view: out of host memory");
    if (!ad) return TTT_OK;
    if (!(view->view_owned = calloc((size_t)set->n, sizeof *view->view_owned))) {
        ttt_llama_free(ctx, view);
        return ttt__set_error(ctx, "adapter_view: out of host memory");
    }
    ttt_no_grad_begin(ctx);
    int rc = TTT_OK;
    for (int i = 0; rc == TTT_OK && i < set->n; i++) {
        const ttt_mark_t mark = ttt_mark(ctx);
        ttt_tensor *w = adapted_matrix(ctx, set, ad, i);
        ttt_tensor *p = w ? ttt_persistent(ctx, TTT_F32, 2, w->shape, set->names[i]) : NULL;
        if (!p || ttt__copy_into(ctx, p, 0, 0, 1, w) != TTT_OK) {
            ttt_persistent_free(ctx, p);
            rc = TTT_ERR;
        } else {
            view->view_owned[view->n_view_owned++] = p;
            *slot_of(&view->blocks[set->block[i]], set->slot[i]) = p;
        }
        ttt_release(ctx, mark);
    }
    ttt_no_grad_end(ctx);
    if (rc != TTT_OK) ttt_llama_free(ctx, view);
    return rc;
}

void ttt_adapter_view_free(ttt_ctx *ctx, ttt_llama *view) {
    if (view && view->is_view) ttt_llama_free(ctx, view);
}

/* ---- REINFORCE ---- */

ttt_tensor *ttt_adapter_pg_loss(ttt_ctx *ctx, const ttt_llama *view, const ttt_llama *base, const int32_t *ids,
                                const float *answer_mask, int64_t B, int64_t T, const double *rewards, double kl_coef,
                                double *mean_logp, double *mean_kl) {
    static const char fn[] = "adapter_pg_loss";
    if (mean_logp) *mean_logp = 0;
    if (mean_kl) *mean_kl = 0;
    if (!ctx) return NULL;
    if (!view || !view->blocks || !ids || !answer_mask || !rewards || B < 1 || T < 2 || B * T > ((int64_t)1 << 31))
        return ttt__set_error(ctx, "%s: needs a model, ids, an answer mask and rewards for B >= 1 sequences of T >= 2", fn), NULL;
    if (!(kl_coef >= 0) || !isfinite(kl_coef) || (kl_coef > 0 && (!base || !base->blocks)))
        return ttt__set_error(ctx, "%s: kl_coef %g must be finite, >= 0, and > 0 only with a base model", fn, kl_coef), NULL;
    const int64_t V = view->cfg.vocab, N = B * T;
    int32_t *targets = malloc(sizeof(int32_t) * (size_t)N);
    float *w = malloc(sizeof(float) * (size_t)N), *m = malloc(sizeof(float) * (size_t)N);
    if (!targets || !w || !m) {
        free(targets), free(w), free(m);
        return ttt__set_error(ctx, "%s: out of host memory", fn), NULL;
    }
    int64_t count = 0;
    for (int64_t b = 0; b < B; b++) {
        if (!isfinite(rewards[b])) {
            free(targets), free(w), free(m);
            return ttt__set_error(ctx, "%s: reward %lld is not finite", fn, (long long)b), NULL;
        }
        for (int64_t t = 0; t < T; t++) { /* position t predicts token t + 1 */
            const int64_t i = b * T + t;
            if (ids[i] < 0 || ids[i] >= V) {
                free(targets), free(w), free(m);
                return ttt__set_error(ctx, "%s: id %d at [%lld, %lld] is outside the vocabulary of %lld", fn, ids[i],
                                      (long long)b, (long long)t, (long long)V), NULL;
            }
            const int answer = t + 1 < T && answer_mask[i + 1] != 0;
            targets[i] = answer ? ids[i + 1] : -1;
            w[i] = answer ? (float)(rewards[b] / (double)B) : 0.0f;
            m[i] = answer ? (float)(1.0 / (double)B) : 0.0f;
            count += answer;
        }
    }
    ttt_tensor *idt = ttt_from_host(ctx, TTT_I32, TTT_DIMS(B, T), ids);
    ttt_tensor *tg = ttt_from_host(ctx, TTT_I32, TTT_DIMS(N), targets);
    ttt_tensor *wt = ttt_from_host(ctx, TTT_F32, TTT_DIMS(N), w), *mt = ttt_from_host(ctx, TTT_F32, TTT_DIMS(N), m);
    free(targets), free(w), free(m);
    ttt_tensor *logits = idt ? ttt_reshape(ctx, ttt_llama_forward(ctx, view, idt, 0), TTT_DIMS(N, V)) : NULL;
    ttt_tensor *ce = logits && tg ? ttt_cross_entropy_rows(ctx, logits, tg, -1) : NULL; /* -log p per row, 0 off the answers */
    ttt_tensor *loss = ce && wt ? ttt_sum(ctx, ttt_mul(ctx, ce, wt), 0, NULL, 0) : NULL;
    if (loss && mean_logp && count) {
        ttt_no_grad_begin(ctx);
        *mean_logp = -ttt_item(ctx, ttt_sum(ctx, ce, 0, NULL, 0)) / (double)count;
        ttt_no_grad_end(ctx);
    }
    if (loss && kl_coef > 0) {
        ttt_no_grad_begin(ctx);
        ttt_tensor *lb = ttt_log_softmax(ctx, ttt_reshape(ctx, ttt_llama_forward(ctx, base, idt, 0), TTT_DIMS(N, V)));
        ttt_no_grad_end(ctx);
        ttt_tensor *lp = ttt_log_softmax(ctx, logits);
        ttt_tensor *kl = lb && lp ? ttt_sum(ctx, ttt_mul(ctx, ttt_exp(ctx, lp), ttt_sub(ctx, lp, lb)), 1, (const int[]){1}, 0)
                                  : NULL; /* [N] */
        ttt_tensor *klsum = kl && mt ? ttt_sum(ctx, ttt_mul(ctx, kl, mt), 0, NULL, 0) : NULL;
        loss = klsum ? ttt_add(ctx, loss, ttt_scale(ctx, klsum, kl_coef)) : NULL;
        if (loss && mean_kl && count) {
            ttt_no_grad_begin(ctx);
            *mean_kl = ttt_item(ctx, klsum) * (double)B / (double)count;
            ttt_no_grad_end(ctx);
        }
    }
    return loss;
}
