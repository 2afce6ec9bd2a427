/* The TTT layers' decode steps on the GPU (backend.h: ttt_linear_step, ttt_mlp_step; the math:
 * src/composed/ttt_step.c),
 * included by ttt_step.cu and by the host emulator's test (dev/cuda/ttt_step_emu_test.cpp).
 *
 * One block of THREADS threads per (batch, head); thread j owns the columns j, j + THREADS, ... of W and
 * G, so every read and write of the state is coalesced across the block and each state element is touched
 * by one thread only: the update of G, the product with q (W - t G) and, when the mini-batch completes,
 * the step of W are one pass over W and G. The token's q, k and the inner gradient g sit in shared memory;
 * the layer norms' sums are block reductions whose partial sums are added in warp order by every thread,
 * so the result does not depend on timing. A decode step of the layer is this one launch instead of about
 * forty small kernels; the work is 3 d^2 multiply-adds and 2 d^2 reads and writes per head.
 *
 * The includer defines TTT_STEP_SMEM() (a void * to the dynamic shared memory: smem_elems(d) values). */
#ifndef TTT_STEP_CUH
#define TTT_STEP_CUH

namespace tstep {

enum { THREADS = 128, WARPS = THREADS / 32 };

template <typename R> struct Args {
    R *out, *w, *c, *gw, *gc;
    const R *q, *k, *v, *eta, *tok, *ln_w, *ln_b;
    int H, d, r0, complete;
    R eps;
};

inline size_t smem_elems(int d) { return 3 * (size_t)d + WARPS; }

/* The block's sum of x; every thread returns it (warp sums, then the warps' in order). */
template <typename R> __device__ R block_sum(R x, R *red) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_down_sync(0xffffffffu, x, o);
    __syncthreads(); /* red may still be read by the previous call */
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = x;
    __syncthreads();
    R s = 0;
    for (int i = 0; i < WARPS; i++) s += red[i];
    return s;
}

template <typename R> __device__ R rsqrt_of(R x);
template <> __device__ inline float rsqrt_of<float>(float x) { return 1.0f / sqrtf(x); }
template <> __device__ inline double rsqrt_of<double>(double x) { return 1.0 / sqrt(x); }

/* The two row-wise pieces both steps share, each thread on its columns j = tid, tid + THREADS, ... of z:
 * z <- d/dz of 1/2 || LN(z) gam + bet - (v - k) ||^2 (the inner loss's gradient, in place), and
 * out = q + LN(z) gam + bet. Block reductions, so every thread of the block calls them. */
template <typename R>
__device__ void ln_l2_grad_cols(R *z, const R *v, const R *sk, const R *gam, const R *bet, int d, R eps, R *red) {
    const int tid = (int)threadIdx.x;
    R part = 0;
    for (int j = tid; j < d; j += THREADS) part += z[j];
    const R mu = block_sum(part, red) / (R)d;
    part = 0;
    for (int j = tid; j < d; j += THREADS) part += (z[j] - mu) * (z[j] - mu);
    const R rstd = rsqrt_of<R>(block_sum(part, red) / (R)d + eps);
    R pg = 0, pgx = 0;
    for (int j = tid; j < d; j += THREADS) {
        const R xh = (z[j] - mu) * rstd, g = (xh * gam[j] + bet[j] - (v[j] - sk[j])) * gam[j];
        pg += g, pgx += g * xh;
    }
    const R mg = block_sum(pg, red) / (R)d, mgx = block_sum(pgx, red) / (R)d;
    for (int j = tid; j < d; j += THREADS) {
        const R xh = (z[j] - mu) * rstd, g = (xh * gam[j] + bet[j] - (v[j] - sk[j])) * gam[j];
        z[j] = (g - mg - xh * mgx) * rstd;
    }
}

template <typename R>
__device__ void ln_out_cols(R *out, const R *sq, const R *z, const R *gam, const R *bet, int d, R eps, R *red) {
    const int tid = (int)threadIdx.x;
    R part = 0;
    for (int j = tid; j < d; j += THREADS) part += z[j];
    const R mq = block_sum(part, red) / (R)d;
    part = 0;
    for (int j = tid; j < d; j += THREADS) part += (z[j] - mq) * (z[j] - mq);
    const R rq = rsqrt_of<R>(block_sum(part, red) / (R)d + eps);
    for (int j = tid; j < d; j += THREADS) out[j] = sq[j] + (z[j] - mq) * rq * gam[j] + bet[j];
}

template <typename R> __global__ void __launch_bounds__(THREADS) step(Args<R> a) {
    R *sm = reinterpret_cast<R *>(TTT_STEP_SMEM());
    const int d = a.d, tid = (int)threadIdx.x, bh = (int)blockIdx.x, h = bh % a.H;
    R *sq = sm, *sk = sm + d, *z = sm + 2 * d, *red = sm + 3 * d;
    const size_t o = (size_t)bh * d, od = (size_t)bh * d * d;
    const R *gam = a.ln_w + (size_t)h * d, *bet = a.ln_b + (size_t)h * d;
    for (int j = tid; j < d; j += THREADS) sq[j] = a.q[o + j], sk[j] = a.k[o + j];
    __syncthreads();
    /* z = k W + c, then its inner gradient g in place (each thread its own columns) */
    for (int j = tid; j < d; j += THREADS) {
        R acc = a.c[o + j];
        for (int i = 0; i < d; i++) acc += sk[i] * a.w[od + (size_t)i * d + j];
        z[j] = acc;
    }
    ln_l2_grad_cols<R>(z, a.v + o, sk, gam, bet, d, a.eps, red);
    /* G += eta k^T g, Gc += eta g; zq = q (W - t G) + c - t Gc; complete: W -= t G, c -= t Gc, G = Gc = 0 */
    const R eta = a.eta[bh], t = a.tok[a.r0];
    for (int j = tid; j < d; j += THREADS) {
        const R g = z[j], gcj = a.gc[o + j] + eta * g;
        R acc = a.c[o + j] - t * gcj;
        for (int i = 0; i < d; i++) {
            const size_t e = od + (size_t)i * d + j;
            const R gwe = a.gw[e] + eta * sk[i] * g, we = a.w[e];
            acc += sq[i] * (we - t * gwe);
            if (a.complete) a.w[e] = we - t * gwe, a.gw[e] = 0;
            else a.gw[e] = gwe;
        }
        if (a.complete) a.c[o + j] -= t * gcj, a.gc[o + j] = 0;
        else a.gc[o + j] = gcj;
        z[j] = acc; /* zq now: this thread's g[j] is used up */
    }
    ln_out_cols<R>(a.out + o, sq, z, gam, bet, d, a.eps, red); /* out = q + LN(zq) gam + bet */
}

/* ---- TTT-MLP: f(x) = gelu(x W1 + b1) W2 + b2 (tanh gelu), W1 [d, F], W2 [F, d] ------------------------------
 * The same scheme: thread f owns the columns f, f + THREADS, ... of W1 and G1 (F of them), thread j those of
 * W2 and G2 (d); the hidden activations z1, gelu(z1), g1 and the token's q, k in shared memory. The one read
 * that is not coalesced is the row f of W2 for g1 = (g2 W2^T) o gelu'(z1), F d values a token. */

template <typename R> struct MlpArgs {
    R *out, *w1, *b1, *w2, *b2, *g1, *gb1, *g2, *gb2;
    const R *q, *k, *v, *eta, *tok, *ln_w, *ln_b;
    int H, d, F, r0, complete;
    R eps;
};

inline size_t mlp_smem_elems(int d, int F) { return 4 * (size_t)d + 3 * (size_t)F + WARPS; }

template <typename R> __device__ inline R tanh_of(R x);
template <> __device__ inline float tanh_of<float>(float x) { return tanhf(x); }
template <> __device__ inline double tanh_of<double>(double x) { return tanh(x); }

template <typename R> __device__ inline R gelu_tanh(R x) {
    return (R)0.5 * x * ((R)1 + tanh_of<R>((R)0.7978845608028654 * (x + (R)0.044715 * x * x * x)));
}

template <typename R> __global__ void __launch_bounds__(THREADS) mlp_step(MlpArgs<R> a) {
    R *sm = reinterpret_cast<R *>(TTT_STEP_SMEM());
    const int d = a.d, F = a.F, tid = (int)threadIdx.x, bh = (int)blockIdx.x, h = bh % a.H;
    R *sq = sm, *sk = sm + d, *sz = sm + 2 * d, *szq = sm + 3 * d, *z1 = sm + 4 * d, *x2 = z1 + F, *g1 = x2 + F,
      *red = g1 + F;
    const size_t o = (size_t)bh * d, of = (size_t)bh * F, odf = (size_t)bh * d * F;
    const R *gam = a.ln_w + (size_t)h * d, *bet = a.ln_b + (size_t)h * d;
    const R eta = a.eta[bh], t = a.tok[a.r0];
    for (int j = tid; j < d; j += THREADS) sq[j] = a.q[o + j], sk[j] = a.k[o + j];
    __syncthreads();
    /* z1 = k W1 + b1, x2 = gelu(z1) */
    for (int f = tid; f < F; f += THREADS) {
        R acc = a.b1[of + f];
        for (int i = 0; i < d; i++) acc += sk[i] * a.w1[odf + (size_t)i * F + f];
        z1[f] = acc;
        x2[f] = gelu_tanh<R>(acc);
    }
    __syncthreads();
    /* z2 = x2 W2 + b2, then g2 = the LN loss's gradient there (in sz, each thread its own columns) */
    for (int j = tid; j < d; j += THREADS) {
        R acc = a.b2[o + j];
        for (int f = 0; f < F; f++) acc += x2[f] * a.w2[odf + (size_t)f * d + j];
        sz[j] = acc;
    }
    ln_l2_grad_cols<R>(sz, a.v + o, sk, gam, bet, d, a.eps, red);
    __syncthreads(); /* every thread reads all of g2 below */
    /* g1 = (g2 W2^T) o gelu'(z1); then layer 1 at W1 - t G1 (the sums updated on the way), a = gelu(..) into g1 */
    for (int f = tid; f < F; f += THREADS) {
        R s = 0;
        for (int j = 0; j < d; j++) s += sz[j] * a.w2[odf + (size_t)f * d + j];
        const R x = z1[f], th = tanh_of<R>((R)0.7978845608028654 * (x + (R)0.044715 * x * x * x));
        const R g = s * ((R)0.5 * ((R)1 + th) +
                         (R)0.5 * x * ((R)1 - th * th) * (R)0.7978845608028654 * ((R)1 + (R)3 * (R)0.044715 * x * x));
        const R gb = a.gb1[of + f] + eta * g;
        R acc = a.b1[of + f] - t * gb;
        for (int i = 0; i < d; i++) {
            const size_t e = odf + (size_t)i * F + f;
            const R ge = a.g1[e] + eta * sk[i] * g, we = a.w1[e];
            acc += sq[i] * (we - t * ge);
            if (a.complete) a.w1[e] = we - t * ge, a.g1[e] = 0;
            else a.g1[e] = ge;
        }
        if (a.complete) a.b1[of + f] -= t * gb, a.gb1[of + f] = 0;
        else a.gb1[of + f] = gb;
        g1[f] = gelu_tanh<R>(acc);
    }
    __syncthreads(); /* W2 was read above and is written below; every thread reads all of g1 (the activations) */
    /* layer 2 at W2 - t G2 */
    for (int j = tid; j < d; j += THREADS) {
        const R g = sz[j], gb = a.gb2[o + j] + eta * g;
        R acc = a.b2[o + j] - t * gb;
        for (int f = 0; f < F; f++) {
            const size_t e = odf + (size_t)f * d + j;
            const R ge = a.g2[e] + eta * x2[f] * g, we = a.w2[e];
            acc += g1[f] * (we - t * ge);
            if (a.complete) a.w2[e] = we - t * ge, a.g2[e] = 0;
            else a.g2[e] = ge;
        }
        if (a.complete) a.b2[o + j] -= t * gb, a.gb2[o + j] = 0;
        else a.gb2[o + j] = gb;
        szq[j] = acc;
    }
    ln_out_cols<R>(a.out + o, sq, szq, gam, bet, d, a.eps, red);
}

} // namespace tstep

#endif
