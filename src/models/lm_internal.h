/* Pieces of the language model (lm.c) that its TTT-E2E inner loop (lm_e2e.c)
 * reuses. Not installed. */
#ifndef TTT_LM_INTERNAL_H
#define TTT_LM_INTERNAL_H

#include "ttt/lm.h"

/* p in the model's compute dtype (a recorded cast, so gradients return to p). */
ttt_tensor *ttt__lm_w(ttt_ctx *ctx, const ttt_lm *m, ttt_tensor *p);
/* the head cast to the compute dtype, padded to a multiple of 64 rows on CUDA (lm.c says why) */
ttt_tensor *ttt__lm_head_weight(ttt_ctx *ctx, const ttt_lm *m);
/* One of q, k, v of h [B, T, D] as [B, H, T, hd]: projected by w, normed by
 * norm (NULL: not), rotated at positions pos0.. if rotate. */
ttt_tensor *ttt__lm_heads(ttt_ctx *ctx, const ttt_lm *m, ttt_tensor *h, ttt_tensor *w, ttt_tensor *norm, int rotate,
                          int64_t pos0);
/* Everything of block b after its attention produced o [B, H, T, hd]: output
 * projection, post-norm and residual, the prime MLP if b has one (its weights
 * may be per sequence, [B, F', D] / [B, D, F']), the static MLP. */
ttt_tensor *ttt__lm_block_rest(ttt_ctx *ctx, const ttt_lm *m, const ttt_lm_block *b, ttt_tensor *x, ttt_tensor *o);
/* The embedding and the first n_blocks blocks over ids [B, T] (positions 0..),
 * without the final norm. */
ttt_tensor *ttt__lm_prefix(ttt_ctx *ctx, const ttt_lm *m, ttt_tensor *ids, int64_t n_blocks);
/* A KV cache whose rings hold `capacity` positions (TTT-E2E keeps a chunk more than the window). */
int ttt__lm_cache_init(ttt_ctx *ctx, const ttt_lm *m, ttt_lm_cache *c, int64_t batch, int64_t capacity);
/* Blocks i0..i1-1 over x [B, T, D], the tokens at positions c->len.., reading and
 * extending c's rings; blocks (NULL: the model's) may carry adapted prime
 * weights. c->len is not advanced. */
ttt_tensor *ttt__lm_decode_range(ttt_ctx *ctx, const ttt_lm *m, ttt_lm_cache *c, const ttt_lm_block *blocks,
                                 ttt_tensor *x, int64_t i0, int64_t i1);
/* dst <- src: every block's keys and values, TTT states and conv inputs, and the position. */
int ttt__lm_cache_copy(ttt_ctx *ctx, ttt_lm_cache *dst, const ttt_lm_cache *src);
/* The ring's keys or values of positions [p, p + n) in order, [B, H, n, hd]. */
ttt_tensor *ttt__lm_ring_range(ttt_ctx *ctx, const ttt_lm_cache *c, ttt_tensor *ring, int64_t p, int64_t n);
/* The embedding of ids; the logits of the last block's output x (final norm, tied head). */
ttt_tensor *ttt__lm_embed(ttt_ctx *ctx, const ttt_lm *m, ttt_tensor *ids);
ttt_tensor *ttt__lm_head(ttt_ctx *ctx, const ttt_lm *m, ttt_tensor *x);
/* Argument checks shared by the entry points. */
int ttt__lm_check_model(ttt_ctx *ctx, const char *fn, const ttt_lm *m);
int ttt__lm_check_pair(ttt_ctx *ctx, const char *fn, const ttt_tensor *ids, const ttt_tensor *targets);

#endif
