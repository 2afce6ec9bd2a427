/* ttt_attention against a plain-C reference in float64: non-causal, causal,
 * causal with a KV offset (fewer queries than keys), sliding windows that split
 * the queries into many blocks; and its argument checks. Gradients (orders 1
 * and 2) are in ttt gradcheck's "attention" case. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ttt/ttt.h"

static void reference(const double *q, const double *k, const double *v, int64_t bh, int64_t tq, int64_t tk,
                      int64_t d, int64_t dv, int causal, int64_t window, double *out) {
    const double scale = 1.0 / sqrt((double)d);
    double *s = malloc(sizeof(double) * (size_t)tk);
    for (int64_t b = 0; b < bh; b++)
        for (int64_t i = 0; i < tq; i++) {
            const int64_t pos = (causal ? tk - tq : 0) + i;
            double mx = -INFINITY, z = 0;
            for (int64_t j = 0; j < tk; j++) {
                int seen = !causal || (j <= pos && (window <= 0 || pos - j < window));
                double dot = 0;
                for (int64_t c = 0; c < d; c++) dot += q[(b * tq + i) * d + c] * k[(b * tk + j) * d + c];
                s[j] = seen ? dot * scale : -INFINITY;
                mx = fmax(mx, s[j]);
            }
            for (int64_t j = 0; j < tk; j++) z += (s[j] = exp(s[j] - mx));
            for (int64_t c = 0; c < dv; c++) {
                double acc = 0;
                for (int64_t j = 0; j < tk; j++) acc += s[j] / z * v[(b * tk + j) * dv + c];
                out[(b * tq + i) * dv + c] = acc;
            }
        }
    free(s);
}

static int g_record; /* 1: inputs require grad, so the op takes its recording path (blocks kept for backward) */

static double compare(ttt_ctx *ctx, int64_t b, int64_t h, int64_t tq, int64_t tk, int64_t d, int64_t dv, int causal,
                      int64_t window) {
    ttt_tensor *q = ttt_randn(ctx, TTT_F64, TTT_DIMS(b, h, tq, d), 1.0);
    ttt_tensor *k = ttt_randn(ctx, TTT_F64, TTT_DIMS(b, h, tk, d), 1.0);
    ttt_tensor *v = ttt_randn(ctx, TTT_F64, TTT_DIMS(b, h, tk, dv), 1.0);
    ttt_set_requires_grad(q, g_record);
    ttt_tensor *o = ttt_attention(ctx, q, k, v, causal, window, 0.0);
    if (!o) {
        fprintf(stderr, "attention failed: %s\n", ttt_error(ctx));
        return INFINITY;
    }
    const int64_t nq = b * h * tq * d, nk = b * h * tk * d, nv = b * h * tk * dv, no = b * h * tq * dv;
    double *hq = malloc(8 * (size_t)nq), *hk = malloc(8 * (size_t)nk), *hv = malloc(8 * (size_t)nv);
    double *ho = malloc(8 * (size_t)no), *ref = malloc(8 * (size_t)no);
    ttt_copy_to_host(ctx, q, hq, TTT_F64), ttt_copy_to_host(ctx, k, hk, TTT_F64);
    ttt_copy_to_host(ctx, v, hv, TTT_F64), ttt_copy_to_host(ctx, o, ho, TTT_F64);
    reference(hq, hk, hv, b * h, tq, tk, d, dv, causal, window, ref);
    double worst = 0;
    for (int64_t i = 0; i < no; i++) worst = fmax(worst, fabs(ho[i] - ref[i]));
    free(hq), free(hk), free(hv), free(ho), free(ref);
    ttt_step_reset(ctx);
    return worst;
}

/* Long enough that the recorded path rematerializes its query blocks: the
 * gradients must equal those of the plainly composed attention. */
static void test_remat_gradients(ttt_ctx *ctx) {
    const int64_t T = 2100, d = 2;
    ttt_tensor *q = ttt_randn(ctx, TTT_F64, TTT_DIMS(1, T, d), 1.0), *k = ttt_randn(ctx, TTT_F64, TTT_DIMS(1, T, d), 1.0);
    ttt_tensor *v = ttt_randn(ctx, TTT_F64, TTT_DIMS(1, T, d), 1.0), *w = ttt_randn(ctx, TTT_F64, TTT_DIMS(1, T, d), 1.0);
    ttt_set_requires_grad(q, 1), ttt_set_requires_grad(k, 1), ttt_set_requires_grad(v, 1);
    ttt_tensor *in[3] = {q, k, v}, *g1[3], *g2[3];
    ttt_tensor *o1 = ttt_attention(ctx, q, k, v, 1, 0, 0.0);
    ttt_tensor *s = ttt_attn_mask(ctx, ttt_scale(ctx, ttt_matmul(ctx, q, k, 0, 1), 1.0 / sqrt((double)d)), 0, 0, -INFINITY);
    ttt_tensor *o2 = ttt_matmul(ctx, ttt_softmax(ctx, s), v, 0, 0);
    ttt_tensor *l1 = ttt_sum(ctx, ttt_mul(ctx, o1, w), 0, NULL, 0), *l2 = ttt_sum(ctx, ttt_mul(ctx, o2, w), 0, NULL, 0);
    CHECK(ttt_grad(ctx, 1, &l1, NULL, 3, in, g1, 0) == TTT_OK && ttt_grad(ctx, 1, &l2, NULL, 3, in, g2, 0) == TTT_OK);
    double worst = 0;
    for (int i = 0; i < 3; i++) {
        double *a = malloc(sizeof(double) * (size_t)(T * d)), *b = malloc(sizeof(double) * (size_t)(T * d));
        ttt_copy_to_host(ctx, g1[i], a, TTT_F64), ttt_copy_to_host(ctx, g2[i], b, TTT_F64);
        for (int64_t j = 0; j < T * d; j++) worst = fmax(worst, fabs(a[j] - b[j]));
        free(a), free(b);
    }
    CHECK_MSG(worst < 1e-10, "rematerialized attention gradients differ by %g", worst);
    ttt_step_reset(ctx);
}

int main(void) {
    ttt_ctx_config cfg = {.device = TTT_CPU, .seed = 7};
    ttt_ctx *ctx = ttt_ctx_new(&cfg);
    CHECK(ctx != NULL);

    for (g_record = 0; g_record < 2; g_record++) {
    CHECK(compare(ctx, 2, 3, 5, 5, 4, 3, 0, 0) < 1e-12);     /* bidirectional */
    CHECK(compare(ctx, 2, 1, 7, 4, 3, 2, 0, 0) < 1e-12);     /* bidirectional, more queries than keys */
    CHECK(compare(ctx, 2, 3, 9, 9, 4, 4, 1, 0) < 1e-12);     /* causal */
    CHECK(compare(ctx, 1, 2, 3, 11, 4, 5, 1, 0) < 1e-12);    /* causal, 3 new queries after 8 cached keys */
    CHECK(compare(ctx, 1, 2, 1, 11, 8, 8, 1, 4) < 1e-12);    /* one decode step with a window */
    CHECK(compare(ctx, 2, 2, 50, 50, 4, 4, 1, 7) < 1e-12);   /* window 7: 8 query blocks */
    CHECK(compare(ctx, 1, 1, 37, 45, 3, 2, 1, 1) < 1e-12);   /* window 1: each query sees only itself */
    CHECK(compare(ctx, 1, 1, 20, 20, 3, 2, 1, 100) < 1e-12); /* window longer than the sequence */
    }

    test_remat_gradients(ctx);

    /* argument checks name the problem */
    ttt_tensor *q = ttt_randn(ctx, TTT_F64, TTT_DIMS(1, 4, 3), 1.0);
    ttt_tensor *k = ttt_randn(ctx, TTT_F64, TTT_DIMS(1, 2, 3), 1.0);
    ttt_tensor *kd = ttt_randn(ctx, TTT_F64, TTT_DIMS(1, 4, 5), 1.0);
    CHECK(ttt_attention(ctx, q, k, k, 1, 0, 0) == NULL && strstr(ttt_error(ctx), "at least as many keys"));
    CHECK(ttt_attention(ctx, q, kd, kd, 0, 0, 0) == NULL && strstr(ttt_error(ctx), "head dim"));
    CHECK(ttt_attention(ctx, q, q, q, 0, 3, 0) == NULL && strstr(ttt_error(ctx), "window needs causal"));
    CHECK(ttt_attention(ctx, q, q, q, 1, -1, 0) == NULL && strstr(ttt_error(ctx), "window"));
    CHECK(ttt_attention(ctx, q, NULL, q, 1, 0, 0) == NULL && strstr(ttt_error(ctx), "NULL"));
    ttt_ctx_free(ctx);
    TEST_MAIN_END();
}
