/* TTT-Linear's decode step on the CPU (backend.h: ttt_linear_step; the math: src/composed/ttt_step.c):
 * one token per (batch, head), the state updated in place. What it replaces is about forty small ops
 * per layer and token (slices, products, the layer norms' reductions, the state's sums), so the gain is
 * the per-op overhead; the arithmetic is 3 d^2 multiply-adds per head. */
#include <math.h>
#include <stdlib.h>

#include "cpu_internal.h"

/* One (batch, head): q, k, v, out [d]; eta one value; w, gw [d, d]; c, gc [d]; scratch 3 d. */
#define STEP_HEAD(R, SQRT)                                                                                       \
    static void step_head_##R(R *restrict out, R *restrict w, R *restrict c, R *restrict gw, R *restrict gc,      \
                              const R *q, const R *k, const R *v, R eta, R t, const R *gam, const R *bet, int64_t d, \
                              int complete, R eps, R *scr) {                                                      \
        R *z = scr, *g = scr + d, *zq = scr + 2 * d;                                                              \
        /* z = k W + c, the token's inner prediction at the mini-batch's start */                                \
        for (int64_t j = 0; j < d; j++) z[j] = c[j];                                                              \
        for (int64_t i = 0; i < d; i++) {                                                                         \
            const R ki = k[i], *wr = w + i * d;                                                                   \
            for (int64_t j = 0; j < d; j++) z[j] += ki * wr[j];                                                   \
        }                                                                                                         \
        /* g = d/dz of 1/2 || LN(z) gam + bet - (v - k) ||^2 */                                                  \
        R mu = 0, var = 0;                                                                                        \
        for (int64_t j = 0; j < d; j++) mu += z[j];                                                               \
        mu /= (R)d;                                                                                               \
        for (int64_t j = 0; j < d; j++) var += (z[j] - mu) * (z[j] - mu);                                         \
        const R rstd = (R)1 / SQRT(var / (R)d + eps);                                                             \
        R mg = 0, mgx = 0;                                                                                        \
        for (int64_t j = 0; j < d; j++) {                                                                         \
            const R xh = (z[j] - mu) * rstd;                                                                      \
            g[j] = (xh * gam[j] + bet[j] - (v[j] - k[j])) * gam[j];                                               \
            mg += g[j], mgx += g[j] * xh;                                                                         \
        }                                                                                                         \
        mg /= (R)d, mgx /= (R)d;                                                                                  \
        for (int64_t j = 0; j < d; j++) g[j] = (g[j] - mg - (z[j] - mu) * rstd * mgx) * rstd;                    \
        /* the sums: G += eta k^T g, Gc += eta g; then zq = q (W - t G) + c - t Gc */                            \
        for (int64_t j = 0; j < d; j++) {                                                                         \
            gc[j] += eta * g[j];                                                                                  \
            zq[j] = c[j] - t * gc[j];                                                                             \
        }                                                                                                         \
        for (int64_t i = 0; i < d; i++) {                                                                         \
            const R ek = eta * k[i], qi = q[i];                                                                   \
            R *wr = w + i * d, *gr = gw + i * d;                                                                  \
            for (int64_t j = 0; j < d; j++) {                                                                     \
                gr[j] += ek * g[j];                                                                               \
                zq[j] += qi * (wr[j] - t * gr[j]);                                                                \
            }                                                                                                     \
        }                                                                                                         \
        /* out = q + LN(zq) gam + bet */                                                                          \
        mu = 0, var = 0;                                                                                          \
        for (int64_t j = 0; j < d; j++) mu += zq[j];                                                              \
        mu /= (R)d;                                                                                               \
        for (int64_t j = 0; j < d; j++) var += (zq[j] - mu) * (zq[j] - mu);                                       \
        const R rq = (R)1 / SQRT(var / (R)d + eps);                                                               \
        for (int64_t j = 0; j < d; j++) out[j] = q[j] + (zq[j] - mu) * rq * gam[j] + bet[j];                     \
        if (complete) { /* the mini-batch's step: W -= t G, c -= t Gc, and the sums start again */              \
            for (int64_t i = 0; i < d * d; i++) w[i] -= t * gw[i], gw[i] = 0;                                    \
            for (int64_t j = 0; j < d; j++) c[j] -= t * gc[j], gc[j] = 0;                                        \
        }                                                                                                         \
    }
STEP_HEAD(float, sqrtf)
STEP_HEAD(double, sqrt)

int cpu_ttt_linear_step(ttt_backend_state *self, ttt_tensor *out, ttt_tensor *w, ttt_tensor *c, ttt_tensor *gw,
                        ttt_tensor *gc, const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v,
                        const ttt_tensor *eta, const ttt_tensor *tok, const ttt_tensor *ln_w, const ttt_tensor *ln_b,
                        int64_t r0, double eps) {
    if (q->dtype != TTT_F32 && q->dtype != TTT_F64) return TTT_BACKEND_DECLINED;
    const int64_t H = q->shape[1], d = q->shape[3], BH = q->shape[0] * H, bs = cpu_numel(tok);
    const int complete = r0 == bs - 1, f32 = q->dtype == TTT_F32;
    const size_t es = f32 ? sizeof(float) : sizeof(double);
    char *scr = malloc((size_t)BH * 3 * (size_t)d * es + 64);
    if (!scr) {
        ttt_backend_error("ttt_linear_step: out of host memory for %lld x %lld scratch values", (long long)BH,
                          (long long)(3 * d));
        return TTT_ERR;
    }
    CPU_PARALLEL(self, BH * d * d * 3, _Pragma("omp for schedule(static)") for (int64_t bh = 0; bh < BH; bh++) {
        const int64_t h = bh % H, o = bh * d, od = bh * d * d;
        if (f32) {
            const float *tk = (const float *)tok->data;
            step_head_float((float *)out->data + o, (float *)w->data + od, (float *)c->data + o, (float *)gw->data + od,
                            (float *)gc->data + o, (const float *)q->data + o, (const float *)k->data + o,
                            (const float *)v->data + o, ((const float *)eta->data)[bh], tk[r0],
                            (const float *)ln_w->data + h * d, (const float *)ln_b->data + h * d, d, complete, (float)eps,
                            (float *)(void *)(scr + (size_t)bh * 3 * (size_t)d * es));
        } else {
            const double *tk = (const double *)tok->data;
            step_head_double((double *)out->data + o, (double *)w->data + od, (double *)c->data + o,
                             (double *)gw->data + od, (double *)gc->data + o, (const double *)q->data + o,
                             (const double *)k->data + o, (const double *)v->data + o, ((const double *)eta->data)[bh],
                             tk[r0], (const double *)ln_w->data + h * d, (const double *)ln_b->data + h * d, d, complete,
                             eps, (double *)(void *)(scr + (size_t)bh * 3 * (size_t)d * es));
        }
    });
    free(scr);
    return TTT_OK;
}
