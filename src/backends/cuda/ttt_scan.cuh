/* The fused TTT-Linear scan's CUDA kernels (f32), included by ttt_scan.cu and by the host emulator's
 * test (dev/cuda/ttt_scan_emu_test.cpp). The math is stated in src/composed/ttt_scan.c.
 *
 * The forward is one block of 256 threads per (batch, head) walking its mini-batches in order; the
 * backward is scan_bwd_pre, one block per (batch, head, mini-batch), then the reverse scan scan_bwd,
 * one block per (batch, head) (see above scan_bwd_pre). The fast weight W [d, d] (rows padded to d + 1
 * floats, so a warp reading a column hits 32 banks), its bias, the mini-batch's q, k, v rows and every
 * intermediate live in shared memory; global memory sees the inputs once, the outputs once and (when
 * recording) the state at each mini-batch's start.
 *
 * Where the time goes (d 64, mini-batch b 16, per mini-batch; docs/mixers.md has the count): the
 * products with W ([K; Q] W, the update (e o K)^T G; backward also K dW, G dW^T, dzq W^T, dz1 W^T,
 * Q^T dzq + K^T dz1) are ~0.4 MFLOP forward and ~1.2 MFLOP backward, on one SM per (batch, head), one
 * mini-batch after the other: the kernels are bound by the shared-memory loads and the latency of that
 * serial chain, not by the GPU's throughput. So every product is register-tiled (Tile below): a thread
 * keeps a TM x TN block of outputs in registers, each step of the sum loads TM + TN values for
 * TM * TN independent FMAs (the old element-parallel loops loaded 2 per FMA and ran one dependent
 * chain per thread); or, where d and b are multiples of 16, runs on the tensor cores (mma_f32x3);
 * the rows of a mini-batch's buffers are padded to d + 1 floats too, so the transposed operands (K^T
 * in q k^T, G^T in dzq G^T) are read without bank conflicts; z1 = K W + c and Q W + c are one pass
 * over W; the row-wise work (zq's within-mini-batch term, the layer norms) takes a warp per row with
 * no block barrier between its steps; the next mini-batch's inputs are loaded into registers while
 * the current one computes (NextRows, BwdRows). Each output is summed in a fixed order by one thread:
 * no atomics, the same bits on every run.
 *
 * The includer defines TTT_SCAN_SMEM() (a float * to the dynamic shared memory). */
#ifndef TTT_SCAN_CUH
#define TTT_SCAN_CUH

#include "split_bf16.cuh"

namespace tscan {

enum { THREADS = 256, WARPS = THREADS / 32, MAX_D = 128 };

struct Fwd {
    float *out, *w_out, *b_out, *w_st, *b_st; /* w_st, b_st NULL: not recorded */
    const float *q, *k, *v, *eta, *tok, *ln_w, *ln_b, *w0, *b0;
    int H, T, d, bs, N, w0_batched, b0_batched;
    float eps;
    /* the products with W on the tensor cores (mma_f32x3; needs d, bs multiples of 16: mma_fits): 0 never
     * (FMA tiles), 1 for the mini-batches whose q and k are all bf16 values (bf16 inputs the op cast to
     * f32), 2 always (contexts that allow f32 matmuls on the tensor cores, ttt_ctx_config.tf32) */
    int mma;
    /* the split forward (scan_fwd_h + scan_fwd_o): the inner gradient G of every token [B H T d], handed from
     * the serial kernel to the parallel one (w_st, b_st then always kept) */
    float *g_buf;
    /* TTT_SCAN_V2 with mma 1 (ttt_scan2.cuh): a device flag, nonzero where every q, k value of the call is a
     * bf16 value; a kernel runs only where (*gate != 0) == gate_on (gate NULL: always) */
    const int *gate;
    int gate_on;
};

struct Bwd {
    float *dq, *dk, *dv, *deta, *dtok, *dln_w, *dln_b, *dw0, *db0;
    const float *dout, *dw_out, *db_out; /* dw_out, db_out NULL: zero */
    const float *q, *k, *v, *eta, *tok, *ln_w, *ln_b, *w_st, *b_st;
    float *scr; /* B H N bwd_scratch_floats(d, bs): scan_bwd_pre's results for scan_bwd */
    int H, T, d, bs, N, w_in_smem; /* w_in_smem 0: scan_bwd reads W from the stored state in global memory */
    float eps;
    int mma; /* the reverse scan's products on the tensor cores, as Fwd's */
    float *post; /* TTT_SCAN_V2: tscan2::bwd2's hand-over to tscan2::bwd2_post (ttt_scan2.cuh) */
    const int *gate; /* as Fwd's */
    int gate_on;
};

inline bool mma_fits(int d, int bs) { return d % 16 == 0 && bs % 16 == 0; }

/* Dynamic shared memory of each kernel, in floats. Rows of [bs, d] buffers are d + 1 floats; the last
 * float of the forward's and the reverse scan's is Fwd::mma 1's flag (check_bf16). */
inline size_t fwd_smem_floats(int d, int bs) {
    return (size_t)d * (d + 1) + 3 * (size_t)d + 7 * (size_t)bs * (d + 1) + (size_t)bs * bs + 2 * (size_t)bs + 1;
}
inline size_t bwd_pre_smem_floats(int d, int bs) {
    return (size_t)d * (d + 1) + 3 * (size_t)d + 8 * (size_t)bs * (d + 1) + 4 * (size_t)bs * bs + 3 * (size_t)bs;
}
inline size_t bwd_smem_floats(int d, int bs, int w_in_smem) {
    return (size_t)(w_in_smem ? 2 : 1) * d * (d + 1) + 5 * (size_t)d + 11 * (size_t)bs * (d + 1) + 5 * (size_t)bs + 1;
}

/* A thread's TM x TN block of an m x n product: rows r0 + ii * nrt, columns c0 + jj * nct (strided, so
 * the 32 threads of a warp own 32 neighbouring columns: conflict-free loads of the right operand, one
 * broadcast load of the left one). Indices past m, n are clamped for the loads and skipped on store
 * (ok()). Work item u in [0, count(m, n)), spread over the block by the caller's loop. */
template <int TM, int TN> struct Tile {
    int r0, c0, nrt, nct, m, n;
    int row[TM], col[TN];
    float acc[TM][TN];
    static __device__ __forceinline__ int count(int m, int n) { return ((m + TM - 1) / TM) * ((n + TN - 1) / TN); }
    __device__ __forceinline__ Tile(int u, int m_, int n_) : m(m_), n(n_) {
        nrt = (m + TM - 1) / TM, nct = (n + TN - 1) / TN;
        r0 = u / nct, c0 = u % nct;
#pragma unroll
        for (int ii = 0; ii < TM; ii++) row[ii] = r0 + ii * nrt < m ? r0 + ii * nrt : m - 1;
#pragma unroll
        for (int jj = 0; jj < TN; jj++) col[jj] = c0 + jj * nct < n ? c0 + jj * nct : n - 1;
#pragma unroll
        for (int ii = 0; ii < TM; ii++)
#pragma unroll
            for (int jj = 0; jj < TN; jj++) acc[ii][jj] = 0.0f;
    }
    __device__ __forceinline__ bool ok(int ii, int jj) const { return r0 + ii * nrt < m && c0 + jj * nct < n; }
    /* acc[ii][jj] += sum over a < K, in order, of A[row * sai + a * saa] * B[a * sba + col * sbj] */
    __device__ __forceinline__ void mac(int K, const float *A, int sai, int saa, const float *B, int sba, int sbj) {
        const float *pa[TM], *pb[TN];
#pragma unroll
        for (int ii = 0; ii < TM; ii++) pa[ii] = A + row[ii] * sai;
#pragma unroll
        for (int jj = 0; jj < TN; jj++) pb[jj] = B + col[jj] * sbj;
        for (int a = 0; a < K; a++) {
            float x[TM], y[TN];
#pragma unroll
            for (int ii = 0; ii < TM; ii++) x[ii] = pa[ii][a * saa];
#pragma unroll
            for (int jj = 0; jj < TN; jj++) y[jj] = pb[jj][a * sba];
#pragma unroll
            for (int ii = 0; ii < TM; ii++)
#pragma unroll
                for (int jj = 0; jj < TN; jj++) acc[ii][jj] += x[ii] * y[jj];
        }
    }
};

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* xh = LN(z) of one row (xh may be z), the lanes of a warp over its columns; returns rstd */
__device__ __forceinline__ float ln_row(const float *z, float *xh, int d, float eps, int lane) {
    float s = 0;
    for (int j = lane; j < d; j += 32) s += z[j];
    const float mean = warp_sum(s) / (float)d;
    float var = 0;
    for (int j = lane; j < d; j += 32) var += (z[j] - mean) * (z[j] - mean);
    const float rstd = 1.0f / sqrtf(warp_sum(var) / (float)d + eps);
    for (int j = lane; j < d; j += 32) xh[j] = (z[j] - mean) * rstd;
    return rstd;
}

/* One row of the inner loss's gradient at z: xh (may be z), gx = gam (LN(z) gam + bet - (v - k)) and gz */
__device__ __forceinline__ float ln_l2_row(const float *z, const float *v, const float *k, const float *gam,
                                           const float *bet, float *xh, float *gx, float *gz, int d, float eps, int lane) {
    const float rstd = ln_row(z, xh, d, eps, lane);
    float s1 = 0, s2 = 0;
    for (int j = lane; j < d; j += 32) {
        gx[j] = gam[j] * (gam[j] * xh[j] + bet[j] - (v[j] - k[j]));
        s1 += gx[j], s2 += gx[j] * xh[j];
    }
    const float m1 = warp_sum(s1) / (float)d, m2 = warp_sum(s2) / (float)d;
    for (int j = lane; j < d; j += 32) gz[j] = rstd * (gx[j] - m1 - xh[j] * m2);
    return rstd;
}

/* ---- tensor cores ----------------------------------------------------------------------------------------
 * mma.sync.m16n8k16 on f32 operands split into bf16 hi + lo, three products (split_bf16.cuh: ~2^-16
 * relative where FMAs in f32 give 2^-24), with W and every operand kept in f32 in shared memory. A warp
 * computes one 16 x 8 tile of C per call; the fragments are loaded element by element from the f32 buffers
 * (any strides), so no operand is transposed or copied. Only where d and the mini-batch are multiples of 16
 * (mma_fits), and (Fwd::mma) for bf16 inputs, detected per mini-batch from its q and k (check_bf16), or in
 * contexts that allow f32 matmuls on the tensor cores (tf32); else the FMA tiles above, 2^-24 as f32 asks
 * for. */

using splitbf16::split2;

/* acc += A[0:16, 0:K] B[0:K, 0:8] for the calling warp (all 32 lanes), A(r, k) = A[r sar + k sak], B(k, c) =
 * B[k sbk + c sbc], K a multiple of 16. acc is in mma's C layout: lane 4 g + t holds (g, 2t), (g, 2t + 1),
 * (g + 8, 2t), (g + 8, 2t + 1). */
__device__ __forceinline__ void mma_f32x3(float (&acc)[4], int K, const float *A, int sar, int sak, const float *B,
                                          int sbk, int sbc, int lane) {
    const int g = lane >> 2, t = lane & 3;
    const float *a0 = A + g * sar, *a1 = A + (g + 8) * sar, *b0 = B + g * sbc;
    for (int k0 = 0; k0 < K; k0 += 16) {
        const int ka = k0 + 2 * t, kb = ka + 8;
        uint32_t ah[4], al[4], bh[2], bl[2];
        split2(a0[ka * sak], a0[(ka + 1) * sak], ah[0], al[0]);
        split2(a1[ka * sak], a1[(ka + 1) * sak], ah[1], al[1]);
        split2(a0[kb * sak], a0[(kb + 1) * sak], ah[2], al[2]);
        split2(a1[kb * sak], a1[(kb + 1) * sak], ah[3], al[3]);
        split2(b0[ka * sbk], b0[(ka + 1) * sbk], bh[0], bl[0]);
        split2(b0[kb * sbk], b0[(kb + 1) * sbk], bh[1], bl[1]);
        splitbf16::mma3(acc, ah, al, bh, bl);
    }
}
/* mma = 1 (Fwd::mma): clears *flag (1 before, in shared memory) where one of this thread's q, k values
 * of the mini-batch (those it stored: the loads' mapping) is not a bf16 value. Every clearing thread
 * writes the same 0, so the result does not depend on their order. */
__device__ __forceinline__ bool is_bf16(float x) {
#ifdef TTT_EMU
    uint32_t b;
    memcpy(&b, &x, 4);
#else
    const uint32_t b = __float_as_uint(x);
#endif
    return (b & 0xffffu) == 0;
}
__device__ __forceinline__ void check_bf16(const float *Q, const float *K, int bs, int d, int P, int tid, float *flag) {
    bool exact = true;
    for (int x = tid; x < bs * d; x += THREADS) {
        const int o = (x / d) * P + x % d;
        exact = exact && is_bf16(Q[o]) && is_bf16(K[o]);
    }
    if (!exact) *flag = 0.0f;
}

/* Runs stmt for each of a warp's four C elements of the tile at (m0, n0), with row, col and acc set. */
#define TSCAN_MMA_STORE(m0, n0, accv, lane, stmt)                                          \
    _Pragma("unroll") for (int e_ = 0; e_ < 4; e_++) {                                   \
        const int row = (m0) + ((lane) >> 2) + 8 * (e_ >> 1), col = (n0) + 2 * ((lane) & 3) + (e_ & 1); \
        const float acc = (accv)[e_];                                                     \
        stmt;                                                                             \
    }

/* The next mini-batch's q, k, v rows and eta, loaded into registers while this one computes: the
 * serial loop would otherwise wait one global-memory latency at every mini-batch's start. PF values
 * of each per thread, so only where bs d <= PF * THREADS (d 64 and 128 at b 16); else the kernels
 * load each mini-batch when it starts. */
enum { PF = 8, PF_W = 16 };
struct NextRows {
    float q[PF], k[PF], v[PF], e;
    static __device__ __forceinline__ bool fits(int bs, int d) { return bs * d <= PF * THREADS && bs <= THREADS; }
    __device__ __forceinline__ void load(const float *gq, const float *gk, const float *gv, const float *geta, int64_t r0,
                                         int bs, int d, int tid) {
#pragma unroll
        for (int s = 0; s < PF; s++) {
            const int x = tid + s * THREADS;
            if (x < bs * d) q[s] = gq[r0 * d + x], k[s] = gk[r0 * d + x], v[s] = gv[r0 * d + x];
        }
        if (tid < bs) e = geta[r0 + tid];
    }
    /* into the [bs, d] buffers of row stride P */
    __device__ __forceinline__ void store(float *Q, float *K, float *V, float *E, int bs, int d, int P, int tid) const {
#pragma unroll
        for (int s = 0; s < PF; s++) {
            const int x = tid + s * THREADS;
            if (x < bs * d) {
                const int o = (x / d) * P + x % d;
                Q[o] = q[s], K[o] = k[s], V[o] = v[s];
            }
        }
        if (tid < bs) E[tid] = e;
    }
};

/* Stores a tile's outputs: f(row, col, acc) for each in range. */
#define TSCAN_STORE(t, TM, TN, stmt)                                                                    \
    _Pragma("unroll") for (int ii = 0; ii < TM; ii++) _Pragma("unroll") for (int jj = 0; jj < TN; jj++) \
        if ((t).ok(ii, jj)) {                                                                           \
            const int row = (t).row[ii], col = (t).col[jj];                                             \
            const float acc = (t).acc[ii][jj];                                                          \
            stmt;                                                                                       \
        }

__global__ void __launch_bounds__(THREADS) scan_fwd(Fwd p) {
    if (p.gate && (*p.gate != 0) != (p.gate_on != 0)) return; /* TTT_SCAN_V2's kernels run instead */
    float *sm = TTT_SCAN_SMEM();
    const int d = p.d, bs = p.bs, L = d + 1, P = d + 1, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int64_t bh = blockIdx.x;
    const int h = (int)(bh % p.H);
    /* K's rows then Q's (KQ), z1's rows then Q W + c's (Z, ZQ): the pass [K; Q] W + c writes both at once */
    float *W = sm, *c = W + d * L, *gam = c + d, *bet = gam + d, *K = bet + d, *Q = K + bs * P, *V = Q + bs * P;
    float *Z = V + bs * P, *ZQ = Z + bs * P, *GX = ZQ + bs * P, *G = GX + bs * P, *M = G + bs * P, *e = M + bs * bs;
    float *tk = e + bs, *flag = tk + bs;
    const float *w0 = p.w0 + (p.w0_batched ? bh : h) * (int64_t)d * d, *b0 = p.b0 + (p.b0_batched ? bh : h) * (int64_t)d;
    for (int x = tid; x < d * d; x += THREADS) W[(x / d) * L + x % d] = w0[x];
    for (int j = tid; j < d; j += THREADS) c[j] = b0[j], gam[j] = p.ln_w[h * d + j], bet[j] = p.ln_b[h * d + j];
    for (int i = tid; i < bs; i += THREADS) tk[i] = p.tok[i];
    if (tid == 0) *flag = 1.0f;
    const float tl = p.tok[bs - 1];
    __syncthreads();
    NextRows next = {}; /* (zeros: only read where load ran, which the compiler cannot see) */
    const bool pf = NextRows::fits(bs, d);
    for (int n = 0; n < p.N; n++) {
        const int64_t r0 = bh * p.T + (int64_t)n * bs; /* the mini-batch's first token */
        if (pf && n > 0) next.store(Q, K, V, e, bs, d, P, tid);
        else {
            for (int x = tid; x < bs * d; x += THREADS) {
                const int o = (x / d) * P + x % d;
                Q[o] = p.q[r0 * d + x], K[o] = p.k[r0 * d + x], V[o] = p.v[r0 * d + x];
            }
            for (int i = tid; i < bs; i += THREADS) e[i] = p.eta[r0 + i];
        }
        if (p.w_st) {
            float *ws = p.w_st + (bh * p.N + n) * (int64_t)d * d;
            for (int x = tid; x < d * d; x += THREADS) ws[x] = W[(x / d) * L + x % d];
            for (int j = tid; j < d; j += THREADS) p.b_st[(bh * p.N + n) * d + j] = c[j];
        }
        if (p.mma == 1) check_bf16(Q, K, bs, d, P, tid, flag);
        __syncthreads();
        const bool tc = p.mma == 2 || (p.mma == 1 && *flag != 0.0f); /* this mini-batch on the tensor cores */
        if (pf && n + 1 < p.N) next.load(p.q, p.k, p.v, p.eta, r0 + bs, bs, d, tid); /* lands during this one */
        /* z1 = K W + c and Q W + c, one pass over W;  M[i, j] = tok_i e_j (q_i . k_j + 1), j <= i */
        if (tc) {
            const int nt = d / 8;
            for (int tile = warp; tile < (2 * bs / 16) * nt; tile += WARPS) {
                const int m0 = tile / nt * 16, n0 = tile % nt * 8;
                float a4[4] = {0, 0, 0, 0};
                mma_f32x3(a4, d, K + m0 * P, P, 1, W + n0, L, 1, lane);
                TSCAN_MMA_STORE(m0, n0, a4, lane, Z[row * P + col] = acc + c[col]);
            }
        } else {
            for (int u = tid; u < Tile<4, 2>::count(2 * bs, d); u += THREADS) {
                Tile<4, 2> t(u, 2 * bs, d);
                t.mac(d, K, P, 1, W, L, 1);
                TSCAN_STORE(t, 4, 2, Z[row * P + col] = acc + c[col]);
            }
        }
        for (int u = tid; u < bs * bs; u += THREADS) {
            Tile<1, 1> t(u, bs, bs);
            const int i = t.row[0], j = t.col[0];
            if (j <= i) t.mac(d, Q, P, 1, K, 1, P);
            M[u] = j <= i ? tk[i] * e[j] * (t.acc[0][0] + 1) : 0.0f;
        }
        __syncthreads();
        /* G = the inner loss's gradient at z1 (Z then holds LN(z1), unused after); GX is scratch in the
         * forward, so its row then keeps tl e_i G_i, the update's right operand */
        for (int i = warp; i < bs; i += WARPS) {
            ln_l2_row(Z + i * P, V + i * P, K + i * P, gam, bet, Z + i * P, GX + i * P, G + i * P, d, p.eps, lane);
            for (int j = lane; j < d; j += 32) GX[i * P + j] = tl * e[i] * G[i * P + j];
        }
        __syncthreads();
        /* a warp per row: zq = (Q W + c) - M G, out = q + LN(zq) gam + bet; beside it (nothing here reads W
         * or c any more) W -= K^T (tl e o G), c -= sum_i tl e_i G_i; the flag set again for the next one */
        if (tid == 0) *flag = 1.0f;
        for (int i = warp; i < bs; i += WARPS) {
            float *zq = ZQ + i * P;
            for (int j = lane; j < d; j += 32) {
                float acc = zq[j];
                for (int t = 0; t <= i; t++) acc -= M[i * bs + t] * G[t * P + j];
                zq[j] = acc;
            }
            ln_row(zq, zq, d, p.eps, lane);
            for (int j = lane; j < d; j += 32) p.out[(r0 + i) * d + j] = Q[i * P + j] + zq[j] * gam[j] + bet[j];
        }
        if (tc) {
            const int nt = d / 8;
            for (int tile = warp; tile < (d / 16) * nt; tile += WARPS) {
                const int m0 = tile / nt * 16, n0 = tile % nt * 8;
                float a4[4] = {0, 0, 0, 0};
                mma_f32x3(a4, bs, K + m0, 1, P, GX + n0, P, 1, lane);
                TSCAN_MMA_STORE(m0, n0, a4, lane, W[row * L + col] -= acc);
            }
        } else {
            for (int u = tid; u < Tile<4, 4>::count(d, d); u += THREADS) {
                Tile<4, 4> t(u, d, d);
                t.mac(bs, K, 1, P, GX, P, 1);
                TSCAN_STORE(t, 4, 4, W[row * L + col] -= acc);
            }
        }
        for (int j = tid; j < d; j += THREADS) {
            float acc = 0;
            for (int i = 0; i < bs; i++) acc += GX[i * P + j];
            c[j] -= acc;
        }
        __syncthreads();
    }
    for (int x = tid; x < d * d; x += THREADS) p.w_out[bh * d * d + x] = W[(x / d) * L + x % d];
    for (int j = tid; j < d; j += THREADS) p.b_out[bh * d + j] = c[j];
}

/* ---- the forward in two kernels (opt-in: TTT_SCAN_SPLIT=1, ttt_scan.cu) -----------------------------------
 * Of a mini-batch's work only the weights' update depends on the mini-batch before it: z1 = K W + c, its
 * LN-loss gradient G and W -= K^T (tl e o G). scan_fwd_h walks only that (two d x d x bs products a
 * mini-batch instead of three, and none of the bs x bs x d terms), keeping the state at each mini-batch's
 * start and G; scan_fwd_o, one block per (batch, head, mini-batch), then computes every output at once:
 * zq = Q W_n + c_n - M G with M[i, j] = tok_i e_j (q_i . k_j + 1) (j <= i), out = q + LN(zq) gam + bet.
 * This is how flash-linear-attention's chunk_ttt_linear is split. FMA tiles only (Fwd::mma 0). */
inline size_t fwd_h_smem_floats(int d, int bs) { return (size_t)d * (d + 1) + 3 * (size_t)d + 5 * (size_t)bs * (d + 1) + (size_t)bs; }
inline size_t fwd_o_smem_floats(int d, int bs) {
    return (size_t)d * (d + 1) + 3 * (size_t)d + 4 * (size_t)bs * (d + 1) + (size_t)bs * bs + 2 * (size_t)bs;
}

__global__ void __launch_bounds__(THREADS) scan_fwd_h(Fwd p) {
    float *sm = TTT_SCAN_SMEM();
    const int d = p.d, bs = p.bs, L = d + 1, P = d + 1, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int64_t bh = blockIdx.x;
    const int h = (int)(bh % p.H);
    float *W = sm, *c = W + d * L, *gam = c + d, *bet = gam + d, *K = bet + d, *V = K + bs * P, *Z = V + bs * P;
    float *GX = Z + bs * P, *G = GX + bs * P, *e = G + bs * P;
    const float *w0 = p.w0 + (p.w0_batched ? bh : h) * (int64_t)d * d, *b0 = p.b0 + (p.b0_batched ? bh : h) * (int64_t)d;
    for (int x = tid; x < d * d; x += THREADS) W[(x / d) * L + x % d] = w0[x];
    for (int j = tid; j < d; j += THREADS) c[j] = b0[j], gam[j] = p.ln_w[h * d + j], bet[j] = p.ln_b[h * d + j];
    const float tl = p.tok[bs - 1];
    __syncthreads();
    for (int n = 0; n < p.N; n++) {
        const int64_t r0 = bh * p.T + (int64_t)n * bs;
        for (int x = tid; x < bs * d; x += THREADS) {
            const int o = (x / d) * P + x % d;
            K[o] = p.k[r0 * d + x], V[o] = p.v[r0 * d + x];
        }
        for (int i = tid; i < bs; i += THREADS) e[i] = p.eta[r0 + i];
        float *ws = p.w_st + (bh * p.N + n) * (int64_t)d * d;
        for (int x = tid; x < d * d; x += THREADS) ws[x] = W[(x / d) * L + x % d];
        for (int j = tid; j < d; j += THREADS) p.b_st[(bh * p.N + n) * d + j] = c[j];
        __syncthreads();
        for (int u = tid; u < Tile<4, 2>::count(bs, d); u += THREADS) { /* z1 = K W + c */
            Tile<4, 2> t(u, bs, d);
            t.mac(d, K, P, 1, W, L, 1);
            TSCAN_STORE(t, 4, 2, Z[row * P + col] = acc + c[col]);
        }
        __syncthreads();
        for (int i = warp; i < bs; i += WARPS) { /* G, kept for scan_fwd_o; GX = tl e_i G_i, the update's operand */
            ln_l2_row(Z + i * P, V + i * P, K + i * P, gam, bet, Z + i * P, GX + i * P, G + i * P, d, p.eps, lane);
            for (int j = lane; j < d; j += 32) {
                p.g_buf[(r0 + i) * d + j] = G[i * P + j];
                GX[i * P + j] = tl * e[i] * G[i * P + j];
            }
        }
        __syncthreads();
        for (int u = tid; u < Tile<4, 4>::count(d, d); u += THREADS) { /* W -= K^T (tl e o G) */
            Tile<4, 4> t(u, d, d);
            t.mac(bs, K, 1, P, GX, P, 1);
            TSCAN_STORE(t, 4, 4, W[row * L + col] -= acc);
        }
        for (int j = tid; j < d; j += THREADS) {
            float acc = 0;
            for (int i = 0; i < bs; i++) acc += GX[i * P + j];
            c[j] -= acc;
        }
        __syncthreads();
    }
    for (int x = tid; x < d * d; x += THREADS) p.w_out[bh * d * d + x] = W[(x / d) * L + x % d];
    for (int j = tid; j < d; j += THREADS) p.b_out[bh * d + j] = c[j];
}

__global__ void __launch_bounds__(THREADS) scan_fwd_o(Fwd p) {
    if (p.gate && (*p.gate != 0) != (p.gate_on != 0)) return;
    float *sm = TTT_SCAN_SMEM();
    const int d = p.d, bs = p.bs, L = d + 1, P = d + 1, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int64_t bh = blockIdx.x / p.N, n = blockIdx.x % p.N;
    const int h = (int)(bh % p.H);
    float *W = sm, *c = W + d * L, *gam = c + d, *bet = gam + d, *Q = bet + d, *K = Q + bs * P, *ZQ = K + bs * P;
    float *G = ZQ + bs * P, *M = G + bs * P, *e = M + bs * bs, *tk = e + bs;
    const float *ws = p.w_st + (bh * p.N + n) * (int64_t)d * d;
    const int64_t r0 = bh * p.T + n * bs;
    for (int x = tid; x < d * d; x += THREADS) W[(x / d) * L + x % d] = ws[x];
    for (int j = tid; j < d; j += THREADS)
        c[j] = p.b_st[(bh * p.N + n) * d + j], gam[j] = p.ln_w[h * d + j], bet[j] = p.ln_b[h * d + j];
    for (int x = tid; x < bs * d; x += THREADS) {
        const int o = (x / d) * P + x % d;
        Q[o] = p.q[r0 * d + x], K[o] = p.k[r0 * d + x], G[o] = p.g_buf[r0 * d + x];
    }
    for (int i = tid; i < bs; i += THREADS) e[i] = p.eta[r0 + i], tk[i] = p.tok[i];
    __syncthreads();
    for (int u = tid; u < Tile<4, 2>::count(bs, d); u += THREADS) { /* Q W + c */
        Tile<4, 2> t(u, bs, d);
        t.mac(d, Q, P, 1, W, L, 1);
        TSCAN_STORE(t, 4, 2, ZQ[row * P + col] = acc + c[col]);
    }
    for (int u = tid; u < bs * bs; u += THREADS) {
        Tile<1, 1> t(u, bs, bs);
        const int i = t.row[0], j = t.col[0];
        if (j <= i) t.mac(d, Q, P, 1, K, 1, P);
        M[u] = j <= i ? tk[i] * e[j] * (t.acc[0][0] + 1) : 0.0f;
    }
    __syncthreads();
    for (int i = warp; i < bs; i += WARPS) {
        float *zq = ZQ + i * P;
        for (int j = lane; j < d; j += 32) {
            float acc = zq[j];
            for (int t = 0; t <= i; t++) acc -= M[i * bs + t] * G[t * P + j];
            zq[j] = acc;
        }
        ln_row(zq, zq, d, p.eps, lane);
        for (int j = lane; j < d; j += 32) p.out[(r0 + i) * d + j] = Q[i * P + j] + zq[j] * gam[j] + bet[j];
    }
}

/* The backward in two kernels. Of each mini-batch's gradients, everything that does not depend on the
 * gradient dW', dc' carried down from the later mini-batches (the forward recomputed from the stored
 * state, dzq, dM, dS, all of dq, the parts of dk, deta, dtok, dgam, dbet and dG that come through zq and
 * out) is computed by scan_bwd_pre, one block per (batch, head, mini-batch) — every SM at once. The
 * reverse scan scan_bwd then only walks what does: U = K dW' + dc', dG, the LN + L2 backward, dk's dW'
 * and dz1 terms and the update of dW': three d x d products a mini-batch instead of eight, four barriers
 * instead of nine. They hand over through a scratch buffer (bwd_scratch_floats per mini-batch): G,
 * LN(z1), gx, dzq, the partial dG [bs, d] each, rstd(z1) [bs], and the partial dtok [bs], dgam, dbet [d]
 * (summed by scan_bwd in mini-batch order: no atomics). dq is final after scan_bwd_pre; dk and deta get
 * their partial there and scan_bwd adds the rest. */
__host__ __device__ inline size_t bwd_scratch_floats(int d, int bs) { return 5 * (size_t)bs * d + 2 * (size_t)bs + 2 * (size_t)d; }

__global__ void __launch_bounds__(THREADS) scan_bwd_pre(Bwd p) {
    float *sm = TTT_SCAN_SMEM();
    const int d = p.d, bs = p.bs, L = d + 1, P = d + 1, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int64_t bh = blockIdx.x / p.N;
    const int n = (int)(blockIdx.x % p.N), h = (int)(bh % p.H);
    const int64_t r0 = bh * p.T + (int64_t)n * bs;
    /* K's rows then Q's, z1's rows (then LN(z1)) then zq's (then LN(zq)): one pass [K; Q] W + c */
    float *W = sm, *c = W + d * L, *gam = c + d, *bet = gam + d, *K = bet + d, *Q = K + bs * P, *XH1 = Q + bs * P;
    float *XHQ = XH1 + bs * P, *V = XHQ + bs * P, *GX = V + bs * P, *G = GX + bs * P, *DZQ = G + bs * P;
    float *S = DZQ + bs * P, *M = S + bs * bs, *DM = M + bs * bs, *DS = DM + bs * bs, *RS1 = DS + bs * bs, *e = RS1 + bs;
    float *tk = e + bs;
    float *out = p.scr + (bh * p.N + n) * (int64_t)bwd_scratch_floats(d, bs);
    float *oG = out, *oXH1 = oG + bs * d, *oGX = oXH1 + bs * d, *oDZQ = oGX + bs * d, *oDG = oDZQ + bs * d;
    float *oRS1 = oDG + bs * d, *oDtok = oRS1 + bs, *oDgam = oDtok + bs, *oDbet = oDgam + d;
    const float *Wg = p.w_st + (bh * p.N + n) * (int64_t)d * d;
    for (int x = tid; x < d * d; x += THREADS) W[(x / d) * L + x % d] = Wg[x];
    for (int j = tid; j < d; j += THREADS) c[j] = p.b_st[(bh * p.N + n) * d + j], gam[j] = p.ln_w[h * d + j], bet[j] = p.ln_b[h * d + j];
    for (int x = tid; x < bs * d; x += THREADS) {
        const int o = (x / d) * P + x % d;
        Q[o] = p.q[r0 * d + x], K[o] = p.k[r0 * d + x], V[o] = p.v[r0 * d + x];
    }
    for (int i = tid; i < bs; i += THREADS) e[i] = p.eta[r0 + i], tk[i] = p.tok[i];
    __syncthreads();
    /* recompute z1 = K W + c, Q W + c (one pass); S = q_i . k_j + 1, M = tok_i e_j S (j <= i) */
    for (int u = tid; u < Tile<4, 2>::count(2 * bs, d); u += THREADS) {
        Tile<4, 2> t(u, 2 * bs, d);
        t.mac(d, K, P, 1, W, L, 1);
        TSCAN_STORE(t, 4, 2, XH1[row * P + col] = acc + c[col]);
    }
    for (int u = tid; u < bs * bs; u += THREADS) {
        Tile<1, 1> t(u, bs, bs);
        const int i = t.row[0], j = t.col[0];
        if (j <= i) t.mac(d, Q, P, 1, K, 1, P);
        S[u] = j <= i ? t.acc[0][0] + 1 : 0.0f;
        M[u] = j <= i ? tk[i] * e[j] * (t.acc[0][0] + 1) : 0.0f;
    }
    __syncthreads();
    /* G = the inner loss's gradient at z1 */
    for (int i = warp; i < bs; i += WARPS) {
        const float r = ln_l2_row(XH1 + i * P, V + i * P, K + i * P, gam, bet, XH1 + i * P, GX + i * P, G + i * P, d, p.eps, lane);
        if (lane == 0) RS1[i] = r;
    }
    __syncthreads();
    /* a warp per row: zq = (Q W + c) - M G and LN(zq) (into XHQ); dzq from out = q + LN(zq) gam + bet */
    for (int i = warp; i < bs; i += WARPS) {
        float *zq = XHQ + i * P;
        for (int j = lane; j < d; j += 32) {
            float acc = zq[j];
            for (int t = 0; t <= i; t++) acc -= M[i * bs + t] * G[t * P + j];
            zq[j] = acc;
        }
        const float rsq = ln_row(zq, zq, d, p.eps, lane);
        float s1 = 0, s2 = 0;
        for (int j = lane; j < d; j += 32) {
            const float g = p.dout[(r0 + i) * d + j] * gam[j];
            DZQ[i * P + j] = g;
            s1 += g, s2 += g * zq[j];
        }
        const float m1 = warp_sum(s1) / (float)d, m2 = warp_sum(s2) / (float)d;
        for (int j = lane; j < d; j += 32) DZQ[i * P + j] = rsq * (DZQ[i * P + j] - m1 - zq[j] * m2);
    }
    __syncthreads();
    /* zq = Q W + c - M G: dM = -dzq G^T (j <= i), dS = dM tok_i e_j; out's gain and bias (this mini-batch's part) */
    for (int u = tid; u < bs * bs; u += THREADS) {
        Tile<1, 1> t(u, bs, bs);
        const int i = t.row[0], j = t.col[0];
        if (j <= i) t.mac(d, DZQ, P, 1, G, 1, P);
        const float dm = j <= i ? -t.acc[0][0] : 0.0f;
        DM[u] = dm;
        DS[u] = dm * tk[i] * e[j];
    }
    for (int j = tid; j < d; j += THREADS) {
        float ag = 0, ab = 0;
        for (int i = 0; i < bs; i++) {
            const float g = p.dout[(r0 + i) * d + j];
            ag += g * XHQ[i * P + j], ab += g;
        }
        oDgam[j] = ag, oDbet[j] = ab;
    }
    __syncthreads();
    /* dtok_i's part sum_j dM_ij e_j S_ij, de_j's part sum_i dM_ij tok_i S_ij; dq = dout + dS k + dzq W^T;
     * dk's part dS^T q; dG's part -M^T dzq; and what scan_bwd reads */
    for (int i = tid; i < bs; i += THREADS) {
        float s = 0;
        for (int j = 0; j <= i; j++) s += DM[i * bs + j] * e[j] * S[i * bs + j];
        oDtok[i] = s, oRS1[i] = RS1[i];
    }
    for (int j = tid; j < bs; j += THREADS) {
        float s = 0;
        for (int i = j; i < bs; i++) s += DM[i * bs + j] * tk[i] * S[i * bs + j];
        p.deta[r0 + j] = s;
    }
    for (int u = tid; u < Tile<2, 2>::count(bs, d); u += THREADS) {
        Tile<2, 2> t(u, bs, d);
        t.mac(bs, DS, bs, 1, K, P, 1);
        t.mac(d, DZQ, P, 1, W, 1, L);
        TSCAN_STORE(t, 2, 2, p.dq[(r0 + row) * d + col] = p.dout[(r0 + row) * d + col] + acc);
    }
    for (int u = tid; u < Tile<2, 2>::count(bs, d); u += THREADS) {
        Tile<2, 2> t(u, bs, d);
        t.mac(bs, DS, 1, bs, Q, P, 1);
        TSCAN_STORE(t, 2, 2, p.dk[(r0 + row) * d + col] = acc);
    }
    for (int u = tid; u < Tile<2, 2>::count(bs, d); u += THREADS) {
        Tile<2, 2> t(u, bs, d);
        t.mac(bs, M, 1, bs, DZQ, P, 1);
        TSCAN_STORE(t, 2, 2, oDG[row * d + col] = -acc);
    }
    for (int x = tid; x < bs * d; x += THREADS) {
        const int o = (x / d) * P + x % d;
        oG[x] = G[o], oXH1[x] = XH1[o], oGX[x] = GX[o], oDZQ[x] = DZQ[o];
    }
}

/* The reverse scan's inputs of its next (earlier) mini-batch in registers, loaded while the current
 * one computes: q, k, v rows and scan_bwd_pre's G, LN(z1), gx, dzq, dG [bs, d], eta and rstd(z1) [bs].
 * PFB values of each per thread, so where bs d <= PFB * THREADS (d 64 at b 16); else direct loads. */
enum { PFB = 4, NB = 8 };
struct BwdRows {
    float x[NB][PFB], e, rs;
    static __device__ __forceinline__ bool fits(int bs, int d) { return bs * d <= PFB * THREADS && bs <= THREADS; }
    __device__ __forceinline__ void load(const Bwd &p, const float *in, int64_t r0, int tid) {
        const int n = p.bs * p.d;
        const float *src[NB] = {p.q + r0 * p.d, p.k + r0 * p.d, p.v + r0 * p.d, in, in + n, in + 2 * n, in + 3 * n, in + 4 * n};
#pragma unroll
        for (int t = 0; t < NB; t++)
#pragma unroll
            for (int s = 0; s < PFB; s++)
                if (tid + s * THREADS < n) x[t][s] = src[t][tid + s * THREADS];
        if (tid < p.bs) e = p.eta[r0 + tid], rs = in[5 * n + tid];
    }
    /* into the [bs, d] buffers dst (row stride P) in load's order, and E, RS [bs] */
    __device__ __forceinline__ void store(float *const (&dst)[NB], float *E, float *RS, int bs, int d, int P, int tid) const {
#pragma unroll
        for (int s = 0; s < PFB; s++) {
            const int x0 = tid + s * THREADS;
            if (x0 < bs * d) {
                const int o = (x0 / d) * P + x0 % d;
#pragma unroll
                for (int t = 0; t < NB; t++) dst[t][o] = x[t][s];
            }
        }
        if (tid < bs) E[tid] = e, RS[tid] = rs;
    }
};

/* The reverse scan over what depends on the carried dW', dc' (the gradient of the state after the
 * mini-batch), which it carries down to before it. */
__global__ void __launch_bounds__(THREADS) scan_bwd(Bwd p) {
    if (p.gate && (*p.gate != 0) != (p.gate_on != 0)) return; /* TTT_SCAN_V2's kernels run instead */
    float *sm = TTT_SCAN_SMEM();
    const int d = p.d, bs = p.bs, P = d + 1, DL = d + 1, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int L = p.w_in_smem ? d + 1 : d; /* W's row stride where it is read */
    const int64_t bh = blockIdx.x;
    const int h = (int)(bh % p.H);
    float *dW = sm, *Wsm = dW + d * DL, *dc = Wsm + (p.w_in_smem ? d * DL : 0);
    float *gam = dc + d, *bet = gam + d, *dgam = bet + d, *dbet = dgam + d;
    float *K = dbet + d, *Q = K + bs * P, *V = Q + bs * P, *XH1 = V + bs * P, *GX = XH1 + bs * P, *G = GX + bs * P;
    float *DZQ = G + bs * P, *DG = DZQ + bs * P, *U = DG + bs * P, *DZ1 = U + bs * P, *XHQ = DZ1 + bs * P;
    float *RS1 = XHQ + bs * P, *RSQ = RS1 + bs, *e = RSQ + bs, *tk = e + bs, *dtk = tk + bs, *flag = dtk + bs;
    for (int x = tid; x < d * d; x += THREADS) dW[(x / d) * DL + x % d] = p.dw_out ? p.dw_out[bh * d * d + x] : 0.0f;
    for (int j = tid; j < d; j += THREADS) {
        dc[j] = p.db_out ? p.db_out[bh * d + j] : 0.0f;
        gam[j] = p.ln_w[h * d + j], bet[j] = p.ln_b[h * d + j], dgam[j] = 0, dbet[j] = 0;
    }
    for (int i = tid; i < bs; i += THREADS) tk[i] = p.tok[i], dtk[i] = 0;
    if (tid == 0) *flag = 1.0f;
    const float tl = p.tok[bs - 1];
    const size_t per = bwd_scratch_floats(d, bs);
    BwdRows next = {}; /* (zeros: as the forward's) */
    const bool pf = BwdRows::fits(bs, d);
    float *const dst[NB] = {Q, K, V, G, XH1, GX, DZQ, DG}; /* BwdRows' order */
    for (int n = p.N - 1; n >= 0; n--) {
        const int64_t r0 = bh * p.T + (int64_t)n * bs;
        const float *Wg = p.w_st + (bh * p.N + n) * (int64_t)d * d;
        const float *W = p.w_in_smem ? Wsm : Wg;
        const float *in = p.scr + (bh * p.N + n) * (int64_t)per;
        const float *iG = in, *iXH1 = iG + bs * d, *iGX = iXH1 + bs * d, *iDZQ = iGX + bs * d, *iDG = iDZQ + bs * d;
        const float *iRS1 = iDG + bs * d, *iDtok = iRS1 + bs, *iDgam = iDtok + bs, *iDbet = iDgam + d;
        __syncthreads(); /* the previous mini-batch is done with every buffer */
        if (p.w_in_smem)
            for (int x = tid; x < d * d; x += THREADS) Wsm[(x / d) * L + x % d] = Wg[x];
        if (pf && n < p.N - 1) next.store(dst, e, RS1, bs, d, P, tid);
        else {
            for (int x = tid; x < bs * d; x += THREADS) {
                const int o = (x / d) * P + x % d;
                Q[o] = p.q[r0 * d + x], K[o] = p.k[r0 * d + x], V[o] = p.v[r0 * d + x];
                G[o] = iG[x], XH1[o] = iXH1[x], GX[o] = iGX[x], DZQ[o] = iDZQ[x], DG[o] = iDG[x];
            }
            for (int i = tid; i < bs; i += THREADS) e[i] = p.eta[r0 + i], RS1[i] = iRS1[i];
        }
        if (p.mma == 1) check_bf16(Q, K, bs, d, P, tid, flag);
        __syncthreads();
        const bool tc = p.mma == 2 || (p.mma == 1 && *flag != 0.0f); /* this mini-batch on the tensor cores */
        if (pf && n > 0) next.load(p, in - per, r0 - bs, tid); /* lands during this one */
        /* U = K dW' + dc' */
        if (tc) {
            const int nt = d / 8;
            for (int tile = warp; tile < (bs / 16) * nt; tile += WARPS) {
                const int m0 = tile / nt * 16, n0 = tile % nt * 8;
                float a4[4] = {0, 0, 0, 0};
                mma_f32x3(a4, d, K + m0 * P, P, 1, dW + n0, DL, 1, lane);
                TSCAN_MMA_STORE(m0, n0, a4, lane, U[row * P + col] = acc + dc[col]);
            }
        } else {
            for (int u = tid; u < Tile<2, 2>::count(bs, d); u += THREADS) {
                Tile<2, 2> t(u, bs, d);
                t.mac(d, K, P, 1, dW, DL, 1);
                TSCAN_STORE(t, 2, 2, U[row * P + col] = acc + dc[col]);
            }
        }
        __syncthreads();
        /* a warp per row. The state update W' = W - tl (e o K)^T G, c' = c - tl e^T G: dG_i = -tl e_i U_i
         * (plus scan_bwd_pre's -M^T dzq), de_i += -tl U_i . G_i, dtok_bs -= sum_i e_i U_i . G_i (RSQ keeps
         * U_i . G_i). Then G = the LN + L2 gradient at z1, differentiated: dz1 (DZ1), dv; dk's term da gam
         * and dbet's per-row part (XHQ), dgam's per-row part (U, read above by the same lane) */
        for (int i = warp; i < bs; i += WARPS) {
            float *u = DG + i * P;
            float sug = 0;
            for (int a = lane; a < d; a += 32) {
                const float ua = U[i * P + a];
                sug += ua * G[i * P + a];
                u[a] = -tl * e[i] * ua + u[a];
            }
            sug = warp_sum(sug);
            if (lane == 0) RSQ[i] = sug, p.deta[r0 + i] += -tl * sug;
            const float *xh = XH1 + i * P, *gx = GX + i * P, *gz = G + i * P, rstd = RS1[i];
            float s_u = 0, s_ux = 0, s_gx = 0, s_ug = 0;
            for (int a = lane; a < d; a += 32) s_u += u[a], s_ux += u[a] * xh[a], s_gx += gx[a] * xh[a], s_ug += u[a] * gz[a];
            const float mu = warp_sum(s_u) / (float)d, mux = warp_sum(s_ux) / (float)d, m2 = warp_sum(s_gx) / (float)d;
            const float drs = warp_sum(s_ug) / rstd;
            float *dxh = DZ1 + i * P;
            float s_dx = 0, s_dxx = 0;
            for (int a = lane; a < d; a += 32) {
                const float da = rstd * (u[a] - mu - xh[a] * mux);
                const float ymt = gam[a] * xh[a] + bet[a] - (V[i * P + a] - K[i * P + a]);
                dxh[a] = -rstd * (u[a] * m2 + gx[a] * mux) + da * gam[a] * gam[a];
                U[i * P + a] = da * ymt + da * gam[a] * xh[a];
                XHQ[i * P + a] = da * gam[a];
                p.dv[(r0 + i) * d + a] = -da * gam[a];
                s_dx += dxh[a], s_dxx += dxh[a] * xh[a];
            }
            const float mdx = warp_sum(s_dx) / (float)d, mdxx = warp_sum(s_dxx) / (float)d;
            for (int a = lane; a < d; a += 32)
                dxh[a] = rstd * (dxh[a] - mdx - xh[a] * mdxx) - drs * rstd * rstd * xh[a] / (float)d;
        }
        __syncthreads();
        /* dk += -tl e_i G_i dW'^T + dz1 W^T + da gam (dW' still the later state's gradient; the dS^T q part
         * is scan_bwd_pre's); dc, dgam, dbet (a thread a column); dtok; the flag set again for the next one */
        if (tid == 0) *flag = 1.0f;
        if (tc) {
            const int nt = d / 8;
            for (int tile = warp; tile < (bs / 16) * nt; tile += WARPS) {
                const int m0 = tile / nt * 16, n0 = tile % nt * 8, g = lane >> 2;
                float a4[4] = {0, 0, 0, 0};
                mma_f32x3(a4, d, G + m0 * P, P, 1, dW + n0 * DL, 1, DL, lane);
                a4[0] *= -tl * e[m0 + g], a4[1] *= -tl * e[m0 + g], a4[2] *= -tl * e[m0 + g + 8], a4[3] *= -tl * e[m0 + g + 8];
                mma_f32x3(a4, d, DZ1 + m0 * P, P, 1, W + n0 * L, 1, L, lane);
                TSCAN_MMA_STORE(m0, n0, a4, lane, p.dk[(r0 + row) * d + col] += acc + XHQ[row * P + col]);
            }
        } else {
            for (int u = tid; u < Tile<2, 2>::count(bs, d); u += THREADS) {
                Tile<2, 2> t(u, bs, d);
                t.mac(d, G, P, 1, dW, 1, DL);
#pragma unroll
                for (int ii = 0; ii < 2; ii++)
#pragma unroll
                    for (int jj = 0; jj < 2; jj++) t.acc[ii][jj] *= -tl * e[t.row[ii]];
                t.mac(d, DZ1, P, 1, W, 1, L);
                TSCAN_STORE(t, 2, 2, p.dk[(r0 + row) * d + col] += acc + XHQ[row * P + col]);
            }
        }
        for (int j = tid; j < d; j += THREADS) {
            float accc = 0, ag = iDgam[j], ab = iDbet[j];
            for (int i = 0; i < bs; i++) accc += DZQ[i * P + j] + DZ1[i * P + j], ag += U[i * P + j], ab += XHQ[i * P + j];
            dc[j] += accc, dgam[j] += ag, dbet[j] += ab;
        }
        for (int i = tid; i < bs; i += THREADS) {
            float s = iDtok[i];
            if (i == bs - 1)
                for (int t = 0; t < bs; t++) s -= e[t] * RSQ[t];
            dtk[i] += s;
        }
        __syncthreads();
        /* dW += Q^T dzq + K^T dz1: now the gradient of the state before this mini-batch */
        if (tc) {
            const int nt = d / 8;
            for (int tile = warp; tile < (d / 16) * nt; tile += WARPS) {
                const int m0 = tile / nt * 16, n0 = tile % nt * 8;
                float a4[4] = {0, 0, 0, 0};
                mma_f32x3(a4, bs, Q + m0, 1, P, DZQ + n0, P, 1, lane);
                mma_f32x3(a4, bs, K + m0, 1, P, DZ1 + n0, P, 1, lane);
                TSCAN_MMA_STORE(m0, n0, a4, lane, dW[row * DL + col] += acc);
            }
        } else {
            for (int u = tid; u < Tile<4, 4>::count(d, d); u += THREADS) {
                Tile<4, 4> t(u, d, d);
                t.mac(bs, Q, 1, P, DZQ, P, 1);
                t.mac(bs, K, 1, P, DZ1, P, 1);
                TSCAN_STORE(t, 4, 4, dW[row * DL + col] += acc);
            }
        }
    }
    __syncthreads();
    for (int x = tid; x < d * d; x += THREADS) p.dw0[bh * d * d + x] = dW[(x / d) * DL + x % d];
    for (int j = tid; j < d; j += THREADS) {
        p.db0[bh * d + j] = dc[j], p.dln_w[bh * d + j] = dgam[j], p.dln_b[bh * d + j] = dbet[j];
    }
    for (int i = tid; i < bs; i += THREADS) p.dtok[bh * bs + i] = dtk[i];
}

#undef TSCAN_STORE
#undef TSCAN_MMA_STORE

}  // namespace tscan

#endif
