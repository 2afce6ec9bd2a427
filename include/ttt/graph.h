/* ttt/graph.h: record the kernels of a step once and replay them (CUDA graphs).
 *
 * A training step of a small model is hundreds to thousands of small kernels,
 * and launching each one from the host costs microseconds. A graph records the
 * kernels that the ops between ttt_graph_begin and ttt_graph_end queue, with
 * their arguments and device addresses, and ttt_graph_replay launches them all
 * at once.
 *
 *   ... run the step once or twice without recording (sizes the arena) ...
 *   ttt_step_reset(ctx);
 *   ttt_assign(ctx, x_in, batch);               // inputs: persistent tensors
 *   ttt_graph_begin(ctx);
 *   loss = model(ctx, x_in, ...);               // recorded, NOT run
 *   ttt_assign(ctx, loss_out, loss);            // outputs: persistent copies
 *   ttt_zero_grad(...); ttt_backward(ctx, loss);
 *   if (ttt_graph_end(ctx, &g) != TTT_OK) ...   // ttt_error(ctx) says why
 *   for each step: ttt_assign(ctx, x_in, next_batch); ttt_graph_replay(ctx, g);
 *                  read loss_out; optimizer step; ...
 *   ttt_graph_free(ctx, g);                     // before ttt_ctx_free
 *
 * Rules:
 *   - Nothing runs while recording: the first ttt_graph_replay runs the
 *     recorded step. A replay does exactly what was recorded: the same kernels
 *     on the same addresses with the same host-side values (shapes, learning
 *     rates, seeds, anything computed on the host) frozen in. New data enters
 *     only through memory the graph reads, updated before the replay (e.g.
 *     ttt_assign into a persistent tensor).
 *   - Host transfers cannot be recorded and fail with a message naming the
 *     call: ttt_from_host and other uploads, ttt_copy_to_host and ttt_item,
 *     synchronization. For a scalar the host needs after every replay, use
 *     ttt_item_into. Device allocations fail too: persistent tensors (and
 *     gradients, created by the first ttt_zero_grad / ttt_backward) must exist
 *     before recording, and the step arena must already be large enough, which
 *     it is once the same step has run twice without recording (the first
 *     run grows the arena, the next reset merges its blocks).
 *   - Step temporaries recorded in the graph live in the arena at the addresses
 *     they had while recording; each replay rewrites them. They may be read
 *     (e.g. through tensors kept from the recording) only until the next
 *     allocation after a ttt_step_reset. While a graph exists the context never
 *     frees memory it may address (the data arena stops merging its blocks).
 *   - ttt_graph_begin clears the context's error message; if any op fails
 *     while recording, ttt_graph_end fails and keeps that op's message. A
 *     recording that failed must still be ended with ttt_graph_end.
 *   - Backends: CUDA. The CPU backend has no graphs: ttt_graph_begin fails with
 *     a message (check ttt_graph_supported first) rather than silently running
 *     the ops, because callers rely on a replay re-running the work.
 */
#ifndef TTT_GRAPH_H
#define TTT_GRAPH_H

#include "ttt/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ttt_graph ttt_graph;

int ttt_graph_supported(const ttt_ctx *ctx); /* 1 if the context's backend records graphs */
int ttt_graph_recording(const ttt_ctx *ctx); /* 1 between ttt_graph_begin and ttt_graph_end */

int ttt_graph_begin(ttt_ctx *ctx);
/* Ends the recording (always, also after errors); *graph is NULL on failure. */
int ttt_graph_end(ttt_ctx *ctx, ttt_graph **graph);
/* Runs the recorded work and waits for it; then fills the ttt_item_into
 * destinations and reports errors the recorded kernels found (bad ids). */
int ttt_graph_replay(ttt_ctx *ctx, ttt_graph *graph);
void ttt_graph_free(ttt_ctx *ctx, ttt_graph *graph); /* NULL is a no-op */

/* *dst = scale * (value of the one-element tensor t). Outside a recording it
 * reads at once (like ttt_item). While recording it records the read: every
 * ttt_graph_replay of the graph writes *dst afterwards, so dst must stay
 * valid as long as the graph. At most 4096 such reads per graph. */
int ttt_item_into(ttt_ctx *ctx, const ttt_tensor *t, double scale, double *dst);

#ifdef __cplusplus
}
#endif
#endif
