/* TTT-Linear / TTT-MLP (src/layers/ttt_rnn.c), float64 on the CPU:
 *   - the PyTorch reference (bench/mixers/torch_ttt_rnn.py: primal form, inner gradients by
 *     autograd) -> tests/fixtures/ttt_rnn_fixture.safetensors: outputs and the gradients of
 *     sum(y * r) in every parameter and x, to 1e-11 relative to their size;
 *   - the dual form equals the primal form (outputs and gradients);
 *   - decode (token by token, and in uneven pieces, with the state) equals the forward pass;
 *   - central finite differences of the layer's gradient, and of a Hessian-vector product
 *     (grad of grad), for both learners and backbones. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ttt/ttt.h"

static double max_abs(ttt_ctx *ctx, const ttt_tensor *t) {
    const int64_t n = ttt_numel(t);
    double *h = malloc(sizeof(double) * (size_t)n), m = 0;
    ttt_copy_to_host(ctx, t, h, TTT_F64);
    for (int64_t i = 0; i < n; i++) m = fabs(h[i]) > m ? fabs(h[i]) : m;
    free(h);
    return m;
}

/* max |a - b| / max(1, max |b|) */
static double rel_diff(ttt_ctx *ctx, const ttt_tensor *a, const ttt_tensor *b) {
    ttt_mark_t m = ttt_mark(ctx);
    double s = max_abs(ctx, b);
    double d = max_abs(ctx, ttt_sub(ctx, (ttt_tensor *)a, (ttt_tensor *)b));
    ttt_release(ctx, m);
    return d / (s > 1 ? s : 1);
}

static ttt_rnn_config config(int kind, int backbone) {
    return (ttt_rnn_config){.kind = kind, .backbone = backbone, .dim = 8, .heads = 2, .mini_batch = 4,
                            .base_lr = 0, .rope_theta = 10000.0};
}

/* Parameters larger than the init so every part matters (the offsets too). */
static void randomize(ttt_ctx *ctx, ttt_rnn *l) {
    for (int i = 0; i < l->n_params; i++) {
        ttt_tensor *p = l->params[i];
        const double sc = !strcmp(l->names[i], "token_idx_offset") ? 0.05 : 0.4;
        ttt_mark_t m = ttt_mark(ctx);
        ttt_tensor *r = ttt_randn(ctx, p->dtype, p->ndim, p->shape, sc);
        if (strstr(l->names[i], "norm.weight")) r = ttt_add_scalar(ctx, r, 1.0);
        ttt_assign(ctx, p, r);
        ttt_release(ctx, m);
    }
}

static ttt_tensor *weighted(ttt_ctx *ctx, ttt_tensor *y, ttt_tensor *r) { return ttt_sum(ctx, ttt_mul(ctx, y, r), 0, NULL, 0); }

static void test_fixture(ttt_ctx *ctx) {
#ifndef TTT_HAVE_JSONC
    (void)ctx;
    printf("PyTorch fixture: skipped (built without json-c)\n");
#else
    static const char leaf[] = "/tests/fixtures/ttt_rnn_fixture.safetensors";
    char path[4096];
    snprintf(path, sizeof path - sizeof leaf, "%s", __FILE__);
    char *cut = strstr(path, "/tests/test_ttt_rnn.c");
    if (cut) strcpy(cut, leaf);
    else snprintf(path, sizeof path, ".%s", leaf);
    char *meta = NULL, buf[64];
    if (ttt_load_safetensors(ctx, path, 0, NULL, &meta) != TTT_OK) {
        CHECK_MSG(0, "%s", ttt_error(ctx));
        return;
    }
    int n_cfg = ttt_metadata_get(meta, "configs", buf, sizeof buf) == TTT_OK ? atoi(buf) : 0;
    CHECK(n_cfg == 4);
    for (int ci = 0; ci < n_cfg; ci++) {
        long long v[8];
        static const char *keys[] = {"kind", "backbone", "dim", "heads", "mini_batch", "B", "T"};
        for (int j = 0; j < 7; j++) {
            char key[64];
            snprintf(key, sizeof key, "c%d.%s", ci, keys[j]);
            CHECK(ttt_metadata_get(meta, key, buf, sizeof buf) == TTT_OK);
            v[j] = atoll(buf);
        }
        ttt_rnn_config c = {.kind = (int)v[0], .backbone = (int)v[1], .dim = v[2], .heads = v[3], .mini_batch = v[4],
                            .rope_theta = 10000.0};
        ttt_rnn l;
        CHECK(ttt_rnn_init(ctx, &l, &c, TTT_F64, 0.02, 0.02) == TTT_OK);
        const int64_t B = v[5], T = v[6], D = v[2];
        ttt_tensor *x = ttt_persistent(ctx, TTT_F64, TTT_DIMS(B, T, D), "x");
        ttt_tensor *r = ttt_persistent(ctx, TTT_F64, TTT_DIMS(B, T, D), "r");
        ttt_tensor *y_ref = ttt_persistent(ctx, TTT_F64, TTT_DIMS(B, T, D), "y");
        ttt_tensor *gx_ref = ttt_persistent(ctx, TTT_F64, TTT_DIMS(B, T, D), "gx");
        ttt_tensor *gref[TTT_RNN_MAX_PARAMS];
        ttt_named_tensor nt[2 * TTT_RNN_MAX_PARAMS + 4];
        char names[2 * TTT_RNN_MAX_PARAMS + 4][96];
        int n = 0;
        for (int i = 0; i < l.n_params; i++) {
            gref[i] = ttt_persistent(ctx, TTT_F64, l.params[i]->ndim, l.params[i]->shape, "gref");
            snprintf(names[n], sizeof names[n], "c%d.%s", ci, l.names[i]);
            nt[n] = (ttt_named_tensor){names[n], l.params[i]}, n++;
            snprintf(names[n], sizeof names[n], "c%d.grad.%s", ci, l.names[i]);
            nt[n] = (ttt_named_tensor){names[n], gref[i]}, n++;
        }
        const char *extra[] = {"x", "r", "y", "grad.x"};
        ttt_tensor *et[] = {x, r, y_ref, gx_ref};
        for (int j = 0; j < 4; j++) {
            snprintf(names[n], sizeof names[n], "c%d.%s", ci, extra[j]);
            nt[n] = (ttt_named_tensor){names[n], et[j]}, n++;
        }
        CHECK_MSG(ttt_load_safetensors(ctx, path, n, nt, NULL) == TTT_OK, "%s", ttt_error(ctx));
        for (int primal = 0; primal < 2; primal++) {
            ttt_step_reset(ctx);
            ttt_tensor *xl = ttt_detach(ctx, x);
            ttt_set_requires_grad(xl, 1);
            ttt_tensor *y = ttt_rnn_forward(ctx, &l, xl, primal);
            CHECK_MSG(y != NULL, "%s", ttt_error(ctx));
            if (!y) continue;
            const double dy = rel_diff(ctx, y, y_ref);
            ttt_tensor *ins[TTT_RNN_MAX_PARAMS + 1], *gs[TTT_RNN_MAX_PARAMS + 1];
            for (int i = 0; i < l.n_params; i++) ins[i] = l.params[i];
            ins[l.n_params] = xl;
            CHECK(ttt_grad(ctx, 1, (ttt_tensor *const[]){weighted(ctx, y, r)}, NULL, l.n_params + 1, ins, gs, 0) == TTT_OK);
            double dg = rel_diff(ctx, gs[l.n_params], gx_ref);
            for (int i = 0; i < l.n_params; i++) {
                const double e = rel_diff(ctx, gs[i], gref[i]);
                CHECK_MSG(e < 1e-11, "config %d %s: grad %s differs by %.2e", ci, primal ? "primal" : "dual", l.names[i], e);
                dg = e > dg ? e : dg;
            }
            printf("PyTorch fixture config %d (%s, %s, %s): output %.2e, gradients %.2e (relative)\n", ci,
                   c.kind ? "MLP" : "Linear", c.backbone ? "mamba" : "transformer", primal ? "primal" : "dual", dy, dg);
            CHECK(dy < 1e-12);
            CHECK(dg < 1e-11);
        }
        for (int i = 0; i < l.n_params; i++) ttt_persistent_free(ctx, gref[i]);
        ttt_persistent_free(ctx, x), ttt_persistent_free(ctx, r), ttt_persistent_free(ctx, y_ref), ttt_persistent_free(ctx, gx_ref);
        ttt_rnn_free(ctx, &l);
    }
    free(meta);
#endif
}

/* decode in pieces (lens, summing to T) == forward */
static void test_decode(ttt_ctx *ctx, int kind, int backbone) {
    ttt_rnn_config c = config(kind, backbone);
    ttt_rnn l;
    CHECK(ttt_rnn_init(ctx, &l, &c, TTT_F64, 0.02, 0.02) == TTT_OK);
    randomize(ctx, &l);
    const int64_t B = 2, T = 14;
    ttt_tensor *x = ttt_persistent(ctx, TTT_F64, TTT_DIMS(B, T, c.dim), "x");
    ttt_assign(ctx, x, ttt_randn(ctx, TTT_F64, TTT_DIMS(B, T, c.dim), 1.0));
    ttt_step_reset(ctx);
    ttt_tensor *y = ttt_rnn_forward(ctx, &l, x, 0);
    ttt_rnn_state s;
    CHECK(ttt_rnn_state_init(ctx, &l, &s, B) == TTT_OK);
    static const int64_t pieces[][6] = {{1, 1, 1, 1, 1, 9}, {3, 1, 5, 2, 3, 0}, {8, 6, 0, 0, 0, 0}, {14, 0, 0, 0, 0, 0}};
    for (int pi = 0; pi < 4; pi++) {
        CHECK(ttt_rnn_state_reset(ctx, &l, &s) == TTT_OK);
        double worst = 0;
        int64_t t = 0;
        for (int j = 0; j < 6 && pieces[pi][j]; j++) {
            int64_t n = pieces[pi][j];
            if (pi == 0 && j == 5) n = 1; /* the first: every token alone */
            for (int64_t rep = 0; rep < (pi == 0 && j == 5 ? 9 : 1); rep++) {
                ttt_tensor *xs = ttt_contiguous(ctx, ttt_slice(ctx, x, 1, t, t + n, 1));
                ttt_tensor *ys = ttt_rnn_decode(ctx, &l, &s, xs);
                CHECK_MSG(ys != NULL, "%s", ttt_error(ctx));
                if (!ys) return;
                const double e = rel_diff(ctx, ys, ttt_slice(ctx, y, 1, t, t + n, 1));
                worst = e > worst ? e : worst;
                t += n;
            }
        }
        CHECK(t == T && s.pos == T);
        printf("decode %s %s, pieces %d: max diff to the forward pass %.2e\n", kind ? "MLP" : "Linear",
               backbone ? "mamba" : "transformer", pi, worst);
        CHECK(worst < 1e-12);
    }
    /* copy: a state copied mid-mini-batch continues identically */
    ttt_rnn_state s2;
    CHECK(ttt_rnn_state_init(ctx, &l, &s2, B) == TTT_OK);
    CHECK(ttt_rnn_state_reset(ctx, &l, &s) == TTT_OK);
    ttt_rnn_decode(ctx, &l, &s, ttt_contiguous(ctx, ttt_slice(ctx, x, 1, 0, 6, 1)));
    CHECK(ttt_rnn_state_copy(ctx, &s2, &s) == TTT_OK);
    ttt_tensor *a = ttt_rnn_decode(ctx, &l, &s, ttt_contiguous(ctx, ttt_slice(ctx, x, 1, 6, 9, 1)));
    ttt_tensor *b = ttt_rnn_decode(ctx, &l, &s2, ttt_contiguous(ctx, ttt_slice(ctx, x, 1, 6, 9, 1)));
    CHECK(a && b && rel_diff(ctx, a, b) == 0.0);
    ttt_rnn_state_free(ctx, &s2);
    ttt_rnn_state_free(ctx, &s);
    ttt_persistent_free(ctx, x);
    ttt_rnn_free(ctx, &l);
    ttt_step_reset(ctx);
}

/* L(theta) = sum(y * r). Central differences of dL/dp . u for a random direction u of each
 * parameter (and x), and of the Hessian-vector product d/dp (dL/dp . u) . w. */
static void test_finite_differences(ttt_ctx *ctx, int kind, int backbone) {
    ttt_rnn_config c = config(kind, backbone);
    ttt_rnn l;
    CHECK(ttt_rnn_init(ctx, &l, &c, TTT_F64, 0.02, 0.02) == TTT_OK);
    randomize(ctx, &l);
    const int64_t B = 1, T = 7;
    ttt_tensor *x = ttt_param(ctx, TTT_F64, TTT_DIMS(B, T, c.dim), "x");
    ttt_tensor *r = ttt_persistent(ctx, TTT_F64, TTT_DIMS(B, T, c.dim), "r");
    ttt_assign(ctx, x, ttt_randn(ctx, TTT_F64, TTT_DIMS(B, T, c.dim), 1.0));
    ttt_assign(ctx, r, ttt_randn(ctx, TTT_F64, TTT_DIMS(B, T, c.dim), 1.0));
    const int n = l.n_params + 1;
    ttt_tensor *ps[TTT_RNN_MAX_PARAMS + 1], *u[TTT_RNN_MAX_PARAMS + 1], *w[TTT_RNN_MAX_PARAMS + 1];
    for (int i = 0; i < n; i++) {
        ps[i] = i < l.n_params ? l.params[i] : x;
        u[i] = ttt_persistent(ctx, TTT_F64, ps[i]->ndim, ps[i]->shape, "u");
        w[i] = ttt_persistent(ctx, TTT_F64, ps[i]->ndim, ps[i]->shape, "w");
        ttt_assign(ctx, u[i], ttt_randn(ctx, TTT_F64, ps[i]->ndim, ps[i]->shape, 1.0));
        ttt_assign(ctx, w[i], ttt_randn(ctx, TTT_F64, ps[i]->ndim, ps[i]->shape, 1.0));
    }
    /* f(s) = L(theta + s w), g(s) = dL/dtheta(theta + s w) . u */
    double fv[2], gv[2], g0 = 0, hv0 = 0;
    const double h = 2e-6;
    for (int side = -1; side <= 2; side++) {
        ttt_step_reset(ctx);
        const double s = side == 2 ? 0 : side * h;
        if (side == 0) continue;
        for (int i = 0; i < n; i++) ttt_assign(ctx, ps[i], ttt_add(ctx, ps[i], ttt_scale(ctx, w[i], s)));
        ttt_tensor *L = weighted(ctx, ttt_rnn_forward(ctx, &l, x, 0), r);
        ttt_tensor *g[TTT_RNN_MAX_PARAMS + 1];
        CHECK(ttt_grad(ctx, 1, &L, NULL, n, ps, g, 1) == TTT_OK);
        ttt_tensor *gu = NULL, *gw = NULL;
        for (int i = 0; i < n; i++) {
            ttt_tensor *a = ttt_sum(ctx, ttt_mul(ctx, g[i], u[i]), 0, NULL, 0), *b = ttt_sum(ctx, ttt_mul(ctx, g[i], w[i]), 0, NULL, 0);
            gu = gu ? ttt_add(ctx, gu, a) : a;
            gw = gw ? ttt_add(ctx, gw, b) : b;
        }
        if (side == 2) { /* analytic: dL/ds = g . w; d(g . u)/ds by grad of grad */
            g0 = ttt_item(ctx, gw);
            ttt_tensor *hg[TTT_RNN_MAX_PARAMS + 1];
            CHECK(ttt_grad(ctx, 1, &gu, NULL, n, ps, hg, 0) == TTT_OK);
            for (int i = 0; i < n; i++) hv0 += ttt_item(ctx, ttt_sum(ctx, ttt_mul(ctx, hg[i], w[i]), 0, NULL, 0));
        } else {
            fv[side > 0] = ttt_item(ctx, L);
            gv[side > 0] = ttt_item(ctx, gu);
        }
        ttt_step_reset(ctx);
        for (int i = 0; i < n; i++) ttt_assign(ctx, ps[i], ttt_sub(ctx, ps[i], ttt_scale(ctx, w[i], s)));
    }
    const double fd1 = (fv[1] - fv[0]) / (2 * h), fd2 = (gv[1] - gv[0]) / (2 * h);
    const double e1 = fabs(fd1 - g0) / (1e-6 + 1e-6 * fabs(fd1)), e2 = fabs(fd2 - hv0) / (1e-5 + 1e-6 * fabs(fd2));
    printf("finite differences %s %s: dL.w %.10g vs %.10g, HVP %.10g vs %.10g\n", kind ? "MLP" : "Linear",
           backbone ? "mamba" : "transformer", g0, fd1, hv0, fd2);
    CHECK(e1 <= 1);
    CHECK(e2 <= 1);
    for (int i = 0; i < n; i++) ttt_persistent_free(ctx, u[i]), ttt_persistent_free(ctx, w[i]);
    ttt_persistent_free(ctx, x), ttt_persistent_free(ctx, r);
    ttt_rnn_free(ctx, &l);
    ttt_step_reset(ctx);
}

static void test_errors(ttt_ctx *ctx) {
    ttt_rnn l;
    ttt_rnn_config c = config(0, 0);
    c.dim = 6, c.heads = 4;
    CHECK(ttt_rnn_init(ctx, &l, &c, TTT_F64, 0.02, 0.02) == TTT_ERR && strstr(ttt_error(ctx), "heads"));
    c = config(3, 0);
    CHECK(ttt_rnn_init(ctx, &l, &c, TTT_F64, 0.02, 0.02) == TTT_ERR && strstr(ttt_error(ctx), "learner"));
    c = config(1, 1);
    CHECK(ttt_rnn_init(ctx, &l, &c, TTT_F64, 0.02, 0.02) == TTT_OK);
    CHECK(l.cfg.base_lr == 0.1 && l.n_params == 19);
    int64_t count = 0;
    for (int i = 0; i < l.n_params; i++) count += ttt_numel(l.params[i]);
    CHECK(count == ttt_rnn_param_count(&l.cfg));
    CHECK(ttt_rnn_forward(ctx, &l, ttt_zeros(ctx, TTT_F64, TTT_DIMS(1, 3, 5)), 0) == NULL && strstr(ttt_error(ctx), "x"));
    ttt_rnn_free(ctx, &l);
    c = config(0, 0);
    CHECK(ttt_rnn_init(ctx, &l, &c, TTT_F64, 0.02, 0.02) == TTT_OK);
    count = 0;
    for (int i = 0; i < l.n_params; i++) count += ttt_numel(l.params[i]);
    CHECK(count == ttt_rnn_param_count(&l.cfg) && l.cfg.base_lr == 1.0);
    ttt_rnn_free(ctx, &l);
    ttt_step_reset(ctx);
}

int main(void) {
    ttt_ctx *ctx = ttt_ctx_new(&(ttt_ctx_config){.device = TTT_CPU, .seed = 7, .threads = 1});
    test_errors(ctx);
    test_fixture(ctx);
    for (int kind = 0; kind < 2; kind++)
        for (int bb = 0; bb < 2; bb++) {
            test_decode(ctx, kind, bb);
            test_finite_differences(ctx, kind, bb);
        }
    ttt_ctx_free(ctx);
    TEST_MAIN_END();
}
