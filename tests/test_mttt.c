/* The MTTT sequence layer (include/ttt/mttt.h), in float64:
 *   - the paper's identities: MTTT-Linear (W_0 = 0, eta = 1, T = 1, batch GD)
 *     equals linear attention, and the kernel learner equals softmax
 *     attention, in outputs and in gradients of a random loss;
 *   - forward outputs against a plain-C reference (several inner steps, batch
 *     GD and SGD with uneven mini-batches, softmax and elu+1 attention), and
 *     MTTT-MLP against a per-(example, head) evaluation with 2-d tensors;
 *   - the outer gradient of MTTT-MLP (T = 2, GD and SGD) against central
 *     differences; checkpointed inner steps against plain ones;
 *   - inner-loss bookkeeping, T = 0, SGD determinism, evaluation mode;
 *   - argument validation. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ttt/ttt.h"

enum { NMAX = TTT_MTTT_MAX_PARAMS + 1 }; /* parameters plus the input */

static double *host_copy(ttt_ctx *ctx, const ttt_tensor *t) {
    double *h = malloc(sizeof(double) * (size_t)ttt_numel(t));
    ttt_copy_to_host(ctx, t, h, TTT_F64);
    return h;
}

static double *randn_host(ttt_ctx *ctx, int64_t n, double sd) {
    ttt_tensor *t = ttt_randn(ctx, TTT_F64, TTT_DIMS(n), sd);
    double *h = host_copy(ctx, t);
    ttt_step_reset(ctx);
    return h;
}

/* max |a - b| / max(1, max |b|) */
static double rel_diff(const double *a, const double *b, int64_t n) {
    double worst = 0, scale = 1;
    for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs(b[i]));
    for (int64_t i = 0; i < n; i++) worst = fmax(worst, fabs(a[i] - b[i]));
    return worst / scale;
}

/* ---- running a layer: output and gradients of L = sum(R * tanh(out)) --------------------- */

typedef struct {
    int n;                    /* gradients: parameters, then the input */
    double *out;              /* [B, n, D] */
    double *g[NMAX];
    int64_t size[NMAX];
} result;

static void result_free(result *r) {
    free(r->out);
    for (int i = 0; i < r->n; i++) free(r->g[i]);
    memset(r, 0, sizeof *r);
}

static ttt_tensor *outer_loss(ttt_ctx *ctx, ttt_tensor *out, const double *rs) {
    ttt_tensor *r = ttt_from_host(ctx, TTT_F64, out->ndim, out->shape, rs);
    return ttt_sum(ctx, ttt_mul(ctx, r, ttt_tanh(ctx, out)), 0, NULL, 0);
}

/* The gradient is taken with respect to the parameters of `owner` (the same
 * tensors as l's when l is a baseline view of an MTTT layer). */
static int run_layer(ttt_ctx *ctx, const ttt_mttt *l, const ttt_mttt *owner, const double *xs, int64_t B,
                     int64_t n, const double *rs, const ttt_mttt_run_opts *o, result *res) {
    memset(res, 0, sizeof *res);
    ttt_tensor *in[NMAX];
    int np = ttt_mttt_params(owner, in, NULL);
    ttt_tensor *x = ttt_from_host(ctx, TTT_F64, TTT_DIMS(B, n, l->cfg.dim), xs);
    ttt_set_requires_grad(x, 1);
    in[np] = x;
    ttt_tensor *out = ttt_mttt_forward(ctx, l, x, o);
    ttt_tensor *loss = out ? outer_loss(ctx, out, rs) : NULL, *g[NMAX];
    if (!loss || ttt_grad(ctx, 1, &loss, NULL, np + 1, in, g, 0) != TTT_OK) {
        fprintf(stderr, "run_layer: %s\n", ttt_error(ctx));
        ttt_step_reset(ctx);
        return TTT_ERR;
    }
    res->n = np + 1;
    res->out = host_copy(ctx, out);
    for (int i = 0; i <= np; i++) {
        res->g[i] = host_copy(ctx, g[i]);
        res->size[i] = ttt_numel(in[i]);
    }
    ttt_step_reset(ctx);
    return TTT_OK;
}

static const char *param_name(const ttt_mttt *l, int i) {
    ttt_tensor *p[NMAX];
    int np = ttt_mttt_params(l, p, NULL);
    return i < np ? p[i]->name : "x";
}

/* outputs and every gradient of a and b agree to tol */
static void check_same(const char *what, const ttt_mttt *l, const result *a, const result *b, int64_t out_size,
                       double tol) {
    double e = rel_diff(a->out, b->out, out_size);
    CHECK_MSG(e <= tol, "%s: outputs differ by %g", what, e);
    double worst = 0;
    CHECK(a->n == b->n && a->n > 0);
    for (int i = 0; i < a->n && i < b->n; i++) {
        double ei = rel_diff(a->g[i], b->g[i], a->size[i]);
        CHECK_MSG(ei <= tol, "%s: gradient of %s differs by %g", what, param_name(l, i), ei);
        worst = fmax(worst, ei);
    }
    printf("%-44s output %.2g, worst gradient %.2g\n", what, e, worst);
}

/* ---- plain-C reference ------------------------------------------------------------------ */

typedef struct {
    int64_t B, n, D, H, d;
    double *x, *psi_w, *psi_b, *phi_w, *phi_b, *g_w, *h_w, *h_b;
} ref_t;

static void ref_init(ttt_ctx *ctx, const ttt_mttt *l, const double *xs, int64_t B, int64_t n, ref_t *r) {
    *r = (ref_t){.B = B, .n = n, .D = l->cfg.dim, .H = l->cfg.heads, .d = l->cfg.dim / l->cfg.heads};
    r->x = malloc(sizeof(double) * (size_t)(B * n * r->D));
    memcpy(r->x, xs, sizeof(double) * (size_t)(B * n * r->D));
    r->psi_w = host_copy(ctx, l->psi_w), r->psi_b = host_copy(ctx, l->psi_b);
    r->phi_w = host_copy(ctx, l->phi_w), r->phi_b = host_copy(ctx, l->phi_b);
    r->g_w = host_copy(ctx, l->g_w), r->h_w = host_copy(ctx, l->h_w), r->h_b = host_copy(ctx, l->h_b);
}

static void ref_free(ref_t *r) {
    double *p[] = {r->x, r->psi_w, r->psi_b, r->phi_w, r->phi_b, r->g_w, r->h_w, r->h_b};
    for (size_t i = 0; i < sizeof p / sizeof *p; i++) free(p[i]);
}

#define AT4(b, h, i, a) ((((b) * r->H + (h)) * r->n + (i)) * r->d + (a))

/* per-head projection [B, H, n, d] of x w (+ bias) */
static double *ref_proj(const ref_t *r, const double *w, const double *bias) {
    double *o = malloc(sizeof(double) * (size_t)(r->B * r->n * r->D));
    for (int64_t b = 0; b < r->B; b++)
        for (int64_t h = 0; h < r->H; h++)
            for (int64_t i = 0; i < r->n; i++)
                for (int64_t a = 0; a < r->d; a++) {
                    int64_t col = h * r->d + a;
                    double s = bias ? bias[col] : 0;
                    for (int64_t c = 0; c < r->D; c++) s += r->x[(b * r->n + i) * r->D + c] * w[c * r->D + col];
                    o[AT4(b, h, i, a)] = s;
                }
    return o;
}

/* out[b, i] = sum_h z[b, h, i] h_w[block h] + h_b */
static void ref_output(const ref_t *r, const double *z, double *out) {
    for (int64_t b = 0; b < r->B; b++)
        for (int64_t i = 0; i < r->n; i++)
            for (int64_t c = 0; c < r->D; c++) {
                double s = r->h_b[c];
                for (int64_t h = 0; h < r->H; h++)
                    for (int64_t a = 0; a < r->d; a++) s += z[AT4(b, h, i, a)] * r->h_w[(h * r->d + a) * r->D + c];
                out[(b * r->n + i) * r->D + c] = s;
            }
}

/* MTTT-Linear: explicit gradient steps on 1/(2m) sum ||(k W) G_h^T - x||^2. */
static void ref_mttt_linear(const ref_t *r, int T, double eta, int sgd, uint64_t seed, double *out) {
    const int64_t n = r->n, d = r->d, D = r->D;
    double *q = ref_proj(r, r->psi_w, r->psi_b), *k = ref_proj(r, r->phi_w, r->phi_b);
    double *z = calloc((size_t)(r->B * n * D), sizeof(double));
    int32_t *order = malloc(sizeof(int32_t) * (size_t)(r->B * r->H * n));
    ttt_mttt_sgd_order(seed, r->B, r->H, n, order);
    double W[64], G[64], u[8], res[32], rg[8];
    for (int64_t b = 0; b < r->B; b++)
        for (int64_t h = 0; h < r->H; h++) {
            memset(W, 0, sizeof W);
            int64_t next = 0;
            for (int t = 0; t < T; t++) {
                int64_t m = sgd ? n / T + (t < n % T) : n;
                memset(G, 0, sizeof G);
                for (int64_t s = 0; s < m; s++) {
                    int64_t i = sgd ? order[(b * r->H + h) * n + next + s] : s;
                    for (int64_t a = 0; a < d; a++) {
                        u[a] = 0;
                        for (int64_t e = 0; e < d; e++) u[a] += k[AT4(b, h, i, e)] * W[e * d + a];
                    }
                    for (int64_t c = 0; c < D; c++) {
                        double dec = 0;
                        for (int64_t a = 0; a < d; a++) dec += u[a] * r->g_w[c * D + h * d + a];
                        res[c] = dec - r->x[(b * n + i) * D + c];
                    }
                    for (int64_t a = 0; a < d; a++) {
                        rg[a] = 0;
                        for (int64_t c = 0; c < D; c++) rg[a] += res[c] * r->g_w[c * D + h * d + a];
                    }
                    for (int64_t e = 0; e < d; e++)
                        for (int64_t a = 0; a < d; a++) G[e * d + a] += k[AT4(b, h, i, e)] * rg[a] / (double)m;
                }
                if (sgd) next += m;
                for (int64_t e = 0; e < d * d; e++) W[e] -= eta * G[e];
            }
            for (int64_t i = 0; i < n; i++)
                for (int64_t a = 0; a < d; a++) {
                    double s = 0;
                    for (int64_t e = 0; e < d; e++) s += q[AT4(b, h, i, e)] * W[e * d + a];
                    z[AT4(b, h, i, a)] = s;
                }
        }
    ref_output(r, z, out);
    free(q), free(k), free(z), free(order);
}

static double elu1(double x) {
    return x > 0 ? x + 1 : exp(x);
}

/* softmax attention (elu = 0) or elu+1 linear attention (elu = 1) */
static void ref_attention(const ref_t *r, int elu, double *out) {
    const int64_t n = r->n, d = r->d;
    double *q = ref_proj(r, r->psi_w, r->psi_b), *k = ref_proj(r, r->phi_w, r->phi_b), *v = ref_proj(r, r->g_w, NULL);
    double *z = calloc((size_t)(r->B * n * r->D), sizeof(double)), w[64];
    for (int64_t b = 0; b < r->B; b++)
        for (int64_t h = 0; h < r->H; h++)
            for (int64_t i = 0; i < n; i++) {
                double total = 0, mx = -INFINITY;
                for (int64_t j = 0; j < n; j++) {
                    double s = 0;
                    for (int64_t a = 0; a < d; a++)
                        s += elu ? elu1(q[AT4(b, h, i, a)]) * elu1(k[AT4(b, h, j, a)])
                                 : q[AT4(b, h, i, a)] * k[AT4(b, h, j, a)] / sqrt((double)d);
                    w[j] = s;
                    mx = fmax(mx, s);
                }
                for (int64_t j = 0; j < n; j++) total += (w[j] = elu ? w[j] : exp(w[j] - mx));
                for (int64_t j = 0; j < n; j++)
                    for (int64_t a = 0; a < d; a++) z[AT4(b, h, i, a)] += w[j] / total * v[AT4(b, h, j, a)];
            }
    ref_output(r, z, out);
    free(q), free(k), free(v), free(z);
}

/* MTTT-MLP one (example, head) at a time with 2-d tensors and the engine's own
 * LayerNorm affine: checks the layer's batching over (b, h), head split,
 * per-head W_0 / LN parameters and SGD mini-batches, not the ops. */
static void ref_mlp_engine(ttt_ctx *ctx, const ttt_mttt *l, const double *xs, int64_t B, int64_t n, uint64_t seed,
                           double *out) {
    const int64_t D = l->cfg.dim, H = l->cfg.heads, d = D / H;
    const int T = l->cfg.steps;
    int32_t *order = malloc(sizeof(int32_t) * (size_t)(B * H * n)), ids[64];
    ttt_mttt_sgd_order(seed, B, H, n, order);
    for (int64_t b = 0; b < B; b++) {
        ttt_tensor *xb = ttt_from_host(ctx, TTT_F64, TTT_DIMS(n, D), xs + b * n * D), *acc = l->h_b;
        for (int64_t h = 0; h < H; h++) {
#define COLS(t) ttt_slice(ctx, t, 1, h * d, (h + 1) * d, 1)
#define ROWS(t) ttt_slice(ctx, t, 0, h * d, (h + 1) * d, 1)
#define HEAD(t, ...) ttt_reshape(ctx, ttt_slice(ctx, t, 0, h, h + 1, 1), TTT_DIMS(__VA_ARGS__))
            ttt_tensor *q = ttt_add(ctx, ttt_matmul(ctx, xb, COLS(l->psi_w), 0, 0), ROWS(l->psi_b));
            ttt_tensor *k = ttt_add(ctx, ttt_matmul(ctx, xb, COLS(l->phi_w), 0, 0), ROWS(l->phi_b));
            ttt_tensor *g = COLS(l->g_w), *lg = HEAD(l->ln_g, D), *lb = HEAD(l->ln_b, D), *gr[4];
            ttt_tensor *w[4] = {HEAD(l->w1, d, 4 * d), HEAD(l->b1, 4 * d), HEAD(l->w2, 4 * d, d), HEAD(l->b2, d)};
            for (int i = 0; i < 4; i++) ttt_set_requires_grad(w[i] = ttt_detach(ctx, w[i]), 1);
            int64_t next = 0;
            for (int t = 0; t < T; t++) {
                ttt_tensor *ks = k, *xt = xb;
                int64_t m = n;
                if (l->cfg.sgd) {
                    m = n / T + (t < n % T);
                    memcpy(ids, order + (b * H + h) * n + next, sizeof(int32_t) * (size_t)m);
                    next += m;
                    ttt_tensor *it = ttt_from_host(ctx, TTT_I32, TTT_DIMS(m), ids);
                    ks = ttt_embedding(ctx, k, it);
                    xt = ttt_embedding(ctx, xb, it);
                }
                ttt_tensor *f = ttt_add(ctx, ttt_matmul(ctx, ttt_gelu(ctx, ttt_add(ctx, ttt_matmul(ctx, ks, w[0], 0, 0), w[1])), w[2], 0, 0), w[3]);
                ttt_tensor *r = ttt_sub(ctx, ttt_layer_norm(ctx, ttt_matmul(ctx, f, g, 0, 1), lg, lb, 1e-6), xt);
                ttt_tensor *loss = ttt_scale(ctx, ttt_sum(ctx, ttt_mul(ctx, r, r), 0, NULL, 0), 0.5 / (double)m);
                CHECK(ttt_grad(ctx, 1, &loss, NULL, 4, w, gr, 0) == TTT_OK);
                for (int i = 0; i < 4; i++) {
                    w[i] = ttt_detach(ctx, ttt_sub(ctx, w[i], ttt_scale(ctx, gr[i], l->cfg.eta)));
                    ttt_set_requires_grad(w[i], 1);
                }
            }
            ttt_tensor *z = ttt_add(ctx, ttt_matmul(ctx, ttt_gelu(ctx, ttt_add(ctx, ttt_matmul(ctx, q, w[0], 0, 0), w[1])), w[2], 0, 0), w[3]);
            acc = ttt_add(ctx, acc, ttt_matmul(ctx, z, ROWS(l->h_w), 0, 0));
#undef COLS
#undef ROWS
#undef HEAD
        }
        CHECK_MSG(acc && ttt_copy_to_host(ctx, acc, out + b * n * D, TTT_F64) == TTT_OK, "%s", ttt_error(ctx));
    }
    free(order);
    ttt_step_reset(ctx);
}

/* ---- tests --------------------------------------------------------------------------------- */

static void test_identities(ttt_ctx *ctx) {
    const int64_t B = 2, n = 5, D = 6, H = 3;
    double *xs = randn_host(ctx, B * n * D, 1.0), *rs = randn_host(ctx, B * n * D, 1.0);

    /* 1: MTTT-Linear (W_0 = 0, eta = 1, T = 1, batch GD) == linear attention, identity map, 1/n */
    ttt_mttt_config c = ttt_mttt_config_default(TTT_SEQ_MTTT, TTT_MTTT_LINEAR, D, H);
    ttt_mttt mt, la;
    CHECK_MSG(ttt_mttt_init(ctx, &mt, &c, TTT_F64) == TTT_OK, "%s", ttt_error(ctx));
    la = mt;
    la.cfg.kind = TTT_SEQ_LINEAR_ATTENTION;
    la.cfg.feature = TTT_FEAT_IDENTITY;
    result a, b;
    CHECK(run_layer(ctx, &mt, &mt, xs, B, n, rs, NULL, &a) == TTT_OK);
    CHECK(run_layer(ctx, &la, &mt, xs, B, n, rs, NULL, &b) == TTT_OK);
    CHECK(a.n == 8); /* 7 shared projections + x */
    check_same("MTTT-Linear T=1 == linear attention", &mt, &a, &b, B * n * D, 1e-10);
    result_free(&a), result_free(&b);
    /* ... and the same through a checkpointed inner step */
    ttt_mttt_run_opts ck = {.checkpoint = 1};
    CHECK(run_layer(ctx, &mt, &mt, xs, B, n, rs, &ck, &a) == TTT_OK);
    CHECK(run_layer(ctx, &la, &mt, xs, B, n, rs, NULL, &b) == TTT_OK);
    check_same("MTTT-Linear T=1 (checkpointed) == lin. attn", &mt, &a, &b, B * n * D, 1e-10);
    result_free(&a), result_free(&b);
    /* a real check: with eta = 0.5 the two differ */
    mt.cfg.eta = 0.5;
    CHECK(run_layer(ctx, &mt, &mt, xs, B, n, rs, NULL, &a) == TTT_OK);
    CHECK(run_layer(ctx, &la, &mt, xs, B, n, rs, NULL, &b) == TTT_OK);
    CHECK_MSG(rel_diff(a.out, b.out, B * n * D) > 1e-3, "eta = 0.5 should not equal linear attention");
    result_free(&a), result_free(&b);
    ttt_mttt_free(ctx, &mt);

    /* 2: kernel learner (k = phi(x)/sqrt(d)) == softmax attention with 1/sqrt(d) */
    c = ttt_mttt_config_default(TTT_SEQ_MTTT, TTT_MTTT_KERNEL, D, H);
    ttt_mttt kl, sa;
    CHECK_MSG(ttt_mttt_init(ctx, &kl, &c, TTT_F64) == TTT_OK, "%s", ttt_error(ctx));
    /* larger weights, so that the softmax is far from uniform */
    ttt_tensor *w[2] = {kl.psi_w, kl.phi_w};
    for (int i = 0; i < 2; i++) ttt_assign(ctx, w[i], ttt_scale(ctx, w[i], 3.0)), ttt_step_reset(ctx);
    ttt_assign(ctx, kl.psi_b, ttt_randn(ctx, TTT_F64, TTT_DIMS(D), 1.0));
    ttt_step_reset(ctx);
    sa = kl;
    sa.cfg.kind = TTT_SEQ_ATTENTION;
    CHECK(run_layer(ctx, &kl, &kl, xs, B, n, rs, NULL, &a) == TTT_OK);
    CHECK(run_layer(ctx, &sa, &kl, xs, B, n, rs, NULL, &b) == TTT_OK);
    check_same("kernel learner == softmax attention", &kl, &a, &b, B * n * D, 1e-10);
    result_free(&a), result_free(&b);
    ttt_mttt_free(ctx, &kl);
    free(xs), free(rs);
}

/* Forward outputs against the plain-C reference. */
static void test_reference(ttt_ctx *ctx) {
    const int64_t B = 2, n = 5, D = 6, H = 2;
    double *xs = randn_host(ctx, B * n * D, 1.0);
    double *ref = malloc(sizeof(double) * (size_t)(B * n * D));
    ttt_mttt_config c = ttt_mttt_config_default(TTT_SEQ_MTTT, TTT_MTTT_LINEAR, D, H);
    ttt_mttt l;
    CHECK_MSG(ttt_mttt_init(ctx, &l, &c, TTT_F64) == TTT_OK, "%s", ttt_error(ctx));
    ref_t r;
    ref_init(ctx, &l, xs, B, n, &r);
    struct {
        int kind, feature, steps, sgd;
        double eta;
        const char *name;
    } cases[] = {
        {TTT_SEQ_MTTT, 0, 3, 0, 0.7, "MTTT-Linear, batch GD, T=3"},
        {TTT_SEQ_MTTT, 0, 2, 1, 0.7, "MTTT-Linear, SGD, T=2 (n=5: 3+2)"},
        {TTT_SEQ_MTTT, 0, 3, 1, 0.9, "MTTT-Linear, SGD, T=3 (n=5: 2+2+1)"},
        {TTT_SEQ_MTTT, 0, 5, 1, 0.9, "MTTT-Linear, SGD, T=5 (n=5: 1 each)"},
        {TTT_SEQ_ATTENTION, 0, 1, 0, 1, "softmax attention"},
        {TTT_SEQ_LINEAR_ATTENTION, TTT_FEAT_ELU1, 1, 0, 1, "linear attention, elu+1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        l.cfg.kind = cases[i].kind;
        l.cfg.feature = cases[i].feature;
        l.cfg.steps = cases[i].steps;
        l.cfg.sgd = cases[i].sgd;
        l.cfg.eta = cases[i].eta;
        ttt_mttt_run_opts o = {.seed = 1234 + i};
        ttt_tensor *x = ttt_from_host(ctx, TTT_F64, TTT_DIMS(B, n, D), xs);
        ttt_tensor *out = ttt_mttt_forward(ctx, &l, x, &o);
        CHECK_MSG(out != NULL, "%s: %s", cases[i].name, ttt_error(ctx));
        if (!out) continue;
        double *got = host_copy(ctx, out);
        if (cases[i].kind == TTT_SEQ_MTTT) ref_mttt_linear(&r, cases[i].steps, cases[i].eta, cases[i].sgd, o.seed, ref);
        else ref_attention(&r, cases[i].kind == TTT_SEQ_LINEAR_ATTENTION, ref);
        double e = rel_diff(got, ref, B * n * D);
        CHECK_MSG(e <= 1e-12, "%s: output differs from the reference by %g", cases[i].name, e);
        printf("%-44s vs plain-C reference %.2g\n", cases[i].name, e);
        free(got);
        ttt_step_reset(ctx);
    }
    /* each (b, h) visits its tokens in a permutation, and the orders differ */
    int32_t ord[2 * 3 * 7];
    ttt_mttt_sgd_order(99, 2, 3, 7, ord);
    int perms_ok = 1, distinct = 0;
    for (int e = 0; e < 6; e++) {
        int seen[7] = {0};
        for (int i = 0; i < 7; i++) perms_ok &= ord[e * 7 + i] >= 0 && ord[e * 7 + i] < 7 && !seen[ord[e * 7 + i]]++;
        if (e && memcmp(ord, ord + e * 7, sizeof(int32_t) * 7)) distinct++;
    }
    CHECK(perms_ok);
    CHECK_MSG(distinct >= 4, "only %d of 5 orders differ from the first", distinct);
    ref_free(&r);
    ttt_mttt_free(ctx, &l);
    free(xs), free(ref);
}

static void test_mlp_reference(ttt_ctx *ctx) {
    const int64_t B = 2, n = 5, D = 6, H = 2;
    double *xs = randn_host(ctx, B * n * D, 1.0);
    double *ref = malloc(sizeof(double) * (size_t)(B * n * D)), *got = malloc(sizeof(double) * (size_t)(B * n * D));
    ttt_mttt_config c = ttt_mttt_config_default(TTT_SEQ_MTTT, TTT_MTTT_MLP, D, H);
    ttt_mttt l;
    CHECK_MSG(ttt_mttt_init(ctx, &l, &c, TTT_F64) == TTT_OK, "%s", ttt_error(ctx));
    /* per-head LN affine and biases that differ between heads */
    ttt_tensor *p[NMAX];
    int np = ttt_mttt_params(&l, p, NULL);
    for (int i = 0; i < np; i++)
        if (p[i] == l.b1 || p[i] == l.b2 || p[i] == l.ln_g || p[i] == l.ln_b || p[i] == l.phi_b) {
            ttt_assign(ctx, p[i], ttt_add(ctx, p[i], ttt_randn(ctx, TTT_F64, p[i]->ndim, p[i]->shape, 0.3)));
            ttt_step_reset(ctx);
        }
    for (int sgd = 0; sgd < 2; sgd++) {
        l.cfg.steps = 3;
        l.cfg.eta = 0.5;
        l.cfg.sgd = sgd;
        ttt_mttt_run_opts o = {.seed = 42};
        ttt_tensor *x = ttt_from_host(ctx, TTT_F64, TTT_DIMS(B, n, D), xs);
        ttt_tensor *out = ttt_mttt_forward(ctx, &l, x, &o);
        CHECK_MSG(out && ttt_copy_to_host(ctx, out, got, TTT_F64) == TTT_OK, "%s", ttt_error(ctx));
        ttt_step_reset(ctx);
        ref_mlp_engine(ctx, &l, xs, B, n, o.seed, ref);
        double e = rel_diff(got, ref, B * n * D);
        CHECK_MSG(e <= 1e-12, "MTTT-MLP %s: output differs from the per-head reference by %g", sgd ? "SGD" : "GD", e);
        printf("MTTT-MLP, %-6s T=3 (n=5)                  vs per-head reference %.2g\n", sgd ? "SGD," : "GD,", e);
    }
    ttt_mttt_free(ctx, &l);
    free(xs), free(ref), free(got);
}

/* Outer gradient of MTTT-MLP through T = 2 inner steps against central
 * differences: every parameter (W_0, phi, ...) and the input. */
static void test_finite_differences(ttt_ctx *ctx) {
    const int64_t B = 2, n = 4, D = 4, H = 2;
    double *xs = randn_host(ctx, B * n * D, 1.0), *rs = randn_host(ctx, B * n * D, 1.0);
    for (int sgd = 0; sgd < 2; sgd++) {
        ttt_mttt_config c = ttt_mttt_config_default(TTT_SEQ_MTTT, TTT_MTTT_MLP, D, H);
        c.steps = 2;
        c.eta = 0.5;
        c.sgd = sgd;
        ttt_mttt l;
        CHECK_MSG(ttt_mttt_init(ctx, &l, &c, TTT_F64) == TTT_OK, "%s", ttt_error(ctx));
        /* non-trivial LN affine and biases, so their gradients are exercised */
        ttt_tensor *p[NMAX];
        int np = ttt_mttt_params(&l, p, NULL);
        CHECK(np == 13);
        for (int i = 0; i < np; i++)
            if (p[i]->ndim <= 2 && p[i] != l.psi_w && p[i] != l.phi_w && p[i] != l.g_w && p[i] != l.h_w) {
                ttt_assign(ctx, p[i], ttt_add(ctx, p[i], ttt_randn(ctx, TTT_F64, p[i]->ndim, p[i]->shape, 0.3)));
                ttt_step_reset(ctx);
            }
        ttt_mttt_run_opts o = {.seed = 77};
        result g;
        CHECK(run_layer(ctx, &l, &l, xs, B, n, rs, &o, &g) == TTT_OK);
        const double eps = 1e-6;
        double worst_all = 0;
        for (int i = 0; i <= np && g.n == np + 1; i++) {
            int64_t cnt = g.size[i];
            double *v = i < np ? host_copy(ctx, p[i]) : malloc(sizeof(double) * (size_t)cnt), worst = 0;
            if (i == np) memcpy(v, xs, sizeof(double) * (size_t)cnt);
            for (int64_t j = 0; j < cnt; j++) {
                double f[2], save = v[j];
                for (int s = 0; s < 2; s++) {
                    v[j] = save + (s ? -eps : eps);
                    if (i < np) ttt_assign(ctx, p[i], ttt_from_host(ctx, TTT_F64, p[i]->ndim, p[i]->shape, v));
                    ttt_no_grad_begin(ctx);
                    ttt_tensor *x = ttt_from_host(ctx, TTT_F64, TTT_DIMS(B, n, D), i < np ? xs : v);
                    ttt_tensor *out = ttt_mttt_forward(ctx, &l, x, &o);
                    f[s] = out ? ttt_item(ctx, outer_loss(ctx, out, rs)) : NAN;
                    ttt_no_grad_end(ctx);
                    ttt_step_reset(ctx);
                }
                v[j] = save;
                double numeric = (f[0] - f[1]) / (2 * eps);
                worst = fmax(worst, fabs(g.g[i][j] - numeric) / (1e-7 + 1e-5 * fabs(numeric)));
            }
            if (i < np) ttt_assign(ctx, p[i], ttt_from_host(ctx, TTT_F64, p[i]->ndim, p[i]->shape, v));
            ttt_step_reset(ctx);
            CHECK_MSG(worst <= 1.0, "MTTT-MLP %s: d/d%s vs finite differences: scaled error %g", sgd ? "SGD" : "GD",
                      param_name(&l, i), worst);
            worst_all = fmax(worst_all, worst);
            free(v);
        }
        printf("MTTT-MLP T=2 %-5s finite differences: worst scaled error %.3g (13 params + x)\n",
               sgd ? "SGD" : "GD", worst_all);
        result_free(&g);
        ttt_mttt_free(ctx, &l);
    }
    free(xs), free(rs);
}

/* Checkpointed inner steps give the gradients of the plain ones. */
static void test_checkpoint(ttt_ctx *ctx) {
    const int64_t B = 2, n = 7, D = 8, H = 2;
    double *xs = randn_host(ctx, B * n * D, 1.0), *rs = randn_host(ctx, B * n * D, 1.0);
    struct {
        int learner, steps, sgd;
        const char *name;
    } cases[] = {{TTT_MTTT_MLP, 3, 0, "MTTT-MLP GD T=3: checkpoint == plain"},
                 {TTT_MTTT_MLP, 3, 1, "MTTT-MLP SGD T=3: checkpoint == plain"},
                 {TTT_MTTT_LINEAR, 2, 1, "MTTT-Linear SGD T=2: checkpoint == plain"}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ttt_mttt_config c = ttt_mttt_config_default(TTT_SEQ_MTTT, cases[i].learner, D, H);
        c.steps = cases[i].steps;
        c.sgd = cases[i].sgd;
        c.eta = 0.3;
        ttt_mttt l;
        CHECK_MSG(ttt_mttt_init(ctx, &l, &c, TTT_F64) == TTT_OK, "%s", ttt_error(ctx));
        ttt_mttt_run_opts plain = {.seed = 5}, ck = {.seed = 5, .checkpoint = 1};
        result a, b;
        CHECK(run_layer(ctx, &l, &l, xs, B, n, rs, &plain, &a) == TTT_OK);
        CHECK(run_layer(ctx, &l, &l, xs, B, n, rs, &ck, &b) == TTT_OK);
        check_same(cases[i].name, &l, &b, &a, B * n * D, 1e-12);
        result_free(&a), result_free(&b);
        ttt_mttt_free(ctx, &l);
    }
    free(xs), free(rs);
}

static double forward_sum_sq(ttt_ctx *ctx, const ttt_mttt *l, const double *xs, int64_t B, int64_t n,
                             const ttt_mttt_run_opts *o, double *out_copy) {
    ttt_tensor *x = ttt_from_host(ctx, TTT_F64, TTT_DIMS(B, n, l->cfg.dim), xs);
    ttt_tensor *out = ttt_mttt_forward(ctx, l, x, o);
    double s = out ? ttt_item(ctx, ttt_sum(ctx, ttt_mul(ctx, out, out), 0, NULL, 0)) : NAN;
    if (out && out_copy) ttt_copy_to_host(ctx, out, out_copy, TTT_F64);
    ttt_step_reset(ctx);
    return s;
}

/* Inner-loss bookkeeping, T = 0, SGD determinism, evaluation mode. */
static void test_inner_loop(ttt_ctx *ctx) {
    const int64_t B = 2, n = 9, D = 8, H = 2, d = D / H;
    double *xs = randn_host(ctx, B * n * D, 1.0);
    ttt_mttt_config c = ttt_mttt_config_default(TTT_SEQ_MTTT, TTT_MTTT_MLP, D, H);
    c.steps = 8;
    c.eta = 0.05;
    ttt_mttt l;
    CHECK_MSG(ttt_mttt_init(ctx, &l, &c, TTT_F64) == TTT_OK, "%s", ttt_error(ctx));

    /* the inner loss falls at every step for a small eta, and the reported
     * values are the layer's inner loss at W_0 and at W_T */
    double inner[TTT_MTTT_MAX_STEPS + 1];
    ttt_mttt_run_opts o = {.inner_loss = inner};
    ttt_mttt_state st;
    ttt_tensor *x = ttt_from_host(ctx, TTT_F64, TTT_DIMS(B, n, D), xs);
    CHECK_MSG(ttt_mttt_adapt(ctx, &l, x, &o, &st) == TTT_OK, "%s", ttt_error(ctx));
    CHECK(st.n == 4);
    int falls = 1;
    for (int t = 0; t < 8; t++) falls &= inner[t + 1] < inner[t];
    CHECK_MSG(falls, "inner loss does not fall at every step: %g %g %g ... %g", inner[0], inner[1], inner[2],
              inner[8]);
    printf("MTTT-MLP inner loss, eta 0.05, T=8: %.5f -> %.5f -> ... -> %.5f\n", inner[0], inner[1], inner[8]);
    double at_wt = ttt_item(ctx, ttt_mttt_inner_loss(ctx, &l, x, &st));
    CHECK_NEAR(at_wt, inner[8], 1e-12);
    ttt_step_reset(ctx);

    /* T = 0: W_T = W_0 for every example, one loss value (at W_0) */
    l.cfg.steps = 0;
    double inner0[2] = {0, -1};
    o.inner_loss = inner0;
    x = ttt_from_host(ctx, TTT_F64, TTT_DIMS(B, n, D), xs);
    CHECK_MSG(ttt_mttt_adapt(ctx, &l, x, &o, &st) == TTT_OK, "%s", ttt_error(ctx));
    CHECK_NEAR(inner0[0], inner[0], 1e-12);
    CHECK(inner0[1] == -1);
    ttt_tensor *w0[4] = {l.w1, l.b1, l.w2, l.b2};
    int64_t shape4[4][4] = {{B, H, d, 4 * d}, {B, H, 1, 4 * d}, {B, H, 4 * d, d}, {B, H, 1, d}};
    for (int i = 0; i < 4; i++) {
        CHECK(st.w[i] && st.w[i]->ndim == 4 && memcmp(st.w[i]->shape, shape4[i], sizeof shape4[i]) == 0);
        double *got = host_copy(ctx, st.w[i]), *want = host_copy(ctx, w0[i]);
        int64_t per = ttt_numel(w0[i]);
        for (int64_t b = 0; b < B; b++) CHECK(memcmp(got + b * per, want, sizeof(double) * (size_t)per) == 0);
        free(got), free(want);
    }
    ttt_step_reset(ctx);

    /* SGD: same seed -> same output, other seed -> another split and output;
     * SGD with T = 1 is batch GD (one mini-batch of all n tokens) */
    double *o1 = malloc(sizeof(double) * (size_t)(B * n * D)), *o2 = malloc(sizeof(double) * (size_t)(B * n * D));
    l.cfg.steps = 2;
    l.cfg.sgd = 1;
    l.cfg.eta = 1.0;
    ttt_mttt_run_opts s1 = {.seed = 11}, s2 = {.seed = 12};
    forward_sum_sq(ctx, &l, xs, B, n, &s1, o1);
    forward_sum_sq(ctx, &l, xs, B, n, &s1, o2);
    CHECK(memcmp(o1, o2, sizeof(double) * (size_t)(B * n * D)) == 0);
    forward_sum_sq(ctx, &l, xs, B, n, &s2, o2);
    CHECK_MSG(rel_diff(o1, o2, B * n * D) > 1e-6, "seeds 11 and 12 give the same SGD output");
    l.cfg.steps = 1;
    forward_sum_sq(ctx, &l, xs, B, n, &s1, o1);
    l.cfg.sgd = 0;
    forward_sum_sq(ctx, &l, xs, B, n, &s1, o2);
    CHECK_MSG(rel_diff(o1, o2, B * n * D) <= 1e-12, "SGD T=1 vs GD T=1: %g", rel_diff(o1, o2, B * n * D));

    /* evaluation (grad mode off, checkpointed SGD) gives the training-mode output */
    l.cfg.steps = 3;
    l.cfg.sgd = 1;
    ttt_mttt_run_opts e = {.seed = 3, .checkpoint = 1};
    forward_sum_sq(ctx, &l, xs, B, n, &e, o1);
    ttt_no_grad_begin(ctx);
    forward_sum_sq(ctx, &l, xs, B, n, &e, o2);
    ttt_no_grad_end(ctx);
    CHECK_MSG(rel_diff(o1, o2, B * n * D) <= 1e-13, "no-grad vs grad mode: %g", rel_diff(o1, o2, B * n * D));
    free(o1), free(o2);

    /* ttt_backward reaches every listed parameter (for an outer optimizer) */
    ttt_tensor *p[NMAX];
    int np = ttt_mttt_params(&l, p, NULL), all_nonzero = 1;
    CHECK(ttt_zero_grad(ctx, np, p) == TTT_OK);
    ttt_tensor *xb = ttt_from_host(ctx, TTT_F64, TTT_DIMS(B, n, D), xs);
    ttt_tensor *ob = ttt_mttt_forward(ctx, &l, xb, &e);
    CHECK_MSG(ob && ttt_backward(ctx, ttt_mean(ctx, ttt_tanh(ctx, ob), 0, NULL, 0)) == TTT_OK, "%s", ttt_error(ctx));
    for (int i = 0; i < np; i++) {
        double *gh = host_copy(ctx, p[i]->grad), norm = 0;
        for (int64_t j = 0; j < ttt_numel(p[i]); j++) norm += gh[j] * gh[j];
        all_nonzero &= norm > 0;
        free(gh);
    }
    CHECK_MSG(all_nonzero, "a parameter got no gradient from ttt_backward");
    ttt_step_reset(ctx);

    /* f32 runs too */
    ttt_mttt l32;
    CHECK_MSG(ttt_mttt_init(ctx, &l32, &c, TTT_F32) == TTT_OK, "%s", ttt_error(ctx));
    ttt_tensor *x32 = ttt_cast(ctx, ttt_from_host(ctx, TTT_F64, TTT_DIMS(B, n, D), xs), TTT_F32);
    ttt_tensor *out32 = ttt_mttt_forward(ctx, &l32, x32, NULL);
    CHECK_MSG(out32 && isfinite(ttt_item(ctx, ttt_sum(ctx, out32, 0, NULL, 0))), "f32: %s", ttt_error(ctx));
    ttt_step_reset(ctx);
    ttt_mttt_free(ctx, &l32);
    ttt_mttt_free(ctx, &l);
    free(xs);
}

static int has(const char *s, const char *part) {
    return strstr(s, part) != NULL;
}

static void test_errors(ttt_ctx *ctx) {
    ttt_mttt l;
    ttt_mttt_config c = ttt_mttt_config_default(TTT_SEQ_MTTT, TTT_MTTT_MLP, 6, 4);
    CHECK(ttt_mttt_init(ctx, &l, &c, TTT_F64) == TTT_ERR);
    CHECK_MSG(has(ttt_error(ctx), "not divisible"), "%s", ttt_error(ctx));
    CHECK(l.psi_w == NULL);
    ttt_clear_error(ctx);
    c = ttt_mttt_config_default(TTT_SEQ_MTTT, TTT_MTTT_MLP, 8, 2);
    c.steps = 9;
    CHECK(ttt_mttt_init(ctx, &l, &c, TTT_F64) == TTT_ERR);
    CHECK_MSG(has(ttt_error(ctx), "T=9") && has(ttt_error(ctx), "0..8"), "%s", ttt_error(ctx));
    c.steps = -1;
    CHECK(ttt_mttt_init(ctx, &l, &c, TTT_F64) == TTT_ERR);
    c.steps = 2;
    c.eta = NAN;
    CHECK(ttt_mttt_init(ctx, &l, &c, TTT_F64) == TTT_ERR);
    CHECK_MSG(has(ttt_error(ctx), "eta"), "%s", ttt_error(ctx));
    c.eta = 1;
    c.learner = (ttt_mttt_learner)7;
    CHECK(ttt_mttt_init(ctx, &l, &c, TTT_F64) == TTT_ERR);
    CHECK_MSG(has(ttt_error(ctx), "learner"), "%s", ttt_error(ctx));
    c.learner = TTT_MTTT_MLP;
    c.kind = (ttt_seq_kind)5;
    CHECK(ttt_mttt_init(ctx, &l, &c, TTT_F64) == TTT_ERR);
    CHECK_MSG(has(ttt_error(ctx), "kind"), "%s", ttt_error(ctx));
    c.kind = TTT_SEQ_MTTT;
    CHECK(ttt_mttt_init(ctx, &l, &c, TTT_I32) == TTT_ERR);
    CHECK_MSG(has(ttt_error(ctx), "f32 or f64"), "%s", ttt_error(ctx));
    CHECK(ttt_mttt_init(ctx, NULL, &c, TTT_F64) == TTT_ERR);

    /* a valid layer, bad calls */
    c.sgd = 1;
    c.steps = 4;
    CHECK_MSG(ttt_mttt_init(ctx, &l, &c, TTT_F64) == TTT_OK, "%s", ttt_error(ctx));
    ttt_clear_error(ctx);
    CHECK(ttt_mttt_forward(ctx, &l, NULL, NULL) == NULL); /* NULL input: no new message */
    CHECK(ttt_error(ctx)[0] == 0);
    ttt_tensor *x3 = ttt_randn(ctx, TTT_F64, TTT_DIMS(1, 3, 8), 1.0);
    CHECK(ttt_mttt_forward(ctx, &l, x3, NULL) == NULL); /* SGD: n = 3 < T = 4 */
    CHECK_MSG(has(ttt_error(ctx), "n >= T"), "%s", ttt_error(ctx));
    ttt_tensor *x5 = ttt_randn(ctx, TTT_F64, TTT_DIMS(1, 5, 8), 1.0); /* n = 5, T = 4: 2+1+1+1 */
    CHECK_MSG(ttt_mttt_forward(ctx, &l, x5, NULL) != NULL, "%s", ttt_error(ctx));
    ttt_tensor *xw = ttt_randn(ctx, TTT_F64, TTT_DIMS(1, 5, 7), 1.0);
    CHECK(ttt_mttt_forward(ctx, &l, xw, NULL) == NULL);
    CHECK_MSG(has(ttt_error(ctx), "[B, n, 8]"), "%s", ttt_error(ctx));
    ttt_tensor *x2 = ttt_randn(ctx, TTT_F64, TTT_DIMS(5, 8), 1.0);
    CHECK(ttt_mttt_forward(ctx, &l, x2, NULL) == NULL);
    ttt_tensor *xf = ttt_randn(ctx, TTT_F32, TTT_DIMS(1, 5, 8), 1.0);
    CHECK(ttt_mttt_forward(ctx, &l, xf, NULL) == NULL);
    CHECK_MSG(has(ttt_error(ctx), "f32"), "%s", ttt_error(ctx));
    /* an edited config is checked again */
    ttt_mttt bad = l;
    bad.cfg.steps = 12;
    CHECK(ttt_mttt_forward(ctx, &bad, x5, NULL) == NULL);
    CHECK_MSG(has(ttt_error(ctx), "0..8"), "%s", ttt_error(ctx));
    bad = l;
    bad.w1 = NULL;
    CHECK(ttt_mttt_forward(ctx, &bad, x5, NULL) == NULL);
    CHECK_MSG(has(ttt_error(ctx), "w1 is missing"), "%s", ttt_error(ctx));
    bad = l;
    bad.cfg.heads = 4; /* parameters were made for H = 2 */
    CHECK(ttt_mttt_forward(ctx, &bad, x5, NULL) == NULL);
    CHECK_MSG(has(ttt_error(ctx), "w1"), "%s", ttt_error(ctx));
    /* adapt needs a learner with weights */
    bad = l;
    bad.cfg.kind = TTT_SEQ_ATTENTION;
    ttt_mttt_state st;
    CHECK(ttt_mttt_adapt(ctx, &bad, x5, NULL, &st) == TTT_ERR);
    CHECK_MSG(has(ttt_error(ctx), "LINEAR and MLP"), "%s", ttt_error(ctx));
    CHECK(ttt_mttt_adapt(ctx, &l, x5, NULL, NULL) == TTT_ERR);
    /* parameter listing and weight-decay flags */
    ttt_tensor *p[NMAX];
    int decay[NMAX];
    CHECK(ttt_mttt_params(&l, p, decay) == 13);
    CHECK(decay[0] == 1 && decay[1] == 0 && decay[7] == 1 && decay[8] == 0 && decay[11] == 0);
    ttt_step_reset(ctx);
    ttt_mttt_free(ctx, &l);
    CHECK(l.psi_w == NULL && ttt_mttt_params(&l, p, NULL) == 0);
}

int main(void) {
    ttt_ctx_config cfg = {.seed = 2024, .threads = 1};
    ttt_ctx *ctx = ttt_ctx_new(&cfg);
    CHECK(ctx != NULL);
    if (!ctx) TEST_MAIN_END();
    test_identities(ctx);
    test_reference(ctx);
    test_mlp_reference(ctx);
    test_finite_differences(ctx);
    test_checkpoint(ctx);
    test_inner_loop(ctx);
    test_errors(ctx);
    ttt_ctx_free(ctx);
    TEST_MAIN_END();
}
