/* The reconstruction learner: an MLP whose weights take gradient steps on the
 * tokens it reads (see include/ttt/layers.h). */
#include <math.h>

#include "../core/engine_private.h"
#include "ttt/layers.h"

static int init_param(ttt_ctx *ctx, ttt_tensor **p, ttt_dtype dt, int64_t rows, int64_t cols, const char *name) {
    *p = ttt_param(ctx, dt, TTT_DIMS(rows, cols), name);
    if (!*p) return TTT_ERR;
    ttt_mark_t m = ttt_mark(ctx);
    int rc = ttt_assign(ctx, *p, ttt_randn(ctx, dt, TTT_DIMS(rows, cols), 1.0 / sqrt((double)rows)));
    ttt_release(ctx, m);
    return rc;
}

int ttt_recon_learner_init(ttt_ctx *ctx, ttt_recon_learner *l, ttt_dtype dt, int64_t d, int64_t k, int64_t h) {
    if (!ctx || !l) return TTT_ERR;
    if (d <= 0 || k <= 0 || h <= 0)
        return ttt__set_error(ctx, "recon_learner: sizes d=%lld k=%lld h=%lld must be positive", (long long)d,
                              (long long)k, (long long)h);
    if (init_param(ctx, &l->enc, dt, d, k, "enc") || init_param(ctx, &l->dec, dt, k, d, "dec") ||
        init_param(ctx, &l->w1, dt, k, h, "w1") || init_param(ctx, &l->w2, dt, h, k, "w2"))
        return TTT_ERR;
    return TTT_OK;
}

ttt_tensor *ttt_recon_apply(ttt_ctx *ctx, const ttt_recon_learner *l, ttt_tensor *w1, ttt_tensor *w2, ttt_tensor *x) {
    ttt_tensor *z = ttt_matmul(ctx, x, l->enc, 0, 0);
    ttt_tensor *f = ttt_matmul(ctx, ttt_gelu(ctx, ttt_matmul(ctx, z, w1, 0, 0)), w2, 0, 0);
    return ttt_matmul(ctx, f, l->dec, 0, 0);
}

ttt_tensor *ttt_recon_loss(ttt_ctx *ctx, const ttt_recon_learner *l, ttt_tensor *w1, ttt_tensor *w2, ttt_tensor *x,
                           ttt_tensor *y) {
    if (!x) return NULL;
    ttt_tensor *r = ttt_sub(ctx, ttt_recon_apply(ctx, l, w1, w2, x), y ? y : x);
    /* 1/(2n) sum_i ||r_i||^2 */
    return ttt_scale(ctx, ttt_sum(ctx, ttt_mul(ctx, r, r), 0, NULL, 0), 0.5 / (double)x->shape[0]);
}

/* One inner step as a pure function of (w1, w2, x, y, enc, dec) so that it can be
 * checkpointed. out: w1', w2', loss before the step. */
typedef struct {
    double eta;
} step_args;

static int inner_step(ttt_ctx *ctx, void *user, int n_in, ttt_tensor *const *in, int n_out, ttt_tensor **out) {
    (void)n_in;
    (void)n_out;
    const step_args *a = user;
    ttt_recon_learner l = {.enc = in[4], .dec = in[5]};
    ttt_tensor *w[2] = {in[0], in[1]}, *g[2];
    /* The inner loss always needs a graph to W; the outer loop differentiates
     * through the step only if it is recording. */
    int create_graph = ttt_grad_enabled(ctx);
    ttt_grad_mode prev = ttt_grad_mode_set(ctx, 1);
    ttt_tensor *loss = ttt_recon_loss(ctx, &l, w[0], w[1], in[2], in[3]);
    int rc = loss ? ttt_grad(ctx, 1, &loss, NULL, 2, w, g, create_graph) : TTT_ERR;
    ttt_grad_mode_restore(ctx, prev);
    if (rc != TTT_OK) return TTT_ERR;
    out[0] = ttt_sub(ctx, w[0], ttt_scale(ctx, g[0], a->eta));
    out[1] = ttt_sub(ctx, w[1], ttt_scale(ctx, g[1], a->eta));
    out[2] = loss;
    return out[0] && out[1] ? TTT_OK : TTT_ERR;
}

int ttt_recon_adapt(ttt_ctx *ctx, const ttt_recon_learner *l, ttt_tensor *x, ttt_tensor *y,
                    const ttt_inner_opts *opts, ttt_tensor **w1, ttt_tensor **w2) {
    if (!ctx || !l || !opts || !w1 || !w2) return TTT_ERR;
    if (!x) return TTT_ERR;
    if (!y) y = x;
    if (x->ndim != 2 || x->shape[1] != l->enc->shape[0] || !ttt_same_shape(x, y)) {
        char s[96], t[96];
        return ttt__set_error(ctx, "recon_adapt: tokens %s and targets %s must both be [n, %lld]",
                              ttt_shape_str(x, s, sizeof s), ttt_shape_str(y, t, sizeof t), (long long)l->enc->shape[0]);
    }
    if (opts->steps < 0 || !isfinite(opts->eta))
        return ttt__set_error(ctx, "recon_adapt: steps %d must be >= 0 and eta finite", opts->steps);
    bool outer = ttt_grad_enabled(ctx);
    ttt_tensor *w[2] = {l->w1, l->w2};
    if (!outer) {
        /* Evaluation: the inner loop still needs gradients with respect to W. */
        for (int i = 0; i < 2; i++) {
            w[i] = ttt_detach(ctx, w[i]);
            ttt_set_requires_grad(w[i], 1);
        }
    }
    /* The backward pass calls inner_step again: its arguments must outlive
     * this function, so they live in the step arena. */
    step_args *args = ttt__meta_alloc(ctx, sizeof *args);
    if (!args) return TTT_ERR;
    args->eta = opts->eta;
    for (int t = 0; t < opts->steps; t++) {
        ttt_tensor *in[6] = {w[0], w[1], x, y, l->enc, l->dec}, *out[3];
        int rc = opts->checkpoint ? ttt_checkpoint(ctx, inner_step, args, 6, in, 3, out)
                                  : inner_step(ctx, args, 6, in, 3, out);
        if (rc != TTT_OK) return TTT_ERR;
        if (opts->inner_loss) opts->inner_loss[t] = ttt_item(ctx, out[2]);
        w[0] = out[0];
        w[1] = out[1];
        if (!outer)
            for (int i = 0; i < 2; i++) {
                w[i] = ttt_detach(ctx, w[i]);
                ttt_set_requires_grad(w[i], 1);
            }
    }
    if (opts->inner_loss) {
        ttt_no_grad_begin(ctx);
        opts->inner_loss[opts->steps] = ttt_item(ctx, ttt_recon_loss(ctx, l, w[0], w[1], x, y));
        ttt_no_grad_end(ctx);
    }
    *w1 = w[0];
    *w2 = w[1];
    return TTT_OK;
}
