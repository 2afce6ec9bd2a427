/* Second-order VJPs of the fused first-order backwards that TTT-E2E's inner loop differentiates: the RMS norm's
 * (norm_bwd2), SwiGLU's (swiglu_bwd2) and the cross-entropy's (cross_entropy_bwd2). Without them a create_graph backward composes each norm from about ten
 * primitive ops and the outer pass differentiates all of them (docs/benchmarks.md, "The TTT-E2E step"); with
 * them the inner gradient is one kernel per norm or gate, and its VJP one more. The formulas are derived in
 * src/ops/nn.c and src/ops/elementwise.c beside their composed fallbacks.
 *
 * Device code only, so dev/cuda/emu.h can run it on the host: the includer provides Acc<T>, ld(), st_f<T>(),
 * GRID_LOOP and block_reduce (cuda_internal.h and reduce_kernels.cuh, or the emulator test). Sums and products are formed in the arithmetic type
 * (f32 for bf16 and f32, f64 for f64) and each output is rounded once. */
#ifndef TTT_SECOND_ORDER_CUH
#define TTT_SECOND_ORDER_CUH

#include <math.h>
#include <stdint.h>

namespace so2 {

template <typename A> __device__ __forceinline__ A lane_sum(A v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* The VJP of the RMS norm's first-order gradient (dx, dgx) = (J (dy gamma), dy n) along the cotangents u (of
 * dx) and v (of dgx), per row of D, with r = 1 / sqrt(mean(x^2) + eps), n = r x, h = dy gamma (gamma NULL:
 * 1), J = r (I - n n^T / D) (symmetric), and the row means a = n.u / D, m = n.h / D, c = u.h / D, e = n.w / D
 * (w = v dy):
 *   gdy = gamma J u + v n                 = gamma r (u - n a) + v n
 *   ggx = dy J u                          (gamma's gradient before the sum over rows)
 *   gx  = r^2 (n (3 a m - c) - m u - a h) + r (w - n e)
 * A warp per row; u, v and any output may be NULL (zero, not wanted). Blocks of THREADS / 32 rows. */
template <typename T>
__global__ void k_rms_norm_bwd2(int64_t rows, int64_t D, double eps, T *gx, T *gdy, T *ggx, const T *x,
                                const T *gamma, const T *dy, const T *u, const T *v) {
    typedef typename Acc<T>::type A;
    const int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= rows) return;
    const int lane = threadIdx.x % 32;
    const int64_t o = row * D;
    A xx = 0, xu = 0, xh = 0, uh = 0, xw = 0;
    for (int64_t j = lane; j < D; j += 32) {
        const A xj = ld(x[o + j]), dj = ld(dy[o + j]), hj = gamma ? dj * ld(gamma[j]) : dj;
        const A uj = u ? ld(u[o + j]) : A(0), wj = v ? ld(v[o + j]) * dj : A(0);
        xx += xj * xj, xu += xj * uj, xh += xj * hj, uh += uj * hj, xw += xj * wj;
    }
    xx = lane_sum(xx), xu = lane_sum(xu), xh = lane_sum(xh), uh = lane_sum(uh), xw = lane_sum(xw);
    const A inv_d = A(1) / (A)D, r = A(1) / sqrt(xx * inv_d + (A)eps);
    const A a = r * xu * inv_d, m = r * xh * inv_d, c = uh * inv_d, e = r * xw * inv_d;
    for (int64_t j = lane; j < D; j += 32) {
        const A xj = ld(x[o + j]), dj = ld(dy[o + j]), gj = gamma ? ld(gamma[j]) : A(1), hj = dj * gj;
        const A uj = u ? ld(u[o + j]) : A(0), vj = v ? ld(v[o + j]) : A(0), n = r * xj;
        const A ju = r * (uj - n * a);
        if (gdy) gdy[o + j] = st_f<T>(gj * ju + vj * n);
        if (ggx) ggx[o + j] = st_f<T>(dj * ju);
        if (gx) gx[o + j] = st_f<T>(r * r * (n * (A(3) * a * m - c) - m * uj - a * hj) + r * (vj * dj - n * e));
    }
}

/* The VJP of SwiGLU's first-order gradient (da, db) = (dy b s1, dy silu(a)) along u (of da) and v (of db), with
 * s = sigmoid(a), silu = a s, s1 = silu'(a) = s (1 + a (1 - s)), s2 = silu''(a) = s (1 - s) (2 + a (1 - 2 s)):
 *   ga = u dy b s2 + v dy s1,   gb = u dy s1,   gdy = u b s1 + v silu
 * u, v and any output may be NULL. */
template <typename T>
__global__ void k_swiglu_bwd2(int64_t n, T *ga, T *gb, T *gdy, const T *a, const T *b, const T *dy, const T *u,
                              const T *v) {
    typedef typename Acc<T>::type A;
    GRID_LOOP(i, n) {
        const A x = ld(a[i]), y = ld(b[i]), g = ld(dy[i]);
        const A ui = u ? ld(u[i]) : A(0), vi = v ? ld(v[i]) : A(0);
        const A s = A(1) / (A(1) + exp(-x)), s1 = s * (A(1) + x * (A(1) - s));
        const A s2 = s * (A(1) - s) * (A(2) + x * (A(1) - A(2) * s));
        if (ga) ga[i] = st_f<T>(g * (ui * y * s2 + vi * s1));
        if (gb) gb[i] = st_f<T>(ui * g * s1);
        if (gdy) gdy[i] = st_f<T>(ui * y * s1 + vi * x * s);
    }
}

/* The VJP of the cross-entropy's first-order gradient dz = grow (p - onehot(t)) (per row r of V logits, p its
 * softmax) along u: gz = grow p (u - u.p) (the softmax's Jacobian, symmetric), ggrow = u.p - u[t]; zero rows
 * where t is ignored. A block per row: the max, then the sums of e = exp(z - max) and of u e, then the writes.
 * The logits' rows are ldx apart; u and gz dense; gz or ggrow may be NULL. */
template <typename T>
__global__ void k_cross_entropy_bwd2(int64_t V, int64_t ldx, int ignore, T *gz, typename Acc<T>::type *ggrow,
                                     const T *logits, const int32_t *targets, const typename Acc<T>::type *grow,
                                     const T *u) {
    typedef typename Acc<T>::type A;
    const int64_t row = blockIdx.x;
    const T *z = logits + row * ldx, *ur = u + row * V;
    T *gr = gz ? gz + row * V : (T *)0;
    const int t = targets[row];
    if (t == ignore) {
        if (gr)
            for (int64_t j = threadIdx.x; j < V; j += blockDim.x) gr[j] = st_f<T>(A(0));
        if (ggrow && threadIdx.x == 0) ggrow[row] = A(0);
        return;
    }
    A mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) mx = fmax(mx, ld(z[j]));
    mx = block_reduce<A>(mx, 1);
    A s = 0, su = 0;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
        const A e = exp(ld(z[j]) - mx);
        s += e, su += ld(ur[j]) * e;
    }
    s = block_reduce<A>(s, 0);
    su = block_reduce<A>(su, 0);
    const A up = su / s, g = grow[row], inv = A(1) / s;
    if (gr)
        for (int64_t j = threadIdx.x; j < V; j += blockDim.x)
            gr[j] = st_f<T>(g * exp(ld(z[j]) - mx) * inv * (ld(ur[j]) - up));
    if (ggrow && threadIdx.x == 0) ggrow[row] = up - ld(ur[t]);
}

} // namespace so2

#endif
