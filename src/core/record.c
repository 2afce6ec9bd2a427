/* Recording the graph, below the ops: grad mode, requires-grad, and the node
 * each op attaches to its outputs (ttt__record). The traversal that uses the
 * nodes (ttt_grad, ttt_backward, checkpoints) sits above the ops, in
 * src/autodiff/grad.c. */
#include <string.h>

#include "internal.h"

/* ---- grad mode --------------------------------------------------------------- */

void ttt_no_grad_begin(ttt_ctx *ctx) { ctx->no_grad_depth++; }
void ttt_no_grad_end(ttt_ctx *ctx) {
    if (ctx->no_grad_depth > 0) ctx->no_grad_depth--;
}
int ttt_grad_enabled(const ttt_ctx *ctx) { return ctx->no_grad_depth == 0; }

ttt_grad_mode ttt_grad_mode_set(ttt_ctx *ctx, int enabled) {
    ttt_grad_mode prev = {ctx->no_grad_depth};
    ctx->no_grad_depth = enabled ? 0 : 1;
    return prev;
}

void ttt_grad_mode_restore(ttt_ctx *ctx, ttt_grad_mode previous) { ctx->no_grad_depth = previous.depth; }

void ttt_set_requires_grad(ttt_tensor *t, int on) {
    if (t && !t->node) t->requires_grad = on ? 1 : 0;
}

ttt_tensor *ttt_detach(ttt_ctx *ctx, ttt_tensor *x) {
    TTT_CHECK_NONNULL1(x);
    return ttt__view(ctx, x);
}

bool ttt__recording(const ttt_ctx *ctx, int n, ttt_tensor *const *in) {
    if (ctx->no_grad_depth > 0) return false;
    for (int i = 0; i < n; i++)
        if (in[i] && in[i]->requires_grad) return true;
    return false;
}

ttt_node *ttt__record(ttt_ctx *ctx, const char *op, ttt_vjp_fn vjp, int n_in, ttt_tensor *const *in, int n_out,
                      ttt_tensor *const *out) {
    ttt_node *n = ttt__meta_alloc(ctx, sizeof *n);
    ttt_tensor **io = ttt__meta_alloc(ctx, (size_t)(n_in + n_out) * sizeof *io);
    if (!n || !io) return NULL;
    n->op = op;
    n->vjp = vjp;
    n->n_in = n_in;
    n->n_out = n_out;
    n->in = io;
    n->out = io + n_in;
    memcpy(n->in, in, (size_t)n_in * sizeof *io);
    memcpy(n->out, out, (size_t)n_out * sizeof *io);
    for (int k = 0; k < n_out; k++) {
        out[k]->node = n;
        out[k]->out_index = k;
        out[k]->requires_grad = 1;
    }
    return n;
}

