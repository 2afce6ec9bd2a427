/* Runs the [O, R, I] reduction kernels of src/backends/cuda/reduce_kernels.cuh on the host emulator (emu.h), as
 * cuda_reduce.cu's reduce_ori launches them (one pass, or per-chunk partials in double then a pass over the
 * chunks):
 *   - the few-rows column kernel (k_red_cols_few, R <= 8) gives the bits of the 8-lane column kernel (k_red_cols)
 *     on the same input, sums and maxima, f32 and f64, R 1..8, column counts around its 256-thread and the
 *     other's 32-column tiles; NaN, infinities and signed zeros included;
 *   - the whole reduction, with whichever kernels the launcher picks, equals the plain row-order sum in double
 *     (bits up to 8 rows, where each row lane holds one row; within 1e-12 relative beyond, where the lanes and
 *     chunks regroup the sum) and the maximum exactly.
 * No GPU needed:
 *   g++ -std=c++17 -O1 -I src/backends/cuda -I dev/cuda dev/cuda/reduce_emu_test.cpp -o /tmp/red_emu && /tmp/red_emu */
#include "emu.h"

#include "emu_host.h"

#include "reduce_kernels.cuh"

#include <random>
#include <vector>

#include "emu_expect.h"

template <typename TI, typename TO>
static void cols_lanes(int64_t O, int64_t R, int64_t I, int64_t chunks, int is_max, TO *out, const TI *x) {
    const int64_t per = (R + chunks - 1) / chunks;
    emu::launch(dim3((unsigned)(O * chunks * ((I + 31) / 32))), dim3(THREADS),
                [&] { k_red_cols<TI, TO>(O, R, I, chunks, per, is_max, out, x); });
}
template <typename TI, typename TO> static void cols_few(int64_t O, int64_t R, int64_t I, int is_max, TO *out, const TI *x) {
    emu::launch(dim3((unsigned)(O * ((I + THREADS - 1) / THREADS))), dim3(THREADS),
                [&] { k_red_cols_few<TI, TO>(O, R, I, is_max, out, x); });
}

/* reduce_ori's plan for I > 1 */
template <typename T> static void reduce(int64_t O, int64_t R, int64_t I, int is_max, T *dst, const T *src) {
    const int64_t chunks = reduce_chunks(O, R, (I + 31) / 32);
    auto pass = [&](auto *out, const auto *in, int64_t rows, int64_t ch) {
        if (use_cols_few(rows, ch)) cols_few(O, rows, I, is_max, out, in);
        else cols_lanes(O, rows, I, ch, is_max, out, in);
    };
    if (chunks == 1) return pass(dst, src, R, 1);
    std::vector<double> part((size_t)(O * chunks * I));
    pass(part.data(), src, R, chunks);
    pass(dst, (const double *)part.data(), chunks, 1);
}

template <typename T> static std::vector<T> input(int64_t n, unsigned seed, bool specials) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> nd(0.0, 1.0);
    std::vector<T> x((size_t)n);
    for (auto &v : x) v = (T)nd(rng);
    if (specials && n > 8) {
        x[1] = (T)-0.0, x[2] = (T)NAN, x[5] = (T)INFINITY, x[n - 1] = (T)-INFINITY, x[n / 2] = (T)-0.0;
    }
    return x;
}

static bool same_bits(const void *a, const void *b, size_t bytes) { return !memcmp(a, b, bytes); }

template <typename T> static void test_few_vs_lanes(const char *name) {
    const int64_t Is[] = {2, 31, 33, 255, 257, 600};
    for (int64_t R = 1; R <= 8; R++)
        for (int64_t I : Is)
            for (int is_max = 0; is_max < 2; is_max++)
                for (int specials = 0; specials < 2; specials++) {
                    const int64_t O = 3;
                    auto x = input<T>(O * R * I, (unsigned)(R * 1000 + I + 7 * is_max + specials), specials);
                    std::vector<T> a((size_t)(O * I), (T)7), b((size_t)(O * I), (T)-7);
                    cols_lanes(O, R, I, 1, is_max, a.data(), x.data());
                    cols_few(O, R, I, is_max, b.data(), x.data());
                    EXPECT(same_bits(a.data(), b.data(), a.size() * sizeof(T)),
                           "%s %s R %lld I %lld specials %d: the few-rows kernel's bits differ from the 8-lane kernel's", name,
                           is_max ? "max" : "sum", (long long)R, (long long)I, specials);
                }
}

template <typename T> static void test_whole(const char *name) {
    struct { int64_t O, R, I; } shapes[] = {{1, 2, 300}, {4, 5, 70}, {2, 8, 33}, {1, 9, 40}, {3, 200, 40}, {1, 3000, 37}, {2, 700, 64}};
    for (auto s : shapes)
        for (int is_max = 0; is_max < 2; is_max++) {
            auto x = input<T>(s.O * s.R * s.I, (unsigned)(s.R + s.I), false);
            std::vector<T> y((size_t)(s.O * s.I));
            reduce(s.O, s.R, s.I, is_max, y.data(), x.data());
            const int64_t chunks = reduce_chunks(s.O, s.R, (s.I + 31) / 32);
            int bad = 0;
            double worst = 0;
            for (int64_t o = 0; o < s.O; o++)
                for (int64_t i = 0; i < s.I; i++) {
                    double acc = is_max ? -INFINITY : 0.0;
                    for (int64_t r = 0; r < s.R; r++) {
                        double v = (double)x[(size_t)((o * s.R + r) * s.I + i)];
                        acc = is_max ? fmax(acc, v) : acc + v;
                    }
                    const T want = (T)acc, got = y[(size_t)(o * s.I + i)];
                    if (is_max || s.R <= 8) bad += !same_bits(&want, &got, sizeof(T));
                    else {
                        const double err = fabs((double)got - (double)want) / (fabs(acc) + 1e-3);
                        if (err > worst) worst = err;
                    }
                }
            EXPECT(bad == 0 && worst <= 1e-12 + (sizeof(T) == 4 ? 6e-8 : 0.0),
                   "%s %s O %lld R %lld I %lld (%lld chunks): %d elements off the row-order result, worst %.3g", name,
                   is_max ? "max" : "sum", (long long)s.O, (long long)s.R, (long long)s.I, (long long)chunks, bad, worst);
        }
}

int main() {
    test_few_vs_lanes<float>("f32");
    test_few_vs_lanes<double>("f64");
    test_whole<float>("f32");
    test_whole<double>("f64");
    printf("reduce emulator: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
