/* cuDNN's fused flash attention behind our bf16 attention entries (see
 * attention_cudnn.h for when it is asked; docs/cudnn.md for how to build,
 * enable and check it).
 *
 * How: cuDNN's backend graph API, from C-style calls. We describe scaled
 * dot-product attention as the chain of matmul, pointwise and reduction
 * operations that cuDNN's fused attention engines recognise (the chain
 * cudnn-frontend's SDPA nodes emit), let cuDNN's heuristics (mode A, then
 * the fallback list) pick an engine, and keep the finalized execution plan
 * per shape, so a training step builds nothing. The library is opened with
 * dlopen and every entry point is looked up by name: the build needs only
 * the headers, and where no libcudnn loads we decline and our kernels run.
 *
 * Conventions. Our tensors are dense [..., T, d]; cuDNN sees them as
 * [b, h, T, d] (h the axis before T, b the rest). The forward's stats output
 * is max + log(sum exp) of the scaled, masked scores in natural log: exactly
 * our lse, so either backward (cuDNN's or ours, or the double backward's)
 * reads either forward's lse. The backward's rowsum(dO * O) is written into
 * our delta buffer, which our double backward also reads.
 *
 * Bit-reproducible in the fwd and det modes; not in mode 1, whose backward
 * accumulates dQ with atomic adds in an f32 buffer (in its workspace). */
#include <dlfcn.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cuda_internal.h"
#include "attention_cudnn.h"
#include "../attention_cut.h"

#ifndef TTT_CUDNN_DEFAULT
/* det: cuDNN's forward and its deterministic backward where it takes the call (our kernels elsewhere). On an H100
 * (2026-12-07, docs/cudnn.md): the same bits on every run, 1.29-1.96x SDPA flash forward + backward to 16K, the
 * 125M LM 1.16x / 1.05x torch.compile at T 1K / 8K with byte-identical checkpoints across runs. TTT_CUDNN=0 turns
 * it off. */
#define TTT_CUDNN_DEFAULT TTT_CUDNN_DET
#endif

static ttt_cudnn_info g_info;
static int g_enabled = -2; /* -2: not read yet; then a ttt_cudnn_mode */

static bool env_on(const char *name, int dflt) {
    const char *e = getenv(name);
    if (!e || !*e) return dflt != 0;
    return strcmp(e, "0") != 0;
}
/* TTT_CUDNN: unset TTT_CUDNN_DEFAULT, "0" (or "off") off, "1" (or "all") forward and backward, "fwd" the forward
 * only (our deterministic backward runs after it), "det" the forward and the backward without dQ's atomics.
 * Anything else leaves cuDNN off, with a warning: a mistyped "fwd" must not give the mode that is not
 * bit-repeatable. */
static int mode(void) {
    if (g_enabled == -2) {
        const char *e = getenv("TTT_CUDNN");
        if (!e || !*e) g_enabled = TTT_CUDNN_DEFAULT;
        else if (!strcmp(e, "0") || !strcmp(e, "off")) g_enabled = TTT_CUDNN_OFF;
        else if (!strcmp(e, "1") || !strcmp(e, "all")) g_enabled = TTT_CUDNN_ALL;
        else if (!strcmp(e, "fwd")) g_enabled = TTT_CUDNN_FWD;
        else if (!strcmp(e, "det")) g_enabled = TTT_CUDNN_DET;
        else {
            fprintf(stderr, "ttt: TTT_CUDNN=%s is not one of 0, 1, fwd, det; cuDNN's attention stays off\n", e);
            g_enabled = TTT_CUDNN_OFF;
        }
    }
    return g_enabled;
}
__attribute__((unused)) static bool enabled(void) { return mode() != TTT_CUDNN_OFF; }
__attribute__((unused)) static bool bwd_enabled(void) { return mode() == TTT_CUDNN_ALL || mode() == TTT_CUDNN_DET; }
__attribute__((unused)) static bool verbose(void) {
    static int v = -1;
    if (v < 0) v = env_on("TTT_CUDNN_VERBOSE", 0) ? 1 : 0;
    return v == 1;
}
/* The last reason for not using cuDNN: kept for ttt__cudnn_info, printed with TTT_CUDNN_VERBOSE=1. Callers
 * make sure each reason is reported once (the library is opened once, a shape's plan is built once). */
__attribute__((unused)) static void note(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_info.why, sizeof g_info.why, fmt, ap);
    va_end(ap);
    if (verbose()) fprintf(stderr, "ttt: cudnn: %s\n", g_info.why);
}

extern "C" void ttt__cudnn_set_enabled(int on) {
    g_enabled = on < 0 ? -2 : on == TTT_CUDNN_FWD || on == TTT_CUDNN_DET ? on : on ? TTT_CUDNN_ALL : TTT_CUDNN_OFF;
}

#ifndef TTT_HAVE_CUDNN_HEADERS

/* Built without cuDNN's headers (CMake found no cudnn_graph.h): the path declines every call. */
extern "C" void ttt__cudnn_info(ttt_cudnn_info *out) {
    *out = g_info;
    out->compiled = 0;
    out->enabled = mode();
    if (!out->why[0]) snprintf(out->why, sizeof out->why, "built without cuDNN's headers (CMake found no cudnn_graph.h)");
}
extern "C" int ttt__cudnn_load(void) { return 0; }
extern "C" void ttt__cudnn_set_ws_max(int64_t) {}
extern "C" void ttt__cudnn_set_cut(int) {}
extern "C" int ttt__cudnn_takes(int, int64_t, int64_t, int, int64_t) { return 0; }
int ttt__cudnn_attn_fwd(CuDev *, ttt_tensor *, ttt_tensor *, const ttt_tensor *, const ttt_tensor *, const ttt_tensor *, int,
                        int64_t, double) {
    return TTT_BACKEND_DECLINED;
}
int ttt__cudnn_attn_bwd(CuDev *, ttt_tensor *, ttt_tensor *, ttt_tensor *, ttt_tensor *, const ttt_tensor *, const ttt_tensor *,
                        const ttt_tensor *, const ttt_tensor *, const ttt_tensor *, const ttt_tensor *, int, int64_t, double) {
    return TTT_BACKEND_DECLINED;
}
void ttt__cudnn_release(CuDev *) {}
bool ttt__cudnn_attn_wanted(const ttt_tensor *, const ttt_tensor *, int, int64_t) { return false; }

#else /* TTT_HAVE_CUDNN_HEADERS */

#include <cudnn_graph.h>

/* ---- the library, opened once ------------------------------------------------------------------------------ */

struct Api {
    void *so;
    decltype(&cudnnGetVersion) version;
    decltype(&cudnnGetErrorString) errstr;
    decltype(&cudnnGetLastErrorString) lasterr; /* may be NULL */
    decltype(&cudnnCreate) create;
    decltype(&cudnnDestroy) destroy;
    decltype(&cudnnSetStream) set_stream;
    decltype(&cudnnBackendCreateDescriptor) bcreate;
    decltype(&cudnnBackendDestroyDescriptor) bdestroy;
    decltype(&cudnnBackendSetAttribute) bset;
    decltype(&cudnnBackendGetAttribute) bget;
    decltype(&cudnnBackendFinalize) bfinalize;
    decltype(&cudnnBackendExecute) bexecute;
    long ver;
};

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* libcudnn.so.9 is a shim that opens its sub-libraries by soname; where they are not on the loader's path
 * (a pip wheel's nvidia/cudnn/lib), opening them first by full path makes those opens find them loaded. */
static void preload_siblings(const char *dir) {
    static const char *subs[] = {"libcudnn_graph.so.9", "libcudnn_engines_precompiled.so.9",
                                 "libcudnn_engines_runtime_compiled.so.9", "libcudnn_heuristic.so.9",
                                 "libcudnn_ops.so.9", "libcudnn_cnn.so.9", "libcudnn_adv.so.9"};
    char path[512];
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, subs[i]);
        dlopen(path, RTLD_LAZY | RTLD_GLOBAL); /* best effort: a missing one is reported by the shim when needed */
    }
}

static void *open_in_dir(const char *dir, char *opened, size_t n) {
    static const char *mains[] = {"libcudnn.so.9", "libcudnn_graph.so.9"};
    char path[512];
    preload_siblings(dir);
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, mains[i]);
        void *so = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (so) {
            snprintf(opened, n, "%s", path);
            return so;
        }
    }
    return NULL;
}

static bool load_api(Api *A) {
    memset(A, 0, sizeof *A);
    char opened[512] = "", tried[600] = "";
    const char *env = getenv("TTT_CUDNN_LIB"); /* a libcudnn file or the folder that holds it */
    if (env && *env) {
        if (is_dir(env)) A->so = open_in_dir(env, opened, sizeof opened);
        else if ((A->so = dlopen(env, RTLD_NOW | RTLD_LOCAL))) snprintf(opened, sizeof opened, "%s", env);
        if (!A->so) snprintf(tried, sizeof tried, "TTT_CUDNN_LIB=%s: %s; ", env, dlerror());
    }
    static const char *names[] = {"libcudnn.so.9", "libcudnn_graph.so.9"};
    for (int i = 0; i < 2 && !A->so; i++)
        if ((A->so = dlopen(names[i], RTLD_NOW | RTLD_LOCAL))) snprintf(opened, sizeof opened, "%s", names[i]);
#ifdef TTT_CUDNN_LIBDIR_HINT /* the folder CMake found a libcudnn in, if any */
    if (!A->so && is_dir(TTT_CUDNN_LIBDIR_HINT)) A->so = open_in_dir(TTT_CUDNN_LIBDIR_HINT, opened, sizeof opened);
#endif
    if (!A->so) {
        const char *e = dlerror();
        note("no libcudnn.so.9 could be opened (%s%s); set TTT_CUDNN_LIB to its folder; using our kernels", tried,
             e ? e : "not found");
        return false;
    }
#define SYM(field, name)                                                   \
    if (!(*(void **)&A->field = dlsym(A->so, name))) {                     \
        note("%s has no %s; using our kernels", opened, name);             \
        return false;                                                      \
    }
    SYM(version, "cudnnGetVersion")
    SYM(errstr, "cudnnGetErrorString")
    SYM(create, "cudnnCreate")
    SYM(destroy, "cudnnDestroy")
    SYM(set_stream, "cudnnSetStream")
    SYM(bcreate, "cudnnBackendCreateDescriptor")
    SYM(bdestroy, "cudnnBackendDestroyDescriptor")
    SYM(bset, "cudnnBackendSetAttribute")
    SYM(bget, "cudnnBackendGetAttribute")
    SYM(bfinalize, "cudnnBackendFinalize")
    SYM(bexecute, "cudnnBackendExecute")
#undef SYM
    *(void **)&A->lasterr = dlsym(A->so, "cudnnGetLastErrorString");
    A->ver = (long)A->version();
    /* Built against 9.x headers: the attribute values we pass mean the same from 9.0 on. */
    if (A->ver < 90000) {
        note("%s is cuDNN %ld; the cuDNN path needs 9.0 or later; using our kernels", opened, A->ver);
        return false;
    }
    snprintf(g_info.lib, sizeof g_info.lib, "%s", opened);
    g_info.version = A->ver;
    if (verbose()) fprintf(stderr, "ttt: cudnn: opened %s (cuDNN %ld)\n", opened, A->ver);
    return true;
}

/* The library, or NULL (reason noted once). Thread-safe: a function-local static. */
static const Api *api(void) {
    static Api A;
    static const bool ok = load_api(&A);
    g_info.loaded = ok;
    return ok ? &A : NULL;
}

extern "C" int ttt__cudnn_load(void) { return enabled() && api() != NULL; }

extern "C" void ttt__cudnn_info(ttt_cudnn_info *out) {
    *out = g_info;
    out->compiled = 1;
    out->enabled = mode();
}

/* ---- graphs ------------------------------------------------------------------------------------------------ */

/* The tensors that the caller binds to memory (the rest are virtual, numbered from V0). */
enum : int64_t {
    U_Q = 1, U_K, U_V, U_O, U_STATS, U_SCALE, U_NEG, U_DO, U_DQ, U_DK, U_DV, U_DELTA, U_DQACC, U_SKV, U_SQ, V0 = 100
};

enum { MAX_DESC = 192, MAX_OPS = 48, MAX_CFG = 16 };

/* One built graph: every descriptor it made (kept alive as long as its plan; destroyed together), the plan
 * and its workspace. */
struct Graph {
    const Api *A;
    cudnnHandle_t h;
    cudnnBackendDescriptor_t desc[MAX_DESC];
    int ndesc;
    cudnnBackendDescriptor_t ops[MAX_OPS];
    int nops;
    cudnnBackendDescriptor_t plan;
    int64_t ws, engine; /* engine: cuDNN's global index of the engine the plan runs (for the verbose log) */
    int64_t next_uid;
    bool failed;
    char err[256];
};

static void graph_fail(Graph *g, const char *what, cudnnStatus_t st) {
    if (g->failed) return;
    g->failed = true;
    char last[160] = "";
    if (g->A->lasterr) g->A->lasterr(last, sizeof last);
    snprintf(g->err, sizeof g->err, "%s: %s%s%s", what, g->A->errstr(st), last[0] ? ": " : "", last);
}

static cudnnBackendDescriptor_t make(Graph *g, cudnnBackendDescriptorType_t type, const char *what) {
    if (g->failed) return NULL;
    if (g->ndesc == MAX_DESC) {
        snprintf(g->err, sizeof g->err, "%s: more than %d descriptors", what, (int)MAX_DESC);
        g->failed = true;
        return NULL;
    }
    cudnnBackendDescriptor_t d = NULL;
    const cudnnStatus_t st = g->A->bcreate(type, &d);
    if (st != CUDNN_STATUS_SUCCESS) {
        graph_fail(g, what, st);
        return NULL;
    }
    g->desc[g->ndesc++] = d;
    return d;
}

static void set(Graph *g, cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type,
                int64_t n, const void *val, const char *what) {
    if (g->failed || !d) return;
    const cudnnStatus_t st = g->A->bset(d, name, type, n, val);
    if (st != CUDNN_STATUS_SUCCESS) graph_fail(g, what, st);
}

static void fin(Graph *g, cudnnBackendDescriptor_t d, const char *what) {
    if (g->failed || !d) return;
    const cudnnStatus_t st = g->A->bfinalize(d);
    if (st != CUDNN_STATUS_SUCCESS) graph_fail(g, what, st);
}

struct Dims {
    int64_t d[4], s[4];
};
/* [a, b, c, e] dense */
static Dims dense(int64_t a, int64_t b, int64_t c, int64_t e) { return Dims{{a, b, c, e}, {b * c * e, c * e, e, 1}}; }
/* the view of a dense [a, b, e, c] tensor as [a, b, c, e] (its last two axes swapped) */
static Dims swapped(int64_t a, int64_t b, int64_t c, int64_t e) { return Dims{{a, b, c, e}, {b * c * e, c * e, 1, c}}; }

static cudnnBackendDescriptor_t tensor(Graph *g, int64_t uid, cudnnDataType_t dt, const Dims &x, bool is_virtual,
                                       bool by_value = false) {
    cudnnBackendDescriptor_t t = make(g, CUDNN_BACKEND_TENSOR_DESCRIPTOR, "tensor");
    const int64_t align = 16;
    set(g, t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt, "tensor type");
    set(g, t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, x.d, "tensor dims");
    set(g, t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, x.s, "tensor strides");
    set(g, t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, "tensor uid");
    set(g, t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align, "tensor alignment");
    set(g, t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual, "tensor virtual");
    if (by_value) set(g, t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value, "tensor by value");
    fin(g, t, "tensor finalize");
    return t;
}
/* an intermediate the engine keeps on chip */
static cudnnBackendDescriptor_t virt(Graph *g, cudnnDataType_t dt, const Dims &x) {
    return tensor(g, g->next_uid++, dt, x, true);
}

static void add_op(Graph *g, cudnnBackendDescriptor_t op) {
    if (g->failed || !op) return;
    if (g->nops == MAX_OPS) {
        snprintf(g->err, sizeof g->err, "more than %d operations", (int)MAX_OPS);
        g->failed = true;
        return;
    }
    g->ops[g->nops++] = op;
}

/* y = mode(x[, b[, t]]); axis >= 0 for GEN_INDEX */
static void pointwise(Graph *g, cudnnPointwiseMode_t mode, cudnnDataType_t prec, cudnnBackendDescriptor_t x,
                      cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t t, cudnnBackendDescriptor_t y,
                      int64_t axis = -1) {
    cudnnBackendDescriptor_t pw = make(g, CUDNN_BACKEND_POINTWISE_DESCRIPTOR, "pointwise");
    set(g, pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode, "pointwise mode");
    set(g, pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec, "pointwise precision");
    if (axis >= 0) set(g, pw, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis, "pointwise axis");
    fin(g, pw, "pointwise finalize");
    cudnnBackendDescriptor_t op = make(g, CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, "pointwise op");
    const float one = 1.0f;
    set(g, op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pw, "pointwise op desc");
    set(g, op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x, "pointwise op x");
    if (b) set(g, op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b, "pointwise op b");
    if (t) set(g, op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t, "pointwise op t");
    set(g, op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y, "pointwise op y");
    set(g, op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA1, CUDNN_TYPE_FLOAT, 1, &one, "pointwise alpha1");
    set(g, op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA2, CUDNN_TYPE_FLOAT, 1, &one, "pointwise alpha2");
    fin(g, op, "pointwise op finalize");
    add_op(g, op);
}

/* c = a b over the last two axes, batched over the first two, accumulated in f32 */
static void matmul(Graph *g, cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t c) {
    cudnnBackendDescriptor_t mm = make(g, CUDNN_BACKEND_MATMUL_DESCRIPTOR, "matmul");
    const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
    set(g, mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32, "matmul compute type");
    fin(g, mm, "matmul finalize");
    cudnnBackendDescriptor_t op = make(g, CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, "matmul op");
    set(g, op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &a, "matmul a");
    set(g, op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b, "matmul b");
    set(g, op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c, "matmul c");
    set(g, op, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &mm, "matmul desc");
    fin(g, op, "matmul op finalize");
    add_op(g, op);
}

/* y = reduce(x) over the axes where y has size 1 */
static void reduction(Graph *g, cudnnReduceTensorOp_t how, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    cudnnBackendDescriptor_t r = make(g, CUDNN_BACKEND_REDUCTION_DESCRIPTOR, "reduction");
    const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
    set(g, r, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &how, "reduction operator");
    set(g, r, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32, "reduction compute type");
    fin(g, r, "reduction finalize");
    cudnnBackendDescriptor_t op = make(g, CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR, "reduction op");
    set(g, op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x, "reduction x");
    set(g, op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y, "reduction y");
    set(g, op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &r, "reduction desc");
    fin(g, op, "reduction op finalize");
    add_op(g, op);
}

/* y: the same elements as x seen through other dims / strides (a transpose here) */
static void reshape(Graph *g, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    cudnnBackendDescriptor_t op = make(g, CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR, "reshape op");
    set(g, op, CUDNN_ATTR_OPERATION_RESHAPE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x, "reshape x");
    set(g, op, CUDNN_ATTR_OPERATION_RESHAPE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y, "reshape y");
    fin(g, op, "reshape op finalize");
    add_op(g, op);
}

/* The plan's key. Our inputs are always dense, so the shape fixes every stride. */
/* BWD_DET: the backward whose dQ product writes dQ itself, without the f32 accumulator (cudnn-frontend's "dP
 * workspace" form, what its set_deterministic_algorithm asks for on Hopper): the engine keeps dS in a workspace and
 * runs dQ = dS K as its own product instead of adding each key tile's share into dQ with atomics */
enum Kind { FWD_TRAIN = 0, FWD_INFER = 1, BWD = 2, BWD_DET = 3 };
static bool is_bwd(int kind) { return kind == BWD || kind == BWD_DET; }
struct Key {
    int kind, causal;
    int64_t b, h, sq, skv, d;
    /* A backward over a block of queries of longer heads (ttt__cudnn_attn_bwd's query blocks): the rows from one
     * head's first to the next's, of the query-side tensors and of the key-side ones (0: sq and skv, dense); and
     * dK, dV written in f32 (partial sums the caller adds up) instead of bf16. */
    int64_t qrows, kvrows;
    int dkv32;
};
static bool same_key(const Key &a, const Key &b) {
    return a.kind == b.kind && a.causal == b.causal && a.b == b.b && a.h == b.h && a.sq == b.sq && a.skv == b.skv &&
           a.d == b.d && a.qrows == b.qrows && a.kvrows == b.kvrows && a.dkv32 == b.dkv32;
}
/* [b, h, rows, e] where each head holds `stride` rows (>= rows): a block of rows of longer heads */
static Dims strided_rows(int64_t b, int64_t h, int64_t rows, int64_t e, int64_t stride) {
    return Dims{{b, h, rows, e}, {h * stride * e, stride * e, e, 1}};
}

/* Our mask (attention_mask.cuh): query i sits at position i + Tk - Tq and sees keys up to it. cuDNN's index
 * generators count from the top left, so where Tq < Tk the row index is shifted by + Tk - Tq (as two steps, + Tk
 * then - Tq, by-value int32 scalars: the form cudnn-frontend gives a bottom-right diagonal). */
static void causal_mask(Graph *g, cudnnBackendDescriptor_t s, cudnnBackendDescriptor_t masked, const Dims &sd,
                        const Key &k, int variant) {
    const cudnnDataType_t idx_prec = (variant & 1) ? CUDNN_DATA_FLOAT : CUDNN_DATA_INT32, i32 = CUDNN_DATA_INT32;
    const Dims one = dense(1, 1, 1, 1);
    cudnnBackendDescriptor_t row = virt(g, i32, sd), col = virt(g, i32, sd);
    cudnnBackendDescriptor_t keep = virt(g, CUDNN_DATA_BOOLEAN, sd);
    cudnnBackendDescriptor_t neg = tensor(g, U_NEG, CUDNN_DATA_FLOAT, one, false, true);
    pointwise(g, CUDNN_POINTWISE_GEN_INDEX, idx_prec, s, NULL, NULL, row, 2);
    pointwise(g, CUDNN_POINTWISE_GEN_INDEX, idx_prec, s, NULL, NULL, col, 3);
    if (k.sq != k.skv) {
        cudnnBackendDescriptor_t skv = tensor(g, U_SKV, i32, one, false, true), sq = tensor(g, U_SQ, i32, one, false, true);
        cudnnBackendDescriptor_t r1 = virt(g, i32, sd), r2 = virt(g, i32, sd);
        pointwise(g, CUDNN_POINTWISE_ADD, i32, row, skv, NULL, r1, 3);
        pointwise(g, CUDNN_POINTWISE_SUB, i32, r1, sq, NULL, r2, 3);
        row = r2;
    }
    pointwise(g, CUDNN_POINTWISE_CMP_GE, CUDNN_DATA_BOOLEAN, row, col, NULL, keep); /* key j visible iff j <= pos */
    pointwise(g, CUDNN_POINTWISE_BINARY_SELECT, CUDNN_DATA_FLOAT, s, neg, keep, masked); /* keep ? s : -inf */
}

/* out = softmax(scale q k^T [masked]) v, stats = max + log(sum exp): the forward. */
static void build_fwd(Graph *g, const Key &k, int variant) {
    const cudnnDataType_t bf = CUDNN_DATA_BFLOAT16, f32 = CUDNN_DATA_FLOAT;
    const Dims sd = dense(k.b, k.h, k.sq, k.skv), rows = dense(k.b, k.h, k.sq, 1), one = dense(1, 1, 1, 1);
    cudnnBackendDescriptor_t q = tensor(g, U_Q, bf, dense(k.b, k.h, k.sq, k.d), false);
    cudnnBackendDescriptor_t kt = tensor(g, U_K, bf, swapped(k.b, k.h, k.d, k.skv), false);
    cudnnBackendDescriptor_t v = tensor(g, U_V, bf, dense(k.b, k.h, k.skv, k.d), false);
    cudnnBackendDescriptor_t o = tensor(g, U_O, bf, dense(k.b, k.h, k.sq, k.d), false);
    cudnnBackendDescriptor_t scale = tensor(g, U_SCALE, f32, one, false, true);
    cudnnBackendDescriptor_t stats =
        k.kind == FWD_TRAIN ? tensor(g, U_STATS, f32, rows, false) : virt(g, f32, rows);
    cudnnBackendDescriptor_t s = virt(g, f32, sd), ss = virt(g, f32, sd);
    matmul(g, q, kt, s);
    pointwise(g, CUDNN_POINTWISE_MUL, f32, s, scale, NULL, ss);
    if (k.causal) {
        cudnnBackendDescriptor_t m = virt(g, f32, sd);
        causal_mask(g, ss, m, sd, k, variant);
        ss = m;
    }
    cudnnBackendDescriptor_t mx = virt(g, f32, rows), sub = virt(g, f32, sd), e = virt(g, f32, sd);
    /* p feeds the second product in q's type: the fused engines want both operands of a product in one type */
    cudnnBackendDescriptor_t sum = virt(g, f32, rows), lg = virt(g, f32, rows), p = virt(g, bf, sd);
    reduction(g, CUDNN_REDUCE_TENSOR_MAX, ss, mx);
    pointwise(g, CUDNN_POINTWISE_SUB, f32, ss, mx, NULL, sub);
    pointwise(g, CUDNN_POINTWISE_EXP, f32, sub, NULL, NULL, e);
    reduction(g, CUDNN_REDUCE_TENSOR_ADD, e, sum);
    pointwise(g, CUDNN_POINTWISE_LOG, f32, sum, NULL, NULL, lg);
    pointwise(g, CUDNN_POINTWISE_ADD, f32, mx, lg, NULL, stats);
    pointwise(g, CUDNN_POINTWISE_DIV, f32, e, sum, NULL, p);
    matmul(g, p, v, o);
}

/* dq, dk, dv from q, k, v, out, dout, the forward's stats and delta = rowsum(dout * out), which the caller has
 * written (attention.cu: our kernel) and the graph names as the row reduction's output. */
static void build_bwd(Graph *g, const Key &k, int variant) {
    const cudnnDataType_t bf = CUDNN_DATA_BFLOAT16, f32 = CUDNN_DATA_FLOAT;
    const Dims sd = dense(k.b, k.h, k.sq, k.skv), one = dense(1, 1, 1, 1);
    const int64_t qr = k.qrows ? k.qrows : k.sq, kr_ = k.kvrows ? k.kvrows : k.skv;
    const Dims qd = strided_rows(k.b, k.h, k.sq, k.d, qr), kd = strided_rows(k.b, k.h, k.skv, k.d, kr_);
    const Dims qrow = strided_rows(k.b, k.h, k.sq, 1, qr), qdense = dense(k.b, k.h, k.sq, k.d);
    Dims kdt = kd; /* K and V seen as [b, h, d, skv] */
    kdt.d[2] = k.d, kdt.d[3] = k.skv, kdt.s[2] = 1, kdt.s[3] = k.d;
    const Dims st = swapped(k.b, k.h, k.skv, k.sq); /* s's elements seen as [b, h, skv, sq] */
    cudnnBackendDescriptor_t q = tensor(g, U_Q, bf, qd, false);
    cudnnBackendDescriptor_t kt = tensor(g, U_K, bf, kdt, false);
    cudnnBackendDescriptor_t vt = tensor(g, U_V, bf, kdt, false);
    cudnnBackendDescriptor_t dout = tensor(g, U_DO, bf, qd, false);
    cudnnBackendDescriptor_t stats = tensor(g, U_STATS, f32, qrow, false);
    cudnnBackendDescriptor_t scale = tensor(g, U_SCALE, f32, one, false, true);
    cudnnBackendDescriptor_t dq = tensor(g, U_DQ, bf, qd, false), dk = tensor(g, U_DK, k.dkv32 ? f32 : bf, kd, false);
    cudnnBackendDescriptor_t dv = tensor(g, U_DV, k.dkv32 ? f32 : bf, kd, false);
    cudnnBackendDescriptor_t delta = tensor(g, U_DELTA, f32, qrow, false);
    cudnnBackendDescriptor_t dqacc = k.kind == BWD_DET ? NULL : tensor(g, U_DQACC, f32, qdense, false);
    /* delta = rowsum(dout * out): the engines want this reduction in the graph (with delta as a plain input no
     * engine takes it, cudnn_plan_check), but on an H100 with cuDNN 9.19 the engine that runs it (6) read delta
     * and never wrote it (cleared first, it came back zero; left alone, it held the previous call's values or
     * garbage), so dq, dk were wrong and dv right. The caller writes delta with our kernel before the call. */
    cudnnBackendDescriptor_t o = tensor(g, U_O, bf, qd, false), od = virt(g, f32, qdense);
    pointwise(g, CUDNN_POINTWISE_MUL, f32, dout, o, NULL, od);
    reduction(g, CUDNN_REDUCE_TENSOR_ADD, od, delta);
    /* p = exp(scale q k^T - stats), masked */
    cudnnBackendDescriptor_t s = virt(g, f32, sd), ss = virt(g, f32, sd), sl = virt(g, f32, sd);
    matmul(g, q, kt, s);
    pointwise(g, CUDNN_POINTWISE_MUL, f32, s, scale, NULL, ss);
    if (k.causal && (variant & 4)) {
        cudnnBackendDescriptor_t m = virt(g, f32, sd);
        causal_mask(g, ss, m, sd, k, variant);
        ss = m;
    }
    pointwise(g, CUDNN_POINTWISE_SUB, f32, ss, stats, NULL, sl);
    if (k.causal && !(variant & 4)) {
        cudnnBackendDescriptor_t m = virt(g, f32, sd);
        causal_mask(g, sl, m, sd, k, variant);
        sl = m;
    }
    cudnnBackendDescriptor_t p = virt(g, f32, sd);
    pointwise(g, CUDNN_POINTWISE_EXP, f32, sl, NULL, NULL, p);
    /* dv = p^T dout */
    cudnnBackendDescriptor_t pt = virt(g, bf, st);
    reshape(g, p, pt);
    matmul(g, pt, dout, dv);
    /* ds = scale p (dout v^T - delta) */
    cudnnBackendDescriptor_t dp = virt(g, f32, sd), t1 = virt(g, f32, sd), t2 = virt(g, f32, sd), ds = virt(g, f32, sd);
    matmul(g, dout, vt, dp);
    pointwise(g, CUDNN_POINTWISE_SUB, f32, dp, delta, NULL, t1);
    pointwise(g, CUDNN_POINTWISE_MUL, f32, t1, p, NULL, t2);
    pointwise(g, CUDNN_POINTWISE_MUL, f32, t2, scale, NULL, ds);
    /* dk = ds^T q */
    cudnnBackendDescriptor_t dst = virt(g, bf, st);
    reshape(g, ds, dst);
    matmul(g, dst, q, dk);
    /* dq = ds k: accumulated in f32 (dqacc), then cast; or (BWD_DET) written directly */
    cudnnBackendDescriptor_t kr = virt(g, (variant & 2) ? bf : f32, dense(k.b, k.h, k.skv, k.d));
    reshape(g, kt, kr);
    if (k.kind == BWD_DET) {
        matmul(g, ds, kr, dq);
    } else {
        matmul(g, ds, kr, dqacc);
        pointwise(g, CUDNN_POINTWISE_IDENTITY, f32, dqacc, NULL, NULL, dq);
    }
}

static void graph_free(Graph *g) {
    if (!g) return;
    if (g->plan) g->A->bdestroy(g->plan);
    for (int i = g->ndesc - 1; i >= 0; i--) g->A->bdestroy(g->desc[i]);
    free(g);
}

/* Keep the first reason an engine step refused (heuristics, plan), with cuDNN's own message when it has one. */
static void soft_err(const Graph *g, char *buf, size_t n, const char *what, long long i, cudnnStatus_t st) {
    if (buf[0]) return;
    char last[160] = "";
    if (g->A->lasterr) g->A->lasterr(last, sizeof last);
    snprintf(buf, n, "%s %lld: %s%s%s", what, i, g->A->errstr(st), last[0] ? ": " : "", last);
}

static bool pick_first(void) {
    static int v = -1;
    if (v < 0) {
        const char *e = getenv("TTT_CUDNN_PICK");
        v = !(e && !strcmp(e, "least"));
    }
    return v;
}

/* Of the heuristics' engine configs (mode A, then the fallback list), the first that gives a finalized plan
 * (or, TTT_CUDNN_PICK=least, the one with the least workspace of the first mode that gives any: on an H100
 * with cuDNN 9.19 that chose engine 1 for the forward, 0 bytes but 2x slower than the first, engine 2; the
 * backward has one engine, 6, whose workspace is a T x T f32 matrix per head). */
static bool plan(Graph *g) {
    cudnnBackendDescriptor_t og = make(g, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, "operation graph");
    set(g, og, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &g->h, "graph handle");
    set(g, og, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, g->nops, g->ops, "graph ops");
    fin(g, og, "operation graph finalize");
    if (g->failed) return false;
    char first_err[256] = "";
    const cudnnBackendHeurMode_t modes[2] = {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK};
    const char *mode_name[2] = {"heuristics mode A", "fallback heuristics"};
    for (int m = 0; m < 2; m++) {
        cudnnBackendDescriptor_t heur = make(g, CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, "heuristics");
        if (g->failed) return false;
        /* a refusal here is the engine list's answer, not an error of ours: go on to the next mode */
        cudnnStatus_t st = g->A->bset(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &og);
        if (st == CUDNN_STATUS_SUCCESS) st = g->A->bset(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &modes[m]);
        if (st == CUDNN_STATUS_SUCCESS) st = g->A->bfinalize(heur);
        int64_t n = 0;
        if (st == CUDNN_STATUS_SUCCESS)
            st = g->A->bget(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &n, NULL);
        if (st != CUDNN_STATUS_SUCCESS) {
            soft_err(g, first_err, sizeof first_err, mode_name[m], 0, st);
            continue;
        }
        if (n > MAX_CFG) n = MAX_CFG;
        cudnnBackendDescriptor_t cfg[MAX_CFG];
        for (int64_t i = 0; i < n; i++) cfg[i] = make(g, CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, "engine config");
        if (g->failed) return false;
        if (n > 0 && (st = g->A->bget(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, n, &n, cfg)) !=
                         CUDNN_STATUS_SUCCESS) {
            soft_err(g, first_err, sizeof first_err, mode_name[m], 0, st);
            continue;
        }
        if (n == 0 && !first_err[0]) snprintf(first_err, sizeof first_err, "%s: no engine configs", mode_name[m]);
        for (int64_t i = 0; i < n; i++) {
            cudnnBackendDescriptor_t p = NULL;
            st = g->A->bcreate(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &p);
            if (st != CUDNN_STATUS_SUCCESS) {
                graph_fail(g, "execution plan", st);
                return false;
            }
            st = g->A->bset(p, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &g->h);
            if (st == CUDNN_STATUS_SUCCESS)
                st = g->A->bset(p, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfg[i]);
            if (st == CUDNN_STATUS_SUCCESS) st = g->A->bfinalize(p); /* an engine that cannot run the graph refuses here */
            int64_t ws = 0, got = 0;
            if (st == CUDNN_STATUS_SUCCESS)
                st = g->A->bget(p, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &got, &ws);
            if (st == CUDNN_STATUS_SUCCESS && g->plan && !(ws < g->ws)) { /* a plan with no more workspace is kept */
                g->A->bdestroy(p);
                continue;
            }
            if (st == CUDNN_STATUS_SUCCESS) {
                if (g->plan) g->A->bdestroy(g->plan);
                g->plan = p;
                g->ws = ws;
                g->engine = -1;
                cudnnBackendDescriptor_t eng = NULL;
                if (g->A->bcreate(CUDNN_BACKEND_ENGINE_DESCRIPTOR, &eng) == CUDNN_STATUS_SUCCESS) {
                    if (g->A->bget(cfg[i], CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &got, &eng) ==
                        CUDNN_STATUS_SUCCESS)
                        g->A->bget(eng, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &got, &g->engine);
                    g->A->bdestroy(eng);
                }
                if (pick_first()) return true;
                continue;
            }
            soft_err(g, first_err, sizeof first_err, m ? "fallback config" : "mode A config", (long long)i, st);
            g->A->bdestroy(p);
        }
        if (g->plan) return true;
    }
    snprintf(g->err, sizeof g->err, "no engine takes the graph (first refusal: %s)", first_err);
    g->failed = true;
    return false;
}

/* Variants of the same graph, tried in order until one gets a plan, since we cannot test every cuDNN release
 * here: bit 0, the precision the causal mask's index generators compute in (int32, as cudnn-frontend wrote them
 * for 9.0; f32, as it leaves them now); bit 1 (backward), the type of K's transposed view feeding dQ's product
 * (f32, the frontend's intermediate type; or K's own bf16); bit 2 (backward), where the mask sits (after
 * subtracting the statistics, as the frontend does now; before, as it did for 9.0). cuDNN 9.19 takes
 * variant 0 (dev/cuda/cudnn_plan_check.cu). */
/* The graph of k with the first variant that gets a plan, or NULL (why: the first variant's reason). */
static Graph *build(const Api *A, cudnnHandle_t h, const Key &k, char *why, size_t why_n) {
    const int n_var = is_bwd(k.kind) ? 8 : 2;
    why[0] = 0;
    for (int var = 0; var < n_var; var++) {
        if ((var & 5) && !k.causal) continue; /* bits 0 and 2 only change the causal mask */
        Graph *g = (Graph *)calloc(1, sizeof(Graph));
        if (!g) {
            snprintf(why, why_n, "out of host memory");
            return NULL;
        }
        g->A = A;
        g->h = h;
        g->next_uid = V0;
        if (is_bwd(k.kind)) build_bwd(g, k, var);
        else build_fwd(g, k, var);
        if (!g->failed && plan(g)) {
            if (verbose())
                fprintf(stderr,
                        "ttt: cudnn: plan for %s b%lld h%lld sq%lld skv%lld d%lld causal%d: engine %lld, variant %d, "
                        "workspace %lld bytes\n",
                        k.kind == BWD ? "backward" : k.kind == BWD_DET ? "backward (deterministic)" : k.kind == FWD_TRAIN ? "forward" : "forward (no stats)",
                        (long long)k.b, (long long)k.h, (long long)k.sq, (long long)k.skv, (long long)k.d, k.causal,
                        (long long)g->engine, var, (long long)g->ws);
            return g;
        }
        if (!why[0]) snprintf(why, why_n, "variant %d: %s", var, g->err); /* the first variant's reason */
        graph_free(g);
    }
    return NULL;
}

/* ---- per instance: the handle and the plans ---------------------------------------------------------------- */

enum { CACHE = 32 };
struct Entry {
    Key key;
    Graph *g; /* NULL: cuDNN took no plan for this key (asked once) */
    uint64_t used;
};
struct CudnnState {
    cudnnHandle_t h;
    Entry e[CACHE];
    int n;
    uint64_t tick;
};

static CudnnState *state(CuDev *D, const Api *A) {
    if (D->cudnn) return (CudnnState *)D->cudnn;
    CudnnState *S = (CudnnState *)calloc(1, sizeof *S);
    if (!S) return NULL;
    cudnnStatus_t st = A->create(&S->h);
    if (st == CUDNN_STATUS_SUCCESS) st = A->set_stream(S->h, D->stream);
    if (st != CUDNN_STATUS_SUCCESS) {
        note("cudnnCreate / cudnnSetStream: %s; using our kernels", A->errstr(st));
        if (S->h) A->destroy(S->h);
        free(S);
        cudaGetLastError(); /* leave no CUDA error behind for our kernels' checks */
        return NULL;
    }
    D->cudnn = S;
    return S;
}

void ttt__cudnn_release(CuDev *D) {
    CudnnState *S = (CudnnState *)D->cudnn;
    if (!S) return;
    const Api *A = api();
    for (int i = 0; i < S->n; i++) graph_free(S->e[i].g);
    if (A && S->h) A->destroy(S->h);
    free(S);
    D->cudnn = NULL;
}

/* The cached plan of k (built now if new, unless a CUDA graph is being recorded); NULL: use our kernels. */
static Graph *plan_for(CuDev *D, CudnnState *S, const Api *A, const Key &k) {
    for (int i = 0; i < S->n; i++)
        if (same_key(S->e[i].key, k)) {
            S->e[i].used = ++S->tick;
            return S->e[i].g;
        }
    if (D->rec) return NULL; /* building may allocate and synchronize: not inside a capture */
    char why[300];
    Graph *g = build(A, S->h, k, why, sizeof why);
    cudaGetLastError(); /* a failed attempt must not leave a CUDA error for our kernels' launch checks */
    if (g) g_info.plans_built++;
    else {
        g_info.plans_failed++;
        note("%s b%lld h%lld sq%lld skv%lld d%lld causal%d: %s; our kernels run it", is_bwd(k.kind) ? "backward" : "forward",
             (long long)k.b, (long long)k.h, (long long)k.sq, (long long)k.skv, (long long)k.d, k.causal, why);
    }
    int slot = S->n;
    if (slot == CACHE) { /* evict the least recently used */
        slot = 0;
        for (int i = 1; i < CACHE; i++)
            if (S->e[i].used < S->e[slot].used) slot = i;
        graph_free(S->e[slot].g);
    } else {
        S->n++;
    }
    S->e[slot].key = k;
    S->e[slot].g = g;
    S->e[slot].used = ++S->tick;
    return g;
}

/* A plan's execution failed: forget it, and use our kernels for this key from now on. */
static void drop(CudnnState *S, Graph *g) {
    for (int i = 0; i < S->n; i++)
        if (S->e[i].g == g) {
            graph_free(g);
            S->e[i].g = NULL;
        }
}

/* ---- the entries -------------------------------------------------------------------------------------------- */

static bool al16(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* Whether we hand this call to cuDNN at all (before any plan is built); why: the reason when not.
 * The version rules follow cudnn-frontend's support checks for bf16 SDPA (the bugs it steers around). */
static bool policy(long ver, int kind, int64_t sq, int64_t skv, int causal, int64_t window, char *why, size_t n) {
    if (causal && window > 0 && window < skv) {
        snprintf(why, n, "sliding window %lld", (long long)window);
        return false;
    }
    /* Tq < Tk causal (our diagonal ends bottom-right, so the mask shifts the row index): cudnn-frontend allows
     * it from 9.6 on for any lengths, and not for single-query decode steps up to 9.9; we leave Tq = 1 to our
     * kernels always (a decode step is too small to gain). */
    if (causal && sq != skv && (ver < 90600 || sq == 1)) {
        snprintf(why, n, "causal with Tq %lld < Tk %lld on cuDNN %ld", (long long)sq, (long long)skv, ver);
        return false;
    }
    if (ver == 91000 || ver == 91001) { /* bf16 SDPA has known bugs there (fixed in 9.10.2) */
        snprintf(why, n, "cuDNN %ld (9.10.0 / 9.10.1: known SDPA bugs)", ver);
        return false;
    }
    if (is_bwd(kind) && sq == 1 && skv == 1) {
        snprintf(why, n, "backward with Tq = Tk = 1");
        return false;
    }
    /* Up to 9.15 the backward needs a padding mask where Tk is not a multiple of 128 (cudnn-frontend adds one as a
     * workaround); we do not build that graph: our backward runs those, on cuDNN's forward's lse. */
    if (is_bwd(kind) && ver <= 91500 && skv % 128 != 0) {
        snprintf(why, n, "backward with Tk %lld not a multiple of 128 on cuDNN %ld (<= 9.15)", (long long)skv, ver);
        return false;
    }
    return true;
}

/* The key for these tensors, or false (reason in g_info.why) where we leave the call to our kernels. */
static bool key_of(const Api *A, const ttt_tensor *q, const ttt_tensor *k, int causal, int64_t window, int kind, Key *key) {
    const int r = q->ndim;
    if (r < 2 || q->dtype != TTT_BF16) return false;
    const int64_t sq = q->shape[r - 2], skv = k->shape[r - 2], d = q->shape[r - 1];
    if (!policy(A->ver, kind, sq, skv, causal, window, g_info.why, sizeof g_info.why)) return false;
    const int64_t h = r >= 3 && q->shape[r - 3] > 0 ? q->shape[r - 3] : 1, bh = ttt__leading(q);
    *key = Key{kind, causal ? 1 : 0, bh / h, h, sq, skv, d, 0, 0, 0};
    return true;
}

/* the backward graph the mode asks for */
static int bwd_kind(void) { return mode() == TTT_CUDNN_DET ? BWD_DET : BWD; }

bool ttt__cudnn_attn_wanted(const ttt_tensor *q, const ttt_tensor *k, int causal, int64_t window) {
    Key key;
    const Api *A = bwd_enabled() ? api() : NULL;
    return A && key_of(A, q, k, causal, window, bwd_kind(), &key);
}

extern "C" int ttt__cudnn_takes(int backward, int64_t tq, int64_t tk, int causal, int64_t window) {
    char why[160];
    return policy(g_info.version, backward ? BWD : FWD_TRAIN, tq, tk, causal, window, why, sizeof why);
}

/* The most workspace a plan may take (TTT_CUDNN_WS_MAX, MiB; default the larger of 4 GiB and an eighth of the
 * GPU's memory: 10.6 GB on an 80 GB H100, 17.8 GB on an H200): the backward's engine on cuDNN 9.19 wants B H Tq Tk
 * f32 values (3.2 GB at T 8K, 12 heads), its deterministic form 6 bytes a score (4.8 GB), which the device pool
 * would then keep. Above it the backward declines to our kernels, or, with TTT_CUDNN_CUT=1, runs cut (bwd_cut) so
 * that each execution's share fits: one head at T 32K in the det form is 6.4 GB. Read once, at the first backward
 * (which runs before any CUDA graph is recorded). */
static size_t g_ws_override; /* ttt__cudnn_set_ws_max (tests); 0: TTT_CUDNN_WS_MAX or the default */
extern "C" void ttt__cudnn_set_ws_max(int64_t bytes) { g_ws_override = bytes > 0 ? (size_t)bytes : 0; }
static size_t ws_cap(void) {
    static size_t cap = 0;
    if (g_ws_override) return g_ws_override;
    if (!cap) {
        const char *e = getenv("TTT_CUDNN_WS_MAX");
        const long long mib = e && *e ? atoll(e) : 0;
        size_t free_b = 0, total_b = 0;
        cap = (size_t)4096 << 20;
        if (mib > 0) cap = (size_t)mib << 20;
        else if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess && total_b / 8 > cap) cap = total_b / 8;
        else cudaGetLastError();
    }
    return cap;
}

static bool reserve_ws(CuDev *D, size_t bytes) {
    if (bytes <= D->cudnn_ws.bytes) return true;
    if (D->rec) return false; /* it would have to grow inside a capture */
    if (scratch_reserve(D, &D->cudnn_ws, bytes, "cudnn attention") != TTT_OK) {
        note("no device memory for cuDNN's workspace (%zu bytes); our kernels run it", bytes);
        return false;
    }
    return true;
}

static bool run(const Api *A, CudnnState *S, Graph *g, int n, const int64_t *uids, void *const *ptrs, void *ws) {
    cudnnBackendDescriptor_t vp = NULL;
    cudnnStatus_t st = A->bcreate(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &vp);
    if (st == CUDNN_STATUS_SUCCESS) st = A->bset(vp, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n, uids);
    if (st == CUDNN_STATUS_SUCCESS) st = A->bset(vp, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n, ptrs);
    if (st == CUDNN_STATUS_SUCCESS) st = A->bset(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws);
    if (st == CUDNN_STATUS_SUCCESS) st = A->bfinalize(vp);
    if (st == CUDNN_STATUS_SUCCESS) st = A->bexecute(S->h, g->plan, vp);
    if (vp) A->bdestroy(vp);
    if (st != CUDNN_STATUS_SUCCESS) {
        char last[160] = "";
        if (A->lasterr) A->lasterr(last, sizeof last);
        note("execute: %s%s%s; this shape goes to our kernels from now on", A->errstr(st), last[0] ? ": " : "", last);
        cudaGetLastError();
        drop(S, g);
        return false;
    }
    return true;
}

/* -inf for masked scores; cuDNN before 9.1 wants the lowest finite float there (as cudnn-frontend passes it) */
static float masked_value(const Api *A) { return A->ver < 90100 ? -3.402823466e38f : -INFINITY; }

/* The instance's state and the plan, or NULL. While a CUDA graph is recorded (then only with plans and workspace
 * that exist already): in the modes that keep a run's bits (fwd, det) unless TTT_CUDNN_GRAPHS=0, in mode 1 only
 * with TTT_CUDNN_GRAPHS=1. The engines declare native CUDA-graph support, and test_attention_cudnn's check_graph
 * (H100, 2026-12-07) replayed a captured step to the eager bits in every mode; a failed capture would fail the
 * step instead of falling back, hence the switch. */
static Graph *prepare(CuDev *D, const Api *A, const Key &key, CudnnState **S_out) {
    static const int graphs_env = [] {
        const char *e = getenv("TTT_CUDNN_GRAPHS");
        return !e || !*e ? -1 : strcmp(e, "0") != 0;
    }();
    const bool in_graphs = graphs_env == 1 || (graphs_env == -1 && mode() != TTT_CUDNN_ALL);
    if (D->rec && !in_graphs) {
        snprintf(g_info.why, sizeof g_info.why, "a CUDA graph is being recorded (TTT_CUDNN_GRAPHS=1 allows cuDNN there)");
        return NULL;
    }
    CudnnState *S = state(D, A);
    if (!S) return NULL;
    *S_out = S;
    return plan_for(D, S, A, key);
}

int ttt__cudnn_attn_fwd(CuDev *D, ttt_tensor *out, ttt_tensor *lse, const ttt_tensor *q, const ttt_tensor *k,
                        const ttt_tensor *v, int causal, int64_t window, double scale) {
    if (!enabled()) return TTT_BACKEND_DECLINED;
    Key key = {};
    const Api *A = api();
    CudnnState *S = NULL;
    Graph *g = NULL;
    if (A && key_of(A, q, k, causal, window, lse ? FWD_TRAIN : FWD_INFER, &key) && al16(q->data) && al16(k->data) &&
        al16(v->data) && al16(out->data) && (!lse || al16(lse->data)))
        g = prepare(D, A, key, &S);
    if (!g || !reserve_ws(D, (size_t)g->ws)) {
        g_info.declined++;
        return TTT_BACKEND_DECLINED;
    }
    float sc = (float)scale, neg = masked_value(A);
    int32_t skv = (int32_t)key.skv, sq = (int32_t)key.sq;
    int64_t uids[9] = {U_Q, U_K, U_V, U_O, U_SCALE};
    void *ptrs[9] = {q->data, k->data, v->data, out->data, &sc}; /* by-value scalars: host addresses */
    int n = 5;
    if (lse) uids[n] = U_STATS, ptrs[n++] = lse->data;
    if (key.causal) uids[n] = U_NEG, ptrs[n++] = &neg;
    if (key.causal && key.sq != key.skv) uids[n] = U_SKV, ptrs[n++] = &skv, uids[n] = U_SQ, ptrs[n++] = &sq;
    if (!run(A, S, g, n, uids, ptrs, D->cudnn_ws.p)) {
        g_info.declined++;
        return TTT_BACKEND_DECLINED;
    }
    g_info.fwd_runs++;
    return TTT_OK;
}

/* The query blocks' partial dK, dV (f32, first rows of a head) added into the head's sums, block after block in one
 * order (so a run keeps its bits); then the sums cast to the head's bf16 gradients. */
__global__ void k_cudnn_add_rows(float *__restrict__ sum, const float *__restrict__ part, int64_t n) {
    GRID_LOOP(i, n) sum[i] += part[i];
}
__global__ void k_cudnn_to_bf16(bf16 *__restrict__ out, const float *__restrict__ in, int64_t n) {
    GRID_LOOP(i, n) out[i] = __float2bfloat16_rn(in[i]);
}
static bool launched(void) {
    if (cudaPeekAtLastError() == cudaSuccess) return true;
    cudaGetLastError();
    return false;
}

/* How a backward is cut to fit the workspace cap. cuDNN's backward keeps O(Tq Tk) workspace for each (batch, head)
 * pair (4 bytes a score on cuDNN 9.19, 6 in the det form: 19 GB at T 16K and 12 heads, 25.8 GB for one head at
 * 64K). The pairs are independent and our tensors dense [b, h, T, d], so g consecutive pairs are a [1, g, T, d]
 * tensor at an offset: where the whole call is over the cap it runs in groups of pairs (the largest divisor of
 * b h whose share fits). Where one pair is over it, each head runs in blocks of queries, from the last: a block
 * sees the keys up to its last query (all keys, not causal), its dQ rows are whole and its dK, dV are partial sums
 * over the keys it sees, written in f32 and added up in that order. */
struct BwdCut {
    int64_t grp;    /* pairs an execution covers */
    int64_t tb;     /* queries a block (sq: no blocks) */
    Graph *plan[64]; /* the plans: [0] the group's (tb == sq), else block i's */
    int nb;
    size_t ws;      /* the most workspace one execution wants, accumulators included */
};

static Key block_key(const Key &key, int64_t tb, int64_t i) {
    int64_t s0, e, keys;
    ttt_attn_cut_block(key.sq, key.skv, key.causal, tb, i, &s0, &e, &keys);
    Key kb = {key.kind, key.causal, 1, 1, e - s0, keys, key.d, key.sq, key.skv, 1};
    return kb;
}

/* dQ's f32 accumulator for rows x d (none in the det form), rounded so what follows it stays aligned */
static size_t round256(size_t n) { return (n + 255) / 256 * 256; }
static size_t acc_bytes(int kind, int64_t rows, int64_t d) {
    return kind == BWD_DET ? 0 : round256((size_t)(rows * d) * 4);
}

/* Whether a backward over the cap is cut (TTT_CUDNN_CUT=1, or ttt__cudnn_set_cut) or left to our kernels (the
 * default until the cut has run on a GPU). */
static int g_cut = -1;
extern "C" void ttt__cudnn_set_cut(int on) { g_cut = on < 0 ? -1 : on != 0; }
static bool cut_enabled(void) {
    static const int env = [] {
        const char *e = getenv("TTT_CUDNN_CUT");
        return e && !strcmp(e, "1") ? 1 : 0;
    }();
    return g_cut >= 0 ? g_cut == 1 : env == 1;
}

static bool bwd_cut(CuDev *D, const Api *A, const Key &key, CudnnState **S, BwdCut *c) {
    Graph *g = prepare(D, A, key, S);
    if (!g) return false;
    const int64_t bh = key.b * key.h;
    const size_t cap = ws_cap();
    *c = BwdCut{bh, key.sq, {g}, 1, acc_bytes(key.kind, bh * key.sq, key.d) + (size_t)g->ws};
    if ((size_t)g->ws <= cap) return true;
    if (!cut_enabled()) {
        note("the backward plan wants %lld bytes of workspace, above TTT_CUDNN_WS_MAX (%zu MiB), and TTT_CUDNN_CUT is "
             "not 1; our kernels run it",
             (long long)g->ws, cap >> 20);
        return false;
    }
    ttt_attn_cut cut;
    const int how = ttt_attn_cut_plan(bh, key.sq, (double)g->ws, (double)cap, 64, &cut);
    if (how == TTT_CUT_GROUPS) {
        const Key kg = {key.kind, key.causal, 1, cut.grp, key.sq, key.skv, key.d, 0, 0, 0};
        Graph *gg = prepare(D, A, kg, S);
        if (!gg || (size_t)gg->ws > cap) {
            note("backward in groups of %lld heads: %s; our kernels run it", (long long)cut.grp,
                 gg ? "the group's workspace is over TTT_CUDNN_WS_MAX" : "no plan");
            return false;
        }
        *c = BwdCut{cut.grp, key.sq, {gg}, 1, acc_bytes(key.kind, cut.grp * key.sq, key.d) + (size_t)gg->ws};
        return true;
    }
    if (how != TTT_CUT_BLOCKS) {
        note("one head's backward workspace is over TTT_CUDNN_WS_MAX (%zu MiB) even in blocks of 128 queries (or more "
             "than 64 blocks); our kernels run it",
             cap >> 20);
        return false;
    }
    /* A block's causal diagonal ends bottom-right: cuDNN 9.6 on (the policy's rule for Tq < Tk), and up to 9.15
     * every block's key count a multiple of 128 (the policy's rule) */
    if (key.causal && (A->ver < 90600 || (A->ver <= 91500 && (key.skv - key.sq) % 128))) {
        note("one head's backward workspace is over TTT_CUDNN_WS_MAX and cuDNN %ld cannot run it in blocks of queries; "
             "our kernels run it",
             A->ver);
        return false;
    }
    *c = BwdCut{1, cut.tb, {}, (int)cut.nb, 0};
    size_t most = 0;
    for (int i = 0; i < (int)cut.nb; i++) {
        const Key kb = block_key(key, cut.tb, i);
        Graph *gb = prepare(D, A, kb, S);
        if (!gb || (size_t)gb->ws > cap) {
            note("backward block %d of %lld queries: %s; our kernels run it", i, (long long)cut.tb,
                 gb ? "its workspace is over TTT_CUDNN_WS_MAX" : "no plan");
            return false;
        }
        c->plan[i] = gb;
        const size_t w = acc_bytes(key.kind, kb.sq, key.d) + (size_t)gb->ws;
        if (w > most) most = w;
    }
    c->ws = round256(most) + (size_t)(4 * key.skv * key.d) * 4; /* then dK, dV sums and one block's partials, f32 */
    return true;
}

/* One execution of plan g over the tensors at these byte offsets (query side, key side, query rows) */
struct BwdArgs {
    const Api *A;
    CudnnState *S;
    const ttt_tensor *q, *k, *v, *out, *dout, *lse, *dq, *delta;
    void *dk, *dv; /* the key side's outputs: the gradients, or a block's f32 sums / partials */
    char *ws;      /* dQ's f32 accumulator (none in det), then the plan's own */
    float scale, neg;
};
static bool bwd_exec(const BwdArgs &a, Graph *g, const Key &kk, size_t oq, size_t ok, size_t orow, size_t odkv,
                     cudaStream_t stream) {
    const bool det = kk.kind == BWD_DET;
    const size_t acc = acc_bytes(kk.kind, kk.b * kk.h * kk.sq, kk.d);
    /* cuDNN before 9.6 adds into the accumulator without clearing it; clearing costs one pass over dQ's size */
    if (acc && cudaMemsetAsync(a.ws, 0, acc, stream) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    float sc = a.scale, neg = a.neg;
    int32_t skv = (int32_t)kk.skv, sq = (int32_t)kk.sq;
    int64_t uids[15] = {U_Q, U_K, U_V, U_O, U_DO, U_STATS, U_SCALE, U_DQ, U_DK, U_DV, U_DELTA, U_DQACC};
    void *ptrs[15] = {(char *)a.q->data + oq,    (char *)a.k->data + ok,       (char *)a.v->data + ok,
                      (char *)a.out->data + oq,  (char *)a.dout->data + oq,    (char *)a.lse->data + orow,
                      &sc,                       (char *)a.dq->data + oq,      (char *)a.dk + odkv,
                      (char *)a.dv + odkv,       (char *)a.delta->data + orow, a.ws};
    int n = det ? 11 : 12; /* U_DQACC last of the twelve */
    if (kk.causal) uids[n] = U_NEG, ptrs[n++] = &neg;
    if (kk.causal && kk.sq != kk.skv) uids[n] = U_SKV, ptrs[n++] = &skv, uids[n] = U_SQ, ptrs[n++] = &sq;
    return run(a.A, a.S, g, n, uids, ptrs, a.ws + acc);
}

int ttt__cudnn_attn_bwd(CuDev *D, ttt_tensor *dq, ttt_tensor *dk, ttt_tensor *dv, ttt_tensor *delta,
                        const ttt_tensor *dout, const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v,
                        const ttt_tensor *out, const ttt_tensor *lse, int causal, int64_t window, double scale) {
    if (!bwd_enabled()) return TTT_BACKEND_DECLINED;
    Key key = {};
    const Api *A = api();
    CudnnState *S = NULL;
    BwdCut c;
    bool ok = A && key_of(A, q, k, causal, window, bwd_kind(), &key) && al16(q->data) && al16(k->data) &&
              al16(v->data) && al16(out->data) && al16(dout->data) && al16(lse->data) && al16(dq->data) &&
              al16(dk->data) && al16(dv->data) && al16(delta->data) && bwd_cut(D, A, key, &S, &c);
    if (!ok || !reserve_ws(D, c.ws)) {
        g_info.declined++;
        return TTT_BACKEND_DECLINED;
    }
    BwdArgs a = {A, S, q, k, v, out, dout, lse, dq, delta, dk->data, dv->data, (char *)D->cudnn_ws.p, (float)scale,
                 masked_value(A)};
    const int64_t bh = key.b * key.h, qrow = key.sq * key.d * 2, krow = key.skv * key.d * 2; /* bytes a head */
    if (c.tb == key.sq) { /* whole heads, grp at a time */
        const Key kg = {key.kind, key.causal, 1, c.grp, key.sq, key.skv, key.d, 0, 0, 0};
        for (int64_t p0 = 0; p0 < bh; p0 += c.grp)
            if (!bwd_exec(a, c.plan[0], kg, (size_t)(p0 * qrow), (size_t)(p0 * krow), (size_t)(p0 * key.sq) * 4,
                          (size_t)(p0 * krow), D->stream)) {
                g_info.declined++;
                return TTT_BACKEND_DECLINED; /* partial gradients: our kernels, taking over, write all of them */
            }
    } else { /* one head at a time, in blocks of queries from the last (which sees every key) */
        const int64_t nkv = key.skv * key.d;
        float *sum_k = (float *)(a.ws + (c.ws - (size_t)(4 * nkv) * 4)), *sum_v = sum_k + nkv, *part_k = sum_v + nkv,
              *part_v = part_k + nkv;
        for (int64_t p = 0; p < bh; p++) {
            for (int i = c.nb - 1; i >= 0; i--) {
                const Key kb = block_key(key, c.tb, i);
                const int64_t s0 = i * c.tb;
                BwdArgs ab = a;
                ab.dk = i == c.nb - 1 ? sum_k : part_k;
                ab.dv = i == c.nb - 1 ? sum_v : part_v;
                const size_t oq = (size_t)(p * qrow + s0 * key.d * 2), orow = (size_t)(p * key.sq + s0) * 4;
                bool fine = bwd_exec(ab, c.plan[i], kb, oq, (size_t)(p * krow), orow, 0, D->stream);
                if (fine && i != c.nb - 1) {
                    const int64_t n = kb.skv * key.d;
                    k_cudnn_add_rows<<<blocks_for(n), THREADS, 0, D->stream>>>(sum_k, part_k, n);
                    k_cudnn_add_rows<<<blocks_for(n), THREADS, 0, D->stream>>>(sum_v, part_v, n);
                    fine = launched();
                }
                if (!fine) {
                    g_info.declined++;
                    return TTT_BACKEND_DECLINED;
                }
            }
            k_cudnn_to_bf16<<<blocks_for(nkv), THREADS, 0, D->stream>>>((bf16 *)((char *)dk->data + p * krow), sum_k, nkv);
            k_cudnn_to_bf16<<<blocks_for(nkv), THREADS, 0, D->stream>>>((bf16 *)((char *)dv->data + p * krow), sum_v, nkv);
            if (!launched()) {
                g_info.declined++;
                return TTT_BACKEND_DECLINED;
            }
        }
    }
    g_info.bwd_runs++;
    g_info.bwd_ws = (int64_t)c.ws;
    if (c.grp < bh) g_info.bwd_split_runs++;
    if (c.tb < key.sq) g_info.bwd_block_runs++;
    return TTT_OK;
}

#endif /* TTT_HAVE_CUDNN_HEADERS */
