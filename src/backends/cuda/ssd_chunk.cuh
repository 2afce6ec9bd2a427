/* The fused chunkwise decayed linear recurrence, f32, chunk-parallel (backend.h: ssd_chunk_fwd, ssd_chunk_bwd;
 * launched by ssd_chunk.cu, run on the host by dev/cuda/ssd_chunk_emu_test.cpp): Mamba 2's SSD core and, with
 * g NULL (no decay), causal linear attention's. The math and names are those of the CPU kernels
 * (src/backends/cpu/cpu_ssd_impl.h): within a chunk of n tokens from state S0, G = cumsum(g), D_ts =
 * exp(G_t - G_s) (s <= t), E_s = D_{n-1,s},
 *     O = diag(exp G) Q S0 + ((Q K^T) * D) V,    S_n = a S0 + B,   a = exp(G_{n-1}),  B = (diag(E) K)^T V
 * gdn_chunk.cuh's structure without the WY transform: only S0 links the chunks, and the chunk map is the
 * scalar a, so the state scan is elementwise (each thread walks the chunks for its own state elements).
 *
 * Forward: ssd_prep (backward = 0) per (batch, head, chunk): a_c to scratch, B_c to the chunk's slot of
 *   states; ssd_scan (backward = 0) per state element: S_{c+1} = a_c S_c + B_c, each slot's B_c replaced by
 *   S_c, the final state written; ssd_out per (batch, head, chunk): O.
 * Backward, dS_c = a_c dS_{c+1} + Y_c with Y_c = (diag(exp G) Q)^T dO_c: ssd_prep (backward = 1) writes a_c
 *   and Y_c (to dstates' slot c); ssd_scan (backward = 1) walks the chunks in reverse from ds_out, replacing
 *   slot c's Y_c by dS_{c+1} (the gradient of the state after chunk c), and writes ds0; ssd_bwd_chunk per
 *   (batch, head, chunk): dq, dk, dv and dg of the chunk from its stored S_c and dS_{c+1}:
 *     A = (Q K^T) * D, W = (dO V^T) * D (lower triangles, in shared memory)
 *     dQ_t = exp(G_t) S0 dO_t + sum_{s<=t} W_ts k_s,   dK_s = E_s dS v_s + sum_{t>=s} W_ts q_t
 *     dV_s = E_s dS^T k_s + sum_{t>=s} A_ts dO_t
 *     dG_t: every decay factor exp(G_a - G_b) of a term adds it to dG_a and subtracts it from dG_b;
 *     dg = reverse cumsum of dG within the chunk.
 * G, dG and the block's sums are double (with strong gates G reaches hundreds within a chunk, where a float
 * loses ~1e-5 of every decay). No atomics: every sum has one owner and a fixed order. The products are
 * plain f32 FMA loops reading q, k, v, dO and the states from global memory (cached) and the C x C
 * matrices from shared memory: first a correct chunk-parallel structure, not tuned (no register tiles,
 * no tensor cores; see docs/mixers.md). Global offsets are 64-bit.
 *
 * Shared memory (the includer defines SSD_SMEM(): the dynamic shared memory as double *): prep C doubles
 * and C floats; out C doubles and C x C floats; bwd 3 C + threads doubles and 2 C x C floats (C <= 64:
 * 36 KB at 256 threads, under the 48 KB every block may use). */
#ifndef TTT_SSD_CHUNK_CUH
#define TTT_SSD_CHUNK_CUH

namespace ssdk {

struct Params {
    int T, C, K, V; /* tokens, chunk (the last may be shorter), dk, dv */
    int N;          /* chunks: ceil(T / C) */
    const float *q, *k, *v, *g; /* g NULL: no decay */
    const float *s0;            /* forward: NULL = zeros */
    float *o, *s_out;           /* forward; s_out may be NULL */
    float *states;              /* [BH, N, dk, dv]: the state before each chunk (forward: B_c until the scan) */
    const float *dout;          /* backward: NULL = zeros */
    const float *ds_out;        /* backward: NULL = zeros */
    float *dq, *dk, *dv, *dg, *ds0; /* backward; dg NULL exactly when g is, ds0 may be NULL */
    float *decay;               /* scratch [BH, N]: a_c = exp(G_{n-1}) of each chunk */
    float *dstates;             /* backward scratch [BH, N, dk, dv]: Y_c, then the gradient after chunk c */
};

__host__ __device__ inline int prep_smem_bytes(int C) { return C * 8 + C * 4; }
__host__ __device__ inline int out_smem_bytes(int C) { return C * 8 + C * C * 4; }
__host__ __device__ inline int bwd_smem_bytes(int C, int threads) { return (3 * C + threads) * 8 + 2 * C * C * 4; }

/* G[0..n) = cumsum of the chunk's gates (zeros without), by thread 0; the caller syncs */
__device__ inline void cumulative(const Params &p, int64_t bh, int c0, int n, double *G) {
    if (threadIdx.x == 0) {
        double acc = 0;
        for (int t = 0; t < n; t++) G[t] = acc += p.g ? (double)p.g[bh * p.T + c0 + t] : 0.0;
    }
}

/* One block per (batch, head, chunk). Forward: a_c and B_c = (diag(E) K)^T V into states' slot c. Backward:
 * a_c and Y_c = (diag(exp G) Q)^T dO into dstates' slot c. */
__global__ void ssd_prep(Params p, int backward) {
    double *G = SSD_SMEM();
    float *w = reinterpret_cast<float *>(G + p.C); /* E_s (forward) or exp(G_t) (backward) */
    const int64_t item = blockIdx.x, bh = item / p.N;
    const int c = (int)(item % p.N), c0 = c * p.C, n = p.T - c0 < p.C ? p.T - c0 : p.C;
    cumulative(p, bh, c0, n, G);
    __syncthreads();
    for (int t = threadIdx.x; t < n; t += blockDim.x) w[t] = (float)exp(backward ? G[t] : G[n - 1] - G[t]);
    if (threadIdx.x == 0) p.decay[item] = (float)exp(G[n - 1]);
    __syncthreads();
    const int K = p.K, V = p.V;
    const float *X = backward ? p.q + (bh * p.T + c0) * K : p.k + (bh * p.T + c0) * K;
    const float *Y = backward ? (p.dout ? p.dout + (bh * p.T + c0) * V : nullptr) : p.v + (bh * p.T + c0) * V;
    float *out = (backward ? p.dstates : p.states) + item * K * V;
    for (int e = threadIdx.x; e < K * V; e += blockDim.x) {
        const int i = e / V, j = e % V;
        float acc = 0;
        if (Y)
            for (int t = 0; t < n; t++) acc += w[t] * X[t * K + i] * Y[t * V + j];
        out[e] = acc;
    }
}

/* One thread per state element of every (batch, head), walking the chunks: forward in order (slot c's B_c
 * becomes S_c; the final state to s_out), backward in reverse (slot c's Y_c becomes dS_{c+1}; ds0). */
__global__ void ssd_scan(Params p, int backward, int64_t elements) {
    const int64_t KV = (int64_t)p.K * p.V;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < elements; e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t bh = e / KV, ij = e % KV;
        const float *a = p.decay + bh * p.N;
        if (!backward) {
            float S = p.s0 ? p.s0[e] : 0.f;
            for (int c = 0; c < p.N; c++) {
                float *slot = p.states + (bh * p.N + c) * KV + ij;
                const float B = *slot;
                *slot = S;
                S = a[c] * S + B;
            }
            if (p.s_out) p.s_out[e] = S;
        } else {
            float dS = p.ds_out ? p.ds_out[e] : 0.f;
            for (int c = p.N - 1; c >= 0; c--) {
                float *slot = p.dstates + (bh * p.N + c) * KV + ij;
                const float Y = *slot;
                *slot = dS;
                dS = a[c] * dS + Y;
            }
            if (p.ds0) p.ds0[e] = dS;
        }
    }
}

/* One block per (batch, head, chunk): O = diag(exp G) Q S_c + P V with P = (Q K^T) * D in shared memory. */
__global__ void ssd_out(Params p) {
    double *G = SSD_SMEM();
    float *P = reinterpret_cast<float *>(G + p.C);
    const int64_t item = blockIdx.x, bh = item / p.N;
    const int c = (int)(item % p.N), c0 = c * p.C, n = p.T - c0 < p.C ? p.T - c0 : p.C, C = p.C, K = p.K, V = p.V;
    const float *Q = p.q + (bh * p.T + c0) * K, *Kc = p.k + (bh * p.T + c0) * K, *Vc = p.v + (bh * p.T + c0) * V;
    const float *S = p.states + item * K * V;
    cumulative(p, bh, c0, n, G);
    __syncthreads();
    for (int e = threadIdx.x; e < n * C; e += blockDim.x) {
        const int t = e / C, s = e % C;
        float acc = 0;
        if (s <= t)
            for (int i = 0; i < K; i++) acc += Q[t * K + i] * Kc[s * K + i];
        P[e] = s <= t ? (float)exp(G[t] - G[s]) * acc : 0.f;
    }
    __syncthreads();
    float *O = p.o + (bh * p.T + c0) * V;
    for (int e = threadIdx.x; e < n * V; e += blockDim.x) {
        const int t = e / V, j = e % V;
        float qs = 0, pv = 0;
        for (int i = 0; i < K; i++) qs += Q[t * K + i] * S[i * V + j];
        for (int s = 0; s <= t; s++) pv += P[t * C + s] * Vc[s * V + j];
        O[e] = (float)exp(G[t]) * qs + pv;
    }
}

/* One block per (batch, head, chunk): the chunk's dq, dk, dv and dg from S0 = states' slot c and dS =
 * dstates' slot c (the gradient of the state after the chunk). */
__global__ void ssd_bwd_chunk(Params p) {
    double *G = SSD_SMEM(), *dG = G + p.C, *u = dG + p.C, *red = u + p.C;
    float *A = reinterpret_cast<float *>(red + blockDim.x), *W = A + p.C * p.C;
    const int64_t item = blockIdx.x, bh = item / p.N;
    const int c = (int)(item % p.N), c0 = c * p.C, n = p.T - c0 < p.C ? p.T - c0 : p.C, C = p.C, K = p.K, V = p.V;
    const int64_t rk = (bh * p.T + c0) * K, rv = (bh * p.T + c0) * V;
    const float *Q = p.q + rk, *Kc = p.k + rk, *Vc = p.v + rv, *dO = p.dout ? p.dout + rv : nullptr;
    const float *S0 = p.states + item * K * V, *dS = p.dstates + item * K * V;
    cumulative(p, bh, c0, n, G);
    __syncthreads();
    for (int e = threadIdx.x; e < n * C; e += blockDim.x) {
        const int t = e / C, s = e % C;
        float a = 0, w = 0;
        if (s <= t) {
            for (int i = 0; i < K; i++) a += Q[t * K + i] * Kc[s * K + i];
            if (dO)
                for (int j = 0; j < V; j++) w += dO[t * V + j] * Vc[s * V + j];
        }
        const float d = s <= t ? (float)exp(G[t] - G[s]) : 0.f;
        A[e] = d * a, W[e] = d * w;
    }
    __syncthreads();
    float *dQ = p.dq + rk, *dK = p.dk + rk, *dV = p.dv + rv;
    for (int e = threadIdx.x; e < n * K; e += blockDim.x) {
        const int t = e / K, i = e % K;
        float sdo = 0, wk = 0, dsv = 0, wq = 0;
        if (dO)
            for (int j = 0; j < V; j++) sdo += S0[i * V + j] * dO[t * V + j];
        for (int s = 0; s <= t; s++) wk += W[t * C + s] * Kc[s * K + i];
        for (int j = 0; j < V; j++) dsv += dS[i * V + j] * Vc[t * V + j];
        for (int r = t; r < n; r++) wq += W[r * C + t] * Q[r * K + i];
        dQ[e] = (float)exp(G[t]) * sdo + wk;
        dK[e] = (float)exp(G[n - 1] - G[t]) * dsv + wq;
    }
    for (int e = threadIdx.x; e < n * V; e += blockDim.x) {
        const int t = e / V, j = e % V;
        float dsk = 0, ado = 0;
        for (int i = 0; i < K; i++) dsk += Kc[t * K + i] * dS[i * V + j];
        if (dO)
            for (int r = t; r < n; r++) ado += A[r * C + t] * dO[r * V + j];
        dV[e] = (float)exp(G[n - 1] - G[t]) * dsk + ado;
    }
    if (!p.g) return; /* no gates: no dg (every thread returns, no barrier follows) */
    /* dG_t, one thread per token: exp(G_t) q_t^T S0 dO_t, the pairs (t, s) s < t as the row t minus the
     * column t of (A * (dO V^T)), and -E_t k_t^T dS v_t (whose +E_t goes to dG_{n-1}: u_t) */
    for (int t = threadIdx.x; t < n; t += blockDim.x) {
        double acc = 0, ut = 0;
        if (dO) {
            double qsd = 0;
            for (int i = 0; i < K; i++) {
                float r = 0;
                for (int j = 0; j < V; j++) r += S0[i * V + j] * dO[t * V + j];
                qsd += (double)Q[t * K + i] * r;
            }
            acc += exp(G[t]) * qsd;
            for (int s = 0; s < t; s++) {
                float w = 0;
                for (int j = 0; j < V; j++) w += dO[t * V + j] * Vc[s * V + j];
                acc += (double)A[t * C + s] * w;
            }
            for (int r = t + 1; r < n; r++) {
                float w = 0;
                for (int j = 0; j < V; j++) w += dO[r * V + j] * Vc[t * V + j];
                acc -= (double)A[r * C + t] * w;
            }
        }
        for (int i = 0; i < K; i++) {
            float r = 0;
            for (int j = 0; j < V; j++) r += dS[i * V + j] * Vc[t * V + j];
            ut += (double)Kc[t * K + i] * r;
        }
        ut *= exp(G[n - 1] - G[t]);
        dG[t] = acc - ut;
        u[t] = ut;
    }
    /* <dS, S0>, the derivative of a_c S0 by G_{n-1}: partial sums per thread, added in thread order */
    double part = 0;
    for (int e = threadIdx.x; e < K * V; e += blockDim.x) part += (double)dS[e] * S0[e];
    red[threadIdx.x] = part;
    __syncthreads();
    if (threadIdx.x == 0) {
        double dot = 0, us = 0;
        for (unsigned i = 0; i < blockDim.x; i++) dot += red[i];
        for (int t = 0; t < n; t++) us += u[t];
        dG[n - 1] += exp(G[n - 1]) * dot + us;
        double acc = 0; /* g_j enters every G_t with t >= j */
        for (int t = n - 1; t >= 0; t--) p.dg[bh * p.T + c0 + t] = (float)(acc += dG[t]);
    }
}

} // namespace ssdk

#endif
