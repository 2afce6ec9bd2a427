/* TTT-E2E (SPEC section 3): the language model's suffix blocks keep learning
 * while they read. See ttt_lm_e2e_loss in include/ttt/lm.h.
 *
 * One chunk of b tokens is one inner step, written as a pure function of its
 * inputs (chunk_step) so that the outer pass can rematerialize it:
 *
 *   in:  x [B, b, D]        the prefix blocks' output for the chunk (no path to W)
 *        head, final norm   parameters, passed in so their outer gradients flow
 *        per suffix block:  W_{i-1} = gate, up [B, F', D], down [B, D, F'] (per sequence)
 *                           the K, V of the last window - 1 positions [B, H, L, hd] (none for chunk 0)
 *                           the block's static weights (attention, norms, static MLP)
 *   out: the chunk's loss per sequence [B], its per-token losses [B, b],
 *        per suffix block W_i and the K, V tail for the next chunk.
 *
 * The inner gradient is taken with respect to W_{i-1} only; the tails and x
 * are inputs, so (as in the official code) the inner step sees earlier chunks
 * as constants while the outer gradient flows through them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/engine_private.h"
#include "lm_internal.h"
#include "ttt/autodiff.h"
#include "ttt/checkpoint.h"
#include "ttt/lm.h"
#include "ttt/ops.h"

int ttt_lm_is_e2e(const ttt_lm *m) { return m && m->cfg.prime_blocks > 0 && m->cfg.inner_chunk > 0; }

double ttt_lm_e2e_eta(int64_t step, int64_t warmup, double eta0, double eta1) {
    if (warmup <= 0) return eta1;
    double p = (double)(step + 1) / (double)warmup;
    p = p < 0 ? 0 : p > 1 ? 1 : p;
    return eta0 + (eta1 - eta0) * p;
}

/* The static weights of a block that a chunk step reads, as slots of b (the
 * optional QK-norm gains only when present). Returns their number. */
enum { N_STATIC_MAX = 15 };
static int static_slots(ttt_lm_block *b, ttt_tensor ***slot) {
    ttt_tensor **all[N_STATIC_MAX] = {&b->input_norm,     &b->q,           &b->k,        &b->v,
                                      &b->o,              &b->q_norm,      &b->k_norm,   &b->post_attn_norm,
                                      &b->pre_prime_norm, &b->post_prime_norm, &b->pre_mlp_norm, &b->gate,
                                      &b->up,             &b->down,        &b->post_mlp_norm};
    int n = 0;
    for (int i = 0; i < N_STATIC_MAX; i++)
        if (*all[i]) slot[n++] = all[i];
    return n;
}

typedef struct {
    const ttt_lm *m;
    ttt_tensor *targets; /* [B, b] of the chunk */
    int64_t t0;          /* the chunk's first position */
    int has_tail;        /* 0 for the first chunk */
    int n_static;        /* static weights per suffix block */
    double eta;
    int first_order;
} chunk_args;

static int n_inputs(const ttt_lm *m, int has_tail, int n_static) {
    return 3 + (int)m->cfg.prime_blocks * (3 + 2 * has_tail + n_static);
}
static int n_outputs(const ttt_lm *m) { return 2 + 5 * (int)m->cfg.prime_blocks; }

static int chunk_step(ttt_ctx *ctx, void *user, int n_in, ttt_tensor *const *in, int n_out, ttt_tensor **out) {
    const chunk_args *a = user;
    const ttt_lm *m = a->m;
    const ttt_lm_config *c = &m->cfg;
    const int S = (int)c->prime_blocks, first = (int)(c->depth - c->prime_blocks);
    if (n_in != n_inputs(m, a->has_tail, a->n_static) || n_out != n_outputs(m))
        return ttt__set_error(ctx, "lm_e2e_loss: chunk step called with %d inputs, %d outputs (internal)", n_in, n_out);
    ttt_lm view = *m; /* the model with the head and final norm taken from the inputs */
    view.embed = in[1];
    view.norm = in[2];
    ttt_tensor **w = ttt__meta_alloc(ctx, sizeof(ttt_tensor *) * (size_t)(6 * S));
    if (!w) return TTT_ERR;
    ttt_tensor **g = w + 3 * S;

    /* The inner loss always needs a graph to W; the outer pass differentiates
     * through the inner gradient only when it records (and not first-order). */
    const int create_graph = ttt_grad_enabled(ctx) && !a->first_order;
    ttt_grad_mode prev = ttt_grad_mode_set(ctx, 1);
    ttt_tensor *x = in[0];
    int k = 3, rc = TTT_OK;
    for (int j = 0; j < S && rc == TTT_OK; j++) {
        ttt_lm_block bl = m->blocks[first + j];
        for (int q = 0; q < 3; q++) {
            ttt_tensor *wj = in[k + q];
            if (!wj->requires_grad) { /* evaluation: a leaf the inner gradient can reach */
                if (!(wj = ttt_detach(ctx, wj))) {
                    rc = TTT_ERR;
                    break;
                }
                ttt_set_requires_grad(wj, 1);
            }
            w[3 * j + q] = wj;
        }
        if (rc) break;
        bl.prime_gate = w[3 * j], bl.prime_up = w[3 * j + 1], bl.prime_down = w[3 * j + 2];
        k += 3;
        ttt_tensor *tail_k = a->has_tail ? in[k] : NULL, *tail_v = a->has_tail ? in[k + 1] : NULL;
        k += 2 * a->has_tail;
        ttt_tensor **slot[N_STATIC_MAX];
        const int ns = static_slots(&bl, slot);
        for (int q = 0; q < ns; q++) *slot[q] = in[k + q];
        k += ns;

        ttt_tensor *h = ttt_rms_norm(ctx, x, ttt__lm_w(ctx, &view, bl.input_norm), c->norm_eps);
        ttt_tensor *qh = ttt__lm_heads(ctx, &view, h, bl.q, bl.q_norm, 1, a->t0);
        ttt_tensor *kh = ttt__lm_heads(ctx, &view, h, bl.k, bl.k_norm, 1, a->t0);
        ttt_tensor *vh = ttt__lm_heads(ctx, &view, h, bl.v, NULL, 0, a->t0);
        if (tail_k) {
            kh = ttt_concat(ctx, 2, (ttt_tensor *const[]){tail_k, kh}, 2);
            vh = ttt_concat(ctx, 2, (ttt_tensor *const[]){tail_v, vh}, 2);
        }
        if (!qh || !kh || !vh) {
            rc = TTT_ERR;
            break;
        }
        /* queries are the last b keys: ttt_attention's causal convention, the window masks the rest */
        ttt_tensor *o = ttt_attention(ctx, qh, kh, vh, 1, c->window, 0.0);
        x = ttt__lm_block_rest(ctx, &view, &bl, x, o);
        const int64_t L = kh->shape[2], keep = L < c->window - 1 ? L : c->window - 1;
        out[2 + 5 * j + 3] = ttt_slice(ctx, kh, 2, L - keep, L, 1);
        out[2 + 5 * j + 4] = ttt_slice(ctx, vh, 2, L - keep, L, 1);
        if (!x) rc = TTT_ERR;
    }
    ttt_tensor *inner = NULL;
    if (rc == TTT_OK) {
        ttt_tensor *hf = ttt_rms_norm(ctx, x, ttt__lm_w(ctx, &view, view.norm), c->norm_eps);
        /* the head may come cast and padded with zero rows (ttt__lm_head_weight): the padding logits are sliced off */
        ttt_tensor *logits = ttt_matmul(ctx, hf, ttt__lm_w(ctx, &view, view.embed), 0, 1);
        if (logits && logits->shape[logits->ndim - 1] != c->vocab) logits = ttt_slice(ctx, logits, -1, 0, c->vocab, 1);
        const ttt_dtype loss_dt = m->embed->dtype; /* the loss is not computed in bf16 */
        if (logits && logits->dtype != loss_dt && !(logits->dtype == TTT_BF16 && loss_dt == TTT_F32))
            logits = ttt_cast(ctx, logits, loss_dt); /* bf16 logits give an f32 loss as they are */
        ttt_tensor *rows = ttt_cross_entropy_rows(ctx, logits, a->targets, -100); /* [B, b] */
        const double b = (double)a->targets->shape[1];
        ttt_tensor *count = ttt_sum(ctx, ttt_ge(ctx, ttt_cast(ctx, a->targets, loss_dt), ttt_scalar(ctx, loss_dt, 0.0)),
                                    1, (const int[]){1}, 0);
        ttt_tensor *per_seq = ttt_div(ctx, ttt_sum(ctx, rows, 1, (const int[]){1}, 0), ttt_clamp(ctx, count, 1.0, b));
        out[0] = per_seq;
        out[1] = rows;
        /* sequences have their own W: the gradient of the sum is each one's own gradient */
        inner = ttt_sum(ctx, per_seq, 0, NULL, 0);
        rc = inner ? ttt_grad(ctx, 1, &inner, NULL, 3 * S, w, g, create_graph) : TTT_ERR;
    }
    ttt_grad_mode_restore(ctx, prev);
    if (rc != TTT_OK) return TTT_ERR;
    /* W_i = W_{i-1} - eta * scale * g per sequence, scale = clip / max(|g|, clip) with |g| the global norm of one
     * sequence's gradients over every prime weight (optax's clip_by_global_norm): one op over all 3S tensors */
    ttt_tensor **wnew = ttt__meta_alloc(ctx, sizeof(ttt_tensor *) * (size_t)(3 * S));
    if (!wnew || ttt_clip_step(ctx, 3 * S, w, g, a->eta, c->inner_clip, wnew) != TTT_OK) return TTT_ERR;
    for (int j = 0; j < S; j++)
        for (int q = 0; q < 3; q++) out[2 + 5 * j + q] = wnew[3 * j + q];
    for (int i = 0; i < n_out; i++)
        if (!out[i]) return TTT_ERR;
    return TTT_OK;
}

/* The suffix blocks' static weights and the final norm in the compute dtype, cast once per step rather than in
 * every chunk and its rematerialization: statics[j * n_static + q] for block j's slot q, then the final norm.
 * Their gradients add up over the chunks in the compute dtype, as the head's do. NULL on failure. */
static ttt_tensor **statics_for_chunks(ttt_ctx *ctx, const ttt_lm *m, int n_static) {
    const int S = (int)m->cfg.prime_blocks, first = (int)(m->cfg.depth - m->cfg.prime_blocks);
    ttt_tensor **st = ttt__meta_alloc(ctx, sizeof(ttt_tensor *) * (size_t)(S * n_static + 1));
    if (!st) return NULL;
    for (int j = 0; j < S; j++) {
        ttt_lm_block bl = m->blocks[first + j];
        ttt_tensor **slot[N_STATIC_MAX];
        static_slots(&bl, slot);
        for (int q = 0; q < n_static; q++)
            if (!(st[j * n_static + q] = ttt__lm_w(ctx, m, *slot[q]))) return NULL;
    }
    return (st[S * n_static] = ttt__lm_w(ctx, m, m->norm)) ? st : NULL;
}

/* The inputs of chunk_step (see the top of the file); tail NULL for the first chunk; statics NULL: the model's own
 * tensors (prefill and decode). */
static void chunk_inputs(const ttt_lm *m, ttt_tensor *head, ttt_tensor *const *statics, ttt_tensor *x,
                         ttt_tensor *const *w, ttt_tensor *const *tail, ttt_tensor **in) {
    const int S = (int)m->cfg.prime_blocks, first = (int)(m->cfg.depth - m->cfg.prime_blocks);
    ttt_lm_block probe = m->blocks[first];
    ttt_tensor **probe_slot[N_STATIC_MAX];
    const int n_static = static_slots(&probe, probe_slot);
    in[0] = x;
    in[1] = head;
    in[2] = statics ? statics[S * n_static] : m->norm;
    int k = 3;
    for (int j = 0; j < S; j++) {
        for (int q = 0; q < 3; q++) in[k++] = w[3 * j + q];
        if (tail) in[k++] = tail[2 * j], in[k++] = tail[2 * j + 1];
        ttt_lm_block bl = m->blocks[first + j];
        ttt_tensor **slot[N_STATIC_MAX];
        const int ns = static_slots(&bl, slot);
        for (int q = 0; q < ns; q++) in[k++] = statics ? statics[j * n_static + q] : *slot[q];
    }
}

/* Preallocated results of an evaluation pass, which releases each chunk's
 * temporaries once they are copied here. */
typedef struct {
    ttt_tensor **w, **tail; /* 3S, 2S */
    int64_t tail_cap;
} eval_bufs;

static int eval_bufs_init(ttt_ctx *ctx, const ttt_lm *m, int64_t B, int64_t T, ttt_tensor *const *w0, eval_bufs *e) {
    const ttt_lm_config *c = &m->cfg;
    const int S = (int)c->prime_blocks;
    e->w = ttt__meta_alloc(ctx, sizeof(ttt_tensor *) * (size_t)(5 * S));
    if (!e->w) return TTT_ERR;
    e->tail = e->w + 3 * S;
    e->tail_cap = c->window - 1 < T ? c->window - 1 : T;
    const int64_t H = c->heads, hd = c->dim / c->heads;
    for (int i = 0; i < 3 * S; i++)
        if (!(e->w[i] = ttt_new(ctx, w0[i]->dtype, w0[i]->ndim, w0[i]->shape))) return TTT_ERR;
    for (int i = 0; i < 2 * S; i++)
        if (!(e->tail[i] = ttt_new(ctx, m->compute, TTT_DIMS(B, H, e->tail_cap, hd)))) return TTT_ERR;
    return TTT_OK;
}

ttt_tensor *ttt_lm_e2e_loss(ttt_ctx *ctx, const ttt_lm *m, ttt_tensor *ids, ttt_tensor *targets, double eta,
                            int flags, ttt_tensor **per_token, ttt_tensor **chunk_losses) {
    static const char fn[] = "lm_e2e_loss";
    if (per_token) *per_token = NULL;
    if (chunk_losses) *chunk_losses = NULL;
    if (!ctx || !ids || !targets) return NULL;
    if (ttt__lm_check_model(ctx, fn, m) || ttt__lm_check_pair(ctx, fn, ids, targets)) return NULL;
    const ttt_lm_config *c = &m->cfg;
    if (!ttt_lm_is_e2e(m))
        return ttt__set_error(ctx, "%s: the model does not learn at test time (prime_blocks %lld, inner_chunk %lld)",
                              fn, (long long)c->prime_blocks, (long long)c->inner_chunk),
               NULL;
    if (!(eta >= 0) || !isfinite(eta))
        return ttt__set_error(ctx, "%s: inner learning rate %g must be a finite number >= 0", fn, eta), NULL;
    if (flags & ~(TTT_E2E_FIRST_ORDER | TTT_E2E_KEEP_GRAPHS))
        return ttt__set_error(ctx, "%s: unknown flags 0x%x (TTT_E2E_FIRST_ORDER, TTT_E2E_KEEP_GRAPHS)", fn,
                              (unsigned)flags),
               NULL;
    const int first_order = (flags & TTT_E2E_FIRST_ORDER) != 0, keep_graphs = (flags & TTT_E2E_KEEP_GRAPHS) != 0;
    const int64_t B = ids->shape[0], T = ids->shape[1], b = c->inner_chunk;
    if (T % b)
        return ttt__set_error(ctx, "%s: sequence length %lld must be a multiple of the inner chunk %lld", fn,
                              (long long)T, (long long)b),
               NULL;
    const int S = (int)c->prime_blocks, first = (int)(c->depth - c->prime_blocks);
    const int64_t n = T / b;

    ttt_tensor *x = ttt__lm_prefix(ctx, m, ids, first);
    if (!x) return NULL;
    const int record = ttt__recording(ctx, 1, &x) || ttt__recording(ctx, m->n_params, m->params);

    /* W_0 per sequence: broadcast views of the parameters (their gradients sum back) */
    ttt_tensor **w = ttt__meta_alloc(ctx, sizeof(ttt_tensor *) * (size_t)(5 * S));
    if (!w) return NULL;
    ttt_tensor **tail = w + 3 * S;
    for (int j = 0; j < S; j++) {
        const ttt_lm_block *bl = &m->blocks[first + j];
        ttt_tensor *p[3] = {bl->prime_gate, bl->prime_up, bl->prime_down};
        for (int q = 0; q < 3; q++)
            if (!(w[3 * j + q] = ttt_expand(ctx, p[q], TTT_DIMS(B, p[q]->shape[0], p[q]->shape[1])))) return NULL;
    }
    ttt_lm_block probe = m->blocks[first];
    ttt_tensor **slot[N_STATIC_MAX];
    const int n_static = static_slots(&probe, slot);
    const ttt_dtype loss_dt = m->embed->dtype;

    ttt_tensor *head = ttt__lm_head_weight(ctx, m); /* once per step; its gradient adds up over the chunks */
    ttt_tensor **statics = head ? statics_for_chunks(ctx, m, n_static) : NULL;
    if (!statics) return NULL;
    eval_bufs e = {0};
    ttt_tensor *rows_all = NULL, *means_all = NULL, **seq_parts = NULL, **row_parts = NULL;
    if (record) {
        seq_parts = ttt__meta_alloc(ctx, sizeof(ttt_tensor *) * (size_t)(2 * n));
        if (!seq_parts) return NULL;
        row_parts = seq_parts + n;
    } else {
        if (eval_bufs_init(ctx, m, B, T, w, &e) != TTT_OK || !(rows_all = ttt_new(ctx, loss_dt, TTT_DIMS(B, T))) ||
            !(means_all = ttt_new(ctx, loss_dt, TTT_DIMS(n))))
            return NULL;
    }
    for (int64_t i = 0; i < n; i++) {
        const int64_t t0 = i * b;
        const int has_tail = i > 0;
        const ttt_mark_t mark = ttt_mark(ctx);
        const int nin = n_inputs(m, has_tail, n_static), nout = n_outputs(m);
        /* arguments live in the step arena: a checkpoint's backward pass calls the step again */
        chunk_args *a = ttt__meta_alloc(ctx, sizeof *a);
        ttt_tensor **in = ttt__meta_alloc(ctx, sizeof(ttt_tensor *) * (size_t)(nin + nout));
        if (!a || !in) return NULL;
        ttt_tensor **out = in + nin;
        *a = (chunk_args){m, ttt_slice(ctx, targets, 1, t0, t0 + b, 1), t0, has_tail, n_static, eta, first_order};
        chunk_inputs(m, head, statics, ttt_slice(ctx, x, 1, t0, t0 + b, 1), w, has_tail ? tail : NULL, in);
        if (!a->targets || !in[0]) return NULL;
        if (record ? (keep_graphs ? ttt_subgraph : ttt_checkpoint)(ctx, chunk_step, a, nin, in, nout, out) != TTT_OK
                   : chunk_step(ctx, a, nin, in, nout, out) != TTT_OK)
            return NULL;
        if (record) {
            seq_parts[i] = out[0], row_parts[i] = out[1];
            for (int j = 0; j < S; j++) {
                for (int q = 0; q < 3; q++) w[3 * j + q] = out[2 + 5 * j + q];
                tail[2 * j] = out[2 + 5 * j + 3], tail[2 * j + 1] = out[2 + 5 * j + 4];
            }
            continue;
        }
        /* evaluation: keep the results, drop the chunk's graph and temporaries */
        const int64_t L = out[2 + 3]->shape[2], start = e.tail_cap - L;
        if (ttt__copy_into(ctx, rows_all, 1, t0, 1, out[1]) != TTT_OK ||
            ttt__copy_into(ctx, means_all, 0, i, 1, ttt_reshape(ctx, ttt_mean(ctx, out[0], 0, NULL, 0), TTT_DIMS(1))) !=
                TTT_OK)
            return NULL;
        for (int j = 0; j < S; j++) {
            for (int q = 0; q < 3; q++)
                if (ttt__copy_into(ctx, e.w[3 * j + q], 0, 0, 1, out[2 + 5 * j + q]) != TTT_OK) return NULL;
            for (int q = 0; q < 2; q++)
                if (ttt__copy_into(ctx, e.tail[2 * j + q], 2, start, 1, out[2 + 5 * j + 3 + q]) != TTT_OK) return NULL;
        }
        ttt_release(ctx, mark);
        for (int j = 0; j < S; j++) {
            for (int q = 0; q < 3; q++) w[3 * j + q] = e.w[3 * j + q];
            for (int q = 0; q < 2; q++)
                if (!(tail[2 * j + q] = ttt_slice(ctx, e.tail[2 * j + q], 2, start, e.tail_cap, 1))) return NULL;
        }
    }
    ttt_tensor *seq_losses = NULL; /* [n, B] */
    if (record) {
        seq_losses = n == 1 ? ttt_reshape(ctx, seq_parts[0], TTT_DIMS(1, B)) : ttt_stack(ctx, (int)n, seq_parts, 0);
        rows_all = n == 1 ? row_parts[0] : ttt_concat(ctx, (int)n, row_parts, 1);
        means_all = ttt_mean(ctx, seq_losses, 1, (const int[]){1}, 0);
    }
    if (per_token) *per_token = rows_all;
    if (chunk_losses) *chunk_losses = means_all;
    return ttt_mean(ctx, means_all, 0, NULL, 0);
}

/* ---- prefill and decode: reading and generating while learning ------------------------------- */

static int check_state(ttt_ctx *ctx, const char *fn, const ttt_lm *m, const ttt_lm_e2e_state *s) {
    if (!s || !s->w || !s->chunk_x || !s->chunk_ids || !s->cache.k)
        return ttt__set_error(ctx, "%s: the state is not initialised (ttt_lm_e2e_state_init)", fn);
    if (s->n_w != 3 * (int)m->cfg.prime_blocks || s->cache.k_depth != m->cfg.depth ||
        s->chunk_x->shape[1] != m->cfg.inner_chunk || s->chunk_x->shape[2] != m->cfg.dim ||
        s->cache.capacity != m->cfg.window - 1 + m->cfg.inner_chunk)
        return ttt__set_error(ctx, "%s: the state was made for another model", fn);
    return TTT_OK;
}

void ttt_lm_e2e_state_free(ttt_ctx *ctx, ttt_lm_e2e_state *s) {
    if (!ctx || !s) return;
    ttt_lm_cache_free(ctx, &s->cache);
    for (int i = 0; s->w && i < s->n_w; i++) ttt_persistent_free(ctx, s->w[i]);
    free(s->w);
    ttt_persistent_free(ctx, s->chunk_x);
    ttt_persistent_free(ctx, s->chunk_ids);
    *s = (ttt_lm_e2e_state){0};
}

int ttt_lm_e2e_state_reset(ttt_ctx *ctx, const ttt_lm *m, ttt_lm_e2e_state *s) {
    static const char fn[] = "lm_e2e_state_reset";
    if (!ctx) return TTT_ERR;
    if (ttt__lm_check_model(ctx, fn, m) || check_state(ctx, fn, m, s)) return TTT_ERR;
    const int S = (int)m->cfg.prime_blocks, first = (int)(m->cfg.depth - m->cfg.prime_blocks);
    const ttt_mark_t mark = ttt_mark(ctx);
    int rc = TTT_OK;
    for (int j = 0; j < S && rc == TTT_OK; j++) {
        const ttt_lm_block *bl = &m->blocks[first + j];
        ttt_tensor *p[3] = {bl->prime_gate, bl->prime_up, bl->prime_down};
        for (int q = 0; q < 3 && rc == TTT_OK; q++)
            rc = ttt_assign(ctx, s->w[3 * j + q], ttt_expand(ctx, p[q], TTT_DIMS(s->batch, p[q]->shape[0], p[q]->shape[1])));
    }
    ttt_release(ctx, mark);
    ttt_lm_cache_reset(&s->cache);
    s->steps = 0;
    s->last_inner_loss = NAN;
    return rc;
}

int ttt_lm_e2e_state_init(ttt_ctx *ctx, const ttt_lm *m, ttt_lm_e2e_state *s, int64_t batch, double eta) {
    static const char fn[] = "lm_e2e_state_init";
    if (!ctx) return TTT_ERR;
    if (!s) return ttt__set_error(ctx, "%s: state must not be NULL", fn);
    *s = (ttt_lm_e2e_state){0};
    if (ttt__lm_check_model(ctx, fn, m)) return TTT_ERR;
    if (!ttt_lm_is_e2e(m)) return ttt__set_error(ctx, "%s: the model does not learn at test time", fn);
    if (!(eta >= 0) || !isfinite(eta)) return ttt__set_error(ctx, "%s: eta %g must be a finite number >= 0", fn, eta);
    const ttt_lm_config *c = &m->cfg;
    const int S = (int)c->prime_blocks, first = (int)(c->depth - c->prime_blocks);
    s->batch = batch;
    s->eta = eta;
    if (ttt__lm_cache_init(ctx, m, &s->cache, batch, c->window - 1 + c->inner_chunk) != TTT_OK) return TTT_ERR;
    s->n_w = 3 * S;
    if (!(s->w = calloc((size_t)s->n_w, sizeof *s->w))) {
        ttt_lm_e2e_state_free(ctx, s);
        return ttt__set_error(ctx, "%s: out of host memory", fn);
    }
    int rc = TTT_OK;
    for (int j = 0; j < S && rc == TTT_OK; j++) {
        const ttt_lm_block *bl = &m->blocks[first + j];
        ttt_tensor *p[3] = {bl->prime_gate, bl->prime_up, bl->prime_down};
        for (int q = 0; q < 3 && rc == TTT_OK; q++)
            if (!(s->w[3 * j + q] = ttt_persistent(ctx, p[q]->dtype, TTT_DIMS(batch, p[q]->shape[0], p[q]->shape[1]),
                                                   "lm.e2e.w")))
                rc = TTT_ERR;
    }
    if (rc == TTT_OK &&
        (!(s->chunk_x = ttt_persistent(ctx, m->compute, TTT_DIMS(batch, c->inner_chunk, c->dim), "lm.e2e.chunk_x")) ||
         !(s->chunk_ids = ttt_persistent(ctx, TTT_I32, TTT_DIMS(batch, c->inner_chunk), "lm.e2e.chunk_ids"))))
        rc = TTT_ERR;
    /* defined bytes everywhere, so a state file never holds uninitialised memory */
    for (int64_t i = 0; i < c->depth && rc == TTT_OK; i++)
        rc = ttt_fill(ctx, s->cache.k[i], 0.0) || ttt_fill(ctx, s->cache.v[i], 0.0) ? TTT_ERR : TTT_OK;
    if (rc == TTT_OK) rc = ttt_fill(ctx, s->chunk_x, 0.0) || ttt_fill(ctx, s->chunk_ids, 0.0) ? TTT_ERR : TTT_OK;
    if (rc == TTT_OK) rc = ttt_lm_e2e_state_reset(ctx, m, s);
    if (rc != TTT_OK) ttt_lm_e2e_state_free(ctx, s);
    return rc;
}

/* The inner step on the chunk just completed (positions t0 .. t0 + b - 1), whose
 * last target is next [B, 1], the first id of the next chunk. */
static int state_inner_step(ttt_ctx *ctx, const ttt_lm *m, ttt_lm_e2e_state *s, ttt_tensor *next) {
    const ttt_lm_config *c = &m->cfg;
    const int S = (int)c->prime_blocks;
    const int64_t b = c->inner_chunk, t0 = s->cache.len - b, L = c->window - 1 < t0 ? c->window - 1 : t0;
    ttt_lm_block probe = m->blocks[c->depth - S];
    ttt_tensor **slot[N_STATIC_MAX];
    const int n_static = static_slots(&probe, slot), has_tail = L > 0;
    const int nin = n_inputs(m, has_tail, n_static), nout = n_outputs(m);
    ttt_tensor **in = ttt__meta_alloc(ctx, sizeof(ttt_tensor *) * (size_t)(nin + nout + 2 * S));
    if (!in) return TTT_ERR;
    ttt_tensor **out = in + nin, **tail = out + nout;
    for (int j = 0; has_tail && j < S; j++) {
        const int64_t i = c->depth - S + j;
        if (!(tail[2 * j] = ttt__lm_ring_range(ctx, &s->cache, s->cache.k[i], t0 - L, L)) ||
            !(tail[2 * j + 1] = ttt__lm_ring_range(ctx, &s->cache, s->cache.v[i], t0 - L, L)))
            return TTT_ERR;
    }
    ttt_tensor *targets =
        ttt_concat(ctx, 2, (ttt_tensor *const[]){ttt_slice(ctx, s->chunk_ids, 1, 1, b, 1), next}, 1);
    if (!targets) return TTT_ERR;
    chunk_args a = {m, targets, t0, has_tail, n_static, s->eta, 1};
    chunk_inputs(m, m->embed, NULL, s->chunk_x, s->w, has_tail ? tail : NULL, in);
    if (chunk_step(ctx, &a, nin, in, nout, out) != TTT_OK) return TTT_ERR;
    for (int i = 0; i < s->n_w; i++)
        if (ttt_assign(ctx, s->w[i], out[2 + 5 * (i / 3) + i % 3]) != TTT_OK) return TTT_ERR;
    s->last_inner_loss = ttt_item(ctx, ttt_mean(ctx, out[0], 0, NULL, 0));
    s->steps++;
    return TTT_OK;
}

ttt_tensor *ttt_lm_e2e_decode(ttt_ctx *ctx, const ttt_lm *m, ttt_lm_e2e_state *s, ttt_tensor *ids, int all_logits) {
    static const char fn[] = "lm_e2e_decode";
    if (!ctx || !ids) return NULL;
    if (ttt__lm_check_model(ctx, fn, m) || ttt__lm_check_pair(ctx, fn, ids, ids) || check_state(ctx, fn, m, s))
        return NULL;
    const ttt_lm_config *c = &m->cfg;
    const int64_t B = ids->shape[0], T = ids->shape[1], b = c->inner_chunk;
    const int S = (int)c->prime_blocks, first = (int)(c->depth - c->prime_blocks);
    if (B != s->batch)
        return ttt__set_error(ctx, "%s: ids have batch %lld but the state was made for %lld", fn, (long long)B,
                              (long long)s->batch),
               NULL;
    ttt_lm_block *blocks = ttt__meta_alloc(ctx, sizeof *blocks * (size_t)c->depth);
    ttt_tensor *out = ttt_new(ctx, m->embed->dtype, TTT_DIMS(B, all_logits ? T : 1, c->vocab));
    if (!blocks || !out) return NULL;
    memcpy(blocks, m->blocks, sizeof *blocks * (size_t)c->depth);
    for (int j = 0; j < S; j++) {
        ttt_lm_block *bl = &blocks[first + j];
        bl->prime_gate = s->w[3 * j], bl->prime_up = s->w[3 * j + 1], bl->prime_down = s->w[3 * j + 2];
    }
    ttt_no_grad_begin(ctx);
    int rc = TTT_OK;
    for (int64_t t = 0; t < T && rc == TTT_OK;) {
        const int64_t p = s->cache.len, off = p % b;
        const ttt_mark_t mark = ttt_mark(ctx);
        if (p > 0 && off == 0 && s->steps < p / b) /* the chunk before is complete: learn from it first */
            rc = state_inner_step(ctx, m, s, ttt_slice(ctx, ids, 1, t, t + 1, 1));
        /* a piece of the input within one chunk */
        const int64_t n = T - t < b - off ? T - t : b - off;
        ttt_tensor *piece = rc == TTT_OK ? ttt_contiguous(ctx, ttt_slice(ctx, ids, 1, t, t + n, 1)) : NULL;
        ttt_tensor *x = ttt__lm_decode_range(ctx, m, &s->cache, blocks, ttt__lm_embed(ctx, m, piece), 0, first);
        if (!x || ttt__copy_into(ctx, s->chunk_x, 1, off, 1, x) != TTT_OK ||
            ttt__copy_into(ctx, s->chunk_ids, 1, off, 1, piece) != TTT_OK)
            rc = TTT_ERR;
        ttt_tensor *lg = rc == TTT_OK ? ttt__lm_head(ctx, m, ttt__lm_decode_range(ctx, m, &s->cache, blocks, x, first,
                                                                                   c->depth))
                                      : NULL;
        if (!lg) rc = TTT_ERR;
        else {
            s->cache.len += n;
            rc = all_logits ? ttt__copy_into(ctx, out, 1, t, 1, lg)
                            : (t + n == T ? ttt__copy_into(ctx, out, 1, 0, 1, ttt_slice(ctx, lg, 1, n - 1, n, 1))
                                          : TTT_OK);
        }
        ttt_release(ctx, mark);
        t += n;
    }
    ttt_no_grad_end(ctx);
    return rc == TTT_OK ? out : NULL;
}

/* ---- test-time state files --------------------------------------------------------------------- */

int ttt_lm_fingerprint(ttt_ctx *ctx, const ttt_lm *m, char *buf, size_t len) {
    if (!ctx) return TTT_ERR;
    if (ttt__lm_check_model(ctx, "lm_fingerprint", m)) return TTT_ERR;
    if (!buf || len < 17) return ttt__set_error(ctx, "lm_fingerprint: the buffer needs 17 bytes");
    const ttt_lm_config *c = &m->cfg;
    const int64_t fields[] = {c->vocab, c->dim, c->depth, c->heads, c->mlp_hidden, c->window, c->prime_blocks,
                              c->prime_hidden, c->qk_norm, c->inner_chunk};
    uint64_t h = ttt__fnv1a(TTT_FNV_SEED, fields, sizeof fields);
    const double reals[] = {c->rope_theta, c->norm_eps, c->inner_clip};
    h = ttt__fnv1a(h, reals, sizeof reals);
    for (int i = 0; i < m->n_params; i++) {
        const ttt_tensor *p = m->params[i];
        const size_t bytes = (size_t)ttt_numel(p) * ttt_dtype_size(p->dtype);
        void *host = malloc(bytes ? bytes : 1);
        if (!host) return ttt__set_error(ctx, "lm_fingerprint: out of host memory");
        if (ttt_copy_to_host(ctx, p, host, p->dtype) != TTT_OK) {
            free(host);
            return TTT_ERR;
        }
        h = ttt__fnv1a(ttt__fnv1a(h, m->names[i], strlen(m->names[i])), host, bytes);
        free(host);
    }
    snprintf(buf, len, "%016llx", (unsigned long long)h);
    return TTT_OK;
}

/* The state's tensors with their file names (n = 3S + 2 depth + 2); names live in names[]. */
static int state_tensors(const ttt_lm_e2e_state *s, ttt_named_tensor *nt, char (*names)[48]) {
    int n = 0;
    for (int i = 0; i < s->n_w; i++) {
        static const char *part[3] = {"gate", "up", "down"};
        snprintf(names[n], 48, "e2e.prime.%d.%s", i / 3, part[i % 3]);
        nt[n] = (ttt_named_tensor){names[n], s->w[i]}, n++;
    }
    for (int64_t i = 0; i < s->cache.k_depth; i++) {
        snprintf(names[n], 48, "e2e.cache.%lld.k", (long long)i);
        nt[n] = (ttt_named_tensor){names[n], s->cache.k[i]}, n++;
        snprintf(names[n], 48, "e2e.cache.%lld.v", (long long)i);
        nt[n] = (ttt_named_tensor){names[n], s->cache.v[i]}, n++;
    }
    nt[n] = (ttt_named_tensor){"e2e.chunk_x", s->chunk_x}, n++;
    nt[n] = (ttt_named_tensor){"e2e.chunk_ids", s->chunk_ids}, n++;
    return n;
}

static const char STATE_FORMAT[] = "ttt-e2e-state/1";

int ttt_lm_e2e_state_save(ttt_ctx *ctx, const ttt_lm *m, const ttt_lm_e2e_state *s, const char *path,
                          const char *model_id, const char *tokenizer_id) {
    static const char fn[] = "lm_e2e_state_save";
    if (!ctx) return TTT_ERR;
    if (ttt__lm_check_model(ctx, fn, m) || check_state(ctx, fn, m, s)) return TTT_ERR;
    if (!path) return ttt__set_error(ctx, "%s: no path", fn);
    const int cap = s->n_w + 2 * (int)s->cache.k_depth + 2;
    ttt_named_tensor *nt = calloc((size_t)cap, sizeof *nt);
    char (*names)[48] = calloc((size_t)cap, sizeof *names);
    if (!nt || !names) {
        free(nt), free(names);
        return ttt__set_error(ctx, "%s: out of host memory", fn);
    }
    const int n = state_tensors(s, nt, names);
    char len_s[32], steps_s[32], eta_s[40], batch_s[32], chunk_s[32], window_s[32];
    snprintf(len_s, sizeof len_s, "%lld", (long long)s->cache.len);
    snprintf(steps_s, sizeof steps_s, "%lld", (long long)s->steps);
    snprintf(eta_s, sizeof eta_s, "%.17g", s->eta);
    snprintf(batch_s, sizeof batch_s, "%lld", (long long)s->batch);
    snprintf(chunk_s, sizeof chunk_s, "%lld", (long long)m->cfg.inner_chunk);
    snprintf(window_s, sizeof window_s, "%lld", (long long)m->cfg.window);
    const char *meta[] = {"format", STATE_FORMAT, "model", model_id ? model_id : "", "tokenizer",
                          tokenizer_id ? tokenizer_id : "", "position", len_s, "inner_steps", steps_s, "eta", eta_s,
                          "batch", batch_s, "inner_chunk", chunk_s, "window", window_s, NULL};
    const int rc = ttt_save_safetensors(ctx, path, n, nt, meta);
    free(nt), free(names);
    return rc;
}

int ttt_lm_e2e_state_load(ttt_ctx *ctx, const ttt_lm *m, ttt_lm_e2e_state *s, const char *path, const char *model_id,
                          const char *tokenizer_id) {
    static const char fn[] = "lm_e2e_state_load";
    if (!ctx) return TTT_ERR;
    if (ttt__lm_check_model(ctx, fn, m) || check_state(ctx, fn, m, s)) return TTT_ERR;
    if (!path) return ttt__set_error(ctx, "%s: no path", fn);
    char *meta = NULL, buf[128];
    int rc = ttt_load_safetensors(ctx, path, 0, NULL, &meta);
    if (rc != TTT_OK) {
        ttt_lm_e2e_state_reset(ctx, m, s); /* an unreadable file leaves the state reset too, as documented */
        return rc;
    }
    if (!meta || ttt_metadata_get(meta, "format", buf, sizeof buf) || strcmp(buf, STATE_FORMAT))
        rc = ttt__set_error(ctx, "%s: %s is not a TTT-E2E state file (format '%s', want '%s')", fn, path,
                            meta && !ttt_metadata_get(meta, "format", buf, sizeof buf) ? buf : "none", STATE_FORMAT);
    const struct {
        const char *key, *want;
    } ids[] = {{"model", model_id}, {"tokenizer", tokenizer_id}};
    for (int i = 0; i < 2 && rc == TTT_OK; i++)
        if (ids[i].want && *ids[i].want &&
            (ttt_metadata_get(meta, ids[i].key, buf, sizeof buf) || strcmp(buf, ids[i].want)))
            rc = ttt__set_error(ctx, "%s: %s was made with another %s (%s, this one is %s)", fn, path, ids[i].key,
                                ttt_metadata_get(meta, ids[i].key, buf, sizeof buf) ? "unknown" : buf, ids[i].want);
    int64_t pos = -1, steps = -1;
    if (rc == TTT_OK) {
        if (ttt_metadata_get(meta, "position", buf, sizeof buf) == TTT_OK) pos = atoll(buf);
        if (ttt_metadata_get(meta, "inner_steps", buf, sizeof buf) == TTT_OK) steps = atoll(buf);
        if (pos < 0 || steps < 0 || steps > pos / m->cfg.inner_chunk)
            rc = ttt__set_error(ctx, "%s: %s: position %lld / inner_steps %lld are missing or inconsistent", fn, path,
                                (long long)pos, (long long)steps);
    }
    free(meta);
    if (rc != TTT_OK) {
        ttt_lm_e2e_state_reset(ctx, m, s); /* the message stays the refusal's */
        return rc;
    }
    const int cap = s->n_w + 2 * (int)s->cache.k_depth + 2;
    ttt_named_tensor *nt = calloc((size_t)cap, sizeof *nt);
    char (*names)[48] = calloc((size_t)cap, sizeof *names);
    if (!nt || !names) rc = ttt__set_error(ctx, "%s: out of host memory", fn);
    /* shapes must match this model and batch: the loader refuses a mismatch, naming the tensor */
    if (rc == TTT_OK) rc = ttt_load_safetensors(ctx, path, state_tensors(s, nt, names), nt, NULL);
    free(nt), free(names);
    if (rc != TTT_OK) {
        ttt_lm_e2e_state_reset(ctx, m, s); /* never half a state */
        return TTT_ERR;
    }
    s->cache.len = pos;
    s->steps = steps;
    s->last_inner_loss = NAN;
    return TTT_OK;
}

/* ---- readers: any model's reading state --------------------------------------------------------- */

int ttt_lm_reader_init(ttt_ctx *ctx, const ttt_lm *m, ttt_lm_reader *r, int64_t batch, int64_t max_len) {
    if (!ctx) return TTT_ERR;
    if (!r) return ttt__set_error(ctx, "lm_reader_init: reader must not be NULL");
    *r = (ttt_lm_reader){0};
    if (ttt__lm_check_model(ctx, "lm_reader_init", m)) return TTT_ERR;
    r->e2e = ttt_lm_is_e2e(m);
    return r->e2e ? ttt_lm_e2e_state_init(ctx, m, &r->state, batch, 1.0)
                  : ttt_lm_cache_init(ctx, m, &r->cache, batch, max_len);
}

void ttt_lm_reader_free(ttt_ctx *ctx, ttt_lm_reader *r) {
    if (!ctx || !r) return;
    ttt_lm_e2e_state_free(ctx, &r->state);
    ttt_lm_cache_free(ctx, &r->cache);
    *r = (ttt_lm_reader){0};
}

int ttt_lm_reader_reset(ttt_ctx *ctx, const ttt_lm *m, ttt_lm_reader *r) {
    if (!ctx || !r) return TTT_ERR;
    if (r->e2e) return ttt_lm_e2e_state_reset(ctx, m, &r->state);
    ttt_lm_cache_reset(&r->cache);
    return TTT_OK;
}

int64_t ttt_lm_reader_pos(const ttt_lm_reader *r) { return !r ? 0 : r->e2e ? r->state.cache.len : r->cache.len; }

int64_t ttt_lm_reader_room(const ttt_lm *m, const ttt_lm_reader *r) {
    if (!m || !r) return 0;
    if (r->e2e || m->cfg.window > 0 || m->cfg.mixer == TTT_LM_MIXER_TTT_LINEAR || m->cfg.mixer == TTT_LM_MIXER_TTT_MLP)
        return INT64_MAX; /* rings and fast weights: constant memory */
    return r->cache.capacity - r->cache.len;
}

ttt_tensor *ttt_lm_reader_read(ttt_ctx *ctx, const ttt_lm *m, ttt_lm_reader *r, ttt_tensor *ids, int all_logits) {
    if (!ctx || !ids) return NULL;
    if (!r) return ttt__set_error(ctx, "lm_reader_read: reader must not be NULL"), NULL;
    if (r->e2e) return ttt_lm_e2e_decode(ctx, m, &r->state, ids, all_logits);
    if (all_logits || ids->ndim != 2 || ids->shape[1] <= 512) {
        ttt_tensor *lg = ttt_lm_decode(ctx, m, &r->cache, ids);
        return lg && !all_logits ? ttt_slice(ctx, lg, 1, lg->shape[1] - 1, lg->shape[1], 1) : lg;
    }
    /* a long input: logits of each piece's last position only, temporaries released per piece */
    const int64_t B = ids->shape[0], T = ids->shape[1];
    ttt_tensor *out = ttt_new(ctx, m->embed->dtype, TTT_DIMS(B, 1, m->cfg.vocab));
    for (int64_t t0 = 0; out && t0 < T; t0 += 512) {
        const int64_t t1 = t0 + 512 < T ? t0 + 512 : T;
        const ttt_mark_t mark = ttt_mark(ctx);
        ttt_tensor *lg = ttt_lm_decode(ctx, m, &r->cache, ttt_contiguous(ctx, ttt_slice(ctx, ids, 1, t0, t1, 1)));
        if (!lg || (t1 == T && ttt__copy_into(ctx, out, 1, 0, 1, ttt_slice(ctx, lg, 1, t1 - t0 - 1, t1 - t0, 1))))
            out = NULL;
        ttt_release(ctx, mark);
    }
    return out;
}

int ttt_lm_reader_copy(ttt_ctx *ctx, const ttt_lm *m, ttt_lm_reader *dst, const ttt_lm_reader *src) {
    if (!ctx) return TTT_ERR;
    if (!dst || !src || dst->e2e != src->e2e)
        return ttt__set_error(ctx, "lm_reader_copy: readers of two kinds of model (or NULL)");
    const ttt_lm_cache *cs = src->e2e ? &src->state.cache : &src->cache;
    ttt_lm_cache *cd = dst->e2e ? &dst->state.cache : &dst->cache;
    int rc = ttt__lm_cache_copy(ctx, cd, cs);
    if (rc == TTT_OK && src->e2e) {
        ttt_lm_e2e_state *d = &dst->state;
        const ttt_lm_e2e_state *s = &src->state;
        for (int i = 0; i < s->n_w && rc == TTT_OK; i++) rc = ttt_assign(ctx, d->w[i], s->w[i]);
        if (rc == TTT_OK)
            rc = ttt_assign(ctx, d->chunk_x, s->chunk_x) || ttt_assign(ctx, d->chunk_ids, s->chunk_ids) ? TTT_ERR : TTT_OK;
        d->steps = s->steps, d->eta = s->eta, d->last_inner_loss = s->last_inner_loss;
    }
    (void)m;
    return rc;
}

int ttt_lm_reader_save(ttt_ctx *ctx, const ttt_lm *m, const ttt_lm_reader *r, const char *path, const char *model_id,
                       const char *tokenizer_id) {
    if (!ctx) return TTT_ERR;
    if (!r || !r->e2e)
        return ttt__set_error(ctx, "lm_reader_save: state files hold what a TTT-E2E model learned; this model's "
                                   "reader is a plain KV cache");
    return ttt_lm_e2e_state_save(ctx, m, &r->state, path, model_id, tokenizer_id);
}

int ttt_lm_reader_load(ttt_ctx *ctx, const ttt_lm *m, ttt_lm_reader *r, const char *path, const char *model_id,
                       const char *tokenizer_id) {
    if (!ctx) return TTT_ERR;
    if (!r || !r->e2e)
        return ttt__set_error(ctx, "lm_reader_load: state files hold what a TTT-E2E model learned; this model is not one");
    return ttt_lm_e2e_state_load(ctx, m, &r->state, path, model_id, tokenizer_id);
}
