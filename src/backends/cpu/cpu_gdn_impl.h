/* The per-head bodies of the fused chunkwise Gated DeltaNet kernels (cpu_gdn.c includes this file
 * once per precision with REAL = float or double and FN(name) naming the copy). The math and the
 * names are those of src/layers/gated_deltanet.c: within a chunk of n tokens from state S0,
 *     G_t = sum_{s<=t} g_s, gamma_t = exp(G_t), D_ts = exp(G_t - G_s) (s <= t), E_s = D_{n-1,s}
 *     (I + M) U = R = diag(beta) (V - diag(gamma) K S0),   M_ts = beta_t (k_t . k_s) D_ts  (s < t)
 *     O = diag(gamma) Q S0 + P U,                            P_ts = (q_t . k_s) D_ts      (s <= t)
 *     S_n = gamma_n S0 + (diag(E) K)^T U
 * Every product of a chunk is one call of a small register-blocked matrix product (gemm below: 4 rows x
 * 16 columns of the result held in registers while the contracted axis streams, so each load of a row of
 * the right operand feeds four multiply-adds); only the two triangular solves run row after row. */

#ifndef CPU_GDN_TRIANGLES /* once for both precisions */
#define CPU_GDN_TRIANGLES
/* Which triangle a product may skip (the chunk's C x C matrices are triangular): */
enum {
    FULL,      /* none */
    OUT_LOWER, /* only Y[i, j] with j <= i is wanted: blocks wholly above the diagonal are not computed */
    X_LOWER,   /* X[i, a] = 0 for a > i: the contraction stops at the row */
    X_UPPER    /* X[i, a] = 0 for a < i: the contraction starts at the row */
};
#endif

/* Y[n, w] = (acc ? Y : 0) + alpha X[n, m] Z[m, w]; row-major operands with row strides ldx, ldz, ldy. */
static void FN(gemm)(int64_t n, int64_t m, int64_t w, REAL alpha, const REAL *X, int64_t ldx, const REAL *Z,
                     int64_t ldz, REAL *Y, int64_t ldy, int acc, int tri) {
    enum { R = 4, W = 16 };
    for (int64_t i = 0; i < n; i += R) {
        const int64_t r = n - i < R ? n - i : R;
        const int64_t a0 = tri == X_UPPER ? i : 0, a1 = tri == X_LOWER && i + r < m ? i + r : m;
        for (int64_t x = 0; x < w; x += W) {
            if (tri == OUT_LOWER && x > i + r - 1) break;
            const int64_t cw = w - x < W ? w - x : W;
            REAL t[R][W] = {{0}};
            if (r == R && cw == W) {
                const REAL *x0 = X + i * ldx, *x1 = x0 + ldx, *x2 = x1 + ldx, *x3 = x2 + ldx;
                for (int64_t a = a0; a < a1; a++) {
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
                for (int64_t a = a0; a < a1; a++) {
                    const REAL *z = Z + a * ldz + x;
                    for (int64_t rr = 0; rr < r; rr++) {
                        const REAL c0 = X[(i + rr) * ldx + a];
                        for (int64_t c = 0; c < cw; c++) t[rr][c] += c0 * z[c];
                    }
                }
            }
            for (int64_t rr = 0; rr < r; rr++) {
                REAL *y = Y + (i + rr) * ldy + x;
                for (int64_t c = 0; c < cw; c++) y[c] = (acc ? y[c] : 0) + alpha * t[rr][c];
            }
        }
    }
}

/* dst [cols, rows] (row stride ldd) = src [rows, cols] (row stride lds) transposed */
static void FN(transpose)(int64_t rows, int64_t cols, const REAL *src, int64_t lds, REAL *dst, int64_t ldd) {
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) dst[j * ldd + i] = src[i * lds + j];
}

/* Scratch of one head, in REALs (see the layouts in FN(fwd_head) and FN(bwd_head)). */
static int64_t FN(fwd_scratch)(int64_t C, int64_t dk, int64_t dv) { return dk * dv + 2 * C + 2 * C * C + dk * C + 2 * C * dv; }
static int64_t FN(bwd_scratch)(int64_t C, int64_t dk, int64_t dv) {
    return 4 * dk * dv + 3 * C + 6 * C * C + 2 * dk * C + 5 * C * dv + dv * C;
}

/* G, gamma and D (lower triangle, 0 above) of the chunk's n tokens */
static void FN(chunk_decays)(int64_t n, int64_t C, const REAL *g, REAL *G, REAL *gam, REAL *D) {
    REAL acc = 0;
    for (int64_t i = 0; i < n; i++) {
        acc += g[i];
        G[i] = acc;
        gam[i] = (REAL)exp((double)acc);
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) D[i * C + j] = j <= i ? (REAL)exp((double)(G[i] - G[j])) : 0; /* <= 1 for g <= 0 */
}

/* A[n, n] (row stride C) = (Y K^T) * D, below the diagonal (strict) or on and below it; 0 elsewhere */
static void FN(decayed_gram)(int64_t n, int64_t C, int64_t dk, const REAL *Y, const REAL *KT, const REAL *D, int strict,
                             REAL *A) {
    FN(gemm)(n, dk, n, 1, Y, dk, KT, C, A, C, 0, OUT_LOWER);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) A[i * C + j] = (j < i || (!strict && j == i)) ? A[i * C + j] * D[i * C + j] : 0;
}

/* U [n, dv] = (I + M)^-1 R with R = diag(beta) (V - diag(gamma) KS), M_ij = beta_i KKD_ij: forward substitution */
static void FN(chunk_u)(int64_t n, int64_t C, int64_t dv, const REAL *v, const REAL *beta, const REAL *gam,
                        const REAL *KS, const REAL *KKD, REAL *U) {
    for (int64_t i = 0; i < n; i++) {
        REAL *ui = U + i * dv;
        const REAL b = beta[i];
        for (int64_t c = 0; c < dv; c++) ui[c] = b * (v[i * dv + c] - gam[i] * KS[i * dv + c]);
        for (int64_t j = 0; j < i; j++) {
            const REAL m = b * KKD[i * C + j];
            const REAL *uj = U + j * dv;
            for (int64_t c = 0; c < dv; c++) ui[c] -= m * uj[c];
        }
    }
}

/* One head, forward: o, the final state (s_out may be NULL), the states before each chunk (may be NULL).
 * Scratch: S [dk, dv], G, gamma [C], A, D [C, C], KT [dk, C], KS, U [C, dv]. */
static void FN(fwd_head)(int64_t T, int64_t C, int64_t dk, int64_t dv, const REAL *q, const REAL *k, const REAL *v,
                         const REAL *beta, const REAL *g, const REAL *s0, REAL *o, REAL *s_out, REAL *states, REAL *w) {
    REAL *S = w, *G = S + dk * dv, *gam = G + C, *A = gam + C, *D = A + C * C, *KT = D + C * C, *KS = KT + dk * C,
         *U = KS + C * dv;
    for (int64_t i = 0; i < dk * dv; i++) S[i] = s0 ? s0[i] : 0;
    for (int64_t t0 = 0, c = 0; t0 < T; t0 += C, c++) {
        const int64_t n = T - t0 < C ? T - t0 : C;
        const REAL *qc = q + t0 * dk, *kc = k + t0 * dk;
        REAL *oc = o + t0 * dv;
        if (states) memcpy(states + c * dk * dv, S, sizeof(REAL) * (size_t)(dk * dv));
        FN(chunk_decays)(n, C, g + t0, G, gam, D);
        FN(transpose)(n, dk, kc, dk, KT, C);
        FN(gemm)(n, dk, dv, 1, kc, dk, S, dv, KS, dv, 0, FULL); /* K S0 */
        FN(decayed_gram)(n, C, dk, kc, KT, D, 1, A);
        FN(chunk_u)(n, C, dv, v + t0 * dv, beta + t0, gam, KS, A, U);
        FN(gemm)(n, dk, dv, 1, qc, dk, S, dv, oc, dv, 0, FULL); /* Q S0, then diag(gamma) */
        for (int64_t i = 0; i < n; i++)
            for (int64_t x = 0; x < dv; x++) oc[i * dv + x] *= gam[i];
        FN(decayed_gram)(n, C, dk, qc, KT, D, 0, A); /* P */
        FN(gemm)(n, n, dv, 1, A, C, U, dv, oc, dv, 1, X_LOWER); /* O += P U */
        /* S <- gamma_n S + (diag(E) K)^T U, with diag(E) K^T in place of K^T */
        const REAL gn = gam[n - 1];
        for (int64_t i = 0; i < dk * dv; i++) S[i] *= gn;
        for (int64_t a = 0; a < dk; a++)
            for (int64_t j = 0; j < n; j++) KT[a * C + j] *= D[(n - 1) * C + j];
        FN(gemm)(dk, n, dv, 1, KT, C, U, dv, S, dv, 1, FULL);
    }
    if (s_out) memcpy(s_out, S, sizeof(REAL) * (size_t)(dk * dv));
}

/* One head, backward: chunks in reverse, each recomputed from its stored state S0; dS is the gradient of
 * the state after the chunk (ds_out for the last), and the chunk's dS0 that of the one before. Every step
 * is the reverse of a line of the forward pass (names: dX is the gradient with respect to X):
 *     S_n = gamma_n S0 + (diag(E) K)^T U          -> dS0 = gamma_n dS, dG_n, dU = diag(E) K dS, dK, dE
 *     O   = diag(gamma) Q S0 + P U                -> dG, dQ, dS0, dP = dO U^T, dU += P^T dO, dQ, dK
 *     (I + M) U = R                               -> dR = (I + M)^-T dU (back substitution), dM = -dR U^T
 *     M_ts = beta_t (k_t . k_s) D_ts              -> dbeta, dG, dK
 *     R_t = beta_t (v_t - gamma_t S0^T k_t)       -> dbeta, dV, dG, dK, dS0
 *     dg_s = sum_{t>=s} dG_t (G is a cumulative sum); a decay D_ts = exp(G_t - G_s) with gradient dD
 *     gives dG_t += dD D, dG_s -= dD D.
 * Scratch: dS, dS0, S0T, dST [dk, dv]; G, gamma, dG [C]; D, KKD, P, dA, dM, T2 [C, C]; KT, QT [dk, C];
 * KS, QS, U, dU, Y [C, dv]; UT [dv, C]. */
static void FN(bwd_head)(int64_t T, int64_t C, int64_t dk, int64_t dv, const REAL *q, const REAL *k, const REAL *v,
                         const REAL *beta, const REAL *g, const REAL *states, const REAL *dout, const REAL *ds_out,
                         REAL *dq, REAL *dk_, REAL *dv_, REAL *dbeta, REAL *dg, REAL *ds0, REAL *w) {
    REAL *dS = w, *dS0 = dS + dk * dv, *S0T = dS0 + dk * dv, *dST = S0T + dk * dv, *G = dST + dk * dv, *gam = G + C,
         *dG = gam + C, *D = dG + C, *KKD = D + C * C, *P = KKD + C * C, *dA = P + C * C, *dM = dA + C * C,
         *T2 = dM + C * C, *KT = T2 + C * C, *QT = KT + dk * C, *KS = QT + dk * C, *QS = KS + C * dv,
         *U = QS + C * dv, *dU = U + C * dv, *Y = dU + C * dv, *UT = Y + C * dv;
    for (int64_t i = 0; i < dk * dv; i++) dS[i] = ds_out ? ds_out[i] : 0;
    const int64_t N = (T + C - 1) / C;
    for (int64_t c = N - 1; c >= 0; c--) {
        const int64_t t0 = c * C, n = T - t0 < C ? T - t0 : C;
        const REAL *qc = q + t0 * dk, *kc = k + t0 * dk, *vc = v + t0 * dv, *bc = beta + t0;
        const REAL *doc = dout ? dout + t0 * dv : NULL, *S0 = states + c * dk * dv;
        REAL *dqc = dq + t0 * dk, *dkc = dk_ + t0 * dk, *dvc = dv_ + t0 * dv, *dbc = dbeta + t0;
        /* the chunk's forward quantities */
        FN(chunk_decays)(n, C, g + t0, G, gam, D);
        FN(transpose)(n, dk, kc, dk, KT, C);
        FN(transpose)(n, dk, qc, dk, QT, C);
        FN(gemm)(n, dk, dv, 1, kc, dk, S0, dv, KS, dv, 0, FULL);
        FN(gemm)(n, dk, dv, 1, qc, dk, S0, dv, QS, dv, 0, FULL);
        FN(decayed_gram)(n, C, dk, kc, KT, D, 1, KKD);
        FN(decayed_gram)(n, C, dk, qc, KT, D, 0, P);
        FN(chunk_u)(n, C, dv, vc, bc, gam, KS, KKD, U);
        FN(transpose)(n, dv, U, dv, UT, C);
        FN(transpose)(dk, dv, S0, dv, S0T, dk);
        FN(transpose)(dk, dv, dS, dv, dST, dk);
        for (int64_t i = 0; i < n; i++) dG[i] = 0, dbc[i] = 0;

        /* S_n = gamma_n S0 + (diag(E) K)^T U */
        const REAL gn = gam[n - 1];
        REAL sd = 0;
        for (int64_t i = 0; i < dk * dv; i++) dS0[i] = gn * dS[i], sd += S0[i] * dS[i];
        dG[n - 1] += gn * sd;
        FN(gemm)(n, dk, dv, 1, kc, dk, dS, dv, dU, dv, 0, FULL); /* rows dS^T k_j, scaled by E_j below */
        FN(gemm)(n, dv, dk, 1, U, dv, dST, dk, dkc, dk, 0, FULL); /* rows dS u_j, scaled by E_j below */
        for (int64_t j = 0; j < n; j++) {
            const REAL e = D[(n - 1) * C + j];
            REAL de = 0;
            for (int64_t x = 0; x < dv; x++) de += dU[j * dv + x] * U[j * dv + x], dU[j * dv + x] *= e;
            for (int64_t a = 0; a < dk; a++) dkc[j * dk + a] *= e;
            dG[n - 1] += e * de;
            dG[j] -= e * de;
        }
        /* O = diag(gamma) Q S0 + P U */
        if (doc) {
            for (int64_t i = 0; i < n; i++) {
                REAL dgq = 0;
                for (int64_t x = 0; x < dv; x++) dgq += doc[i * dv + x] * QS[i * dv + x], Y[i * dv + x] = gam[i] * doc[i * dv + x];
                dG[i] += gam[i] * dgq;
            }
            FN(gemm)(n, dv, dk, 1, Y, dv, S0T, dk, dqc, dk, 0, FULL);   /* dQ = diag(gamma) dO S0^T */
            FN(gemm)(dk, n, dv, 1, QT, C, Y, dv, dS0, dv, 1, FULL);     /* dS0 += Q^T diag(gamma) dO */
            FN(gemm)(n, dv, n, 1, doc, dv, UT, C, dA, C, 0, OUT_LOWER);      /* dP = dO U^T */
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = 0; j < n; j++) {
                    const REAL t = j <= i ? dA[i * C + j] * P[i * C + j] : 0;
                    dG[i] += t;
                    dG[j] -= t;
                    dA[i * C + j] = j <= i ? dA[i * C + j] * D[i * C + j] : 0; /* dP * D */
                }
            FN(transpose)(n, n, P, C, T2, C);
            FN(gemm)(n, n, dv, 1, T2, C, doc, dv, dU, dv, 1, X_UPPER);     /* dU += P^T dO */
            FN(gemm)(n, n, dk, 1, dA, C, kc, dk, dqc, dk, 1, X_LOWER);     /* dQ += (dP * D) K */
            FN(transpose)(n, n, dA, C, T2, C);
            FN(gemm)(n, n, dk, 1, T2, C, qc, dk, dkc, dk, 1, X_UPPER);     /* dK += (dP * D)^T Q */
        } else {
            for (int64_t i = 0; i < n * dk; i++) dqc[i] = 0;
        }
        /* (I + M) U = R: dR_s = dU_s - sum_{t>s} M_ts dR_t, M_ts = beta_t KKD_ts (in place: dU becomes dR) */
        for (int64_t s = n - 1; s >= 0; s--) {
            REAL *drs = dU + s * dv;
            for (int64_t t = s + 1; t < n; t++) {
                const REAL m = bc[t] * KKD[t * C + s];
                const REAL *drt = dU + t * dv;
                for (int64_t x = 0; x < dv; x++) drs[x] -= m * drt[x];
            }
        }
        /* dM = -dR U^T (s < t) -> dbeta, dG; then dM becomes d(k_t . k_s) = dM_ts beta_t D_ts */
        FN(gemm)(n, dv, n, -1, dU, dv, UT, C, dM, C, 0, OUT_LOWER);
        for (int64_t t = 0; t < n; t++)
            for (int64_t s = 0; s < n; s++) {
                if (s >= t) {
                    dM[t * C + s] = 0;
                    continue;
                }
                const REAL dm = dM[t * C + s], kkd = KKD[t * C + s], mm = dm * bc[t] * kkd;
                dbc[t] += dm * kkd;
                dG[t] += mm;
                dG[s] -= mm;
                dM[t * C + s] = dm * bc[t] * D[t * C + s];
            }
        FN(gemm)(n, n, dk, 1, dM, C, kc, dk, dkc, dk, 1, X_LOWER); /* dk_t += sum_s dKk_ts k_s */
        FN(transpose)(n, n, dM, C, T2, C);
        FN(gemm)(n, n, dk, 1, T2, C, kc, dk, dkc, dk, 1, X_UPPER); /* dk_s += sum_t dKk_ts k_t */
        /* R_t = beta_t (v_t - gamma_t S0^T k_t): dbeta, dV, dG; Y = dKS = -diag(beta gamma) dR */
        for (int64_t t = 0; t < n; t++) {
            const REAL b = bc[t], gt = gam[t];
            const REAL *drt = dU + t * dv;
            REAL rdot = 0, ksdot = 0;
            for (int64_t x = 0; x < dv; x++) {
                rdot += drt[x] * (vc[t * dv + x] - gt * KS[t * dv + x]);
                ksdot += drt[x] * KS[t * dv + x];
                dvc[t * dv + x] = b * drt[x];
                Y[t * dv + x] = -b * gt * drt[x];
            }
            dbc[t] += rdot;
            dG[t] -= gt * b * ksdot;
        }
        FN(gemm)(n, dv, dk, 1, Y, dv, S0T, dk, dkc, dk, 1, FULL); /* dK += dKS S0^T */
        FN(gemm)(dk, n, dv, 1, KT, C, Y, dv, dS0, dv, 1, FULL);   /* dS0 += K^T dKS */
        REAL acc = 0; /* dg_s = sum_{t>=s} dG_t */
        for (int64_t s = n - 1; s >= 0; s--) acc += dG[s], dg[t0 + s] = acc;
        memcpy(dS, dS0, sizeof(REAL) * (size_t)(dk * dv));
    }
    if (ds0) memcpy(ds0, dS, sizeof(REAL) * (size_t)(dk * dv));
}
