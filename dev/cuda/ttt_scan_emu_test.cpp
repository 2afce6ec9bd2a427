/* Runs the fused TTT-Linear scan's CUDA kernels (src/backends/cuda/ttt_scan.cuh, f32) on the host
 * emulator (emu.h) against a float64 reference: the CPU backend's kernels of the same math
 * (src/backends/cpu/cpu_ttt_scan_impl.h with R = double, which tests/test_ttt_scan.c checks against
 * the composed ops and finite differences). Forward: out, the final state and the stored states;
 * backward (scan_bwd_pre, then the reverse scan scan_bwd through their scratch): the gradients of
 * every input, with and without a gradient of the final state, W read from shared memory and from
 * global memory. Shapes cover head sizes below, at and above a warp (5, 8, 33, 40, 64, 96, 128),
 * mini-batches of 3 to 64 (the register tiles' clamped edges, more tiles than threads), w0 shared by
 * the batch or not, one to five mini-batches; those with d and b multiples of 16 run again with the
 * products on the tensor cores (mma 2, tolerance 1e-3), and four of them with the choice per
 * mini-batch (mma 1) on f32 and on bf16 q, k, which must give the bits of mma 0 and of mma 2. A few
 * seconds:
 *   g++ -std=c++17 -O1 -I src/backends/cuda -I dev/cuda dev/cuda/ttt_scan_emu_test.cpp -o /tmp/scan_emu && /tmp/scan_emu */
#include "emu.h"

inline float *TTT_SCAN_SMEM() { return emu::g_smem.data(); }
#include "ttt_scan.cuh"
#include "ttt_scan2.cuh"

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
static double v2_worst_f = 0, v2_worst_b = 0;

/* max |a - b| / max(1, max |b|); infinite where a has a NaN or an infinity (std::max drops NaNs) */
static double rel(const std::vector<float> &a, const std::vector<double> &b) {
    double d = 0, s = 0;
    for (size_t i = 0; i < b.size() && i < a.size(); i++) {
        if (!std::isfinite(a[i])) return INFINITY;
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
    int mma = 0;     /* Fwd::mma: 0 FMA tiles, 1 tensor cores where q and k are bf16 values, 2 tensor cores */
    int bf16_qk = 0; /* q and k rounded to bf16 values (what the op passes for bf16 inputs) */
};

/* x rounded to the nearest bf16 value (even on ties) */
static double bf16_round(double x) {
    float f = (float)x;
    uint32_t b;
    memcpy(&b, &f, 4);
    b = (b + 0x7fffu + ((b >> 16) & 1u)) & 0xffff0000u;
    memcpy(&f, &b, 4);
    return f;
}

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
    if (c.bf16_qk)
        for (int64_t i = 0; i < nx; i++) q[i] = bf16_round(q[i]), k[i] = bf16_round(k[i]);
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
    struct KOut {
        std::vector<float> out, wout, bout, wst, bst, dq, dk, dv, de, dt, dg, db, dw, dc;
    };
    auto kernels = [&](int mma) {
        KOut k{std::vector<float>(nx, NAN),         std::vector<float>(BH * d * d, NAN), std::vector<float>(BH * d, NAN),
               std::vector<float>(BH * N * d * d, NAN), std::vector<float>(BH * N * d, NAN), std::vector<float>(nx, NAN),
               std::vector<float>(nx, NAN),         std::vector<float>(nx, NAN),         std::vector<float>(BH * T, NAN),
               std::vector<float>(BH * bs, NAN),    std::vector<float>(BH * d, NAN),     std::vector<float>(BH * d, NAN),
               std::vector<float>(BH * d * d, NAN), std::vector<float>(BH * d, NAN)};
        tscan::Fwd p{k.out.data(), k.wout.data(), k.bout.data(), k.wst.data(), k.bst.data(), fq.data(), fk.data(), fv.data(),
                     fe.data(), ft.data(), fg.data(), fb.data(), fw0.data(), fb0.data(), H, T, d, bs, N, c.w0_batched,
                     c.w0_batched, 1e-6f, mma};
        emu::g_smem = std::vector<float>(tscan::fwd_smem_floats(d, bs), NAN);
        emu::launch(dim3((unsigned)BH), dim3(tscan::THREADS), [&] { tscan::scan_fwd(p); });
        tscan::Bwd pb{k.dq.data(), k.dk.data(), k.dv.data(), k.de.data(), k.dt.data(), k.dg.data(), k.db.data(), k.dw.data(),
                      k.dc.data(), fdo.data(), c.state_grad ? fdwo.data() : nullptr, c.state_grad ? fdbo.data() : nullptr,
                      fq.data(), fk.data(), fv.data(), fe.data(), ft.data(), fg.data(), fb.data(), k.wst.data(), k.bst.data(),
                      nullptr, H, T, d, bs, N, c.w_in_smem, 1e-6f, mma};
        std::vector<float> kscr(BH * N * tscan::bwd_scratch_floats(d, bs), NAN); /* scan_bwd_pre -> scan_bwd */
        pb.scr = kscr.data();
        emu::g_smem = std::vector<float>(tscan::bwd_pre_smem_floats(d, bs), NAN);
        emu::launch(dim3((unsigned)(BH * N)), dim3(tscan::THREADS), [&] { tscan::scan_bwd_pre(pb); });
        emu::g_smem = std::vector<float>(tscan::bwd_smem_floats(d, bs, c.w_in_smem), NAN);
        emu::launch(dim3((unsigned)BH), dim3(tscan::THREADS), [&] { tscan::scan_bwd(pb); });
        return k;
    };
    const KOut ko = kernels(c.mma);
    const std::vector<float> &kout = ko.out, &kwout = ko.wout, &kbout = ko.bout, &kwst = ko.wst, &kbst = ko.bst, &kdq = ko.dq,
                             &kdk = ko.dk, &kdv = ko.dv, &kde = ko.de, &kdt = ko.dt, &kdg = ko.dg, &kdb = ko.db, &kdw = ko.dw,
                             &kdc = ko.dc;
    if (c.mma == 1) {
        /* the choice per mini-batch: bf16 q, k take the tensor cores (the bits of mma 2), f32 ones the FMA
         * tiles (the bits of mma 0) */
        const KOut other = kernels(c.bf16_qk ? 2 : 0);
        const std::vector<float> *a[] = {&ko.out, &ko.wout, &ko.wst, &ko.dq, &ko.dk, &ko.dv, &ko.de, &ko.dt, &ko.dw, &ko.dc},
                                 *b[] = {&other.out, &other.wout, &other.wst, &other.dq, &other.dk, &other.dv, &other.de,
                                         &other.dt, &other.dw, &other.dc};
        bool same = true;
        for (int i = 0; i < 10; i++) same = same && !memcmp(a[i]->data(), b[i]->data(), a[i]->size() * sizeof(float));
        if (same) passed++;
        else {
            failed++;
            fprintf(stderr, "FAIL mma 1 on %s q, k: not the bits of mma %d\n", c.bf16_qk ? "bf16" : "f32", c.bf16_qk ? 2 : 0);
        }
    }

    if (c.d == tscan2::D && c.bs == tscan2::BS && c.mma != 0) {
        /* TTT_SCAN_V2 (ttt_scan2.cuh): fwd_h + scan_fwd_o, then scan_bwd_pre, bwd2, bwd2_post, as the launcher
         * runs them; with mma 1 behind the device flag (qk_bf16): on bf16 q, k these kernels run and the old
         * ones return at once, on f32 q, k the other way round, which must give the old kernels' bits */
        KOut v{std::vector<float>(nx, NAN),         std::vector<float>(BH * d * d, NAN), std::vector<float>(BH * d, NAN),
               std::vector<float>(BH * N * d * d, NAN), std::vector<float>(BH * N * d, NAN), std::vector<float>(nx, NAN),
               std::vector<float>(nx, NAN),         std::vector<float>(nx, NAN),         std::vector<float>(BH * T, NAN),
               std::vector<float>(BH * bs, NAN),    std::vector<float>(BH * d, NAN),     std::vector<float>(BH * d, NAN),
               std::vector<float>(BH * d * d, NAN), std::vector<float>(BH * d, NAN)};
        int flag = 0x01010101; /* the launcher's memset */
        const int *gate = nullptr;
        if (c.mma == 1) {
            emu::launch(dim3(3), dim3(64), [&] {
                tscan2::qk_bf16((const float4 *)fq.data(), (const float4 *)fk.data(), nx / 4, &flag);
            });
            gate = &flag;
            if ((flag != 0) != (c.bf16_qk != 0)) {
                failed++;
                fprintf(stderr, "FAIL qk_bf16: flag %d on %s q, k\n", flag, c.bf16_qk ? "bf16" : "f32");
            } else passed++;
        }
        std::vector<float> gbuf(nx, NAN);
        tscan::Fwd p{v.out.data(), v.wout.data(), v.bout.data(), v.wst.data(), v.bst.data(), fq.data(), fk.data(), fv.data(),
                     fe.data(), ft.data(), fg.data(), fb.data(), fw0.data(), fb0.data(), H, T, d, bs, N, c.w0_batched,
                     c.w0_batched, 1e-6f, c.mma};
        p.g_buf = gbuf.data(), p.gate = gate;
        auto fwd_v2 = [&] {
            p.gate_on = 1;
            emu::g_smem = std::vector<float>(tscan2::fwd_smem_floats(), NAN);
            emu::launch(dim3((unsigned)BH), dim3(tscan2::THREADS), [&] { tscan2::fwd_h(p); });
            emu::g_smem = std::vector<float>(tscan::fwd_o_smem_floats(d, bs), NAN);
            emu::launch(dim3((unsigned)(BH * N)), dim3(tscan::THREADS), [&] { tscan::scan_fwd_o(p); });
            if (gate) {
                p.gate_on = 0;
                emu::g_smem = std::vector<float>(tscan::fwd_smem_floats(d, bs), NAN);
                emu::launch(dim3((unsigned)BH), dim3(tscan::THREADS), [&] { tscan::scan_fwd(p); });
            }
        };
        fwd_v2();
        tscan::Bwd pb{v.dq.data(), v.dk.data(), v.dv.data(), v.de.data(), v.dt.data(), v.dg.data(), v.db.data(), v.dw.data(),
                      v.dc.data(), fdo.data(), c.state_grad ? fdwo.data() : nullptr, c.state_grad ? fdbo.data() : nullptr,
                      fq.data(), fk.data(), fv.data(), fe.data(), ft.data(), fg.data(), fb.data(), v.wst.data(), v.bst.data(),
                      nullptr, H, T, d, bs, N, 1, 1e-6f, c.mma};
        std::vector<float> kscr(BH * N * tscan::bwd_scratch_floats(d, bs), NAN), kpost(BH * N * tscan2::post_floats(), NAN);
        pb.scr = kscr.data(), pb.post = kpost.data(), pb.gate = gate;
        emu::g_smem = std::vector<float>(tscan::bwd_pre_smem_floats(d, bs), NAN);
        emu::launch(dim3((unsigned)(BH * N)), dim3(tscan::THREADS), [&] { tscan::scan_bwd_pre(pb); });
        pb.gate_on = 1;
        emu::g_smem = std::vector<float>(tscan2::bwd_smem_floats(), NAN);
        emu::launch(dim3((unsigned)BH), dim3(tscan2::THREADS), [&] { tscan2::bwd2(pb); });
        emu::g_smem = std::vector<float>(tscan2::post_smem_floats(), NAN);
        emu::launch(dim3((unsigned)(BH * N)), dim3(tscan2::PT), [&] { tscan2::bwd2_post(pb); });
        if (gate) {
            pb.gate_on = 0;
            emu::g_smem = std::vector<float>(tscan::bwd_smem_floats(d, bs, 1), NAN);
            emu::launch(dim3((unsigned)BH), dim3(tscan::THREADS), [&] { tscan::scan_bwd(pb); });
        }
        if (gate && !c.bf16_qk) { /* f32 q, k: the old kernels ran, with mma 1's choice (the FMA tiles) */
            const std::vector<float> *a[] = {&v.out, &v.wout, &v.wst, &v.dq, &v.dk, &v.dv, &v.de, &v.dt, &v.dw, &v.dc},
                                     *b[] = {&ko.out, &ko.wout, &ko.wst, &ko.dq, &ko.dk, &ko.dv, &ko.de, &ko.dt, &ko.dw, &ko.dc};
            bool same = true;
            for (int i = 0; i < 10; i++) same = same && !memcmp(a[i]->data(), b[i]->data(), a[i]->size() * sizeof(float));
            if (same) passed++;
            else {
                failed++;
                fprintf(stderr, "FAIL v2 gated off (f32 q, k): not the bits of the old kernels\n");
            }
        } else {
            double vf = 0, vb = 0;
            const double tol2 = 1e-3;
            expect("v2 out", v.out, out, tol2, &vf);
            expect("v2 w_out", v.wout, wout, tol2, &vf);
            expect("v2 b_out", v.bout, bout, tol2, &vf);
            expect("v2 w_states", v.wst, wst, tol2, &vf);
            expect("v2 b_states", v.bst, bst, tol2, &vf);
            expect("v2 dq", v.dq, rdq, tol2, &vb);
            expect("v2 dk", v.dk, rdk, tol2, &vb);
            expect("v2 dv", v.dv, rdv, tol2, &vb);
            expect("v2 deta", v.de, rde, tol2, &vb);
            expect("v2 dtok", v.dt, rdt, tol2, &vb);
            expect("v2 dln_w", v.dg, rdg, tol2, &vb);
            expect("v2 dln_b", v.db, rdb, tol2, &vb);
            expect("v2 dw0", v.dw, rdw, tol2, &vb);
            expect("v2 db0", v.dc, rdc, tol2, &vb);
            printf("  TTT_SCAN_V2 kernels%s: forward %.2e, backward %.2e (relative to float64)\n",
                   c.bf16_qk ? " (bf16 q, k)" : "", vf, vb);
            v2_worst_f = std::max(v2_worst_f, vf), v2_worst_b = std::max(v2_worst_b, vb);
        }
    }

    if (c.mma == 0) {
        /* the split forward (scan_fwd_h, then scan_fwd_o per mini-batch): the same sums in the same order, so the
         * same bits as scan_fwd's outputs, final state and stored states */
        std::vector<float> sout(nx, NAN), swo(BH * d * d, NAN), sbo(BH * d, NAN), swst(BH * N * d * d, NAN), sbst(BH * N * d, NAN),
            sg(nx, NAN);
        tscan::Fwd p{sout.data(), swo.data(), sbo.data(), swst.data(), sbst.data(), fq.data(), fk.data(), fv.data(),
                     fe.data(), ft.data(), fg.data(), fb.data(), fw0.data(), fb0.data(), H, T, d, bs, N, c.w0_batched,
                     c.w0_batched, 1e-6f, 0};
        p.g_buf = sg.data();
        emu::g_smem = std::vector<float>(tscan::fwd_h_smem_floats(d, bs), NAN);
        emu::launch(dim3((unsigned)BH), dim3(tscan::THREADS), [&] { tscan::scan_fwd_h(p); });
        emu::g_smem = std::vector<float>(tscan::fwd_o_smem_floats(d, bs), NAN);
        emu::launch(dim3((unsigned)(BH * N)), dim3(tscan::THREADS), [&] { tscan::scan_fwd_o(p); });
        const std::vector<float> *a[] = {&sout, &swo, &sbo, &swst, &sbst}, *b[] = {&ko.out, &ko.wout, &ko.bout, &ko.wst, &ko.bst};
        bool same = true;
        for (int i = 0; i < 5; i++) same = same && !memcmp(a[i]->data(), b[i]->data(), a[i]->size() * sizeof(float));
        if (same) passed++;
        else {
            failed++;
            fprintf(stderr, "FAIL split forward (B %d H %d T %d d %d bs %d): not the bits of scan_fwd\n", B, H, T, d, bs);
        }
    }

    /* the tensor-core path's products are ~2^-16 relative (three bf16 products of split f32 operands) */
    const double tol = c.mma ? 1e-3 : 2e-4;
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
    static const char *const MMA[3] = {"", ", tensor cores where q, k are bf16", ", tensor cores"};
    printf("B %d H %d T %d d %d bs %d (w0 %s, W %s, %s%s%s): forward %.2e, backward %.2e (relative to float64)\n", B,
           H, T, d, bs, c.w0_batched ? "per sequence" : "shared", c.w_in_smem ? "shared memory" : "global",
           c.state_grad ? "loss on out and the final state" : "loss on out", c.bf16_qk ? ", bf16 q, k" : "", MMA[c.mma], wf,
           wb);
}

int main() {
    std::mt19937_64 rng(5);
    const Case cases[] = {
        {1, 2, 12, 8, 4, 0, 1, 1},  {2, 1, 16, 16, 8, 1, 0, 0}, {1, 1, 6, 5, 3, 0, 1, 1},  {1, 2, 12, 40, 6, 1, 1, 0},
        {1, 1, 32, 64, 16, 0, 1, 1}, {1, 1, 8, 128, 4, 1, 0, 1}, {2, 2, 8, 4, 8, 0, 0, 1},  {2, 1, 64, 64, 16, 1, 1, 1},
        /* the register tiles' edges and several mini-batches: the layer's d 64 and 128 at b 16 (W in shared
         * memory and in global), odd d and b (clamped rows and columns), b 32 and 64 (more tiles than
         * threads in q k^T, dzq G^T and [K; Q] W) */
        {2, 2, 80, 64, 16, 1, 1, 1}, {1, 1, 48, 128, 16, 0, 1, 1}, {1, 2, 64, 128, 16, 1, 0, 0}, {1, 3, 35, 33, 7, 0, 1, 1},
        {1, 1, 96, 64, 32, 0, 1, 1}, {1, 1, 128, 64, 64, 1, 0, 0}, {1, 1, 36, 96, 12, 1, 1, 0},
        /* for the TTT_SCAN_V2 kernels (d 64, b 16): one mini-batch, and sixteen (both halves of their double
         * buffers many times over) */
        {1, 1, 16, 64, 16, 0, 1, 0}, {1, 3, 256, 64, 16, 0, 1, 1},
    };
    for (Case c : cases) {
        run(c, rng);
        if (tscan::mma_fits(c.d, c.bs)) { /* and again with the products on the tensor cores */
            c.mma = 2;
            run(c, rng);
            if (c.d == 64 && c.w_in_smem) { /* the choice by q, k's values, both ways */
                c.mma = 1;
                for (c.bf16_qk = 0; c.bf16_qk < 2; c.bf16_qk++) run(c, rng);
                c.bf16_qk = 0;
            }
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
