/* The TTT-Linear scan's low-latency kernels (opt-in: TTT_SCAN_V2=1, ttt_scan.cu), d 64 and mini-batch 16
 * only, the products on the tensor cores (mma.sync m16n8k16, f32 operands split into bf16 hi + lo, three
 * products: split_bf16.cuh's scheme, ~2^-16 relative). Included by ttt_scan.cu after
 * ttt_scan.cuh, and by the host emulator's test.
 *
 * Why: the one-block-per-(batch, head) scans spend ~11 us a mini-batch (docs/results-mixers.md) on a
 * serial chain of shared-memory round trips and barriers, not on arithmetic. Here only the chain that
 * carries the state from one mini-batch to the next is serial, and it is kept short:
 *
 * - the state lives in registers. Four warps (128 threads) per (batch, head); warp w owns the rows
 *   j in [16 w, 16 w + 16) of W^T (the columns of W), as mma C fragments: 8 tiles of 16 x 8, 32 floats a
 *   lane. The forward's z1^T = W^T K^T + c takes its A operand straight from those registers (the C
 *   layout of two neighbouring 16 x 8 tiles is the A layout of one 16 x 16 tile), and the update
 *   W^T -= (tl e o G)^T K has W^T as its accumulator, its A operand the warp's own G^T fragment: no
 *   shared memory round trip for W, no block barrier around the products;
 * - a warp's z1^T rows are 16 of the 64 features of each token, so the layer norm's statistics need the
 *   other warps: each warp reduces its 16 features by shuffles and the four partials meet in shared
 *   memory. The mean and the centred sum of squares go as one pair (Chan's combination of partial
 *   means and M2s: no E[z^2] - E[z]^2 cancellation), the gradient's two means as another: two
 *   exchanges, so three barriers a mini-batch in all (the third: the next mini-batch's rows have
 *   landed), against four (forward) and five plus the per-mini-batch kernel's (backward) before;
 * - the next mini-batch's rows come in with cp.async into the other half of a double buffer while this
 *   one computes, so the loop never waits on global memory at its top;
 * - what does not feed the next mini-batch leaves the serial kernel. Forward: the outputs (zq = Q W + c -
 *   M G, its layer norm), computed for all mini-batches at once by ttt_scan.cuh's scan_fwd_o from the
 *   state at each mini-batch's start and G (TTT_SCAN_SPLIT's second kernel). Backward: scan_bwd_pre as
 *   before; the reverse scan bwd2 keeps U = K dW' + dc', the LN + L2 backward and dW += K^T dz1 + Q^T dzq,
 *   and stores dW' and dz1 per mini-batch; bwd2_post (one block per mini-batch) then adds dk's
 *   -tl e G dW'^T + dz1 W^T + da gam and deta's -tl U . G.
 *
 * Per mini-batch and warp the serial kernels issue 48 mma (forward) and 72 (backward: U, then the
 * rank-16 update from [dz1; dzq] and [K; Q]); at B H = 12 that is all the work the chain has.
 *
 * Which calls: d 64, b 16, Fwd::mma != 0 (bf16 inputs, or contexts that allow f32 on the tensor cores).
 * For Fwd::mma 1 the per-mini-batch choice of the old kernels (tensor cores only where q and k are bf16
 * values) becomes one choice for the call: qk_bf16 clears a device flag where any q or k value is not a
 * bf16 value, and the kernels read it (Fwd::gate, gate_on): these run where it is set, the old kernels
 * (FMA tiles for f32 data) where it is not, so f32 data keeps f32's FMAs and no host sync is needed. */
#ifndef TTT_SCAN2_CUH
#define TTT_SCAN2_CUH

namespace tscan2 {

using tscan::Bwd;
using tscan::Fwd;

enum { D = 64, BS = 16, NW = 4, THREADS = 32 * NW, P = 72 /* row stride of [16, 64] buffers */ };
static_assert(BS * 16 % THREADS == 0, "load_rows' unrolled loop");

/* gate: run this kernel? (Fwd/Bwd::gate NULL: always) */
__device__ __forceinline__ bool gated_off(const int *gate, int gate_on) { return gate && ((*gate != 0) != (gate_on != 0)); }

__device__ __forceinline__ void cp16(void *dst, const void *src) {
#ifdef TTT_EMU
    emu::cp_async(dst, src, 16, 16);
#else
    const uint32_t d = (uint32_t)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src));
#endif
}
__device__ __forceinline__ void cp_commit() {
#ifdef TTT_EMU
    emu::cp_commit();
#else
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}
__device__ __forceinline__ void cp_wait_all() {
#ifdef TTT_EMU
    emu::cp_wait(0);
#else
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
#endif
}

using splitbf16::mma3; /* acc += A B, A = ah + al, B = bh + bl, dropping al bl */
/* The A fragment (16 x 16, row-major) of two neighbouring C tiles x0 (k 0..7) and x1 (k 8..15), split */
__device__ __forceinline__ void a_from_c(const float (&x0)[4], const float (&x1)[4], uint32_t (&ah)[4], uint32_t (&al)[4]) {
    splitbf16::split2(x0[0], x0[1], ah[0], al[0]);
    splitbf16::split2(x0[2], x0[3], ah[1], al[1]);
    splitbf16::split2(x1[0], x1[1], ah[2], al[2]);
    splitbf16::split2(x1[2], x1[3], ah[3], al[3]);
}
/* The B fragment (k 16 x n 8) at B(k, n) = X[(n0 + n) P + k0 + k] (rows of X along k: float2 loads) */
__device__ __forceinline__ void b_rows(const float *X, int k0, int n0, int g, int t, uint32_t (&bh)[2], uint32_t (&bl)[2]) {
    const float *r = X + (n0 + g) * P + k0 + 2 * t;
    const float2 x0 = *reinterpret_cast<const float2 *>(r), x1 = *reinterpret_cast<const float2 *>(r + 8);
    splitbf16::split2(x0.x, x0.y, bh[0], bl[0]);
    splitbf16::split2(x1.x, x1.y, bh[1], bl[1]);
}
/* The B fragment (k 16 x n 8) at B(k, n) = X[k P + n0 + n] (X's 16 rows are the k) */
__device__ __forceinline__ void b_cols(const float *X, int n0, int g, int t, uint32_t (&bh)[2], uint32_t (&bl)[2]) {
    const float *c = X + n0 + g;
    splitbf16::split2(c[(2 * t) * P], c[(2 * t + 1) * P], bh[0], bl[0]);
    splitbf16::split2(c[(2 * t + 8) * P], c[(2 * t + 9) * P], bh[1], bl[1]);
}
/* acc[ni] (C layout, rows j of the warp, tokens 8 ni ..) += A X^T for the warp's 16 x 64 A held as C tiles
 * (A[nt]: columns 8 nt ..) and X's 16 rows (stride P): four 16-deep steps, even and odd ones in two
 * accumulators (two chains of six mma per tile instead of one of twelve), added at the end */
__device__ __forceinline__ void times_rows_t(float (&acc)[2][4], const float (&A)[8][4], const float *X, int g, int t) {
    float odd[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
#pragma unroll
    for (int kc = 0; kc < 4; kc++) {
        uint32_t ah[4], al[4];
        a_from_c(A[2 * kc], A[2 * kc + 1], ah, al);
#pragma unroll
        for (int ni = 0; ni < 2; ni++) {
            uint32_t bh2[2], bl2[2];
            b_rows(X, 16 * kc, 8 * ni, g, t, bh2, bl2);
            mma3(kc & 1 ? odd[ni] : acc[ni], ah, al, bh2, bl2);
        }
    }
#pragma unroll
    for (int ni = 0; ni < 2; ni++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[ni][e] += odd[ni][e];
}

/* the mean and centred sum of squares (M2) of the warp's 16 rows of a column, from a lane's two (x0, x1):
 * pairs combined by Chan's rule at each shuffle level (one pass, no E[x^2] - E[x]^2 cancellation) */
__device__ __forceinline__ void mean_m2_g(float x0, float x1, float &mean, float &m2) {
    mean = 0.5f * (x0 + x1), m2 = 0.5f * (x0 - x1) * (x0 - x1);
    float f = 1.0f; /* n_a n_b / (n_a + n_b) for two halves of 2, 4, 8 */
#pragma unroll
    for (int o = 4; o <= 16; o <<= 1, f *= 2.0f) {
        const float mo = __shfl_xor_sync(0xffffffffu, mean, o), m2o = __shfl_xor_sync(0xffffffffu, m2, o);
        const float dl = mo - mean;
        m2 = (m2 + m2o) + f * dl * dl;
        mean = 0.5f * (mean + mo);
    }
}

/* sum over the 8 lanes of a warp with the same t (lane & 3): the warp's 16 rows j of one column */
__device__ __forceinline__ float sum_g(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 4);
    v += __shfl_xor_sync(0xffffffffu, v, 8);
    v += __shfl_xor_sync(0xffffffffu, v, 16);
    return v;
}
/* sum over the 4 lanes of a warp with the same g */
__device__ __forceinline__ float sum_t(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    v += __shfl_xor_sync(0xffffffffu, v, 2);
    return v;
}

/* A lane's elements of a [j, i] C-layout pair of tiles: ni (tokens 8 ni ..), e (row g + 8 (e >> 1), token
 * 2 t + (e & 1)); its four tokens tok(ni, c) = 8 ni + 2 t + c are held twice, e = c and c + 2. */

/* one mini-batch's rows into a buffer of the double buffer: NMAT [16, 64] matrices from src[m] (row-major,
 * 16-byte aligned) into dst + m 16 P, and ntail floats (a multiple of 4) from tail to dst + NMAT 16 P
 * (unrolled, so src stays in registers) */
template <int NMAT>
__device__ __forceinline__ void load_rows(float *dst, const float *const (&src)[NMAT], const float *tail, int ntail, int tid) {
#pragma unroll
    for (int m = 0; m < NMAT; m++)
#pragma unroll
        for (int s = 0; s < BS * 16 / THREADS; s++) {
            const int x = tid + s * THREADS, r = x / 16, c4 = x % 16;
            cp16(dst + m * BS * P + r * P + 4 * c4, src[m] + r * D + 4 * c4);
        }
    for (int x = tid; x < ntail / 4; x += THREADS) cp16(dst + NMAT * BS * P + 4 * x, tail + 4 * x);
}

/* ---- forward: the serial walk of the state (outputs by tscan::scan_fwd_o) ---- */
enum { FBUF = 2 * BS * P + BS }; /* K, V rows and eta */
inline size_t fwd_smem_floats() { return 2 * (size_t)FBUF + 2 * 2 * NW * BS; }

/* Writes the state at each mini-batch's start (w_st, b_st), G of every token (g_buf) and the final
 * state; scan_fwd_o then computes out. */
__global__ void __launch_bounds__(THREADS) fwd_h(Fwd p) {
    if (gated_off(p.gate, p.gate_on)) return;
    float *sm = TTT_SCAN_SMEM();
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, g = lane >> 2, t = lane & 3, N = p.N;
    const int64_t bh = blockIdx.x;
    const int h = (int)(bh % p.H);
    float2 *ex1 = reinterpret_cast<float2 *>(sm + 2 * FBUF), *ex2 = ex1 + NW * BS;
    const float *w0 = p.w0 + (p.w0_batched ? bh : h) * (int64_t)D * D, *b0 = p.b0 + (p.b0_batched ? bh : h) * (int64_t)D;
    const int jr[2] = {16 * w + g, 16 * w + g + 8};
    float WT[8][4], c[2], gam[2], bet[2];
#pragma unroll
    for (int nt = 0; nt < 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) WT[nt][e] = w0[(8 * nt + 2 * t + (e & 1)) * D + jr[e >> 1]];
#pragma unroll
    for (int r = 0; r < 2; r++) c[r] = b0[jr[r]], gam[r] = p.ln_w[h * D + jr[r]], bet[r] = p.ln_b[h * D + jr[r]];
    const float tl = p.tok[BS - 1], eps = p.eps;
    {
        const int64_t r0 = bh * p.T;
        const float *src[2] = {p.k + r0 * D, p.v + r0 * D};
        load_rows(sm, src, p.eta + r0, BS, tid);
        cp_commit();
    }
    for (int n = 0; n < N; n++) {
        const int64_t r0 = bh * p.T + (int64_t)n * BS;
        cp_wait_all();
        __syncthreads(); /* this mini-batch's rows have landed; everyone is done with the other buffer */
        if (n + 1 < N) {
            const float *src[2] = {p.k + (r0 + BS) * D, p.v + (r0 + BS) * D};
            load_rows(sm + ((n + 1) & 1) * FBUF, src, p.eta + r0 + BS, BS, tid);
            cp_commit();
        }
        const float *K = sm + (n & 1) * FBUF, *V = K + BS * P, *E = V + BS * P;
        /* what the chain needs later from this mini-batch's rows, read now, off it: the update's B
         * fragments (K), the targets v - k and eta at the lane's elements */
        uint32_t kbh[8][2], kbl[8][2];
#pragma unroll
        for (int nt = 0; nt < 8; nt++) b_cols(K, 8 * nt, g, t, kbh[nt], kbl[nt]);
        float tgt[2][4], et[2][2];
#pragma unroll
        for (int ni = 0; ni < 2; ni++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int o = (8 * ni + 2 * t + (e & 1)) * P + jr[e >> 1];
                tgt[ni][e] = V[o] - K[o];
            }
#pragma unroll
        for (int ni = 0; ni < 2; ni++)
#pragma unroll
            for (int cc = 0; cc < 2; cc++) et[ni][cc] = E[8 * ni + 2 * t + cc];
        { /* the state at the mini-batch's start */
            float *ws = p.w_st + (bh * N + n) * (int64_t)D * D;
#pragma unroll
            for (int nt = 0; nt < 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) ws[(8 * nt + 2 * t + (e & 1)) * D + jr[e >> 1]] = WT[nt][e];
            if (t == 0) p.b_st[(bh * N + n) * D + jr[0]] = c[0], p.b_st[(bh * N + n) * D + jr[1]] = c[1];
        }
        /* z1^T = W^T K^T + c */
        float z[2][4];
#pragma unroll
        for (int ni = 0; ni < 2; ni++)
#pragma unroll
            for (int e = 0; e < 4; e++) z[ni][e] = c[e >> 1];
        times_rows_t(z, WT, K, g, t);
        /* the layer norm's statistics of each token: the warp's 16 features, then the four warps' (Chan) */
#pragma unroll
        for (int ni = 0; ni < 2; ni++)
#pragma unroll
            for (int cc = 0; cc < 2; cc++) {
                float ml, m2;
                mean_m2_g(z[ni][cc], z[ni][cc + 2], ml, m2);
                if (g == 0) ex1[w * BS + 8 * ni + 2 * t + cc] = float2{ml, m2};
            }
        __syncthreads();
        float xh[2][4], gx[2][4], rstd[2][2];
#pragma unroll
        for (int ni = 0; ni < 2; ni++)
#pragma unroll
            for (int cc = 0; cc < 2; cc++) {
                const int i = 8 * ni + 2 * t + cc;
                float2 s[NW];
#pragma unroll
                for (int u = 0; u < NW; u++) s[u] = ex1[u * BS + i];
                const float mean = ((s[0].x + s[1].x) + (s[2].x + s[3].x)) * 0.25f;
                float m2 = (s[0].y + s[1].y) + (s[2].y + s[3].y), dm = 0;
#pragma unroll
                for (int u = 0; u < NW; u++) dm += (s[u].x - mean) * (s[u].x - mean);
                m2 += 16.0f * dm;
                const float rs = 1.0f / sqrtf(m2 / (float)D + eps);
                rstd[ni][cc] = rs;
                float s1 = 0, s2 = 0;
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    const int e = cc + 2 * r;
                    const float x = (z[ni][e] - mean) * rs;
                    const float gv = gam[r] * (gam[r] * x + bet[r] - tgt[ni][e]);
                    xh[ni][e] = x, gx[ni][e] = gv;
                    s1 += gv, s2 += gv * x;
                }
                s1 = sum_g(s1), s2 = sum_g(s2);
                if (g == 0) ex2[w * BS + i] = float2{s1, s2};
            }
        __syncthreads();
        /* G = rstd (gx - m1 - xh m2); the update's operand -tl e_i G_i (in place of z) */
        float *gb = p.g_buf + r0 * D;
        float dc[2] = {0, 0};
#pragma unroll
        for (int ni = 0; ni < 2; ni++)
#pragma unroll
            for (int cc = 0; cc < 2; cc++) {
                const int i = 8 * ni + 2 * t + cc;
                float2 s[NW];
#pragma unroll
                for (int u = 0; u < NW; u++) s[u] = ex2[u * BS + i];
                const float m1 = ((s[0].x + s[1].x) + (s[2].x + s[3].x)) / (float)D;
                const float m2 = ((s[0].y + s[1].y) + (s[2].y + s[3].y)) / (float)D;
                const float sc = -tl * et[ni][cc];
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    const int e = cc + 2 * r;
                    const float G = rstd[ni][cc] * (gx[ni][e] - m1 - xh[ni][e] * m2);
                    gb[i * D + jr[r]] = G;
                    z[ni][e] = sc * G;
                    dc[r] += z[ni][e];
                }
            }
#pragma unroll
        for (int r = 0; r < 2; r++) c[r] += sum_t(dc[r]);
        /* W^T -= (tl e o G)^T K */
        uint32_t ah[4], al[4];
        a_from_c(z[0], z[1], ah, al);
#pragma unroll
        for (int nt = 0; nt < 8; nt++) mma3(WT[nt], ah, al, kbh[nt], kbl[nt]);
    }
#pragma unroll
    for (int nt = 0; nt < 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) p.w_out[bh * D * D + (8 * nt + 2 * t + (e & 1)) * D + jr[e >> 1]] = WT[nt][e];
    if (t == 0) p.b_out[bh * D + jr[0]] = c[0], p.b_out[bh * D + jr[1]] = c[1];
}

/* ---- backward: the reverse scan over the carried dW', dc' (after tscan::scan_bwd_pre) ---- */
/* a buffer: Q, K, V rows, scan_bwd_pre's G, LN(z1), gx, dzq, partial dG; then its rstd(z1), partial dtok
 * [16], dgam, dbet [64] (the scratch's tail, in that order), then eta [16] */
enum { NM = 8, TAIL = 2 * BS + 2 * D, BBUF = NM * BS * P + TAIL + BS, EX1W = 8 };
inline size_t bwd_smem_floats() { return 2 * (size_t)BBUF + (size_t)NW * BS * EX1W + 2 * NW * BS; }
/* what bwd2 hands to bwd2_post, per mini-batch: dW'^T [64, 64] (row j: dW' column j), dz1 [16, 64], U_i . G_i
 * [16] */
__host__ __device__ inline size_t post_floats() { return (size_t)D * D + BS * D + BS; }

__device__ __forceinline__ void bwd_load(const Bwd &p, float *dst, int64_t bh, int n, int tid) {
    const int64_t r0 = bh * p.T + (int64_t)n * BS;
    const float *in = p.scr + (bh * p.N + n) * (int64_t)tscan::bwd_scratch_floats(D, BS);
    const float *src[NM] = {p.q + r0 * D, p.k + r0 * D, p.v + r0 * D, in, in + BS * D, in + 2 * BS * D, in + 3 * BS * D, in + 4 * BS * D};
    load_rows(dst, src, in + 5 * BS * D, TAIL, tid);
    for (int x = tid; x < BS / 4; x += THREADS) cp16(dst + NM * BS * P + TAIL + 4 * x, p.eta + r0 + 4 * x);
}

__global__ void __launch_bounds__(THREADS) bwd2(Bwd p) {
    if (gated_off(p.gate, p.gate_on)) return;
    float *sm = TTT_SCAN_SMEM();
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, g = lane >> 2, t = lane & 3, N = p.N;
    const int64_t bh = blockIdx.x;
    const int h = (int)(bh % p.H);
    float *ex1 = sm + 2 * BBUF;
    float2 *ex2 = reinterpret_cast<float2 *>(ex1 + NW * BS * EX1W);
    const int jr[2] = {16 * w + g, 16 * w + g + 8};
    float dWT[8][4], dc[2], gam[2], bet[2], dgam[2] = {0, 0}, dbet[2] = {0, 0}, dtk = 0;
#pragma unroll
    for (int nt = 0; nt < 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) dWT[nt][e] = p.dw_out ? p.dw_out[bh * D * D + (8 * nt + 2 * t + (e & 1)) * D + jr[e >> 1]] : 0.0f;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        dc[r] = p.db_out ? p.db_out[bh * D + jr[r]] : 0.0f;
        gam[r] = p.ln_w[h * D + jr[r]], bet[r] = p.ln_b[h * D + jr[r]];
    }
    const float tl = p.tok[BS - 1];
    bwd_load(p, sm + ((N - 1) & 1) * BBUF, bh, N - 1, tid);
    cp_commit();
    for (int n = N - 1; n >= 0; n--) {
        const int64_t r0 = bh * p.T + (int64_t)n * BS;
        cp_wait_all();
        __syncthreads(); /* this mini-batch's rows have landed; everyone is done with the other buffer */
        if (n > 0) {
            bwd_load(p, sm + ((n - 1) & 1) * BBUF, bh, n - 1, tid);
            cp_commit();
        }
        const float *buf = sm + (n & 1) * BBUF;
        const float *Q = buf, *K = Q + BS * P, *V = K + BS * P, *G = V + BS * P, *XH = G + BS * P, *GX = XH + BS * P;
        const float *DZQ = GX + BS * P, *DG = DZQ + BS * P, *RS1 = DG + BS * P, *Dtok = RS1 + BS, *Dgam = Dtok + BS;
        const float *Dbet = Dgam + D, *E = Dbet + D;
        float *post = p.post + (bh * N + n) * (int64_t)post_floats();
        /* dW' (the gradient of the state after this mini-batch), for bwd2_post's dk */
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
#pragma unroll
            for (int r = 0; r < 2; r++)
                *reinterpret_cast<float2 *>(post + jr[r] * D + 8 * nt + 2 * t) = float2{dWT[nt][2 * r], dWT[nt][2 * r + 1]};
        /* U^T = dW'^T K^T + dc' */
        float u[2][4];
#pragma unroll
        for (int ni = 0; ni < 2; ni++)
#pragma unroll
            for (int e = 0; e < 4; e++) u[ni][e] = dc[e >> 1];
        times_rows_t(u, dWT, K, g, t);
        /* dW^T += dzq^T Q now (dW' is stored and U has it): off the chain, beside the row sums' shuffles */
        float dzq[2][4], ddc[2] = {0, 0};
#pragma unroll
        for (int ni = 0; ni < 2; ni++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                dzq[ni][e] = DZQ[(8 * ni + 2 * t + (e & 1)) * P + jr[e >> 1]];
                ddc[e >> 1] += dzq[ni][e];
            }
        {
            uint32_t a2h[4], a2l[4];
            a_from_c(dzq[0], dzq[1], a2h, a2l);
#pragma unroll
            for (int nt = 0; nt < 8; nt++) {
                uint32_t bh2[2], bl2[2];
                b_cols(Q, 8 * nt, g, t, bh2, bl2);
                mma3(dWT[nt], a2h, a2l, bh2, bl2);
            }
        }
        /* dG = -tl e_i U_i + scan_bwd_pre's part; the LN + L2 backward's row sums: dG, dG xh, gx xh, dG G, U G */
        float dg[2][4], xh[2][4], gxv[2][4];
#pragma unroll
        for (int ni = 0; ni < 2; ni++)
#pragma unroll
            for (int cc = 0; cc < 2; cc++) {
                const int i = 8 * ni + 2 * t + cc;
                float s[5] = {0, 0, 0, 0, 0};
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    const int e = cc + 2 * r, o = i * P + jr[r];
                    const float gv = G[o], x = XH[o], gxx = GX[o];
                    const float d = -tl * E[i] * u[ni][e] + DG[o];
                    dg[ni][e] = d, xh[ni][e] = x, gxv[ni][e] = gxx;
                    s[0] += d, s[1] += d * x, s[2] += gxx * x, s[3] += d * gv, s[4] += u[ni][e] * gv;
                }
#pragma unroll
                for (int q = 0; q < 5; q++) s[q] = sum_g(s[q]);
                if (g == 0)
#pragma unroll
                    for (int q = 0; q < 5; q++) ex1[(w * BS + i) * EX1W + q] = s[q];
            }
        __syncthreads();
        float dxh[2][4], rsv[2][2], drs[2][2], sug[2][2];
#pragma unroll
        for (int ni = 0; ni < 2; ni++)
#pragma unroll
            for (int cc = 0; cc < 2; cc++) {
                const int i = 8 * ni + 2 * t + cc;
                float s[5];
#pragma unroll
                for (int q = 0; q < 5; q++)
                    s[q] = (ex1[(0 * BS + i) * EX1W + q] + ex1[(1 * BS + i) * EX1W + q]) +
                           (ex1[(2 * BS + i) * EX1W + q] + ex1[(3 * BS + i) * EX1W + q]);
                const float rstd = RS1[i], mu = s[0] / (float)D, mux = s[1] / (float)D, m2 = s[2] / (float)D;
                rsv[ni][cc] = rstd, drs[ni][cc] = s[3] / rstd, sug[ni][cc] = s[4];
                float s1 = 0, s2 = 0;
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    const int e = cc + 2 * r, o = i * P + jr[r];
                    const float x = xh[ni][e], d = dg[ni][e];
                    const float da = rstd * (d - mu - x * mux);
                    const float ymt = gam[r] * x + bet[r] - (V[o] - K[o]);
                    const float dx = -rstd * (d * m2 + gxv[ni][e] * mux) + da * gam[r] * gam[r];
                    dgam[r] += da * ymt + da * gam[r] * x;
                    dbet[r] += da * gam[r];
                    p.dv[(r0 + i) * D + jr[r]] = -da * gam[r];
                    dxh[ni][e] = dx;
                    s1 += dx, s2 += dx * x;
                }
                s1 = sum_g(s1), s2 = sum_g(s2);
                if (g == 0) ex2[w * BS + i] = float2{s1, s2};
            }
        /* U_i . G_i for deta (bwd2_post) and dtok; scan_bwd_pre's partial dtok, dgam, dbet */
        if (w == 0) {
            float es = 0;
#pragma unroll
            for (int ni = 0; ni < 2; ni++)
#pragma unroll
                for (int cc = 0; cc < 2; cc++) {
                    const int i = 8 * ni + 2 * t + cc;
                    es += E[i] * sug[ni][cc];
                    if (g == 0) post[D * D + BS * D + i] = sug[ni][cc];
                }
            es = sum_t(es);
            if (lane < BS) dtk += Dtok[lane];
            if (lane == BS - 1) dtk -= es;
        }
        if (t == 0)
#pragma unroll
            for (int r = 0; r < 2; r++) dgam[r] += Dgam[jr[r]], dbet[r] += Dbet[jr[r]];
        __syncthreads();
        /* dz1 = rstd (dxh - mean dxh - xh mean(dxh xh)) - drs rstd^2 xh / d */
#pragma unroll
        for (int ni = 0; ni < 2; ni++)
#pragma unroll
            for (int cc = 0; cc < 2; cc++) {
                const int i = 8 * ni + 2 * t + cc;
                float2 s[NW];
#pragma unroll
                for (int q = 0; q < NW; q++) s[q] = ex2[q * BS + i];
                const float mdx = ((s[0].x + s[1].x) + (s[2].x + s[3].x)) / (float)D;
                const float mdxx = ((s[0].y + s[1].y) + (s[2].y + s[3].y)) / (float)D;
                const float rstd = rsv[ni][cc];
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    const int e = cc + 2 * r;
                    const float x = xh[ni][e];
                    const float d1 = rstd * (dxh[ni][e] - mdx - x * mdxx) - drs[ni][cc] * rstd * rstd * x / (float)D;
                    dxh[ni][e] = d1;
                    post[D * D + i * D + jr[r]] = d1;
                    ddc[r] += d1;
                }
            }
#pragma unroll
        for (int r = 0; r < 2; r++) dc[r] += sum_t(ddc[r]);
        /* dW^T += dz1^T K: now the gradient of the state before this mini-batch */
        uint32_t a1h[4], a1l[4];
        a_from_c(dxh[0], dxh[1], a1h, a1l);
#pragma unroll
        for (int nt = 0; nt < 8; nt++) {
            uint32_t bh2[2], bl2[2];
            b_cols(K, 8 * nt, g, t, bh2, bl2);
            mma3(dWT[nt], a1h, a1l, bh2, bl2);
        }
    }
#pragma unroll
    for (int nt = 0; nt < 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) p.dw0[bh * D * D + (8 * nt + 2 * t + (e & 1)) * D + jr[e >> 1]] = dWT[nt][e];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        dgam[r] = sum_t(dgam[r]), dbet[r] = sum_t(dbet[r]);
        if (t == 0) p.db0[bh * D + jr[r]] = dc[r], p.dln_w[bh * D + jr[r]] = dgam[r], p.dln_b[bh * D + jr[r]] = dbet[r];
    }
    if (w == 0 && lane < BS) p.dtok[bh * BS + lane] = dtk;
}

/* ---- backward, after bwd2: one block (256 threads) per (batch, head, mini-batch) ----
 * dk += -tl e_i G_i dW'^T + dz1_i W^T - dv_i (the target v - k's part, da gam), deta += -tl U_i . G_i */
enum { PT = 256, DL = D + 1 };
inline size_t post_smem_floats() { return 2 * (size_t)D * DL + 2 * (size_t)BS * DL + 2 * BS; }

__global__ void __launch_bounds__(PT) bwd2_post(Bwd p) {
    if (gated_off(p.gate, p.gate_on)) return;
    float *sm = TTT_SCAN_SMEM();
    const int tid = threadIdx.x, N = p.N;
    const int64_t bh = blockIdx.x / N;
    const int n = (int)(blockIdx.x % N);
    const int64_t r0 = bh * p.T + (int64_t)n * BS;
    float *dWT = sm, *W = dWT + D * DL, *G = W + D * DL, *DZ1 = G + BS * DL, *e = DZ1 + BS * DL, *sug = e + BS;
    const float *post = p.post + (bh * N + n) * (int64_t)post_floats();
    const float *ws = p.w_st + (bh * N + n) * (int64_t)D * D;
    const float *iG = p.scr + (bh * N + n) * (int64_t)tscan::bwd_scratch_floats(D, BS);
    for (int x = tid; x < D * D; x += PT) dWT[(x / D) * DL + x % D] = post[x], W[(x / D) * DL + x % D] = ws[x];
    for (int x = tid; x < BS * D; x += PT) G[(x / D) * DL + x % D] = iG[x], DZ1[(x / D) * DL + x % D] = post[D * D + x];
    for (int i = tid; i < BS; i += PT) e[i] = p.eta[r0 + i], sug[i] = post[D * D + BS * D + i];
    __syncthreads();
    const float tl = p.tok[BS - 1];
    for (int i = tid; i < BS; i += PT) p.deta[r0 + i] += -tl * sug[i];
    for (int u = tid; u < tscan::Tile<2, 2>::count(BS, D); u += PT) {
        tscan::Tile<2, 2> tt(u, BS, D);
        tt.mac(D, G, DL, 1, dWT, DL, 1); /* G dW'^T: dW'^T's rows are dW''s columns */
#pragma unroll
        for (int ii = 0; ii < 2; ii++)
#pragma unroll
            for (int jj = 0; jj < 2; jj++) tt.acc[ii][jj] *= -tl * e[tt.row[ii]];
        tt.mac(D, DZ1, DL, 1, W, 1, DL); /* dz1 W^T */
#pragma unroll
        for (int ii = 0; ii < 2; ii++)
#pragma unroll
            for (int jj = 0; jj < 2; jj++)
                if (tt.ok(ii, jj)) {
                    const int64_t o = (r0 + tt.row[ii]) * D + tt.col[jj];
                    p.dk[o] += tt.acc[ii][jj] - p.dv[o];
                }
    }
}

/* mma 1: *flag = 0 where a q or k value of the call is not a bf16 value (the caller set it nonzero) */
__global__ void qk_bf16(const float4 *q, const float4 *k, int64_t n4, int *flag) {
    bool ok = true;
    for (int64_t x = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; x < n4; x += (int64_t)gridDim.x * blockDim.x) {
        const float4 a = q[x], b = k[x];
        ok = ok && tscan::is_bf16(a.x) && tscan::is_bf16(a.y) && tscan::is_bf16(a.z) && tscan::is_bf16(a.w) &&
             tscan::is_bf16(b.x) && tscan::is_bf16(b.y) && tscan::is_bf16(b.z) && tscan::is_bf16(b.w);
    }
    if (!ok) *flag = 0;
}

}  // namespace tscan2

#endif
