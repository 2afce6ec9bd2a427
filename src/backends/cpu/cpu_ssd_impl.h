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

/* Y[n, w] += X[n, m] Z[m, w], row-major with row strides ldx, ldz, ldy; four rows of Y at a time share
 * each load of a row of Z. */
static void FN(ssd_gemm_acc)(int64_t n, int64_t m, int64_t w, const REAL *X, int64_t ldx, const REAL *Z, int64_t ldz,
                             REAL *Y, int64_t ldy) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        REAL *y0 = Y + i * ldy, *y1 = y0 + ldy, *y2 = y1 + ldy, *y3 = y2 + ldy;
        const REAL *x0 = X + i * ldx, *x1 = x0 + ldx, *x2 = x1 + ldx, *x3 = x2 + ldx;
        for (int64_t a = 0; a < m; a++) {
            const REAL c0 = x0[a], c1 = x1[a], c2 = x2[a], c3 = x3[a], *z = Z + a * ldz;
            for (int64_t j = 0; j < w; j++) {
                y0[j] += c0 * z[j];
                y1[j] += c1 * z[j];
                y2[j] += c2 * z[j];
                y3[j] += c3 * z[j];
            }
        }
    }
    for (; i < n; i++)
        for (int64_t a = 0; a < m; a++) {
            const REAL c = X[i * ldx + a], *z = Z + a * ldz;
            REAL *y = Y + i * ldy;
            for (int64_t j = 0; j < w; j++) y[j] += c * z[j];
        }
}

static REAL FN(ssd_dot)(int64_t n, const REAL *a, const REAL *b) {
    REAL s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* Scratch elements per thread (REAL), besides 2 C doubles for G and dG. */
static int64_t FN(ssd_fwd_scratch)(int64_t C, int64_t dk, int64_t dv) { return dk * dv + C * C; }
static int64_t FN(ssd_bwd_scratch)(int64_t C, int64_t dk, int64_t dv) {
    return 2 * dk * dv + 2 * C * C + 2 * C * dk + C * dv;
}

/* Cumulative log decay of the chunk's n tokens (zeros without gates), in double also for f32: with strong
 * gates G reaches hundreds within a chunk, and a float G would lose ~1e-5 of every decay exp(G_t - G_s). */
static void FN(ssd_cumulative)(int64_t n, const REAL *g, double *G) {
    double acc = 0;
    for (int64_t t = 0; t < n; t++) G[t] = acc += g ? (double)g[t] : 0;
}

static void FN(ssd_fwd_head)(int64_t T, int64_t C, int64_t dk, int64_t dv, const REAL *q, const REAL *k, const REAL *v,
                             const REAL *g, const REAL *s0, REAL *o, REAL *s_out, REAL *states, REAL *work,
                             double *G) {
    const int64_t sd = dk * dv;
    REAL *S = work, *P = S + sd;
    if (s0)
        memcpy(S, s0, sizeof(REAL) * (size_t)sd);
    else
        memset(S, 0, sizeof(REAL) * (size_t)sd);
    for (int64_t c0 = 0, ci = 0; c0 < T; c0 += C, ci++) {
        const int64_t n = T - c0 < C ? T - c0 : C;
        const REAL *Q = q + c0 * dk, *K = k + c0 * dk, *V = v + c0 * dv;
        REAL *O = o + c0 * dv;
        if (states) memcpy(states + ci * sd, S, sizeof(REAL) * (size_t)sd);
        FN(ssd_cumulative)(n, g ? g + c0 : NULL, G);
        /* O = diag(exp G) Q S0 + (Q K^T * D) V */
        memset(O, 0, sizeof(REAL) * (size_t)(n * dv));
        FN(ssd_gemm_acc)(n, dk, dv, Q, dk, S, dv, O, dv);
        for (int64_t t = 0; t < n; t++) {
            const REAL e = g ? (REAL)exp(G[t]) : 1;
            for (int64_t j = 0; j < dv; j++) O[t * dv + j] *= e;
            for (int64_t s = 0; s < C; s++)
                P[t * C + s] = s <= t ? FN(ssd_dot)(dk, Q + t * dk, K + s * dk) * (g ? (REAL)exp(G[t] - G[s]) : 1) : 0;
        }
        FN(ssd_gemm_acc)(n, n, dv, P, C, V, dv, O, dv);
        /* S = exp(G_{n-1}) S + sum_s E_s k_s v_s^T */
        const REAL eL = g ? (REAL)exp(G[n - 1]) : 1;
        if (g)
            for (int64_t i = 0; i < sd; i++) S[i] *= eL;
        for (int64_t s = 0; s < n; s++) {
            const REAL e = g ? (REAL)exp(G[n - 1] - G[s]) : 1;
            const REAL *ks = K + s * dk, *vs = V + s * dv;
            for (int64_t a = 0; a < dk; a++) {
                const REAL c = e * ks[a];
                REAL *row = S + a * dv;
                for (int64_t j = 0; j < dv; j++) row[j] += c * vs[j];
            }
        }
    }
    if (s_out) memcpy(s_out, S, sizeof(REAL) * (size_t)sd);
}

static void FN(ssd_bwd_head)(int64_t T, int64_t C, int64_t dk, int64_t dv, const REAL *q, const REAL *k, const REAL *v,
                             const REAL *g, const REAL *states, const REAL *dout, const REAL *ds_out, REAL *dq, REAL *dkk,
                             REAL *dvv, REAL *dg, REAL *ds0, REAL *work,
                             double *G) {
    const int64_t sd = dk * dv, N = (T + C - 1) / C;
    REAL *dS = work, *dSn = dS + sd, *A = dSn + sd, *W = A + C * C, *SdO = W + C * C, *dSv = SdO + C * dk,
         *dSk = dSv + C * dk;
    double *dG = G + C; /* the gate's gradient sums terms that cancel: in double, as G */
    if (ds_out)
        memcpy(dS, ds_out, sizeof(REAL) * (size_t)sd);
    else
        memset(dS, 0, sizeof(REAL) * (size_t)sd);
    for (int64_t ci = N - 1; ci >= 0; ci--) {
        const int64_t c0 = ci * C, n = T - c0 < C ? T - c0 : C;
        const REAL *Q = q + c0 * dk, *K = k + c0 * dk, *V = v + c0 * dv, *S0 = states + ci * sd;
        const REAL *dO = dout ? dout + c0 * dv : NULL;
        REAL *dQ = dq + c0 * dk, *dK = dkk + c0 * dk, *dV = dvv + c0 * dv;
        FN(ssd_cumulative)(n, g ? g + c0 : NULL, G);
        const REAL eL = g ? (REAL)exp(G[n - 1]) : 1;
        for (int64_t t = 0; t < n; t++) dG[t] = 0;
        /* the lower triangles A_ts = q_t . k_s and W_ts = dO_t . v_s, both already scaled by D_ts */
        for (int64_t t = 0; t < n; t++)
            for (int64_t s = 0; s <= t; s++) {
                const REAL d = g ? (REAL)exp(G[t] - G[s]) : 1;
                A[t * C + s] = d * FN(ssd_dot)(dk, Q + t * dk, K + s * dk);
                W[t * C + s] = dO ? d * FN(ssd_dot)(dv, dO + t * dv, V + s * dv) : 0;
            }
        /* S0 dO_t, dS v_s, dS^T k_s */
        for (int64_t t = 0; t < n; t++) {
            for (int64_t a = 0; a < dk; a++) {
                SdO[t * dk + a] = dO ? FN(ssd_dot)(dv, S0 + a * dv, dO + t * dv) : 0;
                dSv[t * dk + a] = FN(ssd_dot)(dv, dS + a * dv, V + t * dv);
            }
            REAL *r = dSk + t * dv;
            for (int64_t j = 0; j < dv; j++) r[j] = 0;
            for (int64_t a = 0; a < dk; a++) {
                const REAL c = K[t * dk + a], *row = dS + a * dv;
                for (int64_t j = 0; j < dv; j++) r[j] += c * row[j];
            }
        }
        for (int64_t t = 0; t < n; t++) {
            const REAL et = g ? (REAL)exp(G[t]) : 1, Es = g ? (REAL)exp(G[n - 1] - G[t]) : 1;
            /* dq_t = exp(G_t) S0 dO_t + sum_{s<=t} D_ts W_ts k_s */
            REAL *dqt = dQ + t * dk;
            for (int64_t a = 0; a < dk; a++) dqt[a] = et * SdO[t * dk + a];
            for (int64_t s = 0; s <= t; s++) {
                const REAL c = W[t * C + s], *ks = K + s * dk;
                for (int64_t a = 0; a < dk; a++) dqt[a] += c * ks[a];
            }
            /* dk_t = sum_{r>=t} D_rt W_rt q_r + E_t dS v_t;  dv_t = sum_{r>=t} D_rt A_rt dO_r + E_t dS^T k_t */
            REAL *dkt = dK + t * dk, *dvt = dV + t * dv;
            for (int64_t a = 0; a < dk; a++) dkt[a] = Es * dSv[t * dk + a];
            for (int64_t j = 0; j < dv; j++) dvt[j] = Es * dSk[t * dv + j];
            for (int64_t r = t; r < n; r++) {
                const REAL cw = W[r * C + t], ca = A[r * C + t], *qr = Q + r * dk;
                for (int64_t a = 0; a < dk; a++) dkt[a] += cw * qr[a];
                if (dO) {
                    const REAL *dor = dO + r * dv;
                    for (int64_t j = 0; j < dv; j++) dvt[j] += ca * dor[j];
                }
            }
            if (g) {
                /* exp(G_t) q_t^T S0 dO_t; the pairs (t, s) s < t; E_t k_t^T dS v_t */
                dG[t] += et * FN(ssd_dot)(dk, Q + t * dk, SdO + t * dk);
                for (int64_t s = 0; s < t; s++) {
                    const double w = (double)A[t * C + s] * (dO ? FN(ssd_dot)(dv, dO + t * dv, V + s * dv) : 0);
                    dG[t] += w;
                    dG[s] -= w;
                }
                const double u = Es * FN(ssd_dot)(dk, K + t * dk, dSv + t * dk);
                dG[n - 1] += u;
                dG[t] -= u;
            }
        }
        /* dS before the chunk: exp(G_{n-1}) dS + sum_t exp(G_t) q_t dO_t^T */
        for (int64_t i = 0; i < sd; i++) dSn[i] = eL * dS[i];
        if (g) dG[n - 1] += eL * FN(ssd_dot)(sd, dS, S0);
        if (dO)
            for (int64_t t = 0; t < n; t++) {
                const REAL et = g ? (REAL)exp(G[t]) : 1, *qt = Q + t * dk, *dot = dO + t * dv;
                for (int64_t a = 0; a < dk; a++) {
                    const REAL c = et * qt[a];
                    REAL *row = dSn + a * dv;
                    for (int64_t j = 0; j < dv; j++) row[j] += c * dot[j];
                }
            }
        memcpy(dS, dSn, sizeof(REAL) * (size_t)sd);
        if (g) { /* g_j enters every G_t with t >= j */
            double acc = 0;
            for (int64_t t = n - 1; t >= 0; t--) dg[c0 + t] = (REAL)(acc += dG[t]);
        }
    }
    if (ds0) memcpy(ds0, dS, sizeof(REAL) * (size_t)sd);
}
