/* Shared by the CUDA backend's source files (not installed): the error-checking
 * macros, the backend's stream, and the kernel-table entries that live outside
 * cuda_backend.cu. */
#ifndef TTT_CUDA_INTERNAL_H
#define TTT_CUDA_INTERNAL_H

#include <cuda_runtime.h>

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

#ifdef __cplusplus
/* Helpers of the attention launchers (attention.cu, attention_bwd2.cu). */
/* The product of the axes before the last two: the batch x heads of a [..., T, d] tensor. */
static inline int64_t ttt__leading(const ttt_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim - 2; i++) n *= t->shape[i];
    return n;
}
static inline bool ttt__aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }
/* Raise a kernel's dynamic shared-memory limit once (above the default 48 KB). */
template <typename K>
static int ttt__allow_smem(K kernel, int bytes, bool *done) {
    if (!*done) {
        CU(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
        *done = true;
    }
    return TTT_OK;
}
#endif

/* device_pool.cu: every device allocation of the backend (see the file). */
void *ttt__cuda_pool_alloc(size_t bytes); /* NULL (message in the backend error) on failure */
void ttt__cuda_pool_free(void *ptr);
void ttt__cuda_pool_stats(size_t *reserved, size_t *in_use, uint64_t *driver_allocs);

/* The one stream all of the backend's work is queued on (cuda_backend.cu). */
cudaStream_t ttt__cuda_stream(void);

/* attention.cu: the fused attention entries of the table (see backend.h). */
int ttt__cuda_attention_fwd(ttt_tensor *out, ttt_tensor *lse, const ttt_tensor *q, const ttt_tensor *k,
                            const ttt_tensor *v, int causal, int64_t window, double scale);
int ttt__cuda_attention_bwd(ttt_tensor *dq, ttt_tensor *dk, ttt_tensor *dv, ttt_tensor *delta, const ttt_tensor *dout,
                            const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *out,
                            const ttt_tensor *lse, int causal, int64_t window, double scale);

/* attention_bwd2.cu: the fused double backward (see backend.h). */
int ttt__cuda_attention_bwd2(ttt_tensor *gq, ttt_tensor *gk, ttt_tensor *gv, ttt_tensor *gdout, ttt_tensor *rows,
                             const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *dout,
                             const ttt_tensor *lse, const ttt_tensor *delta, const ttt_tensor *uq, const ttt_tensor *uk,
                             const ttt_tensor *uv, int causal, int64_t window, double scale);

#endif
