/* ttt/ttt_rnn.h: TTT-Linear and TTT-MLP, the sequence-modeling layers of "Learning to
 * (Learn at Test Time): RNNs with Expressive Hidden States" (Sun et al., arXiv 2407.04620;
 * docs/design.md §2), parameterized as the official code (ttt-lm-jax / ttt-lm-pytorch).
 *
 * Per head h (head_dim d), the hidden state is the weights W of a small learner
 *     f(x; W) = x + LN_h(f_res(x; W)),  f_res linear (x W1 + b1) or MLP (gelu(x W1 + b1) W2 + b2, 4d wide)
 * trained at test time on the key-value binding loss of each token
 *     l(W; t) = 1/2 || f(k_t; W) - v_t ||^2        (LN_h: a per-head LayerNorm, learned gain and bias)
 * in mini-batches of b tokens (b = 16): every token of a mini-batch takes its gradient at the
 * weights W_0 of the mini-batch's start, and token i (1-based within the mini-batch) reads
 *     W_i = W_0 - tok_i * sum_{j <= i} eta_j grad l(W_0; j),   z_i = f(q_i; W_i)
 *     eta_j = base_lr * sigmoid(x_j . w_lr,h + b_lr,h) / d      (base_lr 1 Linear, 0.1 MLP)
 *     tok_i = max(0, 1/i + offset_i)                            (offset learned, initially 0)
 * and the next mini-batch starts from W_b. The dual form computes a whole mini-batch with
 * matrix products (training, prefill); the primal form materializes W_i token by token
 * (decode). Both are written with the engine's ops, so the outer gradient flows through every
 * inner step on any backend. TTT-Linear runs its whole mini-batches (training, prefill) as one
 * fused op instead, a kernel with the state on chip where the backend has one, the same math
 * (docs/mixers.md; TTT_FUSED=0 in the environment keeps the composed ops).
 *
 * The layer, for x [B, T, D] (already normed by the block):
 *   transformer backbone: q, k, v = x Wq^T, x Wk^T, x Wv^T
 *   mamba backbone:       u = x Wq^T; q, k = causal depthwise conv_q(u), conv_k(u) (kernel 4, bias); v = x Wv^T
 *   per head: q, k rotated by RoPE at the position within the mini-batch (t mod b)
 *   z = TTT(q, k, v; eta) [B, T, D];  z = LayerNorm(z; post_norm)
 *   mamba backbone: z = gelu(x Wg^T) * z      (the output gate; gelu is the tanh approximation)
 *   out = z Wo^T
 *
 * PARAMETERS (names are suffixes the model prefixes; [out, in] weights as nn.Linear):
 *   q_proj.weight [D, D], k_proj.weight [D, D] (transformer only), v_proj.weight, o_proj.weight,
 *   conv_q.weight [D, 4], conv_q.bias [D], conv_k.weight, conv_k.bias, g_proj.weight [D, D] (mamba only),
 *   ttt_lr.weight [H, D], ttt_lr.bias [H], token_idx_offset [b], ttt_norm.weight [H, d],
 *   ttt_norm.bias [H, d], W1 [H, d, F], b1 [H, 1, F], W2 [H, F, d], b2 [H, 1, d] (MLP only; F = 4d,
 *   Linear F = d), post_norm.weight [D], post_norm.bias [D].
 * INIT: projections, W1 and ttt_lr.weight N(0, std^2); o_proj and W2 N(0, out_std^2); conv weights
 * N(0, 1/4) (lecun normal of a width-4 depthwise kernel), biases 0, norm gains 1, offsets 0.
 * Weight decay: the projections, W1 and W2. */
#ifndef TTT_TTT_RNN_H
#define TTT_TTT_RNN_H

#include "ttt/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { TTT_RNN_LINEAR = 0, TTT_RNN_MLP = 1 } ttt_rnn_kind;
typedef enum { TTT_RNN_TRANSFORMER = 0, TTT_RNN_MAMBA = 1 } ttt_rnn_backbone;

enum { TTT_RNN_CONV = 4, TTT_RNN_MAX_PARAMS = 24 };

typedef struct {
    ttt_rnn_kind kind;
    ttt_rnn_backbone backbone;
    int64_t dim, heads;  /* D, H; head dim d = D / H, even (RoPE) */
    int64_t mini_batch;  /* b (16) */
    double base_lr;      /* <= 0: the kind's default (1.0 Linear, 0.1 MLP) */
    double rope_theta;   /* 10000 */
} ttt_rnn_config;

typedef struct ttt_rnn {
    ttt_rnn_config cfg; /* as validated (base_lr resolved) */
    ttt_tensor *q, *k, *v, *o, *g;
    ttt_tensor *conv_q_w, *conv_q_b, *conv_k_w, *conv_k_b;
    ttt_tensor *lr_w, *lr_b, *tok_offset, *ln_w, *ln_b;
    ttt_tensor *w1, *b1, *w2, *b2; /* w2, b2 NULL for Linear */
    ttt_tensor *post_w, *post_b;
    ttt_tensor *tok_base; /* [b]: 1/i, i = 1..b (persistent, not a parameter: no upload per step, CUDA graphs) */
    int n_params; /* the parameters in the order of the list above, with name suffixes and decay flags */
    ttt_tensor *params[TTT_RNN_MAX_PARAMS];
    const char *names[TTT_RNN_MAX_PARAMS];
    int decay[TTT_RNN_MAX_PARAMS];
} ttt_rnn;

/* Validates cfg, allocates and initialises the parameters (persistent, f32 or f64). */
int ttt_rnn_init(ttt_ctx *ctx, ttt_rnn *l, const ttt_rnn_config *cfg, ttt_dtype dt, double std, double out_std);
void ttt_rnn_free(ttt_ctx *ctx, ttt_rnn *l); /* NULL ok */
int64_t ttt_rnn_param_count(const ttt_rnn_config *cfg);

/* What the layer has read: per sequence and head, the weights W_0 at the start of the current
 * mini-batch, the sums G = sum_j eta_j grad l(W_0; j) over the part of it already read, the
 * conv inputs of the last 3 positions (mamba backbone), and the position. Persistent tensors. */
typedef struct ttt_rnn_state {
    int64_t batch, pos;
    int n_w;              /* 2 Linear (W1, b1), 4 MLP (W1, b1, W2, b2) */
    ttt_tensor *w[4];     /* [B, H, ...] */
    ttt_tensor *g[4];     /* the same shapes */
    ttt_tensor *conv_tail; /* [B, 3, D] (mamba) or NULL */
} ttt_rnn_state;

int ttt_rnn_state_init(ttt_ctx *ctx, const ttt_rnn *l, ttt_rnn_state *s, int64_t batch); /* at position 0, W_0 */
int ttt_rnn_state_reset(ttt_ctx *ctx, const ttt_rnn *l, ttt_rnn_state *s);
int ttt_rnn_state_copy(ttt_ctx *ctx, ttt_rnn_state *dst, const ttt_rnn_state *src);
void ttt_rnn_state_free(ttt_ctx *ctx, ttt_rnn_state *s); /* NULL ok */

/* The layer over x [B, T, D] from position 0 and the learned W_0 -> [B, T, D]. primal = 0: the
 * dual form, a mini-batch at a time (a last partial one as well); primal = 1: the primal form,
 * token by token (the same function, for tests). Differentiable (to any order) in every
 * parameter and x. */
ttt_tensor *ttt_rnn_forward(ttt_ctx *ctx, const ttt_rnn *l, ttt_tensor *x, int primal);
/* The next T tokens x [B, T, D] after the state's positions: whole mini-batches in the dual
 * form, tokens of a partial one in the primal form; updates the state. No graph is kept. Equal
 * (to rounding) to the last T rows of a forward pass over everything read so far. */
ttt_tensor *ttt_rnn_decode(ttt_ctx *ctx, const ttt_rnn *l, ttt_rnn_state *s, ttt_tensor *x);

/* Causal depthwise convolution over time: x [B, T, C], w [C, K], bias [C] (may be NULL), tail
 * [B, K-1, C] the inputs before x (NULL: zeros) -> y [B, T, C], y_t = bias + sum_j w[:, j] x_{t-K+1+j}.
 * *new_tail (may be NULL) receives the last K-1 inputs. Differentiable. */
ttt_tensor *ttt_causal_conv(ttt_ctx *ctx, ttt_tensor *x, ttt_tensor *w, ttt_tensor *bias, ttt_tensor *tail,
                            ttt_tensor **new_tail);

#ifdef __cplusplus
}
#endif
#endif
