/* ttt/backend.h: the interface a device backend implements.
 *
 * The op layer (src/ops) validates arguments, allocates outputs, records the
 * autodiff graph and then calls one of these kernels. Kernels know nothing of
 * autodiff; a backend (CPU, CUDA) is one table of them, run on an instance
 * (below). Kernels may
 * assume the op layer has already checked shapes and dtypes: they return
 * TTT_ERR only for failures of their own (e.g. an unsupported dtype), after
 * writing a message with ttt_backend_error().
 *
 * Layout promises from the op layer:
 *   dst is always dense row-major ("contiguous") unless noted;
 *   "strided" sources may have any strides, including 0 (broadcast);
 *   "contiguous" sources are dense row-major.
 */
#ifndef TTT_BACKEND_H
#define TTT_BACKEND_H

#include "ttt/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    TTT_U_NEG, TTT_U_EXP, TTT_U_LOG, TTT_U_TANH, TTT_U_SIGMOID, TTT_U_GELU, TTT_U_SILU,
    TTT_U_RELU, TTT_U_SQRT, TTT_U_RSQRT, TTT_U_ABS, TTT_U_SIGN,
    TTT_U_STEP,     /* x > 0 ? 1 : 0 */
    TTT_U_POW,      /* x ^ p0 */
    TTT_U_CLAMP,    /* min(max(x, p0), p1) */
    TTT_U_INRANGE,  /* p0 <= x <= p1 ? 1 : 0 */
    TTT_U_AFFINE,   /* p0 * x + p1 */
    TTT_U_ELU1,     /* x > 0 ? x + 1 : exp(x) */
    TTT_U_GELU_GRAD, /* d gelu / dx: one pass where the composed derivative took twelve */
    TTT_U_SILU_GRAD, /* d silu / dx */
    TTT_U_COUNT
} ttt_unary_op;

typedef enum {
    TTT_B_ADD, TTT_B_SUB, TTT_B_MUL, TTT_B_DIV, TTT_B_MAX, TTT_B_MIN,
    TTT_B_GT, TTT_B_GE, TTT_B_EQ, /* 1 / 0 */
    TTT_B_COUNT
} ttt_binary_op;

typedef enum { TTT_R_SUM, TTT_R_MAX } ttt_reduce_op;
typedef enum { TTT_NORM_LAYER, TTT_NORM_RMS } ttt_norm_kind;

/* Backend instances. A backend is a table of entries (ttt_backend, below) and
 * an instance is one opened state of it: the CPU's thread count; a GPU's
 * device index, stream, cuBLAS handle and workspace, memory pool, TF32 setting
 * and graph-recording state. Every entry except open and the process-wide
 * device queries takes that state as its first argument, so two contexts (two
 * instances) work side by side in one process: two GPUs, or two CPU thread
 * counts. Each context opens its own instance and closes it when freed.
 * ttt_backend_state is opaque: each backend casts it to its own struct. */
typedef struct ttt_backend_state ttt_backend_state;

typedef struct {
    int device_index; /* which device of the kind (CUDA: the GPU); validated by open */
    int threads;      /* CPU: threads of this instance's parallel regions; 0 = fit the machine */
    int tf32;         /* CUDA: f32 matmuls on the TF32 tensor cores for this instance */
} ttt_backend_config;

#define TTT__UNPAREN(...) __VA_ARGS__

/* THE LIST OF KERNEL ENTRIES. X(name, (parameters after self), (argument names))
 * generates the entries of ttt_backend (int (*name)(ttt_backend_state *, ...)),
 * the ttt_kernel enum (TTT_K_name) and the profile's names and wrappers
 * (src/core/profile.c); tests/test_op_registry.c fails when gradcheck's cases
 * leave one of them unexercised. Entries marked optional may be NULL. */
#define TTT_KERNEL_LIST(X)                                                                                        \
    /* dst <- src elementwise, same shape, strided src and dst, any dtypes (converts) */                        \
    X(copy, (ttt_tensor *dst, const ttt_tensor *src), (dst, src))                                                \
    /* dst may be strided */                                                                                     \
    X(fill, (ttt_tensor *dst, double value), (dst, value))                                                       \
    /* dst = op(src); src strided with dst's shape */                                                           \
    X(unary, (ttt_unary_op op, ttt_tensor *dst, const ttt_tensor *src, double p0, double p1),                   \
      (op, dst, src, p0, p1))                                                                                    \
    /* dst = a op b; a and b strided views already expanded to dst's shape */                                   \
    X(binary, (ttt_binary_op op, ttt_tensor *dst, const ttt_tensor *a, const ttt_tensor *b), (op, dst, a, b))   \
    /* dst = cond ? a : b; all strided views expanded to dst's shape */                                         \
    X(where, (ttt_tensor *dst, const ttt_tensor *cond, const ttt_tensor *a, const ttt_tensor *b),              \
      (dst, cond, a, b))                                                                                         \
    /* dst has src's ndim with reduced axes of size 1; src contiguous */                                        \
    X(reduce, (ttt_reduce_op op, ttt_tensor *dst, const ttt_tensor *src), (op, dst, src))                       \
    /* C[b] = op(A[b]) op(B[b]); A, B have the same ndim as C (batch axes expanded with stride 0 where          \
     * broadcast) and a unit stride in their last axis; C contiguous. */                                        \
    X(matmul, (ttt_tensor *c, const ttt_tensor *a, const ttt_tensor *b, int trans_a, int trans_b),             \
      (c, a, b, trans_a, trans_b))                                                                               \
    /* last-axis kernels, contiguous src */                                                                      \
    X(softmax, (ttt_tensor *dst, const ttt_tensor *src, int log), (dst, src, log))                              \
    X(norm, (ttt_norm_kind kind, ttt_tensor *dst, const ttt_tensor *src, double eps), (kind, dst, src, eps))    \
    /* Optional. The norm's first-order gradient in one pass: dx from x, the forward's output y and dy (all     \
     * dense, one shape): RMS dx = rstd (dy - y mean(dy y)); layer dx = rstd (dy - mean(dy) - y mean(dy y)). */ \
    X(norm_bwd,                                                                                                  \
      (ttt_norm_kind kind, ttt_tensor *dx, const ttt_tensor *x, const ttt_tensor *y, const ttt_tensor *dy,      \
       double eps),                                                                                              \
      (kind, dx, x, y, dy, eps))                                                                                 \
    /* Optional. The norm times a weight in one pass: dst = round(round(norm(src)) * gamma), gamma [D] dense   \
     * (src [..., D]), each value rounded where norm then a binary mul would round it (the same bits). */      \
    X(norm_affine,                                                                                               \
      (ttt_norm_kind kind, ttt_tensor *dst, const ttt_tensor *src, const ttt_tensor *gamma, double eps),        \
      (kind, dst, src, gamma, eps))                                                                              \
    /* Optional. Its first-order gradient in one pass, with the bits of the composed ops (g = dy gamma, then    \
     * norm_bwd with y = norm(x), recomputed): dx, and dgx = dy * norm(x) (gamma's gradient before the sum     \
     * over rows; NULL: not wanted). All dense; x, dy, dx, dgx one shape. */                                    \
    X(norm_affine_bwd,                                                                                           \
      (ttt_norm_kind kind, ttt_tensor *dx, ttt_tensor *dgx, const ttt_tensor *x, const ttt_tensor *gamma,       \
       const ttt_tensor *dy, double eps),                                                                        \
      (kind, dx, dgx, x, gamma, dy, eps))                                                                        \
    /* Optional. The RMS norm's second order: the VJP of norm_affine_bwd's (dx, dgx) (gamma NULL: norm_bwd's   \
     * dx alone) along u (dx's cotangent) and v (dgx's): gx, gdy, and ggx (gamma's gradient before the sum over \
     * rows). u, v NULL: zero; any output NULL: not wanted. All dense; gamma [D], the rest x's shape.           \
     * TTT_BACKEND_DECLINED for layer norm (the op composes). */                                                \
    X(norm_bwd2,                                                                                                 \
      (ttt_norm_kind kind, ttt_tensor *gx, ttt_tensor *gdy, ttt_tensor *ggx, const ttt_tensor *x,               \
       const ttt_tensor *gamma, const ttt_tensor *dy, const ttt_tensor *u, const ttt_tensor *v, double eps),    \
      (kind, gx, gdy, ggx, x, gamma, dy, u, v, eps))                                                             \
    /* per-row loss [...] of logits [..., V] and I32 targets [...]; 0 where ignored. The logits' rows may be    \
     * spaced (ttt_row_stride); the loss is f32 for bf16 logits (sums in f32), else the logits' dtype. */     \
    X(cross_entropy, (ttt_tensor *dst, const ttt_tensor *logits, const ttt_tensor *targets, int ignore_index),  \
      (dst, logits, targets, ignore_index))                                                                      \
    /* Optional. The gradient of those per-row losses in one pass: dst [..., V] = grow[r] *                     \
     * (softmax(logits[r]) - onehot(targets[r])), all-zero rows where ignored; grow [...] has the loss's dtype  \
     * (f32 for bf16 logits); dst dense in the logits' dtype, the logits' rows spaced as cross_entropy's. */    \
    X(cross_entropy_bwd,                                                                                         \
      (ttt_tensor *dst, const ttt_tensor *logits, const ttt_tensor *targets, const ttt_tensor *grow,            \
       int ignore_index),                                                                                        \
      (dst, logits, targets, grow, ignore_index))                                                                \
    /* Optional. The VJP of cross_entropy_bwd's dst along u (its cotangent: dense, the logits' shape and dtype),  \
     * with p = softmax(logits[r]): gx [..., V] = grow[r] p (u - u.p), dense in the logits' dtype; ggrow [...] =  \
     * u.p - u[target], in grow's dtype; both 0 on ignored rows; either NULL: not wanted. The logits' rows spaced \
     * as cross_entropy's. TTT-E2E's inner loss is differentiated twice: this is its second order in one pass. */ \
    X(cross_entropy_bwd2,                                                                                        \
      (ttt_tensor *gx, ttt_tensor *ggrow, const ttt_tensor *logits, const ttt_tensor *targets,                  \
       const ttt_tensor *grow, const ttt_tensor *u, int ignore_index),                                           \
      (gx, ggrow, logits, targets, grow, u, ignore_index))                                                       \
    /* dst [..., V] = one-hot of targets (all-zero row where ignored) */                                        \
    X(one_hot, (ttt_tensor *dst, const ttt_tensor *targets, int ignore_index), (dst, targets, ignore_index))    \
    /* dst [n, D] = table[ids[n]]; ids I32 contiguous, table contiguous [V, D] */                               \
    X(gather_rows, (ttt_tensor *dst, const ttt_tensor *table, const ttt_tensor *ids), (dst, table, ids))        \
    /* dst [V, D] (zeroed by the caller) += src[n] at rows ids[n] */                                            \
    X(scatter_add_rows, (ttt_tensor *dst, const ttt_tensor *src, const ttt_tensor *ids), (dst, src, ids))       \
    /* rotate-half RoPE; inverse = 1 rotates by -angle */                                                       \
    X(rope, (ttt_tensor *dst, const ttt_tensor *src, int seq_axis, int64_t pos0, double theta, int inverse),   \
      (dst, src, seq_axis, pos0, theta, inverse))                                                                \
    X(attn_mask, (ttt_tensor *dst, const ttt_tensor *src, int64_t window, int64_t q_offset, double fill),       \
      (dst, src, window, q_offset, fill))                                                                        \
    /* dst = silu(a) * b (SwiGLU's gate); a, b, dst dense, one shape */                                         \
    X(swiglu, (ttt_tensor *dst, const ttt_tensor *a, const ttt_tensor *b), (dst, a, b))                          \
    /* Optional. Its first-order gradients in one pass: da = dy b silu'(a), db = dy silu(a), each computed as   \
     * the composed ops round them; either of da, db may be NULL (not wanted); all dense, one shape. */         \
    X(swiglu_bwd, (ttt_tensor *da, ttt_tensor *db, const ttt_tensor *a, const ttt_tensor *b, const ttt_tensor *dy), \
      (da, db, a, b, dy))                                                                                        \
    /* Optional. The VJP of swiglu_bwd's (da, db) along u (da's cotangent) and v (db's): ga, gb and gdy (a's,   \
     * b's and dy's gradients). u, v NULL: zero; any output NULL: not wanted. All dense, one shape. TTT-E2E's \
     * inner loop differentiates SwiGLU's gradient: this is that differentiation in one pass. */                \
    X(swiglu_bwd2,                                                                                               \
      (ttt_tensor *ga, ttt_tensor *gb, ttt_tensor *gdy, const ttt_tensor *a, const ttt_tensor *b,               \
       const ttt_tensor *dy, const ttt_tensor *u, const ttt_tensor *v),                                          \
      (ga, gb, gdy, a, b, dy, u, v))                                                                             \
    /* optimizer updates, in place on contiguous persistent tensors */                                          \
    X(adamw,                                                                                                     \
      (ttt_tensor *p, const ttt_tensor *g, ttt_tensor *m, ttt_tensor *v, double lr, double beta1, double beta2, \
       double eps, double weight_decay, int64_t step),                                                           \
      (p, g, m, v, lr, beta1, beta2, eps, weight_decay, step))                                                   \
    X(sgd,                                                                                                       \
      (ttt_tensor *p, const ttt_tensor *g, ttt_tensor *buf, double lr, double momentum, double weight_decay,    \
       int nesterov),                                                                                            \
      (p, g, buf, lr, momentum, weight_decay, nesterov))                                                         \
    /* Optional multi-tensor forms of the optimizer's per-parameter work (NULL: the caller loops over the      \
     * per-tensor entries). n >= 1 contiguous tensors of one float dtype per call; the pointer arrays are host   \
     * memory read during the call only. adamw_multi updates each (p[i], g[i], m[i], v[i]) exactly as adamw    \
     * does with weight_decay[i] (the same bits). */                                                           \
    X(adamw_multi,                                                                                               \
      (int n, ttt_tensor *const *p, ttt_tensor *const *g, ttt_tensor *const *m, ttt_tensor *const *v,           \
       const double *weight_decay, double lr, double beta1, double beta2, double eps, int64_t step),             \
      (n, p, g, m, v, weight_decay, lr, beta1, beta2, eps, step))                                                \
    /* dst (f64, one element) = sum over i in order of (f64) sum(x[i] * x[i]), each term with the bits of the   \
     * composed ops (binary mul, reduce sum to x's dtype, cast): the global norm of gradient clipping. */      \
    X(sumsq_multi, (ttt_tensor *dst, int n, const ttt_tensor *const *x), (dst, n, x))                             \
    /* x[i] *= a in place for every i, with unary TTT_U_AFFINE(a, 0)'s bits. */                                 \
    X(scale_multi, (int n, ttt_tensor *const *x, double a), (n, x, a))                                           \
    /* Optional. TTT-E2E's inner SGD step with a per-sequence global-norm clip (ttt_clip_step) over n >= 1      \
     * pairs w[i], g[i] [B, ...] (one shape per pair; B, the leading axis, shared): out[i] = w[i] - eta s_b g[i] \
     * on sequence b, s_b = clip / N_b where N_b >= clip > 0, else 1, N_b = sqrt(sum_i |g[i][b]|^2) summed in   \
     * double in a fixed order. norm [B] f64 gets N_b (NULL exactly when clip <= 0: no norm is formed). All    \
     * dense, one dtype; the pointer arrays are host memory read during the call only. Returns                 \
     * TTT_BACKEND_DECLINED, having written nothing, for dtypes it does not handle (the op composes). */       \
    X(clip_step,                                                                                                 \
      (int n, ttt_tensor *const *out, ttt_tensor *norm, const ttt_tensor *const *w, const ttt_tensor *const *g, \
       double eta, double clip),                                                                                 \
      (n, out, norm, w, g, eta, clip))                                                                           \
    /* Optional. Its gradient with respect to g (w's is dout itself): with r_b = sum_i <dout[i][b], g[i][b]>,    \
     * dg[i] = -eta clip / N_b dout[i] + eta clip r_b / N_b^3 g[i] on a sequence with N_b >= clip > 0 (the tie  \
     * is clipped, as ttt_maximum's gradient has it), else -eta dout[i]. norm: the forward's (NULL when clip <= \
     * 0); dout[i] NULL: zero; dg[i] NULL: not wanted. Dense, one dtype, as clip_step takes them. */           \
    X(clip_step_bwd,                                                                                             \
      (int n, ttt_tensor *const *dg, const ttt_tensor *const *dout, const ttt_tensor *const *g,                  \
       const ttt_tensor *norm, double eta, double clip),                                                         \
      (n, dg, dout, g, norm, eta, clip))                                                                         \
    /* Optional fused attention (NULL where absent, as on the CPU; ttt_attention then composes it of the       \
     * kernels above). q [..., Tq, d], k [..., Tk, d], v [..., Tk, dv], out [..., Tq, dv]: dense, the same      \
     * leading axes (one batch axis to the kernel); masking as ttt_attention states it; scale > 0. lse [..., Tq] \
     * is f32, dense: each query row's log-sum-exp of its scaled, masked scores, for the backward pass (NULL    \
     * when not wanted). Returns TTT_BACKEND_DECLINED, having written nothing, for dtypes or sizes the kernels   \
     * do not handle. Like every kernel here they must not allocate. */                                         \
    X(attention_fwd,                                                                                             \
      (ttt_tensor *out, ttt_tensor *lse, const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v,         \
       int causal, int64_t window, double scale),                                                                \
      (out, lse, q, k, v, causal, window, scale))                                                                \
    /* Optional. First-order gradients dq, dk, dv (dense, the shapes of q, k, v) from dout (dense, out's        \
     * shape) and the forward's out and lse; delta is f32 scratch of lse's shape. Takes whatever                 \
     * attention_fwd took. */                                                                                    \
    X(attention_bwd,                                                                                             \
      (ttt_tensor *dq, ttt_tensor *dk, ttt_tensor *dv, ttt_tensor *delta, const ttt_tensor *dout,                \
       const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *out,                     \
       const ttt_tensor *lse, int causal, int64_t window, double scale),                                         \
      (dq, dk, dv, delta, dout, q, k, v, out, lse, causal, window, scale))                                       \
    /* Optional fused double backward: the gradients gq, gk, gv, gdout (dense, the shapes of q, k, v, dout) of \
     * Phi = <uq, dq> + <uk, dk> + <uv, dv>, where (dq, dk, dv) is attention_bwd's result for these q, k, v,    \
     * dout (lse from the forward, delta from attention_bwd). rows is f32 scratch [2, ..., Tq]. Returns          \
     * TTT_BACKEND_DECLINED, having written nothing, where it does not apply. */                                \
    X(attention_bwd2,                                                                                            \
      (ttt_tensor *gq, ttt_tensor *gk, ttt_tensor *gv, ttt_tensor *gdout, ttt_tensor *rows,                      \
       const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *dout,                    \
       const ttt_tensor *lse, const ttt_tensor *delta, const ttt_tensor *uq, const ttt_tensor *uk,               \
       const ttt_tensor *uv, int causal, int64_t window, double scale),                                          \
      (gq, gk, gv, gdout, rows, q, k, v, dout, lse, delta, uq, uk, uv, causal, window, scale))                \
    /* Optional fused TTT-Linear scan (src/composed/ttt_scan.c states the math): the inner loop over N = T / bs  \
     * complete mini-batches of bs tokens, one (batch, head) at a time, the fast weight W [d, d] and bias [d]   \
     * kept on chip. q, k (already rotated), v, out [B, H, T, d]; eta [B, H, T]; tok [bs]; ln_w, ln_b [H, d];   \
     * w0 [H, d, d] or [B, H, d, d] (shared by the batch or not: its ndim says), b0 [H, 1, d] or [B, H, 1, d];  \
     * w_out [B, H, d, d], b_out [B, H, 1, d]: the state after the last mini-batch; w_states [B, H, N, d, d],   \
     * b_states [B, H, N, d]: the state at the start of each mini-batch, for the backward (both NULL: not      \
     * wanted). All dense, one float dtype. Returns TTT_BACKEND_DECLINED, having written nothing, for dtypes   \
     * or sizes the kernels do not handle (the op then composes the same math). */                             \
    X(ttt_linear_scan,                                                                                           \
      (ttt_tensor *out, ttt_tensor *w_out, ttt_tensor *b_out, ttt_tensor *w_states, ttt_tensor *b_states,       \
       const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *eta,                     \
       const ttt_tensor *tok, const ttt_tensor *ln_w, const ttt_tensor *ln_b, const ttt_tensor *w0,              \
       const ttt_tensor *b0, double eps),                                                                        \
      (out, w_out, b_out, w_states, b_states, q, k, v, eta, tok, ln_w, ln_b, w0, b0, eps))                       \
    /* Optional. Its first-order gradients by a reverse scan over the stored states: dq, dk, dv [B, H, T, d],   \
     * deta [B, H, T], and per (batch, head) partial sums dtok [B, H, bs], dln_w, dln_b [B, H, d], dw0         \
     * [B, H, d, d], db0 [B, H, 1, d] (the op sums them over what was broadcast), from dout (out's shape) and    \
     * dw_out, db_out (NULL: zero). Inputs as the forward took them, w_states / b_states from it. */            \
    X(ttt_linear_scan_bwd,                                                                                       \
      (ttt_tensor *dq, ttt_tensor *dk, ttt_tensor *dv, ttt_tensor *deta, ttt_tensor *dtok, ttt_tensor *dln_w,    \
       ttt_tensor *dln_b, ttt_tensor *dw0, ttt_tensor *db0, const ttt_tensor *dout, const ttt_tensor *dw_out,    \
       const ttt_tensor *db_out, const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v,                  \
       const ttt_tensor *eta, const ttt_tensor *tok, const ttt_tensor *ln_w, const ttt_tensor *ln_b,             \
       const ttt_tensor *w_states, const ttt_tensor *b_states, double eps),                                      \
      (dq, dk, dv, deta, dtok, dln_w, dln_b, dw0, db0, dout, dw_out, db_out, q, k, v, eta, tok, ln_w, ln_b,      \
       w_states, b_states, eps))                                                                                 \
    /* Optional fused TTT-MLP scan (src/composed/ttt_scan.c's MLP section states the math): the inner loop     \
     * over N = T / bs complete mini-batches, one (batch, head) at a time, the fast weights W1 [d, F], b1 [F],  \
     * W2 [F, d], b2 [d] kept on chip. q, k (rotated), v, out [B, H, T, d]; eta [B, H, T]; tok [bs]; ln_w,    \
     * ln_b [H, d]; w1 [H, d, F] or [B, H, d, F], b1 [H, 1, F] or [B, H, 1, F], w2 [H, F, d] or [B, H, F, d],  \
     * b2 [H, 1, d] or [B, H, 1, d] (shared by the batch or not: the ndim says); w1_out .. b2_out [B, H, ..]:  \
     * the weights after the last mini-batch; states [B, H, N, 2 d F + F + d]: W1, b1, W2, b2 at the start of \
     * each mini-batch, flattened one after another, for the backward (NULL: not wanted). All dense, one float \
     * dtype. Returns TTT_BACKEND_DECLINED, having written nothing, for what it does not handle (the op then  \
     * composes). */                                                                                           \
    X(ttt_mlp_scan,                                                                                              \
      (ttt_tensor *out, ttt_tensor *w1_out, ttt_tensor *b1_out, ttt_tensor *w2_out, ttt_tensor *b2_out,         \
       ttt_tensor *states, const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *eta, \
       const ttt_tensor *tok, const ttt_tensor *ln_w, const ttt_tensor *ln_b, const ttt_tensor *w1,              \
       const ttt_tensor *b1, const ttt_tensor *w2, const ttt_tensor *b2, double eps),                            \
      (out, w1_out, b1_out, w2_out, b2_out, states, q, k, v, eta, tok, ln_w, ln_b, w1, b1, w2, b2, eps))       \
    /* Optional. Its first-order gradients by a reverse scan over the stored states: dq, dk, dv [B, H, T, d],   \
     * deta [B, H, T], and per (batch, head) partial sums dtok [B, H, bs], dln_w, dln_b [B, H, d], dw1 [B, H, \
     * d, F], db1 [B, H, 1, F], dw2 [B, H, F, d], db2 [B, H, 1, d] (the op sums them over what was            \
     * broadcast), from dout (out's shape) and dw1_out .. db2_out (NULL: zero). Inputs as the forward took     \
     * them, states from it. */                                                                                \
    X(ttt_mlp_scan_bwd,                                                                                          \
      (ttt_tensor *dq, ttt_tensor *dk, ttt_tensor *dv, ttt_tensor *deta, ttt_tensor *dtok, ttt_tensor *dln_w,    \
       ttt_tensor *dln_b, ttt_tensor *dw1, ttt_tensor *db1, ttt_tensor *dw2, ttt_tensor *db2,                    \
       const ttt_tensor *dout, const ttt_tensor *dw1_out, const ttt_tensor *db1_out, const ttt_tensor *dw2_out,  \
       const ttt_tensor *db2_out, const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v,                 \
       const ttt_tensor *eta, const ttt_tensor *tok, const ttt_tensor *ln_w, const ttt_tensor *ln_b,             \
       const ttt_tensor *states, double eps),                                                                    \
      (dq, dk, dv, deta, dtok, dln_w, dln_b, dw1, db1, dw2, db2, dout, dw1_out, db1_out, dw2_out, db2_out, q, k, \
       v, eta, tok, ln_w, ln_b, states, eps))                                                                    \
    /* Optional fused chunkwise Gated DeltaNet core (src/layers/gated_deltanet.c has the math): per (batch,     \
     * head) S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T, o_t = q_t^T S_t, from S_0 = s0,   \
     * computed chunk by chunk (C = chunk tokens, the last chunk may be shorter) with the state on chip.         \
     * q, k [B, H, T, dk], v, o [B, H, T, dv], beta, g [B, H, T], s0 (NULL: zeros), s_out [B, H, dk, dv] (the    \
     * state after token T; NULL: not wanted), states [B, H, ceil(T / C), dk, dv] (the state before each chunk,  \
     * for the backward pass; NULL: not kept). All dense, one float dtype. Returns TTT_BACKEND_DECLINED, having \
     * written nothing, for dtypes or sizes it does not handle. */                                               \
    X(gdn_chunk_fwd,                                                                                             \
      (ttt_tensor *o, ttt_tensor *s_out, ttt_tensor *states, const ttt_tensor *q, const ttt_tensor *k,          \
       const ttt_tensor *v, const ttt_tensor *beta, const ttt_tensor *g, const ttt_tensor *s0, int64_t chunk),  \
      (o, s_out, states, q, k, v, beta, g, s0, chunk))                                                           \
    /* Optional. Its first-order gradients, chunks in reverse, each chunk recomputed from its stored state:     \
     * dq, dk, dv, dbeta, dg (the shapes of q, k, v, beta, g) and ds0 (s0's shape; NULL: not wanted) from       \
     * dout (o's shape) and ds_out (the final state's; either NULL: zero) and the forward's states. Takes what   \
     * gdn_chunk_fwd took (the same chunk). */                                                                   \
    X(gdn_chunk_bwd,                                                                                             \
      (ttt_tensor *dq, ttt_tensor *dk, ttt_tensor *dv, ttt_tensor *dbeta, ttt_tensor *dg, ttt_tensor *ds0,       \
       const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *beta, const ttt_tensor *g, \
       const ttt_tensor *states, const ttt_tensor *dout, const ttt_tensor *ds_out, int64_t chunk),              \
      (dq, dk, dv, dbeta, dg, ds0, q, k, v, beta, g, states, dout, ds_out, chunk))                              \
    /* Optional fused chunkwise decayed linear recurrence, Mamba 2's SSD (src/layers/mamba2.c) and, with g NULL, \
     * causal linear attention's core (src/layers/linear_attention.c passes v with its normaliser column): per  \
     * (batch, head) S_t = exp(g_t) S_{t-1} + k_t v_t^T, o_t = q_t^T S_t from S_0 = s0, chunk by chunk. Shapes,  \
     * states, s_out and the declining as gdn_chunk_fwd's; g [B, H, T] or NULL (no decay: g = 0). */            \
    X(ssd_chunk_fwd,                                                                                             \
      (ttt_tensor *o, ttt_tensor *s_out, ttt_tensor *states, const ttt_tensor *q, const ttt_tensor *k,          \
       const ttt_tensor *v, const ttt_tensor *g, const ttt_tensor *s0, int64_t chunk),                          \
      (o, s_out, states, q, k, v, g, s0, chunk))                                                                 \
    /* Optional. Its first-order gradients, chunks in reverse from the stored states: dq, dk, dv, dg (NULL      \
     * exactly when g is) and ds0 (NULL: not wanted) from dout and ds_out (either NULL: zero). */                \
    X(ssd_chunk_bwd,                                                                                             \
      (ttt_tensor *dq, ttt_tensor *dk, ttt_tensor *dv, ttt_tensor *dg, ttt_tensor *ds0, const ttt_tensor *q,    \
       const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *g, const ttt_tensor *states,                  \
       const ttt_tensor *dout, const ttt_tensor *ds_out, int64_t chunk),                                         \
      (dq, dk, dv, dg, ds0, q, k, v, g, states, dout, ds_out, chunk))                                            \
    /* Optional fused TTT-Linear decode step (src/composed/ttt_step.c states the math): one token per           \
     * (batch, head) at position r0 of its mini-batch of bs = numel(tok) tokens, in the primal form, updating  \
     * the state in place. q, k (rotated), v, out [B, H, 1, d]; eta [B, H, 1]; tok [bs]; ln_w, ln_b [H, d];    \
     * w, gw [B, H, d, d] and c, gc [B, H, 1, d]: the weights at the mini-batch's start and the eta-weighted    \
     * sums of the inner gradients of its tokens so far (zero at its start). When r0 = bs - 1 the mini-batch   \
     * is complete: w, c take the step and gw, gc are zeroed. All dense, one float dtype, no graph. Returns   \
     * TTT_BACKEND_DECLINED, having written nothing, for what it does not handle (decode then composes). */    \
    X(ttt_linear_step,                                                                                           \
      (ttt_tensor *out, ttt_tensor *w, ttt_tensor *c, ttt_tensor *gw, ttt_tensor *gc, const ttt_tensor *q,      \
       const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *eta, const ttt_tensor *tok,                   \
       const ttt_tensor *ln_w, const ttt_tensor *ln_b, int64_t r0, double eps),                                  \
      (out, w, c, gw, gc, q, k, v, eta, tok, ln_w, ln_b, r0, eps))                                            \
    /* Optional fused TTT-MLP decode step (src/composed/ttt_step.c): as ttt_linear_step for the two-layer     \
     * learner, w[4] = W1 [B, H, d, F], b1 [B, H, 1, F], W2 [B, H, F, d], b2 [B, H, 1, d] at the mini-batch's  \
     * start and g[4] the sums of their inner gradients so far (same shapes), both updated in place. */        \
    X(ttt_mlp_step,                                                                                              \
      (ttt_tensor *out, ttt_tensor *const *w, ttt_tensor *const *g, const ttt_tensor *q, const ttt_tensor *k,    \
       const ttt_tensor *v, const ttt_tensor *eta, const ttt_tensor *tok, const ttt_tensor *ln_w,                \
       const ttt_tensor *ln_b, int64_t r0, double eps),                                                          \
      (out, w, g, q, k, v, eta, tok, ln_w, ln_b, r0, eps))                                                       \
    /* Optional fused MTTT-MLP inner step (src/composed/mttt_step.c states the math): per (batch, head) pair,    \
     * one gradient step W' = W - eta grad_W l of the reconstruction loss l = 1/(2m) sum_i || dec_i - x_i ||^2,  \
     * dec = LN(f(k; W) gh^T) lng + lnb (or without the LN), f(u) = gelu(u w1 + b1) w2 + b2 (tanh gelu). w1 [H,  \
     * d, F] or [B, H, d, F], b1 [H, 1, F] or [B, H, 1, F], w2 [H, F, d] or [B, H, F, d], b2 [H, 1, d] or [B,    \
     * H, 1, d] (shared by the batch or not: the ndim says); k [B, H, m, d]; xt [B, 1, m, D] (shared by the      \
     * heads) or [B, H, m, D]; gh [H, D, d]; lng, lnb [H, 1, D] or both NULL (no LN). k and xt may have any      \
     * non-negative strides but a unit last one; the rest dense, one float dtype. Writes w1_out .. b2_out ([B,   \
     * H, ..]) and loss [B, H] (each pair's l before the step); w1_out .. b2_out all NULL: the loss only, no     \
     * step. Returns TTT_BACKEND_DECLINED, having written nothing, for what it does not handle. */               \
    X(mttt_mlp_step,                                                                                             \
      (ttt_tensor *w1_out, ttt_tensor *b1_out, ttt_tensor *w2_out, ttt_tensor *b2_out, ttt_tensor *loss,         \
       const ttt_tensor *w1, const ttt_tensor *b1, const ttt_tensor *w2, const ttt_tensor *b2,                   \
       const ttt_tensor *k, const ttt_tensor *xt, const ttt_tensor *gh, const ttt_tensor *lng,                   \
       const ttt_tensor *lnb, double eta, double eps),                                                           \
      (w1_out, b1_out, w2_out, b2_out, loss, w1, b1, w2, b2, k, xt, gh, lng, lnb, eta, eps))                    \
    /* Optional. Its first-order gradients (second order in l: the VJP of grad_W l), per pair: dw1 [B, H, d, F], \
     * db1 [B, H, 1, F], dw2 [B, H, F, d], db2 [B, H, 1, d], dk [B, H, m, d], dxt [B, H, m, D], dgh           \
     * [B, H, D, d], dlng, dlnb [B, H, 1, D] (NULL without the LN; the op sums what was broadcast) from        \
     * dw1_out .. db2_out ([B, H, ..]) and dloss [B, H] (any of them NULL: zero). Inputs as the forward took   \
     * them; the forward's intermediates are recomputed. */                                                     \
    X(mttt_mlp_step_bwd,                                                                                         \
      (ttt_tensor *dw1, ttt_tensor *db1, ttt_tensor *dw2, ttt_tensor *db2, ttt_tensor *dk, ttt_tensor *dxt,      \
       ttt_tensor *dgh, ttt_tensor *dlng, ttt_tensor *dlnb, const ttt_tensor *dw1_out, const ttt_tensor *db1_out, \
       const ttt_tensor *dw2_out, const ttt_tensor *db2_out, const ttt_tensor *dloss, const ttt_tensor *w1,       \
       const ttt_tensor *b1, const ttt_tensor *w2, const ttt_tensor *b2, const ttt_tensor *k,                     \
       const ttt_tensor *xt, const ttt_tensor *gh, const ttt_tensor *lng, const ttt_tensor *lnb, double eta,      \
       double eps),                                                                                              \
      (dw1, db1, dw2, db2, dk, dxt, dgh, dlng, dlnb, dw1_out, db1_out, dw2_out, db2_out, dloss, w1, b1, w2, b2, \
       k, xt, gh, lng, lnb, eta, eps))                                                                          \
    /* Optional fused read-out of the MTTT-MLP learner: out = gelu(q w1 + b1) w2 + b2 per (batch, head) pair,    \
     * q, out [B, H, n, d] (q: any non-negative strides, the last 1); the weights as mttt_mlp_step takes them  \
     * ([H, ..] shared by the batch, or [B, H, ..]). The rest dense, one float dtype. Returns                  \
     * TTT_BACKEND_DECLINED, having written nothing, for what it does not handle. */                            \
    X(mttt_mlp_apply,                                                                                            \
      (ttt_tensor *out, const ttt_tensor *w1, const ttt_tensor *b1, const ttt_tensor *w2, const ttt_tensor *b2,  \
       const ttt_tensor *q),                                                                                     \
      (out, w1, b1, w2, b2, q))                                                                                  \
    /* Optional. Its first-order gradients per pair: dq [B, H, n, d], dw1 [B, H, d, F], db1 [B, H, 1, F], dw2    \
     * [B, H, F, d], db2 [B, H, 1, d] (the op sums what was broadcast) from dout (out's shape). */              \
    X(mttt_mlp_apply_bwd,                                                                                        \
      (ttt_tensor *dq, ttt_tensor *dw1, ttt_tensor *db1, ttt_tensor *dw2, ttt_tensor *db2,                       \
       const ttt_tensor *dout, const ttt_tensor *w1, const ttt_tensor *b1, const ttt_tensor *w2,                 \
       const ttt_tensor *b2, const ttt_tensor *q),                                                               \
      (dq, dw1, db1, dw2, db2, dout, w1, b1, w2, b2, q))

/* TTT_K_copy, TTT_K_fill, ...: the kernel entries by number (profile rows, coverage). */
typedef enum {
#define TTT__KERNEL_ENUM(name, params, args) TTT_K_##name,
    TTT_KERNEL_LIST(TTT__KERNEL_ENUM)
#undef TTT__KERNEL_ENUM
    TTT_K_COUNT
} ttt_kernel;

typedef struct ttt_backend {
    const char *name;
    ttt_device device;

    /* Process-wide queries, no instance. Optional: devices of this kind and
     * their names (NULL: one device, named by name). */
    int (*device_count)(void);
    int (*device_name)(int index, char *buf, size_t len);

    /* Open an instance on cfg->device_index; NULL with a message in
     * ttt_backend_error() when that device cannot be used. close frees
     * everything the instance holds (its memory pool included). */
    ttt_backend_state *(*open)(const ttt_backend_config *cfg);
    void (*close)(ttt_backend_state *self);

    /* memory: raw device allocations (arena blocks, persistent tensors) */
    void *(*alloc)(ttt_backend_state *self, size_t bytes);
    void (*free)(ttt_backend_state *self, void *ptr);
    int (*upload)(ttt_backend_state *self, void *dst, const void *host, size_t bytes);
    int (*download)(ttt_backend_state *self, void *host, const void *src, size_t bytes);
    int (*synchronize)(ttt_backend_state *self);
    /* Optional: device bytes reserved from the driver and handed out now, and the
     * number of driver allocations so far (NULL on the CPU). */
    void (*memory_stats)(ttt_backend_state *self, size_t *reserved, size_t *in_use, uint64_t *driver_allocs);
    /* Optional dense linear algebra beside the kernels (never recorded in a graph; may allocate its own
     * workspace and synchronize): the thin SVD a = u diag(s) vt of a wide or square a [m, n], m <= n, f64,
     * contiguous: u [m, m], s [m] (descending), vt [m, n], all f64 and dense. NULL: unsupported. */
    int (*svd)(ttt_backend_state *self, const ttt_tensor *a, ttt_tensor *u, ttt_tensor *s, ttt_tensor *vt);

    /* The kernels (see TTT_KERNEL_LIST). */
#define TTT__KERNEL_FIELD(name, params, args) int (*name)(ttt_backend_state *self, TTT__UNPAREN params);
    TTT_KERNEL_LIST(TTT__KERNEL_FIELD)
#undef TTT__KERNEL_FIELD

    /* Optional graph recording (ttt/graph.h; NULL where unsupported, as on the
     * CPU). Between graph_begin and graph_end the kernels above are recorded,
     * not run, and must not allocate, free or synchronize; checks that read a
     * device flag after a launch (bad ids) are deferred to graph_replay, which
     * runs the recorded work, waits for it and reports them. graph_end always
     * ends the recording; *graph is NULL when it failed. A graph belongs to the
     * instance that recorded it. */
    int (*graph_begin)(ttt_backend_state *self);
    int (*graph_end)(ttt_backend_state *self, void **graph);
    int (*graph_replay)(ttt_backend_state *self, void *graph);
    void (*graph_free)(ttt_backend_state *self, void *graph);
} ttt_backend;

/* Names of the kernel entries and of the elementwise op codes ("?" when out of range). */
const char *ttt_kernel_name(ttt_kernel k);
const char *ttt_unary_op_name(ttt_unary_op op);
const char *ttt_binary_op_name(ttt_binary_op op);

/* attention_fwd's (and the other optional fused entries') answer for arguments left to the composed path. */
enum { TTT_BACKEND_DECLINED = 1 };

/* The backends compiled into this build. */
const ttt_backend *ttt_backend_cpu(void);
const ttt_backend *ttt_backend_cuda(void); /* only in builds with TTT_HAVE_CUDA; NULL without a device */
const ttt_backend *ttt_backend_for(ttt_device device); /* NULL if not compiled in */

/* Kernels report their own failures here (thread-local message, copied into
 * the context by the op layer). */
void ttt_backend_error(const char *fmt, ...);
const char *ttt_backend_last_error(void);

/* The distance between consecutive rows of t's last axis when its rows lie evenly spaced with a unit last
 * stride (dense tensors, and column slices of them such as the LM head's padded logits): the entries that
 * take such rows (cross_entropy, cross_entropy_bwd's logits) read row r at r * stride. -1 otherwise. */
int64_t ttt_row_stride(const ttt_tensor *t);

#ifdef __cplusplus
}
#endif
#endif
