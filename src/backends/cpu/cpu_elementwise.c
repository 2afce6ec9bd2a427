/* Elementwise kernels: unary, binary (operands pre-expanded to the output's
 * shape, stride 0 where broadcast) and where. f32 and f64; the inner loops
 * have unit-stride versions the compiler can vectorize. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cpu_internal.h"

#define GELU_C 0.7978845608028654
#define GELU_K 0.044715

static inline double sigmoid_d(double x) {
    if (x >= 0) return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

static inline float sigmoid_f32(float x) {
    const float e = exp_f32(x < 0 ? x : -x); /* e^{-|x|} never overflows */
    return x >= 0 ? 1.0f / (1.0f + e) : e / (1.0f + e);
}

/* gelu'(x) = 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 k x^2), t = tanh(c (x + k x^3));
 * silu'(x) = s (1 + x (1 - s)), s = sigmoid(x) */
#define GELU_GRAD(T, TANH, x)                                                                                     \
    ((T)0.5 * ((T)1 + TANH((T)GELU_C * (x + (T)GELU_K * x * x * x))) +                                           \
     (T)0.5 * x * ((T)1 - TANH((T)GELU_C * (x + (T)GELU_K * x * x * x)) * TANH((T)GELU_C * (x + (T)GELU_K * x * x * x))) * \
         (T)GELU_C * ((T)1 + (T)3 * (T)GELU_K * x * x))
#define SILU_GRAD(T, SIGMOID, x) (SIGMOID(x) * ((T)1 + x * ((T)1 - SIGMOID(x))))

#define UNARY_BODY(T, MATH)                                                                   \
    for (int64_t i = 0; i < n; i++) {                                                         \
        T x = xs[i * sx];                                                                     \
        (void)x;                                                                              \
        ys[i * sy] = (T)(MATH);                                                               \
    }

#define UNARY_CASES(T, EXP, LOG, TANH, SQRT, POW, FABS, SIGMOID)                                       \
    switch (op) {                                                                             \
    case TTT_U_NEG: UNARY_BODY(T, -x) break;                                                  \
    case TTT_U_EXP: UNARY_BODY(T, EXP(x)) break;                                              \
    case TTT_U_LOG: UNARY_BODY(T, LOG(x)) break;                                              \
    case TTT_U_TANH: UNARY_BODY(T, TANH(x)) break;                                            \
    case TTT_U_SIGMOID: UNARY_BODY(T, SIGMOID(x)) break;                                      \
    case TTT_U_GELU: UNARY_BODY(T, (T)0.5 * x * ((T)1 + TANH((T)GELU_C * (x + (T)GELU_K * x * x * x)))) break; \
    case TTT_U_SILU: UNARY_BODY(T, x * SIGMOID(x)) break;                                      \
    case TTT_U_RELU: UNARY_BODY(T, x > 0 ? x : (T)0) break;                                   \
    case TTT_U_SQRT: UNARY_BODY(T, SQRT(x)) break;                                            \
    case TTT_U_RSQRT: UNARY_BODY(T, (T)1 / SQRT(x)) break;                                    \
    case TTT_U_ABS: UNARY_BODY(T, FABS(x)) break;                                             \
    case TTT_U_SIGN: UNARY_BODY(T, (x > 0) - (x < 0)) break;                                  \
    case TTT_U_STEP: UNARY_BODY(T, x > 0 ? 1 : 0) break;                                      \
    case TTT_U_POW: UNARY_BODY(T, POW(x, (T)p0)) break;                                       \
    case TTT_U_CLAMP: UNARY_BODY(T, x < (T)p0 ? (T)p0 : (x > (T)p1 ? (T)p1 : x)) break;       \
    case TTT_U_INRANGE: UNARY_BODY(T, (x >= (T)p0 && x <= (T)p1) ? 1 : 0) break;              \
    case TTT_U_AFFINE: UNARY_BODY(T, (T)p0 * x + (T)p1) break;                                \
    case TTT_U_ELU1: UNARY_BODY(T, x > 0 ? x + (T)1 : EXP(x)) break;                          \
    case TTT_U_GELU_GRAD: UNARY_BODY(T, GELU_GRAD(T, TANH, x)) break;                         \
    case TTT_U_SILU_GRAD: UNARY_BODY(T, SILU_GRAD(T, SIGMOID, x)) break;                      \
    default: break;                                                                           \
    }

static void unary_f32_dense(ttt_unary_op op, int64_t n, float *ys, const float *xs, double p0, double p1) {
    const int64_t sx = 1, sy = 1;
    UNARY_CASES(float, exp_f32, logf, tanh_f32, sqrtf, powf, fabsf, sigmoid_f32)
}

static void unary_f32(ttt_unary_op op, int64_t n, float *ys, int64_t sy, const float *xs, int64_t sx, double p0,
                      double p1) {
    if (sx == 1 && sy == 1) {
        unary_f32_dense(op, n, ys, xs, p0, p1); /* constant unit strides vectorize */
        return;
    }
    UNARY_CASES(float, exp_f32, logf, tanh_f32, sqrtf, powf, fabsf, sigmoid_f32)
}

static void unary_f64_dense(ttt_unary_op op, int64_t n, double *ys, const double *xs, double p0, double p1) {
    const int64_t sx = 1, sy = 1;
    UNARY_CASES(double, exp, log, tanh, sqrt, pow, fabs, sigmoid_d)
}

static void unary_f64(ttt_unary_op op, int64_t n, double *ys, int64_t sy, const double *xs, int64_t sx, double p0,
                      double p1) {
    if (sx == 1 && sy == 1) {
        unary_f64_dense(op, n, ys, xs, p0, p1);
        return;
    }
    UNARY_CASES(double, exp, log, tanh, sqrt, pow, fabs, sigmoid_d)
}

int cpu_unary(ttt_backend_state *self, ttt_unary_op op, ttt_tensor *dst, const ttt_tensor *src, double p0, double p1) {
    if (dst->dtype != TTT_F32 && dst->dtype != TTT_F64) return cpu_unsupported("unary", dst->dtype);
    if ((unsigned)op >= TTT_U_COUNT) {
        ttt_backend_error("unary: unknown op %d", (int)op);
        return TTT_ERR;
    }
    const ttt_tensor *ops[2] = {dst, src};
    cpu_iter it;
    cpu_iter_init(&it, 2, ops);
    int64_t items = cpu_iter_items(&it), sy = cpu_iter_inner_stride(&it, 0), sx = cpu_iter_inner_stride(&it, 1);
    int f32 = dst->dtype == TTT_F32;
CPU_PARALLEL(self, cpu_numel(dst),
    _Pragma("omp for schedule(static)")
        for (int64_t w = 0; w < items; w++) {
            int64_t off[2], n;
            cpu_iter_item(&it, w, off, &n);
            if (f32) unary_f32(op, n, (float *)dst->data + off[0], sy, (const float *)src->data + off[1], sx, p0, p1);
            else unary_f64(op, n, (double *)dst->data + off[0], sy, (const double *)src->data + off[1], sx, p0, p1);
        }
);
    return TTT_OK;
}

/* ---- binary ---------------------------------------------------------------------- */

#define BIN_LOOP(T, EXPR)                                                  \
    if (sy == 1 && sa == 1 && sb == 1) {                                   \
        for (int64_t i = 0; i < n; i++) {                                  \
            T a = as[i], b = bs[i];                                        \
            ys[i] = (T)(EXPR);                                             \
        }                                                                  \
    } else if (sy == 1 && sa == 1 && sb == 0) {                            \
        T b = bs[0];                                                       \
        for (int64_t i = 0; i < n; i++) {                                  \
            T a = as[i];                                                   \
            ys[i] = (T)(EXPR);                                             \
        }                                                                  \
    } else {                                                               \
        for (int64_t i = 0; i < n; i++) {                                  \
            T a = as[i * sa], b = bs[i * sb];                              \
            ys[i * sy] = (T)(EXPR);                                        \
        }                                                                  \
    }

#define BIN_CASES(T)                                      \
    switch (op) {                                         \
    case TTT_B_ADD: BIN_LOOP(T, a + b) break;             \
    case TTT_B_SUB: BIN_LOOP(T, a - b) break;             \
    case TTT_B_MUL: BIN_LOOP(T, a * b) break;             \
    case TTT_B_DIV: BIN_LOOP(T, a / b) break;             \
    case TTT_B_MAX: BIN_LOOP(T, a >= b ? a : b) break;    \
    case TTT_B_MIN: BIN_LOOP(T, a <= b ? a : b) break;    \
    case TTT_B_GT: BIN_LOOP(T, a > b ? 1 : 0) break;      \
    case TTT_B_GE: BIN_LOOP(T, a >= b ? 1 : 0) break;     \
    case TTT_B_EQ: BIN_LOOP(T, a == b ? 1 : 0) break;     \
    default: break;                                       \
    }

static void binary_f32(ttt_binary_op op, int64_t n, float *ys, int64_t sy, const float *as, int64_t sa,
                       const float *bs, int64_t sb) {
    BIN_CASES(float)
}

static void binary_f64(ttt_binary_op op, int64_t n, double *ys, int64_t sy, const double *as, int64_t sa,
                       const double *bs, int64_t sb) {
    BIN_CASES(double)
}

int cpu_binary(ttt_backend_state *self, ttt_binary_op op, ttt_tensor *dst, const ttt_tensor *a, const ttt_tensor *b) {
    if (dst->dtype != TTT_F32 && dst->dtype != TTT_F64) return cpu_unsupported("binary", dst->dtype);
    if ((unsigned)op >= TTT_B_COUNT) {
        ttt_backend_error("binary: unknown op %d", (int)op);
        return TTT_ERR;
    }
    const ttt_tensor *ops[3] = {dst, a, b};
    cpu_iter it;
    cpu_iter_init(&it, 3, ops);
    int64_t items = cpu_iter_items(&it);
    int64_t sy = cpu_iter_inner_stride(&it, 0), sa = cpu_iter_inner_stride(&it, 1), sb = cpu_iter_inner_stride(&it, 2);
    int f32 = dst->dtype == TTT_F32;
CPU_PARALLEL(self, cpu_numel(dst),
    _Pragma("omp for schedule(static)")
        for (int64_t w = 0; w < items; w++) {
            int64_t off[3], n;
            cpu_iter_item(&it, w, off, &n);
            if (f32)
                binary_f32(op, n, (float *)dst->data + off[0], sy, (const float *)a->data + off[1], sa,
                           (const float *)b->data + off[2], sb);
            else
                binary_f64(op, n, (double *)dst->data + off[0], sy, (const double *)a->data + off[1], sa,
                           (const double *)b->data + off[2], sb);
        }
);
    return TTT_OK;
}

/* ---- where ------------------------------------------------------------------------- */

int cpu_where(ttt_backend_state *self, ttt_tensor *dst, const ttt_tensor *cond, const ttt_tensor *a, const ttt_tensor *b) {
    if (dst->dtype != TTT_F32 && dst->dtype != TTT_F64) return cpu_unsupported("where", dst->dtype);
    const ttt_tensor *ops[4] = {dst, cond, a, b};
    cpu_iter it;
    cpu_iter_init(&it, 4, ops);
    int64_t items = cpu_iter_items(&it), s[4];
    for (int k = 0; k < 4; k++) s[k] = cpu_iter_inner_stride(&it, k);
    int f32 = dst->dtype == TTT_F32;
CPU_PARALLEL(self, cpu_numel(dst),
    _Pragma("omp for schedule(static)")
        for (int64_t w = 0; w < items; w++) {
            int64_t off[4], n;
            cpu_iter_item(&it, w, off, &n);
            if (f32) {
                float *y = (float *)dst->data + off[0];
                const float *c = (const float *)cond->data + off[1], *x = (const float *)a->data + off[2],
                            *z = (const float *)b->data + off[3];
                for (int64_t i = 0; i < n; i++) y[i * s[0]] = c[i * s[1]] != 0 ? x[i * s[2]] : z[i * s[3]];
            } else {
                double *y = (double *)dst->data + off[0];
                const double *c = (const double *)cond->data + off[1], *x = (const double *)a->data + off[2],
                             *z = (const double *)b->data + off[3];
                for (int64_t i = 0; i < n; i++) y[i * s[0]] = c[i * s[1]] != 0 ? x[i * s[2]] : z[i * s[3]];
            }
        }
);
    return TTT_OK;
}

/* ---- SwiGLU: silu(a) * b and its first-order gradients ------------------------------------------ */

/* Each value is rounded where the composed ops round it (silu(a), then the product; dy b, silu'(a),
 * then their product; dy silu(a)), with their formulas, so the fused op and the composed ops give the
 * same bits on the CPU. */
#define SWIGLU_FWD(T, SIGMOID)                                        \
    for (int64_t i = i0; i < i1; i++) {                               \
        const T x = a[i], s = (T)(x * SIGMOID(x));                    \
        y[i] = (T)(s * b[i]);                                         \
    }
#define SWIGLU_BWD(T, SIGMOID)                                                                  \
    for (int64_t i = i0; i < i1; i++) {                                                         \
        const T x = a[i], g = dy[i];                                                            \
        if (da) {                                                                               \
            const T gb = (T)(g * b[i]), sg = (T)SILU_GRAD(T, SIGMOID, x);                      \
            da[i] = (T)(gb * sg);                                                               \
        }                                                                                       \
        if (db) {                                                                               \
            const T s = (T)(x * SIGMOID(x));                                                    \
            db[i] = (T)(g * s);                                                                 \
        }                                                                                       \
    }

int cpu_swiglu(ttt_backend_state *self, ttt_tensor *dst, const ttt_tensor *a_t, const ttt_tensor *b_t) {
    if (dst->dtype != TTT_F32 && dst->dtype != TTT_F64) return cpu_unsupported("swiglu", dst->dtype);
    const int64_t n = cpu_numel(dst), chunks = (n + CPU_CHUNK - 1) / CPU_CHUNK;
    const int f32 = dst->dtype == TTT_F32;
CPU_PARALLEL(self, n,
    _Pragma("omp for schedule(static)")
        for (int64_t c = 0; c < chunks; c++) {
            const int64_t i0 = c * CPU_CHUNK, i1 = i0 + CPU_CHUNK < n ? i0 + CPU_CHUNK : n;
            if (f32) {
                float *y = dst->data;
                const float *a = a_t->data, *b = b_t->data;
                SWIGLU_FWD(float, sigmoid_f32)
            } else {
                double *y = dst->data;
                const double *a = a_t->data, *b = b_t->data;
                SWIGLU_FWD(double, sigmoid_d)
            }
        }
);
    return TTT_OK;
}

int cpu_swiglu_bwd(ttt_backend_state *self, ttt_tensor *da_t, ttt_tensor *db_t, const ttt_tensor *a_t,
                   const ttt_tensor *b_t, const ttt_tensor *dy_t) {
    if (dy_t->dtype != TTT_F32 && dy_t->dtype != TTT_F64) return cpu_unsupported("swiglu (backward)", dy_t->dtype);
    const int64_t n = cpu_numel(dy_t), chunks = (n + CPU_CHUNK - 1) / CPU_CHUNK;
    const int f32 = dy_t->dtype == TTT_F32;
CPU_PARALLEL(self, 2 * n,
    _Pragma("omp for schedule(static)")
        for (int64_t c = 0; c < chunks; c++) {
            const int64_t i0 = c * CPU_CHUNK, i1 = i0 + CPU_CHUNK < n ? i0 + CPU_CHUNK : n;
            if (f32) {
                float *da = da_t ? da_t->data : NULL, *db = db_t ? db_t->data : NULL;
                const float *a = a_t->data, *b = b_t->data, *dy = dy_t->data;
                SWIGLU_BWD(float, sigmoid_f32)
            } else {
                double *da = da_t ? da_t->data : NULL, *db = db_t ? db_t->data : NULL;
                const double *a = a_t->data, *b = b_t->data, *dy = dy_t->data;
                SWIGLU_BWD(double, sigmoid_d)
            }
        }
);
    return TTT_OK;
}
