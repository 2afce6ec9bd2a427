/* ttt/vit.h: a ViT image classifier whose sequence layer is MTTT or one of its
 * attention baselines (docs/design.md §1; the paper's ViT setting, non-causal).
 *
 *   tokens [B, n, token_dim]
 *     -> x = tokens embed_w + embed_b                      [B, n, D]
 *     -> x = x + pos                                        (learned, or fixed 2-D sin-cos)
 *     -> depth x pre-norm block:
 *          x = x + seq(LN1(x))                              (ttt_mttt_forward, one layer per block)
 *          x = x + fc2(gelu(fc1(LN2(x))))                   (hidden mlp_ratio * D)
 *     -> LN(x), mean over the n tokens                      [B, D]
 *     -> logits = . head_w + head_b                         [B, classes]
 * LayerNorm eps is 1e-6 (flax's default, as in the official code); GELU is
 * the tanh approximation (ttt_gelu).
 *
 * PARAMETERS AND NAMES (row-vector convention, a map is x @ W; the names are
 * the checkpoint keys, dotted as in Hugging Face files):
 *   embed.w [token_dim, D], embed.b [D]
 *   pos [n, D]                                  learned positions only
 *   blocks.i.norm1.g / .b [D]
 *   blocks.i.seq.<psi_w|psi_b|phi_w|phi_b|g_w|h_w|h_b|w1|b1|w2|b2|ln_g|ln_b>
 *                                               the MTTT layer's own tensors (mttt.h)
 *   blocks.i.norm2.g / .b [D]
 *   blocks.i.mlp.fc1.w [D, rD], .fc1.b [rD], .fc2.w [rD, D], .fc2.b [D]
 *   norm.g / .b [D], head.w [D, classes], head.b [classes]
 * Weight decay flags: 1 for the maps (embed.w, the sequence layer's matrices
 * as ttt_mttt_params reports them, fc1.w, fc2.w, head.w); 0 for biases, norms
 * and the position table (a table, not a map).
 *
 * INIT (from the context's RNG, in the order listed above):
 *   embed.w, head.w ~ N(0, 0.02^2) truncated at 2 standard deviations; learned
 *   pos ~ N(0, 0.02^2) truncated likewise; fc1.w, fc2.w Xavier-uniform
 *   U(-sqrt(6/(D + rD)), +); the sequence layer as in mttt.h; biases 0; norm
 *   gains 1.
 *   Fixed positions (TTT_VIT_POS_SINCOS): the tokens are a sqrt(n) x sqrt(n)
 *   grid in row-major order (what ttt_vision_tokens makes), and, with
 *   q = D/4 and w_j = 10000^(-j/q), token (r, c) gets
 *   [sin(c w_j) | cos(c w_j) | sin(r w_j) | cos(r w_j)], j = 0..q-1 (big_vision's
 *   posemb_sincos_2d). It is a persistent tensor, not a parameter.
 *
 * Every entry point validates its arguments: NULL / TTT_ERR with a message in
 * ttt_error(ctx), never an abort. */
#ifndef TTT_VIT_H
#define TTT_VIT_H

#include "ttt/mttt.h"
#include "ttt/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { TTT_VIT_POS_LEARNED = 0, TTT_VIT_POS_SINCOS = 1 } ttt_vit_pos;

typedef struct {
    int64_t token_dim;   /* features per token: P*P for PxP patches, 1 for pixels */
    int64_t n_tokens;    /* n */
    int64_t dim;         /* D */
    int64_t depth;       /* blocks, >= 1 */
    int64_t heads;       /* H, divides D */
    int64_t mlp_ratio;   /* MLP hidden = mlp_ratio * D (4) */
    int64_t classes;     /* >= 2 */
    ttt_vit_pos pos;
    /* The sequence layer: kind, learner, steps, eta, sgd, feature,
     * no_decoder_ln are used; seq.dim and seq.heads must be 0 (take D and H) or
     * equal to dim and heads. */
    ttt_mttt_config seq;
} ttt_vit_config;

/* D, depth, H, the sequence layer's kind and learner for n tokens of token_dim
 * features: mlp_ratio 4, 10 classes, learned positions, seq defaults of
 * ttt_mttt_config_default (T = 1, eta = 1, batch GD). */
ttt_vit_config ttt_vit_config_default(int64_t token_dim, int64_t n_tokens, int64_t dim, int64_t depth, int64_t heads,
                                      ttt_seq_kind kind, ttt_mttt_learner learner);

typedef struct {
    ttt_tensor *norm1_g, *norm1_b;
    ttt_mttt seq;
    ttt_tensor *norm2_g, *norm2_b;
    ttt_tensor *fc1_w, *fc1_b, *fc2_w, *fc2_b;
} ttt_vit_block;

typedef struct {
    ttt_vit_config cfg;          /* as validated; seq.dim / seq.heads filled in */
    ttt_tensor *embed_w, *embed_b;
    ttt_tensor *pos;             /* [n, D]: a parameter (learned) or a persistent constant (sin-cos) */
    ttt_vit_block *blocks;       /* depth blocks */
    ttt_tensor *norm_g, *norm_b, *head_w, *head_b;
    /* The trainable parameters in the order of the list above, with their
     * names and weight-decay flags (owned by the model). */
    int n_params;
    ttt_tensor **params;
    char **names;
    int *decay;
} ttt_vit;

/* Validates cfg and allocates the parameters (persistent, TTT_F32 or TTT_F64).
 * On error *m is left empty (safe to ttt_vit_free). */
int ttt_vit_init(ttt_ctx *ctx, ttt_vit *m, const ttt_vit_config *cfg, ttt_dtype dt);
void ttt_vit_free(ttt_ctx *ctx, ttt_vit *m);       /* frees the parameters and lists; NULL ok */
/* The trainable parameter named name, or NULL. */
ttt_tensor *ttt_vit_param(const ttt_vit *m, const char *name);

/* 1 if the sequence layer has an inner loop (MTTT linear or MLP learner),
 * so that inner losses are reported. */
int ttt_vit_has_inner_loop(const ttt_vit_config *cfg);

typedef struct {
    uint64_t seed;      /* SGD mini-batch split; block i uses a seed derived from (seed, i). Pass a new one per step. */
    int checkpoint;     /* 1: rematerialize each inner step in the backward pass */
    double *inner_loss; /* optional, depth * (steps + 1) values, block-major: block i's inner loss before
                           each inner step and after the last (ttt_mttt_run_opts.inner_loss). Written only
                           when ttt_vit_has_inner_loop; otherwise left untouched. */
} ttt_vit_run_opts;

/* logits [B, classes] for tokens [B, n, token_dim] of the model's dtype; opts
 * may be NULL. Under ttt_no_grad_begin the inner loops still run. */
ttt_tensor *ttt_vit_forward(ttt_ctx *ctx, const ttt_vit *m, ttt_tensor *tokens, const ttt_vit_run_opts *opts);

#ifdef __cplusplus
}
#endif
#endif
