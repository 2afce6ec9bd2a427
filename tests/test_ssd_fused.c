/* The fused chunkwise decayed linear recurrence (composed/ssd.c, the backend's ssd_chunk_fwd / ssd_chunk_bwd)
 * behind ttt_ssd_chunked (Mamba 2's SSD) and ttt_linear_attention_chunked (no gates; the normaliser as one
 * more value column), which take it unless TTT_FUSED=0:
 *   - outputs, final states (S, and z for linear attention) and the gradients with respect to every input
 *     against the composed chunkwise core (fused paths off) and the recurrent core: f64 to 1e-12, f32
 *     against the f64 recurrence to 2e-5; T not a multiple of the chunk, T shorter than it, T = 1, dk != dv,
 *     with and without the initial state, strong (down to e^-8 per token) and weak gates, losses on the
 *     output only, the state only and both (the backward kernel with either cotangent absent);
 *   - finite differences of the fused gradients in f64 on a tiny shape;
 *   - second order (create_graph through the fused op, whose VJP differentiates the composed core) equals
 *     the composed path's;
 *   - the switch: TTT_FUSED=0 composes the core, the default records one fused node. */
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

/* max |a - b| / max(max |b|, floor) */
static double rel_floor(ttt_ctx *ctx, const ttt_tensor *a, const ttt_tensor *b, double floor) {
    if (!a || !b || ttt_numel(a) != ttt_numel(b)) return INFINITY;
    double *x = host(ctx, a), *y = host(ctx, b), d = 0, s = 0;
    for (int64_t i = 0; i < ttt_numel(a); i++) d = fmax(d, fabs(x[i] - y[i])), s = fmax(s, fabs(y[i]));
    free(x), free(y);
    return isnan(d) ? INFINITY : d / fmax(s, floor);
}

/* the fused node is the core's: for linear attention it sits under the normalisation's slices and division */
static int has_fused(const ttt_tensor *t, int depth) {
    if (!t || !t->node || depth > 8) return 0;
    if (!strcmp(t->node->op, "ssd_chunked")) return 1;
    for (int i = 0; i < t->node->n_in; i++)
        if (has_fused(t->node->in[i], depth + 1)) return 1;
    return 0;
}

enum { SSD, LINATTN };
enum { FUSED, COMPOSED, RECURRENT };

typedef struct {
    int kind;
    int64_t B, H, T, dk, dv, C;
    int with_s0, strong, loss; /* loss: 0 all terms, 1 the output only, 2 the states only */
} shape;

/* SSD: q, k, v, g, s0; linear attention: q, k (positive, as after elu + 1), v, s0, z0. R* the loss weights. */
typedef struct {
    ttt_tensor *x[5], *R, *Rs, *Rz;
    int n;
} problem;

static void make(ttt_ctx *ctx, const shape *s, problem *p) {
    const int64_t B = s->B, H = s->H, T = s->T, dk = s->dk, dv = s->dv;
    if (s->kind == SSD) {
        p->x[0] = ttt_randn(ctx, TTT_F64, TTT_DIMS(B, H, T, dk), 1.0);
        p->x[1] = ttt_randn(ctx, TTT_F64, TTT_DIMS(B, H, T, dk), 0.5);
        p->x[3] = ttt_scale(ctx, ttt_rand(ctx, TTT_F64, TTT_DIMS(B, H, T), 0.0, 1.0), s->strong ? -8.0 : -0.05);
        p->x[4] = ttt_randn(ctx, TTT_F64, TTT_DIMS(B, H, dk, dv), 1.0);
    } else {
        p->x[0] = ttt_elu1(ctx, ttt_randn(ctx, TTT_F64, TTT_DIMS(B, H, T, dk), 1.0));
        p->x[1] = ttt_elu1(ctx, ttt_randn(ctx, TTT_F64, TTT_DIMS(B, H, T, dk), 1.0));
        p->x[3] = ttt_randn(ctx, TTT_F64, TTT_DIMS(B, H, dk, dv), 1.0);
        p->x[4] = ttt_rand(ctx, TTT_F64, TTT_DIMS(B, H, dk), 0.5, 2.0); /* a positive normaliser */
    }
    p->x[2] = ttt_randn(ctx, TTT_F64, TTT_DIMS(B, H, T, dv), 1.0);
    p->n = s->kind == SSD ? (s->with_s0 ? 5 : 4) : (s->with_s0 ? 5 : 3);
    p->R = ttt_randn(ctx, TTT_F64, TTT_DIMS(B, H, T, dv), 1.0);
    p->Rs = ttt_randn(ctx, TTT_F64, TTT_DIMS(B, H, dk, dv), 1.0);
    p->Rz = ttt_randn(ctx, TTT_F64, TTT_DIMS(B, H, dk), 1.0);
}

typedef struct {
    ttt_tensor *o, *s, *z, *g[5];
    int fused_ran;
} result;

/* the core on x (SSD or linear attention, in the given form) */
static ttt_tensor *core(ttt_ctx *ctx, const shape *sh, int form, ttt_tensor *const *x, ttt_tensor **s, ttt_tensor **z) {
    if (sh->kind == SSD) {
        ttt_tensor *s0 = sh->with_s0 ? x[4] : NULL;
        return form == RECURRENT ? ttt_ssd_recurrent(ctx, x[0], x[1], x[2], x[3], s0, s)
                                 : ttt_ssd_chunked(ctx, x[0], x[1], x[2], x[3], sh->C, s0, s);
    }
    ttt_tensor *s0 = sh->with_s0 ? x[3] : NULL, *z0 = sh->with_s0 ? x[4] : NULL;
    return form == RECURRENT ? ttt_linear_attention_recurrent(ctx, x[0], x[1], x[2], 1e-6, s0, z0, s, z)
                             : ttt_linear_attention_chunked(ctx, x[0], x[1], x[2], sh->C, 1e-6, s0, z0, s, z);
}

static ttt_tensor *loss_of(ttt_ctx *ctx, const shape *sh, const problem *p, const result *r, ttt_dtype dt) {
    ttt_tensor *lo = ttt_sum(ctx, ttt_mul(ctx, r->o, ttt_cast(ctx, p->R, dt)), 0, NULL, 0);
    ttt_tensor *ls = ttt_sum(ctx, ttt_mul(ctx, r->s, ttt_cast(ctx, p->Rs, r->s->dtype)), 0, NULL, 0);
    if (r->z) ls = ttt_add(ctx, ls, ttt_sum(ctx, ttt_mul(ctx, r->z, ttt_cast(ctx, p->Rz, r->z->dtype)), 0, NULL, 0));
    return sh->loss == 1 ? lo : sh->loss == 2 ? ls : ttt_add(ctx, lo, ls);
}

static int run(ttt_ctx *ctx, const shape *sh, const problem *p, int form, ttt_dtype dt, result *r) {
    memset(r, 0, sizeof *r);
    ttt__set_fused(ctx, form == FUSED);
    ttt_tensor *x[5];
    for (int i = 0; i < 5; i++) {
        x[i] = dt == TTT_F64 ? ttt_detach(ctx, p->x[i]) : ttt_cast(ctx, p->x[i], dt);
        ttt_set_requires_grad(x[i], 1);
    }
    r->o = core(ctx, sh, form, x, &r->s, sh->kind == LINATTN ? &r->z : NULL);
    ttt__set_fused(ctx, 1);
    CHECK_MSG(r->o && r->s, "%s", ttt_error(ctx));
    if (!r->o || !r->s) return TTT_ERR;
    r->fused_ran = has_fused(r->o, 0);
    ttt_tensor *loss = loss_of(ctx, sh, p, r, dt);
    ttt__set_fused(ctx, form == FUSED);
    const int rc = ttt_grad(ctx, 1, &loss, NULL, p->n, x, r->g, 0);
    ttt__set_fused(ctx, 1);
    CHECK_MSG(rc == TTT_OK, "%s", ttt_error(ctx));
    return rc;
}

static const char *const NAMES[2][5] = {{"q", "k", "v", "g", "s0"}, {"q", "k", "v", "s0", "z0"}};

static double compare(ttt_ctx *ctx, const shape *sh, const problem *p, const result *a, const result *b,
                      const char *what, double tol) {
    double worst = 0;
    struct {
        const char *name;
        const ttt_tensor *x, *y;
    } pairs[8] = {{"o", a->o, b->o}, {"s", a->s, b->s}};
    int n = 2;
    if (sh->kind == LINATTN) pairs[n].name = "z", pairs[n].x = a->z, pairs[n++].y = b->z;
    for (int i = 0; i < p->n; i++)
        pairs[n].name = NAMES[sh->kind][i], pairs[n].x = a->g[i], pairs[n++].y = b->g[i];
    for (int i = 0; i < n; i++) {
        const double e = rel_floor(ctx, pairs[i].x, pairs[i].y, 1e-3);
        CHECK_MSG(e < tol, "%s %s, B %lld H %lld T %lld dk %lld dv %lld C %lld s0 %d strong %d loss %d: %s differs by %.3g",
                  sh->kind == SSD ? "ssd" : "linear attention", what, (long long)sh->B, (long long)sh->H,
                  (long long)sh->T, (long long)sh->dk, (long long)sh->dv, (long long)sh->C, sh->with_s0, sh->strong,
                  sh->loss, pairs[i].name, e);
        worst = fmax(worst, e);
    }
    return worst;
}

static void test_against_references(ttt_ctx *ctx, int kind) {
    static const shape SHAPES[] = {
        {0, 2, 3, 37, 5, 7, 8, 1, 1, 0},   {0, 1, 2, 64, 16, 16, 16, 0, 0, 0}, {0, 2, 1, 5, 4, 3, 64, 1, 0, 1},
        {0, 1, 1, 100, 8, 4, 32, 1, 1, 2}, {0, 1, 2, 130, 32, 48, 64, 1, 0, 0}, {0, 1, 1, 1, 3, 2, 4, 1, 1, 0},
        {0, 2, 2, 45, 6, 6, 4, 0, 1, 1},   {0, 1, 3, 77, 12, 5, 16, 1, 0, 2},
    };
    const int n_shapes = (int)(sizeof SHAPES / sizeof SHAPES[0]);
    double w_comp = 0, w_rec = 0, w_32 = 0, w_32c = 0;
    for (int si = 0; si < n_shapes; si++) {
        shape sh = SHAPES[si];
        sh.kind = kind;
        problem p;
        make(ctx, &sh, &p);
        result f, c, r, f32, c32;
        if (run(ctx, &sh, &p, FUSED, TTT_F64, &f) || run(ctx, &sh, &p, COMPOSED, TTT_F64, &c) ||
            run(ctx, &sh, &p, RECURRENT, TTT_F64, &r) || run(ctx, &sh, &p, FUSED, TTT_F32, &f32) ||
            run(ctx, &sh, &p, COMPOSED, TTT_F32, &c32))
            return;
        CHECK_MSG(f.fused_ran && f32.fused_ran && !c.fused_ran && !c32.fused_ran, "fused %d/%d composed %d/%d",
                  f.fused_ran, f32.fused_ran, c.fused_ran, c32.fused_ran);
        w_comp = fmax(w_comp, compare(ctx, &sh, &p, &f, &c, "f64 fused vs composed", 1e-12));
        w_rec = fmax(w_rec, compare(ctx, &sh, &p, &f, &r, "f64 fused vs recurrent", 1e-12));
        w_32 = fmax(w_32, compare(ctx, &sh, &p, &f32, &r, "f32 fused vs f64 recurrent", 2e-5));
        w_32c = fmax(w_32c, compare(ctx, &sh, &p, &c32, &r, "f32 composed vs f64 recurrent", 1e-3));
        ttt_step_reset(ctx);
    }
    printf("%s, fused core, %d shapes, outputs, states, gradients: f64 vs composed %.2e, f64 vs recurrent %.2e; "
           "f32 vs f64 recurrent %.2e (the composed core in f32: %.2e)\n",
           kind == SSD ? "ssd" : "linear attention", n_shapes, w_comp, w_rec, w_32, w_32c);
}

/* central differences of the loss in f64 through the fused forward, against the fused backward */
static void test_finite_differences(ttt_ctx *ctx, int kind) {
    const shape sh = {kind, 1, 2, 5, 3, 2, 2, 1, 1, 0};
    problem p;
    make(ctx, &sh, &p);
    result f;
    if (run(ctx, &sh, &p, FUSED, TTT_F64, &f)) return;
    CHECK(f.fused_ran);
    double *xs[5], worst = 0;
    for (int i = 0; i < 5; i++) xs[i] = host(ctx, p.x[i]);
    ttt_no_grad_begin(ctx);
    for (int i = 0; i < p.n; i++) {
        double *g = host(ctx, f.g[i]);
        for (int64_t j = 0; j < ttt_numel(p.x[i]); j++) {
            double val[2];
            for (int side = 0; side < 2; side++) {
                const ttt_mark_t m = ttt_mark(ctx);
                const double x0 = xs[i][j];
                xs[i][j] = x0 + (side ? -1e-6 : 1e-6);
                ttt_tensor *x[5];
                for (int a = 0; a < 5; a++) x[a] = ttt_from_host(ctx, TTT_F64, p.x[a]->ndim, p.x[a]->shape, xs[a]);
                xs[i][j] = x0;
                result r = {0};
                r.o = core(ctx, &sh, FUSED, x, &r.s, kind == LINATTN ? &r.z : NULL);
                ttt_tensor *l = r.o && r.s ? loss_of(ctx, &sh, &p, &r, TTT_F64) : NULL;
                double *hl = l ? host(ctx, l) : NULL;
                val[side] = hl ? hl[0] : NAN;
                free(hl);
                ttt_release(ctx, m);
            }
            const double fd = (val[0] - val[1]) / 2e-6, e = fabs(fd - g[j]) / (1 + fabs(fd));
            CHECK_MSG(e < 1e-8, "%s d/d%s[%lld]: fused %.12g, finite differences %.12g",
                      kind == SSD ? "ssd" : "linear attention", NAMES[kind][i], (long long)j, g[j], fd);
            worst = fmax(worst, e);
        }
        free(g);
    }
    ttt_no_grad_end(ctx);
    for (int i = 0; i < 5; i++) free(xs[i]);
    printf("%s, fused core vs central differences (f64, T 5, chunk 2): worst |fd - grad| / (1 + |fd|) %.2e\n",
           kind == SSD ? "ssd" : "linear attention", worst);
    ttt_step_reset(ctx);
}

/* d/dx <grad_x L, u> through the fused op (its VJP composes under create_graph) == the composed path's */
static void test_second_order(ttt_ctx *ctx, int kind) {
    const shape sh = {kind, 1, 2, 11, 3, 4, 4, 1, 1, 0};
    problem p;
    make(ctx, &sh, &p);
    ttt_tensor *u[5], *hv[2][5];
    for (int i = 0; i < 5; i++) u[i] = ttt_randn(ctx, TTT_F64, p.x[i]->ndim, p.x[i]->shape, 1.0);
    for (int fused = 0; fused < 2; fused++) {
        ttt__set_fused(ctx, fused);
        ttt_tensor *x[5];
        for (int i = 0; i < 5; i++) {
            x[i] = ttt_detach(ctx, p.x[i]);
            ttt_set_requires_grad(x[i], 1);
        }
        ttt_tensor *s = NULL, *z = NULL, *o = core(ctx, &sh, FUSED, x, &s, kind == LINATTN ? &z : NULL);
        CHECK(o && has_fused(o, 0) == fused);
        ttt_tensor *loss = ttt_add(ctx, ttt_sum(ctx, ttt_mul(ctx, o, p.R), 0, NULL, 0),
                                   ttt_sum(ctx, ttt_mul(ctx, ttt_mul(ctx, s, s), p.Rs), 0, NULL, 0));
        ttt_tensor *g[5], *phi = NULL;
        CHECK(ttt_grad(ctx, 1, &loss, NULL, p.n, x, g, 1) == TTT_OK);
        for (int i = 0; i < p.n; i++) {
            ttt_tensor *t = ttt_sum(ctx, ttt_mul(ctx, g[i], u[i]), 0, NULL, 0);
            phi = phi ? ttt_add(ctx, phi, t) : t;
        }
        CHECK_MSG(ttt_grad(ctx, 1, &phi, NULL, p.n, x, hv[fused], 0) == TTT_OK, "%s", ttt_error(ctx));
    }
    ttt__set_fused(ctx, 1);
    double worst = 0;
    for (int i = 0; i < p.n; i++) worst = fmax(worst, rel_floor(ctx, hv[1][i], hv[0][i], 1e-300));
    CHECK_MSG(worst < 1e-12, "%s second order, fused vs composed: %.3g", kind == SSD ? "ssd" : "linear attention", worst);
    printf("%s, second order (Hessian-vector product) through the fused op vs composed: %.2e\n",
           kind == SSD ? "ssd" : "linear attention", worst);
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
    ttt_tensor *o[2][2];
    ttt_ctx *ctxs[2] = {off, on};
    for (int c = 0; c < 2; c++) {
        ttt_ctx *ctx = ctxs[c];
        ttt_tensor *q = ttt_rand(ctx, TTT_F64, TTT_DIMS(1, 2, 9, 4), 0.1, 1.0);
        ttt_tensor *g = ttt_full(ctx, TTT_F64, TTT_DIMS(1, 2, 9), -0.1);
        ttt_set_requires_grad(q, 1);
        o[c][0] = ttt_ssd_chunked(ctx, q, ttt_scale(ctx, q, 0.3), q, g, 4, NULL, NULL);
        o[c][1] = ttt_linear_attention_chunked(ctx, q, ttt_scale(ctx, q, 0.3), q, 4, 1e-6, NULL, NULL, NULL, NULL);
        CHECK(o[c][0] && o[c][1]);
    }
    for (int w = 0; w < 2; w++) {
        CHECK_MSG(!has_fused(o[0][w], 0) && has_fused(o[1][w], 0), "%s: TTT_FUSED=0: fused %d; default: fused %d",
                  w ? "linear attention" : "ssd", has_fused(o[0][w], 0), has_fused(o[1][w], 0));
        double *a = host(off, o[0][w]), *b = host(on, o[1][w]), d = 0;
        for (int64_t i = 0; i < ttt_numel(o[0][w]); i++) d = fmax(d, fabs(a[i] - b[i]));
        free(a), free(b);
        CHECK_MSG(d < 1e-12, "TTT_FUSED=0 vs fused: %.3g", d);
    }
    ttt_ctx_free(off);
    ttt_ctx_free(on);
}

int main(void) {
    ttt_ctx_config cfg = {.seed = 13, .threads = 2};
    ttt_ctx *ctx = ttt_ctx_new(&cfg);
    CHECK(ctx != NULL);
    if (!ctx) TEST_MAIN_END();
    for (int kind = SSD; kind <= LINATTN; kind++) {
        test_against_references(ctx, kind);
        test_finite_differences(ctx, kind);
        test_second_order(ctx, kind);
    }
    ttt_ctx_free(ctx);
    test_switch();
    TEST_MAIN_END();
}
