/* The fused chunkwise Gated DeltaNet core, f32, chunk-parallel (backend.h: gdn_chunk_fwd, gdn_chunk_bwd;
 * launched by gdn_chunk.cu, run on the host by dev/cuda/gdn_chunk_emu_test.cpp). The math and names are
 * those of src/layers/gated_deltanet.c and of the CPU kernels (src/backends/cpu/cpu_gdn_impl.h): within a
 * chunk of n tokens from state S0, G = cumsum(g), gamma = exp(G), D_ts = exp(G_t - G_s) (s <= t),
 * E_s = D_{n-1,s}, M_ts = beta_t (k_t . k_s) D_ts (s < t), Tm = (I + M)^-1 (the WY / UT transform),
 *     W = Tm diag(beta gamma) K,  Ut = Tm diag(beta) V,  U = Ut - W S0
 *     P_ts = (q_t . k_s) D_ts (s <= t),  Qe = diag(gamma) Q - P W
 *     O = Qe S0 + P Ut
 *     S_n = A S0 + B,  A = gamma_n I - (diag(E) K)^T W,  B = (diag(E) K)^T Ut
 * Only S0 links the chunks, so everything else is computed for all chunks at once, and the serial part is
 * the scan S_{c+1} = A_c S_c + B_c: one [dk, dk] x [dk, w] product per chunk.
 *
 * Forward, three kernels:
 *   gdn_prep (backward = 0), one block per (batch, head, chunk): the gates, M, Tm by forward substitution
 *     (wy_inverse: four lanes per column of Tm), W, Ut, P, Qe, A_c, B_c; writes Ut, Qe, P, A_c to scratch and B_c to
 *     the chunk's slot of states.
 *   gdn_scan (backward = 0), one block per (batch, head, tile of dv columns): walks the chunks in order,
 *     replacing each slot's B_c by the state before the chunk, S_c, and computing S_{c+1} = A_c S_c + B_c;
 *     writes the final state.
 *   gdn_out, one block per (batch, head, chunk, tile of dv columns): O = Qe S_c + P Ut.
 * Backward, dS_c (the gradient of the state before chunk c) obeys dS_c = A_c^T dS_{c+1} + Qe_c^T dO_c:
 *   gdn_prep (backward = 1) per chunk: A_c and Y_c = Qe_c^T dO_c, written to scratch (dstates' slot c);
 *   gdn_scan (backward = 1) per (batch, head, tile): walks the chunks in reverse from dS_N = ds_out,
 *     replacing slot c's Y_c by dS_{c+1}, the gradient of the state after chunk c; writes ds0 = dS_0;
 *   gdn_bwd_chunk per (batch, head, chunk, tile): every gradient of chunk c from its stored S_c and dS_{c+1}
 *     (the reverse of each line of the chunk's forward pass, as the CPU kernel does, with both triangular
 *     solves as products with Tm), in parallel over the chunks. dq, dk, dbeta and dg are sums over the dv columns: with more than one tile each tile writes
 *     its partial sums (Params.part_k, part_t apart) and gdn_sum_tiles adds them in tile order.
 * No atomics: every sum has one owner and a fixed order, so two runs give the same bits. All products
 * are f32 FMA loops over shared memory, 4 x 4 sums a thread in registers (mtile; no tensor cores yet).
 * Global offsets are 64-bit.
 *
 * Shared memory, floats (the includer defines GDN_SMEM(): the dynamic shared memory as float *). Rows
 * that threads read down a column (K, the C x C matrices, A in the scan, S in the backward) are padded
 * by one float so that those threads hit distinct banks. Sizes: prep_smem_floats, scan_smem_floats, out_smem_floats,
 * bwd_smem_floats below. */
#ifndef TTT_GDN_CHUNK_CUH
#define TTT_GDN_CHUNK_CUH

namespace gdnk {

struct Params {
    int T, C, K, V; /* tokens, chunk (the last may be shorter), dk, dv */
    int N;          /* chunks: ceil(T / C) */
    int VT;         /* columns per tile of the kernel launched: tile j takes columns j VT .. min(V, (j + 1) VT) - 1 */
    int64_t part_k, part_t; /* gdn_bwd_chunk: floats between two tiles' dq / dk, and dbeta / dg (0: one tile) */
    const float *q, *k, *v, *beta, *g;
    const float *s0;     /* forward: NULL = zeros */
    float *o, *s_out;    /* forward; s_out may be NULL */
    float *states;       /* [BH, N, dk, dv]: the state before each chunk (forward: B_c until the scan) */
    const float *dout;   /* backward: NULL = zeros */
    const float *ds_out; /* backward: NULL = zeros */
    float *dq, *dk, *dv, *dbeta, *dg, *ds0; /* backward; ds0 may be NULL */
    /* scratch (gdn_chunk.cu carves it from the instance's gdn_scratch) */
    float *amap;    /* [BH, N, dk, dk]: A_c */
    float *ut, *qe; /* forward: [BH, T, dv] Ut and [BH, T, dk] Qe */
    float *pm;      /* forward: [BH, N, C, C] P */
    float *dstates; /* backward: [BH, N, dk, dv]: Y_c, then the gradient of the state after chunk c */
};

__host__ __device__ inline int prep_smem_floats(int C, int K, int V) {
    return 2 * C * (K + 1) + C * K + C * V + 2 * C * (C + 1) + 5 * C;
}
__host__ __device__ inline int scan_smem_floats(int K, int VT) { return K * (K + 1) + 2 * K * VT; }
__host__ __device__ inline int out_smem_floats(int C, int K, int VT) {
    return C * (K + 1) + K * VT + C * (C + 1) + C * VT;
}
__host__ __device__ inline int bwd_smem_floats(int C, int K, int VT, int threads) {
    return 2 * K * (VT + 1) + 2 * C * (K + 1) + 5 * C * (VT + 1) + 4 * C * (C + 1) + 6 * C + threads;
}

/* The launch shapes: columns per tile of gdn_scan, gdn_out and gdn_bwd_chunk, and each kernel's shared
 * memory in bytes. */
struct Plan {
    int scan_vt, out_vt, bwd_vt;
    int64_t prep_bytes, scan_bytes, out_bytes, bwd_bytes;
};

/* The plan for bh (batch, head) pairs and N chunks on a GPU of sm_count SMs that gives a block smem_max
 * bytes of shared memory (the launcher's choice, here so that the emulator test checks it). Tiles are
 * halved while the kernel's grid has fewer blocks than SMs (the scan down to 8 columns: it is the serial
 * part, and its blocks are only bh x tiles; the per-chunk kernels down to 16), then while the shared
 * memory does not fit. False: some kernel does not fit even in its narrowest tiles (or gdn_prep, which
 * holds whole rows, does not fit at all). */
inline bool make_plan(int64_t bh, int N, int C, int K, int V, int threads, int sm_count, int64_t smem_max, Plan *pl) {
    auto halve = [](int vt) { return (vt + 1) / 2; };
    auto tiles = [V](int vt) { return (int64_t)((V + vt - 1) / vt); };
    int s = V, o = V, b = V;
    while (bh * tiles(s) < sm_count && s / 2 >= 8) s = halve(s);
    while ((int64_t)scan_smem_floats(K, s) * 4 > smem_max && s > 1) s = halve(s);
    while (bh * N * tiles(o) < sm_count && o / 2 >= 16) o = halve(o);
    while ((int64_t)out_smem_floats(C, K, o) * 4 > smem_max && o > 1) o = halve(o);
    while (bh * N * tiles(b) < sm_count && b / 2 >= 16) b = halve(b);
    while ((int64_t)bwd_smem_floats(C, K, b, threads) * 4 > smem_max && b > 8) b = halve(b);
    pl->scan_vt = s, pl->out_vt = o, pl->bwd_vt = b;
    pl->prep_bytes = (int64_t)prep_smem_floats(C, K, V) * 4;
    pl->scan_bytes = (int64_t)scan_smem_floats(K, s) * 4;
    pl->out_bytes = (int64_t)out_smem_floats(C, K, o) * 4;
    pl->bwd_bytes = (int64_t)bwd_smem_floats(C, K, b, threads) * 4;
    return pl->prep_bytes <= smem_max && pl->scan_bytes <= smem_max && pl->out_bytes <= smem_max &&
           pl->bwd_bytes <= smem_max;
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

/* A block's product Y[i, x] (i < n, x < w) = sum_{j0(i_first) <= j < j1(i_last)} A(i, j) B(j, x), handed to
 * out(i, x, sum): each thread holds an RM x RN tile of sums in registers, so that one load of A(i, j) feeds
 * RN multiply-adds and one of B(j, x) feeds RM (one element per thread would load twice per multiply-add,
 * and shared memory bandwidth, not arithmetic, would bound every kernel here). A tile's rows are contiguous
 * (i0 .. i0 + RM - 1, so triangular operands can bound the contraction: j0 and j1 get the tile's first
 * and last row) and its columns strided (xl, xl + tn, ... with tn = ceil(w / RN)), so that a warp's
 * threads read consecutive columns of B and write consecutive columns of Y. Terms outside a row's own
 * range must be zero in the operands (the triangles stored as zeros), since the tile uses its rows' union. */
template <int RM, int RN, typename FJ0, typename FJ1, typename FA, typename FB, typename FO>
__device__ inline void mtile(int n, int w, FJ0 j0, FJ1 j1, FA A, FB B, FO out) {
    const int tn = (w + RN - 1) / RN, tm = (n + RM - 1) / RM;
    for (int t = threadIdx.x; t < tm * tn; t += blockDim.x) {
        const int i0 = (t / tn) * RM, xl = t % tn, last = i0 + RM - 1 < n - 1 ? i0 + RM - 1 : n - 1;
        float acc[RM][RN];
#pragma unroll
        for (int r = 0; r < RM; r++)
#pragma unroll
            for (int c = 0; c < RN; c++) acc[r][c] = 0.f;
        const int jb = j0(i0), je = j1(last);
        for (int j = jb; j < je; j++) {
            float a[RM], b[RN];
#pragma unroll
            for (int r = 0; r < RM; r++) a[r] = i0 + r < n ? A(i0 + r, j) : 0.f;
#pragma unroll
            for (int c = 0; c < RN; c++) b[c] = xl + c * tn < w ? B(j, xl + c * tn) : 0.f;
#pragma unroll
            for (int r = 0; r < RM; r++)
#pragma unroll
                for (int c = 0; c < RN; c++) acc[r][c] += a[r] * b[c];
        }
#pragma unroll
        for (int r = 0; r < RM; r++)
#pragma unroll
            for (int c = 0; c < RN; c++)
                if (i0 + r < n && xl + c * tn < w) out(i0 + r, xl + c * tn, acc[r][c]);
    }
}

/* Tm = (I + M)^-1 for M_ij = (mscale ? mscale[i] : 1) Mx[i ld + j] (j < i): unit lower triangular, zeros
 * stored above the diagonal (for the products that read it whole); row i = e_i - sum_{j<i} M_ij row j.
 * Four lanes per column (lanes 4x .. 4x + 3 of a warp), each summing every fourth term, the partial sums
 * joined by two shuffles (the same bits in all four lanes, so the result does not depend on the lane):
 * a column's n dependent rows are the latency, each about a quarter as long as with one lane per column.
 * Every thread of the block calls it (the shuffles are warp-wide); blockDim.x is a multiple of 32. */
__device__ inline void wy_inverse(int n, int ld, const float *Mx, const float *mscale, float *Tm) {
    const int per_round = (int)blockDim.x / 4, part = (int)threadIdx.x & 3;
    for (int xr = 0; xr < n; xr += per_round) {
        const int x = xr + (int)threadIdx.x / 4;
        const bool live = x < n;
        for (int i = 0; i < n; i++) {
            float s = 0.f;
            if (live)
                for (int j = x + part; j < i; j += 4) s += Mx[i * ld + j] * Tm[j * ld + x];
            s += __shfl_xor_sync(0xffffffffu, s, 1);
            s += __shfl_xor_sync(0xffffffffu, s, 2);
            if (live && part == 0) Tm[i * ld + x] = i < x ? 0.f : i == x ? 1.f : -(mscale ? mscale[i] : 1.f) * s;
            __syncwarp();
        }
    }
}

/* Forward (backward = 0): Ut, Qe, P and A_c to scratch, B_c to the chunk's slot of states. Backward
 * (backward = 1): A_c and Y_c = Qe^T dO to scratch (dstates' slot). One block per (batch, head, chunk):
 * blockIdx.x = bh N + c. Every product is an mtile of 4 x 4 sums per thread. Shared: K, Q (then Qe)
 * [C, dk+1] (rows read by threads of two row tiles at once, or K by columns), W [C, dk]; Ut [C, dv]; Tm, M (then P) [C, C+1]; G, gamma, beta,
 * beta gamma, E [C]. V (dO) is read from global memory by the one product that needs it (through L1):
 * 98 KB at C = dk = dv = 64, so two blocks share an SM. */
__global__ void __launch_bounds__(256) gdn_prep(Params p, int backward) {
    const int K = p.K, V = p.V, C = p.C, T = p.T, N = p.N, KP = K + 1, CP = C + 1, tid = threadIdx.x, nt = blockDim.x;
    const int64_t bh = (int64_t)blockIdx.x / N;
    const int c = (int)((int64_t)blockIdx.x % N), t0 = c * C, n = T - t0 < C ? T - t0 : C;
    float *Kc = GDN_SMEM(), *Qc = Kc + C * KP, *Wc = Qc + C * KP, *Ut = Wc + C * K, *Tm = Ut + C * V,
          *Mp = Tm + C * CP, *G = Mp + C * CP, *gam = G + C, *bet = gam + C, *bg = bet + C, *E = bg + C;
    {
        const float *k = p.k + (bh * T + t0) * K, *q = p.q + (bh * T + t0) * K;
        for (int e = tid; e < n * K; e += nt) Kc[(e / K) * KP + e % K] = k[e], Qc[(e / K) * KP + e % K] = q[e];
        if (tid == 0) {
            const float *g = p.g + bh * T + t0, *beta = p.beta + bh * T + t0;
            float acc = 0.f;
            for (int i = 0; i < n; i++) {
                acc += g[i];
                G[i] = acc;
                gam[i] = expf(acc);
                bet[i] = beta[i];
                bg[i] = beta[i] * gam[i];
            }
            for (int j = 0; j < n; j++) E[j] = expf(G[n - 1] - G[j]);
        }
    }
    __syncthreads();
    auto zero = [](int) { return 0; };
    auto upto = [](int last) { return last + 1; }; /* j <= the tile's last row */
    auto all_k = [K](int) { return K; };
    auto all_n = [n](int) { return n; };
    /* M_ij = beta_i (k_i . k_j) D_ij (j < i), 0 elsewhere */
    mtile<4, 4>(n, n, zero, all_k, [&](int i, int a) { return Kc[i * KP + a]; }, [&](int a, int j) { return Kc[j * KP + a]; },
                [&](int i, int j, float s) { Mp[i * CP + j] = j < i ? s * bet[i] * expf(G[i] - G[j]) : 0.f; });
    __syncthreads();
    wy_inverse(n, CP, Mp, NULL, Tm); /* Tm = (I + M)^-1 */
    __syncthreads();
    /* P_ij = (q_i . k_j) D_ij (j <= i), in M's place; W = Tm diag(beta gamma) K; Ut = Tm diag(beta) V */
    mtile<4, 4>(n, n, zero, all_k, [&](int i, int a) { return Qc[i * KP + a]; }, [&](int a, int j) { return Kc[j * KP + a]; },
                [&](int i, int j, float s) { Mp[i * CP + j] = j <= i ? s * expf(G[i] - G[j]) : 0.f; });
    mtile<4, 4>(n, K, zero, upto, [&](int i, int j) { return Tm[i * CP + j] * bg[j]; },
                [&](int j, int a) { return Kc[j * KP + a]; }, [&](int i, int a, float s) { Wc[i * K + a] = s; });
    if (!backward) {
        const float *v = p.v + (bh * T + t0) * V;
        float *ut = p.ut + (bh * T + t0) * V;
        mtile<4, 4>(n, V, zero, upto, [&](int i, int j) { return Tm[i * CP + j] * bet[j]; },
                    [&](int j, int x) { return v[(int64_t)j * V + x]; }, [&](int i, int x, float s) { Ut[i * V + x] = s, ut[(int64_t)i * V + x] = s; });
    }
    __syncthreads();
    /* Qe = diag(gamma) Q - P W, in Q's place (each element is its own thread's, and nothing else reads Q now) */
    float *qe = p.qe + (bh * T + t0) * K;
    mtile<4, 4>(n, K, zero, upto, [&](int i, int j) { return Mp[i * CP + j]; }, [&](int j, int a) { return Wc[j * K + a]; },
                [&](int i, int a, float s) {
                    const float r = gam[i] * Qc[i * KP + a] - s;
                    Qc[i * KP + a] = r;
                    if (!backward) qe[(int64_t)i * K + a] = r;
                });
    /* A_c = gamma_n I - (diag(E) K)^T W */
    float *A = p.amap + (bh * N + c) * K * K;
    const float gn = gam[n - 1];
    mtile<4, 4>(K, K, zero, all_n, [&](int a, int j) { return E[j] * Kc[j * KP + a]; }, [&](int j, int b) { return Wc[j * K + b]; },
                [&](int a, int b, float s) { A[(int64_t)a * K + b] = (a == b ? gn : 0.f) - s; });
    if (!backward) {
        /* B_c = (diag(E) K)^T Ut, into the chunk's slot of states (the scan replaces it by S_c); P out */
        float *B = p.states + (bh * N + c) * K * V, *P = p.pm + (bh * N + c) * C * C;
        mtile<4, 4>(K, V, zero, all_n, [&](int a, int j) { return E[j] * Kc[j * KP + a]; },
                    [&](int j, int x) { return Ut[j * V + x]; }, [&](int a, int x, float s) { B[(int64_t)a * V + x] = s; });
        for (int e = tid; e < n * n; e += nt) P[(e / n) * C + e % n] = Mp[(e / n) * CP + e % n];
        return;
    }
    __syncthreads();
    /* Y_c = Qe^T dO (0 without dO) */
    float *Y = p.dstates + (bh * N + c) * K * V;
    const float *dout = p.dout ? p.dout + (bh * T + t0) * V : NULL;
    if (!dout) {
        for (int e = tid; e < K * V; e += nt) Y[e] = 0.f;
        return;
    }
    mtile<4, 4>(K, V, zero, all_n, [&](int a, int i) { return Qc[i * KP + a]; },
                [&](int i, int x) { return dout[(int64_t)i * V + x]; }, [&](int a, int x, float s) { Y[(int64_t)a * V + x] = s; });
}

/* The serial part: one block per (batch, head, tile of dv columns), blockIdx.x = bh, blockIdx.y = tile.
 * Forward: from S_0 = s0, for c = 0 .. N-1: slot c of states holds B_c; it gets S_c, and S_{c+1} = A_c S_c
 * + B_c; s_out = S_N. Backward: from dS_N = ds_out, for c = N-1 .. 0: slot c of dstates holds Y_c; it
 * gets dS_{c+1}, and dS_c = A_c^T dS_{c+1} + Y_c; ds0 = dS_0. Shared: A_c [dk, dk+1], the carried and the
 * next state's tile [dk, w]. Each step's loads are the critical path of the whole core, so where a
 * thread's share of A_c and of the slot fits in GDN_SCAN_PREFETCH registers the next step's are loaded
 * while this step multiplies. */
enum { GDN_SCAN_PREFETCH = 16 };
__global__ void __launch_bounds__(256) gdn_scan(Params p, int backward) {
    const int K = p.K, V = p.V, N = p.N, KP = K + 1, tid = threadIdx.x, nt = blockDim.x;
    const int x0 = blockIdx.y * p.VT, W = p.V - x0 < p.VT ? p.V - x0 : p.VT;
    const int64_t bh = blockIdx.x;
    float *As = GDN_SMEM(), *S = As + K * KP, *Sn = S + K * W;
    const float *init = backward ? p.ds_out : p.s0;
    float *slots = backward ? p.dstates : p.states;
    const bool prefetch = K * K <= GDN_SCAN_PREFETCH * nt && K * W <= GDN_SCAN_PREFETCH * nt;
    float pa[GDN_SCAN_PREFETCH], pb[GDN_SCAN_PREFETCH];
    auto chunk_of = [&](int step) { return backward ? N - 1 - step : step; };
    auto fetch = [&](int c) { /* this thread's elements of A_c and of slot c, to registers */
        const float *A = p.amap + (bh * N + c) * K * K, *slot = slots + (bh * N + c) * K * V + x0;
#pragma unroll
        for (int r = 0; r < GDN_SCAN_PREFETCH; r++) {
            const int e = tid + r * nt;
            if (e < K * K) pa[r] = A[e];
            if (e < K * W) pb[r] = slot[(int64_t)(e / W) * V + e % W];
        }
    };
    for (int e = tid; e < K * W; e += nt) S[e] = init ? init[bh * K * V + (e / W) * V + x0 + e % W] : 0.f;
    if (prefetch) fetch(chunk_of(0));
    for (int step = 0; step < N; step++) {
        const int c = chunk_of(step);
        __syncthreads(); /* the previous step's reads of As and S are done */
        float *slot = slots + (bh * N + c) * K * V + x0;
        if (prefetch) {
#pragma unroll
            for (int r = 0; r < GDN_SCAN_PREFETCH; r++) {
                const int e = tid + r * nt;
                if (e < K * K) As[(e / K) * KP + e % K] = pa[r];
                if (e < K * W) Sn[e] = pb[r];
            }
        } else {
            const float *A = p.amap + (bh * N + c) * K * K;
            for (int e = tid; e < K * K; e += nt) As[(e / K) * KP + e % K] = A[e];
            for (int e = tid; e < K * W; e += nt) Sn[e] = slot[(int64_t)(e / W) * V + e % W];
        }
        for (int e = tid; e < K * W; e += nt) slot[(int64_t)(e / W) * V + e % W] = S[e]; /* the carried state out */
        __syncthreads();
        if (prefetch && step + 1 < N) fetch(chunk_of(step + 1));
        for (int e = tid; e < K * W; e += nt) {
            const int r = e / W, x = e % W;
            float s = Sn[e];
            if (backward)
                for (int a = 0; a < K; a++) s += As[a * KP + r] * S[a * W + x];
            else
                for (int b = 0; b < K; b++) s += As[r * KP + b] * S[b * W + x];
            Sn[e] = s;
        }
        float *t = S;
        S = Sn, Sn = t;
    }
    __syncthreads();
    float *fin = backward ? p.ds0 : p.s_out;
    if (fin)
        for (int e = tid; e < K * W; e += nt) fin[bh * K * V + (e / W) * V + x0 + e % W] = S[e];
}

/* O = Qe S_c + P Ut, one block per (batch, head, chunk, tile of dv columns): blockIdx.x = bh N + c,
 * blockIdx.y = tile; one mtile over the joined contraction [Qe | P] [S_c ; Ut] (dk + the row's tokens).
 * Shared: Qe [C, dk+1], S_c [dk, w], P [C, C+1], Ut [C, w]. */
__global__ void __launch_bounds__(256) gdn_out(Params p) {
    const int K = p.K, V = p.V, C = p.C, T = p.T, N = p.N, KP = K + 1, CP = C + 1, tid = threadIdx.x, nt = blockDim.x;
    const int64_t bh = (int64_t)blockIdx.x / N;
    const int c = (int)((int64_t)blockIdx.x % N), t0 = c * C, n = T - t0 < C ? T - t0 : C;
    const int x0 = blockIdx.y * p.VT, W = p.V - x0 < p.VT ? p.V - x0 : p.VT;
    float *Qs = GDN_SMEM(), *Ss = Qs + C * KP, *Ps = Ss + K * W, *Us = Ps + C * CP;
    const float *qe = p.qe + (bh * T + t0) * K, *ut = p.ut + (bh * T + t0) * V + x0;
    const float *st = p.states + (bh * N + c) * K * V + x0, *pm = p.pm + (bh * N + c) * C * C;
    for (int e = tid; e < n * K; e += nt) Qs[(e / K) * KP + e % K] = qe[e];
    for (int e = tid; e < K * W; e += nt) Ss[e] = st[(int64_t)(e / W) * V + e % W];
    for (int e = tid; e < n * n; e += nt) Ps[(e / n) * CP + e % n] = (e % n) <= (e / n) ? pm[(e / n) * C + e % n] : 0.f;
    for (int e = tid; e < n * W; e += nt) Us[e] = ut[(int64_t)(e / W) * V + e % W];
    __syncthreads();
    float *o = p.o + (bh * T + t0) * V + x0;
    mtile<4, 4>(
        n, W, [](int) { return 0; }, [K](int last) { return K + last + 1; },
        [&](int i, int j) { return j < K ? Qs[i * KP + j] : Ps[i * CP + j - K]; },
        [&](int j, int x) { return j < K ? Ss[j * W + x] : Us[(j - K) * W + x]; },
        [&](int i, int x, float s) { o[(int64_t)i * V + x] = s; });
}

/* Every gradient of one chunk, one block per (batch, head, chunk, tile of dv columns): blockIdx.x = bh N +
 * c, blockIdx.y = tile. The chunk is recomputed from its stored state S0 = S_c (states) and dS = dS_{c+1},
 * the gradient of the state after it (dstates, from gdn_scan); S0's own gradient is the scan's, so it is
 * not formed here. Each phase reverses a line of the forward pass (see the CPU kernel's comment,
 * cpu_gdn_impl.h, for the formulas); both triangular solves go through Tm = (I + M)^-1 (U = Tm R and
 * dR = Tm^T dU are products), and every product is an mtile of 4 x 4 sums per thread. Sums over the
 * columns (dS^T k_j . u_j, dO_i . u_j, dR_t . u_s, dR_t . (v_t - gamma_t S0^T k_t), <S0, dS>) run over this
 * tile's columns only: they reach dq, dk, dbeta and dg, which are this tile's partial sums.
 * Shared: S0, dS [dk, w+1]; K, Q [C, dk+1]; U, dU, X, dO, R [C, w+1]; A (K K^T * D below the diagonal), P,
 * dA, Tm [C, C+1]; G, gamma, beta, E, dG, rowtmp [C]; red [threads]. */
__global__ void __launch_bounds__(256) gdn_bwd_chunk(Params p) {
    const int K = p.K, C = p.C, T = p.T, KP = K + 1, CP = C + 1, tid = threadIdx.x, nt = blockDim.x;
    const int x0 = blockIdx.y * p.VT, W = p.V - x0 < p.VT ? p.V - x0 : p.VT, LD = p.V, WP = W + 1;
    float *S0 = GDN_SMEM(), *dS = S0 + K * WP, *Kc = dS + K * WP, *Qc = Kc + C * KP, *U = Qc + C * KP,
          *dU = U + C * WP, *X = dU + C * WP, *dO = X + C * WP, *R = dO + C * WP, *A = R + C * WP, *P = A + C * CP,
          *dA = P + C * CP, *Tm = dA + C * CP, *G = Tm + C * CP, *gam = G + C, *bet = gam + C, *E = bet + C,
          *dG = E + C, *rowtmp = dG + C, *red = rowtmp + C;
    const int N = p.N;
    const int64_t bh = (int64_t)blockIdx.x / N;
    const int c = (int)((int64_t)blockIdx.x % N), t0 = c * C, n = T - t0 < C ? T - t0 : C;
    const float *v = p.v + (bh * T + t0) * LD + x0;
    float *dq = p.dq + blockIdx.y * p.part_k + (bh * T + t0) * K;
    float *dk = p.dk + blockIdx.y * p.part_k + (bh * T + t0) * K;
    float *dv = p.dv + (bh * T + t0) * LD + x0;
    for (int e = tid; e < K * W; e += nt) {
        const int64_t at = (bh * N + c) * K * LD + (int64_t)(e / W) * LD + x0 + e % W;
        S0[(e / W) * WP + e % W] = p.states[at];
        dS[(e / W) * WP + e % W] = p.dstates[at];
    }
    load_chunk(p, bh, t0, n, Kc, Qc, G, gam, bet, E);
    for (int e = tid; e < n * W; e += nt)
        dO[(e / W) * WP + e % W] = p.dout ? p.dout[(bh * T + t0 + e / W) * LD + x0 + e % W] : 0.f;
    __syncthreads();
    auto zero = [](int) { return 0; };
    auto from = [](int first) { return first; };    /* j >= the tile's first row */
    auto upto = [](int last) { return last + 1; };  /* j <= the tile's last row */
    auto all_k = [K](int) { return K; };
    auto all_w = [W](int) { return W; };
    auto all_n = [n](int) { return n; };
    auto k_row = [&](int i, int a) { return Kc[i * KP + a]; };
    auto k_col = [&](int a, int j) { return Kc[j * KP + a]; };
    auto s0_rows = [&](int a, int x) { return S0[a * WP + x]; };
    /* 1: X = K S0, dU = Q S0 (for now), A_ij = (k_i . k_j) D_ij (j < i), P_ij = (q_i . k_j) D_ij (j <= i) */
    mtile<4, 4>(n, W, zero, all_k, k_row, s0_rows, [&](int i, int x, float s) { X[i * WP + x] = s; });
    mtile<4, 4>(n, W, zero, all_k, [&](int i, int a) { return Qc[i * KP + a]; }, s0_rows,
                [&](int i, int x, float s) { dU[i * WP + x] = s; });
    mtile<4, 4>(n, n, zero, all_k, k_row, k_col,
                [&](int i, int j, float s) { A[i * CP + j] = j < i ? s * expf(G[i] - G[j]) : 0.f; });
    mtile<4, 4>(n, n, zero, all_k, [&](int i, int a) { return Qc[i * KP + a]; }, k_col,
                [&](int i, int j, float s) { P[i * CP + j] = j <= i ? s * expf(G[i] - G[j]) : 0.f; });
    __syncthreads();
    /* 2: Tm = (I + M)^-1, M_ij = beta_i A_ij; dG_i = gamma_i dO_i . (Q S0)_i; R = diag(beta) (V - diag(gamma)
     * K S0); the partial sums of <S0, dS> */
    wy_inverse(n, CP, A, bet, Tm);
    for (int i = tid; i < n; i += nt) {
        float s = 0.f;
        for (int x = 0; x < W; x++) s += dO[i * WP + x] * dU[i * WP + x];
        dG[i] = gam[i] * s;
    }
    for (int e = tid; e < n * W; e += nt) {
        const int i = e / W;
        R[i * WP + e % W] = bet[i] * (v[(int64_t)i * LD + e % W] - gam[i] * X[i * WP + e % W]);
    }
    {
        float s = 0.f;
        for (int e = tid; e < K * W; e += nt) s += S0[(e / W) * WP + e % W] * dS[(e / W) * WP + e % W];
        red[tid] = s;
    }
    __syncthreads();
    /* 3: U = Tm R; dG_{n-1} += gamma_n <S0, dS> (summed in thread order) */
    mtile<4, 4>(n, W, zero, upto, [&](int i, int j) { return Tm[i * CP + j]; }, [&](int j, int x) { return R[j * WP + x]; },
                [&](int i, int x, float s) { U[i * WP + x] = s; });
    if (tid == 0) {
        float s = 0.f;
        for (int t = 0; t < nt; t++) s += red[t];
        dG[n - 1] += gam[n - 1] * s;
    }
    __syncthreads();
    /* 4a (S_n = gamma_n S0 + sum_j E_j k_j u_j^T): dU_j = dS^T k_j (unscaled), dk_j = E_j dS u_j */
    mtile<4, 4>(n, W, zero, all_k, k_row, [&](int a, int x) { return dS[a * WP + x]; },
                [&](int j, int x, float s) { dU[j * WP + x] = s; });
    mtile<4, 4>(n, K, zero, all_w, [&](int j, int x) { return U[j * WP + x]; }, [&](int x, int a) { return dS[a * WP + x]; },
                [&](int j, int a, float s) { dk[(int64_t)j * K + a] = E[j] * s; });
    __syncthreads();
    /* 4b: the decay E_j's gradient, E_j (dS^T k_j) . u_j, to G_{n-1} (+) and G_j (-); dU_j *= E_j */
    for (int j = tid; j < n; j += nt) {
        float de = 0.f;
        for (int x = 0; x < W; x++) de += dU[j * WP + x] * U[j * WP + x];
        rowtmp[j] = E[j] * de;
        dG[j] -= E[j] * de;
        for (int x = 0; x < W; x++) dU[j * WP + x] *= E[j];
    }
    __syncthreads();
    /* 5: the decays' sum to G_{n-1}, in row order */
    if (tid == 0) {
        float s = 0.f;
        for (int j = 0; j < n; j++) s += rowtmp[j];
        dG[n - 1] += s;
    }
    if (p.dout) {
        /* 6a (O = diag(gamma) Q S0 + P U): dA = dP = dO U^T (j <= i) */
        mtile<4, 4>(n, n, zero, all_w, [&](int i, int x) { return dO[i * WP + x]; }, [&](int x, int j) { return U[j * WP + x]; },
                    [&](int i, int j, float s) { dA[i * CP + j] = j <= i ? s : 0.f; });
        __syncthreads();
        /* 6b: the decays' gradient sum_j dP_ij P_ij to G_i (+) and G_j (-); dU += P^T dO */
        for (int i = tid; i < n; i += nt) {
            float rs = 0.f, cs = 0.f;
            for (int j = 0; j <= i; j++) rs += dA[i * CP + j] * P[i * CP + j];
            for (int t = i; t < n; t++) cs += dA[t * CP + i] * P[t * CP + i];
            dG[i] += rs - cs;
        }
        mtile<4, 4>(n, W, from, all_n, [&](int j, int i) { return P[i * CP + j]; }, [&](int i, int x) { return dO[i * WP + x]; },
                    [&](int j, int x, float s) { dU[j * WP + x] += s; });
        __syncthreads();
        /* 6c: dA = dP * D */
        for (int e = tid; e < n * n; e += nt) {
            const int i = e / n, j = e % n;
            if (j <= i) dA[i * CP + j] *= expf(G[i] - G[j]);
        }
        __syncthreads();
        /* 6d: dq = diag(gamma) dO S0^T + dA K (one contraction over [dO | dA]), dk += dA^T Q */
        mtile<4, 4>(
            n, K, zero, [W](int last) { return W + last + 1; },
            [&](int i, int j) { return j < W ? gam[i] * dO[i * WP + j] : dA[i * CP + j - W]; },
            [&](int j, int a) { return j < W ? S0[a * WP + j] : Kc[(j - W) * KP + a]; },
            [&](int i, int a, float s) { dq[(int64_t)i * K + a] = s; });
        mtile<4, 4>(n, K, from, all_n, [&](int i, int r) { return dA[r * CP + i]; }, [&](int r, int a) { return Qc[r * KP + a]; },
                    [&](int i, int a, float s) { dk[(int64_t)i * K + a] += s; });
    } else {
        for (int e = tid; e < n * K; e += nt) dq[e] = 0.f;
    }
    __syncthreads();
    /* 7: dR = (I + M)^-T dU = Tm^T dU */
    mtile<4, 4>(n, W, from, all_n, [&](int s, int t) { return Tm[t * CP + s]; }, [&](int t, int x) { return dU[t * WP + x]; },
                [&](int s, int x, float val) { R[s * WP + x] = val; });
    __syncthreads();
    /* 8a: dA_ts = dM_ts = -dR_t . u_s and P_ts = dM_ts beta_t D_ts (s < t) */
    mtile<4, 4>(n, n, zero, all_w, [&](int t, int x) { return R[t * WP + x]; }, [&](int x, int s) { return U[s * WP + x]; },
                [&](int t, int s, float m) {
                    dA[t * CP + s] = s < t ? -m : 0.f;
                    P[t * CP + s] = s < t ? -m * bet[t] * expf(G[t] - G[s]) : 0.f;
                });
    __syncthreads();
    /* 8b: dbeta, the decays' gradient through M and gamma (R_t = beta_t (v_t - gamma_t S0^T k_t)), dv */
    for (int t = tid; t < n; t += nt) {
        float db = 0.f, cs = 0.f, rdot = 0.f, ksdot = 0.f;
        for (int s = 0; s < t; s++) db += dA[t * CP + s] * A[t * CP + s];
        for (int r = t + 1; r < n; r++) cs += bet[r] * dA[r * CP + t] * A[r * CP + t];
        for (int x = 0; x < W; x++) {
            const float dr = R[t * WP + x];
            rdot += dr * (v[(int64_t)t * LD + x] - gam[t] * X[t * WP + x]);
            ksdot += dr * X[t * WP + x];
        }
        p.dbeta[blockIdx.y * p.part_t + bh * T + t0 + t] = db + rdot;
        dG[t] += bet[t] * db - cs - gam[t] * bet[t] * ksdot;
    }
    for (int e = tid; e < n * W; e += nt) dv[(int64_t)(e / W) * LD + e % W] = bet[e / W] * R[(e / W) * WP + e % W];
    /* 8c: dk through K K^T (P holds its gradient, strictly lower, so P_tr + P_rt is whichever is set) and
     * through K S0 (dKS_t = -beta_t gamma_t dR_t), one contraction over [P + P^T | dKS] */
    mtile<4, 4>(
        n, K, zero, [n, W](int) { return n + W; },
        [&](int t, int j) { return j < n ? P[t * CP + j] + P[j * CP + t] : -bet[t] * gam[t] * R[t * WP + j - n]; },
        [&](int j, int a) { return j < n ? Kc[j * KP + a] : S0[a * WP + j - n]; },
        [&](int t, int a, float s) { dk[(int64_t)t * K + a] += s; });
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
