/* ttt/ops.h: the differentiable ops.
 *
 * Every op validates its inputs (NULL + message on error, see tensor.h), runs
 * on the inputs' device, and -- when grad mode is on and an input requires
 * grad -- records a node whose vector-Jacobian product is itself written with
 * these ops. Gradients are therefore differentiable again, to any order.
 *
 * Conventions
 *   - Elementwise binary ops broadcast numpy-style.
 *   - axis arguments may be negative (counted from the end).
 *   - Ops take f32, f64 and (on CUDA) bf16; a bf16 op stores bf16 and computes in
 *     f32 (reductions, norms and losses in f64; matmuls accumulate in f32). On the
 *     CPU bf16 is a storage type only (ttt_cast); its kernels report the dtype.
 *   - Index tensors (embedding ids, targets) are TTT_I32.
 *   - Comparison ops return 0/1 masks of the inputs' dtype and carry no gradient.
 */
#ifndef TTT_OPS_H
#define TTT_OPS_H

#include "ttt/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Elementwise binary (broadcasting) */
ttt_tensor *ttt_add(ttt_ctx *ctx, ttt_tensor *a, ttt_tensor *b);
ttt_tensor *ttt_sub(ttt_ctx *ctx, ttt_tensor *a, ttt_tensor *b);
ttt_tensor *ttt_mul(ttt_ctx *ctx, ttt_tensor *a, ttt_tensor *b);
ttt_tensor *ttt_div(ttt_ctx *ctx, ttt_tensor *a, ttt_tensor *b);
ttt_tensor *ttt_maximum(ttt_ctx *ctx, ttt_tensor *a, ttt_tensor *b); /* ties: gradient to a */
ttt_tensor *ttt_minimum(ttt_ctx *ctx, ttt_tensor *a, ttt_tensor *b); /* ties: gradient to a */
ttt_tensor *ttt_gt(ttt_ctx *ctx, ttt_tensor *a, ttt_tensor *b);      /* masks, no gradient */
ttt_tensor *ttt_ge(ttt_ctx *ctx, ttt_tensor *a, ttt_tensor *b);
ttt_tensor *ttt_eq(ttt_ctx *ctx, ttt_tensor *a, ttt_tensor *b);

/* Elementwise unary */
ttt_tensor *ttt_neg(ttt_ctx *ctx, ttt_tensor *x);
ttt_tensor *ttt_exp(ttt_ctx *ctx, ttt_tensor *x);
ttt_tensor *ttt_log(ttt_ctx *ctx, ttt_tensor *x);
ttt_tensor *ttt_tanh(ttt_ctx *ctx, ttt_tensor *x);
ttt_tensor *ttt_sigmoid(ttt_ctx *ctx, ttt_tensor *x);
ttt_tensor *ttt_gelu(ttt_ctx *ctx, ttt_tensor *x); /* tanh approximation */
ttt_tensor *ttt_silu(ttt_ctx *ctx, ttt_tensor *x);
/* Their derivatives at x, in one pass each (what their gradients use; differentiable again) */
ttt_tensor *ttt_gelu_grad(ttt_ctx *ctx, ttt_tensor *x);
ttt_tensor *ttt_silu_grad(ttt_ctx *ctx, ttt_tensor *x);
ttt_tensor *ttt_relu(ttt_ctx *ctx, ttt_tensor *x);
ttt_tensor *ttt_sqrt(ttt_ctx *ctx, ttt_tensor *x);
ttt_tensor *ttt_rsqrt(ttt_ctx *ctx, ttt_tensor *x);
ttt_tensor *ttt_abs(ttt_ctx *ctx, ttt_tensor *x);
ttt_tensor *ttt_sign(ttt_ctx *ctx, ttt_tensor *x);                   /* no gradient */
ttt_tensor *ttt_pow(ttt_ctx *ctx, ttt_tensor *x, double p);
ttt_tensor *ttt_clamp(ttt_ctx *ctx, ttt_tensor *x, double lo, double hi);
ttt_tensor *ttt_scale(ttt_ctx *ctx, ttt_tensor *x, double a);        /* a * x */
ttt_tensor *ttt_add_scalar(ttt_ctx *ctx, ttt_tensor *x, double b);   /* x + b */
ttt_tensor *ttt_elu1(ttt_ctx *ctx, ttt_tensor *x);                   /* elu(x) + 1 (linear-attention feature map) */
/* SwiGLU's gate: silu(a) * b for a, b of one shape and dtype (no broadcasting), in one pass; its
 * first-order gradient is one fused pass too (a composed, differentiable one under create_graph). In f32 and
 * f64 the values are those of ttt_mul(ttt_silu(a), b); bf16 rounds once instead of twice. */
ttt_tensor *ttt_swiglu(ttt_ctx *ctx, ttt_tensor *a, ttt_tensor *b);

/* Reductions over axes. axes == NULL with n_axes == 0 reduces over all axes. */
ttt_tensor *ttt_sum(ttt_ctx *ctx, ttt_tensor *x, int n_axes, const int *axes, int keepdim);
ttt_tensor *ttt_mean(ttt_ctx *ctx, ttt_tensor *x, int n_axes, const int *axes, int keepdim);
ttt_tensor *ttt_max(ttt_ctx *ctx, ttt_tensor *x, int n_axes, const int *axes, int keepdim); /* ties share the gradient */
/* Sum the broadcast axes of x down to shape (the reverse of ttt_expand). */
ttt_tensor *ttt_sum_to(ttt_ctx *ctx, ttt_tensor *x, int ndim, const int64_t *shape);

/* Matrix product: batched, numpy broadcasting over leading axes.
 * C[..., M, N] = op(A)[..., M, K] op(B)[..., K, N], op = transpose if the flag is set. */
ttt_tensor *ttt_matmul(ttt_ctx *ctx, ttt_tensor *a, ttt_tensor *b, int trans_a, int trans_b);

/* Normalisation and probabilities (along the last axis) */
ttt_tensor *ttt_softmax(ttt_ctx *ctx, ttt_tensor *x);
ttt_tensor *ttt_log_softmax(ttt_ctx *ctx, ttt_tensor *x);
/* gamma / beta may be NULL (no affine); shapes [D] for x [..., D]. With gamma the norm and the product are
 * one kernel forward and one backward (the values of the norm followed by ttt_mul, in every dtype). */
ttt_tensor *ttt_layer_norm(ttt_ctx *ctx, ttt_tensor *x, ttt_tensor *gamma, ttt_tensor *beta, double eps);
ttt_tensor *ttt_rms_norm(ttt_ctx *ctx, ttt_tensor *x, ttt_tensor *gamma, double eps);
/* Mean cross-entropy of logits [..., V] against I32 targets [...]; targets equal
 * to ignore_index do not count (the mean is over the others; 0 if none). The loss
 * has the logits' dtype, except f32 for bf16 logits (read as they are, summed in f32;
 * their gradient comes back in bf16). */
ttt_tensor *ttt_cross_entropy(ttt_ctx *ctx, ttt_tensor *logits, ttt_tensor *targets, int ignore_index);
/* The per-row losses [...] behind it (0 where ignored): loss by position. */
ttt_tensor *ttt_cross_entropy_rows(ttt_ctx *ctx, ttt_tensor *logits, ttt_tensor *targets, int ignore_index);

/* Embedding rows: table [V, D], ids I32 [...] -> [..., D]; VJP is a scatter-add. */
ttt_tensor *ttt_embedding(ttt_ctx *ctx, ttt_tensor *table, ttt_tensor *ids);
/* out [n_rows, D] = 0, then out[ids[i]] += src[i]; inverse of ttt_embedding. */
ttt_tensor *ttt_scatter_add_rows(ttt_ctx *ctx, ttt_tensor *src, ttt_tensor *ids, int64_t n_rows);
/* Rotary position embedding on x [..., T, ..., D] with the sequence at seq_axis:
 * rotate-half pairing (i, i + D/2), position = pos0 + t, frequency theta^(-2i/D). */
ttt_tensor *ttt_rope(ttt_ctx *ctx, ttt_tensor *x, int seq_axis, int64_t pos0, double theta);
/* Attention-score mask on x [..., Tq, Tk]: query i (absolute position q_offset + i)
 * sees key j iff j <= q_offset + i and (window <= 0 or q_offset + i - j < window).
 * Hidden entries become fill (e.g. -INFINITY before softmax). */
ttt_tensor *ttt_attn_mask(ttt_ctx *ctx, ttt_tensor *x, int64_t window, int64_t q_offset, double fill);

/* Scaled dot-product attention: q [..., Tq, d], k [..., Tk, d], v [..., Tk, dv]
 * -> [..., Tq, dv] = softmax(scale q k^T + mask) v; scale <= 0 means 1/sqrt(d).
 * causal: query i sits at absolute position (Tk - Tq) + i (the last Tq of the
 * keys, as with a KV cache) and sees keys j <= its position; window > 0 (causal
 * only) also hides keys at or beyond window positions back. Long sequences run in
 * query blocks; with a window each block touches only the keys it can see, so
 * cost and memory grow with Tq * window. Differentiable to any order. */
ttt_tensor *ttt_attention(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, int causal, int64_t window,
                          double scale);

/* Selection */
ttt_tensor *ttt_where(ttt_ctx *ctx, ttt_tensor *cond, ttt_tensor *a, ttt_tensor *b); /* cond != 0 ? a : b */
ttt_tensor *ttt_masked_fill(ttt_ctx *ctx, ttt_tensor *x, ttt_tensor *mask, double value);

/* Shape (views where possible) */
ttt_tensor *ttt_reshape(ttt_ctx *ctx, ttt_tensor *x, int ndim, const int64_t *shape); /* one -1 allowed */
ttt_tensor *ttt_permute(ttt_ctx *ctx, ttt_tensor *x, const int *perm);
ttt_tensor *ttt_transpose(ttt_ctx *ctx, ttt_tensor *x, int axis0, int axis1);
ttt_tensor *ttt_slice(ttt_ctx *ctx, ttt_tensor *x, int axis, int64_t start, int64_t stop, int64_t step);
ttt_tensor *ttt_expand(ttt_ctx *ctx, ttt_tensor *x, int ndim, const int64_t *shape);
ttt_tensor *ttt_concat(ttt_ctx *ctx, int n, ttt_tensor *const *xs, int axis);
ttt_tensor *ttt_stack(ttt_ctx *ctx, int n, ttt_tensor *const *xs, int axis);
ttt_tensor *ttt_contiguous(ttt_ctx *ctx, ttt_tensor *x);
ttt_tensor *ttt_cast(ttt_ctx *ctx, ttt_tensor *x, ttt_dtype dt);
/* Inverse of ttt_slice: a zero tensor of full_shape with src placed at the slice. */
ttt_tensor *ttt_slice_scatter(ttt_ctx *ctx, ttt_tensor *src, int ndim, const int64_t *full_shape,
                              int axis, int64_t start, int64_t step);

/* Differentiable global-norm clipping (used inside inner loops, e.g. TTT-E2E):
 * out[i] = xs[i] * min(1, max_norm / (||xs||_2 + 1e-6)). norm_out may be NULL. */
int ttt_clip_by_global_norm(ttt_ctx *ctx, int n, ttt_tensor *const *xs, double max_norm,
                            ttt_tensor **out, ttt_tensor **norm_out);
/* One SGD step with a global-norm clip per sequence (TTT-E2E's inner update, optax's clip_by_global_norm on each
 * sequence): for n >= 1 pairs w[i], g[i] of one shape, [B, ...] with B sequences on the leading axis (B shared by
 * every pair, one float dtype), out[i] = w[i] - eta s_b g[i] on sequence b, s_b = clip / max(N_b, clip) and
 * N_b = sqrt(sum_i |g[i][b]|^2); clip <= 0: no clipping (s_b = 1). eta and clip finite. Differentiable in w and g
 * to any order (a tie N_b == clip differentiates as clipped, as ttt_maximum does); with the backend's kernels the
 * step and its first-order gradient are two passes each. */
int ttt_clip_step(ttt_ctx *ctx, int n, ttt_tensor *const *w, ttt_tensor *const *g, double eta, double clip,
                  ttt_tensor **out);

#ifdef __cplusplus
}
#endif
#endif
