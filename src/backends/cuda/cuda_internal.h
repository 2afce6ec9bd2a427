/* Shared by the CUDA backend's source files (not installed): the instance
 * (CuDev) every entry takes, the error-checking macros, strided indexing, the
 * dtype helpers, and the entries of the kernel table, which live one op
 * family per file:
 *   cuda_backend.cu      the instance (open/close), memory, index flags, graphs, the table
 *   device_pool.cu       the instance's device memory pool
 *   cuda_elementwise.cu  copy, fill, unary, binary, where
 *   cuda_reduce.cu       reductions
 *   cuda_matmul.cu       matrix products (cuBLAS)
 *   cuda_nn.cu           softmax, norms, cross-entropy, one-hot, rows gather/scatter, RoPE, masks
 *   cuda_optim.cu        AdamW, SGD, the multi-tensor AdamW and sum of squares, TTT-E2E's clipped inner step
 *                        (multi_tensor.cuh)
 *   attention*.cu        fused attention (attention_*.cuh hold the kernels; attention_cudnn.cu: the optional
 *                        cuDNN path of the bf16 entries) */
#ifndef TTT_CUDA_INTERNAL_H
#define TTT_CUDA_INTERNAL_H

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ttt/backend.h"

/* Check a CUDA call; on failure name it in the backend error and return TTT_ERR. */
#define CU(call)                                                                              \
    do {                                                                                      \
        cudaError_t e_ = (call);                                                              \
        if (e_ != cudaSuccess) {                                                              \
            ttt_backend_error("%s failed: %s", #call, cudaGetErrorString(e_));                \
            return TTT_ERR;                                                                   \
        }                                                                                     \
    } while (0)

/* Check the launch just made. */
#define LAUNCHED(name)                                                                        \
    do {                                                                                      \
        cudaError_t e_ = cudaGetLastError();                                                  \
        if (e_ != cudaSuccess) {                                                              \
            ttt_backend_error("kernel %s: %s", name, cudaGetErrorString(e_));                 \
            return TTT_ERR;                                                                   \
        }                                                                                     \
    } while (0)

/* ---- the instance ----------------------------------------------------------------------------------------- */

/* A device buffer that kernels share between launches; it grows by half again
 * when too small (never while a graph is recorded: the graph would keep the
 * old address), so steady-state steps do not allocate. */
struct Scratch {
    void *p;
    size_t bytes;
};

/* Index validation: kernels set the instance's flag pair to (first bad
 * position + 1, value); the host reads it back after the launch. While a graph
 * is recorded, each checked kernel gets its own pair and the reads wait for
 * the replay. */
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

struct CuPool; /* device_pool.cu */

/* One opened CUDA instance (ttt_backend_state): everything of the backend that
 * belongs to one device and one context. */
struct CuDev {
    int index;                 /* the GPU */
    int tf32;                  /* f32 matmuls on the TF32 tensor cores (ttt_ctx_config.tf32) */
    int sm_count;              /* multiprocessors of the GPU */
    cudaStream_t stream;       /* all of the instance's work (a created stream: graphs cannot capture the legacy one) */
    cublasHandle_t cublas;     /* created on first use, bound to stream, with its own workspace */
    void *cublas_ws;
    int *flags;                /* FLAG_SLOTS pairs of device words for kernels to report bad indices */
    int *flag;                 /* the pair the next checked kernel uses */
    CuGraph *rec;              /* the graph being recorded */
    int graphs;                /* recorded graphs alive: they may address buffers that grow */
    void *retired[64];         /* outgrown buffers kept for them */
    int n_retired;
    Scratch reduce_scratch;    /* per-chunk partials of reductions, in double */
    Scratch sort_scratch;      /* scatter_add_rows' sorted ids and positions */
    Scratch gdn_scratch;       /* the Gated DeltaNet kernels' per-chunk maps, state gradients, partials (gdn_chunk.cu) */
    Scratch scan_scratch;      /* ttt_linear_scan_bwd's hand-over between its two kernels (ttt_scan.cu) */
    Scratch mttt_scratch;      /* the MTTT-MLP kernels' per-chunk partial sums (mttt_step.cu) */
    Scratch cudnn_ws;          /* cuDNN attention's workspace (attention_cudnn.cu) */
    Scratch rope_scratch;      /* RoPE's cosine / sine table of the call (cuda_nn.cu) */
    Scratch attn_scratch;      /* bf16 attention's per-share partials when it splits the keys (attention.cu) */
    void *cudnn;               /* its handle and cached plans, created on first use (attention_cudnn.cu) */
    CuPool *pool;              /* device memory (device_pool.cu) */
};

/* Make the instance's GPU current on this thread (nothing to do when it is):
 * two contexts on two GPUs may alternate calls on one host thread. */
static inline int cu_enter(const CuDev *D) {
    int cur = -1;
    if (cudaGetDevice(&cur) != cudaSuccess || cur != D->index) CU(cudaSetDevice(D->index));
    return TTT_OK;
}
/* First line of an entry: D is the instance, its device current. */
#define ENTER(D, self)                \
    CuDev *D = (CuDev *)(self);       \
    if (cu_enter(D)) return TTT_ERR

/* Kernels with large dynamic shared memory (the TTT scans): the device's per-block limit with the opt-in
 * (227 KB on an H100), cached per GPU, and raising a kernel's limit to bytes unless already that high
 * (allowed: the kernel's own per-GPU cache, a static int[CU_MAX_GPUS] at the call site). */
enum { CU_MAX_GPUS = 64 };
static inline int cu_smem_limit(const CuDev *D) {
    static int limit[CU_MAX_GPUS];
    if (D->index < 0 || D->index >= CU_MAX_GPUS) return 48 << 10;
    if (!limit[D->index] &&
        cudaDeviceGetAttribute(&limit[D->index], cudaDevAttrMaxSharedMemoryPerBlockOptin, D->index) != cudaSuccess)
        limit[D->index] = 48 << 10;
    return limit[D->index];
}
#ifdef __cplusplus
template <typename K> static inline int cu_allow_smem(K kernel, size_t bytes, const CuDev *D, int *allowed) {
    if (D->index >= 0 && D->index < CU_MAX_GPUS && (int)bytes <= allowed[D->index]) return TTT_OK;
    CU(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    if (D->index >= 0 && D->index < CU_MAX_GPUS) allowed[D->index] = (int)bytes;
    return TTT_OK;
}
#endif

/* cuda_backend.cu */
int ttt__cuda_scratch_reserve(CuDev *D, Scratch *s, size_t bytes, const char *who);
int ttt__cuda_flag_reset(CuDev *D);
int ttt__cuda_flag_check(CuDev *D, const char *what, const char *unit, int64_t range);
#define scratch_reserve ttt__cuda_scratch_reserve
#define flag_reset ttt__cuda_flag_reset
#define flag_check ttt__cuda_flag_check
/* cuda_matmul.cu: create the instance's cuBLAS handle if it has none. */
int ttt__cuda_ensure_cublas(CuDev *D);

/* cuda_linalg.cu: the thin SVD (the table's svd entry). */
int ttt__cu_svd(ttt_backend_state *self, const ttt_tensor *a, ttt_tensor *u, ttt_tensor *s, ttt_tensor *vt);

/* device_pool.cu: every device allocation of an instance (see the file). */
CuPool *ttt__cuda_pool_new(void);
void ttt__cuda_pool_delete(CuPool *p); /* gives every slab back to the driver */
void *ttt__cuda_pool_alloc(CuPool *p, size_t bytes); /* NULL (message in the backend error) on failure */
void ttt__cuda_pool_free(CuPool *p, void *ptr);
void ttt__cuda_pool_stats(CuPool *p, size_t *reserved, size_t *in_use, uint64_t *driver_allocs);

/* The kernel entries, one per TTT_KERNEL_LIST line, defined in the family files. */
#define TTT__CUDA_DECL(name, params, args) int ttt__cu_##name(ttt_backend_state *self, TTT__UNPAREN params);
TTT_KERNEL_LIST(TTT__CUDA_DECL)
#undef TTT__CUDA_DECL

/* ---- strided indexing ------------------------------------------------------------------------------------- */

enum { MAXD = TTT_MAX_DIMS, MAXOPS = 4, THREADS = 256 };

struct Strided {
    int ndim;
    int small; /* every index fits in 32 bits: divide in 32 bits (a 64-bit division is a long software routine) */
    int64_t shape[MAXD];
    int64_t stride[MAXOPS][MAXD];
};

/* Drop size-1 axes and merge neighbours that every operand walks densely, so
 * the per-element index arithmetic has as few axes as possible. */
static inline Strided make_strided(int nops, const ttt_tensor *const *ops) {
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

static inline int64_t numel(const ttt_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

static inline unsigned blocks_for(int64_t n) {
    int64_t b = (n + THREADS - 1) / THREADS;
    return (unsigned)(b < 65535 * 32 ? (b > 0 ? b : 1) : 65535 * 32);
}

#define GRID_LOOP(i, n) for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

/* ---- dtypes ----------------------------------------------------------------------------------------------- */

static inline size_t dsize(ttt_dtype dt) { return dt == TTT_F64 ? 8 : dt == TTT_BF16 ? 2 : 4; }

/* Float storage types and the type their arithmetic is done in: bf16 loads
 * widen to f32 (ld) and results round to nearest even on the store (st). */
typedef __nv_bfloat16 bf16;
template <typename T> struct Acc { typedef T type; };
template <> struct Acc<bf16> { typedef float type; };
static __device__ __forceinline__ float ld(float v) { return v; }
static __device__ __forceinline__ double ld(double v) { return v; }
static __device__ __forceinline__ float ld(bf16 v) { return __bfloat162float(v); }
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

static inline int is_dense(const ttt_tensor *t) {
    int64_t expect = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != expect) return 0;
        expect *= t->shape[i];
    }
    return 1;
}

static inline bool is_float_dt(ttt_dtype dt) { return dt == TTT_F32 || dt == TTT_F64 || dt == TTT_BF16; }
static inline int float_only(const char *k, ttt_dtype dt) {
    if (dt == TTT_F32 || dt == TTT_F64 || dt == TTT_BF16) return TTT_OK;
    ttt_backend_error("%s: dtype %d is not supported on cuda", k, (int)dt);
    return TTT_ERR;
}

/* block_reduce, the reductions' chunking and rows kernel (device code the emulator can run too) */
#include "reduce_kernels.cuh"

#ifdef __cplusplus
/* Helpers of the attention launchers (attention.cu, attention_bwd2.cu). */
/* The product of the axes before the last two: the batch x heads of a [..., T, d] tensor. */
static inline int64_t ttt__leading(const ttt_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim - 2; i++) n *= t->shape[i];
    return n;
}
static inline bool ttt__aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }
static inline bool ttt__aligned4(const void *p) { return ((uintptr_t)p & 3) == 0; } /* bf16 pairs stored as one word */
/* A kernel path's switch in the environment: "0" turns a default-on path off, "1" a default-off one on; unset or
 * anything else keeps the default. Callers read it once: static const bool on = ttt__env_switch(...). */
static inline bool ttt__env_switch(const char *name, bool default_on) {
    const char *e = getenv(name);
    return default_on ? !(e && !strcmp(e, "0")) : e && !strcmp(e, "1");
}
/* Raise a kernel's dynamic shared-memory limit (above the default 48 KB) once
 * per GPU: the attribute belongs to the device, and instances may sit on several. */
template <typename K>
static int ttt__allow_smem(K kernel, int bytes, const CuDev *D, uint64_t *done) {
    const uint64_t bit = D->index < 64 ? (uint64_t)1 << D->index : 0;
    if (!bit || !(*done & bit)) {
        CU(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
        *done |= bit;
    }
    return TTT_OK;
}
#endif

#endif
