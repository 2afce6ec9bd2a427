/* ttt/mttt.h: the MTTT sequence layer (docs/design.md §1; Sun, Li et al., "Learning to
 * (Learn at Test Time)", arXiv 2310.13807) and its attention baselines.
 *
 * X [B, n, D] -> Z [B, n, D] with H heads of size d = D / H. Non-causal: every
 * token sees all n tokens of its example (the paper's ViT setting).
 *
 * For each example and head, the hidden state is the weight W of a learner f,
 * trained on the n tokens by T gradient steps on a reconstruction loss
 *     l(W; X) = 1/(2n) sum_i || dec(f(phi(x_i); W)) - x_i ||^2,
 *     W_t = W_{t-1} - eta * grad l(W_{t-1}; X),
 * then read out by  z_i = h(f(psi(x_i); W_T))  (heads summed by h). x_i is the
 * whole D-wide token: each head encodes it to d numbers and decodes back to D
 * (as in the official code). dec = g, or LayerNorm(g) for the MLP learner.
 * The outer loop differentiates through every inner step (ttt_grad with
 * create_graph); in evaluation (grad mode off) the inner loop still runs. The MLP
 * learner's step and read-out run as fused kernels where the backend has them (the
 * CPU; src/composed/mttt_step.c), the same math; TTT_FUSED=0 composes them of ops.
 *
 * PARAMETERS (row-vector convention: a token x is a row, a map is x @ W). The
 * D columns of psi_w, phi_w, g_w and the D rows of h_w are split into H
 * blocks of d, block j belonging to head j; so the same four tensors are the
 * query / key / value / output projections of the attention baselines.
 *   psi_w [D, D], psi_b [D]   query map   q = x psi_w + psi_b
 *   phi_w [D, D], phi_b [D]   key map (encoder)   k = x phi_w + phi_b
 *   g_w   [D, D]              value map v = x g_w; decoder of head j:
 *                             g_j(u) = u g_w[:, block j]^T  (d -> D), i.e. v = g^T x
 *   h_w   [D, D], h_b [D]     output: z = sum_j u_j h_w[block j, :] + h_b
 *   MLP learner only (W_0, learned, one per head):
 *   w1 [H, d, 4d], b1 [H, 4d], w2 [H, 4d, d], b2 [H, d]   f(u) = gelu(u w1 + b1) w2 + b2
 *   ln_g [H, D] (=1), ln_b [H, D] (=0)   decoder LayerNorm per head (eps 1e-6)
 * INIT: psi_w, phi_w, g_w, h_w ~ U(-sqrt(3/D), sqrt(3/D)) (variance 1/D);
 * w1, w2 Xavier-uniform per head, U(-sqrt(6/(5d)), sqrt(6/(5d))); biases 0;
 * ln_g 1, ln_b 0. Drawn from the context's RNG in the order listed.
 *
 * LEARNERS (kind TTT_SEQ_MTTT)
 *   LINEAR: f(u; W) = u W, W [d, d], W_0 = 0 (fixed, not a parameter). With
 *     eta = 1, T = 1 and batch GD, W_1 = -grad l(0) = 1/n sum_i k_i^T v_i, so
 *     z_i = h(1/n sum_j v_j (k_j . q_i)): linear attention, identity feature
 *     map, 1/n normaliser (TTT_SEQ_LINEAR_ATTENTION, TTT_FEAT_IDENTITY).
 *   KERNEL: the Nadaraya-Watson estimator with kernel exp(k . q): it is
 *     non-parametric, so training on the tokens means remembering the pairs
 *     (k_j, v_j) (labels v = g^T x, the values the linear learner's gradient
 *     produces), and  f(q) = sum_j exp(k_j . q) v_j / sum_j exp(k_j . q).
 *     CONVENTION: the key map includes the usual scaling, k = phi(x)/sqrt(d),
 *     so this equals softmax self-attention with 1/sqrt(d) (TTT_SEQ_ATTENTION)
 *     exactly. steps, eta and sgd do not apply (no gradient steps).
 *   MLP: f as above, learned W_0, decoder LayerNorm (no_decoder_ln = 1 drops
 *     it, the paper's ablation).
 *   The official code normalises the inner loss by 1/(2 n d) instead of
 *   1/(2n); its behaviour is this layer's with eta divided by d.
 *
 * INNER OPTIMISER
 *   batch GD (sgd = 0): each of the T steps uses all n tokens.
 *   SGD (sgd = 1): the tokens of each (example, head) are put in a random
 *     order (ttt_mttt_sgd_order, from the seed passed to the call, so runs are
 *     deterministic and rematerialization recomputes the same split) and cut
 *     into T consecutive mini-batches, one step each. REMAINDERS: when T does
 *     not divide n, the first n mod T mini-batches take one token more
 *     (sizes differ by at most 1); each step's loss is normalised by its own
 *     mini-batch size m: 1/(2m) sum over the mini-batch. SGD needs n >= T.
 *
 * BASELINES (same psi/phi/g/h tensors as query/key/value/output):
 *   TTT_SEQ_ATTENTION: softmax(q k^T / sqrt(d)) v, non-causal.
 *   TTT_SEQ_LINEAR_ATTENTION: TTT_FEAT_IDENTITY: 1/n sum_j v_j (k_j . q_i);
 *     TTT_FEAT_ELU1 (phi = elu + 1): sum_j v_j (phi(k_j).phi(q_i)) / sum_j phi(k_j).phi(q_i).
 */
#ifndef TTT_MTTT_H
#define TTT_MTTT_H

#include "ttt/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { TTT_MTTT_MAX_STEPS = 8, TTT_MTTT_MAX_PARAMS = 13 };

typedef enum { TTT_SEQ_MTTT = 0, TTT_SEQ_ATTENTION = 1, TTT_SEQ_LINEAR_ATTENTION = 2 } ttt_seq_kind;
typedef enum { TTT_MTTT_LINEAR = 0, TTT_MTTT_KERNEL = 1, TTT_MTTT_MLP = 2 } ttt_mttt_learner;
typedef enum { TTT_FEAT_IDENTITY = 0, TTT_FEAT_ELU1 = 1 } ttt_feature_map;

typedef struct {
    ttt_seq_kind kind;
    ttt_mttt_learner learner; /* TTT_SEQ_MTTT only */
    ttt_feature_map feature;  /* TTT_SEQ_LINEAR_ATTENTION only */
    int64_t dim;              /* D */
    int64_t heads;            /* H, must divide D */
    int steps;                /* T, 0..TTT_MTTT_MAX_STEPS (LINEAR and MLP learners) */
    double eta;               /* inner learning rate */
    int sgd;                  /* 0: batch GD, 1: SGD over T random mini-batches */
    int no_decoder_ln;        /* MLP learner: 1 = no decoder LayerNorm */
} ttt_mttt_config;

/* kind, learner (ignored unless kind is TTT_SEQ_MTTT), D, H; T = 1, eta = 1,
 * batch GD, identity feature map, decoder LN on. */
ttt_mttt_config ttt_mttt_config_default(ttt_seq_kind kind, ttt_mttt_learner learner, int64_t dim, int64_t heads);

typedef struct {
    ttt_mttt_config cfg;
    ttt_tensor *psi_w, *psi_b, *phi_w, *phi_b, *g_w, *h_w, *h_b; /* every kind */
    ttt_tensor *w1, *b1, *w2, *b2;                              /* MLP learner, else NULL */
    ttt_tensor *ln_g, *ln_b;                                    /* MLP learner with decoder LN, else NULL */
} ttt_mttt;

/* Allocate and initialise the parameters (persistent, dtype TTT_F32 or TTT_F64). */
int ttt_mttt_init(ttt_ctx *ctx, ttt_mttt *l, const ttt_mttt_config *cfg, ttt_dtype dt);
void ttt_mttt_free(ttt_ctx *ctx, ttt_mttt *l);
/* The trainable parameters in a fixed order (psi_w, psi_b, phi_w, phi_b, g_w,
 * h_w, h_b, then w1, b1, w2, b2, ln_g, ln_b where present): writes up to
 * TTT_MTTT_MAX_PARAMS tensors to params and, if decay is not NULL, a weight
 * decay flag for each (1 for matrices, 0 for biases and LN, as in the paper's
 * recipe). Returns the count. */
int ttt_mttt_params(const ttt_mttt *l, ttt_tensor **params, int *decay);

typedef struct {
    uint64_t seed;      /* SGD mini-batch split (use a new one per training step) */
    int checkpoint;     /* 1: rematerialize each inner step in the backward pass */
    double *inner_loss; /* optional, steps + 1 values: the inner loss before each step (on that
                           step's tokens) and after the last (on all n), averaged over batch and
                           heads. Written by the LINEAR and MLP learners only. */
} ttt_mttt_run_opts;

/* Z = layer(X) for x [B, n, D]; opts may be NULL (seed 0, no checkpoint). */
ttt_tensor *ttt_mttt_forward(ttt_ctx *ctx, const ttt_mttt *l, ttt_tensor *x, const ttt_mttt_run_opts *opts);

/* The adapted weights W_T per (example, head) (LINEAR and MLP learners):
 * LINEAR n = 1: W [B, H, d, d]; MLP n = 4: w1 [B, H, d, 4d], b1 [B, H, 1, 4d],
 * w2 [B, H, 4d, d], b2 [B, H, 1, d]. */
typedef struct {
    int n;
    ttt_tensor *w[4];
} ttt_mttt_state;
int ttt_mttt_adapt(ttt_ctx *ctx, const ttt_mttt *l, ttt_tensor *x, const ttt_mttt_run_opts *opts,
                   ttt_mttt_state *state);
/* The full-sequence inner loss l(W; X) at state, averaged over batch and heads (a scalar). */
ttt_tensor *ttt_mttt_inner_loss(ttt_ctx *ctx, const ttt_mttt *l, ttt_tensor *x, const ttt_mttt_state *state);

/* The SGD token order: order[(b * H + h) * n + i] is the i-th token that
 * head h of example b visits (a permutation of 0..n-1 per (b, h)). */
void ttt_mttt_sgd_order(uint64_t seed, int64_t batch, int64_t heads, int64_t n, int32_t *order);

#ifdef __cplusplus
}
#endif
#endif
