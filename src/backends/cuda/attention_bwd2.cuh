/* The double backward of attention, fused (f32): the gradient of
 *   Phi = <Uq, dQ> + <Uk, dK> + <Uv, dV>
 * with respect to q, k, v and dout (= G), where (dQ, dK, dV) is attention's
 * first-order backward and (Uq, Uk, Uv) the cotangents that reach it. This is
 * what differentiating through an inner gradient step needs (TTT-E2E's outer
 * loop), and nothing of size Tq x Tk is stored: every score tile is recomputed
 * from lse, as in the first-order kernels (attention_kernels.cuh, whose tile
 * helpers, masking and layout this file uses).
 *
 * With S = scale Q K^T, P = softmax(S) (masked), dP = G V^T, delta = rowsum(P dP)
 * (= rowsum(G O)) and dS = P (dP - delta), Phi = <dS, A> + <P, B> where
 *   A = scale (Uq K^T + Q Uk^T),   B = G Uv^T.
 * Differentiating (a = rowsum(P A), c = rowsum(P H)):
 *   E = P (A - a)                          d Phi / d dP
 *   H = (dP - delta) A - dP a + B          d Phi / d P
 *   F = P (H - c)                          d Phi / d S
 *   gQ = scale (dS Uk + F K)     gK = scale (dS^T Uq + F^T Q)
 *   gV = E^T G                   gG = E V + P Uv
 * and c = rowsum(P dP A) - 2 a delta + rowsum(P B), so one pass over the key
 * tiles (bwd2_rows) gives both row statistics; then a kernel per query tile
 * (gQ, gG) and one per key tile (gK, gV), each recomputing its tiles: no
 * atomics, the same bits on every run. Device code only (emulator-testable). */
#ifndef TTT_ATTENTION_BWD2_CUH
#define TTT_ATTENTION_BWD2_CUH

#include "attention_kernels.cuh"

namespace attn {

struct Bwd2 {
    const float *uq, *uk, *uv; /* cotangents of dq [BH, Tq, d], dk [BH, Tk, d], dv [BH, Tk, dv] */
    float *ra, *rc;            /* row statistics a and c, [BH, Tq] each (written by bwd2_rows) */
    float *gq, *gk, *gv, *gg;  /* outputs: shapes of q, k, v and dout */
};

/* One score tile's P, dP, A and B (the thread's entries). */
template <int D, int JC>
__device__ __forceinline__ void bwd2_tile(const Params &p, float (&pr)[4][JC], float (&dp)[4][JC], float (&A)[4][JC],
                                          float (&B)[4][JC], const float *sQ, const float *sG, const float *sUq,
                                          const float *sK, const float *sV, const float *sUk, const float *sUv,
                                          const float *sL, int64_t q0, int64_t k0, int ty, int tx) {
    float t[4][JC];
    tile_dot<D, JC>(pr, sQ, sK, ty, tx);
    tile_dot<D, JC>(dp, sG, sV, ty, tx);
    tile_dot<D, JC>(A, sUq, sK, ty, tx);
    tile_dot<D, JC>(t, sQ, sUk, ty, tx);
    tile_dot<D, JC>(B, sG, sUv, ty, tx);
    const float sl2 = p.scale * LOG2E;
#pragma unroll
    for (int r = 0; r < 4; r++) {
        const int64_t qi = q0 + ty * 4 + r;
        const float lse2 = sL[ty * 4 + r];
#pragma unroll
        for (int j = 0; j < JC; j++) {
            const bool ok = qi < p.tq && visible(p, qi, k0 + tx + 16 * j);
            pr[r][j] = ok ? exp2f(pr[r][j] * sl2 - lse2) : 0.f;
            A[r][j] = (A[r][j] + t[r][j]) * p.scale;
        }
    }
}

/* lse (log2 units), delta, a and c of query rows [q0, q0 + BR); zero past Tq.
 * with_ac = 0 before bwd2_rows has written a and c. */
__device__ __forceinline__ void load_row_stats2(const Params &p, const Bwd2 &b, float *sL, float *sD, float *sA,
                                                float *sC, int64_t bh, int64_t q0, int with_ac) {
    const int tid = threadIdx.x;
    if (tid < BR) {
        const int64_t qi = q0 + tid, at = bh * p.tq + qi;
        const bool in = qi < p.tq;
        sL[tid] = in ? p.lse[at] * LOG2E : 0.f;
        sD[tid] = in ? p.delta[at] : 0.f;
        if (with_ac) {
            sA[tid] = in ? b.ra[at] : 0.f;
            sC[tid] = in ? b.rc[at] : 0.f;
        }
    }
}

/* Row statistics a = rowsum(P A) and c = rowsum(P dP A) - 2 a delta + rowsum(P B) of one query tile. */
template <int D>
__global__ void __launch_bounds__(THREADS) attn_bwd2_rows(Params p, Bwd2 b) {
    using T = Tile<D>;
    constexpr int BC = T::BC, JC = T::JC, LD = T::LD;
    float *sQ = ATTN_SMEM(), *sG = sQ + BR * LD, *sUq = sG + BR * LD, *sK = sUq + BR * LD, *sV = sK + BC * LD;
    float *sUk = sV + BC * LD, *sUv = sUk + BC * LD, *sL = sUv + BC * LD, *sD = sL + BR;
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const int64_t q0 = (int64_t)blockIdx.x * BR, bh = blockIdx.y;
    const float *q = p.q + bh * p.tq * p.d, *g = p.dout + bh * p.tq * p.dvd, *uq = b.uq + bh * p.tq * p.d;
    const float *k = p.k + bh * p.tk * p.d, *v = p.v + bh * p.tk * p.dvd;
    const float *uk = b.uk + bh * p.tk * p.d, *uv = b.uv + bh * p.tk * p.dvd;
    load_tile<D>(sQ, LD, q, q0, BR, p.tq, p.d, p.vec4);
    load_tile<D>(sG, LD, g, q0, BR, p.tq, p.dvd, p.vec4);
    load_tile<D>(sUq, LD, uq, q0, BR, p.tq, p.d, p.vec4);
    load_row_stats2(p, b, sL, sD, NULL, NULL, bh, q0, 0);
    int64_t k_lo, k_hi;
    key_range(p, q0, q0 + BR < p.tq ? q0 + BR : p.tq, &k_lo, &k_hi);
    float sa[4] = {0.f, 0.f, 0.f, 0.f}, sdpa[4] = {0.f, 0.f, 0.f, 0.f}, spb[4] = {0.f, 0.f, 0.f, 0.f};
    for (int64_t k0 = k_lo / BC * BC; k0 < k_hi; k0 += BC) {
        __syncthreads();
        load_tile<D>(sK, LD, k, k0, BC, p.tk, p.d, p.vec4);
        load_tile<D>(sV, LD, v, k0, BC, p.tk, p.dvd, p.vec4);
        load_tile<D>(sUk, LD, uk, k0, BC, p.tk, p.d, p.vec4);
        load_tile<D>(sUv, LD, uv, k0, BC, p.tk, p.dvd, p.vec4);
        __syncthreads();
        float pr[4][JC], dp[4][JC], A[4][JC], B[4][JC];
        bwd2_tile<D, JC>(p, pr, dp, A, B, sQ, sG, sUq, sK, sV, sUk, sUv, sL, q0, k0, ty, tx);
#pragma unroll
        for (int r = 0; r < 4; r++) {
            float x = 0.f, y = 0.f, z = 0.f;
#pragma unroll
            for (int j = 0; j < JC; j++) {
                x += pr[r][j] * A[r][j];
                y += pr[r][j] * dp[r][j] * A[r][j];
                z += pr[r][j] * B[r][j];
            }
            sa[r] += group_sum(x);
            sdpa[r] += group_sum(y);
            spb[r] += group_sum(z);
        }
    }
    if (tx == 0)
#pragma unroll
        for (int r = 0; r < 4; r++) {
            const int64_t qi = q0 + ty * 4 + r;
            if (qi >= p.tq) continue;
            b.ra[bh * p.tq + qi] = sa[r];
            b.rc[bh * p.tq + qi] = sdpa[r] - 2.f * sa[r] * sD[ty * 4 + r] + spb[r];
        }
}

/* dS, E, F and P of a tile, from P, dP, A, B and the row statistics. */
template <int JC>
__device__ __forceinline__ void bwd2_mix(float (&pr)[4][JC], float (&dp)[4][JC], float (&A)[4][JC], float (&B)[4][JC],
                                         const float *sD, const float *sA, const float *sC, int ty) {
#pragma unroll
    for (int r = 0; r < 4; r++) {
        const float dl = sD[ty * 4 + r], a = sA[ty * 4 + r], c = sC[ty * 4 + r];
#pragma unroll
        for (int j = 0; j < JC; j++) {
            const float P = pr[r][j], dP = dp[r][j], Aij = A[r][j];
            const float h = (dP - dl) * Aij - dP * a + B[r][j];
            dp[r][j] = P * (dP - dl); /* dS */
            A[r][j] = P * (Aij - a);  /* E */
            B[r][j] = P * (h - c);    /* F */
        }
    }
}

template <int JC, int LDS>
__device__ __forceinline__ void store_scores(float *s, const float (&x)[4][JC], int ty, int tx) {
#pragma unroll
    for (int r = 0; r < 4; r++)
#pragma unroll
        for (int j = 0; j < JC; j++) s[(ty * 4 + r) * LDS + tx + 16 * j] = x[r][j];
}

/* gQ and gG of one query tile: loop over the key tiles it sees. */
template <int D>
__global__ void __launch_bounds__(THREADS) attn_bwd2_q(Params p, Bwd2 b) {
    using T = Tile<D>;
    constexpr int BC = T::BC, JC = T::JC, LD = T::LD, LDS = T::LDS;
    float *sQ = ATTN_SMEM(), *sG = sQ + BR * LD, *sUq = sG + BR * LD, *sK = sUq + BR * LD, *sV = sK + BC * LD;
    float *sUk = sV + BC * LD, *sUv = sUk + BC * LD, *sS1 = sUv + BC * LD, *sS2 = sS1 + BR * LDS;
    float *sL = sS2 + BR * LDS, *sD = sL + BR, *sA = sD + BR, *sC = sA + BR;
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const int n_qt = (p.tq + BR - 1) / BR;
    const int64_t q0 = (int64_t)(n_qt - 1 - (int)blockIdx.x) * BR, bh = blockIdx.y;
    const float *q = p.q + bh * p.tq * p.d, *g = p.dout + bh * p.tq * p.dvd, *uq = b.uq + bh * p.tq * p.d;
    const float *k = p.k + bh * p.tk * p.d, *v = p.v + bh * p.tk * p.dvd;
    const float *uk = b.uk + bh * p.tk * p.d, *uv = b.uv + bh * p.tk * p.dvd;
    load_tile<D>(sQ, LD, q, q0, BR, p.tq, p.d, p.vec4);
    load_tile<D>(sG, LD, g, q0, BR, p.tq, p.dvd, p.vec4);
    load_tile<D>(sUq, LD, uq, q0, BR, p.tq, p.d, p.vec4);
    load_row_stats2(p, b, sL, sD, sA, sC, bh, q0, 1);
    int64_t k_lo, k_hi;
    key_range(p, q0, q0 + BR < p.tq ? q0 + BR : p.tq, &k_lo, &k_hi);
    float accq[4][D / 16], accg[4][D / 16];
#pragma unroll
    for (int r = 0; r < 4; r++)
#pragma unroll
        for (int c = 0; c < D / 16; c++) accq[r][c] = accg[r][c] = 0.f;
    for (int64_t k0 = k_lo / BC * BC; k0 < k_hi; k0 += BC) {
        __syncthreads();
        load_tile<D>(sK, LD, k, k0, BC, p.tk, p.d, p.vec4);
        load_tile<D>(sV, LD, v, k0, BC, p.tk, p.dvd, p.vec4);
        load_tile<D>(sUk, LD, uk, k0, BC, p.tk, p.d, p.vec4);
        load_tile<D>(sUv, LD, uv, k0, BC, p.tk, p.dvd, p.vec4);
        __syncthreads();
        float pr[4][JC], dp[4][JC], A[4][JC], B[4][JC];
        bwd2_tile<D, JC>(p, pr, dp, A, B, sQ, sG, sUq, sK, sV, sUk, sUv, sL, q0, k0, ty, tx);
        bwd2_mix<JC>(pr, dp, A, B, sD, sA, sC, ty); /* dp = dS, A = E, B = F */
        store_scores<JC, LDS>(sS1, dp, ty, tx);
        store_scores<JC, LDS>(sS2, B, ty, tx);
        __syncthreads();
        tile_pv<D, BC>(accq, sS1, sUk, LD, ty, tx); /* gQ += dS Uk */
        tile_pv<D, BC>(accq, sS2, sK, LD, ty, tx);  /* gQ += F K */
        __syncthreads();
        store_scores<JC, LDS>(sS1, A, ty, tx);
        store_scores<JC, LDS>(sS2, pr, ty, tx);
        __syncthreads();
        tile_pv<D, BC>(accg, sS1, sV, LD, ty, tx);  /* gG += E V */
        tile_pv<D, BC>(accg, sS2, sUv, LD, ty, tx); /* gG += P Uv */
    }
    float *gq = b.gq + bh * p.tq * p.d, *gg = b.gg + bh * p.tq * p.dvd;
#pragma unroll
    for (int r = 0; r < 4; r++) {
        const int64_t qi = q0 + ty * 4 + r;
        if (qi >= p.tq) continue;
#pragma unroll
        for (int jo = 0; jo < D / 64; jo++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int c = tx * 4 + 64 * jo + e;
                if (c < p.d) gq[qi * p.d + c] = accq[r][jo * 4 + e] * p.scale;
                if (c < p.dvd) gg[qi * p.dvd + c] = accg[r][jo * 4 + e];
            }
    }
}

/* gK and gV of one key tile: loop over the query tiles that see it. */
template <int D>
__global__ void __launch_bounds__(THREADS) attn_bwd2_kv(Params p, Bwd2 b) {
    using T = Tile<D>;
    constexpr int BC = T::BC, JC = T::JC, LD = T::LD, LDS = T::LDS, KPT = BC / 16, JO = T::JO;
    float *sK = ATTN_SMEM(), *sV = sK + BC * LD, *sUk = sV + BC * LD, *sUv = sUk + BC * LD, *sQ = sUv + BC * LD;
    float *sG = sQ + BR * LD, *sUq = sG + BR * LD, *sS = sUq + BR * LD;
    float *sL = sS + BR * LDS, *sD = sL + BR, *sA = sD + BR, *sC = sA + BR;
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const int64_t k0 = (int64_t)blockIdx.x * BC, bh = blockIdx.y;
    const float *q = p.q + bh * p.tq * p.d, *g = p.dout + bh * p.tq * p.dvd, *uq = b.uq + bh * p.tq * p.d;
    const float *k = p.k + bh * p.tk * p.d, *v = p.v + bh * p.tk * p.dvd;
    const float *uk = b.uk + bh * p.tk * p.d, *uv = b.uv + bh * p.tk * p.dvd;
    load_tile<D>(sK, LD, k, k0, BC, p.tk, p.d, p.vec4);
    load_tile<D>(sV, LD, v, k0, BC, p.tk, p.dvd, p.vec4);
    load_tile<D>(sUk, LD, uk, k0, BC, p.tk, p.d, p.vec4);
    load_tile<D>(sUv, LD, uv, k0, BC, p.tk, p.dvd, p.vec4);
    int64_t i_lo, i_hi;
    query_range(p, k0, k0 + BC < p.tk ? k0 + BC : p.tk, &i_lo, &i_hi);
    float adk[KPT][D / 16], adv[KPT][D / 16];
#pragma unroll
    for (int kk = 0; kk < KPT; kk++)
#pragma unroll
        for (int c = 0; c < D / 16; c++) adk[kk][c] = adv[kk][c] = 0.f;
    for (int64_t q0 = i_lo / BR * BR; q0 < i_hi; q0 += BR) {
        __syncthreads();
        load_tile<D>(sQ, LD, q, q0, BR, p.tq, p.d, p.vec4);
        load_tile<D>(sG, LD, g, q0, BR, p.tq, p.dvd, p.vec4);
        load_tile<D>(sUq, LD, uq, q0, BR, p.tq, p.d, p.vec4);
        load_row_stats2(p, b, sL, sD, sA, sC, bh, q0, 1);
        __syncthreads();
        float pr[4][JC], dp[4][JC], A[4][JC], B[4][JC];
        bwd2_tile<D, JC>(p, pr, dp, A, B, sQ, sG, sUq, sK, sV, sUk, sUv, sL, q0, k0, ty, tx);
        bwd2_mix<JC>(pr, dp, A, B, sD, sA, sC, ty);
        store_scores<JC, LDS>(sS, dp, ty, tx);
        __syncthreads();
        accumulate_t<D, BC>(adk, sS, sUq, ty, tx); /* gK += dS^T Uq */
        __syncthreads();
        store_scores<JC, LDS>(sS, B, ty, tx);
        __syncthreads();
        accumulate_t<D, BC>(adk, sS, sQ, ty, tx); /* gK += F^T Q */
        __syncthreads();
        store_scores<JC, LDS>(sS, A, ty, tx);
        __syncthreads();
        accumulate_t<D, BC>(adv, sS, sG, ty, tx); /* gV += E^T G */
    }
    float *gk = b.gk + bh * p.tk * p.d, *gv = b.gv + bh * p.tk * p.dvd;
#pragma unroll
    for (int kk = 0; kk < KPT; kk++) {
        const int64_t kj = k0 + ty * KPT + kk;
        if (kj >= p.tk) continue;
#pragma unroll
        for (int jo = 0; jo < JO; jo++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int c = tx * 4 + 64 * jo + e;
                if (c < p.d) gk[kj * p.d + c] = adk[kk][jo * 4 + e] * p.scale;
                if (c < p.dvd) gv[kj * p.dvd + c] = adv[kk][jo * 4 + e];
            }
    }
}

/* Dynamic shared memory, bytes: three [BR, D] tiles, four [BC, D] tiles, score tiles and row stats. */
template <int D> constexpr int bwd2_rows_smem() {
    return (int)sizeof(float) * (3 * BR * Tile<D>::LD + 4 * Tile<D>::BC * Tile<D>::LD + 2 * BR);
}
template <int D> constexpr int bwd2_q_smem() {
    return (int)sizeof(float) * (3 * BR * Tile<D>::LD + 4 * Tile<D>::BC * Tile<D>::LD + 2 * BR * Tile<D>::LDS + 4 * BR);
}
template <int D> constexpr int bwd2_kv_smem() {
    return (int)sizeof(float) * (3 * BR * Tile<D>::LD + 4 * Tile<D>::BC * Tile<D>::LD + BR * Tile<D>::LDS + 4 * BR);
}

}  // namespace attn

#endif
