/* The fused TTT-Linear scan's CUDA kernels (f32), included by ttt_scan.cu and by the host emulator's
 * test (dev/cuda/ttt_scan_emu_test.cpp). The math is stated in src/composed/ttt_scan.c.
 *
 * One block of 256 threads per (batch, head) walks its mini-batches in order. The fast weight W
 * [d, d] (rows padded to d + 1 floats, so a warp reading a column hits 32 banks), its bias, the
 * mini-batch's q, k, v rows and every intermediate live in shared memory; global memory sees the
 * inputs once, the outputs once and (when recording) the state at each mini-batch's start. Within
 * a mini-batch the products are element-parallel (each thread owns output elements and runs their
 * sums in a fixed order: no atomics, the same bits on every run) and the row-wise layer norms take
 * a warp per row. Phases are separated by __syncthreads.
 *
 * The includer defines TTT_SCAN_SMEM() (a float * to the dynamic shared memory). */
#ifndef TTT_SCAN_CUH
#define TTT_SCAN_CUH

namespace tscan {

enum { THREADS = 256, WARPS = THREADS / 32, MAX_D = 128 };

struct Fwd {
    float *out, *w_out, *b_out, *w_st, *b_st; /* w_st, b_st NULL: not recorded */
    const float *q, *k, *v, *eta, *tok, *ln_w, *ln_b, *w0, *b0;
    int H, T, d, bs, N, w0_batched, b0_batched;
    float eps;
};

struct Bwd {
    float *dq, *dk, *dv, *deta, *dtok, *dln_w, *dln_b, *dw0, *db0;
    const float *dout, *dw_out, *db_out; /* dw_out, db_out NULL: zero */
    const float *q, *k, *v, *eta, *tok, *ln_w, *ln_b, *w_st, *b_st;
    int H, T, d, bs, N, w_in_smem; /* w_in_smem 0: W is read from the stored state in global memory */
    float eps;
};

/* Dynamic shared memory of each kernel, in floats. */
inline size_t fwd_smem_floats(int d, int bs) {
    return (size_t)d * (d + 1) + 3 * (size_t)d + 6 * (size_t)bs * d + (size_t)bs * bs + 2 * (size_t)bs;
}
inline size_t bwd_smem_floats(int d, int bs, int w_in_smem) {
    return (size_t)(w_in_smem ? 2 : 1) * d * (d + 1) + 6 * (size_t)d + 11 * (size_t)bs * d + 3 * (size_t)bs * bs +
           5 * (size_t)bs;
}

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

__global__ void __launch_bounds__(THREADS) scan_fwd(Fwd p) {
    float *sm = TTT_SCAN_SMEM();
    const int d = p.d, bs = p.bs, L = d + 1, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int64_t bh = blockIdx.x;
    const int h = (int)(bh % p.H);
    float *W = sm, *c = W + d * L, *gam = c + d, *bet = gam + d, *Q = bet + d, *K = Q + bs * d, *V = K + bs * d;
    float *Z = V + bs * d, *GX = Z + bs * d, *G = GX + bs * d, *M = G + bs * d, *e = M + bs * bs, *tk = e + bs;
    const float *w0 = p.w0 + (p.w0_batched ? bh : h) * (int64_t)d * d, *b0 = p.b0 + (p.b0_batched ? bh : h) * (int64_t)d;
    for (int x = tid; x < d * d; x += THREADS) W[(x / d) * L + x % d] = w0[x];
    for (int j = tid; j < d; j += THREADS) c[j] = b0[j], gam[j] = p.ln_w[h * d + j], bet[j] = p.ln_b[h * d + j];
    for (int i = tid; i < bs; i += THREADS) tk[i] = p.tok[i];
    const float tl = p.tok[bs - 1];
    __syncthreads();
    for (int n = 0; n < p.N; n++) {
        const int64_t r0 = bh * p.T + (int64_t)n * bs; /* the mini-batch's first token */
        for (int x = tid; x < bs * d; x += THREADS) Q[x] = p.q[r0 * d + x], K[x] = p.k[r0 * d + x], V[x] = p.v[r0 * d + x];
        for (int i = tid; i < bs; i += THREADS) e[i] = p.eta[r0 + i];
        if (p.w_st) {
            float *ws = p.w_st + (bh * p.N + n) * (int64_t)d * d;
            for (int x = tid; x < d * d; x += THREADS) ws[x] = W[(x / d) * L + x % d];
            for (int j = tid; j < d; j += THREADS) p.b_st[(bh * p.N + n) * d + j] = c[j];
        }
        __syncthreads();
        /* z1 = K W + c;  M[i, j] = tok_i e_j (q_i . k_j + 1), j <= i */
        for (int x = tid; x < bs * d; x += THREADS) {
            const int i = x / d, j = x % d;
            float acc = c[j];
            for (int a = 0; a < d; a++) acc += K[i * d + a] * W[a * L + j];
            Z[x] = acc;
        }
        for (int x = tid; x < bs * bs; x += THREADS) {
            const int i = x / bs, j = x % bs;
            float s = 0;
            if (j <= i)
                for (int a = 0; a < d; a++) s += Q[i * d + a] * K[j * d + a];
            M[x] = j <= i ? tk[i] * e[j] * (s + 1) : 0.0f;
        }
        __syncthreads();
        /* G = the inner loss's gradient at z1 (Z then holds LN(z1), unused after) */
        for (int i = warp; i < bs; i += WARPS)
            ln_l2_row(Z + i * d, V + i * d, K + i * d, gam, bet, Z + i * d, GX + i * d, G + i * d, d, p.eps, lane);
        __syncthreads();
        /* zq = Q W + c - M G */
        for (int x = tid; x < bs * d; x += THREADS) {
            const int i = x / d, j = x % d;
            float acc = c[j];
            for (int a = 0; a < d; a++) acc += Q[i * d + a] * W[a * L + j];
            for (int t = 0; t <= i; t++) acc -= M[i * bs + t] * G[t * d + j];
            Z[x] = acc;
        }
        __syncthreads();
        /* out = q + LN(zq) gam + bet (a warp per row), then W -= tl (e o K)^T G, c -= tl e^T G */
        for (int i = warp; i < bs; i += WARPS) {
            ln_row(Z + i * d, Z + i * d, d, p.eps, lane);
            for (int j = lane; j < d; j += 32) p.out[(r0 + i) * d + j] = Q[i * d + j] + Z[i * d + j] * gam[j] + bet[j];
        }
        for (int x = tid; x < d * d; x += THREADS) {
            const int a = x / d, j = x % d;
            float acc = 0;
            for (int i = 0; i < bs; i++) acc += e[i] * K[i * d + a] * G[i * d + j];
            W[a * L + j] -= tl * acc;
        }
        for (int j = tid; j < d; j += THREADS) {
            float acc = 0;
            for (int i = 0; i < bs; i++) acc += e[i] * G[i * d + j];
            c[j] -= tl * acc;
        }
        __syncthreads();
    }
    for (int x = tid; x < d * d; x += THREADS) p.w_out[bh * d * d + x] = W[(x / d) * L + x % d];
    for (int j = tid; j < d; j += THREADS) p.b_out[bh * d + j] = c[j];
}

/* The reverse scan: each mini-batch's forward recomputed from its stored state, then its gradients
 * (the steps of src/backends/cpu/cpu_ttt_scan_impl.h's scan_bwd, element-parallel). dW, dc carry the
 * gradient of the state after the mini-batch down to before it. */
__global__ void __launch_bounds__(THREADS) scan_bwd(Bwd p) {
    float *sm = TTT_SCAN_SMEM();
    const int d = p.d, bs = p.bs, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int L = p.w_in_smem ? d + 1 : d; /* W's row stride where it is read */
    const int64_t bh = blockIdx.x;
    const int h = (int)(bh % p.H);
    float *dW = sm, *Wsm = dW + d * (d + 1), *c = Wsm + (p.w_in_smem ? d * (d + 1) : 0);
    float *dc = c + d, *gam = dc + d, *bet = gam + d, *dgam = bet + d, *dbet = dgam + d;
    float *Q = dbet + d, *K = Q + bs * d, *V = K + bs * d, *XH1 = V + bs * d, *GX = XH1 + bs * d, *G = GX + bs * d;
    float *XHQ = G + bs * d, *DZQ = XHQ + bs * d, *DG = DZQ + bs * d, *U = DG + bs * d, *DZ1 = U + bs * d;
    float *S = DZ1 + bs * d, *M = S + bs * bs, *DM = M + bs * bs, *RS1 = DM + bs * bs, *RSQ = RS1 + bs, *e = RSQ + bs;
    float *tk = e + bs, *dtk = tk + bs;
    const int DL = d + 1;
    for (int x = tid; x < d * d; x += THREADS) dW[(x / d) * DL + x % d] = p.dw_out ? p.dw_out[bh * d * d + x] : 0.0f;
    for (int j = tid; j < d; j += THREADS) {
        dc[j] = p.db_out ? p.db_out[bh * d + j] : 0.0f;
        gam[j] = p.ln_w[h * d + j], bet[j] = p.ln_b[h * d + j], dgam[j] = 0, dbet[j] = 0;
    }
    for (int i = tid; i < bs; i += THREADS) tk[i] = p.tok[i], dtk[i] = 0;
    const float tl = p.tok[bs - 1];
    for (int n = p.N - 1; n >= 0; n--) {
        const int64_t r0 = bh * p.T + (int64_t)n * bs;
        const float *Wg = p.w_st + (bh * p.N + n) * (int64_t)d * d;
        const float *W = p.w_in_smem ? Wsm : Wg;
        __syncthreads(); /* the previous mini-batch is done with every buffer */
        if (p.w_in_smem)
            for (int x = tid; x < d * d; x += THREADS) Wsm[(x / d) * L + x % d] = Wg[x];
        for (int j = tid; j < d; j += THREADS) c[j] = p.b_st[(bh * p.N + n) * d + j];
        for (int x = tid; x < bs * d; x += THREADS) Q[x] = p.q[r0 * d + x], K[x] = p.k[r0 * d + x], V[x] = p.v[r0 * d + x];
        for (int i = tid; i < bs; i += THREADS) e[i] = p.eta[r0 + i];
        __syncthreads();
        /* recompute: z1 = K W + c (into XH1); S = q_i . k_j + 1, M = tok_i e_j S (j <= i) */
        for (int x = tid; x < bs * d; x += THREADS) {
            const int i = x / d, j = x % d;
            float acc = c[j];
            for (int a = 0; a < d; a++) acc += K[i * d + a] * W[a * L + j];
            XH1[x] = acc;
        }
        for (int x = tid; x < bs * bs; x += THREADS) {
            const int i = x / bs, j = x % bs;
            float s = 0;
            if (j <= i)
                for (int a = 0; a < d; a++) s += Q[i * d + a] * K[j * d + a];
            S[x] = j <= i ? s + 1 : 0.0f;
            M[x] = j <= i ? tk[i] * e[j] * (s + 1) : 0.0f;
        }
        __syncthreads();
        for (int i = warp; i < bs; i += WARPS) {
            const float r = ln_l2_row(XH1 + i * d, V + i * d, K + i * d, gam, bet, XH1 + i * d, GX + i * d, G + i * d, d, p.eps, lane);
            if (lane == 0) RS1[i] = r;
        }
        __syncthreads();
        /* zq = Q W + c - M G (into XHQ) */
        for (int x = tid; x < bs * d; x += THREADS) {
            const int i = x / d, j = x % d;
            float acc = c[j];
            for (int a = 0; a < d; a++) acc += Q[i * d + a] * W[a * L + j];
            for (int t = 0; t <= i; t++) acc -= M[i * bs + t] * G[t * d + j];
            XHQ[x] = acc;
        }
        __syncthreads();
        /* out = q + LN(zq) gam + bet: dq = dout, dzq; U = K dW' + dc' (dW', dc': the later state's gradient) */
        for (int i = warp; i < bs; i += WARPS) {
            const float rsq = ln_row(XHQ + i * d, XHQ + i * d, d, p.eps, lane);
            float s1 = 0, s2 = 0;
            for (int j = lane; j < d; j += 32) {
                const float g = p.dout[(r0 + i) * d + j] * gam[j];
                DZQ[i * d + j] = g;
                s1 += g, s2 += g * XHQ[i * d + j];
            }
            const float m1 = warp_sum(s1) / (float)d, m2 = warp_sum(s2) / (float)d;
            for (int j = lane; j < d; j += 32) DZQ[i * d + j] = rsq * (DZQ[i * d + j] - m1 - XHQ[i * d + j] * m2);
        }
        for (int x = tid; x < bs * d; x += THREADS) {
            const int i = x / d, j = x % d;
            float acc = dc[j];
            for (int a = 0; a < d; a++) acc += K[i * d + a] * dW[a * DL + j];
            U[x] = acc;
        }
        __syncthreads();
        /* the state update W' = W - tl (e o K)^T G, c' = c - tl e^T G:
         * dG_i = -tl e_i U_i, dK_i = -tl e_i G_i dW'^T, de_i = -tl U_i . G_i, dtok_bs -= e_i U_i . G_i */
        for (int x = tid; x < bs * d; x += THREADS) {
            const int i = x / d, a = x % d;
            float acc = 0;
            for (int j = 0; j < d; j++) acc += dW[a * DL + j] * G[i * d + j];
            p.dk[(r0 + i) * d + a] = -tl * e[i] * acc;
            p.dq[(r0 + i) * d + a] = p.dout[(r0 + i) * d + a];
            DG[x] = -tl * e[i] * U[x];
        }
        for (int i = warp; i < bs; i += WARPS) { /* RSQ is free again: it keeps U_i . G_i */
            float s = 0;
            for (int j = lane; j < d; j += 32) s += U[i * d + j] * G[i * d + j];
            s = warp_sum(s);
            if (lane == 0) p.deta[r0 + i] = -tl * s, RSQ[i] = s;
        }
        for (int j = tid; j < d; j += THREADS) { /* out's gain and bias */
            float ag = 0, ab = 0;
            for (int i = 0; i < bs; i++) {
                const float g = p.dout[(r0 + i) * d + j];
                ag += g * XHQ[i * d + j], ab += g;
            }
            dgam[j] += ag, dbet[j] += ab;
        }
        __syncthreads();
        if (tid == 0) { /* (dtk is read again two barriers on) */
            float s = 0;
            for (int i = 0; i < bs; i++) s += e[i] * RSQ[i];
            dtk[bs - 1] -= s;
        }
        /* zq = Q W + c - M G: dM = -dzq G^T (j <= i) */
        for (int x = tid; x < bs * bs; x += THREADS) {
            const int i = x / bs, j = x % bs;
            float s = 0;
            if (j <= i)
                for (int a = 0; a < d; a++) s += DZQ[i * d + a] * G[j * d + a];
            DM[x] = j <= i ? -s : 0.0f;
        }
        __syncthreads();
        /* dtok_i += sum_j dM_ij e_j S_ij; de_j += sum_i dM_ij tok_i S_ij (a thread per i, then per j) */
        for (int i = tid; i < bs; i += THREADS) {
            float s = 0;
            for (int j = 0; j <= i; j++) s += DM[i * bs + j] * e[j] * S[i * bs + j];
            dtk[i] += s;
        }
        for (int j = tid; j < bs; j += THREADS) {
            float s = 0;
            for (int i = j; i < bs; i++) s += DM[i * bs + j] * tk[i] * S[i * bs + j];
            p.deta[r0 + j] += s;
        }
        __syncthreads();
        for (int x = tid; x < bs * bs; x += THREADS) DM[x] *= tk[x / bs] * e[x % bs]; /* dS = dM tok_i e_j */
        __syncthreads();
        /* dq_i += sum_j dS_ij k_j + dzq_i W^T;  dk_j += sum_i dS_ij q_i;  dG_j -= sum_i M_ij dzq_i */
        for (int x = tid; x < bs * d; x += THREADS) {
            const int i = x / d, a = x % d;
            float accq = 0, acck = 0, accg = 0;
            for (int j = 0; j <= i; j++) accq += DM[i * bs + j] * K[j * d + a];
            for (int b = 0; b < d; b++) accq += DZQ[i * d + b] * W[a * L + b];
            for (int t = i; t < bs; t++) acck += DM[t * bs + i] * Q[t * d + a], accg += M[t * bs + i] * DZQ[t * d + a];
            p.dq[(r0 + i) * d + a] += accq;
            p.dk[(r0 + i) * d + a] += acck;
            DG[x] -= accg;
        }
        __syncthreads();
        /* G = the LN + L2 gradient at z1, differentiated: dz1, dv, dk; per-row parts of dgam, dbet in U, XHQ */
        for (int i = warp; i < bs; i += WARPS) {
            const float *u = DG + i * d, *xh = XH1 + i * d, *gx = GX + i * d, *gz = G + i * d, rstd = RS1[i];
            float s_u = 0, s_ux = 0, s_gx = 0, s_ug = 0;
            for (int a = lane; a < d; a += 32) s_u += u[a], s_ux += u[a] * xh[a], s_gx += gx[a] * xh[a], s_ug += u[a] * gz[a];
            const float mu = warp_sum(s_u) / (float)d, mux = warp_sum(s_ux) / (float)d, m2 = warp_sum(s_gx) / (float)d;
            const float drs = warp_sum(s_ug) / rstd;
            float *dxh = DZ1 + i * d;
            float s_dx = 0, s_dxx = 0;
            for (int a = lane; a < d; a += 32) {
                const float da = rstd * (u[a] - mu - xh[a] * mux);
                const float ymt = gam[a] * xh[a] + bet[a] - (V[i * d + a] - K[i * d + a]);
                dxh[a] = -rstd * (u[a] * m2 + gx[a] * mux) + da * gam[a] * gam[a];
                U[i * d + a] = da * ymt + da * gam[a] * xh[a];
                XHQ[i * d + a] = da * gam[a];
                p.dv[(r0 + i) * d + a] = -da * gam[a];
                p.dk[(r0 + i) * d + a] += da * gam[a];
                s_dx += dxh[a], s_dxx += dxh[a] * xh[a];
            }
            const float mdx = warp_sum(s_dx) / (float)d, mdxx = warp_sum(s_dxx) / (float)d;
            for (int a = lane; a < d; a += 32)
                dxh[a] = rstd * (dxh[a] - mdx - xh[a] * mdxx) - drs * rstd * rstd * xh[a] / (float)d;
        }
        __syncthreads();
        /* z1 = K W + c: dk_i += dz1_i W^T; then dW += Q^T dzq + K^T dz1, dc += sums; dgam, dbet (a thread a column) */
        for (int x = tid; x < bs * d; x += THREADS) {
            const int i = x / d, a = x % d;
            float acc = 0;
            for (int b = 0; b < d; b++) acc += DZ1[i * d + b] * W[a * L + b];
            p.dk[(r0 + i) * d + a] += acc;
        }
        for (int x = tid; x < d * d; x += THREADS) {
            const int a = x / d, j = x % d;
            float acc = 0;
            for (int i = 0; i < bs; i++) acc += Q[i * d + a] * DZQ[i * d + j] + K[i * d + a] * DZ1[i * d + j];
            dW[a * DL + j] += acc;
        }
        for (int j = tid; j < d; j += THREADS) {
            float accc = 0, ag = 0, ab = 0;
            for (int i = 0; i < bs; i++) accc += DZQ[i * d + j] + DZ1[i * d + j], ag += U[i * d + j], ab += XHQ[i * d + j];
            dc[j] += accc, dgam[j] += ag, dbet[j] += ab;
        }
    }
    __syncthreads();
    for (int x = tid; x < d * d; x += THREADS) p.dw0[bh * d * d + x] = dW[(x / d) * DL + x % d];
    for (int j = tid; j < d; j += THREADS) {
        p.db0[bh * d + j] = dc[j], p.dln_w[bh * d + j] = dgam[j], p.dln_b[bh * d + j] = dbet[j];
    }
    for (int i = tid; i < bs; i += THREADS) p.dtok[bh * bs + i] = dtk[i];
}

}  // namespace tscan

#endif
