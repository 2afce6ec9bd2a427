/* Fused attention kernels, f32 (flash-attention style: tiles of queries and
 * keys in shared memory, an online softmax, nothing of size Tq x Tk in device
 * memory). Device code only, so dev/cuda/emu.h can run it on a host without a
 * GPU; the launchers are in attention.cu. The includer defines ATTN_SMEM(), a
 * float pointer to the block's dynamic shared memory.
 *
 * Layout: q [BH, Tq, d], k [BH, Tk, d], v [BH, Tk, dv], dense. The kernels are
 * compiled for a padded head size D (64 or 128) and handle any d, dv <= D by
 * loading zeros into the padding.
 *
 * Masking (ttt_attention's convention): query i sits at absolute position
 * off + i (off = Tk - Tq when causal, else 0) and sees key j iff j < Tk and,
 * when causal, j <= off + i and (window <= 0 or off + i - j < window). Key
 * tiles that no query of a tile can see are skipped, so windowed cost grows
 * with Tq * window.
 *
 * Threads: 256 per block as a 16 x 16 grid (ty = tid / 16, tx = tid % 16).
 * A score tile of BR = 64 rows by BC columns: thread (ty, tx) holds rows
 * ty * 4 + r (r < 4) and columns tx + 16 j (j < BC / 16). The 16 threads of a
 * row group are 16 consecutive lanes, so row reductions are 4 xor-shuffles.
 * Output tiles [rows, D]: thread (ty, tx) holds columns tx * 4 + 64 jo + e
 * (float4 reads of shared memory). Shared rows are padded by 4 floats so the
 * column-strided float4 reads of K and V rows hit distinct banks. */
#ifndef TTT_ATTENTION_KERNELS_CUH
#define TTT_ATTENTION_KERNELS_CUH

#include "attention_mask.cuh"

namespace attn {

constexpr int THREADS = 256;
constexpr int BR = 64;                       /* query rows per tile */
constexpr float LOG2E = 1.4426950408889634f;
constexpr float LN2 = 0.6931471805599453f;

/* Key columns per tile: 64 for D = 64; 32 for D = 128 keeps shared memory
 * (and the per-thread accumulators) the same size. */
template <int D> struct Tile {
    static constexpr int BC = D <= 64 ? 64 : 32;
    static constexpr int JC = BC / 16;  /* score columns per thread */
    static constexpr int JO = D / 64;   /* float4 output column groups per thread */
    static constexpr int LD = D + 4;    /* padded row of a [rows, D] tile */
    static constexpr int LDS = BC + 4;  /* padded row of a score tile */
};

struct Params {
    const float *q, *k, *v, *o, *lse, *dout, *delta;
    float *out, *lse_out, *dq, *dk, *dv, *delta_out;
    int tq, tk, d, dvd; /* dvd: v's head size */
    int causal;
    int64_t window;     /* > 0: sliding window (causal only) */
    int64_t off;        /* absolute position of query 0 (Tk - Tq when causal) */
    float scale;        /* softmax scale */
    int vec4;           /* d, dv multiples of 4 and 16-byte aligned pointers */
};

using attn_mask::key_range; /* attention_mask.cuh */
using attn_mask::query_range;
using attn_mask::visible;

/* dst[r * ld + c] = src[(row0 + r) * width + c] for r < rows, c < D; zero
 * outside [n_rows, width). */
template <int D>
__device__ __forceinline__ void load_tile(float *dst, int ld, const float *src, int64_t row0, int rows, int64_t n_rows,
                                          int width, int vec4) {
    const int tid = threadIdx.x;
    if (vec4) {
        for (int e = tid; e < rows * (D / 4); e += THREADS) {
            const int r = e / (D / 4), c = (e % (D / 4)) * 4;
            float4 x = {0.f, 0.f, 0.f, 0.f};
            if (row0 + r < n_rows && c < width) x = *reinterpret_cast<const float4 *>(src + (row0 + r) * width + c);
            *reinterpret_cast<float4 *>(dst + r * ld + c) = x;
        }
    } else {
        for (int e = tid; e < rows * D; e += THREADS) {
            const int r = e / D, c = e % D;
            dst[r * ld + c] = row0 + r < n_rows && c < width ? src[(row0 + r) * width + c] : 0.f;
        }
    }
}

/* Max and sum over the 16 lanes of a row group. */
__device__ __forceinline__ float group_max(float x) {
    for (int m = 8; m >= 1; m >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, m));
    return x;
}
__device__ __forceinline__ float group_sum(float x) {
    for (int m = 8; m >= 1; m >>= 1) x += __shfl_xor_sync(0xffffffffu, x, m);
    return x;
}

__device__ __forceinline__ float4 ld4(const float *p) { return *reinterpret_cast<const float4 *>(p); }

/* s[r][j] = sum_c A[ty*4 + r][c] B[tx + 16 j][c] over c < D, A and B tiles of stride LD. */
template <int D, int JC>
__device__ __forceinline__ void tile_dot(float (&s)[4][JC], const float *A, const float *B, int ty, int tx) {
    constexpr int LD = D + 4;
#pragma unroll
    for (int r = 0; r < 4; r++)
#pragma unroll
        for (int j = 0; j < JC; j++) s[r][j] = 0.f;
#pragma unroll 4
    for (int c = 0; c < D; c += 4) {
        float4 a[4], b[JC];
#pragma unroll
        for (int r = 0; r < 4; r++) a[r] = ld4(A + (ty * 4 + r) * LD + c);
#pragma unroll
        for (int j = 0; j < JC; j++) b[j] = ld4(B + (tx + 16 * j) * LD + c);
#pragma unroll
        for (int r = 0; r < 4; r++)
#pragma unroll
            for (int j = 0; j < JC; j++)
                s[r][j] += a[r].x * b[j].x + a[r].y * b[j].y + a[r].z * b[j].z + a[r].w * b[j].w;
    }
}

/* acc[r][jo*4 + e] += sum_k S[ty*4 + r][k] V[k][tx*4 + 64 jo + e] over k < BC;
 * S of stride LDS, V of stride ldv. */
template <int D, int BC>
__device__ __forceinline__ void tile_pv(float (&acc)[4][D / 16], const float *S, const float *V, int ldv, int ty,
                                        int tx) {
    constexpr int LDS = BC + 4, JO = D / 64;
#pragma unroll 2
    for (int k = 0; k < BC; k += 4) {
        float4 a[4];
#pragma unroll
        for (int r = 0; r < 4; r++) a[r] = ld4(S + (ty * 4 + r) * LDS + k);
#pragma unroll
        for (int e = 0; e < 4; e++) {
            float4 b[JO];
#pragma unroll
            for (int jo = 0; jo < JO; jo++) b[jo] = ld4(V + (k + e) * ldv + tx * 4 + 64 * jo);
#pragma unroll
            for (int r = 0; r < 4; r++) {
                const float w = e == 0 ? a[r].x : e == 1 ? a[r].y : e == 2 ? a[r].z : a[r].w;
#pragma unroll
                for (int jo = 0; jo < JO; jo++) {
                    acc[r][jo * 4 + 0] += w * b[jo].x;
                    acc[r][jo * 4 + 1] += w * b[jo].y;
                    acc[r][jo * 4 + 2] += w * b[jo].z;
                    acc[r][jo * 4 + 3] += w * b[jo].w;
                }
            }
        }
    }
}

/* ---- forward: out and the log-sum-exp of each row's scaled scores ------------------------ */

template <int D>
__global__ void __launch_bounds__(THREADS, 2) attn_fwd(Params p) {
    using T = Tile<D>;
    constexpr int BC = T::BC, JC = T::JC, LD = T::LD, LDS = T::LDS;
    float *sQ = ATTN_SMEM(), *sK = sQ + BR * LD, *sV = sK + BC * LD, *sP = sV + BC * D;
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const int n_qt = (p.tq + BR - 1) / BR;
    const int64_t q0 = (int64_t)(n_qt - 1 - (int)blockIdx.x) * BR; /* latest (heaviest under causal) tiles first */
    const int64_t bh = blockIdx.y;
    const float *q = p.q + bh * p.tq * p.d, *k = p.k + bh * p.tk * p.d, *v = p.v + bh * p.tk * p.dvd;
    const float sl2 = p.scale * LOG2E;

    load_tile<D>(sQ, LD, q, q0, BR, p.tq, p.d, p.vec4);
    int64_t k_lo, k_hi;
    key_range(p, q0, q0 + BR < p.tq ? q0 + BR : p.tq, &k_lo, &k_hi);

    float m[4], l[4], acc[4][D / 16];
#pragma unroll
    for (int r = 0; r < 4; r++) {
        m[r] = -INFINITY;
        l[r] = 0.f;
#pragma unroll
        for (int c = 0; c < D / 16; c++) acc[r][c] = 0.f;
    }
    for (int64_t k0 = k_lo / BC * BC; k0 < k_hi; k0 += BC) {
        __syncthreads(); /* the last tile's reads of sK, sV, sP are done */
        load_tile<D>(sK, LD, k, k0, BC, p.tk, p.d, p.vec4);
        load_tile<D>(sV, D, v, k0, BC, p.tk, p.dvd, p.vec4);
        __syncthreads();
        float s[4][JC];
        tile_dot<D, JC>(s, sQ, sK, ty, tx);
#pragma unroll
        for (int r = 0; r < 4; r++) {
            const int64_t qi = q0 + ty * 4 + r;
            float mx = -INFINITY;
#pragma unroll
            for (int j = 0; j < JC; j++) {
                s[r][j] = visible(p, qi, k0 + tx + 16 * j) ? s[r][j] * sl2 : -INFINITY;
                mx = fmaxf(mx, s[r][j]);
            }
            const float m_new = fmaxf(m[r], group_max(mx));
            const float m_use = m_new == -INFINITY ? 0.f : m_new; /* a row that has seen nothing yet */
            const float alpha = exp2f(m[r] - m_use);
            float sum = 0.f;
#pragma unroll
            for (int j = 0; j < JC; j++) {
                s[r][j] = exp2f(s[r][j] - m_use);
                sum += s[r][j];
                sP[(ty * 4 + r) * LDS + tx + 16 * j] = s[r][j];
            }
            l[r] = l[r] * alpha + group_sum(sum);
            m[r] = m_new;
#pragma unroll
            for (int c = 0; c < D / 16; c++) acc[r][c] *= alpha;
        }
        __syncthreads();
        tile_pv<D, BC>(acc, sP, sV, D, ty, tx);
    }
    float *out = p.out + bh * p.tq * p.dvd;
#pragma unroll
    for (int r = 0; r < 4; r++) {
        const int64_t qi = q0 + ty * 4 + r;
        if (qi >= p.tq) continue;
        const float inv = 1.f / l[r];
#pragma unroll
        for (int jo = 0; jo < D / 64; jo++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int c = tx * 4 + 64 * jo + e;
                if (c < p.dvd) out[qi * p.dvd + c] = acc[r][jo * 4 + e] * inv;
            }
        if (p.lse_out && tx == 0) p.lse_out[bh * p.tq + qi] = (m[r] + log2f(l[r])) * LN2;
    }
}

/* ---- backward ---------------------------------------------------------------------------- */

/* delta[row] = sum_c dout[row][c] out[row][c]: one warp per row. */
static __global__ void __launch_bounds__(THREADS) attn_delta(Params p, int64_t rows) { /* static: the header is in two .cu files */
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * (THREADS / 32) + (threadIdx.x >> 5);
    float s = 0.f;
    if (row < rows)
        for (int c = lane; c < p.dvd; c += 32) s += p.dout[row * p.dvd + c] * p.o[row * p.dvd + c];
    for (int m = 16; m >= 1; m >>= 1) s += __shfl_xor_sync(0xffffffffu, s, m);
    if (row < rows && lane == 0) p.delta_out[row] = s;
}

/* Per score tile: P = exp(scale s - lse) where visible, dS = P (dP - delta),
 * with s = Q K^T and dP = dO V^T; the thread's entries of both. */
template <int D, int JC>
__device__ __forceinline__ void probs_and_dscores(const Params &p, float (&pr)[4][JC], float (&ds)[4][JC],
                                                  const float *sQ, const float *sK, const float *sdO, const float *sV,
                                                  const float *sL, const float *sD, int64_t q0, int64_t k0, int ty,
                                                  int tx) {
    tile_dot<D, JC>(pr, sQ, sK, ty, tx);
    tile_dot<D, JC>(ds, sdO, sV, ty, tx);
    const float sl2 = p.scale * LOG2E;
#pragma unroll
    for (int r = 0; r < 4; r++) {
        const int64_t qi = q0 + ty * 4 + r;
        const float lse2 = sL[ty * 4 + r], dlt = sD[ty * 4 + r];
#pragma unroll
        for (int j = 0; j < JC; j++) {
            const bool ok = qi < p.tq && visible(p, qi, k0 + tx + 16 * j);
            pr[r][j] = ok ? exp2f(pr[r][j] * sl2 - lse2) : 0.f;
            ds[r][j] = pr[r][j] * (ds[r][j] - dlt);
        }
    }
}

/* lse (in log2 units) and delta of query rows [q0, q0 + BR), zero past Tq. */
__device__ __forceinline__ void load_row_stats(const Params &p, float *sL, float *sD, int64_t bh, int64_t q0) {
    const int tid = threadIdx.x;
    if (tid < BR) {
        const int64_t qi = q0 + tid;
        sL[tid] = qi < p.tq ? p.lse[bh * p.tq + qi] * LOG2E : 0.f;
        sD[tid] = qi < p.tq ? p.delta[bh * p.tq + qi] : 0.f;
    }
}

/* acc[kk][jo*4 + e] += sum_i S[i][ty*KPT + kk] B[i][tx*4 + 64 jo + e] over the BR rows i:
 * a transposed score tile times a [BR, D] tile (stride D + 4). */
template <int D, int BC>
__device__ __forceinline__ void accumulate_t(float (&acc)[BC / 16][D / 16], const float *S, const float *B, int ty,
                                             int tx) {
    constexpr int KPT = BC / 16, LDS = BC + 4, LD = D + 4, JO = D / 64;
#pragma unroll 4
    for (int i = 0; i < BR; i++) {
        float a[KPT];
#pragma unroll
        for (int kk = 0; kk < KPT; kk++) a[kk] = S[i * LDS + ty * KPT + kk];
#pragma unroll
        for (int jo = 0; jo < JO; jo++) {
            const float4 b = ld4(B + i * LD + tx * 4 + 64 * jo);
#pragma unroll
            for (int kk = 0; kk < KPT; kk++) {
                acc[kk][jo * 4 + 0] += a[kk] * b.x;
                acc[kk][jo * 4 + 1] += a[kk] * b.y;
                acc[kk][jo * 4 + 2] += a[kk] * b.z;
                acc[kk][jo * 4 + 3] += a[kk] * b.w;
            }
        }
    }
}

/* dK and dV of one key tile: loop over the query tiles that see it. */
template <int D>
__global__ void __launch_bounds__(THREADS) attn_bwd_dkdv(Params p) {
    using T = Tile<D>;
    constexpr int BC = T::BC, JC = T::JC, LD = T::LD, LDS = T::LDS, KPT = BC / 16, JO = T::JO;
    float *sK = ATTN_SMEM(), *sV = sK + BC * LD, *sQ = sV + BC * LD, *sdO = sQ + BR * LD, *sS = sdO + BR * LD;
    float *sL = sS + BR * LDS, *sD = sL + BR;
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const int64_t k0 = (int64_t)blockIdx.x * BC, bh = blockIdx.y;
    const float *q = p.q + bh * p.tq * p.d, *k = p.k + bh * p.tk * p.d, *v = p.v + bh * p.tk * p.dvd;
    const float *dout = p.dout + bh * p.tq * p.dvd;

    load_tile<D>(sK, LD, k, k0, BC, p.tk, p.d, p.vec4);
    load_tile<D>(sV, LD, v, k0, BC, p.tk, p.dvd, p.vec4);
    int64_t i_lo, i_hi;
    query_range(p, k0, k0 + BC < p.tk ? k0 + BC : p.tk, &i_lo, &i_hi);

    /* thread (ty, tx) accumulates keys ty * KPT + kk, columns tx * 4 + 64 jo + e */
    float adk[KPT][D / 16], adv[KPT][D / 16];
#pragma unroll
    for (int kk = 0; kk < KPT; kk++)
#pragma unroll
        for (int c = 0; c < D / 16; c++) adk[kk][c] = adv[kk][c] = 0.f;

    for (int64_t q0 = i_lo / BR * BR; q0 < i_hi; q0 += BR) {
        __syncthreads(); /* the last tile's reads are done */
        load_tile<D>(sQ, LD, q, q0, BR, p.tq, p.d, p.vec4);
        load_tile<D>(sdO, LD, dout, q0, BR, p.tq, p.dvd, p.vec4);
        load_row_stats(p, sL, sD, bh, q0);
        __syncthreads();
        float pr[4][JC], ds[4][JC];
        probs_and_dscores<D, JC>(p, pr, ds, sQ, sK, sdO, sV, sL, sD, q0, k0, ty, tx);
#pragma unroll
        for (int r = 0; r < 4; r++)
#pragma unroll
            for (int j = 0; j < JC; j++) sS[(ty * 4 + r) * LDS + tx + 16 * j] = pr[r][j];
        __syncthreads();
        accumulate_t<D, BC>(adv, sS, sdO, ty, tx); /* dV += P^T dO */
        __syncthreads();                            /* all reads of P are done before dS replaces it */
#pragma unroll
        for (int r = 0; r < 4; r++)
#pragma unroll
            for (int j = 0; j < JC; j++) sS[(ty * 4 + r) * LDS + tx + 16 * j] = ds[r][j];
        __syncthreads();
        accumulate_t<D, BC>(adk, sS, sQ, ty, tx); /* dK += dS^T Q (scaled at the end) */
    }
    float *dk = p.dk + bh * p.tk * p.d, *dv = p.dv + bh * p.tk * p.dvd;
#pragma unroll
    for (int kk = 0; kk < KPT; kk++) {
        const int64_t kj = k0 + ty * KPT + kk;
        if (kj >= p.tk) continue;
#pragma unroll
        for (int jo = 0; jo < JO; jo++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int c = tx * 4 + 64 * jo + e;
                if (c < p.d) dk[kj * p.d + c] = adk[kk][jo * 4 + e] * p.scale;
                if (c < p.dvd) dv[kj * p.dvd + c] = adv[kk][jo * 4 + e];
            }
    }
}

/* dQ of one query tile: loop over the key tiles it sees. */
template <int D>
__global__ void __launch_bounds__(THREADS) attn_bwd_dq(Params p) {
    using T = Tile<D>;
    constexpr int BC = T::BC, JC = T::JC, LD = T::LD, LDS = T::LDS;
    float *sQ = ATTN_SMEM(), *sdO = sQ + BR * LD, *sK = sdO + BR * LD, *sV = sK + BC * LD, *sS = sV + BC * LD;
    float *sL = sS + BR * LDS, *sD = sL + BR;
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const int n_qt = (p.tq + BR - 1) / BR;
    const int64_t q0 = (int64_t)(n_qt - 1 - (int)blockIdx.x) * BR, bh = blockIdx.y;
    const float *q = p.q + bh * p.tq * p.d, *k = p.k + bh * p.tk * p.d, *v = p.v + bh * p.tk * p.dvd;
    const float *dout = p.dout + bh * p.tq * p.dvd;

    load_tile<D>(sQ, LD, q, q0, BR, p.tq, p.d, p.vec4);
    load_tile<D>(sdO, LD, dout, q0, BR, p.tq, p.dvd, p.vec4);
    load_row_stats(p, sL, sD, bh, q0);
    int64_t k_lo, k_hi;
    key_range(p, q0, q0 + BR < p.tq ? q0 + BR : p.tq, &k_lo, &k_hi);

    float acc[4][D / 16];
#pragma unroll
    for (int r = 0; r < 4; r++)
#pragma unroll
        for (int c = 0; c < D / 16; c++) acc[r][c] = 0.f;
    for (int64_t k0 = k_lo / BC * BC; k0 < k_hi; k0 += BC) {
        __syncthreads();
        load_tile<D>(sK, LD, k, k0, BC, p.tk, p.d, p.vec4);
        load_tile<D>(sV, LD, v, k0, BC, p.tk, p.dvd, p.vec4);
        __syncthreads();
        float pr[4][JC], ds[4][JC];
        probs_and_dscores<D, JC>(p, pr, ds, sQ, sK, sdO, sV, sL, sD, q0, k0, ty, tx);
#pragma unroll
        for (int r = 0; r < 4; r++)
#pragma unroll
            for (int j = 0; j < JC; j++) sS[(ty * 4 + r) * LDS + tx + 16 * j] = ds[r][j];
        __syncthreads();
        tile_pv<D, BC>(acc, sS, sK, LD, ty, tx); /* dQ += dS K */
    }
    float *dq = p.dq + bh * p.tq * p.d;
#pragma unroll
    for (int r = 0; r < 4; r++) {
        const int64_t qi = q0 + ty * 4 + r;
        if (qi >= p.tq) continue;
#pragma unroll
        for (int jo = 0; jo < D / 64; jo++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int c = tx * 4 + 64 * jo + e;
                if (c < p.d) dq[qi * p.d + c] = acc[r][jo * 4 + e] * p.scale;
            }
    }
}

/* Dynamic shared memory of each kernel, bytes. */
template <int D> constexpr int fwd_smem() {
    return (int)sizeof(float) * (BR * Tile<D>::LD + Tile<D>::BC * Tile<D>::LD + Tile<D>::BC * D + BR * Tile<D>::LDS);
}
template <int D> constexpr int bwd_smem() {
    return (int)sizeof(float) * (2 * BR * Tile<D>::LD + 2 * Tile<D>::BC * Tile<D>::LD + BR * Tile<D>::LDS + 2 * BR);
}

}  // namespace attn

#endif
