/* The Transformer language model (include/ttt/lm.h), in float64 on the CPU:
 *   - causality, and the sliding window's reach (a token moves logits up to
 *     window - 1 positions later, never further);
 *   - a window at least as long as the sequence equals full attention;
 *   - KV-cache decoding (token by token, and in chunks; ring buffer wrapped
 *     several times under a window) equals the full forward;
 *   - the loss equals the mean of the per-token losses and ignores -100;
 *   - gradients against central differences, prime MLP included;
 *   - the PyTorch reference fixture (tests/fixtures/lm_torch_fixture.safetensors):
 *     logits, loss and every parameter's gradient;
 *   - argument validation. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ttt/backend.h"
#include "ttt/ttt.h"

static ttt_lm_config small_config(int64_t window, int64_t prime) {
    ttt_lm_config c;
    ttt_lm_preset("tiny", 37, &c, NULL, 0);
    c.dim = 16, c.depth = 2, c.heads = 2, c.mlp_hidden = 24, c.window = window, c.prime_blocks = prime;
    c.init_std = 0.3; /* large enough that every part of the model matters */
    return c;
}

static ttt_tensor *ids_tensor(ttt_ctx *ctx, const int32_t *v, int64_t B, int64_t T) {
    return ttt_from_host(ctx, TTT_I32, TTT_DIMS(B, T), v);
}

static double *logits_host(ttt_ctx *ctx, const ttt_lm *m, const int32_t *ids, int64_t B, int64_t T) {
    ttt_tensor *lg = ttt_lm_logits(ctx, m, ttt_lm_hidden(ctx, m, ids_tensor(ctx, ids, B, T), 0));
    if (!lg) return NULL;
    double *h = malloc(sizeof(double) * (size_t)ttt_numel(lg));
    ttt_copy_to_host(ctx, lg, h, TTT_F64);
    return h;
}

/* max |a - b| over rows [t0, t1) of [B, T, V] logits */
static double row_diff(const double *a, const double *b, int64_t B, int64_t T, int64_t V, int64_t t0, int64_t t1) {
    double worst = 0;
    for (int64_t bi = 0; bi < B; bi++)
        for (int64_t t = t0; t < t1; t++)
            for (int64_t j = 0; j < V; j++) worst = fmax(worst, fabs(a[(bi * T + t) * V + j] - b[(bi * T + t) * V + j]));
    return worst;
}

static void test_causality(ttt_ctx *ctx) {
    enum { B = 1, T = 14, W = 4 };
    for (int64_t depth = 1; depth <= 2; depth++)
        for (int64_t window = 0; window <= W; window += W) {
            ttt_lm m;
            ttt_lm_config c = small_config(window, 1);
            c.depth = depth;
            CHECK(ttt_lm_init(ctx, &m, &c, TTT_F64) == TTT_OK);
            int32_t ids[T], ids2[T];
            for (int t = 0; t < T; t++) ids[t] = ids2[t] = (int32_t)((t * 7 + 3) % c.vocab);
            const int64_t moved = 4;
            ids2[moved] = (ids[moved] + 11) % (int32_t)c.vocab;
            double *a = logits_host(ctx, &m, ids, B, T), *b = logits_host(ctx, &m, ids2, B, T);
            CHECK(a && b);
            if (a && b) {
                CHECK(row_diff(a, b, B, T, c.vocab, 0, moved) == 0); /* the past does not see the future */
                CHECK(row_diff(a, b, B, T, c.vocab, moved, moved + 1) > 1e-6);
                if (window) {
                    /* each block carries a token W - 1 positions on, so depth blocks reach depth (W - 1) */
                    const int64_t reach = moved + depth * (W - 1);
                    CHECK_MSG(row_diff(a, b, B, T, c.vocab, reach, reach + 1) > 1e-6, "depth %lld", (long long)depth);
                    CHECK_MSG(row_diff(a, b, B, T, c.vocab, reach + 1, T) == 0, "depth %lld", (long long)depth);
                } else {
                    CHECK(row_diff(a, b, B, T, c.vocab, T - 1, T) > 1e-6);
                }
            }
            free(a), free(b);
            ttt_lm_free(ctx, &m);
            ttt_step_reset(ctx);
        }
}

static void test_long_window_is_full(void) {
    enum { B = 2, T = 9 };
    ttt_lm full, win;
    ttt_lm_config cf = small_config(0, 0), cw = small_config(T, 0);
    ttt_ctx_config cfg = {.device = TTT_CPU, .seed = 5};
    ttt_ctx *c2 = ttt_ctx_new(&cfg), *c3 = ttt_ctx_new(&cfg); /* same seed: same parameters */
    CHECK(ttt_lm_init(c2, &full, &cf, TTT_F64) == TTT_OK && ttt_lm_init(c3, &win, &cw, TTT_F64) == TTT_OK);
    int32_t ids[B * T];
    for (int i = 0; i < B * T; i++) ids[i] = (int32_t)((i * 5 + 1) % cf.vocab);
    double *a = logits_host(c2, &full, ids, B, T), *b = logits_host(c3, &win, ids, B, T);
    CHECK(a && b && row_diff(a, b, B, T, cf.vocab, 0, T) < 1e-12);
    free(a), free(b);
    ttt_lm_free(c2, &full), ttt_lm_free(c3, &win);
    ttt_ctx_free(c2), ttt_ctx_free(c3);
}

/* Decodes T tokens in pieces of the given lengths (cycled) and compares every
 * piece's logits with the full forward's rows. */
static void test_decode_mixer(ttt_ctx *ctx, int mixer, int backbone, int64_t window, int qk_norm, int64_t T,
                              const int64_t *pieces, int n_pieces) {
    enum { B = 2 };
    ttt_lm m;
    ttt_lm_config c = small_config(window, 1);
    c.qk_norm = qk_norm;
    c.mixer = mixer, c.ttt_backbone = backbone, c.ttt_mini_batch = 4;
    CHECK(ttt_lm_init(ctx, &m, &c, TTT_F64) == TTT_OK);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(B * T)), *chunk = malloc(sizeof(int32_t) * (size_t)(B * T));
    for (int64_t i = 0; i < B * T; i++) ids[i] = (int32_t)((i * 13 + 7 + i / 5) % c.vocab);
    double *ref = logits_host(ctx, &m, ids, B, T);
    CHECK(ref != NULL);
    ttt_step_reset(ctx);
    ttt_lm_cache cache;
    CHECK(ttt_lm_cache_init(ctx, &m, &cache, B, T) == TTT_OK);
    CHECK(cache.capacity == (window ? (window > 1 ? window - 1 : 1) : mixer == TTT_LM_MIXER_ATTENTION ? T : 1));
    double worst = 0;
    size_t most_used = 0;
    int64_t t0 = 0;
    for (int p = 0; ref && t0 < T; p = (p + 1) % n_pieces) {
        int64_t n = pieces[p] < T - t0 ? pieces[p] : T - t0;
        for (int b = 0; b < B; b++)
            for (int64_t t = 0; t < n; t++) chunk[b * n + t] = ids[b * T + t0 + t];
        ttt_tensor *lg = ttt_lm_decode(ctx, &m, &cache, ids_tensor(ctx, chunk, B, n));
        CHECK_MSG(lg != NULL, "%s", ttt_error(ctx));
        if (!lg) break;
        if (ttt_arena_bytes_used(ctx) > most_used) most_used = ttt_arena_bytes_used(ctx);
        double *h = malloc(sizeof(double) * (size_t)ttt_numel(lg));
        ttt_copy_to_host(ctx, lg, h, TTT_F64);
        for (int b = 0; b < B; b++)
            for (int64_t t = 0; t < n; t++)
                for (int64_t j = 0; j < c.vocab; j++)
                    worst = fmax(worst, fabs(h[(b * n + t) * c.vocab + j] - ref[(b * T + t0 + t) * c.vocab + j]));
        free(h);
        t0 += n;
        ttt_step_reset(ctx);
    }
    CHECK_MSG(worst < 1e-10, "mixer %s window %lld: decode differs from the forward by %g", ttt_lm_mixer_name(mixer),
              (long long)window, worst);
    if (mixer) printf("decode, mixer %s (%s backbone): max diff to the forward pass %.2e\n", ttt_lm_mixer_name(mixer),
                      backbone ? "mamba" : "transformer", worst);
    CHECK(cache.len == T);
    /* A long piece runs in pieces of 512 whose temporaries are released: what is left is about the logits and the
     * ids (a few KB for the ids' copies and headers). */
    const size_t logits_bytes = sizeof(double) * (size_t)(B * T * c.vocab);
    if (T > 512) printf("decode of %lld tokens: arena %zu bytes, logits %zu bytes\n", (long long)T, most_used, logits_bytes);
    if (pieces[0] >= T && T > 512)
        CHECK_MSG(most_used < logits_bytes + logits_bytes / 4, "arena %zu bytes for %zu bytes of logits", most_used,
                  logits_bytes);
    if (window == 0 && mixer == TTT_LM_MIXER_ATTENTION) { /* a full cache refuses more */
        int32_t one[B] = {1, 2};
        CHECK(ttt_lm_decode(ctx, &m, &cache, ids_tensor(ctx, one, B, 1)) == NULL &&
              strstr(ttt_error(ctx), "capacity"));
        CHECK(cache.len == T);
    }
    /* after a reset the cache starts again at position 0 */
    ttt_lm_cache_reset(&cache);
    for (int b = 0; b < B; b++) chunk[b] = ids[b * T];
    ttt_tensor *first = ttt_lm_decode(ctx, &m, &cache, ids_tensor(ctx, chunk, B, 1));
    double row[64];
    CHECK(first && ttt_copy_to_host(ctx, ttt_slice(ctx, first, 0, 0, 1, 1), row, TTT_F64) == TTT_OK);
    if (first && ref) CHECK(row_diff(row, ref, 1, 1, c.vocab, 0, 1) < 1e-12);
    free(ref), free(ids), free(chunk);
    ttt_lm_cache_free(ctx, &cache);
    ttt_lm_free(ctx, &m);
    ttt_step_reset(ctx);
}

static void test_loss(ttt_ctx *ctx) {
    enum { B = 2, T = 7 };
    ttt_lm m;
    ttt_lm_config c = small_config(3, 0);
    CHECK(ttt_lm_init(ctx, &m, &c, TTT_F64) == TTT_OK);
    int32_t ids[B * T], tg[B * T];
    for (int i = 0; i < B * T; i++) ids[i] = (int32_t)((i * 3 + 2) % c.vocab), tg[i] = (int32_t)((i * 5 + 1) % c.vocab);
    tg[3] = tg[9] = -100;
    ttt_tensor *per = NULL;
    ttt_tensor *loss = ttt_lm_loss(ctx, &m, ids_tensor(ctx, ids, B, T), ids_tensor(ctx, tg, B, T), &per);
    CHECK(loss && per);
    double rows[B * T], sum = 0;
    ttt_copy_to_host(ctx, per, rows, TTT_F64);
    for (int i = 0; i < B * T; i++) sum += rows[i];
    CHECK(rows[3] == 0 && rows[9] == 0);
    CHECK_NEAR(ttt_item(ctx, loss), sum / (B * T - 2), 1e-12);
    ttt_tensor *lg = ttt_lm_logits(ctx, &m, ttt_lm_hidden(ctx, &m, ids_tensor(ctx, ids, B, T), 0));
    CHECK_NEAR(ttt_item(ctx, loss), ttt_item(ctx, ttt_cross_entropy(ctx, lg, ids_tensor(ctx, tg, B, T), -100)), 1e-12);
    /* the same under no-grad (the chunked path that releases as it goes) */
    ttt_no_grad_begin(ctx);
    ttt_tensor *l2 = ttt_lm_loss(ctx, &m, ids_tensor(ctx, ids, B, T), ids_tensor(ctx, tg, B, T), NULL);
    ttt_no_grad_end(ctx);
    CHECK_NEAR(ttt_item(ctx, l2), ttt_item(ctx, loss), 1e-12);
    ttt_lm_free(ctx, &m);
    ttt_step_reset(ctx);
}

/* Gradients of every parameter after one backward pass of the loss in chunks
 * of `chunk` positions (0: the default), into a malloc'd flat array. */
static double *loss_grads(ttt_ctx *ctx, const ttt_lm *m, ttt_tensor *ids, ttt_tensor *tg, int64_t chunk, double *loss,
                          double *per_token) {
    int64_t total = 0;
    for (int i = 0; i < m->n_params; i++) total += ttt_numel(m->params[i]);
    double *g = calloc((size_t)total, sizeof(double));
    ttt_zero_grad(ctx, m->n_params, m->params);
    ttt_tensor *per = NULL, *l = ttt_lm_loss_chunked(ctx, m, ids, tg, &per, chunk);
    CHECK_MSG(l && per, "%s", ttt_error(ctx));
    if (!l || !per) return g;
    *loss = ttt_item(ctx, l);
    ttt_copy_to_host(ctx, per, per_token, TTT_F64);
    CHECK(ttt_backward(ctx, l) == TTT_OK);
    for (int i = 0, off = 0; i < m->n_params; off += (int)ttt_numel(m->params[i]), i++)
        if (m->params[i]->grad) ttt_copy_to_host(ctx, m->params[i]->grad, g + off, TTT_F64);
    return g;
}

/* The loss in several chunks of positions (the path every real vocabulary takes)
 * equals the loss in one, in value, per-token losses and gradients; and a frozen
 * embedding (requires_grad 0) leaves the other parameters' gradients as they were. */
static void test_loss_chunks(ttt_ctx *ctx) {
    enum { B = 2, T = 7 };
    ttt_lm m;
    ttt_lm_config c = small_config(3, 1);
    CHECK(ttt_lm_init(ctx, &m, &c, TTT_F64) == TTT_OK);
    int32_t ids[B * T], tg[B * T];
    for (int i = 0; i < B * T; i++) ids[i] = (int32_t)((i * 5 + 3) % c.vocab), tg[i] = (int32_t)((i * 7 + 2) % c.vocab);
    tg[2] = tg[12] = -100;
    ttt_tensor *ti = ids_tensor(ctx, ids, B, T), *tt = ids_tensor(ctx, tg, B, T);
    int64_t total = 0;
    for (int i = 0; i < m.n_params; i++) total += ttt_numel(m.params[i]);
    double l1 = 0, l3 = 0, lf = 0, p1[B * T] = {0}, p3[B * T] = {0}, pf[B * T] = {0};
    double *g1 = loss_grads(ctx, &m, ti, tt, 0, &l1, p1); /* T = 7 fits one default chunk */
    double *g3 = loss_grads(ctx, &m, ti, tt, 3, &l3, p3); /* chunks of 3, 3, 1 */
    double dg = 0, dp = 0, gmax = 0;
    for (int64_t i = 0; i < total; i++) dg = fmax(dg, fabs(g1[i] - g3[i])), gmax = fmax(gmax, fabs(g1[i]));
    for (int i = 0; i < B * T; i++) dp = fmax(dp, fabs(p1[i] - p3[i]));
    CHECK_NEAR(l1, l3, 1e-13);
    CHECK(dp < 1e-13 && p3[2] == 0 && p3[12] == 0);
    CHECK_MSG(gmax > 0 && dg < 1e-13 * fmax(1, gmax), "chunked gradients differ by %g", dg);
    /* under no-grad, chunks are released as they go */
    ttt_no_grad_begin(ctx);
    ttt_tensor *per = NULL, *l = ttt_lm_loss_chunked(ctx, &m, ti, tt, &per, 2);
    ttt_no_grad_end(ctx);
    double pn[B * T];
    CHECK(l && per && ttt_copy_to_host(ctx, per, pn, TTT_F64) == TTT_OK);
    CHECK_NEAR(ttt_item(ctx, l), l1, 1e-13);
    for (int i = 0; i < B * T; i++) CHECK_NEAR(pn[i], p1[i], 1e-13);
    CHECK(ttt_lm_loss_chunked(ctx, &m, ti, tt, NULL, -1) == NULL && strstr(ttt_error(ctx), "chunk"));

    /* frozen embedding: every other gradient unchanged, in one chunk and in several */
    ttt_set_requires_grad(m.embed, 0);
    for (int64_t chunk = 0; chunk <= 3; chunk += 3) {
        double *gf = loss_grads(ctx, &m, ti, tt, chunk, &lf, pf);
        const int64_t n_embed = ttt_numel(m.embed);
        double d = 0, e = 0;
        for (int64_t i = n_embed; i < total; i++) d = fmax(d, fabs(gf[i] - g1[i]));
        for (int64_t i = 0; i < n_embed; i++) e = fmax(e, fabs(gf[i]));
        CHECK_NEAR(lf, l1, 1e-13);
        CHECK_MSG(d < 1e-13 * fmax(1, gmax) && e == 0, "frozen embedding, chunk %lld: gradients differ by %g, embedding's %g",
                  (long long)chunk, d, e);
        free(gf);
    }
    ttt_set_requires_grad(m.embed, 1);
    free(g1), free(g3);
    ttt_lm_free(ctx, &m);
    ttt_step_reset(ctx);
}

static double loss_value(ttt_ctx *ctx, const ttt_lm *m, const int32_t *ids, const int32_t *tg, int64_t B, int64_t T) {
    ttt_no_grad_begin(ctx);
    double v = ttt_item(ctx, ttt_lm_loss(ctx, m, ids_tensor(ctx, ids, B, T), ids_tensor(ctx, tg, B, T), NULL));
    ttt_no_grad_end(ctx);
    return v;
}

static void test_gradients(ttt_ctx *ctx) {
    enum { B = 2, T = 6 };
    ttt_lm m;
    ttt_lm_config c = small_config(4, 1);
    c.prime_hidden = 10; /* a prime MLP of its own width */
    CHECK(ttt_lm_init(ctx, &m, &c, TTT_F64) == TTT_OK);
    CHECK(ttt_lm_param(&m, "model.layers.1.prime_mlp.down_proj.weight")->shape[1] == 10);
    int32_t ids[B * T], tg[B * T];
    for (int i = 0; i < B * T; i++) ids[i] = (int32_t)((i * 7 + 2) % c.vocab), tg[i] = (int32_t)((i * 11 + 4) % c.vocab);
    tg[5] = -100;
    ttt_zero_grad(ctx, m.n_params, m.params);
    CHECK(ttt_backward(ctx, ttt_lm_loss(ctx, &m, ids_tensor(ctx, ids, B, T), ids_tensor(ctx, tg, B, T), NULL)) ==
          TTT_OK);
    ttt_step_reset(ctx);
    const char *names[] = {"model.embed_tokens.weight",
                           "model.layers.0.self_attn.q_proj.weight",
                           "model.layers.0.self_attn.q_norm.weight",
                           "model.layers.1.self_attn.k_norm.weight",
                           "model.layers.1.self_attn.v_proj.weight",
                           "model.layers.0.mlp.down_proj.weight",
                           "model.layers.1.pre_prime_layernorm.weight",
                           "model.layers.1.prime_mlp.up_proj.weight",
                           "model.layers.1.prime_mlp.down_proj.weight",
                           "model.layers.0.post_attention_layernorm.weight",
                           "model.norm.weight"};
    double worst = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        ttt_tensor *p = ttt_lm_param(&m, names[i]);
        CHECK_MSG(p != NULL, "%s", names[i]);
        if (!p) continue;
        const int64_t n = ttt_numel(p);
        double *w = malloc(sizeof(double) * (size_t)n), *g = malloc(sizeof(double) * (size_t)n);
        ttt_copy_to_host(ctx, p, w, TTT_F64);
        ttt_copy_to_host(ctx, p->grad, g, TTT_F64);
        for (int k = 0; k < 3; k++) {
            const int64_t j = (int64_t)((k * 7919 + 13) % n);
            const double eps = 1e-5, keep = w[j];
            double plus, minus;
            w[j] = keep + eps, ttt_assign(ctx, p, ttt_from_host(ctx, TTT_F64, p->ndim, p->shape, w));
            plus = loss_value(ctx, &m, ids, tg, B, T);
            w[j] = keep - eps, ttt_assign(ctx, p, ttt_from_host(ctx, TTT_F64, p->ndim, p->shape, w));
            minus = loss_value(ctx, &m, ids, tg, B, T);
            w[j] = keep, ttt_assign(ctx, p, ttt_from_host(ctx, TTT_F64, p->ndim, p->shape, w));
            ttt_step_reset(ctx);
            const double fd = (plus - minus) / (2 * eps), err = fabs(fd - g[j]) / fmax(1e-3, fabs(fd));
            worst = fmax(worst, err);
            CHECK_MSG(err < 1e-5, "%s[%lld]: backward %.10g, central difference %.10g", names[i], (long long)j, g[j],
                      fd);
        }
        free(w), free(g);
    }
    printf("gradients vs central differences: worst relative error %.2e\n", worst);
    ttt_lm_free(ctx, &m);
}

/* PyTorch reference (bench/lm/make_fixture.py): for each config prefix, the
 * parameters, ids, targets, logits, loss and gradients in float64. */
static void test_torch_fixture(ttt_ctx *ctx) {
#ifndef TTT_HAVE_JSONC
    (void)ctx;
    printf("PyTorch fixture: skipped (built without json-c)\n");
#else
    /* the repository root: this file is ROOT/tests/test_lm.c */
    static const char leaf[] = "/tests/fixtures/lm_torch_fixture.safetensors";
    char path[4096];
    snprintf(path, sizeof path - sizeof leaf, "%s", __FILE__);
    char *cut = strstr(path, "/tests/test_lm.c");
    if (cut) strcpy(cut, leaf);
    else snprintf(path, sizeof path, ".%s", leaf);
    FILE *f = fopen(path, "rb");
    if (!f) {
        printf("PyTorch fixture: %s not present yet, skipped\n", path);
        return;
    }
    fclose(f);
    char *meta = NULL;
    CHECK(ttt_load_safetensors(ctx, path, 0, NULL, &meta) == TTT_OK);
    char buf[64];
    for (int cfg_i = 0; cfg_i < 2; cfg_i++) {
        char key[64];
        ttt_lm_config c;
        ttt_lm_preset("tiny", 2, &c, NULL, 0);
        int64_t *fields[] = {&c.vocab, &c.dim, &c.depth, &c.heads, &c.mlp_hidden, &c.window, &c.prime_blocks};
        const char *fnames[] = {"vocab", "dim", "depth", "heads", "mlp_hidden", "window", "prime_blocks"};
        int ok = 1;
        for (int j = 0; j < 7; j++) {
            snprintf(key, sizeof key, "c%d.%s", cfg_i, fnames[j]);
            ok = ok && ttt_metadata_get(meta, key, buf, sizeof buf) == TTT_OK;
            if (ok) *fields[j] = atoll(buf);
        }
        snprintf(key, sizeof key, "c%d.rope_theta", cfg_i);
        ok = ok && ttt_metadata_get(meta, key, buf, sizeof buf) == TTT_OK;
        if (ok) c.rope_theta = atof(buf);
        /* optional keys (older fixtures lack them: the defaults) */
        snprintf(key, sizeof key, "c%d.prime_hidden", cfg_i);
        if (ttt_metadata_get(meta, key, buf, sizeof buf) == TTT_OK) c.prime_hidden = atoll(buf);
        snprintf(key, sizeof key, "c%d.qk_norm", cfg_i);
        if (ttt_metadata_get(meta, key, buf, sizeof buf) == TTT_OK) c.qk_norm = atoi(buf);
        snprintf(key, sizeof key, "c%d.norm_eps", cfg_i);
        if (ttt_metadata_get(meta, key, buf, sizeof buf) == TTT_OK) c.norm_eps = atof(buf);
        snprintf(key, sizeof key, "c%d.B", cfg_i);
        int64_t B = 0, T = 0;
        ok = ok && ttt_metadata_get(meta, key, buf, sizeof buf) == TTT_OK && (B = atoll(buf)) > 0;
        snprintf(key, sizeof key, "c%d.T", cfg_i);
        ok = ok && ttt_metadata_get(meta, key, buf, sizeof buf) == TTT_OK && (T = atoll(buf)) > 0;
        CHECK_MSG(ok, "fixture metadata for config %d", cfg_i);
        if (!ok) break;
        ttt_lm m;
        CHECK(ttt_lm_init(ctx, &m, &c, TTT_F64) == TTT_OK);
        /* parameters under "c<i>.<name>", their gradients under "c<i>.grad.<name>" */
        ttt_named_tensor *nt = calloc((size_t)m.n_params * 2 + 4, sizeof *nt);
        char (*nm)[160] = calloc((size_t)m.n_params * 2 + 4, sizeof *nm);
        ttt_tensor **want = calloc((size_t)m.n_params, sizeof *want);
        for (int j = 0; j < m.n_params; j++) {
            snprintf(nm[j], 160, "c%d.%s", cfg_i, m.names[j]);
            nt[j] = (ttt_named_tensor){nm[j], m.params[j]};
            want[j] = ttt_persistent(ctx, TTT_F64, m.params[j]->ndim, m.params[j]->shape, "want");
            snprintf(nm[m.n_params + j], 160, "c%d.grad.%s", cfg_i, m.names[j]);
            nt[m.n_params + j] = (ttt_named_tensor){nm[m.n_params + j], want[j]};
        }
        int n = 2 * m.n_params;
        ttt_tensor *ids = ttt_persistent(ctx, TTT_I32, TTT_DIMS(B, T), "ids");
        ttt_tensor *tg = ttt_persistent(ctx, TTT_I32, TTT_DIMS(B, T), "targets");
        ttt_tensor *lg = ttt_persistent(ctx, TTT_F64, TTT_DIMS(B, T, c.vocab), "logits");
        ttt_tensor *ls = ttt_persistent(ctx, TTT_F64, 0, NULL, "loss");
        const char *extra[] = {"ids", "targets", "logits", "loss"};
        ttt_tensor *et[] = {ids, tg, lg, ls};
        for (int j = 0; j < 4; j++) {
            snprintf(nm[n + j], 160, "c%d.%s", cfg_i, extra[j]);
            nt[n + j] = (ttt_named_tensor){nm[n + j], et[j]};
        }
        CHECK_MSG(ttt_load_safetensors(ctx, path, n + 4, nt, NULL) == TTT_OK, "%s", ttt_error(ctx));
        ttt_zero_grad(ctx, m.n_params, m.params);
        ttt_tensor *loss = ttt_lm_loss(ctx, &m, ids, tg, NULL);
        ttt_tensor *ours = ttt_lm_logits(ctx, &m, ttt_lm_hidden(ctx, &m, ids, 0));
        const int64_t nl = B * T * c.vocab;
        double *a = malloc(sizeof(double) * (size_t)nl), *b = malloc(sizeof(double) * (size_t)nl);
        ttt_copy_to_host(ctx, ours, a, TTT_F64);
        ttt_copy_to_host(ctx, lg, b, TTT_F64);
        double dl = 0;
        for (int64_t j = 0; j < nl; j++) dl = fmax(dl, fabs(a[j] - b[j]));
        free(a), free(b);
        CHECK_MSG(dl < 1e-10, "config %d: logits differ from PyTorch by %g", cfg_i, dl);
        CHECK_NEAR(ttt_item(ctx, loss), ttt_item(ctx, ls), 1e-11);
        CHECK(ttt_backward(ctx, loss) == TTT_OK);
        double dg = 0;
        for (int j = 0; j < m.n_params; j++) {
            const int64_t k = ttt_numel(want[j]);
            double *x = malloc(sizeof(double) * (size_t)k), *y = malloc(sizeof(double) * (size_t)k), scale = 1e-3;
            ttt_copy_to_host(ctx, m.params[j]->grad, x, TTT_F64);
            ttt_copy_to_host(ctx, want[j], y, TTT_F64);
            double d = 0;
            for (int64_t q = 0; q < k; q++) d = fmax(d, fabs(x[q] - y[q])), scale = fmax(scale, fabs(y[q]));
            CHECK_MSG(d / scale < 1e-9, "config %d: gradient of %s differs from PyTorch by %g (scale %g)", cfg_i,
                      m.names[j], d, scale);
            dg = fmax(dg, d / scale);
            free(x), free(y);
            ttt_persistent_free(ctx, want[j]);
        }
        printf("PyTorch fixture config %d (window %lld, prime_blocks %lld, prime_hidden %lld): logits max diff %.2e, "
               "gradients max scaled diff %.2e\n",
               cfg_i, (long long)c.window, (long long)c.prime_blocks, (long long)c.prime_hidden, dl, dg);
        ttt_persistent_free(ctx, ids), ttt_persistent_free(ctx, tg), ttt_persistent_free(ctx, lg);
        ttt_persistent_free(ctx, ls);
        free(nt), free(nm), free(want);
        ttt_lm_free(ctx, &m);
        ttt_step_reset(ctx);
    }
    free(meta);
#endif
}

/* The init lm.h states: N(0, init_std^2) for the embedding and q/k/v/gate/up,
 * init_std / sqrt(2 depth) for o_proj and down_proj, gains 1. */
static void test_init(ttt_ctx *ctx) {
    ttt_lm m;
    ttt_lm_config c;
    ttt_lm_preset("tiny", 300, &c, NULL, 0);
    c.prime_blocks = 1;
    CHECK(ttt_lm_init(ctx, &m, &c, TTT_F32) == TTT_OK && m.embed->dtype == TTT_F32);
    for (int i = 0; i < m.n_params; i++) {
        const int64_t n = ttt_numel(m.params[i]);
        double *w = malloc(sizeof(double) * (size_t)n), sum = 0, sq = 0;
        ttt_copy_to_host(ctx, m.params[i], w, TTT_F64);
        for (int64_t j = 0; j < n; j++) sum += w[j], sq += w[j] * w[j];
        const char *nm = m.names[i];
        if (m.params[i]->ndim == 1) {
            CHECK_MSG(sum == (double)n && sq == (double)n, "%s: gains start at 1", nm);
        } else {
            const int residual = strstr(nm, "o_proj") || strstr(nm, "down_proj");
            const double want = c.init_std / (residual ? sqrt(2.0 * (double)c.depth) : 1.0), sd = sqrt(sq / (double)n);
            CHECK_MSG(fabs(sd / want - 1) < 0.06 && fabs(sum / (double)n) < 4 * want / sqrt((double)n),
                      "%s: std %g (want %g), mean %g", nm, sd, want, sum / (double)n);
        }
        free(w);
    }
    ttt_lm_free(ctx, &m);
}

/* ttt_lm_init with c must fail with a message containing want. */
static void check_bad_config(ttt_ctx *ctx, ttt_lm_config c, const char *want) {
    ttt_lm m;
    ttt_clear_error(ctx);
    CHECK_MSG(ttt_lm_init(ctx, &m, &c, TTT_F64) == TTT_ERR && strstr(ttt_error(ctx), want), "want '%s', got '%s'",
              want, ttt_error(ctx));
    CHECK(m.n_params == 0 && m.embed == NULL); /* left empty */
    ttt_lm_free(ctx, &m);
}

static void test_validation(ttt_ctx *ctx) {
    ttt_lm m;
    ttt_lm_config c = small_config(0, 0);
    char err[128];
    CHECK(ttt_lm_preset("huge", 10, &c, err, sizeof err) == TTT_ERR && strstr(err, "unknown preset"));
    CHECK(ttt_lm_preset("125m", 50257, &c, err, sizeof err) == TTT_OK && c.dim == 768 && c.depth == 12 &&
          c.heads == 12 && c.mlp_hidden == 2048 && c.window == 0 && c.qk_norm == 1);
    CHECK(ttt_lm_param_count(&c) > 120000000 && ttt_lm_param_count(&c) < 130000000);
    const struct {
        int field;
        int64_t value;
        const char *want;
    } bad[] = {
        {0, 1, "vocab"},  {1, 0, "dim"},          {2, 0, "depth"},         {3, 3, "heads"},
        {3, 0, "heads"},  {4, 0, "mlp_hidden"},   {5, -1, "window"},       {6, 3, "prime_blocks"},
        {6, -1, "prime_blocks"}, {7, -2, "prime_hidden"}, {1, 12, "even"}, /* 12 / 2 heads = 6 fine; below */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        c = small_config(0, 0);
        int64_t *fields[] = {&c.vocab, &c.dim, &c.depth, &c.heads, &c.mlp_hidden, &c.window, &c.prime_blocks,
                             &c.prime_hidden};
        *fields[bad[i].field] = bad[i].value;
        if (!strcmp(bad[i].want, "even")) c.heads = 4; /* dim 12 in 4 heads of 3: odd head dim, no RoPE pairs */
        check_bad_config(ctx, c, bad[i].want);
    }
    c = small_config(0, 0), c.rope_theta = 0;
    check_bad_config(ctx, c, "rope_theta");
    c = small_config(0, 0), c.norm_eps = 0;
    check_bad_config(ctx, c, "norm_eps");
    c = small_config(0, 0), c.init_std = -1;
    check_bad_config(ctx, c, "init_std");
    c = small_config(0, 0), c.qk_norm = 2;
    check_bad_config(ctx, c, "qk_norm");
    c = small_config(0, 0);
    CHECK(ttt_lm_init(ctx, &m, &c, TTT_I32) == TTT_ERR && strstr(ttt_error(ctx), "f32 or f64"));
    CHECK(ttt_lm_init(ctx, NULL, &c, TTT_F64) == TTT_ERR && strstr(ttt_error(ctx), "NULL"));

    /* the parameter list: every tensor once, its count as ttt_lm_param_count says, names as lm.h lists them */
    for (int variant = 0; variant < 3; variant++) {
        c = small_config(0, variant == 0 ? 0 : 2);
        if (variant == 1) c.prime_hidden = 10;
        if (variant == 2) c.qk_norm = 0;
        CHECK(ttt_lm_init(ctx, &m, &c, TTT_F64) == TTT_OK);
        int64_t total = 0, decayed = 0;
        for (int i = 0; i < m.n_params; i++) {
            total += ttt_numel(m.params[i]);
            decayed += m.decay[i];
            CHECK_MSG(m.decay[i] == (m.params[i]->ndim == 2), "%s", m.names[i]);
            CHECK(ttt_lm_param(&m, m.names[i]) == m.params[i]);
        }
        CHECK(total == ttt_lm_param_count(&c));
        CHECK(decayed == 1 + c.depth * 7 + c.prime_blocks * 3);
        CHECK(m.n_params == 2 + (int)c.depth * (c.qk_norm ? 13 : 11) + (int)c.prime_blocks * 5);
        CHECK(!strcmp(m.names[0], "model.embed_tokens.weight") && !strcmp(m.names[m.n_params - 1], "model.norm.weight"));
        CHECK((ttt_lm_param(&m, "model.layers.1.self_attn.q_norm.weight") != NULL) == (c.qk_norm == 1));
        CHECK((ttt_lm_param(&m, "model.layers.0.prime_mlp.gate_proj.weight") != NULL) == (c.prime_blocks == 2));
        CHECK(ttt_lm_param(&m, "model.layers.2.mlp.up_proj.weight") == NULL && ttt_lm_param(&m, NULL) == NULL);
        ttt_lm_free(ctx, &m);
    }

    c = small_config(0, 0);
    CHECK(ttt_lm_init(ctx, &m, &c, TTT_F64) == TTT_OK);
    ttt_tensor *bad_dt = ttt_zeros(ctx, TTT_F64, TTT_DIMS(1, 3));
    CHECK(ttt_lm_hidden(ctx, &m, bad_dt, 0) == NULL && strstr(ttt_error(ctx), "i32"));
    CHECK(ttt_lm_hidden(ctx, &m, ttt_zeros(ctx, TTT_I32, TTT_DIMS(3)), 0) == NULL && strstr(ttt_error(ctx), "[B, T]"));
    int32_t big[3] = {1, 2, 999}, neg[3] = {1, -1, 2}, ok[3] = {1, 2, 3};
    CHECK(ttt_lm_hidden(ctx, &m, ids_tensor(ctx, big, 1, 3), 0) == NULL && strstr(ttt_error(ctx), "999"));
    CHECK(ttt_lm_hidden(ctx, &m, ids_tensor(ctx, ok, 1, 3), -1) == NULL && strstr(ttt_error(ctx), "pos0"));
    CHECK(ttt_lm_hidden(ctx, NULL, ids_tensor(ctx, ok, 1, 3), 0) == NULL && strstr(ttt_error(ctx), "NULL"));
    ttt_lm empty = {0};
    CHECK(ttt_lm_hidden(ctx, &empty, ids_tensor(ctx, ok, 1, 3), 0) == NULL && strstr(ttt_error(ctx), "ttt_lm_init"));
    CHECK(ttt_lm_logits(ctx, &m, ttt_zeros(ctx, TTT_F64, TTT_DIMS(2, 5))) == NULL && strstr(ttt_error(ctx), "dim"));
    CHECK(ttt_lm_loss(ctx, &m, ids_tensor(ctx, ok, 1, 3), ids_tensor(ctx, ok, 3, 1), NULL) == NULL &&
          strstr(ttt_error(ctx), "differ in shape"));
    CHECK(ttt_lm_loss(ctx, &m, ids_tensor(ctx, ok, 1, 3), bad_dt, NULL) == NULL && strstr(ttt_error(ctx), "targets"));
    CHECK(ttt_lm_loss(ctx, &m, ids_tensor(ctx, ok, 1, 3), ids_tensor(ctx, big, 1, 3), NULL) == NULL &&
          strstr(ttt_error(ctx), "999"));
    CHECK(ttt_lm_loss(ctx, &m, ids_tensor(ctx, ok, 1, 3), ids_tensor(ctx, neg, 1, 3), NULL) == NULL &&
          strstr(ttt_error(ctx), "-1"));

    ttt_lm_cache cache = {0};
    CHECK(ttt_lm_decode(ctx, &m, &cache, ids_tensor(ctx, ok, 1, 3)) == NULL && strstr(ttt_error(ctx), "cache"));
    CHECK(ttt_lm_cache_init(ctx, &m, &cache, 1, 0) == TTT_ERR && strstr(ttt_error(ctx), "max_len"));
    CHECK(ttt_lm_cache_init(ctx, &m, &cache, 0, 8) == TTT_ERR && strstr(ttt_error(ctx), "batch"));
    CHECK(ttt_lm_cache_init(ctx, &m, &cache, 1, 4) == TTT_OK);
    CHECK(ttt_lm_decode(ctx, &m, &cache, ids_tensor(ctx, ok, 3, 1)) == NULL && strstr(ttt_error(ctx), "batch"));
    CHECK(ttt_lm_decode(ctx, &m, &cache, bad_dt) == NULL && strstr(ttt_error(ctx), "i32"));
    CHECK(ttt_lm_decode(ctx, &m, &cache, ids_tensor(ctx, big, 1, 3)) == NULL && strstr(ttt_error(ctx), "999"));
    CHECK(cache.len == 0); /* a failed call caches nothing */
    CHECK(ttt_lm_decode(ctx, &m, &cache, ids_tensor(ctx, ok, 1, 3)) != NULL && cache.len == 3);
    CHECK(ttt_lm_decode(ctx, &m, &cache, ids_tensor(ctx, ok, 1, 2)) == NULL && strstr(ttt_error(ctx), "capacity"));
    ttt_lm other;
    ttt_lm_config co = small_config(4, 0);
    co.heads = 4;
    CHECK(ttt_lm_init(ctx, &other, &co, TTT_F64) == TTT_OK);
    CHECK(ttt_lm_decode(ctx, &other, &cache, ids_tensor(ctx, ok, 1, 1)) == NULL && strstr(ttt_error(ctx), "another model"));
    ttt_lm_free(ctx, &other);
    ttt_lm_cache_free(ctx, &cache);
    ttt_lm_cache_free(ctx, NULL);
    ttt_lm_free(ctx, &m);
    ttt_lm_free(ctx, NULL);
    ttt_step_reset(ctx);
}

/* The loss and every parameter's gradient of model m, computed as it is set (f32 or bf16 compute). */
static double mp_loss_grads(ttt_ctx *ctx, ttt_lm *m, const int32_t *ids_h, const int32_t *tg_h, int64_t B, int64_t T,
                            double **g, int64_t *total) {
    ttt_tensor *ids = ids_tensor(ctx, ids_h, B, T), *tg = ids_tensor(ctx, tg_h, B, T);
    *total = 0;
    for (int i = 0; i < m->n_params; i++) *total += ttt_numel(m->params[i]);
    *g = calloc((size_t)*total, sizeof(double));
    ttt_zero_grad(ctx, m->n_params, m->params);
    ttt_tensor *l = ttt_lm_loss(ctx, m, ids, tg, NULL);
    CHECK_MSG(l != NULL, "%s", ttt_error(ctx));
    if (!l) return NAN;
    const double loss = ttt_item(ctx, l);
    CHECK(ttt_backward(ctx, l) == TTT_OK);
    for (int i = 0, off = 0; i < m->n_params; off += (int)ttt_numel(m->params[i]), i++) {
        CHECK(m->params[i]->grad && m->params[i]->grad->dtype == TTT_F32); /* master gradients stay f32 */
        if (m->params[i]->grad) ttt_copy_to_host(ctx, m->params[i]->grad, *g + off, TTT_F64);
    }
    ttt_step_reset(ctx);
    return loss;
}

/* Mixed precision (ttt_lm_set_compute): refused on the CPU; on a GPU the bf16
 * loss and gradients stay close to f32's and AdamW on the f32 master weights
 * learns a batch. */
static void test_mixed_precision(ttt_ctx *cpu) {
    ttt_lm m;
    ttt_lm_config c = small_config(0, 0);
    CHECK(ttt_lm_init(cpu, &m, &c, TTT_F64) == TTT_OK);
    CHECK(m.compute == TTT_F64);
    CHECK(ttt_lm_set_compute(cpu, &m, TTT_BF16) == TTT_ERR && strstr(ttt_error(cpu), "CUDA"));
    CHECK(ttt_lm_set_compute(cpu, &m, TTT_F32) == TTT_ERR && strstr(ttt_error(cpu), "bf16 or the parameters'"));
    CHECK(ttt_lm_set_compute(cpu, &m, TTT_F64) == TTT_OK);
    CHECK(ttt_lm_set_compute(cpu, NULL, TTT_F64) == TTT_ERR);
    ttt_lm_free(cpu, &m);
    if (!ttt_backend_for(TTT_CUDA)) {
        printf("mixed precision: no CUDA device, GPU part skipped\n");
        return;
    }
    ttt_ctx_config cfg = {.device = TTT_CUDA, .seed = 5};
    ttt_ctx *ctx = ttt_ctx_new(&cfg);
    CHECK(ctx != NULL);
    if (!ctx) return;
    ttt_lm_preset("tiny", 97, &c, NULL, 0);
    c.dim = 64, c.depth = 2, c.heads = 2, c.mlp_hidden = 128, c.prime_blocks = 1;
    CHECK(ttt_lm_init(ctx, &m, &c, TTT_F32) == TTT_OK);
    enum { B = 2, T = 48 };
    int32_t ids[B * T], tg[B * T];
    for (int i = 0; i < B * T; i++) ids[i] = (int32_t)((i * 7 + 3) % c.vocab), tg[i] = (int32_t)((i * 11 + 5) % c.vocab);
    double *g32, *g16;
    int64_t n;
    const double l32 = mp_loss_grads(ctx, &m, ids, tg, B, T, &g32, &n);
    CHECK(ttt_lm_set_compute(ctx, &m, TTT_BF16) == TTT_OK);
    const double l16 = mp_loss_grads(ctx, &m, ids, tg, B, T, &g16, &n);
    double dn = 0, gn = 0;
    for (int64_t i = 0; i < n; i++) dn += (g16[i] - g32[i]) * (g16[i] - g32[i]), gn += g32[i] * g32[i];
    printf("mixed precision: loss f32 %.6f bf16 %.6f; gradient relative error %.3g\n", l32, l16, sqrt(dn / gn));
    CHECK_MSG(fabs(l16 - l32) <= 1e-2 * fabs(l32), "loss f32 %g bf16 %g", l32, l16);
    CHECK_MSG(sqrt(dn / gn) <= 5e-2, "gradient relative error %g", sqrt(dn / gn));
    free(g32), free(g16);
    /* decoding in bf16 matches the bf16 forward to bf16 rounding */
    ttt_lm_cache cache;
    CHECK(ttt_lm_cache_init(ctx, &m, &cache, B, T) == TTT_OK);
    ttt_tensor *ti = ids_tensor(ctx, ids, B, T);
    ttt_tensor *full = ttt_lm_logits(ctx, &m, ttt_lm_hidden(ctx, &m, ti, 0)), *dec = ttt_lm_decode(ctx, &m, &cache, ti);
    CHECK_MSG(full && dec && full->dtype == TTT_F32, "%s", ttt_error(ctx));
    if (full && dec) {
        double worst = ttt_item(ctx, ttt_max(ctx, ttt_abs(ctx, ttt_sub(ctx, full, dec)), 0, NULL, 0));
        double scale = ttt_item(ctx, ttt_max(ctx, ttt_abs(ctx, full), 0, NULL, 0));
        CHECK_MSG(worst <= 3e-2 * scale, "decode vs forward in bf16: %g of %g", worst, scale);
    }
    ttt_lm_cache_free(ctx, &cache);
    ttt_step_reset(ctx);
    /* AdamW on the f32 masters learns the batch */
    const ttt_optim_config oc = {.lr = 3e-3, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8};
    ttt_optimizer *opt = ttt_adamw_new(ctx, m.n_params, m.params, m.decay, &oc);
    double first = NAN, last = NAN;
    for (int s = 0; s < 60 && opt; s++) {
        ttt_zero_grad(ctx, m.n_params, m.params);
        ttt_tensor *l = ttt_lm_loss(ctx, &m, ids_tensor(ctx, ids, B, T), ids_tensor(ctx, tg, B, T), NULL);
        if (!l || ttt_backward(ctx, l) != TTT_OK || ttt_optimizer_step(opt, 3e-3) != TTT_OK) break;
        last = ttt_item(ctx, l);
        if (s == 0) first = last;
        ttt_step_reset(ctx);
    }
    printf("mixed precision: 60 AdamW steps on one batch: loss %.4f -> %.4f\n", first, last);
    CHECK_MSG(last < 0.5 * first, "loss %g -> %g", first, last);
    ttt_optimizer_free(opt);
    ttt_lm_free(ctx, &m);
    ttt_ctx_free(ctx);
}

static void test_decode(ttt_ctx *ctx, int64_t window, int qk_norm, int64_t T, const int64_t *pieces, int n_pieces) {
    test_decode_mixer(ctx, TTT_LM_MIXER_ATTENTION, 0, window, qk_norm, T, pieces, n_pieces);
}

/* TTT mixers in the LM: the parameter count, the config through its string, the names, and
 * gradients reaching every parameter. */
static void test_mixers(ttt_ctx *ctx) {
    const struct {
        int mixer, backbone;
        int64_t window;
    } cases[] = {{TTT_LM_MIXER_TTT_LINEAR, 0, 0}, {TTT_LM_MIXER_TTT_LINEAR, 1, 0}, {TTT_LM_MIXER_TTT_MLP, 0, 0},
                 {TTT_LM_MIXER_TTT_MLP, 1, 0},    {TTT_LM_MIXER_TTT_KVB, 0, 4}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        ttt_lm_config c = small_config(cases[ci].window, 0), back;
        c.mixer = cases[ci].mixer, c.ttt_backbone = cases[ci].backbone, c.ttt_mini_batch = 4;
        ttt_lm m;
        CHECK_MSG(ttt_lm_init(ctx, &m, &c, TTT_F64) == TTT_OK, "%s", ttt_error(ctx));
        int64_t n = 0;
        for (int i = 0; i < m.n_params; i++) n += ttt_numel(m.params[i]);
        CHECK_MSG(n == ttt_lm_param_count(&c), "%s: %lld parameters, count says %lld", ttt_lm_mixer_name(c.mixer),
                  (long long)n, (long long)ttt_lm_param_count(&c));
        char buf[1024], err[128];
        CHECK(ttt_lm_config_format(&c, buf, sizeof buf) == TTT_OK);
        CHECK(ttt_lm_config_parse(buf, &back, err, sizeof err) == TTT_OK);
        CHECK(back.mixer == c.mixer && back.ttt_backbone == c.ttt_backbone && back.ttt_mini_batch == 4);
        CHECK(strstr(buf, ttt_lm_mixer_name(c.mixer)) != NULL);
        CHECK(ttt_lm_param(&m, "model.layers.1.ttt.W1") != NULL);
        CHECK((ttt_lm_param(&m, "model.layers.0.self_attn.q_proj.weight") != NULL) == (c.mixer == TTT_LM_MIXER_TTT_KVB));
        CHECK((ttt_lm_param(&m, "model.layers.0.conv.weight") != NULL) == (c.ttt_backbone == 1));
        /* every parameter gets a gradient */
        int32_t ids[2 * 9], tg[2 * 9];
        for (int i = 0; i < 18; i++) ids[i] = (i * 7 + 3) % 37, tg[i] = (i * 5 + 1) % 37;
        CHECK(ttt_zero_grad(ctx, m.n_params, m.params) == TTT_OK);
        ttt_tensor *loss = ttt_lm_loss(ctx, &m, ids_tensor(ctx, ids, 2, 9), ids_tensor(ctx, tg, 2, 9), NULL);
        CHECK(loss && ttt_backward(ctx, loss) == TTT_OK);
        int zero = 0;
        for (int i = 0; i < m.n_params; i++) {
            double g = 0;
            double *h = malloc(sizeof(double) * (size_t)ttt_numel(m.params[i]));
            ttt_copy_to_host(ctx, m.params[i]->grad, h, TTT_F64);
            for (int64_t j = 0; j < ttt_numel(m.params[i]); j++) g += fabs(h[j]);
            free(h);
            if (!(g > 0)) zero++, fprintf(stderr, "no gradient: %s\n", m.names[i]);
        }
        CHECK(zero == 0);
        ttt_lm_free(ctx, &m);
        ttt_step_reset(ctx);
    }
    /* ttt-kvb without a window is refused by name */
    ttt_lm_config c = small_config(0, 0);
    ttt_lm m;
    c.mixer = TTT_LM_MIXER_TTT_KVB;
    CHECK(ttt_lm_init(ctx, &m, &c, TTT_F64) == TTT_ERR && strstr(ttt_error(ctx), "window"));
    CHECK(ttt_lm_mixer_parse("ttt-mlp") == TTT_LM_MIXER_TTT_MLP && ttt_lm_mixer_parse("rwkv") == -1);
    ttt_step_reset(ctx);
}

/* The linear-time mixers (include/ttt/mixers.h) in the LM: parameter count, config round trip,
 * names, gradients reaching every parameter. */
static void test_linear_mixers(ttt_ctx *ctx) {
    const struct {
        int mixer;
        const char *name, *param;
    } cases[] = {{TTT_LM_MIXER_LINEAR_ATTENTION, "linear-attention", "model.layers.1.linear_attn.q_proj.weight"},
                 {TTT_LM_MIXER_GATED_DELTANET, "gated-deltanet", "model.layers.1.gdn.A_log"},
                 {TTT_LM_MIXER_MAMBA2, "mamba2", "model.layers.1.mamba2.in_proj.weight"}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        ttt_lm_config c = small_config(0, 0), back;
        c.mixer = cases[ci].mixer;
        CHECK(ttt_lm_mixer_parse(cases[ci].name) == cases[ci].mixer);
        ttt_lm m;
        CHECK_MSG(ttt_lm_init(ctx, &m, &c, TTT_F64) == TTT_OK, "%s", ttt_error(ctx));
        int64_t n = 0;
        for (int i = 0; i < m.n_params; i++) n += ttt_numel(m.params[i]);
        CHECK_MSG(n == ttt_lm_param_count(&c), "%s: %lld parameters, count says %lld", cases[ci].name, (long long)n,
                  (long long)ttt_lm_param_count(&c));
        char buf[1024], err[128];
        CHECK(ttt_lm_config_format(&c, buf, sizeof buf) == TTT_OK);
        CHECK(ttt_lm_config_parse(buf, &back, err, sizeof err) == TTT_OK && back.mixer == c.mixer);
        CHECK(ttt_lm_param(&m, cases[ci].param) != NULL);
        CHECK(ttt_lm_param(&m, "model.layers.0.self_attn.q_proj.weight") == NULL);
        int32_t ids[2 * 9], tg[2 * 9];
        for (int i = 0; i < 18; i++) ids[i] = (i * 7 + 3) % 37, tg[i] = (i * 5 + 1) % 37;
        CHECK(ttt_zero_grad(ctx, m.n_params, m.params) == TTT_OK);
        ttt_tensor *loss = ttt_lm_loss(ctx, &m, ids_tensor(ctx, ids, 2, 9), ids_tensor(ctx, tg, 2, 9), NULL);
        CHECK(loss && ttt_backward(ctx, loss) == TTT_OK);
        int zero = 0;
        for (int i = 0; i < m.n_params; i++) {
            double g = 0;
            double *h = malloc(sizeof(double) * (size_t)ttt_numel(m.params[i]));
            ttt_copy_to_host(ctx, m.params[i]->grad, h, TTT_F64);
            for (int64_t j = 0; j < ttt_numel(m.params[i]); j++) g += fabs(h[j]);
            free(h);
            if (!(g > 0)) zero++, fprintf(stderr, "no gradient: %s\n", m.names[i]);
        }
        CHECK(zero == 0);
        printf("mixer %s: %lld parameters, every one with a gradient\n", cases[ci].name, (long long)n);
        ttt_lm_free(ctx, &m);
        ttt_step_reset(ctx);
    }
}

int main(void) {
    ttt_ctx_config cfg = {.device = TTT_CPU, .seed = 11};
    ttt_ctx *ctx = ttt_ctx_new(&cfg);
    CHECK(ctx != NULL);
    test_causality(ctx);
    test_long_window_is_full();
    const int64_t one[] = {1}, mixed[] = {5, 1, 3, 1, 7}, whole[] = {1 << 20};
    test_decode(ctx, 0, 1, 23, one, 1);
    test_decode(ctx, 0, 1, 23, mixed, 5);
    test_decode(ctx, 4, 1, 23, one, 1);    /* ring of 3 slots, wrapped 7 times */
    test_decode(ctx, 4, 1, 23, mixed, 5);  /* pieces longer than the ring */
    test_decode(ctx, 5, 0, 23, mixed, 5);  /* ring of 4 slots, pieces ending at and across its end; no QK-norm */
    test_decode(ctx, 1, 1, 23, mixed, 5);  /* window 1: each token sees only itself */
    test_decode(ctx, 0, 1, 1100, whole, 1); /* one call over 1100 tokens: three internal pieces */
    test_decode(ctx, 6, 1, 1100, whole, 1);
    for (int mixer = TTT_LM_MIXER_TTT_LINEAR; mixer <= TTT_LM_MIXER_TTT_KVB; mixer++)
        for (int bb = 0; bb < (mixer == TTT_LM_MIXER_TTT_KVB ? 1 : 2); bb++) {
            test_decode_mixer(ctx, mixer, bb, mixer == TTT_LM_MIXER_TTT_KVB ? 5 : 0, 1, 23, one, 1);
            test_decode_mixer(ctx, mixer, bb, mixer == TTT_LM_MIXER_TTT_KVB ? 5 : 0, 1, 23, mixed, 5);
        }
    for (int mixer = TTT_LM_MIXER_LINEAR_ATTENTION; mixer <= TTT_LM_MIXER_MAMBA2; mixer++) {
        test_decode_mixer(ctx, mixer, 0, 0, 1, 23, one, 1);
        test_decode_mixer(ctx, mixer, 0, 0, 1, 23, mixed, 5);
    }
    test_decode_mixer(ctx, TTT_LM_MIXER_GATED_DELTANET, 0, 0, 1, 1100, whole, 1); /* prefill in pieces of 512 */
    test_mixers(ctx);
    test_linear_mixers(ctx);
    test_loss(ctx);
    test_loss_chunks(ctx);
    test_gradients(ctx);
    test_torch_fixture(ctx);
    test_init(ctx);
    test_validation(ctx);
    test_mixed_precision(ctx);
    ttt_ctx_free(ctx);
    TEST_MAIN_END();
}
