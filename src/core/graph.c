/* Recording and replaying steps (include/ttt/graph.h). The backend records its
 * kernels; the context makes uncapturable calls fail with a message instead:
 * while recording, ctx->be is a copy of the backend table whose host
 * transfers and allocations refuse, and context.c checks its own allocations.
 * Host reads needed after each replay (ttt_item_into) become recorded copies
 * into a small device buffer that the replay downloads at once. */
#include <stdlib.h>

#include "internal.h"
#include "ttt/graph.h"

enum { READS_MAX = 4096 };

struct ttt_graph {
    ttt_ctx *ctx;
    void *backend;       /* the backend's recorded work */
    double *readback;    /* device: one double per recorded read */
    double *host;        /* staging for the download */
    double **dst;        /* where each read goes on the host */
    double *scale;
    int n_reads;
    void *arena_block;   /* first data arena block while recording (never freed meanwhile) */
};

/* ---- the recording table's refusals (no context here: the op layer prefixes
 * the message with the call's name) ---------------------------------------------- */

static void *rec_alloc(ttt_backend_state *self, size_t bytes) {
    (void)self;
    ttt_backend_error("cannot allocate %zu bytes of device memory while a graph is recorded (allocate before "
                      "ttt_graph_begin)", bytes);
    return NULL;
}

static int rec_upload(ttt_backend_state *self, void *dst, const void *host, size_t bytes) {
    (void)self, (void)dst, (void)host, (void)bytes;
    ttt_backend_error("cannot upload host data while a graph is recorded (a replay would not read the host "
                      "buffer again): upload into a persistent tensor before ttt_graph_begin or the replay");
    return TTT_ERR;
}

static int rec_download(ttt_backend_state *self, void *host, const void *src, size_t bytes) {
    (void)self, (void)host, (void)src, (void)bytes;
    ttt_backend_error("cannot read device memory on the host while a graph is recorded (nothing has run yet): "
                      "read after ttt_graph_replay, or use ttt_item_into");
    return TTT_ERR;
}

static int rec_synchronize(ttt_backend_state *self) {
    (void)self;
    ttt_backend_error("cannot wait for the device while a graph is recorded");
    return TTT_ERR;
}

/* ---- graphs ------------------------------------------------------------------------- */

static void *first_block(const ttt_ctx *ctx) { return ctx->data.n_blocks ? ctx->data.blocks[0].base : NULL; }

static void graph_destroy(ttt_ctx *ctx, ttt_graph *g) {
    if (g->backend) ctx->real_be->graph_free(ctx->bs, g->backend);
    if (g->readback) ctx->real_be->free(ctx->bs, g->readback);
    free(g->host);
    free(g->dst);
    free(g->scale);
    free(g);
    ttt__graphs_changed(ctx, -1);
}

int ttt_graph_supported(const ttt_ctx *ctx) { return ctx && ctx->real_be->graph_begin != NULL; }

int ttt_graph_recording(const ttt_ctx *ctx) { return ctx && ctx->rec != NULL; }

int ttt_graph_begin(ttt_ctx *ctx) {
    if (!ctx) return TTT_ERR;
    if (ctx->rec) return ttt__set_error(ctx, "ttt_graph_begin: a graph is already being recorded");
    const ttt_backend *be = ctx->real_be;
    if (!be->graph_begin || !be->graph_end || !be->graph_replay || !be->graph_free)
        return ttt__set_error(ctx, "ttt_graph_begin: the %s backend cannot record graphs (see ttt_graph_supported)",
                              be->name);
    ttt_graph *g = calloc(1, sizeof *g);
    if (!g) return ttt__set_error(ctx, "ttt_graph_begin: out of host memory");
    ttt__graphs_changed(ctx, +1);
    g->ctx = ctx;
    g->host = malloc(READS_MAX * sizeof *g->host);
    g->dst = malloc(READS_MAX * sizeof *g->dst);
    g->scale = malloc(READS_MAX * sizeof *g->scale);
    if (!g->host || !g->dst || !g->scale) {
        graph_destroy(ctx, g);
        return ttt__set_error(ctx, "ttt_graph_begin: out of host memory");
    }
    if (!(g->readback = be->alloc(ctx->bs, READS_MAX * sizeof(double)))) {
        graph_destroy(ctx, g);
        return ttt__backend_failed(ctx, "ttt_graph_begin");
    }
    if (be->graph_begin(ctx->bs) != TTT_OK) {
        graph_destroy(ctx, g);
        return ttt__backend_failed(ctx, "ttt_graph_begin");
    }
    g->arena_block = first_block(ctx);
    ctx->rec = g;
    ctx->rec_table = *be;
    ctx->rec_table.alloc = rec_alloc;
    ctx->rec_table.upload = rec_upload;
    ctx->rec_table.download = rec_download;
    ctx->rec_table.synchronize = rec_synchronize;
    ctx->be = &ctx->rec_table;
    ttt_clear_error(ctx);
    return TTT_OK;
}

int ttt_graph_end(ttt_ctx *ctx, ttt_graph **graph) {
    if (!ctx) return TTT_ERR;
    if (!graph) return ttt__set_error(ctx, "ttt_graph_end: graph must not be NULL");
    *graph = NULL;
    ttt_graph *g = ctx->rec;
    if (!g) return ttt__set_error(ctx, "ttt_graph_end: no graph is being recorded (call ttt_graph_begin)");
    ctx->rec = NULL;
    ctx->be = ctx->real_be;
    /* An op that failed while recording left its message: it explains the failure better than the backend. */
    const int op_failed = ctx->err[0] != 0;
    int rc = ctx->be->graph_end(ctx->bs, &g->backend);
    if (rc != TTT_OK && !op_failed) ttt__backend_failed(ctx, "ttt_graph_end");
    if (rc == TTT_OK && !op_failed && first_block(ctx) != g->arena_block)
        rc = ttt__set_error(ctx, "ttt_graph_end: the step arena moved while recording");
    if (rc != TTT_OK || op_failed) {
        graph_destroy(ctx, g);
        return TTT_ERR;
    }
    *graph = g;
    return TTT_OK;
}

int ttt_graph_replay(ttt_ctx *ctx, ttt_graph *g) {
    if (!ctx) return TTT_ERR;
    if (!g) return ttt__set_error(ctx, "ttt_graph_replay: graph is NULL");
    if (g->ctx != ctx) return ttt__set_error(ctx, "ttt_graph_replay: the graph belongs to another context");
    if (ctx->rec) return ttt__set_error(ctx, "ttt_graph_replay: cannot replay while a graph is being recorded");
    if (ctx->be->graph_replay(ctx->bs, g->backend) != TTT_OK) return ttt__backend_failed(ctx, "ttt_graph_replay");
    if (g->n_reads) {
        if (ctx->be->download(ctx->bs, g->host, g->readback, (size_t)g->n_reads * sizeof(double)) != TTT_OK)
            return ttt__backend_failed(ctx, "ttt_graph_replay");
        for (int i = 0; i < g->n_reads; i++) *g->dst[i] = g->scale[i] * g->host[i];
    }
    return TTT_OK;
}

void ttt_graph_free(ttt_ctx *ctx, ttt_graph *g) {
    if (!ctx || !g || g->ctx != ctx) return;
    graph_destroy(ctx, g);
}

int ttt_item_into(ttt_ctx *ctx, const ttt_tensor *t, double scale, double *dst) {
    if (!ctx || !t) return TTT_ERR;
    if (!dst) return ttt__set_error(ctx, "ttt_item_into: destination is NULL");
    if (ttt_numel(t) != 1) {
        char s[96];
        return ttt__set_error(ctx, "ttt_item_into: tensor of shape %s has %lld elements, not 1",
                              ttt_shape_str(t, s, sizeof s), (long long)ttt_numel(t));
    }
    ttt_graph *g = ctx->rec;
    if (!g) {
        double v;
        if (ttt_copy_to_host(ctx, t, &v, TTT_F64) != TTT_OK) return TTT_ERR;
        *dst = scale * v;
        return TTT_OK;
    }
    if (g->n_reads >= READS_MAX)
        return ttt__set_error(ctx, "ttt_item_into: more than %d reads recorded in one graph", READS_MAX);
    ttt_tensor slot = {.dtype = TTT_F64, .device = t->device, .ndim = 0, .data = g->readback + g->n_reads};
    if (ctx->be->copy(ctx->bs, &slot, t) != TTT_OK) return ttt__backend_failed(ctx, "ttt_item_into");
    g->dst[g->n_reads] = dst;
    g->scale[g->n_reads] = scale;
    g->n_reads++;
    return TTT_OK;
}
