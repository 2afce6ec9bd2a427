/* ttt CUDA backend (row kernels: softmax, norms, cross-entropy, one-hot, gather / scatter of rows, RoPE, attention masks):
 * see cuda_internal.h for the instance (CuDev) the entries take and the
 * helpers the files share. */
#include <cub/device/device_radix_sort.cuh>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"
#include "second_order.cuh"

/* ---- row kernels: softmax, norm, cross-entropy ------------------------------------------------------- */

static void rows_cols(const ttt_tensor *t, int64_t *rows, int64_t *cols) {
    *cols = t->ndim ? t->shape[t->ndim - 1] : 1;
    *rows = *cols ? numel(t) / *cols : 0;
}

/* Online softmax: one pass keeps a running max and a sum rescaled to it, a
 * second pass writes; f32 rows accumulate in f32 (exp in f32 is accurate to
 * ~1e-7 relative), f64 rows in f64. */
template <typename T>
__device__ __forceinline__ void merge_max_sum(T &m, T &s, T m2, T s2) {
    T mx = m > m2 ? m : m2;
    if (mx == T(-INFINITY)) return;
    s = s * exp(m - mx) + s2 * exp(m2 - mx);
    m = mx;
}

template <typename S, typename T = typename Acc<S>::type>
__global__ void k_softmax(int64_t cols, int log_out, S *y, const S *x) {
    const S *r = x + blockIdx.x * cols;
    S *o = y + blockIdx.x * cols;
    T m = T(-INFINITY), sum = T(0);
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) merge_max_sum<T>(m, sum, ld(r[j]), T(1));
    for (int off = 16; off > 0; off >>= 1)
        merge_max_sum<T>(m, sum, __shfl_down_sync(0xffffffffu, m, off), __shfl_down_sync(0xffffffffu, sum, off));
    __shared__ T sm[THREADS / 32], ss[THREADS / 32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) {
        sm[warp] = m;
        ss[warp] = sum;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < (int)(blockDim.x / 32); w++) merge_max_sum<T>(sm[0], ss[0], sm[w], ss[w]);
    }
    __syncthreads();
    m = sm[0] == T(-INFINITY) ? T(0) : sm[0]; /* a fully masked row */
    sum = ss[0];
    T lse = log(sum);
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
        T z = ld(r[j]) - m;
        o[j] = st<S>(log_out ? z - lse : exp(z) / sum);
    }
}

int ttt__cu_softmax(ttt_backend_state *self, ttt_tensor *dst, const ttt_tensor *src, int log_out) {
    ENTER(D, self);
    if (float_only("softmax", src->dtype)) return TTT_ERR;
    int64_t rows, cols;
    rows_cols(src, &rows, &cols);
    FLOAT_DISPATCH(src->dtype, T, k_softmax<T><<<(unsigned)rows, THREADS, 0, D->stream>>>(cols, log_out, (T *)dst->data, (const T *)src->data))
    LAUNCHED("softmax");
    return TTT_OK;
}

/* The norm's value v of one element, stored: v rounded, or with a weight g (norm_affine) v rounded, times
 * g, rounded again: the bits of norm followed by a binary mul. */
template <typename T, typename A = typename Acc<T>::type>
__device__ __forceinline__ T norm_out(T v_rounded, const T *g, int64_t j) {
    return g ? st_f<T>(ld(v_rounded) * ld(g[j])) : v_rounded;
}

template <typename T>
__global__ void k_norm(int64_t cols, int layer, double eps, T *y, const T *x, const T *g) {
    const T *r = x + blockIdx.x * cols;
    T *o = y + blockIdx.x * cols;
    double mean = 0;
    if (layer) {
        for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) mean += ld(r[j]);
        mean = block_reduce<double>(mean, 0) / (double)cols;
    }
    double var = 0;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
        double d = ld(r[j]) - mean;
        var += d * d;
    }
    var = block_reduce<double>(var, 0) / (double)cols;
    double rstd = 1.0 / sqrt(var + eps);
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) o[j] = norm_out<T>(st<T>((ld(r[j]) - mean) * rstd), g, j);
}

/* Rows up to WARP_ROW_MAX: a warp per row (8 rows per block, no block-wide
 * barriers), summing in f32 for f32 and bf16 rows (f64 for f64); the block per
 * row above, in f64, takes the long rows. */
enum { WARP_ROW_MAX = 4096 };

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ double warp_sum(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <typename T, typename A = typename Acc<T>::type>
__global__ void k_norm_warp(int64_t rows, int64_t cols, int layer, double eps, T *y, const T *x, const T *g) {
    const int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const T *r = x + row * cols;
    T *o = y + row * cols;
    A mean = 0;
    if (layer) {
        for (int64_t j = lane; j < cols; j += 32) mean += ld(r[j]);
        mean = warp_sum(mean) / (A)cols;
    }
    A var = 0;
    for (int64_t j = lane; j < cols; j += 32) {
        const A d = ld(r[j]) - mean;
        var += d * d;
    }
    var = warp_sum(var) / (A)cols;
    const A rstd = (A)1 / sqrt(var + (A)eps);
    for (int64_t j = lane; j < cols; j += 32) o[j] = norm_out<T>(st_f<T>((ld(r[j]) - mean) * rstd), g, j);
}

/* gamma NULL: the plain norm */
static int norm_launch(CuDev *D, const char *name, ttt_norm_kind kind, ttt_tensor *dst, const ttt_tensor *src,
                       const ttt_tensor *gamma, double eps) {
    if (float_only(name, src->dtype)) return TTT_ERR;
    int64_t rows, cols;
    rows_cols(src, &rows, &cols);
    int layer = kind == TTT_NORM_LAYER;
    if (rows == 0) return TTT_OK;
    const int64_t per_block = THREADS / 32;
    if (cols <= WARP_ROW_MAX && (rows + per_block - 1) / per_block <= INT32_MAX)
        FLOAT_DISPATCH(src->dtype, T, k_norm_warp<T><<<(unsigned)((rows + per_block - 1) / per_block), THREADS, 0, D->stream>>>(rows, cols, layer, eps, (T *)dst->data, (const T *)src->data, gamma ? (const T *)gamma->data : (const T *)NULL))
    else
        FLOAT_DISPATCH(src->dtype, T, k_norm<T><<<(unsigned)rows, THREADS, 0, D->stream>>>(cols, layer, eps, (T *)dst->data, (const T *)src->data, gamma ? (const T *)gamma->data : (const T *)NULL))
    LAUNCHED(name);
    return TTT_OK;
}

int ttt__cu_norm(ttt_backend_state *self, ttt_norm_kind kind, ttt_tensor *dst, const ttt_tensor *src, double eps) {
    ENTER(D, self);
    return norm_launch(D, "norm", kind, dst, src, NULL, eps);
}

int ttt__cu_norm_affine(ttt_backend_state *self, ttt_norm_kind kind, ttt_tensor *dst, const ttt_tensor *src,
                        const ttt_tensor *gamma, double eps) {
    ENTER(D, self);
    return norm_launch(D, "norm_affine", kind, dst, src, gamma, eps);
}

/* The norms' first-order gradient, a warp per row (rows up to WARP_ROW_MAX;
 * longer rows: a block per row), the sums in the arithmetic type (f32 for f32
 * and bf16, f64 for f64). */
template <typename T, typename A = typename Acc<T>::type>
__device__ __forceinline__ void norm_bwd_row(int64_t cols, int layer, double eps, int lane, int width, T *dx, const T *x,
                                             const T *y, const T *dy, A (*sum)(A)) {
    A mean = 0, mg = 0;
    if (layer) {
        for (int64_t j = lane; j < cols; j += width) mean += ld(x[j]), mg += ld(dy[j]);
        mean = sum(mean) / (A)cols, mg = sum(mg) / (A)cols;
    }
    A var = 0, mgy = 0;
    for (int64_t j = lane; j < cols; j += width) {
        const A d = ld(x[j]) - mean;
        var += d * d;
        mgy += ld(dy[j]) * ld(y[j]);
    }
    var = sum(var) / (A)cols, mgy = sum(mgy) / (A)cols;
    const A rstd = (A)1 / sqrt(var + (A)eps);
    for (int64_t j = lane; j < cols; j += width) dx[j] = st_f<T>(rstd * (ld(dy[j]) - mg - ld(y[j]) * mgy));
}

template <typename A> __device__ A warp_sum_a(A v) { return warp_sum(v); }
template <typename A> __device__ A block_sum_a(A v) { return block_reduce<A>(v, 0); }

template <typename T>
__global__ void k_norm_bwd_warp(int64_t rows, int64_t cols, int layer, double eps, T *dx, const T *x, const T *y,
                                const T *dy) {
    typedef typename Acc<T>::type A;
    const int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= rows) return;
    const int64_t o = row * cols;
    norm_bwd_row<T>(cols, layer, eps, threadIdx.x % 32, 32, dx + o, x + o, y + o, dy + o, warp_sum_a<A>);
}

template <typename T>
__global__ void k_norm_bwd_block(int64_t cols, int layer, double eps, T *dx, const T *x, const T *y, const T *dy) {
    typedef typename Acc<T>::type A;
    const int64_t o = (int64_t)blockIdx.x * cols;
    norm_bwd_row<T>(cols, layer, eps, threadIdx.x, blockDim.x, dx + o, x + o, y + o, dy + o, block_sum_a<A>);
}

/* A product rounded on its own, as the composed mul kernel stores it: a plain a * b inside a sum would be
 * contracted into an FMA (one rounding fewer), and the fused backward would drift from the composed one. */
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }

/* norm_affine's first-order gradient. Per row: the forward's statistics again, as the forward kernel of this
 * row length forms them (warp: sums in A; block: in double), give y = norm(x) rounded; g = dy gamma rounded
 * (the composed mul); then norm_bwd_row's sums of g and g y in A and dx; dgx = dy y rounded (the mul whose
 * sum over rows is gamma's gradient). */
template <typename T, typename A = typename Acc<T>::type>
__device__ __forceinline__ void norm_affine_bwd_row(int64_t cols, int layer, double eps, int lane, int width, int block_fwd,
                                                    T *dx, T *dgx, const T *x, const T *gm, const T *dy, A (*sum)(A)) {
    /* the forward's y = norm(x), rounded */
    A fmean = 0, frstd = 0;
    double dmean = 0, drstd = 0;
    if (block_fwd) { /* k_norm: double */
        if (layer) {
            for (int64_t j = lane; j < cols; j += width) dmean += ld(x[j]);
            dmean = block_reduce<double>(dmean, 0) / (double)cols;
        }
        double var = 0;
        for (int64_t j = lane; j < cols; j += width) {
            double d = ld(x[j]) - dmean;
            var += d * d;
        }
        var = block_reduce<double>(var, 0) / (double)cols;
        drstd = 1.0 / sqrt(var + eps);
    } else { /* k_norm_warp: A */
        if (layer) {
            for (int64_t j = lane; j < cols; j += width) fmean += ld(x[j]);
            fmean = sum(fmean) / (A)cols;
        }
        A var = 0;
        for (int64_t j = lane; j < cols; j += width) {
            const A d = ld(x[j]) - fmean;
            var += d * d;
        }
        var = sum(var) / (A)cols;
        frstd = (A)1 / sqrt(var + (A)eps);
    }
#define NORM_Y(j) (block_fwd ? st<T>((ld(x[j]) - dmean) * drstd) : st_f<T>((ld(x[j]) - fmean) * frstd))
#define NORM_G(j) st_f<T>(mul_rn(ld(dy[j]), ld(gm[j])))
    /* norm_bwd_row with dy := g, y := NORM_Y */
    A mean = 0, mg = 0;
    if (layer) {
        for (int64_t j = lane; j < cols; j += width) mean += ld(x[j]), mg += ld(NORM_G(j));
        mean = sum(mean) / (A)cols, mg = sum(mg) / (A)cols;
    }
    A var = 0, mgy = 0;
    for (int64_t j = lane; j < cols; j += width) {
        const A d = ld(x[j]) - mean;
        var += d * d;
        mgy += ld(NORM_G(j)) * ld(NORM_Y(j));
    }
    var = sum(var) / (A)cols, mgy = sum(mgy) / (A)cols;
    const A rstd = (A)1 / sqrt(var + (A)eps);
    for (int64_t j = lane; j < cols; j += width) {
        const T y = NORM_Y(j);
        dx[j] = st_f<T>(rstd * (ld(NORM_G(j)) - mg - ld(y) * mgy));
        if (dgx) dgx[j] = st_f<T>(ld(dy[j]) * ld(y));
    }
#undef NORM_Y
#undef NORM_G
}

template <typename T>
__global__ void k_norm_affine_bwd_warp(int64_t rows, int64_t cols, int layer, double eps, T *dx, T *dgx, const T *x,
                                       const T *gm, const T *dy) {
    typedef typename Acc<T>::type A;
    const int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= rows) return;
    const int64_t o = row * cols;
    norm_affine_bwd_row<T>(cols, layer, eps, threadIdx.x % 32, 32, 0, dx + o, dgx ? dgx + o : dgx, x + o, gm, dy + o,
                           warp_sum_a<A>);
}

template <typename T>
__global__ void k_norm_affine_bwd_block(int64_t cols, int layer, double eps, T *dx, T *dgx, const T *x, const T *gm,
                                        const T *dy) {
    typedef typename Acc<T>::type A;
    const int64_t o = (int64_t)blockIdx.x * cols;
    norm_affine_bwd_row<T>(cols, layer, eps, threadIdx.x, blockDim.x, 1, dx + o, dgx ? dgx + o : dgx, x + o, gm, dy + o,
                           block_sum_a<A>);
}

int ttt__cu_norm_affine_bwd(ttt_backend_state *self, ttt_norm_kind kind, ttt_tensor *dx, ttt_tensor *dgx, const ttt_tensor *x,
                            const ttt_tensor *gamma, const ttt_tensor *dy, double eps) {
    ENTER(D, self);
    if (float_only("norm_affine_bwd", x->dtype)) return TTT_ERR;
    int64_t rows, cols;
    rows_cols(x, &rows, &cols);
    if (rows == 0) return TTT_OK;
    const int layer = kind == TTT_NORM_LAYER;
    const int64_t per_block = THREADS / 32, blocks = (rows + per_block - 1) / per_block;
    /* the forward's kernel choice (norm_launch), so y = norm(x) is recomputed with its bits */
    if (cols <= WARP_ROW_MAX && blocks <= INT32_MAX)
        FLOAT_DISPATCH(x->dtype, T, k_norm_affine_bwd_warp<T><<<(unsigned)blocks, THREADS, 0, D->stream>>>(rows, cols, layer, eps, (T *)dx->data, dgx ? (T *)dgx->data : (T *)NULL, (const T *)x->data, (const T *)gamma->data, (const T *)dy->data))
    else
        FLOAT_DISPATCH(x->dtype, T, k_norm_affine_bwd_block<T><<<(unsigned)rows, THREADS, 0, D->stream>>>(cols, layer, eps, (T *)dx->data, dgx ? (T *)dgx->data : (T *)NULL, (const T *)x->data, (const T *)gamma->data, (const T *)dy->data))
    LAUNCHED("norm_affine_bwd");
    return TTT_OK;
}

int ttt__cu_norm_bwd(ttt_backend_state *self, ttt_norm_kind kind, ttt_tensor *dx, const ttt_tensor *x, const ttt_tensor *y, const ttt_tensor *dy,
                       double eps) {
    ENTER(D, self);
    if (float_only("norm_bwd", x->dtype)) return TTT_ERR;
    int64_t rows, cols;
    rows_cols(x, &rows, &cols);
    if (rows == 0) return TTT_OK;
    const int layer = kind == TTT_NORM_LAYER;
    const int64_t per_block = THREADS / 32, blocks = (rows + per_block - 1) / per_block;
    if (cols <= WARP_ROW_MAX && blocks <= INT32_MAX)
        FLOAT_DISPATCH(x->dtype, T, k_norm_bwd_warp<T><<<(unsigned)blocks, THREADS, 0, D->stream>>>(rows, cols, layer, eps, (T *)dx->data, (const T *)x->data, (const T *)y->data, (const T *)dy->data))
    else
        FLOAT_DISPATCH(x->dtype, T, k_norm_bwd_block<T><<<(unsigned)rows, THREADS, 0, D->stream>>>(cols, layer, eps, (T *)dx->data, (const T *)x->data, (const T *)y->data, (const T *)dy->data))
    LAUNCHED("norm_bwd");
    return TTT_OK;
}

/* The RMS norm's second order (second_order.cuh): a warp per row. */
int ttt__cu_norm_bwd2(ttt_backend_state *self, ttt_norm_kind kind, ttt_tensor *gx, ttt_tensor *gdy, ttt_tensor *ggx,
                      const ttt_tensor *x, const ttt_tensor *gamma, const ttt_tensor *dy, const ttt_tensor *u,
                      const ttt_tensor *v, double eps) {
    ENTER(D, self);
    if (kind != TTT_NORM_RMS) return TTT_BACKEND_DECLINED;
    if (float_only("norm (second order)", x->dtype)) return TTT_ERR;
    int64_t rows, cols;
    rows_cols(x, &rows, &cols);
    const int64_t per_block = THREADS / 32, blocks = (rows + per_block - 1) / per_block;
    if (rows == 0 || (!gx && !gdy && !ggx)) return TTT_OK;
    if (blocks > INT32_MAX) return TTT_BACKEND_DECLINED;
#define P(t) ((t) ? (T *)(t)->data : (T *)NULL)
#define C(t) ((t) ? (const T *)(t)->data : (const T *)NULL)
    FLOAT_DISPATCH(x->dtype, T, so2::k_rms_norm_bwd2<T><<<(unsigned)blocks, THREADS, 0, D->stream>>>(rows, cols, eps, P(gx), P(gdy), P(ggx), C(x), C(gamma), C(dy), C(u), C(v)))
#undef P
#undef C
    LAUNCHED("norm (second order)");
    return TTT_OK;
}

__device__ __forceinline__ void flag_bad(int *flag, int64_t pos, int value) {
    if (atomicCAS(flag, 0, (int)pos + 1) == 0) flag[1] = value;
}

/* The loss's dtype for logits of dtype T: f32 for f32 and bf16 (the loss is never rounded to bf16), f64 for f64. */
template <typename T>
using LossT = typename Acc<T>::type;

/* Max and sum of exponentials of one row of v logits r (the log-sum-exp is mx + log(sum)): each thread keeps a
 * running max and a sum rescaled when the max grows, so the row is read once; the block then merges the pairs
 * (f32 for f32 / bf16 rows, f64 for f64). */
template <typename T>
__device__ void row_lse(const T *r, int64_t v, typename Acc<T>::type *mx_out, typename Acc<T>::type *sum_out) {
    typedef typename Acc<T>::type A;
    A mx = -INFINITY, sum = 0;
    for (int64_t j = threadIdx.x; j < v; j += blockDim.x) {
        const A x = ld(r[j]);
        if (x > mx) {
            sum = sum * exp(mx - x) + 1;
            mx = x;
        } else if (x != -INFINITY) { /* (-inf adds nothing; exp(-inf - -inf) would be NaN) */
            sum += exp(x - mx);
        }
    }
    const A bmx = block_reduce<A>(mx, 1);
    sum = mx == -INFINITY ? (A)0 : sum * exp(mx - bmx);
    *sum_out = block_reduce<A>(sum, 0);
    *mx_out = bmx;
}

template <typename T>
__global__ void k_cross_entropy(int64_t v, int64_t ldx, int ignore, int *flag, LossT<T> *y, const T *x, const int32_t *t) {
    typedef typename Acc<T>::type A;
    int64_t row = blockIdx.x;
    int tg = t[row];
    if (tg == ignore) {
        if (threadIdx.x == 0) y[row] = 0;
        return;
    }
    if (tg < 0 || tg >= v) {
        if (threadIdx.x == 0) flag_bad(flag, row, tg);
        return;
    }
    const T *r = x + row * ldx;
    A mx, sum;
    row_lse(r, v, &mx, &sum);
    if (threadIdx.x == 0) y[row] = (LossT<T>)((double)mx + log((double)sum) - (double)ld(r[tg]));
}

/* Validation shared by both directions: spaced rows, and the loss in LossT of the logits' dtype. */
static int ce_check(const char *k, const ttt_tensor *logits, const ttt_tensor *loss, int64_t ldx) {
    if (ldx < 0 || ldx > INT64_MAX / 2) {
        ttt_backend_error("%s: the logits' rows must be evenly spaced with a unit last stride", k);
        return TTT_ERR;
    }
    const ttt_dtype want = logits->dtype == TTT_BF16 ? TTT_F32 : logits->dtype;
    if (loss->dtype != want) {
        ttt_backend_error("%s: the loss must be %s for %s logits, got %s", k, ttt_dtype_name(want),
                          ttt_dtype_name(logits->dtype), ttt_dtype_name(loss->dtype));
        return TTT_ERR;
    }
    return TTT_OK;
}

int ttt__cu_cross_entropy(ttt_backend_state *self, ttt_tensor *dst, const ttt_tensor *logits, const ttt_tensor *targets, int ignore) {
    ENTER(D, self);
    const int64_t ldx = ttt_row_stride(logits);
    if (float_only("cross_entropy", logits->dtype) || ce_check("cross_entropy", logits, dst, ldx) || flag_reset(D))
        return TTT_ERR;
    int64_t rows, v;
    rows_cols(logits, &rows, &v);
    FLOAT_DISPATCH(logits->dtype, T,
                   k_cross_entropy<T><<<(unsigned)rows, THREADS, 0, D->stream>>>(v, ldx, ignore, D->flag, (LossT<T> *)dst->data, (const T *)logits->data, (const int32_t *)targets->data))
    LAUNCHED("cross_entropy");
    return flag_check(D, "cross_entropy: target", "row", v);
}

/* One block per row: the row's log-sum-exp in one read, then the gradient row written once; the
 * probabilities never exist apart from it. */
template <typename T>
__global__ void k_cross_entropy_bwd(int64_t v, int64_t ldx, int ignore, int *flag, T *y, const T *x, const int32_t *t,
                                    const LossT<T> *grow) {
    typedef typename Acc<T>::type A;
    const int64_t row = blockIdx.x;
    const int tg = t[row];
    T *o = y + row * v;
    if (tg == ignore || tg < 0 || tg >= v) {
        if (tg != ignore && threadIdx.x == 0) flag_bad(flag, row, tg);
        for (int64_t j = threadIdx.x; j < v; j += blockDim.x) o[j] = st<T>(0.0);
        return;
    }
    const T *r = x + row * ldx;
    A mx, sum;
    row_lse(r, v, &mx, &sum);
    const A scale = (A)grow[row] / sum, g = (A)grow[row];
    for (int64_t j = threadIdx.x; j < v; j += blockDim.x)
        o[j] = st_f<T>(exp(ld(r[j]) - mx) * scale - (j == tg ? g : (A)0));
}

int ttt__cu_cross_entropy_bwd(ttt_backend_state *self, ttt_tensor *dst, const ttt_tensor *logits, const ttt_tensor *targets,
                                const ttt_tensor *grow, int ignore) {
    ENTER(D, self);
    const int64_t ldx = ttt_row_stride(logits);
    if (float_only("cross_entropy_bwd", logits->dtype) || ce_check("cross_entropy_bwd", logits, grow, ldx) ||
        flag_reset(D))
        return TTT_ERR;
    int64_t rows, v;
    rows_cols(logits, &rows, &v);
    FLOAT_DISPATCH(logits->dtype, T,
                   k_cross_entropy_bwd<T><<<(unsigned)rows, THREADS, 0, D->stream>>>(v, ldx, ignore, D->flag, (T *)dst->data, (const T *)logits->data, (const int32_t *)targets->data, (const LossT<T> *)grow->data))
    LAUNCHED("cross_entropy_bwd");
    return flag_check(D, "cross_entropy: target", "row", v);
}

/* the cross-entropy's second order (second_order.cuh): a block per row */
int ttt__cu_cross_entropy_bwd2(ttt_backend_state *self, ttt_tensor *gx, ttt_tensor *ggrow, const ttt_tensor *logits,
                               const ttt_tensor *targets, const ttt_tensor *grow, const ttt_tensor *u, int ignore) {
    ENTER(D, self);
    const int64_t ldx = ttt_row_stride(logits);
    if (float_only("cross_entropy (second order)", logits->dtype) ||
        ce_check("cross_entropy (second order)", logits, grow, ldx))
        return TTT_ERR;
    int64_t rows, v;
    rows_cols(logits, &rows, &v);
    if (rows == 0 || (!gx && !ggrow)) return TTT_OK;
    FLOAT_DISPATCH(logits->dtype, T,
                   so2::k_cross_entropy_bwd2<T><<<(unsigned)rows, THREADS, 0, D->stream>>>(v, ldx, ignore, gx ? (T *)gx->data : (T *)NULL, ggrow ? (LossT<T> *)ggrow->data : (LossT<T> *)NULL, (const T *)logits->data, (const int32_t *)targets->data, (const LossT<T> *)grow->data, (const T *)u->data))
    LAUNCHED("cross_entropy (second order)");
    return TTT_OK;
}

template <typename T>
__global__ void k_one_hot(int64_t rows, int64_t v, int ignore, int *flag, T *y, const int32_t *t) {
    GRID_LOOP(i, rows * v) {
        int64_t r = i / v, j = i % v;
        int tg = t[r];
        if (tg != ignore && (tg < 0 || tg >= v)) {
            if (j == 0) flag_bad(flag, r, tg);
            y[i] = st<T>(0.0);
        } else {
            y[i] = st<T>((tg != ignore && j == tg) ? 1.0 : 0.0);
        }
    }
}

int ttt__cu_one_hot(ttt_backend_state *self, ttt_tensor *dst, const ttt_tensor *targets, int ignore) {
    ENTER(D, self);
    if (float_only("one_hot", dst->dtype) || flag_reset(D)) return TTT_ERR;
    int64_t rows, v;
    rows_cols(dst, &rows, &v);
    FLOAT_DISPATCH(dst->dtype, T, k_one_hot<T><<<blocks_for(rows * v), THREADS, 0, D->stream>>>(rows, v, ignore, D->flag, (T *)dst->data, (const int32_t *)targets->data))
    LAUNCHED("one_hot");
    return flag_check(D, "one_hot: target", "row", v);
}

/* ---- gather / scatter-add -------------------------------------------------------------------------------- */

template <typename T>
__global__ void k_gather(int64_t n, int64_t d, int64_t v, int *flag, T *y, const T *table, const int32_t *ids) {
    GRID_LOOP(i, n * d) {
        int64_t r = i / d, j = i % d;
        int id = ids[r];
        if (id < 0 || id >= v) {
            if (j == 0) flag_bad(flag, r, id);
            y[i] = st<T>(0.0);
        } else {
            y[i] = table[id * d + j];
        }
    }
}

int ttt__cu_gather_rows(ttt_backend_state *self, ttt_tensor *dst, const ttt_tensor *table, const ttt_tensor *ids) {
    ENTER(D, self);
    if (float_only("gather_rows", table->dtype) || flag_reset(D)) return TTT_ERR;
    int64_t n = numel(ids), v = table->shape[0], d = table->shape[1];
    FLOAT_DISPATCH(table->dtype, T, k_gather<T><<<blocks_for(n * d), THREADS, 0, D->stream>>>(n, d, v, D->flag, (T *)dst->data, (const T *)table->data, (const int32_t *)ids->data))
    LAUNCHED("gather_rows");
    return flag_check(D, "embedding: id", "position", v);
}

/* Deterministic scatter-add: a stable radix sort of (id, position) pairs
 * groups each id's positions in increasing order, then one block per group
 * sums its source rows in that order (in f64) and adds them to the table row.
 * Atomic adds would be faster by a little and give different bits on every
 * run; the embedding gradient of a language model goes through here. */
__global__ void k_iota(int64_t n, int32_t *y) {
    GRID_LOOP(i, n) y[i] = (int32_t)i;
}

/* One block per group. Its 8 warps take the group's rows in turn (warp w: rows w, w + 8, ...), each lane
 * SCATTER_CPT columns 32 apart, summing in f64; the warps' partial sums are then added in warp order. The
 * order is fixed, so the bits repeat run to run, and a frequent token's long group (thousands of rows in a
 * language model's batch) is summed 8 rows at a time instead of one. */
enum { SCATTER_WARPS = 8, SCATTER_CPT = 4, SCATTER_TILE = 32 * SCATTER_CPT };

template <typename T>
__global__ void __launch_bounds__(32 * SCATTER_WARPS) k_scatter_groups(int64_t n, int64_t d, int64_t v, int *flag, T *y,
                                                                       const T *src, const int32_t *ids, const int32_t *pos) {
    __shared__ double part[SCATTER_WARPS][SCATTER_TILE];
    __shared__ int64_t group_end;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
        const int id = ids[i];
        if (i > 0 && ids[i - 1] == id) continue; /* not the first of its group */
        if (id < 0 || id >= v) {
            if (threadIdx.x == 0) flag_bad(flag, pos[i], id);
            continue;
        }
        if (threadIdx.x == 0) {
            int64_t e = i + 1;
            while (e < n && ids[e] == id) e++;
            group_end = e;
        }
        __syncthreads();
        const int64_t e = group_end;
        __syncthreads(); /* everyone has read it before thread 0 may write the next group's */
        for (int64_t c0 = 0; c0 < d; c0 += SCATTER_TILE) {
            double acc[SCATTER_CPT] = {0};
            for (int64_t g = i + warp; g < e; g += SCATTER_WARPS) {
                const T *row = src + (int64_t)pos[g] * d;
#pragma unroll
                for (int c = 0; c < SCATTER_CPT; c++) {
                    const int64_t j = c0 + lane + 32 * c;
                    if (j < d) acc[c] += ld(row[j]);
                }
            }
#pragma unroll
            for (int c = 0; c < SCATTER_CPT; c++) part[warp][lane + 32 * c] = acc[c];
            __syncthreads();
            for (int t = threadIdx.x; t < SCATTER_TILE; t += blockDim.x) {
                const int64_t j = c0 + t;
                if (j >= d) continue;
                double sum = ld(y[id * d + j]);
                for (int w = 0; w < SCATTER_WARPS; w++) sum += part[w][t];
                y[id * d + j] = st<T>(sum);
            }
            __syncthreads();
        }
    }
}

int ttt__cu_scatter_add_rows(ttt_backend_state *self, ttt_tensor *dst, const ttt_tensor *src, const ttt_tensor *ids) {
    ENTER(D, self);
    if (float_only("scatter_add_rows", src->dtype) || flag_reset(D)) return TTT_ERR;
    int64_t n = numel(ids), v = dst->shape[0], d = dst->shape[1];
    if (n == 0) return TTT_OK;
    if (n > INT32_MAX) {
        ttt_backend_error("scatter_add_rows: %lld ids are more than one sort handles", (long long)n);
        return TTT_ERR;
    }
    /* scratch: sorted ids, positions, sorted positions, then the sort's own temporary storage */
    size_t sort_bytes = 0;
    cudaError_t e = cub::DeviceRadixSort::SortPairs(NULL, sort_bytes, (const int32_t *)NULL, (int32_t *)NULL,
                                                    (const int32_t *)NULL, (int32_t *)NULL, (int)n, 0, 32, D->stream);
    if (e != cudaSuccess) {
        ttt_backend_error("cub::DeviceRadixSort::SortPairs (size query) failed: %s", cudaGetErrorString(e));
        return TTT_ERR;
    }
    const size_t ints = ((size_t)n * sizeof(int32_t) + 255) & ~(size_t)255;
    if (scratch_reserve(D, &D->sort_scratch, 3 * ints + sort_bytes, "scatter_add_rows")) return TTT_ERR;
    char *base = (char *)D->sort_scratch.p;
    int32_t *ids_sorted = (int32_t *)base, *pos = (int32_t *)(base + ints), *pos_sorted = (int32_t *)(base + 2 * ints);
    k_iota<<<blocks_for(n), THREADS, 0, D->stream>>>(n, pos);
    LAUNCHED("scatter_add_rows (positions)");
    e = cub::DeviceRadixSort::SortPairs(base + 3 * ints, sort_bytes, (const int32_t *)ids->data, ids_sorted, pos,
                                        pos_sorted, (int)n, 0, 32, D->stream);
    if (e != cudaSuccess) {
        ttt_backend_error("cub::DeviceRadixSort::SortPairs failed: %s", cudaGetErrorString(e));
        return TTT_ERR;
    }
    const unsigned grid = (unsigned)(n < 65535 * 32 ? n : 65535 * 32);
    const int threads = 32 * SCATTER_WARPS;
    FLOAT_DISPATCH(src->dtype, T,
                   k_scatter_groups<T><<<grid, threads, 0, D->stream>>>(n, d, v, D->flag, (T *)dst->data, (const T *)src->data,
                                                                       ids_sorted, pos_sorted))
    LAUNCHED("scatter_add_rows");
    return flag_check(D, "scatter_add_rows: id", "position", v);
}

/* ---- RoPE, attention mask ----------------------------------------------------------------------------------- */

/* RoPE in two kernels: the angles' cosines and sines once per (position, frequency), in double into the
 * instance's rope_scratch, then the rotation of every row reading them (L2-resident: 8K positions x 32
 * frequencies are 4 MB). Computing them per element (pow, cos, sin in double) made the rotation several
 * times slower than its memory traffic; the values are the same bits either way. */
__global__ void k_rope_table(int64_t seq, int64_t half, int64_t d, int64_t pos0, double theta, int inverse, double2 *tab) {
    GRID_LOOP(i, seq * half) {
        const int64_t t = i / half, k = i % half;
        double ang = (double)(pos0 + t) * pow(theta, -2.0 * (double)k / (double)d);
        if (inverse) ang = -ang;
        tab[i] = make_double2(cos(ang), sin(ang));
    }
}

/* The rows of src and dst (every axis but the last, whose stride is 1) as the kernel walks them: dense
 * tensors by r * d, others (a head permutation of the projection, written dense) by their strides. */
struct RopeRows {
    int n;                              /* leading axes */
    int64_t shape[MAXD], ss[MAXD], ds[MAXD];
};

template <typename T, bool DENSE>
__global__ void k_rope(int64_t rows, int64_t d, int64_t inner, int64_t seq, RopeRows g, const double2 *tab, T *y,
                       const T *x) {
    int64_t half = d / 2;
    GRID_LOOP(i, rows * half) {
        int64_t r = i / half, k = i % half, os = r * d, od = r * d;
        if (!DENSE) {
            os = od = 0;
            for (int a = g.n - 1; a >= 0; a--) {
                const int64_t idx = r % g.shape[a];
                r /= g.shape[a];
                os += idx * g.ss[a];
                od += idx * g.ds[a];
            }
            r = i / half;
        }
        const double2 cs = tab[((r / inner) % seq) * half + k];
        double x1 = ld(x[os + k]), x2 = ld(x[os + k + half]);
        y[od + k] = st<T>(x1 * cs.x - x2 * cs.y);
        y[od + k + half] = st<T>(x2 * cs.x + x1 * cs.y);
    }
}

int ttt__cu_rope(ttt_backend_state *self, ttt_tensor *dst, const ttt_tensor *src, int seq_axis, int64_t pos0, double theta, int inverse) {
    ENTER(D, self);
    if (float_only("rope", src->dtype)) return TTT_ERR;
    const int nd = src->ndim;
    if ((src->shape[nd - 1] > 1 && src->stride[nd - 1] != 1) || (dst->shape[nd - 1] > 1 && dst->stride[nd - 1] != 1)) {
        ttt_backend_error("rope: the last axis must have a unit stride");
        return TTT_ERR;
    }
    int64_t rows, d, inner = 1;
    rows_cols(src, &rows, &d);
    for (int a = seq_axis + 1; a < src->ndim - 1; a++) inner *= src->shape[a];
    int64_t seq = src->shape[seq_axis], half = d / 2, n = rows * half;
    if (n == 0) return TTT_OK;
    if (scratch_reserve(D, &D->rope_scratch, sizeof(double2) * (size_t)(seq * half), "rope")) return TTT_ERR;
    double2 *tab = (double2 *)D->rope_scratch.p;
    k_rope_table<<<blocks_for(seq * half), THREADS, 0, D->stream>>>(seq, half, d, pos0, theta, inverse, tab);
    RopeRows g;
    memset(&g, 0, sizeof g);
    g.n = nd - 1;
    for (int a = 0; a < nd - 1; a++) g.shape[a] = src->shape[a], g.ss[a] = src->stride[a], g.ds[a] = dst->stride[a];
    if (is_dense(src) && is_dense(dst))
        FLOAT_DISPATCH(src->dtype, T, k_rope<T, true><<<blocks_for(n), THREADS, 0, D->stream>>>(rows, d, inner, seq, g, tab, (T *)dst->data, (const T *)src->data))
    else
        FLOAT_DISPATCH(src->dtype, T, k_rope<T, false><<<blocks_for(n), THREADS, 0, D->stream>>>(rows, d, inner, seq, g, tab, (T *)dst->data, (const T *)src->data))
    LAUNCHED("rope");
    return TTT_OK;
}

template <typename T>
__global__ void k_mask(int64_t n, int64_t tq, int64_t tk, int64_t window, int64_t q_offset, double fill, T *y, const T *x) {
    GRID_LOOP(i, n) {
        int64_t j = i % tk, qp = q_offset + (i / tk) % tq;
        int keep = j <= qp && (window <= 0 || qp - j < window);
        y[i] = keep ? x[i] : st<T>(fill);
    }
}

int ttt__cu_attn_mask(ttt_backend_state *self, ttt_tensor *dst, const ttt_tensor *src, int64_t window, int64_t q_offset, double fill) {
    ENTER(D, self);
    if (float_only("attn_mask", src->dtype)) return TTT_ERR;
    int64_t n = numel(src), tk = src->shape[src->ndim - 1], tq = src->shape[src->ndim - 2];
    FLOAT_DISPATCH(src->dtype, T, k_mask<T><<<blocks_for(n), THREADS, 0, D->stream>>>(n, tq, tk, window, q_offset, fill, (T *)dst->data, (const T *)src->data))
    LAUNCHED("attn_mask");
    return TTT_OK;
}

