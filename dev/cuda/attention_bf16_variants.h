/* The configurations of the bf16 attention kernels (src/backends/cuda/attention_bf16.cuh) that
 * the emulator test checks and the GPU harness checks and times, as X-macro lists:
 *   forward   X(D, warps, row groups of 16 per warp, key tile, min blocks per SM, 0)
 *   dK / dV   X(D, warps, key groups of 16 per warp, query tile, min blocks per SM, hold K/V fragments)
 *   dQ        X(D, warps, query groups of 16 per warp, key tile, min blocks per SM, hold Q/dO fragments)
 * The launchers' own choice (attnbf::Cfg in the header) must be among them. */
#ifndef TTT_DEV_CUDA_ATTENTION_BF16_VARIANTS_H
#define TTT_DEV_CUDA_ATTENTION_BF16_VARIANTS_H

#define ATTNBF_FWD_VARIANTS(X)                                                                         \
    X(64, 4, 1, 64, 4, 0) X(64, 8, 1, 64, 2, 0) X(64, 4, 1, 128, 3, 0) X(64, 8, 1, 128, 1, 0)            \
    X(64, 4, 2, 64, 2, 0) X(128, 4, 1, 64, 3, 0) X(128, 8, 1, 64, 1, 0) X(128, 4, 1, 128, 2, 0)          \
    X(128, 8, 1, 128, 1, 0)
#define ATTNBF_DKDV_VARIANTS(X)                                                                        \
    X(64, 4, 1, 32, 2, 1) X(64, 4, 1, 32, 3, 0) X(64, 4, 1, 64, 2, 1) X(64, 8, 1, 32, 1, 1)              \
    X(64, 8, 1, 32, 2, 0) X(64, 4, 2, 16, 2, 0) X(64, 4, 2, 32, 2, 0) X(128, 4, 1, 32, 2, 0)             \
    X(128, 4, 1, 64, 2, 0) X(128, 8, 1, 32, 1, 0)
#define ATTNBF_DQ_VARIANTS(X)                                                                          \
    X(64, 4, 1, 64, 3, 1) X(64, 8, 1, 64, 1, 1) X(64, 8, 1, 64, 2, 0) X(64, 4, 2, 32, 2, 0)              \
    X(128, 4, 1, 64, 3, 0) X(128, 8, 1, 64, 1, 0) X(128, 4, 2, 32, 2, 0)

#endif
