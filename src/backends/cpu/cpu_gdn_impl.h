/* The per-head bodies of the fused chunkwise Gated DeltaNet kernels (cpu_gdn.c includes this file
 * once per precision with REAL = float or double and FN(name) naming the copy). The math and the
 * names are those of src/layers/gated_deltanet.c: within a chunk of n tokens from state S0,
 *     G_t = sum_{s<=t} g_s, gamma_t = exp(G_t), D_ts = exp(G_t - G_s) (s <= t)
 *     u_t = beta_t (v_t - gamma_t S0^T k_t) - sum_{s<t} beta_t (k_t . k_s) D_ts u_s   (forward substitution:
 *           the rows of (I + M) U = diag(beta) (V - diag(gamma) K S0))
 *     o_t = gamma_t q_t^T S0 + sum_{s<=t} (q_t . k_s) D_ts u_s
 *     S_n = gamma_n S0 + sum_s D_ns k_s u_s^T
 * The inner loops run along a contiguous row (dv, dk or the chunk), as multiply-adds, so the compiler
 * vectorizes them: the products over dk that a row of K K^T or Q K^T needs read K^T, kept per chunk. */

/* Scratch of one head, in REALs (see the layout in FN(fwd_head) and FN(bwd_head)). */
static int64_t FN(fwd_scratch)(int64_t C, int64_t dk, int64_t dv) { return dk * dv + 3 * C + C * C + dk * C + 2 * C * dv; }
static int64_t FN(bwd_scratch)(int64_t C, int64_t dk, int64_t dv) {
    return 4 * dk * dv + 4 * C + 3 * C * C + dk * C + 5 * C * dv + dv * C + 2 * dv;
}

/* G, gamma, D (lower triangle) and K^T [dk, C] of the chunk's n tokens. */
static void FN(chunk_decays)(int64_t n, int64_t C, int64_t dk, const REAL *g, const REAL *k, REAL *G, REAL *gam,
                             REAL *D, REAL *KT) {
    REAL acc = 0;
    for (int64_t i = 0; i < n; i++) {
        acc += g[i];
        G[i] = acc;
        gam[i] = (REAL)exp((double)acc);
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j <= i; j++) D[i * C + j] = (REAL)exp((double)(G[i] - G[j])); /* <= 1 for g <= 0 */
    for (int64_t j = 0; j < n; j++)
        for (int64_t a = 0; a < dk; a++) KT[a * C + j] = k[j * dk + a];
}

/* row[j] = x . k_j for j < m (x [dk], K^T [dk, C]) */
static void FN(dots_k)(int64_t m, int64_t C, int64_t dk, const REAL *x, const REAL *KT, REAL *row) {
    for (int64_t j = 0; j < m; j++) row[j] = 0;
    for (int64_t a = 0; a < dk; a++) {
        const REAL xa = x[a];
        const REAL *kt = KT + a * C;
        for (int64_t j = 0; j < m; j++) row[j] += xa * kt[j];
    }
}

/* y[0..dv) = x^T S for x [dk], S [dk, dv], times s */
static void FN(vec_state)(int64_t dk, int64_t dv, const REAL *x, const REAL *S, REAL s, REAL *y) {
    for (int64_t c = 0; c < dv; c++) y[c] = 0;
    for (int64_t a = 0; a < dk; a++) {
        const REAL xa = x[a] * s;
        const REAL *Sa = S + a * dv;
        for (int64_t c = 0; c < dv; c++) y[c] += xa * Sa[c];
    }
}

/* U [n, dv] of the chunk by forward substitution; KS [n, dv] = K S0 (kept for the backward pass),
 * KKD [C, C] (may be NULL) receives (k_t . k_s) D_ts below the diagonal. row: [C] scratch. */
static void FN(chunk_u)(int64_t n, int64_t C, int64_t dk, int64_t dv, const REAL *k, const REAL *v, const REAL *beta,
                        const REAL *gam, const REAL *D, const REAL *KT, const REAL *S0, REAL *KS, REAL *U, REAL *KKD,
                        REAL *row) {
    for (int64_t i = 0; i < n; i++) {
        const REAL *ki = k + i * dk;
        REAL *ui = U + i * dv, *ksi = KS + i * dv;
        FN(vec_state)(dk, dv, ki, S0, 1, ksi);
        const REAL b = beta[i];
        for (int64_t c = 0; c < dv; c++) ui[c] = b * (v[i * dv + c] - gam[i] * ksi[c]);
        FN(dots_k)(i, C, dk, ki, KT, row);
        for (int64_t j = 0; j < i; j++) {
            const REAL kkd = row[j] * D[i * C + j];
            if (KKD) KKD[i * C + j] = kkd;
            const REAL m = b * kkd;
            const REAL *uj = U + j * dv;
            for (int64_t c = 0; c < dv; c++) ui[c] -= m * uj[c];
        }
    }
}

/* One head, forward: o, the final state (s_out may be NULL), the states before each chunk (may be NULL). */
static void FN(fwd_head)(int64_t T, int64_t C, int64_t dk, int64_t dv, const REAL *q, const REAL *k, const REAL *v,
                         const REAL *beta, const REAL *g, const REAL *s0, REAL *o, REAL *s_out, REAL *states, REAL *w) {
    REAL *S = w, *G = S + dk * dv, *gam = G + C, *row = gam + C, *D = row + C, *KT = D + C * C, *KS = KT + dk * C,
         *U = KS + C * dv;
    for (int64_t i = 0; i < dk * dv; i++) S[i] = s0 ? s0[i] : 0;
    for (int64_t t0 = 0, c = 0; t0 < T; t0 += C, c++) {
        const int64_t n = T - t0 < C ? T - t0 : C;
        const REAL *qc = q + t0 * dk, *kc = k + t0 * dk, *vc = v + t0 * dv, *bc = beta + t0;
        REAL *oc = o + t0 * dv;
        if (states) memcpy(states + c * dk * dv, S, sizeof(REAL) * (size_t)(dk * dv));
        FN(chunk_decays)(n, C, dk, g + t0, kc, G, gam, D, KT);
        FN(chunk_u)(n, C, dk, dv, kc, vc, bc, gam, D, KT, S, KS, U, NULL, row);
        for (int64_t i = 0; i < n; i++) { /* o_i = gamma_i q_i^T S0 + sum_{j<=i} (q_i . k_j) D_ij u_j */
            REAL *oi = oc + i * dv;
            FN(vec_state)(dk, dv, qc + i * dk, S, gam[i], oi);
            FN(dots_k)(i + 1, C, dk, qc + i * dk, KT, row);
            for (int64_t j = 0; j <= i; j++) {
                const REAL p = row[j] * D[i * C + j];
                const REAL *uj = U + j * dv;
                for (int64_t e = 0; e < dv; e++) oi[e] += p * uj[e];
            }
        }
        /* S <- gamma_n S + sum_j D_nj k_j u_j^T */
        const REAL gn = gam[n - 1];
        for (int64_t i = 0; i < dk * dv; i++) S[i] *= gn;
        for (int64_t j = 0; j < n; j++) {
            const REAL e = D[(n - 1) * C + j];
            const REAL *uj = U + j * dv;
            for (int64_t a = 0; a < dk; a++) {
                const REAL ka = e * kc[j * dk + a];
                REAL *Sa = S + a * dv;
                for (int64_t x = 0; x < dv; x++) Sa[x] += ka * uj[x];
            }
        }
    }
    if (s_out) memcpy(s_out, S, sizeof(REAL) * (size_t)(dk * dv));
}

/* One head, backward: chunks in reverse, each recomputed from its stored state S0; dS is the gradient of
 * the state after the chunk (ds_out for the last), and the chunk's dS0 that of the one before. Every step
 * is the reverse of a line of the forward pass (names: dX is the gradient with respect to X):
 *     S_n = gamma_n S0 + sum_s D_ns k_s u_s^T     -> dS0, dG_n, dU, dK
 *     O   = diag(gamma) Q S0 + P U, P_ts = (q_t . k_s) D_ts    -> dG, dQ, dS0, dU, dK
 *     (I + M) U = R, M_ts = beta_t (k_t . k_s) D_ts   -> dR = (I + M)^-T dU (back substitution),
 *                                                        dM_ts = -dR_t . u_s -> dbeta, dG, dK
 *     R_t = beta_t (v_t - gamma_t S0^T k_t)         -> dbeta, dV, dG, dK, dS0
 *     dg_s = sum_{t>=s} dG_t (G is a cumulative sum). */
static void FN(bwd_head)(int64_t T, int64_t C, int64_t dk, int64_t dv, const REAL *q, const REAL *k, const REAL *v,
                         const REAL *beta, const REAL *g, const REAL *states, const REAL *dout, const REAL *ds_out,
                         REAL *dq, REAL *dk_, REAL *dv_, REAL *dbeta, REAL *dg, REAL *ds0, REAL *w) {
    REAL *dS = w, *dS0 = dS + dk * dv, *S0T = dS0 + dk * dv, *dST = S0T + dk * dv, *G = dST + dk * dv, *gam = G + C,
         *dG = gam + C, *row = dG + C, *D = row + C, *KKD = D + C * C, *P = KKD + C * C, *KT = P + C * C,
         *KS = KT + dk * C, *QS = KS + C * dv, *U = QS + C * dv, *dU = U + C * dv, *dR = dU + C * dv,
         *UT = dR + C * dv, *vec = UT + dv * C, *vec2 = vec + dv;
    for (int64_t i = 0; i < dk * dv; i++) dS[i] = ds_out ? ds_out[i] : 0;
    const int64_t N = (T + C - 1) / C;
    for (int64_t c = N - 1; c >= 0; c--) {
        const int64_t t0 = c * C, n = T - t0 < C ? T - t0 : C;
        const REAL *qc = q + t0 * dk, *kc = k + t0 * dk, *vc = v + t0 * dv, *bc = beta + t0;
        const REAL *doc = dout ? dout + t0 * dv : NULL, *S0 = states + c * dk * dv;
        REAL *dqc = dq + t0 * dk, *dkc = dk_ + t0 * dk, *dvc = dv_ + t0 * dv, *dbc = dbeta + t0;
        /* the chunk's forward quantities */
        FN(chunk_decays)(n, C, dk, g + t0, kc, G, gam, D, KT);
        FN(chunk_u)(n, C, dk, dv, kc, vc, bc, gam, D, KT, S0, KS, U, KKD, row);
        for (int64_t i = 0; i < n; i++) {
            FN(vec_state)(dk, dv, qc + i * dk, S0, 1, QS + i * dv);
            FN(dots_k)(i + 1, C, dk, qc + i * dk, KT, row);
            for (int64_t j = 0; j <= i; j++) P[i * C + j] = row[j] * D[i * C + j];
        }
        for (int64_t j = 0; j < n; j++)
            for (int64_t e = 0; e < dv; e++) UT[e * C + j] = U[j * dv + e];
        for (int64_t a = 0; a < dk; a++)
            for (int64_t e = 0; e < dv; e++) S0T[e * dk + a] = S0[a * dv + e], dST[e * dk + a] = dS[a * dv + e];
        for (int64_t i = 0; i < n * dk; i++) dqc[i] = 0, dkc[i] = 0;
        for (int64_t i = 0; i < n * dv; i++) dU[i] = 0;
        for (int64_t i = 0; i < n; i++) dG[i] = 0, dbc[i] = 0;

        /* S_n = gamma_n S0 + sum_j D_nj k_j u_j^T */
        const REAL gn = gam[n - 1];
        REAL sd = 0;
        for (int64_t i = 0; i < dk * dv; i++) dS0[i] = gn * dS[i], sd += S0[i] * dS[i];
        dG[n - 1] += gn * sd;
        for (int64_t j = 0; j < n; j++) {
            const REAL e = D[(n - 1) * C + j];
            const REAL *kj = kc + j * dk, *uj = U + j * dv;
            FN(vec_state)(dk, dv, kj, dS, 1, vec); /* dS^T k_j */
            REAL de = 0;
            for (int64_t x = 0; x < dv; x++) dU[j * dv + x] += e * vec[x], de += vec[x] * uj[x];
            dG[n - 1] += e * de;
            dG[j] -= e * de;
            REAL *dkj = dkc + j * dk;
            for (int64_t x = 0; x < dv; x++) { /* dk_j += e dS u_j */
                const REAL ux = e * uj[x];
                const REAL *d = dST + x * dk;
                for (int64_t a = 0; a < dk; a++) dkj[a] += ux * d[a];
            }
        }
        /* O = diag(gamma) Q S0 + P U */
        for (int64_t i = 0; doc && i < n; i++) {
            const REAL *doi = doc + i * dv, *qi = qc + i * dk;
            REAL *dqi = dqc + i * dk;
            REAL dgq = 0;
            for (int64_t x = 0; x < dv; x++) dgq += doi[x] * QS[i * dv + x], vec[x] = gam[i] * doi[x];
            dG[i] += gam[i] * dgq;
            for (int64_t x = 0; x < dv; x++) { /* dq_i += S0 (gamma_i do_i) */
                const REAL vx = vec[x];
                const REAL *s = S0T + x * dk;
                for (int64_t a = 0; a < dk; a++) dqi[a] += vx * s[a];
            }
            for (int64_t a = 0; a < dk; a++) { /* dS0 += q_i (gamma_i do_i)^T */
                const REAL qa = qi[a];
                REAL *d = dS0 + a * dv;
                for (int64_t x = 0; x < dv; x++) d[x] += qa * vec[x];
            }
            for (int64_t j = 0; j <= i; j++) row[j] = 0; /* dP_ij = do_i . u_j */
            for (int64_t x = 0; x < dv; x++) {
                const REAL ox = doi[x];
                const REAL *ut = UT + x * C;
                for (int64_t j = 0; j <= i; j++) row[j] += ox * ut[j];
            }
            for (int64_t j = 0; j <= i; j++) {
                const REAL p = P[i * C + j], a = row[j] * D[i * C + j], t = row[j] * p;
                REAL *duj = dU + j * dv, *dkj = dkc + j * dk;
                const REAL *kj = kc + j * dk;
                for (int64_t x = 0; x < dv; x++) duj[x] += p * doi[x];
                for (int64_t e = 0; e < dk; e++) dqi[e] += a * kj[e], dkj[e] += a * qi[e];
                dG[i] += t;
                dG[j] -= t;
            }
        }
        /* (I + M) U = R: dR_s = dU_s - sum_{t>s} M_ts dR_t, M_ts = beta_t KKD_ts */
        for (int64_t s = n - 1; s >= 0; s--) {
            REAL *drs = dR + s * dv;
            for (int64_t x = 0; x < dv; x++) drs[x] = dU[s * dv + x];
            for (int64_t t = s + 1; t < n; t++) {
                const REAL m = bc[t] * KKD[t * C + s];
                const REAL *drt = dR + t * dv;
                for (int64_t x = 0; x < dv; x++) drs[x] -= m * drt[x];
            }
        }
        for (int64_t t = 0; t < n; t++) {
            const REAL *drt = dR + t * dv, *kt = kc + t * dk;
            REAL *dkt = dkc + t * dk;
            /* dM_ts = -dR_t . u_s for s < t */
            for (int64_t s = 0; s < t; s++) row[s] = 0;
            for (int64_t x = 0; x < dv; x++) {
                const REAL rx = drt[x];
                const REAL *ut = UT + x * C;
                for (int64_t s = 0; s < t; s++) row[s] -= rx * ut[s];
            }
            REAL db = 0;
            for (int64_t s = 0; s < t; s++) {
                const REAL dm = row[s], kkd = KKD[t * C + s], mm = dm * bc[t] * kkd, dkk = dm * bc[t] * D[t * C + s];
                const REAL *ks = kc + s * dk;
                REAL *dks = dkc + s * dk;
                db += dm * kkd;
                dG[t] += mm;
                dG[s] -= mm;
                for (int64_t e = 0; e < dk; e++) dkt[e] += dkk * ks[e], dks[e] += dkk * kt[e];
            }
            /* R_t = beta_t (v_t - gamma_t S0^T k_t) */
            const REAL b = bc[t], gt = gam[t];
            REAL rdot = 0, ksdot = 0;
            for (int64_t x = 0; x < dv; x++) {
                rdot += drt[x] * (vc[t * dv + x] - gt * KS[t * dv + x]);
                ksdot += drt[x] * KS[t * dv + x];
                dvc[t * dv + x] = b * drt[x];
                vec2[x] = -b * gt * drt[x]; /* dKS_t */
            }
            dbc[t] += db + rdot;
            dG[t] -= gt * b * ksdot;
            for (int64_t x = 0; x < dv; x++) { /* dk_t += S0 dKS_t */
                const REAL vx = vec2[x];
                const REAL *s = S0T + x * dk;
                for (int64_t a = 0; a < dk; a++) dkt[a] += vx * s[a];
            }
            for (int64_t a = 0; a < dk; a++) { /* dS0 += k_t dKS_t^T */
                const REAL ka = kt[a];
                REAL *d = dS0 + a * dv;
                for (int64_t x = 0; x < dv; x++) d[x] += ka * vec2[x];
            }
        }
        REAL acc = 0; /* dg_s = sum_{t>=s} dG_t */
        for (int64_t s = n - 1; s >= 0; s--) acc += dG[s], dg[t0 + s] = acc;
        memcpy(dS, dS0, sizeof(REAL) * (size_t)(dk * dv));
    }
    if (ds0) memcpy(ds0, dS, sizeof(REAL) * (size_t)(dk * dv));
}
