/* Runs the second-order kernels of src/backends/cuda/second_order.cuh (k_rms_norm_bwd2, k_swiglu_bwd2) on the
 * host emulator, in f64 and f32, against central differences in float64 of
 *   L = <u, dx> + <v, dgx>   (the RMS norm's first-order gradient, written here from its definition), and
 *   L = <u, da> + <v, db>    (SwiGLU's),
 *   L = <u, dz>              (the cross-entropy's, dz = grow (softmax(z) - onehot(t)) per row),
 * element by element for every input (x, gamma, dy; a, b, dy; z, grow). Rows of 7 to 100 (one lane's stride and several
 * per lane), with and without gamma, with u or v absent (NULL), 2 and 9 rows (the last block partly empty);
 * cross-entropy rows of 5 to 700 logits, spaced wider than V, one target ignored.
 * f64 within 1e-7 of the differences (their own error), f32 within 1e-4 relative to the largest gradient;
 * a NaN fails. Exit status 1 on a mismatch. No GPU needed:
 *   g++ -std=c++17 -O1 -I src/backends/cuda -I dev/cuda dev/cuda/second_order_emu_test.cpp -o /tmp/so_emu && /tmp/so_emu */
#include "emu.h"

#include "emu_host.h"

#include "reduce_kernels.cuh"
#include "second_order.cuh"

#include <cmath>
#include <cstring>
#include <string>
#include <cstdio>
#include <random>
#include <vector>

static int failed = 0, passed = 0;
typedef std::vector<double> vec;

/* <u, dx> + <v, dgx> of the RMS norm y = x r gamma, per row of D, from the definition: dx = d/dx <dy, y> */
static double rms_L(const vec &x, const vec *gm, const vec &dy, const vec *u, const vec *v, int rows, int D, double eps) {
    double L = 0;
    for (int r = 0; r < rows; r++) {
        const double *xr = &x[(size_t)r * D], *g = &dy[(size_t)r * D];
        double ss = 0, nh = 0;
        for (int j = 0; j < D; j++) ss += xr[j] * xr[j];
        const double rs = 1 / std::sqrt(ss / D + eps);
        for (int j = 0; j < D; j++) nh += xr[j] * rs * g[j] * (gm ? (*gm)[j] : 1.0);
        for (int j = 0; j < D; j++) {
            const double n = xr[j] * rs, h = g[j] * (gm ? (*gm)[j] : 1.0);
            const double dx = rs * (h - n * nh / D), dgx = g[j] * n;
            if (u) L += (*u)[(size_t)r * D + j] * dx;
            if (v) L += (*v)[(size_t)r * D + j] * dgx;
        }
    }
    return L;
}

static double swiglu_L(const vec &a, const vec &b, const vec &dy, const vec *u, const vec *v) {
    double L = 0;
    for (size_t i = 0; i < a.size(); i++) {
        const double s = 1 / (1 + std::exp(-a[i])), s1 = s * (1 + a[i] * (1 - s));
        if (u) L += (*u)[i] * dy[i] * b[i] * s1;
        if (v) L += (*v)[i] * dy[i] * a[i] * s;
    }
    return L;
}

/* central differences of L over one input, element by element */
template <typename F> static vec numeric(vec &z, F L) {
    vec g(z.size());
    for (size_t i = 0; i < z.size(); i++) {
        const double z0 = z[i], h = 1e-5 * (1 + std::fabs(z0));
        z[i] = z0 + h;
        const double lp = L();
        z[i] = z0 - h;
        const double lm = L();
        z[i] = z0;
        g[i] = (lp - lm) / (2 * h);
    }
    return g;
}

static void compare(const char *what, const vec &got, const vec &want, double tol) {
    double worst = 0, scale = 0;
    bool nan = false;
    for (size_t i = 0; i < got.size(); i++) {
        nan |= std::isnan(got[i]);
        worst = std::fmax(worst, std::fabs(got[i] - want[i]));
        scale = std::fmax(scale, std::fabs(want[i]));
    }
    const double rel = worst / (scale + 1e-300);
    if (nan || rel > tol) {
        failed++;
        fprintf(stderr, "FAIL %s: %.3g relative to the largest (tolerance %.1g)%s\n", what, rel, tol, nan ? ", NaN" : "");
    } else passed++;
}

template <typename T> static std::vector<T> to(const vec &v) { return std::vector<T>(v.begin(), v.end()); }
template <typename T> static vec from(const std::vector<T> &v) { return vec(v.begin(), v.end()); }
/* the inputs rounded to T, so the differences see what the kernel sees */
template <typename T> static void round_to(vec &v) {
    for (double &e : v) e = (double)(T)e;
}

template <typename T> static void rms_case(std::mt19937_64 &rng, int rows, int D, bool has_gamma, bool has_u, bool has_v) {
    std::normal_distribution<double> nd(0.0, 1.0);
    const size_t n = (size_t)rows * D;
    vec x(n), dy(n), u(n), v(n), gm(D);
    for (auto *p : {&x, &dy, &u, &v}) {
        for (double &e : *p) e = nd(rng);
        round_to<T>(*p);
    }
    for (double &e : gm) e = 1 + 0.5 * nd(rng);
    round_to<T>(gm);
    const double eps = 1e-6;
    std::vector<T> tx = to<T>(x), tdy = to<T>(dy), tu = to<T>(u), tv = to<T>(v), tg = to<T>(gm);
    std::vector<T> gx(n), gdy(n), ggx(n);
    const int per = THREADS / 32;
    emu::launch(dim3((unsigned)((rows + per - 1) / per)), dim3(THREADS), [&] {
        so2::k_rms_norm_bwd2<T>(rows, D, eps, gx.data(), gdy.data(), has_gamma ? ggx.data() : (T *)nullptr, tx.data(),
                                has_gamma ? tg.data() : (const T *)nullptr, tdy.data(), has_u ? tu.data() : (const T *)nullptr,
                                has_v ? tv.data() : (const T *)nullptr);
    });
    const vec *pg = has_gamma ? &gm : nullptr, *pu = has_u ? &u : nullptr, *pv = has_v ? &v : nullptr;
    auto L = [&] { return rms_L(x, pg, dy, pu, pv, rows, D, eps); };
    const double tol = sizeof(T) == 8 ? 1e-7 : 1e-4;
    char what[128];
    snprintf(what, sizeof what, "rms_norm_bwd2 %s rows %d D %d gamma %d u %d v %d: gx", sizeof(T) == 8 ? "f64" : "f32",
             rows, D, has_gamma, has_u, has_v);
    compare(what, from(gx), numeric(x, L), tol);
    what[strlen(what) - 2] = 0;
    compare((std::string(what) + "gdy").c_str(), from(gdy), numeric(dy, L), tol);
    if (has_gamma) {
        vec sum(D, 0.0); /* gamma's gradient: the kernel's rows summed */
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < D; j++) sum[j] += (double)ggx[(size_t)r * D + j];
        compare((std::string(what) + "ggamma").c_str(), sum, numeric(gm, L), tol);
    }
}

template <typename T> static void swiglu_case(std::mt19937_64 &rng, int n, bool has_u, bool has_v) {
    std::normal_distribution<double> nd(0.0, 1.0);
    vec a(n), b(n), dy(n), u(n), v(n);
    for (auto *p : {&a, &b, &dy, &u, &v}) {
        for (double &e : *p) e = 2 * nd(rng);
        round_to<T>(*p);
    }
    std::vector<T> ta = to<T>(a), tb = to<T>(b), tdy = to<T>(dy), tu = to<T>(u), tv = to<T>(v), ga(n), gb(n), gdy(n);
    emu::launch(dim3((unsigned)((n + THREADS - 1) / THREADS)), dim3(THREADS), [&] {
        so2::k_swiglu_bwd2<T>(n, ga.data(), gb.data(), gdy.data(), ta.data(), tb.data(), tdy.data(),
                              has_u ? tu.data() : (const T *)nullptr, has_v ? tv.data() : (const T *)nullptr);
    });
    const vec *pu = has_u ? &u : nullptr, *pv = has_v ? &v : nullptr;
    auto L = [&] { return swiglu_L(a, b, dy, pu, pv); };
    const double tol = sizeof(T) == 8 ? 1e-7 : 1e-4;
    char what[96];
    snprintf(what, sizeof what, "swiglu_bwd2 %s n %d u %d v %d: ", sizeof(T) == 8 ? "f64" : "f32", n, has_u, has_v);
    compare((std::string(what) + "ga").c_str(), from(ga), numeric(a, L), tol);
    compare((std::string(what) + "gb").c_str(), from(gb), numeric(b, L), tol);
    compare((std::string(what) + "gdy").c_str(), from(gdy), numeric(dy, L), tol);
}

static double ce_L(const vec &z, const vec &g, const std::vector<int32_t> &t, const vec &u, int rows, int V, int ldx,
                   int ignore) {
    double L = 0;
    for (int r = 0; r < rows; r++) {
        if (t[r] == ignore) continue;
        double mx = -INFINITY, s = 0;
        for (int j = 0; j < V; j++) mx = std::fmax(mx, z[(size_t)r * ldx + j]);
        for (int j = 0; j < V; j++) s += std::exp(z[(size_t)r * ldx + j] - mx);
        for (int j = 0; j < V; j++)
            L += u[(size_t)r * V + j] * g[r] * (std::exp(z[(size_t)r * ldx + j] - mx) / s - (j == t[r] ? 1.0 : 0.0));
    }
    return L;
}

template <typename T> static void ce_case(std::mt19937_64 &rng, int rows, int V) {
    std::normal_distribution<double> nd(0.0, 1.0);
    const int ldx = V + 3, ignore = -100;
    vec z((size_t)rows * ldx), g(rows), u((size_t)rows * V);
    std::vector<int32_t> t(rows);
    for (auto *p : {&z, &g, &u}) {
        for (double &e : *p) e = 2 * nd(rng);
        round_to<T>(*p);
    }
    for (int r = 0; r < rows; r++) t[r] = r == 1 ? ignore : (int32_t)(rng() % (uint64_t)V);
    std::vector<T> tz = to<T>(z), tu = to<T>(u), gz((size_t)rows * V);
    std::vector<T> tg = to<T>(g), gg(rows); /* the loss's dtype: A<T> is T for f32 and f64 */
    emu::launch(dim3((unsigned)rows), dim3(THREADS), [&] {
        so2::k_cross_entropy_bwd2<T>(V, ldx, ignore, gz.data(), gg.data(), tz.data(), t.data(), tg.data(), tu.data());
    });
    auto L = [&] { return ce_L(z, g, t, u, rows, V, ldx, ignore); };
    vec want = numeric(z, L), want_z((size_t)rows * V);
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < V; j++) want_z[(size_t)r * V + j] = want[(size_t)r * ldx + j];
    const double tol = sizeof(T) == 8 ? 1e-7 : 1e-4;
    char what[96];
    snprintf(what, sizeof what, "cross_entropy_bwd2 %s rows %d V %d: ", sizeof(T) == 8 ? "f64" : "f32", rows, V);
    compare((std::string(what) + "gz").c_str(), from(gz), want_z, tol);
    compare((std::string(what) + "ggrow").c_str(), from(gg), numeric(g, L), tol);
}

int main() {
    std::mt19937_64 rng(7);
    const int shapes[][2] = {{2, 7}, {9, 32}, {3, 100}, {9, 64}};
    for (auto &s : shapes)
        for (int mode = 0; mode < 4; mode++) { /* gamma and both cotangents; no gamma; u only; v only */
            const bool g = mode != 1, u = mode != 3, v = mode != 2;
            rms_case<double>(rng, s[0], s[1], g, u, v);
            rms_case<float>(rng, s[0], s[1], g, u, v);
        }
    for (int n : {1, 300, 777})
        for (int mode = 0; mode < 3; mode++) {
            swiglu_case<double>(rng, n, mode != 2, mode != 1);
            swiglu_case<float>(rng, n, mode != 2, mode != 1);
        }
    for (auto &s : {std::pair<int, int>{3, 5}, {4, 300}, {2, 700}}) {
        ce_case<double>(rng, s.first, s.second);
        ce_case<float>(rng, s.first, s.second);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
