/* Tensors: creation, host transfer, views sharing data, dtype conversion. */
#include <string.h>

#include "check.h"
#include "ttt/ttt.h"

int main(void) {
    ttt_ctx *ctx = ttt_ctx_new(NULL);
    float src[6] = {1, 2, 3, 4, 5, 6}, out[6];
    ttt_tensor *a = ttt_from_host(ctx, TTT_F32, TTT_DIMS(2, 3), src);
    CHECK(a && a->ndim == 2 && a->shape[0] == 2 && a->stride[0] == 3 && ttt_is_contiguous(a));
    char s[32];
    CHECK(!strcmp(ttt_shape_str(a, s, sizeof s), "[2,3]"));

    /* transpose is a view: same data, swapped strides, copied out in logical order */
    ttt_tensor *t = ttt_transpose(ctx, a, 0, 1);
    CHECK(t->data == a->data && !ttt_is_contiguous(t));
    ttt_copy_to_host(ctx, t, out, TTT_F32);
    const float want_t[6] = {1, 4, 2, 5, 3, 6};
    CHECK(!memcmp(out, want_t, sizeof out));
    /* reshape of a contiguous tensor is a view; of a transposed one, a copy */
    ttt_tensor *r = ttt_reshape(ctx, a, TTT_DIMS(3, 2));
    CHECK(r->data == a->data);
    ttt_tensor *rt = ttt_reshape(ctx, t, TTT_DIMS(6));
    CHECK(rt->data != a->data);
    ttt_copy_to_host(ctx, rt, out, TTT_F32);
    CHECK(!memcmp(out, want_t, sizeof out));
    /* slice with a step is a view */
    ttt_tensor *sl = ttt_slice(ctx, a, 1, 0, 3, 2);
    CHECK(sl->shape[1] == 2 && sl->stride[1] == 2);
    float o4[4];
    ttt_copy_to_host(ctx, sl, o4, TTT_F32);
    CHECK(o4[0] == 1 && o4[1] == 3 && o4[2] == 4 && o4[3] == 6);
    /* expand broadcasts with stride 0 */
    ttt_tensor *row = ttt_slice(ctx, a, 0, 1, 2, 1);
    ttt_tensor *ex = ttt_expand(ctx, row, TTT_DIMS(4, 3));
    CHECK(ex->stride[0] == 0);
    CHECK_NEAR(ttt_item(ctx, ttt_sum(ctx, ex, 0, NULL, 0)), 4 * 15, 1e-6);

    /* matmul of an expanded row (row stride 0) equals the matmul of its dense copy */
    ttt_tensor *wm = ttt_randn(ctx, TTT_F64, TTT_DIMS(3, 2), 1.0);
    ttt_tensor *r64 = ttt_randn(ctx, TTT_F64, TTT_DIMS(1, 3), 1.0);
    ttt_tensor *rx = ttt_expand(ctx, r64, TTT_DIMS(4, 3));
    ttt_tensor *d1 = ttt_sub(ctx, ttt_matmul(ctx, rx, wm, 0, 0), ttt_matmul(ctx, ttt_contiguous(ctx, rx), wm, 0, 0));
    CHECK_NEAR(ttt_item(ctx, ttt_sum(ctx, ttt_abs(ctx, d1), 0, NULL, 0)), 0.0, 1e-12);

    /* bf16 storage: rounding to nearest even, conversion both ways */
    CHECK(ttt_bf16_to_f32(ttt_f32_to_bf16(1.0f)) == 1.0f);
    CHECK(ttt_f32_to_bf16(1.00390625f) == 0x3f80);  /* halfway, rounds to even */
    CHECK(ttt_f32_to_bf16(1.01171875f) == 0x3f82);  /* halfway, rounds up to even */
    float vals[4] = {3.14159f, -2.5f, 1e-3f, 65504.0f};
    ttt_tensor *f = ttt_from_host(ctx, TTT_F32, TTT_DIMS(4), vals);
    ttt_tensor *b = ttt_cast(ctx, f, TTT_BF16);
    CHECK(b->dtype == TTT_BF16 && ttt_dtype_size(b->dtype) == 2);
    float back[4];
    ttt_copy_to_host(ctx, b, back, TTT_F32);
    for (int i = 0; i < 4; i++) CHECK_NEAR(back[i], vals[i], fabs(vals[i]) * 4e-3);
    double d[4];
    ttt_copy_to_host(ctx, ttt_cast(ctx, b, TTT_F64), d, TTT_F64);
    CHECK_NEAR(d[1], -2.5, 0);

    /* random tensors follow the seed */
    ttt_manual_seed(ctx, 5);
    double x1 = ttt_item(ctx, ttt_sum(ctx, ttt_randn(ctx, TTT_F64, TTT_DIMS(100), 1.0), 0, NULL, 0));
    ttt_manual_seed(ctx, 5);
    double x2 = ttt_item(ctx, ttt_sum(ctx, ttt_randn(ctx, TTT_F64, TTT_DIMS(100), 1.0), 0, NULL, 0));
    CHECK(x1 == x2);
    ttt_tensor *u = ttt_rand(ctx, TTT_F64, TTT_DIMS(1000), 2.0, 3.0);
    CHECK(ttt_item(ctx, ttt_max(ctx, u, 0, NULL, 0)) < 3.0);
    CHECK(ttt_item(ctx, ttt_neg(ctx, ttt_max(ctx, ttt_neg(ctx, u), 0, NULL, 0))) >= 2.0);

    /* zero-size tensors are legal */
    ttt_tensor *z = ttt_zeros(ctx, TTT_F32, TTT_DIMS(0, 3));
    CHECK(z && ttt_numel(z) == 0);
    CHECK(ttt_sum(ctx, z, 1, (int[]){0}, 0) != NULL);
    ttt_ctx_free(ctx);
    TEST_MAIN_END();
}
