/* ttt CUDA backend (fused optimizer updates):
 * see cuda_internal.h for the instance (CuDev) the entries take and the
 * helpers the files share. */
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"
#include "multi_tensor.cuh"

/* ---- optimizers (fused) ---------------------------------------------------------------------------------------- */

/* AdamW runs as the multi-tensor kernel (multi_tensor.cuh) for one tensor or many, so adamw and adamw_multi give
 * the same bits by construction. */
static int adamw_launch(CuDev *D, int n, ttt_tensor *const *p, ttt_tensor *const *g, ttt_tensor *const *m,
                        ttt_tensor *const *v, const double *wd, double lr, double b1, double b2, double eps, int64_t step) {
    const ttt_dtype dt = p[0]->dtype;
    if (float_only("adamw", dt)) return TTT_ERR;
    for (int i = 0; i < n; i++)
        if (p[i]->dtype != dt || g[i]->dtype != dt || m[i]->dtype != dt || v[i]->dtype != dt) {
            ttt_backend_error("adamw_multi: tensor %d is not of tensor 0's dtype (one dtype per call)", i);
            return TTT_ERR;
        }
    const double bc1 = 1.0 - pow(b1, (double)step), bc2 = 1.0 - pow(b2, (double)step);
    for (int i0 = 0; i0 < n; i0 += mt::ADAMW_MAX) {
        mt::AdamwArgs a;
        memset(&a, 0, sizeof a);
        a.n = n - i0 < (int)mt::ADAMW_MAX ? n - i0 : (int)mt::ADAMW_MAX;
        for (int t = 0; t < a.n; t++) {
            a.start[t + 1] = a.start[t] + numel(p[i0 + t]);
            a.p[t] = p[i0 + t]->data, a.g[t] = g[i0 + t]->data, a.m[t] = m[i0 + t]->data, a.v[t] = v[i0 + t]->data;
            a.wd[t] = wd[i0 + t];
        }
        const int64_t total = a.start[a.n];
        if (total == 0) continue;
        FLOAT_DISPATCH(dt, T, mt::k_adamw<T><<<blocks_for(total), THREADS, 0, D->stream>>>(a, lr, b1, b2, eps, bc1, bc2))
        LAUNCHED("adamw");
    }
    return TTT_OK;
}

int ttt__cu_adamw(ttt_backend_state *self, ttt_tensor *p, const ttt_tensor *g, ttt_tensor *m, ttt_tensor *v, double lr, double b1, double b2,
                    double eps, double wd, int64_t step) {
    ENTER(D, self);
    ttt_tensor *gg = (ttt_tensor *)g;
    return adamw_launch(D, 1, &p, &gg, &m, &v, &wd, lr, b1, b2, eps, step);
}

int ttt__cu_adamw_multi(ttt_backend_state *self, int n, ttt_tensor *const *p, ttt_tensor *const *g, ttt_tensor *const *m,
                        ttt_tensor *const *v, const double *wd, double lr, double b1, double b2, double eps, int64_t step) {
    ENTER(D, self);
    if (n < 1) return TTT_OK;
    return adamw_launch(D, n, p, g, m, v, wd, lr, b1, b2, eps, step);
}

/* Gradient clipping's global norm: the sum over tensors of sum(x * x), with the bits of the composed ops
 * (mul, sum, cast to f64, adds in order; see multi_tensor.cuh), in two launches per SUMSQ_MAX tensors
 * instead of four or five per tensor. */
int ttt__cu_sumsq_multi(ttt_backend_state *self, ttt_tensor *dst, int n, const ttt_tensor *const *x) {
    ENTER(D, self);
    if (dst->dtype != TTT_F64) {
        ttt_backend_error("sumsq_multi: dst must be f64");
        return TTT_ERR;
    }
    if (n < 1) {
        CU(cudaMemsetAsync(dst->data, 0, sizeof(double), D->stream));
        return TTT_OK;
    }
    const ttt_dtype dt = x[0]->dtype;
    if (float_only("sumsq_multi", dt)) return TTT_ERR;
    /* the partials of the largest group of tensors, in the instance's reduction scratch */
    int64_t most = 0;
    for (int i0 = 0; i0 < n; i0 += mt::SUMSQ_MAX) {
        int64_t blocks = 0;
        for (int t = i0; t < n && t < i0 + (int)mt::SUMSQ_MAX; t++) blocks += reduce_chunks(1, numel(x[t]), 1);
        if (blocks > most) most = blocks;
    }
    for (int i = 0; i < n; i++)
        if (x[i]->dtype != dt) {
            ttt_backend_error("sumsq_multi: tensor %d is not of tensor 0's dtype (one dtype per call)", i);
            return TTT_ERR;
        }
    if (most > 2147483647LL) {
        ttt_backend_error("sumsq_multi: %lld blocks are too many for one launch", (long long)most);
        return TTT_ERR;
    }
    if (scratch_reserve(D, &D->reduce_scratch, sizeof(double) * (size_t)most, "sumsq_multi")) return TTT_ERR;
    double *part = (double *)D->reduce_scratch.p;
    for (int i0 = 0; i0 < n; i0 += mt::SUMSQ_MAX) {
        mt::SumsqArgs a;
        memset(&a, 0, sizeof a);
        a.n = n - i0 < (int)mt::SUMSQ_MAX ? n - i0 : (int)mt::SUMSQ_MAX;
        for (int t = 0; t < a.n; t++) {
            const int64_t R = numel(x[i0 + t]), chunks = reduce_chunks(1, R, 1);
            a.x[t] = x[i0 + t]->data;
            a.numel[t] = R;
            a.per[t] = (R + chunks - 1) / chunks;
            a.first[t + 1] = a.first[t] + chunks;
        }
        FLOAT_DISPATCH(dt, T, {
            mt::k_sumsq_chunks<T><<<(unsigned)a.first[a.n], THREADS, 0, D->stream>>>(a, part);
            mt::k_sumsq_total<T><<<1, THREADS, 0, D->stream>>>(a, part, (double *)dst->data, i0 > 0);
        })
        LAUNCHED("sumsq_multi");
    }
    return TTT_OK;
}

/* TTT-E2E's clipped inner step (multi_tensor.cuh: the plan and the kernels). One pass, sums or apply, in launches
 * of at most CLIP_MAX tensors; the sums go to the instance's reduction scratch, B P doubles. */
static int clip_pass(CuDev *D, int sums, int n, const int64_t *per, int64_t B, int64_t P, void *const *dst,
                     const void *const *a, const void *const *g, ttt_dtype dt, double *norm, int bwd, double eta,
                     double clip) {
    double *part = (double *)D->reduce_scratch.p;
    int64_t p0 = 0;
    int norm_due = !sums && !bwd && norm != NULL;
    for (int i = 0; i < n;) {
        mt::ClipArgs c;
        const int64_t blocks = mt::clip_table(&c, n, &i, &p0, &norm_due, B, P, per, dst, a, g, sums);
        if (blocks > 2147483647LL) {
            ttt_backend_error("clip_step: %lld blocks are too many for one launch", (long long)blocks);
            return TTT_ERR;
        }
        if (blocks == 0) continue;
        const unsigned grid = (unsigned)blocks;
        if (sums) {
            FLOAT_DISPATCH(dt, T, mt::k_clip_sums<T><<<grid, THREADS, 0, D->stream>>>(c, part))
        } else {
            FLOAT_DISPATCH(dt, T, mt::k_clip_apply<T><<<grid, THREADS, 0, D->stream>>>(c, part, norm, bwd, eta, clip))
        }
        LAUNCHED(sums ? "clip_step (sums)" : "clip_step");
    }
    return TTT_OK;
}

/* Both entries: the forward (bwd 0: dst = out, a = w) or the backward (dst = dg, a = dout); f32 and f64 (bf16 is
 * declined: the op composes it). */
static int clip_run(CuDev *D, int bwd, int n, ttt_tensor *const *dst, const ttt_tensor *const *a,
                    const ttt_tensor *const *g, const ttt_tensor *norm, double eta, double clip) {
    /* On since their first GPU run (H100, 2026-12-07: gradcheck, test_fused, e2e_step --check, memcheck clean;
     * the 8K TTT-E2E step 4-6% faster); TTT_CLIP_STEP_CUDA=0 (read once) makes them decline, so the op composes
     * the update as before, for before/after runs. */
    static const bool on = ttt__env_switch("TTT_CLIP_STEP_CUDA", true);
    if (!on) return TTT_BACKEND_DECLINED;
    const ttt_dtype dt = g[0]->dtype;
    if (dt != TTT_F32 && dt != TTT_F64) return TTT_BACKEND_DECLINED;
    const int64_t B = g[0]->shape[0];
    /* host tables of the call: elements per sequence, and the data pointers of dst, a and g */
    int64_t *per = (int64_t *)malloc((sizeof(int64_t) + 3 * sizeof(void *)) * (size_t)n), P = 0;
    if (!per) {
        ttt_backend_error("clip_step: out of host memory for %d tensors", n);
        return TTT_ERR;
    }
    void **dp = (void **)(per + n);
    const void **ap = (const void **)(dp + n), **gp = ap + n;
    for (int i = 0; i < n; i++) {
        per[i] = B ? numel(g[i]) / B : 0;
        dp[i] = dst[i] ? dst[i]->data : NULL, ap[i] = a[i] ? a[i]->data : NULL, gp[i] = g[i]->data;
        if (!bwd || a[i]) P += mt::clip_chunks(per[i]); /* the tensors the sums pass covers */
    }
    double *nb = norm ? (double *)norm->data : NULL;
    int rc = TTT_OK;
    if (clip > 0) {
        const cudaError_t e = !bwd && B > 0 && P == 0 /* no elements: every norm is 0 */
                                  ? cudaMemsetAsync(nb, 0, sizeof(double) * (size_t)B, D->stream) : cudaSuccess;
        if (e != cudaSuccess) {
            ttt_backend_error("clip_step: cudaMemsetAsync failed: %s", cudaGetErrorString(e));
            rc = TTT_ERR;
        }
        if (rc == TTT_OK && B * P > 0)
            rc = scratch_reserve(D, &D->reduce_scratch, sizeof(double) * (size_t)(B * P), "clip_step");
        /* the forward sums g g, the backward dout g */
        if (rc == TTT_OK) rc = clip_pass(D, 1, n, per, B, P, dp, bwd ? ap : gp, gp, dt, nb, bwd, eta, clip);
    }
    if (rc == TTT_OK) rc = clip_pass(D, 0, n, per, B, P, dp, ap, gp, dt, nb, bwd, eta, clip);
    free(per);
    return rc;
}

int ttt__cu_clip_step(ttt_backend_state *self, int n, ttt_tensor *const *out, ttt_tensor *norm,
                      const ttt_tensor *const *w, const ttt_tensor *const *g, double eta, double clip) {
    ENTER(D, self);
    return clip_run(D, 0, n, out, w, g, norm, eta, clip);
}

int ttt__cu_clip_step_bwd(ttt_backend_state *self, int n, ttt_tensor *const *dg, const ttt_tensor *const *dout,
                          const ttt_tensor *const *g, const ttt_tensor *norm, double eta, double clip) {
    ENTER(D, self);
    return clip_run(D, 1, n, dg, dout, g, norm, eta, clip);
}

template <typename T>
__global__ void k_sgd(int64_t n, T *p, const T *g, T *buf, double lr, double mom, double wd, int nesterov) {
    GRID_LOOP(i, n) {
        double d = (double)ld(g[i]) + wd * (double)ld(p[i]);
        if (mom != 0) {
            double b = mom * (double)ld(buf[i]) + d;
            buf[i] = st<T>(b);
            d = nesterov ? d + mom * b : b;
        }
        p[i] = st<T>((double)ld(p[i]) - lr * d);
    }
}

int ttt__cu_sgd(ttt_backend_state *self, ttt_tensor *p, const ttt_tensor *g, ttt_tensor *buf, double lr, double mom, double wd, int nesterov) {
    ENTER(D, self);
    if (float_only("sgd", p->dtype)) return TTT_ERR;
    int64_t n = numel(p);
    FLOAT_DISPATCH(p->dtype, T, k_sgd<T><<<blocks_for(n), THREADS, 0, D->stream>>>(n, (T *)p->data, (const T *)g->data, (T *)buf->data, lr, mom, wd, nesterov))
    LAUNCHED("sgd");
    return TTT_OK;
}
