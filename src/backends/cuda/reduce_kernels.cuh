/* The deterministic reductions' device code that several files share: a
 * block's sum or max, the chunking of an [O, R, I] reduction and its rows
 * (I == 1) and columns kernels. cuda_reduce.cu runs them for ttt_sum / ttt_max; the
 * multi-tensor sum of squares (multi_tensor.cuh) reproduces their order, so
 * gradient clipping's fused norm has the composed ops' bits. The columns kernels (I > 1) are here so that
 * dev/cuda/reduce_emu_test.cpp can check them against each other. Device code only,
 * so dev/cuda/emu.h can run it on the host: the includer provides THREADS,
 * ld() and st<T>() (cuda_internal.h, or the emulator test). */
#ifndef TTT_REDUCE_KERNELS_CUH
#define TTT_REDUCE_KERNELS_CUH

#include <stdint.h>

/* A block's sum (or max) of v, on every thread (blockDim.x a multiple of 32, at most THREADS). */
template <typename T>
__device__ __forceinline__ T block_reduce(T v, int is_max) {
    __shared__ T part[THREADS / 32];
    for (int o = 16; o > 0; o >>= 1) {
        T w = __shfl_down_sync(0xffffffffu, v, o);
        v = is_max ? (w > v ? w : v) : v + w;
    }
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    __syncthreads(); /* part[] may still be read by a previous call */
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < (int)(blockDim.x / 32) ? part[lane] : (is_max ? T(-INFINITY) : T(0));
        for (int o = 16; o > 0; o >>= 1) {
            T w = __shfl_down_sync(0xffffffffu, v, o);
            v = is_max ? (w > v ? w : v) : v + w;
        }
        if (lane == 0) part[0] = v;
    }
    __syncthreads();
    return part[0];
}

/* The chunks an [O, R, I] reduction cuts its R rows into (tiles: column tiles of 32, 1 when I == 1): enough
 * blocks for every SM of an H100 (a fixed number, so the result does not depend on the GPU), at least 256 rows
 * per chunk, at most 1024 chunks. Chunk c holds rows [c per, (c + 1) per), per = ceil(R / chunks). */
static inline int64_t reduce_chunks(int64_t O, int64_t R, int64_t tiles) {
    const int64_t target = 4 * 132;
    int64_t chunks = (target + O * tiles - 1) / (O * tiles);
    const int64_t max_chunks = (R + 255) / 256; /* at least 256 rows per chunk */
    if (chunks > max_chunks) chunks = max_chunks;
    if (chunks > 1024) chunks = 1024;
    if (chunks < 1) chunks = 1;
    return chunks;
}

/* rows (I == 1): item = (o, chunk), the block reduces one contiguous run */
template <typename TI, typename TO>
__global__ void k_red_rows(int64_t R, int64_t chunks, int64_t rows_per_chunk, int is_max, TO *out, const TI *x) {
    int64_t c = blockIdx.x % chunks, o = blockIdx.x / chunks;
    int64_t r0 = c * rows_per_chunk, r1 = r0 + rows_per_chunk < R ? r0 + rows_per_chunk : R;
    double acc = is_max ? -INFINITY : 0.0;
    for (int64_t r = r0 + threadIdx.x; r < r1; r += blockDim.x) {
        double v = ld(x[o * R + r]);
        acc = is_max ? fmax(acc, v) : acc + v;
    }
    acc = block_reduce<double>(acc, is_max);
    if (threadIdx.x == 0) out[o * chunks + c] = st<TO>(acc);
}

/* columns: block = 32 columns x 8 row lanes; item = (o, chunk, column tile) */
template <typename TI, typename TO>
__global__ void k_red_cols(int64_t O, int64_t R, int64_t I, int64_t chunks, int64_t rows_per_chunk, int is_max,
                           TO *out, const TI *x) {
    int64_t tiles = (I + 31) / 32, item = blockIdx.x;
    int64_t tile = item % tiles, c = (item / tiles) % chunks, o = item / (tiles * chunks);
    int tx = threadIdx.x % 32, ty = threadIdx.x / 32;
    int64_t i = tile * 32 + tx, r0 = c * rows_per_chunk, r1 = r0 + rows_per_chunk < R ? r0 + rows_per_chunk : R;
    double acc = is_max ? -INFINITY : 0.0;
    if (i < I)
        for (int64_t r = r0 + ty; r < r1; r += 8) {
            double v = ld(x[(o * R + r) * I + i]);
            acc = is_max ? fmax(acc, v) : acc + v;
        }
    __shared__ double part[8][33];
    part[ty][tx] = acc;
    __syncthreads();
    if (ty == 0 && i < I) {
        for (int k = 1; k < 8; k++) acc = is_max ? fmax(acc, part[k][tx]) : acc + part[k][tx];
        out[(o * chunks + c) * I + i] = st<TO>(acc);
    }
}

/* few rows (R <= 8, e.g. dX summed over 2 heads, or pass 2 over a few chunks): one column per thread, its rows in
 * order. The 8-lane kernel above would leave 8 - R of its row lanes idle; the sums are the same bits, since there
 * each lane holds one row and the lanes are added in row order. */
template <typename TI, typename TO>
__global__ void k_red_cols_few(int64_t O, int64_t R, int64_t I, int is_max, TO *out, const TI *x) {
    const int64_t tiles = (I + THREADS - 1) / THREADS, o = blockIdx.x / tiles, i = (blockIdx.x % tiles) * THREADS + threadIdx.x;
    if (i >= I) return;
    double acc = is_max ? -INFINITY : 0.0;
    for (int64_t r = 0; r < R; r++) {
        double v = ld(x[(o * R + r) * I + i]);
        acc = is_max ? fmax(acc, v) : acc + v;
    }
    out[o * I + i] = st<TO>(acc);
}
/* the launcher's choice between the two column kernels */
static inline int use_cols_few(int64_t R, int64_t chunks) { return chunks == 1 && R <= 8; }

#endif
