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

/* ---- optimizers (fused) ---------------------------------------------------------------------------------------- */

template <typename T>
__global__ void k_adamw(int64_t n, T *p, const T *g, T *m, T *v, double lr, double b1, double b2, double eps, double wd,
                        double bc1, double bc2) {
    GRID_LOOP(i, n) {
        double w = (double)ld(p[i]) * (1.0 - lr * wd), gi = ld(g[i]);
        double mi = b1 * (double)ld(m[i]) + (1.0 - b1) * gi;
        double vi = b2 * (double)ld(v[i]) + (1.0 - b2) * gi * gi;
        m[i] = st<T>(mi);
        v[i] = st<T>(vi);
        p[i] = st<T>(w - lr * (mi / bc1) / (sqrt(vi / bc2) + eps));
    }
}

int ttt__cu_adamw(ttt_backend_state *self, ttt_tensor *p, const ttt_tensor *g, ttt_tensor *m, ttt_tensor *v, double lr, double b1, double b2,
                    double eps, double wd, int64_t step) {
    ENTER(D, self);
    if (float_only("adamw", p->dtype)) return TTT_ERR;
    int64_t n = numel(p);
    double bc1 = 1.0 - pow(b1, (double)step), bc2 = 1.0 - pow(b2, (double)step);
    FLOAT_DISPATCH(p->dtype, T, k_adamw<T><<<blocks_for(n), THREADS, 0, D->stream>>>(n, (T *)p->data, (const T *)g->data, (T *)m->data, (T *)v->data, lr, b1, b2, eps, wd, bc1, bc2))
    LAUNCHED("adamw");
    return TTT_OK;
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
