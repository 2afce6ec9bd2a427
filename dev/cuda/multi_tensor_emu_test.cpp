/* Runs the multi-tensor kernels of src/backends/cuda/multi_tensor.cuh on the
 * host emulator (emu.h), grouped into launches as cuda_optim.cu groups them:
 *   - AdamW over 150 tensors (three launches of at most 64) gives the bits of
 *     the same kernel run per tensor (the adamw entry), and the update rule;
 *   - the sum of squares over 150 tensors (two launches of at most 96, the
 *     second adding to the first's total) gives the bits of the composed path
 *     it replaces, run here with the reductions' own kernel (k_red_rows of
 *     reduce_kernels.cuh): x * x rounded, the chunked sum, its second pass,
 *     the sum in x's dtype, the cast and the f64 adds in order.
 * f32 and f64, odd sizes, empty tensors, tensors of one chunk and of 528.
 * No GPU needed:
 *   g++ -std=c++17 -O1 -I src/backends/cuda -I dev/cuda dev/cuda/multi_tensor_emu_test.cpp -o /tmp/mt_emu && /tmp/mt_emu */
#include "emu.h"

#include "emu_host.h"

#include "reduce_kernels.cuh"
#include "multi_tensor.cuh"

#include <random>
#include <vector>

#include "emu_expect.h"

static unsigned blocks_for(int64_t n) {
    int64_t b = (n + THREADS - 1) / THREADS;
    return (unsigned)(b < 65535 * 32 ? (b > 0 ? b : 1) : 65535 * 32);
}

/* sizes: empty, one element, odd, a few chunks, 528 chunks (140,000 > 528 * 256) */
static int64_t size_of(int i) { return i == 3 ? 140000 : i == 9 ? 0 : i % 7 == 0 ? 1 : (i * 37) % 5000 + 1; }

template <typename T> static bool same(const std::vector<T> &a, const std::vector<T> &b) {
    return a.size() == b.size() && (a.empty() || !memcmp(a.data(), b.data(), a.size() * sizeof(T)));
}

template <typename T> static void test_adamw(int n, unsigned max_grid) {
    std::mt19937_64 rng(7);
    std::normal_distribution<double> nd(0.0, 1.0);
    std::vector<std::vector<T>> p(n), g(n), m(n), v(n);
    std::vector<double> wd(n);
    for (int t = 0; t < n; t++) {
        const int64_t k = size_of(t) % 3000; /* AdamW: small enough for per-element checks */
        for (auto *x : {&p[t], &g[t], &m[t], &v[t]}) x->resize((size_t)k);
        for (int64_t i = 0; i < k; i++) p[t][i] = (T)nd(rng), g[t][i] = (T)nd(rng), m[t][i] = (T)(0.1 * nd(rng)),
                                        v[t][i] = (T)(0.01 * fabs(nd(rng)));
        wd[t] = t % 3 ? 0.1 : 0.0;
    }
    auto p0 = p, m0 = m, v0 = v, p1 = p, m1 = m, v1 = v; /* the start, the per-tensor run */
    const double lr = 1e-2, b1 = 0.9, b2 = 0.95, eps = 1e-8;
    const int64_t step = 3;
    const double bc1 = 1.0 - pow(b1, (double)step), bc2 = 1.0 - pow(b2, (double)step);
    /* multi-tensor: launches of at most ADAMW_MAX tensors (cuda_optim.cu's adamw_launch) */
    int launches = 0;
    for (int i0 = 0; i0 < n; i0 += mt::ADAMW_MAX) {
        mt::AdamwArgs a;
        memset(&a, 0, sizeof a);
        a.n = n - i0 < (int)mt::ADAMW_MAX ? n - i0 : (int)mt::ADAMW_MAX;
        for (int t = 0; t < a.n; t++) {
            a.start[t + 1] = a.start[t] + (int64_t)p[i0 + t].size();
            a.p[t] = p[i0 + t].data(), a.g[t] = g[i0 + t].data(), a.m[t] = m[i0 + t].data(), a.v[t] = v[i0 + t].data();
            a.wd[t] = wd[i0 + t];
        }
        const int64_t total = a.start[a.n];
        if (total == 0) continue;
        const unsigned grid = blocks_for(total) < max_grid ? blocks_for(total) : max_grid; /* small grids stride */
        emu::launch(dim3(grid), dim3(THREADS), [&] { mt::k_adamw<T>(a, lr, b1, b2, eps, bc1, bc2); });
        launches++;
    }
    /* per tensor: the same kernel with one tensor */
    for (int t = 0; t < n; t++) {
        if (p1[t].empty()) continue;
        mt::AdamwArgs a;
        memset(&a, 0, sizeof a);
        a.n = 1;
        a.start[1] = (int64_t)p1[t].size();
        a.p[0] = p1[t].data(), a.g[0] = g[t].data(), a.m[0] = m1[t].data(), a.v[0] = v1[t].data(), a.wd[0] = wd[t];
        emu::launch(dim3(blocks_for(a.start[1])), dim3(THREADS), [&] { mt::k_adamw<T>(a, lr, b1, b2, eps, bc1, bc2); });
    }
    bool all = true, rule = true;
    for (int t = 0; t < n; t++) all = all && same(p[t], p1[t]) && same(m[t], m1[t]) && same(v[t], v1[t]);
    EXPECT(all, "adamw %s: the multi-tensor launches differ from the per-tensor ones", sizeof(T) == 4 ? "f32" : "f64");
    /* and PyTorch's update rule, written out in double */
    for (int t = 0; t < n; t++)
        for (size_t i = 0; i < p[t].size(); i++) {
            const double gi = (double)g[t][i], mi = b1 * (double)m0[t][i] + (1 - b1) * gi;
            const double vi = b2 * (double)v0[t][i] + (1 - b2) * gi * gi;
            const double pi = (double)p0[t][i] * (1 - lr * wd[t]) - lr * (mi / bc1) / (sqrt(vi / bc2) + eps);
            const double tol = sizeof(T) == 4 ? 1e-6 : 1e-14;
            if (fabs(pi - (double)p[t][i]) > tol * (fabs(pi) + 1e-3) || fabs(mi - (double)m[t][i]) > tol * (fabs(mi) + 1e-3)) {
                rule = false;
                fprintf(stderr, "adamw tensor %d element %zu: p %.9g vs %.9g, m %.9g vs %.9g\n", t, i, (double)p[t][i], pi,
                        (double)m[t][i], mi);
                t = n;
                break;
            }
        }
    EXPECT(rule, "adamw: the update rule");
    printf("adamw %s: %d tensors in %d launches (grid at most %u blocks) == per tensor: %s\n", sizeof(T) == 4 ? "f32" : "f64",
           n, launches, max_grid, all ? "yes" : "NO");
}

/* The composed path: mul (x * x rounded to T), reduce (reduce_ori with O = I = 1: one k_red_rows pass, or a pass
 * into double partials and one over them), the cast to f64, the adds in order. */
template <typename T> static double composed_sumsq(const std::vector<std::vector<T>> &x) {
    double acc = 0;
    bool first = true;
    for (const auto &xt : x) {
        const int64_t R = (int64_t)xt.size();
        std::vector<T> sq(xt.size());
        for (size_t i = 0; i < xt.size(); i++) {
            const typename Acc<T>::type a = ld(xt[i]);
            sq[i] = st_f<T>(a * a);
        }
        T s = 0;
        if (R == 0) s = 0; /* ttt_sum of an empty tensor fills 0 */
        else {
            const int64_t chunks = reduce_chunks(1, R, 1), per = (R + chunks - 1) / chunks;
            if (chunks == 1) {
                emu::launch(dim3(1), dim3(THREADS), [&] { k_red_rows<T, T>(R, 1, per, 0, &s, sq.data()); });
            } else {
                std::vector<double> part((size_t)chunks);
                emu::launch(dim3((unsigned)chunks), dim3(THREADS), [&] { k_red_rows<T, double>(R, chunks, per, 0, part.data(), sq.data()); });
                emu::launch(dim3(1), dim3(THREADS), [&] { k_red_rows<double, T>(chunks, 1, chunks, 0, &s, part.data()); });
            }
        }
        const double term = (double)ld(s);
        acc = first ? term : acc + term;
        first = false;
    }
    return acc;
}

/* The fused path as ttt__cu_sumsq_multi launches it. */
template <typename T> static double fused_sumsq(const std::vector<std::vector<T>> &x, int *launches) {
    const int n = (int)x.size();
    double total = -1;
    *launches = 0;
    for (int i0 = 0; i0 < n; i0 += mt::SUMSQ_MAX) {
        mt::SumsqArgs a;
        memset(&a, 0, sizeof a);
        a.n = n - i0 < (int)mt::SUMSQ_MAX ? n - i0 : (int)mt::SUMSQ_MAX;
        for (int t = 0; t < a.n; t++) {
            const int64_t R = (int64_t)x[i0 + t].size(), chunks = reduce_chunks(1, R, 1);
            a.x[t] = x[i0 + t].data();
            a.numel[t] = R;
            a.per[t] = (R + chunks - 1) / chunks;
            a.first[t + 1] = a.first[t] + chunks;
        }
        std::vector<double> part((size_t)a.first[a.n], NAN);
        emu::launch(dim3((unsigned)a.first[a.n]), dim3(THREADS), [&] { mt::k_sumsq_chunks<T>(a, part.data()); });
        emu::launch(dim3(1), dim3(THREADS), [&] { mt::k_sumsq_total<T>(a, part.data(), &total, i0 > 0); });
        *launches += 2;
    }
    return total;
}

template <typename T> static void test_sumsq(int n) {
    std::mt19937_64 rng(11);
    std::normal_distribution<double> nd(0.0, 1.0);
    std::vector<std::vector<T>> x(n);
    for (int t = 0; t < n; t++) {
        x[t].resize((size_t)size_of(t));
        for (auto &e : x[t]) e = (T)(nd(rng) * (1 + t % 5));
    }
    int launches;
    const double c = composed_sumsq(x), f = fused_sumsq(x, &launches);
    double exact = 0;
    for (const auto &xt : x)
        for (T e : xt) exact += (double)e * (double)e;
    EXPECT(!memcmp(&c, &f, sizeof c), "sumsq %s: fused %.17g vs composed %.17g", sizeof(T) == 4 ? "f32" : "f64", f, c);
    EXPECT(fabs(f - exact) <= 1e-6 * exact, "sumsq: %.17g vs %.17g in double", f, exact);
    printf("sumsq %s: %d tensors in %d launches: %.17g, composed %.17g (%s)\n", sizeof(T) == 4 ? "f32" : "f64", n, launches, f,
           c, memcmp(&c, &f, sizeof c) ? "DIFFER" : "same bits");
}

int main() {
    test_adamw<float>(150, 1u << 30);
    test_adamw<float>(150, 3); /* three blocks: every thread strides over many elements and tensors */
    test_adamw<double>(70, 5);
    test_sumsq<float>(150);
    test_sumsq<double>(20);
    /* one tensor of one chunk, and a single group */
    std::vector<std::vector<float>> one(1, std::vector<float>(300, 0.5f));
    int l;
    const double c = composed_sumsq(one), f = fused_sumsq(one, &l);
    EXPECT(!memcmp(&c, &f, sizeof c) && c == 75.0, "one tensor: %g vs %g", f, c);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
