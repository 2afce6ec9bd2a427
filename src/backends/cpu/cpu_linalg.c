/* Dense linear algebra of the CPU backend: the thin SVD through LAPACK's
 * dgesdd (OpenBLAS ships LAPACK; the Fortran entry is called directly, so no
 * LAPACKE headers are needed). Builds without LAPACK leave the entry NULL. */
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

#ifdef TTT_HAVE_LAPACK
/* LAPACK's Fortran interface; the trailing length is gfortran's hidden length of jobz. */
void dgesdd_(const char *jobz, const int *m, const int *n, double *a, const int *lda, double *s, double *u,
             const int *ldu, double *vt, const int *ldvt, double *work, const int *lwork, int *iwork, int *info,
             size_t jobz_len);

/* Row-major a [m, n] (m <= n) is the column-major n x m matrix a^T, tall. dgesdd on
 * it gives a^T = U' S VT', so a = VT'^T S U'^T: read as row-major, VT' (m x m,
 * column-major) is u and U' (n x m, column-major) is vt. No transposes needed. */
int cpu_svd(ttt_backend_state *self, const ttt_tensor *a, ttt_tensor *u, ttt_tensor *s, ttt_tensor *vt) {
    (void)self;
    if (a->dtype != TTT_F64 || u->dtype != TTT_F64 || s->dtype != TTT_F64 || vt->dtype != TTT_F64) {
        ttt_backend_error("svd: the CPU kernel takes f64");
        return TTT_ERR;
    }
    const int64_t m64 = a->shape[0], n64 = a->shape[1];
    if (m64 > n64 || n64 > (1 << 30)) {
        ttt_backend_error("svd: a [%lld, %lld] must be wide or square and fit LAPACK's int", (long long)m64,
                          (long long)n64);
        return TTT_ERR;
    }
    const int m = (int)n64, n = (int)m64; /* the column-major view: rows n64, cols m64 */
    double *work_a = malloc(sizeof(double) * (size_t)(m64 * n64));
    int *iwork = malloc(sizeof(int) * 8 * (size_t)n);
    if (!work_a || !iwork) {
        free(work_a), free(iwork);
        ttt_backend_error("svd: out of host memory");
        return TTT_ERR;
    }
    memcpy(work_a, a->data, sizeof(double) * (size_t)(m64 * n64)); /* dgesdd overwrites its input */
    int info = 0, lwork = -1;
    double query = 0;
    dgesdd_("S", &m, &n, work_a, &m, (double *)s->data, (double *)vt->data, &m, (double *)u->data, &n, &query,
            &lwork, iwork, &info, 1);
    lwork = info == 0 ? (int)query + 1 : 0;
    double *work = info == 0 ? malloc(sizeof(double) * (size_t)lwork) : NULL;
    if (work)
        dgesdd_("S", &m, &n, work_a, &m, (double *)s->data, (double *)vt->data, &m, (double *)u->data, &n, work,
                &lwork, iwork, &info, 1);
    free(work), free(work_a), free(iwork);
    if (!work || info != 0) {
        ttt_backend_error(!work && info == 0 ? "svd: out of host memory" : "svd: LAPACK dgesdd failed (info %d)", info);
        return TTT_ERR;
    }
    return TTT_OK;
}
#endif
