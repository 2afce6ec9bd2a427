/* Sum and max over any set of axes (dst keeps them with size 1). Sums
 * accumulate in double. Fast paths: trailing axes (row reductions) and
 * leading axes (column reductions); a general strided walk otherwise. */
#include <math.h>
#include <stdlib.h>

#include "cpu_internal.h"


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
                    if (is_max)
                        for (int64_t j = 0; j < nred; j++) acc = r[j] > acc ? r[j] : acc;
                    else
                        for (int64_t j = 0; j < nred; j++) acc += r[j];
                } else {
                    const double *r = (const double *)x + o * nred;
                    if (is_max)
                        for (int64_t j = 0; j < nred; j++) acc = r[j] > acc ? r[j] : acc;
                    else
                        for (int64_t j = 0; j < nred; j++) acc += r[j];
                }
                st(y, f32, o, acc);
            }
);
        return TTT_OK;
    }
    if (last_red < first_kept && nr > 0 && nk > 0 && kstride[nk - 1] == 1 && rstride[nr - 1] == nout) {
        /* leading reduction: sum rows of an [nred, nout] matrix, parallel over columns */
        int64_t nchunk = (nout + 255) / 256;
CPU_PARALLEL(self, nout * nred,
    _Pragma("omp for schedule(static)")
            for (int64_t c = 0; c < nchunk; c++) {
                int64_t lo = c * 256, hi = lo + 256 < nout ? lo + 256 : nout;
                double acc[256];
                for (int64_t j = lo; j < hi; j++) acc[j - lo] = is_max ? -INFINITY : 0.0;
                for (int64_t r = 0; r < nred; r++)
                    for (int64_t j = lo; j < hi; j++) {
                        double v = ld(x, f32, r * nout + j);
                        acc[j - lo] = is_max ? (v > acc[j - lo] ? v : acc[j - lo]) : acc[j - lo] + v;
                    }
                for (int64_t j = lo; j < hi; j++) st(y, f32, j, acc[j - lo]);
            }
);
        return TTT_OK;
    }
    /* general: per output, walk the reduced index space */
CPU_PARALLEL(self, nout * nred,
    _Pragma("omp for schedule(static)")
        for (int64_t o = 0; o < nout; o++) {
            int64_t base = 0, rem = o;
            for (int i = nk - 1; i >= 0; i--) {
                base += (rem % kshape[i]) * kstride[i];
                rem /= kshape[i];
            }
            double acc = is_max ? -INFINITY : 0.0;
            for (int64_t j = 0; j < nred; j++) {
                int64_t off = base, r2 = j;
                for (int i = nr - 1; i >= 0; i--) {
                    off += (r2 % rshape[i]) * rstride[i];
                    r2 /= rshape[i];
                }
                double v = ld(x, f32, off);
                acc = is_max ? (v > acc ? v : acc) : acc + v;
            }
            st(y, f32, o, acc);
        }
);
    return TTT_OK;
}
