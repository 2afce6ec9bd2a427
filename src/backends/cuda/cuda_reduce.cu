/* ttt CUDA backend (reductions):
 * see cuda_internal.h for the instance (CuDev) the entries take and the
 * helpers the files share. */
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

/* one thread per output, walking the reduced index space */
struct ReduceGeom {
    int nk, nr;
    int64_t kshape[MAXD], kstride[MAXD], rshape[MAXD], rstride[MAXD];
};

template <typename T>
__global__ void k_reduce_general(ReduceGeom g, int64_t nout, int64_t nred, int is_max, T *y, const T *x) {
    GRID_LOOP(o, nout) {
        int64_t base = 0, rem = o;
        for (int i = g.nk - 1; i >= 0; i--) {
            base += (rem % g.kshape[i]) * g.kstride[i];
            rem /= g.kshape[i];
        }
        double acc = is_max ? -INFINITY : 0.0;
        for (int64_t j = 0; j < nred; j++) {
            int64_t off = base, r2 = j;
            for (int i = g.nr - 1; i >= 0; i--) {
                off += (r2 % g.rshape[i]) * g.rstride[i];
                r2 /= g.rshape[i];
            }
            double v = ld(x[off]);
            acc = is_max ? fmax(acc, v) : acc + v;
        }
        y[o] = st<T>(acc);
    }
}

/* One block per output, its threads striding over the reduced elements: the
 * thread-per-output kernel above runs a long reduction (e.g. sum_to of
 * [B, H, n, D] to [1, H, 1, D]) on a few warps, one element at a time. */
template <typename T>
__global__ void k_reduce_general_block(ReduceGeom g, int64_t nred, int is_max, T *y, const T *x) {
    int64_t base = 0, rem = blockIdx.x;
    for (int i = g.nk - 1; i >= 0; i--) {
        base += (rem % g.kshape[i]) * g.kstride[i];
        rem /= g.kshape[i];
    }
    double acc = is_max ? -INFINITY : 0.0;
    for (int64_t j = threadIdx.x; j < nred; j += blockDim.x) {
        int64_t off = base, r2 = j;
        for (int i = g.nr - 1; i >= 0; i--) {
            off += (r2 % g.rshape[i]) * g.rstride[i];
            r2 /= g.rshape[i];
        }
        double v = ld(x[off]);
        acc = is_max ? fmax(acc, v) : acc + v;
    }
    acc = block_reduce<double>(acc, is_max);
    if (threadIdx.x == 0) y[blockIdx.x] = st<T>(acc);
}

/* [O, R, I] reductions (the reduced axes form one block, which covers the
 * reductions autodiff makes: row sums, column sums for bias gradients, full
 * sums). Two passes keep every SM busy and the result deterministic: pass 1
 * writes per-chunk partials (in double) to a scratch buffer, pass 2 reduces
 * the chunks. */

/* the kernels (rows, columns, few rows) and the chunking: reduce_kernels.cuh */

template <typename TI, typename TO>
static void launch_ori(CuDev *D, int64_t O, int64_t R, int64_t I, int64_t chunks, int is_max, TO *out, const TI *x) {
    int64_t per = (R + chunks - 1) / chunks;
    if (I == 1) k_red_rows<TI, TO><<<(unsigned)(O * chunks), THREADS, 0, D->stream>>>(R, chunks, per, is_max, out, x);
    else if (use_cols_few(R, chunks))
        k_red_cols_few<TI, TO><<<(unsigned)(O * ((I + THREADS - 1) / THREADS)), THREADS, 0, D->stream>>>(O, R, I, is_max, out, x);
    else k_red_cols<TI, TO><<<(unsigned)(O * chunks * ((I + 31) / 32)), THREADS, 0, D->stream>>>(O, R, I, chunks, per, is_max, out, x);
}

template <typename T>
static int reduce_ori(CuDev *D, int64_t O, int64_t R, int64_t I, int is_max, T *dst, const T *src) {
    const int64_t tiles = I == 1 ? 1 : (I + 31) / 32, chunks = reduce_chunks(O, R, tiles);
    if (O * chunks * tiles > 2147483647LL) {
        ttt_backend_error("reduce: %lld x %lld x %lld is too large for one launch", (long long)O, (long long)R, (long long)I);
        return TTT_ERR;
    }
    if (chunks == 1) {
        launch_ori<T, T>(D, O, R, I, 1, is_max, dst, src);
        return TTT_OK;
    }
    if (scratch_reserve(D, &D->reduce_scratch, sizeof(double) * (size_t)(O * chunks * I), "reduce")) return TTT_ERR;
    double *part = (double *)D->reduce_scratch.p;
    launch_ori<T, double>(D, O, R, I, chunks, is_max, part, src);
    launch_ori<double, T>(D, O, chunks, I, 1, is_max, dst, part);
    return TTT_OK;
}

int ttt__cu_reduce(ttt_backend_state *self, ttt_reduce_op op, ttt_tensor *dst, const ttt_tensor *src) {
    ENTER(D, self);
    if (float_only("reduce", src->dtype)) return TTT_ERR;
    ReduceGeom g;
    memset(&g, 0, sizeof g);
    /* O = kept axes before the reduced block, R = the block, I = kept after */
    int64_t O = 1, R = 1, I = 1;
    int phase = 0, one_block = 1; /* 0: before, 1: in the reduced block, 2: after */
    for (int d = 0; d < src->ndim; d++) {
        if (src->shape[d] == 1) continue;
        int red = dst->shape[d] == 1;
        if (red) {
            g.rshape[g.nr] = src->shape[d];
            g.rstride[g.nr++] = src->stride[d];
            if (phase == 2) one_block = 0;
            phase = 1;
            R *= src->shape[d];
        } else {
            g.kshape[g.nk] = src->shape[d];
            g.kstride[g.nk++] = src->stride[d];
            if (phase == 1) phase = 2;
            if (phase == 0) O *= src->shape[d];
            else I *= src->shape[d];
        }
    }
    int is_max = op == TTT_R_MAX;
    int rc = TTT_OK;
    if (one_block) {
        FLOAT_DISPATCH(src->dtype, T, rc = reduce_ori<T>(D, O, R, I, is_max, (T *)dst->data, (const T *)src->data))
    } else {
        int64_t nout = O * I; /* every kept axis is counted in O or I */
        const bool per_block = R >= 1024 && nout <= 2147483647LL;
        FLOAT_DISPATCH(src->dtype, T, {
            if (per_block) k_reduce_general_block<T><<<(unsigned)nout, THREADS, 0, D->stream>>>(g, R, is_max, (T *)dst->data, (const T *)src->data);
            else k_reduce_general<T><<<blocks_for(nout), THREADS, 0, D->stream>>>(g, nout, R, is_max, (T *)dst->data, (const T *)src->data);
        })
    }
    if (rc != TTT_OK) return rc;
    LAUNCHED("reduce");
    return TTT_OK;
}
