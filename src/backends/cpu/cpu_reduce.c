/* Sum and max over any set of axes (dst keeps them with size 1). Sums
 * accumulate in double. Fast paths: trailing axes (row reductions), and any
 * reduction that keeps a contiguous innermost axis (column blocks); a general
 * strided walk otherwise. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"


/* Sums of a contiguous run in 8 independent double lanes (vectorizes; the order is fixed, so the
 * result is deterministic), then the lanes pairwise. */
#define SUM_LANES(NAME, T)                                                                  \
    static double NAME(const T *r, int64_t n) {                                             \
        double l[8] = {0};                                                                  \
        int64_t j = 0;                                                                      \
        for (; j + 8 <= n; j += 8)                                                          \
            for (int e = 0; e < 8; e++) l[e] += (double)r[j + e];                           \
        for (; j < n; j++) l[j % 8] += (double)r[j];                                        \
        return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));          \
    }
SUM_LANES(sum_f32_lanes, float)
SUM_LANES(sum_f64_lanes, double)

/* The next index of the reduced axes, odometer-style (the last axis turns fastest), and the
 * element offset that goes with it. */
static inline void next_reduced(int nr, const int64_t *shape, const int64_t *stride, int64_t *idx, int64_t *off) {
    for (int i = nr - 1; i >= 0; i--) {
        *off += stride[i];
        if (++idx[i] < shape[i]) return;
        *off -= stride[i] * shape[i];
        idx[i] = 0;
    }
}

int cpu_reduce(ttt_backend_state *self, ttt_reduce_op op, ttt_tensor *dst, const ttt_tensor *src) {
    if (src->dtype != TTT_F32 && src->dtype != TTT_F64) return cpu_unsupported("reduce", src->dtype);
    const int f32 = src->dtype == TTT_F32, is_max = op == TTT_R_MAX;
    /* split src axes into kept (k) and reduced (r), skipping size-1 axes */
    int nk = 0, nr = 0, last_kept = -1, first_red = TTT_MAX_DIMS, first_kept = TTT_MAX_DIMS, last_red = -1;
    int64_t kshape[TTT_MAX_DIMS], kstride[TTT_MAX_DIMS], rshape[TTT_MAX_DIMS], rstride[TTT_MAX_DIMS];
    for (int d = 0; d < src->ndim; d++) {
        if (src->shape[d] == 1) continue;
        if (dst->shape[d] == 1) {
            rshape[nr] = src->shape[d];
            rstride[nr++] = src->stride[d];
            if (d < first_red) first_red = d;
            last_red = d;
        } else {
            kshape[nk] = src->shape[d];
            kstride[nk++] = src->stride[d];
            last_kept = d;
            if (d < first_kept) first_kept = d;
        }
    }
    int64_t nout = 1, nred = 1;
    for (int i = 0; i < nk; i++) nout *= kshape[i];
    for (int i = 0; i < nr; i++) nred *= rshape[i];
    const void *x = src->data;
    void *y = dst->data;

    if (last_kept < first_red) {
        /* trailing reduction: each output is a contiguous run of nred values */
CPU_PARALLEL(self, nout * nred,
    _Pragma("omp for schedule(static)")
            for (int64_t o = 0; o < nout; o++) {
                double acc = is_max ? -INFINITY : 0.0;
                if (f32) {
                    const float *r = (const float *)x + o * nred;
                    if (is_max) for (int64_t j = 0; j < nred; j++) acc = r[j] > acc ? r[j] : acc;
                    else acc = sum_f32_lanes(r, nred);
                } else {
                    const double *r = (const double *)x + o * nred;
                    if (is_max) for (int64_t j = 0; j < nred; j++) acc = r[j] > acc ? r[j] : acc;
                    else acc = sum_f64_lanes(r, nred);
                }
                st(y, f32, o, acc);
            }
);
        return TTT_OK;
    }
    if (nk > 0 && nr > 0 && kstride[nk - 1] == 1 && last_kept > last_red) {
        /* the innermost kept axis is contiguous and below every reduced one ([R, C] -> [1, C], or
         * [B, H, T, D] -> [1, H, 1, D]): add runs of up to 256 of its values into a block of
         * accumulators, stepping through the reduced axes with an odometer (no division per value).
         * Few blocks and many rows (a bias gradient, [3136, 64] -> [64]) would leave all but one thread
         * idle, so the rows are then cut into chunks whose partial sums are added in chunk order: the
         * cut depends on the shape alone, so the result does not depend on the thread count. */
        const int64_t inner = kshape[nk - 1], nouter = nout / inner, nblk = (inner + 255) / 256;
        int64_t nrc = nouter * nblk < 16 && nred >= 1024 ? nred / 512 : 1;
        if (nrc > 64) nrc = 64;
        const int64_t rch = (nred + nrc - 1) / nrc, nwork = nouter * nblk * nrc;
        double *part = nrc > 1 ? malloc(sizeof(double) * 256 * (size_t)nwork) : NULL;
        if (nrc > 1 && !part) {
            ttt_backend_error("reduce: out of host memory for %lld partial sums", (long long)(256 * nwork));
            return TTT_ERR;
        }
CPU_PARALLEL(self, nout * nred,
    _Pragma("omp for schedule(static)")
            for (int64_t w = 0; w < nwork; w++) {
                const int64_t ob = w / nrc, rc = w % nrc, o = ob / nblk, lo = (ob % nblk) * 256;
                const int64_t len = inner - lo < 256 ? inner - lo : 256, j0 = rc * rch;
                const int64_t j1 = j0 + rch < nred ? j0 + rch : nred;
                int64_t off = lo, rem = o, idx[TTT_MAX_DIMS] = {0};
                for (int i = nk - 2; i >= 0; i--) {
                    off += (rem % kshape[i]) * kstride[i];
                    rem /= kshape[i];
                }
                rem = j0; /* the chunk's first reduced index */
                for (int i = nr - 1; i >= 0; i--) {
                    idx[i] = rem % rshape[i];
                    off += idx[i] * rstride[i];
                    rem /= rshape[i];
                }
                double acc[256];
                for (int64_t j = 0; j < len; j++) acc[j] = is_max ? -INFINITY : 0.0;
                for (int64_t r = j0; r < j1; r++) {
                    if (f32) {
                        const float *p = (const float *)x + off;
                        if (is_max) for (int64_t j = 0; j < len; j++) acc[j] = p[j] > acc[j] ? p[j] : acc[j];
                        else for (int64_t j = 0; j < len; j++) acc[j] += (double)p[j];
                    } else {
                        const double *p = (const double *)x + off;
                        if (is_max) for (int64_t j = 0; j < len; j++) acc[j] = p[j] > acc[j] ? p[j] : acc[j];
                        else for (int64_t j = 0; j < len; j++) acc[j] += p[j];
                    }
                    next_reduced(nr, rshape, rstride, idx, &off);
                }
                if (part) memcpy(part + 256 * w, acc, sizeof(double) * (size_t)len);
                else for (int64_t j = 0; j < len; j++) st(y, f32, o * inner + lo + j, acc[j]);
            }
);
        if (part) { /* the chunks' partial sums, in chunk order */
            for (int64_t ob = 0; ob < nouter * nblk; ob++) {
                const int64_t o = ob / nblk, lo = (ob % nblk) * 256, len = inner - lo < 256 ? inner - lo : 256;
                const double *first = part + 256 * (ob * nrc);
                for (int64_t j = 0; j < len; j++) {
                    double a = first[j];
                    for (int64_t rc = 1; rc < nrc; rc++) {
                        const double v = part[256 * (ob * nrc + rc) + j];
                        a = is_max ? (v > a ? v : a) : a + v;
                    }
                    st(y, f32, o * inner + lo + j, a);
                }
            }
            free(part);
        }
        return TTT_OK;
    }
    /* general (a reduced axis inside the kept ones, or strided): per output, step through the reduced
     * index space with an odometer */
CPU_PARALLEL(self, nout * nred,
    _Pragma("omp for schedule(static)")
        for (int64_t o = 0; o < nout; o++) {
            int64_t off = 0, rem = o, idx[TTT_MAX_DIMS] = {0};
            for (int i = nk - 1; i >= 0; i--) {
                off += (rem % kshape[i]) * kstride[i];
                rem /= kshape[i];
            }
            double acc = is_max ? -INFINITY : 0.0;
            for (int64_t j = 0; j < nred; j++) {
                double v = ld(x, f32, off);
                acc = is_max ? (v > acc ? v : acc) : acc + v;
                next_reduced(nr, rshape, rstride, idx, &off);
            }
            st(y, f32, o, acc);
        }
);
    return TTT_OK;
}
