/* The fused chunkwise Gated DeltaNet core, f32 (backend.h: gdn_chunk_fwd, gdn_chunk_bwd; launched by
 * gdn_chunk.cu, run on the host by dev/cuda/gdn_chunk_emu_test.cpp). The math and names are those of
 * src/layers/gated_deltanet.c and of the CPU kernels (src/backends/cpu/cpu_gdn_impl.h): within a chunk of
 * n tokens from state S0, G = cumsum(g), gamma = exp(G), D_ts = exp(G_t - G_s) (s <= t),
 *     (I + M) U = diag(beta) (V - diag(gamma) K S0),  M_ts = beta_t (k_t . k_s) D_ts  (s < t)
 *     O = diag(gamma) Q S0 + P U,  P_ts = (q_t . k_s) D_ts  (s <= t)
 *     S_n = gamma_n S0 + sum_s D_ns k_s u_s^T
 *
 * One block per (batch, head) walks the chunks in order (forward) or in reverse (backward) with the state
 * S [dk, dv] in shared memory; every phase of a chunk is a loop of the block's threads over the elements of
 * one product (a thread computes an element with a loop over the contracted axis), separated by
 * __syncthreads. The triangular solves run one column of U per thread (columns are independent), so they
 * need no barrier. No atomics: every sum has one owner and a fixed order, so two runs give the same bits.
 *
 * Shared memory, floats (the includer defines GDN_SMEM(): the dynamic shared memory as float *). Rows of
 * K and Q (and of S in the backward pass) are padded by one float so that threads reading one column of
 * them hit distinct banks. The launcher declines shapes whose backward does not fit (dk = dv = 128 at
 * C = 64 needs ~380 KB): those compose.
 *   forward:  S [dk, dv], K, Q [C, dk+1], U, X [C, dv], A [C, C], G, gamma, beta, E [C]
 *   backward: S0, dS [dk, dv+1], K, Q [C, dk+1], U, dU, X, dO [C, dv], A, P, dA [C, C],
 *             G, gamma, beta, E, dG, rowtmp [C], red [threads] */
#ifndef TTT_GDN_CHUNK_CUH
#define TTT_GDN_CHUNK_CUH

namespace gdnk {

struct Params {
    int T, C, K, V; /* tokens, chunk (the last may be shorter), dk, dv */
    const float *q, *k, *v, *beta, *g;
    const float *s0;     /* forward: NULL = zeros */
    float *o, *s_out;    /* forward; s_out may be NULL */
    float *states;       /* [BH, N, dk, dv]: written by the forward (may be NULL), read by the backward */
    const float *dout;   /* backward: NULL = zeros */
    const float *ds_out; /* backward: NULL = zeros */
    float *dq, *dk, *dv, *dbeta, *dg, *ds0; /* backward; ds0 may be NULL */
};

__host__ __device__ inline int fwd_smem_floats(int C, int K, int V) {
    return K * V + 2 * C * (K + 1) + 2 * C * V + C * C + 4 * C;
}
__host__ __device__ inline int bwd_smem_floats(int C, int K, int V, int threads) {
    return 2 * K * (V + 1) + 2 * C * (K + 1) + 4 * C * V + 3 * C * C + 6 * C + threads;
}

/* K and Q rows of the chunk (padded), its gates: G, gamma, beta, and E_j = exp(G_{n-1} - G_j) */
__device__ inline void load_chunk(const Params &p, int64_t bh, int t0, int n, float *Kc, float *Qc, float *G,
                                  float *gam, float *bet, float *E) {
    const int K = p.K, KP = p.K + 1, tid = threadIdx.x, nt = blockDim.x;
    const float *k = p.k + (bh * p.T + t0) * K, *q = p.q + (bh * p.T + t0) * K;
    for (int e = tid; e < n * K; e += nt) {
        const int i = e / K, a = e % K;
        Kc[i * KP + a] = k[e];
        Qc[i * KP + a] = q[e];
    }
    if (tid == 0) {
        const float *g = p.g + bh * p.T + t0, *beta = p.beta + bh * p.T + t0;
        float acc = 0.f;
        for (int i = 0; i < n; i++) {
            acc += g[i];
            G[i] = acc;
            gam[i] = expf(acc);
            bet[i] = beta[i];
        }
        for (int j = 0; j < n; j++) E[j] = expf(G[n - 1] - G[j]);
    }
}

/* X [n, V] = Y S scaled per row by (scale ? scale[i] : 1); Y rows padded (KP), S rows of SP floats */
__device__ inline void rows_times_state(int n, int K, int V, int SP, const float *Y, const float *S, const float *scale,
                                        float *X) {
    const int KP = K + 1;
    for (int e = threadIdx.x; e < n * V; e += blockDim.x) {
        const int i = e / V, x = e % V;
        float s = 0.f;
        for (int a = 0; a < K; a++) s += Y[i * KP + a] * S[a * SP + x];
        X[e] = scale ? scale[i] * s : s;
    }
}

/* A_ij = (y_i . k_j) exp(G_i - G_j) for j < i (strict) or j <= i, times (bscale ? bscale[i] : 1); 0 above */
__device__ inline void decayed_gram(int n, int C, int K, const float *Y, const float *Kc, const float *G,
                                    const float *bscale, int strict, float *A) {
    const int KP = K + 1;
    for (int e = threadIdx.x; e < n * n; e += blockDim.x) {
        const int i = e / n, j = e % n;
        float s = 0.f;
        if (j < i || (!strict && j == i)) {
            for (int a = 0; a < K; a++) s += Y[i * KP + a] * Kc[j * KP + a];
            s *= expf(G[i] - G[j]) * (bscale ? bscale[i] : 1.f);
        }
        A[i * C + j] = s;
    }
}

/* U: from R = diag(beta) (V - diag(gamma) K S0) in place to (I + M)^-1 R, M_ij = beta_i A_ij (j < i);
 * one column per thread */
__device__ inline void forward_substitution(int n, int C, int V, const float *A, const float *bet, float *U) {
    for (int x = threadIdx.x; x < V; x += blockDim.x)
        for (int i = 1; i < n; i++) {
            float s = 0.f;
            for (int j = 0; j < i; j++) s += A[i * C + j] * U[j * V + x];
            U[i * V + x] -= bet[i] * s;
        }
}

__global__ void __launch_bounds__(256) gdn_fwd(Params p) {
    const int K = p.K, V = p.V, C = p.C, T = p.T, KP = K + 1, tid = threadIdx.x, nt = blockDim.x;
    float *S = GDN_SMEM(), *Kc = S + K * V, *Qc = Kc + C * KP, *U = Qc + C * KP, *X = U + C * V, *A = X + C * V,
          *G = A + C * C, *gam = G + C, *bet = gam + C, *E = bet + C;
    const int64_t bh = blockIdx.x;
    const int N = (T + C - 1) / C;
    const float *v = p.v + bh * T * V;
    float *o = p.o + bh * T * V;
    for (int e = tid; e < K * V; e += nt) S[e] = p.s0 ? p.s0[bh * K * V + e] : 0.f;
    for (int c = 0; c < N; c++) {
        const int t0 = c * C, n = T - t0 < C ? T - t0 : C;
        __syncthreads(); /* the previous chunk's S update and reads of its buffers are done */
        if (p.states)
            for (int e = tid; e < K * V; e += nt) p.states[(bh * N + c) * K * V + e] = S[e];
        load_chunk(p, bh, t0, n, Kc, Qc, G, gam, bet, E);
        for (int e = tid; e < n * V; e += nt) U[e] = v[t0 * V + e];
        __syncthreads();
        rows_times_state(n, K, V, V, Kc, S, NULL, X); /* X = K S0 */
        decayed_gram(n, C, K, Kc, Kc, G, NULL, 1, A); /* A_ij = (k_i . k_j) D_ij, j < i */
        __syncthreads();
        for (int e = tid; e < n * V; e += nt) {
            const int i = e / V;
            U[e] = bet[i] * (U[e] - gam[i] * X[e]);
        }
        __syncthreads();
        forward_substitution(n, C, V, A, bet, U);
        __syncthreads();
        rows_times_state(n, K, V, V, Qc, S, gam, X); /* X = diag(gamma) Q S0 */
        decayed_gram(n, C, K, Qc, Kc, G, NULL, 0, A); /* A = P */
        __syncthreads();
        for (int e = tid; e < n * V; e += nt) { /* o_i = X_i + sum_{j<=i} P_ij u_j */
            const int i = e / V, x = e % V;
            float s = X[e];
            for (int j = 0; j <= i; j++) s += A[i * C + j] * U[j * V + x];
            o[(t0 + i) * V + x] = s;
        }
        const float gn = gam[n - 1];
        for (int e = tid; e < K * V; e += nt) { /* S = gamma_n S + sum_j E_j k_j u_j^T */
            const int a = e / V, x = e % V;
            float s = gn * S[e];
            for (int j = 0; j < n; j++) s += E[j] * Kc[j * KP + a] * U[j * V + x];
            S[e] = s;
        }
    }
    __syncthreads();
    if (p.s_out)
        for (int e = tid; e < K * V; e += nt) p.s_out[bh * K * V + e] = S[e];
}

/* Chunks in reverse, each recomputed from its stored state S0. dS holds the gradient of the state after
 * the chunk and becomes, in place, that of S0 (the previous chunk's). Each phase reverses a line of the
 * forward pass (see the CPU kernel's comment, cpu_gdn_impl.h, for the formulas). */
__global__ void __launch_bounds__(256) gdn_bwd(Params p) {
    const int K = p.K, V = p.V, C = p.C, T = p.T, KP = K + 1, VP = V + 1, tid = threadIdx.x, nt = blockDim.x;
    float *S0 = GDN_SMEM(), *dS = S0 + K * VP, *Kc = dS + K * VP, *Qc = Kc + C * KP, *U = Qc + C * KP,
          *dU = U + C * V, *X = dU + C * V, *dO = X + C * V, *A = dO + C * V, *P = A + C * C, *dA = P + C * C,
          *G = dA + C * C, *gam = G + C, *bet = gam + C, *E = bet + C, *dG = E + C, *rowtmp = dG + C,
          *red = rowtmp + C;
    const int64_t bh = blockIdx.x;
    const int N = (T + C - 1) / C;
    const float *v = p.v + bh * T * V;
    for (int e = tid; e < K * V; e += nt) dS[(e / V) * VP + e % V] = p.ds_out ? p.ds_out[bh * K * V + e] : 0.f;
    for (int c = N - 1; c >= 0; c--) {
        const int t0 = c * C, n = T - t0 < C ? T - t0 : C;
        float *dq = p.dq + (bh * T + t0) * K, *dk = p.dk + (bh * T + t0) * K, *dv = p.dv + (bh * T + t0) * V;
        __syncthreads();
        for (int e = tid; e < K * V; e += nt) S0[(e / V) * VP + e % V] = p.states[(bh * N + c) * K * V + e];
        load_chunk(p, bh, t0, n, Kc, Qc, G, gam, bet, E);
        for (int e = tid; e < n * V; e += nt) dO[e] = p.dout ? p.dout[(bh * T + t0) * V + e] : 0.f;
        __syncthreads();
        /* 1: X = K S0, dU = Q S0 (for now), A_ij = (k_i . k_j) D_ij (j < i) */
        rows_times_state(n, K, V, VP, Kc, S0, NULL, X);
        rows_times_state(n, K, V, VP, Qc, S0, NULL, dU);
        decayed_gram(n, C, K, Kc, Kc, G, NULL, 1, A);
        __syncthreads();
        /* 2: dG_i = gamma_i dO_i . (Q S0)_i; U = R; the partial sums of <S0, dS> */
        for (int i = tid; i < n; i += nt) {
            float s = 0.f;
            for (int x = 0; x < V; x++) s += dO[i * V + x] * dU[i * V + x];
            dG[i] = gam[i] * s;
        }
        for (int e = tid; e < n * V; e += nt) {
            const int i = e / V;
            U[e] = bet[i] * (v[t0 * V + e] - gam[i] * X[e]);
        }
        {
            float s = 0.f;
            for (int e = tid; e < K * V; e += nt) s += S0[(e / V) * VP + e % V] * dS[(e / V) * VP + e % V];
            red[tid] = s;
        }
        __syncthreads();
        /* 3: U = (I + M)^-1 R; dG_{n-1} += gamma_n <S0, dS> (summed in thread order) */
        forward_substitution(n, C, V, A, bet, U);
        if (tid == 0) {
            float s = 0.f;
            for (int t = 0; t < nt; t++) s += red[t];
            dG[n - 1] += gam[n - 1] * s;
        }
        __syncthreads();
        /* 4a (S_n = gamma_n S0 + sum_j E_j k_j u_j^T): dU_j = dS^T k_j (unscaled), dk_j = E_j dS u_j */
        for (int e = tid; e < n * V; e += nt) {
            const int j = e / V, x = e % V;
            float s = 0.f;
            for (int a = 0; a < K; a++) s += Kc[j * KP + a] * dS[a * VP + x];
            dU[e] = s;
        }
        for (int e = tid; e < n * K; e += nt) {
            const int j = e / K, a = e % K;
            float s = 0.f;
            for (int x = 0; x < V; x++) s += dS[a * VP + x] * U[j * V + x];
            dk[e] = E[j] * s;
        }
        __syncthreads();
        /* 4b: the decay E_j's gradient, E_j (dS^T k_j) . u_j, to G_{n-1} (+) and G_j (-); dU_j *= E_j */
        for (int j = tid; j < n; j += nt) {
            float de = 0.f;
            for (int x = 0; x < V; x++) de += dU[j * V + x] * U[j * V + x];
            rowtmp[j] = E[j] * de;
            dG[j] -= E[j] * de;
            for (int x = 0; x < V; x++) dU[j * V + x] *= E[j];
        }
        __syncthreads();
        /* 5: dS <- gamma_n dS (the start of S0's gradient) */
        if (tid == 0) {
            float s = 0.f;
            for (int j = 0; j < n; j++) s += rowtmp[j];
            dG[n - 1] += s;
        }
        for (int e = tid; e < K * V; e += nt) dS[(e / V) * VP + e % V] *= gam[n - 1];
        if (p.dout) {
            /* 6a (O = diag(gamma) Q S0 + P U): P, and dA = dP = dO U^T (j <= i) */
            decayed_gram(n, C, K, Qc, Kc, G, NULL, 0, P);
            for (int e = tid; e < n * n; e += nt) {
                const int i = e / n, j = e % n;
                float s = 0.f;
                if (j <= i)
                    for (int x = 0; x < V; x++) s += dO[i * V + x] * U[j * V + x];
                dA[i * C + j] = s;
            }
            __syncthreads();
            /* 6b: the decays' gradient sum_j dP_ij P_ij to G_i (+) and G_j (-); dU += P^T dO */
            for (int i = tid; i < n; i += nt) {
                float rs = 0.f, cs = 0.f;
                for (int j = 0; j <= i; j++) rs += dA[i * C + j] * P[i * C + j];
                for (int t = i; t < n; t++) cs += dA[t * C + i] * P[t * C + i];
                dG[i] += rs - cs;
            }
            for (int e = tid; e < n * V; e += nt) {
                const int j = e / V, x = e % V;
                float s = 0.f;
                for (int i = j; i < n; i++) s += P[i * C + j] * dO[i * V + x];
                dU[e] += s;
            }
            __syncthreads();
            /* 6c: dA = dP * D */
            for (int e = tid; e < n * n; e += nt) {
                const int i = e / n, j = e % n;
                if (j <= i) dA[i * C + j] *= expf(G[i] - G[j]);
            }
            __syncthreads();
            /* 6d: dq = diag(gamma) dO S0^T + dA K, dk += dA^T Q, dS += Q^T diag(gamma) dO */
            for (int e = tid; e < n * K; e += nt) {
                const int i = e / K, a = e % K;
                float s = 0.f, t = 0.f, u = 0.f;
                for (int x = 0; x < V; x++) s += dO[i * V + x] * S0[a * VP + x];
                for (int j = 0; j <= i; j++) t += dA[i * C + j] * Kc[j * KP + a];
                for (int r = i; r < n; r++) u += dA[r * C + i] * Qc[r * KP + a];
                dq[e] = gam[i] * s + t;
                dk[e] += u;
            }
            for (int e = tid; e < K * V; e += nt) {
                const int a = e / V, x = e % V;
                float s = 0.f;
                for (int i = 0; i < n; i++) s += Qc[i * KP + a] * gam[i] * dO[i * V + x];
                dS[a * VP + x] += s;
            }
        } else {
            for (int e = tid; e < n * K; e += nt) dq[e] = 0.f;
        }
        __syncthreads();
        /* 7: dR = (I + M)^-T dU by back substitution, in place, one column per thread */
        for (int x = tid; x < V; x += nt)
            for (int s = n - 2; s >= 0; s--) {
                float acc = 0.f;
                for (int t = s + 1; t < n; t++) acc += bet[t] * A[t * C + s] * dU[t * V + x];
                dU[s * V + x] -= acc;
            }
        __syncthreads();
        /* 8a: dA_ts = dM_ts = -dR_t . u_s and P_ts = dM_ts beta_t D_ts (s < t) */
        for (int e = tid; e < n * n; e += nt) {
            const int t = e / n, s = e % n;
            float m = 0.f;
            if (s < t)
                for (int x = 0; x < V; x++) m -= dU[t * V + x] * U[s * V + x];
            dA[t * C + s] = m;
            P[t * C + s] = s < t ? m * bet[t] * expf(G[t] - G[s]) : 0.f;
        }
        __syncthreads();
        /* 8b: dbeta, the decays' gradient through M and gamma (R_t = beta_t (v_t - gamma_t S0^T k_t)), dv */
        for (int t = tid; t < n; t += nt) {
            float db = 0.f, cs = 0.f, rdot = 0.f, ksdot = 0.f;
            for (int s = 0; s < t; s++) db += dA[t * C + s] * A[t * C + s];
            for (int r = t + 1; r < n; r++) cs += bet[r] * dA[r * C + t] * A[r * C + t];
            for (int x = 0; x < V; x++) {
                const float dr = dU[t * V + x];
                rdot += dr * (v[(t0 + t) * V + x] - gam[t] * X[t * V + x]);
                ksdot += dr * X[t * V + x];
            }
            p.dbeta[bh * T + t0 + t] = db + rdot;
            dG[t] += bet[t] * db - cs - gam[t] * bet[t] * ksdot;
        }
        for (int e = tid; e < n * V; e += nt) dv[e] = bet[e / V] * dU[e];
        /* 8c: dk through K K^T (P holds its gradient) and through K S0; dS += K^T dKS, dKS_t = -beta_t gamma_t dR_t */
        for (int e = tid; e < n * K; e += nt) {
            const int t = e / K, a = e % K;
            float s = 0.f, u = 0.f;
            for (int r = 0; r < t; r++) s += P[t * C + r] * Kc[r * KP + a];
            for (int r = t + 1; r < n; r++) s += P[r * C + t] * Kc[r * KP + a];
            for (int x = 0; x < V; x++) u += dU[t * V + x] * S0[a * VP + x];
            dk[e] += s - bet[t] * gam[t] * u;
        }
        for (int e = tid; e < K * V; e += nt) {
            const int a = e / V, x = e % V;
            float s = 0.f;
            for (int t = 0; t < n; t++) s += Kc[t * KP + a] * bet[t] * gam[t] * dU[t * V + x];
            dS[a * VP + x] -= s;
        }
        __syncthreads();
        /* 9: dg_s = sum_{t >= s} dG_t */
        if (tid == 0) {
            float acc = 0.f;
            for (int s = n - 1; s >= 0; s--) {
                acc += dG[s];
                p.dg[bh * T + t0 + s] = acc;
            }
        }
    }
    __syncthreads();
    if (p.ds0)
        for (int e = tid; e < K * V; e += nt) p.ds0[bh * K * V + e] = dS[(e / V) * VP + e % V];
}

} // namespace gdnk

#endif
