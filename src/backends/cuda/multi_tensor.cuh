/* Multi-tensor kernels: the optimizer's per-parameter work over many tensors
 * in a few launches (cuda_optim.cu launches them). Device code only, so
 * dev/cuda/emu.h can run it on the host: the includer provides THREADS,
 * GRID_LOOP, Acc<T>, ld(), st<T>() and st_f<T>() (cuda_internal.h, or the
 * emulator test), and reduce_kernels.cuh.
 *
 * A launch takes a table of up to *_MAX tensors by value (kernel arguments,
 * under the 4 KB that every CUDA version takes): each tensor's pointers and
 * where its elements start in the launch's range. A thread finds its tensor by
 * a binary search of that table. The arithmetic per element is the per-tensor
 * kernels' own (the per-tensor AdamW entry is this kernel with one tensor), so
 * the bits do not depend on how tensors are grouped into launches. */
#ifndef TTT_MULTI_TENSOR_CUH
#define TTT_MULTI_TENSOR_CUH

#include <stdint.h>

namespace mt {

enum { ADAMW_MAX = 64, SUMSQ_MAX = 96 };

/* The last t in [0, n) with start[t] <= i: the tensor holding element (or block) i. Empty tensors
 * (start[t] == start[t + 1]) are passed over. */
__device__ __forceinline__ int find(const int64_t *start, int n, int64_t i) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (start[mid] <= i) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

/* ---- AdamW ---------------------------------------------------------------------------------------------- */

struct AdamwArgs {
    int n;
    int64_t start[ADAMW_MAX + 1]; /* tensor t is elements [start[t], start[t + 1]) of the launch */
    void *p[ADAMW_MAX], *m[ADAMW_MAX], *v[ADAMW_MAX];
    const void *g[ADAMW_MAX];
    double wd[ADAMW_MAX];
};

/* One element of PyTorch's AdamW, in double (bc1, bc2: the bias corrections 1 - beta^step). */
template <typename T>
__device__ __forceinline__ void adamw_elem(T *p, const T *g, T *m, T *v, int64_t i, double lr, double b1, double b2,
                                           double eps, double wd, double bc1, double bc2) {
    double w = (double)ld(p[i]) * (1.0 - lr * wd), gi = ld(g[i]);
    double mi = b1 * (double)ld(m[i]) + (1.0 - b1) * gi;
    double vi = b2 * (double)ld(v[i]) + (1.0 - b2) * gi * gi;
    m[i] = st<T>(mi);
    v[i] = st<T>(vi);
    p[i] = st<T>(w - lr * (mi / bc1) / (sqrt(vi / bc2) + eps));
}

template <typename T>
__global__ void k_adamw(AdamwArgs a, double lr, double b1, double b2, double eps, double bc1, double bc2) {
    const int64_t total = a.start[a.n];
    GRID_LOOP(i, total) {
        const int t = find(a.start, a.n, i);
        adamw_elem<T>((T *)a.p[t], (const T *)a.g[t], (T *)a.m[t], (T *)a.v[t], i - a.start[t], lr, b1, b2, eps,
                      a.wd[t], bc1, bc2);
    }
}

/* ---- sum of squares (gradient clipping's global norm) ------------------------------------------------------ */

/* Each tensor's sum(x * x) is formed as the composed ops form it: x * x rounded to T (the binary mul), summed
 * in double over chunks of reduce_chunks(1, numel, 1) (k_red_rows: a block per chunk, each thread striding
 * over the chunk, then block_reduce), the chunks' partials summed by one block in the same way, rounded to T
 * (the reduce's output dtype), widened to double (the cast) and added in tensor order (the f64 adds). Pass 1
 * writes the chunks' partials; pass 2, one block, walks the tensors in order. */
struct SumsqArgs {
    int n;
    const void *x[SUMSQ_MAX];
    int64_t numel[SUMSQ_MAX];
    int64_t per[SUMSQ_MAX];         /* elements per chunk */
    int64_t first[SUMSQ_MAX + 1];   /* tensor t's chunks are blocks (and partials) [first[t], first[t + 1]) */
};

template <typename T>
__global__ void k_sumsq_chunks(SumsqArgs a, double *part) {
    typedef typename Acc<T>::type A;
    const int t = find(a.first, a.n, (int64_t)blockIdx.x);
    const int64_t c = (int64_t)blockIdx.x - a.first[t], R = a.numel[t], per = a.per[t];
    const int64_t r0 = c * per, r1 = r0 + per < R ? r0 + per : R;
    const T *x = (const T *)a.x[t];
    double acc = 0.0;
    for (int64_t r = r0 + threadIdx.x; r < r1; r += blockDim.x) {
        const A xv = ld(x[r]);
        const double v = ld(st_f<T>(xv * xv));
        acc = acc + v;
    }
    acc = block_reduce<double>(acc, 0);
    if (threadIdx.x == 0) part[blockIdx.x] = acc;
}

/* One block. total: the running sum, written at the end; accumulate 0 starts it at the first tensor. */
template <typename T>
__global__ void k_sumsq_total(SumsqArgs a, const double *part, double *total, int accumulate) {
    double sum = accumulate ? *total : 0.0;
    for (int t = 0; t < a.n; t++) {
        const int64_t c0 = a.first[t], nc = a.first[t + 1] - c0;
        double s = part[c0];
        if (nc > 1) { /* the second pass of a chunked reduce (k_red_rows over the partials, one chunk) */
            double acc = 0.0;
            for (int64_t r = threadIdx.x; r < nc; r += blockDim.x) {
                const double v = part[c0 + r];
                acc = acc + v;
            }
            s = block_reduce<double>(acc, 0);
        }
        const double term = (double)ld(st<T>(s)); /* the sum in T, cast to f64 */
        sum = t == 0 && !accumulate ? term : sum + term;
    }
    if (threadIdx.x == 0) *total = sum;
}

}  // namespace mt

#endif
