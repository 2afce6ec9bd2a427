/* Runs the fused double backward of attention (src/backends/cuda/attention_bwd2.cuh)
 * on the host emulator (emu.h) and checks it against central differences, in
 * float64, of Phi = <Uq, dQ> + <Uk, dK> + <Uv, dV>, with (dQ, dK, dV) attention's
 * first-order backward computed densely here. The derivative is checked along a
 * random direction for each of q, k, v and dout (and element by element for the
 * smallest case). No GPU needed:
 *   g++ -std=c++17 -O1 -fsanitize=address -I src/backends/cuda dev/cuda/attention_bwd2_emu_test.cpp -o /tmp/bwd2_emu
 *   /tmp/bwd2_emu */
#include "emu.h"

inline float *ATTN_SMEM() { return emu::g_smem.data(); }
#include "attention_bwd2.cuh"

#include <algorithm>
#include <random>

using attn::Bwd2;
using attn::Params;

struct Case {
    int bh, tq, tk, d, dv, causal;
    int64_t window;
};

typedef std::vector<double> vec;

/* Dense float64 attention: out, lse, delta and the first-order dq, dk, dv for dout g. */
static void dense(const Case &c, const vec &q, const vec &k, const vec &v, const vec &g, double scale, vec *o, vec *lse,
                  vec *dlt, vec &dq, vec &dk, vec &dv) {
    const int64_t off = c.causal ? c.tk - c.tq : 0;
    dq.assign(q.size(), 0), dk.assign(k.size(), 0), dv.assign(v.size(), 0);
    if (o) o->assign((size_t)c.bh * c.tq * c.dv, 0);
    if (lse) lse->assign((size_t)c.bh * c.tq, 0);
    if (dlt) dlt->assign((size_t)c.bh * c.tq, 0);
    std::vector<double> p(c.tk), dp(c.tk);
    for (int b = 0; b < c.bh; b++)
        for (int i = 0; i < c.tq; i++) {
            const int64_t pos = off + i;
            double mx = -INFINITY;
            for (int j = 0; j < c.tk; j++) {
                bool seen = !c.causal || (j <= pos && (c.window <= 0 || pos - j < c.window));
                double s = 0;
                for (int e = 0; e < c.d; e++) s += q[((size_t)b * c.tq + i) * c.d + e] * k[((size_t)b * c.tk + j) * c.d + e];
                p[j] = seen ? s * scale : -INFINITY;
                mx = std::max(mx, p[j]);
            }
            double z = 0;
            for (int j = 0; j < c.tk; j++) z += (p[j] = exp(p[j] - mx));
            for (int j = 0; j < c.tk; j++) p[j] /= z;
            if (lse) (*lse)[(size_t)b * c.tq + i] = mx + log(z);
            double delta = 0;
            for (int j = 0; j < c.tk; j++) {
                dp[j] = 0;
                for (int e = 0; e < c.dv; e++) dp[j] += g[((size_t)b * c.tq + i) * c.dv + e] * v[((size_t)b * c.tk + j) * c.dv + e];
                delta += p[j] * dp[j];
            }
            if (dlt) (*dlt)[(size_t)b * c.tq + i] = delta;
            for (int e = 0; o && e < c.dv; e++) {
                double acc = 0;
                for (int j = 0; j < c.tk; j++) acc += p[j] * v[((size_t)b * c.tk + j) * c.dv + e];
                (*o)[((size_t)b * c.tq + i) * c.dv + e] = acc;
            }
            for (int j = 0; j < c.tk; j++) {
                const double ds = p[j] * (dp[j] - delta);
                for (int e = 0; e < c.d; e++) {
                    dq[((size_t)b * c.tq + i) * c.d + e] += scale * ds * k[((size_t)b * c.tk + j) * c.d + e];
                    dk[((size_t)b * c.tk + j) * c.d + e] += scale * ds * q[((size_t)b * c.tq + i) * c.d + e];
                }
                for (int e = 0; e < c.dv; e++) dv[((size_t)b * c.tk + j) * c.dv + e] += p[j] * g[((size_t)b * c.tq + i) * c.dv + e];
            }
        }
}

static double dot(const vec &a, const vec &b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); i++) s += a[i] * b[i];
    return s;
}

/* Phi(x) with x = {q, k, v, g}. */
static double phi(const Case &c, const vec (&x)[4], const vec (&u)[3], double scale) {
    vec dq, dk, dv;
    dense(c, x[0], x[1], x[2], x[3], scale, NULL, NULL, NULL, dq, dk, dv);
    return dot(u[0], dq) + dot(u[1], dk) + dot(u[2], dv);
}

template <int D>
static void run(Params p, Bwd2 b, int bh) {
    using T = attn::Tile<D>;
    const int n_qt = (p.tq + attn::BR - 1) / attn::BR, n_kt = (p.tk + T::BC - 1) / T::BC;
    emu::g_smem = std::vector<float>(attn::bwd2_rows_smem<D>() / sizeof(float), NAN);
    emu::launch(dim3(n_qt, bh), dim3(attn::THREADS), [&] { attn::attn_bwd2_rows<D>(p, b); });
    emu::g_smem = std::vector<float>(attn::bwd2_q_smem<D>() / sizeof(float), NAN);
    emu::launch(dim3(n_qt, bh), dim3(attn::THREADS), [&] { attn::attn_bwd2_q<D>(p, b); });
    emu::g_smem = std::vector<float>(attn::bwd2_kv_smem<D>() / sizeof(float), NAN);
    emu::launch(dim3(n_kt, bh), dim3(attn::THREADS), [&] { attn::attn_bwd2_kv<D>(p, b); });
}

static std::vector<float> to_f(const vec &x) { return std::vector<float>(x.begin(), x.end()); }

int main() {
    const Case cases[] = {
        {1, 5, 5, 4, 4, 1, 0},        {1, 6, 9, 3, 5, 0, 0},        {2, 70, 70, 64, 64, 1, 0},
        {1, 70, 70, 64, 64, 0, 0},    {1, 37, 100, 64, 64, 1, 0},   {1, 130, 130, 32, 32, 1, 7},
        {1, 80, 80, 128, 128, 1, 0},  {1, 70, 110, 100, 128, 1, 9}, {1, 3, 70, 20, 36, 1, 30},
    };
    std::mt19937 rng(11);
    std::normal_distribution<double> nd(0.0, 1.0);
    int failures = 0;
    for (const Case &c : cases) {
        const size_t nq = (size_t)c.bh * c.tq * c.d, nk = (size_t)c.bh * c.tk * c.d, nv = (size_t)c.bh * c.tk * c.dv,
                     ng = (size_t)c.bh * c.tq * c.dv;
        vec x[4] = {vec(nq), vec(nk), vec(nv), vec(ng)}, u[3] = {vec(nq), vec(nk), vec(nv)};
        /* values representable in f32, so the kernel and the reference see the same inputs */
        for (auto &t : x)
            for (auto &f : t) f = (float)(0.7 * nd(rng));
        for (auto &t : u)
            for (auto &f : t) f = (float)nd(rng);
        const double scale = 1.0 / sqrt((double)c.d);
        vec o, lse, dlt, dq, dk, dv;
        dense(c, x[0], x[1], x[2], x[3], scale, &o, &lse, &dlt, dq, dk, dv);
        std::vector<float> fx[4] = {to_f(x[0]), to_f(x[1]), to_f(x[2]), to_f(x[3])};
        std::vector<float> fu[3] = {to_f(u[0]), to_f(u[1]), to_f(u[2])}, flse = to_f(lse), fdlt = to_f(dlt);
        std::vector<float> ra(lse.size(), NAN), rc(lse.size(), NAN), gq(nq, NAN), gk(nk, NAN), gv(nv, NAN), gg(ng, NAN);
        Params p{};
        p.q = fx[0].data(), p.k = fx[1].data(), p.v = fx[2].data(), p.dout = fx[3].data();
        p.lse = flse.data(), p.delta = fdlt.data();
        p.tq = c.tq, p.tk = c.tk, p.d = c.d, p.dvd = c.dv, p.causal = c.causal, p.window = c.window;
        p.off = c.causal ? c.tk - c.tq : 0;
        p.scale = (float)scale;
        p.vec4 = c.d % 4 == 0 && c.dv % 4 == 0;
        Bwd2 b{fu[0].data(), fu[1].data(), fu[2].data(), ra.data(), rc.data(), gq.data(), gk.data(), gv.data(), gg.data()};
        if (std::max(c.d, c.dv) <= 64) run<64>(p, b, c.bh);
        else run<128>(p, b, c.bh);
        const std::vector<float> *got[4] = {&gq, &gk, &gv, &gg};
        const char *names[4] = {"q", "k", "v", "dout"};
        /* along a random direction r: <grad, r> against (Phi(x + h r) - Phi(x - h r)) / 2h */
        bool ok = true;
        printf("bh=%d tq=%d tk=%d d=%d dv=%d causal=%d window=%lld:", c.bh, c.tq, c.tk, c.d, c.dv, c.causal,
               (long long)c.window);
        for (int t = 0; t < 4; t++) {
            vec r(x[t].size());
            for (auto &f : r) f = nd(rng);
            const double h = 1e-5;
            vec xs[4] = {x[0], x[1], x[2], x[3]};
            for (size_t i = 0; i < r.size(); i++) xs[t][i] = x[t][i] + h * r[i];
            const double fp = phi(c, xs, u, scale);
            for (size_t i = 0; i < r.size(); i++) xs[t][i] = x[t][i] - h * r[i];
            const double fm = phi(c, xs, u, scale);
            const double numeric = (fp - fm) / (2 * h);
            double analytic = 0, mag = 0;
            for (size_t i = 0; i < r.size(); i++) analytic += (*got[t])[i] * r[i], mag += fabs((*got[t])[i] * r[i]);
            const double err = fabs(analytic - numeric) / (1e-6 + mag);
            const bool good = err < 1e-4 && std::isfinite(analytic);
            ok = ok && good;
            printf("  %s %.1e", names[t], err);
        }
        /* element by element on the small cases */
        if (c.tq * c.tk <= 100) {
            double worst = 0;
            for (int t = 0; t < 4; t++)
                for (size_t i = 0; i < x[t].size(); i++) {
                    vec xs[4] = {x[0], x[1], x[2], x[3]};
                    const double h = 1e-5;
                    xs[t][i] = x[t][i] + h;
                    const double fp = phi(c, xs, u, scale);
                    xs[t][i] = x[t][i] - h;
                    const double fm = phi(c, xs, u, scale);
                    const double numeric = (fp - fm) / (2 * h);
                    worst = std::max(worst, fabs((*got[t])[i] - numeric) / (1e-3 + fabs(numeric)));
                }
            ok = ok && worst < 1e-3;
            printf("  elementwise %.1e", worst);
        }
        printf("  %s\n", ok ? "ok" : "FAIL");
        failures += !ok;
    }
    printf("%s\n", failures ? "FAILED" : "all passed");
    return failures != 0;
}
