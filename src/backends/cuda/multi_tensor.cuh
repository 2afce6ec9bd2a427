/* Multi-tensor kernels: the optimizer's per-parameter work over many tensors
 * in a few launches (cuda_optim.cu launches them), and TTT-E2E's clipped inner step. Device code (and
 * clip_table, the host side of a launch, shared with the emulator test), so
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
#include <string.h>

namespace mt {

enum { ADAMW_MAX = 64, SUMSQ_MAX = 96, CLIP_MAX = 64, CLIP_CHUNK = 16384 };

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

/* ---- TTT-E2E's clipped inner step (backend.h: clip_step, clip_step_bwd; the math in src/ops/nn.c) ---------------
 *
 * Tensor t holds B sequences of per[t] elements; each sequence's run is cut into chunks of CLIP_CHUNK elements (the
 * plan of the CPU's cpu_clip_step_impl.h) and a block works on one (tensor, sequence, chunk). k_clip_sums writes
 * each chunk's sum of a g in double (a = g: the squares; a = dout: the backward's dot) to part[b P + j], j the
 * chunk's place among sequence b's P chunks of the call, tensor by tensor. k_clip_apply's blocks first sum their
 * sequence's P partials (every block of a sequence in the same order: the same bits), form the coefficients and
 * write dst = p a + q g over their chunk. Two launches per CLIP_MAX tensors each way, no atomics. */
struct ClipArgs {
    int n;
    int norm_t;                  /* the forward's apply: the tensor whose blocks of chunk 0 write norm[b] (-1: none) */
    int64_t B, P;
    int64_t first[CLIP_MAX + 1]; /* tensor t's blocks are [first[t], first[t + 1]) of the launch, B * chunks each */
    int64_t per[CLIP_MAX];       /* elements per sequence */
    int64_t pfirst[CLIP_MAX];    /* the sums: tensor t's chunks start at pfirst[t] of a sequence's P */
    void *dst[CLIP_MAX];         /* the apply: out / dg */
    const void *a[CLIP_MAX];     /* w / dout (NULL: zero) for the apply, g / dout for the sums */
    const void *g[CLIP_MAX];
};

__host__ __device__ inline int64_t clip_chunks(int64_t per) { return (per + CLIP_CHUNK - 1) / CLIP_CHUNK; }

/* Host: the next launch's table, from tensor *i on: at most CLIP_MAX of the tensors that take part (the sums:
 * those with a; the apply: those with dst), *i advanced past them; *p0 counts the sums' chunks of a sequence (their
 * place in P); *norm_due (the forward's apply) makes the first tensor with elements write the norm. Returns the
 * launch's blocks (0: nothing to launch). */
inline int64_t clip_table(ClipArgs *c, int n, int *i, int64_t *p0, int *norm_due, int64_t B, int64_t P,
                          const int64_t *per, void *const *dst, const void *const *a, const void *const *g, int sums) {
    memset(c, 0, sizeof *c);
    c->B = B, c->P = P, c->norm_t = -1;
    for (; *i < n && c->n < CLIP_MAX; (*i)++) {
        const int k = *i;
        if (sums ? !a[k] : !dst[k]) continue;
        const int t = c->n++;
        const int64_t chunks = clip_chunks(per[k]);
        c->per[t] = per[k], c->pfirst[t] = *p0, c->first[t + 1] = c->first[t] + B * chunks;
        c->dst[t] = sums ? nullptr : dst[k], c->a[t] = a[k], c->g[t] = g[k];
        if (sums) *p0 += chunks;
        if (norm_due && *norm_due && chunks > 0 && B > 0) c->norm_t = t, *norm_due = 0;
    }
    return c->first[c->n];
}

/* this block's tensor, sequence, chunk (c) and the chunk's first element and length */
__device__ __forceinline__ int clip_block(const ClipArgs &a, int64_t *b, int64_t *c, int64_t *start, int64_t *len) {
    const int t = find(a.first, a.n, (int64_t)blockIdx.x);
    const int64_t chunks = clip_chunks(a.per[t]), local = (int64_t)blockIdx.x - a.first[t];
    *b = local / chunks, *c = local % chunks, *start = *c * CLIP_CHUNK;
    *len = a.per[t] - *start < CLIP_CHUNK ? a.per[t] - *start : CLIP_CHUNK;
    return t;
}

template <typename T>
__global__ void k_clip_sums(ClipArgs a, double *part) {
    int64_t b, c, start, len;
    const int t = clip_block(a, &b, &c, &start, &len);
    const T *x = (const T *)a.a[t] + b * a.per[t] + start, *g = (const T *)a.g[t] + b * a.per[t] + start;
    double acc = 0.0;
    for (int64_t r = threadIdx.x; r < len; r += blockDim.x) {
        const double u = ld(x[r]), v = ld(g[r]);
        acc = acc + u * v;
    }
    acc = block_reduce<double>(acc, 0);
    if (threadIdx.x == 0) part[b * a.P + a.pfirst[t] + c] = acc;
}

/* sequence b's total of the partials, on every thread of the block */
__device__ __forceinline__ double clip_total(const double *part, int64_t P, int64_t b) {
    double acc = 0.0;
    for (int64_t j = threadIdx.x; j < P; j += blockDim.x) acc = acc + part[b * P + j];
    return block_reduce<double>(acc, 0);
}

/* The forward (bwd 0): N_b from the squares' partials when clip > 0, dst = w - eta s_b g; norm[b] written by the
 * norm_t blocks. The backward (bwd 1): N_b from norm, r_b from the dots' partials where the clip binds (N_b >= clip:
 * a tie too), dst = dg = -eta s_b dout + eta clip r_b / N_b^3 g there, else -eta dout. */
template <typename T>
__global__ void k_clip_apply(ClipArgs a, const double *part, double *norm, int bwd, double eta, double clip) {
    int64_t b, c, start, len;
    const int t = clip_block(a, &b, &c, &start, &len);
    double p = 1.0, q = -eta; /* dst = p a + q g */
    if (!bwd) {
        const double nb = clip > 0 ? sqrt(clip_total(part, a.P, b)) : 0.0;
        if (clip > 0 && nb >= clip) q = -eta * (clip / nb);
        if (t == a.norm_t && c == 0 && threadIdx.x == 0) norm[b] = nb;
    } else {
        const double nb = clip > 0 ? norm[b] : 0.0;
        const bool binds = clip > 0 && nb >= clip; /* one answer per block: clip_total's barriers are safe */
        const double r = binds ? clip_total(part, a.P, b) : 0.0;
        p = binds ? -eta * (clip / nb) : -eta;
        q = binds ? eta * clip * r / (nb * nb * nb) : 0.0;
    }
    const int64_t off = b * a.per[t] + start;
    T *d = (T *)a.dst[t] + off;
    const T *x = a.a[t] ? (const T *)a.a[t] + off : nullptr, *g = (const T *)a.g[t] + off;
    for (int64_t r = threadIdx.x; r < len; r += blockDim.x) {
        const double gv = ld(g[r]);
        d[r] = st<T>(x ? p * (double)ld(x[r]) + q * gv : q * gv);
    }
}

}  // namespace mt

#endif
