/* The context: backend choice, arenas (step lifetime), persistent allocations,
 * errors and grad mode. See the lifetime rules in include/ttt/tensor.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "ttt/graph.h"

enum { META_BLOCK = 1 << 20, ALIGN = 64 };
static const size_t GROW_MAX = (size_t)256 << 20; /* see arena_alloc */

struct ttt_persist {
    struct ttt_persist *next, *prev;
    ttt_tensor tensor;  /* the persistent tensor's header lives here */
    void *data;
};

/* ---- arenas ----------------------------------------------------------------- */

static void *block_alloc(ttt_ctx *ctx, ttt_arena *a, size_t size) {
    a->n_allocs++;
    return a->device ? ctx->be->alloc(ctx->bs, size) : calloc(1, size);
}

static void block_free(ttt_ctx *ctx, ttt_arena *a, void *p) {
    if (a->device) ctx->be->free(ctx->bs, p);
    else free(p);
}

static void *arena_alloc(ttt_ctx *ctx, ttt_arena *a, size_t bytes) {
    bytes = (bytes + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    if (bytes == 0) bytes = ALIGN;
    /* Try the current block, then later (already allocated) blocks. */
    while (a->cur < a->n_blocks) {
        if (a->used + bytes <= a->blocks[a->cur].size) {
            void *p = a->blocks[a->cur].base + a->used;
            a->used += bytes;
            a->total_used += bytes;
            return p;
        }
        if (a->cur + 1 >= a->n_blocks) break;
        a->cur++;
        a->used = 0;
    }
    /* Need a new block: double the last one (few blocks for small steps), but
     * past GROW_MAX grow in GROW_MAX steps, so a step that needs many GB
     * reserves about what it uses rather than up to twice that; the blocks are
     * merged into one at the next reset either way. */
    size_t size = a->n_blocks ? a->blocks[a->n_blocks - 1].size * 2 : a->first_size;
    if (size > GROW_MAX) size = GROW_MAX;
    if (size < bytes) size = bytes;
    if (a->n_blocks == a->cap_blocks) {
        size_t cap = a->cap_blocks ? a->cap_blocks * 2 : 8;
        ttt_block *nb = realloc(a->blocks, cap * sizeof *nb);
        if (!nb) return NULL;
        a->blocks = nb;
        a->cap_blocks = cap;
    }
    char *base = block_alloc(ctx, a, size);
    if (!base) return NULL;
    a->blocks[a->n_blocks].base = base;
    a->blocks[a->n_blocks].size = size;
    a->cur = a->n_blocks++;
    a->used = bytes;
    a->total_used += bytes;
    return base;
}

/* After a step that needed several blocks, replace them by one block of the
 * total size so the next step allocates nothing. Not while graphs exist: they
 * address the device blocks. */
static void arena_reset(ttt_ctx *ctx, ttt_arena *a) {
    if (a->n_blocks > 1 && !(a->device && ctx->n_graphs > 0)) {
        size_t total = 0;
        for (size_t i = 0; i < a->n_blocks; i++) {
            total += a->blocks[i].size;
            block_free(ctx, a, a->blocks[i].base);
        }
        a->n_blocks = 0;
        char *base = block_alloc(ctx, a, total);
        if (base) {
            a->blocks[0].base = base;
            a->blocks[0].size = total;
            a->n_blocks = 1;
        }
    }
    a->cur = 0;
    a->used = 0;
    a->total_used = 0;
}

static void arena_free(ttt_ctx *ctx, ttt_arena *a) {
    for (size_t i = 0; i < a->n_blocks; i++) block_free(ctx, a, a->blocks[i].base);
    free(a->blocks);
    memset(a, 0, sizeof *a);
}

void *ttt__meta_alloc(ttt_ctx *ctx, size_t bytes) {
    void *p = arena_alloc(ctx, &ctx->meta, bytes);
    if (!p) {
        ttt__set_error(ctx, "out of host memory (arena, %zu bytes)", bytes);
        return NULL;
    }
    memset(p, 0, bytes);
    return p;
}

void *ttt__data_alloc(ttt_ctx *ctx, size_t bytes) {
    void *p = arena_alloc(ctx, &ctx->data, bytes);
    if (!p && ctx->rec)
        ttt__set_error(ctx, "the step arena would need a new %s block (%zu bytes) while a graph is recorded; run "
                            "the same step without recording first, so that the arena has its size",
                       ctx->be->name, bytes);
    else if (!p)
        ttt__set_error(ctx, "out of %s memory (arena, %zu bytes)", ctx->be->name, bytes);
    return p;
}

ttt_mark_t ttt_mark(ttt_ctx *ctx) {
    ttt_mark_t m = {ctx->meta.cur, ctx->meta.used, ctx->data.cur, ctx->data.used};
    return m;
}

void ttt_release(ttt_ctx *ctx, ttt_mark_t m) {
    /* total_used is only a statistic; recompute it from the block sizes. */
    ctx->meta.cur = m.meta_block;
    ctx->meta.used = m.meta_used;
    ctx->data.cur = m.data_block;
    ctx->data.used = m.data_used;
    size_t used = m.data_used;
    for (size_t i = 0; i < m.data_block && i < ctx->data.n_blocks; i++) used += ctx->data.blocks[i].size;
    ctx->data.total_used = used;
}

void ttt_step_reset(ttt_ctx *ctx) {
    if (!ctx) return;
    arena_reset(ctx, &ctx->meta);
    arena_reset(ctx, &ctx->data);
}

size_t ttt_arena_bytes_used(const ttt_ctx *ctx) { return ctx->data.total_used; }

size_t ttt_arena_bytes_reserved(const ttt_ctx *ctx) {
    size_t s = 0;
    for (size_t i = 0; i < ctx->data.n_blocks; i++) s += ctx->data.blocks[i].size;
    return s;
}

uint64_t ttt_arena_block_allocs(const ttt_ctx *ctx) { return ctx->data.n_allocs + ctx->meta.n_allocs; }

void *ttt__stash(ttt_ctx *ctx, size_t bytes) {
    if (bytes > ctx->stash_size) {
        if (ctx->rec) {
            ttt__set_error(ctx, "the checkpoint stash would need to grow to %zu bytes while a graph is recorded; run "
                                "the same step without recording first", bytes);
            return NULL;
        }
        if (ctx->stash && ctx->n_graphs > 0) { /* a graph may address it: keep it until the last graph is freed */
            if (ttt__grow((void **)&ctx->stash_old, &ctx->cap_stash_old, ctx->n_stash_old + 1, sizeof(void *))) {
                ttt__set_error(ctx, "out of host memory (checkpoint stash list)");
                return NULL;
            }
            ctx->stash_old[ctx->n_stash_old++] = ctx->stash;
        } else if (ctx->stash) {
            ctx->be->free(ctx->bs, ctx->stash);
        }
        ctx->stash = NULL;
        ctx->stash_size = 0;
        size_t size = bytes + bytes / 2;
        ctx->stash = ctx->be->alloc(ctx->bs, size);
        ctx->stash_size = ctx->stash ? size : 0;
        if (!ctx->stash) {
            ttt__set_error(ctx, "out of %s memory (checkpoint stash, %zu bytes)", ctx->be->name, size);
            return NULL;
        }
    }
    return ctx->stash;
}

static void free_old_stashes(ttt_ctx *ctx) {
    for (size_t i = 0; i < ctx->n_stash_old; i++) ctx->real_be->free(ctx->bs, ctx->stash_old[i]);
    ctx->n_stash_old = 0;
}

void ttt__graphs_changed(ttt_ctx *ctx, int delta) {
    ctx->n_graphs += delta;
    if (ctx->n_graphs == 0) free_old_stashes(ctx);
}

/* ---- context ----------------------------------------------------------------- */

ttt_ctx *ttt_ctx_new(const ttt_ctx_config *cfg) {
    ttt_ctx_config c = {0};
    if (cfg) c = *cfg;
    if (c.device != TTT_CPU && c.device != TTT_CUDA) {
        ttt_backend_error("ttt_ctx_new: unknown device %d (TTT_CPU or TTT_CUDA)", (int)c.device);
        return NULL;
    }
    if (c.device_index < 0) {
        ttt_backend_error("ttt_ctx_new: device_index %d is negative", c.device_index);
        return NULL;
    }
    if (c.threads < 0) {
        ttt_backend_error("ttt_ctx_new: threads %d is negative (0 fits the machine)", c.threads);
        return NULL;
    }
    const ttt_backend *be = ttt_backend_for(c.device);
    if (!be) return NULL; /* device not compiled in, or no GPU (message in ttt_runtime_error) */
    const int count = be->device_count ? be->device_count() : 1;
    if (c.device_index >= count) {
        ttt_backend_error("ttt_ctx_new: %s device %d does not exist (%d present)", be->name, c.device_index, count);
        return NULL;
    }
    ttt_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        ttt_backend_error("ttt_ctx_new: out of host memory");
        return NULL;
    }
    const ttt_backend_config bc = {.device_index = c.device_index, .threads = c.threads, .tf32 = c.tf32};
    ttt_backend_state *bs = be->open(&bc);
    if (!bs) { /* the backend said why */
        free(ctx);
        return NULL;
    }
    if (ttt__profile_enabled()) ctx->profiled = ttt__profile_wrap(&be, &bs) == TTT_OK;
    const char *fused = getenv("TTT_FUSED");
    ctx->unfused = fused && !strcmp(fused, "0");
    const char *bwd_nodes = getenv("TTT_BWD_NODES");
    ctx->no_bwd_nodes = bwd_nodes && !strcmp(bwd_nodes, "0");
    ctx->be = be;
    ctx->bs = bs;
    ctx->real_be = be;
    ctx->meta.first_size = META_BLOCK;
    ctx->data.first_size = c.arena_bytes ? c.arena_bytes : (size_t)64 << 20;
    ctx->data.device = true;
    ctx->rng_state = c.seed ? c.seed : 0x9E3779B97F4A7C15ull;
    return ctx;
}

void ttt_ctx_free(ttt_ctx *ctx) {
    if (!ctx) return;
    if (ctx->rec) { /* end the backend's recording before freeing what it addresses */
        ttt_graph *g = NULL;
        ttt_graph_end(ctx, &g);
        ttt_graph_free(ctx, g);
    }
    struct ttt_persist *p = ctx->persist;
    while (p) {
        struct ttt_persist *next = p->next;
        if (p->data) ctx->be->free(ctx->bs, p->data);
        free(p);
        p = next;
    }
    if (ctx->stash) ctx->be->free(ctx->bs, ctx->stash);
    free_old_stashes(ctx);
    free(ctx->stash_old);
    arena_free(ctx, &ctx->meta);
    arena_free(ctx, &ctx->data);
    if (ctx->profiled) ttt__profile_release(ctx->real_be, ctx->bs);
    else ctx->real_be->close(ctx->bs);
    free(ctx);
}

ttt_device ttt_ctx_device(const ttt_ctx *ctx) { return ctx->be->device; }

const char *ttt_error(const ttt_ctx *ctx) { return ctx ? ctx->err : "no context"; }

void ttt_clear_error(ttt_ctx *ctx) { ctx->err[0] = 0; }

int ttt__set_error(ttt_ctx *ctx, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->err, sizeof ctx->err, fmt, ap);
    va_end(ap);
    return TTT_ERR;
}

int ttt__backend_failed(ttt_ctx *ctx, const char *op) {
    return ttt__set_error(ctx, "%s: %s backend: %s", op, ctx->be->name, ttt_backend_last_error());
}

/* ---- persistent tensors ------------------------------------------------------ */

static ttt_tensor *persistent_new(ttt_ctx *ctx, ttt_dtype dt, int ndim, const int64_t *shape, const char *name,
                                  int requires_grad) {
    /* Validate through the common header path, then move the header out of the arena. */
    ttt_tensor *h = ttt__header(ctx, dt, ndim, shape);
    if (!h) return NULL;
    if (ctx->rec) {
        ttt__set_error(ctx, "persistent tensor %s: cannot allocate device memory while a graph is recorded; create "
                            "it before ttt_graph_begin", name ? name : "");
        return NULL;
    }
    struct ttt_persist *p = calloc(1, sizeof *p);
    if (!p) {
        ttt__set_error(ctx, "out of host memory (persistent tensor)");
        return NULL;
    }
    p->tensor = *h;
    size_t bytes = (size_t)ttt_numel(h) * ttt_dtype_size(dt);
    p->data = ctx->be->alloc(ctx->bs, bytes ? bytes : 1);
    if (!p->data) {
        free(p);
        ttt__set_error(ctx, "out of %s memory (persistent tensor %s, %zu bytes)", ctx->be->name,
                       name ? name : "", bytes);
        return NULL;
    }
    ttt_tensor *t = &p->tensor;
    t->data = p->data;
    t->persistent = 1;
    t->requires_grad = requires_grad;
    t->name = name;
    p->next = ctx->persist;
    if (ctx->persist) ctx->persist->prev = p;
    ctx->persist = p;
    if (ttt_fill(ctx, t, 0.0) != TTT_OK) return NULL;
    return t;
}

ttt_tensor *ttt_param(ttt_ctx *ctx, ttt_dtype dt, int ndim, const int64_t *shape, const char *name) {
    return persistent_new(ctx, dt, ndim, shape, name, 1);
}

ttt_tensor *ttt_persistent(ttt_ctx *ctx, ttt_dtype dt, int ndim, const int64_t *shape, const char *name) {
    return persistent_new(ctx, dt, ndim, shape, name, 0);
}

void ttt_persistent_free(ttt_ctx *ctx, ttt_tensor *t) {
    if (!ctx || !t || !t->persistent) return;
    if (t->grad) ttt_persistent_free(ctx, t->grad);
    struct ttt_persist *p = (struct ttt_persist *)((char *)t - offsetof(struct ttt_persist, tensor));
    if (p->prev) p->prev->next = p->next;
    else ctx->persist = p->next;
    if (p->next) p->next->prev = p->prev;
    ctx->be->free(ctx->bs, p->data);
    free(p);
}
