/* The double backward of attention in bf16 on the tensor cores: the gradients
 * gQ, gK, gV, gG of Phi = <Uq, dQ> + <Uk, dK> + <Uv, dV> with respect to q, k,
 * v and dout (= G). The math and the three-kernel structure are those of the
 * f32 kernels (attention_bwd2.cuh, whose header comment derives them):
 *   S = scale Q K^T, P = exp(S - lse) (masked), dP = G V^T, delta (given),
 *   A = scale (Uq K^T + Q Uk^T), B = G Uv^T,
 *   a = rowsum(P A), c = rowsum(P dP A) - 2 a delta + rowsum(P B),
 *   dS = P (dP - delta), E = P (A - a), F = P ((dP - delta) A - dP a + B - c),
 *   gQ = scale (dS Uk + F K), gK = scale (dS^T Uq + F^T Q), gV = E^T G, gG = E V + P Uv.
 * bwd2_rows (per query tile) writes a and c; bwd2_q (per query tile) gQ and gG;
 * bwd2_kv (per key tile) gK and gV. No atomics: two runs give the same bits.
 *
 * The instructions, tiles and conventions are attention_bf16.cuh's (mma.sync
 * m16n8k16 bf16 -> f32, ldmatrix / ldmatrix.trans from shared tiles padded by 8
 * elements, cp.async double buffering, the masking of attention_mask.cuh, the
 * A-fragment holder AFrags); this file only adds the kernels. Each warp owns 16
 * rows of its block's tile (queries in bwd2_rows and bwd2_q, keys in bwd2_kv) and
 * walks the other side's tiles (BT rows, double buffered) SC columns at a time:
 * the four score-shaped tiles (S, dP, A, B, or their transposes in bwd2_kv) are
 * 5 products with the warp's A fragments (held in registers with HOLD, else
 * reloaded) against B fragments of the other side's rows; they are combined in
 * registers, and the results (dS, E, F, P) are rounded to bf16 as the A operands
 * of the output products (as FlashAttention-2 does with P), which take the other
 * side's tiles as B operands through ldmatrix.trans. Every accumulator and row
 * statistic is f32. A warp skips the SC-column chunks that none of its rows can
 * see (warp-uniform: no barrier inside).
 *
 * Products per tile pair: bwd2_rows 5, bwd2_q 9, bwd2_kv 8 (the f32 kernels'
 * count; the first-order backward has 7 and the forward 2).
 *
 * Layout: q, k, v, dout, uq, uk, uv, gq, gk, gv, gg [BH, T, D] bf16, dense,
 * D = 64 or 128 (v's head size equals q's); lse (natural log), delta, a, c
 * [BH, Tq] f32. Device code only, so dev/cuda/emu.h can run it; the launchers
 * are in attention_bwd2.cu. The includer defines ATTN_SMEM() (attention_bf16.cuh). */
#ifndef TTT_ATTENTION_BWD2_BF16_CUH
#define TTT_ATTENTION_BWD2_BF16_CUH

#include "attention_bf16.cuh"

namespace attnbf {

struct Bwd2 {
    const uint16_t *uq, *uk, *uv; /* bf16 cotangents of dq [BH, Tq, D], dk and dv [BH, Tk, D] */
    float *ra, *rc;               /* row statistics a and c [BH, Tq] (written by bwd2_rows) */
    uint16_t *gq, *gk, *gv, *gg;  /* outputs (bf16): the shapes of q, k, v and dout */
};

/* A configuration: NW warps of 16 own rows, the other side's tiles of BT rows (double buffered),
 * SC columns at a time per warp. */
template <int D, int NW, int BT, int SC> struct B2 {
    static constexpr int BR = 16 * NW, THREADS = 32 * NW, LD = D + 8;
    /* bwd2_rows, bwd2_q: Q, dO, Uq; K, V, Uk, Uv x2 */
    static constexpr int SMEM_Q = (3 * BR + 8 * BT) * LD * 2;
    /* bwd2_kv: K, V, Uk, Uv; Q, dO, Uq x2; lse, delta, a, c x2 */
    static constexpr int SMEM_KV = (4 * BR + 6 * BT) * LD * 2 + 8 * BT * 4;
    static_assert(SC % 16 == 0 && BT % SC == 0, "SC: whole 16-column steps; BT: whole SC chunks");
};

/* ---- tile products ---------------------------------------------------------------------------------------- */

/* acc[n] += a x (rows 8n .. 8n + 7 of c)^T for n < NT: c points at the chunk's first row, k-step's column. */
template <int NT>
__device__ __forceinline__ void mma_nt(float (&acc)[NT][4], const uint32_t (&a)[4], const uint16_t *c, int ld, int lane) {
#pragma unroll
    for (int np = 0; np < NT / 2; np++) {
        uint32_t b[4];
        ldsm4(b, c + np * 16 * ld + b_off(lane, ld));
        mma(acc[2 * np], a, b[0], b[1]);
        mma(acc[2 * np + 1], a, b[2], b[3]);
    }
}
/* The same B fragments for two A operands. */
template <int NT>
__device__ __forceinline__ void mma_nt2(float (&acc0)[NT][4], const uint32_t (&a0)[4], float (&acc1)[NT][4],
                                        const uint32_t (&a1)[4], const uint16_t *c, int ld, int lane) {
#pragma unroll
    for (int np = 0; np < NT / 2; np++) {
        uint32_t b[4];
        ldsm4(b, c + np * 16 * ld + b_off(lane, ld));
        mma(acc0[2 * np], a0, b[0], b[1]);
        mma(acc0[2 * np + 1], a0, b[2], b[3]);
        mma(acc1[2 * np], a1, b[0], b[1]);
        mma(acc1[2 * np + 1], a1, b[2], b[3]);
    }
}
/* acc[n] += a x c[0..16)[8n .. 8n + 7] for n < ND (c row-major [k][n], loaded transposed; c at the k-step's row). */
template <int ND>
__device__ __forceinline__ void mma_nn(float (&acc)[ND][4], const uint32_t (&a)[4], const uint16_t *c, int ld, int lane) {
#pragma unroll
    for (int dp = 0; dp < ND / 2; dp++) {
        uint32_t b[4];
        ldsm4t(b, c + dp * 16 + a_off(lane, ld));
        mma(acc[2 * dp], a, b[0], b[1]);
        mma(acc[2 * dp + 1], a, b[2], b[3]);
    }
}

template <int NT> __device__ __forceinline__ void zero4(float (&x)[NT][4]) {
#pragma unroll
    for (int n = 0; n < NT; n++)
#pragma unroll
        for (int i = 0; i < 4; i++) x[n][i] = 0.f;
}

/* Query orientation (bwd2_rows, bwd2_q): the warp's 16 queries by SC keys of the chunk at cK (etc.):
 *   s = Q K^T, dp = G V^T, a = Uq K^T + Q Uk^T (unscaled), b = G Uv^T. */
template <int D, int SC, bool HOLD>
__device__ __forceinline__ void scores_q(float (&s)[SC / 8][4], float (&dp)[SC / 8][4], float (&a)[SC / 8][4],
                                         float (&b)[SC / 8][4], AFrags<D, 1, HOLD> &fq, AFrags<D, 1, HOLD> &fg,
                                         AFrags<D, 1, HOLD> &fu, const uint16_t *sQ, const uint16_t *sG,
                                         const uint16_t *sUq, const uint16_t *cK, const uint16_t *cV,
                                         const uint16_t *cUk, const uint16_t *cUv, int warp, int lane) {
    constexpr int LD = D + 8;
    zero4(s), zero4(dp), zero4(a), zero4(b);
#pragma unroll
    for (int ks = 0; ks < D / 16; ks++) {
        uint32_t aq[4], ag[4], au[4];
        fq.get(aq, sQ, warp, lane, 0, ks), fg.get(ag, sG, warp, lane, 0, ks), fu.get(au, sUq, warp, lane, 0, ks);
        mma_nt2<SC / 8>(s, aq, a, au, cK + ks * 16, LD, lane);
        mma_nt<SC / 8>(dp, ag, cV + ks * 16, LD, lane);
        mma_nt<SC / 8>(a, aq, cUk + ks * 16, LD, lane);
        mma_nt<SC / 8>(b, ag, cUv + ks * 16, LD, lane);
    }
}

/* Key orientation (bwd2_kv): the warp's 16 keys by SC queries of the chunk at cQ (etc.):
 *   s = K Q^T, dp = V G^T, a = Uk Q^T + K Uq^T (unscaled), b = Uv G^T. */
template <int D, int SC, bool HOLD>
__device__ __forceinline__ void scores_k(float (&s)[SC / 8][4], float (&dp)[SC / 8][4], float (&a)[SC / 8][4],
                                         float (&b)[SC / 8][4], AFrags<D, 1, HOLD> &fk, AFrags<D, 1, HOLD> &fv,
                                         AFrags<D, 1, HOLD> &fuk, AFrags<D, 1, HOLD> &fuv, const uint16_t *sK,
                                         const uint16_t *sV, const uint16_t *sUk, const uint16_t *sUv,
                                         const uint16_t *cQ, const uint16_t *cG, const uint16_t *cUq, int warp,
                                         int lane) {
    constexpr int LD = D + 8;
    zero4(s), zero4(dp), zero4(a), zero4(b);
#pragma unroll
    for (int ks = 0; ks < D / 16; ks++) {
        uint32_t ak[4], av[4], auk[4], auv[4];
        fk.get(ak, sK, warp, lane, 0, ks), fv.get(av, sV, warp, lane, 0, ks);
        fuk.get(auk, sUk, warp, lane, 0, ks), fuv.get(auv, sUv, warp, lane, 0, ks);
        mma_nt2<SC / 8>(s, ak, a, auk, cQ + ks * 16, LD, lane);
        mma_nt2<SC / 8>(dp, av, b, auv, cG + ks * 16, LD, lane);
        mma_nt<SC / 8>(a, ak, cUq + ks * 16, LD, lane);
    }
}

/* Whether some of queries [qw, qw + 16) sees some of keys [kc, kc + n) (query orientation). */
__device__ __forceinline__ bool sees_keys(const Params &p, int64_t qw, int64_t kc, int n) {
    if (qw >= p.tq) return false;
    int64_t lo, hi;
    key_range(p, qw, qw + 16 < p.tq ? qw + 16 : p.tq, &lo, &hi);
    return kc < hi && kc + n > lo;
}
/* Whether some of keys [kw, kw + 16) is seen by some of queries [qc, qc + n) (key orientation). */
__device__ __forceinline__ bool sees_queries(const Params &p, int64_t kw, int64_t qc, int n) {
    if (kw >= p.tk) return false;
    int64_t lo, hi;
    query_range(p, kw, kw + 16 < p.tk ? kw + 16 : p.tk, &lo, &hi);
    return hi > lo && qc < hi && qc + n > lo;
}

/* One key tile's K, V, Uk, Uv rows (query-orientation kernels; the caller commits). */
template <int D, int BT, int T>
__device__ __forceinline__ void load_keys(const Params &p, uint16_t *dK, uint16_t *dV, uint16_t *dUk, uint16_t *dUv,
                                          const uint16_t *k, const uint16_t *v, const uint16_t *uk,
                                          const uint16_t *uv, int64_t k0) {
    load_rows<D, BT, T>(dK, k, k0, p.tk, p.aligned);
    load_rows<D, BT, T>(dV, v, k0, p.tk, p.aligned);
    load_rows<D, BT, T>(dUk, uk, k0, p.tk, p.aligned);
    load_rows<D, BT, T>(dUv, uv, k0, p.tk, p.aligned);
}

/* ---- row statistics a and c, per query tile ------------------------------------------------------------------ */

template <int D, int NW, int BT, int SC, int MINB, bool HOLD>
__global__ void __launch_bounds__(32 * NW, MINB) bwd2_rows(Params p, Bwd2 bw) {
    using C = B2<D, NW, BT, SC>;
    constexpr int BR = C::BR, T = C::THREADS, LD = C::LD, NT = SC / 8;
    uint16_t *sQ = smem16(), *sG = sQ + BR * LD, *sUq = sG + BR * LD, *sK = sUq + BR * LD;
    uint16_t *sV = sK + 2 * BT * LD, *sUk = sV + 2 * BT * LD, *sUv = sUk + 2 * BT * LD;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    const int n_qt = (p.tq + BR - 1) / BR;
    const int64_t q0 = (int64_t)(n_qt - 1 - (int)blockIdx.x) * BR, bh = blockIdx.y; /* heaviest tiles first */
    const int64_t qw = q0 + warp * 16;
    const uint16_t *q = p.q + bh * p.tq * D, *gd = p.dout + bh * p.tq * D, *uq = bw.uq + bh * p.tq * D;
    const uint16_t *k = p.k + bh * p.tk * D, *v = p.v + bh * p.tk * D;
    const uint16_t *uk = bw.uk + bh * p.tk * D, *uv = bw.uv + bh * p.tk * D;
    const float sl2 = p.scale * LOG2E;
    int64_t k_lo, k_hi;
    key_range(p, q0, q0 + BR < p.tq ? q0 + BR : p.tq, &k_lo, &k_hi);
    const int64_t kt0 = k_lo / BT, kt1 = (k_hi + BT - 1) / BT; /* never empty: each query sees a key */

    load_rows<D, BR, T>(sQ, q, q0, p.tq, p.aligned);
    load_rows<D, BR, T>(sG, gd, q0, p.tq, p.aligned);
    load_rows<D, BR, T>(sUq, uq, q0, p.tq, p.aligned);
    load_keys<D, BT, T>(p, sK, sV, sUk, sUv, k, v, uk, uv, kt0 * BT);
    cp_commit();
    float lse2[2], dl[2], x[2] = {0.f, 0.f}, y[2] = {0.f, 0.f}, z[2] = {0.f, 0.f};
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int64_t qi = qw + g + 8 * h;
        lse2[h] = qi < p.tq ? p.lse[bh * p.tq + qi] * LOG2E : 0.f;
        dl[h] = qi < p.tq ? p.delta[bh * p.tq + qi] : 0.f;
    }
    AFrags<D, 1, HOLD> fq, fg, fu;

    for (int64_t kt = kt0; kt < kt1; kt++) {
        const int buf = (int)((kt - kt0) & 1);
        if (kt + 1 < kt1) {
            const int o = (buf ^ 1) * BT * LD;
            load_keys<D, BT, T>(p, sK + o, sV + o, sUk + o, sUv + o, k, v, uk, uv, (kt + 1) * BT);
            cp_commit();
            cp_wait<1>();
        } else {
            cp_wait<0>();
        }
        __syncthreads();
        if (kt == kt0) fq.load(sQ, warp, lane), fg.load(sG, warp, lane), fu.load(sUq, warp, lane);
        const int ob = buf * BT * LD;
#pragma unroll 1
        for (int c0 = 0; c0 < BT; c0 += SC) {
            const int64_t kc = kt * BT + c0;
            if (!sees_keys(p, qw, kc, SC)) continue;
            float s[NT][4], dp[NT][4], a[NT][4], b[NT][4];
            const int oc = ob + c0 * LD;
            scores_q<D, SC, HOLD>(s, dp, a, b, fq, fg, fu, sQ, sG, sUq, sK + oc, sV + oc, sUk + oc, sUv + oc, warp, lane);
            if (needs_mask(p, qw, 16, kc, SC)) mask_q(p, s, qw, kc, g, t4);
#pragma unroll
            for (int h = 0; h < 2; h++) {
#pragma unroll
                for (int n = 0; n < NT; n++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        const int i = 2 * h + e;
                        const float pv = ex2(fmaf(s[n][i], sl2, -lse2[h]));
                        const float pa = pv * (a[n][i] * p.scale);
                        x[h] += pa;
                        y[h] = fmaf(pa, dp[n][i], y[h]);
                        z[h] = fmaf(pv, b[n][i], z[h]);
                    }
            }
        }
        __syncthreads(); /* every read of this buffer is done before it is refilled */
    }
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const float xs = quad_sum(x[h]), ys = quad_sum(y[h]), zs = quad_sum(z[h]);
        const int64_t qi = qw + g + 8 * h;
        if (t4 == 0 && qi < p.tq) {
            bw.ra[bh * p.tq + qi] = xs;
            bw.rc[bh * p.tq + qi] = ys - 2.f * xs * dl[h] + zs;
        }
    }
}

/* ---- gQ and gG, per query tile --------------------------------------------------------------------------------- */

template <int D, int NW, int BT, int SC, int MINB, bool HOLD>
__global__ void __launch_bounds__(32 * NW, MINB) bwd2_q(Params p, Bwd2 bw) {
    using C = B2<D, NW, BT, SC>;
    constexpr int BR = C::BR, T = C::THREADS, LD = C::LD, NT = SC / 8, ND = D / 8;
    uint16_t *sQ = smem16(), *sG = sQ + BR * LD, *sUq = sG + BR * LD, *sK = sUq + BR * LD;
    uint16_t *sV = sK + 2 * BT * LD, *sUk = sV + 2 * BT * LD, *sUv = sUk + 2 * BT * LD;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    const int n_qt = (p.tq + BR - 1) / BR;
    const int64_t q0 = (int64_t)(n_qt - 1 - (int)blockIdx.x) * BR, bh = blockIdx.y;
    const int64_t qw = q0 + warp * 16;
    const uint16_t *q = p.q + bh * p.tq * D, *gd = p.dout + bh * p.tq * D, *uq = bw.uq + bh * p.tq * D;
    const uint16_t *k = p.k + bh * p.tk * D, *v = p.v + bh * p.tk * D;
    const uint16_t *uk = bw.uk + bh * p.tk * D, *uv = bw.uv + bh * p.tk * D;
    const float sl2 = p.scale * LOG2E;
    int64_t k_lo, k_hi;
    key_range(p, q0, q0 + BR < p.tq ? q0 + BR : p.tq, &k_lo, &k_hi);
    const int64_t kt0 = k_lo / BT, kt1 = (k_hi + BT - 1) / BT;

    load_rows<D, BR, T>(sQ, q, q0, p.tq, p.aligned);
    load_rows<D, BR, T>(sG, gd, q0, p.tq, p.aligned);
    load_rows<D, BR, T>(sUq, uq, q0, p.tq, p.aligned);
    load_keys<D, BT, T>(p, sK, sV, sUk, sUv, k, v, uk, uv, kt0 * BT);
    cp_commit();
    float lse2[2], dl[2], ra[2], rc[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int64_t qi = qw + g + 8 * h, at = bh * p.tq + qi;
        const bool in = qi < p.tq;
        lse2[h] = in ? p.lse[at] * LOG2E : 0.f;
        dl[h] = in ? p.delta[at] : 0.f;
        ra[h] = in ? bw.ra[at] : 0.f;
        rc[h] = in ? bw.rc[at] : 0.f;
    }
    float gq[ND][4], gg[ND][4];
    zero4(gq), zero4(gg);
    AFrags<D, 1, HOLD> fq, fg, fu;

    for (int64_t kt = kt0; kt < kt1; kt++) {
        const int buf = (int)((kt - kt0) & 1);
        if (kt + 1 < kt1) {
            const int o = (buf ^ 1) * BT * LD;
            load_keys<D, BT, T>(p, sK + o, sV + o, sUk + o, sUv + o, k, v, uk, uv, (kt + 1) * BT);
            cp_commit();
            cp_wait<1>();
        } else {
            cp_wait<0>();
        }
        __syncthreads();
        if (kt == kt0) fq.load(sQ, warp, lane), fg.load(sG, warp, lane), fu.load(sUq, warp, lane);
        const int ob = buf * BT * LD;
#pragma unroll 1
        for (int c0 = 0; c0 < BT; c0 += SC) {
            const int64_t kc = kt * BT + c0;
            if (!sees_keys(p, qw, kc, SC)) continue;
            float s[NT][4], dp[NT][4], a[NT][4], b[NT][4];
            const int oc = ob + c0 * LD;
            scores_q<D, SC, HOLD>(s, dp, a, b, fq, fg, fu, sQ, sG, sUq, sK + oc, sV + oc, sUk + oc, sUv + oc, warp, lane);
            if (needs_mask(p, qw, 16, kc, SC)) mask_q(p, s, qw, kc, g, t4);
#pragma unroll
            for (int h = 0; h < 2; h++) {
#pragma unroll
                for (int n = 0; n < NT; n++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        const int i = 2 * h + e;
                        const float pv = ex2(fmaf(s[n][i], sl2, -lse2[h]));
                        const float dpv = dp[n][i], av = a[n][i] * p.scale, dd = dpv - dl[h];
                        s[n][i] = pv;                                             /* P */
                        dp[n][i] = pv * dd;                                       /* dS */
                        a[n][i] = pv * (av - ra[h]);                              /* E */
                        b[n][i] = pv * (fmaf(dd, av, b[n][i]) - fmaf(dpv, ra[h], rc[h])); /* F */
                    }
            }
            /* gQ += dS Uk + F K, gG += E V + P Uv */
#pragma unroll
            for (int kk = 0; kk < SC / 16; kk++) {
                const int ok = oc + kk * 16 * LD;
                uint32_t x[4];
                acc_to_a(x, dp[2 * kk], dp[2 * kk + 1]);
                mma_nn<ND>(gq, x, sUk + ok, LD, lane);
                acc_to_a(x, b[2 * kk], b[2 * kk + 1]);
                mma_nn<ND>(gq, x, sK + ok, LD, lane);
                acc_to_a(x, a[2 * kk], a[2 * kk + 1]);
                mma_nn<ND>(gg, x, sV + ok, LD, lane);
                acc_to_a(x, s[2 * kk], s[2 * kk + 1]);
                mma_nn<ND>(gg, x, sUv + ok, LD, lane);
            }
        }
        __syncthreads(); /* every read of this buffer is done before it is refilled */
    }

    uint16_t *oq = bw.gq + bh * p.tq * D, *og = bw.gg + bh * p.tq * D;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int64_t qi = qw + g + 8 * h;
        if (qi >= p.tq) continue;
#pragma unroll
        for (int n = 0; n < ND; n++) {
            *reinterpret_cast<uint32_t *>(oq + qi * D + n * 8 + 2 * t4) =
                pack2(gq[n][2 * h] * p.scale, gq[n][2 * h + 1] * p.scale);
            *reinterpret_cast<uint32_t *>(og + qi * D + n * 8 + 2 * t4) = pack2(gg[n][2 * h], gg[n][2 * h + 1]);
        }
    }
}

/* ---- gK and gV, per key tile ----------------------------------------------------------------------------------- */

/* One query tile of bwd2_kv: Q, dO, Uq rows (cp.async) and lse (log2 units), delta, a, c (zero past Tq). */
template <int D, int BT, int T>
__device__ __forceinline__ void load_queries(const Params &p, const Bwd2 &bw, uint16_t *dQ, uint16_t *dG,
                                             uint16_t *dUq, float *dL, const uint16_t *q, const uint16_t *gd,
                                             const uint16_t *uq, int64_t bh, int64_t qs0) {
    load_rows<D, BT, T>(dQ, q, qs0, p.tq, p.aligned);
    load_rows<D, BT, T>(dG, gd, qs0, p.tq, p.aligned);
    load_rows<D, BT, T>(dUq, uq, qs0, p.tq, p.aligned);
    for (int i = threadIdx.x; i < BT; i += T) {
        const int64_t qi = qs0 + i, at = bh * p.tq + qi;
        const bool in = qi < p.tq;
        dL[i] = in ? p.lse[at] * LOG2E : 0.f;
        dL[BT + i] = in ? p.delta[at] : 0.f;
        dL[2 * BT + i] = in ? bw.ra[at] : 0.f;
        dL[3 * BT + i] = in ? bw.rc[at] : 0.f;
    }
}

template <int D, int NW, int BT, int SC, int MINB, bool HOLD>
__global__ void __launch_bounds__(32 * NW, MINB) bwd2_kv(Params p, Bwd2 bw) {
    using C = B2<D, NW, BT, SC>;
    constexpr int BC = C::BR, T = C::THREADS, LD = C::LD, NT = SC / 8, ND = D / 8;
    uint16_t *sK = smem16(), *sV = sK + BC * LD, *sUk = sV + BC * LD, *sUv = sUk + BC * LD, *sQ = sUv + BC * LD;
    uint16_t *sG = sQ + 2 * BT * LD, *sUq = sG + 2 * BT * LD;
    float *sL = reinterpret_cast<float *>(sUq + 2 * BT * LD); /* two buffers of lse, delta, a, c (4 BT each) */
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    const int64_t k0 = (int64_t)blockIdx.x * BC, bh = blockIdx.y; /* key tile 0 is seen by the most queries */
    const int64_t kw = k0 + warp * 16;
    const uint16_t *q = p.q + bh * p.tq * D, *gd = p.dout + bh * p.tq * D, *uq = bw.uq + bh * p.tq * D;
    const uint16_t *k = p.k + bh * p.tk * D, *v = p.v + bh * p.tk * D;
    const uint16_t *uk = bw.uk + bh * p.tk * D, *uv = bw.uv + bh * p.tk * D;
    const float sl2 = p.scale * LOG2E;
    int64_t i_lo, i_hi;
    query_range(p, k0, k0 + BC < p.tk ? k0 + BC : p.tk, &i_lo, &i_hi);
    const int64_t qt0 = i_lo / BT, qt1 = i_hi > i_lo ? (i_hi + BT - 1) / BT : qt0; /* may be empty: zeros */

    float gk[ND][4], gv[ND][4];
    zero4(gk), zero4(gv);
    AFrags<D, 1, HOLD> fk, fv, fuk, fuv;
    if (qt0 < qt1) {
        load_rows<D, BC, T>(sK, k, k0, p.tk, p.aligned);
        load_rows<D, BC, T>(sV, v, k0, p.tk, p.aligned);
        load_rows<D, BC, T>(sUk, uk, k0, p.tk, p.aligned);
        load_rows<D, BC, T>(sUv, uv, k0, p.tk, p.aligned);
        load_queries<D, BT, T>(p, bw, sQ, sG, sUq, sL, q, gd, uq, bh, qt0 * BT);
        cp_commit();
    }
    for (int64_t qt = qt0; qt < qt1; qt++) {
        const int buf = (int)((qt - qt0) & 1);
        if (qt + 1 < qt1) {
            const int o = (buf ^ 1) * BT * LD;
            load_queries<D, BT, T>(p, bw, sQ + o, sG + o, sUq + o, sL + (buf ^ 1) * 4 * BT, q, gd, uq, bh, (qt + 1) * BT);
            cp_commit();
            cp_wait<1>();
        } else {
            cp_wait<0>();
        }
        __syncthreads();
        if (qt == qt0)
            fk.load(sK, warp, lane), fv.load(sV, warp, lane), fuk.load(sUk, warp, lane), fuv.load(sUv, warp, lane);
        const int ob = buf * BT * LD;
        const float *cL = sL + buf * 4 * BT, *cD = cL + BT, *cA = cD + BT, *cC = cA + BT;
#pragma unroll 1
        for (int c0 = 0; c0 < BT; c0 += SC) {
            const int64_t qc = qt * BT + c0;
            if (!sees_queries(p, kw, qc, SC)) continue;
            float s[NT][4], dp[NT][4], a[NT][4], b[NT][4];
            const int oc = ob + c0 * LD;
            scores_k<D, SC, HOLD>(s, dp, a, b, fk, fv, fuk, fuv, sK, sV, sUk, sUv, sQ + oc, sG + oc, sUq + oc, warp,
                                  lane);
            if (needs_mask(p, qc, SC, kw, 16)) mask_k(p, s, kw, qc, g, t4);
#pragma unroll
            for (int n = 0; n < NT; n++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int col = c0 + n * 8 + 2 * t4 + e;
                    const float lse2 = cL[col], dl = cD[col], ra = cA[col], rc = cC[col];
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        const int i = 2 * h + e;
                        const float pv = ex2(fmaf(s[n][i], sl2, -lse2));
                        const float dpv = dp[n][i], av = a[n][i] * p.scale, dd = dpv - dl;
                        dp[n][i] = pv * dd;                                       /* dS^T */
                        a[n][i] = pv * (av - ra);                                 /* E^T */
                        b[n][i] = pv * (fmaf(dd, av, b[n][i]) - fmaf(dpv, ra, rc)); /* F^T */
                    }
                }
            /* gK += dS^T Uq + F^T Q, gV += E^T G */
#pragma unroll
            for (int kk = 0; kk < SC / 16; kk++) {
                const int ok = oc + kk * 16 * LD;
                uint32_t x[4];
                acc_to_a(x, dp[2 * kk], dp[2 * kk + 1]);
                mma_nn<ND>(gk, x, sUq + ok, LD, lane);
                acc_to_a(x, b[2 * kk], b[2 * kk + 1]);
                mma_nn<ND>(gk, x, sQ + ok, LD, lane);
                acc_to_a(x, a[2 * kk], a[2 * kk + 1]);
                mma_nn<ND>(gv, x, sG + ok, LD, lane);
            }
        }
        __syncthreads(); /* every read of this buffer is done before it is refilled */
    }

    uint16_t *outk = bw.gk + bh * p.tk * D, *ov = bw.gv + bh * p.tk * D;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int64_t kj = kw + g + 8 * h;
        if (kj >= p.tk) continue;
#pragma unroll
        for (int n = 0; n < ND; n++) {
            *reinterpret_cast<uint32_t *>(outk + kj * D + n * 8 + 2 * t4) =
                pack2(gk[n][2 * h] * p.scale, gk[n][2 * h + 1] * p.scale);
            *reinterpret_cast<uint32_t *>(ov + kj * D + n * 8 + 2 * t4) = pack2(gv[n][2 * h], gv[n][2 * h + 1]);
        }
    }
}

/* ---- the configurations the launcher uses (attention_bwd2.cu) ---------------------------------------------- */

/* NW warps of 16 own rows, other-side tile BT, SC columns at a time, MINB blocks per SM asked of the register
 * allocator, HOLD: the own A fragments stay in registers. */
template <int NW_, int BT_, int SC_, int MINB_, int HOLD_> struct K2 {
    enum { NW = NW_, BT = BT_, SC = SC_, MINB = MINB_, HOLD = HOLD_ };
};

/* Not yet timed on a GPU: chosen for 2 blocks of 4 warps per SM at d = 64 (shared memory 101, 101 and 94 KB)
 * and one block of 8 warps at d = 128 (174, 174 and 193 KB), registers within 255 without spills (ptxas, sm_90:
 * rows, q, kv 198, 255, 220 at d = 64 and 240, 255, 242 at d = 128). */
template <int D> struct Cfg2;
template <> struct Cfg2<64> {
    typedef K2<4, 64, 32, 2, 1> Rows;
    typedef K2<4, 64, 32, 2, 1> Q;
    typedef K2<4, 64, 16, 2, 1> Kv;
};
template <> struct Cfg2<128> {
    typedef K2<8, 32, 32, 1, 1> Rows;
    typedef K2<8, 32, 16, 1, 0> Q;
    typedef K2<8, 32, 16, 1, 0> Kv;
};

}  // namespace attnbf

#endif
