/* Transformer-squared's adapters (include/ttt/adapter.h) on the tiny Llama
 * fixtures of tests/fixtures/gguf: the SVD and its cache, SVF's W' (equal to W
 * when every singular value is scaled alike), LoRA at its start, the gradient
 * of REINFORCE's loss against finite differences, a policy step moving the
 * answer's probability the way the reward says, mixing, files and refusals. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "ttt/adapter.h"
#include "ttt/ttt.h"

static void fixture(char *out, size_t n, const char *name) {
    snprintf(out, n, "%s", __FILE__);
    char *cut = strstr(out, "/tests/test_adapter.c");
    if (cut) snprintf(cut, n - (size_t)(cut - out), "/tests/fixtures/gguf/%s", name);
    else snprintf(out, n, "tests/fixtures/gguf/%s", name);
}

static int load(ttt_ctx *ctx, const char *name, ttt_llama *m) {
    char path[4096], err[512];
    fixture(path, sizeof path, name);
    if (ttt_llama_load(ctx, path, m, err, sizeof err) != TTT_OK) {
        fprintf(stderr, "load %s: %s\n", name, err);
        return TTT_ERR;
    }
    return TTT_OK;
}

static double max_abs_diff_host(const float *a, const float *b, int64_t n) {
    double d = 0;
    for (int64_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

/* logits of a fixed sequence through model m, to the host (n floats) */
static float *logits_of(ttt_ctx *ctx, const ttt_llama *m, int64_t *n) {
    const int32_t ids[8] = {1, 5, 9, 17, 33, 40, 7, 2};
    ttt_tensor *lg = ttt_llama_forward(ctx, m, ttt_from_host(ctx, TTT_I32, TTT_DIMS(1, 8), ids), 0);
    if (!lg) return NULL;
    *n = ttt_numel(lg);
    float *h = malloc(sizeof(float) * (size_t)*n);
    if (h && ttt_copy_to_host(ctx, lg, h, TTT_F32) != TTT_OK) {
        free(h);
        return NULL;
    }
    return h;
}

static void test_svd(ttt_ctx *ctx, const ttt_llama *m, const char *dir) {
    ttt_adapted_set set;
    char err[512], cache[4096];
    CHECK_MSG(ttt_adapted_set_init(ctx, m, TTT_ADAPT_ATTN | TTT_ADAPT_MLP, &set, err, sizeof err) == TTT_OK, "%s", err);
    CHECK(set.n == 7 * m->cfg.depth);
    CHECK(!strcmp(set.names[4], "model.layers.0.mlp.gate_proj.weight"));
    snprintf(cache, sizeof cache, "%s/svd.safetensors", dir);
    CHECK_MSG(ttt_svd_compute(ctx, &set, cache, err, sizeof err) == TTT_OK, "%s", err);
    CHECK_MSG(strstr(set.cache_note, "computed") != NULL, "%s", set.cache_note);
    /* U diag(s) V^T = W; U^T U = I; s descending */
    double worst = 0, ortho = 0;
    int sorted = 1;
    for (int i = 0; i < set.n; i++) {
        ttt_step_reset(ctx);
        ttt_tensor *rec = ttt_matmul(ctx, ttt_mul(ctx, set.u[i], set.s[i]), set.vt[i], 0, 0);
        const double scale = ttt_item(ctx, ttt_max(ctx, ttt_abs(ctx, set.w[i]), 0, NULL, 0));
        worst = fmax(worst, ttt_item(ctx, ttt_max(ctx, ttt_abs(ctx, ttt_sub(ctx, rec, set.w[i])), 0, NULL, 0)) / scale);
        const int64_t r = set.s[i]->shape[0];
        float *eye = calloc((size_t)(r * r), sizeof *eye), *s = malloc(sizeof(float) * (size_t)r);
        for (int64_t k = 0; k < r; k++) eye[k * r + k] = 1;
        ttt_tensor *utu = ttt_matmul(ctx, set.u[i], set.u[i], 1, 0);
        ortho = fmax(ortho, ttt_item(ctx, ttt_max(ctx, ttt_abs(ctx, ttt_sub(ctx, utu, ttt_from_host(ctx, TTT_F32, TTT_DIMS(r, r), eye))), 0, NULL, 0)));
        ttt_copy_to_host(ctx, set.s[i], s, TTT_F32);
        for (int64_t k = 1; k < r; k++) sorted &= s[k] <= s[k - 1];
        free(eye), free(s);
    }
    CHECK_MSG(worst < 1e-5, "reconstruction %.3g", worst);
    CHECK_MSG(ortho < 1e-5, "orthogonality %.3g", ortho);
    CHECK(sorted);
    /* the cache: loaded the second time, with the same factors */
    ttt_adapted_set again;
    CHECK(ttt_adapted_set_init(ctx, m, TTT_ADAPT_ATTN | TTT_ADAPT_MLP, &again, err, sizeof err) == TTT_OK);
    CHECK_MSG(ttt_svd_compute(ctx, &again, cache, err, sizeof err) == TTT_OK, "%s", err);
    CHECK_MSG(!strcmp(again.cache_note, "loaded from the cache"), "%s", again.cache_note);
    CHECK(again.seconds == 0);
    ttt_step_reset(ctx);
    CHECK(ttt_item(ctx, ttt_max(ctx, ttt_abs(ctx, ttt_sub(ctx, again.vt[3], set.vt[3])), 0, NULL, 0)) == 0);
    ttt_adapted_set_free(ctx, &again);
    /* a damaged cache is recomputed and replaced */
    FILE *f = fopen(cache, "r+b");
    fseek(f, -16, SEEK_END);
    fputs("garbage garbage!", f);
    fclose(f);
    CHECK(ttt_adapted_set_init(ctx, m, TTT_ADAPT_ATTN | TTT_ADAPT_MLP, &again, err, sizeof err) == TTT_OK);
    CHECK_MSG(ttt_svd_compute(ctx, &again, cache, err, sizeof err) == TTT_OK, "%s", err);
    CHECK_MSG(strstr(again.cache_note, "recomputed") != NULL, "%s", again.cache_note);
    ttt_adapted_set_free(ctx, &again);
    CHECK(ttt_adapted_set_init(ctx, m, TTT_ADAPT_ATTN | TTT_ADAPT_MLP, &again, err, sizeof err) == TTT_OK);
    CHECK(ttt_svd_compute(ctx, &again, cache, err, sizeof err) == TTT_OK && !strcmp(again.cache_note, "loaded from the cache"));
    ttt_adapted_set_free(ctx, &again);
    ttt_adapted_set_free(ctx, &set);
    CHECK(ttt_adapted_set_init(ctx, m, 0, &set, err, sizeof err) != TTT_OK && strstr(err, "matrices 0"));
}

/* SVF with equal z everywhere scales every singular value alike, and the
 * normalisation undoes it: W' = W. LoRA starts at B = 0: W' = W. */
static void test_identity_views(ttt_ctx *ctx, const ttt_llama *m, const ttt_adapted_set *set) {
    char err[512];
    int64_t n0 = 0, n1 = 0, n2 = 0;
    ttt_step_reset(ctx);
    float *base = logits_of(ctx, m, &n0);
    ttt_adapter svf, flat, lora;
    CHECK(ttt_adapter_new(ctx, set, TTT_ADAPTER_SVF, 0, 0, 1, &svf, err, sizeof err) == TTT_OK);
    const ttt_adapter *one[1] = {&svf};
    const double three = 3.0;
    CHECK_MSG(ttt_adapter_mix(ctx, 1, one, &three, 0, &flat, err, sizeof err) == TTT_OK, "%s", err);
    for (int i = 0; i < flat.n; i++) ttt_fill(ctx, flat.z[i], -0.7);
    ttt_llama view;
    CHECK(ttt_adapter_view(ctx, m, set, &flat, &view) == TTT_OK);
    float *a = logits_of(ctx, &view, &n1);
    CHECK(base && a && n0 == n1);
    if (base && a) CHECK_MSG(max_abs_diff_host(base, a, n0) < 2e-4, "SVF with equal z: %.3g", max_abs_diff_host(base, a, n0));
    ttt_adapter_view_free(ctx, &view);
    CHECK(ttt_adapter_new(ctx, set, TTT_ADAPTER_LORA, 4, 8.0, 1, &lora, err, sizeof err) == TTT_OK);
    CHECK(ttt_adapter_param_count(&lora) > 0 && ttt_adapter_param_count(&svf) > 0);
    CHECK(ttt_adapter_view(ctx, m, set, &lora, &view) == TTT_OK);
    float *b = logits_of(ctx, &view, &n2);
    if (base && b) CHECK_MSG(max_abs_diff_host(base, b, n0) == 0, "LoRA at B = 0: %.3g", max_abs_diff_host(base, b, n0));
    ttt_adapter_view_free(ctx, &view);
    /* a real SVF expert changes the logits; the materialized view equals the graph view */
    for (int i = 0; i < svf.n; i++) ttt_assign(ctx, svf.z[i], ttt_randn(ctx, TTT_F32, 1, svf.z[i]->shape, 2.0));
    ttt_llama v1, v2;
    CHECK(ttt_adapter_view(ctx, m, set, &svf, &v1) == TTT_OK);
    float *c = logits_of(ctx, &v1, &n1);
    CHECK(ttt_adapter_view_materialize(ctx, m, set, &svf, &v2) == TTT_OK && v2.n_view_owned == set->n);
    ttt_step_reset(ctx);
    float *d = logits_of(ctx, &v2, &n2);
    if (base && c && d) {
        CHECK_MSG(max_abs_diff_host(base, c, n0) > 1e-3, "the expert changes the logits: %.3g", max_abs_diff_host(base, c, n0));
        CHECK_MSG(max_abs_diff_host(c, d, n0) < 1e-5, "materialized %.3g", max_abs_diff_host(c, d, n0));
    }
    ttt_adapter_view_free(ctx, &v1);
    ttt_adapter_view_free(ctx, &v2);
    free(base), free(a), free(b), free(c), free(d);
    ttt_adapter_free(ctx, &svf), ttt_adapter_free(ctx, &flat), ttt_adapter_free(ctx, &lora);
}

/* the batch of the policy-gradient checks: 2 sequences, answers after position 4 */
static const int32_t IDS[2 * 8] = {1, 5, 9, 17, 33, 40, 7, 2, 1, 6, 10, 20, 30, 12, 2, 2};
static const float MASK[2 * 8] = {0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0};

static double pg(ttt_ctx *ctx, const ttt_llama *base, const ttt_adapted_set *set, const ttt_adapter *ad,
                 const double *r, double kl, int backward, double *logp) {
    ttt_llama view;
    if (ttt_adapter_view(ctx, base, set, ad, &view) != TTT_OK) return NAN;
    ttt_tensor *loss = ttt_adapter_pg_loss(ctx, &view, base, IDS, MASK, 2, 8, r, kl, logp, NULL);
    const double v = loss ? ttt_item(ctx, loss) : NAN;
    if (loss && backward) ttt_backward(ctx, loss);
    ttt_adapter_view_free(ctx, &view);
    return v;
}

/* d loss / d z along a random direction against central differences (f32 model:
 * a loose tolerance), with and without the KL term; for LoRA too. */
static void test_pg_gradient(ttt_ctx *ctx, const ttt_llama *m, const ttt_adapted_set *set, ttt_adapter_kind kind) {
    char err[512];
    ttt_adapter ad;
    CHECK(ttt_adapter_new(ctx, set, kind, 2, 4.0, 3, &ad, err, sizeof err) == TTT_OK);
    ttt_tensor **p = NULL;
    int np = 0;
    ttt_adapter_params(&ad, &p, &np);
    if (kind == TTT_ADAPTER_LORA) /* B != 0, so that A has a gradient too */
        for (int i = 1; i < np; i += 2) ttt_assign(ctx, p[i], ttt_randn(ctx, TTT_F32, p[i]->ndim, p[i]->shape, 0.05));
    const double r[2] = {1.0, -0.5};
    for (int with_kl = 0; with_kl < 2; with_kl++) {
        ttt_step_reset(ctx);
        for (int i = 0; i < np; i++)
            if (p[i]->grad) ttt_fill(ctx, p[i]->grad, 0);
        pg(ctx, m, set, &ad, r, with_kl ? 0.3 : 0.0, 1, NULL);
        /* direction d: the gradient itself (largest signal); the directional derivative is |g|^2 */
        double gg = 0;
        ttt_tensor **d = calloc((size_t)np, sizeof *d);
        for (int i = 0; i < np; i++) {
            if (!p[i]->grad) continue;
            d[i] = ttt_persistent(ctx, TTT_F32, p[i]->ndim, p[i]->shape, "dir");
            ttt_assign(ctx, d[i], p[i]->grad);
            gg += ttt_item(ctx, ttt_sum(ctx, ttt_mul(ctx, p[i]->grad, p[i]->grad), 0, NULL, 0));
        }
        const double h = 1e-2 / sqrt(gg);
        double f[2];
        for (int sgn = 0; sgn < 2; sgn++) {
            ttt_step_reset(ctx);
            for (int i = 0; i < np; i++)
                if (d[i]) ttt_assign(ctx, p[i], ttt_add(ctx, p[i], ttt_scale(ctx, d[i], sgn ? -2 * h : h)));
            f[sgn] = pg(ctx, m, set, &ad, r, with_kl ? 0.3 : 0.0, 0, NULL);
        }
        ttt_step_reset(ctx);
        for (int i = 0; i < np; i++)
            if (d[i]) ttt_assign(ctx, p[i], ttt_add(ctx, p[i], ttt_scale(ctx, d[i], h))), ttt_persistent_free(ctx, d[i]);
        free(d);
        const double fd = (f[0] - f[1]) / (2 * h);
        CHECK_MSG(gg > 0 && fabs(fd - gg) <= 2e-2 * gg, "%s kl %d: finite difference %.6g, gradient %.6g",
                  kind == TTT_ADAPTER_SVF ? "SVF" : "LoRA", with_kl, fd, gg);
    }
    free(p);
    ttt_adapter_free(ctx, &ad);
}

/* A few Adam steps with reward +1 raise the answer's log-prob; with -1 they lower it. */
static void test_pg_direction(ttt_ctx *ctx, const ttt_llama *m, const ttt_adapted_set *set) {
    char err[512];
    for (int sign = -1; sign <= 1; sign += 2) {
        ttt_adapter ad;
        CHECK(ttt_adapter_new(ctx, set, TTT_ADAPTER_SVF, 0, 0, 5, &ad, err, sizeof err) == TTT_OK);
        ttt_tensor **p = NULL;
        int np = 0;
        ttt_adapter_params(&ad, &p, &np);
        ttt_optimizer *opt = ttt_adamw_new(ctx, np, p, NULL, &(ttt_optim_config){.lr = 2e-2});
        const double r[2] = {sign, sign};
        double before = 0, after = 0;
        for (int step = 0; step < 4; step++) {
            ttt_step_reset(ctx);
            for (int i = 0; i < np; i++)
                if (p[i]->grad) ttt_fill(ctx, p[i]->grad, 0);
            pg(ctx, m, set, &ad, r, 0.0, 1, step ? NULL : &before);
            ttt_optimizer_step(opt, -1);
        }
        ttt_step_reset(ctx);
        pg(ctx, m, set, &ad, r, 0.0, 0, &after);
        CHECK_MSG(sign > 0 ? after > before : after < before, "reward %+d: mean log p %.5f -> %.5f", sign, before, after);
        ttt_optimizer_free(opt);
        free(p);
        ttt_adapter_free(ctx, &ad);
    }
}

static void test_files(ttt_ctx *ctx, const ttt_llama *m, const ttt_adapted_set *set, const char *dir) {
    char err[512], path[4096], *meta = NULL, task[32];
    snprintf(path, sizeof path, "%s/expert.safetensors", dir);
    ttt_adapter a, b, lo, lo2;
    CHECK(ttt_adapter_new(ctx, set, TTT_ADAPTER_SVF, 0, 0, 11, &a, err, sizeof err) == TTT_OK);
    const char *extra[] = {"task", "arith", NULL};
    CHECK_MSG(ttt_adapter_save(ctx, path, &a, set, extra, err, sizeof err) == TTT_OK, "%s", err);
    CHECK_MSG(ttt_adapter_load(ctx, path, set, &b, &meta, err, sizeof err) == TTT_OK, "%s", err);
    CHECK(meta && ttt_metadata_get(meta, "task", task, sizeof task) == TTT_OK && !strcmp(task, "arith"));
    free(meta);
    ttt_step_reset(ctx);
    int same = b.n == a.n && b.kind == TTT_ADAPTER_SVF;
    for (int i = 0; same && i < a.n; i++)
        same = ttt_item(ctx, ttt_max(ctx, ttt_abs(ctx, ttt_sub(ctx, a.z[i], b.z[i])), 0, NULL, 0)) == 0;
    CHECK(same);
    /* mixing: 0.25 a + 0.75 b = a (they are equal) */
    const ttt_adapter *two[2] = {&a, &b};
    const double alpha[2] = {0.25, 0.75};
    ttt_adapter mix;
    CHECK(ttt_adapter_mix(ctx, 2, two, alpha, 0, &mix, err, sizeof err) == TTT_OK);
    CHECK(ttt_item(ctx, ttt_max(ctx, ttt_abs(ctx, ttt_sub(ctx, mix.z[2], a.z[2])), 0, NULL, 0)) < 1e-7);
    ttt_adapter_free(ctx, &mix);
    /* per-matrix coefficients: matrix 0 from a only, the rest 0 */
    double *pm = calloc((size_t)(2 * a.n), sizeof *pm);
    pm[0] = 1.0;
    CHECK(ttt_adapter_mix(ctx, 2, two, pm, 1, &mix, err, sizeof err) == TTT_OK);
    CHECK(ttt_item(ctx, ttt_max(ctx, ttt_abs(ctx, ttt_sub(ctx, mix.z[0], a.z[0])), 0, NULL, 0)) == 0);
    CHECK(ttt_item(ctx, ttt_max(ctx, ttt_abs(ctx, mix.z[1]), 0, NULL, 0)) == 0);
    free(pm);
    ttt_adapter_free(ctx, &mix);
    ttt_adapter_free(ctx, &b);
    /* LoRA round trip */
    CHECK(ttt_adapter_new(ctx, set, TTT_ADAPTER_LORA, 3, 6.0, 2, &lo, err, sizeof err) == TTT_OK);
    CHECK(ttt_adapter_save(ctx, path, &lo, set, NULL, err, sizeof err) == TTT_OK);
    CHECK_MSG(ttt_adapter_load(ctx, path, set, &lo2, NULL, err, sizeof err) == TTT_OK && lo2.kind == TTT_ADAPTER_LORA &&
                  lo2.rank == 3 && lo2.alpha == 6.0,
              "%s", err);
    CHECK(ttt_item(ctx, ttt_max(ctx, ttt_abs(ctx, ttt_sub(ctx, lo.a[1], lo2.a[1])), 0, NULL, 0)) == 0);
    CHECK(ttt_adapter_param_count(&lo) == ttt_adapter_param_count(&lo2));
    ttt_adapter_free(ctx, &lo2);
    ttt_adapter_free(ctx, &lo);
    /* refusals: another matrix set, another model, a damaged file, a missing file, a non-adapter file */
    CHECK(ttt_adapter_save(ctx, path, &a, set, NULL, err, sizeof err) == TTT_OK);
    ttt_adapted_set mlp;
    CHECK(ttt_adapted_set_init(ctx, m, TTT_ADAPT_MLP, &mlp, err, sizeof err) == TTT_OK);
    CHECK(ttt_adapter_load(ctx, path, &mlp, &b, NULL, err, sizeof err) != TTT_OK && strstr(err, "adapts the 'all'"));
    ttt_adapted_set_free(ctx, &mlp);
    ttt_llama other = {0};
    ttt_adapted_set oset;
    if (load(ctx, "tiny_untied.gguf", &other) == TTT_OK) {
        CHECK(ttt_adapted_set_init(ctx, &other, TTT_ADAPT_ATTN | TTT_ADAPT_MLP, &oset, err, sizeof err) == TTT_OK);
        CHECK_MSG(ttt_adapter_load(ctx, path, &oset, &b, NULL, err, sizeof err) != TTT_OK && strstr(err, "another model"), "%s", err);
        /* a view with one model's set over another model */
        ttt_llama v;
        CHECK(ttt_adapter_view(ctx, &other, set, &a, &v) != TTT_OK && strstr(ttt_error(ctx), "another model"));
        ttt_adapted_set_free(ctx, &oset);
        ttt_llama_free(ctx, &other);
    }
    FILE *f = fopen(path, "r+b");
    fseek(f, -8, SEEK_END);
    fputs("XXXXXXXX", f);
    fclose(f);
    CHECK_MSG(ttt_adapter_load(ctx, path, set, &b, NULL, err, sizeof err) != TTT_OK, "a damaged expert loads");
    snprintf(path, sizeof path, "%s/missing.safetensors", dir);
    CHECK(ttt_adapter_load(ctx, path, set, &b, NULL, err, sizeof err) != TTT_OK && strstr(err, "missing.safetensors"));
    snprintf(path, sizeof path, "%s/svd.safetensors", dir);
    CHECK(ttt_adapter_load(ctx, path, set, &b, NULL, err, sizeof err) != TTT_OK && strstr(err, "not an adapter"));
    /* bad arguments */
    CHECK(ttt_adapter_new(ctx, set, TTT_ADAPTER_LORA, 0, 1.0, 1, &b, err, sizeof err) != TTT_OK && strstr(err, "rank 0"));
    double r1 = NAN;
    ttt_llama v;
    ttt_adapter_view(ctx, m, set, &a, &v);
    CHECK(ttt_adapter_pg_loss(ctx, &v, m, IDS, MASK, 2, 8, (double[]){r1, 1}, 0, NULL, NULL) == NULL &&
          strstr(ttt_error(ctx), "reward 0"));
    const int32_t bad[2 * 8] = {1, 5, 9, 17, 33, 40, 7, 99999};
    CHECK(ttt_adapter_pg_loss(ctx, &v, m, bad, MASK, 1, 8, (double[]){1}, 0, NULL, NULL) == NULL &&
          strstr(ttt_error(ctx), "outside the vocabulary"));
    ttt_adapter_view_free(ctx, &v);
    ttt_adapter_free(ctx, &a);
}

/* On a machine with a GPU: the SVD through cuSOLVER gives the CPU's singular values
 * and reconstructs W; SVF views give the CPU's logits. */
static void test_cuda(void) {
    if (ttt_device_count(TTT_CUDA) < 1) {
        printf("no CUDA device: the cuSOLVER checks did not run\n");
        return;
    }
    ttt_ctx *cpu = ttt_ctx_new(&(ttt_ctx_config){.device = TTT_CPU, .seed = 7});
    ttt_ctx *gpu = ttt_ctx_new(&(ttt_ctx_config){.device = TTT_CUDA, .seed = 7});
    ttt_llama mc = {0}, mg = {0};
    char err[512];
    if (!cpu || !gpu || load(cpu, "tiny_tied.gguf", &mc) || load(gpu, "tiny_tied.gguf", &mg)) {
        CHECK_MSG(0, "cuda contexts or models: %s", ttt_runtime_error());
        return;
    }
    ttt_adapted_set sc, sg;
    CHECK(ttt_adapted_set_init(cpu, &mc, TTT_ADAPT_ATTN | TTT_ADAPT_MLP, &sc, err, sizeof err) == TTT_OK);
    CHECK(ttt_adapted_set_init(gpu, &mg, TTT_ADAPT_ATTN | TTT_ADAPT_MLP, &sg, err, sizeof err) == TTT_OK);
    CHECK(sc.fingerprint == sg.fingerprint);
    CHECK_MSG(ttt_svd_compute(cpu, &sc, NULL, err, sizeof err) == TTT_OK, "%s", err);
    CHECK_MSG(ttt_svd_compute(gpu, &sg, NULL, err, sizeof err) == TTT_OK, "%s", err);
    double ds = 0, rec = 0;
    for (int i = 0; i < sc.n && sg.u; i++) {
        const int64_t r = sc.s[i]->shape[0];
        float *a = malloc(sizeof(float) * (size_t)r), *b = malloc(sizeof(float) * (size_t)r);
        ttt_copy_to_host(cpu, sc.s[i], a, TTT_F32);
        ttt_copy_to_host(gpu, sg.s[i], b, TTT_F32);
        ds = fmax(ds, max_abs_diff_host(a, b, r) / fmax(1e-30, a[0]));
        free(a), free(b);
        ttt_step_reset(gpu);
        ttt_tensor *w = ttt_matmul(gpu, ttt_mul(gpu, sg.u[i], sg.s[i]), sg.vt[i], 0, 0);
        rec = fmax(rec, ttt_item(gpu, ttt_max(gpu, ttt_abs(gpu, ttt_sub(gpu, w, sg.w[i])), 0, NULL, 0)) /
                            ttt_item(gpu, ttt_max(gpu, ttt_abs(gpu, sg.w[i]), 0, NULL, 0)));
    }
    CHECK_MSG(ds < 1e-6, "singular values, CPU vs cuSOLVER: %.3g", ds);
    CHECK_MSG(rec < 1e-5, "cuSOLVER reconstruction: %.3g", rec);
    printf("cuSOLVER: singular values within %.3g of LAPACK's, reconstruction %.3g\n", ds, rec);
    /* the same expert on both devices: a file written on the GPU, read on the CPU */
    ttt_adapter ag, ac;
    char path[] = "/tmp/ttt_adapter_cuda_XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) close(fd);
    CHECK(ttt_adapter_new(gpu, &sg, TTT_ADAPTER_SVF, 0, 0, 9, &ag, err, sizeof err) == TTT_OK);
    for (int i = 0; i < ag.n; i++) ttt_assign(gpu, ag.z[i], ttt_randn(gpu, TTT_F32, 1, ag.z[i]->shape, 2.0));
    CHECK(ttt_adapter_save(gpu, path, &ag, &sg, NULL, err, sizeof err) == TTT_OK);
    CHECK_MSG(ttt_adapter_load(cpu, path, &sc, &ac, NULL, err, sizeof err) == TTT_OK, "%s", err);
    ttt_llama vc, vg;
    int64_t n1 = 0, n2 = 0;
    CHECK(ttt_adapter_view(cpu, &mc, &sc, &ac, &vc) == TTT_OK && ttt_adapter_view(gpu, &mg, &sg, &ag, &vg) == TTT_OK);
    float *lc = logits_of(cpu, &vc, &n1), *lg = logits_of(gpu, &vg, &n2);
    if (lc && lg && n1 == n2) CHECK_MSG(max_abs_diff_host(lc, lg, n1) < 2e-3, "SVF logits, CPU vs CUDA: %.3g", max_abs_diff_host(lc, lg, n1));
    else CHECK_MSG(0, "SVF logits on CUDA: %s", ttt_error(gpu));
    free(lc), free(lg);
    ttt_adapter_view_free(cpu, &vc), ttt_adapter_view_free(gpu, &vg);
    ttt_adapter_free(cpu, &ac), ttt_adapter_free(gpu, &ag);
    unlink(path);
    ttt_adapted_set_free(cpu, &sc), ttt_adapted_set_free(gpu, &sg);
    ttt_llama_free(cpu, &mc), ttt_llama_free(gpu, &mg);
    ttt_ctx_free(cpu), ttt_ctx_free(gpu);
}

int main(void) {
    ttt_ctx *ctx = ttt_ctx_new(&(ttt_ctx_config){.device = TTT_CPU, .seed = 7});
    ttt_llama m = {0};
    if (!ctx || load(ctx, "tiny_tied.gguf", &m) != TTT_OK) {
        printf("cannot load the fixture\n");
        return 1;
    }
    char dir[] = "/tmp/ttt_adapter_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    test_svd(ctx, &m, dir);
    char err[512];
    ttt_adapted_set set;
    CHECK(ttt_adapted_set_init(ctx, &m, TTT_ADAPT_ATTN | TTT_ADAPT_MLP, &set, err, sizeof err) == TTT_OK);
    CHECK(ttt_svd_compute(ctx, &set, NULL, err, sizeof err) == TTT_OK);
    test_identity_views(ctx, &m, &set);
    test_pg_gradient(ctx, &m, &set, TTT_ADAPTER_SVF);
    test_pg_gradient(ctx, &m, &set, TTT_ADAPTER_LORA);
    test_pg_direction(ctx, &m, &set);
    test_files(ctx, &m, &set, dir);
    test_cuda();
    ttt_adapted_set_free(ctx, &set);
    ttt_llama_free(ctx, &m);
    ttt_ctx_free(ctx);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    TEST_MAIN_END();
}
