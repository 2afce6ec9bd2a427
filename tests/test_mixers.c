/* The linear-time mixers (include/ttt/mixers.h): causal linear attention, Gated DeltaNet and
 * Mamba 2.
 *   - against an independent PyTorch float64 implementation, token by token from the papers
 *     (bench/mixers/torch_mixers.py fixture): outputs, final states, gradients with respect
 *     to inputs, states and every block parameter; relative error < 1e-11;
 *   - chunkwise == recurrent for several T and chunk sizes (T not a multiple of the chunk,
 *     strong and weak decays);
 *   - the blocks: prefill in pieces and token-by-token decode == one forward pass;
 *   - argument errors are messages.
 * Finite-difference gradients of both cores at orders 1 and 2 are gradcheck cases
 * ("linear_attention(chunked)", "gated_delta(chunked)", "ssd(chunked)", tests/test_gradcheck.c). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ttt/ttt.h"

static double *host(ttt_ctx *ctx, const ttt_tensor *t) {
    double *h = malloc(sizeof(double) * (size_t)(ttt_numel(t) + 1));
    if (ttt_copy_to_host(ctx, t, h, TTT_F64) != TTT_OK) h[0] = NAN;
    return h;
}

/* max |a - b| / max |b| */
static double rel_diff(ttt_ctx *ctx, const ttt_tensor *a, const ttt_tensor *b) {
    if (!a || !b || ttt_numel(a) != ttt_numel(b)) return INFINITY;
    double *x = host(ctx, a), *y = host(ctx, b), d = 0, s = 0;
    for (int64_t i = 0; i < ttt_numel(a); i++) d = fmax(d, fabs(x[i] - y[i])), s = fmax(s, fabs(y[i]));
    free(x), free(y);
    return isnan(d) ? INFINITY : d / fmax(s, 1e-300);
}

static ttt_tensor *randn(ttt_ctx *ctx, int ndim, const int64_t *shape, double std) {
    return ttt_randn(ctx, TTT_F64, ndim, shape, std);
}

/* ---- PyTorch fixture ---------------------------------------------------------------------------- */

#ifdef TTT_HAVE_JSONC /* the fixture is a safetensors file, whose header needs json-c */
static char fixture_path[4096];

static void find_fixture(void) {
    static const char leaf[] = "/tests/fixtures/mixers_torch_fixture.safetensors";
    snprintf(fixture_path, sizeof fixture_path - sizeof leaf, "%s", __FILE__);
    char *cut = strstr(fixture_path, "/tests/test_mixers.c");
    if (cut) strcpy(cut, leaf);
    else snprintf(fixture_path, sizeof fixture_path, ".%s", leaf);
}

/* A step tensor of the given shape filled from the fixture's `name`. */
static ttt_tensor *load(ttt_ctx *ctx, const char *name, int ndim, const int64_t *shape) {
    ttt_tensor *t = ttt_zeros(ctx, TTT_F64, ndim, shape);
    ttt_named_tensor nt = {name, t};
    int rc = t ? ttt_load_safetensors(ctx, fixture_path, 1, &nt, NULL) : TTT_ERR;
    CHECK_MSG(rc == TTT_OK, "fixture tensor %s: %s", name, ttt_error(ctx));
    return rc == TTT_OK ? t : NULL;
}
#define LOAD(name, ...) load(ctx, name, TTT_DIMS(__VA_ARGS__))

static const double TOL = 1e-11;

static void expect_close(ttt_ctx *ctx, const char *what, const ttt_tensor *got, const ttt_tensor *want,
                         double *worst) {
    const double r = rel_diff(ctx, got, want);
    CHECK_MSG(r < TOL, "%s differs from PyTorch: relative %.3g", what, r);
    if (r > *worst) *worst = r;
}

/* Shapes as in bench/mixers/torch_mixers.py fixture(). */
static void fixture_linear_attention_core(ttt_ctx *ctx) {
    const int64_t B = 2, H = 3, T = 21, dk = 5, dv = 4;
    ttt_tensor *q = LOAD("la_core.q", B, H, T, dk), *k = LOAD("la_core.k", B, H, T, dk),
               *v = LOAD("la_core.v", B, H, T, dv), *s0 = LOAD("la_core.s0", B, H, dk, dv),
               *z0 = LOAD("la_core.z0", B, H, dk);
    ttt_tensor *R = LOAD("la_core.R", B, H, T, dv), *Rs = LOAD("la_core.Rs", B, H, dk, dv),
               *Rz = LOAD("la_core.Rz", B, H, dk);
    ttt_tensor *in[5] = {q, k, v, s0, z0};
    const char *names[5] = {"q", "k", "v", "s0", "z0"};
    for (int i = 0; i < 5; i++) ttt_set_requires_grad(in[i], 1);
    for (int form = 0; form < 3; form++) { /* chunk 4, chunk 64 (one chunk), recurrent */
        ttt_tensor *s = NULL, *z = NULL;
        ttt_tensor *o = form == 2 ? ttt_linear_attention_recurrent(ctx, q, k, v, 1e-6, s0, z0, &s, &z)
                                  : ttt_linear_attention_chunked(ctx, q, k, v, form ? 64 : 4, 1e-6, s0, z0, &s, &z);
        CHECK_MSG(o && s && z, "%s", ttt_error(ctx));
        if (!o || !s || !z) return;
        double worst = 0;
        expect_close(ctx, "linear attention o", o, LOAD("la_core.o", B, H, T, dv), &worst);
        expect_close(ctx, "linear attention S", s, LOAD("la_core.s", B, H, dk, dv), &worst);
        expect_close(ctx, "linear attention z", z, LOAD("la_core.z", B, H, dk), &worst);
        ttt_tensor *loss = ttt_add(ctx, ttt_sum(ctx, ttt_mul(ctx, o, R), 0, NULL, 0),
                                   ttt_add(ctx, ttt_sum(ctx, ttt_mul(ctx, s, Rs), 0, NULL, 0),
                                           ttt_sum(ctx, ttt_mul(ctx, z, Rz), 0, NULL, 0)));
        ttt_tensor *g[5];
        CHECK(ttt_grad(ctx, 1, &loss, NULL, 5, in, g, 0) == TTT_OK);
        for (int i = 0; i < 5; i++) {
            char key[64];
            snprintf(key, sizeof key, "la_core.grad.%s", names[i]);
            expect_close(ctx, key, g[i], load(ctx, key, in[i]->ndim, in[i]->shape), &worst);
        }
        printf("PyTorch fixture, linear attention core (%s): max relative difference %.2e\n",
               form == 2 ? "recurrent" : form ? "chunk 64" : "chunk 4", worst);
    }
}

static void fixture_gated_delta_core(ttt_ctx *ctx) {
    const int64_t B = 2, H = 2, T = 23, dk = 6, dv = 5;
    ttt_tensor *in[6] = {LOAD("gdn_core.q", B, H, T, dk), LOAD("gdn_core.k", B, H, T, dk),
                         LOAD("gdn_core.v", B, H, T, dv), LOAD("gdn_core.beta", B, H, T),
                         LOAD("gdn_core.g", B, H, T),     LOAD("gdn_core.s0", B, H, dk, dv)};
    const char *names[6] = {"q", "k", "v", "beta", "g", "s0"};
    ttt_tensor *R = LOAD("gdn_core.R", B, H, T, dv), *Rs = LOAD("gdn_core.Rs", B, H, dk, dv);
    for (int i = 0; i < 6; i++) {
        if (!in[i]) return;
        ttt_set_requires_grad(in[i], 1);
    }
    const int64_t chunks[3] = {4, 8, 32};
    for (int form = 0; form < 4; form++) { /* three chunk sizes, then recurrent */
        ttt_tensor *s = NULL;
        ttt_tensor *o = form == 3 ? ttt_gated_delta_recurrent(ctx, in[0], in[1], in[2], in[3], in[4], in[5], &s)
                                  : ttt_gated_delta_chunked(ctx, in[0], in[1], in[2], in[3], in[4], chunks[form], in[5], &s);
        CHECK_MSG(o && s, "%s", ttt_error(ctx));
        if (!o || !s) return;
        double worst = 0;
        expect_close(ctx, "gated delta o", o, LOAD("gdn_core.o", B, H, T, dv), &worst);
        expect_close(ctx, "gated delta S", s, LOAD("gdn_core.s", B, H, dk, dv), &worst);
        ttt_tensor *loss = ttt_add(ctx, ttt_sum(ctx, ttt_mul(ctx, o, R), 0, NULL, 0),
                                   ttt_sum(ctx, ttt_mul(ctx, s, Rs), 0, NULL, 0));
        ttt_tensor *g[6];
        CHECK(ttt_grad(ctx, 1, &loss, NULL, 6, in, g, 0) == TTT_OK);
        for (int i = 0; i < 6; i++) {
            char key[64];
            snprintf(key, sizeof key, "gdn_core.grad.%s", names[i]);
            expect_close(ctx, key, g[i], load(ctx, key, in[i]->ndim, in[i]->shape), &worst);
        }
        char form_name[32];
        if (form == 3) snprintf(form_name, sizeof form_name, "recurrent");
        else snprintf(form_name, sizeof form_name, "chunk %lld", (long long)chunks[form]);
        printf("PyTorch fixture, gated delta core (%s): max relative difference %.2e\n", form_name, worst);
    }
}

static void fixture_ssd_core(ttt_ctx *ctx) {
    const int64_t B = 2, H = 2, T = 22, N = 3, P = 4;
    ttt_tensor *in[5] = {LOAD("ssd_core.q", B, H, T, N), LOAD("ssd_core.k", B, H, T, N), LOAD("ssd_core.v", B, H, T, P),
                         LOAD("ssd_core.g", B, H, T), LOAD("ssd_core.s0", B, H, N, P)};
    const char *names[5] = {"q", "k", "v", "g", "s0"};
    ttt_tensor *R = LOAD("ssd_core.R", B, H, T, P), *Rs = LOAD("ssd_core.Rs", B, H, N, P);
    for (int i = 0; i < 5; i++) {
        if (!in[i]) return;
        ttt_set_requires_grad(in[i], 1);
    }
    for (int form = 0; form < 3; form++) { /* chunks 4 and 64, then recurrent */
        ttt_tensor *s = NULL;
        ttt_tensor *o = form == 2 ? ttt_ssd_recurrent(ctx, in[0], in[1], in[2], in[3], in[4], &s)
                                  : ttt_ssd_chunked(ctx, in[0], in[1], in[2], in[3], form ? 64 : 4, in[4], &s);
        CHECK_MSG(o && s, "%s", ttt_error(ctx));
        if (!o || !s) return;
        double worst = 0;
        expect_close(ctx, "ssd o", o, LOAD("ssd_core.o", B, H, T, P), &worst);
        expect_close(ctx, "ssd S", s, LOAD("ssd_core.s", B, H, N, P), &worst);
        ttt_tensor *loss = ttt_add(ctx, ttt_sum(ctx, ttt_mul(ctx, o, R), 0, NULL, 0),
                                   ttt_sum(ctx, ttt_mul(ctx, s, Rs), 0, NULL, 0));
        ttt_tensor *g[5];
        CHECK(ttt_grad(ctx, 1, &loss, NULL, 5, in, g, 0) == TTT_OK);
        for (int i = 0; i < 5; i++) {
            char key[64];
            snprintf(key, sizeof key, "ssd_core.grad.%s", names[i]);
            expect_close(ctx, key, g[i], load(ctx, key, in[i]->ndim, in[i]->shape), &worst);
        }
        printf("PyTorch fixture, SSD core (%s): max relative difference %.2e\n",
               form == 2 ? "recurrent" : form ? "chunk 64" : "chunk 4", worst);
    }
}

/* Loads the block's parameters under prefix, runs the forward pass and compares y and the
 * gradients of sum(y R) with respect to x and every parameter. */
static void fixture_block(ttt_ctx *ctx, const char *prefix, int n, ttt_tensor **params, const char **names,
                          ttt_tensor *(*fwd)(ttt_ctx *, const void *, ttt_tensor *), const void *layer, int64_t B,
                          int64_t T, int64_t D) {
    for (int i = 0; i < n; i++) {
        char key[96];
        snprintf(key, sizeof key, "%s.%s", prefix, names[i]);
        ttt_named_tensor nt = {key, params[i]};
        CHECK_MSG(ttt_load_safetensors(ctx, fixture_path, 1, &nt, NULL) == TTT_OK, "%s", ttt_error(ctx));
    }
    char key[96];
    snprintf(key, sizeof key, "%s.x", prefix);
    ttt_tensor *x = load(ctx, key, TTT_DIMS(B, T, D));
    snprintf(key, sizeof key, "%s.R", prefix);
    ttt_tensor *R = load(ctx, key, TTT_DIMS(B, T, D));
    if (!x || !R) return;
    ttt_set_requires_grad(x, 1);
    ttt_tensor *y = fwd(ctx, layer, x);
    CHECK_MSG(y != NULL, "%s: %s", prefix, ttt_error(ctx));
    if (!y) return;
    double worst = 0;
    snprintf(key, sizeof key, "%s.y", prefix);
    expect_close(ctx, key, y, load(ctx, key, TTT_DIMS(B, T, D)), &worst);
    ttt_tensor *loss = ttt_sum(ctx, ttt_mul(ctx, y, R), 0, NULL, 0);
    ttt_tensor *wrt[16], *g[16];
    wrt[0] = x;
    for (int i = 0; i < n; i++) wrt[1 + i] = params[i];
    CHECK(ttt_grad(ctx, 1, &loss, NULL, n + 1, wrt, g, 0) == TTT_OK);
    for (int i = 0; i <= n; i++) {
        snprintf(key, sizeof key, "%s.grad.%s", prefix, i ? names[i - 1] : "x");
        expect_close(ctx, key, g[i], load(ctx, key, wrt[i]->ndim, wrt[i]->shape), &worst);
    }
    printf("PyTorch fixture, %s: output and %d gradients, max relative difference %.2e\n", prefix, n + 1, worst);
}

static ttt_tensor *la_fwd(ttt_ctx *ctx, const void *l, ttt_tensor *x) { return ttt_linattn_forward(ctx, l, x, NULL); }
static ttt_tensor *gdn_fwd(ttt_ctx *ctx, const void *l, ttt_tensor *x) { return ttt_gdn_forward(ctx, l, x, NULL); }
static ttt_tensor *m2_fwd(ttt_ctx *ctx, const void *l, ttt_tensor *x) { return ttt_mamba2_forward(ctx, l, x, NULL); }
#endif

static void test_fixture(ttt_ctx *ctx) {
#ifndef TTT_HAVE_JSONC
    (void)ctx;
    printf("PyTorch fixture: skipped (built without json-c)\n");
#else
    find_fixture();
    FILE *f = fopen(fixture_path, "rb");
    CHECK_MSG(f != NULL, "the fixture %s is missing (bench/mixers/torch_mixers.py fixture)", fixture_path);
    if (!f) return;
    fclose(f);
    fixture_linear_attention_core(ctx);
    ttt_step_reset(ctx);
    fixture_gated_delta_core(ctx);
    ttt_step_reset(ctx);
    fixture_ssd_core(ctx);
    ttt_step_reset(ctx);

    ttt_linattn la;
    ttt_linattn_config lc = ttt_linattn_config_default(12, 3);
    lc.chunk = 8;
    CHECK(ttt_linattn_init(ctx, &la, &lc, TTT_F64) == TTT_OK);
    ttt_tensor *p[TTT_GDN_PARAMS];
    const char *names[TTT_GDN_PARAMS];
    int n = ttt_linattn_params(&la, p, names, NULL);
    fixture_block(ctx, "la_block", n, p, names, la_fwd, &la, 2, 19, 12);
    ttt_linattn_free(ctx, &la);
    ttt_step_reset(ctx);

    ttt_gdn gdn;
    ttt_gdn_config gc = ttt_gdn_config_default(12, 2);
    gc.head_k_dim = 4, gc.head_v_dim = 6, gc.chunk = 8;
    CHECK(ttt_gdn_init(ctx, &gdn, &gc, TTT_F64) == TTT_OK);
    n = ttt_gdn_params(&gdn, p, names, NULL);
    fixture_block(ctx, "gdn_block", n, p, names, gdn_fwd, &gdn, 2, 19, 12);
    ttt_gdn_free(ctx, &gdn);
    ttt_step_reset(ctx);

    ttt_mamba2 m2;
    ttt_mamba2_config mc = ttt_mamba2_config_default(8);
    mc.d_state = 3, mc.head_dim = 4, mc.groups = 2, mc.chunk = 8;
    CHECK(ttt_mamba2_init(ctx, &m2, &mc, TTT_F64) == TTT_OK);
    n = ttt_mamba2_params(&m2, p, names, NULL);
    fixture_block(ctx, "m2_block", n, p, names, m2_fwd, &m2, 2, 19, 8);
    ttt_mamba2_free(ctx, &m2);
    ttt_step_reset(ctx);
#endif
}

/* ---- chunkwise == recurrent ------------------------------------------------------------------------ */

static void test_chunk_vs_recurrent(ttt_ctx *ctx) {
    const int64_t Ts[4] = {1, 7, 16, 45}, chunks[3] = {1, 4, 16};
    double worst_la = 0, worst_gdn = 0, worst_ssd = 0;
    for (int ti = 0; ti < 4; ti++) {
        const int64_t B = 2, H = 2, T = Ts[ti], dk = 4, dv = 3;
        ttt_tensor *q = ttt_elu1(ctx, randn(ctx, TTT_DIMS(B, H, T, dk), 1.0));
        ttt_tensor *k = ttt_elu1(ctx, randn(ctx, TTT_DIMS(B, H, T, dk), 1.0));
        ttt_tensor *v = randn(ctx, TTT_DIMS(B, H, T, dv), 1.0);
        ttt_tensor *kn = ttt_div(ctx, k, ttt_sqrt(ctx, ttt_sum(ctx, ttt_mul(ctx, k, k), 1, (int[]){-1}, 1)));
        ttt_tensor *beta = ttt_sigmoid(ctx, randn(ctx, TTT_DIMS(B, H, T), 2.0));
        /* decays from alpha ~ 1 to alpha ~ e^-8: G differences of hundreds within a chunk */
        ttt_tensor *g = ttt_scale(ctx, ttt_rand(ctx, TTT_F64, TTT_DIMS(B, H, T), 0.0, 1.0), -8.0);
        ttt_tensor *s0 = randn(ctx, TTT_DIMS(B, H, dk, dv), 1.0);
        ttt_tensor *z0 = ttt_elu1(ctx, randn(ctx, TTT_DIMS(B, H, dk), 1.0));
        ttt_tensor *sr, *zr, *sg, *ss;
        ttt_tensor *ref = ttt_linear_attention_recurrent(ctx, q, k, v, 1e-6, s0, z0, &sr, &zr);
        ttt_tensor *refg = ttt_gated_delta_recurrent(ctx, q, kn, v, beta, g, s0, &sg);
        ttt_tensor *refs = ttt_ssd_recurrent(ctx, q, k, v, g, s0, &ss);
        for (int ci = 0; ci < 3; ci++) {
            ttt_tensor *s, *z, *sg2, *ss2;
            ttt_tensor *o = ttt_linear_attention_chunked(ctx, q, k, v, chunks[ci], 1e-6, s0, z0, &s, &z);
            ttt_tensor *og = ttt_gated_delta_chunked(ctx, q, kn, v, beta, g, chunks[ci], s0, &sg2);
            ttt_tensor *os = ttt_ssd_chunked(ctx, q, k, v, g, chunks[ci], s0, &ss2);
            const double e3 = fmax(rel_diff(ctx, os, refs), rel_diff(ctx, ss2, ss));
            CHECK_MSG(e3 < 1e-12, "ssd T=%lld chunk %lld: chunkwise vs recurrent %.3g", (long long)T,
                      (long long)chunks[ci], e3);
            worst_ssd = fmax(worst_ssd, e3);
            const double e1 = fmax(rel_diff(ctx, o, ref), fmax(rel_diff(ctx, s, sr), rel_diff(ctx, z, zr)));
            const double e2 = fmax(rel_diff(ctx, og, refg), rel_diff(ctx, sg2, sg));
            CHECK_MSG(e1 < 1e-12, "linear attention T=%lld chunk %lld: chunkwise vs recurrent %.3g", (long long)T,
                      (long long)chunks[ci], e1);
            CHECK_MSG(e2 < 1e-12, "gated delta T=%lld chunk %lld: chunkwise vs recurrent %.3g", (long long)T,
                      (long long)chunks[ci], e2);
            worst_la = fmax(worst_la, e1), worst_gdn = fmax(worst_gdn, e2);
        }
        ttt_step_reset(ctx);
    }
    printf("chunkwise vs recurrent (T 1..45, chunks 1/4/16, f64): linear attention %.2e, gated delta %.2e, ssd %.2e\n",
           worst_la, worst_gdn, worst_ssd);
}

/* ---- the blocks: prefill in pieces + decode == forward ---------------------------------------------- */

enum { LINATTN, GDN, MAMBA2 };
static const char *const KIND[3] = {"linear attention", "Gated DeltaNet", "Mamba 2"};

typedef struct {
    int kind;
    ttt_linattn la;
    ttt_gdn g;
    ttt_mamba2 m2;
    ttt_linattn_state las;
    ttt_gdn_state gs;
    ttt_mamba2_state ms;
} mixer;

static ttt_tensor *run(ttt_ctx *ctx, mixer *m, ttt_tensor *x, int with_state, int decode) {
    if (m->kind == MAMBA2) {
        ttt_mamba2_state *st = with_state ? &m->ms : NULL;
        return decode ? ttt_mamba2_decode(ctx, &m->m2, x, st) : ttt_mamba2_forward(ctx, &m->m2, x, st);
    }
    if (m->kind == GDN) {
        ttt_gdn_state *st = with_state ? &m->gs : NULL;
        return decode ? ttt_gdn_decode(ctx, &m->g, x, st) : ttt_gdn_forward(ctx, &m->g, x, st);
    }
    ttt_linattn_state *st = with_state ? &m->las : NULL;
    return decode ? ttt_linattn_decode(ctx, &m->la, x, st) : ttt_linattn_forward(ctx, &m->la, x, st);
}

static void state_init(ttt_ctx *ctx, mixer *m, int64_t B) {
    int rc = m->kind == MAMBA2 ? ttt_mamba2_state_init(ctx, &m->m2, B, &m->ms)
             : m->kind == GDN  ? ttt_gdn_state_init(ctx, &m->g, B, &m->gs)
                               : ttt_linattn_state_init(ctx, &m->la, B, &m->las);
    CHECK_MSG(rc == TTT_OK, "%s", ttt_error(ctx));
}
static void state_free(ttt_ctx *ctx, mixer *m) {
    ttt_mamba2_state_free(ctx, &m->ms);
    ttt_gdn_state_free(ctx, &m->gs);
    ttt_linattn_state_free(ctx, &m->las);
}

static void test_decode(ttt_ctx *ctx, int kind) {
    const int64_t B = 2, T = 29, D = 16;
    mixer m = {.kind = kind};
    if (kind == GDN) {
        ttt_gdn_config c = ttt_gdn_config_default(D, 2);
        c.chunk = 8, c.head_v_dim = 5, c.init_std = 0.3, c.out_std = 0.3;
        CHECK(ttt_gdn_init(ctx, &m.g, &c, TTT_F64) == TTT_OK);
    } else if (kind == MAMBA2) {
        ttt_mamba2_config c = ttt_mamba2_config_default(D);
        c.chunk = 8, c.d_state = 4, c.head_dim = 8, c.init_std = 0.3, c.out_std = 0.3;
        CHECK(ttt_mamba2_init(ctx, &m.m2, &c, TTT_F64) == TTT_OK);
    } else {
        ttt_linattn_config c = ttt_linattn_config_default(D, 4);
        c.chunk = 8, c.init_std = 0.3, c.out_std = 0.3;
        CHECK(ttt_linattn_init(ctx, &m.la, &c, TTT_F64) == TTT_OK);
    }
    state_init(ctx, &m, B);
    ttt_tensor *x = randn(ctx, TTT_DIMS(B, T, D), 1.0);
    ttt_tensor *full = run(ctx, &m, x, 0, 0);
    CHECK_MSG(full != NULL, "%s", ttt_error(ctx));
    /* prefill 11 tokens (two chunks, one partial), 5 more, then decode the rest one by one */
    ttt_tensor *pieces[32];
    int np = 0;
    pieces[np++] = run(ctx, &m, ttt_slice(ctx, x, 1, 0, 11, 1), 1, 0);
    pieces[np++] = run(ctx, &m, ttt_slice(ctx, x, 1, 11, 16, 1), 1, 0);
    for (int64_t t = 16; t < T; t++) pieces[np++] = run(ctx, &m, ttt_slice(ctx, x, 1, t, t + 1, 1), 1, 1);
    ttt_tensor *y = ttt_concat(ctx, np, pieces, 1);
    const double e = rel_diff(ctx, y, full);
    CHECK_MSG(e < 1e-12, "%s: prefill + decode vs forward %.3g (%s)", KIND[kind], e, ttt_error(ctx));
    const int64_t pos = kind == MAMBA2 ? m.ms.pos : kind == GDN ? m.gs.pos : m.las.pos;
    CHECK(pos == T);
    /* decoding everything from a fresh state through the recurrent form gives the same */
    state_free(ctx, &m);
    state_init(ctx, &m, B);
    const double e2 = rel_diff(ctx, run(ctx, &m, x, 1, 1), full);
    CHECK_MSG(e2 < 1e-12, "%s: recurrent block vs chunkwise block %.3g", KIND[kind], e2);
    printf("%s block: prefill (11 + 5) + decode vs forward %.2e, recurrent vs chunkwise %.2e\n", KIND[kind], e, e2);
    state_free(ctx, &m);
    ttt_gdn_free(ctx, &m.g);
    ttt_linattn_free(ctx, &m.la);
    ttt_mamba2_free(ctx, &m.m2);
    ttt_step_reset(ctx);
}

/* f32 runs and agrees with f64 to float precision, with a gradient for every parameter. */
static void test_f32(ttt_ctx *ctx) {
    ttt_gdn g64, g32;
    ttt_gdn_config c = ttt_gdn_config_default(32, 4);
    c.chunk = 16;
    ttt_manual_seed(ctx, 7);
    CHECK(ttt_gdn_init(ctx, &g64, &c, TTT_F64) == TTT_OK);
    ttt_manual_seed(ctx, 7);
    CHECK(ttt_gdn_init(ctx, &g32, &c, TTT_F32) == TTT_OK);
    ttt_tensor *p64[TTT_GDN_PARAMS], *p32[TTT_GDN_PARAMS];
    int n = ttt_gdn_params(&g64, p64, NULL, NULL);
    ttt_gdn_params(&g32, p32, NULL, NULL);
    for (int i = 0; i < n; i++) ttt_assign(ctx, p32[i], p64[i]);
    ttt_tensor *x = randn(ctx, TTT_DIMS(1, 70, 32), 1.0);
    ttt_tensor *y64 = ttt_gdn_forward(ctx, &g64, x, NULL);
    ttt_tensor *y32 = ttt_gdn_forward(ctx, &g32, ttt_cast(ctx, x, TTT_F32), NULL);
    const double e = rel_diff(ctx, y32, y64);
    CHECK_MSG(e < 1e-4, "gdn f32 vs f64 %.3g", e);
    ttt_zero_grad(ctx, n, p32);
    CHECK(ttt_backward(ctx, ttt_mean(ctx, ttt_mul(ctx, y32, y32), 0, NULL, 0)) == TTT_OK);
    for (int i = 0; i < n; i++) {
        double *h = host(ctx, p32[i]->grad), s = 0;
        for (int64_t j = 0; j < ttt_numel(p32[i]); j++) s += fabs(h[j]);
        free(h);
        CHECK_MSG(s > 0 && isfinite(s), "gdn f32: gradient of parameter %d is %g", i, s);
    }
    printf("Gated DeltaNet f32 vs f64: %.2e\n", e);
    ttt_gdn_free(ctx, &g64);
    ttt_gdn_free(ctx, &g32);
    ttt_step_reset(ctx);
}

static void test_errors(ttt_ctx *ctx) {
    ttt_tensor *q = randn(ctx, TTT_DIMS(1, 2, 5, 4), 1.0), *v = randn(ctx, TTT_DIMS(1, 2, 5, 3), 1.0);
    ttt_tensor *b = randn(ctx, TTT_DIMS(1, 2, 5), 1.0);
    CHECK(ttt_linear_attention_chunked(ctx, q, q, v, 3, 1e-6, NULL, NULL, NULL, NULL) == NULL);
    CHECK(strstr(ttt_error(ctx), "power of two") != NULL);
    ttt_clear_error(ctx);
    CHECK(ttt_gated_delta_chunked(ctx, q, q, v, b, randn(ctx, TTT_DIMS(1, 2, 4), 1.0), 4, NULL, NULL) == NULL);
    CHECK(strstr(ttt_error(ctx), "beta") != NULL);
    ttt_clear_error(ctx);
    CHECK(ttt_gated_delta_chunked(ctx, q, q, v, b, b, 4, randn(ctx, TTT_DIMS(1, 2, 3, 4), 1.0), NULL) == NULL);
    CHECK(strstr(ttt_error(ctx), "s0") != NULL);
    ttt_clear_error(ctx);
    ttt_gdn g;
    ttt_gdn_config c = ttt_gdn_config_default(8, 2);
    CHECK(ttt_gdn_init(ctx, &g, &c, TTT_F64) == TTT_OK);
    CHECK(ttt_gdn_forward(ctx, &g, randn(ctx, TTT_DIMS(1, 3, 9), 1.0), NULL) == NULL);
    CHECK(strstr(ttt_error(ctx), "[B, T, 8]") != NULL);
    ttt_clear_error(ctx);
    ttt_gdn_state st;
    CHECK(ttt_gdn_state_init(ctx, &g, 2, &st) == TTT_OK);
    CHECK(ttt_gdn_decode(ctx, &g, randn(ctx, TTT_DIMS(1, 1, 8), 1.0), &st) == NULL);
    CHECK(strstr(ttt_error(ctx), "batch") != NULL);
    ttt_clear_error(ctx);
    ttt_gdn_state_free(ctx, &st);
    ttt_gdn_free(ctx, &g);
    c.chunk = 0;
    CHECK(ttt_gdn_init(ctx, &g, &c, TTT_F64) == TTT_ERR);
    ttt_clear_error(ctx);
    ttt_step_reset(ctx);
}

int main(void) {
    ttt_ctx_config cfg = {.seed = 42, .threads = 1};
    ttt_ctx *ctx = ttt_ctx_new(&cfg);
    CHECK(ctx != NULL);
    if (!ctx) TEST_MAIN_END();
    test_fixture(ctx);
    test_chunk_vs_recurrent(ctx);
    test_decode(ctx, LINATTN);
    test_decode(ctx, GDN);
    test_decode(ctx, MAMBA2);
    test_f32(ctx);
    test_errors(ctx);
    ttt_ctx_free(ctx);
    TEST_MAIN_END();
}
