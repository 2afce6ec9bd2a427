/* The TTT layers' decode steps on the GPU (backend.h: ttt_linear_step, ttt_mlp_step): the launchers of
 * ttt_step.cuh's kernels, one block per (batch, head), f32 and f64. Declined (decode then composes the step
 * of generic kernels): other dtypes, and sizes whose shared memory (3 d + 4 values; TTT-MLP 4 d + 3 F + 4)
 * would not fit the default 48 KB. */
#include <limits.h>

#include "cuda_internal.h"

extern __shared__ double tstep_smem_raw[];
#define TTT_STEP_SMEM() reinterpret_cast<void *>(tstep_smem_raw)
#include "ttt_step.cuh"

template <typename R>
static void launch(CuDev *D, ttt_tensor *out, ttt_tensor *w, ttt_tensor *c, ttt_tensor *gw, ttt_tensor *gc,
                   const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *eta,
                   const ttt_tensor *tok, const ttt_tensor *ln_w, const ttt_tensor *ln_b, int64_t r0, double eps) {
    tstep::Args<R> a;
    a.out = (R *)out->data, a.w = (R *)w->data, a.c = (R *)c->data, a.gw = (R *)gw->data, a.gc = (R *)gc->data;
    a.q = (const R *)q->data, a.k = (const R *)k->data, a.v = (const R *)v->data, a.eta = (const R *)eta->data;
    a.tok = (const R *)tok->data, a.ln_w = (const R *)ln_w->data, a.ln_b = (const R *)ln_b->data;
    a.H = (int)q->shape[1], a.d = (int)q->shape[3], a.r0 = (int)r0, a.complete = r0 == tok->shape[0] - 1;
    a.eps = (R)eps;
    const size_t bytes = tstep::smem_elems(a.d) * sizeof(R);
    tstep::step<R><<<(unsigned)(q->shape[0] * q->shape[1]), tstep::THREADS, bytes, D->stream>>>(a);
}

int ttt__cu_ttt_linear_step(ttt_backend_state *self, ttt_tensor *out, ttt_tensor *w, ttt_tensor *c, ttt_tensor *gw,
                            ttt_tensor *gc, const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v,
                            const ttt_tensor *eta, const ttt_tensor *tok, const ttt_tensor *ln_w, const ttt_tensor *ln_b,
                            int64_t r0, double eps) {
    ENTER(D, self);
    const int64_t BH = q->shape[0] * q->shape[1], d = q->shape[3];
    const size_t es = q->dtype == TTT_F64 ? sizeof(double) : sizeof(float);
    if ((q->dtype != TTT_F32 && q->dtype != TTT_F64) || BH < 1 || BH > INT_MAX || d < 1 || BH * d * d > INT64_MAX / 8 ||
        tstep::smem_elems((int)d) * es > (48 << 10))
        return TTT_BACKEND_DECLINED;
    if (q->dtype == TTT_F32) launch<float>(D, out, w, c, gw, gc, q, k, v, eta, tok, ln_w, ln_b, r0, eps);
    else launch<double>(D, out, w, c, gw, gc, q, k, v, eta, tok, ln_w, ln_b, r0, eps);
    LAUNCHED("ttt_linear_step");
    return TTT_OK;
}

template <typename R>
static void launch_mlp(CuDev *D, ttt_tensor *out, ttt_tensor *const *w, ttt_tensor *const *g, const ttt_tensor *q,
                       const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *eta, const ttt_tensor *tok,
                       const ttt_tensor *ln_w, const ttt_tensor *ln_b, int64_t r0, double eps) {
    tstep::MlpArgs<R> a;
    a.out = (R *)out->data, a.w1 = (R *)w[0]->data, a.b1 = (R *)w[1]->data, a.w2 = (R *)w[2]->data, a.b2 = (R *)w[3]->data;
    a.g1 = (R *)g[0]->data, a.gb1 = (R *)g[1]->data, a.g2 = (R *)g[2]->data, a.gb2 = (R *)g[3]->data;
    a.q = (const R *)q->data, a.k = (const R *)k->data, a.v = (const R *)v->data, a.eta = (const R *)eta->data;
    a.tok = (const R *)tok->data, a.ln_w = (const R *)ln_w->data, a.ln_b = (const R *)ln_b->data;
    a.H = (int)q->shape[1], a.d = (int)q->shape[3], a.F = (int)w[0]->shape[3], a.r0 = (int)r0;
    a.complete = r0 == tok->shape[0] - 1, a.eps = (R)eps;
    const size_t bytes = tstep::mlp_smem_elems(a.d, a.F) * sizeof(R);
    tstep::mlp_step<R><<<(unsigned)(q->shape[0] * q->shape[1]), tstep::THREADS, bytes, D->stream>>>(a);
}

int ttt__cu_ttt_mlp_step(ttt_backend_state *self, ttt_tensor *out, ttt_tensor *const *w, ttt_tensor *const *g,
                         const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *eta,
                         const ttt_tensor *tok, const ttt_tensor *ln_w, const ttt_tensor *ln_b, int64_t r0, double eps) {
    ENTER(D, self);
    const int64_t BH = q->shape[0] * q->shape[1], d = q->shape[3], F = w[0]->shape[3];
    const size_t es = q->dtype == TTT_F64 ? sizeof(double) : sizeof(float);
    if ((q->dtype != TTT_F32 && q->dtype != TTT_F64) || BH < 1 || BH > INT_MAX || d < 1 || F < 1 || F > INT_MAX / 8 ||
        tstep::mlp_smem_elems((int)d, (int)F) * es > (48 << 10))
        return TTT_BACKEND_DECLINED;
    if (q->dtype == TTT_F32) launch_mlp<float>(D, out, w, g, q, k, v, eta, tok, ln_w, ln_b, r0, eps);
    else launch_mlp<double>(D, out, w, g, q, k, v, eta, tok, ln_w, ln_b, r0, eps);
    LAUNCHED("ttt_mlp_step");
    return TTT_OK;
}
