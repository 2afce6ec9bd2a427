/* All-reduce bandwidth of the data-parallel transports (include/ttt/dist.h):
 * mpirun -np N dp_allreduce [--device cpu|cuda] [--transport auto|mpi|nccl] [--iters K]
 * For f32 buffers of 1..256 MiB, the mean time of ttt_dist_allreduce (the
 * ordered reduce-scatter + all-gather the runner's ZeRO step is made of) and
 * two rates: algbw = bytes / time, busbw = algbw * 2 (R - 1) / R (the bytes
 * each rank moves; nccl-tests' convention, comparable across rank counts).
 * Each result is checked: every element must be 1 + 2 + ... + R. One JSON line
 * per size from rank 0. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ttt/ttt.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    const char *device = "auto", *transport = "auto";
    int iters = 10;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--device")) device = argv[i + 1];
        else if (!strcmp(argv[i], "--transport")) transport = argv[i + 1];
        else if (!strcmp(argv[i], "--iters")) iters = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "usage: dp_allreduce [--device cpu|cuda] [--transport auto|mpi|nccl] [--iters K]\n");
            return 2;
        }
    }
    char err[1024];
    ttt_dist *d = NULL;
    ttt_dist_config dc = {.transport = !strcmp(transport, "mpi") ? TTT_DIST_MPI : !strcmp(transport, "nccl") ? TTT_DIST_NCCL : TTT_DIST_AUTO,
                          .timeout_s = 120};
    if (ttt_dist_init(&dc, &d, err, sizeof err) != TTT_OK) {
        fprintf(stderr, "dp_allreduce: %s\n", err);
        return 1;
    }
    const int R = ttt_dist_size(d), rank = ttt_dist_rank(d), gpus = ttt_device_count(TTT_CUDA);
    ttt_ctx_config cc = {.device = !strcmp(device, "cpu") || (!strcmp(device, "auto") && gpus == 0) ? TTT_CPU : TTT_CUDA};
    cc.device_index = cc.device == TTT_CUDA && gpus > 0 ? ttt_dist_local_rank(d) % gpus : 0;
    ttt_ctx *ctx = ttt_ctx_new(&cc);
    if (!ctx) {
        fprintf(stderr, "dp_allreduce: rank %d: %s\n", rank, ttt_runtime_error());
        ttt_dist_abort(d, 1);
        return 1;
    }
    if (rank == 0)
        printf("{\"ranks\": %d, \"device\": \"%s\", \"transport\": \"%s\", \"iters\": %d}\n", R,
               cc.device == TTT_CUDA ? "cuda" : "cpu", ttt_dist_transport_name(d, cc.device), iters);
    int rc = 0;
    for (int64_t mib = 1; mib <= 256 && !rc; mib *= 2) {
        const int64_t n = mib * 1048576 / 4 / R * R;
        ttt_tensor *t = ttt_persistent(ctx, TTT_F32, 1, (const int64_t[]){n}, "buf");
        double sec = 0;
        for (int it = -1; it < iters && !rc; it++) { /* it -1: warm-up (NCCL setup, first allocation) */
            if (!t || ttt_fill(ctx, t, rank + 1) != TTT_OK || ttt_synchronize(ctx) != TTT_OK) {
                fprintf(stderr, "dp_allreduce: %s\n", ttt_error(ctx));
                rc = 1;
                break;
            }
            const double t0 = now_s();
            if (ttt_dist_allreduce(d, ctx, t, err, sizeof err) != TTT_OK || ttt_synchronize(ctx) != TTT_OK) {
                fprintf(stderr, "dp_allreduce: %s\n", err);
                rc = 1;
                break;
            }
            if (it >= 0) sec += now_s() - t0;
        }
        if (!rc) { /* every element must be 1 + ... + R */
            ttt_tensor *err_t = ttt_sum(ctx, ttt_abs(ctx, ttt_add(ctx, t, ttt_scalar(ctx, TTT_F32, -0.5 * R * (R + 1)))), 0, NULL, 0);
            const double bad = ttt_item(ctx, err_t);
            if (!(bad == 0)) fprintf(stderr, "dp_allreduce: rank %d: %lld MiB: wrong sums (|error| summed %g)\n", rank, (long long)mib, bad), rc = 1;
            ttt_step_reset(ctx);
        }
        if (!rc && rank == 0) {
            const double s = sec / iters, bytes = 4.0 * (double)n;
            printf("{\"mib\": %lld, \"seconds\": %.6g, \"algbw_gb_s\": %.4g, \"busbw_gb_s\": %.4g}\n", (long long)mib, s,
                   bytes / s / 1e9, R > 1 ? bytes / s / 1e9 * 2.0 * (R - 1) / R : 0.0);
            fflush(stdout);
        }
        ttt_persistent_free(ctx, t);
    }
    ttt_ctx_free(ctx);
    if (rc) ttt_dist_abort(d, rc);
    ttt_dist_finalize(d);
    return rc;
}
