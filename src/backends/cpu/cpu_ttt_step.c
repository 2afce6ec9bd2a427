/* The TTT layers' decode steps on the CPU (backend.h: ttt_linear_step, ttt_mlp_step; the math: src/composed/ttt_step.c):
 * one token per (batch, head), the state updated in place. What it replaces is about forty small ops
 * per layer and token (slices, products, the layer norms' reductions, the state's sums), so the gain is
 * the per-op overhead; the arithmetic is 3 d^2 multiply-adds per head. */
#include <math.h>
#include <stdlib.h>

#include "cpu_internal.h"

/* The two row-wise pieces both steps share, per precision: g = d/dz of 1/2 || LN(z) gam + bet - (v - k) ||^2
 * (the inner loss's gradient), and out = q + LN(z) gam + bet. */
#define ROW_HELPERS(R, SQRT)                                                                                     \
    static void ln_l2_grad_##R(R *restrict g, const R *z, const R *v, const R *k, const R *gam, const R *bet,     \
                               int64_t d, R eps) {                                                                \
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
    }                                                                                                             \
    static void ln_out_##R(R *restrict out, const R *q, const R *z, const R *gam, const R *bet, int64_t d, R eps) { \
        R mu = 0, var = 0;                                                                                        \
        for (int64_t j = 0; j < d; j++) mu += z[j];                                                               \
        mu /= (R)d;                                                                                               \
        for (int64_t j = 0; j < d; j++) var += (z[j] - mu) * (z[j] - mu);                                         \
        const R rq = (R)1 / SQRT(var / (R)d + eps);                                                               \
        for (int64_t j = 0; j < d; j++) out[j] = q[j] + (z[j] - mu) * rq * gam[j] + bet[j];                      \
    }
ROW_HELPERS(float, sqrtf)
ROW_HELPERS(double, sqrt)

/* One (batch, head): q, k, v, out [d]; eta one value; w, gw [d, d]; c, gc [d]; scratch 3 d. */
#define STEP_HEAD(R)                                                                                       \
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
        ln_l2_grad_##R(g, z, v, k, gam, bet, d, eps); /* the inner loss's gradient at z */                       \
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
        ln_out_##R(out, q, zq, gam, bet, d, eps);                                                                 \
        if (complete) { /* the mini-batch's step: W -= t G, c -= t Gc, and the sums start again */              \
            for (int64_t i = 0; i < d * d; i++) w[i] -= t * gw[i], gw[i] = 0;                                    \
            for (int64_t j = 0; j < d; j++) c[j] -= t * gc[j], gc[j] = 0;                                        \
        }                                                                                                         \
    }
STEP_HEAD(float)
STEP_HEAD(double)

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

/* ---- TTT-MLP: W1 [d, F], b1 [F], W2 [F, d], b2 [d] and their sums G1, Gb1, G2, Gb2 ---------------------- */

#define GELU_C 0.7978845608028654
#define GELU_K 0.044715

/* One (batch, head); scratch 4 F + 3 d. gelu is the tanh approximation, as the layer's. */
#define MLP_STEP_HEAD(R, TANH)                                                                             \
    static void mlp_step_head_##R(R *restrict out, R *const *w, R *const *g, const R *q, const R *k, const R *v,  \
                                  R eta, R t, const R *gam, const R *bet, int64_t d, int64_t F, int complete,     \
                                  R eps, R *scr) {                                                                \
        R *W1 = w[0], *b1 = w[1], *W2 = w[2], *b2 = w[3], *G1 = g[0], *Gb1 = g[1], *G2 = g[2], *Gb2 = g[3];      \
        R *z1 = scr, *x2 = scr + F, *g1 = scr + 2 * F, *a = scr + 3 * F, *z2 = scr + 4 * F, *g2 = z2 + d,         \
          *zq = g2 + d;                                                                                           \
        for (int64_t f = 0; f < F; f++) z1[f] = b1[f];                                                            \
        for (int64_t i = 0; i < d; i++) {                                                                         \
            const R ki = k[i], *wr = W1 + i * F;                                                                  \
            for (int64_t f = 0; f < F; f++) z1[f] += ki * wr[f];                                                  \
        }                                                                                                         \
        for (int64_t f = 0; f < F; f++) {                                                                         \
            const R x = z1[f];                                                                                    \
            x2[f] = (R)0.5 * x * ((R)1 + TANH((R)GELU_C * (x + (R)GELU_K * x * x * x)));                          \
        }                                                                                                         \
        for (int64_t j = 0; j < d; j++) z2[j] = b2[j];                                                            \
        for (int64_t f = 0; f < F; f++) {                                                                         \
            const R xf = x2[f], *wr = W2 + f * d;                                                                 \
            for (int64_t j = 0; j < d; j++) z2[j] += xf * wr[j];                                                  \
        }                                                                                                         \
        ln_l2_grad_##R(g2, z2, v, k, gam, bet, d, eps); /* the inner loss's gradient at z2 */                    \
        /* g1 = (g2 W2^T) o gelu'(z1), with W2 at the mini-batch's start */                                      \
        for (int64_t f = 0; f < F; f++) {                                                                         \
            const R *wr = W2 + f * d, x = z1[f];                                                                  \
            R s = 0;                                                                                              \
            for (int64_t j = 0; j < d; j++) s += g2[j] * wr[j];                                                   \
            const R th = TANH((R)GELU_C * (x + (R)GELU_K * x * x * x));                                           \
            g1[f] = s * ((R)0.5 * ((R)1 + th) +                                                                   \
                         (R)0.5 * x * ((R)1 - th * th) * (R)GELU_C * ((R)1 + (R)3 * (R)GELU_K * x * x));          \
        }                                                                                                         \
        /* the sums, then layer 1 at W1 - t G1: a = gelu(q (W1 - t G1) + b1 - t Gb1) */                          \
        for (int64_t f = 0; f < F; f++) {                                                                         \
            Gb1[f] += eta * g1[f];                                                                                \
            a[f] = b1[f] - t * Gb1[f];                                                                            \
        }                                                                                                         \
        for (int64_t i = 0; i < d; i++) {                                                                         \
            const R ek = eta * k[i], qi = q[i];                                                                   \
            R *wr = W1 + i * F, *gr = G1 + i * F;                                                                 \
            for (int64_t f = 0; f < F; f++) {                                                                     \
                gr[f] += ek * g1[f];                                                                              \
                a[f] += qi * (wr[f] - t * gr[f]);                                                                 \
            }                                                                                                     \
        }                                                                                                         \
        for (int64_t f = 0; f < F; f++) {                                                                         \
            const R x = a[f];                                                                                     \
            a[f] = (R)0.5 * x * ((R)1 + TANH((R)GELU_C * (x + (R)GELU_K * x * x * x)));                           \
        }                                                                                                         \
        /* layer 2 at W2 - t G2 */                                                                                \
        for (int64_t j = 0; j < d; j++) {                                                                         \
            Gb2[j] += eta * g2[j];                                                                                \
            zq[j] = b2[j] - t * Gb2[j];                                                                           \
        }                                                                                                         \
        for (int64_t f = 0; f < F; f++) {                                                                         \
            const R ex = eta * x2[f], af = a[f];                                                                  \
            R *wr = W2 + f * d, *gr = G2 + f * d;                                                                 \
            for (int64_t j = 0; j < d; j++) {                                                                     \
                gr[j] += ex * g2[j];                                                                              \
                zq[j] += af * (wr[j] - t * gr[j]);                                                                \
            }                                                                                                     \
        }                                                                                                         \
        ln_out_##R(out, q, zq, gam, bet, d, eps);                                                                 \
        if (complete) {                                                                                           \
            const int64_t n[4] = {d * F, F, F * d, d};                                                            \
            for (int p = 0; p < 4; p++)                                                                           \
                for (int64_t e = 0; e < n[p]; e++) w[p][e] -= t * g[p][e], g[p][e] = 0;                           \
        }                                                                                                         \
    }
MLP_STEP_HEAD(float, tanh_f32)
MLP_STEP_HEAD(double, tanh)

int cpu_ttt_mlp_step(ttt_backend_state *self, ttt_tensor *out, ttt_tensor *const *w, ttt_tensor *const *g,
                     const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *eta,
                     const ttt_tensor *tok, const ttt_tensor *ln_w, const ttt_tensor *ln_b, int64_t r0, double eps) {
    if (q->dtype != TTT_F32 && q->dtype != TTT_F64) return TTT_BACKEND_DECLINED;
    const int64_t H = q->shape[1], d = q->shape[3], BH = q->shape[0] * H, bs = cpu_numel(tok), F = w[0]->shape[3];
    const int complete = r0 == bs - 1, f32 = q->dtype == TTT_F32;
    const size_t es = f32 ? sizeof(float) : sizeof(double), per = (size_t)(4 * F + 3 * d);
    char *scr = malloc((size_t)BH * per * es + 64);
    if (!scr) {
        ttt_backend_error("ttt_mlp_step: out of host memory for %lld x %zu scratch values", (long long)BH, per);
        return TTT_ERR;
    }
    const int64_t n[4] = {d * F, F, F * d, d}; /* per (batch, head) */
    CPU_PARALLEL(self, BH * d * F * 6, _Pragma("omp for schedule(static)") for (int64_t bh = 0; bh < BH; bh++) {
        const int64_t h = bh % H, o = bh * d;
        if (f32) {
            float *wp[4], *gp[4];
            for (int p = 0; p < 4; p++) wp[p] = (float *)w[p]->data + bh * n[p], gp[p] = (float *)g[p]->data + bh * n[p];
            mlp_step_head_float((float *)out->data + o, wp, gp, (const float *)q->data + o, (const float *)k->data + o,
                                (const float *)v->data + o, ((const float *)eta->data)[bh], ((const float *)tok->data)[r0],
                                (const float *)ln_w->data + h * d, (const float *)ln_b->data + h * d, d, F, complete,
                                (float)eps, (float *)(void *)(scr + (size_t)bh * per * es));
        } else {
            double *wp[4], *gp[4];
            for (int p = 0; p < 4; p++) wp[p] = (double *)w[p]->data + bh * n[p], gp[p] = (double *)g[p]->data + bh * n[p];
            mlp_step_head_double((double *)out->data + o, wp, gp, (const double *)q->data + o, (const double *)k->data + o,
                                 (const double *)v->data + o, ((const double *)eta->data)[bh],
                                 ((const double *)tok->data)[r0], (const double *)ln_w->data + h * d,
                                 (const double *)ln_b->data + h * d, d, F, complete, eps,
                                 (double *)(void *)(scr + (size_t)bh * per * es));
        }
    });
    free(scr);
    return TTT_OK;
}
