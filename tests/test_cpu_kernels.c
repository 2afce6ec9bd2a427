/* CPU backend kernels against naive reference loops in double. Tensors are
 * built by hand (no context), so this exercises exactly the backend.h
 * contract: strided and broadcast (stride 0) sources, transposed views, odd
 * sizes, sizes large enough to take the OpenMP paths, f32 and f64. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ttt/backend.h"

static const ttt_backend *B;
static ttt_backend_state *S; /* one CPU instance, 2 threads */

/* ---- scratch memory, freed after each test ---------------------------------------- */

static void *scratch[4096];
static int nscratch;

static void *salloc(size_t bytes) {
    void *p = calloc(bytes ? bytes : 1, 1);
    if (!p || nscratch == (int)(sizeof scratch / sizeof *scratch)) abort();
    return scratch[nscratch++] = p;
}

static void sfree_all(void) {
    while (nscratch) free(scratch[--nscratch]);
}

/* ---- hand-built tensors ---------------------------------------------------------- */

static size_t esize(ttt_dtype dt) { return dt == TTT_F64 ? 8 : dt == TTT_BF16 ? 2 : 4; }

static const char *dname(ttt_dtype dt) {
    static const char *n[] = {"f32", "f64", "bf16", "i32"};
    return n[dt];
}

static int64_t numel_of(int nd, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= shape[i];
    return n;
}

/* A tensor over `data`; stride NULL means dense row-major. */
static ttt_tensor view(ttt_dtype dt, int nd, const int64_t *shape, const int64_t *stride, void *data) {
    ttt_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = dt;
    t.device = TTT_CPU;
    t.ndim = nd;
    int64_t s = 1;
    for (int i = nd - 1; i >= 0; i--) {
        t.shape[i] = shape[i];
        t.stride[i] = stride ? stride[i] : s;
        s *= shape[i];
    }
    t.data = data;
    return t;
}

/* A dense tensor with fresh zeroed storage. */
static ttt_tensor dense(ttt_dtype dt, int nd, const int64_t *shape) {
    return view(dt, nd, shape, NULL, salloc((size_t)numel_of(nd, shape) * esize(dt)));
}

static double load(ttt_dtype dt, const void *p, int64_t off) {
    switch (dt) {
    case TTT_F32: return ((const float *)p)[off];
    case TTT_F64: return ((const double *)p)[off];
    case TTT_BF16: return ttt_bf16_to_f32(((const uint16_t *)p)[off]);
    case TTT_I32: return ((const int32_t *)p)[off];
    }
    return 0;
}

static void store(ttt_dtype dt, void *p, int64_t off, double v) {
    switch (dt) {
    case TTT_F32: ((float *)p)[off] = (float)v; break;
    case TTT_F64: ((double *)p)[off] = v; break;
    case TTT_BF16: ((uint16_t *)p)[off] = ttt_f32_to_bf16((float)v); break;
    case TTT_I32: ((int32_t *)p)[off] = (int32_t)v; break;
    }
}

/* Element offset of the i-th element (row-major logical order). */
static int64_t offset_of(const ttt_tensor *t, int64_t i) {
    int64_t off = 0;
    for (int d = t->ndim - 1; d >= 0; d--) {
        off += (i % t->shape[d]) * t->stride[d];
        i /= t->shape[d];
    }
    return off;
}

static double geti(const ttt_tensor *t, int64_t i) { return load(t->dtype, t->data, offset_of(t, i)); }
static void seti(ttt_tensor *t, int64_t i, double v) { store(t->dtype, t->data, offset_of(t, i), v); }
static int64_t numel(const ttt_tensor *t) { return numel_of(t->ndim, t->shape); }

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double urand(void) { /* uniform [0, 1) */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
/* Multiples of 1/8 in [-2, 2]: exact in every dtype, hit 0 and ties for EQ. */
static double qrand(void) { return floor(urand() * 33.0) / 8.0 - 2.0; }

/* Fill a whole storage buffer of n elements (not just the view). */
static void fill_buf(ttt_dtype dt, void *p, int64_t n, double lo, double hi, int quantize) {
    for (int64_t i = 0; i < n; i++) store(dt, p, i, quantize ? qrand() : lo + (hi - lo) * urand());
}

/* Storage of `nstore` random elements, viewed through shape/stride. */
static ttt_tensor rand_view(ttt_dtype dt, int nd, const int64_t *shape, const int64_t *stride, int64_t nstore,
                            double lo, double hi, int quantize) {
    void *p = salloc((size_t)nstore * esize(dt));
    fill_buf(dt, p, nstore, lo, hi, quantize);
    return view(dt, nd, shape, stride, p);
}

static ttt_tensor rand_dense(ttt_dtype dt, int nd, const int64_t *shape, double lo, double hi) {
    return rand_view(dt, nd, shape, NULL, numel_of(nd, shape), lo, hi, 0);
}

/* ---- comparison -------------------------------------------------------------------- */

static double tol_of(ttt_dtype dt) { return dt == TTT_F32 ? 3e-5 : 1e-11; }

static int near(double got, double want, double tol) {
    if (isnan(want)) return isnan(got);
    if (isinf(want)) return got == want;
    return fabs(got - want) <= tol * (1.0 + fabs(want));
}

/* Compares every element of t with ref[] (logical order); reports the first miss. */
static void check_all(const char *what, const ttt_tensor *t, const double *ref, double tol) {
    int64_t n = numel(t);
    for (int64_t i = 0; i < n; i++) {
        double g = geti(t, i);
        if (!near(g, ref[i], tol)) {
            CHECK_MSG(0, "%s [%s]: element %lld = %.10g, want %.10g", what, dname(t->dtype), (long long)i, g, ref[i]);
            return;
        }
    }
    CHECK(1);
}

static double *refbuf(int64_t n) { return salloc((size_t)(n ? n : 1) * sizeof(double)); }

static const ttt_dtype FLOATS[2] = {TTT_F32, TTT_F64};

/* Source layouts for the elementwise tests: each yields a view of `shape`. */
enum { L_DENSE, L_TRANSPOSED, L_BROADCAST, L_SLICED, L_COUNT };
static const char *LNAME[] = {"dense", "transposed", "broadcast", "sliced"};

static ttt_tensor layout_view(ttt_dtype dt, int nd, const int64_t *shape, int layout, int quantize, double lo,
                              double hi) {
    int64_t st[TTT_MAX_DIMS], s = 1, n = numel_of(nd, shape);
    switch (layout) {
    case L_TRANSPOSED: /* storage has the last two axes swapped */
        {
            int64_t sh[TTT_MAX_DIMS];
            memcpy(sh, shape, (size_t)nd * sizeof *sh);
            sh[nd - 1] = shape[nd - 2];
            sh[nd - 2] = shape[nd - 1];
            for (int d = nd - 1; d >= 0; d--) {
                st[d] = s;
                s *= sh[d];
            }
            int64_t t = st[nd - 1];
            st[nd - 1] = st[nd - 2];
            st[nd - 2] = t;
        }
        return rand_view(dt, nd, shape, st, n, lo, hi, quantize);
    case L_BROADCAST: /* axis 1 (or 0 for 1-d) broadcast, others dense */
        for (int d = nd - 1; d >= 0; d--) {
            int bd = d == (nd > 1 ? 1 : 0);
            st[d] = bd ? 0 : s;
            if (!bd) s *= shape[d];
        }
        return rand_view(dt, nd, shape, st, s, lo, hi, quantize);
    case L_SLICED: /* every other element of the last axis */
        for (int d = nd - 1; d >= 0; d--) {
            st[d] = d == nd - 1 ? 2 * s : s;
            s *= d == nd - 1 ? 2 * shape[d] : shape[d];
        }
        return rand_view(dt, nd, shape, st, s, lo, hi, quantize);
    default: return rand_view(dt, nd, shape, NULL, n, lo, hi, quantize);
    }
}

/* Shapes for the elementwise tests: odd, large enough for OpenMP (> 32768),
 * and one whose merged inner axis exceeds the iterator's chunk. */
static const int64_t SHAPES[][3] = {{3, 5, 7}, {1, 1, 9}, {40, 33, 31}, {2, 3, 20000}};
enum { NSHAPES = sizeof SHAPES / sizeof *SHAPES };

/* ---- backend table, memory ----------------------------------------------------------- */

static void test_table(void) {
    B = ttt_backend_cpu();
    S = B->open(&(ttt_backend_config){.threads = 2});
    CHECK(S != NULL);
    CHECK(B && !strcmp(B->name, "cpu") && B->device == TTT_CPU);
    CHECK(ttt_backend_for(TTT_CPU) == B);
    size_t sizes[] = {0, 1, 63, 64, 65, 1000};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        void *p = B->alloc(S, sizes[i]);
        CHECK(p && ((uintptr_t)p & 63) == 0);
        B->free(S, p);
    }
    char host[100], back[100];
    for (int i = 0; i < 100; i++) host[i] = (char)i;
    void *d = B->alloc(S, 100);
    CHECK(B->upload(S, d, host, 100) == TTT_OK && B->download(S, back, d, 100) == TTT_OK && !memcmp(host, back, 100));
    CHECK(B->synchronize(S) == TTT_OK);
    B->free(S, d);
}

/* ---- copy and fill ----------------------------------------------------------------- */

/* What storing v into dtype dt and reading it back gives. */
static double through(ttt_dtype dt, double v) {
    char buf[8];
    store(dt, buf, 0, v);
    return load(dt, buf, 0);
}

static void test_copy(void) {
    const ttt_dtype all[4] = {TTT_F32, TTT_F64, TTT_BF16, TTT_I32};
    const int64_t shape[3] = {3, 5, 7};
    for (int si = 0; si < 4; si++)
        for (int di = 0; di < 4; di++)
            for (int lay = 0; lay < L_COUNT; lay++) {
                ttt_dtype sd = all[si], dd = all[di];
                ttt_tensor src = layout_view(sd, 3, shape, lay, 0, -40, 40);
                ttt_tensor dst = dense(dd, 3, shape);
                int64_t n = numel(&dst);
                double *ref = refbuf(n);
                for (int64_t i = 0; i < n; i++) ref[i] = through(dd, geti(&src, i));
                CHECK(B->copy(S, &dst, &src) == TTT_OK);
                char what[64];
                snprintf(what, sizeof what, "copy %s->%s %s", dname(sd), dname(dd), LNAME[lay]);
                check_all(what, &dst, ref, 0);
                sfree_all();
            }
    /* strided destination (a transposed view), large enough for the parallel path */
    for (int k = 0; k < 2; k++) {
        const int64_t sh[2] = {300, 211}, dst_st[2] = {1, 300};
        ttt_tensor src = rand_dense(FLOATS[k], 2, sh, -1, 1);
        ttt_tensor dst = view(FLOATS[k], 2, sh, dst_st, salloc(300 * 211 * 8));
        double *ref = refbuf(300 * 211);
        for (int64_t i = 0; i < 300 * 211; i++) ref[i] = geti(&src, i);
        CHECK(B->copy(S, &dst, &src) == TTT_OK);
        check_all("copy to transposed dst", &dst, ref, 0);
        sfree_all();
    }
    /* float -> i32 truncates toward zero; NaN and out-of-range values saturate */
    {
        const int64_t sh[1] = {6};
        ttt_tensor f = dense(TTT_F64, 1, sh), i = dense(TTT_I32, 1, sh);
        const double in[6] = {2.7, -2.7, NAN, 1e10, -1e10, -0.5};
        const int32_t want[6] = {2, -2, 0, INT32_MAX, INT32_MIN, 0};
        memcpy(f.data, in, sizeof in);
        CHECK(B->copy(S, &i, &f) == TTT_OK && !memcmp(i.data, want, sizeof want));
        sfree_all();
    }
    /* bf16 round trip: f32 -> bf16 -> f32 keeps 8 significant bits, rounds to nearest even */
    {
        const int64_t sh[1] = {1000};
        ttt_tensor f = rand_dense(TTT_F32, 1, sh, -100, 100), h = dense(TTT_BF16, 1, sh), g = dense(TTT_F32, 1, sh);
        ((float *)f.data)[0] = 1.0f + 1.0f / 256.0f; /* a tie: rounds to even (1.0) */
        ((float *)f.data)[1] = 1.0f + 3.0f / 256.0f; /* a tie: rounds to even (1 + 1/64) */
        CHECK(B->copy(S, &h, &f) == TTT_OK && B->copy(S, &g, &h) == TTT_OK);
        int ok = 1;
        for (int i = 0; i < 1000; i++) {
            float x = ((float *)f.data)[i], y = ((float *)g.data)[i];
            ok &= fabsf(x - y) <= fabsf(x) / 256.0f && ((uint16_t *)h.data)[i] == ttt_f32_to_bf16(x);
        }
        CHECK(ok);
        CHECK(((float *)g.data)[0] == 1.0f && ((float *)g.data)[1] == 1.0f + 1.0f / 64.0f);
        sfree_all();
    }
}

static void test_fill(void) {
    const ttt_dtype all[4] = {TTT_F32, TTT_F64, TTT_BF16, TTT_I32};
    for (int k = 0; k < 4; k++)
        for (int big = 0; big < 2; big++) {
            /* dst = every other column of a [R, 2C] buffer; the skipped columns must stay 7 */
            int64_t r = big ? 300 : 3, c = big ? 150 : 5;
            const int64_t sh[2] = {r, c}, st[2] = {2 * c, 2};
            void *p = salloc((size_t)(r * 2 * c) * esize(all[k]));
            for (int64_t i = 0; i < r * 2 * c; i++) store(all[k], p, i, 7);
            ttt_tensor t = view(all[k], 2, sh, st, p);
            double v = all[k] == TTT_I32 ? -3 : -2.5;
            CHECK(B->fill(S, &t, v) == TTT_OK);
            int ok = 1;
            for (int64_t i = 0; i < r * 2 * c; i++) ok &= load(all[k], p, i) == (i % 2 ? 7 : v);
            CHECK_MSG(ok, "fill %s strided", dname(all[k]));
            /* dense, zero (memset path) */
            ttt_tensor d = view(all[k], 2, (int64_t[]){r, 2 * c}, NULL, p);
            CHECK(B->fill(S, &d, 0.0) == TTT_OK);
            ok = 1;
            for (int64_t i = 0; i < r * 2 * c; i++) ok &= load(all[k], p, i) == 0;
            CHECK_MSG(ok, "fill %s zero", dname(all[k]));
            sfree_all();
        }
}

/* ---- elementwise ----------------------------------------------------------------- */

static double sigmoid_ref(double x) { return 1.0 / (1.0 + exp(-x)); }

static double unary_ref(ttt_unary_op op, double x, double p0, double p1) {
    switch (op) {
    case TTT_U_NEG: return -x;
    case TTT_U_EXP: return exp(x);
    case TTT_U_LOG: return log(x);
    case TTT_U_TANH: return tanh(x);
    case TTT_U_SIGMOID: return sigmoid_ref(x);
    case TTT_U_GELU: return 0.5 * x * (1 + tanh(0.7978845608028654 /* sqrt(2/pi) */ * (x + 0.044715 * x * x * x)));
    case TTT_U_SILU: return x * sigmoid_ref(x);
    case TTT_U_RELU: return x > 0 ? x : 0;
    case TTT_U_SQRT: return sqrt(x);
    case TTT_U_RSQRT: return 1 / sqrt(x);
    case TTT_U_ABS: return fabs(x);
    case TTT_U_SIGN: return x > 0 ? 1 : x < 0 ? -1 : 0;
    case TTT_U_STEP: return x > 0 ? 1 : 0;
    case TTT_U_POW: return pow(x, p0);
    case TTT_U_CLAMP: return x < p0 ? p0 : x > p1 ? p1 : x;
    case TTT_U_INRANGE: return p0 <= x && x <= p1 ? 1 : 0;
    case TTT_U_AFFINE: return p0 * x + p1;
    case TTT_U_ELU1: return x > 0 ? x + 1 : exp(x);
    case TTT_U_GELU_GRAD: { /* analytic; the gradcheck case gelu checks it against finite differences */
        const double c = 0.7978845608028654, k = 0.044715, t = tanh(c * (x + k * x * x * x));
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * k * x * x);
    }
    case TTT_U_SILU_GRAD: return sigmoid_ref(x) * (1 + x * (1 - sigmoid_ref(x)));
    default: return NAN;
    }
}

static void test_unary(void) {
    for (int k = 0; k < 2; k++)
        for (int s = 0; s < NSHAPES; s++)
            for (int lay = 0; lay < L_COUNT; lay++)
                for (int op = 0; op < TTT_U_COUNT; op++) {
                    if (s >= 2 && op % 4 != lay) continue; /* big shapes: a sample of (op, layout) */
                    ttt_dtype dt = FLOATS[k];
                    int positive = op == TTT_U_LOG || op == TTT_U_SQRT || op == TTT_U_RSQRT || op == TTT_U_POW;
                    double p0 = op == TTT_U_POW ? 2.5 : op == TTT_U_AFFINE ? 1.5 : -0.5;
                    double p1 = op == TTT_U_AFFINE ? -0.25 : 0.75;
                    ttt_tensor src = layout_view(dt, 3, SHAPES[s], lay, 1, 0, 0);
                    int64_t n = numel(&src);
                    if (positive) /* shift the quantized values into (0, 4.25] */
                        for (int64_t i = 0; i < n; i++) seti(&src, i, fabs(geti(&src, i)) + 0.125);
                    ttt_tensor dst = dense(dt, 3, SHAPES[s]);
                    double *ref = refbuf(n);
                    for (int64_t i = 0; i < n; i++) ref[i] = unary_ref((ttt_unary_op)op, geti(&src, i), p0, p1);
                    CHECK(B->unary(S, (ttt_unary_op)op, &dst, &src, p0, p1) == TTT_OK);
                    char what[64];
                    snprintf(what, sizeof what, "unary op %d %s shape %d", op, LNAME[lay], s);
                    check_all(what, &dst, ref, tol_of(dt));
                    sfree_all();
                }
    /* sigmoid / silu / gelu / exp-type ops stay finite and exact at large |x| */
    for (int k = 0; k < 2; k++) {
        const double xs[6] = {-1000, -100, -30, 30, 100, 1000};
        ttt_tensor src = dense(FLOATS[k], 1, (int64_t[]){6}), dst = dense(FLOATS[k], 1, (int64_t[]){6});
        for (int i = 0; i < 6; i++) seti(&src, i, xs[i]);
        const ttt_unary_op ops[3] = {TTT_U_SIGMOID, TTT_U_SILU, TTT_U_GELU};
        for (int o = 0; o < 3; o++) {
            double ref[6];
            for (int i = 0; i < 6; i++) ref[i] = unary_ref(ops[o], xs[i], 0, 0);
            if (ops[o] == TTT_U_GELU) ref[0] = ref[1] = -0.0; /* 0.5 x (1 + tanh(-big)) underflows to 0 */
            CHECK(B->unary(S, ops[o], &dst, &src, 0, 0) == TTT_OK);
            check_all("unary large |x|", &dst, ref, tol_of(FLOATS[k]));
        }
        sfree_all();
    }
    /* The f32 exp / tanh / sigmoid / silu / gelu are the backend's own (vectorizable, no libm calls): their
     * error, in units of the f32 spacing at the f64 value, over a dense sweep, and the special values. */
    {
        const ttt_unary_op ops[5] = {TTT_U_EXP, TTT_U_TANH, TTT_U_SIGMOID, TTT_U_SILU, TTT_U_GELU};
        const double lo[5] = {-103.0, -12.0, -30.0, -30.0, -12.0}, hi[5] = {88.7, 12.0, 30.0, 30.0, 12.0};
        const double max_ulp[5] = {2.0, 4.0, 4.0, 4.0, 6.0};
        enum { N = 200003 };
        ttt_tensor src = dense(TTT_F32, 1, (int64_t[]){N}), dst = dense(TTT_F32, 1, (int64_t[]){N});
        for (int o = 0; o < 5; o++) {
            for (int64_t i = 0; i < N; i++) seti(&src, i, (float)(lo[o] + (hi[o] - lo[o]) * (double)i / (N - 1)));
            CHECK(B->unary(S, ops[o], &dst, &src, 0, 0) == TTT_OK);
            double worst = 0, at = 0;
            for (int64_t i = 0; i < N; i++) {
                const double x = geti(&src, i), want = unary_ref(ops[o], x, 0, 0), got = geti(&dst, i);
                if (fabs(want) < 1e-30) continue; /* f32 subnormals: absolute error below */
                int e; /* gelu: 1 + tanh(y) cancels for x << 0 in any f32 formula; its error scales with |x| */
                frexp(ops[o] == TTT_U_GELU && fabs(x) > fabs(want) ? x : want, &e);
                const double ulp = ldexp(1.0, e - 24), err = fabs(got - want) / ulp;
                if (err > worst) worst = err, at = x;
            }
            CHECK_MSG(worst <= max_ulp[o], "f32 unary op %d: %.2f ulp at x = %.9g (allowed %.0f)", (int)ops[o], worst, at,
                      max_ulp[o]);
        }
        const double special[5] = {NAN, INFINITY, -INFINITY, 0.0, -0.0};
        ttt_tensor s5 = dense(TTT_F32, 1, (int64_t[]){5}), d5 = dense(TTT_F32, 1, (int64_t[]){5});
        for (int i = 0; i < 5; i++) seti(&s5, i, special[i]);
        for (int o = 0; o < 3; o++) {
            CHECK(B->unary(S, ops[o], &d5, &s5, 0, 0) == TTT_OK);
            for (int i = 0; i < 5; i++) {
                const double want = unary_ref(ops[o], special[i], 0, 0), got = geti(&d5, i);
                CHECK_MSG(isnan(want) ? isnan(got) : got == want, "f32 unary op %d of %g: %g, want %g", (int)ops[o],
                          special[i], got, want);
            }
        }
        sfree_all();
    }
    /* unsupported dtype */
    {
        ttt_tensor a = dense(TTT_I32, 1, (int64_t[]){4}), b = dense(TTT_I32, 1, (int64_t[]){4});
        CHECK(B->unary(S, TTT_U_NEG, &a, &b, 0, 0) == TTT_ERR && strstr(ttt_backend_last_error(), "unary") &&
              strstr(ttt_backend_last_error(), "i32"));
        CHECK(B->binary(S, TTT_B_ADD, &a, &b, &b) == TTT_ERR && strstr(ttt_backend_last_error(), "binary"));
        CHECK(B->where(S, &a, &b, &b, &b) == TTT_ERR && strstr(ttt_backend_last_error(), "where"));
        ttt_tensor h = dense(TTT_BF16, 1, (int64_t[]){4});
        CHECK(B->unary(S, TTT_U_EXP, &h, &h, 0, 0) == TTT_ERR && strstr(ttt_backend_last_error(), "bf16"));
        sfree_all();
    }
}

static double binary_ref(ttt_binary_op op, double a, double b) {
    switch (op) {
    case TTT_B_ADD: return a + b;
    case TTT_B_SUB: return a - b;
    case TTT_B_MUL: return a * b;
    case TTT_B_DIV: return a / b;
    case TTT_B_MAX: return a > b ? a : b;
    case TTT_B_MIN: return a < b ? a : b;
    case TTT_B_GT: return a > b;
    case TTT_B_GE: return a >= b;
    case TTT_B_EQ: return a == b;
    default: return NAN;
    }
}

static void test_binary_where(void) {
    for (int k = 0; k < 2; k++)
        for (int s = 0; s < NSHAPES; s++)
            for (int la = 0; la < L_COUNT; la++)
                for (int lb = 0; lb < L_COUNT; lb++) {
                    if (s >= 2 && la != lb && la != L_DENSE) continue; /* keep big shapes quick */
                    ttt_dtype dt = FLOATS[k];
                    ttt_tensor a = layout_view(dt, 3, SHAPES[s], la, 1, 0, 0);
                    ttt_tensor b = layout_view(dt, 3, SHAPES[s], lb, 1, 0, 0);
                    ttt_tensor dst = dense(dt, 3, SHAPES[s]);
                    int64_t n = numel(&dst);
                    double *ref = refbuf(n);
                    for (int op = 0; op < TTT_B_COUNT; op++) {
                        for (int64_t i = 0; i < n; i++) {
                            double x = geti(&a, i), y = geti(&b, i);
                            ref[i] = binary_ref((ttt_binary_op)op, x, y);
                        }
                        CHECK(B->binary(S, (ttt_binary_op)op, &dst, &a, &b) == TTT_OK);
                        char what[80];
                        snprintf(what, sizeof what, "binary op %d a %s b %s shape %d", op, LNAME[la], LNAME[lb], s);
                        check_all(what, &dst, ref, tol_of(dt));
                    }
                    /* where: cond is 1/0 in dst's dtype, laid out like a */
                    ttt_tensor c2 = layout_view(dt, 3, SHAPES[s], la, 1, 0, 0);
                    for (int64_t i = 0; i < n; i++) seti(&c2, i, geti(&c2, i) > 0);
                    for (int64_t i = 0; i < n; i++) ref[i] = geti(&c2, i) != 0 ? geti(&a, i) : geti(&b, i);
                    CHECK(B->where(S, &dst, &c2, &a, &b) == TTT_OK);
                    check_all("where", &dst, ref, 0);
                    sfree_all();
                }
    /* a scalar (0-d) operation */
    for (int k = 0; k < 2; k++) {
        ttt_tensor a = dense(FLOATS[k], 0, NULL), b = dense(FLOATS[k], 0, NULL), d = dense(FLOATS[k], 0, NULL);
        seti(&a, 0, 1.5);
        seti(&b, 0, -4);
        CHECK(B->binary(S, TTT_B_MUL, &d, &a, &b) == TTT_OK && geti(&d, 0) == -6);
        sfree_all();
    }
}

/* ---- reduce ------------------------------------------------------------------------ */

static void reduce_case(ttt_dtype dt, int nd, const int64_t *shape, unsigned mask, ttt_reduce_op op) {
    ttt_tensor src = rand_dense(dt, nd, shape, -1, 1);
    int64_t dshape[TTT_MAX_DIMS];
    for (int d = 0; d < nd; d++) dshape[d] = (mask >> d) & 1 ? 1 : shape[d];
    ttt_tensor dst = dense(dt, nd, dshape);
    int64_t n = numel(&dst), ns = numel(&src);
    double *ref = refbuf(n);
    for (int64_t o = 0; o < n; o++) ref[o] = op == TTT_R_MAX ? -INFINITY : 0;
    for (int64_t i = 0; i < ns; i++) {
        /* the output index of input element i: drop the reduced coordinates */
        int64_t rem = i, o = 0, mul = 1;
        for (int d = nd - 1; d >= 0; d--) {
            int64_t c = rem % shape[d];
            rem /= shape[d];
            if (!((mask >> d) & 1)) o += c * mul;
            mul *= dshape[d];
        }
        double v = geti(&src, i);
        ref[o] = op == TTT_R_MAX ? fmax(ref[o], v) : ref[o] + v;
    }
    CHECK(B->reduce(S, op, &dst, &src) == TTT_OK);
    char what[80];
    snprintf(what, sizeof what, "reduce %s mask %u nd %d", op == TTT_R_MAX ? "max" : "sum", mask, nd);
    /* f32 sums accumulate in double: only the final rounding to float remains */
    check_all(what, &dst, ref, dt == TTT_F32 ? 2e-7 : 1e-12);
}

static void test_reduce(void) {
    const int64_t odd[3] = {3, 5, 7}, big[2] = {400, 301}, four[4] = {4, 3, 5, 6};
    for (int k = 0; k < 2; k++)
        for (int op = 0; op < 2; op++) {
            for (unsigned mask = 0; mask < 8; mask++) reduce_case(FLOATS[k], 3, odd, mask, (ttt_reduce_op)op);
            for (unsigned mask = 0; mask < 4; mask++) reduce_case(FLOATS[k], 2, big, mask, (ttt_reduce_op)op);
            for (unsigned mask = 0; mask < 16; mask++) reduce_case(FLOATS[k], 4, four, mask, (ttt_reduce_op)op);
            /* a contiguous kept axis longer than one 256-column block, reduced axes interleaved */
            for (unsigned mask = 0; mask < 16; mask++)
                reduce_case(FLOATS[k], 4, (int64_t[]){3, 2, 4, 300}, mask, (ttt_reduce_op)op);
            /* many rows over few columns: the rows cut into chunks, partial sums added in order */
            for (unsigned mask = 0; mask < 4; mask++)
                reduce_case(FLOATS[k], 2, (int64_t[]){5000, 3}, mask, (ttt_reduce_op)op);
            reduce_case(FLOATS[k], 3, (int64_t[]){40, 61, 70}, 0x3, (ttt_reduce_op)op);
            reduce_case(FLOATS[k], 4, (int64_t[]){9, 2, 130, 5}, 0x5, (ttt_reduce_op)op);
            /* size-1 axes in the source */
            reduce_case(FLOATS[k], 4, (int64_t[]){1, 6, 1, 5}, 0x2, (ttt_reduce_op)op);
            reduce_case(FLOATS[k], 4, (int64_t[]){1, 6, 1, 5}, 0xf, (ttt_reduce_op)op);
            sfree_all();
        }
    /* f32 sum of a million 0.1f values: float accumulation would be off by ~1e-3 relative */
    {
        int64_t n = 1000000;
        ttt_tensor src = dense(TTT_F32, 1, &n), dst = dense(TTT_F32, 1, (int64_t[]){1});
        for (int64_t i = 0; i < n; i++) ((float *)src.data)[i] = 0.1f;
        CHECK(B->reduce(S, TTT_R_SUM, &dst, &src) == TTT_OK);
        CHECK_NEAR(((float *)dst.data)[0], (double)0.1f * 1e6, 0.01);
        sfree_all();
    }
    {
        ttt_tensor i = dense(TTT_I32, 1, (int64_t[]){4}), o = dense(TTT_I32, 1, (int64_t[]){1});
        CHECK(B->reduce(S, TTT_R_SUM, &o, &i) == TTT_ERR && strstr(ttt_backend_last_error(), "reduce"));
        sfree_all();
    }
}

/* ---- matmul -------------------------------------------------------------------------- */

/* A matrix operand for C [b0, b1, M, N]: the logical op(X) is [R, C]; storage
 * is [C, R] when trans. bcast: 0 none, 1 batch axis 0 broadcast, 2 axis 1.
 * pad: extra elements per stored row. rowb: stored rows all alias (stride 0). */
static ttt_tensor mm_operand(ttt_dtype dt, int nd, const int64_t *batch, int64_t r, int64_t c, int trans, int bcast,
                             int64_t pad, int rowb) {
    int64_t sr = trans ? c : r, sc = trans ? r : c; /* stored rows, cols */
    int64_t ld = sc + pad;
    int64_t shape[4], stride[4];
    int nb = nd - 2;
    shape[nb] = sr;
    shape[nb + 1] = sc;
    stride[nb + 1] = 1;
    stride[nb] = rowb ? 0 : ld;
    int64_t mat = rowb ? ld : sr * ld, total = mat;
    for (int d = nb - 1; d >= 0; d--) {
        shape[d] = batch[d];
        int b = (bcast == 1 && d == 0) || (bcast == 2 && d == 1);
        stride[d] = b ? 0 : total;
        if (!b) total *= batch[d];
    }
    return rand_view(dt, nd, shape, stride, total, -1, 1, 0);
}

static double mm_get(const ttt_tensor *x, const int64_t *bi, int64_t i, int64_t j, int trans) {
    int nd = x->ndim;
    int64_t off = 0;
    for (int d = 0; d < nd - 2; d++) off += bi[d] * x->stride[d];
    if (trans) {
        int64_t t = i;
        i = j;
        j = t;
    }
    off += i * x->stride[nd - 2] + j * x->stride[nd - 1];
    return load(x->dtype, x->data, off);
}

static void matmul_case(ttt_dtype dt, int nd, int64_t m, int64_t n, int64_t kk, int ta, int tb, int bca, int bcb,
                        int64_t pad, int rowb_a, int rowb_b) {
    const int64_t batch[2] = {2, 3};
    ttt_tensor a = mm_operand(dt, nd, batch, m, kk, ta, bca, pad, rowb_a);
    ttt_tensor b = mm_operand(dt, nd, batch, kk, n, tb, bcb, pad, rowb_b);
    int64_t cs[4];
    for (int d = 0; d < nd - 2; d++) cs[d] = batch[d];
    cs[nd - 2] = m;
    cs[nd - 1] = n;
    ttt_tensor c = dense(dt, nd, cs);
    int64_t total = numel(&c);
    for (int64_t i = 0; i < total; i++) seti(&c, i, 12345); /* garbage: C must be overwritten */
    double *ref = refbuf(total);
    int64_t nbatch = nd == 4 ? 6 : 1;
    for (int64_t bb = 0; bb < nbatch; bb++) {
        int64_t bi[2] = {bb / 3, bb % 3};
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                double s = 0;
                for (int64_t p = 0; p < kk; p++) s += mm_get(&a, bi, i, p, ta) * mm_get(&b, bi, p, j, tb);
                ref[(bb * m + i) * n + j] = s;
            }
    }
    CHECK(B->matmul(S, &c, &a, &b, ta, tb) == TTT_OK);
    char what[128];
    snprintf(what, sizeof what, "matmul nd %d %lldx%lldx%lld ta %d tb %d bc %d%d pad %lld rowb %d%d", nd, (long long)m,
             (long long)n, (long long)kk, ta, tb, bca, bcb, (long long)pad, rowb_a, rowb_b);
    check_all(what, &c, ref, dt == TTT_F32 ? 1e-5 : 1e-12);
    sfree_all();
}

static void test_matmul(void) {
    for (int k = 0; k < 2; k++) {
        ttt_dtype dt = FLOATS[k];
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                matmul_case(dt, 2, 5, 7, 3, ta, tb, 0, 0, 0, 0, 0);
                matmul_case(dt, 2, 33, 17, 65, ta, tb, 0, 0, 3, 0, 0); /* padded leading dims */
                matmul_case(dt, 4, 5, 7, 9, ta, tb, 1, 2, 0, 0, 0);    /* broadcast batches */
                matmul_case(dt, 4, 4, 6, 3, ta, tb, 2, 0, 2, 0, 0);
                matmul_case(dt, 4, 1, 6, 3, ta, tb, 0, 1, 0, 0, 0);    /* M = 1 */
                matmul_case(dt, 4, 6, 1, 3, ta, tb, 0, 0, 0, 0, 0);    /* N = 1 */
                matmul_case(dt, 2, 4, 5, 1, ta, tb, 0, 0, 0, 0, 0);    /* K = 1 */
                matmul_case(dt, 4, 4, 5, 0, ta, tb, 0, 0, 0, 0, 0);    /* K = 0: C = 0 */
                matmul_case(dt, 2, 4, 5, 6, ta, tb, 0, 0, 0, 1, 0);    /* A rows alias (expanded) */
                matmul_case(dt, 4, 4, 5, 6, ta, tb, 1, 0, 0, 0, 1);    /* B rows alias */
                matmul_case(dt, 2, 130, 70, 90, ta, tb, 0, 0, 0, 0, 0); /* BLAS-sized */
            }
        /* M = 1 with a meaningless row stride (smaller than the row) */
        {
            const int64_t as[2] = {1, 4}, ast[2] = {1, 1}, bs[2] = {4, 3};
            ttt_tensor a = rand_view(dt, 2, as, ast, 4, -1, 1, 0), b = rand_dense(dt, 2, bs, -1, 1);
            ttt_tensor c = dense(dt, 2, (int64_t[]){1, 3});
            double ref[3] = {0, 0, 0};
            for (int j = 0; j < 3; j++)
                for (int p = 0; p < 4; p++) ref[j] += load(dt, a.data, p) * load(dt, b.data, p * 3 + j);
            CHECK(B->matmul(S, &c, &a, &b, 0, 0) == TTT_OK);
            check_all("matmul M=1 odd stride", &c, ref, 1e-5);
            sfree_all();
        }
    }
    ttt_tensor i = dense(TTT_I32, 2, (int64_t[]){2, 2});
    CHECK(B->matmul(S, &i, &i, &i, 0, 0) == TTT_ERR && strstr(ttt_backend_last_error(), "matmul"));
    sfree_all();
}

/* ---- last-axis kernels ------------------------------------------------------------------ */

static void test_softmax_norm(void) {
    const int64_t shapes[3][3] = {{3, 5, 7}, {1, 1, 1}, {64, 16, 40}};
    for (int k = 0; k < 2; k++)
        for (int s = 0; s < 3; s++) {
            ttt_dtype dt = FLOATS[k];
            ttt_tensor x = rand_dense(dt, 3, shapes[s], -3, 3), y = dense(dt, 3, shapes[s]);
            int64_t n = numel(&x), cols = shapes[s][2], rows = n / cols;
            if (s == 0) /* a row with huge logits: still finite */
                for (int j = 0; j < cols; j++) seti(&x, j, 1000.0 + j);
            double *ref = refbuf(n);
            for (int lg = 0; lg < 2; lg++) {
                for (int64_t r = 0; r < rows; r++) {
                    double mx = -INFINITY, sum = 0;
                    for (int64_t j = 0; j < cols; j++) mx = fmax(mx, geti(&x, r * cols + j));
                    for (int64_t j = 0; j < cols; j++) sum += exp(geti(&x, r * cols + j) - mx);
                    for (int64_t j = 0; j < cols; j++) {
                        double z = geti(&x, r * cols + j) - mx;
                        ref[r * cols + j] = lg ? z - log(sum) : exp(z) / sum;
                    }
                }
                CHECK(B->softmax(S, &y, &x, lg) == TTT_OK);
                check_all(lg ? "log_softmax" : "softmax", &y, ref, tol_of(dt));
            }
            for (int kind = 0; kind < 2; kind++) {
                double eps = 1e-5;
                for (int64_t r = 0; r < rows; r++) {
                    double mean = 0, var = 0;
                    if (kind == TTT_NORM_LAYER) {
                        for (int64_t j = 0; j < cols; j++) mean += geti(&x, r * cols + j);
                        mean /= (double)cols;
                    }
                    for (int64_t j = 0; j < cols; j++) var += pow(geti(&x, r * cols + j) - mean, 2);
                    var /= (double)cols;
                    for (int64_t j = 0; j < cols; j++) ref[r * cols + j] = (geti(&x, r * cols + j) - mean) / sqrt(var + eps);
                }
                CHECK(B->norm(S, (ttt_norm_kind)kind, &y, &x, eps) == TTT_OK);
                check_all(kind ? "rms_norm" : "layer_norm", &y, ref, tol_of(dt) * 10);
            }
            sfree_all();
        }
}

static void test_cross_entropy_one_hot(void) {
    for (int k = 0; k < 2; k++) {
        ttt_dtype dt = FLOATS[k];
        const int64_t ls[3] = {2, 3, 5};
        ttt_tensor x = rand_dense(dt, 3, ls, -4, 4), t = dense(TTT_I32, 2, ls), y = dense(dt, 2, ls);
        int32_t *tg = t.data;
        const int32_t tv[6] = {0, 4, -100, 2, 3, 1};
        memcpy(tg, tv, sizeof tv);
        for (int j = 0; j < 5; j++) seti(&x, 5 + j, 500.0 * j); /* row 1: huge logits */
        double ref[6];
        for (int r = 0; r < 6; r++) {
            if (tg[r] == -100) {
                ref[r] = 0;
                continue;
            }
            double mx = -INFINITY, s = 0;
            for (int j = 0; j < 5; j++) mx = fmax(mx, geti(&x, r * 5 + j));
            for (int j = 0; j < 5; j++) s += exp(geti(&x, r * 5 + j) - mx);
            ref[r] = mx + log(s) - geti(&x, r * 5 + tg[r]);
        }
        CHECK(B->cross_entropy(S, &y, &x, &t, -100) == TTT_OK);
        check_all("cross_entropy", &y, ref, tol_of(dt));

        ttt_tensor oh = dense(dt, 3, ls);
        for (int64_t i = 0; i < 30; i++) seti(&oh, i, 9); /* garbage */
        CHECK(B->one_hot(S, &oh, &t, -100) == TTT_OK);
        double ohref[30];
        for (int r = 0; r < 6; r++)
            for (int j = 0; j < 5; j++) ohref[r * 5 + j] = tg[r] == j;
        check_all("one_hot", &oh, ohref, 0);

        /* out-of-range targets */
        tg[2] = 5;
        CHECK(B->cross_entropy(S, &y, &x, &t, -100) == TTT_ERR);
        CHECK_MSG(!strcmp(ttt_backend_last_error(), "cross_entropy: target 5 at row 2 out of range [0, 5)"), "%s",
                  ttt_backend_last_error());
        CHECK(B->one_hot(S, &oh, &t, -100) == TTT_ERR && strstr(ttt_backend_last_error(), "target 5 at row 2"));
        tg[2] = -1;
        CHECK(B->cross_entropy(S, &y, &x, &t, -100) == TTT_ERR && strstr(ttt_backend_last_error(), "target -1 at row 2"));
        CHECK(B->cross_entropy(S, &y, &x, &t, -1) == TTT_OK && geti(&y, 2) == 0); /* -1 is now the ignore index */
        sfree_all();
    }
}

static void test_gather_scatter(void) {
    for (int k = 0; k < 2; k++) {
        ttt_dtype dt = FLOATS[k];
        for (int big = 0; big < 2; big++) {
            int64_t v = big ? 10 : 7, d = big ? 70 : 5, n = big ? 1000 : 9;
            ttt_tensor table = rand_dense(dt, 2, (int64_t[]){v, d}, -1, 1);
            ttt_tensor ids = dense(TTT_I32, 1, &n);
            int32_t *id = ids.data;
            for (int64_t i = 0; i < n; i++) id[i] = (int32_t)((i * 5 + 3) % v); /* repeats */
            ttt_tensor out = dense(dt, 2, (int64_t[]){n, d});
            double *ref = refbuf(n * d);
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = 0; j < d; j++) ref[i * d + j] = geti(&table, id[i] * d + j);
            CHECK(B->gather_rows(S, &out, &table, &ids) == TTT_OK);
            check_all("gather_rows", &out, ref, 0);

            /* scatter-add the gathered rows (times a row factor) back */
            ttt_tensor src = rand_dense(dt, 2, (int64_t[]){n, d}, -1, 1), acc = dense(dt, 2, (int64_t[]){v, d});
            double *sref = refbuf(v * d);
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = 0; j < d; j++) sref[id[i] * d + j] += geti(&src, i * d + j);
            CHECK(B->scatter_add_rows(S, &acc, &src, &ids) == TTT_OK);
            check_all("scatter_add_rows", &acc, sref, tol_of(dt) * 10);

            id[n - 1] = (int32_t)v;
            CHECK(B->gather_rows(S, &out, &table, &ids) == TTT_ERR);
            char want_id[32], want_v[32];
            snprintf(want_id, sizeof want_id, "id %lld", (long long)v);
            snprintf(want_v, sizeof want_v, "[0, %lld)", (long long)v);
            CHECK_MSG(strstr(ttt_backend_last_error(), want_id) && strstr(ttt_backend_last_error(), want_v), "%s",
                      ttt_backend_last_error());
            id[n - 1] = -2;
            CHECK(B->scatter_add_rows(S, &acc, &src, &ids) == TTT_ERR && strstr(ttt_backend_last_error(), "id -2"));
            sfree_all();
        }
    }
}

static void test_rope(void) {
    const int64_t shape[4] = {2, 3, 4, 8}; /* e.g. [B, T, H, D] or [B, H, T, D] */
    for (int k = 0; k < 2; k++)
        for (int axis = 0; axis < 3; axis++)
            for (int inv = 0; inv < 2; inv++) {
                ttt_dtype dt = FLOATS[k];
                ttt_tensor x = rand_dense(dt, 4, shape, -1, 1), y = dense(dt, 4, shape), z = dense(dt, 4, shape);
                int64_t n = numel(&x), dd = shape[3], half = dd / 2, pos0 = 5;
                double theta = 10000.0;
                double *ref = refbuf(n);
                for (int64_t r = 0; r < n / dd; r++) {
                    int64_t idx[3] = {r / 12, (r / 4) % 3, r % 4};
                    double pos = (double)(pos0 + idx[axis]);
                    for (int64_t i = 0; i < half; i++) {
                        double ang = pos * pow(theta, -2.0 * (double)i / (double)dd) * (inv ? -1 : 1);
                        double x1 = geti(&x, r * dd + i), x2 = geti(&x, r * dd + i + half);
                        ref[r * dd + i] = x1 * cos(ang) - x2 * sin(ang);
                        ref[r * dd + i + half] = x2 * cos(ang) + x1 * sin(ang);
                    }
                }
                CHECK(B->rope(S, &y, &x, axis, pos0, theta, inv) == TTT_OK);
                check_all("rope", &y, ref, tol_of(dt));
                /* the inverse undoes it */
                CHECK(B->rope(S, &z, &y, axis, pos0, theta, !inv) == TTT_OK);
                for (int64_t i = 0; i < n; i++) ref[i] = geti(&x, i);
                check_all("rope inverse", &z, ref, tol_of(dt));
                sfree_all();
            }
}

static void test_attn_mask(void) {
    const int64_t shape[4] = {2, 3, 4, 6};
    const int64_t cases[4][2] = {{0, 0}, {0, 2}, {3, 2}, {1, 0}}; /* window, q_offset */
    for (int k = 0; k < 2; k++)
        for (int c = 0; c < 4; c++)
            for (int f = 0; f < 2; f++) {
                ttt_dtype dt = FLOATS[k];
                double fill = f ? -INFINITY : -1e9;
                int64_t w = cases[c][0], qo = cases[c][1];
                ttt_tensor x = rand_dense(dt, 4, shape, -1, 1), y = dense(dt, 4, shape);
                int64_t n = numel(&x);
                double *ref = refbuf(n);
                for (int64_t e = 0; e < n; e++) {
                    int64_t j = e % 6, i = (e / 6) % 4, qp = qo + i;
                    int keep = j <= qp && (w <= 0 || qp - j < w);
                    ref[e] = keep ? geti(&x, e) : through(dt, fill);
                }
                CHECK(B->attn_mask(S, &y, &x, w, qo, fill) == TTT_OK);
                check_all("attn_mask", &y, ref, 0);
                sfree_all();
            }
}

/* ---- optimizers -------------------------------------------------------------------------- */

static void test_optim(void) {
    for (int k = 0; k < 2; k++)
        for (int big = 0; big < 2; big++) {
            ttt_dtype dt = FLOATS[k];
            int64_t n = big ? 50001 : 17;
            /* AdamW: three steps against the formula in double */
            ttt_tensor p = rand_dense(dt, 1, &n, -1, 1), m = dense(dt, 1, &n), v = dense(dt, 1, &n);
            ttt_tensor g = dense(dt, 1, &n);
            double *rp = refbuf(n), *rm = refbuf(n), *rv = refbuf(n);
            for (int64_t i = 0; i < n; i++) rp[i] = geti(&p, i);
            const double lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1;
            for (int64_t step = 1; step <= 3; step++) {
                fill_buf(dt, g.data, n, -1, 1, 0);
                for (int64_t i = 0; i < n; i++) {
                    double gi = geti(&g, i);
                    rp[i] -= lr * wd * rp[i];
                    rm[i] = b1 * rm[i] + (1 - b1) * gi;
                    rv[i] = b2 * rv[i] + (1 - b2) * gi * gi;
                    double mh = rm[i] / (1 - pow(b1, (double)step)), vh = rv[i] / (1 - pow(b2, (double)step));
                    rp[i] -= lr * mh / (sqrt(vh) + eps);
                }
                CHECK(B->adamw(S, &p, &g, &m, &v, lr, b1, b2, eps, wd, step) == TTT_OK);
            }
            check_all("adamw p", &p, rp, tol_of(dt));
            check_all("adamw m", &m, rm, tol_of(dt));
            check_all("adamw v", &v, rv, tol_of(dt));

            /* SGD: plain, momentum, nesterov */
            const double sgd_cfg[3][2] = {{0.0, 0}, {0.9, 0}, {0.9, 1}};
            for (int c = 0; c < 3; c++) {
                double mom = sgd_cfg[c][0], swd = 0.01, slr = 0.1;
                int nest = (int)sgd_cfg[c][1];
                ttt_tensor buf = dense(dt, 1, &n);
                for (int64_t i = 0; i < n; i++) rp[i] = geti(&p, i), rm[i] = 0;
                for (int step = 0; step < 3; step++) {
                    fill_buf(dt, g.data, n, -1, 1, 0);
                    for (int64_t i = 0; i < n; i++) {
                        double d = geti(&g, i) + swd * rp[i];
                        if (mom != 0) {
                            rm[i] = mom * rm[i] + d;
                            d = nest ? d + mom * rm[i] : rm[i];
                        }
                        rp[i] -= slr * d;
                    }
                    CHECK(B->sgd(S, &p, &g, &buf, slr, mom, swd, nest) == TTT_OK);
                }
                check_all("sgd p", &p, rp, tol_of(dt));
                if (mom != 0) check_all("sgd buf", &buf, rm, tol_of(dt));
            }
            sfree_all();
        }
}

int main(void) {
    test_table();
    test_copy();
    test_fill();
    test_unary();
    test_binary_where();
    test_reduce();
    test_matmul();
    test_softmax_norm();
    test_cross_entropy_one_hot();
    test_gather_scatter();
    test_rope();
    test_attn_mask();
    test_optim();
    sfree_all();
    B->close(S);
    TEST_MAIN_END();
}
