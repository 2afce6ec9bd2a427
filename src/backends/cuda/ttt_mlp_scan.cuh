/* The fused TTT-MLP scan's CUDA kernels, included by ttt_mlp_scan.cu and by the host emulator's test
 * (dev/cuda/ttt_mlp_scan_emu_test.cpp). Templated on the real type R (the engine launches float; the
 * emulator test also runs double, to check the backward against finite differences of the forward).
 * The math is stated in src/composed/ttt_scan.c (MLP section); the steps follow the CPU kernels
 * (src/backends/cpu/cpu_ttt_scan_impl.h: mlp_scan_fwd, mlp_scan_bwd), whose comments name them.
 *
 * Layout choice. One block of 256 threads per (batch, head) walks its mini-batches in order (forward)
 * or in reverse (backward), as the Linear scan does. The state is W1 [d, F], b1 [F], W2 [F, d], b2 [d]:
 * 2 d F + F + d values, 129 KiB in f32 at d 64, F 256, which no block keeps in registers. Two regions:
 *   - the weights: the forward's W1 .. b2 being trained, the backward's carried gradients dW1 .. db2
 *     (the backward reads the weights themselves from the stored states, in global memory);
 *   - the mini-batch's buffers (q, k, v rows and every intermediate: 3 bs F + 7 bs d + bs^2 forward,
 *     10 bs F + 13 bs d + 6 bs^2 backward, plus a few vectors; fwd_buf_elems, bwd_buf_elems).
 * Fwd::mode / Bwd::mode say where they live: 2 both in shared memory, 1 the buffers in shared memory and
 * the weights in global memory (the kernel works in place in the output tensors w1_out .. b2_out, or
 * dw1 .. db2), 0 both in global memory (the buffers in a per-block scratch region). The launcher takes
 * the highest mode whose shared memory fits the device (f32, d 64, F 256, b 16 on H100's 227 KiB:
 * forward mode 2, 207 KiB; backward mode 1, 219 KiB); the kernels are the same code with other pointers.
 * Global memory is coherent within a block across __syncthreads, so the in-place updates in modes 1 and
 * 0 need no more barriers than shared memory does. Limits: one SM per (batch, head), so B H blocks fill
 * the GPU only from B H >= the SM count; and every product is a 2 x 2 register-tiled FMA loop (no
 * tensor cores; the A B^T ones skewed, see Tile): correct first, tuned later (docs/mixers.md).
 *
 * Every output element is summed by one thread in a fixed order: no atomics, the same bits on every run.
 * The includer defines TTT_MLP_SMEM() (a void * to the dynamic shared memory). */
#ifndef TTT_MLP_SCAN_CUH
#define TTT_MLP_SCAN_CUH

namespace tmlp {

enum { THREADS = 256, WARPS = THREADS / 32 };

template <typename R> struct Fwd {
    R *out, *w1_out, *b1_out, *w2_out, *b2_out, *st; /* st NULL: the states are not kept */
    const R *q, *k, *v, *eta, *tok, *ln_w, *ln_b, *w1, *b1, *w2, *b2;
    R *scr; /* mode 0: B H fwd_buf_elems values, the blocks' buffers */
    int H, T, d, F, bs, N;
    int w1_batched, b1_batched, w2_batched, b2_batched; /* the initial weights per sequence ([B, H, ..]) or not */
    int mode;                                            /* 2, 1, 0: see above */
    R eps;
};

template <typename R> struct Bwd {
    R *dq, *dk, *dv, *deta, *dtok, *dln_w, *dln_b, *dw1, *db1, *dw2, *db2;
    const R *dout, *dw1_out, *db1_out, *dw2_out, *db2_out; /* the final weights' gradients, NULL: zero */
    const R *q, *k, *v, *eta, *tok, *ln_w, *ln_b, *st;
    R *scr; /* mode 0: B H bwd_buf_elems values */
    int H, T, d, F, bs, N, mode;
    R eps;
};

/* the weights' values (W1 b1 W2 b2, one after another as the stored states keep them) */
inline __host__ __device__ size_t w_elems(int d, int F) { return 2 * (size_t)d * F + F + d; }
inline __host__ __device__ size_t fwd_buf_elems(int d, int F, int bs) {
    return 3 * (size_t)bs * F + 7 * (size_t)bs * d + (size_t)bs * bs + 3 * (size_t)bs + 2 * (size_t)d;
}
inline __host__ __device__ size_t bwd_buf_elems(int d, int F, int bs) {
    return 10 * (size_t)bs * F + 13 * (size_t)bs * d + 6 * (size_t)bs * bs + 7 * (size_t)bs + 4 * (size_t)d;
}
/* dynamic shared memory of a kernel in mode m, in elements of R */
inline size_t fwd_smem_elems(int d, int F, int bs, int m) { return (m == 2 ? w_elems(d, F) : 0) + (m ? fwd_buf_elems(d, F, bs) : 0); }
inline size_t bwd_smem_elems(int d, int F, int bs, int m) { return (m == 2 ? w_elems(d, F) : 0) + (m ? bwd_buf_elems(d, F, bs) : 0); }
/* the highest mode whose shared memory (of elements of elem bytes) fits limit bytes a block */
inline int pick_mode(bool fwd, int d, int F, int bs, size_t elem, size_t limit) {
    for (int m = 2; m > 0; m--)
        if ((fwd ? fwd_smem_elems(d, F, bs, m) : bwd_smem_elems(d, F, bs, m)) * elem <= limit) return m;
    return 0;
}

__device__ __forceinline__ float sqrt_(float x) { return sqrtf(x); }
__device__ __forceinline__ double sqrt_(double x) { return sqrt(x); }
__device__ __forceinline__ float tanh_(float x) { return tanhf(x); }
__device__ __forceinline__ double tanh_(double x) { return tanh(x); }

/* tanh-gelu, its derivative and its second derivative (cpu_ttt_scan_impl.h: gelu_rows, gelu_grad2_rows) */
template <typename R> __device__ __forceinline__ R gelu(R x, R *dg) {
    const R c = (R)0.7978845608028654, k = (R)0.044715, t = tanh_(c * (x + k * x * x * x));
    *dg = (R)0.5 * (1 + t) + (R)0.5 * x * (1 - t * t) * c * (1 + 3 * k * x * x);
    return (R)0.5 * x * (1 + t);
}
template <typename R> __device__ __forceinline__ R gelu2(R x) {
    const R c = (R)0.7978845608028654, k = (R)0.044715, t = tanh_(c * (x + k * x * x * x)), s = 1 - t * t;
    const R u1 = c * (1 + 3 * k * x * x);
    return s * u1 + (R)0.5 * x * s * (6 * c * k * x - 2 * t * u1 * u1);
}

/* A thread's TM x TN block of an m x n product (tscan::Tile's scheme: rows r0 + ii nrt, columns
 * c0 + jj nct; indices past m, n clamped for the loads and skipped on store). Work item u in
 * [0, count(m, n)), spread over the block by the caller. Two mappings of u:
 *  - ROWS false, for A B with B [K, n] row-major: a warp's 32 threads own neighbouring columns, so
 *    their loads of B are one row's neighbours and those of A one broadcast;
 *  - ROWS true, for A B^T (both read along K: B(a, j) = B[j sbj + a]): the threads of a warp own
 *    neighbouring rows first, then a few columns, and each starts its sum at a = u mod K and goes
 *    around, so at every step the warp's loads are 32 neighbouring a's over a few rows of B (neighbouring
 *    banks in shared memory, a few cache lines in global memory) where the other mapping would read 32
 *    rows of B at the same a (one bank; 32 cache lines). */
template <typename R, int TM, int TN, bool ROWS = false> struct Tile {
    int r0, c0, nrt, nct, m, n, a0;
    int row[TM], col[TN];
    R acc[TM][TN];
    static __device__ __forceinline__ int count(int m, int n) { return ((m + TM - 1) / TM) * ((n + TN - 1) / TN); }
    __device__ __forceinline__ Tile(int u, int m_, int n_) : m(m_), n(n_) {
        nrt = (m + TM - 1) / TM, nct = (n + TN - 1) / TN;
        if (ROWS) r0 = u % nrt, c0 = u / nrt;
        else r0 = u / nct, c0 = u % nct;
        a0 = ROWS ? u : 0;
#pragma unroll
        for (int ii = 0; ii < TM; ii++) row[ii] = r0 + ii * nrt < m ? r0 + ii * nrt : m - 1;
#pragma unroll
        for (int jj = 0; jj < TN; jj++) col[jj] = c0 + jj * nct < n ? c0 + jj * nct : n - 1;
#pragma unroll
        for (int ii = 0; ii < TM; ii++)
#pragma unroll
            for (int jj = 0; jj < TN; jj++) acc[ii][jj] = 0;
    }
    __device__ __forceinline__ bool ok(int ii, int jj) const { return r0 + ii * nrt < m && c0 + jj * nct < n; }
    /* acc[ii][jj] += sg * sum over a < K of A[row sai + a saa] B[a sba + col sbj] (sg = +-1), in a fixed
     * order: from a = 0, or (ROWS) from a = u mod K around */
    __device__ __forceinline__ void mac(int K, const R *A, int sai, int saa, const R *B, int sba, int sbj, R sg = 1) {
        const R *pa[TM], *pb[TN];
#pragma unroll
        for (int ii = 0; ii < TM; ii++) pa[ii] = A + (size_t)row[ii] * sai;
#pragma unroll
        for (int jj = 0; jj < TN; jj++) pb[jj] = B + (size_t)col[jj] * sbj;
        int a = a0 % K;
        for (int step = 0; step < K; step++, a = a + 1 == K ? 0 : a + 1) {
            R x[TM], y[TN];
#pragma unroll
            for (int ii = 0; ii < TM; ii++) x[ii] = sg * pa[ii][(size_t)a * saa];
#pragma unroll
            for (int jj = 0; jj < TN; jj++) y[jj] = pb[jj][(size_t)a * sba];
#pragma unroll
            for (int ii = 0; ii < TM; ii++)
#pragma unroll
                for (int jj = 0; jj < TN; jj++) acc[ii][jj] += x[ii] * y[jj];
        }
    }
};

/* for each 2 x 2 tile t of an m x n product owned by this thread: body (declares t) */
#define TMLP_TILES(R, m, n, t, ...)                                                     \
    for (int u_ = threadIdx.x; u_ < Tile<R, 2, 2>::count((m), (n)); u_ += THREADS) {  \
        Tile<R, 2, 2> t(u_, (m), (n));                                                  \
        __VA_ARGS__                                                                     \
    }
/* the same for A B^T products (Tile's ROWS mapping) */
#define TMLP_TILES_T(R, m, n, t, ...)                                                         \
    for (int u_ = threadIdx.x; u_ < Tile<R, 2, 2, true>::count((m), (n)); u_ += THREADS) {  \
        Tile<R, 2, 2, true> t(u_, (m), (n));                                                  \
        __VA_ARGS__                                                                           \
    }
/* runs stmt for each of tile t's outputs in range, with row, col, acc set */
#define TMLP_STORE(R, t, ...)                                                                                 \
    _Pragma("unroll") for (int ii = 0; ii < 2; ii++) _Pragma("unroll") for (int jj = 0; jj < 2; jj++) if ((t).ok(ii, jj)) { \
        const int row = (t).row[ii], col = (t).col[jj];                                                        \
        const R acc = (t).acc[ii][jj];                                                                         \
        __VA_ARGS__;                                                                                               \
    }

/* sum over t < n of x[a] y[a], a = (t + start) mod n: the lanes of a warp that read rows y a row apart
 * (start = their row) read neighbouring banks at every step */
template <typename R> __device__ __forceinline__ R dot_skew(const R *x, const R *y, int n, int start) {
    R s = 0;
    for (int t = 0, a = start % n; t < n; t++, a = a + 1 == n ? 0 : a + 1) s += x[a] * y[a];
    return s;
}

template <typename R> __device__ __forceinline__ R warp_sum(R v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* xh = LN(z) of one row (xh may be z), a warp's lanes over its columns; returns rstd */
template <typename R> __device__ __forceinline__ R ln_row(const R *z, R *xh, int d, R eps, int lane) {
    R s = 0;
    for (int j = lane; j < d; j += 32) s += z[j];
    const R mean = warp_sum(s) / (R)d;
    R var = 0;
    for (int j = lane; j < d; j += 32) var += (z[j] - mean) * (z[j] - mean);
    const R rstd = 1 / sqrt_(warp_sum(var) / (R)d + eps);
    for (int j = lane; j < d; j += 32) xh[j] = (z[j] - mean) * rstd;
    return rstd;
}

/* One row of the inner loss's gradient at z: xh (may be z), gx = gam (LN(z) gam + bet - (v - k)), gz */
template <typename R>
__device__ __forceinline__ R ln_l2_row(const R *z, const R *v, const R *k, const R *gam, const R *bet, R *xh, R *gx, R *gz,
                                       int d, R eps, int lane) {
    const R rstd = ln_row(z, xh, d, eps, lane);
    R s1 = 0, s2 = 0;
    for (int j = lane; j < d; j += 32) {
        gx[j] = gam[j] * (gam[j] * xh[j] + bet[j] - (v[j] - k[j]));
        s1 += gx[j], s2 += gx[j] * xh[j];
    }
    const R m1 = warp_sum(s1) / (R)d, m2 = warp_sum(s2) / (R)d;
    for (int j = lane; j < d; j += 32) gz[j] = rstd * (gx[j] - m1 - xh[j] * m2);
    return rstd;
}

/* The four weight pointers of one (batch, head): contiguous from base (mode 2: shared memory), or the
 * given global tensors at the (batch, head)'s offset. */
template <typename R> struct Weights {
    R *w1, *c1, *w2, *c2;
};
template <typename R>
__device__ __forceinline__ Weights<R> weights_at(R *base, R *g1, R *gb1, R *g2, R *gb2, int64_t bh, int d, int F) {
    Weights<R> w;
    if (base) w.w1 = base, w.c1 = base + (size_t)d * F, w.w2 = w.c1 + F, w.c2 = w.w2 + (size_t)F * d;
    else w.w1 = g1 + bh * d * F, w.c1 = gb1 + bh * F, w.w2 = g2 + bh * F * d, w.c2 = gb2 + bh * d;
    return w;
}

/* TTT-MLP's forward over the N mini-batches of one (batch, head) per block. */
template <typename R> __global__ void __launch_bounds__(THREADS) mlp_fwd(Fwd<R> p) {
    R *sm = reinterpret_cast<R *>(TTT_MLP_SMEM());
    const int d = p.d, F = p.F, bs = p.bs, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int64_t bh = blockIdx.x;
    const int h = (int)(bh % p.H);
    const size_t WE = w_elems(d, F);
    const Weights<R> w = weights_at(p.mode == 2 ? sm : (R *)nullptr, p.w1_out, p.b1_out, p.w2_out, p.b2_out, bh, d, F);
    R *W1 = w.w1, *c1 = w.c1, *W2 = w.w2, *c2 = w.c2;
    R *buf = p.mode == 2 ? sm + WE : p.mode == 1 ? sm : p.scr + bh * (int64_t)fwd_buf_elems(d, F, bs);
    R *X2 = buf, *G1 = X2 + bs * F, *XB = G1 + bs * F; /* [bs, F] */
    R *Q = XB + bs * F, *K = Q + bs * d, *V = K + bs * d, *XH = V + bs * d, *GX = XH + bs * d, *G2 = GX + bs * d;
    R *ZB2 = G2 + bs * d, *M = ZB2 + bs * d, *e = M + bs * bs, *tk = e + bs, *sc = tk + bs, *gam = sc + bs, *bet = gam + d;
    {
        const int64_t i1 = p.w1_batched ? bh : h, ib1 = p.b1_batched ? bh : h, i2 = p.w2_batched ? bh : h,
                      ib2 = p.b2_batched ? bh : h;
        for (int x = tid; x < d * F; x += THREADS) W1[x] = p.w1[i1 * d * F + x], W2[x] = p.w2[i2 * F * d + x];
        for (int x = tid; x < F; x += THREADS) c1[x] = p.b1[ib1 * F + x];
        for (int x = tid; x < d; x += THREADS) c2[x] = p.b2[ib2 * d + x], gam[x] = p.ln_w[h * d + x], bet[x] = p.ln_b[h * d + x];
        for (int x = tid; x < bs; x += THREADS) tk[x] = p.tok[x];
    }
    const R tl = p.tok[bs - 1];
    for (int n = 0; n < p.N; n++) {
        const int64_t r0 = bh * p.T + (int64_t)n * bs;
        __syncthreads(); /* the previous mini-batch's update is done */
        if (p.st) {
            R *dst = p.st + (bh * p.N + n) * (int64_t)WE; /* W1 b1 W2 b2 */
            for (int x = tid; x < d * F; x += THREADS) dst[x] = W1[x], dst[d * F + F + x] = W2[x];
            for (int x = tid; x < F; x += THREADS) dst[d * F + x] = c1[x];
            for (int x = tid; x < d; x += THREADS) dst[2 * d * F + F + x] = c2[x];
        }
        for (int x = tid; x < bs * d; x += THREADS) Q[x] = p.q[r0 * d + x], K[x] = p.k[r0 * d + x], V[x] = p.v[r0 * d + x];
        for (int x = tid; x < bs; x += THREADS) e[x] = p.eta[r0 + x];
        __syncthreads();
        /* z1 = K W1 + b1: x2 = gelu(z1) and gelu'(z1) (in G1 until the product below); M = tok_i e_j (q_i . k_j + 1) */
        TMLP_TILES(R, bs, F, t, {
            t.mac(d, K, d, 1, W1, F, 1);
            TMLP_STORE(R, t, R dg; X2[row * F + col] = gelu(acc + c1[col], &dg); G1[row * F + col] = dg);
        });
        for (int u = tid; u < bs * bs; u += THREADS) {
            const int i = u / bs, j = u % bs;
            R s = 0;
            if (j <= i) s = dot_skew(Q + i * d, K + j * d, d, j);
            M[u] = j <= i ? tk[i] * e[j] * (s + 1) : (R)0;
        }
        __syncthreads();
        /* z2 = x2 W2 + b2 */
        TMLP_TILES(R, bs, d, t, {
            t.mac(F, X2, F, 1, W2, d, 1);
            TMLP_STORE(R, t, XH[row * d + col] = acc + c2[col]);
        });
        __syncthreads();
        /* G2 = the inner loss's gradient at z2, a warp per row */
        for (int i = warp; i < bs; i += WARPS)
            ln_l2_row(XH + i * d, V + i * d, K + i * d, gam, bet, XH + i * d, GX + i * d, G2 + i * d, d, p.eps, lane);
        __syncthreads();
        /* G1 = (G2 W2^T) o gelu'(z1) */
        TMLP_TILES_T(R, bs, F, t, {
            t.mac(d, G2, d, 1, W2, 1, d);
            TMLP_STORE(R, t, G1[row * F + col] *= acc);
        });
        __syncthreads();
        /* the dual form, layer 1: zb1 = Q W1 + b1 - M G1, then gelu */
        TMLP_TILES(R, bs, F, t, {
            t.mac(d, Q, d, 1, W1, F, 1);
            t.mac(bs, M, bs, 1, G1, F, 1, (R)-1);
            TMLP_STORE(R, t, R dg; XB[row * F + col] = gelu(acc + c1[col], &dg));
        });
        __syncthreads();
        /* layer 2 on gelu(zb1): M = tok_i e_j (xb_i . x2_j + 1) */
        for (int u = tid; u < bs * bs; u += THREADS) {
            const int i = u / bs, j = u % bs;
            R s = 0;
            if (j <= i) s = dot_skew(XB + i * F, X2 + j * F, F, j);
            M[u] = j <= i ? tk[i] * e[j] * (s + 1) : (R)0;
        }
        __syncthreads();
        TMLP_TILES(R, bs, d, t, {
            t.mac(F, XB, F, 1, W2, d, 1);
            t.mac(bs, M, bs, 1, G2, d, 1, (R)-1);
            TMLP_STORE(R, t, ZB2[row * d + col] = acc + c2[col]);
        });
        __syncthreads();
        /* out = q + LN(zb2) gam + bet (a warp per row); the keys of the updates scaled by tok_bs e_i */
        for (int i = warp; i < bs; i += WARPS) {
            ln_row(ZB2 + i * d, ZB2 + i * d, d, p.eps, lane);
            for (int a = lane; a < d; a += 32) p.out[(r0 + i) * d + a] = Q[i * d + a] + ZB2[i * d + a] * gam[a] + bet[a];
        }
        for (int x = tid; x < bs * d; x += THREADS) K[x] *= tl * e[x / d];
        for (int x = tid; x < bs * F; x += THREADS) X2[x] *= tl * e[x / F];
        for (int x = tid; x < bs; x += THREADS) sc[x] = tl * e[x];
        __syncthreads();
        /* W1 -= tl (e o K)^T G1, b1 -= tl e^T G1, W2 -= tl (e o x2)^T G2, b2 -= tl e^T G2 */
        TMLP_TILES(R, d, F, t, {
            t.mac(bs, K, 1, d, G1, F, 1);
            TMLP_STORE(R, t, W1[row * F + col] -= acc);
        });
        TMLP_TILES(R, F, d, t, {
            t.mac(bs, X2, 1, F, G2, d, 1);
            TMLP_STORE(R, t, W2[row * d + col] -= acc);
        });
        for (int f = tid; f < F; f += THREADS) {
            R s = 0;
            for (int i = 0; i < bs; i++) s += sc[i] * G1[i * F + f];
            c1[f] -= s;
        }
        for (int a = tid; a < d; a += THREADS) {
            R s = 0;
            for (int i = 0; i < bs; i++) s += sc[i] * G2[i * d + a];
            c2[a] -= s;
        }
    }
    if (p.mode == 2) { /* the final weights out of shared memory (modes 1, 0 worked in place) */
        __syncthreads();
        for (int x = tid; x < d * F; x += THREADS) p.w1_out[bh * d * F + x] = W1[x], p.w2_out[bh * F * d + x] = W2[x];
        for (int x = tid; x < F; x += THREADS) p.b1_out[bh * F + x] = c1[x];
        for (int x = tid; x < d; x += THREADS) p.b2_out[bh * d + x] = c2[x];
    }
}

/* TTT-MLP's reverse scan of one (batch, head) per block: each mini-batch's forward recomputed from its
 * stored weights, then the gradients of its inputs and of the weights at its start (carried in dW1 ..
 * dc2, which start as the final weights' gradients). The steps are cpu_ttt_scan_impl.h's mlp_scan_bwd,
 * each product one pass over the block; buffers are reused once dead (noted as A -> B). */
template <typename R> __global__ void __launch_bounds__(THREADS) mlp_bwd(Bwd<R> p) {
    R *sm = reinterpret_cast<R *>(TTT_MLP_SMEM());
    const int d = p.d, F = p.F, bs = p.bs, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int64_t bh = blockIdx.x;
    const int h = (int)(bh % p.H);
    const size_t WE = w_elems(d, F);
    const Weights<R> g = weights_at(p.mode == 2 ? sm : (R *)nullptr, p.dw1, p.db1, p.dw2, p.db2, bh, d, F);
    R *dW1 = g.w1, *dc1 = g.c1, *dW2 = g.w2, *dc2 = g.c2;
    R *buf = p.mode == 2 ? sm + WE : p.mode == 1 ? sm : p.scr + bh * (int64_t)bwd_buf_elems(d, F, bs);
    /* [bs, F] */
    R *Z1 = buf, *X2 = Z1 + bs * F, *D1 = X2 + bs * F, *P = D1 + bs * F, *G1 = P + bs * F, *XB = G1 + bs * F;
    R *DB = XB + bs * F /* -> dZ1 */, *U1 = DB + bs * F /* -> dG1 -> dP */, *dX2 = U1 + bs * F, *dXB = dX2 + bs * F /* -> DZB1 */;
    /* [bs, d] */
    R *Q = dXB + bs * F, *K = Q + bs * d, *V = K + bs * d, *XH2 = V + bs * d, *GX2 = XH2 + bs * d, *G2 = GX2 + bs * d;
    R *XHB = G2 + bs * d, *DZB2 = XHB + bs * d, *dG2 = DZB2 + bs * d /* U2 first */, *dZ2 = dG2 + bs * d;
    R *DQ = dZ2 + bs * d, *DK = DQ + bs * d, *DV = DK + bs * d;
    /* [bs, bs], [bs], [d] */
    R *S1 = DV + bs * d, *M1 = S1 + bs * bs, *S2 = M1 + bs * bs, *M2 = S2 + bs * bs, *DM = M2 + bs * bs, *DS = DM + bs * bs;
    R *e = DS + bs * bs, *tk = e + bs, *dtk = tk + bs, *RS2 = dtk + bs, *RSB = RS2 + bs, *DE = RSB + bs, *UG = DE + bs;
    R *gam = UG + bs, *bet = gam + d, *dgam = bet + d, *dbet = dgam + d;
    R *dZ1 = DB, *dG1 = U1, *dP = U1, *DZB1 = dXB;
    {
        const int64_t o1 = bh * d * F, ob1 = bh * F, od = bh * d;
        for (int x = tid; x < d * F; x += THREADS) {
            dW1[x] = p.dw1_out ? p.dw1_out[o1 + x] : (R)0;
            dW2[x] = p.dw2_out ? p.dw2_out[o1 + x] : (R)0;
        }
        for (int x = tid; x < F; x += THREADS) dc1[x] = p.db1_out ? p.db1_out[ob1 + x] : (R)0;
        for (int x = tid; x < d; x += THREADS) {
            dc2[x] = p.db2_out ? p.db2_out[od + x] : (R)0;
            gam[x] = p.ln_w[h * d + x], bet[x] = p.ln_b[h * d + x], dgam[x] = 0, dbet[x] = 0;
        }
        for (int x = tid; x < bs; x += THREADS) tk[x] = p.tok[x], dtk[x] = 0;
    }
    const R tl = p.tok[bs - 1];
    for (int n = p.N - 1; n >= 0; n--) {
        const int64_t r0 = bh * p.T + (int64_t)n * bs;
        const R *W1 = p.st + (bh * p.N + n) * (int64_t)WE, *c1 = W1 + d * F, *W2 = c1 + F, *c2 = W2 + F * d;
        const R *DO = p.dout + r0 * d;
        __syncthreads(); /* the previous (later) mini-batch is done with every buffer (its last phase reads DQ .. DE only) */
        for (int x = tid; x < bs * d; x += THREADS) Q[x] = p.q[r0 * d + x], K[x] = p.k[r0 * d + x], V[x] = p.v[r0 * d + x];
        for (int x = tid; x < bs; x += THREADS) e[x] = p.eta[r0 + x];
        __syncthreads();
        /* recompute: z1 = K W1 + b1, x2 = gelu(z1), D1 = gelu'(z1); S1 = q_i . k_j + 1, M1 = tok_i e_j S1 (j <= i) */
        TMLP_TILES(R, bs, F, t, {
            t.mac(d, K, d, 1, W1, F, 1);
            TMLP_STORE(R, t, const R z = acc + c1[col]; R dg; X2[row * F + col] = gelu(z, &dg); Z1[row * F + col] = z;
                       D1[row * F + col] = dg);
        });
        for (int u = tid; u < bs * bs; u += THREADS) {
            const int i = u / bs, j = u % bs;
            R s = 0;
            if (j <= i) s = dot_skew(Q + i * d, K + j * d, d, j);
            S1[u] = j <= i ? s + 1 : (R)0;
            M1[u] = j <= i ? tk[i] * e[j] * (s + 1) : (R)0;
        }
        __syncthreads();
        TMLP_TILES(R, bs, d, t, { /* z2 = x2 W2 + b2 */
            t.mac(F, X2, F, 1, W2, d, 1);
            TMLP_STORE(R, t, XH2[row * d + col] = acc + c2[col]);
        });
        __syncthreads();
        for (int i = warp; i < bs; i += WARPS) { /* G2 at z2 */
            const R r = ln_l2_row(XH2 + i * d, V + i * d, K + i * d, gam, bet, XH2 + i * d, GX2 + i * d, G2 + i * d, d, p.eps, lane);
            if (lane == 0) RS2[i] = r;
        }
        __syncthreads();
        TMLP_TILES_T(R, bs, F, t, { /* P = G2 W2^T, G1 = P o D1 */
            t.mac(d, G2, d, 1, W2, 1, d);
            TMLP_STORE(R, t, P[row * F + col] = acc; G1[row * F + col] = acc * D1[row * F + col]);
        });
        __syncthreads();
        TMLP_TILES(R, bs, F, t, { /* zb1 = Q W1 + b1 - M1 G1; XB = gelu(zb1), DB = gelu'(zb1) */
            t.mac(d, Q, d, 1, W1, F, 1);
            t.mac(bs, M1, bs, 1, G1, F, 1, (R)-1);
            TMLP_STORE(R, t, R dg; XB[row * F + col] = gelu(acc + c1[col], &dg); DB[row * F + col] = dg);
        });
        __syncthreads();
        for (int u = tid; u < bs * bs; u += THREADS) { /* S2 = xb_i . x2_j + 1, M2 */
            const int i = u / bs, j = u % bs;
            R s = 0;
            if (j <= i) s = dot_skew(XB + i * F, X2 + j * F, F, j);
            S2[u] = j <= i ? s + 1 : (R)0;
            M2[u] = j <= i ? tk[i] * e[j] * (s + 1) : (R)0;
        }
        __syncthreads();
        TMLP_TILES(R, bs, d, t, { /* zb2 = XB W2 + b2 - M2 G2 */
            t.mac(F, XB, F, 1, W2, d, 1);
            t.mac(bs, M2, bs, 1, G2, d, 1, (R)-1);
            TMLP_STORE(R, t, XHB[row * d + col] = acc + c2[col]);
        });
        __syncthreads();
        /* out = q + LN(zb2) gam + bet: dq = dout, dzb2 (a warp per row); U1 = K dW1' + dc1', U2 = x2 dW2' + dc2'
         * with dW1' .. dc2' the gradients of the weights after this mini-batch */
        for (int i = warp; i < bs; i += WARPS) {
            R *xh = XHB + i * d;
            const R rs = ln_row(xh, xh, d, p.eps, lane);
            R s1 = 0, s2 = 0;
            for (int a = lane; a < d; a += 32) {
                const R gz = DO[i * d + a] * gam[a];
                DQ[i * d + a] = DO[i * d + a];
                s1 += gz, s2 += gz * xh[a];
            }
            const R m1 = warp_sum(s1) / (R)d, m2 = warp_sum(s2) / (R)d;
            for (int a = lane; a < d; a += 32) DZB2[i * d + a] = rs * (DO[i * d + a] * gam[a] - m1 - xh[a] * m2);
            if (lane == 0) RSB[i] = rs;
        }
        TMLP_TILES(R, bs, F, t, {
            t.mac(d, K, d, 1, dW1, F, 1);
            TMLP_STORE(R, t, U1[row * F + col] = acc + dc1[col]);
        });
        TMLP_TILES(R, bs, d, t, {
            t.mac(F, X2, F, 1, dW2, d, 1);
            TMLP_STORE(R, t, dG2[row * d + col] = acc + dc2[col]);
        });
        __syncthreads();
        /* the updates W1' = W1 - tl (e o K)^T G1 .. b2' (a warp per row): ug_i = U1_i . G1_i + U2_i . G2_i,
         * de_i = -tl ug_i, dG1 = -s_i U1, dG2 = -s_i U2 (s_i = tl e_i); dK = -s_i G1 dW1'^T,
         * dx2 = -s_i G2 dW2'^T; out's gain and bias; and zb2's: dxb = dzb2 W2^T, dM2 = -dzb2 G2^T */
        for (int i = warp; i < bs; i += WARPS) {
            R s = 0;
            for (int f = lane; f < F; f += 32) s += U1[i * F + f] * G1[i * F + f];
            for (int a = lane; a < d; a += 32) s += dG2[i * d + a] * G2[i * d + a];
            s = warp_sum(s);
            const R si = tl * e[i];
            for (int f = lane; f < F; f += 32) U1[i * F + f] *= -si;
            for (int a = lane; a < d; a += 32) dG2[i * d + a] *= -si;
            if (lane == 0) UG[i] = s, DE[i] = -tl * s;
        }
        for (int a = tid; a < d; a += THREADS) {
            R sg = 0, sb = 0;
            for (int i = 0; i < bs; i++) sg += DO[i * d + a] * XHB[i * d + a], sb += DO[i * d + a];
            dgam[a] += sg, dbet[a] += sb;
        }
        TMLP_TILES_T(R, bs, d, t, {
            t.mac(F, G1, F, 1, dW1, 1, F);
            TMLP_STORE(R, t, DK[row * d + col] = -tl * e[row] * acc);
        });
        TMLP_TILES_T(R, bs, F, t, {
            t.mac(d, G2, d, 1, dW2, 1, d);
            TMLP_STORE(R, t, dX2[row * F + col] = -tl * e[row] * acc);
        });
        TMLP_TILES_T(R, bs, F, t, {
            t.mac(d, DZB2, d, 1, W2, 1, d);
            TMLP_STORE(R, t, dXB[row * F + col] = acc);
        });
        for (int u = tid; u < bs * bs; u += THREADS) {
            const int i = u / bs, j = u % bs;
            R s = 0;
            if (j <= i) s = dot_skew(DZB2 + i * d, G2 + j * d, d, j);
            DM[u] = j <= i ? -s : (R)0;
        }
        __syncthreads();
        /* M2 = tok_i e_j S2: dtok_i, de_j; dS2 = dM2 tok_i e_j (and dtok_bs's part from the updates) */
        for (int i = tid; i < bs; i += THREADS) {
            R s = 0;
            for (int j = 0; j <= i; j++) s += DM[i * bs + j] * e[j] * S2[i * bs + j];
            if (i == bs - 1)
                for (int t = 0; t < bs; t++) s -= e[t] * UG[t];
            dtk[i] += s;
        }
        for (int j = tid; j < bs; j += THREADS) {
            R s = 0;
            for (int i = j; i < bs; i++) s += DM[i * bs + j] * tk[i] * S2[i * bs + j];
            DE[j] += s;
        }
        for (int u = tid; u < bs * bs; u += THREADS) DS[u] = DM[u] * tk[u / bs] * e[u % bs];
        __syncthreads();
        /* dxb += dS2 x2, then dzb1 = dxb o gelu'(zb1); dx2 += dS2^T xb; dG2 -= M2^T dzb2 */
        TMLP_TILES(R, bs, F, t, {
            t.mac(bs, DS, bs, 1, X2, F, 1);
            TMLP_STORE(R, t, DZB1[row * F + col] = (dXB[row * F + col] + acc) * DB[row * F + col]);
        });
        TMLP_TILES(R, bs, F, t, {
            t.mac(bs, DS, 1, bs, XB, F, 1);
            TMLP_STORE(R, t, dX2[row * F + col] += acc);
        });
        TMLP_TILES(R, bs, d, t, {
            t.mac(bs, M2, 1, bs, DZB2, d, 1);
            TMLP_STORE(R, t, dG2[row * d + col] -= acc);
        });
        __syncthreads();
        /* zb1 = Q W1 + b1 - M1 G1: dq += dzb1 W1^T; dM1 = -dzb1 G1^T */
        TMLP_TILES_T(R, bs, d, t, {
            t.mac(F, DZB1, F, 1, W1, 1, F);
            TMLP_STORE(R, t, DQ[row * d + col] += acc);
        });
        for (int u = tid; u < bs * bs; u += THREADS) {
            const int i = u / bs, j = u % bs;
            R s = 0;
            if (j <= i) s = dot_skew(DZB1 + i * F, G1 + j * F, F, j);
            DM[u] = j <= i ? -s : (R)0;
        }
        __syncthreads();
        for (int i = tid; i < bs; i += THREADS) {
            R s = 0;
            for (int j = 0; j <= i; j++) s += DM[i * bs + j] * e[j] * S1[i * bs + j];
            dtk[i] += s;
        }
        for (int j = tid; j < bs; j += THREADS) {
            R s = 0;
            for (int i = j; i < bs; i++) s += DM[i * bs + j] * tk[i] * S1[i * bs + j];
            DE[j] += s;
        }
        for (int u = tid; u < bs * bs; u += THREADS) DS[u] = DM[u] * tk[u / bs] * e[u % bs];
        __syncthreads();
        /* dq += dS1 K, dk += dS1^T Q, dG1 -= M1^T dzb1; then G1 = P o gelu'(z1): dz1 = gelu''(z1) dG1 P,
         * dP = dG1 gelu'(z1) (in dG1's place) */
        TMLP_TILES(R, bs, d, t, {
            t.mac(bs, DS, bs, 1, K, d, 1);
            TMLP_STORE(R, t, DQ[row * d + col] += acc);
        });
        TMLP_TILES(R, bs, d, t, {
            t.mac(bs, DS, 1, bs, Q, d, 1);
            TMLP_STORE(R, t, DK[row * d + col] += acc);
        });
        TMLP_TILES(R, bs, F, t, {
            t.mac(bs, M1, 1, bs, DZB1, F, 1);
            TMLP_STORE(R, t, const int o = row * F + col; const R g1 = dG1[o] - acc; dZ1[o] = gelu2(Z1[o]) * g1 * P[o];
                       dP[o] = g1 * D1[o]);
        });
        __syncthreads();
        /* P = G2 W2^T: dG2 += dP W2, dW2 += dP^T G2 (every read of dW1' .. dc2' is done: they now become
         * the gradients of the weights at this mini-batch's start) */
        TMLP_TILES(R, bs, d, t, {
            t.mac(F, dP, F, 1, W2, d, 1);
            TMLP_STORE(R, t, dG2[row * d + col] += acc);
        });
        TMLP_TILES(R, F, d, t, {
            t.mac(bs, dP, 1, F, G2, d, 1);
            TMLP_STORE(R, t, dW2[row * d + col] += acc);
        });
        __syncthreads();
        /* G2 = the LN + L2 gradient at z2, differentiated (a warp per row): dz2; dv; dk's term da gam; dgam's
         * per-row part into GX2's place (read first), dbet's is -dv */
        for (int i = warp; i < bs; i += WARPS) {
            const R *u = dG2 + i * d, *xh = XH2 + i * d, *gz = G2 + i * d, rstd = RS2[i];
            R *gx = GX2 + i * d, *dxh = dZ2 + i * d;
            R s_u = 0, s_ux = 0, s_gx = 0, s_ug = 0;
            for (int a = lane; a < d; a += 32) s_u += u[a], s_ux += u[a] * xh[a], s_gx += gx[a] * xh[a], s_ug += u[a] * gz[a];
            const R mu = warp_sum(s_u) / (R)d, mux = warp_sum(s_ux) / (R)d, m2 = warp_sum(s_gx) / (R)d;
            const R drs = warp_sum(s_ug) / rstd;
            R s_dx = 0, s_dxx = 0;
            for (int a = lane; a < d; a += 32) {
                const R da = rstd * (u[a] - mu - xh[a] * mux);
                const R ymt = gam[a] * xh[a] + bet[a] - (V[i * d + a] - K[i * d + a]);
                dxh[a] = -rstd * (u[a] * m2 + gx[a] * mux) + da * gam[a] * gam[a];
                gx[a] = da * ymt + da * gam[a] * xh[a];
                DV[i * d + a] = -da * gam[a];
                DK[i * d + a] += da * gam[a];
                s_dx += dxh[a], s_dxx += dxh[a] * xh[a];
            }
            const R mdx = warp_sum(s_dx) / (R)d, mdxx = warp_sum(s_dxx) / (R)d;
            for (int a = lane; a < d; a += 32)
                dxh[a] = rstd * (dxh[a] - mdx - xh[a] * mdxx) - drs * rstd * rstd * xh[a] / (R)d;
        }
        __syncthreads();
        /* z2 = x2 W2 + b2 and zb2's weights: dx2 += dz2 W2^T, then dz1 += dx2 o gelu'(z1); dW2 += x2^T dz2 +
         * xb^T dzb2, db2 += their rows' sums; dgam, dbet */
        TMLP_TILES_T(R, bs, F, t, {
            t.mac(d, dZ2, d, 1, W2, 1, d);
            TMLP_STORE(R, t, const int o = row * F + col; dZ1[o] += (dX2[o] + acc) * D1[o]);
        });
        TMLP_TILES(R, F, d, t, {
            t.mac(bs, X2, 1, F, dZ2, d, 1);
            t.mac(bs, XB, 1, F, DZB2, d, 1);
            TMLP_STORE(R, t, dW2[row * d + col] += acc);
        });
        for (int a = tid; a < d; a += THREADS) {
            R sc = 0, sg = 0, sb = 0;
            for (int i = 0; i < bs; i++) sc += dZ2[i * d + a] + DZB2[i * d + a], sg += GX2[i * d + a], sb -= DV[i * d + a];
            dc2[a] += sc, dgam[a] += sg, dbet[a] += sb;
        }
        __syncthreads();
        /* z1 = K W1 + b1 and zb1's weights: dk += dz1 W1^T; dW1 += K^T dz1 + Q^T dzb1, db1 */
        TMLP_TILES_T(R, bs, d, t, {
            t.mac(F, dZ1, F, 1, W1, 1, F);
            TMLP_STORE(R, t, DK[row * d + col] += acc);
        });
        TMLP_TILES(R, d, F, t, {
            t.mac(bs, K, 1, d, dZ1, F, 1);
            t.mac(bs, Q, 1, d, DZB1, F, 1);
            TMLP_STORE(R, t, dW1[row * F + col] += acc);
        });
        for (int f = tid; f < F; f += THREADS) {
            R s = 0;
            for (int i = 0; i < bs; i++) s += dZ1[i * F + f] + DZB1[i * F + f];
            dc1[f] += s;
        }
        __syncthreads();
        for (int x = tid; x < bs * d; x += THREADS) p.dq[r0 * d + x] = DQ[x], p.dk[r0 * d + x] = DK[x], p.dv[r0 * d + x] = DV[x];
        for (int x = tid; x < bs; x += THREADS) p.deta[r0 + x] = DE[x];
    }
    __syncthreads();
    for (int a = tid; a < d; a += THREADS) p.dln_w[bh * d + a] = dgam[a], p.dln_b[bh * d + a] = dbet[a];
    for (int i = tid; i < bs; i += THREADS) p.dtok[bh * bs + i] = dtk[i];
    if (p.mode == 2) {
        for (int x = tid; x < d * F; x += THREADS) p.dw1[bh * d * F + x] = dW1[x], p.dw2[bh * F * d + x] = dW2[x];
        for (int x = tid; x < F; x += THREADS) p.db1[bh * F + x] = dc1[x];
        for (int x = tid; x < d; x += THREADS) p.db2[bh * d + x] = dc2[x];
    }
}

#undef TMLP_TILES
#undef TMLP_TILES_T
#undef TMLP_STORE

}  // namespace tmlp

#endif
