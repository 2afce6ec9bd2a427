/* Runs the chunk-parallel fused SSD / linear-attention kernels (src/backends/cuda/ssd_chunk.cuh, f32: the
 * forward's ssd_prep, ssd_scan, ssd_out and the backward's ssd_prep, ssd_scan, ssd_bwd_chunk, in the order
 * ssd_chunk.cu launches them, 256 threads a block) on the host emulator (emu.h) and checks them against a
 * float64 reference written from the recurrence itself, token by token:
 *     S_t = exp(g_t) S_{t-1} + k_t v_t^T,   o_t = q_t^T S_t          (no gates: g = 0)
 *   - the output, the final state and the states stored before each chunk;
 *   - the gradients of L = <o, R> + <S_T, Rs> (either term may be absent) with respect to q, k, v, g and
 *     s0 against central differences of the float64 recurrence (every element);
 * on shapes with T not a multiple of the chunk, one chunk (C = T), T = 1, dk != dv, with and without s0,
 * with and without gates, strong (down to e^-6 per token) and weak, and the chunk of 64 the launcher allows
 * at most. Scratch and outputs start as NaN, so a slot a kernel fails to write shows up. No GPU needed:
 *   g++ -std=c++17 -O1 -I src/backends/cuda -I dev/cuda dev/cuda/ssd_chunk_emu_test.cpp -o /tmp/ssd_emu && /tmp/ssd_emu */
#include "emu.h"

#define SSD_SMEM() (reinterpret_cast<double *>(emu::g_smem.data()))
#include "ssd_chunk.cuh"

#include <algorithm>
#include <random>
#include <vector>

#include "emu_expect.h"

struct Shape {
    int BH, T, K, V, C;
    bool s0, gates, strong;
    int loss; /* 0 both terms, 1 the output only, 2 the state only */
};

struct Inputs {
    std::vector<double> q, k, v, g, s0, R, Rs;
};

/* the recurrence in float64 for one shape: o [BH, T, V], the final state [BH, K, V], the state before every
 * chunk [BH, N, K, V]; returns L */
static double reference(const Shape &s, const Inputs &in, std::vector<double> *o, std::vector<double> *sT,
                        std::vector<double> *st) {
    const int BH = s.BH, T = s.T, K = s.K, V = s.V, C = std::min(s.C, s.T), N = (T + C - 1) / C;
    if (o) o->assign((size_t)BH * T * V, 0.0);
    if (sT) sT->assign((size_t)BH * K * V, 0.0);
    if (st) st->assign((size_t)BH * N * K * V, 0.0);
    double L = 0;
    std::vector<double> S((size_t)K * V);
    for (int h = 0; h < BH; h++) {
        for (int e = 0; e < K * V; e++) S[e] = s.s0 ? in.s0[(size_t)h * K * V + e] : 0.0;
        for (int t = 0; t < T; t++) {
            if (t % C == 0 && st)
                std::copy(S.begin(), S.end(), st->begin() + ((size_t)h * N + t / C) * K * V);
            const double a = s.gates ? exp(in.g[(size_t)h * T + t]) : 1.0;
            const double *kt = &in.k[((size_t)h * T + t) * K], *vt = &in.v[((size_t)h * T + t) * V];
            const double *qt = &in.q[((size_t)h * T + t) * K];
            for (int i = 0; i < K; i++)
                for (int j = 0; j < V; j++) S[i * V + j] = a * S[i * V + j] + kt[i] * vt[j];
            for (int j = 0; j < V; j++) {
                double oj = 0;
                for (int i = 0; i < K; i++) oj += qt[i] * S[i * V + j];
                if (o) (*o)[((size_t)h * T + t) * V + j] = oj;
                if (s.loss != 2) L += oj * in.R[((size_t)h * T + t) * V + j];
            }
        }
        for (int e = 0; e < K * V; e++) {
            if (sT) (*sT)[(size_t)h * K * V + e] = S[e];
            if (s.loss != 1) L += S[e] * in.Rs[(size_t)h * K * V + e];
        }
    }
    return L;
}

static std::vector<float> to_f32(const std::vector<double> &x) { return std::vector<float>(x.begin(), x.end()); }

static double worst_rel(const std::vector<float> &a, const std::vector<double> &b) {
    double d = 0, m = 1e-3;
    for (size_t i = 0; i < b.size(); i++) {
        if (std::isnan(a[i])) return INFINITY;
        d = std::max(d, fabs(a[i] - b[i])), m = std::max(m, fabs(b[i]));
    }
    return d / m;
}

static void run_shape(const Shape &s, unsigned seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> nd(0.0, 1.0);
    std::uniform_real_distribution<double> ud(0.0, 1.0);
    const int BH = s.BH, T = s.T, K = s.K, V = s.V, C = std::min(s.C, s.T), N = (T + C - 1) / C;
    Inputs in;
    auto fill = [&](std::vector<double> &x, size_t n, double std) {
        x.resize(n);
        for (auto &e : x) e = std * nd(rng);
    };
    fill(in.q, (size_t)BH * T * K, 1.0);
    fill(in.k, (size_t)BH * T * K, 0.5);
    fill(in.v, (size_t)BH * T * V, 1.0);
    in.g.resize((size_t)BH * T);
    for (auto &g : in.g) g = -(s.strong ? 6.0 : 0.05) * ud(rng);
    fill(in.s0, (size_t)BH * K * V, 1.0);
    fill(in.R, (size_t)BH * T * V, 1.0);
    fill(in.Rs, (size_t)BH * K * V, 1.0);

    std::vector<float> q = to_f32(in.q), k = to_f32(in.k), v = to_f32(in.v), g = to_f32(in.g), s0 = to_f32(in.s0),
                       R = to_f32(in.R), Rs = to_f32(in.Rs);
    std::vector<float> o((size_t)BH * T * V, NAN), s_out((size_t)BH * K * V, NAN), states((size_t)BH * N * K * V, NAN);
    std::vector<float> decay((size_t)BH * N, NAN), dstates((size_t)BH * N * K * V, NAN);
    const int threads = 256;
    auto smem = [](int bytes) {
        emu::g_smem.assign((size_t)(bytes + 3) / 4, NAN);
        emu::g_smem.shrink_to_fit();
    };
    ssdk::Params p;
    memset(&p, 0, sizeof p);
    p.T = T, p.C = C, p.K = K, p.V = V, p.N = N;
    p.q = q.data(), p.k = k.data(), p.v = v.data(), p.g = s.gates ? g.data() : nullptr;
    p.s0 = s.s0 ? s0.data() : nullptr;
    p.o = o.data(), p.s_out = s_out.data(), p.states = states.data(), p.decay = decay.data();
    p.dstates = dstates.data();
    const unsigned items = (unsigned)(BH * N);
    const int64_t elements = (int64_t)BH * K * V;
    const unsigned scan_blocks = (unsigned)((elements + threads - 1) / threads);
    smem(ssdk::prep_smem_bytes(C));
    emu::launch(dim3(items), dim3(threads), [&] { ssdk::ssd_prep(p, 0); });
    smem(0);
    emu::launch(dim3(scan_blocks), dim3(threads), [&] { ssdk::ssd_scan(p, 0, elements); });
    smem(ssdk::out_smem_bytes(C));
    emu::launch(dim3(items), dim3(threads), [&] { ssdk::ssd_out(p); });

    std::vector<float> dq(q.size(), NAN), dk(k.size(), NAN), dv(v.size(), NAN), dg(g.size(), NAN), ds0(s0.size(), NAN);
    std::fill(decay.begin(), decay.end(), NAN);
    p.dout = s.loss != 2 ? R.data() : nullptr;
    p.ds_out = s.loss != 1 ? Rs.data() : nullptr;
    p.dq = dq.data(), p.dk = dk.data(), p.dv = dv.data(), p.dg = s.gates ? dg.data() : nullptr;
    p.ds0 = s.s0 ? ds0.data() : nullptr;
    smem(ssdk::prep_smem_bytes(C));
    emu::launch(dim3(items), dim3(threads), [&] { ssdk::ssd_prep(p, 1); });
    smem(0);
    emu::launch(dim3(scan_blocks), dim3(threads), [&] { ssdk::ssd_scan(p, 1, elements); });
    smem(ssdk::bwd_smem_bytes(C, threads));
    emu::launch(dim3(items), dim3(threads), [&] { ssdk::ssd_bwd_chunk(p); });

    std::vector<double> ro, rs, rst;
    reference(s, in, &ro, &rs, &rst);
    const double eo = worst_rel(o, ro), es = worst_rel(s_out, rs), est = worst_rel(states, rst);
    const double tol = 2e-4;
    EXPECT(eo < tol && es < tol && est < tol, "BH %d T %d K %d V %d C %d s0 %d gates %d strong %d: o %.3g, s_out %.3g, states %.3g",
           BH, T, K, V, C, s.s0, s.gates, s.strong, eo, es, est);
    /* every gradient element against its central difference of the float64 recurrence */
    struct {
        const char *name;
        std::vector<double> *x;
        const std::vector<float> *grad;
        bool used;
    } ins[5] = {{"q", &in.q, &dq, true}, {"k", &in.k, &dk, true}, {"v", &in.v, &dv, true},
                {"g", &in.g, &dg, s.gates}, {"s0", &in.s0, &ds0, s.s0}};
    double worst = 0;
    for (auto &x : ins) {
        if (!x.used) continue;
        double scale = 1e-3, d = 0;
        std::vector<double> fd(x.x->size());
        for (size_t i = 0; i < x.x->size(); i++) {
            const double x0 = (*x.x)[i], h = 1e-6;
            (*x.x)[i] = x0 + h;
            const double lp = reference(s, in, nullptr, nullptr, nullptr);
            (*x.x)[i] = x0 - h;
            const double lm = reference(s, in, nullptr, nullptr, nullptr);
            (*x.x)[i] = x0;
            fd[i] = (lp - lm) / (2 * h);
            scale = std::max(scale, fabs(fd[i]));
        }
        for (size_t i = 0; i < fd.size(); i++) {
            const float gi = (*x.grad)[i];
            d = std::isnan(gi) ? INFINITY : std::max(d, fabs(gi - fd[i]));
        }
        EXPECT(d / scale < tol, "BH %d T %d K %d V %d C %d s0 %d gates %d strong %d loss %d: d%s differs by %.3g", BH, T,
               K, V, C, s.s0, s.gates, s.strong, s.loss, x.name, d / scale);
        worst = std::max(worst, d / scale);
    }
    printf("BH %d T %3d K %2d V %2d C %2d s0 %d gates %d strong %d loss %d: o %.1e, s %.1e, states %.1e, gradients %.1e\n",
           BH, T, K, V, C, s.s0, s.gates, s.strong, s.loss, eo, es, est, worst);
}

int main() {
    const Shape shapes[] = {
        {2, 11, 3, 4, 4, true, true, true, 0},   {1, 9, 4, 3, 16, false, true, false, 0}, /* one chunk: C = T */
        {2, 1, 3, 2, 4, true, true, true, 0},    {1, 13, 5, 6, 4, true, false, false, 0}, /* no gates */
        {1, 10, 4, 5, 4, false, false, false, 1}, {2, 12, 3, 3, 4, true, true, true, 2},
        {1, 70, 4, 3, 64, true, true, false, 0}, /* the largest chunk, T past it */
    };
    unsigned seed = 1;
    for (const Shape &s : shapes) run_shape(s, seed++);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
