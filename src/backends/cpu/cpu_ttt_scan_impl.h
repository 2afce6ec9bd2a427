/* The TTT-Linear scan's CPU kernels for one real type, included twice by cpu_ttt_scan.c with
 * R (float or double) and SFX (the name suffix) defined. The math is stated in
 * src/composed/ttt_scan.c; the comments here only name its steps. One call of scan_fwd / scan_bwd
 * handles one (batch, head): W [d, d] and c [d] (the bias) live in the caller's scratch while the
 * mini-batches go by. Row statistics of the layer norms are summed in double; the rest in R. */

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SFX)

/* Sums in eight independent lanes, so they vectorize (a plain loop is one serial chain of adds: the
 * compiler keeps their order without -ffast-math); the lanes then add in order. */
static R FN(dot)(const R *restrict a, const R *restrict b, int64_t n) {
    R lane[8] = {0}, s = 0;
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int e = 0; e < 8; e++) lane[e] += a[j + e] * b[j + e];
    for (int e = 0; e < 8; e++) s += lane[e];
    for (; j < n; j++) s += a[j] * b[j];
    return s;
}

/* sum (a - ca)(b - cb) in double (b NULL: sum (a - ca)) */
static double FN(dotd)(const R *restrict a, double ca, const R *restrict b, double cb, int64_t n) {
    double lane[8] = {0}, s = 0;
    int64_t j = 0;
    if (b) {
        for (; j + 8 <= n; j += 8)
            for (int e = 0; e < 8; e++) lane[e] += ((double)a[j + e] - ca) * ((double)b[j + e] - cb);
        for (; j < n; j++) s += ((double)a[j] - ca) * ((double)b[j] - cb);
    } else {
        for (; j + 8 <= n; j += 8)
            for (int e = 0; e < 8; e++) lane[e] += (double)a[j + e] - ca;
        for (; j < n; j++) s += (double)a[j] - ca;
    }
    for (int e = 0; e < 8; e++) s += lane[e];
    return s;
}

/* One row of the inner loss's gradient at z (LN with gain gam and bias bet against target v - k):
 * writes xh (the normalized z), gx = gam (y - t) and gz; returns rstd. */
static double FN(ln_l2_row)(const R *z, const R *v, const R *k, const R *gam, const R *bet, R *restrict xh,
                            R *restrict gx, R *restrict gz, int64_t d, double eps) {
    const double mean = FN(dotd)(z, 0, NULL, 0, d) / (double)d;
    const double rstd = 1.0 / sqrt(FN(dotd)(z, mean, z, mean, d) / (double)d + eps);
    for (int64_t j = 0; j < d; j++) {
        xh[j] = (R)(((double)z[j] - mean) * rstd);
        gx[j] = gam[j] * (gam[j] * xh[j] + bet[j] - (v[j] - k[j]));
    }
    const double m1 = FN(dotd)(gx, 0, NULL, 0, d) / (double)d, m2 = FN(dotd)(gx, 0, xh, 0, d) / (double)d;
    for (int64_t j = 0; j < d; j++) gz[j] = (R)(rstd * (gx[j] - m1 - xh[j] * m2));
    return rstd;
}

/* xh = LN(z) without affine; returns rstd */
static double FN(ln_row)(const R *z, R *restrict xh, int64_t d, double eps) {
    const double mean = FN(dotd)(z, 0, NULL, 0, d) / (double)d;
    const double rstd = 1.0 / sqrt(FN(dotd)(z, mean, z, mean, d) / (double)d + eps);
    for (int64_t j = 0; j < d; j++) xh[j] = (R)(((double)z[j] - mean) * rstd);
    return rstd;
}

/* z[i, :] = c + x[i, :] W for bs rows (c NULL: zero), W [din, dout]: row a of W outermost, so W is read once per call
 * (bs times from L2 otherwise, at the MLP's d x 4d) while the bs rows of z stay in L1 */
static void FN(rows_times)(R *restrict z, const R *restrict x, const R *restrict W, const R *restrict c, int64_t bs,
                           int64_t din, int64_t dout) {
    for (int64_t i = 0; i < bs; i++)
        if (c) memcpy(z + i * dout, c, sizeof(R) * (size_t)dout);
        else memset(z + i * dout, 0, sizeof(R) * (size_t)dout);
    for (int64_t a = 0; a < din; a++) {
        const R *wa = W + a * dout;
        for (int64_t i = 0; i < bs; i++) {
            const R xa = x[i * din + a];
            R *zi = z + i * dout;
            for (int64_t j = 0; j < dout; j++) zi[j] += xa * wa[j];
        }
    }
}

static void FN(rows_times_w)(R *restrict z, const R *restrict x, const R *restrict W, const R *restrict c, int64_t bs,
                             int64_t d) {
    FN(rows_times)(z, x, W, c, bs, d, d);
}

/* One layer of the dual form over a mini-batch: M[i, j] = tok_i e_j (x_i . keys_j + 1) for j <= i, and
 * z[i, :] = c + x[i, :] W - sum_{j <= i} M[i, j] g[j, :], with x, keys [bs, din], W [din, dout], g [bs, dout]
 * (S != NULL: also S[i, j] = x_i . keys_j + 1). */
static void FN(dual_rows)(R *restrict z, R *restrict M, R *restrict S, const R *x, const R *keys, const R *W, const R *c,
                          const R *g, const R *tok, const R *e, int64_t bs, int64_t din, int64_t dout) {
    for (int64_t i = 0; i < bs; i++)
        for (int64_t j = 0; j <= i; j++) {
            const R sij = FN(dot)(x + i * din, keys + j * din, din) + 1;
            M[i * bs + j] = tok[i] * e[j] * sij;
            if (S) S[i * bs + j] = sij; /* for the backward */
        }
    FN(rows_times)(z, x, W, c, bs, din, dout);
    for (int64_t i = 0; i < bs; i++) {
        R *zi = z + i * dout;
        for (int64_t j = 0; j <= i; j++) {
            const R m = M[i * bs + j], *gj = g + j * dout;
            for (int64_t a = 0; a < dout; a++) zi[a] -= m * gj[a];
        }
    }
}

/* The mini-batch's update of one layer: W -= tl (e o keys)^T g, c -= tl e^T g (W [din, dout]) */
static void FN(step_rows)(R *restrict W, R *restrict c, const R *keys, const R *g, const R *e, R tl, int64_t bs,
                          int64_t din, int64_t dout) {
    for (int64_t a = 0; a < din; a++) { /* W's rows outermost: W is read and written once */
        R *wa = W + a * dout;
        for (int64_t i = 0; i < bs; i++) {
            const R ka = tl * e[i] * keys[i * din + a], *gi = g + i * dout;
            for (int64_t j = 0; j < dout; j++) wa[j] -= ka * gi[j];
        }
    }
    for (int64_t i = 0; i < bs; i++) {
        const R s = tl * e[i], *gi = g + i * dout;
        for (int64_t j = 0; j < dout; j++) c[j] -= s * gi[j];
    }
}

/* Scratch of one (batch, head), in elements of R: see the layout in scan_fwd / scan_bwd. */
static int64_t FN(scratch_elems)(int64_t bs, int64_t d) { return 3 * d * d + 12 * bs * d + 3 * bs * bs + 4 * d + 2 * bs; }

/* dst[j, a] = src[a, j] for a d x d matrix: the transposed products below then run as rows times a
 * matrix (contiguous inner loops that vectorize) instead of dot products (a serial chain each) */
static void FN(transpose)(R *restrict dst, const R *restrict src, int64_t d) {
    for (int64_t a = 0; a < d; a++)
        for (int64_t j = 0; j < d; j++) dst[j * d + a] = src[a * d + j];
}

/* y[:] += sum_j x[j] M[j, :] for a d x d matrix M */
static void FN(acc_row_times)(R *restrict y, const R *restrict x, const R *restrict Mt, R scale, int64_t d) {
    for (int64_t j = 0; j < d; j++) {
        const R xj = scale * x[j], *mj = Mt + j * d;
        for (int64_t a = 0; a < d; a++) y[a] += xj * mj[a];
    }
}

/* Forward over N mini-batches of one (batch, head). Pointers at the (batch, head)'s first element. */
static void FN(scan_fwd)(R *out, R *w_out, R *b_out, R *w_st, R *b_st, const R *q, const R *k, const R *v,
                         const R *eta, const R *tok, const R *gam, const R *bet, const R *w0, const R *b0, int64_t N,
                         int64_t bs, int64_t d, double eps, R *scr) {
    R *W = scr, *c = W + d * d, *Z = c + d, *G = Z + bs * d, *XH = G + bs * d, *GX = XH + bs * d, *M = GX + bs * d;
    memcpy(W, w0, sizeof(R) * (size_t)(d * d));
    memcpy(c, b0, sizeof(R) * (size_t)d);
    const R tl = tok[bs - 1];
    for (int64_t n = 0; n < N; n++) {
        const R *Q = q + n * bs * d, *K = k + n * bs * d, *V = v + n * bs * d, *e = eta + n * bs;
        R *O = out + n * bs * d;
        if (w_st) {
            memcpy(w_st + n * d * d, W, sizeof(R) * (size_t)(d * d));
            memcpy(b_st + n * d, c, sizeof(R) * (size_t)d);
        }
        /* the inner gradients at W: z1 = K W + c, G = d loss / d z1 */
        FN(rows_times_w)(Z, K, W, c, bs, d);
        for (int64_t i = 0; i < bs; i++)
            FN(ln_l2_row)(Z + i * d, V + i * d, K + i * d, gam, bet, XH + i * d, GX + i * d, G + i * d, d, eps);
        /* M[i, j] = tok_i eta_j (q_i . k_j + 1), j <= i;  zq = Q W + c - M G */
        FN(dual_rows)(Z, M, NULL, Q, K, W, c, G, tok, e, bs, d, d);
        for (int64_t i = 0; i < bs; i++) { /* out = q + LN(zq) gam + bet */
            FN(ln_row)(Z + i * d, XH + i * d, d, eps);
            for (int64_t a = 0; a < d; a++) O[i * d + a] = Q[i * d + a] + XH[i * d + a] * gam[a] + bet[a];
        }
        FN(step_rows)(W, c, K, G, e, tl, bs, d, d); /* W -= tok_b (eta o K)^T G;  c -= tok_b eta^T G */
    }
    memcpy(w_out, W, sizeof(R) * (size_t)(d * d));
    memcpy(b_out, c, sizeof(R) * (size_t)d);
}

/* The backward of ln_l2_row for one row, from u = the gradient of its gz: writes dz (the gradient of z),
 * adds to dv, dk (through the target v - k), dgam and dbet. tmp: d elements. */
static void FN(ln_l2_bwd_row)(R *restrict dz, R *restrict dv, R *restrict dk, R *restrict dgam, R *restrict dbet,
                              R *restrict tmp, const R *u, const R *xh, const R *gx, const R *gz, double rstd, const R *v,
                              const R *k, const R *gam, const R *bet, int64_t d) {
    const double inv_d = 1.0 / (double)d;
    const double mu = FN(dotd)(u, 0, NULL, 0, d) * inv_d, mux = FN(dotd)(u, 0, xh, 0, d) * inv_d;
    const double m2 = FN(dotd)(gx, 0, xh, 0, d) * inv_d, ugz = FN(dotd)(u, 0, gz, 0, d);
    const double drs = ugz / rstd;
    R *dxh = tmp;
    for (int64_t a = 0; a < d; a++) {
        const R da = (R)(rstd * (u[a] - mu - xh[a] * mux));
        const R ymt = gam[a] * xh[a] + bet[a] - (v[a] - k[a]);
        dxh[a] = (R)(-rstd * (u[a] * m2 + gx[a] * mux)) + da * gam[a] * gam[a];
        dgam[a] += da * ymt + da * gam[a] * xh[a];
        dbet[a] += da * gam[a];
        const R dt = -da * gam[a]; /* the target v - k */
        dv[a] += dt;
        dk[a] -= dt;
    }
    const double mdx = FN(dotd)(dxh, 0, NULL, 0, d) * inv_d, mdxx = FN(dotd)(dxh, 0, xh, 0, d) * inv_d;
    for (int64_t a = 0; a < d; a++) dz[a] = (R)(rstd * (dxh[a] - mdx - xh[a] * mdxx) - drs * rstd * rstd * xh[a] * inv_d);
}

/* The backward of out = q + LN(z) gam + bet for one row (xh = LN(z), rstd): dq = dout, the gradient of z
 * into dz, dgam and dbet added to. */
static void FN(ln_out_bwd_row)(R *restrict dz, R *restrict dq, R *restrict dgam, R *restrict dbet, const R *dout,
                               const R *xh, double rstd, const R *gam, int64_t d) {
    const double inv_d = 1.0 / (double)d;
    for (int64_t a = 0; a < d; a++) {
        dq[a] = dout[a];
        dgam[a] += dout[a] * xh[a];
        dbet[a] += dout[a];
        dz[a] = dout[a] * gam[a];
    }
    const double m1 = FN(dotd)(dz, 0, NULL, 0, d) * inv_d, m2 = FN(dotd)(dz, 0, xh, 0, d) * inv_d;
    for (int64_t a = 0; a < d; a++) dz[a] = (R)(rstd * (dz[a] - m1 - xh[a] * m2));
}

/* Reverse scan of one (batch, head). dw_in / db_in: the gradient of the final state (NULL: zero). */
static void FN(scan_bwd)(R *dq, R *dk, R *dv, R *deta, R *dtok, R *dgam, R *dbet, R *dW, R *dc, const R *dout,
                         const R *dw_in, const R *db_in, const R *q, const R *k, const R *v, const R *eta,
                         const R *tok, const R *gam, const R *bet, const R *w_st, const R *b_st, int64_t N, int64_t bs,
                         int64_t d, double eps, R *scr) {
    R *Z1 = scr, *XH1 = Z1 + bs * d, *GX = XH1 + bs * d, *G = GX + bs * d, *ZQ = G + bs * d, *XHQ = ZQ + bs * d;
    R *DZQ = XHQ + bs * d, *DG = DZQ + bs * d, *U = DG + bs * d, *DZ1 = U + bs * d, *S = DZ1 + bs * d, *M = S + bs * bs;
    R *DM = M + bs * bs, *RS1 = DM + bs * bs, *RSQ = RS1 + bs, *tmp = RSQ + bs, *WT = tmp + d, *DWT = WT + d * d;
    if (dw_in) memcpy(dW, dw_in, sizeof(R) * (size_t)(d * d));
    else memset(dW, 0, sizeof(R) * (size_t)(d * d));
    if (db_in) memcpy(dc, db_in, sizeof(R) * (size_t)d);
    else memset(dc, 0, sizeof(R) * (size_t)d);
    memset(dgam, 0, sizeof(R) * (size_t)d);
    memset(dbet, 0, sizeof(R) * (size_t)d);
    memset(dtok, 0, sizeof(R) * (size_t)bs);
    const R tl = tok[bs - 1];
    for (int64_t n = N - 1; n >= 0; n--) {
        const int64_t o = n * bs * d;
        const R *Q = q + o, *K = k + o, *V = v + o, *e = eta + n * bs, *DO = dout + o;
        const R *W = w_st + n * d * d, *c = b_st + n * d;
        R *DQ = dq + o, *DK = dk + o, *DV = dv + o, *DE = deta + n * bs;
        /* recompute the forward of this mini-batch */
        FN(rows_times_w)(Z1, K, W, c, bs, d);
        for (int64_t i = 0; i < bs; i++)
            RS1[i] = (R)FN(ln_l2_row)(Z1 + i * d, V + i * d, K + i * d, gam, bet, XH1 + i * d, GX + i * d, G + i * d, d, eps);
        for (int64_t i = 0; i < bs; i++)
            for (int64_t j = 0; j <= i; j++) {
                S[i * bs + j] = FN(dot)(Q + i * d, K + j * d, d) + 1;
                M[i * bs + j] = tok[i] * e[j] * S[i * bs + j];
            }
        FN(rows_times_w)(ZQ, Q, W, c, bs, d);
        for (int64_t i = 0; i < bs; i++) {
            R *zi = ZQ + i * d;
            for (int64_t j = 0; j <= i; j++) {
                const R m = M[i * bs + j], *gj = G + j * d;
                for (int64_t a = 0; a < d; a++) zi[a] -= m * gj[a];
            }
            RSQ[i] = (R)FN(ln_row)(zi, XHQ + i * d, d, eps);
        }
        /* out = q + LN(zq) gam + bet */
        for (int64_t i = 0; i < bs; i++)
            FN(ln_out_bwd_row)(DZQ + i * d, DQ + i * d, dgam, dbet, DO + i * d, XHQ + i * d, RSQ[i], gam, d);
        /* the state update W' = W - tl (eta o K)^T G, c' = c - tl eta^T G, with dW, dc the gradient of W', c':
         * U_i = K_i dW' + dc' */
        for (int64_t i = 0; i < bs; i++) {
            R *u = U + i * d;
            for (int64_t j = 0; j < d; j++) u[j] = dc[j];
            for (int64_t a = 0; a < d; a++) {
                const R ka = K[i * d + a], *wa = dW + a * d;
                for (int64_t j = 0; j < d; j++) u[j] += ka * wa[j];
            }
        }
        FN(transpose)(WT, W, d);
        FN(transpose)(DWT, dW, d);
        for (int64_t i = 0; i < bs; i++) {
            const R *u = U + i * d, *gi = G + i * d, s = tl * e[i];
            const R ug = FN(dot)(u, gi, d);
            DE[i] = -tl * ug;
            dtok[bs - 1] -= e[i] * ug;
            for (int64_t a = 0; a < d; a++) {
                DG[i * d + a] = -s * u[a];
                DK[i * d + a] = 0;
                DV[i * d + a] = 0;
            }
            FN(acc_row_times)(DK + i * d, gi, DWT, -s, d); /* dK_i = -s G_i dW'^T */
        }
        /* zq = Q W + c - M G */
        for (int64_t i = 0; i < bs; i++)
            for (int64_t j = 0; j <= i; j++) DM[i * bs + j] = -FN(dot)(DZQ + i * d, G + j * d, d);
        for (int64_t i = 0; i < bs; i++)
            for (int64_t j = 0; j <= i; j++) {
                const R dm = DM[i * bs + j], ds = dm * tok[i] * e[j];
                dtok[i] += dm * e[j] * S[i * bs + j];
                DE[j] += dm * tok[i] * S[i * bs + j];
                const R m = M[i * bs + j];
                for (int64_t a = 0; a < d; a++) {
                    DQ[i * d + a] += ds * K[j * d + a];
                    DK[j * d + a] += ds * Q[i * d + a];
                    DG[j * d + a] -= m * DZQ[i * d + a];
                }
            }
        for (int64_t i = 0; i < bs; i++) FN(acc_row_times)(DQ + i * d, DZQ + i * d, WT, 1, d); /* dQ += dzq W^T */
        /* G = the inner loss's gradient at z1 (LN and L2 differentiated again) */
        for (int64_t i = 0; i < bs; i++)
            FN(ln_l2_bwd_row)(DZ1 + i * d, DV + i * d, DK + i * d, dgam, dbet, tmp, DG + i * d, XH1 + i * d, GX + i * d,
                              G + i * d, RS1[i], V + i * d, K + i * d, gam, bet, d);
        /* z1 = K W + c */
        for (int64_t i = 0; i < bs; i++) FN(acc_row_times)(DK + i * d, DZ1 + i * d, WT, 1, d); /* dK += dz1 W^T */
        /* the gradient of W, c: the later state's, plus Q^T dzq + K^T dz1 */
        for (int64_t i = 0; i < bs; i++) {
            const R *dzq = DZQ + i * d, *dz1 = DZ1 + i * d;
            for (int64_t a = 0; a < d; a++) {
                const R qa = Q[i * d + a], ka = K[i * d + a];
                R *wa = dW + a * d;
                for (int64_t j = 0; j < d; j++) wa[j] += qa * dzq[j] + ka * dz1[j];
            }
            for (int64_t j = 0; j < d; j++) dc[j] += dzq[j] + dz1[j];
        }
    }
}

/* dst [cols, rows] = src [rows, cols]^T */
static void FN(transpose_rect)(R *restrict dst, const R *restrict src, int64_t rows, int64_t cols) {
    for (int64_t a = 0; a < rows; a++)
        for (int64_t j = 0; j < cols; j++) dst[j * rows + a] = src[a * cols + j];
}

/* gelu (tanh approximation) of n values; with dg != NULL also its derivative (one tanh for both) */
static void FN(gelu_rows)(R *restrict y, R *restrict dg, const R *restrict z, int64_t n) {
    const R c = (R)0.7978845608028654, k = (R)0.044715;
    for (int64_t i = 0; i < n; i++) {
        const R x = z[i], t = TANH(c * (x + k * x * x * x));
        y[i] = (R)0.5 * x * (1 + t);
        if (dg) dg[i] = (R)0.5 * (1 + t) + (R)0.5 * x * (1 - t * t) * c * (1 + 3 * k * x * x);
    }
}

/* Scratch of one (batch, head) of the MLP scan, in elements of R: see the layout in mlp_scan_fwd. */
static int64_t FN(mlp_scratch_elems)(int64_t bs, int64_t d, int64_t F) {
    return 3 * d * F + F + d + 5 * bs * F + 5 * bs * d + bs * bs;
}

/* TTT-MLP's forward over N mini-batches of one (batch, head) (src/composed/ttt_scan.c's MLP section):
 * W1 [d, F], b1 [F], W2 [F, d], b2 [d] live in the scratch, one after another, as st (NULL: not kept) keeps
 * them at the start of every mini-batch. Pointers at the (batch, head)'s first element. */
static void FN(mlp_scan_fwd)(R *out, R *w1_out, R *b1_out, R *w2_out, R *b2_out, R *st, const R *q, const R *k, const R *v,
                             const R *eta, const R *tok, const R *gam, const R *bet, const R *w1, const R *b1,
                             const R *w2, const R *b2, int64_t N, int64_t bs, int64_t d, int64_t F, double eps, R *scr) {
    R *W1 = scr, *c1 = W1 + d * F, *W2 = c1 + F, *c2 = W2 + F * d;
    R *Z1 = c2 + d, *X2 = Z1 + bs * F, *G1 = X2 + bs * F, *ZB1 = G1 + bs * F, *XB = ZB1 + bs * F;
    R *Z2 = XB + bs * F, *G2 = Z2 + bs * d, *XH = G2 + bs * d, *GX = XH + bs * d, *ZB2 = GX + bs * d, *M = ZB2 + bs * d;
    R *W2T = M + bs * bs;
    memcpy(W1, w1, sizeof(R) * (size_t)(d * F));
    memcpy(c1, b1, sizeof(R) * (size_t)F);
    memcpy(W2, w2, sizeof(R) * (size_t)(F * d));
    memcpy(c2, b2, sizeof(R) * (size_t)d);
    const R tl = tok[bs - 1];
    for (int64_t n = 0; n < N; n++) {
        const R *Q = q + n * bs * d, *K = k + n * bs * d, *V = v + n * bs * d, *e = eta + n * bs;
        R *O = out + n * bs * d;
        if (st) memcpy(st + n * (2 * d * F + F + d), W1, sizeof(R) * (size_t)(2 * d * F + F + d)); /* W1 b1 W2 b2 */
        /* the inner gradients at the mini-batch's weights: z1 = K W1 + b1, x2 = gelu(z1), G2 at z2 = x2 W2 + b2 */
        FN(rows_times)(Z1, K, W1, c1, bs, d, F);
        FN(gelu_rows)(X2, G1, Z1, bs * F); /* G1 holds gelu'(z1) until the product below */
        FN(rows_times)(Z2, X2, W2, c2, bs, F, d);
        for (int64_t i = 0; i < bs; i++)
            FN(ln_l2_row)(Z2 + i * d, V + i * d, K + i * d, gam, bet, XH + i * d, GX + i * d, G2 + i * d, d, eps);
        /* G1 = (G2 W2^T) o gelu'(z1), W2^T's rows contiguous (ZB1 is free until the dual form) */
        FN(transpose_rect)(W2T, W2, F, d);
        FN(rows_times)(ZB1, G2, W2T, NULL, bs, d, F);
        for (int64_t i = 0; i < bs * F; i++) G1[i] *= ZB1[i];
        /* the dual form, layer 1 on Q, layer 2 on gelu(zb1) */
        FN(dual_rows)(ZB1, M, NULL, Q, K, W1, c1, G1, tok, e, bs, d, F);
        FN(gelu_rows)(XB, NULL, ZB1, bs * F);
        FN(dual_rows)(ZB2, M, NULL, XB, X2, W2, c2, G2, tok, e, bs, F, d);
        for (int64_t i = 0; i < bs; i++) { /* out = q + LN(zb2) gam + bet */
            FN(ln_row)(ZB2 + i * d, XH + i * d, d, eps);
            for (int64_t a = 0; a < d; a++) O[i * d + a] = Q[i * d + a] + XH[i * d + a] * gam[a] + bet[a];
        }
        FN(step_rows)(W1, c1, K, G1, e, tl, bs, d, F);
        FN(step_rows)(W2, c2, X2, G2, e, tl, bs, F, d);
    }
    memcpy(w1_out, W1, sizeof(R) * (size_t)(d * F));
    memcpy(b1_out, c1, sizeof(R) * (size_t)F);
    memcpy(w2_out, W2, sizeof(R) * (size_t)(F * d));
    memcpy(b2_out, c2, sizeof(R) * (size_t)d);
}

/* z[i, :] += x[i, :] W for bs rows, W [din, dout] (W's rows outermost, as rows_times) */
static void FN(rows_times_acc)(R *restrict z, const R *restrict x, const R *restrict W, int64_t bs, int64_t din,
                               int64_t dout) {
    for (int64_t a = 0; a < din; a++) {
        const R *wa = W + a * dout;
        for (int64_t i = 0; i < bs; i++) {
            const R xa = x[i * din + a];
            R *zi = z + i * dout;
            for (int64_t j = 0; j < dout; j++) zi[j] += xa * wa[j];
        }
    }
}

/* dW += A^T B and dc += the sum of B's rows (dc NULL: not), A [bs, din], B [bs, dout] */
static void FN(acc_outer)(R *restrict dW, R *restrict dc, const R *A, const R *B, int64_t bs, int64_t din, int64_t dout) {
    for (int64_t a = 0; a < din; a++) {
        R *wa = dW + a * dout;
        for (int64_t i = 0; i < bs; i++) {
            const R x = A[i * din + a], *bi = B + i * dout;
            for (int64_t j = 0; j < dout; j++) wa[j] += x * bi[j];
        }
    }
    if (dc)
        for (int64_t i = 0; i < bs; i++)
            for (int64_t j = 0; j < dout; j++) dc[j] += B[i * dout + j];
}

/* gelu'' of n values: (1 - t^2) u' + x/2 (1 - t^2) (u'' - 2 t u'^2), t = tanh(u), u = c (x + k x^3) */
static void FN(gelu_grad2_rows)(R *restrict y, const R *restrict z, int64_t n) {
    const R c = (R)0.7978845608028654, k = (R)0.044715;
    for (int64_t i = 0; i < n; i++) {
        const R x = z[i], t = TANH(c * (x + k * x * x * x)), s = 1 - t * t, u1 = c * (1 + 3 * k * x * x);
        y[i] = s * u1 + (R)0.5 * x * s * (6 * c * k * x - 2 * t * u1 * u1);
    }
}

/* Scratch of one (batch, head) of the MLP backward, in elements of R: see the layout in mlp_scan_bwd. */
static int64_t FN(mlp_bwd_scratch_elems)(int64_t bs, int64_t d, int64_t F) {
    return 4 * d * F + 15 * bs * F + 11 * bs * d + 5 * bs * bs + 2 * bs + d;
}

/* TTT-MLP's reverse scan of one (batch, head): each mini-batch's forward recomputed from its stored weights
 * st, then the gradients of its inputs and of the weights at its start (dW1 .. dc2, which hold the gradient
 * of the final weights first: dfin, NULL entries zero). The steps are mlp_scan_fwd's in reverse. */
static void FN(mlp_scan_bwd)(R *dq, R *dk, R *dv, R *deta, R *dtok, R *dgam, R *dbet, R *dW1, R *dc1, R *dW2, R *dc2,
                             const R *dout, const R *const *dfin, const R *q, const R *k, const R *v, const R *eta,
                             const R *tok, const R *gam, const R *bet, const R *st, int64_t N, int64_t bs, int64_t d,
                             int64_t F, double eps, R *scr) {
    R *W1T = scr, *W2T = W1T + F * d, *dW1T = W2T + d * F, *dW2T = dW1T + F * d, *p = dW2T + d * F;
    R *Z1 = p, *X2 = Z1 + bs * F, *D1 = X2 + bs * F, *P = D1 + bs * F, *G1 = P + bs * F, *ZB1 = G1 + bs * F;
    R *XB = ZB1 + bs * F, *DB = XB + bs * F, *dXB = DB + bs * F, *DZB1 = dXB + bs * F, *dG1 = DZB1 + bs * F;
    R *dX2 = dG1 + bs * F, *dZ1 = dX2 + bs * F, *SG1 = dZ1 + bs * F, *U1 = SG1 + bs * F;
    R *Z2 = U1 + bs * F, *XH2 = Z2 + bs * d, *GX2 = XH2 + bs * d, *G2 = GX2 + bs * d, *ZB2 = G2 + bs * d;
    R *XHB = ZB2 + bs * d, *DZB2 = XHB + bs * d, *dG2 = DZB2 + bs * d, *dZ2 = dG2 + bs * d, *SG2 = dZ2 + bs * d;
    R *U2 = SG2 + bs * d, *S1 = U2 + bs * d, *M1 = S1 + bs * bs, *S2 = M1 + bs * bs, *M2 = S2 + bs * bs;
    R *DM = M2 + bs * bs, *RS2 = DM + bs * bs, *RSB = RS2 + bs, *tmp = RSB + bs;
    R *dst[4] = {dW1, dc1, dW2, dc2};
    const int64_t sz[4] = {d * F, F, F * d, d};
    for (int i = 0; i < 4; i++)
        if (dfin[i]) memcpy(dst[i], dfin[i], sizeof(R) * (size_t)sz[i]);
        else memset(dst[i], 0, sizeof(R) * (size_t)sz[i]);
    memset(dgam, 0, sizeof(R) * (size_t)d);
    memset(dbet, 0, sizeof(R) * (size_t)d);
    memset(dtok, 0, sizeof(R) * (size_t)bs);
    const R tl = tok[bs - 1];
    for (int64_t n = N - 1; n >= 0; n--) {
        const int64_t o = n * bs * d;
        const R *Q = q + o, *K = k + o, *V = v + o, *e = eta + n * bs, *DO = dout + o;
        const R *W1 = st + n * (2 * d * F + F + d), *c1 = W1 + d * F, *W2 = c1 + F, *c2 = W2 + F * d;
        R *DQ = dq + o, *DK = dk + o, *DV = dv + o, *DE = deta + n * bs;
        /* recompute the mini-batch's forward */
        FN(rows_times)(Z1, K, W1, c1, bs, d, F);
        FN(gelu_rows)(X2, D1, Z1, bs * F);
        FN(rows_times)(Z2, X2, W2, c2, bs, F, d);
        for (int64_t i = 0; i < bs; i++)
            RS2[i] = (R)FN(ln_l2_row)(Z2 + i * d, V + i * d, K + i * d, gam, bet, XH2 + i * d, GX2 + i * d, G2 + i * d, d, eps);
        FN(transpose_rect)(W2T, W2, F, d);
        FN(transpose_rect)(W1T, W1, d, F);
        FN(rows_times)(P, G2, W2T, NULL, bs, d, F);
        for (int64_t i = 0; i < bs * F; i++) G1[i] = P[i] * D1[i];
        FN(dual_rows)(ZB1, M1, S1, Q, K, W1, c1, G1, tok, e, bs, d, F);
        FN(gelu_rows)(XB, DB, ZB1, bs * F);
        FN(dual_rows)(ZB2, M2, S2, XB, X2, W2, c2, G2, tok, e, bs, F, d);
        for (int64_t i = 0; i < bs; i++) RSB[i] = (R)FN(ln_row)(ZB2 + i * d, XHB + i * d, d, eps);
        /* out = q + LN(zb2) gam + bet */
        for (int64_t i = 0; i < bs; i++)
            FN(ln_out_bwd_row)(DZB2 + i * d, DQ + i * d, dgam, dbet, DO + i * d, XHB + i * d, RSB[i], gam, d);
        /* the weight updates, with dW1 .. dc2 the gradients of the next mini-batch's weights:
         * U1_i = K_i dW1' + dc1', U2_i = x2_i dW2' + dc2' */
        FN(rows_times)(U1, K, dW1, dc1, bs, d, F);
        FN(rows_times)(U2, X2, dW2, dc2, bs, F, d);
        for (int64_t i = 0; i < bs; i++) {
            const R s = tl * e[i];
            const R ug = FN(dot)(U1 + i * F, G1 + i * F, F) + FN(dot)(U2 + i * d, G2 + i * d, d);
            DE[i] = -tl * ug;
            dtok[bs - 1] -= e[i] * ug;
            for (int64_t f = 0; f < F; f++) {
                dG1[i * F + f] = -s * U1[i * F + f];
                SG1[i * F + f] = -s * G1[i * F + f];
                dX2[i * F + f] = 0;
            }
            for (int64_t a = 0; a < d; a++) {
                dG2[i * d + a] = -s * U2[i * d + a];
                SG2[i * d + a] = -s * G2[i * d + a];
                DK[i * d + a] = 0;
                DV[i * d + a] = 0;
            }
        }
        FN(transpose_rect)(dW1T, dW1, d, F);
        FN(transpose_rect)(dW2T, dW2, F, d);
        FN(rows_times_acc)(DK, SG1, dW1T, bs, F, d);  /* dK_i -= s G1_i dW1'^T */
        FN(rows_times_acc)(dX2, SG2, dW2T, bs, d, F); /* dx2_i -= s G2_i dW2'^T */
        /* zb2 = gelu(zb1) W2 + c2 - M2 G2, M2 = tok_i e_j S2 */
        FN(rows_times)(dXB, DZB2, W2T, NULL, bs, d, F);
        for (int64_t i = 0; i < bs; i++)
            for (int64_t j = 0; j <= i; j++) DM[i * bs + j] = -FN(dot)(DZB2 + i * d, G2 + j * d, d);
        for (int64_t i = 0; i < bs; i++)
            for (int64_t j = 0; j <= i; j++) {
                const R dm = DM[i * bs + j], ds = dm * tok[i] * e[j], m = M2[i * bs + j];
                dtok[i] += dm * e[j] * S2[i * bs + j];
                DE[j] += dm * tok[i] * S2[i * bs + j];
                for (int64_t f = 0; f < F; f++) {
                    dXB[i * F + f] += ds * X2[j * F + f];
                    dX2[j * F + f] += ds * XB[i * F + f];
                }
                for (int64_t a = 0; a < d; a++) dG2[j * d + a] -= m * DZB2[i * d + a];
            }
        for (int64_t i = 0; i < bs * F; i++) DZB1[i] = dXB[i] * DB[i]; /* gelu */
        /* zb1 = Q W1 + c1 - M1 G1, M1 = tok_i e_j S1 */
        FN(rows_times_acc)(DQ, DZB1, W1T, bs, F, d);
        for (int64_t i = 0; i < bs; i++)
            for (int64_t j = 0; j <= i; j++) DM[i * bs + j] = -FN(dot)(DZB1 + i * F, G1 + j * F, F);
        for (int64_t i = 0; i < bs; i++)
            for (int64_t j = 0; j <= i; j++) {
                const R dm = DM[i * bs + j], ds = dm * tok[i] * e[j], m = M1[i * bs + j];
                dtok[i] += dm * e[j] * S1[i * bs + j];
                DE[j] += dm * tok[i] * S1[i * bs + j];
                for (int64_t a = 0; a < d; a++) {
                    DQ[i * d + a] += ds * K[j * d + a];
                    DK[j * d + a] += ds * Q[i * d + a];
                }
                for (int64_t f = 0; f < F; f++) dG1[j * F + f] -= m * DZB1[i * F + f];
            }
        /* G1 = P o gelu'(z1), P = G2 W2^T (dW1 .. dc2 are no longer read as the next weights' gradients) */
        FN(gelu_grad2_rows)(dZ1, Z1, bs * F);
        for (int64_t i = 0; i < bs * F; i++) {
            dZ1[i] *= dG1[i] * P[i];
            SG1[i] = dG1[i] * D1[i]; /* dP */
        }
        FN(rows_times_acc)(dG2, SG1, W2, bs, F, d);
        FN(acc_outer)(dW2, NULL, SG1, G2, bs, F, d);
        /* G2 = the inner loss's gradient at z2 (LN and L2 differentiated again) */
        for (int64_t i = 0; i < bs; i++)
            FN(ln_l2_bwd_row)(dZ2 + i * d, DV + i * d, DK + i * d, dgam, dbet, tmp, dG2 + i * d, XH2 + i * d, GX2 + i * d,
                              G2 + i * d, RS2[i], V + i * d, K + i * d, gam, bet, d);
        /* z2 = x2 W2 + c2; x2 = gelu(z1); z1 = K W1 + c1; and zb2's, zb1's weights */
        FN(rows_times_acc)(dX2, dZ2, W2T, bs, d, F);
        FN(acc_outer)(dW2, dc2, X2, dZ2, bs, F, d);
        FN(acc_outer)(dW2, dc2, XB, DZB2, bs, F, d);
        for (int64_t i = 0; i < bs * F; i++) dZ1[i] += dX2[i] * D1[i];
        FN(rows_times_acc)(DK, dZ1, W1T, bs, F, d);
        FN(acc_outer)(dW1, dc1, K, dZ1, bs, d, F);
        FN(acc_outer)(dW1, dc1, Q, DZB1, bs, d, F);
    }
}

#undef FN
#undef CAT
#undef CAT_
