// Dense linear algebra of the CUDA backend: the thin SVD through cuSOLVER's
// gesvd in f64 (Transformer-squared's SVF computes it once per model and caches
// it). A handle and workspace are made per call: the SVD is rare and this keeps
// the instance's state small.
#include <cusolverDn.h>

#include "cuda_internal.h"

// Row-major a [m, n] (m <= n) is the column-major n x m matrix a^T, tall, which
// gesvd takes (it needs rows >= cols). a^T = U' S VT' gives a = VT'^T S U'^T:
// read as row-major, VT' (m x m) is u and U' (n x m) is vt.
int ttt__cu_svd(ttt_backend_state *self, const ttt_tensor *a, ttt_tensor *u, ttt_tensor *s,
                           ttt_tensor *vt) {
    ENTER(D, self);
    if (a->dtype != TTT_F64 || u->dtype != TTT_F64 || s->dtype != TTT_F64 || vt->dtype != TTT_F64) {
        ttt_backend_error("svd: the CUDA kernel takes f64");
        return TTT_ERR;
    }
    const int64_t m64 = a->shape[0], n64 = a->shape[1];
    if (m64 > n64 || n64 > (1 << 30)) {
        ttt_backend_error("svd: a [%lld, %lld] must be wide or square and fit cuSOLVER's int", (long long)m64,
                          (long long)n64);
        return TTT_ERR;
    }
    const int rows = (int)n64, cols = (int)m64;
    cusolverDnHandle_t h = NULL;
    double *work_a = NULL, *work = NULL;
    int *info_d = NULL, lwork = 0, info = 0, rc = TTT_ERR;
    const char *failed = NULL;
    if (cusolverDnCreate(&h) != CUSOLVER_STATUS_SUCCESS) failed = "cusolverDnCreate";
    else if (cusolverDnSetStream(h, D->stream) != CUSOLVER_STATUS_SUCCESS) failed = "cusolverDnSetStream";
    else if (cusolverDnDgesvd_bufferSize(h, rows, cols, &lwork) != CUSOLVER_STATUS_SUCCESS) failed = "gesvd_bufferSize";
    else if (cudaMalloc(&work_a, sizeof(double) * (size_t)(m64 * n64)) != cudaSuccess ||
             cudaMalloc(&work, sizeof(double) * (size_t)(lwork > 0 ? lwork : 1)) != cudaSuccess ||
             cudaMalloc(&info_d, sizeof(int)) != cudaSuccess)
        failed = "cudaMalloc of the SVD workspace";
    else if (cudaMemcpyAsync(work_a, a->data, sizeof(double) * (size_t)(m64 * n64), cudaMemcpyDeviceToDevice,
                             D->stream) != cudaSuccess)
        failed = "copy of the input";
    else if (cusolverDnDgesvd(h, 'S', 'S', rows, cols, work_a, rows, (double *)s->data, (double *)vt->data, rows,
                              (double *)u->data, cols, work, lwork, NULL, info_d) != CUSOLVER_STATUS_SUCCESS)
        failed = "cusolverDnDgesvd";
    else if (cudaMemcpyAsync(&info, info_d, sizeof(int), cudaMemcpyDeviceToHost, D->stream) != cudaSuccess ||
             cudaStreamSynchronize(D->stream) != cudaSuccess)
        failed = "reading gesvd's status";
    else if (info != 0)
        ttt_backend_error("svd: cusolverDnDgesvd did not converge (info %d)", info);
    else rc = TTT_OK;
    if (failed) ttt_backend_error("svd: %s failed", failed);
    cudaFree(work_a), cudaFree(work), cudaFree(info_d);
    if (h) cusolverDnDestroy(h);
    return rc;
}
