/* The per-head bodies of the fused chunkwise decayed linear recurrence (cpu_ssd.c includes this file once per
 * precision with REAL = float or double and FN(name) naming the copy). Within a chunk of n tokens from state
 * S0 (the names of src/layers/gated_deltanet.c without the delta rule):
 *     G_t = sum_{s<=t} g_s (0 without gates), D_ts = exp(G_t - G_s) for s <= t, E_s = D_{n-1,s}
 *     O   = diag(exp G) Q S0 + (Q K^T * D) V
 *     S_n = exp(G_{n-1}) S0 + (diag(E) K)^T V
 * The decays enter only as exp of G_t - G_s with s <= t (and of G_t itself), so strong gates underflow to
 * zero instead of overflowing. The backward pass walks the chunks in reverse with dS, the gradient of the
 * state after the chunk, and recomputes the chunk's products from its stored S0:
 *     A = Q K^T, W = dO V^T (lower triangles)
 *     dQ_t = exp(G_t) S0 dO_t + sum_{s<=t} D_ts W_ts k_s
 *     dK_s = sum_{t>=s} D_ts W_ts q_t + E_s dS v_s
 *     dV_s = sum_{t>=s} D_ts A_ts dO_t + E_s dS^T k_s
 *     dS0  = exp(G_{n-1}) dS + sum_t exp(G_t) q_t dO_t^T
 * and the gate through dG_t, the gradient of the cumulative log decay: every factor exp(G_a - G_b) of a term
 * adds the term to dG_a and subtracts it from dG_b; then dg_j = sum_{t >= j in the chunk} dG_t. */

/* Y[n, w] += X[n, m] Z[m, w], row-major with row strides ldx, ldz, ldy. A 4 x W block of Y is held in
 * registers while the contracted axis streams (each load of a row piece of Z feeds four multiply-adds, and
 * the W columns vectorize); Y is read and written once per block. Every product of a chunk goes through
 * here, transposing an operand first where the math contracts over its rows. */
static void FN(ssd_gemm_acc)(int64_t n, int64_t m, int64_t w, const REAL *X, int64_t ldx, const REAL *Z, int64_t ldz,
                             REAL *Y, int64_t ldy) {
    enum { R = 4, W = 128 / (int)sizeof(REAL) }; /* 32 floats or 16 doubles: 8 vector accumulators with AVX-512 */
    for (int64_t i = 0; i < n; i += R) {
        const int64_t r = n - i < R ? n - i : R;
        for (int64_t x = 0; x < w; x += W) {
            const int64_t cw = w - x < W ? w - x : W;
            REAL t[R][W] = {{0}};
            if (r == R && cw == W) {
                const REAL *x0 = X + i * ldx, *x1 = x0 + ldx, *x2 = x1 + ldx, *x3 = x2 + ldx;
                for (int64_t a = 0; a < m; a++) {
                    const REAL *z = Z + a * ldz + x;
                    const REAL c0 = x0[a], c1 = x1[a], c2 = x2[a], c3 = x3[a];
                    for (int c = 0; c < W; c++) {
                        t[0][c] += c0 * z[c];
                        t[1][c] += c1 * z[c];
                        t[2][c] += c2 * z[c];
                        t[3][c] += c3 * z[c];
                    }
                }
            } else {
                for (int64_t a = 0; a < m; a++) {
                    const REAL *z = Z + a * ldz + x;
                    for (int64_t rr = 0; rr < r; rr++) {
                        const REAL c0 = X[(i + rr) * ldx + a];
                        for (int64_t c = 0; c < cw; c++) t[rr][c] += c0 * z[c];
                    }
                }
            }
            for (int64_t rr = 0; rr < r; rr++) {
                REAL *y = Y + (i + rr) * ldy + x;
                for (int64_t c = 0; c < cw; c++) y[c] += t[rr][c];
            }
        }
    }
}

static REAL FN(ssd_dot)(int64_t n, const REAL *a, const REAL *b) {
    REAL s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* The row stride of the value-wide buffers: dv rounded up to 16 elements, so that their rows start on
 * cache-line boundaries whatever dv is. Linear attention's values are dv + 1 wide (the normaliser column):
 * unpadded, every row of an odd width starts misaligned and the products ran 3.6x slower at dv = 65 than at
 * 64 (f32, T 2K, one thread). */
static int64_t FN(ssd_ld)(int64_t dv) { return (dv + 15) / 16 * 16; }

/* Scratch elements per thread (REAL), besides 2 C doubles for G and dG. */
static int64_t FN(ssd_fwd_scratch)(int64_t C, int64_t dk, int64_t dv) {
    const int64_t ldv = FN(ssd_ld)(dv);
    return dk * ldv + C * C + C * dk + 2 * C * ldv;
}
static int64_t FN(ssd_bwd_scratch)(int64_t C, int64_t dk, int64_t dv) {
    const int64_t ldv = FN(ssd_ld)(dv);
    return dk * ldv + 2 * dk * dv + 4 * C * C + 3 * C * dk + C * dv + 3 * C * ldv;
}

/* rows x cols from X (row stride ldx) to Y (row stride ldy) */
static void FN(ssd_copy_rows)(int64_t rows, int64_t cols, const REAL *X, int64_t ldx, REAL *Y, int64_t ldy) {
    for (int64_t r = 0; r < rows; r++) memcpy(Y + r * ldy, X + r * ldx, sizeof(REAL) * (size_t)cols);
}

/* A decay exp(x) in REAL: float's expf for f32 (several times faster than exp, and the exponent, a
 * difference of double cumulative sums, is exact to float's precision), exp for f64. */
static inline REAL FN(ssd_exp)(double x) {
    return sizeof(REAL) == sizeof(float) ? (REAL)expf((float)x) : (REAL)exp(x);
}

/* Cumulative log decay of the chunk's n tokens (zeros without gates), in double also for f32: with strong
 * gates G reaches hundreds within a chunk, and a float G would lose ~1e-5 of every decay exp(G_t - G_s). */
static void FN(ssd_cumulative)(int64_t n, const REAL *g, double *G) {
    double acc = 0;
    for (int64_t t = 0; t < n; t++) G[t] = acc += g ? (double)g[t] : 0;
}

/* Y[c, r] = a_r X[r, c] (a NULL: 1) for X [r rows, c columns] with row stride ldx; Y's row stride ldy */
static void FN(ssd_transpose)(int64_t r, int64_t c, const REAL *X, int64_t ldx, const REAL *a, REAL *Y, int64_t ldy) {
    for (int64_t i = 0; i < r; i++) {
        const REAL s = a ? a[i] : 1;
        for (int64_t j = 0; j < c; j++) Y[j * ldy + i] = s * X[i * ldx + j];
    }
}

static void FN(ssd_fwd_head)(int64_t T, int64_t C, int64_t dk, int64_t dv, const REAL *q, const REAL *k, const REAL *v,
                             const REAL *g, const REAL *s0, REAL *o, REAL *s_out, REAL *states, REAL *work,
                             double *G) {
    const int64_t sd = dk * dv, ldv = FN(ssd_ld)(dv);
    REAL *S = work, *P = S + dk * ldv, *Kt = P + C * C; /* S [dk, ldv]; Kt [dk, C]: K^T, then (diag(E) K)^T */
    REAL *Vp = Kt + C * dk, *Op = Vp + C * ldv;          /* the chunk's V and O at row stride ldv */
    memset(S, 0, sizeof(REAL) * (size_t)(dk * ldv));
    if (s0) FN(ssd_copy_rows)(dk, dv, s0, dv, S, ldv);
    for (int64_t c0 = 0, ci = 0; c0 < T; c0 += C, ci++) {
        const int64_t n = T - c0 < C ? T - c0 : C;
        const REAL *Q = q + c0 * dk, *K = k + c0 * dk;
        if (states) FN(ssd_copy_rows)(dk, dv, S, ldv, states + ci * sd, dv);
        FN(ssd_copy_rows)(n, dv, v + c0 * dv, dv, Vp, ldv);
        FN(ssd_cumulative)(n, g ? g + c0 : NULL, G);
        /* P = (Q K^T) * D on and below the diagonal, 0 above */
        FN(ssd_transpose)(n, dk, K, dk, NULL, Kt, C);
        for (int64_t t = 0; t < n; t++) memset(P + t * C, 0, sizeof(REAL) * (size_t)n);
        FN(ssd_gemm_acc)(n, dk, n, Q, dk, Kt, C, P, C);
        for (int64_t t = 0; t < n; t++)
            for (int64_t s = 0; s < n; s++) P[t * C + s] = s <= t ? (g ? FN(ssd_exp)(G[t] - G[s]) : 1) * P[t * C + s] : 0;
        /* O = diag(exp G) Q S0 + P V */
        for (int64_t t = 0; t < n; t++) memset(Op + t * ldv, 0, sizeof(REAL) * (size_t)dv);
        FN(ssd_gemm_acc)(n, dk, dv, Q, dk, S, ldv, Op, ldv);
        if (g)
            for (int64_t t = 0; t < n; t++) {
                const REAL e = FN(ssd_exp)(G[t]);
                for (int64_t j = 0; j < dv; j++) Op[t * ldv + j] *= e;
            }
        FN(ssd_gemm_acc)(n, n, dv, P, C, Vp, ldv, Op, ldv);
        FN(ssd_copy_rows)(n, dv, Op, ldv, o + c0 * dv, dv);
        /* S = exp(G_{n-1}) S + (diag(E) K)^T V */
        if (g) {
            const REAL eL = FN(ssd_exp)(G[n - 1]);
            for (int64_t i = 0; i < dk * ldv; i++) S[i] *= eL;
            for (int64_t s = 0; s < n; s++) {
                const REAL e = FN(ssd_exp)(G[n - 1] - G[s]);
                for (int64_t a = 0; a < dk; a++) Kt[a * C + s] *= e;
            }
        }
        FN(ssd_gemm_acc)(dk, n, dv, Kt, C, Vp, ldv, S, ldv);
    }
    if (s_out) FN(ssd_copy_rows)(dk, dv, S, ldv, s_out, dv);
}

static void FN(ssd_bwd_head)(int64_t T, int64_t C, int64_t dk, int64_t dv, const REAL *q, const REAL *k, const REAL *v,
                             const REAL *g, const REAL *states, const REAL *dout, const REAL *ds_out, REAL *dq, REAL *dkk,
                             REAL *dvv, REAL *dg, REAL *ds0, REAL *work, double *G) {
    const int64_t sd = dk * dv, N = (T + C - 1) / C, ldv = FN(ssd_ld)(dv);
    REAL *dS = work, *dSt = dS + dk * ldv, *S0t = dSt + sd; /* dS [dk, ldv]; the transposes of dS and S0 [dv, dk] */
    REAL *A = S0t + sd, *W = A + C * C, *At = W + C * C, *Wt = At + C * C; /* [C, C] each */
    REAL *Kt = Wt + C * C, *SdO = Kt + C * dk, *dSv = SdO + C * dk;        /* Kt [dk, C]; [C, dk] */
    REAL *Vt = dSv + C * dk, *dSk = Vt + C * dv, *dOp = dSk + C * ldv;     /* Vt [dv, C]; [C, ldv] */
    REAL *dVp = dOp + C * ldv;                                             /* [C, ldv] */
    double *dG = G + C; /* the gate's gradient sums terms that cancel: in double, as G */
    memset(dS, 0, sizeof(REAL) * (size_t)(dk * ldv));
    if (ds_out) FN(ssd_copy_rows)(dk, dv, ds_out, dv, dS, ldv);
    if (!dout) memset(dOp, 0, sizeof(REAL) * (size_t)(C * ldv)); /* no output cotangent: zeros */
    for (int64_t ci = N - 1; ci >= 0; ci--) {
        const int64_t c0 = ci * C, n = T - c0 < C ? T - c0 : C;
        const REAL *Q = q + c0 * dk, *K = k + c0 * dk, *V = v + c0 * dv, *S0 = states + ci * sd;
        const REAL *dO = dOp;
        if (dout) FN(ssd_copy_rows)(n, dv, dout + c0 * dv, dv, dOp, ldv);
        REAL *dQ = dq + c0 * dk, *dK = dkk + c0 * dk;
        FN(ssd_cumulative)(n, g ? g + c0 : NULL, G);
        for (int64_t t = 0; t < n; t++) dG[t] = 0;
        /* A = (Q K^T) * D and W = (dO V^T) * D (lower triangles), with their transposes; the pairs s < t of
         * the gate's gradient, (q_t . k_s)(dO_t . v_s) D_ts, from the products before W is scaled */
        FN(ssd_transpose)(n, dk, K, dk, NULL, Kt, C);
        FN(ssd_transpose)(n, dv, V, dv, NULL, Vt, C);
        for (int64_t t = 0; t < n; t++) {
            memset(A + t * C, 0, sizeof(REAL) * (size_t)n);
            memset(W + t * C, 0, sizeof(REAL) * (size_t)n);
        }
        FN(ssd_gemm_acc)(n, dk, n, Q, dk, Kt, C, A, C);
        FN(ssd_gemm_acc)(n, dv, n, dO, ldv, Vt, C, W, C);
        for (int64_t t = 0; t < n; t++)
            for (int64_t s = 0; s < n; s++) {
                REAL *a = A + t * C + s, *w = W + t * C + s;
                if (s > t) {
                    *a = *w = 0;
                    continue;
                }
                const REAL d = g ? FN(ssd_exp)(G[t] - G[s]) : 1;
                *a *= d;
                if (g && s < t) {
                    const double pair = (double)*a * *w;
                    dG[t] += pair;
                    dG[s] -= pair;
                }
                *w *= d;
            }
        for (int64_t t = 0; t < n; t++)
            for (int64_t s = 0; s < n; s++) At[s * C + t] = A[t * C + s], Wt[s * C + t] = W[t * C + s];
        /* SdO = dO S0^T, dSv = V dS^T [n, dk]; dSk = K dS [n, dv] */
        FN(ssd_transpose)(dk, dv, S0, dv, NULL, S0t, dk);
        FN(ssd_transpose)(dk, dv, dS, ldv, NULL, dSt, dk);
        memset(SdO, 0, sizeof(REAL) * (size_t)(n * dk));
        memset(dSv, 0, sizeof(REAL) * (size_t)(n * dk));
        for (int64_t t = 0; t < n; t++) memset(dSk + t * ldv, 0, sizeof(REAL) * (size_t)dv);
        FN(ssd_gemm_acc)(n, dv, dk, dO, ldv, S0t, dk, SdO, dk);
        FN(ssd_gemm_acc)(n, dv, dk, V, dv, dSt, dk, dSv, dk);
        FN(ssd_gemm_acc)(n, dk, dv, K, dk, dS, ldv, dSk, ldv);
        /* dQ = diag(exp G) SdO + W K;  dK = diag(E) dSv + W^T Q;  dV = diag(E) dSk + A^T dO */
        for (int64_t t = 0; t < n; t++) {
            const REAL et = g ? FN(ssd_exp)(G[t]) : 1, Et = g ? FN(ssd_exp)(G[n - 1] - G[t]) : 1;
            for (int64_t a = 0; a < dk; a++) {
                dQ[t * dk + a] = et * SdO[t * dk + a];
                dK[t * dk + a] = Et * dSv[t * dk + a];
            }
            for (int64_t j = 0; j < dv; j++) dVp[t * ldv + j] = Et * dSk[t * ldv + j];
            if (g) { /* the decays exp(G_t) of q_t^T S0 dO_t and E_t of k_t^T dS v_t */
                dG[t] += et * FN(ssd_dot)(dk, Q + t * dk, SdO + t * dk);
                const double u = Et * FN(ssd_dot)(dk, K + t * dk, dSv + t * dk);
                dG[n - 1] += u;
                dG[t] -= u;
            }
        }
        FN(ssd_gemm_acc)(n, n, dk, W, C, K, dk, dQ, dk);
        FN(ssd_gemm_acc)(n, n, dk, Wt, C, Q, dk, dK, dk);
        FN(ssd_gemm_acc)(n, n, dv, At, C, dO, ldv, dVp, ldv);
        FN(ssd_copy_rows)(n, dv, dVp, ldv, dvv + c0 * dv, dv);
        /* dS before the chunk: exp(G_{n-1}) dS + (diag(exp G) Q)^T dO (Kt's room holds that transpose) */
        if (g) {
            const REAL eL = FN(ssd_exp)(G[n - 1]);
            double dot = 0;
            for (int64_t a = 0; a < dk; a++) dot += FN(ssd_dot)(dv, dS + a * ldv, S0 + a * dv);
            dG[n - 1] += eL * dot;
            for (int64_t i = 0; i < dk * ldv; i++) dS[i] *= eL;
            for (int64_t t = 0; t < n; t++) A[t] = FN(ssd_exp)(G[t]); /* A is free now */
        }
        FN(ssd_transpose)(n, dk, Q, dk, g ? A : NULL, Kt, C);
        FN(ssd_gemm_acc)(dk, n, dv, Kt, C, dO, ldv, dS, ldv);
        if (g) { /* g_j enters every G_t with t >= j */
            double acc = 0;
            for (int64_t t = n - 1; t >= 0; t--) dg[c0 + t] = (REAL)(acc += dG[t]);
        }
    }
    if (ds0) FN(ssd_copy_rows)(dk, dv, dS, ldv, ds0, dv);
}
