/* Without a GPU: do cuDNN's fused attention engines accept the graphs attention_cudnn.cu builds?
 *
 * Builds our forward (with and without statistics) and backward graphs for a few shapes, finalizes the
 * operation graph without a handle, and asks cuDNN's heuristics (mode A, then fallback) for engine configs
 * on an H100 described by device properties (CUDNN_BACKEND_DEVICEPROP_DESCRIPTOR from JSON, cuDNN 9.8+),
 * which is what cuDNN's ahead-of-time path does. The heuristics run each engine's support check on the
 * graph, so a config coming back means an engine recognised the pattern; none means none did (the reason
 * is in cuDNN's log: CUDNN_LOGWARN_DBG=1 CUDNN_LOGDEST_DBG=stderr). --plan also finalizes a plan from each
 * config: with the driver's stub library (no GPU) that fails at loading the compiled kernel
 * (CUDNN_STATUS_EXECUTION_FAILED_CUDA_DRIVER), after the engine has compiled it. --variants also checks the
 * graph variants attention_cudnn.cu falls back to (reported; only variant 0 decides the exit code).
 *
 * cuDNN's engines look for the driver (libcuda.so.1) before checking a graph; without a GPU point the loader
 * at the toolkit's stub: tests/cudnn_plan_check.sh does. Exit 0: every graph has an engine; 1: some has none;
 * 77: no usable libcudnn (9.8 or later). */
#include "attention_cudnn.cu"

#if CUDNN_VERSION < 90800 /* built against headers without the device properties descriptor */
int ttt__cuda_scratch_reserve(CuDev *, Scratch *, size_t, const char *) { return TTT_ERR; }
int main(void) {
    printf("SKIP: built against cuDNN %d headers; the check needs 9.8 or later\n", (int)CUDNN_VERSION);
    return 77;
}
#else

/* attention_cudnn.cu's entries need it; this program never runs them */
int ttt__cuda_scratch_reserve(CuDev *, Scratch *, size_t, const char *) { return TTT_ERR; }

/* an H100 SXM 80GB, in the fields cuDNN's device properties read */
static const char *H100 =
    "{\"maxGridSize\":[2147483647,65535,65535],\"maxBlockSize\":[1024,1024,64],\"regsPerBlock\":65536,"
    "\"multiProcessorCount\":132,\"warpSize\":32,\"maxSharedMemoryPerBlock\":49152,"
    "\"maxSharedMemoryPerBlockOptin\":232448,\"reservedSharedMemoryPerBlock\":1024,\"maxRegistersPerSM\":65536,"
    "\"maxCtasPerSM\":32,\"maxThreadsPerBlock\":1024,\"maxThreadsPerSM\":2048,\"pciDeviceId\":0,\"isTccDriver\":0,"
    "\"supportCoopLaunch\":1,\"totalGlobalMem\":85029158912,\"smClockRateKHz\":1980000,\"memClockRateKHz\":2619000,"
    "\"l2CacheSize\":52428800,\"cudaDeviceId\":0,\"deviceVer\":900,\"driverVer\":12080,"
    "\"deviceName\":\"NVIDIA H100 80GB HBM3\"}";

static const char *status(const Api *A, cudnnStatus_t st) {
    static char buf[400];
    char last[300] = "";
    if (A->lasterr) A->lasterr(last, sizeof last);
    snprintf(buf, sizeof buf, "%s%s%s", A->errstr(st), last[0] ? ": " : "", last);
    return buf;
}

/* engine configs that pass their engine's support check for this graph, over both heuristics modes */
static int configs(Graph *g, cudnnBackendDescriptor_t dp, bool try_plans) {
    const Api *A = g->A;
    cudnnBackendDescriptor_t og = make(g, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, "operation graph");
    set(g, og, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, g->nops, g->ops, "graph ops");
    fin(g, og, "operation graph finalize");
    if (g->failed) {
        printf("    %s\n", g->err);
        return 0;
    }
    int total = 0;
    for (int m = 0; m < 2; m++) {
        const cudnnBackendHeurMode_t mode = m ? CUDNN_HEUR_MODE_FALLBACK : CUDNN_HEUR_MODE_A;
        cudnnBackendDescriptor_t heur = make(g, CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, "heuristics");
        if (g->failed) return total;
        cudnnStatus_t st = A->bset(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &og);
        if (!st) st = A->bset(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
        if (!st) st = A->bset(heur, CUDNN_ATTR_ENGINEHEUR_DEVICEPROP, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &dp);
        if (!st) st = A->bfinalize(heur);
        int64_t n = 0;
        if (!st) st = A->bget(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &n, NULL);
        if (st) {
            printf("    %s heuristics: %s\n", m ? "fallback" : "mode A", status(A, st));
            continue;
        }
        if (n > MAX_CFG) n = MAX_CFG;
        cudnnBackendDescriptor_t cfg[MAX_CFG];
        for (int64_t i = 0; i < n; i++) cfg[i] = make(g, CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, "engine config");
        const int64_t asked = n;
        if (g->failed) return total;
        /* the count above is of candidates; this call keeps those that pass their support check */
        if (n && (st = A->bget(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, asked, &n, cfg))) {
            printf("    %s results: %s\n", m ? "fallback" : "mode A", status(A, st));
            continue;
        }
        printf("    %s: %lld of %lld candidates supported; engines", m ? "fallback" : "mode A", (long long)n,
               (long long)asked);
        for (int64_t i = 0; i < n; i++) {
            cudnnBackendDescriptor_t eng = make(g, CUDNN_BACKEND_ENGINE_DESCRIPTOR, "engine");
            int64_t got = 0, idx = -1;
            if (eng) A->bget(cfg[i], CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &got, &eng);
            if (eng) A->bget(eng, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &got, &idx);
            int64_t ws = -1; /* the config's workspace in bytes, where cuDNN tells it before a plan */
            A->bget(cfg[i], CUDNN_ATTR_ENGINECFG_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &got, &ws);
            /* the engine's own notes: whether it says it is nondeterministic, compiles at run time, or takes CUDA
             * graphs natively */
            cudnnBackendNumericalNote_t num[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
            cudnnBackendBehaviorNote_t beh[CUDNN_BEHAVIOR_NOTE_TYPE_COUNT];
            int64_t nn = 0, nb = 0;
            if (eng && A->bget(eng, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                               CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &nn, num))
                nn = 0;
            if (eng && A->bget(eng, CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE, CUDNN_TYPE_BEHAVIOR_NOTE,
                               CUDNN_BEHAVIOR_NOTE_TYPE_COUNT, &nb, beh))
                nb = 0;
            char notes[160] = "";
            for (int64_t j = 0; j < nn; j++)
                if (num[j] == CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC) strcat(notes, ", nondeterministic");
                else if (num[j] == CUDNN_NUMERICAL_NOTE_TENSOR_CORE) strcat(notes, ", tensor cores");
            for (int64_t j = 0; j < nb; j++)
                if (beh[j] == CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION) strcat(notes, ", compiled at run time");
                else if (beh[j] == CUDNN_BEHAVIOR_NOTE_SUPPORTS_CUDA_GRAPH_NATIVE_API) strcat(notes, ", CUDA graphs native");
            if (ws >= 0) printf(" %lld (workspace %.1f MB%s)", (long long)idx, (double)ws / 1e6, notes);
            else printf(" %lld (%s)", (long long)idx, notes[0] ? notes + 2 : "");
        }
        printf("\n");
        total += (int)n;
        for (int64_t i = 0; try_plans && i < n; i++) {
            cudnnBackendDescriptor_t p = NULL;
            if (A->bcreate(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &p)) continue;
            st = A->bset(p, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfg[i]);
            if (!st) st = A->bset(p, CUDNN_ATTR_EXECUTION_PLAN_DEVICEPROP, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &dp);
            if (!st) st = A->bfinalize(p);
            printf("      plan %lld: %s\n", (long long)i, st ? status(A, st) : "finalized");
            A->bdestroy(p);
        }
    }
    return total;
}

int main(int argc, char **argv) {
    bool try_plans = false, all_variants = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--plan")) try_plans = true;
        else if (!strcmp(argv[i], "--variants")) all_variants = true;
    }
    g_enabled = 1;
    const Api *A = api();
    if (!A) {
        printf("SKIP: %s\n", g_info.why);
        return 77;
    }
    if (A->ver < 90800) {
        printf("SKIP: cuDNN %ld has no device properties descriptor (9.8+)\n", A->ver);
        return 77;
    }
    printf("cuDNN %ld from %s; device properties: an H100\n", A->ver, g_info.lib);
    cudnnBackendDescriptor_t dp = NULL;
    cudnnStatus_t st = A->bcreate(CUDNN_BACKEND_DEVICEPROP_DESCRIPTOR, &dp);
    if (!st) st = A->bset(dp, CUDNN_ATTR_DEVICEPROP_JSON_REPRESENTATION, CUDNN_TYPE_CHAR, (int64_t)strlen(H100) + 1, H100);
    if (!st) st = A->bfinalize(dp);
    if (st) {
        printf("SKIP: device properties: %s\n", status(A, st));
        return 77;
    }
    static const char *kinds[4] = {"forward", "forward, no stats", "backward", "backward (deterministic: dQ without the f32 accumulator)"};
    /* Tq, Tk, d; with Tq < Tk the causal mask is aligned bottom-right (the row index shifted) */
    const int64_t shapes[][3] = {{1024, 1024, 64}, {1000, 1000, 64}, {4096, 4096, 128},
                                 {257, 257, 128},  {200, 300, 64},   {256, 1024, 128}};
    int missing = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int kind = 0; kind < 4; kind++)
            for (int causal = 0; causal < 2; causal++) {
                const Key k{kind, causal, 2, 3, shapes[s][0], shapes[s][1], shapes[s][2], 0, 0, 0};
                /* variant 0 must have an engine; the others (attention_cudnn.cu's fallbacks for other releases)
                 * are reported */
                const int n_var = !all_variants ? 1 : is_bwd(kind) ? 8 : 2;
                for (int var = 0; var < n_var; var++) {
                    if ((var & 5) && !causal) continue;
                    Graph *g = (Graph *)calloc(1, sizeof(Graph));
                    if (!g) return 1;
                    g->A = A;
                    g->next_uid = V0;
                    if (is_bwd(kind)) build_bwd(g, k, var);
                    else build_fwd(g, k, var);
                    printf("%s, causal %d, b 2 h 3 Tq %lld Tk %lld d %lld, variant %d:\n", kinds[kind], causal,
                           (long long)k.sq, (long long)k.skv, (long long)k.d, var);
                    const int n = g->failed ? (printf("    build: %s\n", g->err), 0) : configs(g, dp, try_plans);
                    if (n == 0) {
                        printf("    NO ENGINE\n");
                        missing += var == 0;
                    }
                    graph_free(g);
                }
            }
    /* the backward over a block of queries of longer heads (ttt__cudnn_attn_bwd's query blocks past the workspace
     * cap): heads of T rows, a block of Tb queries against the first Tk keys (bottom-right causal), dK and dV in
     * f32 (what attention_cudnn.cu builds), then in bf16 (reported); both backward forms */
    const int64_t blocks[][4] = {{4096, 1024, 2048, 64}, {4096, 1024, 4096, 128}, {65536, 16384, 32768, 64}};
    for (size_t s = 0; s < sizeof blocks / sizeof blocks[0]; s++)
        for (int f32 = 1; f32 >= 0; f32--)
            for (int kind = BWD; kind <= BWD_DET; kind++) {
            Key k{kind, 1, 1, 2, blocks[s][1], blocks[s][2], blocks[s][3], 0, 0, 0};
            k.qrows = k.kvrows = blocks[s][0];
            k.dkv32 = f32;
            Graph *g = (Graph *)calloc(1, sizeof(Graph));
            if (!g) return 1;
            g->A = A;
            g->next_uid = V0;
            build_bwd(g, k, 0);
            printf("%s, query block: b 1 h 2, heads of %lld rows, Tq %lld Tk %lld d %lld, dK dV %s:\n",
                   kind == BWD_DET ? "backward (deterministic)" : "backward", (long long)blocks[s][0], (long long)k.sq,
                   (long long)k.skv, (long long)k.d, f32 ? "f32" : "bf16");
            const int n = g->failed ? (printf("    build: %s\n", g->err), 0) : configs(g, dp, try_plans);
            if (n == 0) {
                printf("    NO ENGINE\n");
                missing += f32;
            }
            graph_free(g);
        }
    A->bdestroy(dp);
    printf("%s\n", missing ? "some graphs have no engine" : "every graph has an engine");
    return missing ? 1 : 0;
}
#endif
