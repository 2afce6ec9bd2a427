/* The fused chunkwise Gated DeltaNet core, f32 (backend.h: gdn_chunk_fwd, gdn_chunk_bwd; launched by
 * gdn_chunk.cu, run on the host by dev/cuda/gdn_chunk_emu_test.cpp). The math and names are those of
 * src/layers/gated_deltanet.c and of the CPU kernels (src/backends/cpu/cpu_gdn_impl.h): within a chunk of
 * n tokens from state S0, G = cumsum(g), gamma = exp(G), D_ts = exp(G_t - G_s) (s <= t),
 *     (I + M) U = diag(beta) (V - diag(gamma) K S0),  M_ts = beta_t (k_t . k_s) D_ts  (s < t)
 *     O = diag(gamma) Q S0 + P U,  P_ts = (q_t . k_s) D_ts  (s <= t)
 *     S_n = gamma_n S0 + sum_s D_ns k_s u_s^T
 *
 * One block per (batch, head, tile of dv columns) walks the chunks in order (forward) or in reverse
 * (backward) with its columns of the state S [dk, dv] in shared memory. The columns of S evolve
 * independently (S_t[:, x] = alpha_t (I - beta_t k_t k_t^T) S_{t-1}[:, x] + beta_t k_t v_t[x]), and so do
 * those of its gradient, so tiles need each other only for the gradients with respect to q, k, beta and g,
 * which are sums over the columns: with more than one tile each tile writes its own partial sums
 * (Params.part_k, part_t apart) and gdn_sum_tiles adds them in tile order. Tiles give a grid of B H
 * (dv / tile) blocks where B H alone would leave most of the GPU idle, and let dk = dv = 128 fit.
 * Every phase of a chunk is a loop of the block's threads over the elements of one product (a thread
 * computes an element with a loop over the contracted axis), separated by __syncthreads. The triangular
 * solves run one column of U per thread (columns are independent), so they need no barrier. No atomics:
 * every sum has one owner and a fixed order, so two runs give the same bits.
 *
 * Shared memory, floats (the includer defines GDN_SMEM(): the dynamic shared memory as float *), for a
 * tile of w <= VT columns. Rows of K and Q (and of S in the backward pass) are padded by one float so that
 * threads reading one column of them hit distinct banks.
 *   forward:  S [dk, w], K, Q [C, dk+1], U, X [C, w], A [C, C], G, gamma, beta, E [C]
 *   backward: S0, dS [dk, w+1], K, Q [C, dk+1], U, dU, X, dO [C, w], A, P, dA [C, C],
 *             G, gamma, beta, E, dG, rowtmp [C], red [threads] */
#ifndef TTT_GDN_CHUNK_CUH
#define TTT_GDN_CHUNK_CUH

namespace gdnk {

struct Params {
    int T, C, K, V; /* tokens, chunk (the last may be shorter), dk, dv */
    int VT;         /* columns per tile: block (bh, j) takes columns j VT .. min(V, (j + 1) VT) - 1 */
    int64_t part_k, part_t; /* backward: floats between two tiles' dq / dk, and dbeta / dg (0: one tile) */
    const float *q, *k, *v, *beta, *g;
    const float *s0;     /* forward: NULL = zeros */
    float *o, *s_out;    /* forward; s_out may be NULL */
    float *states;       /* [BH, N, dk, dv]: written by the forward (may be NULL), read by the backward */
    const float *dout;   /* backward: NULL = zeros */
    const float *ds_out; /* backward: NULL = zeros */
    float *dq, *dk, *dv, *dbeta, *dg, *ds0; /* backward; ds0 may be NULL */
};

/* shared memory of a tile of VT columns */
__host__ __device__ inline int fwd_smem_floats(int C, int K, int VT) {
    return K * VT + 2 * C * (K + 1) + 2 * C * VT + C * C + 4 * C;
}
__host__ __device__ inline int bwd_smem_floats(int C, int K, int VT, int threads) {
    return 2 * K * (VT + 1) + 2 * C * (K + 1) + 4 * C * VT + 3 * C * C + 6 * C + threads;
}

/* Columns per tile for a grid of bh (batch, head) pairs on a GPU of sm_count SMs that gives a block
 * smem_max bytes of shared memory (the launcher's choice, here so the emulator test checks it): halve the
 * tiles while the grid has fewer blocks than SMs and tiles stay grid_tile (16) wide, then while the
 * backward's shared memory does not fit, down to min_tile (8). 0: even tiles of min_tile do not fit. */
inline int choose_tile(int64_t bh, int C, int K, int V, int threads, int sm_count, int64_t smem_max, int grid_tile = 16,
                       int min_tile = 8) {
    int vt = V;
    while (bh * ((V + vt - 1) / vt) < sm_count && vt / 2 >= grid_tile) vt = (vt + 1) / 2;
    while ((int64_t)bwd_smem_floats(C, K, vt, threads) * 4 > smem_max && vt > min_tile) vt = (vt + 1) / 2;
    const int64_t need = (int64_t)bwd_smem_floats(C, K, vt, threads) * 4, fwd = (int64_t)fwd_smem_floats(C, K, vt) * 4;
    return need <= smem_max && fwd <= smem_max ? vt : 0;
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
    const int K = p.K, C = p.C, T = p.T, KP = K + 1, tid = threadIdx.x, nt = blockDim.x;
    const int x0 = blockIdx.y * p.VT, W = p.V - x0 < p.VT ? p.V - x0 : p.VT, LD = p.V; /* this tile's columns */
    float *S = GDN_SMEM(), *Kc = S + K * W, *Qc = Kc + C * KP, *U = Qc + C * KP, *X = U + C * W, *A = X + C * W,
          *G = A + C * C, *gam = G + C, *bet = gam + C, *E = bet + C;
    const int64_t bh = blockIdx.x;
    const int N = (T + C - 1) / C;
    const float *v = p.v + bh * T * LD + x0;
    float *o = p.o + bh * T * LD + x0;
    for (int e = tid; e < K * W; e += nt) S[e] = p.s0 ? p.s0[bh * K * LD + (e / W) * LD + x0 + e % W] : 0.f;
    for (int c = 0; c < N; c++) {
        const int t0 = c * C, n = T - t0 < C ? T - t0 : C;
        __syncthreads(); /* the previous chunk's S update and reads of its buffers are done */
        if (p.states)
            for (int e = tid; e < K * W; e += nt) p.states[(bh * N + c) * K * LD + (e / W) * LD + x0 + e % W] = S[e];
        load_chunk(p, bh, t0, n, Kc, Qc, G, gam, bet, E);
        for (int e = tid; e < n * W; e += nt) U[e] = v[(t0 + e / W) * LD + e % W];
        __syncthreads();
        rows_times_state(n, K, W, W, Kc, S, NULL, X); /* X = K S0 */
        decayed_gram(n, C, K, Kc, Kc, G, NULL, 1, A); /* A_ij = (k_i . k_j) D_ij, j < i */
        __syncthreads();
        for (int e = tid; e < n * W; e += nt) {
            const int i = e / W;
            U[e] = bet[i] * (U[e] - gam[i] * X[e]);
        }
        __syncthreads();
        forward_substitution(n, C, W, A, bet, U);
        __syncthreads();
        rows_times_state(n, K, W, W, Qc, S, gam, X); /* X = diag(gamma) Q S0 */
        decayed_gram(n, C, K, Qc, Kc, G, NULL, 0, A); /* A = P */
        __syncthreads();
        for (int e = tid; e < n * W; e += nt) { /* o_i = X_i + sum_{j<=i} P_ij u_j */
            const int i = e / W, x = e % W;
            float s = X[e];
            for (int j = 0; j <= i; j++) s += A[i * C + j] * U[j * W + x];
            o[(t0 + i) * LD + x] = s;
        }
        const float gn = gam[n - 1];
        for (int e = tid; e < K * W; e += nt) { /* S = gamma_n S + sum_j E_j k_j u_j^T */
            const int a = e / W, x = e % W;
            float s = gn * S[e];
            for (int j = 0; j < n; j++) s += E[j] * Kc[j * KP + a] * U[j * W + x];
            S[e] = s;
        }
    }
    __syncthreads();
    if (p.s_out)
        for (int e = tid; e < K * W; e += nt) p.s_out[bh * K * LD + (e / W) * LD + x0 + e % W] = S[e];
}

/* Chunks in reverse, each recomputed from its stored state S0. dS holds the gradient of the state after
 * the chunk and becomes, in place, that of S0 (the previous chunk's). Each phase reverses a line of the
 * forward pass (see the CPU kernel's comment, cpu_gdn_impl.h, for the formulas). Sums over the columns
 * (dS^T k_j . u_j, dO_i . u_j, dR_t . u_s, dR_t . (v_t - gamma_t S0^T k_t), <S0, dS>) run over this tile's
 * columns only: they reach dq, dk, dbeta and dg, which are this tile's partial sums. */
__global__ void __launch_bounds__(256) gdn_bwd(Params p) {
    const int K = p.K, C = p.C, T = p.T, KP = K + 1, tid = threadIdx.x, nt = blockDim.x;
    const int x0 = blockIdx.y * p.VT, W = p.V - x0 < p.VT ? p.V - x0 : p.VT, LD = p.V, WP = W + 1;
    float *S0 = GDN_SMEM(), *dS = S0 + K * WP, *Kc = dS + K * WP, *Qc = Kc + C * KP, *U = Qc + C * KP,
          *dU = U + C * W, *X = dU + C * W, *dO = X + C * W, *A = dO + C * W, *P = A + C * C, *dA = P + C * C,
          *G = dA + C * C, *gam = G + C, *bet = gam + C, *E = bet + C, *dG = E + C, *rowtmp = dG + C,
          *red = rowtmp + C;
    const int64_t bh = blockIdx.x;
    const int N = (T + C - 1) / C;
    const float *v = p.v + bh * T * LD + x0;
    for (int e = tid; e < K * W; e += nt)
        dS[(e / W) * WP + e % W] = p.ds_out ? p.ds_out[bh * K * LD + (e / W) * LD + x0 + e % W] : 0.f;
    for (int c = N - 1; c >= 0; c--) {
        const int t0 = c * C, n = T - t0 < C ? T - t0 : C;
        float *dq = p.dq + blockIdx.y * p.part_k + (bh * T + t0) * K;
        float *dk = p.dk + blockIdx.y * p.part_k + (bh * T + t0) * K;
        float *dv = p.dv + (bh * T + t0) * LD + x0;
        __syncthreads();
        for (int e = tid; e < K * W; e += nt)
            S0[(e / W) * WP + e % W] = p.states[(bh * N + c) * K * LD + (e / W) * LD + x0 + e % W];
        load_chunk(p, bh, t0, n, Kc, Qc, G, gam, bet, E);
        for (int e = tid; e < n * W; e += nt)
            dO[e] = p.dout ? p.dout[(bh * T + t0 + e / W) * LD + x0 + e % W] : 0.f;
        __syncthreads();
        /* 1: X = K S0, dU = Q S0 (for now), A_ij = (k_i . k_j) D_ij (j < i) */
        rows_times_state(n, K, W, WP, Kc, S0, NULL, X);
        rows_times_state(n, K, W, WP, Qc, S0, NULL, dU);
        decayed_gram(n, C, K, Kc, Kc, G, NULL, 1, A);
        __syncthreads();
        /* 2: dG_i = gamma_i dO_i . (Q S0)_i; U = R; the partial sums of <S0, dS> */
        for (int i = tid; i < n; i += nt) {
            float s = 0.f;
            for (int x = 0; x < W; x++) s += dO[i * W + x] * dU[i * W + x];
            dG[i] = gam[i] * s;
        }
        for (int e = tid; e < n * W; e += nt) {
            const int i = e / W;
            U[e] = bet[i] * (v[(t0 + i) * LD + e % W] - gam[i] * X[e]);
        }
        {
            float s = 0.f;
            for (int e = tid; e < K * W; e += nt) s += S0[(e / W) * WP + e % W] * dS[(e / W) * WP + e % W];
            red[tid] = s;
        }
        __syncthreads();
        /* 3: U = (I + M)^-1 R; dG_{n-1} += gamma_n <S0, dS> (summed in thread order) */
        forward_substitution(n, C, W, A, bet, U);
        if (tid == 0) {
            float s = 0.f;
            for (int t = 0; t < nt; t++) s += red[t];
            dG[n - 1] += gam[n - 1] * s;
        }
        __syncthreads();
        /* 4a (S_n = gamma_n S0 + sum_j E_j k_j u_j^T): dU_j = dS^T k_j (unscaled), dk_j = E_j dS u_j */
        for (int e = tid; e < n * W; e += nt) {
            const int j = e / W, x = e % W;
            float s = 0.f;
            for (int a = 0; a < K; a++) s += Kc[j * KP + a] * dS[a * WP + x];
            dU[e] = s;
        }
        for (int e = tid; e < n * K; e += nt) {
            const int j = e / K, a = e % K;
            float s = 0.f;
            for (int x = 0; x < W; x++) s += dS[a * WP + x] * U[j * W + x];
            dk[e] = E[j] * s;
        }
        __syncthreads();
        /* 4b: the decay E_j's gradient, E_j (dS^T k_j) . u_j, to G_{n-1} (+) and G_j (-); dU_j *= E_j */
        for (int j = tid; j < n; j += nt) {
            float de = 0.f;
            for (int x = 0; x < W; x++) de += dU[j * W + x] * U[j * W + x];
            rowtmp[j] = E[j] * de;
            dG[j] -= E[j] * de;
            for (int x = 0; x < W; x++) dU[j * W + x] *= E[j];
        }
        __syncthreads();
        /* 5: dS <- gamma_n dS (the start of S0's gradient) */
        if (tid == 0) {
            float s = 0.f;
            for (int j = 0; j < n; j++) s += rowtmp[j];
            dG[n - 1] += s;
        }
        for (int e = tid; e < K * W; e += nt) dS[(e / W) * WP + e % W] *= gam[n - 1];
        if (p.dout) {
            /* 6a (O = diag(gamma) Q S0 + P U): P, and dA = dP = dO U^T (j <= i) */
            decayed_gram(n, C, K, Qc, Kc, G, NULL, 0, P);
            for (int e = tid; e < n * n; e += nt) {
                const int i = e / n, j = e % n;
                float s = 0.f;
                if (j <= i)
                    for (int x = 0; x < W; x++) s += dO[i * W + x] * U[j * W + x];
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
            for (int e = tid; e < n * W; e += nt) {
                const int j = e / W, x = e % W;
                float s = 0.f;
                for (int i = j; i < n; i++) s += P[i * C + j] * dO[i * W + x];
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
                for (int x = 0; x < W; x++) s += dO[i * W + x] * S0[a * WP + x];
                for (int j = 0; j <= i; j++) t += dA[i * C + j] * Kc[j * KP + a];
                for (int r = i; r < n; r++) u += dA[r * C + i] * Qc[r * KP + a];
                dq[e] = gam[i] * s + t;
                dk[e] += u;
            }
            for (int e = tid; e < K * W; e += nt) {
                const int a = e / W, x = e % W;
                float s = 0.f;
                for (int i = 0; i < n; i++) s += Qc[i * KP + a] * gam[i] * dO[i * W + x];
                dS[a * WP + x] += s;
            }
        } else {
            for (int e = tid; e < n * K; e += nt) dq[e] = 0.f;
        }
        __syncthreads();
        /* 7: dR = (I + M)^-T dU by back substitution, in place, one column per thread */
        for (int x = tid; x < W; x += nt)
            for (int s = n - 2; s >= 0; s--) {
                float acc = 0.f;
                for (int t = s + 1; t < n; t++) acc += bet[t] * A[t * C + s] * dU[t * W + x];
                dU[s * W + x] -= acc;
            }
        __syncthreads();
        /* 8a: dA_ts = dM_ts = -dR_t . u_s and P_ts = dM_ts beta_t D_ts (s < t) */
        for (int e = tid; e < n * n; e += nt) {
            const int t = e / n, s = e % n;
            float m = 0.f;
            if (s < t)
                for (int x = 0; x < W; x++) m -= dU[t * W + x] * U[s * W + x];
            dA[t * C + s] = m;
            P[t * C + s] = s < t ? m * bet[t] * expf(G[t] - G[s]) : 0.f;
        }
        __syncthreads();
        /* 8b: dbeta, the decays' gradient through M and gamma (R_t = beta_t (v_t - gamma_t S0^T k_t)), dv */
        for (int t = tid; t < n; t += nt) {
            float db = 0.f, cs = 0.f, rdot = 0.f, ksdot = 0.f;
            for (int s = 0; s < t; s++) db += dA[t * C + s] * A[t * C + s];
            for (int r = t + 1; r < n; r++) cs += bet[r] * dA[r * C + t] * A[r * C + t];
            for (int x = 0; x < W; x++) {
                const float dr = dU[t * W + x];
                rdot += dr * (v[(t0 + t) * LD + x] - gam[t] * X[t * W + x]);
                ksdot += dr * X[t * W + x];
            }
            p.dbeta[blockIdx.y * p.part_t + bh * T + t0 + t] = db + rdot;
            dG[t] += bet[t] * db - cs - gam[t] * bet[t] * ksdot;
        }
        for (int e = tid; e < n * W; e += nt) dv[(e / W) * LD + e % W] = bet[e / W] * dU[e];
        /* 8c: dk through K K^T (P holds its gradient) and through K S0; dS += K^T dKS, dKS_t = -beta_t gamma_t dR_t */
        for (int e = tid; e < n * K; e += nt) {
            const int t = e / K, a = e % K;
            float s = 0.f, u = 0.f;
            for (int r = 0; r < t; r++) s += P[t * C + r] * Kc[r * KP + a];
            for (int r = t + 1; r < n; r++) s += P[r * C + t] * Kc[r * KP + a];
            for (int x = 0; x < W; x++) u += dU[t * W + x] * S0[a * WP + x];
            dk[e] += s - bet[t] * gam[t] * u;
        }
        for (int e = tid; e < K * W; e += nt) {
            const int a = e / W, x = e % W;
            float s = 0.f;
            for (int t = 0; t < n; t++) s += Kc[t * KP + a] * bet[t] * gam[t] * dU[t * W + x];
            dS[a * WP + x] -= s;
        }
        __syncthreads();
        /* 9: dg_s = sum_{t >= s} dG_t */
        if (tid == 0) {
            float acc = 0.f;
            for (int s = n - 1; s >= 0; s--) {
                acc += dG[s];
                p.dg[blockIdx.y * p.part_t + bh * T + t0 + s] = acc;
            }
        }
    }
    __syncthreads();
    if (p.ds0)
        for (int e = tid; e < K * W; e += nt) p.ds0[bh * K * LD + (e / W) * LD + x0 + e % W] = dS[(e / W) * WP + e % W];
}

/* out[i] = sum over tiles t in order of part[t n + i] (the tiles' partial dq, dk, dbeta, dg) */
__global__ void gdn_sum_tiles(float *out, const float *part, int64_t n, int tiles) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float s = 0.f;
        for (int t = 0; t < tiles; t++) s += part[t * n + i];
        out[i] = s;
    }
}

} // namespace gdnk

#endif
