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
 * the slots TTT-E2E trains at test time (ttt_lm_e2e_loss, when inner_chunk > 0);
 * otherwise they are ordinary parameters.
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
    /* TTT-E2E (prime_blocks > 0 and inner_chunk > 0, window > 0): the prime MLPs
     * take one inner SGD step per inner_chunk tokens (b) on the chunk's next-token
     * loss, its gradient clipped to global norm inner_clip (0: no clipping) per
     * sequence. See ttt_lm_e2e_loss. */
    int64_t inner_chunk;
    double inner_clip;
    /* The sequence mixer of every block (TTT_LM_MIXER_*; see ttt_lm_mixer_name). TTT-Linear and
     * TTT-MLP (include/ttt/ttt_rnn.h) replace attention: the block's first sublayer is
     * x + rms(ttt(rms(x; input_layernorm)); post_attention_layernorm), preceded with the mamba
     * backbone by a causal-conv sublayer x + conv(rms(x; conv_layernorm)). TTT-KVB keeps
     * (sliding-window) attention and adds a TTT-MLP sublayer after it, with its own pre- and
     * post-norm (TTT-E2E's "TTT-KVB" baseline). The linear-time mixers of include/ttt/mixers.h
     * (linear-attention, gated-deltanet, mamba2) replace attention the same way, without RoPE:
     * x + rms(mixer(rms(x; input_layernorm)); post_attention_layernorm), their parameters under
     * model.layers.i.linear_attn.*, .gdn.*, .mamba2.* (docs/mixers.md). */
    int mixer;
    int ttt_backbone;       /* TTT_RNN_TRANSFORMER (0) or TTT_RNN_MAMBA (1); ttt-linear / ttt-mlp only */
    int64_t ttt_mini_batch; /* b, 16 */
    double ttt_base_lr;     /* 0: the learner's default (1.0 Linear, 0.1 MLP) */
} ttt_lm_config;

enum {
    TTT_LM_MIXER_ATTENTION = 0,
    TTT_LM_MIXER_TTT_LINEAR = 1,
    TTT_LM_MIXER_TTT_MLP = 2,
    TTT_LM_MIXER_TTT_KVB = 3,
    TTT_LM_MIXER_LINEAR_ATTENTION = 4,
    TTT_LM_MIXER_GATED_DELTANET = 5,
    TTT_LM_MIXER_MAMBA2 = 6
};
/* "attention", "ttt-linear", "ttt-mlp", "ttt-kvb", "linear-attention", "gated-deltanet", "mamba2"
 * (NULL for an unknown id), and back (-1: unknown). */
const char *ttt_lm_mixer_name(int mixer);
int ttt_lm_mixer_parse(const char *name);

/* Presets by name. Sizes: "tiny" (D 64, 2 blocks, 4 heads, F 172: CPU tests
 * and demos), "small" (D 256, 4 blocks, 4 heads, F 688), "125m" (D 768, 12
 * blocks, 12 heads, F 2048), "350m" (D 1024, 24 blocks, 16 heads, F 2816),
 * "760m" (D 1536, 24 blocks, 16 heads, F 4096). The bare name is full
 * attention with RoPE theta 10000. Suffixes give the three models of the
 * TTT-E2E comparison, all with theta 5e5 and QK-norm as the official configs:
 *   -fa   full attention;
 *   -swa  sliding-window attention in every block (window 8192; 256 for tiny
 *         and small);
 *   -e2e  SWA, and the last quarter of the blocks (at least one) carry a prime
 *         MLP that learns at test time: inner_chunk 1024 (128 for tiny and
 *         small), inner_clip 1; every MLP narrowed so the parameter count
 *         matches the baseline's (125m 2048 -> 1664, 350m 2816 -> 2304,
 *         760m 4096 -> 3328, tiny 172 -> 116, small 688 -> 552).
 * vocab is the tokenizer's size. TTT_ERR (with a message in err) for an
 * unknown name. */
int ttt_lm_preset(const char *name, int64_t vocab, ttt_lm_config *out, char *err, size_t err_len);

/* The config as "key=value ..." (every field; what checkpoints store as their
 * "model" metadata), and back. Parsing fills absent optional keys (init_std,
 * qk_norm, inner_chunk, inner_clip) with the defaults and names a missing or
 * bad key in err; ttt_lm_init checks the values. TTT_OK or TTT_ERR. */
int ttt_lm_config_format(const ttt_lm_config *cfg, char *buf, size_t len);
int ttt_lm_config_parse(const char *s, ttt_lm_config *cfg, char *err, size_t err_len);

/* Number of trainable parameters the config describes (embedding counted once); -1 when a
 * size is negative or beyond ttt_lm_init's limits (the count could overflow). */
int64_t ttt_lm_param_count(const ttt_lm_config *cfg);

typedef struct {
    ttt_tensor *input_norm, *q, *k, *v, *o, *q_norm, *k_norm, *post_attn_norm;
    ttt_tensor *pre_prime_norm, *prime_gate, *prime_up, *prime_down, *post_prime_norm; /* NULL unless a prime block */
    ttt_tensor *pre_mlp_norm, *gate, *up, *down, *post_mlp_norm;
    /* Other mixers' parameters (attention's are the fields above, NULL when a block has none):
     * the TTT layer, and the tensors the mixer registered under their full names. */
    struct ttt_rnn *ttt;   /* the TTT layer of the block (NULL: none) */
    struct ttt_linattn *linattn; /* the linear-time mixer of the block (NULL: none; include/ttt/mixers.h) */
    struct ttt_gdn *gdn;
    struct ttt_mamba2 *mamba2;
    int n_extra;
    ttt_tensor *extra[40];
    char extra_names[40][80];
    int extra_decay[40];
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
/* Loads a `ttt lm train` checkpoint (PATH, or a run directory holding
 * model.safetensors): the config from its "model" metadata, the parameters in
 * dtype (TTT_F32 / TTT_F64), or with dtype < 0 in the dtype it was trained in;
 * *step (may be NULL) the step it was saved at (-1 if unknown). On error *m is
 * empty and err names the file and the problem. */
int ttt_lm_load(ttt_ctx *ctx, const char *path, int dtype, ttt_lm *m, int64_t *step, char *err, size_t err_len);

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

/* ---- TTT-E2E (SPEC section 3) ------------------------------------------------------
 * 1 if the model learns at test time (prime_blocks > 0, inner_chunk > 0). */
int ttt_lm_is_e2e(const ttt_lm *m);
/* The TTT-E2E loss of ids [B, T] against targets [B, T], T a multiple of
 * inner_chunk b. The first depth - prime_blocks blocks (the prefix) run once
 * over the whole sequence; the suffix blocks then run chunk by chunk, b tokens
 * a chunk, attending over the keys of the last window positions carried from
 * chunk to chunk. For chunk i, with each sequence's own prime weights W_{i-1}
 * (W_0 the parameters): L_i = mean next-token cross-entropy of the chunk;
 * g = dL_i/dW_{i-1} through the suffix and the tied head only; g clipped to
 * global norm inner_clip over all prime weights of the sequence;
 * W_i = W_{i-1} - eta g. Returns mean_i L_i (the pre-update losses), averaged
 * over the batch. Differentiable with respect to every parameter: through
 * every inner step (full second order; each chunk rematerialized unless
 * flags has TTT_E2E_KEEP_GRAPHS), or with TTT_E2E_FIRST_ORDER treating each g
 * as a constant (the ablation). eta >= 0;
 * eta = 0 gives the plain windowed forward pass. per_token (may be NULL)
 * receives the per-position losses [B, T]; chunk_losses (may be NULL) the
 * batch-mean loss of each chunk [T / b]. Under no-grad (evaluation) the inner
 * steps still run, and memory stays one chunk deep. */
ttt_tensor *ttt_lm_e2e_loss(ttt_ctx *ctx, const ttt_lm *m, ttt_tensor *ids, ttt_tensor *targets, double eta,
                            int flags, ttt_tensor **per_token, ttt_tensor **chunk_losses);
/* flags of ttt_lm_e2e_loss (or-ed; 0: second order, each chunk rematerialized in the backward pass) */
enum {
    TTT_E2E_FIRST_ORDER = 1, /* each inner gradient g is a constant of the outer pass (the ablation) */
    TTT_E2E_KEEP_GRAPHS = 2  /* keep each chunk's graph for the backward pass instead of running the chunk again
                                (ttt_subgraph): faster; memory grows with the number of chunks */
};
/* The inner learning rate at outer step `step` of a ramp from eta0 to eta1 over
 * `warmup` steps (the official schedule: eta0 + (eta1 - eta0) min(1, (step + 1) / warmup)). */
double ttt_lm_e2e_eta(int64_t step, int64_t warmup, double eta0, double eta1);

/* KV cache for generation. Each block keeps the keys (after QK-norm and RoPE)
 * and values of the last `capacity` positions, [B, H, capacity, D/H]; with a
 * window k the capacity is k - 1 and the cache is a ring buffer (slot = pos mod
 * capacity), so memory stays constant however long the generation runs. */
typedef struct ttt_lm_cache {
    int64_t batch, capacity;
    int64_t len;         /* positions seen so far (the next token's position) */
    int64_t k_depth;     /* number of blocks (entries of k and v) */
    ttt_tensor **k, **v; /* k_depth each, persistent (NULL for a block without attention) */
    struct ttt_rnn_state *rnn;  /* per block: a TTT layer's state (zeroed entries for blocks without) */
    ttt_tensor **conv_tail;     /* per block: the mamba backbone's conv inputs [B, 3, D], or NULL */
    struct ttt_linattn_state *linattn; /* per block: a linear-time mixer's state (zeroed entries for blocks without) */
    struct ttt_gdn_state *gdn;
    struct ttt_mamba2_state *mamba2;
} ttt_lm_cache;

/* capacity: window - 1 when the model has a window (max_len is then ignored),
 * else max_len (the longest sequence the cache can hold; ignored without attention). TTT
 * layers keep their fast weights and partial mini-batch sums here too; they are reset to the
 * learned W_0 whenever a decode starts at position 0. */
int ttt_lm_cache_init(ttt_ctx *ctx, const ttt_lm *m, ttt_lm_cache *c, int64_t batch, int64_t max_len);
void ttt_lm_cache_free(ttt_ctx *ctx, ttt_lm_cache *c); /* NULL ok */
void ttt_lm_cache_reset(ttt_lm_cache *c);               /* len = 0, memory kept */
/* Logits [B, T, V] for the next T tokens ids [B, T] after the cached ones;
 * appends their keys and values. Equal (to rounding) to the last T rows of a
 * full forward over everything so far. Runs without recording gradients. A
 * long T runs in pieces of 512 tokens, releasing each piece's temporaries; on
 * an error, len counts the positions actually cached. */
ttt_tensor *ttt_lm_decode(ttt_ctx *ctx, const ttt_lm *m, ttt_lm_cache *c, ttt_tensor *ids);

/* Reading and generating with TTT-E2E (prefill and decode). The state holds
 * what the model has learned and seen: each sequence's adapted prime weights
 * (in the parameters' dtype: f32 under bf16 compute), the K, V rings of every
 * block (window - 1 + inner_chunk positions: the inner step re-reads the keys
 * before its chunk) and the current chunk's inputs to the suffix. Memory is
 * constant however long the input. */

typedef struct {
    ttt_lm_cache cache;      /* every block's K, V ring; cache.len = positions read */
    int64_t batch;
    double eta;              /* the inner learning rate (1 at inference) */
    int n_w;                 /* 3 per suffix block */
    ttt_tensor **w;          /* adapted prime weights: gate, up [B, F', D], down [B, D, F'] per suffix block */
    ttt_tensor *chunk_x;     /* [B, b, D]: the suffix's inputs for the current chunk's tokens */
    ttt_tensor *chunk_ids;   /* [B, b] i32: the current chunk's ids */
    int64_t steps;           /* inner steps taken */
    double last_inner_loss;  /* the chunk loss of the last inner step (batch mean); NaN before the first */
} ttt_lm_e2e_state;

/* A state at position 0 with the meta-learned W_0, for batch sequences. */
int ttt_lm_e2e_state_init(ttt_ctx *ctx, const ttt_lm *m, ttt_lm_e2e_state *s, int64_t batch, double eta);
int ttt_lm_e2e_state_reset(ttt_ctx *ctx, const ttt_lm *m, ttt_lm_e2e_state *s); /* back to position 0 and W_0 */
void ttt_lm_e2e_state_free(ttt_ctx *ctx, ttt_lm_e2e_state *s);                  /* NULL ok */
/* Reads ids [B, T] after the state's positions and returns the logits of every
 * new position [B, T, V] (all_logits) or of the last one [B, 1, V]. Each time
 * a chunk of b tokens is complete and the next token is known (its last
 * target), the prime weights take the chunk's inner step (as in
 * ttt_lm_e2e_loss; no graph is kept), so prefill and token-by-token decode
 * give the forward pass's results whatever the pieces. Runs without recording
 * gradients; temporaries are released piece by piece. */
ttt_tensor *ttt_lm_e2e_decode(ttt_ctx *ctx, const ttt_lm *m, ttt_lm_e2e_state *s, ttt_tensor *ids, int all_logits);

/* Test-time state files: read a document once, ask many times. A safetensors
 * file (written atomically) with the adapted prime weights, every block's K, V
 * ring, the current chunk's inputs, and metadata: format "ttt-e2e-state/1",
 * model and tokenizer ids (strings the caller chooses, e.g. ttt_lm_fingerprint
 * and a hash of the tokenizer files), position, inner_steps, eta, batch,
 * inner_chunk, window. Loading needs a state made by ttt_lm_e2e_state_init for
 * the same model and batch; it refuses a file of another format, a model or
 * tokenizer id that differs from a non-empty one given, tensors of other shapes
 * and truncated files, with a message naming the field, and then leaves the
 * state reset (never half loaded). Generating after a load is bit-identical to
 * generating without the interruption. */
int ttt_lm_e2e_state_save(ttt_ctx *ctx, const ttt_lm *m, const ttt_lm_e2e_state *s, const char *path,
                          const char *model_id, const char *tokenizer_id);
int ttt_lm_e2e_state_load(ttt_ctx *ctx, const ttt_lm *m, ttt_lm_e2e_state *s, const char *path, const char *model_id,
                          const char *tokenizer_id);
/* A model's id: FNV-1a over its config and every parameter's name and bytes,
 * 16 hex digits and a NUL into buf (len >= 17). */
int ttt_lm_fingerprint(ttt_ctx *ctx, const ttt_lm *m, char *buf, size_t len);

/* A reader: what a model has read so far, whatever its kind (the KV cache of a
 * full-attention or SWA model, or TTT-E2E's state), for generation and serving. */
typedef struct {
    int e2e;                /* 1: state is used, else cache */
    ttt_lm_cache cache;
    ttt_lm_e2e_state state;
} ttt_lm_reader;
/* max_len: the longest input a full-attention model's cache holds (ignored with a window). */
int ttt_lm_reader_init(ttt_ctx *ctx, const ttt_lm *m, ttt_lm_reader *r, int64_t batch, int64_t max_len);
void ttt_lm_reader_free(ttt_ctx *ctx, ttt_lm_reader *r); /* NULL ok */
int ttt_lm_reader_reset(ttt_ctx *ctx, const ttt_lm *m, ttt_lm_reader *r);
int64_t ttt_lm_reader_pos(const ttt_lm_reader *r);                  /* positions read */
int64_t ttt_lm_reader_room(const ttt_lm *m, const ttt_lm_reader *r); /* positions it can still read (INT64_MAX: any) */
/* Reads ids [B, T]; logits of every new position [B, T, V] or of the last [B, 1, V]. */
ttt_tensor *ttt_lm_reader_read(ttt_ctx *ctx, const ttt_lm *m, ttt_lm_reader *r, ttt_tensor *ids, int all_logits);
/* dst <- src (readers of one model and batch): a session's state, asked many times. */
int ttt_lm_reader_copy(ttt_ctx *ctx, const ttt_lm *m, ttt_lm_reader *dst, const ttt_lm_reader *src);
/* State files (ttt_lm_e2e_state_save/load) for TTT-E2E readers; other kinds are refused with a message. */
int ttt_lm_reader_save(ttt_ctx *ctx, const ttt_lm *m, const ttt_lm_reader *r, const char *path, const char *model_id,
                       const char *tokenizer_id);
int ttt_lm_reader_load(ttt_ctx *ctx, const ttt_lm *m, ttt_lm_reader *r, const char *path, const char *model_id,
                       const char *tokenizer_id);

#ifdef __cplusplus
}
#endif
#endif
