/* Graphs (include/ttt/graph.h): the CPU refuses them with a message and
 * ttt_item_into reads at once; on a CUDA device (skipped without one) a
 * recorded training step replays to the same bits as running it, host reads
 * and allocations are refused while recording, index checks are deferred to
 * the replay, and a failed recording leaves the context usable. */
#include <string.h>

#include "check.h"
#include "ttt/backend.h"
#include "ttt/graph.h"
#include "ttt/ttt.h"

enum { N = 16, F = 8, K = 4 };

static void cpu_checks(void) {
    ttt_ctx *ctx = ttt_ctx_new(NULL);
    CHECK(!ttt_graph_supported(ctx));
    CHECK(ttt_graph_begin(ctx) == TTT_ERR);
    CHECK_MSG(strstr(ttt_error(ctx), "cannot record graphs") != NULL, "%s", ttt_error(ctx));
    CHECK(!ttt_graph_recording(ctx));
    ttt_graph *g = (ttt_graph *)&g;
    CHECK(ttt_graph_end(ctx, &g) == TTT_ERR && g == NULL);
    CHECK(strstr(ttt_error(ctx), "no graph is being recorded") != NULL);
    CHECK(ttt_graph_replay(ctx, NULL) == TTT_ERR);
    ttt_graph_free(ctx, NULL);

    double v = 0;
    ttt_tensor *s = ttt_scalar(ctx, TTT_F32, 3.0);
    CHECK(ttt_item_into(ctx, s, 0.5, &v) == TTT_OK);
    CHECK(v == 1.5);
    CHECK(ttt_item_into(ctx, ttt_zeros(ctx, TTT_F32, TTT_DIMS(2)), 1.0, &v) == TTT_ERR);
    CHECK(strstr(ttt_error(ctx), "has 2 elements") != NULL);
    CHECK(ttt_item_into(ctx, s, 1.0, NULL) == TTT_ERR);
    CHECK(ttt_item_into(ctx, NULL, 1.0, &v) == TTT_ERR);
    ttt_ctx_free(ctx);
}

typedef struct {
    ttt_tensor *w, *b, *table, *params[3];
    ttt_tensor *x, *ids; /* persistent inputs */
} model;

/* loss = mean(tanh((x + table[ids]) w + b)^2), its value into *lv, gradients into the params */
static int step(ttt_ctx *ctx, model *m, double *lv) {
    ttt_tensor *h = ttt_tanh(ctx, ttt_add(ctx, ttt_matmul(ctx, ttt_add(ctx, m->x, ttt_embedding(ctx, m->table, m->ids)),
                                                          m->w, 0, 0),
                                          m->b));
    ttt_tensor *loss = ttt_mean(ctx, ttt_mul(ctx, h, h), 0, NULL, 0);
    if (!loss || ttt_item_into(ctx, loss, 1.0, lv) != TTT_OK) return TTT_ERR;
    if (ttt_zero_grad(ctx, 3, m->params) != TTT_OK) return TTT_ERR;
    return ttt_backward(ctx, loss);
}

static int set_inputs(ttt_ctx *ctx, model *m, int round) {
    float xs[N * F];
    int32_t ids[N];
    for (int i = 0; i < N * F; i++) xs[i] = (float)((i * 37 + round * 11) % 23) / 23.0f - 0.5f;
    for (int i = 0; i < N; i++) ids[i] = (i * 5 + round) % N; /* a permutation: the scatter-add is deterministic */
    return ttt_assign(ctx, m->x, ttt_from_host(ctx, TTT_F32, TTT_DIMS(N, F), xs)) ||
           ttt_assign(ctx, m->ids, ttt_from_host(ctx, TTT_I32, TTT_DIMS(N), ids));
}

static void grads(ttt_ctx *ctx, model *m, float *out) {
    int64_t off = 0;
    for (int i = 0; i < 3; i++) {
        CHECK(ttt_copy_to_host(ctx, m->params[i]->grad, out + off, TTT_F32) == TTT_OK);
        off += ttt_numel(m->params[i]);
    }
}

static void cuda_checks(void) {
    ttt_ctx *ctx = ttt_ctx_new(&(ttt_ctx_config){.device = TTT_CUDA, .seed = 5});
    CHECK(ctx && ttt_graph_supported(ctx));
    if (!ctx) return;
    model m;
    m.w = ttt_param(ctx, TTT_F32, TTT_DIMS(F, K), "w");
    m.b = ttt_param(ctx, TTT_F32, TTT_DIMS(K), "b");
    m.table = ttt_param(ctx, TTT_F32, TTT_DIMS(N, F), "table");
    m.x = ttt_persistent(ctx, TTT_F32, TTT_DIMS(N, F), "x");
    m.ids = ttt_persistent(ctx, TTT_I32, TTT_DIMS(N), "ids");
    m.params[0] = m.w, m.params[1] = m.b, m.params[2] = m.table;
    CHECK(ttt_assign(ctx, m.w, ttt_randn(ctx, TTT_F32, TTT_DIMS(F, K), 1.0)) == TTT_OK);
    CHECK(ttt_assign(ctx, m.table, ttt_randn(ctx, TTT_F32, TTT_DIMS(N, F), 1.0)) == TTT_OK);

    /* eager reference values for 4 input rounds */
    enum { ROUNDS = 4, NG = F * K + K + N * F };
    double want[ROUNDS], got[ROUNDS], lv = 0;
    float gwant[ROUNDS][NG], ggot[NG];
    for (int r = 0; r < ROUNDS; r++) {
        ttt_step_reset(ctx);
        CHECK(set_inputs(ctx, &m, r) == TTT_OK);
        CHECK_MSG(step(ctx, &m, &want[r]) == TTT_OK, "%s", ttt_error(ctx));
        grads(ctx, &m, gwant[r]);
    }

    /* host reads are refused while recording, with a message naming them; the
     * recording then fails and the context goes on working */
    ttt_step_reset(ctx);
    CHECK_MSG(ttt_graph_begin(ctx) == TTT_OK, "%s", ttt_error(ctx));
    CHECK(ttt_graph_recording(ctx));
    double bad = ttt_item(ctx, ttt_sum(ctx, m.x, 0, NULL, 0));
    CHECK(isnan(bad));
    CHECK_MSG(strstr(ttt_error(ctx), "ttt_copy_to_host") && strstr(ttt_error(ctx), "while a graph is recorded"), "%s",
              ttt_error(ctx));
    CHECK(ttt_from_host(ctx, TTT_F32, TTT_DIMS(1), &(float){1}) == NULL);
    CHECK(ttt_persistent(ctx, TTT_F32, TTT_DIMS(1), "late") == NULL);
    ttt_graph *g = NULL;
    CHECK(ttt_graph_end(ctx, &g) == TTT_ERR && g == NULL);
    CHECK_MSG(strstr(ttt_error(ctx), "persistent tensor late"), "%s", ttt_error(ctx)); /* the last op's message */
    CHECK(!ttt_graph_recording(ctx));
    ttt_step_reset(ctx);
    CHECK_NEAR(ttt_item(ctx, ttt_sum(ctx, ttt_scalar(ctx, TTT_F32, 2.0), 0, NULL, 0)), 2.0, 0);

    /* a step that needs more arena than there is cannot be recorded */
    ttt_step_reset(ctx);
    CHECK(ttt_graph_begin(ctx) == TTT_OK);
    CHECK(ttt_zeros(ctx, TTT_F32, TTT_DIMS(1 << 20, 1 << 9)) == NULL); /* 2 GiB, the arena has 64 MiB */
    CHECK(ttt_graph_end(ctx, &g) == TTT_ERR);
    CHECK_MSG(strstr(ttt_error(ctx), "arena would need a new"), "%s", ttt_error(ctx));

    /* record once, replay for each input round: the same bits as running eagerly */
    ttt_step_reset(ctx);
    CHECK(set_inputs(ctx, &m, 0) == TTT_OK);
    CHECK(ttt_graph_begin(ctx) == TTT_OK);
    CHECK(step(ctx, &m, &lv) == TTT_OK);
    CHECK_MSG(ttt_graph_end(ctx, &g) == TTT_OK && g, "%s", ttt_error(ctx));
    for (int r = 0; r < ROUNDS; r++) {
        ttt_step_reset(ctx);
        CHECK(set_inputs(ctx, &m, r) == TTT_OK);
        got[r] = -1;
        lv = -1;
        CHECK_MSG(ttt_graph_replay(ctx, g) == TTT_OK, "%s", ttt_error(ctx));
        got[r] = lv;
        CHECK_MSG(got[r] == want[r], "round %d: replay %.9g, eager %.9g", r, got[r], want[r]);
        grads(ctx, &m, ggot);
        CHECK_MSG(memcmp(ggot, gwant[r], sizeof ggot) == 0, "round %d: gradients differ", r);
    }

    /* a bad id is found by the replay, with the eager message */
    int32_t ids[N];
    for (int i = 0; i < N; i++) ids[i] = i;
    ids[3] = 99;
    ttt_step_reset(ctx);
    CHECK(ttt_assign(ctx, m.ids, ttt_from_host(ctx, TTT_I32, TTT_DIMS(N), ids)) == TTT_OK);
    CHECK(ttt_graph_replay(ctx, g) == TTT_ERR);
    CHECK_MSG(strstr(ttt_error(ctx), "id 99 at position 3 out of range [0, 16)"), "%s", ttt_error(ctx));
    ttt_graph_free(ctx, g);
    ttt_ctx_free(ctx);
}

int main(void) {
    cpu_checks();
    if (ttt_backend_for(TTT_CUDA)) cuda_checks();
    else printf("no CUDA device: graph recording not tested here\n");
    TEST_MAIN_END();
}
