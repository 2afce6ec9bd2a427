/* The engine's private interface for the code above it: layers, models, io,
 * data, optim and check. Not installed. They see contexts and tensors only
 * through these few functions and the public headers, never struct ttt_ctx
 * or the backend table (core/internal.h, for core, ops, autodiff and the
 * backends' glue). */
#ifndef TTT_ENGINE_PRIVATE_H
#define TTT_ENGINE_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ttt/autodiff.h"
#include "ttt/ops.h"
#include "ttt/tensor.h"

/* context.c: record an error message in the context (returns TTT_ERR); host
 * memory of step lifetime (zeroed, freed by ttt_step_reset / ttt_release). */
int ttt__set_error(ttt_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void *ttt__meta_alloc(ttt_ctx *ctx, size_t bytes);

/* tensor.c */
bool ttt__is_float(ttt_dtype dt);

/* record.c: would an op on these inputs record a node (grad mode on and one requires grad)? */
bool ttt__recording(const ttt_ctx *ctx, int n, ttt_tensor *const *in);

/* ops/shape.c: dst[..., start : start + step * n : step, ...] = src along axis, in place,
 * no graph (src has dst's shape except at axis; the caller checks). For writing
 * blocks of a preallocated result and KV caches. */
int ttt__copy_into(ttt_ctx *ctx, ttt_tensor *dst, int axis, int64_t start, int64_t step, const ttt_tensor *src);

/* engine.c: backend work the layers above need, on the context's backend
 * instance, no graph; failures name op in the context's message. */
int ttt__upload(ttt_ctx *ctx, const char *op, ttt_tensor *dst, const void *host, size_t bytes); /* dense dst */
int ttt__scale_in_place(ttt_ctx *ctx, const char *op, ttt_tensor *t, double a);               /* t *= a */
int ttt__adamw(ttt_ctx *ctx, ttt_tensor *p, const ttt_tensor *g, ttt_tensor *m, ttt_tensor *v, double lr,
               double beta1, double beta2, double eps, double weight_decay, int64_t step);
int ttt__sgd(ttt_ctx *ctx, ttt_tensor *p, const ttt_tensor *g, ttt_tensor *buf, double lr, double momentum,
             double weight_decay, int nesterov);
/* composed/gated_delta.c: the fused chunkwise Gated DeltaNet core (backend.h: gdn_chunk_fwd, gdn_chunk_bwd),
 * the function of ttt_gated_delta_chunked on inputs the caller has checked (the layer's check_core; chunk
 * >= 1). bf16 inputs run in f32 (o is returned in q's dtype, *s_out in f32). Returns NULL with *declined
 * set, having recorded nothing, when the fused path does not apply (the backend lacks the kernels, they
 * decline these inputs, or TTT_FUSED=0): the caller composes the core then. composed is that composed
 * core, which the VJP differentiates under create_graph (gradients of gradients), so every order stays
 * exact; first-order gradients come from gdn_chunk_bwd. */
typedef ttt_tensor *(*ttt__gdn_core_fn)(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *beta,
                                        ttt_tensor *g, int64_t chunk, ttt_tensor *s0, ttt_tensor **s_out);
ttt_tensor *ttt__gated_delta_fused(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *beta,
                                   ttt_tensor *g, int64_t chunk, ttt_tensor *s0, ttt_tensor **s_out,
                                   ttt__gdn_core_fn composed, int *declined);
/* composed/ssd.c: the fused chunkwise decayed linear recurrence (backend.h: ssd_chunk_fwd, ssd_chunk_bwd),
 * S_t = exp(g_t) S_{t-1} + k_t v_t^T, o_t = q_t^T S_t: ttt_ssd_chunked's core and, with g NULL (no decay),
 * ttt_linear_attention_chunked's (v with the normaliser column). Inputs checked by the caller; the contract
 * of ttt__gated_delta_fused (declined, bf16 in f32, composed differentiated under create_graph). */
typedef ttt_tensor *(*ttt__ssd_core_fn)(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *g,
                                        int64_t chunk, ttt_tensor *s0, ttt_tensor **s_out);
ttt_tensor *ttt__ssd_fused(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *g, int64_t chunk,
                           ttt_tensor *s0, ttt_tensor **s_out, ttt__ssd_core_fn composed, int *declined);
/* The fused paths (engine.c): the multi-tensor optimizer and clipping entries, the fused SwiGLU op, the
 * norms with their weight in one kernel and TTT-Linear's scan (src/layers/ttt_rnn.c) and the
 * fused Gated DeltaNet core run
 * unless the environment had TTT_FUSED=0 when the context was made; then the per-tensor entries and the
 * composed ops run instead (the same values: for before/after comparisons; the same bits but for the Gated
 * DeltaNet core, whose chunk arithmetic differs from the composed one's in rounding). ttt__set_fused switches one
 * context (tests). ttt__multi_tensor: the backend has the multi-tensor entries and they are on. */
bool ttt__fused(const ttt_ctx *ctx);
void ttt__set_fused(ttt_ctx *ctx, bool on);
bool ttt__multi_tensor(const ttt_ctx *ctx);
/* AdamW over n parameters (p, g, m, v contiguous, weight decay wd[i]): a few launches where
 * ttt__multi_tensor and one dtype allow, else adamw per tensor; the same bits either way. */
int ttt__adamw_multi(ttt_ctx *ctx, int n, ttt_tensor *const *p, ttt_tensor *const *g, ttt_tensor *const *m,
                     ttt_tensor *const *v, const double *wd, double lr, double beta1, double beta2, double eps,
                     int64_t step);
/* x[i] *= a for every i (dense tensors): one launch or a few, else per tensor; the same bits either way. */
int ttt__scale_multi(ttt_ctx *ctx, const char *op, int n, ttt_tensor *const *x, double a);
/* sum over i of (f64) sum(x[i] * x[i]) into *out, an f64 step tensor of one element, with the bits of
 * ttt_mul, ttt_sum, ttt_cast to f64 and ttt_add in order. Needs ttt__multi_tensor and n >= 1 dense float
 * tensors of one dtype (the caller composes it otherwise). */
int ttt__sumsq_multi(ttt_ctx *ctx, const char *op, int n, ttt_tensor *const *x, ttt_tensor **out);
/* The thin SVD a = u diag(s) vt of a float matrix a [m, n] (any device, no graph):
 * u [m, r], s [r] descending, vt [r, n], r = min(m, n), f64 step tensors. */
int ttt__svd(ttt_ctx *ctx, ttt_tensor *a, ttt_tensor **u, ttt_tensor **s, ttt_tensor **vt);

/* composed/ttt_scan.c: TTT-Linear's inner loop over whole mini-batches (the math: the top of that file).
 * q, k (rotated), v [B, H, T, d], eta [B, H, T], tok [bs] with T a positive multiple of bs, ln_w, ln_b
 * [H, d], w0 [H, d, d] or [B, H, d, d], b0 [H, 1, d] or [B, H, 1, d], one float dtype (bf16 q, k, v, eta
 * may come with f32 tok, ln_w, ln_b, w0, b0; bf16 is computed in f32) -> out [B, H, T, d] in q's dtype
 * (q + LN(z), as the layer's dual form gives it), *w_final [B, H, d, d], *b_final [B, H, 1, d] (f32 for
 * bf16 q). One fused
 * kernel and a fused reverse scan where the backend has them (backend.h: ttt_linear_scan), else the
 * composed form; differentiable to any order (create_graph differentiates the composed form). */
int ttt__ttt_linear_scan(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *eta, ttt_tensor *tok,
                         ttt_tensor *ln_w, ttt_tensor *ln_b, ttt_tensor *w0, ttt_tensor *b0, double eps, ttt_tensor **out,
                         ttt_tensor **w_final, ttt_tensor **b_final);
/* The same composed of ops only (arguments as checked by ttt__ttt_linear_scan): the fallback, and tests. */
int ttt__ttt_linear_scan_composed(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *eta,
                                  ttt_tensor *tok, ttt_tensor *ln_w, ttt_tensor *ln_b, ttt_tensor *w0, ttt_tensor *b0,
                                  double eps, ttt_tensor **out, ttt_tensor **w_final, ttt_tensor **b_final);

/* composed/ttt_step.c: TTT-Linear's decode step, one token per (batch, head) at position r0 of its
 * mini-batch, the state w [B, H, d, d], c [B, H, 1, d] (at the mini-batch's start) and gw, gc (the sums of
 * its inner gradients so far) updated in place (the math: the top of that file). q, k (rotated), v
 * [B, H, 1, d], eta [B, H, 1], tok [bs], ln_w, ln_b [H, d] -> *out [B, H, 1, d]. For inference: returns
 * TTT_BACKEND_DECLINED, having changed nothing, where a graph would record, the context is unfused or the
 * backend has no kernel; the caller then composes the step. */
int ttt__ttt_linear_step(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *eta, ttt_tensor *tok,
                         ttt_tensor *ln_w, ttt_tensor *ln_b, ttt_tensor *w, ttt_tensor *c, ttt_tensor *gw, ttt_tensor *gc,
                         int64_t r0, double eps, ttt_tensor **out);
/* The same for TTT-MLP: w = {W1 [B, H, d, F], b1 [B, H, 1, F], W2 [B, H, F, d], b2 [B, H, 1, d]} and g their sums. */
int ttt__ttt_mlp_step(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *eta, ttt_tensor *tok,
                      ttt_tensor *ln_w, ttt_tensor *ln_b, ttt_tensor *const *w, ttt_tensor *const *g, int64_t r0, double eps,
                      ttt_tensor **out);

/* composed/ttt_scan.c: TTT-MLP's inner loop over whole mini-batches (the math: that file's MLP section).
 * q, k (rotated), v [B, H, T, d], eta [B, H, T], tok [bs] with T a positive multiple of bs, ln_w, ln_b
 * [H, d], w0 = {W1 [H, d, F], b1 [H, 1, F], W2 [H, F, d], b2 [H, 1, d]} (each [H, ..] or [B, H, ..]), one
 * float dtype -> out [B, H, T, d], w_final[4] = the weights after the last mini-batch ([B, H, ..]). The
 * backend's forward kernel (backend.h: ttt_mlp_scan) where no graph records, else the composed form. */
int ttt__ttt_mlp_scan(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *eta, ttt_tensor *tok,
                      ttt_tensor *ln_w, ttt_tensor *ln_b, ttt_tensor *const *w0, double eps, ttt_tensor **out,
                      ttt_tensor **w_final);
/* The same composed of ops only: the fallback, and tests. */
int ttt__ttt_mlp_scan_composed(ttt_ctx *ctx, ttt_tensor *q, ttt_tensor *k, ttt_tensor *v, ttt_tensor *eta, ttt_tensor *tok,
                               ttt_tensor *ln_w, ttt_tensor *ln_b, ttt_tensor *const *w0, double eps, ttt_tensor **out,
                               ttt_tensor **w_final);

/* composed/mttt_step.c: one inner step of the MTTT-MLP learner (src/layers/mttt.c; the math: that file).
 * w = {W1 [B, H, d, F], b1 [B, H, 1, F], W2 [B, H, F, d], b2 [B, H, 1, d]} (any strides: expanded views of
 * shared [H, ..] weights are read without a copy), k [B, H, m, d], xt [B, 1, m, D] (shared by the heads) or
 * [B, H, m, D], gh [H, D, d], lng, lnb [H, 1, D] (the decoder LN's affine) or both NULL (no LN), one dtype
 * (f32 or f64) -> w_out[4] = W - eta grad_W l ([B, H, ..]) and *loss = the sum over the B H pairs of each
 * pair's l before the step (a scalar). The backend's kernels (backend.h: mttt_mlp_step) where it has them,
 * else the composed form; differentiable to any order. */
int ttt__mttt_mlp_step(ttt_ctx *ctx, ttt_tensor *const *w, ttt_tensor *k, ttt_tensor *xt, ttt_tensor *gh, ttt_tensor *lng,
                       ttt_tensor *lnb, double eta, double eps, ttt_tensor **w_out, ttt_tensor **loss);
/* The inner loss alone (the sum over pairs of l, a scalar): the forward kernel without the step where no
 * graph records (inner-loss reporting), else the composed ops (differentiable). */
ttt_tensor *ttt__mttt_mlp_loss(ttt_ctx *ctx, ttt_tensor *const *w, ttt_tensor *k, ttt_tensor *xt, ttt_tensor *gh,
                               ttt_tensor *lng, ttt_tensor *lnb, double eps);
/* The learner's read-out gelu(q W1 + b1) W2 + b2 for q [B, H, n, d] and weights as ttt__mttt_mlp_step takes
 * them -> [B, H, n, d]: one kernel and a first-order backward kernel where the backend has them (backend.h:
 * mttt_mlp_apply), else (and its _composed form always) the ops. */
ttt_tensor *ttt__mttt_mlp_apply(ttt_ctx *ctx, ttt_tensor *const *w, ttt_tensor *q);
ttt_tensor *ttt__mttt_mlp_apply_composed(ttt_ctx *ctx, ttt_tensor *const *w, ttt_tensor *q);
/* The same composed of ops only (arguments as checked by ttt__mttt_mlp_step): the fallback, and tests. */
int ttt__mttt_mlp_step_composed(ttt_ctx *ctx, ttt_tensor *const *w, ttt_tensor *k, ttt_tensor *xt, ttt_tensor *gh,
                                ttt_tensor *lng, ttt_tensor *lnb, double eta, double eps, ttt_tensor **w_out,
                                ttt_tensor **loss);

/* util.c: message into a caller's buffer (returns TTT_ERR); grow a malloc'd
 * array of sz-byte elements to at least need (TTT_OK / TTT_ERR). */
int ttt__errbuf(char *err, size_t err_len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int ttt__grow(void **p, size_t *cap, size_t need, size_t sz);
/* FNV-1a, 64 bits, continuing from h (start with TTT_FNV_SEED): cheap content checks. */
#define TTT_FNV_SEED 0xcbf29ce484222325ull
uint64_t ttt__fnv1a(uint64_t h, const void *data, size_t n);

#endif
