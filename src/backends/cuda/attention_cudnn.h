/* The optional cuDNN path of the fused bf16 attention (attention_cudnn.cu).
 *
 * attention.cu asks it first for bf16 shapes its own kernels take (head size
 * 64 or 128, dv = d), so our kernels can always take over. It takes those
 * without a sliding window; causal with Tq < Tk (our diagonal ends at the
 * bottom right, cuDNN's index generators count from the top left, so the mask
 * shifts the row index) from cuDNN 9.6 on and never for single-query decode
 * steps; and leaves out what cudnn-frontend steers around (9.10.0 / 9.10.1;
 * up to 9.15, a backward whose Tk is not a multiple of 128). Anything else, or any failure
 * of cuDNN, answers TTT_BACKEND_DECLINED with nothing written, and our
 * kernels run. A forward and a backward may come from different paths: both
 * keep lse in the same convention.
 *
 * Modes (TTT_CUDNN): det, the default (forward, and the backward in the form cudnn-frontend asks for when it
 * wants a deterministic one on Hopper: the same bits every run, measured on an H100); fwd (the forward only:
 * cuDNN's forward has no atomics, so with our backward after it a run keeps its bits); 1 (forward and the default
 * backward, which adds into dQ with atomics: not bit-repeatable); 0 off. docs/cudnn.md says what was measured.
 * libcudnn
 * is opened at run time (dlopen), so a build with cuDNN's headers runs where
 * cuDNN is absent. The test-facing part below is plain C. */
#ifndef TTT_ATTENTION_CUDNN_H
#define TTT_ATTENTION_CUDNN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What the path is asked to run: nothing; forward and backward; the forward only; forward and the backward in its
 * deterministic form (dQ written by its own product from dS kept in a workspace, no atomics). */
typedef enum { TTT_CUDNN_OFF = 0, TTT_CUDNN_ALL = 1, TTT_CUDNN_FWD = 2, TTT_CUDNN_DET = 3 } ttt_cudnn_mode;

/* What the cuDNN path is and has done in this process (for tests and benchmarks). */
typedef struct {
    int compiled;         /* built with cuDNN's headers */
    int enabled;          /* a ttt_cudnn_mode: TTT_CUDNN (1, fwd or det), or ttt__cudnn_set_enabled */
    int loaded;           /* libcudnn was opened and is usable (only tried once enabled and asked) */
    long version;         /* cudnnGetVersion(), e.g. 91000; 0 when not loaded */
    int64_t fwd_runs, bwd_runs; /* calls served by cuDNN */
    int64_t bwd_split_runs;     /* of bwd_runs, those run in groups of heads (the workspace cap) */
    int64_t bwd_block_runs;     /* of those, run per head in blocks of queries (one head's share over the cap) */
    int64_t bwd_ws;             /* the workspace the last backward used, bytes (one execution's where cut) */
    int64_t declined;     /* calls it was asked and left to our kernels (shape, failure) */
    int64_t plans_built, plans_failed;
    char why[640];        /* the last reason it did not load or declined a shape, "" if none */
    char lib[512];        /* the library it opened */
} ttt_cudnn_info;

void ttt__cudnn_info(ttt_cudnn_info *out);
/* a ttt_cudnn_mode (TTT_CUDNN_ALL, TTT_CUDNN_FWD, TTT_CUDNN_DET, TTT_CUDNN_OFF), or -1: back to TTT_CUDNN. Tests toggle it to
 * compare with our kernels. */
void ttt__cudnn_set_enabled(int on);
/* The most workspace a cuDNN plan may take, in bytes, in place of TTT_CUDNN_WS_MAX (tests: a backward over it
 * runs in groups of heads); 0: back to TTT_CUDNN_WS_MAX or its default. */
void ttt__cudnn_set_ws_max(int64_t bytes);
/* 1: a backward over the cap is cut (groups of heads, blocks of queries), as TTT_CUDNN_CUT=1; 0: left to our kernels
 * (the default); -1: back to TTT_CUDNN_CUT. */
void ttt__cudnn_set_cut(int on);
/* Open libcudnn now (if enabled and not yet tried); 1 when usable. */
int ttt__cudnn_load(void);
/* Whether the loaded cuDNN is asked for this call at all (our rules of what it may take: no sliding window, no
 * decode step, the cuDNN releases with known bugs left out); it may still refuse to build a plan. */
int ttt__cudnn_takes(int backward, int64_t tq, int64_t tk, int causal, int64_t window);

#ifdef __cplusplus
}
#endif

#ifdef __CUDACC__
struct CuDev;
/* TTT_OK: cuDNN computed out (and lse, when not NULL) / dq, dk, dv from delta
 * (rowsum(dout * out), which the caller wrote first with our kernel). TTT_BACKEND_DECLINED:
 * nothing written, use our kernels. Never TTT_ERR. Arguments as
 * attention_fwd / attention_bwd in backend.h, already known to be bf16 with
 * d = dv in {64, 128}. */
int ttt__cudnn_attn_fwd(CuDev *D, ttt_tensor *out, ttt_tensor *lse, const ttt_tensor *q, const ttt_tensor *k,
                        const ttt_tensor *v, int causal, int64_t window, double scale);
int ttt__cudnn_attn_bwd(CuDev *D, ttt_tensor *dq, ttt_tensor *dk, ttt_tensor *dv, ttt_tensor *delta,
                        const ttt_tensor *dout, const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v,
                        const ttt_tensor *out, const ttt_tensor *lse, int causal, int64_t window, double scale);
/* Whether ttt__cudnn_attn_bwd may take this call (on for the backward, the library loaded, the shape within the
 * policy):
 * the caller then writes delta = rowsum(dout * out) with our kernel first, which cuDNN's backward reads. */
bool ttt__cudnn_attn_wanted(const ttt_tensor *q, const ttt_tensor *k, int causal, int64_t window);
/* The instance's plans and handle (cu_close). */
void ttt__cudnn_release(CuDev *D);
#endif

#endif
