/* Runs TTT-Linear's decode-step CUDA kernel (src/backends/cuda/ttt_step.cuh, f32 and f64) on the host
 * emulator and compares it with a plain float64 host implementation of the step written here from the
 * math in src/composed/ttt_step.c: the output, and the state (W, c, G, Gc) after a sequence of tokens that
 * crosses mini-batch boundaries (the step of W at each mini-batch's end, the sums zeroed). Head sizes
 * below, at and above the block's 128 threads (a thread then owns several columns), B H up to 6 blocks.
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

int main() {
    run<double>(2, 3, 8, 4, 10, 1e-12);   /* two mini-batches and a half */
    run<double>(1, 2, 130, 3, 4, 1e-12);  /* d above the 128 threads: two columns for some threads */
    run<float>(2, 3, 8, 4, 10, 2e-5);
    run<float>(1, 2, 64, 16, 18, 2e-5);   /* the layer's usual head and mini-batch, across one boundary */
    run<float>(1, 1, 128, 2, 3, 2e-5);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
