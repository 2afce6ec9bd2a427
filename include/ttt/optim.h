/* ttt/optim.h: outer-loop optimizers, learning-rate schedule, gradient clipping.
 * They update persistent parameters in place from p->grad (see ttt_backward);
 * their state (momentum, Adam moments) is persistent and owned by the optimizer. */
#ifndef TTT_OPTIM_H
#define TTT_OPTIM_H

#include "ttt/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ttt_optimizer ttt_optimizer;

typedef struct {
    double lr;            /* default learning rate (ttt_optimizer_step may override per step) */
    double beta1, beta2;  /* AdamW: 0.9, 0.999 if 0 */
    double eps;           /* AdamW: 1e-8 if 0 */
    double momentum;      /* SGD */
    int nesterov;         /* SGD */
    double weight_decay;  /* AdamW: decoupled; SGD: L2 added to the gradient */
} ttt_optim_config;

/* Parameters must be persistent with requires_grad. decay may be NULL (decay
 * all) or one flag per parameter (0 = no weight decay, e.g. norms and biases). */
ttt_optimizer *ttt_adamw_new(ttt_ctx *ctx, int n, ttt_tensor *const *params, const int *decay,
                             const ttt_optim_config *cfg);
ttt_optimizer *ttt_sgd_new(ttt_ctx *ctx, int n, ttt_tensor *const *params, const int *decay,
                           const ttt_optim_config *cfg);
/* One update with learning rate lr (< 0: the config's). Parameters without a
 * gradient yet are skipped. */
int ttt_optimizer_step(ttt_optimizer *opt, double lr);
int64_t ttt_optimizer_steps(const ttt_optimizer *opt);
/* The optimizer's state tensors (for checkpoints): *n set to their count. */
ttt_tensor *const *ttt_optimizer_state(const ttt_optimizer *opt, int *n);
int ttt_optimizer_set_steps(ttt_optimizer *opt, int64_t steps);
void ttt_optimizer_free(ttt_optimizer *opt);

/* Linear warmup from 0 to max_lr over warmup steps, then cosine decay to min_lr at total. */
double ttt_lr_warmup_cosine(int64_t step, int64_t warmup, int64_t total, double max_lr, double min_lr);

/* Scale every p->grad so their global L2 norm is at most max_norm (in place,
 * no graph). *norm_out (may be NULL) receives the norm before clipping. */
int ttt_clip_grad_norm(ttt_ctx *ctx, int n, ttt_tensor *const *params, double max_norm, double *norm_out);

#ifdef __cplusplus
}
#endif
#endif
