/* The MTTT-MLP inner step's CUDA kernels (backend.h: mttt_mlp_step, mttt_mlp_step_bwd, mttt_mlp_apply,
 * mttt_mlp_apply_bwd), included by mttt_step.cu and by the host emulator's test
 * (dev/cuda/mttt_step_emu_test.cpp). Templated on the real type R (float and double; bf16 is declined).
 * The math, forward and the second-order backward, is derived in src/composed/mttt_step.c; the steps and
 * their names follow the CPU kernels (src/backends/cpu/cpu_mttt_impl.h: step_fwd, step_bwd, apply_fwd,
 * apply_bwd).
 *
 * Layout. A block of 256 threads takes one chunk of one (batch, head) pair's m tokens: grid (chunks, B H).
 * The pair's weights are in shared memory (mode 1; rows padded by one element so that reading a matrix
 * along either axis hits 32 different banks), or read from global memory where they do not fit (mode 0).
 * The tokens stream through in tiles of tm rows; every intermediate of a tile (k rows, gelu(z) and its
 * derivatives, y, p, the tangents and adjoints) stays in shared memory. Sums over tokens (the weights'
 * gradients, the LN affine's, the loss) are kept per block, each element owned by one thread and summed in
 * token order, then written as the chunk's partial sums; a second small kernel (reduce) adds the chunks of
 * each pair in chunk order and applies W' = W - eta g (or U + g in the backward). No atomics: the same
 * bits on every run, given the same chunking (the launcher picks it from the shape and the SM count).
 * Chunks exist because the ViT's B H pairs (128) barely fill an H100's 132 SMs, one block each.
 *
 * Products are block-wide register-tiled FMA loops (mm; mm_w and mm_k for the wide, short-K and the narrow,
 * long-K ones), f32 or f64 throughout (the LN rows' statistics in double, as the CPU kernels). For f32 where
 * it is asked for (contexts that allow f32 on the tensor cores, ttt_ctx_config.tf32; TTT_MTTT_MMA=0 never, =2
 * everywhere: mttt_step.cu's mma_on), the
 * kernels' TC instances take every product on the tensor cores instead: mm_tc (and mm_tc_ks for step_bwd's
 * long-K ones), f32 operands split into bf16 hi + lo, three mma.sync m16n8k16 a 16-deep step (split_bf16.cuh),
 * ~2^-16 relative where the FMA loops give 2^-24; same owners and order per output, so still deterministic;
 * rows padded for its reads (pad). TC is an int: 0 the FMA loops, 1 split-bf16, 2 the same tiles on TF32 mma
 * (m16n8k8 .tf32: one product where split-bf16 takes three and no splitting, ~2^-11 relative a product, what
 * cuBLAS's TF32 mode gives; mttt_step.cu runs it with TTT_MTTT_MMA=3 in contexts that allow TF32).
 * The products carry the FLOPs. Per 16-row tile at the ViT's head (d 32,
 * F 128, D 64; cotangents U1, U2 given), 2 M N K in MFLOP, M x N x K:
 *   step_bwd   z1, z1t = k W1, k U1; ab = yb W2^T + ytb U2^T; atb = ytb W2^T       5 x 16x128x32   0.131 each
 *              y, yt, yt += (a W2, at W2, a U2); dk, dk += (z1b W1^T, z1tb U1^T)  5 x 16x32x128   0.131
 *              dW2 += a^T yb, at^T ytb                                            2 x 128x32x16   0.131
 *              dW1 += k^T z1b                                                     1 x 32x128x16   0.131
 *              p, pt = y gh^T, yt gh^T                                            2 x 16x64x32    0.066
 *              yb, ytb = pb gh, ptb gh                                            2 x 16x32x64    0.066
 *              dgh += pb^T y, ptb^T yt                                            2 x 64x32x16    0.066
 *              in all 2.10 MFLOP a tile (13.2 GFLOP a call at m 784, 128 pairs: 2.76 ms on the FMA loops on
 *              an H100, 4.8 TFLOP/s)
 *   step_fwd   z1, dz1 (16x128x32), y (16x32x128), gW2 (128x32x16), gW1 (32x128x16): 5 x 0.131;
 *              p (16x64x32), dy (16x32x64): 2 x 0.066; in all 0.79 (4.9 GFLOP a call, 0.55 ms)
 *   apply_fwd  z (16x128x32), out (16x32x128): 0.26;  apply_bwd  z, dz, dW2, dq, dW1: 5 x 0.131 = 0.66
 * Shared memory at the ViT's head (f32, 16-row tiles): forward 105 KiB (two blocks an SM), backward 214 KiB
 * (one), read-out 43 / 90 KiB; in the tensor cores' layout 109, 222, 46 / 93 KiB (the same plans). */
#ifndef TTT_MTTT_STEP_CUH
#define TTT_MTTT_STEP_CUH

#include "split_bf16.cuh"

namespace mttt {

enum { THREADS = 256, WARPS = THREADS / 32, MAX_SEGS = 8 };

/* The forward step (and its loss-only form). part: per (pair, chunk) fwd_part_elems partial sums:
 * gW1 [d F], gb1 [F], gW2 [F d], gb2 [d], the loss sum (times 2 m). */
template <typename R> struct Step {
    R *part;
    const R *w1, *b1, *w2, *b2, *k, *xt, *gh, *lng, *lnb; /* lng NULL: no LN */
    int64_t ks[3], xs[3]; /* strides of k and xt in batch, head (0: xt shared by the heads), row */
    int H, m, d, F, D, wb[4]; /* wb: weight i per pair ([B, H, ..]) or per head */
    int mode, tm, cl, nch, loss_only;
    double eps;
};

/* The backward. part: per (pair, chunk) bwd_part_elems: dW1, db1, dW2, db2, dG [D d], dlng [D], dlnb [D]. */
template <typename R> struct StepBwd {
    R *part, *dk, *dx; /* dk [B, H, m, d], dx [B, H, m, D], dense */
    const R *u1, *v1, *u2, *v2, *dloss; /* the cotangents of W' (U1, u1, U2, u2; each NULL: zero), of the loss */
    const R *w1, *b1, *w2, *b2, *k, *xt, *gh, *lng, *lnb;
    int64_t ks[3], xs[3];
    int H, m, d, F, D, wb[4], mode, tm, cl, nch;
    double eta, eps;
};

/* The read-out out = gelu(q W1 + b1) W2 + b2 and its backward (dout, dq: [B, H, n, d] dense; part per (pair,
 * chunk): dW1, db1, dW2, db2). */
template <typename R> struct Apply {
    R *out, *dq, *part;
    const R *dout, *w1, *b1, *w2, *b2, *q;
    int64_t qs[3];
    int H, n, d, F, wb[4], mode, tm, cl, nch;
};

/* Adds the chunks' partial sums of each pair in chunk order: out[bh, e] = base[bh or h, e] + alpha sum_c
 * part[bh, c, off + e] per segment (out NULL: skipped; base NULL: zero). */
template <typename R> struct Seg {
    R *out;
    const R *base;
    int base_batched, size, off;
    R alpha;
};
template <typename R> struct Reduce {
    const R *part;
    Seg<R> seg[MAX_SEGS];
    int nseg, nch, pe, H;
};

/* ---- sizes (host and device) ---- */

inline __host__ __device__ int64_t fwd_part_elems(int d, int F) { return 2 * (int64_t)d * F + F + d + 1; }
inline __host__ __device__ int64_t bwd_part_elems(int d, int F, int D) {
    return 2 * (int64_t)d * F + F + d + (int64_t)D * d + 2 * (int64_t)D;
}
inline __host__ __device__ int64_t apply_part_elems(int d, int F) { return 2 * (int64_t)d * F + F + d; }

/* The row padding of the shared-memory matrices (row length n + pad(tc)) and of the [d, F] gradient sum (F +
 * pad_dw(tc)). The FMA tiles read rows along both axes, one element apart in banks: n + 1. mm_tc's lanes
 * read 8 rows by 4 pairs of k at a time, which n + 1 puts on 14 banks (up to 4 ways); rows 4 banks apart
 * (n + 4 for n a multiple of 32, as at the ViT's head) put k-along-rows reads on 32 banks and the others
 * and its epilogues on 16 (2 ways), where the dense [d, F] sum had all 8 rows of a tile on one bank. */
inline __host__ __device__ int pad(int tc) { return tc ? 4 : 1; }
inline __host__ __device__ int pad_dw(int tc) { return tc ? 4 : 0; }

/* Shared memory in bytes: WARPS doubles (the loss's per-warp sums), then elements of R. tc: mm_tc's layout. */
inline __host__ __device__ int64_t fwd_smem_bytes(int mode, int tm, int d, int F, int D, int es, int tc) {
    const int e = pad(tc);
    const int64_t w = mode ? (int64_t)d * (F + e) + (int64_t)F * (d + e) + (int64_t)D * (d + e) +
                                 (int64_t)d * (F + pad_dw(tc)) + (int64_t)F * (d + 8)
                           : 0;
    const int64_t v = 2 * (int64_t)F + 2 * (int64_t)d + 2 * (int64_t)D;
    const int64_t t = (int64_t)tm * (3 * (d + e) + 2 * (F + e) + (D + e));
    return WARPS * 8 + (w + v + t) * es;
}
inline __host__ __device__ int64_t bwd_smem_bytes(int mode, int tm, int d, int F, int D, int es, int tc) {
    const int e = pad(tc);
    const int64_t w = mode ? 2 * (int64_t)d * (F + e) + 2 * (int64_t)F * (d + e) + (int64_t)D * (d + e) +
                                 (int64_t)d * (F + pad_dw(tc)) + (int64_t)F * (d + 8) + (int64_t)D * (d + 8)
                           : 0;
    const int64_t v = 3 * (int64_t)F + 3 * (int64_t)d + 4 * (int64_t)D;
    const int64_t t = (int64_t)tm * ((d + e) + 6 * (F + e) + 4 * (d + e) + 8 * (D + e));
    return WARPS * 8 + (w + v + t) * es;
}
inline __host__ __device__ int64_t apply_smem_bytes(bool bwd, int mode, int tm, int d, int F, int es, int tc) {
    const int e = pad(tc);
    const int64_t w = mode ? (int64_t)d * (F + e) + (int64_t)F * (d + e) +
                                 (bwd ? (int64_t)d * (F + pad_dw(tc)) + (int64_t)F * (d + 8) : 0)
                           : 0;
    const int64_t v = bwd ? 2 * (int64_t)F + 2 * (int64_t)d : (int64_t)F + d;
    const int64_t t = (int64_t)tm * (bwd ? 2 * (d + e) + 2 * (F + e) : (d + e) + (F + e));
    return WARPS * 8 + (w + v + t) * es;
}

/* The launchers' plan for one call (host): where the weights live (mode 1: shared memory, 0: global), the
 * tile rows tm, and the chunks of the m tokens (cl tokens each, nch of them). plan_memory takes the highest
 * mode and then the largest tile (at most 16 rows: with the forward's 105 KiB at d 32, F 128, D 64, two
 * blocks fit an SM) whose shared memory, bytes_of(mode, tm), fits limit bytes; false: not even mode 0 with
 * one row fits (the launcher declines). plan_chunks then splits the tokens so that the grid's waves over
 * the GPU's cap resident blocks finish soonest: ceil(B H nch / cap) waves of a chunk's tokens plus two tiles'
 * worth for what a chunk costs besides (loading the weights, writing its partial sums), fewer chunks on a
 * tie. At the ViT's 128 pairs the forward (two blocks an SM) takes 2 chunks, one wave; the backward (one) 1. */
struct Plan {
    int mode, tm, cl, nch;
    int64_t bytes;
};
template <typename B> inline bool plan_memory(int64_t limit, B bytes_of, Plan *pl) {
    for (int mode = 1; mode >= 0; mode--)
        for (int tm = 16; tm >= 1; tm /= 2) {
            const int64_t bytes = bytes_of(mode, tm);
            if (bytes > limit) continue;
            *pl = Plan{mode, tm, 0, 0, bytes};
            return true;
        }
    return false;
}
inline void plan_chunks(int64_t m, int64_t BH, int64_t cap, Plan *pl) {
    const int64_t tiles = (m + pl->tm - 1) / pl->tm;
    if (cap < 1) cap = 1;
    int64_t best = -1, best_cost = 0;
    for (int64_t nch = 1; nch <= tiles && nch <= 64; nch++) {
        const int64_t cl = ((m + nch - 1) / nch + pl->tm - 1) / pl->tm * pl->tm;
        if ((m + cl - 1) / cl != nch) continue; /* the same chunks as fewer would give */
        const int64_t cost = (BH * nch + cap - 1) / cap * (cl + 2 * pl->tm);
        if (best < 0 || cost < best_cost) best = nch, best_cost = cost;
    }
    pl->nch = (int)best;
    pl->cl = (int)(((m + best - 1) / best + pl->tm - 1) / pl->tm * pl->tm);
}

/* ---- device helpers ---- */

__device__ __forceinline__ float exp_(float x) { return expf(x); }
__device__ __forceinline__ double exp_(double x) { return exp(x); }

/* tanh gelu as x s, s = (1 + tanh u) / 2 = 1 / (1 + e^{-2u}), u = c (x + k x^3) (cpu_mttt_impl.h: gelu_s, gelu_fwd);
 * g1 = gelu'(x); g2 (NULL: not wanted) = gelu''(x) */
template <typename R> __device__ __forceinline__ R gelu(R x, R *g1, R *g2) {
    const R c = (R)0.7978845608028654, k = (R)0.044715;
    const R s = (R)1 / ((R)1 + exp_((R)(-2 * 0.7978845608028654) * (x + k * x * x * x)));
    if (g1) {
        const R du = c * ((R)1 + (R)(3 * 0.044715) * x * x);
        *g1 = s + (R)2 * x * s * ((R)1 - s) * du;
        if (g2) {
            const R t = (R)2 * s - (R)1, ddu = (R)(6 * 0.7978845608028654 * 0.044715) * x;
            *g2 = (R)4 * s * ((R)1 - s) * (du + (R)0.5 * x * (ddu - (R)2 * t * du * du));
        }
    }
    return x * s;
}

__device__ __forceinline__ double warp_sum(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
/* two and three sums at once (the same bits as one at a time): their shuffles overlap instead of waiting in turn */
__device__ __forceinline__ void warp_sum2(double &a, double &b) {
    for (int o = 16; o > 0; o >>= 1) {
        const double x = __shfl_xor_sync(0xffffffffu, a, o), y = __shfl_xor_sync(0xffffffffu, b, o);
        a += x, b += y;
    }
}
__device__ __forceinline__ void warp_sum3(double &a, double &b, double &c) {
    for (int o = 16; o > 0; o >>= 1) {
        const double x = __shfl_xor_sync(0xffffffffu, a, o), y = __shfl_xor_sync(0xffffffffu, b, o);
        const double z = __shfl_xor_sync(0xffffffffu, c, o);
        a += x, b += y, c += z;
    }
}

/* C = A B, M x N, K deep, A(i, k) = a[i sai + k sak], B(k, j) = b[k sbk + j sbj]. This thread's RM x RN
 * outputs (rows ir + ii MR, columns jc + jj NC: a warp's lanes take neighbouring columns) go to epi(i, j,
 * acc). Each output is summed by one thread from k = 0 up, and a given (M, N, RM, RN) maps an output to the
 * same thread every time, so epilogues that add into a thread's own elements are deterministic. */
template <int RM, int RN, typename R, typename Epi>
__device__ __forceinline__ void mm(int M, int N, int K, const R *a, int sai, int sak, const R *b, int sbk, int sbj,
                                   Epi epi) {
    const int MR = (M + RM - 1) / RM, NC = (N + RN - 1) / RN;
    for (int u = threadIdx.x; u < MR * NC; u += THREADS) {
        const int ir = u / NC, jc = u % NC;
        const R *pa[RM], *pb[RN];
#pragma unroll
        for (int ii = 0; ii < RM; ii++) {
            const int i = ir + ii * MR;
            pa[ii] = a + (int64_t)(i < M ? i : M - 1) * sai;
        }
#pragma unroll
        for (int jj = 0; jj < RN; jj++) {
            const int j = jc + jj * NC;
            pb[jj] = b + (int64_t)(j < N ? j : N - 1) * sbj;
        }
        R acc[RM][RN];
#pragma unroll
        for (int ii = 0; ii < RM; ii++)
#pragma unroll
            for (int jj = 0; jj < RN; jj++) acc[ii][jj] = 0;
        for (int kk = 0; kk < K; kk++) {
            R x[RM], y[RN];
#pragma unroll
            for (int ii = 0; ii < RM; ii++) x[ii] = pa[ii][(int64_t)kk * sak];
#pragma unroll
            for (int jj = 0; jj < RN; jj++) y[jj] = pb[jj][(int64_t)kk * sbk];
#pragma unroll
            for (int ii = 0; ii < RM; ii++)
#pragma unroll
                for (int jj = 0; jj < RN; jj++) acc[ii][jj] += x[ii] * y[jj];
        }
#pragma unroll
        for (int ii = 0; ii < RM; ii++)
#pragma unroll
            for (int jj = 0; jj < RN; jj++) {
                const int i = ir + ii * MR, j = jc + jj * NC;
                if (i < M && j < N) epi(i, j, acc[ii][jj]);
            }
    }
}

/* The same product for few outputs and a long K (the [rows, d] ones: K = F or D), where mm would give each
 * thread one or two outputs and load more than it multiplies. A warp takes groups of four 4 x 4 tiles (rows
 * ir, ir + MR, .. for four neighbouring ir; columns jc, jc + NC, ..); lane = tile + 4 s splits K eight ways,
 * s taking k = 4 s .. 4 s + 3 of every 32, so that at each step the 32 lanes read 32 different banks of A
 * (rows one element apart) and broadcasts of B. The eight partial sums of an output are added by a fixed
 * butterfly over s, and lane s = 0 passes them to epi: deterministic, one thread per output. Every lane of
 * a warp runs the shuffles (groups are warp-uniform; lanes past the edge add nothing). */
template <typename R, typename Epi>
__device__ __forceinline__ void mm_k(int M, int N, int K, const R *a, int sai, int sak, const R *b, int sbk, int sbj,
                                     Epi epi) {
    const int MR = (M + 3) / 4, NC = (N + 3) / 4, RG = (MR + 3) / 4, lane = threadIdx.x & 31, tw = lane & 3, s = lane >> 2;
    for (int g = threadIdx.x >> 5; g < RG * NC; g += WARPS) {
        const int ir = (g / NC) * 4 + tw, jc = g % NC;
        const R *pa[4], *pb[4];
#pragma unroll
        for (int ii = 0; ii < 4; ii++) {
            const int i = ir + ii * MR;
            pa[ii] = a + (int64_t)(i < M ? i : M - 1) * sai;
        }
#pragma unroll
        for (int jj = 0; jj < 4; jj++) {
            const int j = jc + jj * NC;
            pb[jj] = b + (int64_t)(j < N ? j : N - 1) * sbj;
        }
        R acc[4][4];
#pragma unroll
        for (int ii = 0; ii < 4; ii++)
#pragma unroll
            for (int jj = 0; jj < 4; jj++) acc[ii][jj] = 0;
        for (int k0 = 4 * s; k0 < K; k0 += 32)
            for (int kk = k0; kk < k0 + 4 && kk < K; kk++) {
                R x[4], y[4];
#pragma unroll
                for (int ii = 0; ii < 4; ii++) x[ii] = pa[ii][(int64_t)kk * sak];
#pragma unroll
                for (int jj = 0; jj < 4; jj++) y[jj] = pb[jj][(int64_t)kk * sbk];
#pragma unroll
                for (int ii = 0; ii < 4; ii++)
#pragma unroll
                    for (int jj = 0; jj < 4; jj++) acc[ii][jj] += x[ii] * y[jj];
            }
#pragma unroll
        for (int ii = 0; ii < 4; ii++)
#pragma unroll
            for (int jj = 0; jj < 4; jj++) {
                R v = acc[ii][jj];
                for (int o = 4; o < 32; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
                const int i = ir + ii * MR, j = jc + jj * NC;
                if (s == 0 && ir < MR && i < M && j < N) epi(i, j, v);
            }
    }
}

/* The same product for a wide N and a short K (the [rows, F] ones, K = d): mm's 2 x 4 tiles load 6 values per
 * 8 FMAs, 4 x 4 would leave half the threads idle at 16 rows. Here a warp takes 16 neighbouring 4 x 4 tiles
 * (rows ir, ir + MR, ..; columns jc, jc + NC, ..) and splits K in two halves, lane = tile + 16 s: at each step
 * the lanes read 32 different banks of B (k + 16 s + jc apart, for rows padded to 1 mod 32) and two
 * addresses of A. The two halves are added by one shuffle and lane s = 0 passes the sum to epi. */
template <typename R, typename Epi>
__device__ __forceinline__ void mm_w(int M, int N, int K, const R *a, int sai, int sak, const R *b, int sbk, int sbj,
                                     Epi epi) {
    const int MR = (M + 3) / 4, NC = (N + 3) / 4, JG = (NC + 15) / 16, lane = threadIdx.x & 31, tw = lane & 15;
    const int s = lane >> 4, Kh = (K + 1) / 2, k_end = min(K, (s + 1) * Kh);
    for (int g = threadIdx.x >> 5; g < MR * JG; g += WARPS) {
        const int ir = g / JG, jc = (g % JG) * 16 + tw;
        const R *pa[4], *pb[4];
#pragma unroll
        for (int ii = 0; ii < 4; ii++) {
            const int i = ir + ii * MR;
            pa[ii] = a + (int64_t)(i < M ? i : M - 1) * sai;
        }
#pragma unroll
        for (int jj = 0; jj < 4; jj++) {
            const int j = jc + jj * NC;
            pb[jj] = b + (int64_t)(j < N ? j : N - 1) * sbj;
        }
        R acc[4][4];
#pragma unroll
        for (int ii = 0; ii < 4; ii++)
#pragma unroll
            for (int jj = 0; jj < 4; jj++) acc[ii][jj] = 0;
        for (int kk = s * Kh; kk < k_end; kk++) {
            R x[4], y[4];
#pragma unroll
            for (int ii = 0; ii < 4; ii++) x[ii] = pa[ii][(int64_t)kk * sak];
#pragma unroll
            for (int jj = 0; jj < 4; jj++) y[jj] = pb[jj][(int64_t)kk * sbk];
#pragma unroll
            for (int ii = 0; ii < 4; ii++)
#pragma unroll
                for (int jj = 0; jj < 4; jj++) acc[ii][jj] += x[ii] * y[jj];
        }
#pragma unroll
        for (int ii = 0; ii < 4; ii++)
#pragma unroll
            for (int jj = 0; jj < 4; jj++) {
                const R v = acc[ii][jj] + __shfl_xor_sync(0xffffffffu, acc[ii][jj], 16);
                const int i = ir + ii * MR, j = jc + jj * NC;
                if (s == 0 && jc < NC && i < M && j < N) epi(i, j, v);
            }
    }
}

/* The same product on the tensor cores, f32 only (split_bf16.cuh: each operand split into bf16 hi + lo, three
 * mma.sync m16n8k16 a 16-deep step, f32 accumulation, ~2^-16 relative). A warp takes tiles of 16 rows and
 * 8 NT columns of C: tile u (row block u / NB, column block u % NB) goes to warp (u + w0) % WARPS, and lane
 * 4 g + t holds its elements (g (+ 8), 8 nt + 2 t (+ 1)), so a given (M, N, NT, w0) maps an output to the same
 * thread every time, as mm does (calls that add into one accumulator must agree on all four); w0 lets the
 * warps a short product leaves idle take the next one. Each output is one thread's, summed over k in a fixed
 * order (with NT 1, the narrow long-K products, the 16-deep steps alternate between two accumulators added at
 * the end: two chains of mma instead of one). Any M, N, K: rows and columns past M, N read the last one's
 * values (finite; their outputs are dropped), and k past K reads nothing and counts as zero in both operands.
 * Operands element by element from their buffers (any strides), no copies. */
template <int NT, bool EDGE>
__device__ __forceinline__ void tc_step(float (&acc)[NT][4], int k0, int K, const float *a0, const float *a1, int sak,
                                        const float *const (&pb)[NT], int sbk, int t) {
    const int ka = k0 + 2 * t, kb = ka + 8;
    auto ld = [&](const float *x, int k, int s) { return !EDGE || k < K ? x[k * s] : 0.0f; };
    uint32_t ah[4], al[4];
    splitbf16::split2(ld(a0, ka, sak), ld(a0, ka + 1, sak), ah[0], al[0]);
    splitbf16::split2(ld(a1, ka, sak), ld(a1, ka + 1, sak), ah[1], al[1]);
    splitbf16::split2(ld(a0, kb, sak), ld(a0, kb + 1, sak), ah[2], al[2]);
    splitbf16::split2(ld(a1, kb, sak), ld(a1, kb + 1, sak), ah[3], al[3]);
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        uint32_t bh[2], bl[2];
        splitbf16::split2(ld(pb[nt], ka, sbk), ld(pb[nt], ka + 1, sbk), bh[0], bl[0]);
        splitbf16::split2(ld(pb[nt], kb, sbk), ld(pb[nt], kb + 1, sbk), bh[1], bl[1]);
        splitbf16::mma3(acc[nt], ah, al, bh, bl);
    }
}
/* The same 16-deep step at TF32's precision (TF: the kernels' TC 2): two mma.m16n8k8 .tf32, one product each
 * where split-bf16 takes three; lane 4 g + t loads A (g (+ 8), k t (+ 4)) and B (k t (+ 4), 8 nt + g) of each
 * 8-deep half. The same outputs per lane (C layout), summed over k in a fixed order: deterministic. */
template <int NT, bool EDGE>
__device__ __forceinline__ void tc_step_tf32(float (&acc)[NT][4], int k0, int K, const float *a0, const float *a1,
                                             int sak, const float *const (&pb)[NT], int sbk, int t) {
    auto ld = [&](const float *x, int k, int s) { return tf32::bits(!EDGE || k < K ? x[k * s] : 0.0f); };
#pragma unroll
    for (int h = 0; h < 16; h += 8) {
        const int ka = k0 + h + t, kb = ka + 4;
        const uint32_t a[4] = {ld(a0, ka, sak), ld(a1, ka, sak), ld(a0, kb, sak), ld(a1, kb, sak)};
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            const uint32_t bb[2] = {ld(pb[nt], ka, sbk), ld(pb[nt], kb, sbk)};
            tf32::mma1688(acc[nt], a, bb);
        }
    }
}
template <int NT, bool EDGE, bool TF>
__device__ __forceinline__ void tc_step_any(float (&acc)[NT][4], int k0, int K, const float *a0, const float *a1, int sak,
                                            const float *const (&pb)[NT], int sbk, int t) {
    if constexpr (TF) tc_step_tf32<NT, EDGE>(acc, k0, K, a0, a1, sak, pb, sbk, t);
    else tc_step<NT, EDGE>(acc, k0, K, a0, a1, sak, pb, sbk, t);
}
/* acc = the tile of C at rows m0.., columns n0.. (lane 4 g + t's elements, C layout); TF: at TF32's precision */
template <int NT, bool TF = false>
__device__ __forceinline__ void tc_tile(float (&acc)[NT][4], int M, int N, int K, const float *a, int sai, int sak,
                                        const float *b, int sbk, int sbj, int m0, int n0) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, K16 = K & ~15;
    constexpr bool TWO = NT == 1; /* two chains for the narrow, long-K products; registers are short elsewhere */
    const float *a0 = a + (int64_t)min(m0 + g, M - 1) * sai, *a1 = a + (int64_t)min(m0 + g + 8, M - 1) * sai, *pb[NT];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) pb[nt] = b + (int64_t)min(n0 + 8 * nt + g, N - 1) * sbj;
    float odd[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[nt][e] = 0, odd[nt][e] = 0;
    int k0 = 0;
    for (; k0 + 32 <= K16; k0 += 32) {
        tc_step_any<NT, false, TF>(acc, k0, K, a0, a1, sak, pb, sbk, t);
        tc_step_any<NT, false, TF>(TWO ? odd : acc, k0 + 16, K, a0, a1, sak, pb, sbk, t);
    }
    if (k0 < K16) tc_step_any<NT, false, TF>(acc, k0, K, a0, a1, sak, pb, sbk, t), k0 += 16;
    if (k0 < K) tc_step_any<NT, true, TF>(TWO ? odd : acc, k0, K, a0, a1, sak, pb, sbk, t);
    if (TWO)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[nt][e] += odd[nt][e];
}
/* epi for lane 4 g + t's elements of the tile at (m0, n0) */
template <int NT, typename Epi>
__device__ __forceinline__ void tc_epi(const float (&acc)[NT][4], int M, int N, int m0, int n0, Epi epi) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int i = m0 + g + 8 * (e >> 1), j = n0 + 8 * nt + 2 * t + (e & 1);
            if (i < M && j < N) epi(i, j, acc[nt][e]);
        }
}
template <int NT, bool TF = false, typename Epi>
__device__ __forceinline__ void mm_tc(int M, int N, int K, const float *a, int sai, int sak, const float *b, int sbk,
                                      int sbj, int w0, Epi epi) {
    const int NB = (N + 8 * NT - 1) / (8 * NT);
    for (int u = (int)((threadIdx.x >> 5) + WARPS - w0) % WARPS; u < (M + 15) / 16 * NB; u += WARPS) {
        const int m0 = u / NB * 16, n0 = u % NB * 8 * NT;
        float acc[NT][4];
        tc_tile<NT, TF>(acc, M, N, K, a, sai, sak, b, sbk, sbj, m0, n0);
        tc_epi<NT>(acc, M, N, m0, n0, epi);
    }
}

/* mm_tc (NT 1, w0 0) for the narrow, long-K products of step_bwd (C [rows, d] with K = F: 4 tiles at the ViT's
 * head, on 4 of its 8 warps, the step's longest chains), with K split in two: warp w < 4 sums tile w's first
 * Kh (a multiple of 16), warp w + 4 the rest, which it leaves in xs (128 floats a tile) for warp w to add
 * after a block barrier (so every thread calls it) and pass to epi: still one thread per output, a fixed
 * order. Where C has over WARPS / 2 tiles, K < 32 or xs holds fewer than cap floats' worth, mm_tc as is. xs
 * must be free until the next barrier, and consecutive calls need different xs (the second's writers could
 * pass the barrier while the first's readers are still reading). */
template <bool TF, typename Epi>
__device__ __forceinline__ void mm_tc_ks(int M, int N, int K, const float *a, int sai, int sak, const float *b, int sbk,
                                         int sbj, float *xs, int cap, Epi epi) {
    const int NB = (N + 7) / 8, T = (M + 15) / 16 * NB;
    if (2 * T > WARPS || K < 32 || T * 128 > cap) return mm_tc<1, TF>(M, N, K, a, sai, sak, b, sbk, sbj, 0, epi);
    const int u = (threadIdx.x >> 5) % (WARPS / 2), half = (threadIdx.x >> 5) / (WARPS / 2), lane = threadIdx.x & 31;
    const int Kh = (K / 2 + 15) & ~15, m0 = u / NB * 16, n0 = u % NB * 8;
    float acc[1][4];
    if (u < T) {
        tc_tile<1, TF>(acc, M, N, half ? K - Kh : Kh, a + (half ? (int64_t)Kh * sak : 0), sai, sak,
                   b + (half ? (int64_t)Kh * sbk : 0), sbk, sbj, m0, n0);
        if (half)
#pragma unroll
            for (int e = 0; e < 4; e++) xs[u * 128 + e * 32 + lane] = acc[0][e];
    }
    __syncthreads();
    if (u < T && !half) {
#pragma unroll
        for (int e = 0; e < 4; e++) acc[0][e] += xs[u * 128 + e * 32 + lane];
        tc_epi<1>(acc, M, N, m0, n0, epi);
    }
}

/* Which loop a product takes: where TC (f32 only) mm_tc with NT column blocks a tile and the warp offset w0,
 * else the FMA tiles it replaces (FMA: mm_w, mm_k, or mm's RM x RN tiles). Calls that add into one accumulator
 * use the same NT and w0. */
enum { FMA_W, FMA_K, FMA_22, FMA_24, FMA_44 };
template <typename R> struct is_f32 {
    static constexpr bool v = false;
};
template <> struct is_f32<float> {
    static constexpr bool v = true;
};
template <int TC, int FMA, int NT, typename R, typename Epi>
__device__ __forceinline__ void prod(int w0, int M, int N, int K, const R *a, int sai, int sak, const R *b, int sbk,
                                     int sbj, Epi epi) {
    if constexpr (TC) mm_tc<NT, TC == 2>(M, N, K, a, sai, sak, b, sbk, sbj, w0, epi);
    else if constexpr (FMA == FMA_W) mm_w(M, N, K, a, sai, sak, b, sbk, sbj, epi);
    else if constexpr (FMA == FMA_K) mm_k(M, N, K, a, sai, sak, b, sbk, sbj, epi);
    else if constexpr (FMA == FMA_22) mm<2, 2>(M, N, K, a, sai, sak, b, sbk, sbj, epi);
    else if constexpr (FMA == FMA_24) mm<2, 4>(M, N, K, a, sai, sak, b, sbk, sbj, epi);
    else mm<4, 4>(M, N, K, a, sai, sak, b, sbk, sbj, epi);
}
/* mm_k, or where TC mm_tc_ks with the scratch xs of cap elements */
template <int TC, typename R, typename Epi>
__device__ __forceinline__ void prod_ks(R *xs, int cap, int M, int N, int K, const R *a, int sai, int sak, const R *b,
                                        int sbk, int sbj, Epi epi) {
    if constexpr (TC) mm_tc_ks<TC == 2>(M, N, K, a, sai, sak, b, sbk, sbj, xs, cap, epi);
    else mm_k(M, N, K, a, sai, sak, b, sbk, sbj, epi);
}

/* dst [rows, cols] (row stride ldd) = src (row stride lds), block-wide */
template <typename R> __device__ __forceinline__ void copy_rows(R *dst, int ldd, const R *src, int64_t lds, int rows, int cols) {
    for (int e = threadIdx.x; e < rows * cols; e += THREADS) {
        const int r = e / cols, c = e % cols;
        dst[r * ldd + c] = src[r * lds + c];
    }
}
template <typename R> __device__ __forceinline__ void fill(R *dst, const R *src, int n) { /* src NULL: zeros */
    for (int e = threadIdx.x; e < n; e += THREADS) dst[e] = src ? src[e] : (R)0;
}
/* acc[j] += sum over r < rows of x[r ldx + j], in row order, for j < n (thread j owns acc[j]) */
template <typename R> __device__ __forceinline__ void col_sum(R *acc, const R *x, int ldx, int rows, int n) {
    for (int j = threadIdx.x; j < n; j += THREADS) {
        R s = 0;
        for (int r = 0; r < rows; r++) s += x[r * ldx + j];
        acc[j] += s;
    }
}

/* Carves the dynamic shared memory: WARPS doubles, then R arrays in order. */
template <typename R> struct Carve {
    R *at;
    __device__ __forceinline__ R *take(int64_t n) {
        R *p = at;
        at += n;
        return p;
    }
};

/* ---- the forward step ---- */

/* TC (the kernels' second parameter, f32 only): the products on the tensor cores (mm_tc) in its layout (pad).
 * A separate kernel, so that the FMA tiles' kernel is compiled as it was, registers included. (sm_90, CUDA 13:
 * step_fwd<float, true> spills 20 bytes at its 128 registers, two blocks an SM; with NT 1 for its wide
 * products it does not, at twice their A fragment loads: for a GPU run to choose.) */
template <typename R, int TC> __global__ void __launch_bounds__(THREADS) step_fwd(Step<R> p) {
    char *raw = (char *)MTTT_SMEM();
    double *wloss = (double *)raw;
    Carve<R> cv{(R *)(raw + WARPS * 8)};
    const int d = p.d, F = p.F, D = p.D, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int64_t bh = blockIdx.y;
    const int c = blockIdx.x, h = (int)(bh % p.H), ch_end = min(p.m, (c + 1) * p.cl);
    const int64_t b = bh / p.H;
    const bool ln = p.lng != nullptr, step = !p.loss_only;
    static_assert(!TC || is_f32<R>::v, "tensor cores for f32 only");
    constexpr bool tc = TC;
    R *part = p.part + (bh * p.nch + c) * fwd_part_elems(d, F);
    const R *gW1 = p.w1 + (p.wb[0] ? bh : h) * (int64_t)d * F, *gW2 = p.w2 + (p.wb[2] ? bh : h) * (int64_t)F * d;
    const R *gG = p.gh + (int64_t)h * D * d;
    /* the weights: padded copies in shared memory, or global; the gradients' sums likewise, or in part */
    const R *W1, *W2, *G;
    R *gw1, *gw2;
    int l1, l2, lg;
    /* the [F, d] sums' rows 8 apart in banks in shared memory: the 4 x 4 tiles' epilogues hit 32 banks; the
     * rows of the other matrices padded by pw, the [d, F] sum's (lw) by pad_dw (pad says why) */
    const int pw = pad(tc), la = p.mode ? d + 8 : d, lw = p.mode ? F + pad_dw(tc) : F;
    if (p.mode) {
        R *w1s = cv.take((int64_t)d * (F + pw)), *w2s = cv.take((int64_t)F * (d + pw));
        R *gs = cv.take((int64_t)D * (d + pw));
        copy_rows(w1s, F + pw, gW1, F, d, F);
        copy_rows(w2s, d + pw, gW2, d, F, d);
        copy_rows(gs, d + pw, gG, d, D, d);
        W1 = w1s, W2 = w2s, G = gs, l1 = F + pw, l2 = d + pw, lg = d + pw;
        gw1 = cv.take((int64_t)d * lw), gw2 = cv.take((int64_t)F * (d + 8));
    } else {
        W1 = gW1, W2 = gW2, G = gG, l1 = F, l2 = d, lg = d;
        gw1 = part, gw2 = part + (int64_t)d * F + F;
    }
    R *b1 = cv.take(F), *b2 = cv.take(d), *gam = cv.take(D), *bet = cv.take(D), *gb1 = cv.take(F), *gb2 = cv.take(d);
    const int tm = p.tm, lk = d + pw, lf = F + pw, lp = D + pw;
    R *Kt = cv.take((int64_t)tm * lk), *A = cv.take((int64_t)tm * lf), *S = cv.take((int64_t)tm * lf);
    R *Y = cv.take((int64_t)tm * lk), *P = cv.take((int64_t)tm * lp), *dY = cv.take((int64_t)tm * lk);
    fill(b1, p.b1 + (p.wb[1] ? bh : h) * (int64_t)F, F);
    fill(b2, p.b2 + (p.wb[3] ? bh : h) * (int64_t)d, d);
    if (ln) fill(gam, p.lng + (int64_t)h * D, D), fill(bet, p.lnb + (int64_t)h * D, D);
    if (step) {
        fill(gw1, (const R *)nullptr, d * lw), fill(gw2, (const R *)nullptr, F * la);
        fill(gb1, (const R *)nullptr, F), fill(gb2, (const R *)nullptr, d);
    }
    const R *K0 = p.k + b * p.ks[0] + h * p.ks[1], *X0 = p.xt + b * p.xs[0] + h * p.xs[1];
    const R rm = (R)(1.0 / p.m);
    double wl = 0; /* this warp's rows' sum of ||r||^2 */
    for (int t0 = c * p.cl; t0 < ch_end; t0 += tm) {
        const int rows = min(tm, ch_end - t0);
        __syncthreads(); /* the previous tile's readers are done */
        copy_rows(Kt, lk, K0 + t0 * p.ks[2], p.ks[2], rows, d);
        __syncthreads();
        /* z1 = k W1 + b1, a = gelu(z1), s = gelu'(z1) */
        prod<TC, FMA_W, 2>(0, rows, F, d, Kt, lk, 1, W1, l1, 1, [&](int i, int j, R acc) {
            R g1;
            A[i * lf + j] = gelu(acc + b1[j], step ? &g1 : (R *)nullptr, (R *)nullptr);
            if (step) S[i * lf + j] = g1;
        });
        __syncthreads();
        /* y = a W2 + b2 */
        prod<TC, FMA_K, 1>(0, rows, d, F, A, lf, 1, W2, l2, 1,
                           [&](int i, int j, R acc) { Y[i * lk + j] = acc + b2[j]; });
        __syncthreads();
        /* p = y gh^T */
        prod<TC, FMA_22, 1>(0, rows, D, d, Y, lk, 1, G, 1, lg, [&](int i, int j, R acc) { P[i * lp + j] = acc; });
        __syncthreads();
        /* row by row (a warp each): the residual r = dec - x, the loss, dp = d l / d p in place of p */
        for (int r = warp; r < rows; r += WARPS) {
            R *pr = P + r * lp;
            const R *x = X0 + (t0 + r) * p.xs[2];
            double l2s = 0;
            if (!ln) {
                for (int j = lane; j < D; j += 32) {
                    const R rr = pr[j] - x[j];
                    l2s += (double)rr * rr;
                    if (step) pr[j] = rr * rm;
                }
                wl += warp_sum(l2s);
                continue;
            }
            double s = 0;
            for (int j = lane; j < D; j += 32) s += pr[j];
            const double mean = warp_sum(s) / D;
            double v = 0;
            for (int j = lane; j < D; j += 32) v += ((double)pr[j] - mean) * ((double)pr[j] - mean);
            const double rstd = 1.0 / sqrt(warp_sum(v) / D + p.eps);
            const R mr = (R)mean, sr = (R)rstd;
            double s1 = 0, s2 = 0;
            for (int j = lane; j < D; j += 32) {
                const R xh = (pr[j] - mr) * sr, rr = xh * gam[j] + bet[j] - x[j], g = rr * rm * gam[j];
                l2s += (double)rr * rr;
                s1 += g, s2 += (double)g * xh;
                pr[j] = xh;
            }
            warp_sum3(l2s, s1, s2);
            wl += l2s;
            if (!step) continue;
            const R mg = (R)(s1 / D), mgx = (R)(s2 / D);
            for (int j = lane; j < D; j += 32) {
                const R xh = pr[j], g = (xh * gam[j] + bet[j] - x[j]) * rm * gam[j];
                pr[j] = sr * (g - mg - xh * mgx);
            }
        }
        if (!step) continue;
        __syncthreads();
        /* dy = dp gh */
        prod<TC, FMA_K, 1>(0, rows, d, D, P, lp, 1, G, lg, 1, [&](int i, int j, R acc) { dY[i * lk + j] = acc; });
        __syncthreads();
        /* dz1 = (dy W2^T) o gelu'(z1) in place of s;  gW2 += a^T dy, gb2 += sum dy */
        prod<TC, FMA_W, 2>(0, rows, F, d, dY, lk, 1, W2, 1, l2, [&](int i, int j, R acc) { S[i * lf + j] *= acc; });
        prod<TC, FMA_44, 1>(0, F, d, rows, A, 1, lf, dY, lk, 1, [&](int i, int j, R acc) { gw2[i * la + j] += acc; });
        col_sum(gb2, dY, lk, rows, d);
        __syncthreads();
        /* gW1 += k^T dz1, gb1 += sum dz1 */
        prod<TC, FMA_44, 2>(0, d, F, rows, Kt, 1, lk, S, lf, 1, [&](int i, int j, R acc) { gw1[i * lw + j] += acc; });
        col_sum(gb1, S, lf, rows, F);
    }
    if (lane == 0) wloss[warp] = wl;
    __syncthreads();
    if (step) {
        if (p.mode) {
            for (int e = tid; e < d * F; e += THREADS)
                part[e] = gw1[(e / F) * lw + e % F], part[d * F + F + e] = gw2[(e / d) * la + e % d];
        }
        for (int e = tid; e < F; e += THREADS) part[(int64_t)d * F + e] = gb1[e];
        for (int e = tid; e < d; e += THREADS) part[2 * (int64_t)d * F + F + e] = gb2[e];
    }
    if (tid == 0) {
        double s = 0;
        for (int w = 0; w < WARPS; w++) s += wloss[w];
        part[fwd_part_elems(d, F) - 1] = (R)s;
    }
}

/* ---- the backward of the step (second order in the inner loss) ---- */

/* one block an SM (its shared memory at the ViT's head), so all of the registers: without the 1, ptxas kept f32 to 128 and spilled */
template <typename R, int TC> __global__ void __launch_bounds__(THREADS, 1) step_bwd(StepBwd<R> p) {
    char *raw = (char *)MTTT_SMEM();
    Carve<R> cv{(R *)(raw + WARPS * 8)};
    const int d = p.d, F = p.F, D = p.D, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int64_t bh = blockIdx.y;
    const int c = blockIdx.x, h = (int)(bh % p.H), ch_end = min(p.m, (c + 1) * p.cl);
    const int64_t b = bh / p.H;
    const bool ln = p.lng != nullptr, hu1 = p.u1 != nullptr, hu2 = p.u2 != nullptr;
    static_assert(!TC || is_f32<R>::v, "tensor cores for f32 only");
    constexpr bool tc = TC;
    R *part = p.part + (bh * p.nch + c) * bwd_part_elems(d, F, D);
    const int64_t dF = (int64_t)d * F;
    const R *gW1 = p.w1 + (p.wb[0] ? bh : h) * dF, *gW2 = p.w2 + (p.wb[2] ? bh : h) * dF;
    const R *gG = p.gh + (int64_t)h * D * d;
    const R *gU1 = hu1 ? p.u1 + bh * dF : nullptr, *gU2 = hu2 ? p.u2 + bh * dF : nullptr;
    const R *W1, *W2, *G, *U1 = nullptr, *U2 = nullptr;
    R *dW1, *dW2, *dG;
    int l1, l2, lg;
    const int pw = pad(tc), la = p.mode ? d + 8 : d, lw = p.mode ? F + pad_dw(tc) : F; /* as step_fwd's */
    if (p.mode) {
        R *w1s = cv.take(d * (int64_t)(F + pw)), *w2s = cv.take(F * (int64_t)(d + pw));
        R *u1s = cv.take(d * (int64_t)(F + pw)), *u2s = cv.take(F * (int64_t)(d + pw));
        R *gs = cv.take(D * (int64_t)(d + pw));
        copy_rows(w1s, F + pw, gW1, F, d, F);
        copy_rows(w2s, d + pw, gW2, d, F, d);
        if (hu1) copy_rows(u1s, F + pw, gU1, F, d, F), U1 = u1s;
        if (hu2) copy_rows(u2s, d + pw, gU2, d, F, d), U2 = u2s;
        copy_rows(gs, d + pw, gG, d, D, d);
        W1 = w1s, W2 = w2s, G = gs, l1 = F + pw, l2 = d + pw, lg = d + pw;
        dW1 = cv.take((int64_t)d * lw), dW2 = cv.take((int64_t)F * (d + 8)), dG = cv.take((int64_t)D * (d + 8));
    } else {
        W1 = gW1, W2 = gW2, G = gG, U1 = gU1, U2 = gU2, l1 = F, l2 = d, lg = d;
        dW1 = part, dW2 = part + dF + F, dG = part + 2 * dF + F + d;
    }
    R *b1 = cv.take(F), *b2 = cv.take(d), *v1 = cv.take(F), *v2 = cv.take(d), *gam = cv.take(D), *bet = cv.take(D);
    R *db1 = cv.take(F), *db2 = cv.take(d), *dgam = cv.take(D), *dbet = cv.take(D);
    const int tm = p.tm, lk = d + pw, lf = F + pw, lp = D + pw;
    R *Kt = cv.take((int64_t)tm * lk);
    R *A = cv.take((int64_t)tm * lf), *S1 = cv.take((int64_t)tm * lf), *At = cv.take((int64_t)tm * lf);
    R *Qz = cv.take((int64_t)tm * lf), *Ab = cv.take((int64_t)tm * lf), *Atb = cv.take((int64_t)tm * lf);
    R *Y = cv.take((int64_t)tm * lk), *Yt = cv.take((int64_t)tm * lk), *Yb = cv.take((int64_t)tm * lk);
    R *Ytb = cv.take((int64_t)tm * lk);
    R *Xh = cv.take((int64_t)tm * lp), *Rr = cv.take((int64_t)tm * lp), *Pt = cv.take((int64_t)tm * lp);
    R *Xht = cv.take((int64_t)tm * lp), *Pb = cv.take((int64_t)tm * lp), *Ptb = cv.take((int64_t)tm * lp);
    R *Cg = cv.take((int64_t)tm * lp), *Cb = cv.take((int64_t)tm * lp);
    fill(b1, p.b1 + (p.wb[1] ? bh : h) * (int64_t)F, F);
    fill(b2, p.b2 + (p.wb[3] ? bh : h) * (int64_t)d, d);
    fill(v1, p.v1 ? p.v1 + bh * F : nullptr, F);
    fill(v2, p.v2 ? p.v2 + bh * d : nullptr, d);
    if (ln) fill(gam, p.lng + (int64_t)h * D, D), fill(bet, p.lnb + (int64_t)h * D, D);
    fill(dW1, (const R *)nullptr, d * lw), fill(dW2, (const R *)nullptr, F * la), fill(dG, (const R *)nullptr, D * la);
    fill(db1, (const R *)nullptr, F), fill(db2, (const R *)nullptr, d);
    fill(dgam, (const R *)nullptr, D), fill(dbet, (const R *)nullptr, D);
    const R *K0 = p.k + b * p.ks[0] + h * p.ks[1], *X0 = p.xt + b * p.xs[0] + h * p.xs[1];
    R *dK0 = p.dk + bh * p.m * (int64_t)d, *dX0 = p.dx + bh * p.m * (int64_t)D;
    const double inv_m = 1.0 / p.m, inv_D = 1.0 / D, lbar = p.dloss ? (double)p.dloss[bh] : 0.0;
    const R em = (R)(p.eta * inv_m), lm = (R)(lbar * inv_m);
    for (int t0 = c * p.cl; t0 < ch_end; t0 += tm) {
        const int rows = min(tm, ch_end - t0);
        __syncthreads();
        copy_rows(Kt, lk, K0 + t0 * p.ks[2], p.ks[2], rows, d);
        __syncthreads();
        /* the forward again: z1, a = gelu(z1), s1 = gelu'(z1), gelu''(z1) (in Qz); the tangent z1t = k U1 + u1
         * (in Ab until the adjoints need it) */
        prod<TC, FMA_W, 2>(0, rows, F, d, Kt, lk, 1, W1, l1, 1, [&](int i, int j, R acc) {
            R g1, g2;
            A[i * lf + j] = gelu(acc + b1[j], &g1, &g2);
            S1[i * lf + j] = g1, Qz[i * lf + j] = g2;
        });
        if (hu1)
            prod<TC, FMA_W, 2>(0, rows, F, d, Kt, lk, 1, U1, l1, 1,
                               [&](int i, int j, R acc) { Ab[i * lf + j] = acc + v1[j]; });
        else
            for (int e = tid; e < rows * F; e += THREADS) Ab[(e / F) * lf + e % F] = v1[e % F];
        __syncthreads();
        /* at = s1 o z1t, gelu''(z1) o z1t (in Qz); y = a W2 + b2 */
        for (int e = tid; e < rows * F; e += THREADS) {
            const int x = (e / F) * lf + e % F;
            At[x] = S1[x] * Ab[x], Qz[x] *= Ab[x];
        }
        /* (mm_tc_ks's scratch here and in the next phase and for dk: Pb, Ptb, unused until the rows below) */
        prod_ks<TC>(Pb, tm * lp, rows, d, F, A, lf, 1, W2, l2, 1,
                    [&](int i, int j, R acc) { Y[i * lk + j] = acc + b2[j]; });
        __syncthreads();
        /* yt = at W2 + a U2 + u2 (one thread owns each element through both products), p = y gh^T (in Xh) */
        prod_ks<TC>(Ptb, tm * lp, rows, d, F, At, lf, 1, W2, l2, 1,
                    [&](int i, int j, R acc) { Yt[i * lk + j] = acc + v2[j]; });
        if (hu2)
            prod_ks<TC>(Pb, tm * lp, rows, d, F, A, lf, 1, U2, l2, 1,
                        [&](int i, int j, R acc) { Yt[i * lk + j] += acc; });
        prod<TC, FMA_22, 1>(0, rows, D, d, Y, lk, 1, G, 1, lg, [&](int i, int j, R acc) { Xh[i * lp + j] = acc; });
        __syncthreads();
        /* pt = yt gh^T */
        prod<TC, FMA_22, 1>(0, rows, D, d, Yt, lk, 1, G, 1, lg, [&](int i, int j, R acc) { Pt[i * lp + j] = acc; });
        __syncthreads();
        /* row by row (a warp each; cpu_mttt_impl.h: ln_resid_row, ln_bwd_row): xh, r, the LN's tangent xht and
         * the adjoints pb, ptb; dx; the rows' terms of dlng (Cg) and dlnb (Cb) */
        for (int r = warp; r < rows; r += WARPS) {
            R *xh = Xh + r * lp, *rr = Rr + r * lp, *pt = Pt + r * lp, *xht = Xht + r * lp, *pb = Pb + r * lp;
            R *ptb = Ptb + r * lp, *cg = Cg + r * lp, *cb = Cb + r * lp, *dx = dX0 + (int64_t)(t0 + r) * D;
            const R *x = X0 + (t0 + r) * p.xs[2];
            if (!ln) {
                for (int j = lane; j < D; j += 32) {
                    const R res = xh[j] - x[j], rb = lm * res - em * pt[j];
                    dx[j] = -rb, pb[j] = rb, ptb[j] = -em * res;
                }
                continue;
            }
            double s = 0;
            for (int j = lane; j < D; j += 32) s += xh[j];
            const double mean = warp_sum(s) / D;
            double v = 0;
            for (int j = lane; j < D; j += 32) v += ((double)xh[j] - mean) * ((double)xh[j] - mean);
            const double rstd = 1.0 / sqrt(warp_sum(v) / D + p.eps);
            const R mr = (R)mean, sr = (R)rstd;
            double s_pt = 0, s_ptx = 0;
            for (int j = lane; j < D; j += 32) {
                const R xj = (xh[j] - mr) * sr;
                xh[j] = xj, rr[j] = xj * gam[j] + bet[j] - x[j];
                s_pt += pt[j], s_ptx += (double)pt[j] * xj;
            }
            /* xht = rstd (pt - mean pt - xh mean(pt xh)) */
            warp_sum2(s_pt, s_ptx);
            const double mpt = s_pt * inv_D, cc = s_ptx * inv_D;
            const R mptr = (R)mpt, cr = (R)cc;
            double sT = 0, sTX = 0, sTXt = 0;
            for (int j = lane; j < D; j += 32) {
                const R xt_ = sr * (pt[j] - mptr - xh[j] * cr);
                const R rtb = -em * rr[j], rb = lm * rr[j] - em * xt_ * gam[j], T = rtb * gam[j];
                xht[j] = xt_;
                dx[j] = -rb;
                pb[j] = rb * gam[j]; /* xhb, finished below */
                cg[j] = rb * xh[j] + rtb * xt_, cb[j] = rb;
                ptb[j] = T;
                sT += T, sTX += (double)T * xh[j], sTXt += (double)T * xt_;
            }
            warp_sum3(sT, sTX, sTXt);
            const double mT = sT * inv_D, sTXa = sTX, rb_s = sTXt / rstd;
            const R mTr = (R)mT, sx = (R)(sTXa * inv_D), kc = (R)(rstd * cc), kp = (R)(rstd * sTXa * inv_D);
            double sX = 0, sXx = 0;
            for (int j = lane; j < D; j += 32) {
                const R T = ptb[j], xhb = pb[j] - kc * T - kp * pt[j];
                ptb[j] = sr * (T - mTr - xh[j] * sx);
                pb[j] = xhb;
                sX += xhb, sXx += (double)xhb * xh[j];
            }
            warp_sum2(sX, sXx);
            const R mXr = (R)(sX * inv_D), mXxr = (R)(sXx * inv_D), kr = (R)(rb_s * rstd * rstd * inv_D);
            for (int j = lane; j < D; j += 32) pb[j] = sr * (pb[j] - mXr - xh[j] * mXxr) - kr * xh[j];
        }
        __syncthreads();
        /* dlng, dlnb; yb = pb gh, ytb = ptb gh, dgh += pb^T y + ptb^T yt */
        if (ln) col_sum(dgam, Cg, lp, rows, D), col_sum(dbet, Cb, lp, rows, D);
        prod<TC, FMA_K, 1>(0, rows, d, D, Pb, lp, 1, G, lg, 1, [&](int i, int j, R acc) { Yb[i * lk + j] = acc; });
        prod<TC, FMA_K, 1>(4, rows, d, D, Ptb, lp, 1, G, lg, 1, [&](int i, int j, R acc) { Ytb[i * lk + j] = acc; });
        prod<TC, FMA_24, 1>(0, D, d, rows, Pb, 1, lp, Y, lk, 1, [&](int i, int j, R acc) { dG[i * la + j] += acc; });
        prod<TC, FMA_24, 1>(0, D, d, rows, Ptb, 1, lp, Yt, lk, 1, [&](int i, int j, R acc) { dG[i * la + j] += acc; });
        __syncthreads();
        /* ab = yb W2^T + ytb U2^T, atb = ytb W2^T (in Ab, Atb); dW2 += a^T yb + at^T ytb, db2 += sum yb */
        prod<TC, FMA_W, 2>(0, rows, F, d, Yb, lk, 1, W2, 1, l2, [&](int i, int j, R acc) { Ab[i * lf + j] = acc; });
        if (hu2)
            prod<TC, FMA_W, 2>(0, rows, F, d, Ytb, lk, 1, U2, 1, l2,
                               [&](int i, int j, R acc) { Ab[i * lf + j] += acc; });
        prod<TC, FMA_W, 2>(0, rows, F, d, Ytb, lk, 1, W2, 1, l2, [&](int i, int j, R acc) { Atb[i * lf + j] = acc; });
        prod<TC, FMA_44, 1>(0, F, d, rows, A, 1, lf, Yb, lk, 1, [&](int i, int j, R acc) { dW2[i * la + j] += acc; });
        prod<TC, FMA_44, 1>(0, F, d, rows, At, 1, lf, Ytb, lk, 1, [&](int i, int j, R acc) { dW2[i * la + j] += acc; });
        col_sum(db2, Yb, lk, rows, d);
        __syncthreads();
        /* z1b = ab o s1 + atb o gelu''(z1) o z1t (in Ab), z1tb = atb o s1 (in Atb) */
        for (int e = tid; e < rows * F; e += THREADS) {
            const int x = (e / F) * lf + e % F;
            const R ab = Ab[x], atb = Atb[x];
            Ab[x] = ab * S1[x] + atb * Qz[x];
            Atb[x] = atb * S1[x];
        }
        __syncthreads();
        /* dk = z1b W1^T + z1tb U1^T; dW1 += k^T z1b, db1 += sum z1b */
        prod_ks<TC>(Pb, tm * lp, rows, d, F, Ab, lf, 1, W1, 1, l1,
                    [&](int i, int j, R acc) { dK0[(int64_t)(t0 + i) * d + j] = acc; });
        if (hu1)
            prod_ks<TC>(Ptb, tm * lp, rows, d, F, Atb, lf, 1, U1, 1, l1,
                        [&](int i, int j, R acc) { dK0[(int64_t)(t0 + i) * d + j] += acc; });
        prod<TC, FMA_44, 2>(4, d, F, rows, Kt, 1, lk, Ab, lf, 1, [&](int i, int j, R acc) { dW1[i * lw + j] += acc; });
        col_sum(db1, Ab, lf, rows, F);
    }
    __syncthreads();
    if (p.mode) {
        for (int e = tid; e < d * F; e += THREADS)
            part[e] = dW1[(e / F) * lw + e % F], part[dF + F + e] = dW2[(e / d) * la + e % d];
        for (int e = tid; e < D * d; e += THREADS) part[2 * dF + F + d + e] = dG[(e / d) * la + e % d];
    }
    for (int e = tid; e < F; e += THREADS) part[dF + e] = db1[e];
    for (int e = tid; e < d; e += THREADS) part[2 * dF + F + e] = db2[e];
    for (int e = tid; e < D; e += THREADS) {
        part[2 * dF + F + d + (int64_t)D * d + e] = dgam[e];
        part[2 * dF + F + d + (int64_t)D * d + D + e] = dbet[e];
    }
}

/* ---- the read-out and its backward ---- */

template <typename R, int TC> __global__ void __launch_bounds__(THREADS) apply_fwd(Apply<R> p) {
    Carve<R> cv{(R *)((char *)MTTT_SMEM() + WARPS * 8)};
    const int d = p.d, F = p.F;
    static_assert(!TC || is_f32<R>::v, "tensor cores for f32 only");
    constexpr bool tc = TC;
    const int64_t bh = blockIdx.y;
    const int c = blockIdx.x, h = (int)(bh % p.H), ch_end = min(p.n, (c + 1) * p.cl);
    const int64_t dF = (int64_t)d * F;
    const R *gW1 = p.w1 + (p.wb[0] ? bh : h) * dF, *gW2 = p.w2 + (p.wb[2] ? bh : h) * dF, *W1, *W2;
    int l1, l2;
    const int pw = pad(tc); /* as step_fwd's */
    if (p.mode) {
        R *w1s = cv.take(d * (int64_t)(F + pw)), *w2s = cv.take(F * (int64_t)(d + pw));
        copy_rows(w1s, F + pw, gW1, F, d, F);
        copy_rows(w2s, d + pw, gW2, d, F, d);
        W1 = w1s, W2 = w2s, l1 = F + pw, l2 = d + pw;
    } else {
        W1 = gW1, W2 = gW2, l1 = F, l2 = d;
    }
    R *b1 = cv.take(F), *b2 = cv.take(d);
    const int tm = p.tm, lk = d + pw, lf = F + pw;
    R *Qt = cv.take((int64_t)tm * lk), *A = cv.take((int64_t)tm * lf);
    fill(b1, p.b1 + (p.wb[1] ? bh : h) * (int64_t)F, F);
    fill(b2, p.b2 + (p.wb[3] ? bh : h) * (int64_t)d, d);
    const R *Q0 = p.q + (bh / p.H) * p.qs[0] + h * p.qs[1];
    R *O0 = p.out + bh * p.n * (int64_t)d;
    for (int t0 = c * p.cl; t0 < ch_end; t0 += p.tm) {
        const int rows = min(tm, ch_end - t0);
        __syncthreads();
        copy_rows(Qt, lk, Q0 + t0 * p.qs[2], p.qs[2], rows, d);
        __syncthreads();
        prod<TC, FMA_W, 2>(0, rows, F, d, Qt, lk, 1, W1, l1, 1, [&](int i, int j, R acc) {
            A[i * lf + j] = gelu(acc + b1[j], (R *)nullptr, (R *)nullptr);
        });
        __syncthreads();
        prod<TC, FMA_K, 1>(0, rows, d, F, A, lf, 1, W2, l2, 1,
                           [&](int i, int j, R acc) { O0[(int64_t)(t0 + i) * d + j] = acc + b2[j]; });
    }
}

template <typename R, int TC> __global__ void __launch_bounds__(THREADS) apply_bwd(Apply<R> p) {
    Carve<R> cv{(R *)((char *)MTTT_SMEM() + WARPS * 8)};
    const int d = p.d, F = p.F, tid = threadIdx.x;
    static_assert(!TC || is_f32<R>::v, "tensor cores for f32 only");
    constexpr bool tc = TC;
    const int64_t bh = blockIdx.y;
    const int c = blockIdx.x, h = (int)(bh % p.H), ch_end = min(p.n, (c + 1) * p.cl);
    const int64_t dF = (int64_t)d * F;
    R *part = p.part + (bh * p.nch + c) * apply_part_elems(d, F);
    const R *gW1 = p.w1 + (p.wb[0] ? bh : h) * dF, *gW2 = p.w2 + (p.wb[2] ? bh : h) * dF, *W1, *W2;
    R *dW1, *dW2;
    int l1, l2;
    const int pw = pad(tc), la = p.mode ? d + 8 : d, lw = p.mode ? F + pad_dw(tc) : F; /* as step_fwd's */
    if (p.mode) {
        R *w1s = cv.take(d * (int64_t)(F + pw)), *w2s = cv.take(F * (int64_t)(d + pw));
        copy_rows(w1s, F + pw, gW1, F, d, F);
        copy_rows(w2s, d + pw, gW2, d, F, d);
        W1 = w1s, W2 = w2s, l1 = F + pw, l2 = d + pw;
        dW1 = cv.take((int64_t)d * lw), dW2 = cv.take((int64_t)F * (d + 8));
    } else {
        W1 = gW1, W2 = gW2, l1 = F, l2 = d;
        dW1 = part, dW2 = part + dF + F;
    }
    R *b1 = cv.take(F), *db1 = cv.take(F), *db2 = cv.take(d), *unused = cv.take(d);
    (void)unused;
    const int tm = p.tm, lk = d + pw, lf = F + pw;
    R *Qt = cv.take((int64_t)tm * lk), *dO = cv.take((int64_t)tm * lk), *A = cv.take((int64_t)tm * lf);
    R *S = cv.take((int64_t)tm * lf);
    fill(b1, p.b1 + (p.wb[1] ? bh : h) * (int64_t)F, F);
    fill(dW1, (const R *)nullptr, d * lw), fill(dW2, (const R *)nullptr, F * la);
    fill(db1, (const R *)nullptr, F), fill(db2, (const R *)nullptr, d);
    const R *Q0 = p.q + (bh / p.H) * p.qs[0] + h * p.qs[1], *dO0 = p.dout + bh * p.n * (int64_t)d;
    R *dQ0 = p.dq + bh * p.n * (int64_t)d;
    for (int t0 = c * p.cl; t0 < ch_end; t0 += tm) {
        const int rows = min(tm, ch_end - t0);
        __syncthreads();
        copy_rows(Qt, lk, Q0 + t0 * p.qs[2], p.qs[2], rows, d);
        copy_rows(dO, lk, dO0 + (int64_t)t0 * d, (int64_t)d, rows, d);
        __syncthreads();
        /* z = q W1 + b1: a = gelu(z), s = gelu'(z) */
        prod<TC, FMA_W, 2>(0, rows, F, d, Qt, lk, 1, W1, l1, 1, [&](int i, int j, R acc) {
            R g1;
            A[i * lf + j] = gelu(acc + b1[j], &g1, (R *)nullptr);
            S[i * lf + j] = g1;
        });
        __syncthreads();
        /* out = a W2 + b2: dz = (dout W2^T) o gelu'(z) in place of s; dW2 += a^T dout, db2 += sum dout */
        prod<TC, FMA_W, 2>(0, rows, F, d, dO, lk, 1, W2, 1, l2, [&](int i, int j, R acc) { S[i * lf + j] *= acc; });
        prod<TC, FMA_44, 1>(0, F, d, rows, A, 1, lf, dO, lk, 1, [&](int i, int j, R acc) { dW2[i * la + j] += acc; });
        col_sum(db2, dO, lk, rows, d);
        __syncthreads();
        /* z = q W1 + b1: dq = dz W1^T, dW1 += q^T dz, db1 += sum dz */
        prod<TC, FMA_K, 1>(0, rows, d, F, S, lf, 1, W1, 1, l1,
                           [&](int i, int j, R acc) { dQ0[(int64_t)(t0 + i) * d + j] = acc; });
        prod<TC, FMA_44, 2>(4, d, F, rows, Qt, 1, lk, S, lf, 1, [&](int i, int j, R acc) { dW1[i * lw + j] += acc; });
        col_sum(db1, S, lf, rows, F);
    }
    __syncthreads();
    if (p.mode)
        for (int e = tid; e < d * F; e += THREADS)
            part[e] = dW1[(e / F) * lw + e % F], part[dF + F + e] = dW2[(e / d) * la + e % d];
    for (int e = tid; e < F; e += THREADS) part[dF + e] = db1[e];
    for (int e = tid; e < d; e += THREADS) part[2 * dF + F + e] = db2[e];
}

/* ---- the chunks' partial sums, per pair in chunk order ---- */

template <typename R> __global__ void __launch_bounds__(THREADS) reduce(Reduce<R> p) {
    const int64_t bh = blockIdx.y;
    const int e = blockIdx.x * THREADS + threadIdx.x;
    if (e >= p.pe) return;
    for (int s = 0; s < p.nseg; s++) {
        const Seg<R> &g = p.seg[s];
        if (!g.out || e < g.off || e >= g.off + g.size) continue;
        const R *x = p.part + bh * p.nch * (int64_t)p.pe + e;
        R sum = 0;
        for (int c = 0; c < p.nch; c++) sum += x[(int64_t)c * p.pe];
        const int i = e - g.off;
        const R base = g.base ? g.base[(g.base_batched ? bh : bh % p.H) * g.size + i] : (R)0;
        g.out[bh * g.size + i] = base + g.alpha * sum;
    }
}

} // namespace mttt

#endif
