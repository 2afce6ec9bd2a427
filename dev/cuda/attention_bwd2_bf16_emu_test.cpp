/* Runs the bf16 tensor-core double backward of attention
 * (src/backends/cuda/attention_bwd2_bf16.cuh: bwd2_rows, bwd2_q, bwd2_kv) on the
 * host emulator (emu.h: mma, ldmatrix and cp.async included) against the
 * float64 double backward computed from the same bf16 inputs
 * (ref::attention_bwd2 in attention_ref.h), element by element: gq, gk, gv, gg
 * (bf16) and the row statistics a, c (f32), each as max |got - ref| / max |ref|;
 * a NaN anywhere (an unwritten output, a read of poisoned shared memory) fails.
 * The float64 reference is itself checked first against central differences of
 * Phi = <Uq, dQ> + <Uk, dK> + <Uv, dV> (ref::attention's first-order backward)
 * along random directions. Shapes: lengths off the tiles, Tq < Tk, causal with
 * and without windows (small, at tile edges, hiding whole tiles), bidirectional,
 * d = 64 and 128, two heads, unaligned inputs (the plain-load path). The
 * launcher's configurations (attnbf::Cfg2) run on every shape, a few others on
 * some, so the templates stay correct when the choice changes; then a sweep of
 * 16 shapes near tile edges. About 2 s:
 *   g++ -std=c++17 -O1 -I src/backends/cuda -I dev/cuda dev/cuda/attention_bwd2_bf16_emu_test.cpp \
 *       -o /tmp/bwd2_bf16_emu && /tmp/bwd2_bf16_emu */
#include "emu.h"

inline float *ATTN_SMEM() { return emu::g_smem.data(); }
#include "attention_bwd2_bf16.cuh"
#include "attention_ref.h"

#include <chrono>
#include <random>

using attnbf::Bwd2;
using attnbf::Params;

/* shared memory sized exactly as the launcher asks, so ASan sees overruns */
static void smem(int bytes) { emu::g_smem = std::vector<float>((size_t)bytes / sizeof(float), NAN); }

/* The three kernels in the launcher's order with configurations R (rows), Q and KV (attnbf::K2). */
template <int D, typename R, typename Q, typename KV>
static void run_set(const Params &p, const Bwd2 &bw, int bh) {
    using CR = attnbf::B2<D, R::NW, R::BT, R::SC>;
    using CQ = attnbf::B2<D, Q::NW, Q::BT, Q::SC>;
    using CK = attnbf::B2<D, KV::NW, KV::BT, KV::SC>;
    smem(CR::SMEM_Q);
    emu::launch(dim3((p.tq + CR::BR - 1) / CR::BR, bh), dim3(CR::THREADS),
                [&] { attnbf::bwd2_rows<D, R::NW, R::BT, R::SC, R::MINB, (bool)R::HOLD>(p, bw); });
    smem(CQ::SMEM_Q);
    emu::launch(dim3((p.tq + CQ::BR - 1) / CQ::BR, bh), dim3(CQ::THREADS),
                [&] { attnbf::bwd2_q<D, Q::NW, Q::BT, Q::SC, Q::MINB, (bool)Q::HOLD>(p, bw); });
    smem(CK::SMEM_KV);
    emu::launch(dim3((p.tk + CK::BR - 1) / CK::BR, bh), dim3(CK::THREADS),
                [&] { attnbf::bwd2_kv<D, KV::NW, KV::BT, KV::SC, KV::MINB, (bool)KV::HOLD>(p, bw); });
}

using attnbf::K2;
struct Set {
    const char *name;
    int d;
    void (*run)(const Params &, const Bwd2 &, int);
};
/* the launcher's sets first (one per head size), then others: other tiles, chunks, warps, held or reloaded
 * fragments (and, in each, every kernel's other choice) */
static const Set g_sets[] = {
    {"Cfg2<64>", 64, run_set<64, attnbf::Cfg2<64>::Rows, attnbf::Cfg2<64>::Q, attnbf::Cfg2<64>::Kv>},
    {"Cfg2<128>", 128, run_set<128, attnbf::Cfg2<128>::Rows, attnbf::Cfg2<128>::Q, attnbf::Cfg2<128>::Kv>},
    {"64: 8w/32/16 reload | 8w/64/64 hold | 8w/32/32 reload", 64,
     run_set<64, K2<8, 32, 16, 1, 0>, K2<8, 64, 64, 1, 1>, K2<8, 32, 32, 1, 0>>},
    {"64: 4w/16/16 hold | 4w/32/16 reload | 4w/64/32 hold", 64,
     run_set<64, K2<4, 16, 16, 2, 1>, K2<4, 32, 16, 2, 0>, K2<4, 64, 32, 2, 1>>},
    {"128: 4w/64/16 reload | 4w/32/32 hold | 4w/64/32 hold", 128,
     run_set<128, K2<4, 64, 16, 1, 0>, K2<4, 32, 32, 1, 1>, K2<4, 64, 32, 1, 1>>},
};

struct Case {
    ref::Shape s;
    int unaligned;
    int others; /* also run the other sets of this head size */
};

/* A deterministic sweep of shapes near tile edges (the launcher's sets only): lengths, KV offsets and windows
 * around multiples of 16, 32 and 64. */
static std::vector<Case> sweep(int n) {
    std::mt19937 rng(2025);
    auto pick = [&](std::initializer_list<int> xs) { return xs.begin()[rng() % xs.size()]; };
    std::vector<Case> out;
    for (int i = 0; i < n; i++) {
        Case c{};
        c.s.bh = 1;
        c.s.d = c.s.dv = i % 3 == 2 ? 128 : 64;
        c.s.tq = pick({1, 15, 16, 17, 31, 33, 63, 64, 65, 127, 129}) + (int)(rng() % 3);
        c.s.causal = rng() % 5 != 0;
        const int extra = pick({0, 0, 1, 15, 31, 63, 64, 65, 127});
        c.s.tk = c.s.causal ? c.s.tq + extra : pick({1, 17, 64, 65, 130});
        c.s.window = c.s.causal ? pick({0, 0, 1, 2, 15, 16, 17, 31, 32, 33, 63, 64, 65, 129}) : 0;
        c.unaligned = rng() % 6 == 0;
        out.push_back(c);
    }
    return out;
}

static double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/* max |got - ref| / max |ref| (NaN if any value is NaN) */
template <typename G>
static double rel(const std::vector<G> &got, const std::vector<double> &r, double (*val)(G)) {
    double worst = 0, big = 0;
    for (double x : r) big = std::max(big, fabs(x));
    for (size_t i = 0; i < r.size(); i++) {
        const double e = fabs(val(got[i]) - r[i]);
        if (e != e) return e;
        worst = std::max(worst, e);
    }
    return worst / (big > 0 ? big : 1);
}

static double dot(const std::vector<double> &a, const std::vector<double> &b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); i++) s += a[i] * b[i];
    return s;
}

/* The float64 reference's gradients against central differences of Phi along a random direction for each of
 * q, k, v, dout; returns the worst relative error. */
static double check_reference(const ref::Shape &c, std::mt19937 &rng) {
    std::normal_distribution<double> nd(0.0, 1.0);
    const size_t nq = (size_t)c.bh * c.tq * c.d, nk = (size_t)c.bh * c.tk * c.d;
    std::vector<double> x[4] = {std::vector<double>(nq), std::vector<double>(nk), std::vector<double>(nk),
                                std::vector<double>(nq)},
                        u[3] = {std::vector<double>(nq), std::vector<double>(nk), std::vector<double>(nk)};
    for (auto *set : {&x[0], &x[1], &x[2], &x[3], &u[0], &u[1], &u[2]})
        for (auto &f : *set) f = nd(rng);
    const double scale = 1.0 / sqrt((double)c.d);
    std::vector<double> lse, dl, ra, rc, grad[4];
    ref::attention_bwd2(c, x[0], x[1], x[2], x[3], u[0], u[1], u[2], scale, lse, dl, ra, rc, grad[0], grad[1],
                        grad[2], grad[3]);
    auto phi = [&](const std::vector<double> (&xs)[4]) {
        std::vector<double> o, l, dq, dk, dv;
        ref::attention(c, xs[0], xs[1], xs[2], xs[3], scale, o, l, dq, dk, dv);
        return dot(u[0], dq) + dot(u[1], dk) + dot(u[2], dv);
    };
    double worst = 0;
    for (int t = 0; t < 4; t++) {
        std::vector<double> r(x[t].size());
        for (auto &f : r) f = nd(rng);
        const double h = 1e-5;
        std::vector<double> xs[4] = {x[0], x[1], x[2], x[3]};
        for (size_t i = 0; i < r.size(); i++) xs[t][i] = x[t][i] + h * r[i];
        const double fp = phi(xs);
        for (size_t i = 0; i < r.size(); i++) xs[t][i] = x[t][i] - h * r[i];
        const double fm = phi(xs);
        double mag = 0;
        for (size_t i = 0; i < r.size(); i++) mag += fabs(grad[t][i] * r[i]);
        const double err = fabs(dot(grad[t], r) - (fp - fm) / (2 * h)) / (1e-9 + mag);
        worst = err == err ? std::max(worst, err) : err;
    }
    return worst;
}

int main() {
    const auto t_start = std::chrono::steady_clock::now();
    int failures = 0;
    std::mt19937 rng(13);

    /* the reference against finite differences */
    const ref::Shape ref_shapes[] = {{1, 9, 9, 8, 8, 1, 0}, {2, 6, 11, 8, 8, 1, 3}, {1, 7, 5, 4, 4, 0, 0}, {1, 20, 30, 16, 16, 1, 9}};
    for (const ref::Shape &c : ref_shapes) {
        const double e = check_reference(c, rng);
        const bool ok = e < 1e-6;
        failures += !ok;
        printf("%s float64 reference vs central differences, bh=%d tq=%d tk=%d d=%d causal=%d window=%lld: %.1e\n",
               ok ? "ok  " : "FAIL", c.bh, c.tq, c.tk, c.d, c.causal, (long long)c.window, e);
    }

    const Case cases[] = {
        {{1, 70, 70, 64, 64, 1, 0}, 0, 1},     {{2, 37, 100, 64, 64, 1, 0}, 0, 0},  {{1, 70, 70, 64, 64, 0, 0}, 0, 1},
        {{1, 130, 130, 64, 64, 1, 7}, 0, 1},   {{1, 100, 150, 64, 64, 1, 40}, 0, 0}, {{1, 3, 200, 64, 64, 1, 50}, 0, 0},
        {{1, 45, 130, 64, 64, 0, 0}, 0, 0},    {{1, 200, 200, 64, 64, 1, 67}, 0, 0}, {{1, 77, 77, 64, 64, 1, 0}, 1, 0},
        {{1, 1, 33, 64, 64, 1, 1}, 0, 0},      {{1, 80, 80, 128, 128, 1, 0}, 0, 1}, {{1, 70, 110, 128, 128, 1, 9}, 0, 1},
        {{1, 45, 130, 128, 128, 0, 0}, 0, 0},  {{1, 150, 150, 128, 128, 1, 70}, 0, 0}, {{1, 33, 33, 128, 128, 1, 0}, 1, 0},
    };
    std::vector<Case> all(std::begin(cases), std::end(cases));
    const size_t n_fixed = all.size();
    const int n_sweep = 16;
    for (const Case &c : sweep(n_sweep)) all.push_back(c);
    /* bf16 outputs: half an ulp is 2e-3 of the largest, and the products round P, dS, E, F to bf16 (worst seen
     * 5.1e-3); the row statistics are f32 sums of f32 products of bf16 inputs (worst seen 4.7e-7) */
    const double tol_g = 1e-2, tol_rows = 1e-5;
    double worst[2][6] = {{0}};
    int runs = 0;
    for (size_t ci = 0; ci < all.size(); ci++) {
        const Case &cs = all[ci];
        const bool swept = ci >= n_fixed; /* printed only when it fails */
        const ref::Shape &c = cs.s;
        const size_t nq = (size_t)c.bh * c.tq * c.d, nk = (size_t)c.bh * c.tk * c.d, nr = (size_t)c.bh * c.tq;
        const int u = cs.unaligned ? 1 : 0; /* every input 1 element (2 bytes) in: plain loads */
        std::normal_distribution<float> nd(0.f, 1.f);
        std::vector<uint16_t> in[7] = {std::vector<uint16_t>(nq + u), std::vector<uint16_t>(nk + u),
                                       std::vector<uint16_t>(nk + u), std::vector<uint16_t>(nq + u),
                                       std::vector<uint16_t>(nq + u), std::vector<uint16_t>(nk + u),
                                       std::vector<uint16_t>(nk + u)}; /* q k v dout uq uk uv */
        std::vector<double> x[7];
        for (int i = 0; i < 7; i++) {
            for (auto &h : in[i]) h = ref::to_bf16(nd(rng));
            x[i].resize(in[i].size() - u);
            for (size_t j = 0; j < x[i].size(); j++) x[i][j] = ref::from_bf16(in[i][j + u]);
        }
        const double scale = 1.0 / sqrt((double)c.d);
        std::vector<double> lse, dl, ra, rc, rg[4];
        ref::attention_bwd2(c, x[0], x[1], x[2], x[3], x[4], x[5], x[6], scale, lse, dl, ra, rc, rg[0], rg[1], rg[2],
                            rg[3]);
        std::vector<float> flse(lse.begin(), lse.end()), fdl(dl.begin(), dl.end());
        for (const Set &set : g_sets) {
            if (set.d != c.d || (set.run != g_sets[0].run && set.run != g_sets[1].run && !cs.others)) continue;
            std::vector<float> a(nr, NAN), cc(nr, NAN);
            std::vector<uint16_t> gq(nq, 0xffff), gk(nk, 0xffff), gv(nk, 0xffff), gg(nq, 0xffff);
            Params p{};
            p.q = in[0].data() + u, p.k = in[1].data() + u, p.v = in[2].data() + u, p.dout = in[3].data() + u;
            p.lse = flse.data(), p.delta = fdl.data();
            p.tq = c.tq, p.tk = c.tk, p.causal = c.causal, p.window = c.causal ? c.window : 0;
            p.off = c.causal ? c.tk - c.tq : 0;
            p.scale = (float)scale;
            p.aligned = !cs.unaligned;
            Bwd2 bw{in[4].data() + u, in[5].data() + u, in[6].data() + u, a.data(), cc.data(),
                    gq.data(), gk.data(), gv.data(), gg.data()};
            set.run(p, bw, c.bh);
            runs++;
            const double e[6] = {rel(gq, rg[0], ref::val_bf16), rel(gk, rg[1], ref::val_bf16),
                                 rel(gv, rg[2], ref::val_bf16), rel(gg, rg[3], ref::val_bf16),
                                 rel(a, ra, ref::val_f32),      rel(cc, rc, ref::val_f32)};
            bool ok = true;
            for (int i = 0; i < 6; i++) {
                ok = ok && e[i] <= (i < 4 ? tol_g : tol_rows); /* false for NaN */
                double &w = worst[c.d == 128][i];
                w = e[i] != e[i] ? e[i] : std::max(w, e[i]);
            }
            failures += !ok;
            if (swept && ok) continue;
            printf("%s bh=%d tq=%d tk=%d d=%d causal=%d window=%lld%s [%s]: gq %.1e gk %.1e gv %.1e gg %.1e a %.1e "
                   "c %.1e\n",
                   ok ? "ok  " : "FAIL", c.bh, c.tq, c.tk, c.d, c.causal, (long long)c.window,
                   cs.unaligned ? " unaligned" : "", swept ? "sweep" : set.name, e[0], e[1], e[2], e[3], e[4], e[5]);
            fflush(stdout);
        }
    }
    for (int i = 0; i < 2; i++)
        printf("     worst at d=%d: gq %.1e gk %.1e gv %.1e gg %.1e a %.1e c %.1e (tolerances %.0e, rows %.0e)\n",
               i ? 128 : 64, worst[i][0], worst[i][1], worst[i][2], worst[i][3], worst[i][4], worst[i][5], tol_g,
               tol_rows);
    printf("%s (%d kernel sets run, %d of them on sweep shapes near tile edges) in %.1f s\n",
           failures ? "FAILED" : "all passed", runs, n_sweep, seconds_since(t_start));
    return failures != 0;
}
