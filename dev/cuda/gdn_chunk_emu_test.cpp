/* Runs the chunk-parallel fused Gated DeltaNet kernels (src/backends/cuda/gdn_chunk.cuh, f32: the forward's
 * gdn_prep, gdn_scan, gdn_out and the backward's gdn_prep, gdn_scan, gdn_bwd_chunk, gdn_sum_tiles, in the
 * order gdn_chunk.cu launches them, 256 threads a block) on the host emulator (emu.h) and checks them
 * against a float64 reference written from the recurrence itself, token by token:
 *     S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,   o_t = q_t^T S_t
 *   - the output, the final state and the states stored before each chunk;
 *   - the gradients of L = <o, R> + <S_T, Rs> (either term may be absent) with respect to q, k, v, beta, g
 *     and s0, against central differences of the float64 recurrence (every element);
 * on shapes with T not a multiple of the chunk, one chunk (C = T), dk != dv, with and without s0, strong
 * (alpha down to e^-6) and weak gates, one chunk and several; each with the dv columns in one tile and in
 * several (the scan's and the output's tiles, and the backward's partial gradients per tile, added by
 * gdn_sum_tiles). Then the launcher's geometry (chunks of 64; d = 64 at T 150 with the scan in tiles of
 * 8 and 16; dk = dv = 128 in tiles of 32) with each gradient checked along a random direction (every
 * element would take minutes there). test_plan checks the launcher's tile choice (gdnk::make_plan) for
 * an H100. Shared memory is sized exactly as the launcher sizes it, so
 * an AddressSanitizer build (-fsanitize=address) catches accesses past the layout. No GPU needed (under a
 * second):
 *   g++ -std=c++17 -O1 -I src/backends/cuda -I dev/cuda dev/cuda/gdn_chunk_emu_test.cpp -o /tmp/gdn_emu && /tmp/gdn_emu */
#include "emu.h"

#define GDN_SMEM() (emu::g_smem.data())
#include "gdn_chunk.cuh"

#include <algorithm>
#include <random>
#include <vector>

#include "emu_expect.h"

struct Shape {
    int BH, T, K, V, C;
    bool s0, strong;
    int loss; /* 0: <o, R> + <S, Rs>; 1: <o, R> only; 2: <S, Rs> only */
};

struct Inputs {
    std::vector<double> q, k, v, beta, g, s0, R, Rs;
};

/* The recurrence in float64 for one (batch, head) h: o, the final state, and the states at chunk starts. */
static void reference(const Shape &s, const Inputs &in, int h, std::vector<double> &o, std::vector<double> &S,
                      std::vector<double> *states) {
    const int T = s.T, K = s.K, V = s.V;
    S.assign((size_t)K * V, 0.0);
    if (s.s0)
        for (int e = 0; e < K * V; e++) S[e] = in.s0[(size_t)h * K * V + e];
    o.assign((size_t)T * V, 0.0);
    std::vector<double> kS(V);
    for (int t = 0; t < T; t++) {
        if (states && t % s.C == 0) states->insert(states->end(), S.begin(), S.end());
        const double *q = &in.q[((size_t)h * T + t) * K], *k = &in.k[((size_t)h * T + t) * K];
        const double *v = &in.v[((size_t)h * T + t) * V];
        const double a = exp(in.g[(size_t)h * T + t]), b = in.beta[(size_t)h * T + t];
        for (int x = 0; x < V; x++) {
            kS[x] = 0;
            for (int i = 0; i < K; i++) kS[x] += k[i] * S[(size_t)i * V + x];
        }
        /* S = a S + k (b (v - a S^T k))^T */
        for (int i = 0; i < K; i++)
            for (int x = 0; x < V; x++) S[(size_t)i * V + x] = a * S[(size_t)i * V + x] + k[i] * b * (v[x] - a * kS[x]);
        for (int x = 0; x < V; x++) {
            double y = 0;
            for (int i = 0; i < K; i++) y += q[i] * S[(size_t)i * V + x];
            o[(size_t)t * V + x] = y;
        }
    }
}

static double loss(const Shape &s, const Inputs &in, int h) {
    std::vector<double> o, S;
    reference(s, in, h, o, S, nullptr);
    double l = 0;
    if (s.loss != 2)
        for (size_t e = 0; e < o.size(); e++) l += o[e] * in.R[(size_t)h * s.T * s.V + e];
    if (s.loss != 1)
        for (size_t e = 0; e < S.size(); e++) l += S[e] * in.Rs[(size_t)h * s.K * s.V + e];
    return l;
}

static std::vector<float> to_f32(const std::vector<double> &x) { return std::vector<float>(x.begin(), x.end()); }

/* max |a - b| / max(max |b|, floor); infinite where a has a NaN (which std::max would skip) */
static double rel(const std::vector<float> &a, const std::vector<double> &b, double floor = 1e-3) {
    double d = 0, m = floor;
    for (size_t i = 0; i < b.size(); i++) {
        if (!std::isfinite(a[i])) return INFINITY;
        d = std::max(d, fabs((double)a[i] - b[i])), m = std::max(m, fabs(b[i]));
    }
    return d / m;
}

/* VT: columns per tile (V: one tile, the kernels write the gradients directly; fewer: per-tile partial
 * sums that gdn_sum_tiles adds, as the launcher does) */
/* full_fd: every gradient element against its central difference; otherwise (shapes too large for that
 * on the emulator) each gradient along one random direction, <grad, d> against the central difference of
 * the loss along d. scan_vt: the scan's tile width (0: VT, the other kernels' tile width). */
static void run_shape(const Shape &s, int VT, unsigned seed, bool full_fd = true, int scan_vt = 0) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> nd(0.0, 1.0);
    std::uniform_real_distribution<double> ud(0.0, 1.0);
    /* C: the launcher clamps the chunk to T (one chunk of T tokens) */
    const int BH = s.BH, T = s.T, K = s.K, V = s.V, C = std::min(s.C, s.T), N = (T + C - 1) / C;
    Inputs in;
    auto fill = [&](std::vector<double> &x, size_t n, double std) {
        x.resize(n);
        for (auto &e : x) e = std * nd(rng);
    };
    fill(in.q, (size_t)BH * T * K, 1.0);
    fill(in.k, (size_t)BH * T * K, 1.0);
    for (int r = 0; r < BH * T; r++) { /* unit keys, as the block's L2 norm gives */
        double n2 = 0;
        for (int i = 0; i < K; i++) n2 += in.k[(size_t)r * K + i] * in.k[(size_t)r * K + i];
        for (int i = 0; i < K; i++) in.k[(size_t)r * K + i] /= sqrt(n2);
    }
    fill(in.v, (size_t)BH * T * V, 1.0);
    in.beta.resize((size_t)BH * T);
    in.g.resize((size_t)BH * T);
    for (auto &b : in.beta) b = 1.0 / (1.0 + exp(-2.0 * nd(rng)));
    for (auto &g : in.g) g = -(s.strong ? 6.0 : 0.05) * ud(rng);
    fill(in.s0, (size_t)BH * K * V, 1.0);
    fill(in.R, (size_t)BH * T * V, 1.0);
    fill(in.Rs, (size_t)BH * K * V, 1.0);

    /* the kernels */
    std::vector<float> q = to_f32(in.q), k = to_f32(in.k), v = to_f32(in.v), beta = to_f32(in.beta), g = to_f32(in.g),
                       s0 = to_f32(in.s0), R = to_f32(in.R), Rs = to_f32(in.Rs);
    std::vector<float> o((size_t)BH * T * V, NAN), s_out((size_t)BH * K * V, NAN), states((size_t)BH * N * K * V, NAN);
    const int threads = 256, tiles = (V + VT - 1) / VT;
    /* shared memory of exactly the size the launcher gives, so that an AddressSanitizer build of this
     * test catches a kernel stepping past its layout */
    auto smem = [](int floats) {
        emu::g_smem.assign((size_t)floats, NAN);
        emu::g_smem.shrink_to_fit();
    };
    /* the scratch gdn_chunk.cu carves from its pool, poisoned */
    std::vector<float> amap((size_t)BH * N * K * K, NAN), ut((size_t)BH * T * V, NAN), qe((size_t)BH * T * K, NAN),
        pm((size_t)BH * N * C * C, NAN), dstates((size_t)BH * N * K * V, NAN);
    gdnk::Params p;
    memset(&p, 0, sizeof p);
    p.T = T, p.C = C, p.K = K, p.V = V, p.N = N;
    p.q = q.data(), p.k = k.data(), p.v = v.data(), p.beta = beta.data(), p.g = g.data();
    p.s0 = s.s0 ? s0.data() : nullptr;
    p.o = o.data(), p.s_out = s_out.data(), p.states = states.data();
    p.amap = amap.data(), p.ut = ut.data(), p.qe = qe.data(), p.pm = pm.data(), p.dstates = dstates.data();
    const unsigned items = (unsigned)(BH * N);
    smem(gdnk::prep_smem_floats(C, K, V));
    emu::launch(dim3(items), dim3(threads), [&] { gdnk::gdn_prep(p, 0); });
    const int svt = scan_vt ? scan_vt : VT, scan_tiles = (V + svt - 1) / svt;
    p.VT = svt;
    smem(gdnk::scan_smem_floats(K, svt));
    emu::launch(dim3(BH, scan_tiles), dim3(threads), [&] { gdnk::gdn_scan(p, 0); });
    p.VT = VT;
    smem(gdnk::out_smem_floats(C, K, VT));
    emu::launch(dim3(items, tiles), dim3(threads), [&] { gdnk::gdn_out(p); });

    std::vector<float> dq(q.size(), NAN), dk(k.size(), NAN), dv(v.size(), NAN), dbeta(beta.size(), NAN),
        dg(g.size(), NAN), ds0(s0.size(), NAN);
    /* per-tile partials when there are several tiles */
    std::vector<float> pk(tiles > 1 ? 2 * tiles * q.size() : 0, NAN), pt(tiles > 1 ? 2 * tiles * beta.size() : 0, NAN);
    std::fill(amap.begin(), amap.end(), NAN); /* the backward recomputes what it needs */
    p.dout = s.loss != 2 ? R.data() : nullptr;
    p.ds_out = s.loss != 1 ? Rs.data() : nullptr;
    p.dv = dv.data();
    p.ds0 = s.s0 ? ds0.data() : nullptr;
    if (tiles > 1) {
        p.part_k = (int64_t)q.size(), p.part_t = (int64_t)beta.size();
        p.dq = pk.data(), p.dk = pk.data() + tiles * q.size(), p.dbeta = pt.data(), p.dg = pt.data() + tiles * beta.size();
    } else {
        p.dq = dq.data(), p.dk = dk.data(), p.dbeta = dbeta.data(), p.dg = dg.data();
    }
    smem(gdnk::prep_smem_floats(C, K, V));
    emu::launch(dim3(items), dim3(threads), [&] { gdnk::gdn_prep(p, 1); });
    p.VT = svt;
    smem(gdnk::scan_smem_floats(K, svt));
    emu::launch(dim3(BH, scan_tiles), dim3(threads), [&] { gdnk::gdn_scan(p, 1); });
    p.VT = VT;
    smem(gdnk::bwd_smem_floats(C, K, VT, threads));
    emu::launch(dim3(items, tiles), dim3(threads), [&] { gdnk::gdn_bwd_chunk(p); });
    if (tiles > 1) {
        const std::pair<float *, const float *> sums[4] = {{dq.data(), p.dq}, {dk.data(), p.dk}, {dbeta.data(), p.dbeta},
                                                           {dg.data(), p.dg}};
        for (int i = 0; i < 4; i++) {
            const int64_t n = i < 2 ? (int64_t)q.size() : (int64_t)beta.size();
            emu::launch(dim3(2), dim3(64), [&] { gdnk::gdn_sum_tiles(sums[i].first, sums[i].second, n, tiles); });
        }
    }

    /* forward against the recurrence */
    std::vector<double> ro, rs, rst, all_o, all_s, all_st;
    for (int h = 0; h < BH; h++) {
        reference(s, in, h, ro, rs, &all_st);
        all_o.insert(all_o.end(), ro.begin(), ro.end());
        all_s.insert(all_s.end(), rs.begin(), rs.end());
    }
    const double eo = rel(o, all_o), es = rel(s_out, all_s), est = rel(states, all_st);
    /* gradients against central differences of the float64 recurrence */
    double eg[6] = {0};
    std::vector<double> *xs[6] = {&in.q, &in.k, &in.v, &in.beta, &in.g, &in.s0};
    const std::vector<float> *gs[6] = {&dq, &dk, &dv, &dbeta, &dg, &ds0};
    const int per[6] = {T * K, T * K, T * V, T, T, K * V};
    for (int i = 0; i < (s.s0 ? 6 : 5) && !full_fd; i++) {
        std::vector<double> d(xs[i]->size());
        for (auto &e : d) e = nd(rng);
        const std::vector<double> x0 = *xs[i];
        /* scaled by the root of sum (g_e d_e)^2, not sum |g_e d_e|: an error of relative size r in every
         * element, random in sign, moves <grad, d> by about r times that root */
        double l[2] = {0, 0}, an = 0, mag = 1e-6;
        for (int side = 0; side < 2; side++) {
            for (size_t e = 0; e < d.size(); e++) (*xs[i])[e] = x0[e] + (side ? -1e-6 : 1e-6) * d[e];
            for (int h = 0; h < BH; h++) l[side] += loss(s, in, h);
        }
        *xs[i] = x0;
        for (size_t e = 0; e < d.size(); e++) an += (*gs[i])[e] * d[e], mag += ((*gs[i])[e] * d[e]) * ((*gs[i])[e] * d[e]);
        eg[i] = std::isfinite(an) ? fabs((l[0] - l[1]) / 2e-6 - an) / sqrt(mag) : INFINITY;
    }
    for (int i = 0; i < (s.s0 ? 6 : 5) && full_fd; i++) {
        std::vector<double> fd(xs[i]->size());
        for (int h = 0; h < BH; h++)
            for (int e = 0; e < per[i]; e++) {
                double &x = (*xs[i])[(size_t)h * per[i] + e];
                const double x0 = x;
                x = x0 + 1e-6;
                const double lp = loss(s, in, h);
                x = x0 - 1e-6;
                const double lm = loss(s, in, h);
                x = x0;
                fd[(size_t)h * per[i] + e] = (lp - lm) / 2e-6;
            }
        eg[i] = rel(*gs[i], fd);
    }
    const double tol = 2e-4; /* f32 against f64, over tens of tokens */
    static const char *names[6] = {"dq", "dk", "dv", "dbeta", "dg", "ds0"};
    EXPECT(eo < tol && es < tol && est < tol, "BH %d T %d dk %d dv %d C %d: o %.3g, S_T %.3g, states %.3g", BH, T, K, V,
           C, eo, es, est);
    double worst = 0;
    for (int i = 0; i < (s.s0 ? 6 : 5); i++) {
        /* along a direction the f32 errors average out (a few 1e-6 at most); 2e-5 catches an error of 0.1% in
         * one of dk's terms, which 2e-4 did not (tried) */
        const double gtol = full_fd ? tol : 2e-5;
        EXPECT(eg[i] < gtol, "BH %d T %d dk %d dv %d C %d loss %d: %s differs from finite differences by %.3g", BH, T, K,
               V, C, s.loss, names[i], eg[i]);
        worst = std::max(worst, eg[i]);
    }
    printf("BH %d T %3d dk %3d dv %3d (tiles of %2d, scan %2d) C %2d s0 %d %s loss %d: o %.1e, S_T %.1e, states %.1e, "
           "gradients %.1e%s\n",
           BH, T, K, V, VT, svt, C, s.s0, s.strong ? "strong" : "weak  ", s.loss, eo, es, est, worst,
           full_fd ? "" : " (along a direction)");
}

/* The launcher's plan on an H100 (132 SMs, 227 KB of shared memory a block) */
static void test_plan() {
    const int64_t h100 = 232448;
    struct {
        int64_t bh;
        int N, C, K, V;
        bool ok;
        int scan, out, bwd;
    } cases[] = {
        {12, 128, 64, 64, 64, true, 8, 64, 64},    /* B 1, H 12, T 8K: the scan in 8 tiles (96 blocks) */
        {12, 32, 64, 64, 64, true, 8, 64, 64},     /* T 2K */
        {96, 32, 64, 64, 64, true, 32, 64, 64},    /* B 8: the scan in 2 tiles (192 blocks) */
        {12, 1, 64, 64, 64, true, 8, 16, 16},      /* one chunk: the per-chunk kernels in tiles of 16 too */
        {12, 32, 64, 128, 128, true, 8, 128, 32},  /* d = 128: the backward of 128 or 64 columns does not fit */
        {12, 32, 64, 64, 20, true, 10, 20, 20},    /* a narrow dv */
        {12, 32, 64, 192, 64, true, 8, 64, 16},    /* dk = 192: the backward in tiles of 16 */
        {12, 32, 64, 256, 64, false, 0, 0, 0},     /* dk = 256: gdn_prep's K, Q and W rows (264 KB) do not fit */
                {12, 32, 64, 64, 256, true, 16, 256, 64},  /* dv = 256: gdn_prep holds whole rows of v (214 KB) */
        {12, 32, 64, 64, 600, false, 0, 0, 0},     /* dv = 600: gdn_prep's rows of Ut no longer fit */
    };
    for (const auto &c : cases) {
        gdnk::Plan pl;
        const bool ok = gdnk::make_plan(c.bh, c.N, c.C, c.K, c.V, 256, 132, h100, &pl);
        EXPECT(ok == c.ok, "make_plan(bh %lld, N %d, C %d, dk %d, dv %d): %s, want %s", (long long)c.bh, c.N, c.C, c.K,
               c.V, ok ? "fits" : "declined", c.ok ? "fits" : "declined");
        if (ok && c.ok)
            EXPECT(pl.scan_vt == c.scan && pl.out_vt == c.out && pl.bwd_vt == c.bwd,
                   "make_plan(bh %lld, N %d, dk %d, dv %d): tiles of %d, %d, %d columns, want %d, %d, %d",
                   (long long)c.bh, c.N, c.K, c.V, pl.scan_vt, pl.out_vt, pl.bwd_vt, c.scan, c.out, c.bwd);
    }
}

int main() {
    test_plan();
    const Shape shapes[] = {
        {2, 13, 5, 3, 4, true, true, 0},  {1, 20, 8, 8, 8, false, false, 0}, {2, 7, 16, 12, 7, true, false, 1},
        {1, 33, 4, 6, 16, true, true, 2}, {1, 9, 3, 5, 2, true, false, 0},   {1, 1, 4, 4, 1, true, true, 0},
        {1, 40, 6, 4, 32, false, true, 1},
        {1, 5, 4, 6, 8, true, false, 0}, /* T < chunk */ {1, 70, 16, 16, 32, true, true, 0}, /* 3 chunks, d 16 */
    };
    unsigned seed = 1;
    for (const Shape &s : shapes) {
        run_shape(s, s.V, seed);                         /* one tile */
        if (s.V > 1) run_shape(s, (s.V + 1) / 2, seed); /* two tiles, the last narrower for odd dv */
        if (s.V > 3 && (s.V + 1) / 2 != 3) run_shape(s, 3, seed); /* tiles of 3 */
        seed++;
    }
    /* the launcher's geometry: chunks of 64, d = 64 (and dk = dv = 128 in the backward's tiles of 32), the
     * scan in tiles of 8 as make_plan gives B 1, H 12; gradients along a random direction */
    const Shape big[] = {{1, 150, 64, 64, 64, true, false, 0}, {1, 70, 128, 128, 64, true, true, 0}};
    run_shape(big[0], 64, seed, false, 8);
    run_shape(big[0], 32, seed + 1, false, 16);
    run_shape(big[1], 32, seed + 2, false, 8);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
