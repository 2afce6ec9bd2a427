/* ttt CUDA backend (elementwise: copy, fill, unary, binary, where):
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
#include "second_order.cuh"

static __device__ __forceinline__ double load_any(const char *p, int dt) {
    switch (dt) {
    case TTT_F32: return *(const float *)p;
    case TTT_F64: return *(const double *)p;
    case TTT_BF16: return (double)__bfloat162float(*(const __nv_bfloat16 *)p);
    default: return (double)*(const int32_t *)p;
    }
}
static __device__ __forceinline__ void store_any(char *p, int dt, double v) {
    switch (dt) {
    case TTT_F32: *(float *)p = (float)v; break;
    case TTT_F64: *(double *)p = v; break;
    case TTT_BF16: *(__nv_bfloat16 *)p = __float2bfloat16_rn((float)v); break;
    default: *(int32_t *)p = (int32_t)v; break;
    }
}

__global__ void k_copy(Strided s, int64_t n, char *y, int dty, int ys, const char *x, int dtx, int xs) {
    GRID_LOOP(i, n) {
        int64_t off[2];
        offsets<2>(s, i, off);
        if (dty == dtx) {
            if (ys == 4) *(uint32_t *)(y + off[0] * 4) = *(const uint32_t *)(x + off[1] * 4);
            else if (ys == 8) *(uint64_t *)(y + off[0] * 8) = *(const uint64_t *)(x + off[1] * 8);
            else *(uint16_t *)(y + off[0] * 2) = *(const uint16_t *)(x + off[1] * 2);
        } else {
            store_any(y + off[0] * ys, dty, load_any(x + off[1] * xs, dtx));
        }
    }
}

/* Same-dtype strided copy in units of U (an element, or 16 bytes of them). */
template <typename U>
__global__ void k_copy_units(Strided s, int64_t n, U *y, const U *x) {
    GRID_LOOP(i, n) {
        int64_t off[2];
        offsets<2>(s, i, off);
        y[off[0]] = x[off[1]];
    }
}

/* Dense conversion between float dtypes, the types fixed at compile time. */
template <typename TO, typename TI>
__global__ void k_convert_dense(int64_t n, TO *__restrict__ y, const TI *__restrict__ x) {
    GRID_LOOP(i, n) y[i] = st<TO>((double)ld(x[i]));
}
template <>
__global__ void k_convert_dense<bf16, float>(int64_t n, bf16 *__restrict__ y, const float *__restrict__ x) {
    GRID_LOOP(i, n) y[i] = __float2bfloat16_rn(x[i]);
}

int ttt__cu_copy(ttt_backend_state *self, ttt_tensor *dst, const ttt_tensor *src) {
    ENTER(D, self);
    int64_t n = numel(dst);
    if (n == 0) return TTT_OK;
    const bool dense = is_dense(dst) && is_dense(src);
    if (dst->dtype == src->dtype && dense) {
        CU(cudaMemcpyAsync(dst->data, src->data, (size_t)n * dsize(dst->dtype), cudaMemcpyDeviceToDevice, D->stream));
        return TTT_OK;
    }
    if (dense && is_float_dt(dst->dtype) && is_float_dt(src->dtype)) { /* casts: f32 <-> bf16 in mixed precision */
        FLOAT_DISPATCH(dst->dtype, TO, FLOAT_DISPATCH(src->dtype, TI, k_convert_dense<TO, TI><<<blocks_for(n), THREADS, 0, D->stream>>>(n, (TO *)dst->data, (const TI *)src->data)))
        LAUNCHED("copy (convert)");
        return TTT_OK;
    }
    const ttt_tensor *ops[2] = {dst, src};
    Strided s = make_strided(2, ops);
    if (dst->dtype == src->dtype) {
        /* A permutation that keeps the last axis (attention's [B, T, H, d] <-> [B, H, T, d]) moves
         * whole runs of that axis: copy them 16 bytes at a time where sizes and addresses allow. */
        const int64_t es = (int64_t)dsize(dst->dtype), per = 16 / es, last = s.ndim - 1;
        bool vec = s.stride[0][last] == 1 && s.stride[1][last] == 1 && s.shape[last] % per == 0 &&
                   ((uintptr_t)dst->data % 16) == 0 && ((uintptr_t)src->data % 16) == 0;
        for (int d = 0; vec && d < last; d++) vec = s.stride[0][d] % per == 0 && s.stride[1][d] % per == 0;
        if (vec) {
            s.shape[last] /= per;
            for (int d = 0; d < last; d++) s.stride[0][d] /= per, s.stride[1][d] /= per;
            const int64_t units = n / per;
            k_copy_units<uint4><<<blocks_for(units), THREADS, 0, D->stream>>>(s, units, (uint4 *)dst->data, (const uint4 *)src->data);
        } else if (es == 2) {
            k_copy_units<uint16_t><<<blocks_for(n), THREADS, 0, D->stream>>>(s, n, (uint16_t *)dst->data, (const uint16_t *)src->data);
        } else if (es == 4) {
            k_copy_units<uint32_t><<<blocks_for(n), THREADS, 0, D->stream>>>(s, n, (uint32_t *)dst->data, (const uint32_t *)src->data);
        } else {
            k_copy_units<uint64_t><<<blocks_for(n), THREADS, 0, D->stream>>>(s, n, (uint64_t *)dst->data, (const uint64_t *)src->data);
        }
        LAUNCHED("copy");
        return TTT_OK;
    }
    k_copy<<<blocks_for(n), THREADS, 0, D->stream>>>(s, n, (char *)dst->data, dst->dtype, (int)dsize(dst->dtype),
                                                   (const char *)src->data, src->dtype, (int)dsize(src->dtype));
    LAUNCHED("copy");
    return TTT_OK;
}

__global__ void k_fill(Strided s, int64_t n, char *y, int dt, int es, double v) {
    GRID_LOOP(i, n) {
        int64_t off[1];
        offsets<1>(s, i, off);
        store_any(y + off[0] * es, dt, v);
    }
}

int ttt__cu_fill(ttt_backend_state *self, ttt_tensor *dst, double value) {
    ENTER(D, self);
    int64_t n = numel(dst);
    if (n == 0) return TTT_OK;
    if (value == 0.0 && is_dense(dst)) {
        CU(cudaMemsetAsync(dst->data, 0, (size_t)n * dsize(dst->dtype), D->stream));
        return TTT_OK;
    }
    const ttt_tensor *ops[1] = {dst};
    Strided s = make_strided(1, ops);
    k_fill<<<blocks_for(n), THREADS, 0, D->stream>>>(s, n, (char *)dst->data, dst->dtype, (int)dsize(dst->dtype), value);
    LAUNCHED("fill");
    return TTT_OK;
}

/* ---- elementwise ------------------------------------------------------------------------------ */

template <typename T>
__device__ __forceinline__ T unary_op(int op, T x, T p0, T p1) {
    switch (op) {
    case TTT_U_NEG: return -x;
    case TTT_U_EXP: return exp(x);
    case TTT_U_LOG: return log(x);
    case TTT_U_TANH: return tanh(x);
    case TTT_U_SIGMOID: return x >= 0 ? T(1) / (T(1) + exp(-x)) : exp(x) / (T(1) + exp(x));
    case TTT_U_GELU: return T(0.5) * x * (T(1) + tanh(T(0.7978845608028654) * (x + T(0.044715) * x * x * x)));
    case TTT_U_SILU: return x * (x >= 0 ? T(1) / (T(1) + exp(-x)) : exp(x) / (T(1) + exp(x)));
    case TTT_U_RELU: return x > 0 ? x : T(0);
    case TTT_U_SQRT: return sqrt(x);
    case TTT_U_RSQRT: return T(1) / sqrt(x);
    case TTT_U_ABS: return fabs(x);
    case TTT_U_SIGN: return T((x > 0) - (x < 0));
    case TTT_U_STEP: return x > 0 ? T(1) : T(0);
    case TTT_U_POW: return pow(x, p0);
    case TTT_U_CLAMP: return x < p0 ? p0 : (x > p1 ? p1 : x);
    case TTT_U_INRANGE: return (x >= p0 && x <= p1) ? T(1) : T(0);
    case TTT_U_AFFINE: return p0 * x + p1;
    case TTT_U_ELU1: return x > 0 ? x + T(1) : exp(x);
    case TTT_U_GELU_GRAD: {
        const T c = T(0.7978845608028654), k = T(0.044715), t = tanh(c * (x + k * x * x * x));
        return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * c * (T(1) + T(3) * k * x * x);
    }
    case TTT_U_SILU_GRAD: {
        const T s = x >= 0 ? T(1) / (T(1) + exp(-x)) : exp(x) / (T(1) + exp(x));
        return s * (T(1) + x * (T(1) - s));
    }
    default: return x;
    }
}

/* Four elements in one aligned load or store (16 bytes of f32, 8 of bf16):
 * the dense kernels move whole vectors, then finish the tail one by one. */
template <typename T> struct alignas(4 * sizeof(T)) Vec4 {
    T v[4];
};
static bool vec4_ok(int64_t n, const void *a, const void *b, const void *c, size_t es) {
    const uintptr_t m = 4 * es - 1;
    return n >= 4 && !((uintptr_t)a & m) && !((uintptr_t)b & m) && !((uintptr_t)c & m);
}

template <typename T, int OP, typename A = typename Acc<T>::type>
__global__ void k_unary_dense(int64_t n, T *__restrict__ y, const T *__restrict__ x, A p0, A p1, int vec) {
    int64_t done = 0;
    if (vec) {
        const int64_t nv = n / 4;
        GRID_LOOP(i, nv) {
            const Vec4<T> a = reinterpret_cast<const Vec4<T> *>(x)[i];
            Vec4<T> r;
#pragma unroll
            for (int e = 0; e < 4; e++) r.v[e] = st_f<T>(unary_op<A>(OP, ld(a.v[e]), p0, p1));
            reinterpret_cast<Vec4<T> *>(y)[i] = r;
        }
        done = nv * 4;
    }
    GRID_LOOP(i, n - done) y[done + i] = st_f<T>(unary_op<A>(OP, ld(x[done + i]), p0, p1));
}

template <typename T, int OP, typename A = typename Acc<T>::type>
__global__ void k_unary_strided(Strided s, int64_t n, T *y, const T *x, A p0, A p1) {
    GRID_LOOP(i, n) {
        int64_t off[2];
        offsets<2>(s, i, off);
        y[off[0]] = st_f<T>(unary_op<A>(OP, ld(x[off[1]]), p0, p1));
    }
}

/* One instantiation per op: the op's code is inlined, no per-element switch. */
template <typename T, int OP, typename A = typename Acc<T>::type>
static void launch_unary(CuDev *D, const Strided &s, int64_t n, int dense, T *y, const T *x, A p0, A p1) {
    const int vec = dense && vec4_ok(n, y, x, y, sizeof(T)) && sizeof(T) <= 4;
    if (dense) k_unary_dense<T, OP><<<blocks_for(vec ? n / 4 : n), THREADS, 0, D->stream>>>(n, y, x, p0, p1, vec);
    else k_unary_strided<T, OP><<<blocks_for(n), THREADS, 0, D->stream>>>(s, n, y, x, p0, p1);
}

template <typename T, typename A = typename Acc<T>::type>
static void dispatch_unary(CuDev *D, int op, const Strided &s, int64_t n, int dense, T *y, const T *x, A p0, A p1) {
    switch (op) {
#define U(OPC) case OPC: launch_unary<T, OPC>(D, s, n, dense, y, x, p0, p1); break;
    U(TTT_U_NEG) U(TTT_U_EXP) U(TTT_U_LOG) U(TTT_U_TANH) U(TTT_U_SIGMOID) U(TTT_U_GELU) U(TTT_U_SILU) U(TTT_U_RELU)
    U(TTT_U_SQRT) U(TTT_U_RSQRT) U(TTT_U_ABS) U(TTT_U_SIGN) U(TTT_U_STEP) U(TTT_U_POW) U(TTT_U_CLAMP)
    U(TTT_U_INRANGE) U(TTT_U_AFFINE) U(TTT_U_ELU1) U(TTT_U_GELU_GRAD) U(TTT_U_SILU_GRAD)
#undef U
    default: break;
    }
}

int ttt__cu_unary(ttt_backend_state *self, ttt_unary_op op, ttt_tensor *dst, const ttt_tensor *src, double p0, double p1) {
    ENTER(D, self);
    if (float_only("unary", dst->dtype)) return TTT_ERR;
    int64_t n = numel(dst);
    const ttt_tensor *ops[2] = {dst, src};
    Strided s = make_strided(2, ops);
    int dense = is_dense(dst) && is_dense(src);
    if ((unsigned)op >= TTT_U_COUNT) {
        ttt_backend_error("unary: unknown op %d", (int)op);
        return TTT_ERR;
    }
    FLOAT_DISPATCH(dst->dtype, T, {
        typedef typename Acc<T>::type A;
        dispatch_unary<T>(D, op, s, n, dense, (T *)dst->data, (const T *)src->data, (A)p0, (A)p1);
    })
    LAUNCHED("unary");
    return TTT_OK;
}

template <typename T>
__device__ __forceinline__ T binary_op(int op, T a, T b) {
    switch (op) {
    case TTT_B_ADD: return a + b;
    case TTT_B_SUB: return a - b;
    case TTT_B_MUL: return a * b;
    case TTT_B_DIV: return a / b;
    case TTT_B_MAX: return a >= b ? a : b;
    case TTT_B_MIN: return a <= b ? a : b;
    case TTT_B_GT: return a > b ? T(1) : T(0);
    case TTT_B_GE: return a >= b ? T(1) : T(0);
    case TTT_B_EQ: return a == b ? T(1) : T(0);
    default: return a;
    }
}

template <typename T, int OP>
__global__ void k_binary_dense(int64_t n, T *__restrict__ y, const T *__restrict__ a, const T *__restrict__ b, int vec) {
    typedef typename Acc<T>::type A;
    int64_t done = 0;
    if (vec) {
        const int64_t nv = n / 4;
        GRID_LOOP(i, nv) {
            const Vec4<T> x = reinterpret_cast<const Vec4<T> *>(a)[i], z = reinterpret_cast<const Vec4<T> *>(b)[i];
            Vec4<T> r;
#pragma unroll
            for (int e = 0; e < 4; e++) r.v[e] = st_f<T>(binary_op<A>(OP, ld(x.v[e]), ld(z.v[e])));
            reinterpret_cast<Vec4<T> *>(y)[i] = r;
        }
        done = nv * 4;
    }
    GRID_LOOP(i, n - done) y[done + i] = st_f<T>(binary_op<A>(OP, ld(a[done + i]), ld(b[done + i])));
}

template <typename T, int OP>
__global__ void k_binary_strided(Strided s, int64_t n, T *y, const T *a, const T *b) {
    GRID_LOOP(i, n) {
        int64_t off[3];
        offsets<3>(s, i, off);
        y[off[0]] = st_f<T>(binary_op<typename Acc<T>::type>(OP, ld(a[off[1]]), ld(b[off[2]])));
    }
}

template <typename T>
static void dispatch_binary(CuDev *D, int op, const Strided &s, int64_t n, int dense, T *y, const T *a, const T *b) {
    const int vec = dense && vec4_ok(n, y, a, b, sizeof(T)) && sizeof(T) <= 4;
    switch (op) {
#define B(OPC)                                                                                        \
    case OPC:                                                                                         \
        if (dense) k_binary_dense<T, OPC><<<blocks_for(vec ? n / 4 : n), THREADS, 0, D->stream>>>(n, y, a, b, vec); \
        else k_binary_strided<T, OPC><<<blocks_for(n), THREADS, 0, D->stream>>>(s, n, y, a, b);        \
        break;
    B(TTT_B_ADD) B(TTT_B_SUB) B(TTT_B_MUL) B(TTT_B_DIV) B(TTT_B_MAX) B(TTT_B_MIN) B(TTT_B_GT) B(TTT_B_GE) B(TTT_B_EQ)
#undef B
    default: break;
    }
}

int ttt__cu_binary(ttt_backend_state *self, ttt_binary_op op, ttt_tensor *dst, const ttt_tensor *a, const ttt_tensor *b) {
    ENTER(D, self);
    if (float_only("binary", dst->dtype)) return TTT_ERR;
    int64_t n = numel(dst);
    const ttt_tensor *ops[3] = {dst, a, b};
    Strided s = make_strided(3, ops);
    int dense = is_dense(dst) && is_dense(a) && is_dense(b);
    if ((unsigned)op >= TTT_B_COUNT) {
        ttt_backend_error("binary: unknown op %d", (int)op);
        return TTT_ERR;
    }
    FLOAT_DISPATCH(dst->dtype, T, dispatch_binary<T>(D, op, s, n, dense, (T *)dst->data, (const T *)a->data, (const T *)b->data))
    LAUNCHED("binary");
    return TTT_OK;
}

template <typename T>
__global__ void k_where(Strided s, int64_t n, T *y, const T *c, const T *a, const T *b) {
    GRID_LOOP(i, n) {
        int64_t off[4];
        offsets<4>(s, i, off);
        y[off[0]] = ld(c[off[1]]) != 0 ? a[off[2]] : b[off[3]];
    }
}

int ttt__cu_where(ttt_backend_state *self, ttt_tensor *dst, const ttt_tensor *cond, const ttt_tensor *a, const ttt_tensor *b) {
    ENTER(D, self);
    if (float_only("where", dst->dtype)) return TTT_ERR;
    int64_t n = numel(dst);
    const ttt_tensor *ops[4] = {dst, cond, a, b};
    Strided s = make_strided(4, ops);
    FLOAT_DISPATCH(dst->dtype, T,
                   k_where<T><<<blocks_for(n), THREADS, 0, D->stream>>>(s, n, (T *)dst->data, (const T *)cond->data,
                                                                      (const T *)a->data, (const T *)b->data))
    LAUNCHED("where");
    return TTT_OK;
}

/* ---- SwiGLU: silu(a) * b and its first-order gradients ----------------------------------------------------------- */

/* Computed in the arithmetic type (f32 for bf16) and rounded once per output; with f32 and f64 every
 * intermediate rounds where the composed ops round it (silu, then the product; dy b, silu'(a), then their
 * product), so those dtypes give the composed path's values. */
template <typename T, typename A = typename Acc<T>::type>
__device__ __forceinline__ A swiglu_fwd_value(A x, A y) {
    return unary_op<A>(TTT_U_SILU, x, A(0), A(0)) * y;
}

template <typename T>
__global__ void k_swiglu(int64_t n, T *__restrict__ y, const T *__restrict__ a, const T *__restrict__ b, int vec) {
    typedef typename Acc<T>::type A;
    int64_t done = 0;
    if (vec) {
        const int64_t nv = n / 4;
        GRID_LOOP(i, nv) {
            const Vec4<T> x = reinterpret_cast<const Vec4<T> *>(a)[i], z = reinterpret_cast<const Vec4<T> *>(b)[i];
            Vec4<T> r;
#pragma unroll
            for (int e = 0; e < 4; e++) r.v[e] = st_f<T>(swiglu_fwd_value<T>(ld(x.v[e]), ld(z.v[e])));
            reinterpret_cast<Vec4<T> *>(y)[i] = r;
        }
        done = nv * 4;
    }
    GRID_LOOP(i, n - done) y[done + i] = st_f<T>(swiglu_fwd_value<T>(ld(a[done + i]), ld(b[done + i])));
}

/* da = (dy b) silu'(a), db = dy silu(a); a NULL output is skipped */
template <typename T>
__global__ void k_swiglu_bwd(int64_t n, T *da, T *db, const T *__restrict__ a, const T *__restrict__ b,
                             const T *__restrict__ dy) {
    typedef typename Acc<T>::type A;
    GRID_LOOP(i, n) {
        const A x = ld(a[i]), g = ld(dy[i]);
        if (da) da[i] = st_f<T>((g * ld(b[i])) * unary_op<A>(TTT_U_SILU_GRAD, x, A(0), A(0)));
        if (db) db[i] = st_f<T>(g * unary_op<A>(TTT_U_SILU, x, A(0), A(0)));
    }
}

int ttt__cu_swiglu(ttt_backend_state *self, ttt_tensor *dst, const ttt_tensor *a, const ttt_tensor *b) {
    ENTER(D, self);
    if (float_only("swiglu", dst->dtype)) return TTT_ERR;
    if (!is_dense(dst) || !is_dense(a) || !is_dense(b)) {
        ttt_backend_error("swiglu: operands must be dense");
        return TTT_ERR;
    }
    const int64_t n = numel(dst);
    if (n == 0) return TTT_OK;
    FLOAT_DISPATCH(dst->dtype, T, {
        const int vec = vec4_ok(n, dst->data, a->data, b->data, sizeof(T)) && sizeof(T) <= 4;
        k_swiglu<T><<<blocks_for(vec ? n / 4 : n), THREADS, 0, D->stream>>>(n, (T *)dst->data, (const T *)a->data,
                                                                           (const T *)b->data, vec);
    })
    LAUNCHED("swiglu");
    return TTT_OK;
}

int ttt__cu_swiglu_bwd(ttt_backend_state *self, ttt_tensor *da, ttt_tensor *db, const ttt_tensor *a, const ttt_tensor *b,
                       const ttt_tensor *dy) {
    ENTER(D, self);
    if (float_only("swiglu (backward)", dy->dtype)) return TTT_ERR;
    if ((da && !is_dense(da)) || (db && !is_dense(db)) || !is_dense(a) || !is_dense(b) || !is_dense(dy)) {
        ttt_backend_error("swiglu (backward): operands must be dense");
        return TTT_ERR;
    }
    const int64_t n = numel(dy);
    if (n == 0 || (!da && !db)) return TTT_OK;
    FLOAT_DISPATCH(dy->dtype, T,
                   k_swiglu_bwd<T><<<blocks_for(n), THREADS, 0, D->stream>>>(n, da ? (T *)da->data : (T *)NULL,
                                                                            db ? (T *)db->data : (T *)NULL,
                                                                            (const T *)a->data, (const T *)b->data,
                                                                            (const T *)dy->data))
    LAUNCHED("swiglu (backward)");
    return TTT_OK;
}

/* SwiGLU's second order (second_order.cuh) */
int ttt__cu_swiglu_bwd2(ttt_backend_state *self, ttt_tensor *ga, ttt_tensor *gb, ttt_tensor *gdy, const ttt_tensor *a,
                        const ttt_tensor *b, const ttt_tensor *dy, const ttt_tensor *u, const ttt_tensor *v) {
    ENTER(D, self);
    if (float_only("swiglu (second order)", dy->dtype)) return TTT_ERR;
    const int64_t n = numel(dy);
    if (n == 0 || (!ga && !gb && !gdy)) return TTT_OK;
#define P(t) ((t) ? (T *)(t)->data : (T *)NULL)
#define C(t) ((t) ? (const T *)(t)->data : (const T *)NULL)
    FLOAT_DISPATCH(dy->dtype, T, so2::k_swiglu_bwd2<T><<<blocks_for(n), THREADS, 0, D->stream>>>(n, P(ga), P(gb), P(gdy), C(a), C(b), C(dy), C(u), C(v)))
#undef P
#undef C
    LAUNCHED("swiglu (second order)");
    return TTT_OK;
}

/* ---- scale_multi: x[i] *= a for many tensors in one launch (gradient clipping) ------------------------------------ */

enum { SCALE_MAX = 192 };
struct ScaleArgs {
    int n;
    int64_t start[SCALE_MAX + 1]; /* tensor t is elements [start[t], start[t + 1]) of the launch */
    void *x[SCALE_MAX];
};

template <typename T, typename A = typename Acc<T>::type>
__global__ void k_scale_multi(ScaleArgs s, A p0, A p1) {
    const int64_t total = s.start[s.n];
    GRID_LOOP(i, total) {
        int lo = 0, hi = s.n - 1; /* the last tensor starting at or before i */
        while (lo < hi) {
            const int mid = (lo + hi + 1) >> 1;
            if (s.start[mid] <= i) lo = mid;
            else hi = mid - 1;
        }
        T *x = (T *)s.x[lo];
        const int64_t j = i - s.start[lo];
        x[j] = st_f<T>(unary_op<A>(TTT_U_AFFINE, ld(x[j]), p0, p1)); /* unary AFFINE's arithmetic */
    }
}

int ttt__cu_scale_multi(ttt_backend_state *self, int n, ttt_tensor *const *x, double a) {
    ENTER(D, self);
    if (n < 1) return TTT_OK;
    const ttt_dtype dt = x[0]->dtype;
    if (float_only("scale_multi", dt)) return TTT_ERR;
    for (int i = 0; i < n; i++)
        if (x[i]->dtype != dt || !is_dense(x[i])) {
            ttt_backend_error("scale_multi: tensor %d is not dense or not of tensor 0's dtype", i);
            return TTT_ERR;
        }
    for (int i0 = 0; i0 < n; i0 += SCALE_MAX) {
        ScaleArgs s;
        memset(&s, 0, sizeof s);
        s.n = n - i0 < (int)SCALE_MAX ? n - i0 : (int)SCALE_MAX;
        for (int t = 0; t < s.n; t++) {
            s.start[t + 1] = s.start[t] + numel(x[i0 + t]);
            s.x[t] = x[i0 + t]->data;
        }
        const int64_t total = s.start[s.n];
        if (total == 0) continue;
        FLOAT_DISPATCH(dt, T, {
            typedef typename Acc<T>::type A;
            k_scale_multi<T><<<blocks_for(total), THREADS, 0, D->stream>>>(s, (A)a, (A)0.0);
        })
        LAUNCHED("scale_multi");
    }
    return TTT_OK;
}
