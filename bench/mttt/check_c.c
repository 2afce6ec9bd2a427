/* Compare ttt's C implementation with the JAX fixtures of bench/mttt/make_fixture.py (float64, CPU).
 *
 *   check_c tests/fixtures/mttt_jax_fixture.safetensors [VIT_FIXTURE]
 *
 * Layer fixture (cases mlp, linear, mlp_sgd): loads the parameters and x by name into a
 * ttt_mttt_init'ed layer, runs ttt_mttt_forward (with the SGD seed of the case), backpropagates
 * sum(out * R), and reports the largest relative error (max |a - b| / max(1, max |b|)) of out,
 * every gradient, the inner losses and the SGD order. ViT fixture (make_fixture.py --vit-out; cases
 * vit_gd, vit_sgd): logits, cross-entropy gradients, and the parameters after clip + 2 AdamW steps.
 * Exit status 1 when an error exceeds 1e-10.
 *
 * Build (after a CMake build of libttt.a; add the CUDA libraries if the library was built with CUDA):
 *   cc -O1 -std=c11 -Iinclude bench/mttt/check_c.c build/release/libttt.a -fopenmp -lopenblas -ljson-c \
 *      -lz -lm [-L/usr/local/cuda/lib64 -lcudart -lcublas -lcublasLt -lstdc++] -o /tmp/check_c */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ttt/checkpoint.h"
#include "ttt/mttt.h"
#include "ttt/optim.h"
#include "ttt/ttt.h"
#include "ttt/vit.h"

static const char *fixture;
static double worst_all;
static const double TOL = 1e-10;

static double rel(const double *a, const double *b, int64_t n) {
    double w = 0, s = 1;
    for (int64_t i = 0; i < n; i++) s = fmax(s, fabs(b[i]));
    for (int64_t i = 0; i < n; i++) w = fmax(w, fabs(a[i] - b[i]));
    return w / s;
}

static void die(ttt_ctx *ctx, const char *what) {
    fprintf(stderr, "check_c: %s: %s\n", what, ttt_error(ctx));
    exit(2);
}

static void load_into(ttt_ctx *ctx, const char *name, ttt_tensor *t) {
    ttt_named_tensor nt = {name, t};
    if (ttt_load_safetensors(ctx, fixture, 1, &nt, NULL) != TTT_OK) die(ctx, name);
}

static ttt_tensor *load_new(ttt_ctx *ctx, ttt_dtype dt, const char *name, int nd, const int64_t *shape) {
    ttt_tensor *t = ttt_persistent(ctx, dt, nd, shape, name);
    if (!t) die(ctx, name);
    load_into(ctx, name, t);
    return t;
}

/* relative error of t against the fixture tensor `name` (same shape) */
static double compare(ttt_ctx *ctx, const ttt_tensor *t, const char *name) {
    int64_t n = ttt_numel(t);
    double *a = malloc(sizeof(double) * (size_t)n), *b = malloc(sizeof(double) * (size_t)n);
    ttt_tensor *r = load_new(ctx, TTT_F64, name, t->ndim, t->shape);
    ttt_copy_to_host(ctx, t, a, TTT_F64);
    ttt_copy_to_host(ctx, r, b, TTT_F64);
    double e = rel(a, b, n);
    ttt_persistent_free(ctx, r);
    free(a), free(b);
    if (e > worst_all) worst_all = e;
    if (e > TOL) printf("    %s: rel error %.3g\n", name, e);
    return e;
}

static void layer_case(ttt_ctx *ctx, const char *pre, ttt_mttt_learner learner, int T, double eta, int sgd,
                       uint64_t seed) {
    const int64_t B = 2, n = 5, D = 8, H = 2;
    static const char *names[TTT_MTTT_MAX_PARAMS] = {"psi_w", "psi_b", "phi_w", "phi_b", "g_w", "h_w", "h_b",
                                                     "w1",    "b1",    "w2",    "b2",    "ln_g", "ln_b"};
    ttt_mttt_config c = ttt_mttt_config_default(TTT_SEQ_MTTT, learner, D, H);
    c.steps = T, c.eta = eta, c.sgd = sgd;
    ttt_mttt l;
    if (ttt_mttt_init(ctx, &l, &c, TTT_F64) != TTT_OK) die(ctx, "mttt_init");
    ttt_tensor *ps[TTT_MTTT_MAX_PARAMS + 1];
    int np = ttt_mttt_params(&l, ps, NULL);
    char buf[128];
    for (int i = 0; i < np; i++) {
        snprintf(buf, sizeof buf, "%s.%s", pre, names[i]);
        load_into(ctx, buf, ps[i]);
    }
    ttt_tensor *x = ttt_param(ctx, TTT_F64, TTT_DIMS(B, n, D), "x");
    snprintf(buf, sizeof buf, "%s.x", pre);
    load_into(ctx, buf, x);
    snprintf(buf, sizeof buf, "%s.R", pre);
    ttt_tensor *R = load_new(ctx, TTT_F64, buf, TTT_DIMS(B, n, D));
    ps[np] = x;
    ttt_zero_grad(ctx, np + 1, ps);
    double il[TTT_MTTT_MAX_STEPS + 1];
    ttt_mttt_run_opts o = {.seed = seed, .inner_loss = il};
    ttt_tensor *out = ttt_mttt_forward(ctx, &l, x, &o);
    if (!out || ttt_backward(ctx, ttt_sum(ctx, ttt_mul(ctx, out, R), 0, NULL, 0)) != TTT_OK) die(ctx, pre);
    snprintf(buf, sizeof buf, "%s.out", pre);
    double e_out = compare(ctx, out, buf), e_grad = 0;
    for (int i = 0; i <= np; i++) {
        snprintf(buf, sizeof buf, "%s.grad.%s", pre, i < np ? names[i] : "x");
        e_grad = fmax(e_grad, compare(ctx, ps[i]->grad, buf));
    }
    ttt_tensor *ilt = ttt_from_host(ctx, TTT_F64, TTT_DIMS(T + 1), il);
    snprintf(buf, sizeof buf, "%s.inner_loss", pre);
    double e_il = compare(ctx, ilt, buf);
    const char *ord_ok = "-";
    if (sgd) {
        int32_t got[2 * 2 * 5], want[2 * 2 * 5];
        ttt_mttt_sgd_order(seed, B, H, n, got);
        snprintf(buf, sizeof buf, "%s.order", pre);
        ttt_tensor *ot = load_new(ctx, TTT_I32, buf, TTT_DIMS(B, H, n));
        ttt_copy_to_host(ctx, ot, want, TTT_I32);
        ord_ok = memcmp(got, want, sizeof got) ? "DIFFERS" : "same";
        if (memcmp(got, want, sizeof got)) worst_all = INFINITY;
        ttt_persistent_free(ctx, ot);
    }
    printf("%-8s out %.2g  grads %.2g  inner loss %.2g  order %s\n", pre, e_out, e_grad, e_il, ord_ok);
    ttt_step_reset(ctx);
    ttt_persistent_free(ctx, x);
    ttt_persistent_free(ctx, R);
    ttt_mttt_free(ctx, &l);
}

static void vit_case(ttt_ctx *ctx, const char *pre, int sgd) {
    ttt_vit_config c = ttt_vit_config_default(3, 4, 8, 2, 2, TTT_SEQ_MTTT, TTT_MTTT_MLP);
    c.classes = 3, c.seq.steps = 2, c.seq.eta = 0.5, c.seq.sgd = sgd;
    ttt_vit m;
    if (ttt_vit_init(ctx, &m, &c, TTT_F64) != TTT_OK) die(ctx, "vit_init");
    char buf[160];
    for (int i = 0; i < m.n_params; i++) {
        snprintf(buf, sizeof buf, "%s.p.%s", pre, m.names[i]);
        load_into(ctx, buf, m.params[i]);
    }
    snprintf(buf, sizeof buf, "%s.tokens", pre);
    ttt_tensor *tok = load_new(ctx, TTT_F64, buf, TTT_DIMS(3, 4, 3));
    snprintf(buf, sizeof buf, "%s.labels", pre);
    ttt_tensor *y = load_new(ctx, TTT_I32, buf, TTT_DIMS(3));
    ttt_zero_grad(ctx, m.n_params, m.params);
    ttt_vit_run_opts o = {.seed = 11};
    ttt_tensor *logits = ttt_vit_forward(ctx, &m, tok, &o);
    ttt_tensor *loss = logits ? ttt_cross_entropy(ctx, logits, y, -100) : NULL;
    if (!loss || ttt_backward(ctx, loss) != TTT_OK) die(ctx, pre);
    snprintf(buf, sizeof buf, "%s.logits", pre);
    double e_logits = compare(ctx, logits, buf), e_grad = 0, e_new = 0;
    for (int i = 0; i < m.n_params; i++) {
        snprintf(buf, sizeof buf, "%s.g.%s", pre, m.names[i]);
        e_grad = fmax(e_grad, compare(ctx, m.params[i]->grad, buf));
    }
    double norm = 0;
    ttt_optim_config oc = {.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.999, .weight_decay = 0.1};
    ttt_optimizer *opt = ttt_adamw_new(ctx, m.n_params, m.params, m.decay, &oc);
    if (!opt || ttt_clip_grad_norm(ctx, m.n_params, m.params, 0.5, &norm) != TTT_OK ||
        ttt_optimizer_step(opt, -1) != TTT_OK || ttt_optimizer_step(opt, -1) != TTT_OK)
        die(ctx, "clip / adamw");
    ttt_tensor *nt = ttt_from_host(ctx, TTT_F64, TTT_DIMS(1), &norm);
    snprintf(buf, sizeof buf, "%s.gnorm", pre);
    double e_norm = compare(ctx, nt, buf);
    for (int i = 0; i < m.n_params; i++) {
        snprintf(buf, sizeof buf, "%s.n.%s", pre, m.names[i]);
        e_new = fmax(e_new, compare(ctx, m.params[i], buf));
    }
    printf("%-8s logits %.2g  grads %.2g  grad norm %.2g  params after clip + 2 AdamW steps %.2g\n", pre,
           e_logits, e_grad, e_norm, e_new);
    ttt_step_reset(ctx);
    ttt_optimizer_free(opt);
    ttt_persistent_free(ctx, tok);
    ttt_persistent_free(ctx, y);
    ttt_vit_free(ctx, &m);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: check_c LAYER_FIXTURE [VIT_FIXTURE]\n");
        return 2;
    }
    ttt_ctx *ctx = ttt_ctx_new(NULL);
    if (!ctx) return 2;
    fixture = argv[1];
    layer_case(ctx, "mlp", TTT_MTTT_MLP, 2, 0.5, 0, 0);
    layer_case(ctx, "linear", TTT_MTTT_LINEAR, 1, 1.0, 0, 0);
    layer_case(ctx, "mlp_sgd", TTT_MTTT_MLP, 2, 0.5, 1, 7);
    if (argc > 2) {
        fixture = argv[2];
        vit_case(ctx, "vit_gd", 0);
        vit_case(ctx, "vit_sgd", 1);
    }
    ttt_ctx_free(ctx);
    printf("worst relative error %.3g (tolerance %g): %s\n", worst_all, TOL, worst_all <= TOL ? "OK" : "FAIL");
    return worst_all <= TOL ? 0 : 1;
}
