/* ttt/autodiff.h: reverse-mode autodiff to any order.
 *
 * The graph is implicit: each op output points at the node that made it, and
 * each node at its inputs. There is no global tape to clear; the graph is made
 * of step temporaries and dies with ttt_step_reset().
 *
 * ttt_grad() is the central primitive. It can be called inside a forward pass
 * (an inner loop taking gradient steps) and, with create_graph = 1, returns
 * gradients that are themselves graph nodes, so an outer loss built from them
 * can be differentiated again -- like torch.autograd.grad(create_graph=True).
 */
#ifndef TTT_AUTODIFF_H
#define TTT_AUTODIFF_H

#include "ttt/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Gradients of outputs with respect to inputs (total derivatives: every path
 * from the outputs to an input counts).
 *   grad_outputs: one per output (same shape), or NULL for all ones.
 *   inputs: any tensors in the graph (leaves or intermediates) that require grad.
 *   grads: filled with one tensor per input (zeros where an input is unused).
 *   create_graph: 1 records the backward computation so grads are differentiable.
 * Returns TTT_OK or TTT_ERR. */
int ttt_grad(ttt_ctx *ctx, int n_outputs, ttt_tensor *const *outputs, ttt_tensor *const *grad_outputs,
             int n_inputs, ttt_tensor *const *inputs, ttt_tensor **grads, int create_graph);

/* Accumulate d(loss)/d(p) into p->grad for every persistent tensor p with
 * requires_grad that the loss depends on. loss must have one element. */
int ttt_backward(ttt_ctx *ctx, ttt_tensor *loss);
/* Set p->grad to zero (allocating it on first use) for each parameter. */
int ttt_zero_grad(ttt_ctx *ctx, int n, ttt_tensor *const *params);

/* Grad mode. Regions nest; ops inside a no-grad region record nothing. */
void ttt_no_grad_begin(ttt_ctx *ctx);
void ttt_no_grad_end(ttt_ctx *ctx);
int ttt_grad_enabled(const ttt_ctx *ctx);
/* Switch grad mode on or off for a region, whatever the enclosing mode; an
 * inner loop needs it on even during no-grad evaluation. Restore with the
 * returned value. */
typedef struct {
    int depth;
} ttt_grad_mode;
ttt_grad_mode ttt_grad_mode_set(ttt_ctx *ctx, int enabled);
void ttt_grad_mode_restore(ttt_ctx *ctx, ttt_grad_mode previous);
/* Make a (temporary or persistent) tensor a leaf that gradients flow to. */
void ttt_set_requires_grad(ttt_tensor *t, int on);
/* A view of x that carries no graph: gradients stop here. */
ttt_tensor *ttt_detach(ttt_ctx *ctx, ttt_tensor *x);

/* Rematerialization.
 * fn must be a pure function of its n_in inputs: anything else it reads is
 * treated as a constant, and it must be deterministic (pass RNG state in).
 * user must stay valid until the backward pass has run (e.g. allocate it in
 * the step arena or keep it for the whole step).
 * Inside fn the inputs are independent leaves, so a ttt_grad inside fn with
 * respect to one input does not see a dependence of another input on it; write
 * fn so that this makes no difference (an inner loss depends on W and on
 * tensors that do not depend on W), as in every TTT inner loop.
 * It may itself call ttt_grad (an inner-loop step) and ttt_checkpoint.
 * ttt_checkpoint runs fn, keeps only its outputs, and frees every intermediate;
 * the backward pass runs fn again, differentiates it, and frees its graph again
 * unless create_graph needs it. Gradients match running fn directly. */
typedef int (*ttt_fn)(ttt_ctx *ctx, void *user, int n_in, ttt_tensor *const *in, int n_out, ttt_tensor **out);
int ttt_checkpoint(ttt_ctx *ctx, ttt_fn fn, void *user, int n_in, ttt_tensor *const *in, int n_out,
                   ttt_tensor **out);
/* The same contract, without the recomputation: fn runs once on detached
 * inputs (its graph, and any inner ttt_grad walk, stay local) and its graph is
 * kept, so the backward pass differentiates it directly. Faster than
 * ttt_checkpoint; memory holds every intermediate of fn until the step ends.
 * Under create_graph (a gradient of the gradient) the backward pass runs fn
 * again on the node's own inputs, as ttt_checkpoint does. */
int ttt_subgraph(ttt_ctx *ctx, ttt_fn fn, void *user, int n_in, ttt_tensor *const *in, int n_out, ttt_tensor **out);

#ifdef __cplusplus
}
#endif
#endif
