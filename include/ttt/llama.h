/* ttt/llama.h: pretrained decoder-only models of the Llama family (Llama,
 * Mistral, Qwen2), loaded from a GGUF file or a Hugging Face folder, with
 * their tokenizer and chat template (docs/llama.md).
 *
 *   x = embed[ids]
 *   depth x:  h = rms(x; attn_norm)
 *             q, k, v = h Wq^T (+ bq), h Wk^T (+ bk), h Wv^T (+ bv)      H query heads, Hkv key/value heads (GQA)
 *             q, k = rope(q, k)                                          rotate-half pairs (i, i + hd/2), HF's layout
 *             x = x + attention(q, k, v; causal [, window]) Wo^T         each KV head serves H / Hkv query heads
 *             x = x + (silu(rms(x) Wgate^T) * (rms(x) Wup^T)) Wdown^T     rms(x; mlp_norm)
 *   logits = rms(x; norm) head^T                                         head = embed when tied
 *
 * GGUF files store Wq and Wk with each head's rows interleaved for llama.cpp's
 * rotary layout (pairs (2i, 2i + 1)); the loader puts them back in Hugging
 * Face's order, so one RoPE serves both sources. Weights are dequantized to f32
 * at load (a first version: SmolLM2-135M takes ~540 MB).
 *
 * Parameter names follow Hugging Face (model.layers.i.mlp.gate_proj.weight,
 * ...); the tensors are persistent, on the context's device, in f32. */
#ifndef TTT_LLAMA_H
#define TTT_LLAMA_H

#include "ttt/lm.h" /* ttt_lm_cache */
#include "ttt/tensor.h"
#include "ttt/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { TTT_ROPE_NONE = 0, TTT_ROPE_LINEAR = 1, TTT_ROPE_LLAMA3 = 2, TTT_ROPE_FACTORS = 3 };

typedef struct {
    char arch[16];          /* "llama", "mistral", "qwen2" */
    int64_t vocab, dim, depth, heads, kv_heads, head_dim, mlp_hidden;
    int64_t context;        /* the longest context it was trained for (0: unknown) */
    int64_t window;         /* sliding-window attention (Mistral); 0: full */
    double rope_theta, norm_eps;
    int rope_scaling;       /* TTT_ROPE_*: how the frequencies theta^(-2i/hd) are changed */
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int64_t rope_original_context;
    int tied;               /* the output head is the embedding */
    int qkv_bias;           /* q, k, v projections have biases (Qwen2) */
} ttt_llama_config;

typedef struct {
    ttt_tensor *attn_norm, *q, *k, *v, *o, *q_bias, *k_bias, *v_bias, *mlp_norm, *gate, *up, *down;
} ttt_llama_block;

typedef struct {
    ttt_llama_config cfg;
    ttt_tensor *embed, *head, *norm; /* head == embed when tied */
    ttt_llama_block *blocks;
    double *inv_freq;                /* [head_dim / 2] rotary frequencies when scaled, else NULL */
    /* the tokenizer and chat template that came with the weights */
    ttt_tokenizer *tok;
    int32_t bos, eos, eot;           /* -1 if absent; eot: the end of a chat turn (e.g. <|im_end|>) */
    int add_bos;                     /* prepend bos when encoding a prompt */
    char *chat_template;             /* as stored (Jinja text), NULL if none */
    char source[16];                 /* "gguf" or "hf" */
    /* An adapter view (ttt/adapter.h) is a copy of a model that shares its tensors, tokenizer and
     * tables; it owns only its block array and view_owned (materialized matrices). ttt_llama_free
     * on a view frees just those. */
    int is_view;
    int n_view_owned;
    ttt_tensor **view_owned;
} ttt_llama;

/* Loads PATH: a .gguf file (architecture "llama") or a Hugging Face folder
 * (config.json with model_type llama, mistral or qwen2; model.safetensors or
 * model.safetensors.index.json shards; tokenizer.json; tokenizer_config.json
 * for the chat template and special tokens). On error *m is empty and err
 * names the file and the problem. */
int ttt_llama_load(ttt_ctx *ctx, const char *path, ttt_llama *m, char *err, size_t err_len);
void ttt_llama_free(ttt_ctx *ctx, ttt_llama *m); /* NULL ok */
int64_t ttt_llama_param_count(const ttt_llama *m);

/* Logits [B, T, V] of ids [B, T] (i32) at positions pos0 .. pos0 + T - 1,
 * attending only to these T tokens. Differentiable in the weights. */
ttt_tensor *ttt_llama_forward(ttt_ctx *ctx, const ttt_llama *m, ttt_tensor *ids, int64_t pos0);

/* KV cache: per block k, v [B, Hkv, max_len, head_dim] (keys after RoPE). */
int ttt_llama_cache_init(ttt_ctx *ctx, const ttt_llama *m, ttt_lm_cache *c, int64_t batch, int64_t max_len);
/* Logits [B, T, V] of the next T tokens after the cached ones; appends their
 * keys and values. Equal (to rounding) to the last T rows of a full forward. */
ttt_tensor *ttt_llama_decode(ttt_ctx *ctx, const ttt_llama *m, ttt_lm_cache *c, ttt_tensor *ids);

/* One user turn (and an optional system message, NULL: the template's default)
 * rendered with the model's chat template and the assistant prompt appended.
 * Supported: ChatML-family templates (<|im_start|>role\n...<|im_end|>\n), with
 * the default system message the template writes when none is given (as
 * SmolLM2's and Qwen2's do). Others are refused with a message. *out is
 * malloc'd (free() it). */
int ttt_llama_chat_prompt(const ttt_llama *m, const char *system, const char *user, char **out, char *err,
                          size_t err_len);
/* The text that follows an assistant answer (generated up to, not including, its
 * end-of-turn token) in a conversation: the end of that turn, the next user turn and
 * the assistant prompt. ChatML-family templates only, as above. */
int ttt_llama_chat_next(const ttt_llama *m, const char *user, char **out, char *err, size_t err_len);

#ifdef __cplusplus
}
#endif
#endif
