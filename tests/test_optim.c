/* Optimizers against their update rules written out in double, the schedule,
 * and gradient clipping. */
#include <math.h>

#include "check.h"
#include "ttt/ttt.h"

static void set_grad(ttt_ctx *ctx, ttt_tensor *p, const double *g) {
    ttt_zero_grad(ctx, 1, &p);
    ttt_assign(ctx, p->grad, ttt_from_host(ctx, TTT_F64, p->ndim, p->shape, g));
}

int main(void) {
    ttt_ctx *ctx = ttt_ctx_new(NULL);
    const double p0[3] = {0.5, -1.0, 2.0};
    const double grads[3][3] = {{0.1, -0.2, 0.3}, {-0.4, 0.5, 0.0}, {1.0, 1.0, -1.0}};

    /* AdamW (decoupled weight decay) */
    ttt_tensor *p = ttt_param(ctx, TTT_F64, TTT_DIMS(3), "p");
    ttt_assign(ctx, p, ttt_from_host(ctx, TTT_F64, TTT_DIMS(3), p0));
    ttt_optim_config ac = {.lr = 0.01, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
    ttt_optimizer *adam = ttt_adamw_new(ctx, 1, &p, NULL, &ac);
    double ref[3] = {p0[0], p0[1], p0[2]}, m[3] = {0}, v[3] = {0};
    for (int t = 1; t <= 3; t++) {
        set_grad(ctx, p, grads[t - 1]);
        CHECK(ttt_optimizer_step(adam, -1) == TTT_OK);
        for (int i = 0; i < 3; i++) {
            double g = grads[t - 1][i];
            ref[i] -= 0.01 * 0.1 * ref[i];
            m[i] = 0.9 * m[i] + 0.1 * g;
            v[i] = 0.95 * v[i] + 0.05 * g * g;
            ref[i] -= 0.01 * (m[i] / (1 - pow(0.9, t))) / (sqrt(v[i] / (1 - pow(0.95, t))) + 1e-8);
        }
    }
    double got[3];
    ttt_copy_to_host(ctx, p, got, TTT_F64);
    for (int i = 0; i < 3; i++) CHECK_NEAR(got[i], ref[i], 1e-12);
    ttt_optimizer_free(adam);

    /* SGD with momentum, nesterov, L2 weight decay */
    ttt_assign(ctx, p, ttt_from_host(ctx, TTT_F64, TTT_DIMS(3), p0));
    ttt_optim_config sc = {.lr = 0.1, .momentum = 0.9, .nesterov = 1, .weight_decay = 0.01};
    ttt_optimizer *sgd = ttt_sgd_new(ctx, 1, &p, NULL, &sc);
    double buf[3] = {0};
    for (int i = 0; i < 3; i++) ref[i] = p0[i];
    for (int t = 0; t < 3; t++) {
        set_grad(ctx, p, grads[t]);
        CHECK(ttt_optimizer_step(sgd, -1) == TTT_OK);
        for (int i = 0; i < 3; i++) {
            double d = grads[t][i] + 0.01 * ref[i];
            buf[i] = 0.9 * buf[i] + d;
            ref[i] -= 0.1 * (d + 0.9 * buf[i]);
        }
    }
    ttt_copy_to_host(ctx, p, got, TTT_F64);
    for (int i = 0; i < 3; i++) CHECK_NEAR(got[i], ref[i], 1e-12);
    ttt_optimizer_free(sgd);

    /* no decay for flagged parameters */
    ttt_assign(ctx, p, ttt_from_host(ctx, TTT_F64, TTT_DIMS(3), p0));
    ttt_optim_config wc = {.lr = 1.0, .weight_decay = 0.5};
    int no_decay = 0;
    ttt_optimizer *plain = ttt_sgd_new(ctx, 1, &p, &no_decay, &wc);
    set_grad(ctx, p, (double[]){0, 0, 0});
    ttt_optimizer_step(plain, -1);
    ttt_copy_to_host(ctx, p, got, TTT_F64);
    CHECK_NEAR(got[2], 2.0, 0);
    ttt_optimizer_free(plain);

    /* warmup + cosine */
    CHECK_NEAR(ttt_lr_warmup_cosine(0, 10, 110, 1.0, 0.1), 0.1, 1e-12);
    CHECK_NEAR(ttt_lr_warmup_cosine(9, 10, 110, 1.0, 0.1), 1.0, 1e-12);
    CHECK_NEAR(ttt_lr_warmup_cosine(10, 10, 110, 1.0, 0.1), 1.0, 1e-12);
    CHECK_NEAR(ttt_lr_warmup_cosine(60, 10, 110, 1.0, 0.1), 0.55, 1e-12);
    CHECK_NEAR(ttt_lr_warmup_cosine(110, 10, 110, 1.0, 0.1), 0.1, 1e-12);

    /* clipping: grads (3, 4) has norm 5 -> scaled to norm 1 */
    ttt_tensor *q = ttt_param(ctx, TTT_F64, TTT_DIMS(2), "q");
    set_grad(ctx, q, (double[]){3, 4});
    double norm;
    CHECK(ttt_clip_grad_norm(ctx, 1, &q, 1.0, &norm) == TTT_OK);
    CHECK_NEAR(norm, 5.0, 1e-12);
    ttt_copy_to_host(ctx, q->grad, got, TTT_F64);
    CHECK_NEAR(got[0], 0.6, 1e-6);
    CHECK_NEAR(got[1], 0.8, 1e-6);
    CHECK(ttt_clip_grad_norm(ctx, 1, &q, 10.0, &norm) == TTT_OK); /* below the limit: unchanged */
    ttt_copy_to_host(ctx, q->grad, got, TTT_F64);
    CHECK_NEAR(got[0], 0.6, 1e-6);
    ttt_ctx_free(ctx);
    TEST_MAIN_END();
}
