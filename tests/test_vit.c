/* The ViT classifier (include/ttt/vit.h), tiny and in float64:
 *   - parameter names, weight-decay flags, inner-loss bookkeeping;
 *   - the classifier loss gradient (MTTT-MLP, T = 2, batch GD and SGD) against
 *     central differences for entries of several parameters; checkpointed
 *     inner steps give the same gradient;
 *   - 30 AdamW steps on a synthetic 2-class problem drive the loss down;
 *   - a safetensors round trip restores the outputs exactly;
 *   - bad configs and inputs give errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "ttt/checkpoint.h"
#include "ttt/ttt.h"
#include "ttt/vit.h"

enum { B = 3, N = 4, F = 4, D = 8, DEPTH = 2, HEADS = 2, CLASSES = 3 };

static ttt_vit_config tiny_config(int T, int sgd) {
    ttt_vit_config c = ttt_vit_config_default(F, N, D, DEPTH, HEADS, TTT_SEQ_MTTT, TTT_MTTT_MLP);
    c.classes = CLASSES;
    c.seq.steps = T;
    c.seq.sgd = sgd;
    c.seq.eta = 0.5;
    return c;
}

static double *host_copy(ttt_ctx *ctx, const ttt_tensor *t) {
    double *h = malloc(sizeof(double) * (size_t)ttt_numel(t));
    ttt_copy_to_host(ctx, t, h, TTT_F64);
    return h;
}

/* Mean cross-entropy of the model on (xs, ys); grad mode as the caller set it. */
static ttt_tensor *loss_of(ttt_ctx *ctx, const ttt_vit *m, const double *xs, const int32_t *ys, int64_t batch,
                           const ttt_vit_run_opts *o) {
    ttt_tensor *x = ttt_from_host(ctx, TTT_F64, TTT_DIMS(batch, m->cfg.n_tokens, m->cfg.token_dim), xs);
    ttt_tensor *y = ttt_from_host(ctx, TTT_I32, TTT_DIMS(batch), ys);
    return ttt_cross_entropy(ctx, ttt_vit_forward(ctx, m, x, o), y, -100);
}

/* ---- names, flags, bookkeeping ------------------------------------------------------------ */

static void test_params(void) {
    ttt_ctx *ctx = ttt_ctx_new(&(ttt_ctx_config){.seed = 3});
    ttt_vit m;
    ttt_vit_config c = tiny_config(2, 0);
    CHECK(ttt_vit_init(ctx, &m, &c, TTT_F64) == TTT_OK);
    /* 3 + per block (4 norms + 13 seq + 4 mlp) + 4 */
    CHECK_MSG(m.n_params == 3 + DEPTH * 21 + 4, "%d parameters", m.n_params);
    for (int i = 0; i < m.n_params; i++)
        for (int j = i + 1; j < m.n_params; j++) CHECK_MSG(strcmp(m.names[i], m.names[j]), "%s twice", m.names[i]);
    const struct {
        const char *name;
        int decay;
    } want[] = {{"embed.w", 1},          {"embed.b", 0},           {"pos", 0},
                {"blocks.1.seq.phi_w", 1}, {"blocks.1.seq.phi_b", 0}, {"blocks.0.seq.w1", 1},
                {"blocks.0.seq.ln_g", 0},  {"blocks.1.norm2.g", 0},   {"blocks.0.mlp.fc1.w", 1},
                {"blocks.0.mlp.fc2.b", 0}, {"norm.b", 0},             {"head.w", 1}};
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        int found = -1;
        for (int i = 0; i < m.n_params; i++)
            if (!strcmp(m.names[i], want[k].name)) found = i;
        CHECK_MSG(found >= 0, "no parameter %s", want[k].name);
        if (found >= 0) CHECK_MSG(m.decay[found] == want[k].decay, "%s decay %d", want[k].name, m.decay[found]);
    }
    CHECK(ttt_vit_param(&m, "blocks.1.seq.phi_w") == m.blocks[1].seq.phi_w);
    CHECK(ttt_vit_param(&m, "nope") == NULL);

    /* inner losses: depth * (T + 1) finite values, block-major */
    double xs[B * N * F];
    int32_t ys[B] = {0, 1, 2};
    for (int i = 0; i < B * N * F; i++) xs[i] = sin(1.7 * i);
    double inner[DEPTH * 3];
    for (int i = 0; i < DEPTH * 3; i++) inner[i] = NAN;
    ttt_no_grad_begin(ctx);
    ttt_tensor *loss = loss_of(ctx, &m, xs, ys, B, &(ttt_vit_run_opts){.inner_loss = inner});
    ttt_no_grad_end(ctx);
    CHECK(loss && isfinite(ttt_item(ctx, loss)));
    for (int i = 0; i < DEPTH * 3; i++) CHECK_MSG(isfinite(inner[i]) && inner[i] > 0, "inner[%d] = %g", i, inner[i]);
    ttt_step_reset(ctx);
    ttt_vit_free(ctx, &m);
    CHECK(m.n_params == 0 && m.params == NULL);
    ttt_vit_free(ctx, &m); /* twice is harmless */

    /* an attention ViT with fixed positions: no inner losses, no "pos" parameter */
    c = ttt_vit_config_default(F, N, D, DEPTH, HEADS, TTT_SEQ_ATTENTION, TTT_MTTT_LINEAR);
    c.pos = TTT_VIT_POS_SINCOS;
    c.classes = CLASSES;
    CHECK(ttt_vit_init(ctx, &m, &c, TTT_F64) == TTT_OK);
    CHECK(ttt_vit_param(&m, "pos") == NULL && m.pos != NULL);
    CHECK(!ttt_vit_has_inner_loop(&m.cfg));
    double pos[N * D];
    ttt_copy_to_host(ctx, m.pos, pos, TTT_F64);
    /* token (0, 1): sin(1) first, cos(0) = 1 for the row half */
    CHECK_NEAR(pos[1 * D + 0], sin(1.0), 1e-12);
    CHECK_NEAR(pos[1 * D + 3 * (D / 4)], 1.0, 1e-12);
    CHECK_NEAR(pos[2 * D + 2 * (D / 4)], sin(1.0), 1e-12); /* token (1, 0) */
    for (int i = 0; i < DEPTH * 3; i++) inner[i] = NAN;
    loss = loss_of(ctx, &m, xs, ys, B, &(ttt_vit_run_opts){.inner_loss = inner});
    CHECK(loss && isfinite(ttt_item(ctx, loss)));
    CHECK(isnan(inner[0]));
    ttt_step_reset(ctx);
    ttt_vit_free(ctx, &m);
    ttt_ctx_free(ctx);
}

/* ---- gradient against central differences --------------------------------------------------- */

static double scaled_err(double analytic, double numeric) {
    return fabs(analytic - numeric) / (1e-6 + 1e-5 * fabs(numeric)); /* src/check/gradcheck.c */
}

static void test_gradient(int sgd) {
    ttt_ctx *ctx = ttt_ctx_new(&(ttt_ctx_config){.seed = 11});
    ttt_vit m;
    ttt_vit_config c = tiny_config(2, sgd);
    CHECK(ttt_vit_init(ctx, &m, &c, TTT_F64) == TTT_OK);
    /* Larger head and embedding than the 0.02 init, so every parameter gets a
     * gradient well above the finite-difference noise. */
    ttt_assign(ctx, m.head_w, ttt_randn(ctx, TTT_F64, TTT_DIMS(D, CLASSES), 1.0));
    ttt_assign(ctx, m.embed_w, ttt_randn(ctx, TTT_F64, TTT_DIMS(F, D), 0.5));
    ttt_step_reset(ctx);
    double xs[B * N * F];
    int32_t ys[B] = {2, 0, 1};
    for (int i = 0; i < B * N * F; i++) xs[i] = cos(0.9 * i + 0.3);
    const ttt_vit_run_opts o = {.seed = 77};

    CHECK(ttt_zero_grad(ctx, m.n_params, m.params) == TTT_OK);
    ttt_tensor *loss = loss_of(ctx, &m, xs, ys, B, &o);
    CHECK(loss && ttt_backward(ctx, loss) == TTT_OK);
    ttt_step_reset(ctx);

    /* the same gradient with every inner step rematerialized */
    double *g_plain[8] = {0};
    const char *names[] = {"embed.w", "pos", "blocks.0.seq.phi_w", "blocks.1.seq.w1", "blocks.0.seq.ln_g",
                           "blocks.1.mlp.fc1.w", "blocks.0.norm1.g", "head.w"};
    const int n_names = (int)(sizeof names / sizeof names[0]);
    for (int k = 0; k < n_names; k++) g_plain[k] = host_copy(ctx, ttt_vit_param(&m, names[k])->grad);
    CHECK(ttt_zero_grad(ctx, m.n_params, m.params) == TTT_OK);
    loss = loss_of(ctx, &m, xs, ys, B, &(ttt_vit_run_opts){.seed = 77, .checkpoint = 1});
    CHECK(loss && ttt_backward(ctx, loss) == TTT_OK);
    ttt_step_reset(ctx);
    double worst_remat = 0;
    for (int k = 0; k < n_names; k++) {
        ttt_tensor *p = ttt_vit_param(&m, names[k]);
        double *g = host_copy(ctx, p->grad);
        for (int64_t j = 0; j < ttt_numel(p); j++) worst_remat = fmax(worst_remat, fabs(g[j] - g_plain[k][j]));
        free(g);
    }
    CHECK_MSG(worst_remat < 1e-12, "checkpointed gradient differs by %g", worst_remat);

    const double eps = 1e-6;
    double worst = 0, largest = 0;
    for (int k = 0; k < n_names; k++) {
        ttt_tensor *p = ttt_vit_param(&m, names[k]);
        CHECK_MSG(p != NULL, "no parameter %s", names[k]);
        if (!p) continue;
        double *v = host_copy(ctx, p);
        const int64_t numel = ttt_numel(p);
        for (int e = 0; e < 3; e++) {
            const int64_t j = (int64_t)(e * 7 + k) % numel;
            double f[2];
            for (int s = 0; s < 2; s++) {
                const double v0 = v[j];
                v[j] = v0 + (s ? -eps : eps);
                ttt_assign(ctx, p, ttt_from_host(ctx, TTT_F64, p->ndim, p->shape, v));
                v[j] = v0;
                ttt_no_grad_begin(ctx); /* the inner loop still runs */
                f[s] = ttt_item(ctx, loss_of(ctx, &m, xs, ys, B, &o));
                ttt_no_grad_end(ctx);
                ttt_step_reset(ctx);
            }
            ttt_assign(ctx, p, ttt_from_host(ctx, TTT_F64, p->ndim, p->shape, v));
            ttt_step_reset(ctx);
            const double num = (f[0] - f[1]) / (2 * eps), err = scaled_err(g_plain[k][j], num);
            CHECK_MSG(err < 1, "%s[%lld]: analytic %.10g, numeric %.10g (scaled error %.3g)", names[k],
                      (long long)j, g_plain[k][j], num, err);
            worst = fmax(worst, err);
            largest = fmax(largest, fabs(num));
        }
        free(v);
        free(g_plain[k]);
    }
    CHECK_MSG(largest > 1e-3, "the checked gradients are all tiny (%g): the check says nothing", largest);
    printf("gradient vs central differences (MTTT-MLP, T=2, %s): worst scaled error %.3g, largest entry %.3g, "
           "remat difference %.2g\n",
           sgd ? "SGD" : "batch GD", worst, largest, worst_remat);
    ttt_vit_free(ctx, &m);
    ttt_ctx_free(ctx);
}

/* ---- training ------------------------------------------------------------------------------------ */

/* Two classes: the tokens carry +pattern or -pattern, plus noise. */
static void synthetic(int64_t batch, double *xs, int32_t *ys) {
    uint64_t s = 12345;
    for (int64_t b = 0; b < batch; b++) {
        ys[b] = (int32_t)(b % 2);
        for (int64_t i = 0; i < N * F; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            const double noise = ((double)(s >> 11) * 0x1.0p-53 - 0.5);
            xs[b * N * F + i] = (ys[b] ? 1.0 : -1.0) * sin(0.7 * (double)i + 0.2) + noise;
        }
    }
}

static void test_training(void) {
    ttt_ctx *ctx = ttt_ctx_new(&(ttt_ctx_config){.seed = 5});
    ttt_vit m;
    ttt_vit_config c = tiny_config(1, 0);
    c.classes = 2;
    CHECK(ttt_vit_init(ctx, &m, &c, TTT_F64) == TTT_OK);
    ttt_optim_config oc = {.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.999, .weight_decay = 1e-4};
    ttt_optimizer *opt = ttt_adamw_new(ctx, m.n_params, m.params, m.decay, &oc);
    CHECK(opt != NULL);
    enum { BATCH = 16 };
    double xs[BATCH * N * F];
    int32_t ys[BATCH];
    synthetic(BATCH, xs, ys);
    double first = NAN, last = NAN;
    for (int step = 0; step < 30 && opt; step++) {
        ttt_step_reset(ctx);
        ttt_tensor *loss = loss_of(ctx, &m, xs, ys, BATCH, &(ttt_vit_run_opts){.seed = (uint64_t)step});
        int rc = loss ? TTT_OK : TTT_ERR;
        if (rc == TTT_OK) rc = ttt_zero_grad(ctx, m.n_params, m.params);
        if (rc == TTT_OK) rc = ttt_backward(ctx, loss);
        if (rc == TTT_OK) rc = ttt_clip_grad_norm(ctx, m.n_params, m.params, 1.0, NULL);
        if (rc == TTT_OK) rc = ttt_optimizer_step(opt, -1);
        CHECK_MSG(rc == TTT_OK, "step %d: %s", step, ttt_error(ctx));
        if (rc != TTT_OK) break;
        last = ttt_item(ctx, loss);
        if (step == 0) first = last;
    }
    printf("training 30 steps: loss %.4f -> %.4f\n", first, last);
    CHECK_MSG(last < 0.3 * first, "loss %g -> %g", first, last);
    ttt_optimizer_free(opt);
    ttt_vit_free(ctx, &m);
    ttt_ctx_free(ctx);
}

/* ---- checkpoint round trip --------------------------------------------------------------------- */

static void test_checkpoint(void) {
    ttt_ctx *ctx = ttt_ctx_new(&(ttt_ctx_config){.seed = 9});
    ttt_vit m;
    ttt_vit_config c = tiny_config(2, 1);
    CHECK(ttt_vit_init(ctx, &m, &c, TTT_F64) == TTT_OK);
    double xs[B * N * F], before[B * CLASSES], after[B * CLASSES];
    for (int i = 0; i < B * N * F; i++) xs[i] = sin(0.3 * i);
    const ttt_vit_run_opts o = {.seed = 4};
    ttt_tensor *x = ttt_from_host(ctx, TTT_F64, TTT_DIMS(B, N, F), xs);
    CHECK(ttt_copy_to_host(ctx, ttt_vit_forward(ctx, &m, x, &o), before, TTT_F64) == TTT_OK);
    ttt_step_reset(ctx);

    ttt_named_tensor *nt = calloc((size_t)m.n_params, sizeof *nt);
    for (int i = 0; i < m.n_params; i++) nt[i] = (ttt_named_tensor){m.names[i], m.params[i]};
    char path[] = "/tmp/test_vit_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd >= 0) close(fd);
    const char *meta[] = {"config", "tiny", NULL};
    int saved = ttt_save_safetensors(ctx, path, m.n_params, nt, meta);
    CHECK_MSG(saved == TTT_OK, "%s", ttt_error(ctx));
    for (int i = 0; i < m.n_params; i++) ttt_fill(ctx, m.params[i], 0.25);
    char *json = NULL;
    int loaded = ttt_load_safetensors(ctx, path, m.n_params, nt, &json);
    if (loaded != TTT_OK && strstr(ttt_error(ctx), "json-c")) {
        printf("checkpoint round trip: SKIPPED (%s)\n", ttt_error(ctx));
    } else {
        CHECK_MSG(loaded == TTT_OK, "%s", ttt_error(ctx));
        char buf[16] = "";
        CHECK(json && ttt_metadata_get(json, "config", buf, sizeof buf) == TTT_OK && !strcmp(buf, "tiny"));
        x = ttt_from_host(ctx, TTT_F64, TTT_DIMS(B, N, F), xs);
        CHECK(ttt_copy_to_host(ctx, ttt_vit_forward(ctx, &m, x, &o), after, TTT_F64) == TTT_OK);
        const int same = !memcmp(before, after, sizeof before);
        CHECK_MSG(same, "outputs differ after the round trip");
        if (same) printf("checkpoint round trip: %d tensors, outputs identical\n", m.n_params);
    }
    free(json);
    remove(path);
    free(nt);
    ttt_step_reset(ctx);
    ttt_vit_free(ctx, &m);
    ttt_ctx_free(ctx);
}

/* ---- validation -------------------------------------------------------------------------------- */

static void expect_init_error(ttt_ctx *ctx, ttt_vit_config c, ttt_dtype dt, const char *needle) {
    ttt_vit m;
    ttt_clear_error(ctx);
    int rc = ttt_vit_init(ctx, &m, &c, dt);
    CHECK_MSG(rc == TTT_ERR && strstr(ttt_error(ctx), needle), "expected '%s', got rc %d '%s'", needle, rc,
              ttt_error(ctx));
    CHECK(m.n_params == 0 && m.params == NULL && m.blocks == NULL);
    if (rc == TTT_OK) ttt_vit_free(ctx, &m);
}

static void test_errors(void) {
    ttt_ctx *ctx = ttt_ctx_new(NULL);
    ttt_vit_config c = tiny_config(1, 0);
    ttt_vit_config bad;
    bad = c, bad.heads = 3;
    expect_init_error(ctx, bad, TTT_F32, "not divisible by heads");
    bad = c, bad.depth = 0;
    expect_init_error(ctx, bad, TTT_F32, "depth = 0");
    bad = c, bad.classes = 1;
    expect_init_error(ctx, bad, TTT_F32, "classes = 1");
    bad = c, bad.token_dim = 0;
    expect_init_error(ctx, bad, TTT_F32, "token_dim");
    bad = c, bad.mlp_ratio = 0;
    expect_init_error(ctx, bad, TTT_F32, "mlp_ratio");
    bad = c, bad.seq.dim = 16;
    expect_init_error(ctx, bad, TTT_F32, "seq.dim");
    bad = c, bad.seq.heads = 4;
    expect_init_error(ctx, bad, TTT_F32, "seq.heads");
    bad = c, bad.pos = TTT_VIT_POS_SINCOS, bad.n_tokens = 5;
    expect_init_error(ctx, bad, TTT_F32, "square grid");
    bad = c, bad.pos = (ttt_vit_pos)7;
    expect_init_error(ctx, bad, TTT_F32, "position kind");
    bad = c, bad.seq.steps = 9;
    expect_init_error(ctx, bad, TTT_F32, "inner steps");
    bad = c, bad.seq.learner = (ttt_mttt_learner)9;
    expect_init_error(ctx, bad, TTT_F32, "learner");
    expect_init_error(ctx, c, TTT_I32, "f32 or f64");
    ttt_clear_error(ctx);
    CHECK(ttt_vit_init(ctx, NULL, &c, TTT_F32) == TTT_ERR && strstr(ttt_error(ctx), "NULL"));

    ttt_vit m;
    CHECK(ttt_vit_init(ctx, &m, &c, TTT_F32) == TTT_OK);
    ttt_clear_error(ctx);
    CHECK(ttt_vit_forward(ctx, &m, ttt_zeros(ctx, TTT_F32, TTT_DIMS(2, N + 1, F)), NULL) == NULL);
    CHECK(strstr(ttt_error(ctx), "must be [B, 4, 4]"));
    ttt_clear_error(ctx);
    CHECK(ttt_vit_forward(ctx, &m, ttt_zeros(ctx, TTT_F32, TTT_DIMS(N, F)), NULL) == NULL);
    CHECK(strstr(ttt_error(ctx), "must be [B, 4, 4]"));
    ttt_clear_error(ctx);
    CHECK(ttt_vit_forward(ctx, &m, ttt_zeros(ctx, TTT_F64, TTT_DIMS(2, N, F)), NULL) == NULL);
    CHECK(strstr(ttt_error(ctx), "f64 but the parameters are f32"));
    ttt_clear_error(ctx);
    CHECK(ttt_vit_forward(ctx, NULL, ttt_zeros(ctx, TTT_F32, TTT_DIMS(2, N, F)), NULL) == NULL);
    CHECK(strstr(ttt_error(ctx), "NULL"));
    CHECK(ttt_vit_forward(ctx, &m, NULL, NULL) == NULL); /* NULL input passes on quietly */
    /* SGD needs n >= T: the layer's own check surfaces */
    m.blocks[0].seq.cfg.sgd = 1, m.blocks[0].seq.cfg.steps = N + 1;
    ttt_clear_error(ctx);
    CHECK(ttt_vit_forward(ctx, &m, ttt_zeros(ctx, TTT_F32, TTT_DIMS(2, N, F)), NULL) == NULL);
    CHECK(strstr(ttt_error(ctx), "needs n >= T"));
    ttt_step_reset(ctx);
    ttt_vit_free(ctx, &m);
    ttt_ctx_free(ctx);
}

int main(void) {
    test_params();
    test_gradient(0);
    test_gradient(1);
    test_training();
    test_checkpoint();
    test_errors();
    TEST_MAIN_END();
}
