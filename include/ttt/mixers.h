/* ttt/mixers.h: linear-time sequence mixers, the recurrent baselines of TTT-E2E's
 * long-context comparison (docs/mixers.md): causal linear attention (Katharopoulos
 * et al. 2020) and Gated DeltaNet (Yang, Kautz, Hatamizadeh, arXiv 2412.06464).
 *
 * Two levels each:
 *   - the core recurrence on per-head tensors [B, H, T, d], in a chunkwise form for
 *     training and prefill (matrix products within chunks of C tokens, a short
 *     sequential scan over chunk states) and a recurrent form (one token at a time,
 *     the decode path and the reference the chunkwise form is tested against);
 *   - the whole mixer block on x [B, T, D]: projections, (convolutions, gates, norm),
 *     a parameter struct with init, and a decode state.
 * Everything is composed of the ops in ops.h, so it runs on every backend and is
 * differentiable to any order (gradients of gradients included). Exceptions, with the same
 * functions: ttt_gated_delta_chunked runs as one fused op where the backend has the kernels
 * (backend.h: gdn_chunk_fwd / gdn_chunk_bwd; the CPU, and CUDA in f32 for chunks up to 64),
 * and ttt_ssd_chunked and ttt_linear_attention_chunked as one fused op for both (backend.h:
 * ssd_chunk_fwd / ssd_chunk_bwd; the CPU, and CUDA in f32 with TTT_SSD_CUDA_FUSED=1), unless TTT_FUSED=0; their first-order gradients come
 * from the fused backward, higher orders from the composed form recomputed, so every order is
 * still exact.
 *
 * STATE CONVENTION (every mixer): a head's state S is [dk, dv] and a token reads it
 * with a row query, o_t = q_t^T S_t (the flash-linear-attention layout; the Gated
 * DeltaNet paper writes the transpose, S' = S^T, o = S' q).
 *
 * DTYPES: f32 and f64; bf16 inputs (CUDA) run the core recurrences in f32 (the
 * decays and the triangular inverse need it) and return the output in bf16 and the
 * final states in f32, so a state carried across calls loses nothing to rounding.
 *
 * ERRORS: NULL / TTT_ERR with a message in ttt_error(ctx) naming the argument. */
#ifndef TTT_MIXERS_H
#define TTT_MIXERS_H

#include "ttt/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- causal linear attention: the core -----------------------------------------------------
 * q, k [B, H, T, dk] are feature-mapped already (non-negative, e.g. elu + 1), v [B, H, T, dv]:
 *     S_t = S_{t-1} + k_t v_t^T,   z_t = z_{t-1} + k_t,
 *     o_t = (q_t^T S_t) / (q_t . z_t + eps)                      (token t sees itself)
 * s0 [B, H, dk, dv] and z0 [B, H, dk] are the state before the first token (NULL: zeros).
 * s_out / z_out (may be NULL) receive the state after the last token. Returns o [B, H, T, dv].
 * chunk: C, a power of two (64 is usual); T need not be a multiple of it. */
ttt_tensor *ttt_linear_attention_chunked(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, int64_t chunk,
                                         double eps, ttt_tensor *s0, ttt_tensor *z0, ttt_tensor **s_out,
                                         ttt_tensor **z_out);
/* The same function, token by token (for decode, T = 1, and as the reference). */
ttt_tensor *ttt_linear_attention_recurrent(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, double eps,
                                           ttt_tensor *s0, ttt_tensor *z0, ttt_tensor **s_out, ttt_tensor **z_out);

/* ---- the gated delta rule: the core ------------------------------------------------------------
 * q, k [B, H, T, dk], v [B, H, T, dv], beta [B, H, T] (the writing strength, in (0, 1) in the
 * block), g [B, H, T] (the log of the decay alpha_t = exp(g_t), g <= 0 in the block):
 *     S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,    o_t = q_t^T S_t
 * (the paper's eq. for S_t^T). q is used as given: the block L2-normalizes q and k and
 * scales q by dk^-1/2. s0 [B, H, dk, dv] or NULL (zeros); s_out may be NULL.
 * chunk: C, a power of two. Chunkwise form: the WY representation of the C updates of a
 * chunk, with the unit-lower-triangular inverse (I + strictly_lower(diag(beta) K K^T * decay))^-1
 * built by exact block doubling (no triangular-solve op needed; see gated_deltanet.c). */
ttt_tensor *ttt_gated_delta_chunked(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *beta,
                                    ttt_tensor *g, int64_t chunk, ttt_tensor *s0, ttt_tensor **s_out);
ttt_tensor *ttt_gated_delta_recurrent(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *beta,
                                      ttt_tensor *g, ttt_tensor *s0, ttt_tensor **s_out);

/* ---- the linear-attention block ----------------------------------------------------------------
 *   q, k, v = x Wq^T, x Wk^T, x Wv^T split into H heads of d;  q, k = elu(q) + 1, elu(k) + 1
 *   o = linear_attention(q, k, v) per head;  y = merge(o) Wo^T                  (Katharopoulos)
 * Parameters ([out, in], Hugging Face names): q_proj.weight, k_proj.weight, v_proj.weight
 * [H d, D], o_proj.weight [D, H d]. Init N(0, init_std^2), o_proj N(0, out_std^2). */
enum { TTT_LINATTN_PARAMS = 4, TTT_GDN_PARAMS = 13 };

typedef struct {
    int64_t dim;      /* D */
    int64_t heads;    /* H */
    int64_t head_dim; /* d (dk = dv) */
    int64_t chunk;    /* C of the chunkwise form (power of two) */
    double eps;       /* normaliser eps, 1e-6 */
    double init_std, out_std;
} ttt_linattn_config;
/* D, H; d = D / H, chunk 64, eps 1e-6, init_std 0.02, out_std 0.02. */
ttt_linattn_config ttt_linattn_config_default(int64_t dim, int64_t heads);

typedef struct ttt_linattn {
    ttt_linattn_config cfg;
    ttt_tensor *q_proj, *k_proj, *v_proj, *o_proj;
} ttt_linattn;

/* The decode state: S [B, H, d, d], z [B, H, d] (persistent), pos = tokens read. */
typedef struct ttt_linattn_state {
    int64_t batch, pos;
    ttt_tensor *s, *z;
} ttt_linattn_state;

/* Trainable parameters of a valid config (0 for an invalid one). */
int64_t ttt_linattn_param_count(const ttt_linattn_config *cfg);
int ttt_linattn_init(ttt_ctx *ctx, ttt_linattn *l, const ttt_linattn_config *cfg, ttt_dtype dt);
void ttt_linattn_free(ttt_ctx *ctx, ttt_linattn *l);
/* Parameters in the order above, with their names and weight-decay flags (may be NULL); the count. */
int ttt_linattn_params(const ttt_linattn *l, ttt_tensor **params, const char **names, int *decay);
int ttt_linattn_state_init(ttt_ctx *ctx, const ttt_linattn *l, int64_t batch, ttt_linattn_state *st);
void ttt_linattn_state_free(ttt_ctx *ctx, ttt_linattn_state *st);
/* y [B, T, D] for x [B, T, D] (chunkwise). st NULL: from a zero state. st given (prefill):
 * starts from *st and leaves the state after the last token in it (no gradient flows
 * into or out of the stored state). Weights are cast to x's dtype where they differ. */
ttt_tensor *ttt_linattn_forward(ttt_ctx *ctx, const ttt_linattn *l, ttt_tensor *x, ttt_linattn_state *st);
/* The same through the recurrent form, token by token (decode: x [B, 1, D]). */
ttt_tensor *ttt_linattn_decode(ttt_ctx *ctx, const ttt_linattn *l, ttt_tensor *x, ttt_linattn_state *st);

/* ---- the Gated DeltaNet block (the official GatedDeltaNet layer's structure) ----------------------
 *   q = silu(conv_q(x Wq^T)), k = silu(conv_k(x Wk^T)), v = silu(conv_v(x Wv^T))   causal depthwise
 *       convolutions of conv_size taps (no bias), split into H heads (dk for q, k; dv for v)
 *   q, k = q / sqrt(|q|^2 + 1e-6), k / sqrt(|k|^2 + 1e-6);   q *= dk^-1/2
 *   beta = sigmoid(x Wb^T)                                         [B, T, H]
 *   g    = -exp(A_log) * softplus(x Wa^T + dt_bias)                [B, T, H]   (Mamba-2's gate: alpha = exp(g))
 *   o    = gated_delta(q, k, v, beta, g) per head
 *   o    = rms_norm(o; o_norm, eps) * silu(x Wg^T)  per head over dv (the output gate)
 *   y    = merge(o) Wo^T
 * Parameters: q_proj.weight, k_proj.weight [H dk, D], v_proj.weight [H dv, D], a_proj.weight,
 * b_proj.weight [H, D], A_log [H], dt_bias [H], q_conv1d.weight, k_conv1d.weight [H dk, K],
 * v_conv1d.weight [H dv, K] (tap K-1 multiplies the current token), g_proj.weight [H dv, D],
 * o_norm.weight [dv], o_proj.weight [D, H dv].
 * Init: projections N(0, init_std^2), o_proj N(0, out_std^2); A_log = log U(1, 16);
 * dt_bias = softplus^-1(dt), dt = exp U(log 1e-3, log 1e-1) floored at 1e-4; conv taps
 * U(-K^-1/2, K^-1/2) (PyTorch's Conv1d default); o_norm 1. Weight decay on the
 * projection matrices only. */
typedef struct {
    int64_t dim, heads;
    int64_t head_k_dim, head_v_dim;
    int64_t conv_size; /* K, >= 1 */
    int64_t chunk;     /* C of the chunkwise form (power of two) */
    double norm_eps;   /* 1e-5 */
    double init_std, out_std;
} ttt_gdn_config;
/* D, H; dk = dv = D / H, conv 4, chunk 64, eps 1e-5, init_std 0.02, out_std 0.02. */
ttt_gdn_config ttt_gdn_config_default(int64_t dim, int64_t heads);

typedef struct ttt_gdn {
    ttt_gdn_config cfg;
    ttt_tensor *q_proj, *k_proj, *v_proj, *a_proj, *b_proj, *A_log, *dt_bias;
    ttt_tensor *q_conv, *k_conv, *v_conv, *g_proj, *o_norm, *o_proj;
} ttt_gdn;

/* The decode state: the last K-1 projected inputs of each convolution, conv_q, conv_k
 * [B, K-1, H dk], conv_v [B, K-1, H dv], and S [B, H, dk, dv] (persistent). */
typedef struct ttt_gdn_state {
    int64_t batch, pos;
    ttt_tensor *conv_q, *conv_k, *conv_v, *s;
} ttt_gdn_state;

int64_t ttt_gdn_param_count(const ttt_gdn_config *cfg);
int ttt_gdn_init(ttt_ctx *ctx, ttt_gdn *l, const ttt_gdn_config *cfg, ttt_dtype dt);
void ttt_gdn_free(ttt_ctx *ctx, ttt_gdn *l);
int ttt_gdn_params(const ttt_gdn *l, ttt_tensor **params, const char **names, int *decay);
int ttt_gdn_state_init(ttt_ctx *ctx, const ttt_gdn *l, int64_t batch, ttt_gdn_state *st);
void ttt_gdn_state_free(ttt_ctx *ctx, ttt_gdn_state *st);
ttt_tensor *ttt_gdn_forward(ttt_ctx *ctx, const ttt_gdn *l, ttt_tensor *x, ttt_gdn_state *st);
ttt_tensor *ttt_gdn_decode(ttt_ctx *ctx, const ttt_gdn *l, ttt_tensor *x, ttt_gdn_state *st);

/* ---- Mamba 2's SSD (state space duality): the core ----------------------------------------------
 * q, k [B, H, T, N], v [B, H, T, P], g [B, H, T] (log decay):
 *     S_t = exp(g_t) S_{t-1} + k_t v_t^T,   o_t = q_t^T S_t
 * In Mamba 2's names q = C, k = B, v = dt x, g = dt A (the D skip is the block's). The gated
 * delta rule's chunkwise form without the delta term. s0 [B, H, N, P] or NULL. */
ttt_tensor *ttt_ssd_chunked(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *g, int64_t chunk,
                            ttt_tensor *s0, ttt_tensor **s_out);
ttt_tensor *ttt_ssd_recurrent(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *g, ttt_tensor *s0,
                              ttt_tensor **s_out);

/* ---- the Mamba 2 block (the official Mamba2 module's structure) ---------------------------------
 * Di = expand D inner width, H = Di / P heads of P, G groups of N state dims (H % G == 0):
 *   [z, xBC, dt] = x Win^T                     widths Di, Di + 2 G N, H
 *   xBC = silu(conv(xBC) + conv_bias)         causal depthwise, K taps;  [xs, Bm, Cm] = xBC (Di, G N, G N)
 *   dt  = softplus(dt + dt_bias);  A = -exp(A_log)                    per head
 *   y   = ssd(q = Cm, k = Bm (head h reads group h / (H / G)), v = dt xs, g = dt A) + D xs
 *   y   = rms_norm(y * silu(z)) * norm   over groups of Di / G;   out = y Wout^T
 * Parameters: in_proj.weight [2 Di + 2 G N + H, D], conv1d.weight [Di + 2 G N, K], conv1d.bias
 * [Di + 2 G N], dt_bias [H], A_log [H], D [H], norm.weight [Di], out_proj.weight [D, Di].
 * Init: in_proj N(0, init_std^2), out_proj N(0, out_std^2); conv weight and bias
 * U(-K^-1/2, K^-1/2); dt_bias and A_log as Gated DeltaNet's; D 1; norm 1. */
enum { TTT_MAMBA2_PARAMS = 8 };
typedef struct {
    int64_t dim, d_state, expand, head_dim, groups, conv_size, chunk;
    double norm_eps, init_std, out_std;
} ttt_mamba2_config;
/* D; N 64, expand 2, P 64 (or 2 D when smaller), G 1, K 4, chunk 64, eps 1e-5, 0.02, 0.02. */
ttt_mamba2_config ttt_mamba2_config_default(int64_t dim);

typedef struct ttt_mamba2 {
    ttt_mamba2_config cfg;
    ttt_tensor *in_proj, *conv_w, *conv_b, *dt_bias, *A_log, *D, *norm, *out_proj;
} ttt_mamba2;

/* conv [B, K-1, Di + 2 G N] (the last projected xBC inputs), S [B, H, N, P]. */
typedef struct ttt_mamba2_state {
    int64_t batch, pos;
    ttt_tensor *conv, *s;
} ttt_mamba2_state;

int64_t ttt_mamba2_param_count(const ttt_mamba2_config *cfg);
int ttt_mamba2_init(ttt_ctx *ctx, ttt_mamba2 *l, const ttt_mamba2_config *cfg, ttt_dtype dt);
void ttt_mamba2_free(ttt_ctx *ctx, ttt_mamba2 *l);
int ttt_mamba2_params(const ttt_mamba2 *l, ttt_tensor **params, const char **names, int *decay);
int ttt_mamba2_state_init(ttt_ctx *ctx, const ttt_mamba2 *l, int64_t batch, ttt_mamba2_state *st);
void ttt_mamba2_state_free(ttt_ctx *ctx, ttt_mamba2_state *st);
ttt_tensor *ttt_mamba2_forward(ttt_ctx *ctx, const ttt_mamba2 *l, ttt_tensor *x, ttt_mamba2_state *st);
ttt_tensor *ttt_mamba2_decode(ttt_ctx *ctx, const ttt_mamba2 *l, ttt_tensor *x, ttt_mamba2_state *st);

#ifdef __cplusplus
}
#endif
#endif
