/* The CUDA backend's device memory (src/backends/cuda/device_pool.cu), through
 * the public API: persistent tensors made, freed and made again keep their
 * contents and reuse freed blocks (no new driver allocation); steps after the
 * first allocate nothing from the driver. Without a CUDA device it checks
 * nothing and says so. */
#include <stdio.h>
#include <stdlib.h>

#include "check.h"
#include "ttt/runtime.h"
#include "ttt/ttt.h"

/* This context's instance's pool: each context has its own (backend instances). */
static uint64_t driver_allocs(ttt_ctx *ctx) {
    ttt_memory_stats m;
    CHECK(ttt_ctx_memory_stats(ctx, &m) == TTT_OK);
    return m.driver_allocs;
}

int main(void) {
    if (ttt_device_count(TTT_CUDA) < 1) {
        printf("no CUDA device: nothing checked\n");
        TEST_MAIN_END();
    }
    ttt_ctx_config cfg = {.device = TTT_CUDA, .arena_bytes = 1 << 20, .seed = 5};
    ttt_ctx *ctx = ttt_ctx_new(&cfg);
    CHECK(ctx != NULL);
    if (!ctx) TEST_MAIN_END();
    enum { N = 64 };
    ttt_tensor *t[N];
    /* round 1: N tensors of assorted sizes, each filled with its index */
    for (int i = 0; i < N; i++) {
        t[i] = ttt_persistent(ctx, TTT_F32, TTT_DIMS(1 + (i * 7919) % 5000), "p");
        CHECK(t[i] && ttt_fill(ctx, t[i], (double)i) == TTT_OK);
    }
    const uint64_t after_first = driver_allocs(ctx);
    /* free every other one, make them again (other sizes), and check that nothing was overwritten */
    for (int round = 0; round < 5; round++) {
        for (int i = round % 2; i < N; i += 2) ttt_persistent_free(ctx, t[i]);
        for (int i = round % 2; i < N; i += 2) {
            t[i] = ttt_persistent(ctx, TTT_F32, TTT_DIMS(1 + (i * 104729 + round * 31) % 5000), "p");
            CHECK(t[i] && ttt_fill(ctx, t[i], (double)i) == TTT_OK);
        }
        for (int i = 0; i < N; i++) {
            const int64_t n = ttt_numel(t[i]);
            float *h = malloc(sizeof(float) * (size_t)n);
            CHECK(ttt_copy_to_host(ctx, t[i], h, TTT_F32) == TTT_OK);
            int bad = 0;
            for (int64_t j = 0; j < n; j++) bad += h[j] != (float)i;
            CHECK_MSG(bad == 0, "tensor %d: %d of %lld values changed", i, bad, (long long)n);
            free(h);
        }
    }
    CHECK_MSG(driver_allocs(ctx) == after_first, "driver allocations %llu -> %llu while blocks were reused",
              (unsigned long long)after_first, (unsigned long long)driver_allocs(ctx));
    /* steps: a small model's forward, backward and update; after the first, no driver allocation */
    ttt_tensor *w = ttt_param(ctx, TTT_F32, TTT_DIMS(256, 256), "w");
    CHECK(w && ttt_fill(ctx, w, 0.01) == TTT_OK);
    uint64_t after_step1 = 0;
    for (int s = 0; s < 20; s++) {
        ttt_tensor *x = ttt_randn(ctx, TTT_F32, TTT_DIMS(64 + s % 3, 256), 1.0);
        ttt_tensor *loss = ttt_sum(ctx, ttt_tanh(ctx, ttt_matmul(ctx, x, w, 0, 0)), 0, NULL, 0);
        CHECK(loss && ttt_backward(ctx, loss) == TTT_OK);
        ttt_step_reset(ctx);
        if (s == 1) after_step1 = driver_allocs(ctx);
    }
    CHECK_MSG(driver_allocs(ctx) == after_step1, "driver allocations grew in steady state: %llu -> %llu",
              (unsigned long long)after_step1, (unsigned long long)driver_allocs(ctx));
    ttt_memory_stats m;
    CHECK(ttt_ctx_memory_stats(ctx, &m) == TTT_OK);
    printf("device memory: %zu bytes reserved, %zu in use, %llu driver allocations\n", m.reserved, m.in_use,
           (unsigned long long)driver_allocs(ctx));
    for (int i = 0; i < N; i++) ttt_persistent_free(ctx, t[i]);
    ttt_ctx_free(ctx);
    TEST_MAIN_END();
}
