/* Meta-learning through inner steps: a 2-layer MLP learner takes 4 inner SGD
 * steps on a reconstruction loss; the gradient of the outer loss with respect
 * to W_0 and the encoder/decoder matches float64 central differences, with and
 * without rematerialization of each step. */
#include <math.h>
#include <stdlib.h>

#include "check.h"
#include "ttt/ttt.h"

enum { D = 4, K = 3, H = 5, N = 6, STEPS = 4 };

static ttt_tensor *outer_loss(ttt_ctx *ctx, const ttt_recon_learner *l, ttt_tensor *x, ttt_tensor *q, int remat) {
    ttt_inner_opts o = {.steps = STEPS, .eta = 0.3, .checkpoint = remat};
    ttt_tensor *w1, *w2;
    if (ttt_recon_adapt(ctx, l, x, NULL, &o, &w1, &w2) != TTT_OK) return NULL;
    /* outer task: a different objective than the inner one (tanh of the read-out) */
    ttt_tensor *z = ttt_tanh(ctx, ttt_recon_apply(ctx, l, w1, w2, q));
    return ttt_mean(ctx, ttt_mul(ctx, z, z), 0, NULL, 0);
}

int main(void) {
    ttt_ctx_config cfg = {.seed = 7, .threads = 1};
    ttt_ctx *ctx = ttt_ctx_new(&cfg);
    ttt_recon_learner l;
    CHECK(ttt_recon_learner_init(ctx, &l, TTT_F64, D, K, H) == TTT_OK);
    ttt_tensor *params[4] = {l.enc, l.dec, l.w1, l.w2};
    const char *names[4] = {"enc", "dec", "w1 (W_0)", "w2 (W_0)"};
    double xs[N * D], qs[N * D];
    ttt_tensor *xr = ttt_randn(ctx, TTT_F64, TTT_DIMS(N, D), 1.0), *qr = ttt_randn(ctx, TTT_F64, TTT_DIMS(N, D), 1.0);
    ttt_copy_to_host(ctx, xr, xs, TTT_F64);
    ttt_copy_to_host(ctx, qr, qs, TTT_F64);
    ttt_step_reset(ctx);

    double *grads[2][4];
    for (int remat = 0; remat < 2; remat++) {
        ttt_tensor *x = ttt_from_host(ctx, TTT_F64, TTT_DIMS(N, D), xs);
        ttt_tensor *q = ttt_from_host(ctx, TTT_F64, TTT_DIMS(N, D), qs);
        CHECK(ttt_zero_grad(ctx, 4, params) == TTT_OK);
        ttt_tensor *loss = outer_loss(ctx, &l, x, q, remat);
        CHECK_MSG(loss != NULL, "%s", ttt_error(ctx));
        CHECK_MSG(ttt_backward(ctx, loss) == TTT_OK, "%s", ttt_error(ctx));
        for (int p = 0; p < 4; p++) {
            grads[remat][p] = malloc(sizeof(double) * (size_t)ttt_numel(params[p]));
            ttt_copy_to_host(ctx, params[p]->grad, grads[remat][p], TTT_F64);
        }
        ttt_step_reset(ctx);
    }

    /* finite differences on every parameter entry */
    const double eps = 1e-6;
    for (int p = 0; p < 4; p++) {
        int64_t n = ttt_numel(params[p]);
        double *w = malloc(sizeof(double) * (size_t)n), worst = 0, worst_remat = 0;
        ttt_copy_to_host(ctx, params[p], w, TTT_F64);
        for (int64_t j = 0; j < n; j++) {
            double f[2];
            for (int s = 0; s < 2; s++) {
                double save = w[j];
                w[j] = save + (s ? -eps : eps);
                ttt_tensor *wt = ttt_from_host(ctx, TTT_F64, params[p]->ndim, params[p]->shape, w);
                ttt_assign(ctx, params[p], wt);
                w[j] = save;
                ttt_no_grad_begin(ctx);
                ttt_tensor *x = ttt_from_host(ctx, TTT_F64, TTT_DIMS(N, D), xs);
                ttt_tensor *q = ttt_from_host(ctx, TTT_F64, TTT_DIMS(N, D), qs);
                f[s] = ttt_item(ctx, outer_loss(ctx, &l, x, q, 0));
                ttt_no_grad_end(ctx);
                ttt_step_reset(ctx);
            }
            double numeric = (f[0] - f[1]) / (2 * eps);
            worst = fmax(worst, fabs(grads[0][p][j] - numeric) / (1e-7 + 1e-5 * fabs(numeric)));
            worst_remat = fmax(worst_remat, fabs(grads[1][p][j] - grads[0][p][j]));
        }
        ttt_tensor *wt = ttt_from_host(ctx, TTT_F64, params[p]->ndim, params[p]->shape, w);
        ttt_assign(ctx, params[p], wt);
        ttt_step_reset(ctx);
        CHECK_MSG(worst <= 1.0, "%s: outer gradient vs finite differences, scaled error %g", names[p], worst);
        CHECK_MSG(worst_remat <= 1e-12, "%s: remat changes the gradient by %g", names[p], worst_remat);
        printf("%-10s outer-gradient scaled error %.3g, remat difference %.3g\n", names[p], worst, worst_remat);
        free(w);
        free(grads[0][p]);
        free(grads[1][p]);
    }
    /* the inner loop learns: the inner loss falls over the steps at eta 0.3 */
    double inner[STEPS + 1];
    ttt_tensor *x = ttt_from_host(ctx, TTT_F64, TTT_DIMS(N, D), xs);
    ttt_inner_opts o = {.steps = STEPS, .eta = 0.3, .inner_loss = inner};
    ttt_tensor *w1, *w2;
    ttt_no_grad_begin(ctx);
    CHECK(ttt_recon_adapt(ctx, &l, x, NULL, &o, &w1, &w2) == TTT_OK);
    ttt_no_grad_end(ctx);
    CHECK_MSG(inner[STEPS] < inner[0], "inner loss %g -> %g", inner[0], inner[STEPS]);
    ttt_ctx_free(ctx);
    TEST_MAIN_END();
}
