/* ttt CUDA backend (matrix products through cuBLAS):
 * see cuda_internal.h for the instance (CuDev) the entries take and the
 * helpers the files share. */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

/* cuBLAS gets its own workspace (the size NVIDIA recommends for Hopper), so it
 * never allocates while a graph is recorded, and recorded and eager steps run
 * the same configuration. */
static const size_t CUBLAS_WORKSPACE = (size_t)32 << 20;

int ttt__cuda_ensure_cublas(CuDev *D) {
    if (D->cublas) return TTT_OK;
    cublasStatus_t s = cublasCreate(&D->cublas);
    if (s != CUBLAS_STATUS_SUCCESS) {
        ttt_backend_error("cublasCreate failed: status %d", (int)s);
        D->cublas = NULL;
        return TTT_ERR;
    }
    void *ws = NULL;
    if (cublasSetStream(D->cublas, D->stream) != CUBLAS_STATUS_SUCCESS || cudaMalloc(&ws, CUBLAS_WORKSPACE) != cudaSuccess ||
        cublasSetWorkspace(D->cublas, ws, CUBLAS_WORKSPACE) != CUBLAS_STATUS_SUCCESS) {
        ttt_backend_error("cuBLAS setup (stream, %zu-byte workspace) failed", CUBLAS_WORKSPACE);
        cublasDestroy(D->cublas);
        D->cublas = NULL;
        if (ws) cudaFree(ws);
        return TTT_ERR;
    }
    D->cublas_ws = ws; /* freed by the instance's close, after the handle */
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

/* An outer product (inner size 1) of one matrix pair: c[i, j] = a_i b_j, one rounding as cuBLAS's, but without
 * its GEMM kernels, which took 3.5 ms for the ViT's pixel embedding ([50176, 1] x [1, 64]) on an H100. */
template <typename T>
__global__ void k_outer(int64_t m, int64_t n, int64_t sa, int64_t sb, T *c, const T *a, const T *b) {
    typedef typename Acc<T>::type A;
    GRID_LOOP(e, m * n) {
        const int64_t i = e / n, j = e % n;
        c[e] = st_f<T>((A)ld(a[i * sa]) * (A)ld(b[j * sb]));
    }
}

int ttt__cu_matmul(ttt_backend_state *self, ttt_tensor *c, const ttt_tensor *a, const ttt_tensor *b, int trans_a, int trans_b) {
    ENTER(D, self);
    if (float_only("matmul", c->dtype) || ttt__cuda_ensure_cublas(D)) return TTT_ERR;
    int nd = c->ndim;
    int64_t m = c->shape[nd - 2], n = c->shape[nd - 1], k = trans_a ? a->shape[nd - 2] : a->shape[nd - 1];
    if (k == 0) {
        CU(cudaMemsetAsync(c->data, 0, (size_t)numel(c) * dsize(c->dtype), D->stream));
        return TTT_OK;
    }
    if (k == 1 && numel(c) == m * n && is_dense(c)) { /* one matrix (leading axes of 1) */
        if (m * n == 0) return TTT_OK;
        /* op(a) [m, 1], op(b) [1, n]: the strides that walk a's column and b's row */
        const int64_t sa = a->stride[a->ndim - (trans_a ? 1 : 2)], sb = b->stride[b->ndim - (trans_b ? 2 : 1)];
        FLOAT_DISPATCH(c->dtype, T, k_outer<T><<<blocks_for(m * n), THREADS, 0, D->stream>>>(m, n, sa, sb, (T *)c->data, (const T *)a->data, (const T *)b->data))
        LAUNCHED("matmul (outer product)");
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
            st = cublasGemmStridedBatchedEx(D->cublas, tb, ta, (int)n, (int)m, (int)k, &one, (const bf16 *)b->data + ob,
                                            CUDA_R_16BF, (int)ldb, sb, (const bf16 *)a->data + oa, CUDA_R_16BF,
                                            (int)lda, sa, &zero, (bf16 *)c->data + oc, CUDA_R_16BF, (int)n, sc,
                                            (int)nbatch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        } else if (c->dtype == TTT_F32 && D->tf32) {
            const float one = 1.0f, zero = 0.0f;
            st = cublasGemmStridedBatchedEx(D->cublas, tb, ta, (int)n, (int)m, (int)k, &one, (const float *)b->data + ob,
                                            CUDA_R_32F, (int)ldb, sb, (const float *)a->data + oa, CUDA_R_32F,
                                            (int)lda, sa, &zero, (float *)c->data + oc, CUDA_R_32F, (int)n, sc,
                                            (int)nbatch, CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT);
        } else if (c->dtype == TTT_F32) {
            const float one = 1.0f, zero = 0.0f;
            st = cublasSgemmStridedBatched(D->cublas, tb, ta, (int)n, (int)m, (int)k, &one,
                                           (const float *)b->data + ob, (int)ldb, sb, (const float *)a->data + oa,
                                           (int)lda, sa, &zero, (float *)c->data + oc, (int)n, sc, (int)nbatch);
        } else {
            const double one = 1.0, zero = 0.0;
            st = cublasDgemmStridedBatched(D->cublas, tb, ta, (int)n, (int)m, (int)k, &one,
                                           (const double *)b->data + ob, (int)ldb, sb, (const double *)a->data + oa,
                                           (int)lda, sa, &zero, (double *)c->data + oc, (int)n, sc, (int)nbatch);
        }
        if (st != CUBLAS_STATUS_SUCCESS) {
            ttt_backend_error("%s failed: status %d (m %lld n %lld k %lld batch %lld)",
                              c->dtype == TTT_BF16 ? "cublasGemmStridedBatchedEx(bf16)"
                              : c->dtype == TTT_F32 ? (D->tf32 ? "cublasGemmStridedBatchedEx(tf32)" : "cublasSgemmStridedBatched")
                                                    : "cublasDgemmStridedBatched", (int)st, (long long)m, (long long)n, (long long)k,
                              (long long)nbatch);
            return TTT_ERR;
        }
    }
    return TTT_OK;
}

