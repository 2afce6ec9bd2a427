/* One MTTT-MLP inner step's CPU kernels for one real type, included twice by cpu_mttt.c with R (float or
 * double), SFX (the name suffix) and EXP defined. The math, forward and backward, is derived in
 * src/composed/mttt_step.c; the comments here name its steps. One call handles one (batch, head) pair, its
 * intermediates (a few m x F matrices) in the caller's per-thread scratch. Row statistics of the LayerNorm
 * are summed in double, the rest in R. */

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SFX)

/* one register of GCC / Clang vector extensions: 32 bytes with AVX (TTT_NATIVE on such a machine), else 16 */
#ifdef __AVX__
#define VBYTES 32
#else
#define VBYTES 16
#endif
typedef R FN(vec) __attribute__((vector_size(VBYTES)));
#define VL ((int64_t)(VBYTES / sizeof(R)))

static inline FN(vec) FN(vload)(const R *p) {
    FN(vec) v;
    memcpy(&v, p, sizeof v); /* unaligned load */
    return v;
}
static inline void FN(vstore)(R *p, FN(vec) v) { memcpy(p, &v, sizeof v); }

/* C[M, N] = beta C + alpha A B for B row-major [K, N] and C row-major [M, N], where A's element (i, p) is
 * a[i * ras + p * pas] (A row-major [M, K]: ras = K, pas = 1; A stored transposed as [K, M]: ras = 1,
 * pas = M); beta is 0 or 1. Register-blocked: 6 rows x 2 vectors of C stay in registers over the K loop and
 * each B row is loaded once per 6 rows of C (12 FMAs for 2 loads and 6 broadcasts), which is what makes the
 * small products of one pair run near the FMA rate; cblas_sgemm on these sizes (m = 49, d = 32, F = 128)
 * spends more in its packing and calls than in its arithmetic. */
static void FN(gemm)(R *restrict c, const R *restrict a, int64_t ras, int64_t pas, const R *restrict b, int64_t M,
                     int64_t K, int64_t N, R alpha, int beta) {
    typedef FN(vec) V;
    int64_t j0 = 0;
    for (; j0 + 2 * VL <= N; j0 += 2 * VL) {
        int64_t i = 0;
        for (; i + 6 <= M; i += 6) {
            V acc[6][2];
            memset(acc, 0, sizeof acc);
            const R *ai = a + i * ras;
            for (int64_t p = 0; p < K; p++) {
                V b0 = FN(vload)(b + p * N + j0), b1 = FN(vload)(b + p * N + j0 + VL);
                KEEP_IN_REGISTER(b0);
                KEEP_IN_REGISTER(b1);
                const R *ap = ai + p * pas;
                for (int r = 0; r < 6; r++) {
                    const R ar = ap[r * ras];
                    acc[r][0] += ar * b0, acc[r][1] += ar * b1;
                }
            }
            for (int r = 0; r < 6; r++)
                for (int h = 0; h < 2; h++) {
                    R *cp = c + (i + r) * N + j0 + h * VL;
                    V v = alpha * acc[r][h];
                    if (beta) v += FN(vload)(cp);
                    FN(vstore)(cp, v);
                }
        }
        for (; i + 2 <= M; i += 2) {
            V c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0};
            for (int64_t p = 0; p < K; p++) {
                V b0 = FN(vload)(b + p * N + j0), b1 = FN(vload)(b + p * N + j0 + VL);
                const R a0 = a[i * ras + p * pas], a1 = a[(i + 1) * ras + p * pas];
                c00 += a0 * b0, c01 += a0 * b1, c10 += a1 * b0, c11 += a1 * b1;
            }
            V acc[2][2] = {{c00, c01}, {c10, c11}};
            for (int r = 0; r < 2; r++)
                for (int h = 0; h < 2; h++) {
                    R *cp = c + (i + r) * N + j0 + h * VL;
                    V v = alpha * acc[r][h];
                    if (beta) v += FN(vload)(cp);
                    FN(vstore)(cp, v);
                }
        }
        for (; i < M; i++) {
            V c0 = {0}, c1 = {0};
            for (int64_t p = 0; p < K; p++) {
                const R ap = a[i * ras + p * pas];
                c0 += ap * FN(vload)(b + p * N + j0), c1 += ap * FN(vload)(b + p * N + j0 + VL);
            }
            R *cp = c + i * N + j0;
            V v0 = alpha * c0, v1 = alpha * c1;
            if (beta) v0 += FN(vload)(cp), v1 += FN(vload)(cp + VL);
            FN(vstore)(cp, v0);
            FN(vstore)(cp + VL, v1);
        }
    }
    if (j0 < N) { /* the columns left over (N not a multiple of two vectors): plain loops */
        const int64_t nj = N - j0;
        for (int64_t i = 0; i < M; i++) {
            R acc[2 * VBYTES / sizeof(R)] = {0}; /* nj < 2 * VL */
            for (int64_t p = 0; p < K; p++) {
                const R ap = a[i * ras + p * pas], *bp = b + p * N + j0;
                for (int64_t j = 0; j < nj; j++) acc[j] += ap * bp[j];
            }
            R *cp = c + i * N + j0;
            for (int64_t j = 0; j < nj; j++) cp[j] = alpha * acc[j] + (beta ? cp[j] : (R)0);
        }
    }
}

/* C = A B with A row-major [M, K] */
static void FN(mm)(R *c, const R *a, const R *b, int64_t M, int64_t K, int64_t N, R alpha, int beta) {
    FN(gemm)(c, a, K, 1, b, M, K, N, alpha, beta);
}
/* C = A^T B with A row-major [K, M] */
static void FN(mm_t)(R *c, const R *a, const R *b, int64_t M, int64_t K, int64_t N, R alpha, int beta) {
    FN(gemm)(c, a, 1, M, b, M, K, N, alpha, beta);
}

/* dst [c, r] = src [r, c]^T, in 8 x 8 tiles (a tile's strided stores stay in L1) */
static void FN(transpose)(R *restrict dst, const R *restrict src, int64_t r, int64_t c) {
    for (int64_t i0 = 0; i0 < r; i0 += 8)
        for (int64_t j0 = 0; j0 < c; j0 += 8) {
            const int64_t ie = i0 + 8 < r ? i0 + 8 : r, je = j0 + 8 < c ? j0 + 8 : c;
            for (int64_t i = i0; i < ie; i++)
                for (int64_t j = j0; j < je; j++) dst[j * r + i] = src[i * c + j];
        }
}

/* every row of z [m, n] = bias (NULL: zero) */
static void FN(rows_set)(R *restrict z, const R *restrict bias, int64_t m, int64_t n) {
    for (int64_t i = 0; i < m; i++)
        if (bias) memcpy(z + i * n, bias, sizeof(R) * (size_t)n);
        else memset(z + i * n, 0, sizeof(R) * (size_t)n);
}

/* out[j] = base[j] (NULL: 0) + alpha sum_i x[i, j] */
static void FN(col_sum)(R *restrict out, const R *restrict base, const R *restrict x, int64_t m, int64_t n, R alpha) {
    for (int64_t j = 0; j < n; j++) out[j] = 0;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) out[j] += x[i * n + j];
    for (int64_t j = 0; j < n; j++) out[j] = (base ? base[j] : (R)0) + alpha * out[j];
}

#define GELU_C 0.7978845608028654
#define GELU_K 0.044715

/* The tanh gelu 0.5 x (1 + tanh u), u = c (x + k x^3), as x s with s = (1 + tanh u) / 2 = 1 / (1 + e^{-2u}):
 * one exp and one division (the tanh took a polynomial and two blends more). */
static inline R FN(gelu_s)(R x) {
    return (R)1 / ((R)1 + EXP((R)(-2 * GELU_C) * (x + (R)GELU_K * x * x * x)));
}

/* a = gelu(z), s1 = gelu'(z) = s + 2 x s (1 - s) u'; sout (NULL: not wanted) = s, for gelu'' later */
static void FN(gelu_fwd)(R *a, R *restrict s1, R *restrict sout, const R *z, int64_t n) { /* a may be z */
    for (int64_t e = 0; e < n; e++) {
        const R x = z[e], sg = FN(gelu_s)(x);
        const R du = (R)GELU_C * ((R)1 + (R)(3 * GELU_K) * x * x);
        a[e] = x * sg;
        s1[e] = sg + (R)2 * x * sg * ((R)1 - sg) * du;
        if (sout) sout[e] = sg;
    }
}

/* sum of (a - ca)(b - cb) in double (b NULL: sum of (a - ca)), in eight lanes so it vectorizes */
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

/* One row of the decoder: xh = (p - mean) rstd (xh may be p; gam NULL: no LN, xh = p) and the residual
 * r = xh o gam + bet - x; returns rstd (1 without the LN). R arithmetic per element (vectorized), the
 * statistics in double. */
static double FN(ln_resid_row)(R *xh, R *restrict r, const R *p, const R *restrict x, const R *restrict gam,
                               const R *restrict bet, int64_t D, double eps) {
    if (!gam) {
        for (int64_t j = 0; j < D; j++) r[j] = p[j] - x[j];
        return 1;
    }
    const double mean = FN(dotd)(p, 0, NULL, 0, D) / (double)D;
    const double rstd = 1.0 / sqrt(FN(dotd)(p, mean, p, mean, D) / (double)D + eps);
    const R mr = (R)mean, sr = (R)rstd;
    for (int64_t j = 0; j < D; j++) {
        xh[j] = (p[j] - mr) * sr;
        r[j] = xh[j] * gam[j] + bet[j] - x[j];
    }
    return rstd;
}

/* The backward's row of the LN (see the derivation in src/composed/mttt_step.c): from xh, r, pt and rstd,
 * writes xht, dx, ptb, pb and adds to dgam, dbet; xhb and T are D-element temporaries. */
static void FN(ln_bwd_row)(R *restrict xht, R *restrict dx, R *restrict ptb, R *restrict pb, R *restrict dgam,
                           R *restrict dbet, R *restrict xhb, R *restrict T, const R *restrict xh, const R *restrict r,
                           const R *restrict pt, const R *restrict gam, double rstd, double lbar, double eta, int64_t D,
                           double inv_m) {
    const double inv_D = 1.0 / (double)D;
    const R sr = (R)rstd, em = (R)(eta * inv_m), lm = (R)(lbar * inv_m);
    /* xht = rstd (pt - mean pt - xh mean(pt xh)) */
    const double mpt = FN(dotd)(pt, 0, NULL, 0, D) * inv_D, c = FN(dotd)(pt, 0, xh, 0, D) * inv_D;
    const R mptr = (R)mpt, cr = (R)c;
    for (int64_t j = 0; j < D; j++) xht[j] = sr * (pt[j] - mptr - xh[j] * cr);
    for (int64_t j = 0; j < D; j++) {
        const R rtb = -em * r[j];                     /* d S / d rt */
        const R rb = lm * r[j] - em * xht[j] * gam[j]; /* d S / d r */
        dx[j] = -rb;
        xhb[j] = rb * gam[j];
        dgam[j] += rb * xh[j] + rtb * xht[j];
        dbet[j] += rb;
        T[j] = rtb * gam[j]; /* d S / d xht */
    }
    /* ptb = J^T T (J = d xh / d p is symmetric); xhb and the rstd adjoint from xht's own xh and rstd */
    const double mT = FN(dotd)(T, 0, NULL, 0, D) * inv_D, sTX = FN(dotd)(T, 0, xh, 0, D);
    const double rb_s = FN(dotd)(T, 0, xht, 0, D) / rstd;
    const R mTr = (R)mT, sx = (R)(sTX * inv_D), kc = (R)(rstd * c), kp = (R)(rstd * sTX * inv_D);
    for (int64_t j = 0; j < D; j++) {
        ptb[j] = sr * (T[j] - mTr - xh[j] * sx);
        xhb[j] = xhb[j] - kc * T[j] - kp * pt[j];
    }
    /* pb = J^T xhb - rstd^2 xh rb_s / D */
    const double mX = FN(dotd)(xhb, 0, NULL, 0, D) * inv_D, mXx = FN(dotd)(xhb, 0, xh, 0, D) * inv_D;
    const R mXr = (R)mX, mXxr = (R)mXx, kr = (R)(rb_s * rstd * rstd * inv_D);
    for (int64_t j = 0; j < D; j++) pb[j] = sr * (xhb[j] - mXr - xh[j] * mXxr) - kr * xh[j];
}

/* Scratch of one pair, in elements of R. */
static int64_t FN(fwd_scratch)(int64_t m, int64_t d, int64_t F, int64_t D) {
    return d * D + d * F + 3 * m * F + 2 * m * d + m * D + 2 * D;
}
static int64_t FN(bwd_scratch)(int64_t m, int64_t d, int64_t F, int64_t D) {
    return 2 * d * D + 4 * d * F + 8 * m * F + 4 * m * d + 6 * m * D + m + 2 * D;
}

/* The forward of one pair (pointers at the pair's first element; K's and X's rows ldk and ldx apart, the
 * others dense; gam, bet NULL: no LN). Writes W' (w1o
 * NULL: the loss only) and returns the pair's loss before the step. pre = the transposes of G, W1, W2 made
 * once per head (each NULL: transposed here). */
static double FN(step_fwd)(R *w1o, R *b1o, R *w2o, R *b2o, const R *W1, const R *b1, const R *W2, const R *b2,
                           const R *K, const R *X, const R *G, const R *gam, const R *bet, int64_t m, int64_t d,
                           int64_t F, int64_t D, int64_t ldk, int64_t ldx, R eta, double eps, const R *const *pre,
                           R *scr) {
    R *GTs = scr, *W2Ts = GTs + d * D, *A = W2Ts + d * F, *S1 = A + m * F, *dA = S1 + m * F, *Y = dA + m * F;
    R *dY = Y + m * d, *P = dY + m * d, *xh = P + m * D, *g = xh + D;
    const R *GT = pre[0], *W2T = pre[2];
    if (!GT) FN(transpose)(GTs, G, D, d), GT = GTs;
    if (!W2T && w1o) FN(transpose)(W2Ts, W2, F, d), W2T = W2Ts;
    /* z1 = k W1 + b1 (into A), a = gelu(z1), s1 = gelu'(z1) */
    FN(rows_set)(A, b1, m, F);
    FN(gemm)(A, K, ldk, 1, W1, m, d, F, 1, 1);
    if (w1o) FN(gelu_fwd)(A, S1, NULL, A, m * F);
    else /* the loss only: no gelu' */
        for (int64_t e = 0; e < m * F; e++) {
            const R x = A[e];
            A[e] = x * FN(gelu_s)(x);
        }
    /* y = a W2 + b2, p = y gh^T */
    FN(rows_set)(Y, b2, m, d);
    FN(mm)(Y, A, W2, m, F, d, 1, 1);
    FN(mm)(P, Y, GT, m, d, D, 1, 0);
    /* row by row: the residual r = dec - x, the loss, and dp = d l / d p in place of p */
    const double inv_m = 1.0 / (double)m, inv_D = 1.0 / (double)D;
    double loss = 0;
    const R rm = (R)inv_m;
    for (int64_t i = 0; i < m; i++) {
        R *p = P + i * D;
        const double rstd = FN(ln_resid_row)(xh, g, p, X + i * ldx, gam, bet, D, eps); /* g = r */
        loss += FN(dotd)(g, 0, g, 0, D);
        if (!w1o) continue; /* the loss only */
        if (!gam) {
            for (int64_t j = 0; j < D; j++) p[j] = g[j] * rm;
            continue;
        }
        for (int64_t j = 0; j < D; j++) g[j] = g[j] * rm * gam[j]; /* d l / d xh */
        const double mg = FN(dotd)(g, 0, NULL, 0, D) * inv_D, mgx = FN(dotd)(g, 0, xh, 0, D) * inv_D;
        const R sr = (R)rstd, mgr = (R)mg, mgxr = (R)mgx;
        for (int64_t j = 0; j < D; j++) p[j] = sr * (g[j] - mgr - xh[j] * mgxr);
    }
    if (!w1o) return 0.5 * loss * inv_m;
    /* dy = dp gh;  W2' = W2 - eta a^T dy, b2' = b2 - eta sum dy */
    FN(mm)(dY, P, G, m, D, d, 1, 0);
    memcpy(w2o, W2, sizeof(R) * (size_t)(F * d));
    FN(mm_t)(w2o, A, dY, F, m, d, -eta, 1);
    FN(col_sum)(b2o, b2, dY, m, d, -eta);
    /* dz1 = (dy W2^T) o gelu'(z1);  W1' = W1 - eta k^T dz1, b1' = b1 - eta sum dz1 */
    FN(mm)(dA, dY, W2T, m, d, F, 1, 0);
    for (int64_t e = 0; e < m * F; e++) dA[e] *= S1[e];
    memcpy(w1o, W1, sizeof(R) * (size_t)(d * F));
    FN(gemm)(w1o, K, 1, ldk, dA, d, m, F, -eta, 1);
    FN(col_sum)(b1o, b1, dA, m, F, -eta);
    return 0.5 * loss * inv_m;
}

/* The backward of one pair: the gradients of S = lbar l - eta <grad_W l, U> with respect to every input
 * (U = (U1, u1, U2, u2), the cotangents of W'; NULL: zero), plus U itself for the weights: see
 * src/composed/mttt_step.c for the derivation and the names (t: a tangent along U, b: an adjoint). Writes
 * (does not add to) every gradient of the pair; dgam, dbet only with the LN. */
static void FN(step_bwd)(R *dW1, R *db1, R *dW2, R *db2, R *dK, R *dX, R *dG, R *dgam, R *dbet, const R *U1,
                         const R *u1, const R *U2, const R *u2, R lbar, const R *W1, const R *b1, const R *W2,
                         const R *b2, const R *K, const R *X, const R *G, const R *gam, const R *bet, int64_t m,
                         int64_t d, int64_t F, int64_t D, int64_t ldk, int64_t ldx, R eta, double eps,
                         const R *const *pre, R *scr) {
    R *GTs = scr, *W1Ts = GTs + d * D, *W2Ts = W1Ts + F * d, *U1T = W2Ts + d * F, *U2T = U1T + F * d;
    R *Z = U2T + d * F, *A = Z + m * F, *S1 = A + m * F, *Zt = S1 + m * F, *At = Zt + m * F, *Ab = At + m * F;
    R *Th = Ab + m * F; /* s = (1 + tanh u) / 2 of gelu's argument */
    R *Atb = Th + m * F, *Y = Atb + m * F, *Yt = Y + m * d, *Yb = Yt + m * d, *Ytb = Yb + m * d;
    R *Xh = Ytb + m * d, *Pt = Xh + m * D, *Xht = Pt + m * D, *Rr = Xht + m * D, *Pb = Rr + m * D, *Ptb = Pb + m * D;
    R *rs = Ptb + m * D, *T = rs + m, *Xhb = T + D;
    const double inv_m = 1.0 / (double)m;
    const R *GT = pre[0], *W1T = pre[1], *W2T = pre[2];
    if (!GT) FN(transpose)(GTs, G, D, d), GT = GTs;
    if (!W1T) FN(transpose)(W1Ts, W1, d, F), W1T = W1Ts;
    if (!W2T) FN(transpose)(W2Ts, W2, F, d), W2T = W2Ts;
    if (U1) FN(transpose)(U1T, U1, d, F);
    if (U2) FN(transpose)(U2T, U2, F, d);
    /* the forward again: z1, a = gelu(z1), s1 = gelu'(z1), y, p (into Xh), then xh = LN(p) and r */
    FN(rows_set)(Z, b1, m, F);
    FN(gemm)(Z, K, ldk, 1, W1, m, d, F, 1, 1);
    FN(gelu_fwd)(A, S1, Th, Z, m * F);
    FN(rows_set)(Y, b2, m, d);
    FN(mm)(Y, A, W2, m, F, d, 1, 1);
    FN(mm)(Xh, Y, GT, m, d, D, 1, 0);
    for (int64_t i = 0; i < m; i++) rs[i] = (R)FN(ln_resid_row)(Xh + i * D, Rr + i * D, Xh + i * D, X + i * ldx, gam, bet, D, eps);
    /* the tangent along U: z1t = k U1 + u1, at = s1 o z1t, yt = at W2 + a U2 + u2, pt = yt gh^T */
    const int tangent = U1 || u1 || U2 || u2;
    if (tangent) {
        FN(rows_set)(Zt, u1, m, F);
        if (U1) FN(gemm)(Zt, K, ldk, 1, U1, m, d, F, 1, 1);
        for (int64_t e = 0; e < m * F; e++) At[e] = S1[e] * Zt[e];
        FN(rows_set)(Yt, u2, m, d);
        FN(mm)(Yt, At, W2, m, F, d, 1, 1);
        if (U2) FN(mm)(Yt, A, U2, m, F, d, 1, 1);
        FN(mm)(Pt, Yt, GT, m, d, D, 1, 0);
    } else {
        memset(Zt, 0, sizeof(R) * (size_t)(m * F));
        memset(At, 0, sizeof(R) * (size_t)(m * F));
        memset(Yt, 0, sizeof(R) * (size_t)(m * d));
        memset(Pt, 0, sizeof(R) * (size_t)(m * D));
    }
    if (gam) {
        for (int64_t j = 0; j < D; j++) dgam[j] = dbet[j] = 0;
    }
    /* row by row, the LN's tangent and then the adjoints back to p and pt */
    for (int64_t i = 0; i < m; i++) {
        const R *xh = Xh + i * D, *r = Rr + i * D, *pt = Pt + i * D;
        R *xht = Xht + i * D, *pb = Pb + i * D, *ptb = Ptb + i * D, *dx = dX + i * D;
        if (!gam) {
            const R em = (R)((double)eta * inv_m), lm = (R)((double)lbar * inv_m);
            for (int64_t j = 0; j < D; j++) {
                const R rb = lm * r[j] - em * pt[j]; /* rb = d S / d r */
                dx[j] = -rb;
                pb[j] = rb;
                ptb[j] = -em * r[j];
            }
            continue;
        }
        FN(ln_bwd_row)(xht, dx, ptb, pb, dgam, dbet, Xhb, T, xh, r, pt, gam, rs[i], lbar, eta, D, inv_m);
    }
    /* p = y gh^T, pt = yt gh^T:  yb = pb gh, ytb = ptb gh, dgh = pb^T y + ptb^T yt */
    FN(mm)(Yb, Pb, G, m, D, d, 1, 0);
    FN(mm)(Ytb, Ptb, G, m, D, d, 1, 0);
    FN(mm_t)(dG, Pb, Y, D, m, d, 1, 0);
    FN(mm_t)(dG, Ptb, Yt, D, m, d, 1, 1);
    /* y = a W2 + b2, yt = at W2 + a U2 + u2:  ab = yb W2^T + ytb U2^T, atb = ytb W2^T,
     * dW2 = U2 + a^T yb + at^T ytb, db2 = u2 + sum yb */
    FN(mm)(Ab, Yb, W2T, m, d, F, 1, 0);
    if (U2) FN(mm)(Ab, Ytb, U2T, m, d, F, 1, 1);
    FN(mm)(Atb, Ytb, W2T, m, d, F, 1, 0);
    if (U2) memcpy(dW2, U2, sizeof(R) * (size_t)(F * d));
    FN(mm_t)(dW2, A, Yb, F, m, d, 1, U2 != NULL);
    FN(mm_t)(dW2, At, Ytb, F, m, d, 1, 1);
    FN(col_sum)(db2, u2, Yb, m, d, 1);
    /* a = gelu(z1), at = gelu'(z1) z1t:  z1b = ab s1 + atb gelu''(z1) z1t, z1tb = atb s1 (in place of ab, atb) */
    for (int64_t e = 0; e < m * F; e++) {
        const R x = Z[e], x2 = x * x, sg = Th[e], t = (R)2 * sg - (R)1; /* 1 - t^2 = 4 s (1 - s) */
        const R du = (R)GELU_C * ((R)1 + (R)(3 * GELU_K) * x2), ddu = (R)(6 * GELU_C * GELU_K) * x;
        const R s2 = (R)4 * sg * ((R)1 - sg) * (du + (R)0.5 * x * (ddu - (R)2 * t * du * du));
        const R ab = Ab[e], atb = Atb[e];
        Ab[e] = ab * S1[e] + atb * s2 * Zt[e];
        Atb[e] = atb * S1[e];
    }
    /* z1 = k W1 + b1, z1t = k U1 + u1:  dk = z1b W1^T + z1tb U1^T, dW1 = U1 + k^T z1b, db1 = u1 + sum z1b */
    FN(mm)(dK, Ab, W1T, m, F, d, 1, 0);
    if (U1) FN(mm)(dK, Atb, U1T, m, F, d, 1, 1);
    if (U1) memcpy(dW1, U1, sizeof(R) * (size_t)(d * F));
    FN(gemm)(dW1, K, 1, ldk, Ab, d, m, F, 1, U1 != NULL);
    FN(col_sum)(db1, u1, Ab, m, F, 1);
}

/* The read-out of one pair: out = gelu(q W1 + b1) W2 + b2 for q [n, d] (rows ldq apart; scratch: n F) */
static void FN(apply_fwd)(R *out, const R *W1, const R *b1, const R *W2, const R *b2, const R *Q, int64_t n, int64_t d,
                          int64_t F, int64_t ldq, R *scr) {
    R *A = scr;
    FN(rows_set)(A, b1, n, F);
    FN(gemm)(A, Q, ldq, 1, W1, n, d, F, 1, 1);
    for (int64_t e = 0; e < n * F; e++) {
        const R x = A[e];
        A[e] = x * FN(gelu_s)(x);
    }
    FN(rows_set)(out, b2, n, d);
    FN(mm)(out, A, W2, n, F, d, 1, 1);
}
static int64_t FN(apply_scratch)(int64_t n, int64_t d, int64_t F) { return 3 * n * F + 2 * d * F; }

/* Its gradients from dout [n, d] (pre: W1^T, W2^T of the head, each NULL: transposed here) */
static void FN(apply_bwd)(R *dQ, R *dW1, R *db1, R *dW2, R *db2, const R *dO, const R *W1, const R *b1, const R *W2,
                          const R *Q, int64_t n, int64_t d, int64_t F, int64_t ldq, const R *const *pre, R *scr) {
    R *A = scr, *S1 = A + n * F, *dA = S1 + n * F, *W1Ts = dA + n * F, *W2Ts = W1Ts + F * d;
    const R *W1T = pre[1], *W2T = pre[2];
    if (!W1T) FN(transpose)(W1Ts, W1, d, F), W1T = W1Ts;
    if (!W2T) FN(transpose)(W2Ts, W2, F, d), W2T = W2Ts;
    FN(rows_set)(A, b1, n, F);
    FN(gemm)(A, Q, ldq, 1, W1, n, d, F, 1, 1);
    FN(gelu_fwd)(A, S1, NULL, A, n * F);
    /* out = a W2 + b2: dW2 = a^T dout, db2 = sum dout, da = dout W2^T; a = gelu(z): dz = da o gelu'(z) */
    FN(mm_t)(dW2, A, dO, F, n, d, 1, 0);
    FN(col_sum)(db2, NULL, dO, n, d, 1);
    FN(mm)(dA, dO, W2T, n, d, F, 1, 0);
    for (int64_t e = 0; e < n * F; e++) dA[e] *= S1[e];
    /* z = q W1 + b1: dW1 = q^T dz, db1 = sum dz, dq = dz W1^T */
    FN(gemm)(dW1, Q, 1, ldq, dA, d, n, F, 1, 0);
    FN(col_sum)(db1, NULL, dA, n, F, 1);
    FN(mm)(dQ, dA, W1T, n, F, d, 1, 0);
}

#undef VL
#undef VBYTES
#undef GELU_C
#undef GELU_K
