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
    enum { B = 1, T = 12, W = 4 };
    for (int64_t window = 0; window <= W; window += W) {
        ttt_lm m;
        ttt_lm_config c = small_config(window, 1);
        CHECK(ttt_lm_init(ctx, &m, &c, TTT_F64) == TTT_OK);
        int32_t ids[T], ids2[T];
        for (int t = 0; t < T; t++) ids[t] = ids2[t] = (int32_t)((t * 7 + 3) % c.vocab);
        const int moved = 5;
        ids2[moved] = (ids[moved] + 11) % (int32_t)c.vocab;
        double *a = logits_host(ctx, &m, ids, B, T), *b = logits_host(ctx, &m, ids2, B, T);
        CHECK(a && b);
        if (a && b) {
            CHECK(row_diff(a, b, B, T, c.vocab, 0, moved) == 0);  /* the past does not see the future */
            CHECK(row_diff(a, b, B, T, c.vocab, moved, moved + 1) > 1e-6);
            if (window) {
                /* within one block the token reaches W - 1 positions on; stacked blocks reach further */
                CHECK(row_diff(a, b, B, T, c.vocab, moved + W - 1, moved + W) > 1e-6);
                CHECK(row_diff(a, b, B, T, c.vocab, moved + c.depth * (W - 1) + 1, T) == 0);
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

static void test_decode(ttt_ctx *ctx, int64_t window, const int64_t *pieces, int n_pieces) {
    enum { B = 2, T = 23 };
    ttt_lm m;
    ttt_lm_config c = small_config(window, 1);
    CHECK(ttt_lm_init(ctx, &m, &c, TTT_F64) == TTT_OK);
    int32_t ids[B * T];
    for (int i = 0; i < B * T; i++) ids[i] = (int32_t)((i * 13 + 7) % c.vocab);
    double *ref = logits_host(ctx, &m, ids, B, T);
    ttt_lm_cache cache;
    CHECK(ttt_lm_cache_init(ctx, &m, &cache, B, T) == TTT_OK);
    double worst = 0;
    int64_t t0 = 0;
    for (int p = 0; t0 < T; p = (p + 1) % n_pieces) {
        int64_t n = pieces[p] < T - t0 ? pieces[p] : T - t0;
        int32_t chunk[B * T];
        for (int b = 0; b < B; b++)
            for (int64_t t = 0; t < n; t++) chunk[b * n + t] = ids[b * T + t0 + t];
        ttt_tensor *lg = ttt_lm_decode(ctx, &m, &cache, ids_tensor(ctx, chunk, B, n));
        CHECK_MSG(lg != NULL, "%s", ttt_error(ctx));
        if (!lg) break;
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
    CHECK_MSG(worst < 1e-10, "window %lld: decode differs from the forward by %g", (long long)window, worst);
    CHECK(cache.len == T);
    if (window == 0) { /* a full cache refuses more */
        int32_t one[B] = {1, 2};
        CHECK(ttt_lm_decode(ctx, &m, &cache, ids_tensor(ctx, one, B, 1)) == NULL &&
              strstr(ttt_error(ctx), "capacity"));
    }
    free(ref);
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
    CHECK(ttt_lm_init(ctx, &m, &c, TTT_F64) == TTT_OK);
    int32_t ids[B * T], tg[B * T];
    for (int i = 0; i < B * T; i++) ids[i] = (int32_t)((i * 7 + 2) % c.vocab), tg[i] = (int32_t)((i * 11 + 4) % c.vocab);
    ttt_zero_grad(ctx, m.n_params, m.params);
    CHECK(ttt_backward(ctx, ttt_lm_loss(ctx, &m, ids_tensor(ctx, ids, B, T), ids_tensor(ctx, tg, B, T), NULL)) ==
          TTT_OK);
    ttt_step_reset(ctx);
    const char *names[] = {"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                           "model.layers.0.self_attn.k_norm.weight", "model.layers.1.prime_mlp.up_proj.weight",
                           "model.layers.1.mlp.down_proj.weight", "model.layers.0.post_attention_layernorm.weight",
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
            const int64_t j = (int64_t)((k * 7919 + 13) % n), h = 1;
            const double eps = 1e-5, keep = w[j];
            double plus, minus;
            w[j] = keep + eps, ttt_assign(ctx, p, ttt_from_host(ctx, TTT_F64, p->ndim, p->shape, w));
            plus = loss_value(ctx, &m, ids, tg, B, T);
            w[j] = keep - eps, ttt_assign(ctx, p, ttt_from_host(ctx, TTT_F64, p->ndim, p->shape, w));
            minus = loss_value(ctx, &m, ids, tg, B, T);
            w[j] = keep, ttt_assign(ctx, p, ttt_from_host(ctx, TTT_F64, p->ndim, p->shape, w));
            ttt_step_reset(ctx);
            const double fd = (plus - minus) / (2 * eps), err = fabs(fd - g[j]) / fmax(1e-3, fabs(fd));
            (void)h;
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
        printf("PyTorch fixture config %d: logits max diff %.2e, gradients max scaled diff %.2e\n", cfg_i, dl, dg);
        ttt_persistent_free(ctx, ids), ttt_persistent_free(ctx, tg), ttt_persistent_free(ctx, lg);
        ttt_persistent_free(ctx, ls);
        free(nt), free(nm), free(want);
        ttt_lm_free(ctx, &m);
        ttt_step_reset(ctx);
    }
    free(meta);
#endif
}

static void test_validation(ttt_ctx *ctx) {
    ttt_lm m;
    ttt_lm_config c = small_config(0, 0);
    char err[128];
    CHECK(ttt_lm_preset("huge", 10, &c, err, sizeof err) == TTT_ERR && strstr(err, "unknown preset"));
    c = small_config(0, 0);
    c.heads = 3;
    CHECK(ttt_lm_init(ctx, &m, &c, TTT_F64) == TTT_ERR && strstr(ttt_error(ctx), "heads"));
    c = small_config(0, 3);
    CHECK(ttt_lm_init(ctx, &m, &c, TTT_F64) == TTT_ERR && strstr(ttt_error(ctx), "prime_blocks"));
    c = small_config(-1, 0);
    CHECK(ttt_lm_init(ctx, &m, &c, TTT_F64) == TTT_ERR && strstr(ttt_error(ctx), "window"));
    c = small_config(0, 0);
    c.rope_theta = 0;
    CHECK(ttt_lm_init(ctx, &m, &c, TTT_F64) == TTT_ERR && strstr(ttt_error(ctx), "rope_theta"));
    c = small_config(0, 0);
    CHECK(ttt_lm_init(ctx, &m, &c, TTT_I32) == TTT_ERR && strstr(ttt_error(ctx), "f32 or f64"));
    CHECK(ttt_lm_init(ctx, &m, &c, TTT_F64) == TTT_OK);
    ttt_tensor *bad = ttt_zeros(ctx, TTT_F64, TTT_DIMS(1, 3));
    CHECK(ttt_lm_hidden(ctx, &m, bad, 0) == NULL && strstr(ttt_error(ctx), "i32"));
    int32_t big[3] = {1, 2, 999};
    CHECK(ttt_lm_hidden(ctx, &m, ids_tensor(ctx, big, 1, 3), 0) == NULL && strstr(ttt_error(ctx), "999"));
    int32_t ok[3] = {1, 2, 3};
    CHECK(ttt_lm_loss(ctx, &m, ids_tensor(ctx, ok, 1, 3), ids_tensor(ctx, ok, 3, 1), NULL) == NULL &&
          strstr(ttt_error(ctx), "differ in shape"));
    ttt_lm_cache cache = {0};
    CHECK(ttt_lm_decode(ctx, &m, &cache, ids_tensor(ctx, ok, 1, 3)) == NULL && strstr(ttt_error(ctx), "cache"));
    CHECK(ttt_lm_cache_init(ctx, &m, &cache, 1, 0) == TTT_ERR && strstr(ttt_error(ctx), "max_len"));
    CHECK(ttt_lm_param_count(&c) == ttt_lm_param_count(&m.cfg));
    int64_t total = 0;
    for (int i = 0; i < m.n_params; i++) total += ttt_numel(m.params[i]);
    CHECK(total == ttt_lm_param_count(&c));
    ttt_lm_free(ctx, &m);
    ttt_step_reset(ctx);
}

int main(void) {
    ttt_ctx_config cfg = {.device = TTT_CPU, .seed = 11};
    ttt_ctx *ctx = ttt_ctx_new(&cfg);
    CHECK(ctx != NULL);
    test_causality(ctx);
    test_long_window_is_full();
    const int64_t one[] = {1}, mixed[] = {5, 1, 3, 1, 7};
    test_decode(ctx, 0, one, 1);
    test_decode(ctx, 0, mixed, 5);
    test_decode(ctx, 4, one, 1);   /* ring of 3 slots, wrapped 7 times */
    test_decode(ctx, 4, mixed, 5); /* chunks longer than the ring */
    test_decode(ctx, 1, mixed, 5); /* window 1: each token sees only itself */
    test_loss(ctx);
    test_gradients(ctx);
    test_torch_fixture(ctx);
    test_validation(ctx);
    ttt_ctx_free(ctx);
    TEST_MAIN_END();
}
