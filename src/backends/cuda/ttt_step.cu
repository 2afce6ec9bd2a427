/* TTT-Linear's decode step on the GPU (backend.h: ttt_linear_step): the launcher of ttt_step.cuh's kernel,
 * one block per (batch, head), f32 and f64. Declined (decode then composes the step of generic kernels):
 * other dtypes, and head sizes whose shared memory (3 d + 4 values) would not fit the default 48 KB. */
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
