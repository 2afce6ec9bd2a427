/* Bad input returns an error naming the op and the shapes; nothing crashes,
 * and NULL inputs propagate without overwriting the first message. */
#include <string.h>

#include "check.h"
#include "ttt/ttt.h"

#define EXPECT_ERR(expr, needle)                                                                        \
    do {                                                                                                \
        ttt_clear_error(ctx);                                                                           \
        void *r_ = (void *)(expr);                                                                      \
        CHECK_MSG(r_ == NULL && strstr(ttt_error(ctx), needle) != NULL, "got '%s', wanted '%s'", ttt_error(ctx), \
                  needle);                                                                              \
    } while (0)

#define EXPECT_RC(expr, needle)                                                                         \
    do {                                                                                                \
        ttt_clear_error(ctx);                                                                           \
        int rc_ = (expr);                                                                               \
        CHECK_MSG(rc_ == TTT_ERR && strstr(ttt_error(ctx), needle) != NULL, "got '%s', wanted '%s'", ttt_error(ctx), \
                  needle);                                                                              \
    } while (0)

int main(void) {
    ttt_ctx *ctx = ttt_ctx_new(NULL);
    ttt_tensor *a = ttt_zeros(ctx, TTT_F32, TTT_DIMS(2, 3));
    ttt_tensor *b = ttt_zeros(ctx, TTT_F32, TTT_DIMS(4, 3));
    ttt_tensor *c = ttt_zeros(ctx, TTT_F64, TTT_DIMS(2, 3));
    ttt_tensor *ids = ttt_from_host(ctx, TTT_I32, TTT_DIMS(2), (int32_t[]){0, 9});

    EXPECT_ERR(ttt_add(ctx, a, b), "add: shapes [2,3] and [4,3] are not broadcastable");
    EXPECT_ERR(ttt_mul(ctx, a, c), "mul: dtypes f32 and f64 differ");
    EXPECT_ERR(ttt_matmul(ctx, a, a, 0, 0), "matmul: inner sizes differ: [2,3] (K=3) and [2,3] (K=2)");
    EXPECT_ERR(ttt_sum(ctx, a, 1, (int[]){5}, 0), "sum: axis 5 out of range for a 2-d tensor");
    EXPECT_ERR(ttt_reshape(ctx, a, TTT_DIMS(4, 2)), "reshape: [2,3] has 6 elements; the target shape has 8");
    EXPECT_ERR(ttt_reshape(ctx, a, TTT_DIMS(-1, -1)), "more than one -1");
    EXPECT_ERR(ttt_permute(ctx, a, (int[]){0, 0}), "permute");
    EXPECT_ERR(ttt_slice(ctx, a, 1, 2, 1, 1), "slice: range [2, 1) is outside axis 1 of size 3");
    EXPECT_ERR(ttt_expand(ctx, b, TTT_DIMS(2, 3)), "expand");
    EXPECT_ERR(ttt_concat(ctx, 2, (ttt_tensor *[]){a, c}, 0), "concat: tensor 1");
    EXPECT_ERR(ttt_embedding(ctx, a, ids), "embedding");
    EXPECT_ERR(ttt_embedding(ctx, a, a), "embedding: ids must be i32");
    EXPECT_ERR(ttt_cross_entropy(ctx, a, ttt_from_host(ctx, TTT_I32, TTT_DIMS(2), (int32_t[]){0, 3}), -100),
               "target 3 at row 1 out of range [0, 3)");
    EXPECT_ERR(ttt_cross_entropy(ctx, a, ids, -1), "");
    EXPECT_ERR(ttt_rope(ctx, ttt_zeros(ctx, TTT_F32, TTT_DIMS(2, 3)), 0, 0, 10000.0), "rope");
    EXPECT_ERR(ttt_layer_norm(ctx, a, b, NULL, 1e-5), "layer_norm: gamma");
    EXPECT_ERR(ttt_clamp(ctx, a, 1.0, 0.0), "clamp: lo 1 is above hi 0");
    EXPECT_ERR(ttt_log(ctx, ids), "log: dtype i32 is not supported");
    EXPECT_ERR(ttt_new(ctx, TTT_F32, TTT_DIMS(2, -1)), "negative size");
    EXPECT_ERR(ttt_new(ctx, TTT_F32, 9, (int64_t[9]){1}), "ndim 9");

    /* NULL propagates and keeps the first message */
    ttt_clear_error(ctx);
    ttt_tensor *bad = ttt_add(ctx, a, b);
    ttt_tensor *chain = ttt_exp(ctx, ttt_mul(ctx, bad, a));
    CHECK(chain == NULL);
    CHECK(strstr(ttt_error(ctx), "add: shapes") != NULL);

    /* autodiff misuse */
    ttt_tensor *y = ttt_sum(ctx, a, 0, NULL, 0), *g;
    EXPECT_RC(ttt_grad(ctx, 1, &y, NULL, 1, &a, &g, 0), "does not require grad");
    EXPECT_RC(ttt_backward(ctx, a), "ttt_backward: loss has shape [2,3]");
    EXPECT_RC(ttt_grad(ctx, 0, NULL, NULL, 0, NULL, NULL, 0), "ttt_grad: need at least one output");
    ttt_tensor *p = ttt_param(ctx, TTT_F32, TTT_DIMS(2, 3), "p");
    ttt_tensor *yp = ttt_sum(ctx, p, 0, NULL, 0), *wrong = ttt_zeros(ctx, TTT_F32, TTT_DIMS(2));
    EXPECT_RC(ttt_grad(ctx, 1, &yp, &wrong, 1, &p, &g, 0), "grad_outputs[0] is f32 [2]");
    EXPECT_RC(ttt_assign(ctx, a, b), "ttt_assign: destination [2,3] and source [4,3] differ in shape");
    CHECK(isnan(ttt_item(ctx, a)));
    CHECK(strstr(ttt_error(ctx), "has 6 elements, not 1") != NULL);

    /* optimizer and schedule arguments */
    ttt_optim_config bad_cfg = {.lr = -1};
    EXPECT_ERR(ttt_adamw_new(ctx, 1, &p, NULL, &bad_cfg), "adamw: config out of range");
    ttt_optim_config ok_cfg = {.lr = 0.1};
    EXPECT_ERR(ttt_sgd_new(ctx, 1, &a, NULL, &ok_cfg), "sgd: params[0] is not a persistent float parameter");
    EXPECT_RC(ttt_clip_grad_norm(ctx, 1, &p, 0.0, NULL), "max_norm 0 must be > 0");

    ttt_ctx_free(ctx);
    TEST_MAIN_END();
}
