/* The fused chunkwise Gated DeltaNet core (composed/gated_delta.c, the backend's gdn_chunk_fwd /
 * gdn_chunk_bwd; ttt_gated_delta_chunked takes it unless TTT_FUSED=0):
 *   - the output, the final state and the gradients with respect to q, k, v, beta, g and s0 against
 *     the composed chunkwise core (fused paths off) and the recurrent core: f64 to 1e-12, f32 against
 *     the f64 recurrence to 2e-5; shapes with T not a multiple of the chunk, T shorter than it, T = 1,
 *     dk != dv, with and without s0, strong (alpha down to e^-8 per token) and weak gates, and losses
 *     on the output only, the state only and both (the backward kernel with either cotangent absent);
 *   - finite differences of the fused first-order gradients in f64 on a tiny shape;
 *   - second order (create_graph through the fused op: its VJP differentiates the composed core)
 *     equals the composed path's;
 *   - the block: prefill, then decode steps of one token (the fused core with a chunk of one token),
 *     against the composed prefill and the recurrent step (outputs and the state);
 *   - the switch: a context made with TTT_FUSED=0 composes the core (no fused node), and the fused
 *     path records one node. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/internal.h"
#include "ttt/ttt.h"

static double *host(ttt_ctx *ctx, const ttt_tensor *t) {
    double *h = malloc(sizeof(double) * (size_t)(ttt_numel(t) + 1));
    if (ttt_copy_to_host(ctx, t, h, TTT_F64) != TTT_OK) h[0] = NAN;
    return h;
}

/* max |a - b| / max(max |b|, floor): a gradient that the gates shrink below floor (with alphas down to e^-8,
 * ds0 after 100 tokens is ~e^-400) is compared in absolute terms */
static double rel_floor(ttt_ctx *ctx, const ttt_tensor *a, const ttt_tensor *b, double floor) {
    if (!a || !b || ttt_numel(a) != ttt_numel(b)) return INFINITY;
    double *x = host(ctx, a), *y = host(ctx, b), d = 0, s = 0;
    for (int64_t i = 0; i < ttt_numel(a); i++) d = fmax(d, fabs(x[i] - y[i])), s = fmax(s, fabs(y[i]));
    free(x), free(y);
    return isnan(d) ? INFINITY : d / fmax(s, floor);
}
static double rel_diff(ttt_ctx *ctx, const ttt_tensor *a, const ttt_tensor *b) { return rel_floor(ctx, a, b, 1e-300); }

static int fused_node(const ttt_tensor *o) { return o && o->node && !strcmp(o->node->op, "gated_delta_chunked"); }

typedef struct {
    int64_t B, H, T, dk, dv, C;
    int with_s0, strong, loss; /* loss: 0 both terms, 1 the output only, 2 the state only */
} shape;

/* inputs q, k (L2-normalized), v, beta, g, s0 in f64 */
typedef struct {
    ttt_tensor *x[6], *R, *Rs;
    int n;
} problem;

static void make(ttt_ctx *ctx, const shape *s, problem *p) {
    const int64_t B = s->B, H = s->H, T = s->T, dk = s->dk, dv = s->dv;
    const int last = -1;
    ttt_tensor *k = ttt_randn(ctx, TTT_F64, TTT_DIMS(B, H, T, dk), 1.0);
    p->x[0] = ttt_randn(ctx, TTT_F64, TTT_DIMS(B, H, T, dk), 1.0);
    p->x[1] = ttt_div(ctx, k, ttt_sqrt(ctx, ttt_sum(ctx, ttt_mul(ctx, k, k), 1, &last, 1)));
    p->x[2] = ttt_randn(ctx, TTT_F64, TTT_DIMS(B, H, T, dv), 1.0);
    p->x[3] = ttt_sigmoid(ctx, ttt_randn(ctx, TTT_F64, TTT_DIMS(B, H, T), 2.0));
    p->x[4] = ttt_scale(ctx, ttt_rand(ctx, TTT_F64, TTT_DIMS(B, H, T), 0.0, 1.0), s->strong ? -8.0 : -0.05);
    p->x[5] = ttt_randn(ctx, TTT_F64, TTT_DIMS(B, H, dk, dv), 1.0);
    p->n = s->with_s0 ? 6 : 5;
    p->R = ttt_randn(ctx, TTT_F64, TTT_DIMS(B, H, T, dv), 1.0);
    p->Rs = ttt_randn(ctx, TTT_F64, TTT_DIMS(B, H, dk, dv), 1.0);
}

enum { FUSED, COMPOSED, RECURRENT };

/* o, s and the gradients of the shape's loss with respect to the inputs (cast to dt, as leaves) */
typedef struct {
    ttt_tensor *o, *s, *g[6];
    int fused_ran;
} result;

static int run(ttt_ctx *ctx, const shape *sh, const problem *p, int form, ttt_dtype dt, result *r) {
    memset(r, 0, sizeof *r);
    ttt__set_fused(ctx, form == FUSED);
    ttt_tensor *x[6];
    for (int i = 0; i < 6; i++) {
        x[i] = dt == TTT_F64 ? ttt_detach(ctx, p->x[i]) : ttt_cast(ctx, p->x[i], dt);
        ttt_set_requires_grad(x[i], 1);
    }
    ttt_tensor *s0 = sh->with_s0 ? x[5] : NULL;
    r->o = form == RECURRENT ? ttt_gated_delta_recurrent(ctx, x[0], x[1], x[2], x[3], x[4], s0, &r->s)
                             : ttt_gated_delta_chunked(ctx, x[0], x[1], x[2], x[3], x[4], sh->C, s0, &r->s);
    ttt__set_fused(ctx, 1);
    CHECK_MSG(r->o && r->s, "%s", ttt_error(ctx));
    if (!r->o || !r->s) return TTT_ERR;
    r->fused_ran = fused_node(r->o);
    ttt_tensor *lo = ttt_sum(ctx, ttt_mul(ctx, r->o, ttt_cast(ctx, p->R, dt)), 0, NULL, 0);
    ttt_tensor *ls = ttt_sum(ctx, ttt_mul(ctx, r->s, ttt_cast(ctx, p->Rs, r->s->dtype)), 0, NULL, 0);
    ttt_tensor *loss = sh->loss == 1 ? lo : sh->loss == 2 ? ls : ttt_add(ctx, lo, ls);
    ttt__set_fused(ctx, form == FUSED);
    const int rc = ttt_grad(ctx, 1, &loss, NULL, p->n, x, r->g, 0);
    ttt__set_fused(ctx, 1);
    CHECK_MSG(rc == TTT_OK, "%s", ttt_error(ctx));
    return rc;
}

static const char *const NAMES[6] = {"q", "k", "v", "beta", "g", "s0"};

/* the largest relative difference over o, s and every gradient */
static double compare(ttt_ctx *ctx, const shape *sh, const result *a, const result *b, const char *what, double tol) {
    double worst = 0;
    struct {
        const char *name;
        const ttt_tensor *x, *y;
    } pairs[8] = {{"o", a->o, b->o}, {"s", a->s, b->s}};
    int n = 2;
    for (int i = 0; i < (sh->with_s0 ? 6 : 5); i++) pairs[n].name = NAMES[i], pairs[n].x = a->g[i], pairs[n++].y = b->g[i];
    for (int i = 0; i < n; i++) {
        const double e = rel_floor(ctx, pairs[i].x, pairs[i].y, 1e-3);
        CHECK_MSG(e < tol, "%s, B %lld H %lld T %lld dk %lld dv %lld C %lld s0 %d strong %d loss %d: %s differs by %.3g",
                  what, (long long)sh->B, (long long)sh->H, (long long)sh->T, (long long)sh->dk, (long long)sh->dv,
                  (long long)sh->C, sh->with_s0, sh->strong, sh->loss, pairs[i].name, e);
        worst = fmax(worst, e);
    }
    return worst;
}

static void test_against_references(ttt_ctx *ctx) {
    static const shape SHAPES[] = {
        {2, 3, 37, 5, 7, 8, 1, 1, 0},   {1, 2, 64, 16, 16, 16, 0, 0, 0}, {2, 1, 5, 4, 3, 64, 1, 0, 1},
        {1, 1, 100, 8, 4, 32, 1, 1, 2}, {1, 2, 130, 32, 48, 64, 1, 0, 0}, {1, 1, 1, 3, 2, 4, 1, 1, 0},
        {2, 2, 45, 6, 6, 4, 0, 1, 1},   {1, 3, 77, 12, 5, 16, 1, 0, 2},
    };
    double w_comp = 0, w_rec = 0, w_32 = 0, w_32c = 0;
    for (size_t si = 0; si < sizeof SHAPES / sizeof SHAPES[0]; si++) {
        const shape *sh = &SHAPES[si];
        problem p;
        make(ctx, sh, &p);
        result f, c, r, f32, c32;
        if (run(ctx, sh, &p, FUSED, TTT_F64, &f) || run(ctx, sh, &p, COMPOSED, TTT_F64, &c) ||
            run(ctx, sh, &p, RECURRENT, TTT_F64, &r) || run(ctx, sh, &p, FUSED, TTT_F32, &f32) ||
            run(ctx, sh, &p, COMPOSED, TTT_F32, &c32))
            return;
        CHECK_MSG(f.fused_ran && f32.fused_ran && !c.fused_ran && !c32.fused_ran, "fused %d/%d composed %d/%d",
                  f.fused_ran, f32.fused_ran, c.fused_ran, c32.fused_ran);
        w_comp = fmax(w_comp, compare(ctx, sh, &f, &c, "f64 fused vs composed", 1e-12));
        w_rec = fmax(w_rec, compare(ctx, sh, &f, &r, "f64 fused vs recurrent", 1e-12));
        w_32 = fmax(w_32, compare(ctx, sh, &f32, &r, "f32 fused vs f64 recurrent", 2e-5));
        w_32c = fmax(w_32c, compare(ctx, sh, &c32, &r, "f32 composed vs f64 recurrent", 1e-3)); /* for scale */
        ttt_step_reset(ctx);
    }
    printf("fused core, 8 shapes, o + S + 6 gradients: f64 vs composed %.2e, f64 vs recurrent %.2e; "
           "f32 vs f64 recurrent %.2e (the composed core in f32: %.2e)\n",
           w_comp, w_rec, w_32, w_32c);
}

/* central differences of sum(o R) + sum(s Rs) in f64, through the fused forward, against the fused backward */
static void test_finite_differences(ttt_ctx *ctx) {
    const shape sh = {1, 2, 5, 3, 2, 2, 1, 1, 0};
    problem p;
    make(ctx, &sh, &p);
    result f;
    if (run(ctx, &sh, &p, FUSED, TTT_F64, &f)) return;
    CHECK(f.fused_ran);
    double *xs[6], *R = host(ctx, p.R), *Rs = host(ctx, p.Rs), worst = 0;
    for (int i = 0; i < 6; i++) xs[i] = host(ctx, p.x[i]);
    ttt_no_grad_begin(ctx);
    for (int i = 0; i < 6; i++) {
        double *g = host(ctx, f.g[i]);
        for (int64_t j = 0; j < ttt_numel(p.x[i]); j++) {
            double val[2];
            for (int side = 0; side < 2; side++) {
                const ttt_mark_t m = ttt_mark(ctx);
                const double x0 = xs[i][j];
                xs[i][j] = x0 + (side ? -1e-6 : 1e-6);
                ttt_tensor *x[6];
                for (int a = 0; a < 6; a++) x[a] = ttt_from_host(ctx, TTT_F64, p.x[a]->ndim, p.x[a]->shape, xs[a]);
                xs[i][j] = x0;
                ttt_tensor *s = NULL, *o = ttt_gated_delta_chunked(ctx, x[0], x[1], x[2], x[3], x[4], sh.C, x[5], &s);
                double *ho = o ? host(ctx, o) : NULL, *hs = s ? host(ctx, s) : NULL, l = 0;
                for (int64_t e = 0; ho && e < ttt_numel(o); e++) l += ho[e] * R[e];
                for (int64_t e = 0; hs && e < ttt_numel(s); e++) l += hs[e] * Rs[e];
                val[side] = ho && hs ? l : NAN;
                free(ho), free(hs);
                ttt_release(ctx, m);
            }
            /* central differences of a loss of size ~1 with step 1e-6: ~1e-10 of rounding, ~1e-12 of truncation */
            const double fd = (val[0] - val[1]) / 2e-6, e = fabs(fd - g[j]) / (1 + fabs(fd));
            CHECK_MSG(e < 1e-8, "d/d%s[%lld]: fused %.12g, finite differences %.12g", NAMES[i], (long long)j, g[j], fd);
            worst = fmax(worst, e);
        }
        free(g);
    }
    ttt_no_grad_end(ctx);
    for (int i = 0; i < 6; i++) free(xs[i]);
    free(R), free(Rs);
    printf("fused core vs central differences (f64, T 5, chunk 2, 6 inputs): worst |fd - grad| / (1 + |fd|) %.2e\n", worst);
    ttt_step_reset(ctx);
}

/* d/dx <grad_x L, u> through the fused op (its VJP composes under create_graph) == the composed path's */
static void test_second_order(ttt_ctx *ctx) {
    const shape sh = {1, 2, 11, 3, 4, 4, 1, 1, 0};
    problem p;
    make(ctx, &sh, &p);
    ttt_tensor *u[6], *hv[2][6];
    for (int i = 0; i < 6; i++) u[i] = ttt_randn(ctx, TTT_F64, p.x[i]->ndim, p.x[i]->shape, 1.0);
    for (int fused = 0; fused < 2; fused++) {
        ttt__set_fused(ctx, fused);
        ttt_tensor *x[6];
        for (int i = 0; i < 6; i++) {
            x[i] = ttt_detach(ctx, p.x[i]);
            ttt_set_requires_grad(x[i], 1);
        }
        ttt_tensor *s = NULL, *o = ttt_gated_delta_chunked(ctx, x[0], x[1], x[2], x[3], x[4], sh.C, x[5], &s);
        CHECK(o && fused_node(o) == fused);
        ttt_tensor *loss = ttt_add(ctx, ttt_sum(ctx, ttt_mul(ctx, o, p.R), 0, NULL, 0),
                                   ttt_sum(ctx, ttt_mul(ctx, ttt_mul(ctx, s, s), p.Rs), 0, NULL, 0));
        ttt_tensor *g[6], *phi = NULL;
        CHECK(ttt_grad(ctx, 1, &loss, NULL, 6, x, g, 1) == TTT_OK);
        for (int i = 0; i < 6; i++) {
            ttt_tensor *t = ttt_sum(ctx, ttt_mul(ctx, g[i], u[i]), 0, NULL, 0);
            phi = phi ? ttt_add(ctx, phi, t) : t;
        }
        CHECK_MSG(ttt_grad(ctx, 1, &phi, NULL, 6, x, hv[fused], 0) == TTT_OK, "%s", ttt_error(ctx));
    }
    ttt__set_fused(ctx, 1);
    double worst = 0;
    for (int i = 0; i < 6; i++) worst = fmax(worst, rel_diff(ctx, hv[1][i], hv[0][i]));
    CHECK_MSG(worst < 1e-12, "second order, fused vs composed: %.3g", worst);
    printf("second order (Hessian-vector product) through the fused op vs composed: %.2e\n", worst);
    ttt_step_reset(ctx);
}

/* The block: prefill (chunked) then decode steps of one token (the fused core with one chunk of one token)
 * give what the composed paths give (prefill chunked, decode by the recurrent step), state included. */
static void test_block_decode(ttt_ctx *ctx) {
    const int64_t B = 2, T = 11, D = 16;
    ttt_gdn l;
    ttt_gdn_config c = ttt_gdn_config_default(D, 2);
    c.chunk = 4, c.head_v_dim = 5, c.init_std = 0.3, c.out_std = 0.3;
    CHECK(ttt_gdn_init(ctx, &l, &c, TTT_F64) == TTT_OK);
    ttt_tensor *x = ttt_randn(ctx, TTT_F64, TTT_DIMS(B, T, D), 1.0), *y[2], *s[2];
    for (int fused = 0; fused < 2; fused++) {
        ttt__set_fused(ctx, fused);
        ttt_gdn_state st;
        CHECK(ttt_gdn_state_init(ctx, &l, B, &st) == TTT_OK);
        ttt_tensor *pieces[16];
        int np = 0;
        pieces[np++] = ttt_gdn_forward(ctx, &l, ttt_slice(ctx, x, 1, 0, 6, 1), &st);
        for (int64_t t = 6; t < T; t++) pieces[np++] = ttt_gdn_decode(ctx, &l, ttt_slice(ctx, x, 1, t, t + 1, 1), &st);
        y[fused] = ttt_concat(ctx, np, pieces, 1);
        s[fused] = ttt_detach(ctx, st.s);
        s[fused] = s[fused] ? ttt_mul(ctx, s[fused], ttt_scalar(ctx, TTT_F64, 1.0)) : NULL; /* a copy: st is freed */
        CHECK_MSG(y[fused] && s[fused], "%s", ttt_error(ctx));
        ttt_gdn_state_free(ctx, &st);
    }
    ttt__set_fused(ctx, 1);
    const double e = fmax(rel_diff(ctx, y[1], y[0]), rel_diff(ctx, s[1], s[0]));
    CHECK_MSG(e < 1e-12, "block prefill + decode, fused vs composed: %.3g", e);
    printf("Gated DeltaNet block, prefill 6 + 5 decode steps, fused vs composed (output and state): %.2e\n", e);
    ttt_gdn_free(ctx, &l);
    ttt_step_reset(ctx);
}

/* TTT_FUSED=0 when a context is made turns the fused core off */
static void test_switch(void) {
    setenv("TTT_FUSED", "0", 1);
    ttt_ctx_config cfg = {.seed = 3, .threads = 1};
    ttt_ctx *off = ttt_ctx_new(&cfg);
    unsetenv("TTT_FUSED");
    ttt_ctx *on = ttt_ctx_new(&cfg);
    CHECK(off && on);
    if (!off || !on) return;
    ttt_tensor *o[2];
    ttt_ctx *ctxs[2] = {off, on};
    for (int c = 0; c < 2; c++) {
        ttt_ctx *ctx = ctxs[c];
        ttt_tensor *q = ttt_randn(ctx, TTT_F64, TTT_DIMS(1, 2, 9, 4), 1.0);
        ttt_tensor *b = ttt_full(ctx, TTT_F64, TTT_DIMS(1, 2, 9), 0.5), *g = ttt_full(ctx, TTT_F64, TTT_DIMS(1, 2, 9), -0.1);
        ttt_set_requires_grad(q, 1);
        o[c] = ttt_gated_delta_chunked(ctx, q, ttt_scale(ctx, q, 0.3), q, b, g, 4, NULL, NULL);
        CHECK(o[c] != NULL);
    }
    CHECK_MSG(!fused_node(o[0]) && fused_node(o[1]), "TTT_FUSED=0: fused %d; default: fused %d", fused_node(o[0]),
              fused_node(o[1]));
    double *a = host(off, o[0]), *b = host(on, o[1]), d = 0;
    for (int64_t i = 0; i < ttt_numel(o[0]); i++) d = fmax(d, fabs(a[i] - b[i]));
    free(a), free(b);
    CHECK_MSG(d < 1e-12, "TTT_FUSED=0 vs fused: %.3g", d);
    ttt_ctx_free(off);
    ttt_ctx_free(on);
}

int main(void) {
    ttt_ctx_config cfg = {.seed = 11, .threads = 2};
    ttt_ctx *ctx = ttt_ctx_new(&cfg);
    CHECK(ctx != NULL);
    if (!ctx) TEST_MAIN_END();
    test_against_references(ctx);
    test_finite_differences(ctx);
    test_second_order(ctx);
    test_block_decode(ctx);
    ttt_ctx_free(ctx);
    test_switch();
    TEST_MAIN_END();
}
