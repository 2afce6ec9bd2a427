/* Runs the MTTT-MLP step's CUDA kernels (src/backends/cuda/mttt_step.cuh: step_fwd, step_bwd, apply_fwd,
 * apply_bwd and the chunk sums, reduce) on the host emulator (emu.h) against the CPU backend's kernels of
 * the same math in double (src/backends/cpu/cpu_mttt_impl.h, which tests/test_mttt_fused.c checks against
 * the composed ops and finite differences):
 *  - the step: W' (w1..b2) and each pair's loss; the loss alone (outputs NULL);
 *  - its backward: the gradients of all nine inputs per pair (dW1..db2 including the cotangents U, dk, dxt,
 *    dgh, dlng, dlnb) with cotangents on W' and the loss, on W' only, on the loss only;
 *  - the read-out gelu(q W1 + b1) W2 + b2 and its gradients (dq, dW1..db2);
 * in f64 (within 1e-12) and f32 (inputs rounded to f32 values, within 10x the worst seen), and f32 with the
 * products on the tensor cores (the kernels' TC instances: split-bf16, ~2^-16 = 1.5e-5 relative a product;
 * within 2e-4, ~2.4x the worst seen over 7 seeds, 8.4e-5 on the gradcheck's D 3, whose LN amplifies it), and
 * f32 on TF32 mma (the kernels' TC 2: ~2^-11 a product; within 1.5e-2, ~2.4x the worst seen over 7 seeds), on
 * shapes with m, d, F, D not multiples of anything, D below, at and above a warp's 32 lanes, the ViT's head
 * (d 32, F 128, D 64; m 49 here to stay fast), the gradcheck's tiny ones; weights shared by the batch ([H, ..]) or per
 * pair ([B, H, ..]), mixed; xt shared by the heads or not; with and without the decoder LN; k a permuted
 * view (the layer's). Each case runs with the weights in shared memory (mode 1) and in global memory
 * (mode 0), in one chunk per pair and several, with 16-row and odd tiles. Outputs start as NaN and shared
 * memory is poisoned, so a value not written, or read before it is, fails. Also the launchers' plan
 * (mttt::plan_memory, plan_chunks) for the ViT's shapes on an H100, and that chunks cover the tokens. A few seconds:
 *   g++ -std=c++17 -O1 -I src/backends/cuda -I dev/cuda dev/cuda/mttt_step_emu_test.cpp -o /tmp/mttt_emu && /tmp/mttt_emu */
#include "emu.h"

#include <algorithm>
#include <random>
#include <vector>

using std::min;
inline void *MTTT_SMEM() { return emu::g_smem.data(); }
#include "mttt_step.cuh"

#define restrict __restrict
#define KEEP_IN_REGISTER(v) (void)0
#define R double
#define SFX _f64
#define EXP exp
#include "../../src/backends/cpu/cpu_mttt_impl.h"
#undef R
#undef SFX
#undef EXP

typedef std::vector<double> vd;
static const double TF32_TOL = 1.5e-2; /* about 2.4x the worst seen over 7 seeds (3.2e-3 forward, 6.3e-3 backward) */
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
    int B, H, m, d, F, D, ln, xt_heads;
    int wb[4]; /* w1, b1, w2, b2 per pair ([B, H, ..]) or per head ([H, ..]) */
};

/* One case's inputs in double (f32 values, so both precisions see the same numbers). k is stored as
 * [B, m, H, d] and read through the permuted view [B, H, m, d], as the layer passes it. */
struct Inputs {
    Shape s;
    int64_t BH, wsz[4];
    vd w[4], k, xt, gh, lng, lnb, u[4], dloss, q, dout;
    int64_t ks[3], xs[3], qs[3];
    int64_t widx(int i, int64_t bh) const { return (s.wb[i] ? bh : bh % s.H) * wsz[i]; }
};

static Inputs make(const Shape &s, std::mt19937_64 &rng) {
    std::normal_distribution<double> nd(0.0, 1.0);
    Inputs in;
    in.s = s;
    in.BH = (int64_t)s.B * s.H;
    const int64_t d = s.d, F = s.F, D = s.D, m = s.m, H = s.H, B = s.B;
    const int64_t sz[4] = {d * F, F, F * d, d};
    const double sd[4] = {0.6 / std::sqrt((double)d), 0.3, 0.6 / std::sqrt((double)F), 0.3};
    auto randv = [&](int64_t n, double sc, double off) {
        vd v((size_t)n);
        for (auto &x : v) x = (double)(float)(off + sc * nd(rng));
        return v;
    };
    for (int i = 0; i < 4; i++) {
        in.wsz[i] = sz[i];
        in.w[i] = randv((s.wb[i] ? B * H : H) * sz[i], sd[i], 0);
        in.u[i] = randv(B * H * sz[i], 1.0, 0);
    }
    in.k = randv(B * m * H * d, 1.0, 0);
    in.ks[0] = m * H * d, in.ks[1] = d, in.ks[2] = H * d;
    const int64_t Hx = s.xt_heads ? H : 1;
    in.xt = randv(B * Hx * m * D, 1.0, 0);
    in.xs[0] = Hx * m * D, in.xs[1] = s.xt_heads ? m * D : 0, in.xs[2] = D;
    in.gh = randv(H * D * d, 1.0 / std::sqrt((double)d), 0);
    in.lng = randv(H * D, 0.3, 1.0), in.lnb = randv(H * D, 0.3, 0);
    in.dloss = randv(B * H, 1.0, 0.7);
    in.q = in.k, in.qs[0] = in.ks[0], in.qs[1] = in.ks[1], in.qs[2] = in.ks[2]; /* the read-out's q: another view */
    in.q = randv(B * m * H * d, 1.0, 0);
    in.dout = randv(B * H * m * d, 1.0, 0);
    return in;
}

/* ---- the CPU kernels in double, pair by pair ---- */

struct Ref {
    vd wo[4], loss, g[9], ao, ag[5];
};

static Ref reference(const Inputs &in, const bool *use_u, bool use_dloss, double eta, double eps) {
    const Shape &s = in.s;
    const int64_t d = s.d, F = s.F, D = s.D, m = s.m, BH = in.BH;
    Ref r;
    for (int i = 0; i < 4; i++) r.wo[i].assign(BH * in.wsz[i], 0), r.g[i].assign(BH * in.wsz[i], 0), r.ag[1 + i].assign(BH * in.wsz[i], 0);
    r.loss.assign(BH, 0);
    r.g[4].assign(BH * m * d, 0), r.g[5].assign(BH * m * D, 0), r.g[6].assign(BH * D * d, 0);
    r.g[7].assign(BH * D, 0), r.g[8].assign(BH * D, 0);
    r.ao.assign(BH * m * d, 0), r.ag[0].assign(BH * m * d, 0);
    vd scr((size_t)std::max({fwd_scratch_f64(m, d, F, D), bwd_scratch_f64(m, d, F, D), apply_scratch_f64(m, d, F)}));
    const double *pre[3] = {nullptr, nullptr, nullptr};
    for (int64_t bh = 0; bh < BH; bh++) {
        const int64_t h = bh % s.H, b = bh / s.H;
        const double *W[4];
        for (int i = 0; i < 4; i++) W[i] = &in.w[i][in.widx(i, bh)];
        const double *K = &in.k[b * in.ks[0] + h * in.ks[1]], *X = &in.xt[b * in.xs[0] + h * in.xs[1]];
        const double *G = &in.gh[h * D * d], *gam = s.ln ? &in.lng[h * D] : nullptr, *bet = s.ln ? &in.lnb[h * D] : nullptr;
        r.loss[bh] = step_fwd_f64(&r.wo[0][bh * d * F], &r.wo[1][bh * F], &r.wo[2][bh * F * d], &r.wo[3][bh * d], W[0], W[1],
                                  W[2], W[3], K, X, G, gam, bet, m, d, F, D, in.ks[2], in.xs[2], eta, eps, pre, scr.data());
        const double *U[4];
        for (int i = 0; i < 4; i++) U[i] = use_u[i] ? &in.u[i][bh * in.wsz[i]] : nullptr;
        step_bwd_f64(&r.g[0][bh * d * F], &r.g[1][bh * F], &r.g[2][bh * F * d], &r.g[3][bh * d], &r.g[4][bh * m * d],
                     &r.g[5][bh * m * D], &r.g[6][bh * D * d], s.ln ? &r.g[7][bh * D] : nullptr, s.ln ? &r.g[8][bh * D] : nullptr,
                     U[0], U[1], U[2], U[3], use_dloss ? in.dloss[bh] : 0.0, W[0], W[1], W[2], W[3], K, X, G, gam, bet, m, d,
                     F, D, in.ks[2], in.xs[2], eta, eps, pre, scr.data());
        const double *Q = &in.q[b * in.qs[0] + h * in.qs[1]];
        apply_fwd_f64(&r.ao[bh * m * d], W[0], W[1], W[2], W[3], Q, m, d, F, in.qs[2], scr.data());
        apply_bwd_f64(&r.ag[0][bh * m * d], &r.ag[1][bh * d * F], &r.ag[2][bh * F], &r.ag[3][bh * F * d], &r.ag[4][bh * d],
                      &in.dout[bh * m * d], W[0], W[1], W[2], Q, m, d, F, in.qs[2], pre, scr.data());
    }
    if (!s.ln) r.g[7].clear(), r.g[8].clear();
    return r;
}

/* ---- the kernels on the emulator, set up as mttt_step.cu sets them up ---- */

template <typename T> static std::vector<T> cvt(const vd &x) { return std::vector<T>(x.begin(), x.end()); }

struct Cfg {
    int mode, tm, cl; /* nch follows from cl */
    int tc;           /* f32: the products on the tensor cores (the kernels' TC: 1 split-bf16, 2 TF32) */
};

template <typename T> struct KOut {
    std::vector<T> wo[4], loss, loss_only, g[9], ao, ag[5];
};

template <typename T> static void run_reduce(const mttt::Reduce<T> &r, int64_t BH) {
    emu::launch(dim3((unsigned)((r.pe + mttt::THREADS - 1) / mttt::THREADS), (unsigned)BH), dim3(mttt::THREADS),
                [&] { mttt::reduce<T>(r); });
}

template <typename T> static mttt::Seg<T> seg(T *out, const T *base, int batched, int64_t size, int64_t off, double alpha) {
    mttt::Seg<T> s;
    s.out = out, s.base = base, s.base_batched = batched, s.size = (int)size, s.off = (int)off, s.alpha = (T)alpha;
    return s;
}

/* exactly the kernel's bytes, so -fsanitize=address catches an access past its layout */
static void smem(int64_t bytes) { emu::g_smem = std::vector<float>((size_t)(bytes + 3) / 4, NAN); }

template <typename T>
static KOut<T> kernels(const Inputs &in, const Cfg &c, const bool *use_u, bool use_dloss, double eta, double eps) {
    const Shape &s = in.s;
    const int d = s.d, F = s.F, D = s.D, m = s.m, es = (int)sizeof(T);
    const int64_t BH = in.BH, dF = (int64_t)d * F;
    constexpr int TC1 = sizeof(T) == 4 ? 1 : 0, TC2 = sizeof(T) == 4 ? 2 : 0; /* the kernels' TC where c.tc (f32 only) */
    const int nch = (m + c.cl - 1) / c.cl;
    std::vector<T> w[4], u[4];
    for (int i = 0; i < 4; i++) w[i] = cvt<T>(in.w[i]), u[i] = cvt<T>(in.u[i]);
    std::vector<T> k = cvt<T>(in.k), xt = cvt<T>(in.xt), gh = cvt<T>(in.gh), lng = cvt<T>(in.lng), lnb = cvt<T>(in.lnb);
    std::vector<T> dloss = cvt<T>(in.dloss), q = cvt<T>(in.q), dout = cvt<T>(in.dout);
    KOut<T> o;
    for (int i = 0; i < 4; i++) o.wo[i].assign(BH * in.wsz[i], NAN), o.g[i].assign(BH * in.wsz[i], NAN), o.ag[1 + i].assign(BH * in.wsz[i], NAN);
    o.loss.assign(BH, NAN), o.loss_only.assign(BH, NAN);
    o.g[4].assign(BH * m * d, NAN), o.g[5].assign(BH * m * D, NAN), o.g[6].assign(BH * D * d, NAN);
    if (s.ln) o.g[7].assign(BH * D, NAN), o.g[8].assign(BH * D, NAN);
    o.ao.assign(BH * m * d, NAN), o.ag[0].assign(BH * m * d, NAN);
    /* the step and the loss alone */
    for (int loss_only = 0; loss_only < 2; loss_only++) {
        const int64_t pe = mttt::fwd_part_elems(d, F);
        std::vector<T> part(BH * nch * pe, NAN);
        mttt::Step<T> p;
        p.part = part.data();
        p.w1 = w[0].data(), p.b1 = w[1].data(), p.w2 = w[2].data(), p.b2 = w[3].data();
        p.k = k.data(), p.xt = xt.data(), p.gh = gh.data();
        p.lng = s.ln ? lng.data() : nullptr, p.lnb = s.ln ? lnb.data() : nullptr;
        for (int a = 0; a < 3; a++) p.ks[a] = in.ks[a], p.xs[a] = in.xs[a];
        p.H = s.H, p.m = m, p.d = d, p.F = F, p.D = D;
        for (int i = 0; i < 4; i++) p.wb[i] = s.wb[i];
        p.mode = c.mode, p.tm = c.tm, p.cl = c.cl, p.nch = nch, p.loss_only = loss_only, p.eps = eps;
        smem(mttt::fwd_smem_bytes(c.mode, c.tm, d, F, D, es, c.tc));
        emu::launch(dim3((unsigned)nch, (unsigned)BH), dim3(mttt::THREADS), [&] {
            if (c.tc == 2) mttt::step_fwd<T, TC2>(p);
            else if (c.tc) mttt::step_fwd<T, TC1>(p);
            else mttt::step_fwd<T, 0>(p);
        });
        mttt::Reduce<T> r;
        r.part = part.data(), r.nch = nch, r.pe = (int)pe, r.H = s.H, r.nseg = 0;
        if (!loss_only) {
            r.seg[r.nseg++] = seg<T>(o.wo[0].data(), w[0].data(), s.wb[0], dF, 0, -eta);
            r.seg[r.nseg++] = seg<T>(o.wo[1].data(), w[1].data(), s.wb[1], F, dF, -eta);
            r.seg[r.nseg++] = seg<T>(o.wo[2].data(), w[2].data(), s.wb[2], dF, dF + F, -eta);
            r.seg[r.nseg++] = seg<T>(o.wo[3].data(), w[3].data(), s.wb[3], d, 2 * dF + F, -eta);
        }
        r.seg[r.nseg++] = seg<T>(loss_only ? o.loss_only.data() : o.loss.data(), (const T *)nullptr, 0, 1, pe - 1, 0.5 / m);
        run_reduce(r, BH);
    }
    /* the backward */
    {
        const int64_t pe = mttt::bwd_part_elems(d, F, D);
        std::vector<T> part(BH * nch * pe, NAN);
        mttt::StepBwd<T> p;
        p.part = part.data(), p.dk = o.g[4].data(), p.dx = o.g[5].data();
        p.u1 = use_u[0] ? u[0].data() : nullptr, p.v1 = use_u[1] ? u[1].data() : nullptr;
        p.u2 = use_u[2] ? u[2].data() : nullptr, p.v2 = use_u[3] ? u[3].data() : nullptr;
        p.dloss = use_dloss ? dloss.data() : nullptr;
        p.w1 = w[0].data(), p.b1 = w[1].data(), p.w2 = w[2].data(), p.b2 = w[3].data();
        p.k = k.data(), p.xt = xt.data(), p.gh = gh.data();
        p.lng = s.ln ? lng.data() : nullptr, p.lnb = s.ln ? lnb.data() : nullptr;
        for (int a = 0; a < 3; a++) p.ks[a] = in.ks[a], p.xs[a] = in.xs[a];
        p.H = s.H, p.m = m, p.d = d, p.F = F, p.D = D;
        for (int i = 0; i < 4; i++) p.wb[i] = s.wb[i];
        p.mode = c.mode, p.tm = c.tm, p.cl = c.cl, p.nch = nch, p.eta = eta, p.eps = eps;
        smem(mttt::bwd_smem_bytes(c.mode, c.tm, d, F, D, es, c.tc));
        emu::launch(dim3((unsigned)nch, (unsigned)BH), dim3(mttt::THREADS), [&] {
            if (c.tc == 2) mttt::step_bwd<T, TC2>(p);
            else if (c.tc) mttt::step_bwd<T, TC1>(p);
            else mttt::step_bwd<T, 0>(p);
        });
        mttt::Reduce<T> r;
        r.part = part.data(), r.nch = nch, r.pe = (int)pe, r.H = s.H, r.nseg = 0;
        const int64_t og = 2 * dF + F + d;
        r.seg[r.nseg++] = seg<T>(o.g[0].data(), p.u1, 1, dF, 0, 1);
        r.seg[r.nseg++] = seg<T>(o.g[1].data(), p.v1, 1, F, dF, 1);
        r.seg[r.nseg++] = seg<T>(o.g[2].data(), p.u2, 1, dF, dF + F, 1);
        r.seg[r.nseg++] = seg<T>(o.g[3].data(), p.v2, 1, d, 2 * dF + F, 1);
        r.seg[r.nseg++] = seg<T>(o.g[6].data(), (const T *)nullptr, 0, (int64_t)D * d, og, 1);
        r.seg[r.nseg++] = seg<T>(s.ln ? o.g[7].data() : nullptr, (const T *)nullptr, 0, D, og + (int64_t)D * d, 1);
        r.seg[r.nseg++] = seg<T>(s.ln ? o.g[8].data() : nullptr, (const T *)nullptr, 0, D, og + (int64_t)D * d + D, 1);
        run_reduce(r, BH);
    }
    /* the read-out and its backward (n = m tokens) */
    {
        mttt::Apply<T> p;
        p.w1 = w[0].data(), p.b1 = w[1].data(), p.w2 = w[2].data(), p.b2 = w[3].data(), p.q = q.data();
        for (int a = 0; a < 3; a++) p.qs[a] = in.qs[a];
        p.H = s.H, p.n = m, p.d = d, p.F = F;
        for (int i = 0; i < 4; i++) p.wb[i] = s.wb[i];
        p.mode = c.mode, p.tm = c.tm, p.cl = c.cl, p.nch = nch;
        p.out = o.ao.data(), p.dq = o.ag[0].data(), p.dout = dout.data();
        const int64_t pe = mttt::apply_part_elems(d, F);
        std::vector<T> part(BH * nch * pe, NAN);
        p.part = part.data();
        smem(mttt::apply_smem_bytes(false, c.mode, c.tm, d, F, es, c.tc));
        emu::launch(dim3((unsigned)nch, (unsigned)BH), dim3(mttt::THREADS), [&] {
            if (c.tc == 2) mttt::apply_fwd<T, TC2>(p);
            else if (c.tc) mttt::apply_fwd<T, TC1>(p);
            else mttt::apply_fwd<T, 0>(p);
        });
        smem(mttt::apply_smem_bytes(true, c.mode, c.tm, d, F, es, c.tc));
        emu::launch(dim3((unsigned)nch, (unsigned)BH), dim3(mttt::THREADS), [&] {
            if (c.tc == 2) mttt::apply_bwd<T, TC2>(p);
            else if (c.tc) mttt::apply_bwd<T, TC1>(p);
            else mttt::apply_bwd<T, 0>(p);
        });
        mttt::Reduce<T> r;
        r.part = part.data(), r.nch = nch, r.pe = (int)pe, r.H = s.H, r.nseg = 0;
        r.seg[r.nseg++] = seg<T>(o.ag[1].data(), (const T *)nullptr, 0, dF, 0, 1);
        r.seg[r.nseg++] = seg<T>(o.ag[2].data(), (const T *)nullptr, 0, F, dF, 1);
        r.seg[r.nseg++] = seg<T>(o.ag[3].data(), (const T *)nullptr, 0, dF, dF + F, 1);
        r.seg[r.nseg++] = seg<T>(o.ag[4].data(), (const T *)nullptr, 0, d, 2 * dF + F, 1);
        run_reduce(r, BH);
    }
    return o;
}

static const char *const GN[9] = {"dw1", "db1", "dw2", "db2", "dk", "dxt", "dgh", "dlng", "dlnb"};
static const char *const WN[4] = {"w1'", "b1'", "w2'", "b2'"};
static const char *const AN[5] = {"read-out dq", "read-out dw1", "read-out db1", "read-out dw2", "read-out db2"};

template <typename T>
static void run(const Shape &s, const Cfg &c, int cot, std::mt19937_64 &rng, double tf, double tb, double *wf, double *wb) {
    const double eta = 0.8, eps = 1e-6;
    const Inputs in = make(s, rng);
    /* cot 0: cotangents on W' and the loss; 1: W' only (and u1, U2 missing); 2: the loss only */
    const bool use_u[4] = {cot != 2, cot == 0, cot == 0, cot != 2};
    const bool use_dloss = cot != 1;
    const Ref r = reference(in, use_u, use_dloss, eta, eps);
    const KOut<T> k = kernels<T>(in, c, use_u, use_dloss, eta, eps);
    double f = 0, b = 0;
    char what[128];
    const char *ty = sizeof(T) == 8 ? "f64" : c.tc == 2 ? "f32 tf32" : c.tc ? "f32 tc" : "f32";
    for (int i = 0; i < 4; i++) snprintf(what, sizeof what, "%s %s", ty, WN[i]), check(what, rel(k.wo[i], r.wo[i]), tf, &f);
    snprintf(what, sizeof what, "%s loss", ty), check(what, rel(k.loss, r.loss), tf, &f);
    snprintf(what, sizeof what, "%s loss alone", ty), check(what, rel(k.loss_only, r.loss), tf, &f);
    snprintf(what, sizeof what, "%s read-out", ty), check(what, rel(k.ao, r.ao), tf, &f);
    for (int i = 0; i < 9; i++) snprintf(what, sizeof what, "%s %s", ty, GN[i]), check(what, rel(k.g[i], r.g[i]), tb, &b);
    for (int i = 0; i < 5; i++) snprintf(what, sizeof what, "%s %s", ty, AN[i]), check(what, rel(k.ag[i], r.ag[i]), tb, &b);
    printf("%-6s B%d H%d m%2d d%2d F%3d D%2d %-5s xt %-8s W %d%d%d%d, cotangents on %-8s mode %d tm %2d, %d chunk(s): "
           "forward %.1e, backward %.1e\n",
           ty, s.B, s.H, s.m, s.d, s.F, s.D, s.ln ? "LN" : "no LN", s.xt_heads ? "per head" : "shared", s.wb[0], s.wb[1],
           s.wb[2], s.wb[3], cot == 0 ? "W', loss" : cot == 1 ? "W'" : "loss", c.mode, c.tm, (s.m + c.cl - 1) / c.cl, f, b);
    *wf = std::max(*wf, f), *wb = std::max(*wb, b);
}

/* the plan (mttt::plan_memory, plan_chunks) on an H100 (227 KiB a block, 132 SMs) for the ViT's shapes, f32, in
 * the FMA tiles' layout and in mm_tc's (tc: wider row padding, the same plan) */
static void plans() {
    const int64_t limit = 227 << 10;
    double worst = 0;
    mttt::Plan p;
    const int d = 32, F = 128, D = 64, m = 784, BH = 128;
    bool ok;
    for (int tc = 0; tc < 2; tc++) {
        ok = mttt::plan_memory(
            limit, [&](int mode, int tm) { return mttt::fwd_smem_bytes(mode, tm, d, F, D, 4, tc); }, &p);
        if (ok) mttt::plan_chunks(m, BH, 2 * 132, &p); /* two blocks an SM */
        printf("plan%s, step forward: mode %d, tm %d, %d chunks of %d, %lld bytes\n", tc ? " (tc)" : "", p.mode, p.tm,
               p.nch, p.cl, (long long)p.bytes);
        check("forward plan: weights in shared memory, 16-row tiles, two blocks an SM, 2 chunks", ok && p.mode == 1 &&
              p.tm == 16 && p.nch == 2 && p.cl == 400 && 2 * (p.bytes + 1024) <= (228 << 10) ? 0.0 : 1.0, 0, &worst);
        ok = mttt::plan_memory(
            limit, [&](int mode, int tm) { return mttt::bwd_smem_bytes(mode, tm, d, F, D, 4, tc); }, &p);
        if (ok) mttt::plan_chunks(m, BH, 132, &p);
        printf("plan%s, step backward: mode %d, tm %d, %d chunks of %d, %lld bytes\n", tc ? " (tc)" : "", p.mode, p.tm,
               p.nch, p.cl, (long long)p.bytes);
        check("backward plan: weights in shared memory, 16-row tiles, 1 chunk", ok && p.mode == 1 && p.tm == 16 &&
              p.nch == 1 && p.cl == 784 ? 0.0 : 1.0, 0, &worst);
        for (int bwd = 0; bwd < 2; bwd++) {
            ok = mttt::plan_memory(
                limit, [&](int mode, int tm) { return mttt::apply_smem_bytes(bwd, mode, tm, d, F, 4, tc); }, &p);
            check("read-out plan: weights in shared memory", ok && p.mode == 1 && p.tm == 16 ? 0.0 : 1.0, 0, &worst);
        }
    }
    /* f64 at the ViT's head: the backward's weights no longer fit, global memory then */
    ok = mttt::plan_memory(limit, [&](int mode, int tm) { return mttt::bwd_smem_bytes(mode, tm, d, F, D, 8, 0); }, &p);
    check("f64 backward plan: weights in global memory", ok && p.mode == 0 ? 0.0 : 1.0, 0, &worst);
    /* a head too large for any plan: declined */
    ok = mttt::plan_memory(limit, [&](int mode, int tm) { return mttt::bwd_smem_bytes(mode, tm, 1024, 4096, 4096, 4, 0); }, &p);
    check("an oversized head is declined", ok ? 1.0 : 0.0, 0, &worst);
    /* the chunks always cover the m tokens exactly, in whole tiles, over a sweep of shapes */
    bool cover = true;
    for (int64_t mm = 1; mm <= 300; mm += 7)
        for (int tm : {1, 3, 16})
            for (int64_t bh : {1, 5, 128, 700})
                for (int64_t cap : {1, 132, 264, 1000}) {
                    mttt::Plan q{1, tm, 0, 0, 0};
                    mttt::plan_chunks(mm, bh, cap, &q);
                    cover = cover && q.nch >= 1 && q.cl % tm == 0 && (int64_t)(q.nch - 1) * q.cl < mm && (int64_t)q.nch * q.cl >= mm;
                }
    check("chunks cover the tokens", cover ? 0.0 : 1.0, 0, &worst);
}

int main() {
    std::mt19937_64 rng(7);
    plans();
    const Shape shapes[] = {
        {2, 2, 7, 4, 16, 8, 1, 0, {0, 0, 0, 0}},     /* test_mttt_fused's first */
        {3, 1, 5, 4, 16, 6, 0, 0, {1, 1, 1, 1}},     /* no LN, per pair */
        {1, 3, 11, 8, 32, 24, 1, 1, {1, 1, 1, 1}},   /* xt per head */
        {1, 2, 3, 6, 24, 5, 0, 1, {0, 1, 0, 1}},     /* odd sizes, D below a warp, mixed */
        {1, 1, 2, 2, 4, 3, 1, 0, {0, 0, 0, 0}},      /* the gradcheck's sizes */
        {1, 2, 19, 33, 40, 70, 1, 0, {1, 0, 1, 0}},  /* d, D past a warp, F not a multiple of 4 */
        {1, 2, 49, 32, 128, 64, 1, 1, {0, 0, 0, 0}}, /* the ViT's head (d 32, F 128, D 64), m 49 */
    };
    double f64f = 0, f64b = 0, f32f = 0, f32b = 0;
    int n = 0;
    /* the weights in shared memory with 16-row tiles, in chunks of 32 rows (one chunk unless m > 32), and in
     * global memory with 3-row tiles in chunks of 6 */
    const Cfg cfgs[2] = {{1, 16, 32, 0}, {0, 3, 6, 0}};
    for (const Shape &s : shapes)
        for (const Cfg &c : cfgs) {
            const int cot = n++ % 3;
            run<double>(s, c, cot, rng, 1e-12, 1e-12, &f64f, &f64b);
            run<float>(s, c, cot, rng, 2e-5, 1e-5, &f32f, &f32b);
        }
    /* the ViT's head in 16-row tiles, 4 chunks */
    run<float>(shapes[6], Cfg{1, 16, 16, 0}, 0, rng, 2e-5, 1e-5, &f32f, &f32b);
    /* the same f32 cases with the products on the tensor cores (mm_tc; any shape: edges clamped, k past K
     * zero), then the ViT's head in 4 chunks */
    double tcf = 0, tcb = 0;
    for (const Shape &s : shapes)
        for (Cfg c : cfgs) c.tc = 1, run<float>(s, c, n++ % 3, rng, 2e-4, 2e-4, &tcf, &tcb);
    run<float>(shapes[6], Cfg{1, 16, 16, 1}, 0, rng, 2e-4, 2e-4, &tcf, &tcb);
    /* and at TF32's precision (the kernels' TC 2: mma .tf32, 10-bit mantissas, ~2^-11 = 4.9e-4 a product) */
    double tff = 0, tfb = 0;
    for (const Shape &s : shapes)
        for (Cfg c : cfgs) c.tc = 2, run<float>(s, c, n++ % 3, rng, TF32_TOL, TF32_TOL, &tff, &tfb);
    run<float>(shapes[6], Cfg{1, 16, 16, 2}, 0, rng, TF32_TOL, TF32_TOL, &tff, &tfb);
    printf("worst: f64 forward %.1e, backward %.1e; f32 forward %.1e, backward %.1e; f32 on the tensor cores forward "
           "%.1e, backward %.1e; at TF32 forward %.1e, backward %.1e\n", f64f, f64b, f32f, f32b, tcf, tcb, tff, tfb);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
