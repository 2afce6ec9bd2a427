/* Runs the f32 attention kernels of src/backends/cuda/attention_kernels.cuh on
 * the host emulator (emu.h) against a float64 reference: forward out and lse,
 * backward dq, dk, dv, over small shapes that cover odd lengths, Tq != Tk,
 * causal, windows, padded head sizes. No GPU needed:
 *   g++ -std=c++17 -O1 -fsanitize=address -I src/backends/cuda dev/cuda/attention_emu_test.cpp -o /tmp/attn_emu
 *   /tmp/attn_emu */
#include "emu.h"

inline float *ATTN_SMEM() { return emu::g_smem.data(); }
#include "attention_kernels.cuh"

#include <algorithm>
#include <random>

using attn::Params;

struct Case {
    int bh, tq, tk, d, dv, causal;
    int64_t window;
};

static void reference(const Case &c, const std::vector<float> &q, const std::vector<float> &k,
                      const std::vector<float> &v, const std::vector<float> &dout, double scale, std::vector<double> &o,
                      std::vector<double> &lse, std::vector<double> &dq, std::vector<double> &dk,
                      std::vector<double> &dv) {
    o.assign((size_t)c.bh * c.tq * c.dv, 0);
    lse.assign((size_t)c.bh * c.tq, 0);
    dq.assign((size_t)c.bh * c.tq * c.d, 0);
    dk.assign((size_t)c.bh * c.tk * c.d, 0);
    dv.assign((size_t)c.bh * c.tk * c.dv, 0);
    const int64_t off = c.causal ? c.tk - c.tq : 0;
    std::vector<double> p(c.tk), dp(c.tk);
    for (int b = 0; b < c.bh; b++)
        for (int i = 0; i < c.tq; i++) {
            const int64_t pos = off + i;
            double mx = -INFINITY;
            for (int j = 0; j < c.tk; j++) {
                bool seen = !c.causal || (j <= pos && (c.window <= 0 || pos - j < c.window));
                double s = 0;
                for (int e = 0; e < c.d; e++)
                    s += (double)q[((size_t)b * c.tq + i) * c.d + e] * k[((size_t)b * c.tk + j) * c.d + e];
                p[j] = seen ? s * scale : -INFINITY;
                mx = std::max(mx, p[j]);
            }
            double z = 0;
            for (int j = 0; j < c.tk; j++) z += (p[j] = exp(p[j] - mx));
            lse[(size_t)b * c.tq + i] = mx + log(z);
            double delta = 0;
            for (int e = 0; e < c.dv; e++) {
                double acc = 0;
                for (int j = 0; j < c.tk; j++) acc += p[j] / z * v[((size_t)b * c.tk + j) * c.dv + e];
                o[((size_t)b * c.tq + i) * c.dv + e] = acc;
                delta += acc * dout[((size_t)b * c.tq + i) * c.dv + e];
            }
            for (int j = 0; j < c.tk; j++) {
                p[j] /= z;
                double g = 0;
                for (int e = 0; e < c.dv; e++)
                    g += (double)dout[((size_t)b * c.tq + i) * c.dv + e] * v[((size_t)b * c.tk + j) * c.dv + e];
                const double ds = p[j] * (g - delta);
                for (int e = 0; e < c.d; e++) {
                    dq[((size_t)b * c.tq + i) * c.d + e] += scale * ds * k[((size_t)b * c.tk + j) * c.d + e];
                    dk[((size_t)b * c.tk + j) * c.d + e] += scale * ds * q[((size_t)b * c.tq + i) * c.d + e];
                }
                for (int e = 0; e < c.dv; e++)
                    dv[((size_t)b * c.tk + j) * c.dv + e] += p[j] * dout[((size_t)b * c.tq + i) * c.dv + e];
            }
        }
}

template <int D>
static void run_kernels(Params p, int bh) {
    using T = attn::Tile<D>;
    const int n_qt = (p.tq + attn::BR - 1) / attn::BR, n_kt = (p.tk + T::BC - 1) / T::BC;
    /* shared memory sized exactly as the launcher asks, so ASan (-fsanitize=address) sees overruns */
    emu::g_smem = std::vector<float>(attn::fwd_smem<D>() / sizeof(float), NAN);
    emu::launch(dim3(n_qt, bh), dim3(attn::THREADS), [&] { attn::attn_fwd<D>(p); });
    emu::g_smem = std::vector<float>(attn::bwd_smem<D>() / sizeof(float), NAN);
    p.o = p.out;
    p.lse = p.lse_out;
    const int64_t rows = (int64_t)bh * p.tq;
    emu::launch(dim3((unsigned)((rows + 7) / 8)), dim3(attn::THREADS), [&] { attn::attn_delta(p, rows); });
    p.delta = p.delta_out;
    emu::launch(dim3(n_kt, bh), dim3(attn::THREADS), [&] { attn::attn_bwd_dkdv<D>(p); });
    emu::launch(dim3(n_qt, bh), dim3(attn::THREADS), [&] { attn::attn_bwd_dq<D>(p); });
}

static double max_rel(const std::vector<float> &got, const std::vector<double> &ref) {
    double worst = 0, scale = 1.0; /* floor: window 1 makes dq, dk exactly 0 */
    for (double r : ref) scale = std::max(scale, fabs(r));
    for (size_t i = 0; i < ref.size(); i++) {
        double e = fabs(got[i] - ref[i]) / scale;
        if (e != e) return e; /* NaN: unwritten or broken */
        worst = std::max(worst, e);
    }
    return worst;
}

int main() {
    const Case cases[] = {
        {1, 5, 5, 8, 8, 1, 0},       {2, 70, 70, 64, 64, 1, 0},  {1, 70, 70, 64, 64, 0, 0},
        {1, 37, 100, 64, 64, 1, 0},  {1, 30, 90, 33, 20, 0, 0},  {1, 130, 130, 64, 64, 1, 1},
        {1, 130, 130, 64, 64, 1, 7}, {1, 100, 150, 64, 64, 1, 40}, {1, 80, 80, 128, 128, 1, 0},
        {1, 70, 110, 100, 128, 1, 9}, {1, 65, 65, 64, 64, 1, 200}, {1, 3, 200, 128, 96, 1, 50},
    };
    std::mt19937 rng(7);
    std::normal_distribution<float> nd(0.f, 1.f);
    int failures = 0;
    for (const Case &c : cases) {
        std::vector<float> q((size_t)c.bh * c.tq * c.d), k((size_t)c.bh * c.tk * c.d), v((size_t)c.bh * c.tk * c.dv),
            dout((size_t)c.bh * c.tq * c.dv);
        for (auto *x : {&q, &k, &v, &dout})
            for (auto &f : *x) f = nd(rng);
        const double scale = 1.0 / sqrt((double)c.d);
        std::vector<float> out(dout.size(), NAN), lse((size_t)c.bh * c.tq, NAN), delta(lse.size(), NAN),
            dq(q.size(), NAN), dk(k.size(), NAN), dv(v.size(), NAN);
        Params p{};
        p.q = q.data(), p.k = k.data(), p.v = v.data(), p.dout = dout.data();
        p.out = out.data(), p.lse_out = lse.data(), p.delta_out = delta.data();
        p.dq = dq.data(), p.dk = dk.data(), p.dv = dv.data();
        p.tq = c.tq, p.tk = c.tk, p.d = c.d, p.dvd = c.dv, p.causal = c.causal, p.window = c.window;
        p.off = c.causal ? c.tk - c.tq : 0;
        p.scale = (float)scale;
        p.vec4 = c.d % 4 == 0 && c.dv % 4 == 0;
        if (std::max(c.d, c.dv) <= 64) run_kernels<64>(p, c.bh);
        else run_kernels<128>(p, c.bh);
        std::vector<double> ro, rl, rdq, rdk, rdv;
        reference(c, q, k, v, dout, scale, ro, rl, rdq, rdk, rdv);
        double e[5] = {max_rel(out, ro), max_rel(lse, rl), max_rel(dq, rdq), max_rel(dk, rdk), max_rel(dv, rdv)};
        bool ok = true;
        for (double x : e) ok = ok && x < 1e-4;
        failures += !ok;
        printf("%s bh=%d tq=%d tk=%d d=%d dv=%d causal=%d window=%lld  out %.1e lse %.1e dq %.1e dk %.1e dv %.1e\n",
               ok ? "ok  " : "FAIL", c.bh, c.tq, c.tk, c.d, c.dv, c.causal, (long long)c.window, e[0], e[1], e[2],
               e[3], e[4]);
    }
    printf("%s\n", failures ? "FAILED" : "all passed");
    return failures != 0;
}
