/* Reverse-mode autodiff over the implicit graph (tensor -> node -> inputs).
 *
 * ttt__grad runs in two phases:
 *   1. an iterative depth-first walk from the outputs marks the nodes that lead
 *      to a requested input ("relevant") and lists them in topological order;
 *   2. the list is walked backwards, calling each node's VJP. VJPs are written
 *      with ordinary ops, so with create_graph the gradient is itself a graph.
 * Per-call bookkeeping lives with the call, not in ttt_tensor: the gradients
 * of the outputs of the nodes it walks sit in the call's slot array, found
 * through the node (node->grad_slot + out_index, next to fields the walk reads
 * anyway); the requested inputs' gradients sit in a small table keyed by the
 * tensor. A call may happen while another is in phase 2 (a checkpoint's VJP
 * differentiates its recomputed function): every node a call stamps has its
 * fields saved and restored when the call ends.
 *
 * This file sits above the ops (it accumulates gradients with ttt_add and
 * VJPs call ops); recording the graph sits below them, in src/core/record.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

/* ---- a gradient while the call gathers it --------------------------------------------- */

/* The dense sum of the contributions so far, and the gradients of slices of the tensor not
 * yet added in (1-based index of the first in the call's pieces; 0: none). A tensor cut into
 * N slices (a loop over chunks) would otherwise receive N zero-padded full-size gradients:
 * O(N x size) memory and time. Gathered, the pieces become one concat when the gradient is
 * read (gather_pieces). */
typedef struct {
    ttt_tensor *sum;
    int64_t pieces;
} grad_acc;

typedef struct {
    ttt_tensor *g; /* the gradient of x[..., start : start + len, ...] along axis */
    int64_t start, next;
    int axis;
} slice_piece;

/* ---- the requested inputs: a small table from tensor to gradient -------------------- */

/* Open addressing on the tensor's address; grows at half full. */
typedef struct {
    const ttt_tensor *t; /* NULL: empty slot */
    grad_acc acc;
} ad_entry;

typedef struct {
    ad_entry *e;
    size_t cap, n; /* cap: a power of two */
} ad_table;

/* The address itself, less its low bits: tensor headers come from the step
 * arena one after another, so neighbours in the graph land in neighbouring
 * slots and the walk stays cache-friendly (a mixing hash scatters them and
 * costs a cache miss per lookup). */
static size_t ad_hash(const ttt_tensor *t, size_t cap) { return (size_t)((uintptr_t)t >> 5) & (cap - 1); }

static ad_entry *ad_find(const ad_table *a, const ttt_tensor *t) {
    if (!a->cap) return NULL;
    for (size_t i = ad_hash(t, a->cap);; i = (i + 1) & (a->cap - 1)) {
        if (a->e[i].t == t) return &a->e[i];
        if (!a->e[i].t) return NULL;
    }
}

static int ad_grow(ad_table *a) {
    const size_t cap = a->cap ? a->cap * 2 : 256;
    ad_entry *e = calloc(cap, sizeof *e);
    if (!e) return TTT_ERR;
    for (size_t k = 0; k < a->cap; k++) {
        if (!a->e[k].t) continue;
        size_t i = ad_hash(a->e[k].t, cap);
        while (e[i].t) i = (i + 1) & (cap - 1);
        e[i] = a->e[k];
    }
    free(a->e);
    a->e = e;
    a->cap = cap;
    return TTT_OK;
}

/* t's entry, made (zeroed) if it has none; NULL when out of memory. */
static ad_entry *ad_get(ad_table *a, const ttt_tensor *t) {
    ad_entry *f = ad_find(a, t);
    if (f) return f;
    if (2 * (a->n + 1) > a->cap && ad_grow(a) != TTT_OK) return NULL;
    size_t i = ad_hash(t, a->cap);
    while (a->e[i].t) i = (i + 1) & (a->cap - 1);
    a->e[i] = (ad_entry){t, {NULL, 0}};
    a->n++;
    return &a->e[i];
}

/* ---- small growable arrays (one set per grad call) ------------------------------- */
typedef struct {
    void *v;
    size_t n, cap, elem;
} vec;

static int vec_push(vec *a, const void *x) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        void *p = realloc(a->v, cap * a->elem);
        if (!p) return TTT_ERR;
        a->v = p;
        a->cap = cap;
    }
    memcpy((char *)a->v + a->n * a->elem, x, a->elem);
    a->n++;
    return TTT_OK;
}

/* A node's traversal fields as they were before a call stamped it. */
typedef struct {
    ttt_node *node;
    uint64_t visit;
    int state;
    bool relevant;
    int64_t grad_slot;
} saved_node;

typedef struct {
    ttt_ctx *ctx;
    uint64_t stamp;
    ad_table targets; /* the requested inputs and their gradients */
    vec order;        /* ttt_node*, post-order = inputs before consumers */
    vec stack;        /* dfs_frame */
    vec saved;        /* saved_node, restored when the call ends */
    vec pieces;       /* slice_piece, linked from the grad_accs */
    grad_acc *slots;  /* gradients of the outputs of the nodes in order */
    bool stop_at_inputs;
} grad_call;

typedef struct {
    ttt_node *node;
    int next;
} dfs_frame;

static bool is_target(const grad_call *gc, const ttt_tensor *t) { return ad_find(&gc->targets, t) != NULL; }

/* The node to walk into from tensor t, or NULL. */
static ttt_node *child_node(const grad_call *gc, const ttt_tensor *t) {
    if (!t->node || !t->requires_grad) return NULL;
    if (gc->stop_at_inputs && is_target(gc, t)) return NULL;
    return t->node;
}

/* Stamp node nd for this call, first saving its fields for the restore. */
static int stamp_node(grad_call *gc, ttt_node *nd) {
    saved_node s = {nd, nd->visit, nd->state, nd->relevant, nd->grad_slot};
    if (vec_push(&gc->saved, &s) != TTT_OK) return TTT_ERR;
    nd->visit = gc->stamp;
    nd->state = 1;
    nd->relevant = false;
    nd->grad_slot = -1;
    return TTT_OK;
}

/* Does a gradient reaching tensor t matter to the call (phase 1)? */
static bool tensor_relevant(const grad_call *gc, const ttt_tensor *t) {
    if (is_target(gc, t)) return true;
    ttt_node *c = child_node(gc, t);
    return c && c->visit == gc->stamp && c->relevant;
}

/* Where tensor t's gradient is kept in this call (phase 2), or NULL when no
 * gradient reaching t matters: a requested input's in the table; an output of
 * a node in the order in that node's slots. */
static grad_acc *grad_ref(const grad_call *gc, const ttt_tensor *t) {
    if (gc->targets.n) {
        ad_entry *e = ad_find(&gc->targets, t);
        if (e) return &e->acc;
    }
    const ttt_node *nd = t->node;
    if (!nd || nd->visit != gc->stamp || nd->grad_slot < 0) return NULL;
    return &gc->slots[nd->grad_slot + t->out_index];
}

/* Give the outputs of the nodes in the order their gradient slots. */
static int assign_slots(grad_call *gc) {
    ttt_node **order = gc->order.v;
    int64_t n = 0;
    for (size_t k = 0; k < gc->order.n; k++) {
        order[k]->grad_slot = n;
        n += order[k]->n_out;
    }
    gc->slots = calloc((size_t)n + 1, sizeof *gc->slots);
    return gc->slots ? TTT_OK : TTT_ERR;
}

static int topo_sort(grad_call *gc, int n_out, ttt_tensor *const *outputs) {
    for (int o = 0; o < n_out; o++) {
        ttt_node *root = child_node(gc, outputs[o]);
        if (!root || root->visit == gc->stamp) continue;
        if (stamp_node(gc, root) != TTT_OK) return TTT_ERR;
        dfs_frame f = {root, 0};
        if (vec_push(&gc->stack, &f) != TTT_OK) return TTT_ERR;
        while (gc->stack.n) {
            dfs_frame *top = (dfs_frame *)gc->stack.v + gc->stack.n - 1;
            ttt_node *nd = top->node;
            if (top->next < nd->n_in) {
                ttt_node *c = child_node(gc, nd->in[top->next++]);
                if (c && c->visit != gc->stamp) {
                    if (stamp_node(gc, c) != TTT_OK) return TTT_ERR;
                    dfs_frame cf = {c, 0};
                    if (vec_push(&gc->stack, &cf) != TTT_OK) return TTT_ERR;
                }
                continue;
            }
            gc->stack.n--;
            nd->state = 2;
            nd->relevant = false;
            for (int i = 0; i < nd->n_in; i++)
                if (tensor_relevant(gc, nd->in[i])) nd->relevant = true;
            if (nd->relevant && vec_push(&gc->order, &nd) != TTT_OK) return TTT_ERR;
        }
    }
    return TTT_OK;
}

static int accumulate(grad_call *gc, ttt_tensor *t, ttt_tensor *g, const char *op) {
    ttt_ctx *ctx = gc->ctx;
    if (!g) return TTT_ERR;
    if (!ttt_same_shape(t, g) || t->dtype != g->dtype) {
        char a[96], b[96];
        return ttt__set_error(ctx, "autodiff: VJP of %s produced a %s %s gradient for a %s %s input", op,
                              ttt_dtype_name(g->dtype), ttt_shape_str(g, a, sizeof a), ttt_dtype_name(t->dtype),
                              ttt_shape_str(t, b, sizeof b));
    }
    grad_acc *ref = grad_ref(gc, t);
    if (!ref) return TTT_OK; /* nothing reads it (e.g. an output that no requested input reaches) */
    ref->sum = ref->sum ? ttt_add(ctx, ref->sum, g) : g;
    return ref->sum ? TTT_OK : TTT_ERR;
}

/* g, the gradient of the slice t[start : start + len] along axis (step 1), kept aside. */
static int accumulate_slice(grad_call *gc, ttt_tensor *t, ttt_tensor *g, int axis, int64_t start) {
    if (!g) return TTT_ERR;
    bool fits = g->ndim == t->ndim && g->dtype == t->dtype && start >= 0 && start + g->shape[axis] <= t->shape[axis];
    for (int i = 0; fits && i < t->ndim; i++) fits = i == axis || g->shape[i] == t->shape[i];
    if (!fits) {
        char a[96], b[96];
        return ttt__set_error(gc->ctx, "autodiff: a %s %s slice gradient at %lld on axis %d does not fit a %s %s input",
                              ttt_dtype_name(g->dtype), ttt_shape_str(g, a, sizeof a), (long long)start, axis,
                              ttt_dtype_name(t->dtype), ttt_shape_str(t, b, sizeof b));
    }
    grad_acc *ref = grad_ref(gc, t);
    if (!ref || g->shape[axis] == 0) return TTT_OK;
    slice_piece p = {g, start, ref->pieces, axis};
    if (vec_push(&gc->pieces, &p) != TTT_OK) return ttt__set_error(gc->ctx, "autodiff: out of host memory");
    ref->pieces = (int64_t)gc->pieces.n;
    return TTT_OK;
}

static int piece_order(const void *a, const void *b) {
    const slice_piece *x = a, *y = b;
    return (x->start > y->start) - (x->start < y->start);
}

/* Add t's pending slice gradients into ref->sum: slices that tile one axis without
 * overlapping (gaps are zeros) as one concat; any other mix one zero-padded copy each. */
static int gather_pieces(grad_call *gc, grad_acc *ref, const ttt_tensor *t) {
    if (!ref->pieces) return TTT_OK;
    ttt_ctx *ctx = gc->ctx;
    const slice_piece *all = gc->pieces.v;
    size_t n = 0;
    for (int64_t k = ref->pieces; k; k = all[k - 1].next) n++;
    slice_piece *p = malloc(n * sizeof *p);
    ttt_tensor **parts = malloc((2 * n + 1) * sizeof *parts);
    if (!p || !parts) {
        free(p);
        free(parts);
        return ttt__set_error(ctx, "autodiff: out of host memory");
    }
    n = 0;
    for (int64_t k = ref->pieces; k; k = all[k - 1].next) p[n++] = all[k - 1];
    ref->pieces = 0;
    qsort(p, n, sizeof *p, piece_order);
    const int a = p[0].axis;
    bool tiles = true;
    for (size_t i = 1; i < n && tiles; i++)
        tiles = p[i].axis == a && p[i].start >= p[i - 1].start + p[i - 1].g->shape[a];
    ttt_tensor *full = NULL;
    if (tiles) {
        int64_t shape[TTT_MAX_DIMS], at = 0;
        memcpy(shape, t->shape, sizeof shape);
        int m = 0;
        for (size_t i = 0; i <= n; i++) {
            const int64_t next = i < n ? p[i].start : t->shape[a];
            if (next > at) { /* a gap no slice covers */
                shape[a] = next - at;
                parts[m++] = ttt_zeros(ctx, t->dtype, t->ndim, shape);
            }
            if (i < n) {
                parts[m++] = p[i].g;
                at = p[i].start + p[i].g->shape[a];
            }
        }
        full = m == 1 ? parts[0] : ttt_concat(ctx, m, parts, a);
    } else {
        for (size_t i = 0; i < n; i++) {
            ttt_tensor *s = ttt_slice_scatter(ctx, p[i].g, t->ndim, t->shape, p[i].axis, p[i].start, 1);
            full = full && s ? ttt_add(ctx, full, s) : s;
            if (!full) break;
        }
    }
    free(p);
    free(parts);
    if (!full) return TTT_ERR;
    ref->sum = ref->sum ? ttt_add(ctx, ref->sum, full) : full;
    return ref->sum ? TTT_OK : TTT_ERR;
}

static void grad_call_free(grad_call *gc) {
    saved_node *s = gc->saved.v;
    for (size_t i = gc->saved.n; i-- > 0;) {
        s[i].node->visit = s[i].visit;
        s[i].node->state = s[i].state;
        s[i].node->relevant = s[i].relevant;
        s[i].node->grad_slot = s[i].grad_slot;
    }
    free(gc->saved.v);
    free(gc->pieces.v);
    free(gc->slots);
    free(gc->targets.e);
    free(gc->order.v);
    free(gc->stack.v);
}

static int backprop(grad_call *gc, int n_out, ttt_tensor *const *outputs, ttt_tensor *const *grad_outputs) {
    ttt_ctx *ctx = gc->ctx;
    for (int o = 0; o < n_out; o++) {
        ttt_tensor *g = grad_outputs && grad_outputs[o] ? grad_outputs[o]
                                                        : ttt_full(ctx, outputs[o]->dtype, outputs[o]->ndim,
                                                                   outputs[o]->shape, 1.0);
        if (accumulate(gc, outputs[o], g, "grad_outputs") != TTT_OK) return TTT_ERR;
    }
    ttt_node **order = gc->order.v;
    int max_in = 0, max_out = 0;
    for (size_t k = 0; k < gc->order.n; k++) {
        if (order[k]->n_in > max_in) max_in = order[k]->n_in;
        if (order[k]->n_out > max_out) max_out = order[k]->n_out;
    }
    ttt_tensor **gout = calloc((size_t)max_out + 1, sizeof *gout);
    ttt_tensor **gin = calloc((size_t)max_in + 1, sizeof *gin);
    bool *needs = calloc((size_t)max_in + 1, sizeof *needs);
    int rc = (gout && gin && needs) ? TTT_OK : ttt__set_error(ctx, "autodiff: out of host memory");
    for (size_t k = gc->order.n; rc == TTT_OK && k-- > 0;) {
        ttt_node *nd = order[k];
        bool any = false;
        for (int j = 0; j < nd->n_out && rc == TTT_OK; j++) {
            grad_acc *ref = grad_ref(gc, nd->out[j]);
            if (ref) rc = gather_pieces(gc, ref, nd->out[j]);
            gout[j] = ref ? ref->sum : NULL;
            any |= gout[j] != NULL;
        }
        if (rc != TTT_OK) break;
        if (!any) continue;
        for (int i = 0; i < nd->n_in; i++) {
            needs[i] = grad_ref(gc, nd->in[i]) != NULL;
            gin[i] = NULL;
        }
        int axis;
        int64_t start, step;
        if (ttt__slice_node(nd, &axis, &start, &step) && step == 1) {
            if (needs[0]) rc = accumulate_slice(gc, nd->in[0], gout[0], axis, start);
            continue;
        }
        const char *scope = ttt__profile_scope;
        ttt__profile_scope = nd->op;
        if (nd->vjp(ctx, nd, gout, needs, gin) != TTT_OK) {
            ttt__profile_scope = scope;
            if (!ctx->err[0]) ttt__set_error(ctx, "autodiff: VJP of %s failed", nd->op);
            rc = TTT_ERR;
            break;
        }
        for (int i = 0; i < nd->n_in && rc == TTT_OK; i++)
            if (needs[i]) rc = accumulate(gc, nd->in[i], gin[i], nd->op);
        ttt__profile_scope = scope;
    }
    free(gout);
    free(gin);
    free(needs);
    return rc;
}

int ttt__grad(ttt_ctx *ctx, int n_out, ttt_tensor *const *outputs, ttt_tensor *const *grad_outputs, int n_in,
              ttt_tensor *const *inputs, ttt_tensor **grads, bool create_graph, bool stop_at_inputs) {
    grad_call gc = {.ctx = ctx, .stamp = ++ctx->stamp, .stop_at_inputs = stop_at_inputs};
    gc.order.elem = sizeof(ttt_node *);
    gc.stack.elem = sizeof(dfs_frame);
    gc.saved.elem = sizeof(saved_node);
    gc.pieces.elem = sizeof(slice_piece);
    int rc = TTT_OK;
    for (int i = 0; i < n_in && rc == TTT_OK; i++)
        if (!ad_get(&gc.targets, inputs[i])) rc = TTT_ERR;
    if (rc == TTT_OK) rc = topo_sort(&gc, n_out, outputs);
    if (rc == TTT_OK) rc = assign_slots(&gc);
    if (rc != TTT_OK && !ctx->err[0]) ttt__set_error(ctx, "autodiff: out of host memory");

    int saved_depth = ctx->no_grad_depth;
    ctx->no_grad_depth = create_graph ? 0 : 1;
    if (rc == TTT_OK) rc = backprop(&gc, n_out, outputs, grad_outputs);
    if (rc == TTT_OK) {
        for (int i = 0; i < n_in && rc == TTT_OK; i++) {
            ad_entry *e = ad_find(&gc.targets, inputs[i]);
            if (e) rc = gather_pieces(&gc, &e->acc, inputs[i]);
            ttt_tensor *g = e ? e->acc.sum : NULL;
            grads[i] = g ? g : ttt_zeros_like(ctx, inputs[i]);
            if (!grads[i]) rc = TTT_ERR;
        }
    }
    ctx->no_grad_depth = saved_depth;
    grad_call_free(&gc);
    return rc;
}

int ttt_grad(ttt_ctx *ctx, int n_outputs, ttt_tensor *const *outputs, ttt_tensor *const *grad_outputs,
             int n_inputs, ttt_tensor *const *inputs, ttt_tensor **grads, int create_graph) {
    if (!ctx) return TTT_ERR;
    if (n_outputs <= 0 || n_inputs <= 0 || !outputs || !inputs || !grads)
        return ttt__set_error(ctx, "ttt_grad: need at least one output, one input and a grads array");
    bool any_graph = false;
    for (int o = 0; o < n_outputs; o++) {
        if (!outputs[o]) return TTT_ERR;
        if (!ttt__is_float(outputs[o]->dtype))
            return ttt__set_error(ctx, "ttt_grad: output %d has dtype %s; gradients need f32, f64 or bf16", o,
                                  ttt_dtype_name(outputs[o]->dtype));
        if (grad_outputs && grad_outputs[o] &&
            (!ttt_same_shape(grad_outputs[o], outputs[o]) || grad_outputs[o]->dtype != outputs[o]->dtype)) {
            char a[96], b[96];
            return ttt__set_error(ctx, "ttt_grad: grad_outputs[%d] is %s %s but output %d is %s %s", o,
                                  ttt_dtype_name(grad_outputs[o]->dtype), ttt_shape_str(grad_outputs[o], a, sizeof a),
                                  o, ttt_dtype_name(outputs[o]->dtype), ttt_shape_str(outputs[o], b, sizeof b));
        }
        any_graph |= outputs[o]->requires_grad != 0;
    }
    for (int i = 0; i < n_inputs; i++) {
        if (!inputs[i]) return TTT_ERR;
        if (!inputs[i]->requires_grad) {
            char s[96];
            return ttt__set_error(ctx,
                                  "ttt_grad: input %d %s does not require grad (make it a parameter, call "
                                  "ttt_set_requires_grad, or compute it outside no-grad)",
                                  i, ttt_shape_str(inputs[i], s, sizeof s));
        }
    }
    if (!any_graph)
        return ttt__set_error(ctx, "ttt_grad: no output has a graph (computed under no-grad, or from constants)");
    return ttt__grad(ctx, n_outputs, outputs, grad_outputs, n_inputs, inputs, grads, create_graph != 0, false);
}

/* ---- backward into persistent parameters -------------------------------------------- */

/* The persistent parameters root depends on. Stamps nodes like a grad call,
 * and restores them the same way (a backward could run inside a VJP). */
static int collect_params(ttt_ctx *ctx, ttt_tensor *root, vec *params) {
    grad_call gc = {.ctx = ctx, .stamp = ++ctx->stamp};
    gc.saved.elem = sizeof(saved_node);
    vec stack = {.elem = sizeof(ttt_node *)};
    ad_table seen = {0}; /* parameters found so far */
    int rc = TTT_OK;
    if (root->node) {
        rc = stamp_node(&gc, root->node);
        if (rc == TTT_OK) rc = vec_push(&stack, &root->node);
    } else if (root->persistent && root->requires_grad) {
        rc = vec_push(params, &root);
    }
    while (rc == TTT_OK && stack.n) {
        ttt_node *nd = ((ttt_node **)stack.v)[--stack.n];
        for (int i = 0; i < nd->n_in && rc == TTT_OK; i++) {
            ttt_tensor *t = nd->in[i];
            if (!t->requires_grad) continue;
            if (t->node) {
                if (t->node->visit != gc.stamp) {
                    rc = stamp_node(&gc, t->node);
                    if (rc == TTT_OK) rc = vec_push(&stack, &t->node);
                }
            } else if (t->persistent && !ad_find(&seen, t)) {
                rc = ad_get(&seen, t) ? vec_push(params, &t) : TTT_ERR;
            }
        }
    }
    free(stack.v);
    free(seen.e);
    grad_call_free(&gc);
    return rc;
}

static int ensure_grad(ttt_ctx *ctx, ttt_tensor *p) {
    if (p->grad) return TTT_OK;
    p->grad = ttt_persistent(ctx, p->dtype, p->ndim, p->shape, p->name);
    return p->grad ? TTT_OK : TTT_ERR;
}

int ttt_backward(ttt_ctx *ctx, ttt_tensor *loss) {
    if (!ctx || !loss) return TTT_ERR;
    if (ttt_numel(loss) != 1) {
        char s[96];
        return ttt__set_error(ctx, "ttt_backward: loss has shape %s; it must have one element",
                              ttt_shape_str(loss, s, sizeof s));
    }
    if (!loss->requires_grad)
        return ttt__set_error(ctx, "ttt_backward: loss has no graph (computed under no-grad, or from constants)");
    vec params = {.elem = sizeof(ttt_tensor *)};
    if (collect_params(ctx, loss, &params) != TTT_OK) {
        free(params.v);
        return ttt__set_error(ctx, "ttt_backward: out of host memory");
    }
    int rc = TTT_OK;
    if (params.n) {
        ttt_tensor **ps = params.v;
        ttt_tensor **gs = ttt__meta_alloc(ctx, params.n * sizeof *gs);
        rc = gs ? ttt__grad(ctx, 1, &loss, NULL, (int)params.n, ps, gs, false, false) : TTT_ERR;
        for (size_t i = 0; i < params.n && rc == TTT_OK; i++) {
            if ((rc = ensure_grad(ctx, ps[i])) != TTT_OK) break;
            if (ctx->be->binary(ctx->bs, TTT_B_ADD, ps[i]->grad, ps[i]->grad, gs[i]) != TTT_OK)
                rc = ttt__backend_failed(ctx, "ttt_backward");
        }
    }
    free(params.v);
    return rc;
}

int ttt_zero_grad(ttt_ctx *ctx, int n, ttt_tensor *const *params) {
    for (int i = 0; i < n; i++) {
        if (!params[i] || !params[i]->persistent)
            return ttt__set_error(ctx, "ttt_zero_grad: params[%d] is not a persistent tensor", i);
        if (ensure_grad(ctx, params[i]) != TTT_OK || ttt_fill(ctx, params[i]->grad, 0.0) != TTT_OK) return TTT_ERR;
    }
    return TTT_OK;
}

/* ---- rematerialization ------------------------------------------------------------ */

/* Copy tensors into the stash, release to mark m, and return fresh copies
 * allocated after the release. Carries results out of a scope. */
static int carry_out(ttt_ctx *ctx, ttt_mark_t m, int n, ttt_tensor **ts) {
    size_t total = 0;
    if (n <= 0) {
        ttt_release(ctx, m);
        return TTT_OK;
    }
    for (int k = 0; k < n; k++) total += ((size_t)ttt_numel(ts[k]) * ttt_dtype_size(ts[k]->dtype) + 63) & ~(size_t)63;
    ttt_tensor *hdr = calloc((size_t)n, sizeof *hdr);
    if (!hdr) return ttt__set_error(ctx, "checkpoint: out of host memory");
    char *stash = ttt__stash(ctx, total ? total : 1);
    int rc = stash ? TTT_OK : TTT_ERR;
    size_t off = 0;
    for (int k = 0; k < n && rc == TTT_OK; k++) {
        hdr[k] = *ts[k];
        ttt__set_contiguous_strides(&hdr[k]);
        hdr[k].data = stash + off;
        off += ((size_t)ttt_numel(ts[k]) * ttt_dtype_size(ts[k]->dtype) + 63) & ~(size_t)63;
        if (ttt_numel(ts[k]) && ctx->be->copy(ctx->bs, &hdr[k], ts[k]) != TTT_OK) rc = ttt__backend_failed(ctx, "checkpoint");
    }
    ttt_release(ctx, m);
    for (int k = 0; k < n && rc == TTT_OK; k++) {
        ts[k] = ttt_new(ctx, hdr[k].dtype, hdr[k].ndim, hdr[k].shape);
        if (!ts[k]) rc = TTT_ERR;
        else if (ttt_numel(ts[k]) && ctx->be->copy(ctx->bs, ts[k], &hdr[k]) != TTT_OK) rc = ttt__backend_failed(ctx, "checkpoint");
    }
    free(hdr);
    return rc;
}

/* What a checkpoint or subgraph node keeps (pattr[0]): the function and, for a subgraph, the graph of its
 * forward run (local_in: the detached inputs it ran on, local_out: its outputs there). */
typedef struct {
    ttt_fn fn;
    void *user;
    ttt_tensor **local_in, **local_out; /* NULL: rematerialize */
} fn_node;

static int checkpoint_vjp(ttt_ctx *ctx, ttt_node *nd, ttt_tensor *const *gout, const bool *needs, ttt_tensor **gin) {
    const fn_node *f = nd->pattr[0];
    bool create = ctx->no_grad_depth == 0;
    /* A subgraph differentiates the graph it kept, but that graph starts at detached inputs: under create_graph
     * the gradients must reach the node's own inputs, so it runs fn again on them, as a checkpoint does. */
    const bool kept = f->local_out && !create, copy_out = !create && !kept;
    int n_t = 0, n_o = 0;
    for (int i = 0; i < nd->n_in; i++) n_t += needs[i];
    ttt_tensor **buf = calloc((size_t)(2 * nd->n_in + 3 * nd->n_out), sizeof *buf);
    if (!buf) return ttt__set_error(ctx, "checkpoint: out of host memory");
    ttt_tensor **targets = buf, **grads = buf + nd->n_in, **rout = buf + 2 * nd->n_in;
    ttt_tensor **sel_out = rout + nd->n_out, **sel_g = sel_out + nd->n_out;
    for (int i = 0, k = 0; i < nd->n_in; i++)
        if (needs[i]) targets[k++] = kept ? f->local_in[i] : nd->in[i];

    /* Without create_graph the gradients outlive the recomputed graph: their buffers (the targets' shapes and
     * dtypes) are taken before the mark, so each is copied out once instead of through carry_out's stash. */
    ttt_tensor **keep = copy_out ? ttt__meta_alloc(ctx, (size_t)(n_t ? n_t : 1) * sizeof *keep) : NULL;
    int rc = !copy_out || keep ? TTT_OK : TTT_ERR;
    for (int k = 0; k < n_t && keep && rc == TTT_OK; k++)
        if (!(keep[k] = ttt_new(ctx, targets[k]->dtype, targets[k]->ndim, targets[k]->shape))) rc = TTT_ERR;
    if (rc != TTT_OK) {
        free(buf);
        return TTT_ERR;
    }
    ttt_mark_t m = ttt_mark(ctx);
    if (kept) {
        memcpy(rout, f->local_out, sizeof *rout * (size_t)nd->n_out);
    } else {
        int saved = ctx->no_grad_depth;
        ctx->no_grad_depth = 0; /* recompute with a graph */
        rc = f->fn(ctx, f->user, nd->n_in, nd->in, nd->n_out, rout);
        ctx->no_grad_depth = saved;
    }
    for (int k = 0; k < nd->n_out && rc == TTT_OK; k++) {
        if (!rout[k]) rc = TTT_ERR;
        else if (gout[k] && rout[k]->requires_grad) {
            sel_out[n_o] = rout[k];
            sel_g[n_o++] = gout[k];
        }
    }
    if (rc == TTT_OK && n_o > 0) rc = ttt__grad(ctx, n_o, sel_out, sel_g, n_t, targets, grads, create, true);
    else if (rc == TTT_OK)
        for (int k = 0; k < n_t && rc == TTT_OK; k++) rc = (grads[k] = ttt_zeros_like(ctx, targets[k])) ? TTT_OK : TTT_ERR;
    for (int k = 0; k < n_t && rc == TTT_OK && copy_out; k++) {
        bool same = grads[k]->dtype == keep[k]->dtype && grads[k]->ndim == keep[k]->ndim;
        for (int d = 0; same && d < keep[k]->ndim; d++) same = grads[k]->shape[d] == keep[k]->shape[d];
        if (!same) /* a gradient must have its input's shape and dtype */
            rc = ttt__set_error(ctx, "checkpoint: the gradient of input %d has another shape or dtype (internal)", k);
        else if (ttt_numel(keep[k]) && ctx->be->copy(ctx->bs, keep[k], grads[k]) != TTT_OK)
            rc = ttt__backend_failed(ctx, "checkpoint");
        grads[k] = keep[k];
    }
    if (copy_out) ttt_release(ctx, m); /* frees the recomputed graph */
    for (int i = 0, k = 0; i < nd->n_in && rc == TTT_OK; i++)
        if (needs[i]) gin[i] = grads[k++];
    free(buf);
    if (rc != TTT_OK && !ctx->err[0]) ttt__set_error(ctx, "checkpoint: recomputation failed");
    return rc;
}

/* ttt_checkpoint (keep 0) and ttt_subgraph (keep 1). */
static int fn_call(ttt_ctx *ctx, const char *name, bool keep, ttt_fn fn, void *user, int n_in, ttt_tensor *const *in,
                   int n_out, ttt_tensor **out) {
    if (!ctx) return TTT_ERR;
    if (!fn || n_in < 0 || n_out <= 0 || (n_in && !in) || !out)
        return ttt__set_error(ctx, "%s: need a function, inputs and at least one output", name);
    for (int i = 0; i < n_in; i++)
        if (!in[i]) return TTT_ERR;
    if (!ttt__recording(ctx, n_in, in)) return fn(ctx, user, n_in, in, n_out, out);

    /* Run fn on detached inputs so its graph (and any inner ttt_grad walk) stays local. */
    ttt_mark_t m = ttt_mark(ctx);
    ttt_tensor **din = ttt__meta_alloc(ctx, (size_t)(n_in + n_out) * sizeof *din);
    if (!din) return TTT_ERR;
    for (int i = 0; i < n_in; i++) {
        if (!(din[i] = ttt__view(ctx, in[i]))) return TTT_ERR;
        din[i]->requires_grad = in[i]->requires_grad;
    }
    int rc = fn(ctx, user, n_in, din, n_out, out);
    for (int k = 0; k < n_out && rc == TTT_OK; k++)
        if (!out[k]) rc = TTT_ERR;
    if (rc != TTT_OK) {
        if (!ctx->err[0]) ttt__set_error(ctx, "%s: the function failed", name);
        return TTT_ERR;
    }
    ttt_tensor **local_out = keep ? din + n_in : NULL;
    if (keep) { /* the node's outputs are views of fn's, whose own graph the backward pass differentiates */
        for (int k = 0; k < n_out; k++)
            if (!(local_out[k] = out[k]) || !(out[k] = ttt__view(ctx, local_out[k]))) return TTT_ERR;
    } else if (carry_out(ctx, m, n_out, out) != TTT_OK) { /* frees fn's graph: the backward pass runs fn again */
        return TTT_ERR;
    }
    fn_node *f = ttt__meta_alloc(ctx, sizeof *f);
    if (!f) return TTT_ERR;
    *f = (fn_node){fn, user, keep ? din : NULL, local_out};
    ttt_node *nd = ttt__record(ctx, keep ? "subgraph" : "checkpoint", checkpoint_vjp, n_in, in, n_out, out);
    if (!nd) return TTT_ERR;
    nd->pattr[0] = f;
    return TTT_OK;
}

int ttt_checkpoint(ttt_ctx *ctx, ttt_fn fn, void *user, int n_in, ttt_tensor *const *in, int n_out,
                   ttt_tensor **out) {
    return fn_call(ctx, "ttt_checkpoint", false, fn, user, n_in, in, n_out, out);
}

int ttt_subgraph(ttt_ctx *ctx, ttt_fn fn, void *user, int n_in, ttt_tensor *const *in, int n_out, ttt_tensor **out) {
    return fn_call(ctx, "ttt_subgraph", true, fn, user, n_in, in, n_out, out);
}
