/* Runs the TTT layers' decode-step CUDA kernels (src/backends/cuda/ttt_step.cuh, f32 and f64) on the host
 * emulator and compares it with a plain float64 host implementation of the step written here from the
 * math in src/composed/ttt_step.c: the output, and the state (W, c, G, Gc) after a sequence of tokens that
 * crosses mini-batch boundaries (the step of W at each mini-batch's end, the sums zeroed). Head sizes
 * below, at and above the block's 128 threads (a thread then owns several columns), B H up to 6 blocks;
 * TTT-MLP's step likewise with hidden widths F below and above the block.
 * Exit status 1 on a mismatch. */
#include "emu.h"

inline void *TTT_STEP_SMEM() { return emu::g_smem.data(); }
#include "ttt_step.cuh"

#include <algorithm>
#include <random>
#include <vector>

static int failed = 0, passed = 0;

/* the step of one (batch, head) in float64 */
static void ref_step(std::vector<double> &out, std::vector<double> &w, std::vector<double> &c, std::vector<double> &gw,
                     std::vector<double> &gc, const double *q, const double *k, const double *v, double eta, double t,
                     const double *gam, const double *bet, int d, bool complete, double eps, size_t o, size_t od) {
    std::vector<double> z(d), g(d), zq(d);
    for (int j = 0; j < d; j++) {
        z[j] = c[o + j];
        for (int i = 0; i < d; i++) z[j] += k[i] * w[od + (size_t)i * d + j];
    }
    double mu = 0, var = 0;
    for (int j = 0; j < d; j++) mu += z[j] / d;
    for (int j = 0; j < d; j++) var += (z[j] - mu) * (z[j] - mu) / d;
    const double rs = 1 / std::sqrt(var + eps);
    std::vector<double> xh(d), gx(d);
    double mg = 0, mgx = 0;
    for (int j = 0; j < d; j++) {
        xh[j] = (z[j] - mu) * rs;
        gx[j] = (xh[j] * gam[j] + bet[j] - (v[j] - k[j])) * gam[j];
        mg += gx[j] / d, mgx += gx[j] * xh[j] / d;
    }
    for (int j = 0; j < d; j++) g[j] = (gx[j] - mg - xh[j] * mgx) * rs;
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) gw[od + (size_t)i * d + j] += eta * k[i] * g[j];
    for (int j = 0; j < d; j++) gc[o + j] += eta * g[j];
    for (int j = 0; j < d; j++) {
        zq[j] = c[o + j] - t * gc[o + j];
        for (int i = 0; i < d; i++) zq[j] += q[i] * (w[od + (size_t)i * d + j] - t * gw[od + (size_t)i * d + j]);
    }
    mu = 0, var = 0;
    for (int j = 0; j < d; j++) mu += zq[j] / d;
    for (int j = 0; j < d; j++) var += (zq[j] - mu) * (zq[j] - mu) / d;
    const double rq = 1 / std::sqrt(var + eps);
    for (int j = 0; j < d; j++) out[o + j] = q[j] + (zq[j] - mu) * rq * gam[j] + bet[j];
    if (complete) {
        for (size_t e = 0; e < (size_t)d * d; e++) w[od + e] -= t * gw[od + e], gw[od + e] = 0;
        for (int j = 0; j < d; j++) c[o + j] -= t * gc[o + j], gc[o + j] = 0;
    }
}

static double gelu(double x) { return 0.5 * x * (1 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }
static double gelu_d(double x) {
    const double th = std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x));
    return 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * 0.7978845608028654 * (1 + 3 * 0.044715 * x * x);
}

/* TTT-MLP's step of one (batch, head) in float64: w, g = {W1 [d, F], b1 [F], W2 [F, d], b2 [d]} at offsets off */
static void ref_mlp_step(std::vector<double> &out, std::vector<double> *w, std::vector<double> *g, const size_t *off,
                         const double *q, const double *k, const double *v, double eta, double t, const double *gam,
                         const double *bet, int d, int F, bool complete, double eps, size_t o) {
    double *W1 = &w[0][off[0]], *b1 = &w[1][off[1]], *W2 = &w[2][off[2]], *b2 = &w[3][off[3]];
    double *G1 = &g[0][off[0]], *Gb1 = &g[1][off[1]], *G2 = &g[2][off[2]], *Gb2 = &g[3][off[3]];
    std::vector<double> z1(F), x2(F), z2(d), g2(d), g1(F), act(F), zq(d);
    for (int f = 0; f < F; f++) {
        z1[f] = b1[f];
        for (int i = 0; i < d; i++) z1[f] += k[i] * W1[(size_t)i * F + f];
        x2[f] = gelu(z1[f]);
    }
    for (int j = 0; j < d; j++) {
        z2[j] = b2[j];
        for (int f = 0; f < F; f++) z2[j] += x2[f] * W2[(size_t)f * d + j];
    }
    double mu = 0, var = 0;
    for (int j = 0; j < d; j++) mu += z2[j] / d;
    for (int j = 0; j < d; j++) var += (z2[j] - mu) * (z2[j] - mu) / d;
    const double rs = 1 / std::sqrt(var + eps);
    std::vector<double> xh(d), gx(d);
    double mg = 0, mgx = 0;
    for (int j = 0; j < d; j++) {
        xh[j] = (z2[j] - mu) * rs;
        gx[j] = (xh[j] * gam[j] + bet[j] - (v[j] - k[j])) * gam[j];
        mg += gx[j] / d, mgx += gx[j] * xh[j] / d;
    }
    for (int j = 0; j < d; j++) g2[j] = (gx[j] - mg - xh[j] * mgx) * rs;
    for (int f = 0; f < F; f++) {
        double s = 0;
        for (int j = 0; j < d; j++) s += g2[j] * W2[(size_t)f * d + j];
        g1[f] = s * gelu_d(z1[f]);
    }
    for (int i = 0; i < d; i++)
        for (int f = 0; f < F; f++) G1[(size_t)i * F + f] += eta * k[i] * g1[f];
    for (int f = 0; f < F; f++) Gb1[f] += eta * g1[f];
    for (int f = 0; f < F; f++)
        for (int j = 0; j < d; j++) G2[(size_t)f * d + j] += eta * x2[f] * g2[j];
    for (int j = 0; j < d; j++) Gb2[j] += eta * g2[j];
    for (int f = 0; f < F; f++) {
        double z = b1[f] - t * Gb1[f];
        for (int i = 0; i < d; i++) z += q[i] * (W1[(size_t)i * F + f] - t * G1[(size_t)i * F + f]);
        act[f] = gelu(z);
    }
    for (int j = 0; j < d; j++) {
        zq[j] = b2[j] - t * Gb2[j];
        for (int f = 0; f < F; f++) zq[j] += act[f] * (W2[(size_t)f * d + j] - t * G2[(size_t)f * d + j]);
    }
    mu = 0, var = 0;
    for (int j = 0; j < d; j++) mu += zq[j] / d;
    for (int j = 0; j < d; j++) var += (zq[j] - mu) * (zq[j] - mu) / d;
    const double rq = 1 / std::sqrt(var + eps);
    for (int j = 0; j < d; j++) out[o + j] = q[j] + (zq[j] - mu) * rq * gam[j] + bet[j];
    if (complete) {
        const size_t n[4] = {(size_t)d * F, (size_t)F, (size_t)F * d, (size_t)d};
        for (int p = 0; p < 4; p++)
            for (size_t e = 0; e < n[p]; e++) w[p][off[p] + e] -= t * g[p][off[p] + e], g[p][off[p] + e] = 0;
    }
}

template <typename T> static double rel(const std::vector<T> &a, const std::vector<double> &b) {
    double d = 0, s = 0;
    for (size_t i = 0; i < b.size(); i++) {
        d = std::max(d, std::fabs((double)a[i] - b[i]));
        s = std::max(s, std::fabs(b[i]));
    }
    return d / std::max(1.0, s);
}

template <typename R> static void run(int B, int H, int d, int bs, int tokens, double tol) {
    std::mt19937 gen(1000 + d);
    std::normal_distribution<double> N(0, 1);
    const size_t BH = (size_t)B * H, nd = BH * d, ndd = BH * d * d;
    std::vector<double> w(ndd), c(nd), gw(ndd, 0), gc(nd, 0), tok(bs), gam((size_t)H * d), bet((size_t)H * d), out(nd);
    for (auto &x : w) x = 0.3 * N(gen) / std::sqrt((double)d);
    for (auto &x : c) x = 0.1 * N(gen);
    for (auto &x : gam) x = 1 + 0.2 * N(gen);
    for (auto &x : bet) x = 0.1 * N(gen);
    for (int i = 0; i < bs; i++) tok[i] = 1.0 / (i + 1) + 0.01 * i;
    std::vector<R> W(w.begin(), w.end()), C(c.begin(), c.end()), GW(ndd, 0), GC(nd, 0), TOK(tok.begin(), tok.end());
    std::vector<R> GAM(gam.begin(), gam.end()), BET(bet.begin(), bet.end()), OUT(nd);
    double worst_out = 0, worst_state = 0;
    for (int pos = 0; pos < tokens; pos++) {
        std::vector<double> q(nd), k(nd), v(nd), eta(BH);
        for (auto &x : q) x = N(gen);
        for (auto &x : k) x = N(gen) / std::sqrt((double)d);
        for (auto &x : v) x = N(gen);
        for (auto &x : eta) x = 0.5 + 0.5 * std::fabs(N(gen));
        std::vector<R> Q(q.begin(), q.end()), K(k.begin(), k.end()), V(v.begin(), v.end()), E(eta.begin(), eta.end());
        /* the reference reads the inputs the kernel reads (rounded to R) */
        std::vector<double> qr(Q.begin(), Q.end()), kr(K.begin(), K.end()), vr(V.begin(), V.end()), er(E.begin(), E.end());
        const int r0 = pos % bs;
        const bool complete = r0 == bs - 1;
        for (size_t bh = 0; bh < BH; bh++) {
            const int h = (int)(bh % H);
            ref_step(out, w, c, gw, gc, &qr[bh * d], &kr[bh * d], &vr[bh * d], er[bh], (double)TOK[r0], &gam[(size_t)h * d],
                     &bet[(size_t)h * d], d, complete, 1e-6, bh * d, bh * d * d);
        }
        tstep::Args<R> a;
        a.out = OUT.data(), a.w = W.data(), a.c = C.data(), a.gw = GW.data(), a.gc = GC.data();
        a.q = Q.data(), a.k = K.data(), a.v = V.data(), a.eta = E.data(), a.tok = TOK.data();
        a.ln_w = GAM.data(), a.ln_b = BET.data();
        a.H = H, a.d = d, a.r0 = r0, a.complete = complete, a.eps = (R)1e-6;
        emu::launch(dim3((unsigned)BH), dim3(tstep::THREADS), [&] { tstep::step<R>(a); });
        worst_out = std::max(worst_out, rel(OUT, out));
        worst_state = std::max({worst_state, rel(W, w), rel(C, c), rel(GW, gw), rel(GC, gc)});
    }
    const bool ok = worst_out <= tol && worst_state <= tol;
    (ok ? passed : failed)++;
    fprintf(ok ? stdout : stderr, "%s ttt_linear_step %s B %d H %d d %d bs %d, %d tokens: output %.2e, state %.2e (tol %.0e)\n",
            ok ? "ok  " : "FAIL", sizeof(R) == 4 ? "f32" : "f64", B, H, d, bs, tokens, worst_out, worst_state, tol);
}

template <typename R> static void run_mlp(int B, int H, int d, int F, int bs, int tokens, double tol) {
    std::mt19937 gen(2000 + d + F);
    std::normal_distribution<double> N(0, 1);
    const size_t BH = (size_t)B * H, nd = BH * d, n[4] = {(size_t)d * F, (size_t)F, (size_t)F * d, (size_t)d};
    std::vector<double> w[4], g[4], tok(bs), gam((size_t)H * d), bet((size_t)H * d), out(nd);
    std::vector<R> Wr[4], Gr[4];
    for (int p = 0; p < 4; p++) {
        w[p].resize(BH * n[p]), g[p].assign(BH * n[p], 0);
        for (auto &x : w[p]) x = (p % 2 ? 0.1 : 0.5 / std::sqrt((double)(p ? F : d))) * N(gen);
        Wr[p].assign(w[p].begin(), w[p].end()), Gr[p].assign(BH * n[p], 0);
        for (size_t e = 0; e < w[p].size(); e++) w[p][e] = (double)Wr[p][e]; /* start from the same rounded values */
    }
    for (auto &x : gam) x = 1 + 0.2 * N(gen);
    for (auto &x : bet) x = 0.1 * N(gen);
    for (int i = 0; i < bs; i++) tok[i] = 1.0 / (i + 1) + 0.01 * i;
    std::vector<R> TOK(tok.begin(), tok.end()), GAM(gam.begin(), gam.end()), BET(bet.begin(), bet.end()), OUT(nd);
    std::vector<double> gamr(GAM.begin(), GAM.end()), betr(BET.begin(), BET.end());
    double worst_out = 0, worst_state = 0;
    for (int pos = 0; pos < tokens; pos++) {
        std::vector<R> Q(nd), K(nd), V(nd), E(BH);
        for (auto &x : Q) x = (R)N(gen);
        for (auto &x : K) x = (R)(N(gen) / std::sqrt((double)d));
        for (auto &x : V) x = (R)N(gen);
        for (auto &x : E) x = (R)(0.5 + 0.5 * std::fabs(N(gen)));
        std::vector<double> q(Q.begin(), Q.end()), k(K.begin(), K.end()), v(V.begin(), V.end()), eta(E.begin(), E.end());
        const int r0 = pos % bs;
        const bool complete = r0 == bs - 1;
        for (size_t bh = 0; bh < BH; bh++) {
            const size_t off[4] = {bh * n[0], bh * n[1], bh * n[2], bh * n[3]};
            const int h = (int)(bh % H);
            ref_mlp_step(out, w, g, off, &q[bh * d], &k[bh * d], &v[bh * d], eta[bh], (double)TOK[r0], &gamr[(size_t)h * d],
                         &betr[(size_t)h * d], d, F, complete, 1e-6, bh * d);
        }
        tstep::MlpArgs<R> a;
        a.out = OUT.data(), a.w1 = Wr[0].data(), a.b1 = Wr[1].data(), a.w2 = Wr[2].data(), a.b2 = Wr[3].data();
        a.g1 = Gr[0].data(), a.gb1 = Gr[1].data(), a.g2 = Gr[2].data(), a.gb2 = Gr[3].data();
        a.q = Q.data(), a.k = K.data(), a.v = V.data(), a.eta = E.data(), a.tok = TOK.data();
        a.ln_w = GAM.data(), a.ln_b = BET.data();
        a.H = H, a.d = d, a.F = F, a.r0 = r0, a.complete = complete, a.eps = (R)1e-6;
        emu::launch(dim3((unsigned)BH), dim3(tstep::THREADS), [&] { tstep::mlp_step<R>(a); });
        worst_out = std::max(worst_out, rel(OUT, out));
        for (int p = 0; p < 4; p++) worst_state = std::max({worst_state, rel(Wr[p], w[p]), rel(Gr[p], g[p])});
    }
    const bool ok = worst_out <= tol && worst_state <= tol;
    (ok ? passed : failed)++;
    fprintf(ok ? stdout : stderr, "%s ttt_mlp_step %s B %d H %d d %d F %d bs %d, %d tokens: output %.2e, state %.2e (tol %.0e)\n",
            ok ? "ok  " : "FAIL", sizeof(R) == 4 ? "f32" : "f64", B, H, d, F, bs, tokens, worst_out, worst_state, tol);
}

int main() {
    run<double>(2, 3, 8, 4, 10, 1e-12);   /* two mini-batches and a half */
    run<double>(1, 2, 130, 3, 4, 1e-12);  /* d above the 128 threads: two columns for some threads */
    run<float>(2, 3, 8, 4, 10, 2e-5);
    run<float>(1, 2, 64, 16, 18, 2e-5);   /* the layer's usual head and mini-batch, across one boundary */
    run<float>(1, 1, 128, 2, 3, 2e-5);
    run_mlp<double>(2, 2, 8, 32, 4, 10, 1e-12);
    run_mlp<double>(1, 1, 16, 200, 3, 4, 1e-12); /* F above the 128 threads, not a multiple of them */
    run_mlp<float>(2, 2, 8, 32, 4, 10, 5e-5);
    run_mlp<float>(1, 2, 64, 256, 16, 17, 5e-5); /* the layer's usual sizes, across one boundary */
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
