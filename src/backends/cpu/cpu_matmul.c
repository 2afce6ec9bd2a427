/* Batched matrix products through OpenBLAS (cblas_sgemm / cblas_dgemm).
 * Batch axes may be broadcast (stride 0); each matrix has unit stride in its
 * last axis, so its leading dimension is its row stride. Builds without CBLAS
 * use gemm_loop below: correct, unblocked, slow. */
#include <string.h>

#include "cpu_internal.h"

#ifdef TTT_HAVE_CBLAS
#include <cblas.h>
#else
typedef enum { CblasRowMajor = 101 } CBLAS_ORDER;
typedef enum { CblasNoTrans = 111, CblasTrans = 112 } CBLAS_TRANSPOSE;

#define GEMM_LOOP(NAME, T)                                                                                   \
    static void NAME(CBLAS_ORDER o, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, T alpha,        \
                     const T *a, int lda, const T *b, int ldb, T beta, T *c, int ldc) {                         \
        (void)o;                                                                                             \
        for (int i = 0; i < m; i++) {                                                                        \
            for (int j = 0; j < n; j++) c[i * ldc + j] = beta == 0 ? (T)0 : beta * c[i * ldc + j];           \
            for (int p = 0; p < k; p++) {                                                                    \
                T av = alpha * (ta == CblasTrans ? a[p * lda + i] : a[i * lda + p]);                         \
                for (int j = 0; j < n; j++) c[i * ldc + j] += av * (tb == CblasTrans ? b[j * ldb + p] : b[p * ldb + j]); \
            }                                                                                                \
        }                                                                                                    \
    }
GEMM_LOOP(cblas_sgemm, float)
GEMM_LOOP(cblas_dgemm, double)
#endif

static int64_t lead_dim(const ttt_tensor *t) {
    int64_t ld = t->stride[t->ndim - 2], cols = t->shape[t->ndim - 1];
    if (t->shape[t->ndim - 2] <= 1 || ld < cols) ld = cols; /* stride is meaningless for one row */
    return ld > 0 ? ld : 1;
}

int cpu_matmul(ttt_tensor *c, const ttt_tensor *a, const ttt_tensor *b, int trans_a, int trans_b) {
    if (c->dtype != TTT_F32 && c->dtype != TTT_F64) return cpu_unsupported("matmul", c->dtype);
    int nd = c->ndim;
    int64_t m = c->shape[nd - 2], n = c->shape[nd - 1];
    int64_t k = trans_a ? a->shape[nd - 2] : a->shape[nd - 1];
    int64_t batch = 1;
    for (int d = 0; d < nd - 2; d++) batch *= c->shape[d];
    size_t es = c->dtype == TTT_F32 ? 4 : 8;
    if (k == 0) {
        memset(c->data, 0, (size_t)(batch * m * n) * es);
        return TTT_OK;
    }
    int64_t lda = lead_dim(a), ldb = lead_dim(b);
    CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
    /* Many small matrices: spread batches over threads (BLAS threads would idle). */
    int small = m * n * k < 64 * 64 * 64 && batch > 1;
CPU_PARALLEL(small,
    _Pragma("omp for schedule(static)")
        for (int64_t i = 0; i < batch; i++) {
            int64_t oa = 0, ob = 0, rem = i;
            for (int d = nd - 3; d >= 0; d--) {
                int64_t idx = rem % c->shape[d];
                rem /= c->shape[d];
                oa += idx * a->stride[d];
                ob += idx * b->stride[d];
            }
            if (c->dtype == TTT_F32)
                cblas_sgemm(CblasRowMajor, ta, tb, (int)m, (int)n, (int)k, 1.0f, (const float *)a->data + oa, (int)lda,
                            (const float *)b->data + ob, (int)ldb, 0.0f, (float *)c->data + i * m * n, (int)n);
            else
                cblas_dgemm(CblasRowMajor, ta, tb, (int)m, (int)n, (int)k, 1.0, (const double *)a->data + oa, (int)lda,
                            (const double *)b->data + ob, (int)ldb, 0.0, (double *)c->data + i * m * n, (int)n);
        }
);
    return TTT_OK;
}
