/* ttt/layers.h: learners that train at test time.
 *
 * The reconstruction learner is the core of MTTT (docs/design.md §1): a small MLP f with
 * weights W (the "fast" state) takes gradient steps on a self-supervised
 * reconstruction loss over the tokens it is reading,
 *     l(W; X) = 1/(2n) sum_i || g(f(phi(x_i); W)) - x_i ||^2,
 *     W_t = W_{t-1} - eta * grad l(W_{t-1}; X),
 * while phi (encoder), g (decoder) and W_0 are "slow" parameters trained by an
 * outer loop through every inner step (ttt_grad with create_graph).
 * A separate target y generalises the task to denoising / completion:
 *     l(W; X, Y) = 1/(2n) sum_i || g(f(phi(x_i); W)) - y_i ||^2   (y = NULL: y = x). */
#ifndef TTT_LAYERS_H
#define TTT_LAYERS_H

#include "ttt/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    ttt_tensor *enc;      /* phi: [d, k], tokens [n, d] -> codes [n, k] */
    ttt_tensor *dec;      /* g:   [k, d] */
    ttt_tensor *w1, *w2;  /* W_0 of f(z) = gelu(z w1) w2: [k, h], [h, k] */
} ttt_recon_learner;

typedef struct {
    int steps;            /* inner steps T (0 = no adaptation) */
    double eta;           /* inner learning rate */
    int checkpoint;       /* 1: rematerialize each inner step in the backward pass */
    double *inner_loss;   /* optional: steps + 1 values, the loss before each step and after the last */
} ttt_inner_opts;

/* Shapes: d, k, h; parameters persistent, initialised with the context's RNG. */
int ttt_recon_learner_init(ttt_ctx *ctx, ttt_recon_learner *l, ttt_dtype dt, int64_t d, int64_t k, int64_t h);
/* Run the inner loop on x [n, d] (targets y [n, d], or NULL for x); *w1 / *w2
 * receive the adapted weights, with a graph back to the slow parameters when
 * grad mode is on. */
int ttt_recon_adapt(ttt_ctx *ctx, const ttt_recon_learner *l, ttt_tensor *x, ttt_tensor *y,
                    const ttt_inner_opts *opts, ttt_tensor **w1, ttt_tensor **w2);
/* g(f(phi(x); W)) for x [n, d] with weights w1, w2. */
ttt_tensor *ttt_recon_apply(ttt_ctx *ctx, const ttt_recon_learner *l, ttt_tensor *w1, ttt_tensor *w2, ttt_tensor *x);
/* The inner loss l(W; x, y) (y = NULL: y = x). */
ttt_tensor *ttt_recon_loss(ttt_ctx *ctx, const ttt_recon_learner *l, ttt_tensor *w1, ttt_tensor *w2, ttt_tensor *x,
                           ttt_tensor *y);

#ifdef __cplusplus
}
#endif
#endif
