/* The configurations of the bf16 attention kernels (src/backends/cuda/attention_bf16.cuh) that
 * the emulator test checks and the GPU harness checks and times, as X-macro lists:
 *   forward   X(D, warps, row groups of 16 per warp, key tile, min blocks per SM, options)
 *   dK / dV   X(D, warps, key groups of 16 per warp, query tile, min blocks per SM, hold K/V fragments)
 *   dQ        X(D, warps, query groups of 16 per warp, key tile, min blocks per SM, hold Q/dO fragments)
 *   bwd1      X(D, warps, key groups of 16 per warp, query tile, min blocks per SM, options)
 * The forward's options are bits: 1 Q reloaded from shared memory at each k-step (attnbf::FWD_RELOAD_Q), 2 V
 * waited for only before P V (FWD_V_LATE); 0 holds Q in registers. The ones with 4 warps x 2 row groups are
 * FlashAttention-2's shapes (d 64: 128 queries x 128 keys; d 128: 128 x 64).
 * The launchers' own choice (attnbf::Cfg in the header) must be among them. */
#ifndef TTT_DEV_CUDA_ATTENTION_BF16_VARIANTS_H
#define TTT_DEV_CUDA_ATTENTION_BF16_VARIANTS_H

#define ATTNBF_FWD_VARIANTS(X)                                                                         \
    X(64, 4, 1, 64, 4, 0) X(64, 8, 1, 64, 2, 0) X(64, 4, 1, 128, 3, 0) X(64, 8, 1, 128, 1, 0)            \
    X(64, 4, 2, 64, 2, 0) X(128, 4, 1, 64, 3, 0) X(128, 8, 1, 64, 1, 0) X(128, 4, 1, 128, 2, 0)          \
    X(128, 8, 1, 128, 1, 0) X(64, 4, 2, 128, 1, 1) X(64, 4, 2, 128, 2, 1) X(64, 4, 2, 64, 2, 1)          \
    X(64, 8, 2, 64, 1, 1) X(64, 4, 2, 128, 1, 3) X(64, 8, 1, 64, 2, 2) X(128, 4, 2, 64, 1, 1)            \
    X(128, 4, 2, 64, 2, 1) X(128, 4, 2, 64, 2, 3) X(128, 8, 1, 64, 2, 0) X(128, 8, 1, 64, 2, 1)          \
    X(128, 8, 1, 128, 1, 2)
#define ATTNBF_DKDV_VARIANTS(X)                                                                        \
    X(64, 4, 1, 32, 2, 1) X(64, 4, 1, 32, 3, 0) X(64, 4, 1, 64, 2, 1) X(64, 8, 1, 32, 1, 1)              \
    X(64, 8, 1, 32, 2, 0) X(64, 4, 2, 16, 2, 0) X(64, 4, 2, 32, 2, 0) X(128, 4, 1, 32, 2, 0)             \
    X(128, 4, 1, 64, 2, 0) X(128, 8, 1, 32, 1, 0)
#define ATTNBF_DQ_VARIANTS(X)                                                                          \
    X(64, 4, 1, 64, 3, 1) X(64, 8, 1, 64, 1, 1) X(64, 8, 1, 64, 2, 0) X(64, 4, 2, 32, 2, 0)              \
    X(128, 4, 1, 64, 3, 0) X(128, 8, 1, 64, 1, 0) X(128, 4, 2, 32, 2, 0)

/* The one-kernel backward (attnbf::bwd1: dK/dV's kernel that also adds dQ in a fixed order), the same fields as
 * dK / dV but the last, option bits: 1 K/V fragments held (attnbf::BWD1_HOLD), 2 the running sums fetched at the
 * step's start (BWD1_PREFETCH), 4 no __threadfence before handing the turn on (BWD1_NO_FENCE); attnbf::Cfg::Bwd1
 * (the launcher's, TTT_ATTN_BWD1=1) must be among them. */
#define ATTNBF_BWD1_VARIANTS(X)                                                                        \
    X(64, 4, 2, 32, 2, 0) X(64, 4, 1, 64, 2, 1) X(64, 4, 1, 32, 3, 0) X(64, 8, 1, 32, 1, 1)              \
    X(64, 4, 2, 16, 2, 0) X(128, 4, 1, 64, 2, 0) X(128, 4, 1, 32, 2, 0) X(128, 8, 1, 32, 1, 0)           \
    X(64, 4, 2, 32, 2, 2) X(64, 4, 2, 32, 2, 4) X(64, 4, 2, 32, 2, 6) X(128, 4, 1, 32, 2, 2)             \
    X(128, 4, 1, 32, 2, 6) X(64, 4, 1, 32, 3, 6) X(64, 4, 2, 16, 2, 6) X(64, 8, 1, 32, 1, 7)

/* The last field's mark in the configurations' labels: h (fragments held) for the backward, and for bwd1 also p
 * (sums prefetched) and n (no fence); r (Q reloaded) and v (V waited for late) for the forward. */
inline const char *attnbf_opt_mark(bool fwd, int opt) {
    static const char *const marks[4] = {"", "r", "v", "rv"};
    static const char *const bmarks[8] = {"", "h", "p", "hp", "n", "hn", "pn", "hpn"};
    return fwd ? marks[opt & 3] : bmarks[opt & 7];
}

#endif
