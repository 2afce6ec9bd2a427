/* Batched matrix products through OpenBLAS (cblas_sgemm / cblas_dgemm; one-row
 * products, as in decoding a token, through cblas_sgemv / cblas_dgemv).
 * Batch axes may be broadcast (stride 0); each matrix has unit stride in its
 * last axis, so its leading dimension is its row stride (rows closer than
 * that, e.g. an expanded row, are packed first). Builds without CBLAS
 * use gemm_loop below: correct, unblocked, slow. */
#include <stdlib.h>
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

/* OpenBLAS keeps one process-wide thread count: set it to this instance's
 * before each product when it differs (two contexts with different counts
 * then take turns; calls from several host threads at once share it). */
static void blas_threads(ttt_backend_state *self) {
#if defined(TTT_HAVE_CBLAS) && defined(OPENBLAS_VERSION)
    static _Atomic int set;
    const int want = cpu_threads_now(self);
    if (set != want) {
        openblas_set_num_threads(want);
        set = want;
    }
#else
    (void)self;
#endif
}

static int64_t lead_dim(const ttt_tensor *t) {
    int64_t ld = t->stride[t->ndim - 2], cols = t->shape[t->ndim - 1];
    if (t->shape[t->ndim - 2] <= 1 || ld < cols) ld = cols; /* stride is meaningless for one row */
    return ld > 0 ? ld : 1;
}

/* Element offset of batch i of x, batch axes indexed by c's shape. */
static int64_t batch_offset(const ttt_tensor *c, const ttt_tensor *x, int64_t i) {
    int64_t off = 0;
    for (int d = c->ndim - 3; d >= 0; d--) {
        off += (i % c->shape[d]) * x->stride[d];
        i /= c->shape[d];
    }
    return off;
}

/* BLAS needs rows at least a row apart. An expanded row axis (stride 0: a
 * broadcast row used as a matrix) or overlapping rows are packed densely,
 * all batches at once; NULL if x needs no packing (or on OOM, *oom set). */
static void *pack_rows(const ttt_tensor *c, const ttt_tensor *x, int64_t batch, size_t es, int *oom) {
    int nd = x->ndim;
    int64_t rows = x->shape[nd - 2], cols = x->shape[nd - 1];
    if (rows <= 1 || x->stride[nd - 2] >= cols) return NULL;
    char *p = malloc((size_t)(batch * rows * cols) * es);
    if (!p) {
        *oom = 1;
        return NULL;
    }
    for (int64_t i = 0; i < batch; i++) {
        const char *src = (const char *)x->data + batch_offset(c, x, i) * (int64_t)es;
        for (int64_t r = 0; r < rows; r++)
            memcpy(p + (size_t)((i * rows + r) * cols) * es, src + r * x->stride[nd - 2] * (int64_t)es,
                   (size_t)cols * es);
    }
    return p;
}

int cpu_matmul(ttt_backend_state *self, ttt_tensor *c, const ttt_tensor *a, const ttt_tensor *b, int trans_a, int trans_b) {
    if (c->dtype != TTT_F32 && c->dtype != TTT_F64) return cpu_unsupported("matmul", c->dtype);
    int nd = c->ndim;
    int64_t m = c->shape[nd - 2], n = c->shape[nd - 1];
    int64_t k = trans_a ? a->shape[nd - 2] : a->shape[nd - 1];
    int64_t batch = 1;
    for (int d = 0; d < nd - 2; d++) batch *= c->shape[d];
    size_t es = c->dtype == TTT_F32 ? 4 : 8;
    if (batch * m * n == 0) return TTT_OK;
    if (k == 0) {
        memset(c->data, 0, (size_t)(batch * m * n) * es);
        return TTT_OK;
    }
    int oom = 0;
    char *pa = pack_rows(c, a, batch, es, &oom), *pb = oom ? NULL : pack_rows(c, b, batch, es, &oom);
    if (oom) {
        free(pa);
        ttt_backend_error("matmul: out of memory packing an operand with expanded rows");
        return TTT_ERR;
    }
    /* a packed operand is dense: leading dimension = its row length, batches back to back */
    int64_t lda = pa ? a->shape[nd - 1] : lead_dim(a), ldb = pb ? b->shape[nd - 1] : lead_dim(b);
    int64_t mat_a = a->shape[nd - 2] * a->shape[nd - 1], mat_b = b->shape[nd - 2] * b->shape[nd - 1];
    CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
    blas_threads(self);
    /* Many small matrices: spread batches over threads (BLAS threads would idle), once there is enough work
     * to pay for waking them (8 multiply-adds weigh about one exp; a decoded token's attention, one row per
     * head, is too little). */
    int small = m * n * k < 64 * 64 * 64 && batch > 1;
CPU_PARALLEL(self, small ? batch * m * n * k / 8 : 0,
    _Pragma("omp for schedule(static)")
        for (int64_t i = 0; i < batch; i++) {
            const char *xa = pa ? pa + (size_t)(i * mat_a) * es : (const char *)a->data + batch_offset(c, a, i) * (int64_t)es;
            const char *xb = pb ? pb + (size_t)(i * mat_b) * es : (const char *)b->data + batch_offset(c, b, i) * (int64_t)es;
#ifdef TTT_HAVE_CBLAS
            if (m == 1) { /* one row (decoding a token): a matrix-vector product; sgemm would pack all of B first */
                const int incx = trans_a ? (int)lda : 1;
                const CBLAS_TRANSPOSE tv = trans_b ? CblasNoTrans : CblasTrans;
                const int rows = trans_b ? (int)n : (int)k, cols = trans_b ? (int)k : (int)n;
                if (c->dtype == TTT_F32)
                    cblas_sgemv(CblasRowMajor, tv, rows, cols, 1.0f, (const float *)xb, (int)ldb, (const float *)xa, incx,
                                0.0f, (float *)c->data + i * n, 1);
                else
                    cblas_dgemv(CblasRowMajor, tv, rows, cols, 1.0, (const double *)xb, (int)ldb, (const double *)xa, incx,
                                0.0, (double *)c->data + i * n, 1);
                continue;
            }
#endif
            if (c->dtype == TTT_F32)
                cblas_sgemm(CblasRowMajor, ta, tb, (int)m, (int)n, (int)k, 1.0f, (const float *)xa, (int)lda,
                            (const float *)xb, (int)ldb, 0.0f, (float *)c->data + i * m * n, (int)n);
            else
                cblas_dgemm(CblasRowMajor, ta, tb, (int)m, (int)n, (int)k, 1.0, (const double *)xa, (int)lda,
                            (const double *)xb, (int)ldb, 0.0, (double *)c->data + i * m * n, (int)n);
        }
);
    free(pa);
    free(pb);
    return TTT_OK;
}
