/* Runs the fused TTT-Linear scan's CUDA kernels (src/backends/cuda/ttt_scan.cuh, f32) on the host
 * emulator (emu.h) against a float64 reference: the CPU backend's kernels of the same math
 * (src/backends/cpu/cpu_ttt_scan_impl.h with R = double, which tests/test_ttt_scan.c checks against
 * the composed ops and finite differences). Forward: out, the final state and the stored states;
 * backward: the gradients of every input, with and without a gradient of the final state, W read
 * from shared memory and from global memory. Shapes cover head sizes below, at and above a warp
 * (5, 8, 40, 64, 128), w0 shared by the batch or not, one to four mini-batches. A few seconds:
 *   g++ -std=c++17 -O1 -I src/backends/cuda -I dev/cuda dev/cuda/ttt_scan_emu_test.cpp -o /tmp/scan_emu && /tmp/scan_emu */
#include "emu.h"

inline float *TTT_SCAN_SMEM() { return emu::g_smem.data(); }
#include "ttt_scan.cuh"

#define restrict __restrict
#define R double
#define SFX _f64
#define TANH tanh
#include "../../src/backends/cpu/cpu_ttt_scan_impl.h"
#undef R
#undef SFX
#undef TANH

#include <random>
#include <vector>

static int failed = 0, passed = 0;

/* max |a - b| / max(1, max |b|) */
static double rel(const std::vector<float> &a, const std::vector<double> &b) {
    double d = 0, s = 0;
    for (size_t i = 0; i < b.size(); i++) {
        d = std::max(d, std::fabs((double)a[i] - b[i]));
        s = std::max(s, std::fabs(b[i]));
    }
    return a.size() == b.size() ? d / std::max(1.0, s) : INFINITY;
}

static void expect(const char *what, const std::vector<float> &a, const std::vector<double> &b, double tol, double *worst) {
    const double e = rel(a, b);
    *worst = std::max(*worst, e);
    if (e <= tol) passed++;
    else {
        failed++;
        fprintf(stderr, "FAIL %s: relative difference %.3e > %.1e\n", what, e, tol);
    }
}

static std::vector<float> to_f32(const std::vector<double> &x) { return std::vector<float>(x.begin(), x.end()); }
/* the reference runs on the f32-rounded inputs, so only the kernels' arithmetic differs */
static std::vector<double> rounded(const std::vector<double> &x) {
    std::vector<double> r(x.size());
    for (size_t i = 0; i < x.size(); i++) r[i] = (double)(float)x[i];
    return r;
}

struct Case {
    int B, H, T, d, bs, w0_batched, w_in_smem, state_grad;
};

static void run(const Case &c, std::mt19937_64 &rng) {
    std::normal_distribution<double> nd(0.0, 1.0);
    std::uniform_real_distribution<double> ud(0.0, 1.0);
    const int B = c.B, H = c.H, T = c.T, d = c.d, bs = c.bs, N = T / bs;
    const int64_t BH = (int64_t)B * H, nx = BH * T * d;
    auto randv = [&](size_t n, double sc, double off) {
        std::vector<double> v(n);
        for (auto &x : v) x = off + sc * nd(rng);
        return rounded(v);
    };
    std::vector<double> q = randv(nx, 1, 0), k = randv(nx, 1, 0), v = randv(nx, 1, 0), eta(BH * T), tok(bs);
    for (auto &x : eta) x = (double)(float)(ud(rng) / d);
    for (int i = 0; i < bs; i++) tok[i] = (double)(float)(1.0 / (i + 1) + 0.05 * nd(rng));
    std::vector<double> lnw = randv((size_t)H * d, 0.3, 1), lnb = randv((size_t)H * d, 0.3, 0);
    const int64_t nw = (c.w0_batched ? BH : H) * d * d, nb = (c.w0_batched ? BH : H) * d;
    std::vector<double> w0 = randv(nw, 0.3, 0), b0 = randv(nb, 0.3, 0);
    std::vector<double> dout = randv(nx, 1, 0), dwo = randv(BH * d * d, 1, 0), dbo = randv(BH * d, 1, 0);

    /* reference, float64 */
    std::vector<double> out(nx), wout(BH * d * d), bout(BH * d), wst(BH * N * d * d), bst(BH * N * d);
    std::vector<double> rdq(nx), rdk(nx), rdv(nx), rde(BH * T), rdt(BH * bs), rdg(BH * d), rdb(BH * d), rdw(BH * d * d),
        rdc(BH * d);
    std::vector<double> scr((size_t)scratch_elems_f64(bs, d));
    for (int64_t bh = 0; bh < BH; bh++) {
        const int64_t h = bh % H, wi = c.w0_batched ? bh : h;
        scan_fwd_f64(&out[bh * T * d], &wout[bh * d * d], &bout[bh * d], &wst[bh * N * d * d], &bst[bh * N * d], &q[bh * T * d],
                     &k[bh * T * d], &v[bh * T * d], &eta[bh * T], tok.data(), &lnw[h * d], &lnb[h * d], &w0[wi * d * d],
                     &b0[wi * d], N, bs, d, 1e-6, scr.data());
        scan_bwd_f64(&rdq[bh * T * d], &rdk[bh * T * d], &rdv[bh * T * d], &rde[bh * T], &rdt[bh * bs], &rdg[bh * d], &rdb[bh * d],
                     &rdw[bh * d * d], &rdc[bh * d], &dout[bh * T * d], c.state_grad ? &dwo[bh * d * d] : nullptr,
                     c.state_grad ? &dbo[bh * d] : nullptr, &q[bh * T * d], &k[bh * T * d], &v[bh * T * d], &eta[bh * T],
                     tok.data(), &lnw[h * d], &lnb[h * d], &wst[bh * N * d * d], &bst[bh * N * d], N, bs, d, 1e-6, scr.data());
    }

    /* the kernels, f32 */
    std::vector<float> fq = to_f32(q), fk = to_f32(k), fv = to_f32(v), fe = to_f32(eta), ft = to_f32(tok), fg = to_f32(lnw),
                       fb = to_f32(lnb), fw0 = to_f32(w0), fb0 = to_f32(b0), fdo = to_f32(dout), fdwo = to_f32(dwo),
                       fdbo = to_f32(dbo);
    std::vector<float> kout(nx, NAN), kwout(BH * d * d, NAN), kbout(BH * d, NAN), kwst(BH * N * d * d, NAN), kbst(BH * N * d, NAN);
    tscan::Fwd p{kout.data(), kwout.data(), kbout.data(), kwst.data(), kbst.data(), fq.data(), fk.data(), fv.data(),
                 fe.data(), ft.data(), fg.data(), fb.data(), fw0.data(), fb0.data(), H, T, d, bs, N, c.w0_batched,
                 c.w0_batched, 1e-6f};
    emu::g_smem = std::vector<float>(tscan::fwd_smem_floats(d, bs), NAN);
    emu::launch(dim3((unsigned)BH), dim3(tscan::THREADS), [&] { tscan::scan_fwd(p); });
    std::vector<float> kdq(nx, NAN), kdk(nx, NAN), kdv(nx, NAN), kde(BH * T, NAN), kdt(BH * bs, NAN), kdg(BH * d, NAN),
        kdb(BH * d, NAN), kdw(BH * d * d, NAN), kdc(BH * d, NAN);
    tscan::Bwd pb{kdq.data(), kdk.data(), kdv.data(), kde.data(), kdt.data(), kdg.data(), kdb.data(), kdw.data(), kdc.data(),
                  fdo.data(), c.state_grad ? fdwo.data() : nullptr, c.state_grad ? fdbo.data() : nullptr, fq.data(),
                  fk.data(), fv.data(), fe.data(), ft.data(), fg.data(), fb.data(), kwst.data(), kbst.data(), H, T, d, bs, N,
                  c.w_in_smem, 1e-6f};
    emu::g_smem = std::vector<float>(tscan::bwd_smem_floats(d, bs, c.w_in_smem), NAN);
    emu::launch(dim3((unsigned)BH), dim3(tscan::THREADS), [&] { tscan::scan_bwd(pb); });

    const double tol = 2e-4;
    double wf = 0, wb = 0;
    expect("out", kout, out, tol, &wf);
    expect("w_out", kwout, wout, tol, &wf);
    expect("b_out", kbout, bout, tol, &wf);
    expect("w_states", kwst, wst, tol, &wf);
    expect("b_states", kbst, bst, tol, &wf);
    expect("dq", kdq, rdq, tol, &wb);
    expect("dk", kdk, rdk, tol, &wb);
    expect("dv", kdv, rdv, tol, &wb);
    expect("deta", kde, rde, tol, &wb);
    expect("dtok", kdt, rdt, tol, &wb);
    expect("dln_w", kdg, rdg, tol, &wb);
    expect("dln_b", kdb, rdb, tol, &wb);
    expect("dw0", kdw, rdw, tol, &wb);
    expect("db0", kdc, rdc, tol, &wb);
    printf("B %d H %d T %d d %d bs %d (w0 %s, W %s, %s): forward %.2e, backward %.2e (relative to float64)\n", B, H, T,
           d, bs, c.w0_batched ? "per sequence" : "shared", c.w_in_smem ? "shared memory" : "global",
           c.state_grad ? "loss on out and the final state" : "loss on out", wf, wb);
}

int main() {
    std::mt19937_64 rng(5);
    const Case cases[] = {
        {1, 2, 12, 8, 4, 0, 1, 1},  {2, 1, 16, 16, 8, 1, 0, 0}, {1, 1, 6, 5, 3, 0, 1, 1},  {1, 2, 12, 40, 6, 1, 1, 0},
        {1, 1, 32, 64, 16, 0, 1, 1}, {1, 1, 8, 128, 4, 1, 0, 1}, {2, 2, 8, 4, 8, 0, 0, 1},  {2, 1, 64, 64, 16, 1, 1, 1},
    };
    for (const Case &c : cases) run(c, rng);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
