/* Helpers shared by the sequence mixers (linear_attention.c, gated_deltanet.c,
 * mixer_util.c). Private to src/layers. */
#ifndef TTT_MIXERS_INTERNAL_H
#define TTT_MIXERS_INTERNAL_H

#include <stdint.h>

#include "../core/engine_private.h"

/* The chunk a call uses: chunk (a power of two, checked by the caller), or the smallest
 * power of two >= T when T is shorter, so short calls do not pad to a whole chunk. */
int64_t ttt__mx_chunk_len(int64_t chunk, int64_t T);
/* 0 when chunk is a power of two >= 1, else an error naming fn. */
int ttt__mx_check_chunk(ttt_ctx *ctx, const char *fn, int64_t chunk);
/* x with zeros appended along axis up to length n (x itself when it is that long). */
ttt_tensor *ttt__mx_pad(ttt_ctx *ctx, ttt_tensor *x, int axis, int64_t n);
/* The chunk-state scan S_c = A_c S_{c-1} + B_c (A = NULL: the identity) over the chunk axis 2
 * of B [b, h, N, dk, dv] (A [b, h, N, dk, dk], or [b, h, N, 1, 1]: a scalar per chunk) from s0 [b, h, dk, dv]: *prev [b, h, N, dk, dv]
 * holds the state before each chunk, *last the state after the last. TTT_OK / TTT_ERR. */
int ttt__mx_state_scan(ttt_ctx *ctx, ttt_tensor *A, ttt_tensor *B, ttt_tensor *s0, ttt_tensor **prev,
                       ttt_tensor **last);
/* x [B, T, D] -> [B, H, T, D / H], and back. */
ttt_tensor *ttt__mx_split_heads(ttt_ctx *ctx, ttt_tensor *x, int64_t heads);
ttt_tensor *ttt__mx_merge_heads(ttt_ctx *ctx, ttt_tensor *o);
/* p cast to dt where it differs (mixed precision). */
ttt_tensor *ttt__mx_as(ttt_ctx *ctx, ttt_tensor *p, ttt_dtype dt);
/* x w^T for x [..., in], w [out, in] (w cast to x's dtype). */
ttt_tensor *ttt__mx_linear(ttt_ctx *ctx, ttt_tensor *x, ttt_tensor *w);
/* x / sqrt(sum(x^2, last axis) + eps) */
ttt_tensor *ttt__mx_l2norm(ttt_ctx *ctx, ttt_tensor *x, double eps);
/* log(1 + exp(x)), written as relu(x) + log(1 + exp(-|x|)) so it never overflows. */
ttt_tensor *ttt__mx_softplus(ttt_ctx *ctx, ttt_tensor *x);
/* Causal depthwise convolution of x [B, T, C] with taps w [C, K] (tap K-1 on the current
 * token), preceded by hist [B, K-1, C] (NULL: zeros): y_t = sum_j w[:, j] x_{t-K+1+j}.
 * *hist_out (may be NULL) receives the last K-1 inputs, the next call's history. */
ttt_tensor *ttt__mx_short_conv(ttt_ctx *ctx, ttt_tensor *x, ttt_tensor *w, ttt_tensor *hist, ttt_tensor **hist_out);
/* A step-temporary copy of a persistent state tensor in dtype dt (a graph must not read
 * memory that the state update overwrites). */
ttt_tensor *ttt__mx_snapshot(ttt_ctx *ctx, const ttt_tensor *t, ttt_dtype dt);
/* A persistent parameter: N(0, std^2) when std > 0, U(lo, hi) when std == 0 and lo < hi,
 * else every entry = lo. */
int ttt__mx_param(ttt_ctx *ctx, ttt_tensor **p, ttt_dtype dt, int ndim, const int64_t *shape, const char *name,
                  double std, double lo, double hi);
/* Mamba 2's gate parameters from their draws: A_log holds U(1, 16) and becomes its log;
 * dt_bias holds U(log 1e-3, log 1e-1) and becomes softplus^-1(max(exp(.), 1e-4)). */
int ttt__mx_init_gate(ttt_ctx *ctx, ttt_tensor *A_log, ttt_tensor *dt_bias);
/* A persistent zero state tensor. */
int ttt__mx_zero_state(ttt_ctx *ctx, ttt_tensor **p, ttt_dtype dt, int ndim, const int64_t *shape, const char *name);
/* Checks x [B, T, dim] (T >= 1, float); TTT_OK or an error naming fn. */
int ttt__mx_check_x(ttt_ctx *ctx, const char *fn, const ttt_tensor *x, int64_t dim);

/* The decayed recurrence of gated_deltanet.c, S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1}
 * + beta_t k_t v_t^T with alpha = exp(g), o_t = q_t^T S_t; beta == NULL drops the delta rule:
 * S_t = alpha_t S_{t-1} + k_t v_t^T (Mamba 2's SSD). fn names the caller in errors. */
ttt_tensor *ttt__mx_decay_chunked(ttt_ctx *ctx, const char *fn, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v,
                                  ttt_tensor *beta, ttt_tensor *g, int64_t chunk, ttt_tensor *s0, ttt_tensor **s_out);
/* The decayed recurrence's argument check (shapes, dtypes, s0) for a caller that goes another way first. */
int ttt__mx_check_decay(ttt_ctx *ctx, const char *fn, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *beta,
                        ttt_tensor *g, ttt_tensor *s0);
ttt_tensor *ttt__mx_decay_recurrent(ttt_ctx *ctx, const char *fn, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v,
                                    ttt_tensor *beta, ttt_tensor *g, ttt_tensor *s0, ttt_tensor **s_out);

#endif
