/* ttt/runtime.h: what a program needs to know about devices, without the
 * backend interface (ttt/backend.h is for backend authors only).
 *
 * Every function validates its arguments and reports failure by its return
 * value; none aborts. */
#ifndef TTT_RUNTIME_H
#define TTT_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include "ttt/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Devices of a kind this build and machine can use: CPU 1; CUDA the number of
 * GPUs (0 in a build without the CUDA backend or on a machine without a GPU). */
int ttt_device_count(ttt_device device);

/* "cpu" or the GPU's name ("NVIDIA H100 80GB HBM3") into buf; TTT_OK, or TTT_ERR
 * for an index out of range (message in ttt_runtime_error()). */
int ttt_device_name(ttt_device device, int index, char *buf, size_t len);

/* Why the last ttt_ctx_new or runtime call on this thread failed ("" if none). */
const char *ttt_runtime_error(void);

/* Wait for the context's queued device work (a no-op on the CPU). */
int ttt_synchronize(ttt_ctx *ctx);

/* Device memory of the context's backend instance: bytes reserved from the
 * driver, bytes handed out now, driver allocations so far (all 0 on the CPU). */
typedef struct {
    size_t reserved, in_use;
    uint64_t driver_allocs;
} ttt_memory_stats;
int ttt_ctx_memory_stats(ttt_ctx *ctx, ttt_memory_stats *out);

#ifdef __cplusplus
}
#endif
#endif
