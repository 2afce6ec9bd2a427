/* ttt/tensor.h: contexts, tensors and their memory lifetimes.
 *
 * LIFETIME RULES (read these first)
 *   A ttt_ctx owns all memory. There are exactly two lifetimes:
 *
 *   1. Persistent: tensors made with ttt_param() / ttt_persistent() (parameters,
 *      optimizer state, anything that must survive a training step). They live
 *      until ttt_persistent_free() or ttt_ctx_free().
 *
 *   2. Step temporaries: every other tensor -- op outputs, views, gradients,
 *      autodiff graph nodes -- is bump-allocated from the context's arenas and
 *      dies, all at once, at the next ttt_step_reset(). The arenas keep their
 *      memory across resets (after the first step, coalesced into one block),
 *      so steady-state steps perform no malloc per op.
 *      ttt_mark()/ttt_release() free everything allocated after the mark, for
 *      scoped work inside a step (rematerialization uses this).
 *
 *   A pointer to a temporary must never be kept across ttt_step_reset() or
 *   past a ttt_release() of an earlier mark. Views share the data of their base
 *   tensor and must not outlive it.
 *
 * ERRORS
 *   Functions returning a tensor return NULL on error and record a message
 *   (naming the op and the shapes) readable with ttt_error(ctx). Every op
 *   returns NULL without touching the message when an input is NULL, so a chain
 *   of ops can be checked once at the end. Functions returning int return
 *   TTT_OK (0) or TTT_ERR (-1). The library never exits or aborts on bad input.
 */
#ifndef TTT_TENSOR_H
#define TTT_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { TTT_OK = 0, TTT_ERR = -1 };
enum { TTT_MAX_DIMS = 8 };

typedef enum { TTT_F32 = 0, TTT_F64 = 1, TTT_BF16 = 2, TTT_I32 = 3 } ttt_dtype;
typedef enum { TTT_CPU = 0, TTT_CUDA = 1 } ttt_device;

typedef struct ttt_ctx ttt_ctx;
typedef struct ttt_node ttt_node;

/* A strided view of typed memory. Fields are public for reading; create and
 * change tensors only through the API. */
typedef struct ttt_tensor {
    ttt_dtype dtype;
    ttt_device device;
    int ndim;                       /* 0 for a scalar */
    int64_t shape[TTT_MAX_DIMS];
    int64_t stride[TTT_MAX_DIMS];   /* in elements; 0 for broadcast (expanded) axes */
    void *data;                     /* address of element [0,...,0] */
    ttt_node *node;                 /* autodiff: op that produced it, NULL for leaves */
    int out_index;                  /* which output of node */
    int requires_grad;              /* leaf flag, or "has a graph" for op outputs */
    int persistent;                 /* 1: lives until freed; 0: step temporary */
    struct ttt_tensor *grad;        /* persistent leaves: gradient that ttt_backward accumulates */
    const char *name;               /* optional, for messages */
} ttt_tensor;

typedef struct {
    ttt_device device;      /* TTT_CPU (default) */
    size_t arena_bytes;     /* first data arena block; 0 = 64 MiB */
    int threads;            /* CPU: most threads an op of this context uses; 0 = fit the machine:
                               OMP_NUM_THREADS, else the processors, less the cores other processes
                               keep busy. Small ops use fewer (none below ~32K elements). Idle
                               threads wait passively only if OMP_WAIT_POLICY=passive is in the
                               environment when the program starts (the ttt program sees to it). */
    uint64_t seed;          /* RNG seed for ttt_randn/ttt_rand */
    int tf32;               /* CUDA: f32 matmuls of this context on the TF32 tensor cores (inputs rounded
                               to a 10-bit mantissa, f32 accumulation). Ignored on the CPU. */
    int device_index;       /* which device of the kind: the GPU for TTT_CUDA (0 = the first); 0 on the CPU.
                               Each context has its own backend instance (stream, pool, ...), so
                               contexts on different devices work side by side. */
} ttt_ctx_config;

/* Context ------------------------------------------------------------------ */
ttt_ctx *ttt_ctx_new(const ttt_ctx_config *cfg); /* cfg may be NULL; NULL on failure, why in ttt_runtime_error() */
void ttt_ctx_free(ttt_ctx *ctx);
const char *ttt_error(const ttt_ctx *ctx);       /* "" when no error recorded */
void ttt_clear_error(ttt_ctx *ctx);
ttt_device ttt_ctx_device(const ttt_ctx *ctx);

/* Step lifetime */
void ttt_step_reset(ttt_ctx *ctx);
typedef struct { size_t meta_block, meta_used, data_block, data_used; } ttt_mark_t;
ttt_mark_t ttt_mark(ttt_ctx *ctx);
void ttt_release(ttt_ctx *ctx, ttt_mark_t mark);
size_t ttt_arena_bytes_used(const ttt_ctx *ctx);     /* data bytes in use now */
size_t ttt_arena_bytes_reserved(const ttt_ctx *ctx); /* data bytes held by arenas */
uint64_t ttt_arena_block_allocs(const ttt_ctx *ctx); /* arena blocks allocated so far (malloc count) */

/* Creation (temporaries unless stated) ---------------------------------------- */
ttt_tensor *ttt_new(ttt_ctx *ctx, ttt_dtype dt, int ndim, const int64_t *shape); /* uninitialised */
ttt_tensor *ttt_zeros(ttt_ctx *ctx, ttt_dtype dt, int ndim, const int64_t *shape);
ttt_tensor *ttt_full(ttt_ctx *ctx, ttt_dtype dt, int ndim, const int64_t *shape, double value);
ttt_tensor *ttt_scalar(ttt_ctx *ctx, ttt_dtype dt, double value);               /* 0-d */
ttt_tensor *ttt_from_host(ttt_ctx *ctx, ttt_dtype dt, int ndim, const int64_t *shape,
                          const void *host);                    /* copies ndim-shaped host data of dtype dt */
ttt_tensor *ttt_randn(ttt_ctx *ctx, ttt_dtype dt, int ndim, const int64_t *shape, double stddev);
ttt_tensor *ttt_rand(ttt_ctx *ctx, ttt_dtype dt, int ndim, const int64_t *shape, double lo, double hi);
ttt_tensor *ttt_zeros_like(ttt_ctx *ctx, const ttt_tensor *t);

/* Persistent tensors: parameters (requires_grad = 1) and state (requires_grad = 0). */
ttt_tensor *ttt_param(ttt_ctx *ctx, ttt_dtype dt, int ndim, const int64_t *shape, const char *name);
ttt_tensor *ttt_persistent(ttt_ctx *ctx, ttt_dtype dt, int ndim, const int64_t *shape, const char *name);
void ttt_persistent_free(ttt_ctx *ctx, ttt_tensor *t);

/* Data movement (no autodiff) */
int ttt_copy_to_host(ttt_ctx *ctx, const ttt_tensor *t, void *host, ttt_dtype host_dt); /* any layout -> dense host */
int ttt_assign(ttt_ctx *ctx, ttt_tensor *dst, const ttt_tensor *src); /* dst <- src (same shape, any dtypes) */
int ttt_fill(ttt_ctx *ctx, ttt_tensor *dst, double value);
double ttt_item(ttt_ctx *ctx, const ttt_tensor *t); /* value of a one-element tensor; NaN on error */
void ttt_manual_seed(ttt_ctx *ctx, uint64_t seed);

/* Queries */
int64_t ttt_numel(const ttt_tensor *t);
size_t ttt_dtype_size(ttt_dtype dt);
const char *ttt_dtype_name(ttt_dtype dt);
int ttt_is_contiguous(const ttt_tensor *t);
int ttt_same_shape(const ttt_tensor *a, const ttt_tensor *b);
/* writes e.g. "[2,3,4]" into buf; returns buf */
char *ttt_shape_str(const ttt_tensor *t, char *buf, size_t n);

/* bf16 conversion (round to nearest even) */
uint16_t ttt_f32_to_bf16(float x);
float ttt_bf16_to_f32(uint16_t x);

/* Shape literal helper: ttt_zeros(ctx, TTT_F32, TTT_DIMS(2, 3)) */
#define TTT_DIMS(...) \
    (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (const int64_t[]){__VA_ARGS__}

#ifdef __cplusplus
}
#endif
#endif
