/* The cut of an attention backward to fit a workspace cap (src/backends/attention_cut.h), checked on the CPU, so
 * CI checks what the cuDNN path (attention_cudnn.cu bwd_cut, TTT_CUDNN_CUT=1) relies on where no GPU is:
 *   - the plan's arithmetic: whole when it fits; else the largest group of (batch, head) pairs that divides b h and
 *     fits; else blocks of queries (a multiple of 128, of even size, each within the cap, covering the head);
 *     none when even 128 queries are over the cap;
 *   - the decomposition, in float64 with ttt_attention and ttt_grad: a head's backward run block by block (block i's
 *     queries against the keys its geometry gives, causal with the diagonal bottom-right, Tq = Tk and Tq < Tk, and
 *     not causal), dQ rows taken whole and dK, dV partials added up, equals the whole backward; and the geometry
 *     without the bottom-right shift does not (the check can fail). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backends/attention_cut.h"
#include "check.h"
#include "ttt/ttt.h"

static void check_plans(void) {
    ttt_attn_cut c;
    /* the det form on an H200-sized cap (17.8 GB): 6 bytes a score, 12 heads */
    const double cap = 17.8e9, six = 6.0;
    CHECK(ttt_attn_cut_plan(12, 8192, six * 8192 * 8192 * 12, cap, 64, &c) == TTT_CUT_WHOLE && c.grp == 12 && c.nb == 1);
    CHECK(ttt_attn_cut_plan(12, 16384, six * 16384 * 16384 * 12, cap, 64, &c) == TTT_CUT_GROUPS && c.grp == 6);
    CHECK(ttt_attn_cut_plan(12, 32768, six * 32768.0 * 32768 * 12, cap, 64, &c) == TTT_CUT_GROUPS && c.grp == 2);
    /* 64K: one head is 25.8 GB, so two blocks of 32K queries (the second sees all 64K keys: 12.9 GB) */
    CHECK(ttt_attn_cut_plan(12, 65536, six * 65536.0 * 65536 * 12, cap, 64, &c) == TTT_CUT_BLOCKS && c.grp == 1 &&
          c.tb == 32768 && c.nb == 2);
    /* a prime number of pairs: one at a time */
    CHECK(ttt_attn_cut_plan(7, 4096, 7e9, 3.5e9, 64, &c) == TTT_CUT_GROUPS && c.grp == 1);
    /* even 128 queries over the cap; too many blocks */
    CHECK(ttt_attn_cut_plan(1, 131072, six * 131072.0 * 131072, 50e6, 64, &c) == TTT_CUT_NONE);
    CHECK(ttt_attn_cut_plan(1, 131072, six * 131072.0 * 131072, 1e9, 64, &c) == TTT_CUT_NONE);
    CHECK(ttt_attn_cut_plan(1, 131072, six * 131072.0 * 131072, 1e9, 128, &c) == TTT_CUT_BLOCKS && c.nb <= 128);

    /* the rules on many shapes and caps */
    srand(3);
    int bad = 0;
    for (int t = 0; t < 20000 && bad < 5; t++) {
        const int64_t bh = 1 + rand() % 48, sq = 1 + rand() % 70000, skv = sq + (rand() % 3 ? 0 : rand() % 5000);
        const double per_score = 2.0 + rand() % 5, ws = per_score * (double)sq * (double)skv * (double)bh;
        const double cap_t = ws * pow(10.0, -3.0 * rand() / RAND_MAX);
        const int how = ttt_attn_cut_plan(bh, sq, ws, cap_t, 64, &c);
        const double per_pair = ws / (double)bh, per_query = per_pair / (double)sq;
        int ok = 1;
        if (how == TTT_CUT_WHOLE) ok = ws <= cap_t && c.grp == bh && c.tb == sq;
        else if (how == TTT_CUT_GROUPS) {
            ok = ws > cap_t && c.grp >= 1 && c.grp < bh && bh % c.grp == 0 && per_pair * (double)c.grp <= cap_t &&
                 c.tb == sq;
            for (int64_t g = c.grp + 1; g < bh; g++) ok = ok && (bh % g || per_pair * (double)g > cap_t); /* largest */
        } else if (how == TTT_CUT_BLOCKS) {
            const int64_t last = sq - (c.nb - 1) * c.tb;
            ok = per_pair > cap_t && c.grp == 1 && c.tb % 128 == 0 && c.tb >= 128 && per_query * (double)c.tb <= cap_t &&
                 c.nb >= 2 && c.nb <= 64 && last >= 1 && last <= c.tb;
            /* even: no block count below nb fits, so the blocks are as few as the cap allows */
            const int64_t tb_fit = (int64_t)(cap_t / per_query) / 128 * 128;
            ok = ok && (c.nb - 1) * tb_fit < sq;
        } else {
            ok = per_pair > cap_t && ((int64_t)(cap_t / per_query) < 128 || (sq + (int64_t)(cap_t / per_query) / 128 * 128 - 1) /
                                                                                   ((int64_t)(cap_t / per_query) / 128 * 128) > 64);
        }
        if (!ok) {
            bad++;
            fprintf(stderr, "plan %d for bh %lld sq %lld ws %.3g cap %.3g: grp %lld tb %lld nb %lld\n", how, (long long)bh,
                    (long long)sq, ws, cap_t, (long long)c.grp, (long long)c.tb, (long long)c.nb);
        }
    }
    CHECK_MSG(bad == 0, "%d plans break the rules", bad);
}

/* a [1, 1, n, d] f64 tensor of rows [r0, r0 + n) of host (rows of d), requiring grad */
static ttt_tensor *rows_of(ttt_ctx *ctx, const double *host, int64_t r0, int64_t n, int64_t d) {
    ttt_tensor *t = ttt_from_host(ctx, TTT_F64, 4, (int64_t[]){1, 1, n, d}, host + r0 * d);
    if (t) ttt_set_requires_grad(t, 1);
    return t;
}

/* attention and its gradients over rows of q (queries [q0, q0 + nq)) and of k, v (keys [0, nk)), into host arrays */
static int attn_grads(ttt_ctx *ctx, const double *q, const double *k, const double *v, const double *dout, int64_t q0,
                      int64_t nq, int64_t nk, int64_t d, int causal, double *o, double *gq, double *gk, double *gv) {
    ttt_tensor *in[3] = {rows_of(ctx, q, q0, nq, d), rows_of(ctx, k, 0, nk, d), rows_of(ctx, v, 0, nk, d)};
    ttt_tensor *go = ttt_from_host(ctx, TTT_F64, 4, (int64_t[]){1, 1, nq, d}, dout + q0 * d), *g[3];
    if (!in[0] || !in[1] || !in[2] || !go) return TTT_ERR;
    ttt_tensor *out = ttt_attention(ctx, in[0], in[1], in[2], causal, 0, 0.0);
    if (!out || ttt_grad(ctx, 1, &out, &go, 3, in, g, 0) != TTT_OK) return TTT_ERR;
    if (ttt_copy_to_host(ctx, out, o, TTT_F64) || ttt_copy_to_host(ctx, g[0], gq, TTT_F64) ||
        ttt_copy_to_host(ctx, g[1], gk, TTT_F64) || ttt_copy_to_host(ctx, g[2], gv, TTT_F64))
        return TTT_ERR;
    return TTT_OK;
}

/* The largest difference between the whole backward of one head and the blocked one (shift 0: the geometry of
 * attention_cut.h; shift 1: keys counted as if the block's diagonal began top-left, which must not match). */
static double blocked_vs_whole(ttt_ctx *ctx, int64_t sq, int64_t skv, int64_t d, int causal, int64_t tb, int wrong) {
    ttt_step_reset(ctx);
    const int64_t nq = sq * d, nk = skv * d;
    double *q = malloc(sizeof(double) * nq), *dout = malloc(sizeof(double) * nq), *k = malloc(sizeof(double) * nk),
           *v = malloc(sizeof(double) * nk);
    double *o = calloc(nq, sizeof(double)), *gq = calloc(nq, sizeof(double)), *gk = calloc(nk, sizeof(double)),
           *gv = calloc(nk, sizeof(double));
    double *bo = calloc(nq, sizeof(double)), *bq = calloc(nq, sizeof(double)), *bk = calloc(nk, sizeof(double)),
           *bv = calloc(nk, sizeof(double)), *pk = calloc(nk, sizeof(double)), *pv = calloc(nk, sizeof(double));
    double err = INFINITY;
    if (!q || !dout || !k || !v || !o || !gq || !gk || !gv || !bo || !bq || !bk || !bv || !pk || !pv) goto done;
    for (int64_t i = 0; i < nq; i++) q[i] = sin(0.37 * (double)i + 1.0), dout[i] = cos(0.11 * (double)i);
    for (int64_t i = 0; i < nk; i++) k[i] = cos(0.23 * (double)i + 0.5), v[i] = sin(0.19 * (double)i - 0.3);
    if (attn_grads(ctx, q, k, v, dout, 0, sq, skv, d, causal, o, gq, gk, gv)) goto done;
    const int64_t nb = (sq + tb - 1) / tb;
    for (int64_t i = nb - 1; i >= 0; i--) { /* from the last block, as attention_cudnn.cu runs them */
        int64_t s0, e, keys;
        ttt_attn_cut_block(sq, skv, causal, tb, i, &s0, &e, &keys);
        if (wrong) keys = e - s0;
        if (keys < e - s0 || keys > skv) goto done;
        if (attn_grads(ctx, q, k, v, dout, s0, e - s0, keys, d, causal, bo + s0 * d, bq + s0 * d, pk, pv)) goto done;
        for (int64_t j = 0; j < keys * d; j++) bk[j] += pk[j], bv[j] += pv[j];
    }
    err = 0;
    for (int64_t i = 0; i < nq; i++) err = fmax(err, fmax(fabs(bo[i] - o[i]), fabs(bq[i] - gq[i])));
    for (int64_t i = 0; i < nk; i++) err = fmax(err, fmax(fabs(bk[i] - gk[i]), fabs(bv[i] - gv[i])));
done:
    free(q), free(dout), free(k), free(v), free(o), free(gq), free(gk), free(gv);
    free(bo), free(bq), free(bk), free(bv), free(pk), free(pv);
    return err;
}

int main(void) {
    check_plans();
    ttt_ctx_config cfg = {.device = TTT_CPU, .seed = 1};
    ttt_ctx *ctx = ttt_ctx_new(&cfg);
    CHECK(ctx != NULL);
    if (!ctx) TEST_MAIN_END();
    /* Tq, Tk, d, causal, block */
    const int64_t cases[][5] = {{37, 37, 4, 1, 16}, {64, 64, 8, 1, 16}, {13, 29, 4, 1, 5},
                                {40, 40, 4, 0, 16}, {21, 33, 4, 0, 8},  {50, 50, 3, 1, 49}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const int64_t *s = cases[i];
        const double e = blocked_vs_whole(ctx, s[0], s[1], s[2], (int)s[3], s[4], 0);
        CHECK_MSG(e <= 1e-12, "Tq %lld Tk %lld d %lld causal %lld blocks of %lld: blocked against whole %.3g",
                  (long long)s[0], (long long)s[1], (long long)s[2], (long long)s[3], (long long)s[4], e);
        if (s[3] && s[4] < s[0]) { /* causal and cut: without the bottom-right shift the blocks see the wrong keys */
            const double w = blocked_vs_whole(ctx, s[0], s[1], s[2], 1, s[4], 1);
            CHECK_MSG(w > 1e-3, "the unshifted geometry matched (%.3g): the check cannot tell", w);
        }
    }
    ttt_ctx_free(ctx);
    TEST_MAIN_END();
}
