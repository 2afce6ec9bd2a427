/* The CUDA backend: the same kernel table as the CPU backend (include/ttt/
 * backend.h), run on instances (CuDev, cuda_internal.h): each context opens
 * one on its GPU, with its own stream, cuBLAS handle and workspace, memory
 * pool, index flags and graph-recording state, so contexts on several GPUs
 * (or several on one) work side by side. This file holds the instance, memory,
 * index flags, graphs and the table; the kernels live one op family per file.
 * f32, f64 and bf16 everywhere (f64 lets the float64 gradient checks run on
 * the GPU; bf16 is stored as bf16 and computed in f32, reductions in f64); i32
 * in copies. Every CUDA / cuBLAS call is checked and a failure names the call. */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"
#include "attention_cudnn.h"

/* ---- memory ---------------------------------------------------------------------------- */

static void *cu_alloc(ttt_backend_state *self, size_t bytes) {
    CuDev *D = (CuDev *)self;
    if (cu_enter(D)) return NULL;
    return ttt__cuda_pool_alloc(D->pool, bytes); /* device_pool.cu */
}
static void cu_free(ttt_backend_state *self, void *p) {
    CuDev *D = (CuDev *)self;
    if (!p || cu_enter(D)) return;
    ttt__cuda_pool_free(D->pool, p);
}
static void cu_memory_stats(ttt_backend_state *self, size_t *reserved, size_t *in_use, uint64_t *driver_allocs) {
    ttt__cuda_pool_stats(((CuDev *)self)->pool, reserved, in_use, driver_allocs);
}
static int cu_upload(ttt_backend_state *self, void *dst, const void *host, size_t bytes) {
    ENTER(D, self);
    CU(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, D->stream));
    CU(cudaStreamSynchronize(D->stream)); /* the host buffer may be freed right after */
    return TTT_OK;
}
static int cu_download(ttt_backend_state *self, void *host, const void *src, size_t bytes) {
    ENTER(D, self);
    CU(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, D->stream));
    CU(cudaStreamSynchronize(D->stream));
    return TTT_OK;
}
static int cu_sync(ttt_backend_state *self) {
    ENTER(D, self);
    CU(cudaStreamSynchronize(D->stream));
    return TTT_OK;
}

static int graph_recording(CuDev *D) { return D->rec != NULL; }
static int graph_retire(CuDev *D, void *p);

int scratch_reserve(CuDev *D, Scratch *s, size_t bytes, const char *who) {
    if (bytes <= s->bytes) return TTT_OK;
    if (graph_recording(D)) {
        ttt_backend_error("%s: its scratch buffer would grow to %zu bytes while a graph is recorded (run the same "
                          "step without recording first)", who, bytes);
        return TTT_ERR;
    }
    if (s->p && graph_retire(D, s->p)) return TTT_ERR;
    s->p = NULL;
    s->bytes = 0;
    size_t want = bytes + bytes / 2;
    if (!(s->p = ttt__cuda_pool_alloc(D->pool, want))) return TTT_ERR;
    s->bytes = want;
    return TTT_OK;
}

/* ---- index flags (see CuGraph in cuda_internal.h) ------------------------------------------------------------ */

static int ensure_flags(CuDev *D) {
    if (!D->flags) CU(cudaMalloc(&D->flags, sizeof(int) * 2 * FLAG_SLOTS));
    return TTT_OK;
}
int flag_reset(CuDev *D) {
    if (ensure_flags(D)) return TTT_ERR;
    int slot = 0;
    if (D->rec) {
        if (D->rec->n_checks >= FLAG_SLOTS) {
            ttt_backend_error("more than %d index-checked kernels in one graph", (int)FLAG_SLOTS);
            return TTT_ERR;
        }
        slot = D->rec->n_checks;
    }
    D->flag = D->flags + 2 * slot;
    CU(cudaMemsetAsync(D->flag, 0, sizeof(int) * 2, D->stream));
    return TTT_OK;
}
static int flag_report(const int *h, const char *what, const char *unit, int64_t range) {
    if (h[0]) {
        ttt_backend_error("%s %d at %s %d out of range [0, %lld)", what, h[1], unit, h[0] - 1, (long long)range);
        return TTT_ERR;
    }
    return TTT_OK;
}
int flag_check(CuDev *D, const char *what, const char *unit, int64_t range) {
    if (D->rec) {
        D->rec->checks[D->rec->n_checks++] = FlagCheck{what, unit, range};
        return TTT_OK;
    }
    int h[2];
    CU(cudaMemcpyAsync(h, D->flag, sizeof h, cudaMemcpyDeviceToHost, D->stream));
    CU(cudaStreamSynchronize(D->stream));
    return flag_report(h, what, unit, range);
}
/* ---- graphs (ttt/graph.h) -------------------------------------------------------------------------------------- */

static int graph_retire(CuDev *D, void *p) {
    if (!D->graphs && !D->rec) {
        ttt__cuda_pool_free(D->pool, p);
        return TTT_OK;
    }
    if (D->n_retired == (int)(sizeof D->retired / sizeof D->retired[0])) {
        ttt_backend_error("too many outgrown buffers kept for live graphs (free the graphs)");
        return TTT_ERR;
    }
    D->retired[D->n_retired++] = p;
    return TTT_OK;
}

static int cu_graph_begin(ttt_backend_state *self) {
    ENTER(D, self);
    if (D->rec) {
        ttt_backend_error("a graph is already being recorded");
        return TTT_ERR;
    }
    if (ttt__cuda_ensure_cublas(D) || ensure_flags(D)) return TTT_ERR;
    CuGraph *g = (CuGraph *)calloc(1, sizeof *g);
    if (!g) {
        ttt_backend_error("out of host memory (graph)");
        return TTT_ERR;
    }
    /* Thread-local: calls that cannot be captured are refused on this thread
     * only, so contexts driven by other host threads (other GPUs) keep working
     * while this one records. */
    cudaError_t e = cudaStreamBeginCapture(D->stream, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) {
        free(g);
        ttt_backend_error("cudaStreamBeginCapture failed: %s", cudaGetErrorString(e));
        return TTT_ERR;
    }
    D->rec = g;
    return TTT_OK;
}

static int cu_graph_end(ttt_backend_state *self, void **out) {
    *out = NULL;
    ENTER(D, self);
    CuGraph *g = D->rec;
    D->rec = NULL;
    if (!g) {
        ttt_backend_error("no graph is being recorded");
        return TTT_ERR;
    }
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(D->stream, &graph);
    if (e == cudaSuccess) e = cudaGraphInstantiate(&g->exec, graph, 0);
    if (graph) cudaGraphDestroy(graph);
    if (e == cudaSuccess) e = cudaGraphUpload(g->exec, D->stream);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* a failed capture leaves a sticky launch error */
        if (g->exec) cudaGraphExecDestroy(g->exec);
        free(g);
        ttt_backend_error("recording the CUDA graph failed: %s", cudaGetErrorString(e));
        return TTT_ERR;
    }
    D->graphs++;
    *out = g;
    return TTT_OK;
}

static int cu_graph_replay(ttt_backend_state *self, void *graph) {
    ENTER(D, self);
    CuGraph *g = (CuGraph *)graph;
    if (D->rec) {
        ttt_backend_error("cannot replay a graph while another is recorded");
        return TTT_ERR;
    }
    int h[2 * FLAG_SLOTS];
    CU(cudaGraphLaunch(g->exec, D->stream));
    if (g->n_checks) CU(cudaMemcpyAsync(h, D->flags, sizeof(int) * 2 * g->n_checks, cudaMemcpyDeviceToHost, D->stream));
    CU(cudaStreamSynchronize(D->stream));
    for (int i = 0; i < g->n_checks; i++)
        if (flag_report(h + 2 * i, g->checks[i].what, g->checks[i].unit, g->checks[i].range)) return TTT_ERR;
    return TTT_OK;
}

static void cu_graph_free(ttt_backend_state *self, void *graph) {
    CuDev *D = (CuDev *)self;
    CuGraph *g = (CuGraph *)graph;
    if (!g || cu_enter(D)) return;
    cudaGraphExecDestroy(g->exec);
    free(g);
    if (--D->graphs == 0 && !D->rec) {
        for (int i = 0; i < D->n_retired; i++) ttt__cuda_pool_free(D->pool, D->retired[i]);
        D->n_retired = 0;
    }
}

static int cu_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

static int cu_device_name(int index, char *buf, size_t len) {
    cudaDeviceProp prop;
    cudaError_t e = cudaGetDeviceProperties(&prop, index);
    if (e != cudaSuccess) {
        cudaGetLastError();
        ttt_backend_error("CUDA device %d: %s", index, cudaGetErrorString(e));
        return TTT_ERR;
    }
    snprintf(buf, len, "%s", prop.name);
    return TTT_OK;
}

/* ---- instances ------------------------------------------------------------------------------------------------ */

static void cu_close(ttt_backend_state *self) {
    CuDev *D = (CuDev *)self;
    if (!D) return;
    cudaSetDevice(D->index);
    if (D->stream) cudaStreamSynchronize(D->stream); /* nothing queued may touch what is freed below */
    if (D->rec) { /* a recording left open: end it so the stream is usable again */
        cudaGraph_t graph = NULL;
        if (cudaStreamEndCapture(D->stream, &graph) == cudaSuccess && graph) cudaGraphDestroy(graph);
        free(D->rec);
        D->rec = NULL;
    }
    ttt__cudnn_release(D);
    if (D->cublas) cublasDestroy(D->cublas);
    if (D->cublas_ws) cudaFree(D->cublas_ws);
    if (D->flags) cudaFree(D->flags);
    if (D->stream) cudaStreamDestroy(D->stream);
    if (D->pool) ttt__cuda_pool_delete(D->pool); /* scratch and retired buffers are in it */
    cudaGetLastError(); /* leave no sticky error from teardown */
    free(D);
}

static ttt_backend_state *cu_open(const ttt_backend_config *cfg) {
    const int n = cu_device_count();
    if (n == 0) {
        ttt_backend_error("no CUDA device is available");
        return NULL;
    }
    if (cfg->device_index < 0 || cfg->device_index >= n) {
        ttt_backend_error("CUDA device %d does not exist (%d present: 0 to %d)", cfg->device_index, n, n - 1);
        return NULL;
    }
    CuDev *D = (CuDev *)calloc(1, sizeof *D);
    if (!D) {
        ttt_backend_error("out of host memory (CUDA backend instance)");
        return NULL;
    }
    D->index = cfg->device_index;
    D->tf32 = cfg->tf32 != 0;
    cudaError_t e = cudaSetDevice(D->index);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&D->sm_count, cudaDevAttrMultiProcessorCount, D->index);
    /* blocking, so it stays ordered with any work on the legacy stream */
    if (e == cudaSuccess) e = cudaStreamCreate(&D->stream);
    if (e != cudaSuccess) {
        cudaGetLastError();
        ttt_backend_error("CUDA device %d: %s", D->index, cudaGetErrorString(e));
        D->stream = NULL;
        cu_close((ttt_backend_state *)D);
        return NULL;
    }
    if (D->sm_count < 1) D->sm_count = 132; /* an H100's */
    if (!(D->pool = ttt__cuda_pool_new())) {
        ttt_backend_error("out of host memory (CUDA memory pool)");
        cu_close((ttt_backend_state *)D);
        return NULL;
    }
    return (ttt_backend_state *)D;
}

static ttt_backend make_table(void) {
    ttt_backend b;
    memset(&b, 0, sizeof b);
    b.name = "cuda";
    b.device = TTT_CUDA;
    b.device_count = cu_device_count;
    b.device_name = cu_device_name;
    b.open = cu_open;
    b.close = cu_close;
    b.alloc = cu_alloc;
    b.free = cu_free;
    b.upload = cu_upload;
    b.download = cu_download;
    b.synchronize = cu_sync;
    b.memory_stats = cu_memory_stats;
    b.svd = ttt__cu_svd;
#define TTT__CUDA_ENTRY(name, params, args) b.name = ttt__cu_##name;
    TTT_KERNEL_LIST(TTT__CUDA_ENTRY)
#undef TTT__CUDA_ENTRY
    b.graph_begin = cu_graph_begin;
    b.graph_end = cu_graph_end;
    b.graph_replay = cu_graph_replay;
    b.graph_free = cu_graph_free;
    return b;
}

static ttt_backend CUDA_TABLE = make_table();

/* The table, or NULL (with a message) on a machine without a GPU. */
extern "C" const ttt_backend *ttt_backend_cuda(void) {
    if (cu_device_count() == 0) {
        ttt_backend_error("no CUDA device is available");
        return NULL;
    }
    return &CUDA_TABLE;
}
