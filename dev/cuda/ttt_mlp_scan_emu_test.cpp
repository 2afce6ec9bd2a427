/* Runs the fused TTT-MLP scan's CUDA kernels (src/backends/cuda/ttt_mlp_scan.cuh: mlp_fwd with and
 * without the stored states, mlp_bwd) on the host emulator (emu.h).
 *  - f32 kernels against float64: the forward (out, final weights, stored states) against a plain
 *    float64 implementation of the dual form written here from src/composed/ttt_scan.c's statement
 *    (ref_fwd), and against the CPU backend's kernels of the same math with R = double
 *    (cpu_ttt_scan_impl.h, which tests/test_ttt_scan.c checks against the composed ops); the gradients
 *    of all eleven inputs against that CPU backward in double.
 *  - f64 kernels: the backward against central differences of the f64 forward kernel, along random
 *    directions for every input, of L = <dout, out> + sum <dfin, final weights>.
 * Shapes: several (B, H), T = 1 to 4 mini-batches, mini-batches 4, 8, 16, d 4 to 16 (and an odd 5),
 * F = 4 d (and 20), initial weights shared by the batch, per sequence, or mixed; every case in the
 * kernels' three memory modes (weights and buffers in shared memory, buffers only, neither), with and
 * without a gradient of the final weights. A NaN anywhere fails (outputs start as NaN, shared memory is
 * poisoned). A few seconds:
 *   g++ -std=c++17 -O1 -I src/backends/cuda -I dev/cuda dev/cuda/ttt_mlp_scan_emu_test.cpp -o /tmp/mlp_emu && /tmp/mlp_emu */
#include "emu.h"

inline void *TTT_MLP_SMEM() { return emu::g_smem.data(); }
#include "ttt_mlp_scan.cuh"

#define restrict __restrict
#define R double
#define SFX _f64
#define TANH tanh
#include "../../src/backends/cpu/cpu_ttt_scan_impl.h"
#undef R
#undef SFX
#undef TANH

#include <algorithm>
#include <random>
#include <vector>

typedef std::vector<double> vd;
static int failed = 0, passed = 0;

/* max |a - b| / max(1e-3, max |b|); NaN counts as infinitely far */
template <typename T> static double rel(const std::vector<T> &a, const vd &b) {
    if (a.size() != b.size()) return INFINITY;
    double d = 0, s = 0;
    for (size_t i = 0; i < b.size(); i++) {
        const double x = std::fabs((double)a[i] - b[i]);
        d = std::max(d, x != x ? INFINITY : x);
        s = std::max(s, std::fabs(b[i]));
    }
    return d / std::max(1e-3, s);
}

static void check(const char *what, double e, double tol, double *worst) {
    *worst = std::max(*worst, e);
    if (e <= tol) passed++;
    else {
        failed++;
        fprintf(stderr, "FAIL %s: relative difference %.3e > %.1e\n", what, e, tol);
    }
}

struct Shape {
    int B, H, T, d, F, bs;
    int batched[4]; /* w1, b1, w2, b2 per sequence ([B, H, ..]) or shared ([H, ..]) */
};

/* The inputs of one case, in double (rounded to f32 values, so the f32 kernels see the same numbers). */
struct Inputs {
    Shape s;
    vd q, k, v, eta, tok, lnw, lnb, w[4], dout, dfin[4];
    int64_t BH, N, nx, wsz[4]; /* wsz: the elements per (batch, head) of W1, b1, W2, b2 */
    int64_t widx(int i, int64_t bh) const { return (s.batched[i] ? bh : bh % s.H) * wsz[i]; }
};

static Inputs make(const Shape &s, std::mt19937_64 &rng) {
    std::normal_distribution<double> nd(0.0, 1.0);
    std::uniform_real_distribution<double> ud(0.0, 1.0);
    Inputs in;
    in.s = s;
    in.BH = (int64_t)s.B * s.H, in.N = s.T / s.bs, in.nx = in.BH * s.T * s.d;
    const int64_t sz[4] = {(int64_t)s.d * s.F, s.F, (int64_t)s.F * s.d, s.d};
    auto randv = [&](size_t n, double sc, double off) {
        vd v(n);
        for (auto &x : v) x = (double)(float)(off + sc * nd(rng));
        return v;
    };
    in.q = randv(in.nx, 1, 0), in.k = randv(in.nx, 1, 0), in.v = randv(in.nx, 1, 0);
    in.eta.resize(in.BH * s.T);
    for (auto &x : in.eta) x = (double)(float)(ud(rng) / s.d);
    in.tok.resize(s.bs);
    for (int i = 0; i < s.bs; i++) in.tok[i] = (double)(float)(1.0 / (i + 1) + 0.05 * nd(rng));
    in.lnw = randv((size_t)s.H * s.d, 0.3, 1), in.lnb = randv((size_t)s.H * s.d, 0.3, 0);
    const double scale[4] = {1.0 / std::sqrt((double)s.d), 0.3, 1.0 / std::sqrt((double)s.F), 0.3};
    for (int i = 0; i < 4; i++) {
        in.wsz[i] = sz[i];
        in.w[i] = randv((s.batched[i] ? in.BH : s.H) * sz[i], scale[i], 0);
        in.dfin[i] = randv(in.BH * sz[i], 1, 0);
    }
    in.dout = randv(in.nx, 1, 0);
    return in;
}

/* ---- a plain float64 reference of the forward, from src/composed/ttt_scan.c's statement ---------------- */

static double gelu_t(double x) { return 0.5 * x * (1 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }
static double gelu_d(double x) {
    const double c = 0.7978845608028654, k = 0.044715, t = std::tanh(c * (x + k * x * x * x));
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * k * x * x);
}
/* LN of a row (no affine) */
static vd ln(const double *z, int d, double eps) {
    double m = 0, v = 0;
    for (int j = 0; j < d; j++) m += z[j];
    m /= d;
    for (int j = 0; j < d; j++) v += (z[j] - m) * (z[j] - m);
    const double r = 1 / std::sqrt(v / d + eps);
    vd x(d);
    for (int j = 0; j < d; j++) x[j] = (z[j] - m) * r;
    return x;
}
/* C [m, n] = A [m, k] B [k, n] (+ bias row) */
static vd mm(const vd &A, const vd &B, int m, int k, int n, const double *bias = nullptr) {
    vd C((size_t)m * n);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = bias ? bias[j] : 0;
            for (int a = 0; a < k; a++) s += A[(size_t)i * k + a] * B[(size_t)a * n + j];
            C[(size_t)i * n + j] = s;
        }
    return C;
}
/* z = x W + c - (E o tril(x keys^T)) g - E g with E[i, j] = tok_i e_j (j <= i) */
static vd dual(const vd &x, const vd &keys, const vd &W, const double *c, const vd &g, const double *tok, const double *e,
               int bs, int din, int dout) {
    vd z = mm(x, W, bs, din, dout, c);
    for (int i = 0; i < bs; i++)
        for (int j = 0; j <= i; j++) {
            double s = 0;
            for (int a = 0; a < din; a++) s += x[(size_t)i * din + a] * keys[(size_t)j * din + a];
            const double m = tok[i] * e[j] * (s + 1);
            for (int a = 0; a < dout; a++) z[(size_t)i * dout + a] -= m * g[(size_t)j * dout + a];
        }
    return z;
}

/* out, the final weights (per (batch, head)) and the stored states */
static void ref_fwd(const Inputs &in, vd &out, vd (&wf)[4], vd &st, double eps) {
    const Shape &s = in.s;
    const int d = s.d, F = s.F, bs = s.bs;
    const int64_t WE = 2 * (int64_t)d * F + F + d;
    out.assign(in.nx, 0);
    st.assign(in.BH * in.N * WE, 0);
    for (int i = 0; i < 4; i++) wf[i].assign(in.BH * in.wsz[i], 0);
    for (int64_t bh = 0; bh < in.BH; bh++) {
        const int h = (int)(bh % s.H);
        vd W[4];
        for (int i = 0; i < 4; i++) W[i].assign(in.w[i].begin() + in.widx(i, bh), in.w[i].begin() + in.widx(i, bh) + in.wsz[i]);
        const double *gam = &in.lnw[h * d], *bet = &in.lnb[h * d], *tok = in.tok.data(), tl = in.tok[bs - 1];
        for (int64_t n = 0; n < in.N; n++) {
            double *sn = &st[(bh * in.N + n) * WE];
            std::copy(W[0].begin(), W[0].end(), sn);
            std::copy(W[1].begin(), W[1].end(), sn + d * F);
            std::copy(W[2].begin(), W[2].end(), sn + d * F + F);
            std::copy(W[3].begin(), W[3].end(), sn + 2 * d * F + F);
            const int64_t r0 = bh * s.T + n * bs;
            vd Q(in.q.begin() + r0 * d, in.q.begin() + (r0 + bs) * d), K(in.k.begin() + r0 * d, in.k.begin() + (r0 + bs) * d);
            const double *V = &in.v[r0 * d], *e = &in.eta[r0];
            vd z1 = mm(K, W[0], bs, d, F, W[1].data()), x2(z1.size());
            for (size_t x = 0; x < z1.size(); x++) x2[x] = gelu_t(z1[x]);
            vd z2 = mm(x2, W[2], bs, F, d, W[3].data()), g2((size_t)bs * d), g1((size_t)bs * F);
            for (int i = 0; i < bs; i++) { /* d/dz of 1/2 || LN(z) gam + bet - (v - k) ||^2, differentiated by hand */
                const double *z = &z2[(size_t)i * d];
                double m = 0, var = 0;
                for (int j = 0; j < d; j++) m += z[j];
                m /= d;
                for (int j = 0; j < d; j++) var += (z[j] - m) * (z[j] - m);
                const double r = 1 / std::sqrt(var / d + eps);
                vd xh = ln(z, d, eps), gx(d);
                double s1 = 0, s2 = 0;
                for (int j = 0; j < d; j++) {
                    gx[j] = (xh[j] * gam[j] + bet[j] - (V[i * d + j] - K[(size_t)i * d + j])) * gam[j];
                    s1 += gx[j], s2 += gx[j] * xh[j];
                }
                for (int j = 0; j < d; j++) g2[(size_t)i * d + j] = r * (gx[j] - s1 / d - xh[j] * s2 / d);
            }
            for (int i = 0; i < bs; i++) /* G1 = (G2 W2^T) o gelu'(z1) */
                for (int f = 0; f < F; f++) {
                    double acc = 0;
                    for (int a = 0; a < d; a++) acc += g2[(size_t)i * d + a] * W[2][(size_t)f * d + a];
                    g1[(size_t)i * F + f] = acc * gelu_d(z1[(size_t)i * F + f]);
                }
            vd zb1 = dual(Q, K, W[0], W[1].data(), g1, tok, e, bs, d, F), xb(zb1.size());
            for (size_t x = 0; x < zb1.size(); x++) xb[x] = gelu_t(zb1[x]);
            vd zb2 = dual(xb, x2, W[2], W[3].data(), g2, tok, e, bs, F, d);
            for (int i = 0; i < bs; i++) {
                vd xh = ln(&zb2[(size_t)i * d], d, eps);
                for (int a = 0; a < d; a++) out[(r0 + i) * d + a] = Q[(size_t)i * d + a] + xh[a] * gam[a] + bet[a];
            }
            for (int i = 0; i < bs; i++) {
                const double si = tl * e[i];
                for (int a = 0; a < d; a++)
                    for (int f = 0; f < F; f++) W[0][(size_t)a * F + f] -= si * K[(size_t)i * d + a] * g1[(size_t)i * F + f];
                for (int f = 0; f < F; f++) W[1][f] -= si * g1[(size_t)i * F + f];
                for (int f = 0; f < F; f++)
                    for (int a = 0; a < d; a++) W[2][(size_t)f * d + a] -= si * x2[(size_t)i * F + f] * g2[(size_t)i * d + a];
                for (int a = 0; a < d; a++) W[3][a] -= si * g2[(size_t)i * d + a];
            }
        }
        for (int i = 0; i < 4; i++) std::copy(W[i].begin(), W[i].end(), wf[i].begin() + bh * in.wsz[i]);
    }
}

/* ---- the kernels on the emulator ------------------------------------------------------------------------- */

template <typename T> static std::vector<T> cvt(const vd &x) { return std::vector<T>(x.begin(), x.end()); }

template <typename T> struct KOut {
    std::vector<T> out, wf[4], st, dq, dk, dv, deta, dtok, dlnw, dlnb, dw[4];
};

/* The forward (st: keep the states) and, with bwd, the backward in memory mode `mode`. in's vectors may
 * be replaced (perturbed) by the caller through `over` (index 0..10 in the op's order, nullptr: in's). */
template <typename T>
static KOut<T> kernels(const Inputs &in, int mode, bool keep_states, bool bwd, bool state_grad, double eps,
                       const vd *const *over = nullptr) {
    const Shape &s = in.s;
    const int d = s.d, F = s.F, bs = s.bs, N = (int)in.N;
    const int64_t BH = in.BH, WE = (int64_t)tmlp::w_elems(d, F);
    const vd *src[11] = {&in.q, &in.k, &in.v, &in.eta, &in.tok, &in.lnw, &in.lnb, &in.w[0], &in.w[1], &in.w[2], &in.w[3]};
    std::vector<T> x[11];
    for (int i = 0; i < 11; i++) x[i] = cvt<T>(over && over[i] ? *over[i] : *src[i]);
    KOut<T> o;
    o.out.assign(in.nx, NAN);
    for (int i = 0; i < 4; i++) o.wf[i].assign(BH * in.wsz[i], NAN);
    o.st.assign(keep_states || bwd ? BH * N * WE : 0, NAN);
    const size_t smem_f = tmlp::fwd_smem_elems(d, F, bs, mode) * sizeof(T) / sizeof(float);
    std::vector<T> scr(mode ? 0 : BH * tmlp::fwd_buf_elems(d, F, bs), NAN);
    tmlp::Fwd<T> p{o.out.data(), o.wf[0].data(), o.wf[1].data(), o.wf[2].data(), o.wf[3].data(),
                   keep_states || bwd ? o.st.data() : nullptr, x[0].data(), x[1].data(), x[2].data(), x[3].data(),
                   x[4].data(), x[5].data(), x[6].data(), x[7].data(), x[8].data(), x[9].data(), x[10].data(),
                   mode ? nullptr : scr.data(), s.H, s.T, d, F, bs, N, s.batched[0], s.batched[1], s.batched[2],
                   s.batched[3], mode, (T)eps};
    emu::g_smem = std::vector<float>(std::max<size_t>(smem_f, 1), NAN);
    emu::launch(dim3((unsigned)BH), dim3(tmlp::THREADS), [&] { tmlp::mlp_fwd<T>(p); });
    if (!bwd) return o;
    std::vector<T> dout = cvt<T>(in.dout), dfin[4];
    for (int i = 0; i < 4; i++) dfin[i] = cvt<T>(in.dfin[i]);
    o.dq.assign(in.nx, NAN), o.dk.assign(in.nx, NAN), o.dv.assign(in.nx, NAN), o.deta.assign(BH * s.T, NAN);
    o.dtok.assign(BH * bs, NAN), o.dlnw.assign(BH * d, NAN), o.dlnb.assign(BH * d, NAN);
    for (int i = 0; i < 4; i++) o.dw[i].assign(BH * in.wsz[i], NAN);
    std::vector<T> bscr(mode ? 0 : BH * tmlp::bwd_buf_elems(d, F, bs), NAN);
    tmlp::Bwd<T> b{o.dq.data(), o.dk.data(), o.dv.data(), o.deta.data(), o.dtok.data(), o.dlnw.data(), o.dlnb.data(),
                   o.dw[0].data(), o.dw[1].data(), o.dw[2].data(), o.dw[3].data(), dout.data(),
                   state_grad ? dfin[0].data() : nullptr, state_grad ? dfin[1].data() : nullptr,
                   state_grad ? dfin[2].data() : nullptr, state_grad ? dfin[3].data() : nullptr, x[0].data(), x[1].data(),
                   x[2].data(), x[3].data(), x[4].data(), x[5].data(), x[6].data(), o.st.data(),
                   mode ? nullptr : bscr.data(), s.H, s.T, d, F, bs, N, mode, (T)eps};
    emu::g_smem = std::vector<float>(std::max<size_t>(tmlp::bwd_smem_elems(d, F, bs, mode) * sizeof(T) / sizeof(float), 1), NAN);
    emu::launch(dim3((unsigned)BH), dim3(tmlp::THREADS), [&] { tmlp::mlp_bwd<T>(b); });
    return o;
}

static const char *const MODE[3] = {"all in global memory", "buffers in shared memory", "all in shared memory"};

/* f32 kernels against float64 */
static void run_f32(const Shape &s, int mode, bool state_grad, std::mt19937_64 &rng) {
    const double eps = 1e-6;
    const Inputs in = make(s, rng);
    const int d = s.d, F = s.F, bs = s.bs;
    const int64_t BH = in.BH, N = in.N, WE = 2 * (int64_t)d * F + F + d;
    /* the plain reference, and the CPU kernels in double (forward and backward) */
    vd out, wf[4], st;
    ref_fwd(in, out, wf, st, eps);
    vd cout(in.nx), cwf[4], cst(BH * N * WE), rg[11];
    for (int i = 0; i < 4; i++) cwf[i].resize(BH * in.wsz[i]), rg[7 + i].resize(BH * in.wsz[i]);
    rg[0].resize(in.nx), rg[1].resize(in.nx), rg[2].resize(in.nx), rg[3].resize(BH * s.T), rg[4].resize(BH * bs);
    rg[5].resize(BH * d), rg[6].resize(BH * d);
    vd scr((size_t)std::max(mlp_scratch_elems_f64(bs, d, F), mlp_bwd_scratch_elems_f64(bs, d, F)));
    for (int64_t bh = 0; bh < BH; bh++) {
        const int64_t h = bh % s.H, o = bh * s.T * d;
        mlp_scan_fwd_f64(&cout[o], &cwf[0][bh * d * F], &cwf[1][bh * F], &cwf[2][bh * F * d], &cwf[3][bh * d], &cst[bh * N * WE],
                         &in.q[o], &in.k[o], &in.v[o], &in.eta[bh * s.T], in.tok.data(), &in.lnw[h * d], &in.lnb[h * d],
                         &in.w[0][in.widx(0, bh)], &in.w[1][in.widx(1, bh)], &in.w[2][in.widx(2, bh)],
                         &in.w[3][in.widx(3, bh)], N, bs, d, F, eps, scr.data());
        const double *dfin[4];
        for (int i = 0; i < 4; i++) dfin[i] = state_grad ? &in.dfin[i][bh * in.wsz[i]] : nullptr;
        mlp_scan_bwd_f64(&rg[0][o], &rg[1][o], &rg[2][o], &rg[3][bh * s.T], &rg[4][bh * bs], &rg[5][bh * d], &rg[6][bh * d],
                         &rg[7][bh * d * F], &rg[8][bh * F], &rg[9][bh * F * d], &rg[10][bh * d], &in.dout[o], dfin, &in.q[o],
                         &in.k[o], &in.v[o], &in.eta[bh * s.T], in.tok.data(), &in.lnw[h * d], &in.lnb[h * d],
                         &cst[bh * N * WE], N, bs, d, F, eps, scr.data());
    }
    double wr = 0, wf_ = 0, wb = 0;
    /* the two float64 references agree (the plain one is independent of the CPU kernels' code) */
    check("reference out", rel(cout, out), 1e-12, &wr);
    check("reference states", rel(cst, st), 1e-12, &wr);
    for (int i = 0; i < 4; i++) check("reference final weights", rel(cwf[i], wf[i]), 1e-12, &wr);
    const KOut<float> k = kernels<float>(in, mode, true, true, state_grad, eps);
    const KOut<float> kn = kernels<float>(in, mode, false, false, false, eps); /* no states kept */
    static const char *const WN[4] = {"w1_out", "b1_out", "w2_out", "b2_out"};
    const double tf = 5e-6, tb = 2e-5; /* ~10x the worst seen */
    check("out", rel(k.out, out), tf, &wf_);
    check("states", rel(k.st, st), tf, &wf_);
    for (int i = 0; i < 4; i++) check(WN[i], rel(k.wf[i], wf[i]), tf, &wf_);
    /* without a graph the forward keeps no states and gives the same bits */
    bool same = !memcmp(k.out.data(), kn.out.data(), k.out.size() * sizeof(float));
    for (int i = 0; i < 4; i++) same = same && !memcmp(k.wf[i].data(), kn.wf[i].data(), k.wf[i].size() * sizeof(float));
    check("forward without states: same bits", same ? 0.0 : 1.0, 0, &wr);
    const std::vector<float> *kg[11] = {&k.dq, &k.dk, &k.dv, &k.deta, &k.dtok, &k.dlnw, &k.dlnb, &k.dw[0], &k.dw[1], &k.dw[2], &k.dw[3]};
    static const char *const GN[11] = {"dq", "dk", "dv", "deta", "dtok", "dln_w", "dln_b", "dw1", "db1", "dw2", "db2"};
    for (int i = 0; i < 11; i++) check(GN[i], rel(*kg[i], rg[i]), tb, &wb);
    printf("f32  B %d H %d T %2d d %2d F %2d bs %2d (weights %d%d%d%d per sequence, %s, %s): forward %.2e, backward %.2e\n",
           s.B, s.H, s.T, d, F, bs, s.batched[0], s.batched[1], s.batched[2], s.batched[3], MODE[mode],
           state_grad ? "loss on out and the final weights" : "loss on out", wf_, wb);
}

/* f64 kernels: the backward against central differences of the forward kernel */
static void run_fd(const Shape &s, int mode, std::mt19937_64 &rng) {
    const double eps = 1e-6, hstep = 1e-4;
    const Inputs in = make(s, rng);
    std::normal_distribution<double> nd(0.0, 1.0);
    const KOut<double> g = kernels<double>(in, mode, true, true, true, eps);
    auto loss = [&](const vd *const *over) {
        const KOut<double> o = kernels<double>(in, mode, false, false, false, eps, over);
        double L = 0;
        for (size_t i = 0; i < o.out.size(); i++) L += in.dout[i] * o.out[i];
        for (int w = 0; w < 4; w++)
            for (size_t i = 0; i < o.wf[w].size(); i++) L += in.dfin[w][i] * o.wf[w][i];
        return L;
    };
    const vd *src[11] = {&in.q, &in.k, &in.v, &in.eta, &in.tok, &in.lnw, &in.lnb, &in.w[0], &in.w[1], &in.w[2], &in.w[3]};
    const std::vector<double> *kg[11] = {&g.dq, &g.dk, &g.dv, &g.deta, &g.dtok, &g.dlnw, &g.dlnb, &g.dw[0], &g.dw[1], &g.dw[2], &g.dw[3]};
    static const char *const GN[11] = {"dq", "dk", "dv", "deta", "dtok", "dln_w", "dln_b", "dw1", "db1", "dw2", "db2"};
    double worst = 0;
    for (int i = 0; i < 11; i++) {
        const vd &x = *src[i];
        vd u(x.size());
        for (auto &t : u) t = nd(rng);
        /* <grad, u>: the kernel's per-(batch, head) partial sums, summed over what the input shares */
        double an = 0;
        const std::vector<double> &gi = *kg[i];
        const size_t n = x.size();
        for (size_t j = 0; j < gi.size(); j++) an += gi[j] * u[j % n];
        /* the fourth-order central stencil, (8 (L(h) - L(-h)) - (L(2h) - L(-2h))) / 12 h */
        double l[4];
        const double at[4] = {hstep, -hstep, 2 * hstep, -2 * hstep};
        for (int t = 0; t < 4; t++) {
            vd xs = x;
            for (size_t j = 0; j < n; j++) xs[j] += at[t] * u[j];
            const vd *over[11] = {};
            over[i] = &xs;
            l[t] = loss(over);
        }
        const double fd = (8 * (l[0] - l[1]) - (l[2] - l[3])) / (12 * hstep);
        const double e = std::fabs(an - fd) / std::max(1e-3, std::fabs(fd));
        char what[64];
        snprintf(what, sizeof what, "f64 %s against central differences", GN[i]);
        check(what, e, 1e-8, &worst);
    }
    printf("f64  B %d H %d T %2d d %2d F %2d bs %2d (weights %d%d%d%d per sequence, %s): backward against central "
           "differences %.2e\n",
           s.B, s.H, s.T, s.d, s.F, s.bs, s.batched[0], s.batched[1], s.batched[2], s.batched[3], MODE[mode], worst);
}

/* The launcher's choice of memory mode (tmlp::pick_mode) on an H100's 227 KiB a block, as docs/mixers.md and
 * run_scan_gpu.sh state it: {forward, d, F, bs, mode} */
static void modes() {
    const struct {
        bool fwd;
        int d, F, bs, mode;
    } want[] = {
        {true, 64, 256, 16, 2},   {false, 64, 256, 16, 1},  /* the layer's head, 207 and 219 KiB */
        {true, 16, 64, 4, 2},     {false, 16, 64, 4, 2},    /* ttt_rnn_bench --check's default (D 32, 2 heads) */
        {true, 128, 512, 4, 1},   {false, 128, 512, 4, 1},  /* --check at D 256, 2 heads */
        {true, 384, 1536, 4, 1},  {false, 384, 1536, 4, 0}, /* --check at D 768, 2 heads */
        {true, 128, 512, 16, 1},  {false, 128, 512, 16, 0},
    };
    for (const auto &w : want) {
        const int m = tmlp::pick_mode(w.fwd, w.d, w.F, w.bs, sizeof(float), 227 << 10);
        char what[96];
        snprintf(what, sizeof what, "%s mode at d %d, F %d, bs %d: %d, want %d", w.fwd ? "forward" : "backward", w.d, w.F,
                 w.bs, m, w.mode);
        double worst = 0;
        check(what, m == w.mode ? 0.0 : 1.0, 0, &worst);
    }
}

int main() {
    std::mt19937_64 rng(7);
    modes();
    const Shape shapes[] = {
        {1, 1, 16, 8, 32, 16, {0, 0, 0, 0}}, /* one mini-batch */
        {2, 1, 32, 8, 32, 16, {1, 1, 1, 1}}, /* two, weights per sequence */
        {1, 2, 48, 16, 64, 16, {0, 0, 0, 0}}, /* three, d 16 */
        {2, 2, 64, 16, 64, 16, {1, 0, 1, 0}}, /* four, mixed */
        {1, 1, 24, 5, 20, 8, {0, 1, 0, 1}},  /* odd d and F (clamped tile edges, partial warps in the rows) */
        {1, 3, 12, 4, 16, 4, {0, 0, 1, 1}},  /* small mini-batches, three heads */
        {1, 1, 64, 8, 32, 32, {1, 1, 1, 1}}, /* b 32: more entries of M than threads */
        {1, 1, 32, 64, 256, 16, {0, 0, 0, 0}}, /* the layer's head size 64, F 256 */
    };
    int c = 0;
    for (const Shape &s : shapes)
        for (int mode = 2; mode >= 0; mode--) run_f32(s, mode, (c++ & 1) != 0, rng);
    const Shape fd[] = {{1, 2, 32, 8, 32, 16, {0, 1, 0, 1}}, {2, 1, 24, 5, 20, 8, {1, 0, 1, 0}}};
    for (const Shape &s : fd)
        for (int mode = 2; mode >= 0; mode -= 2) run_fd(s, mode, rng);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
