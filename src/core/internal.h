/* Private structures shared by the engine: src/core, src/ops, src/autodiff,
 * src/composed and the backends' glue. Not installed. The code above the engine
 * (layers, models, io, data, optim, check) includes core/engine_private.h
 * instead, which this header includes too. */
#ifndef TTT_INTERNAL_H
#define TTT_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>

#include "engine_private.h"
#include "ttt/autodiff.h"
#include "ttt/backend.h"
#include "ttt/ops.h"
#include "ttt/tensor.h"

/* ---- arenas: bump allocators over a list of blocks ------------------------- */
typedef struct {
    char *base;
    size_t size;
} ttt_block;

typedef struct {
    ttt_block *blocks;
    size_t n_blocks, cap_blocks;
    size_t cur;          /* index of the block being filled */
    size_t used;         /* bytes used in blocks[cur] */
    size_t total_used;   /* bytes handed out since reset (for reporting) */
    size_t first_size;   /* size of the first block */
    uint64_t n_allocs;   /* block allocations so far */
    bool device;         /* blocks come from the backend (else malloc) */
} ttt_arena;

/* ---- autodiff nodes -------------------------------------------------------- */
enum { TTT_NODE_IATTR = 8, TTT_NODE_FATTR = 4 };

/* gin[i] must be set (to a tensor of in[i]'s shape) for every i with needs[i];
 * gout[k] is NULL for outputs that received no gradient. */
typedef int (*ttt_vjp_fn)(ttt_ctx *ctx, ttt_node *node, ttt_tensor *const *gout, const bool *needs,
                          ttt_tensor **gin);

struct ttt_node {
    const char *op;             /* name for messages */
    ttt_vjp_fn vjp;
    int n_in, n_out;
    ttt_tensor **in;
    ttt_tensor **out;
    int64_t iattr[TTT_NODE_IATTR];
    double fattr[TTT_NODE_FATTR];
    void *pattr[2];
    /* traversal scratch of the grad call whose stamp is in visit (autodiff/grad.c
     * saves and restores them, so a call nested in another's VJP leaves the
     * outer call's values as they were) */
    uint64_t visit;             /* traversal stamp */
    int state;                  /* traversal: 1 on stack, 2 done */
    bool relevant;
    int64_t grad_slot;          /* the call's gradient slots of out[0..n_out) start here */
};

struct ttt_ctx {
    const ttt_backend *be;      /* the table kernels are called through: be->op(bs, ...) */
    ttt_backend_state *bs;      /* this context's backend instance (profile.c's wrapper when profiled) */
    ttt_arena meta;             /* tensor headers, nodes, small arrays (host) */
    ttt_arena data;             /* tensor data (device memory) */
    int no_grad_depth;          /* >0: grad mode off */
    uint64_t stamp;             /* traversal / grad-call counter */
    uint64_t rng_state;
    char err[1024];
    /* persistent allocations, freed by ttt_ctx_free */
    struct ttt_persist *persist;
    /* stash used by ttt_checkpoint to carry outputs across a release */
    void *stash;
    size_t stash_size;
    int threads;
    /* graphs (graph.c): while one is recorded, be points at rec_table, a copy
     * of the backend whose host transfers refuse with a message; real_be is
     * the backend itself. While graphs exist (n_graphs, the recording
     * included), device memory they may address is never freed: the data
     * arena does not coalesce and outgrown stashes wait in stash_old. */
    struct ttt_graph *rec;
    const ttt_backend *real_be;
    ttt_backend rec_table;
    int n_graphs;
    void **stash_old;
    size_t n_stash_old, cap_stash_old;
    int profiled; /* be/bs are profile.c's timing wrapper (TTT_PROFILE) */
    int unfused;  /* TTT_FUSED=0 at creation (or ttt__set_fused): SwiGLU, norms with a weight, the optimizer and
                     clipping take their composed / per-tensor paths, and TTT-Linear its composed segments
                     (src/layers/ttt_rnn.c; ttt__ttt_linear_scan its composed form), for before/after
                     comparisons (engine.c) */
    int no_bwd_nodes; /* TTT_BWD_NODES=0 at creation: under create_graph the RMS norm and SwiGLU compose their
                         gradient from primitive ops instead of recording the fused first-order kernel as a node
                         with a second-order kernel (src/ops/nn.c), for before/after timings */
};

/* profile.c: TTT_PROFILE=1 times every kernel entry (see the file). wrap
 * turns an open instance into a profiled one (on failure *be and *bs are left
 * as they were); release closes the real instance, and the last profiled
 * context prints the table. */
int ttt__profile_enabled(void);
/* TTT_PROFILE=scopes: the node whose VJP is running (the traversal sets it around each VJP, and around the
 * accumulation of its gradients), so the table says which VJPs the kernels come from; NULL outside a VJP
 * ("forward"). Process-wide, like the table: threads that profile at once mislabel each other's rows. */
extern const char *ttt__profile_scope;
int ttt__profile_wrap(const ttt_backend **be, ttt_backend_state **bs);
void ttt__profile_release(const ttt_backend *be, ttt_backend_state *bs);
/* Calls of each kernel entry through profiled instances since the process began (any backend, any result). */
long long ttt__profile_calls(ttt_kernel k);
/* The same for the backend of one device kind, counting only the calls that did the work (returned TTT_OK);
 * ttt__profile_declined counts those that answered TTT_BACKEND_DECLINED (the op composed the work instead). */
long long ttt__profile_ran(ttt_device device, ttt_kernel k);
long long ttt__profile_declined(ttt_device device, ttt_kernel k);

/* context.c */
void *ttt__data_alloc(ttt_ctx *ctx, size_t bytes);  /* device memory, step lifetime */
int ttt__backend_failed(ttt_ctx *ctx, const char *op);  /* copy the backend's message */
void *ttt__stash(ttt_ctx *ctx, size_t bytes);
void ttt__graphs_changed(ttt_ctx *ctx, int delta); /* n_graphs += delta; frees outgrown stashes at 0 */

/* tensor.c */
ttt_tensor *ttt__header(ttt_ctx *ctx, ttt_dtype dt, int ndim, const int64_t *shape); /* no data */
ttt_tensor *ttt__view(ttt_ctx *ctx, const ttt_tensor *base); /* header copy sharing data, no graph */
void ttt__set_contiguous_strides(ttt_tensor *t);
ttt_tensor *ttt__new_like(ttt_ctx *ctx, const ttt_tensor *t);
ttt_tensor *ttt__expanded_view(ttt_ctx *ctx, const ttt_tensor *t, int ndim, const int64_t *shape);
int ttt__broadcast_shape(ttt_ctx *ctx, const char *op, const ttt_tensor *a, const ttt_tensor *b, int *ndim,
                         int64_t *shape);
int ttt__norm_axis(ttt_ctx *ctx, const char *op, int axis, int ndim);

/* ops/shape.c: is nd a slice node? Then its axis, start and step (for autodiff/grad.c,
 * which gathers the gradients of many slices of one tensor into one concat). */
bool ttt__slice_node(const ttt_node *nd, int *axis, int64_t *start, int64_t *step);

/* ops/reduce.c: x itself if dense, else a dense copy (no graph). */
ttt_tensor *ttt__dense(ttt_ctx *ctx, ttt_tensor *x);

/* record.c (below the ops) */
/* Attach a node to outs; returns the node (attrs to be filled) or NULL. */
ttt_node *ttt__record(ttt_ctx *ctx, const char *op, ttt_vjp_fn vjp, int n_in, ttt_tensor *const *in, int n_out,
                      ttt_tensor *const *out);
/* autodiff/grad.c (above the ops: src/ops must not call it; src/composed may) */
int ttt__grad(ttt_ctx *ctx, int n_out, ttt_tensor *const *outputs, ttt_tensor *const *grad_outputs, int n_in,
              ttt_tensor *const *inputs, ttt_tensor **grads, bool create_graph, bool stop_at_inputs);

/* Common checks for op entry points. */
#define TTT_CHECK_NONNULL1(a) \
    do {                      \
        if (!(a)) return NULL; \
    } while (0)
#define TTT_CHECK_NONNULL2(a, b)   \
    do {                           \
        if (!(a) || !(b)) return NULL; \
    } while (0)
#define TTT_CHECK_NONNULL3(a, b, c)          \
    do {                                     \
        if (!(a) || !(b) || !(c)) return NULL; \
    } while (0)

#endif
