/* ttt/lm.h: the decoder-only Transformer language model that TTT-E2E and the
 * TTT layers stand on (the baseline of docs/design.md §3): full-causal or sliding-window
 * attention, RoPE, QK-norm, pre- and post-RMSNorm around every sublayer,
 * SwiGLU MLPs, tied embeddings.
 *
 *   ids [B, T] (i32)
 *     -> x = embed[ids]                                          [B, T, D]
 *     -> depth x block i:
 *          h = attn(rms(x; input_layernorm))                      q, k, v = h Wq^T, h Wk^T, h Wv^T
 *                                                                 per head: q, k = rms(q; q_norm), rms(k; k_norm)
 *                                                                 q, k = rope(q, k; pos0 + t, theta)
 *                                                                 o = ttt_attention(q, k, v, causal, window) Wo^T
 *          x = x + rms(o; post_attention_layernorm)
 *          [prime blocks only: x = x + rms(swiglu_prime(rms(x; pre_prime_layernorm)); post_prime_layernorm)]
 *          x = x + rms(swiglu(rms(x; pre_feedforward_layernorm)); post_feedforward_layernorm)
 *          swiglu(h) = (silu(h Wgate^T) * (h Wup^T)) Wdown^T
 *     -> x = rms(x; norm)
 *     -> logits = x embed^T                                       [B, T, V] (tied head)
 *
 * PARAMETERS AND NAMES: Hugging Face conventions, so a PyTorch nn.Linear loads
 * them as they are (weights are [out, in]; a map is x W^T):
 *   model.embed_tokens.weight                         [V, D]
 *   model.layers.i.input_layernorm.weight             [D]
 *   model.layers.i.self_attn.q_proj.weight            [D, D]   (k_proj, v_proj, o_proj likewise)
 *   model.layers.i.self_attn.q_norm.weight            [D/H]    (k_norm likewise; only with qk_norm)
 *   model.layers.i.post_attention_layernorm.weight    [D]
 *   model.layers.i.pre_prime_layernorm.weight         [D]      (prime blocks only)
 *   model.layers.i.prime_mlp.gate_proj.weight         [F', D]  (up_proj [F', D], down_proj [D, F'])
 *   model.layers.i.post_prime_layernorm.weight        [D]
 *   model.layers.i.pre_feedforward_layernorm.weight   [D]
 *   model.layers.i.mlp.gate_proj.weight               [F, D]   (up_proj [F, D], down_proj [D, F])
 *   model.layers.i.post_feedforward_layernorm.weight  [D]
 *   model.norm.weight                                 [D]
 * Weight decay flags: 1 for every 2-d weight (embedding included), 0 for the
 * norm gains. No biases anywhere.
 *
 * INIT (from the context's RNG, in the order listed above): the embedding
 * N(0, init_std^2); q/k/v/gate/up N(0, init_std^2); o_proj and down_proj
 * N(0, (init_std / sqrt(2 depth))^2) (GPT-2's residual scaling); norm gains 1.
 *
 * The prime MLPs (prime_blocks > 0: the last prime_blocks blocks get one) are
 * the slots TTT-E2E trains at test time; here they are ordinary parameters.
 *
 * Every entry point validates its arguments: NULL / TTT_ERR with a message in
 * ttt_error(ctx), never an abort. */
#ifndef TTT_LM_H
#define TTT_LM_H

#include "ttt/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int64_t vocab;        /* V */
    int64_t dim;          /* D */
    int64_t depth;        /* blocks */
    int64_t heads;        /* H; D % H == 0, head dim D/H even (RoPE) */
    int64_t mlp_hidden;   /* F, the SwiGLU width */
    int64_t window;       /* 0: full causal attention; k > 0: sliding window of k tokens (query sees itself and k-1 before) */
    int64_t prime_blocks; /* 0..depth: the last prime_blocks blocks get a prime MLP (TTT-E2E's slot) */
    int64_t prime_hidden; /* F' (0: use mlp_hidden) */
    int qk_norm;          /* 1: RMSNorm on q and k per head (default) */
    double rope_theta;    /* 10000 default; 500000 at the TTT-E2E paper's scale */
    double norm_eps;      /* RMSNorm eps, 1e-6 */
    double init_std;      /* 0.02 */
} ttt_lm_config;

/* Presets by name: "tiny" (D 64, 2 blocks, 4 heads, F 172: CPU tests and
 * demos), "small" (D 256, 4 blocks, 4 heads, F 688), "125m" (the paper's: D 768, 12
 * blocks, 12 heads, F 2048). vocab is the tokenizer's size; the others take
 * the defaults above (full attention, no prime MLPs, qk_norm 1, theta 10000).
 * TTT_ERR (with a message in err) for an unknown name. */
int ttt_lm_preset(const char *name, int64_t vocab, ttt_lm_config *out, char *err, size_t err_len);

/* Number of trainable parameters the config describes (embedding counted once). */
int64_t ttt_lm_param_count(const ttt_lm_config *cfg);

typedef struct {
    ttt_tensor *input_norm, *q, *k, *v, *o, *q_norm, *k_norm, *post_attn_norm;
    ttt_tensor *pre_prime_norm, *prime_gate, *prime_up, *prime_down, *post_prime_norm; /* NULL unless a prime block */
    ttt_tensor *pre_mlp_norm, *gate, *up, *down, *post_mlp_norm;
} ttt_lm_block;

typedef struct {
    ttt_lm_config cfg; /* as validated */
    ttt_tensor *embed; /* [V, D], also the output head */
    ttt_lm_block *blocks;
    ttt_tensor *norm;
    /* Trainable parameters in the order of the name list above, with their
     * names and weight-decay flags (owned by the model). */
    int n_params;
    ttt_tensor **params;
    char **names;
    int *decay;
    /* The dtype the forward pass computes in: the parameters' (default), or
     * TTT_BF16 for mixed precision (ttt_lm_set_compute). */
    ttt_dtype compute;
} ttt_lm;

/* Validates cfg and allocates the parameters (persistent, TTT_F32 or TTT_F64,
 * on the context's device), initialised as above. On error *m is left empty
 * (safe to ttt_lm_free). */
int ttt_lm_init(ttt_ctx *ctx, ttt_lm *m, const ttt_lm_config *cfg, ttt_dtype dt);
void ttt_lm_free(ttt_ctx *ctx, ttt_lm *m); /* NULL ok */
ttt_tensor *ttt_lm_param(const ttt_lm *m, const char *name); /* NULL if absent */
/* Mixed precision: with TTT_BF16 the parameters stay as they are (the f32
 * master weights the optimizer updates) and each forward pass casts every
 * weight to bf16 where it is used, so activations and matmuls are bf16 and the
 * gradients come back to the parameters in f32 through the casts. The loss
 * (logits' log-softmax onward) is computed in the parameters' dtype. dt must be
 * TTT_BF16 or the parameters' dtype (back to full precision). */
int ttt_lm_set_compute(ttt_ctx *ctx, ttt_lm *m, ttt_dtype dt);

/* Final hidden states rms(x; norm) [B, T, D] for ids [B, T] at absolute
 * positions pos0 .. pos0 + T - 1 (pos0 only shifts RoPE; attention sees just
 * these T tokens). */
ttt_tensor *ttt_lm_hidden(ttt_ctx *ctx, const ttt_lm *m, ttt_tensor *ids, int64_t pos0);
/* logits [..., V] = hidden embed^T */
ttt_tensor *ttt_lm_logits(ttt_ctx *ctx, const ttt_lm *m, ttt_tensor *hidden);
/* Mean next-token cross-entropy over targets [B, T] (i32; ignore_index -100
 * rows do not count) of ids [B, T]; the logits are formed in chunks of
 * positions so [B, T, V] never exists whole. per_token: if not NULL, receives
 * the per-position losses [B, T] (0 where ignored; for loss-by-position eval). */
ttt_tensor *ttt_lm_loss(ttt_ctx *ctx, const ttt_lm *m, ttt_tensor *ids, ttt_tensor *targets, ttt_tensor **per_token);
/* ttt_lm_loss with logits formed for at most chunk positions at a time (0: the
 * default, about 2^26 logits per chunk), to trade memory for speed. */
ttt_tensor *ttt_lm_loss_chunked(ttt_ctx *ctx, const ttt_lm *m, ttt_tensor *ids, ttt_tensor *targets,
                                ttt_tensor **per_token, int64_t chunk);

/* KV cache for generation. Each block keeps the keys (after QK-norm and RoPE)
 * and values of the last `capacity` positions, [B, H, capacity, D/H]; with a
 * window k the capacity is k - 1 and the cache is a ring buffer (slot = pos mod
 * capacity), so memory stays constant however long the generation runs. */
typedef struct {
    int64_t batch, capacity;
    int64_t len;         /* positions seen so far (the next token's position) */
    int64_t k_depth;     /* number of blocks (entries of k and v) */
    ttt_tensor **k, **v; /* k_depth each, persistent */
} ttt_lm_cache;

/* capacity: window - 1 when the model has a window (max_len is then ignored),
 * else max_len (the longest sequence the cache can hold). */
int ttt_lm_cache_init(ttt_ctx *ctx, const ttt_lm *m, ttt_lm_cache *c, int64_t batch, int64_t max_len);
void ttt_lm_cache_free(ttt_ctx *ctx, ttt_lm_cache *c); /* NULL ok */
void ttt_lm_cache_reset(ttt_lm_cache *c);               /* len = 0, memory kept */
/* Logits [B, T, V] for the next T tokens ids [B, T] after the cached ones;
 * appends their keys and values. Equal (to rounding) to the last T rows of a
 * full forward over everything so far. Runs without recording gradients. A
 * long T runs in pieces of 512 tokens, releasing each piece's temporaries; on
 * an error, len counts the positions actually cached. */
ttt_tensor *ttt_lm_decode(ttt_ctx *ctx, const ttt_lm *m, ttt_lm_cache *c, ttt_tensor *ids);

#ifdef __cplusplus
}
#endif
#endif
