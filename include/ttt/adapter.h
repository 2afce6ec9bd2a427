/* ttt/adapter.h: Transformer-squared (design §4) on a pretrained model
 * (ttt/llama.h): SVF experts and the LoRA baseline, their files, and the
 * policy-gradient loss that trains them (docs/transformer2.md).
 *
 *   SVD (once per model, cached in a file):  W = U diag(s) V^T       U [m, r], s [r], V^T [r, n], r = min(m, n)
 *   SVF expert: one z [r] per adapted matrix;  m = sigmoid(z)
 *               W' = U diag(s * m) V^T * (sum(s) / sum(s * m))           (the official code's form)
 *   LoRA:       A [rank, n], B [m, rank];      W' = W + (alpha / rank) B A   (B starts at 0: W' = W)
 *
 * An adapter binds to a model as a *view*: a ttt_llama that shares every
 * tensor with the base model except the adapted matrices, which are W'. With
 * grad mode on, W' is a graph of the adapter's parameters, so a loss on the
 * view's logits reaches z (or A, B) through the network and the
 * reconstruction; `ttt_adapter_view_materialize` computes W' once into
 * persistent tensors for generation (pass 2 of Transformer-squared).
 *
 * Which matrices: TTT_ADAPT_MLP (gate, up, down of every block: SPEC §4's
 * default), TTT_ADAPT_ATTN (q, k, v, o), or both. The matrix list is ordered by
 * block, then q, k, v, o, gate, up, down; names are Hugging Face's
 * (model.layers.3.mlp.gate_proj.weight). */
#ifndef TTT_ADAPTER_H
#define TTT_ADAPTER_H

#include "ttt/llama.h"
#include "ttt/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { TTT_ADAPT_ATTN = 1, TTT_ADAPT_MLP = 2 };
typedef enum { TTT_ADAPTER_SVF = 1, TTT_ADAPTER_LORA = 2 } ttt_adapter_kind;

/* The adapted matrices of a model and, for SVF, their thin SVD (persistent f32
 * on the context's device). */
typedef struct {
    int which;            /* TTT_ADAPT_* mask */
    int n;                /* matrices */
    char **names;         /* [n] */
    ttt_tensor **w;       /* [n] the base model's matrices (not owned) */
    int64_t *block;       /* [n] the block of each */
    int *slot;            /* [n] 0..6: q, k, v, o, gate, up, down */
    uint64_t fingerprint; /* a checksum of the matrices' values: which model the set belongs to */
    ttt_tensor **u, **s, **vt; /* [n] owned; NULL until ttt_svd_compute (LoRA needs none) */
    double seconds;       /* time spent computing the SVD (0 when loaded from the cache) */
    char cache_note[256]; /* what ttt_svd_compute did with the cache file */
} ttt_adapted_set;

/* Lists the matrices of m chosen by which and fingerprints them. No SVD yet. */
int ttt_adapted_set_init(ttt_ctx *ctx, const ttt_llama *m, int which, ttt_adapted_set *set, char *err,
                         size_t err_len);
/* Thin SVD of every matrix of set (LAPACK on the CPU, cuSOLVER on CUDA; in f64,
 * stored f32). With cache_path: loaded from that file when it holds this set's
 * matrices (same names and shapes, and the same fingerprint: another model's
 * cache, or a damaged file, is recomputed and replaced), else computed and
 * written there atomically. cache_path NULL: computed, not stored. */
int ttt_svd_compute(ttt_ctx *ctx, ttt_adapted_set *set, const char *cache_path, char *err, size_t err_len);
void ttt_adapted_set_free(ttt_ctx *ctx, ttt_adapted_set *set); /* NULL ok */

typedef struct {
    ttt_adapter_kind kind;
    int which, n;          /* as the set it was made for */
    int64_t rank;          /* LoRA */
    double alpha;          /* LoRA: W' = W + (alpha / rank) B A */
    ttt_tensor **z;        /* SVF: [n] of [r_i], parameters */
    ttt_tensor **a, **b;   /* LoRA: [n] of [rank, cols] and [rows, rank], parameters */
} ttt_adapter;

/* A new adapter for set: SVF z = 0.1 + 0.01 N(0, 1) (seeded); LoRA A ~ N(0, 1/cols), B = 0.
 * SVF needs the set's SVD. rank and alpha are LoRA's (ignored for SVF). */
int ttt_adapter_new(ttt_ctx *ctx, const ttt_adapted_set *set, ttt_adapter_kind kind, int64_t rank, double alpha,
                    uint64_t seed, ttt_adapter *ad, char *err, size_t err_len);
void ttt_adapter_free(ttt_ctx *ctx, ttt_adapter *ad); /* NULL ok */
/* Its trainable tensors, in a fixed order (*params malloc'd; free() it). */
int ttt_adapter_params(const ttt_adapter *ad, ttt_tensor ***params, int *n);
int64_t ttt_adapter_param_count(const ttt_adapter *ad);

/* SVF experts mixed: z_i = sum_k alpha[k][i] z_k,i where alpha is [k] (one
 * coefficient per expert, per_matrix 0) or [k * n] (per_matrix 1, expert-major).
 * out is a new SVF adapter (free it). The experts must share kind SVF and set. */
int ttt_adapter_mix(ttt_ctx *ctx, int k, const ttt_adapter *const *experts, const double *alpha, int per_matrix,
                    ttt_adapter *out, char *err, size_t err_len);

/* Files (safetensors, atomic): the adapter's tensors plus metadata naming the
 * kind, the matrices and the base model (its parameter count and a checksum of
 * the adapted matrices), so an expert for another model is refused on load.
 * extra_metadata: NULL or NULL-terminated key, value pairs (e.g. the task). */
int ttt_adapter_save(ttt_ctx *ctx, const char *path, const ttt_adapter *ad, const ttt_adapted_set *set,
                     const char *const *extra_metadata, char *err, size_t err_len);
/* Loads an adapter saved for this set (same model, same matrices). metadata_json:
 * NULL, or receives the file's metadata (free() it; ttt_metadata_get reads it). */
int ttt_adapter_load(ttt_ctx *ctx, const char *path, const ttt_adapted_set *set, ttt_adapter *ad,
                     char **metadata_json, char *err, size_t err_len);

/* The view: *view is base with the set's matrices replaced by W'. ad NULL: the
 * base weights (a plain copy of the view structure). Made of step tensors: valid
 * until the next ttt_step_reset / ttt_release past this point. Free its block
 * array with ttt_adapter_view_free (not ttt_llama_free). */
int ttt_adapter_view(ttt_ctx *ctx, const ttt_llama *base, const ttt_adapted_set *set, const ttt_adapter *ad,
                     ttt_llama *view);
/* The same with W' computed once (no graph) into persistent tensors owned by the
 * view, for generation across step resets. */
int ttt_adapter_view_materialize(ttt_ctx *ctx, const ttt_llama *base, const ttt_adapted_set *set,
                                 const ttt_adapter *ad, ttt_llama *view);
void ttt_adapter_view_free(ttt_ctx *ctx, ttt_llama *view); /* frees what the view owns; NULL ok */

/* REINFORCE's loss for a batch of B sequences ids [B, T] (host, prompt then
 * sampled answer, padded at the end) with answer_mask [B, T] (host: 1 where
 * token t is an answer token, predicted from position t - 1) and rewards [B]:
 *   loss = -(1/B) sum_b r_b sum_t mask[b, t] log p(ids[b, t] | ids[b, < t])
 *        + kl_coef (1/B) sum_b sum_t mask[b, t] KL(p(. | ids[b, < t]) || p_base(. | ids[b, < t]))
 * with p from view and p_base from base (only when kl_coef > 0). Returns the
 * scalar loss (f32, a graph in the adapter's parameters); *mean_logp, if not
 * NULL, receives the mean answer-token log-prob, *mean_kl the mean KL per answer token (0 without). */
ttt_tensor *ttt_adapter_pg_loss(ttt_ctx *ctx, const ttt_llama *view, const ttt_llama *base, const int32_t *ids,
                                const float *answer_mask, int64_t B, int64_t T, const double *rewards, double kl_coef,
                                double *mean_logp, double *mean_kl);

#ifdef __cplusplus
}
#endif
#endif
