/* Last-axis and indexing kernels: softmax, norms, cross-entropy, one-hot,
 * row gather / scatter-add, RoPE, attention masks. Inputs are dense. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

#define F32(t) ((t)->dtype == TTT_F32)


static int float_only(const char *k, const ttt_tensor *t) {
    return t->dtype == TTT_F32 || t->dtype == TTT_F64 ? TTT_OK : cpu_unsupported(k, t->dtype);
}

static void softmax_row_f32(float *y, const float *x, int64_t n, int log_out) {
    float mx = max_f32(x, n);
    if (mx == -INFINITY) mx = 0; /* a fully masked row: avoid inf - inf */
    for (int64_t j = 0; j < n; j++) y[j] = exp_f32(x[j] - mx);
    const double sum = sum_f32(y, n);
    if (log_out) {
        const float lse = (float)log(sum);
        for (int64_t j = 0; j < n; j++) y[j] = (x[j] - mx) - lse;
    } else {
        const float inv = (float)(1.0 / sum);
        for (int64_t j = 0; j < n; j++) y[j] *= inv;
    }
}

int cpu_softmax(ttt_backend_state *self, ttt_tensor *dst, const ttt_tensor *src, int log_out) {
    if (float_only("softmax", src)) return TTT_ERR;
    int64_t rows, cols;
    cpu_rows_cols(src, &rows, &cols);
    int f32 = F32(src);
CPU_PARALLEL(self, rows * cols,
    _Pragma("omp for schedule(static)")
        for (int64_t r = 0; r < rows; r++) {
            const int64_t o = r * cols;
            if (f32) { /* one vectorized exp per element, kept in dst, the sum in f64 */
                softmax_row_f32((float *)dst->data + o, (const float *)src->data + o, cols, log_out);
                continue;
            }
            double mx = -INFINITY, sum = 0;
            for (int64_t j = 0; j < cols; j++) mx = fmax(mx, ld(src->data, f32, o + j));
            if (mx == -INFINITY) mx = 0; /* a fully masked row: avoid inf - inf */
            for (int64_t j = 0; j < cols; j++) sum += exp(ld(src->data, f32, o + j) - mx);
            double lse = log(sum);
            for (int64_t j = 0; j < cols; j++) {
                double z = ld(src->data, f32, o + j) - mx;
                st(dst->data, f32, o + j, log_out ? z - lse : exp(z) / sum);
            }
        }
);
    return TTT_OK;
}

int cpu_norm(ttt_backend_state *self, ttt_norm_kind kind, ttt_tensor *dst, const ttt_tensor *src, double eps) {
    if (float_only("norm", src)) return TTT_ERR;
    int64_t rows, cols;
    cpu_rows_cols(src, &rows, &cols);
    int f32 = F32(src);
CPU_PARALLEL(self, rows * cols,
    _Pragma("omp for schedule(static)")
        for (int64_t r = 0; r < rows; r++) {
            const int64_t o = r * cols;
            double mean = 0, var = 0;
            if (kind == TTT_NORM_LAYER) {
                for (int64_t j = 0; j < cols; j++) mean += ld(src->data, f32, o + j);
                mean /= (double)cols;
            }
            for (int64_t j = 0; j < cols; j++) {
                double d = ld(src->data, f32, o + j) - mean;
                var += d * d;
            }
            double rstd = 1.0 / sqrt(var / (double)cols + eps);
            for (int64_t j = 0; j < cols; j++) st(dst->data, f32, o + j, (ld(src->data, f32, o + j) - mean) * rstd);
        }
);
    return TTT_OK;
}

int cpu_norm_bwd(ttt_backend_state *self, ttt_norm_kind kind, ttt_tensor *dx, const ttt_tensor *x, const ttt_tensor *y, const ttt_tensor *dy,
                 double eps) {
    if (float_only("norm_bwd", x)) return TTT_ERR;
    int64_t rows, cols;
    cpu_rows_cols(x, &rows, &cols);
    int f32 = F32(x);
CPU_PARALLEL(self, rows * cols,
    _Pragma("omp for schedule(static)")
        for (int64_t r = 0; r < rows; r++) {
            const int64_t o = r * cols;
            double mean = 0, var = 0, mg = 0, mgy = 0;
            if (kind == TTT_NORM_LAYER) {
                for (int64_t j = 0; j < cols; j++) mean += ld(x->data, f32, o + j), mg += ld(dy->data, f32, o + j);
                mean /= (double)cols, mg /= (double)cols;
            }
            for (int64_t j = 0; j < cols; j++) {
                double d = ld(x->data, f32, o + j) - mean;
                var += d * d;
                mgy += ld(dy->data, f32, o + j) * ld(y->data, f32, o + j);
            }
            const double rstd = 1.0 / sqrt(var / (double)cols + eps);
            mgy /= (double)cols;
            for (int64_t j = 0; j < cols; j++)
                st(dx->data, f32, o + j, rstd * (ld(dy->data, f32, o + j) - mg - ld(y->data, f32, o + j) * mgy));
        }
);
    return TTT_OK;
}

/* ---- the norm times a weight (norm_affine) and its gradient: the bits of norm, then a binary mul ---------- */

/* v rounded to the tensor's dtype, as a store and a load would round it */
static inline double rnd(int f32, double v) { return f32 ? (double)(float)v : v; }

/* the row's mean (layer norm; 0 for RMS) and 1 / sqrt(var + eps), as cpu_norm forms them */
static void norm_row_stats(int layer, const void *x, int f32, int64_t o, int64_t cols, double eps, double *mean_out,
                           double *rstd_out) {
    double mean = 0, var = 0;
    if (layer) {
        for (int64_t j = 0; j < cols; j++) mean += ld(x, f32, o + j);
        mean /= (double)cols;
    }
    for (int64_t j = 0; j < cols; j++) {
        double d = ld(x, f32, o + j) - mean;
        var += d * d;
    }
    *mean_out = mean;
    *rstd_out = 1.0 / sqrt(var / (double)cols + eps);
}

int cpu_norm_affine(ttt_backend_state *self, ttt_norm_kind kind, ttt_tensor *dst, const ttt_tensor *src,
                    const ttt_tensor *gamma, double eps) {
    if (float_only("norm_affine", src)) return TTT_ERR;
    int64_t rows, cols;
    cpu_rows_cols(src, &rows, &cols);
    const int f32 = F32(src), layer = kind == TTT_NORM_LAYER;
CPU_PARALLEL(self, rows * cols,
    _Pragma("omp for schedule(static)")
        for (int64_t r = 0; r < rows; r++) {
            const int64_t o = r * cols;
            double mean, rstd;
            norm_row_stats(layer, src->data, f32, o, cols, eps, &mean, &rstd);
            /* a product of two f32 values is exact in double: one rounding, as the f32 mul's */
            for (int64_t j = 0; j < cols; j++)
                st(dst->data, f32, o + j, rnd(f32, (ld(src->data, f32, o + j) - mean) * rstd) * ld(gamma->data, f32, j));
        }
);
    return TTT_OK;
}

/* y = norm(x) and g = dy gamma at element j of the row at o, rounded as their tensors store them */
static inline double na_y(const void *x, int f32, int64_t o, int64_t j, double mean, double rstd) {
    return rnd(f32, (ld(x, f32, o + j) - mean) * rstd);
}
static inline double na_g(const void *dy, const void *gamma, int f32, int64_t o, int64_t j) {
    return rnd(f32, ld(dy, f32, o + j) * ld(gamma, f32, j));
}

/* g = dy gamma and y = norm(x), each rounded as the composed ops store them, then cpu_norm_bwd's formula; dgx = dy y */
int cpu_norm_affine_bwd(ttt_backend_state *self, ttt_norm_kind kind, ttt_tensor *dx, ttt_tensor *dgx, const ttt_tensor *x,
                        const ttt_tensor *gamma, const ttt_tensor *dy, double eps) {
    if (float_only("norm_affine_bwd", x)) return TTT_ERR;
    int64_t rows, cols;
    cpu_rows_cols(x, &rows, &cols);
    const int f32 = F32(x), layer = kind == TTT_NORM_LAYER;
CPU_PARALLEL(self, rows * cols,
    _Pragma("omp for schedule(static)")
        for (int64_t r = 0; r < rows; r++) {
            const int64_t o = r * cols;
            double fmean, frstd;
            norm_row_stats(layer, x->data, f32, o, cols, eps, &fmean, &frstd);
            double mean = 0, var = 0, mg = 0, mgy = 0;
            if (layer) {
                for (int64_t j = 0; j < cols; j++) mean += ld(x->data, f32, o + j), mg += na_g(dy->data, gamma->data, f32, o, j);
                mean /= (double)cols, mg /= (double)cols;
            }
            for (int64_t j = 0; j < cols; j++) {
                double d = ld(x->data, f32, o + j) - mean;
                var += d * d;
                mgy += na_g(dy->data, gamma->data, f32, o, j) * na_y(x->data, f32, o, j, fmean, frstd);
            }
            const double rstd = 1.0 / sqrt(var / (double)cols + eps);
            mgy /= (double)cols;
            for (int64_t j = 0; j < cols; j++) {
                const double y = na_y(x->data, f32, o, j, fmean, frstd);
                st(dx->data, f32, o + j, rstd * (na_g(dy->data, gamma->data, f32, o, j) - mg - y * mgy));
                if (dgx) st(dgx->data, f32, o + j, ld(dy->data, f32, o + j) * y);
            }
        }
);
    return TTT_OK;
}

/* The RMS norm's second order (backend.h: norm_bwd2), in double: with r = 1 / sqrt(mean(x^2) + eps), n = r x,
 * h = dy gamma, J = r (I - n n^T / D) and the row means a = n.u / D, m = n.h / D, c = u.h / D, e = n.(v dy) / D,
 *   gdy = gamma J u + v n,   ggx = dy J u,   gx = r^2 (n (3 a m - c) - m u - a h) + r (v dy - n e)
 * (derived in src/ops/nn.c; the CUDA kernel k_rms_norm_bwd2 is the same formula). */
int cpu_norm_bwd2(ttt_backend_state *self, ttt_norm_kind kind, ttt_tensor *gx, ttt_tensor *gdy, ttt_tensor *ggx,
                  const ttt_tensor *x, const ttt_tensor *gamma, const ttt_tensor *dy, const ttt_tensor *u,
                  const ttt_tensor *v, double eps) {
    if (kind != TTT_NORM_RMS) return TTT_BACKEND_DECLINED;
    if (float_only("norm (second order)", x)) return TTT_ERR;
    int64_t rows, cols;
    cpu_rows_cols(x, &rows, &cols);
    const int f32 = F32(x);
    const void *gm = gamma ? gamma->data : NULL, *ud = u ? u->data : NULL, *vd = v ? v->data : NULL;
CPU_PARALLEL(self, 4 * rows * cols,
    _Pragma("omp for schedule(static)")
        for (int64_t row = 0; row < rows; row++) {
            const int64_t o = row * cols;
            double xx = 0, xu = 0, xh = 0, uh = 0, xw = 0;
            for (int64_t j = 0; j < cols; j++) {
                const double xj = ld(x->data, f32, o + j), dj = ld(dy->data, f32, o + j);
                const double hj = gm ? dj * ld(gm, f32, j) : dj, uj = ud ? ld(ud, f32, o + j) : 0;
                const double wj = vd ? ld(vd, f32, o + j) * dj : 0;
                xx += xj * xj, xu += xj * uj, xh += xj * hj, uh += uj * hj, xw += xj * wj;
            }
            const double r = 1.0 / sqrt(xx / (double)cols + eps);
            const double a = r * xu / (double)cols, m = r * xh / (double)cols, c = uh / (double)cols,
                         e = r * xw / (double)cols;
            for (int64_t j = 0; j < cols; j++) {
                const double xj = ld(x->data, f32, o + j), dj = ld(dy->data, f32, o + j), gj = gm ? ld(gm, f32, j) : 1;
                const double uj = ud ? ld(ud, f32, o + j) : 0, vj = vd ? ld(vd, f32, o + j) : 0, n = r * xj;
                const double ju = r * (uj - n * a);
                if (gdy) st(gdy->data, f32, o + j, gj * ju + vj * n);
                if (ggx) st(ggx->data, f32, o + j, dj * ju);
                if (gx) st(gx->data, f32, o + j, r * r * (n * (3 * a * m - c) - m * uj - a * dj * gj) + r * (vj * dj - n * e));
            }
        }
);
    return TTT_OK;
}

/* SwiGLU's second order (backend.h: swiglu_bwd2), in double: s = sigmoid(a), s1 = silu'(a), s2 = silu''(a),
 *   ga = u dy b s2 + v dy s1,   gb = u dy s1,   gdy = u b s1 + v a s */
int cpu_swiglu_bwd2(ttt_backend_state *self, ttt_tensor *ga, ttt_tensor *gb, ttt_tensor *gdy, const ttt_tensor *a,
                    const ttt_tensor *b, const ttt_tensor *dy, const ttt_tensor *u, const ttt_tensor *v) {
    if (float_only("swiglu (second order)", dy)) return TTT_ERR;
    const int64_t n = cpu_numel(dy);
    const int f32 = F32(dy);
    const void *ud = u ? u->data : NULL, *vd = v ? v->data : NULL;
CPU_PARALLEL(self, 4 * n,
    _Pragma("omp for schedule(static)")
        for (int64_t i = 0; i < n; i++) {
            const double x = ld(a->data, f32, i), y = ld(b->data, f32, i), g = ld(dy->data, f32, i);
            const double ui = ud ? ld(ud, f32, i) : 0, vi = vd ? ld(vd, f32, i) : 0;
            const double s = 1.0 / (1.0 + exp(-x)), s1 = s * (1 + x * (1 - s)), s2 = s * (1 - s) * (2 + x * (1 - 2 * s));
            if (ga) st(ga->data, f32, i, g * (ui * y * s2 + vi * s1));
            if (gb) st(gb->data, f32, i, ui * g * s1);
            if (gdy) st(gdy->data, f32, i, ui * y * s1 + vi * x * s);
        }
);
    return TTT_OK;
}

/* Validate every target before touching the output (OpenMP loops cannot return early). */
static int check_targets(const char *k, const ttt_tensor *targets, int64_t rows, int64_t v, int ignore) {
    const int32_t *t = targets->data;
    for (int64_t r = 0; r < rows; r++)
        if (t[r] != ignore && (t[r] < 0 || t[r] >= v)) {
            ttt_backend_error("%s: target %d at row %lld out of range [0, %lld)", k, t[r], (long long)r, (long long)v);
            return TTT_ERR;
        }
    return TTT_OK;
}

/* The logits' rows must be evenly spaced (ttt_row_stride) and the loss (or its gradient) share their dtype:
 * the CPU has no bf16. */
static int ce_check(const char *k, const ttt_tensor *logits, const ttt_tensor *loss, int64_t ldx) {
    if (ldx < 0) {
        ttt_backend_error("%s: the logits' rows must be evenly spaced with a unit last stride", k);
        return TTT_ERR;
    }
    if (loss->dtype != logits->dtype) {
        ttt_backend_error("%s: loss dtype %s differs from the logits' %s", k, ttt_dtype_name(loss->dtype),
                          ttt_dtype_name(logits->dtype));
        return TTT_ERR;
    }
    return TTT_OK;
}

/* Max and sum of exp(x - max) of one row of logits (the log-sum-exp is max + log(sum)). */
static void row_max_sum(const void *x, int f32, int64_t o, int64_t v, double *mx, double *sum) {
    double m = -INFINITY, s = 0;
    for (int64_t j = 0; j < v; j++) m = fmax(m, ld(x, f32, o + j));
    for (int64_t j = 0; j < v; j++) s += exp(ld(x, f32, o + j) - m);
    *mx = m, *sum = s;
}

/* The f32 row: vectorized max, then e^(x - max) by exp_f32 summed in f64 (the libm double exp per element
 * took ~15 ns; a 50K-vocabulary head spent most of a CPU training step here). */
static void row_max_sum_f32(const float *x, int64_t v, double *mx, double *sum) {
    const float m = max_f32(x, v);
    *mx = m, *sum = sum_exp_f32(x, v, m);
}

int cpu_cross_entropy(ttt_backend_state *self, ttt_tensor *dst, const ttt_tensor *logits, const ttt_tensor *targets, int ignore_index) {
    if (float_only("cross_entropy", logits)) return TTT_ERR;
    int64_t rows, v;
    cpu_rows_cols(logits, &rows, &v);
    const int64_t ldx = ttt_row_stride(logits);
    if (ce_check("cross_entropy", logits, dst, ldx) || check_targets("cross_entropy", targets, rows, v, ignore_index))
        return TTT_ERR;
    const int32_t *t = targets->data;
    int f32 = F32(logits);
CPU_PARALLEL(self, rows * v,
    _Pragma("omp for schedule(static)")
        for (int64_t r = 0; r < rows; r++) {
            if (t[r] == ignore_index) {
                st(dst->data, f32, r, 0.0);
                continue;
            }
            const int64_t o = r * ldx;
            double mx, sum;
            if (f32) row_max_sum_f32((const float *)logits->data + o, v, &mx, &sum);
            else row_max_sum(logits->data, f32, o, v, &mx, &sum);
            st(dst->data, f32, r, mx + log(sum) - ld(logits->data, f32, o + t[r]));
        }
);
    return TTT_OK;
}

/* The gradient kernels' checks: float logits with evenly spaced rows, grow in the loss's dtype, every target in
 * range; *rows, *v (the row length) and *ldx (the rows' spacing). */
static int ce_grad_check(const char *k, const ttt_tensor *logits, const ttt_tensor *targets, const ttt_tensor *grow,
                         int ignore_index, int64_t *rows, int64_t *v, int64_t *ldx) {
    if (float_only(k, logits)) return TTT_ERR;
    cpu_rows_cols(logits, rows, v);
    *ldx = ttt_row_stride(logits);
    return ce_check(k, logits, grow, *ldx) || check_targets(k, targets, *rows, *v, ignore_index) ? TTT_ERR : TTT_OK;
}

int cpu_cross_entropy_bwd(ttt_backend_state *self, ttt_tensor *dst, const ttt_tensor *logits, const ttt_tensor *targets, const ttt_tensor *grow,
                          int ignore_index) {
    int64_t rows, v, ldx;
    if (ce_grad_check("cross_entropy_bwd", logits, targets, grow, ignore_index, &rows, &v, &ldx)) return TTT_ERR;
    const int32_t *t = targets->data;
    int f32 = F32(logits);
CPU_PARALLEL(self, rows * v,
    _Pragma("omp for schedule(static)")
        for (int64_t r = 0; r < rows; r++) {
            const int64_t o = r * v, ox = r * ldx;
            if (t[r] == ignore_index) {
                for (int64_t j = 0; j < v; j++) st(dst->data, f32, o + j, 0.0);
                continue;
            }
            double mx, sum;
            const double g = ld(grow->data, f32, r);
            if (f32) {
                const float *x = (const float *)logits->data + ox;
                float *y = (float *)dst->data + o;
                row_max_sum_f32(x, v, &mx, &sum);
                const float m = (float)mx, scale = (float)(g / sum);
                for (int64_t j = 0; j < v; j++) y[j] = exp_f32(x[j] - m) * scale;
                y[t[r]] = (float)(g * ((double)exp_f32(x[t[r]] - m) / sum - 1.0));
                continue;
            }
            row_max_sum(logits->data, f32, ox, v, &mx, &sum);
            for (int64_t j = 0; j < v; j++)
                st(dst->data, f32, o + j, g * (exp(ld(logits->data, f32, ox + j) - mx) / sum - (j == t[r] ? 1.0 : 0.0)));
        }
);
    return TTT_OK;
}

/* The cross-entropy's second order (backend.h: cross_entropy_bwd2), in double: gx = grow p (u - u.p),
 * ggrow = u.p - u[t], zero rows where ignored. */
int cpu_cross_entropy_bwd2(ttt_backend_state *self, ttt_tensor *gx, ttt_tensor *ggrow, const ttt_tensor *logits,
                           const ttt_tensor *targets, const ttt_tensor *grow, const ttt_tensor *u, int ignore_index) {
    int64_t rows, v, ldx;
    if (ce_grad_check("cross_entropy (second order)", logits, targets, grow, ignore_index, &rows, &v, &ldx))
        return TTT_ERR;
    const int32_t *t = targets->data;
    const int f32 = F32(logits), lf32 = F32(grow);
CPU_PARALLEL(self, 3 * rows * v,
    _Pragma("omp for schedule(static)")
        for (int64_t r = 0; r < rows; r++) {
            const int64_t o = r * v, ox = r * ldx;
            if (t[r] == ignore_index) {
                for (int64_t j = 0; gx && j < v; j++) st(gx->data, f32, o + j, 0.0);
                if (ggrow) st(ggrow->data, lf32, r, 0.0);
                continue;
            }
            double mx = -INFINITY, s = 0, su = 0;
            for (int64_t j = 0; j < v; j++) mx = fmax(mx, ld(logits->data, f32, ox + j));
            for (int64_t j = 0; j < v; j++) {
                const double e = exp(ld(logits->data, f32, ox + j) - mx);
                s += e, su += ld(u->data, f32, o + j) * e;
            }
            const double up = su / s, g = ld(grow->data, lf32, r);
            for (int64_t j = 0; gx && j < v; j++)
                st(gx->data, f32, o + j, g * exp(ld(logits->data, f32, ox + j) - mx) / s * (ld(u->data, f32, o + j) - up));
            if (ggrow) st(ggrow->data, lf32, r, up - ld(u->data, f32, o + t[r]));
        }
);
    return TTT_OK;
}

int cpu_one_hot(ttt_backend_state *self, ttt_tensor *dst, const ttt_tensor *targets, int ignore_index) {
    if (float_only("one_hot", dst)) return TTT_ERR;
    int64_t rows, v;
    cpu_rows_cols(dst, &rows, &v);
    if (check_targets("one_hot", targets, rows, v, ignore_index)) return TTT_ERR;
    const int32_t *t = targets->data;
    int f32 = F32(dst);
CPU_PARALLEL(self, rows * v,
    _Pragma("omp for schedule(static)")
        for (int64_t r = 0; r < rows; r++) {
            for (int64_t j = 0; j < v; j++) st(dst->data, f32, r * v + j, 0.0);
            if (t[r] != ignore_index) st(dst->data, f32, r * v + t[r], 1.0);
        }
);
    return TTT_OK;
}

static int check_ids(const char *k, const ttt_tensor *ids, int64_t n, int64_t v) {
    const int32_t *id = ids->data;
    for (int64_t i = 0; i < n; i++)
        if (id[i] < 0 || id[i] >= v) {
            ttt_backend_error("%s: id %d at position %lld out of range [0, %lld)", k, id[i], (long long)i, (long long)v);
            return TTT_ERR;
        }
    return TTT_OK;
}

int cpu_gather_rows(ttt_backend_state *self, ttt_tensor *dst, const ttt_tensor *table, const ttt_tensor *ids) {
    if (float_only("gather_rows", table)) return TTT_ERR;
    int64_t n = cpu_numel(ids), v = table->shape[0], d = table->shape[1];
    if (check_ids("embedding", ids, n, v)) return TTT_ERR;
    const int32_t *id = ids->data;
    size_t es = F32(table) ? 4 : 8;
CPU_PARALLEL(self, n * d,
    _Pragma("omp for schedule(static)")
        for (int64_t i = 0; i < n; i++)
            memcpy((char *)dst->data + (size_t)(i * d) * es, (const char *)table->data + (size_t)(id[i] * d) * es,
                   (size_t)d * es);
);
    return TTT_OK;
}

int cpu_scatter_add_rows(ttt_backend_state *self, ttt_tensor *dst, const ttt_tensor *src, const ttt_tensor *ids) {
    if (float_only("scatter_add_rows", src)) return TTT_ERR;
    int64_t n = cpu_numel(ids), v = dst->shape[0], d = dst->shape[1];
    if (check_ids("scatter_add_rows", ids, n, v)) return TTT_ERR;
    const int32_t *id = ids->data;
    /* Rows sharing an id would race, so threads own blocks of columns, not
     * rows; each block is walked row by row, a cache line at a time. The sum
     * order per element is the ids' order, so results are deterministic. */
    const int64_t blk = 16, nblk = (d + blk - 1) / blk;
    const int f32 = F32(src);
CPU_PARALLEL(self, n * d,
    _Pragma("omp for schedule(static)")
        for (int64_t b = 0; b < nblk; b++) {
            int64_t j0 = b * blk, j1 = j0 + blk < d ? j0 + blk : d;
            for (int64_t i = 0; i < n; i++) {
                if (f32) {
                    float *y = (float *)dst->data + id[i] * d;
                    const float *x = (const float *)src->data + i * d;
                    for (int64_t j = j0; j < j1; j++) y[j] += x[j];
                } else {
                    double *y = (double *)dst->data + id[i] * d;
                    const double *x = (const double *)src->data + i * d;
                    for (int64_t j = j0; j < j1; j++) y[j] += x[j];
                }
            }
        }
);
    return TTT_OK;
}

/* The element offset of logical row r (counting over every axis but the last) of a strided tensor. */
static int64_t row_offset(const ttt_tensor *t, int64_t r) {
    int64_t o = 0;
    for (int a = t->ndim - 2; a >= 0; a--) {
        o += (r % t->shape[a]) * t->stride[a];
        r /= t->shape[a];
    }
    return o;
}

int cpu_rope(ttt_backend_state *self, ttt_tensor *dst, const ttt_tensor *src, int seq_axis, int64_t pos0, double theta, int inverse) {
    if (float_only("rope", src)) return TTT_ERR;
    if ((src->shape[src->ndim - 1] > 1 && src->stride[src->ndim - 1] != 1) ||
        (dst->shape[dst->ndim - 1] > 1 && dst->stride[dst->ndim - 1] != 1)) {
        ttt_backend_error("rope: the last axis must have a unit stride");
        return TTT_ERR;
    }
    int64_t rows, d;
    cpu_rows_cols(src, &rows, &d);
    int64_t half = d / 2, inner = 1; /* rows per position step below seq_axis */
    for (int a = seq_axis + 1; a < src->ndim - 1; a++) inner *= src->shape[a];
    int64_t seq = src->shape[seq_axis];
    if (rows * half == 0) return TTT_OK;
    /* cos/sin depend only on (position, i): tabulate them once instead of
     * once per row (batch * heads times fewer sin/cos/pow calls). */
    double *cs = malloc((size_t)(seq * half) * 2 * sizeof *cs);
    if (!cs) {
        ttt_backend_error("rope: out of memory for a %lld x %lld angle table", (long long)seq, (long long)half);
        return TTT_ERR;
    }
CPU_PARALLEL(self, 8 * (seq * half),
    _Pragma("omp for schedule(static)")
        for (int64_t p = 0; p < seq; p++)
            for (int64_t i = 0; i < half; i++) {
                double ang = (double)(pos0 + p) * pow(theta, -2.0 * (double)i / (double)d);
                if (inverse) ang = -ang;
                cs[2 * (p * half + i)] = cos(ang);
                cs[2 * (p * half + i) + 1] = sin(ang);
            }
);
    int f32 = F32(src);
CPU_PARALLEL(self, rows * d,
    _Pragma("omp for schedule(static)")
        for (int64_t r = 0; r < rows; r++) {
            const double *t = cs + 2 * ((r / inner) % seq) * half;
            const int64_t os = row_offset(src, r), od = row_offset(dst, r);
            for (int64_t i = 0; i < half; i++) {
                double c = t[2 * i], s = t[2 * i + 1];
                double x1 = ld(src->data, f32, os + i), x2 = ld(src->data, f32, os + i + half);
                st(dst->data, f32, od + i, x1 * c - x2 * s);
                st(dst->data, f32, od + i + half, x2 * c + x1 * s);
            }
        }
);
    free(cs);
    return TTT_OK;
}

int cpu_attn_mask(ttt_backend_state *self, ttt_tensor *dst, const ttt_tensor *src, int64_t window, int64_t q_offset, double fill) {
    if (float_only("attn_mask", src)) return TTT_ERR;
    int64_t tk = src->shape[src->ndim - 1], tq = src->shape[src->ndim - 2];
    int64_t rows = tk ? cpu_numel(src) / tk : 0;
    int f32 = F32(src);
CPU_PARALLEL(self, rows * tk,
    _Pragma("omp for schedule(static)")
        for (int64_t r = 0; r < rows; r++) {
            int64_t qp = q_offset + r % tq;
            for (int64_t j = 0; j < tk; j++) {
                int keep = j <= qp && (window <= 0 || qp - j < window);
                st(dst->data, f32, r * tk + j, keep ? ld(src->data, f32, r * tk + j) : fill);
            }
        }
);
    return TTT_OK;
}
