/* Inference speed of the TTT-E2E comparison's three models side by side in one
 * process (random weights: this times the work, not a model): prefill seconds
 * per 1K tokens at each context length (the reader API: TTT-E2E takes its
 * inner steps while reading, full attention and SWA fill their KV caches),
 * then decode tokens/s for --decode tokens after it, and the peak device memory.
 *
 *   e2e_infer --preset 125m --ctx 8192,32768,131072 --device cuda --compute bf16
 *   e2e_infer --preset tiny --ctx 2048,8192 --window 256 --chunk 128 --kinds swa,e2e     (CPU)
 * Full attention at a context longer than --fa-max is skipped (its cache grows with it). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ttt/ttt.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct {
    const char *preset, *device, *compute, *kinds;
    int64_t ctx[16];
    int n_ctx;
    int64_t window, chunk, vocab, decode, fa_max;
    int threads;
} opts;

static int parse(int argc, char **argv, opts *o) {
    *o = (opts){.preset = "tiny", .device = "cpu", .compute = "f32", .kinds = "fa,swa,e2e", .vocab = 50257,
                .decode = 32, .fa_max = 1 << 17};
    o->ctx[0] = 2048, o->n_ctx = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fprintf(stderr, "usage: e2e_infer [--preset P] [--ctx N,N,..] [--device cpu|cuda] [--compute f32|bf16]\n"
                            "                 [--kinds fa,swa,e2e] [--window K] [--chunk b] [--vocab V] [--decode N]\n"
                            "                 [--fa-max N] [--threads N]\n");
            return 2;
        }
        if (!v) return fprintf(stderr, "e2e_infer: %s needs a value\n", a), 1;
        i++;
        char *end = NULL;
        if (!strcmp(a, "--preset")) o->preset = v;
        else if (!strcmp(a, "--device")) o->device = v;
        else if (!strcmp(a, "--compute")) o->compute = v;
        else if (!strcmp(a, "--kinds")) o->kinds = v;
        else if (!strcmp(a, "--ctx")) {
            o->n_ctx = 0;
            for (const char *p = v; *p && o->n_ctx < 16; p = *end ? end + 1 : end) {
                o->ctx[o->n_ctx] = strtoll(p, &end, 10);
                if (end == p || o->ctx[o->n_ctx] < 1) return fprintf(stderr, "e2e_infer: bad --ctx '%s'\n", v), 1;
                o->n_ctx++;
            }
        } else {
            const long long x = strtoll(v, &end, 10);
            if (!*v || *end || x < 0) return fprintf(stderr, "e2e_infer: %s wants a number >= 0, not '%s'\n", a, v), 1;
            if (!strcmp(a, "--window")) o->window = x;
            else if (!strcmp(a, "--chunk")) o->chunk = x;
            else if (!strcmp(a, "--vocab") && x > 1) o->vocab = x;
            else if (!strcmp(a, "--decode")) o->decode = x;
            else if (!strcmp(a, "--fa-max")) o->fa_max = x;
            else if (!strcmp(a, "--threads")) o->threads = (int)x;
            else return fprintf(stderr, "e2e_infer: unknown flag or bad value: %s %s\n", a, v), 1;
        }
    }
    return 0;
}

static int run_kind(const opts *o, const char *kind, int64_t N) {
    char name[64], err[256];
    snprintf(name, sizeof name, "%s-%s", o->preset, kind);
    ttt_lm_config c;
    if (ttt_lm_preset(name, o->vocab, &c, err, sizeof err)) return fprintf(stderr, "%s\n", err), 1;
    if (o->window && c.window) c.window = o->window;
    if (o->chunk && c.inner_chunk) c.inner_chunk = o->chunk;
    ttt_ctx_config cc = {.device = !strcmp(o->device, "cuda") ? TTT_CUDA : TTT_CPU, .seed = 1, .threads = o->threads};
    ttt_ctx *ctx = ttt_ctx_new(&cc);
    if (!ctx) return fprintf(stderr, "e2e_infer: no %s context: %s\n", o->device, ttt_runtime_error()), 1;
    ttt_lm m;
    ttt_lm_reader r = {0};
    int rc = 0;
    if (ttt_lm_init(ctx, &m, &c, TTT_F32) || (!strcmp(o->compute, "bf16") && ttt_lm_set_compute(ctx, &m, TTT_BF16)) ||
        ttt_lm_reader_init(ctx, &m, &r, 1, N + o->decode + 1)) {
        fprintf(stderr, "e2e_infer: %s: %s\n", name, ttt_error(ctx));
        ttt_ctx_free(ctx);
        return 1;
    }
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)N);
    uint64_t s = 99;
    for (int64_t i = 0; i < N; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((s >> 33) % (uint64_t)c.vocab);
    }
    /* prefill in pieces of 8K tokens (the host copy of a 1M-token prompt stays small on the device) */
    const int64_t piece = 8192;
    ttt_synchronize(ctx);
    const double t0 = now();
    for (int64_t t = 0; t < N && !rc; t += piece) {
        const int64_t n = N - t < piece ? N - t : piece;
        ttt_tensor *lg = ttt_lm_reader_read(ctx, &m, &r, ttt_from_host(ctx, TTT_I32, TTT_DIMS(1, n), ids + t), 0);
        if (!lg) rc = 1;
        ttt_step_reset(ctx);
    }
    ttt_synchronize(ctx);
    const double prefill = now() - t0;
    double decode = NAN;
    if (!rc && o->decode > 0) {
        int32_t next = 1;
        const double t1 = now();
        for (int64_t k = 0; k < o->decode && !rc; k++) {
            ttt_tensor *lg = ttt_lm_reader_read(ctx, &m, &r, ttt_from_host(ctx, TTT_I32, TTT_DIMS(1, 1), &next), 0);
            float row[4];
            if (!lg || ttt_copy_to_host(ctx, ttt_slice(ctx, lg, 2, 0, 4, 1), row, TTT_F32)) rc = 1; /* a real decode reads its logits */
            next = (int32_t)((next * 7 + 3) % c.vocab);
            ttt_step_reset(ctx);
        }
        decode = (double)o->decode / (now() - t1);
    }
    if (rc) fprintf(stderr, "e2e_infer: %s at %lld: %s\n", name, (long long)N, ttt_error(ctx));
    else {
        /* the step arena's size: the largest temporaries of one read (the caches are persistent, below) */
        double peak = (double)ttt_arena_bytes_reserved(ctx);
        /* what the reader keeps: the K/V caches (growing with the context under full attention), and
         * TTT-E2E's adapted prime weights and chunk inputs */
        const ttt_lm_cache *kc = r.e2e ? &r.state.cache : &r.cache;
        double state = (double)(2 * kc->k_depth * ttt_numel(kc->k[0])) * (double)ttt_dtype_size(kc->k[0]->dtype);
        for (int i = 0; r.e2e && i < r.state.n_w; i++)
            state += (double)ttt_numel(r.state.w[i]) * (double)ttt_dtype_size(r.state.w[i]->dtype);
        if (r.e2e) state += (double)ttt_numel(r.state.chunk_x) * (double)ttt_dtype_size(r.state.chunk_x->dtype);
        printf("%-6s %9lld %14.4f %12.1f %11.1f %11.1f %8lld\n", kind, (long long)N, prefill / (double)N * 1024.0, decode,
               peak / 1048576.0, state / 1048576.0, (long long)(r.e2e ? r.state.steps : 0));
        fflush(stdout);
    }
    free(ids);
    ttt_lm_reader_free(ctx, &r);
    ttt_lm_free(ctx, &m);
    ttt_ctx_free(ctx);
    return rc;
}

int main(int argc, char **argv) {
    opts o;
    const int rc = parse(argc, argv, &o);
    if (rc) return rc == 2 ? 0 : 2;
    printf("preset %s, %s, compute %s, vocab %lld, batch 1, random weights\n", o.preset, o.device, o.compute,
           (long long)o.vocab);
    printf("%-6s %9s %14s %12s %11s %11s %8s\n", "model", "context", "prefill s/1K", "decode tok/s", "arena MiB",
           "state MiB", "inner");
    for (int i = 0; i < o.n_ctx; i++) {
        char kinds[64];
        snprintf(kinds, sizeof kinds, "%s", o.kinds);
        for (char *save = NULL, *k = strtok_r(kinds, ",", &save); k; k = strtok_r(NULL, ",", &save)) {
            if (!strcmp(k, "fa") && o.ctx[i] > o.fa_max) {
                printf("%-6s %9lld  skipped (over --fa-max %lld)\n", k, (long long)o.ctx[i], (long long)o.fa_max);
                continue;
            }
            if (run_kind(&o, k, o.ctx[i])) return 1;
        }
    }
    return 0;
}
