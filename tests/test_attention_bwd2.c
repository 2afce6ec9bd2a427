/* The fused double backward of attention (backend attention_bwd2, CUDA f32 and
 * bf16) against the composed path in f64 on the same device (f64 has no fused
 * kernels, so every derivative there is composed of engine ops):
 *   - second order: Phi = <Uq, dQ> + <Uk, dK> + <Uv, dV> differentiated with
 *     respect to q, k, v and to z, where dout = tanh(z) (so the gradient that
 *     reaches dout is checked too), full causal, windowed and bidirectional,
 *     head sizes 64 and 128, lengths that are not multiples of the tiles. The
 *     second gradient is taken without create_graph, so its VJP is the fused
 *     kernels (attention_bwd2.cuh in f32, attention_bwd2_bf16.cuh in bf16 at
 *     d = 64, 128; with create_graph it would compose);
 *   - third order: the gradient of <grad_q Phi, R> with respect to k (the fused
 *     node's own VJP under create_graph composes).
 * bf16 runs from the same values rounded to bf16 (the f64 reference too), within
 * 5e-2 of the largest value (f32: 1e-4, 1e-3 at third order).
 * Without a CUDA device it checks nothing and says so. */
#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ttt/backend.h"
#include "ttt/ttt.h"

typedef struct {
    int64_t b, h, tq, tk, d;
    int causal;
    int64_t window;
} shape_case;

static double *host_randn(int64_t n, unsigned *seed) {
    double *x = malloc(sizeof(double) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        *seed = *seed * 1103515245u + 12345u;
        double u1 = ((*seed >> 8) + 1.0) / 16777218.0;
        *seed = *seed * 1103515245u + 12345u;
        double u2 = ((*seed >> 8) + 0.5) / 16777217.0;
        x[i] = 0.8 * sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
    }
    return x;
}

static double max_abs(const double *x, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(x[i]));
    return m;
}

/* x rounded to the nearest bf16 value (ties to even), by the engine's own conversion */
static double round_bf16(double x) { return ttt_bf16_to_f32(ttt_f32_to_bf16((float)x)); }

/* Phi's second-order gradients g2 (q, k, v, z), with create_graph on the second gradient or not; t: the 8 inputs. */
static int second_order(ttt_ctx *ctx, const shape_case *c, ttt_tensor *const *t, int create_graph, ttt_tensor **g2) {
    ttt_tensor *o = ttt_attention(ctx, t[0], t[1], t[2], c->causal, c->window, 0.0);
    ttt_tensor *L = ttt_sum(ctx, ttt_mul(ctx, o, ttt_tanh(ctx, t[3])), 0, NULL, 0);
    ttt_tensor *d1[3];
    if (!L || ttt_grad(ctx, 1, &L, NULL, 3, t, d1, 1) != TTT_OK) return TTT_ERR;
    ttt_tensor *phi = ttt_add(ctx, ttt_add(ctx, ttt_sum(ctx, ttt_mul(ctx, d1[0], t[4]), 0, NULL, 0),
                                           ttt_sum(ctx, ttt_mul(ctx, d1[1], t[5]), 0, NULL, 0)),
                              ttt_sum(ctx, ttt_mul(ctx, d1[2], t[6]), 0, NULL, 0));
    return phi ? ttt_grad(ctx, 1, &phi, NULL, 4, t, g2, create_graph) : TTT_ERR;
}

/* Runs one dtype; out[0..3] get the second-order gradients (q, k, v, z: without create_graph, so through the
 * fused kernels where the backend has them), out[4] the third-order one (k; composed). */
static int run(ttt_ctx *ctx, ttt_dtype dt, const shape_case *c, double *const *host, double **out) {
    const int64_t sq[4] = {c->b, c->h, c->tq, c->d}, sk[4] = {c->b, c->h, c->tk, c->d};
    const int64_t *shapes[8] = {sq, sk, sk, sq, sq, sk, sk, sq}; /* q k v z uq uk uv r */
    ttt_tensor *t[8];
    for (int i = 0; i < 8; i++) {
        t[i] = ttt_cast(ctx, ttt_from_host(ctx, TTT_F64, 4, shapes[i], host[i]), dt);
        if (!t[i]) return TTT_ERR;
    }
    for (int i = 0; i < 4; i++) ttt_set_requires_grad(t[i], 1);
    ttt_tensor *g2[4];
    if (second_order(ctx, c, t, 0, g2) != TTT_OK) return TTT_ERR;
    for (int i = 0; i < 4; i++)
        if (ttt_copy_to_host(ctx, g2[i], out[i], TTT_F64) != TTT_OK) return TTT_ERR;
    if (second_order(ctx, c, t, 1, g2) != TTT_OK) return TTT_ERR;
    ttt_tensor *psi = ttt_sum(ctx, ttt_mul(ctx, g2[0], t[7]), 0, NULL, 0), *g3;
    if (!psi || ttt_grad(ctx, 1, &psi, NULL, 1, &t[1], &g3, 0) != TTT_OK) return TTT_ERR;
    return ttt_copy_to_host(ctx, g3, out[4], TTT_F64);
}

int main(void) {
    if (!ttt_backend_for(TTT_CUDA)) {
        printf("no CUDA device: nothing checked\n");
        TEST_MAIN_END();
    }
    ttt_ctx_config cfg = {.device = TTT_CUDA, .seed = 3};
    ttt_ctx *ctx = ttt_ctx_new(&cfg);
    CHECK(ctx != NULL);
    const shape_case cases[] = {
        {1, 2, 70, 70, 64, 1, 0}, {2, 1, 37, 100, 64, 1, 0}, {1, 2, 70, 70, 64, 0, 0},
        {1, 1, 130, 130, 32, 1, 9}, {1, 1, 80, 80, 128, 1, 0}, {1, 2, 5, 5, 16, 1, 0},
    };
    /* bf16: the kernels take d = 64 and 128 (others compose in f32; d = 32 shows that path) */
    const shape_case cases_bf16[] = {
        {1, 2, 70, 70, 64, 1, 0}, {2, 1, 37, 100, 64, 1, 0}, {1, 2, 70, 70, 64, 0, 0},  {1, 1, 130, 130, 64, 1, 9},
        {1, 1, 80, 80, 128, 1, 0}, {1, 1, 150, 150, 128, 1, 70}, {1, 1, 130, 130, 32, 1, 9},
    };
    const size_t n32 = sizeof cases / sizeof cases[0], n16 = sizeof cases_bf16 / sizeof cases_bf16[0];
    unsigned seed = 7;
    for (size_t ci = 0; ci < n32 + n16; ci++) {
        const int bf16 = ci >= n32;
        const ttt_dtype dt = bf16 ? TTT_BF16 : TTT_F32;
        const shape_case *c = bf16 ? &cases_bf16[ci - n32] : &cases[ci];
        const int64_t nq = c->b * c->h * c->tq * c->d, nk = c->b * c->h * c->tk * c->d;
        const int64_t n[8] = {nq, nk, nk, nq, nq, nk, nk, nq}, nout[5] = {nq, nk, nk, nq, nk};
        double *host[8], *ref[5], *got[5];
        for (int i = 0; i < 8; i++) {
            host[i] = host_randn(n[i], &seed);
            for (int64_t j = 0; bf16 && j < n[i]; j++) host[i][j] = round_bf16(host[i][j]); /* the same values */
        }
        for (int i = 0; i < 5; i++) ref[i] = calloc((size_t)nout[i], sizeof(double)), got[i] = calloc((size_t)nout[i], sizeof(double));
        const int ok64 = run(ctx, TTT_F64, c, host, ref) == TTT_OK;
        ttt_step_reset(ctx);
        const int okdt = run(ctx, dt, c, host, got) == TTT_OK;
        CHECK_MSG(ok64 && okdt, "%s", ttt_error(ctx));
        ttt_step_reset(ctx);
        const char *names[5] = {"q", "k", "v", "z (through dout)", "third order, k"};
        printf("B %lld H %lld Tq %lld Tk %lld d %lld causal %d window %lld %s:", (long long)c->b, (long long)c->h,
               (long long)c->tq, (long long)c->tk, (long long)c->d, c->causal, (long long)c->window, bf16 ? "bf16" : "f32");
        for (int i = 0; i < 5 && ok64 && okdt; i++) {
            double worst = 0, scale = max_abs(ref[i], nout[i]);
            for (int64_t j = 0; j < nout[i]; j++) worst = fmax(worst, fabs(got[i][j] - ref[i][j]));
            const double rel = worst / (scale + 1e-30);
            printf("  %s %.1e", names[i], rel);
            const double tol = bf16 ? 5e-2 : i == 4 ? 1e-3 : 1e-4;
            CHECK_MSG(rel < tol && scale > 0, "%s %s: %g relative (scale %g)", bf16 ? "bf16" : "f32", names[i], rel, scale);
        }
        printf("\n");
        for (int i = 0; i < 8; i++) free(host[i]);
        for (int i = 0; i < 5; i++) free(ref[i]), free(got[i]);
    }
    ttt_ctx_free(ctx);
    TEST_MAIN_END();
}
