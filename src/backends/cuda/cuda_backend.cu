/* The CUDA backend: the same kernel table as the CPU backend (include/ttt/
 * backend.h), on one stream of the current device. Matrix products go to
 * cuBLAS; everything else is a kernel here. f32, f64 and bf16 everywhere (f64
 * lets the float64 gradient checks run on the GPU; bf16 is stored as bf16 and
 * computed in f32, reductions in f64); i32 in copies.
 * Every CUDA / cuBLAS call is checked and a failure names the call. */
#include <cub/device/device_radix_sort.cuh>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"
#include "ttt/backend.h"

/* A created stream (graphs cannot be recorded on the legacy default stream);
 * blocking, so it stays ordered with any work on the legacy stream. */
static cudaStream_t g_stream;
cudaStream_t ttt__cuda_stream(void) { return g_stream; }
static cublasHandle_t g_cublas;
static int *g_flags;            /* FLAG_SLOTS pairs of device words for kernels to report bad indices */
static int *g_flag;             /* the pair the next checked kernel uses */

/* cuBLAS gets its own workspace (the size NVIDIA recommends for Hopper), so it
 * never allocates while a graph is recorded, and recorded and eager steps run
 * the same configuration. */
static const size_t CUBLAS_WORKSPACE = (size_t)32 << 20;

static int ensure_cublas(void) {
    if (g_cublas) return TTT_OK;
    cublasStatus_t s = cublasCreate(&g_cublas);
    if (s != CUBLAS_STATUS_SUCCESS) {
        ttt_backend_error("cublasCreate failed: status %d", (int)s);
        g_cublas = NULL;
        return TTT_ERR;
    }
    void *ws = NULL;
    if (cublasSetStream(g_cublas, g_stream) != CUBLAS_STATUS_SUCCESS || cudaMalloc(&ws, CUBLAS_WORKSPACE) != cudaSuccess ||
        cublasSetWorkspace(g_cublas, ws, CUBLAS_WORKSPACE) != CUBLAS_STATUS_SUCCESS) {
        ttt_backend_error("cuBLAS setup (stream, %zu-byte workspace) failed", CUBLAS_WORKSPACE);
        cublasDestroy(g_cublas);
        g_cublas = NULL;
        if (ws) cudaFree(ws);
        return TTT_ERR;
    }
    return TTT_OK;
}

/* ---- strided indexing ---------------------------------------------------------------- */

enum { MAXD = TTT_MAX_DIMS, MAXOPS = 4, THREADS = 256 };

struct Strided {
    int ndim;
    int small; /* every index fits in 32 bits: divide in 32 bits (a 64-bit division is a long software routine) */
    int64_t shape[MAXD];
    int64_t stride[MAXOPS][MAXD];
};

/* Drop size-1 axes and merge neighbours that every operand walks densely, so
 * the per-element index arithmetic has as few axes as possible. */
static Strided make_strided(int nops, const ttt_tensor *const *ops) {
    Strided s;
    memset(&s, 0, sizeof s);
    int nd = 0;
    for (int d = 0; d < ops[0]->ndim; d++) {
        if (ops[0]->shape[d] == 1) continue;
        if (nd > 0) {
            int merge = 1;
            for (int k = 0; k < nops && merge; k++)
                merge = s.stride[k][nd - 1] == ops[k]->stride[d] * ops[0]->shape[d];
            if (merge) {
                s.shape[nd - 1] *= ops[0]->shape[d];
                for (int k = 0; k < nops; k++) s.stride[k][nd - 1] = ops[k]->stride[d];
                continue;
            }
        }
        s.shape[nd] = ops[0]->shape[d];
        for (int k = 0; k < nops; k++) s.stride[k][nd] = ops[k]->stride[d];
        nd++;
    }
    if (nd == 0) {
        s.shape[0] = 1;
        nd = 1;
    }
    s.ndim = nd;
    int64_t total = 1;
    for (int d = 0; d < nd; d++) total *= s.shape[d];
    s.small = total <= (int64_t)UINT32_MAX;
    return s;
}

template <int NOPS>
__device__ __forceinline__ void offsets(const Strided &s, int64_t i, int64_t *off) {
#pragma unroll
    for (int k = 0; k < NOPS; k++) off[k] = 0;
    if (s.small) {
        uint32_t r = (uint32_t)i;
        for (int d = s.ndim - 1; d >= 0; d--) {
            const uint32_t n = (uint32_t)s.shape[d], idx = r % n;
            r /= n;
#pragma unroll
            for (int k = 0; k < NOPS; k++) off[k] += (int64_t)idx * s.stride[k][d];
        }
        return;
    }
    for (int d = s.ndim - 1; d >= 0; d--) {
        int64_t idx = i % s.shape[d];
        i /= s.shape[d];
#pragma unroll
        for (int k = 0; k < NOPS; k++) off[k] += idx * s.stride[k][d];
    }
}

static int64_t numel(const ttt_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

static unsigned blocks_for(int64_t n) {
    int64_t b = (n + THREADS - 1) / THREADS;
    return (unsigned)(b < 65535 * 32 ? (b > 0 ? b : 1) : 65535 * 32);
}

#define GRID_LOOP(i, n) for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

/* ---- memory ---------------------------------------------------------------------------- */

static void *cu_alloc(size_t bytes) {
    return ttt__cuda_pool_alloc(bytes); /* device_pool.cu */
}
static void cu_free(void *p) { ttt__cuda_pool_free(p); }
static void cu_memory_stats(size_t *reserved, size_t *in_use, uint64_t *driver_allocs) {
    ttt__cuda_pool_stats(reserved, in_use, driver_allocs);
}
static int cu_upload(void *dst, const void *host, size_t bytes) {
    CU(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, g_stream));
    CU(cudaStreamSynchronize(g_stream)); /* the host buffer may be freed right after */
    return TTT_OK;
}
static int cu_download(void *host, const void *src, size_t bytes) {
    CU(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, g_stream));
    CU(cudaStreamSynchronize(g_stream));
    return TTT_OK;
}
static int cu_sync(void) {
    CU(cudaStreamSynchronize(g_stream));
    return TTT_OK;
}

/* ---- copy / fill (any dtype) --------------------------------------------------------------- */

__device__ __forceinline__ double load_any(const char *p, int dt) {
    switch (dt) {
    case TTT_F32: return *(const float *)p;
    case TTT_F64: return *(const double *)p;
    case TTT_BF16: return (double)__bfloat162float(*(const __nv_bfloat16 *)p);
    default: return (double)*(const int32_t *)p;
    }
}
__device__ __forceinline__ void store_any(char *p, int dt, double v) {
    switch (dt) {
    case TTT_F32: *(float *)p = (float)v; break;
    case TTT_F64: *(double *)p = v; break;
    case TTT_BF16: *(__nv_bfloat16 *)p = __float2bfloat16_rn((float)v); break;
    default: *(int32_t *)p = (int32_t)v; break;
    }
}

static size_t dsize(ttt_dtype dt) { return dt == TTT_F64 ? 8 : dt == TTT_BF16 ? 2 : 4; }

/* Float storage types and the type their arithmetic is done in: bf16 loads
 * widen to f32 (ld) and results round to nearest even on the store (st). */
typedef __nv_bfloat16 bf16;
template <typename T> struct Acc { typedef T type; };
template <> struct Acc<bf16> { typedef float type; };
__device__ __forceinline__ float ld(float v) { return v; }
__device__ __forceinline__ double ld(double v) { return v; }
__device__ __forceinline__ float ld(bf16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T st(double v) { return (T)v; }
template <> __device__ __forceinline__ bf16 st<bf16>(double v) { return __float2bfloat16_rn((float)v); }
/* from the arithmetic type (f32 for bf16), without a trip through f64 */
template <typename T> __device__ __forceinline__ T st_f(typename Acc<T>::type v) { return (T)v; }
template <> __device__ __forceinline__ bf16 st_f<bf16>(float v) { return __float2bfloat16_rn(v); }

/* Runs the code after T with T bound to the storage type of float dtype DT. */
#define FLOAT_DISPATCH(DT, T, ...)                         \
    switch (DT) {                                          \
    case TTT_F32: { typedef float T; __VA_ARGS__; } break;  \
    case TTT_F64: { typedef double T; __VA_ARGS__; } break; \
    default: { typedef bf16 T; __VA_ARGS__; } break;        \
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

static int is_dense(const ttt_tensor *t) {
    int64_t expect = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != expect) return 0;
        expect *= t->shape[i];
    }
    return 1;
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

static bool is_float_dt(ttt_dtype dt) { return dt == TTT_F32 || dt == TTT_F64 || dt == TTT_BF16; }

static int cu_copy(ttt_tensor *dst, const ttt_tensor *src) {
    int64_t n = numel(dst);
    if (n == 0) return TTT_OK;
    const bool dense = is_dense(dst) && is_dense(src);
    if (dst->dtype == src->dtype && dense) {
        CU(cudaMemcpyAsync(dst->data, src->data, (size_t)n * dsize(dst->dtype), cudaMemcpyDeviceToDevice, g_stream));
        return TTT_OK;
    }
    if (dense && is_float_dt(dst->dtype) && is_float_dt(src->dtype)) { /* casts: f32 <-> bf16 in mixed precision */
        FLOAT_DISPATCH(dst->dtype, TO, FLOAT_DISPATCH(src->dtype, TI, k_convert_dense<TO, TI><<<blocks_for(n), THREADS, 0, g_stream>>>(n, (TO *)dst->data, (const TI *)src->data)))
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
            k_copy_units<uint4><<<blocks_for(units), THREADS, 0, g_stream>>>(s, units, (uint4 *)dst->data, (const uint4 *)src->data);
        } else if (es == 2) {
            k_copy_units<uint16_t><<<blocks_for(n), THREADS, 0, g_stream>>>(s, n, (uint16_t *)dst->data, (const uint16_t *)src->data);
        } else if (es == 4) {
            k_copy_units<uint32_t><<<blocks_for(n), THREADS, 0, g_stream>>>(s, n, (uint32_t *)dst->data, (const uint32_t *)src->data);
        } else {
            k_copy_units<uint64_t><<<blocks_for(n), THREADS, 0, g_stream>>>(s, n, (uint64_t *)dst->data, (const uint64_t *)src->data);
        }
        LAUNCHED("copy");
        return TTT_OK;
    }
    k_copy<<<blocks_for(n), THREADS, 0, g_stream>>>(s, n, (char *)dst->data, dst->dtype, (int)dsize(dst->dtype),
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

static int cu_fill(ttt_tensor *dst, double value) {
    int64_t n = numel(dst);
    if (n == 0) return TTT_OK;
    if (value == 0.0 && is_dense(dst)) {
        CU(cudaMemsetAsync(dst->data, 0, (size_t)n * dsize(dst->dtype), g_stream));
        return TTT_OK;
    }
    const ttt_tensor *ops[1] = {dst};
    Strided s = make_strided(1, ops);
    k_fill<<<blocks_for(n), THREADS, 0, g_stream>>>(s, n, (char *)dst->data, dst->dtype, (int)dsize(dst->dtype), value);
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
static void launch_unary(const Strided &s, int64_t n, int dense, T *y, const T *x, A p0, A p1) {
    const int vec = dense && vec4_ok(n, y, x, y, sizeof(T)) && sizeof(T) <= 4;
    if (dense) k_unary_dense<T, OP><<<blocks_for(vec ? n / 4 : n), THREADS, 0, g_stream>>>(n, y, x, p0, p1, vec);
    else k_unary_strided<T, OP><<<blocks_for(n), THREADS, 0, g_stream>>>(s, n, y, x, p0, p1);
}

template <typename T, typename A = typename Acc<T>::type>
static void dispatch_unary(int op, const Strided &s, int64_t n, int dense, T *y, const T *x, A p0, A p1) {
    switch (op) {
#define U(OPC) case OPC: launch_unary<T, OPC>(s, n, dense, y, x, p0, p1); break;
    U(TTT_U_NEG) U(TTT_U_EXP) U(TTT_U_LOG) U(TTT_U_TANH) U(TTT_U_SIGMOID) U(TTT_U_GELU) U(TTT_U_SILU) U(TTT_U_RELU)
    U(TTT_U_SQRT) U(TTT_U_RSQRT) U(TTT_U_ABS) U(TTT_U_SIGN) U(TTT_U_STEP) U(TTT_U_POW) U(TTT_U_CLAMP)
    U(TTT_U_INRANGE) U(TTT_U_AFFINE) U(TTT_U_ELU1)
#undef U
    default: break;
    }
}

static int float_only(const char *k, ttt_dtype dt) {
    if (dt == TTT_F32 || dt == TTT_F64 || dt == TTT_BF16) return TTT_OK;
    ttt_backend_error("%s: dtype %d is not supported on cuda", k, (int)dt);
    return TTT_ERR;
}

static int cu_unary(ttt_unary_op op, ttt_tensor *dst, const ttt_tensor *src, double p0, double p1) {
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
        dispatch_unary<T>(op, s, n, dense, (T *)dst->data, (const T *)src->data, (A)p0, (A)p1);
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
static void dispatch_binary(int op, const Strided &s, int64_t n, int dense, T *y, const T *a, const T *b) {
    const int vec = dense && vec4_ok(n, y, a, b, sizeof(T)) && sizeof(T) <= 4;
    switch (op) {
#define B(OPC)                                                                                        \
    case OPC:                                                                                         \
        if (dense) k_binary_dense<T, OPC><<<blocks_for(vec ? n / 4 : n), THREADS, 0, g_stream>>>(n, y, a, b, vec); \
        else k_binary_strided<T, OPC><<<blocks_for(n), THREADS, 0, g_stream>>>(s, n, y, a, b);        \
        break;
    B(TTT_B_ADD) B(TTT_B_SUB) B(TTT_B_MUL) B(TTT_B_DIV) B(TTT_B_MAX) B(TTT_B_MIN) B(TTT_B_GT) B(TTT_B_GE) B(TTT_B_EQ)
#undef B
    default: break;
    }
}

static int cu_binary(ttt_binary_op op, ttt_tensor *dst, const ttt_tensor *a, const ttt_tensor *b) {
    if (float_only("binary", dst->dtype)) return TTT_ERR;
    int64_t n = numel(dst);
    const ttt_tensor *ops[3] = {dst, a, b};
    Strided s = make_strided(3, ops);
    int dense = is_dense(dst) && is_dense(a) && is_dense(b);
    if ((unsigned)op >= TTT_B_COUNT) {
        ttt_backend_error("binary: unknown op %d", (int)op);
        return TTT_ERR;
    }
    FLOAT_DISPATCH(dst->dtype, T, dispatch_binary<T>(op, s, n, dense, (T *)dst->data, (const T *)a->data, (const T *)b->data))
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

static int cu_where(ttt_tensor *dst, const ttt_tensor *cond, const ttt_tensor *a, const ttt_tensor *b) {
    if (float_only("where", dst->dtype)) return TTT_ERR;
    int64_t n = numel(dst);
    const ttt_tensor *ops[4] = {dst, cond, a, b};
    Strided s = make_strided(4, ops);
    FLOAT_DISPATCH(dst->dtype, T,
                   k_where<T><<<blocks_for(n), THREADS, 0, g_stream>>>(s, n, (T *)dst->data, (const T *)cond->data,
                                                                      (const T *)a->data, (const T *)b->data))
    LAUNCHED("where");
    return TTT_OK;
}

/* ---- reductions -------------------------------------------------------------------------------- */

template <typename T>
__device__ __forceinline__ T block_reduce(T v, int is_max) {
    __shared__ T part[THREADS / 32];
    for (int o = 16; o > 0; o >>= 1) {
        T w = __shfl_down_sync(0xffffffffu, v, o);
        v = is_max ? (w > v ? w : v) : v + w;
    }
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    __syncthreads(); /* part[] may still be read by a previous call */
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < (int)(blockDim.x / 32) ? part[lane] : (is_max ? T(-INFINITY) : T(0));
        for (int o = 16; o > 0; o >>= 1) {
            T w = __shfl_down_sync(0xffffffffu, v, o);
            v = is_max ? (w > v ? w : v) : v + w;
        }
        if (lane == 0) part[0] = v;
    }
    __syncthreads();
    return part[0];
}

/* one thread per output, walking the reduced index space */
struct ReduceGeom {
    int nk, nr;
    int64_t kshape[MAXD], kstride[MAXD], rshape[MAXD], rstride[MAXD];
};

template <typename T>
__global__ void k_reduce_general(ReduceGeom g, int64_t nout, int64_t nred, int is_max, T *y, const T *x) {
    GRID_LOOP(o, nout) {
        int64_t base = 0, rem = o;
        for (int i = g.nk - 1; i >= 0; i--) {
            base += (rem % g.kshape[i]) * g.kstride[i];
            rem /= g.kshape[i];
        }
        double acc = is_max ? -INFINITY : 0.0;
        for (int64_t j = 0; j < nred; j++) {
            int64_t off = base, r2 = j;
            for (int i = g.nr - 1; i >= 0; i--) {
                off += (r2 % g.rshape[i]) * g.rstride[i];
                r2 /= g.rshape[i];
            }
            double v = ld(x[off]);
            acc = is_max ? fmax(acc, v) : acc + v;
        }
        y[o] = st<T>(acc);
    }
}

/* One block per output, its threads striding over the reduced elements: the
 * thread-per-output kernel above runs a long reduction (e.g. sum_to of
 * [B, H, n, D] to [1, H, 1, D]) on a few warps, one element at a time. */
template <typename T>
__global__ void k_reduce_general_block(ReduceGeom g, int64_t nred, int is_max, T *y, const T *x) {
    int64_t base = 0, rem = blockIdx.x;
    for (int i = g.nk - 1; i >= 0; i--) {
        base += (rem % g.kshape[i]) * g.kstride[i];
        rem /= g.kshape[i];
    }
    double acc = is_max ? -INFINITY : 0.0;
    for (int64_t j = threadIdx.x; j < nred; j += blockDim.x) {
        int64_t off = base, r2 = j;
        for (int i = g.nr - 1; i >= 0; i--) {
            off += (r2 % g.rshape[i]) * g.rstride[i];
            r2 /= g.rshape[i];
        }
        double v = ld(x[off]);
        acc = is_max ? fmax(acc, v) : acc + v;
    }
    acc = block_reduce<double>(acc, is_max);
    if (threadIdx.x == 0) y[blockIdx.x] = st<T>(acc);
}

/* [O, R, I] reductions (the reduced axes form one block, which covers the
 * reductions autodiff makes: row sums, column sums for bias gradients, full
 * sums). Two passes keep every SM busy and the result deterministic: pass 1
 * writes per-chunk partials (in double) to a scratch buffer, pass 2 reduces
 * the chunks. */
static int graph_recording(void);
static int graph_retire(void *p);

/* A device buffer that kernels share between launches; it grows by half again
 * when too small (never while a graph is recorded: the graph would keep the
 * old address), so steady-state steps do not allocate. */
struct Scratch {
    void *p;
    size_t bytes;
};
static int scratch_reserve(Scratch *s, size_t bytes, const char *who) {
    if (bytes <= s->bytes) return TTT_OK;
    if (graph_recording()) {
        ttt_backend_error("%s: its scratch buffer would grow to %zu bytes while a graph is recorded (run the same "
                          "step without recording first)", who, bytes);
        return TTT_ERR;
    }
    if (s->p && graph_retire(s->p)) return TTT_ERR;
    s->p = NULL;
    s->bytes = 0;
    size_t want = bytes + bytes / 2;
    if (!(s->p = ttt__cuda_pool_alloc(want))) return TTT_ERR;
    s->bytes = want;
    return TTT_OK;
}

static Scratch g_reduce_scratch; /* per-chunk partials of reductions, in double */

/* columns: block = 32 columns x 8 row lanes; item = (o, chunk, column tile) */
template <typename TI, typename TO>
__global__ void k_red_cols(int64_t O, int64_t R, int64_t I, int64_t chunks, int64_t rows_per_chunk, int is_max,
                           TO *out, const TI *x) {
    int64_t tiles = (I + 31) / 32, item = blockIdx.x;
    int64_t tile = item % tiles, c = (item / tiles) % chunks, o = item / (tiles * chunks);
    int tx = threadIdx.x % 32, ty = threadIdx.x / 32;
    int64_t i = tile * 32 + tx, r0 = c * rows_per_chunk, r1 = r0 + rows_per_chunk < R ? r0 + rows_per_chunk : R;
    double acc = is_max ? -INFINITY : 0.0;
    if (i < I)
        for (int64_t r = r0 + ty; r < r1; r += 8) {
            double v = ld(x[(o * R + r) * I + i]);
            acc = is_max ? fmax(acc, v) : acc + v;
        }
    __shared__ double part[8][33];
    part[ty][tx] = acc;
    __syncthreads();
    if (ty == 0 && i < I) {
        for (int k = 1; k < 8; k++) acc = is_max ? fmax(acc, part[k][tx]) : acc + part[k][tx];
        out[(o * chunks + c) * I + i] = st<TO>(acc);
    }
}

/* rows (I == 1): item = (o, chunk), the block reduces one contiguous run */
template <typename TI, typename TO>
__global__ void k_red_rows(int64_t R, int64_t chunks, int64_t rows_per_chunk, int is_max, TO *out, const TI *x) {
    int64_t c = blockIdx.x % chunks, o = blockIdx.x / chunks;
    int64_t r0 = c * rows_per_chunk, r1 = r0 + rows_per_chunk < R ? r0 + rows_per_chunk : R;
    double acc = is_max ? -INFINITY : 0.0;
    for (int64_t r = r0 + threadIdx.x; r < r1; r += blockDim.x) {
        double v = ld(x[o * R + r]);
        acc = is_max ? fmax(acc, v) : acc + v;
    }
    acc = block_reduce<double>(acc, is_max);
    if (threadIdx.x == 0) out[o * chunks + c] = st<TO>(acc);
}

template <typename TI, typename TO>
static void launch_ori(int64_t O, int64_t R, int64_t I, int64_t chunks, int is_max, TO *out, const TI *x) {
    int64_t per = (R + chunks - 1) / chunks;
    if (I == 1) k_red_rows<TI, TO><<<(unsigned)(O * chunks), THREADS, 0, g_stream>>>(R, chunks, per, is_max, out, x);
    else k_red_cols<TI, TO><<<(unsigned)(O * chunks * ((I + 31) / 32)), THREADS, 0, g_stream>>>(O, R, I, chunks, per, is_max, out, x);
}

template <typename T>
static int reduce_ori(int64_t O, int64_t R, int64_t I, int is_max, T *dst, const T *src) {
    int64_t tiles = I == 1 ? 1 : (I + 31) / 32, target = 4 * 132;
    int64_t chunks = (target + O * tiles - 1) / (O * tiles);
    int64_t max_chunks = (R + 255) / 256; /* at least 256 rows per chunk */
    if (chunks > max_chunks) chunks = max_chunks;
    if (chunks > 1024) chunks = 1024;
    if (chunks < 1) chunks = 1;
    if (O * chunks * tiles > 2147483647LL) {
        ttt_backend_error("reduce: %lld x %lld x %lld is too large for one launch", (long long)O, (long long)R, (long long)I);
        return TTT_ERR;
    }
    if (chunks == 1) {
        launch_ori<T, T>(O, R, I, 1, is_max, dst, src);
        return TTT_OK;
    }
    if (scratch_reserve(&g_reduce_scratch, sizeof(double) * (size_t)(O * chunks * I), "reduce")) return TTT_ERR;
    double *part = (double *)g_reduce_scratch.p;
    launch_ori<T, double>(O, R, I, chunks, is_max, part, src);
    launch_ori<double, T>(O, chunks, I, 1, is_max, dst, part);
    return TTT_OK;
}

static int cu_reduce(ttt_reduce_op op, ttt_tensor *dst, const ttt_tensor *src) {
    if (float_only("reduce", src->dtype)) return TTT_ERR;
    ReduceGeom g;
    memset(&g, 0, sizeof g);
    /* O = kept axes before the reduced block, R = the block, I = kept after */
    int64_t O = 1, R = 1, I = 1;
    int phase = 0, one_block = 1; /* 0: before, 1: in the reduced block, 2: after */
    for (int d = 0; d < src->ndim; d++) {
        if (src->shape[d] == 1) continue;
        int red = dst->shape[d] == 1;
        if (red) {
            g.rshape[g.nr] = src->shape[d];
            g.rstride[g.nr++] = src->stride[d];
            if (phase == 2) one_block = 0;
            phase = 1;
            R *= src->shape[d];
        } else {
            g.kshape[g.nk] = src->shape[d];
            g.kstride[g.nk++] = src->stride[d];
            if (phase == 1) phase = 2;
            if (phase == 0) O *= src->shape[d];
            else I *= src->shape[d];
        }
    }
    int is_max = op == TTT_R_MAX;
    int rc = TTT_OK;
    if (one_block) {
        FLOAT_DISPATCH(src->dtype, T, rc = reduce_ori<T>(O, R, I, is_max, (T *)dst->data, (const T *)src->data))
    } else {
        int64_t nout = O * I; /* every kept axis is counted in O or I */
        const bool per_block = R >= 1024 && nout <= 2147483647LL;
        FLOAT_DISPATCH(src->dtype, T, {
            if (per_block) k_reduce_general_block<T><<<(unsigned)nout, THREADS, 0, g_stream>>>(g, R, is_max, (T *)dst->data, (const T *)src->data);
            else k_reduce_general<T><<<blocks_for(nout), THREADS, 0, g_stream>>>(g, nout, R, is_max, (T *)dst->data, (const T *)src->data);
        })
    }
    if (rc != TTT_OK) return rc;
    LAUNCHED("reduce");
    return TTT_OK;
}

/* ---- matmul (cuBLAS) ------------------------------------------------------------------------------- */

static int64_t lead_dim(const ttt_tensor *t) {
    int64_t ld = t->stride[t->ndim - 2], cols = t->shape[t->ndim - 1];
    if (t->shape[t->ndim - 2] <= 1 || ld < cols) ld = cols;
    return ld > 0 ? ld : 1;
}

/* The batch axes of C = op(A) op(B), merged where every operand is dense
 * across them (stride 0 broadcast stays mergeable only with stride 0), so one
 * strided-batched cuBLAS call covers as much as possible; the largest merged
 * axis becomes cuBLAS's batch and the rest are looped over. */
struct BatchGeom {
    int n;
    int64_t shape[MAXD], sa[MAXD], sb[MAXD], sc[MAXD];
};

static BatchGeom batch_geom(const ttt_tensor *c, const ttt_tensor *a, const ttt_tensor *b) {
    BatchGeom g;
    memset(&g, 0, sizeof g);
    int nd = c->ndim;
    int64_t sc = c->shape[nd - 2] * c->shape[nd - 1];
    int64_t cstride[MAXD];
    for (int d = nd - 3; d >= 0; d--) {
        cstride[d] = sc;
        sc *= c->shape[d];
    }
    for (int d = 0; d < nd - 2; d++) {
        if (c->shape[d] == 1) continue;
        if (g.n > 0) {
            int p = g.n - 1;
            if (g.sa[p] == a->stride[d] * c->shape[d] && g.sb[p] == b->stride[d] * c->shape[d] &&
                g.sc[p] == cstride[d] * c->shape[d]) {
                g.shape[p] *= c->shape[d];
                g.sa[p] = a->stride[d];
                g.sb[p] = b->stride[d];
                g.sc[p] = cstride[d];
                continue;
            }
        }
        g.shape[g.n] = c->shape[d];
        g.sa[g.n] = a->stride[d];
        g.sb[g.n] = b->stride[d];
        g.sc[g.n] = cstride[d];
        g.n++;
    }
    return g;
}

static int g_tf32; /* f32 matmuls on the TF32 tensor cores (ttt_ctx_config.tf32) */
static void cu_set_tf32(int on) { g_tf32 = on != 0; }

static int cu_matmul(ttt_tensor *c, const ttt_tensor *a, const ttt_tensor *b, int trans_a, int trans_b) {
    if (float_only("matmul", c->dtype) || ensure_cublas()) return TTT_ERR;
    int nd = c->ndim;
    int64_t m = c->shape[nd - 2], n = c->shape[nd - 1], k = trans_a ? a->shape[nd - 2] : a->shape[nd - 1];
    if (k == 0) {
        CU(cudaMemsetAsync(c->data, 0, (size_t)numel(c) * dsize(c->dtype), g_stream));
        return TTT_OK;
    }
    BatchGeom g = batch_geom(c, a, b);
    int inner = -1; /* the merged batch axis handed to cuBLAS */
    for (int d = 0; d < g.n; d++)
        if (inner < 0 || g.shape[d] > g.shape[inner]) inner = d;
    int64_t nbatch = inner >= 0 ? g.shape[inner] : 1, outer = 1;
    int64_t sa = inner >= 0 ? g.sa[inner] : 0, sb = inner >= 0 ? g.sb[inner] : 0, sc = inner >= 0 ? g.sc[inner] : 0;
    for (int d = 0; d < g.n; d++)
        if (d != inner) outer *= g.shape[d];
    /* Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap operands. */
    cublasOperation_t ta = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    int64_t lda = lead_dim(a), ldb = lead_dim(b);
    for (int64_t o = 0; o < outer; o++) {
        int64_t oa = 0, ob = 0, oc = 0, rem = o;
        for (int d = g.n - 1; d >= 0; d--) {
            if (d == inner) continue;
            int64_t idx = rem % g.shape[d];
            rem /= g.shape[d];
            oa += idx * g.sa[d];
            ob += idx * g.sb[d];
            oc += idx * g.sc[d];
        }
        cublasStatus_t st;
        if (c->dtype == TTT_BF16) {
            /* bf16 operands, f32 accumulation and scaling, bf16 result */
            const float one = 1.0f, zero = 0.0f;
            st = cublasGemmStridedBatchedEx(g_cublas, tb, ta, (int)n, (int)m, (int)k, &one, (const bf16 *)b->data + ob,
                                            CUDA_R_16BF, (int)ldb, sb, (const bf16 *)a->data + oa, CUDA_R_16BF,
                                            (int)lda, sa, &zero, (bf16 *)c->data + oc, CUDA_R_16BF, (int)n, sc,
                                            (int)nbatch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        } else if (c->dtype == TTT_F32 && g_tf32) {
            const float one = 1.0f, zero = 0.0f;
            st = cublasGemmStridedBatchedEx(g_cublas, tb, ta, (int)n, (int)m, (int)k, &one, (const float *)b->data + ob,
                                            CUDA_R_32F, (int)ldb, sb, (const float *)a->data + oa, CUDA_R_32F,
                                            (int)lda, sa, &zero, (float *)c->data + oc, CUDA_R_32F, (int)n, sc,
                                            (int)nbatch, CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT);
        } else if (c->dtype == TTT_F32) {
            const float one = 1.0f, zero = 0.0f;
            st = cublasSgemmStridedBatched(g_cublas, tb, ta, (int)n, (int)m, (int)k, &one,
                                           (const float *)b->data + ob, (int)ldb, sb, (const float *)a->data + oa,
                                           (int)lda, sa, &zero, (float *)c->data + oc, (int)n, sc, (int)nbatch);
        } else {
            const double one = 1.0, zero = 0.0;
            st = cublasDgemmStridedBatched(g_cublas, tb, ta, (int)n, (int)m, (int)k, &one,
                                           (const double *)b->data + ob, (int)ldb, sb, (const double *)a->data + oa,
                                           (int)lda, sa, &zero, (double *)c->data + oc, (int)n, sc, (int)nbatch);
        }
        if (st != CUBLAS_STATUS_SUCCESS) {
            ttt_backend_error("%s failed: status %d (m %lld n %lld k %lld batch %lld)",
                              c->dtype == TTT_BF16 ? "cublasGemmStridedBatchedEx(bf16)"
                              : c->dtype == TTT_F32 ? (g_tf32 ? "cublasGemmStridedBatchedEx(tf32)" : "cublasSgemmStridedBatched")
                                                    : "cublasDgemmStridedBatched", (int)st, (long long)m, (long long)n, (long long)k,
                              (long long)nbatch);
            return TTT_ERR;
        }
    }
    return TTT_OK;
}

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

static int cu_softmax(ttt_tensor *dst, const ttt_tensor *src, int log_out) {
    if (float_only("softmax", src->dtype)) return TTT_ERR;
    int64_t rows, cols;
    rows_cols(src, &rows, &cols);
    FLOAT_DISPATCH(src->dtype, T, k_softmax<T><<<(unsigned)rows, THREADS, 0, g_stream>>>(cols, log_out, (T *)dst->data, (const T *)src->data))
    LAUNCHED("softmax");
    return TTT_OK;
}

template <typename T>
__global__ void k_norm(int64_t cols, int layer, double eps, T *y, const T *x) {
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
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) o[j] = st<T>((ld(r[j]) - mean) * rstd);
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
__global__ void k_norm_warp(int64_t rows, int64_t cols, int layer, double eps, T *y, const T *x) {
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
    for (int64_t j = lane; j < cols; j += 32) o[j] = st_f<T>((ld(r[j]) - mean) * rstd);
}

static int cu_norm(ttt_norm_kind kind, ttt_tensor *dst, const ttt_tensor *src, double eps) {
    if (float_only("norm", src->dtype)) return TTT_ERR;
    int64_t rows, cols;
    rows_cols(src, &rows, &cols);
    int layer = kind == TTT_NORM_LAYER;
    if (rows == 0) return TTT_OK;
    const int64_t per_block = THREADS / 32;
    if (cols <= WARP_ROW_MAX && (rows + per_block - 1) / per_block <= INT32_MAX)
        FLOAT_DISPATCH(src->dtype, T, k_norm_warp<T><<<(unsigned)((rows + per_block - 1) / per_block), THREADS, 0, g_stream>>>(rows, cols, layer, eps, (T *)dst->data, (const T *)src->data))
    else
        FLOAT_DISPATCH(src->dtype, T, k_norm<T><<<(unsigned)rows, THREADS, 0, g_stream>>>(cols, layer, eps, (T *)dst->data, (const T *)src->data))
    LAUNCHED("norm");
    return TTT_OK;
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

static int cu_norm_bwd(ttt_norm_kind kind, ttt_tensor *dx, const ttt_tensor *x, const ttt_tensor *y, const ttt_tensor *dy,
                       double eps) {
    if (float_only("norm_bwd", x->dtype)) return TTT_ERR;
    int64_t rows, cols;
    rows_cols(x, &rows, &cols);
    if (rows == 0) return TTT_OK;
    const int layer = kind == TTT_NORM_LAYER;
    const int64_t per_block = THREADS / 32, blocks = (rows + per_block - 1) / per_block;
    if (cols <= WARP_ROW_MAX && blocks <= INT32_MAX)
        FLOAT_DISPATCH(x->dtype, T, k_norm_bwd_warp<T><<<(unsigned)blocks, THREADS, 0, g_stream>>>(rows, cols, layer, eps, (T *)dx->data, (const T *)x->data, (const T *)y->data, (const T *)dy->data))
    else
        FLOAT_DISPATCH(x->dtype, T, k_norm_bwd_block<T><<<(unsigned)rows, THREADS, 0, g_stream>>>(cols, layer, eps, (T *)dx->data, (const T *)x->data, (const T *)y->data, (const T *)dy->data))
    LAUNCHED("norm_bwd");
    return TTT_OK;
}

/* Index validation: kernels set *g_flag to (first bad position + 1); the host
 * reads it back after the launch. Costs one sync per call of these kernels.
 * While a graph is recorded, each checked kernel gets its own pair of words
 * and the reads wait for the replay (graph_replay below). */
enum { FLAG_SLOTS = 256 };
struct FlagCheck {
    const char *what, *unit;
    int64_t range;
};
struct CuGraph {
    cudaGraphExec_t exec;
    int n_checks;
    FlagCheck checks[FLAG_SLOTS];
};
static CuGraph *g_rec; /* the graph being recorded */

static int graph_recording(void) { return g_rec != NULL; }

static int ensure_flags(void) {
    if (!g_flags) CU(cudaMalloc(&g_flags, sizeof(int) * 2 * FLAG_SLOTS));
    return TTT_OK;
}
static int flag_reset(void) {
    if (ensure_flags()) return TTT_ERR;
    int slot = 0;
    if (g_rec) {
        if (g_rec->n_checks >= FLAG_SLOTS) {
            ttt_backend_error("more than %d index-checked kernels in one graph", (int)FLAG_SLOTS);
            return TTT_ERR;
        }
        slot = g_rec->n_checks;
    }
    g_flag = g_flags + 2 * slot;
    CU(cudaMemsetAsync(g_flag, 0, sizeof(int) * 2, g_stream));
    return TTT_OK;
}
static int flag_report(const int *h, const char *what, const char *unit, int64_t range) {
    if (h[0]) {
        ttt_backend_error("%s %d at %s %d out of range [0, %lld)", what, h[1], unit, h[0] - 1, (long long)range);
        return TTT_ERR;
    }
    return TTT_OK;
}
static int flag_check(const char *what, const char *unit, int64_t range) {
    if (g_rec) {
        g_rec->checks[g_rec->n_checks++] = FlagCheck{what, unit, range};
        return TTT_OK;
    }
    int h[2];
    CU(cudaMemcpyAsync(h, g_flag, sizeof h, cudaMemcpyDeviceToHost, g_stream));
    CU(cudaStreamSynchronize(g_stream));
    return flag_report(h, what, unit, range);
}

__device__ __forceinline__ void flag_bad(int *flag, int64_t pos, int value) {
    if (atomicCAS(flag, 0, (int)pos + 1) == 0) flag[1] = value;
}

template <typename T>
__global__ void k_cross_entropy(int64_t v, int ignore, int *flag, T *y, const T *x, const int32_t *t) {
    int64_t row = blockIdx.x;
    int tg = t[row];
    if (tg == ignore) {
        if (threadIdx.x == 0) y[row] = st<T>(0.0);
        return;
    }
    if (tg < 0 || tg >= v) {
        if (threadIdx.x == 0) flag_bad(flag, row, tg);
        return;
    }
    /* f32 sums for f32 and bf16 logits (each thread adds ~V/256 terms, then a
     * tree: relative error ~1e-6), f64 for f64 */
    typedef typename Acc<T>::type A;
    const T *r = x + row * v;
    A mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < v; j += blockDim.x) mx = fmax(mx, ld(r[j]));
    mx = block_reduce<A>(mx, 1);
    A sum = 0;
    for (int64_t j = threadIdx.x; j < v; j += blockDim.x) sum += exp(ld(r[j]) - mx);
    sum = block_reduce<A>(sum, 0);
    if (threadIdx.x == 0) y[row] = st<T>((double)mx + log((double)sum) - (double)ld(r[tg]));
}

static int cu_cross_entropy(ttt_tensor *dst, const ttt_tensor *logits, const ttt_tensor *targets, int ignore) {
    if (float_only("cross_entropy", logits->dtype) || flag_reset()) return TTT_ERR;
    int64_t rows, v;
    rows_cols(logits, &rows, &v);
    FLOAT_DISPATCH(logits->dtype, T,
                   k_cross_entropy<T><<<(unsigned)rows, THREADS, 0, g_stream>>>(v, ignore, g_flag, (T *)dst->data, (const T *)logits->data, (const int32_t *)targets->data))
    LAUNCHED("cross_entropy");
    return flag_check("cross_entropy: target", "row", v);
}

/* One block per row: max and sum of exponentials (f32 for f32 / bf16 rows,
 * f64 for f64), then the row written once; the probabilities never exist
 * apart from the gradient. */
template <typename T>
__global__ void k_cross_entropy_bwd(int64_t v, int ignore, int *flag, T *y, const T *x, const int32_t *t, const T *grow) {
    typedef typename Acc<T>::type A;
    const int64_t row = blockIdx.x;
    const int tg = t[row];
    T *o = y + row * v;
    if (tg == ignore || tg < 0 || tg >= v) {
        if (tg != ignore && threadIdx.x == 0) flag_bad(flag, row, tg);
        for (int64_t j = threadIdx.x; j < v; j += blockDim.x) o[j] = st<T>(0.0);
        return;
    }
    const T *r = x + row * v;
    A mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < v; j += blockDim.x) mx = fmax(mx, ld(r[j]));
    mx = block_reduce<A>(mx, 1);
    A sum = 0;
    for (int64_t j = threadIdx.x; j < v; j += blockDim.x) sum += exp(ld(r[j]) - mx);
    sum = block_reduce<A>(sum, 0);
    const A scale = (A)ld(grow[row]) / sum, g = ld(grow[row]);
    for (int64_t j = threadIdx.x; j < v; j += blockDim.x)
        o[j] = st_f<T>(exp(ld(r[j]) - mx) * scale - (j == tg ? g : (A)0));
}

static int cu_cross_entropy_bwd(ttt_tensor *dst, const ttt_tensor *logits, const ttt_tensor *targets,
                                const ttt_tensor *grow, int ignore) {
    if (float_only("cross_entropy_bwd", logits->dtype) || flag_reset()) return TTT_ERR;
    int64_t rows, v;
    rows_cols(logits, &rows, &v);
    FLOAT_DISPATCH(logits->dtype, T,
                   k_cross_entropy_bwd<T><<<(unsigned)rows, THREADS, 0, g_stream>>>(v, ignore, g_flag, (T *)dst->data, (const T *)logits->data, (const int32_t *)targets->data, (const T *)grow->data))
    LAUNCHED("cross_entropy_bwd");
    return flag_check("cross_entropy: target", "row", v);
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

static int cu_one_hot(ttt_tensor *dst, const ttt_tensor *targets, int ignore) {
    if (float_only("one_hot", dst->dtype) || flag_reset()) return TTT_ERR;
    int64_t rows, v;
    rows_cols(dst, &rows, &v);
    FLOAT_DISPATCH(dst->dtype, T, k_one_hot<T><<<blocks_for(rows * v), THREADS, 0, g_stream>>>(rows, v, ignore, g_flag, (T *)dst->data, (const int32_t *)targets->data))
    LAUNCHED("one_hot");
    return flag_check("one_hot: target", "row", v);
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

static int cu_gather_rows(ttt_tensor *dst, const ttt_tensor *table, const ttt_tensor *ids) {
    if (float_only("gather_rows", table->dtype) || flag_reset()) return TTT_ERR;
    int64_t n = numel(ids), v = table->shape[0], d = table->shape[1];
    FLOAT_DISPATCH(table->dtype, T, k_gather<T><<<blocks_for(n * d), THREADS, 0, g_stream>>>(n, d, v, g_flag, (T *)dst->data, (const T *)table->data, (const int32_t *)ids->data))
    LAUNCHED("gather_rows");
    return flag_check("embedding: id", "position", v);
}

/* Deterministic scatter-add: a stable radix sort of (id, position) pairs
 * groups each id's positions in increasing order, then one block per group
 * sums its source rows in that order (in f64) and adds them to the table row.
 * Atomic adds would be faster by a little and give different bits on every
 * run; the embedding gradient of a language model goes through here. */
__global__ void k_iota(int64_t n, int32_t *y) {
    GRID_LOOP(i, n) y[i] = (int32_t)i;
}

template <typename T>
__global__ void k_scatter_groups(int64_t n, int64_t d, int64_t v, int *flag, T *y, const T *src, const int32_t *ids,
                                 const int32_t *pos) {
    for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
        const int id = ids[i];
        if (i > 0 && ids[i - 1] == id) continue; /* not the first of its group */
        if (id < 0 || id >= v) {
            if (threadIdx.x == 0) flag_bad(flag, pos[i], id);
            continue;
        }
        for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
            double acc = ld(y[id * d + j]);
            for (int64_t g = i; g < n && ids[g] == id; g++) acc += ld(src[pos[g] * d + j]);
            y[id * d + j] = st<T>(acc);
        }
    }
}

static Scratch g_sort_scratch;

static int cu_scatter_add_rows(ttt_tensor *dst, const ttt_tensor *src, const ttt_tensor *ids) {
    if (float_only("scatter_add_rows", src->dtype) || flag_reset()) return TTT_ERR;
    int64_t n = numel(ids), v = dst->shape[0], d = dst->shape[1];
    if (n == 0) return TTT_OK;
    if (n > INT32_MAX) {
        ttt_backend_error("scatter_add_rows: %lld ids are more than one sort handles", (long long)n);
        return TTT_ERR;
    }
    /* scratch: sorted ids, positions, sorted positions, then the sort's own temporary storage */
    size_t sort_bytes = 0;
    cudaError_t e = cub::DeviceRadixSort::SortPairs(NULL, sort_bytes, (const int32_t *)NULL, (int32_t *)NULL,
                                                    (const int32_t *)NULL, (int32_t *)NULL, (int)n, 0, 32, g_stream);
    if (e != cudaSuccess) {
        ttt_backend_error("cub::DeviceRadixSort::SortPairs (size query) failed: %s", cudaGetErrorString(e));
        return TTT_ERR;
    }
    const size_t ints = ((size_t)n * sizeof(int32_t) + 255) & ~(size_t)255;
    if (scratch_reserve(&g_sort_scratch, 3 * ints + sort_bytes, "scatter_add_rows")) return TTT_ERR;
    char *base = (char *)g_sort_scratch.p;
    int32_t *ids_sorted = (int32_t *)base, *pos = (int32_t *)(base + ints), *pos_sorted = (int32_t *)(base + 2 * ints);
    k_iota<<<blocks_for(n), THREADS, 0, g_stream>>>(n, pos);
    LAUNCHED("scatter_add_rows (positions)");
    e = cub::DeviceRadixSort::SortPairs(base + 3 * ints, sort_bytes, (const int32_t *)ids->data, ids_sorted, pos,
                                        pos_sorted, (int)n, 0, 32, g_stream);
    if (e != cudaSuccess) {
        ttt_backend_error("cub::DeviceRadixSort::SortPairs failed: %s", cudaGetErrorString(e));
        return TTT_ERR;
    }
    const unsigned grid = (unsigned)(n < 65535 * 32 ? n : 65535 * 32);
    const int threads = d >= 256 ? 256 : (int)((d + 31) / 32 * 32);
    FLOAT_DISPATCH(src->dtype, T,
                   k_scatter_groups<T><<<grid, threads, 0, g_stream>>>(n, d, v, g_flag, (T *)dst->data, (const T *)src->data,
                                                                       ids_sorted, pos_sorted))
    LAUNCHED("scatter_add_rows");
    return flag_check("scatter_add_rows: id", "position", v);
}

/* ---- RoPE, attention mask ----------------------------------------------------------------------------------- */

template <typename T>
__global__ void k_rope(int64_t rows, int64_t d, int64_t inner, int64_t seq, int64_t pos0, double theta, int inverse,
                       T *y, const T *x) {
    int64_t half = d / 2;
    GRID_LOOP(i, rows * half) {
        int64_t r = i / half, k = i % half;
        double pos = (double)(pos0 + (r / inner) % seq);
        double ang = pos * pow(theta, -2.0 * (double)k / (double)d);
        if (inverse) ang = -ang;
        double c = cos(ang), s = sin(ang);
        double x1 = ld(x[r * d + k]), x2 = ld(x[r * d + k + half]);
        y[r * d + k] = st<T>(x1 * c - x2 * s);
        y[r * d + k + half] = st<T>(x2 * c + x1 * s);
    }
}

static int cu_rope(ttt_tensor *dst, const ttt_tensor *src, int seq_axis, int64_t pos0, double theta, int inverse) {
    if (float_only("rope", src->dtype)) return TTT_ERR;
    int64_t rows, d, inner = 1;
    rows_cols(src, &rows, &d);
    for (int a = seq_axis + 1; a < src->ndim - 1; a++) inner *= src->shape[a];
    int64_t seq = src->shape[seq_axis], n = rows * (d / 2);
    FLOAT_DISPATCH(src->dtype, T, k_rope<T><<<blocks_for(n), THREADS, 0, g_stream>>>(rows, d, inner, seq, pos0, theta, inverse, (T *)dst->data, (const T *)src->data))
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

static int cu_attn_mask(ttt_tensor *dst, const ttt_tensor *src, int64_t window, int64_t q_offset, double fill) {
    if (float_only("attn_mask", src->dtype)) return TTT_ERR;
    int64_t n = numel(src), tk = src->shape[src->ndim - 1], tq = src->shape[src->ndim - 2];
    FLOAT_DISPATCH(src->dtype, T, k_mask<T><<<blocks_for(n), THREADS, 0, g_stream>>>(n, tq, tk, window, q_offset, fill, (T *)dst->data, (const T *)src->data))
    LAUNCHED("attn_mask");
    return TTT_OK;
}

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

static int cu_adamw(ttt_tensor *p, const ttt_tensor *g, ttt_tensor *m, ttt_tensor *v, double lr, double b1, double b2,
                    double eps, double wd, int64_t step) {
    if (float_only("adamw", p->dtype)) return TTT_ERR;
    int64_t n = numel(p);
    double bc1 = 1.0 - pow(b1, (double)step), bc2 = 1.0 - pow(b2, (double)step);
    FLOAT_DISPATCH(p->dtype, T, k_adamw<T><<<blocks_for(n), THREADS, 0, g_stream>>>(n, (T *)p->data, (const T *)g->data, (T *)m->data, (T *)v->data, lr, b1, b2, eps, wd, bc1, bc2))
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

static int cu_sgd(ttt_tensor *p, const ttt_tensor *g, ttt_tensor *buf, double lr, double mom, double wd, int nesterov) {
    if (float_only("sgd", p->dtype)) return TTT_ERR;
    int64_t n = numel(p);
    FLOAT_DISPATCH(p->dtype, T, k_sgd<T><<<blocks_for(n), THREADS, 0, g_stream>>>(n, (T *)p->data, (const T *)g->data, (T *)buf->data, lr, mom, wd, nesterov))
    LAUNCHED("sgd");
    return TTT_OK;
}

/* ---- graphs (ttt/graph.h) -------------------------------------------------------------------------------------- */

static int g_graphs;          /* recorded graphs alive: they may address buffers that grow */
static void *g_retired[64];   /* outgrown buffers kept for them */
static int g_n_retired;

static int graph_retire(void *p) {
    if (!g_graphs && !g_rec) {
        ttt__cuda_pool_free(p);
        return TTT_OK;
    }
    if (g_n_retired == (int)(sizeof g_retired / sizeof g_retired[0])) {
        ttt_backend_error("too many outgrown buffers kept for live graphs (free the graphs)");
        return TTT_ERR;
    }
    g_retired[g_n_retired++] = p;
    return TTT_OK;
}

static int cu_graph_begin(void) {
    if (g_rec) {
        ttt_backend_error("a graph is already being recorded");
        return TTT_ERR;
    }
    if (ensure_cublas() || ensure_flags()) return TTT_ERR;
    CuGraph *g = (CuGraph *)calloc(1, sizeof *g);
    if (!g) {
        ttt_backend_error("out of host memory (graph)");
        return TTT_ERR;
    }
    cudaError_t e = cudaStreamBeginCapture(g_stream, cudaStreamCaptureModeGlobal);
    if (e != cudaSuccess) {
        free(g);
        ttt_backend_error("cudaStreamBeginCapture failed: %s", cudaGetErrorString(e));
        return TTT_ERR;
    }
    g_rec = g;
    return TTT_OK;
}

static int cu_graph_end(void **out) {
    *out = NULL;
    CuGraph *g = g_rec;
    g_rec = NULL;
    if (!g) {
        ttt_backend_error("no graph is being recorded");
        return TTT_ERR;
    }
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(g_stream, &graph);
    if (e == cudaSuccess) e = cudaGraphInstantiate(&g->exec, graph, 0);
    if (graph) cudaGraphDestroy(graph);
    if (e == cudaSuccess) e = cudaGraphUpload(g->exec, g_stream);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* a failed capture leaves a sticky launch error */
        if (g->exec) cudaGraphExecDestroy(g->exec);
        free(g);
        ttt_backend_error("recording the CUDA graph failed: %s", cudaGetErrorString(e));
        return TTT_ERR;
    }
    g_graphs++;
    *out = g;
    return TTT_OK;
}

static int cu_graph_replay(void *graph) {
    CuGraph *g = (CuGraph *)graph;
    if (g_rec) {
        ttt_backend_error("cannot replay a graph while another is recorded");
        return TTT_ERR;
    }
    int h[2 * FLAG_SLOTS];
    CU(cudaGraphLaunch(g->exec, g_stream));
    if (g->n_checks) CU(cudaMemcpyAsync(h, g_flags, sizeof(int) * 2 * g->n_checks, cudaMemcpyDeviceToHost, g_stream));
    CU(cudaStreamSynchronize(g_stream));
    for (int i = 0; i < g->n_checks; i++)
        if (flag_report(h + 2 * i, g->checks[i].what, g->checks[i].unit, g->checks[i].range)) return TTT_ERR;
    return TTT_OK;
}

static void cu_graph_free(void *graph) {
    CuGraph *g = (CuGraph *)graph;
    if (!g) return;
    cudaGraphExecDestroy(g->exec);
    free(g);
    if (--g_graphs == 0 && !g_rec) {
        for (int i = 0; i < g_n_retired; i++) ttt__cuda_pool_free(g_retired[i]);
        g_n_retired = 0;
    }
}

static int cu_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

static int cu_device_name(int index, char *buf, size_t len) {
    cudaDeviceProp prop;
    cudaError_t e = cudaGetDeviceProperties(&prop, index);
    if (e != cudaSuccess) {
        cudaGetLastError();
        ttt_backend_error("CUDA device %d: %s", index, cudaGetErrorString(e));
        return TTT_ERR;
    }
    snprintf(buf, len, "%s", prop.name);
    return TTT_OK;
}

static ttt_backend make_table(void) {
    ttt_backend b;
    memset(&b, 0, sizeof b);
    b.name = "cuda";
    b.device = TTT_CUDA;
    b.alloc = cu_alloc;
    b.free = cu_free;
    b.upload = cu_upload;
    b.download = cu_download;
    b.synchronize = cu_sync;
    b.memory_stats = cu_memory_stats;
    b.device_count = cu_device_count;
    b.device_name = cu_device_name;
    b.copy = cu_copy;
    b.fill = cu_fill;
    b.unary = cu_unary;
    b.binary = cu_binary;
    b.where = cu_where;
    b.reduce = cu_reduce;
    b.matmul = cu_matmul;
    b.softmax = cu_softmax;
    b.norm = cu_norm;
    b.cross_entropy = cu_cross_entropy;
    b.cross_entropy_bwd = cu_cross_entropy_bwd;
    b.norm_bwd = cu_norm_bwd;
    b.one_hot = cu_one_hot;
    b.gather_rows = cu_gather_rows;
    b.scatter_add_rows = cu_scatter_add_rows;
    b.rope = cu_rope;
    b.attn_mask = cu_attn_mask;
    b.adamw = cu_adamw;
    b.sgd = cu_sgd;
    b.set_tf32 = cu_set_tf32;
    b.graph_begin = cu_graph_begin;
    b.graph_end = cu_graph_end;
    b.graph_replay = cu_graph_replay;
    b.graph_free = cu_graph_free;
    b.attention_fwd = ttt__cuda_attention_fwd;
    b.attention_bwd = ttt__cuda_attention_bwd;
    b.attention_bwd2 = ttt__cuda_attention_bwd2;
    return b;
}

static ttt_backend CUDA_TABLE = make_table();

extern "C" const ttt_backend *ttt_backend_cuda(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        cudaGetLastError(); /* clear the sticky error of a machine without a GPU */
        ttt_backend_error("no CUDA device is available");
        return NULL;
    }
    if (!g_stream) {
        cudaError_t e = cudaStreamCreate(&g_stream);
        if (e != cudaSuccess) {
            g_stream = NULL;
            ttt_backend_error("cudaStreamCreate failed: %s", cudaGetErrorString(e));
            return NULL;
        }
    }
    return &CUDA_TABLE;
}
