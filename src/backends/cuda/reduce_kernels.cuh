/* The deterministic reductions' device code that several files share: a
 * block's sum or max, the chunking of an [O, R, I] reduction and its rows
 * kernel (I == 1). cuda_reduce.cu runs them for ttt_sum / ttt_max; the
 * multi-tensor sum of squares (multi_tensor.cuh) reproduces their order, so
 * gradient clipping's fused norm has the composed ops' bits. Device code only,
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

#endif
